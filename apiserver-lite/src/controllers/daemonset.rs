//! The DaemonSet controller: one pod of the template on every node that should run it (the
//! template's nodeSelector and required node affinity match, and its tolerations cover the
//! node's NoSchedule and NoExecute taints), placed as upstream does by a node affinity on
//! `metadata.name` that the scheduler honours, with the tolerations upstream adds to daemon
//! pods. Templates are told apart by the `controller-revision-hash` label; RollingUpdate
//! replaces old pods within `maxUnavailable`, OnDelete waits for the user. The decision is the
//! pure [`plan`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use apimachinery::scheduling::{node_affinity_matches, tolerates};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    Toleration,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde_json::json;

use super::rollout::template_hash;
use super::{
    Context, ControllerError, api_err, available_in, claim, controller_reference, is_active,
    is_not_found, is_ready, object_key, pod_selector, shutdown_signal,
};

/// The label carrying the template's hash on daemon pods.
const REVISION_LABEL: &str = "controller-revision-hash";

/// The tolerations upstream gives every daemon pod, so it runs on nodes that are not ready,
/// unreachable, under pressure or cordoned.
fn daemon_tolerations() -> Vec<Toleration> {
    let exists = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    };
    vec![
        exists("node.kubernetes.io/not-ready", "NoExecute"),
        exists("node.kubernetes.io/unreachable", "NoExecute"),
        exists("node.kubernetes.io/disk-pressure", "NoSchedule"),
        exists("node.kubernetes.io/memory-pressure", "NoSchedule"),
        exists("node.kubernetes.io/pid-pressure", "NoSchedule"),
        exists("node.kubernetes.io/unschedulable", "NoSchedule"),
    ]
}

/// The daemon pod for `node` from `template_pod` (the template as a pod, tolerations added).
fn pod_for_node(ds: &DaemonSet, template_pod: &Pod, hash: &str, node: &str) -> Pod {
    let mut pod = template_pod.clone();
    let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(REVISION_LABEL.into(), hash.into());
    pod.metadata.generate_name = Some(format!("{}-", ds.name_any()));
    pod.metadata.namespace = ds.namespace();
    pod.metadata.owner_references = Some(vec![controller_reference(ds)]);
    let spec = pod.spec.get_or_insert_with(Default::default);
    // Upstream replaces any required node affinity with the node's name; the scheduler
    // binds the pod there.
    let term = NodeSelectorTerm {
        match_fields: Some(vec![NodeSelectorRequirement {
            key: "metadata.name".into(),
            operator: "In".into(),
            values: Some(vec![node.into()]),
        }]),
        match_expressions: None,
    };
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let node_affinity = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    node_affinity.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![term],
    });
    pod
}

/// The template as a pod, with the daemon tolerations, for placement checks and creation.
fn template_pod(ds: &DaemonSet) -> Pod {
    let template = ds
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let mut spec = template.spec.unwrap_or_default();
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for t in daemon_tolerations() {
        if !tolerations.contains(&t) {
            tolerations.push(t);
        }
    }
    Pod {
        metadata: ObjectMeta {
            labels: meta.labels,
            annotations: meta.annotations,
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// Whether a daemon pod belongs on `node`: placement and the node's NoSchedule/NoExecute
/// taints, as upstream's `nodeShouldRunDaemonPod`.
pub(crate) fn should_run(pod: &Pod, node: &Node) -> bool {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    let taints_ok = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|t| tolerates(&tolerations, t));
    node.metadata.deletion_timestamp.is_none() && taints_ok && node_affinity_matches(pod, node)
}

/// The node a daemon pod is for: where it is bound, else its node-name affinity.
fn node_of(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|f| f.key == "metadata.name" && f.operator == "In")
        .and_then(|f| f.values.as_ref()?.first().cloned())
}

/// What to do: nodes needing a pod, pods to delete.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Plan {
    pub(crate) create_on: Vec<String>,
    pub(crate) delete: Vec<String>,
}

