//! The kubelet's statistics through the API server: `kubectl get --raw
//! /api/v1/nodes/<node>/proxy/stats/summary`, `.../metrics/resource` and `.../metrics` on a
//! real node
//! (apiserver-lite, our `cri` with runc, the agent), numbers read from the pod's cgroup.

use std::time::Duration;

use e2e::node::{TestNode, shell_pod};
use e2e::{ApiServer, wait_until};

#[test]
fn summary_and_resource_metrics_reach_kubectl_through_nodes_proxy() {
    let api = ApiServer::start().expect("apiserver-lite");
    let node = TestNode::start(&api);
    node.wait_ready(&api);
    api.apply(&shell_pod(
        "busy",
        &node.name,
        &node.image,
        "while true; do echo tick; sleep 1; done",
    ));
    wait_until("the pod runs", Duration::from_secs(60), || {
        api.jsonpath(&["pod", "busy"], "{.status.phase}") == "Running"
    });
    let base = format!("/api/v1/nodes/{}/proxy", node.name);
    assert_eq!(
        api.kubectl(&["get", "--raw", &format!("{base}/healthz")])
            .ok()
            .trim(),
        "ok"
    );

    let mut summary = serde_json::Value::Null;
    wait_until("the pod in the summary", Duration::from_secs(30), || {
        let raw = api.kubectl(&["get", "--raw", &format!("{base}/stats/summary")]);
        summary = serde_json::from_str(raw.ok()).expect("summary is JSON");
        summary["pods"]
            .as_array()
            .is_some_and(|pods| pods.iter().any(|p| p["podRef"]["name"] == "busy"))
    });
    let node_stats = &summary["node"];
    assert_eq!(node_stats["nodeName"], node.name.as_str());
    assert!(
        node_stats["memory"]["workingSetBytes"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{node_stats}"
    );
    assert!(
        node_stats["cpu"]["usageCoreNanoSeconds"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{node_stats}"
    );
    assert!(
        node_stats["fs"]["capacityBytes"].as_u64().unwrap_or(0) > 0,
        "{node_stats}"
    );
    let pod = summary["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["podRef"]["name"] == "busy")
        .unwrap();
    assert_eq!(pod["podRef"]["namespace"], "default");
    let container = &pod["containers"][0];
    assert_eq!(container["name"], "main");
    assert!(
        container["memory"]["workingSetBytes"].as_u64().unwrap_or(0) > 0,
        "{pod}"
    );
    assert!(container["cpu"]["usageCoreNanoSeconds"].is_u64(), "{pod}");
    assert!(
        container["logs"]["usedBytes"].as_u64().unwrap_or(0) > 0,
        "{pod}"
    );
    assert!(
        pod["process_stats"]["process_count"].as_u64().unwrap_or(0) >= 1,
        "{pod}"
    );

    let metrics = api.kubectl(&["get", "--raw", &format!("{base}/metrics/resource")]);
    let metrics = metrics.ok();
    for prefix in [
        "container_memory_working_set_bytes{container=\"main\",namespace=\"default\",pod=\"busy\"} ",
        "container_cpu_usage_seconds_total{container=\"main\",namespace=\"default\",pod=\"busy\"} ",
        "pod_memory_working_set_bytes{namespace=\"default\",pod=\"busy\"} ",
        "node_memory_working_set_bytes ",
        "resource_scrape_error 0",
    ] {
        assert!(
            metrics.lines().any(|l| l.starts_with(prefix)),
            "no {prefix:?} in\n{metrics}"
        );
    }

    // The agent's own metrics: pods, containers and the CRI calls it made.
    let own = api.kubectl(&["get", "--raw", &format!("{base}/metrics")]);
    let own = own.ok();
    for line in [
        format!("kubelet_node_name{{node=\"{}\"}} 1", node.name),
        "kubelet_running_pods 1".to_string(),
        "kubelet_running_containers{container_state=\"running\"} 1".to_string(),
    ] {
        assert!(own.lines().any(|l| l == line), "no {line:?} in\n{own}");
    }
    for prefix in [
        "kubelet_runtime_operations_total{operation_type=\"run_podsandbox\"} ",
        "kubelet_runtime_operations_duration_seconds_count{operation_type=\"list_podsandbox_stats\"} ",
        "process_resident_memory_bytes ",
    ] {
        assert!(
            own.lines().any(|l| l.starts_with(prefix)),
            "no {prefix:?} in\n{own}"
        );
    }

    // A node that does not exist is a NotFound, as upstream.
    let missing = api.kubectl(&["get", "--raw", "/api/v1/nodes/nope/proxy/healthz"]);
    assert!(
        missing.fails().contains("NotFound") || missing.fails().contains("not found"),
        "{}",
        missing.fails()
    );
    api.kubectl(&["delete", "pod", "busy", "--wait=true"]).ok();
}
