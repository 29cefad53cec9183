//! CNI results: one in-memory model (the 1.1.0 shape), parsed from and
//! printed to every supported version.

use crate::error::{CniError, CniResult, ErrorCode};
use crate::version::CniVersion;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::net::IpAddr;

/// An interface created or configured by a plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// Hardware address, lower-case colon-separated hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// MTU (1.1.0+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Netns path for container interfaces; absent for host interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// vhost-user / DPDK socket path (1.1.0+).
    #[serde(
        default,
        rename = "socketPath",
        skip_serializing_if = "Option::is_none"
    )]
    pub socket_path: Option<String>,
    /// PCI address of a device (1.1.0+).
    #[serde(default, rename = "pciID", skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

/// An IP address assigned to an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// Index into the result's interfaces.
    pub interface: Option<usize>,
    /// Address with prefix length.
    pub address: IpNet,
    /// Default gateway for this subnet, if any.
    pub gateway: Option<IpAddr>,
}

/// A route to add in the container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Route {
    /// Destination.
    pub dst: Option<IpNet>,
    /// Next hop; none means the gateway of the matching family.
    pub gw: Option<IpAddr>,
    /// Route MTU (1.1.0+).
    pub mtu: Option<u32>,
    /// Advertised MSS (1.1.0+).
    pub advmss: Option<u32>,
    /// Metric (1.1.0+).
    pub priority: Option<u32>,
    /// Routing table (1.1.0+).
    pub table: Option<u32>,
    /// Scope (1.1.0+).
    pub scope: Option<u8>,
}

/// DNS settings, in the result and in network configs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    /// Name servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Local domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    /// True when nothing is set.
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// A plugin's successful ADD result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkResult {
    /// Interfaces.
    pub interfaces: Vec<Interface>,
    /// Addresses.
    pub ips: Vec<IpConfig>,
    /// Routes.
    pub routes: Vec<Route>,
    /// DNS.
    pub dns: Dns,
}

fn decode_err(what: impl std::fmt::Display) -> CniError {
    CniError::new(ErrorCode::Decode, format!("decode result: {what}"))
}

fn opt_u32(v: &Value, key: &str) -> CniResult<Option<u32>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| decode_err(format!("{key} must be a non-negative integer, got {x}"))),
    }
}

fn opt_str<'a>(v: &'a Value, key: &str) -> CniResult<Option<&'a str>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(x) => Err(decode_err(format!("{key} must be a string, got {x}"))),
    }
}

fn parse_ip(key: &str, s: &str) -> CniResult<IpAddr> {
    s.parse()
        .map_err(|_| decode_err(format!("{key} {s:?} is not an IP address")))
}

/// Parses a CIDR as the Go plugins write it: host bits allowed ("10.1.1.5/24").
pub fn parse_cidr(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>().ok()
}

