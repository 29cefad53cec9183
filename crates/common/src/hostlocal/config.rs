//! host-local's configuration: the `ipam` section (`ranges`, the legacy
//! single range, `routes`, `dataDir`, `resolvConf`), `runtimeConfig.ipRanges`,
//! and the static requests of `CNI_ARGS IP=`, `args.cni.ips` and
//! `runtimeConfig.ips`, canonicalized as the reference does (defaults, checks,
//! error texts).

use super::{fail, DEFAULT_DATA_DIR};
use crate::error::CniResult;
use crate::result::{NetworkResult, Route};
use ipnet::IpNet;
use serde_json::{Map, Value};
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

/// One range: a subnet and the inclusive span allocated from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// The subnet, its address the network address.
    pub subnet: IpNet,
    /// First allocatable address (default: network + 1).
    pub range_start: IpAddr,
    /// Last allocatable address (default: the broadcast − 1 for IPv4, the
    /// last address for IPv6).
    pub range_end: IpAddr,
    /// Gateway (default: network + 1), never allocated.
    pub gateway: IpAddr,
}

/// The ranges one address is allocated from, tried in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSet(pub Vec<Range>);

/// A validated host-local configuration.
#[derive(Debug, Clone)]
pub struct IpamConfig {
    /// Network name: the directory under `data_dir`.
    pub name: String,
    /// `dataDir` (default `/var/lib/cni/networks`).
    pub data_dir: PathBuf,
    /// One address is allocated from each range set.
    pub ranges: Vec<RangeSet>,
    /// Routes copied into the result.
    pub routes: Vec<Route>,
    /// `resolvConf`: a file whose nameservers, domain, search and options
    /// become the result's DNS.
    pub resolv_conf: Option<PathBuf>,
    /// Requested addresses, in request order, without duplicates.
    pub requested: Vec<IpAddr>,
}

/// IPv4-mapped IPv6 addresses become IPv4, as Go's `To4()` makes them.
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address after `ip` (wrapping at the end of the family).
pub fn next_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(a) => IpAddr::V4(u32::from(a).wrapping_add(1).into()),
        IpAddr::V6(a) => IpAddr::V6(u128::from(a).wrapping_add(1).into()),
    }
}

fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

/// Whether `addr` is in `subnet` and within the optional bounds.
fn within(subnet: &IpNet, start: Option<IpAddr>, end: Option<IpAddr>, addr: IpAddr) -> bool {
    let addr = canonical(addr);
    same_family(addr, subnet.addr())
        && subnet.contains(&addr)
        && start.is_none_or(|s| to_u128(addr) >= to_u128(s))
        && end.is_none_or(|e| to_u128(addr) <= to_u128(e))
}

impl Range {
    /// Whether `addr` is an address of this range (subnet and span).
    pub fn contains(&self, addr: IpAddr) -> bool {
        within(
            &self.subnet,
            Some(self.range_start),
            Some(self.range_end),
            addr,
        )
    }

    fn overlaps(&self, other: &Range) -> bool {
        same_family(self.range_start, other.range_start)
            && (self.contains(other.range_start)
                || self.contains(other.range_end)
                || other.contains(self.range_start)
                || other.contains(self.range_end))
    }

    /// Fills in the defaults and checks a range as written in a config.
    fn canonicalize(raw: &RawRange) -> Result<Range, String> {
        let subnet = raw.subnet.ok_or("range has no \"subnet\"")?;
        let subnet_ip = canonical(subnet.addr());
        let subnet = IpNet::new(subnet_ip, subnet.prefix_len()).map_err(|e| e.to_string())?;
        if subnet.prefix_len() > subnet.max_prefix_len() - 2 {
            return Err(format!("Network {subnet} too small to allocate from"));
        }
        if subnet.addr() != subnet.network() {
            return Err(format!(
                "Network has host bits set. For a subnet mask of length {} the network address is {}",
                subnet.prefix_len(),
                subnet.network()
            ));
        }
        let first = next_ip(subnet.network());
        let gateway = raw.gateway.map(canonical).unwrap_or(first);
        let start = raw.range_start.map(canonical);
        let end = raw.range_end.map(canonical);
        let range_start = match start {
            Some(s) if !within(&subnet, Some(s), end, s) => {
                return Err(format!("RangeStart {s} not in network {subnet}"));
            }
            Some(s) => s,
            None => first,
        };
        let range_end = match end {
            Some(e) if !within(&subnet, Some(range_start), Some(e), e) => {
                return Err(format!("RangeEnd {e} not in network {subnet}"));
            }
            Some(e) => e,
            None => match subnet.broadcast() {
                IpAddr::V4(b) => IpAddr::V4((u32::from(b) - 1).into()),
                v6 => v6,
            },
        };
        Ok(Range {
            subnet,
            range_start,
            range_end,
            gateway,
        })
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.range_start, self.range_end)
    }
}

