//! Where the API server is and who we are to it: a kubeconfig file, or a pod's
//! service-account directory (in-cluster, as Multus does).
//!
//! Supported kubeconfig fields: `current-context`; cluster `server` (`http://` or
//! `https://`, optional path prefix), `certificate-authority`,
//! `certificate-authority-data`, `insecure-skip-tls-verify`; user `token`,
//! `tokenFile` (wins over `token`, as in client-go), `client-certificate(-data)`,
//! `client-key(-data)`. Relative file paths are taken from the kubeconfig's
//! directory. `exec`, `auth-provider` and basic auth are refused (code 7);
//! `tls-server-name` and `proxy-url` are not supported. Every error here is code 7
//! and names the file it came from.

use base64::Engine;
use manifold_common::error::{CniError, CniResult};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use ureq::tls::{parse_pem, Certificate, ClientCert, PemItem, PrivateKey};

/// Default service-account directory mounted into pods.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Everything needed to talk to one API server (no `Debug`: it holds secrets).
pub(crate) struct ClusterAccess {
    /// Base URL, without a trailing `/`.
    pub server: String,
    /// CAs to verify the server with (`https` only).
    pub ca: Option<Vec<Certificate<'static>>>,
    /// `insecure-skip-tls-verify`.
    pub insecure: bool,
    /// Client certificate and key.
    pub client_cert: Option<ClientCert>,
    /// Bearer token.
    pub token: Option<String>,
}

#[derive(Deserialize)]
struct Kubeconfig {
    #[serde(rename = "current-context", default)]
    current_context: String,
    #[serde(default)]
    contexts: Vec<Named<Context>>,
    #[serde(default)]
    clusters: Vec<Named<Cluster>>,
    #[serde(default)]
    users: Vec<Named<User>>,
}

#[derive(Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "context", alias = "cluster", alias = "user")]
    item: T,
}

