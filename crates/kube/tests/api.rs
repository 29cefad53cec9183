//! `KubeClient` against `ApiFixture` over plain HTTP on loopback.
//!
//! The fixture is a fake standing in for a Kubernetes API server (which cannot run
//! on these machines): it serves real-format Pod, NetworkAttachmentDefinition and
//! Status JSON and records what it receives.

use manifold_kube::fixture::ApiFixture;
use manifold_kube::KubeClient;
use serde_json::json;
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn kubeconfig(dir: &Path, server: &str, user: &str) -> PathBuf {
    let path = dir.join("custom.kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\ncontexts:\n- name: c\n  context: {{cluster: k, user: u}}\n\
             clusters:\n- name: k\n  cluster: {{server: '{server}'}}\nusers:\n- name: u\n  user: {user}\n"
        ),
    )
    .unwrap();
    path
}

fn fixture_client() -> (ApiFixture, KubeClient, tempfile::TempDir) {
    let api = ApiFixture::start();
    let dir = tempfile::tempdir().unwrap();
    let client = KubeClient::from_kubeconfig(&api.write_kubeconfig(dir.path())).unwrap();
    (api, client, dir)
}

#[test]
fn gets_pod_uid_and_annotations() {
    let (api, client, _dir) = fixture_client();
    let ann = annotations(&[(
        "k8s.v1.cni.cncf.io/networks",
        "macvlan-conf@net1, ns2/other",
    )]);
    api.add_pod(
        "default",
        "web-0",
        "8d3c2b9e-1111-4a2b-9c3d-000000000001",
        &ann,
    );
    let pod = client.pod("default", "web-0").unwrap();
    assert_eq!(pod.uid, "8d3c2b9e-1111-4a2b-9c3d-000000000001");
    assert_eq!(pod.annotations, ann);
    let reqs = api.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].method, "GET");
    assert_eq!(reqs[0].path, "/api/v1/namespaces/default/pods/web-0");
    assert_eq!(client.server(), api.url());
}

#[test]
fn missing_pod_is_code_3() {
    let (api, client, _dir) = fixture_client();
    api.add_pod("default", "gone", "uid-gone", &BTreeMap::new());
    assert!(client.pod("default", "gone").is_ok());
    api.remove_pod("default", "gone");
    let e = client.pod("default", "gone").unwrap_err();
    assert_eq!(e.code.as_u32(), 3, "{e}");
    assert!(e.msg.contains("pod default/gone not found"), "{}", e.msg);
    assert!(format!("{client:?}").contains(&api.url()));
}

#[test]
fn nad_found_and_missing() {
    let (api, client, _dir) = fixture_client();
    let config = r#"{"cniVersion":"1.0.0","type":"manifold-macvlan","master":"eth1"}"#;
    api.add_nad("ns2", "macvlan-conf", config);
    let nad = client
        .network_attachment_definition("ns2", "macvlan-conf")
        .unwrap()
        .unwrap();
    assert_eq!(nad["apiVersion"], "k8s.cni.cncf.io/v1");
    assert_eq!(nad["kind"], "NetworkAttachmentDefinition");
    assert_eq!(nad["metadata"]["name"], "macvlan-conf");
    assert_eq!(nad["metadata"]["namespace"], "ns2");
    assert_eq!(nad["spec"]["config"], config);
    assert_eq!(
        client
            .network_attachment_definition("ns2", "absent")
            .unwrap(),
        None
    );
    assert_eq!(
        client
            .network_attachment_definition("default", "macvlan-conf")
            .unwrap(),
        None
    );
    assert_eq!(
        api.requests()[0].path,
        "/apis/k8s.cni.cncf.io/v1/namespaces/ns2/network-attachment-definitions/macvlan-conf"
    );
}

