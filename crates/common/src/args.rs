//! `CNI_ARGS`: `K=V;K=V` pairs, with the `IgnoreUnknown` convention.

use crate::error::{CniError, CniResult};

/// Keys every runtime may pass that plugins accept without declaring them.
const KUBERNETES_KEYS: [&str; 4] = [
    "K8S_POD_NAMESPACE",
    "K8S_POD_NAME",
    "K8S_POD_INFRA_CONTAINER_ID",
    "K8S_POD_UID",
];

/// Parsed `CNI_ARGS`, in the order given (runtimes send them in any order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pairs: Vec<(String, String)>,
    ignore_unknown: bool,
}

fn truthy(v: &str) -> bool {
    matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "t" | "yes")
}

impl CniArgs {
    /// Parses `K=V;K=V`. An empty string yields no pairs.
    pub fn parse(raw: &str) -> CniResult<Self> {
        let mut args = CniArgs::default();
        for pair in raw.split(';').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                CniError::env(format!(
                    "CNI_ARGS: {pair:?} is not of the form KEY=VALUE (pairs are separated by ';')"
                ))
            })?;
            if k.is_empty() {
                return Err(CniError::env(format!("CNI_ARGS: empty key in {pair:?}")));
            }
            if k == "IgnoreUnknown" {
                args.ignore_unknown = truthy(v);
            }
            args.pairs.push((k.to_string(), v.to_string()));
        }
        Ok(args)
    }

    /// Value of `key`, matched exactly first and then case-insensitively
    /// (the Go plugins' struct tags match either way).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .or_else(|| self.pairs.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)))
            .map(|(_, v)| v.as_str())
    }

    /// All pairs, as given.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// Rejects keys the plugin does not know, unless `IgnoreUnknown` is set.
    pub fn check_known(&self, known: &[&str]) -> CniResult<()> {
        if self.ignore_unknown {
            return Ok(());
        }
        for (k, _) in &self.pairs {
            let is_known = k == "IgnoreUnknown"
                || KUBERNETES_KEYS.contains(&k.as_str())
                || known.iter().any(|n| n.eq_ignore_ascii_case(k));
            if !is_known {
                return Err(CniError::env(format!(
                    "CNI_ARGS: unknown key {k:?} (known: {}; set IgnoreUnknown=1 to ignore others)",
                    known.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Renders back to `K=V;K=V` (for delegates).
    pub fn render(&self) -> String {
        self.pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn parses_pairs_in_any_order() {
        let a = CniArgs::parse("K8S_POD_NAME=web;IgnoreUnknown=1;MAC=0a:00:00:00:00:01").unwrap();
        assert_eq!(a.get("MAC"), Some("0a:00:00:00:00:01"));
        assert_eq!(a.get("mac"), Some("0a:00:00:00:00:01"));
        assert_eq!(a.get("K8S_POD_NAME"), Some("web"));
        assert!(a.check_known(&[]).is_ok());
    }

    #[test]
    fn unknown_key_without_ignore_is_env_error() {
        let a = CniArgs::parse("FOO=1").unwrap();
        assert_eq!(
            a.check_known(&["MAC"]).unwrap_err().code,
            ErrorCode::InvalidEnvironment
        );
        assert!(CniArgs::parse("K8S_POD_NAME=x")
            .unwrap()
            .check_known(&[])
            .is_ok());
    }

    #[test]
    fn pair_without_equals_is_env_error() {
        assert_eq!(
            CniArgs::parse("MAC").unwrap_err().code,
            ErrorCode::InvalidEnvironment
        );
    }
}
