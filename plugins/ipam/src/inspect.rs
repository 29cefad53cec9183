//! Operator views of a store, for `manifoldctl ipam`: pools with their size
//! and use, the allocations of a network, and releasing one address.

use crate::addr::{self, Family};
use crate::alloc::{decode, Allocator, NodeRelease};
use crate::kv::Read;
use crate::range::Range;
use crate::records::{AddressRecord, Owner, RangeRecord, State};
use crate::store::{Store, StoreConf};
use manifold_common::{CniError, CniResult};
use serde::Serialize;
use std::net::IpAddr;

/// One range of a pool with its use.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RangeUsage {
    /// The range as configured.
    #[serde(flatten)]
    pub range: RangeRecord,
    /// Addresses it can hand out.
    pub size: u128,
    /// Addresses in it that are held (by any network of its space).
    pub used: u64,
}

/// One family of one network: its ranges and their totals.
#[derive(Debug, Clone, Serialize)]
pub struct PoolUsage {
    /// Network.
    pub network: String,
    /// Address space holding it.
    pub space: String,
    /// "IPv4" or "IPv6".
    pub family: String,
    /// Addresses it can hand out.
    pub size: u128,
    /// Addresses held.
    pub used: u64,
    /// Addresses free.
    pub free: u128,
    /// Its ranges.
    pub ranges: Vec<RangeUsage>,
}

/// One held address.
#[derive(Debug, Clone, Serialize)]
pub struct Allocation {
    /// The address.
    pub address: IpAddr,
    /// Its holder.
    #[serde(flatten)]
    pub owner: Owner,
    /// Pending (ADD running, or dead and waiting for its lease) or committed.
    pub state: State,
}

fn range_of(r: &RangeRecord) -> CniResult<Range> {
    Range::new(
        r.subnet,
        Some(r.range_start),
        Some(r.range_end),
        r.gateway,
        r.exclude.clone(),
    )
}

/// The ranges recorded in one open space.
fn ranges(store: &mut Store) -> CniResult<Vec<RangeRecord>> {
    store
        .kv
        .scan(store.keys.pools(), false)?
        .iter()
        .map(decode)
        .collect()
}

/// Every network's pools, per family, with size, use and free addresses.
pub fn pools(conf: &StoreConf) -> CniResult<Vec<PoolUsage>> {
    let mut out: Vec<PoolUsage> = Vec::new();
    for space in conf.spaces()? {
        let mut store = conf.open(&space)?;
        for rec in ranges(&mut store)? {
            let range = range_of(&rec)?;
            let f = range.family();
            let span = store.keys.addr_span(f, range.first, range.last);
            let used = store
                .kv
                .read(vec![Read::Count {
                    start: span.0,
                    end: span.1,
                }])?
                .pop()
                .map_or(0, |r| r.count);
            let usage = RangeUsage {
                range: rec.clone(),
                size: range.size(),
                used,
            };
            let family = f.to_string();
            match out
                .iter_mut()
                .find(|p| p.network == rec.network && p.space == space && p.family == family)
            {
                Some(p) => p.ranges.push(usage),
                None => out.push(PoolUsage {
                    network: rec.network.clone(),
                    space: space.clone(),
                    family,
                    size: 0,
                    used: 0,
                    free: 0,
                    ranges: vec![usage],
                }),
            }
        }
    }
    for p in &mut out {
        p.size = p.ranges.iter().fold(0u128, |n, r| n.saturating_add(r.size));
        p.used = p.ranges.iter().map(|r| r.used).sum();
        p.free = p.size.saturating_sub(u128::from(p.used));
    }
    out.sort_by(|a, b| (&a.network, &a.family).cmp(&(&b.network, &b.family)));
    Ok(out)
}

/// The spaces where `network` has ranges.
fn spaces_of(conf: &StoreConf, network: &str) -> CniResult<Vec<String>> {
    let mut out = Vec::new();
    for space in conf.spaces()? {
        let mut store = conf.open(&space)?;
        if ranges(&mut store)?.iter().any(|r| r.network == network) {
            out.push(space);
        }
    }
    if out.is_empty() {
        return Err(CniError::config(format!(
            "network {network:?} has no allocations in {}",
            conf.describe()
        )));
    }
    Ok(out)
}

/// The addresses `network` holds, in address order.
pub fn allocations(conf: &StoreConf, network: &str) -> CniResult<Vec<Allocation>> {
    let mut out = Vec::new();
    for space in spaces_of(conf, network)? {
        let mut store = conf.open(&space)?;
        for e in store.kv.scan(store.keys.all_addrs(), false)? {
            let rec: AddressRecord = decode(&e)?;
            if rec.owner.network != network {
                continue;
            }
            let address = [Family::V4, Family::V6].into_iter().find_map(|f| {
                store
                    .keys
                    .parse_addr(f, &e.key)
                    .map(|v| addr::from_u128(f, v))
            });
            if let Some(address) = address {
                out.push(Allocation {
                    address,
                    owner: rec.owner,
                    state: rec.state,
                });
            }
        }
    }
    Ok(out)
}

/// Releases `ip` of `network`; an error if nobody holds it.
pub fn release(conf: &StoreConf, network: &str, ip: IpAddr) -> CniResult<Allocation> {
    for space in spaces_of(conf, network)? {
        let mut store = conf.open(&space)?;
        let held = Allocator {
            kv: &mut *store.kv,
            keys: &store.keys,
            node: "manifoldctl",
        }
        .release_address(network, ip)?;
        if let Some(rec) = held {
            store.kv.finish()?;
            return Ok(Allocation {
                address: ip,
                owner: rec.owner,
                state: rec.state,
            });
        }
    }
    Err(CniError::config(format!(
        "{ip} is not allocated in network {network:?}"
    )))
}

/// Releases everything `node` holds in every address space (it is gone).
pub fn release_node(conf: &StoreConf, node: &str) -> CniResult<NodeRelease> {
    crate::names::check("node name", node)?;
    let mut total = NodeRelease::default();
    for space in conf.spaces()? {
        let mut store = conf.open(&space)?;
        let freed = Allocator {
            kv: &mut *store.kv,
            keys: &store.keys,
            node: "manifoldctl",
        }
        .release_node(node)?;
        store.kv.finish()?;
        total.add(freed);
    }
    Ok(total)
}
