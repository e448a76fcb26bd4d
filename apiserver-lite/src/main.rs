//! The `apiserver-lite` binary: flags, start-up (store, certificates, bootstrap objects),
//! serving, and shutdown on SIGTERM/SIGINT (stop accepting, drain, exit; a second signal
//! exits at once).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use apiserver_lite::admission::{Admission, Cidr};
use apiserver_lite::api::{Api, ApiConfig};
use apiserver_lite::auth::{AllowAuthenticated, TokenAuthenticator};
use apiserver_lite::nodeproxy::NodeProxy;
use apiserver_lite::pki::{Pki, serving_names};
use apiserver_lite::server::{Frontend, serve, tls_config};
use apiserver_lite::serviceaccount;
use apiserver_lite::storage::Store;
use apiserver_lite::storage::sqlite::SqliteStore;
use apiserver_lite::{bootstrap, controllers, dns, leader, namespaces, scheduler, storage};
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};

/// A Kubernetes API server on SQLite or etcd.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to serve HTTPS on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Directory for the database, certificates and the admin kubeconfig.
    #[arg(long, default_value = "/var/lib/apiserver-lite")]
    data_dir: PathBuf,
    /// Storage: `sqlite` (a database in the data dir) or `etcd://host:port[,host:port...]`.
    #[arg(long, default_value = "sqlite")]
    storage: String,
    /// Static bearer tokens, CSV: token,user,uid,"group1,group2".
    #[arg(long)]
    token_auth_file: Option<PathBuf>,
    /// PEM files with public keys (or certificates, or private keys) that ServiceAccount
    /// tokens are also verified against; repeatable.
    #[arg(long)]
    service_account_key_file: Vec<PathBuf>,
    /// The private key (ECDSA P-256, PEM) ServiceAccount tokens are signed with (default: a
    /// key generated once as `<data-dir>/pki/sa.key`).
    #[arg(long)]
    service_account_signing_key_file: Option<PathBuf>,
    /// The `iss` of ServiceAccount tokens.
    #[arg(long, default_value = apiserver_lite::serviceaccount::DEFAULT_ISSUER)]
    service_account_issuer: String,
    /// Audiences the API accepts in ServiceAccount tokens, comma separated (default: the
    /// issuer).
    #[arg(long, value_delimiter = ',')]
    api_audiences: Vec<String>,
    /// The address clients and nodes reach this server at (default: the listen address, or
    /// the first non-loopback address when listening on all).
    #[arg(long)]
    advertise_address: Option<IpAddr>,
    /// More addresses the serving certificate must cover (the node IPs are added anyway).
    #[arg(long, value_delimiter = ',')]
    tls_san: Vec<IpAddr>,
    /// ClusterIP range of Services.
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cluster_ip_range: Cidr,
    /// NodePort range of Services, `first-last`.
    #[arg(long, default_value = "30000-32767")]
    service_node_port_range: String,
    /// Requests in flight at most (watches excepted); 429 beyond.
    #[arg(long, default_value_t = 400)]
    max_requests_inflight: usize,
    /// Open watches at most; 429 beyond.
    #[arg(long, default_value_t = 10_000)]
    max_watches: usize,
    /// Largest request body in bytes; 413 beyond.
    #[arg(long, default_value_t = 3 * 1024 * 1024)]
    max_request_body_bytes: usize,
    /// Seconds between store compactions.
    #[arg(long, default_value_t = 300)]
    compaction_interval_seconds: u64,
    /// Upper bound of a watch's length in seconds when the client sets none.
    #[arg(long, default_value_t = 1800)]
    min_request_timeout: u64,
    /// Seconds between bookmarks on watches that allow them.
    #[arg(long, default_value_t = 60)]
    bookmark_interval_seconds: u64,
    /// Seconds to let requests in flight finish on shutdown.
    #[arg(long, default_value_t = 30)]
    shutdown_drain_seconds: u64,
    /// Run the scheduler in this process (as a client of this server).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    scheduler: bool,
    /// Run the controllers in this process.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    controllers: bool,
    /// Run only the scheduler, against the API server of `--kubeconfig` (any Kubernetes API
    /// server); no API server is started.
    #[arg(long)]
    scheduler_only: bool,
    /// Run only the controllers, against the API server of `--kubeconfig`.
    #[arg(long)]
    controllers_only: bool,
    /// Kubeconfig for `--scheduler-only`, `--controllers-only` and `--dns-only` (default: the
    /// usual kubeconfig lookup).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// CA bundle to verify kubelets' serving certificates with (pod logs, exec, attach,
    /// port-forward); without it they are not verified, as upstream.
    #[arg(long)]
    kubelet_certificate_authority: Option<PathBuf>,
    #[command(flatten)]
    dns: dns::DnsFlags,
    /// Run the EndpointSlice and Endpoints controllers (with the controllers).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    endpoint_controllers: bool,
    /// Run the service load balancer (LoadBalancer Services get an ingress IP).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    service_lb: bool,
    /// Addresses for LoadBalancer Services: a CIDR or `first-last`; without it they get the
    /// InternalIPs of the Ready nodes.
    #[arg(long)]
    lb_pool: Option<controllers::servicelb::Pool>,
    /// Give each Node a pod CIDR from `--cluster-cidr`.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    allocate_node_cidrs: bool,
    /// The range node pod CIDRs come from.
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: controllers::nodeipam::Ipv4Cidr,
    /// Prefix length of each node's pod CIDR.
    #[arg(long, default_value_t = 24)]
    node_cidr_mask_size: u8,
    /// Run the StatefulSet controller.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    statefulset_controller: bool,
    /// Run the PersistentVolume binder (claims bound to pre-provisioned volumes).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pv_controller: bool,
    /// Run the node lifecycle controller (Unknown status, taints, taint-based eviction).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    node_lifecycle: bool,
    /// How long a node may go without renewing its lease before it is Unknown (`50s`).
    #[arg(long, default_value = "50s", value_parser = parse_duration)]
    node_monitor_grace_period: Duration,
    /// The same for a node that never posted a Ready condition (`60s`).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    node_startup_grace_period: Duration,
    /// Run the scheduler and the controllers only while holding their Lease in kube-system
    /// (`kube-scheduler`, `kube-controller-manager`), so several instances run one set.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
}

