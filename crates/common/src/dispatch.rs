//! The verb dispatcher every plugin's `main` calls: reads the environment and
//! stdin, checks the version allows the verb, calls the plugin, prints the
//! result or the error, and picks the exit code.

use crate::config::{NetConf, MAX_CONFIG_BYTES};
use crate::env::{CniEnv, Command};
use crate::error::{CniError, CniResult, ErrorCode};
use crate::result::NetworkResult;
use crate::version::{self, CniVersion};
use std::io::Read;

/// One CNI call: its environment, parsed config and raw stdin.
pub struct Call {
    /// `CNI_*` environment.
    pub env: CniEnv,
    /// Parsed config.
    pub conf: NetConf,
    /// Raw stdin, passed unchanged to IPAM.
    pub stdin: Vec<u8>,
}

/// A plugin's verbs; VERSION is answered by the dispatcher.
pub trait Plugin {
    /// ADD: attach and return the result.
    fn add(&self, call: &Call) -> CniResult<NetworkResult>;
    /// DEL: detach; idempotent.
    fn del(&self, call: &Call) -> CniResult<()>;
    /// CHECK: verify the attachment matches `prevResult`.
    fn check(&self, call: &Call) -> CniResult<()>;
    /// GC: release what is not in `cni.dev/valid-attachments`.
    fn gc(&self, call: &Call) -> CniResult<()>;
    /// STATUS: ready to serve ADDs?
    fn status(&self, call: &Call) -> CniResult<()>;
}

/// What the process prints on stdout and exits with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Bytes for stdout (may be empty).
    pub stdout: String,
    /// Exit code.
    pub code: i32,
}

fn read_stdin(input: &mut dyn Read) -> CniResult<Vec<u8>> {
    let mut buf = Vec::new();
    input
        .take(MAX_CONFIG_BYTES as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| CniError::new(ErrorCode::Io, format!("read config from stdin: {e}")))?;
    Ok(buf)
}

/// The version to express an error in: the config's own when we speak it.
fn error_version(stdin: &[u8]) -> &'static str {
    serde_json::from_slice::<serde_json::Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_string))
        .and_then(|s| CniVersion::parse(&s).ok())
        .unwrap_or(CniVersion::LATEST)
        .as_str()
}

fn gate(command: Command, v: CniVersion) -> CniResult<()> {
    let allowed = match command {
        Command::Check => v.supports_check(),
        Command::Gc | Command::Status => v.supports_gc_status(),
        _ => true,
    };
    if allowed {
        Ok(())
    } else {
        Err(CniError::new(
            ErrorCode::IncompatibleVersion,
            format!("cniVersion {v} does not allow {}", command.as_str()),
        )
        .with_details(match command {
            Command::Check => "CHECK needs cniVersion 0.4.0 or later",
            _ => "GC and STATUS need cniVersion 1.1.0 or later",
        }))
    }
}

fn dispatch(plugin: &dyn Plugin, env: CniEnv, stdin: Vec<u8>) -> CniResult<Option<String>> {
    let conf = NetConf::parse(&stdin)?;
    crate::logging::init(conf.log_file.as_deref(), conf.log_level.as_deref());
    gate(env.command, conf.cni_version)?;
    let version = conf.cni_version;
    let command = env.command;
    let call = Call { env, conf, stdin };
    tracing::debug!(command = command.as_str(), container = %call.env.container_id, ifname = %call.env.ifname, "call");
    match command {
        Command::Add => {
            let r = plugin.add(&call)?;
            Ok(Some(pretty(&r.to_value(version))))
        }
        Command::Del => plugin.del(&call).map(|_| None),
        Command::Check => plugin.check(&call).map(|_| None),
        Command::Gc => plugin.gc(&call).map(|_| None),
        Command::Status => plugin.status(&call).map(|_| None),
        Command::Version => unreachable!("VERSION is answered before the config is read"),
    }
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).expect("JSON values serialize")
}

/// Runs one call with explicit inputs (what [`main`] does with the process's).
pub fn run(plugin: &dyn Plugin, env: CniResult<CniEnv>, stdin: &mut dyn Read) -> Outcome {
    if let Ok(e) = &env {
        if e.command == Command::Version {
            return Outcome {
                stdout: version::version_info().to_string(),
                code: 0,
            };
        }
    }
    let stdin = match read_stdin(stdin) {
        Ok(s) => s,
        Err(e) => return failure(&e, CniVersion::LATEST.as_str()),
    };
    let version = error_version(&stdin);
    match env.and_then(|env| dispatch(plugin, env, stdin)) {
        Ok(out) => Outcome {
            stdout: out.unwrap_or_default(),
            code: 0,
        },
        Err(e) => failure(&e, version),
    }
}

fn failure(e: &CniError, version: &str) -> Outcome {
    tracing::warn!(error = %e, "call failed");
    Outcome {
        stdout: pretty(&serde_json::to_value(e.to_wire(version)).expect("error serializes")),
        code: 1,
    }
}

/// Entry point of a plugin binary: never returns.
pub fn main(plugin: &dyn Plugin) -> ! {
    use std::io::Write;
    let outcome = run(plugin, CniEnv::from_process(), &mut std::io::stdin().lock());
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(outcome.stdout.as_bytes());
    if !outcome.stdout.is_empty() {
        let _ = out.write_all(b"\n");
    }
    let _ = out.flush();
    std::process::exit(outcome.code)
}
