//! Pod helpers shared by the end-to-end tests: a registry with busybox for a daemon, pulls,
//! sandbox and container configs, running a sandbox, starting a container, ExecSync.

use std::collections::HashMap;

use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

use super::daemon::Daemon;

/// A registry with busybox pushed, on the loopback of the daemon's network namespace.
pub fn busybox(daemon: &Daemon) -> (super::Registry, String) {
    let layouts = super::layouts();
    let registry = super::Registry::start_in(Some(&daemon.netns.path()), None).expect("registry");
    registry.push(&layouts, "busybox", "busybox:1");
    let image = format!("{}/busybox:1", registry.address);
    (registry, image)
}

pub async fn pull(daemon: &Daemon, image: &str) -> String {
    daemon
        .images()
        .await
        .pull_image(cri::PullImageRequest {
            image: Some(spec(image)),
            ..Default::default()
        })
        .await
        .expect("pull")
        .into_inner()
        .image_ref
}

pub fn spec(image: &str) -> cri::ImageSpec {
    cri::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    }
}

pub fn sandbox_config(daemon: &Daemon, name: &str) -> cri::PodSandboxConfig {
    sandbox_config_in(&daemon.logs(), name)
}

/// A pod named `name` in namespace default, labelled `app=<name>`, logging under
/// `logs/<name>`.
pub fn sandbox_config_in(logs: &std::path::Path, name: &str) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: logs.join(name).display().to_string(),
        dns_config: Some(cri::DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["default.svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        }),
        labels: HashMap::from([("app".to_string(), name.to_string())]),
        ..Default::default()
    }
}

pub fn container_config(name: &str, image: &str, command: &[&str]) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(spec(image)),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}/0.log"),
        ..Default::default()
    }
}

pub async fn run_sandbox(
    client: &mut RuntimeServiceClient<Channel>,
    config: cri::PodSandboxConfig,
) -> String {
    client
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        })
        .await
        .expect("run sandbox")
        .into_inner()
        .pod_sandbox_id
}

pub async fn start(
    client: &mut RuntimeServiceClient<Channel>,
    sandbox: &str,
    sandbox_config: &cri::PodSandboxConfig,
    config: cri::ContainerConfig,
) -> String {
    let id = client
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: sandbox.into(),
            config: Some(config),
            sandbox_config: Some(sandbox_config.clone()),
        })
        .await
        .expect("create container")
        .into_inner()
        .container_id;
    client
        .start_container(cri::StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .expect("start container");
    id
}

pub async fn exec(
    client: &mut RuntimeServiceClient<Channel>,
    id: &str,
    cmd: &[&str],
) -> cri::ExecSyncResponse {
    client
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 10,
        })
        .await
        .expect("exec")
        .into_inner()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_string()
}
