//! The scheduler against a real API server: pods bound to nodes that fit, the upstream
//! Unschedulable condition and FailedScheduling event when none does, a retry as soon as the
//! cluster changes, and the scheduler running alone against another API server.

use std::time::Duration;

use e2e::{ApiServer, Process, ServerOptions, wait_for, workspace_bin};

fn node(name: &str, cpu: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels:\n    kubernetes.io/hostname: {name}\n{extra}status:\n  allocatable: {{cpu: \"{cpu}\", memory: 4Gi, pods: \"10\"}}\n  capacity: {{cpu: \"{cpu}\", memory: 4Gi, pods: \"10\"}}\n  conditions:\n  - {{type: Ready, status: \"True\"}}\n"
    )
}

fn pod(name: &str, cpu: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n{extra}  containers:\n  - name: c\n    image: busybox\n    resources:\n      requests: {{cpu: \"{cpu}\"}}\n"
    )
}

fn node_of(server: &ApiServer, pod: &str) -> String {
    server
        .kubectl(&["get", "pod", pod, "-o", "jsonpath={.spec.nodeName}"])
        .ok()
        .to_string()
}

#[test]
fn pods_are_bound_to_fitting_nodes_and_unschedulable_ones_wait_for_room() {
    let server = ApiServer::start().unwrap();
    server
        .kubectl_stdin(
            &["apply", "-f", "-"],
            &format!("{}---\n{}", node("n1", "1", ""), node("n2", "1", "")),
        )
        .ok();
    for p in ["p1", "p2"] {
        server
            .kubectl_stdin(&["create", "-f", "-"], &pod(p, "600m", ""))
            .ok();
    }
    wait_for("p1 and p2 to be bound", || {
        !node_of(&server, "p1").is_empty() && !node_of(&server, "p2").is_empty()
    });
    assert_ne!(
        node_of(&server, "p1"),
        node_of(&server, "p2"),
        "each node has room for one"
    );
    let events = server.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=p1,reason=Scheduled",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(
        events
            .ok()
            .starts_with("Successfully assigned default/p1 to n"),
        "{events:?}"
    );

    server
        .kubectl_stdin(&["create", "-f", "-"], &pod("p3", "600m", ""))
        .ok();
    let condition = "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].message}";
    wait_for("p3 to be marked unschedulable", || {
        server
            .kubectl(&["get", "pod", "p3", "-o", condition])
            .ok()
            .contains("nodes are available")
    });
    let message = server
        .kubectl(&["get", "pod", "p3", "-o", condition])
        .ok()
        .to_string();
    assert_eq!(message, "0/2 nodes are available: 2 Insufficient cpu.");
    let failed = server.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=p3,reason=FailedScheduling",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert_eq!(failed.ok(), "0/2 nodes are available: 2 Insufficient cpu.");
    let described = server.kubectl(&["describe", "pod", "p3"]).ok().to_string();
    assert!(described.contains("FailedScheduling"), "{described}");

    // A new node is a change of the cluster: the pod is retried at once.
    server
        .kubectl_stdin(&["apply", "-f", "-"], &node("n3", "2", ""))
        .ok();
    wait_for("p3 to be bound to the new node", || {
        node_of(&server, "p3") == "n3"
    });

    // Taints and selectors.
    let tainted = node(
        "gpu",
        "8",
        "spec:\n  taints:\n  - {key: dedicated, value: gpu, effect: NoSchedule}\n",
    );
    server.kubectl_stdin(&["apply", "-f", "-"], &tainted).ok();
    server
        .kubectl_stdin(
            &["create", "-f", "-"],
            &pod(
                "wants-gpu",
                "1",
                "  nodeSelector:\n    kubernetes.io/hostname: gpu\n",
            ),
        )
        .ok();
    wait_for("wants-gpu to be marked unschedulable", || {
        server
            .kubectl(&["get", "pod", "wants-gpu", "-o", condition])
            .ok()
            .contains("nodes are available")
    });
    let message = server
        .kubectl(&["get", "pod", "wants-gpu", "-o", condition])
        .ok()
        .to_string();
    assert!(
        message.contains("1 node(s) had untolerated taint {dedicated: gpu}")
            && message.contains("3 node(s) didn't match Pod's node affinity/selector"),
        "{message}"
    );
    server.kubectl_stdin(
        &["create", "-f", "-"],
        &pod("tolerates-gpu", "1", "  nodeSelector:\n    kubernetes.io/hostname: gpu\n  tolerations:\n  - {key: dedicated, operator: Equal, value: gpu, effect: NoSchedule}\n"),
    )
    .ok();
    wait_for("tolerates-gpu to be bound", || {
        node_of(&server, "tolerates-gpu") == "gpu"
    });
}

#[test]
fn the_scheduler_runs_alone_against_another_api_server() {
    let server = ApiServer::start_with(ServerOptions {
        extra_args: vec!["--scheduler=false".into()],
        ..Default::default()
    })
    .unwrap();
    server
        .kubectl_stdin(&["apply", "-f", "-"], &node("solo", "2", ""))
        .ok();
    server
        .kubectl_stdin(&["create", "-f", "-"], &pod("waiting", "100m", ""))
        .ok();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        node_of(&server, "waiting"),
        "",
        "no scheduler runs in this server"
    );
    let mut cmd = std::process::Command::new(workspace_bin("apiserver-lite"));
    cmd.arg("--scheduler-only")
        .arg("--kubeconfig")
        .arg(server.kubeconfig());
    let log = server.data_dir.path().join("scheduler.log");
    let mut scheduler = Process::spawn("scheduler", cmd, log).unwrap();
    wait_for("the standalone scheduler to bind the pod", || {
        node_of(&server, "waiting") == "solo"
    });
    let status = scheduler
        .terminate(Duration::from_secs(10))
        .expect("exit status");
    assert!(
        status.success(),
        "the scheduler exits cleanly on SIGTERM: {status:?}\n{}",
        scheduler.log()
    );
}

#[test]
fn pods_take_their_priority_from_their_priority_class() {
    let api = ApiServer::start().expect("apiserver-lite");
    api.kubectl(&[
        "create",
        "priorityclass",
        "high",
        "--value=1000",
        "--preemption-policy=Never",
    ])
    .ok();
    let pod = |name: &str, class: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  priorityClassName: {class}\n  containers: [{{name: c, image: busybox}}]\n"
        )
    };
    api.apply(&pod("important", "high"));
    assert_eq!(
        api.jsonpath(&["pod", "important"], "{.spec.priority}"),
        "1000"
    );
    assert_eq!(
        api.jsonpath(&["pod", "important"], "{.spec.preemptionPolicy}"),
        "Never"
    );
    api.apply(&pod("critical", "system-node-critical"));
    assert_eq!(
        api.jsonpath(&["pod", "critical"], "{.spec.priority}"),
        "2000001000"
    );
    let refused = api.kubectl_stdin(&["apply", "-f", "-"], &pod("lost", "nope"));
    assert!(
        refused
            .fails()
            .contains("pods \"lost\" is forbidden: no PriorityClass with name nope was found"),
        "{}",
        refused.fails()
    );
}
