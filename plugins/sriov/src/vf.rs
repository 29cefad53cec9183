//! PF-side VF settings (the "admin" side of a VF: MAC, VLAN, spoof check,
//! trust, link state, rates) and the controller that reads and applies them:
//! rtnetlink `IFLA_VFINFO_LIST` on the PF in production, or the recorded fake
//! of [`crate::recorded`] when a test asks for it.

use manifold_common::mac::Mac;
use manifold_common::netlink::Netlink;
use manifold_common::{CniError, CniResult, Context};
use netlink_packet_route::link::{
    LinkAttribute, LinkVfInfo, VfInfo, VfInfoLinkState, VfInfoMac, VfInfoRate, VfInfoSpoofCheck,
    VfInfoTrust, VfLinkState, VfVlan, VfVlanInfo, VlanProtocol,
};
use serde::{Deserialize, Serialize};
use std::str::FromStr;

/// VLAN tag protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum VlanProto {
    /// 802.1Q (customer tag).
    #[default]
    #[serde(rename = "802.1q")]
    Dot1Q,
    /// 802.1ad (service tag, QinQ).
    #[serde(rename = "802.1ad")]
    Dot1Ad,
}

/// Administrative link state of a VF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    /// Follows the PF's link.
    #[default]
    Auto,
    /// Always up.
    Enable,
    /// Always down.
    Disable,
}

impl FromStr for LinkState {
    type Err = CniError;
    fn from_str(s: &str) -> CniResult<Self> {
        match s {
            "auto" => Ok(LinkState::Auto),
            "enable" => Ok(LinkState::Enable),
            "disable" => Ok(LinkState::Disable),
            other => Err(CniError::config(format!(
                "link_state {other:?} is invalid: use auto, enable or disable"
            ))),
        }
    }
}

/// Serde for [`Mac`] as its text form.
mod mac_text {
    use manifold_common::mac::Mac;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(m: &Mac, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&m.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Mac, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(|e: manifold_common::CniError| serde::de::Error::custom(e.msg))
    }

    pub mod opt {
        use super::*;

        pub fn serialize<S: Serializer>(m: &Option<Mac>, s: S) -> Result<S::Ok, S::Error> {
            match m {
                Some(m) => super::serialize(m, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Mac>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|t| {
                    t.parse()
                        .map_err(|e: manifold_common::CniError| serde::de::Error::custom(e.msg))
                })
                .transpose()
        }
    }
}

/// The PF-side state of one VF, as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VfState {
    /// Administrative MAC (all zeros: none set).
    #[serde(with = "mac_text")]
    pub mac: Mac,
    /// VLAN ID (0: untagged).
    pub vlan: u16,
    /// VLAN priority.
    pub qos: u8,
    /// VLAN protocol.
    pub proto: VlanProto,
    /// Spoof checking.
    pub spoofchk: bool,
    /// Trust.
    pub trust: bool,
    /// Link state.
    pub link_state: LinkState,
    /// Minimum TX rate, Mbps.
    pub min_tx_rate: u32,
    /// Maximum TX rate, Mbps.
    pub max_tx_rate: u32,
}

impl Default for VfState {
    /// What a freshly created VF reports on most drivers.
    fn default() -> Self {
        VfState {
            mac: Mac([0; 6]),
            vlan: 0,
            qos: 0,
            proto: VlanProto::Dot1Q,
            spoofchk: true,
            trust: false,
            link_state: LinkState::Auto,
            min_tx_rate: 0,
            max_tx_rate: 0,
        }
    }
}

/// Settings to apply to a VF; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VfSettings {
    /// Administrative MAC.
    #[serde(with = "mac_text::opt", default)]
    pub mac: Option<Mac>,
    /// VLAN ID, priority, protocol.
    #[serde(default)]
    pub vlan: Option<(u16, u8, VlanProto)>,
    /// Minimum and maximum TX rate, Mbps.
    #[serde(default)]
    pub rate: Option<(u32, u32)>,
    /// Spoof checking.
    #[serde(default)]
    pub spoofchk: Option<bool>,
    /// Trust.
    #[serde(default)]
    pub trust: Option<bool>,
    /// Link state.
    #[serde(default)]
    pub link_state: Option<LinkState>,
}

impl VfSettings {
    /// The settings that put back `original` for exactly the fields these
    /// settings change (drivers lacking a feature are never asked for it).
    pub fn restoring(&self, original: &VfState) -> VfSettings {
        VfSettings {
            mac: self.mac.map(|_| original.mac),
            vlan: self
                .vlan
                .map(|_| (original.vlan, original.qos, original.proto)),
            rate: self
                .rate
                .map(|_| (original.min_tx_rate, original.max_tx_rate)),
            spoofchk: self.spoofchk.map(|_| original.spoofchk),
            trust: self.trust.map(|_| original.trust),
            link_state: self.link_state.map(|_| original.link_state),
        }
    }

