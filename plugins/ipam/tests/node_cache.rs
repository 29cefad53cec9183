//! The etcd store's node cache (DESIGN.md, "ADD fast path") against a real
//! etcd: consecutive ADDs of a node share one lease and reserve without
//! reading, and a cache that is wrong — its lease revoked, its next address
//! taken by another node, its file garbage — costs a fallback, never a
//! failed ADD or a duplicate.

mod common;

use common::{add, conf, consistent_attachments, Backend, Call};
use serde_json::{json, Value};
use std::collections::HashSet;

/// Runs `f` with a client of the etcd at `url`.
fn with_client<T>(url: &str, f: impl AsyncFnOnce(&mut etcd_client::Client) -> T) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = etcd_client::Client::connect([url], None).await.unwrap();
        f(&mut c).await
    })
}

/// The IDs of the leases etcd holds.
fn leases(url: &str) -> Vec<i64> {
    with_client(url, async |c| {
        let r = c.leases().await.unwrap();
        r.leases().iter().map(|l| l.id()).collect()
    })
}

fn revoke(url: &str, id: i64) {
    with_client(url, async |c| {
        c.lease_revoke(id).await.unwrap();
    })
}

fn etcd_parts(b: &Backend) -> (&str, String) {
    match b {
        Backend::Etcd(e) => (&e.url, e.node_cache_dir()),
        Backend::Local(_) => unreachable!("etcd only"),
    }
}

fn dual(b: &Backend) -> Value {
    conf(
        b,
        json!({"ranges": [[{"subnet": "10.96.0.0/24"}], [{"subnet": "fd96::/64"}]]}),
    )
}

/// The cache files of the backend's cache directory.
fn cache_files(dir: &str) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[test]
fn consecutive_adds_share_one_lease_and_stay_unique() {
    let b = Backend::etcd();
    let (url, dir) = etcd_parts(&b);
    let c = dual(&b);
    let mut seen = HashSet::new();
    for i in 0..12 {
        for ip in add(&c, &format!("c{i}")).ips() {
            assert!(seen.insert(ip.clone()), "{ip} handed out twice");
        }
    }
    // Without the cache every new allocation is granted its own lease.
    assert_eq!(leases(url).len(), 1, "one lease for 12 ADDs");
    assert_eq!(cache_files(&dir).len(), 1);
    assert_eq!(consistent_attachments(&b, "_shared").len(), 12);

    let mut off = c.clone();
    off["ipam"]["etcd"]["cacheDir"] = json!("");
    for i in 0..3 {
        add(&off, &format!("off{i}"));
    }
    assert_eq!(leases(url).len(), 4, "no cache: a lease per ADD");
}

#[test]
fn a_revoked_lease_or_a_taken_address_falls_back_to_a_full_allocation() {
    let b = Backend::etcd();
    let (url, dir) = etcd_parts(&b);
    let c = dual(&b);
    assert_eq!(add(&c, "a1").ips(), vec!["10.96.0.2/24", "fd96::2/64"]);
    // The cache's lease is gone: the next ADD still succeeds, on a new lease.
    let cached = leases(url);
    assert_eq!(cached.len(), 1);
    revoke(url, cached[0]);
    assert_eq!(add(&c, "a2").ips(), vec!["10.96.0.3/24", "fd96::3/64"]);
    let now = leases(url);
    assert_eq!(now.len(), 1);
    assert_ne!(now, cached);
    // Another node takes the address this node's cache would hand out next.
    let mut b_node = c.clone();
    b_node["ipam"]["nodeName"] = json!("node-b");
    let taken = Call::new("ADD", "b1", "net1")
        .env("CNI_ARGS", "IP=10.96.0.4")
        .run(&b_node);
    assert_eq!(taken.code, 0, "{}", taken.stdout);
    let got = add(&c, "a3").ips();
    assert!(!got.contains(&"10.96.0.4/24".to_string()), "{got:?}");
    // A garbage cache file is no cache.
    for f in cache_files(&dir) {
        std::fs::write(f, b"\0garbage").unwrap();
    }
    add(&c, "a4");
    let all = consistent_attachments(&b, "_shared");
    assert_eq!(all.len(), 5);
    let addrs: Vec<&String> = all.iter().flat_map(|(_, a)| a).collect();
    let unique: HashSet<&&String> = addrs.iter().collect();
    assert_eq!(unique.len(), addrs.len(), "duplicate in {addrs:?}");
}
