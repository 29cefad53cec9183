//! The `manifold` network config: Multus-compatible fields, defaults and checks.

use crate::names;
use manifold_common::config::{decode_error, NetConf};
use manifold_common::{CniError, CniResult};
use serde::Deserialize;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// Where NAD files and named confs live unless `confDir` says otherwise.
pub const DEFAULT_CONF_DIR: &str = "/etc/cni/net.d/manifold.d";
/// Where ADD caches what DEL, CHECK and GC need.
pub const DEFAULT_CNI_DIR: &str = "/var/lib/cni/manifold";
/// Extra attachments a pod may have unless `maxAttachments` says otherwise (RA2: at least 5).
pub const DEFAULT_MAX_ATTACHMENTS: usize = 5;
/// Namespace of the NADs named by `clusterNetwork`, `defaultNetworks` and the
/// default-network override (Multus' `multusNamespace`).
pub const DEFAULT_MULTUS_NAMESPACE: &str = "kube-system";
/// How long ADD waits for `readinessindicatorfile` unless `readinessTimeout`
/// says otherwise (Multus waits 45 s).
pub const DEFAULT_READINESS_TIMEOUT: Duration = Duration::from_secs(45);

/// `clusterNetwork`: a name (NAD or conf in `confDir`), a path, or the config itself.
#[derive(Debug, Clone, PartialEq)]
pub enum ClusterNetwork {
    /// A NAD in `multusNamespace`, else a conf/conflist in `confDir` with this `name`.
    Name(String),
    /// A conf or conflist file.
    Path(PathBuf),
    /// A conf or conflist given inline.
    Inline(Value),
}

/// The parsed `manifold` config.
#[derive(Debug, Clone)]
pub struct ManifoldConf {
    /// The default network, attached as the runtime's `CNI_IFNAME`.
    pub cluster_network: ClusterNetwork,
    /// NAD names (in `multusNamespace`) attached to every pod outside `systemNamespaces`.
    pub default_networks: Vec<String>,
    /// Namespaces whose pods do not get `defaultNetworks`.
    pub system_namespaces: Vec<String>,
    /// Namespace of the NADs named in this config.
    pub multus_namespace: String,
    /// Named confs and `attachments/<ns>/<name>.yaml` NAD files.
    pub conf_dir: PathBuf,
    /// Kubernetes API access, if any.
    pub kubeconfig: Option<PathBuf>,
    /// Pods may only use NADs of their own namespace and `globalNamespaces`.
    pub namespace_isolation: bool,
    /// Namespaces whose NADs every pod may use under isolation.
    pub global_namespaces: Vec<String>,
    /// Cache directory.
    pub cni_dir: PathBuf,
    /// Where delegate binaries are looked up before `CNI_PATH`.
    pub bin_dir: Option<PathBuf>,
    /// A file that must exist before pods are attached.
    pub readiness_indicator_file: Option<PathBuf>,
    /// How long ADD waits for that file (`readinessTimeout`, seconds; zero: not at all).
    pub readiness_timeout: Duration,
    /// Most extra attachments per pod.
    pub max_attachments: usize,
    /// Run the attachments' delegates concurrently (default) or one after
    /// another (`"parallelDelegates": false`, Multus' way).
    pub parallel_delegates: bool,
    /// Kubelet's device-manager checkpoint, for NADs with a `resourceName`.
    pub kubelet_checkpoint: PathBuf,
    /// Kubelet's PodResources API socket, asked first when it exists.
    pub pod_resources_socket: PathBuf,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StringOrList {
    List(Vec<String>),
    Comma(String),
}

impl StringOrList {
    fn into_vec(self) -> Vec<String> {
        match self {
            StringOrList::List(l) => l,
            StringOrList::Comma(s) => s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        }
    }
}

#[derive(Deserialize)]
struct Wire {
    #[serde(rename = "clusterNetwork", default)]
    cluster_network: Option<Value>,
    /// Multus' older form: the first delegate is the cluster network (what
    /// the Multus daemonset writes into its generated 00-multus.conf).
    #[serde(default)]
    delegates: Option<Vec<Value>>,
    #[serde(rename = "defaultNetworks", default)]
    default_networks: Option<StringOrList>,
    #[serde(rename = "systemNamespaces", default)]
    system_namespaces: Option<StringOrList>,
    #[serde(rename = "multusNamespace", default)]
    multus_namespace: Option<String>,
    #[serde(rename = "confDir", default)]
    conf_dir: Option<String>,
    #[serde(default)]
    kubeconfig: Option<String>,
    #[serde(rename = "namespaceIsolation", default)]
    namespace_isolation: bool,
    #[serde(rename = "globalNamespaces", default)]
    global_namespaces: Option<StringOrList>,
    #[serde(rename = "cniDir", default)]
    cni_dir: Option<String>,
    #[serde(rename = "binDir", default)]
    bin_dir: Option<String>,
    #[serde(rename = "readinessindicatorfile", default)]
    readiness_indicator_file: Option<String>,
    #[serde(rename = "readinessTimeout", default)]
    readiness_timeout: Option<Value>,
    #[serde(rename = "maxAttachments", default)]
    max_attachments: Option<usize>,
    #[serde(rename = "parallelDelegates", default)]
    parallel_delegates: Option<bool>,
    #[serde(rename = "kubeletCheckpoint", default)]
    kubelet_checkpoint: Option<String>,
    #[serde(rename = "podResourcesSocket", default)]
    pod_resources_socket: Option<String>,
}

fn absolute(field: &str, s: Option<String>) -> CniResult<Option<PathBuf>> {
    match s.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(p) if p.starts_with('/') && !p.split('/').any(|c| c == "..") => {
            Ok(Some(PathBuf::from(p)))
        }
        Some(p) => Err(CniError::config(format!(
            "{field} {p:?} must be an absolute path without '..'"
        ))),
    }
}

