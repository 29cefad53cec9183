//! The `CNI_*` environment a runtime passes with every call.

use crate::args::CniArgs;
use crate::error::{CniError, CniResult};
use std::path::PathBuf;

/// A CNI verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Attach a container.
    Add,
    /// Detach a container.
    Del,
    /// Verify an attachment.
    Check,
    /// Release resources of attachments that no longer exist (1.1.0).
    Gc,
    /// Report readiness (1.1.0).
    Status,
    /// Report supported versions.
    Version,
}

impl Command {
    /// Parses `CNI_COMMAND`.
    pub fn parse(s: &str) -> CniResult<Self> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            "VERSION" => Command::Version,
            "" => return Err(CniError::env("CNI_COMMAND is not set")),
            other => {
                return Err(CniError::env(format!(
                    "CNI_COMMAND {other:?} is not one of ADD, DEL, CHECK, GC, STATUS, VERSION"
                )))
            }
        })
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Gc => "GC",
            Command::Status => "STATUS",
            Command::Version => "VERSION",
        }
    }

    /// Verbs that act on one attachment and so need a container ID and ifname.
    fn needs_attachment(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }
}

/// The parsed environment of one call.
#[derive(Debug, Clone)]
pub struct CniEnv {
    /// The verb.
    pub command: Command,
    /// `CNI_CONTAINERID` (empty for GC/STATUS/VERSION).
    pub container_id: String,
    /// `CNI_NETNS`; `None` when empty (allowed for DEL).
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME` (empty for GC/STATUS/VERSION).
    pub ifname: String,
    /// `CNI_ARGS`.
    pub args: CniArgs,
    /// `CNI_PATH`, split on ':'.
    pub path: Vec<PathBuf>,
}

/// Checks a container ID as libcni does: alphanumeric first, then `[A-Za-z0-9_.-]`.
pub fn validate_container_id(id: &str) -> CniResult<()> {
    let ok = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else if id.is_empty() {
        Err(CniError::env("CNI_CONTAINERID is not set"))
    } else {
        Err(CniError::env(format!(
            "CNI_CONTAINERID {id:?} is invalid: it must start with a letter or digit and contain only letters, digits, '_', '.' and '-'"
        )))
    }
}

/// Checks an interface name as the kernel would accept it.
pub fn validate_ifname(name: &str) -> CniResult<()> {
    let problem = if name.is_empty() {
        Some("is empty")
    } else if name.len() > 15 {
        Some("is longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("is a path component")
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '\0')
    {
        Some("contains '/', ':', whitespace or NUL")
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(p) => Err(CniError::env(format!("interface name {name:?} {p}"))),
    }
}

impl CniEnv {
    /// Reads and validates the process environment.
    pub fn from_process() -> CniResult<Self> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Parses from any key lookup (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> CniResult<Self> {
        let command = Command::parse(&get("CNI_COMMAND").unwrap_or_default())?;
        let container_id = get("CNI_CONTAINERID").unwrap_or_default();
        let ifname = get("CNI_IFNAME").unwrap_or_default();
        let netns = get("CNI_NETNS")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from);
        if command.needs_attachment() {
            validate_container_id(&container_id)?;
            validate_ifname(&ifname)?;
            if netns.is_none() && command != Command::Del {
                return Err(CniError::env(format!(
                    "CNI_NETNS is not set ({} needs the container's network namespace)",
                    command.as_str()
                )));
            }
        }
        let args = CniArgs::parse(&get("CNI_ARGS").unwrap_or_default())?;
        let path = get("CNI_PATH")
            .unwrap_or_default()
            .split(':')
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect();
        Ok(CniEnv {
            command,
            container_id,
            netns,
            ifname,
            args,
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> CniResult<CniEnv> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        CniEnv::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn add_needs_netns() {
        let e = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidEnvironment);
    }

    #[test]
    fn del_without_netns_is_fine() {
        let e = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", ""),
        ])
        .unwrap();
        assert!(e.netns.is_none());
    }

    #[test]
    fn bad_ifnames_are_rejected() {
        for bad in ["", "a/b", "..", "sixteen-chars-xx", "a b", "a:b"] {
            assert!(validate_ifname(bad).is_err(), "{bad:?}");
        }
        assert!(validate_ifname("net1").is_ok());
    }

    #[test]
    fn status_needs_nothing_but_command() {
        assert_eq!(
            env(&[("CNI_COMMAND", "STATUS")]).unwrap().command,
            Command::Status
        );
        assert!(env(&[("CNI_COMMAND", "FROB")]).is_err());
    }
}
