//! etcd going away: calls fail with code 11 (STATUS: 50) within the request
//! timeout and leave nothing behind; a restart mid-run loses and duplicates
//! nothing.

mod common;

use common::{conf, consistent_attachments, Backend, Call, TestRng};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// requestTimeout of these tests; failing must never take much longer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

fn pool(b: &Backend) -> Value {
    let mut c = conf(
        b,
        json!({"ipRanges": [{"range": "10.70.0.0/24"}, {"range": "fd70::/64"}], "leaseTTL": 2}),
    );
    c["ipam"]["etcd"]["requestTimeout"] = json!("2s");
    c["ipam"]["etcd"]["dialTimeout"] = json!("1s");
    c
}

#[test]
fn etcd_stopped_fails_with_code_11_within_the_request_timeout() {
    let mut b = Backend::etcd();
    let c = pool(&b);
    let kept = Call::new("ADD", "before", "net1").run(&c).ips();
    let Backend::Etcd(e) = &mut b else {
        unreachable!()
    };
    e.stop();
    for verb in ["ADD", "DEL", "GC"] {
        let mut c = c.clone();
        c["cni.dev/valid-attachments"] = json!([]);
        let t = Instant::now();
        let out = Call::new(verb, "during", "net1").run(&c);
        let took = t.elapsed();
        assert_eq!(out.error_code(), 11, "{verb}: {out:#?}");
        assert!(
            out.error_msg().contains("etcd http://127.0.0.1"),
            "{verb}: {}",
            out.error_msg()
        );
        assert!(
            took < REQUEST_TIMEOUT + Duration::from_secs(2),
            "{verb} took {took:?}"
        );
    }
    let t = Instant::now();
    let out = Call::new("STATUS", "", "").run(&c);
    assert_eq!(out.error_code(), 50, "{out:#?}");
    assert!(t.elapsed() < REQUEST_TIMEOUT + Duration::from_secs(2));
    let Backend::Etcd(e) = &mut b else {
        unreachable!()
    };
    e.restart();
    // Nothing of the failed calls is left; what was there survived.
    let stored = consistent_attachments(&b, "_shared");
    assert_eq!(stored.len(), 1);
    assert_eq!(Call::new("ADD", "before", "net1").run(&c).ips(), kept);
    assert_eq!(Call::new("STATUS", "", "").run(&c).code, 0);
}

#[test]
fn etcd_never_reachable_is_code_11_not_a_hang() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let b = Backend::local(); // only for the config shape; the store is the dead etcd
    let mut c = conf(&b, json!({"range": "10.71.0.0/24"}));
    c["ipam"]["dataDir"] = Value::Null;
    c["ipam"]["etcd"] =
        json!({"endpoints": [format!("127.0.0.1:{port}")], "requestTimeout": 2, "dialTimeout": 1});
    let t = Instant::now();
    let out = Call::new("ADD", "c1", "net1").run(&c);
    assert_eq!(out.error_code(), 11, "{out:#?}");
    assert!(
        t.elapsed() < REQUEST_TIMEOUT + Duration::from_secs(2),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn etcd_restarted_mid_run_loses_and_duplicates_nothing() {
    const WORKERS: usize = 4;
    let mut b = Backend::etcd();
    let base = pool(&b);
    let held: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..WORKERS)
        .map(|n| {
            let mut c = base.clone();
            c["ipam"]["nodeName"] = json!(format!("node-{n}"));
            let (held, stop) = (held.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut rng = TestRng::new(50 + n as u64);
                let mut live: Vec<(String, Vec<String>)> = Vec::new();
                let mut failures = 0;
                let mut i = 0;
                // A runtime retries DEL until it succeeds.
                let del = |id: &str| {
                    for _ in 0..100 {
                        if Call::new("DEL", id, "net1").run(&c).code == 0 {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    panic!("DEL {id} never succeeded");
                };
                while !stop.load(Ordering::Relaxed) {
                    if live.len() < 20 && rng.below(3) > 0 {
                        let id = format!("n{n}-c{i}");
                        i += 1;
                        let out = Call::new("ADD", &id, "net1").run(&c);
                        if out.code != 0 {
                            assert_eq!(out.error_code(), 11, "{out:#?}");
                            failures += 1;
                            // As a runtime does after a failed ADD.
                            del(&id);
                            continue;
                        }
                        let ips = out.ips();
                        let mut h = held.lock().unwrap();
                        for ip in &ips {
                            if let Some(other) = h.insert(ip.clone(), id.clone()) {
                                panic!("{ip} handed to {id} while {other} holds it");
                            }
                        }
                        live.push((id, ips));
                    } else if !live.is_empty() {
                        let (id, ips) = live.swap_remove(rng.below(live.len() as u64) as usize);
                        {
                            let mut h = held.lock().unwrap();
                            for ip in &ips {
                                h.remove(ip);
                            }
                        }
                        del(&id);
                    }
                }
                (live, failures)
            })
        })
        .collect();
    let Backend::Etcd(e) = &mut b else {
        unreachable!()
    };
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(1500));
        e.stop();
        std::thread::sleep(Duration::from_millis(1000));
        e.restart();
    }
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let mut live: HashMap<(String, String), Vec<String>> = HashMap::new();
    let mut failures = 0;
    for w in workers {
        let (l, f) = w.join().unwrap();
        failures += f;
        for (id, ips) in l {
            let ips = ips
                .iter()
                .map(|a| a.split('/').next().unwrap().to_string())
                .collect();
            live.insert((id, "net1".into()), ips);
        }
    }
    eprintln!(
        "{failures} ADDs failed with code 11 while etcd was down; {} live",
        live.len()
    );
    // Leases of reservations cut short by the restart expire (TTL 2 s).
    std::thread::sleep(Duration::from_secs(4));
    let stored: HashMap<_, _> = consistent_attachments(&b, "_shared").into_iter().collect();
    assert_eq!(
        stored, live,
        "every live allocation survived, nothing else is held"
    );
    let all: Vec<&String> = stored.values().flatten().collect();
    assert_eq!(all.len(), all.iter().collect::<HashSet<_>>().len());
}
