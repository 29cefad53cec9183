//! host-local IPAM in-process: the reference plugin's configuration,
//! allocation order, results and on-disk store (containernetworking/plugins
//! `plugins/ipam/host-local`, v1.1.1 as Debian ships it through v1.9), so a
//! node may mix it with the reference binary on one `dataDir`.
//!
//! [`ipam::Ipam`](crate::ipam::Ipam) uses it whenever `ipam.type` is
//! `host-local`, saving the 3–4 ms of starting the Go binary, unless
//! [`DELEGATE_ENV`] asks for the binary.
//!
//! Like the reference: every error is code 999 ([`ERROR_CODE`]) with its
//! message; GC and STATUS (which the reference does not implement) do nothing.
//! Unlike it: one lock is held across a whole ADD (the reference takes it per
//! range set), and errors carry `details` saying what to do.

pub mod allocator;
pub mod config;
pub mod store;

use crate::config::NetConf;
use crate::env::CniEnv;
use crate::error::{CniError, CniResult, ErrorCode};
use crate::result::{Dns, NetworkResult};
use config::IpamConfig;
use std::path::Path;
use store::Store;

/// The `ipam.type` handled in-process.
pub const PLUGIN: &str = "host-local";
/// Where networks' directories live when `ipam.dataDir` is not set.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";
/// The code of every host-local error (libcni's "internal error" for plain
/// Go errors).
pub const ERROR_CODE: ErrorCode = ErrorCode::Other(999);
/// Set to `1`/`true` to exec the `host-local` binary from `CNI_PATH` instead.
pub const DELEGATE_ENV: &str = "MANIFOLD_DELEGATE_HOST_LOCAL";

/// A host-local error: code 999.
pub(crate) fn fail(msg: impl Into<String>) -> CniError {
    CniError::new(ERROR_CODE, msg)
}

/// Whether [`DELEGATE_ENV`] asks for the reference binary.
pub fn delegation_requested() -> bool {
    crate::ipam::env_flag(DELEGATE_ENV)
}

/// One host-local call: the loaded config and the attachment it is for.
#[derive(Debug, Clone)]
pub struct HostLocal {
    /// The validated configuration.
    pub config: IpamConfig,
    container_id: String,
    ifname: String,
}

impl HostLocal {
    /// Loads the configuration of a call (the network config and `CNI_ARGS`).
    pub fn load(conf: &NetConf, env: &CniEnv) -> CniResult<Self> {
        Ok(HostLocal {
            config: IpamConfig::load(&conf.raw, &env.args.render())?,
            container_id: env.container_id.clone(),
            ifname: env.ifname.clone(),
        })
    }

    fn store(&self) -> CniResult<Store> {
        Store::open(&self.config.data_dir, &self.config.name)
    }

    /// ADD: one address from each range set (a requested one when it falls in
    /// the set), the routes, and the DNS of `resolvConf`. On failure nothing
    /// stays allocated.
    pub fn add(&self) -> CniResult<NetworkResult> {
        let (id, ifname) = (self.container_id.as_str(), self.ifname.as_str());
        let dns = match &self.config.resolv_conf {
            Some(path) => parse_resolv_conf(path)?,
            None => Dns::default(),
        };
        let store = self.store()?;
        let mut pending = self.config.requested.clone();
        let mut result = NetworkResult {
            dns,
            routes: self.config.routes.clone(),
            ..Default::default()
        };
        let rollback = |allocated: usize| {
            for _ in 0..allocated {
                if let Err(e) = store.release_by_id(id, ifname) {
                    tracing::error!(error = %e, "host-local: rollback failed");
                }
            }
        };
        for (idx, set) in self.config.ranges.iter().enumerate() {
            let requested = pending
                .iter()
                .position(|ip| set.contains(*ip))
                .map(|i| pending.remove(i));
            match allocator::get(&store, set, idx, id, ifname, requested) {
                Ok(ip) => result.ips.push(ip),
                Err(e) => {
                    rollback(result.ips.len());
                    return Err(e.context(format!("failed to allocate for range {idx}")));
                }
            }
        }
        if !pending.is_empty() {
            rollback(result.ips.len());
            let list: Vec<String> = pending.iter().map(ToString::to_string).collect();
            return Err(fail(format!(
                "failed to allocate all requested IPs: {}",
                list.join(" ")
            ))
            .with_details("no range set of ipam.ranges contains these addresses"));
        }
        tracing::debug!(container = id, ifname, ips = ?result.ips, "host-local: allocated");
        Ok(result)
    }

    /// DEL: releases the attachment's addresses in every range set
    /// (idempotent).
    pub fn del(&self) -> CniResult<()> {
        let store = self.store()?;
        for _ in &self.config.ranges {
            store.release_by_id(&self.container_id, &self.ifname)?;
        }
        Ok(())
    }

    /// CHECK: the attachment holds at least one address in the network.
    pub fn check(&self) -> CniResult<()> {
        if self.store()?.find_by_id(&self.container_id, &self.ifname)? {
            return Ok(());
        }
        Err(fail(format!(
            "host-local: Failed to find address added by container {}",
            self.container_id
        ))
        .with_details(format!(
            "no file in {} holds container {} and interface {}",
            self.config.data_dir.join(&self.config.name).display(),
            self.container_id,
            self.ifname
        )))
    }
}

