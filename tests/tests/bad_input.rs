//! The bad-input corpus: every entry must give a CNI error with the right
//! spec code and a message naming the problem. All of these are rejected
//! before any namespace is opened, so nothing can have changed (the netns
//! lane repeats a subset as root and compares namespace snapshots).

use manifold_tests::Call;
use serde_json::{json, Value};

struct Case {
    name: &'static str,
    env: &'static [(&'static str, &'static str)],
    stdin: Vec<u8>,
    code: u64,
    msg_has: &'static str,
}

fn macvlan(extra: Value) -> Vec<u8> {
    let mut c =
        json!({"cniVersion":"1.0.0","name":"net-a","type":"manifold-macvlan","master":"eth0"});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c.to_string().into_bytes()
}

const ADD: &[(&str, &str)] = &[
    ("CNI_COMMAND", "ADD"),
    ("CNI_CONTAINERID", "c1"),
    ("CNI_NETNS", "/var/run/netns/never-opened"),
    ("CNI_IFNAME", "net1"),
];

fn cases() -> Vec<Case> {
    let ok = macvlan(json!({}));
    vec![
        Case {
            name: "malformed JSON",
            env: ADD,
            stdin: b"{\"cniVersion\":".to_vec(),
            code: 6,
            msg_has: "decode",
        },
        Case {
            name: "JSON array",
            env: ADD,
            stdin: b"[1,2]".to_vec(),
            code: 6,
            msg_has: "object",
        },
        Case {
            name: "empty stdin",
            env: ADD,
            stdin: Vec::new(),
            code: 6,
            msg_has: "decode",
        },
        Case {
            name: "huge input",
            env: ADD,
            stdin: {
                let mut v = b"{\"x\":\"".to_vec();
                v.resize(5 << 20, b'a');
                v
            },
            code: 6,
            msg_has: "limit",
        },
        Case {
            name: "unknown cniVersion",
            env: ADD,
            stdin: macvlan(json!({"cniVersion":"0.2.0"})),
            code: 1,
            msg_has: "0.2.0",
        },
        Case {
            name: "missing cniVersion",
            env: ADD,
            stdin: br#"{"name":"n","type":"manifold-macvlan"}"#.to_vec(),
            code: 1,
            msg_has: "cniVersion",
        },
        Case {
            name: "missing name",
            env: ADD,
            stdin: br#"{"cniVersion":"1.0.0","type":"manifold-macvlan"}"#.to_vec(),
            code: 7,
            msg_has: "name",
        },
        Case {
            name: "name with slash",
            env: ADD,
            stdin: macvlan(json!({"name":"../etc"})),
            code: 7,
            msg_has: "name",
        },
        Case {
            name: "bad mode",
            env: ADD,
            stdin: macvlan(json!({"mode":"sideways"})),
            code: 7,
            msg_has: "sideways",
        },
        Case {
            name: "bad MAC",
            env: ADD,
            stdin: macvlan(json!({"mac":"zz:00:00:00:00:01"})),
            code: 7,
            msg_has: "zz:00",
        },
        Case {
            name: "multicast MAC",
            env: ADD,
            stdin: macvlan(json!({"mac":"01:00:5e:00:00:01"})),
            code: 7,
            msg_has: "multicast",
        },
        Case {
            name: "bad runtimeConfig MAC",
            env: ADD,
            stdin: macvlan(json!({"runtimeConfig":{"mac":"nope"}})),
            code: 7,
            msg_has: "nope",
        },
        Case {
            name: "negative MTU",
            env: ADD,
            stdin: macvlan(json!({"mtu":-5})),
            code: 7,
            msg_has: "MTU",
        },
        Case {
            name: "MTU as string",
            env: ADD,
            stdin: macvlan(json!({"mtu":"big"})),
            code: 6,
            msg_has: "decode",
        },
        Case {
            name: "master too long",
            env: ADD,
            stdin: macvlan(json!({"master":"a-very-long-master-name"})),
            code: 7,
            msg_has: "master",
        },
        Case {
            name: "ipam type is a path",
            env: ADD,
            stdin: macvlan(json!({"ipam":{"type":"/bin/sh"}})),
            code: 7,
            msg_has: "path",
        },
        Case {
            name: "bad prevResult",
            env: ADD,
            stdin: macvlan(json!({"prevResult":{"ips":[{"address":"10.0.0.300/24"}]}})),
            code: 6,
            msg_has: "prevResult",
        },
        Case {
            name: "missing CNI_COMMAND",
            env: &[],
            stdin: ok.clone(),
            code: 4,
            msg_has: "CNI_COMMAND",
        },
        Case {
            name: "unknown CNI_COMMAND",
            env: &[("CNI_COMMAND", "ATTACH")],
            stdin: ok.clone(),
            code: 4,
            msg_has: "ATTACH",
        },
        Case {
            name: "ADD without netns",
            env: &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "c1"),
                ("CNI_IFNAME", "net1"),
            ],
            stdin: ok.clone(),
            code: 4,
            msg_has: "CNI_NETNS",
        },
        Case {
            name: "ADD without container id",
            env: &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_NETNS", "/x"),
                ("CNI_IFNAME", "net1"),
            ],
            stdin: ok.clone(),
            code: 4,
            msg_has: "CNI_CONTAINERID",
        },
        Case {
            name: "container id with slash",
            env: &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "a/b"),
                ("CNI_NETNS", "/x"),
                ("CNI_IFNAME", "net1"),
            ],
            stdin: ok.clone(),
            code: 4,
            msg_has: "CNI_CONTAINERID",
        },
        Case {
            name: "ifname over 15 bytes",
            env: &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "c1"),
                ("CNI_NETNS", "/x"),
                ("CNI_IFNAME", "net1234567890123"),
            ],
            stdin: ok.clone(),
            code: 4,
            msg_has: "15 bytes",
        },
        Case {
            name: "ifname with slash",
            env: &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "c1"),
                ("CNI_NETNS", "/x"),
                ("CNI_IFNAME", "a/b"),
            ],
            stdin: ok.clone(),
            code: 4,
            msg_has: "'/'",
        },
        Case {
            name: "ifname dot-dot",
            env: &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "c1"),
                ("CNI_NETNS", "/x"),
                ("CNI_IFNAME", ".."),
            ],
            stdin: ok.clone(),
            code: 4,
            msg_has: "path",
        },
        Case {
            name: "malformed CNI_ARGS",
            env: &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "c1"),
                ("CNI_NETNS", "/x"),
                ("CNI_IFNAME", "net1"),
                ("CNI_ARGS", "MAC"),
            ],
            stdin: ok.clone(),
            code: 4,
            msg_has: "KEY=VALUE",
        },
        Case {
            name: "unknown CNI_ARGS key",
            env: &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "c1"),
                ("CNI_NETNS", "/x"),
                ("CNI_IFNAME", "net1"),
                ("CNI_ARGS", "FOO=bar"),
            ],
            stdin: ok.clone(),
            code: 4,
            msg_has: "FOO",
        },
        Case {
            name: "bad CNI_ARGS MAC",
            env: &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "c1"),
                ("CNI_NETNS", "/x"),
                ("CNI_IFNAME", "net1"),
                ("CNI_ARGS", "IgnoreUnknown=1;MAC=xx"),
            ],
            stdin: ok.clone(),
            code: 7,
            msg_has: "xx",
        },
    ]
}

