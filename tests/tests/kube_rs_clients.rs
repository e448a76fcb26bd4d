//! kube-rs against apiserver-lite: watches resume from a resourceVersion with exactly the
//! missed events, a compacted resourceVersion gets 410 and a relist recovers, concurrent
//! compare-and-swap updates have one winner per revision, and kube-runtime's watcher and
//! reflector run without errors.

use std::collections::BTreeMap;
use std::time::Duration;

use e2e::{ApiServer, ServerOptions};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, ObjectMeta, PostParams, WatchEvent, WatchParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};

fn cm(name: &str, value: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("v".to_string(), value.to_string())])),
        ..Default::default()
    }
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .unwrap_or_else(|_| panic!("{what} timed out"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumed_from_an_old_resource_version_sees_exactly_the_missed_events() {
    let server = ApiServer::start().unwrap();
    let client = server.client().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let first = api
        .create(&PostParams::default(), &cm("a", "1"))
        .await
        .unwrap();
    let rv = first.metadata.resource_version.clone().unwrap();
    // Changes the watcher "missed".
    api.create(&PostParams::default(), &cm("b", "1"))
        .await
        .unwrap();
    let mut a = api.get("a").await.unwrap();
    a.data = Some(BTreeMap::from([("v".into(), "2".into())]));
    api.replace("a", &PostParams::default(), &a).await.unwrap();
    api.delete("b", &Default::default()).await.unwrap();

    let events: Vec<_> = within("watch", async {
        // The root CA publisher may write kube-root-ca.crt meanwhile: not one of ours.
        let params = WatchParams::default()
            .timeout(5)
            .fields("metadata.name!=kube-root-ca.crt");
        let stream = api.watch(&params, &rv).await.unwrap();
        stream.take(3).try_collect::<Vec<_>>().await.unwrap()
    })
    .await;
    let summary: Vec<String> = events
        .iter()
        .map(|e| match e {
            WatchEvent::Added(o) => format!("ADDED {}", o.metadata.name.as_deref().unwrap()),
            WatchEvent::Modified(o) => format!("MODIFIED {}", o.metadata.name.as_deref().unwrap()),
            WatchEvent::Deleted(o) => format!("DELETED {}", o.metadata.name.as_deref().unwrap()),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(summary, ["ADDED b", "MODIFIED a", "DELETED b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_compaction_a_stale_resume_gets_410_and_a_relist_recovers() {
    let server = ApiServer::start_with(ServerOptions {
        extra_args: vec!["--compaction-interval-seconds".into(), "1".into()],
        ..Default::default()
    })
    .unwrap();
    let client = server.client().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let old = api
        .create(&PostParams::default(), &cm("c", "1"))
        .await
        .unwrap();
    let old_rv = old.metadata.resource_version.clone().unwrap();
    for i in 0..5 {
        let mut c = api.get("c").await.unwrap();
        c.data = Some(BTreeMap::from([("v".into(), i.to_string())]));
        api.replace("c", &PostParams::default(), &c).await.unwrap();
    }
    // Two compaction ticks: the second compacts past everything written above.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let outcome = within("stale watch", async {
        match api.watch(&WatchParams::default().timeout(5), &old_rv).await {
            Err(e) => Err(e.to_string()),
            Ok(stream) => {
                let first = stream.boxed().next().await;
                Ok(format!("{first:?}"))
            }
        }
    })
    .await;
    let text = match outcome {
        Err(e) => e,
        Ok(event) => event,
    };
    assert!(
        text.contains("410") || text.contains("Expired") || text.contains("too old"),
        "{text}"
    );
    // A relist gives a fresh resourceVersion to watch from.
    let list = api.list(&ListParams::default()).await.unwrap();
    let fresh = list.metadata.resource_version.unwrap();
    let mut stream = api
        .watch(&WatchParams::default().timeout(5), &fresh)
        .await
        .unwrap()
        .boxed();
    let mut c = api.get("c").await.unwrap();
    c.data = Some(BTreeMap::from([("v".into(), "after".into())]));
    api.replace("c", &PostParams::default(), &c).await.unwrap();
    let next = within("fresh watch", stream.next()).await.unwrap().unwrap();
    assert!(matches!(next, WatchEvent::Modified(_)), "{next:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_compare_and_swap_updates_give_one_winner_per_revision() {
    let server = ApiServer::start().unwrap();
    let client = server.client().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let start = api
        .create(&PostParams::default(), &cm("counter", "0"))
        .await
        .unwrap();
    let attempts = (0..20).map(|i| {
        let api = api.clone();
        let mut mine = start.clone();
        mine.data = Some(BTreeMap::from([("v".into(), format!("writer-{i}"))]));
        async move { api.replace("counter", &PostParams::default(), &mine).await }
    });
    let results = futures::future::join_all(attempts).await;
    let winners = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(
        winners, 1,
        "exactly one writer of the same resourceVersion wins"
    );
    for r in results.iter().filter(|r| r.is_err()) {
        match r {
            Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (409, "Conflict")),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_patches_without_a_resource_version_all_apply() {
    let server = ApiServer::start().unwrap();
    let client = server.client().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    api.create(&PostParams::default(), &cm("shared", "0"))
        .await
        .unwrap();
    let patches = (0..20).map(|i| {
        let api = api.clone();
        async move {
            let patch = serde_json::json!({"data": {format!("k{i}"): "v"}});
            api.patch(
                "shared",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
        }
    });
    for result in futures::future::join_all(patches).await {
        result.expect("a patch without a precondition is retried on a lost race, never 409");
    }
    let keys = api
        .get("shared")
        .await
        .unwrap()
        .data
        .unwrap_or_default()
        .len();
    assert_eq!(keys, 21, "every patch landed");
    // A patch that names a stale resourceVersion is a precondition, and fails.
    let stale = serde_json::json!({"metadata": {"resourceVersion": "1"}, "data": {"x": "y"}});
    match api
        .patch(
            "shared",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&stale),
        )
        .await
    {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 409),
        other => panic!("expected 409, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kube_runtime_watcher_and_reflector_follow_the_server() {
    let server = ApiServer::start().unwrap();
    let client = server.client().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    api.create(&PostParams::default(), &cm("before", "1"))
        .await
        .unwrap();
    let (reader, writer) = reflector::store();
    let stream =
        reflector(writer, watcher(api.clone(), watcher::Config::default())).applied_objects();
    let errors = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen_errors = errors.clone();
    let task = tokio::spawn(async move {
        let mut stream = stream.boxed();
        while let Some(item) = stream.next().await {
            if let Err(e) = item {
                eprintln!("watcher error: {e}");
                seen_errors.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
    within("reflector sync", reader.wait_until_ready())
        .await
        .unwrap();
    for i in 0..5 {
        api.create(&PostParams::default(), &cm(&format!("after-{i}"), "1"))
            .await
            .unwrap();
    }
    api.delete("before", &Default::default()).await.unwrap();
    within("reflector catches up", async {
        loop {
            // The test's ConfigMaps (the namespace also has the controllers' root CA one).
            let names: Vec<String> = reader
                .state()
                .iter()
                .filter_map(|c| c.metadata.name.clone())
                .filter(|n| n != "kube-root-ca.crt")
                .collect();
            if names.len() == 5 && !names.contains(&"before".to_string()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    task.abort();
    assert_eq!(errors.load(std::sync::atomic::Ordering::SeqCst), 0);
}
