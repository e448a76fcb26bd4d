//! `agent`: the node agent. Registers the Node, keeps its Lease and status, and runs the pods
//! bound to it through a CRI runtime. SIGTERM stops it; pods keep running and a restarted agent
//! adopts them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use agent::node::{self, NodeSettings};
use agent::pod::{self, worker::Shared};
use agent::runtime::{ContainerRuntime, CriClient};
use agent::server::tls::{self, ServingCert};
use agent::server::{self, Kubelet};
use anyhow::Context;
use clap::Parser;
use k8s_openapi::api::core::v1::Taint;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::events::{Recorder, Reporter};
use tracing::info;

#[derive(Parser, Debug)]
#[command(
    name = "agent",
    version,
    about = "Kubernetes node agent (kubelet role)"
)]
struct Args {
    /// Kubeconfig of the API server (default: the usual lookup).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The node's name (default: the hostname).
    #[arg(long)]
    node_name: Option<String>,
    /// The CRI runtime's socket.
    #[arg(long, default_value = "unix:///run/cri-lite/cri.sock")]
    runtime_endpoint: String,
    /// State: pod volumes and the like.
    #[arg(long, default_value = "/var/lib/agent")]
    root_dir: PathBuf,
    /// Where container logs go (`<dir>/<ns>_<pod>_<uid>/<container>/<n>.log`).
    #[arg(long, default_value = "/var/log/pods")]
    pod_log_dir: PathBuf,
    /// Labels to register with, `k=v,k2=v2`.
    #[arg(long, value_delimiter = ',')]
    node_labels: Vec<String>,
    /// Taints to register with, `key=value:Effect,key:Effect`.
    #[arg(long, value_delimiter = ',')]
    register_with_taints: Vec<String>,
    /// Most pods this node runs.
    #[arg(long, default_value_t = 110)]
    max_pods: i64,
    /// Cluster DNS servers for ClusterFirst pods.
    #[arg(long, value_delimiter = ',')]
    cluster_dns: Vec<String>,
    /// The cluster domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// The node's address (default: the address of the route to the API server).
    #[arg(long)]
    node_ip: Option<String>,
    /// The pod CIDR when the API does not assign spec.podCIDR.
    #[arg(long)]
    pod_cidr: Option<String>,
    /// The kubelet API port (HTTPS; advertised in the Node's daemonEndpoints).
    #[arg(long, default_value_t = 10250)]
    port: u16,
    /// The address the kubelet API listens on.
    #[arg(long, default_value = "0.0.0.0")]
    address: std::net::IpAddr,
    /// The kubelet API's serving certificate (PEM chain); self-signed when not given.
    #[arg(long, requires = "tls_private_key_file")]
    tls_cert_file: Option<PathBuf>,
    /// The key of `--tls-cert-file`.
    #[arg(long, requires = "tls_cert_file")]
    tls_private_key_file: Option<PathBuf>,
    /// CA bundle that signs client certificates of the kubelet API (default: the CA of the
    /// kubeconfig, which is apiserver-lite's cluster CA).
    #[arg(long)]
    client_ca_file: Option<PathBuf>,
    /// Serve kubelet API requests that carry no credentials.
    #[arg(long, default_value_t = false)]
    anonymous_auth: bool,
    /// Cgroup parent of pods (QoS classes below it).
    #[arg(long, default_value = "/kubepods")]
    cgroup_root: String,
    /// Size at which a container's log is rotated (a quantity: 10Mi, 512Ki).
    #[arg(long, default_value = "10Mi", value_parser = parse_log_size)]
    container_log_max_size: u64,
    /// Log files kept per container, the live one included (at least 2).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(2..))]
    container_log_max_files: u16,
    /// How often container logs are checked for rotation, in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    container_log_monitor_interval: u64,
}

fn parse_log_size(s: &str) -> Result<u64, String> {
    let quantity = apimachinery::quantity::Quantity::parse(s).map_err(|e| e.to_string())?;
    u64::try_from(quantity.value())
        .ok()
        .filter(|bytes| *bytes > 0)
        .ok_or_else(|| format!("{s:?} must be a positive size"))
}

fn parse_taint(s: &str) -> anyhow::Result<Taint> {
    let (kv, effect) = s
        .rsplit_once(':')
        .with_context(|| format!("taint {s:?} needs :Effect"))?;
    let (key, value) = match kv.split_once('=') {
        Some((k, v)) => (k.to_string(), Some(v.to_string())),
        None => (kv.to_string(), None),
    };
    anyhow::ensure!(
        matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute"),
        "taint {s:?}: effect must be NoSchedule, PreferNoSchedule or NoExecute"
    );
    Ok(Taint {
        key,
        value,
        effect: effect.into(),
        time_added: None,
    })
}

fn default_node_ip(api: &str) -> String {
    let host = url_host(api);
    let target = format!("{host}:443");
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            use std::net::ToSocketAddrs;
            let addr = target
                .to_socket_addrs()?
                .next()
                .ok_or_else(|| std::io::Error::other("no address"))?;
            s.connect(addr)?;
            s.local_addr()
        })
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|_| "127.0.0.1".into())
}

