//! What ADD reports: the merged CNI result (every delegate's interfaces,
//! addresses and routes, the default network's first) and the NPWG
//! `network-status` list.

use crate::plan::Attachment;
use manifold_common::result::NetworkResult;
use manifold_common::{CniError, CniResult, ErrorCode};
use serde_json::{json, Map, Value};

fn parsed(att: &Attachment) -> CniResult<NetworkResult> {
    let v = att.result.as_ref().ok_or_else(|| {
        CniError::new(
            ErrorCode::Delegate,
            format!("network {:?} has no result", att.network),
        )
    })?;
    NetworkResult::from_value(v).map_err(|e| e.context(format!("network {:?}", att.network)))
}

/// One result from all attachments, in plan order (the default network is
/// first, so the runtime finds the pod IP on its interface). DNS is the
/// default network's.
pub fn merge(plan: &[Attachment]) -> CniResult<NetworkResult> {
    let mut out = NetworkResult::default();
    for att in plan {
        let r = parsed(att)?;
        let offset = out.interfaces.len();
        out.interfaces.extend(r.interfaces);
        out.ips.extend(r.ips.into_iter().map(|mut ip| {
            ip.interface = ip.interface.map(|i| i + offset);
            ip
        }));
        out.routes.extend(r.routes);
        if att.default {
            out.dns = r.dns;
        }
    }
    Ok(out)
}

/// NPWG network-status: one entry per attachment.
pub fn network_status(plan: &[Attachment], netns: &str) -> CniResult<Value> {
    let mut list = Vec::new();
    for att in plan {
        let r = parsed(att)?;
        let iface = r
            .interface_index(&att.ifname, Some(netns))
            .or_else(|| r.interfaces.iter().position(|i| i.sandbox.is_some()));
        let mut e = Map::new();
        e.insert("name".into(), json!(att.network));
        e.insert("interface".into(), json!(att.ifname));
        let ips: Vec<String> = r
            .ips
            .iter()
            .filter(|ip| iface.is_none() || ip.interface.is_none() || ip.interface == iface)
            .map(|ip| ip.address.addr().to_string())
            .collect();
        if !ips.is_empty() {
            e.insert("ips".into(), json!(ips));
        }
        if let Some(i) = iface.map(|i| &r.interfaces[i]) {
            if let Some(mac) = &i.mac {
                e.insert("mac".into(), json!(mac));
            }
            if let Some(pci) = &i.pci_id {
                e.insert(
                    "device-info".into(),
                    json!({"type": "pci", "version": "1.1.0", "pci": {"pci-address": pci}}),
                );
            }
        }
        e.insert("default".into(), json!(att.default));
        e.insert(
            "dns".into(),
            serde_json::to_value(&r.dns).expect("dns serializes"),
        );
        list.push(Value::Object(e));
    }
    Ok(Value::Array(list))
}

#[cfg(test)]
mod tests {
    use super::*;
    use manifold_common::CniVersion;

    fn att(network: &str, ifname: &str, default: bool, result: Value) -> Attachment {
        Attachment {
            network: network.into(),
            ifname: ifname.into(),
            config: json!({}),
            runtime_config: Map::new(),
            cni_args: None,
            default,
            default_route: None,
            result: Some(result),
        }
    }

    fn plan() -> Vec<Attachment> {
        vec![
            att(
                "podnet",
                "eth0",
                true,
                json!({"cniVersion": "1.0.0",
                "interfaces": [{"name": "cni0"}, {"name": "veth1"}, {"name": "eth0", "mac": "0a:00:00:00:00:01", "sandbox": "/ns"}],
                "ips": [{"address": "10.0.0.5/24", "gateway": "10.0.0.1", "interface": 2}],
                "routes": [{"dst": "0.0.0.0/0"}], "dns": {"nameservers": ["10.96.0.10"]}}),
            ),
            att(
                "ns1/a",
                "net1",
                false,
                json!({"cniVersion": "0.4.0",
                "interfaces": [{"name": "net1", "mac": "0a:00:00:00:00:02", "sandbox": "/ns", "pciID": "0000:03:00.1"}],
                "ips": [{"version": "4", "address": "10.1.0.5/24", "interface": 0}, {"version": "6", "address": "fd01::5/64", "interface": 0}]}),
            ),
        ]
    }

    #[test]
    fn merged_result_offsets_interface_indices() {
        let r = merge(&plan()).unwrap();
        assert_eq!(r.interfaces.len(), 4);
        assert_eq!(r.ips[0].interface, Some(2));
        assert_eq!(r.ips[1].interface, Some(3));
        assert_eq!(r.ips[2].interface, Some(3));
        assert_eq!(r.dns.nameservers, vec!["10.96.0.10"]);
        let v = r.to_value(CniVersion::V1_1_0);
        assert_eq!(v["interfaces"][3]["name"], "net1");
    }

    #[test]
    fn npwg_status() {
        let s = network_status(&plan(), "/ns").unwrap();
        assert_eq!(
            s,
            json!([
                {"name": "podnet", "interface": "eth0", "ips": ["10.0.0.5"], "mac": "0a:00:00:00:00:01",
                 "default": true, "dns": {"nameservers": ["10.96.0.10"]}},
                {"name": "ns1/a", "interface": "net1", "ips": ["10.1.0.5", "fd01::5"], "mac": "0a:00:00:00:00:02",
                 "device-info": {"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:03:00.1"}},
                 "default": false, "dns": {}}
            ])
        );
    }
}
