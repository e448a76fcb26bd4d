//! The runtime end to end over its socket, with real runc, namespaces, a bridge, nftables and
//! images from a real local registry: a whole pod life, pods talking to each other and through
//! a hostPort, an OOM kill, a daemon killed mid-life, and bad input. Each test runs its own
//! daemon in its own network namespace and leaves nothing behind.

mod support;

use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use support::daemon::{Daemon, DaemonOptions, cgroups_left, mounts_under};
use support::pod::{
    busybox, container_config, exec, pull, run_sandbox, sandbox_config, start, text,
};
use tonic::Code;
use tonic::transport::Channel;

async fn status(client: &mut RuntimeServiceClient<Channel>, id: &str) -> cri::ContainerStatus {
    client
        .container_status(cri::ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        })
        .await
        .expect("container status")
        .into_inner()
        .status
        .expect("status")
}

async fn wait_exited(
    client: &mut RuntimeServiceClient<Channel>,
    id: &str,
    within: Duration,
) -> cri::ContainerStatus {
    let deadline = Instant::now() + within;
    loop {
        let s = status(client, id).await;
        if s.state == cri::ContainerState::ContainerExited as i32 {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "container {id} still {:?}",
            s.state
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for_log(path: &std::path::Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(path).unwrap_or_default();
        if log.contains(needle) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "{needle:?} not in {}: {log}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_lives_and_is_removed_without_leftovers() {
    let daemon = Daemon::start(DaemonOptions::default());
    let (_registry, image) = busybox(&daemon);
    let mut client = daemon.runtime().await;

    let version = client
        .version(cri::VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(version.runtime_api_version, "v1");
    let status_reply = client
        .status(cri::StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    let conditions = status_reply.status.unwrap().conditions;
    assert!(conditions.iter().all(|c| c.status), "{conditions:?}");

    let image_id = pull(&daemon, &image).await;
    let config = sandbox_config(&daemon, "life");
    let sandbox = run_sandbox(&mut client, config.clone()).await;
    let sandbox_status = client
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: sandbox.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let pod_ip = sandbox_status
        .status
        .as_ref()
        .unwrap()
        .network
        .as_ref()
        .unwrap()
        .ip
        .clone();
    assert!(pod_ip.starts_with("10.77.0."), "{pod_ip}");
    assert!(sandbox_status.info.contains_key("info"));

    let main = start(
        &mut client,
        &sandbox,
        &config,
        container_config(
            "main",
            &image,
            &["sh", "-c", "echo hello; echo oops >&2; exec sleep 3600"],
        ),
    )
    .await;
    let s = status(&mut client, &main).await;
    assert_eq!(s.state, cri::ContainerState::ContainerRunning as i32);
    assert_eq!(s.image_ref, image_id);
    assert!(s.started_at > 0);
    // The two streams are separate pipes: either line may land first.
    wait_for_log(std::path::Path::new(&s.log_path), "stderr F oops").await;
    let log = wait_for_log(std::path::Path::new(&s.log_path), " stdout F hello\n").await;
    assert!(log.contains("stderr F oops\n"), "{log}");

    assert_eq!(
        text(&exec(&mut client, &main, &["hostname"]).await.stdout),
        "life"
    );
    let resolv = text(
        &exec(&mut client, &main, &["cat", "/etc/resolv.conf"])
            .await
            .stdout,
    );
    assert!(
        resolv.contains("nameserver 10.96.0.10") && resolv.contains("ndots:5"),
        "{resolv}"
    );
    let addr = text(
        &exec(&mut client, &main, &["ip", "-4", "addr", "show", "eth0"])
            .await
            .stdout,
    );
    assert!(addr.contains(&pod_ip), "{addr}");
    let failed = exec(
        &mut client,
        &main,
        &["sh", "-c", "echo out; echo err >&2; exit 3"],
    )
    .await;
    assert_eq!(
        (failed.exit_code, text(&failed.stdout), text(&failed.stderr)),
        (3, "out".into(), "err".into())
    );
    let timed_out = client
        .exec_sync(cri::ExecSyncRequest {
            container_id: main.clone(),
            cmd: vec!["sleep".into(), "30".into()],
            timeout: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(timed_out.code(), Code::DeadlineExceeded, "{timed_out}");

    // Exit codes and reasons.
    let ok = start(
        &mut client,
        &sandbox,
        &config,
        container_config("ok", &image, &["true"]),
    )
    .await;
    let bad = start(
        &mut client,
        &sandbox,
        &config,
        container_config("bad", &image, &["sh", "-c", "exit 2"]),
    )
    .await;
    let ok = wait_exited(&mut client, &ok, Duration::from_secs(10)).await;
    let bad = wait_exited(&mut client, &bad, Duration::from_secs(10)).await;
    assert_eq!((ok.exit_code, ok.reason.as_str()), (0, "Completed"));
    assert_eq!((bad.exit_code, bad.reason.as_str()), (2, "Error"));
    assert!(bad.finished_at >= bad.started_at);

    // sh as pid 1 ignores SIGTERM: the stop escalates to SIGKILL after the timeout.
    let stop_started = Instant::now();
    client
        .stop_container(cri::StopContainerRequest {
            container_id: main.clone(),
            timeout: 1,
        })
        .await
        .unwrap();
    assert!(stop_started.elapsed() < Duration::from_secs(5));
    let stopped = status(&mut client, &main).await;
    assert_eq!(
        (stopped.state, stopped.exit_code),
        (cri::ContainerState::ContainerExited as i32, 137)
    );

    let listed = client
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                pod_sandbox_id: sandbox.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(listed.len(), 3);

    client
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: sandbox.clone(),
        })
        .await
        .unwrap();
    client
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: sandbox.clone(),
        })
        .await
        .unwrap();
    client
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: sandbox.clone(),
        })
        .await
        .unwrap();
    client
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: sandbox.clone(),
        })
        .await
        .unwrap();
    let left = client
        .list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(left.is_empty(), "{left:?}");
    assert!(
        mounts_under(daemon.dir.path()).is_empty(),
        "{:?}",
        mounts_under(daemon.dir.path())
    );
    assert!(
        cgroups_left(&daemon.cgroup_root).is_empty(),
        "{:?}",
        cgroups_left(&daemon.cgroup_root)
    );
    let links =
        String::from_utf8_lossy(&daemon.netns.exec(&["ip", "-o", "link"]).stdout).to_string();
    assert!(!links.contains("veth"), "{links}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_talk_by_ip_by_localhost_and_through_a_host_port() {
    let daemon = Daemon::start(DaemonOptions::default());
    let (_registry, image) = busybox(&daemon);
    let mut client = daemon.runtime().await;
    pull(&daemon, &image).await;

    let mut web_config = sandbox_config(&daemon, "web");
    web_config.port_mappings = vec![cri::PortMapping {
        protocol: 0,
        container_port: 8080,
        host_port: 18080,
        host_ip: String::new(),
    }];
    let web = run_sandbox(&mut client, web_config.clone()).await;
    let server = start(
        &mut client,
        &web,
        &web_config,
        container_config(
            "server",
            &image,
            &["sh", "-c", "mkdir -p /www && echo served-by-web > /www/index.html && exec httpd -f -p 8080 -h /www"],
        ),
    )
    .await;
    let sidecar = start(
        &mut client,
        &web,
        &web_config,
        container_config("sidecar", &image, &["sleep", "3600"]),
    )
    .await;
    let web_ip = client
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: web.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
        .network
        .unwrap()
        .ip;

    let client_config = sandbox_config(&daemon, "client");
    let other = run_sandbox(&mut client, client_config.clone()).await;
    let caller = start(
        &mut client,
        &other,
        &client_config,
        container_config("caller", &image, &["sleep", "3600"]),
    )
    .await;

    let fetch = |url: String| {
        vec![
            "sh".to_string(),
            "-c".to_string(),
            format!(
                "for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- {url} && exit 0; sleep 0.2; done; exit 1"
            ),
        ]
    };
    let by_localhost = client
        .exec_sync(cri::ExecSyncRequest {
            container_id: sidecar.clone(),
            cmd: fetch("http://127.0.0.1:8080/".into()),
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        text(&by_localhost.stdout),
        "served-by-web",
        "{}",
        text(&by_localhost.stderr)
    );
    let by_ip = client
        .exec_sync(cri::ExecSyncRequest {
            container_id: caller.clone(),
            cmd: fetch(format!("http://{web_ip}:8080/")),
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        text(&by_ip.stdout),
        "served-by-web",
        "{}",
        text(&by_ip.stderr)
    );

    // The node's own address (the bridge gateway) on the hostPort reaches the pod.
    let via_host_port = daemon
        .netns
        .exec(&["busybox", "wget", "-qO-", "http://10.77.0.1:18080/"]);
    assert_eq!(
        text(&via_host_port.stdout),
        "served-by-web",
        "{}",
        text(&via_host_port.stderr)
    );
    let rules =
        String::from_utf8_lossy(&daemon.netns.exec(&["nft", "list", "ruleset"]).stdout).to_string();
    assert!(rules.contains("dnat to"), "{rules}");

    let _ = server;
    for sandbox in [web, other] {
        client
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: sandbox,
            })
            .await
            .unwrap();
    }
    let rules =
        String::from_utf8_lossy(&daemon.netns.exec(&["nft", "list", "ruleset"]).stdout).to_string();
    assert!(
        !rules.contains("dnat to"),
        "hostPort rules stay after the pod went: {rules}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_memory_limit_ends_in_oom_killed() {
    let daemon = Daemon::start(DaemonOptions::default());
    let (_registry, image) = busybox(&daemon);
    let mut client = daemon.runtime().await;
    pull(&daemon, &image).await;
    let config = sandbox_config(&daemon, "hungry");
    let sandbox = run_sandbox(&mut client, config.clone()).await;
    let mut hungry = container_config("hungry", &image, &["tail", "/dev/zero"]);
    hungry.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 16 << 20,
            ..Default::default()
        }),
        security_context: None,
    });
    let id = start(&mut client, &sandbox, &config, hungry).await;
    let s = wait_exited(&mut client, &id, Duration::from_secs(30)).await;
    assert_eq!((s.reason.as_str(), s.exit_code), ("OOMKilled", 137));
    client
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: sandbox,
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_daemon_loses_no_container_log_line_or_exit_code() {
    let mut daemon = Daemon::start(DaemonOptions::default());
    let (_registry, image) = busybox(&daemon);
    let mut client = daemon.runtime().await;
    pull(&daemon, &image).await;
    let config = sandbox_config(&daemon, "survivor");
    let sandbox = run_sandbox(&mut client, config.clone()).await;
    let counter = start(
        &mut client,
        &sandbox,
        &config,
        container_config(
            "counter",
            &image,
            &[
                "sh",
                "-c",
                "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.05; done",
            ],
        ),
    )
    .await;
    let quitter = start(
        &mut client,
        &sandbox,
        &config,
        container_config("quitter", &image, &["sh", "-c", "sleep 1; exit 7"]),
    )
    .await;
    let log_path = status(&mut client, &counter).await.log_path;
    wait_for_log(std::path::Path::new(&log_path), "line 5\n").await;

    daemon.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    daemon.restart();
    let mut client = daemon.runtime().await;

    let running = status(&mut client, &counter).await;
    assert_eq!(running.state, cri::ContainerState::ContainerRunning as i32);
    let quit = wait_exited(&mut client, &quitter, Duration::from_secs(10)).await;
    assert_eq!(quit.exit_code, 7);
    let log = wait_for_log(std::path::Path::new(&log_path), "line 60\n").await;
    let numbers: Vec<u64> = log
        .lines()
        .filter_map(|l| l.rsplit(' ').next().and_then(|n| n.parse().ok()))
        .collect();
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "a gap in the log: {numbers:?}"
    );
    let sandboxes = client
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(sandboxes.len(), 1);

    // SIGTERM stops the daemon promptly and leaves containers running.
    assert!(daemon.terminate() < Duration::from_secs(5));
    daemon.restart();
    let mut client = daemon.runtime().await;
    assert_eq!(
        status(&mut client, &counter).await.state,
        cri::ContainerState::ContainerRunning as i32
    );
    client
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: sandbox,
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_clear_errors_and_changes_nothing() {
    let daemon = Daemon::start(DaemonOptions { pod_cidr: None });
    let (_registry, image) = busybox(&daemon);
    let mut client = daemon.runtime().await;

    // No pod CIDR yet: the network is not ready, and says why.
    let conditions = client
        .status(cri::StatusRequest::default())
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
        .conditions;
    let network = conditions
        .iter()
        .find(|c| c.r#type == "NetworkReady")
        .unwrap();
    assert!(
        !network.status && network.reason == "NetworkPluginNotReady",
        "{network:?}"
    );
    let config = sandbox_config(&daemon, "early");
    let err = client
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("pod CIDR"), "{err}");
    assert!(
        client
            .list_pod_sandbox(cri::ListPodSandboxRequest::default())
            .await
            .unwrap()
            .into_inner()
            .items
            .is_empty()
    );

    client
        .update_runtime_config(cri::UpdateRuntimeConfigRequest {
            runtime_config: Some(cri::RuntimeConfig {
                network_config: Some(cri::NetworkConfig {
                    pod_cidr: "10.77.0.0/24".into(),
                }),
            }),
        })
        .await
        .unwrap();
    let bad_cidr = client
        .update_runtime_config(cri::UpdateRuntimeConfigRequest {
            runtime_config: Some(cri::RuntimeConfig {
                network_config: Some(cri::NetworkConfig {
                    pod_cidr: "nonsense".into(),
                }),
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_cidr.code(), Code::InvalidArgument);

    let no_meta = client
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(cri::PodSandboxConfig::default()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(no_meta.code(), Code::InvalidArgument);
    let handler = client
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: "kata".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(handler.code(), Code::NotFound, "{handler}");

    let sandbox = run_sandbox(&mut client, config.clone()).await;
    let missing_image = client
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: sandbox.clone(),
            config: Some(container_config(
                "c",
                "127.0.0.1:1/never/pulled:1",
                &["true"],
            )),
            sandbox_config: Some(config.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(missing_image.code(), Code::NotFound, "{missing_image}");
    pull(&daemon, &image).await;
    let mut bad_mount = container_config("c", &image, &["true"]);
    bad_mount.mounts = vec![cri::Mount {
        container_path: "/data".into(),
        host_path: "/no/such/dir".into(),
        ..Default::default()
    }];
    let err = client
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: sandbox.clone(),
            config: Some(bad_mount),
            sandbox_config: Some(config.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("/no/such/dir"), "{err}");
    let no_command = client
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: "no-such-sandbox".into(),
            config: Some(container_config("c", &image, &["true"])),
            sandbox_config: Some(config.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(no_command.code(), Code::NotFound);
    // Failed creations leave no container, mount or runc state behind.
    assert!(
        client
            .list_containers(cri::ListContainersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .containers
            .is_empty()
    );
    let container_mounts: Vec<_> = mounts_under(daemon.dir.path())
        .into_iter()
        .filter(|m| m.to_string_lossy().contains("containers"))
        .collect();
    assert!(container_mounts.is_empty(), "{container_mounts:?}");

    // Missing objects: stop and remove succeed, status says NotFound.
    client
        .stop_container(cri::StopContainerRequest {
            container_id: "gone".into(),
            timeout: 1,
        })
        .await
        .unwrap();
    client
        .remove_container(cri::RemoveContainerRequest {
            container_id: "gone".into(),
        })
        .await
        .unwrap();
    client
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: "gone".into(),
        })
        .await
        .unwrap();
    let err = client
        .container_status(cri::ContainerStatusRequest {
            container_id: "gone".into(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = client.exec(cri::ExecRequest::default()).await.unwrap_err();
    assert_eq!(
        err.code(),
        Code::InvalidArgument,
        "an exec without a command"
    );
    client
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: sandbox,
        })
        .await
        .unwrap();
}
