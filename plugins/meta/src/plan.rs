//! The attachment plan of one ADD: the default network and every extra one,
//! resolved and checked before anything is changed (every refusal is code 7).

use crate::config::{ClusterNetwork, ManifoldConf};
use crate::devices::{set_device_id, PodDevices};
use crate::nad::{self, read_conf_file, Network, Sources};
use crate::names;
use crate::selection::{self, Selection};
use manifold_common::{CniError, CniResult};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

/// One attachment: what to delegate, and (after ADD) what the delegate returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    /// Network name as network-status reports it (`namespace/name` for NADs).
    pub network: String,
    /// Interface in the pod.
    pub ifname: String,
    /// The delegate conf or conflist.
    pub config: Value,
    /// runtimeConfig offered to the delegate's plugins (each gets the keys it declares).
    pub runtime_config: Map<String, Value>,
    /// Added to each plugin's `args.cni`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni_args: Option<Map<String, Value>>,
    /// The default network (the runtime's interface).
    pub default: bool,
    /// Gateways this attachment's default route(s) go through (`default-route`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_route: Option<Vec<IpAddr>>,
    /// The delegate's ADD result, once it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

/// The pod a call is for (from `K8S_POD_NAMESPACE` / `K8S_POD_NAME`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// What the plan is built from.
pub struct Inputs<'a> {
    /// The manifold config.
    pub conf: &'a ManifoldConf,
    /// Where definitions come from.
    pub sources: &'a Sources<'a>,
    /// The pod, when the runtime named it.
    pub pod: Option<&'a PodRef>,
    /// Its annotations.
    pub annotations: &'a BTreeMap<String, String>,
    /// The runtime's `CNI_IFNAME` (the default network's interface).
    pub ifname: &'a str,
    /// The pod's UID (`K8S_POD_UID`), for devices kubelet allocated to it.
    pub pod_uid: Option<&'a str>,
    /// The runtime's runtimeConfig (goes to the default network).
    pub runtime_config: Map<String, Value>,
}

/// The pod's default network: the override annotation's NAD, else `clusterNetwork`.
pub fn default_network(
    conf: &ManifoldConf,
    sources: &Sources,
    annotations: &BTreeMap<String, String>,
) -> CniResult<Network> {
    let api = sources.api.is_some();
    if let Some(sel) = selection::default_network_override(annotations)? {
        let ns = sel.namespace.as_deref().unwrap_or(&conf.multus_namespace);
        return sources.nad(ns, &sel.name)?.ok_or_else(|| {
            nad::unknown(
                selection::DEFAULT_NETWORK_ANNOTATION,
                &format!("{ns}/{}", sel.name),
                &conf.conf_dir,
                api,
            )
        });
    }
    match &conf.cluster_network {
        ClusterNetwork::Inline(v) => {
            Network::from_config("clusterNetwork".into(), v.clone(), "cluster").map(|mut n| {
                n.key = n.list.name.clone();
                n
            })
        }
        ClusterNetwork::Path(p) => {
            let v = read_conf_file(p).map_err(|e| e.context("clusterNetwork"))?;
            let mut n = Network::from_config(p.display().to_string(), v, "cluster")?;
            n.key = n.list.name.clone();
            Ok(n)
        }
        ClusterNetwork::Name(name) => {
            if let Ok((ns, nad_name)) = names::split_ref(name) {
                let ns = ns.unwrap_or(&conf.multus_namespace);
                if let Some(n) = sources.nad(ns, nad_name)? {
                    return Ok(n);
                }
            }
            match sources.named_conf(name)? {
                Some(v) => Network::from_config(name.clone(), v, name),
                None => Err(CniError::config(format!(
                    "clusterNetwork {name:?}: no NetworkAttachmentDefinition in {} and no conf of that name in {}",
                    conf.multus_namespace,
                    conf.conf_dir.display()
                ))),
            }
        }
    }
}

