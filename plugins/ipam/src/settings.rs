//! Store, node name and lease TTL: from the network config's `ipam` section,
//! else from the node-wide file, else defaults (local store, hostname, 30 s).

use crate::names;
use crate::node_cache;
use crate::store::{
    EtcdConf, StoreConf, TlsFiles, DEFAULT_DATA_DIR, DEFAULT_DIAL_TIMEOUT, DEFAULT_PREFIX,
    DEFAULT_REQUEST_TIMEOUT,
};
use manifold_common::{CniError, CniResult};
use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The node-wide file that may supply the store (and node name, lease TTL)
/// so network configs need not repeat them.
pub const NODE_FILE: &str = "/etc/cni/net.d/manifold.d/ipam.json";
/// Environment variable naming another node-wide file ("" for none).
pub const NODE_FILE_ENV: &str = "MANIFOLD_IPAM_CONFIG";
/// Default lease TTL of an unfinished ADD, seconds.
pub const DEFAULT_LEASE_TTL: u64 = 30;

#[derive(Debug, Clone, Default, Deserialize)]
struct WireTls {
    #[serde(default)]
    ca: Option<String>,
    #[serde(default)]
    cert: Option<String>,
    #[serde(default)]
    key: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct WireEtcd {
    #[serde(default)]
    endpoints: Vec<String>,
    #[serde(default)]
    tls: Option<WireTls>,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(rename = "dialTimeout", default)]
    dial_timeout: Option<Value>,
    #[serde(rename = "requestTimeout", default)]
    request_timeout: Option<Value>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(rename = "cacheDir", default)]
    cache_dir: Option<String>,
}

/// The store-related fields, as found in an `ipam` section or the node-wide file.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StoreFields {
    #[serde(default)]
    etcd: Option<WireEtcd>,
    #[serde(default)]
    datastore: Option<String>,
    #[serde(default)]
    etcd_host: Option<String>,
    #[serde(default)]
    etcd_username: Option<String>,
    #[serde(default)]
    etcd_password: Option<String>,
    #[serde(default)]
    etcd_ca_cert_file: Option<String>,
    #[serde(default)]
    etcd_cert_file: Option<String>,
    #[serde(default)]
    etcd_key_file: Option<String>,
    #[serde(rename = "dataDir", default)]
    data_dir: Option<String>,
    #[serde(rename = "nodeName", default)]
    node_name: Option<String>,
    #[serde(rename = "leaseTTL", default)]
    lease_ttl: Option<u64>,
}

/// Where a call stores, who it is, and how long an unfinished ADD may hold addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The store.
    pub store: StoreConf,
    /// This node's name, recorded with every allocation.
    pub node: String,
    /// Lease TTL of an unfinished ADD, seconds.
    pub lease_ttl: u64,
}

