//! The local store: one JSON state file per address space under `dataDir`,
//! for a single node. A call holds `flock` on `<space>.lock` from open to
//! drop, works in memory, and [`Kv::finish`] replaces `<space>.json`
//! atomically (write a temporary file, fsync, rename, fsync the directory).
//! A crash at any point leaves the previous state whole, so leases live in
//! memory only: what an unfinished ADD reserved is never written.

use crate::kv::{Cmp, Entry, Kv, Read, ReadResult, Write};
use manifold_common::{CniError, CniResult, Context, ErrorCode};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    create: i64,
    #[serde(rename = "mod")]
    modified: i64,
    value: Value,
    #[serde(skip)]
    lease: i64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    revision: i64,
    entries: BTreeMap<String, Stored>,
}

/// An open, locked local state file.
pub struct LocalKv {
    dir: PathBuf,
    path: PathBuf,
    state: State,
    dirty: bool,
    next_lease: i64,
    _lock: Flock<File>,
}

fn io_err(what: impl std::fmt::Display, e: impl std::fmt::Display) -> CniError {
    CniError::new(ErrorCode::Io, format!("{what}: {e}"))
}

/// The state files in `dir` (one per address space), by space name.
pub fn spaces(dir: &Path) -> CniResult<Vec<String>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(format!("list {}", dir.display()), e)),
    };
    let mut out: Vec<String> = rd
        .filter_map(Result::ok)
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".json")
                .map(str::to_string)
        })
        .collect();
    out.sort();
    Ok(out)
}