/// Every runtimeConfig key requested must be declared by some plugin of the
/// delegate, or the request could not be honoured.
fn check_capabilities(net: &Network, rc: &Map<String, Value>) -> CniResult<()> {
    for key in rc.keys() {
        let declared = net.list.plugins.iter().any(|p| {
            p.pointer(&format!("/capabilities/{key}"))
                .and_then(Value::as_bool)
                .unwrap_or(false)
        });
        if !declared {
            return Err(CniError::config(format!(
                "network {:?} does not declare the {key:?} capability, so the requested {key} cannot be applied",
                net.key
            )));
        }
    }
    Ok(())
}

/// Builds and checks the whole plan.
pub fn build(i: &Inputs) -> CniResult<Vec<Attachment>> {
    let mut plan = vec![default_attachment(i)?];
    let mut extras = Extras::new(i);
    for (idx, (sel, origin)) in selections(i)?.into_iter().enumerate() {
        plan.push(extras.resolve(idx, sel, origin)?);
    }
    Ok(plan)
}

/// The plan DEL rebuilds when nothing was cached: every attachment that can
/// still be resolved, in ADD's order and with ADD's interface names; each one
/// that cannot (network gone, API down, a check failing) is logged and left out.
pub fn rebuild(i: &Inputs) -> Vec<Attachment> {
    let skip = |what: &str, e: CniError| {
        tracing::warn!(error = %e, "DEL without cache: {what} cannot be resolved, not deleted");
    };
    let mut plan = Vec::new();
    match default_attachment(i) {
        Ok(a) => plan.push(a),
        Err(e) => skip("the default network", e),
    }
    let wanted = selections(i).unwrap_or_else(|e| {
        skip("the extra networks", e);
        Vec::new()
    });
    let mut extras = Extras::new(i);
    for (idx, (sel, origin)) in wanted.into_iter().enumerate() {
        let name = sel.name.clone();
        match extras.resolve(idx, sel, origin) {
            Ok(a) => plan.push(a),
            Err(e) => skip(&format!("network {name:?}"), e),
        }
    }
    plan
}

/// The default network's attachment, on the runtime's interface.
fn default_attachment(i: &Inputs) -> CniResult<Attachment> {
    let default = default_network(i.conf, i.sources, i.annotations)?;
    let mut runtime_config = i.runtime_config.clone();
    runtime_config.remove("io.kubernetes.cri.pod-annotations");
    Ok(Attachment {
        network: default.key,
        ifname: i.ifname.to_string(),
        config: default.config,
        runtime_config,
        cni_args: None,
        default: true,
        default_route: None,
        result: None,
    })
}

/// The extra networks asked for (`defaultNetworks`, then the annotation),
/// each with its origin, namespaces filled in.
fn selections<'i>(i: &'i Inputs) -> CniResult<Vec<(Selection, &'i str)>> {
    let conf = i.conf;
    let pod_ns = i.pod.map(|p| p.namespace.as_str());
    let mut wanted: Vec<(Selection, &str)> = Vec::new();
    let system = pod_ns.is_some_and(|ns| conf.system_namespaces.iter().any(|s| s == ns));
    if !system {
        for d in &conf.default_networks {
            let (ns, name) = names::split_ref(d).map_err(|e| e.context("defaultNetworks"))?;
            let sel = Selection {
                name: name.to_string(),
                namespace: Some(ns.unwrap_or(&conf.multus_namespace).to_string()),
                ..Default::default()
            };
            wanted.push((sel, "defaultNetworks"));
        }
    }
    if let Some(a) = i.annotations.get(selection::NETWORKS_ANNOTATION) {
        for mut sel in selection::parse_networks(a)? {
            let ns = sel
                .namespace
                .clone()
                .unwrap_or_else(|| pod_ns.unwrap_or("default").to_string());
            sel.namespace = Some(ns);
            wanted.push((sel, selection::NETWORKS_ANNOTATION));
        }
    }
    if wanted.len() > conf.max_attachments {
        return Err(CniError::config(format!(
            "the pod asks for {} extra networks; maxAttachments is {}",
            wanted.len(),
            conf.max_attachments
        )));
    }
    Ok(wanted)
}

