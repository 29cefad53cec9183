//! Unprivileged tests of the built binary: bad input is refused with the
//! CNI error JSON and the right code before anything on the node is read or
//! changed; DEL of an attachment that never existed succeeds.

use serde_json::{json, Value};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("mfs-cli-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(p.join("sys/bus/pci/devices")).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the plugin; returns (exit code, stdout JSON).
fn run(s: &Scratch, verb: &str, conf: &Value) -> (i32, Value) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_manifold-sriov"))
        .env_clear()
        .env("CNI_COMMAND", verb)
        .env("CNI_CONTAINERID", "cli1")
        .env("CNI_NETNS", "/var/run/netns/mfs-cli-does-not-exist")
        .env("CNI_IFNAME", "net1")
        .env("CNI_PATH", "/nonexistent")
        .env("MANIFOLD_SRIOV_SYSFS_ROOT", s.0.join("sys"))
        .env("MANIFOLD_SRIOV_TEST_PF_RECORD", s.0.join("pf"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start manifold-sriov");
    // VERSION exits without reading stdin: a broken pipe is fine.
    let _ = child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes());
    let out = child.wait_with_output().unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), json)
}

fn conf(s: &Scratch, extra: Value) -> Value {
    let mut c = json!({"cniVersion": "1.0.0", "name": "sriovnet", "type": "manifold-sriov",
                       "deviceID": "0000:03:00.1", "dataDir": s.0.join("state").display().to_string()});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

#[test]
fn bad_config_is_code_7_and_touches_nothing() {
    let s = Scratch::new("bad");
    for extra in [
        json!({"deviceID": "../../../../dev/null"}),
        json!({"deviceID": "0000:03:00.1/.."}),
        json!({"deviceID": "0000:03:00.9"}),
        json!({"deviceID": "0000:03:00.1"}),
        json!({"vlan": 4095}),
        json!({"vlan": 10, "vlanQoS": 9}),
        json!({"vlanProto": "802.1ad"}),
        json!({"link_state": "on"}),
        json!({"spoofchk": "maybe"}),
        json!({"min_tx_rate": 200, "max_tx_rate": 100}),
        json!({"runtimeConfig": {"mac": "ff:ff:ff:ff:ff:ff"}}),
    ] {
        let (code, out) = run(&s, "ADD", &conf(&s, extra.clone()));
        assert_eq!(code, 1, "{extra}: {out}");
        assert_eq!(out["code"], 7, "{extra}: {out}");
        assert_eq!(out["cniVersion"], "1.0.0");
        assert!(!out["msg"].as_str().unwrap().is_empty());
    }
    assert!(!s.0.join("state").exists(), "no state written");
    assert!(!s.0.join("pf").exists(), "no PF change");
}

#[test]
fn del_of_an_unknown_attachment_succeeds_and_version_answers() {
    let s = Scratch::new("del");
    let (code, out) = run(&s, "DEL", &conf(&s, json!({})));
    assert_eq!((code, out), (0, Value::Null));
    let (code, out) = run(&s, "VERSION", &json!({"cniVersion": "1.1.0"}));
    assert_eq!(code, 0);
    assert!(out["supportedVersions"]
        .as_array()
        .unwrap()
        .contains(&json!("1.1.0")));
    let (code, out) = run(
        &s,
        "CHECK",
        &conf(&s, json!({"prevResult": {"cniVersion": "1.0.0"}})),
    );
    assert_eq!(code, 1);
    assert_eq!(out["code"], 102, "{out}");
}
