//! The netproxy daemon: flags, kube-rs reflectors on Services, EndpointSlices and its Node,
//! the sync loop driven by [`netproxy::sync::State`], /healthz and /metrics, the health check
//! node ports, host-gw pod routes from all Nodes, SIGTERM (rules and routes stay, as with
//! kube-proxy) and `--cleanup` (our tables and routes go, nothing else).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use netproxy::apply::{ConntrackCommand, IptablesCommand, Nft, NftCommand, iptables_cleanup};
use netproxy::healthcheck::{self, HealthServers};
use netproxy::model::{NodeView, ServicePort, ServicePortName, build};
use netproxy::routes::{NetlinkRoutes, desired_routes};
use netproxy::rules::{Cidr, Config};
use netproxy::sync::{Backend, IptablesBackend, Next, NftBackend, State, Stats, Syncer, Timing};
use tokio::sync::Notify;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// nftables (default): one table of our own, verdict maps.
    Nftables,
    /// iptables-restore with chains of our own.
    Iptables,
}

/// Service proxy (kube-proxy role): routes Service traffic with nftables.
#[derive(Debug, Parser)]
#[command(name = "netproxy", version)]
struct Args {
    /// Kubeconfig to reach the API server (default: in-cluster or ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// This node's name, to tell local endpoints (default: the hostname).
    #[arg(long = "hostname-override", alias = "node-name")]
    hostname_override: Option<String>,
    /// Proxy mode.
    #[arg(long, value_enum, default_value = "nftables")]
    mode: Mode,
    /// Pod CIDR of the cluster: traffic to a cluster IP from outside it is masqueraded.
    #[arg(long)]
    cluster_cidr: Option<Cidr>,
    /// CIDRs (comma separated) of the local addresses that answer NodePorts, or `primary` for
    /// the Node's InternalIPs; default every local address.
    #[arg(long, value_delimiter = ',')]
    nodeport_addresses: Vec<String>,
    /// /healthz address.
    #[arg(long, default_value = "0.0.0.0:10256")]
    healthz_bind_address: String,
    /// /metrics address.
    #[arg(long, default_value = "127.0.0.1:10249")]
    metrics_bind_address: String,
    /// Full resync period (e.g. 30s, 1m).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    sync_period: Duration,
    /// Least time between two syncs (changes within it are batched).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    min_sync_period: Duration,
    /// Route every other Node's pod CIDR through its InternalIP (host-gw, as flannel's
    /// host-gw backend or kube-router); `--pod-routes=false` leaves routing to something else.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pod_routes: bool,
    /// Delete our tables and pod routes and exit.
    #[arg(long)]
    cleanup: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("bad duration unit in {s:?} (ms, s, m, h)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    daemon::init_logging();
    let args = Args::parse();
    if args.cleanup {
        // Both modes' rules go, as kube-proxy's --cleanup does; nothing else is touched.
        let table = NftCommand
            .delete_table()
            .context("deleting our nftables table")?;
        let chains = if which("iptables-restore") {
            iptables_cleanup(&IptablesCommand).context("deleting our iptables chains")?
        } else {
            0
        };
        let routes = netproxy::routes::cleanup(&mut NetlinkRoutes::new()?)
            .await
            .context("deleting our pod routes")?;
        tracing::info!(
            nftables_table = table,
            iptables_chains = chains,
            pod_routes = routes,
            "cleanup done"
        );
        return Ok(());
    }
    let node_name = match &args.hostname_override {
        Some(n) => n.clone(),
        None => nix::unistd::gethostname()
            .context("reading the hostname")?
            .to_string_lossy()
            .into_owned(),
    };
    let client = match &args.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("read {}", path.display()))?;
            let cfg = kube::Config::from_custom_kubeconfig(
                kc,
                &kube::config::KubeConfigOptions::default(),
            )
            .await?;
            kube::Client::try_from(cfg)?
        }
        None => kube::Client::try_default().await?,
    };

    let notify = Arc::new(Notify::new());
    let (services, w1) = reflect(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
        &notify,
    );
    let (slices, w2) = reflect(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default(),
        &notify,
    );
    let (nodes, w3) = reflect(
        Api::<Node>::all(client.clone()),
        watcher::Config::default().fields(&format!("metadata.name={node_name}")),
        &notify,
    );
    let mut watchers = vec![w1, w2, w3];
    let (stop_routes, routes_stopped) = tokio::sync::watch::channel(false);
    if args.pod_routes {
        let routes_notify = Arc::new(Notify::new());
        let (all_nodes, w4) = reflect(
            Api::<Node>::all(client.clone()),
            watcher::Config::default(),
            &routes_notify,
        );
        watchers.push(w4);
        let table = NetlinkRoutes::new().context("opening netlink for pod routes")?;
        watchers.push(tokio::spawn(pod_routes(
            table,
            node_name.clone(),
            all_nodes,
            routes_notify,
            args.sync_period,
            routes_stopped,
        )));
    }

    let mut shutdown = std::pin::pin!(daemon::shutdown_signal());
    // Never sync from empty caches: that would wipe the rules of a restarted proxy.
    tokio::select! {
        r = async {
            services.wait_until_ready().await?;
            slices.wait_until_ready().await?;
            nodes.wait_until_ready().await
        } => r.context("waiting for the watch caches")?,
        _ = &mut shutdown => return Ok(()),
    }

    let mut nodeport_cidrs = Vec::new();
    for a in &args.nodeport_addresses {
        if a == "primary" {
            let node = nodes.state().into_iter().next();
            for addr in node
                .iter()
                .filter_map(|n| n.status.as_ref()?.addresses.as_ref())
                .flatten()
                .filter(|a| a.type_ == "InternalIP")
            {
                if let Ok(c) = addr.address.parse::<Cidr>() {
                    nodeport_cidrs.push(c);
                }
            }
        } else if !a.is_empty() {
            nodeport_cidrs.push(a.parse::<Cidr>()?);
        }
    }
    let cfg = Config {
        cluster_cidr: args.cluster_cidr,
        nodeport_cidrs,
    };
    tracing::info!(node = %node_name, config = ?cfg, mode = ?args.mode, "netproxy starting");

    let stats = Arc::new(Mutex::new(Stats::default()));
    let shared = netproxy::http::Shared {
        stats: stats.clone(),
        sync_period: args.sync_period,
        health_timeout: args.sync_period * 2,
    };
    let (stop_http, http_stopped) = tokio::sync::watch::channel(false);
    for (addr, what) in [
        (&args.healthz_bind_address, "healthz"),
        (&args.metrics_bind_address, "metrics"),
    ] {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {what} on {addr}"))?;
        let mut stopped = http_stopped.clone();
        tokio::spawn(netproxy::http::serve(
            listener,
            shared.clone(),
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            },
        ));
    }

    let timing = Timing {
        min_sync: args.min_sync_period,
        sync_period: args.sync_period,
    };
    let node = NodeView { name: node_name };
    let backend: Box<dyn Backend> = match args.mode {
        Mode::Nftables => Box::new(NftBackend::new(cfg, Box::new(NftCommand))),
        Mode::Iptables => Box::new(IptablesBackend::new(cfg, Box::new(IptablesCommand))),
    };
    // Health check node ports (externalTrafficPolicy Local), on every address as kube-proxy.
    let health_stats = stats.clone();
    let (sync_period, health_timeout) = (args.sync_period, args.sync_period * 2);
    let mut health_servers = HealthServers::new(
        std::net::Ipv4Addr::UNSPECIFIED,
        Arc::new(move || {
            health_stats
                .lock()
                .is_ok_and(|s| s.healthy(Instant::now(), sync_period, health_timeout))
        }),
    );
    let mut syncer = Syncer::new(backend, Box::new(ConntrackCommand));
    let mut state = State::start();
    loop {
        match state.next(Instant::now(), &timing) {
            Next::Sync(kind) => {
                let started = Instant::now();
                let ports = snapshot(&services, &slices, &node);
                let result = tokio::task::block_in_place(|| syncer.sync(kind, ports));
                let took = started.elapsed();
                state = state.finished(kind, Instant::now(), result.is_ok());
                match &result {
                    Ok(r) => tracing::info!(
                        kind = ?r.kind,
                        took_ms = took.as_secs_f64() * 1000.0,
                        bytes = r.bytes,
                        changed = r.changed,
                        services = r.counts.services,
                        endpoints = r.counts.endpoints,
                        flows_flushed = r.flows_flushed,
                        "synced"
                    ),
                    Err(error) => tracing::error!(?kind, %error, "sync failed"),
                }
                if let Ok(mut s) = stats.lock() {
                    s.record(&result, took, Instant::now());
                    s.pending_since = state.pending_since();
                }
                health_servers
                    .sync(healthcheck::wanted(
                        &services.state(),
                        &slices.state(),
                        &node.name,
                    ))
                    .await;
            }
            Next::Wait(until) => {
                tokio::select! {
                    _ = notify.notified() => {
                        state = state.changed(Instant::now());
                        if let Ok(mut s) = stats.lock() {
                            s.pending_since = state.pending_since();
                        }
                    }
                    _ = tokio::time::sleep_until(until) => {}
                    _ = &mut shutdown => break,
                }
            }
        }
    }
    tracing::info!(
        "shutting down; rules and pod routes stay in place (use --cleanup to remove them)"
    );
    let _ = stop_http.send(true);
    let _ = stop_routes.send(true);
    for w in watchers {
        w.abort();
    }
    Ok(())
}

