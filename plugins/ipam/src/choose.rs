//! Choosing a free address for one pool with bounded work (DESIGN.md, step 2):
//! the node's current block, a few more of its blocks, a newly claimed block,
//! or — when every block is claimed — a free address borrowed from any block.

use crate::addr::{self, block_base, Family, BLOCK_SIZE};
use crate::keys::Keys;
use crate::kv::{Cmp, Kv, Read, ReadResult, Write};
use crate::range::{Pool, Range};
use crate::records::BlockRecord;
use crate::rng::Rng;
use manifold_common::CniResult;
use serde_json::{json, Value};
use std::collections::HashSet;

/// How many more of its own blocks a node looks at before claiming a new one.
const OWN_SCAN: usize = 4;
/// Block keys read per page when searching for unclaimed or borrowable blocks.
const PAGE: usize = 64;
/// Blocks whose addresses are read in one request when borrowing.
const BORROW_BATCH: usize = 16;

/// The writes and conditions of one reserve transaction.
#[derive(Debug, Default)]
pub struct Plan {
    /// Conditions.
    pub cmps: Vec<Cmp>,
    /// Writes.
    pub writes: Vec<Write>,
}

impl Plan {
    /// Adds an unconditional put without lease, replacing an earlier put of
    /// the same key (etcd refuses a transaction that writes a key twice).
    pub fn put(&mut self, key: String, value: Value) {
        self.writes
            .retain(|w| !matches!(w, Write::Put { key: k, .. } if *k == key));
        self.writes.push(Write::Put {
            key,
            value,
            lease: None,
        });
    }
}

/// Where the free-block search of a range starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextBlock {
    /// No hint yet: start at the range's first block.
    Unknown,
    /// Start at this block.
    At(u128),
    /// Every block with a free address is claimed: go straight to borrowing.
    Full,
}

/// What the first read of an ADD learned about one range.
#[derive(Debug, Clone, Copy)]
pub struct Hints {
    /// Block this node last allocated from.
    pub cursor: Option<u128>,
    /// Free-block hint.
    pub next: NextBlock,
}

impl Hints {
    /// Decodes the cursor and next-block values (absent or foreign: no hint).
    pub fn decode(f: Family, cursor: Option<&Value>, next: Option<&Value>) -> Self {
        let hex = |v: Option<&Value>, k: &str| {
            v.and_then(|v| v.get(k)?.as_str().and_then(|s| addr::parse_hex(f, s)))
        };
        let next = match next {
            Some(v) if v.get("full").and_then(Value::as_bool) == Some(true) => NextBlock::Full,
            v => hex(v, "next").map_or(NextBlock::Unknown, NextBlock::At),
        };
        Hints {
            cursor: hex(cursor, "block"),
            next,
        }
    }
}

/// One of this node's blocks as the chooser read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockView {
    /// Base address of the block.
    pub base: u128,
    /// Its addresses that were taken.
    pub taken: HashSet<u128>,
}

/// A chosen free address and, when it came from one of this node's own
/// blocks, that block as read (the node cache keeps it for the next ADD).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The address.
    pub value: u128,
    /// The node's block it lies in (None when borrowed).
    pub block: Option<BlockView>,
}

impl Choice {
    fn own(value: u128, base: u128, taken: HashSet<u128>) -> Self {
        Choice {
            value,
            block: Some(BlockView { base, taken }),
        }
    }
}

/// Chooses addresses on one store for one node.
pub struct Chooser<'a> {
    /// The store.
    pub kv: &'a mut dyn Kv,
    /// The space's keys.
    pub keys: &'a Keys,
    /// This node.
    pub node: &'a str,
    /// Current time, seconds since the epoch (block claims record it).
    pub now: u64,
    /// Randomness for borrowing.
    pub rng: &'a mut Rng,
}

/// The part of block `base` inside `range`.
fn clip(range: &Range, base: u128) -> (u128, u128) {
    (
        base.max(range.first),
        base.saturating_add(BLOCK_SIZE - 1).min(range.last),
    )
}

/// Allocatable addresses of block `base` that are not taken, lowest first.
fn free_in_block<'r>(
    range: &'r Range,
    base: u128,
    taken: &HashSet<u128>,
) -> impl Iterator<Item = u128> + 'r {
    let (lo, hi) = clip(range, base);
    let taken = taken.clone();
    let mut next = range.next_allocatable(lo);
    std::iter::from_fn(move || loop {
        let v = next.filter(|&v| v <= hi)?;
        next = v.checked_add(1).and_then(|n| range.next_allocatable(n));
        if !taken.contains(&v) {
            return Some(v);
        }
    })
}

