//! A private containerd (Debian's `containerd` 1.6 + `runc`) with its CRI
//! plugin, for the end-to-end lane: its own root, state, sockets, runc root,
//! CNI bin and conf dirs and pod log dirs under one temporary directory, a
//! cgroup parent of its own, and a pause image built here (a static C
//! program packaged as a `docker save` tarball and imported with `ctr`,
//! since nothing can be pulled).
//!
//! Start it from a thread that has entered the test's "host" netns
//! ([`crate::in_netns`]): containerd, its shims and the CNI plugins it runs
//! then live there, so bridges and macvlan masters never touch the machine's
//! own netns. Dropping it removes every sandbox first (shims outlive
//! containerd), then stops containerd by PID, then unmounts and removes what
//! is left of its directories and cgroups.

use manifold_cri::runtime::PodSandboxStatusResponse;
use manifold_cri::{CriClient, Error, Pod};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Image reference of the pause image the harness builds and imports.
pub const PAUSE_IMAGE: &str = "manifold.test/pause:e2e";

/// The pause program: sleeps until a signal, reaping children; exits 0 on SIGINT/SIGTERM.
const PAUSE_C: &str = r#"#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
static void quit(int s) { (void)s; _exit(0); }
static void reap(int s) { (void)s; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
    struct sigaction q = {0}, r = {0};
    q.sa_handler = quit;
    r.sa_handler = reap;
    r.sa_flags = SA_NOCLDSTOP | SA_RESTART;
    sigaction(SIGINT, &q, 0);
    sigaction(SIGTERM, &q, 0);
    sigaction(SIGCHLD, &r, 0);
    for (;;) pause();
}
"#;

/// A running private containerd; see the module documentation.
pub struct Containerd {
    /// Root of everything it owns.
    pub dir: PathBuf,
    /// CRI (and containerd) gRPC socket.
    pub socket: PathBuf,
    /// CNI plugin directory (`CNI_PATH` of every call it makes).
    pub cni_bin: PathBuf,
    /// CNI conf directory it loads the pod network from.
    pub cni_conf: PathBuf,
    /// Where kubelet would keep pod logs (`/var/log/pods`).
    pub pod_logs: PathBuf,
    /// Cgroup parent of every pod (`<this>/pod<uid>`), below each v1 controller.
    pub cgroup_root: String,
    child: Option<Child>,
    /// Whether `/run/containerd` existed before: the shims make
    /// `/run/containerd/s` for their sockets (not configurable in 1.6), and
    /// cleanup removes the directories again if they were ours and are empty.
    run_dir_existed: bool,
}

/// Where containerd 1.6's shims put their sockets, whatever the config says.
const SHIM_RUN_DIR: &str = "/run/containerd";

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sha256_hex(file: &Path) -> String {
    run(Command::new("sha256sum").arg(file))
        .split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_string()
}

impl Containerd {
    /// Makes the directories, links `loopback` and each of `plugins` (name,
    /// binary) into the CNI bin dir, writes `conf` as the pod network's
    /// conflist, starts containerd, waits until CRI reports the network
    /// ready, and imports the pause image. Panics (the test fails) when
    /// any of that does not work.
    pub fn start(tag: &str, plugins: &[(&str, PathBuf)], conf: &Value) -> Self {
        crate::require_root();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("mf-cri-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut c = Containerd {
            socket: dir.join("containerd.sock"),
            cni_bin: dir.join("cni/bin"),
            cni_conf: dir.join("cni/net.d"),
            pod_logs: dir.join("pods"),
            cgroup_root: format!("/manifold-cri-{tag}-{}-{n}", std::process::id()),
            dir,
            child: None,
            run_dir_existed: Path::new(SHIM_RUN_DIR).exists(),
        };
        for d in [&c.cni_bin, &c.cni_conf, &c.pod_logs] {
            std::fs::create_dir_all(d).expect("create containerd dirs");
        }
        let mut bins = vec![(
            "loopback",
            PathBuf::from(manifold_tests::REFERENCE_DIR).join("loopback"),
        )];
        bins.extend(plugins.iter().cloned());
        for (name, path) in bins {
            assert!(
                path.exists(),
                "CNI plugin {name}: {} missing",
                path.display()
            );
            std::os::unix::fs::symlink(&path, c.cni_bin.join(name)).expect("link CNI plugin");
        }
        c.write_conf(conf);
        c.write_config();
        let image = c.build_pause_image();
        c.spawn();
        run(Command::new("ctr")
            .arg("--address")
            .arg(&c.socket)
            .args(["-n", "k8s.io", "images", "import"])
            .arg(&image));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let tags = c.client().list_image_tags().expect("ListImages");
            if tags.iter().any(|t| t == PAUSE_IMAGE) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "CRI does not see {PAUSE_IMAGE}: {tags:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        c
    }

