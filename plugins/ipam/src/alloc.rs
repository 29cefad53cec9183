//! The allocator (DESIGN.md): ADD as reserve-under-lease then commit, DEL
//! and GC by attachment, CHECK — the same code on every [`Kv`].

use crate::addr::{self, Family};
use crate::choose::{Choice, Chooser, Hints, Plan};
use crate::keys::Keys;
use crate::kv::{Cmp, Entry, Kv, Read, Write};
use crate::node_cache::{now_ms, CachedLease, FastPlan, Lesson, NodeCache};
use crate::range::{Pool, Range};
use crate::records::{AddressRecord, AttachmentRecord, BlockRecord, Owner, RangeRecord, State};
use crate::rng::Rng;
use ipnet::IpNet;
use manifold_common::{CniError, CniResult, ErrorCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::collections::HashSet;
use std::net::IpAddr;

/// Reserve attempts before giving up on a contended pool.
const MAX_ATTEMPTS: u32 = 100;

/// One store, one address space, one node: what every verb runs against.
pub struct Allocator<'a> {
    /// The store.
    pub kv: &'a mut dyn Kv,
    /// The space's keys.
    pub keys: &'a Keys,
    /// This node.
    pub node: &'a str,
}

/// Decodes a stored record, naming the key when it holds something else.
pub fn decode<T: DeserializeOwned>(e: &Entry) -> CniResult<T> {
    serde_json::from_value(e.value.clone()).map_err(|err| {
        CniError::new(
            ErrorCode::Decode,
            format!("store key {:?} holds an unexpected value: {err}", e.key),
        )
    })
}

fn json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("records serialize")
}

/// "container c1 ifname net1 (pod ns/name) on node n1" for messages.
pub fn describe(o: &Owner) -> String {
    let pod = match (&o.pod_namespace, &o.pod_name) {
        (Some(ns), Some(n)) => format!(" (pod {ns}/{n})"),
        _ => String::new(),
    };
    format!(
        "container {} ifname {}{pod} on node {} in network {:?}",
        o.container_id, o.ifname, o.node, o.network
    )
}

fn range_record(network: &str, r: &Range) -> RangeRecord {
    let f = r.family();
    RangeRecord {
        network: network.to_string(),
        subnet: r.subnet,
        range_start: addr::from_u128(f, r.first),
        range_end: addr::from_u128(f, r.last),
        gateway: r.gateway,
        exclude: r.exclude.clone(),
    }
}

/// Matches each requested static address to the pool that holds it
/// (error 7 when one is in no pool, reserved, or two share a pool).
pub fn assign_statics(pools: &[Pool], statics: &[IpAddr]) -> CniResult<Vec<Option<u128>>> {
    let mut out = vec![None; pools.len()];
    for &ip in statics {
        let Some((i, range)) = pools
            .iter()
            .enumerate()
            .find_map(|(i, p)| p.range_of(ip).map(|r| (i, r)))
        else {
            let all: Vec<String> = pools.iter().map(Pool::describe).collect();
            return Err(CniError::config(format!(
                "requested address {ip} is in none of the configured ranges ({})",
                all.join("; ")
            )));
        };
        let v = addr::to_u128(ip);
        if !range.is_allocatable(v) {
            return Err(CniError::config(format!(
                "requested address {ip} cannot be handed out: it is the network or broadcast address, the gateway, or excluded in {}",
                range.describe()
            )));
        }
        if out[i].replace(v).is_some() {
            return Err(CniError::config(format!(
                "two requested addresses fall in the same pool {}: one address per pool",
                pools[i].describe()
            )));
        }
    }
    Ok(out)
}