/// Parses "5s", "500ms", "1m", "2" (seconds) or a number of seconds.
fn duration(what: &str, v: &Value) -> CniResult<Duration> {
    let bad = || {
        CniError::config(format!(
            "etcd {what} {v} is not a duration: use seconds (5, 0.5) or \"500ms\", \"5s\", \"1m\""
        ))
    };
    let secs = match v {
        Value::Number(n) => n.as_f64().ok_or_else(bad)?,
        Value::String(s) => {
            let s = s.trim();
            let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
                (n, 0.001)
            } else if let Some(n) = s.strip_suffix('s') {
                (n, 1.0)
            } else if let Some(n) = s.strip_suffix('m') {
                (n, 60.0)
            } else {
                (s, 1.0)
            };
            num.trim().parse::<f64>().map_err(|_| bad())? * scale
        }
        _ => return Err(bad()),
    };
    if !(0.001..=300.0).contains(&secs) {
        return Err(CniError::config(format!(
            "etcd {what} {v} must be between 1ms and 300s"
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn endpoint(raw: &str, tls: bool) -> CniResult<String> {
    let e = raw.trim();
    if e.is_empty() || e.chars().any(|c| c.is_whitespace() || c == '\0') {
        return Err(CniError::config(format!(
            "etcd endpoint {raw:?} is not of the form http(s)://host:port or host:port"
        )));
    }
    Ok(if e.contains("://") {
        e.to_string()
    } else if tls {
        format!("https://{e}")
    } else {
        format!("http://{e}")
    })
}

fn prefix(raw: Option<&str>) -> CniResult<String> {
    let p = raw.unwrap_or(DEFAULT_PREFIX).trim_end_matches('/');
    let ok = p.starts_with('/')
        && p.len() > 1
        && p.split('/').skip(1).all(|c| {
            !c.is_empty() && c != "." && c != ".." && c.chars().all(|ch| ch.is_ascii_graphic())
        });
    if ok {
        Ok(p.to_string())
    } else {
        Err(CniError::config(format!(
            "etcd prefix {:?} is invalid: use an absolute key path like \"{DEFAULT_PREFIX}\" (no empty, '.' or '..' components, no spaces or NUL)",
            raw.unwrap_or_default()
        )))
    }
}

impl StoreFields {
    /// Parses the fields out of a JSON object (other fields are ignored).
    pub fn from_value(v: &Value, what: &str) -> CniResult<Self> {
        serde_json::from_value(v.clone())
            .map_err(|e| manifold_common::config::decode_error(what, e))
    }

    /// Reads the node-wide file: `$MANIFOLD_IPAM_CONFIG` if set (empty: none),
    /// else [`NODE_FILE`] when it exists.
    pub fn node_file() -> CniResult<Self> {
        let path = match std::env::var(NODE_FILE_ENV) {
            Ok(p) if p.is_empty() => return Ok(Self::default()),
            Ok(p) => PathBuf::from(p),
            Err(_) if Path::new(NODE_FILE).exists() => PathBuf::from(NODE_FILE),
            Err(_) => return Ok(Self::default()),
        };
        Self::from_file(&path)
    }

    /// Reads a node-wide file, or the `ipam` section of a network config file.
    pub fn from_file(path: &Path) -> CniResult<Self> {
        let bytes = std::fs::read(path).map_err(|e| {
            CniError::config(format!("read IPAM node config {}: {e}", path.display()))
        })?;
        let what = format!("IPAM node config {}", path.display());
        let v = manifold_common::config::parse_json_object(&what, &bytes)?;
        Self::from_value(v.get("ipam").unwrap_or(&v), &what)
    }

    fn wants_etcd(&self) -> bool {
        self.etcd.is_some() || self.etcd_host.is_some() || self.datastore.as_deref() == Some("etcd")
    }

    fn names_store(&self) -> bool {
        self.wants_etcd() || self.data_dir.is_some()
    }

    /// The store these fields name, if any.
    pub fn store(&self) -> CniResult<Option<StoreConf>> {
        match self.datastore.as_deref() {
            None | Some("etcd") | Some("kubernetes") => {}
            Some(other) => {
                return Err(CniError::config(format!(
                    "datastore {other:?} is not supported: use \"etcd\" (with etcd_host or \"etcd\"), or leave it out for the local store"
                )))
            }
        }
        let local = match &self.data_dir {
            None => None,
            Some(d) if d.starts_with('/') && !d.contains('\0') => Some(StoreConf::Local {
                data_dir: PathBuf::from(d),
            }),
            Some(d) => {
                return Err(CniError::config(format!(
                    "dataDir {d:?} must be an absolute path"
                )))
            }
        };
        if self.wants_etcd() {
            return self.etcd_conf().map(|c| Some(StoreConf::Etcd(c)));
        }
        Ok(local)
    }

    fn etcd_conf(&self) -> CniResult<EtcdConf> {
        let e = self.etcd.clone().unwrap_or_default();
        let tls = e.tls.map(|t| TlsFiles {
            ca: t.ca,
            cert: t.cert,
            key: t.key,
        });
        let legacy_tls = TlsFiles {
            ca: self.etcd_ca_cert_file.clone(),
            cert: self.etcd_cert_file.clone(),
            key: self.etcd_key_file.clone(),
        };
        let tls = tls.or((legacy_tls != TlsFiles::default()).then_some(legacy_tls));
        let mut raw: Vec<String> = e.endpoints;
        if let Some(h) = &self.etcd_host {
            raw.extend(h.split(',').map(str::to_string));
        }
        if raw.is_empty() {
            return Err(CniError::config(
                "etcd store has no endpoints: set \"etcd\": {\"endpoints\": [\"https://host:2379\"]} (or Whereabouts' etcd_host)",
            ));
        }
        let endpoints = raw
            .iter()
            .map(|r| endpoint(r, tls.is_some()))
            .collect::<CniResult<Vec<_>>>()?;
        let user = match (
            e.username.or(self.etcd_username.clone()),
            e.password.or(self.etcd_password.clone()),
        ) {
            (Some(u), p) => Some((u, p.unwrap_or_default())),
            (None, _) => None,
        };
        Ok(EtcdConf {
            endpoints,
            tls,
            user,
            prefix: prefix(e.prefix.as_deref())?,
            dial_timeout: e
                .dial_timeout
                .map(|v| duration("dialTimeout", &v))
                .transpose()?
                .unwrap_or(DEFAULT_DIAL_TIMEOUT),
            request_timeout: e
                .request_timeout
                .map(|v| duration("requestTimeout", &v))
                .transpose()?
                .unwrap_or(DEFAULT_REQUEST_TIMEOUT),
            cache_dir: cache_dir(e.cache_dir.as_deref())?,
        })
    }
}

/// The node cache directory: `cacheDir`, default [`node_cache::DEFAULT_DIR`]; "" turns it off.
fn cache_dir(v: Option<&str>) -> CniResult<Option<PathBuf>> {
    match v {
        None => Ok(Some(PathBuf::from(node_cache::DEFAULT_DIR))),
        Some("") => Ok(None),
        Some(d) if d.starts_with('/') && !d.contains('\0') => Ok(Some(PathBuf::from(d))),
        Some(d) => Err(CniError::config(format!(
            "etcd cacheDir {d:?} must be an absolute path (or \"\" for no node cache)"
        ))),
    }
}

fn hostname() -> CniResult<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .map_err(|e| {
            CniError::config(format!(
                "nodeName is not set and the hostname cannot be read: {e}"
            ))
        })
}

impl Settings {
    /// Resolves the settings of a call from its `ipam` section and the node-wide file.
    pub fn resolve(ipam: &StoreFields, node_file: &StoreFields) -> CniResult<Self> {
        let store = if ipam.names_store() {
            ipam.store()?
        } else {
            ipam.store()?; // still refuse an unknown datastore
            node_file.store()?
        };
        let store = match store {
            Some(s) => s,
            None if ipam.datastore.as_deref() == Some("kubernetes") => {
                return Err(CniError::config(format!(
                    "datastore \"kubernetes\" is not supported: remove it and configure \"etcd\" in the network config or in {NODE_FILE}"
                )))
            }
            None => StoreConf::Local {
                data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            },
        };
        let node = match ipam.node_name.clone().or(node_file.node_name.clone()) {
            Some(n) => n,
            None => hostname()?,
        };
        names::check("nodeName", &node)?;
        let lease_ttl = ipam
            .lease_ttl
            .or(node_file.lease_ttl)
            .unwrap_or(DEFAULT_LEASE_TTL);
        if !(1..=3600).contains(&lease_ttl) {
            return Err(CniError::config(format!(
                "leaseTTL {lease_ttl} must be between 1 and 3600 seconds"
            )));
        }
        Ok(Settings {
            store,
            node,
            lease_ttl,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(v: Value) -> StoreFields {
        StoreFields::from_value(&v, "test").unwrap()
    }

    #[test]
    fn network_config_store_wins_over_node_file() {
        let nad = fields(
            json!({"etcd": {"endpoints": ["127.0.0.1:2379"], "requestTimeout": "1500ms"}, "nodeName": "n1"}),
        );
        let node = fields(json!({"dataDir": "/tmp/x", "leaseTTL": 7}));
        let s = Settings::resolve(&nad, &node).unwrap();
        let StoreConf::Etcd(e) = &s.store else {
            panic!("{s:?}")
        };
        assert_eq!(e.endpoints, vec!["http://127.0.0.1:2379"]);
        assert_eq!(e.request_timeout, Duration::from_millis(1500));
        assert_eq!(e.prefix, DEFAULT_PREFIX);
        assert_eq!((s.node.as_str(), s.lease_ttl), ("n1", 7));
    }

    #[test]
    fn whereabouts_etcd_host_and_files_are_understood() {
        let nad = fields(
            json!({"datastore": "etcd", "etcd_host": "etcd-a:2379,etcd-b:2379",
            "etcd_ca_cert_file": "/ca.pem", "nodeName": "n1"}),
        );
        let s = Settings::resolve(&nad, &StoreFields::default()).unwrap();
        let StoreConf::Etcd(e) = &s.store else {
            panic!()
        };
        assert_eq!(
            e.endpoints,
            vec!["https://etcd-a:2379", "https://etcd-b:2379"]
        );
        assert_eq!(e.tls.as_ref().unwrap().ca.as_deref(), Some("/ca.pem"));
    }

    #[test]
    fn kubernetes_datastore_needs_a_node_file_store() {
        let nad = fields(json!({"datastore": "kubernetes", "nodeName": "n1"}));
        let e = Settings::resolve(&nad, &StoreFields::default()).unwrap_err();
        assert!(e.msg.contains("not supported"), "{}", e.msg);
        let node = fields(json!({"etcd": {"endpoints": ["http://e:2379"]}}));
        assert!(matches!(
            Settings::resolve(&nad, &node).unwrap().store,
            StoreConf::Etcd(_)
        ));
    }

    #[test]
    fn escaping_prefix_and_bad_node_name_are_invalid() {
        for p in ["../x", "/a/../b", "relative", "/a b", "/"] {
            let nad = fields(json!({"etcd": {"endpoints": ["e:1"], "prefix": p}, "nodeName": "n"}));
            assert!(
                Settings::resolve(&nad, &StoreFields::default()).is_err(),
                "{p}"
            );
        }
        let nad = fields(json!({"nodeName": "../../etc"}));
        assert!(Settings::resolve(&nad, &StoreFields::default()).is_err());
    }
}
