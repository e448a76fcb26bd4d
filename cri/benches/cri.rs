//! CRI benchmark: this runtime (release build) and Debian's containerd 1.6 (runc, CNI bridge)
//! side by side in one run, through the same tonic CRI client. Each runtime runs in its own
//! network namespace with its own local registry holding busybox and pause (pulled before
//! measuring). Measured: RunPodSandbox + CreateContainer + StartContainer of 50 pods one after
//! another (p50/p99, and the median of each call), the wall time to start 100 pods at once,
//! and with those 100 pods running the daemon's RSS and its per-container helpers' RSS (our
//! monitors, containerd's shims). Everything is removed at the end. Run with
//! `hack/bench/cri.sh` (or `cargo bench -p cri --bench cri`); needs root, runc, containerd,
//! containernetworking-plugins, docker-registry, skopeo and umoci.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use support::containerd::Containerd;
use support::daemon::{Daemon, DaemonOptions, TestNetns};
use support::pod::{container_config, sandbox_config_in, spec};
use tonic::transport::Channel;

/// Pods started one after another (`CRI_BENCH_SEQUENTIAL` overrides, for a quick check).
fn sequential_pods() -> usize {
    count("CRI_BENCH_SEQUENTIAL", 50)
}

/// Pods started at once (`CRI_BENCH_PARALLEL` overrides).
fn parallel_pods() -> usize {
    count("CRI_BENCH_PARALLEL", 100)
}

fn count(variable: &str, default: usize) -> usize {
    std::env::var(variable)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One runtime under test.
struct Target<'a> {
    name: &'static str,
    client: RuntimeServiceClient<Channel>,
    image: String,
    logs: PathBuf,
    cgroup_prefix: String,
    daemon_pid: u32,
    helpers: &'a dyn Fn() -> Vec<u32>,
}

/// What one runtime measured.
struct Results {
    /// RunPodSandbox, CreateContainer, StartContainer of each sequential pod.
    sequential: Vec<[Duration; 3]>,
    parallel_wall: Duration,
    daemon_rss_kib: u64,
    helper_rss_kib: Vec<u64>,
    /// Anonymous and file-backed parts of each helper's RSS.
    helper_parts_kib: Vec<(u64, u64)>,
    /// Each helper's proportional set size.
    helper_pss_kib: Vec<u64>,
    /// The daemon's proportional set size.
    daemon_pss_kib: u64,
}

async fn pull(mut images: ImageServiceClient<Channel>, references: &[String]) {
    for reference in references {
        images
            .pull_image(cri::PullImageRequest {
                image: Some(spec(reference)),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("pull {reference}: {e}"));
    }
}

/// Runs pod `name` with one `sleep` container; returns the sandbox id and each call's time.
async fn start_pod(
    mut client: RuntimeServiceClient<Channel>,
    target_image: String,
    logs: PathBuf,
    cgroup_prefix: String,
    name: String,
) -> (String, [Duration; 3]) {
    std::fs::create_dir_all(logs.join(&name)).expect("pod log directory");
    let mut config = sandbox_config_in(&logs, &name);
    config.linux = Some(cri::LinuxPodSandboxConfig {
        cgroup_parent: format!("{cgroup_prefix}/{name}"),
        ..Default::default()
    });
    let t0 = Instant::now();
    let sandbox = client
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("run {name}: {e}"))
        .into_inner()
        .pod_sandbox_id;
    let t1 = Instant::now();
    let container = client
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: sandbox.clone(),
            config: Some(container_config("sleep", &target_image, &["sleep", "3600"])),
            sandbox_config: Some(config),
        })
        .await
        .unwrap_or_else(|e| panic!("create in {name}: {e}"))
        .into_inner()
        .container_id;
    let t2 = Instant::now();
    client
        .start_container(cri::StartContainerRequest {
            container_id: container,
        })
        .await
        .unwrap_or_else(|e| panic!("start in {name}: {e}"));
    let t3 = Instant::now();
    (sandbox, [t1 - t0, t2 - t1, t3 - t2])
}

async fn remove_pods(client: &RuntimeServiceClient<Channel>, sandboxes: Vec<String>) {
    let removals = sandboxes.into_iter().map(|id| {
        let mut client = client.clone();
        tokio::spawn(async move {
            client
                .stop_pod_sandbox(cri::StopPodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })
                .await
                .unwrap_or_else(|e| panic!("stop {id}: {e}"));
            client
                .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })
                .await
                .unwrap_or_else(|e| panic!("remove {id}: {e}"));
        })
    });
    for removal in futures::future::join_all(removals).await {
        removal.expect("removal task");
    }
}

