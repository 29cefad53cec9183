//! `manifold-sriov`: gives a pod an SR-IOV VF, config-compatible with
//! sriov-cni. The VF's original state is recorded before anything changes
//! and put back on DEL, on a failed ADD, and when a new owner takes over a VF
//! its previous owner never released; a per-VF lock and an ownership check
//! keep a late DEL of an old pod away from a VF now given to another.
//!
//! Modules: [`config`] (validation), [`pci`] (sysfs discovery), [`vf`] and
//! [`recorded`] (PF-side VF settings), [`state`] (cache and lock),
//! [`netdev`] (the VF netdev's moves), [`devinfo`] (NPWG device-info file).

mod config;
mod devinfo;
mod netdev;
mod pci;
mod recorded;
mod state;
mod vf;

use config::SriovConf;
use manifold_common::child_link::{self, Namespaces};
use manifold_common::dispatch::{self, Call, Plugin};
use manifold_common::ipam::Ipam;
use manifold_common::ipconfig::{self, IfaceOptions};
use manifold_common::mac::Mac;
use manifold_common::netlink::Netlink;
use manifold_common::netns::NetNs;
use manifold_common::result::Interface;
use manifold_common::{CniError, CniResult, Context, ErrorCode, NetworkResult};
use pci::{PciAddr, Sysfs, VfDevice};
use state::{Record, Store};
use vf::PfControl;

/// What every verb that touches VFs works with on this node.
struct Node {
    host: NetNs,
    host_nl: Netlink,
    pfc: Box<dyn PfControl>,
    sysfs: Sysfs,
    store: Store,
}

impl Node {
    fn open(conf: &SriovConf) -> CniResult<Self> {
        Ok(Node {
            host: NetNs::current()?,
            host_nl: Netlink::open().context("open netlink in host netns")?,
            pfc: vf::controller()?,
            sysfs: Sysfs::from_env(),
            store: Store::open(&conf.data_dir)?,
        })
    }

    /// Puts back everything `rec` recorded: PF-side settings first (some
    /// drivers refuse netdev changes of an untrusted VF), then the netdev,
    /// from `pod` if given, else wherever sysfs finds it.
    ///
    /// A VF whose device is gone (its PF's VFs were removed) has nothing
    /// left to restore. Both halves are attempted; the first error is returned.
    fn release(&mut self, rec: &Record, pod: Option<&NetNs>) -> CniResult<()> {
        let pci = rec.pci()?;
        if let Some(f) = &rec.device_info_file {
            devinfo::remove(f);
        }
        if !self.sysfs.exists(&pci) {
            tracing::warn!(%pci, "VF device no longer exists: nothing to restore");
            return Ok(());
        }
        let pf = self
            .pfc
            .apply(&rec.pf, rec.vf, &rec.applied.restoring(&rec.original))
            .with_context(|| format!("restore VF {pci} settings"));
        let nd = match &rec.netdev {
            None => Ok(()),
            Some(orig) => {
                let at = netdev::Whereabouts {
                    pod: pod.map(|p| (p, rec.ifname.as_str())),
                    host: self.sysfs.netdev(&pci),
                };
                netdev::release(&pci, &self.host, &mut self.host_nl, at, orig)
                    .with_context(|| format!("return VF {pci} netdev to the host"))
                    .map(|found| {
                        if !found {
                            tracing::warn!(%pci, name = %orig.name, "VF netdev not found: only the PF side was restored");
                        }
                    })
            }
        };
        pf.and(nd)
    }

    /// The VF recorded for attachment (`container`, `ifname`), if any.
    fn owned_vf(&self, container: &str, ifname: &str) -> CniResult<Option<PciAddr>> {
        for pci in self.store.vfs()? {
            if self
                .store
                .load(&pci)?
                .is_some_and(|r| r.owned_by(container, ifname))
            {
                return Ok(Some(pci));
            }
        }
        Ok(None)
    }