/// The pure decision. `pods` are the set's active pods; `available(pod)` says whether a pod
/// counts as available; `max_unavailable` bounds rolling replacement (`None`: OnDelete).
pub(crate) fn plan(
    template: &Pod,
    hash: &str,
    nodes: &[Node],
    pods: &[&Pod],
    available: impl Fn(&Pod) -> bool,
    max_unavailable: Option<usize>,
) -> Plan {
    let mut by_node: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    for pod in pods {
        by_node
            .entry(node_of(pod).unwrap_or_default())
            .or_default()
            .push(pod);
    }
    let mut out = Plan::default();
    let wanted: BTreeMap<&str, bool> = nodes
        .iter()
        .map(|n| {
            (
                n.metadata.name.as_deref().unwrap_or(""),
                should_run(template, n),
            )
        })
        .collect();
    let mut unavailable = 0usize;
    let mut outdated_available: Vec<&Pod> = Vec::new();
    for (node, want) in &wanted {
        let here = by_node.remove(*node).unwrap_or_default();
        if !want {
            out.delete.extend(here.iter().map(|p| p.name_any()));
            continue;
        }
        if here.is_empty() {
            out.create_on.push(node.to_string());
            unavailable += 1;
            continue;
        }
        // One per node: keep the current revision's, the oldest first.
        let mut here = here;
        here.sort_by_key(|p| {
            (
                p.labels().get(REVISION_LABEL).map(String::as_str) != Some(hash),
                p.metadata.creation_timestamp.as_ref().map(|t| t.0),
            )
        });
        let (keep, extra) = here.split_at(1);
        out.delete.extend(extra.iter().map(|p| p.name_any()));
        let kept = keep[0];
        let current = kept.labels().get(REVISION_LABEL).map(String::as_str) == Some(hash);
        if !available(kept) {
            unavailable += 1;
            if !current && max_unavailable.is_some() {
                // An old pod that is not available anyway goes at once.
                out.delete.push(kept.name_any());
            }
        } else if !current {
            outdated_available.push(kept);
        }
    }
    // Pods on nodes that are gone (or unknown).
    for pods in by_node.values() {
        out.delete.extend(pods.iter().map(|p| p.name_any()));
    }
    if let Some(max) = max_unavailable {
        let room = max.max(1).saturating_sub(unavailable);
        out.delete
            .extend(outdated_available.iter().take(room).map(|p| p.name_any()));
    }
    out
}

/// `maxUnavailable` as a number of nodes (percentages of the desired count, rounded up as
/// upstream rounds it for DaemonSets).
fn max_unavailable(ds: &DaemonSet, desired: usize) -> Option<usize> {
    let strategy = ds
        .spec
        .as_ref()?
        .update_strategy
        .clone()
        .unwrap_or_default();
    if strategy.type_.as_deref() == Some("OnDelete") {
        return None;
    }
    let value = strategy
        .rolling_update
        .and_then(|r| r.max_unavailable)
        .unwrap_or(IntOrString::Int(1));
    Some(match value {
        IntOrString::Int(n) => usize::try_from(n.max(0)).unwrap_or(0),
        IntOrString::String(s) => {
            let pct: usize = s.trim_end_matches('%').parse().unwrap_or(0);
            (desired * pct).div_ceil(100)
        }
    })
}