    /// The first setting `state` does not have, described.
    pub fn mismatch(&self, state: &VfState) -> Option<String> {
        let differs = |what: &str, want: String, have: String| {
            (want != have).then(|| format!("{what} is {have}, expected {want}"))
        };
        self.mac
            .and_then(|m| differs("MAC", m.to_string(), state.mac.to_string()))
            .or_else(|| {
                self.vlan.and_then(|v| {
                    differs(
                        "VLAN",
                        format!("{v:?}"),
                        format!("{:?}", (state.vlan, state.qos, state.proto)),
                    )
                })
            })
            .or_else(|| {
                self.rate.and_then(|r| {
                    differs(
                        "rate (min, max)",
                        format!("{r:?}"),
                        format!("{:?}", (state.min_tx_rate, state.max_tx_rate)),
                    )
                })
            })
            .or_else(|| {
                self.spoofchk
                    .and_then(|s| differs("spoofchk", s.to_string(), state.spoofchk.to_string()))
            })
            .or_else(|| {
                self.trust
                    .and_then(|t| differs("trust", t.to_string(), state.trust.to_string()))
            })
            .or_else(|| {
                self.link_state.and_then(|l| {
                    differs(
                        "link state",
                        format!("{l:?}"),
                        format!("{:?}", state.link_state),
                    )
                })
            })
    }
}

/// Reads and changes VFs through their PF.
pub trait PfControl {
    /// The PF-side state of VF `vf` of PF netdev `pf`.
    fn state(&mut self, pf: &str, vf: u32) -> CniResult<VfState>;
    /// Applies the settings that are set.
    fn apply(&mut self, pf: &str, vf: u32, settings: &VfSettings) -> CniResult<()>;
}

/// The controller for this process: the PF over rtnetlink in the calling
/// netns, or the recorded fake when the test-only
/// [`crate::recorded::RECORD_ENV`] is set.
pub fn controller() -> CniResult<Box<dyn PfControl>> {
    match crate::recorded::RecordedPf::from_env() {
        Some(fake) => Ok(Box::new(fake)),
        None => Ok(Box::new(NetlinkPf {
            nl: Netlink::open().context("open netlink")?,
        })),
    }
}

/// The real PF, over rtnetlink.
pub struct NetlinkPf {
    nl: Netlink,
}

fn proto_of(p: VlanProtocol) -> VlanProto {
    match p {
        VlanProtocol::Ieee8021Ad => VlanProto::Dot1Ad,
        _ => VlanProto::Dot1Q,
    }
}

fn vf_index(info: &LinkVfInfo) -> Option<u32> {
    info.0.iter().find_map(|a| match a {
        VfInfo::Mac(m) => Some(m.vf_id),
        _ => None,
    })
}

fn parse_state(info: &LinkVfInfo) -> VfState {
    let mut s = VfState::default();
    for a in &info.0 {
        match a {
            VfInfo::Mac(m) => {
                s.mac = Mac([m.mac[0], m.mac[1], m.mac[2], m.mac[3], m.mac[4], m.mac[5]])
            }
            VfInfo::Vlan(v) => {
                s.vlan = v.vlan_id as u16;
                s.qos = v.qos as u8;
            }
            VfInfo::VlanList(list) => {
                if let Some(VfVlan::Info(i)) = list.first() {
                    s.proto = proto_of(i.protocol);
                }
            }
            VfInfo::SpoofCheck(c) => s.spoofchk = c.enabled,
            VfInfo::Trust(t) => s.trust = t.enabled,
            VfInfo::LinkState(l) => {
                s.link_state = match l.state {
                    VfLinkState::Enable => LinkState::Enable,
                    VfLinkState::Disable => LinkState::Disable,
                    _ => LinkState::Auto,
                }
            }
            VfInfo::Rate(r) => {
                s.min_tx_rate = r.min_tx_rate;
                s.max_tx_rate = r.max_tx_rate;
            }
            _ => {}
        }
    }
    s
}

impl NetlinkPf {
    fn pf_index(&mut self, pf: &str) -> CniResult<u32> {
        self.nl
            .link_by_name(pf)?
            .map(|l| l.index)
            .ok_or_else(|| CniError::kernel(format!("physical function {pf:?} not found")))
    }

