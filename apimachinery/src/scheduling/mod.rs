//! The scheduler's decisions as pure functions over k8s-openapi objects: a pod's effective
//! requests, the filter plugins with upstream's failure reasons, the scores, and the
//! "0/N nodes are available: ..." message. The scheduler loop (watches, queue, binding,
//! events) uses these; they are unit-tested without a cluster.
//!
//! Covered: NodeUnschedulable, NodeName, node readiness (as the not-ready taint the node
//! lifecycle controller would set), NodeAffinity (nodeSelector and required terms, every
//! operator), TaintToleration (NoSchedule, NoExecute; PreferNoSchedule scored), NodePorts,
//! NodeResourcesFit (cpu, memory, ephemeral-storage, pod count), PodTopologySpread
//! ([`spread`]) and InterPodAffinity ([`interpod`]); scores LeastAllocated,
//! BalancedAllocation, preferred node affinity, PreferNoSchedule taints, topology spread
//! (with upstream's system default constraints) and inter-pod preferences.

pub mod interpod;
pub mod preemption;
pub mod spread;

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{
    Affinity, Container, Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration,
    TopologySpreadConstraint,
};

use crate::quantity::Quantity;

/// Namespace name → its labels, for the `namespaceSelector` of pod affinity terms.
pub type NamespaceLabels = HashMap<String, BTreeMap<String, String>>;

/// Amounts of the resources the scheduler accounts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resources {
    /// CPU in millicores.
    pub milli_cpu: i128,
    /// Memory in bytes.
    pub memory: i128,
    /// Ephemeral storage in bytes.
    pub ephemeral_storage: i128,
}

impl Resources {
    fn from_map(
        map: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    ) -> Self {
        let get = |k: &str| {
            map.and_then(|m| m.get(k))
                .and_then(|q| Quantity::parse(&q.0).ok())
        };
        Resources {
            milli_cpu: get("cpu").map(Quantity::milli).unwrap_or(0),
            memory: get("memory").map(Quantity::value).unwrap_or(0),
            ephemeral_storage: get("ephemeral-storage").map(Quantity::value).unwrap_or(0),
        }
    }

    fn add(self, o: Resources) -> Resources {
        Resources {
            milli_cpu: self.milli_cpu + o.milli_cpu,
            memory: self.memory + o.memory,
            ephemeral_storage: self.ephemeral_storage + o.ephemeral_storage,
        }
    }

    fn max(self, o: Resources) -> Resources {
        Resources {
            milli_cpu: self.milli_cpu.max(o.milli_cpu),
            memory: self.memory.max(o.memory),
            ephemeral_storage: self.ephemeral_storage.max(o.ephemeral_storage),
        }
    }
}

fn container_requests(c: &Container) -> Resources {
    let res = c.resources.as_ref();
    // Limits without requests request what they limit (the API server defaults this too).
    let requests = Resources::from_map(res.and_then(|r| r.requests.as_ref()));
    let limits = Resources::from_map(res.and_then(|r| r.limits.as_ref()));
    Resources {
        milli_cpu: if requests.milli_cpu == 0 {
            limits.milli_cpu
        } else {
            requests.milli_cpu
        },
        memory: if requests.memory == 0 {
            limits.memory
        } else {
            requests.memory
        },
        ephemeral_storage: if requests.ephemeral_storage == 0 {
            limits.ephemeral_storage
        } else {
            requests.ephemeral_storage
        },
    }
}

/// The resources a pod needs on its node: its containers together, or more if an init
/// container needs more while it runs (sidecars, init containers with restartPolicy Always,
/// keep running beside everything after them), plus the pod overhead.
pub fn pod_requests(pod: &Pod) -> Resources {
    let Some(spec) = pod.spec.as_ref() else {
        return Resources::default();
    };
    let mut total = spec
        .containers
        .iter()
        .map(container_requests)
        .fold(Resources::default(), Resources::add);
    let mut sidecars = Resources::default();
    let mut init_peak = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let r = container_requests(c);
        if c.restart_policy.as_deref() == Some("Always") {
            total = total.add(r);
            sidecars = sidecars.add(r);
            init_peak = init_peak.max(sidecars);
        } else {
            init_peak = init_peak.max(r.add(sidecars));
        }
    }
    total
        .max(init_peak)
        .add(Resources::from_map(spec.overhead.as_ref()))
}

