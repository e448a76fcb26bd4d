//! The agent end to end: apiserver-lite (with its scheduler), our `cri` with real runc in a
//! network namespace of its own, and the `agent` binary. A node registers and heartbeats;
//! pods run through their whole lives (init containers in order, volumes, env from a
//! ConfigMap, restart policies, crash-loop back-off, graceful deletion); a restarted agent
//! adopts what runs.

use std::time::{Duration, Instant};

use e2e::node::TestNode;
use e2e::{ApiServer, wait_until};

fn pod(name: &str, image: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: default
spec:
  terminationGracePeriodSeconds: 2
{extra}
  containers:
  - name: main
    image: {image}
"
    )
}

#[test]
fn a_node_registers_and_runs_pods_through_their_lives() {
    let api = ApiServer::start().expect("apiserver-lite");
    let node = TestNode::start(&api);
    let image = node.image.clone();

    node.wait_ready(&api);
    let pods_capacity = api.jsonpath(&["node", &node.name], "{.status.capacity.pods}");
    assert_eq!(pods_capacity, "110");
    assert!(
        api.jsonpath(
            &["node", &node.name],
            "{.status.nodeInfo.containerRuntimeVersion}"
        )
        .starts_with("cri-lite://")
    );
    let holder = api.jsonpath(
        &["lease", "-n", "kube-node-lease", &node.name],
        "{.spec.holderIdentity}",
    );
    assert_eq!(holder, node.name);

    // A web server: init container writes the page into an emptyDir, env from a ConfigMap.
    api.apply("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: default}\ndata: {greeting: hello-from-configmap}\n",
    );
    let web = format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: default
spec:
  terminationGracePeriodSeconds: 2
  volumes:
  - name: www
    emptyDir: {{}}
  - name: settings
    configMap: {{name: settings}}
  initContainers:
  - name: page
    image: {image}
    command: [sh, -c, 'echo \"$(GREETING) from $(POD_NAME)\" > /www/index.html']
    env:
    - name: GREETING
      valueFrom: {{configMapKeyRef: {{name: settings, key: greeting}}}}
    - name: POD_NAME
      valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
    volumeMounts: [{{name: www, mountPath: /www}}]
  containers:
  - name: main
    image: {image}
    command: [httpd, -f, -p, '8080', -h, /www]
    volumeMounts:
    - {{name: www, mountPath: /www}}
    - {{name: settings, mountPath: /etc/settings}}
"
    );
    api.apply(&web);
    wait_until("web to run", Duration::from_secs(60), || {
        api.jsonpath(&["pod", "web"], "{.status.phase}") == "Running"
    });
    let ip = api.jsonpath(&["pod", "web"], "{.status.podIP}");
    assert!(ip.starts_with("10.77.0."), "{ip}");
    assert_eq!(api.jsonpath(&["pod", "web"], "{.spec.nodeName}"), node.name);
    assert_eq!(
        api.jsonpath(&["pod", "web"], "{.status.containerStatuses[0].ready}"),
        "true"
    );
    assert_eq!(
        api.jsonpath(
            &["pod", "web"],
            "{.status.initContainerStatuses[0].state.terminated.reason}"
        ),
        "Completed"
    );
    let conditions = api.jsonpath(
        &["pod", "web"],
        "{range .status.conditions[*]}{.type}={.status} {end}",
    );
    for c in [
        "PodScheduled=True",
        "Initialized=True",
        "ContainersReady=True",
        "Ready=True",
        "PodReadyToStartContainers=True",
    ] {
        assert!(conditions.contains(c), "{conditions}");
    }
    let page = node
        .cri
        .netns
        .exec(&["busybox", "wget", "-qO-", &format!("http://{ip}:8080/")]);
    assert_eq!(
        String::from_utf8_lossy(&page.stdout).trim(),
        "hello-from-configmap from web"
    );

    // Restart policies: Never ends Failed with the exit code; a crash loop backs off.
    api.apply(&pod("once", &image, "  restartPolicy: Never").replace(
        &format!("image: {image}\n"),
        &format!("image: {image}\n    command: [sh, -c, 'echo bye; exit 3']\n"),
    ));
    api.apply(&pod("crash", &image, "").replace(
        &format!("image: {image}\n"),
        &format!("image: {image}\n    command: [sh, -c, 'exit 1']\n"),
    ));
    wait_until("once to fail", Duration::from_secs(60), || {
        api.jsonpath(&["pod", "once"], "{.status.phase}") == "Failed"
    });
    assert_eq!(
        api.jsonpath(
            &["pod", "once"],
            "{.status.containerStatuses[0].state.terminated.exitCode}"
        ),
        "3"
    );
    assert_eq!(
        api.jsonpath(
            &["pod", "once"],
            "{.status.containerStatuses[0].state.terminated.reason}"
        ),
        "Error"
    );
    wait_until("crash to loop", Duration::from_secs(60), || {
        api.jsonpath(
            &["pod", "crash"],
            "{.status.containerStatuses[0].state.waiting.reason}",
        ) == "CrashLoopBackOff"
    });
    let message = api.jsonpath(
        &["pod", "crash"],
        "{.status.containerStatuses[0].state.waiting.message}",
    );
    assert!(
        message.starts_with("back-off 10s restarting failed container=main pod=crash_default("),
        "{message}"
    );
    assert_eq!(
        api.jsonpath(
            &["pod", "crash"],
            "{.status.containerStatuses[0].restartCount}"
        ),
        "1"
    );
    assert_eq!(
        api.jsonpath(
            &["pod", "crash"],
            "{.status.containerStatuses[0].lastState.terminated.exitCode}"
        ),
        "1"
    );
    let events = api.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=web",
        "-o",
        "jsonpath={.items[*].reason}",
    ]);
    let reasons = events.ok().to_string();
    for reason in ["Created", "Started"] {
        assert!(reasons.contains(reason), "events: {reasons}");
    }

    // Graceful deletion: kubectl delete returns once the agent has stopped everything.
    let started = Instant::now();
    api.kubectl(&["delete", "pod", "web", "crash", "once", "--timeout=60s"])
        .ok();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "deletion took {:?}",
        started.elapsed()
    );
    let runtime = node.cri.runtime_objects();
    assert!(
        runtime.0.is_empty() && runtime.1.is_empty(),
        "left in the runtime: {runtime:?}"
    );
    for qos in ["burstable", "besteffort"] {
        let left = e2e::cri::cgroups_left(&format!("{}/kubepods/{qos}", node.cri.cgroup_root));
        assert!(left.is_empty(), "pod cgroups left behind: {left:?}");
    }
}

