//! API semantics beyond the everyday kubectl flows: bearer tokens, server-side dry run, field
//! validation warnings, paging, the watch cap, and the pod subresources (binding, status,
//! eviction) and deletecollection through kube-rs.

use std::collections::BTreeMap;
use std::time::Duration;

use e2e::{ApiServer, ServerOptions, run_kubectl};
use k8s_openapi::api::core::v1::{Binding, ConfigMap, Container, ObjectReference, Pod, PodSpec};
use kube::api::{Api, DeleteParams, EvictParams, ListParams, ObjectMeta, PostParams};

fn token_kubeconfig(server: &ApiServer, token: &str) -> std::path::PathBuf {
    let path = server
        .data_dir
        .path()
        .join(format!("token-{token}.kubeconfig"));
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority: {}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user:\n    token: {token}\n",
        server.url,
        server.data_dir.path().join("pki/ca.crt").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn bearer_tokens_from_the_token_file_authenticate_and_unknown_ones_get_401() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "s3cret-token,alice,uid-1,\"dev,ops\"\n").unwrap();
    let server = ApiServer::start_with(ServerOptions {
        extra_args: vec!["--token-auth-file".into(), tokens.display().to_string()],
        ..Default::default()
    })
    .unwrap();
    let good = token_kubeconfig(&server, "s3cret-token");
    run_kubectl("kubectl", &good, &["get", "ns", "default"], None, &[]).ok();
    let bad = token_kubeconfig(&server, "wrong");
    let out = run_kubectl("kubectl", &bad, &["get", "ns"], None, &[]);
    assert!(out.fails().contains("Unauthorized"), "{out:?}");
}

#[test]
fn requests_beyond_the_in_flight_limit_get_429_but_admins_and_health_checks_pass() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "user-token,bob,uid-2\n").unwrap();
    let server = ApiServer::start_with(ServerOptions {
        extra_args: vec![
            "--token-auth-file".into(),
            tokens.display().to_string(),
            "--max-requests-inflight".into(),
            "0".into(),
        ],
        ..Default::default()
    })
    .unwrap();
    let user = token_kubeconfig(&server, "user-token");
    let out = run_kubectl(
        "kubectl",
        &user,
        &["get", "--raw", "/api/v1/namespaces"],
        None,
        &[],
    );
    assert!(out.fails().contains("Too many requests"), "{out:?}");
    server.kubectl(&["get", "ns", "default"]).ok();
    run_kubectl("kubectl", &user, &["get", "--raw", "/readyz"], None, &[]).ok();
}

