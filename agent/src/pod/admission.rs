//! Admission of a pod newly bound to this node, as kubelet's: it must fit the node's
//! allocatable resources and pod count beside the pods already admitted, its host ports must
//! be free, its node selector and required affinity must match, and it must tolerate the
//! node's NoExecute taints. A rejected pod is Failed with upstream's reason (OutOfcpu,
//! OutOfmemory, OutOfpods, NodePorts, NodeAffinity, Taint) and never started. Pure; the
//! scheduler's predicates from `apimachinery::scheduling` do the checking.

use apimachinery::scheduling::{NodeInfo, filter};
use k8s_openapi::api::core::v1::{Node, Pod};

/// Why a pod was rejected: the status reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Status reason.
    pub reason: String,
    /// Status message.
    pub message: String,
}

/// Decides whether `pod` may run on `node` beside `admitted` (the node's other active pods).
pub fn admit(pod: &Pod, node: &Node, admitted: &[&Pod]) -> Result<(), Rejection> {
    // kubelet does not enforce what it cannot see as its own business: cordoning, nodeName
    // (the binding chose it), and NoSchedule taints (the scheduler's). Compare against a view
    // of the node without them.
    let mut view = node.clone();
    if let Some(spec) = view.spec.as_mut() {
        spec.unschedulable = None;
        if let Some(taints) = spec.taints.as_mut() {
            taints.retain(|t| t.effect == "NoExecute");
        }
    }
    // The scheduler treats a node that is not Ready as tainted; the node admitting a pod is
    // by definition up.
    let status = view.status.get_or_insert_with(Default::default);
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    conditions.retain(|c| c.type_ != "Ready");
    conditions.push(k8s_openapi::api::core::v1::NodeCondition {
        type_: "Ready".into(),
        status: "True".into(),
        ..Default::default()
    });
    let mut candidate = pod.clone();
    if let Some(spec) = candidate.spec.as_mut() {
        spec.node_name = None;
    }
    let info = NodeInfo::new(view, admitted);
    let reasons = filter(&candidate, &info);
    let Some(first) = reasons.first() else {
        return Ok(());
    };
    let rejected = |reason: &str, message: String| {
        Err(Rejection {
            reason: reason.into(),
            message,
        })
    };
    if let Some(resource) = first.strip_prefix("Insufficient ") {
        return rejected(
            &format!("OutOf{resource}"),
            format!("Pod was rejected: Node didn't have enough resource: {resource}"),
        );
    }
    if first.contains("Too many pods") {
        return rejected(
            "OutOfpods",
            "Pod was rejected: Node didn't have enough resource: pods".into(),
        );
    }
    if first.contains("free ports") {
        return rejected(
            "NodePorts",
            "Pod was rejected: Predicate NodePorts failed".into(),
        );
    }
    if first.contains("affinity/selector") {
        return rejected(
            "NodeAffinity",
            "Pod was rejected: Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector".into(),
        );
    }
    if first.contains("untolerated taint") {
        return rejected(
            "Taint",
            format!("Pod was rejected: Predicate TaintToleration failed: {first}"),
        );
    }
    rejected(
        "UnexpectedAdmissionError",
        format!("Pod was rejected: {}", reasons.join(", ")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1", "labels": {"disk": "ssd"}},
            "spec": {"taints": [{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]},
            "status": {"allocatable": {"cpu": "1", "memory": "1Gi", "pods": "2"}}
        }))
        .unwrap()
    }

    fn pod(cpu: &str, extra: serde_json::Value) -> Pod {
        let mut v = serde_json::json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": cpu}}}]}
        });
        if let (Some(spec), Some(extra)) = (v["spec"].as_object_mut(), extra.as_object()) {
            for (k, x) in extra {
                spec.insert(k.clone(), x.clone());
            }
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_pod_that_fits_is_admitted_despite_noschedule_taints() {
        assert_eq!(
            admit(&pod("500m", serde_json::json!({})), &node(), &[]),
            Ok(())
        );
    }

    #[test]
    fn resources_pods_ports_and_selectors_reject_with_upstream_reasons() {
        let running = pod("800m", serde_json::json!({}));
        let err = admit(&pod("500m", serde_json::json!({})), &node(), &[&running]).unwrap_err();
        assert_eq!(err.reason, "OutOfcpu");
        assert_eq!(
            err.message,
            "Pod was rejected: Node didn't have enough resource: cpu"
        );
        let small = pod("1m", serde_json::json!({}));
        let err = admit(&small, &node(), &[&small, &small]).unwrap_err();
        assert_eq!(err.reason, "OutOfpods");
        let err = admit(
            &pod("1m", serde_json::json!({"nodeSelector": {"disk": "hdd"}})),
            &node(),
            &[],
        )
        .unwrap_err();
        assert_eq!(err.reason, "NodeAffinity");
    }
}
