//! `manifoldctl`: the operator's command line. Today: `manifoldctl ipam`
//! (pools, allocations, release of an address or of a gone node) against
//! the local store or etcd.

mod args;
mod ipam;
mod table;

use std::process::ExitCode;

const USAGE: &str = "\
usage: manifoldctl ipam [STORE] [--json] pools
       manifoldctl ipam [STORE] [--json] show <network>
       manifoldctl ipam [STORE] [--json] release <network> <address>
       manifoldctl ipam [STORE] [--json] release-node <node>

  pools     every network's pools per family: size, used, free
  show      the addresses a network holds: container, ifname, pod, node, age
  release   frees one address (and drops it from its attachment)
  release-node  frees everything a node that is gone for good holds: its
            attachments and its blocks (other nodes may claim them then)

STORE (default: the node-wide file $MANIFOLD_IPAM_CONFIG or
/etc/cni/net.d/manifold.d/ipam.json, else the local store
/var/lib/cni/manifold/ipam):
  --data-dir DIR           the local store in DIR
  --etcd-endpoints URLS    etcd, comma-separated endpoints
  --etcd-prefix PREFIX     key prefix (default /manifold/ipam)
  --etcd-ca FILE --etcd-cert FILE --etcd-key FILE   etcd client TLS
  --config FILE            a node-wide IPAM file or a network config with an ipam section
";

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let cmd = match args::parse(&argv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("manifoldctl: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match ipam::run(&cmd) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("manifoldctl: {}", e.msg);
            ExitCode::FAILURE
        }
    }
}
