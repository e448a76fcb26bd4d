//! One pod's worker: waits for a change (the pod, what the runtime holds, a back-off ending),
//! observes the runtime, asks [`plan`](super::plan::plan) what to do, does it (volumes,
//! sandbox, image pulls, containers), and writes the status through the status subresource
//! when it changed. On deletion it stops everything within the grace period and then deletes
//! the pod object with grace 0, which is what lets `kubectl delete` return.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod, PodStatus, Secret,
};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::{Event, EventType, Recorder};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::backoff::Backoff;
use super::config::{self, PodContext, RESTART_COUNT_ANNOTATION};
use super::plan::{
    self, ContainerKind, Observed, ObservedContainer, ObservedSandbox, Plan, RunState, Start,
};
use super::probe::{self, ProbeKind, Prober};
use super::pull_secrets::{self, Credential};
use super::status::{StatusInput, pod_status};
use super::volumes;
use crate::runtime::{ContainerRuntime, RuntimeError};

/// Pulls `image` with each matching credential in turn (the first success wins, the last
/// failure is returned), or without credentials when none match, as the kubelet does.
async fn pull_with(
    rt: &dyn ContainerRuntime,
    image: &str,
    credentials: &[Credential],
) -> Result<String, RuntimeError> {
    let Some((last, first)) = credentials.split_last() else {
        return rt.pull_image(image, None).await;
    };
    for credential in first {
        match rt.pull_image(image, Some(credential.auth_config())).await {
            Ok(id) => return Ok(id),
            Err(e) => {
                tracing::info!(image, key = %credential.key, error = %e.message(), "pull with these credentials failed; trying the next");
            }
        }
    }
    rt.pull_image(image, Some(last.auth_config())).await
}

/// The shortest grace period kubelet gives a container it stops.
pub const MINIMUM_GRACE_SECONDS: i64 = 2;

/// What every worker shares.
pub struct Shared {
    /// The API.
    pub client: kube::Client,
    /// The runtime.
    pub runtime: Arc<dyn ContainerRuntime>,
    /// Events.
    pub recorder: Recorder,
    /// This node.
    pub node_name: String,
    /// The node's address.
    pub host_ip: String,
    /// `--root-dir`.
    pub root_dir: std::path::PathBuf,
    /// Pod logs (`/var/log/pods` by default).
    pub pod_log_dir: std::path::PathBuf,
    /// `--cluster-dns`.
    pub cluster_dns: Vec<String>,
    /// `--cluster-domain`.
    pub cluster_domain: String,
    /// The runtime's name (containerID scheme).
    pub runtime_name: String,
    /// Runs container probes.
    pub prober: Arc<dyn Prober>,
    /// Cgroup root of pods (QoS classes below it).
    pub cgroup_root: String,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("node_name", &self.node_name)
            .finish_non_exhaustive()
    }
}

/// The runtime's objects of one pod, as the manager last listed them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuntimeSlice {
    /// Sandboxes.
    pub sandboxes: Vec<cri::PodSandbox>,
    /// Containers.
    pub containers: Vec<cri::Container>,
}

/// The worker of one pod.
pub struct Worker {
    shared: Arc<Shared>,
    uid: String,
    pod_rx: watch::Receiver<Option<Arc<Pod>>>,
    runtime_rx: watch::Receiver<RuntimeSlice>,
    backoff: Backoff,
    waiting: BTreeMap<String, (String, String)>,
    pull_backoff: HashMap<String, (Timestamp, Duration, String)>,
    exited_cache: HashMap<String, cri::ContainerStatus>,
    last_status: Option<PodStatus>,
    last_pod: Option<Arc<Pod>>,
    probes: Probes,
}

/// The probes of the pod's running containers and what they found.
struct Probes {
    tasks: HashMap<String, Vec<tokio::task::JoinHandle<()>>>,
    started_gates: HashMap<String, watch::Sender<bool>>,
    ready: BTreeMap<String, bool>,
    started: BTreeMap<String, bool>,
    reports_tx: tokio::sync::mpsc::Sender<probe::Report>,
    reports_rx: tokio::sync::mpsc::Receiver<probe::Report>,
}

impl Probes {
    fn new() -> Self {
        let (reports_tx, reports_rx) = tokio::sync::mpsc::channel(64);
        Probes {
            tasks: HashMap::new(),
            started_gates: HashMap::new(),
            ready: BTreeMap::new(),
            started: BTreeMap::new(),
            reports_tx,
            reports_rx,
        }
    }

    fn stop(&mut self, container_id: &str) {
        for task in self.tasks.remove(container_id).into_iter().flatten() {
            task.abort();
        }
        self.started_gates.remove(container_id);
    }
}