#[test]
fn patch_is_a_merge_patch_of_annotations() {
    let (api, client, _dir) = fixture_client();
    api.add_pod("default", "web-0", "uid-1", &annotations(&[("keep", "me")]));
    let status = r#"[{"name":"default/macvlan-conf","interface":"net1","ips":["10.1.0.5"]}]"#;
    let set = annotations(&[("k8s.v1.cni.cncf.io/network-status", status)]);
    client
        .patch_pod_annotations("default", "web-0", &set)
        .unwrap();
    let patches = api.patches();
    assert_eq!(patches.len(), 1);
    assert_eq!(patches[0].path, "/api/v1/namespaces/default/pods/web-0");
    assert_eq!(
        patches[0].content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(
        patches[0].json(),
        json!({"metadata": {"annotations": {"k8s.v1.cni.cncf.io/network-status": status}}})
    );
    assert_eq!(
        api.pod_annotations("default", "web-0").unwrap(),
        annotations(&[
            ("keep", "me"),
            ("k8s.v1.cni.cncf.io/network-status", status)
        ])
    );
    // The patched pod reads back through the client too.
    assert_eq!(client.pod("default", "web-0").unwrap().annotations.len(), 2);
}

#[test]
fn patch_of_missing_pod_is_code_3() {
    let (_api, client, _dir) = fixture_client();
    let e = client
        .patch_pod_annotations("default", "gone", &annotations(&[("a", "b")]))
        .unwrap_err();
    assert_eq!(e.code.as_u32(), 3, "{e}");
}

#[test]
fn bearer_token_is_sent_and_a_wrong_one_is_code_7() {
    let api = ApiFixture::start();
    api.require_token("s3cret-token");
    api.add_pod("default", "web-0", "uid-1", &BTreeMap::new());
    let dir = tempfile::tempdir().unwrap();
    let good = KubeClient::from_kubeconfig(&api.write_kubeconfig(dir.path())).unwrap();
    assert_eq!(good.pod("default", "web-0").unwrap().uid, "uid-1");
    assert_eq!(
        api.requests()[0].authorization.as_deref(),
        Some("Bearer s3cret-token")
    );

    let wrong = kubeconfig(dir.path(), &api.url(), "{token: wrong}");
    let e = KubeClient::from_kubeconfig(&wrong)
        .unwrap()
        .pod("default", "web-0")
        .unwrap_err();
    assert_eq!(e.code.as_u32(), 7, "{e}");
    assert!(
        e.msg
            .contains("rejected our credentials (401 Unauthorized)"),
        "{}",
        e.msg
    );
    assert!(e.msg.contains(&api.url()), "{}", e.msg);

    let none = kubeconfig(dir.path(), &api.url(), "{}");
    let e = KubeClient::from_kubeconfig(&none)
        .unwrap()
        .pod("default", "web-0")
        .unwrap_err();
    assert_eq!(e.code.as_u32(), 7, "{e}");
    assert_eq!(api.requests()[2].authorization, None);
}

#[test]
fn rbac_denial_is_code_7_with_the_servers_reason() {
    let (api, client, _dir) = fixture_client();
    api.add_pod("default", "web-0", "uid-1", &BTreeMap::new());
    api.deny("patch");
    assert!(client.pod("default", "web-0").is_ok());
    let e = client
        .patch_pod_annotations("default", "web-0", &annotations(&[("a", "b")]))
        .unwrap_err();
    assert_eq!(e.code.as_u32(), 7, "{e}");
    assert!(e.msg.contains("403 Forbidden"), "{}", e.msg);
    assert!(
        e.msg.contains("cannot patch resource \"pods\""),
        "{}",
        e.msg
    );
    assert!(e.msg.contains("lacks RBAC permission"), "{}", e.msg);
}

#[test]
fn bad_kubeconfigs_are_code_7_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.kubeconfig");
    let e = KubeClient::from_kubeconfig(&missing).err().unwrap();
    assert_eq!(e.code.as_u32(), 7);
    assert!(e.msg.contains(&missing.display().to_string()), "{}", e.msg);
    assert!(e.msg.contains("cannot read"), "{}", e.msg);

    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, "clusters: [unclosed\n").unwrap();
    let e = KubeClient::from_kubeconfig(&garbage).err().unwrap();
    assert_eq!(e.code.as_u32(), 7);
    assert!(
        e.msg.contains(&garbage.display().to_string()) && e.msg.contains("invalid YAML"),
        "{}",
        e.msg
    );

    let no_context = dir.path().join("no-context");
    std::fs::write(&no_context, "apiVersion: v1\nkind: Config\nclusters: []\n").unwrap();
    let e = KubeClient::from_kubeconfig(&no_context).err().unwrap();
    assert_eq!(e.code.as_u32(), 7);
    assert!(e.msg.contains("no current-context"), "{}", e.msg);

    let missing_token_file = kubeconfig(
        dir.path(),
        "http://127.0.0.1:1",
        "{tokenFile: absent-token}",
    );
    let e = KubeClient::from_kubeconfig(&missing_token_file)
        .err()
        .unwrap();
    assert_eq!(e.code.as_u32(), 7);
    assert!(e.msg.contains("absent-token"), "{}", e.msg);
}

