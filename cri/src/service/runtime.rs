//! The CRI RuntimeService. Calls this runtime does not support yet answer UNIMPLEMENTED.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_server::RuntimeService;
use tonic::{Request, Response, Status};

use crate::runtime::{ContainerState, Runtime, RuntimeError};
use crate::sandbox::SandboxRecord;
use crate::service::stats;
use crate::stats::StatsCollector;
use crate::streaming::{self, StreamingError, server::StreamingServer, validate_stdio};

/// The RuntimeService over a [`Runtime`].
#[derive(Debug, Clone)]
pub struct RuntimeServiceImpl {
    runtime: Arc<Runtime>,
    stats: Arc<StatsCollector>,
    streaming: Option<Arc<StreamingServer>>,
}

impl RuntimeServiceImpl {
    /// Serves `runtime`.
    pub fn new(runtime: Arc<Runtime>) -> Self {
        RuntimeServiceImpl {
            runtime,
            stats: Arc::new(StatsCollector::host()),
            streaming: None,
        }
    }

    /// Serves Exec, Attach and PortForward through `server`.
    pub fn with_streaming(mut self, server: Arc<StreamingServer>) -> Self {
        self.streaming = Some(server);
        self
    }

    /// The streaming URL for `request`.
    fn stream_url(&self, request: streaming::Request) -> Result<String, Status> {
        let server = self
            .streaming
            .as_ref()
            .ok_or_else(|| unimplemented("streaming (no streaming server configured)"))?;
        server.url_for(request).map_err(|e| match e {
            StreamingError::TooManyRequests(_) => Status::resource_exhausted(e.to_string()),
            other => Status::internal(other.to_string()),
        })
    }
}

/// The version of the CRI API served.
pub const RUNTIME_API_VERSION: &str = "v1";
/// This runtime's name, as CRI Version reports it (kubelet shows `<name>://<version>`).
pub const RUNTIME_NAME: &str = "cri-lite";

impl From<RuntimeError> for Status {
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::Invalid(m) => Status::invalid_argument(m),
            RuntimeError::NotFound(m) => Status::not_found(m),
            RuntimeError::Precondition(m) => Status::failed_precondition(m),
            RuntimeError::Oci(crate::container::oci::OciError::Timeout(d)) => {
                Status::deadline_exceeded(format!("command timed out after {d:?}"))
            }
            RuntimeError::Oci(e) => Status::internal(e.to_string()),
            RuntimeError::Host(m) => Status::internal(m),
        }
    }
}

fn unimplemented(what: &str) -> Status {
    Status::unimplemented(format!("{what} is not supported by {RUNTIME_NAME} yet"))
}

pub(crate) fn labels_match(
    selector: &HashMap<String, String>,
    labels: &HashMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn sandbox_state(record: &SandboxRecord) -> i32 {
    if record.ready {
        cri::PodSandboxState::SandboxReady as i32
    } else {
        cri::PodSandboxState::SandboxNotready as i32
    }
}

fn sandbox_status(record: &SandboxRecord) -> cri::PodSandboxStatus {
    let options = record
        .config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone());
    cri::PodSandboxStatus {
        id: record.id.clone(),
        metadata: record.config.metadata.clone(),
        state: sandbox_state(record),
        created_at: record.created_at,
        network: Some(cri::PodSandboxNetworkStatus {
            ip: record.ip.map(|ip| ip.to_string()).unwrap_or_default(),
            additional_ips: vec![],
        }),
        linux: Some(cri::LinuxPodSandboxStatus {
            namespaces: Some(cri::Namespace { options }),
        }),
        labels: record.config.labels.clone(),
        annotations: record.config.annotations.clone(),
        runtime_handler: record.runtime_handler.clone(),
    }
}

fn cri_state(state: &ContainerState) -> i32 {
    (match state {
        ContainerState::Created => cri::ContainerState::ContainerCreated,
        ContainerState::Running => cri::ContainerState::ContainerRunning,
        ContainerState::Exited(_) => cri::ContainerState::ContainerExited,
        ContainerState::Unknown => cri::ContainerState::ContainerUnknown,
    }) as i32
}

