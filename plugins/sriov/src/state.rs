//! The per-VF cache: what a VF looked like before this plugin touched it,
//! who owns it now, and a per-VF lock, all under `dataDir` (0700 directory,
//! 0600 files), keyed by the VF's PCI address.

use crate::pci::PciAddr;
use crate::vf::{VfSettings, VfState};
use manifold_common::{CniError, CniResult, ErrorCode};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a call waits for another call holding the same VF.
const LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// The host-side netdev of a VF before it went to a pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetdevState {
    /// Name in the host.
    pub name: String,
    /// MAC.
    pub mac: String,
    /// MTU.
    pub mtu: u32,
    /// Administratively up.
    pub up: bool,
}

/// One VF handed to one attachment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// The VF's PCI address (validated again when used).
    pub pci: String,
    /// Network name of the attachment.
    pub network: String,
    /// Owner: container ID.
    pub container_id: String,
    /// Owner: interface name in the pod.
    pub ifname: String,
    /// The pod's netns path at ADD.
    pub netns: Option<String>,
    /// PF netdev name.
    pub pf: String,
    /// VF index on the PF.
    pub vf: u32,
    /// Bound to a user-space driver: no netdev was moved.
    pub dpdk: bool,
    /// PF-side state before ADD.
    pub original: VfState,
    /// What ADD applies on the PF side.
    pub applied: VfSettings,
    /// The VF's netdev before ADD (none in DPDK mode).
    pub netdev: Option<NetdevState>,
    /// A device-info file this plugin wrote and must remove.
    pub device_info_file: Option<PathBuf>,
}

impl Record {
    /// Whether the attachment (`container_id`, `ifname`) owns this VF.
    pub fn owned_by(&self, container_id: &str, ifname: &str) -> bool {
        self.container_id == container_id && self.ifname == ifname
    }

    /// The VF address.
    pub fn pci(&self) -> CniResult<PciAddr> {
        self.pci.parse()
    }
}

/// The cache directory.
pub struct Store {
    dir: PathBuf,
}

/// An exclusive lock on one VF, released on drop.
pub struct VfLock {
    _lock: Flock<File>,
}

fn io(what: impl std::fmt::Display, e: impl std::fmt::Display) -> CniError {
    CniError::new(ErrorCode::Io, format!("{what}: {e}"))
}

impl Store {
    /// Opens (creating with mode 0700) the cache directory.
    pub fn open(dir: &Path) -> CniResult<Self> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| io(format!("create state directory {}", dir.display()), e))?;
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    fn file(&self, pci: &PciAddr, ext: &str) -> PathBuf {
        self.dir.join(format!("{pci}.{ext}"))
    }

    /// Takes the VF's lock, waiting up to 30 s for another call (then code 11).
    pub fn lock(&self, pci: &PciAddr) -> CniResult<VfLock> {
        let path = self.file(pci, "lock");
        let start = Instant::now();
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io(format!("open lock {}", path.display()), e))?;
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(VfLock { _lock: lock }),
                Err((f, nix::errno::Errno::EWOULDBLOCK)) if start.elapsed() < LOCK_TIMEOUT => {
                    file = f;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err((_, e)) => {
                    return Err(CniError::new(
                        ErrorCode::TryAgainLater,
                        format!("VF {pci} is locked by another call ({e}); try again later"),
                    ))
                }
            }
        }
    }

    /// The VF's record, if any (call with the lock held).
    pub fn load(&self, pci: &PciAddr) -> CniResult<Option<Record>> {
        let path = self.file(pci, "json");
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| io(format!("decode {}", path.display()), e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(format!("read {}", path.display()), e)),
        }
    }

    /// Writes the VF's record atomically, mode 0600 (call with the lock held).
    pub fn save(&self, rec: &Record) -> CniResult<()> {
        let pci = rec.pci()?;
        let path = self.file(&pci, "json");
        let tmp = self.file(&pci, "json.tmp");
        let text = serde_json::to_vec_pretty(rec).expect("record serializes");
        let written = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| {
                f.write_all(&text)?;
                f.sync_all()
            })
            .and_then(|_| std::fs::rename(&tmp, &path));
        written.map_err(|e| io(format!("write {}", path.display()), e))
    }

    /// Forgets the VF's record.
    pub fn remove(&self, pci: &PciAddr) -> CniResult<()> {
        let path = self.file(pci, "json");
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io(format!("remove {}", path.display()), e))
            }
            _ => Ok(()),
        }
    }

    /// Every VF with a record (read without locks: re-load under the lock
    /// before acting).
    pub fn vfs(&self) -> CniResult<Vec<PciAddr>> {
        let dir = std::fs::read_dir(&self.dir)
            .map_err(|e| io(format!("list {}", self.dir.display()), e))?;
        let mut out: Vec<PciAddr> = dir
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".json")?.parse().ok()
            })
            .collect();
        out.sort();
        Ok(out)
    }
}
