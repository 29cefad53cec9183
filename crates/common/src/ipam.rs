//! IPAM delegation: the interface plugins run `ipam.type` with their own
//! environment and stdin, changing only the verb. `host-local` runs
//! in-process ([`hostlocal`]) unless `MANIFOLD_DELEGATE_HOST_LOCAL=1`; an
//! IPAM plugin linked into the binary ([`link_in_process`], e.g.
//! manifold-ipam) runs in-process unless `MANIFOLD_DELEGATE_IPAM=1`.

use crate::config::NetConf;
use crate::delegate::{self, Invocation};
use crate::dispatch::{self, Plugin};
use crate::env::{CniEnv, Command};
use crate::error::{CniError, CniResult, ErrorCode};
use crate::hostlocal::{self, HostLocal};
use crate::result::NetworkResult;
use crate::version::CniVersion;

/// Environment variable that makes the interface plugins exec every IPAM
/// plugin, also one linked in (`1`, `true` or `yes`).
pub const DELEGATE_ENV: &str = "MANIFOLD_DELEGATE_IPAM";

/// An IPAM plugin linked into this binary.
struct Linked {
    name: &'static str,
    plugin: &'static (dyn Plugin + Sync),
}

static LINKED: std::sync::OnceLock<Linked> = std::sync::OnceLock::new();

/// Links IPAM plugin `name` into this binary (once, before any call): an
/// `ipam.type` of `name` then runs `plugin` in this process, with the same
/// environment, stdin, output and errors as the exec'd binary, and without
/// its start-up. `MANIFOLD_DELEGATE_IPAM=1` execs it anyway.
pub fn link_in_process(name: &'static str, plugin: &'static (dyn Plugin + Sync)) {
    let _ = LINKED.set(Linked { name, plugin });
}

/// True when environment variable `var` is `1`, `true` or `yes`.
pub(crate) fn env_flag(var: &str) -> bool {
    std::env::var(var)
        .is_ok_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
}

/// The linked plugin of that name, unless delegation is requested.
fn linked(name: &str) -> Option<&'static Linked> {
    LINKED
        .get()
        .filter(|l| l.name == name && !env_flag(DELEGATE_ENV))
}

/// A configured IPAM plugin, bound to one call's environment and stdin.
pub struct Ipam<'a> {
    plugin: &'a str,
    conf: &'a NetConf,
    env: &'a CniEnv,
    stdin: &'a [u8],
    in_process: bool,
}

impl<'a> Ipam<'a> {
    /// The IPAM of `conf`, or `None` when the config has no `ipam.type`.
    pub fn of(conf: &'a NetConf, env: &'a CniEnv, stdin: &'a [u8]) -> Option<Self> {
        conf.ipam_plugin().map(|plugin| Ipam {
            plugin,
            conf,
            env,
            stdin,
            in_process: plugin == hostlocal::PLUGIN && !hostlocal::delegation_requested(),
        })
    }

    /// Runs a verb of the in-process host-local, its errors prefixed as a
    /// delegate's are.
    fn host_local<T>(
        &self,
        command: Command,
        verb: impl FnOnce(&HostLocal) -> CniResult<T>,
    ) -> CniResult<T> {
        tracing::debug!(command = command.as_str(), "ipam: host-local in-process");
        HostLocal::load(self.conf, self.env)
            .and_then(|h| verb(&h))
            .map_err(|e| {
                e.context(format_args!("{} {}", self.plugin, command.as_str()))
                    .context("ipam")
            })
    }

    fn exec(&self, command: Command, stdin: &[u8]) -> CniResult<Option<serde_json::Value>> {
        if let Some(l) = linked(self.plugin) {
            tracing::debug!(
                command = command.as_str(),
                plugin = l.name,
                "ipam: in-process"
            );
            let env = CniEnv {
                command,
                ..self.env.clone()
            };
            let out = dispatch::run(l.plugin, Ok(env), &mut &stdin[..]);
            let ctx = format!("{} {}", l.name, command.as_str());
            return delegate::decode_output(&ctx, out.code == 0, out.stdout.as_bytes(), &[])
                .map_err(|e| e.context("ipam"));
        }
        delegate::exec(&Invocation {
            plugin: self.plugin,
            command,
            env: self.env,
            stdin,
            timeout: delegate::DEFAULT_TIMEOUT,
        })
        .map_err(|e| e.context("ipam"))
    }

    /// Runs a verb. An IPAM that refuses the config's version (the reference
    /// host-local stops at 1.0.0) is asked again in the newest version it
    /// speaks: a version check fails before any allocation, so the retry is safe.
    fn run(&self, command: Command) -> CniResult<Option<serde_json::Value>> {
        match self.exec(command, self.stdin) {
            Err(e) if e.code == ErrorCode::IncompatibleVersion => {
                let Some(version) = self.newest_supported()? else {
                    return Err(e);
                };
                let mut conf: serde_json::Value = serde_json::from_slice(self.stdin)
                    .map_err(|d| CniError::new(ErrorCode::Decode, d.to_string()))?;
                conf["cniVersion"] = version.as_str().into();
                // A prevResult (CHECK, chained DEL) must be in that version's shape too.
                if let Some(prev) = conf.get("prevResult").filter(|p| !p.is_null()) {
                    conf["prevResult"] = NetworkResult::from_value(prev)?.to_value(version);
                }
                tracing::debug!(plugin = self.plugin, %version, "ipam: retrying in an older version");
                self.exec(command, conf.to_string().as_bytes())
            }
            other => other,
        }
    }