    /// Writes the pod network's conflist (the only file in the conf dir).
    pub fn write_conf(&self, conf: &Value) {
        let text = serde_json::to_string_pretty(conf).expect("conf JSON");
        std::fs::write(self.cni_conf.join("10-pod-network.conflist"), text)
            .expect("write conflist");
    }

    fn write_config(&self) {
        let d = self.dir.display();
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # This VM lacks CAP_SYS_RESOURCE: without this, runc fails every sandbox.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{d}/runc"

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{bin}"
    conf_dir = "{conf}"
    max_conf_num = 1
"#,
            sock = self.socket.display(),
            bin = self.cni_bin.display(),
            conf = self.cni_conf.display(),
        );
        std::fs::write(self.dir.join("config.toml"), config).expect("write config.toml");
    }

    /// Builds the static pause binary and packages it as a `docker save`
    /// archive (manifest.json, image config, one layer); returns its path.
    fn build_pause_image(&self) -> PathBuf {
        let work = self.dir.join("pause-image");
        let rootfs = work.join("rootfs");
        let archive = work.join("archive");
        std::fs::create_dir_all(&rootfs).expect("create pause rootfs");
        std::fs::create_dir_all(&archive).expect("create pause archive dir");
        std::fs::write(work.join("pause.c"), PAUSE_C).expect("write pause.c");
        run(Command::new("gcc")
            .args(["-static", "-Os", "-s", "-o"])
            .arg(rootfs.join("pause"))
            .arg(work.join("pause.c")));
        let layer = archive.join("layer.tar");
        run(Command::new("tar")
            .args([
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                "--mtime=@0",
                "-cf",
            ])
            .arg(&layer)
            .arg("-C")
            .arg(&rootfs)
            .arg("pause"));
        let diff_id = sha256_hex(&layer);
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": ["/pause"], "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
        });
        std::fs::write(archive.join("config.json"), config.to_string()).expect("write config");
        let config_hex = sha256_hex(&archive.join("config.json"));
        std::fs::rename(
            archive.join("config.json"),
            archive.join(format!("{config_hex}.json")),
        )
        .expect("rename config");
        let manifest = json!([{
            "Config": format!("{config_hex}.json"),
            "RepoTags": [PAUSE_IMAGE],
            "Layers": ["layer.tar"],
        }]);
        std::fs::write(archive.join("manifest.json"), manifest.to_string())
            .expect("write manifest.json");
        let tarball = work.join("pause.tar");
        run(Command::new("tar")
            .arg("-cf")
            .arg(&tarball)
            .arg("-C")
            .arg(&archive)
            .args(["manifest.json", &format!("{config_hex}.json"), "layer.tar"]));
        tarball
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Starts the containerd process and waits (up to 30 s) until CRI answers
    /// and reports `NetworkReady`.
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("containerd.log"))
            .expect("open containerd.log");
        let child = Command::new("containerd")
            // The plugins it runs inherit its environment: no node-wide
            // manifold-ipam file of the machine may leak into the test.
            .env("MANIFOLD_IPAM_CONFIG", "")
            .arg("--config")
            .arg(self.dir.join("config.toml"))
            .args(["--log-level", "info"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start containerd (Debian package containerd)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("containerd exited with {status}:\n{}", self.log_tail());
            }
            if self.socket.exists() {
                match CriClient::connect(&self.socket).and_then(|mut c| c.network_ready()) {
                    Ok(true) => return,
                    Ok(false) => last = "NetworkReady is false".into(),
                    Err(e) => last = e.to_string(),
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "containerd not ready after 30 s ({last}):\n{}",
            self.log_tail()
        );
    }

    /// Stops the containerd process (SIGTERM, SIGKILL after 10 s) and no
    /// sandbox: shims and pause processes keep running.
    fn stop_process(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts containerd (same config and state) with its sandboxes running,
    /// as a node's runtime upgrade or crash does.
    pub fn restart(&mut self) {
        self.stop_process();
        self.spawn();
    }

    /// A new CRI client (one per thread).
    pub fn client(&self) -> CriClient {
        CriClient::connect(&self.socket)
            .unwrap_or_else(|e| panic!("CRI client: {e}\n{}", self.log_tail()))
    }

    /// RunPodSandbox for `pod` as kubelet sends it (creating its log
    /// directory first, as kubelet does); returns the sandbox ID or the
    /// runtime's error, and how long the call took.
    pub fn run_pod(&self, cri: &mut CriClient, pod: &Pod) -> (Result<String, Error>, Duration) {
        let config = pod.sandbox_config(&self.pod_logs, &self.cgroup_root);
        std::fs::create_dir_all(&config.log_directory).expect("create pod log dir");
        let t = Instant::now();
        let r = cri.run_pod_sandbox(config);
        (r, t.elapsed())
    }

    /// StopPodSandbox then RemovePodSandbox, as kubelet does when a pod goes.
    pub fn remove_pod(&self, cri: &mut CriClient, id: &str) {
        cri.stop_pod_sandbox(id)
            .unwrap_or_else(|e| panic!("StopPodSandbox {id}: {e}\n{}", self.log_tail()));
        cri.remove_pod_sandbox(id)
            .unwrap_or_else(|e| panic!("RemovePodSandbox {id}: {e}\n{}", self.log_tail()));
    }

    /// Netns files containerd holds (it keeps them under its state dir).
    pub fn netns_files(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut stack = vec![self.dir.join("state")];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() && !p.is_symlink() {
                    stack.push(p);
                } else if d.file_name().is_some_and(|n| n == "netns") {
                    found.push(p);
                }
            }
        }
        found
    }

    /// Mount points under its directory (sandbox rootfs, netns, shm).
    pub fn mounts(&self) -> Vec<String> {
        let prefix = format!("{}/", self.dir.display());
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&prefix))
            .map(str::to_string)
            .collect()
    }

    /// PIDs of the runc shims serving this containerd.
    pub fn shims(&self) -> Vec<u32> {
        let sock = self.socket.display().to_string();
        let mut pids = Vec::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let is_shim = args
                .first()
                .is_some_and(|a| a.ends_with(b"containerd-shim-runc-v2"));
            if is_shim
                && args
                    .windows(2)
                    .any(|w| w[0] == b"-address" && w[1] == sock.as_bytes())
            {
                pids.push(pid);
            }
        }
        pids
    }

    /// The cgroup directories left below [`Self::cgroup_root`].
    pub fn cgroups(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for ctrl in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let mut stack = vec![ctrl.path().join(self.cgroup_root.trim_start_matches('/'))];
            while let Some(d) = stack.pop() {
                if d.is_dir() {
                    for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                        if e.path().is_dir() {
                            stack.push(e.path());
                        }
                    }
                    found.push(d);
                }
            }
        }
        found
    }

    /// Checks that nothing of any sandbox is left: no sandbox known to CRI,
    /// no netns file, no mount under its directory, no shim (waiting up to
    /// 10 s for shims to exit).
    pub fn assert_no_sandbox_left(&self) {
        let mut cri = self.client();
        let left = cri.list_pod_sandbox().expect("ListPodSandbox");
        assert!(left.is_empty(), "sandboxes left: {left:?}");
        assert!(
            self.netns_files().is_empty(),
            "netns left: {:?}",
            self.netns_files()
        );
        assert!(self.mounts().is_empty(), "mounts left: {:?}", self.mounts());
        // Shims exit asynchronously once their last task is deleted.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.shims().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(self.shims().is_empty(), "shims left: {:?}", self.shims());
    }
}

