//! manifold-sriov against real namespaces and links, run as a runtime runs
//! it: inside a "host" netns, attaching "pod" netns the test created.
//!
//! The host kernel has no SR-IOV device, so the test builds a fake sysfs tree
//! (PF, VFs, `physfn`/`virtfnN`/`net`/`driver` links) whose VF netdevs are
//! real links: veth ends in the host netns (peers in the "wire" netns).
//! The PF side runs through the plugin's recorded fake PF controller (the
//! host kernel cannot do VF netlink). `vm_*` tests run in the full-kernel VM
//! with a netdevsim PF, whose VF settings go through real netlink.

use manifold_netns_tests::topology::{addresses, link_details, routes, Topology};
use manifold_netns_tests::{snapshot, veth_pair, TestNetns};
use manifold_tests::Output;
use serde_json::{json, Value};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

const PLUGIN: &str = "manifold-sriov";
const PF_PCI: &str = "0000:5e:00.0";
const PF_NAME: &str = "sfpf0";

fn vf_pci(i: usize) -> String {
    format!("0000:5e:00.{}", i + 1)
}

fn vf_name(i: usize) -> String {
    format!("sfvf{i}")
}

/// A fake SR-IOV device on a topology's host netns: a fake sysfs tree whose
/// VF netdevs are veth ends in the host netns (peers in the wire netns), and
/// the plugin's state, device-info and recorded-PF directories, all under
/// the topology's scratch dir (removed with it).
struct Fake {
    sys: PathBuf,
    pf_record: Option<PathBuf>,
    state: PathBuf,
    devinfo: PathBuf,
}

impl Fake {
    /// `kernel_vfs` VFs with netdevs (driver iavf), then `dpdk_vfs` bound to
    /// vfio-pci without netdev; the PF (`sfpf0`) is controlled by the
    /// recorded fake unless `real_pf`.
    fn build(t: &Topology, kernel_vfs: usize, dpdk_vfs: usize, real_pf: bool) -> Self {
        let sys = t.dir.join("sys");
        let dev = sys.join("bus/pci/devices");
        let pf = dev.join(PF_PCI);
        std::fs::create_dir_all(pf.join("net").join(PF_NAME)).unwrap();
        for d in ["iavf", "vfio-pci"] {
            std::fs::create_dir_all(sys.join("bus/pci/drivers").join(d)).unwrap();
        }
        for i in 0..kernel_vfs + dpdk_vfs {
            let vf = dev.join(vf_pci(i));
            std::fs::create_dir_all(&vf).unwrap();
            symlink(format!("../{PF_PCI}"), vf.join("physfn")).unwrap();
            symlink(format!("../{}", vf_pci(i)), pf.join(format!("virtfn{i}"))).unwrap();
            let driver = if i < kernel_vfs { "iavf" } else { "vfio-pci" };
            symlink(format!("../../drivers/{driver}"), vf.join("driver")).unwrap();
            if i < kernel_vfs {
                veth_pair(&t.host, &vf_name(i), &t.wire, &format!("sfw{i}"));
                let l = link_details(&t.host, &vf_name(i)).unwrap();
                let net = vf.join("net").join(vf_name(i));
                std::fs::create_dir_all(&net).unwrap();
                std::fs::write(net.join("ifindex"), format!("{}\n", l["ifindex"])).unwrap();
            }
        }
        let pf_record = (!real_pf).then(|| t.dir.join("pf"));
        if let Some(p) = &pf_record {
            std::fs::create_dir_all(p).unwrap();
        }
        Fake {
            sys,
            pf_record,
            state: t.dir.join("state"),
            devinfo: t.dir.join("devinfo"),
        }
    }

    /// The environment that points the plugin at this fake.
    fn env(&self) -> Vec<(&'static str, String)> {
        let mut e = vec![("MANIFOLD_SRIOV_SYSFS_ROOT", self.sys.display().to_string())];
        if let Some(p) = &self.pf_record {
            e.push(("MANIFOLD_SRIOV_TEST_PF_RECORD", p.display().to_string()));
        }
        e
    }
    /// Names a real PF netdev in the fake sysfs.
    fn set_pf_netdev(&self, name: &str) {
        let net = self.sys.join(format!("bus/pci/devices/{PF_PCI}/net"));
        std::fs::remove_dir_all(&net).unwrap();
        std::fs::create_dir_all(net.join(name)).unwrap();
    }

    fn conf(&self, version: &str, vf: usize, extra: Value) -> Value {
        let mut c = json!({"cniVersion": version, "name": "sriovnet", "type": PLUGIN,
            "deviceID": vf_pci(vf), "dataDir": self.state.display().to_string(),
            "deviceInfoDir": self.devinfo.display().to_string()});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    /// The recorded fake PF's VF states (`{}` before any change).
    fn pf_states(&self) -> Value {
        let p = self
            .pf_record
            .as_ref()
            .unwrap()
            .join(format!("{PF_NAME}.json"));
        std::fs::read(p)
            .map(|b| serde_json::from_slice(&b).unwrap())
            .unwrap_or(json!({}))
    }

    /// Seeds the recorded fake PF with a VF's original state.
    fn seed_pf(&self, vf: usize, state: Value) {
        let mut all = self.pf_states();
        all[vf.to_string()] = state;
        let p = self
            .pf_record
            .as_ref()
            .unwrap()
            .join(format!("{PF_NAME}.json"));
        std::fs::write(p, all.to_string()).unwrap();
    }

    /// How many changes the recorded fake PF has applied.
    fn pf_changes(&self) -> usize {
        let p = self
            .pf_record
            .as_ref()
            .unwrap()
            .join(format!("{PF_NAME}.log"));
        std::fs::read_to_string(p)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    /// VF records the plugin holds.
    fn records(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.state)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".json"))
            .collect();
        v.sort();
        v
    }
}

