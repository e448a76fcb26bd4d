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