    fn set(&mut self, pf: &str, index: u32, what: String, info: VfInfo) -> CniResult<()> {
        self.nl
            .set_link(index, &what, |m| {
                m.attributes
                    .push(LinkAttribute::VfInfoList(vec![LinkVfInfo(vec![info])]))
            })
            .with_context(|| format!("PF {pf:?}"))
    }
}

impl PfControl for NetlinkPf {
    fn state(&mut self, pf: &str, vf: u32) -> CniResult<VfState> {
        let msg = self
            .nl
            .link_message_by_name(pf, true)?
            .ok_or_else(|| CniError::kernel(format!("physical function {pf:?} not found")))?;
        msg.attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::VfInfoList(list) => list
                    .iter()
                    .find(|i| vf_index(i) == Some(vf))
                    .map(parse_state),
                _ => None,
            })
            .ok_or_else(|| {
                CniError::kernel(format!(
                    "physical function {pf:?} does not report VF {vf} (is sriov_numvfs set?)"
                ))
            })
    }

    fn apply(&mut self, pf: &str, vf: u32, s: &VfSettings) -> CniResult<()> {
        let index = self.pf_index(pf)?;
        // One request per setting, so a driver's refusal names what it refused.
        if let Some((id, qos, proto)) = s.vlan {
            let p = match proto {
                VlanProto::Dot1Q => VlanProtocol::Ieee8021Q,
                VlanProto::Dot1Ad => VlanProtocol::Ieee8021Ad,
            };
            let info = VfVlanInfo::new(vf, u32::from(id), u32::from(qos), p);
            self.set(
                pf,
                index,
                format!("set VF {vf} vlan {id} qos {qos} proto {proto:?}"),
                VfInfo::VlanList(vec![VfVlan::Info(info)]),
            )?;
        }
        if let Some(mac) = s.mac {
            self.set(
                pf,
                index,
                format!("set VF {vf} MAC {mac}"),
                VfInfo::Mac(VfInfoMac::new(vf, &mac.0)),
            )?;
        }
        if let Some((min, max)) = s.rate {
            self.set(
                pf,
                index,
                format!("set VF {vf} rate min {min} max {max} Mbps"),
                VfInfo::Rate(VfInfoRate::new(vf, min, max)),
            )?;
        }
        if let Some(on) = s.spoofchk {
            self.set(
                pf,
                index,
                format!("set VF {vf} spoofchk {on}"),
                VfInfo::SpoofCheck(VfInfoSpoofCheck::new(vf, on)),
            )?;
        }
        if let Some(on) = s.trust {
            self.set(
                pf,
                index,
                format!("set VF {vf} trust {on}"),
                VfInfo::Trust(VfInfoTrust::new(vf, on)),
            )?;
        }
        if let Some(l) = s.link_state {
            let state = match l {
                LinkState::Auto => VfLinkState::Auto,
                LinkState::Enable => VfLinkState::Enable,
                LinkState::Disable => VfLinkState::Disable,
            };
            self.set(
                pf,
                index,
                format!("set VF {vf} link state {l:?}"),
                VfInfo::LinkState(VfInfoLinkState::new(vf, state)),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restoring_touches_only_what_was_applied() {
        let applied = VfSettings {
            vlan: Some((100, 3, VlanProto::Dot1Ad)),
            trust: Some(true),
            ..Default::default()
        };
        let orig = VfState {
            vlan: 7,
            qos: 1,
            trust: false,
            ..VfState::default()
        };
        let r = applied.restoring(&orig);
        assert_eq!(r.vlan, Some((7, 1, VlanProto::Dot1Q)));
        assert_eq!(r.trust, Some(false));
        assert_eq!(
            (r.mac, r.rate, r.spoofchk, r.link_state),
            (None, None, None, None)
        );
    }

    #[test]
    fn mismatch_names_the_setting() {
        let applied = VfSettings {
            spoofchk: Some(false),
            ..Default::default()
        };
        let m = applied.mismatch(&VfState::default()).unwrap();
        assert!(m.contains("spoofchk"), "{m}");
        assert!(applied
            .mismatch(&VfState {
                spoofchk: false,
                ..VfState::default()
            })
            .is_none());
    }

    #[test]
    fn state_round_trips_through_json() {
        let s = VfState {
            mac: "02:00:00:00:00:09".parse().unwrap(),
            proto: VlanProto::Dot1Ad,
            link_state: LinkState::Disable,
            ..VfState::default()
        };
        let j = serde_json::to_string(&s).unwrap();
        assert!(
            j.contains("\"802.1ad\"") && j.contains("\"disable\""),
            "{j}"
        );
        assert_eq!(serde_json::from_str::<VfState>(&j).unwrap(), s);
    }
}
