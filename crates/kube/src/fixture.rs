//! **A fake standing in for a Kubernetes API server**, which cannot run on the
//! machines this project is built and tested on. It is not Kubernetes: it serves
//! only what `manifold-kube` calls, in the API server's real JSON formats.
//!
//! - `GET /api/v1/namespaces/<ns>/pods/<name>`: a `v1` `Pod` registered with
//!   [`ApiFixture::add_pod`];
//! - `GET /apis/k8s.cni.cncf.io/v1/namespaces/<ns>/network-attachment-definitions/<name>`:
//!   a `NetworkAttachmentDefinition` registered with [`ApiFixture::add_nad`];
//! - `PATCH` of a pod with `application/merge-patch+json` (or
//!   `strategic-merge-patch+json`): applied as an RFC 7386 merge patch, answered with
//!   the new pod; other media types get 415;
//! - a `Status` object for 404, 401 (wrong or missing bearer token, after
//!   [`ApiFixture::require_token`]), 403 (verbs refused with [`ApiFixture::deny`]),
//!   405 and 400, as the API server writes them;
//! - every request is recorded ([`ApiFixture::requests`], [`ApiFixture::patches`]).
//!
//! It listens on `127.0.0.1:<random port>`, plain HTTP ([`ApiFixture::start`]) or
//! TLS ([`ApiFixture::start_tls`], optionally requiring a client certificate), one
//! thread per connection, one request per connection (`Connection: close`), and
//! stops when dropped.

use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection, StreamOwned};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// PEM material for a TLS fixture.
#[derive(Debug, Clone)]
pub struct FixtureTls {
    /// Server certificate (then intermediates), valid for IP `127.0.0.1`.
    pub cert_chain_pem: Vec<u8>,
    /// The server certificate's private key.
    pub key_pem: Vec<u8>,
    /// The CA that signed the server certificate: put in [`ApiFixture::write_kubeconfig`]'s output.
    pub ca_pem: Vec<u8>,
    /// When set, clients must present a certificate signed by this CA.
    pub client_ca_pem: Option<Vec<u8>>,
}

