//! Preemption, as upstream's DefaultPreemption plugin: for a pod that fits nowhere and may
//! preempt (`preemptionPolicy` other than `Never`), the node where evicting pods of lower
//! priority makes it fit, and the fewest of them to evict.
//!
//! On each node, every lower-priority pod is removed; if the pod then fits, the removed pods
//! are given back one by one, most important first (higher priority, then the older), and
//! each one the pod still fits beside stays. Among the nodes that work, the one whose most
//! important victim has the lowest priority wins, then the lowest sum of victim priorities,
//! then the fewest victims, then the first name. PodDisruptionBudgets are not consulted.

use k8s_openapi::api::core::v1::{Node, Pod};

use super::{NamespaceLabels, NodeInfo, filter_all, is_terminal};

/// A node with the pods bound to it, as the preemption search needs them.
#[derive(Debug, Clone)]
pub struct NodePods<'a> {
    /// The node.
    pub node: Node,
    /// Its pods.
    pub pods: Vec<&'a Pod>,
}

/// The node to free and the pods to evict there.
#[derive(Debug, Clone, PartialEq)]
pub struct Preemption<'a> {
    /// The node's name.
    pub node: String,
    /// The pods to evict.
    pub victims: Vec<&'a Pod>,
}

fn priority(pod: &Pod) -> i64 {
    pod.spec
        .as_ref()
        .and_then(|s| s.priority)
        .map(i64::from)
        .unwrap_or(0)
}

