//! The in-process host-local (`manifold_common::hostlocal`, reached through
//! `Ipam` as the interface plugins reach it) against Debian's reference
//! binary, on the same configs and the same `dataDir`: same allocation
//! sequence and results, each sees and releases the other's reservations,
//! concurrent mixed ADDs never share an address, same error codes and
//! messages. Unprivileged: host-local touches no namespace.

use manifold_common::args::CniArgs;
use manifold_common::config::NetConf;
use manifold_common::env::{CniEnv, Command};
use manifold_common::ipam::Ipam;
use manifold_tests::{Call, Output, REFERENCE_DIR};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const NET: &str = "hlnet";

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mf-hlio-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn conf(version: &str, dir: &Path, ipam: Value) -> Value {
    let mut ipam = ipam;
    ipam["type"] = json!("host-local");
    ipam["dataDir"] = json!(dir.display().to_string());
    json!({"cniVersion": version, "name": NET, "type": "manifold-macvlan", "ipam": ipam})
}

/// What a call ended with, in a form both sides share: the result JSON, or
/// the error's code and message (without the `ipam: host-local VERB: `
/// prefix `Ipam` adds).
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Ok(Value),
    Err(u64, String),
}

impl Outcome {
    fn ip(&self) -> String {
        match self {
            Outcome::Ok(v) => v["ips"][0]["address"].as_str().unwrap().to_string(),
            Outcome::Err(..) => panic!("expected a result: {self:?}"),
        }
    }

    fn map_msg(self, f: impl FnOnce(&str) -> String) -> Outcome {
        match self {
            Outcome::Err(code, msg) => Outcome::Err(code, f(&msg)),
            ok => ok,
        }
    }
}

/// The reference binary, exec'd as a plugin execs its IPAM.
fn theirs(verb: &str, c: &Value, id: &str, ifname: &str, args: &str) -> Outcome {
    let call = Call {
        plugin: Path::new(REFERENCE_DIR).join("host-local"),
        env: vec![],
        wrapper: vec![],
    }
    .verb(verb, id, "/proc/self/ns/net", ifname)
    .env("CNI_PATH", REFERENCE_DIR)
    .env("CNI_ARGS", args);
    let out: Output = call.run(c.to_string().as_bytes());
    if out.code == 0 {
        Outcome::Ok(out.json.unwrap_or(Value::Null))
    } else {
        Outcome::Err(out.error_code(), out.error_msg())
    }
}

/// Ours, in-process, through `Ipam` exactly as the interface plugins call it.
fn ours(verb: &str, c: &Value, id: &str, ifname: &str, args: &str) -> Outcome {
    let command = Command::parse(verb).unwrap();
    let conf = NetConf::from_value(c.clone()).unwrap();
    let env = CniEnv {
        command,
        container_id: id.into(),
        netns: Some("/proc/self/ns/net".into()),
        ifname: ifname.into(),
        args: CniArgs::parse(args).unwrap(),
        path: vec![PathBuf::from("/nonexistent")],
    };
    let stdin = c.to_string();
    let ipam = Ipam::of(&conf, &env, stdin.as_bytes()).expect("ipam configured");
    let done = match command {
        Command::Add => ipam.add().map(|r| r.to_value(conf.cni_version)),
        Command::Del => ipam.del().map(|()| Value::Null),
        Command::Check => ipam.check().map(|()| Value::Null),
        Command::Gc => ipam.gc().map(|()| Value::Null),
        other => panic!("{other:?} is not an IPAM verb here"),
    };
    match done {
        Ok(v) => Outcome::Ok(v),
        Err(e) => {
            let prefix = format!("ipam: host-local {verb}: ");
            let msg = e
                .msg
                .strip_prefix(&prefix)
                .unwrap_or_else(|| panic!("{:?} lacks the prefix {prefix:?}", e.msg));
            Outcome::Err(e.code.as_u32().into(), msg.to_string())
        }
    }
}

/// Every file of the network's directory and its content.
fn snapshot(data_dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(data_dir.join(NET))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read_to_string(e.path()).unwrap(),
            )
        })
        .collect()
}

