//! Bad input: every case fails with the right CNI error code and a message
//! naming the problem, and nothing is written to the store.

#[macro_use]
mod common;

use common::{conf, Backend, Call};
use serde_json::{json, Value};

/// (what, ipam fields, expected code, part of the message)
fn cases() -> Vec<(&'static str, Value, u64, &'static str)> {
    vec![
        (
            "overlapping ranges",
            json!({"ranges": [[{"subnet": "10.0.0.0/16"}]], "range": "10.0.5.0/24"}),
            7,
            "overlap",
        ),
        (
            "overlap inside a range set",
            json!({"ranges": [[{"subnet": "10.0.0.0/24"}, {"subnet": "10.0.0.128/25"}]]}),
            7,
            "overlap",
        ),
        (
            "invalid CIDR",
            json!({"range": "10.0.0.0/33"}),
            7,
            "not a CIDR",
        ),
        (
            "invalid range form",
            json!({"range": "10.0.0.9-banana/24"}),
            7,
            "neither a CIDR nor of the form",
        ),
        (
            "range start outside subnet",
            json!({"ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.1.5"}]]}),
            7,
            "outside subnet 10.0.0.0/24",
        ),
        (
            "range end outside subnet",
            json!({"range": "10.0.0.0/24", "range_end": "10.0.3.1"}),
            7,
            "outside subnet",
        ),
        (
            "start after end",
            json!({"range": "10.0.0.0/24", "range_start": "10.0.0.50", "range_end": "10.0.0.10"}),
            7,
            "is after range end",
        ),
        (
            "exclude covering everything",
            json!({"range": "10.0.0.0/28", "exclude": ["10.0.0.0/28"]}),
            7,
            "no address to hand out",
        ),
        (
            "IPv4 gateway in IPv6 subnet",
            json!({"ranges": [[{"subnet": "fd00::/64", "gateway": "10.0.0.1"}]]}),
            7,
            "is not an IPv6 address",
        ),
        (
            "gateway in no subnet",
            json!({"range": "10.0.0.0/24", "gateway": "10.9.0.1"}),
            7,
            "gateway 10.9.0.1",
        ),
        (
            "mixed families in a range set",
            json!({"ranges": [[{"subnet": "10.0.0.0/24"}, {"subnet": "fd00::/64"}]]}),
            7,
            "mixes IPv4 and IPv6",
        ),
        ("no range at all", json!({}), 7, "no address range"),
        (
            "network_name with ..",
            json!({"range": "10.0.0.0/24", "network_name": "../escape"}),
            7,
            "network_name \"../escape\" is invalid",
        ),
        (
            "network_name with /",
            json!({"range": "10.0.0.0/24", "network_name": "a/b"}),
            7,
            "network_name",
        ),
        (
            "network_name with NUL",
            json!({"range": "10.0.0.0/24", "network_name": "a\u{0}b"}),
            7,
            "network_name",
        ),
        (
            "empty network_name",
            json!({"range": "10.0.0.0/24", "network_name": ""}),
            7,
            "network_name",
        ),
        (
            "nodeName escaping",
            json!({"range": "10.0.0.0/24", "nodeName": "../../etc"}),
            7,
            "nodeName",
        ),
        (
            "etcd prefix escaping",
            json!({"range": "10.0.0.0/24", "etcd": {"endpoints": ["127.0.0.1:1"], "prefix": "/manifold/../other"}}),
            7,
            "prefix",
        ),
        (
            "relative node cache directory",
            json!({"range": "10.0.0.0/24", "etcd": {"endpoints": ["127.0.0.1:1"], "cacheDir": "run/cache"}}),
            7,
            "cacheDir",
        ),
        (
            "etcd without endpoints",
            json!({"range": "10.0.0.0/24", "datastore": "etcd", "etcd": {"endpoints": []}}),
            7,
            "no endpoints",
        ),
        (
            "unknown datastore",
            json!({"range": "10.0.0.0/24", "datastore": "consul"}),
            7,
            "datastore \"consul\"",
        ),
        (
            "relative dataDir",
            json!({"range": "10.0.0.0/24", "dataDir": "var/lib/x"}),
            7,
            "absolute path",
        ),
        (
            "zero lease TTL",
            json!({"range": "10.0.0.0/24", "leaseTTL": 0}),
            7,
            "leaseTTL",
        ),
        (
            "bad route",
            json!({"range": "10.0.0.0/24", "routes": [{"dst": "default"}]}),
            7,
            "route dst",
        ),
        (
            "ranges of the wrong type",
            json!({"ranges": "10.0.0.0/24"}),
            6,
            "decode ipam config",
        ),
        (
            "static IP out of every range",
            json!({"range": "10.0.0.0/24", "runtimeConfig": {"ips": ["10.7.0.1/24"]}}),
            7,
            "none of the configured ranges",
        ),
        (
            "static IP that is no IP",
            json!({"range": "10.0.0.0/24", "runtimeConfig": {"ips": ["banana"]}}),
            7,
            "runtimeConfig.ips",
        ),
    ]
}

fn is_empty(b: &Backend) -> bool {
    match b {
        Backend::Local(d) => std::fs::read_dir(&d.0).unwrap().next().is_none(),
        Backend::Etcd(_) => {
            let mut s = b.store_conf().open("_shared").unwrap();
            s.kv.scan(("\u{1}".into(), "\u{7f}".into()), true)
                .unwrap()
                .is_empty()
        }
    }
}

fn bad_config_is_refused_with_a_clear_error_and_nothing_written(b: Backend) {
    for (what, ipam, code, msg) in cases() {
        let mut c = conf(&b, ipam.clone());
        if let Some(rc) = ipam.get("runtimeConfig") {
            c["runtimeConfig"] = rc.clone();
        }
        let out = Call::new("ADD", "c1", "net1").run(&c);
        assert_ne!(out.code, 0, "{what}: accepted");
        assert_eq!(out.error_code(), code, "{what}: {out:#?}");
        assert!(
            out.error_msg().contains(msg),
            "{what}: {:?} lacks {msg:?}",
            out.error_msg()
        );
        assert!(is_empty(&b), "{what}: the store was written");
    }
}

fn bad_environment_is_refused_and_nothing_written(b: Backend) {
    let c = conf(&b, json!({"range": "10.0.0.0/24"}));
    for (what, container, ifname, args, code) in [
        ("container ID escaping", "../x", "net1", "", 4),
        ("ifname with /", "c1", "a/b", "", 4),
        ("CNI_ARGS IP not an IP", "c1", "net1", "IP=banana", 4),
    ] {
        let out = Call::new("ADD", container, ifname)
            .env("CNI_ARGS", args)
            .run(&c);
        assert_eq!(out.error_code(), code, "{what}: {out:#?}");
        assert!(is_empty(&b), "{what}: the store was written");
    }
}

fn config_without_ipam_section_is_invalid(b: Backend) {
    let c = json!({"cniVersion": "1.1.0", "name": "n", "type": "macvlan"});
    let out = Call::new("ADD", "c1", "net1").run(&c);
    assert_eq!(out.error_code(), 7);
    assert!(
        out.error_msg().contains("no \"ipam\""),
        "{}",
        out.error_msg()
    );
    assert!(is_empty(&b));
}

both_stores!(
    bad_config_is_refused_with_a_clear_error_and_nothing_written,
    bad_environment_is_refused_and_nothing_written,
    config_without_ipam_section_is_invalid,
);
