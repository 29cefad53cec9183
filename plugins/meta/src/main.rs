//! `manifold`: the CNI meta-plugin. Attaches the cluster's default network as
//! the runtime's interface, then every extra network the pod asks for
//! (Multus-compatible config and annotations), each through a delegate plugin.

mod cache;
mod config;
mod default_route;
mod delegate;
mod devices;
mod link_group;
mod nad;
mod names;
mod plan;
mod plugin;
mod report;
mod selection;

fn main() {
    manifold_common::dispatch::main(&plugin::Manifold)
}
