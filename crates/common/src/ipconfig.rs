//! Applying a result's addresses and routes to a pod interface, and checking
//! they are still there (the reference `ConfigureIface` and CHECK validators).

use crate::error::{CniError, CniResult, Context, ErrorCode};
use crate::netlink::{Link, Netlink, RouteEntry};
use crate::netns::NetNs;
use crate::result::NetworkResult;
use crate::sysctl;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How addresses are added.
#[derive(Debug, Clone, Default)]
pub struct IfaceOptions {
    /// Keep IPv6 duplicate address detection and wait for it (up to 5 s).
    /// Off by default: the IPAM is authoritative, so addresses are added with
    /// `IFA_F_NODAD` and are usable at once.
    pub keep_dad: bool,
}

const DAD_TIMEOUT: Duration = Duration::from_secs(5);

/// The result's addresses that belong to interface `ifname`, checking each
/// index points at an interface of that name.
fn addresses_for<'r>(
    ifname: &str,
    result: &'r NetworkResult,
) -> CniResult<Vec<&'r crate::result::IpConfig>> {
    let mut mine = Vec::new();
    for ip in &result.ips {
        let Some(i) = ip.interface else { continue };
        match result.interfaces.get(i) {
            Some(iface) if iface.name == ifname => mine.push(ip),
            Some(_) => {}
            None => {
                return Err(CniError::config(format!(
                    "ip {} refers to interface index {i}, result has {} interface(s)",
                    ip.address,
                    result.interfaces.len()
                )))
            }
        }
    }
    Ok(mine)
}

fn link(nl: &mut Netlink, ifname: &str) -> CniResult<Link> {
    nl.link_by_name(ifname)?
        .ok_or_else(|| CniError::kernel(format!("interface {ifname:?} not found")))
}

/// Adds the result's addresses for `ifname`, sets it up, then adds every route
/// (a route without a gateway takes the first gateway of its family).
/// `nl` must be bound to `ns`.
pub fn configure_interface(
    ns: &NetNs,
    nl: &mut Netlink,
    ifname: &str,
    result: &NetworkResult,
    opts: &IfaceOptions,
) -> CniResult<()> {
    let l = link(nl, ifname)?;
    let ips = addresses_for(ifname, result)?;
    let has_v6 = ips.iter().any(|ip| ip.address.addr().is_ipv6());
    let name = ifname.to_string();
    ns.run(move || -> CniResult<()> {
        // Gratuitous ARP when the link comes up, as the reference plugins ask.
        sysctl::set(&format!("net/ipv4/conf/{name}/arp_notify"), "1")?;
        if has_v6 {
            for dev in ["lo", name.as_str()] {
                let key = format!("net/ipv6/conf/{dev}/disable_ipv6");
                if sysctl::get(&key)? != "0" {
                    sysctl::set(&key, "0")?;
                }
            }
            sysctl::set(&format!("net/ipv6/conf/{name}/keep_addr_on_down"), "1")?;
        }
        Ok(())
    })?
    .with_context(|| format!("prepare {ifname}"))?;
    let (mut gw4, mut gw6) = (None, None);
    for ip in &ips {
        nl.add_address(l.index, ip.address, !opts.keep_dad)
            .with_context(|| format!("configure {ifname}"))?;
        match ip.gateway {
            Some(g @ IpAddr::V4(_)) if gw4.is_none() => gw4 = Some(g),
            Some(g @ IpAddr::V6(_)) if gw6.is_none() => gw6 = Some(g),
            _ => {}
        }
    }
    nl.set_up(l.index)
        .with_context(|| format!("configure {ifname}"))?;
    if opts.keep_dad && has_v6 {
        wait_for_dad(nl, l.index, ifname)?;
    }
    for r in &result.routes {
        let v6 = r.dst.map(|d| d.addr().is_ipv6()).unwrap_or(false);
        let gw = r.gw.or(if v6 { gw6 } else { gw4 });
        let entry = RouteEntry {
            dst: r.dst,
            gw,
            oif: Some(l.index),
            table: r.table.unwrap_or(0),
            priority: r.priority,
            scope: r.scope.unwrap_or(0),
            mtu: r.mtu,
            advmss: r.advmss,
            protocol: 0,
            v6,
        };
        nl.add_route(&entry)
            .with_context(|| format!("configure {ifname}"))?;
    }
    Ok(())
}

fn wait_for_dad(nl: &mut Netlink, index: u32, ifname: &str) -> CniResult<()> {
    let start = Instant::now();
    loop {
        let addrs = nl.addresses(Some(index))?;
        if let Some(a) = addrs.iter().find(|a| a.flags & 0x08 != 0) {
            return Err(CniError::kernel(format!(
                "address {} on {ifname} failed duplicate address detection",
                a.addr
            )));
        }
        if !addrs.iter().any(|a| a.is_tentative()) {
            return Ok(());
        }
        if start.elapsed() > DAD_TIMEOUT {
            return Err(CniError::kernel(format!(
                "addresses on {ifname} still tentative after {} s of DAD",
                DAD_TIMEOUT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn check_failed(msg: String) -> CniError {
    CniError::new(ErrorCode::CheckFailed, msg)
}

/// Every address the result gives `ifname` is on the link.
pub fn check_interface_ips(
    nl: &mut Netlink,
    ifname: &str,
    result: &NetworkResult,
) -> CniResult<()> {
    let l = nl
        .link_by_name(ifname)?
        .ok_or_else(|| check_failed(format!("interface {ifname:?} is missing")))?;
    let present = nl.addresses(Some(l.index))?;
    for ip in addresses_for(ifname, result)? {
        if !present.iter().any(|a| a.addr == ip.address) {
            return Err(check_failed(format!(
                "address {} is missing from {ifname}",
                ip.address
            )));
        }
    }
    Ok(())
}

/// Every route of the result exists (destination and, if given, gateway).
pub fn check_routes(nl: &mut Netlink, result: &NetworkResult) -> CniResult<()> {
    let routes = nl.routes()?;
    for r in &result.routes {
        let want_dst = r.dst.map(|d| d.trunc());
        let found = routes.iter().any(|have| {
            let dst_match = match (want_dst, have.dst) {
                (Some(w), Some(h)) => w == h,
                (Some(w), None) => w.prefix_len() == 0 && w.addr().is_ipv6() == have.v6,
                (None, _) => false,
            };
            dst_match && r.gw.is_none_or(|g| have.gw == Some(g))
        });
        if !found {
            return Err(check_failed(format!(
                "route to {} via {} is missing",
                r.dst.map(|d| d.to_string()).unwrap_or_else(|| "?".into()),
                r.gw.map(|g| g.to_string())
                    .unwrap_or_else(|| "any gateway".into())
            )));
        }
    }
    Ok(())
}