/// Resolves the extra attachments one by one: interface names taken so far
/// and the pod's devices not yet handed out.
struct Extras<'a> {
    i: &'a Inputs<'a>,
    ifnames: HashSet<String>,
    devices: Option<PodDevices>,
}

impl<'a> Extras<'a> {
    fn new(i: &'a Inputs<'a>) -> Self {
        Extras {
            i,
            ifnames: HashSet::from([i.ifname.to_string()]),
            devices: None,
        }
    }

    /// The attachment of selection number `idx` (from `origin`), checked.
    fn resolve(&mut self, idx: usize, sel: Selection, origin: &str) -> CniResult<Attachment> {
        let (i, conf) = (self.i, self.i.conf);
        let pod_ns = i.pod.map(|p| p.namespace.as_str());
        let ns = sel.namespace.as_deref().expect("namespace resolved");
        let reference = format!("{ns}/{}", sel.name);
        if origin == selection::NETWORKS_ANNOTATION
            && conf.namespace_isolation
            && Some(ns) != pod_ns
            && !conf.global_namespaces.iter().any(|g| g == ns)
        {
            return Err(CniError::config(format!(
                "{origin}: network {reference} is in another namespace than the pod ({}) and namespaceIsolation is on",
                pod_ns.unwrap_or("none")
            )));
        }
        let net = i
            .sources
            .nad(ns, &sel.name)
            .map_err(|e| e.context(origin))?
            .ok_or_else(|| {
                nad::unknown(origin, &reference, &conf.conf_dir, i.sources.api.is_some())
            })?;
        let ifname = sel
            .interface
            .clone()
            .unwrap_or_else(|| format!("net{}", idx + 1));
        if !self.ifnames.insert(ifname.clone()) {
            return Err(CniError::config(format!(
                "{origin}: network {reference} would use interface {ifname:?}, which another attachment already uses"
            )));
        }
        let rc = sel.capabilities();
        check_capabilities(&net, &rc)?;
        let mut config = net.config;
        if let (Some(resource), None) = (&net.resource_name, &sel.device_id) {
            let id = self.device(origin, &reference, resource)?;
            set_device_id(&mut config, &id);
        }
        Ok(Attachment {
            network: net.key,
            ifname,
            config,
            runtime_config: rc,
            cni_args: sel.cni_args,
            default: false,
            default_route: sel.default_route,
            result: None,
        })
    }

    /// The next device of `resource` kubelet allocated to the pod.
    fn device(&mut self, origin: &str, reference: &str, resource: &str) -> CniResult<String> {
        let devices = match &mut self.devices {
            Some(d) => d,
            None => self
                .devices
                .insert(self.pod_devices(origin, reference, resource)?),
        };
        devices.take(resource).ok_or_else(|| {
            CniError::config(format!(
                "{origin}: network {reference} needs a device of {resource:?}, and kubelet allocated none (left) to this pod ({}): request the resource in the pod spec",
                devices.source
            ))
        })
    }