/// What the control plane runs, each part under its own lease when electing.
struct ControlPlane {
    client: kube::Client,
    config: kube::Config,
    cluster: controllers::ClusterControllers,
    /// `Some(identity)` when electing leaders.
    identity: Option<String>,
}

impl ControlPlane {
    /// Starts the scheduler and/or the controllers; the tasks end (leases released) once
    /// `shutdown` turns true.
    fn spawn(
        self,
        scheduler: bool,
        controllers: bool,
        shutdown: &tokio::sync::watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        type Work = Box<
            dyn Fn(
                    tokio::sync::watch::Receiver<bool>,
                )
                    -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
                + Send
                + Sync,
        >;
        let mut parts: Vec<(&str, Work)> = Vec::new();
        if scheduler {
            let client = self.client.clone();
            parts.push((
                "kube-scheduler",
                Box::new(move |term| {
                    Box::pin(scheduler::run(
                        client.clone(),
                        scheduler::DEFAULT_SCHEDULER,
                        term,
                    ))
                }),
            ));
        }
        if controllers {
            let (client, config, cluster) = (self.client.clone(), self.config, self.cluster);
            parts.push((
                "kube-controller-manager",
                Box::new(move |term| {
                    let (client, config, cluster) =
                        (client.clone(), config.clone(), cluster.clone());
                    Box::pin(async move {
                        let others =
                            tokio::spawn(controllers::run_cluster(client, term.clone(), cluster));
                        if let Err(error) =
                            controllers::run(config, term, controllers::Which::ALL).await
                        {
                            tracing::error!(%error, "controllers");
                        }
                        let _ = others.await;
                    })
                }),
            ));
        }
        parts
            .into_iter()
            .map(|(lease, work)| match &self.identity {
                Some(identity) => tokio::spawn(leader::run_elected(
                    self.client.clone(),
                    leader::Settings::new(lease, identity),
                    shutdown.clone(),
                    work,
                )),
                None => tokio::spawn(work(shutdown.clone())),
            })
            .collect()
    }
}

