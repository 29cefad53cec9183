//! Minimal Kubernetes API client for the `manifold` meta-plugin: read a Pod's uid and
//! annotations, read a NetworkAttachmentDefinition, merge-patch a Pod's annotations
//! (`k8s.v1.cni.cncf.io/network-status`).
//!
//! Blocking, one short-lived process per CNI call: no async runtime. HTTP through
//! `ureq`, TLS through rustls (ring), kubeconfig through `serde_yaml_ng`.
//!
//! ```no_run
//! use manifold_kube::KubeClient;
//! # fn main() -> manifold_common::error::CniResult<()> {
//! let client = KubeClient::from_kubeconfig("/etc/cni/net.d/manifold.d/manifold.kubeconfig".as_ref())?;
//! let pod = client.pod("default", "web-0")?;
//! let nad = client.network_attachment_definition("default", "macvlan-conf")?;
//! # let _ = (pod, nad); Ok(()) }
//! ```
//!
//! Errors are [`CniError`](manifold_common::error::CniError)s: a bad kubeconfig or
//! service account is code 7 naming the file; an unreachable or timed-out server is
//! code 11 naming the server; 401/403 are code 7 saying the credentials were rejected
//! or the identity lacks permission; a missing pod is code 3; a missing NAD is
//! `Ok(None)`. Namespaces and names are checked as DNS-1123 (code 7) before they go
//! into a URL path. A TLS failure (wrong CA) is code 7. See [`api`] for the full mapping.
//!
//! In-cluster use (Multus style): [`KubeClient::from_kubeconfig`] given a directory
//! reads `token` and `ca.crt` from it and the server from `KUBERNETES_SERVICE_HOST`
//! and `KUBERNETES_SERVICE_PORT`; [`KubeClient::in_cluster`] does the same with the
//! standard service-account directory when `KUBERNETES_SERVICE_HOST` is set.
//!
//! # Testing with the fixture
//! A Kubernetes API server cannot run on this project's machines. With the `fixture`
//! feature (as a dev-dependency: `manifold-kube = { workspace = true, features =
//! ["fixture"] }`), [`fixture::ApiFixture`] is a fake API server on loopback that serves
//! real-format Pod and NetworkAttachmentDefinition JSON and records PATCHes:
//!
//! ```ignore
//! use manifold_kube::fixture::ApiFixture;
//! let api = ApiFixture::start();                   // or start_tls(FixtureTls { .. })
//! api.require_token("s3cret");                     // optional: 401 without it
//! api.add_pod("default", "web-0", "uid-1", &annotations);
//! api.add_nad("default", "macvlan-conf", r#"{"cniVersion":"1.0.0","type":"macvlan"}"#);
//! api.deny("patch");                              // optional: 403 as when RBAC refuses
//! let kubeconfig = api.write_kubeconfig(dir.path());  // point the plugin's `kubeconfig` here
//! api.remove_nad("default", "macvlan-conf");       // e.g. DEL after the NAD was deleted
//! // ... run the code under test ...
//! let patch = &api.patches()[0];                   // path, content_type, body / json()
//! assert_eq!(api.pod_annotations("default", "web-0").unwrap()["k8s.v1.cni.cncf.io/network-status"], "...");
//! ```
//! Say in the test's doc comment that it runs against this fake, not a real API server.

pub mod api;
#[cfg(feature = "fixture")]
pub mod fixture;
pub mod kubeconfig;
pub mod names;
mod transport;

pub use api::{KubeClient, Pod, DEFAULT_TIMEOUT};