async fn measure(target: &Target<'_>) -> Results {
    let (sequential_count, parallel_count) = (sequential_pods(), parallel_pods());
    eprintln!("{}: {sequential_count} pods one after another", target.name);
    let mut sequential = Vec::new();
    let mut sandboxes = Vec::new();
    for i in 0..sequential_count {
        let (id, times) = start_pod(
            target.client.clone(),
            target.image.clone(),
            target.logs.clone(),
            target.cgroup_prefix.clone(),
            format!("seq-{i}"),
        )
        .await;
        sandboxes.push(id);
        sequential.push(times);
    }
    remove_pods(&target.client, sandboxes).await;

    eprintln!("{}: {parallel_count} pods at once", target.name);
    let started = Instant::now();
    let tasks = (0..parallel_count).map(|i| {
        tokio::spawn(start_pod(
            target.client.clone(),
            target.image.clone(),
            target.logs.clone(),
            target.cgroup_prefix.clone(),
            format!("par-{i}"),
        ))
    });
    let sandboxes: Vec<String> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("pod task").0)
        .collect();
    let parallel_wall = started.elapsed();

    // Let start-up allocations settle before reading RSS.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let daemon_rss_kib = support::rss_kib(target.daemon_pid).expect("daemon RSS");
    let helpers = (target.helpers)();
    let helper_rss_kib: Vec<u64> = helpers
        .iter()
        .copied()
        .filter_map(support::rss_kib)
        .collect();
    let helper_parts_kib: Vec<(u64, u64)> = helpers
        .iter()
        .filter_map(|pid| support::rss_parts_kib(*pid))
        .map(|(anon, file, _)| (anon, file))
        .collect();
    let helper_pss_kib: Vec<u64> = helpers
        .iter()
        .copied()
        .filter_map(support::pss_kib)
        .collect();
    let daemon_pss_kib = support::pss_kib(target.daemon_pid).expect("daemon PSS");
    remove_pods(&target.client, sandboxes).await;
    Results {
        sequential,
        parallel_wall,
        daemon_rss_kib,
        helper_rss_kib,
        helper_parts_kib,
        helper_pss_kib,
        daemon_pss_kib,
    }
}

