//! Pod annotations: `k8s.v1.cni.cncf.io/networks` in its text form
//! (`ns/name@ifname, other`) and its JSON form (NPWG selection elements), and
//! the default-network override.

use crate::names;
use ipnet::IpNet;
use manifold_common::config::{Bandwidth, PortMapping};
use manifold_common::{CniError, CniResult};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The extra networks a pod asks for.
pub const NETWORKS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/networks";
/// Per-pod replacement of the cluster network.
pub const DEFAULT_NETWORK_ANNOTATION: &str = "v1.multus-cni.io/default-network";
/// Where the attachments are reported (NPWG).
pub const NETWORK_STATUS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/network-status";

/// One requested attachment (NPWG "network selection element").
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Selection {
    /// NAD name.
    pub name: String,
    /// NAD namespace; the pod's when empty.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Interface name in the pod; `net<N>` when empty.
    #[serde(default, rename = "interface")]
    pub interface: Option<String>,
    /// Static addresses (`ips` capability).
    #[serde(default)]
    pub ips: Vec<String>,
    /// MAC (`mac` capability).
    #[serde(default)]
    pub mac: Option<String>,
    /// Gateways that take the pod's default route(s).
    #[serde(default, rename = "default-route")]
    pub default_route: Option<Vec<IpAddr>>,
    /// Extra `args.cni` for the delegate.
    #[serde(default, rename = "cni-args")]
    pub cni_args: Option<Map<String, Value>>,
    /// Device (`deviceID` capability).
    #[serde(default, rename = "deviceID")]
    pub device_id: Option<String>,
    /// Traffic shaping (`bandwidth` capability).
    #[serde(default)]
    pub bandwidth: Option<Bandwidth>,
    /// Port mappings (`portMappings` capability).
    #[serde(default)]
    pub port_mappings: Option<Vec<PortMapping>>,
}

impl Selection {
    /// The runtimeConfig capabilities this element asks the delegate for.
    pub fn capabilities(&self) -> Map<String, Value> {
        let mut rc = Map::new();
        if !self.ips.is_empty() {
            rc.insert("ips".into(), Value::from(self.ips.clone()));
        }
        if let Some(m) = &self.mac {
            rc.insert("mac".into(), Value::from(m.clone()));
        }
        if let Some(d) = &self.device_id {
            rc.insert("deviceID".into(), Value::from(d.clone()));
        }
        if let Some(b) = &self.bandwidth {
            rc.insert(
                "bandwidth".into(),
                serde_json::to_value(b).expect("serializes"),
            );
        }
        if let Some(p) = &self.port_mappings {
            rc.insert(
                "portMappings".into(),
                serde_json::to_value(p).expect("serializes"),
            );
        }
        rc
    }

    fn validate(&self) -> CniResult<()> {
        names::check_nad_name(&self.name)?;
        if let Some(ns) = &self.namespace {
            names::check_namespace(ns)?;
        }
        if let Some(i) = &self.interface {
            manifold_common::env::validate_ifname(i).map_err(|e| CniError::config(e.msg))?;
        }
        for ip in &self.ips {
            if ip.parse::<IpNet>().is_err() {
                return Err(CniError::config(format!(
                    "ips: {ip:?} is not an address with prefix length (e.g. 10.1.1.5/24)"
                )));
            }
        }
        if let Some(m) = &self.mac {
            manifold_common::child_link::parse_unicast_mac(m)
                .map_err(|e| CniError::config(format!("mac: {}", e.msg)))?;
        }
        Ok(())
    }
}

/// Parses the networks annotation (either form) and checks every element.
pub fn parse_networks(annotation: &str) -> CniResult<Vec<Selection>> {
    let s = annotation.trim();
    let list = if s.is_empty() {
        Vec::new()
    } else if s.starts_with('[') || s.starts_with('{') {
        serde_json::from_str::<Vec<Selection>>(s).map_err(|e| {
            CniError::config(format!(
                "{NETWORKS_ANNOTATION}: not a list of selection elements: {e}"
            ))
        })?
    } else {
        s.split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(parse_text_element)
            .collect::<CniResult<Vec<_>>>()?
    };
    let mut list = list;
    for sel in &mut list {
        // Empty means unset, as in Multus.
        sel.namespace = sel.namespace.take().filter(|s| !s.is_empty());
        sel.interface = sel.interface.take().filter(|s| !s.is_empty());
    }
    for sel in &list {
        sel.validate()
            .map_err(|e| e.context(format!("{NETWORKS_ANNOTATION} element {:?}", sel.name)))?;
    }
    let with_route = list.iter().filter(|s| s.default_route.is_some()).count();
    if with_route > 1 {
        return Err(CniError::config(format!(
            "{NETWORKS_ANNOTATION}: \"default-route\" is set on {with_route} elements; at most one may take the default route"
        )));
    }
    Ok(list)
}