    /// The pod's devices: from kubelet's PodResources API (by namespace and
    /// name) when its socket exists, else from the checkpoint (by UID). An
    /// API failure is an error (code 11) unless the socket has gone meanwhile.
    fn pod_devices(&self, origin: &str, reference: &str, resource: &str) -> CniResult<PodDevices> {
        let conf = self.i.conf;
        let unnamed = |what: &str| {
            CniError::config(format!(
                "{origin}: network {reference} needs a device of {resource:?}, but the runtime sent no {what} to find the pod's devices"
            ))
        };
        let socket = &conf.pod_resources_socket;
        if socket.exists() {
            let pod = self
                .i
                .pod
                .ok_or_else(|| unnamed("K8S_POD_NAMESPACE and K8S_POD_NAME"))?;
            match PodDevices::list(socket, &pod.namespace, &pod.name) {
                Err(e) if !socket.exists() => {
                    tracing::warn!(error = %e, "PodResources socket gone; reading kubelet's checkpoint")
                }
                found => return found,
            }
        }
        let uid = self
            .i
            .pod_uid
            .filter(|u| !u.is_empty())
            .ok_or_else(|| unnamed("K8S_POD_UID"))?;
        PodDevices::load(&conf.kubelet_checkpoint, uid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (network, ifname) of each attachment.
    fn names(p: &[Attachment]) -> Vec<(&str, &str)> {
        p.iter()
            .map(|a| (a.network.as_str(), a.ifname.as_str()))
            .collect()
    }
    use manifold_common::config::NetConf;
    use manifold_common::ErrorCode;
    use serde_json::json;
    use std::path::{Path, PathBuf};

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn nad(dir: &Path, ns: &str, name: &str, conf: Value) {
        let d = dir.join("attachments").join(ns);
        std::fs::create_dir_all(&d).unwrap();
        let obj = json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                         "metadata": {"name": name, "namespace": ns}, "spec": {"config": conf.to_string()}});
        std::fs::write(d.join(format!("{name}.json")), obj.to_string()).unwrap();
    }

    fn setup(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("mf-plan-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("00-default.conflist"),
            json!({"cniVersion": "1.0.0", "name": "podnet", "plugins": [
                {"type": "bridge"}, {"type": "portmap", "capabilities": {"portMappings": true}}]})
            .to_string(),
        )
        .unwrap();
        for n in ["a", "b", "c", "d", "e", "f"] {
            nad(
                &d,
                "ns1",
                n,
                json!({"cniVersion": "1.0.0", "type": "macvlan", "capabilities": {"mac": true, "ips": true}}),
            );
        }
        nad(
            &d,
            "other",
            "x",
            json!({"cniVersion": "1.0.0", "type": "macvlan"}),
        );
        nad(
            &d,
            "shared",
            "s",
            json!({"cniVersion": "1.0.0", "type": "macvlan"}),
        );
        nad(
            &d,
            "kube-system",
            "alt",
            json!({"cniVersion": "1.0.0", "type": "ptp"}),
        );
        nad(
            &d,
            "kube-system",
            "mon",
            json!({"cniVersion": "1.0.0", "type": "macvlan"}),
        );
        Dir(d)
    }

    fn conf(dir: &Path, extra: Value) -> ManifoldConf {
        let mut v = json!({"cniVersion": "1.1.0", "name": "manifold", "type": "manifold",
                           "clusterNetwork": "podnet", "confDir": dir.display().to_string()});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        ManifoldConf::load(&NetConf::from_value(v).unwrap()).unwrap()
    }

    fn plan(dir: &Path, extra: Value, networks: &str) -> CniResult<Vec<Attachment>> {
        with_inputs(dir, extra, networks, build)
    }

    fn with_inputs<T>(dir: &Path, extra: Value, networks: &str, f: impl FnOnce(&Inputs) -> T) -> T {
        let c = conf(dir, extra);
        let sources = Sources {
            conf_dir: dir,
            api: None,
        };
        let pod = PodRef {
            namespace: "ns1".into(),
            name: "p".into(),
        };
        let mut ann = BTreeMap::new();
        if !networks.is_empty() {
            ann.insert(
                selection::NETWORKS_ANNOTATION.to_string(),
                networks.to_string(),
            );
        }
        let rc = json!({"portMappings": [{"hostPort": 80, "containerPort": 8080}],
                        "io.kubernetes.cri.pod-annotations": {}});
        f(&Inputs {
            pod_uid: None,
            conf: &c,
            sources: &sources,
            pod: Some(&pod),
            annotations: &ann,
            ifname: "eth0",
            runtime_config: rc.as_object().unwrap().clone(),
        })
    }

    #[test]
    fn rebuild_leaves_out_what_no_longer_resolves_and_keeps_the_names() {
        let d = setup("rebuild");
        let p = with_inputs(
            &d.0,
            json!({}),
            "a, gone, ns1/b@fast0, other/x@eth0, c",
            rebuild,
        );
        let got = names(&p);
        assert_eq!(
            got,
            [
                ("podnet", "eth0"),
                ("ns1/a", "net1"),
                ("ns1/b", "fast0"),
                ("ns1/c", "net5")
            ]
        );
        let broken = with_inputs(&d.0, json!({"clusterNetwork": "nosuch"}), "[{", rebuild);
        assert!(broken.is_empty(), "{broken:?}");
    }

