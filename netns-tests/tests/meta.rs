//! The `manifold` meta-plugin against real namespaces, run as a runtime runs
//! it (inside a "host" netns, attaching pod netns the test created), with
//! real delegates: Debian's reference bridge/macvlan/host-local/static and
//! Manifold's macvlan, ipvlan and IPAM.

use manifold_netns_tests::meta::{
    link_names, ping, result_addrs, MetaLab, NetnsApi, BRIDGE, POD_NS,
};
use manifold_netns_tests::topology::{addresses, routes};
use manifold_netns_tests::{settle, snapshot, TestNetns};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The JSON selection of all five extras for pod number `n` (ext-e gets static ips and a MAC).
fn five_extras(n: u8) -> String {
    json!([
        {"name": "ext-a"},
        {"name": "ext-b", "namespace": POD_NS},
        {"name": "ext-c"},
        {"name": "ext-d", "interface": "data4"},
        {"name": "ext-e", "ips": [format!("10.81.5.{}/24", 10 + n), format!("fd81:5::{}/64", 10 + n)],
         "mac": format!("0a:58:0a:51:05:{:02x}", 10 + n)}
    ])
    .to_string()
}

const EXTRA_IFS: [&str; 5] = ["net1", "net2", "net3", "data4", "net5"];

fn sandbox_ifnames(result: &Value) -> Vec<String> {
    result["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i.get("sandbox").is_some())
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect()
}

fn strip(a: &str) -> &str {
    a.split('/').next().unwrap()
}

/// Every address the result gives an interface is on it in the pod, and no other.
fn assert_pod_matches_result(pod: &TestNetns, result: &Value) {
    for ifname in sandbox_ifnames(result) {
        let mut want = result_addrs(result, &ifname);
        let mut got: Vec<String> = addresses(pod, &ifname).into_iter().map(|a| a.0).collect();
        want.sort();
        got.sort();
        assert_eq!(got, want, "addresses of {ifname}");
    }
}

#[test]
fn bridge_default_and_five_extras_reach_each_other_and_leave_nothing() {
    let lab = MetaLab::new("mfmb");
    lab.default_networks();
    lab.extra_networks();
    let conf = lab.manifold_conf("podnet", json!({}));
    let before = lab.t.host_snapshot();
    let pods = [lab.t.pod("mfmb1"), lab.t.pod("mfmb2")];
    let mut results = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        let out = lab.add(&conf, &format!("ctr{i}"), pod, &five_extras(i as u8));
        let r = out.result().clone();
        assert_eq!(r["cniVersion"], "1.1.0");
        assert_eq!(
            sandbox_ifnames(&r),
            ["eth0", "net1", "net2", "net3", "data4", "net5"]
        );
        let mut links = link_names(pod);
        links.sort();
        assert_eq!(
            links,
            ["data4", "eth0", "lo", "net1", "net2", "net3", "net5"]
        );
        // eth0 is the default network's: the reference bridge's veth, addresses from host-local.
        assert_eq!(
            result_addrs(&r, "eth0"),
            [
                format!("10.80.0.{}/24", 2 + i),
                format!("fd80::{}/64", 2 + i)
            ]
        );
        assert_eq!(
            result_addrs(&r, "net2"),
            [
                format!("10.81.2.{}/24", 2 + i),
                format!("fd81:2::{}/64", 2 + i)
            ]
        );
        assert_eq!(
            result_addrs(&r, "net3"),
            [
                format!("10.81.3.{}/24", 2 + i),
                format!("fd81:3::{}/64", 2 + i)
            ]
        );
        assert_eq!(
            result_addrs(&r, "net5"),
            [
                format!("10.81.5.{}/24", 10 + i),
                format!("fd81:5::{}/64", 10 + i)
            ]
        );
        for (ifname, v4, v6) in [
            ("net1", "10.81.1.", "fd81:1::"),
            ("data4", "10.81.4.", "fd81:4::"),
        ] {
            let a = result_addrs(&r, ifname);
            assert_eq!(a.len(), 2, "{ifname}: {a:?}");
            assert!(a[0].starts_with(v4) && a[0].ends_with("/24"), "{a:?}");
            assert!(a[1].starts_with(v6) && a[1].ends_with("/64"), "{a:?}");
        }
        assert_pod_matches_result(pod, &r);
        let mac = link_details_mac(pod, "net5");
        assert_eq!(mac, format!("0a:58:0a:51:05:{:02x}", 10 + i));
        // Routes: the default routes are eth0's; each extra has only its subnet.
        assert_eq!(
            routes(pod, "eth0"),
            [
                "-4 10.80.0.0/24 proto kernel scope link src ".to_string()
                    + strip(&result_addrs(&r, "eth0")[0]),
                "-4 default via 10.80.0.1".to_string(),
                "-6 default via fd80::1 metric 1024 pref medium".to_string(),
                "-6 fd80::/64 proto kernel metric 256 pref medium".to_string(),
            ]
        );
        for (ifname, net) in EXTRA_IFS.iter().zip(1..) {
            let a = result_addrs(&r, ifname);
            assert_eq!(
                routes(pod, ifname),
                [
                    format!(
                        "-4 10.81.{net}.0/24 proto kernel scope link src {}",
                        strip(&a[0])
                    ),
                    format!("-6 fd81:{net}::/64 proto kernel metric 256 pref medium"),
                ],
                "{ifname}"
            );
        }
        results.push(r);
    }
    for pod in &pods {
        settle(pod);
    }
    for ifname in ["eth0"].iter().chain(EXTRA_IFS.iter()) {
        for a in result_addrs(&results[1], ifname) {
            assert!(
                ping(&pods[0], ifname, strip(&a)),
                "pod 1 -> pod 2 {ifname} {a}"
            );
        }
        for a in result_addrs(&results[0], ifname) {
            assert!(
                ping(&pods[1], ifname, strip(&a)),
                "pod 2 -> pod 1 {ifname} {a}"
            );
        }
    }
    // network-status, NPWG format, in the cache.
    let state: Value =
        serde_json::from_slice(&std::fs::read(lab.cni_dir.join("state/ctr0.json")).unwrap())
            .unwrap();
    let status = state["networkStatus"].as_array().unwrap();
    let names: Vec<(&str, &str, bool)> = status
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap(),
                s["interface"].as_str().unwrap(),
                s["default"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("podnet", "eth0", true),
            ("mfmns/ext-a", "net1", false),
            ("mfmns/ext-b", "net2", false),
            ("mfmns/ext-c", "net3", false),
            ("mfmns/ext-d", "data4", false),
            ("mfmns/ext-e", "net5", false)
        ]
    );
    assert_eq!(status[5]["ips"], json!(["10.81.5.10", "fd81:5::10"]));
    assert_eq!(status[5]["mac"], "0a:58:0a:51:05:0a");
    let mode = std::os::unix::fs::MetadataExt::mode(
        &std::fs::metadata(lab.cni_dir.join("state/ctr0.json")).unwrap(),
    );
    assert_eq!(mode & 0o777, 0o600);

    // CHECK every delegate against what ADD cached.
    for i in 0..2 {
        let mut c = conf.clone();
        c["prevResult"] = results[i].clone();
        let chk = lab
            .call(
                "CHECK",
                &format!("ctr{i}"),
                Some(&pods[i]),
                &format!("ctr{i}"),
            )
            .run(c.to_string().as_bytes());
        assert_eq!(chk.code, 0, "CHECK: {chk:?}");
    }
    for (i, pod) in pods.iter().enumerate() {
        let d = lab.del(&conf, &format!("ctr{i}"), Some(pod));
        assert_eq!(d.code, 0, "{d:?}");
        assert_eq!(link_names(pod), ["lo"]);
    }
    assert_eq!(lab.t.host_snapshot(), before, "host netns changed");
    assert!(lab.leftovers().is_empty(), "left: {:?}", lab.leftovers());
    assert!(link_names(&lab.t.host).contains(&BRIDGE.to_string()));
}

