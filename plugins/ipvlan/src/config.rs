//! `manifold-ipvlan` configuration: the reference ipvlan plugin's fields.

use manifold_common::child_link::LinkConf;
use manifold_common::dispatch::Call;
use manifold_common::netlink::IpvlanMode;
use manifold_common::{CniError, CniResult};
use serde::Deserialize;

#[derive(Deserialize)]
struct Wire {
    #[serde(default)]
    mode: Option<String>,
}

/// Validated ipvlan settings.
#[derive(Debug, Clone)]
pub struct IpvlanConf {
    /// Master, MTU, linkInContainer, DAD. When chained with no `master`, the
    /// master is the single interface of `prevResult` (the reference's rule).
    pub link: LinkConf,
    /// Ipvlan mode (default l2).
    pub mode: IpvlanMode,
}

impl IpvlanConf {
    /// Parses and checks everything that can be checked without the kernel.
    pub fn load(call: &Call) -> CniResult<Self> {
        let w: Wire = call.conf.plugin_fields()?;
        call.env.args.check_known(&[])?;
        let mut link = LinkConf::load(&call.conf)?;
        if link.master.is_none() {
            if let Some(prev) = &call.conf.prev_result {
                match prev.interfaces.as_slice() {
                    [only] if !only.name.is_empty() => link.master = Some(only.name.clone()),
                    _ => {
                        return Err(CniError::config(
                            "no \"master\" configured and prevResult does not have exactly one named interface to use as master",
                        ))
                    }
                }
            }
        }
        Ok(IpvlanConf {
            link,
            mode: w.mode.as_deref().unwrap_or("l2").parse()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use manifold_common::config::NetConf;
    use manifold_common::env::CniEnv;

    /// The example in conf/ stays valid.
    #[test]
    fn shipped_example_loads() {
        let stdin = include_bytes!("../../../conf/ipvlan-l3.conf").to_vec();
        let env = CniEnv::from_lookup(|k| match k {
            "CNI_COMMAND" => Some("ADD".into()),
            "CNI_CONTAINERID" => Some("c1".into()),
            "CNI_IFNAME" => Some("net1".into()),
            "CNI_NETNS" => Some("/var/run/netns/x".into()),
            _ => None,
        })
        .unwrap();
        let call = Call {
            env,
            conf: NetConf::parse(&stdin).unwrap(),
            stdin,
        };
        let c = IpvlanConf::load(&call).unwrap();
        assert_eq!(c.mode, IpvlanMode::L3);
        assert_eq!(c.link.master.as_deref(), Some("eth1"));
    }
}