#[derive(Deserialize)]
struct Context {
    cluster: String,
    #[serde(default)]
    user: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Cluster {
    server: String,
    certificate_authority: Option<PathBuf>,
    certificate_authority_data: Option<String>,
    #[serde(default)]
    insecure_skip_tls_verify: bool,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct User {
    token: Option<String>,
    #[serde(rename = "tokenFile")]
    token_file: Option<PathBuf>,
    client_certificate: Option<PathBuf>,
    client_certificate_data: Option<String>,
    client_key: Option<PathBuf>,
    client_key_data: Option<String>,
    exec: Option<serde_yaml_ng::Value>,
    auth_provider: Option<serde_yaml_ng::Value>,
    username: Option<String>,
}

impl ClusterAccess {
    /// Reads a kubeconfig file.
    pub fn from_kubeconfig(path: &Path) -> CniResult<ClusterAccess> {
        let err = |m: String| CniError::config(format!("kubeconfig {}: {m}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let cfg: Kubeconfig =
            serde_yaml_ng::from_str(&text).map_err(|e| err(format!("invalid YAML: {e}")))?;
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.resolve(base).map_err(err)
    }

    /// Reads a service-account directory (`token`, `ca.crt`) for the server at `host:port`.
    pub fn in_cluster(dir: &Path, host: &str, port: &str) -> CniResult<ClusterAccess> {
        let err = |m: String| CniError::config(format!("service account {}: {m}", dir.display()));
        let server = in_cluster_server(host, port);
        let token = read_token(&dir.join("token")).map_err(err)?;
        let ca = read_file(&dir.join("ca.crt")).and_then(|pem| certificates(&pem, "ca.crt"));
        Ok(ClusterAccess {
            server,
            ca: Some(ca.map_err(err)?),
            insecure: false,
            client_cert: None,
            token: Some(token),
        })
    }
}

/// `https://host:port`, with an IPv6 host in brackets.
fn in_cluster_server(host: &str, port: &str) -> String {
    if host.contains(':') {
        format!("https://[{host}]:{port}")
    } else {
        format!("https://{host}:{port}")
    }
}

impl Kubeconfig {
    fn resolve(self, base: &Path) -> Result<ClusterAccess, String> {
        if self.current_context.is_empty() {
            return Err("no current-context".into());
        }
        let ctx = find(&self.contexts, &self.current_context, "context")?;
        let cluster = find(&self.clusters, &ctx.cluster, "cluster")?;
        let user = if ctx.user.is_empty() {
            User::default()
        } else {
            find_owned(self.users, &ctx.user)?
        };
        let server = cluster.server.trim_end_matches('/').to_string();
        let https = server.starts_with("https://");
        if !https && !server.starts_with("http://") {
            return Err(format!(
                "cluster {:?}: server {:?} is not an http:// or https:// URL",
                ctx.cluster, cluster.server
            ));
        }
        let ca_pem = pem_source(
            base,
            &cluster.certificate_authority,
            &cluster.certificate_authority_data,
            "certificate-authority",
        )?;
        let ca = ca_pem
            .map(|pem| certificates(&pem, "certificate-authority"))
            .transpose()?;
        if https && ca.is_none() && !cluster.insecure_skip_tls_verify {
            return Err(format!(
                "cluster {:?}: https server needs certificate-authority(-data) or insecure-skip-tls-verify",
                ctx.cluster
            ));
        }
        Ok(ClusterAccess {
            server,
            ca,
            insecure: cluster.insecure_skip_tls_verify,
            client_cert: user.client_cert(base)?,
            token: user.token(base)?,
        })
    }
}

impl User {
    fn token(&self, base: &Path) -> Result<Option<String>, String> {
        if self.exec.is_some() || self.auth_provider.is_some() || self.username.is_some() {
            return Err(
                "user: exec, auth-provider and username/password are not supported; use token, tokenFile or a client certificate"
                    .into(),
            );
        }
        match &self.token_file {
            Some(f) => read_token(&base.join(f)).map(Some),
            None => Ok(self.token.clone().filter(|t| !t.is_empty())),
        }
    }

    fn client_cert(&self, base: &Path) -> Result<Option<ClientCert>, String> {
        let cert = pem_source(
            base,
            &self.client_certificate,
            &self.client_certificate_data,
            "client-certificate",
        )?;
        let key = pem_source(base, &self.client_key, &self.client_key_data, "client-key")?;
        match (cert, key) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => {
                let chain = certificates(&cert, "client-certificate")?;
                let key = PrivateKey::from_pem(&key)
                    .map_err(|e| format!("client-key: no usable PEM private key: {e}"))?;
                Ok(Some(ClientCert::new_with_certs(&chain, key)))
            }
            _ => Err("user: client-certificate and client-key must be given together".into()),
        }
    }
}

fn find<'a, T>(list: &'a [Named<T>], name: &str, what: &str) -> Result<&'a T, String> {
    list.iter()
        .find(|n| n.name == name)
        .map(|n| &n.item)
        .ok_or_else(|| format!("no {what} named {name:?}"))
}

fn find_owned(list: Vec<Named<User>>, name: &str) -> Result<User, String> {
    list.into_iter()
        .find(|n| n.name == name)
        .map(|n| n.item)
        .ok_or_else(|| format!("no user named {name:?}"))
}

/// PEM bytes from `<field>-data` (base64, wins as in client-go) or `<field>` (a file).
fn pem_source(
    base: &Path,
    file: &Option<PathBuf>,
    data: &Option<String>,
    field: &str,
) -> Result<Option<Vec<u8>>, String> {
    if let Some(data) = data {
        let clean: String = data.split_whitespace().collect();
        return base64::engine::general_purpose::STANDARD
            .decode(clean)
            .map(Some)
            .map_err(|e| format!("{field}-data: invalid base64: {e}"));
    }
    file.as_ref().map(|f| read_file(&base.join(f))).transpose()
}

fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn read_token(path: &Path) -> Result<String, String> {
    let bytes = read_file(path)?;
    let token = String::from_utf8_lossy(&bytes).trim().to_string();
    if token.is_empty() {
        return Err(format!("token file {} is empty", path.display()));
    }
    Ok(token)
}

fn certificates(pem: &[u8], field: &str) -> Result<Vec<Certificate<'static>>, String> {
    let mut certs = Vec::new();
    for item in parse_pem(pem) {
        match item {
            Ok(PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => return Err(format!("{field}: invalid PEM: {e}")),
        }
    }
    if certs.is_empty() {
        return Err(format!("{field}: no PEM certificate found"));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> CniResult<ClusterAccess> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        std::fs::write(&path, yaml).unwrap();
        std::fs::write(dir.path().join("tok"), "from-file\n").unwrap();
        ClusterAccess::from_kubeconfig(&path)
    }

    const BASE: &str = "apiVersion: v1\nkind: Config\ncurrent-context: c\ncontexts:\n- name: c\n  context: {cluster: k, user: u}\n";

    #[test]
    fn http_with_token_file_relative_to_kubeconfig() {
        let a = load(&format!(
            "{BASE}clusters:\n- name: k\n  cluster: {{server: 'http://127.0.0.1:6443/'}}\nusers:\n- name: u\n  user: {{token: inline, tokenFile: tok}}\n"
        ))
        .unwrap();
        assert_eq!(a.server, "http://127.0.0.1:6443");
        assert_eq!(a.token.as_deref(), Some("from-file"));
        assert!(a.ca.is_none() && a.client_cert.is_none() && !a.insecure);
    }

    #[test]
    fn https_without_ca_is_refused() {
        let e = load(&format!(
            "{BASE}clusters:\n- name: k\n  cluster: {{server: 'https://127.0.0.1:6443'}}\nusers:\n- name: u\n  user: {{token: t}}\n"
        ))
        .err().unwrap();
        assert_eq!(e.code.as_u32(), 7);
        assert!(e.msg.contains("certificate-authority"), "{}", e.msg);
    }

    #[test]
    fn insecure_https_needs_no_ca() {
        let a = load(&format!(
            "{BASE}clusters:\n- name: k\n  cluster: {{server: 'https://127.0.0.1:6443', insecure-skip-tls-verify: true}}\nusers:\n- name: u\n  user: {{token: t}}\n"
        ))
        .unwrap();
        assert!(a.insecure);
        assert_eq!(a.token.as_deref(), Some("t"));
    }

    #[test]
    fn unsupported_auth_and_missing_pieces() {
        let exec = load(&format!(
            "{BASE}clusters:\n- name: k\n  cluster: {{server: 'http://h'}}\nusers:\n- name: u\n  user: {{exec: {{command: aws}}}}\n"
        ))
        .err().unwrap();
        assert!(exec.msg.contains("exec"), "{}", exec.msg);
        let no_user = load(&format!(
            "{BASE}clusters:\n- name: k\n  cluster: {{server: 'http://h'}}\nusers: []\n"
        ))
        .err()
        .unwrap();
        assert!(
            no_user.msg.contains("no user named \"u\""),
            "{}",
            no_user.msg
        );
        let bad_scheme = load(&format!(
            "{BASE}clusters:\n- name: k\n  cluster: {{server: 'ftp://h'}}\nusers: [{{name: u, user: {{token: t}}}}]\n"
        ))
        .err().unwrap();
        assert!(bad_scheme.msg.contains("not an http"), "{}", bad_scheme.msg);
        let half_cert = load(&format!(
            "{BASE}clusters:\n- name: k\n  cluster: {{server: 'http://h'}}\nusers:\n- name: u\n  user: {{client-key: tok}}\n"
        ))
        .err().unwrap();
        assert!(half_cert.msg.contains("together"), "{}", half_cert.msg);
        let bad_b64 = load(&format!(
            "{BASE}clusters:\n- name: k\n  cluster: {{server: 'https://h', certificate-authority-data: '!!'}}\nusers: [{{name: u, user: {{token: t}}}}]\n"
        ))
        .err().unwrap();
        assert!(bad_b64.msg.contains("invalid base64"), "{}", bad_b64.msg);
    }

    #[test]
    fn in_cluster_server_brackets_ipv6() {
        assert_eq!(
            in_cluster_server("10.96.0.1", "443"),
            "https://10.96.0.1:443"
        );
        assert_eq!(in_cluster_server("fd00::1", "443"), "https://[fd00::1]:443");
    }

    #[test]
    fn in_cluster_needs_token_and_ca() {
        let dir = tempfile::tempdir().unwrap();
        let e = ClusterAccess::in_cluster(dir.path(), "fd00::1", "443")
            .err()
            .unwrap();
        assert_eq!(e.code.as_u32(), 7);
        assert!(e.msg.contains("token"), "{}", e.msg);
        std::fs::write(dir.path().join("token"), "sa-token\n").unwrap();
        std::fs::write(dir.path().join("ca.crt"), "not pem").unwrap();
        let e = ClusterAccess::in_cluster(dir.path(), "fd00::1", "443")
            .err()
            .unwrap();
        assert!(e.msg.contains("no PEM certificate"), "{}", e.msg);
    }
}
