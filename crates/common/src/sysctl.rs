//! Kernel parameters under /proc/sys. `net/*` keys belong to the network
//! namespace of the calling thread: run these inside [`crate::netns::NetNs::run`].

use crate::error::{CniError, CniResult};
use std::path::PathBuf;

fn path(key: &str) -> CniResult<PathBuf> {
    if key
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(CniError::config(format!("sysctl key {key:?} is invalid")));
    }
    Ok(PathBuf::from("/proc/sys").join(key))
}

/// Reads a value ("net/ipv6/conf/eth0/disable_ipv6").
pub fn get(key: &str) -> CniResult<String> {
    std::fs::read_to_string(path(key)?)
        .map(|s| s.trim().to_string())
        .map_err(|e| CniError::kernel(format!("read sysctl {key}: {e}")))
}

/// Writes a value.
pub fn set(key: &str, value: &str) -> CniResult<()> {
    std::fs::write(path(key)?, value)
        .map_err(|e| CniError::kernel(format!("set sysctl {key}={value}: {e}")))
}
