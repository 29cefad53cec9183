//! Deferred deletion of the links Manifold's own delegates made. Deleting a
//! link costs the kernel an RCU grace period (~20 ms), even for links deleted
//! concurrently; one request deleting a whole link group pays it once. So on
//! DEL, the delegates that speak [`LINK_DELETE_GROUP_ENV`] only put their
//! link into a group chosen for this call, and as soon as the last of them has
//! finished, the group is deleted at once, while slower delegates still run.
//! Where nothing in an attachment's DEL needs its link (one such delegate,
//! its IPAM never touching the link), the meta-plugin does not even wait for
//! the delegate: it puts that link into the group itself and deletes the group
//! at once, beside the delegates' DELs (which then find the link gone).

use crate::plan::Attachment;
use manifold_common::child_link::LINK_DELETE_GROUP_ENV;
use manifold_common::netlink::Netlink;
use manifold_common::netns::NetNs;
use manifold_common::{CniError, CniResult, Context, ErrorCode};
use serde_json::Value;
use std::hash::BuildHasher;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Delegates whose DEL hands their link over (see [`LINK_DELETE_GROUP_ENV`]),
/// with the kind of link each makes.
const DEFERRING_PLUGINS: [(&str, &str); 2] = [
    ("manifold-macvlan", "macvlan"),
    ("manifold-ipvlan", "ipvlan"),
];

/// IPAM types whose DEL never needs the pod's link ("" is no IPAM).
const LINKLESS_IPAM: [&str; 4] = ["", "manifold-ipam", "host-local", "static"];

/// High bits of every group this plugin picks ("MF"): far from the small
/// numbers administrators give groups.
const GROUP_BASE: u32 = 0x4d46_0000;

/// The deferred links of one DEL of a pod's attachments.
pub struct DeferredLinks<'a> {
    group: NonZeroU32,
    netns: Option<&'a Path>,
    /// Deferring attachments (not deleted up front) whose DEL has not finished yet.
    pending: AtomicUsize,
    /// Names the deferring attachments, for errors.
    networks: Vec<String>,
    /// (ifname, link kind) of the links deleted before their delegates run.
    up_front: Vec<(String, &'static str)>,
    error: Mutex<Option<CniError>>,
}

impl<'a> DeferredLinks<'a> {
    /// For deleting `atts` from the pod at `netns` (`None`: no netns, nothing to delete).
    pub fn new(netns: Option<&'a Path>, atts: &[Attachment]) -> Self {
        let networks: Vec<String> = atts
            .iter()
            .filter(|a| defers(a))
            .map(|a| format!("{:?} ({})", a.network, a.ifname))
            .collect();
        let up_front = atts
            .iter()
            .filter_map(|a| up_front_kind(a).map(|k| (a.ifname.clone(), k)))
            .collect();
        let pending = atts.iter().filter(|a| tagged_by_delegate(a)).count();
        DeferredLinks {
            group: random_group(),
            netns,
            pending: AtomicUsize::new(pending),
            networks,
            up_front,
            error: Mutex::new(None),
        }
    }

    /// The environment `att`'s delegates get: the group for a deferring
    /// attachment, nothing for the others (a third-party plugin could pass it
    /// on to a nested Manifold delegate this call does not wait for).
    pub fn env_for(&self, att: &Attachment) -> Vec<(&'static str, String)> {
        if defers(att) {
            vec![(LINK_DELETE_GROUP_ENV, self.group.to_string())]
        } else {
            Vec::new()
        }
    }

    /// Records that `att`'s DEL has finished (failed or not): after the last
    /// deferring attachment whose link was not deleted up front, deletes the group.
    pub fn finished(&self, att: &Attachment) {
        if tagged_by_delegate(att) && self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Err(e) = self.delete_group() {
                self.error.lock().expect("error lock").get_or_insert(e);
            }
        }
    }

    /// Puts the links no DEL needs into the group and deletes it now (run
    /// beside the delegates); a failure is kept for [`Self::into_error`].
    pub fn delete_up_front(&self) {
        if self.up_front.is_empty() {
            return;
        }
        let tagged = self.with_pod_netlink(|nl| {
            let mut tagged = 0;
            for (ifname, kind) in &self.up_front {
                match nl.link_by_name(ifname)? {
                    Some(l) if l.kind.as_deref() == Some(kind) => {
                        tagged += usize::from(nl.set_group(l.index, self.group.get())?);
                    }
                    _ => {}
                }
            }
            Ok(tagged)
        });
        let result = match tagged {
            Ok(0) => Ok(()),
            Ok(_) => self.delete_group(),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            self.error.lock().expect("error lock").get_or_insert(e);
        }
    }

    /// Why the group could not be deleted, if it could not.
    pub fn into_error(self) -> Option<CniError> {
        self.error.into_inner().expect("error lock")
    }

    /// Runs `f` on a netlink socket in the pod netns; nothing (a default)
    /// without a netns or when it is gone.
    fn with_pod_netlink<T: Default>(
        &self,
        f: impl FnOnce(&mut Netlink) -> CniResult<T>,
    ) -> CniResult<T> {
        let Some(path) = self.netns else {
            return Ok(T::default());
        };
        let pod = match NetNs::open(path) {
            Ok(pod) => pod,
            Err(e) if e.code == ErrorCode::UnknownContainer => {
                tracing::debug!(netns = %path.display(), "DEL: netns gone, no links to delete");
                return Ok(T::default());
            }
            Err(e) => return Err(e),
        };
        f(&mut Netlink::open_in(&pod).context("open netlink in pod netns")?)
    }

    fn delete_group(&self) -> CniResult<()> {
        let deleted = self
            .with_pod_netlink(|nl| nl.delete_link_group(self.group))
            .with_context(|| format!("delete the links of {}", self.networks.join(", ")))?;
        tracing::debug!(
            group = self.group.get(),
            deleted,
            "DEL: deleted the deferred links"
        );
        Ok(())
    }
}