fn link_details_mac(pod: &TestNetns, ifname: &str) -> String {
    manifold_netns_tests::topology::link_details(pod, ifname).unwrap()["address"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn macvlan_default_with_text_annotation_and_default_route_moved_to_an_extra() {
    let lab = MetaLab::new("mfmd");
    lab.default_networks();
    lab.extra_networks();
    let conf = lab.manifold_conf("podmv", json!({}));
    let before = lab.t.host_snapshot();

    // Text form: namespace, explicit interface, default names by position.
    let pod = lab.t.pod("mfmd1");
    let r = lab.add(&conf, "txt", &pod, "ext-a, mfmns/ext-c@fast1, ext-b");
    let res = r.result().clone();
    assert_eq!(sandbox_ifnames(&res), ["eth0", "net1", "fast1", "net3"]);
    assert_eq!(
        manifold_netns_tests::topology::link_details(&pod, "eth0").unwrap()["linkinfo"]
            ["info_kind"],
        "macvlan"
    );
    assert_eq!(
        result_addrs(&res, "eth0"),
        ["10.80.1.2/24".to_string(), "fd80:1::2/64".to_string()]
    );
    assert_pod_matches_result(&pod, &res);
    assert!(routes(&pod, "eth0").contains(&"-4 default via 10.80.1.1".to_string()));

    // JSON form with default-route on ext-b: IPv4 default moves to net1, IPv6 stays on eth0.
    let pod2 = lab.t.pod("mfmd2");
    let sel = r#"[{"name":"ext-b","default-route":["10.81.2.1"]},{"name":"ext-a"}]"#;
    let r2 = lab.add(&conf, "dr", &pod2, sel).result().clone();
    assert_eq!(sandbox_ifnames(&r2), ["eth0", "net1", "net2"]);
    let addr = strip(&result_addrs(&r2, "net1")[0]).to_string();
    assert_eq!(
        routes(&pod2, "net1"),
        [
            format!("-4 10.81.2.0/24 proto kernel scope link src {addr}"),
            "-4 default via 10.81.2.1".to_string(),
            "-6 fd81:2::/64 proto kernel metric 256 pref medium".to_string(),
        ]
    );
    let eth0 = routes(&pod2, "eth0");
    assert!(
        !eth0.iter().any(|r| r.starts_with("-4 default")),
        "{eth0:?}"
    );
    assert!(
        eth0.iter()
            .any(|r| r.starts_with("-6 default via fd80:1::1")),
        "{eth0:?}"
    );
    let defaults: Vec<&Value> = r2["routes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["dst"] == "0.0.0.0/0")
        .collect();
    assert_eq!(defaults, [&json!({"dst": "0.0.0.0/0", "gw": "10.81.2.1"})]);
    // CHECK still passes: the cached delegate results were moved along.
    let mut c = conf.clone();
    c["prevResult"] = r2.clone();
    let chk = lab
        .call("CHECK", "dr", Some(&pod2), "dr")
        .run(c.to_string().as_bytes());
    assert_eq!(chk.code, 0, "{chk:?}");
    // An extra interface removed behind our back: CHECK names the network and interface.
    pod2.ip(&["link", "del", "net2"]);
    let chk = lab
        .call("CHECK", "dr", Some(&pod2), "dr")
        .run(c.to_string().as_bytes());
    assert_ne!(chk.code, 0, "{chk:?}");
    assert!(
        chk.error_msg().contains("mfmns/ext-a") && chk.error_msg().contains("net2"),
        "{chk:?}"
    );

    for (id, p) in [("txt", &pod), ("dr", &pod2)] {
        assert_eq!(lab.del(&conf, id, Some(p)).code, 0);
        assert_eq!(link_names(p), ["lo"]);
    }
    assert_eq!(lab.t.host_snapshot(), before);
    assert!(lab.leftovers().is_empty(), "{:?}", lab.leftovers());
}

/// Runs the failing-4th-extra scenario with `parallelDelegates` as given and
/// returns the interfaces whose DEL the rollback ran, in order.
fn fourth_extra_fails(tag: &str, parallel: bool) -> Vec<String> {
    let lab = MetaLab::new(tag);
    lab.default_networks();
    lab.extra_networks();
    // Allocates from manifold-ipam, then fails: its route's gateway is not on-link.
    let mut ipam = lab.manifold_ipam("10.81.9.0/24", "fd81:9::/64");
    ipam["routes"] = json!([{"dst": "10.99.0.0/16", "gw": "10.200.0.1"}]);
    let bad =
        json!({"cniVersion": "1.0.0", "type": "manifold-macvlan", "master": "mfu5", "ipam": ipam});
    lab.nad(POD_NS, "ext-bad", Some(&bad), "yaml");
    let conf = lab.manifold_conf("podnet", json!({"parallelDelegates": parallel}));
    let before = lab.t.host_snapshot();
    let pod = lab.t.pod(&format!("{tag}1"));
    let pod_before = snapshot(&pod);
    let out = lab.add(&conf, "rb", &pod, "ext-a, ext-b, ext-c, ext-bad, ext-d");
    assert_eq!(out.error_code(), 100, "{out:?}");
    let msg = out.error_msg();
    assert!(
        msg.contains("mfmns/ext-bad") && msg.contains("net4"),
        "{msg}"
    );
    assert_eq!(snapshot(&pod), pod_before, "pod changed");
    assert_eq!(lab.t.host_snapshot(), before, "host changed");
    assert!(lab.leftovers().is_empty(), "{:?}", lab.leftovers());
    // The delegates did run (and were undone): the log shows the rollback.
    let log = std::fs::read_to_string(lab.t.dir.join("manifold.log")).unwrap();
    assert!(log.contains("rolling back"), "{log}");
    log.lines()
        .filter(|l| l.contains("delegate DEL"))
        .map(|l| l.split("ifname=").nth(1).unwrap_or("").trim().to_string())
        .collect()
}

#[test]
fn failure_of_the_fourth_extra_rolls_everything_back() {
    // Delegates ran concurrently: all six were made (the 5th too), and all,
    // the failed one included, are deleted one by one in reverse order.
    assert_eq!(
        fourth_extra_fails("mfmr", true),
        ["net5", "net4", "net3", "net2", "net1", "eth0"]
    );
}

#[test]
fn sequential_delegates_stop_at_the_failure_and_roll_back_in_reverse() {
    // parallelDelegates false (Multus' way): the 5th never ran.
    assert_eq!(
        fourth_extra_fails("mfms", false),
        ["net4", "net3", "net2", "net1", "eth0"]
    );
}

#[test]
fn del_works_from_the_cache_after_nads_are_deleted_and_is_repeatable() {
    let lab = MetaLab::new("mfmc");
    lab.default_networks();
    lab.extra_networks();
    let conf = lab.manifold_conf("podnet", json!({}));
    let before = lab.t.host_snapshot();
    let pod = lab.t.pod("mfmc1");
    lab.add(&conf, "gone", &pod, &five_extras(1)).result();
    std::fs::remove_dir_all(&lab.conf_dir).unwrap();
    let d = lab.del(&conf, "gone", Some(&pod));
    assert_eq!(d.code, 0, "{d:?}");
    assert_eq!(link_names(&pod), ["lo"]);
    assert!(lab.leftovers().is_empty(), "{:?}", lab.leftovers());
    assert_eq!(lab.t.host_snapshot(), before);
    let again = lab.del(&conf, "gone", Some(&pod));
    assert_eq!(again.code, 0, "second DEL: {again:?}");
    let no_ns = lab.del(&conf, "gone", None);
    assert_eq!(no_ns.code, 0, "DEL without netns: {no_ns:?}");
}

#[test]
fn del_without_netns_after_the_pod_is_gone_releases_addresses() {
    let lab = MetaLab::new("mfmn");
    lab.default_networks();
    lab.extra_networks();
    let conf = lab.manifold_conf("podnet", json!({}));
    let before = lab.t.host_snapshot();
    let pod = lab.t.pod("mfmn1");
    lab.add(&conf, "nons", &pod, &five_extras(2)).result();
    drop(pod);
    let d = lab.del(&conf, "nons", None);
    assert_eq!(d.code, 0, "{d:?}");
    assert!(lab.leftovers().is_empty(), "{:?}", lab.leftovers());
    // The host veth of the bridge attachment goes with the pod netns.
    assert_eq!(lab.t.host_snapshot_after_netns_teardown(&before), before);
}

/// DEL deletes the links of the manifold-macvlan extras in one request by
/// link group, next to the reference macvlan extras' own deletion, in both
/// delegate modes; links the pod had besides its attachments stay, in
/// whatever group they are.
#[test]
fn del_deletes_manifold_links_by_group_and_keeps_the_pods_own_links() {
    let lab = MetaLab::new("mfmg");
    lab.default_networks();
    lab.extra_networks();
    let log = lab.t.dir.join("manifold.log");
    for (i, parallel) in [true, false].into_iter().enumerate() {
        let conf = lab.manifold_conf("podnet", json!({"parallelDelegates": parallel}));
        let pod = lab.t.pod(&format!("mfmg{i}"));
        pod.ip(&[
            "link", "add", "own0", "type", "veth", "peer", "name", "own1",
        ]);
        pod.ip(&["link", "set", "own1", "group", "7"]);
        let id = format!("g{i}");
        lab.add(&conf, &id, &pod, &five_extras(i as u8)).result();
        assert_eq!(link_names(&pod).len(), 9, "{:?}", link_names(&pod));
        std::fs::remove_file(&log).unwrap();
        let d = lab.del(&conf, &id, Some(&pod));
        assert_eq!(d.code, 0, "{d:?}");
        let mut left = link_names(&pod);
        left.sort();
        assert_eq!(left, ["lo", "own0", "own1"], "parallel {parallel}");
        let logged = std::fs::read_to_string(&log).unwrap();
        assert!(
            logged
                .lines()
                .any(|l| l.contains("deleted the deferred links") && l.contains("deleted=true")),
            "parallel {parallel}: no group deletion in {logged}"
        );
        assert!(lab.leftovers().is_empty(), "{:?}", lab.leftovers());
    }
}

#[test]
fn twenty_pods_attach_concurrently_and_detach_leaving_nothing() {
    let lab = MetaLab::new("mfmk");
    lab.default_networks();
    lab.extra_networks();
    let conf = lab.manifold_conf("podnet", json!({}));
    let before = lab.t.host_snapshot();
    let pods: Vec<TestNetns> = (0..20).map(|i| lab.t.pod(&format!("mfmk{i}"))).collect();
    let results: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, pod)| {
                let (lab, conf) = (&lab, &conf);
                s.spawn(move || lab.add(conf, &format!("k{i}"), pod, &five_extras(i as u8)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().result().clone())
            .collect()
    });
    let mut all = std::collections::HashSet::new();
    for (pod, r) in pods.iter().zip(&results) {
        assert_eq!(
            sandbox_ifnames(r),
            ["eth0", "net1", "net2", "net3", "data4", "net5"]
        );
        assert_pod_matches_result(pod, r);
        for ip in r["ips"].as_array().unwrap() {
            assert!(
                all.insert(ip["address"].as_str().unwrap().to_string()),
                "duplicate {ip}"
            );
        }
    }
    assert_eq!(all.len(), 20 * 12);
    assert_eq!(lab.cached().len(), 20);
    std::thread::scope(|s| {
        for (i, pod) in pods.iter().enumerate() {
            let (lab, conf) = (&lab, &conf);
            s.spawn(move || {
                let d = lab.del(conf, &format!("k{i}"), Some(pod));
                assert_eq!(d.code, 0, "{d:?}");
            });
        }
    });
    for pod in &pods {
        assert_eq!(link_names(pod), ["lo"]);
    }
    assert_eq!(lab.t.host_snapshot(), before);
    assert!(lab.leftovers().is_empty(), "{:?}", lab.leftovers());
}

#[test]
fn every_rejection_is_refused_before_anything_changes() {
    let lab = MetaLab::new("mfmx");
    lab.default_networks();
    lab.extra_networks();
    let other = json!({"cniVersion": "1.0.0", "type": "manifold-macvlan", "master": "mfu1",
                       "ipam": lab.host_local("10.81.8.0/24", "fd81:8::/64", false)});
    lab.nad("other", "ext-x", Some(&other), "yaml");
    let conf = lab.manifold_conf("podnet", json!({}));
    let isolated = lab.manifold_conf("podnet", json!({"namespaceIsolation": true}));
    let small = lab.manifold_conf("podnet", json!({"maxAttachments": 2}));
    let unknown_default = lab.manifold_conf("nosuch-net", json!({}));
    let before = lab.t.host_snapshot();
    let pod = lab.t.pod("mfmx1");
    let pod_before = snapshot(&pod);
    let two_routes = r#"[{"name":"ext-a","default-route":["10.81.1.1"]},{"name":"ext-b","default-route":["10.81.2.1"]}]"#;
    let cases: Vec<(&str, &Value, String, &str)> = vec![
        ("unknown network", &conf, "nosuch".into(), "not defined"),
        (
            "duplicate interface",
            &conf,
            "ext-a@net2, ext-b".into(),
            "already uses",
        ),
        (
            "default interface taken",
            &conf,
            "ext-a@eth0".into(),
            "already uses",
        ),
        (
            "more than maxAttachments (5)",
            &conf,
            "ext-a,ext-b,ext-c,ext-d,ext-a@x5,ext-b@x6".into(),
            "maxAttachments",
        ),
        (
            "more than maxAttachments (2)",
            &small,
            "ext-a,ext-b,ext-c".into(),
            "maxAttachments",
        ),
        (
            "forbidden namespace",
            &isolated,
            "other/ext-x".into(),
            "namespaceIsolation",
        ),
        ("path in name", &conf, "../../etc/passwd".into(), "DNS-1123"),
        ("bad namespace", &conf, "Other/ext-x".into(), "DNS-1123"),
        (
            "capability not declared",
            &conf,
            r#"[{"name":"ext-a","mac":"0a:58:00:00:00:01"}]"#.into(),
            "capability",
        ),
        (
            "two default routes",
            &conf,
            two_routes.into(),
            "default-route",
        ),
        ("bad JSON", &conf, r#"[{"name":"ext-a"#.into(), "selection"),
        (
            "bad ips",
            &conf,
            r#"[{"name":"ext-e","ips":["10.81.5.300/24"]}]"#.into(),
            "ips",
        ),
        (
            "unknown default network",
            &unknown_default,
            "".into(),
            "clusterNetwork",
        ),
    ];
    for (what, c, networks, needle) in cases {
        let out = lab.add(c, "rej", &pod, &networks);
        assert_eq!(out.error_code(), 7, "{what}: {out:?}");
        assert!(
            out.error_msg().contains(needle),
            "{what}: {}",
            out.error_msg()
        );
        assert_eq!(snapshot(&pod), pod_before, "{what}: pod changed");
        assert!(lab.leftovers().is_empty(), "{what}: {:?}", lab.leftovers());
    }
    // A pod namespace in CNI_ARGS that could escape a path: invalid environment (4).
    let mut c = conf.clone();
    c["runtimeConfig"] = json!({"io.kubernetes.cri.pod-annotations": {}});
    let out = lab
        .t
        .call("manifold", "ADD", "rej", Some(&pod), "eth0")
        .env("CNI_ARGS", "K8S_POD_NAMESPACE=../x;K8S_POD_NAME=p")
        .run(c.to_string().as_bytes());
    assert_eq!(out.error_code(), 4, "{out:?}");
    assert_eq!(snapshot(&pod), pod_before);
    assert_eq!(lab.t.host_snapshot(), before);
}

#[test]
fn gc_removes_stale_containers_and_status_follows_the_readiness_file() {
    let lab = MetaLab::new("mfmg");
    lab.default_networks();
    lab.extra_networks();
    let ready = lab.t.dir.join("ready");
    let conf = lab.manifold_conf(
        "podmv",
        json!({"readinessindicatorfile": ready.display().to_string(), "readinessTimeout": 0.3}),
    );
    let pods = [lab.t.pod("mfmg1"), lab.t.pod("mfmg2")];
    let status = |c: &Value| {
        lab.t
            .call("manifold", "STATUS", "", None, "")
            .run(c.to_string().as_bytes())
    };
    let s = status(&conf);
    assert_eq!(s.error_code(), 50, "{s:?}");
    let t0 = Instant::now();
    let out = lab.add(&conf, "g1", &pods[0], "ext-a");
    assert_eq!(
        out.error_code(),
        11,
        "ADD before the readiness file: {out:?}"
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(300),
        "ADD did not wait"
    );
    assert_eq!(link_names(&pods[0]), ["lo"], "attached before ready");
    assert!(lab.leftovers().is_empty(), "{:?}", lab.leftovers());
    std::fs::write(&ready, "").unwrap();
    assert_eq!(status(&conf).code, 0);
    lab.add(&conf, "g1", &pods[0], "ext-a, ext-c").result();
    lab.add(&conf, "g2", &pods[1], "ext-a, ext-c").result();
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "g1", "ifname": "eth0"}]);
    let out = lab
        .t
        .call("manifold", "GC", "", None, "")
        .run(gc.to_string().as_bytes());
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(lab.cached(), ["g1.json"]);
    assert_eq!(link_names(&pods[1]), ["lo"], "stale pod detached");
    assert_eq!(link_names(&pods[0]).len(), 4, "live pod kept");
    assert_eq!(
        lab.manifold_ipam_allocations().len(),
        2,
        "only g1's ext-a addresses remain"
    );
    assert_eq!(lab.del(&conf, "g1", Some(&pods[0])).code, 0);
    assert!(lab.leftovers().is_empty(), "{:?}", lab.leftovers());
}