#[test]
fn every_bad_input_gets_the_right_code_and_an_actionable_message() {
    let mut failures = Vec::new();
    for case in cases() {
        let mut call = Call::new("manifold-macvlan");
        for (k, v) in case.env {
            call = call.env(k, v);
        }
        let out = call.run(&case.stdin);
        let code = out.json.as_ref().and_then(|j| j["code"].as_u64());
        if out.code == 0 || code != Some(case.code) || !out.error_msg().contains(case.msg_has) {
            failures.push(format!(
                "{}: want code {} with {:?}, got exit {} {}",
                case.name, case.code, case.msg_has, out.code, out.stdout
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn ipvlan_rejects_bad_mode_and_unknown_args() {
    let conf = json!({"cniVersion":"1.0.0","name":"n","type":"manifold-ipvlan","master":"eth0","mode":"l4"});
    let mut call = Call::new("manifold-ipvlan");
    for (k, v) in ADD {
        call = call.env(k, v);
    }
    let out = call.clone().run(conf.to_string().as_bytes());
    assert_eq!(out.error_code(), 7);
    assert!(out.error_msg().contains("l4"), "{out:?}");
    let out = call.env("CNI_ARGS", "MAC=0a:00:00:00:00:01").run(
        json!({"cniVersion":"1.0.0","name":"n","type":"manifold-ipvlan"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(out.error_code(), 4, "ipvlan takes no MAC arg: {out:?}");
}

#[test]
fn chained_ipvlan_without_master_needs_one_prev_interface() {
    let conf = json!({"cniVersion":"1.0.0","name":"n","type":"manifold-ipvlan",
        "prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"a"},{"name":"b"}]}});
    let mut call = Call::new("manifold-ipvlan");
    for (k, v) in ADD {
        call = call.env(k, v);
    }
    let out = call.run(conf.to_string().as_bytes());
    assert_eq!(out.error_code(), 7);
    assert!(out.error_msg().contains("prevResult"), "{out:?}");
}