/// Keeps our pod routes equal to what the Nodes ask for: on every Node event and each
/// `period`, until `stopped` turns true (the routes stay).
async fn pod_routes(
    mut table: NetlinkRoutes,
    node_name: String,
    nodes: Store<Node>,
    notify: Arc<Notify>,
    period: Duration,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    tokio::select! {
        r = nodes.wait_until_ready() => if let Err(error) = r {
            tracing::error!(%error, "node watch cache never filled; no pod routes");
            return;
        },
        _ = stopped.wait_for(|s| *s) => return,
    }
    let mut last_unreachable = Vec::new();
    loop {
        let nodes_now: Vec<Node> = nodes.state().iter().map(|n| (**n).clone()).collect();
        let desired = desired_routes(&node_name, &nodes_now);
        match netproxy::routes::reconcile(&mut table, &desired).await {
            Ok(done) => {
                for route in &done.added {
                    tracing::info!(%route, "pod route added");
                }
                for route in &done.deleted {
                    tracing::info!(%route, "pod route deleted");
                }
                if done.not_on_link != last_unreachable {
                    for route in &done.not_on_link {
                        tracing::warn!(%route, "pod route skipped: gateway not on-link");
                    }
                    last_unreachable = done.not_on_link;
                }
                for (route, error) in &done.failed {
                    tracing::error!(%route, %error, "pod route failed");
                }
            }
            Err(error) => tracing::error!(%error, "reconciling pod routes failed"),
        }
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep(period) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
    }
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).exists()))
        || std::path::Path::new("/usr/sbin").join(program).exists()
}

