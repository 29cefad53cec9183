//! End to end with a real container runtime: a private containerd 1.6 (CRI
//! plugin, runc, overlayfs) started by each test inside a "host" netns the
//! test made, driven through the CRI API exactly as kubelet drives it
//! (RunPodSandbox / PodSandboxStatus / StopPodSandbox / RemovePodSandbox,
//! pod metadata, labels and annotations), running the CNI conflist under
//! test from its conf dir. Nothing is mocked: containerd, runc, the pause
//! image built here, etcd and the plugins are the real programs.
//!
//! Tests run one at a time (a 2-core machine; each starts its own
//! containerd). Every test checks that nothing is left behind.

use manifold_cri::Pod;
use manifold_netns_tests::containerd::{ip_in, sandbox_info, sandbox_netns, Containerd};
use manifold_netns_tests::{in_netns, TestNetns};
use manifold_tests::etcd::TempDir;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// `SANDBOX_READY` as the wire carries it.
const READY: i32 = manifold_cri::runtime::PodSandboxState::SandboxReady as i32;

/// One containerd at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Waits for the other tests' containerd to be gone (a failed test's panic does not poison the rest).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A Debian reference plugin as (name, binary) for [`Containerd::start`].
fn reference(name: &str) -> (&str, PathBuf) {
    (
        name,
        PathBuf::from(manifold_tests::REFERENCE_DIR).join(name),
    )
}

/// Link names in the current netns.
fn links(ns: &TestNetns) -> Vec<String> {
    let mut v: Vec<String> = ns
        .ip_json(&["link", "show"])
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["ifname"].as_str().map(str::to_string))
        .collect();
    v.sort();
    v
}

/// Addresses (`addr/prefix`) of `ifname` in the netns at `path`, without link-local ones.
fn pod_addresses(path: &std::path::Path, ifname: &str) -> Vec<String> {
    let mut v: Vec<String> = ip_in(path, &["addr", "show", "dev", ifname])
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["scope"] == "global")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or(""), a["prefixlen"]))
        .collect();
    v.sort();
    v
}

/// The inode of a namespace file (equal inodes: the same namespace).
fn ns_inode(path: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {path}: {e}"))
        .ino()
}

/// Median, min and max, in milliseconds.
fn stats(samples: &[Duration]) -> (f64, f64, f64) {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    let median = (ms[(n - 1) / 2] + ms[n / 2]) / 2.0;
    (median, ms[0], ms[ms.len() - 1])
}