impl Drop for Probes {
    fn drop(&mut self) {
        for task in self.tasks.values().flatten() {
            task.abort();
        }
    }
}

fn ts(nanos: i64) -> Option<Timestamp> {
    (nanos > 0)
        .then(|| Timestamp::from_nanosecond(i128::from(nanos)).ok())
        .flatten()
}

fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

impl Worker {
    /// A worker for the pod with `uid`.
    pub fn new(
        shared: Arc<Shared>,
        uid: String,
        pod_rx: watch::Receiver<Option<Arc<Pod>>>,
        runtime_rx: watch::Receiver<RuntimeSlice>,
    ) -> Self {
        Worker {
            shared,
            uid,
            pod_rx,
            runtime_rx,
            backoff: Backoff::default(),
            waiting: BTreeMap::new(),
            pull_backoff: HashMap::new(),
            exited_cache: HashMap::new(),
            last_status: None,
            last_pod: None,
            probes: Probes::new(),
        }
    }

    /// Runs until the pod is gone from the node and the API.
    pub async fn run(mut self) {
        let mut wake: Option<Timestamp> = None;
        let mut busy_rounds = 0u32;
        loop {
            let pod = self.pod_rx.borrow_and_update().clone();
            if let Some(p) = &pod {
                self.last_pod = Some(p.clone());
            }
            // Always a direct list: the relister's slice only wakes the worker. It can lag behind
            // what this worker just did (or not have arrived at all for a restarted agent), and
            // acting on a stale one would create a second sandbox or container.
            self.runtime_rx.borrow_and_update();
            let slice = self.current_slice().await;
            let observed = self.observe(&slice).await;
            debug!(pod_uid = %self.uid, sandboxes = observed.sandboxes.len(), containers = observed.containers.len(), has_pod = pod.is_some(), "observed");
            let deleting = pod
                .as_ref()
                .is_none_or(|p| p.metadata.deletion_timestamp.is_some());
            if deleting {
                if self.terminate(pod.as_deref(), &observed).await {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            let Some(pod) = pod else { return };
            self.sync_probes(&pod, &observed);
            let now = Timestamp::now();
            let plan = plan::plan(&pod, &observed, &self.backoff, now);
            let acted = self.execute(&pod, &observed, &plan).await;
            let observed = if acted {
                self.observe(&self.current_slice().await).await
            } else {
                observed
            };
            let replan = if acted {
                plan::plan(&pod, &observed, &self.backoff, Timestamp::now())
            } else {
                plan.clone()
            };
            self.write_status(&pod, &observed, &replan).await;
            wake = replan.wake_at().or(wake.filter(|w| *w > Timestamp::now()));
            let more = !replan.start.is_empty()
                || replan.create_sandbox.is_some()
                || !replan.kill.is_empty();
            if acted && more && busy_rounds < 5 {
                // Go on at once (sandbox, then containers), but not forever if a step keeps
                // failing in a way that looks like progress.
                busy_rounds += 1;
                continue;
            }
            let floor = if acted && more {
                Duration::from_secs(1)
            } else {
                Duration::ZERO
            };
            busy_rounds = 0;
            let sleep = wake
                .map(|w| Duration::try_from(w.duration_since(Timestamp::now())).unwrap_or_default())
                .unwrap_or(Duration::from_secs(10))
                .clamp(floor, Duration::from_secs(10));
            tokio::select! {
                changed = self.pod_rx.changed() => { if changed.is_err() { return; } }
                changed = self.runtime_rx.changed() => { if changed.is_err() { return; } }
                Some(report) = self.probes.reports_rx.recv() => self.handle_probe(report).await,
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    /// Lists this pod's runtime objects directly (after acting, before the manager relists).
    async fn current_slice(&self) -> RuntimeSlice {
        let rt = &self.shared.runtime;
        let mine =
            |labels: &HashMap<String, String>| labels.get(config::POD_UID_LABEL) == Some(&self.uid);
        RuntimeSlice {
            sandboxes: rt
                .list_sandboxes()
                .await
                .unwrap_or_default()
                .into_iter()
                .filter(|s| mine(&s.labels))
                .collect(),
            containers: rt
                .list_containers()
                .await
                .unwrap_or_default()
                .into_iter()
                .filter(|c| mine(&c.labels))
                .collect(),
        }
    }

    async fn observe(&mut self, slice: &RuntimeSlice) -> Observed {
        let mut observed = Observed::default();
        for sandbox in &slice.sandboxes {
            let ready = sandbox.state == cri::PodSandboxState::SandboxReady as i32;
            let ip = if ready {
                self.shared
                    .runtime
                    .sandbox_status(&sandbox.id)
                    .await
                    .ok()
                    .and_then(|s| s.network)
                    .map(|n| n.ip)
                    .unwrap_or_default()
            } else {
                String::new()
            };
            observed.sandboxes.push(ObservedSandbox {
                id: sandbox.id.clone(),
                attempt: sandbox.metadata.as_ref().map_or(0, |m| m.attempt),
                ready,
                created_at: sandbox.created_at,
                ip,
            });
        }
        for container in &slice.containers {
            let status = match self.exited_cache.get(&container.id) {
                Some(s) => Some(s.clone()),
                None => self
                    .shared
                    .runtime
                    .container_status(&container.id)
                    .await
                    .ok(),
            };
            let Some(status) = status else { continue };
            if status.state == cri::ContainerState::ContainerExited as i32 {
                self.exited_cache
                    .insert(container.id.clone(), status.clone());
            }
            let state = match status.state {
                0 => RunState::Created,
                1 => RunState::Running,
                2 => RunState::Exited,
                _ => RunState::Unknown,
            };
            let name = container
                .labels
                .get(config::CONTAINER_NAME_LABEL)
                .cloned()
                .unwrap_or_default();
            observed.containers.push(ObservedContainer {
                id: container.id.clone(),
                name,
                attempt: container.metadata.as_ref().map_or(0, |m| m.attempt),
                sandbox_id: container.pod_sandbox_id.clone(),
                state,
                exit_code: status.exit_code,
                reason: status.reason.clone(),
                message: status.message.clone(),
                created_at: ts(status.created_at),
                started_at: ts(status.started_at),
                finished_at: ts(status.finished_at),
                image_ref: status.image_ref.clone(),
                restart_count: container
                    .annotations
                    .get(RESTART_COUNT_ANNOTATION)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            });
        }
        let live: std::collections::HashSet<&String> =
            slice.containers.iter().map(|c| &c.id).collect();
        self.exited_cache.retain(|id, _| live.contains(id));
        observed
    }

    fn event(&self, pod: &Pod, type_: EventType, reason: &str, note: String) {
        self.event_for(pod, type_, reason, "Sync", note);
    }

    /// An event whose action tells it apart from others of the same reason (the recorder
    /// folds events of one reason and action into a series).
    fn event_for(&self, pod: &Pod, type_: EventType, reason: &str, action: &str, note: String) {
        let recorder = self.shared.recorder.clone();
        let action = action.to_string();
        let reference = kube::Resource::object_ref(pod, &());
        let reason = reason.to_string();
        tokio::spawn(async move {
            let event = Event {
                type_,
                reason,
                note: Some(note),
                action,
                secondary: None,
            };
            if let Err(e) = recorder.publish(&event, &reference).await {
                debug!(error = %e, "event not recorded");
            }
        });
    }

    async fn context(
        &self,
        pod: &Pod,
        observed: &Observed,
    ) -> Result<PodContext, config::ConfigError> {
        let namespace = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let mut ctx = PodContext {
            node_name: self.shared.node_name.clone(),
            host_ip: self.shared.host_ip.clone(),
            pod_ip: observed
                .current_sandbox()
                .map(|s| s.ip.clone())
                .unwrap_or_default(),
            cluster_dns: self.shared.cluster_dns.clone(),
            cluster_domain: self.shared.cluster_domain.clone(),
            log_directory: self.shared.pod_log_dir.join(format!(
                "{namespace}_{}_{uid}",
                pod.metadata.name.as_deref().unwrap_or_default()
            )),
            cgroup_parent: pod_cgroup(&self.shared.cgroup_root, pod),
            ..Default::default()
        };
        if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
            ctx.pod_ip = self.shared.host_ip.clone();
        }
        let (config_maps, secrets) = referenced_objects(pod);
        let cm_api: Api<ConfigMap> = Api::namespaced(self.shared.client.clone(), &namespace);
        for name in config_maps {
            if let Ok(Some(cm)) = cm_api.get_opt(&name).await {
                ctx.config_maps.insert(name, cm);
            }
        }
        let secret_api: Api<Secret> = Api::namespaced(self.shared.client.clone(), &namespace);
        for name in secrets {
            if let Ok(Some(s)) = secret_api.get_opt(&name).await {
                ctx.secrets.insert(name, s);
            }
        }
        ctx.claims = self.claimed_volumes(pod, &namespace).await;
        ctx.read_only_volumes = volumes::read_only_volumes(pod);
        ctx.volume_paths = volumes::prepare(&self.shared.root_dir, pod, &ctx)?;
        Ok(ctx)
    }

    /// The PersistentVolume behind each of the pod's claims, or why there is none yet.
    async fn claimed_volumes(
        &self,
        pod: &Pod,
        namespace: &str,
    ) -> BTreeMap<String, Result<PersistentVolume, String>> {
        let claims: Api<PersistentVolumeClaim> =
            Api::namespaced(self.shared.client.clone(), namespace);
        let volumes: Api<PersistentVolume> = Api::all(self.shared.client.clone());
        let mut out = BTreeMap::new();
        for name in volumes::claim_names(pod) {
            let claim = match claims.get_opt(&name).await {
                Ok(c) => c,
                Err(e) => {
                    out.insert(
                        name,
                        Err(format!("failed to fetch PVC from API server: {e}")),
                    );
                    continue;
                }
            };
            let volume_name = claim
                .as_ref()
                .and_then(|c| c.spec.as_ref())
                .and_then(|s| s.volume_name.clone())
                .filter(|n| !n.is_empty());
            let volume = match volume_name {
                Some(v) => match volumes.get_opt(&v).await {
                    Ok(pv) => pv,
                    Err(e) => {
                        out.insert(
                            name,
                            Err(format!("failed to fetch PV {v:?} from API server: {e}")),
                        );
                        continue;
                    }
                },
                None => None,
            };
            let resolved = volumes::bound_volume(namespace, &name, claim.as_ref(), volume);
            out.insert(name, resolved);
        }
        out
    }

    /// Does what the plan says; returns whether anything was done.
    async fn execute(&mut self, pod: &Pod, observed: &Observed, plan: &Plan) -> bool {
        let rt = self.shared.runtime.clone();
        let mut acted = false;
        for id in &plan.kill {
            acted = true;
            let grace = pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
                .unwrap_or(30);
            let Some(container) = observed.containers.iter().find(|c| c.id == *id) else {
                continue;
            };
            let pod_ip = observed
                .current_sandbox()
                .map(|s| s.ip.clone())
                .unwrap_or_default();
            self.event(
                pod,
                EventType::Normal,
                "Killing",
                format!("Stopping container {}", container.name),
            );
            if let Err(e) = self
                .stop_after_pre_stop(Some(pod), container, grace, &pod_ip)
                .await
            {
                warn!(pod = %pod_key(pod), container = %id, error = %e, "stopping a container failed");
            }
        }
        for id in &plan.remove {
            acted = true;
            let _ = rt.remove_container(id).await;
        }
        if plan.terminal.is_some() {
            if let Some(sandbox) = observed.current_sandbox().filter(|s| s.ready) {
                acted = true;
                if let Err(e) = rt.stop_sandbox(&sandbox.id).await {
                    warn!(pod = %pod_key(pod), error = %e, "stopping the sandbox of an ended pod failed");
                }
            }
            return acted;
        }
        let ctx = match self.context(pod, observed).await {
            Ok(ctx) => ctx,
            Err(e) => {
                self.event(pod, EventType::Warning, "FailedMount", e.0.clone());
                for c in all_containers(pod) {
                    if volumes::is_waiting_for_volumes(&e) {
                        // Claims not bound yet: the pod stays ContainerCreating, as upstream.
                        self.waiting.remove(&c);
                    } else {
                        self.waiting
                            .insert(c, ("CreateContainerConfigError".into(), e.0.clone()));
                    }
                }
                return false;
            }
        };
        if let Some(attempt) = plan.create_sandbox {
            let sandbox_config = config::sandbox_config(pod, &ctx, attempt);
            for s in observed.sandboxes.iter().filter(|s| s.ready) {
                let _ = rt.stop_sandbox(&s.id).await;
            }
            match rt.run_sandbox(&sandbox_config).await {
                Ok(id) => {
                    info!(pod = %pod_key(pod), sandbox = %id, "sandbox created");
                    return true;
                }
                Err(e) => {
                    let message = format!("Failed to create pod sandbox: {}", e.message());
                    warn!(pod = %pod_key(pod), error = %e, "sandbox creation failed");
                    self.event(pod, EventType::Warning, "FailedCreatePodSandBox", message);
                    return false;
                }
            }
        }
        let Some(sandbox) = observed.current_sandbox().filter(|s| s.ready).cloned() else {
            return acted;
        };
        let mut ctx = ctx;
        ctx.pod_ip = if ctx.pod_ip.is_empty() {
            sandbox.ip.clone()
        } else {
            ctx.pod_ip
        };
        let sandbox_config = config::sandbox_config(pod, &ctx, sandbox.attempt);
        for start in &plan.start {
            if self
                .start_container(pod, &ctx, &sandbox.id, &sandbox_config, start)
                .await
            {
                acted = true;
            }
        }
        acted
    }

    async fn start_container(
        &mut self,
        pod: &Pod,
        ctx: &PodContext,
        sandbox_id: &str,
        sandbox_config: &cri::PodSandboxConfig,
        start: &Start,
    ) -> bool {
        let Some(spec) = find_container(pod, &start.name, start.kind) else {
            return false;
        };
        let image = spec.image.clone().unwrap_or_default();
        if !self
            .ensure_image(pod, &start.name, &image, spec.image_pull_policy.as_deref())
            .await
        {
            return false;
        }
        let container_config =
            match config::container_config(pod, ctx, &spec, start.attempt, start.restart_count) {
                Ok(c) => c,
                Err(e) => {
                    self.container_failed(pod, &start.name, "CreateContainerConfigError", e.0);
                    return false;
                }
            };
        let rt = self.shared.runtime.clone();
        let id = match rt
            .create_container(sandbox_id, &container_config, sandbox_config)
            .await
        {
            Ok(id) => id,
            Err(e) => {
                self.container_failed(pod, &start.name, "CreateContainerError", e.message());
                return false;
            }
        };
        self.event(
            pod,
            EventType::Normal,
            "Created",
            format!("Created container {}", start.name),
        );
        if let Err(e) = rt.start_container(&id).await {
            self.container_failed(pod, &start.name, "RunContainerError", e.message());
            return true;
        }
        self.event(
            pod,
            EventType::Normal,
            "Started",
            format!("Started container {}", start.name),
        );
        if let Some(hook) = spec.lifecycle.as_ref().and_then(|l| l.post_start.clone()) {
            let target = probe::Target {
                container_id: id.clone(),
                container: spec.clone(),
                pod_ip: ctx.pod_ip.clone(),
            };
            let budget = Duration::from_secs(
                pod.spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
                    .unwrap_or(30)
                    .max(1) as u64,
            );
            if let probe::Outcome::Failure(message) =
                probe::run_hook(self.shared.prober.as_ref(), &hook, &target, budget).await
            {
                self.event(
                    pod,
                    EventType::Warning,
                    "FailedPostStartHook",
                    format!("PostStartHook failed: {message}"),
                );
                let _ = rt.stop_container(&id, MINIMUM_GRACE_SECONDS).await;
                if let Some(finished) = start.replaces_finished_at {
                    self.backoff.record_restart(&start.name, finished);
                }
                return true;
            }
        }
        self.waiting.remove(&start.name);
        if let Some(finished) = start.replaces_finished_at {
            self.backoff.record_restart(&start.name, finished);
        }
        info!(pod = %pod_key(pod), container = %start.name, id = %id, kind = ?start.kind, "container started");
        true
    }

    /// Records a failed step of starting a container: a `Failed` event and the waiting reason
    /// the status reports.
    fn container_failed(&mut self, pod: &Pod, name: &str, reason: &str, message: String) {
        self.event(
            pod,
            EventType::Warning,
            "Failed",
            format!("Error: {message}"),
        );
        self.waiting
            .insert(name.to_string(), (reason.into(), message));
    }

    /// Makes sure the image is present as the pull policy asks; records ErrImagePull /
    /// ImagePullBackOff / ErrImageNeverPull otherwise.
    async fn ensure_image(
        &mut self,
        pod: &Pod,
        name: &str,
        image: &str,
        policy: Option<&str>,
    ) -> bool {
        let rt = self.shared.runtime.clone();
        let latest = image
            .rsplit('/')
            .next()
            .is_some_and(|last| !last.contains(':') && !image.contains('@'))
            || image.ends_with(":latest");
        let policy = policy.unwrap_or(if latest { "Always" } else { "IfNotPresent" });
        if policy != "Always" {
            if let Ok(Some(_)) = rt.image_status(image).await {
                return true;
            }
            if policy == "Never" {
                let message =
                    format!("Container image \"{image}\" is not present with pull policy of Never");
                self.event(
                    pod,
                    EventType::Warning,
                    "ErrImageNeverPull",
                    message.clone(),
                );
                self.waiting
                    .insert(name.into(), ("ErrImageNeverPull".into(), message));
                return false;
            }
        }
        let now = Timestamp::now();
        if let Some((since, backoff, last_error)) = self.pull_backoff.get(image)
            && now < *since + *backoff
        {
            // As kubelet 1.30+: the back-off names the error that caused it.
            let message = format!("Back-off pulling image \"{image}\": ErrImagePull: {last_error}");
            self.waiting
                .insert(name.into(), ("ImagePullBackOff".into(), message));
            return false;
        }
        self.event(
            pod,
            EventType::Normal,
            "Pulling",
            format!("Pulling image \"{image}\""),
        );
        let started = std::time::Instant::now();
        let keyring = pull_secrets::keyring_for(&self.shared.client, pod).await;
        match pull_with(rt.as_ref(), image, &keyring.lookup(image)).await {
            Ok(_) => {
                self.pull_backoff.remove(image);
                self.event(
                    pod,
                    EventType::Normal,
                    "Pulled",
                    format!(
                        "Successfully pulled image \"{image}\" in {:.3}s",
                        started.elapsed().as_secs_f64()
                    ),
                );
                true
            }
            Err(e) => {
                let next = self
                    .pull_backoff
                    .get(image)
                    .map_or(Duration::from_secs(10), |(_, d, _)| {
                        (*d * 2).min(Duration::from_secs(300))
                    });
                self.pull_backoff
                    .insert(image.to_string(), (now, next, e.message()));
                let message = format!("Failed to pull image \"{image}\": {}", e.message());
                self.event(pod, EventType::Warning, "Failed", message.clone());
                self.waiting
                    .insert(name.into(), ("ErrImagePull".into(), message));
                false
            }
        }
    }

    /// Starts the probes of containers that began running and stops those of containers that
    /// ended; a new instance starts not ready (with a readiness probe) and not started (with a
    /// startup probe).
    fn sync_probes(&mut self, pod: &Pod, observed: &Observed) {
        let pod_ip = observed
            .current_sandbox()
            .map(|s| s.ip.clone())
            .unwrap_or_default();
        let spec_containers: Vec<k8s_openapi::api::core::v1::Container> = pod
            .spec
            .iter()
            .flat_map(|s| {
                s.init_containers
                    .iter()
                    .flatten()
                    .filter(|c| plan::is_sidecar(c))
                    .chain(&s.containers)
            })
            .cloned()
            .collect();
        let running: HashMap<String, &ObservedContainer> = observed
            .containers
            .iter()
            .filter(|c| c.state == RunState::Running)
            .map(|c| (c.id.clone(), c))
            .collect();
        let gone: Vec<String> = self
            .probes
            .tasks
            .keys()
            .filter(|id| !running.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            self.probes.stop(&id);
        }
        for container in &spec_containers {
            let Some(instance) = observed
                .latest(&container.name)
                .filter(|c| c.state == RunState::Running)
            else {
                self.probes.ready.remove(&container.name);
                self.probes.started.remove(&container.name);
                continue;
            };
            if self.probes.tasks.contains_key(&instance.id) {
                continue;
            }
            let has_startup = container.startup_probe.is_some();
            self.probes
                .ready
                .insert(container.name.clone(), container.readiness_probe.is_none());
            self.probes
                .started
                .insert(container.name.clone(), !has_startup);
            let (gate_tx, gate_rx) = watch::channel(!has_startup);
            let target = probe::Target {
                container_id: instance.id.clone(),
                container: container.clone(),
                pod_ip: pod_ip.clone(),
            };
            let mut tasks = Vec::new();
            for kind in [
                ProbeKind::Startup,
                ProbeKind::Liveness,
                ProbeKind::Readiness,
            ] {
                if let Some(spec) = kind.of(container) {
                    tasks.push(tokio::spawn(probe::run(
                        self.shared.prober.clone(),
                        kind,
                        spec.clone(),
                        target.clone(),
                        gate_rx.clone(),
                        self.probes.reports_tx.clone(),
                    )));
                }
            }
            self.probes.tasks.insert(instance.id.clone(), tasks);
            self.probes
                .started_gates
                .insert(instance.id.clone(), gate_tx);
        }
    }

    /// Applies a probe report: events for failures, readiness and startup state, and a restart
    /// of a container whose liveness or startup probe failed.
    async fn handle_probe(&mut self, report: probe::Report) {
        let Some(pod) = self.last_pod.clone() else {
            return;
        };
        if !self.probes.tasks.contains_key(&report.container_id) {
            return;
        }
        if let probe::Outcome::Failure(message) = &report.outcome {
            self.event_for(
                &pod,
                EventType::Warning,
                "Unhealthy",
                &format!("{}Probe", report.kind.name()),
                format!("{} probe failed: {message}", report.kind.name()),
            );
        }
        match (report.kind, report.changed) {
            (ProbeKind::Readiness, Some(ready)) => {
                self.probes.ready.insert(report.name.clone(), ready);
            }
            (ProbeKind::Startup, Some(true)) => {
                self.probes.started.insert(report.name.clone(), true);
                if let Some(gate) = self.probes.started_gates.get(&report.container_id) {
                    let _ = gate.send(true);
                }
            }
            (ProbeKind::Liveness | ProbeKind::Startup, Some(false)) => {
                let container = pod
                    .spec
                    .iter()
                    .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers))
                    .find(|c| c.name == report.name);
                let grace = container
                    .and_then(|c| report.kind.of(c))
                    .and_then(|p| p.termination_grace_period_seconds)
                    .or_else(|| {
                        pod.spec
                            .as_ref()
                            .and_then(|s| s.termination_grace_period_seconds)
                    })
                    .unwrap_or(30);
                self.event(
                    &pod,
                    EventType::Normal,
                    "Killing",
                    format!(
                        "Container {} failed {} probe, will be restarted",
                        report.name,
                        report.kind.name().to_lowercase()
                    ),
                );
                info!(pod = %pod_key(&pod), container = %report.name, probe = report.kind.name(), "probe failed; restarting the container");
                self.probes.stop(&report.container_id);
                if let Err(e) = self
                    .shared
                    .runtime
                    .stop_container(&report.container_id, grace)
                    .await
                {
                    warn!(pod = %pod_key(&pod), error = %e, "stopping an unhealthy container failed");
                }
            }
            _ => {}
        }
    }

    async fn write_status(&mut self, pod: &Pod, observed: &Observed, plan: &Plan) {
        let status = pod_status(&StatusInput {
            pod,
            observed,
            plan,
            waiting: &self.waiting,
            readiness: &self.probes.ready,
            started: &self.probes.started,
            host_ip: &self.shared.host_ip,
            runtime_name: &self.shared.runtime_name,
            now: Timestamp::now(),
        });
        if self.last_status.as_ref() == Some(&status) || pod.status.as_ref() == Some(&status) {
            self.last_status = Some(status);
            return;
        }
        let api: Api<Pod> = Api::namespaced(
            self.shared.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let name = pod.metadata.name.clone().unwrap_or_default();
        let patch = serde_json::json!({"status": status});
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                if plan.terminal.is_some()
                    && self.last_status.as_ref().and_then(|s| s.phase.clone()) != status.phase
                {
                    info!(pod = %pod_key(pod), phase = ?status.phase, "pod ended");
                }
                self.last_status = Some(status);
            }
            Err(e) => {
                warn!(pod = %pod_key(pod), error = %e, "writing the pod status failed; will retry")
            }
        }
    }

    /// Runs the container's preStop hook (bounded by the grace period), then stops it with
    /// what is left of the grace period, at least kubelet's 2 s minimum.
    async fn stop_after_pre_stop(
        &self,
        pod: Option<&Pod>,
        container: &ObservedContainer,
        grace: i64,
        pod_ip: &str,
    ) -> Result<(), crate::runtime::RuntimeError> {
        let spec = pod.and_then(|p| {
            find_container(p, &container.name, ContainerKind::App)
                .or_else(|| find_container(p, &container.name, ContainerKind::Init))
        });
        let hook = spec
            .as_ref()
            .and_then(|c| c.lifecycle.as_ref())
            .and_then(|l| l.pre_stop.clone());
        let mut remaining = grace;
        if let (Some(hook), Some(spec), Some(pod)) = (hook, spec.clone(), pod) {
            let started = std::time::Instant::now();
            let target = probe::Target {
                container_id: container.id.clone(),
                container: spec,
                pod_ip: pod_ip.to_string(),
            };
            let budget = Duration::from_secs(grace.max(0) as u64);
            if let probe::Outcome::Failure(message) =
                probe::run_hook(self.shared.prober.as_ref(), &hook, &target, budget).await
            {
                self.event(
                    pod,
                    EventType::Warning,
                    "FailedPreStopHook",
                    format!("PreStopHook failed: {message}"),
                );
            }
            remaining = grace - started.elapsed().as_secs() as i64;
        }
        self.shared
            .runtime
            .stop_container(&container.id, remaining.max(MINIMUM_GRACE_SECONDS))
            .await
    }

    /// Stops and removes everything of the pod, then deletes the pod object (grace 0). Returns
    /// true once done.
    async fn terminate(&mut self, pod: Option<&Pod>, observed: &Observed) -> bool {
        let rt = self.shared.runtime.clone();
        let known = pod.cloned().or_else(|| self.last_pod.as_deref().cloned());
        let grace = pod
            .and_then(|p| p.metadata.deletion_grace_period_seconds)
            .or_else(|| {
                known
                    .as_ref()
                    .and_then(|p| p.spec.as_ref())
                    .and_then(|s| s.termination_grace_period_seconds)
            })
            // A pod this agent never saw (deleted while it was away) gets kubelet's minimum.
            .unwrap_or(MINIMUM_GRACE_SECONDS);
        let running: Vec<&ObservedContainer> = observed
            .containers
            .iter()
            .filter(|c| c.state == RunState::Running)
            .collect();
        if let Some(p) = &known {
            for c in &running {
                self.event(
                    p,
                    EventType::Normal,
                    "Killing",
                    format!("Stopping container {}", c.name),
                );
            }
        }
        if !running.is_empty() {
            info!(pod_uid = %self.uid, containers = running.len(), grace_seconds = grace, "killing containers");
        }
        let pod_ip = observed
            .current_sandbox()
            .map(|s| s.ip.clone())
            .unwrap_or_default();
        let stops = running
            .iter()
            .map(|c| self.stop_after_pre_stop(known.as_ref(), c, grace, &pod_ip));
        for result in futures::future::join_all(stops).await {
            if let Err(e) = result {
                warn!(pod = %self.uid, error = %e, "stopping a container failed");
                return false;
            }
        }
        for sandbox in &observed.sandboxes {
            if let Err(e) = rt.stop_sandbox(&sandbox.id).await {
                warn!(pod = %self.uid, error = %e, "stopping the sandbox failed");
                return false;
            }
        }
        for c in &observed.containers {
            let _ = rt.remove_container(&c.id).await;
        }
        for sandbox in &observed.sandboxes {
            if let Err(e) = rt.remove_sandbox(&sandbox.id).await {
                warn!(pod = %self.uid, error = %e, "removing the sandbox failed");
                return false;
            }
        }
        volumes::remove(&self.shared.root_dir, &self.uid);
        // The pod-level cgroup is the agent's, as kubelet's pod container manager owns it: the
        // runtime creates the containers' cgroups below it but leaves the parent.
        if let Some(p) = &known {
            remove_cgroup(&pod_cgroup(&self.shared.cgroup_root, p));
        }
        if let Some(pod) = pod {
            let api: Api<Pod> = Api::namespaced(
                self.shared.client.clone(),
                pod.metadata.namespace.as_deref().unwrap_or("default"),
            );
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: pod.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api
                .delete(pod.metadata.name.as_deref().unwrap_or_default(), &params)
                .await
            {
                Ok(_) => info!(pod = %pod_key(pod), "pod deleted"),
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => {
                    warn!(pod = %pod_key(pod), error = %e, "deleting the pod object failed; will retry");
                    return false;
                }
            }
        }
        true
    }
}

/// The pod's cgroup: `<root>/<qos>/pod<uid>` (Guaranteed pods directly under the root).
fn pod_cgroup(root: &str, pod: &Pod) -> String {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let qos = qos_dir(config::qos_class(pod));
    if qos.is_empty() {
        format!("{root}/pod{uid}")
    } else {
        format!("{root}/{qos}/pod{uid}")
    }
}

/// Removes a cgroup directory (and empty children) in every v1 hierarchy; what still holds
/// processes stays.
fn remove_cgroup(path: &str) {
    fn remove_tree(dir: &std::path::Path) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    remove_tree(&entry.path());
                }
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for h in hierarchies.flatten() {
        remove_tree(&h.path().join(path.trim_start_matches('/')));
    }
}

