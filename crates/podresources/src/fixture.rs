//! A test fake of kubelet's PodResources API: a tonic server on a Unix socket
//! in a fresh temporary directory, answering `List` with the pods it was
//! given. Kubelet cannot run on a test machine; this only stands in for its
//! `List` answer and is not a model of kubelet's behaviour.

use crate::v1::pod_resources_lister_server::{PodResourcesLister, PodResourcesListerServer};
use crate::v1::{
    ContainerDevices, ContainerResources, ListPodResourcesRequest, ListPodResourcesResponse,
    PodResources,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// One container's devices: `(resource, device IDs)` each.
pub type Devices<'a> = &'a [(&'a str, &'a [&'a str])];

/// A pod as the fake lists it: `(container, devices)` each.
pub fn pod(namespace: &str, name: &str, containers: &[(&str, Devices)]) -> PodResources {
    PodResources {
        name: name.into(),
        namespace: namespace.into(),
        containers: containers
            .iter()
            .map(|(c, devices)| ContainerResources {
                name: (*c).into(),
                devices: devices
                    .iter()
                    .map(|(r, ids)| ContainerDevices {
                        resource_name: (*r).into(),
                        device_ids: ids.iter().map(|i| (*i).into()).collect(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

struct Lister {
    pods: Vec<PodResources>,
    delay: Duration,
}

#[tonic::async_trait]
impl PodResourcesLister for Lister {
    async fn list(
        &self,
        _: tonic::Request<ListPodResourcesRequest>,
    ) -> Result<tonic::Response<ListPodResourcesResponse>, tonic::Status> {
        tokio::time::sleep(self.delay).await;
        Ok(tonic::Response::new(ListPodResourcesResponse {
            pod_resources: self.pods.clone(),
        }))
    }
}

/// The fake server; stopped, and its directory removed, on drop.
pub struct FakeKubelet {
    dir: PathBuf,
    socket: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeKubelet {
    /// Serves `pods` on `<tmp>/kubelet.sock` from a thread of its own.
    pub fn start(pods: Vec<PodResources>) -> Self {
        Self::start_slow(pods, Duration::ZERO)
    }

    /// Like [`FakeKubelet::start`], answering each `List` after `delay`.
    pub fn start_slow(pods: Vec<PodResources>, delay: Duration) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mf-podres-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the fake kubelet's directory");
        let socket = dir.join("kubelet.sock");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let listener = {
            let _guard = rt.enter();
            tokio::net::UnixListener::bind(&socket).expect("bind the fake kubelet socket")
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            rt.block_on(async move {
                tonic::transport::Server::builder()
                    .add_service(PodResourcesListerServer::new(Lister { pods, delay }))
                    .serve_with_incoming_shutdown(
                        tokio_stream::wrappers::UnixListenerStream::new(listener),
                        async {
                            let _ = stopped.await;
                        },
                    )
                    .await
                    .expect("fake kubelet server");
            })
        });
        FakeKubelet {
            dir,
            socket,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Its socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