impl RuntimeServiceImpl {
    fn container_status(&self, record: &crate::container::ContainerRecord) -> cri::ContainerStatus {
        let state = self.runtime.container_state(record);
        let (finished_at, exit_code, reason, message) = match &state {
            ContainerState::Exited(exit) => {
                let reason = if exit.oom_killed {
                    "OOMKilled"
                } else if exit.exit_code == 0 {
                    "Completed"
                } else {
                    "Error"
                };
                (
                    exit.finished_at,
                    exit.exit_code,
                    reason.to_string(),
                    String::new(),
                )
            }
            ContainerState::Unknown => (
                0,
                255,
                "Unknown".to_string(),
                "the container's monitor is gone".to_string(),
            ),
            _ => (0, 0, String::new(), String::new()),
        };
        cri::ContainerStatus {
            id: record.id.clone(),
            metadata: record.config.metadata.clone(),
            state: cri_state(&state),
            created_at: record.created_at,
            started_at: record.started_at.unwrap_or(0),
            finished_at,
            exit_code,
            image: record.config.image.clone(),
            image_ref: record.image_id.clone(),
            image_id: record.image_id.clone(),
            reason,
            message,
            labels: record.config.labels.clone(),
            annotations: record.config.annotations.clone(),
            mounts: record.config.mounts.clone(),
            log_path: record
                .log_path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            resources: record
                .config
                .linux
                .as_ref()
                .and_then(|l| l.resources.clone())
                .map(|r| cri::ContainerResources {
                    linux: Some(r),
                    windows: None,
                }),
            user: None,
        }
    }
}

type EventStream = Pin<
    Box<dyn futures::Stream<Item = Result<cri::ContainerEventResponse, Status>> + Send + 'static>,
>;

