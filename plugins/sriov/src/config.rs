//! `manifold-sriov` configuration: sriov-cni's fields, validated in full
//! (code 7) before anything on the node changes.

use crate::pci::PciAddr;
use crate::vf::{LinkState, VfSettings, VfState, VlanProto};
use manifold_common::child_link::requested_mac;
use manifold_common::dispatch::Call;
use manifold_common::mac::Mac;
use manifold_common::{CniError, CniResult};
use serde::Deserialize;
use std::path::{Component, Path, PathBuf};

/// CNI_ARGS keys this plugin reads.
const ARGS: [&str; 1] = ["MAC"];

/// Where the original VF states and per-VF locks live by default.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/manifold/sriov";

/// Where device-info files go when the runtime names none (NPWG device-info
/// spec 1.1.0, section 4.2).
pub const DEFAULT_DEVICE_INFO_DIR: &str = "/var/run/k8s.cni.cncf.io/devinfo/cni";

#[derive(Deserialize)]
struct Wire {
    #[serde(rename = "deviceID", default)]
    device_id: Option<String>,
    #[serde(default)]
    vlan: Option<i64>,
    #[serde(rename = "vlanQoS", default)]
    vlan_qos: Option<i64>,
    #[serde(rename = "vlanProto", default)]
    vlan_proto: Option<String>,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    spoofchk: Option<String>,
    #[serde(default)]
    trust: Option<String>,
    #[serde(default)]
    link_state: Option<String>,
    #[serde(default)]
    min_tx_rate: Option<i64>,
    #[serde(default)]
    max_tx_rate: Option<i64>,
    #[serde(default)]
    mtu: Option<i64>,
    #[serde(rename = "dataDir", alias = "cniDir", default)]
    data_dir: Option<String>,
    #[serde(rename = "deviceInfoDir", default)]
    device_info_dir: Option<String>,
    #[serde(rename = "runtimeConfig", default)]
    runtime_config: Option<WireRuntime>,
}

/// The runtimeConfig key of the NPWG device-info capability (not in the
/// shared [`manifold_common::config::RuntimeConfig`]).
#[derive(Deserialize)]
struct WireRuntime {
    #[serde(rename = "CNIDeviceInfoFile", default)]
    device_info_file: Option<String>,
}

/// VLAN settings asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vlan {
    /// VLAN ID, 0 (none) to 4094.
    pub id: u16,
    /// 802.1p priority, 0 to 7.
    pub qos: u8,
    /// Tag protocol.
    pub proto: VlanProto,
}

/// Validated settings of one call.
#[derive(Debug, Clone)]
pub struct SriovConf {
    /// The VF: `runtimeConfig.deviceID`, else `deviceID`.
    pub device_id: Option<PciAddr>,
    /// VLAN.
    pub vlan: Option<Vlan>,
    /// MAC: `runtimeConfig.mac`, else `CNI_ARGS MAC=`, else `mac` (sriov-cni's precedence).
    pub mac: Option<Mac>,
    /// Spoof checking.
    pub spoofchk: Option<bool>,
    /// Trust.
    pub trust: Option<bool>,
    /// Administrative link state.
    pub link_state: Option<LinkState>,
    /// Minimum TX rate, Mbps.
    pub min_tx_rate: Option<u32>,
    /// Maximum TX rate, Mbps.
    pub max_tx_rate: Option<u32>,
    /// MTU of the VF netdev in the pod; `None` keeps the VF's.
    pub mtu: Option<u32>,
    /// State cache and lock directory.
    pub data_dir: PathBuf,
    /// Directory for device-info files when the runtime names no file.
    pub device_info_dir: PathBuf,
    /// The device-info file the runtime asked for (`CNIDeviceInfoFile`).
    pub device_info_file: Option<PathBuf>,
}

fn on_off(field: &str, v: Option<String>) -> CniResult<Option<bool>> {
    match v.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("") => Ok(None),
        Some("on") => Ok(Some(true)),
        Some("off") => Ok(Some(false)),
        Some(_) => Err(CniError::config(format!(
            "{field} {:?} is invalid: use \"on\" or \"off\"",
            v.unwrap_or_default()
        ))),
    }
}

fn rate(field: &str, v: Option<i64>) -> CniResult<Option<u32>> {
    v.map(|r| {
        u32::try_from(r).map_err(|_| {
            CniError::config(format!(
                "{field} {r} is invalid: must be 0 (no limit) to {} Mbps",
                u32::MAX
            ))
        })
    })
    .transpose()
}

