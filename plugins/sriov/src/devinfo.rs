//! The NPWG device-info file (device-info spec 1.1.0): tells the
//! meta-plugin, for its network-status annotation, which PCI device backs
//! the attachment.

use crate::pci::PciAddr;
use manifold_common::{CniError, CniResult, ErrorCode};
use serde_json::json;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Spec version written.
const SPEC_VERSION: &str = "1.1.0";

/// The default file of an attachment when the runtime names none:
/// `<dir>/<network>-<container>-<ifname>-device.json`.
pub fn default_path(dir: &Path, network: &str, container_id: &str, ifname: &str) -> PathBuf {
    dir.join(format!("{network}-{container_id}-{ifname}-device.json"))
}

/// Writes a `pci` device-info file at `path` unless one exists (the spec
/// lets the meta-plugin copy the device plugin's there first). Returns
/// whether this call wrote it.
pub fn write(path: &Path, vf: &PciAddr, pf: &PciAddr) -> CniResult<bool> {
    let io = |e: std::io::Error| {
        CniError::new(
            ErrorCode::Io,
            format!("write device-info file {}: {e}", path.display()),
        )
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let info = json!({
        "type": "pci",
        "version": SPEC_VERSION,
        "pci": {"pci-address": vf.as_str(), "pf-pci-address": pf.as_str()},
    });
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
    {
        Ok(mut f) => {
            f.write_all(info.to_string().as_bytes()).map_err(io)?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io(e)),
    }
}

/// Removes a file this plugin wrote; a missing file is fine.
pub fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "remove device-info file");
        }
    }
}
