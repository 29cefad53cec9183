//! The API calls the meta-plugin makes: get a Pod, get a NetworkAttachmentDefinition,
//! merge-patch a Pod's annotations.
//!
//! HTTP statuses become CNI errors as follows:
//! - 401 → code 7, "rejected our credentials" (token or client certificate wrong, expired or missing);
//! - 403 → code 7, "denied `<verb>` …" with the server's message (the identity lacks RBAC permission);
//! - 404 → pod: code 3 (unknown container: the pod is gone); NAD: `Ok(None)`;
//! - 429 and 5xx → code 11 (try again later);
//! - anything else → code 5, with the server's Status message;
//! - a 2xx body that is not the expected JSON → code 6.

use crate::kubeconfig::{ClusterAccess, SERVICE_ACCOUNT_DIR};
use crate::names::{check_name, check_namespace};
use crate::transport::{Reply, Transport};
use manifold_common::error::{CniError, CniResult, ErrorCode};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

/// Default bound on one API request, connection to last byte.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the meta-plugin needs of a Pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.annotations` (empty when absent).
    pub annotations: BTreeMap<String, String>,
}

/// A client for one Kubernetes API server.
pub struct KubeClient {
    transport: Transport,
}

impl fmt::Debug for KubeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeClient")
            .field("server", &self.server())
            .finish_non_exhaustive()
    }
}

impl KubeClient {
    /// A client from a kubeconfig file, or, when `path` is a directory, from the
    /// service-account files in it (see [`KubeClient::from_service_account`]), with
    /// [`DEFAULT_TIMEOUT`].
    pub fn from_kubeconfig(path: &Path) -> CniResult<KubeClient> {
        Self::from_kubeconfig_with_timeout(path, DEFAULT_TIMEOUT)
    }

    /// Like [`KubeClient::from_kubeconfig`], every request bounded by `timeout`.
    pub fn from_kubeconfig_with_timeout(path: &Path, timeout: Duration) -> CniResult<KubeClient> {
        if path.is_dir() {
            return Self::from_service_account(path, timeout);
        }
        Ok(Self::new(ClusterAccess::from_kubeconfig(path)?, timeout))
    }

    /// A client from a pod's service account, as Multus does in-cluster: `token` and
    /// `ca.crt` in `dir`, server `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`.
    /// Missing variables or files are code 7.
    pub fn from_service_account(dir: &Path, timeout: Duration) -> CniResult<KubeClient> {
        let var = |name: &str| {
            std::env::var(name).map_err(|_| {
                CniError::config(format!(
                    "service account {}: {name} is not set (not running in a pod?)",
                    dir.display()
                ))
            })
        };
        let (host, port) = (
            var("KUBERNETES_SERVICE_HOST")?,
            var("KUBERNETES_SERVICE_PORT")?,
        );
        Ok(Self::new(
            ClusterAccess::in_cluster(dir, &host, &port)?,
            timeout,
        ))
    }

    /// The in-cluster client when `KUBERNETES_SERVICE_HOST` is set (from
    /// [`SERVICE_ACCOUNT_DIR`]), else `None`: what to use when no kubeconfig is configured.
    pub fn in_cluster(timeout: Duration) -> CniResult<Option<KubeClient>> {
        if std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() {
            return Ok(None);
        }
        Self::from_service_account(Path::new(SERVICE_ACCOUNT_DIR), timeout).map(Some)
    }

    fn new(access: ClusterAccess, timeout: Duration) -> KubeClient {
        KubeClient {
            transport: Transport::new(access, timeout),
        }
    }

    /// The API server's base URL.
    pub fn server(&self) -> &str {
        self.transport.server()
    }

    /// `GET /api/v1/namespaces/<ns>/pods/<name>`; a missing pod is code 3.
    pub fn pod(&self, namespace: &str, name: &str) -> CniResult<Pod> {
        let path = pod_path(namespace, name)?;
        let what = format!("pod {namespace}/{name}");
        let reply = self.transport.get(&path)?;
        if reply.status == 404 {
            return Err(CniError::new(
                ErrorCode::UnknownContainer,
                format!(
                    "{what} not found on Kubernetes API server {}",
                    self.server()
                ),
            ));
        }
        let pod = self.expect_ok(reply, "get", &what)?;
        parse_pod(&pod).map_err(|m| CniError::new(ErrorCode::Decode, format!("{what}: {m}")))
    }

