//! `manifold-ipvlan`: gives a pod an ipvlan link on a host (or pod) master.
//! Config-compatible with the reference `ipvlan` plugin, chaining included.

mod config;

use config::IpvlanConf;
use manifold_common::child_link::{self, Namespaces};
use manifold_common::dispatch::{self, Call, Plugin};
use manifold_common::netlink::{NewLink, NewLinkKind};
use manifold_common::{CniResult, NetworkResult};

const KIND: &str = "ipvlan";

struct Ipvlan;

impl Plugin for Ipvlan {
    fn add(&self, call: &Call) -> CniResult<NetworkResult> {
        let conf = IpvlanConf::load(call)?;
        let mut ns = Namespaces::open(call, conf.link.link_in_container)?;
        let master = ns.master(conf.link.master.as_deref())?;
        conf.link.check_mtu(&master)?;
        let new = NewLink {
            name: String::new(),
            parent_index: master.index,
            kind: NewLinkKind::Ipvlan { mode: conf.mode },
            netns: None,
            mtu: conf.link.mtu,
            mac: None,
        };
        let what = format!("ipvlan on master {:?}", master.name);
        child_link::attach(call, &mut ns, new, &what, true, &conf.link.iface_options())
    }

    fn del(&self, call: &Call) -> CniResult<()> {
        child_link::delete(call, KIND)
    }

    fn check(&self, call: &Call) -> CniResult<()> {
        let conf = IpvlanConf::load(call)?;
        child_link::check(call, KIND, conf.link.link_in_container, |link| {
            let found = link.ipvlan_mode.map(|m| m.as_str());
            child_link::expect_mode(KIND, link, found, conf.mode.as_str())
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
    // manifold-ipam runs in this process: no second exec per call.
    manifold_common::ipam::link_in_process("manifold-ipam", &manifold_ipam::plugin::Ipam);
    dispatch::main(&Ipvlan)
}