/// One request as the fixture received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// `GET`, `PATCH`, ...
    pub method: String,
    /// Path and query, as sent.
    pub path: String,
    /// `Content-Type` header.
    pub content_type: Option<String>,
    /// `Authorization` header.
    pub authorization: Option<String>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl RecordedRequest {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

#[derive(Default)]
struct State {
    pods: BTreeMap<(String, String), Value>,
    nads: BTreeMap<(String, String), Value>,
    token: Option<String>,
    denied: BTreeSet<String>,
    requests: Vec<RecordedRequest>,
    next_uid: u64,
    resource_version: u64,
}

/// A fake Kubernetes API server on loopback, for tests (see the module docs).
pub struct ApiFixture {
    addr: SocketAddr,
    ca_pem: Option<Vec<u8>>,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl ApiFixture {
    /// Starts a plain-HTTP fixture.
    pub fn start() -> ApiFixture {
        Self::spawn(None, None)
    }

    /// Starts a TLS fixture. Panics on unusable PEM.
    pub fn start_tls(tls: FixtureTls) -> ApiFixture {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&tls.cert_chain_pem)
                .collect::<Result<_, _>>()
                .expect("fixture: server certificate PEM");
        let key = PrivateKeyDer::from_pem_slice(&tls.key_pem).expect("fixture: server key PEM");
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("fixture: TLS versions");
        let builder = match &tls.client_ca_pem {
            None => builder.with_no_client_auth(),
            Some(pem) => {
                let mut roots = RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(pem) {
                    roots
                        .add(c.expect("fixture: client CA PEM"))
                        .expect("fixture: client CA");
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .expect("fixture: client verifier");
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder
            .with_single_cert(chain, key)
            .expect("fixture: server certificate and key");
        Self::spawn(Some(Arc::new(config)), Some(tls.ca_pem))
    }

    fn spawn(tls: Option<Arc<ServerConfig>>, ca_pem: Option<Vec<u8>>) -> ApiFixture {
        let listener = TcpListener::bind("127.0.0.1:0").expect("fixture: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("fixture: local address");
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (st, tls) = (st.clone(), tls.clone());
                std::thread::spawn(move || serve_connection(conn, tls, &st));
            }
        });
        ApiFixture {
            addr,
            ca_pem,
            state,
            stop,
            accept: Some(accept),
        }
    }

    /// `http://127.0.0.1:<port>` or `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        let scheme = if self.ca_pem.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// Registers a pod (replacing one of the same name).
    pub fn add_pod(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        annotations: &BTreeMap<String, String>,
    ) {
        let mut s = self.lock();
        let rv = s.bump();
        s.pods.insert(
            (namespace.into(), name.into()),
            json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "uid": uid,
                    "resourceVersion": rv,
                    "creationTimestamp": "2026-01-01T00:00:00Z",
                    "annotations": annotations,
                },
                "spec": {
                    "nodeName": "node-1",
                    "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}],
                },
                "status": {"phase": "Pending"},
            }),
        );
    }

    /// Registers a NetworkAttachmentDefinition whose `spec.config` is `config`.
    pub fn add_nad(&self, namespace: &str, name: &str, config: &str) {
        let mut s = self.lock();
        let rv = s.bump();
        s.next_uid += 1;
        let uid = format!("6e0e8a3c-0000-4000-8000-{:012x}", s.next_uid);
        s.nads.insert(
            (namespace.into(), name.into()),
            json!({
                "apiVersion": "k8s.cni.cncf.io/v1",
                "kind": "NetworkAttachmentDefinition",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "uid": uid,
                    "resourceVersion": rv,
                    "generation": 1,
                    "creationTimestamp": "2026-01-01T00:00:00Z",
                },
                "spec": {"config": config},
            }),
        );
    }

    /// Deletes a registered pod; later requests for it get 404.
    pub fn remove_pod(&self, namespace: &str, name: &str) {
        self.lock().pods.remove(&(namespace.into(), name.into()));
    }

    /// Deletes a registered NetworkAttachmentDefinition; later requests for it get 404.
    pub fn remove_nad(&self, namespace: &str, name: &str) {
        self.lock().nads.remove(&(namespace.into(), name.into()));
    }

    /// From now on, requests without `Authorization: Bearer <token>` get 401.
    pub fn require_token(&self, token: &str) {
        self.lock().token = Some(token.into());
    }

    /// From now on, requests with this verb (`get`, `patch`) get 403, as when RBAC refuses.
    pub fn deny(&self, verb: &str) {
        self.lock().denied.insert(verb.to_ascii_lowercase());
    }

    /// The current annotations of a registered pod.
    pub fn pod_annotations(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, String>> {
        let s = self.lock();
        let pod = s.pods.get(&(namespace.into(), name.into()))?;
        serde_json::from_value(pod["metadata"]["annotations"].clone()).ok()
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// The `PATCH` requests received so far, in order.
    pub fn patches(&self) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "PATCH")
            .collect()
    }

    /// Writes `<dir>/kubeconfig` pointing at this fixture (with its CA when TLS, and
    /// the required token if any) and returns its path.
    pub fn write_kubeconfig(&self, dir: &Path) -> PathBuf {
        let ca = self.ca_pem.as_ref().map_or(String::new(), |pem| {
            format!(
                "\n    certificate-authority-data: {}",
                base64::engine::general_purpose::STANDARD.encode(pem)
            )
        });
        let user = self
            .lock()
            .token
            .as_ref()
            .map_or("{}".to_string(), |t| format!("{{token: {t:?}}}"));
        let yaml = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fixture\n  cluster:\n    server: {}{ca}\n\
             contexts:\n- name: fixture\n  context: {{cluster: fixture, user: fixture, namespace: default}}\n\
             current-context: fixture\nusers:\n- name: fixture\n  user: {user}\n",
            self.url()
        );
        let path = dir.join("kubeconfig");
        std::fs::write(&path, yaml).expect("fixture: write kubeconfig");
        path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for ApiFixture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

impl State {
    fn bump(&mut self) -> String {
        self.resource_version += 1;
        self.resource_version.to_string()
    }
}

fn serve_connection(conn: TcpStream, tls: Option<Arc<ServerConfig>>, state: &Mutex<State>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
    match tls {
        None => serve(conn, state),
        Some(cfg) => {
            let Ok(server) = ServerConnection::new(cfg) else {
                return;
            };
            serve(StreamOwned::new(server, conn), state);
        }
    }
}

