//! `manifold-macvlan`: gives a pod a macvlan link on a host (or pod) master.
//! Config-compatible with the reference `macvlan` plugin.

mod config;

use config::MacvlanConf;
use manifold_common::child_link::{self, Namespaces};
use manifold_common::dispatch::{self, Call, Plugin};
use manifold_common::netlink::{NewLink, NewLinkKind};
use manifold_common::{CniResult, NetworkResult};

const KIND: &str = "macvlan";

struct Macvlan;

impl Plugin for Macvlan {
    fn add(&self, call: &Call) -> CniResult<NetworkResult> {
        let conf = MacvlanConf::load(call)?;
        let mut ns = Namespaces::open(call, conf.link.link_in_container)?;
        let master = ns.master(conf.link.master.as_deref())?;
        conf.link.check_mtu(&master)?;
        let new = NewLink {
            name: String::new(),
            parent_index: master.index,
            kind: NewLinkKind::Macvlan {
                mode: conf.mode,
                bcqueuelen: conf.bcqueuelen,
            },
            netns: None,
            mtu: conf.link.mtu,
            mac: conf.mac,
        };
        let link = child_link::create_in_pod(&mut ns, new, &call.env.ifname)
            .map_err(|e| e.context(format!("macvlan on master {:?}", master.name)))?;
        child_link::address(call, &mut ns, &link, false, &conf.link.iface_options()).inspect_err(
            |_| {
                child_link::rollback_link(&mut ns, &link);
            },
        )
    }

    fn del(&self, call: &Call) -> CniResult<()> {
        child_link::delete(call, KIND)
    }

    fn check(&self, call: &Call) -> CniResult<()> {
        let conf = MacvlanConf::load(call)?;
        child_link::check(call, KIND, conf.link.link_in_container, |link| {
            match link.macvlan_mode {
                Some(m) if m == conf.mode => Ok(()),
                found => Err(child_link::fail(format!(
                    "macvlan {:?} is in mode {}, config says {}",
                    link.name,
                    found.map(|m| m.as_str()).unwrap_or("unknown"),
                    conf.mode.as_str()
                ))),
            }
        })
    }

    fn gc(&self, call: &Call) -> CniResult<()> {
        child_link::forward_if_supported(call, |ipam| ipam.gc())
    }

    fn status(&self, call: &Call) -> CniResult<()> {
        child_link::forward_if_supported(call, |ipam| ipam.status())
    }
}

fn main() {
    dispatch::main(&Macvlan)
}
