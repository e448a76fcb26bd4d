//! Harness for the end-to-end tests: starts the real binaries (apiserver-lite, etcd) on free
//! loopback ports with temporary directories, runs real kubectl against them, hands out
//! kube-rs clients, and stops every process it started by PID when dropped, pass or fail.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub mod containerd;
pub mod cri;
pub mod netns;
pub mod node;

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The directory holding the workspace's built binaries (`target/debug`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // Tests live in target/<profile>/deps, binaries such as the benchmark in target/<profile>.
    let dir = exe.parent().expect("executable directory");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().unwrap_or(dir).to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// The path of a workspace binary, which must have been built (`cargo build --workspace`).
pub fn workspace_bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (hack/test.sh does)",
        path.display()
    );
    path
}

/// A child process killed (SIGTERM, then SIGKILL) when dropped.
pub struct Process {
    child: Option<Child>,
    name: String,
    log: PathBuf,
}

impl Process {
    /// Spawns `cmd` with output to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> anyhow::Result<Self> {
        let out =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Process {
            child: Some(child),
            name: name.into(),
            log,
        })
    }

    /// The PID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// The log so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Sends a signal.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        if let Some(c) = &self.child {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), sig);
        }
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, wait up to `grace` for exit; returns the exit status, SIGKILL after that.
    pub fn terminate(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "{} did not exit within {grace:?} of SIGTERM; killing",
            self.name
        );
        let _ = c.kill();
        c.wait().ok()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.terminate(Duration::from_secs(5));
        }
    }
}

/// Options of an apiserver-lite instance.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// `--storage` (default sqlite).
    pub storage: Option<String>,
    /// More flags.
    pub extra_args: Vec<String>,
}

/// A running apiserver-lite with its own data directory.
pub struct ApiServer {
    /// The process.
    pub process: Process,
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    /// The port.
    pub port: u16,
    /// The data directory (kept until the server is dropped).
    pub data_dir: tempfile::TempDir,
    options: ServerOptions,
}

impl ApiServer {
    /// Starts a server with default options and waits until it is ready.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(ServerOptions::default())
    }

    /// Starts a server and waits until it is ready.
    pub fn start_with(options: ServerOptions) -> anyhow::Result<Self> {
        let data_dir = tempfile::Builder::new()
            .prefix("apiserver-lite-e2e-")
            .tempdir()?;
        let port = free_port();
        let mut server = ApiServer {
            process: Self::spawn(data_dir.path(), port, &options)?,
            url: format!("https://127.0.0.1:{port}"),
            port,
            data_dir,
            options,
        };
        server.wait_ready(Duration::from_secs(30))?;
        Ok(server)
    }

    fn spawn(dir: &Path, port: u16, options: &ServerOptions) -> anyhow::Result<Process> {
        let mut cmd = Command::new(workspace_bin("apiserver-lite"));
        cmd.arg("--data-dir")
            .arg(dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"));
        if let Some(s) = &options.storage {
            cmd.arg("--storage").arg(s);
        }
        cmd.args(&options.extra_args);
        cmd.env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        );
        let log = dir.join(format!(
            "apiserver-{}.log",
            Instant::now().elapsed().as_nanos() + u128::from(port)
        ));
        Process::spawn("apiserver-lite", cmd, log)
    }

    /// Waits for `/readyz` to answer ok.
    pub fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !self.process.running() {
                bail!(
                    "apiserver-lite exited during start:\n{}",
                    self.process.log()
                );
            }
            if self.kubeconfig().exists() {
                let out = self.kubectl(&["get", "--raw", "/readyz"]);
                if out.success() && out.stdout.trim() == "ok" {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "apiserver-lite not ready within {timeout:?}:\n{}",
            self.process.log()
        )
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.path().join("admin.kubeconfig")
    }

    /// `kubectl get <what> -o jsonpath=<path>`, trimmed; empty when the get fails.
    pub fn jsonpath(&self, what: &[&str], path: &str) -> String {
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        let expr = format!("-o=jsonpath={path}");
        args.push(&expr);
        let run = self.kubectl(&args);
        if run.success() {
            run.ok().trim().to_string()
        } else {
            String::new()
        }
    }

    /// `kubectl apply -f -` of `manifest`, which must succeed.
    pub fn apply(&self, manifest: &str) {
        self.kubectl_stdin(&["apply", "-f", "-"], manifest).ok();
    }

    /// Runs `/usr/bin/kubectl` with the admin kubeconfig.
    pub fn kubectl(&self, args: &[&str]) -> Run {
        self.kubectl_with("kubectl", args, None)
    }

    /// Runs kubectl with standard input.
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Run {
        self.kubectl_with("kubectl", args, Some(stdin))
    }

    /// Runs a given kubectl binary (for version skew: `kubectl_version("1.27")`).
    pub fn kubectl_with(&self, binary: &str, args: &[&str], stdin: Option<&str>) -> Run {
        run_kubectl(binary, &self.kubeconfig(), args, stdin, &[])
    }

    /// SIGKILL the server (no shutdown path runs).
    pub fn kill9(&mut self) {
        self.process.kill9();
    }

    /// Starts the server again on the same port and data directory.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.process.terminate(Duration::from_secs(10));
        self.process = Self::spawn(self.data_dir.path(), self.port, &self.options)?;
        self.wait_ready(Duration::from_secs(30))
    }

    /// A kube-rs client with the admin credentials.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        client_for(&self.kubeconfig()).await
    }
}

