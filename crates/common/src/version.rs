//! CNI spec versions and version negotiation.

use crate::error::{CniError, CniResult, ErrorCode};
use std::fmt;

/// A CNI spec version this implementation speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CniVersion {
    /// 0.3.0
    V0_3_0,
    /// 0.3.1
    V0_3_1,
    /// 0.4.0 (adds CHECK)
    V0_4_0,
    /// 1.0.0 (drops `version` on ips)
    V1_0_0,
    /// 1.1.0 (adds GC, STATUS, interface/route fields)
    V1_1_0,
}

/// Every version we accept, oldest first, as VERSION reports them.
pub const SUPPORTED_VERSIONS: [CniVersion; 5] = [
    CniVersion::V0_3_0,
    CniVersion::V0_3_1,
    CniVersion::V0_4_0,
    CniVersion::V1_0_0,
    CniVersion::V1_1_0,
];

impl CniVersion {
    /// The newest version, used when a config does not constrain us.
    pub const LATEST: CniVersion = CniVersion::V1_1_0;

    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_3_0 => "0.3.0",
            CniVersion::V0_3_1 => "0.3.1",
            CniVersion::V0_4_0 => "0.4.0",
            CniVersion::V1_0_0 => "1.0.0",
            CniVersion::V1_1_0 => "1.1.0",
        }
    }

    /// Parses a version string; anything we do not speak is error code 1.
    pub fn parse(s: &str) -> CniResult<Self> {
        SUPPORTED_VERSIONS
            .iter()
            .copied()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| {
                let msg = if s.is_empty() {
                    "cniVersion is missing".to_string()
                } else {
                    format!("unsupported cniVersion {s:?}")
                };
                CniError::new(ErrorCode::IncompatibleVersion, msg)
                    .with_details(format!("supported versions: {}", supported_list()))
            })
    }

    /// Picks the newest version of a conflist's `cniVersions` that we speak,
    /// falling back to its `cniVersion` (spec 1.1.0, "Version selection").
    pub fn negotiate(cni_versions: &[String], cni_version: &str) -> CniResult<Self> {
        if let Some(best) = cni_versions
            .iter()
            .filter_map(|s| CniVersion::parse(s).ok())
            .max()
        {
            return Ok(best);
        }
        CniVersion::parse(cni_version)
    }

    /// CHECK exists from 0.4.0 on.
    pub fn supports_check(self) -> bool {
        self >= CniVersion::V0_4_0
    }

    /// GC and STATUS exist from 1.1.0 on.
    pub fn supports_gc_status(self) -> bool {
        self >= CniVersion::V1_1_0
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// "0.3.0, 0.3.1, ..." for messages.
pub fn supported_list() -> String {
    SUPPORTED_VERSIONS
        .iter()
        .map(|v| v.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The VERSION verb's answer.
pub fn version_info() -> serde_json::Value {
    serde_json::json!({
        "cniVersion": CniVersion::LATEST.as_str(),
        "supportedVersions": SUPPORTED_VERSIONS.iter().map(|v| v.as_str()).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_info_matches_spec_answer() {
        assert_eq!(
            version_info().to_string(),
            r#"{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}"#
        );
    }

    #[test]
    fn negotiate_picks_newest_known() {
        let list = vec!["1.0.0".to_string(), "9.9.9".into(), "0.4.0".into()];
        assert_eq!(
            CniVersion::negotiate(&list, "0.3.1").unwrap(),
            CniVersion::V1_0_0
        );
        assert_eq!(
            CniVersion::negotiate(&[], "0.3.1").unwrap(),
            CniVersion::V0_3_1
        );
        assert_eq!(
            CniVersion::negotiate(&["2.0.0".into()], "0.2.0")
                .unwrap_err()
                .code,
            ErrorCode::IncompatibleVersion
        );
    }
}