#[test]
fn a_restarted_agent_adopts_running_pods_without_restarting_them() {
    let api = ApiServer::start().expect("apiserver-lite");
    let mut node = TestNode::start(&api);
    api.apply(&pod("steady", &node.image, "").replace(
        &format!("image: {}\n", node.image),
        &format!("image: {}\n    command: [sleep, '3600']\n", node.image),
    ));
    wait_until("steady to run", Duration::from_secs(60), || {
        api.jsonpath(&["pod", "steady"], "{.status.phase}") == "Running"
    });
    let id = api.jsonpath(
        &["pod", "steady"],
        "{.status.containerStatuses[0].containerID}",
    );
    node.kill_agent();
    std::thread::sleep(Duration::from_secs(1));
    node.start_agent();
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        api.jsonpath(
            &["pod", "steady"],
            "{.status.containerStatuses[0].containerID}"
        ),
        id
    );
    assert_eq!(
        api.jsonpath(
            &["pod", "steady"],
            "{.status.containerStatuses[0].restartCount}"
        ),
        "0"
    );
    let (sandboxes, containers) = node.cri.runtime_objects();
    assert_eq!(
        (sandboxes.len(), containers.len()),
        (1, 1),
        "one sandbox and one container, adopted"
    );

    // A pod deleted while the agent is away is cleaned up when it returns.
    node.kill_agent();
    api.kubectl(&["delete", "pod", "steady", "--grace-period=0", "--force"])
        .ok();
    node.start_agent();
    wait_until("the runtime to be emptied", Duration::from_secs(30), || {
        let (s, c) = node.cri.runtime_objects();
        s.is_empty() && c.is_empty()
    });
}