fn serve(mut stream: impl Read + Write, state: &Mutex<State>) {
    let Some(req) = read_request(&mut stream) else {
        return;
    };
    let (status, body) = {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        s.requests.push(req.clone());
        respond(&mut s, &req)
    };
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Unsupported Media Type",
    };
    let body = body.to_string();
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body.as_bytes());
    let _ = stream.flush();
}

/// Reads one HTTP/1.1 request with a `Content-Length` body (or none).
fn read_request(stream: &mut impl Read) -> Option<RecordedRequest> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let n = stream.read(&mut chunk).ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = stream.read(&mut chunk).ok().filter(|n| *n > 0)?;
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    Some(RecordedRequest {
        method,
        path,
        content_type: headers.get("content-type").cloned(),
        authorization: headers.get("authorization").cloned(),
        body,
    })
}

/// A Kubernetes `Status` failure object.
fn status(code: u16, reason: &str, message: String, details: Value) -> (u16, Value) {
    let mut v = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if !details.is_null() {
        v["details"] = details;
    }
    (code, v)
}

fn respond(s: &mut State, req: &RecordedRequest) -> (u16, Value) {
    if let Some(token) = &s.token {
        if req.authorization.as_deref() != Some(&format!("Bearer {token}")) {
            return status(401, "Unauthorized", "Unauthorized".into(), Value::Null);
        }
    }
    let path = req.path.split('?').next().unwrap_or_default();
    let segs: Vec<&str> = path.split('/').collect();
    let (group, resource, ns, name) = match segs.as_slice() {
        ["", "api", "v1", "namespaces", ns, "pods", name] => ("", "pods", *ns, *name),
        ["", "apis", "k8s.cni.cncf.io", "v1", "namespaces", ns, "network-attachment-definitions", name] => {
            (
                "k8s.cni.cncf.io",
                "network-attachment-definitions",
                *ns,
                *name,
            )
        }
        _ => {
            return status(
                404,
                "NotFound",
                "the server could not find the requested resource".into(),
                Value::Null,
            )
        }
    };
    let verb = req.method.to_ascii_lowercase();
    // As the API server names it in messages: `pods`, `network-attachment-definitions.k8s.cni.cncf.io`.
    let qualified = if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    };
    let details = json!({"name": name, "group": group, "kind": resource});
    if s.denied.contains(&verb) {
        let message = format!(
            "{qualified} {name:?} is forbidden: User \"system:serviceaccount:kube-system:manifold\" cannot {verb} \
             resource {resource:?} in API group {group:?} in the namespace {ns:?}"
        );
        return status(403, "Forbidden", message, details);
    }
    let key = (ns.to_string(), name.to_string());
    let objects = if resource == "pods" {
        &mut s.pods
    } else {
        &mut s.nads
    };
    let not_found = || {
        status(
            404,
            "NotFound",
            format!("{qualified} {name:?} not found"),
            details.clone(),
        )
    };
    match verb.as_str() {
        "get" => objects
            .get(&key)
            .map_or_else(not_found, |o| (200, o.clone())),
        "patch" if resource == "pods" => {
            let ct = req.content_type.as_deref().unwrap_or_default();
            let ct = ct.split(';').next().unwrap_or_default().trim();
            if ct != "application/merge-patch+json"
                && ct != "application/strategic-merge-patch+json"
            {
                return status(
                    415,
                    "UnsupportedMediaType",
                    format!(
                        "the body of the request was in an unknown format - accepted media types include: \
                         application/json-patch+json, application/merge-patch+json, \
                         application/apply-patch+yaml, application/strategic-merge-patch+json (got {ct:?})"
                    ),
                    Value::Null,
                );
            }
            let Ok(patch) = serde_json::from_slice::<Value>(&req.body) else {
                return status(
                    400,
                    "BadRequest",
                    "error decoding patch: invalid JSON".into(),
                    Value::Null,
                );
            };
            if !objects.contains_key(&key) {
                return not_found();
            }
            let rv = s.bump();
            let pod = s.pods.get_mut(&key).expect("checked above");
            merge_patch(pod, &patch);
            pod["metadata"]["resourceVersion"] = Value::String(rv);
            (200, pod.clone())
        }
        _ => status(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({verb})"),
            details,
        ),
    }
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("object");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::merge_patch;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc7386() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut t, &json!({"a": "z", "c": {"f": null}, "h": 1}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}, "h": 1}));
    }
}
