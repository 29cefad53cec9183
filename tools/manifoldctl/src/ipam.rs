//! `manifoldctl ipam`: runs an action against the chosen store and renders it.

use crate::args::{Action, Cmd};
use crate::table;
use manifold_common::CniResult;
use manifold_ipam::inspect::{self, Allocation};
use manifold_ipam::store::{StoreConf, DEFAULT_DATA_DIR};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

fn store(cmd: &Cmd) -> CniResult<StoreConf> {
    Ok(cmd.store.fields()?.store()?.unwrap_or(StoreConf::Local {
        data_dir: PathBuf::from(DEFAULT_DATA_DIR),
    }))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn pretty<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).expect("views serialize") + "\n"
}

fn pod(a: &Allocation) -> String {
    match (&a.owner.pod_namespace, &a.owner.pod_name) {
        (Some(ns), Some(n)) => format!("{ns}/{n}"),
        _ => "-".into(),
    }
}

/// Runs the command; returns what to print.
pub fn run(cmd: &Cmd) -> CniResult<String> {
    let conf = store(cmd)?;
    match &cmd.action {
        Action::Pools => {
            let pools = inspect::pools(&conf)?;
            if cmd.json {
                return Ok(pretty(&pools));
            }
            let rows: Vec<Vec<String>> = pools
                .iter()
                .map(|p| {
                    let ranges: Vec<String> = p
                        .ranges
                        .iter()
                        .map(|r| {
                            format!(
                                "{} ({}-{})",
                                r.range.subnet, r.range.range_start, r.range.range_end
                            )
                        })
                        .collect();
                    vec![
                        p.network.clone(),
                        p.family.clone(),
                        p.size.to_string(),
                        p.used.to_string(),
                        p.free.to_string(),
                        ranges.join(", "),
                    ]
                })
                .collect();
            Ok(table::render(
                &["NETWORK", "FAMILY", "SIZE", "USED", "FREE", "RANGES"],
                &rows,
            ))
        }
        Action::Show(network) => {
            let allocs = inspect::allocations(&conf, network)?;
            if cmd.json {
                return Ok(pretty(&allocs));
            }
            let now = now();
            let rows: Vec<Vec<String>> = allocs
                .iter()
                .map(|a| {
                    vec![
                        a.address.to_string(),
                        a.owner.container_id.clone(),
                        a.owner.ifname.clone(),
                        pod(a),
                        a.owner.node.clone(),
                        table::age(a.owner.allocated_at, now),
                        format!("{:?}", a.state).to_lowercase(),
                    ]
                })
                .collect();
            Ok(table::render(
                &[
                    "ADDRESS",
                    "CONTAINER",
                    "IFNAME",
                    "POD",
                    "NODE",
                    "AGE",
                    "STATE",
                ],
                &rows,
            ))
        }
        Action::Release(network, ip) => {
            let a = inspect::release(&conf, network, *ip)?;
            if cmd.json {
                return Ok(pretty(&a));
            }
            Ok(format!(
                "released {} of network {network} (container {} ifname {}, pod {}, node {})\n",
                a.address,
                a.owner.container_id,
                a.owner.ifname,
                pod(&a),
                a.owner.node
            ))
        }
        Action::ReleaseNode(node) => {
            let r = inspect::release_node(&conf, node)?;
            if cmd.json {
                return Ok(pretty(&serde_json::json!({"node": node, "released": r})));
            }
            Ok(format!(
                "released node {node}: {} attachments ({} addresses), {} blocks\n",
                r.attachments, r.addresses, r.blocks
            ))
        }
    }
}
