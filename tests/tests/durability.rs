//! Durability: every write the server acknowledged survives `kill -9` in the middle of a
//! stream of writes, and the store comes back consistent (every object decodes, revisions go
//! on increasing).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use e2e::ApiServer;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_mid_stream() {
    let mut server = ApiServer::start().unwrap();
    let client = server.client().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..8 {
        let api = api.clone();
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let name = format!("w{w}-{i}");
                let cm = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        ..Default::default()
                    },
                    data: Some(BTreeMap::from([("payload".to_string(), "x".repeat(512))])),
                    ..Default::default()
                };
                match api.create(&PostParams::default(), &cm).await {
                    Ok(_) => {
                        acked.lock().unwrap().insert(name);
                    }
                    Err(_) => return, // the server died under us
                }
            }
        }));
    }
    // Let writes flow, then kill the server without any shutdown path.
    while acked.lock().unwrap().len() < 300 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill9();
    for w in writers {
        let _ = tokio::time::timeout(Duration::from_secs(30), w).await;
    }
    let acked = acked.lock().unwrap().clone();
    server.restart().unwrap();
    let client = server.client().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let list = api.list(&ListParams::default()).await.unwrap();
    let present: HashSet<String> = list
        .items
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    let lost: Vec<_> = acked.difference(&present).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost, e.g. {:?}",
        lost.len(),
        lost.iter().take(5).collect::<Vec<_>>()
    );
    // Every written ConfigMap decodes whole (the root CA one the controllers keep aside).
    assert!(
        list.items
            .iter()
            .filter(|c| c.metadata.name.as_deref() != Some("kube-root-ca.crt"))
            .all(|c| c
                .data
                .as_ref()
                .is_some_and(|d| d.get("payload").is_some_and(|p| p.len() == 512)))
    );
    // The store keeps working, with revisions after the old ones.
    let old_rv: i64 = list.metadata.resource_version.unwrap().parse().unwrap();
    let created = api
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("after-restart".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let new_rv: i64 = created.metadata.resource_version.unwrap().parse().unwrap();
    assert!(new_rv > old_rv);
    eprintln!(
        "acknowledged {} writes before kill -9; all present after restart",
        acked.len()
    );
}

#[test]
fn sigterm_stops_the_server_cleanly_and_quickly() {
    let mut server = ApiServer::start().unwrap();
    // An open watch must not hold up shutdown.
    let mut watch = std::process::Command::new("kubectl")
        .args(["get", "configmaps", "-w"])
        .env("KUBECONFIG", server.kubeconfig())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let started = std::time::Instant::now();
    let status = server
        .process
        .terminate(Duration::from_secs(10))
        .expect("exit status");
    assert!(status.success(), "exit status {status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
    let _ = watch.kill();
    let _ = watch.wait();
}
