//! A small blocking client of kubelet's PodResources gRPC API
//! (`v1.PodResourcesLister`, on `/var/lib/kubelet/pod-resources/kubelet.sock`):
//! the devices kubelet's device plugins allocated to a pod, per resource, as
//! Multus reads them for NADs with a `k8s.v1.cni.cncf.io/resourceName`.
//!
//! With the `fixture` feature, [`fixture::FakeKubelet`] serves the same API
//! for tests.

use manifold_common::{CniError, CniResult, ErrorCode};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// The generated `v1` messages, client (and, with `fixture`, server).
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("v1");
}

#[cfg(feature = "fixture")]
pub mod fixture;

/// Kubelet's default PodResources socket.
pub const DEFAULT_SOCKET: &str = "/var/lib/kubelet/pod-resources/kubelet.sock";

/// The longest a whole call (connect and `List`) may take.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// The largest `List` answer accepted (Multus' limit: a node of many pods).
const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// The devices kubelet allocated to pod `namespace/name`, per resource name,
/// in kubelet's order (containers in order, then each container's IDs).
/// Every failure (no socket, no answer within [`TIMEOUT`], an error status)
/// is code 11 (try again later) naming the socket.
pub fn pod_devices(
    socket: &Path,
    namespace: &str,
    name: &str,
) -> CniResult<BTreeMap<String, Vec<String>>> {
    let fail = |e: String| {
        CniError::new(
            ErrorCode::TryAgainLater,
            format!("kubelet PodResources API {}: {e}", socket.display()),
        )
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(format!("runtime: {e}")))?;
    let pods = rt
        .block_on(async {
            tokio::time::timeout(TIMEOUT, list(socket))
                .await
                .map_err(|_| format!("no answer within {TIMEOUT:?}"))?
        })
        .map_err(fail)?;
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pod in pods
        .into_iter()
        .filter(|p| p.namespace == namespace && p.name == name)
    {
        for d in pod.containers.into_iter().flat_map(|c| c.devices) {
            out.entry(d.resource_name).or_default().extend(d.device_ids);
        }
    }
    Ok(out)
}

/// Connects to `socket` and calls `List`.
async fn list(socket: &Path) -> Result<Vec<v1::PodResources>, String> {
    let path = socket.to_path_buf();
    // The URI is required by the API but unused: every connection goes to the socket.
    let channel = tonic::transport::Endpoint::from_static("http://[::]:0")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                let s = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        }))
        .await
        .map_err(|e| format!("connect: {}", source_chain(&e)))?;
    let mut client = v1::pod_resources_lister_client::PodResourcesListerClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let r = client
        .list(v1::ListPodResourcesRequest {})
        .await
        .map_err(|s| format!("List: {:?}: {}", s.code(), s.message()))?;
    Ok(r.into_inner().pod_resources)
}

/// An error and its causes, `: `-separated, repeats left out (tonic's own
/// message is terse).
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !s.ends_with(&c_text) {
            s = format!("{s}: {c_text}");
        }
        cause = c.source();
    }
    s
}