/// The addresses of a committed attachment, checked against the current pools.
fn existing(
    pools: &[Pool],
    rec: &AttachmentRecord,
    statics: &[Option<u128>],
) -> CniResult<Vec<IpNet>> {
    let stale = || {
        CniError::config(format!(
            "{} already holds {}, allocated under a different configuration: DEL it first",
            describe(&rec.owner),
            rec.addresses
                .iter()
                .map(IpNet::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    };
    if rec.addresses.len() != pools.len() {
        return Err(stale());
    }
    pools
        .iter()
        .zip(statics)
        .map(|(p, s)| {
            let a = rec
                .addresses
                .iter()
                .find(|a| p.range_of(a.addr()).is_some())
                .ok_or_else(stale)?;
            match s {
                Some(v) if *v != addr::to_u128(a.addr()) => Err(stale()),
                _ => Ok(*a),
            }
        })
        .collect()
}

impl Allocator<'_> {
    /// ADD: one address per pool for `owner`'s attachment, both families or
    /// neither; idempotent. Returns the addresses in pool order. With a node
    /// cache, first tries to reserve what it suggests without reading.
    pub fn add(
        &mut self,
        pools: &[Pool],
        owner: &Owner,
        statics: &[IpAddr],
        lease_ttl: u64,
        cache: Option<&NodeCache>,
    ) -> CniResult<Vec<IpNet>> {
        let statics = assign_statics(pools, statics)?;
        let akey = self
            .keys
            .attachment(&owner.network, &owner.container_id, &owner.ifname);
        if statics.iter().all(Option::is_none) {
            if let Some(plan) = cache.and_then(|c| c.take(pools, &owner.network, lease_ttl)) {
                if let Some(done) = self.fast_add(pools, owner, &akey, &plan)? {
                    return Ok(done);
                }
                tracing::debug!("node cache missed: full allocation");
            }
        }
        let ranges: Vec<&Range> = pools.iter().flat_map(|p| &p.ranges).collect();
        let mut rng = Rng::from_clock();
        // The lease of this ADD and when its grant was sent (ms since the epoch).
        let mut lease: Option<(i64, u64)> = None;
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                std::thread::sleep(rng.backoff(attempt));
            }
            // A lease past half its life might expire before the commit: renew.
            if lease.is_some_and(|(_, sent)| (now_ms() - sent) * 2 > lease_ttl * 1000) {
                lease = None;
            }
            let mut reads = vec![Read::Get(akey.clone())];
            for r in &ranges {
                let id = r.id();
                reads.push(Read::Get(self.keys.cursor(self.node, &id)));
                reads.push(Read::Get(self.keys.next_block(&id)));
                reads.push(Read::Get(self.keys.pool(&owner.network, &id)));
            }
            // A new allocation needs a lease: ask for it with the first read. An
            // idempotent ADD leaves it unused; holding no key, it just expires.
            let answers = match lease {
                Some(_) => self.kv.read(reads)?,
                None => {
                    let sent = now_ms();
                    let (answers, granted) = self.kv.read_and_grant(reads, lease_ttl)?;
                    lease = Some((granted, sent));
                    answers
                }
            };
            let mut results = answers.into_iter().map(|r| r.entries.into_iter().next());
            if let Some(e) = results.next().flatten() {
                let rec: AttachmentRecord = decode(&e)?;
                match rec.state {
                    State::Committed => return existing(pools, &rec, &statics),
                    // A dead (or concurrent) ADD of the same attachment: take over.
                    State::Pending => {
                        self.release(&e, &rec)?;
                        continue;
                    }
                }
            }
            let mut plan = Plan::default();
            let mut hints = Vec::new();
            for r in &ranges {
                let (cursor, next, meta) = (
                    results.next().flatten(),
                    results.next().flatten(),
                    results.next().flatten(),
                );
                hints.push(Hints::decode(
                    r.family(),
                    cursor.map(|e| e.value).as_ref(),
                    next.map(|e| e.value).as_ref(),
                ));
                let want = range_record(&owner.network, r);
                if meta.and_then(|m| decode::<RangeRecord>(&m).ok()).as_ref() != Some(&want) {
                    plan.put(self.keys.pool(&owner.network, &r.id()), json(&want));
                    if let Some(reg) = self.keys.registry() {
                        plan.put(reg.to_string(), serde_json::json!({}));
                    }
                }
            }
            let (lease_id, sent) = lease.expect("granted with the first read");
            let mut chosen = Vec::new();
            let mut learned = Vec::new();
            let mut offset = 0;
            for (pool, want) in pools.iter().zip(&statics) {
                let h = &hints[offset..offset + pool.ranges.len()];
                offset += pool.ranges.len();
                let (v, view) = match want {
                    Some(v) => (self.check_static(pool, *v)?, None),
                    None => {
                        let c = self.choose(pool, h, &mut plan, owner, &mut rng)?;
                        (c.value, Some(c.block))
                    }
                };
                let ip = addr::from_u128(pool.family(), v);
                let range = pool.range_of(ip).expect("chosen inside the pool");
                chosen.push(range.with_prefix(v));
                if let Some(view) = view {
                    learned.push((range, v, view));
                }
            }
            let pending = AttachmentRecord {
                owner: owner.clone(),
                state: State::Pending,
                addresses: chosen,
                lease: lease_id,
            };
            self.reserve_ops(&akey, &pending, &mut plan);
            let Some(rev) = self.kv.txn(plan.cmps, plan.writes)? else {
                continue;
            };
            match self.commit(&akey, pending, rev)? {
                Some(done) => {
                    if let Some(c) = cache {
                        c.learn(Lesson {
                            lease: Some(CachedLease::granted(lease_id, lease_ttl, sent)),
                            chosen: learned,
                            network: &owner.network,
                            ranges,
                        });
                    }
                    return Ok(done);
                }
                // The lease ran out between reserve and commit: start over.
                None => lease = None,
            }
        }
        Err(CniError::new(
            ErrorCode::TryAgainLater,
            format!(
                "gave up after {MAX_ATTEMPTS} attempts: every chosen address of network {:?} was taken concurrently",
                owner.network
            ),
        ))
    }

    /// Reserves and commits what the node cache suggested, without reading
    /// first. None when the reserve lost (taken, idempotent ADD, lease gone).
    fn fast_add(
        &mut self,
        pools: &[Pool],
        owner: &Owner,
        akey: &str,
        plan: &FastPlan,
    ) -> CniResult<Option<Vec<IpNet>>> {
        let addresses = pools
            .iter()
            .zip(&plan.picks)
            .map(|(p, &v)| {
                let ip = addr::from_u128(p.family(), v);
                p.range_of(ip).expect("taken from the pool").with_prefix(v)
            })
            .collect();
        let pending = AttachmentRecord {
            owner: owner.clone(),
            state: State::Pending,
            addresses,
            lease: plan.lease,
        };
        let mut ops = Plan::default();
        self.reserve_ops(akey, &pending, &mut ops);
        match self.kv.txn(ops.cmps, ops.writes)? {
            Some(rev) => self.commit(akey, pending, rev),
            None => Ok(None),
        }
    }

    /// Adds the reserve of `pending` to `plan`: the attachment and its
    /// addresses, each created only if absent, under the pending lease.
    fn reserve_ops(&self, akey: &str, pending: &AttachmentRecord, plan: &mut Plan) {
        plan.cmps.push(Cmp::Absent(akey.to_string()));
        for a in &pending.addresses {
            let key = self.addr_key(a);
            plan.cmps.push(Cmp::Absent(key.clone()));
            plan.writes.push(Write::Put {
                key,
                value: json(&AddressRecord {
                    owner: pending.owner.clone(),
                    state: State::Pending,
                }),
                lease: Some(pending.lease),
            });
        }
        plan.writes.push(Write::Put {
            key: akey.to_string(),
            value: json(pending),
            lease: Some(pending.lease),
        });
    }

    fn addr_key(&self, a: &IpNet) -> String {
        self.keys
            .addr(Family::of(a.addr()), addr::to_u128(a.addr()))
    }

    fn check_static(&mut self, pool: &Pool, v: u128) -> CniResult<u128> {
        let ip = addr::from_u128(pool.family(), v);
        match self.kv.get(&self.keys.addr(pool.family(), v))? {
            None => Ok(v),
            Some(e) => {
                let holder: AddressRecord = decode(&e)?;
                Err(CniError::new(
                    ErrorCode::TryAgainLater,
                    format!(
                        "requested address {ip} is in use by {}",
                        describe(&holder.owner)
                    ),
                ))
            }
        }
    }

    fn choose(
        &mut self,
        pool: &Pool,
        hints: &[Hints],
        plan: &mut Plan,
        owner: &Owner,
        rng: &mut Rng,
    ) -> CniResult<Choice> {
        let found = Chooser {
            kv: &mut *self.kv,
            keys: self.keys,
            node: self.node,
            now: owner.allocated_at,
            rng,
        }
        .choose(pool, hints, plan)?;
        found.ok_or_else(|| {
            CniError::new(
                ErrorCode::TryAgainLater,
                format!(
                    "pool {} of network {:?} is exhausted: all {} addresses are in use",
                    pool.describe(),
                    owner.network,
                    pool.size()
                ),
            )
        })
    }

    /// Re-puts the reserved keys without lease, if they are still the
    /// reserve's: None when they are not (the lease ran out first). On an
    /// error the reserved keys are left to their lease.
    fn commit(
        &mut self,
        akey: &str,
        pending: AttachmentRecord,
        rev: i64,
    ) -> CniResult<Option<Vec<IpNet>>> {
        let mut cmps = vec![Cmp::ModRev(akey.to_string(), rev)];
        let mut writes = Vec::new();
        for a in &pending.addresses {
            let key = self.addr_key(a);
            cmps.push(Cmp::ModRev(key.clone(), rev));
            writes.push(Write::Put {
                key,
                value: json(&AddressRecord {
                    owner: pending.owner.clone(),
                    state: State::Committed,
                }),
                lease: None,
            });
        }
        let committed = AttachmentRecord {
            state: State::Committed,
            lease: 0,
            ..pending
        };
        writes.push(Write::Put {
            key: akey.to_string(),
            value: json(&committed),
            lease: None,
        });
        let done = self
            .kv
            .txn(cmps, writes)
            .map_err(|e| e.context("commit the reserved addresses"))?;
        Ok(done.map(|_| committed.addresses))
    }

    /// Deletes an attachment (committed, or pending: an unfinished ADD) and
    /// its addresses if unchanged since read.
    fn release(&mut self, e: &Entry, rec: &AttachmentRecord) -> CniResult<bool> {
        let mut writes = vec![Write::Delete(e.key.clone())];
        writes.extend(
            rec.addresses
                .iter()
                .map(|a| Write::Delete(self.addr_key(a))),
        );
        Ok(self
            .kv
            .txn(vec![Cmp::ModRev(e.key.clone(), e.mod_rev)], writes)?
            .is_some())
    }

    /// DEL: releases the attachment's addresses; an unknown attachment is success.
    pub fn del(&mut self, network: &str, container_id: &str, ifname: &str) -> CniResult<()> {
        let akey = self.keys.attachment(network, container_id, ifname);
        for _ in 0..MAX_ATTEMPTS {
            let Some(e) = self.kv.get(&akey)? else {
                return Ok(());
            };
            let rec: AttachmentRecord = decode(&e)?;
            if self.release(&e, &rec)? {
                return Ok(());
            }
        }
        Err(CniError::new(
            ErrorCode::TryAgainLater,
            format!("attachment {container_id}/{ifname} of network {network:?} kept changing during DEL"),
        ))
    }

    /// GC: releases this node's committed attachments of `network` that are
    /// not in `valid` (container ID, ifname). Returns how many were released.
    pub fn gc(&mut self, network: &str, valid: &HashSet<(String, String)>) -> CniResult<usize> {
        let mut released = 0;
        for e in self.kv.scan(self.keys.attachments(network), false)? {
            let rec: AttachmentRecord = decode(&e)?;
            let o = &rec.owner;
            if o.node != self.node
                || rec.state != State::Committed
                || valid.contains(&(o.container_id.clone(), o.ifname.clone()))
            {
                continue;
            }
            if self.release(&e, &rec)? {
                tracing::info!(attachment = %describe(o), addresses = ?rec.addresses, "gc released");
                released += 1;
            }
        }
        Ok(released)
    }

    /// CHECK: the attachment holds committed addresses, and all of `expected`.
    pub fn check(
        &mut self,
        network: &str,
        container_id: &str,
        ifname: &str,
        expected: &[IpNet],
    ) -> CniResult<()> {
        let akey = self.keys.attachment(network, container_id, ifname);
        let fail = |m: String| CniError::new(ErrorCode::CheckFailed, m);
        let Some(e) = self.kv.get(&akey)? else {
            return Err(fail(format!(
                "no addresses are allocated to container {container_id} ifname {ifname} in network {network:?}"
            )));
        };
        let rec: AttachmentRecord = decode(&e)?;
        if rec.state != State::Committed {
            return Err(fail(format!(
                "the allocation of container {container_id} ifname {ifname} never completed"
            )));
        }
        for x in expected {
            if !rec.addresses.iter().any(|a| a.addr() == x.addr()) {
                return Err(fail(format!(
                    "{} is not allocated to container {container_id} ifname {ifname} (it holds {:?})",
                    x.addr(),
                    rec.addresses.iter().map(IpNet::to_string).collect::<Vec<_>>()
                )));
            }
        }
        Ok(())
    }
}