/// Whether the pod may preempt now: its policy allows it, and the node it was nominated for
/// earlier is not still releasing lower-priority pods (upstream's
/// `PodEligibleToPreemptOthers`).
pub fn may_preempt(pod: &Pod, cluster: &[NodePods<'_>]) -> bool {
    let spec = pod.spec.as_ref();
    if spec.and_then(|s| s.preemption_policy.as_deref()) == Some("Never") {
        return false;
    }
    let nominated = pod
        .status
        .as_ref()
        .and_then(|s| s.nominated_node_name.as_deref())
        .filter(|n| !n.is_empty());
    let Some(nominated) = nominated else {
        return true;
    };
    let own = priority(pod);
    !cluster
        .iter()
        .filter(|n| n.node.metadata.name.as_deref() == Some(nominated))
        .flat_map(|n| &n.pods)
        .any(|p| p.metadata.deletion_timestamp.is_some() && priority(p) < own)
}

/// Where to preempt for `pod`, if evicting lower-priority pods somewhere makes room.
pub fn find_preemption<'a>(
    pod: &Pod,
    cluster: &[NodePods<'a>],
    namespaces: &NamespaceLabels,
) -> Option<Preemption<'a>> {
    let own = priority(pod);
    let mut infos: Vec<NodeInfo> = cluster
        .iter()
        .map(|n| NodeInfo::new(n.node.clone(), &n.pods))
        .collect();
    let mut best: Option<((i64, i64, usize), Preemption<'a>)> = None;
    for (i, candidate) in cluster.iter().enumerate() {
        let (mut lower, higher): (Vec<&Pod>, Vec<&Pod>) = candidate
            .pods
            .iter()
            .copied()
            .filter(|p| !is_terminal(p))
            .partition(|p| priority(p) < own);
        if lower.is_empty() {
            continue;
        }
        let original = std::mem::replace(
            &mut infos[i],
            NodeInfo::new(candidate.node.clone(), &higher),
        );
        let fits = |infos: &[NodeInfo]| filter_all(pod, &infos[i], infos, namespaces).is_empty();
        if fits(&infos) {
            lower.sort_by_key(|p| {
                (
                    std::cmp::Reverse(priority(p)),
                    p.metadata.creation_timestamp.clone().map(|t| t.0),
                )
            });
            let mut kept = higher.clone();
            let mut victims = Vec::new();
            for p in lower {
                kept.push(p);
                infos[i] = NodeInfo::new(candidate.node.clone(), &kept);
                if !fits(&infos) {
                    kept.pop();
                    victims.push(p);
                }
            }
            if victims.is_empty() {
                infos[i] = original;
                continue;
            }
            let rank = (
                victims
                    .iter()
                    .map(|v| priority(v))
                    .max()
                    .unwrap_or(i64::MIN),
                victims.iter().map(|v| priority(v)).sum::<i64>(),
                victims.len(),
            );
            let name = candidate.node.metadata.name.clone().unwrap_or_default();
            if best
                .as_ref()
                .is_none_or(|(r, b)| rank < *r || (rank == *r && name < b.node))
            {
                best = Some((
                    rank,
                    Preemption {
                        node: name,
                        victims,
                    },
                ));
            }
        }
        infos[i] = original;
    }
    best.map(|(_, p)| p)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{node, pod};
    use super::*;
    use serde_json::json;

    fn with_priority(name: &str, priority: i32, cpu: &str) -> Pod {
        pod(
            json!({"metadata": {"name": name}, "spec": {"priority": priority,
            "containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": cpu, "memory": "1Mi"}}}]}}),
        )
    }

    fn names(p: &Preemption<'_>) -> Vec<String> {
        p.victims
            .iter()
            .map(|v| v.metadata.name.clone().unwrap_or_default())
            .collect()
    }

    #[test]
    fn the_fewest_lowest_priority_victims_on_the_best_node_are_chosen() {
        let none = NamespaceLabels::new();
        let low_a = with_priority("low-a", 10, "1");
        let low_b = with_priority("low-b", 20, "1");
        let mid = with_priority("mid", 500, "2");
        let high = with_priority("high", 2000, "1");
        let incoming = with_priority("incoming", 1000, "2");
        let cluster = [
            // x: evicting mid (500) alone makes room.
            NodePods {
                node: node("x", "4", "8Gi", json!({})),
                pods: vec![&mid, &high, &low_a],
            },
            // y: evicting low-a and low-b (10 and 20) makes room: the better choice.
            NodePods {
                node: node("y", "4", "8Gi", json!({})),
                pods: vec![&low_a, &low_b, &high],
            },
        ];
        let found = find_preemption(&incoming, &cluster, &none).expect("a node to free");
        assert_eq!(found.node, "y");
        assert_eq!(
            names(&found),
            ["low-a"],
            "one is enough, the less important one"
        );
        let big = with_priority("big", 1000, "3");
        let found = find_preemption(&big, &cluster[1..], &none).expect("a node to free");
        assert_eq!(names(&found), ["low-b", "low-a"]);
        // Nothing of lower priority to evict: no preemption.
        let humble = with_priority("humble", 5, "2");
        assert!(find_preemption(&humble, &cluster, &none).is_none());
        // A node the pod may never use (taint) is no candidate.
        let tainted = [NodePods {
            node: node(
                "t",
                "4",
                "8Gi",
                json!({"spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}}),
            ),
            pods: vec![&low_a, &low_b, &high],
        }];
        assert!(find_preemption(&incoming, &tainted, &none).is_none());
    }

    #[test]
    fn never_policy_and_pending_victims_stop_preemption() {
        let incoming = with_priority("incoming", 1000, "2");
        assert!(may_preempt(&incoming, &[]));
        let mut never = incoming.clone();
        never.spec.as_mut().unwrap().preemption_policy = Some("Never".into());
        assert!(!may_preempt(&never, &[]));
        let mut nominated = incoming.clone();
        nominated.status = Some(k8s_openapi::api::core::v1::PodStatus {
            nominated_node_name: Some("y".into()),
            ..Default::default()
        });
        let mut leaving = with_priority("leaving", 10, "1");
        leaving.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-01-01T00:00:00Z".parse().unwrap(),
            ));
        let cluster = [NodePods {
            node: node("y", "4", "8Gi", json!({})),
            pods: vec![&leaving],
        }];
        assert!(!may_preempt(&nominated, &cluster));
        let gone = [NodePods {
            node: node("y", "4", "8Gi", json!({})),
            pods: vec![],
        }];
        assert!(may_preempt(&nominated, &gone));
    }
}