fn first_block(range: &Range) -> u128 {
    block_base(range.first)
}

fn last_block(range: &Range) -> u128 {
    block_base(range.last)
}

impl Chooser<'_> {
    fn addr_read(&self, range: &Range, base: u128) -> Read {
        let (lo, hi) = clip(range, base);
        Read::keys(self.keys.addr_span(range.family(), lo, hi), 0)
    }

    fn taken(&self, f: Family, r: &ReadResult) -> HashSet<u128> {
        r.entries
            .iter()
            .filter_map(|e| self.keys.parse_addr(f, &e.key))
            .collect()
    }

    fn set_cursor(&self, plan: &mut Plan, range: &Range, base: u128) {
        plan.put(
            self.keys.cursor(self.node, &range.id()),
            json!({"block": addr::hex(range.family(), base)}),
        );
    }

    /// A free address of `pool` (None: the pool is exhausted), adding the
    /// block claim and hint updates it needs to `plan`.
    pub fn choose(
        &mut self,
        pool: &Pool,
        hints: &[Hints],
        plan: &mut Plan,
    ) -> CniResult<Option<Choice>> {
        for (range, h) in pool.ranges.iter().zip(hints) {
            if let Some(v) = self.own(range, h, plan)? {
                return Ok(Some(v));
            }
            if let Some(v) = self.claim(range, h, plan)? {
                return Ok(Some(v));
            }
        }
        for range in &pool.ranges {
            if let Some(value) = self.borrow(range)? {
                return Ok(Some(Choice { value, block: None }));
            }
        }
        Ok(None)
    }

    /// The lowest free address of the node's current block, else of its next few blocks.
    fn own(&mut self, range: &Range, h: &Hints, plan: &mut Plan) -> CniResult<Option<Choice>> {
        let f = range.family();
        let (lo, hi) = (first_block(range), last_block(range));
        let cursor = h.cursor.filter(|c| (lo..=hi).contains(c));
        let affinity =
            |a: u128, b: u128| Read::keys(self.keys.affinity_span(self.node, f, a, b), OWN_SCAN);
        let mut reads = Vec::new();
        if let Some(c) = cursor {
            reads.push(self.addr_read(range, c));
        }
        let after = match cursor {
            Some(c) => c.checked_add(BLOCK_SIZE).filter(|&a| a <= hi),
            None => Some(lo),
        };
        if let Some(a) = after {
            reads.push(affinity(a, hi));
        }
        if let Some(c) = cursor.filter(|&c| c > lo) {
            reads.push(affinity(lo, c - BLOCK_SIZE));
        }
        let mut results = self.kv.read(reads)?.into_iter();
        if let Some(c) = cursor {
            let taken = self.taken(f, &results.next().unwrap_or_default());
            if let Some(v) = free_in_block(range, c, &taken).next() {
                return Ok(Some(Choice::own(v, c, taken)));
            }
        }
        let blocks: Vec<u128> = results
            .flat_map(|r| r.entries)
            .filter_map(|e| self.keys.parse_affinity(self.node, f, &e.key))
            .collect();
        if blocks.is_empty() {
            return Ok(None);
        }
        let reads = blocks.iter().map(|&b| self.addr_read(range, b)).collect();
        let results = self.kv.read(reads)?;
        for (&b, r) in blocks.iter().zip(&results) {
            let taken = self.taken(f, r);
            if let Some(v) = free_in_block(range, b, &taken).next() {
                self.set_cursor(plan, range, b);
                return Ok(Some(Choice::own(v, b, taken)));
            }
        }
        Ok(None)
    }

    /// The first block at or after `from` (up to `to`) that has an
    /// allocatable address and is not claimed.
    fn unclaimed(&mut self, range: &Range, from: u128, to: u128) -> CniResult<Option<u128>> {
        let f = range.family();
        let next_useful = |b: u128| range.next_allocatable(b).map(block_base);
        let Some(mut b) = next_useful(from) else {
            return Ok(None);
        };
        loop {
            if b > to {
                return Ok(None);
            }
            let page = self
                .kv
                .read(vec![Read::keys(self.keys.block_span(f, b, to), PAGE)])?
                .pop()
                .unwrap_or_default();
            let claimed: Vec<u128> = page
                .entries
                .iter()
                .filter_map(|e| self.keys.parse_block(f, &e.key))
                .collect();
            let mut it = claimed.iter().copied().peekable();
            loop {
                while it.next_if(|&c| c < b).is_some() {}
                match it.peek() {
                    Some(&c) if c == b => {
                        it.next();
                        match b.checked_add(BLOCK_SIZE).and_then(next_useful) {
                            Some(n) if n <= to => b = n,
                            _ => return Ok(None),
                        }
                    }
                    None if claimed.len() == PAGE => break,
                    _ => return Ok(Some(b)),
                }
            }
        }
    }

    /// Claims the first unclaimed block from the free-block hint (wrapping
    /// once) and takes its lowest free address.
    fn claim(&mut self, range: &Range, h: &Hints, plan: &mut Plan) -> CniResult<Option<Choice>> {
        let f = range.family();
        let (lo, hi) = (first_block(range), last_block(range));
        let start = match h.next {
            NextBlock::Full => return Ok(None),
            NextBlock::At(b) if (lo..=hi).contains(&b) => b,
            _ => lo,
        };
        let mut segments = vec![(start, hi)];
        if start > lo {
            segments.push((lo, start - BLOCK_SIZE));
        }
        for (a, z) in segments {
            let mut from = a;
            while let Some(b) = self.unclaimed(range, from, z)? {
                let r = self
                    .kv
                    .read(vec![self.addr_read(range, b)])?
                    .pop()
                    .unwrap_or_default();
                let taken = self.taken(f, &r);
                if let Some(v) = free_in_block(range, b, &taken).next() {
                    let id = range.id();
                    plan.cmps.push(Cmp::Absent(self.keys.block(f, b)));
                    plan.put(
                        self.keys.block(f, b),
                        serde_json::to_value(BlockRecord {
                            node: self.node.to_string(),
                            claimed_at: self.now,
                        })
                        .expect("block record serializes"),
                    );
                    plan.put(self.keys.affinity(self.node, f, b), json!({}));
                    self.set_cursor(plan, range, b);
                    let next = match b.checked_add(BLOCK_SIZE).filter(|&n| n <= hi) {
                        Some(n) => json!({"next": addr::hex(f, n)}),
                        None => json!({"next": addr::hex(f, lo)}),
                    };
                    plan.put(self.keys.next_block(&id), next);
                    return Ok(Some(Choice::own(v, b, taken)));
                }
                match b.checked_add(BLOCK_SIZE) {
                    Some(n) if n <= z => from = n,
                    _ => break,
                }
            }
        }
        plan.put(self.keys.next_block(&range.id()), json!({"full": true}));
        Ok(None)
    }

    /// A random free address of a claimed block, starting the scan at a
    /// random block so that borrowers spread out.
    fn borrow(&mut self, range: &Range) -> CniResult<Option<u128>> {
        let f = range.family();
        let (lo, hi) = (first_block(range), last_block(range));
        let span = (range.last - range.first).saturating_add(1);
        let start = block_base(range.first + self.rng.below(span)).max(lo);
        let mut segments = vec![(start, hi)];
        if start > lo {
            segments.push((lo, start - BLOCK_SIZE));
        }
        for (a, z) in segments {
            let mut from = a;
            loop {
                let page = self
                    .kv
                    .read(vec![Read::keys(self.keys.block_span(f, from, z), PAGE)])?
                    .pop()
                    .unwrap_or_default();
                let blocks: Vec<u128> = page
                    .entries
                    .iter()
                    .filter_map(|e| self.keys.parse_block(f, &e.key))
                    .collect();
                for chunk in blocks.chunks(BORROW_BATCH) {
                    let reads = chunk.iter().map(|&b| self.addr_read(range, b)).collect();
                    let results = self.kv.read(reads)?;
                    for (&b, r) in chunk.iter().zip(&results) {
                        let free: Vec<u128> = free_in_block(range, b, &self.taken(f, r)).collect();
                        if !free.is_empty() {
                            let i = self.rng.below(free.len() as u128) as usize;
                            return Ok(Some(free[i]));
                        }
                    }
                }
                match blocks.last().and_then(|l| l.checked_add(BLOCK_SIZE)) {
                    Some(n) if blocks.len() == PAGE && n <= z => from = n,
                    _ => break,
                }
            }
        }
        Ok(None)
    }
}