/// What the inter-pod rules and topology spread need to know of a pod.
#[derive(Debug, Clone)]
pub struct PlacedPod {
    /// Its namespace.
    pub namespace: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its controller (`kind/uid`), if any.
    pub owner: Option<String>,
    /// Whether it is being deleted.
    pub deleting: bool,
    affinity: Option<Affinity>,
    spread: Vec<TopologySpreadConstraint>,
    terms: interpod::PodTerms,
}

impl PlacedPod {
    /// The parts of `pod` the inter-pod rules and topology spread look at.
    pub fn new(pod: &Pod) -> Self {
        let spec = pod.spec.as_ref();
        let mut placed = PlacedPod {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            owner: owner_key(pod),
            deleting: pod.metadata.deletion_timestamp.is_some(),
            affinity: spec.and_then(|s| s.affinity.clone()),
            spread: spec
                .and_then(|s| s.topology_spread_constraints.clone())
                .unwrap_or_default(),
            terms: interpod::PodTerms::default(),
        };
        placed.terms = interpod::PodTerms::of(&placed);
        placed
    }
}

/// A node with what is already placed on it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// The node.
    pub node: Node,
    /// Sum of the requests of its pods.
    pub requested: Resources,
    /// Number of pods on it.
    pub pods: usize,
    /// Host ports in use: (protocol, host IP, port).
    pub host_ports: Vec<(String, String, i32)>,
    /// Its pods (not terminal), for inter-pod rules and topology spread.
    pub placed: Vec<PlacedPod>,
    labels: BTreeMap<String, String>,
}

/// Whether the pod has finished (Succeeded or Failed): it holds no resources and is not
/// replaced or scheduled again.
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn host_ports(pod: &Pod) -> Vec<(String, String, i32)> {
    pod.spec
        .iter()
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|h| *h > 0)?;
            Some((
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                p.host_ip.clone().unwrap_or_else(|| "0.0.0.0".into()),
                port,
            ))
        })
        .collect()
}

fn owner_key(pod: &Pod) -> Option<String> {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| format!("{}/{}", o.kind, o.uid))
}

impl NodeInfo {
    /// The node with the pods bound to it (terminal pods take nothing).
    pub fn new(node: Node, pods: &[&Pod]) -> Self {
        let mut info = NodeInfo {
            labels: node.metadata.labels.clone().unwrap_or_default(),
            node,
            requested: Resources::default(),
            pods: 0,
            host_ports: Vec::new(),
            placed: Vec::new(),
        };
        for pod in pods {
            if is_terminal(pod) {
                continue;
            }
            info.requested = info.requested.add(pod_requests(pod));
            info.pods += 1;
            info.host_ports.extend(host_ports(pod));
            info.placed.push(PlacedPod::new(pod));
        }
        info
    }

    /// The node's labels.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }

    fn name(&self) -> &str {
        self.node.metadata.name.as_deref().unwrap_or("")
    }

    fn allocatable(&self) -> (Resources, i128) {
        let alloc = self
            .node
            .status
            .as_ref()
            .and_then(|s| s.allocatable.as_ref());
        let pods = alloc
            .and_then(|a| a.get("pods"))
            .and_then(|q| Quantity::parse(&q.0).ok())
            .map(Quantity::value)
            .unwrap_or(110);
        (Resources::from_map(alloc), pods)
    }

    fn ready(&self) -> bool {
        self.node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| c.status == "True")
    }

    /// The node's taints, plus the ones the node lifecycle controller puts on a node that is
    /// not ready or is cordoned.
    fn effective_taints(&self) -> Vec<Taint> {
        let mut taints = self
            .node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let has = |taints: &[Taint], key: &str| taints.iter().any(|t| t.key == key);
        if !self.ready() && !has(&taints, "node.kubernetes.io/not-ready") {
            taints.push(Taint {
                key: "node.kubernetes.io/not-ready".into(),
                effect: "NoSchedule".into(),
                ..Default::default()
            });
        }
        taints
    }
}

/// Whether any of `tolerations` tolerates `taint` (key, operator, value and effect).
pub fn tolerates(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| {
        let effect_ok = t
            .effect
            .as_deref()
            .is_none_or(|e| e.is_empty() || e == taint.effect);
        let key_ok = t.key.as_deref().is_none_or(|k| k.is_empty())
            && t.operator.as_deref() == Some("Exists")
            || t.key.as_deref() == Some(taint.key.as_str());
        let value_ok = match t.operator.as_deref() {
            Some("Exists") => true,
            _ => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        };
        effect_ok && key_ok && value_ok
    })
}