fn percentile(values: &[Duration], p: f64) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn percentile_u64(values: &[u64], p: f64) -> u64 {
    let mut sorted = values.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn print_table(ours: &Results, theirs: &Results) {
    let total = |r: &Results| -> Vec<Duration> {
        r.sequential.iter().map(|t| t[0] + t[1] + t[2]).collect()
    };
    let call =
        |r: &Results, i: usize| -> Vec<Duration> { r.sequential.iter().map(|t| t[i]).collect() };
    let ratio = |a: f64, b: f64| format!("{:.2}x", b / a);
    println!(
        "{:<44} {:>14} {:>14} {:>12}",
        "measure", "cri-lite", "containerd", "containerd/ours"
    );
    let durations: Vec<(&str, Duration, Duration)> = vec![
        (
            "run+create+start p50 (pods in sequence)",
            percentile(&total(ours), 0.5),
            percentile(&total(theirs), 0.5),
        ),
        (
            "run+create+start p99",
            percentile(&total(ours), 0.99),
            percentile(&total(theirs), 0.99),
        ),
        (
            "  RunPodSandbox p50",
            percentile(&call(ours, 0), 0.5),
            percentile(&call(theirs, 0), 0.5),
        ),
        (
            "  CreateContainer p50",
            percentile(&call(ours, 1), 0.5),
            percentile(&call(theirs, 1), 0.5),
        ),
        (
            "  StartContainer p50",
            percentile(&call(ours, 2), 0.5),
            percentile(&call(theirs, 2), 0.5),
        ),
        (
            "pods in parallel, wall time",
            ours.parallel_wall,
            theirs.parallel_wall,
        ),
    ];
    for (label, a, b) in durations {
        println!(
            "{label:<44} {:>14} {:>14} {:>12}",
            ms(a),
            ms(b),
            ratio(a.as_secs_f64(), b.as_secs_f64())
        );
    }
    let sum = |r: &Results| r.helper_rss_kib.iter().sum::<u64>();
    let anon = |r: &Results| -> Vec<u64> { r.helper_parts_kib.iter().map(|p| p.0).collect() };
    let file = |r: &Results| -> Vec<u64> { r.helper_parts_kib.iter().map(|p| p.1).collect() };
    let rows: Vec<(&str, u64, u64)> = vec![
        (
            "daemon RSS with the parallel pods",
            ours.daemon_rss_kib,
            theirs.daemon_rss_kib,
        ),
        (
            "daemon PSS with the parallel pods",
            ours.daemon_pss_kib,
            theirs.daemon_pss_kib,
        ),
        ("monitors / shims: total RSS", sum(ours), sum(theirs)),
        (
            "monitors / shims: total PSS",
            ours.helper_pss_kib.iter().sum(),
            theirs.helper_pss_kib.iter().sum(),
        ),
        (
            "  per process p50",
            percentile_u64(&ours.helper_rss_kib, 0.5),
            percentile_u64(&theirs.helper_rss_kib, 0.5),
        ),
        (
            "  per process p50: anonymous",
            percentile_u64(&anon(ours), 0.5),
            percentile_u64(&anon(theirs), 0.5),
        ),
        (
            "  per process p50: file-backed (shared)",
            percentile_u64(&file(ours), 0.5),
            percentile_u64(&file(theirs), 0.5),
        ),
        (
            "  per process max",
            percentile_u64(&ours.helper_rss_kib, 1.0),
            percentile_u64(&theirs.helper_rss_kib, 1.0),
        ),
    ];
    for (label, a, b) in rows {
        println!(
            "{label:<44} {:>14} {:>14} {:>12}",
            mib(a),
            mib(b),
            ratio(a as f64, b as f64)
        );
    }
    println!(
        "{:<44} {:>14} {:>14}",
        "  processes",
        ours.helper_rss_kib.len(),
        theirs.helper_rss_kib.len()
    );
}

/// A registry in `netns` with busybox and pause; returns it and the two references.
fn registry_in(netns: &Path, layouts: &Path) -> (support::Registry, String, String) {
    let registry = support::Registry::start_in(Some(netns), None).expect("registry");
    registry.push(layouts, "busybox", "busybox:1");
    registry.push(layouts, "pause", "pause:1");
    let busybox = format!("{}/busybox:1", registry.address);
    let pause = format!("{}/pause:1", registry.address);
    (registry, busybox, pause)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --all-targets` runs benches without `--bench`: nothing to test here.
        eprintln!("the CRI benchmark runs under `cargo bench` (hack/bench/cri.sh)");
        return;
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "the CRI benchmark needs root (namespaces, cgroups, mounts)"
    );
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let layouts = support::layouts();

    let daemon = Daemon::start(DaemonOptions::default());
    let (_our_registry, our_busybox, our_pause) = registry_in(&daemon.netns.path(), &layouts);
    let containerd_netns = TestNetns::create();
    let (_their_registry, their_busybox, their_pause) =
        registry_in(&containerd_netns.path(), &layouts);
    let registry_address = their_busybox
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let containerd = Containerd::start(containerd_netns, &registry_address, &their_pause);
    let containerd_cgroups = containerd.cgroup_root.clone();

    let (ours, theirs) = rt.block_on(async {
        pull(daemon.images().await, &[our_busybox.clone(), our_pause]).await;
        pull(
            containerd.images().await,
            &[their_busybox.clone(), their_pause],
        )
        .await;
        let monitors = || daemon.monitor_pids();
        let ours = measure(&Target {
            name: "cri-lite",
            client: daemon.runtime().await,
            image: our_busybox,
            logs: daemon.logs(),
            cgroup_prefix: daemon.cgroup_root.clone(),
            daemon_pid: daemon.pid().expect("daemon pid"),
            helpers: &monitors,
        })
        .await;
        let shims = || containerd.shim_pids();
        let theirs = measure(&Target {
            name: "containerd",
            client: containerd.runtime().await,
            image: their_busybox,
            logs: containerd.dir.path().join("logs"),
            cgroup_prefix: containerd_cgroups.clone(),
            daemon_pid: containerd.pid().expect("containerd pid"),
            helpers: &shims,
        })
        .await;
        (ours, theirs)
    });
    print_table(&ours, &theirs);
    drop(containerd);
    drop(daemon);
}
