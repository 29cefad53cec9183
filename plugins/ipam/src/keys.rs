//! The key layout of one address space (DESIGN.md, "etcd keys").

use crate::addr::{self, Family};

/// Builds the keys of one address space.
#[derive(Debug, Clone)]
pub struct Keys {
    root: String,
    registry: Option<String>,
}

/// The exclusive end of the keys starting with `prefix`.
pub fn prefix_end(prefix: &str) -> String {
    let mut end = prefix.to_string();
    // Every prefix we build ends in '/', whose successor is '0'.
    let last = end.pop().expect("non-empty prefix");
    end.push(char::from_u32(last as u32 + 1).expect("ASCII successor"));
    end
}

/// `[start, end)` of the keys starting with `prefix`.
fn prefix_span(prefix: String) -> (String, String) {
    let end = prefix_end(&prefix);
    (prefix, end)
}

impl Keys {
    /// Keys under `root` (`"<prefix>/<space>/"`, or `""` in a local state file);
    /// `registry` is the key listing the space, when the store has one.
    pub fn new(root: String, registry: Option<String>) -> Self {
        Keys { root, registry }
    }

    /// The key that records that this space exists, if the store lists spaces by key.
    pub fn registry(&self) -> Option<&str> {
        self.registry.as_deref()
    }

    fn addrs_dir(&self, f: Family) -> String {
        format!("{}addrs/{}/", self.root, f.tag())
    }

    /// Address key.
    pub fn addr(&self, f: Family, v: u128) -> String {
        format!("{}{}", self.addrs_dir(f), addr::hex(f, v))
    }

    /// `[start, end)` of the address keys between `lo` and `hi` inclusive.
    pub fn addr_span(&self, f: Family, lo: u128, hi: u128) -> (String, String) {
        (self.addr(f, lo), format!("{}\0", self.addr(f, hi)))
    }

    /// Parses an address key back into its number.
    pub fn parse_addr(&self, f: Family, key: &str) -> Option<u128> {
        addr::parse_hex(f, key.strip_prefix(&self.addrs_dir(f))?)
    }

    /// All address keys of the space, of both families.
    pub fn all_addrs(&self) -> (String, String) {
        prefix_span(format!("{}addrs/", self.root))
    }

    fn blocks_dir(&self, f: Family) -> String {
        format!("{}blocks/{}/", self.root, f.tag())
    }

    /// Block key (claim).
    pub fn block(&self, f: Family, base: u128) -> String {
        format!("{}{}", self.blocks_dir(f), addr::hex(f, base))
    }

    /// `[start, end)` of the block keys between bases `lo` and `hi` inclusive.
    pub fn block_span(&self, f: Family, lo: u128, hi: u128) -> (String, String) {
        (self.block(f, lo), format!("{}\0", self.block(f, hi)))
    }

    /// Parses a block key back into its base.
    pub fn parse_block(&self, f: Family, key: &str) -> Option<u128> {
        addr::parse_hex(f, key.strip_prefix(&self.blocks_dir(f))?)
    }

    fn affinity_dir(&self, node: &str, f: Family) -> String {
        format!("{}affinity/{node}/{}/", self.root, f.tag())
    }

    /// A node's index entry for one of its blocks.
    pub fn affinity(&self, node: &str, f: Family, base: u128) -> String {
        format!("{}{}", self.affinity_dir(node, f), addr::hex(f, base))
    }

    /// `[start, end)` of a node's affinity keys between bases `lo` and `hi` inclusive.
    pub fn affinity_span(&self, node: &str, f: Family, lo: u128, hi: u128) -> (String, String) {
        (
            self.affinity(node, f, lo),
            format!("{}\0", self.affinity(node, f, hi)),
        )
    }

    /// `[start, end)` of all of a node's affinity keys of family `f`.
    pub fn affinities(&self, node: &str, f: Family) -> (String, String) {
        prefix_span(self.affinity_dir(node, f))
    }

    /// `[start, end)` of a node's cursor keys.
    pub fn cursors(&self, node: &str) -> (String, String) {
        prefix_span(format!("{}cursor/{node}/", self.root))
    }

    /// `[start, end)` of the free-block hints of every range.
    pub fn next_blocks(&self) -> (String, String) {
        prefix_span(format!("{}nextblock/", self.root))
    }

    /// Parses an affinity key back into its block base.
    pub fn parse_affinity(&self, node: &str, f: Family, key: &str) -> Option<u128> {
        addr::parse_hex(f, key.strip_prefix(&self.affinity_dir(node, f))?)
    }

    /// The block a node last allocated from in a range.
    pub fn cursor(&self, node: &str, range_id: &str) -> String {
        format!("{}cursor/{node}/{range_id}", self.root)
    }

    /// Where to look for the next unclaimed block of a range.
    pub fn next_block(&self, range_id: &str) -> String {
        format!("{}nextblock/{range_id}", self.root)
    }

    /// Attachment key.
    pub fn attachment(&self, network: &str, container_id: &str, ifname: &str) -> String {
        format!("{}attachments/{network}/{container_id}/{ifname}", self.root)
    }

    /// All attachment keys of a network.
    pub fn attachments(&self, network: &str) -> (String, String) {
        prefix_span(format!("{}attachments/{network}/", self.root))
    }

    /// All attachment keys of the space.
    pub fn all_attachments(&self) -> (String, String) {
        prefix_span(format!("{}attachments/", self.root))
    }

    /// Description of one range of a network.
    pub fn pool(&self, network: &str, range_id: &str) -> String {
        format!("{}pools/{network}/{range_id}", self.root)
    }

    /// All range descriptions of the space.
    pub fn pools(&self) -> (String, String) {
        prefix_span(format!("{}pools/", self.root))
    }
}
