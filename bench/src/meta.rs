//! The `manifold` meta-plugin attaching the default network (reference
//! `bridge`) plus five `manifold-macvlan` extras from NAD files, all
//! dual-stack from manifold-ipam on a local etcd, against the same topology
//! built by exec'ing Debian's reference plugins one by one (bridge + five
//! macvlan, host-local), as Multus would (issue 4's targets). A second
//! `manifold` row makes the default network a `manifold-macvlan` too: the
//! meta-plugin with Manifold's plugins only.

use crate::measure::{
    exec, median, ms, our_dir, run, verdict, Invocation, Netns, Sample, REFERENCE_DIR,
};
use manifold_tests::etcd::{Etcd, TempDir};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

const BRIDGE: &str = "mfbbr0";
const EXTRAS: usize = 5;

/// The default network `manifold` attaches on eth0.
#[derive(Clone, Copy)]
enum DefaultNet {
    /// Debian's reference `bridge` on [`BRIDGE`] (the reference row's topology).
    Bridge,
    /// `manifold-macvlan` on underlay `mfbu0`.
    Macvlan,
}

/// Medians of one way of attaching a pod.
struct Measured {
    add: Duration,
    del: Duration,
    rss_kb: i64,
    cycles: usize,
}

/// Runs the benchmark; `n` cycles for ours and the IPv4 reference, fewer
/// for the dual-stack reference (it waits for DAD on every interface).
pub fn bench(n: usize) {
    let dir = our_dir();
    let cni_path = format!("{}:{REFERENCE_DIR}", dir.display());
    let tag = format!("mfbm{}", std::process::id());
    let host = Netns::new(format!("{tag}h"));
    let wire = Netns::new(format!("{tag}w"));
    let pod = Netns::new(format!("{tag}p"));
    run(&["ip", "-n", &host.0, "link", "set", "lo", "up"]);
    run(&["ip", "-n", &host.0, "link", "add", BRIDGE, "type", "bridge"]);
    run(&["ip", "-n", &host.0, "link", "set", BRIDGE, "up"]);
    for i in 0..=EXTRAS {
        let m = format!("mfbu{i}");
        run(&[
            "ip",
            "-n",
            &host.0,
            "link",
            "add",
            &m,
            "type",
            "veth",
            "peer",
            "name",
            &format!("wire{i}"),
            "netns",
            &wire.0,
        ]);
        run(&["ip", "-n", &host.0, "link", "set", &m, "up"]);
    }
    let scratch = TempDir::new("bench-meta");
    // Plugins (and etcd, on the host netns's loopback) run in the host netns.
    let (ours, all_ours, reference_v4, reference_dual) = std::thread::scope(|s| {
        s.spawn(|| {
            host.enter();
            let etcd = Etcd::start();
            let run =
                |default| manifold(&dir, &cni_path, &pod.path(), &scratch.0, &etcd, default, n);
            let ours = run(DefaultNet::Bridge);
            let all_ours = run(DefaultNet::Macvlan);
            let hl = scratch.0.join("host-local");
            let v4 = reference(&cni_path, &pod.path(), &hl, false, n);
            let dual = reference(&cni_path, &pod.path(), &hl, true, n.clamp(1, 3));
            (ours, all_ours, v4, dual)
        })
        .join()
        .expect("benchmark thread")
    });

    println!("== a pod with the default network + {EXTRAS} macvlan extras, dual-stack unless said (one ADD = all six interfaces)");
    println!(
        "{:<58} {:>6} {:>12} {:>12} {:>9}",
        "how", "cycles", "ADD median", "DEL median", "peak RSS"
    );
    for (name, m) in [
        (
            "manifold + bridge + 5 manifold-macvlan, manifold-ipam etcd",
            &ours,
        ),
        (
            "manifold + 6 manifold-macvlan, manifold-ipam etcd",
            &all_ours,
        ),
        (
            "reference bridge + 5 macvlan, host-local, IPv4 only",
            &reference_v4,
        ),
        ("reference bridge + 5 macvlan, host-local", &reference_dual),
    ] {
        println!(
            "{:<58} {:>6} {:>9.2} ms {:>9.2} ms {:>6.1} MB",
            name,
            m.cycles,
            ms(m.add),
            ms(m.del),
            m.rss_kb as f64 / 1024.0
        );
    }
    println!(
        "ratio ours/reference IPv4: ADD {:.2}x, DEL {:.2}x; ours/reference dual-stack: ADD {:.3}x",
        ms(ours.add) / ms(reference_v4.add),
        ms(ours.del) / ms(reference_v4.del),
        ms(ours.add) / ms(reference_dual.add)
    );
    println!();
    for (what, m) in [
        ("default network reference bridge", &ours),
        ("default network manifold-macvlan", &all_ours),
    ] {
        println!("targets, {what}:");
        println!(
            "         ADD median <= 30 ms: {} ({:.1} ms)",
            verdict(ms(m.add) <= 30.0),
            ms(m.add)
        );
        println!(
            "         DEL median <= 30 ms: {} ({:.1} ms)",
            verdict(ms(m.del) <= 30.0),
            ms(m.del)
        );
        println!(
            "         peak RSS <= 10 MB:   {} ({:.1} MB, the largest single process)",
            verdict(m.rss_kb <= 10 * 1024),
            m.rss_kb as f64 / 1024.0
        );
    }
}