/// A topology with a fake SR-IOV device on its host netns.
struct Node {
    t: Topology,
    fake: Fake,
}

impl std::ops::Deref for Node {
    type Target = Fake;
    fn deref(&self) -> &Fake {
        &self.fake
    }
}

impl Node {
    fn new(tag: &str, kernel_vfs: usize, dpdk_vfs: usize, real_pf: bool) -> Self {
        let t = Topology::new(tag);
        let fake = Fake::build(&t, kernel_vfs, dpdk_vfs, real_pf);
        Node { t, fake }
    }

    /// With the recorded fake PF controller.
    fn fake(tag: &str, kernel_vfs: usize, dpdk_vfs: usize) -> Self {
        Self::new(tag, kernel_vfs, dpdk_vfs, false)
    }

    fn dual_stack(&self) -> Value {
        self.t.host_local(
            json!([[{"subnet": "10.66.0.0/24", "gateway": "10.66.0.1"}], [{"subnet": "fd66::/64", "gateway": "fd66::1"}]]),
            json!([{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]),
        )
    }

    fn run(
        &self,
        verb: &str,
        container: &str,
        pod: Option<&str>,
        ifname: &str,
        conf: &Value,
    ) -> Output {
        let mut c = self
            .t
            .call(PLUGIN, verb, container, None, ifname)
            .env("CNI_NETNS", pod.unwrap_or(""));
        for (k, v) in self.env() {
            c = c.env(k, &v);
        }
        c.run(conf.to_string().as_bytes())
    }

    /// The host netns once a restored VF netdev is running again.
    fn host_snapshot(&self) -> String {
        running_snapshot(&self.t)
    }
}

/// The host netns snapshot, taken once every link is running (the kernel
/// reports carrier, then adds the IPv6 link-local address, a moment after a
/// restored link comes up).
fn running_snapshot(t: &Topology) -> String {
    for _ in 0..250 {
        if !t.host.ip(&["link", "show"]).contains("NO-CARRIER") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    t.host_snapshot()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn seeded_original() -> Value {
    json!({"mac": "02:5e:00:00:00:aa", "vlan": 7, "qos": 1, "proto": "802.1q", "spoofchk": false,
           "trust": false, "linkState": "auto", "minTxRate": 0, "maxTxRate": 0})
}

fn full_settings(mac: &str, vlan: u16) -> Value {
    json!({"vlan": vlan, "vlanQoS": 5, "vlanProto": "802.1ad", "mac": mac, "spoofchk": "on",
           "trust": "on", "link_state": "disable", "min_tx_rate": 10, "max_tx_rate": 100, "mtu": 1400})
}

#[test]
fn add_check_del_applies_everything_and_restores_everything() {
    let n = Node::fake("sfa", 2, 0);
    n.seed_pf(0, seeded_original());
    // The gateway sits at the far end of VF 0's "wire".
    n.t.wire.ip(&["addr", "add", "10.66.0.1/24", "dev", "sfw0"]);
    for (i, v) in ["0.4.0", "1.1.0"].iter().enumerate() {
        let pod = n.t.pod(&format!("sfap{i}"));
        let before = n.host_snapshot();
        let orig_pf = n.pf_states();
        let mut extra = full_settings("02:66:00:00:00:01", 100);
        extra["ipam"] = n.dual_stack();
        let c = n.conf(v, 0, extra);
        let id = format!("ctr{i}");
        let path = pod.path().display().to_string();
        let r = n.run("ADD", &id, Some(&path), "net1", &c);
        let res = r.result().clone();
        let iface = &res["interfaces"][0];
        assert_eq!(iface["name"], "net1");
        assert_eq!(iface["mac"], "02:66:00:00:00:01");
        assert_eq!(iface["sandbox"], path.as_str());
        assert_eq!(
            iface.get("pciID").and_then(Value::as_str),
            (*v == "1.1.0").then_some("0000:5e:00.1"),
            "{res}"
        );

        let l = link_details(&pod, "net1").expect("VF netdev in the pod as net1");
        assert_eq!(
            l["ifindex"],
            link_details(&n.t.wire, "sfw0").unwrap()["link_index"]
        );
        assert_eq!(l["address"], "02:66:00:00:00:01");
        assert_eq!(l["mtu"], 1400);
        assert!(l["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
        let addrs: Vec<String> = addresses(&pod, "net1").into_iter().map(|a| a.0).collect();
        assert_eq!(addrs.len(), 2, "{addrs:?}");
        assert!(addrs[0].starts_with("10.66.0.") && addrs[1].starts_with("fd66::"));
        let rts = routes(&pod, "net1");
        assert!(
            rts.iter()
                .any(|r| r.starts_with("-4 default via 10.66.0.1")),
            "{rts:?}"
        );
        let ping = pod.exec(&["ping", "-c", "1", "-W", "2", "10.66.0.1"]);
        assert!(ping.status.success(), "pod reaches the gateway over the VF");
        assert!(
            link_details(&n.t.host, "sfvf0").is_none(),
            "VF left the host"
        );
        assert!(
            link_details(&n.t.host, "sfvf1").is_some(),
            "other VF untouched"
        );

        let pf = &n.pf_states()["0"];
        assert_eq!(
            *pf,
            json!({"mac": "02:66:00:00:00:01", "vlan": 100, "qos": 5, "proto": "802.1ad", "spoofchk": true,
                   "trust": true, "linkState": "disable", "minTxRate": 10, "maxTxRate": 100})
        );
        let rec = n.state.join("0000:5e:00.1.json");
        assert_eq!(mode(&n.state), 0o700);
        assert_eq!(mode(&rec), 0o600);
        let saved: Value = serde_json::from_slice(&std::fs::read(&rec).unwrap()).unwrap();
        assert_eq!(saved["original"], orig_pf["0"], "original state recorded");
        assert_eq!(saved["netdev"]["name"], "sfvf0");

        let mut cc = c.clone();
        cc["prevResult"] = res.clone();
        let chk = n.run("CHECK", &id, Some(&path), "net1", &cc);
        assert_eq!(chk.code, 0, "CHECK: {chk:?}");
        pod.ip(&["link", "set", "net1", "address", "02:66:00:00:00:99"]);
        assert_eq!(
            n.run("CHECK", &id, Some(&path), "net1", &cc).error_code(),
            102
        );
        pod.ip(&["link", "set", "net1", "address", "02:66:00:00:00:01"]);
        let mut tampered = n.pf_states();
        tampered["0"]["vlan"] = json!(101);
        n.seed_pf(0, tampered["0"].clone());
        let e = n.run("CHECK", &id, Some(&path), "net1", &cc);
        assert_eq!(e.error_code(), 102);
        assert!(e.error_msg().contains("VLAN"), "{e:?}");
        n.seed_pf(0, pf.clone());

        let d = n.run("DEL", &id, Some(&path), "net1", &c);
        assert_eq!(d.code, 0, "{d:?}");
        assert!(link_details(&pod, "net1").is_none());
        assert_eq!(n.host_snapshot(), before, "host netns restored ({v})");
        assert_eq!(n.pf_states(), orig_pf, "PF side restored ({v})");
        assert!(n.records().is_empty(), "{:?}", n.records());
        assert!(n.t.host_local_reservations().is_empty());
        assert_eq!(
            n.run("DEL", &id, Some(&path), "net1", &c).code,
            0,
            "DEL twice"
        );
        assert_eq!(
            n.run("DEL", &id, None, "net1", &c).code,
            0,
            "DEL without netns"
        );
        assert_eq!(n.pf_states(), orig_pf);
    }
}

#[test]
fn dpdk_vf_is_configured_on_the_pf_and_reported_by_pci_address() {
    let n = Node::fake("sfd", 1, 1);
    let pod = n.t.pod("sfdp");
    let path = pod.path().display().to_string();
    let (host_before, pod_before) = (n.host_snapshot(), snapshot(&pod));
    let c = n.conf(
        "1.1.0",
        1,
        json!({"vlan": 200, "mac": "02:66:00:00:00:d1", "ipam": {"type": "static", "addresses": [{"address": "10.67.0.5/24"}]}}),
    );
    let res = n
        .run("ADD", "dpdk1", Some(&path), "net1", &c)
        .result()
        .clone();
    let iface = &res["interfaces"][0];
    assert_eq!(iface["pciID"], "0000:5e:00.2");
    assert_eq!(iface["mac"], "02:66:00:00:00:d1");
    assert_eq!(iface["sandbox"], path.as_str());
    assert_eq!(res["ips"][0]["address"], "10.67.0.5/24");
    assert_eq!(
        snapshot(&pod),
        pod_before,
        "no netdev moved, nothing configured"
    );
    assert_eq!(n.host_snapshot(), host_before);
    assert_eq!(n.pf_states()["1"]["vlan"], 200);
    assert_eq!(n.pf_states()["1"]["mac"], "02:66:00:00:00:d1");
    let info_path = n.devinfo.join("sriovnet-dpdk1-net1-device.json");
    let info: Value = serde_json::from_slice(&std::fs::read(&info_path).unwrap()).unwrap();
    assert_eq!(
        info,
        json!({"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:5e:00.2", "pf-pci-address": PF_PCI}})
    );
    // (Without ipam: the reference static plugin cannot parse a 1.1.0 prevResult.)
    let mut cc = c.clone();
    cc.as_object_mut().unwrap().remove("ipam");
    cc["prevResult"] = res.clone();
    let chk = n.run("CHECK", "dpdk1", Some(&path), "net1", &cc);
    assert_eq!(chk.code, 0, "{chk:?}");

    // A runtime-named device-info file (CNIDeviceInfoFile) that already holds
    // the device plugin's copy is left as it is.
    let given = n.devinfo.join("given.json");
    std::fs::create_dir_all(&n.devinfo).unwrap();
    std::fs::write(&given, "{\"type\":\"pci\"}").unwrap();
    let d = n.run("DEL", "dpdk1", Some(&path), "net1", &c);
    assert_eq!(d.code, 0, "{d:?}");
    assert!(!info_path.exists(), "device-info file removed");
    assert_eq!(n.pf_states()["1"]["vlan"], 0);
    assert_eq!(n.pf_states()["1"]["mac"], "00:00:00:00:00:00");
    let mut c2 = c.clone();
    c2["runtimeConfig"] = json!({"CNIDeviceInfoFile": given.display().to_string()});
    n.run("ADD", "dpdk2", Some(&path), "net1", &c2).result();
    assert_eq!(
        std::fs::read_to_string(&given).unwrap(),
        "{\"type\":\"pci\"}"
    );
    assert_eq!(n.run("DEL", "dpdk2", Some(&path), "net1", &c2).code, 0);
    assert!(
        given.exists(),
        "the runtime's file is the runtime's to remove"
    );
    assert!(n.records().is_empty());
}

/// What the kernel does to a physical netdev when its netns is destroyed:
/// it goes back to the initial netns (here: the test's host netns), under
/// the name it had.
fn destroy_pod(n: &Node, pod: TestNetns, ifname: &str) {
    pod.ip(&["link", "set", ifname, "netns", n.t.host.name()]);
    drop(pod);
}

#[test]
fn del_after_the_pod_netns_is_gone_finds_the_vf_by_pci_address() {
    let n = Node::fake("sfg", 1, 0);
    let before = n.host_snapshot();
    let pod = n.t.pod("sfgp");
    let path = pod.path().display().to_string();
    let c = n.conf(
        "1.0.0",
        0,
        json!({"mac": "02:66:00:00:00:0a", "mtu": 1300, "vlan": 9}),
    );
    n.run("ADD", "gone", Some(&path), "net1", &c).result();
    destroy_pod(&n, pod, "net1");
    assert!(link_details(&n.t.host, "net1").is_some());
    let d = n.run("DEL", "gone", Some(&path), "net1", &c);
    assert_eq!(d.code, 0, "{d:?}");
    assert_eq!(
        n.host_snapshot(),
        before,
        "name, MAC, MTU and state restored"
    );
    assert_eq!(n.pf_states()["0"]["vlan"], 0);
    assert!(n.records().is_empty());
    // DEL without deviceID finds the VF by owner: here there is none left.
    let mut no_dev = c.clone();
    no_dev.as_object_mut().unwrap().remove("deviceID");
    assert_eq!(n.run("DEL", "gone", None, "net1", &no_dev).code, 0);
}

#[test]
fn del_with_a_config_edited_since_add_still_restores_from_the_record() {
    let n = Node::fake("sfe", 1, 0);
    let (before, pf_before) = (n.host_snapshot(), n.pf_states());
    let pod = n.t.pod("sfep");
    let path = pod.path().display().to_string();
    let c = n.conf("1.0.0", 0, json!({"vlan": 9, "trust": "on"}));
    n.run("ADD", "edit", Some(&path), "net1", &c).result();
    // The NAD changed: an invalid vlan and no deviceID any more.
    let mut edited = n.conf("1.0.0", 0, json!({"vlan": 9999}));
    edited.as_object_mut().unwrap().remove("deviceID");
    assert_eq!(
        n.run("ADD", "x", Some(&path), "net2", &edited).error_code(),
        7
    );
    let d = n.run("DEL", "edit", Some(&path), "net1", &edited);
    assert_eq!(d.code, 0, "{d:?}");
    assert!(link_details(&pod, "net1").is_none());
    assert_eq!(n.host_snapshot(), before);
    assert_eq!(n.pf_states()["0"]["vlan"], 0);
    assert_eq!(
        n.pf_states()["0"]["trust"],
        pf_before["0"]["trust"].as_bool().unwrap_or(false)
    );
    assert!(n.records().is_empty());
}

#[test]
fn late_del_of_an_old_pod_never_touches_the_vf_given_to_a_new_one() {
    let n = Node::fake("sfr", 1, 0);
    n.seed_pf(0, seeded_original());
    let (before, orig_pf) = (n.host_snapshot(), n.pf_states());
    let a = n.t.pod("sfra");
    let a_path = a.path().display().to_string();
    let ca = n.conf(
        "1.0.0",
        0,
        json!({"mac": "02:66:00:00:00:a1", "vlan": 10, "trust": "on"}),
    );
    n.run("ADD", "podA", Some(&a_path), "net1", &ca).result();

    // While pod A lives, the VF is A's: another ADD must not take it.
    let b = n.t.pod("sfrb");
    let b_path = b.path().display().to_string();
    let cb = n.conf("1.0.0", 0, json!({"mac": "02:66:00:00:00:b1", "vlan": 20}));
    let (pf_a, b_snap) = (n.pf_states(), snapshot(&b));
    let busy = n.run("ADD", "podB", Some(&b_path), "net1", &cb);
    assert_eq!(busy.error_code(), 11, "{busy:?}");
    assert_eq!((n.pf_states(), snapshot(&b)), (pf_a, b_snap));
    assert_eq!(
        link_details(&a, "net1").unwrap()["address"],
        "02:66:00:00:00:a1"
    );

    // Pod A dies, its DEL is lost; the device plugin hands the VF to pod B.
    destroy_pod(&n, a, "net1");
    let rb = n
        .run("ADD", "podB", Some(&b_path), "net1", &cb)
        .result()
        .clone();
    assert_eq!(rb["interfaces"][0]["mac"], "02:66:00:00:00:b1");
    let pf_b = n.pf_states();
    assert_eq!(pf_b["0"]["vlan"], 20);
    assert_eq!(
        pf_b["0"]["trust"], false,
        "A's trust was undone before B got the VF"
    );
    let b_link = link_details(&b, "net1").unwrap();

    // A's DEL arrives late: success, and B's VF is untouched.
    let changes = n.pf_changes();
    let late = n.run("DEL", "podA", Some(&a_path), "net1", &ca);
    assert_eq!(late.code, 0, "{late:?}");
    assert_eq!(n.pf_changes(), changes, "no PF change");
    assert_eq!(n.pf_states(), pf_b);
    assert_eq!(link_details(&b, "net1").unwrap(), b_link);
    let mut chk = cb.clone();
    chk["prevResult"] = rb;
    assert_eq!(n.run("CHECK", "podB", Some(&b_path), "net1", &chk).code, 0);

    assert_eq!(n.run("DEL", "podB", Some(&b_path), "net1", &cb).code, 0);
    assert_eq!(
        n.host_snapshot(),
        before,
        "the original (pre-A) state is back"
    );
    assert_eq!(n.pf_states(), orig_pf);
}

#[test]
fn concurrent_adds_of_one_vf_serialize_and_exactly_one_wins() {
    let n = Node::fake("sfx", 1, 0);
    n.seed_pf(0, seeded_original());
    let before = (n.host_snapshot(), n.pf_states());
    let pods: Vec<TestNetns> = (0..3).map(|i| n.t.pod(&format!("sfx{i}"))).collect();
    let paths: Vec<String> = pods
        .iter()
        .map(|p| p.path().display().to_string())
        .collect();
    let outs: Vec<(usize, Output)> = std::thread::scope(|s| {
        let handles: Vec<_> = paths
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let n = &n;
                s.spawn(move || {
                    let c = n.conf(
                        "1.0.0",
                        0,
                        json!({"vlan": 40 + i, "mac": format!("02:66:00:00:00:c{i}")}),
                    );
                    (i, n.run("ADD", &format!("race{i}"), Some(p), "net1", &c))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners: Vec<usize> = outs
        .iter()
        .filter(|(_, o)| o.code == 0)
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(winners.len(), 1, "{outs:?}");
    for (_, o) in outs.iter().filter(|(_, o)| o.code != 0) {
        assert_eq!(o.error_code(), 11, "{o:?}");
    }
    let w = winners[0];
    assert_eq!(n.pf_states()["0"]["vlan"], 40 + w);
    assert_eq!(
        link_details(&pods[w], "net1").unwrap()["address"],
        format!("02:66:00:00:00:c{w}")
    );
    let c = n.conf("1.0.0", 0, json!({"vlan": 40 + w}));
    assert_eq!(
        n.run("DEL", &format!("race{w}"), Some(&paths[w]), "net1", &c)
            .code,
        0
    );
    assert_eq!((n.host_snapshot(), n.pf_states()), before);
}

#[test]
fn del_of_a_vf_that_no_longer_exists_succeeds() {
    let n = Node::fake("sfz", 0, 1);
    let pod = n.t.pod("sfzp");
    let path = pod.path().display().to_string();
    let c = n.conf("1.0.0", 0, json!({"vlan": 12}));
    n.run("ADD", "gonevf", Some(&path), "net1", &c).result();
    // The VFs were removed (sriov_numvfs set to 0): the device is gone.
    std::fs::remove_dir_all(n.sys.join(format!("bus/pci/devices/{}", vf_pci(0)))).unwrap();
    let changes = n.pf_changes();
    let d = n.run("DEL", "gonevf", Some(&path), "net1", &c);
    assert_eq!(d.code, 0, "{d:?}");
    assert_eq!(
        n.pf_changes(),
        changes,
        "nothing to restore on a VF that is gone"
    );
    assert!(n.records().is_empty());
}

#[test]
fn add_failure_after_changes_restores_everything() {
    let n = Node::fake("sff", 1, 0);
    n.seed_pf(0, seeded_original());
    let pod = n.t.pod("sffp");
    let path = pod.path().display().to_string();
    let (host_before, pod_before, pf_before) = (n.host_snapshot(), snapshot(&pod), n.pf_states());
    let failing = [
        // IPAM itself fails.
        json!({"type": "static", "addresses": [{"address": "not-an-address"}]}),
        // IPAM allocates, then a route cannot be added: the allocation is released too.
        n.t.host_local(
            json!([[{"subnet": "10.68.0.0/24"}]]),
            json!([{"dst": "10.201.0.0/16", "gw": "192.0.2.1"}]),
        ),
    ];
    for ipam in failing {
        let mut extra = full_settings("02:66:00:00:00:f1", 300);
        extra["ipam"] = ipam;
        let c = n.conf("1.0.0", 0, extra);
        let r = n.run("ADD", "fail", Some(&path), "net1", &c);
        assert_ne!(r.code, 0, "{r:?}");
        assert!(
            n.pf_changes() > 0,
            "settings were applied before the failure"
        );
        assert_eq!(snapshot(&pod), pod_before);
        assert_eq!(n.host_snapshot(), host_before);
        assert_eq!(n.pf_states(), pf_before);
        assert!(n.records().is_empty(), "{:?}", n.records());
        assert!(n.t.host_local_reservations().is_empty());
    }
}

#[test]
fn bad_device_ids_are_rejected_with_nothing_changed() {
    let n = Node::fake("sfb", 1, 0);
    // A VF without netdev bound to a kernel driver, and a device that is no VF.
    let odd = n.sys.join("bus/pci/devices/0000:5e:00.5");
    std::fs::create_dir_all(&odd).unwrap();
    symlink(format!("../{PF_PCI}"), odd.join("physfn")).unwrap();
    symlink(
        "../0000:5e:00.5",
        n.sys.join(format!("bus/pci/devices/{PF_PCI}/virtfn4")),
    )
    .unwrap();
    symlink("../../drivers/iavf", odd.join("driver")).unwrap();
    std::fs::create_dir_all(n.sys.join("bus/pci/devices/0000:5f:00.0")).unwrap();
    let pod = n.t.pod("sfbp");
    let path = pod.path().display().to_string();
    let (host_before, pod_before) = (n.host_snapshot(), snapshot(&pod));
    for (dev, why) in [
        (PF_PCI, "not an SR-IOV VF"),
        ("0000:5f:00.0", "not an SR-IOV VF"),
        ("0000:5e:00.7", "no such PCI device"),
        ("../../../../etc", "not a PCI address"),
        ("0000:5e:00.1/../0000:5e:00.0", "not a PCI address"),
        ("0000:5e:00.1/", "not a PCI address"),
        ("5e:00.1", "not a PCI address"),
        ("0000:5e:00.5", "no netdev"),
    ] {
        let c = n.conf("1.0.0", 0, json!({"deviceID": dev, "vlan": 5}));
        let r = n.run("ADD", "bad", Some(&path), "net1", &c);
        assert_eq!(r.error_code(), 7, "{dev}: {r:?}");
        assert!(r.error_msg().contains(why), "{dev}: {}", r.error_msg());
        assert_eq!(n.pf_changes(), 0, "{dev}");
    }
    let c = n.conf("1.0.0", 0, json!({"vlanQoS": 3}));
    assert_eq!(n.run("ADD", "bad", Some(&path), "net1", &c).error_code(), 7);
    let mut c = n.conf("1.0.0", 0, json!({}));
    c.as_object_mut().unwrap().remove("deviceID");
    let r = n.run("ADD", "bad", Some(&path), "net1", &c);
    assert_eq!(r.error_code(), 7);
    assert!(r.error_msg().contains("deviceID"), "{r:?}");
    assert_eq!(n.pf_changes(), 0);
    assert_eq!(n.host_snapshot(), host_before);
    assert_eq!(snapshot(&pod), pod_before);
    assert!(n.records().is_empty());
}

#[test]
fn gc_releases_vfs_of_stale_attachments_and_status_reports_ready() {
    let n = Node::fake("sfc", 2, 0);
    let before = n.host_snapshot();
    let (a, b) = (n.t.pod("sfca"), n.t.pod("sfcb"));
    let (pa, pb) = (
        a.path().display().to_string(),
        b.path().display().to_string(),
    );
    let ca = n.conf("1.1.0", 0, json!({"vlan": 31}));
    let cb = n.conf("1.1.0", 1, json!({"vlan": 32}));
    n.run("ADD", "gca", Some(&pa), "net1", &ca).result();
    n.run("ADD", "gcb", Some(&pb), "net1", &cb).result();
    let mut gc = n.conf("1.1.0", 0, json!({}));
    gc.as_object_mut().unwrap().remove("deviceID");
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "gcb", "ifname": "net1"}]);
    let r = n.run("GC", "", None, "", &gc);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(link_details(&a, "net1").is_none(), "A's VF taken back");
    assert!(link_details(&n.t.host, "sfvf0").is_some());
    assert!(link_details(&b, "net1").is_some(), "B's VF kept");
    assert_eq!(n.pf_states()["0"]["vlan"], 0);
    assert_eq!(n.pf_states()["1"]["vlan"], 32);
    assert_eq!(n.records(), vec!["0000:5e:00.2.json".to_string()]);
    assert_eq!(n.run("STATUS", "", None, "", &gc).code, 0);
    assert_eq!(n.run("DEL", "gca", Some(&pa), "net1", &ca).code, 0);
    assert_eq!(n.run("DEL", "gcb", Some(&pb), "net1", &cb).code, 0);
    assert_eq!(n.host_snapshot(), before);
    let mut broken = gc.clone();
    broken["dataDir"] = json!("/proc/no-such-dir/state");
    assert_eq!(n.run("STATUS", "", None, "", &broken).error_code(), 50);
}

#[test]
fn as_a_delegate_of_the_meta_plugin_next_to_a_default_network_and_a_macvlan() {
    through_the_meta_plugin("sfm", VfFrom::Selection);
}

/// The VF comes from the NAD's `k8s.v1.cni.cncf.io/resourceName` and the
/// device kubelet's checkpoint lists for the pod (`K8S_POD_UID`), as a device
/// plugin hands it out; the selection names no deviceID.
#[test]
fn the_meta_plugin_takes_the_vf_from_the_kubelet_checkpoint_by_resource_name() {
    through_the_meta_plugin("sfr", VfFrom::Checkpoint);
}

/// As above, but kubelet's PodResources API (a fake kubelet's socket) lists
/// the pod's VF by namespace and name, and wins over a checkpoint that
/// gives the pod another device.
#[test]
fn the_meta_plugin_takes_the_vf_from_the_pod_resources_api_by_resource_name() {
    through_the_meta_plugin("sfa", VfFrom::PodResourcesApi);
}

/// Where the meta-plugin learns which VF the pod gets.
#[derive(Clone, Copy, PartialEq)]
enum VfFrom {
    /// The selection's `deviceID`.
    Selection,
    /// The NAD's resource name and kubelet's checkpoint (no API socket).
    Checkpoint,
    /// The NAD's resource name and the PodResources API.
    PodResourcesApi,
}

/// Default network + a VF + a macvlan through `manifold`; the VF named by
/// the selection's deviceID, or found by resource name.
fn through_the_meta_plugin(tag: &str, from: VfFrom) {
    use manifold_netns_tests::meta::{result_addrs, MetaLab, POD_NS, UNDERLAYS};
    use manifold_podresources::fixture::{pod as listed, FakeKubelet};
    let lab = MetaLab::new(tag);
    lab.default_networks();
    let fake = Fake::build(&lab.t, 1, 0, false);
    fake.seed_pf(0, seeded_original());
    let mut vf_net = fake.conf(
        "1.1.0",
        0,
        json!({"vlan": 100, "capabilities": {"deviceID": true},
        "ipam": lab.host_local("10.82.0.0/24", "fd82::/64", false)}),
    );
    vf_net.as_object_mut().unwrap().remove("deviceID");
    lab.nad(POD_NS, "sriov-a", Some(&vf_net), "json");
    let checkpoint = lab.t.dir.join("kubelet_internal_checkpoint");
    let by_resource = from != VfFrom::Selection;
    // The API lists the pod's VF; the checkpoint then says otherwise.
    let kubelet = (from == VfFrom::PodResourcesApi).then(|| {
        FakeKubelet::start(vec![listed(
            POD_NS,
            "sfmp",
            &[("c", &[("example.com/vf", &[&vf_pci(0)])])],
        )])
    });
    let ckpt_vf = match from {
        VfFrom::PodResourcesApi => "0000:00:00.8".to_string(),
        _ => vf_pci(0),
    };
    if by_resource {
        let nad = lab
            .conf_dir
            .join("attachments")
            .join(POD_NS)
            .join("sriov-a.json");
        let mut obj: Value = serde_json::from_str(&std::fs::read_to_string(&nad).unwrap()).unwrap();
        obj["metadata"]["annotations"] =
            json!({"k8s.v1.cni.cncf.io/resourceName": "example.com/vf"});
        std::fs::write(&nad, obj.to_string()).unwrap();
        std::fs::write(
            &checkpoint,
            json!({"Data": {"PodDeviceEntries": [
                {"PodUID": "other-pod", "ContainerName": "c", "ResourceName": "example.com/vf",
                 "DeviceIDs": {"0": ["0000:00:00.9"]}},
                {"PodUID": "uid-sfm", "ContainerName": "c", "ResourceName": "example.com/vf",
                 "DeviceIDs": {"0": [ckpt_vf]}}], "RegisteredDevices": {}}, "Checksum": 0})
            .to_string(),
        )
        .unwrap();
    }
    let mv = json!({"cniVersion": "1.0.0", "type": "manifold-macvlan", "master": UNDERLAYS[0], "mode": "bridge",
                    "ipam": lab.host_local("10.82.1.0/24", "fd82:1::/64", false)});
    lab.nad(POD_NS, "mv-a", Some(&mv), "json");
    let socket = kubelet.as_ref().map_or_else(
        || lab.t.dir.join("no-kubelet.sock"),
        |k| k.socket().to_path_buf(),
    );
    let conf = lab.manifold_conf(
        "podnet",
        json!({"kubeletCheckpoint": checkpoint.display().to_string(),
               "podResourcesSocket": socket.display().to_string()}),
    );
    let (before, pf_before) = (running_snapshot(&lab.t), fake.pf_states());
    let pod = lab.t.pod(&format!("{tag}p"));
    let networks = if by_resource {
        json!([{"name": "sriov-a"}, {"name": "mv-a"}]).to_string()
    } else {
        json!([{"name": "sriov-a", "deviceID": vf_pci(0)}, {"name": "mv-a"}]).to_string()
    };
    let run = |verb: &str, conf: &Value, pod: Option<&TestNetns>| {
        let mut call = lab.call(verb, "sfmc", pod, "sfmp").env(
            "CNI_ARGS",
            &format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={POD_NS};K8S_POD_NAME=sfmp;K8S_POD_UID=uid-sfm"
            ),
        );
        for (k, v) in fake.env() {
            call = call.env(k, &v);
        }
        call.run(conf.to_string().as_bytes())
    };
    let mut add = conf.clone();
    add["runtimeConfig"] =
        json!({"io.kubernetes.cri.pod-annotations": {"k8s.v1.cni.cncf.io/networks": networks}});
    let out = run("ADD", &add, Some(&pod));
    let r = out.result().clone();
    let ifs: Vec<&str> = r["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i.get("sandbox").is_some())
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(ifs, ["eth0", "net1", "net2"], "{r}");
    let vf = r["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "net1")
        .unwrap();
    assert_eq!(vf["pciID"], vf_pci(0), "{r}");
    assert_eq!(
        link_details(&pod, "net1").unwrap()["ifindex"],
        link_details(&lab.t.wire, "sfw0").unwrap()["link_index"],
        "net1 is the VF's netdev"
    );
    assert!(result_addrs(&r, "net1")[0].starts_with("10.82.0."), "{r}");
    assert!(result_addrs(&r, "net2")[0].starts_with("10.82.1."), "{r}");
    assert_eq!(
        link_details(&pod, "net2").unwrap()["linkinfo"]["info_kind"],
        "macvlan"
    );
    assert_eq!(fake.pf_states()["0"]["vlan"], 100);
    assert!(link_details(&lab.t.host, "sfvf0").is_none());

    let d = run("DEL", &conf, Some(&pod));
    assert_eq!(d.code, 0, "{d:?}");
    assert_eq!(running_snapshot(&lab.t), before);
    assert_eq!(fake.pf_states(), pf_before);
    assert!(fake.records().is_empty());
}

// ---- VM lane: a netdevsim PF with real VF netlink ----

/// A netdevsim device with one port and `vfs` VFs, created from inside
/// `host` so its PF netdev lives there; removed on drop.
struct Netdevsim {
    id: u32,
    pf: String,
}

impl Netdevsim {
    fn new(host: &TestNetns, vfs: u32) -> Self {
        let id = 100 + std::process::id() % 800;
        let sh = |cmd: String| {
            let out = host.exec(&["sh", "-c", &cmd]);
            assert!(
                out.status.success(),
                "{cmd}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        sh(format!("echo '{id} 1' > /sys/bus/netdevsim/new_device"));
        let dev = format!("/sys/bus/netdevsim/devices/netdevsim{id}");
        let mut pf = String::new();
        for _ in 0..100 {
            pf = sh(format!("ls {dev}/net 2>/dev/null | head -n1"));
            if !pf.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(!pf.is_empty(), "netdevsim{id} has no netdev");
        sh(format!("echo {vfs} > {dev}/sriov_numvfs"));
        host.ip(&["link", "set", &pf, "up"]);
        Netdevsim { id, pf }
    }

    /// VF `vf` as the kernel reports it (`ip -d -j link show`'s vfinfo_list).
    fn vf_info(&self, host: &TestNetns, vf: u64) -> Value {
        let l = link_details(host, &self.pf).expect("PF link");
        l["vfinfo_list"]
            .as_array()
            .expect("vfinfo_list")
            .iter()
            .find(|v| v["vf"] == vf)
            .cloned()
            .expect("VF in vfinfo_list")
    }
}

impl Drop for Netdevsim {
    fn drop(&mut self) {
        let _ = Command::new("sh")
            .args([
                "-c",
                &format!("echo {} > /sys/bus/netdevsim/del_device", self.id),
            ])
            .status();
    }
}

#[test]
#[ignore = "needs netdevsim: VM lane"]
fn vm_netdevsim_vf_settings_are_applied_and_restored_exactly() {
    // The PF must be in the host netns the plugin runs in: build the node
    // first, then the netdevsim device from inside it.
    let n = Node::new("sfv", 1, 1, true);
    let nsim = Netdevsim::new(&n.t.host, 2);
    n.set_pf_netdev(&nsim.pf);
    // Non-default original values, so that restoring means something.
    n.t.host.ip(&[
        "link",
        "set",
        &nsim.pf,
        "vf",
        "0",
        "mac",
        "02:5e:00:00:00:aa",
        "vlan",
        "7",
        "qos",
        "1",
        "spoofchk",
        "off",
        "trust",
        "on",
        "state",
        "enable",
        "min_tx_rate",
        "5",
        "max_tx_rate",
        "50",
    ]);
    let orig0 = nsim.vf_info(&n.t.host, 0);
    let orig1 = nsim.vf_info(&n.t.host, 1);
    let host_before = n.host_snapshot();

    let pod = n.t.pod("sfvp");
    let path = pod.path().display().to_string();
    let mut extra = full_settings("02:66:00:00:00:51", 1234);
    extra["spoofchk"] = json!("on");
    extra["trust"] = json!("off");
    let c = n.conf("1.1.0", 0, extra);
    let res = n
        .run("ADD", "vm1", Some(&path), "net1", &c)
        .result()
        .clone();
    let got = nsim.vf_info(&n.t.host, 0);
    assert_eq!(got["address"], "02:66:00:00:00:51", "{got}");
    assert_eq!(
        got["vlan_list"],
        json!([{"vlan": 1234, "qos": 5, "protocol": "802.1ad"}]),
        "{got}"
    );
    assert_eq!(got["spoofchk"], true, "{got}");
    assert_eq!(got["trust"], false, "{got}");
    assert_eq!(got["link_state"], "disable", "{got}");
    assert_eq!(got["rate"], json!({"max_tx": 100, "min_tx": 10}), "{got}");
    assert_eq!(
        nsim.vf_info(&n.t.host, 1),
        orig1,
        "the other VF is untouched"
    );
    assert_eq!(
        link_details(&pod, "net1").unwrap()["address"],
        "02:66:00:00:00:51"
    );
    let mut cc = c.clone();
    cc["prevResult"] = res;
    let chk = n.run("CHECK", "vm1", Some(&path), "net1", &cc);
    assert_eq!(chk.code, 0, "{chk:?}");
    n.t.host
        .ip(&["link", "set", &nsim.pf, "vf", "0", "trust", "on"]);
    let e = n.run("CHECK", "vm1", Some(&path), "net1", &cc);
    assert_eq!(e.error_code(), 102, "{e:?}");
    assert!(e.error_msg().contains("trust"), "{e:?}");

    let d = n.run("DEL", "vm1", Some(&path), "net1", &c);
    assert_eq!(d.code, 0, "{d:?}");
    assert_eq!(
        nsim.vf_info(&n.t.host, 0),
        orig0,
        "exact original VF settings"
    );
    assert_eq!(n.host_snapshot(), host_before);

    // A failed ADD (IPAM refuses) puts the real PF back as it was.
    let mut bad = c.clone();
    bad["ipam"] = json!({"type": "static", "addresses": [{"address": "not-an-address"}]});
    let f = n.run("ADD", "vm3", Some(&path), "net1", &bad);
    assert_ne!(f.code, 0, "{f:?}");
    assert_eq!(
        nsim.vf_info(&n.t.host, 0),
        orig0,
        "rolled back on the kernel"
    );
    assert_eq!(n.host_snapshot(), host_before);

    // DPDK mode on the real PF: PF-side settings only, then restored.
    let dp = n.conf(
        "1.1.0",
        1,
        json!({"vlan": 77, "vlanQoS": 2, "link_state": "enable"}),
    );
    let r = n
        .run("ADD", "vm2", Some(&path), "net2", &dp)
        .result()
        .clone();
    assert_eq!(r["interfaces"][0]["pciID"], "0000:5e:00.2");
    assert_eq!(
        nsim.vf_info(&n.t.host, 1)["vlan_list"],
        json!([{"vlan": 77, "qos": 2}]),
        "iproute2 names only a non-default protocol"
    );
    assert_eq!(n.run("DEL", "vm2", Some(&path), "net2", &dp).code, 0);
    assert_eq!(nsim.vf_info(&n.t.host, 1), orig1);
}
