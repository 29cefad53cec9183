//! The standard test topology: a "host" netns holding a master link (a veth
//! end whose peer sits in a "wire" netns), and pod netns to attach. Plugins
//! run inside the host netns exactly as a runtime on that host would run them.

use crate::{snapshot, veth_pair, TestNetns};
use manifold_tests::{Call, Output};
use serde_json::Value;
use std::path::PathBuf;

/// Name of the master link in the host netns.
pub const MASTER: &str = "master0";

/// Host netns with a master, plus a scratch directory for IPAM state.
pub struct Topology {
    /// The netns the plugins run in.
    pub host: TestNetns,
    /// Peer of the master's veth (the "wire").
    pub wire: TestNetns,
    /// Scratch directory (host-local `dataDir`), removed on drop.
    pub dir: PathBuf,
}

impl Topology {
    /// Builds host + wire with `master0` up in the host netns.
    pub fn new(tag: &str) -> Self {
        crate::require_root();
        let host = TestNetns::new(&format!("{tag}h"));
        let wire = TestNetns::new(&format!("{tag}w"));
        veth_pair(&host, MASTER, &wire, "wire0");
        let dir =
            std::env::temp_dir().join(format!("mf-{tag}-{}-{}", host.name(), std::process::id()));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Topology { host, wire, dir }
    }

    /// A new pod netns.
    pub fn pod(&self, tag: &str) -> TestNetns {
        TestNetns::new(tag)
    }

    /// host-local IPAM section over this topology's data dir.
    pub fn host_local(&self, ranges: Value, routes: Value) -> Value {
        serde_json::json!({
            "type": "host-local",
            "ranges": ranges,
            "routes": routes,
            "dataDir": self.dir.join("host-local").display().to_string(),
        })
    }

    /// Addresses host-local still holds for any container (leak check).
    pub fn host_local_reservations(&self) -> Vec<String> {
        let mut found = Vec::new();
        let root = self.dir.join("host-local");
        for net in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(net.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = f.file_name().to_string_lossy().to_string();
                if !name.starts_with("last_reserved_ip") && name != "lock" {
                    found.push(name);
                }
            }
        }
        found
    }

    /// Runs `plugin` (a Manifold name, or a path) inside the host netns.
    pub fn run(
        &self,
        plugin: &str,
        verb: &str,
        container: &str,
        pod: Option<&TestNetns>,
        ifname: &str,
        conf: &Value,
    ) -> Output {
        self.call(plugin, verb, container, pod, ifname)
            .run(conf.to_string().as_bytes())
    }

    /// The call `run` makes, for tests that need to add env (CNI_ARGS).
    pub fn call(
        &self,
        plugin: &str,
        verb: &str,
        container: &str,
        pod: Option<&TestNetns>,
        ifname: &str,
    ) -> Call {
        let netns = pod
            .map(|p| p.path().display().to_string())
            .unwrap_or_default();
        Call::new(plugin)
            .verb(verb, container, &netns, ifname)
            .in_netns(self.host.name())
    }

    /// ADDs `net1` to a fresh pod, captures what a runtime and the pod see,
    /// then DELs it: for side-by-side comparisons with a reference plugin
    /// (run one after the other, as two links cannot share a MAC or address
    /// on one master).
    pub fn attach_and_capture(&self, plugin: &str, conf: &Value) -> Attached {
        let pod = self.pod("cap");
        let mut result = self
            .run(plugin, "ADD", "cap", Some(&pod), "net1", conf)
            .result()
            .clone();
        result["interfaces"][0]["sandbox"] = Value::from("<sandbox>");
        let l = link_details(&pod, "net1").expect("net1 in pod");
        let link = serde_json::json!({"mtu": l["mtu"], "address": l["address"], "operstate": l["operstate"], "linkinfo": l["linkinfo"]});
        let addresses = addresses(&pod, "net1").into_iter().map(|a| a.0).collect();
        let routes = routes(&pod, "net1");
        let del = self.run(plugin, "DEL", "cap", Some(&pod), "net1", conf);
        assert_eq!(del.code, 0, "{del:?}");
        Attached {
            result,
            link,
            addresses,
            routes,
        }
    }

    /// Snapshot of the host netns (see [`snapshot`]).
    pub fn host_snapshot(&self) -> String {
        snapshot(&self.host)
    }

    /// Snapshot of the host netns once it equals `expected`, or the last one
    /// taken after 10 s. For after a pod netns was deleted: the kernel
    /// destroys the netns, and with it the host ends of its veths, in
    /// deferred work after `ip netns del` returns.
    pub fn host_snapshot_after_netns_teardown(&self, expected: &str) -> String {
        use std::time::{Duration, Instant};
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = self.host_snapshot();
            if now == expected || Instant::now() > deadline {
                return now;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What an attachment looked like, for comparisons (sandbox path masked).
#[derive(Debug, PartialEq)]
pub struct Attached {
    /// Result JSON.
    pub result: Value,
    /// Link MTU, MAC, state and kind details.
    pub link: Value,
    /// Global addresses.
    pub addresses: Vec<String>,
    /// Routes through the link.
    pub routes: Vec<String>,
}

/// The reference plugin binary of that name.
pub fn reference(name: &str) -> String {
    format!("{}/{name}", manifold_tests::REFERENCE_DIR)
}

/// Every CNI version we support.
pub const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// Link details inside a netns, from `ip -d -j link show dev NAME`.
pub fn link_details(ns: &TestNetns, name: &str) -> Option<Value> {
    let out = ns.exec(&["ip", "-d", "-j", "link", "show", "dev", name]);
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v.as_array()?.first().cloned()
}

/// Global addresses on `name` as "addr/prefix" strings, with their flags.
pub fn addresses(ns: &TestNetns, name: &str) -> Vec<(String, Vec<String>)> {
    let v = ns.ip_json(&["addr", "show", "dev", name]);
    let mut out = Vec::new();
    for l in v.as_array().into_iter().flatten() {
        for a in l["addr_info"].as_array().into_iter().flatten() {
            if a["scope"] == "link" {
                continue;
            }
            let mut flags = Vec::new();
            for f in ["tentative", "dadfailed", "nodad"] {
                if a.get(f).and_then(Value::as_bool) == Some(true) {
                    flags.push(f.to_string());
                }
            }
            out.push((
                format!("{}/{}", a["local"].as_str().unwrap_or(""), a["prefixlen"]),
                flags,
            ));
        }
    }
    out
}

/// Routes of both families in the main table, as `ip route` prints them, for
/// routes through `dev`.
pub fn routes(ns: &TestNetns, dev: &str) -> Vec<String> {
    let mut out = Vec::new();
    for fam in ["-4", "-6"] {
        let text = ns.ip(&[fam, "route", "show", "dev", dev]);
        out.extend(
            text.lines()
                .filter(|l| !l.starts_with("fe80::") && !l.starts_with("multicast"))
                .map(|l| format!("{fam} {}", l.trim())),
        );
    }
    out.sort();
    out
}