/// The plugin configs of `att` (a conflist's, or the conf itself).
fn plugins(att: &Attachment) -> &[Value] {
    match att.config.get("plugins").and_then(Value::as_array) {
        Some(list) => list.as_slice(),
        None => std::slice::from_ref(&att.config),
    }
}

/// The link kind a plugin config makes, if it is a deferring delegate.
fn deferring_kind(p: &Value) -> Option<&'static str> {
    let t = p.get("type").and_then(Value::as_str)?;
    DEFERRING_PLUGINS
        .iter()
        .find(|(name, _)| *name == t)
        .map(|(_, kind)| *kind)
}

/// Whether any plugin of `att` hands its link over on DEL.
pub fn defers(att: &Attachment) -> bool {
    plugins(att).iter().any(|p| deferring_kind(p).is_some())
}

/// Whether `att`'s link waits for its delegate to tag it (not deleted up front).
fn tagged_by_delegate(att: &Attachment) -> bool {
    defers(att) && up_front_kind(att).is_none()
}

/// The link kind of `att` when its link can go before its DEL runs: a single
/// deferring plugin whose IPAM never needs the link.
fn up_front_kind(att: &Attachment) -> Option<&'static str> {
    let [p] = plugins(att) else {
        return None;
    };
    let ipam = p
        .pointer("/ipam/type")
        .and_then(Value::as_str)
        .unwrap_or("");
    deferring_kind(p).filter(|_| LINKLESS_IPAM.contains(&ipam))
}

/// A group for one call: [`GROUP_BASE`] and 16 random bits.
fn random_group() -> NonZeroU32 {
    let bits = std::collections::hash_map::RandomState::new().hash_one(std::process::id()) as u32;
    NonZeroU32::new(GROUP_BASE | (bits & 0xffff)).expect("GROUP_BASE is nonzero")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn att(config: Value) -> Attachment {
        Attachment {
            network: "ns/n".into(),
            ifname: "net1".into(),
            config,
            runtime_config: Default::default(),
            cni_args: None,
            default: false,
            default_route: None,
            result: None,
        }
    }

    #[test]
    fn only_attachments_with_a_manifold_link_plugin_defer() {
        let conf = |t: &str| json!({"cniVersion": "1.0.0", "name": "n", "type": t});
        let list = |t: &str| json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "tuning"}, {"type": t}]});
        assert!(defers(&att(conf("manifold-macvlan"))));
        assert!(defers(&att(list("manifold-ipvlan"))));
        assert!(!defers(&att(conf("macvlan"))));
        assert!(!defers(&att(list("bridge"))));
        assert!(!defers(&att(json!({"plugins": "bad"}))));
    }

    #[test]
    fn only_links_no_del_needs_go_up_front() {
        let one = |t: &str, ipam: Value| att(json!({"type": t, "ipam": ipam}));
        assert_eq!(
            up_front_kind(&one("manifold-macvlan", json!({"type": "manifold-ipam"}))),
            Some("macvlan")
        );
        assert_eq!(
            up_front_kind(&one("manifold-ipvlan", Value::Null)),
            Some("ipvlan")
        );
        assert_eq!(
            up_front_kind(&one("manifold-macvlan", json!({"type": "host-local"}))),
            Some("macvlan")
        );
        // DHCP releases its lease through the link; the reference macvlan deletes its own.
        assert_eq!(
            up_front_kind(&one("manifold-macvlan", json!({"type": "dhcp"}))),
            None
        );
        assert_eq!(up_front_kind(&one("macvlan", Value::Null)), None);
        // A chained plugin may need the link on DEL.
        let chained = att(json!({"plugins": [{"type": "manifold-macvlan"}, {"type": "tuning"}]}));
        assert!(defers(&chained));
        assert_eq!(up_front_kind(&chained), None);
    }

    #[test]
    fn only_deferring_attachments_get_the_group() {
        let mv = att(json!({"type": "manifold-macvlan"}));
        let ref_mv = att(json!({"type": "macvlan"}));
        let d = DeferredLinks::new(None, &[mv.clone(), ref_mv.clone()]);
        let env = d.env_for(&mv);
        assert_eq!(env.len(), 1);
        assert_eq!(env[0].0, "MANIFOLD_LINK_DELETE_GROUP");
        let g: u32 = env[0].1.parse().unwrap();
        assert_eq!(g & 0xffff_0000, GROUP_BASE);
        assert!(d.env_for(&ref_mv).is_empty());
    }

    #[test]
    fn only_deferring_dels_count_down() {
        // DHCP needs the link on DEL: the delegate tags it, nothing goes up front.
        let mv = att(json!({"type": "manifold-macvlan", "ipam": {"type": "dhcp"}}));
        let other = att(json!({"type": "bridge"}));
        // No netns: the group delete at zero is a no-op.
        let d = DeferredLinks::new(None, &[mv.clone(), other.clone(), mv.clone()]);
        assert_eq!(d.pending.load(Ordering::Acquire), 2);
        d.finished(&mv);
        d.finished(&other);
        assert_eq!(d.pending.load(Ordering::Acquire), 1);
        d.finished(&mv);
        assert_eq!(d.pending.load(Ordering::Acquire), 0);
        assert!(d.into_error().is_none());
    }
}