    /// A record left by an earlier ADD of this VF. Its owner never released
    /// it: if that owner's netns is gone, restore the VF so the new owner
    /// starts from the VF's true original state; if it still exists, the VF
    /// is still in use.
    fn take_over(&mut self, call: &Call, pod: &NetNs, prev: Record) -> CniResult<()> {
        let pci = prev.pci()?;
        let ours = prev.owned_by(&call.env.container_id, &call.env.ifname);
        let prev_ns = prev
            .netns
            .as_deref()
            .and_then(|p| NetNs::open(std::path::Path::new(p)).ok());
        let use_ns = match (ours, prev_ns) {
            (true, _) => Some(NetNs::open(pod.path())?),
            (false, None) => None,
            (false, Some(ns)) => {
                return Err(CniError::new(
                    ErrorCode::TryAgainLater,
                    format!(
                        "VF {pci} still belongs to container {} (netns {} exists): it must be deleted first",
                        prev.container_id,
                        ns.path().display()
                    ),
                ))
            }
        };
        tracing::warn!(%pci, previous = %prev.container_id, "VF was never released: restoring it before reuse");
        self.release(&prev, use_ns.as_ref())?;
        self.store.remove(&pci)
    }
}

struct Sriov;

/// The netns of a DEL/GC, if it still exists.
fn open_if_exists(path: Option<&std::path::Path>) -> CniResult<Option<NetNs>> {
    match path.map(NetNs::open) {
        None => Ok(None),
        Some(Ok(ns)) => Ok(Some(ns)),
        Some(Err(e)) if e.code == ErrorCode::UnknownContainer => Ok(None),
        Some(Err(e)) => Err(e),
    }
}

/// ADD after the record is saved: PF side, netdev, IPAM, device-info.
/// `ipam_done` tells the caller's rollback whether IPAM holds an allocation.
fn configure(
    node: &mut Node,
    call: &Call,
    conf: &SriovConf,
    dev: &VfDevice,
    pod: &NetNs,
    rec: &mut Record,
    ipam_done: &mut bool,
) -> CniResult<NetworkResult> {
    let pci = &dev.pci;
    let ifname = &call.env.ifname;
    node.pfc
        .apply(&rec.pf, rec.vf, &rec.applied)
        .with_context(|| format!("configure VF {pci}"))?;
    let ipam = Ipam::of(&call.conf, &call.env, &call.stdin);
    let mut result = match &rec.netdev {
        Some(nd) => {
            let mut pod_nl = Netlink::open_in(pod).context("open netlink in pod netns")?;
            let link = netdev::attach(
                pci,
                &mut node.host_nl,
                &nd.name,
                netdev::Pod {
                    ns: pod,
                    nl: &mut pod_nl,
                    ifname,
                },
                conf.mac,
                conf.mtu,
            )?;
            let mut ns = Namespaces {
                pod: NetNs::open(pod.path())?,
                pod_nl,
                master_nl: Netlink::open().context("open netlink in host netns")?,
                master_in_pod: false,
            };
            let r = child_link::address(call, &mut ns, &link, false, &IfaceOptions::default())?;
            *ipam_done = ipam.is_some();
            r
        }
        None => {
            let mut r = match &ipam {
                Some(i) => {
                    let r = i.add()?;
                    *ipam_done = true;
                    r
                }
                None => NetworkResult::default(),
            };
            let admin = conf
                .mac
                .or(Some(rec.original.mac).filter(|m| m.0 != [0; 6]));
            r.interfaces = vec![Interface {
                name: ifname.clone(),
                mac: admin.map(|m: Mac| m.to_string()),
                sandbox: Some(pod.path().display().to_string()),
                ..Default::default()
            }];
            for ip in &mut r.ips {
                ip.interface = Some(0);
            }
            r.dns = call.conf.dns.clone();
            r
        }
    };
    result.interfaces[0].pci_id = Some(pci.to_string());
    let info_path = conf.device_info_file.clone().or_else(|| {
        rec.dpdk.then(|| {
            devinfo::default_path(
                &conf.device_info_dir,
                &call.conf.name,
                &call.env.container_id,
                ifname,
            )
        })
    });
    if let Some(p) = info_path {
        if devinfo::write(&p, pci, &dev.pf_pci)? {
            rec.device_info_file = Some(p);
            node.store.save(rec)?;
        }
    }
    Ok(result)
}