impl RangeSet {
    /// The range holding `addr`, if any.
    pub fn range_for(&self, addr: IpAddr) -> Option<&Range> {
        self.0.iter().find(|r| r.contains(addr))
    }

    /// Whether any range holds `addr`.
    pub fn contains(&self, addr: IpAddr) -> bool {
        self.range_for(addr).is_some()
    }

    fn overlaps(&self, other: &RangeSet) -> bool {
        self.0.iter().any(|r| other.0.iter().any(|o| r.overlaps(o)))
    }

    fn canonicalize(raw: &[RawRange]) -> Result<RangeSet, String> {
        if raw.is_empty() {
            return Err("empty range set".into());
        }
        let ranges = raw
            .iter()
            .map(Range::canonicalize)
            .collect::<Result<Vec<_>, _>>()?;
        if ranges
            .iter()
            .any(|r| !same_family(r.range_start, ranges[0].range_start))
        {
            return Err("mixed address families".into());
        }
        for (i, a) in ranges.iter().enumerate() {
            if let Some(b) = ranges[i + 1..].iter().find(|b| a.overlaps(b)) {
                return Err(format!("subnets {a} and {b} overlap"));
            }
        }
        Ok(RangeSet(ranges))
    }
}

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// A range as written, before defaults.
#[derive(Debug, Default)]
struct RawRange {
    subnet: Option<IpNet>,
    range_start: Option<IpAddr>,
    range_end: Option<IpAddr>,
    gateway: Option<IpAddr>,
}

/// A key of a JSON object, matched as Go's `encoding/json` matches struct
/// fields: exactly, else case-insensitively.
fn field<'v>(obj: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
    obj.get(key)
        .or_else(|| {
            obj.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v)
        })
        .filter(|v| !v.is_null())
}

fn object<'v>(v: &'v Value, what: &str) -> Result<&'v Map<String, Value>, String> {
    v.as_object()
        .ok_or_else(|| format!("{what} must be a JSON object, got {v}"))
}

fn array<'v>(v: &'v Value, what: &str) -> Result<&'v [Value], String> {
    v.as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| format!("{what} must be a JSON array, got {v}"))
}

fn string<'v>(v: &'v Value, what: &str) -> Result<&'v str, String> {
    v.as_str()
        .ok_or_else(|| format!("{what} must be a string, got {v}"))
}

/// An optional address field; "" is absent, as for Go's `net.IP`.
fn opt_ip(obj: &Map<String, Value>, key: &str, what: &str) -> Result<Option<IpAddr>, String> {
    let Some(v) = field(obj, key) else {
        return Ok(None);
    };
    match string(v, &format!("{what}.{key}"))? {
        "" => Ok(None),
        s => s
            .parse::<IpAddr>()
            .map(|ip| Some(canonical(ip)))
            .map_err(|_| format!("{what}.{key}: invalid IP address: {s}")),
    }
}

fn raw_range(obj: &Map<String, Value>, what: &str) -> Result<RawRange, String> {
    let subnet = match field(obj, "subnet") {
        None => None,
        Some(s) => {
            let s = string(s, &format!("{what}.subnet"))?;
            Some(s.parse::<IpNet>().map_err(|_| {
                format!("{what}.subnet: invalid CIDR address: {s:?} (write it as 10.1.2.0/24)")
            })?)
        }
    };
    Ok(RawRange {
        subnet,
        range_start: opt_ip(obj, "rangeStart", what)?,
        range_end: opt_ip(obj, "rangeEnd", what)?,
        gateway: opt_ip(obj, "gateway", what)?,
    })
}