/// `[namespace/]name[@interface]`.
fn parse_text_element(s: &str) -> CniResult<Selection> {
    let (net, iface) = match s.split_once('@') {
        Some((n, i)) => (n, Some(i.to_string())),
        None => (s, None),
    };
    let (namespace, name) = names::split_ref(net)
        .map_err(|e| e.context(format!("{NETWORKS_ANNOTATION} element {s:?}")))?;
    Ok(Selection {
        name: name.to_string(),
        namespace: namespace.map(str::to_string),
        interface: iface,
        ..Default::default()
    })
}

/// The default-network override: one `[namespace/]name`, if the pod sets it.
pub fn default_network_override(
    annotations: &BTreeMap<String, String>,
) -> CniResult<Option<Selection>> {
    let Some(v) = annotations.get(DEFAULT_NETWORK_ANNOTATION) else {
        return Ok(None);
    };
    let mut list = parse_networks(v).map_err(|e| e.context(DEFAULT_NETWORK_ANNOTATION))?;
    match list.len() {
        0 => Ok(None),
        1 => Ok(list.pop()),
        n => Err(CniError::config(format!(
            "{DEFAULT_NETWORK_ANNOTATION} names {n} networks; there is one default network"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use manifold_common::ErrorCode;

    #[test]
    fn text_form() {
        let l = parse_networks(" ns1/net-a@fast0, net-b ,ns2/net-c").unwrap();
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].namespace.as_deref(), Some("ns1"));
        assert_eq!(l[0].name, "net-a");
        assert_eq!(l[0].interface.as_deref(), Some("fast0"));
        assert_eq!(l[1].namespace, None);
        assert_eq!(l[1].interface, None);
        assert_eq!(l[2].name, "net-c");
        assert!(parse_networks("").unwrap().is_empty());
    }

    #[test]
    fn json_form_with_every_field() {
        let l = parse_networks(
            r#"[{"name":"net-a","namespace":"ns1","interface":"data0","ips":["10.1.1.5/24","fd01::5/64"],
                "mac":"0a:00:00:00:00:05","default-route":["10.1.1.1"],"cni-args":{"foo":"bar"},
                "deviceID":"0000:03:00.1","bandwidth":{"ingressRate":1000,"ingressBurst":10},
                "portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]},
               {"name":"net-b"}]"#,
        )
        .unwrap();
        let rc = l[0].capabilities();
        assert_eq!(rc["ips"], serde_json::json!(["10.1.1.5/24", "fd01::5/64"]));
        assert_eq!(rc["mac"], "0a:00:00:00:00:05");
        assert_eq!(rc["deviceID"], "0000:03:00.1");
        assert_eq!(
            rc["bandwidth"],
            serde_json::json!({"ingressRate":1000,"ingressBurst":10})
        );
        assert_eq!(rc["portMappings"][0]["hostPort"], 8080);
        assert_eq!(
            l[0].default_route.as_ref().unwrap()[0].to_string(),
            "10.1.1.1"
        );
        assert_eq!(l[0].cni_args.as_ref().unwrap()["foo"], "bar");
        assert!(l[1].capabilities().is_empty());
        let e = parse_networks(r#"[{"name":"x","namespace":"","interface":""}]"#).unwrap();
        assert_eq!(
            (e[0].namespace.clone(), e[0].interface.clone()),
            (None, None)
        );
    }

    #[test]
    fn rejections_are_code_7() {
        for bad in [
            "[{\"name\":\"a\"",
            "../etc/x",
            "ns/../x",
            "Upper/x",
            "a@eth0/x",
            "a@this-name-is-too-long",
            r#"[{"name":"a","ips":["10.0.0.1"]}]"#,
            r#"[{"name":"a","mac":"01:00:5e:00:00:01"}]"#,
            r#"[{"name":"a","default-route":["10.0.0.1"]},{"name":"b","default-route":["10.0.1.1"]}]"#,
        ] {
            assert_eq!(
                parse_networks(bad).unwrap_err().code,
                ErrorCode::InvalidConfig,
                "{bad}"
            );
        }
    }

    #[test]
    fn default_network_override_is_one_network() {
        let mut a = BTreeMap::new();
        assert!(default_network_override(&a).unwrap().is_none());
        a.insert(
            DEFAULT_NETWORK_ANNOTATION.to_string(),
            "kube-system/alt".to_string(),
        );
        assert_eq!(default_network_override(&a).unwrap().unwrap().name, "alt");
        a.insert(DEFAULT_NETWORK_ANNOTATION.to_string(), "a,b".to_string());
        assert!(default_network_override(&a).is_err());
    }
}
