//! Network namespaces: open by path, run code inside one on a dedicated
//! thread so the caller's thread never changes namespace.

use crate::error::{CniError, CniResult, ErrorCode};
use nix::sched::{setns, CloneFlags};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

/// nsfs, where bind-mounted namespaces (`/var/run/netns/X`) live.
const NSFS_MAGIC: i64 = 0x6e73_6673;
/// procfs, for `/proc/PID/ns/net`.
const PROC_SUPER_MAGIC: i64 = 0x9fa0;

/// An open network namespace.
#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
}

impl NetNs {
    /// Opens the call's `CNI_NETNS` (code 4 when it is not set).
    pub fn of_call(env: &crate::env::CniEnv) -> CniResult<Self> {
        let path = env
            .netns
            .as_deref()
            .ok_or_else(|| CniError::env("CNI_NETNS is not set"))?;
        Self::open(path)
    }

    /// Opens the namespace at `path`; a missing path or one that is not a
    /// namespace is "unknown container" (code 3).
    pub fn open(path: &Path) -> CniResult<Self> {
        let file = File::open(path).map_err(|e| {
            let what = if e.kind() == std::io::ErrorKind::NotFound {
                "does not exist".to_string()
            } else {
                format!("cannot be opened: {e}")
            };
            CniError::new(
                ErrorCode::UnknownContainer,
                format!("netns {:?} {what}", path.display().to_string()),
            )
        })?;
        let fs = nix::sys::statfs::fstatfs(&file).map_err(|e| {
            CniError::new(
                ErrorCode::UnknownContainer,
                format!("statfs {}: {e}", path.display()),
            )
        })?;
        let magic = fs.filesystem_type().0 as i64;
        if magic != NSFS_MAGIC && magic != PROC_SUPER_MAGIC {
            return Err(CniError::new(
                ErrorCode::UnknownContainer,
                format!(
                    "{:?} is not a network namespace",
                    path.display().to_string()
                ),
            ));
        }
        Ok(NetNs {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The calling thread's own namespace.
    pub fn current() -> CniResult<Self> {
        Self::open(Path::new("/proc/thread-self/ns/net"))
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a short-lived thread inside this namespace. The thread is
    /// discarded afterwards, so no other code ever runs in the wrong netns.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> CniResult<T> {
        std::thread::scope(|s| {
            s.spawn(|| {
                setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| {
                    CniError::kernel(format!("enter netns {}: {e}", self.path.display()))
                })?;
                Ok(f())
            })
            .join()
            .map_err(|_| {
                CniError::kernel(format!("thread in netns {} panicked", self.path.display()))
            })?
        })
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}