/// ADD waits for the readiness file (the default network's agent writing it
/// late) instead of failing at once, as Multus does.
#[test]
fn add_waits_for_the_readiness_file() {
    let lab = MetaLab::new("mfmw");
    lab.default_networks();
    lab.extra_networks();
    let ready = lab.t.dir.join("ready");
    let conf = lab.manifold_conf(
        "podmv",
        json!({"readinessindicatorfile": ready.display().to_string()}),
    );
    let pod = lab.t.pod("mfmw1");
    let t0 = Instant::now();
    let writer = {
        let ready = ready.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            std::fs::write(ready, "").unwrap();
        })
    };
    let r = lab.add(&conf, "w1", &pod, "ext-a").result().clone();
    writer.join().unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(300));
    assert_eq!(sandbox_ifnames(&r), ["eth0", "net1"]);
    assert_eq!(lab.del(&conf, "w1", Some(&pod)).code, 0);
    assert!(lab.leftovers().is_empty(), "{:?}", lab.leftovers());
}

/// A lost cache (`/var/lib/cni` wiped, or ADD killed before writing it):
/// DEL rebuilds the plan from the config and the pod's annotations, as
/// Multus does, and releases every address of host-local and manifold-ipam.
#[test]
fn del_without_cache_rebuilds_the_plan_and_releases_everything() {
    let lab = MetaLab::new("mfml");
    lab.default_networks();
    lab.extra_networks();
    let conf = lab.manifold_conf("podnet", json!({}));
    let before = lab.t.host_snapshot();
    let pod = lab.t.pod("mfml1");
    let networks = five_extras(1);
    lab.add(&conf, "lost", &pod, &networks).result();
    assert_eq!(lab.manifold_ipam_allocations().len(), 4);
    assert_eq!(lab.t.host_local_reservations().len(), 6);
    std::fs::remove_dir_all(lab.cni_dir.join("state")).unwrap();
    let d = lab.del_annotated(&conf, "lost", Some(&pod), &networks);
    assert_eq!(d.code, 0, "{d:?}");
    assert_eq!(link_names(&pod), ["lo"]);
    assert!(lab.leftovers().is_empty(), "{:?}", lab.leftovers());
    assert_eq!(lab.t.host_snapshot(), before);
}

