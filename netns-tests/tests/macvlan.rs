//! manifold-macvlan against real namespaces, run as a runtime runs it: inside
//! a "host" netns holding the master, attaching "pod" netns the test created.

use manifold_netns_tests::meta::link_names;
use manifold_netns_tests::topology::{
    addresses, link_details, reference, routes, Topology, MASTER, VERSIONS,
};
use serde_json::{json, Value};

fn dual_stack(t: &Topology) -> Value {
    t.host_local(
        json!([[{"subnet": "10.77.0.0/24", "gateway": "10.77.0.1"}], [{"subnet": "fd77::/64", "gateway": "fd77::1"}]]),
        json!([{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]),
    )
}

fn conf(version: &str, plugin: &str, ipam: Value) -> Value {
    json!({"cniVersion": version, "name": "mvnet", "type": plugin, "master": MASTER, "ipam": ipam})
}

#[test]
fn add_check_del_in_every_version_leaves_host_as_before() {
    let t = Topology::new("mvv");
    for (i, v) in VERSIONS.iter().enumerate() {
        let pod = t.pod(&format!("mvp{i}"));
        let before = t.host_snapshot();
        let c = conf(v, "manifold-macvlan", dual_stack(&t));
        let id = format!("ctr{i}");
        let r = t.run("manifold-macvlan", "ADD", &id, Some(&pod), "net1", &c);
        let res = r.result().clone();
        assert_eq!(res["cniVersion"], *v);
        let ips = res["ips"].as_array().unwrap();
        assert_eq!(ips.len(), 2, "{res}");
        let old = v.starts_with("0.");
        for ip in ips {
            assert_eq!(
                ip.get("version").is_some(),
                old,
                "ip version field in {v}: {res}"
            );
            assert_eq!(ip["interface"], 0);
        }
        let iface = &res["interfaces"][0];
        assert_eq!(iface["name"], "net1");
        assert_eq!(iface["sandbox"], pod.path().display().to_string());
        assert_eq!(
            iface.get("mtu").is_some(),
            *v == "1.1.0",
            "mtu only in 1.1.0: {res}"
        );

        let link = link_details(&pod, "net1").expect("net1 in pod");
        assert_eq!(link["linkinfo"]["info_kind"], "macvlan");
        assert_eq!(link["linkinfo"]["info_data"]["mode"], "bridge");
        assert_eq!(link["address"], iface["mac"]);
        assert_eq!(link["mtu"], 1500);
        assert!(link["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
        let addrs = addresses(&pod, "net1");
        let want: Vec<String> = ips
            .iter()
            .map(|i| i["address"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(addrs.iter().map(|a| a.0.clone()).collect::<Vec<_>>(), want);
        assert!(
            addrs
                .iter()
                .all(|a| !a.1.contains(&"tentative".to_string())),
            "IPv6 must be usable at once: {addrs:?}"
        );
        let rts = routes(&pod, "net1");
        assert!(
            rts.iter()
                .any(|r| r.starts_with("-4 default via 10.77.0.1")),
            "{rts:?}"
        );
        assert!(
            rts.iter().any(|r| r.starts_with("-6 default via fd77::1")),
            "{rts:?}"
        );
        assert!(
            link_details(&t.host, "net1").is_none(),
            "nothing named net1 in the host"
        );

        if *v != "0.3.0" && *v != "0.3.1" {
            let mut cc = c.clone();
            cc["prevResult"] = res.clone();
            let chk = t.run("manifold-macvlan", "CHECK", &id, Some(&pod), "net1", &cc);
            assert_eq!(chk.code, 0, "CHECK {v}: {chk:?}");
        }

        let d = t.run("manifold-macvlan", "DEL", &id, Some(&pod), "net1", &c);
        assert_eq!(d.code, 0, "{d:?}");
        assert!(link_details(&pod, "net1").is_none());
        assert_eq!(t.host_snapshot(), before, "host netns changed in {v}");
        assert!(
            t.host_local_reservations().is_empty(),
            "leaked: {:?}",
            t.host_local_reservations()
        );
        let again = t.run("manifold-macvlan", "DEL", &id, Some(&pod), "net1", &c);
        assert_eq!(again.code, 0, "second DEL: {again:?}");
        let no_ns = t.run("manifold-macvlan", "DEL", &id, None, "net1", &c);
        assert_eq!(no_ns.code, 0, "DEL without netns: {no_ns:?}");
    }
}

#[test]
fn same_config_as_reference_macvlan_gives_equivalent_result_and_namespace() {
    let t = Topology::new("mvr");
    for v in ["0.3.1", "0.4.0", "1.0.0"] {
        let ipam = json!({"type": "static", "addresses": [{"address": "10.78.0.5/24", "gateway": "10.78.0.1"}, {"address": "fd78::5/64", "gateway": "fd78::1"}],
                          "routes": [{"dst": "10.99.0.0/16"}, {"dst": "fd99::/48"}], "dns": {"nameservers": ["10.78.0.53"]}});
        let mut c = conf(v, "manifold-macvlan", ipam);
        c["mode"] = json!("private");
        c["mtu"] = json!(1400);
        c["mac"] = json!("0a:58:0a:4e:00:05");
        let mut rc = c.clone();
        rc["type"] = json!("macvlan");
        // One after the other: two macvlans with one MAC cannot share a master.
        let ours = t.attach_and_capture("manifold-macvlan", &c);
        let theirs = t.attach_and_capture(&reference("macvlan"), &rc);
        assert_eq!(ours, theirs, "differs from the reference in {v}");
    }
}

/// host-local runs in-process in manifold-macvlan and as a binary under the
/// reference: in separate data dirs they give the same attachment; in one
/// they share it without handing out an address twice.
#[test]
fn in_process_host_local_matches_the_reference_and_shares_its_data_dir() {
    let t = Topology::new("mvh");
    let ipam = |dir: &str| {
        let mut i = t.host_local(
            json!([[{"subnet": "10.81.0.0/24", "rangeStart": "10.81.0.20"}], [{"subnet": "fd81::/64"}]]),
            json!([{"dst": "0.0.0.0/0"}, {"dst": "fd99::/48", "gw": "fd81::fe"}]),
        );
        i["dataDir"] = json!(t.dir.join(dir).display().to_string());
        i
    };
    for v in ["0.3.1", "0.4.0", "1.0.0"] {
        let mut c = conf(v, "manifold-macvlan", ipam(&format!("ours-{v}")));
        c["mac"] = json!("0a:58:0a:51:00:05");
        let mut rc = conf(v, "macvlan", ipam(&format!("theirs-{v}")));
        rc["mac"] = c["mac"].clone();
        let ours = t.attach_and_capture("manifold-macvlan", &c);
        let theirs = t.attach_and_capture(&reference("macvlan"), &rc);
        assert_eq!(ours, theirs, "differs from the reference in {v}");
        assert_eq!(ours.result["ips"][0]["address"], "10.81.0.20/24");
    }

    let shared = ipam("shared");
    let c = conf("1.0.0", "manifold-macvlan", shared.clone());
    let rc = conf("1.0.0", "macvlan", shared);
    let (p1, p2, p3) = (t.pod("mvhp1"), t.pod("mvhp2"), t.pod("mvhp3"));
    let a = t.run("manifold-macvlan", "ADD", "h1", Some(&p1), "net1", &c);
    let b = t.run(&reference("macvlan"), "ADD", "h2", Some(&p2), "net1", &rc);
    let d = t.run("manifold-macvlan", "ADD", "h3", Some(&p3), "net1", &c);
    assert_eq!(a.ips(), ["10.81.0.20/24", "fd81::2/64"]);
    assert_eq!(b.ips(), ["10.81.0.21/24", "fd81::3/64"]);
    assert_eq!(d.ips(), ["10.81.0.22/24", "fd81::4/64"]);
    // Each releases what the other's IPAM reserved (DEL is by container and ifname).
    for (plugin, id, pod, cc) in [
        (reference("macvlan"), "h1", &p1, &rc),
        ("manifold-macvlan".to_string(), "h2", &p2, &c),
        (reference("macvlan"), "h3", &p3, &rc),
    ] {
        let r = t.run(&plugin, "DEL", id, Some(pod), "net1", cc);
        assert_eq!(r.code, 0, "{plugin} DEL {id}: {r:?}");
    }
    assert!(
        t.host_local_reservations().is_empty(),
        "leaked: {:?}",
        t.host_local_reservations()
    );
}

/// manifold-ipam is linked into manifold-macvlan: it allocates and releases
/// with no manifold-ipam binary in CNI_PATH; `MANIFOLD_DELEGATE_IPAM=1`
/// makes the plugin exec it, which then fails naming what is missing.
#[test]
fn manifold_ipam_runs_in_process_unless_delegation_is_asked() {
    let t = Topology::new("mvi");
    let pod = t.pod("mvip");
    let data = t.dir.join("ipam-local");
    let ipam = json!({"type": "manifold-ipam", "dataDir": data.display().to_string(),
                      "ranges": [[{"subnet": "10.82.0.0/24"}], [{"subnet": "fd82::/64"}]]});
    let c = conf("1.1.0", "manifold-macvlan", ipam);
    let call = |verb| {
        t.call("manifold-macvlan", verb, "i1", Some(&pod), "net1")
            .env("CNI_PATH", "/usr/lib/cni")
    };
    let delegated = call("ADD")
        .env("MANIFOLD_DELEGATE_IPAM", "1")
        .run(c.to_string().as_bytes());
    assert_ne!(delegated.code, 0, "{delegated:?}");
    assert!(
        delegated.stdout.contains("manifold-ipam"),
        "{}",
        delegated.stdout
    );
    assert_eq!(link_names(&pod), ["lo"], "a failed ADD leaves no link");
    let added = call("ADD").run(c.to_string().as_bytes());
    assert_eq!(added.ips(), ["10.82.0.2/24", "fd82::2/64"]);
    let held = || std::fs::read_to_string(data.join("_shared.json")).unwrap_or_default();
    assert!(held().contains("\"i1\""), "{}", held());
    let deleted = call("DEL").run(c.to_string().as_bytes());
    assert_eq!(deleted.code, 0, "{deleted:?}");
    assert!(!held().contains("\"i1\""), "{}", held());
    assert_eq!(link_names(&pod), ["lo"]);
}

#[test]
fn mac_precedence_is_runtime_config_then_cni_args_then_config() {
    let t = Topology::new("mvm");
    let pod = t.pod("mvmp");
    let mut c = conf("1.0.0", "manifold-macvlan", Value::Null);
    c.as_object_mut().unwrap().remove("ipam");
    c["mac"] = json!("0a:00:00:00:00:01");
    let cases = [
        (None, None, "0a:00:00:00:00:01"),
        (Some("MAC=0a:00:00:00:00:02"), None, "0a:00:00:00:00:02"),
        (
            Some("IgnoreUnknown=1;MAC=0a:00:00:00:00:02"),
            Some("0a:00:00:00:00:03"),
            "0a:00:00:00:00:03",
        ),
    ];
    for (args, rc_mac, want) in cases {
        let mut cc = c.clone();
        if let Some(m) = rc_mac {
            cc["runtimeConfig"] = json!({"mac": m});
        }
        let mut call = t.call("manifold-macvlan", "ADD", "m1", Some(&pod), "net1");
        if let Some(a) = args {
            call = call.env("CNI_ARGS", a);
        }
        let r = call.run(cc.to_string().as_bytes());
        assert_eq!(r.result()["interfaces"][0]["mac"], want);
        assert_eq!(link_details(&pod, "net1").unwrap()["address"], want);
        assert_eq!(
            t.run("manifold-macvlan", "DEL", "m1", Some(&pod), "net1", &cc)
                .code,
            0
        );
    }
}

#[test]
fn modes_mtu_and_bcqueuelen_are_applied() {
    let t = Topology::new("mvo");
    let pod = t.pod("mvop");
    for mode in ["bridge", "private", "vepa"] {
        let c = json!({"cniVersion":"1.1.0","name":"n","type":"manifold-macvlan","master":MASTER,"mode":mode,"mtu":1280,"bcqueuelen":2000});
        let r = t.run("manifold-macvlan", "ADD", "o1", Some(&pod), "net2", &c);
        assert_eq!(r.result()["interfaces"][0]["mtu"], 1280);
        let l = link_details(&pod, "net2").unwrap();
        assert_eq!(l["linkinfo"]["info_data"]["mode"], mode);
        assert_eq!(l["mtu"], 1280);
        if let Some(q) = l["linkinfo"]["info_data"].get("bcqueuelen") {
            assert_eq!(q, 2000);
        }
        assert_eq!(
            t.run("manifold-macvlan", "DEL", "o1", Some(&pod), "net2", &c)
                .code,
            0
        );
        assert!(link_details(&pod, "net2").is_none());
    }
}

#[test]
fn two_pods_on_one_master_reach_each_other() {
    let t = Topology::new("mvg");
    let (a, b) = (t.pod("mvga"), t.pod("mvgb"));
    let c = conf("1.0.0", "manifold-macvlan", dual_stack(&t));
    let ra = t
        .run("manifold-macvlan", "ADD", "pa", Some(&a), "net1", &c)
        .result()
        .clone();
    let rb = t
        .run("manifold-macvlan", "ADD", "pb", Some(&b), "net1", &c)
        .result()
        .clone();
    for i in 0..2 {
        let dst = rb["ips"][i]["address"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let out = a.exec(&["ping", "-c", "1", "-W", "2", &dst]);
        assert!(
            out.status.success(),
            "ping {dst}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    assert_ne!(ra["ips"][0]["address"], rb["ips"][0]["address"]);
    for (id, p) in [("pa", &a), ("pb", &b)] {
        assert_eq!(
            t.run("manifold-macvlan", "DEL", id, Some(p), "net1", &c)
                .code,
            0
        );
    }
    assert!(t.host_local_reservations().is_empty());
}

#[test]
fn ifname_taken_in_host_does_not_collide_but_taken_in_pod_fails_cleanly() {
    let t = Topology::new("mvn");
    let pod = t.pod("mvnp");
    t.host
        .ip(&["link", "add", "net1", "link", MASTER, "type", "macvlan"]);
    let c = conf("1.0.0", "manifold-macvlan", dual_stack(&t));
    assert_eq!(
        t.run("manifold-macvlan", "ADD", "n1", Some(&pod), "net1", &c)
            .code,
        0
    );
    let pod_before = manifold_netns_tests::snapshot(&pod);
    let host_before = t.host_snapshot();
    let dup = t.run("manifold-macvlan", "ADD", "n2", Some(&pod), "net1", &c);
    assert_eq!(dup.error_code(), 7, "{dup:?}");
    assert!(dup.error_msg().contains("already exists"), "{dup:?}");
    assert_eq!(manifold_netns_tests::snapshot(&pod), pod_before);
    assert_eq!(t.host_snapshot(), host_before);
    assert_eq!(
        t.host_local_reservations().len(),
        2,
        "only n1's two addresses"
    );
    assert_eq!(
        t.run("manifold-macvlan", "DEL", "n1", Some(&pod), "net1", &c)
            .code,
        0
    );
}

#[test]
fn failure_after_ipam_rolls_back_link_and_allocation() {
    let t = Topology::new("mvf");
    let pod = t.pod("mvfp");
    // The route's gateway is outside every on-link subnet: adding it fails
    // after IPAM allocated and the addresses were configured.
    let ipam = t.host_local(
        json!([[{"subnet": "10.79.0.0/24"}]]),
        json!([{"dst": "10.200.0.0/16", "gw": "192.0.2.1"}]),
    );
    let c = conf("1.0.0", "manifold-macvlan", ipam);
    let before = manifold_netns_tests::snapshot(&pod);
    let r = t.run("manifold-macvlan", "ADD", "f1", Some(&pod), "net1", &c);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.error_msg().contains("route"), "{r:?}");
    assert_eq!(
        manifold_netns_tests::snapshot(&pod),
        before,
        "link left behind"
    );
    assert!(
        t.host_local_reservations().is_empty(),
        "allocation leaked: {:?}",
        t.host_local_reservations()
    );
}

#[test]
fn ipam_failure_leaves_nothing() {
    let t = Topology::new("mvi");
    let pod = t.pod("mvip");
    let ipam = t.host_local(json!([[{"subnet": "10.80.0.0/30"}]]), json!([]));
    let c = conf("1.0.0", "manifold-macvlan", ipam);
    // A /30 has one usable address besides the gateway: the second ADD exhausts it.
    assert_eq!(
        t.run("manifold-macvlan", "ADD", "i1", Some(&pod), "net1", &c)
            .code,
        0
    );
    let before = manifold_netns_tests::snapshot(&pod);
    let r = t.run("manifold-macvlan", "ADD", "i2", Some(&pod), "net2", &c);
    assert_ne!(r.code, 0);
    assert!(r.error_msg().starts_with("ipam"), "{r:?}");
    assert_eq!(manifold_netns_tests::snapshot(&pod), before);
    assert_eq!(
        t.run("manifold-macvlan", "DEL", "i1", Some(&pod), "net1", &c)
            .code,
        0
    );
}

#[test]
fn mtu_above_master_and_missing_master_change_nothing() {
    let t = Topology::new("mvx");
    let pod = t.pod("mvxp");
    let host_before = t.host_snapshot();
    let pod_before = manifold_netns_tests::snapshot(&pod);
    let mut c = conf("1.0.0", "manifold-macvlan", dual_stack(&t));
    c["mtu"] = json!(9000);
    let r = t.run("manifold-macvlan", "ADD", "x1", Some(&pod), "net1", &c);
    assert_eq!(r.error_code(), 7);
    assert!(
        r.error_msg().contains("9000") && r.error_msg().contains("1500"),
        "{r:?}"
    );
    c["mtu"] = json!(0);
    c["master"] = json!("nosuchdev");
    let r = t.run("manifold-macvlan", "ADD", "x1", Some(&pod), "net1", &c);
    assert_eq!(r.error_code(), 7);
    assert!(r.error_msg().contains("nosuchdev"), "{r:?}");
    assert_eq!(t.host_snapshot(), host_before);
    assert_eq!(manifold_netns_tests::snapshot(&pod), pod_before);
    assert!(t.host_local_reservations().is_empty());
}

#[test]
fn missing_master_defaults_to_the_default_route_link() {
    let t = Topology::new("mvd");
    let pod = t.pod("mvdp");
    t.host.ip(&["addr", "add", "10.81.0.2/24", "dev", MASTER]);
    t.host
        .ip(&["route", "add", "default", "via", "10.81.0.1", "dev", MASTER]);
    let c = json!({"cniVersion":"1.0.0","name":"n","type":"manifold-macvlan"});
    let r = t.run("manifold-macvlan", "ADD", "d1", Some(&pod), "net1", &c);
    r.result();
    let l = link_details(&pod, "net1").unwrap();
    assert_eq!(l["linkinfo"]["info_kind"], "macvlan");
    assert!(
        l["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
        "L2-only link is up"
    );
    assert!(addresses(&pod, "net1").is_empty());
    assert_eq!(
        t.run("manifold-macvlan", "DEL", "d1", Some(&pod), "net1", &c)
            .code,
        0
    );
}

#[test]
fn check_reports_drift_with_code_102() {
    let t = Topology::new("mvc");
    let pod = t.pod("mvcp");
    let mut c = conf("1.0.0", "manifold-macvlan", dual_stack(&t));
    let r = t
        .run("manifold-macvlan", "ADD", "c1", Some(&pod), "net1", &c)
        .result()
        .clone();
    c["prevResult"] = r.clone();
    assert_eq!(
        t.run("manifold-macvlan", "CHECK", "c1", Some(&pod), "net1", &c)
            .code,
        0
    );
    let v4 = r["ips"][0]["address"].as_str().unwrap();
    pod.ip(&["addr", "del", v4, "dev", "net1"]);
    let chk = t.run("manifold-macvlan", "CHECK", "c1", Some(&pod), "net1", &c);
    assert_eq!(chk.error_code(), 102, "{chk:?}");
    let mut wrong_mode = c.clone();
    wrong_mode["mode"] = json!("vepa");
    pod.ip(&["addr", "add", v4, "dev", "net1"]);
    let chk = t.run(
        "manifold-macvlan",
        "CHECK",
        "c1",
        Some(&pod),
        "net1",
        &wrong_mode,
    );
    assert_eq!(chk.error_code(), 102, "{chk:?}");
    assert!(chk.error_msg().contains("vepa"));
    c.as_object_mut().unwrap().remove("prevResult");
    assert_eq!(
        t.run("manifold-macvlan", "CHECK", "c1", Some(&pod), "net1", &c)
            .error_code(),
        7
    );
    assert_eq!(
        t.run("manifold-macvlan", "DEL", "c1", Some(&pod), "net1", &c)
            .code,
        0
    );
}

#[test]
fn link_in_container_uses_a_master_inside_the_pod() {
    let t = Topology::new("mvl");
    let pod = t.pod("mvlp");
    let peer = t.pod("mvlq");
    manifold_netns_tests::veth_pair(&pod, "inner0", &peer, "inner1");
    let c = json!({"cniVersion":"1.0.0","name":"n","type":"manifold-macvlan","master":"inner0","linkInContainer":true});
    t.run("manifold-macvlan", "ADD", "l1", Some(&pod), "net1", &c)
        .result();
    let l = link_details(&pod, "net1").unwrap();
    assert_eq!(l["link"], "inner0");
    assert_eq!(
        t.run("manifold-macvlan", "DEL", "l1", Some(&pod), "net1", &c)
            .code,
        0
    );
    assert!(link_details(&pod, "net1").is_none());
    assert!(link_details(&pod, "inner0").is_some(), "the master stays");
}

/// The meta-plugin's deferred deletion: with `MANIFOLD_LINK_DELETE_GROUP`,
/// DEL releases the addresses but leaves the link, moved into that group;
/// an invalid value is ignored and the link deleted.
#[test]
fn del_with_a_link_delete_group_releases_ipam_and_leaves_the_link_in_the_group() {
    let t = Topology::new("mvg");
    let pod = t.pod("mvgp");
    let c = conf("1.0.0", "manifold-macvlan", dual_stack(&t));
    let del_with_group = |group: &str| {
        t.call("manifold-macvlan", "DEL", "g1", Some(&pod), "net1")
            .env("MANIFOLD_LINK_DELETE_GROUP", group)
            .run(c.to_string().as_bytes())
    };
    t.run("manifold-macvlan", "ADD", "g1", Some(&pod), "net1", &c)
        .result();
    assert_eq!(link_details(&pod, "net1").unwrap()["group"], "default");
    let d = del_with_group("1296433153");
    assert_eq!(d.code, 0, "{d:?}");
    let l = link_details(&pod, "net1").expect("link left for the caller");
    assert_eq!(l["group"], "1296433153");
    assert!(
        t.host_local_reservations().is_empty(),
        "addresses not released: {:?}",
        t.host_local_reservations()
    );
    // A repeated DEL hands the link over again; the caller then deletes the group.
    assert_eq!(del_with_group("1296433154").code, 0);
    assert_eq!(link_details(&pod, "net1").unwrap()["group"], "1296433154");
    pod.ip(&["link", "del", "group", "1296433154"]);
    assert!(link_details(&pod, "net1").is_none());

    for invalid in ["0", "group7", "-1"] {
        t.run("manifold-macvlan", "ADD", "g1", Some(&pod), "net1", &c)
            .result();
        let d = del_with_group(invalid);
        assert_eq!(d.code, 0, "{invalid:?}: {d:?}");
        assert!(
            link_details(&pod, "net1").is_none(),
            "{invalid:?}: link kept"
        );
        assert!(t.host_local_reservations().is_empty(), "{invalid:?}");
    }
}

#[test]
fn status_and_gc_with_a_pre_1_1_ipam_succeed() {
    let t = Topology::new("mvs");
    let c = conf("1.1.0", "manifold-macvlan", dual_stack(&t));
    for verb in ["STATUS", "GC"] {
        let mut cc = c.clone();
        cc["cni.dev/valid-attachments"] = json!([]);
        let r = t
            .call("manifold-macvlan", verb, "", None, "")
            .run(cc.to_string().as_bytes());
        assert_eq!(r.code, 0, "{verb}: {r:?}");
    }
}
