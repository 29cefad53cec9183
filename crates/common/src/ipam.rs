//! IPAM delegation: the interface plugins run `ipam.type` with their own
//! environment and stdin, changing only the verb.

use crate::config::NetConf;
use crate::delegate::{self, Invocation};
use crate::env::{CniEnv, Command};
use crate::error::{CniError, CniResult, ErrorCode};
use crate::result::NetworkResult;
use crate::version::CniVersion;

/// A configured IPAM plugin, bound to one call's environment and stdin.
pub struct Ipam<'a> {
    plugin: &'a str,
    env: &'a CniEnv,
    stdin: &'a [u8],
}

impl<'a> Ipam<'a> {
    /// The IPAM of `conf`, or `None` when the config has no `ipam.type`.
    pub fn of(conf: &'a NetConf, env: &'a CniEnv, stdin: &'a [u8]) -> Option<Self> {
        conf.ipam_plugin().map(|plugin| Ipam { plugin, env, stdin })
    }

    fn exec(&self, command: Command, stdin: &[u8]) -> CniResult<Option<serde_json::Value>> {
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
        self.run(Command::Del).map(drop)
    }

    /// CHECK.
    pub fn check(&self) -> CniResult<()> {
        self.run(Command::Check).map(drop)
    }

    /// GC.
    pub fn gc(&self) -> CniResult<()> {
        self.run(Command::Gc).map(drop)
    }

    /// STATUS.
    pub fn status(&self) -> CniResult<()> {
        self.run(Command::Status).map(drop)
    }

    /// Asks the plugin (VERSION) whether it speaks 1.1.0, which has GC and STATUS.
    pub fn speaks_gc_status(&self) -> CniResult<bool> {
        Ok(self.supported_versions()?.contains(&CniVersion::V1_1_0))
    }
}
