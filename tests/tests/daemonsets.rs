//! The DaemonSet controller against a real apiserver-lite with Node objects and no node
//! agent ([`FakeKubelet`] marks pods Ready): one pod per eligible node (nodeSelector,
//! taints), following node label changes, a rolling update through real `kubectl set image`
//! and `kubectl rollout status`.

use std::time::Duration;

use e2e::{ApiServer, FakeKubelet, wait_until};

fn node(name: &str, labels: &str, taints: &str) -> String {
    format!(
        "apiVersion: v1
kind: Node
metadata:
  name: {name}
  labels: {{{labels}}}
spec:
  taints: [{taints}]
status:
  allocatable: {{cpu: \"8\", memory: 16Gi, pods: \"110\"}}
  conditions: [{{type: Ready, status: \"True\"}}]
"
    )
}

const DAEMONSET: &str = "apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: default}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      nodeSelector: {role: worker}
      containers: [{name: main, image: \"example/agent:1\"}]
";

/// `node=image` for every live pod of the set, sorted.
fn placement(api: &ApiServer) -> Vec<String> {
    let out = api.jsonpath(
        &["pods", "-l", "app=agent"],
        "{range .items[*]}{.spec.nodeName}={.spec.containers[0].image}{\"\\n\"}{end}",
    );
    let mut v: Vec<String> = out.lines().map(str::to_string).collect();
    v.sort();
    v
}

#[test]
fn a_daemonset_runs_one_pod_per_eligible_node_and_rolls_out() {
    let api = ApiServer::start().expect("apiserver-lite");
    api.apply(&node("n1", "role: worker", ""));
    api.apply(&node(
        "n2",
        "role: worker",
        "{key: dedicated, value: db, effect: NoSchedule}",
    ));
    api.apply(&node("n3", "role: edge", ""));
    let _kubelet = FakeKubelet::start(&api, |_| true);
    api.apply(DAEMONSET);

    api.kubectl(&["rollout", "status", "daemonset/agent", "--timeout=30s"])
        .ok();
    assert_eq!(placement(&api), ["n1=example/agent:1"]);
    assert_eq!(
        api.jsonpath(&["ds", "agent"], "{.status.desiredNumberScheduled}"),
        "1"
    );

    // A node that starts to match gets a pod; one that stops matching loses it.
    api.kubectl(&["label", "node", "n3", "role=worker", "--overwrite"])
        .ok();
    wait_until("a pod on n3", Duration::from_secs(20), || {
        placement(&api) == ["n1=example/agent:1", "n3=example/agent:1"]
    });
    api.kubectl(&["rollout", "status", "daemonset/agent", "--timeout=30s"])
        .ok();

    api.kubectl(&["set", "image", "daemonset/agent", "main=example/agent:2"])
        .ok();
    api.kubectl(&["rollout", "status", "daemonset/agent", "--timeout=60s"])
        .ok();
    wait_until(
        "every pod on the new image",
        Duration::from_secs(20),
        || placement(&api) == ["n1=example/agent:2", "n3=example/agent:2"],
    );
    assert_eq!(
        api.jsonpath(&["ds", "agent"], "{.status.updatedNumberScheduled}"),
        "2"
    );

    api.kubectl(&["label", "node", "n1", "role-"]).ok();
    wait_until("n1's pod to go", Duration::from_secs(20), || {
        placement(&api) == ["n3=example/agent:2"]
    });
    // Tolerating the taint brings n2 in.
    api.kubectl(&[
        "patch",
        "daemonset",
        "agent",
        "--type=json",
        "-p",
        "[{\"op\":\"add\",\"path\":\"/spec/template/spec/tolerations\",\"value\":[{\"key\":\"dedicated\",\"operator\":\"Exists\"}]}]",
    ])
    .ok();
    api.kubectl(&["rollout", "status", "daemonset/agent", "--timeout=60s"])
        .ok();
    wait_until("a pod on n2", Duration::from_secs(20), || {
        placement(&api) == ["n2=example/agent:2", "n3=example/agent:2"]
    });
}
