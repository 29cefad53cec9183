//! `manifold` refuses bad input before it touches anything: no namespace is
//! opened (CNI_NETNS does not exist), no cache directory is created.

use manifold_tests::Call;
use serde_json::{json, Value};
use std::path::PathBuf;

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A confDir with a default network `podnet` and one NAD `ns1/net-a` (no `mac` capability).
fn conf_dir(tag: &str) -> Dir {
    let d = std::env::temp_dir().join(format!("mf-meta-bad-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("conf/attachments/ns1")).unwrap();
    std::fs::write(
        d.join("conf/podnet.conf"),
        r#"{"cniVersion":"1.0.0","name":"podnet","type":"bridge"}"#,
    )
    .unwrap();
    std::fs::write(
        d.join("conf/attachments/ns1/net-a.yaml"),
        "apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata:\n  name: net-a\nspec:\n  config: '{\"cniVersion\":\"1.0.0\",\"type\":\"macvlan\"}'\n",
    )
    .unwrap();
    Dir(d)
}

fn manifold(d: &Dir, extra: Value, networks: &str) -> Value {
    let mut c = json!({"cniVersion": "1.1.0", "name": "manifold", "type": "manifold",
        "clusterNetwork": "podnet",
        "confDir": d.0.join("conf").display().to_string(),
        "cniDir": d.0.join("cache").display().to_string(),
        "runtimeConfig": {"io.kubernetes.cri.pod-annotations": {"k8s.v1.cni.cncf.io/networks": networks}}});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn add(conf: &[u8]) -> manifold_tests::Output {
    Call::new("manifold")
        .verb("ADD", "c1", "/var/run/netns/never-opened", "eth0")
        .env("CNI_ARGS", "K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=p")
        .run(conf)
}

#[test]
fn bad_configs_and_annotations_get_the_right_code() {
    let d = conf_dir("codes");
    let cases: Vec<(&str, Vec<u8>, u64, &str)> = vec![
        ("malformed JSON", b"{\"cniVersion\":".to_vec(), 6, "decode"),
        (
            "no clusterNetwork",
            br#"{"cniVersion":"1.1.0","name":"m","type":"manifold"}"#.to_vec(),
            7,
            "clusterNetwork",
        ),
        (
            "relative cniDir",
            manifold(&d, json!({"cniDir": "cache"}), "")
                .to_string()
                .into_bytes(),
            7,
            "absolute",
        ),
        (
            "maxAttachments type",
            manifold(&d, json!({"maxAttachments": "5"}), "")
                .to_string()
                .into_bytes(),
            6,
            "invalid type: string \"5\"",
        ),
        (
            "negative readinessTimeout",
            manifold(&d, json!({"readinessTimeout": -1}), "")
                .to_string()
                .into_bytes(),
            7,
            "readinessTimeout",
        ),
        (
            "readinessTimeout not a number",
            manifold(&d, json!({"readinessTimeout": "45s"}), "")
                .to_string()
                .into_bytes(),
            7,
            "readinessTimeout",
        ),
        (
            "unknown network",
            manifold(&d, json!({}), "net-b").to_string().into_bytes(),
            7,
            "not defined",
        ),
        (
            "other namespace, isolated",
            manifold(&d, json!({"namespaceIsolation": true}), "ns2/net-a")
                .to_string()
                .into_bytes(),
            7,
            "namespaceIsolation",
        ),
        (
            "undeclared capability",
            manifold(
                &d,
                json!({}),
                r#"[{"name":"net-a","mac":"0a:58:00:00:00:01"}]"#,
            )
            .to_string()
            .into_bytes(),
            7,
            "capability",
        ),
        (
            "duplicate interface",
            manifold(&d, json!({}), "net-a@eth0")
                .to_string()
                .into_bytes(),
            7,
            "already uses",
        ),
        (
            "too many",
            manifold(&d, json!({"maxAttachments": 1}), "net-a, net-a@x1")
                .to_string()
                .into_bytes(),
            7,
            "maxAttachments",
        ),
    ];
    for (what, stdin, code, needle) in cases {
        let out = add(&stdin);
        assert_eq!(out.error_code(), code, "{what}: {out:?}");
        assert!(
            out.error_msg().contains(needle),
            "{what}: {}",
            out.error_msg()
        );
        assert!(!d.0.join("cache").exists(), "{what}: cache dir created");
    }
}

#[test]
fn check_of_an_unknown_container_fails_and_del_succeeds() {
    let d = conf_dir("verbs");
    let conf = manifold(&d, json!({}), "").to_string();
    let chk = Call::new("manifold")
        .verb("CHECK", "nope", "/var/run/netns/never-opened", "eth0")
        .run(conf.as_bytes());
    assert_eq!(chk.error_code(), 102, "{chk:?}");
    let del = Call::new("manifold")
        .verb("DEL", "nope", "", "eth0")
        .run(conf.as_bytes());
    assert_eq!(del.code, 0, "{del:?}");
    assert_eq!(
        std::fs::read_dir(d.0.join("cache/lock")).unwrap().count(),
        0,
        "no lock file left"
    );
}

/// ADD waits `readinessTimeout` for the readiness file, then gives up with
/// code 11 having touched nothing; STATUS never waits.
#[test]
fn add_waits_for_the_readiness_file_then_fails_and_status_does_not_wait() {
    let d = conf_dir("ready");
    let ready = d.0.join("ready");
    let conf = manifold(
        &d,
        json!({"readinessindicatorfile": ready.display().to_string(), "readinessTimeout": 0.3}),
        "net-a",
    );
    let t0 = std::time::Instant::now();
    let out = add(conf.to_string().as_bytes());
    let waited = t0.elapsed();
    assert_eq!(out.error_code(), 11, "{out:?}");
    assert!(
        waited >= std::time::Duration::from_millis(300),
        "{waited:?}"
    );
    assert!(
        out.error_msg().contains("after waiting 0.3s"),
        "{}",
        out.error_msg()
    );
    assert!(!d.0.join("cache").exists(), "cache dir created");

    let mut patient = conf.clone();
    patient["readinessTimeout"] = json!(45);
    let t0 = std::time::Instant::now();
    let status = Call::new("manifold")
        .verb("STATUS", "", "", "")
        .run(patient.to_string().as_bytes());
    assert_eq!(status.error_code(), 50, "{status:?}");
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(2),
        "STATUS waited"
    );
}
