//! Pods on this node: a watch of the pods bound here (fieldSelector spec.nodeName), one worker
//! task per pod, and a relister that lists the runtime's sandboxes and containers every second
//! (the role of kubelet's PLEG) and hands each worker its slice, so a worker wakes when its
//! pod's runtime objects change instead of on a timer. Runtime objects of pods the API no longer has
//! are stopped and removed.

pub mod admission;
pub mod backoff;
pub mod config;
pub mod netprobe;
pub mod plan;
pub mod probe;
pub mod pull_secrets;
pub mod status;
pub mod volumes;
pub mod worker;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher;
use tokio::sync::watch;
use tracing::{info, warn};

use worker::{RuntimeSlice, Shared, Worker};

struct Handle {
    pod_tx: watch::Sender<Option<Arc<Pod>>>,
    runtime_tx: watch::Sender<RuntimeSlice>,
    task: tokio::task::JoinHandle<()>,
}

/// Runs the pod manager until `shutdown` resolves. Containers keep running when the agent
/// stops: a restarted agent adopts them.
pub async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let api: Api<Pod> = Api::all(shared.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", shared.node_name));
    let mut events = watcher(api, config).boxed();
    let mut workers: HashMap<String, Handle> = HashMap::new();
    let mut synced = false;
    let mut init_seen: HashSet<String> = HashSet::new();
    let mut relist = tokio::time::interval(Duration::from_secs(1));
    relist.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            event = events.next() => {
                let Some(event) = event else { break };
                match event {
                    Ok(watcher::Event::Apply(pod)) | Ok(watcher::Event::InitApply(pod)) => {
                        if let Some(uid) = pod.metadata.uid.clone() {
                            init_seen.insert(uid.clone());
                            let pod = if workers.contains_key(&uid) { pod } else { admit(&shared, &workers, pod).await };
                            deliver(&shared, &mut workers, uid, Some(Arc::new(pod)));
                        }
                    }
                    Ok(watcher::Event::Delete(pod)) => {
                        if let Some(uid) = pod.metadata.uid.clone() {
                            deliver(&shared, &mut workers, uid, None);
                        }
                    }
                    Ok(watcher::Event::Init) => init_seen.clear(),
                    Ok(watcher::Event::InitDone) => {
                        // Pods that went away while the watch was down.
                        let gone: Vec<String> = workers.keys().filter(|u| !init_seen.contains(*u)).cloned().collect();
                        for uid in gone {
                            deliver(&shared, &mut workers, uid, None);
                        }
                        synced = true;
                    }
                    Err(e) => {
                        warn!(error = %e, "pod watch failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
            _ = relist.tick() => {
                relist_runtime(&shared, &mut workers, synced).await;
            }
        }
        workers.retain(|_, h| !h.task.is_finished());
    }
    for (_, handle) in workers {
        handle.task.abort();
    }
}

/// Admits a pod new to this agent: one it has never started (no startTime) must fit beside
/// the pods already here; a rejected one is marked Failed with the reason, locally at once and
/// in the API.
async fn admit(shared: &Arc<Shared>, workers: &HashMap<String, Handle>, mut pod: Pod) -> Pod {
    let fresh = pod.metadata.deletion_timestamp.is_none()
        && pod.status.as_ref().is_none_or(|s| {
            s.start_time.is_none() && s.phase.as_deref().is_none_or(|p| p == "Pending")
        });
    if !fresh {
        return pod;
    }
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(shared.client.clone());
    let node = match nodes.get(&shared.node_name).await {
        Ok(node) => node,
        Err(e) => {
            warn!(error = %e, "reading the node for pod admission failed; admitting");
            return pod;
        }
    };
    let others: Vec<Arc<Pod>> = workers
        .values()
        .filter_map(|h| h.pod_tx.borrow().clone())
        .collect();
    let others: Vec<&Pod> = others.iter().map(|p| p.as_ref()).collect();
    let Err(rejection) = admission::admit(&pod, &node, &others) else {
        return pod;
    };
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    info!(pod = %format!("{namespace}/{name}"), reason = %rejection.reason, "pod rejected at admission");
    let status = serde_json::json!({"status": {
        "phase": "Failed",
        "reason": rejection.reason,
        "message": rejection.message,
        "startTime": jiff::Timestamp::now().to_string(),
    }});
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), &namespace);
    if let Err(e) = api
        .patch_status(
            &name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&status),
        )
        .await
    {
        warn!(error = %e, "recording the admission failure failed");
    }
    let local = pod.status.get_or_insert_with(Default::default);
    local.phase = Some("Failed".into());
    local.reason = Some(rejection.reason);
    local.message = Some(rejection.message);
    pod
}

fn deliver(
    shared: &Arc<Shared>,
    workers: &mut HashMap<String, Handle>,
    uid: String,
    pod: Option<Arc<Pod>>,
) {
    if let Some(handle) = workers.get(&uid).filter(|h| !h.task.is_finished()) {
        let _ = handle.pod_tx.send(pod);
        return;
    }
    let (pod_tx, pod_rx) = watch::channel(pod);
    let (runtime_tx, runtime_rx) = watch::channel(RuntimeSlice::default());
    let worker = Worker::new(shared.clone(), uid.clone(), pod_rx, runtime_rx);
    let task = tokio::spawn(worker.run());
    workers.insert(
        uid,
        Handle {
            pod_tx,
            runtime_tx,
            task,
        },
    );
}

async fn relist_runtime(shared: &Arc<Shared>, workers: &mut HashMap<String, Handle>, synced: bool) {
    let (sandboxes, containers) = match (
        shared.runtime.list_sandboxes().await,
        shared.runtime.list_containers().await,
    ) {
        (Ok(s), Ok(c)) => (s, c),
        (Err(e), _) | (_, Err(e)) => {
            warn!(error = %e, "listing the runtime failed");
            return;
        }
    };
    let mut slices: BTreeMap<String, RuntimeSlice> = BTreeMap::new();
    for sandbox in sandboxes {
        if let Some(uid) = sandbox.labels.get(config::POD_UID_LABEL).cloned() {
            slices.entry(uid).or_default().sandboxes.push(sandbox);
        }
    }
    for container in containers {
        if let Some(uid) = container.labels.get(config::POD_UID_LABEL).cloned() {
            slices.entry(uid).or_default().containers.push(container);
        }
    }
    for (uid, slice) in slices {
        match workers.get(&uid) {
            Some(handle) => {
                handle.runtime_tx.send_if_modified(|current| {
                    if *current == slice {
                        false
                    } else {
                        *current = slice;
                        true
                    }
                });
            }
            None if synced => {
                // The runtime holds a pod the API does not bind here (deleted while the agent
                // was away): a worker with no pod cleans it up.
                info!(pod_uid = %uid, "cleaning up the runtime objects of a pod that is gone");
                deliver(shared, workers, uid.clone(), None);
                if let Some(handle) = workers.get(&uid) {
                    let _ = handle.runtime_tx.send(slice);
                }
            }
            None => {}
        }
    }
}
