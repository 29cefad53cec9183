//! The steps shared by plugins that give a pod one kernel link stacked on a
//! master (macvlan, ipvlan): create it inside the pod under a temporary name,
//! address it through IPAM (or a chained `prevResult`), roll back on failure,
//! and delete or check it later.

use crate::config::NetConf;
use crate::dispatch::Call;
use crate::error::{CniError, CniResult, Context, ErrorCode};
use crate::ipam::Ipam;
use crate::ipconfig::{self, IfaceOptions};
use crate::mac::Mac;
use crate::netlink::{Link, Netlink, NewLink};
use crate::netns::NetNs;
use crate::result::{Interface, NetworkResult};
use serde::Deserialize;
use std::num::NonZeroU32;

/// Config fields every stacked-link plugin shares, as the reference plugins spell them.
#[derive(Deserialize)]
struct WireLinkConf {
    #[serde(default)]
    master: Option<String>,
    #[serde(default)]
    mtu: Option<i64>,
    #[serde(rename = "linkInContainer", default)]
    link_in_container: bool,
    #[serde(default)]
    dad: bool,
}

/// Validated shared settings of a stacked link.
#[derive(Debug, Clone)]
pub struct LinkConf {
    /// Master link name; `None`: the default-route link (or the chained interface).
    pub master: Option<String>,
    /// MTU; `None` (0 in the config) inherits the master's.
    pub mtu: Option<u32>,
    /// The master lives in the pod's netns.
    pub link_in_container: bool,
    /// Keep IPv6 duplicate address detection (default: addresses usable at once).
    pub dad: bool,
}

impl LinkConf {
    /// Parses and checks the shared fields.
    pub fn load(conf: &NetConf) -> CniResult<Self> {
        let w: WireLinkConf = conf.plugin_fields()?;
        let mtu =
            match w.mtu {
                None | Some(0) => None,
                Some(m) => Some(u32::try_from(m).ok().filter(|m| *m <= 65535).ok_or_else(
                    || {
                        CniError::config(format!(
                            "invalid MTU {m}: must be 0 (inherit the master's) or 1..=65535"
                        ))
                    },
                )?),
            };
        let master = w.master.filter(|m| !m.is_empty());
        if let Some(m) = &master {
            crate::env::validate_ifname(m)
                .map_err(|e| CniError::config(format!("master: {}", e.msg)))?;
        }
        Ok(LinkConf {
            master,
            mtu,
            link_in_container: w.link_in_container,
            dad: w.dad,
        })
    }

    /// The MTU may not exceed the master's.
    pub fn check_mtu(&self, master: &Link) -> CniResult<()> {
        match self.mtu {
            Some(mtu) if mtu > master.mtu => Err(CniError::config(format!(
                "invalid MTU {mtu}: must be at most the master {:?}'s MTU {}",
                master.name, master.mtu
            ))),
            _ => Ok(()),
        }
    }

    /// Address options for [`address`].
    pub fn iface_options(&self) -> IfaceOptions {
        IfaceOptions { keep_dad: self.dad }
    }
}

/// The MAC a call asks for, in the reference plugins' precedence:
/// `runtimeConfig.mac`, else `CNI_ARGS MAC=`, else the config's own `mac`.
pub fn requested_mac(call: &Call, configured: Option<&str>) -> CniResult<Option<Mac>> {
    call.conf
        .runtime_config
        .mac
        .as_deref()
        .or(call.env.args.get("MAC"))
        .or(configured)
        .filter(|s| !s.is_empty())
        .map(parse_unicast_mac)
        .transpose()
}

/// Parses a MAC an interface can take (unicast, not all zeros).
pub fn parse_unicast_mac(s: &str) -> CniResult<Mac> {
    let mac: Mac = s.parse()?;
    if mac.is_unicast() {
        Ok(mac)
    } else {
        Err(CniError::config(format!(
            "MAC {s:?} cannot be an interface address: it is multicast or all zeros"
        )))
    }
}

/// Where the master link lives and where the new link is created from.
pub struct Namespaces {
    /// The pod's netns.
    pub pod: NetNs,
    /// Socket in the pod's netns.
    pub pod_nl: Netlink,
    /// Socket in the netns that holds the master: the pod's own when
    /// `linkInContainer`, else the plugin's (host) netns.
    pub master_nl: Netlink,
    /// True when the master lives in the pod's netns.
    pub master_in_pod: bool,
}

