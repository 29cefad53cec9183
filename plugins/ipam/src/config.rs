//! The `ipam` section: host-local `ranges` (and its legacy `subnet`),
//! Whereabouts `range`/`ipRanges`/`exclude`/`network_name`/
//! `enable_overlapping_ranges`, `routes`, `dns`, and the store settings.
//! Everything is checked here, before any store is touched.

use crate::addr::Family;
use crate::names;
use crate::range::{Pool, Range};
use crate::settings::{Settings, StoreFields};
use ipnet::IpNet;
use manifold_common::config::NetConf;
use manifold_common::result::{Dns, Route};
use manifold_common::{CniError, CniResult};
use serde::Deserialize;
use std::net::IpAddr;

/// Address space shared by every network that checks overlapping ranges.
pub const SHARED_SPACE: &str = "_shared";

#[derive(Debug, Default, Deserialize)]
struct HostLocalRange {
    #[serde(default)]
    subnet: String,
    #[serde(rename = "rangeStart", default)]
    range_start: Option<String>,
    #[serde(rename = "rangeEnd", default)]
    range_end: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct WhereaboutsRange {
    #[serde(default)]
    range: String,
    #[serde(default)]
    range_start: Option<String>,
    #[serde(default)]
    range_end: Option<String>,
    #[serde(default)]
    exclude: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct WireRoute {
    dst: String,
    #[serde(default)]
    gw: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct WireIpam {
    #[serde(default)]
    ranges: Vec<Vec<HostLocalRange>>,
    #[serde(default)]
    subnet: Option<String>,
    #[serde(rename = "rangeStart", default)]
    legacy_start: Option<String>,
    #[serde(rename = "rangeEnd", default)]
    legacy_end: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    range: Option<String>,
    #[serde(default)]
    range_start: Option<String>,
    #[serde(default)]
    range_end: Option<String>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(rename = "ipRanges", default)]
    ip_ranges: Vec<WhereaboutsRange>,
    #[serde(default)]
    network_name: Option<String>,
    #[serde(default)]
    enable_overlapping_ranges: Option<bool>,
    #[serde(default)]
    routes: Vec<WireRoute>,
    #[serde(default)]
    dns: Option<Dns>,
}

/// A parsed and checked IPAM configuration.
#[derive(Debug, Clone)]
pub struct IpamConf {
    /// Network the allocations belong to (`network_name`, else `name`).
    pub network: String,
    /// Address space (DESIGN.md): [`SHARED_SPACE`], or the network when
    /// `enable_overlapping_ranges` is false.
    pub space: String,
    /// One address per pool per attachment.
    pub pools: Vec<Pool>,
    /// Routes returned with the result.
    pub routes: Vec<Route>,
    /// DNS returned with the result.
    pub dns: Dns,
    /// Store, node and lease TTL.
    pub settings: Settings,
}

fn ip(what: &str, s: &str) -> CniResult<IpAddr> {
    s.trim()
        .parse()
        .map_err(|_| CniError::config(format!("{what} {s:?} is not an IP address")))
}

fn cidr(what: &str, s: &str) -> CniResult<IpNet> {
    s.trim()
        .parse()
        .map_err(|_| CniError::config(format!("{what} {s:?} is not a CIDR (like 10.1.0.0/24)")))
}

/// A CIDR, or a single address as a host route.
fn cidr_or_ip(what: &str, s: &str) -> CniResult<IpNet> {
    cidr(what, s).or_else(|_| {
        ip(what, s).map(IpNet::from).map_err(|_| {
            CniError::config(format!("{what} {s:?} is neither a CIDR nor an IP address"))
        })
    })
}

fn opt_ip(what: &str, s: &Option<String>) -> CniResult<Option<IpAddr>> {
    s.as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| ip(what, s))
        .transpose()
}

/// host-local's default gateway: the subnet's first address after the network address.
fn default_gateway(subnet: &IpNet) -> Option<IpAddr> {
    let s = subnet.trunc();
    let f = Family::of(s.addr());
    (s.prefix_len() + 2 <= f.bits())
        .then(|| crate::addr::from_u128(f, crate::addr::to_u128(s.network()) + 1))
}

fn host_local_range(r: &HostLocalRange) -> CniResult<Range> {
    if r.subnet.is_empty() {
        return Err(CniError::config("a range in \"ranges\" has no \"subnet\""));
    }
    let subnet = cidr("subnet", &r.subnet)?;
    let gateway = match opt_ip("gateway", &r.gateway)? {
        Some(g) => Some(g),
        None => default_gateway(&subnet),
    };
    Range::new(
        subnet,
        opt_ip("rangeStart", &r.range_start)?,
        opt_ip("rangeEnd", &r.range_end)?,
        gateway,
        Vec::new(),
    )
}

/// A Whereabouts range: `range` is a CIDR or `first-last/prefix`.
fn whereabouts_range(w: &WhereaboutsRange, gateway: Option<IpAddr>) -> CniResult<Range> {
    let (subnet, mut first, mut last) = match w.range.split_once('-') {
        Some((a, b)) => {
            let subnet = cidr("range", b).map_err(|_| {
                CniError::config(format!(
                    "range {:?} is neither a CIDR nor of the form first-last/prefix",
                    w.range
                ))
            })?;
            (subnet, Some(ip("range", a)?), Some(subnet.addr()))
        }
        None if w.range.is_empty() => {
            return Err(CniError::config(
                "an entry of \"ipRanges\" has no \"range\"",
            ))
        }
        None => (cidr("range", &w.range)?, None, None),
    };
    if let Some(s) = opt_ip("range_start", &w.range_start)? {
        first = Some(s);
    }
    if let Some(e) = opt_ip("range_end", &w.range_end)? {
        last = Some(e);
    }
    let gateway = gateway.filter(|g| subnet.contains(g));
    let exclude = w
        .exclude
        .iter()
        .map(|e| cidr_or_ip("exclude", e))
        .collect::<CniResult<Vec<_>>>()?;
    Range::new(subnet, first, last, gateway, exclude)
}

impl IpamConf {
    /// Parses the `ipam` section of `conf`, with `node_file` as the fallback for the store.
    pub fn parse(conf: &NetConf, node_file: &StoreFields) -> CniResult<Self> {
        let section = conf
            .raw
            .get("ipam")
            .filter(|v| v.is_object())
            .ok_or_else(|| CniError::config("network config has no \"ipam\" object"))?;
        let w: WireIpam = serde_json::from_value(section.clone())
            .map_err(|e| manifold_common::config::decode_error("ipam config", e))?;
        let store_fields = StoreFields::from_value(section, "ipam config")?;
        let network = w.network_name.clone().unwrap_or_else(|| conf.name.clone());
        names::check(
            if w.network_name.is_some() {
                "network_name"
            } else {
                "network name"
            },
            &network,
        )?;
        let space = if w.enable_overlapping_ranges.unwrap_or(true) {
            SHARED_SPACE.to_string()
        } else {
            network.clone()
        };
        let pools = Self::pools(&w)?;
        let routes = w
            .routes
            .iter()
            .map(|r| {
                Ok(Route {
                    dst: Some(cidr("route dst", &r.dst)?),
                    gw: opt_ip("route gw", &r.gw)?,
                    ..Default::default()
                })
            })
            .collect::<CniResult<Vec<_>>>()?;
        Ok(IpamConf {
            network,
            space,
            pools,
            routes,
            dns: w.dns.clone().unwrap_or_default(),
            settings: Settings::resolve(&store_fields, node_file)?,
        })
    }