/// Without a cache, a network the annotation names but that no longer
/// exists is skipped (logged); DEL still succeeds and releases the others.
#[test]
fn del_without_cache_skips_a_network_gone_and_releases_the_rest() {
    let lab = MetaLab::new("mfmo");
    lab.default_networks();
    lab.extra_networks();
    let conf = lab.manifold_conf("podnet", json!({"parallelDelegates": false}));
    let pod = lab.t.pod("mfmo1");
    let networks = five_extras(2);
    lab.add(&conf, "orphan", &pod, &networks).result();
    std::fs::remove_file(lab.cni_dir.join("state/orphan.json")).unwrap();
    std::fs::remove_file(lab.conf_dir.join(format!("attachments/{POD_NS}/ext-c.yml"))).unwrap();
    let d = lab.del_annotated(&conf, "orphan", Some(&pod), &networks);
    assert_eq!(d.code, 0, "{d:?}");
    // Only ext-c (net3, host-local 10.81.3.0/24 + fd81:3::/64) is left.
    assert_eq!(link_names(&pod), ["lo", "net3"]);
    let left = lab.leftovers();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(
        left.iter()
            .all(|a| a.starts_with("10.81.3.") || a.starts_with("fd81:3::")),
        "{left:?}"
    );
    let log = std::fs::read_to_string(lab.t.dir.join("manifold.log")).unwrap();
    assert!(log.contains("cannot be resolved"), "{log}");
}