/// The reservations only (files named by an address).
fn reservations(data_dir: &Path) -> BTreeMap<String, String> {
    snapshot(data_dir)
        .into_iter()
        .filter(|(k, _)| k.parse::<std::net::IpAddr>().is_ok())
        .collect()
}

#[test]
fn reference_binary_is_installed() {
    assert!(
        Path::new(REFERENCE_DIR).join("host-local").exists(),
        "install containernetworking-plugins"
    );
}

/// The same calls in two data dirs, one per implementation: every result and
/// error, and the final directory, are identical.
#[test]
fn same_sequence_results_and_files_as_the_reference() {
    let ipams = [
        // Dual-stack, gateways and spans set, routes.
        json!({"ranges": [[{"subnet": "10.50.0.0/24", "rangeStart": "10.50.0.10", "rangeEnd": "10.50.0.14", "gateway": "10.50.0.12"}],
                          [{"subnet": "fd50::/64", "rangeStart": "fd50::ffff:fffe", "rangeEnd": "fd50::1:0:3"}]],
               "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.99.0.0/16", "gw": "10.50.0.1"}, {"dst": "::/0"}]}),
        // Legacy single range plus a set of two small ranges.
        json!({"subnet": "10.51.0.0/29",
               "ranges": [[{"subnet": "10.52.0.0/30"}, {"subnet": "10.52.1.0/29", "gateway": "10.52.1.3"}]]}),
    ];
    for version in ["0.3.1", "0.4.0", "1.0.0"] {
        for (n, ipam) in ipams.iter().enumerate() {
            let (a, b) = (tempdir("seq-a"), tempdir("seq-b"));
            let (ca, cb) = (
                conf(version, &a, ipam.clone()),
                conf(version, &b, ipam.clone()),
            );
            let mut allocated = 0;
            for i in 0..9 {
                let id = format!("ctr{i}");
                let args = if i == 4 {
                    "IgnoreUnknown=1;K8S_POD_NAME=p;IP=10.51.0.6"
                } else {
                    ""
                };
                let t = theirs("ADD", &ca, &id, "eth0", args);
                let o = ours("ADD", &cb, &id, "eth0", args);
                assert_eq!(o, t, "{version} config {n} ADD {id}");
                allocated += usize::from(matches!(t, Outcome::Ok(_)));
                if i % 3 == 2 {
                    let old = format!("ctr{}", i - 2);
                    assert_eq!(
                        ours("DEL", &cb, &old, "eth0", ""),
                        theirs("DEL", &ca, &old, "eth0", "")
                    );
                }
            }
            assert!(
                allocated >= 5,
                "{version} config {n}: only {allocated} ADDs succeeded"
            );
            assert!(!reservations(&a).is_empty());
            assert_eq!(
                snapshot(&b),
                snapshot(&a),
                "{version} config {n}: directories differ"
            );
            std::fs::remove_dir_all(a).unwrap();
            std::fs::remove_dir_all(b).unwrap();
        }
    }
}

/// Static requests from all three sources, in both implementations.
#[test]
fn static_requests_match_the_reference() {
    let (a, b) = (tempdir("static-a"), tempdir("static-b"));
    let ipam = json!({"ranges": [[{"subnet": "10.53.0.0/24"}], [{"subnet": "fd53::/64"}]]});
    let mut ca = conf("1.0.0", &a, ipam.clone());
    let mut cb = conf("1.0.0", &b, ipam);
    for c in [&mut ca, &mut cb] {
        c["args"] = json!({"cni": {"ips": ["fd53::99"]}});
        c["runtimeConfig"] = json!({"ips": ["10.53.0.77/24"]});
    }
    let t = theirs("ADD", &ca, "s1", "net1", "");
    assert_eq!(ours("ADD", &cb, "s1", "net1", ""), t);
    let Outcome::Ok(r) = &t else { panic!("{t:?}") };
    assert_eq!(r["ips"][0]["address"], "10.53.0.77/24");
    assert_eq!(r["ips"][1]["address"], "fd53::99/64");
    assert_eq!(snapshot(&b), snapshot(&a));

    // runtimeConfig.ipRanges is prepended to the ranges; resolvConf fills dns.
    let resolv = a.join("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 10.53.0.53\nsearch x.example y.example\noptions ndots:3\n",
    )
    .unwrap();
    for c in [&mut ca, &mut cb] {
        c["runtimeConfig"] =
            json!({"ipRanges": [[{"subnet": "10.59.0.0/29", "gateway": "10.59.0.6"}]]});
        c["ipam"]["resolvConf"] = json!(resolv.display().to_string());
        c["args"] = Value::Null;
    }
    let t = theirs("ADD", &ca, "s2", "net1", "");
    assert_eq!(ours("ADD", &cb, "s2", "net1", ""), t);
    let Outcome::Ok(r) = &t else { panic!("{t:?}") };
    assert_eq!(r["ips"][0]["address"], "10.59.0.1/29");
    assert_eq!(r["dns"]["nameservers"], json!(["10.53.0.53"]));
    assert_eq!(reservations(&b), reservations(&a));
    std::fs::remove_dir_all(a).unwrap();
    std::fs::remove_dir_all(b).unwrap();
}

