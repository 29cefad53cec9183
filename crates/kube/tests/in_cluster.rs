//! In-cluster (service-account) configuration against `ApiFixture` over TLS. Alone in
//! its test binary because it sets `KUBERNETES_SERVICE_HOST/PORT` for the process.
//!
//! The fixture is a fake standing in for a Kubernetes API server (which cannot run
//! on these machines).

mod common;

use common::Pki;
use manifold_kube::fixture::ApiFixture;
use manifold_kube::{KubeClient, DEFAULT_TIMEOUT};
use std::collections::BTreeMap;

#[test]
fn service_account_directory_and_environment() {
    let pki = Pki::generate();
    let api = ApiFixture::start_tls(pki.fixture_tls(false));
    api.require_token("sa-token");
    api.add_pod("default", "web-0", "uid-sa", &BTreeMap::new());
    let port = api.url().rsplit(':').next().unwrap().to_string();

    let sa = tempfile::tempdir().unwrap();
    std::fs::write(sa.path().join("token"), "sa-token\n").unwrap();
    std::fs::copy(pki.path("ca.crt"), sa.path().join("ca.crt")).unwrap();

    // Without the environment, a service-account directory is a config error.
    std::env::remove_var("KUBERNETES_SERVICE_HOST");
    let e = KubeClient::from_kubeconfig(sa.path()).err().unwrap();
    assert_eq!(e.code.as_u32(), 7);
    assert!(
        e.msg.contains("KUBERNETES_SERVICE_HOST is not set"),
        "{}",
        e.msg
    );
    assert!(KubeClient::in_cluster(DEFAULT_TIMEOUT).unwrap().is_none());

    std::env::set_var("KUBERNETES_SERVICE_HOST", "127.0.0.1");
    std::env::set_var("KUBERNETES_SERVICE_PORT", &port);
    let client = KubeClient::from_kubeconfig(sa.path()).unwrap();
    assert_eq!(client.server(), api.url());
    assert_eq!(client.pod("default", "web-0").unwrap().uid, "uid-sa");
    assert_eq!(
        api.requests()[0].authorization.as_deref(),
        Some("Bearer sa-token")
    );

    // With the environment set, in_cluster() uses the standard directory, absent here.
    let e = KubeClient::in_cluster(DEFAULT_TIMEOUT).err().unwrap();
    assert_eq!(e.code.as_u32(), 7);
    assert!(
        e.msg
            .contains("/var/run/secrets/kubernetes.io/serviceaccount"),
        "{}",
        e.msg
    );
}