/// An absolute path without `..`, for directories and files we write.
fn safe_path(field: &str, s: &str) -> CniResult<PathBuf> {
    let p = Path::new(s);
    if !p.is_absolute() || p.components().any(|c| c == Component::ParentDir) || s.contains('\0') {
        return Err(CniError::config(format!(
            "{field} {s:?} must be an absolute path without \"..\""
        )));
    }
    Ok(p.to_path_buf())
}

fn vlan(id: Option<i64>, qos: Option<i64>, proto: Option<String>) -> CniResult<Option<Vlan>> {
    let Some(id) = id else {
        if qos.is_some() {
            return Err(CniError::config("vlanQoS needs vlan to be set"));
        }
        if proto.is_some() {
            return Err(CniError::config("vlanProto needs vlan to be set"));
        }
        return Ok(None);
    };
    let id = u16::try_from(id)
        .ok()
        .filter(|v| *v <= 4094)
        .ok_or_else(|| CniError::config(format!("vlan {id} is invalid: must be 0 to 4094")))?;
    let qos = match qos {
        None => 0,
        Some(q) => u8::try_from(q)
            .ok()
            .filter(|q| *q <= 7)
            .ok_or_else(|| CniError::config(format!("vlanQoS {q} is invalid: must be 0 to 7")))?,
    };
    if qos != 0 && id == 0 {
        return Err(CniError::config(
            "vlanQoS needs a non-zero vlan: a priority tag without a VLAN is not supported",
        ));
    }
    let proto = match proto.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("802.1q") => VlanProto::Dot1Q,
        Some("802.1ad") => VlanProto::Dot1Ad,
        Some(_) => {
            return Err(CniError::config(format!(
                "vlanProto {:?} is invalid: use \"802.1q\" or \"802.1ad\"",
                proto.unwrap_or_default()
            )))
        }
    };
    if proto == VlanProto::Dot1Ad && id == 0 {
        return Err(CniError::config("vlanProto 802.1ad needs a non-zero vlan"));
    }
    Ok(Some(Vlan { id, qos, proto }))
}

/// The VF asked for: runtimeConfig's `deviceID` (the device plugin's
/// allocation), else the config's.
fn requested_device<'a>(call: &'a Call, w: &'a Wire) -> Option<&'a str> {
    call.conf
        .runtime_config
        .device_id
        .as_deref()
        .or(w.device_id.as_deref())
}

