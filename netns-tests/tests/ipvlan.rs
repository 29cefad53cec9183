//! manifold-ipvlan against real namespaces. The host kernel has no ipvlan,
//! so these run in the full-kernel VM lane (`scripts/test.sh` boots it and
//! runs every ignored test whose name starts with `vm_`).

use manifold_netns_tests::topology::{
    addresses, link_details, reference, Topology, MASTER, VERSIONS,
};
use serde_json::{json, Value};

fn ipam(t: &Topology) -> Value {
    t.host_local(
        json!([[{"subnet": "10.88.0.0/24", "gateway": "10.88.0.1"}], [{"subnet": "fd88::/64", "gateway": "fd88::1"}]]),
        json!([{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]),
    )
}

#[test]
#[ignore = "needs ipvlan: VM lane"]
fn vm_ipvlan_every_mode_and_version_add_check_del() {
    let t = Topology::new("ivv");
    for mode in ["l2", "l3", "l3s"] {
        for (i, v) in VERSIONS.iter().enumerate() {
            let pod = t.pod(&format!("ivp{i}"));
            let before = t.host_snapshot();
            let c = json!({"cniVersion": v, "name": "ipv", "type": "manifold-ipvlan", "master": MASTER, "mode": mode, "ipam": ipam(&t)});
            let id = format!("{mode}-{i}");
            let res = t
                .run("manifold-ipvlan", "ADD", &id, Some(&pod), "net1", &c)
                .result()
                .clone();
            assert_eq!(res["cniVersion"], *v);
            assert_eq!(res["ips"].as_array().unwrap().len(), 2);
            let l = link_details(&pod, "net1").expect("net1");
            assert_eq!(l["linkinfo"]["info_kind"], "ipvlan");
            assert_eq!(l["linkinfo"]["info_data"]["mode"], mode);
            let addrs = addresses(&pod, "net1");
            assert_eq!(addrs.len(), 2, "{addrs:?}");
            assert!(
                addrs
                    .iter()
                    .all(|a| !a.1.contains(&"tentative".to_string())),
                "{addrs:?}"
            );
            if !v.starts_with("0.3") {
                let mut cc = c.clone();
                cc["prevResult"] = res.clone();
                let chk = t.run("manifold-ipvlan", "CHECK", &id, Some(&pod), "net1", &cc);
                assert_eq!(chk.code, 0, "CHECK {mode} {v}: {chk:?}");
                let mut wrong = cc.clone();
                wrong["mode"] = json!(if mode == "l2" { "l3" } else { "l2" });
                assert_eq!(
                    t.run("manifold-ipvlan", "CHECK", &id, Some(&pod), "net1", &wrong)
                        .error_code(),
                    102
                );
            }
            assert_eq!(
                t.run("manifold-ipvlan", "DEL", &id, Some(&pod), "net1", &c)
                    .code,
                0
            );
            assert!(link_details(&pod, "net1").is_none());
            assert_eq!(t.host_snapshot(), before, "host changed: {mode} {v}");
            assert!(t.host_local_reservations().is_empty());
            assert_eq!(
                t.run("manifold-ipvlan", "DEL", &id, Some(&pod), "net1", &c)
                    .code,
                0
            );
        }
    }
}

#[test]
#[ignore = "needs ipvlan: VM lane"]
fn vm_ipvlan_same_config_as_reference_is_equivalent() {
    let t = Topology::new("ivr");
    for mode in ["l2", "l3"] {
        let c = json!({"cniVersion": "1.0.0", "name": "ipv", "type": "manifold-ipvlan", "master": MASTER, "mode": mode, "mtu": 1400,
            "ipam": {"type": "static", "addresses": [{"address": "10.89.0.5/24", "gateway": "10.89.0.1"}, {"address": "fd89::5/64"}], "routes": [{"dst": "10.98.0.0/16"}]}});
        let mut rc = c.clone();
        rc["type"] = json!("ipvlan");
        // One after the other: ipvlans on one master cannot share an address.
        let ours = t.attach_and_capture("manifold-ipvlan", &c);
        let theirs = t.attach_and_capture(&reference("ipvlan"), &rc);
        assert_eq!(ours, theirs, "differs from the reference ({mode})");
    }
}

#[test]
#[ignore = "needs ipvlan: VM lane"]
fn vm_ipvlan_chained_takes_master_and_addresses_from_prev_result() {
    let t = Topology::new("ivc");
    let pod = t.pod("ivcp");
    let prev = json!({"cniVersion": "1.0.0",
        "interfaces": [{"name": MASTER}],
        "ips": [{"address": "10.90.0.7/24", "gateway": "10.90.0.1", "interface": 0}]});
    let c = json!({"cniVersion": "1.0.0", "name": "chain", "type": "manifold-ipvlan", "prevResult": prev});
    let res = t
        .run("manifold-ipvlan", "ADD", "c1", Some(&pod), "net1", &c)
        .result()
        .clone();
    assert_eq!(res["ips"][0]["address"], "10.90.0.7/24");
    assert_eq!(res["ips"][0]["interface"], 0);
    assert_eq!(res["interfaces"][0]["name"], "net1");
    let l = link_details(&pod, "net1").unwrap();
    assert_eq!(l["linkinfo"]["info_kind"], "ipvlan");
    assert_eq!(addresses(&pod, "net1")[0].0, "10.90.0.7/24");
    assert_eq!(
        t.run("manifold-ipvlan", "DEL", "c1", Some(&pod), "net1", &c)
            .code,
        0
    );
    assert!(link_details(&pod, "net1").is_none());
}

#[test]
#[ignore = "needs ipvlan: VM lane"]
fn vm_ipvlan_l2_pods_reach_each_other_and_failure_rolls_back() {
    let t = Topology::new("ivg");
    let (a, b) = (t.pod("ivga"), t.pod("ivgb"));
    let c = json!({"cniVersion": "1.0.0", "name": "ipv", "type": "manifold-ipvlan", "master": MASTER, "ipam": ipam(&t)});
    t.run("manifold-ipvlan", "ADD", "a", Some(&a), "net1", &c)
        .result();
    let rb = t
        .run("manifold-ipvlan", "ADD", "b", Some(&b), "net1", &c)
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
        assert!(out.status.success(), "ping {dst}");
    }
    let bad = json!({"cniVersion": "1.0.0", "name": "ipv", "type": "manifold-ipvlan", "master": MASTER,
        "ipam": t.host_local(json!([[{"subnet": "10.91.0.0/24"}]]), json!([{"dst": "10.201.0.0/16", "gw": "192.0.2.1"}]))});
    let before = manifold_netns_tests::snapshot(&a);
    let r = t.run("manifold-ipvlan", "ADD", "a2", Some(&a), "net2", &bad);
    assert_ne!(r.code, 0);
    assert_eq!(manifold_netns_tests::snapshot(&a), before);
    for (id, p) in [("a", &a), ("b", &b)] {
        assert_eq!(
            t.run("manifold-ipvlan", "DEL", id, Some(p), "net1", &c)
                .code,
            0
        );
    }
    assert!(
        t.host_local_reservations().is_empty(),
        "{:?}",
        t.host_local_reservations()
    );
}
