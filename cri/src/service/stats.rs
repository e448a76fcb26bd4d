//! The stats calls of the RuntimeService (ContainerStats, ListContainerStats,
//! PodSandboxStats, ListPodSandboxStats): which records a request selects, and the
//! [`StatsCollector`] run off the async threads (it reads files and joins namespaces).
//! As containerd does, lists leave out what they cannot measure (with a warning) and pod
//! lists leave out pods that are not ready; a single pod that is not ready is UNAVAILABLE.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use k8s_cri::v1 as cri;
use tonic::Status;
use tracing::warn;

use crate::container::ContainerRecord;
use crate::disk::mountpoint_of;
use crate::runtime::Runtime;
use crate::sandbox::SandboxRecord;
use crate::service::runtime::labels_match;
use crate::stats::{StatsCollector, StatsError, WritableLayer};

fn internal(e: StatsError) -> Status {
    Status::internal(e.to_string())
}

/// Runs `work` with the runtime and collector on a blocking thread.
async fn blocking<T: Send + 'static>(
    runtime: &Arc<Runtime>,
    collector: &Arc<StatsCollector>,
    work: impl FnOnce(&Runtime, &StatsCollector, i64) -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    let runtime = runtime.clone();
    let collector = collector.clone();
    tokio::task::spawn_blocking(move || {
        let now = jiff::Timestamp::now().as_nanosecond() as i64;
        work(&runtime, &collector, now)
    })
    .await
    .map_err(|e| Status::internal(format!("stats worker: {e}")))?
}

fn image_fs_mountpoint(runtime: &Runtime) -> Result<PathBuf, Status> {
    mountpoint_of(&runtime.options().root).map_err(|e| internal(e.into()))
}

fn one_container(
    runtime: &Runtime,
    collector: &StatsCollector,
    record: &ContainerRecord,
    mountpoint: &std::path::Path,
    now: i64,
) -> Result<cri::ContainerStats, StatsError> {
    let dir = runtime.writable_layer_dir(&record.id);
    collector.container(
        record,
        WritableLayer {
            dir: &dir,
            mountpoint,
        },
        now,
    )
}

/// Stats of every container in `records`; ones that fail are logged and left out.
fn containers(
    runtime: &Runtime,
    collector: &StatsCollector,
    records: &[ContainerRecord],
    mountpoint: &std::path::Path,
    now: i64,
) -> Vec<cri::ContainerStats> {
    records
        .iter()
        .filter_map(
            |r| match one_container(runtime, collector, r, mountpoint, now) {
                Ok(s) => Some(s),
                Err(e) => {
                    warn!(container = %r.id, error = %e, "no stats for the container");
                    None
                }
            },
        )
        .collect()
}

/// Forgets CPU samples of objects that no longer exist.
fn forget_removed(runtime: &Runtime, collector: &StatsCollector) {
    let live: HashSet<String> = runtime
        .containers()
        .into_iter()
        .map(|c| c.id)
        .chain(runtime.sandboxes().into_iter().map(|s| s.id))
        .collect();
    collector.retain(&live);
}

/// ContainerStats: NOT_FOUND for an unknown container.
pub async fn container_stats(
    runtime: &Arc<Runtime>,
    collector: &Arc<StatsCollector>,
    id: String,
) -> Result<cri::ContainerStatsResponse, Status> {
    blocking(runtime, collector, move |runtime, collector, now| {
        let record = runtime
            .container(&id)
            .ok_or_else(|| Status::not_found(format!("container {id:?} not found")))?;
        let mountpoint = image_fs_mountpoint(runtime)?;
        let stats =
            one_container(runtime, collector, &record, &mountpoint, now).map_err(internal)?;
        Ok(cri::ContainerStatsResponse { stats: Some(stats) })
    })
    .await
}

/// ListContainerStats: by id prefix, sandbox id prefix and labels.
pub async fn list_container_stats(
    runtime: &Arc<Runtime>,
    collector: &Arc<StatsCollector>,
    filter: cri::ContainerStatsFilter,
) -> Result<cri::ListContainerStatsResponse, Status> {
    blocking(runtime, collector, move |runtime, collector, now| {
        let records: Vec<ContainerRecord> = runtime
            .containers()
            .into_iter()
            .filter(|c| filter.id.is_empty() || c.id.starts_with(&filter.id))
            .filter(|c| {
                filter.pod_sandbox_id.is_empty() || c.sandbox_id.starts_with(&filter.pod_sandbox_id)
            })
            .filter(|c| labels_match(&filter.label_selector, &c.config.labels))
            .collect();
        let mountpoint = image_fs_mountpoint(runtime)?;
        let stats = containers(runtime, collector, &records, &mountpoint, now);
        forget_removed(runtime, collector);
        Ok(cri::ListContainerStatsResponse { stats })
    })
    .await
}

fn sandbox_stats(
    runtime: &Runtime,
    collector: &StatsCollector,
    sandbox: &SandboxRecord,
    mountpoint: &std::path::Path,
    now: i64,
) -> Result<cri::PodSandboxStats, StatsError> {
    let records: Vec<ContainerRecord> = runtime
        .containers()
        .into_iter()
        .filter(|c| c.sandbox_id == sandbox.id)
        .collect();
    let containers = containers(runtime, collector, &records, mountpoint, now);
    collector.sandbox(sandbox, containers, now)
}

/// PodSandboxStats: NOT_FOUND for an unknown pod, UNAVAILABLE for one that is not ready.
pub async fn pod_sandbox_stats(
    runtime: &Arc<Runtime>,
    collector: &Arc<StatsCollector>,
    id: String,
) -> Result<cri::PodSandboxStatsResponse, Status> {
    blocking(runtime, collector, move |runtime, collector, now| {
        let sandbox = runtime
            .sandbox(&id)
            .ok_or_else(|| Status::not_found(format!("sandbox {id:?} not found")))?;
        if !sandbox.ready {
            return Err(Status::unavailable(format!(
                "sandbox {} is not in ready state",
                sandbox.id
            )));
        }
        let mountpoint = image_fs_mountpoint(runtime)?;
        let stats =
            sandbox_stats(runtime, collector, &sandbox, &mountpoint, now).map_err(internal)?;
        Ok(cri::PodSandboxStatsResponse { stats: Some(stats) })
    })
    .await
}

/// ListPodSandboxStats: ready pods by id prefix and labels.
pub async fn list_pod_sandbox_stats(
    runtime: &Arc<Runtime>,
    collector: &Arc<StatsCollector>,
    filter: cri::PodSandboxStatsFilter,
) -> Result<cri::ListPodSandboxStatsResponse, Status> {
    blocking(runtime, collector, move |runtime, collector, now| {
        let mountpoint = image_fs_mountpoint(runtime)?;
        let stats = runtime
            .sandboxes()
            .into_iter()
            .filter(|s| s.ready)
            .filter(|s| filter.id.is_empty() || s.id.starts_with(&filter.id))
            .filter(|s| labels_match(&filter.label_selector, &s.config.labels))
            .filter_map(
                |s| match sandbox_stats(runtime, collector, &s, &mountpoint, now) {
                    Ok(stats) => Some(stats),
                    Err(e) => {
                        warn!(sandbox = %s.id, error = %e, "no stats for the sandbox");
                        None
                    }
                },
            )
            .collect();
        forget_removed(runtime, collector);
        Ok(cri::ListPodSandboxStatsResponse { stats })
    })
    .await
}
