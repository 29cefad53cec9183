//! The client against the fake kubelet: filtering by pod, device order, and
//! the errors of an absent socket and a kubelet that does not answer.

use manifold_common::ErrorCode;
use manifold_podresources::fixture::{pod, FakeKubelet};
use manifold_podresources::{pod_devices, TIMEOUT};
use std::time::{Duration, Instant};

const VF: &str = "intel.com/vf";

#[test]
fn devices_of_the_named_pod_only_in_kubelets_order() {
    let kubelet = FakeKubelet::start(vec![
        pod("ns1", "other", &[("c", &[(VF, &["0000:03:02.9"])])]),
        pod(
            "ns1",
            "p",
            &[
                (
                    "a",
                    &[
                        (VF, &["0000:03:02.3", "0000:03:02.1"]),
                        ("gpu.com/g", &["g0"]),
                    ],
                ),
                ("b", &[]),
                ("c", &[(VF, &["0000:81:02.2"])]),
            ],
        ),
        pod("ns2", "p", &[("c", &[(VF, &["0000:03:02.8"])])]),
    ]);
    let d = pod_devices(kubelet.socket(), "ns1", "p").unwrap();
    assert_eq!(
        d[VF],
        ["0000:03:02.3", "0000:03:02.1", "0000:81:02.2"],
        "containers in order, each container's IDs in kubelet's order"
    );
    assert_eq!(d["gpu.com/g"], ["g0"]);
    assert_eq!(d.len(), 2);
    assert!(pod_devices(kubelet.socket(), "ns1", "nosuch")
        .unwrap()
        .is_empty());
}

#[test]
fn an_absent_socket_is_try_again_later_naming_it() {
    let kubelet = FakeKubelet::start(vec![]);
    let gone = kubelet.socket().with_file_name("nosuch.sock");
    let e = pod_devices(&gone, "ns1", "p").unwrap_err();
    assert_eq!(e.code, ErrorCode::TryAgainLater, "{e}");
    assert!(e.msg.contains(&*gone.to_string_lossy()), "{e}");
}

#[test]
fn a_kubelet_that_does_not_answer_times_out() {
    let kubelet = FakeKubelet::start_slow(
        vec![pod("ns1", "p", &[("c", &[(VF, &["x"])])])],
        TIMEOUT + Duration::from_secs(3),
    );
    let t = Instant::now();
    let e = pod_devices(kubelet.socket(), "ns1", "p").unwrap_err();
    assert!(
        t.elapsed() < TIMEOUT + Duration::from_secs(1),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(e.code, ErrorCode::TryAgainLater, "{e}");
    assert!(e.msg.contains("no answer within"), "{e}");
    assert!(e.msg.contains(&*kubelet.socket().to_string_lossy()), "{e}");
}
