//! The container runtime as the agent sees it: a narrow trait over the CRI calls it makes, and
//! its implementation as a CRI v1 gRPC client on a unix socket (our `cri`, containerd, or any
//! CRI runtime). Pod workers are tested against fakes of the trait.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

use crate::metrics::RuntimeMetrics;

/// Why a runtime call failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The runtime could not be reached.
    #[error("container runtime at {endpoint} is unreachable: {message}")]
    Unreachable {
        /// The socket.
        endpoint: String,
        /// Why.
        message: String,
    },
    /// The runtime answered with an error.
    #[error("{call}: {status}")]
    Call {
        /// The CRI call.
        call: &'static str,
        /// The gRPC status.
        status: Box<tonic::Status>,
    },
}

impl RuntimeError {
    /// The gRPC code, when the runtime answered.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            RuntimeError::Call { status, .. } => Some(status.code()),
            RuntimeError::Unreachable { .. } => None,
        }
    }

    /// The runtime's message, for statuses and events.
    pub fn message(&self) -> String {
        match self {
            RuntimeError::Call { status, .. } => status.message().to_string(),
            other => other.to_string(),
        }
    }
}

/// The CRI calls the agent makes.
#[async_trait]
pub trait ContainerRuntime: Send + Sync {
    /// Version.
    async fn version(&self) -> Result<cri::VersionResponse, RuntimeError>;
    /// Status conditions (RuntimeReady, NetworkReady).
    async fn status(&self) -> Result<Vec<cri::RuntimeCondition>, RuntimeError>;
    /// Sets the pod CIDR.
    async fn update_pod_cidr(&self, cidr: &str) -> Result<(), RuntimeError>;
    /// RunPodSandbox.
    async fn run_sandbox(&self, config: &cri::PodSandboxConfig) -> Result<String, RuntimeError>;
    /// StopPodSandbox.
    async fn stop_sandbox(&self, id: &str) -> Result<(), RuntimeError>;
    /// RemovePodSandbox.
    async fn remove_sandbox(&self, id: &str) -> Result<(), RuntimeError>;
    /// ListPodSandbox.
    async fn list_sandboxes(&self) -> Result<Vec<cri::PodSandbox>, RuntimeError>;
    /// PodSandboxStatus.
    async fn sandbox_status(&self, id: &str) -> Result<cri::PodSandboxStatus, RuntimeError>;
    /// CreateContainer.
    async fn create_container(
        &self,
        sandbox_id: &str,
        config: &cri::ContainerConfig,
        sandbox_config: &cri::PodSandboxConfig,
    ) -> Result<String, RuntimeError>;
    /// StartContainer.
    async fn start_container(&self, id: &str) -> Result<(), RuntimeError>;
    /// StopContainer.
    async fn stop_container(&self, id: &str, timeout_seconds: i64) -> Result<(), RuntimeError>;
    /// RemoveContainer.
    async fn remove_container(&self, id: &str) -> Result<(), RuntimeError>;
    /// ListContainers.
    async fn list_containers(&self) -> Result<Vec<cri::Container>, RuntimeError>;
    /// ContainerStatus.
    async fn container_status(&self, id: &str) -> Result<cri::ContainerStatus, RuntimeError>;
    /// ExecSync.
    async fn exec_sync(
        &self,
        id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<cri::ExecSyncResponse, RuntimeError>;
    /// PullImage; returns the image reference (id).
    async fn pull_image(
        &self,
        image: &str,
        auth: Option<cri::AuthConfig>,
    ) -> Result<String, RuntimeError>;
    /// ImageStatus; `None` when not present.
    async fn image_status(&self, image: &str) -> Result<Option<cri::Image>, RuntimeError>;
    /// Exec: the streaming URL serving the session.
    async fn exec(&self, request: cri::ExecRequest) -> Result<String, RuntimeError>;
    /// Attach: the streaming URL serving the session.
    async fn attach(&self, request: cri::AttachRequest) -> Result<String, RuntimeError>;
    /// PortForward: the streaming URL serving the session.
    async fn port_forward(&self, request: cri::PortForwardRequest) -> Result<String, RuntimeError>;
    /// ReopenContainerLog: the runtime starts a new file at the container's log path.
    async fn reopen_container_log(&self, id: &str) -> Result<(), RuntimeError>;
    /// ListPodSandboxStats of every pod.
    async fn list_pod_sandbox_stats(&self) -> Result<Vec<cri::PodSandboxStats>, RuntimeError>;
    /// ImageFsInfo: the image filesystems' usage.
    async fn image_fs_info(&self) -> Result<Vec<cri::FilesystemUsage>, RuntimeError>;
}

/// A CRI client on a unix socket. The connection is made lazily and remade after failures, so
/// a runtime restart is survived.
#[derive(Debug, Clone)]
pub struct CriClient {
    endpoint: PathBuf,
    channel: Channel,
    metrics: Arc<RuntimeMetrics>,
}

impl CriClient {
    /// A client for the socket at `endpoint` (`unix:///path` or a plain path).
    pub fn new(endpoint: &str) -> Result<Self, RuntimeError> {
        let path = PathBuf::from(endpoint.strip_prefix("unix://").unwrap_or(endpoint));
        let socket = path.clone();
        let channel = tonic::transport::Endpoint::from_static("http://localhost")
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(240))
            .connect_with_connector_lazy(tower::service_fn(move |_| {
                let socket = socket.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(socket).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            }));
        Ok(CriClient {
            endpoint: path,
            channel,
            metrics: Arc::new(RuntimeMetrics::default()),
        })
    }

