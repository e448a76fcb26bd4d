//! Node lifecycle and node IPAM against a real apiserver-lite: a node whose lease stops being
//! renewed goes Unknown with the unreachable taints, its pods are marked not ready and evicted
//! as their tolerations say (at once, after tolerationSeconds, never), and the taints go when
//! it reports again; nodes get pod CIDRs in order, keep them across a restart, give them back
//! when deleted, and an exhausted range is reported with a CIDRNotAvailable event. With a real
//! agent and runtime: pods get addresses from the CIDR IPAM gave the node, and a killed agent
//! makes its node Unknown and tainted until it is started again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use e2e::node::TestNode;
use e2e::{ApiServer, FakeKubelet, ServerOptions, client_for, wait_for, wait_until};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};

/// Plays a kubelet's heartbeat for one node: renews its Lease and posts Ready=True every
/// 500 ms while running. Stops when dropped.
struct Heartbeat {
    running: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Heartbeat {
    fn start(server: &ApiServer, node: &str) -> Self {
        let running = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let (kubeconfig, node) = (server.kubeconfig(), node.to_string());
        let (on, off) = (running.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(client) = client_for(&kubeconfig).await else {
                    return;
                };
                let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
                let nodes: Api<Node> = Api::all(client);
                while !off.load(Ordering::Relaxed) {
                    if on.load(Ordering::Relaxed) {
                        let now = k8s_openapi::jiff::Timestamp::now();
                        let lease = serde_json::json!({
                            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                            "metadata": {"name": node},
                            "spec": {"holderIdentity": node, "leaseDurationSeconds": 40,
                                     "renewTime": now.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()},
                        });
                        let pp = PatchParams::apply("e2e-heartbeat").force();
                        let _ = leases.patch(&node, &pp, &Patch::Apply(&lease)).await;
                        let secs = now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
                        let status = serde_json::json!({"status": {"conditions": [
                            {"type": "Ready", "status": "True", "reason": "KubeletReady",
                             "lastHeartbeatTime": secs, "lastTransitionTime": secs}]}});
                        let _ = nodes
                            .patch_status(&node, &PatchParams::default(), &Patch::Merge(&status))
                            .await;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            });
        });
        Heartbeat {
            running,
            stop,
            thread: Some(thread),
        }
    }

    fn pause(&self) {
        self.running.store(false, Ordering::Relaxed);
    }