/// The Kubernetes API path against `manifold_kube::fixture::ApiFixture`, a
/// small fake API server on loopback (a real API server cannot run on these
/// machines) serving real-format Pod and NAD JSON and recording PATCHes. It
/// listens inside the test's host netns, where the plugin runs.
#[test]
fn api_path_reads_pod_and_nad_and_patches_network_status() {
    let lab = MetaLab::new("mfma");
    lab.default_networks();
    let api = NetnsApi::start(&lab.t.host);
    let nad = json!({"cniVersion": "1.0.0", "type": "manifold-macvlan", "master": "mfu1",
                     "ipam": lab.host_local("10.81.7.0/24", "fd81:7::/64", false)});
    api.add_nad(POD_NS, "api-net", &nad.to_string());
    let ann = std::collections::BTreeMap::from([(
        "k8s.v1.cni.cncf.io/networks".to_string(),
        "api-net@api0".to_string(),
    )]);
    api.add_pod(POD_NS, "web-0", "uid-1", &ann);
    let kubeconfig = api.write_kubeconfig(&lab.t.dir);
    let conf = lab.manifold_conf(
        "podmv",
        json!({"kubeconfig": kubeconfig.display().to_string()}),
    );
    let pod = lab.t.pod("mfma1");
    let pod_before = snapshot(&pod);
    // The runtime's sandbox is for another pod of that name (UID differs): refused.
    let stale = lab
        .call("ADD", "api1", Some(&pod), "web-0")
        .env(
            "CNI_ARGS",
            &format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={POD_NS};K8S_POD_NAME=web-0;K8S_POD_UID=uid-0"
            ),
        )
        .run(conf.to_string().as_bytes());
    assert_eq!(stale.error_code(), 11, "{stale:?}");
    assert_eq!(snapshot(&pod), pod_before);
    // No annotations in runtimeConfig: manifold asks the API for the pod.
    let out = lab
        .call("ADD", "api1", Some(&pod), "web-0")
        .run(conf.to_string().as_bytes());
    let r = out.result().clone();
    assert_eq!(sandbox_ifnames(&r), ["eth0", "api0"]);
    assert_eq!(
        result_addrs(&r, "api0"),
        ["10.81.7.2/24".to_string(), "fd81:7::2/64".to_string()]
    );
    assert_pod_matches_result(&pod, &r);
    let patches = api.patches();
    assert_eq!(patches.len(), 1, "{patches:?}");
    let annotations = api.pod_annotations(POD_NS, "web-0").unwrap();
    let status: Value =
        serde_json::from_str(&annotations["k8s.v1.cni.cncf.io/network-status"]).unwrap();
    assert_eq!(status[0]["name"], "podmv");
    assert_eq!(status[0]["default"], true);
    assert_eq!(status[1]["name"], "mfmns/api-net");
    assert_eq!(status[1]["interface"], "api0");
    assert_eq!(status[1]["ips"], json!(["10.81.7.2", "fd81:7::2"]));
    // DEL clears network-status as Multus does: an empty list.
    let del = |id: &str, pod: Option<&manifold_netns_tests::TestNetns>| {
        lab.call("DEL", id, pod, "web-0")
            .run(conf.to_string().as_bytes())
    };
    assert_eq!(del("api1", Some(&pod)).code, 0);
    assert_eq!(link_names(&pod), ["lo"]);
    assert!(lab.leftovers().is_empty(), "{:?}", lab.leftovers());
    let patches = api.patches();
    assert_eq!(patches.len(), 2, "{patches:?}");
    assert_eq!(
        patches[1].json(),
        json!({"metadata": {"annotations": {"k8s.v1.cni.cncf.io/network-status": "[]"}}})
    );
    assert_eq!(
        api.pod_annotations(POD_NS, "web-0").unwrap()["k8s.v1.cni.cncf.io/network-status"],
        "[]"
    );
    // Without the netns (pod torn down), DEL leaves the API alone, as Multus does.
    let add = |id: &str, pod: &manifold_netns_tests::TestNetns| {
        lab.call("ADD", id, Some(pod), "web-0")
            .run(conf.to_string().as_bytes())
    };
    let gone = lab.t.pod("mfma2");
    add("api2", &gone).result();
    drop(gone);
    assert_eq!(del("api2", None).code, 0);
    assert_eq!(api.patches().len(), 3, "DEL without netns patched");
    // DEL succeeds without the API.
    add("api3", &pod).result();
    drop(api);
    let t0 = Instant::now();
    let d = del("api3", Some(&pod));
    assert_eq!(d.code, 0, "{d:?}");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert_eq!(link_names(&pod), ["lo"]);
    assert!(lab.leftovers().is_empty(), "{:?}", lab.leftovers());
}