/// `manifold-ipam` on etcd, dual-stack, one /16 and one /64 per network.
fn ipam(etcd: &Etcd, i: usize, default_route: bool) -> Value {
    let mut v = json!({"type": "manifold-ipam", "nodeName": "bench",
        "etcd": {"endpoints": [etcd.url], "cacheDir": etcd.node_cache_dir()},
        "ipRanges": [{"range": format!("10.{}.0.0/16", 240 + i)}, {"range": format!("fd24:{i}::/64")}]});
    if default_route {
        // IPv4 only: the reference bridge cannot route ::/0 via a gateway
        // whose prefix is still tentative in the pod.
        v["routes"] = json!([{"dst": "0.0.0.0/0"}]);
    }
    v
}

/// ADD+DEL cycles of `manifold` (the first warms caches and is not counted).
fn manifold(
    dir: &Path,
    cni_path: &str,
    netns: &str,
    scratch: &Path,
    etcd: &Etcd,
    default_net: DefaultNet,
    n: usize,
) -> Measured {
    let (label, default) = match default_net {
        DefaultNet::Bridge => (
            "bridge",
            json!({"type": "bridge", "bridge": BRIDGE, "isGateway": true, "ipam": ipam(etcd, 0, true)}),
        ),
        DefaultNet::Macvlan => (
            "macvlan",
            json!({"type": "manifold-macvlan", "master": "mfbu0", "mode": "bridge",
                   "ipam": ipam(etcd, 0, true)}),
        ),
    };
    let conf_dir = scratch.join(format!("conf-{label}"));
    let nads = conf_dir.join("attachments").join("bench");
    std::fs::create_dir_all(&nads).expect("confDir");
    let default = json!({"cniVersion": "1.0.0", "name": "pod-net", "plugins": [default]});
    std::fs::write(conf_dir.join("pod-net.conflist"), default.to_string()).expect("write conf");
    for i in 1..=EXTRAS {
        let config = json!({"cniVersion": "1.0.0", "type": "manifold-macvlan",
            "master": format!("mfbu{i}"), "mode": "bridge", "ipam": ipam(etcd, i, false)});
        let nad = json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": format!("ext{i}"), "namespace": "bench"},
            "spec": {"config": config.to_string()}});
        std::fs::write(nads.join(format!("ext{i}.json")), nad.to_string()).expect("write NAD");
    }
    let conf = json!({"cniVersion": "1.1.0", "name": "manifold", "type": "manifold",
        "capabilities": {"io.kubernetes.cri.pod-annotations": true},
        "clusterNetwork": "pod-net",
        "confDir": conf_dir, "cniDir": scratch.join("cache"),
        "runtimeConfig": {"io.kubernetes.cri.pod-annotations":
            {"k8s.v1.cni.cncf.io/networks": "ext1,ext2,ext3,ext4,ext5"}}})
    .to_string()
    .into_bytes();
    let bin = dir.join("manifold");
    let mut adds = Vec::new();
    let mut dels = Vec::new();
    let mut rss = 0;
    for i in 0..=n {
        let id = format!("bench-{label}-{i}");
        let args = format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=pod-{i}");
        let inv = |verb| Invocation {
            bin: &bin,
            verb,
            container: &id,
            netns,
            ifname: "eth0",
            cni_path,
            args: &args,
        };
        let a = exec(&inv("ADD"), &conf);
        let r: Value = serde_json::from_slice(&a.stdout).expect("manifold result");
        let ifaces = r["interfaces"].as_array().map_or(0, Vec::len);
        assert!(
            ifaces > EXTRAS,
            "manifold attached {ifaces} interfaces: {r}"
        );
        assert_eq!(
            r["ips"].as_array().map_or(0, Vec::len),
            2 * (1 + EXTRAS),
            "{r}"
        );
        let d = exec(&inv("DEL"), &conf);
        if i > 0 {
            adds.push(a.wall);
            dels.push(d.wall);
        }
        rss = rss.max(a.max_rss_kb).max(d.max_rss_kb);
    }
    Measured {
        add: median(&mut adds),
        del: median(&mut dels),
        rss_kb: rss,
        cycles: n,
    }
}

