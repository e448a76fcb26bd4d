//! The scheduler: an ordinary API client (kube-rs, kube-runtime reflectors) that binds pods
//! with its schedulerName to nodes through `pods/binding`, using the pure decisions of
//! [`apimachinery::scheduling`]. It runs inside apiserver-lite by default and against any
//! API server on its own (`--scheduler-only --kubeconfig ...`).
//!
//! It wakes on every change of pods or nodes (a pod that fits nowhere is retried when the
//! cluster changes, not by polling), takes pending pods highest priority first, and remembers
//! the pods it bound until the watch shows them bound, so it never books one node's room
//! twice. A pod that fits nowhere gets PodScheduled=False/Unschedulable with upstream's
//! message and a FailedScheduling event (again only when the message changes); a bound one a
//! Scheduled event. A pod that fits nowhere and may preempt evicts the lower-priority pods
//! [`apimachinery::scheduling::preemption`] picks (each gets a Preempted event) and is
//! nominated for their node; it is bound there on a later pass, once they are gone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use apimachinery::scheduling::preemption::{NodePods, Preemption, find_preemption, may_preempt};
use apimachinery::scheduling::{NamespaceLabels, NodeInfo, select_node};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Binding, Namespace, Node, ObjectReference, Pod};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

/// The scheduler name upstream uses by default.
pub const DEFAULT_SCHEDULER: &str = "default-scheduler";

/// Why a scheduling step failed (logged; the pod is retried on the next change).
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// An API call failed.
    #[error("{action} pod {pod}: {source}")]
    Api {
        /// What the scheduler was doing.
        action: &'static str,
        /// namespace/name.
        pod: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
}

fn key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

/// A pod's identity in the assumed set: with its uid, so a pod created again under the same
/// name (a StatefulSet's) is not taken for the one bound before.
fn assumed_key(pod: &Pod) -> String {
    format!("{}/{}", key(pod), pod.metadata.uid.as_deref().unwrap_or(""))
}

fn is_pending(pod: &Pod, scheduler: &str) -> bool {
    let spec = pod.spec.as_ref();
    spec.is_some_and(|s| s.node_name.as_deref().is_none_or(str::is_empty))
        && spec
            .and_then(|s| s.scheduler_name.as_deref())
            .unwrap_or(DEFAULT_SCHEDULER)
            == scheduler
        && pod.metadata.deletion_timestamp.is_none()
        && !apimachinery::scheduling::is_terminal(pod)
}

fn unschedulable_message(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| {
            c.iter()
                .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        })
        .and_then(|c| c.message.clone())
}

/// The scheduler's state between passes.
struct Scheduler {
    client: kube::Client,
    name: String,
    pods: Store<Pod>,
    nodes: Store<Node>,
    /// Namespaces, for the `namespaceSelector` of pod affinity terms.
    namespaces: Store<Namespace>,
    /// Pods bound by this scheduler that the pod watch has not shown bound yet: key → node.
    assumed: HashMap<String, (Arc<Pod>, String)>,
}

