//! `manifold-ipam`: cluster-wide dual-stack IPAM on etcd, with an embedded
//! single-node store. The data model is in DESIGN.md.
//!
//! Configuration: [`config`] (the `ipam` section), [`settings`] (store, node,
//! lease TTL), [`names`], [`range`] (ranges and pools as numbers, [`addr`]).
//! Allocation: [`alloc`] (the verbs' semantics), [`choose`] (bounded search
//! for a free address), [`records`] and [`keys`] (what is stored where),
//! [`rng`]. Stores: [`kv`] (the interface), [`etcd`], [`local`], [`store`]
//! (which one). The CNI verbs: [`plugin`]; operator views: [`inspect`].

pub mod addr;
pub mod alloc;
pub mod choose;
pub mod config;
pub mod etcd;
pub mod inspect;
pub mod keys;
pub mod kv;
pub mod local;
pub mod names;
pub mod node_cache;
pub mod plugin;
pub mod range;
pub mod records;
pub mod rng;
pub mod settings;
pub mod store;