/// `readinessTimeout`: a non-negative number of seconds.
fn readiness_timeout(v: Option<Value>) -> CniResult<Duration> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(DEFAULT_READINESS_TIMEOUT);
    };
    v.as_f64()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| {
            CniError::config(format!(
                "readinessTimeout must be a number of seconds, 0 or more (0: do not wait for readinessindicatorfile), not {v}"
            ))
        })
}

fn namespaces(field: &str, list: Option<StringOrList>) -> CniResult<Option<Vec<String>>> {
    let Some(list) = list else { return Ok(None) };
    let list = list.into_vec();
    for ns in &list {
        names::check_namespace(ns).map_err(|e| e.context(field))?;
    }
    Ok(Some(list))
}

/// The cluster network of Multus' `delegates` form: its one delegate. More
/// are refused (Multus attached them all to every pod; here extra networks
/// come from NADs, `defaultNetworks` among them).
fn legacy_delegate(delegates: Option<Vec<Value>>) -> CniResult<Option<Value>> {
    match delegates.as_deref() {
        None | Some([]) => Ok(None),
        Some([one @ Value::Object(_)]) => Ok(Some(one.clone())),
        Some([other]) => Err(CniError::config(format!(
            "\"delegates\" must hold a network config object, not {other}"
        ))),
        Some(many) => Err(CniError::config(format!(
            "\"delegates\" lists {} networks: only the first (the cluster network) is supported; attach the others to every pod as NetworkAttachmentDefinitions named in \"defaultNetworks\"",
            many.len()
        ))),
    }
}

