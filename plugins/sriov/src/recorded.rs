//! A recorded fake PF controller, for tests on kernels that cannot do VF
//! netlink (no SR-IOV hardware, no netdevsim).
//!
//! It is a fake: it never talks to a kernel. It keeps each PF's VF states in
//! `<dir>/<pf>.json` (a test may write initial states there; a VF not listed
//! starts from [`VfState::default`]) and appends every applied change to
//! `<dir>/<pf>.log`, one JSON line each, so tests can assert what was
//! applied and that nothing was. It is selected only when the test-only
//! environment variable [`RECORD_ENV`] names that directory; production
//! always uses [`crate::vf::NetlinkPf`].

use crate::vf::{PfControl, VfSettings, VfState};
use manifold_common::{CniError, CniResult, ErrorCode};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

/// Test-only: directory of the recorded fake PF controller.
pub const RECORD_ENV: &str = "MANIFOLD_SRIOV_TEST_PF_RECORD";

/// The recorded fake (see the module documentation).
pub struct RecordedPf {
    dir: PathBuf,
}

fn io(what: String, e: impl std::fmt::Display) -> CniError {
    CniError::new(ErrorCode::Io, format!("recorded PF: {what}: {e}"))
}

impl RecordedPf {
    /// The fake, if the test asked for it.
    pub fn from_env() -> Option<Self> {
        std::env::var_os(RECORD_ENV)
            .filter(|v| !v.is_empty())
            .map(|d| RecordedPf { dir: d.into() })
    }

    fn path(&self, pf: &str, ext: &str) -> PathBuf {
        self.dir.join(format!("{pf}.{ext}"))
    }

    fn load(&self, pf: &str) -> CniResult<BTreeMap<u32, VfState>> {
        let p = self.path(pf, "json");
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| io(p.display().to_string(), e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(io(p.display().to_string(), e)),
        }
    }
}

impl PfControl for RecordedPf {
    fn state(&mut self, pf: &str, vf: u32) -> CniResult<VfState> {
        Ok(self.load(pf)?.remove(&vf).unwrap_or_default())
    }

    fn apply(&mut self, pf: &str, vf: u32, s: &VfSettings) -> CniResult<()> {
        let mut all = self.load(pf)?;
        let st = all.entry(vf).or_default();
        if let Some(m) = s.mac {
            st.mac = m;
        }
        if let Some((id, qos, proto)) = s.vlan {
            (st.vlan, st.qos, st.proto) = (id, qos, proto);
        }
        if let Some((min, max)) = s.rate {
            (st.min_tx_rate, st.max_tx_rate) = (min, max);
        }
        if let Some(v) = s.spoofchk {
            st.spoofchk = v;
        }
        if let Some(v) = s.trust {
            st.trust = v;
        }
        if let Some(v) = s.link_state {
            st.link_state = v;
        }
        let p = self.path(pf, "json");
        let text = serde_json::to_vec_pretty(&all).expect("states serialize");
        std::fs::write(&p, text).map_err(|e| io(p.display().to_string(), e))?;
        let log = self.path(pf, "log");
        let line = serde_json::json!({"vf": vf, "settings": s}).to_string();
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut f| writeln!(f, "{line}"))
            .map_err(|e| io(log.display().to_string(), e))
    }
}
