//! Network configuration: the fields every plugin shares, runtimeConfig
//! capabilities (CONVENTIONS.md), and conflists.

use crate::error::{CniError, CniResult, ErrorCode};
use crate::result::{Dns, NetworkResult};
use crate::version::CniVersion;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Largest config we read from stdin; anything bigger is not a network config.
pub const MAX_CONFIG_BYTES: usize = 4 << 20;

/// The `ipam` section: only `type` is ours to read; the rest is the IPAM plugin's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamRef {
    /// IPAM plugin binary name (empty: no IPAM).
    #[serde(rename = "type", default)]
    pub plugin: String,
}

/// A port mapping (`portMappings` capability); go-cni sends PascalCase keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// Host port.
    #[serde(rename = "hostPort", alias = "HostPort")]
    pub host_port: u16,
    /// Container port.
    #[serde(rename = "containerPort", alias = "ContainerPort")]
    pub container_port: u16,
    /// "tcp", "udp" or "sctp".
    #[serde(default, alias = "Protocol", skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Host IP to bind.
    #[serde(
        rename = "hostIP",
        alias = "HostIP",
        alias = "HostIp",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub host_ip: Option<String>,
}

/// Traffic shaping (`bandwidth` capability), bits per second and bits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bandwidth {
    /// Ingress rate.
    #[serde(
        rename = "ingressRate",
        alias = "IngressRate",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ingress_rate: Option<u64>,
    /// Ingress burst.
    #[serde(
        rename = "ingressBurst",
        alias = "IngressBurst",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ingress_burst: Option<u64>,
    /// Egress rate.
    #[serde(
        rename = "egressRate",
        alias = "EgressRate",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub egress_rate: Option<u64>,
    /// Egress burst.
    #[serde(
        rename = "egressBurst",
        alias = "EgressBurst",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub egress_burst: Option<u64>,
}

/// DNS from the runtime (`dns` capability).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeDns {
    /// Name servers.
    #[serde(alias = "Servers", default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
    /// Search domains.
    #[serde(alias = "Searches", default, skip_serializing_if = "Vec::is_empty")]
    pub searches: Vec<String>,
    /// Options.
    #[serde(alias = "Options", default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// `runtimeConfig`: the capabilities of CONVENTIONS.md that Manifold uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeConfig {
    /// Requested static addresses, CIDR strings.
    #[serde(
        alias = "IPs",
        alias = "Ips",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ips: Vec<String>,
    /// Requested MAC.
    #[serde(
        alias = "Mac",
        alias = "MAC",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub mac: Option<String>,
    /// Device (e.g. SR-IOV VF PCI address).
    #[serde(
        rename = "deviceID",
        alias = "DeviceID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub device_id: Option<String>,
    /// Traffic shaping.
    #[serde(alias = "Bandwidth", default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<Bandwidth>,
    /// Port mappings.
    #[serde(
        rename = "portMappings",
        alias = "PortMappings",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub port_mappings: Vec<PortMapping>,
    /// DNS.
    #[serde(
        alias = "DNS",
        alias = "Dns",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub dns: Option<RuntimeDns>,
    /// Pod annotations from containerd's CRI plugin.
    #[serde(
        rename = "io.kubernetes.cri.pod-annotations",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub pod_annotations: Option<BTreeMap<String, String>>,
}

/// One attachment, as listed in GC's `cni.dev/valid-attachments`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attachment {
    /// Container ID.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// Interface name.
    pub ifname: String,
}

/// The fields every plugin config shares (spec 1.1.0, "Plugin configuration objects").
#[derive(Debug, Clone)]
pub struct NetConf {
    /// Negotiated version results are printed in.
    pub cni_version: CniVersion,
    /// Network name.
    pub name: String,
    /// Plugin type (binary name).
    pub plugin_type: String,
    /// IPAM section, if any.
    pub ipam: Option<IpamRef>,
    /// Static DNS config.
    pub dns: Dns,
    /// Result of the previous plugin in a chain.
    pub prev_result: Option<NetworkResult>,
    /// Capabilities the runtime filled in.
    pub runtime_config: RuntimeConfig,
    /// GC: attachments that are still in use.
    pub valid_attachments: Option<Vec<Attachment>>,
    /// Where to log (`logFile`), if anywhere but stderr.
    pub log_file: Option<String>,
    /// Log level (`logLevel`).
    pub log_level: Option<String>,
    /// The whole config as JSON, for plugin-specific fields and delegation.
    pub raw: Value,
}

/// Shared fields as they appear on the wire; private, [`NetConf`] is the parsed form.
#[derive(Deserialize)]
struct WireConf {
    #[serde(rename = "cniVersion", default)]
    cni_version: String,
    #[serde(default)]
    name: String,
    #[serde(rename = "type", default)]
    plugin_type: String,
    #[serde(default)]
    ipam: Option<IpamRef>,
    #[serde(default)]
    dns: Option<Dns>,
    #[serde(rename = "prevResult", default)]
    prev_result: Option<Value>,
    #[serde(rename = "runtimeConfig", default)]
    runtime_config: Option<RuntimeConfig>,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    valid_attachments: Option<Vec<Attachment>>,
    #[serde(rename = "logFile", default)]
    log_file: Option<String>,
    #[serde(rename = "logLevel", default)]
    log_level: Option<String>,
}

