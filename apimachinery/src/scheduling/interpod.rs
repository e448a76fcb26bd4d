//! Inter-pod affinity and anti-affinity, as upstream's InterPodAffinity plugin.
//!
//! Filter: the incoming pod's required affinity terms must each find, in the node's
//! topology domain, pods matching all of them (unless no pod anywhere matches them and the
//! pod matches them itself: the first pod of a group with affinity to itself); its required
//! anti-affinity terms must find no matching pod in the domain; and no pod already placed
//! may have a required anti-affinity term that the incoming pod matches within that pod's
//! domain. Score: the incoming pod's preferred terms (plus or minus their weight per
//! matching pod in the domain), and symmetrically the placed pods' required affinity
//! (weight 1) and preferred terms matching the incoming pod, normalized to 0..100.
//!
//! A term selects pods in the namespaces it lists, or in namespaces its `namespaceSelector`
//! selects, or (with neither) in the namespace of the pod that carries it; a missing
//! `labelSelector` selects nothing. `matchLabelKeys` and `mismatchLabelKeys` become `In`
//! and `NotIn` requirements on the carrying pod's own label values, as the API server does.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{PodAffinityTerm, WeightedPodAffinityTerm};

use super::{NamespaceLabels, NodeInfo, PlacedPod};
use crate::selector::{LabelSelector, Operator, Requirement};

/// The failure reasons upstream's InterPodAffinity filter gives.
pub mod reasons {
    /// The incoming pod's required affinity is not satisfied.
    pub const AFFINITY: &str = "node(s) didn't match pod affinity rules";
    /// The incoming pod's required anti-affinity is not satisfied.
    pub const ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
    /// A placed pod's required anti-affinity rejects the incoming pod.
    pub const EXISTING_ANTI_AFFINITY: &str =
        "node(s) didn't satisfy existing pods anti-affinity rules";
}

/// A pod affinity term resolved against the pod that carries it.
#[derive(Debug, Clone)]
pub(super) struct AffinityTerm {
    namespaces: Vec<String>,
    namespace_selector: Option<LabelSelector>,
    /// `None` selects nothing.
    selector: Option<LabelSelector>,
    topology_key: String,
    weight: i64,
}

impl AffinityTerm {
    fn new(term: &PodAffinityTerm, owner: &PlacedPod, weight: i64) -> Self {
        let mut selector = term
            .label_selector
            .as_ref()
            .and_then(|s| LabelSelector::from_api(s).ok());
        let own_value_keys = [
            (term.match_label_keys.as_ref(), Operator::In),
            (term.mismatch_label_keys.as_ref(), Operator::NotIn),
        ];
        for (keys, operator) in own_value_keys {
            for key in keys.into_iter().flatten() {
                let Some(value) = owner.labels.get(key) else {
                    continue;
                };
                if let Ok(req) = Requirement::new(key.clone(), operator, vec![value.clone()]) {
                    selector
                        .get_or_insert_with(LabelSelector::everything)
                        .push(req);
                }
            }
        }
        let namespaces = term.namespaces.clone().unwrap_or_default();
        let namespace_selector = term
            .namespace_selector
            .as_ref()
            .and_then(|s| LabelSelector::from_api(s).ok());
        let namespaces = if namespaces.is_empty() && term.namespace_selector.is_none() {
            vec![owner.namespace.clone()]
        } else {
            namespaces
        };
        AffinityTerm {
            namespaces,
            namespace_selector,
            selector,
            topology_key: term.topology_key.clone(),
            weight,
        }
    }

    /// Whether the term selects `pod`.
    fn matches(&self, pod: &PlacedPod, namespaces: &NamespaceLabels) -> bool {
        let in_namespace = self.namespaces.contains(&pod.namespace)
            || self.namespace_selector.as_ref().is_some_and(|s| {
                namespaces
                    .get(&pod.namespace)
                    .is_some_and(|labels| s.matches_btree(labels))
            });
        in_namespace
            && self
                .selector
                .as_ref()
                .is_some_and(|s| s.matches_btree(&pod.labels))
    }

    fn domain<'a>(&self, node_labels: &'a BTreeMap<String, String>) -> Option<&'a String> {
        node_labels.get(&self.topology_key)
    }
}

