//! A small CRI client for the containerd test lane: the `runtime.v1` API
//! generated with tonic from the CRI `api.proto` (k8s.io/cri-api v0.25.0,
//! commit ad0a886, in `proto/`), behind a blocking wrapper, and the pod
//! sandbox configuration kubelet sends for a pod.
//!
//! Each [`CriClient`] owns a single-threaded tokio runtime and one connection
//! to the runtime's Unix socket, so a test thread makes its own client and
//! concurrent pods are concurrent threads.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The generated `runtime.v1` messages and clients.
#[allow(clippy::all, missing_docs)]
pub mod runtime {
    tonic::include_proto!("runtime.v1");
}

use runtime::image_service_client::ImageServiceClient;
use runtime::runtime_service_client::RuntimeServiceClient;
use runtime::{
    DnsConfig, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, ListImagesRequest,
    ListPodSandboxRequest, NamespaceMode, NamespaceOption, PodSandbox, PodSandboxConfig,
    PodSandboxMetadata, PodSandboxStatusRequest, PodSandboxStatusResponse, RemovePodSandboxRequest,
    RunPodSandboxRequest, SecurityProfile, StopPodSandboxRequest,
};

/// Why a call failed: no connection, or the runtime's gRPC status.
#[derive(Debug)]
pub enum Error {
    /// Connecting to the socket failed.
    Connect(String),
    /// The runtime answered with an error.
    Status(tonic::Status),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Connect(e) => write!(f, "connect: {e}"),
            Error::Status(s) => write!(f, "{:?}: {}", s.code(), s.message()),
        }
    }
}

impl std::error::Error for Error {}

impl From<tonic::Status> for Error {
    fn from(s: tonic::Status) -> Self {
        Error::Status(s)
    }
}

/// A blocking client of a CRI runtime's RuntimeService and ImageService.
pub struct CriClient {
    rt: tokio::runtime::Runtime,
    runtime: RuntimeServiceClient<tonic::transport::Channel>,
    images: ImageServiceClient<tonic::transport::Channel>,
}

impl CriClient {
    /// Connects to the runtime's gRPC Unix socket (as kubelet's
    /// `--container-runtime-endpoint unix://...`).
    pub fn connect(socket: &Path) -> Result<Self, Error> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Connect(e.to_string()))?;
        let path = socket.to_path_buf();
        let channel = rt
            .block_on(async move {
                // The URI is required by the API but unused: every connection goes to the socket.
                tonic::transport::Endpoint::try_from("http://[::]:0")?
                    .connect_timeout(Duration::from_secs(5))
                    .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                        let path = path.clone();
                        async move {
                            let s = tokio::net::UnixStream::connect(path).await?;
                            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
                        }
                    }))
                    .await
            })
            .map_err(|e| Error::Connect(format!("{}: {e:?}", socket.display())))?;
        Ok(CriClient {
            rt,
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        })
    }

    /// `Version`: (runtime name, runtime version, CRI API version).
    pub fn version(&mut self) -> Result<(String, String, String), Error> {
        let r = self
            .rt
            .block_on(self.runtime.version(runtime::VersionRequest {
                version: "v1".into(),
            }))?
            .into_inner();
        Ok((r.runtime_name, r.runtime_version, r.runtime_api_version))
    }

    /// `Status`: whether the runtime reports the `NetworkReady` condition
    /// (its CNI configuration loaded), as kubelet checks before starting pods.
    pub fn network_ready(&mut self) -> Result<bool, Error> {
        let r = self
            .rt
            .block_on(
                self.runtime
                    .status(runtime::StatusRequest { verbose: false }),
            )?
            .into_inner();
        Ok(r.status.is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.r#type == "NetworkReady" && c.status)
        }))
    }

    /// `RunPodSandbox` with the default runtime handler; returns the sandbox ID.
    pub fn run_pod_sandbox(&mut self, config: PodSandboxConfig) -> Result<String, Error> {
        let r = self
            .rt
            .block_on(self.runtime.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            }))?;
        Ok(r.into_inner().pod_sandbox_id)
    }

    /// `PodSandboxStatus`, verbose (the `info` map holds containerd's JSON
    /// with the pause PID, the runtime spec and the CNI result).
    pub fn pod_sandbox_status(&mut self, id: &str) -> Result<PodSandboxStatusResponse, Error> {
        let r = self
            .rt
            .block_on(self.runtime.pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: true,
            }))?;
        Ok(r.into_inner())
    }

    /// `StopPodSandbox`.
    pub fn stop_pod_sandbox(&mut self, id: &str) -> Result<(), Error> {
        self.rt
            .block_on(self.runtime.stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.into(),
            }))?;
        Ok(())
    }

    /// `RemovePodSandbox`.
    pub fn remove_pod_sandbox(&mut self, id: &str) -> Result<(), Error> {
        self.rt
            .block_on(self.runtime.remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: id.into(),
            }))?;
        Ok(())
    }

    /// `ListPodSandbox` without a filter: every sandbox, ready or not.
    pub fn list_pod_sandbox(&mut self) -> Result<Vec<PodSandbox>, Error> {
        let r = self.rt.block_on(
            self.runtime
                .list_pod_sandbox(ListPodSandboxRequest { filter: None }),
        )?;
        Ok(r.into_inner().items)
    }

    /// `ListImages`: every image's repo tags.
    pub fn list_image_tags(&mut self) -> Result<Vec<String>, Error> {
        let r = self
            .rt
            .block_on(self.images.list_images(ListImagesRequest { filter: None }))?;
        Ok(r.into_inner()
            .images
            .into_iter()
            .flat_map(|i| i.repo_tags)
            .collect())
    }
}