impl Plugin for Sriov {
    fn add(&self, call: &Call) -> CniResult<NetworkResult> {
        let conf = SriovConf::load(call)?;
        let pci = conf.require_device()?.clone();
        let sysfs = Sysfs::from_env();
        let dev = sysfs.vf(&pci)?;
        let pod = NetNs::of_call(&call.env)?;
        let mut node = Node::open(&conf)?;
        let _lock = node.store.lock(&pci)?;
        if let Some(prev) = node.store.load(&pci)? {
            node.take_over(call, &pod, prev)?;
        }
        let netdev = if dev.is_dpdk() {
            if conf.mtu.is_some() {
                tracing::warn!(%pci, "mtu ignored: a DPDK VF has no netdev");
            }
            None
        } else {
            let sys = sysfs.netdev(&pci).ok_or_else(|| {
                CniError::config(format!(
                    "VF {pci} has no netdev in the host and its driver ({}) is not a DPDK driver",
                    dev.driver.as_deref().unwrap_or("none")
                ))
            })?;
            Some(netdev::host_state(&mut node.host_nl, &pci, &sys)?)
        };
        let original = node
            .pfc
            .state(&dev.pf_name, dev.index)
            .with_context(|| format!("read VF {pci} state"))?;
        let mut rec = Record {
            pci: pci.to_string(),
            network: call.conf.name.clone(),
            container_id: call.env.container_id.clone(),
            ifname: call.env.ifname.clone(),
            netns: Some(pod.path().display().to_string()),
            pf: dev.pf_name.clone(),
            vf: dev.index,
            dpdk: dev.is_dpdk(),
            applied: conf.settings(&original),
            original,
            netdev,
            device_info_file: None,
        };
        node.store.save(&rec)?;
        let mut ipam_done = false;
        configure(&mut node, call, &conf, &dev, &pod, &mut rec, &mut ipam_done).inspect_err(|e| {
            tracing::warn!(error = %e, %pci, "ADD failed: restoring the VF");
            if ipam_done {
                if let Some(i) = Ipam::of(&call.conf, &call.env, &call.stdin) {
                    if let Err(d) = i.del() {
                        tracing::error!(error = %d, "rollback: IPAM DEL failed");
                    }
                }
            }
            match node.release(&rec, Some(&pod)) {
                Ok(()) => {
                    if let Err(r) = node.store.remove(&pci) {
                        tracing::error!(error = %r, "rollback: remove record");
                    }
                }
                Err(r) => {
                    tracing::error!(error = %r, %pci, "rollback failed: record kept for DEL")
                }
            }
        })
    }