/// One data dir shared by both: each sees, checks and releases what the
/// other reserved, legacy files (no ifname) included.
#[test]
fn each_sees_checks_and_releases_the_others_reservations() {
    let d = tempdir("shared");
    let c = conf(
        "1.0.0",
        &d,
        json!({"ranges": [[{"subnet": "10.54.0.0/24"}]]}),
    );
    assert_eq!(theirs("ADD", &c, "t1", "eth0", "").ip(), "10.54.0.2/24");
    assert_eq!(ours("ADD", &c, "o1", "eth0", "").ip(), "10.54.0.3/24");
    assert_eq!(theirs("ADD", &c, "t2", "eth0", "").ip(), "10.54.0.4/24");
    assert_eq!(ours("ADD", &c, "o2", "eth0", "").ip(), "10.54.0.5/24");

    assert_eq!(
        ours("CHECK", &c, "t1", "eth0", ""),
        Outcome::Ok(Value::Null)
    );
    assert_eq!(
        theirs("CHECK", &c, "o1", "eth0", ""),
        Outcome::Ok(Value::Null)
    );
    // Duplicate ADDs: each refuses the other's reservation with the same error.
    assert_eq!(
        ours("ADD", &c, "t1", "eth0", ""),
        theirs("ADD", &c, "t1", "eth0", "")
    );
    assert_eq!(
        theirs("ADD", &c, "o1", "eth0", ""),
        ours("ADD", &c, "o1", "eth0", "")
    );
    // Static requests of the other's address fail alike.
    assert_eq!(
        ours("ADD", &c, "x", "eth0", "IP=10.54.0.2"),
        theirs("ADD", &c, "x", "eth0", "IP=10.54.0.3")
            .map_msg(|m| m.replace("10.54.0.3", "10.54.0.2"))
    );

    assert_eq!(ours("DEL", &c, "t1", "eth0", ""), Outcome::Ok(Value::Null));
    assert_eq!(
        theirs("DEL", &c, "o1", "eth0", ""),
        Outcome::Ok(Value::Null)
    );
    let left: Vec<String> = reservations(&d).into_keys().collect();
    assert_eq!(left, ["10.54.0.4", "10.54.0.5"]);

    // A reservation written before host-local recorded the ifname.
    std::fs::write(d.join(NET).join("10.54.0.50"), "legacy1").unwrap();
    std::fs::write(d.join(NET).join("10.54.0.51"), "legacy2\n").unwrap();
    assert_eq!(
        ours("CHECK", &c, "legacy1", "eth0", ""),
        Outcome::Ok(Value::Null)
    );
    assert_eq!(
        theirs("CHECK", &c, "legacy2", "eth0", ""),
        Outcome::Ok(Value::Null)
    );
    assert_eq!(
        ours("DEL", &c, "legacy1", "eth0", ""),
        Outcome::Ok(Value::Null)
    );
    assert_eq!(
        theirs("DEL", &c, "legacy2", "eth0", ""),
        Outcome::Ok(Value::Null)
    );
    // Round-robin continues from where the other left off.
    assert_eq!(theirs("ADD", &c, "t3", "eth0", "").ip(), "10.54.0.6/24");
    assert_eq!(ours("ADD", &c, "o3", "eth0", "").ip(), "10.54.0.7/24");
    let left: Vec<String> = reservations(&d).into_keys().collect();
    assert_eq!(left, ["10.54.0.4", "10.54.0.5", "10.54.0.6", "10.54.0.7"]);

    // DEL is by container *and* ifname: the other interface keeps its address.
    assert_eq!(theirs("ADD", &c, "m", "eth0", "").ip(), "10.54.0.8/24");
    assert_eq!(ours("ADD", &c, "m", "net1", "").ip(), "10.54.0.9/24");
    assert_eq!(ours("DEL", &c, "m", "eth0", ""), Outcome::Ok(Value::Null));
    assert_eq!(reservations(&d)["10.54.0.9"], "m\r\nnet1");
    assert!(!reservations(&d).contains_key("10.54.0.8"));
    assert_eq!(theirs("DEL", &c, "m", "net1", ""), Outcome::Ok(Value::Null));
    assert!(!reservations(&d).contains_key("10.54.0.9"));
    std::fs::remove_dir_all(d).unwrap();
}