    fn pools(w: &WireIpam) -> CniResult<Vec<Pool>> {
        let mut pools = Vec::new();
        for (i, set) in w.ranges.iter().enumerate() {
            if set.is_empty() {
                return Err(CniError::config(format!("\"ranges\"[{i}] is empty")));
            }
            let ranges = set
                .iter()
                .map(host_local_range)
                .collect::<CniResult<Vec<_>>>()?;
            if ranges.iter().any(|r| r.family() != ranges[0].family()) {
                return Err(CniError::config(format!(
                    "\"ranges\"[{i}] mixes IPv4 and IPv6: use one inner list per family"
                )));
            }
            pools.push(Pool { ranges });
        }
        if let Some(subnet) = &w.subnet {
            pools.push(Pool {
                ranges: vec![host_local_range(&HostLocalRange {
                    subnet: subnet.clone(),
                    range_start: w.legacy_start.clone(),
                    range_end: w.legacy_end.clone(),
                    gateway: w.gateway.clone(),
                })?],
            });
        }
        let gateway = if w.subnet.is_none() {
            opt_ip("gateway", &w.gateway)?
        } else {
            None
        };
        let mut whereabouts: Vec<WhereaboutsRange> = Vec::new();
        if let Some(r) = &w.range {
            whereabouts.push(WhereaboutsRange {
                range: r.clone(),
                range_start: w.range_start.clone(),
                range_end: w.range_end.clone(),
                exclude: w.exclude.clone(),
            });
        }
        let mut gateway_used = false;
        for wr in whereabouts.iter().chain(&w.ip_ranges) {
            let r = whereabouts_range(wr, gateway)?;
            gateway_used |= r.gateway.is_some();
            pools.push(Pool { ranges: vec![r] });
        }
        if let (Some(g), false) = (gateway, gateway_used) {
            return Err(CniError::config(format!(
                "gateway {g} is in none of the ranges' subnets"
            )));
        }
        if pools.is_empty() {
            return Err(CniError::config(
                "ipam config has no address range: set \"ranges\" (host-local style) or \"range\" / \"ipRanges\" (Whereabouts style)",
            ));
        }
        let all: Vec<&Range> = pools.iter().flat_map(|p| &p.ranges).collect();
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                if a.overlaps(b) {
                    return Err(CniError::config(format!(
                        "ranges {} and {} overlap",
                        a.describe(),
                        b.describe()
                    )));
                }
            }
        }
        Ok(pools)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// The example in conf/ stays valid: dual-stack, exclusions, etcd with TLS.
    #[test]
    fn shipped_example_parses() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../conf/macvlan-manifold-ipam-etcd.conflist"
        );
        let list: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut plugin = list["plugins"][0].clone();
        plugin["cniVersion"] = list["cniVersion"].clone();
        plugin["name"] = list["name"].clone();
        let conf = NetConf::from_value(plugin).unwrap();
        let c = IpamConf::parse(&conf, &StoreFields::default()).unwrap();
        assert_eq!(c.network, "ran-fronthaul");
        assert_eq!(c.pools.len(), 2);
        assert!(c.pools[0].ranges[0]
            .is_allocatable(crate::addr::to_u128("10.40.0.16".parse().unwrap())));
        assert!(!c.pools[0].ranges[0]
            .is_allocatable(crate::addr::to_u128("10.40.0.5".parse().unwrap())));
    }

    fn parse(ipam: Value) -> CniResult<IpamConf> {
        let mut ipam = ipam;
        ipam["type"] = json!("manifold-ipam");
        ipam["nodeName"] = json!("n1");
        ipam["dataDir"] = json!("/tmp/manifold-ipam-unit");
        let conf = NetConf::from_value(
            json!({"cniVersion": "1.1.0", "name": "net1", "type": "macvlan", "ipam": ipam}),
        )
        .unwrap();
        IpamConf::parse(&conf, &StoreFields::default())
    }

    #[test]
    fn host_local_ranges_default_the_gateway_like_host_local() {
        let c = parse(json!({"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00::/64"}]]}))
            .unwrap();
        assert_eq!(c.pools.len(), 2);
        assert_eq!(
            c.pools[0].ranges[0].gateway,
            Some("10.1.0.1".parse().unwrap())
        );
        assert_eq!(c.pools[0].size(), 253);
        assert_eq!(c.space, SHARED_SPACE);
        assert_eq!(c.network, "net1");
    }

    #[test]
    fn whereabouts_range_forms_and_ip_ranges() {
        let c = parse(json!({"range": "192.168.2.225-192.168.2.230/28", "exclude": ["192.168.2.226/32", "192.168.2.227"],
            "ipRanges": [{"range": "fd00:1::/64", "range_start": "fd00:1::10"}],
            "gateway": "192.168.2.225", "network_name": "blue", "enable_overlapping_ranges": false})).unwrap();
        assert_eq!(c.network, "blue");
        assert_eq!(c.space, "blue");
        assert_eq!(c.pools[0].size(), 3); // .228-.230
        assert_eq!(c.pools[1].ranges[0].gateway, None);
    }

    #[test]
    fn overlapping_ranges_are_invalid() {
        let e = parse(json!({"ranges": [[{"subnet": "10.1.0.0/16"}]], "range": "10.1.2.0/24"}))
            .unwrap_err();
        assert!(e.msg.contains("overlap"), "{}", e.msg);
    }

    #[test]
    fn network_name_that_escapes_is_invalid() {
        for n in ["../etc", "a/b", "", "x\u{0}y"] {
            let e = parse(json!({"range": "10.0.0.0/24", "network_name": n})).unwrap_err();
            assert_eq!(e.code, manifold_common::ErrorCode::InvalidConfig, "{n:?}");
        }
    }

    #[test]
    fn gateway_outside_every_range_is_invalid() {
        let e = parse(json!({"range": "10.0.0.0/24", "gateway": "10.9.9.1"})).unwrap_err();
        assert!(e.msg.contains("gateway 10.9.9.1"), "{}", e.msg);
    }
}
