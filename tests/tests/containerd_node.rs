//! The agent on Debian's containerd (1.6, runc, CNI bridge) instead of our runtime: the pod
//! suite's core against a CRI runtime we did not write. apiserver-lite, containerd in a
//! network namespace of its own with a locally built pause image, and the `agent` binary.

use std::time::Duration;

use e2e::containerd::ContainerdNode;
use e2e::node::{shell_pod, wait_node_ready};
use e2e::{ApiServer, wait_until};

fn phase(api: &ApiServer, pod: &str) -> String {
    api.jsonpath(&["pod", pod], "{.status.phase}")
}

#[test]
fn pods_live_their_lives_on_containerd() {
    let api = ApiServer::start().expect("apiserver-lite");
    let mut node = ContainerdNode::start(&api);
    wait_node_ready(&api, &node.name);
    assert!(
        api.jsonpath(
            &["node", &node.name],
            "{.status.nodeInfo.containerRuntimeVersion}"
        )
        .starts_with("containerd://")
    );

    // Init container, emptyDir, env from a ConfigMap, an exec readiness probe.
    api.apply("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: default}\ndata: {greeting: hello-from-configmap}\n");
    api.apply(&format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: web, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 2
  volumes:
  - name: data
    emptyDir: {{}}
  initContainers:
  - name: init
    image: {image}
    command: [sh, -c, 'echo made-by-init > /data/msg']
    volumeMounts: [{{name: data, mountPath: /data}}]
  containers:
  - name: main
    image: {image}
    command: [sh, -c, 'cat /data/msg; echo $GREETING; exec sleep 3600']
    env:
    - name: GREETING
      valueFrom: {{configMapKeyRef: {{name: settings, key: greeting}}}}
    volumeMounts: [{{name: data, mountPath: /data}}]
    readinessProbe:
      exec: {{command: [cat, /data/msg]}}
      periodSeconds: 1
",
        node = node.name,
        image = node.image
    ));
    wait_until("web Ready", Duration::from_secs(90), || {
        api.jsonpath(
            &["pod", "web"],
            "{.status.conditions[?(@.type==\"Ready\")].status}",
        ) == "True"
    });
    assert!(
        api.jsonpath(&["pod", "web"], "{.status.podIP}")
            .starts_with("10.88."),
        "the pod has no CNI address"
    );
    let container_id = api.jsonpath(
        &["pod", "web"],
        "{.status.containerStatuses[0].containerID}",
    );
    assert!(container_id.starts_with("containerd://"), "{container_id}");

    // Logs and exec through the agent to containerd's streaming server.
    wait_until("web's logs", Duration::from_secs(20), || {
        let logs = api.kubectl(&["logs", "web"]);
        logs.success() && logs.ok().contains("made-by-init\nhello-from-configmap")
    });
    let exec = api.kubectl(&["exec", "web", "--", "sh", "-c", "echo from-exec; exit 3"]);
    assert_eq!(exec.code, 3, "{exec:?}");
    assert!(exec.stdout.contains("from-exec"), "{exec:?}");

    // A container that fails is restarted behind the back-off.
    api.apply(&shell_pod(
        "crash",
        &node.name,
        &node.image,
        "echo dying; exit 1",
    ));
    wait_until("crash in CrashLoopBackOff", Duration::from_secs(90), || {
        api.jsonpath(
            &["pod", "crash"],
            "{.status.containerStatuses[0].state.waiting.reason}",
        ) == "CrashLoopBackOff"
    });
    assert_eq!(
        api.jsonpath(
            &["pod", "crash"],
            "{.status.containerStatuses[0].lastState.terminated.exitCode}"
        ),
        "1"
    );
    assert_eq!(
        api.jsonpath(
            &["pod", "crash"],
            "{.status.containerStatuses[0].lastState.terminated.reason}"
        ),
        "Error"
    );

    // A restarted agent adopts what containerd runs.
    node.stop_agent();
    node.start_agent();
    wait_node_ready(&api, &node.name);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        api.jsonpath(
            &["pod", "web"],
            "{.status.containerStatuses[0].containerID}"
        ),
        container_id
    );
    assert_eq!(
        api.jsonpath(
            &["pod", "web"],
            "{.status.containerStatuses[0].restartCount}"
        ),
        "0"
    );
    assert_eq!(phase(&api, "web"), "Running");

    // Graceful deletion returns once the agent removed the pod.
    let deleted = api.kubectl(&["delete", "pod", "web", "crash", "--timeout=60s"]);
    assert!(deleted.success(), "{deleted:?}");
    assert!(
        api.kubectl(&["get", "pod", "web"])
            .fails()
            .contains("NotFound")
    );
}
