//! The scheduler against a real API server: pods bound to nodes that fit, the upstream
//! Unschedulable condition and FailedScheduling event when none does, a retry as soon as the
//! cluster changes, the scheduler running alone against another API server, inter-pod
//! (anti-)affinity, topology spread and default priority classes.

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

/// A labelled pod requesting a little cpu, with `spec` lines (indented two spaces) added.
fn labelled_pod(name: &str, app: &str, spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\n  labels: {{app: {app}}}\nspec:\n{spec}  containers:\n  - name: c\n    image: busybox\n    resources:\n      requests: {{cpu: 100m}}\n"
    )
}

fn zone_node(name: &str, zone: &str) -> String {
    node(
        name,
        "4",
        &format!("    topology.kubernetes.io/zone: {zone}\n"),
    )
}

fn bound_nodes(server: &ApiServer, selector: &str) -> Vec<String> {
    let out = server
        .kubectl(&[
            "get",
            "pods",
            "-l",
            selector,
            "-o",
            "jsonpath={range .items[*]}{.spec.nodeName}{\"\\n\"}{end}",
        ])
        .ok()
        .to_string();
    out.lines().map(str::to_string).collect()
}

#[test]
fn anti_affinity_spreads_replicas_and_affinity_co_locates() {
    let server = ApiServer::start().unwrap();
    let nodes: Vec<String> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| node(n, "4", ""))
        .collect();
    server
        .kubectl_stdin(&["apply", "-f", "-"], &nodes.join("---\n"))
        .ok();
    let anti = "  affinity:\n    podAntiAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n      - labelSelector: {matchLabels: {app: web}}\n        topologyKey: kubernetes.io/hostname\n";
    for i in 1..=4 {
        server
            .kubectl_stdin(
                &["create", "-f", "-"],
                &labelled_pod(&format!("web-{i}"), "web", anti),
            )
            .ok();
    }
    wait_for("three web pods to be bound", || {
        bound_nodes(&server, "app=web")
            .iter()
            .filter(|n| !n.is_empty())
            .count()
            == 3
    });
    let mut placed: Vec<String> = bound_nodes(&server, "app=web")
        .into_iter()
        .filter(|n| !n.is_empty())
        .collect();
    placed.sort();
    assert_eq!(placed, ["n1", "n2", "n3"], "one web pod per node");
    let condition = "{.status.conditions[?(@.type==\"PodScheduled\")].message}";
    let pending = (1..=4)
        .map(|i| format!("web-{i}"))
        .find(|p| node_of(&server, p).is_empty())
        .expect("one web pod is left over");
    wait_for("the fourth web pod to be marked unschedulable", || {
        !server.jsonpath(&["pod", &pending], condition).is_empty()
    });
    assert_eq!(
        server.jsonpath(&["pod", &pending], condition),
        "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules."
    );

    // Required affinity: every follower joins the cache's node.
    server
        .kubectl_stdin(
            &["create", "-f", "-"],
            &labelled_pod(
                "cache",
                "cache",
                "  nodeSelector: {kubernetes.io/hostname: n2}\n",
            ),
        )
        .ok();
    let near_cache = "  affinity:\n    podAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n      - labelSelector: {matchLabels: {app: cache}}\n        topologyKey: kubernetes.io/hostname\n";
    for i in 1..=3 {
        server
            .kubectl_stdin(
                &["create", "-f", "-"],
                &labelled_pod(&format!("follower-{i}"), "follower", near_cache),
            )
            .ok();
    }
    wait_for("the followers to be bound", || {
        let nodes = bound_nodes(&server, "app=follower");
        nodes.len() == 3 && nodes.iter().all(|n| !n.is_empty())
    });
    assert_eq!(bound_nodes(&server, "app=follower"), ["n2", "n2", "n2"]);

    // The web pods' anti-affinity also keeps other web pods away: freeing a node lets the
    // pending one in.
    let freed = node_of(&server, "web-1");
    server
        .kubectl(&["delete", "pod", "web-1", "--wait=false"])
        .ok();
    server
        .kubectl(&["delete", "pod", "web-1", "--grace-period=0", "--force"])
        .success();
    wait_for("the pending web pod to take the freed node", || {
        node_of(&server, &pending) == freed
    });
}

