//! The node cache of the etcd store: what this node last learned — a lease
//! still young enough to reserve under and, per range, the node's current
//! block with the addresses seen taken in it — kept in a small file on tmpfs
//! so that the next ADD can reserve at once instead of reading first
//! (DESIGN.md, "ADD fast path"). It is only ever a hint: the reserve it leads
//! to compares like any other, so a stale, lost or corrupt cache costs round
//! trips, never a duplicate.

use crate::addr::{block_base, BLOCK_SIZE};
use crate::choose::BlockView;
use crate::range::{Pool, Range};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Default directory of the node cache (tmpfs: it starts empty after a reboot).
pub const DEFAULT_DIR: &str = "/run/manifold/ipam";

/// A lease this node was granted, and until when it surely lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedLease {
    /// etcd lease ID.
    pub id: i64,
    /// Its TTL, seconds.
    pub ttl: u64,
    /// Expiry, milliseconds since the epoch, counted from before the grant
    /// was sent (so never later than etcd's own).
    pub expires_ms: u64,
}

impl CachedLease {
    /// A lease granted for `ttl` seconds by a request sent at `sent_ms`.
    pub fn granted(id: i64, ttl: u64, sent_ms: u64) -> Self {
        CachedLease {
            id,
            ttl,
            expires_ms: sent_ms + ttl * 1000,
        }
    }

    /// True when a reserve made now under it can expire no later than `ttl`
    /// from now and still has at least half of `ttl` to commit in.
    fn usable(&self, ttl: u64, now_ms: u64) -> bool {
        self.ttl == ttl && self.expires_ms.saturating_sub(now_ms) * 2 >= ttl * 1000
    }
}

/// One range's current block: base, taken bitmap, last address handed out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct BlockHint {
    /// Base address (decimal: fits any family).
    base: String,
    /// Bit i set: address base + i seen taken (or handed out from here).
    taken: u64,
    /// Offset of the last address handed out, where the next search starts.
    last: u8,
}

/// The file's content.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    #[serde(default)]
    lease: Option<CachedLease>,
    /// By range ID.
    #[serde(default)]
    blocks: BTreeMap<String, BlockHint>,
    /// "network range-ID" pairs whose pool record is known to be written.
    #[serde(default)]
    recorded: BTreeSet<String>,
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn recorded_key(network: &str, range: &Range) -> String {
    format!("{network} {}", range.id())
}

/// The next free allocatable address of `hint`'s block in `range`, after
/// the last one handed out (round robin: a released address is not reused
/// at once, as with host-local).
fn next_free(range: &Range, hint: &BlockHint) -> Option<u128> {
    let base: u128 = hint.base.parse().ok()?;
    (1..=BLOCK_SIZE as u8).find_map(|step| {
        let i = hint.last.wrapping_add(step) % BLOCK_SIZE as u8;
        let v = base + u128::from(i);
        (hint.taken & (1 << i) == 0 && range.is_allocatable(v)).then_some(v)
    })
}

/// What a fast-path ADD reserves: one address per pool under `lease`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastPlan {
    /// The lease to reserve under.
    pub lease: i64,
    /// One address per pool, in pool order.
    pub picks: Vec<u128>,
}

/// What a completed ADD teaches the cache.
pub struct Lesson<'a> {
    /// The lease it was granted, if any.
    pub lease: Option<CachedLease>,
    /// Per pool: the range of the chosen address, the address, and the node's
    /// block it came from as read (None: nothing worth keeping).
    pub chosen: Vec<(&'a Range, u128, Option<BlockView>)>,
    /// The network whose pool records the ADD made sure of.
    pub network: &'a str,
    /// All ranges of its pools.
    pub ranges: Vec<&'a Range>,
}

/// The cache file of one etcd cluster, key prefix, address space and node.
#[derive(Debug, Clone)]
pub struct NodeCache {
    path: PathBuf,
}

impl NodeCache {
    /// The cache in `dir` for this store identity (`endpoints`, `prefix`,
    /// `space`, `node`): a file named by a hash of them.
    pub fn new(dir: &Path, endpoints: &[String], prefix: &str, space: &str, node: &str) -> Self {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (endpoints, prefix, space, node).hash(&mut h);
        NodeCache {
            path: dir.join(format!("{:016x}.json", h.finish())),
        }
    }

