//! `manifold-macvlan` configuration: the reference macvlan plugin's fields.

use manifold_common::child_link::{requested_mac, LinkConf};
use manifold_common::dispatch::Call;
use manifold_common::mac::Mac;
use manifold_common::netlink::MacvlanMode;
use manifold_common::CniResult;
use serde::Deserialize;

/// CNI_ARGS keys this plugin reads.
const ARGS: [&str; 1] = ["MAC"];

#[derive(Deserialize)]
struct Wire {
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    bcqueuelen: Option<u32>,
}

/// Validated macvlan settings.
#[derive(Debug, Clone)]
pub struct MacvlanConf {
    /// Master, MTU, linkInContainer, DAD.
    pub link: LinkConf,
    /// Macvlan mode (default bridge).
    pub mode: MacvlanMode,
    /// MAC: `runtimeConfig.mac`, else `CNI_ARGS MAC=`, else `mac` (the reference's precedence).
    pub mac: Option<Mac>,
    /// Broadcast queue length.
    pub bcqueuelen: Option<u32>,
}

impl MacvlanConf {
    /// Parses and checks everything that can be checked without the kernel.
    pub fn load(call: &Call) -> CniResult<Self> {
        let w: Wire = call.conf.plugin_fields()?;
        call.env.args.check_known(&ARGS)?;
        let mac = requested_mac(call, w.mac.as_deref())?;
        Ok(MacvlanConf {
            link: LinkConf::load(&call.conf)?,
            mode: w.mode.as_deref().unwrap_or("bridge").parse()?,
            mac,
            bcqueuelen: w.bcqueuelen,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use manifold_common::config::{NetConf, NetConfList};
    use manifold_common::env::CniEnv;

    /// The example in conf/ stays valid (as its conflist hands it to the plugin).
    #[test]
    fn shipped_example_loads() {
        let list: serde_json::Value =
            serde_json::from_str(include_str!("../../../conf/macvlan-host-local.conflist"))
                .unwrap();
        let list = NetConfList::from_value(&list).unwrap();
        let stdin = list
            .plugin_config(0, None, &Default::default())
            .to_string()
            .into_bytes();
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
        let c = MacvlanConf::load(&call).unwrap();
        assert_eq!(c.mode, MacvlanMode::Bridge);
        assert_eq!(c.link.master.as_deref(), Some("eth1"));
        assert_eq!(call.conf.ipam_plugin(), Some("host-local"));
    }
}
