//! `cri`: the CRI v1 runtime daemon (`cri serve`), the per-container monitor (`cri monitor`,
//! run by the daemon itself) and image import (`cri import`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use cri::container::monitor;
use cri::container::oci::Runc;
use cri::image::{ImageStore, RegistriesFile, StoreOptions, import_offline};
use cri::runtime::{Runtime, RuntimeOptions};
use cri::sandbox::ipam::Ipv4Cidr;
use cri::sandbox::network::NftCommand;
use cri::service::image::CriImages;
use cri::service::runtime::RuntimeServiceImpl;
use cri::streaming::RuntimeBackend;
use cri::streaming::server::StreamingServer;
use k8s_cri::v1::runtime_service_server::RuntimeServiceServer;

#[derive(Parser, Debug)]
#[command(name = "cri", version, about = "A CRI v1 container runtime")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve CRI on a unix socket.
    Serve(ServeArgs),
    /// Import images into the store of a stopped daemon.
    Import(ImportArgs),
    /// Stop and remove every sandbox and container of a running daemon (`crictl rmp -af`).
    Reset {
        /// The daemon's socket.
        #[arg(long, default_value = "/run/cri-lite/cri.sock")]
        listen: PathBuf,
    },
    /// Internal: supervise one container (started by the daemon).
    #[command(hide = true)]
    Monitor {
        /// The monitor config.
        config: PathBuf,
    },
    /// Internal: the detached second stage of the monitor.
    #[command(hide = true, name = "monitor-stage2")]
    MonitorStage2 {
        /// The monitor config.
        config: PathBuf,
    },
    /// Internal: run a command on a terminal in a container and wait for it (streaming exec).
    #[command(hide = true, name = "exec-tty")]
    ExecTty {
        /// The OCI runtime binary.
        #[arg(long)]
        runtime: PathBuf,
        /// Its state root.
        #[arg(long)]
        root: PathBuf,
        /// Where the runtime sends the terminal.
        #[arg(long)]
        console_socket: PathBuf,
        /// The container.
        id: String,
        /// The command.
        #[arg(last = true, required = true)]
        args: Vec<String>,
    },
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// The CRI socket.
    #[arg(long, default_value = "/run/cri-lite/cri.sock")]
    listen: PathBuf,
    /// Persistent state: records, IPAM, images, writable layers.
    #[arg(long, default_value = "/var/lib/cri-lite")]
    root: PathBuf,
    /// Volatile state: bundles, pinned namespaces, root filesystem mounts.
    #[arg(long, default_value = "/run/cri-lite")]
    state: PathBuf,
    /// The OCI runtime binary (runc, crun, youki: anything with runc's command line).
    #[arg(long, default_value = "runc")]
    runtime: PathBuf,
    /// The node bridge.
    #[arg(long, default_value = "cri0")]
    bridge: String,
    /// The pod network of the whole cluster (not masqueraded).
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: Ipv4Cidr,
    /// This node's pod subnet (UpdateRuntimeConfig may set it instead).
    #[arg(long)]
    pod_cidr: Option<Ipv4Cidr>,
    /// Cgroup parent of sandboxes that name none.
    #[arg(long, default_value = "/cri-lite")]
    cgroup_root: String,
    /// A registry (`host` or `host:port`) reached over plain HTTP; loopback ones always are.
    #[arg(long)]
    insecure_registry: Vec<String>,
    /// A registries file (k3s `registries.yaml` format: mirrors, rewrites, auth, TLS per
    /// registry host); re-read when it changes, no restart needed.
    #[arg(long)]
    registries: Option<PathBuf>,
    /// Image tarballs and OCI layouts imported at start (default `<root>/preload`).
    #[arg(long)]
    preload_dir: Option<PathBuf>,
    /// The streaming server (Exec, Attach, PortForward URLs); port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    streaming_address: std::net::SocketAddr,
}