/// manifold-ipvlan extras need ipvlan, which the host kernel lacks: full-kernel VM lane.
#[test]
#[ignore = "VM lane: needs ipvlan (netns-tests/vm/run-in-vm)"]
fn vm_ipvlan_and_macvlan_extras_reach_each_other() {
    let lab = MetaLab::new("mfmv");
    lab.default_networks();
    lab.extra_networks();
    let ipv_a = json!({"cniVersion": "1.1.0", "name": "ipv-a", "plugins": [
        {"type": "manifold-ipvlan", "master": "mfu1", "mode": "l2",
         "ipam": lab.manifold_ipam("10.82.1.0/24", "fd82:1::/64")}]});
    lab.nad(POD_NS, "ipv-a", Some(&ipv_a), "yaml");
    let ipv_b = json!({"cniVersion": "1.0.0", "type": "manifold-ipvlan", "master": "mfu2", "mode": "l2",
                       "ipam": lab.host_local("10.82.2.0/24", "fd82:2::/64", false)});
    lab.nad(POD_NS, "ipv-b", Some(&ipv_b), "json");
    let conf = lab.manifold_conf("podmv", json!({}));
    let before = lab.t.host_snapshot();
    let pods = [lab.t.pod("mfmv1"), lab.t.pod("mfmv2")];
    let ifs = ["eth0", "net1", "net2", "net3", "net4", "net5"];
    let mut results = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        let sel = json!([{"name": "ipv-a"}, {"name": "ipv-b"}, {"name": "ext-c"}, {"name": "ext-d"},
            {"name": "ext-e", "ips": [format!("10.81.5.{}/24", 10 + i), format!("fd81:5::{}/64", 10 + i)]}]);
        let r = lab
            .add(&conf, &format!("v{i}"), pod, &sel.to_string())
            .result()
            .clone();
        assert_eq!(sandbox_ifnames(&r), ifs);
        for (ifname, kind) in [
            ("net1", "ipvlan"),
            ("net2", "ipvlan"),
            ("net3", "macvlan"),
            ("net4", "macvlan"),
        ] {
            let l = manifold_netns_tests::topology::link_details(pod, ifname).unwrap();
            assert_eq!(l["linkinfo"]["info_kind"], kind, "{ifname}");
        }
        assert_pod_matches_result(pod, &r);
        results.push(r);
    }
    for pod in &pods {
        settle(pod);
    }
    for ifname in ifs {
        for a in result_addrs(&results[1], ifname) {
            assert!(ping(&pods[0], ifname, strip(&a)), "{ifname} {a}");
        }
    }
    for (i, pod) in pods.iter().enumerate() {
        assert_eq!(lab.del(&conf, &format!("v{i}"), Some(pod)).code, 0);
        assert_eq!(link_names(pod), ["lo"]);
    }
    assert_eq!(lab.t.host_snapshot(), before);
    assert!(lab.leftovers().is_empty(), "{:?}", lab.leftovers());
}
