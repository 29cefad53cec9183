//! host-local's on-disk store, byte-compatible with the reference plugin's
//! (`backend/disk`) so both can share a node's `dataDir`:
//!
//! - one directory per network, `<dataDir>/<network name>` (mode 0755);
//! - one file per reserved address, named by the address (`10.1.2.3`,
//!   `fd00::3`), created exclusively (mode 0600), holding
//!   `<containerID>\r\n<ifname>` — or only `<containerID>` when written by a
//!   host-local older than 0.7;
//! - `last_reserved_ip.<range set index>`: the last address reserved from that
//!   range set, where the next round-robin search starts;
//! - `lock`, locked with `flock(LOCK_EX)` around every change and lookup.
//!
//! Only files named by an address are reservations: `lock` and the
//! `last_reserved_ip.*` markers are never matched, released or returned.

use super::config::canonical;
use super::fail;
use crate::error::CniResult;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Separates the container ID from the ifname in a reservation file.
pub const LINE_BREAK: &str = "\r\n";
/// Prefix of the per-range-set round-robin marker files.
pub const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";
/// Name of the lock file in a network's directory.
pub const LOCK_FILE: &str = "lock";

/// One reservation file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The reserved address (the file's name).
    pub ip: IpAddr,
    /// The file's content, trimmed: `<containerID>\r\n<ifname>` or, for a
    /// legacy file, `<containerID>`.
    pub owner: String,
}

/// A network's directory, locked for as long as the value lives.
pub struct Store {
    dir: PathBuf,
    _lock: Flock<File>,
}

fn io_fail(what: impl std::fmt::Display, e: impl std::fmt::Display) -> crate::CniError {
    fail(format!("{what}: {e}"))
}

/// The content a reservation of (`id`, `ifname`) holds.
fn key(id: &str, ifname: &str) -> String {
    format!("{}{LINE_BREAK}{ifname}", id.trim())
}

