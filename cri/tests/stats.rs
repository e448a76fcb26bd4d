//! Stats end to end: a pod whose containers burn CPU and allocate memory, a web pod it
//! downloads from, and the numbers the four stats calls report about them: a busy loop near
//! one core, a working set that grows, a writable layer that grows with a written file,
//! network counters that move with the download, filters, and the errors for missing or
//! stopped objects.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use support::daemon::{Daemon, DaemonOptions};
use support::pod::{busybox, container_config, exec, pull, run_sandbox, sandbox_config, start};
use tonic::Code;
use tonic::transport::Channel;

const MIB: u64 = 1024 * 1024;

async fn container_stats(
    client: &mut RuntimeServiceClient<Channel>,
    filter: cri::ContainerStatsFilter,
) -> Vec<cri::ContainerStats> {
    client
        .list_container_stats(cri::ListContainerStatsRequest {
            filter: Some(filter),
        })
        .await
        .expect("list container stats")
        .into_inner()
        .stats
}

async fn one(client: &mut RuntimeServiceClient<Channel>, id: &str) -> cri::ContainerStats {
    client
        .container_stats(cri::ContainerStatsRequest {
            container_id: id.into(),
        })
        .await
        .expect("container stats")
        .into_inner()
        .stats
        .expect("stats")
}

async fn pod(client: &mut RuntimeServiceClient<Channel>, id: &str) -> cri::LinuxPodSandboxStats {
    client
        .pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: id.into(),
        })
        .await
        .expect("pod sandbox stats")
        .into_inner()
        .stats
        .and_then(|s| s.linux)
        .expect("linux pod stats")
}

fn working_set(stats: &cri::ContainerStats) -> u64 {
    stats
        .memory
        .as_ref()
        .and_then(|m| m.working_set_bytes)
        .expect("working set")
        .value
}

fn eth0(stats: &cri::LinuxPodSandboxStats) -> (u64, u64) {
    let eth0 = stats
        .network
        .as_ref()
        .and_then(|n| n.default_interface.clone())
        .expect("eth0 counters");
    assert_eq!(eth0.name, "eth0");
    (
        eth0.rx_bytes.expect("rx").value,
        eth0.tx_bytes.expect("tx").value,
    )
}