    fn del(&self, call: &Call) -> CniResult<()> {
        let conf = match SriovConf::load(call) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "DEL: config does not validate; releasing from the record");
                SriovConf::for_release(call)?
            }
        };
        let mut node = Node::open(&conf)?;
        let (container, ifname) = (&call.env.container_id, &call.env.ifname);
        let vf_result = (|| {
            let pci = match &conf.device_id {
                Some(p) => Some(p.clone()),
                None => node.owned_vf(container, ifname)?,
            };
            let Some(pci) = pci else {
                tracing::debug!("DEL: no VF recorded for this attachment");
                return Ok(());
            };
            let _lock = node.store.lock(&pci)?;
            match node.store.load(&pci)? {
                None => tracing::debug!(%pci, "DEL: VF already released"),
                Some(rec) if !rec.owned_by(container, ifname) => tracing::info!(
                    %pci,
                    owner = %rec.container_id,
                    "DEL: the VF now belongs to another attachment; leaving it alone"
                ),
                Some(rec) => {
                    let pod = open_if_exists(call.env.netns.as_deref())?;
                    node.release(&rec, pod.as_ref())?;
                    node.store.remove(&pci)?;
                }
            }
            Ok(())
        })();
        let ipam_result = match Ipam::of(&call.conf, &call.env, &call.stdin) {
            Some(i) => i.del(),
            None => Ok(()),
        };
        vf_result.and(ipam_result)
    }

    fn check(&self, call: &Call) -> CniResult<()> {
        let conf = SriovConf::load(call)?;
        let prev = call.conf.prev_result.as_ref().ok_or_else(|| {
            CniError::config("CHECK needs a prevResult (the result of this attachment's ADD)")
        })?;
        let mut node = Node::open(&conf)?;
        let (container, ifname) = (&call.env.container_id, &call.env.ifname);
        let pci = match &conf.device_id {
            Some(p) => p.clone(),
            None => node
                .owned_vf(container, ifname)?
                .ok_or_else(|| child_link::fail("no VF is recorded for this attachment".into()))?,
        };
        let rec = {
            let _lock = node.store.lock(&pci)?;
            node.store.load(&pci)?
        }
        .filter(|r| r.owned_by(container, ifname))
        .ok_or_else(|| child_link::fail(format!("VF {pci} is not attached to this container")))?;
        let state = node.pfc.state(&rec.pf, rec.vf)?;
        if let Some(m) = rec.applied.mismatch(&state) {
            return Err(child_link::fail(format!("VF {pci}: {m}")));
        }
        if let Some(ipam) = Ipam::of(&call.conf, &call.env, &call.stdin) {
            ipam.check()?;
        }
        if rec.dpdk {
            return Ok(());
        }
        let pod = NetNs::of_call(&call.env)?;
        let mut nl = Netlink::open_in(&pod).context("open netlink in pod netns")?;
        let link = nl.link_by_name(ifname)?.ok_or_else(|| {
            child_link::fail(format!("interface {ifname:?} is missing from the pod"))
        })?;
        let sandbox = pod.path().display().to_string();
        let i = prev
            .interface_index(ifname, Some(&sandbox))
            .ok_or_else(|| {
                child_link::fail(format!(
                    "prevResult has no interface {ifname:?} in sandbox {sandbox}"
                ))
            })?;
        if let Some(want) = prev.interfaces[i].mac.as_deref() {
            let want: Mac = want.parse()?;
            if link.mac != Some(want) {
                return Err(child_link::fail(format!(
                    "interface {ifname:?} has MAC {}, prevResult says {want}",
                    link.mac.map(|m| m.to_string()).unwrap_or_default()
                )));
            }
        }
        if let Some(mtu) = conf.mtu.filter(|m| *m != link.mtu) {
            return Err(child_link::fail(format!(
                "interface {ifname:?} has MTU {}, config says {mtu}",
                link.mtu
            )));
        }
        ipconfig::check_interface_ips(&mut nl, ifname, prev)?;
        ipconfig::check_routes(&mut nl, prev)
    }

    fn gc(&self, call: &Call) -> CniResult<()> {
        let conf = SriovConf::load(call)?;
        let mut first_err = None;
        if let Some(valid) = &call.conf.valid_attachments {
            let mut node = Node::open(&conf)?;
            for pci in node.store.vfs()? {
                let r = (|| {
                    let _lock = node.store.lock(&pci)?;
                    let Some(rec) = node.store.load(&pci)? else {
                        return Ok(());
                    };
                    if rec.network != call.conf.name
                        || valid
                            .iter()
                            .any(|a| rec.owned_by(&a.container_id, &a.ifname))
                    {
                        return Ok(());
                    }
                    tracing::info!(%pci, owner = %rec.container_id, "GC: releasing a VF of a stale attachment");
                    let pod = open_if_exists(rec.netns.as_deref().map(std::path::Path::new))?;
                    node.release(&rec, pod.as_ref())?;
                    node.store.remove(&pci)
                })();
                if let Err(e) = r {
                    tracing::error!(error = %e, %pci, "GC: release failed");
                    first_err.get_or_insert(e);
                }
            }
        }
        let ipam = child_link::forward_if_supported(call, |ipam| ipam.gc());
        match first_err {
            Some(e) => Err(e),
            None => ipam,
        }
    }

    fn status(&self, call: &Call) -> CniResult<()> {
        let conf = SriovConf::load(call)?;
        let unavailable = |msg: String| CniError::new(ErrorCode::PluginNotAvailable, msg);
        Store::open(&conf.data_dir).map_err(|e| unavailable(e.msg))?;
        let devices = Sysfs::from_env().devices_dir();
        std::fs::read_dir(&devices)
            .map_err(|e| unavailable(format!("cannot list {}: {e}", devices.display())))?;
        child_link::forward_if_supported(call, |ipam| ipam.status())
    }
}

fn main() {
    // manifold-ipam runs in this process: no second exec per call.
    manifold_common::ipam::link_in_process("manifold-ipam", &manifold_ipam::plugin::Ipam);
    dispatch::main(&Sriov)
}