/// The harness with Debian's reference `bridge` + `host-local` as the pod
/// network: each sandbox gets its own netns with eth0 holding the IP CRI
/// reports, and is removed with nothing left (sandbox, netns, mount, shim,
/// veth, host-local reservation). Prints RunPodSandbox latency.
#[test]
fn reference_bridge_sandboxes_get_netns_and_ip_and_are_removed_cleanly() {
    let _serial = serial();
    let host = TestNetns::new("crib");
    let ipam_dir = TempDir::new("cri-host-local");
    let bridge = format!("mfcb{}", std::process::id() % 100_000);
    let conf = json!({
        "cniVersion": "1.0.0",
        "name": "ref-bridge",
        "plugins": [{
            "type": "bridge",
            "bridge": bridge,
            "isGateway": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": "10.213.0.0/24"}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": ipam_dir.0.display().to_string(),
            }
        }]
    });
    in_netns(&host, || {
        let ctd = Containerd::start(
            "bridge",
            &[reference("bridge"), reference("host-local")],
            &conf,
        );
        let mut cri = ctd.client();
        let (name, version, api) = cri.version().expect("Version");
        assert_eq!((name.as_str(), api.as_str()), ("containerd", "v1"));
        assert!(version.starts_with("1.6"), "{version}");
        let links_before = links(&host);

        let mut latencies = Vec::new();
        let mut remove = Vec::new();
        let mut seen_ips = Vec::new();
        for i in 0..10 {
            let pod = Pod::new("default", &format!("ref-{i}"));
            let (id, took) = ctd.run_pod(&mut cri, &pod);
            let id = id.unwrap_or_else(|e| panic!("RunPodSandbox: {e}"));
            latencies.push(took);
            let st = cri.pod_sandbox_status(&id).expect("PodSandboxStatus");
            let status = st.status.as_ref().expect("status");
            assert_eq!(status.state, READY, "sandbox ready");
            let meta = status.metadata.as_ref().expect("metadata");
            assert_eq!(
                (
                    meta.name.as_str(),
                    meta.namespace.as_str(),
                    meta.uid.as_str()
                ),
                (pod.name.as_str(), "default", pod.uid.as_str())
            );
            let ip = status.network.as_ref().expect("network").ip.clone();
            assert!(ip.starts_with("10.213.0."), "pod IP {ip}");
            assert!(!seen_ips.contains(&ip), "{ip} handed out twice");
            seen_ips.push(ip.clone());
            let netns = sandbox_netns(&st);
            assert!(netns.exists(), "{}", netns.display());
            let pid = sandbox_info(&st)["pid"].as_u64().expect("pause pid");
            assert_eq!(
                ns_inode(&format!("/proc/{pid}/ns/net")),
                ns_inode(&netns.display().to_string()),
                "the pause process runs in the sandbox netns"
            );
            assert_eq!(pod_addresses(&netns, "eth0"), vec![format!("{ip}/24")]);
            let t = std::time::Instant::now();
            ctd.remove_pod(&mut cri, &id);
            remove.push(t.elapsed());
            assert!(!netns.exists(), "netns {} left", netns.display());
        }
        ctd.assert_no_sandbox_left();
        // The bridge plugin makes its bridge on first use and never removes it;
        // every veth is gone.
        let mut want = links_before;
        want.push(bridge.clone());
        want.sort();
        assert_eq!(links(&host), want, "host links");
        let reserved: Vec<_> = std::fs::read_dir(ipam_dir.0.join("ref-bridge"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
            .collect();
        assert!(reserved.is_empty(), "host-local still holds {reserved:?}");
        let (median, min, max) = stats(&latencies);
        println!(
            "LATENCY RunPodSandbox reference bridge+host-local (1 interface): n={} median={median:.1} ms min={min:.1} ms max={max:.1} ms",
            latencies.len()
        );
        let (median, min, max) = stats(&remove);
        println!(
            "LATENCY StopPodSandbox+RemovePodSandbox reference bridge+host-local: n={} median={median:.1} ms min={min:.1} ms max={max:.1} ms",
            remove.len()
        );
        ctd.shutdown();
    });
}

/// Namespace of the test pods and their NADs.
const POD_NS: &str = "telco";
/// The extra networks (NAD names); `EXTRAS[k-1]` is network number k.
const EXTRAS: [&str; 5] = ["ext1", "ext2", "ext3", "ext4", "ext5"];
/// Macvlan master: one end of a veth pair the lab makes in its host netns.
const MASTER: &str = "mfcm0";
/// The other end of the master's veth pair.
const MASTER_PEER: &str = "mfcm0p";
/// Default-network bridge the reference `bridge` plugin makes in the host netns.
const POD_BRIDGE: &str = "mfcbr0";
/// The pod annotation naming the extra networks.
const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";

/// The IPv4 and IPv6 subnets of network number `k` (0: the default network).
fn subnets(k: usize) -> (ipnet::IpNet, ipnet::IpNet) {
    (
        format!("10.214.{k}.0/24").parse().unwrap(),
        format!("fd00:214:{k}::/64").parse().unwrap(),
    )
}

/// A dual-stack manifold-ipam section for network `k` on the lab's etcd.
fn ipam(etcd: &manifold_tests::etcd::Etcd, k: usize) -> Value {
    let (v4, v6) = subnets(k);
    json!({
        "type": "manifold-ipam",
        "ranges": [[{"subnet": v4.to_string(), "gateway": format!("10.214.{k}.1")}], [{"subnet": v6.to_string()}]],
        "etcd": {"endpoints": [etcd.url], "dialTimeout": "2s", "requestTimeout": "5s",
                 "cacheDir": etcd.node_cache_dir()},
        "nodeName": "e2e-node",
    })
}

/// Writes a NetworkAttachmentDefinition manifest as an operator would
/// `kubectl apply` it, at `<confDir>/attachments/<ns>/<name>.yaml`.
fn write_nad(conf_dir: &std::path::Path, name: &str, config: &Value) {
    let dir = conf_dir.join("attachments").join(POD_NS);
    std::fs::create_dir_all(&dir).unwrap();
    let yaml = format!(
        "apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata:\n  name: {name}\n  namespace: {POD_NS}\nspec:\n  config: '{config}'\n"
    );
    std::fs::write(dir.join(format!("{name}.yaml")), yaml).unwrap();
}

/// Everything one Manifold scenario runs on, built inside the lab's host
/// netns: a real etcd on its loopback, the macvlan master, NAD manifests
/// (ext1..ext5: manifold-macvlan with dual-stack manifold-ipam; `broken`:
/// a macvlan whose master does not exist) and the default network's
/// conflist (reference bridge + manifold-ipam) in manifold's `confDir`, and
/// a containerd whose pod network is the `manifold` conflist. Dropped in
/// field order: containerd (removing its sandboxes through CNI DEL) first.
struct Lab<'a> {
    ctd: Containerd,
    etcd: manifold_tests::etcd::Etcd,
    host: &'a TestNetns,
    conf_dir: TempDir,
    cache_dir: TempDir,
}

