//! `manifold-bench`: ADD+DEL cycles of manifold-macvlan against Debian's
//! reference `macvlan`, both with the reference host-local IPAM, IPv4 and
//! dual-stack, interleaved in one run. Prints medians, ratios and peak RSS.
//!
//! Usage (root): `cargo run --release -p manifold-bench -- [--cycles N]`.
//! Every call is a real process exec with the CNI environment and stdin, as a
//! runtime makes it; the time is the runtime's view (spawn to exit) and the
//! peak RSS is the plugin process's own (`wait4` rusage, host-local excluded).

use nix::sched::{setns, CloneFlags};
use serde_json::{json, Value};
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const REFERENCE_DIR: &str = "/usr/lib/cni";

/// A namespace made with `ip netns add`, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(name: String) -> Self {
        run(&["ip", "netns", "add", &name]);
        Netns(name)
    }
    fn path(&self) -> String {
        format!("/var/run/netns/{}", self.0)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn run(args: &[&str]) {
    let st = Command::new(args[0])
        .args(&args[1..])
        .status()
        .expect("run command");
    assert!(st.success(), "{args:?} failed");
}

/// One measured plugin process.
struct Sample {
    wall: Duration,
    max_rss_kb: i64,
}

// The child is reaped by wait4 below (std's wait cannot report rusage).
#[allow(clippy::zombie_processes)]
fn exec_plugin(bin: &Path, verb: &str, netns: &str, cni_path: &str, conf: &[u8]) -> Sample {
    let start = Instant::now();
    let mut child = Command::new(bin)
        .env_clear()
        .env("CNI_COMMAND", verb)
        .env("CNI_CONTAINERID", "bench")
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "net1")
        .env("CNI_PATH", cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn plugin");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(conf)
        .expect("write conf");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut child.stdout.take().expect("stdout"), &mut out).expect("read");
    let mut status = 0;
    // SAFETY: rusage is plain old data; wait4 fills it for our own child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // std reaps children without reporting rusage, so wait4 directly.
    let r = unsafe { libc::wait4(pid.as_raw(), &mut status, 0, &mut ru) };
    let wall = start.elapsed();
    assert_eq!(r, pid.as_raw(), "wait4");
    let st = std::process::ExitStatus::from_raw(status);
    assert!(
        st.success(),
        "{} {verb} failed: {}",
        bin.display(),
        String::from_utf8_lossy(&out)
    );
    Sample {
        wall,
        max_rss_kb: ru.ru_maxrss,
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Row {
    scenario: &'static str,
    plugin: &'static str,
    add: Duration,
    del: Duration,
    rss_kb: i64,
}

fn main() {
    let cycles: usize = std::env::args()
        .skip_while(|a| a != "--cycles")
        .nth(1)
        .map(|s| s.parse().expect("--cycles N"))
        .unwrap_or(30);
    let ours_dir = std::env::current_exe()
        .expect("exe")
        .parent()
        .expect("target dir")
        .to_path_buf();
    let ours = ours_dir.join("manifold-macvlan");
    assert!(ours.exists(), "build first: cargo build --release --bins");
    let reference = PathBuf::from(REFERENCE_DIR).join("macvlan");
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
    // Plugins run in the host netns, as under a runtime: enter it for good
    // (this process is single-threaded and exits when done).
    let f = std::fs::File::open(host.path()).expect("open host netns");
    setns(f, CloneFlags::CLONE_NEWNET).expect("setns host");
    let data_dir = std::env::temp_dir().join(format!("{tag}-ipam"));

    let scenarios: [(&str, Value); 2] = [
        ("ipv4", json!([[{"subnet": "10.200.0.0/16"}]])),
        (
            "dual-stack",
            json!([[{"subnet": "10.201.0.0/16"}], [{"subnet": "fd20:1::/64"}]]),
        ),
    ];
    let mut rows = Vec::new();
    for (scenario, ranges) in scenarios {
        let conf = |t: &str| {
            json!({"cniVersion": "1.0.0", "name": format!("bench-{scenario}"), "type": t, "master": "master0",
                   "ipam": {"type": "host-local", "ranges": ranges, "dataDir": data_dir.display().to_string()}})
            .to_string()
            .into_bytes()
        };
        let plugins = [
            ("manifold-macvlan", ours.clone(), conf("manifold-macvlan")),
            ("macvlan (reference)", reference.clone(), conf("macvlan")),
        ];
        let mut adds = [Vec::new(), Vec::new()];
        let mut dels = [Vec::new(), Vec::new()];
        let mut rss = [0i64; 2];
        for i in 0..cycles + 1 {
            for (p, (_, bin, c)) in plugins.iter().enumerate() {
                let a = exec_plugin(bin, "ADD", &pod.path(), &cni_path, c);
                let d = exec_plugin(bin, "DEL", &pod.path(), &cni_path, c);
                if i > 0 {
                    // the first cycle warms caches for both
                    adds[p].push(a.wall);
                    dels[p].push(d.wall);
                }
                rss[p] = rss[p].max(a.max_rss_kb).max(d.max_rss_kb);
            }
        }
        for (p, (name, _, _)) in plugins.iter().enumerate() {
            rows.push(Row {
                scenario,
                plugin: name,
                add: median(&mut adds[p]),
                del: median(&mut dels[p]),
                rss_kb: rss[p],
            });
        }
    }
    let _ = std::fs::remove_dir_all(&data_dir);

    println!("manifold-macvlan vs reference macvlan (both with reference host-local IPAM), {cycles} ADD+DEL cycles each, interleaved");
    println!(
        "{:<12} {:<22} {:>12} {:>12} {:>14}",
        "scenario", "plugin", "ADD median", "DEL median", "peak RSS"
    );
    for r in &rows {
        println!(
            "{:<12} {:<22} {:>9.2} ms {:>9.2} ms {:>11.1} MB",
            r.scenario,
            r.plugin,
            ms(r.add),
            ms(r.del),
            r.rss_kb as f64 / 1024.0
        );
    }
    println!();
    for pair in rows.chunks(2) {
        let (o, r) = (&pair[0], &pair[1]);
        println!(
            "{:<12} ratio ours/reference: ADD {:.2}x, DEL {:.2}x",
            o.scenario,
            ms(o.add) / ms(r.add),
            ms(o.del) / ms(r.del)
        );
    }
    let ipv4 = (&rows[0], &rows[1]);
    let dual = &rows[2];
    let max_rss = rows.iter().step_by(2).map(|r| r.rss_kb).max().unwrap_or(0);
    println!();
    println!(
        "targets: ADD <= 0.4x reference: {}",
        verdict(ms(ipv4.0.add) / ms(ipv4.1.add) <= 0.4 && ms(dual.add) / ms(rows[3].add) <= 0.4)
    );
    println!(
        "         dual-stack ADD < 10 ms:  {}",
        verdict(ms(dual.add) < 10.0)
    );
    println!(
        "         peak RSS < 8 MB:         {}",
        verdict(max_rss < 8 * 1024)
    );
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}