impl Allocator<'_> {
    /// Operator release of one address of `network`: deletes the address and
    /// removes it from its attachment (deleting the attachment when it was the
    /// last), in one transaction. Returns the holder, or None if it was free.
    pub fn release_address(
        &mut self,
        network: &str,
        ip: IpAddr,
    ) -> CniResult<Option<AddressRecord>> {
        let key = self.keys.addr(Family::of(ip), addr::to_u128(ip));
        for _ in 0..MAX_ATTEMPTS {
            let Some(ae) = self.kv.get(&key)? else {
                return Ok(None);
            };
            let rec: AddressRecord = decode(&ae)?;
            if rec.owner.network != network {
                return Err(CniError::config(format!(
                    "{ip} belongs to network {:?}, not {network:?}",
                    rec.owner.network
                )));
            }
            let o = &rec.owner;
            let akey = self.keys.attachment(&o.network, &o.container_id, &o.ifname);
            let mut cmps = vec![Cmp::ModRev(key.clone(), ae.mod_rev)];
            let mut writes = vec![Write::Delete(key.clone())];
            if let Some(te) = self.kv.get(&akey)? {
                let mut att: AttachmentRecord = decode(&te)?;
                if att.state == State::Pending {
                    // An unfinished ADD: end it, then look again.
                    self.release(&te, &att)?;
                    continue;
                }
                att.addresses.retain(|a| a.addr() != ip);
                cmps.push(Cmp::ModRev(akey.clone(), te.mod_rev));
                writes.push(if att.addresses.is_empty() {
                    Write::Delete(akey)
                } else {
                    Write::Put {
                        key: akey,
                        value: json(&att),
                        lease: None,
                    }
                });
            }
            if self.kv.txn(cmps, writes)?.is_some() {
                return Ok(Some(rec));
            }
        }
        Err(CniError::new(
            ErrorCode::TryAgainLater,
            format!("{ip} kept changing while being released"),
        ))
    }
}