impl ManifoldConf {
    /// Reads the manifold-specific fields of the call's config.
    pub fn load(conf: &NetConf) -> CniResult<Self> {
        let w: Wire = serde_json::from_value(conf.raw.clone())
            .map_err(|e| decode_error("manifold config", e))?;
        let cluster_network = match w.cluster_network.filter(|v| !v.is_null()) {
            // As Multus: clusterNetwork, when set, wins over delegates.
            Some(v) => Some(v),
            None => legacy_delegate(w.delegates)?,
        };
        let cluster_network = match cluster_network {
            None => {
                return Err(CniError::config(
                    "manifold config has no \"clusterNetwork\" (the default network: a name, a path or an inline config) and no \"delegates\"",
                ))
            }
            Some(Value::String(s)) if s.starts_with('/') => {
                ClusterNetwork::Path(absolute("clusterNetwork", Some(s))?.expect("non-empty"))
            }
            Some(Value::String(s)) => {
                names::check_network_name(&s).map_err(|e| e.context("clusterNetwork"))?;
                ClusterNetwork::Name(s)
            }
            Some(v @ Value::Object(_)) => ClusterNetwork::Inline(v),
            Some(other) => {
                return Err(CniError::config(format!(
                    "clusterNetwork must be a name, a path or a config object, not {other}"
                )))
            }
        };
        let default_networks = w
            .default_networks
            .map(StringOrList::into_vec)
            .unwrap_or_default();
        for n in &default_networks {
            names::check_network_name(n).map_err(|e| e.context("defaultNetworks"))?;
        }
        let multus_namespace = w
            .multus_namespace
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| DEFAULT_MULTUS_NAMESPACE.to_string());
        names::check_namespace(&multus_namespace).map_err(|e| e.context("multusNamespace"))?;
        let max_attachments = w.max_attachments.unwrap_or(DEFAULT_MAX_ATTACHMENTS);
        Ok(ManifoldConf {
            cluster_network,
            default_networks,
            system_namespaces: namespaces("systemNamespaces", w.system_namespaces)?
                .unwrap_or_else(|| vec!["kube-system".to_string()]),
            multus_namespace,
            conf_dir: absolute("confDir", w.conf_dir)?
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CONF_DIR)),
            kubeconfig: absolute("kubeconfig", w.kubeconfig)?,
            namespace_isolation: w.namespace_isolation,
            global_namespaces: namespaces("globalNamespaces", w.global_namespaces)?
                .unwrap_or_default(),
            cni_dir: absolute("cniDir", w.cni_dir)?
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CNI_DIR)),
            bin_dir: absolute("binDir", w.bin_dir)?,
            readiness_indicator_file: absolute(
                "readinessindicatorfile",
                w.readiness_indicator_file,
            )?,
            readiness_timeout: readiness_timeout(w.readiness_timeout)?,
            max_attachments,
            parallel_delegates: w.parallel_delegates.unwrap_or(true),
            kubelet_checkpoint: absolute("kubeletCheckpoint", w.kubelet_checkpoint)?
                .unwrap_or_else(|| PathBuf::from(crate::devices::DEFAULT_CHECKPOINT)),
            pod_resources_socket: absolute("podResourcesSocket", w.pod_resources_socket)?
                .unwrap_or_else(|| PathBuf::from(manifold_podresources::DEFAULT_SOCKET)),
        })
    }

    /// Delegate search path: `binDir` first, then `CNI_PATH`.
    pub fn delegate_path(&self, cni_path: &[PathBuf]) -> Vec<PathBuf> {
        self.bin_dir
            .iter()
            .cloned()
            .chain(cni_path.iter().cloned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use manifold_common::ErrorCode;
    use serde_json::json;

    fn load(extra: Value) -> CniResult<ManifoldConf> {
        let mut v = json!({"cniVersion": "1.1.0", "name": "manifold", "type": "manifold"});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        ManifoldConf::load(&NetConf::from_value(v)?)
    }

    #[test]
    fn defaults_follow_multus() {
        let c = load(json!({"clusterNetwork": "k8s-pod-network"})).unwrap();
        assert_eq!(
            c.cluster_network,
            ClusterNetwork::Name("k8s-pod-network".into())
        );
        assert_eq!(c.conf_dir, PathBuf::from(DEFAULT_CONF_DIR));
        assert_eq!(c.cni_dir, PathBuf::from(DEFAULT_CNI_DIR));
        assert_eq!(c.max_attachments, 5);
        assert_eq!(c.system_namespaces, vec!["kube-system"]);
        assert_eq!(c.multus_namespace, "kube-system");
        assert!(!c.namespace_isolation);
        assert_eq!(c.readiness_timeout, Duration::from_secs(45));
        assert_eq!(
            c.pod_resources_socket,
            PathBuf::from("/var/lib/kubelet/pod-resources/kubelet.sock")
        );
    }

    #[test]
    fn readiness_timeout_in_seconds() {
        let c = load(json!({"clusterNetwork": "x", "readinessTimeout": 0.3})).unwrap();
        assert_eq!(c.readiness_timeout, Duration::from_millis(300));
        let c = load(json!({"clusterNetwork": "x", "readinessTimeout": 0})).unwrap();
        assert!(c.readiness_timeout.is_zero());
        for bad in [json!(-1), json!("45"), json!(true), json!(1e300)] {
            let e = load(json!({"clusterNetwork": "x", "readinessTimeout": bad})).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidConfig, "{bad}");
            assert!(e.msg.contains("readinessTimeout"), "{e}");
        }
    }

    #[test]
    fn global_namespaces_as_comma_string_or_list() {
        let a = load(json!({"clusterNetwork": "x", "namespaceIsolation": true, "globalNamespaces": "default, shared"})).unwrap();
        assert_eq!(a.global_namespaces, vec!["default", "shared"]);
        let b = load(json!({"clusterNetwork": "x", "globalNamespaces": ["default"]})).unwrap();
        assert_eq!(b.global_namespaces, vec!["default"]);
    }

    #[test]
    fn cluster_network_forms() {
        let p = load(json!({"clusterNetwork": "/etc/cni/net.d/10-flannel.conflist"})).unwrap();
        assert!(matches!(p.cluster_network, ClusterNetwork::Path(_)));
        let i =
            load(json!({"clusterNetwork": {"cniVersion": "1.0.0", "name": "n", "type": "bridge"}}))
                .unwrap();
        assert!(matches!(i.cluster_network, ClusterNetwork::Inline(_)));
    }

    #[test]
    fn bad_values_are_config_errors() {
        for bad in [
            json!({}),
            json!({"clusterNetwork": 5}),
            json!({"clusterNetwork": "../etc/passwd"}),
            json!({"clusterNetwork": "x", "confDir": "relative/dir"}),
            json!({"clusterNetwork": "x", "cniDir": "/var/../etc"}),
            json!({"clusterNetwork": "x", "podResourcesSocket": "kubelet.sock"}),
            json!({"clusterNetwork": "x", "globalNamespaces": "Not_A_Namespace"}),
            json!({"clusterNetwork": "x", "defaultNetworks": ["a/b/c"]}),
            json!({"delegates": []}),
            json!({"delegates": [{"type": "bridge"}, {"type": "macvlan"}]}),
            json!({"delegates": ["not-a-conf"]}),
        ] {
            assert_eq!(
                load(bad.clone()).unwrap_err().code,
                ErrorCode::InvalidConfig,
                "{bad}"
            );
        }
        assert_eq!(
            load(json!({"clusterNetwork": "x", "maxAttachments": "five"}))
                .unwrap_err()
                .code,
            ErrorCode::Decode
        );
    }

    #[test]
    fn multus_delegates_form_gives_the_cluster_network() {
        let flannel = json!({"cniVersion": "0.3.1", "name": "cbr0",
                             "plugins": [{"type": "flannel"}, {"type": "portmap"}]});
        let c = load(json!({"delegates": [flannel.clone()]})).unwrap();
        assert_eq!(c.cluster_network, ClusterNetwork::Inline(flannel));
        // clusterNetwork, when set, wins (as in Multus).
        let c = load(json!({"clusterNetwork": "podnet", "delegates": [{"type": "x"}]})).unwrap();
        assert_eq!(c.cluster_network, ClusterNetwork::Name("podnet".into()));
    }
}
