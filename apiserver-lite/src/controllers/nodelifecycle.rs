//! Node lifecycle, as upstream's node lifecycle controller with its taint-based eviction:
//!
//! - Health: a Node is healthy while its Lease in `kube-node-lease` (or its Ready condition's
//!   heartbeat) keeps changing. When neither changed for `--node-monitor-grace-period` (50 s,
//!   upstream's default since 1.32; `--node-startup-grace-period`, 60 s, for a Node that never
//!   posted a Ready condition), its conditions become Unknown with reason `NodeStatusUnknown`
//!   ("Kubelet stopped posting node status.") and the Ready condition of its pods False.
//!   Time is measured from when this controller saw the last change, not from the
//!   timestamps' values, so clock skew between hosts does not matter (as upstream).
//! - Taints: Ready=Unknown gives `node.kubernetes.io/unreachable`, Ready=False gives
//!   `node.kubernetes.io/not-ready`, each NoSchedule and NoExecute; they go when Ready is True.
//! - Eviction: pods on a node with NoExecute taints that do not tolerate them all are deleted
//!   at once; those that do are deleted once the shortest `tolerationSeconds` of the matching
//!   tolerations has passed since the taint was added (never without one).
//!
//! The decisions ([`stale_conditions`], [`taints_for`], [`eviction`]) are pure.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde_json::json;
use tokio::time::Instant;

use super::{Context, ControllerError, api_err, is_not_found, object_key, shutdown_signal};

/// The taint of a node whose status is Unknown.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taint of a node that says it is not ready.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The namespace of node leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
const STALE_REASON: &str = "NodeStatusUnknown";
const STALE_MESSAGE: &str = "Kubelet stopped posting node status.";
const NEVER_REASON: &str = "NodeStatusNeverUpdated";
const NEVER_MESSAGE: &str = "Kubelet never posted node status.";
/// The conditions a kubelet posts and that go Unknown with it.
const KUBELET_CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// Grace periods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// How long a node may go without a heartbeat.
    pub grace: Duration,
    /// The same for a node that never posted a Ready condition.
    pub startup_grace: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            grace: Duration::from_secs(50),
            startup_grace: Duration::from_secs(60),
        }
    }
}

/// The status of a node's condition `type_`, if it has one.
pub fn condition_status<'a>(node: &'a Node, type_: &str) -> Option<&'a str> {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.as_str())
}

/// The conditions of a node that stopped reporting: the kubelet's ones Unknown (those never
/// posted added as such), others as they were. `None` when they already say so.
pub fn stale_conditions(node: &Node, now: jiff::Timestamp) -> Option<Vec<NodeCondition>> {
    let mut conditions: Vec<NodeCondition> = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut changed = false;
    for type_ in KUBELET_CONDITIONS {
        match conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) if c.status == "Unknown" => {}
            Some(c) => {
                c.status = "Unknown".into();
                c.reason = Some(STALE_REASON.into());
                c.message = Some(STALE_MESSAGE.into());
                c.last_transition_time = Some(Time(now));
                changed = true;
            }
            None => {
                conditions.push(NodeCondition {
                    type_: type_.into(),
                    status: "Unknown".into(),
                    reason: Some(NEVER_REASON.into()),
                    message: Some(NEVER_MESSAGE.into()),
                    last_transition_time: Some(Time(now)),
                    last_heartbeat_time: None,
                });
                changed = true;
            }
        }
    }
    changed.then_some(conditions)
}

/// The taints a node should have given its Ready status; `None` when it has them already.
/// NoExecute taints get `timeAdded` (`now`); other taints are kept as they are.
pub fn taints_for(
    current: &[Taint],
    ready: Option<&str>,
    now: jiff::Timestamp,
) -> Option<Vec<Taint>> {
    let want_key = match ready {
        Some("True") => None,
        Some("False") => Some(NOT_READY),
        Some(_) => Some(UNREACHABLE),
        // No Ready condition yet: nothing to say until the grace period says Unknown.
        None => return None,
    };
    let mut next: Vec<Taint> = current
        .iter()
        .filter(|t| {
            let ours = t.key == UNREACHABLE || t.key == NOT_READY;
            let effect_ours = t.effect == "NoSchedule" || t.effect == "NoExecute";
            !(ours && effect_ours) || Some(t.key.as_str()) == want_key
        })
        .cloned()
        .collect();
    if let Some(key) = want_key {
        for effect in ["NoSchedule", "NoExecute"] {
            if !next.iter().any(|t| t.key == key && t.effect == effect) {
                next.push(Taint {
                    key: key.into(),
                    effect: effect.into(),
                    time_added: (effect == "NoExecute").then_some(Time(now)),
                    value: None,
                });
            }
        }
    }
    (next != current).then_some(next)
}