fn raw_range_sets(v: &Value, what: &str) -> Result<Vec<Vec<RawRange>>, String> {
    array(v, what)?
        .iter()
        .enumerate()
        .map(|(i, set)| {
            array(set, &format!("{what}[{i}]"))?
                .iter()
                .enumerate()
                .map(|(j, r)| {
                    let what = format!("{what}[{i}][{j}]");
                    raw_range(object(r, &what)?, &what)
                })
                .collect()
        })
        .collect()
}

/// Parses a requested address as Go's `ip.IP` does: `IP` or `IP/prefix`;
/// `None` for "".
fn requested_ip(s: &str) -> Result<Option<IpAddr>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    let ip = if s.contains('/') {
        s.parse::<IpNet>().ok().map(|n| n.addr())
    } else {
        s.parse::<IpAddr>().ok()
    };
    ip.map(|ip| Some(canonical(ip)))
        .ok_or_else(|| format!("invalid IP address {s}"))
}

fn requested_list(v: Option<&Value>, what: &str) -> Result<Vec<IpAddr>, String> {
    let Some(v) = v else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (i, s) in array(v, what)?.iter().enumerate() {
        let s = string(s, &format!("{what}[{i}]"))?;
        out.extend(requested_ip(s).map_err(|e| format!("{what}[{i}]: {e}"))?);
    }
    Ok(out)
}

/// `CNI_ARGS` as host-local reads it (libcni's `LoadArgs` into
/// `{IgnoreUnknown, IP}`): exact key names, unknown keys an error unless
/// `IgnoreUnknown` is true. Returns the requested IP.
fn env_args_ip(args: &str) -> Result<Option<IpAddr>, String> {
    if args.is_empty() {
        return Ok(None);
    }
    let mut ignore_unknown = false;
    let mut ip = None;
    let mut unknown = Vec::new();
    for pair in args.split(';') {
        let kv: Vec<&str> = pair.split('=').collect();
        let [k, v] = kv[..] else {
            return Err(format!("ARGS: invalid pair {pair:?}"));
        };
        match k {
            "IgnoreUnknown" => {
                ignore_unknown = match v.to_ascii_lowercase().as_str() {
                    "1" | "true" => true,
                    "0" | "false" => false,
                    other => {
                        return Err(format!(
                            "ARGS: error parsing value of pair {pair:?}: boolean unmarshal error: invalid input {other}"
                        ))
                    }
                }
            }
            "IP" => {
                ip = requested_ip(v)
                    .map_err(|e| format!("ARGS: error parsing value of pair {pair:?}: {e}"))?;
            }
            _ => unknown.push(format!("{pair:?}")),
        }
    }
    if !unknown.is_empty() && !ignore_unknown {
        return Err(format!(
            "ARGS: unknown args [{}] (set IgnoreUnknown=1 in CNI_ARGS to ignore them)",
            unknown.join(" ")
        ));
    }
    Ok(ip)
}

impl IpamConfig {
    /// Loads the host-local view of a whole network config (`raw`) and the
    /// call's `CNI_ARGS` string.
    pub fn load(raw: &Value, cni_args: &str) -> CniResult<Self> {
        Self::load_inner(raw, cni_args).map_err(fail)
    }

