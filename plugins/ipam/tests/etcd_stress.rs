//! etcd under load and under crashes: many nodes racing in a small pool, and
//! plugin processes killed at random moments of ADD.

mod common;

use common::{conf, consistent_attachments, Backend, Call, TestRng};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The heavy tests of this file take turns: each would starve the other's processes.
static HEAVY: Mutex<()> = Mutex::new(());

const NODES: usize = 8;
const ADDS_PER_NODE: usize = 250;
const LIVE_PER_NODE: usize = 28;

fn small_pool(b: &Backend) -> Value {
    conf(
        b,
        json!({"ipRanges": [{"range": "10.60.0.0/24"}, {"range": "fd60::/120"}]}),
    )
}

/// How long one whole ADD of `id` takes now, in microseconds; it is DELed after.
fn add_duration_us(c: &Value, id: &str) -> u64 {
    let t = Instant::now();
    Call::new("ADD", id, "net1").run(c);
    let us = t.elapsed().as_micros() as u64;
    Call::new("DEL", id, "net1").run(c);
    us
}

#[test]
fn eight_nodes_allocating_and_releasing_thousands_never_duplicate() {
    let _turn = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let b = Backend::etcd();
    let base = small_pool(&b);
    // Who holds each address right now, as the plugin's results say.
    let held: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let workers: Vec<_> = (0..NODES)
        .map(|n| {
            let mut c = base.clone();
            c["ipam"]["nodeName"] = json!(format!("node-{n}"));
            let held = held.clone();
            std::thread::spawn(move || {
                let mut rng = TestRng::new(n as u64 + 1);
                let mut live: Vec<(String, Vec<String>)> = Vec::new();
                let mut adds = 0;
                while adds < ADDS_PER_NODE {
                    if live.len() < LIVE_PER_NODE && (live.is_empty() || rng.below(3) > 0) {
                        let id = format!("n{n}-c{adds}");
                        adds += 1;
                        let out = Call::new("ADD", &id, "net1").run(&c);
                        let ips = out.ips();
                        let mut h = held.lock().unwrap();
                        for ip in &ips {
                            if let Some(other) = h.insert(ip.clone(), id.clone()) {
                                panic!("{ip} handed to {id} while {other} holds it");
                            }
                        }
                        live.push((id, ips));
                    } else {
                        let (id, ips) = live.swap_remove(rng.below(live.len() as u64) as usize);
                        {
                            let mut h = held.lock().unwrap();
                            for ip in &ips {
                                h.remove(ip);
                            }
                        }
                        let out = Call::new("DEL", &id, "net1").run(&c);
                        assert_eq!(out.code, 0, "{out:#?}");
                    }
                }
                live
            })
        })
        .collect();
    let mut live: HashMap<(String, String), Vec<String>> = HashMap::new();
    for w in workers {
        for (id, ips) in w.join().unwrap() {
            let ips = ips
                .iter()
                .map(|a| a.split('/').next().unwrap().to_string())
                .collect();
            live.insert((id, "net1".into()), ips);
        }
    }
    let stored: HashMap<_, _> = consistent_attachments(&b, "_shared").into_iter().collect();
    assert_eq!(stored, live, "the store holds exactly the live attachments");
    let all: Vec<&String> = stored.values().flatten().collect();
    assert_eq!(all.len(), all.iter().collect::<HashSet<_>>().len());
}