fn snapshot(
    services: &Store<Service>,
    slices: &Store<EndpointSlice>,
    node: &NodeView,
) -> BTreeMap<ServicePortName, ServicePort> {
    build(&services.state(), &slices.state(), node)
}

/// A reflector store for `api`, fed by a task that wakes `notify` on every event.
fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    notify: &Arc<Notify>,
) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
    let notify = notify.clone();
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => notify.notify_one(),
                Err(error) => tracing::warn!(%kind, %error, "watch failed; retrying"),
            }
        }
    });
    (store, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_kube_proxy_flags() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("1y").is_err());
    }

    #[test]
    fn flags_have_upstream_defaults() {
        let a = Args::parse_from(["netproxy"]);
        assert_eq!(a.healthz_bind_address, "0.0.0.0:10256");
        assert_eq!(a.metrics_bind_address, "127.0.0.1:10249");
        assert_eq!(a.mode, Mode::Nftables);
        assert!(a.pod_routes);
        assert!(!Args::parse_from(["netproxy", "--pod-routes=false"]).pod_routes);
        let a = Args::parse_from(["netproxy", "--nodeport-addresses", "10.0.0.0/8,primary"]);
        assert_eq!(a.nodeport_addresses, vec!["10.0.0.0/8", "primary"]);
    }
}