    /// The counts and durations of this client's calls.
    pub fn metrics(&self) -> Arc<RuntimeMetrics> {
        self.metrics.clone()
    }

    /// Makes one CRI call named `name`, counting and timing it.
    async fn call<T>(
        &self,
        name: &'static str,
        request: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<tonic::Response<T>, RuntimeError> {
        let started = std::time::Instant::now();
        let result = request.await;
        self.metrics
            .record(name, started.elapsed(), result.is_err());
        result.map_err(self.error(name))
    }

    /// The socket path.
    pub fn endpoint(&self) -> &Path {
        &self.endpoint
    }

    fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel.clone()).max_decoding_message_size(16 << 20)
    }

    fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel.clone()).max_decoding_message_size(16 << 20)
    }

    fn error(&self, call: &'static str) -> impl FnOnce(tonic::Status) -> RuntimeError + '_ {
        move |status| {
            if status.code() == tonic::Code::Unavailable && status.message().contains("connect") {
                RuntimeError::Unreachable {
                    endpoint: self.endpoint.display().to_string(),
                    message: status.message().to_string(),
                }
            } else {
                RuntimeError::Call {
                    call,
                    status: Box::new(status),
                }
            }
        }
    }
}

#[async_trait]
impl ContainerRuntime for CriClient {
    async fn version(&self) -> Result<cri::VersionResponse, RuntimeError> {
        let request = cri::VersionRequest {
            version: "v1".into(),
        };
        Ok(self
            .call("Version", self.runtime().version(request))
            .await?
            .into_inner())
    }

    async fn status(&self) -> Result<Vec<cri::RuntimeCondition>, RuntimeError> {
        let reply = self
            .call(
                "Status",
                self.runtime().status(cri::StatusRequest { verbose: false }),
            )
            .await?;
        Ok(reply
            .into_inner()
            .status
            .map(|s| s.conditions)
            .unwrap_or_default())
    }

    async fn update_pod_cidr(&self, cidr: &str) -> Result<(), RuntimeError> {
        let request = cri::UpdateRuntimeConfigRequest {
            runtime_config: Some(cri::RuntimeConfig {
                network_config: Some(cri::NetworkConfig {
                    pod_cidr: cidr.into(),
                }),
            }),
        };
        self.call(
            "UpdateRuntimeConfig",
            self.runtime().update_runtime_config(request),
        )
        .await?;
        Ok(())
    }

