//! Devices kubelet's device plugins allocated to a pod, for networks whose
//! NetworkAttachmentDefinition names a resource
//! (`k8s.v1.cni.cncf.io/resourceName`, e.g. an SR-IOV VF pool): from
//! kubelet's PodResources API when its socket exists, as Multus does, else
//! from kubelet's device-manager checkpoint.

use manifold_common::{CniError, CniResult, Context};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// The NAD annotation naming the device resource an attachment needs.
pub const RESOURCE_NAME_ANNOTATION: &str = "k8s.v1.cni.cncf.io/resourceName";

/// Kubelet's default checkpoint file.
pub const DEFAULT_CHECKPOINT: &str = "/var/lib/kubelet/device-plugins/kubelet_internal_checkpoint";

/// Bigger than any real checkpoint; refuses to read an absurd file.
const MAX_CHECKPOINT_BYTES: u64 = 16 << 20;

#[derive(Deserialize)]
struct File {
    #[serde(rename = "Data")]
    data: Data,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "PodDeviceEntries", default)]
    entries: Option<Vec<Entry>>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(rename = "PodUID")]
    pod_uid: String,
    #[serde(rename = "ResourceName")]
    resource: String,
    /// A list (kubelet < 1.20) or NUMA node -> list.
    #[serde(rename = "DeviceIDs")]
    ids: Value,
}

/// The devices of one pod, per resource, in kubelet's order, and where they
/// were read (for errors).
#[derive(Debug)]
pub struct PodDevices {
    ids: BTreeMap<String, Vec<String>>,
    /// The API socket or checkpoint file they came from.
    pub source: String,
}

impl PodDevices {
    /// Asks kubelet's PodResources API at `socket` for pod `namespace/name`.
    pub fn list(socket: &Path, namespace: &str, name: &str) -> CniResult<Self> {
        Ok(PodDevices {
            ids: manifold_podresources::pod_devices(socket, namespace, name)?,
            source: format!("kubelet PodResources API {}", socket.display()),
        })
    }

    /// Reads the checkpoint at `path` for the pod with `pod_uid`.
    pub fn load(path: &Path, pod_uid: &str) -> CniResult<Self> {
        let what = || format!("kubelet checkpoint {}", path.display());
        let f = std::fs::File::open(path).with_context(what)?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(f, MAX_CHECKPOINT_BYTES),
            &mut bytes,
        )
        .with_context(what)?;
        let file: File = serde_json::from_slice(&bytes)
            .map_err(|e| CniError::config(format!("{}: {e}", what())))?;
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for e in file.data.entries.unwrap_or_default() {
            if e.pod_uid != pod_uid {
                continue;
            }
            let ids = out.entry(e.resource).or_default();
            match &e.ids {
                Value::Array(list) => {
                    ids.extend(list.iter().filter_map(|v| v.as_str().map(String::from)))
                }
                // NUMA node -> IDs; the map is ordered by node.
                Value::Object(by_node) => {
                    for list in by_node.values().filter_map(Value::as_array) {
                        ids.extend(list.iter().filter_map(|v| v.as_str().map(String::from)));
                    }
                }
                _ => {}
            }
        }
        Ok(PodDevices {
            ids: out,
            source: what(),
        })
    }

    /// Takes the next device of `resource` not yet given to an attachment.
    pub fn take(&mut self, resource: &str) -> Option<String> {
        let ids = self.ids.get_mut(resource)?;
        (!ids.is_empty()).then(|| ids.remove(0))
    }
}

/// Gives the delegate conf or conflist its device the way Multus does: a
/// top-level `deviceID` in a conf, in the first plugin of a conflist.
pub fn set_device_id(config: &mut Value, id: &str) {
    let target = match config.get_mut("plugins").and_then(Value::as_array_mut) {
        Some(plugins) => plugins.first_mut(),
        None => Some(config),
    };
    if let Some(Value::Object(o)) = target {
        o.insert("deviceID".into(), Value::from(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_both_checkpoint_shapes_and_hands_devices_out_in_order() {
        let p = std::env::temp_dir().join(format!("mf-ckpt-{}", std::process::id()));
        std::fs::write(
            &p,
            json!({"Data": {"PodDeviceEntries": [
                {"PodUID": "u1", "ContainerName": "a", "ResourceName": "intel.com/vf",
                 "DeviceIDs": {"0": ["0000:03:02.1"], "1": ["0000:81:02.1"]}, "AllocResp": ""},
                {"PodUID": "u1", "ContainerName": "b", "ResourceName": "intel.com/vf",
                 "DeviceIDs": ["0000:03:02.2"], "AllocResp": ""},
                {"PodUID": "u2", "ContainerName": "a", "ResourceName": "intel.com/vf",
                 "DeviceIDs": {"0": ["0000:03:02.3"]}, "AllocResp": ""}],
                "RegisteredDevices": {}}, "Checksum": 1})
            .to_string(),
        )
        .unwrap();
        let mut d = PodDevices::load(&p, "u1").unwrap();
        assert_eq!(d.take("intel.com/vf").as_deref(), Some("0000:03:02.1"));
        assert_eq!(d.take("intel.com/vf").as_deref(), Some("0000:81:02.1"));
        assert_eq!(d.take("intel.com/vf").as_deref(), Some("0000:03:02.2"));
        assert_eq!(d.take("intel.com/vf"), None);
        assert_eq!(d.take("other.com/x"), None);
        std::fs::remove_file(&p).unwrap();
        let e = PodDevices::load(&p, "u1").unwrap_err();
        assert!(e.msg.contains("kubelet checkpoint"), "{e}");
    }

    #[test]
    fn device_id_goes_to_the_conf_or_the_first_plugin() {
        let mut conf = json!({"type": "sriov"});
        set_device_id(&mut conf, "0000:03:02.1");
        assert_eq!(conf["deviceID"], "0000:03:02.1");
        let mut list = json!({"plugins": [{"type": "sriov"}, {"type": "tuning"}]});
        set_device_id(&mut list, "0000:03:02.1");
        assert_eq!(list["plugins"][0]["deviceID"], "0000:03:02.1");
        assert!(list["plugins"][1].get("deviceID").is_none());
    }
}