/// The kubectl binary of a minor version, e.g. "1.27", from the Cloud SDK; `kubectl` for the
/// default one.
pub fn kubectl_version(minor: &str) -> String {
    format!("/usr/lib/google-cloud-sdk/bin/kubectl.{minor}")
}

/// Runs a kubectl binary with a kubeconfig and extra environment.
pub fn run_kubectl(
    binary: &str,
    kubeconfig: &Path,
    args: &[&str],
    stdin: Option<&str>,
    env: &[(&str, &str)],
) -> Run {
    let mut cmd = Command::new(binary);
    cmd.args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", kubeconfig.parent().unwrap_or(Path::new("/tmp")));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("running {binary}: {e}"));
    if let Some(input) = stdin {
        use std::io::Write;
        let mut pipe = child.stdin.take().expect("stdin pipe");
        pipe.write_all(input.as_bytes())
            .expect("writing kubectl stdin");
    }
    let out = child.wait_with_output().expect("kubectl output");
    Run::from(out)
}

/// Polls `f` every 100 ms until it holds; panics after 30 s naming `what`.
#[track_caller]
pub fn wait_for(what: &str, f: impl FnMut() -> bool) {
    wait_until(what, Duration::from_secs(30), f);
}

/// Polls `f` until it holds, panicking after `within`.
pub fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What a command printed.
#[derive(Debug, Clone)]
pub struct Run {
    /// Exit code (-1 when killed).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into(),
            stderr: String::from_utf8_lossy(&o.stderr).into(),
        }
    }
}

impl Run {
    /// Exit code 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// Panics with both streams unless the command succeeded; returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert!(
            self.success(),
            "command failed ({}):\nstdout: {}\nstderr: {}",
            self.code,
            self.stdout,
            self.stderr
        );
        &self.stdout
    }

    /// Panics unless the command failed; returns stderr.
    #[track_caller]
    pub fn fails(&self) -> &str {
        assert!(
            !self.success(),
            "command should have failed:\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        &self.stderr
    }
}