#[test]
fn topology_spread_keeps_zones_within_max_skew() {
    let server = ApiServer::start().unwrap();
    let nodes = [
        zone_node("a1", "a"),
        zone_node("a2", "a"),
        zone_node("a3", "a"),
        zone_node("b1", "b"),
        node("nozone", "4", ""),
    ];
    server
        .kubectl_stdin(&["apply", "-f", "-"], &nodes.join("---\n"))
        .ok();
    let spread = "  topologySpreadConstraints:\n  - maxSkew: 1\n    topologyKey: topology.kubernetes.io/zone\n    whenUnsatisfiable: DoNotSchedule\n    labelSelector: {matchLabels: {app: spread}}\n";
    for i in 1..=4 {
        server
            .kubectl_stdin(
                &["create", "-f", "-"],
                &labelled_pod(&format!("spread-{i}"), "spread", spread),
            )
            .ok();
    }
    wait_for("the spread pods to be bound", || {
        let nodes = bound_nodes(&server, "app=spread");
        nodes.len() == 4 && nodes.iter().all(|n| !n.is_empty())
    });
    let nodes = bound_nodes(&server, "app=spread");
    let in_zone_a = nodes.iter().filter(|n| n.starts_with('a')).count();
    let in_zone_b = nodes.iter().filter(|n| n.starts_with('b')).count();
    assert_eq!(
        (in_zone_a, in_zone_b),
        (2, 2),
        "zone a has three nodes, zone b one, yet the pods split evenly: {nodes:?}"
    );

    // A pod without constraints (but selected by them) puts zone a ahead, 3 to 2.
    server
        .kubectl_stdin(
            &["create", "-f", "-"],
            &labelled_pod(
                "in-a",
                "spread",
                "  nodeSelector: {topology.kubernetes.io/zone: a}\n",
            ),
        )
        .ok();
    wait_for("in-a to be bound", || !node_of(&server, "in-a").is_empty());
    // With nodeAffinityPolicy Ignore, zone b counts although the pod may not go there:
    // zone a would hold 4 against b's 2. The node without a zone label never fits.
    let ignore_policy = "    nodeAffinityPolicy: Ignore\n";
    server
        .kubectl_stdin(
            &["create", "-f", "-"],
            &labelled_pod(
                "only-zone-a",
                "spread",
                &format!(
                    "{spread}{ignore_policy}  nodeSelector: {{topology.kubernetes.io/zone: a}}\n"
                ),
            ),
        )
        .ok();
    server
        .kubectl_stdin(
            &["create", "-f", "-"],
            &labelled_pod(
                "only-nozone",
                "spread",
                &format!("{spread}  nodeSelector: {{kubernetes.io/hostname: nozone}}\n"),
            ),
        )
        .ok();
    let condition = "{.status.conditions[?(@.type==\"PodScheduled\")].message}";
    for pod in ["only-zone-a", "only-nozone"] {
        wait_for(&format!("{pod} to be marked unschedulable"), || {
            !server.jsonpath(&["pod", pod], condition).is_empty()
        });
    }
    assert_eq!(
        server.jsonpath(&["pod", "only-zone-a"], condition),
        "0/5 nodes are available: 2 node(s) didn't match Pod's node affinity/selector, \
         3 node(s) didn't match pod topology spread constraints."
    );
    assert_eq!(
        server.jsonpath(&["pod", "only-nozone"], condition),
        "0/5 nodes are available: 1 node(s) didn't match pod topology spread constraints \
         (missing required label), 4 node(s) didn't match Pod's node affinity/selector."
    );
    // A second pod in zone b evens it out: the zone-a pod fits now.
    server
        .kubectl_stdin(
            &["create", "-f", "-"],
            &labelled_pod(
                "in-b",
                "spread",
                "  nodeSelector: {topology.kubernetes.io/zone: b}\n",
            ),
        )
        .ok();
    wait_for("only-zone-a to be bound once zone b caught up", || {
        node_of(&server, "only-zone-a").starts_with('a')
    });
}

#[test]
fn pods_naming_no_class_get_the_global_default() {
    let api = ApiServer::start().expect("apiserver-lite");
    let class = |name: &str, value: i32| {
        format!(
            "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {{name: {name}}}\nvalue: {value}\nglobalDefault: true\n"
        )
    };
    api.apply(&class("standard", 500));
    let second = api.kubectl_stdin(&["create", "-f", "-"], &class("another", 10));
    assert!(
        second.fails().contains(
            "priorityclasses.scheduling.k8s.io \"another\" is forbidden: PriorityClass standard is already marked as default. Only one default can exist"
        ),
        "{}",
        second.fails()
    );
    api.apply(&pod("plain", "100m", ""));
    assert_eq!(
        api.jsonpath(
            &["pod", "plain"],
            "{.spec.priorityClassName} {.spec.priority}"
        ),
        "standard 500"
    );
}

#[test]
fn a_pod_that_fits_nowhere_preempts_lower_priority_pods() {
    let server = ApiServer::start().unwrap();
    server
        .kubectl_stdin(&["apply", "-f", "-"], &node("solo", "1", ""))
        .ok();
    server
        .kubectl(&["create", "priorityclass", "low", "--value=100"])
        .ok();
    server
        .kubectl(&["create", "priorityclass", "high", "--value=1000"])
        .ok();
    let with_class =
        |name: &str, class: &str| pod(name, "600m", &format!("  priorityClassName: {class}\n"));
    server
        .kubectl_stdin(&["create", "-f", "-"], &with_class("victim", "low"))
        .ok();
    wait_for("the victim to be bound", || {
        node_of(&server, "victim") == "solo"
    });
    server
        .kubectl_stdin(&["create", "-f", "-"], &with_class("humble", "low"))
        .ok();
    server
        .kubectl_stdin(&["create", "-f", "-"], &with_class("important", "high"))
        .ok();
    wait_for("the important pod to be nominated for solo", || {
        server.jsonpath(&["pod", "important"], "{.status.nominatedNodeName}") == "solo"
    });
    let uid = server.jsonpath(&["pod", "important"], "{.metadata.uid}");
    let preempted = server
        .kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=victim,reason=Preempted",
            "-o",
            "jsonpath={.items[*].message}",
        ])
        .ok()
        .to_string();
    assert_eq!(preempted, format!("Preempted by pod {uid} on node solo"));
    // Without a kubelet the victim stays terminating; meanwhile nothing else is evicted.
    let deleting = server.jsonpath(&["pod", "victim"], "{.metadata.deletionTimestamp}");
    assert!(!deleting.is_empty(), "the victim is being deleted");
    server
        .kubectl(&["delete", "pod", "victim", "--grace-period=0", "--force"])
        .success();
    wait_for("the important pod to take the freed room", || {
        node_of(&server, "important") == "solo"
    });
    // The equal-or-lower priority pod never preempts: it waits.
    assert_eq!(node_of(&server, "humble"), "");
}