impl NetworkResult {
    /// Parses a result (or `prevResult`) of any supported version.
    pub fn from_value(v: &Value) -> CniResult<Self> {
        let obj = v
            .as_object()
            .ok_or_else(|| decode_err("a result must be a JSON object"))?;
        let mut r = NetworkResult::default();
        if let Some(ifs) = obj.get("interfaces").filter(|x| !x.is_null()) {
            r.interfaces = serde_json::from_value(ifs.clone()).map_err(decode_err)?;
        }
        for ip in obj
            .get("ips")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let address =
                opt_str(ip, "address")?.ok_or_else(|| decode_err("ip without address"))?;
            let address = parse_cidr(address)
                .ok_or_else(|| decode_err(format!("address {address:?} is not a CIDR")))?;
            let interface = match ip.get("interface") {
                None | Some(Value::Null) => None,
                Some(x) => Some(
                    x.as_u64()
                        .map(|n| n as usize)
                        .ok_or_else(|| decode_err(format!("interface index {x} is invalid")))?,
                ),
            };
            let gateway = opt_str(ip, "gateway")?
                .map(|g| parse_ip("gateway", g))
                .transpose()?;
            r.ips.push(IpConfig {
                interface,
                address,
                gateway,
            });
        }
        for rt in obj
            .get("routes")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let dst = opt_str(rt, "dst")?
                .map(|d| {
                    parse_cidr(d)
                        .ok_or_else(|| decode_err(format!("route dst {d:?} is not a CIDR")))
                })
                .transpose()?;
            let gw = opt_str(rt, "gw")?.map(|g| parse_ip("gw", g)).transpose()?;
            let scope = opt_u32(rt, "scope")?
                .map(|s| u8::try_from(s).map_err(|_| decode_err("route scope must be 0..255")))
                .transpose()?;
            r.routes.push(Route {
                dst,
                gw,
                mtu: opt_u32(rt, "mtu")?,
                advmss: opt_u32(rt, "advmss")?,
                priority: opt_u32(rt, "priority")?,
                table: opt_u32(rt, "table")?,
                scope,
            });
        }
        if let Some(dns) = obj.get("dns").filter(|x| !x.is_null()) {
            r.dns = serde_json::from_value(dns.clone()).map_err(decode_err)?;
        }
        Ok(r)
    }

    /// Renders the result exactly in the shape of `version`.
    pub fn to_value(&self, version: CniVersion) -> Value {
        let modern = version >= CniVersion::V1_1_0;
        let mut out = Map::new();
        out.insert("cniVersion".into(), json!(version.as_str()));
        if !self.interfaces.is_empty() {
            let ifs: Vec<Value> = self
                .interfaces
                .iter()
                .map(|i| {
                    let mut i = i.clone();
                    if !modern {
                        i.mtu = None;
                        i.socket_path = None;
                        i.pci_id = None;
                    }
                    serde_json::to_value(i).expect("interface serializes")
                })
                .collect();
            out.insert("interfaces".into(), Value::Array(ifs));
        }
        if !self.ips.is_empty() {
            let ips = self
                .ips
                .iter()
                .map(|ip| {
                    let mut m = Map::new();
                    if version < CniVersion::V1_0_0 {
                        let fam = if ip.address.addr().is_ipv4() {
                            "4"
                        } else {
                            "6"
                        };
                        m.insert("version".into(), json!(fam));
                    }
                    if let Some(i) = ip.interface {
                        m.insert("interface".into(), json!(i));
                    }
                    m.insert("address".into(), json!(ip.address.to_string()));
                    if let Some(gw) = ip.gateway {
                        m.insert("gateway".into(), json!(gw.to_string()));
                    }
                    Value::Object(m)
                })
                .collect();
            out.insert("ips".into(), Value::Array(ips));
        }
        if !self.routes.is_empty() {
            let routes = self
                .routes
                .iter()
                .map(|r| {
                    let mut m = Map::new();
                    if let Some(d) = r.dst {
                        m.insert("dst".into(), json!(d.to_string()));
                    }
                    if let Some(gw) = r.gw {
                        m.insert("gw".into(), json!(gw.to_string()));
                    }
                    if modern {
                        for (k, v) in [
                            ("mtu", r.mtu),
                            ("advmss", r.advmss),
                            ("priority", r.priority),
                            ("table", r.table),
                            ("scope", r.scope.map(u32::from)),
                        ] {
                            if let Some(v) = v {
                                m.insert(k.into(), json!(v));
                            }
                        }
                    }
                    Value::Object(m)
                })
                .collect();
            out.insert("routes".into(), Value::Array(routes));
        }
        out.insert(
            "dns".into(),
            serde_json::to_value(&self.dns).expect("dns serializes"),
        );
        Value::Object(out)
    }

    /// Index of the interface named `name` in `sandbox`, if any.
    pub fn interface_index(&self, name: &str, sandbox: Option<&str>) -> Option<usize> {
        self.interfaces
            .iter()
            .position(|i| i.name == name && i.sandbox.as_deref() == sandbox)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NetworkResult {
        NetworkResult {
            interfaces: vec![Interface {
                name: "net1".into(),
                mac: Some("0a:58:0a:01:01:02".into()),
                mtu: Some(1400),
                sandbox: Some("/var/run/netns/p".into()),
                ..Default::default()
            }],
            ips: vec![
                IpConfig {
                    interface: Some(0),
                    address: "10.1.1.2/24".parse().unwrap(),
                    gateway: Some("10.1.1.1".parse().unwrap()),
                },
                IpConfig {
                    interface: Some(0),
                    address: "fd00::2/64".parse().unwrap(),
                    gateway: None,
                },
            ],
            routes: vec![Route {
                dst: Some("0.0.0.0/0".parse().unwrap()),
                priority: Some(10),
                ..Default::default()
            }],
            dns: Dns::default(),
        }
    }

    #[test]
    fn v040_adds_ip_version_and_drops_new_fields() {
        let v = sample().to_value(CniVersion::V0_4_0);
        assert_eq!(v["ips"][0]["version"], "4");
        assert_eq!(v["ips"][1]["version"], "6");
        assert!(v["interfaces"][0].get("mtu").is_none());
        assert!(v["routes"][0].get("priority").is_none());
        assert_eq!(v["cniVersion"], "0.4.0");
    }

    #[test]
    fn v100_has_no_ip_version_and_no_11_fields() {
        let v = sample().to_value(CniVersion::V1_0_0);
        assert!(v["ips"][0].get("version").is_none());
        assert!(v["interfaces"][0].get("mtu").is_none());
        assert!(v["routes"][0].get("priority").is_none());
    }

    #[test]
    fn v110_keeps_everything_and_round_trips() {
        let r = sample();
        let v = r.to_value(CniVersion::V1_1_0);
        assert_eq!(v["interfaces"][0]["mtu"], 1400);
        assert_eq!(v["routes"][0]["priority"], 10);
        assert_eq!(NetworkResult::from_value(&v).unwrap(), r);
    }

    #[test]
    fn old_result_parses_and_ignores_version() {
        let v = json!({"cniVersion":"0.3.1","ips":[{"version":"4","address":"10.0.0.5/8","interface":0}]});
        let r = NetworkResult::from_value(&v).unwrap();
        assert_eq!(r.ips[0].address.to_string(), "10.0.0.5/8");
    }

    #[test]
    fn bad_address_is_decode_error() {
        let v = json!({"ips":[{"address":"10.0.0.500/8"}]});
        assert_eq!(
            NetworkResult::from_value(&v).unwrap_err().code,
            ErrorCode::Decode
        );
    }
}