/// When a pod must leave a node with `taints` (only the NoExecute ones count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// The pod tolerates the taints for good (or there are none).
    Never,
    /// At once: some NoExecute taint is not tolerated.
    Now,
    /// Once this time has come.
    At(jiff::Timestamp),
}

/// The eviction of a pod with `tolerations` from a node with `taints`, as upstream's taint
/// manager decides it: the shortest tolerationSeconds (negative counting as zero) of the
/// tolerations that match a NoExecute taint, counted from the newest such taint's timeAdded
/// (`now` when unknown).
pub fn eviction(tolerations: &[Toleration], taints: &[Taint], now: jiff::Timestamp) -> Eviction {
    let no_execute: Vec<&Taint> = taints.iter().filter(|t| t.effect == "NoExecute").collect();
    if no_execute.is_empty() {
        return Eviction::Never;
    }
    let mut shortest: Option<i64> = None;
    for taint in &no_execute {
        let matching: Vec<&Toleration> = tolerations
            .iter()
            .filter(|t| apimachinery::scheduling::tolerates(std::slice::from_ref(*t), taint))
            .collect();
        if matching.is_empty() {
            return Eviction::Now;
        }
        for t in matching {
            if let Some(s) = t.toleration_seconds {
                shortest = Some(shortest.map_or(s.max(0), |m| m.min(s.max(0))));
            }
        }
    }
    let Some(seconds) = shortest else {
        return Eviction::Never;
    };
    let since = no_execute
        .iter()
        .filter_map(|t| t.time_added.as_ref().map(|t| t.0))
        .max()
        .unwrap_or(now);
    let at = since + jiff::SignedDuration::from_secs(seconds);
    if at <= now {
        Eviction::Now
    } else {
        Eviction::At(at)
    }
}

/// The pod conditions with Ready set False, or `None` when it is not True.
pub fn pod_not_ready(
    pod: &Pod,
    now: jiff::Timestamp,
) -> Option<Vec<k8s_openapi::api::core::v1::PodCondition>> {
    let mut conditions = pod.status.as_ref()?.conditions.clone()?;
    let ready = conditions
        .iter_mut()
        .find(|c| c.type_ == "Ready" && c.status == "True")?;
    ready.status = "False".into();
    ready.last_transition_time = Some(Time(now));
    Some(conditions)
}

/// What was last seen of a node's heartbeats, and when.
#[derive(Debug, Clone)]
struct Probe {
    seen: (Option<String>, Option<String>),
    at: Instant,
}

struct State {
    ctx: Context,
    settings: Settings,
    probes: Mutex<HashMap<String, Probe>>,
}

fn heartbeat(node: &Node) -> Option<String> {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())?
        .iter()
        .find(|c| c.type_ == "Ready")
        .and_then(|c| c.last_heartbeat_time.as_ref())
        .map(|t| t.0.to_string())
}

