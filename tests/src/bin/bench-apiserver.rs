//! Benchmark of apiserver-lite, SQLite and etcd side by side in one run. Prints numbers; it is
//! not a test. Run it through `hack/bench/apiserver.sh` (release build).
//!
//! Measures: creates/s and gets/s (with p50/p99), list latency at 1k and 10k pods, watch
//! fan-out (100 watchers, time until one change reached all), p50/p99 of single-object writes
//! paced at 200/s, and the server's RSS with 10k pods stored.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::{ApiServer, Etcd, ServerOptions};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, PodSpec};
use kube::api::{Api, ListParams, ObjectMeta, PostParams, WatchEvent, WatchParams};

const CONCURRENCY: usize = 32;

fn pod(name: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([
                ("app".into(), "bench".into()),
                ("tier".into(), "web".into()),
            ])),
            annotations: Some(BTreeMap::from([("bench/note".into(), "x".repeat(200))])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: Some("127.0.0.1:5000/busybox:1".into()),
                command: Some(vec!["sh".into(), "-c".into(), "sleep 3600".into()]),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2}ms", d.as_secs_f64() * 1000.0)
}

#[derive(Debug, Default)]
struct Results {
    rows: Vec<(String, String)>,
}

impl Results {
    fn add(&mut self, what: &str, value: String) {
        println!("  {what:<40} {value}");
        self.rows.push((what.into(), value));
    }
}