    /// The versions the plugin reports (VERSION).
    fn supported_versions(&self) -> CniResult<Vec<CniVersion>> {
        let v = self
            .exec(Command::Version, br#"{"cniVersion":"1.1.0"}"#)?
            .unwrap_or_default();
        Ok(v.get("supportedVersions")
            .and_then(|l| l.as_array())
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().and_then(|s| CniVersion::parse(s).ok()))
            .collect())
    }

    fn newest_supported(&self) -> CniResult<Option<CniVersion>> {
        Ok(self.supported_versions()?.into_iter().max())
    }

    /// ADD: allocates and returns at least one address.
    pub fn add(&self) -> CniResult<NetworkResult> {
        if self.in_process {
            return self.host_local(Command::Add, HostLocal::add);
        }
        let v = self.run(Command::Add)?.ok_or_else(|| {
            CniError::new(
                ErrorCode::Delegate,
                format!("ipam {} ADD printed no result", self.plugin),
            )
        })?;
        let r = NetworkResult::from_value(&v).map_err(|e| e.context("ipam result"))?;
        if r.ips.is_empty() {
            return Err(CniError::new(
                ErrorCode::Delegate,
                format!("ipam {} returned no IP addresses", self.plugin),
            ));
        }
        Ok(r)
    }

    /// DEL: releases what ADD allocated (idempotent in every IPAM plugin).
    pub fn del(&self) -> CniResult<()> {
        if self.in_process {
            return self.host_local(Command::Del, HostLocal::del);
        }
        self.run(Command::Del).map(drop)
    }

    /// CHECK.
    pub fn check(&self) -> CniResult<()> {
        if self.in_process {
            return self.host_local(Command::Check, HostLocal::check);
        }
        self.run(Command::Check).map(drop)
    }

    /// GC. The in-process host-local, like the reference, collects nothing.
    pub fn gc(&self) -> CniResult<()> {
        if self.in_process {
            return Ok(());
        }
        self.run(Command::Gc).map(drop)
    }

    /// STATUS. The in-process host-local, like the reference, is always ready.
    pub fn status(&self) -> CniResult<()> {
        if self.in_process {
            return Ok(());
        }
        self.run(Command::Status).map(drop)
    }

    /// Whether the plugin speaks 1.1.0, which has GC and STATUS: asked with
    /// VERSION, except of the in-process host-local, which does.
    pub fn speaks_gc_status(&self) -> CniResult<bool> {
        if self.in_process {
            return Ok(true);
        }
        Ok(self.supported_versions()?.contains(&CniVersion::V1_1_0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::CniArgs;

    /// Debian's reference plugins.
    const REFERENCE_DIR: &str = "/usr/lib/cni";

    fn env(path: &std::path::Path) -> CniEnv {
        CniEnv {
            command: Command::Add,
            container_id: "c1".into(),
            netns: None,
            ifname: "eth0".into(),
            args: CniArgs::default(),
            path: vec![path.to_path_buf()],
        }
    }

    #[test]
    fn host_local_runs_in_process_without_cni_path() {
        if hostlocal::delegation_requested() {
            return; // the escape hatch is set in this environment
        }
        let dir = crate::hostlocal::tests::tempdir("ipam-of");
        let raw = serde_json::json!({"cniVersion": "1.1.0", "name": "n", "type": "manifold-macvlan",
            "ipam": {"type": "host-local", "subnet": "10.0.0.0/24", "dataDir": dir.display().to_string()}});
        let conf = NetConf::from_value(raw.clone()).unwrap();
        let stdin = raw.to_string();
        let env = env(std::path::Path::new("/nonexistent"));
        let ipam = Ipam::of(&conf, &env, stdin.as_bytes()).unwrap();
        assert!(ipam.speaks_gc_status().unwrap());
        let r = ipam.add().unwrap();
        assert_eq!(r.ips[0].address.to_string(), "10.0.0.2/24");
        let e = ipam.add().unwrap_err();
        assert!(
            e.msg
                .starts_with("ipam: host-local ADD: failed to allocate for range 0"),
            "{e}"
        );
        ipam.check().unwrap();
        ipam.gc().unwrap();
        ipam.status().unwrap();
        ipam.del().unwrap();
        assert!(ipam.check().is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn other_ipam_types_are_still_exec_d() {
        let raw = serde_json::json!({"cniVersion": "1.0.0", "name": "n", "type": "manifold-macvlan",
            "ipam": {"type": "static"}});
        let conf = NetConf::from_value(raw.clone()).unwrap();
        let stdin = raw.to_string();
        let env = env(std::path::Path::new("/nonexistent"));
        let e = Ipam::of(&conf, &env, stdin.as_bytes())
            .unwrap()
            .add()
            .unwrap_err();
        assert!(e.msg.contains("not found in CNI_PATH"), "{e}");
    }

    /// The reference `static` stops at 1.0.0: a 1.1.0 CHECK is retried in
    /// 1.0.0 with its prevResult converted too (a 1.1.0-shaped prevResult
    /// under "cniVersion": "1.0.0" would be refused).
    #[test]
    fn retry_in_an_older_version_converts_the_prev_result() {
        let raw = serde_json::json!({"cniVersion": "1.1.0", "name": "n", "type": "manifold-macvlan",
            "ipam": {"type": "static", "addresses": [{"address": "10.1.2.3/24"}]},
            "prevResult": {"cniVersion": "1.1.0",
                "interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/x"}],
                "ips": [{"address": "10.1.2.3/24", "interface": 0}]}});
        let conf = NetConf::from_value(raw.clone()).unwrap();
        let stdin = raw.to_string();
        let mut env = env(std::path::Path::new(REFERENCE_DIR));
        env.command = Command::Check;
        env.netns = Some("/var/run/netns/x".into());
        let ipam = Ipam::of(&conf, &env, stdin.as_bytes()).unwrap();
        ipam.check().unwrap();
    }
}
