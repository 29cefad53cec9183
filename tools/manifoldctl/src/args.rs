//! Command-line parsing: `ipam`, store flags, `--json`, the subcommand.

use manifold_ipam::settings::StoreFields;
use serde_json::{json, Map, Value};
use std::net::IpAddr;
use std::path::PathBuf;

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// List pools.
    Pools,
    /// Show a network's allocations.
    Show(String),
    /// Release one address of a network.
    Release(String, IpAddr),
    /// Release everything a node that is gone holds.
    ReleaseNode(String),
}

/// Where the store is said to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreArg {
    /// Store fields given as flags.
    Flags(Value),
    /// `--config FILE`.
    File(PathBuf),
    /// Nothing given: node-wide file, else the local default.
    Default,
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    /// The store.
    pub store: StoreArg,
    /// JSON output.
    pub json: bool,
    /// The action.
    pub action: Action,
}

impl StoreArg {
    /// The store fields this argument names.
    pub fn fields(&self) -> manifold_common::CniResult<StoreFields> {
        match self {
            StoreArg::Flags(v) => StoreFields::from_value(v, "command line"),
            StoreArg::File(p) => StoreFields::from_file(p),
            StoreArg::Default => StoreFields::node_file(),
        }
    }
}

/// Parses everything after the program name.
pub fn parse(argv: &[String]) -> Result<Cmd, String> {
    let mut it = argv.iter();
    match it.next().map(String::as_str) {
        Some("ipam") => {}
        Some(other) => return Err(format!("unknown command {other:?}")),
        None => return Err("missing command".into()),
    }
    let mut flags = Map::new();
    let mut etcd = Map::new();
    let mut tls = Map::new();
    let mut file = None;
    let mut json_out = false;
    let mut words = Vec::new();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            "--json" => json_out = true,
            "--data-dir" => {
                flags.insert("dataDir".into(), json!(value(a)?));
            }
            "--etcd-endpoints" => {
                let v = value(a)?;
                etcd.insert("endpoints".into(), json!(v.split(',').collect::<Vec<_>>()));
            }
            "--etcd-prefix" => {
                etcd.insert("prefix".into(), json!(value(a)?));
            }
            "--etcd-ca" | "--etcd-cert" | "--etcd-key" => {
                tls.insert(a["--etcd-".len()..].into(), json!(value(a)?));
            }
            "--config" => file = Some(PathBuf::from(value(a)?)),
            "-h" | "--help" => return Err("help".into()),
            f if f.starts_with("--") => return Err(format!("unknown flag {f}")),
            w => words.push(w.to_string()),
        }
    }
    if !tls.is_empty() {
        etcd.insert("tls".into(), Value::Object(tls));
    }
    if !etcd.is_empty() {
        flags.insert("etcd".into(), Value::Object(etcd));
    }
    let store = match (flags.is_empty(), file) {
        (true, None) => StoreArg::Default,
        (false, None) => StoreArg::Flags(Value::Object(flags)),
        (true, Some(f)) => StoreArg::File(f),
        (false, Some(_)) => return Err("--config and store flags exclude each other".into()),
    };
    let action = match words.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["pools"] => Action::Pools,
        ["show", network] => Action::Show(network.to_string()),
        ["release", network, address] => Action::Release(
            network.to_string(),
            address
                .parse()
                .map_err(|_| format!("{address:?} is not an IP address"))?,
        ),
        ["release-node", node] => Action::ReleaseNode(node.to_string()),
        _ => {
            return Err(format!(
                "expected pools, show <network>, release <network> <address> or release-node <node>, got {words:?}"
            ))
        }
    };
    Ok(Cmd {
        store,
        json: json_out,
        action,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Cmd, String> {
        parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn flags_may_come_anywhere_and_build_store_fields() {
        let c = p("ipam show net1 --json --etcd-endpoints a:1,b:2 --etcd-ca /ca").unwrap();
        assert_eq!(c.action, Action::Show("net1".into()));
        assert!(c.json);
        assert_eq!(
            c.store,
            StoreArg::Flags(json!({"etcd": {"endpoints": ["a:1", "b:2"], "tls": {"ca": "/ca"}}}))
        );
    }

    #[test]
    fn bad_lines_are_refused() {
        assert!(p("ipam release net1 banana").is_err());
        assert!(p("ipam pools extra").is_err());
        assert!(p("ipam --config /x --data-dir /y pools").is_err());
        assert!(p("frob").is_err());
    }
}