/// Reads a resolv.conf: nameservers, domain, search and options.
fn parse_resolv_conf(path: &Path) -> CniResult<Dns> {
    let text =
        std::fs::read_to_string(path).map_err(|e| fail(format!("open {}: {e}", path.display())))?;
    let mut dns = Dns::default();
    for line in text.lines().map(str::trim) {
        if line.starts_with(['#', ';']) {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [key, first, rest @ ..] = fields.as_slice() else {
            continue;
        };
        let all = || std::iter::once(first).chain(rest).map(|s| s.to_string());
        match *key {
            "nameserver" => dns.nameservers.push(first.to_string()),
            "domain" => dns.domain = Some(first.to_string()),
            "search" => dns.search.extend(all()),
            "options" => dns.options.extend(all()),
            _ => {}
        }
    }
    Ok(dns)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::args::CniArgs;
    use crate::env::Command;
    use serde_json::{json, Value};
    use std::path::PathBuf;

    pub(crate) fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mf-hl-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn call(dir: &Path, ipam: Value, id: &str, args: &str) -> HostLocal {
        let mut ipam = ipam;
        ipam["type"] = json!("host-local");
        ipam["dataDir"] = json!(dir.display().to_string());
        let conf = NetConf::from_value(
            json!({"cniVersion": "1.0.0", "name": "net", "type": "manifold-macvlan", "ipam": ipam}),
        )
        .unwrap();
        let env = CniEnv {
            command: Command::Add,
            container_id: id.into(),
            netns: None,
            ifname: "eth0".into(),
            args: CniArgs::parse(args).unwrap(),
            path: vec![],
        };
        HostLocal::load(&conf, &env).unwrap()
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir.join("net"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn add_allocates_round_robin_and_del_releases() {
        let d = tempdir("add");
        let ipam = json!({"ranges": [[{"subnet": "10.0.0.0/29"}], [{"subnet": "fd00::/125"}]],
                          "routes": [{"dst": "0.0.0.0/0"}]});
        let r = call(&d, ipam.clone(), "c1", "").add().unwrap();
        let v = r.to_value(crate::CniVersion::V1_0_0);
        assert_eq!(
            v,
            json!({"cniVersion": "1.0.0",
                   "ips": [{"address": "10.0.0.2/29", "gateway": "10.0.0.1"},
                           {"address": "fd00::2/125", "gateway": "fd00::1"}],
                   "routes": [{"dst": "0.0.0.0/0"}], "dns": {}})
        );
        call(&d, ipam.clone(), "c1", "").check().unwrap();
        call(&d, ipam.clone(), "c1", "").del().unwrap();
        assert!(files(&d).is_empty());
        let e = call(&d, ipam.clone(), "c1", "").check().unwrap_err();
        assert_eq!(e.code, ERROR_CODE);
        assert_eq!(
            e.msg,
            "host-local: Failed to find address added by container c1"
        );
        let r = call(&d, ipam, "c2", "").add().unwrap();
        assert_eq!(r.ips[0].address.to_string(), "10.0.0.3/29", "round-robin");
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn duplicate_add_and_exhaustion_fail_with_the_reference_messages() {
        let d = tempdir("dup");
        let ipam = json!({"ranges": [[{"subnet": "10.0.0.0/30"}]]});
        call(&d, ipam.clone(), "c1", "").add().unwrap();
        let e = call(&d, ipam.clone(), "c1", "").add().unwrap_err();
        assert_eq!(e.code, ERROR_CODE);
        assert_eq!(
            e.msg,
            "failed to allocate for range 0: 10.0.0.2 has been allocated to c1, duplicate allocation is not allowed"
        );
        let e = call(&d, ipam, "c2", "").add().unwrap_err();
        assert_eq!(
            e.msg,
            "failed to allocate for range 0: no IP addresses available in range set: 10.0.0.1-10.0.0.2"
        );
        assert!(
            e.details.contains(&d.join("net").display().to_string()),
            "{e}"
        );
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn failure_in_a_later_range_set_rolls_back_earlier_ones() {
        let d = tempdir("rollback");
        let ipam = json!({"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.1.0.0/24"}]]});
        call(&d, ipam.clone(), "c1", "IP=10.1.0.9").add().unwrap();
        let e = call(&d, ipam.clone(), "c2", "IP=10.1.0.9")
            .add()
            .unwrap_err();
        assert_eq!(
            e.msg,
            "failed to allocate for range 1: requested IP address 10.1.0.9 is not available in range set 10.1.0.1-10.1.0.254"
        );
        assert!(e.details.contains("c1 on eth0"), "{e}");
        assert_eq!(
            files(&d),
            ["10.0.0.2", "10.1.0.9"],
            "c2's 10.0.0.3 was released"
        );
        let e = call(&d, ipam.clone(), "c3", "IP=10.1.0.1")
            .add()
            .unwrap_err();
        assert_eq!(
            e.msg,
            "failed to allocate for range 1: requested ip 10.1.0.1 is subnet's gateway"
        );
        let e = call(&d, ipam, "c3", "IP=10.2.0.1").add().unwrap_err();
        assert_eq!(e.msg, "failed to allocate all requested IPs: 10.2.0.1");
        assert_eq!(files(&d), ["10.0.0.2", "10.1.0.9"]);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn resolv_conf_becomes_dns() {
        let d = tempdir("dns");
        std::fs::create_dir_all(&d).unwrap();
        let rc = d.join("resolv.conf");
        std::fs::write(
            &rc,
            "# c\nnameserver 10.0.0.53\nnameserver fd00::53\ndomain example.com\nsearch a.example b.example\noptions ndots:2 edns0\n",
        )
        .unwrap();
        let ipam = json!({"subnet": "10.0.0.0/24", "resolvConf": rc.display().to_string()});
        let r = call(&d, ipam, "c1", "").add().unwrap();
        assert_eq!(
            serde_json::to_value(&r.dns).unwrap(),
            json!({"nameservers": ["10.0.0.53", "fd00::53"], "domain": "example.com",
                   "search": ["a.example", "b.example"], "options": ["ndots:2", "edns0"]})
        );
        std::fs::remove_dir_all(d).unwrap();
    }
}