    fn resume(&self) {
        self.running.store(true, Ordering::Relaxed);
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const NODE: &str = "apiVersion: v1
kind: Node
metadata:
  name: n1
status:
  allocatable: {cpu: \"8\", memory: 8Gi, pods: \"50\"}
  conditions: [{type: Ready, status: \"True\"}]
";

fn pod(name: &str, tolerations: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  nodeName: n1
  tolerations: {tolerations}
  containers: [{{name: c, image: busybox}}]
---
"
    )
}

fn exists(server: &ApiServer, pod: &str) -> bool {
    server.kubectl(&["get", "pod", pod]).success()
}

fn taints(server: &ApiServer) -> String {
    server.jsonpath(
        &["node", "n1"],
        "{range .spec.taints[*]}{.key}:{.effect} {end}",
    )
}

#[test]
fn a_silent_node_goes_unknown_is_tainted_evicts_by_toleration_and_recovers() {
    let server = ApiServer::start_with(ServerOptions {
        extra_args: vec![
            "--node-monitor-grace-period=3s".into(),
            "--node-startup-grace-period=3s".into(),
        ],
        ..Default::default()
    })
    .unwrap();
    server.apply(NODE);
    let heartbeat = Heartbeat::start(&server, "n1");
    // The fake kubelet makes pods ready once; the controller's Ready=False then stays.
    let _kubelet = FakeKubelet::start(&server, |p| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_none_or(|c| !c.iter().any(|c| c.type_ == "Ready"))
    });
    let unreachable = "node.kubernetes.io/unreachable";
    let pods = [
        // Names the taint's key but not its value: does not tolerate it.
        pod(
            "wrong-value",
            &format!("[{{key: {unreachable}, operator: Equal, value: x, effect: NoExecute}}]"),
        ),
        pod(
            "short",
            &format!(
                "[{{key: {unreachable}, operator: Exists, effect: NoExecute, tolerationSeconds: 4}}]"
            ),
        ),
        pod(
            "forever",
            &format!("[{{key: {unreachable}, operator: Exists, effect: NoExecute}}]"),
        ),
        pod("defaulted", "[]"),
    ]
    .concat();
    server.apply(&pods);
    // DefaultTolerationSeconds admission: 300 s for not-ready and unreachable.
    let defaulted = server.jsonpath(
        &["pod", "defaulted"],
        "{range .spec.tolerations[*]}{.key}={.tolerationSeconds} {end}",
    );
    assert!(
        defaulted.contains("node.kubernetes.io/not-ready=300")
            && defaulted.contains("node.kubernetes.io/unreachable=300"),
        "{defaulted}"
    );
    wait_for("pods ready", || {
        ["wrong-value", "short", "forever", "defaulted"]
            .iter()
            .all(|p| {
                server.jsonpath(
                    &["pod", p],
                    "{.status.conditions[?(@.type==\"Ready\")].status}",
                ) == "True"
            })
    });
    // Healthy for longer than the grace period: nothing happens.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(taints(&server), "");
    assert_eq!(
        server.jsonpath(
            &["node", "n1"],
            "{.status.conditions[?(@.type==\"Ready\")].status}"
        ),
        "True"
    );

    heartbeat.pause();
    let stopped = Instant::now();
    wait_until("Ready Unknown", Duration::from_secs(15), || {
        server.jsonpath(
            &["node", "n1"],
            "{.status.conditions[?(@.type==\"Ready\")].status}",
        ) == "Unknown"
    });
    assert!(
        stopped.elapsed() >= Duration::from_millis(2500),
        "not before the grace period"
    );
    assert_eq!(
        server.jsonpath(
            &["node", "n1"],
            "{.status.conditions[?(@.type==\"Ready\")].reason}"
        ),
        "NodeStatusUnknown"
    );
    assert_eq!(
        server.jsonpath(
            &["node", "n1"],
            "{.status.conditions[?(@.type==\"Ready\")].message}"
        ),
        "Kubelet stopped posting node status."
    );
    wait_for("unreachable taints", || {
        taints(&server) == format!("{unreachable}:NoSchedule {unreachable}:NoExecute")
    });
    let tainted = Instant::now();
    wait_until(
        "the untolerating pod evicted at once",
        Duration::from_secs(3),
        || !exists(&server, "wrong-value"),
    );
    assert!(exists(&server, "short"), "short tolerates for 4 s");
    wait_until(
        "short evicted after its seconds",
        Duration::from_secs(10),
        || !exists(&server, "short"),
    );
    assert!(
        tainted.elapsed() >= Duration::from_secs(2),
        "short went after {:?}",
        tainted.elapsed()
    );
    wait_for("pods marked not ready", || {
        ["forever", "defaulted"].iter().all(|p| {
            server.jsonpath(
                &["pod", p],
                "{.status.conditions[?(@.type==\"Ready\")].status}",
            ) == "False"
        })
    });
    assert!(exists(&server, "forever") && exists(&server, "defaulted"));
    let events = server.kubectl(&["get", "events", "-A"]).ok().to_string();
    assert!(events.contains("TaintManagerEviction"), "{events}");

    // The node reports again: the taints go, the tolerating pods stay.
    heartbeat.resume();
    wait_for("taints removed", || taints(&server).is_empty());
    assert_eq!(
        server.jsonpath(
            &["node", "n1"],
            "{.status.conditions[?(@.type==\"Ready\")].status}"
        ),
        "True"
    );
    assert!(exists(&server, "forever") && exists(&server, "defaulted"));
}

fn node(name: &str, cidr: Option<&str>) -> String {
    let spec = cidr
        .map(|c| format!("spec: {{podCIDR: {c}, podCIDRs: [{c}]}}\n"))
        .unwrap_or_default();
    format!("apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n{spec}---\n")
}

fn cidr(server: &ApiServer, name: &str) -> String {
    server.jsonpath(&["node", name], "{.spec.podCIDR} {.spec.podCIDRs[*]}")
}

#[test]
fn nodes_get_pod_cidrs_keep_them_give_them_back_and_exhaustion_is_reported() {
    let mut server = ApiServer::start_with(ServerOptions {
        extra_args: vec![
            "--cluster-cidr=10.250.0.0/23".into(),
            "--node-cidr-mask-size=24".into(),
            "--node-lifecycle=false".into(),
        ],
        ..Default::default()
    })
    .unwrap();
    // n0 comes with a block of its own: it counts as taken.
    server.apply(&node("n0", Some("10.250.0.0/24")));
    server.apply(&node("n1", None));
    wait_for("n1's block", || {
        cidr(&server, "n1") == "10.250.1.0/24 10.250.1.0/24"
    });
    assert_eq!(cidr(&server, "n0"), "10.250.0.0/24 10.250.0.0/24");
    // The range is used up: n2 waits, with an event saying so.
    server.apply(&node("n2", None));
    wait_for("CIDRNotAvailable", || {
        server
            .kubectl(&[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=n2",
            ])
            .stdout
            .contains("CIDRNotAvailable")
    });
    assert_eq!(cidr(&server, "n2"), "");
    // A restart keeps what was given.
    server.restart().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(cidr(&server, "n1"), "10.250.1.0/24 10.250.1.0/24");
    assert_eq!(cidr(&server, "n2"), "");
    // n0 goes: its block is free again and n2 gets it. The restarted server's controllers
    // run once it holds the controller-manager Lease, which takes up to a lease duration
    // (15 s) when the old process could not release it in time (a slow shutdown under load).
    server.kubectl(&["delete", "node", "n0"]).ok();
    wait_until("n2 gets n0's block", Duration::from_secs(45), || {
        cidr(&server, "n2") == "10.250.0.0/24 10.250.0.0/24"
    });
}

#[test]
fn a_real_agent_uses_the_allocated_pod_cidr_and_its_death_taints_the_node() {
    // The agent renews its lease every 10 s: the grace period must be longer.
    let api = ApiServer::start_with(ServerOptions {
        extra_args: vec![
            "--cluster-cidr=10.251.0.0/16".into(),
            "--node-monitor-grace-period=14s".into(),
        ],
        ..Default::default()
    })
    .unwrap();
    let mut node = TestNode::start_with_cidr_from_api(&api);
    let name = node.name.clone();
    wait_until("Ready with a pod CIDR", Duration::from_secs(30), || {
        api.jsonpath(
            &["node", &name],
            "{.status.conditions[?(@.type==\"Ready\")].status}",
        ) == "True"
            && api.jsonpath(&["node", &name], "{.spec.podCIDR}") == "10.251.0.0/24"
    });
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: web}}\nspec:\n  nodeName: {name}\n  terminationGracePeriodSeconds: 1\n  containers: [{{name: c, image: {}, command: [sleep, '3600']}}]\n",
        node.image
    );
    api.apply(&pod);
    // The agent hands the CIDR to the runtime on its next heartbeat (at most 10 s).
    wait_until(
        "web runs with an address of the node's CIDR",
        Duration::from_secs(45),
        || {
            api.jsonpath(&["pod", "web"], "{.status.podIP}")
                .starts_with("10.251.0.")
        },
    );

    node.kill_agent();
    wait_until(
        "the node Unknown and tainted",
        Duration::from_secs(40),
        || {
            api.jsonpath(
                &["node", &name],
                "{.status.conditions[?(@.type==\"Ready\")].status}",
            ) == "Unknown"
                && api
                    .jsonpath(&["node", &name], "{.spec.taints[*].key}")
                    .contains("node.kubernetes.io/unreachable")
        },
    );
    node.start_agent();
    wait_until(
        "Ready again without taints",
        Duration::from_secs(30),
        || {
            api.jsonpath(
                &["node", &name],
                "{.status.conditions[?(@.type==\"Ready\")].status}",
            ) == "True"
                && api.jsonpath(&["node", &name], "{.spec.taints}").is_empty()
        },
    );
    // web tolerates unreachable for 300 s (DefaultTolerationSeconds): still there.
    assert!(api.kubectl(&["get", "pod", "web"]).success());
    api.kubectl(&["delete", "pod", "web", "--wait=false"]).ok();
}