impl LocalKv {
    /// Opens (creating `dir` if needed) and locks the state of `space`.
    pub fn open(dir: &Path, space: &str) -> CniResult<Self> {
        fs::create_dir_all(dir).with_context(|| format!("create dataDir {}", dir.display()))?;
        let lock_path = dir.join(format!("{space}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("open lock file {}", lock_path.display()))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| io_err(format!("lock {}", lock_path.display()), e))?;
        let path = dir.join(format!("{space}.json"));
        let state = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                io_err(
                    format!(
                        "state file {} is corrupt (move it away to start afresh)",
                        path.display()
                    ),
                    e,
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(io_err(format!("read {}", path.display()), e)),
        };
        Ok(LocalKv {
            dir: dir.to_path_buf(),
            path,
            state,
            dirty: false,
            next_lease: 1,
            _lock: lock,
        })
    }

    fn entry(key: &str, s: &Stored, keys_only: bool) -> Entry {
        Entry {
            key: key.to_string(),
            value: if keys_only {
                Value::Null
            } else {
                s.value.clone()
            },
            create_rev: s.create,
            mod_rev: s.modified,
            lease: s.lease,
        }
    }

    fn holds(&self, c: &Cmp) -> bool {
        match c {
            Cmp::Absent(k) => !self.state.entries.contains_key(k),
            Cmp::ModRev(k, r) => self.state.entries.get(k).is_some_and(|s| s.modified == *r),
        }
    }
}

impl Kv for LocalKv {
    fn read(&mut self, reads: Vec<Read>) -> CniResult<Vec<ReadResult>> {
        let entries = &self.state.entries;
        Ok(reads
            .into_iter()
            .map(|r| match r {
                Read::Get(k) => ReadResult {
                    entries: entries
                        .get_key_value(&k)
                        .map(|(k, s)| Self::entry(k, s, false))
                        .into_iter()
                        .collect(),
                    count: 0,
                },
                Read::Range {
                    start,
                    end,
                    limit,
                    keys_only,
                } if start < end => ReadResult {
                    entries: entries
                        .range(start..end)
                        .take(if limit == 0 { usize::MAX } else { limit })
                        .map(|(k, s)| Self::entry(k, s, keys_only))
                        .collect(),
                    count: 0,
                },
                Read::Count { start, end } if start < end => ReadResult {
                    entries: Vec::new(),
                    count: entries.range(start..end).count() as u64,
                },
                _ => ReadResult::default(),
            })
            .collect())
    }

    fn txn(&mut self, cmps: Vec<Cmp>, writes: Vec<Write>) -> CniResult<Option<i64>> {
        // Refuse what etcd refuses, so that the local store tests catch it.
        let mut seen = std::collections::HashSet::new();
        for w in &writes {
            let (Write::Put { key, .. } | Write::Delete(key)) = w;
            if !seen.insert(key) {
                return Err(CniError::new(
                    ErrorCode::Io,
                    format!("transaction writes key {key:?} twice"),
                ));
            }
        }
        if !cmps.iter().all(|c| self.holds(c)) {
            return Ok(None);
        }
        self.state.revision += 1;
        let rev = self.state.revision;
        for w in writes {
            match w {
                Write::Put { key, value, lease } => {
                    let create = self.state.entries.get(&key).map_or(rev, |s| s.create);
                    self.state.entries.insert(
                        key,
                        Stored {
                            create,
                            modified: rev,
                            value,
                            lease: lease.unwrap_or(0),
                        },
                    );
                }
                Write::Delete(key) => {
                    self.state.entries.remove(&key);
                }
            }
        }
        self.dirty = true;
        Ok(Some(rev))
    }

    fn grant(&mut self, _ttl: u64) -> CniResult<i64> {
        self.next_lease += 1;
        Ok(self.next_lease)
    }

    fn finish(&mut self) -> CniResult<()> {
        if !self.dirty {
            return Ok(());
        }
        // Keys still leased belong to an ADD that did not complete in this
        // process: like an expired lease, they are not kept.
        self.state.entries.retain(|_, s| s.lease == 0);
        let bytes = serde_json::to_vec_pretty(&self.state)
            .map_err(|e| io_err("encode local IPAM state", e))?;
        let tmp = self.path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| io_err(format!("write {}", self.path.display()), e))?;
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn put(k: &str) -> Write {
        Write::Put {
            key: k.into(),
            value: json!({"k": k}),
            lease: None,
        }
    }

    #[test]
    fn nothing_is_written_without_finish() {
        let dir = std::env::temp_dir().join(format!("manifold-local-kv-{}", std::process::id()));
        {
            let mut kv = LocalKv::open(&dir, "s").unwrap();
            kv.txn(vec![Cmp::Absent("a".into())], vec![put("a")])
                .unwrap();
        }
        let mut kv = LocalKv::open(&dir, "s").unwrap();
        assert!(kv.get("a").unwrap().is_none());
        kv.txn(vec![], vec![put("a")]).unwrap();
        kv.finish().unwrap();
        drop(kv);
        let mut kv = LocalKv::open(&dir, "s").unwrap();
        let e = kv.get("a").unwrap().unwrap();
        assert!(kv
            .txn(vec![Cmp::Absent("a".into())], vec![put("a")])
            .unwrap()
            .is_none());
        assert!(kv
            .txn(vec![Cmp::ModRev("a".into(), e.mod_rev)], vec![put("a")])
            .unwrap()
            .is_some());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn finish_keeps_only_keys_without_lease() {
        let dir = std::env::temp_dir().join(format!("manifold-local-kv-r-{}", std::process::id()));
        let mut kv = LocalKv::open(&dir, "s").unwrap();
        let l = kv.grant(30).unwrap();
        kv.txn(
            vec![],
            vec![
                put("a"),
                Write::Put {
                    key: "b".into(),
                    value: json!(1),
                    lease: Some(l),
                },
            ],
        )
        .unwrap();
        kv.finish().unwrap();
        drop(kv);
        let mut kv = LocalKv::open(&dir, "s").unwrap();
        assert!(kv.get("a").unwrap().is_some());
        assert!(kv.get("b").unwrap().is_none());
        fs::remove_dir_all(&dir).unwrap();
    }
}