async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    let ns = ds.namespace().unwrap_or_default();
    let object = object_key(ds.as_ref());
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let spec = ds.spec.clone().unwrap_or_default();
    let selector = pod_selector(Some(&spec.selector), &object)?;
    let hash = template_hash(&spec.template, None);
    let template = template_pod(&ds);
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let nodes = nodes
        .list(&ListParams::default())
        .await
        .map_err(api_err(&object, "listing nodes"))?
        .items;
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let listed = pods_api
        .list(&ListParams::default())
        .await
        .map_err(api_err(&object, "listing pods"))?;
    let owned = claim(
        &pods_api,
        controller_reference(ds.as_ref()),
        false,
        &selector,
        listed.items.into_iter().filter(is_active).collect(),
        &object,
    )
    .await?;
    let active: Vec<&Pod> = owned.iter().filter(|p| is_active(p)).collect();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let now = jiff::Timestamp::now();
    let available = |p: &Pod| available_in(p, min_ready, now).is_some_and(|l| l.is_zero());
    let desired = nodes.iter().filter(|n| should_run(&template, n)).count();
    let decision = plan(
        &template,
        &hash,
        &nodes,
        &active,
        available,
        max_unavailable(&ds, desired),
    );
    for node in &decision.create_on {
        let pod = pod_for_node(&ds, &template, &hash, node);
        let created = pods_api
            .create(&PostParams::default(), &pod)
            .await
            .map_err(api_err(&object, "creating a pod"))?;
        let note = format!("Created pod: {}", created.name_any());
        ctx.event(ds.as_ref(), "SuccessfulCreate", "Create", note)
            .await;
    }
    for name in &decision.delete {
        match pods_api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {
                let note = format!("Deleted pod: {name}");
                ctx.event(ds.as_ref(), "SuccessfulDelete", "Delete", note)
                    .await;
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(api_err(&object, "deleting a pod")(e)),
        }
    }

    // Status, from the pods as they were (the next round sees the changes).
    let wanted: Vec<&str> = nodes
        .iter()
        .filter(|n| should_run(&template, n))
        .filter_map(|n| n.metadata.name.as_deref())
        .collect();
    let mut current = 0;
    let mut misscheduled = 0;
    let mut ready = 0;
    let mut avail = 0;
    let mut updated = 0;
    let mut seen_nodes = std::collections::BTreeSet::new();
    for pod in &active {
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            continue;
        };
        if !wanted.contains(&node.as_str()) {
            misscheduled += 1;
            continue;
        }
        if !seen_nodes.insert(node) {
            continue;
        }
        current += 1;
        ready += usize::from(is_ready(pod));
        avail += usize::from(available(pod));
        updated += usize::from(pod.labels().get(REVISION_LABEL) == Some(&hash));
    }
    let status = json!({"status": {
        "desiredNumberScheduled": desired,
        "currentNumberScheduled": current,
        "numberMisscheduled": misscheduled,
        "numberReady": ready,
        "numberAvailable": avail,
        "numberUnavailable": desired.saturating_sub(avail),
        "updatedNumberScheduled": updated,
        "observedGeneration": ds.metadata.generation,
    }});
    let sets: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &ns);
    sets.patch_status(
        &ds.name_any(),
        &PatchParams::default(),
        &Patch::Merge(status),
    )
    .await
    .map_err(api_err(&object, "updating status"))?;
    Ok(Action::requeue(Duration::from_secs(if min_ready > 0 {
        1
    } else {
        300
    })))
}