    #[test]
    fn default_first_then_extras_named_by_position() {
        let d = setup("order");
        let p = plan(
            &d.0,
            json!({"defaultNetworks": ["mon"]}),
            "a, ns1/b@fast0, c",
        )
        .unwrap();
        let got = names(&p);
        assert_eq!(
            got,
            [
                ("podnet", "eth0"),
                ("kube-system/mon", "net1"),
                ("ns1/a", "net2"),
                ("ns1/b", "fast0"),
                ("ns1/c", "net4")
            ]
        );
        assert!(p[0].default);
        assert_eq!(
            p[0].runtime_config.keys().collect::<Vec<_>>(),
            ["portMappings"]
        );
        assert!(p[1..]
            .iter()
            .all(|a| !a.default && a.runtime_config.is_empty()));
    }

    #[test]
    fn selection_capabilities_and_args_reach_the_attachment() {
        let d = setup("caps");
        let p = plan(&d.0, json!({}), r#"[{"name":"a","mac":"0a:00:00:00:00:01","ips":["10.0.0.5/24"],"cni-args":{"k":"v"},"default-route":["10.0.0.1"]}]"#).unwrap();
        assert_eq!(p[1].runtime_config["mac"], "0a:00:00:00:00:01");
        assert_eq!(p[1].runtime_config["ips"], json!(["10.0.0.5/24"]));
        assert_eq!(p[1].cni_args.as_ref().unwrap()["k"], "v");
        assert_eq!(p[1].default_route.as_ref().unwrap().len(), 1);
    }

    #[test]
    fn system_namespace_skips_default_networks_and_override_replaces_cluster_network() {
        let d = setup("sys");
        let c = conf(
            &d.0,
            json!({"defaultNetworks": ["mon"], "systemNamespaces": ["ns1"]}),
        );
        let sources = Sources {
            conf_dir: &d.0,
            api: None,
        };
        let pod = PodRef {
            namespace: "ns1".into(),
            name: "p".into(),
        };
        let ann = BTreeMap::from([(
            selection::DEFAULT_NETWORK_ANNOTATION.to_string(),
            "alt".to_string(),
        )]);
        let p = build(&Inputs {
            pod_uid: None,
            conf: &c,
            sources: &sources,
            pod: Some(&pod),
            annotations: &ann,
            ifname: "eth0",
            runtime_config: Map::new(),
        })
        .unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].network, "kube-system/alt");
    }

    /// Two NADs of resource `intel.com/vf` and a checkpoint giving pod
    /// `uid-1` devices 0000:03:02.1 and .2.
    fn resource_setup(tag: &str) -> Dir {
        let d = setup(tag);
        for name in ["vf-a", "vf-b"] {
            let dir = d.0.join("attachments").join("ns1");
            let obj = json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                "metadata": {"name": name, "namespace": "ns1",
                             "annotations": {"k8s.v1.cni.cncf.io/resourceName": "intel.com/vf"}},
                "spec": {"config": json!({"cniVersion": "1.0.0", "type": "sriov",
                    "capabilities": {"deviceID": true}}).to_string()}});
            std::fs::write(dir.join(format!("{name}.json")), obj.to_string()).unwrap();
        }
        std::fs::write(
            d.0.join("checkpoint"),
            json!({"Data": {"PodDeviceEntries": [
                {"PodUID": "uid-1", "ContainerName": "c", "ResourceName": "intel.com/vf",
                 "DeviceIDs": {"0": ["0000:03:02.1", "0000:03:02.2"]}}]}})
            .to_string(),
        )
        .unwrap();
        d
    }

    /// The plan of pod `ns1/p` (or an unnamed one) with `networks`, devices
    /// from `socket` if it exists, else from `<dir>/checkpoint`.
    fn build_with_devices(
        dir: &Path,
        socket: &Path,
        named: bool,
        networks: &str,
        uid: Option<&str>,
    ) -> CniResult<Vec<Attachment>> {
        let c = conf(
            dir,
            json!({"kubeletCheckpoint": dir.join("checkpoint").display().to_string(),
                   "podResourcesSocket": socket.display().to_string()}),
        );
        let sources = Sources {
            conf_dir: dir,
            api: None,
        };
        let pod = PodRef {
            namespace: "ns1".into(),
            name: "p".into(),
        };
        let ann = BTreeMap::from([(
            selection::NETWORKS_ANNOTATION.to_string(),
            networks.to_string(),
        )]);
        build(&Inputs {
            pod_uid: uid,
            conf: &c,
            sources: &sources,
            pod: named.then_some(&pod),
            annotations: &ann,
            ifname: "eth0",
            runtime_config: Map::new(),
        })
    }

    /// Without a PodResources socket, NADs naming a device resource get the
    /// pod's devices from kubelet's checkpoint, one each in order; an
    /// explicit `deviceID` wins.
    #[test]
    fn resource_name_takes_the_pods_devices_from_the_kubelet_checkpoint() {
        let d = resource_setup("res");
        let no_socket = d.0.join("no-kubelet.sock");
        let build_with =
            |networks: &str, uid| build_with_devices(&d.0, &no_socket, true, networks, uid);
        let p = build_with("vf-a, vf-b", Some("uid-1")).unwrap();
        assert_eq!(p[1].config["deviceID"], "0000:03:02.1");
        assert_eq!(p[2].config["deviceID"], "0000:03:02.2");
        let p = build_with(
            r#"[{"name": "vf-a", "deviceID": "0000:03:02.2"}, {"name": "vf-b"}]"#,
            Some("uid-1"),
        )
        .unwrap();
        assert!(p[1].config.get("deviceID").is_none());
        assert_eq!(p[1].runtime_config["deviceID"], "0000:03:02.2");
        assert_eq!(p[2].config["deviceID"], "0000:03:02.1");
        for (networks, uid, says) in [
            ("vf-a, vf-b, vf-a@net9", Some("uid-1"), "allocated none"),
            ("vf-a", Some("uid-2"), "allocated none"),
            ("vf-a", None, "K8S_POD_UID"),
        ] {
            let e = build_with(networks, uid).unwrap_err();
            assert_eq!(e.code, manifold_common::ErrorCode::InvalidConfig, "{e}");
            assert!(e.msg.contains(says), "{e}");
        }
    }

    /// With kubelet's PodResources socket there, the devices come from its
    /// API by pod namespace and name (not from a checkpoint that says
    /// otherwise), handed out in the same way; an API that fails is code 11.
    #[test]
    fn resource_name_takes_the_pods_devices_from_the_pod_resources_api() {
        use manifold_podresources::fixture::{pod, FakeKubelet};
        let d = resource_setup("res-api");
        let vf = "intel.com/vf";
        let kubelet = FakeKubelet::start(vec![
            pod("ns1", "q", &[("c", &[(vf, &["0000:03:02.9"])])]),
            pod(
                "ns1",
                "p",
                &[
                    ("c", &[(vf, &["0000:03:02.5"])]),
                    ("d", &[(vf, &["0000:03:02.6"])]),
                ],
            ),
        ]);
        let build_with = |networks: &str, named| {
            build_with_devices(&d.0, kubelet.socket(), named, networks, Some("uid-1"))
        };
        let p = build_with("vf-a, vf-b", true).unwrap();
        assert_eq!(p[1].config["deviceID"], "0000:03:02.5");
        assert_eq!(p[2].config["deviceID"], "0000:03:02.6");
        let p = build_with(
            r#"[{"name": "vf-a", "deviceID": "0000:03:02.6"}, {"name": "vf-b"}]"#,
            true,
        )
        .unwrap();
        assert!(p[1].config.get("deviceID").is_none());
        assert_eq!(p[2].config["deviceID"], "0000:03:02.5");
        let e = build_with("vf-a, vf-b, vf-a@net9", true).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidConfig, "{e}");
        assert!(
            e.msg.contains("allocated none") && e.msg.contains("PodResources API"),
            "{e}"
        );
        let e = build_with("ns1/vf-a", false).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidConfig, "{e}");
        assert!(e.msg.contains("K8S_POD_NAME"), "{e}");
        // A socket nobody serves: no silent fallback to the checkpoint.
        let dead = d.0.join("dead.sock");
        drop(std::os::unix::net::UnixListener::bind(&dead).unwrap());
        let e = build_with_devices(&d.0, &dead, true, "vf-a", Some("uid-1")).unwrap_err();
        assert_eq!(e.code, ErrorCode::TryAgainLater, "{e}");
        assert!(e.msg.contains(&*dead.to_string_lossy()), "{e}");
    }

    /// The examples in conf/manifold stay valid: the runtime's conflist, the
    /// default network, the five NADs and the example pod's selection.
    #[test]
    fn shipped_examples_plan_six_attachments() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../conf/manifold")
            .canonicalize()
            .unwrap();
        let list: Value =
            serde_json::from_slice(&std::fs::read(root.join("00-manifold.conflist")).unwrap())
                .unwrap();
        let mut plugin = list["plugins"][0].clone();
        plugin["cniVersion"] = list["cniVersion"].clone();
        plugin["name"] = list["name"].clone();
        let conf_dir = root.join("manifold.d");
        plugin["confDir"] = json!(conf_dir.display().to_string());
        let c = ManifoldConf::load(&NetConf::from_value(plugin).unwrap()).unwrap();
        let pod: Value =
            serde_yaml_ng::from_slice(&std::fs::read(root.join("pod-example.yaml")).unwrap())
                .unwrap();
        let ann: BTreeMap<String, String> =
            serde_json::from_value(pod["metadata"]["annotations"].clone()).unwrap();
        let sources = Sources {
            conf_dir: &conf_dir,
            api: None,
        };
        let podref = PodRef {
            namespace: "default".into(),
            name: "du-0".into(),
        };
        let p = build(&Inputs {
            pod_uid: None,
            conf: &c,
            sources: &sources,
            pod: Some(&podref),
            annotations: &ann,
            ifname: "eth0",
            runtime_config: Map::new(),
        })
        .unwrap();
        let got = names(&p);
        assert_eq!(
            got,
            [
                ("k8s-pod-network", "eth0"),
                ("default/fronthaul", "fh0"),
                ("default/midhaul", "net2"),
                ("default/oam", "net3"),
                ("default/signalling", "net4"),
                ("default/media", "net5")
            ]
        );
        assert_eq!(
            p[5].runtime_config["ips"],
            json!(["10.105.0.20/24", "fd01:105::20/64"])
        );
    }

    #[test]
    fn every_rejection_is_code_7() {
        let d = setup("rej");
        for (extra, networks) in [
            (json!({}), "nosuch"),
            (json!({}), "a@net2, b"),
            (json!({}), "a@eth0"),
            (json!({}), "a,b,c,d,e,f"),
            (json!({"maxAttachments": 2}), "a,b,c"),
            (json!({"namespaceIsolation": true}), "other/x"),
            (
                json!({}),
                r#"[{"name":"x","namespace":"other","mac":"0a:00:00:00:00:01"}]"#,
            ),
            (json!({}), r#"[{"name":"a","bandwidth":{"ingressRate":1}}]"#),
            (json!({}), "../../etc/passwd"),
        ] {
            let e = plan(&d.0, extra.clone(), networks).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidConfig, "{extra} {networks}: {e}");
        }
        let ok = plan(
            &d.0,
            json!({"namespaceIsolation": true, "globalNamespaces": "shared"}),
            "shared/s, a",
        )
        .unwrap();
        assert_eq!(ok.len(), 3);
    }
}