/// Runs `total` operations with bounded concurrency; returns (elapsed, sorted latencies).
async fn run_many<F, Fut>(total: usize, op: F) -> (Duration, Vec<Duration>)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let started = Instant::now();
    let mut latencies: Vec<Duration> = futures::stream::iter(0..total)
        .map(|i| {
            let op = op.clone();
            async move {
                let t = Instant::now();
                op(i).await;
                t.elapsed()
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    latencies.sort();
    (started.elapsed(), latencies)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

async fn bench(label: &str, server: &ApiServer) -> anyhow::Result<Results> {
    println!("== {label}");
    let mut r = Results::default();
    let client = server.client().await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    // Creates: 1,000 pods.
    let api = pods.clone();
    let (elapsed, lat) = run_many(1000, move |i| {
        let api = api.clone();
        async move {
            api.create(&PostParams::default(), &pod(&format!("p-{i:05}")))
                .await
                .expect("create");
        }
    })
    .await;
    r.add(
        "creates/s (1k pods, 32 concurrent)",
        format!("{:.0}", 1000.0 / elapsed.as_secs_f64()),
    );
    r.add(
        "create latency p50 / p99",
        format!(
            "{} / {}",
            ms(percentile(&lat, 0.5)),
            ms(percentile(&lat, 0.99))
        ),
    );

    // Gets.
    let api = pods.clone();
    let (elapsed, lat) = run_many(20_000, move |i| {
        let api = api.clone();
        async move {
            api.get(&format!("p-{:05}", i % 1000)).await.expect("get");
        }
    })
    .await;
    r.add(
        "gets/s (20k gets, 32 concurrent)",
        format!("{:.0}", 20_000.0 / elapsed.as_secs_f64()),
    );
    r.add(
        "get latency p50 / p99",
        format!(
            "{} / {}",
            ms(percentile(&lat, 0.5)),
            ms(percentile(&lat, 0.99))
        ),
    );

    // List at 1k.
    let mut lat = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let list = pods.list(&ListParams::default()).await?;
        assert_eq!(list.items.len(), 1000);
        lat.push(t.elapsed());
    }
    lat.sort();
    r.add(
        "list 1k pods p50 / p99",
        format!(
            "{} / {}",
            ms(percentile(&lat, 0.5)),
            ms(percentile(&lat, 0.99))
        ),
    );

    // Watch fan-out: 100 watchers, one change, time until all saw it.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let mut cm = cms
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("fanout".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await?;
    let mut fan = Vec::new();
    for round in 0..10 {
        let rv = cm.metadata.resource_version.clone().unwrap_or_default();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Instant>(200);
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let cms = cms.clone();
            let tx = tx.clone();
            let rv = rv.clone();
            tasks.push(tokio::spawn(async move {
                let params = WatchParams::default()
                    .fields("metadata.name=fanout")
                    .timeout(30);
                let mut stream = cms.watch(&params, &rv).await.expect("watch").boxed();
                while let Some(ev) = stream.next().await {
                    if let Ok(WatchEvent::Modified(_)) = ev {
                        let _ = tx.send(Instant::now()).await;
                        return;
                    }
                }
            }));
        }
        drop(tx);
        tokio::time::sleep(Duration::from_millis(300)).await; // all watches established
        cm.data = Some(BTreeMap::from([("round".into(), round.to_string())]));
        let t = Instant::now();
        cm = cms.replace("fanout", &PostParams::default(), &cm).await?;
        let mut last = t;
        let mut got = 0;
        while let Ok(Some(at)) = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            last = last.max(at);
            got += 1;
        }
        for task in tasks {
            task.abort();
        }
        if got == 100 {
            fan.push(last - t);
        } else {
            println!("  (round {round}: only {got}/100 watchers saw the change)");
        }
    }
    fan.sort();
    r.add(
        "watch fan-out to 100 watchers p50 / p99",
        format!(
            "{} / {}",
            ms(percentile(&fan, 0.5)),
            ms(percentile(&fan, 0.99))
        ),
    );

    // Paced single-object writes at 200/s for 5 s.
    let mut lat = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(5));
    let mut target = cm.clone();
    for i in 0..1000 {
        ticker.tick().await;
        target.data = Some(BTreeMap::from([("i".into(), i.to_string())]));
        target.metadata.resource_version = None;
        let t = Instant::now();
        target = cms
            .replace("fanout", &PostParams::default(), &target)
            .await?;
        lat.push(t.elapsed());
    }
    lat.sort();
    r.add(
        "write at 200/s p50 / p99",
        format!(
            "{} / {}",
            ms(percentile(&lat, 0.5)),
            ms(percentile(&lat, 0.99))
        ),
    );

    // Up to 10k pods, list latency and RSS.
    let api = pods.clone();
    let (elapsed, _) = run_many(9000, move |i| {
        let api = api.clone();
        async move {
            api.create(&PostParams::default(), &pod(&format!("q-{i:05}")))
                .await
                .expect("create");
        }
    })
    .await;
    r.add(
        "creates/s (next 9k pods)",
        format!("{:.0}", 9000.0 / elapsed.as_secs_f64()),
    );
    let mut lat = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let list = pods.list(&ListParams::default()).await?;
        assert_eq!(list.items.len(), 10_000);
        lat.push(t.elapsed());
    }
    lat.sort();
    r.add(
        "list 10k pods p50 / p99",
        format!(
            "{} / {}",
            ms(percentile(&lat, 0.5)),
            ms(percentile(&lat, 0.99))
        ),
    );
    let mut lat = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let list = pods.list(&ListParams::default().limit(500)).await?;
        assert_eq!(list.items.len(), 500);
        lat.push(t.elapsed());
    }
    lat.sort();
    r.add(
        "list first page of 500 (10k) p50",
        ms(percentile(&lat, 0.5)),
    );
    r.add(
        "server RSS with 10k pods",
        format!("{} MiB", rss_kib(server.process.pid()) / 1024),
    );
    Ok(r)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let only = std::env::args().nth(1);
    let mut all = Vec::new();
    // The API server alone: the pods have no nodes, and a scheduler would add its own writes.
    let no_scheduler = || vec!["--scheduler=false".to_string()];
    if only.as_deref() != Some("etcd") {
        let server = ApiServer::start_with(ServerOptions {
            extra_args: no_scheduler(),
            ..Default::default()
        })?;
        all.push(("sqlite", bench("apiserver-lite on SQLite", &server).await?));
    }
    if only.as_deref() != Some("sqlite") {
        let etcd = Etcd::start()?;
        let server = ApiServer::start_with(ServerOptions {
            storage: Some(etcd.storage_flag()),
            extra_args: no_scheduler(),
        })?;
        all.push(("etcd", bench("apiserver-lite on etcd", &server).await?));
    }
    if all.len() == 2 {
        println!("\n{:<42} {:<28} {:<28}", "measure", all[0].0, all[1].0);
        for (i, (what, v)) in all[0].1.rows.iter().enumerate() {
            let other = all[1].1.rows.get(i).map(|(_, v)| v.as_str()).unwrap_or("");
            println!("{what:<42} {v:<28} {other:<28}");
        }
    }
    Ok(())
}