/// This process's candidate name: the host name and what tells it apart on the host.
fn identity(tag: &str) -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}_{tag}")
}

/// A duration flag: `50s`, `1m30s`, `500ms` or seconds alone.
fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|e| e.to_string());
    }
    let d: jiff::SignedDuration = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    d.try_into().map_err(|e| format!("{s:?}: {e}"))
}

/// The Service and Node controllers the flags ask for.
fn cluster_controllers(args: &Args) -> anyhow::Result<controllers::ClusterControllers> {
    let ipam = controllers::nodeipam::Settings {
        cluster_cidr: args.cluster_cidr,
        node_mask: args.node_cidr_mask_size,
    };
    if args.allocate_node_cidrs {
        ipam.validate().map_err(anyhow::Error::msg)?;
    }
    Ok(controllers::ClusterControllers {
        endpoints: args.endpoint_controllers,
        service_lb: args.service_lb.then_some(args.lb_pool),
        node_ipam: args.allocate_node_cidrs.then_some(ipam),
        node_lifecycle: args
            .node_lifecycle
            .then_some(controllers::nodelifecycle::Settings {
                grace: args.node_monitor_grace_period,
                startup_grace: args.node_startup_grace_period,
            }),
        statefulset: args.statefulset_controller,
        volume_binding: args.pv_controller,
    })
}

fn node_addresses() -> Vec<IpAddr> {
    nix::ifaddrs::getifaddrs()
        .map(|addrs| {
            addrs
                .filter_map(|a| a.address)
                .filter_map(|a| a.as_sockaddr_in().map(|v4| IpAddr::V4(v4.ip())))
                .filter(|ip| !ip.is_loopback())
                .collect()
        })
        .unwrap_or_default()
}

async fn config_from_kubeconfig(path: Option<&std::path::Path>) -> anyhow::Result<kube::Config> {
    Ok(match path {
        Some(p) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(p)
                .with_context(|| format!("reading {}", p.display()))?;
            kube::Config::from_custom_kubeconfig(
                kubeconfig,
                &kube::config::KubeConfigOptions::default(),
            )
            .await?
        }
        None => kube::Config::infer().await?,
    })
}

/// `--scheduler-only` / `--controllers-only`: control plane clients against any API server,
/// until SIGTERM/SIGINT.
async fn run_clients_only(
    kubeconfig: Option<&std::path::Path>,
    scheduler: bool,
    controllers: bool,
    cluster: controllers::ClusterControllers,
    leader_elect: bool,
) -> anyhow::Result<()> {
    let config = config_from_kubeconfig(kubeconfig).await?;
    let client = kube::Client::try_from(config.clone())?;
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let plane = ControlPlane {
        client,
        config,
        cluster,
        identity: leader_elect.then(|| identity(&std::process::id().to_string())),
    };
    let tasks = plane.spawn(scheduler, controllers, &shutdown_rx);
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    let _ = shutdown_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), futures::future::join_all(tasks)).await;
    Ok(())
}

/// `--dns-only`: the cluster DNS against any API server, until SIGTERM/SIGINT.
async fn run_dns_only(args: &Args) -> anyhow::Result<()> {
    let config = config_from_kubeconfig(args.kubeconfig.as_deref()).await?;
    let client = kube::Client::try_from(config)?;
    let advertise = args.advertise_address.unwrap_or_else(|| {
        node_addresses()
            .first()
            .copied()
            .unwrap_or(IpAddr::from([127, 0, 0, 1]))
    });
    let options = args
        .dns
        .options(advertise, &args.service_cluster_ip_range.to_string())
        .map_err(anyhow::Error::msg)?;
    let server = clusterdns::Dns::bind(options).await?;
    eprintln!(
        "cluster DNS serving on {} (UDP and TCP)",
        server.local_addr()
    );
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(server.run(client, shutdown_rx));
    daemon::shutdown_signal().await;
    let _ = shutdown_tx.send(true);
    match tokio::time::timeout(Duration::from_secs(5), task).await {
        Ok(Ok(result)) => result?,
        Ok(Err(error)) => tracing::error!(%error, "cluster DNS task"),
        Err(_) => tracing::warn!("cluster DNS did not stop in 5 s"),
    }
    Ok(())
}