#[test]
fn sigkill_at_random_moments_of_add_leaks_nothing_after_the_lease_ttl() {
    const KILLS: usize = 240;
    const PARALLEL: usize = 4;
    let _turn = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let b = Backend::etcd();
    let mut c = small_pool(&b);
    c["ipam"]["leaseTTL"] = json!(2);
    let c = Arc::new(c);
    // Samples the store while ADDs are being killed: the most leased
    // (reserved, uncommitted) keys seen at once.
    let done = Arc::new(AtomicBool::new(false));
    let monitor = {
        let (store, done) = (b.store_conf(), done.clone());
        std::thread::spawn(move || {
            let mut most = 0;
            while !done.load(Ordering::Relaxed) {
                let mut s = store.open("_shared").unwrap();
                let keys = s.kv.scan(("\u{1}".into(), "\u{7f}".into()), true).unwrap();
                most = most.max(keys.iter().filter(|e| e.lease != 0).count());
                std::thread::sleep(Duration::from_millis(50));
            }
            most
        })
    };
    let workers: Vec<_> = (0..PARALLEL)
        .map(|w| {
            let c = c.clone();
            std::thread::spawn(move || {
                let mut rng = TestRng::new(100 + w as u64);
                let mut ids = Vec::new();
                // How long a whole ADD takes right now: kills land anywhere in 1.5 times that.
                let mut window_us = 20_000;
                for i in (w..KILLS).step_by(PARALLEL) {
                    if i % 20 == w {
                        window_us = (add_duration_us(&c, &format!("timing-{i}")) * 3 / 2).max(1000);
                    }
                    let id = format!("k{i}");
                    let mut child = Call::new("ADD", &id, "net1").spawn(&c);
                    std::thread::sleep(Duration::from_micros(rng.below(window_us)));
                    let _ = child.kill();
                    let _ = child.wait();
                    ids.push(id);
                }
                ids
            })
        })
        .collect();
    let ids: Vec<String> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    assert_eq!(ids.len(), KILLS);
    done.store(true, Ordering::Relaxed);
    let pending = monitor.join().unwrap();
    eprintln!("up to {pending} leased keys of killed ADDs at once");
    assert!(
        pending > 0,
        "no ADD was killed between reserve and commit: the test proves nothing"
    );
    // TTL 2 s; etcd checks expiry every 500 ms.
    std::thread::sleep(Duration::from_secs(4));
    let survivors = consistent_attachments(&b, "_shared");
    eprintln!("{} of {KILLS} killed ADDs had committed", survivors.len());
    // What completed is whole; a runtime DELs the attachments whose ADD failed.
    for id in &ids {
        assert_eq!(Call::new("DEL", id, "net1").run(&c).code, 0);
    }
    assert!(b.addresses("_shared").is_empty());
    assert!(b.attachments("_shared").is_empty());
}

#[test]
fn pending_reservation_of_a_killed_add_is_taken_over_by_the_retry() {
    // Timing-sensitive like the heavy tests: it would be starved beside them.
    let _turn = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let b = Backend::etcd();
    let mut c = small_pool(&b);
    c["ipam"]["leaseTTL"] = json!(30);
    // Kill ADDs until one dies between reserve and commit (a pending record
    // remains). The window is the last round trip of an ADD, so kills land
    // at 0.5-1.2x an ADD's duration, measured again every 10 tries.
    let mut rng = TestRng::new(7);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut add_us = 0;
    let mut tries = 0;
    let id = loop {
        assert!(
            Instant::now() < deadline,
            "no ADD was ever caught between reserve and commit in {tries} tries"
        );
        if tries % 10 == 0 {
            add_us = add_duration_us(&c, "timing").max(1000);
        }
        tries += 1;
        let id = format!("p{}", rng.below(1 << 40));
        let mut child = Call::new("ADD", &id, "net1").spawn(&c);
        let delay = add_us / 2 + rng.below(add_us * 7 / 10);
        std::thread::sleep(Duration::from_micros(delay));
        let _ = child.kill();
        let _ = child.wait();
        let pending = b.attachments("_shared").into_iter().any(|e| e.lease != 0);
        if pending {
            break id;
        }
        Call::new("DEL", &id, "net1").run(&c);
    };
    eprintln!("caught a pending reservation in try {tries}");
    // The runtime retries the same attachment well within the 30 s TTL.
    let out = Call::new("ADD", &id, "net1").run(&c);
    assert_eq!(out.ips().len(), 2);
    let stored = consistent_attachments(&b, "_shared");
    assert_eq!(stored.len(), 1);
}