/// Four threads of ours and four execs of theirs hammer a 40-address range
/// with ADDs and DELs; no address is ever handed to two live attachments.
#[test]
fn concurrent_mixed_adds_never_share_an_address() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 60;
    const HELD: usize = 4;
    let d = tempdir("race");
    let c = Arc::new(conf(
        "1.0.0",
        &d,
        json!({"ranges": [[{"subnet": "10.55.0.0/24", "rangeStart": "10.55.0.10", "rangeEnd": "10.55.0.49"}]]}),
    ));
    let live: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let mut workers = Vec::new();
    for t in 0..THREADS * 2 {
        let (c, live) = (Arc::clone(&c), Arc::clone(&live));
        workers.push(std::thread::spawn(move || {
            let run: fn(&str, &Value, &str, &str, &str) -> Outcome =
                if t % 2 == 0 { ours } else { theirs };
            let mut held = std::collections::VecDeque::new();
            let mut allocated = 0;
            for i in 0..PER_THREAD {
                let id = format!("w{t}c{i}");
                let ip = match run("ADD", &c, &id, "eth0", "") {
                    Outcome::Ok(v) => v["ips"][0]["address"].as_str().unwrap().to_string(),
                    e => panic!("worker {t} ADD {id}: {e:?}"),
                };
                allocated += 1;
                if let Some(other) = live.lock().unwrap().insert(ip.clone(), id.clone()) {
                    panic!("{ip} handed to {id} while {other} holds it");
                }
                held.push_back((id, ip));
                if held.len() == HELD {
                    let (old, ip) = held.pop_front().unwrap();
                    live.lock().unwrap().remove(&ip);
                    assert_eq!(run("DEL", &c, &old, "eth0", ""), Outcome::Ok(Value::Null));
                }
            }
            (allocated, held)
        }));
    }
    let mut total = 0;
    let mut still_held = BTreeMap::new();
    for w in workers {
        let (n, held) = w.join().expect("worker panicked");
        total += n;
        for (id, ip) in held {
            still_held.insert(
                ip.trim_end_matches("/24").to_string(),
                format!("{id}\r\neth0"),
            );
        }
    }
    assert_eq!(total, THREADS * 2 * PER_THREAD);
    assert_eq!(
        reservations(&d),
        still_held,
        "the files are exactly the live attachments"
    );
    std::fs::remove_dir_all(d).unwrap();
}