#[derive(clap::Args, Debug)]
struct ImportArgs {
    /// The daemon's `--root` (the daemon must not be running; use the preload directory then).
    #[arg(long, default_value = "/var/lib/cri-lite")]
    root: PathBuf,
    /// A registry reached over plain HTTP.
    #[arg(long)]
    insecure_registry: Vec<String>,
    /// OCI image layouts (directories or tarballs) and `docker save` tarballs.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

fn store_options(insecure: &[String]) -> StoreOptions {
    StoreOptions {
        insecure_registries: insecure.to_vec(),
        ..StoreOptions::default()
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Monitor { config } => monitor::run_first_stage(&config),
        Command::MonitorStage2 { config } => monitor::run_second_stage(&config),
        Command::Reset { listen } => match tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(reset(&listen)))
        {
            Ok(n) => {
                println!("removed {n} sandboxes");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cri reset: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::ExecTty {
            runtime,
            root,
            console_socket,
            id,
            args,
        } => monitor::run_tty_exec(&runtime, &root, &console_socket, &id, &args),
        Command::Import(args) => {
            let result = tokio::runtime::Runtime::new()
                .map_err(anyhow::Error::from)
                .and_then(|rt| {
                    rt.block_on(import_offline(
                        &args.root,
                        store_options(&args.insecure_registry),
                        &args.paths,
                    ))
                    .map_err(anyhow::Error::from)
                });
            match result {
                Ok(images) => {
                    for image in images {
                        println!("{} {}", image.id, image.repo_tags.join(","));
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("cri import: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve(args) => {
            daemon::init_logging();
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("cri: cannot start: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("cri: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let runtime_binary = which(&args.runtime).with_context(|| {
        format!(
            "OCI runtime {:?} not found (install runc or pass --runtime)",
            args.runtime
        )
    })?;
    let this = std::env::current_exe().context("locate this binary for the monitor")?;
    // The small monitor binary when installed beside this one; this binary's own `monitor`
    // mode otherwise.
    let small_monitor = this.with_file_name("cri-monitor");
    let runc = Runc {
        binary: runtime_binary,
        root: args.state.join("runc"),
        monitor: if small_monitor.is_file() {
            small_monitor
        } else {
            this
        },
    };
    let table = format!("cri-lite-{}", args.bridge);
    let options = RuntimeOptions {
        root: args.root.clone(),
        state: args.state.clone(),
        bridge: args.bridge.clone(),
        nft_table: table,
        cluster_cidr: args.cluster_cidr,
        pod_cidr: args.pod_cidr,
        cgroup_root: args.cgroup_root.clone(),
    };
    let mut store_options = store_options(&args.insecure_registry);
    if let Some(path) = &args.registries {
        store_options.registries =
            Some(Arc::new(RegistriesFile::load(path).with_context(|| {
                format!("load the registries file {}", path.display())
            })?));
    }
    let store = Arc::new(
        ImageStore::open_with(&args.root, store_options)
            .with_context(|| format!("open the image store under {}", args.root.display()))?,
    );
    let preload = args
        .preload_dir
        .clone()
        .unwrap_or_else(|| args.root.join("preload"));
    let preloaded = store
        .import_dir(&preload)
        .await
        .with_context(|| format!("import the preload directory {}", preload.display()))?;
    if !preloaded.is_empty() {
        tracing::info!(images = preloaded.len(), dir = %preload.display(), "preloaded images");
    }
    let runtime = Arc::new(Runtime::open(
        options,
        Arc::new(runc),
        store.clone(),
        Arc::new(NftCommand),
    )?);
    let streaming = StreamingServer::bind(
        args.streaming_address,
        Arc::new(RuntimeBackend::new(runtime.clone())),
    )
    .await
    .with_context(|| format!("serve streaming on {}", args.streaming_address))?;
    tracing::info!(address = %streaming.address(), "serving streaming");
    tokio::spawn(streaming.clone().serve(daemon::shutdown_signal()));
    let listener = cri::server::bind(&args.listen)
        .await
        .with_context(|| format!("listen on {}", args.listen.display()))?;
    tracing::info!(socket = %args.listen.display(), "serving CRI");
    tonic::transport::Server::builder()
        .add_service(RuntimeServiceServer::new(
            RuntimeServiceImpl::new(runtime).with_streaming(streaming),
        ))
        .add_service(CriImages::new(store).into_server())
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(listener),
            daemon::shutdown_signal(),
        )
        .await
        .context("serve CRI")?;
    let _ = std::fs::remove_file(&args.listen);
    tracing::info!("stopped; containers keep running under their monitors");
    Ok(())
}

fn which(binary: &std::path::Path) -> Option<PathBuf> {
    if binary.components().count() > 1 {
        return binary.is_file().then(|| binary.to_path_buf());
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(binary))
        .find(|p| p.is_file())
}

/// Removes every sandbox (and so every container) the daemon at `socket` holds.
async fn reset(socket: &std::path::Path) -> anyhow::Result<usize> {
    use k8s_cri::v1 as api;
    use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
    let path = socket.to_path_buf();
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .with_context(|| format!("connect to {}", socket.display()))?;
    let mut client = RuntimeServiceClient::new(channel);
    let sandboxes = client
        .list_pod_sandbox(api::ListPodSandboxRequest::default())
        .await?
        .into_inner()
        .items;
    for sandbox in &sandboxes {
        client
            .stop_pod_sandbox(api::StopPodSandboxRequest {
                pod_sandbox_id: sandbox.id.clone(),
            })
            .await
            .with_context(|| format!("stop sandbox {}", sandbox.id))?;
        client
            .remove_pod_sandbox(api::RemovePodSandboxRequest {
                pod_sandbox_id: sandbox.id.clone(),
            })
            .await
            .with_context(|| format!("remove sandbox {}", sandbox.id))?;
    }
    Ok(sandboxes.len())
}
