//! Namespace deletion: a namespace marked for deletion is Terminating until everything in it
//! is gone; then the namespace itself is removed.
//!
//! A small loop inside the server does the work upstream's namespace controller does: it
//! deletes the objects of every namespaced resource in the namespace (pods on a node wait for
//! their node as usual; objects with finalizers wait for their controllers) and removes the
//! namespace once nothing is left. It wakes when a namespace is deleted and otherwise checks
//! every few seconds, resuming after a restart.

use std::sync::Arc;
use std::time::Duration;

use apimachinery::resources::RESOURCES;
use serde_json::Value;

use crate::api::Api;
use crate::api::request::{Query, ResourceRequest, Verb};
use crate::storage::{StoreError, list_all};

/// How long after a namespace is marked its contents start to be deleted.
const CONTENT_DELETION_DELAY: Duration = Duration::from_secs(1);

/// Runs until `shutdown` turns true.
pub async fn run(api: Arc<Api>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        if let Err(e) = finalize_all(&api).await {
            tracing::warn!(error = %e, "namespace finalization pass failed; will retry");
        }
        tokio::select! {
            _ = api.namespace_wakeup.notified() => {
                // Let a client that deletes a namespace and then its contents (`kubectl delete
                // -f` of a manifest that starts with the namespace) finish first, as the
                // upstream controller's queue and discovery pass do.
                tokio::select! {
                    _ = tokio::time::sleep(CONTENT_DELETION_DELAY) => {}
                    _ = shutdown.changed() => return,
                }
            }
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Wakes the loop after a namespace was marked for deletion.
pub fn finalize_soon(api: &Api, _name: &str) {
    api.namespace_wakeup.notify_one();
}

async fn finalize_all(api: &Api) -> Result<(), StoreError> {
    let namespaces = list_all(api.store.as_ref(), "/registry/namespaces/").await?;
    for kv in namespaces.items {
        let Ok(ns) = serde_json::from_slice::<Value>(&kv.value) else {
            continue;
        };
        if ns["metadata"]["deletionTimestamp"].is_null() {
            continue;
        }
        let name = ns["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let remaining = empty_namespace(api, &name).await?;
        if remaining > 0 {
            tracing::debug!(namespace = %name, remaining, "namespace still has objects");
            continue;
        }
        let has_finalizers = ns["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            continue;
        }
        match api.store.delete(&kv.key, Some(kv.mod_revision)).await {
            Ok(_) => tracing::info!(namespace = %name, "namespace deleted"),
            Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Deletes what is in the namespace; returns how many objects remain.
async fn empty_namespace(api: &Api, namespace: &str) -> Result<usize, StoreError> {
    let mut remaining = 0;
    for r in RESOURCES
        .iter()
        .filter(|r| r.namespaced && r.storage_of.is_none())
    {
        let listed = list_all(
            api.store.as_ref(),
            &format!("{}{namespace}/", r.storage_prefix()),
        )
        .await?;
        for kv in listed.items {
            remaining += 1;
            let name = kv.key.rsplit('/').next().unwrap_or_default().to_string();
            let request = ResourceRequest {
                resource: r,
                namespace: Some(namespace.to_string()),
                name: Some(name.clone()),
                subresource: None,
                verb: Verb::Delete,
                query: Query::default(),
            };
            if let Err(e) = crate::api::objects::delete_internal(api, &request).await
                && e.code != 404
            {
                tracing::warn!(namespace, resource = r.plural, %name, error = %e.message, "deleting an object of a terminating namespace failed");
            }
        }
    }
    Ok(remaining)
}
