//! manifold-ipam (etcd and local store) against Debian's host-local, exec'd
//! as a runtime's interface plugin would exec them (issue 3's targets):
//! sequential dual-stack ADD/DEL, ADD cost at 1% and 90% fill of a /16,
//! 8 parallel allocators acting as 8 nodes, peak RSS.

use crate::measure::{
    cycles, exec, ms, our_dir, print_rows, verdict, Invocation, Netns, REFERENCE_DIR,
};
use manifold_common::dispatch;
use manifold_common::env::CniEnv;
use manifold_tests::etcd::{Etcd, TempDir};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

/// Network config with an `ipam` section.
fn conf(name: &str, ipam: Value) -> Value {
    json!({"cniVersion": "1.0.0", "name": name, "type": "macvlan", "ipam": ipam})
}

/// The `ipam` section of manifold-ipam on `store` (store fields merged in).
fn ours(store: &Value, node: &str, fields: Value) -> Value {
    let mut i = store.clone();
    i["type"] = json!("manifold-ipam");
    i["nodeName"] = json!(node);
    for (k, v) in fields.as_object().expect("object") {
        i[k] = v.clone();
    }
    i
}

/// Runs the benchmark and prints its tables, ratios and verdicts.
pub fn bench(n: usize) {
    let dir = our_dir();
    let plugin = dir.join("manifold-ipam");
    let cni_path = format!("{}:{REFERENCE_DIR}", dir.display());
    let etcd = Etcd::start();
    let etcd_store = json!({"etcd": {"endpoints": [etcd.url], "cacheDir": etcd.node_cache_dir()}});
    let local = TempDir::new("bench-local");
    let local_store = json!({"dataDir": local.0});
    let hl = TempDir::new("bench-host-local");
    let pod = Netns::new(format!("mfbi{}", std::process::id()));
    let netns = pod.path();

    // 1. Sequential dual-stack ADD/DEL.
    let dual = json!({"ranges": [[{"subnet": "10.210.0.0/16"}], [{"subnet": "fd21:1::/64"}]]});
    let plugins = [
        (
            "manifold-ipam (etcd)".to_string(),
            plugin.clone(),
            conf("bench-dual", ours(&etcd_store, "node-a", dual.clone())),
        ),
        (
            "manifold-ipam (local store)".to_string(),
            plugin.clone(),
            conf("bench-dual", ours(&local_store, "node-a", dual.clone())),
        ),
        (
            "host-local (reference)".to_string(),
            PathBuf::from(REFERENCE_DIR).join("host-local"),
            conf("bench-dual", {
                let mut h = dual.clone();
                h["type"] = json!("host-local");
                h["dataDir"] = json!(hl.0);
                h
            }),
        ),
    ]
    .map(|(name, bin, c)| (name, bin, c.to_string().into_bytes()));
    let rows = cycles("dual-stack", &plugins, n, &netns, &cni_path);
    println!("== manifold-ipam vs reference host-local, dual-stack, {n} ADD+DEL cycles each, interleaved (etcd on loopback, data in /dev/shm)");
    print_rows(&rows);
    let ratio = ms(rows[0].add) / ms(rows[2].add);
    println!(
        "ratio etcd/host-local: ADD {ratio:.2}x, DEL {:.2}x; local store/host-local: ADD {:.2}x",
        ms(rows[0].del) / ms(rows[2].del),
        ms(rows[1].add) / ms(rows[2].add)
    );

    // 2. ADD cost against fill: a /16 filled to 1% and to 90% by 8 nodes.
    println!();
    println!(
        "== ADD+DEL on an IPv4 /16 (65534 addresses) at 1% and 90% fill, etcd, {n} cycles each"
    );
    let mut fill_rows = Vec::new();
    for (name, fraction) in [("fill-1pct", 0.01), ("fill-90pct", 0.90)] {
        let fields = json!({"range": "10.220.0.0/16", "enable_overlapping_ranges": false,
                            "network_name": name});
        let filled = (65534.0 * fraction) as usize;
        let t = Instant::now();
        prefill(&etcd_store, &fields, name, filled);
        eprintln!(
            "prefilled {filled} addresses of {name} in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        let c = conf(name, ours(&etcd_store, "node-0", fields))
            .to_string()
            .into_bytes();
        fill_rows.extend(cycles(
            name,
            &[("manifold-ipam (etcd)".to_string(), plugin.clone(), c)],
            n,
            &netns,
            &cni_path,
        ));
    }
    print_rows(&fill_rows);
    let fill_ratio = ms(fill_rows[1].add) / ms(fill_rows[0].add);
    println!("ratio 90%/1% fill: ADD {fill_ratio:.2}x");

    // 3. 8 parallel allocators, each a different node, exec'ing the plugin.
    println!();
    let per_node = 100;
    let (rate, dups, rss_par) = parallel(&plugin, &etcd_store, &netns, &cni_path, per_node);
    println!("== 8 parallel allocators (8 nodes, {per_node} ADDs each, /22 pool, etcd): {rate:.0} allocations/s, {dups} duplicates");

    let max_rss = rows
        .iter()
        .take(2)
        .chain(&fill_rows)
        .map(|r| r.rss_kb)
        .max()
        .unwrap_or(0)
        .max(rss_par);
    println!();
    println!(
        "targets: dual-stack ADD <= 5 ms:          {} ({:.2} ms)",
        verdict(ms(rows[0].add) <= 5.0),
        ms(rows[0].add)
    );
    println!(
        "         dual-stack ADD <= 1.0x host-local: {} ({ratio:.2}x)",
        verdict(ratio <= 1.0)
    );
    println!(
        "         90%/1% fill ADD ratio <= 1.5:     {} ({fill_ratio:.2})",
        verdict(fill_ratio <= 1.5)
    );
    println!(
        "         8 parallel >= 300/s, 0 dups:      {} ({rate:.0}/s, {dups})",
        verdict(rate >= 300.0 && dups == 0)
    );
    println!(
        "         peak RSS <= 10 MB:                {} ({:.1} MB)",
        verdict(max_rss <= 10 * 1024),
        max_rss as f64 / 1024.0
    );
}

/// Allocates `count` addresses of network `name` in-process (the plugin's
/// own code, no exec), as 8 nodes on 4 threads.
fn prefill(store: &Value, fields: &Value, name: &str, count: usize) {
    let threads = 4;
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                for i in (t..count).step_by(threads) {
                    let node = format!("node-{}", i % 8);
                    let c = conf(name, ours(store, &node, fields.clone())).to_string();
                    let id = format!("fill-{i}");
                    let env = [
                        ("CNI_COMMAND", "ADD"),
                        ("CNI_CONTAINERID", id.as_str()),
                        ("CNI_IFNAME", "net1"),
                        ("CNI_NETNS", "/var/run/netns/bench"),
                    ];
                    let out = dispatch::run(
                        &manifold_ipam::plugin::Ipam,
                        CniEnv::from_lookup(|k| {
                            env.iter()
                                .find(|(n, _)| *n == k)
                                .map(|(_, v)| v.to_string())
                        }),
                        &mut c.as_bytes(),
                    );
                    assert_eq!(out.code, 0, "prefill ADD failed: {}", out.stdout);
                }
            });
        }
    });
}

