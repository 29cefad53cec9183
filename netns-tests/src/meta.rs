//! A lab for the `manifold` meta-plugin: the standard [`Topology`] plus a
//! host bridge for the reference `bridge` default network, a `confDir` with
//! NAD manifests, a cache dir and a manifold-ipam local store, all in the
//! topology's scratch directory.

use crate::topology::{Topology, MASTER};
use crate::TestNetns;
use manifold_tests::{Call, Output};
use serde_json::{json, Value};
use std::path::PathBuf;

/// The bridge the reference `bridge` default network plugs pods into (host netns).
pub const BRIDGE: &str = "mfbr0";
/// One underlay (a veth to the wire netns) per extra network, so each is
/// its own L2 segment as VLANs or NICs would make them.
pub const UNDERLAYS: [&str; 5] = ["mfu1", "mfu2", "mfu3", "mfu4", "mfu5"];
/// Kubernetes namespace of the test pods.
pub const POD_NS: &str = "mfmns";

/// Topology + manifold directories.
pub struct MetaLab {
    /// Host, wire and scratch dir.
    pub t: Topology,
    /// `confDir`.
    pub conf_dir: PathBuf,
    /// `cniDir`.
    pub cni_dir: PathBuf,
    /// manifold-ipam `dataDir`.
    pub ipam_dir: PathBuf,
}

impl MetaLab {
    /// Builds the topology, the extra underlays and a bridge (fixed MAC, no
    /// IPv6 link-local, one permanent port, so that it looks the same before
    /// the first and after the last pod).
    pub fn new(tag: &str) -> Self {
        let t = Topology::new(tag);
        t.host.ip(&["link", "add", BRIDGE, "type", "bridge"]);
        t.host.ip(&["link", "set", BRIDGE, "addrgenmode", "none"]);
        t.host
            .ip(&["link", "set", BRIDGE, "address", "02:00:00:00:0f:01"]);
        t.host.ip(&["link", "set", BRIDGE, "up"]);
        // A permanent port: the bridge has carrier before, during and after the test.
        crate::veth_pair(&t.host, "mfbrp0", &t.wire, "wirebr");
        t.host.ip(&["link", "set", "mfbrp0", "master", BRIDGE]);
        for (i, m) in UNDERLAYS.iter().enumerate() {
            crate::veth_pair(&t.host, m, &t.wire, &format!("wire{}", i + 1));
        }
        let conf_dir = t.dir.join("conf");
        let cni_dir = t.dir.join("cache");
        let ipam_dir = t.dir.join("ipam");
        std::fs::create_dir_all(conf_dir.join("attachments").join(POD_NS)).expect("confDir");
        MetaLab {
            t,
            conf_dir,
            cni_dir,
            ipam_dir,
        }
    }

