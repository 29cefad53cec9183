//! The transactional key-value interface the allocator runs on: batched
//! reads, compare-and-write transactions and leases. etcd implements it
//! natively ([`crate::etcd`]); the local store in memory under a file lock
//! ([`crate::local`]).

use manifold_common::CniResult;
use serde_json::Value;

/// A stored key.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Key.
    pub key: String,
    /// JSON value (`Null` for keys-only reads).
    pub value: Value,
    /// Revision that created the key.
    pub create_rev: i64,
    /// Revision that last wrote the key.
    pub mod_rev: i64,
    /// Lease the key is attached to (0: none).
    pub lease: i64,
}

/// One read of a batch.
#[derive(Debug, Clone)]
pub enum Read {
    /// One key.
    Get(String),
    /// Keys in `[start, end)`, in key order, at most `limit` (0: all).
    Range {
        /// First key.
        start: String,
        /// Exclusive end.
        end: String,
        /// Maximum number of keys (0: no limit).
        limit: usize,
        /// Leave values out.
        keys_only: bool,
    },
    /// Number of keys in `[start, end)`.
    Count {
        /// First key.
        start: String,
        /// Exclusive end.
        end: String,
    },
}

impl Read {
    /// Keys-only range read.
    pub fn keys(span: (String, String), limit: usize) -> Self {
        Read::Range {
            start: span.0,
            end: span.1,
            limit,
            keys_only: true,
        }
    }
}

/// What one read returned.
#[derive(Debug, Clone, Default)]
pub struct ReadResult {
    /// Entries (empty for `Count`).
    pub entries: Vec<Entry>,
    /// Number of keys for `Count`.
    pub count: u64,
}

/// A transaction condition.
#[derive(Debug, Clone)]
pub enum Cmp {
    /// The key does not exist (create revision 0).
    Absent(String),
    /// The key was last written at this revision.
    ModRev(String, i64),
}

/// A transaction write.
#[derive(Debug, Clone)]
pub enum Write {
    /// Put a JSON value, attached to a lease or not.
    Put {
        /// Key.
        key: String,
        /// Value.
        value: Value,
        /// Lease to attach (None detaches).
        lease: Option<i64>,
    },
    /// Delete a key.
    Delete(String),
}

/// A store the allocator can run on.
pub trait Kv {
    /// Runs reads against one consistent snapshot.
    fn read(&mut self, reads: Vec<Read>) -> CniResult<Vec<ReadResult>>;
    /// Applies `writes` if every condition holds: `Some(revision)` of the
    /// writes, or `None` when a condition failed or a lease it writes under
    /// is gone (nothing written either way).
    fn txn(&mut self, cmps: Vec<Cmp>, writes: Vec<Write>) -> CniResult<Option<i64>>;
    /// A new lease expiring after `ttl` seconds.
    fn grant(&mut self, ttl: u64) -> CniResult<i64>;
    /// Makes the call's writes durable (the local store writes its file; etcd
    /// already has). Not calling it (on error) leaves the local store unchanged.
    fn finish(&mut self) -> CniResult<()>;

    /// [`Kv::read`] and [`Kv::grant`] together; etcd sends both at once so
    /// that a new allocation pays one round trip for them, not two.
    fn read_and_grant(&mut self, reads: Vec<Read>, ttl: u64) -> CniResult<(Vec<ReadResult>, i64)> {
        let r = self.read(reads)?;
        Ok((r, self.grant(ttl)?))
    }

    /// One key.
    fn get(&mut self, key: &str) -> CniResult<Option<Entry>> {
        Ok(self
            .read(vec![Read::Get(key.to_string())])?
            .pop()
            .and_then(|r| r.entries.into_iter().next()))
    }

    /// Every key in `[start, end)`, read in pages so no answer is huge.
    fn scan(&mut self, span: (String, String), keys_only: bool) -> CniResult<Vec<Entry>> {
        const PAGE: usize = 500;
        let (mut start, end) = span;
        let mut out = Vec::new();
        loop {
            let page = self
                .read(vec![Read::Range {
                    start: start.clone(),
                    end: end.clone(),
                    limit: PAGE,
                    keys_only,
                }])?
                .pop()
                .unwrap_or_default()
                .entries;
            let full = page.len() == PAGE;
            if let Some(last) = page.last() {
                start = format!("{}\0", last.key);
            }
            out.extend(page);
            if !full {
                return Ok(out);
            }
        }
    }
}
