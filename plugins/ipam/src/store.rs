//! Which store a call uses and how to open it: etcd when configured (in the
//! network config or the node-wide file), else the local store.

use crate::etcd::EtcdKv;
use crate::keys::Keys;
use crate::kv::Kv;
use crate::local::{self, LocalKv};
use crate::node_cache::NodeCache;
use manifold_common::CniResult;
use std::path::PathBuf;
use std::time::Duration;

/// Default directory of the local store.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/manifold/ipam";
/// Default etcd key prefix.
pub const DEFAULT_PREFIX: &str = "/manifold/ipam";
/// Default etcd dial timeout.
pub const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(2);
/// Default etcd request timeout (each request, and so the time to fail when etcd is gone).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Client TLS files for etcd.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsFiles {
    /// CA bundle (PEM) to verify the servers.
    pub ca: Option<String>,
    /// Client certificate (PEM).
    pub cert: Option<String>,
    /// Client key (PEM).
    pub key: Option<String>,
}

/// How to reach etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConf {
    /// Endpoint URLs (`http://host:port` or `https://host:port`).
    pub endpoints: Vec<String>,
    /// Client TLS, if any.
    pub tls: Option<TlsFiles>,
    /// User name and password, if etcd authentication is on.
    pub user: Option<(String, String)>,
    /// Key prefix (starts with '/', no trailing '/').
    pub prefix: String,
    /// TCP connect timeout.
    pub dial_timeout: Duration,
    /// Timeout of each request.
    pub request_timeout: Duration,
    /// Directory of the node cache (None: no cache).
    pub cache_dir: Option<PathBuf>,
}

/// The store of a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConf {
    /// One JSON state file per address space in a directory (one node).
    Local {
        /// The directory.
        data_dir: PathBuf,
    },
    /// etcd (cluster-wide).
    Etcd(EtcdConf),
}

/// An opened store bound to one address space.
pub struct Store {
    /// The key-value interface.
    pub kv: Box<dyn Kv>,
    /// The space's keys.
    pub keys: Keys,
}

impl StoreConf {
    /// Opens the store for `space` (the local store locks it until drop).
    pub fn open(&self, space: &str) -> CniResult<Store> {
        Ok(match self {
            StoreConf::Local { data_dir } => Store {
                kv: Box::new(LocalKv::open(data_dir, space)?),
                keys: Keys::new(String::new(), None),
            },
            StoreConf::Etcd(c) => Store {
                kv: Box::new(EtcdKv::connect(c)?),
                keys: Keys::new(
                    format!("{}/{space}/", c.prefix),
                    Some(format!("{}/_spaces/{space}", c.prefix)),
                ),
            },
        })
    }

    /// The node cache of `space` for `node` (etcd with a cache directory only).
    pub fn node_cache(&self, space: &str, node: &str) -> Option<NodeCache> {
        match self {
            StoreConf::Etcd(c) => c
                .cache_dir
                .as_ref()
                .map(|d| NodeCache::new(d, &c.endpoints, &c.prefix, space, node)),
            StoreConf::Local { .. } => None,
        }
    }

    /// The address spaces that hold data.
    pub fn spaces(&self) -> CniResult<Vec<String>> {
        match self {
            StoreConf::Local { data_dir } => local::spaces(data_dir),
            StoreConf::Etcd(c) => {
                let p = format!("{}/_spaces/", c.prefix);
                let mut kv = EtcdKv::connect(c)?;
                Ok(kv
                    .scan((p.clone(), crate::keys::prefix_end(&p)), true)?
                    .into_iter()
                    .filter_map(|e| e.key.strip_prefix(&p).map(str::to_string))
                    .collect())
            }
        }
    }

    /// "etcd http://..." or "local store /var/lib/..." for messages.
    pub fn describe(&self) -> String {
        match self {
            StoreConf::Local { data_dir } => format!("local store {}", data_dir.display()),
            StoreConf::Etcd(c) => format!("etcd {}", c.endpoints.join(",")),
        }
    }
}
