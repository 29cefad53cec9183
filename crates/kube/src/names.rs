//! DNS-1123 name checks, applied before a namespace or name goes into a URL path.
//!
//! Kubernetes namespaces are DNS-1123 labels and most object names DNS-1123
//! subdomains; neither can contain `/`, `%`, `?` or an empty/`..` segment, so a
//! checked name cannot leave the path it is put in.

use manifold_common::error::{CniError, CniResult};

/// Whether `s` is a DNS-1123 label: 1–63 of `[a-z0-9-]`, alphanumeric at both ends.
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Whether `s` is a DNS-1123 subdomain: at most 253 characters of dot-separated labels.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// Checks a namespace (DNS-1123 label); code 7 otherwise.
pub fn check_namespace(namespace: &str) -> CniResult<()> {
    if is_dns1123_label(namespace) {
        Ok(())
    } else {
        Err(CniError::config(format!(
            "invalid Kubernetes namespace {namespace:?}: must be a DNS-1123 label"
        )))
    }
}

/// Checks an object name (DNS-1123 subdomain); code 7 otherwise.
pub fn check_name(kind: &str, name: &str) -> CniResult<()> {
    if is_dns1123_subdomain(name) {
        Ok(())
    } else {
        Err(CniError::config(format!(
            "invalid {kind} name {name:?}: must be a DNS-1123 subdomain"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        for ok in ["a", "default", "kube-system", "n0", &"a".repeat(63)] {
            assert!(is_dns1123_label(ok), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a.b",
            "a/b",
            "..",
            "a_b",
            &"a".repeat(64),
        ] {
            assert!(!is_dns1123_label(bad), "{bad}");
        }
    }

    #[test]
    fn subdomains() {
        for ok in ["macvlan-conf", "a.b.c", "net1"] {
            assert!(is_dns1123_subdomain(ok), "{ok}");
        }
        for bad in [
            "", ".", "..", "a..b", "../x", "a/b", "a%2fb", "a?b", ".a", "a.",
        ] {
            assert!(!is_dns1123_subdomain(bad), "{bad}");
        }
        assert!(!is_dns1123_subdomain(&["a"; 128].join(".")));
    }

    #[test]
    fn checks_give_code_7() {
        let e = check_namespace("../etc").unwrap_err();
        assert_eq!(e.code.as_u32(), 7);
        assert!(e.msg.contains("\"../etc\""), "{}", e.msg);
        assert!(check_name("pod", "a/b").is_err());
        assert!(check_name("pod", "web-0").is_ok());
    }
}
