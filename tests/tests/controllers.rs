//! Controllers against a real API server: a ReplicaSet keeps its number of pods, which the
//! scheduler places, adopts a matching orphan, replaces a pod that goes away, and scales down;
//! every namespace gets (and keeps) a `default` ServiceAccount and the `kube-root-ca.crt`
//! ConfigMap. Deployments and the garbage collector have their own files.

use std::time::Duration;

use e2e::{ApiServer, wait_for};

const CLUSTER: &str = "apiVersion: v1
kind: Node
metadata:
  name: n1
status:
  allocatable: {cpu: \"4\", memory: 8Gi, pods: \"20\"}
  conditions: [{type: Ready, status: \"True\"}]
---
apiVersion: v1
kind: Pod
metadata:
  name: orphan
  namespace: default
  labels: {app: web}
spec:
  containers: [{name: web, image: busybox}]
";

const REPLICASET: &str = "apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: web
  namespace: default
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: busybox}]
";

/// Names of the web pods not being deleted.
fn live_pods(server: &ApiServer) -> Vec<String> {
    let out = server.kubectl(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={range .items[?(@.metadata.deletionTimestamp)]}{.metadata.name} {end}",
    ]);
    let deleting: Vec<String> = out.ok().split_whitespace().map(String::from).collect();
    let all = server.kubectl(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    all.ok()
        .split_whitespace()
        .filter(|n| !deleting.iter().any(|d| d == n))
        .map(String::from)
        .collect()
}

#[test]
fn a_replicaset_keeps_its_pods_adopts_orphans_replaces_losses_and_scales_down() {
    let server = ApiServer::start().unwrap();
    server.kubectl_stdin(&["apply", "-f", "-"], CLUSTER).ok();
    server.kubectl_stdin(&["apply", "-f", "-"], REPLICASET).ok();
    wait_for("three live pods", || live_pods(&server).len() == 3);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(live_pods(&server).len(), 3, "no more than three");
    let owners = server.kubectl(&[
        "get",
        "pod",
        "orphan",
        "-o",
        "jsonpath={.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}",
    ]);
    assert_eq!(
        owners.ok(),
        "ReplicaSet/web",
        "the matching orphan was adopted"
    );
    wait_for("all pods scheduled", || {
        server
            .kubectl(&[
                "get",
                "pods",
                "-l",
                "app=web",
                "-o",
                "jsonpath={.items[*].spec.nodeName}",
            ])
            .ok()
            .split_whitespace()
            .count()
            == 3
    });
    wait_for("status to report three replicas", || {
        server
            .kubectl(&["get", "rs", "web", "-o", "jsonpath={.status.replicas}"])
            .ok()
            == "3"
    });
    // A pod that goes away is replaced.
    server
        .kubectl(&["delete", "pod", "orphan", "--grace-period=0", "--force"])
        .ok();
    wait_for("a replacement", || {
        live_pods(&server).len() == 3 && !live_pods(&server).contains(&"orphan".to_string())
    });
    // Scaling down deletes the surplus (the pods on a node stay Terminating until their node
    // confirms, as upstream; no node agent runs here).
    server.kubectl(&["scale", "rs", "web", "--replicas=1"]).ok();
    wait_for("one live pod", || live_pods(&server).len() == 1);
    wait_for("status to report one replica", || {
        server
            .kubectl(&["get", "rs", "web", "-o", "jsonpath={.status.replicas}"])
            .ok()
            == "1"
    });
}

/// `ca.crt` of the `kube-root-ca.crt` ConfigMap in a namespace (empty when missing).
fn root_ca(server: &ApiServer, ns: &str) -> String {
    server
        .kubectl(&[
            "get",
            "configmap",
            "kube-root-ca.crt",
            "-n",
            ns,
            "--ignore-not-found",
            "-o",
            "jsonpath={.data.ca\\.crt}",
        ])
        .ok()
        .to_string()
}

fn has_default_service_account(server: &ApiServer, ns: &str) -> bool {
    !server
        .kubectl(&[
            "get",
            "serviceaccount",
            "default",
            "-n",
            ns,
            "--ignore-not-found",
            "-o",
            "name",
        ])
        .ok()
        .trim()
        .is_empty()
}

#[test]
fn every_namespace_gets_a_default_service_account_and_the_root_ca_which_come_back() {
    let server = ApiServer::start().unwrap();
    // The cluster CA, as the admin kubeconfig carries it.
    let ca_b64 = server
        .kubectl(&[
            "config",
            "view",
            "--raw",
            "-o",
            "jsonpath={.clusters[0].cluster.certificate-authority-data}",
        ])
        .ok()
        .trim()
        .to_string();
    let ca = std::process::Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(ca_b64.as_bytes())?;
            child.wait_with_output()
        })
        .expect("base64 -d");
    let ca = String::from_utf8(ca.stdout).expect("PEM text");
    assert!(ca.contains("BEGIN CERTIFICATE"), "{ca}");
    for ns in ["default", "kube-system", "kube-public"] {
        wait_for(&format!("the default service account in {ns}"), || {
            has_default_service_account(&server, ns)
        });
        wait_for(&format!("the root CA in {ns}"), || {
            root_ca(&server, ns).trim() == ca.trim()
        });
    }
    server.kubectl(&["create", "namespace", "team"]).ok();
    wait_for("the default service account in a new namespace", || {
        has_default_service_account(&server, "team")
    });
    wait_for("the root CA in a new namespace", || {
        root_ca(&server, "team").trim() == ca.trim()
    });
    // Deleted: created again. Changed: restored.
    server
        .kubectl(&["delete", "serviceaccount", "default", "-n", "team"])
        .ok();
    server
        .kubectl(&["delete", "configmap", "kube-root-ca.crt", "-n", "team"])
        .ok();
    wait_for("the service account to come back", || {
        has_default_service_account(&server, "team")
    });
    wait_for("the root CA to come back", || {
        root_ca(&server, "team").trim() == ca.trim()
    });
    server
        .kubectl(&[
            "patch",
            "configmap",
            "kube-root-ca.crt",
            "-n",
            "team",
            "--type=merge",
            "-p",
            r#"{"data":{"ca.crt":"tampered","extra":"x"}}"#,
        ])
        .ok();
    wait_for("the root CA to be restored", || {
        root_ca(&server, "team").trim() == ca.trim()
            && server
                .kubectl(&[
                    "get",
                    "configmap",
                    "kube-root-ca.crt",
                    "-n",
                    "team",
                    "-o",
                    "jsonpath={.data.extra}",
                ])
                .ok()
                .is_empty()
    });
    // A namespace being deleted is not refilled: it goes away.
    server
        .kubectl(&["delete", "namespace", "team", "--timeout=60s"])
        .ok();
    assert!(
        server
            .kubectl(&["get", "namespace", "team"])
            .fails()
            .contains("NotFound")
    );
}
