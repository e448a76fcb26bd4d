//! Several apiserver-lite instances over one etcd, as users who outgrow one machine run them:
//! they see each other's writes and watches, and never hand out one ClusterIP twice.

use std::collections::HashSet;
use std::time::Duration;

use e2e::{ApiServer, Etcd, ServerOptions};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServicePort, ServiceSpec};
use kube::api::{Api, ObjectMeta, PostParams, WatchEvent, WatchParams};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_api_servers_over_one_etcd_share_objects_watches_and_allocations() {
    let etcd = Etcd::start().unwrap();
    let options = ServerOptions {
        storage: Some(etcd.storage_flag()),
        ..Default::default()
    };
    let a = ApiServer::start_with(options.clone()).unwrap();
    // One set of controllers per cluster (there is no leader election yet); each server has
    // its own CA, so two root CA publishers would take turns rewriting kube-root-ca.crt.
    let b = ApiServer::start_with(ServerOptions {
        extra_args: vec!["--controllers=false".into()],
        ..options
    })
    .unwrap();
    let (ca, cb) = (a.client().await.unwrap(), b.client().await.unwrap());
    let cms_a: Api<ConfigMap> = Api::namespaced(ca.clone(), "default");
    let cms_b: Api<ConfigMap> = Api::namespaced(cb.clone(), "default");

    // A watch on B sees a write made through A.
    let start = cms_b
        .list(&Default::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut watch = cms_b
        .watch(&WatchParams::default().timeout(20), &start)
        .await
        .unwrap()
        .boxed();
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("shared".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    cms_a.create(&PostParams::default(), &cm).await.unwrap();
    // The first event about it (the controllers' own ConfigMap may come and go meanwhile).
    let event = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let event = watch.next().await.unwrap().unwrap();
            let about = |c: &ConfigMap| c.metadata.name.as_deref() == Some("shared");
            match &event {
                WatchEvent::Added(c) | WatchEvent::Modified(c) | WatchEvent::Deleted(c)
                    if !about(c) => {}
                WatchEvent::Bookmark(_) => {}
                _ => return event,
            }
        }
    })
    .await
    .unwrap();
    assert!(
        matches!(event, WatchEvent::Added(ref c) if c.metadata.name.as_deref() == Some("shared")),
        "{event:?}"
    );
    assert!(cms_b.get("shared").await.is_ok());

    // Services created through both at once get distinct ClusterIPs.
    let creates = (0..20).map(|i| {
        let api: Api<Service> =
            Api::namespaced(if i % 2 == 0 { ca.clone() } else { cb.clone() }, "default");
        async move {
            let svc = Service {
                metadata: ObjectMeta {
                    name: Some(format!("svc-{i}")),
                    ..Default::default()
                },
                spec: Some(ServiceSpec {
                    ports: Some(vec![ServicePort {
                        port: 80,
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            };
            api.create(&PostParams::default(), &svc)
                .await
                .unwrap()
                .spec
                .unwrap()
                .cluster_ip
                .unwrap()
        }
    });
    let ips: Vec<String> = futures::future::join_all(creates).await;
    let unique: HashSet<&String> = ips.iter().collect();
    assert_eq!(unique.len(), ips.len(), "duplicate ClusterIPs: {ips:?}");
}

const NODE_AND_REPLICASET: &str = "apiVersion: v1
kind: Node
metadata:
  name: n1
status:
  allocatable: {cpu: \"8\", memory: 8Gi, pods: \"50\"}
  conditions: [{type: Ready, status: \"True\"}]
---
apiVersion: apps/v1
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

/// The nodes the web pods are bound to, one word per pod.
fn bound_pods(server: &ApiServer) -> usize {
    server
        .jsonpath(&["pods", "-l", "app=web"], "{.items[*].spec.nodeName}")
        .split_whitespace()
        .count()
}

fn holder(server: &ApiServer, lease: &str) -> String {
    server.jsonpath(
        &["lease", "-n", "kube-system", lease],
        "{.spec.holderIdentity}",
    )
}

#[test]
fn two_servers_over_one_etcd_elect_one_scheduler_and_one_controller_set() {
    let etcd = Etcd::start().unwrap();
    let options = ServerOptions {
        storage: Some(etcd.storage_flag()),
        ..Default::default()
    };
    let mut a = ApiServer::start_with(options.clone()).unwrap();
    let leases = ["kube-controller-manager", "kube-scheduler"];
    let (a_id, b_id) = (format!("_127.0.0.1:{}", a.port), "_127.0.0.1:");
    e2e::wait_for("a to lead", || {
        leases.iter().all(|l| holder(&a, l).ends_with(&a_id))
    });
    let b = ApiServer::start_with(options).unwrap();
    let b_id = format!("{b_id}{}", b.port);
    // b waits while a renews: one set of controllers, so exactly three pods, all bound.
    b.apply(NODE_AND_REPLICASET);
    e2e::wait_for("three bound pods", || bound_pods(&b) == 3);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(bound_pods(&b), 3);
    for l in leases {
        assert!(holder(&b, l).ends_with(&a_id), "{l}: {}", holder(&b, l));
    }
    // a stops (releasing its leases): b takes over at once and its controllers work.
    a.process.terminate(Duration::from_secs(15));
    e2e::wait_until("b to lead", Duration::from_secs(10), || {
        leases.iter().all(|l| holder(&b, l).ends_with(&b_id))
    });
    assert_eq!(
        b.jsonpath(
            &["lease", "-n", "kube-system", "kube-scheduler"],
            "{.spec.leaseTransitions}"
        ),
        "1"
    );
    b.kubectl(&["scale", "replicaset", "web", "--replicas=4"])
        .ok();
    e2e::wait_for("a fourth pod, bound by b's scheduler", || {
        bound_pods(&b) == 4
    });
}
