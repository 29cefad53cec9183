//! Kubernetes names (DNS-1123), checked before any becomes part of a path or
//! an API URL.

use manifold_common::config::is_cni_name;
use manifold_common::CniResult;

pub use manifold_kube::names::check_namespace;

/// Checks a NetworkAttachmentDefinition name (DNS-1123 subdomain).
pub fn check_nad_name(name: &str) -> CniResult<()> {
    manifold_kube::names::check_name("network", name)
}

/// Splits and checks a `[namespace/]name` reference.
pub fn split_ref(r: &str) -> CniResult<(Option<&str>, &str)> {
    match r.split_once('/') {
        Some((ns, name)) => {
            check_namespace(ns)?;
            check_nad_name(name)?;
            Ok((Some(ns), name))
        }
        None => {
            check_nad_name(r)?;
            Ok((None, r))
        }
    }
}

/// Checks a network named in the manifold config: a `[namespace/]name` NAD
/// reference, or the `name` of a conf in `confDir`.
pub fn check_network_name(r: &str) -> CniResult<()> {
    if is_cni_name(r) {
        return Ok(());
    }
    split_ref(r).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        assert_eq!(split_ref("ns1/net-a").unwrap(), (Some("ns1"), "net-a"));
        assert_eq!(split_ref("net-a").unwrap(), (None, "net-a"));
        for bad in ["../x", "ns/../x", "a/b/c", "NS/x", "ns/", "/x"] {
            assert!(split_ref(bad).is_err(), "{bad}");
        }
        assert!(check_network_name("Cbr0_net").is_ok());
        assert!(check_network_name("..").is_err());
    }
}