async fn reconcile(node: Arc<Node>, this: Arc<State>) -> Result<Action, ControllerError> {
    let name = node.name_any();
    let object = object_key(node.as_ref());
    if node.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let client = &this.ctx.client;
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let lease = leases
        .get_opt(&name)
        .await
        .map_err(api_err(&object, "reading the node lease"))?;
    let renewed = lease
        .and_then(|l| l.spec)
        .and_then(|s| s.renew_time)
        .map(|t| t.0.to_string());
    let seen = (renewed, heartbeat(&node));
    let now = Instant::now();
    let since = {
        let Ok(mut probes) = this.probes.lock() else {
            return Ok(Action::requeue(Duration::from_secs(1)));
        };
        let probe = probes.entry(name.clone()).or_insert_with(|| Probe {
            seen: seen.clone(),
            at: now,
        });
        if probe.seen != seen {
            *probe = Probe { seen, at: now };
        }
        probe.at
    };
    let grace = if condition_status(&node, "Ready").is_some() {
        this.settings.grace
    } else {
        this.settings.startup_grace
    };
    let stale_in = (since + grace).saturating_duration_since(now);
    let wall = jiff::Timestamp::now();
    let nodes: Api<Node> = Api::all(client.clone());
    let mut current = (*node).clone();
    if stale_in.is_zero()
        && let Some(conditions) = stale_conditions(&node, wall)
    {
        let updated = nodes
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"conditions": conditions}})),
            )
            .await
            .map_err(api_err(&object, "marking the node status unknown"))?;
        tracing::warn!(node = %name, "node stopped posting status: conditions Unknown");
        this.ctx
            .event(
                node.as_ref(),
                "NodeNotReady",
                "NodeNotReady",
                format!("Node {name} status is now: NodeNotReady"),
            )
            .await;
        current = updated;
    }
    let ready = condition_status(&current, "Ready").map(String::from);
    let taints = current
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let taints = match taints_for(&taints, ready.as_deref(), wall) {
        Some(next) => {
            nodes
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({
                        "metadata": {"resourceVersion": current.metadata.resource_version},
                        // No taints left: the field goes, as after `kubectl taint ... -`.
                        "spec": {"taints": if next.is_empty() { json!(null) } else { json!(next) }},
                    })),
                )
                .await
                .map_err(api_err(&object, "updating the node's taints"))?;
            tracing::info!(node = %name, ready = ?ready, "node taints updated");
            next
        }
        None => taints,
    };
    let mut next_look: Option<Duration> = (!stale_in.is_zero()).then_some(stale_in);
    let unknown = ready.as_deref() == Some("Unknown");
    let no_execute = taints.iter().any(|t| t.effect == "NoExecute");
    if unknown || no_execute {
        let pods: Api<Pod> = Api::all(client.clone());
        let on_node = pods
            .list(&ListParams::default().fields(&format!("spec.nodeName={name}")))
            .await
            .map_err(api_err(&object, "listing the node's pods"))?;
        for pod in on_node.items {
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let pod_ns = pod.namespace().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(client.clone(), &pod_ns);
            if unknown && let Some(conditions) = pod_not_ready(&pod, wall) {
                match api
                    .patch_status(
                        &pod.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(json!({"status": {"conditions": conditions}})),
                    )
                    .await
                {
                    Ok(_) | Err(kube::Error::Api(_)) => {}
                    Err(e) => return Err(api_err(&object, "marking a pod not ready")(e)),
                }
            }
            let tolerations = pod
                .spec
                .as_ref()
                .and_then(|s| s.tolerations.clone())
                .unwrap_or_default();
            match eviction(&tolerations, &taints, wall) {
                Eviction::Never => {}
                Eviction::At(at) => {
                    let left = at.duration_since(wall).unsigned_abs();
                    next_look = Some(next_look.map_or(left, |n| n.min(left)));
                }
                Eviction::Now => {
                    match api.delete(&pod.name_any(), &DeleteParams::default()).await {
                        Ok(_) => {
                            tracing::info!(pod = %object_key(&pod), node = %name, "evicted by NoExecute taint");
                            this.ctx
                                .event(
                                    &pod,
                                    "TaintManagerEviction",
                                    "Delete",
                                    format!("Marking for deletion Pod {}", object_key(&pod)),
                                )
                                .await;
                        }
                        Err(e) if is_not_found(&e) => {}
                        Err(e) => return Err(api_err(&object, "evicting a pod")(e)),
                    }
                }
            }
        }
    }
    Ok(match next_look {
        Some(d) => Action::requeue(d + Duration::from_millis(200)),
        None => Action::await_change(),
    })
}

fn error_policy(_node: Arc<Node>, error: &ControllerError, _this: Arc<State>) -> Action {
    tracing::warn!(%error, "node lifecycle reconcile failed; retrying");
    Action::requeue(Duration::from_secs(1))
}

