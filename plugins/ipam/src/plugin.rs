//! The CNI verbs: parse the call, open the store for the network's address
//! space, run the allocator, build the result.

use crate::alloc::{self, Allocator};
use crate::config::IpamConf;
use crate::kv::Read;
use crate::records::Owner;
use crate::settings::StoreFields;
use crate::store::Store;
use ipnet::IpNet;
use manifold_common::dispatch::{Call, Plugin};
use manifold_common::result::IpConfig;
use manifold_common::{CniError, CniResult, ErrorCode, NetworkResult};
use std::collections::HashSet;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// The `manifold-ipam` plugin.
pub struct Ipam;

fn load(call: &Call) -> CniResult<IpamConf> {
    IpamConf::parse(&call.conf, &StoreFields::node_file()?)
}

fn open(conf: &IpamConf) -> CniResult<Store> {
    conf.settings.store.open(&conf.space)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Static addresses asked for with `runtimeConfig.ips` or `CNI_ARGS IP=` (comma-separated).
fn requested(call: &Call) -> CniResult<Vec<IpAddr>> {
    let parse = |s: &str| -> Option<IpAddr> {
        let s = s.trim();
        s.parse::<IpNet>()
            .map(|n| n.addr())
            .or_else(|_| s.parse::<IpAddr>())
            .ok()
    };
    let mut out = Vec::new();
    for s in &call.conf.runtime_config.ips {
        out.push(parse(s).ok_or_else(|| {
            CniError::config(format!(
                "runtimeConfig.ips entry {s:?} is not an IP address"
            ))
        })?);
    }
    if let Some(list) = call.env.args.get("IP") {
        for s in list.split(',').filter(|s| !s.trim().is_empty()) {
            out.push(parse(s).ok_or_else(|| {
                CniError::env(format!("CNI_ARGS IP entry {s:?} is not an IP address"))
            })?);
        }
    }
    let mut seen = HashSet::new();
    out.retain(|ip| seen.insert(*ip));
    Ok(out)
}

fn owner(call: &Call, conf: &IpamConf) -> Owner {
    let arg = |k: &str| {
        call.env
            .args
            .get(k)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    Owner {
        network: conf.network.clone(),
        container_id: call.env.container_id.clone(),
        ifname: call.env.ifname.clone(),
        node: conf.settings.node.clone(),
        pod_namespace: arg("K8S_POD_NAMESPACE"),
        pod_name: arg("K8S_POD_NAME"),
        allocated_at: now(),
    }
}

fn result(conf: &IpamConf, addresses: &[IpNet]) -> NetworkResult {
    let ips = addresses
        .iter()
        .map(|a| IpConfig {
            interface: None,
            address: *a,
            gateway: conf
                .pools
                .iter()
                .find_map(|p| p.range_of(a.addr()))
                .and_then(|r| r.gateway),
        })
        .collect();
    NetworkResult {
        interfaces: Vec::new(),
        ips,
        routes: conf.routes.clone(),
        dns: conf.dns.clone(),
    }
}

impl Plugin for Ipam {
    fn add(&self, call: &Call) -> CniResult<NetworkResult> {
        let conf = load(call)?;
        let statics = requested(call)?;
        // Refuse a bad request before the store is even opened.
        alloc::assign_statics(&conf.pools, &statics)?;
        let owner = owner(call, &conf);
        let mut store = open(&conf)?;
        let cache = conf
            .settings
            .store
            .node_cache(&conf.space, &conf.settings.node);
        let addresses = Allocator {
            kv: &mut *store.kv,
            keys: &store.keys,
            node: &conf.settings.node,
        }
        .add(
            &conf.pools,
            &owner,
            &statics,
            conf.settings.lease_ttl,
            cache.as_ref(),
        )?;
        store.kv.finish()?;
        tracing::info!(network = %conf.network, container = %owner.container_id, ifname = %owner.ifname, ?addresses, "allocated");
        Ok(result(&conf, &addresses))
    }

    fn del(&self, call: &Call) -> CniResult<()> {
        let conf = load(call)?;
        let mut store = open(&conf)?;
        Allocator {
            kv: &mut *store.kv,
            keys: &store.keys,
            node: &conf.settings.node,
        }
        .del(&conf.network, &call.env.container_id, &call.env.ifname)?;
        store.kv.finish()
    }

    fn check(&self, call: &Call) -> CniResult<()> {
        let conf = load(call)?;
        let expected: Vec<IpNet> = call
            .conf
            .prev_result
            .as_ref()
            .map(|r| r.ips.iter().map(|i| i.address).collect())
            .unwrap_or_default();
        let mut store = open(&conf)?;
        Allocator {
            kv: &mut *store.kv,
            keys: &store.keys,
            node: &conf.settings.node,
        }
        .check(
            &conf.network,
            &call.env.container_id,
            &call.env.ifname,
            &expected,
        )
    }

    fn gc(&self, call: &Call) -> CniResult<()> {
        let conf = load(call)?;
        let valid: HashSet<(String, String)> = call
            .conf
            .valid_attachments
            .as_ref()
            .ok_or_else(|| CniError::config("GC needs \"cni.dev/valid-attachments\""))?
            .iter()
            .map(|a| (a.container_id.clone(), a.ifname.clone()))
            .collect();
        let mut store = open(&conf)?;
        let n = Allocator {
            kv: &mut *store.kv,
            keys: &store.keys,
            node: &conf.settings.node,
        }
        .gc(&conf.network, &valid)?;
        store.kv.finish()?;
        tracing::info!(network = %conf.network, released = n, "gc");
        Ok(())
    }

    fn status(&self, call: &Call) -> CniResult<()> {
        let conf = load(call)?;
        let unavailable = |e: CniError| {
            CniError::new(
                ErrorCode::PluginNotAvailable,
                format!(
                    "{} is not usable: {}",
                    conf.settings.store.describe(),
                    e.msg
                ),
            )
        };
        let mut store = open(&conf).map_err(unavailable)?;
        let probe = store.keys.attachments(&conf.network);
        store
            .kv
            .read(vec![Read::Count {
                start: probe.0,
                end: probe.1,
            }])
            .map_err(unavailable)?;
        Ok(())
    }
}
