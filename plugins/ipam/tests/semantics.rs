//! The allocator's semantics, exercised by exec'ing the plugin as a runtime
//! does. Every test runs twice: on the local store and on a real etcd.

#[macro_use]
mod common;

use common::{add, conf, del, Backend, Call};
use manifold_ipam::records::{AddressRecord, AttachmentRecord, State};
use serde_json::{json, Value};
use std::collections::HashSet;

fn dual_stack(b: &Backend) -> Value {
    conf(
        b,
        json!({
            "ranges": [[{"subnet": "10.10.0.0/24", "gateway": "10.10.0.254"}], [{"subnet": "fd10::/64"}]],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.10.0.1"}],
            "dns": {"nameservers": ["10.10.0.53"]}
        }),
    )
}

fn dual_stack_add_returns_one_address_per_family_with_gateway(b: Backend) {
    let c = dual_stack(&b);
    let out = add(&c, "c1");
    let r = out.result();
    assert_eq!(r["cniVersion"], "1.1.0");
    assert_eq!(
        r["ips"],
        json!([
            {"address": "10.10.0.1/24", "gateway": "10.10.0.254"},
            {"address": "fd10::2/64", "gateway": "fd10::1"}
        ])
    );
    assert!(r.get("interfaces").is_none());
    assert_eq!(
        r["routes"],
        json!([{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.10.0.1"}])
    );
    assert_eq!(r["dns"]["nameservers"], json!(["10.10.0.53"]));
    let second = add(&c, "c2").ips();
    assert_eq!(second, vec!["10.10.0.2/24", "fd10::3/64"]);
}

fn add_is_idempotent_for_the_same_attachment(b: Backend) {
    let c = dual_stack(&b);
    let first = add(&c, "c1").ips();
    assert_eq!(add(&c, "c1").ips(), first);
    assert_eq!(b.addresses("_shared").len(), 2);
    // Another interface of the same container is another attachment.
    let other = Call::new("ADD", "c1", "net2").run(&c).ips();
    assert_ne!(other, first);
}

fn del_releases_the_attachment_and_nothing_else(b: Backend) {
    let c = dual_stack(&b);
    let kept = add(&c, "keep").ips();
    add(&c, "gone");
    assert_eq!(del(&c, "gone").code, 0);
    let addrs = b.addresses("_shared");
    assert_eq!(addrs.len(), 2);
    assert!(addrs.iter().all(|e| e.value["containerID"] == "keep"));
    assert_eq!(b.attachments("_shared").len(), 1);
    assert_eq!(add(&c, "keep").ips(), kept);
}

fn del_of_unknown_attachment_succeeds(b: Backend) {
    let c = dual_stack(&b);
    let out = del(&c, "never-added");
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(out.stdout, "");
    // Twice, and without CNI_NETNS, as runtimes do after a failed ADD.
    let out = Call::new("DEL", "never-added", "net1")
        .env("CNI_NETNS", "")
        .run(&c);
    assert_eq!(out.code, 0, "{out:#?}");
}

fn never_hands_out_network_broadcast_gateway_or_excluded(b: Backend) {
    let c = conf(
        &b,
        json!({"range": "10.20.0.0/28", "gateway": "10.20.0.1", "exclude": ["10.20.0.4/30", "10.20.0.9"]}),
    );
    let mut got = HashSet::new();
    for i in 0..9 {
        let out = add(&c, &format!("c{i}"));
        if out.code != 0 {
            assert_eq!(out.error_code(), 11, "{out:#?}");
            assert!(
                out.error_msg()
                    .contains("10.20.0.0/28 (10.20.0.1-10.20.0.14)"),
                "{}",
                out.error_msg()
            );
            assert!(
                out.error_msg().contains("all 8 addresses are in use"),
                "{}",
                out.error_msg()
            );
            break;
        }
        assert!(got.insert(out.ips()[0].clone()));
    }
    let want: HashSet<String> = [2, 3, 8, 10, 11, 12, 13, 14]
        .iter()
        .map(|n| format!("10.20.0.{n}/28"))
        .collect();
    assert_eq!(got, want);
}

fn ipv6_ranges_of_any_size_allocate_without_enumeration(b: Backend) {
    // Half of a /48 excluded: the next free address is found arithmetically.
    let c = conf(
        &b,
        json!({"ipRanges": [
            {"range": "fd20::/48", "exclude": ["fd20::/49"]},
            {"range": "3000::/8"}
        ]}),
    );
    // 3000::/8: a pool of 2^120 addresses.
    let ips = add(&c, "c1").ips();
    assert_eq!(ips, vec!["fd20:0:0:8000::/48", "3000::1/8"]);
    let ips = add(&c, "c2").ips();
    assert_eq!(ips, vec!["fd20:0:0:8000::1/48", "3000::2/8"]);
}

fn static_requests_are_granted_when_free_and_in_range(b: Backend) {
    let c = dual_stack(&b);
    let mut with_rc = c.clone();
    with_rc["runtimeConfig"] = json!({"ips": ["10.10.0.77/24"]});
    assert_eq!(
        add(&with_rc, "c1").ips(),
        vec!["10.10.0.77/24", "fd10::2/64"]
    );
    let out = Call::new("ADD", "c2", "net1")
        .env("CNI_ARGS", "IgnoreUnknown=1;IP=10.10.0.78,fd10::78")
        .run(&c);
    assert_eq!(out.ips(), vec!["10.10.0.78/24", "fd10::78/64"]);
}

fn static_request_in_use_or_out_of_range_is_refused_and_changes_nothing(b: Backend) {
    let c = dual_stack(&b);
    add(&c, "holder");
    let before = b.keys("_shared");
    let out = Call::new("ADD", "c2", "net1")
        .env("CNI_ARGS", "IP=10.10.0.1")
        .run(&c);
    assert_eq!(out.error_code(), 11);
    assert!(
        out.error_msg()
            .contains("10.10.0.1 is in use by container holder ifname net1"),
        "{}",
        out.error_msg()
    );
    let out = Call::new("ADD", "c3", "net1")
        .env("CNI_ARGS", "IP=10.99.0.1")
        .run(&c);
    assert_eq!(out.error_code(), 7);
    assert!(
        out.error_msg().contains("none of the configured ranges"),
        "{}",
        out.error_msg()
    );
    let out = Call::new("ADD", "c4", "net1")
        .env("CNI_ARGS", "IP=10.10.0.254")
        .run(&c);
    assert_eq!(out.error_code(), 7, "gateway");
    let strip = |v: Vec<manifold_ipam::kv::Entry>| -> Vec<(String, Value)> {
        v.into_iter()
            .filter(|e| !e.key.contains("nextblock") && !e.key.contains("cursor"))
            .map(|e| (e.key, e.value))
            .collect()
    };
    assert_eq!(strip(b.keys("_shared")), strip(before));
}

fn failure_in_the_second_family_leaves_the_first_unallocated(b: Backend) {
    let c = conf(
        &b,
        json!({"ranges": [[{"subnet": "10.30.0.0/24"}], [{"subnet": "fd30::/126", "gateway": "fd30::3"}]]}),
    );
    // fd30::/126 has fd30::1 and fd30::2 once the network address and gateway are out.
    add(&c, "a");
    add(&c, "b");
    let out = add(&c, "c");
    assert_eq!(out.error_code(), 11);
    assert!(
        out.error_msg().contains("fd30::/126"),
        "{}",
        out.error_msg()
    );
    let holders: HashSet<String> = b
        .addresses("_shared")
        .iter()
        .map(|e| e.value["containerID"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(holders, HashSet::from(["a".to_string(), "b".to_string()]));
    assert_eq!(b.addresses("_shared").len(), 4);
}

fn gc_releases_only_this_nodes_unlisted_attachments(b: Backend) {
    let c = dual_stack(&b);
    add(&c, "live");
    add(&c, "stale");
    let mut other = c.clone();
    other["ipam"]["nodeName"] = json!("node-b");
    add(&other, "elsewhere");
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "live", "ifname": "net1"}]);
    let out = Call::new("GC", "", "").env("CNI_NETNS", "").run(&gc);
    assert_eq!(out.code, 0, "{out:#?}");
    let holders: HashSet<String> = b
        .attachments("_shared")
        .iter()
        .map(|e| e.value["containerID"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        holders,
        HashSet::from(["live".to_string(), "elsewhere".to_string()])
    );
    assert_eq!(b.addresses("_shared").len(), 4);
}

fn every_allocation_records_its_holder_and_time(b: Backend) {
    let c = dual_stack(&b);
    let out = Call::new("ADD", "c1", "net1")
        .env(
            "CNI_ARGS",
            "K8S_POD_NAMESPACE=web;K8S_POD_NAME=frontend-0;K8S_POD_UID=u1",
        )
        .run(&c);
    out.result();
    let addrs = b.addresses("_shared");
    assert_eq!(addrs.len(), 2);
    for e in addrs {
        let r: AddressRecord = serde_json::from_value(e.value).unwrap();
        assert_eq!(r.state, State::Committed);
        assert_eq!(e.lease, 0, "a committed address has no lease");
        assert_eq!(
            (r.owner.container_id.as_str(), r.owner.ifname.as_str()),
            ("c1", "net1")
        );
        assert_eq!(r.owner.node, "node-a");
        assert_eq!(r.owner.pod_namespace.as_deref(), Some("web"));
        assert_eq!(r.owner.pod_name.as_deref(), Some("frontend-0"));
        assert!(r.owner.allocated_at > 1_700_000_000);
    }
    let att: AttachmentRecord =
        serde_json::from_value(b.attachments("_shared")[0].value.clone()).unwrap();
    assert_eq!(att.addresses.len(), 2);
    assert_eq!(att.owner.network, "net1");
}

fn check_confirms_a_completed_allocation(b: Backend) {
    let c = dual_stack(&b);
    let r = add(&c, "c1").result().clone();
    let mut chk = c.clone();
    chk["prevResult"] = r;
    assert_eq!(Call::new("CHECK", "c1", "net1").run(&chk).code, 0);
    let out = Call::new("CHECK", "c2", "net1").run(&chk);
    assert_eq!(out.error_code(), 102);
}

fn networks_in_the_shared_space_never_share_an_address(b: Backend) {
    let a = conf(&b, json!({"range": "10.40.0.0/24"}));
    let mut other = conf(&b, json!({"range": "10.40.0.0/16"}));
    other["name"] = json!("net2");
    let x = add(&a, "c1").ips();
    let y = add(&other, "c1").ips();
    assert_eq!(x, vec!["10.40.0.1/24"]);
    assert_eq!(
        y,
        vec!["10.40.0.2/16"],
        "overlapping ranges share one space by default"
    );
    // With the check off, an isolated network reuses the same address.
    let mut iso = conf(
        &b,
        json!({"range": "10.40.0.0/24", "enable_overlapping_ranges": false, "network_name": "iso"}),
    );
    iso["name"] = json!("net3");
    assert_eq!(add(&iso, "c1").ips(), vec!["10.40.0.1/24"]);
    assert_eq!(b.addresses("iso").len(), 1);
}

fn status_reports_ready(b: Backend) {
    let c = dual_stack(&b);
    let out = Call::new("STATUS", "", "").run(&c);
    assert_eq!(out.code, 0, "{out:#?}");
}

fn concurrent_adds_never_hand_out_an_address_twice(b: Backend) {
    let c = conf(&b, json!({"range": "10.50.0.0/26"}));
    let children: Vec<_> = (0..16)
        .map(|i| {
            let mut c = c.clone();
            c["ipam"]["nodeName"] = json!(format!("node-{}", i % 4));
            Call::new("ADD", &format!("c{i}"), "net1").spawn(&c)
        })
        .collect();
    let mut seen = HashSet::new();
    for ch in children {
        let out = ch.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(seen.insert(v["ips"][0]["address"].as_str().unwrap().to_string()));
    }
    assert_eq!(b.addresses("_shared").len(), 16);
}

fn node_wide_file_supplies_store_and_node_name(b: Backend) {
    let dir = common::TempDir::new("nodefile");
    let file = dir.0.join("ipam.json");
    let mut fields = b.store_fields();
    fields["nodeName"] = json!("node-from-file");
    std::fs::write(&file, fields.to_string()).unwrap();
    // A network config that names no store, as a Whereabouts NAD would.
    let c = json!({"cniVersion": "1.1.0", "name": "net1", "type": "macvlan",
        "ipam": {"type": "manifold-ipam", "range": "10.90.0.0/24"}});
    let out = Call::new("ADD", "c1", "net1")
        .env("MANIFOLD_IPAM_CONFIG", file.to_str().unwrap())
        .run(&c);
    assert_eq!(out.ips(), vec!["10.90.0.1/24"]);
    let a = b.addresses("_shared");
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].value["node"], "node-from-file");
    let out = Call::new("ADD", "c2", "net1")
        .env("MANIFOLD_IPAM_CONFIG", "/nonexistent/ipam.json")
        .run(&c);
    assert_eq!(out.error_code(), 7);
    assert!(
        out.error_msg().contains("/nonexistent/ipam.json"),
        "{}",
        out.error_msg()
    );
}

fn results_follow_the_config_cni_version(b: Backend) {
    let mut c = dual_stack(&b);
    c["cniVersion"] = json!("0.3.1");
    let r = add(&c, "c1").result().clone();
    assert_eq!(r["cniVersion"], "0.3.1");
    assert_eq!(r["ips"][0]["version"], "4");
    assert_eq!(r["ips"][1]["version"], "6");
}

both_stores!(
    dual_stack_add_returns_one_address_per_family_with_gateway,
    add_is_idempotent_for_the_same_attachment,
    del_releases_the_attachment_and_nothing_else,
    del_of_unknown_attachment_succeeds,
    never_hands_out_network_broadcast_gateway_or_excluded,
    ipv6_ranges_of_any_size_allocate_without_enumeration,
    static_requests_are_granted_when_free_and_in_range,
    static_request_in_use_or_out_of_range_is_refused_and_changes_nothing,
    failure_in_the_second_family_leaves_the_first_unallocated,
    gc_releases_only_this_nodes_unlisted_attachments,
    every_allocation_records_its_holder_and_time,
    check_confirms_a_completed_allocation,
    networks_in_the_shared_space_never_share_an_address,
    status_reports_ready,
    concurrent_adds_never_hand_out_an_address_twice,
    node_wide_file_supplies_store_and_node_name,
    results_follow_the_config_cni_version,
);