fn url_host(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.rsplit_once(':') {
        Some((h, _)) if !h.ends_with(']') || h.starts_with('[') => {
            h.trim_matches(|c| c == '[' || c == ']').to_string()
        }
        _ => authority.to_string(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    daemon::init_logging();
    let args = Args::parse();
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig =
                Kubeconfig::read_from(path).with_context(|| format!("read {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    let api_url = config.cluster_url.to_string();
    let kubeconfig_ca: Vec<rustls::pki_types::CertificateDer<'static>> = config
        .root_cert
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(rustls::pki_types::CertificateDer::from)
        .collect();
    let client = kube::Client::try_from(config)?;
    let node_name = match &args.node_name {
        Some(n) => n.clone(),
        None => nix::unistd::gethostname()?.to_string_lossy().to_lowercase(),
    };
    let node_ip = args
        .node_ip
        .clone()
        .unwrap_or_else(|| default_node_ip(&api_url));
    let labels: BTreeMap<String, String> = args
        .node_labels
        .iter()
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("label {l:?} needs k=v"))
        })
        .collect::<anyhow::Result<_>>()?;
    let taints = args
        .register_with_taints
        .iter()
        .filter(|t| !t.is_empty())
        .map(|t| parse_taint(t))
        .collect::<anyhow::Result<Vec<_>>>()?;
    std::fs::create_dir_all(&args.root_dir)
        .with_context(|| format!("create {}", args.root_dir.display()))?;
    let cri_client = CriClient::new(&args.runtime_endpoint)?;
    let runtime_metrics = cri_client.metrics();
    let runtime: Arc<dyn ContainerRuntime> = Arc::new(cri_client);
    let runtime_name = match runtime.version().await {
        Ok(v) => v.runtime_name,
        Err(e) => {
            tracing::warn!(error = %e, "the container runtime does not answer yet; the node reports NotReady until it does");
            "cri".into()
        }
    };
    let settings = NodeSettings {
        name: node_name.clone(),
        labels,
        taints,
        max_pods: args.max_pods,
        node_ip: node_ip.clone(),
        port: i32::from(args.port),
        pod_cidr: args.pod_cidr.clone(),
        root_dir: args.root_dir.clone(),
        reserved_cpu_milli: 0,
        reserved_memory: 0,
    };
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "kubelet".into(),
            instance: Some(node_name.clone()),
        },
    );
    let shared = Arc::new(Shared {
        client: client.clone(),
        runtime: runtime.clone(),
        recorder,
        node_name: node_name.clone(),
        host_ip: node_ip.clone(),
        root_dir: args.root_dir.clone(),
        pod_log_dir: args.pod_log_dir.clone(),
        cluster_dns: args.cluster_dns.clone(),
        cluster_domain: args.cluster_domain.clone(),
        runtime_name,
        cgroup_root: args.cgroup_root.clone(),
        prober: Arc::new(agent::pod::probe::NodeProber::new(runtime.clone())?),
    });
    info!(node = %node_name, runtime = %args.runtime_endpoint, "agent starting");
    let node_task = tokio::spawn(node::run(
        client.clone(),
        runtime.clone(),
        settings,
        shutdown_rx.clone(),
    ));
    let serving = match (&args.tls_cert_file, &args.tls_private_key_file) {
        (Some(cert), Some(key)) => ServingCert::from_files(cert, key)?,
        _ => ServingCert::self_signed(&node_name, &node_ip)?,
    };
    let client_cas = match &args.client_ca_file {
        Some(path) => tls::ca_certificates(
            &std::fs::read(path).with_context(|| format!("read {}", path.display()))?,
        )?,
        None => kubeconfig_ca,
    };
    if client_cas.is_empty() {
        tracing::warn!(
            "no client CA (--client-ca-file, or a CA in the kubeconfig): the kubelet API accepts bearer tokens only"
        );
    }
    let tls_config = tls::server_config(&serving, client_cas)?;
    let listen = std::net::SocketAddr::new(args.address, args.port);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("kubelet API: listen on {listen}"))?;
    info!(%listen, "kubelet API serving");
    let kubelet = Arc::new(Kubelet {
        client: client.clone(),
        runtime: runtime.clone(),
        node_name: node_name.clone(),
        pod_log_dir: args.pod_log_dir.clone(),
        anonymous_auth: args.anonymous_auth,
        host: Arc::new(agent::server::stats::ProcHost::new(args.root_dir.clone())),
        runtime_metrics,
    });
    let server_task = tokio::spawn(server::serve(
        listener,
        tls_config,
        kubelet,
        shutdown_rx.clone(),
    ));
    let rotation_task = tokio::spawn(agent::logrotate::run(
        Arc::new(agent::logrotate::RealLogFiles),
        Arc::new(runtime.clone()),
        agent::logrotate::Policy {
            max_size: args.container_log_max_size,
            max_files: usize::from(args.container_log_max_files),
        },
        std::time::Duration::from_secs(args.container_log_monitor_interval),
        shutdown_rx.clone(),
    ));
    let pods_task = tokio::spawn(pod::run(shared, shutdown_rx));
    daemon::shutdown_signal().await;
    info!("shutting down; pods keep running");
    let _ = shutdown_tx.send(true);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let _ = node_task.await;
        let _ = pods_task.await;
        let _ = server_task.await;
        let _ = rotation_task.await;
    })
    .await;
    Ok(())
}