fn requirement_matches(req: &NodeSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let value = labels.get(&req.key);
    let values = req.values.as_deref().unwrap_or(&[]);
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(limit)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|l| l.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if req.operator == "Gt" {
                v > limit
            } else {
                v < limit
            }
        }
        _ => false,
    }
}

fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let name_labels = BTreeMap::from([(
        "metadata.name".to_string(),
        node.metadata.name.clone().unwrap_or_default(),
    )]);
    let exprs = term
        .match_expressions
        .iter()
        .flatten()
        .all(|r| requirement_matches(r, &labels));
    let fields = term
        .match_fields
        .iter()
        .flatten()
        .all(|r| requirement_matches(r, &name_labels));
    // An empty term matches nothing, as upstream.
    (term
        .match_expressions
        .as_ref()
        .is_some_and(|e| !e.is_empty())
        || term.match_fields.as_ref().is_some_and(|f| !f.is_empty()))
        && exprs
        && fields
}

/// Whether the pod's nodeSelector and required node affinity accept the node.
pub fn node_affinity_matches(pod: &Pod, node: &Node) -> bool {
    let spec = pod.spec.as_ref();
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let selector_ok = spec
        .and_then(|s| s.node_selector.as_ref())
        .is_none_or(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let required = spec
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    let affinity_ok =
        required.is_none_or(|r| r.node_selector_terms.iter().any(|t| term_matches(t, node)));
    selector_ok && affinity_ok
}

/// The reason strings upstream's filter plugins give.
pub mod reasons {
    /// NodeUnschedulable.
    pub const UNSCHEDULABLE: &str = "node(s) were unschedulable";
    /// NodeName.
    pub const NODE_NAME: &str = "node(s) didn't match the requested node name";
    /// NodeAffinity.
    pub const AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";
    /// NodePorts.
    pub const PORTS: &str = "node(s) didn't have free ports for the requested pod ports";
    /// NodeResourcesFit, pod count.
    pub const TOO_MANY_PODS: &str = "Too many pods";
}

/// Runs the filters that look at the node alone (everything but topology spread and
/// inter-pod affinity); the reasons the pod does not fit the node, empty if it fits.
pub fn filter(pod: &Pod, info: &NodeInfo) -> Vec<String> {
    let mut out = Vec::new();
    let spec = pod.spec.clone().unwrap_or_default();
    let tolerations = spec.tolerations.clone().unwrap_or_default();
    let node_spec = info.node.spec.clone().unwrap_or_default();
    if node_spec.unschedulable == Some(true) {
        let cordon = Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        if !tolerates(&tolerations, &cordon) {
            out.push(reasons::UNSCHEDULABLE.to_string());
        }
    }
    if let Some(want) = spec.node_name.as_deref().filter(|n| !n.is_empty())
        && want != info.name()
    {
        out.push(reasons::NODE_NAME.to_string());
    }
    if !node_affinity_matches(pod, &info.node) {
        out.push(reasons::AFFINITY.to_string());
    }
    if let Some(t) = info.effective_taints().into_iter().find(|t| {
        (t.effect == "NoSchedule" || t.effect == "NoExecute") && !tolerates(&tolerations, t)
    }) {
        out.push(format!(
            "node(s) had untolerated taint {{{}: {}}}",
            t.key,
            t.value.unwrap_or_default()
        ));
    }
    let wanted = host_ports(pod);
    let conflict = wanted.iter().any(|(proto, ip, port)| {
        info.host_ports.iter().any(|(p2, ip2, port2)| {
            proto == p2 && port == port2 && (ip == ip2 || ip == "0.0.0.0" || ip2 == "0.0.0.0")
        })
    });
    if conflict {
        out.push(reasons::PORTS.to_string());
    }
    let (alloc, max_pods) = info.allocatable();
    let req = pod_requests(pod);
    if info.pods as i128 + 1 > max_pods {
        out.push(reasons::TOO_MANY_PODS.to_string());
    }
    for (name, want, used, have) in [
        (
            "cpu",
            req.milli_cpu,
            info.requested.milli_cpu,
            alloc.milli_cpu,
        ),
        ("memory", req.memory, info.requested.memory, alloc.memory),
        (
            "ephemeral-storage",
            req.ephemeral_storage,
            info.requested.ephemeral_storage,
            alloc.ephemeral_storage,
        ),
    ] {
        if want > 0 && used + want > have {
            out.push(format!("Insufficient {name}"));
        }
    }
    out
}

/// The message of a pod no node fits, as upstream words it:
/// `0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {...}.`
pub fn unschedulable_message(nodes: usize, reasons_by_node: &[Vec<String>]) -> String {
    let mut histogram: BTreeMap<&str, usize> = BTreeMap::new();
    for reasons in reasons_by_node {
        for r in reasons {
            *histogram.entry(r.as_str()).or_default() += 1;
        }
    }
    let mut parts: Vec<String> = histogram
        .into_iter()
        .map(|(r, n)| format!("{n} {r}"))
        .collect();
    parts.sort();
    if parts.is_empty() {
        format!("0/{nodes} nodes are available.")
    } else {
        format!("0/{nodes} nodes are available: {}.", parts.join(", "))
    }
}

fn fraction(used: i128, total: i128) -> f64 {
    if total <= 0 {
        1.0
    } else {
        (used as f64 / total as f64).min(1.0)
    }
}

/// Runs every filter, topology spread and inter-pod affinity included, against `info`, one
/// of `nodes` (the whole cluster).
pub fn filter_all(
    pod: &Pod,
    info: &NodeInfo,
    nodes: &[NodeInfo],
    namespaces: &NamespaceLabels,
) -> Vec<String> {
    let incoming = PlacedPod::new(pod);
    let spread = spread::SpreadFilter::new(pod, &incoming, nodes);
    let interpod = interpod::InterPodFilter::new(&incoming, nodes, namespaces);
    filter_with(pod, info, &spread, &interpod)
}

fn filter_with(
    pod: &Pod,
    info: &NodeInfo,
    spread: &spread::SpreadFilter,
    interpod: &interpod::InterPodFilter,
) -> Vec<String> {
    // As upstream, a node that fails one plugin is not run through the later ones, which
    // come in upstream's order: the node's own filters, PodTopologySpread, InterPodAffinity.
    let reasons = filter(pod, info);
    if !reasons.is_empty() {
        return reasons;
    }
    spread
        .filter(info)
        .or_else(|| interpod.filter(info))
        .map(|r| vec![r.to_string()])
        .unwrap_or_default()
}

/// Scores a feasible node by what it alone decides, from 0 (worst) to 400: least
/// allocated, balanced allocation, preferred node affinity and PreferNoSchedule taints.
pub fn score(pod: &Pod, info: &NodeInfo) -> i64 {
    let (alloc, _) = info.allocatable();
    let req = pod_requests(pod);
    let cpu = fraction(info.requested.milli_cpu + req.milli_cpu, alloc.milli_cpu);
    let mem = fraction(info.requested.memory + req.memory, alloc.memory);
    let least_allocated = ((1.0 - cpu) * 50.0 + (1.0 - mem) * 50.0) as i64;
    let balanced = ((1.0 - (cpu - mem).abs() / 2.0) * 100.0) as i64;
    let preferred: i64 = pod
        .spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|terms| {
            terms
                .iter()
                .filter(|t| term_matches(&t.preference, &info.node))
                .map(|t| i64::from(t.weight))
                .sum()
        })
        .unwrap_or(0)
        .min(100);
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    let prefer_no = info
        .effective_taints()
        .iter()
        .filter(|t| t.effect == "PreferNoSchedule" && !tolerates(&tolerations, t))
        .count() as i64;
    let taint_score = (100 - prefer_no * 50).max(0);
    least_allocated + balanced + preferred + taint_score
}