/// Failures: same code (999, as every plain host-local error) and message.
#[test]
fn errors_match_the_reference() {
    let d = tempdir("errors");
    let ipam = json!({"ranges": [[{"subnet": "10.56.0.0/30"}]]});
    let c = conf("1.0.0", &d, ipam);
    assert_eq!(ours("ADD", &c, "e1", "eth0", "").ip(), "10.56.0.2/30");
    let mut cases: Vec<(&str, Value, &str, &str)> = vec![
        ("ADD", c.clone(), "e2", ""),                        // exhausted
        ("ADD", c.clone(), "e2", "IP=10.56.0.2"),            // static, taken
        ("ADD", c.clone(), "e2", "IP=10.56.0.1"),            // the gateway
        ("ADD", c.clone(), "e2", "IP=10.57.0.1"),            // outside every range
        ("ADD", c.clone(), "e2", "K8S_POD_NAME=p"),          // unknown CNI_ARGS
        ("ADD", c.clone(), "e2", "IP=nope;IgnoreUnknown=1"), // bad address
        ("ADD", c.clone(), "e1", ""),                        // duplicate
        ("CHECK", c.clone(), "e9", ""),                      // nothing held
    ];
    // Invalid configs: host bits, too small, start and end outside the
    // subnet, mixed families, overlaps within and across sets, an empty set.
    for ipam in [
        json!({"ranges": [[{"subnet": "10.56.0.1/24"}]]}),
        json!({"ranges": [[{"subnet": "10.56.0.0/31"}]]}),
        json!({"ranges": [[{"subnet": "10.56.0.0/24", "rangeStart": "10.56.1.1"}]]}),
        json!({"ranges": [[{"subnet": "10.56.0.0/24", "rangeEnd": "10.56.1.1"}]]}),
        json!({"ranges": [[{"subnet": "10.56.0.0/24"}, {"subnet": "fd00::/64"}]]}),
        json!({"ranges": [[{"subnet": "10.56.0.0/24"}, {"subnet": "10.56.0.0/25"}]]}),
        json!({"ranges": [[{"subnet": "10.56.0.0/24"}], [{"subnet": "10.56.0.128/25"}]]}),
        json!({"ranges": [[]]}),
    ] {
        cases.push(("ADD", conf("1.0.0", &d, ipam), "e3", ""));
    }
    for (verb, c, id, args) in &cases {
        let t = theirs(verb, c, id, "eth0", args);
        let o = ours(verb, c, id, "eth0", args);
        let (Outcome::Err(tc, tm), Outcome::Err(oc, om)) = (&t, &o) else {
            panic!("{verb} {id} {args}: both must fail: theirs {t:?}, ours {o:?}");
        };
        assert!(!tm.is_empty(), "{t:?}");
        assert_eq!(oc, tc, "{verb} {id} {args}: {om} / {tm}");
        // Ours adds a hint to the unknown-args message; the rest is verbatim.
        assert!(
            om.starts_with(tm.as_str()),
            "{verb} {id} {args}:\n ours   {om}\n theirs {tm}"
        );
    }
    assert_eq!(
        reservations(&d).into_keys().collect::<Vec<_>>(),
        ["10.56.0.2"]
    );
    std::fs::remove_dir_all(d).unwrap();
}

/// GC and STATUS: the reference implements neither (Debian's does not know
/// the verbs, upstream's accepts them and does nothing); ours, reached
/// through `Ipam`, succeeds and releases nothing either.
#[test]
fn gc_releases_nothing_like_the_reference() {
    let d = tempdir("gc");
    let mut c = conf(
        "1.1.0",
        &d,
        json!({"ranges": [[{"subnet": "10.58.0.0/24"}]]}),
    );
    let mut c10 = c.clone();
    c10["cniVersion"] = json!("1.0.0");
    assert_eq!(theirs("ADD", &c10, "g1", "eth0", "").ip(), "10.58.0.2/24");
    assert_eq!(ours("ADD", &c, "g2", "eth0", "").ip(), "10.58.0.3/24");
    let before = snapshot(&d);
    c["cni.dev/valid-attachments"] = json!([{"containerID": "g2", "ifname": "eth0"}]);
    c10["cni.dev/valid-attachments"] = c["cni.dev/valid-attachments"].clone();
    let t = theirs("GC", &c10, "g0", "eth0", "");
    assert!(
        matches!(t, Outcome::Err(4, _)),
        "Debian's host-local predates GC: {t:?}"
    );
    assert_eq!(snapshot(&d), before);
    assert_eq!(ours("GC", &c, "", "", ""), Outcome::Ok(Value::Null));
    assert_eq!(snapshot(&d), before, "GC released a reservation");
    std::fs::remove_dir_all(d).unwrap();
}