#[tonic::async_trait]
impl RuntimeService for RuntimeServiceImpl {
    async fn version(
        &self,
        _: Request<cri::VersionRequest>,
    ) -> Result<Response<cri::VersionResponse>, Status> {
        Ok(Response::new(cri::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: RUNTIME_NAME.into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: RUNTIME_API_VERSION.into(),
        }))
    }

    async fn run_pod_sandbox(
        &self,
        request: Request<cri::RunPodSandboxRequest>,
    ) -> Result<Response<cri::RunPodSandboxResponse>, Status> {
        let request = request.into_inner();
        let config = request
            .config
            .ok_or_else(|| Status::invalid_argument("sandbox config is required"))?;
        let id = self
            .runtime
            .run_sandbox(config, &request.runtime_handler)
            .await?;
        Ok(Response::new(cri::RunPodSandboxResponse {
            pod_sandbox_id: id,
        }))
    }

    async fn stop_pod_sandbox(
        &self,
        request: Request<cri::StopPodSandboxRequest>,
    ) -> Result<Response<cri::StopPodSandboxResponse>, Status> {
        self.runtime
            .stop_sandbox(&request.into_inner().pod_sandbox_id)
            .await?;
        Ok(Response::new(cri::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        request: Request<cri::RemovePodSandboxRequest>,
    ) -> Result<Response<cri::RemovePodSandboxResponse>, Status> {
        self.runtime
            .remove_sandbox(&request.into_inner().pod_sandbox_id)
            .await?;
        Ok(Response::new(cri::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        request: Request<cri::PodSandboxStatusRequest>,
    ) -> Result<Response<cri::PodSandboxStatusResponse>, Status> {
        let request = request.into_inner();
        let record = self
            .runtime
            .sandbox(&request.pod_sandbox_id)
            .ok_or_else(|| {
                Status::not_found(format!("sandbox {:?} not found", request.pod_sandbox_id))
            })?;
        let mut info = HashMap::new();
        if request.verbose {
            let verbose = serde_json::json!({
                "pid": 0,
                "netns": record.netns,
                "ipcns": record.ipcns,
                "utsns": record.utsns,
                "cgroupParent": record.cgroup_parent,
                "hostPorts": record.host_ports,
                "runtimeHandler": record.runtime_handler,
                "config": record.config,
            });
            info.insert("info".to_string(), verbose.to_string());
        }
        Ok(Response::new(cri::PodSandboxStatusResponse {
            status: Some(sandbox_status(&record)),
            info,
            containers_statuses: vec![],
            timestamp: jiff::Timestamp::now().as_nanosecond() as i64,
        }))
    }

    async fn list_pod_sandbox(
        &self,
        request: Request<cri::ListPodSandboxRequest>,
    ) -> Result<Response<cri::ListPodSandboxResponse>, Status> {
        let filter = request.into_inner().filter.unwrap_or_default();
        let items = self
            .runtime
            .sandboxes()
            .into_iter()
            .filter(|s| filter.id.is_empty() || s.id.starts_with(&filter.id))
            .filter(|s| {
                filter
                    .state
                    .as_ref()
                    .is_none_or(|v| v.state == sandbox_state(s))
            })
            .filter(|s| labels_match(&filter.label_selector, &s.config.labels))
            .map(|s| cri::PodSandbox {
                id: s.id.clone(),
                metadata: s.config.metadata.clone(),
                state: sandbox_state(&s),
                created_at: s.created_at,
                labels: s.config.labels.clone(),
                annotations: s.config.annotations.clone(),
                runtime_handler: s.runtime_handler.clone(),
            })
            .collect();
        Ok(Response::new(cri::ListPodSandboxResponse { items }))
    }

    async fn create_container(
        &self,
        request: Request<cri::CreateContainerRequest>,
    ) -> Result<Response<cri::CreateContainerResponse>, Status> {
        let request = request.into_inner();
        let config = request
            .config
            .ok_or_else(|| Status::invalid_argument("container config is required"))?;
        let id = self
            .runtime
            .create_container(&request.pod_sandbox_id, config)
            .await?;
        Ok(Response::new(cri::CreateContainerResponse {
            container_id: id,
        }))
    }

    async fn start_container(
        &self,
        request: Request<cri::StartContainerRequest>,
    ) -> Result<Response<cri::StartContainerResponse>, Status> {
        self.runtime
            .start_container(&request.into_inner().container_id)
            .await?;
        Ok(Response::new(cri::StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        request: Request<cri::StopContainerRequest>,
    ) -> Result<Response<cri::StopContainerResponse>, Status> {
        let request = request.into_inner();
        match self
            .runtime
            .stop_container(&request.container_id, request.timeout)
            .await
        {
            Ok(()) | Err(RuntimeError::NotFound(_)) => {
                Ok(Response::new(cri::StopContainerResponse {}))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn remove_container(
        &self,
        request: Request<cri::RemoveContainerRequest>,
    ) -> Result<Response<cri::RemoveContainerResponse>, Status> {
        self.runtime
            .remove_container(&request.into_inner().container_id)
            .await?;
        Ok(Response::new(cri::RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        request: Request<cri::ListContainersRequest>,
    ) -> Result<Response<cri::ListContainersResponse>, Status> {
        let filter = request.into_inner().filter.unwrap_or_default();
        let containers = self
            .runtime
            .containers()
            .into_iter()
            .filter(|c| filter.id.is_empty() || c.id.starts_with(&filter.id))
            .filter(|c| {
                filter.pod_sandbox_id.is_empty() || c.sandbox_id.starts_with(&filter.pod_sandbox_id)
            })
            .filter(|c| labels_match(&filter.label_selector, &c.config.labels))
            .filter_map(|c| {
                let state = cri_state(&self.runtime.container_state(&c));
                filter
                    .state
                    .as_ref()
                    .is_none_or(|v| v.state == state)
                    .then(|| cri::Container {
                        id: c.id.clone(),
                        pod_sandbox_id: c.sandbox_id.clone(),
                        metadata: c.config.metadata.clone(),
                        image: c.config.image.clone(),
                        image_ref: c.image_id.clone(),
                        image_id: c.image_id.clone(),
                        state,
                        created_at: c.created_at,
                        labels: c.config.labels.clone(),
                        annotations: c.config.annotations.clone(),
                    })
            })
            .collect();
        Ok(Response::new(cri::ListContainersResponse { containers }))
    }

    async fn container_status(
        &self,
        request: Request<cri::ContainerStatusRequest>,
    ) -> Result<Response<cri::ContainerStatusResponse>, Status> {
        let request = request.into_inner();
        let record = self
            .runtime
            .container(&request.container_id)
            .ok_or_else(|| {
                Status::not_found(format!("container {:?} not found", request.container_id))
            })?;
        let mut info = HashMap::new();
        if request.verbose {
            let verbose = serde_json::json!({
                "sandboxID": record.sandbox_id,
                "pid": record.pid,
                "monitorPid": record.monitor_pid,
                "cgroupsPath": record.cgroups_path,
                "imageRef": record.image_ref,
                "config": record.config,
            });
            info.insert("info".to_string(), verbose.to_string());
        }
        Ok(Response::new(cri::ContainerStatusResponse {
            status: Some(self.container_status(&record)),
            info,
        }))
    }

    async fn update_container_resources(
        &self,
        request: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Result<Response<cri::UpdateContainerResourcesResponse>, Status> {
        let request = request.into_inner();
        if let Some(linux) = request.linux.as_ref() {
            self.runtime
                .update_resources(&request.container_id, linux)
                .await?;
        }
        Ok(Response::new(cri::UpdateContainerResourcesResponse {}))
    }

    async fn reopen_container_log(
        &self,
        request: Request<cri::ReopenContainerLogRequest>,
    ) -> Result<Response<cri::ReopenContainerLogResponse>, Status> {
        self.runtime
            .reopen_log(&request.into_inner().container_id)?;
        Ok(Response::new(cri::ReopenContainerLogResponse {}))
    }

    async fn exec_sync(
        &self,
        request: Request<cri::ExecSyncRequest>,
    ) -> Result<Response<cri::ExecSyncResponse>, Status> {
        let request = request.into_inner();
        let timeout = (request.timeout > 0).then(|| Duration::from_secs(request.timeout as u64));
        let out = self
            .runtime
            .exec_sync(&request.container_id, &request.cmd, timeout)
            .await?;
        Ok(Response::new(cri::ExecSyncResponse {
            stdout: out.stdout,
            stderr: out.stderr,
            exit_code: out.exit_code,
        }))
    }

    async fn exec(
        &self,
        request: Request<cri::ExecRequest>,
    ) -> Result<Response<cri::ExecResponse>, Status> {
        let request = request.into_inner();
        if request.cmd.is_empty() {
            return Err(Status::invalid_argument("cmd must not be empty"));
        }
        validate_stdio(request.stdin, request.stdout, request.stderr, request.tty)
            .map_err(Status::invalid_argument)?;
        let record = self.runtime.running_container(&request.container_id)?;
        let url = self.stream_url(streaming::Request::Exec(cri::ExecRequest {
            container_id: record.id,
            ..request
        }))?;
        Ok(Response::new(cri::ExecResponse { url }))
    }

    async fn attach(
        &self,
        request: Request<cri::AttachRequest>,
    ) -> Result<Response<cri::AttachResponse>, Status> {
        let request = request.into_inner();
        validate_stdio(request.stdin, request.stdout, request.stderr, request.tty)
            .map_err(Status::invalid_argument)?;
        let record = self.runtime.running_container(&request.container_id)?;
        let url = self.stream_url(streaming::Request::Attach(cri::AttachRequest {
            container_id: record.id,
            ..request
        }))?;
        Ok(Response::new(cri::AttachResponse { url }))
    }

    async fn port_forward(
        &self,
        request: Request<cri::PortForwardRequest>,
    ) -> Result<Response<cri::PortForwardResponse>, Status> {
        let request = request.into_inner();
        let sandbox = self
            .runtime
            .sandbox(&request.pod_sandbox_id)
            .ok_or_else(|| {
                Status::not_found(format!("sandbox {:?} not found", request.pod_sandbox_id))
            })?;
        if !sandbox.ready {
            return Err(Status::failed_precondition(format!(
                "sandbox {} is not ready",
                sandbox.id
            )));
        }
        let url = self.stream_url(streaming::Request::PortForward(cri::PortForwardRequest {
            pod_sandbox_id: sandbox.id,
            ..request
        }))?;
        Ok(Response::new(cri::PortForwardResponse { url }))
    }

    async fn container_stats(
        &self,
        request: Request<cri::ContainerStatsRequest>,
    ) -> Result<Response<cri::ContainerStatsResponse>, Status> {
        let id = request.into_inner().container_id;
        stats::container_stats(&self.runtime, &self.stats, id)
            .await
            .map(Response::new)
    }

    async fn list_container_stats(
        &self,
        request: Request<cri::ListContainerStatsRequest>,
    ) -> Result<Response<cri::ListContainerStatsResponse>, Status> {
        let filter = request.into_inner().filter.unwrap_or_default();
        stats::list_container_stats(&self.runtime, &self.stats, filter)
            .await
            .map(Response::new)
    }

    async fn pod_sandbox_stats(
        &self,
        request: Request<cri::PodSandboxStatsRequest>,
    ) -> Result<Response<cri::PodSandboxStatsResponse>, Status> {
        let id = request.into_inner().pod_sandbox_id;
        stats::pod_sandbox_stats(&self.runtime, &self.stats, id)
            .await
            .map(Response::new)
    }

    async fn list_pod_sandbox_stats(
        &self,
        request: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Result<Response<cri::ListPodSandboxStatsResponse>, Status> {
        let filter = request.into_inner().filter.unwrap_or_default();
        stats::list_pod_sandbox_stats(&self.runtime, &self.stats, filter)
            .await
            .map(Response::new)
    }

    async fn update_runtime_config(
        &self,
        request: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<cri::UpdateRuntimeConfigResponse>, Status> {
        let cidr = request
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        self.runtime.set_pod_cidr(&cidr).await?;
        Ok(Response::new(cri::UpdateRuntimeConfigResponse {}))
    }

    async fn status(
        &self,
        _: Request<cri::StatusRequest>,
    ) -> Result<Response<cri::StatusResponse>, Status> {
        let runtime_ready = self.runtime.oci_version().await;
        let network_ready = self.runtime.network_ready();
        let condition =
            |type_: &str, result: Result<(), String>, reason: &str| cri::RuntimeCondition {
                r#type: type_.into(),
                status: result.is_ok(),
                reason: if result.is_ok() {
                    String::new()
                } else {
                    reason.into()
                },
                message: result.err().unwrap_or_default(),
            };
        Ok(Response::new(cri::StatusResponse {
            status: Some(cri::RuntimeStatus {
                conditions: vec![
                    condition(
                        "RuntimeReady",
                        runtime_ready.map(|_| ()).map_err(|e| e.to_string()),
                        "OCIRuntimeNotReady",
                    ),
                    condition("NetworkReady", network_ready, "NetworkPluginNotReady"),
                ],
            }),
            info: HashMap::new(),
            runtime_handlers: vec![cri::RuntimeHandler {
                name: String::new(),
                features: Some(cri::RuntimeHandlerFeatures::default()),
            }],
            features: Some(cri::RuntimeFeatures::default()),
        }))
    }

    async fn checkpoint_container(
        &self,
        _: Request<cri::CheckpointContainerRequest>,
    ) -> Result<Response<cri::CheckpointContainerResponse>, Status> {
        Err(unimplemented("CheckpointContainer"))
    }

    type GetContainerEventsStream = EventStream;

    async fn get_container_events(
        &self,
        _: Request<cri::GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        Err(unimplemented("GetContainerEvents"))
    }

    async fn list_metric_descriptors(
        &self,
        _: Request<cri::ListMetricDescriptorsRequest>,
    ) -> Result<Response<cri::ListMetricDescriptorsResponse>, Status> {
        Err(unimplemented("ListMetricDescriptors"))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> Result<Response<cri::ListPodSandboxMetricsResponse>, Status> {
        Err(unimplemented("ListPodSandboxMetrics"))
    }

    async fn runtime_config(
        &self,
        _: Request<cri::RuntimeConfigRequest>,
    ) -> Result<Response<cri::RuntimeConfigResponse>, Status> {
        Ok(Response::new(cri::RuntimeConfigResponse {
            linux: Some(cri::LinuxRuntimeConfiguration {
                cgroup_driver: cri::CgroupDriver::Cgroupfs as i32,
            }),
        }))
    }
}