fn labelled(mut config: cri::ContainerConfig, role: &str) -> cri::ContainerConfig {
    config.labels = HashMap::from([("role".to_string(), role.to_string())]);
    config
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_follow_cpu_memory_disk_and_network_use() {
    support::timed(async {
        let daemon = Daemon::start(DaemonOptions::default());
        let (_registry, image) = busybox(&daemon);
        pull(&daemon, &image).await;
        let mut client = daemon.runtime().await;

        let busy_config = sandbox_config(&daemon, "busy");
        let busy = run_sandbox(&mut client, busy_config.clone()).await;
        let burn = start(
            &mut client,
            &busy,
            &busy_config,
            labelled(
                container_config("burn", &image, &["sh", "-c", "while :; do :; done"]),
                "cpu",
            ),
        )
        .await;
        // Waits for a file before taking 64 MiB, so the test sees the working set grow.
        let eat = start(
            &mut client,
            &busy,
            &busy_config,
            labelled(
                container_config(
                    "eat",
                    &image,
                    &[
                        "sh",
                        "-c",
                        "until [ -e /go ]; do sleep 0.1; done; \
                         x=$(head -c 67108864 /dev/zero | tr '\\0' a); sleep 1000; echo ${#x}",
                    ],
                ),
                "memory",
            ),
        )
        .await;
        let web_config = sandbox_config(&daemon, "web");
        let web = run_sandbox(&mut client, web_config.clone()).await;
        start(
            &mut client,
            &web,
            &web_config,
            container_config(
                "httpd",
                &image,
                &[
                    "sh",
                    "-c",
                    "mkdir -p /www && head -c 4194304 /dev/zero > /www/blob && \
                     exec httpd -f -p 8080 -h /www",
                ],
            ),
        )
        .await;

        // CPU: the first sample has no rate; the second the rate since the first.
        let first = one(&mut client, &burn).await;
        let cpu = first.cpu.expect("cpu of a running container");
        assert!(cpu.usage_core_nano_seconds.is_some());
        let attributes = first.attributes.clone().expect("attributes");
        assert_eq!(attributes.id, burn);
        assert_eq!(attributes.metadata.expect("metadata").name, "burn");
        assert_eq!(attributes.labels["role"], "cpu");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let second = one(&mut client, &burn).await.cpu.expect("cpu");
        let nano_cores = second
            .usage_nano_cores
            .expect("a rate once two samples exist")
            .value;
        let used = second.usage_core_nano_seconds.expect("usage").value
            - cpu.usage_core_nano_seconds.expect("usage").value;
        let elapsed = (second.timestamp - cpu.timestamp) as u64;
        let expected = used * 1_000_000_000 / elapsed;
        assert!(
            nano_cores.abs_diff(expected) <= expected / 100 + 1,
            "{nano_cores} nano cores reported, {expected} from the counters"
        );
        // A busy loop gets most of a core, unless this machine runs more than it has cores
        // (other builds): then its fair share.
        let overloaded = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split(' ').next()?.parse::<f64>().ok())
            .is_some_and(|load| {
                load > std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
            });
        let floor = if overloaded { 100_000_000 } else { 300_000_000 };
        assert!(
            nano_cores > floor,
            "a busy loop uses {nano_cores} nano cores (overloaded machine: {overloaded})"
        );

        // Memory: the working set grows by the 64 MiB the shell takes.
        let before = working_set(&one(&mut client, &eat).await);
        let memory = one(&mut client, &eat).await.memory.expect("memory");
        let usage = memory.usage_bytes.expect("usage").value;
        assert!(usage >= memory.working_set_bytes.expect("working set").value);
        assert!(memory.available_bytes.is_none(), "no limit set");
        exec(&mut client, &eat, &["touch", "/go"]).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let now = working_set(&one(&mut client, &eat).await);
            if now >= before + 60 * MIB {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "working set stayed at {now} (from {before})"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        // Writable layer: a 4 MiB file written in the container shows.
        let layer = |s: cri::ContainerStats| {
            let layer = s.writable_layer.expect("writable layer");
            assert!(!layer.fs_id.expect("fs id").mountpoint.is_empty());
            (
                layer.used_bytes.expect("bytes").value,
                layer.inodes_used.expect("inodes").value,
            )
        };
        let (bytes, inodes) = layer(one(&mut client, &burn).await);
        let wrote = exec(
            &mut client,
            &burn,
            &["sh", "-c", "head -c 4194304 /dev/zero > /written"],
        )
        .await;
        assert_eq!(wrote.exit_code, 0);
        let (bytes_after, inodes_after) = layer(one(&mut client, &burn).await);
        assert!(bytes_after >= bytes + 4 * MIB, "{bytes} -> {bytes_after}");
        assert!(inodes_after > inodes);

        // Network: a 4 MiB download moves the counters of both pods.
        let web_ip = client
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: web.clone(),
                verbose: false,
            })
            .await
            .expect("web status")
            .into_inner()
            .status
            .and_then(|s| s.network)
            .expect("web network")
            .ip;
        let (busy_rx, _) = eth0(&pod(&mut client, &busy).await);
        let (_, web_tx) = eth0(&pod(&mut client, &web).await);
        let url = format!("http://{web_ip}:8080/blob");
        let fetched = exec(&mut client, &eat, &["wget", "-q", "-O", "/dev/null", &url]).await;
        assert_eq!(fetched.exit_code, 0, "{fetched:?}");
        let busy_stats = pod(&mut client, &busy).await;
        let (busy_rx_after, _) = eth0(&busy_stats);
        let (_, web_tx_after) = eth0(&pod(&mut client, &web).await);
        assert!(
            busy_rx_after >= busy_rx + 4 * MIB,
            "{busy_rx} -> {busy_rx_after}"
        );
        assert!(
            web_tx_after >= web_tx + 4 * MIB,
            "{web_tx} -> {web_tx_after}"
        );

        // The pod: its cgroup holds both containers, their processes and their stats.
        let processes = busy_stats
            .process
            .and_then(|p| p.process_count)
            .expect("process count")
            .value;
        assert!(processes >= 2, "{processes} processes");
        let pod_memory = busy_stats
            .memory
            .and_then(|m| m.working_set_bytes)
            .expect("pod working set")
            .value;
        assert!(pod_memory >= 60 * MIB, "pod working set {pod_memory}");
        assert!(
            busy_stats
                .cpu
                .and_then(|c| c.usage_core_nano_seconds)
                .is_some()
        );
        let mut nested: Vec<String> = busy_stats
            .containers
            .iter()
            .filter_map(|c| c.attributes.as_ref())
            .map(|a| a.id.clone())
            .collect();
        nested.sort();
        let mut expected = vec![burn.clone(), eat.clone()];
        expected.sort();
        assert_eq!(nested, expected);

        // Filters.
        assert_eq!(
            container_stats(&mut client, cri::ContainerStatsFilter::default())
                .await
                .len(),
            3
        );
        let of_busy = container_stats(
            &mut client,
            cri::ContainerStatsFilter {
                pod_sandbox_id: busy.clone(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(of_busy.len(), 2);
        let by_label = container_stats(
            &mut client,
            cri::ContainerStatsFilter {
                label_selector: HashMap::from([("role".to_string(), "memory".to_string())]),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(by_label.len(), 1);
        assert_eq!(
            by_label[0].attributes.as_ref().map(|a| a.id.as_str()),
            Some(eat.as_str())
        );
        let by_id = container_stats(
            &mut client,
            cri::ContainerStatsFilter {
                id: burn[..12].to_string(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(by_id.len(), 1);
        let pods = client
            .list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest {
                filter: Some(cri::PodSandboxStatsFilter {
                    label_selector: HashMap::from([("app".to_string(), "web".to_string())]),
                    ..Default::default()
                }),
            })
            .await
            .expect("list pod stats")
            .into_inner()
            .stats;
        assert_eq!(pods.len(), 1);
        assert_eq!(
            pods[0].attributes.as_ref().map(|a| a.id.as_str()),
            Some(web.as_str())
        );

        // An exited container still lists, without a running cgroup's numbers being required.
        client
            .stop_container(cri::StopContainerRequest {
                container_id: burn.clone(),
                timeout: 0,
            })
            .await
            .expect("stop burn");
        one(&mut client, &burn).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let stopped = one(&mut client, &burn).await;
        assert!(stopped.writable_layer.is_some());
        // Its cgroup may linger until removal, but nothing runs in it any more.
        let rate = stopped
            .cpu
            .and_then(|c| c.usage_nano_cores)
            .map(|n| n.value);
        assert!(rate.is_none_or(|r| r < 100_000_000), "{rate:?}");
        assert_eq!(
            container_stats(&mut client, cri::ContainerStatsFilter::default())
                .await
                .len(),
            3,
            "the exited container is still listed"
        );

        // Missing and stopped objects.
        let missing = client
            .container_stats(cri::ContainerStatsRequest {
                container_id: "no-such-container".into(),
            })
            .await
            .expect_err("unknown container");
        assert_eq!(missing.code(), Code::NotFound);
        let missing = client
            .pod_sandbox_stats(cri::PodSandboxStatsRequest {
                pod_sandbox_id: "no-such-pod".into(),
            })
            .await
            .expect_err("unknown pod");
        assert_eq!(missing.code(), Code::NotFound);
        client
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: web.clone(),
            })
            .await
            .expect("stop web");
        let stopped = client
            .pod_sandbox_stats(cri::PodSandboxStatsRequest {
                pod_sandbox_id: web.clone(),
            })
            .await
            .expect_err("stopped pod");
        assert_eq!(stopped.code(), Code::Unavailable);
        let ready = client
            .list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest { filter: None })
            .await
            .expect("list pod stats")
            .into_inner()
            .stats;
        assert_eq!(ready.len(), 1, "only the ready pod");

        for id in [&busy, &web] {
            client
                .stop_pod_sandbox(cri::StopPodSandboxRequest {
                    pod_sandbox_id: id.to_string(),
                })
                .await
                .expect("stop");
            client
                .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                    pod_sandbox_id: id.to_string(),
                })
                .await
                .expect("remove");
        }
        assert!(
            container_stats(&mut client, cri::ContainerStatsFilter::default())
                .await
                .is_empty()
        );
    })
    .await;
}