/// A pod as kubelet describes it to the runtime: metadata and annotations.
#[derive(Debug, Clone)]
pub struct Pod {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.labels`.
    pub labels: HashMap<String, String>,
    /// `metadata.annotations`.
    pub annotations: HashMap<String, String>,
}

impl Pod {
    /// A pod with a fresh UID (UUID-shaped, unique per process and call) and
    /// the annotations kubelet adds to every pod it runs.
    pub fn new(namespace: &str, name: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let uid = format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            std::process::id(),
            n & 0xffff,
            (nanos >> 48) & 0xfff,
            (nanos >> 36) & 0xfff,
            nanos & 0xffff_ffff_ffff
        );
        let annotations = HashMap::from([
            ("kubernetes.io/config.source".to_string(), "api".to_string()),
            (
                "kubernetes.io/config.seen".to_string(),
                "2026-01-01T00:00:00.000000000Z".to_string(),
            ),
        ]);
        Pod {
            name: name.into(),
            namespace: namespace.into(),
            uid,
            labels: HashMap::new(),
            annotations,
        }
    }

    /// Adds an annotation.
    pub fn annotate(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }

    /// The `PodSandboxConfig` kubelet (1.25, cgroupfs driver, pod network,
    /// ClusterFirst DNS, default seccomp off) sends for this pod: metadata,
    /// hostname, log directory under `log_root`, DNS, the `io.kubernetes.pod.*`
    /// labels, the pod's annotations, and the Linux part with the cgroup
    /// parent `<cgroup_root>/pod<uid>` and pod-scoped network and IPC namespaces.
    pub fn sandbox_config(&self, log_root: &Path, cgroup_root: &str) -> PodSandboxConfig {
        let mut labels = self.labels.clone();
        labels.insert("io.kubernetes.pod.name".into(), self.name.clone());
        labels.insert("io.kubernetes.pod.namespace".into(), self.namespace.clone());
        labels.insert("io.kubernetes.pod.uid".into(), self.uid.clone());
        let log_directory: PathBuf =
            log_root.join(format!("{}_{}_{}", self.namespace, self.name, self.uid));
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: self.name.clone(),
                uid: self.uid.clone(),
                namespace: self.namespace.clone(),
                attempt: 0,
            }),
            hostname: self.name.clone(),
            log_directory: log_directory.display().to_string(),
            dns_config: Some(DnsConfig {
                servers: vec!["10.96.0.10".into()],
                searches: vec![
                    format!("{}.svc.cluster.local", self.namespace),
                    "svc.cluster.local".into(),
                    "cluster.local".into(),
                ],
                options: vec!["ndots:5".into()],
            }),
            port_mappings: Vec::new(),
            labels,
            annotations: self.annotations.clone(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: format!("{cgroup_root}/pod{}", self.uid),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Pod as i32,
                        pid: NamespaceMode::Container as i32,
                        ipc: NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    seccomp: Some(SecurityProfile {
                        profile_type: runtime::security_profile::ProfileType::Unconfined as i32,
                        localhost_ref: String::new(),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            windows: None,
        }
    }
}