#[test]
fn refused_connection_is_code_11_naming_the_server() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let server = format!("http://127.0.0.1:{port}");
    let path = kubeconfig(dir.path(), &server, "{}");
    let client = KubeClient::from_kubeconfig_with_timeout(&path, Duration::from_secs(2)).unwrap();
    let start = Instant::now();
    let e = client.pod("default", "web-0").unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(e.code.as_u32(), 11, "{e}");
    assert!(e.msg.contains(&server), "{}", e.msg);
}

#[test]
fn silent_server_is_code_11_within_the_timeout() {
    // Accepts connections (the kernel backlog does) but never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = format!("http://{}", listener.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let path = kubeconfig(dir.path(), &server, "{}");
    let client =
        KubeClient::from_kubeconfig_with_timeout(&path, Duration::from_millis(500)).unwrap();
    let start = Instant::now();
    let e = client
        .network_attachment_definition("default", "x")
        .unwrap_err();
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(e.code.as_u32(), 11, "{e}");
    assert!(
        e.msg.contains(&server) && e.msg.contains("no answer within 500ms"),
        "{}",
        e.msg
    );
    drop(listener);
}

#[test]
fn names_that_would_escape_the_path_are_refused_before_any_request() {
    let (api, client, _dir) = fixture_client();
    api.add_pod("kube-system", "secret", "uid-x", &BTreeMap::new());
    for (ns, name) in [
        ("default", "../../kube-system/pods/secret"),
        ("..", "secret"),
        ("default/../kube-system", "secret"),
        ("default", "a%2F..%2Fb"),
        ("default", "web?watch=1"),
        ("default", ""),
        ("", "web"),
        ("Default", "web"),
        ("default", "a..b"),
    ] {
        let e = client.pod(ns, name).unwrap_err();
        assert_eq!(e.code.as_u32(), 7, "{ns}/{name}: {e}");
        assert!(e.msg.contains("DNS-1123"), "{}", e.msg);
        let e = client.network_attachment_definition(ns, name).unwrap_err();
        assert_eq!(e.code.as_u32(), 7, "{ns}/{name}: {e}");
        let e = client
            .patch_pod_annotations(ns, name, &BTreeMap::new())
            .unwrap_err();
        assert_eq!(e.code.as_u32(), 7, "{ns}/{name}: {e}");
    }
    assert!(api.requests().is_empty(), "{:?}", api.requests());
}

#[test]
fn fixture_stops_when_dropped() {
    let api = ApiFixture::start();
    let dir = tempfile::tempdir().unwrap();
    let client = KubeClient::from_kubeconfig(&api.write_kubeconfig(dir.path())).unwrap();
    drop(api);
    let e = client.pod("default", "web-0").unwrap_err();
    assert_eq!(e.code.as_u32(), 11, "{e}");
}
