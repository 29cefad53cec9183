//! manifold-macvlan against Debian's reference `macvlan`, both configured with
//! `ipam.type: host-local`, IPv4 and dual-stack (issue 2's targets). Ours runs
//! host-local in-process (same files in `dataDir`); the reference execs it.

use crate::measure::{cycles, ms, our_dir, print_rows, run, verdict, Netns, REFERENCE_DIR};
use serde_json::{json, Value};
use std::path::PathBuf;

/// Runs the benchmark and prints its table, ratios and verdicts.
pub fn bench(n: usize) {
    let ours_dir = our_dir();
    let cni_path = format!("{}:{REFERENCE_DIR}", ours_dir.display());
    let tag = format!("mfb{}", std::process::id());
    let host = Netns::new(format!("{tag}h"));
    let wire = Netns::new(format!("{tag}w"));
    let pod = Netns::new(format!("{tag}p"));
    run(&[
        "ip", "-n", &host.0, "link", "add", "master0", "type", "veth", "peer", "name", "wire0",
        "netns", &wire.0,
    ]);
    run(&["ip", "-n", &host.0, "link", "set", "master0", "up"]);
    let data_dir = std::env::temp_dir().join(format!("{tag}-ipam"));
    let scenarios: [(&str, Value); 2] = [
        ("ipv4", json!([[{"subnet": "10.200.0.0/16"}]])),
        (
            "dual-stack",
            json!([[{"subnet": "10.201.0.0/16"}], [{"subnet": "fd20:1::/64"}]]),
        ),
    ];
    // Plugins run in the host netns, as under a runtime: a child process
    // enters it so that this process's namespace stays as it was.
    let rows = std::thread::scope(|s| {
        s.spawn(|| {
            host.enter();
            let mut rows = Vec::new();
            for (scenario, ranges) in scenarios {
                let conf = |t: &str| {
                    json!({"cniVersion": "1.0.0", "name": format!("bench-{scenario}"), "type": t,
                           "master": "master0",
                           "ipam": {"type": "host-local", "ranges": ranges,
                                    "dataDir": data_dir.display().to_string()}})
                    .to_string()
                    .into_bytes()
                };
                let plugins = [
                    (
                        "manifold-macvlan".to_string(),
                        ours_dir.join("manifold-macvlan"),
                        conf("manifold-macvlan"),
                    ),
                    (
                        "macvlan (reference)".to_string(),
                        PathBuf::from(REFERENCE_DIR).join("macvlan"),
                        conf("macvlan"),
                    ),
                ];
                rows.extend(cycles(scenario, &plugins, n, &pod.path(), &cni_path));
            }
            rows
        })
        .join()
        .expect("benchmark thread")
    });
    let _ = std::fs::remove_dir_all(&data_dir);

    println!("== manifold-macvlan vs reference macvlan, both with `ipam.type: host-local` (ours in-process, the reference execs it), {n} ADD+DEL cycles each, interleaved");
    print_rows(&rows);
    println!();
    for pair in rows.chunks(2) {
        let (o, r) = (&pair[0], &pair[1]);
        println!(
            "{:<14} ratio ours/reference: ADD {:.2}x, DEL {:.2}x",
            o.scenario,
            ms(o.add) / ms(r.add),
            ms(o.del) / ms(r.del)
        );
    }
    let max_rss = rows.iter().step_by(2).map(|r| r.rss_kb).max().unwrap_or(0);
    let add_ratio_ok = rows.chunks(2).all(|p| ms(p[0].add) / ms(p[1].add) <= 0.4);
    println!();
    println!("targets: ADD <= 0.4x reference:  {}", verdict(add_ratio_ok));
    println!(
        "         dual-stack ADD < 10 ms: {}",
        verdict(ms(rows[2].add) < 10.0)
    );
    println!(
        "         peak RSS < 8 MB:        {}",
        verdict(max_rss < 8 * 1024)
    );
}