fn error_policy(_ds: Arc<DaemonSet>, error: &ControllerError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(%error, "daemonset reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// Runs the DaemonSet controller until `shutdown` turns true. Node changes (added, labels,
/// taints) look at every DaemonSet again.
pub async fn run(client: kube::Client, shutdown: tokio::sync::watch::Receiver<bool>) {
    let sets: Api<DaemonSet> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let ctx = Arc::new(Context::new(client, "daemonset-controller"));
    let controller = Controller::new(sets, watcher::Config::default());
    let store = controller.store();
    controller
        .owns(pods, watcher::Config::default())
        .watches(nodes, watcher::Config::default(), move |_node: Node| {
            store
                .state()
                .iter()
                .map(|ds| ObjectRef::from_obj(ds.as_ref()))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown_signal(shutdown))
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "daemonset controller");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSpec, PodSpec, Taint};

    fn node(name: &str, labels: &[(&str, &str)], taint: Option<&str>) -> Node {
        let mut n = Node::default();
        n.metadata.name = Some(name.into());
        n.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        n.spec = Some(NodeSpec {
            taints: taint.map(|key| {
                vec![Taint {
                    key: key.into(),
                    effect: "NoSchedule".into(),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        });
        n
    }

    fn daemon(node_name: &str, hash: &str, name: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.labels = Some([(REVISION_LABEL.to_string(), hash.to_string())].into());
        p.spec = Some(PodSpec {
            node_name: Some(node_name.into()),
            ..Default::default()
        });
        p
    }

    fn template(selector: Option<(&str, &str)>) -> Pod {
        let mut ds = DaemonSet::default();
        let spec = ds.spec.get_or_insert_with(Default::default);
        spec.template.spec = Some(PodSpec {
            node_selector: selector.map(|(k, v)| [(k.to_string(), v.to_string())].into()),
            ..Default::default()
        });
        template_pod(&ds)
    }

    #[test]
    fn one_pod_per_eligible_node() {
        let nodes = vec![
            node("a", &[("disk", "ssd")], None),
            node("b", &[("disk", "hdd")], None),
            node("c", &[("disk", "ssd")], Some("dedicated")),
            node(
                "d",
                &[("disk", "ssd")],
                Some("node.kubernetes.io/unschedulable"),
            ),
        ];
        let t = template(Some(("disk", "ssd")));
        let existing = daemon("b", "h1", "on-b");
        let p = plan(&t, "h1", &nodes, &[&existing], |_| true, Some(1));
        // a and d (cordoned nodes are tolerated) get pods; c's taint is not tolerated; b no
        // longer matches the selector.
        assert_eq!(p.create_on, vec!["a", "d"]);
        assert_eq!(p.delete, vec!["on-b"]);
    }

    #[test]
    fn rolling_update_replaces_within_max_unavailable() {
        let nodes = vec![
            node("a", &[], None),
            node("b", &[], None),
            node("c", &[], None),
        ];
        let t = template(None);
        let pods = [
            daemon("a", "old", "pa"),
            daemon("b", "old", "pb"),
            daemon("c", "new", "pc"),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let p = plan(&t, "new", &nodes, &refs, |_| true, Some(1));
        assert_eq!(p.delete.len(), 1);
        assert!(p.create_on.is_empty());
        // One node already without an available pod: nothing more goes.
        let p = plan(
            &t,
            "new",
            &nodes,
            &refs,
            |pod| pod.name_any() != "pc",
            Some(1),
        );
        assert!(p.delete.is_empty(), "{p:?}");
        // OnDelete: old pods stay.
        let p = plan(&t, "new", &nodes, &refs, |_| true, None);
        assert!(p.delete.is_empty());
    }

    #[test]
    fn duplicates_and_pods_on_vanished_nodes_go() {
        let nodes = vec![node("a", &[], None)];
        let t = template(None);
        let pods = [
            daemon("a", "h", "first"),
            daemon("a", "h", "second"),
            daemon("gone", "h", "orphan"),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let p = plan(&t, "h", &nodes, &refs, |_| true, Some(1));
        assert_eq!(p.delete.len(), 2);
        assert!(p.delete.contains(&"orphan".to_string()));
    }

    #[test]
    fn daemon_pods_are_pinned_to_their_node_and_tolerate_node_trouble() {
        let mut ds = DaemonSet::default();
        ds.metadata.name = Some("agent".into());
        let t = template_pod(&ds);
        let pod = pod_for_node(&ds, &t, "h", "node-1");
        assert_eq!(node_of(&pod).as_deref(), Some("node-1"));
        let tolerations = pod.spec.unwrap_or_default().tolerations.unwrap_or_default();
        assert!(
            tolerations
                .iter()
                .any(|t| t.key.as_deref() == Some("node.kubernetes.io/unreachable"))
        );
        assert_eq!(pod.metadata.labels.unwrap_or_default()[REVISION_LABEL], "h");
    }
}