/// What releasing a node that is gone freed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct NodeRelease {
    /// Attachments released.
    pub attachments: usize,
    /// Addresses they held.
    pub addresses: usize,
    /// Blocks whose claim was dropped (other nodes may claim them now).
    pub blocks: usize,
}

impl NodeRelease {
    /// Adds another space's counts.
    pub fn add(&mut self, other: NodeRelease) {
        self.attachments += other.attachments;
        self.addresses += other.addresses;
        self.blocks += other.blocks;
    }
}

impl Allocator<'_> {
    /// Operator release of `node`, gone for good (its pods will never DEL):
    /// every attachment it holds, committed or pending, then its block
    /// claims, cursors and the free-block hints (so that a search finds the
    /// freed blocks again). Addresses other nodes borrowed inside its blocks
    /// stay theirs.
    pub fn release_node(&mut self, node: &str) -> CniResult<NodeRelease> {
        let mut done = NodeRelease::default();
        for e in self.kv.scan(self.keys.all_attachments(), false)? {
            let rec: AttachmentRecord = decode(&e)?;
            if rec.owner.node != node {
                continue;
            }
            // Changed since the scan: whoever changed it still owns it (a
            // live ADD or DEL): say so rather than guess.
            if !self.release(&e, &rec)? {
                return Err(CniError::new(
                    ErrorCode::TryAgainLater,
                    format!(
                        "{} changed while node {node:?} was being released: is the node still running?",
                        describe(&rec.owner)
                    ),
                ));
            }
            done.attachments += 1;
            done.addresses += rec.addresses.len();
        }
        for f in [Family::V4, Family::V6] {
            for a in self.kv.scan(self.keys.affinities(node, f), true)? {
                let Some(base) = self.keys.parse_affinity(node, f, &a.key) else {
                    continue;
                };
                let block = self.keys.block(f, base);
                let mut writes = vec![Write::Delete(a.key.clone())];
                let mut cmps = Vec::new();
                if let Some(b) = self.kv.get(&block)? {
                    if decode::<BlockRecord>(&b)?.node == node {
                        cmps.push(Cmp::ModRev(block.clone(), b.mod_rev));
                        writes.push(Write::Delete(block));
                        done.blocks += 1;
                    }
                }
                if self.kv.txn(cmps, writes)?.is_none() {
                    return Err(CniError::new(
                        ErrorCode::TryAgainLater,
                        format!(
                            "block {} changed while node {node:?} was being released: try again",
                            addr::hex(f, base)
                        ),
                    ));
                }
            }
        }
        let mut hints = self.kv.scan(self.keys.cursors(node), true)?;
        hints.extend(self.kv.scan(self.keys.next_blocks(), true)?);
        if !hints.is_empty() {
            let deletes = hints.into_iter().map(|e| Write::Delete(e.key)).collect();
            self.kv.txn(vec![], deletes)?;
        }
        Ok(done)
    }
}
