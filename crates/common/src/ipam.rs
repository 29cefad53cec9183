//! IPAM delegation: the interface plugins run `ipam.type` with their own
//! environment and stdin, changing only the verb.

use crate::config::NetConf;
use crate::delegate::{self, Invocation};
use crate::env::{CniEnv, Command};
use crate::error::{CniError, CniResult, ErrorCode};
use crate::result::NetworkResult;

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

    fn run(&self, command: Command) -> CniResult<Option<serde_json::Value>> {
        delegate::exec(&Invocation {
            plugin: self.plugin,
            command,
            env: self.env,
            stdin: self.stdin,
            timeout: delegate::DEFAULT_TIMEOUT,
        })
        .map_err(|e| e.context("ipam"))
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
}