/// A decode (6) error for config bytes or fields of the wrong type.
pub fn decode_error(what: &str, e: impl std::fmt::Display) -> CniError {
    CniError::new(ErrorCode::Decode, format!("decode {what}: {e}"))
}

/// Whether `name` has the spec's network-name shape: alphanumeric plus '-', '_', '.',
/// starting alphanumeric (so never empty, no '/', no "..").
pub fn is_cni_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Checks a network name: alphanumeric plus '-', '_', '.' (spec), starting alphanumeric.
pub fn validate_network_name(name: &str) -> CniResult<()> {
    if is_cni_name(name) {
        Ok(())
    } else if name.is_empty() {
        Err(CniError::config("network config has no \"name\""))
    } else {
        Err(CniError::config(format!(
            "network name {name:?} is invalid: use letters, digits, '-', '_' and '.', starting with a letter or digit"
        )))
    }
}

/// Checks a plugin `type` names a binary, not a path.
pub fn validate_plugin_type(what: &str, t: &str) -> CniResult<()> {
    if t.is_empty() {
        return Err(CniError::config(format!("{what} has no \"type\"")));
    }
    if t.contains('/') || t == "." || t == ".." || t.contains('\0') {
        return Err(CniError::config(format!(
            "{what} type {t:?} must be a plugin name, not a path"
        )));
    }
    Ok(())
}

/// Parses JSON bytes into an object, with size and syntax checks.
pub fn parse_json_object(what: &str, bytes: &[u8]) -> CniResult<Value> {
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(CniError::new(
            ErrorCode::Decode,
            format!(
                "{what} is {} bytes, more than the {MAX_CONFIG_BYTES}-byte limit",
                bytes.len()
            ),
        ));
    }
    let v: Value = serde_json::from_slice(bytes).map_err(|e| decode_error(what, e))?;
    if !v.is_object() {
        return Err(CniError::new(
            ErrorCode::Decode,
            format!("{what} must be a JSON object"),
        ));
    }
    Ok(v)
}

impl NetConf {
    /// Parses a plugin's stdin config.
    pub fn parse(bytes: &[u8]) -> CniResult<Self> {
        Self::from_value(parse_json_object("network config", bytes)?)
    }

    /// Parses an already decoded config object.
    pub fn from_value(raw: Value) -> CniResult<Self> {
        let w: WireConf =
            serde_json::from_value(raw.clone()).map_err(|e| decode_error("network config", e))?;
        let cni_version = CniVersion::parse(&w.cni_version)?;
        validate_network_name(&w.name)?;
        validate_plugin_type("network config", &w.plugin_type)?;
        let ipam = w.ipam.filter(|i| !i.plugin.is_empty());
        if let Some(i) = &ipam {
            validate_plugin_type("ipam", &i.plugin)?;
        }
        let prev_result = w
            .prev_result
            .filter(|v| !v.is_null())
            .map(|v| NetworkResult::from_value(&v))
            .transpose()
            .map_err(|e| e.context("prevResult"))?;
        Ok(NetConf {
            cni_version,
            name: w.name,
            plugin_type: w.plugin_type,
            ipam,
            dns: w.dns.unwrap_or_default(),
            prev_result,
            runtime_config: w.runtime_config.unwrap_or_default(),
            valid_attachments: w.valid_attachments,
            log_file: w.log_file.filter(|s| !s.is_empty()),
            log_level: w.log_level.filter(|s| !s.is_empty()),
            raw,
        })
    }

    /// Deserializes the plugin-specific part of the config.
    pub fn plugin_fields<T: DeserializeOwned>(&self) -> CniResult<T> {
        serde_json::from_value(self.raw.clone())
            .map_err(|e| decode_error(&format!("{} config", self.plugin_type), e))
    }

    /// The IPAM plugin name, if IPAM is configured.
    pub fn ipam_plugin(&self) -> Option<&str> {
        self.ipam.as_ref().map(|i| i.plugin.as_str())
    }
}

/// A network configuration list (spec 1.1.0, "Configuration format").
#[derive(Debug, Clone)]
pub struct NetConfList {
    /// Version negotiated from `cniVersions` / `cniVersion`.
    pub cni_version: CniVersion,
    /// Network name.
    pub name: String,
    /// `disableCheck`.
    pub disable_check: bool,
    /// `disableGC`.
    pub disable_gc: bool,
    /// The plugin objects, in order.
    pub plugins: Vec<Value>,
}