impl Namespaces {
    /// Opens the pod netns and the sockets an ADD or CHECK needs.
    pub fn open(call: &Call, link_in_container: bool) -> CniResult<Self> {
        let pod = NetNs::of_call(&call.env)?;
        let pod_nl = Netlink::open_in(&pod).context("open netlink in pod netns")?;
        let master_nl = if link_in_container {
            Netlink::open_in(&pod).context("open netlink in pod netns")?
        } else {
            Netlink::open().context("open netlink in host netns")?
        };
        Ok(Namespaces {
            pod,
            pod_nl,
            master_nl,
            master_in_pod: link_in_container,
        })
    }

    /// Looks up the master by name, or the default-route link when none is
    /// configured (the reference plugins' behaviour).
    pub fn master(&mut self, name: Option<&str>) -> CniResult<Link> {
        let place = if self.master_in_pod { "pod" } else { "host" };
        match name {
            Some(n) => self.master_nl.link_by_name(n)?.ok_or_else(|| {
                CniError::config(format!(
                    "master interface {n:?} not found in the {place} netns"
                ))
            }),
            None => {
                let idx = self.master_nl.default_route_link()?.ok_or_else(|| {
                    CniError::config(format!(
                        "no \"master\" configured and the {place} netns has no default route to take it from"
                    ))
                })?;
                self.master_nl
                    .link_by_index(idx)?
                    .ok_or_else(|| CniError::kernel(format!("default-route link {idx} vanished")))
            }
        }
    }
}

/// A temporary name for a new link: unique enough that it cannot collide
/// with a name the pod (or a concurrent call) already uses.
fn temp_name() -> String {
    let mut b = [0u8; 4];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    let pid = std::process::id();
    format!("mf{:08x}{:02x}", u32::from_ne_bytes(b), pid as u8)
}

/// Creates `new` (whose name is ignored) directly in the pod under a temporary
/// name and renames it to `ifname` there. Creating under the final name would
/// fail if the master's netns already has a link of that name, since the kernel
/// checks the name in the netns the request is sent from. Returns the link as
/// read back from the pod.
pub fn create_in_pod<'a>(
    ns: &'a mut Namespaces,
    mut new: NewLink<'a>,
    ifname: &str,
) -> CniResult<Link> {
    new.name = temp_name();
    let tmp = new.name.clone();
    new.netns = if ns.master_in_pod {
        None
    } else {
        Some(&ns.pod)
    };
    ns.master_nl
        .create_link(&new)
        .with_context(|| format!("create link {ifname:?}"))?;
    let created = ns
        .pod_nl
        .link_by_name(&tmp)?
        .ok_or_else(|| CniError::kernel(format!("created link {tmp:?} is not in the pod netns")))?;
    let renamed = if ns.pod_nl.link_by_name(ifname)?.is_some() {
        Err(CniError::new(
            ErrorCode::InvalidConfig,
            format!("interface {ifname:?} already exists in the pod netns"),
        ))
    } else {
        ns.pod_nl
            .rename_link(created.index, ifname)
            .with_context(|| format!("rename {tmp:?} to {ifname:?}"))
    };
    if let Err(e) = renamed {
        let _ = ns.pod_nl.delete_link(created.index);
        return Err(e);
    }
    ns.pod_nl
        .link_by_index(created.index)?
        .ok_or_else(|| CniError::kernel(format!("link {ifname:?} vanished after rename")))
}

/// Addresses a freshly created link: from IPAM when configured, else from a
/// chained `prevResult` with addresses (`use_prev_result`), else L2 only (link
/// up, no address). Rolls back the IPAM allocation if configuring fails; the
/// caller deletes the link.
pub fn address(
    call: &Call,
    ns: &mut Namespaces,
    link: &Link,
    use_prev_result: bool,
    opts: &IfaceOptions,
) -> CniResult<NetworkResult> {
    let ifname = &call.env.ifname;
    let iface = Interface {
        name: ifname.clone(),
        mac: link.mac.map(|m| m.to_string()),
        mtu: Some(link.mtu),
        sandbox: Some(ns.pod.path().display().to_string()),
        ..Default::default()
    };
    let ipam = Ipam::of(&call.conf, &call.env, &call.stdin);
    let mut result = match (&ipam, &call.conf.prev_result) {
        (Some(ipam), _) => ipam.add()?,
        (None, Some(prev)) if use_prev_result && !prev.ips.is_empty() => prev.clone(),
        (None, _) => {
            ns.pod_nl.set_up(link.index).context("set link up")?;
            return Ok(NetworkResult {
                interfaces: vec![iface],
                dns: call.conf.dns.clone(),
                ..Default::default()
            });
        }
    };
    result.interfaces = vec![iface];
    for ip in &mut result.ips {
        ip.interface = Some(0);
    }
    // The reference plugins report the config's `dns`, not IPAM's: keep their
    // results identical so a NAD switched to Manifold reports the same thing.
    result.dns = call.conf.dns.clone();
    let configured = ipconfig::configure_interface(&ns.pod, &mut ns.pod_nl, ifname, &result, opts);
    if let Err(e) = configured {
        if let Some(ipam) = &ipam {
            if let Err(d) = ipam.del() {
                tracing::error!(error = %d, "rollback: IPAM DEL failed");
            }
        }
        return Err(e);
    }
    Ok(result)
}

