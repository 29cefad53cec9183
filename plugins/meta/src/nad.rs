//! Network definitions: NetworkAttachmentDefinition objects from the API or
//! from manifests at `<confDir>/attachments/<namespace>/<name>.{yaml,yml,json}`,
//! and plain confs/conflists from `confDir` or a path.

use crate::names;
use manifold_common::config::{parse_json_object, NetConfList, MAX_CONFIG_BYTES};
use manifold_common::{CniError, CniResult, Context, ErrorCode};
use manifold_kube::KubeClient;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A network ready to delegate to: its conf or conflist, with a `name`.
#[derive(Debug, Clone)]
pub struct Network {
    /// How the pod and network-status name it: `namespace/name` for a NAD,
    /// the conf's `name` otherwise.
    pub key: String,
    /// The conf or conflist as stored in the cache and delegated.
    pub config: Value,
    /// Its parsed form.
    pub list: NetConfList,
    /// The device resource its NAD asks for (`k8s.v1.cni.cncf.io/resourceName`).
    pub resource_name: Option<String>,
}

impl Network {
    /// Parses a conf or conflist, naming it `default_name` when it has no `name`.
    pub fn from_config(key: String, mut config: Value, default_name: &str) -> CniResult<Self> {
        if config
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
        {
            config["name"] = Value::from(default_name);
        }
        let list = NetConfList::from_value(&config).with_context(|| format!("network {key:?}"))?;
        Ok(Network {
            key,
            config,
            list,
            resource_name: None,
        })
    }
}

/// Where definitions come from: the API (when there is a kubeconfig), then `confDir`.
pub struct Sources<'a> {
    /// `confDir`.
    pub conf_dir: &'a Path,
    /// The API client, if configured.
    pub api: Option<&'a KubeClient>,
}

/// The NAD kind and API group.
const NAD_KIND: &str = "NetworkAttachmentDefinition";
const NAD_GROUP: &str = "k8s.cni.cncf.io/";

fn read_limited(path: &Path) -> CniResult<Vec<u8>> {
    let meta = std::fs::metadata(path).with_context(|| format!("read {}", path.display()))?;
    if meta.len() > MAX_CONFIG_BYTES as u64 {
        return Err(CniError::config(format!(
            "{} is larger than {MAX_CONFIG_BYTES} bytes",
            path.display()
        )));
    }
    std::fs::read(path).with_context(|| format!("read {}", path.display()))
}

/// Reads a conf or conflist file.
pub fn read_conf_file(path: &Path) -> CniResult<Value> {
    parse_json_object(&path.display().to_string(), &read_limited(path)?)
}

impl Sources<'_> {
    /// The NAD `namespace/name` as a network, `None` when neither the API nor
    /// `confDir` has it.
    pub fn nad(&self, namespace: &str, name: &str) -> CniResult<Option<Network>> {
        names::check_namespace(namespace)?;
        names::check_nad_name(name)?;
        let key = format!("{namespace}/{name}");
        let obj = match self.api {
            Some(api) => api
                .network_attachment_definition(namespace, name)
                .with_context(|| format!("get NetworkAttachmentDefinition {key}"))?,
            None => None,
        };
        let obj = match obj {
            Some(o) => Some(o),
            None => self.nad_file(namespace, name)?,
        };
        obj.map(|o| self.network_of(&key, name, &o)).transpose()
    }

    fn nad_file(&self, namespace: &str, name: &str) -> CniResult<Option<Value>> {
        let dir = self.conf_dir.join("attachments").join(namespace);
        for ext in ["yaml", "yml", "json"] {
            let path = dir.join(format!("{name}.{ext}"));
            if !path.exists() {
                continue;
            }
            let bytes = read_limited(&path)?;
            let v: Value = if ext == "json" {
                serde_json::from_slice(&bytes).map_err(|e| e.to_string())
            } else {
                serde_yaml_ng::from_slice(&bytes).map_err(|e| e.to_string())
            }
            .map_err(|e| CniError::config(format!("{}: {e}", path.display())))?;
            tracing::debug!(path = %path.display(), "NAD from file");
            return Ok(Some(v));
        }
        Ok(None)
    }

    /// The network of a NAD object: `spec.config`, or the conf of that name in `confDir`.
    fn network_of(&self, key: &str, name: &str, obj: &Value) -> CniResult<Network> {
        let bad =
            |what: String| CniError::config(format!("NetworkAttachmentDefinition {key}: {what}"));
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
        let api_version = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if kind != NAD_KIND || !api_version.starts_with(NAD_GROUP) {
            return Err(bad(format!(
                "is a {kind:?} of {api_version:?}, not a {NAD_KIND} of {NAD_GROUP}v1"
            )));
        }
        let meta_name = obj.pointer("/metadata/name").and_then(Value::as_str);
        if meta_name != Some(name) {
            return Err(bad(format!("metadata.name is {meta_name:?}")));
        }
        let config = match obj.pointer("/spec/config") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.trim().is_empty() => None,
            Some(Value::String(s)) => Some(
                parse_json_object(&format!("{key} spec.config"), s.as_bytes())
                    .map_err(|e| bad(e.msg))?,
            ),
            Some(other) => return Err(bad(format!("spec.config must be a string, not {other}"))),
        };
        let config = match config {
            Some(c) => c,
            None => self.named_conf(name)?.ok_or_else(|| {
                bad(format!(
                    "spec.config is empty and {} has no conf named {name:?}",
                    self.conf_dir.display()
                ))
            })?,
        };
        let mut net = Network::from_config(key.to_string(), config, name)?;
        net.resource_name = obj
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(crate::devices::RESOURCE_NAME_ANNOTATION))
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty())
            .map(String::from);
        Ok(net)
    }

    /// The conf or conflist in `confDir` (`*.conf`, `*.conflist`, `*.json`)
    /// whose `name` is `name`, first in file-name order.
    pub fn named_conf(&self, name: &str) -> CniResult<Option<Value>> {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(self.conf_dir) {
            Ok(d) => d.flatten().map(|e| e.path()).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(CniError::from(e).context(format!("read {}", self.conf_dir.display())))
            }
        };
        files.sort();
        for f in files {
            let ext = f.extension().and_then(|e| e.to_str()).unwrap_or("");
            if !matches!(ext, "conf" | "conflist" | "json") || !f.is_file() {
                continue;
            }
            match read_conf_file(&f) {
                Ok(v) if v.get("name").and_then(Value::as_str) == Some(name) => return Ok(Some(v)),
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(file = %f.display(), error = %e, "skipping unreadable conf")
                }
            }
        }
        Ok(None)
    }
}