    /// Runs `f` on the state under an exclusive lock and writes it back when
    /// `f` says so; creates the file only when `create`. Any I/O trouble
    /// (a missing file included) just means no cache.
    fn with_state<T>(&self, create: bool, f: impl FnOnce(&mut State) -> (T, bool)) -> Option<T> {
        match self.locked(create, f) {
            Ok(v) => Some(v),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::debug!(path = %self.path.display(), error = %e, "node cache not used");
                None
            }
        }
    }

    fn locked<T>(
        &self,
        create: bool,
        f: impl FnOnce(&mut State) -> (T, bool),
    ) -> std::io::Result<T> {
        if let Some(dir) = self.path.parent().filter(|_| create) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .mode(0o600)
            .open(&self.path)?;
        let mut file: Flock<File> =
            Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| e)?;
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        // Torn by a killed writer, or from another version: start afresh.
        let mut state: State = serde_json::from_str(&text).unwrap_or_default();
        let (out, changed) = f(&mut state);
        if changed {
            let text = serde_json::to_vec(&state).expect("state serializes");
            file.set_len(0)?;
            file.rewind()?;
            file.write_all(&text)?;
        }
        Ok(out)
    }

    /// Takes one address per pool from the cached blocks, marking them taken
    /// so that concurrent ADDs of this node take others. None (nothing taken)
    /// unless the lease is usable for `ttl` and every pool of `network` has a
    /// recorded range with a free address in its cached block.
    pub fn take(&self, pools: &[Pool], network: &str, ttl: u64) -> Option<FastPlan> {
        let now = now_ms();
        self.with_state(false, |s| {
            let Some(lease) = s.lease.filter(|l| l.usable(ttl, now)) else {
                return (None, false);
            };
            let mut picks = Vec::new();
            for pool in pools {
                let pick = pool.ranges.iter().find_map(|r| {
                    let hint = s.blocks.get(&r.id())?;
                    s.recorded
                        .contains(&recorded_key(network, r))
                        .then_some(())?;
                    Some((r.id(), next_free(r, hint)?))
                });
                match pick {
                    Some(p) => picks.push(p),
                    None => return (None, false),
                }
            }
            for (id, v) in &picks {
                let hint = s.blocks.get_mut(id).expect("picked from it");
                let i = (v % BLOCK_SIZE) as u8;
                hint.taken |= 1 << i;
                hint.last = i;
            }
            let plan = FastPlan {
                lease: lease.id,
                picks: picks.into_iter().map(|(_, v)| v).collect(),
            };
            (Some(plan), true)
        })
        .flatten()
    }

    /// Records what a completed ADD learned.
    pub fn learn(&self, lesson: Lesson) {
        let now = now_ms();
        self.with_state(true, |s| {
            if let Some(new) = lesson.lease {
                let keep = s
                    .lease
                    .is_some_and(|old| old.ttl == new.ttl && old.expires_ms >= new.expires_ms);
                if !keep && new.expires_ms > now {
                    s.lease = Some(new);
                }
            }
            for r in &lesson.ranges {
                s.recorded.insert(recorded_key(lesson.network, r));
            }
            for (range, v, view) in &lesson.chosen {
                match view {
                    Some(view) if view.base == block_base(*v) => {
                        let mut taken = view
                            .taken
                            .iter()
                            .filter(|&&t| block_base(t) == view.base)
                            .fold(0u64, |m, t| m | 1 << (t % BLOCK_SIZE));
                        taken |= 1 << (v % BLOCK_SIZE);
                        s.blocks.insert(
                            range.id(),
                            BlockHint {
                                base: view.base.to_string(),
                                taken,
                                last: (v % BLOCK_SIZE) as u8,
                            },
                        );
                    }
                    // Borrowed: the node has no free block of its own here.
                    _ => {
                        s.blocks.remove(&range.id());
                    }
                }
            }
            ((), true)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::range::Range;
    use std::collections::HashSet;

    /// A range whose gateway is its `.1`.
    fn range(cidr: &str) -> Range {
        let net: ipnet::IpNet = cidr.parse().unwrap();
        let gw = crate::addr::from_u128(
            crate::addr::Family::V4,
            crate::addr::to_u128(net.network()) + 1,
        );
        Range::new(net, None, None, Some(gw), vec![]).unwrap()
    }

    fn pool(r: &Range) -> Pool {
        Pool {
            ranges: vec![r.clone()],
        }
    }

    fn temp_cache(tag: &str) -> (PathBuf, NodeCache) {
        let dir = std::env::temp_dir().join(format!("mf-node-cache-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let c = NodeCache::new(&dir, &["http://127.0.0.1:1".into()], "/p", "s", "n");
        (dir, c)
    }

    /// What an ADD of `v` (block otherwise holding `taken`) in `r` of "net"
    /// with lease 7 teaches.
    fn block_lesson<'a>(r: &'a Range, v: u128, taken: &[u128], ttl: u64) -> Lesson<'a> {
        Lesson {
            lease: Some(CachedLease::granted(7, ttl, now_ms())),
            chosen: vec![(
                r,
                v,
                Some(BlockView {
                    base: block_base(v),
                    taken: taken.iter().copied().collect::<HashSet<_>>(),
                }),
            )],
            network: "net",
            ranges: vec![r],
        }
    }

    fn teach(c: &NodeCache, r: &Range, v: u128, taken: &[u128], ttl: u64) {
        c.learn(block_lesson(r, v, taken, ttl));
    }

    #[test]
    fn hands_out_free_addresses_round_robin_and_never_twice() {
        let (dir, c) = temp_cache("rr");
        let r = range("10.9.0.0/24");
        let base = r.first - 1; // 10.9.0.0
        assert_eq!(c.take(&[pool(&r)], "net", 30), None, "empty cache");
        // Chose .2 with .1 (gateway) and .4 taken.
        teach(&c, &r, base + 2, &[base + 4], 30);
        let mut got = Vec::new();
        while let Some(p) = c.take(&[pool(&r)], "net", 30) {
            assert_eq!(p.lease, 7);
            got.push(p.picks[0] - base);
        }
        // .3, then .5 to .63: never .0 (network), .1 (gateway), .2 or .4 (taken).
        let want: Vec<u128> = std::iter::once(3).chain(5..64).collect();
        assert_eq!(got, want);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn needs_a_young_lease_of_the_same_ttl_and_a_recorded_pool() {
        let (dir, c) = temp_cache("lease");
        let r = range("10.9.1.0/24");
        teach(&c, &r, r.first + 1, &[], 30);
        assert_eq!(c.take(&[pool(&r)], "net", 60), None, "other TTL");
        assert_eq!(
            c.take(&[pool(&r)], "other-net", 30),
            None,
            "pool not recorded"
        );
        assert!(c.take(&[pool(&r)], "net", 30).is_some());
        // An older lease does not replace a younger one...
        let old = CachedLease {
            id: 8,
            ttl: 30,
            expires_ms: now_ms() + 14_000,
        };
        let lesson = |lease| Lesson {
            lease: Some(lease),
            chosen: vec![],
            network: "net",
            ranges: vec![],
        };
        c.learn(lesson(old));
        assert_eq!(c.take(&[pool(&r)], "net", 30).map(|p| p.lease), Some(7));
        // ...and one past half its life is not used.
        let (dir2, c) = temp_cache("lease-old");
        c.learn(lesson(old));
        c.learn(Lesson {
            lease: None,
            ..block_lesson(&r, r.first + 1, &[], 30)
        });
        assert_eq!(c.take(&[pool(&r)], "net", 30), None, "old lease");
        let _ = std::fs::remove_dir_all(dir);
        let _ = std::fs::remove_dir_all(dir2);
    }

    #[test]
    fn a_corrupt_file_is_an_empty_cache() {
        let (dir, c) = temp_cache("corrupt");
        let r = range("10.9.2.0/24");
        teach(&c, &r, r.first + 1, &[], 30);
        std::fs::write(&c.path, b"{\"lease\": {\"id\": 7, tor").unwrap();
        assert_eq!(c.take(&[pool(&r)], "net", 30), None);
        teach(&c, &r, r.first + 1, &[], 30);
        assert!(c.take(&[pool(&r)], "net", 30).is_some());
        let _ = std::fs::remove_dir_all(dir);
    }
}