fn parse_port_range(s: &str) -> anyhow::Result<std::ops::RangeInclusive<u16>> {
    let (a, b) = s
        .split_once('-')
        .context("--service-node-port-range must look like 30000-32767")?;
    let (a, b): (u16, u16) = (a.trim().parse()?, b.trim().parse()?);
    if a == 0 || a > b {
        bail!("--service-node-port-range {s}: first must be 1 or more and not above last");
    }
    Ok(a..=b)
}

async fn open_store(spec: &str, data_dir: &std::path::Path) -> anyhow::Result<Arc<dyn Store>> {
    if spec == "sqlite" {
        let path = data_dir.join("state.db");
        let store =
            SqliteStore::open(&path).with_context(|| format!("opening {}", path.display()))?;
        return Ok(Arc::new(store));
    }
    if spec.starts_with("etcd") {
        let endpoints = storage::etcd::parse_url(spec).map_err(anyhow::Error::msg)?;
        let store = storage::etcd::EtcdStore::connect(&endpoints)
            .await
            .with_context(|| format!("connecting to etcd at {spec}"))?;
        return Ok(Arc::new(store));
    }
    bail!("--storage {spec:?}: expected `sqlite` or `etcd://host:port[,host:port]`")
}

fn main() -> anyhow::Result<()> {
    // Blocking work is SQLite reads on four connections: a small pool is enough, and it keeps
    // the allocator from growing one arena per short-lived thread under load.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(8)
        .build()
        .context("starting the async runtime")?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    daemon::init_logging();
    let args = Args::parse();
    if args.dns.dns_only {
        return run_dns_only(&args).await;
    }
    let cluster = cluster_controllers(&args)?;
    if args.scheduler_only || args.controllers_only {
        return run_clients_only(
            args.kubeconfig.as_deref(),
            args.scheduler_only,
            args.controllers_only,
            cluster,
            args.leader_elect,
        )
        .await;
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let node_ips = node_addresses();
    let advertise = args.advertise_address.unwrap_or_else(|| {
        let ip = args.listen.ip();
        if ip.is_unspecified() {
            node_ips
                .first()
                .copied()
                .unwrap_or(IpAddr::from([127, 0, 0, 1]))
        } else {
            ip
        }
    });
    let mut sans = node_ips.clone();
    sans.extend(args.tls_san.iter().copied());
    sans.push(advertise);
    let names = serving_names(
        &sans,
        Some(IpAddr::V4(args.service_cluster_ip_range.first())),
    );
    let pki = Pki::load_or_create(&args.data_dir.join("pki"), &names).context("certificates")?;
    let kubeconfig = args.data_dir.join("admin.kubeconfig");
    let server_url = format!("https://{}", SocketAddr::new(advertise, args.listen.port()));
    pki.ensure_kubeconfig(&kubeconfig, &server_url, "admin", &["system:masters"])
        .context("admin kubeconfig")?;
    let tokens = match &args.token_auth_file {
        Some(path) => TokenAuthenticator::from_file(path)?,
        None => TokenAuthenticator::default(),
    };
    let sa_keys = serviceaccount::Keys::load_or_generate(
        &pki.dir,
        args.service_account_signing_key_file.as_deref(),
        &args.service_account_key_file,
    )
    .context("service account keys")?;
    let sa_tokens = Arc::new(serviceaccount::TokenService::new(
        args.service_account_issuer.clone(),
        args.api_audiences.clone(),
        sa_keys,
    ));
    let store = open_store(&args.storage, &args.data_dir).await?;
    let admission = Admission {
        service_range: args.service_cluster_ip_range,
        node_ports: parse_port_range(&args.service_node_port_range)?,
    };
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let config = ApiConfig {
        advertise_address: SocketAddr::new(advertise, args.listen.port()).to_string(),
        max_body_bytes: args.max_request_body_bytes,
        max_watches: args.max_watches,
        max_watch_seconds: args.min_request_timeout.max(2) * 2,
        bookmark_interval: Duration::from_secs(args.bookmark_interval_seconds.max(1)),
    };
    let mut api = Api::new(
        store.clone(),
        config,
        Box::new(AllowAuthenticated),
        admission.clone(),
        shutdown_rx.clone(),
    );
    api.service_account_tokens = Some(sa_tokens);
    let api = Arc::new(api);
    admission
        .repair(store.clone())
        .await
        .context("repairing service address allocations")?;
    bootstrap::run(&api, advertise, args.listen.port())
        .await
        .map_err(|e| anyhow::anyhow!("bootstrap objects: {}", e.message))?;

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let frontend = Arc::new(Frontend {
        api: api.clone(),
        tokens,
        inflight: tokio::sync::Semaphore::new(args.max_requests_inflight),
        max_body_bytes: args.max_request_body_bytes,
        node_proxy: NodeProxy::new(&pki, args.kubelet_certificate_authority.as_deref())
            .context("kubelet client")?,
    });
    tokio::spawn(namespaces::run(api.clone(), shutdown_rx.clone()));
    tokio::spawn(bootstrap::compaction_loop(
        api.clone(),
        Duration::from_secs(args.compaction_interval_seconds.max(1)),
        shutdown_rx.clone(),
    ));
    eprintln!(
        "apiserver-lite serving on https://{} (storage: {})",
        args.listen,
        store.backend()
    );
    eprintln!("admin kubeconfig: {}", kubeconfig.display());
    eprintln!("  export KUBECONFIG={}", kubeconfig.display());

    // Bound before serving, so a DNS address given that cannot be had stops the start.
    let dns_server = if args.dns.cluster_dns {
        let options = args
            .dns
            .options(advertise, &args.service_cluster_ip_range.to_string())
            .map_err(anyhow::Error::msg)?;
        match clusterdns::Dns::bind(options).await {
            Ok(dns_server) => {
                eprintln!(
                    "cluster DNS serving on {} (UDP and TCP)",
                    dns_server.local_addr()
                );
                Some(dns_server)
            }
            // The default address (the advertise address) may not be one of this host's.
            Err(error) if args.dns.dns_bind_address.is_none() => {
                tracing::warn!(%error, "cluster DNS not started: give --dns-bind-address");
                None
            }
            Err(error) => return Err(error.into()),
        }
    } else {
        None
    };
    let mut dns_task = None;

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let server = tokio::spawn(serve(
        listener,
        tls_config(&pki)?,
        frontend,
        shutdown_rx.clone(),
        Duration::from_secs(args.shutdown_drain_seconds),
    ));
    // The control plane stops (and releases its leases) before the server stops serving.
    let (plane_tx, plane_rx) = tokio::sync::watch::channel(false);
    let mut plane_tasks = Vec::new();
    if args.scheduler || args.controllers || dns_server.is_some() {
        let config = config_from_kubeconfig(Some(&kubeconfig))
            .await
            .context("control plane client")?;
        let client = kube::Client::try_from(config.clone()).context("control plane client")?;
        if args.scheduler || args.controllers {
            let plane = ControlPlane {
                client: client.clone(),
                config,
                cluster,
                identity: args
                    .leader_elect
                    .then(|| identity(&args.listen.to_string())),
            };
            plane_tasks = plane.spawn(args.scheduler, args.controllers, &plane_rx);
        }
        if let Some(dns_server) = dns_server {
            dns_task = Some(tokio::spawn(
                dns_server.run(client.clone(), shutdown_rx.clone()),
            ));
        }
    }
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    let _ = plane_tx.send(true);
    let _ = tokio::time::timeout(
        Duration::from_secs(6),
        futures::future::join_all(plane_tasks),
    )
    .await;
    tracing::info!("shutting down: no new connections, ending watches, draining requests");
    let _ = shutdown_tx.send(true);
    tokio::select! {
        done = server => { done??; }
        _ = term.recv() => { tracing::warn!("second signal: exiting now"); }
        _ = int.recv() => { tracing::warn!("second signal: exiting now"); }
    }
    if let Some(task) = dns_task {
        let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    }
    tracing::info!("stopped");
    Ok(())
}