#[test]
fn server_side_dry_run_validates_and_stores_nothing() {
    let server = ApiServer::start().unwrap();
    let out = server.kubectl(&[
        "create",
        "configmap",
        "dry",
        "--from-literal=a=b",
        "--dry-run=server",
        "-o",
        "yaml",
    ]);
    assert!(out.ok().contains("name: dry"), "{out:?}");
    assert!(
        server
            .kubectl(&["get", "cm", "dry"])
            .fails()
            .contains("NotFound")
    );
    let invalid = server.kubectl_stdin(
        &["create", "--dry-run=server", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\n",
    );
    assert!(invalid.fails().contains("is invalid"), "{invalid:?}");
}

#[test]
fn field_validation_warn_reports_unknown_fields_and_drops_them() {
    let server = ApiServer::start().unwrap();
    let out = server.kubectl_stdin(
        &["create", "--validate=warn", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: w\ndatta:\n  a: b\n",
    );
    assert!(out.ok().contains("configmap/w created"), "{out:?}");
    assert!(out.stderr.contains("unknown field \"datta\""), "{out:?}");
    let stored = server.kubectl(&["get", "cm", "w", "-o", "json"]);
    assert!(!stored.ok().contains("datta"));
}

#[test]
fn chunked_lists_page_through_every_object_once() {
    let server = ApiServer::start().unwrap();
    for i in 0..7 {
        server
            .kubectl(&[
                "create",
                "configmap",
                &format!("c{i}"),
                "--from-literal=a=b",
            ])
            .ok();
    }
    let out = server.kubectl(&["get", "cm", "--chunk-size=2", "-o", "name"]);
    let names: Vec<&str> = out
        .ok()
        .lines()
        .filter(|l| l.starts_with("configmap/c"))
        .collect();
    assert_eq!(names.len(), 7, "{names:?}");
    let raw = server.kubectl(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/configmaps?limit=3",
    ]);
    let page: serde_json::Value = serde_json::from_str(raw.ok()).unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 3);
    assert!(
        page["metadata"]["continue"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
    );
}

#[test]
fn watches_beyond_the_cap_get_429() {
    let server = ApiServer::start_with(ServerOptions {
        extra_args: vec!["--max-watches".into(), "1".into()],
        ..Default::default()
    })
    .unwrap();
    let mut first = std::process::Command::new("kubectl")
        .args(["get", "cm", "-w"])
        .env("KUBECONFIG", server.kubeconfig())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let second = server.kubectl(&[
        "get",
        "--raw",
        "/api/v1/configmaps?watch=1&timeoutSeconds=1",
    ]);
    let _ = first.kill();
    let _ = first.wait();
    assert!(
        second.fails().contains("too many open watches"),
        "{second:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_are_bound_get_status_updates_and_are_evicted_through_subresources() {
    // This test binds the pod itself.
    let server = ApiServer::start_with(ServerOptions {
        extra_args: vec!["--scheduler=false".into()],
        ..Default::default()
    })
    .unwrap();
    let client = server.client().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some("p".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: Some("busybox".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some("p".into()),
            ..Default::default()
        },
        target: ObjectReference {
            kind: Some("Node".into()),
            name: Some("node-1".into()),
            ..Default::default()
        },
    };
    pods.create_subresource::<Binding, serde_json::Value>(
        "binding",
        "p",
        &PostParams::default(),
        &binding,
    )
    .await
    .unwrap();
    let bound = pods.get("p").await.unwrap();
    assert_eq!(
        bound.spec.as_ref().unwrap().node_name.as_deref(),
        Some("node-1")
    );
    let second = pods
        .create_subresource::<Binding, serde_json::Value>(
            "binding",
            "p",
            &PostParams::default(),
            &binding,
        )
        .await;
    assert!(
        matches!(second, Err(kube::Error::Api(ref s)) if s.code == 409),
        "{second:?}"
    );
    // Status updates change status only.
    let mut status = bound.clone();
    status.status.as_mut().unwrap().phase = Some("Running".into());
    status.metadata.labels = Some(BTreeMap::from([("sneaky".into(), "label".into())]));
    let updated = pods
        .replace_status("p", &PostParams::default(), &status)
        .await
        .unwrap();
    assert_eq!(updated.status.unwrap().phase.as_deref(), Some("Running"));
    assert!(updated.metadata.labels.is_none());
    // Eviction of a pod on a node marks it for graceful deletion.
    pods.evict("p", &EvictParams::default()).await.unwrap();
    let evicted = pods.get("p").await.unwrap();
    assert!(evicted.metadata.deletion_timestamp.is_some());
    // The node confirms with a zero grace period.
    pods.delete(
        "p",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(pods.get_opt("p").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletecollection_removes_only_the_selected_objects() {
    let server = ApiServer::start().unwrap();
    let client = server.client().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    for (name, tier) in [("a", "web"), ("b", "web"), ("c", "db")] {
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(BTreeMap::from([("tier".into(), tier.into())])),
                ..Default::default()
            },
            ..Default::default()
        };
        cms.create(&PostParams::default(), &cm).await.unwrap();
    }
    cms.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("tier=web"),
    )
    .await
    .unwrap();
    let left: Vec<String> = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .filter(|n| n.len() == 1)
        .collect();
    assert_eq!(left, ["c"]);
}
