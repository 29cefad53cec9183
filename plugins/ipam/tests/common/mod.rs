//! What the IPAM end-to-end tests share: a runner that execs the plugin as a
//! runtime does, temporary directories, a real etcd server on loopback, and
//! the two stores every semantic test runs against.
#![allow(dead_code)] // each test binary uses a different part (manifoldctl's tests include it too)

use manifold_ipam::kv::Entry;
use manifold_ipam::store::StoreConf;
use serde_json::{json, Value};
use std::process::Child;

/// The plugin binary under test (set by cargo for the manifold-ipam package's
/// tests; other packages that include this module drive the plugin in-process).
pub const PLUGIN: Option<&str> = option_env!("CARGO_BIN_EXE_manifold-ipam");

#[allow(unused_imports)] // only the TLS test uses Certs
pub use manifold_tests::etcd::{Certs, Etcd, TempDir};

/// A store the suite runs against.
pub enum Backend {
    /// The local store in a temporary dataDir.
    Local(TempDir),
    /// A private etcd.
    Etcd(Etcd),
}

impl Backend {
    /// The local store.
    pub fn local() -> Self {
        Backend::Local(TempDir::new("local"))
    }

    /// A fresh etcd.
    pub fn etcd() -> Self {
        Backend::Etcd(Etcd::start())
    }

    /// The store fields of an `ipam` section.
    pub fn store_fields(&self) -> Value {
        match self {
            Backend::Local(d) => json!({"dataDir": d.0}),
            Backend::Etcd(e) => {
                json!({"etcd": {"endpoints": [e.url], "dialTimeout": "1s", "requestTimeout": "3s",
                                "cacheDir": e.node_cache_dir()}})
            }
        }
    }

    /// The store as the library sees it.
    pub fn store_conf(&self) -> StoreConf {
        let f =
            manifold_ipam::settings::StoreFields::from_value(&self.store_fields(), "test").unwrap();
        f.store().unwrap().unwrap()
    }

    /// Every key of an address space.
    pub fn keys(&self, space: &str) -> Vec<Entry> {
        let mut s = self.store_conf().open(space).unwrap();
        let root = match self {
            Backend::Local(_) => String::new(),
            Backend::Etcd(_) => format!("/manifold/ipam/{space}/"),
        };
        let end = format!("{root}\u{7f}");
        s.kv.scan((root, end), false).unwrap()
    }

    /// The address keys of a space, as "key suffix => record".
    pub fn addresses(&self, space: &str) -> Vec<Entry> {
        self.keys(space)
            .into_iter()
            .filter(|e| e.key.contains("addrs/"))
            .collect()
    }

    /// The attachment keys of a space.
    pub fn attachments(&self, space: &str) -> Vec<Entry> {
        self.keys(space)
            .into_iter()
            .filter(|e| e.key.contains("attachments/"))
            .collect()
    }
}

pub use manifold_tests::Output;

/// One call of the plugin: verb, attachment, extra environment.
pub struct Call(manifold_tests::Call);

impl Call {
    /// A call of `verb` for (container, ifname), with no node-wide IPAM file.
    pub fn new(verb: &str, container: &str, ifname: &str) -> Self {
        let plugin = PLUGIN.expect("the manifold-ipam binary (built with its tests)");
        Call(
            manifold_tests::Call::at(plugin)
                .verb(verb, container, "/var/run/netns/test", ifname)
                .env("CNI_PATH", "/nonexistent")
                .env("MANIFOLD_IPAM_CONFIG", ""),
        )
    }

    /// Sets an environment variable.
    pub fn env(self, k: &str, v: &str) -> Self {
        Call(self.0.env(k, v))
    }

    /// Starts the plugin with `conf` on stdin, without waiting.
    pub fn spawn(&self, conf: &Value) -> Child {
        self.0.spawn(conf.to_string().as_bytes()).0
    }

    /// Runs the plugin with `conf` on stdin.
    pub fn run(&self, conf: &Value) -> Output {
        self.0.run(conf.to_string().as_bytes())
    }
}

/// A network config for `manifold-ipam` with `ipam` fields merged over the backend's store.
pub fn conf(b: &Backend, ipam: Value) -> Value {
    let mut i = b.store_fields();
    i["type"] = json!("manifold-ipam");
    i["nodeName"] = json!("node-a");
    for (k, v) in ipam.as_object().unwrap() {
        i[k] = v.clone();
    }
    json!({"cniVersion": "1.1.0", "name": "net1", "type": "macvlan", "ipam": i})
}

/// ADD for (container, "net1").
pub fn add(c: &Value, container: &str) -> Output {
    Call::new("ADD", container, "net1").run(c)
}

/// DEL for (container, "net1").
pub fn del(c: &Value, container: &str) -> Output {
    Call::new("DEL", container, "net1").run(c)
}

/// Checks the store's invariants and returns the committed attachments
/// (container ID, ifname) with their addresses: every attachment committed
/// with no lease, every address key held by an attachment that lists it,
/// every listed address present.
pub fn consistent_attachments(b: &Backend, space: &str) -> Vec<((String, String), Vec<String>)> {
    use manifold_ipam::records::{AddressRecord, AttachmentRecord, State};
    use std::collections::HashMap;
    let keys = b.keys(space);
    let mut addrs: HashMap<String, AddressRecord> = HashMap::new();
    let mut atts = Vec::new();
    for e in &keys {
        if e.key.contains("/addrs/") || e.key.starts_with("addrs/") {
            assert_eq!(e.lease, 0, "address key {} still has a lease", e.key);
            addrs.insert(
                e.key.clone(),
                serde_json::from_value(e.value.clone()).unwrap(),
            );
        } else if e.key.contains("attachments/") {
            assert_eq!(e.lease, 0, "attachment {} still has a lease", e.key);
            let r: AttachmentRecord = serde_json::from_value(e.value.clone()).unwrap();
            assert_eq!(r.state, State::Committed, "{}", e.key);
            atts.push(r);
        }
    }
    let mut listed = 0;
    let mut out = Vec::new();
    for a in &atts {
        for ip in &a.addresses {
            let holder = addrs
                .iter()
                .find(|(k, _)| k.ends_with(&hex_of(ip.addr())))
                .unwrap_or_else(|| panic!("{ip} of {} has no address key", a.owner.container_id));
            assert_eq!(holder.1.owner.container_id, a.owner.container_id);
            assert_eq!(holder.1.owner.ifname, a.owner.ifname);
            assert_eq!(holder.1.state, State::Committed);
            listed += 1;
        }
        out.push((
            (a.owner.container_id.clone(), a.owner.ifname.clone()),
            a.addresses.iter().map(|n| n.addr().to_string()).collect(),
        ));
    }
    assert_eq!(listed, addrs.len(), "address keys held by no attachment");
    out
}

fn hex_of(ip: std::net::IpAddr) -> String {
    use manifold_ipam::addr;
    let f = addr::Family::of(ip);
    format!("/{}/{}", f.tag(), addr::hex(f, addr::to_u128(ip)))
}

/// A small deterministic random source for the tests.
pub struct TestRng(u64);

impl TestRng {
    /// Seeded.
    pub fn new(seed: u64) -> Self {
        TestRng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

#[allow(unused_macros)] // not every test binary runs the two-store suite
/// Defines each named test function `fn(Backend)` twice: in `local_store` and in `etcd_store`.
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        mod local_store {
            $( #[test] fn $name() { super::$name(super::Backend::local()) } )*
        }
        mod etcd_store {
            $( #[test] fn $name() { super::$name(super::Backend::etcd()) } )*
        }
    };
}