/// An unknown network (code 7), for a reference nothing defines.
pub fn unknown(what: &str, reference: &str, conf_dir: &Path, api: bool) -> CniError {
    CniError::new(
        ErrorCode::InvalidConfig,
        format!(
            "{what}: network {reference:?} is not defined (looked in {}{})",
            if api { "the Kubernetes API and " } else { "" },
            conf_dir.join("attachments").display()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mf-nad-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("attachments/ns1")).unwrap();
        d
    }

    #[test]
    fn yaml_json_and_named_conf() {
        let d = tempdir("forms");
        std::fs::write(
            d.join("attachments/ns1/a.yaml"),
            "apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata:\n  name: a\n  namespace: ns1\nspec:\n  config: '{\"cniVersion\":\"1.0.0\",\"type\":\"macvlan\",\"master\":\"eth1\"}'\n",
        )
        .unwrap();
        std::fs::write(
            d.join("attachments/ns1/b.json"),
            r#"{"apiVersion":"k8s.cni.cncf.io/v1","kind":"NetworkAttachmentDefinition","metadata":{"name":"b"},"spec":{}}"#,
        )
        .unwrap();
        std::fs::write(
            d.join("10-b.conflist"),
            r#"{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"bridge"}]}"#,
        )
        .unwrap();
        let s = Sources {
            conf_dir: &d,
            api: None,
        };
        let a = s.nad("ns1", "a").unwrap().unwrap();
        assert_eq!(a.key, "ns1/a");
        assert_eq!(a.list.name, "a", "a config without name takes the NAD's");
        assert_eq!(a.list.plugins[0]["master"], "eth1");
        let b = s.nad("ns1", "b").unwrap().unwrap();
        assert_eq!(b.list.plugins[0]["type"], "bridge");
        assert!(s.nad("ns1", "c").unwrap().is_none());
        assert!(s.nad("ns2", "a").unwrap().is_none());
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn wrong_objects_are_rejected() {
        let d = tempdir("bad");
        for (name, body) in [
            ("k", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: k}\n"),
            ("m", "apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata: {name: other}\nspec: {config: '{}'}\n"),
            ("e", "apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata: {name: e}\nspec: {}\n"),
            ("j", "apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata: {name: j}\nspec: {config: '{not json'}\n"),
            ("y", "apiVersion: [unclosed\n"),
        ] {
            std::fs::write(d.join(format!("attachments/ns1/{name}.yml")), body).unwrap();
            let e = Sources { conf_dir: &d, api: None }.nad("ns1", name).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidConfig, "{name}: {e}");
        }
        std::fs::remove_dir_all(d).unwrap();
    }
}
