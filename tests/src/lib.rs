//! Runs the built plugin binaries exactly as a runtime does: `CNI_*`
//! environment, config on stdin, result or error JSON on stdout.
//! Used by the unprivileged tests here, by `netns-tests` and the IPAM tests;
//! [`etcd`] runs a real etcd server for them and for `bench/`.

pub mod etcd;

use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// The directory holding the workspace's built binaries (`target/<profile>`),
/// found from the test executable's own path (`target/<profile>/deps/...`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps")
        .to_path_buf();
    assert!(
        dir.join("manifold-macvlan").exists(),
        "plugin binaries missing from {}: run `cargo build --workspace --bins` first",
        dir.display()
    );
    dir
}

/// Directory of Debian's reference plugins (`containernetworking-plugins`).
pub const REFERENCE_DIR: &str = "/usr/lib/cni";

/// `CNI_PATH` holding our binaries first, then the reference plugins.
pub fn cni_path() -> String {
    format!("{}:{REFERENCE_DIR}", bin_dir().display())
}

/// What one plugin call printed and how it exited.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit status (non-zero on error).
    pub code: i32,
    /// stdout, parsed when it is JSON.
    pub json: Option<Value>,
    /// stdout, raw.
    pub stdout: String,
    /// stderr, raw.
    pub stderr: String,
}

impl Output {
    /// The CNI error code, panicking with the whole output if the call succeeded.
    pub fn error_code(&self) -> u64 {
        assert_ne!(self.code, 0, "expected an error, got success: {self:?}");
        self.json
            .as_ref()
            .and_then(|j| j.get("code"))
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("error output is not a CNI error: {self:?}"))
    }

    /// The error message.
    pub fn error_msg(&self) -> String {
        self.json
            .as_ref()
            .and_then(|j| j.get("msg"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    }

    /// The result JSON, panicking with the whole output if the call failed.
    pub fn result(&self) -> &Value {
        assert_eq!(self.code, 0, "plugin failed: {self:?}");
        self.json.as_ref().expect("result JSON on stdout")
    }

    /// The `address` of every entry in the result's `ips`.
    pub fn ips(&self) -> Vec<String> {
        self.result()["ips"]
            .as_array()
            .expect("result has ips")
            .iter()
            .map(|i| i["address"].as_str().expect("ip address").to_string())
            .collect()
    }
}

impl From<std::process::Output> for Output {
    fn from(out: std::process::Output) -> Self {
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        Output {
            code: out.status.code().unwrap_or(-1),
            json: serde_json::from_str(&stdout).ok(),
            stdout,
            stderr: String::from_utf8_lossy(&out.stderr).to_string(),
        }
    }
}

/// One plugin call.
#[derive(Debug, Clone)]
pub struct Call {
    /// Binary path.
    pub plugin: PathBuf,
    /// `CNI_*` and other environment variables; only these are set.
    pub env: Vec<(String, String)>,
    /// Optional wrapper (e.g. `ip netns exec host`) to run the plugin inside.
    pub wrapper: Vec<String>,
}

impl Call {
    /// A call of a Manifold binary (`manifold-macvlan`, ...) or, with a path,
    /// of any plugin.
    pub fn new(plugin: &str) -> Self {
        let plugin = if plugin.contains('/') {
            PathBuf::from(plugin)
        } else {
            bin_dir().join(plugin)
        };
        Call {
            plugin,
            env: vec![("CNI_PATH".into(), cni_path())],
            wrapper: Vec::new(),
        }
    }

    /// A call of the binary at `path` with no environment set yet (not even
    /// `CNI_PATH`): for plugins built outside `target/<profile>` lookups.
    pub fn at(path: &str) -> Self {
        Call {
            plugin: PathBuf::from(path),
            env: Vec::new(),
            wrapper: Vec::new(),
        }
    }

    /// Sets an environment variable.
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.retain(|(key, _)| key != k);
        self.env.push((k.to_string(), v.to_string()));
        self
    }

    /// Sets CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS and CNI_IFNAME at once.
    pub fn verb(self, command: &str, container: &str, netns: &str, ifname: &str) -> Self {
        self.env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", ifname)
    }

    /// Runs the plugin inside `ip netns exec NAME`.
    pub fn in_netns(mut self, name: &str) -> Self {
        self.wrapper = ["ip", "netns", "exec", name]
            .iter()
            .map(|s| s.to_string())
            .collect();
        self
    }

    /// Starts it with `stdin` (written on a thread: a plugin may exit before
    /// reading a huge input) without waiting for it.
    pub fn spawn(&self, stdin: &[u8]) -> (Child, std::thread::JoinHandle<()>) {
        let (prog, args): (PathBuf, Vec<String>) = match self.wrapper.split_first() {
            Some((w, rest)) => {
                let mut a = rest.to_vec();
                a.push(self.plugin.display().to_string());
                (PathBuf::from(w), a)
            }
            None => (self.plugin.clone(), Vec::new()),
        };
        let mut child = Command::new(&prog)
            .args(&args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", prog.display()));
        let mut input = child.stdin.take().expect("piped stdin");
        let data = stdin.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = input.write_all(&data);
        });
        (child, writer)
    }

    /// Runs it with `stdin` and collects the output.
    pub fn run(&self, stdin: &[u8]) -> Output {
        let (child, writer) = self.spawn(stdin);
        let out = child.wait_with_output().expect("wait for plugin");
        let _ = writer.join();
        Output::from(out)
    }
}