/// The verbose `info` of a sandbox status, parsed (containerd's JSON: `pid`,
/// `runtimeSpec`, `cniResult`, ...).
pub fn sandbox_info(status: &PodSandboxStatusResponse) -> Value {
    status
        .info
        .get("info")
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null)
}

/// The network namespace path of a sandbox, from its runtime spec.
pub fn sandbox_netns(status: &PodSandboxStatusResponse) -> PathBuf {
    let info = sandbox_info(status);
    info["runtimeSpec"]["linux"]["namespaces"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["type"] == "network")
        .and_then(|n| n["path"].as_str())
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no network namespace in sandbox info {info}"))
}

/// `ip -j args...` run inside the netns at `path`, parsed.
pub fn ip_in(path: &Path, args: &[&str]) -> Value {
    let out = run(Command::new("nsenter")
        .arg(format!("--net={}", path.display()))
        .args(["ip", "-j"])
        .args(args));
    serde_json::from_str(&out).unwrap_or(Value::Array(Vec::new()))
}

impl Containerd {
    /// Removes every sandbox, stops containerd, and checks its directory and
    /// cgroups are gone (what dropping it does, plus the checks).
    pub fn shutdown(mut self) {
        self.cleanup();
        assert!(self.shims().is_empty(), "shims left: {:?}", self.shims());
        assert!(self.mounts().is_empty(), "mounts left: {:?}", self.mounts());
        assert!(
            self.cgroups().is_empty(),
            "cgroups left: {:?}",
            self.cgroups()
        );
        assert!(!self.dir.exists(), "{} left", self.dir.display());
    }

    fn cleanup(&mut self) {
        if self.child.is_some() {
            if let Ok(mut cri) = CriClient::connect(&self.socket) {
                for s in cri.list_pod_sandbox().unwrap_or_default() {
                    let _ = cri.stop_pod_sandbox(&s.id);
                    let _ = cri.remove_pod_sandbox(&s.id);
                }
            }
        }
        self.stop_process();
        for pid in self.shims() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let mut mounts = self.mounts();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = Command::new("umount").args(["-l", &m]).status();
        }
        let mut cgroups = self.cgroups();
        cgroups.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
        for d in cgroups {
            let _ = std::fs::remove_dir(d);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        if !self.run_dir_existed {
            let _ = std::fs::remove_dir(Path::new(SHIM_RUN_DIR).join("s"));
            let _ = std::fs::remove_dir(SHIM_RUN_DIR);
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.cleanup();
    }
}
