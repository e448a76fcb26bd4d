//! Pod topology spread, as upstream's PodTopologySpread plugin.
//!
//! Filter (`whenUnsatisfiable: DoNotSchedule`): on a node whose domain (its value of the
//! constraint's `topologyKey`) holds `n` matching pods, `n + (1 if the pod matches itself)
//! - the fewest matching pods in any domain` may not exceed `maxSkew`; with fewer domains
//! than `minDomains` the fewest counts as 0. Matching pods are those in the pod's namespace,
//! not being deleted, selected by `labelSelector` plus `matchLabelKeys` (the pod's own values
//! of those keys). Domains come from nodes carrying every constraint's key and, by default
//! (`nodeAffinityPolicy: Honor`, `nodeTaintsPolicy: Ignore`), passing the pod's nodeSelector
//! and required node affinity (with `nodeTaintsPolicy: Honor`, also tolerated).
//!
//! Score (`ScheduleAnyway`): fewer matching pods in the node's domain score higher,
//! each constraint weighted by the log of its number of domains, normalized to 0..100.
//! A pod with no constraints of its own gets upstream's system defaults (hostname with
//! maxSkew 3, zone with maxSkew 5, ScheduleAnyway) over the pods of its controller (where
//! upstream selects through the Services, ReplicaSets and StatefulSets selecting the pod;
//! this scheduler does not watch those, so "the same controller" stands in).

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::{Pod, TopologySpreadConstraint};

use super::{NodeInfo, PlacedPod, node_affinity_matches, tolerates};
use crate::selector::{LabelSelector, Operator, Requirement};

/// The failure reasons upstream's PodTopologySpread filter gives.
pub mod reasons {
    /// The skew would exceed maxSkew.
    pub const CONSTRAINTS: &str = "node(s) didn't match pod topology spread constraints";
    /// The node lacks a constraint's topology key.
    pub const MISSING_LABEL: &str =
        "node(s) didn't match pod topology spread constraints (missing required label)";
}

const HOSTNAME: &str = "kubernetes.io/hostname";
const ZONE: &str = "topology.kubernetes.io/zone";

/// Which pods a constraint counts.
#[derive(Debug, Clone)]
enum Matcher {
    /// `labelSelector` (with `matchLabelKeys` merged); `None` selects nothing.
    Selector(Option<LabelSelector>),
    /// The pods of one controller (`kind/uid`), for the system default constraints.
    Owner(String),
}

#[derive(Debug, Clone)]
struct Constraint {
    max_skew: i64,
    min_domains: i64,
    topology_key: String,
    matcher: Matcher,
    honor_node_affinity: bool,
    honor_taints: bool,
}

impl Constraint {
    fn new(c: &TopologySpreadConstraint, pod: &PlacedPod) -> Self {
        let mut selector = c
            .label_selector
            .as_ref()
            .and_then(|s| LabelSelector::from_api(s).ok());
        for key in c.match_label_keys.iter().flatten() {
            if let Some(value) = pod.labels.get(key)
                && let Ok(req) = Requirement::new(key.clone(), Operator::In, vec![value.clone()])
            {
                selector
                    .get_or_insert_with(LabelSelector::everything)
                    .push(req);
            }
        }
        Constraint {
            max_skew: i64::from(c.max_skew),
            min_domains: i64::from(c.min_domains.unwrap_or(1)),
            topology_key: c.topology_key.clone(),
            matcher: Matcher::Selector(selector),
            honor_node_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
            honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
        }
    }

    fn system_default(key: &str, max_skew: i64, owner: String) -> Self {
        Constraint {
            max_skew,
            min_domains: 1,
            topology_key: key.to_string(),
            matcher: Matcher::Owner(owner),
            honor_node_affinity: true,
            honor_taints: false,
        }
    }

    fn selects(&self, pod: &PlacedPod) -> bool {
        match &self.matcher {
            Matcher::Selector(s) => s.as_ref().is_some_and(|s| s.matches_btree(&pod.labels)),
            Matcher::Owner(o) => pod.owner.as_ref() == Some(o),
        }
    }

