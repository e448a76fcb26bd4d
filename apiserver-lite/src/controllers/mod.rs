//! Controllers: ordinary API clients, running inside apiserver-lite by default and against
//! any API server alone (`--controllers-only`). Each controller is a submodule; this module
//! holds what they share: the error type, pod helpers, owner references, and [`run`], which
//! starts the controllers asked for.

pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod endpointslice;
pub mod gc;
pub mod job;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod per_namespace;
pub mod replicaset;
pub mod rollout;
pub mod servicelb;
pub mod statefulset;
pub mod volumebinding;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;

/// Why a reconcile failed (retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// An API call failed.
    #[error("{action} for {object}: {source}")]
    Api {
        /// What the controller was doing.
        action: &'static str,
        /// namespace/name of the object reconciled.
        object: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// The object cannot be reconciled as it is.
    #[error("{object}: {why}")]
    Invalid {
        /// namespace/name.
        object: String,
        /// What is wrong.
        why: String,
    },
}

/// A closure turning a client error into [`ControllerError::Api`] for `object`.
pub(crate) fn api_err(
    object: &str,
    action: &'static str,
) -> impl FnOnce(kube::Error) -> ControllerError + use<> {
    let object = object.to_string();
    move |source| ControllerError::Api {
        action,
        object,
        source,
    }
}

/// Whether a client error is 404 Not Found.
pub(crate) fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 404)
}

/// A workload's pod selector, parsed; an empty one is refused (it would select every pod).
pub(crate) fn pod_selector(
    selector: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
    object: &str,
) -> Result<apimachinery::selector::LabelSelector, ControllerError> {
    let invalid = |why: String| ControllerError::Invalid {
        object: object.to_string(),
        why,
    };
    let parsed =
        apimachinery::selector::LabelSelector::from_api(&selector.cloned().unwrap_or_default())
            .map_err(|e| invalid(e.to_string()))?;
    if parsed.is_empty() {
        return Err(invalid("an empty selector selects every pod".into()));
    }
    Ok(parsed)
}

/// `namespace/name` of an object, for messages.
pub(crate) fn object_key<K: kube::Resource>(obj: &K) -> String {
    match obj.namespace() {
        Some(ns) => format!("{ns}/{}", obj.name_any()),
        None => obj.name_any(),
    }
}

/// What every controller gets in its reconcile.
pub(crate) struct Context {
    /// The API client.
    pub(crate) client: kube::Client,
    /// Records events as this controller.
    recorder: kube::runtime::events::Recorder,
}

impl Context {
    /// A context for the controller called `name` (the events' reporting controller).
    pub(crate) fn new(client: kube::Client, name: &str) -> Self {
        let reporter = kube::runtime::events::Reporter {
            controller: name.into(),
            instance: None,
        };
        Context {
            recorder: kube::runtime::events::Recorder::new(client.clone(), reporter),
            client,
        }
    }

    /// Records a Normal event about `regarding` (best effort, as upstream's recorder).
    pub(crate) async fn event<K>(&self, regarding: &K, reason: &str, action: &str, note: String)
    where
        K: kube::Resource<DynamicType = ()>,
    {
        use kube::runtime::events::EventType;
        self.record(EventType::Normal, regarding, reason, action, note)
            .await;
    }

    /// Records a Warning event about `regarding` (best effort).
    pub(crate) async fn warning<K>(&self, regarding: &K, reason: &str, action: &str, note: String)
    where
        K: kube::Resource<DynamicType = ()>,
    {
        use kube::runtime::events::EventType;
        self.record(EventType::Warning, regarding, reason, action, note)
            .await;
    }

    async fn record<K>(
        &self,
        type_: kube::runtime::events::EventType,
        regarding: &K,
        reason: &str,
        action: &str,
        note: String,
    ) where
        K: kube::Resource<DynamicType = ()>,
    {
        let event = kube::runtime::events::Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(error) = self
            .recorder
            .publish(&event, &regarding.object_ref(&()))
            .await
        {
            tracing::debug!(%error, "recording an event failed");
        }
    }
}

/// A pod that counts: not being deleted and not finished.
pub(crate) fn is_active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none() && !apimachinery::scheduling::is_terminal(pod)
}

fn ready_since(pod: &Pod) -> Option<Option<jiff::Timestamp>> {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .map(|c| c.last_transition_time.as_ref().map(|t| t.0))
}

