//! What the store holds: the JSON values of address, attachment, block and
//! pool keys (see DESIGN.md for the keys).

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Who holds an address: one attachment of one network on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Owner {
    /// Network (`network_name`, else the config `name`).
    pub network: String,
    /// CNI container ID.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// Interface name in the container.
    pub ifname: String,
    /// Node that allocated it.
    pub node: String,
    /// Pod namespace (`K8S_POD_NAMESPACE`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
    /// Pod name (`K8S_POD_NAME`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// Allocation time, seconds since the Unix epoch.
    pub allocated_at: u64,
}

/// Whether an ADD finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Reserved under a lease by an ADD still running (or dead: the lease expires).
    Pending,
    /// The ADD completed: no lease, lives until DEL, GC or an operator.
    Committed,
}

/// Value of an address key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressRecord {
    /// Holder.
    #[serde(flatten)]
    pub owner: Owner,
    /// Pending or committed.
    pub state: State,
}

/// Value of an attachment key: the addresses one (network, container, ifname) holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentRecord {
    /// Holder.
    #[serde(flatten)]
    pub owner: Owner,
    /// Pending or committed.
    pub state: State,
    /// One address per pool, with the subnet's prefix length.
    pub addresses: Vec<IpNet>,
    /// Lease of a pending record (0 once committed).
    #[serde(default)]
    pub lease: i64,
}

/// Value of a block key: the node the block is affine to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockRecord {
    /// Node that claimed it.
    pub node: String,
    /// Claim time, seconds since the Unix epoch.
    pub claimed_at: u64,
}

/// Value of a pool key: one configured range, so that operators can see
/// sizes without the network configs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RangeRecord {
    /// Network using the range.
    pub network: String,
    /// Subnet.
    pub subnet: IpNet,
    /// First address handed out.
    pub range_start: IpAddr,
    /// Last address handed out.
    pub range_end: IpAddr,
    /// Gateway, never handed out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Exclusions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<IpNet>,
}
