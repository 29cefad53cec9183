//! Names that become store key components or file names: checked so that
//! none can escape its prefix or directory.

use manifold_common::{CniError, CniResult};

/// Longest accepted name (a DNS subdomain's limit).
const MAX_LEN: usize = 253;

/// Checks a network or node name: letters, digits, '-', '_' and '.',
/// starting with a letter or digit, at most 253 bytes — so no '/', no NUL,
/// no "..", never empty.
pub fn check(what: &str, name: &str) -> CniResult<()> {
    if name.len() <= MAX_LEN && manifold_common::config::is_cni_name(name) {
        Ok(())
    } else {
        Err(CniError::config(format!(
            "{what} {name:?} is invalid: use 1 to {MAX_LEN} letters, digits, '-', '_' and '.', starting with a letter or digit (it becomes part of store keys and file names)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_escape_a_prefix_are_refused() {
        for bad in ["", "../x", "a/b", "a\0b", ".hidden", "-x", "_x", "a b"] {
            assert!(check("network_name", bad).is_err(), "{bad:?}");
        }
        for good in ["net-a", "Net_1.v2", "node01.example.com"] {
            check("network_name", good).unwrap();
        }
    }
}
