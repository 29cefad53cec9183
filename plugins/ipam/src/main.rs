//! `manifold-ipam`: the CNI IPAM plugin binary.

fn main() {
    manifold_common::dispatch::main(&manifold_ipam::plugin::Ipam)
}
