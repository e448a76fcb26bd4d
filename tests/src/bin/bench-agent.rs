//! Agent benchmark: apiserver-lite, our `cri` (in its own network namespace) and the `agent`
//! (release builds), one node. Prints pod startup latency (create to Running as seen by a
//! watch) p50/p99 for pods of a pre-pulled image created at a steady rate, the time until
//! the node's maximum of 110 pods are all Running, and the agent's RSS and CPU with those pods
//! idle. Everything is removed at the end.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use e2e::ApiServer;
use e2e::node::TestNode;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::watcher;

fn pod(name: &str, node: &str, image: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default", "labels": {"bench": "agent"}},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": image, "command": ["sleep", "86400"], "imagePullPolicy": "IfNotPresent"}]
        }
    }))?)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn agent_pid(node_name: &str) -> Option<u32> {
    e2e::cri::processes_matching(|args| {
        args.first().is_some_and(|a| a.ends_with("/agent")) && args.iter().any(|a| a == node_name)
    })
    .into_iter()
    .next()
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Creates `names` at `rate` per second and returns each pod's create-to-Running latency.
async fn start_pods(
    api: &Api<Pod>,
    node: &TestNode,
    names: &[String],
    rate: f64,
) -> anyhow::Result<Vec<Duration>> {
    let mut created: HashMap<String, Instant> = HashMap::new();
    let mut running: HashMap<String, Duration> = HashMap::new();
    let config = watcher::Config::default().labels("bench=agent");
    let mut events = watcher(api.clone(), config).boxed();
    // Wait for the watch to be established before creating anything.
    while let Some(event) = events.next().await {
        if matches!(event, Ok(watcher::Event::InitDone)) {
            break;
        }
    }
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut next = 0usize;
    let mut ticker = tokio::time::interval(interval);
    let deadline = Instant::now() + Duration::from_secs(300);
    while running.len() < names.len() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {} pods ran within 5 minutes",
            running.len(),
            names.len()
        );
        tokio::select! {
            _ = ticker.tick(), if next < names.len() => {
                let name = &names[next];
                created.insert(name.clone(), Instant::now());
                api.create(&PostParams::default(), &pod(name, &node.name, &node.image)?).await.context("create a pod")?;
                next += 1;
            }
            event = events.next() => {
                let Some(event) = event else { anyhow::bail!("the watch ended") };
                if let Ok(watcher::Event::Apply(p)) = event {
                    let name = p.metadata.name.clone().unwrap_or_default();
                    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                    if phase == Some("Running")
                        && !running.contains_key(&name)
                        && let Some(t0) = created.get(&name)
                    {
                        running.insert(name, t0.elapsed());
                    }
                }
            }
        }
    }
    let mut latencies: Vec<Duration> = running.into_values().collect();
    latencies.sort();
    Ok(latencies)
}

async fn delete_all(api: &Api<Pod>) -> anyhow::Result<()> {
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("bench=agent"),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(180);
    while !api
        .list(&ListParams::default().labels("bench=agent"))
        .await?
        .items
        .is_empty()
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "pods were not deleted within 3 minutes"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let latency_pods: usize = std::env::var("AGENT_BENCH_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let density: usize = std::env::var("AGENT_BENCH_DENSITY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(110);
    let api_server = ApiServer::start()?;
    let node = TestNode::start(&api_server);
    let client = api_server.client().await?;
    let pods: Api<Pod> = Api::namespaced(client, "default");

    // Pre-pull the image and warm up with one pod.
    let warm = start_pods(&pods, &node, &["warm-up".to_string()], 1.0).await?;
    delete_all(&pods).await?;
    eprintln!("warm-up pod ran in {}", ms(warm[0]));

    let names: Vec<String> = (0..latency_pods).map(|i| format!("latency-{i}")).collect();
    let latencies = start_pods(&pods, &node, &names, 10.0).await?;
    delete_all(&pods).await?;

    let names: Vec<String> = (0..density).map(|i| format!("density-{i}")).collect();
    let started = Instant::now();
    let density_latencies = start_pods(&pods, &node, &names, 1000.0).await?;
    let all_running = started.elapsed();

    let pid = agent_pid(&node.name).context("find the agent process")?;
    let ticks_before = cpu_ticks(pid).unwrap_or(0);
    let idle = Duration::from_secs(30);
    tokio::time::sleep(idle).await;
    let ticks = cpu_ticks(pid).unwrap_or(0).saturating_sub(ticks_before);
    let hz = 100.0;
    let cpu_share = ticks as f64 / hz / idle.as_secs_f64();
    let rss = e2e::cri::rss_kib(pid).unwrap_or(0) as f64 / 1024.0;

    println!(
        "agent benchmark (one node, our cri with runc, {} builds)",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    println!("{:<58} {:>12}", "measure", "value");
    println!(
        "{:<58} {:>12}",
        format!("pod startup p50 ({latency_pods} pods at 10/s)"),
        ms(percentile(&latencies, 0.5))
    );
    println!(
        "{:<58} {:>12}",
        "pod startup p99",
        ms(percentile(&latencies, 0.99))
    );
    println!(
        "{:<58} {:>12}",
        format!("{density} pods created at once: all Running after"),
        ms(all_running)
    );
    println!(
        "{:<58} {:>12}",
        "  their startup p50",
        ms(percentile(&density_latencies, 0.5))
    );
    println!(
        "{:<58} {:>9.1} MiB",
        format!("agent RSS with {density} pods idle"),
        rss
    );
    println!(
        "{:<58} {:>10.1} %",
        format!(
            "agent CPU with {density} pods idle (over {}s)",
            idle.as_secs()
        ),
        cpu_share * 100.0
    );

    delete_all(&pods).await?;
    Ok(())
}