/// A pod whose Ready condition is True.
pub(crate) fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// How long until a pod counts as available: `Some(ZERO)` when it is (ready for at least
/// `min_ready_seconds`), `Some(left)` when it is ready but not for long enough yet, `None`
/// when it is not ready (or ready since an unknown time while a minimum applies).
pub(crate) fn available_in(
    pod: &Pod,
    min_ready_seconds: i32,
    now: jiff::Timestamp,
) -> Option<std::time::Duration> {
    let since = ready_since(pod)?;
    if min_ready_seconds <= 0 {
        return Some(std::time::Duration::ZERO);
    }
    // Ready without a transition time never counts with a minimum, as upstream.
    let since = since?;
    let at = since + jiff::SignedDuration::from_secs(i64::from(min_ready_seconds));
    let left = at.duration_since(now);
    Some(if left.is_positive() {
        left.unsigned_abs()
    } else {
        std::time::Duration::ZERO
    })
}

/// The uid of an object's controller (the owner reference with `controller: true`).
pub(crate) fn controller_uid(meta: &kube::api::ObjectMeta) -> Option<&str> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.as_str())
}

/// The controller owner reference pointing at `owner`.
pub(crate) fn controller_reference<K>(owner: &K) -> OwnerReference
where
    K: kube::Resource<DynamicType = ()>,
{
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.name_any(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Sorts out which of `candidates` (objects of the owner's namespace) belong to `owner`, as
/// upstream's controller ref manager does: objects it controls that still match `selector`
/// are kept; those that no longer match are released (the owner reference removed); matching
/// objects without a controller are adopted unless the owner or they are being deleted.
/// Returns the owned objects.
pub(crate) async fn claim<K>(
    api: &kube::Api<K>,
    owner: OwnerReference,
    owner_deleting: bool,
    selector: &apimachinery::selector::LabelSelector,
    candidates: Vec<K>,
    object: &str,
) -> Result<Vec<K>, ControllerError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    use kube::api::{Patch, PatchParams};
    let mut owned = Vec::new();
    for candidate in candidates {
        let meta = candidate.meta();
        let matches = selector.matches_btree(&meta.labels.clone().unwrap_or_default());
        let refs = meta.owner_references.clone().unwrap_or_default();
        let patch = |refs: Vec<OwnerReference>| {
            Patch::Merge(serde_json::json!({"metadata": {
                "ownerReferences": refs,
                "resourceVersion": meta.resource_version,
            }}))
        };
        match controller_uid(meta) {
            Some(uid) if uid == owner.uid => {
                if matches {
                    owned.push(candidate);
                    continue;
                }
                let kept: Vec<OwnerReference> =
                    refs.into_iter().filter(|r| r.uid != owner.uid).collect();
                match api
                    .patch(&candidate.name_any(), &PatchParams::default(), &patch(kept))
                    .await
                {
                    Ok(_) => {}
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(api_err(object, "releasing a dependent")(e)),
                }
            }
            Some(_) => {}
            None if matches && !owner_deleting && meta.deletion_timestamp.is_none() => {
                let mut refs = refs;
                refs.push(owner.clone());
                match api
                    .patch(&candidate.name_any(), &PatchParams::default(), &patch(refs))
                    .await
                {
                    Ok(adopted) => owned.push(adopted),
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(api_err(object, "adopting a dependent")(e)),
                }
            }
            None => {}
        }
    }
    Ok(owned)
}

/// The controllers [`run`] can start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// Keeps ReplicaSets' pods.
    ReplicaSet,
    /// Rolls Deployments out through ReplicaSets.
    Deployment,
    /// Deletes dependents of deleted owners; foreground and orphan deletion.
    GarbageCollector,
    /// A `default` ServiceAccount in every namespace.
    ServiceAccount,
    /// The `kube-root-ca.crt` ConfigMap in every namespace.
    RootCaPublisher,
    /// Runs Jobs' pods to completion; deletes finished Jobs after their TTL.
    Job,
    /// Creates Jobs on CronJobs' schedules.
    CronJob,
    /// Runs a DaemonSet's pod on every eligible node.
    DaemonSet,
}

impl Which {
    /// Every controller.
    pub const ALL: &[Which] = &[
        Which::ReplicaSet,
        Which::Deployment,
        Which::GarbageCollector,
        Which::ServiceAccount,
        Which::RootCaPublisher,
        Which::Job,
        Which::CronJob,
        Which::DaemonSet,
    ];
}

/// The CA certificates a client configuration trusts, as PEM (what `kube-root-ca.crt`
/// publishes).
pub fn ca_pem(config: &kube::Config) -> Option<String> {
    use base64::Engine;
    let certs = config.root_cert.as_ref().filter(|c| !c.is_empty())?;
    let mut pem = String::new();
    for der in certs {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    Some(pem)
}

/// Runs the controllers in `which`, as clients of the API server of `config` (whose CA is
/// the one published in `kube-root-ca.crt`), until `shutdown` turns true.
pub async fn run(
    config: kube::Config,
    shutdown: tokio::sync::watch::Receiver<bool>,
    which: &[Which],
) -> Result<(), kube::Error> {
    let client = kube::Client::try_from(config.clone())?;
    let mut tasks = Vec::new();
    for w in which {
        let (client, shutdown) = (client.clone(), shutdown.clone());
        tasks.push(match w {
            Which::ReplicaSet => tokio::spawn(replicaset::run(client, shutdown)),
            Which::Deployment => tokio::spawn(deployment::run(client, shutdown)),
            Which::GarbageCollector => tokio::spawn(gc::run(client, shutdown)),
            Which::Job => tokio::spawn(job::run(client, shutdown)),
            Which::CronJob => tokio::spawn(cronjob::run(client, shutdown)),
            Which::DaemonSet => tokio::spawn(daemonset::run(client, shutdown)),
            Which::ServiceAccount => {
                tokio::spawn(per_namespace::run_service_accounts(client, shutdown))
            }
            Which::RootCaPublisher => match ca_pem(&config) {
                Some(pem) => tokio::spawn(per_namespace::run_root_ca(client, pem, shutdown)),
                None => {
                    tracing::warn!(
                        "no CA in the client configuration: kube-root-ca.crt is not published"
                    );
                    continue;
                }
            },
        });
    }
    for task in tasks {
        if let Err(e) = task.await {
            tracing::error!(error = %e, "a controller task ended abnormally");
        }
    }
    Ok(())
}

/// A future that completes when `shutdown` turns true (or its sender is gone).
pub(crate) async fn shutdown_signal(mut shutdown: tokio::sync::watch::Receiver<bool>) {
    while !*shutdown.borrow_and_update() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

/// The Service and Node controllers and their settings (apiserver-lite's flags).
#[derive(Debug, Clone)]
pub struct ClusterControllers {
    /// The EndpointSlice and Endpoints controllers.
    pub endpoints: bool,
    /// The service load balancer, with its pool (`None`: the Ready nodes' addresses).
    pub service_lb: Option<Option<servicelb::Pool>>,
    /// Node IPAM, when nodes get pod CIDRs.
    pub node_ipam: Option<nodeipam::Settings>,
    /// Node lifecycle, with its grace period.
    pub node_lifecycle: Option<nodelifecycle::Settings>,
    /// The StatefulSet controller.
    pub statefulset: bool,
    /// The PersistentVolume binder.
    pub volume_binding: bool,
}

impl Default for ClusterControllers {
    fn default() -> Self {
        ClusterControllers {
            endpoints: true,
            service_lb: Some(None),
            node_ipam: Some(nodeipam::Settings::default()),
            node_lifecycle: Some(nodelifecycle::Settings::default()),
            statefulset: true,
            volume_binding: true,
        }
    }
}

/// Runs the Service and Node controllers `which` asks for until `shutdown` turns true.
pub async fn run_cluster(
    client: kube::Client,
    shutdown: tokio::sync::watch::Receiver<bool>,
    which: ClusterControllers,
) {
    let mut tasks = Vec::new();
    if which.endpoints {
        tasks.push(tokio::spawn(endpointslice::run(
            client.clone(),
            shutdown.clone(),
        )));
        tasks.push(tokio::spawn(endpoints::run(
            client.clone(),
            shutdown.clone(),
        )));
    }
    if let Some(pool) = which.service_lb {
        tasks.push(tokio::spawn(servicelb::run(
            client.clone(),
            pool,
            shutdown.clone(),
        )));
    }
    if let Some(settings) = which.node_ipam {
        tasks.push(tokio::spawn(nodeipam::run(
            client.clone(),
            settings,
            shutdown.clone(),
        )));
    }
    if which.statefulset {
        tasks.push(tokio::spawn(statefulset::run(
            client.clone(),
            shutdown.clone(),
        )));
    }
    if which.volume_binding {
        tasks.push(tokio::spawn(volumebinding::run(
            client.clone(),
            shutdown.clone(),
        )));
    }
    if let Some(settings) = which.node_lifecycle {
        tasks.push(tokio::spawn(nodelifecycle::run(client, settings, shutdown)));
    }
    for task in tasks {
        if let Err(e) = task.await {
            tracing::error!(error = %e, "a controller task ended abnormally");
        }
    }
}
