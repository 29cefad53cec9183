//! etcd over TLS with client certificates: the `tls` settings work, and a
//! client without a certificate gets a clear error, not a hang.

mod common;

use common::{Call, Certs, Etcd};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn conf(e: &Etcd, tls: Value) -> Value {
    json!({"cniVersion": "1.1.0", "name": "net1", "type": "macvlan", "ipam": {
        "type": "manifold-ipam", "range": "10.95.0.0/24", "nodeName": "node-a",
        "etcd": {"endpoints": [e.url], "tls": tls, "requestTimeout": "2s", "dialTimeout": "1s",
                 "cacheDir": e.node_cache_dir()}}})
}

#[test]
fn tls_with_client_certificate_allocates_and_without_one_fails_with_code_11() {
    let certs = Certs::generate();
    let e = Etcd::start_tls(&certs);
    let full = json!({"ca": certs.path("ca.pem"), "cert": certs.path("client.pem"), "key": certs.path("client-key.pem")});
    let out = Call::new("ADD", "c1", "net1").run(&conf(&e, full));
    assert_eq!(out.ips(), vec!["10.95.0.1/24"]);
    let t = Instant::now();
    let out = Call::new("ADD", "c2", "net1").run(&conf(&e, json!({"ca": certs.path("ca.pem")})));
    assert_eq!(out.error_code(), 11, "{out:#?}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let out = Call::new("ADD", "c3", "net1").run(&conf(&e, json!({"ca": "/nonexistent/ca.pem"})));
    assert_eq!(out.error_code(), 7);
    assert!(
        out.error_msg().contains("/nonexistent/ca.pem"),
        "{}",
        out.error_msg()
    );
}