/// ADD's common part: creates `new` in the pod as `CNI_IFNAME` and gives it
/// its addresses (see [`address`]); if that fails the link is removed again.
/// `what` names the link in errors ("macvlan on master \"eth1\"").
pub fn attach(
    call: &Call,
    ns: &mut Namespaces,
    new: NewLink<'_>,
    what: &str,
    use_prev_result: bool,
    opts: &IfaceOptions,
) -> CniResult<NetworkResult> {
    let link = create_in_pod(ns, new, &call.env.ifname).map_err(|e| e.context(what))?;
    address(call, ns, &link, use_prev_result, opts).inspect_err(|_| rollback_link(ns, &link))
}

/// CHECK of a link's mode: `found` (what the kernel reports) must be `want`.
pub fn expect_mode(kind: &str, link: &Link, found: Option<&str>, want: &str) -> CniResult<()> {
    match found {
        Some(m) if m == want => Ok(()),
        found => Err(fail(format!(
            "{kind} {:?} is in mode {}, config says {want}",
            link.name,
            found.unwrap_or("unknown"),
        ))),
    }
}

/// Deletes the link a failed ADD created; errors are logged, not returned,
/// so the original failure is what the runtime sees.
pub fn rollback_link(ns: &mut Namespaces, link: &Link) {
    if let Err(e) = ns.pod_nl.delete_link(link.index) {
        tracing::error!(error = %e, link = %link.name, "rollback: delete link failed");
    }
}

/// Internal protocol between the `manifold` meta-plugin and its own
/// delegates (manifold-macvlan, manifold-ipvlan); not part of CNI, and
/// runtimes never set it. When it holds a nonzero link group G, DEL does
/// everything as usual except deleting the pod's link: it puts the link into
/// group G instead, and the meta-plugin deletes the whole group in one request
/// (the kernel then waits out one RCU grace period for all of its attachments
/// instead of one per link). Any other value is ignored with a warning.
pub const LINK_DELETE_GROUP_ENV: &str = "MANIFOLD_LINK_DELETE_GROUP";

/// DEL: always releases IPAM, then deletes `ifname` from the pod if it is a
/// link of `kind` (or hands it over to the caller, see
/// [`LINK_DELETE_GROUP_ENV`]). A missing netns or link is success; an IPAM
/// failure is reported after the link is gone.
pub fn delete(call: &Call, kind: &str) -> CniResult<()> {
    let ipam_result = match Ipam::of(&call.conf, &call.env, &call.stdin) {
        Some(ipam) => ipam.del(),
        None => Ok(()),
    };
    if let Some(path) = call.env.netns.as_deref() {
        match NetNs::open(path) {
            Ok(pod) => delete_link_named(&pod, &call.env.ifname, kind, deferred_group())?,
            Err(e) if e.code == ErrorCode::UnknownContainer => {
                tracing::debug!(netns = %path.display(), "DEL: netns already gone");
            }
            Err(e) => return Err(e),
        }
    }
    ipam_result
}

/// The link group DEL hands the link over in, from [`LINK_DELETE_GROUP_ENV`].
fn deferred_group() -> Option<NonZeroU32> {
    parse_delete_group(
        std::env::var_os(LINK_DELETE_GROUP_ENV)
            .map(|v| v.to_string_lossy().into_owned())
            .as_deref(),
    )
}

/// A [`LINK_DELETE_GROUP_ENV`] value: unset or empty is `None`; so is one that
/// is not a nonzero u32, with a warning (the link is then deleted as usual).
fn parse_delete_group(value: Option<&str>) -> Option<NonZeroU32> {
    let value = value.filter(|v| !v.is_empty())?;
    value
        .parse()
        .inspect_err(|_| {
            tracing::warn!(
                value,
                "ignoring {LINK_DELETE_GROUP_ENV}: not a nonzero link group; deleting the link"
            )
        })
        .ok()
}

