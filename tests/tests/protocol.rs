//! CNI protocol behaviour of the built plugins, without privileges: VERSION,
//! version gating of verbs, environment validation, DEL without a netns.

use manifold_tests::Call;
use serde_json::json;

const PLUGINS: [&str; 2] = ["manifold-macvlan", "manifold-ipvlan"];

fn conf(version: &str, plugin: &str) -> Vec<u8> {
    json!({"cniVersion": version, "name": "net-a", "type": plugin, "master": "eth0"})
        .to_string()
        .into_bytes()
}

#[test]
fn version_reports_every_supported_version() {
    for p in PLUGINS {
        let out = Call::new(p)
            .env("CNI_COMMAND", "VERSION")
            .run(br#"{"cniVersion":"1.1.0"}"#);
        assert_eq!(
            out.result(),
            &json!({"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}),
            "{p}"
        );
    }
}

#[test]
fn version_needs_no_stdin_or_other_env() {
    let out = Call::new("manifold-macvlan")
        .env("CNI_COMMAND", "VERSION")
        .run(b"");
    assert_eq!(out.result()["cniVersion"], "1.1.0");
}

#[test]
fn check_is_refused_below_0_4_0_with_code_1() {
    for v in ["0.3.0", "0.3.1"] {
        let out = Call::new("manifold-macvlan")
            .verb("CHECK", "c1", "/var/run/netns/none", "net1")
            .run(&conf(v, "manifold-macvlan"));
        assert_eq!(out.error_code(), 1, "{v}: {out:?}");
        assert_eq!(out.json.as_ref().unwrap()["cniVersion"], v);
    }
}

#[test]
fn gc_and_status_are_refused_below_1_1_0_with_code_1() {
    for verb in ["GC", "STATUS"] {
        let out = Call::new("manifold-macvlan")
            .env("CNI_COMMAND", verb)
            .run(&conf("1.0.0", "manifold-macvlan"));
        assert_eq!(out.error_code(), 1, "{verb}: {out:?}");
    }
}

#[test]
fn status_without_ipam_is_ready() {
    for p in PLUGINS {
        let out = Call::new(p)
            .env("CNI_COMMAND", "STATUS")
            .run(&conf("1.1.0", p));
        assert_eq!(out.code, 0, "{p}: {out:?}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn del_with_empty_netns_succeeds_silently() {
    for p in PLUGINS {
        let out = Call::new(p)
            .verb("DEL", "c1", "", "net1")
            .run(&conf("1.0.0", p));
        assert_eq!(out.code, 0, "{p}: {out:?}");
        assert_eq!(out.stdout, "");
    }
}

#[test]
fn del_with_vanished_netns_succeeds() {
    for p in PLUGINS {
        let out = Call::new(p)
            .verb("DEL", "c1", "/var/run/netns/manifold-no-such-netns", "net1")
            .run(&conf("1.0.0", p));
        assert_eq!(out.code, 0, "{p}: {out:?}");
    }
}

#[test]
fn add_into_missing_netns_is_code_3() {
    let out = Call::new("manifold-macvlan")
        .verb("ADD", "c1", "/var/run/netns/manifold-no-such-netns", "net1")
        .run(&conf("1.0.0", "manifold-macvlan"));
    assert_eq!(out.error_code(), 3, "{out:?}");
    assert!(
        out.error_msg().contains("manifold-no-such-netns"),
        "{out:?}"
    );
}

#[test]
fn errors_are_spec_json_on_stdout_and_nothing_on_success_paths_leaks_to_stdout() {
    let out = Call::new("manifold-ipvlan")
        .verb("ADD", "c1", "/var/run/netns/x", "net1")
        .run(b"{not json");
    assert_eq!(out.error_code(), 6);
    let j = out.json.unwrap();
    let keys: Vec<&str> = j.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["cniVersion", "code", "msg"]);
    assert_ne!(out.code, 0);
}
