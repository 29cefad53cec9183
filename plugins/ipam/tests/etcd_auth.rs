//! etcd with authentication on (a real etcd: root user, a `cni` user whose
//! role may read and write only the manifold-ipam prefix): the plugin
//! allocates with that user's name and password, in both spellings (ours
//! and Whereabouts' `etcd_username`/`etcd_password`), and a wrong password
//! is a clear error that writes nothing.

mod common;

use common::{Call, Etcd};
use etcd_client::{Client, ConnectOptions, GetOptions, Permission};
use serde_json::{json, Value};

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// The attachment keys (below the space's `attachments/`), read as root.
fn attachments(url: &str) -> Vec<String> {
    block_on(async {
        let opts = ConnectOptions::new().with_user("root", "root-pw");
        let mut root = Client::connect([url], Some(opts)).await.unwrap();
        let p = "/manifold/ipam/_shared/attachments/";
        let r = root
            .get(p, Some(GetOptions::new().with_prefix().with_keys_only()))
            .await
            .unwrap();
        r.kvs()
            .iter()
            .map(|kv| kv.key_str().unwrap().trim_start_matches(p).to_string())
            .collect()
    })
}

/// Turns authentication on: `root`, and `cni` with read-write on `/manifold/ipam/`.
fn enable_auth(url: &str) {
    block_on(async {
        let mut c = Client::connect([url], None).await.unwrap();
        c.user_add("root", "root-pw", None).await.unwrap();
        c.user_grant_role("root", "root").await.unwrap();
        c.role_add("manifold-ipam").await.unwrap();
        c.role_grant_permission(
            "manifold-ipam",
            Permission::read_write("/manifold/ipam/").with_prefix(),
        )
        .await
        .unwrap();
        c.user_add("cni", "cni-pw", None).await.unwrap();
        c.user_grant_role("cni", "manifold-ipam").await.unwrap();
        c.auth_enable().await.unwrap();
        // Anonymous requests are refused from now on.
        let mut anon = Client::connect([url], None).await.unwrap();
        assert!(anon.get("/manifold/ipam/x", None).await.is_err());
    });
}

fn conf(e: &Etcd, ipam: Value) -> Value {
    let mut i = json!({"type": "manifold-ipam", "range": "10.97.0.0/24", "nodeName": "node-a",
        "etcd": {"endpoints": [e.url], "requestTimeout": "2s", "dialTimeout": "1s",
                 "cacheDir": e.node_cache_dir()}});
    for (k, v) in ipam.as_object().unwrap() {
        match (k.as_str(), v) {
            ("etcd", Value::Object(o)) => {
                for (ek, ev) in o {
                    i["etcd"][ek] = ev.clone();
                }
            }
            _ => i[k] = v.clone(),
        }
    }
    json!({"cniVersion": "1.1.0", "name": "net1", "type": "macvlan", "ipam": i})
}

#[test]
fn a_user_with_the_prefix_allocates_and_a_wrong_password_is_refused() {
    let e = Etcd::start();
    enable_auth(&e.url);
    let ours = conf(
        &e,
        json!({"etcd": {"username": "cni", "password": "cni-pw"}}),
    );
    assert_eq!(
        Call::new("ADD", "c1", "net1").run(&ours).ips(),
        vec!["10.97.0.1/24"]
    );
    let whereabouts = conf(
        &e,
        json!({"etcd_username": "cni", "etcd_password": "cni-pw"}),
    );
    assert_eq!(
        Call::new("ADD", "c2", "net1").run(&whereabouts).ips(),
        vec!["10.97.0.2/24"]
    );
    for c in [&ours, &whereabouts] {
        assert_eq!(Call::new("DEL", "c1", "net1").run(c).code, 0);
    }
    let wrong = conf(&e, json!({"etcd": {"username": "cni", "password": "nope"}}));
    let out = Call::new("ADD", "c3", "net1").run(&wrong);
    assert_eq!(out.error_code(), 11, "{out:#?}");
    assert!(
        out.error_msg().contains("authentication failed"),
        "{}",
        out.error_msg()
    );
    // Nothing of c3 was written: c2 is the only holder.
    assert_eq!(attachments(&e.url), vec!["net1/c2/net1"]);
}