    /// Matching pods on the node (same namespace as `pod`, not being deleted).
    fn count(&self, info: &NodeInfo, pod: &PlacedPod) -> i64 {
        info.placed
            .iter()
            .filter(|p| !p.deleting && p.namespace == pod.namespace && self.selects(p))
            .count() as i64
    }

    /// Whether the node's pods count towards the domains (upstream's node inclusion
    /// policies).
    fn includes(&self, pod: &Pod, info: &NodeInfo) -> bool {
        if self.honor_node_affinity && !node_affinity_matches(pod, &info.node) {
            return false;
        }
        if self.honor_taints {
            let tolerations = pod
                .spec
                .as_ref()
                .and_then(|s| s.tolerations.clone())
                .unwrap_or_default();
            let taints = info.node.spec.as_ref().and_then(|s| s.taints.as_ref());
            return taints.into_iter().flatten().all(|t| {
                !(t.effect == "NoSchedule" || t.effect == "NoExecute") || tolerates(&tolerations, t)
            });
        }
        true
    }
}

fn has_all_keys(constraints: &[Constraint], labels: &BTreeMap<String, String>) -> bool {
    constraints
        .iter()
        .all(|c| labels.contains_key(&c.topology_key))
}

fn constraints_of(pod: &PlacedPod, when: &str) -> Vec<Constraint> {
    pod.spread
        .iter()
        .filter(|c| c.when_unsatisfiable == when)
        .map(|c| Constraint::new(c, pod))
        .collect()
}

/// What the filter needs, computed once per incoming pod (upstream's PreFilter).
#[derive(Debug, Default)]
pub(super) struct SpreadFilter {
    constraints: Vec<Constraint>,
    /// Per constraint: domain value → matching pods.
    counts: Vec<HashMap<String, i64>>,
    /// Whether the incoming pod matches each constraint itself.
    self_match: Vec<bool>,
}

impl SpreadFilter {
    pub(super) fn new(pod: &Pod, incoming: &PlacedPod, nodes: &[NodeInfo]) -> Self {
        let constraints = constraints_of(incoming, "DoNotSchedule");
        let mut counts = vec![HashMap::new(); constraints.len()];
        for info in nodes {
            let labels = info.labels();
            if !has_all_keys(&constraints, labels) {
                continue;
            }
            for (c, counts) in constraints.iter().zip(&mut counts) {
                if !c.includes(pod, info) {
                    continue;
                }
                let value = labels[&c.topology_key].clone();
                *counts.entry(value).or_default() += c.count(info, incoming);
            }
        }
        let self_match = constraints.iter().map(|c| c.selects(incoming)).collect();
        SpreadFilter {
            constraints,
            counts,
            self_match,
        }
    }

    /// The reason the node fails, if it does.
    pub(super) fn filter(&self, info: &NodeInfo) -> Option<&'static str> {
        let labels = info.labels();
        for ((c, counts), self_match) in self
            .constraints
            .iter()
            .zip(&self.counts)
            .zip(&self.self_match)
        {
            let Some(value) = labels.get(&c.topology_key) else {
                return Some(reasons::MISSING_LABEL);
            };
            let min = if (counts.len() as i64) < c.min_domains {
                0
            } else {
                counts.values().copied().min().unwrap_or(0)
            };
            let here = counts.get(value).copied().unwrap_or(0);
            if here + i64::from(*self_match) - min > c.max_skew {
                return Some(reasons::CONSTRAINTS);
            }
        }
        None
    }
}

