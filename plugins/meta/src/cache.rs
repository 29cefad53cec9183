//! The per-container cache under `cniDir`: what ADD delegated and got back,
//! so DEL, CHECK and GC work whatever happened to NADs, annotations or the
//! API since. `state/<containerID>.json` (0600) and `lock/<containerID>`
//! (flock: calls for one container are serialized), in 0700 directories.

use crate::plan::{Attachment, PodRef};
use manifold_common::{CniError, CniResult, Context, ErrorCode};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What ADD recorded for one container.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS` at ADD.
    pub netns: String,
    /// The pod, when the runtime named it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
    /// Attachments in ADD order (default network first); those without a
    /// result were being added when the call stopped.
    pub attachments: Vec<Attachment>,
    /// NPWG network-status, once ADD completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_status: Option<Value>,
}

/// The cache directory.
pub struct Cache {
    state_dir: PathBuf,
    lock_dir: PathBuf,
}

/// Exclusive right to one container's state; released on drop.
pub struct Lock {
    _file: Flock<File>,
    path: PathBuf,
}

fn private_dir(p: &Path) -> CniResult<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(p)
        .with_context(|| format!("create {}", p.display()))?;
    let meta = std::fs::metadata(p).with_context(|| format!("stat {}", p.display()))?;
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod {}", p.display()))?;
    }
    Ok(())
}

impl Cache {
    /// The cache in `cni_dir` (created 0700 on first use).
    pub fn new(cni_dir: &Path) -> Self {
        Cache {
            state_dir: cni_dir.join("state"),
            lock_dir: cni_dir.join("lock"),
        }
    }

    fn state_path(&self, id: &str) -> PathBuf {
        self.state_dir.join(format!("{id}.json"))
    }

    /// Takes the container's lock, waiting for any other call on it. A lock
    /// file removed by the holder (after a complete DEL) is taken afresh.
    pub fn lock(&self, id: &str) -> CniResult<Lock> {
        private_dir(&self.lock_dir)?;
        let path = self.lock_dir.join(id);
        loop {
            let f = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("open lock {}", path.display()))?;
            let file = Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| {
                CniError::new(ErrorCode::Io, format!("lock {}: {e}", path.display()))
            })?;
            let held = file.metadata()?.ino();
            match std::fs::metadata(&path) {
                Ok(m) if m.ino() == held => return Ok(Lock { _file: file, path }),
                _ => continue,
            }
        }
    }

    /// The container's state, if ADD recorded one.
    pub fn load(&self, id: &str) -> CniResult<Option<State>> {
        let p = self.state_path(id);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
                CniError::new(ErrorCode::Decode, format!("cache {}: {e}", p.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CniError::from(e).context(format!("read {}", p.display()))),
        }
    }

    /// Writes the state atomically (temporary file, then rename), mode 0600.
    pub fn store(&self, _lock: &Lock, state: &State) -> CniResult<()> {
        private_dir(&self.state_dir)?;
        let p = self.state_path(&state.container_id);
        let tmp = p.with_extension("json.tmp");
        let body = serde_json::to_vec(state).expect("state serializes");
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("write {}", tmp.display()))?;
        f.write_all(&body)
            .with_context(|| format!("write {}", tmp.display()))?;
        std::fs::rename(&tmp, &p).with_context(|| format!("rename to {}", p.display()))
    }

    /// Forgets the container: state and lock file.
    pub fn remove(&self, lock: Lock, id: &str) -> CniResult<()> {
        let p = self.state_path(id);
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(CniError::from(e).context(format!("remove {}", p.display()))),
        }
        let _ = std::fs::remove_file(&lock.path);
        Ok(())
    }

    /// Every container with a recorded state.
    pub fn containers(&self) -> CniResult<Vec<String>> {
        let rd = match std::fs::read_dir(&self.state_dir) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(CniError::from(e).context("list cache")),
        };
        let mut ids: Vec<String> = rd
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".json"))
                    .map(str::to_string)
            })
            .filter(|id| manifold_common::env::validate_container_id(id).is_ok())
            .collect();
        ids.sort();
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_load_remove_with_private_modes() {
        let d = std::env::temp_dir().join(format!("mf-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let c = Cache::new(&d);
        let lock = c.lock("ctr.1").unwrap();
        let s = State {
            container_id: "ctr.1".into(),
            netns: "/var/run/netns/x".into(),
            pod: None,
            attachments: Vec::new(),
            network_status: None,
        };
        c.store(&lock, &s).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&d.join("state")), 0o700);
        assert_eq!(mode(&d.join("lock")), 0o700);
        assert_eq!(mode(&d.join("state/ctr.1.json")), 0o600);
        assert_eq!(c.containers().unwrap(), vec!["ctr.1"]);
        assert_eq!(c.load("ctr.1").unwrap().unwrap().netns, "/var/run/netns/x");
        c.remove(lock, "ctr.1").unwrap();
        assert!(c.load("ctr.1").unwrap().is_none());
        assert!(!d.join("lock/ctr.1").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn second_locker_waits_for_the_first() {
        let d = std::env::temp_dir().join(format!("mf-cache-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let c = std::sync::Arc::new(Cache::new(&d));
        let first = c.lock("c").unwrap();
        let c2 = c.clone();
        let t0 = std::time::Instant::now();
        let waiter = std::thread::spawn(move || {
            let l = c2.lock("c").unwrap();
            drop(l);
            t0.elapsed()
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        c.remove(first, "c").unwrap();
        assert!(waiter.join().unwrap() >= std::time::Duration::from_millis(200));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