    fn load_inner(raw: &Value, cni_args: &str) -> Result<Self, String> {
        let top = object(raw, "network config")?;
        let ipam = field(top, "ipam").ok_or("IPAM config missing 'ipam' key")?;
        let ipam = object(ipam, "ipam")?;
        let runtime = field(top, "runtimeConfig")
            .map(|v| object(v, "runtimeConfig"))
            .transpose()?;

        let mut requested: Vec<IpAddr> = env_args_ip(cni_args)?.into_iter().collect();
        let cni_args_ips = field(top, "args")
            .map(|a| object(a, "args"))
            .transpose()?
            .and_then(|a| field(a, "cni"))
            .map(|c| object(c, "args.cni"))
            .transpose()?
            .and_then(|c| field(c, "ips"));
        requested.extend(requested_list(cni_args_ips, "args.cni.ips")?);
        requested.extend(requested_list(
            runtime.and_then(|r| field(r, "ips")),
            "runtimeConfig.ips",
        )?);
        let mut seen = std::collections::HashSet::new();
        requested.retain(|ip| seen.insert(*ip));

        let mut raw_sets = Vec::new();
        if let Some(r) = runtime.and_then(|r| field(r, "ipRanges")) {
            raw_sets.extend(raw_range_sets(r, "runtimeConfig.ipRanges")?);
        }
        let legacy = raw_range(ipam, "ipam")?;
        if legacy.subnet.is_some() {
            raw_sets.push(vec![legacy]);
        }
        if let Some(r) = field(ipam, "ranges") {
            raw_sets.extend(raw_range_sets(r, "ipam.ranges")?);
        }
        if raw_sets.is_empty() {
            return Err(
                "no IP ranges specified (set ipam.ranges, e.g. [[{\"subnet\": \"10.1.2.0/24\"}]])"
                    .into(),
            );
        }
        let ranges = raw_sets
            .iter()
            .enumerate()
            .map(|(i, set)| {
                RangeSet::canonicalize(set).map_err(|e| format!("invalid range set {i}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        for (i, a) in ranges.iter().enumerate() {
            if let Some(j) = ranges[i + 1..].iter().position(|b| a.overlaps(b)) {
                return Err(format!("range set {i} overlaps with {}", i + j + 1));
            }
        }

        let routes = match field(ipam, "routes") {
            None => Vec::new(),
            Some(r) => {
                array(r, "ipam.routes")?;
                let parsed = NetworkResult::from_value(&serde_json::json!({ "routes": r }))
                    .map_err(|e| format!("ipam.routes: {}", e.msg))?;
                if let Some(i) = parsed.routes.iter().position(|r| r.dst.is_none()) {
                    return Err(format!("ipam.routes[{i}] has no \"dst\""));
                }
                parsed.routes
            }
        };
        let data_dir = match field(ipam, "dataDir") {
            None => "",
            Some(d) => string(d, "ipam.dataDir")?,
        };
        let resolv_conf = match field(ipam, "resolvConf") {
            None => "",
            Some(d) => string(d, "ipam.resolvConf")?,
        };
        let name = field(top, "name")
            .map(|n| string(n, "name"))
            .transpose()?
            .unwrap_or_default();
        Ok(IpamConfig {
            name: name.to_string(),
            data_dir: PathBuf::from(if data_dir.is_empty() {
                DEFAULT_DATA_DIR
            } else {
                data_dir
            }),
            ranges,
            routes,
            resolv_conf: (!resolv_conf.is_empty()).then(|| PathBuf::from(resolv_conf)),
            requested,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use serde_json::json;

    fn load(ipam: Value) -> Result<IpamConfig, String> {
        IpamConfig::load(
            &json!({"cniVersion": "1.0.0", "name": "n", "ipam": ipam}),
            "",
        )
        .map_err(|e| {
            assert_eq!(e.code, ErrorCode::Other(999));
            e.msg
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_are_gateway_dot_one_and_broadcast_minus_one() {
        let c = load(json!({"type": "host-local", "subnet": "10.1.2.0/24"})).unwrap();
        let r = &c.ranges[0].0[0];
        assert_eq!(r.range_start, ip("10.1.2.1"));
        assert_eq!(r.range_end, ip("10.1.2.254"));
        assert_eq!(r.gateway, ip("10.1.2.1"));
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/cni/networks"));
        let c = load(json!({"ranges": [[{"subnet": "fd00::/120"}]]})).unwrap();
        let r = &c.ranges[0].0[0];
        assert_eq!(r.range_end, ip("fd00::ff"), "IPv6 has no broadcast");
        assert_eq!(c.ranges[0].to_string(), "fd00::1-fd00::ff");
    }

    #[test]
    fn legacy_range_comes_first_and_runtime_ranges_before_it() {
        let raw = json!({"name": "n", "ipam": {"subnet": "10.0.0.0/24",
            "ranges": [[{"subnet": "10.0.1.0/24"}]]},
            "runtimeConfig": {"ipRanges": [[{"subnet": "10.0.2.0/24"}]]}});
        let c = IpamConfig::load(&raw, "").unwrap();
        let subnets: Vec<String> = c.ranges.iter().map(|s| s.0[0].subnet.to_string()).collect();
        assert_eq!(subnets, ["10.0.2.0/24", "10.0.0.0/24", "10.0.1.0/24"]);
    }

    #[test]
    fn invalid_ranges_are_rejected_with_the_reference_texts() {
        for (ipam, want) in [
            (json!({"ranges": [[{"subnet": "10.0.0.1/24"}]]}),
                "invalid range set 0: Network has host bits set. For a subnet mask of length 24 the network address is 10.0.0.0"),
            (json!({"ranges": [[{"subnet": "10.0.0.0/31"}]]}),
                "invalid range set 0: Network 10.0.0.0/31 too small to allocate from"),
            (json!({"ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.1.5"}]]}),
                "invalid range set 0: RangeStart 10.0.1.5 not in network 10.0.0.0/24"),
            (json!({"ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.9", "rangeEnd": "10.0.0.5"}]]}),
                "invalid range set 0: RangeStart 10.0.0.9 not in network 10.0.0.0/24"),
            (json!({"ranges": [[{"subnet": "10.0.0.0/24"}, {"subnet": "fd00::/64"}]]}),
                "invalid range set 0: mixed address families"),
            (json!({"ranges": [[{"subnet": "10.0.0.0/24"}, {"subnet": "10.0.0.0/25"}]]}),
                "invalid range set 0: subnets 10.0.0.1-10.0.0.254 and 10.0.0.1-10.0.0.126 overlap"),
            (json!({"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.0.0.0/24"}]]}),
                "range set 0 overlaps with 1"),
            (json!({"ranges": [[]]}), "invalid range set 0: empty range set"),
        ] {
            assert_eq!(load(ipam).unwrap_err(), want);
        }
        assert!(load(json!({"type": "host-local"}))
            .unwrap_err()
            .starts_with("no IP ranges specified"));
    }