/// The same pod built by exec'ing the reference plugins one by one: bridge
/// on eth0, macvlan on net1..net5, host-local; DEL in reverse order.
fn reference(cni_path: &str, netns: &str, hl: &Path, dual: bool, n: usize) -> Measured {
    let ranges = |i: usize| {
        let mut r = json!([[{"subnet": format!("10.{}.0.0/16", 240 + i)}]]);
        if dual {
            r.as_array_mut()
                .expect("array")
                .push(json!([{"subnet": format!("fd24:{i}::/64")}]));
        }
        r
    };
    let host_local = |i: usize| {
        let mut v = json!({"type": "host-local", "ranges": ranges(i), "dataDir": hl});
        if i == 0 {
            v["routes"] = json!([{"dst": "0.0.0.0/0"}]);
        }
        v
    };
    let mut plugins: Vec<(PathBuf, String, Vec<u8>)> = vec![(
        PathBuf::from(REFERENCE_DIR).join("bridge"),
        "eth0".to_string(),
        json!({"cniVersion": "1.0.0", "name": "ref-pod-net", "type": "bridge", "bridge": BRIDGE,
               "isGateway": true, "ipam": host_local(0)})
        .to_string()
        .into_bytes(),
    )];
    for i in 1..=EXTRAS {
        plugins.push((
            PathBuf::from(REFERENCE_DIR).join("macvlan"),
            format!("net{i}"),
            json!({"cniVersion": "1.0.0", "name": format!("ref-ext{i}"), "type": "macvlan",
                   "master": format!("mfbu{i}"), "mode": "bridge", "ipam": host_local(i)})
            .to_string()
            .into_bytes(),
        ));
    }
    let mut adds = Vec::new();
    let mut dels = Vec::new();
    let mut rss = 0;
    for i in 0..=n {
        let id = format!("ref-{i}");
        let call = |(bin, ifname, conf): &(PathBuf, String, Vec<u8>), verb| -> Sample {
            exec(
                &Invocation {
                    bin,
                    verb,
                    container: &id,
                    netns,
                    ifname,
                    cni_path,
                    args: "",
                },
                conf,
            )
        };
        let added: Vec<Sample> = plugins.iter().map(|p| call(p, "ADD")).collect();
        let deleted: Vec<Sample> = plugins.iter().rev().map(|p| call(p, "DEL")).collect();
        if i > 0 {
            adds.push(added.iter().map(|s| s.wall).sum());
            dels.push(deleted.iter().map(|s| s.wall).sum());
        }
        rss = added
            .iter()
            .chain(&deleted)
            .map(|s| s.max_rss_kb)
            .fold(rss, i64::max);
    }
    Measured {
        add: median(&mut adds),
        del: median(&mut dels),
        rss_kb: rss,
        cycles: n,
    }
}
