//! The ReplicaSet controller (kube-runtime `Controller` owning pods): keeps `spec.replicas`
//! pods of the template alive, adopts matching orphans and releases pods that stopped
//! matching, deletes surplus pods in upstream's order, and reports replicas, fully labeled,
//! ready and available (ready for `minReadySeconds`) counts in status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;

use super::{
    Context, ControllerError, api_err, available_in, claim, controller_reference, is_active,
    is_not_found, is_ready, object_key, pod_selector, shutdown_signal,
};

/// Which surplus pods go first: unscheduled, then pending, then not ready, then the newest,
/// as upstream ranks them.
fn deletion_rank(pod: &Pod) -> (u8, u8, u8, std::cmp::Reverse<Option<String>>) {
    let unscheduled = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_none_or(str::is_empty);
    let pending = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending");
    (
        u8::from(!unscheduled),
        u8::from(!pending),
        u8::from(is_ready(pod)),
        std::cmp::Reverse(
            pod.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string()),
        ),
    )
}

fn new_pod(rs: &ReplicaSet) -> Result<Pod, ControllerError> {
    let object = format!("{}/{}", rs.namespace().unwrap_or_default(), rs.name_any());
    let template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .ok_or_else(|| ControllerError::Invalid {
            object: object.clone(),
            why: "no pod template".into(),
        })?;
    let meta = template.metadata.unwrap_or_default();
    Ok(Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", rs.name_any())),
            namespace: rs.namespace(),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![controller_reference(rs)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    })
}

async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    let ns = rs.namespace().unwrap_or_default();
    let object = object_key(rs.as_ref());
    if rs.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let api_err = |action: &'static str| api_err(&object, action);
    let spec = rs.spec.clone().unwrap_or_default();
    let selector = pod_selector(Some(&spec.selector), &object)?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    // Every active pod of the namespace: owned ones that stopped matching are released.
    let listed = pods
        .list(&ListParams::default())
        .await
        .map_err(api_err("listing pods"))?;
    let owned = claim(
        &pods,
        controller_reference(rs.as_ref()),
        rs.metadata.deletion_timestamp.is_some(),
        &selector,
        listed.items.into_iter().filter(is_active).collect(),
        &object,
    )
    .await?;
    let mut active: Vec<Pod> = owned.into_iter().filter(is_active).collect();
    let want = usize::try_from(spec.replicas.unwrap_or(1).max(0)).unwrap_or(0);
    if active.len() < want {
        let template = new_pod(&rs)?;
        for _ in active.len()..want {
            let created = pods
                .create(&PostParams::default(), &template)
                .await
                .map_err(api_err("creating a pod"))?;
            let note = format!("Created pod: {}", created.name_any());
            ctx.event(rs.as_ref(), "SuccessfulCreate", "Create", note)
                .await;
            active.push(created);
        }
    } else if active.len() > want {
        active.sort_by_key(deletion_rank);
        let surplus: Vec<Pod> = active.drain(..active.len() - want).collect();
        for pod in surplus {
            match pods.delete(&pod.name_any(), &DeleteParams::default()).await {
                Ok(_) => {
                    let note = format!("Deleted pod: {}", pod.name_any());
                    ctx.event(rs.as_ref(), "SuccessfulDelete", "Delete", note)
                        .await;
                }
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(api_err("deleting a pod")(e)),
            }
        }
    }
    let template_labels: BTreeMap<String, String> = spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let fully_labeled = active
        .iter()
        .filter(|p| {
            template_labels
                .iter()
                .all(|(k, v)| p.labels().get(k) == Some(v))
        })
        .count();
    let ready = active.iter().filter(|p| is_ready(p)).count();
    // Available: ready for at least minReadySeconds; look again when the next one will be.
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let now = jiff::Timestamp::now();
    let mut available = 0;
    let mut requeue = Duration::from_secs(300);
    for pod in &active {
        match available_in(pod, min_ready, now) {
            Some(left) if left.is_zero() => available += 1,
            Some(left) => requeue = requeue.min(left + Duration::from_millis(100)),
            None => {}
        }
    }
    let status = json!({"status": {
        "replicas": active.len(),
        "fullyLabeledReplicas": fully_labeled,
        "readyReplicas": ready,
        "availableReplicas": available,
        "observedGeneration": rs.metadata.generation,
    }});
    let sets: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
    sets.patch_status(
        &rs.name_any(),
        &PatchParams::default(),
        &Patch::Merge(status),
    )
    .await
    .map_err(api_err("updating status"))?;
    Ok(Action::requeue(requeue))
}

fn error_policy(_rs: Arc<ReplicaSet>, error: &ControllerError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(%error, "replicaset reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// Runs the ReplicaSet controller until `shutdown` turns true.
pub async fn run(client: kube::Client, shutdown: tokio::sync::watch::Receiver<bool>) {
    let sets: Api<ReplicaSet> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let ctx = Arc::new(Context::new(client, "replicaset-controller"));
    Controller::new(sets, watcher::Config::default())
        .owns(pods, watcher::Config::default())
        .graceful_shutdown_on(shutdown_signal(shutdown))
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "replicaset controller");
            }
        })
        .await;
}