impl<'a> Lab<'a> {
    /// Builds the lab in `host` (the calling thread must have entered it).
    fn new(host: &'a TestNetns, tag: &str) -> Self {
        let etcd = manifold_tests::etcd::Etcd::start();
        host.ip(&[
            "link",
            "add",
            MASTER,
            "type",
            "veth",
            "peer",
            "name",
            MASTER_PEER,
        ]);
        host.ip(&["link", "set", MASTER, "up"]);
        host.ip(&["link", "set", MASTER_PEER, "up"]);
        let conf_dir = TempDir::new("cri-manifold-conf");
        let cache_dir = TempDir::new("cri-manifold-cache");
        let mut pod_ipam = ipam(&etcd, 0);
        pod_ipam["routes"] = json!([{"dst": "0.0.0.0/0"}]);
        let pod_net = json!({
            "cniVersion": "1.0.0",
            "name": "pod-net",
            "plugins": [{"type": "bridge", "bridge": POD_BRIDGE, "isGateway": true, "ipam": pod_ipam}],
        });
        std::fs::write(conf_dir.0.join("pod-net.conflist"), pod_net.to_string()).unwrap();
        for (i, name) in EXTRAS.iter().enumerate() {
            let c = json!({
                "cniVersion": "1.0.0",
                "name": name,
                "type": "manifold-macvlan",
                "master": MASTER,
                "mode": "bridge",
                "capabilities": {"ips": true, "mac": true},
                "ipam": ipam(&etcd, i + 1),
            });
            write_nad(&conf_dir.0, name, &c);
        }
        let broken = json!({
            "cniVersion": "1.0.0",
            "name": "broken",
            "type": "manifold-macvlan",
            "master": "mfcnomaster",
            "ipam": ipam(&etcd, 9),
        });
        write_nad(&conf_dir.0, "broken", &broken);
        let conf = json!({
            "cniVersion": "1.0.0",
            "name": "manifold-e2e",
            "plugins": [{
                "type": "manifold",
                "capabilities": {"io.kubernetes.cri.pod-annotations": true},
                "clusterNetwork": "pod-net",
                "confDir": conf_dir.0.display().to_string(),
                "cniDir": cache_dir.0.display().to_string(),
            }],
        });
        let bin = manifold_tests::bin_dir();
        let ctd = Containerd::start(
            tag,
            &[
                ("manifold", bin.join("manifold")),
                ("manifold-macvlan", bin.join("manifold-macvlan")),
                ("manifold-ipam", bin.join("manifold-ipam")),
                reference("bridge"),
            ],
            &conf,
        );
        Lab {
            ctd,
            etcd,
            host,
            conf_dir,
            cache_dir,
        }
    }

    /// A pod of [`POD_NS`] asking for the networks of `selections` (the JSON form of the annotation).
    fn pod(&self, name: &str, selections: Value) -> Pod {
        Pod::new(POD_NS, name).annotate(NETWORKS, &selections.to_string())
    }