#[test]
fn probes_gate_readiness_and_restart_unhealthy_containers() {
    let api = ApiServer::start().expect("apiserver-lite");
    let node = TestNode::start(&api);
    let manifest = format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: probed
  namespace: default
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {}
    command: [sh, -c, 'touch /tmp/alive; sleep 3; touch /tmp/ready; sleep 4; rm /tmp/alive; exec sleep 3600']
    readinessProbe:
      exec: {{command: [cat, /tmp/ready]}}
      periodSeconds: 1
    livenessProbe:
      exec: {{command: [cat, /tmp/alive]}}
      periodSeconds: 1
      failureThreshold: 2
",
        node.image
    );
    api.apply(&manifest);
    wait_until("probed to run", Duration::from_secs(60), || {
        api.jsonpath(&["pod", "probed"], "{.status.phase}") == "Running"
    });
    assert_eq!(
        api.jsonpath(&["pod", "probed"], "{.status.containerStatuses[0].ready}"),
        "false",
        "not ready before the readiness probe passes"
    );
    wait_until(
        "the readiness probe to pass",
        Duration::from_secs(30),
        || api.jsonpath(&["pod", "probed"], "{.status.containerStatuses[0].ready}") == "true",
    );
    wait_until(
        "the liveness probe to restart the container",
        Duration::from_secs(60),
        || {
            api.jsonpath(
                &["pod", "probed"],
                "{.status.containerStatuses[0].restartCount}",
            ) == "1"
        },
    );
    let events = api.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=probed",
        "-o",
        "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
    ]);
    let events = events.ok().to_string();
    assert!(
        events.contains("Unhealthy: Liveness probe failed:"),
        "{events}"
    );
    assert!(
        events.contains("Killing: Container main failed liveness probe, will be restarted"),
        "{events}"
    );
}

#[test]
fn lifecycle_hooks_run_active_deadlines_end_pods_and_admission_rejects_misfits() {
    let api = ApiServer::start().expect("apiserver-lite");
    let node = TestNode::start(&api);
    let shared = tempfile::tempdir().expect("tempdir");
    let manifest = format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: hooked
  namespace: default
spec:
  terminationGracePeriodSeconds: 5
  volumes:
  - name: shared
    hostPath: {{path: {dir}, type: DirectoryOrCreate}}
  containers:
  - name: main
    image: {image}
    command: [sleep, '3600']
    volumeMounts: [{{name: shared, mountPath: /shared}}]
    lifecycle:
      postStart:
        exec: {{command: [sh, -c, 'echo started > /shared/post-start']}}
      preStop:
        exec: {{command: [sh, -c, 'echo stopping > /shared/pre-stop']}}
---
apiVersion: v1
kind: Pod
metadata:
  name: deadline
  namespace: default
spec:
  activeDeadlineSeconds: 3
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    command: [sleep, '3600']
",
        dir = shared.path().display(),
        image = node.image
    );
    api.apply(&manifest);
    wait_until("hooked to run", Duration::from_secs(60), || {
        api.jsonpath(&["pod", "hooked"], "{.status.phase}") == "Running"
    });
    let post = std::fs::read_to_string(shared.path().join("post-start")).unwrap_or_default();
    assert_eq!(
        post.trim(),
        "started",
        "postStart ran before the container counted as started"
    );
    api.kubectl(&["delete", "pod", "hooked", "--timeout=60s"])
        .ok();
    let pre = std::fs::read_to_string(shared.path().join("pre-stop")).unwrap_or_default();
    assert_eq!(
        pre.trim(),
        "stopping",
        "preStop ran before the container was stopped"
    );

    wait_until(
        "the deadline to end the pod",
        Duration::from_secs(60),
        || api.jsonpath(&["pod", "deadline"], "{.status.phase}") == "Failed",
    );
    assert_eq!(
        api.jsonpath(&["pod", "deadline"], "{.status.reason}"),
        "DeadlineExceeded"
    );
    let (_, containers) = node.cri.runtime_objects();
    assert!(
        containers
            .iter()
            .all(|c| c.state != k8s_cri::v1::ContainerState::ContainerRunning as i32),
        "the deadline stopped the container: {containers:?}"
    );

    // Bound straight to the node, a pod that does not fit is rejected at admission.
    api.apply(&format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: huge, namespace: default}}
spec:
  nodeName: {}
  containers:
  - name: main
    image: {}
    resources: {{requests: {{cpu: '100'}}}}
",
        node.name, node.image
    ));
    wait_until("huge to be rejected", Duration::from_secs(30), || {
        api.jsonpath(&["pod", "huge"], "{.status.phase}") == "Failed"
    });
    assert_eq!(
        api.jsonpath(&["pod", "huge"], "{.status.reason}"),
        "OutOfcpu"
    );
    assert_eq!(
        api.jsonpath(&["pod", "huge"], "{.status.message}"),
        "Pod was rejected: Node didn't have enough resource: cpu"
    );
}