fn qos_dir(qos: &str) -> &'static str {
    match qos {
        "Guaranteed" => "",
        "BestEffort" => "besteffort",
        _ => "burstable",
    }
}

fn all_containers(pod: &Pod) -> Vec<String> {
    pod.spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers))
        .map(|c| c.name.clone())
        .collect()
}

fn find_container(
    pod: &Pod,
    name: &str,
    kind: ContainerKind,
) -> Option<k8s_openapi::api::core::v1::Container> {
    let spec = pod.spec.as_ref()?;
    match kind {
        ContainerKind::App => spec.containers.iter().find(|c| c.name == name).cloned(),
        _ => spec
            .init_containers
            .iter()
            .flatten()
            .find(|c| c.name == name)
            .cloned(),
    }
}

/// ConfigMaps and Secrets the pod refers to (env, envFrom, volumes).
fn referenced_objects(pod: &Pod) -> (Vec<String>, Vec<String>) {
    let mut cms = Vec::new();
    let mut secrets = Vec::new();
    let Some(spec) = pod.spec.as_ref() else {
        return (cms, secrets);
    };
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
    {
        for e in c.env.iter().flatten() {
            if let Some(from) = &e.value_from {
                if let Some(r) = &from.config_map_key_ref {
                    cms.push(r.name.clone());
                }
                if let Some(r) = &from.secret_key_ref {
                    secrets.push(r.name.clone());
                }
            }
        }
        for f in c.env_from.iter().flatten() {
            if let Some(r) = &f.config_map_ref {
                cms.push(r.name.clone());
            }
            if let Some(r) = &f.secret_ref {
                secrets.push(r.name.clone());
            }
        }
    }
    for v in spec.volumes.iter().flatten() {
        if let Some(cm) = &v.config_map {
            cms.push(cm.name.clone());
        }
        if let Some(s) = &v.secret {
            secrets.push(s.secret_name.clone().unwrap_or_default());
        }
        for source in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(cm) = &source.config_map {
                cms.push(cm.name.clone());
            }
            if let Some(s) = &source.secret {
                secrets.push(s.name.clone());
            }
        }
    }
    cms.sort();
    cms.dedup();
    secrets.sort();
    secrets.dedup();
    (cms, secrets)
}