impl Scheduler {
    /// The nodes (by name) with the pods on them, assumed bindings included.
    fn snapshot(&mut self) -> Vec<(Arc<Node>, Vec<Arc<Pod>>)> {
        let pods = self.pods.state();
        self.assumed.retain(|k, _| {
            pods.iter().any(|p| {
                assumed_key(p) == *k
                    && p.spec
                        .as_ref()
                        .is_some_and(|s| s.node_name.as_deref().is_none_or(str::is_empty))
            })
        });
        let mut by_node: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
        for p in &pods {
            if let Some(n) = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty())
            {
                by_node.entry(n).or_default().push(p.clone());
            }
        }
        for (pod, node) in self.assumed.values() {
            by_node.entry(node.clone()).or_default().push(pod.clone());
        }
        let mut nodes: Vec<Arc<Node>> = self.nodes.state();
        nodes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        nodes
            .into_iter()
            .map(|n| {
                let pods = n
                    .metadata
                    .name
                    .as_ref()
                    .and_then(|name| by_node.remove(name))
                    .unwrap_or_default();
                (n, pods)
            })
            .collect()
    }

    fn namespace_labels(&self) -> NamespaceLabels {
        self.namespaces
            .state()
            .iter()
            .map(|ns| {
                (
                    ns.metadata.name.clone().unwrap_or_default(),
                    ns.metadata.labels.clone().unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Schedules every pending pod once.
    async fn pass(&mut self) {
        let namespaces = self.namespace_labels();
        let mut pending: Vec<Arc<Pod>> = self
            .pods
            .state()
            .into_iter()
            .filter(|p| is_pending(p, &self.name))
            .filter(|p| !self.assumed.contains_key(&assumed_key(p)))
            .collect();
        pending.sort_by_key(|p| {
            let priority = p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
            (
                std::cmp::Reverse(priority),
                p.metadata.creation_timestamp.clone().map(|t| t.0),
            )
        });
        for pod in pending {
            let cluster = self.snapshot();
            let cluster: Vec<NodePods<'_>> = cluster
                .iter()
                .map(|(node, pods)| NodePods {
                    node: (**node).clone(),
                    pods: pods.iter().map(|p| p.as_ref()).collect(),
                })
                .collect();
            let nodes: Vec<NodeInfo> = cluster
                .iter()
                .map(|n| NodeInfo::new(n.node.clone(), &n.pods))
                .collect();
            let result = match select_node(&pod, &nodes, &namespaces) {
                Ok(node) => self.bind(&pod, &node).await.map(|()| {
                    self.assumed.insert(assumed_key(&pod), (pod.clone(), node));
                }),
                Err(message) => {
                    let preempted = if may_preempt(&pod, &cluster) {
                        match find_preemption(&pod, &cluster, &namespaces) {
                            Some(p) => self.preempt(&pod, &p).await,
                            None => Ok(()),
                        }
                    } else {
                        Ok(())
                    };
                    let marked = self.mark_unschedulable(&pod, &message).await;
                    preempted.and(marked)
                }
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "scheduling step failed; the pod is retried on the next change");
            }
        }
    }

    async fn bind(&self, pod: &Pod, node: &str) -> Result<(), SchedulerError> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let binding = Binding {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                uid: pod.metadata.uid.clone(),
                ..Default::default()
            },
            target: ObjectReference {
                kind: Some("Node".into()),
                name: Some(node.into()),
                api_version: Some("v1".into()),
                ..Default::default()
            },
        };
        api.create_subresource::<Binding, serde_json::Value>(
            "binding",
            &name,
            &PostParams::default(),
            &binding,
        )
        .await
        .map_err(|source| SchedulerError::Api {
            action: "binding",
            pod: key(pod),
            source,
        })?;
        tracing::info!(pod = %key(pod), node, "scheduled");
        self.event(
            pod,
            "Normal",
            "Scheduled",
            &format!("Successfully assigned {ns}/{name} to {node}"),
        )
        .await;
        Ok(())
    }

    /// Evicts the victims (each gets a `Preempted` event) and nominates the node for the pod
    /// in `status.nominatedNodeName`; the pod is bound on a later pass, once they are gone.
    async fn preempt(&self, pod: &Pod, preemption: &Preemption<'_>) -> Result<(), SchedulerError> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        for victim in &preemption.victims {
            let api: Api<Pod> = Api::namespaced(
                self.client.clone(),
                victim.metadata.namespace.as_deref().unwrap_or(""),
            );
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: victim.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api
                .delete(victim.metadata.name.as_deref().unwrap_or(""), &params)
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => continue,
                Err(source) => {
                    return Err(SchedulerError::Api {
                        action: "preempting",
                        pod: key(victim),
                        source,
                    });
                }
            }
            tracing::info!(pod = %key(pod), victim = %key(victim), node = %preemption.node, "preempted");
            self.event(
                victim,
                "Normal",
                "Preempted",
                &format!("Preempted by pod {uid} on node {}", preemption.node),
            )
            .await;
        }
        let api: Api<Pod> = Api::namespaced(
            self.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or(""),
        );
        api.patch_status(
            pod.metadata.name.as_deref().unwrap_or(""),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"nominatedNodeName": preemption.node}})),
        )
        .await
        .map_err(|source| SchedulerError::Api {
            action: "nominating a node for",
            pod: key(pod),
            source,
        })?;
        Ok(())
    }

    async fn mark_unschedulable(&self, pod: &Pod, message: &str) -> Result<(), SchedulerError> {
        if unschedulable_message(pod).as_deref() == Some(message) {
            return Ok(());
        }
        let api: Api<Pod> = Api::namespaced(
            self.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or(""),
        );
        let now = jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let patch = json!({"status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message, "lastTransitionTime": now, "lastProbeTime": null}]}});
        api.patch_status(
            pod.metadata.name.as_deref().unwrap_or(""),
            &PatchParams::default(),
            &Patch::Strategic(patch),
        )
        .await
        .map_err(|source| SchedulerError::Api {
            action: "marking unschedulable",
            pod: key(pod),
            source,
        })?;
        tracing::info!(pod = %key(pod), message, "unschedulable");
        self.event(pod, "Warning", "FailedScheduling", message)
            .await;
        Ok(())
    }

    /// Records a core/v1 Event about the pod (best effort, as upstream's recorder).
    async fn event(&self, pod: &Pod, type_: &str, reason: &str, message: &str) {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let now = jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let event: k8s_openapi::api::core::v1::Event = match serde_json::from_value(json!({
            "metadata": {"generateName": format!("{name}."), "namespace": ns},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": name, "namespace": ns, "uid": pod.metadata.uid},
            "reason": reason, "message": message, "type": type_,
            "source": {"component": self.name},
            "reportingComponent": self.name,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        })) {
            Ok(e) => e,
            Err(_) => return,
        };
        let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(self.client.clone(), &ns);
        if let Err(e) = api.create(&PostParams::default(), &event).await {
            tracing::debug!(error = %e, "recording an event failed");
        }
    }
}

/// Runs the scheduler until `shutdown` turns true.
pub async fn run(
    client: kube::Client,
    name: &str,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let (pods, pod_writer) = reflector::store();
    let (nodes, node_writer) = reflector::store();
    let (namespaces, namespace_writer) = reflector::store();
    let wake = Arc::new(tokio::sync::Notify::new());
    let pod_stream = reflector::reflector(
        pod_writer,
        watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()).default_backoff(),
    );
    let node_stream = reflector::reflector(
        node_writer,
        watcher(Api::<Node>::all(client.clone()), watcher::Config::default()).default_backoff(),
    );
    let namespace_stream = reflector::reflector(
        namespace_writer,
        watcher(
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    );
    for stream in [
        pod_stream.map(|e| e.is_ok()).boxed(),
        node_stream.map(|e| e.is_ok()).boxed(),
        namespace_stream.map(|e| e.is_ok()).boxed(),
    ] {
        let wake = wake.clone();
        tokio::spawn(async move {
            let mut stream = stream;
            while stream.next().await.is_some() {
                wake.notify_one();
            }
        });
    }
    let mut scheduler = Scheduler {
        client,
        name: name.to_string(),
        pods,
        nodes,
        namespaces,
        assumed: HashMap::new(),
    };
    tokio::select! {
        _ = scheduler.pods.wait_until_ready() => {}
        _ = shutdown.changed() => return,
    }
    let _ = scheduler.nodes.wait_until_ready().await;
    let _ = scheduler.namespaces.wait_until_ready().await;
    tracing::info!(scheduler = name, "scheduler running");
    loop {
        scheduler.pass().await;
        tokio::select! {
            _ = wake.notified() => {
                // Let a burst of changes settle into one pass.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
            _ = shutdown.changed() => return,
        }
    }
}
