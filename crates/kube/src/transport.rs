//! HTTP(S) to one API server: a blocking ureq agent over rustls (ring), with a
//! whole-request timeout, and transport failures turned into CNI errors.
//!
//! Unreachable server, refused connection, DNS failure, timeout or a connection
//! cut mid-reply: code 11 (try again later), naming the server. A TLS failure
//! (wrong CA, bad certificate): code 7, since retrying will not help. HTTP
//! statuses are returned to the caller as they are. Proxy variables in the
//! environment are ignored: the plugin talks to the API server directly.

use crate::kubeconfig::ClusterAccess;
use manifold_common::error::{CniError, CniResult, ErrorCode};
use std::sync::Arc;
use std::time::{Duration, Instant};
use ureq::tls::{RootCerts, TlsConfig};
use ureq::Agent;

/// Largest response body read (a Pod with big annotations stays far below it).
const MAX_BODY: u64 = 4 << 20;

/// A response: status and body.
pub(crate) struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

/// A configured connection to one API server.
pub(crate) struct Transport {
    agent: Agent,
    server: String,
    authorization: Option<String>,
    timeout: Duration,
}

impl Transport {
    /// An agent for `access`, every request bounded by `timeout`.
    pub fn new(access: ClusterAccess, timeout: Duration) -> Transport {
        let mut tls = TlsConfig::builder()
            .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .disable_verification(access.insecure)
            .client_cert(access.client_cert);
        if let Some(ca) = access.ca {
            tls = tls.root_certs(RootCerts::new_with_certs(&ca));
        }
        let agent = Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .proxy(None)
            .max_redirects(0)
            .user_agent(concat!("manifold/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls.build())
            .build()
            .new_agent();
        Transport {
            agent,
            server: access.server,
            authorization: access.token.map(|t| format!("Bearer {t}")),
            timeout,
        }
    }

    /// The server's base URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// `GET <server><path>`.
    pub fn get(&self, path: &str) -> CniResult<Reply> {
        let start = Instant::now();
        let mut req = self
            .agent
            .get(format!("{}{path}", self.server))
            .header("Accept", "application/json");
        if let Some(a) = &self.authorization {
            req = req.header("Authorization", a);
        }
        self.finish("GET", path, start, req.call())
    }

    /// `PATCH <server><path>` with a body of `content_type`.
    pub fn patch(&self, path: &str, content_type: &str, body: &[u8]) -> CniResult<Reply> {
        let start = Instant::now();
        let mut req = self
            .agent
            .patch(format!("{}{path}", self.server))
            .header("Accept", "application/json")
            .content_type(content_type);
        if let Some(a) = &self.authorization {
            req = req.header("Authorization", a);
        }
        self.finish("PATCH", path, start, req.send(body))
    }

    fn finish(
        &self,
        method: &str,
        path: &str,
        start: Instant,
        res: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> CniResult<Reply> {
        let mut resp = res.map_err(|e| {
            tracing::debug!(%method, %path, server = %self.server, error = %e, "kube request failed");
            self.error(e)
        })?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_vec()
            .map_err(|e| self.error(e))?;
        tracing::debug!(%method, %path, status, elapsed_ms = start.elapsed().as_millis() as u64, "kube request");
        Ok(Reply { status, body })
    }

    fn error(&self, e: ureq::Error) -> CniError {
        let tls = match &e {
            ureq::Error::Rustls(_) | ureq::Error::Tls(_) => true,
            ureq::Error::Io(io) => io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some()),
            _ => false,
        };
        if tls {
            CniError::config(format!(
                "TLS with Kubernetes API server {} failed: {e} (check the kubeconfig's certificate-authority, client certificate and server address)",
                self.server
            ))
        } else if matches!(e, ureq::Error::Timeout(_)) {
            CniError::new(
                ErrorCode::TryAgainLater,
                format!(
                    "cannot reach Kubernetes API server {}: no answer within {:?} ({e})",
                    self.server, self.timeout
                ),
            )
        } else {
            CniError::new(
                ErrorCode::TryAgainLater,
                format!("cannot reach Kubernetes API server {}: {e}", self.server),
            )
        }
    }
}