    #[test]
    fn keys_match_case_insensitively_like_go() {
        let c = load(
            json!({"Ranges": [[{"Subnet": "10.0.0.0/24", "RANGESTART": "10.0.0.10"}]],
                            "datadir": "/tmp/x"}),
        )
        .unwrap();
        assert_eq!(c.ranges[0].0[0].range_start, ip("10.0.0.10"));
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn requested_ips_come_from_cni_args_then_args_then_runtime_config() {
        let raw = json!({"name": "n", "ipam": {"subnet": "10.0.0.0/24"},
            "args": {"cni": {"ips": ["10.0.0.7/24"]}},
            "runtimeConfig": {"ips": ["10.0.0.8", "10.0.0.5"]}});
        let c = IpamConfig::load(&raw, "IgnoreUnknown=1;K8S_POD_NAME=p;IP=10.0.0.5").unwrap();
        assert_eq!(
            c.requested,
            [ip("10.0.0.5"), ip("10.0.0.7"), ip("10.0.0.8")]
        );
    }

    #[test]
    fn cni_args_follow_libcni_rules() {
        assert_eq!(
            env_args_ip("IP=::ffff:10.0.0.1").unwrap(),
            Some(ip("10.0.0.1"))
        );
        assert_eq!(env_args_ip("IP=").unwrap(), None);
        assert!(env_args_ip("K8S_POD_NAME=x")
            .unwrap_err()
            .starts_with(r#"ARGS: unknown args ["K8S_POD_NAME=x"]"#));
        assert!(env_args_ip("ip=10.0.0.1").is_err(), "keys are exact");
        assert_eq!(
            env_args_ip("IP=nope").unwrap_err(),
            r#"ARGS: error parsing value of pair "IP=nope": invalid IP address nope"#
        );
        assert_eq!(
            env_args_ip("IgnoreUnknown=maybe").unwrap_err(),
            r#"ARGS: error parsing value of pair "IgnoreUnknown=maybe": boolean unmarshal error: invalid input maybe"#
        );
    }

    #[test]
    fn routes_need_a_destination() {
        let c = load(
            json!({"subnet": "10.0.0.0/24", "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.254"}]}),
        )
        .unwrap();
        assert_eq!(c.routes[0].gw, Some(ip("10.0.0.254")));
        assert_eq!(
            load(json!({"subnet": "10.0.0.0/24", "routes": [{"gw": "10.0.0.254"}]})).unwrap_err(),
            "ipam.routes[0] has no \"dst\""
        );
    }
}
