//! The garbage collector against a real apiserver-lite, driven by `kubectl delete
//! --cascade=background|foreground|orphan` on ReplicaSets and Deployments, and a pod whose
//! owner never existed. No nodes: pods stay unscheduled, so their deletion is immediate.

use e2e::{ApiServer, wait_for};

fn replicaset(name: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: {name}
  namespace: default
spec:
  replicas: 2
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers: [{{name: c, image: busybox}}]
"
    )
}

fn pods(server: &ApiServer, selector: &str) -> Vec<String> {
    server
        .kubectl(&[
            "get",
            "pods",
            "-l",
            selector,
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])
        .ok()
        .split_whitespace()
        .map(String::from)
        .collect()
}

fn exists(server: &ApiServer, what: &str, name: &str) -> bool {
    !server
        .kubectl(&["get", what, name, "--ignore-not-found", "-o", "name"])
        .ok()
        .trim()
        .is_empty()
}

#[test]
fn deleting_a_replicaset_in_the_background_takes_its_pods_away() {
    let server = ApiServer::start().unwrap();
    server
        .kubectl_stdin(&["apply", "-f", "-"], &replicaset("bg"))
        .ok();
    wait_for("two pods", || pods(&server, "app=bg").len() == 2);
    server
        .kubectl(&["delete", "rs", "bg", "--cascade=background"])
        .ok();
    assert!(!exists(&server, "rs", "bg"), "the owner goes at once");
    wait_for("the pods to be collected", || {
        pods(&server, "app=bg").is_empty()
    });
}

#[test]
fn foreground_deletion_removes_dependents_before_the_owner() {
    let server = ApiServer::start().unwrap();
    server
        .kubectl_stdin(&["apply", "-f", "-"], &replicaset("fg"))
        .ok();
    wait_for("two pods", || pods(&server, "app=fg").len() == 2);
    // kubectl waits until the ReplicaSet is gone; by then its pods must be gone.
    server
        .kubectl(&[
            "delete",
            "rs",
            "fg",
            "--cascade=foreground",
            "--timeout=60s",
        ])
        .ok();
    assert!(!exists(&server, "rs", "fg"));
    assert!(
        pods(&server, "app=fg").is_empty(),
        "pods outlived their owner"
    );

    // A Deployment: ReplicaSet and pods first, then the Deployment.
    server
        .kubectl(&[
            "create",
            "deployment",
            "dep",
            "--image=busybox",
            "--replicas=2",
        ])
        .ok();
    wait_for("the deployment's pods", || {
        pods(&server, "app=dep").len() == 2
    });
    server
        .kubectl(&[
            "delete",
            "deployment",
            "dep",
            "--cascade=foreground",
            "--timeout=60s",
        ])
        .ok();
    assert!(
        pods(&server, "app=dep").is_empty(),
        "pods outlived the deployment"
    );
    let sets = server.kubectl(&["get", "rs", "-l", "app=dep", "-o", "name"]);
    assert_eq!(sets.ok().trim(), "", "replica sets outlived the deployment");
}

#[test]
fn orphaning_deletion_leaves_the_dependents_without_the_owner_reference() {
    let server = ApiServer::start().unwrap();
    server
        .kubectl_stdin(&["apply", "-f", "-"], &replicaset("or"))
        .ok();
    wait_for("two pods", || pods(&server, "app=or").len() == 2);
    server
        .kubectl(&["delete", "rs", "or", "--cascade=orphan", "--timeout=60s"])
        .ok();
    assert!(!exists(&server, "rs", "or"));
    let owners = server.kubectl(&[
        "get",
        "pods",
        "-l",
        "app=or",
        "-o",
        "jsonpath={.items[*].metadata.ownerReferences}",
    ]);
    assert_eq!(owners.ok().trim(), "", "owner references remain");
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(pods(&server, "app=or").len(), 2, "orphans are kept");

    // Deployment orphaning: its ReplicaSet stays, without the owner reference.
    server
        .kubectl(&[
            "create",
            "deployment",
            "dep",
            "--image=busybox",
            "--replicas=1",
        ])
        .ok();
    wait_for("the deployment's pod", || {
        pods(&server, "app=dep").len() == 1
    });
    server
        .kubectl(&[
            "delete",
            "deployment",
            "dep",
            "--cascade=orphan",
            "--timeout=60s",
        ])
        .ok();
    let sets = server.kubectl(&[
        "get",
        "rs",
        "-l",
        "app=dep",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}:{.metadata.ownerReferences}{end}",
    ]);
    let sets = sets.ok().trim().to_string();
    assert!(sets.starts_with("dep-") && sets.ends_with(':'), "{sets}");
}

#[test]
fn a_pod_whose_owner_does_not_exist_is_collected_and_one_whose_owner_does_is_kept() {
    let server = ApiServer::start().unwrap();
    server.kubectl(&["create", "configmap", "owner"]).ok();
    let uid = server
        .kubectl(&[
            "get",
            "configmap",
            "owner",
            "-o",
            "jsonpath={.metadata.uid}",
        ])
        .ok()
        .trim()
        .to_string();
    let yaml = format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: ghost-child
  namespace: default
  labels: {{gc: test}}
  ownerReferences:
  - {{apiVersion: apps/v1, kind: ReplicaSet, name: ghost, uid: 0b0e7a8c-7d3e-4c1e-9d43-000000000000}}
spec:
  containers: [{{name: c, image: busybox}}]
---
apiVersion: v1
kind: Pod
metadata:
  name: kept-child
  namespace: default
  labels: {{gc: test}}
  ownerReferences:
  - {{apiVersion: v1, kind: ConfigMap, name: owner, uid: {uid}}}
spec:
  containers: [{{name: c, image: busybox}}]
"
    );
    server.kubectl_stdin(&["apply", "-f", "-"], &yaml).ok();
    wait_for("the pod with a missing owner to be collected", || {
        pods(&server, "gc=test") == ["kept-child"]
    });
    // Deleting the ConfigMap takes its pod too.
    server.kubectl(&["delete", "configmap", "owner"]).ok();
    wait_for("the configmap's pod to be collected", || {
        pods(&server, "gc=test").is_empty()
    });
}