/// Weight of the PodTopologySpread and InterPodAffinity scores (upstream's default plugin
/// weights give both 2).
const CLUSTER_SCORE_WEIGHT: i64 = 2;

/// Picks the node for a pod: the best-scoring feasible one (ties go to the first name in
/// order, so the choice is reproducible), or the unschedulable message. `nodes` is the whole
/// cluster; `namespaces` gives namespace labels for pod affinity `namespaceSelector`s.
pub fn select_node(
    pod: &Pod,
    nodes: &[NodeInfo],
    namespaces: &NamespaceLabels,
) -> Result<String, String> {
    let incoming = PlacedPod::new(pod);
    let spread_filter = spread::SpreadFilter::new(pod, &incoming, nodes);
    let interpod_filter = interpod::InterPodFilter::new(&incoming, nodes, namespaces);
    let mut feasible = Vec::new();
    let mut failures = Vec::new();
    for info in nodes {
        let reasons = filter_with(pod, info, &spread_filter, &interpod_filter);
        if reasons.is_empty() {
            feasible.push(info);
        } else {
            failures.push(reasons);
        }
    }
    if feasible.is_empty() {
        return Err(unschedulable_message(nodes.len(), &failures));
    }
    let spread_scores = spread::scores(pod, &incoming, &feasible, nodes);
    let interpod_scores = interpod::scores(&incoming, &feasible, nodes, namespaces);
    let mut best: Option<(i64, &str)> = None;
    for ((info, spread), interpod) in feasible.iter().zip(spread_scores).zip(interpod_scores) {
        let s = score(pod, info) + CLUSTER_SCORE_WEIGHT * (spread + interpod);
        if best.is_none_or(|(b, name)| s > b || (s == b && info.name() < name)) {
            best = Some((s, info.name()));
        }
    }
    best.map(|(_, n)| n.to_string())
        .ok_or_else(|| unschedulable_message(nodes.len(), &failures))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn node(name: &str, cpu: &str, mem: &str, extra: serde_json::Value) -> Node {
        let mut n = json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": {},
            "status": {"allocatable": {"cpu": cpu, "memory": mem, "pods": "110"}, "conditions": [{"type": "Ready", "status": "True"}]}});
        json_patch::merge(&mut n, &extra);
        serde_json::from_value(n).unwrap()
    }

    /// A 4-CPU, 8Gi node in `zone` (label topology.kubernetes.io/zone).
    pub(crate) fn zone_node(name: &str, zone: &str) -> Node {
        node(
            name,
            "4",
            "8Gi",
            json!({"metadata": {"labels": {"topology.kubernetes.io/zone": zone}}}),
        )
    }

    pub(crate) fn pod(extra: serde_json::Value) -> Pod {
        let mut p = json!({"metadata": {"name": "p", "namespace": "d"}, "spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}}}]}});
        json_patch::merge(&mut p, &extra);
        serde_json::from_value(p).unwrap()
    }

    #[test]
    fn pod_requests_count_init_containers_and_sidecars_as_upstream() {
        let p: Pod = serde_json::from_value(json!({"spec": {
            "initContainers": [
                {"name": "init", "resources": {"requests": {"cpu": "2"}}},
                {"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": "100m"}}}],
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "500m"}}}, {"name": "b", "resources": {"limits": {"cpu": "250m", "memory": "1Gi"}}}],
            "overhead": {"cpu": "10m"}}}))
        .unwrap();
        let r = pod_requests(&p);
        assert_eq!(r.milli_cpu, 2000 + 10, "the big init container dominates");
        assert_eq!(r.memory, 1 << 30, "limits stand in for missing requests");
    }

    #[test]
    fn unschedulable_pods_get_the_upstream_message() {
        let nodes = [
            NodeInfo::new(node("small", "250m", "1Gi", json!({})), &[]),
            NodeInfo::new(
                node(
                    "tainted",
                    "4",
                    "8Gi",
                    json!({"spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}),
                ),
                &[],
            ),
            NodeInfo::new(
                node(
                    "down",
                    "4",
                    "8Gi",
                    json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
                ),
                &[],
            ),
        ];
        let msg = select_node(&pod(json!({})), &nodes, &NamespaceLabels::new()).unwrap_err();
        assert_eq!(
            msg,
            "0/3 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint {dedicated: gpu}, 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }."
        );
    }

    #[test]
    fn tolerations_selectors_and_affinity_choose_the_node() {
        let nodes = [
            NodeInfo::new(
                node(
                    "a",
                    "4",
                    "8Gi",
                    json!({"metadata": {"labels": {"disk": "ssd"}}, "spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}}),
                ),
                &[],
            ),
            NodeInfo::new(
                node(
                    "b",
                    "4",
                    "8Gi",
                    json!({"metadata": {"labels": {"disk": "hdd"}}}),
                ),
                &[],
            ),
        ];
        let wants_ssd = pod(
            json!({"spec": {"nodeSelector": {"disk": "ssd"}, "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]}}),
        );
        assert_eq!(
            select_node(&wants_ssd, &nodes, &NamespaceLabels::new()).unwrap(),
            "a"
        );
        let without_toleration = pod(json!({"spec": {"nodeSelector": {"disk": "ssd"}}}));
        let msg = select_node(&without_toleration, &nodes, &NamespaceLabels::new()).unwrap_err();
        assert!(
            msg.contains("1 node(s) didn't match Pod's node affinity/selector")
                && msg.contains("untolerated taint {dedicated: db}"),
            "{msg}"
        );
        let not_in = pod(
            json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "disk", "operator": "NotIn", "values": ["ssd"]}]}]}}}}}),
        );
        assert_eq!(
            select_node(&not_in, &nodes, &NamespaceLabels::new()).unwrap(),
            "b"
        );
        let by_name = pod(
            json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["b"]}]}]}}}}}),
        );
        assert_eq!(
            select_node(&by_name, &nodes, &NamespaceLabels::new()).unwrap(),
            "b"
        );
    }

    #[test]
    fn cordoned_full_and_port_conflicting_nodes_are_filtered() {
        let running = pod(
            json!({"spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}}),
        );
        let cordoned = NodeInfo::new(
            node("c", "4", "8Gi", json!({"spec": {"unschedulable": true}})),
            &[],
        );
        assert_eq!(filter(&pod(json!({})), &cordoned), [reasons::UNSCHEDULABLE]);
        let busy = NodeInfo::new(node("b", "4", "8Gi", json!({})), &[&running]);
        assert_eq!(filter(&running, &busy), [reasons::PORTS]);
        let full = NodeInfo::new(
            node(
                "f",
                "4",
                "8Gi",
                json!({"status": {"allocatable": {"pods": "1"}}}),
            ),
            &[&running],
        );
        assert_eq!(filter(&pod(json!({})), &full), [reasons::TOO_MANY_PODS]);
        let named = pod(json!({"spec": {"nodeName": "elsewhere"}}));
        assert_eq!(filter(&named, &busy), [reasons::NODE_NAME]);
    }

    #[test]
    fn scores_prefer_emptier_nodes_and_spread_one_owner() {
        let heavy = pod(
            json!({"spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "3", "memory": "6Gi"}}}]}}),
        );
        let nodes = [
            NodeInfo::new(node("busy", "4", "8Gi", json!({})), &[&heavy]),
            NodeInfo::new(node("idle", "4", "8Gi", json!({})), &[]),
        ];
        assert_eq!(
            select_node(&pod(json!({})), &nodes, &NamespaceLabels::new()).unwrap(),
            "idle"
        );
        let owned = pod(
            json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u1", "controller": true}]}}),
        );
        let nodes = [
            NodeInfo::new(node("x", "4", "8Gi", json!({})), &[&owned, &owned]),
            NodeInfo::new(node("y", "4", "8Gi", json!({})), &[]),
        ];
        assert_eq!(
            select_node(&owned, &nodes, &NamespaceLabels::new()).unwrap(),
            "y"
        );
        let prefers: Pod = pod(
            json!({"spec": {"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 80, "preference": {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["x"]}]}}]}}}}),
        );
        let nodes = [
            NodeInfo::new(node("x", "4", "8Gi", json!({})), &[]),
            NodeInfo::new(node("y", "4", "8Gi", json!({})), &[]),
        ];
        assert_eq!(
            select_node(&prefers, &nodes, &NamespaceLabels::new()).unwrap(),
            "x"
        );
        let soft_taint = [
            NodeInfo::new(
                node(
                    "x",
                    "4",
                    "8Gi",
                    json!({"spec": {"taints": [{"key": "k", "effect": "PreferNoSchedule"}]}}),
                ),
                &[],
            ),
            NodeInfo::new(node("y", "4", "8Gi", json!({})), &[]),
        ];
        assert_eq!(
            select_node(&pod(json!({})), &soft_taint, &NamespaceLabels::new()).unwrap(),
            "y"
        );
    }

    #[test]
    fn terminal_pods_free_their_resources() {
        let done = pod(
            json!({"spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "4"}}}]}, "status": {"phase": "Succeeded"}}),
        );
        let info = NodeInfo::new(node("n", "4", "8Gi", json!({})), &[&done]);
        assert!(filter(&pod(json!({})), &info).is_empty());
    }
}