/// The PodTopologySpread scores (0..=100) of the feasible nodes, in their order.
pub(super) fn scores(
    pod: &Pod,
    incoming: &PlacedPod,
    feasible: &[&NodeInfo],
    nodes: &[NodeInfo],
) -> Vec<i64> {
    let mut constraints = constraints_of(incoming, "ScheduleAnyway");
    let system_defaulted = incoming.spread.is_empty();
    if system_defaulted && let Some(owner) = &incoming.owner {
        constraints = vec![
            Constraint::system_default(HOSTNAME, 3, owner.clone()),
            Constraint::system_default(ZONE, 5, owner.clone()),
        ];
    }
    if constraints.is_empty() {
        return vec![0; feasible.len()];
    }
    let ignored: HashSet<usize> = (0..feasible.len())
        .filter(|&i| !system_defaulted && !has_all_keys(&constraints, feasible[i].labels()))
        .collect();
    // Domains of the feasible nodes, counted over every node.
    let mut domains: Vec<HashMap<String, i64>> = constraints
        .iter()
        .map(|c| {
            feasible
                .iter()
                .enumerate()
                .filter(|(i, _)| !ignored.contains(i))
                .filter_map(|(_, n)| n.labels().get(&c.topology_key).cloned())
                .map(|v| (v, 0))
                .collect()
        })
        .collect();
    for info in nodes {
        let labels = info.labels();
        if !system_defaulted && !has_all_keys(&constraints, labels) {
            continue;
        }
        for (c, domains) in constraints.iter().zip(&mut domains) {
            if c.topology_key == HOSTNAME || !c.includes(pod, info) {
                continue;
            }
            if let Some(count) = labels.get(&c.topology_key).and_then(|v| domains.get_mut(v)) {
                *count += c.count(info, incoming);
            }
        }
    }
    let weights: Vec<f64> = constraints
        .iter()
        .zip(&domains)
        .map(|(c, d)| {
            let size = if c.topology_key == HOSTNAME {
                feasible.len() - ignored.len()
            } else {
                d.len()
            };
            ((size + 2) as f64).ln()
        })
        .collect();
    let raw: Vec<Option<i64>> = feasible
        .iter()
        .enumerate()
        .map(|(i, info)| {
            if ignored.contains(&i) {
                return None;
            }
            let labels = info.labels();
            let mut score = 0.0;
            for ((c, domains), weight) in constraints.iter().zip(&domains).zip(&weights) {
                let Some(value) = labels.get(&c.topology_key) else {
                    continue;
                };
                let count = if c.topology_key == HOSTNAME {
                    c.count(info, incoming)
                } else {
                    domains.get(value).copied().unwrap_or(0)
                };
                score += count as f64 * weight + (c.max_skew - 1) as f64;
            }
            Some(score.round() as i64)
        })
        .collect();
    let min = raw.iter().flatten().copied().min().unwrap_or(0);
    let max = raw.iter().flatten().copied().max().unwrap_or(0);
    raw.iter()
        .map(|s| match s {
            None => 0,
            Some(_) if max == 0 => 100,
            Some(s) => 100 * (max + min - s) / max,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::tests::{node, pod, zone_node};
    use super::super::{NamespaceLabels, NodeInfo, filter_all, select_node};
    use super::reasons;
    use serde_json::json;

    fn spread(constraint: serde_json::Value) -> k8s_openapi::api::core::v1::Pod {
        let mut c = json!({"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}});
        json_patch::merge(&mut c, &constraint);
        pod(
            json!({"metadata": {"labels": {"app": "web"}}, "spec": {"topologySpreadConstraints": [c]}}),
        )
    }

    #[test]
    fn do_not_schedule_keeps_the_skew_within_max_skew() {
        let none = NamespaceLabels::new();
        let web = spread(json!({}));
        let nodes = [
            NodeInfo::new(zone_node("a1", "a"), &[&web]),
            NodeInfo::new(zone_node("a2", "a"), &[]),
            NodeInfo::new(zone_node("b1", "b"), &[]),
            NodeInfo::new(node("nolabel", "4", "8Gi", json!({})), &[]),
        ];
        assert_eq!(
            filter_all(&web, &nodes[1], &nodes, &none),
            [reasons::CONSTRAINTS]
        );
        assert!(filter_all(&web, &nodes[2], &nodes, &none).is_empty());
        assert_eq!(
            filter_all(&web, &nodes[3], &nodes, &none),
            [reasons::MISSING_LABEL]
        );
        assert_eq!(select_node(&web, &nodes, &none).unwrap(), "b1");
        // maxSkew 2 allows a second pod in zone a.
        let loose = spread(json!({"maxSkew": 2}));
        assert!(filter_all(&loose, &nodes[1], &nodes, &none).is_empty());
        // Pods of other apps or namespaces do not count.
        let other = pod(json!({"metadata": {"namespace": "x", "labels": {"app": "web"}}}));
        let nodes = [
            NodeInfo::new(zone_node("a1", "a"), &[&other]),
            NodeInfo::new(zone_node("b1", "b"), &[]),
        ];
        assert!(filter_all(&web, &nodes[0], &nodes, &none).is_empty());
    }

    #[test]
    fn min_domains_and_node_affinity_policy_decide_the_domains() {
        let none = NamespaceLabels::new();
        let nodes = |pods: &[&k8s_openapi::api::core::v1::Pod]| {
            [
                NodeInfo::new(zone_node("a1", "a"), pods),
                NodeInfo::new(zone_node("b1", "b"), pods),
            ]
        };
        let web = spread(json!({"minDomains": 3}));
        // Both domains hold one pod; with minDomains 3 the minimum counts as 0: skew 2 > 1.
        let full = nodes(&[&web]);
        assert_eq!(
            filter_all(&web, &full[0], &full, &none),
            [reasons::CONSTRAINTS]
        );
        let web = spread(json!({"minDomains": 2}));
        assert!(filter_all(&web, &full[0], &full, &none).is_empty());
        // nodeAffinityPolicy Honor (default): a zone the pod may not use is no domain.
        let only_a = |policy: &str| {
            let mut p = spread(json!({"nodeAffinityPolicy": policy}));
            p.spec.as_mut().unwrap().node_selector =
                Some([("topology.kubernetes.io/zone".to_string(), "a".to_string())].into());
            p
        };
        let web = spread(json!({}));
        let one_in_a = [
            NodeInfo::new(zone_node("a1", "a"), &[&web]),
            NodeInfo::new(zone_node("b1", "b"), &[]),
        ];
        assert!(filter_all(&only_a("Honor"), &one_in_a[0], &one_in_a, &none).is_empty());
        assert_eq!(
            filter_all(&only_a("Ignore"), &one_in_a[0], &one_in_a, &none),
            [reasons::CONSTRAINTS]
        );
    }

    #[test]
    fn schedule_anyway_and_system_defaults_prefer_emptier_domains() {
        let none = NamespaceLabels::new();
        let web = spread(json!({"whenUnsatisfiable": "ScheduleAnyway"}));
        let nodes = [
            NodeInfo::new(zone_node("a1", "a"), &[&web, &web]),
            NodeInfo::new(zone_node("a2", "a"), &[]),
            NodeInfo::new(zone_node("b1", "b"), &[&web]),
        ];
        assert!(
            filter_all(&web, &nodes[0], &nodes, &none).is_empty(),
            "soft constraints never filter"
        );
        // a2 is emptiest but its zone holds two pods; b1 holds one and wins.
        assert_eq!(select_node(&web, &nodes, &none).unwrap(), "b1");
        let owned = pod(
            json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u1", "controller": true}]}}),
        );
        let nodes = [
            NodeInfo::new(zone_node("c1", "a"), &[]),
            NodeInfo::new(zone_node("c2", "a"), &[&owned]),
            NodeInfo::new(zone_node("b1", "b"), &[]),
            NodeInfo::new(zone_node("b2", "b"), &[&owned]),
            NodeInfo::new(zone_node("b3", "b"), &[&owned]),
        ];
        // Hosts c1 and b1 are empty; c1's zone holds fewer pods of the owner.
        assert_eq!(select_node(&owned, &nodes, &none).unwrap(), "c1");
    }
}