impl SriovConf {
    /// Parses and checks everything that can be checked without the node.
    pub fn load(call: &Call) -> CniResult<Self> {
        let w: Wire = call.conf.plugin_fields()?;
        call.env.args.check_known(&ARGS)?;
        let device_id = requested_device(call, &w)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<PciAddr>()
                    .map_err(|e| CniError::config(format!("deviceID: {}", e.msg)))
            })
            .transpose()?;
        let mac = requested_mac(call, w.mac.as_deref())?;
        let link_state = match w.link_state.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(s.parse()?),
        };
        let min_tx_rate = rate("min_tx_rate", w.min_tx_rate)?;
        let max_tx_rate = rate("max_tx_rate", w.max_tx_rate)?;
        if let (Some(min), Some(max)) = (min_tx_rate, max_tx_rate) {
            if max != 0 && min > max {
                return Err(CniError::config(format!(
                    "min_tx_rate {min} is above max_tx_rate {max}"
                )));
            }
        }
        let mtu = match w.mtu {
            None | Some(0) => None,
            Some(m) => Some(
                u32::try_from(m)
                    .ok()
                    .filter(|m| (68..=65535).contains(m))
                    .ok_or_else(|| {
                        CniError::config(format!(
                            "mtu {m} is invalid: must be 0 (keep the VF's) or 68 to 65535"
                        ))
                    })?,
            ),
        };
        let data_dir = match w.data_dir.as_deref().filter(|s| !s.is_empty()) {
            Some(d) => safe_path("dataDir", d)?,
            None => PathBuf::from(DEFAULT_DATA_DIR),
        };
        let device_info_dir = match w.device_info_dir.as_deref().filter(|s| !s.is_empty()) {
            Some(d) => safe_path("deviceInfoDir", d)?,
            None => PathBuf::from(DEFAULT_DEVICE_INFO_DIR),
        };
        let device_info_file = w
            .runtime_config
            .and_then(|r| r.device_info_file)
            .filter(|s| !s.is_empty())
            .map(|f| safe_path("runtimeConfig.CNIDeviceInfoFile", &f))
            .transpose()?;
        Ok(SriovConf {
            device_id,
            vlan: vlan(w.vlan, w.vlan_qos, w.vlan_proto)?,
            mac,
            spoofchk: on_off("spoofchk", w.spoofchk)?,
            trust: on_off("trust", w.trust)?,
            link_state,
            min_tx_rate,
            max_tx_rate,
            mtu,
            data_dir,
            device_info_dir,
            device_info_file,
        })
    }

    /// What DEL needs when the config no longer validates (it may have been
    /// edited since ADD): the state directory and, if still valid, the VF.
    /// Everything else is ignored, as DEL restores from the record; a DEL
    /// must not fail forever over a setting it does not use.
    pub fn for_release(call: &Call) -> CniResult<Self> {
        let w: Wire = call.conf.plugin_fields()?;
        let device_id = requested_device(call, &w).and_then(|s| s.parse::<PciAddr>().ok());
        let data_dir = match w.data_dir.as_deref().filter(|s| !s.is_empty()) {
            Some(d) => safe_path("dataDir", d)?,
            None => PathBuf::from(DEFAULT_DATA_DIR),
        };
        Ok(SriovConf {
            device_id,
            vlan: None,
            mac: None,
            spoofchk: None,
            trust: None,
            link_state: None,
            min_tx_rate: None,
            max_tx_rate: None,
            mtu: None,
            data_dir,
            device_info_dir: PathBuf::from(DEFAULT_DEVICE_INFO_DIR),
            device_info_file: None,
        })
    }

    /// The VF's PCI address, which ADD and CHECK need.
    pub fn require_device(&self) -> CniResult<&PciAddr> {
        self.device_id.as_ref().ok_or_else(|| {
            CniError::config(
                "no deviceID: set \"deviceID\" or pass runtimeConfig.deviceID (the VF's PCI address)",
            )
        })
    }

    /// The PF-side settings to apply, given the VF's current state: a rate
    /// given alone keeps the other one as it is.
    pub fn settings(&self, current: &VfState) -> VfSettings {
        let rate = match (self.min_tx_rate, self.max_tx_rate) {
            (None, None) => None,
            (min, max) => Some((
                min.unwrap_or(current.min_tx_rate),
                max.unwrap_or(current.max_tx_rate),
            )),
        };
        VfSettings {
            mac: self.mac,
            vlan: self.vlan.map(|v| (v.id, v.qos, v.proto)),
            rate,
            spoofchk: self.spoofchk,
            trust: self.trust,
            link_state: self.link_state,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use manifold_common::config::NetConf;
    use manifold_common::env::CniEnv;
    use manifold_common::ErrorCode;
    use serde_json::{json, Value};

    fn call(extra: Value, args: &str) -> Call {
        let mut conf = json!({"cniVersion": "1.0.0", "name": "sriovnet", "type": "manifold-sriov",
                              "deviceID": "0000:03:00.1"});
        for (k, v) in extra.as_object().unwrap() {
            conf[k] = v.clone();
        }
        let stdin = conf.to_string().into_bytes();
        let env = CniEnv::from_lookup(|k| match k {
            "CNI_COMMAND" => Some("ADD".into()),
            "CNI_CONTAINERID" => Some("c1".into()),
            "CNI_IFNAME" => Some("net1".into()),
            "CNI_NETNS" => Some("/var/run/netns/x".into()),
            "CNI_ARGS" => Some(args.into()),
            _ => None,
        })
        .unwrap();
        Call {
            env,
            conf: NetConf::parse(&stdin).unwrap(),
            stdin,
        }
    }

    fn load(extra: Value) -> CniResult<SriovConf> {
        SriovConf::load(&call(extra, ""))
    }

    fn code7(extra: Value) -> String {
        let e = load(extra.clone()).expect_err(&format!("{extra} must be rejected"));
        assert_eq!(e.code, ErrorCode::InvalidConfig, "{extra}: {e}");
        e.msg
    }

    #[test]
    fn full_sriov_cni_config_parses() {
        let c = load(json!({"vlan": 1000, "vlanQoS": 4, "vlanProto": "802.1AD", "mac": "CA:FE:C0:FF:EE:00",
            "spoofchk": "off", "trust": "on", "link_state": "enable", "min_tx_rate": 100, "max_tx_rate": 200,
            "mtu": 9000, "cniDir": "/tmp/x"}))
        .unwrap();
        assert_eq!(
            c.vlan,
            Some(Vlan {
                id: 1000,
                qos: 4,
                proto: VlanProto::Dot1Ad
            })
        );
        assert_eq!(c.mac.unwrap().to_string(), "ca:fe:c0:ff:ee:00");
        assert_eq!((c.spoofchk, c.trust), (Some(false), Some(true)));
        assert_eq!(c.link_state, Some(LinkState::Enable));
        assert_eq!((c.min_tx_rate, c.max_tx_rate), (Some(100), Some(200)));
        assert_eq!(c.mtu, Some(9000));
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.device_id.unwrap().as_str(), "0000:03:00.1");
    }

    #[test]
    fn invalid_values_are_code_7() {
        for bad in [
            json!({"vlan": 4095}),
            json!({"vlan": -1}),
            json!({"vlanQoS": 1}),
            json!({"vlanProto": "802.1q"}),
            json!({"vlan": 10, "vlanQoS": 8}),
            json!({"vlan": 0, "vlanQoS": 3}),
            json!({"vlan": 0, "vlanProto": "802.1ad"}),
            json!({"vlan": 10, "vlanProto": "qinq"}),
            json!({"spoofchk": "yes"}),
            json!({"trust": "true"}),
            json!({"link_state": "up"}),
            json!({"min_tx_rate": -5}),
            json!({"min_tx_rate": 300, "max_tx_rate": 200}),
            json!({"mtu": 70000}),
            json!({"mac": "01:00:5e:00:00:01"}),
            json!({"mac": "zz"}),
            json!({"dataDir": "relative/dir"}),
            json!({"dataDir": "/var/lib/../../etc"}),
            json!({"runtimeConfig": {"CNIDeviceInfoFile": "/run/../etc/passwd"}}),
        ] {
            code7(bad);
        }
    }

    #[test]
    fn device_ids_must_be_canonical_pci_addresses() {
        for bad in [
            "../../../etc",
            "0000:03:00.1/../../x",
            "03:00.1",
            "0000:03:00.8",
            "0000:3:00.1",
            "0000:03:00.1 ",
            "0000:g3:00.1",
            "0000:03:20.1",
        ] {
            let msg = code7(json!({ "deviceID": bad }));
            assert!(msg.contains("deviceID"), "{msg}");
        }
        let c = load(json!({"deviceID": "0000:AF:1F.7"})).unwrap();
        assert_eq!(c.device_id.unwrap().as_str(), "0000:af:1f.7");
    }

    #[test]
    fn runtime_config_device_and_mac_take_precedence() {
        let c = SriovConf::load(&call(
            json!({"mac": "02:00:00:00:00:01",
                   "runtimeConfig": {"deviceID": "0000:05:00.2", "mac": "02:00:00:00:00:03"}}),
            "MAC=02:00:00:00:00:02",
        ))
        .unwrap();
        assert_eq!(c.device_id.unwrap().as_str(), "0000:05:00.2");
        assert_eq!(c.mac.unwrap().to_string(), "02:00:00:00:00:03");
        let c = SriovConf::load(&call(
            json!({"mac": "02:00:00:00:00:01"}),
            "MAC=02:00:00:00:00:02",
        ))
        .unwrap();
        assert_eq!(c.mac.unwrap().to_string(), "02:00:00:00:00:02");
    }

    #[test]
    fn a_rate_given_alone_keeps_the_other() {
        let c = load(json!({"max_tx_rate": 500})).unwrap();
        let current = VfState {
            min_tx_rate: 10,
            max_tx_rate: 0,
            ..VfState::default()
        };
        assert_eq!(c.settings(&current).rate, Some((10, 500)));
        assert_eq!(load(json!({})).unwrap().settings(&current).rate, None);
    }

    #[test]
    fn the_example_config_is_valid() {
        let example: Value =
            serde_json::from_str(include_str!("../../../conf/sriov-vf.conf")).unwrap();
        let mut c = call(example, "");
        c.conf.runtime_config.device_id = Some("0000:3b:02.1".into());
        let c = SriovConf::load(&c).unwrap();
        assert_eq!(c.vlan.unwrap().id, 1000);
        assert_eq!(c.device_id.unwrap().as_str(), "0000:3b:02.1");
    }

    #[test]
    fn release_needs_only_the_state_directory() {
        let c = call(
            json!({"vlan": 9999, "deviceID": "../x", "dataDir": "/run/mfs"}),
            "",
        );
        assert_eq!(
            SriovConf::load(&c).unwrap_err().code,
            ErrorCode::InvalidConfig
        );
        let r = SriovConf::for_release(&c).unwrap();
        assert_eq!(r.data_dir, PathBuf::from("/run/mfs"));
        assert!(r.device_id.is_none());
        let c = call(json!({"dataDir": "rel"}), "");
        assert!(SriovConf::for_release(&c).is_err());
    }

    #[test]
    fn missing_device_id_is_code_7_only_when_needed() {
        let c = SriovConf::load(&call(json!({"deviceID": ""}), "")).unwrap();
        assert_eq!(
            c.require_device().unwrap_err().code,
            ErrorCode::InvalidConfig
        );
    }
}