/// A running etcd on free loopback ports, removed when dropped.
pub struct Etcd {
    /// The process.
    pub process: Process,
    /// `http://127.0.0.1:<port>`.
    pub client_url: String,
    /// Data directory.
    pub dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts Debian's etcd and waits until it is healthy.
    pub fn start() -> anyhow::Result<Self> {
        let binary = ["/usr/bin/etcd", "/usr/local/bin/etcd"]
            .into_iter()
            .find(|p| Path::new(p).exists());
        let Some(binary) = binary else {
            bail!("etcd is not installed: apt-get install etcd-server (hack/test.sh does)");
        };
        let dir = tempfile::Builder::new().prefix("etcd-e2e-").tempdir()?;
        let (client, peer) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let mut cmd = Command::new(binary);
        cmd.arg("--name")
            .arg("default")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(format!("default={peer_url}"))
            .env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH);
        let mut process = Process::spawn("etcd", cmd, dir.path().join("etcd.log"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if !process.running() {
                bail!("etcd exited during start:\n{}", process.log());
            }
            if std::net::TcpStream::connect(("127.0.0.1", client)).is_ok()
                && process.log().contains("ready to serve client requests")
            {
                return Ok(Etcd {
                    process,
                    client_url,
                    dir,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("etcd not ready:\n{}", process.log())
    }

    /// The `--storage` value for apiserver-lite.
    pub fn storage_flag(&self) -> String {
        format!("etcd://{}", self.client_url.trim_start_matches("http://"))
    }
}

/// Plays the node agent for pods bound to a node, so controllers can be tested without one:
/// marks them Running and Ready through `pods/status` (when `ready` says so) and removes
/// the ones being deleted (grace period 0, as an agent confirms a deletion). Stops when
/// dropped.
pub struct FakeKubelet {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeKubelet {
    /// Starts marking pods of `server` ready when `ready(pod)` holds.
    pub fn start(
        server: &ApiServer,
        ready: impl Fn(&k8s_openapi::api::core::v1::Pod) -> bool + Send + 'static,
    ) -> Self {
        Self::start_inner(server, ready, false)
    }

    /// Like [`FakeKubelet::start`], and every pod bound to a node also gets a pod IP (distinct,
    /// from 10.88.0.0/16) and phase Running as soon as it is bound, ready or not, so it can be
    /// an endpoint of a Service.
    pub fn start_with_ips(
        server: &ApiServer,
        ready: impl Fn(&k8s_openapi::api::core::v1::Pod) -> bool + Send + 'static,
    ) -> Self {
        Self::start_inner(server, ready, true)
    }

    fn start_inner(
        server: &ApiServer,
        ready: impl Fn(&k8s_openapi::api::core::v1::Pod) -> bool + Send + 'static,
        assign_ips: bool,
    ) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let kubeconfig = server.kubeconfig();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let mut client = None;
                let mut next_ip = if assign_ips { Some(0u32) } else { None };
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    if client.is_none() {
                        client = client_for(&kubeconfig).await.ok();
                    }
                    if let Some(c) = &client {
                        // Errors (the server restarting, a pod gone) just mean: next round.
                        let _ = kubelet_round(c, &ready, next_ip.as_mut()).await;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
        });
        FakeKubelet {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A kube-rs client from a kubeconfig file.
pub async fn client_for(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    Ok(kube::Client::try_from(config)?)
}

async fn kubelet_round(
    client: &kube::Client,
    ready: &impl Fn(&k8s_openapi::api::core::v1::Pod) -> bool,
    mut next_ip: Option<&mut u32>,
) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
    let all: Api<Pod> = Api::all(client.clone());
    for pod in all.list(&ListParams::default()).await?.items {
        let on_node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty());
        let (Some(ns), Some(name)) = (&pod.metadata.namespace, &pod.metadata.name) else {
            continue;
        };
        if !on_node {
            continue;
        }
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        if pod.metadata.deletion_timestamp.is_some() {
            let _ = pods
                .delete(name, &DeleteParams::default().grace_period(0))
                .await;
            continue;
        }
        let has_ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_ref())
            .is_some();
        if let Some(n) = next_ip.as_deref_mut()
            && !has_ip
        {
            *n += 1;
            let ip = format!("10.88.{}.{}", *n / 250, *n % 250 + 1);
            let status = serde_json::json!({"status": {
                "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "127.0.0.1",
            }});
            pods.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
                .await?;
        }
        let is_ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if is_ready || !ready(&pod) {
            continue;
        }
        let now = jiff_now();
        let containers: Vec<serde_json::Value> = pod
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .map(|c| {
                serde_json::json!({
                    "name": c.name, "image": c.image, "imageID": "", "ready": true,
                    "started": true, "restartCount": 0,
                    "state": {"running": {"startedAt": now}},
                })
            })
            .collect();
        let status = serde_json::json!({"status": {
            "phase": "Running",
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                {"type": "Ready", "status": "True", "lastTransitionTime": now},
            ],
            "containerStatuses": containers,
            "startTime": now,
        }});
        pods.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
            .await?;
    }
    Ok(())
}

/// Now, RFC 3339 in seconds, as the API writes times.
fn jiff_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    k8s_openapi::jiff::Timestamp::from_second(i64::try_from(secs).unwrap_or(0))
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}
