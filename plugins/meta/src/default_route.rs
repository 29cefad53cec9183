//! `default-route`: moves the pod's default route(s) to the interface of the
//! one selection element that asks for it, in the pod and in the cached
//! results (so that CHECK of every delegate still matches).

use crate::plan::Attachment;
use manifold_common::netlink::{Netlink, RouteEntry};
use manifold_common::netns::NetNs;
use manifold_common::result::NetworkResult;
use manifold_common::{CniError, CniResult, Context};
use serde_json::{json, Value};
use std::net::IpAddr;
use std::path::Path;

const MAIN_TABLE: u32 = 254;

fn is_default_dst(route: &Value, v6: bool) -> bool {
    route.get("dst").and_then(Value::as_str) == Some(if v6 { "::/0" } else { "0.0.0.0/0" })
}

/// The gateways to use: those given, else the result's gateways (one per family).
fn gateways(att: &Attachment) -> CniResult<Vec<IpAddr>> {
    let given = att.default_route.clone().unwrap_or_default();
    if !given.is_empty() {
        return Ok(given);
    }
    let r = NetworkResult::from_value(att.result.as_ref().unwrap_or(&Value::Null))?;
    let mut gws: Vec<IpAddr> = Vec::new();
    for gw in r.ips.iter().filter_map(|ip| ip.gateway) {
        if !gws.iter().any(|g| g.is_ipv6() == gw.is_ipv6()) {
            gws.push(gw);
        }
    }
    if gws.is_empty() {
        return Err(CniError::config(format!(
            "default-route on network {:?}: no gateway given and its result has none",
            att.network
        )));
    }
    Ok(gws)
}

/// Applies the `default-route` of the attachment that has one, if any.
pub fn apply(netns: &Path, plan: &mut [Attachment]) -> CniResult<()> {
    let Some(target) = plan.iter().position(|a| a.default_route.is_some()) else {
        return Ok(());
    };
    let gws = gateways(&plan[target])?;
    let ns = NetNs::open(netns)?;
    let mut nl = Netlink::open_in(&ns).context("open netlink in pod netns")?;
    let ifname = plan[target].ifname.clone();
    let link = nl
        .link_by_name(&ifname)?
        .ok_or_else(|| CniError::kernel(format!("default-route: no {ifname:?} in the pod")))?;
    for gw in gws {
        let v6 = gw.is_ipv6();
        for r in nl.routes()? {
            if r.dst.is_none() && r.v6 == v6 && r.table == MAIN_TABLE {
                nl.delete_route(&r)?;
            }
        }
        nl.add_route(&RouteEntry {
            gw: Some(gw),
            oif: Some(link.index),
            v6,
            ..Default::default()
        })
        .with_context(|| format!("default-route via {gw} on {ifname}"))?;
        let default = json!({"dst": if v6 { "::/0" } else { "0.0.0.0/0" }, "gw": gw.to_string()});
        for (i, att) in plan.iter_mut().enumerate() {
            let Some(obj) = att.result.as_mut().and_then(Value::as_object_mut) else {
                continue;
            };
            if let Some(routes) = obj
                .entry("routes")
                .or_insert_with(|| json!([]))
                .as_array_mut()
            {
                routes.retain(|r| !is_default_dst(r, v6));
                if i == target {
                    routes.push(default.clone());
                }
            }
        }
    }
    Ok(())
}
