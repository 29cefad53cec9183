//! Harness for tests that need root: uniquely named network namespaces that
//! are deleted even when a test panics, veth wiring, and namespace snapshots
//! for "nothing changed" assertions.

pub mod containerd;
pub mod meta;
pub mod topology;

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Fails the test (never skips it) when not running as root.
pub fn require_root() {
    assert!(
        nix_is_root(),
        "netns tests need root (network namespaces); run them through scripts/test.sh"
    );
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// A network namespace made with `ip netns add`, deleted on drop.
pub struct TestNetns {
    name: String,
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl TestNetns {
    /// Creates `mf-<tag>-<pid>-<n>`.
    pub fn new(tag: &str) -> Self {
        require_root();
        let name = format!(
            "mf-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = TestNetns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its path, as a runtime passes it in CNI_NETNS.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    /// `ip -n NAME args...`; panics on failure, returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let out = run(Command::new("ip").arg("-n").arg(&self.name).args(args));
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// `ip -n NAME -j args...`, parsed.
    pub fn ip_json(&self, args: &[&str]) -> Value {
        let out = run(Command::new("ip")
            .arg("-n")
            .arg(&self.name)
            .arg("-j")
            .args(args));
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Array(Vec::new()))
    }

    /// `ip netns exec NAME cmd...` (status not checked).
    pub fn exec(&self, cmd: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd)
            .output()
            .unwrap_or_else(|e| panic!("exec {cmd:?} in {}: {e}", self.name))
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A veth pair with `a_name` in `a` and `b_name` in `b`, both up.
pub fn veth_pair(a: &TestNetns, a_name: &str, b: &TestNetns, b_name: &str) {
    a.ip(&[
        "link",
        "add",
        a_name,
        "type",
        "veth",
        "peer",
        "name",
        b_name,
        "netns",
        b.name(),
    ]);
    a.ip(&["link", "set", a_name, "up"]);
    b.ip(&["link", "set", b_name, "up"]);
}

/// Waits (up to 5 s) until no address is tentative: the kernel adds an IPv6
/// link-local address and its local route only once DAD is done, so a
/// snapshot taken earlier would differ from a later one with no change made.
pub fn settle(ns: &TestNetns) {
    for _ in 0..250 {
        if ns
            .ip(&["-6", "addr", "show", "tentative"])
            .trim()
            .is_empty()
        {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("addresses in {} still tentative after 5 s", ns.name());
}

/// Links (name, kind, MAC, MTU, flags, master), addresses and routes of every
/// table, without counters or lifetimes: equal snapshots mean the netns is
/// as it was.
pub fn snapshot(ns: &TestNetns) -> String {
    settle(ns);
    let mut out = String::new();
    for l in ns
        .ip_json(&["-d", "link", "show"])
        .as_array()
        .into_iter()
        .flatten()
    {
        out.push_str(&format!(
            "link {} kind={} mac={} mtu={} flags={} link={} master={}\n",
            l["ifname"].as_str().unwrap_or(""),
            l["linkinfo"]["info_kind"].as_str().unwrap_or("-"),
            l["address"].as_str().unwrap_or("-"),
            l["mtu"],
            l["flags"],
            l["link"].as_str().unwrap_or("-"),
            l["master"].as_str().unwrap_or("-"),
        ));
    }
    for l in ns
        .ip_json(&["addr", "show"])
        .as_array()
        .into_iter()
        .flatten()
    {
        for a in l["addr_info"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "addr {} {}/{} scope={}\n",
                l["ifname"].as_str().unwrap_or(""),
                a["local"].as_str().unwrap_or(""),
                a["prefixlen"],
                a["scope"].as_str().unwrap_or("")
            ));
        }
    }
    for fam in ["-4", "-6"] {
        let routes = ns.ip(&[fam, "route", "show", "table", "all"]);
        let mut lines: Vec<&str> = routes.lines().map(str::trim).collect();
        lines.sort();
        for r in lines {
            out.push_str(&format!("route {fam} {r}\n"));
        }
    }
    out
}

/// Runs `f` on a new thread that has entered `ns` (network namespace only),
/// so that every process and thread it starts lives there; a panic in `f`
/// is the caller's panic.
pub fn in_netns<T: Send>(ns: &TestNetns, f: impl FnOnce() -> T + Send) -> T {
    let path = ns.path();
    std::thread::scope(|s| {
        let h = s.spawn(move || {
            let file = std::fs::File::open(&path)
                .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("setns {}: {e}", path.display()));
            f()
        });
        h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}
