//! `KubeClient` over HTTPS against `ApiFixture` serving TLS, with a CA, server and
//! client certificates generated at test time by the `openssl` command.
//!
//! The fixture is a fake standing in for a Kubernetes API server (which cannot run
//! on these machines).

mod common;

use base64::Engine;
use common::Pki;
use manifold_kube::fixture::ApiFixture;
use manifold_kube::KubeClient;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn kubeconfig(dir: &Path, cluster: &str, user: &str) -> PathBuf {
    let path = dir.join("tls.kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\ncontexts:\n- name: c\n  context: {{cluster: k, user: u}}\n\
             clusters:\n- name: k\n  cluster: {cluster}\nusers:\n- name: u\n  user: {user}\n"
        ),
    )
    .unwrap();
    path
}

fn tls_fixture(pki: &Pki, client_auth: bool) -> ApiFixture {
    let api = ApiFixture::start_tls(pki.fixture_tls(client_auth));
    api.add_pod("default", "web-0", "uid-tls", &BTreeMap::new());
    api
}

#[test]
fn right_ca_verifies_the_server() {
    let pki = Pki::generate();
    let api = tls_fixture(&pki, false);
    assert!(api.url().starts_with("https://127.0.0.1:"));
    let dir = tempfile::tempdir().unwrap();
    // certificate-authority-data, as the fixture writes it.
    let client = KubeClient::from_kubeconfig(&api.write_kubeconfig(dir.path())).unwrap();
    assert_eq!(client.pod("default", "web-0").unwrap().uid, "uid-tls");
    // certificate-authority as a file path.
    let by_file = kubeconfig(
        dir.path(),
        &format!(
            "{{server: '{}', certificate-authority: '{}'}}",
            api.url(),
            pki.path("ca.crt").display()
        ),
        "{}",
    );
    let client = KubeClient::from_kubeconfig(&by_file).unwrap();
    assert_eq!(client.pod("default", "web-0").unwrap().uid, "uid-tls");
    assert_eq!(api.requests().len(), 2);
}

#[test]
fn wrong_ca_fails_with_code_7_and_no_request_served() {
    let pki = Pki::generate();
    let api = tls_fixture(&pki, false);
    let dir = tempfile::tempdir().unwrap();
    let path = kubeconfig(
        dir.path(),
        &format!(
            "{{server: '{}', certificate-authority-data: '{}'}}",
            api.url(),
            b64(&pki.read("other-ca.crt"))
        ),
        "{}",
    );
    let e = KubeClient::from_kubeconfig(&path)
        .unwrap()
        .pod("default", "web-0")
        .unwrap_err();
    assert_eq!(e.code.as_u32(), 7, "{e}");
    assert!(
        e.msg.contains("TLS with Kubernetes API server") && e.msg.contains(&api.url()),
        "{}",
        e.msg
    );
    assert!(e.msg.contains("UnknownIssuer"), "{}", e.msg);
    assert!(api.requests().is_empty());
}

#[test]
fn insecure_skip_tls_verify_accepts_any_server_certificate() {
    let pki = Pki::generate();
    let api = tls_fixture(&pki, false);
    let dir = tempfile::tempdir().unwrap();
    let path = kubeconfig(
        dir.path(),
        &format!(
            "{{server: '{}', insecure-skip-tls-verify: true}}",
            api.url()
        ),
        "{}",
    );
    assert_eq!(
        KubeClient::from_kubeconfig(&path)
            .unwrap()
            .pod("default", "web-0")
            .unwrap()
            .uid,
        "uid-tls"
    );
}

#[test]
fn client_certificate_authenticates_and_its_absence_fails() {
    let pki = Pki::generate();
    let api = tls_fixture(&pki, true);
    let dir = tempfile::tempdir().unwrap();
    let cluster = format!(
        "{{server: '{}', certificate-authority-data: '{}'}}",
        api.url(),
        b64(&pki.read("ca.crt"))
    );
    let with_data = kubeconfig(
        dir.path(),
        &cluster,
        &format!(
            "{{client-certificate-data: '{}', client-key-data: '{}'}}",
            b64(&pki.read("client.crt")),
            b64(&pki.read("client.key"))
        ),
    );
    assert_eq!(
        KubeClient::from_kubeconfig(&with_data)
            .unwrap()
            .pod("default", "web-0")
            .unwrap()
            .uid,
        "uid-tls"
    );
    let with_files = kubeconfig(
        dir.path(),
        &cluster,
        &format!(
            "{{client-certificate: '{}', client-key: '{}'}}",
            pki.path("client.crt").display(),
            pki.path("client.key").display()
        ),
    );
    assert_eq!(
        KubeClient::from_kubeconfig(&with_files)
            .unwrap()
            .pod("default", "web-0")
            .unwrap()
            .uid,
        "uid-tls"
    );
    assert_eq!(api.requests().len(), 2);

    let without = kubeconfig(dir.path(), &cluster, "{}");
    let e = KubeClient::from_kubeconfig(&without)
        .unwrap()
        .pod("default", "web-0")
        .unwrap_err();
    assert_eq!(e.code.as_u32(), 7, "{e}");
    assert!(
        e.msg.contains("TLS with Kubernetes API server"),
        "{}",
        e.msg
    );
    assert_eq!(
        api.requests().len(),
        2,
        "no request may get through without a client certificate"
    );
}