impl Store {
    /// Creates `<data_dir>/<network>` and its lock file if needed, then waits
    /// for the lock.
    pub fn open(data_dir: &Path, network: &str) -> CniResult<Self> {
        let dir = data_dir.join(network);
        DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
            .map_err(|e| io_fail(format_args!("create {}", dir.display()), e))?;
        let lock_path = dir.join(LOCK_FILE);
        // The reference opens O_CREAT|O_RDONLY with mode 0750; std cannot
        // create read-only, so only a missing file is opened for writing.
        let file = match File::open(&lock_path) {
            Err(e) if e.kind() == ErrorKind::NotFound => OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o750)
                .open(&lock_path),
            other => other,
        }
        .map_err(|e| io_fail(format_args!("open {}", lock_path.display()), e))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| io_fail(format_args!("lock {}", lock_path.display()), e))?;
        Ok(Store { dir, _lock: lock })
    }

    /// The network's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reserves `ip` for (`id`, `ifname`): false when someone holds it. On
    /// success `ip` becomes range set `range_id`'s last reserved address.
    pub fn reserve(&self, id: &str, ifname: &str, ip: IpAddr, range_id: usize) -> CniResult<bool> {
        let path = self.dir.join(ip.to_string());
        let mut f = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(io_fail(format_args!("create {}", path.display()), e)),
        };
        let last = self.dir.join(format!("{LAST_RESERVED_PREFIX}{range_id}"));
        let written = f
            .write_all(key(id, ifname).as_bytes())
            .map_err(|e| io_fail(format_args!("write {}", path.display()), e))
            .and_then(|()| {
                OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&last)
                    .and_then(|mut l| l.write_all(ip.to_string().as_bytes()))
                    .map_err(|e| io_fail(format_args!("write {}", last.display()), e))
            });
        if let Err(e) = written {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        Ok(true)
    }

    /// Range set `range_id`'s last reserved address, if recorded and valid.
    pub fn last_reserved(&self, range_id: usize) -> Option<IpAddr> {
        let path = self.dir.join(format!("{LAST_RESERVED_PREFIX}{range_id}"));
        match fs::read_to_string(&path) {
            Ok(s) => s.parse().ok().map(canonical),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "host-local: cannot read the last reserved IP");
                None
            }
        }
    }

    /// Every reservation, ordered by file name (the order the reference walks
    /// the directory in). Unreadable files are skipped, as the reference does.
    pub fn reservations(&self) -> CniResult<Vec<Reservation>> {
        let entries = fs::read_dir(&self.dir)
            .map_err(|e| io_fail(format_args!("read {}", self.dir.display()), e))?;
        let mut out: Vec<(String, Reservation)> = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(ip) = name.to_str().and_then(|n| n.parse::<IpAddr>().ok()) else {
                continue;
            };
            if let Ok(content) = fs::read_to_string(entry.path()) {
                out.push((
                    name.to_string_lossy().into_owned(),
                    Reservation {
                        ip,
                        owner: content.trim().to_string(),
                    },
                ));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out.into_iter().map(|(_, r)| r).collect())
    }

    /// The addresses (`id`, `ifname`) holds, legacy reservations of `id` included.
    pub fn get_by_id(&self, id: &str, ifname: &str) -> CniResult<Vec<IpAddr>> {
        let (new, old) = (key(id, ifname), id.trim());
        Ok(self
            .reservations()?
            .into_iter()
            .filter(|r| r.owner == new || r.owner == old)
            .map(|r| r.ip)
            .collect())
    }

    /// Whether (`id`, `ifname`) holds any address, else whether `id` holds a
    /// legacy reservation.
    pub fn find_by_id(&self, id: &str, ifname: &str) -> CniResult<bool> {
        let all = self.reservations()?;
        let (new, old) = (key(id, ifname), id.trim());
        Ok(all.iter().any(|r| r.owner == new) || all.iter().any(|r| r.owner == old))
    }

    /// Releases every address of (`id`, `ifname`); when there is none, every
    /// legacy reservation of `id`. Removal failures are logged and skipped so
    /// that as much as possible is released.
    pub fn release_by_id(&self, id: &str, ifname: &str) -> CniResult<()> {
        let all = self.reservations()?;
        if !self.remove_owned_by(&all, &key(id, ifname)) {
            self.remove_owned_by(&all, id.trim());
        }
        Ok(())
    }

    fn remove_owned_by(&self, all: &[Reservation], owner: &str) -> bool {
        let mut found = false;
        for r in all.iter().filter(|r| r.owner == owner) {
            let path = self.dir.join(r.ip.to_string());
            match fs::remove_file(&path) {
                Ok(()) => found = true,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "host-local: cannot release")
                }
            }
        }
        found
    }

    /// Who holds `ip` (the reservation file's content), for error messages.
    pub fn holder(&self, ip: IpAddr) -> Option<String> {
        fs::read_to_string(self.dir.join(ip.to_string()))
            .ok()
            .map(|s| s.trim().replace(LINE_BREAK, " on "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostlocal::tests::tempdir;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn layout_matches_the_reference() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempdir("layout");
        let s = Store::open(&d, "net").unwrap();
        assert!(s.reserve("c1", "eth0", ip("10.0.0.2"), 0).unwrap());
        assert!(!s.reserve("c2", "eth0", ip("10.0.0.2"), 0).unwrap());
        assert!(s.reserve("c1", "eth1", ip("fd00::2"), 1).unwrap());
        let dir = d.join("net");
        assert_eq!(fs::read(dir.join("10.0.0.2")).unwrap(), b"c1\r\neth0");
        assert_eq!(fs::read(dir.join("fd00::2")).unwrap(), b"c1\r\neth1");
        assert_eq!(
            fs::read(dir.join("last_reserved_ip.0")).unwrap(),
            b"10.0.0.2"
        );
        assert_eq!(
            fs::read(dir.join("last_reserved_ip.1")).unwrap(),
            b"fd00::2"
        );
        let mode = |p: &str| fs::metadata(dir.join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("10.0.0.2"), 0o600);
        assert!(dir.join("lock").exists());
        assert_eq!(s.last_reserved(1), Some(ip("fd00::2")));
        assert_eq!(s.last_reserved(2), None);
        assert_eq!(s.holder(ip("10.0.0.2")).as_deref(), Some("c1 on eth0"));
        drop(s);
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn release_prefers_exact_match_then_legacy_files() {
        let d = tempdir("release");
        let s = Store::open(&d, "net").unwrap();
        s.reserve("c1", "eth0", ip("10.0.0.2"), 0).unwrap();
        s.reserve("c1", "eth1", ip("10.0.0.3"), 0).unwrap();
        fs::write(d.join("net/10.0.0.4"), "c1\n").unwrap();
        assert_eq!(
            s.get_by_id("c1", "eth0").unwrap(),
            [ip("10.0.0.2"), ip("10.0.0.4")]
        );
        s.release_by_id("c1", "eth0").unwrap();
        let left: Vec<IpAddr> = s.reservations().unwrap().iter().map(|r| r.ip).collect();
        assert_eq!(
            left,
            [ip("10.0.0.3"), ip("10.0.0.4")],
            "legacy kept: eth0 matched"
        );
        s.release_by_id("c1", "eth0").unwrap();
        let left: Vec<IpAddr> = s.reservations().unwrap().iter().map(|r| r.ip).collect();
        assert_eq!(
            left,
            [ip("10.0.0.3")],
            "nothing matched exactly: legacy released"
        );
        assert!(s.find_by_id("c1", "eth1").unwrap());
        assert!(!s.find_by_id("c1", "eth0").unwrap());
        assert!(
            d.join("net/last_reserved_ip.0").exists() && d.join("net/lock").exists(),
            "markers are never released"
        );
        drop(s);
        fs::remove_dir_all(d).unwrap();
    }
}
