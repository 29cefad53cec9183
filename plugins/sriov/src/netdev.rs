//! The VF's netdev: into the pod under the requested name, and back to the
//! host under its original name, MAC and MTU.
//!
//! While it moves, the netdev carries a transit name derived from its PCI
//! address ([`PciAddr::transit_name`]), which cannot collide with a name in
//! use on either side and lets a later call find a netdev an interrupted call
//! left half-way. A link whose kernel reports a parent device is only taken
//! for the VF if that parent is the VF.

use crate::pci::{PciAddr, SysNetdev};
use crate::state::NetdevState;
use manifold_common::mac::Mac;
use manifold_common::netlink::{Link, Netlink};
use manifold_common::netns::NetNs;
use manifold_common::{CniError, CniResult, Context};
use netlink_packet_route::link::LinkAttribute;

/// Whether `link` can be the VF at `pci`: a kernel that reports the link's
/// parent device must report that VF.
fn is_vf(nl: &mut Netlink, link: &Link, pci: &PciAddr) -> CniResult<bool> {
    let Some(msg) = nl.link_message_by_name(&link.name, false)? else {
        return Ok(false);
    };
    Ok(msg.attributes.iter().all(|a| match a {
        LinkAttribute::ParentDevName(p) => p == pci.as_str(),
        _ => true,
    }))
}

/// The first of `names` that is a link of the VF in `nl`'s netns.
fn by_names(nl: &mut Netlink, pci: &PciAddr, names: &[&str]) -> CniResult<Option<Link>> {
    for name in names {
        if let Some(l) = nl.link_by_name(name)? {
            if is_vf(nl, &l, pci)? {
                return Ok(Some(l));
            }
        }
    }
    Ok(None)
}

/// The VF's netdev in the host as sysfs lists it: by index (which survives
/// renames), else by name.
fn by_sysfs(nl: &mut Netlink, pci: &PciAddr, sys: &SysNetdev) -> CniResult<Option<Link>> {
    let l = match sys.ifindex {
        Some(i) => nl.link_by_index(i)?,
        None => nl.link_by_name(&sys.name)?,
    };
    match l {
        Some(l) if is_vf(nl, &l, pci)? => Ok(Some(l)),
        _ => Ok(None),
    }
}

/// The host-side state of the VF's netdev, which must be in the host.
pub fn host_state(host_nl: &mut Netlink, pci: &PciAddr, sys: &SysNetdev) -> CniResult<NetdevState> {
    let l = by_sysfs(host_nl, pci, sys)?.ok_or_else(|| {
        CniError::config(format!(
            "VF {pci} netdev {:?} is not in the host network namespace",
            sys.name
        ))
    })?;
    Ok(NetdevState {
        name: l.name,
        mac: l.mac.map(|m| m.to_string()).unwrap_or_default(),
        mtu: l.mtu,
        up: l.up,
    })
}

/// The pod side of an attachment.
pub struct Pod<'a> {
    /// The pod's netns.
    pub ns: &'a NetNs,
    /// A socket in it.
    pub nl: &'a mut Netlink,
    /// The VF's name there.
    pub ifname: &'a str,
}

/// Moves host netdev `name` into the pod under its ifname, with the MAC and
/// MTU asked for; returns the link as the pod sees it. On failure the netdev
/// may be left anywhere on the way: [`release`] finds it.
pub fn attach(
    pci: &PciAddr,
    host_nl: &mut Netlink,
    name: &str,
    pod: Pod,
    mac: Option<Mac>,
    mtu: Option<u32>,
) -> CniResult<Link> {
    let Pod {
        ns,
        nl: pod_nl,
        ifname,
    } = pod;
    let transit = pci.transit_name();
    let l = host_nl
        .link_by_name(name)?
        .ok_or_else(|| CniError::kernel(format!("VF netdev {name:?} vanished")))?;
    if pod_nl.link_by_name(ifname)?.is_some() {
        return Err(CniError::config(format!(
            "interface {ifname:?} already exists in the pod netns"
        )));
    }
    host_nl.set_down(l.index).context("take VF netdev down")?;
    host_nl
        .rename_link(l.index, &transit)
        .with_context(|| format!("rename VF netdev {name:?}"))?;
    host_nl
        .move_to_netns(l.index, ns)
        .context("move VF netdev to the pod")?;
    let moved = pod_nl
        .link_by_name(&transit)?
        .ok_or_else(|| CniError::kernel(format!("VF netdev {transit:?} not in the pod")))?;
    pod_nl
        .rename_link(moved.index, ifname)
        .with_context(|| format!("rename VF netdev to {ifname:?}"))?;
    if let Some(m) = mac {
        pod_nl.set_mac(moved.index, m).context("VF netdev")?;
    }
    if let Some(m) = mtu {
        pod_nl.set_mtu(moved.index, m).context("VF netdev")?;
    }
    pod_nl
        .link_by_index(moved.index)?
        .ok_or_else(|| CniError::kernel(format!("VF netdev {ifname:?} vanished in the pod")))
}

/// Where to look for the VF's netdev when releasing it.
pub struct Whereabouts<'a> {
    /// The pod netns and the VF's name there, when the netns still exists.
    pub pod: Option<(&'a NetNs, &'a str)>,
    /// The netdev as the host's sysfs lists it by PCI address.
    pub host: Option<SysNetdev>,
}

/// Brings the VF's netdev back to the host (from the pod if it is there) and
/// restores its name, MAC, MTU and admin state. Returns `false` when the
/// netdev is nowhere to be found (its netns and the device went away).
pub fn release(
    pci: &PciAddr,
    host: &NetNs,
    host_nl: &mut Netlink,
    at: Whereabouts,
    original: &NetdevState,
) -> CniResult<bool> {
    let transit = pci.transit_name();
    if let Some((pod, ifname)) = at.pod {
        let mut pod_nl = Netlink::open_in(pod).context("open netlink in pod netns")?;
        if let Some(l) = by_names(&mut pod_nl, pci, &[ifname, &transit])? {
            pod_nl.set_down(l.index).context("take VF netdev down")?;
            if l.name != transit {
                pod_nl
                    .rename_link(l.index, &transit)
                    .with_context(|| format!("rename pod VF netdev {:?}", l.name))?;
            }
            pod_nl
                .move_to_netns(l.index, host)
                .context("move VF netdev back to the host")?;
        }
    }
    let found = match by_names(host_nl, pci, &[&transit])? {
        Some(l) => Some(l),
        None => match &at.host {
            Some(sys) => by_sysfs(host_nl, pci, sys)?,
            None => None,
        },
    };
    let Some(l) = found else {
        return Ok(false);
    };
    host_nl.set_down(l.index).context("take VF netdev down")?;
    if l.name != original.name {
        host_nl
            .rename_link(l.index, &original.name)
            .with_context(|| format!("rename VF netdev back to {:?}", original.name))?;
    }
    if let Ok(mac) = original.mac.parse::<Mac>() {
        if l.mac != Some(mac) {
            host_nl.set_mac(l.index, mac).context("restore VF netdev")?;
        }
    }
    if l.mtu != original.mtu {
        host_nl
            .set_mtu(l.index, original.mtu)
            .context("restore VF netdev")?;
    }
    if original.up {
        host_nl.set_up(l.index).context("restore VF netdev")?;
    }
    Ok(true)
}
