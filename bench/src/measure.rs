//! What every benchmark shares: namespaces, timed plugin execs with the
//! plugin's own peak RSS, medians and table formatting.

use nix::sched::{setns, CloneFlags};
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Debian's reference plugins.
pub const REFERENCE_DIR: &str = "/usr/lib/cni";

/// A namespace made with `ip netns add`, deleted on drop.
pub struct Netns(pub String);

impl Netns {
    /// Creates it.
    pub fn new(name: String) -> Self {
        run(&["ip", "netns", "add", &name]);
        Netns(name)
    }

    /// Its bind-mount path.
    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.0)
    }

    /// Moves this (single-threaded) process into it for good, as a runtime
    /// runs plugins from the host netns.
    pub fn enter(&self) {
        let f = std::fs::File::open(self.path()).expect("open netns");
        setns(f, CloneFlags::CLONE_NEWNET).expect("setns");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Deletes namespaces an earlier benchmark left when it failed (release
/// builds abort on panic, so no Drop runs): `mfb` names whose process is gone.
pub fn sweep_stale_namespaces() {
    for e in std::fs::read_dir("/var/run/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(rest) = name.strip_prefix("mfb") else {
            continue;
        };
        let pid: String = rest
            .trim_start_matches(|c: char| c.is_ascii_alphabetic())
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if !pid.is_empty() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
            eprintln!("removed namespace {name} left by an earlier run");
        }
    }
}

/// Runs a set-up command, panicking if it fails.
pub fn run(args: &[&str]) {
    let st = Command::new(args[0])
        .args(&args[1..])
        .status()
        .expect("run command");
    assert!(st.success(), "{args:?} failed");
}

/// Where the workspace's plugin binaries are: next to this benchmark.
pub fn our_dir() -> PathBuf {
    let dir = std::env::current_exe()
        .expect("exe")
        .parent()
        .expect("target dir")
        .to_path_buf();
    assert!(
        dir.join("manifold-macvlan").exists() && dir.join("manifold-ipam").exists(),
        "build first: cargo build --release --bins"
    );
    dir
}

/// One CNI call as a runtime makes it.
pub struct Invocation<'a> {
    /// Plugin binary.
    pub bin: &'a Path,
    /// CNI_COMMAND.
    pub verb: &'a str,
    /// CNI_CONTAINERID.
    pub container: &'a str,
    /// CNI_NETNS.
    pub netns: &'a str,
    /// CNI_IFNAME.
    pub ifname: &'a str,
    /// CNI_PATH.
    pub cni_path: &'a str,
    /// CNI_ARGS.
    pub args: &'a str,
}

/// One measured plugin process.
pub struct Sample {
    /// Spawn to exit.
    pub wall: Duration,
    /// The plugin process's own peak RSS.
    pub max_rss_kb: i64,
    /// What it printed.
    pub stdout: Vec<u8>,
}

/// Execs the plugin with `conf` on stdin; panics if it fails.
// The child is reaped by wait4 below (std's wait cannot report rusage).
#[allow(clippy::zombie_processes)]
pub fn exec(inv: &Invocation, conf: &[u8]) -> Sample {
    let start = Instant::now();
    let mut child = Command::new(inv.bin)
        .env_clear()
        .env("CNI_COMMAND", inv.verb)
        .env("CNI_CONTAINERID", inv.container)
        .env("CNI_NETNS", inv.netns)
        .env("CNI_IFNAME", inv.ifname)
        .env("CNI_PATH", inv.cni_path)
        .env("CNI_ARGS", inv.args)
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
    let pid = child.id() as i32;
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut child.stdout.take().expect("stdout"), &mut out).expect("read");
    let mut status = 0;
    // SAFETY: rusage is plain old data; wait4 fills it for our own child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, which std has not reaped.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let wall = start.elapsed();
    assert_eq!(r, pid, "wait4");
    let st = std::process::ExitStatus::from_raw(status);
    assert!(
        st.success(),
        "{} {} failed: {}",
        inv.bin.display(),
        inv.verb,
        String::from_utf8_lossy(&out)
    );
    Sample {
        wall,
        max_rss_kb: ru.ru_maxrss,
        stdout: out,
    }
}

/// Median of `v` (sorted in place).
pub fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// "met" / "NOT met".
pub fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

/// Medians and peak RSS of one plugin in one scenario.
pub struct Row {
    /// Scenario.
    pub scenario: String,
    /// Plugin (and store).
    pub plugin: String,
    /// ADD median.
    pub add: Duration,
    /// DEL median.
    pub del: Duration,
    /// Peak RSS over every call, KiB.
    pub rss_kb: i64,
}

/// Prints rows as a table.
pub fn print_rows(rows: &[Row]) {
    println!(
        "{:<14} {:<30} {:>12} {:>12} {:>11}",
        "scenario", "plugin", "ADD median", "DEL median", "peak RSS"
    );
    for r in rows {
        println!(
            "{:<14} {:<30} {:>9.2} ms {:>9.2} ms {:>8.1} MB",
            r.scenario,
            r.plugin,
            ms(r.add),
            ms(r.del),
            r.rss_kb as f64 / 1024.0
        );
    }
}

/// Runs ADD+DEL cycles of every `(name, bin, conf)`, interleaved (the first
/// cycle warms caches and is not counted), one [`Row`] each.
pub fn cycles(
    scenario: &str,
    plugins: &[(String, PathBuf, Vec<u8>)],
    n: usize,
    netns: &str,
    cni_path: &str,
) -> Vec<Row> {
    let mut adds = vec![Vec::new(); plugins.len()];
    let mut dels = vec![Vec::new(); plugins.len()];
    let mut rss = vec![0i64; plugins.len()];
    for i in 0..n + 1 {
        for (p, (_, bin, conf)) in plugins.iter().enumerate() {
            let inv = |verb| Invocation {
                bin,
                verb,
                container: "bench",
                netns,
                ifname: "net1",
                cni_path,
                args: "",
            };
            let a = exec(&inv("ADD"), conf);
            let d = exec(&inv("DEL"), conf);
            if i > 0 {
                adds[p].push(a.wall);
                dels[p].push(d.wall);
            }
            rss[p] = rss[p].max(a.max_rss_kb).max(d.max_rss_kb);
        }
    }
    plugins
        .iter()
        .enumerate()
        .map(|(p, (name, _, _))| Row {
            scenario: scenario.to_string(),
            plugin: name.clone(),
            add: median(&mut adds[p]),
            del: median(&mut dels[p]),
            rss_kb: rss[p],
        })
        .collect()
}
