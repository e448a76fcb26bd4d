//! Controllers: ordinary API clients, running inside apiserver-lite by default and against
//! any API server alone (`--controllers-only`). Each controller is a submodule; this module
//! holds what they share: the error type, pod helpers, owner references, and [`run`], which
//! starts the controllers asked for.

pub mod replicaset;

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
}

/// A pod that counts: not being deleted and not finished.
pub(crate) fn is_active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none() && !apimachinery::scheduling::is_terminal(pod)
}

/// A pod whose Ready condition is True.
pub(crate) fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
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

/// The controllers [`run`] can start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// Keeps ReplicaSets' pods.
    ReplicaSet,
}

impl Which {
    /// Every controller.
    pub const ALL: &[Which] = &[Which::ReplicaSet];
}

/// Runs the controllers in `which` until `shutdown` turns true.
pub async fn run(
    client: kube::Client,
    shutdown: tokio::sync::watch::Receiver<bool>,
    which: &[Which],
) {
    let mut tasks = Vec::new();
    for w in which {
        let (client, shutdown) = (client.clone(), shutdown.clone());
        tasks.push(match w {
            Which::ReplicaSet => tokio::spawn(replicaset::run(client, shutdown)),
        });
    }
    for task in tasks {
        if let Err(e) = task.await {
            tracing::error!(error = %e, "a controller task ended abnormally");
        }
    }
}

/// A future that completes when `shutdown` turns true (or its sender is gone).
pub(crate) async fn shutdown_signal(mut shutdown: tokio::sync::watch::Receiver<bool>) {
    while !*shutdown.borrow_and_update() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}