#[derive(Deserialize)]
struct WireList {
    #[serde(rename = "cniVersion", default)]
    cni_version: String,
    #[serde(rename = "cniVersions", default)]
    cni_versions: Vec<String>,
    #[serde(default)]
    name: String,
    #[serde(rename = "disableCheck", default)]
    disable_check: bool,
    #[serde(rename = "disableGC", default)]
    disable_gc: bool,
    #[serde(default)]
    plugins: Vec<Value>,
}

impl NetConfList {
    /// Parses a conflist; a single plugin conf (no `plugins`) becomes a one-plugin list.
    pub fn from_value(v: &Value) -> CniResult<Self> {
        let w: WireList = serde_json::from_value(v.clone())
            .map_err(|e| decode_error("network config list", e))?;
        let cni_version = CniVersion::negotiate(&w.cni_versions, &w.cni_version)?;
        validate_network_name(&w.name)?;
        let plugins = if v.get("plugins").is_some() {
            if w.plugins.is_empty() {
                return Err(CniError::config(format!(
                    "network config list {:?} has no plugins",
                    w.name
                )));
            }
            w.plugins
        } else {
            vec![v.clone()]
        };
        for (i, p) in plugins.iter().enumerate() {
            let t = p.get("type").and_then(Value::as_str).unwrap_or_default();
            validate_plugin_type(&format!("plugin {i} of network {:?}", w.name), t)?;
        }
        Ok(NetConfList {
            cni_version,
            name: w.name,
            disable_check: w.disable_check,
            disable_gc: w.disable_gc,
            plugins,
        })
    }

    /// The config a runtime sends plugin `i`: name and version injected, the
    /// previous result, and the runtimeConfig keys the plugin declared in
    /// `capabilities` (libcni's `buildOneConfig`).
    pub fn plugin_config(
        &self,
        i: usize,
        prev_result: Option<&Value>,
        runtime_config: &Map<String, Value>,
    ) -> Value {
        let mut p = self.plugins[i].as_object().cloned().unwrap_or_default();
        p.insert("cniVersion".into(), Value::from(self.cni_version.as_str()));
        p.insert("name".into(), Value::from(self.name.clone()));
        if let Some(prev) = prev_result {
            p.insert("prevResult".into(), prev.clone());
        }
        let caps: Vec<String> = p
            .get("capabilities")
            .and_then(Value::as_object)
            .map(|c| {
                c.iter()
                    .filter(|(_, on)| on.as_bool() == Some(true))
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default();
        let rc: Map<String, Value> = runtime_config
            .iter()
            .filter(|(k, _)| caps.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !rc.is_empty() {
            p.insert("runtimeConfig".into(), Value::Object(rc));
        }
        Value::Object(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_common_fields_and_pascal_case_runtime_config() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n1","type":"manifold-macvlan",
                "ipam":{"type":"host-local","subnet":"10.0.0.0/24"},
                "runtimeConfig":{"portMappings":[{"HostPort":80,"ContainerPort":8080,"Protocol":"tcp"}],
                                 "bandwidth":{"IngressRate":1000},"dns":{"Servers":["10.0.0.10"]}}}"#,
        )
        .unwrap();
        assert_eq!(c.cni_version, CniVersion::V1_0_0);
        assert_eq!(c.ipam_plugin(), Some("host-local"));
        assert_eq!(c.runtime_config.port_mappings[0].host_port, 80);
        assert_eq!(c.runtime_config.bandwidth.unwrap().ingress_rate, Some(1000));
        assert_eq!(c.runtime_config.dns.unwrap().servers, vec!["10.0.0.10"]);
    }

    #[test]
    fn ipam_type_that_is_a_path_is_invalid() {
        let e = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n","type":"x","ipam":{"type":"../../bin/sh"}}"#,
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidConfig);
    }

    #[test]
    fn wrong_field_type_is_decode_error() {
        let e =
            NetConf::parse(br#"{"cniVersion":"1.0.0","name":"n","type":"x","dns":5}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::Decode);
    }

    #[test]
    fn conflist_builds_per_plugin_config_with_capabilities() {
        let l = NetConfList::from_value(&json!({
            "cniVersion":"0.4.0","cniVersions":["1.0.0","1.1.0"],"name":"net",
            "plugins":[{"type":"bridge"},{"type":"portmap","capabilities":{"portMappings":true}}]
        }))
        .unwrap();
        assert_eq!(l.cni_version, CniVersion::V1_1_0);
        let rc = json!({"portMappings":[{"hostPort":1,"containerPort":2}],"mac":"x"});
        let rc = rc.as_object().unwrap();
        let p0 = l.plugin_config(0, None, rc);
        assert!(p0.get("runtimeConfig").is_none());
        assert_eq!(p0["name"], "net");
        let prev = json!({"cniVersion":"1.1.0"});
        let p1 = l.plugin_config(1, Some(&prev), rc);
        assert_eq!(
            p1["runtimeConfig"],
            json!({"portMappings":[{"hostPort":1,"containerPort":2}]})
        );
        assert_eq!(p1["prevResult"], prev);
        assert_eq!(p1["cniVersion"], "1.1.0");
    }
}