/// A pod's terms of one kind, resolved.
#[derive(Debug, Clone, Default)]
pub(super) struct PodTerms {
    pub(super) required_affinity: Vec<AffinityTerm>,
    pub(super) required_anti_affinity: Vec<AffinityTerm>,
    pub(super) preferred_affinity: Vec<AffinityTerm>,
    pub(super) preferred_anti_affinity: Vec<AffinityTerm>,
}

impl PodTerms {
    pub(super) fn of(pod: &PlacedPod) -> Self {
        let required = |terms: Option<&Vec<PodAffinityTerm>>| -> Vec<AffinityTerm> {
            terms
                .into_iter()
                .flatten()
                .map(|t| AffinityTerm::new(t, pod, 1))
                .collect()
        };
        let preferred = |terms: Option<&Vec<WeightedPodAffinityTerm>>| -> Vec<AffinityTerm> {
            terms
                .into_iter()
                .flatten()
                .map(|t| AffinityTerm::new(&t.pod_affinity_term, pod, i64::from(t.weight)))
                .collect()
        };
        let affinity = pod.affinity.as_ref().and_then(|a| a.pod_affinity.as_ref());
        let anti = pod
            .affinity
            .as_ref()
            .and_then(|a| a.pod_anti_affinity.as_ref());
        PodTerms {
            required_affinity: required(affinity.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            required_anti_affinity: required(anti.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            preferred_affinity: preferred(affinity.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            preferred_anti_affinity: preferred(anti.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
        }
    }

    fn is_empty(&self) -> bool {
        self.required_affinity.is_empty()
            && self.required_anti_affinity.is_empty()
            && self.preferred_affinity.is_empty()
            && self.preferred_anti_affinity.is_empty()
    }
}

/// `(topology key, value)` → number of matching pods.
type DomainCounts = HashMap<(String, String), i64>;

fn all_match(terms: &[AffinityTerm], pod: &PlacedPod, namespaces: &NamespaceLabels) -> bool {
    !terms.is_empty() && terms.iter().all(|t| t.matches(pod, namespaces))
}

/// What the filter needs, computed once per incoming pod over every node (upstream's
/// PreFilter).
#[derive(Debug, Default)]
pub(super) struct InterPodFilter {
    terms: PodTerms,
    /// Domains holding pods that match all of the incoming pod's required affinity terms.
    affinity: DomainCounts,
    /// Domains holding pods matching one of its required anti-affinity terms.
    anti_affinity: DomainCounts,
    /// Domains whose placed pods' required anti-affinity matches the incoming pod.
    existing_anti_affinity: DomainCounts,
    /// Whether the incoming pod matches all of its own required affinity terms.
    matches_itself: bool,
}

impl InterPodFilter {
    pub(super) fn new(pod: &PlacedPod, nodes: &[NodeInfo], namespaces: &NamespaceLabels) -> Self {
        let terms = PodTerms::of(pod);
        let mut state = InterPodFilter {
            matches_itself: all_match(&terms.required_affinity, pod, namespaces),
            ..Default::default()
        };
        for info in nodes {
            let labels = info.labels();
            for placed in &info.placed {
                if all_match(&terms.required_affinity, placed, namespaces) {
                    for t in &terms.required_affinity {
                        if let Some(v) = t.domain(labels) {
                            *state
                                .affinity
                                .entry((t.topology_key.clone(), v.clone()))
                                .or_default() += 1;
                        }
                    }
                }
                for t in &terms.required_anti_affinity {
                    if let Some(v) = t.domain(labels)
                        && t.matches(placed, namespaces)
                    {
                        *state
                            .anti_affinity
                            .entry((t.topology_key.clone(), v.clone()))
                            .or_default() += 1;
                    }
                }
                for t in &placed.terms.required_anti_affinity {
                    if let Some(v) = t.domain(labels)
                        && t.matches(pod, namespaces)
                    {
                        *state
                            .existing_anti_affinity
                            .entry((t.topology_key.clone(), v.clone()))
                            .or_default() += 1;
                    }
                }
            }
        }
        state.terms = terms;
        state
    }

    /// The reason the node fails, if it does (only the first, as upstream).
    pub(super) fn filter(&self, info: &NodeInfo) -> Option<&'static str> {
        let labels = info.labels();
        let count = |counts: &DomainCounts, key: &str, value: &str| {
            counts
                .get(&(key.to_string(), value.to_string()))
                .copied()
                .unwrap_or(0)
        };
        let mut pods_exist = true;
        for t in &self.terms.required_affinity {
            let Some(v) = t.domain(labels) else {
                return Some(reasons::AFFINITY);
            };
            if count(&self.affinity, &t.topology_key, v) <= 0 {
                pods_exist = false;
            }
        }
        // The first pod of a group with affinity to itself: no pod anywhere matches the terms
        // yet, but the pod itself does.
        let first_of_group = self.affinity.is_empty() && self.matches_itself;
        if !pods_exist && !first_of_group {
            return Some(reasons::AFFINITY);
        }
        let anti = self.terms.required_anti_affinity.iter().any(|t| {
            t.domain(labels)
                .is_some_and(|v| count(&self.anti_affinity, &t.topology_key, v) > 0)
        });
        if anti {
            return Some(reasons::ANTI_AFFINITY);
        }
        let existing = labels
            .iter()
            .any(|(k, v)| count(&self.existing_anti_affinity, k, v) > 0);
        existing.then_some(reasons::EXISTING_ANTI_AFFINITY)
    }
}

/// The InterPodAffinity scores (0..=100) of the feasible nodes, in their order.
pub(super) fn scores(
    pod: &PlacedPod,
    feasible: &[&NodeInfo],
    nodes: &[NodeInfo],
    namespaces: &NamespaceLabels,
) -> Vec<i64> {
    let terms = PodTerms::of(pod);
    let mut domains: HashMap<(String, String), i64> = HashMap::new();
    let mut add = |term: &AffinityTerm, labels: &BTreeMap<String, String>, sign: i64| {
        if let Some(v) = term.domain(labels) {
            *domains
                .entry((term.topology_key.clone(), v.clone()))
                .or_default() += sign * term.weight;
        }
    };
    let has_preferences =
        !terms.preferred_affinity.is_empty() || !terms.preferred_anti_affinity.is_empty();
    for info in nodes {
        let labels = info.labels();
        for placed in &info.placed {
            if !has_preferences && placed.terms.is_empty() {
                continue;
            }
            for t in &terms.preferred_affinity {
                if t.matches(placed, namespaces) {
                    add(t, labels, 1);
                }
            }
            for t in &terms.preferred_anti_affinity {
                if t.matches(placed, namespaces) {
                    add(t, labels, -1);
                }
            }
            // The placed pod's required affinity counts with upstream's hardPodAffinityWeight, 1.
            for t in placed
                .terms
                .required_affinity
                .iter()
                .chain(&placed.terms.preferred_affinity)
            {
                if t.matches(pod, namespaces) {
                    add(t, labels, 1);
                }
            }
            for t in &placed.terms.preferred_anti_affinity {
                if t.matches(pod, namespaces) {
                    add(t, labels, -1);
                }
            }
        }
    }
    let raw: Vec<i64> = feasible
        .iter()
        .map(|info| {
            let labels = info.labels();
            domains
                .iter()
                .filter(|((k, v), _)| labels.get(k) == Some(v))
                .map(|(_, s)| *s)
                .sum()
        })
        .collect();
    let min = raw.iter().copied().min().unwrap_or(0);
    let max = raw.iter().copied().max().unwrap_or(0);
    raw.iter()
        .map(|s| {
            if max > min {
                100 * (s - min) / (max - min)
            } else {
                0
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::tests::{node, pod, zone_node};
    use super::super::{NamespaceLabels, NodeInfo, select_node};
    use super::reasons;
    use serde_json::json;

    fn labelled(
        name: &str,
        app: &str,
        affinity: serde_json::Value,
    ) -> k8s_openapi::api::core::v1::Pod {
        pod(
            json!({"metadata": {"name": name, "labels": {"app": app}}, "spec": {"affinity": affinity}}),
        )
    }

    fn anti(app: &str, key: &str) -> serde_json::Value {
        json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key}]}})
    }

    fn affinity(app: &str, key: &str) -> serde_json::Value {
        json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key}]}})
    }

    #[test]
    fn required_anti_affinity_keeps_replicas_apart_per_host_and_per_zone() {
        let none = NamespaceLabels::new();
        let web = labelled("w", "web", anti("web", "kubernetes.io/hostname"));
        let nodes = [
            NodeInfo::new(zone_node("a", "z1"), &[&web]),
            NodeInfo::new(zone_node("b", "z1"), &[]),
        ];
        assert_eq!(select_node(&web, &nodes, &none).unwrap(), "b");
        let full = [
            NodeInfo::new(zone_node("a", "z1"), &[&web]),
            NodeInfo::new(zone_node("b", "z1"), &[&web]),
        ];
        assert_eq!(
            select_node(&web, &full, &none).unwrap_err(),
            format!("0/2 nodes are available: 2 {}.", reasons::ANTI_AFFINITY)
        );
        let per_zone = labelled("w", "web", anti("web", "topology.kubernetes.io/zone"));
        let nodes = [
            NodeInfo::new(zone_node("a", "z1"), &[&per_zone]),
            NodeInfo::new(zone_node("b", "z1"), &[]),
            NodeInfo::new(zone_node("c", "z2"), &[]),
        ];
        assert_eq!(select_node(&per_zone, &nodes, &none).unwrap(), "c");
        // A pod of another app is not kept away by its own rules...
        let other = labelled("o", "db", json!({}));
        assert_eq!(
            super::super::filter_all(&other, &nodes[0], &nodes, &none),
            Vec::<String>::new()
        );
    }

    #[test]
    fn placed_pods_anti_affinity_rejects_the_pods_it_selects() {
        let none = NamespaceLabels::new();
        let loner = labelled("l", "loner", anti("web", "kubernetes.io/hostname"));
        let web = labelled("w", "web", json!({}));
        let nodes = [
            NodeInfo::new(zone_node("a", "z1"), &[&loner]),
            NodeInfo::new(zone_node("b", "z1"), &[]),
        ];
        assert_eq!(
            super::super::filter_all(&web, &nodes[0], &nodes, &none),
            [reasons::EXISTING_ANTI_AFFINITY]
        );
        assert_eq!(select_node(&web, &nodes, &none).unwrap(), "b");
        // Other namespaces are not selected by a term without namespaces.
        let elsewhere = pod(json!({"metadata": {"namespace": "other", "labels": {"app": "web"}}}));
        assert!(super::super::filter_all(&elsewhere, &nodes[0], &nodes, &none).is_empty());
    }

    #[test]
    fn required_affinity_co_locates_and_lets_the_first_of_a_group_in() {
        let none = NamespaceLabels::new();
        let cache = labelled("c", "cache", json!({}));
        let app = labelled("a", "app", affinity("cache", "topology.kubernetes.io/zone"));
        let nodes = [
            NodeInfo::new(zone_node("a", "z1"), &[]),
            NodeInfo::new(zone_node("b", "z2"), &[&cache]),
            NodeInfo::new(zone_node("c", "z2"), &[]),
            NodeInfo::new(node("nozone", "4", "8Gi", json!({})), &[]),
        ];
        let msg = select_node(&app, &nodes[..1], &none).unwrap_err();
        assert_eq!(
            msg,
            format!("0/1 nodes are available: 1 {}.", reasons::AFFINITY)
        );
        assert_eq!(
            super::super::filter_all(&app, &nodes[2], &nodes, &none),
            Vec::<String>::new(),
            "same zone as the cache"
        );
        assert_eq!(
            super::super::filter_all(&app, &nodes[3], &nodes, &none),
            [reasons::AFFINITY],
            "a node without the topology label never satisfies the term"
        );
        // The first pod of a group with affinity to itself may go anywhere.
        let first = labelled("f", "group", affinity("group", "kubernetes.io/hostname"));
        let empty = [
            NodeInfo::new(zone_node("a", "z1"), &[]),
            NodeInfo::new(zone_node("b", "z1"), &[]),
        ];
        assert_eq!(select_node(&first, &empty, &none).unwrap(), "a");
        let second = [
            NodeInfo::new(zone_node("a", "z1"), &[]),
            NodeInfo::new(zone_node("b", "z1"), &[&first]),
        ];
        assert_eq!(select_node(&first, &second, &none).unwrap(), "b");
    }

    #[test]
    fn namespace_selectors_and_match_label_keys_widen_and_narrow_terms() {
        let namespaces = NamespaceLabels::from([
            (
                "d".to_string(),
                [("team".to_string(), "x".to_string())].into(),
            ),
            (
                "other".to_string(),
                [("team".to_string(), "x".to_string())].into(),
            ),
            (
                "third".to_string(),
                [("team".to_string(), "y".to_string())].into(),
            ),
        ]);
        let term = |ns_selector: serde_json::Value| {
            json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "web"}}, "namespaceSelector": ns_selector,
                 "topologyKey": "kubernetes.io/hostname"}]}})
        };
        let web_in =
            |ns: &str| pod(json!({"metadata": {"namespace": ns, "labels": {"app": "web"}}}));
        let guard = labelled("g", "guard", term(json!({"matchLabels": {"team": "x"}})));
        let nodes = [NodeInfo::new(zone_node("a", "z1"), &[&web_in("other")])];
        assert_eq!(
            super::super::filter_all(&guard, &nodes[0], &nodes, &namespaces),
            [reasons::ANTI_AFFINITY]
        );
        let nodes = [NodeInfo::new(zone_node("a", "z1"), &[&web_in("third")])];
        assert!(super::super::filter_all(&guard, &nodes[0], &nodes, &namespaces).is_empty());
        let everywhere = labelled("g", "guard", term(json!({})));
        assert_eq!(
            super::super::filter_all(&everywhere, &nodes[0], &nodes, &namespaces),
            [reasons::ANTI_AFFINITY]
        );
        // matchLabelKeys: only pods of the same revision count.
        let revision = |hash: &str| {
            pod(
                json!({"metadata": {"labels": {"app": "web", "pod-template-hash": hash}},
                "spec": {"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": {"matchLabels": {"app": "web"}}, "matchLabelKeys": ["pod-template-hash"],
                     "topologyKey": "kubernetes.io/hostname"}]}}}}),
            )
        };
        let old = revision("v1");
        let nodes = [NodeInfo::new(zone_node("a", "z1"), &[&old])];
        assert!(
            super::super::filter_all(&revision("v2"), &nodes[0], &nodes, &namespaces).is_empty()
        );
        assert_eq!(
            super::super::filter_all(&revision("v1"), &nodes[0], &nodes, &namespaces),
            [reasons::ANTI_AFFINITY]
        );
    }

    #[test]
    fn preferred_terms_and_placed_pods_preferences_score_nodes() {
        let none = NamespaceLabels::new();
        let cache = labelled("c", "cache", json!({}));
        let near_cache = labelled(
            "n",
            "app",
            json!({"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "kubernetes.io/hostname"}}]}}),
        );
        let nodes = [
            NodeInfo::new(zone_node("a", "z1"), &[]),
            NodeInfo::new(zone_node("b", "z1"), &[&cache]),
        ];
        assert_eq!(select_node(&near_cache, &nodes, &none).unwrap(), "b");
        let away = labelled(
            "n",
            "app",
            json!({"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "kubernetes.io/hostname"}}]}}),
        );
        let plain = labelled("p", "plain", json!({}));
        let nodes = [
            NodeInfo::new(zone_node("a", "z1"), &[&cache]),
            NodeInfo::new(zone_node("b", "z1"), &[&plain]),
        ];
        assert_eq!(select_node(&away, &nodes, &none).unwrap(), "b");
        // Symmetry: a placed pod preferring the incoming one draws it.
        let wants_app = labelled(
            "w",
            "cache",
            json!({"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "plain"}}, "topologyKey": "kubernetes.io/hostname"}}]}}),
        );
        let nodes = [
            NodeInfo::new(zone_node("a", "z1"), &[&cache]),
            NodeInfo::new(zone_node("b", "z1"), &[&wants_app]),
        ];
        assert_eq!(select_node(&plain, &nodes, &none).unwrap(), "b");
    }
}