    /// A pod asking for all five extra networks by name.
    fn full_pod(&self, name: &str) -> Pod {
        self.pod(
            name,
            Value::Array(EXTRAS.iter().map(|n| json!({"name": n})).collect()),
        )
    }

    /// Files in manifold's cache directory.
    fn cache_files(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut stack = vec![self.cache_dir.0.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    stack.push(e.path());
                } else {
                    found.push(e.path());
                }
            }
        }
        found
    }

    /// The network-status manifold cached for a sandbox.
    fn cached_status(&self, id: &str) -> Value {
        let path = self.cache_dir.0.join("state").join(format!("{id}.json"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cache {}: {e}", path.display()));
        let v: Value = serde_json::from_str(&text).unwrap();
        v["networkStatus"].clone()
    }

    /// Every address and attachment record manifold-ipam holds in etcd, as
    /// `(key, owning container ID)`.
    fn held(&self) -> Vec<(String, String)> {
        use manifold_ipam::store::{EtcdConf, StoreConf, DEFAULT_PREFIX};
        let conf = StoreConf::Etcd(EtcdConf {
            endpoints: vec![self.etcd.url.clone()],
            tls: None,
            user: None,
            prefix: DEFAULT_PREFIX.to_string(),
            dial_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            cache_dir: None,
        });
        let mut out = Vec::new();
        for space in conf.spaces().expect("IPAM spaces") {
            let mut store = conf.open(&space).expect("open IPAM space");
            let root = format!("{DEFAULT_PREFIX}/{space}/");
            let span = (root.clone(), manifold_ipam::keys::prefix_end(&root));
            for e in store.kv.scan(span, false).expect("scan IPAM keys") {
                if e.key.contains("/addrs/") || e.key.contains("/attachments/") {
                    let owner = e.value["containerID"]
                        .as_str()
                        .or_else(|| e.value["owner"]["containerID"].as_str())
                        .unwrap_or_default()
                        .to_string();
                    out.push((e.key, owner));
                }
            }
        }
        out
    }

    /// Links of the host netns beyond the lab's own (lo, the master pair and the pod bridge).
    fn extra_host_links(&self) -> Vec<String> {
        links(self.host)
            .into_iter()
            .filter(|l| !["lo", MASTER, MASTER_PEER, POD_BRIDGE].contains(&l.as_str()))
            .collect()
    }

    /// Nothing of any pod is left: no sandbox, netns, mount or shim, no
    /// link in the host netns, no cache file, no IPAM record.
    fn assert_clean(&self) {
        self.ctd.assert_no_sandbox_left();
        assert_eq!(
            self.extra_host_links(),
            Vec::<String>::new(),
            "host links left"
        );
        assert_eq!(
            self.cache_files(),
            Vec::<PathBuf>::new(),
            "cache files left"
        );
        assert_eq!(
            self.held(),
            Vec::<(String, String)>::new(),
            "IPAM records left"
        );
    }

    /// Checks it is clean, then stops containerd (checking its leftovers) and etcd.
    fn shutdown(self) {
        self.assert_clean();
        let Lab { ctd, etcd, .. } = self;
        ctd.shutdown();
        drop(etcd);
    }

    /// Starts `pods` concurrently (one CRI client per pod, as kubelet's pod
    /// workers do): each one's sandbox ID or error, and the call's duration.
    fn run_all(&self, pods: &[Pod]) -> Vec<(Result<String, manifold_cri::Error>, Duration)> {
        std::thread::scope(|s| {
            let handles: Vec<_> = pods
                .iter()
                .map(|p| {
                    s.spawn(move || {
                        let mut cri = self.ctd.client();
                        self.ctd.run_pod(&mut cri, p)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    /// Stops and removes `ids` concurrently.
    fn remove_all(&self, ids: &[String]) {
        std::thread::scope(|s| {
            for id in ids {
                s.spawn(move || {
                    let mut cri = self.ctd.client();
                    self.ctd.remove_pod(&mut cri, id);
                });
            }
        });
    }
}

/// Runs `f` on a fresh lab in a new host netns, then checks that nothing is
/// left and tears the lab down.
fn with_lab(tag: &str, f: impl FnOnce(&mut Lab) + Send) {
    let _serial = serial();
    let host = TestNetns::new(tag);
    in_netns(&host, || {
        let mut lab = Lab::new(&host, tag);
        f(&mut lab);
        lab.shutdown();
    });
}

/// One interface of a pod as seen inside its netns.
#[derive(Debug)]
struct PodIf {
    kind: String,
    mac: String,
    /// Global addresses, `addr/prefix`, sorted.
    addrs: Vec<String>,
}

/// The interfaces of the netns at `path` (without `lo`), by name.
fn pod_interfaces(path: &std::path::Path) -> std::collections::BTreeMap<String, PodIf> {
    ip_in(path, &["-d", "link", "show"])
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["ifname"] != "lo")
        .map(|l| {
            let name = l["ifname"].as_str().unwrap().to_string();
            let i = PodIf {
                kind: l["linkinfo"]["info_kind"].as_str().unwrap_or("-").into(),
                mac: l["address"].as_str().unwrap_or("").into(),
                addrs: pod_addresses(path, &name),
            };
            (name, i)
        })
        .collect()
}

/// Checks a running Manifold pod through CRI, inside its netns and in
/// manifold's cache: READY with its metadata, the pause process in the
/// sandbox netns, eth0 (veth, dual-stack in the default network's subnets,
/// the IPs CRI reports) and net1..net5 (macvlan, dual-stack in network k's
/// subnets), containerd's CNI result holding those six with the same MACs
/// and addresses, the only default route via eth0's gateway, and a
/// network-status in manifold's cache that matches. Returns the netns and
/// interfaces.
fn check_pod(
    lab: &Lab,
    id: &str,
    pod: &Pod,
) -> (PathBuf, std::collections::BTreeMap<String, PodIf>) {
    let mut cri = lab.ctd.client();
    let st = cri.pod_sandbox_status(id).expect("PodSandboxStatus");
    let status = st.status.as_ref().expect("status");
    assert_eq!(status.state, READY, "sandbox {id} ready");
    let meta = status.metadata.as_ref().expect("metadata");
    assert_eq!(
        (
            meta.name.as_str(),
            meta.namespace.as_str(),
            meta.uid.as_str()
        ),
        (pod.name.as_str(), POD_NS, pod.uid.as_str())
    );
    let netns = sandbox_netns(&st);
    let pid = sandbox_info(&st)["pid"].as_u64().expect("pause pid");
    assert_eq!(
        ns_inode(&format!("/proc/{pid}/ns/net")),
        ns_inode(&netns.display().to_string())
    );
    let ifs = pod_interfaces(&netns);
    let names: Vec<&str> = ifs.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["eth0", "net1", "net2", "net3", "net4", "net5"],
        "{ifs:?}"
    );
    for (k, name) in names.iter().enumerate() {
        let i = &ifs[*name];
        assert_eq!(i.kind, if k == 0 { "veth" } else { "macvlan" }, "{name}");
        let (v4, v6) = subnets(k);
        assert_eq!(i.addrs.len(), 2, "{name}: {:?}", i.addrs);
        for a in &i.addrs {
            let net: ipnet::IpNet = a.parse().unwrap();
            assert!(
                net == ipnet::IpNet::new(net.addr(), v4.prefix_len()).unwrap()
                    && v4.contains(&net.addr())
                    || v6.contains(&net.addr()) && net.prefix_len() == 64,
                "{name} has {a}, outside {v4} / {v6}"
            );
        }
    }
    let bare = |a: &String| a.split('/').next().unwrap().to_string();
    let network = status.network.as_ref().expect("network status");
    let eth0: Vec<String> = ifs["eth0"].addrs.iter().map(bare).collect();
    let mut cri_ips = vec![network.ip.clone()];
    cri_ips.extend(network.additional_ips.iter().map(|p| p.ip.clone()));
    cri_ips.sort();
    assert_eq!(cri_ips, eth0, "CRI reports eth0's addresses as the pod IPs");

    let cni = &sandbox_info(&st)["cniResult"]["Interfaces"];
    for name in &names {
        let r = &cni[*name];
        assert_eq!(r["Sandbox"], netns.display().to_string(), "{name} in {cni}");
        assert_eq!(r["Mac"], ifs[*name].mac.as_str(), "{name} in {cni}");
        let mut ips: Vec<String> = r["IPConfigs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["IP"].as_str().map(str::to_string))
            .collect();
        ips.sort();
        let want: Vec<String> = ifs[*name].addrs.iter().map(bare).collect();
        assert_eq!(ips, want, "containerd's CNI result for {name}: {cni}");
    }
    let defaults = ip_in(&netns, &["-4", "route", "show", "default"]);
    let defaults: Vec<(&str, &str)> = defaults
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["gateway"].as_str().unwrap_or(""),
                r["dev"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        defaults,
        [("10.214.0.1", "eth0")],
        "one default route, via eth0"
    );

    let ns = lab.cached_status(id);
    let entries = ns.as_array().expect("network-status list");
    assert_eq!(entries.len(), 6, "{ns}");
    for (k, e) in entries.iter().enumerate() {
        let ifname = e["interface"].as_str().unwrap_or_default();
        assert_eq!(ifname, names[k], "{e}");
        let want_name = if k == 0 {
            "pod-net".to_string()
        } else {
            format!("{POD_NS}/{}", EXTRAS[k - 1])
        };
        assert_eq!(e["name"], want_name.as_str(), "{e}");
        assert_eq!(e["default"].as_bool().unwrap_or(false), k == 0, "{e}");
        assert_eq!(e["mac"], ifs[ifname].mac.as_str(), "{e}");
        let mut ips: Vec<String> = e["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i.as_str().map(str::to_string))
            .collect();
        ips.sort();
        let want: Vec<String> = ifs[ifname].addrs.iter().map(bare).collect();
        assert_eq!(ips, want, "{e}");
    }
    (netns, ifs)
}

/// Scenario 1: pods with the default network and five macvlan extras, all
/// dual-stack from manifold-ipam on etcd, started by containerd from the
/// pod annotation: six interfaces with the expected addresses in the pause
/// process's netns, CRI's pod IPs from eth0, network-status in the cache;
/// removal leaves nothing. Prints RunPodSandbox latency (6 interfaces).
#[test]
fn manifold_pod_gets_default_network_and_five_extras() {
    with_lab("crim1", |lab| {
        let mut cri = lab.ctd.client();
        let mut run = Vec::new();
        let mut remove = Vec::new();
        for i in 0..10 {
            let pod = lab.full_pod(&format!("six-{i}"));
            let (id, took) = lab.ctd.run_pod(&mut cri, &pod);
            let id = id.unwrap_or_else(|e| panic!("RunPodSandbox: {e}"));
            run.push(took);
            let (netns, _) = check_pod(lab, &id, &pod);
            let t = std::time::Instant::now();
            lab.ctd.remove_pod(&mut cri, &id);
            remove.push(t.elapsed());
            assert!(!netns.exists(), "netns {} left", netns.display());
            assert_eq!(
                lab.held(),
                Vec::<(String, String)>::new(),
                "IPAM after {id}"
            );
        }
        let (m, lo, hi) = stats(&run);
        println!(
            "LATENCY RunPodSandbox manifold (eth0 bridge + 5 manifold-macvlan, dual-stack manifold-ipam/etcd): n={} median={m:.1} ms min={lo:.1} ms max={hi:.1} ms",
            run.len()
        );
        let (m, lo, hi) = stats(&remove);
        println!(
            "LATENCY StopPodSandbox+RemovePodSandbox manifold (6 interfaces): n={} median={m:.1} ms min={lo:.1} ms max={hi:.1} ms",
            remove.len()
        );
    });
}

/// Scenario 2: static `ips` and `mac` in the selection reach the delegates
/// (runtimeConfig capabilities) and are honoured; a second pod asking for
/// an address the first holds fails RunPodSandbox cleanly, naming the
/// network, and leaves nothing (no sandbox, link, cache entry or IPAM
/// record of its own) while the first pod is untouched.
#[test]
fn manifold_static_ips_and_mac_are_honoured_and_a_taken_address_fails_cleanly() {
    with_lab("crim2", |lab| {
        let mut cri = lab.ctd.client();
        let a = lab.pod(
            "static-a",
            json!([
                {"name": "ext1"},
                {"name": "ext2", "ips": ["10.214.2.50/24", "fd00:214:2::50/64"], "mac": "02:00:00:02:00:50"},
                {"name": "ext3"},
                {"name": "ext4", "mac": "02:00:00:04:00:04"},
                {"name": "ext5", "ips": ["10.214.5.200/24", "fd00:214:5::c8/64"]},
            ]),
        );
        let id_a = lab
            .ctd
            .run_pod(&mut cri, &a)
            .0
            .unwrap_or_else(|e| panic!("pod a: {e}"));
        let (_, ifs) = check_pod(lab, &id_a, &a);
        assert_eq!(ifs["net2"].addrs, ["10.214.2.50/24", "fd00:214:2::50/64"]);
        assert_eq!(ifs["net2"].mac, "02:00:00:02:00:50");
        assert_eq!(ifs["net4"].mac, "02:00:00:04:00:04");
        assert_eq!(ifs["net5"].addrs, ["10.214.5.200/24", "fd00:214:5::c8/64"]);
        let held_a = lab.held();
        assert!(held_a.iter().all(|(_, owner)| owner == &id_a), "{held_a:?}");
        let cache_a = lab.cache_files();
        let links_a = lab.extra_host_links();

        let b = lab.pod(
            "static-b",
            json!([
                {"name": "ext1"},
                {"name": "ext2", "ips": ["10.214.2.50/24", "fd00:214:2::51/64"]},
                {"name": "ext3"},
            ]),
        );
        let err = lab
            .ctd
            .run_pod(&mut cri, &b)
            .0
            .expect_err("a pod asking for a taken address must not start");
        assert!(
            err.to_string().contains("ext2"),
            "error names the network: {err}"
        );
        let sandboxes = cri.list_pod_sandbox().expect("ListPodSandbox");
        let ids: Vec<&str> = sandboxes.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, [id_a.as_str()], "only pod a has a sandbox");
        assert_eq!(lab.held(), held_a, "IPAM holds exactly pod a's records");
        assert_eq!(lab.cache_files(), cache_a, "cache holds only pod a");
        assert_eq!(
            lab.extra_host_links(),
            links_a,
            "host links as with pod a alone"
        );
        check_pod(lab, &id_a, &a);

        lab.ctd.remove_pod(&mut cri, &id_a);
    });
}

/// Scenario 3: churn. 100 pods with six interfaces each, created 10 at a
/// time concurrently and removed: every wave's addresses distinct, every
/// pod with its six interfaces; IPAM, cache and host empty afterwards.
/// Prints RunPodSandbox latency under that concurrency.
#[test]
fn manifold_churn_of_100_pods_ten_at_a_time_leaves_ipam_empty() {
    with_lab("crim3", |lab| {
        let mut latencies = Vec::new();
        for wave in 0..10 {
            let pods: Vec<Pod> = (0..10)
                .map(|i| lab.full_pod(&format!("churn-{wave}-{i}")))
                .collect();
            let results = lab.run_all(&pods);
            let mut ids = Vec::new();
            let mut failures = Vec::new();
            for (r, took) in results {
                latencies.push(took);
                match r {
                    Ok(id) => ids.push(id),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            let mut addrs = std::collections::HashSet::new();
            for id in &ids {
                let st = lab.ctd.client().pod_sandbox_status(id).expect("status");
                let ifs = pod_interfaces(&sandbox_netns(&st));
                assert_eq!(ifs.len(), 6, "pod {id}: {ifs:?}");
                for i in ifs.values() {
                    assert_eq!(i.addrs.len(), 2, "pod {id}: {ifs:?}");
                    for a in &i.addrs {
                        assert!(
                            addrs.insert(a.clone()),
                            "{a} handed out twice in wave {wave}"
                        );
                    }
                }
            }
            assert_eq!(
                lab.held()
                    .iter()
                    .filter(|(k, _)| k.contains("/addrs/"))
                    .count(),
                120
            );
            lab.remove_all(&ids);
            assert!(failures.is_empty(), "wave {wave}: {failures:?}");
        }
        assert_eq!(
            lab.held(),
            Vec::<(String, String)>::new(),
            "IPAM after churn"
        );
        let (m, lo, hi) = stats(&latencies);
        println!(
            "LATENCY RunPodSandbox manifold (6 interfaces), 10 concurrent: n={} median={m:.1} ms min={lo:.1} ms max={hi:.1} ms",
            latencies.len()
        );
    });
}

/// Scenario 4: one pod's delegate fails (a macvlan whose master does not
/// exist, requested after three good networks) while four other pods start
/// at the same time: that pod fails naming the network and leaves nothing
/// (its three attachments rolled back), and the four others run with all
/// six interfaces and their addresses.
#[test]
fn manifold_failing_delegate_does_not_disturb_concurrent_pods() {
    with_lab("crim4", |lab| {
        let mut pods: Vec<Pod> = (0..4).map(|i| lab.full_pod(&format!("good-{i}"))).collect();
        pods.insert(
            2,
            lab.pod(
                "bad",
                json!([{"name": "ext1"}, {"name": "ext2"}, {"name": "ext3"}, {"name": "broken"}]),
            ),
        );
        let results = lab.run_all(&pods);
        let mut good = Vec::new();
        for (pod, (r, _)) in pods.iter().zip(results) {
            if pod.name == "bad" {
                let err = r.expect_err("the pod with the broken network must fail");
                assert!(
                    err.to_string().contains("broken"),
                    "error names the network: {err}"
                );
            } else {
                good.push((
                    r.unwrap_or_else(|e| panic!("{}: {e}", pod.name)),
                    pod.clone(),
                ));
            }
        }
        let mut cri = lab.ctd.client();
        assert_eq!(cri.list_pod_sandbox().expect("list").len(), 4);
        for (id, pod) in &good {
            check_pod(lab, id, pod);
        }
        let held = lab.held();
        assert!(
            held.iter().all(|(_, o)| good.iter().any(|(id, _)| id == o)),
            "IPAM records of the failed pod: {held:?}"
        );
        assert_eq!(
            held.iter().filter(|(k, _)| k.contains("/addrs/")).count(),
            4 * 12
        );
        assert_eq!(
            lab.extra_host_links().len(),
            4,
            "one host veth per good pod"
        );
        let ids: Vec<String> = good.iter().map(|(id, _)| id.clone()).collect();
        lab.remove_all(&ids);
    });
}

/// Scenario 5: containerd restarts while pods run (their shims and pause
/// processes stay); it finds the pods again, and removing them afterwards
/// still cleans up everything through DEL from manifold's cache, even with
/// every NAD manifest and the default network's conflist deleted meanwhile.
#[test]
fn manifold_del_after_containerd_restart_cleans_up_from_cache() {
    with_lab("crim5", |lab| {
        let pods: Vec<Pod> = (0..3)
            .map(|i| lab.full_pod(&format!("restart-{i}")))
            .collect();
        let ids: Vec<String> = lab
            .run_all(&pods)
            .into_iter()
            .map(|(r, _)| r.unwrap_or_else(|e| panic!("RunPodSandbox: {e}")))
            .collect();
        let before: Vec<_> = ids
            .iter()
            .zip(&pods)
            .map(|(id, p)| check_pod(lab, id, p))
            .collect();
        let shims = lab.ctd.shims();
        assert!(!shims.is_empty());

        lab.ctd.restart();
        assert_eq!(lab.ctd.shims(), shims, "shims survive the restart");
        std::fs::remove_dir_all(lab.conf_dir.0.join("attachments")).unwrap();
        std::fs::remove_file(lab.conf_dir.0.join("pod-net.conflist")).unwrap();
        let mut cri = lab.ctd.client();
        let mut listed: Vec<String> = cri
            .list_pod_sandbox()
            .expect("list")
            .into_iter()
            .map(|s| s.id)
            .collect();
        listed.sort();
        let mut want = ids.clone();
        want.sort();
        assert_eq!(listed, want, "containerd finds its pods after the restart");
        for ((id, pod), (netns, ifs)) in ids.iter().zip(&pods).zip(&before) {
            let (netns2, ifs2) = check_pod(lab, id, pod);
            assert_eq!(&netns2, netns);
            assert_eq!(format!("{ifs2:?}"), format!("{ifs:?}"));
        }
        lab.remove_all(&ids);
    });
}
