//! `manifoldctl ipam` against both stores, with allocations made by the
//! plugin's own code (run in-process as a runtime would run the binary).

#[path = "../../../plugins/ipam/tests/common/mod.rs"]
#[macro_use]
mod common;

use common::{conf, Backend};
use manifold_common::dispatch;
use manifold_common::env::CniEnv;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::process::Command;

const CTL: &str = env!("CARGO_BIN_EXE_manifoldctl");

/// Runs the plugin's ADD in-process.
fn add(c: &Value, container: &str, args: &str) -> Value {
    let env: HashMap<&str, &str> = HashMap::from([
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", container),
        ("CNI_IFNAME", "net1"),
        ("CNI_NETNS", "/var/run/netns/x"),
        ("CNI_ARGS", args),
    ]);
    let out = dispatch::run(
        &manifold_ipam::plugin::Ipam,
        CniEnv::from_lookup(|k| env.get(k).map(|v| v.to_string())),
        &mut c.to_string().as_bytes(),
    );
    assert_eq!(out.code, 0, "{}", out.stdout);
    serde_json::from_str(&out.stdout).unwrap()
}

fn store_flags(b: &Backend) -> Vec<String> {
    match b {
        Backend::Local(d) => vec!["--data-dir".into(), d.0.display().to_string()],
        Backend::Etcd(e) => vec!["--etcd-endpoints".into(), e.url.clone()],
    }
}

fn ctl(b: &Backend, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(CTL)
        .arg("ipam")
        .args(store_flags(b))
        .args(args)
        .env("MANIFOLD_IPAM_CONFIG", "")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn json_of(b: &Backend, args: &[&str]) -> Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let (code, out, err) = ctl(b, &a);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

fn populated(b: &Backend) -> Value {
    let c = conf(
        b,
        json!({"ranges": [[{"subnet": "10.80.0.0/24"}], [{"subnet": "fd80::/64"}]], "exclude": []}),
    );
    add(&c, "c1", "K8S_POD_NAMESPACE=web;K8S_POD_NAME=fe-0");
    add(&c, "c2", "");
    c
}

fn pools_lists_size_used_and_free_per_family(b: Backend) {
    populated(&b);
    let pools = json_of(&b, &["pools"]);
    assert_eq!(pools.as_array().unwrap().len(), 2, "{pools:#}");
    assert_eq!(pools[0]["network"], "net1");
    assert_eq!(pools[0]["family"], "IPv4");
    assert_eq!(
        (
            pools[0]["size"].as_u64(),
            pools[0]["used"].as_u64(),
            pools[0]["free"].as_u64()
        ),
        (Some(253), Some(2), Some(251))
    );
    assert_eq!(pools[1]["family"], "IPv6");
    assert_eq!(pools[1]["used"], 2);
    let (code, text, _) = ctl(&b, &["pools"]);
    assert_eq!(code, 0);
    assert!(text.starts_with("NETWORK  FAMILY  SIZE"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == [
                    "net1",
                    "IPv4",
                    "253",
                    "2",
                    "251",
                    "10.80.0.0/24",
                    "(10.80.0.1-10.80.0.254)"
                ]),
        "{text}"
    );
}

fn show_lists_holders_with_pod_node_and_age(b: Backend) {
    populated(&b);
    let all = json_of(&b, &["show", "net1"]);
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 4);
    let first = &all[0];
    assert_eq!(first["address"], "10.80.0.2");
    assert_eq!(first["containerID"], "c1");
    assert_eq!(first["ifname"], "net1");
    assert_eq!(first["podNamespace"], "web");
    assert_eq!(first["podName"], "fe-0");
    assert_eq!(first["node"], "node-a");
    assert_eq!(first["state"], "committed");
    let (_, text, _) = ctl(&b, &["show", "net1"]);
    assert!(text.starts_with("ADDRESS"), "{text}");
    assert!(text.contains("10.80.0.2  "), "{text}");
    assert!(text.contains("web/fe-0"), "{text}");
    let (code, _, err) = ctl(&b, &["show", "nosuchnet"]);
    assert_eq!(code, 1);
    assert!(err.contains("no allocations"), "{err}");
}

fn release_frees_one_address_for_the_plugin_to_hand_out(b: Backend) {
    let c = populated(&b);
    let (code, out, err) = ctl(&b, &["release", "net1", "10.80.0.2"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("released 10.80.0.2 of network net1 (container c1 ifname net1, pod web/fe-0, node node-a)"), "{out}");
    let left = json_of(&b, &["show", "net1"]);
    assert_eq!(left.as_array().unwrap().len(), 3);
    // Free again: the plugin grants it to whoever asks for it.
    let r = add(&c, "c3", "IP=10.80.0.2");
    assert_eq!(r["ips"][0]["address"], "10.80.0.2/24");
    let (code, _, err) = ctl(&b, &["release", "net1", "10.80.0.200"]);
    assert_eq!(code, 1);
    assert!(err.contains("not allocated"), "{err}");
}

fn release_node_frees_a_gone_nodes_addresses_and_blocks(b: Backend) {
    let c = populated(&b);
    let mut other = c.clone();
    other["ipam"]["nodeName"] = json!("node-b");
    let kept = add(&other, "b1", "");
    let (code, out, err) = ctl(&b, &["release-node", "node-a"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "released node node-a: 2 attachments (4 addresses), 2 blocks\n"
    );
    let left = json_of(&b, &["show", "net1"]);
    let left: Vec<&str> = left
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["containerID"].as_str().unwrap())
        .collect();
    assert_eq!(left, vec!["b1", "b1"], "node-b's allocation stays");
    let keys: Vec<String> = b.keys("_shared").into_iter().map(|e| e.key).collect();
    assert!(
        !keys.iter().any(|k| k.contains("node-a")),
        "node-a keys left: {keys:?}"
    );
    assert!(kept["ips"].as_array().unwrap().len() == 2);
    // node-a's first addresses are free for anyone again.
    let r = add(&other, "b2", "IP=10.80.0.2");
    assert_eq!(r["ips"][0]["address"], "10.80.0.2/24");
    // Nothing left of node-a: a second release frees nothing.
    let again = json_of(&b, &["release-node", "node-a"]);
    assert_eq!(
        again["released"],
        json!({"attachments": 0, "addresses": 0, "blocks": 0})
    );
    let (code, _, err) = ctl(&b, &["release-node", "../x"]);
    assert_eq!(code, 1);
    assert!(err.contains("node name"), "{err}");
}

both_stores!(
    pools_lists_size_used_and_free_per_family,
    show_lists_holders_with_pod_node_and_age,
    release_frees_one_address_for_the_plugin_to_hand_out,
    release_node_frees_a_gone_nodes_addresses_and_blocks,
);