    /// `GET` of a NetworkAttachmentDefinition (`k8s.cni.cncf.io/v1`): the whole
    /// object, or `None` when the API answers 404.
    pub fn network_attachment_definition(
        &self,
        namespace: &str,
        name: &str,
    ) -> CniResult<Option<Value>> {
        check_namespace(namespace)?;
        check_name("network-attachment-definition", name)?;
        let path = format!(
            "/apis/k8s.cni.cncf.io/v1/namespaces/{namespace}/network-attachment-definitions/{name}"
        );
        let reply = self.transport.get(&path)?;
        if reply.status == 404 {
            return Ok(None);
        }
        let what = format!("network-attachment-definition {namespace}/{name}");
        self.expect_ok(reply, "get", &what).map(Some)
    }

    /// Sets the given annotations on a pod with an `application/merge-patch+json`
    /// PATCH of `metadata.annotations`; the pod's other annotations are left alone.
    /// A missing pod is code 3.
    pub fn patch_pod_annotations(
        &self,
        namespace: &str,
        name: &str,
        annotations: &BTreeMap<String, String>,
    ) -> CniResult<()> {
        let path = pod_path(namespace, name)?;
        let what = format!("pod {namespace}/{name}");
        let body = json!({ "metadata": { "annotations": annotations } }).to_string();
        let reply = self
            .transport
            .patch(&path, "application/merge-patch+json", body.as_bytes())?;
        if reply.status == 404 {
            return Err(CniError::new(
                ErrorCode::UnknownContainer,
                format!(
                    "cannot patch {what}: not found on Kubernetes API server {}",
                    self.server()
                ),
            ));
        }
        self.expect_ok(reply, "patch", &what).map(drop)
    }

    /// A 2xx reply's JSON body, or the error its status stands for.
    fn expect_ok(&self, reply: Reply, verb: &str, what: &str) -> CniResult<Value> {
        let server = self.server();
        if (200..300).contains(&reply.status) {
            return serde_json::from_slice(&reply.body).map_err(|e| {
                CniError::new(
                    ErrorCode::Decode,
                    format!("{verb} {what}: invalid JSON from Kubernetes API server {server}: {e}"),
                )
            });
        }
        let message = status_message(&reply.body);
        let status = reply.status;
        Err(match status {
            401 => CniError::config(format!(
                "Kubernetes API server {server} rejected our credentials (401 Unauthorized) on {verb} {what}: \
                 the kubeconfig's token or client certificate is missing, expired or wrong"
            )),
            403 => CniError::config(format!(
                "Kubernetes API server {server} denied {verb} {what} (403 Forbidden): {message}: \
                 the plugin's identity lacks RBAC permission"
            )),
            429 | 500..=599 => CniError::new(
                ErrorCode::TryAgainLater,
                format!("{verb} {what}: Kubernetes API server {server} answered {status}: {message}"),
            ),
            _ => CniError::new(
                ErrorCode::Io,
                format!("{verb} {what}: Kubernetes API server {server} answered {status}: {message}"),
            ),
        })
    }
}

fn pod_path(namespace: &str, name: &str) -> CniResult<String> {
    check_namespace(namespace)?;
    check_name("pod", name)?;
    Ok(format!("/api/v1/namespaces/{namespace}/pods/{name}"))
}

/// `message` of a `Status` object, else the start of the body.
fn status_message(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("message")?.as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned())
}

fn parse_pod(pod: &Value) -> Result<Pod, String> {
    let meta = pod.get("metadata").ok_or("no metadata")?;
    let uid = meta
        .get("uid")
        .and_then(Value::as_str)
        .ok_or("no metadata.uid")?
        .to_string();
    let annotations = match meta.get("annotations") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(a) => {
            serde_json::from_value(a.clone()).map_err(|e| format!("metadata.annotations: {e}"))?
        }
    };
    Ok(Pod { uid, annotations })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pod_with_and_without_annotations() {
        let p = parse_pod(&json!({"metadata": {"uid": "u1", "annotations": {"a": "b"}}})).unwrap();
        assert_eq!(p.uid, "u1");
        assert_eq!(p.annotations.get("a").map(String::as_str), Some("b"));
        assert!(parse_pod(&json!({"metadata": {"uid": "u2"}}))
            .unwrap()
            .annotations
            .is_empty());
        assert!(parse_pod(&json!({"metadata": {}})).is_err());
        assert!(parse_pod(&json!({"metadata": {"uid": "u", "annotations": {"a": 1}}})).is_err());
    }

    #[test]
    fn status_message_prefers_status_object() {
        assert_eq!(
            status_message(br#"{"kind":"Status","message":"boom"}"#),
            "boom"
        );
        assert_eq!(status_message(b"plain text"), "plain text");
    }
}