/// 8 node threads each exec `per_node` ADDs; returns allocations/s, the
/// number of duplicate addresses, and the peak RSS. Releases everything after.
fn parallel(
    plugin: &std::path::Path,
    store: &Value,
    netns: &str,
    cni_path: &str,
    per_node: usize,
) -> (f64, usize, i64) {
    let fields = json!({"range": "10.230.0.0/22", "enable_overlapping_ranges": false,
                        "network_name": "parallel"});
    // The config of node `node` and one call of it.
    let node_conf = |node: usize| {
        conf(
            "parallel",
            ours(store, &format!("node-{node}"), fields.clone()),
        )
        .to_string()
        .into_bytes()
    };
    let call = |verb: &str, node: usize, i: usize, c: &[u8]| {
        let id = format!("par-{node}-{i}");
        let inv = Invocation {
            bin: plugin,
            verb,
            container: &id,
            netns,
            ifname: "net1",
            cni_path,
            args: "",
        };
        exec(&inv, c)
    };
    let start = Instant::now();
    let results: Vec<(Vec<String>, i64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|node| {
                s.spawn(move || {
                    let c = node_conf(node);
                    let mut got = Vec::new();
                    let mut rss = 0;
                    for i in 0..per_node {
                        let sample = call("ADD", node, i, &c);
                        let r: Value = serde_json::from_slice(&sample.stdout).expect("result");
                        got.push(r["ips"][0]["address"].as_str().expect("ip").to_string());
                        rss = rss.max(sample.max_rss_kb);
                    }
                    (got, rss)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("node"))
            .collect()
    });
    let elapsed = start.elapsed();
    let all: Vec<&String> = results.iter().flat_map(|(g, _)| g).collect();
    let unique: HashSet<&&String> = all.iter().collect();
    let rss = results.iter().map(|(_, r)| *r).max().unwrap_or(0);
    for node in 0..8 {
        let c = node_conf(node);
        for i in 0..per_node {
            call("DEL", node, i, &c);
        }
    }
    (
        all.len() as f64 / elapsed.as_secs_f64(),
        all.len() - unique.len(),
        rss,
    )
}