/// Runs the node lifecycle controller until `shutdown` turns true.
pub async fn run(
    client: kube::Client,
    settings: Settings,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let this = Arc::new(State {
        ctx: Context::new(client.clone(), "node-controller"),
        settings,
        probes: Mutex::new(HashMap::new()),
    });
    Controller::new(Api::<Node>::all(client.clone()), watcher::Config::default())
        .watches(
            Api::<Lease>::namespaced(client.clone(), LEASE_NAMESPACE),
            watcher::Config::default(),
            |lease: Lease| Some(ObjectRef::<Node>::new(&lease.name_any())),
        )
        .watches(
            Api::<Pod>::all(client),
            watcher::Config::default(),
            |pod: Pod| {
                pod.spec
                    .and_then(|s| s.node_name)
                    .filter(|n| !n.is_empty())
                    .map(|n| ObjectRef::<Node>::new(&n))
            },
        )
        .graceful_shutdown_on(shutdown_signal(shutdown))
        .run(reconcile, error_policy, this)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "node lifecycle controller");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn taint(key: &str, effect: &str, added: Option<i64>) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            time_added: added.map(|s| Time(ts(s))),
            value: None,
        }
    }

    fn toleration(key: &str, op: &str, value: Option<&str>, seconds: Option<i64>) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some(op.into()),
            value: value.map(String::from),
            effect: Some("NoExecute".into()),
            toleration_seconds: seconds,
        }
    }

    #[test]
    fn unknown_gives_unreachable_false_gives_not_ready_true_clears_them() {
        let other = taint("dedicated", "NoSchedule", None);
        let unknown = taints_for(std::slice::from_ref(&other), Some("Unknown"), ts(0)).unwrap();
        let keys: Vec<(&str, &str)> = unknown
            .iter()
            .map(|t| (t.key.as_str(), t.effect.as_str()))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("dedicated", "NoSchedule"),
                (UNREACHABLE, "NoSchedule"),
                (UNREACHABLE, "NoExecute")
            ]
        );
        assert!(unknown[2].time_added.is_some() && unknown[1].time_added.is_none());
        assert_eq!(
            taints_for(&unknown, Some("Unknown"), ts(5)),
            None,
            "no churn"
        );
        let not_ready = taints_for(&unknown, Some("False"), ts(1)).unwrap();
        assert!(not_ready.iter().all(|t| t.key != UNREACHABLE));
        assert_eq!(not_ready.iter().filter(|t| t.key == NOT_READY).count(), 2);
        assert_eq!(
            taints_for(&not_ready, Some("True"), ts(2)).unwrap(),
            vec![other.clone()]
        );
        assert_eq!(taints_for(&[other], Some("True"), ts(2)), None);
    }

    #[test]
    fn untolerated_pods_go_at_once_tolerated_ones_after_their_seconds() {
        let taints = [
            taint(UNREACHABLE, "NoSchedule", None),
            taint(UNREACHABLE, "NoExecute", Some(0)),
        ];
        assert_eq!(eviction(&[], &taints, ts(0)), Eviction::Now);
        let wrong_value = toleration(UNREACHABLE, "Equal", Some("x"), None);
        assert_eq!(eviction(&[wrong_value], &taints, ts(0)), Eviction::Now);
        let five = toleration(UNREACHABLE, "Exists", None, Some(5));
        assert_eq!(
            eviction(std::slice::from_ref(&five), &taints, ts(1)),
            Eviction::At(ts(5))
        );
        assert_eq!(
            eviction(std::slice::from_ref(&five), &taints, ts(5)),
            Eviction::Now
        );
        let forever = toleration(UNREACHABLE, "Exists", None, None);
        assert_eq!(
            eviction(std::slice::from_ref(&forever), &taints, ts(100)),
            Eviction::Never
        );
        // The shortest of several matching tolerations wins.
        assert_eq!(
            eviction(&[forever, five], &taints, ts(0)),
            Eviction::At(ts(5))
        );
        let negative = toleration(UNREACHABLE, "Exists", None, Some(-3));
        assert_eq!(eviction(&[negative], &taints, ts(0)), Eviction::Now);
        // NoSchedule taints alone evict nobody.
        assert_eq!(eviction(&[], &taints[..1], ts(0)), Eviction::Never);
    }

    #[test]
    fn stale_nodes_get_unknown_conditions_once() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1"},
            "status": {"conditions": [
                {"type": "Ready", "status": "True", "lastHeartbeatTime": "2026-01-01T00:00:00Z"},
                {"type": "MemoryPressure", "status": "False"}]},
        }))
        .unwrap();
        let conditions = stale_conditions(&node, ts(0)).unwrap();
        let ready = conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "Unknown");
        assert_eq!(ready.reason.as_deref(), Some(STALE_REASON));
        assert_eq!(ready.message.as_deref(), Some(STALE_MESSAGE));
        assert!(
            ready.last_heartbeat_time.is_some(),
            "the last heartbeat is kept"
        );
        let never = conditions
            .iter()
            .find(|c| c.type_ == "PIDPressure")
            .unwrap();
        assert_eq!(never.reason.as_deref(), Some(NEVER_REASON));
        assert_eq!(conditions.len(), 4);
        let mut marked = node;
        marked.status.as_mut().unwrap().conditions = Some(conditions);
        assert!(stale_conditions(&marked, ts(1)).is_none());
    }

    #[test]
    fn only_ready_pods_are_marked_not_ready() {
        let pod = |status: &str| -> Pod {
            serde_json::from_value(json!({"status": {"conditions": [
                {"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": status}]}}))
            .unwrap()
        };
        let marked = pod_not_ready(&pod("True"), ts(0)).unwrap();
        assert_eq!(marked[1].status, "False");
        assert_eq!(marked[0].status, "True");
        assert!(pod_not_ready(&pod("False"), ts(0)).is_none());
    }
}