/// Deletes `ifname` if it is a link of `kind`, or with `defer_to` only puts it
/// into that link group for the caller to delete.
fn delete_link_named(
    pod: &NetNs,
    ifname: &str,
    kind: &str,
    defer_to: Option<NonZeroU32>,
) -> CniResult<()> {
    let mut nl = Netlink::open_in(pod).context("open netlink in pod netns")?;
    match nl.link_by_name(ifname)? {
        Some(l) if l.kind.as_deref() == Some(kind) => match defer_to {
            Some(group) => {
                nl.set_group(l.index, group.get()).with_context(|| {
                    format!("hand {kind} link {ifname:?} over for deletion in group {group}")
                })?;
                tracing::debug!(
                    ifname,
                    group = group.get(),
                    "DEL: link left for the caller to delete"
                );
            }
            None => {
                nl.delete_link(l.index)
                    .with_context(|| format!("delete {kind} link {ifname:?}"))?;
            }
        },
        Some(l) => tracing::warn!(
            ifname,
            found = l.kind.as_deref().unwrap_or("unknown"),
            expected = kind,
            "DEL: leaving a link that is not ours"
        ),
        None => tracing::debug!(ifname, "DEL: link already gone"),
    }
    Ok(())
}

/// CHECK: the pod has `ifname` as the prevResult describes it (kind and MAC,
/// with `extra` checking plugin-specific attributes), with its addresses and routes.
pub fn check(
    call: &Call,
    kind: &str,
    link_in_container: bool,
    extra: impl FnOnce(&Link) -> CniResult<()>,
) -> CniResult<()> {
    let conf: &NetConf = &call.conf;
    let prev = conf.prev_result.as_ref().ok_or_else(|| {
        CniError::config("CHECK needs a prevResult (the result of this attachment's ADD)")
    })?;
    if let Some(ipam) = Ipam::of(conf, &call.env, &call.stdin) {
        ipam.check()?;
    }
    let mut ns = Namespaces::open(call, link_in_container)?;
    let sandbox = ns.pod.path().display().to_string();
    let ifname = &call.env.ifname;
    let i = prev
        .interface_index(ifname, Some(&sandbox))
        .ok_or_else(|| {
            fail(format!(
                "prevResult has no interface {ifname:?} in sandbox {sandbox}"
            ))
        })?;
    let link = ns
        .pod_nl
        .link_by_name(ifname)?
        .ok_or_else(|| fail(format!("interface {ifname:?} is missing from the pod")))?;
    if link.kind.as_deref() != Some(kind) {
        return Err(fail(format!(
            "interface {ifname:?} is {}, expected {kind}",
            link.kind.as_deref().unwrap_or("of unknown kind")
        )));
    }
    if let Some(want) = prev.interfaces[i].mac.as_deref() {
        let want: Mac = want.parse()?;
        if link.mac != Some(want) {
            return Err(fail(format!(
                "interface {ifname:?} has MAC {}, prevResult says {want}",
                link.mac.map(|m| m.to_string()).unwrap_or_default()
            )));
        }
    }
    extra(&link)?;
    ipconfig::check_interface_ips(&mut ns.pod_nl, ifname, prev)?;
    ipconfig::check_routes(&mut ns.pod_nl, prev)
}

/// A CHECK failure (code 102).
pub fn fail(msg: String) -> CniError {
    CniError::new(ErrorCode::CheckFailed, msg)
}

/// GC and STATUS are forwarded to IPAM only when it speaks 1.1.0; an older
/// IPAM (such as the reference host-local) has nothing to collect or report.
pub fn forward_if_supported(
    call: &Call,
    verb: impl FnOnce(&Ipam) -> CniResult<()>,
) -> CniResult<()> {
    let Some(ipam) = Ipam::of(&call.conf, &call.env, &call.stdin) else {
        return Ok(());
    };
    if ipam.speaks_gc_status()? {
        verb(&ipam)
    } else {
        tracing::debug!("IPAM predates CNI 1.1.0: nothing to forward");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_group_is_a_nonzero_u32_or_nothing() {
        assert_eq!(parse_delete_group(None), None);
        assert_eq!(parse_delete_group(Some("")), None);
        assert_eq!(
            parse_delete_group(Some("1296433153")),
            NonZeroU32::new(0x4d46_0001)
        );
        assert_eq!(
            parse_delete_group(Some("4294967295")),
            NonZeroU32::new(u32::MAX)
        );
        for bad in ["0", "-1", "4294967296", "0x4d460001", "12ab", " 7"] {
            assert_eq!(parse_delete_group(Some(bad)), None, "{bad:?}");
        }
    }
}