    async fn run_sandbox(&self, config: &cri::PodSandboxConfig) -> Result<String, RuntimeError> {
        let request = cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        };
        let reply = self
            .call("RunPodSandbox", self.runtime().run_pod_sandbox(request))
            .await?;
        Ok(reply.into_inner().pod_sandbox_id)
    }

    async fn stop_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        let request = cri::StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        self.call("StopPodSandbox", self.runtime().stop_pod_sandbox(request))
            .await?;
        Ok(())
    }

    async fn remove_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        let request = cri::RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        self.call(
            "RemovePodSandbox",
            self.runtime().remove_pod_sandbox(request),
        )
        .await?;
        Ok(())
    }

    async fn list_sandboxes(&self) -> Result<Vec<cri::PodSandbox>, RuntimeError> {
        let reply = self
            .call(
                "ListPodSandbox",
                self.runtime()
                    .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }),
            )
            .await?;
        Ok(reply.into_inner().items)
    }

    async fn sandbox_status(&self, id: &str) -> Result<cri::PodSandboxStatus, RuntimeError> {
        let request = cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: false,
        };
        let reply = self
            .call(
                "PodSandboxStatus",
                self.runtime().pod_sandbox_status(request),
            )
            .await?;
        reply.into_inner().status.ok_or_else(|| RuntimeError::Call {
            call: "PodSandboxStatus",
            status: Box::new(tonic::Status::internal("the runtime returned no status")),
        })
    }

    async fn create_container(
        &self,
        sandbox_id: &str,
        config: &cri::ContainerConfig,
        sandbox_config: &cri::PodSandboxConfig,
    ) -> Result<String, RuntimeError> {
        let request = cri::CreateContainerRequest {
            pod_sandbox_id: sandbox_id.into(),
            config: Some(config.clone()),
            sandbox_config: Some(sandbox_config.clone()),
        };
        let reply = self
            .call("CreateContainer", self.runtime().create_container(request))
            .await?;
        Ok(reply.into_inner().container_id)
    }

    async fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        let request = cri::StartContainerRequest {
            container_id: id.into(),
        };
        self.call("StartContainer", self.runtime().start_container(request))
            .await?;
        Ok(())
    }

    async fn stop_container(&self, id: &str, timeout_seconds: i64) -> Result<(), RuntimeError> {
        let request = cri::StopContainerRequest {
            container_id: id.into(),
            timeout: timeout_seconds,
        };
        self.call("StopContainer", self.runtime().stop_container(request))
            .await?;
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        let request = cri::RemoveContainerRequest {
            container_id: id.into(),
        };
        self.call("RemoveContainer", self.runtime().remove_container(request))
            .await?;
        Ok(())
    }

    async fn list_containers(&self) -> Result<Vec<cri::Container>, RuntimeError> {
        let reply = self
            .call(
                "ListContainers",
                self.runtime()
                    .list_containers(cri::ListContainersRequest { filter: None }),
            )
            .await?;
        Ok(reply.into_inner().containers)
    }

    async fn container_status(&self, id: &str) -> Result<cri::ContainerStatus, RuntimeError> {
        let request = cri::ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        };
        let reply = self
            .call("ContainerStatus", self.runtime().container_status(request))
            .await?;
        reply.into_inner().status.ok_or_else(|| RuntimeError::Call {
            call: "ContainerStatus",
            status: Box::new(tonic::Status::internal("the runtime returned no status")),
        })
    }

    async fn exec_sync(
        &self,
        id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<cri::ExecSyncResponse, RuntimeError> {
        let request = cri::ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.to_vec(),
            timeout: timeout.as_secs().max(1) as i64,
        };
        Ok(self
            .call("ExecSync", self.runtime().exec_sync(request))
            .await?
            .into_inner())
    }

    async fn pull_image(
        &self,
        image: &str,
        auth: Option<cri::AuthConfig>,
    ) -> Result<String, RuntimeError> {
        let request = cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            auth,
            sandbox_config: None,
        };
        Ok(self
            .call("PullImage", self.images().pull_image(request))
            .await?
            .into_inner()
            .image_ref)
    }

    async fn image_status(&self, image: &str) -> Result<Option<cri::Image>, RuntimeError> {
        let request = cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            verbose: false,
        };
        Ok(self
            .call("ImageStatus", self.images().image_status(request))
            .await?
            .into_inner()
            .image)
    }

    async fn exec(&self, request: cri::ExecRequest) -> Result<String, RuntimeError> {
        Ok(self
            .call("Exec", self.runtime().exec(request))
            .await?
            .into_inner()
            .url)
    }

    async fn list_pod_sandbox_stats(&self) -> Result<Vec<cri::PodSandboxStats>, RuntimeError> {
        Ok(self
            .call(
                "ListPodSandboxStats",
                self.runtime()
                    .list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest { filter: None }),
            )
            .await?
            .into_inner()
            .stats)
    }

    async fn image_fs_info(&self) -> Result<Vec<cri::FilesystemUsage>, RuntimeError> {
        Ok(self
            .call(
                "ImageFsInfo",
                self.images().image_fs_info(cri::ImageFsInfoRequest {}),
            )
            .await?
            .into_inner()
            .image_filesystems)
    }

    async fn reopen_container_log(&self, id: &str) -> Result<(), RuntimeError> {
        self.call(
            "ReopenContainerLog",
            self.runtime()
                .reopen_container_log(cri::ReopenContainerLogRequest {
                    container_id: id.to_string(),
                }),
        )
        .await?;
        Ok(())
    }

    async fn attach(&self, request: cri::AttachRequest) -> Result<String, RuntimeError> {
        Ok(self
            .call("Attach", self.runtime().attach(request))
            .await?
            .into_inner()
            .url)
    }

    async fn port_forward(&self, request: cri::PortForwardRequest) -> Result<String, RuntimeError> {
        Ok(self
            .call("PortForward", self.runtime().port_forward(request))
            .await?
            .into_inner()
            .url)
    }
}