    /// Writes a NAD manifest `<confDir>/attachments/<ns>/<name>.<ext>`;
    /// `config` `None` leaves `spec.config` empty. YAML for `yaml`/`yml`.
    pub fn nad(&self, ns: &str, name: &str, config: Option<&Value>, ext: &str) {
        let dir = self.conf_dir.join("attachments").join(ns);
        std::fs::create_dir_all(&dir).expect("NAD dir");
        let config = config.map(|c| serde_json::to_string_pretty(c).unwrap());
        let body = if ext == "json" {
            json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                   "metadata": {"name": name, "namespace": ns},
                   "spec": config.map(|c| json!({"config": c})).unwrap_or(json!({}))})
            .to_string()
        } else {
            let spec = match config {
                Some(c) => format!(
                    "spec:\n  config: |\n{}\n",
                    c.lines()
                        .map(|l| format!("    {l}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
                None => "spec: {}\n".to_string(),
            };
            format!("apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata:\n  name: {name}\n  namespace: {ns}\n{spec}")
        };
        std::fs::write(dir.join(format!("{name}.{ext}")), body).expect("write NAD");
    }

    /// Writes a conf or conflist file into `confDir`.
    pub fn conf_file(&self, file: &str, conf: &Value) {
        std::fs::write(self.conf_dir.join(file), conf.to_string()).expect("write conf");
    }

    /// manifold-ipam dual-stack section over this lab's store.
    pub fn manifold_ipam(&self, v4: &str, v6: &str) -> Value {
        json!({"type": "manifold-ipam", "dataDir": self.ipam_dir.display().to_string(),
               "ipRanges": [{"range": v4}, {"range": v6}]})
    }

    /// host-local dual-stack section (gateways `.1` / `::1`, default routes when asked).
    pub fn host_local(&self, v4: &str, v6: &str, default_routes: bool) -> Value {
        let routes = if default_routes {
            json!([{"dst": "0.0.0.0/0"}, {"dst": "::/0"}])
        } else {
            json!([])
        };
        self.t
            .host_local(json!([[{"subnet": v4}], [{"subnet": v6}]]), routes)
    }

    /// Writes the default networks: `podnet` (reference bridge + host-local)
    /// and `podmv` (manifold-macvlan + host-local), both dual-stack with default routes.
    pub fn default_networks(&self) {
        self.conf_file(
            "00-podnet.conflist",
            &json!({"cniVersion": "1.0.0", "name": "podnet", "plugins": [
                {"type": "bridge", "bridge": BRIDGE,
                 "ipam": self.host_local("10.80.0.0/24", "fd80::/64", true)}]}),
        );
        self.conf_file(
            "01-podmv.conflist",
            &json!({"cniVersion": "1.1.0", "name": "podmv", "plugins": [
                {"type": "manifold-macvlan", "master": MASTER, "mode": "bridge",
                 "ipam": self.host_local("10.80.1.0/24", "fd80:1::/64", true)}]}),
        );
    }

    /// Writes the five extra networks `ext-a`..`ext-e` (all dual-stack, on
    /// `mfu1`..`mfu5`):
    /// a: manifold-macvlan + manifold-ipam (YAML); b: reference macvlan +
    /// host-local (JSON); c: manifold-macvlan conflist + host-local (.yml);
    /// d: reference macvlan + manifold-ipam (YAML); e: empty spec.config, so
    /// the conf `ext-e` in confDir: manifold-macvlan + static IPAM taking
    /// `ips` and `mac` from the selection.
    pub fn extra_networks(&self) {
        let a = json!({"cniVersion": "1.0.0", "type": "manifold-macvlan", "master": UNDERLAYS[0], "mode": "bridge",
                       "ipam": self.manifold_ipam("10.81.1.0/24", "fd81:1::/64")});
        self.nad(POD_NS, "ext-a", Some(&a), "yaml");
        let b = json!({"cniVersion": "1.0.0", "name": "ext-b", "type": "macvlan", "master": UNDERLAYS[1], "mode": "bridge",
                       "ipam": self.host_local("10.81.2.0/24", "fd81:2::/64", false)});
        self.nad(POD_NS, "ext-b", Some(&b), "json");
        let c = json!({"cniVersion": "1.1.0", "name": "ext-c", "plugins": [
                       {"type": "manifold-macvlan", "master": UNDERLAYS[2], "mode": "bridge",
                        "ipam": self.host_local("10.81.3.0/24", "fd81:3::/64", false)}]});
        self.nad(POD_NS, "ext-c", Some(&c), "yml");
        let d = json!({"cniVersion": "1.0.0", "name": "ext-d", "type": "macvlan", "master": UNDERLAYS[3], "mode": "bridge",
                       "ipam": self.manifold_ipam("10.81.4.0/24", "fd81:4::/64")});
        self.nad(POD_NS, "ext-d", Some(&d), "yaml");
        self.nad(POD_NS, "ext-e", None, "yaml");
        self.conf_file(
            "ext-e.conf",
            &json!({"cniVersion": "1.0.0", "name": "ext-e", "type": "manifold-macvlan", "master": UNDERLAYS[4],
                    "mode": "bridge", "capabilities": {"ips": true, "mac": true}, "ipam": {"type": "static"}}),
        );
    }

    /// The `manifold` config, with `cluster` as clusterNetwork and `extra` fields merged in.
    pub fn manifold_conf(&self, cluster: &str, extra: Value) -> Value {
        let mut c = json!({"cniVersion": "1.1.0", "name": "manifold", "type": "manifold",
            "capabilities": {"io.kubernetes.cri.pod-annotations": true, "portMappings": true},
            "clusterNetwork": cluster,
            "confDir": self.conf_dir.display().to_string(),
            "cniDir": self.cni_dir.display().to_string(),
            "logFile": self.t.dir.join("manifold.log").display().to_string(),
            "logLevel": "debug"});
        for (k, v) in extra.as_object().expect("object") {
            c[k] = v.clone();
        }
        c
    }

    /// The call a runtime makes for pod `pod_name` (namespace [`POD_NS`]).
    pub fn call(&self, verb: &str, id: &str, pod: Option<&TestNetns>, pod_name: &str) -> Call {
        self.t.call("manifold", verb, id, pod, "eth0").env(
            "CNI_ARGS",
            &format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={POD_NS};K8S_POD_NAME={pod_name}"),
        )
    }

    /// ADD with the pod's `k8s.v1.cni.cncf.io/networks` annotation passed as
    /// containerd passes annotations (runtimeConfig).
    pub fn add(&self, conf: &Value, id: &str, pod: &TestNetns, networks: &str) -> Output {
        let mut c = conf.clone();
        c["runtimeConfig"] = json!({"io.kubernetes.cri.pod-annotations":
            {"k8s.v1.cni.cncf.io/networks": networks}});
        self.call("ADD", id, Some(pod), id)
            .run(c.to_string().as_bytes())
    }

    /// DEL (with or without the netns).
    pub fn del(&self, conf: &Value, id: &str, pod: Option<&TestNetns>) -> Output {
        self.call("DEL", id, pod, id)
            .run(conf.to_string().as_bytes())
    }

    /// DEL with the pod's `k8s.v1.cni.cncf.io/networks` annotation in
    /// runtimeConfig, as containerd passes it on DEL too.
    pub fn del_annotated(
        &self,
        conf: &Value,
        id: &str,
        pod: Option<&TestNetns>,
        networks: &str,
    ) -> Output {
        let mut c = conf.clone();
        c["runtimeConfig"] = json!({"io.kubernetes.cri.pod-annotations":
            {"k8s.v1.cni.cncf.io/networks": networks}});
        self.call("DEL", id, pod, id).run(c.to_string().as_bytes())
    }

    /// Addresses manifold-ipam still holds (leak check).
    pub fn manifold_ipam_allocations(&self) -> Vec<String> {
        let mut out = Vec::new();
        for f in std::fs::read_dir(&self.ipam_dir)
            .into_iter()
            .flatten()
            .flatten()
        {
            let p = f.path();
            if p.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let v: Value = serde_json::from_slice(&std::fs::read(&p).expect("read store"))
                .expect("store JSON");
            for k in v["entries"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, _)| k)
            {
                if k.starts_with("addrs/") {
                    out.push(k.clone());
                }
            }
        }
        out
    }

    /// Cached container states.
    pub fn cached(&self) -> Vec<String> {
        std::fs::read_dir(self.cni_dir.join("state"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect()
    }

    /// Everything an attachment could leave behind: IPAM allocations of both
    /// stores and cache entries.
    pub fn leftovers(&self) -> Vec<String> {
        let mut v = self.t.host_local_reservations();
        v.extend(self.manifold_ipam_allocations());
        v.extend(self.cached());
        v
    }
}

/// Names of the links in a netns.
pub fn link_names(ns: &TestNetns) -> Vec<String> {
    ns.ip_json(&["link", "show"])
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| l["ifname"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Pings `addr` from `ns` out of `dev` (three tries of one second).
pub fn ping(ns: &TestNetns, dev: &str, addr: &str) -> bool {
    ns.exec(&["ping", "-c1", "-W1", "-w3", "-I", dev, addr])
        .status
        .success()
}

/// The addresses (without prefix) a result gives interface `ifname`.
pub fn result_addrs(result: &Value, ifname: &str) -> Vec<String> {
    let ifs = result["interfaces"].as_array().expect("interfaces");
    let idx = ifs
        .iter()
        .position(|i| i["name"] == ifname && i.get("sandbox").is_some())
        .unwrap_or_else(|| panic!("{ifname} not in result {result}"));
    result["ips"]
        .as_array()
        .expect("ips")
        .iter()
        .filter(|ip| ip["interface"] == idx)
        .map(|ip| ip["address"].as_str().unwrap().to_string())
        .collect()
}

/// The kube fixture (a fake API server, see `manifold_kube::fixture`)
/// listening on the loopback of a test netns, where the plugin runs. It is
/// stopped from inside that netns too, even when the test panics.
pub struct NetnsApi {
    api: Option<manifold_kube::fixture::ApiFixture>,
    ns: manifold_common::netns::NetNs,
}

impl NetnsApi {
    /// Starts the fixture inside `ns`.
    pub fn start(ns: &TestNetns) -> Self {
        let ns = manifold_common::netns::NetNs::open(&ns.path()).expect("open test netns");
        let api = ns
            .run(manifold_kube::fixture::ApiFixture::start)
            .expect("start fixture in netns");
        NetnsApi { api: Some(api), ns }
    }
}

impl std::ops::Deref for NetnsApi {
    type Target = manifold_kube::fixture::ApiFixture;
    fn deref(&self) -> &Self::Target {
        self.api.as_ref().expect("running")
    }
}

impl Drop for NetnsApi {
    fn drop(&mut self) {
        if let Some(api) = self.api.take() {
            let _ = self.ns.run(move || drop(api));
        }
    }
}
