//! The node side for tests: a `cri serve` daemon inside a network namespace of its own (so its
//! bridge, veths and nftables table never touch the host), the test images built by
//! `hack/images`, a real docker-registry on a free loopback port (in that namespace or the
//! host's), and a gRPC channel over a unix socket. Dropping a daemon kills it and removes
//! everything it created: containers (through runc), mounts, cgroups and the namespace.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

use crate::free_port;

/// The busybox and pause image layouts, built once per target directory by `hack/images`
/// (which serialises concurrent builds itself).
pub fn layouts() -> PathBuf {
    let out = crate::bin_dir().join("tmp").join("cri-images");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/images");
    let status = Command::new(&script)
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .expect("run hack/images");
    assert!(status.success(), "hack/images failed");
    out
}

/// A network namespace made with `ip netns add`, deleted on drop.
pub struct TestNetns {
    /// Its name.
    pub name: String,
}

impl TestNetns {
    /// Creates a fresh namespace with loopback up.
    pub fn create() -> TestNetns {
        let name = format!(
            "cri-test-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..10]
        );
        run("ip", &["netns", "add", &name]);
        run("ip", &["-n", &name, "link", "set", "lo", "up"]);
        TestNetns { name }
    }

    /// Its path.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Joins the namespace to the host with a veth pair on a /30 of its own in 169.254.0.0/16;
    /// returns (host address, namespace address). The pair goes with the namespace.
    pub fn link_to_host(&self) -> (String, String) {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let index = (std::process::id().wrapping_mul(7) + n) % 16000 + 64;
        let base = index * 4;
        let (third, fourth) = (base / 256, base % 256);
        let host_ip = format!("169.254.{third}.{}", fourth + 1);
        let ns_ip = format!("169.254.{third}.{}", fourth + 2);
        let host_if = format!("kv{index}h");
        let ns_if = format!("kv{index}n");
        run(
            "ip",
            &[
                "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
            ],
        );
        run("ip", &["link", "set", &ns_if, "netns", &self.name]);
        run(
            "ip",
            &["addr", "add", &format!("{host_ip}/30"), "dev", &host_if],
        );
        run("ip", &["link", "set", &host_if, "up"]);
        run(
            "ip",
            &[
                "-n",
                &self.name,
                "addr",
                "add",
                &format!("{ns_ip}/30"),
                "dev",
                &ns_if,
            ],
        );
        run("ip", &["-n", &self.name, "link", "set", &ns_if, "up"]);
        (host_ip, ns_ip)
    }

    /// Runs a command inside the namespace, returning its output.
    pub fn exec(&self, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .expect("run ip netns exec")
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program).args(args).status().expect(program);
    assert!(status.success(), "{program} {args:?} failed");
}

/// How to start the daemon.
#[derive(Clone)]
pub struct DaemonOptions {
    /// `--pod-cidr`, if any.
    pub pod_cidr: Option<String>,
    /// The `cri` binary (default: the workspace's).
    pub binary: Option<PathBuf>,
    /// Serve streaming URLs on a veth to the host (so an agent on the host reaches them)
    /// instead of the namespace's loopback.
    pub streaming_on_host_link: bool,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        DaemonOptions {
            pod_cidr: Some("10.77.0.0/24".into()),
            binary: None,
            streaming_on_host_link: false,
        }
    }
}

/// A running daemon and what it owns.
pub struct Daemon {
    child: Option<Child>,
    /// Its temporary directory (socket, root, state, logs).
    pub dir: tempfile::TempDir,
    /// Its network namespace.
    pub netns: TestNetns,
    /// Its cgroup root.
    pub cgroup_root: String,
    /// `--streaming-address`, when not the default.
    pub streaming_address: Option<String>,
    options: DaemonOptions,
}

impl Daemon {
    /// Starts a daemon and waits for its socket.
    pub fn start(options: impl Into<DaemonOptions>) -> Daemon {
        let options = options.into();
        let dir = tempfile::Builder::new()
            .prefix("cri-test")
            .tempdir()
            .expect("tempdir");
        let netns = TestNetns::create();
        let cgroup_root = format!("/{}", netns.name);
        let streaming_address = options
            .streaming_on_host_link
            .then(|| format!("{}:0", netns.link_to_host().1));
        let mut daemon = Daemon {
            child: None,
            dir,
            netns,
            cgroup_root,
            streaming_address,
            options,
        };
        daemon.spawn();
        daemon
    }

    /// The socket path.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("cri.sock")
    }

    /// The persistent root.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// The volatile state directory.
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The registries file the daemon reads (`--registries`); empty at start, and re-read by
    /// the daemon when a test writes it.
    pub fn registries(&self) -> PathBuf {
        self.dir.path().join("registries.yaml")
    }

    /// A directory for pod logs.
    pub fn logs(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))
            .expect("daemon log");
        if !self.registries().exists() {
            std::fs::write(self.registries(), "").expect("write the registries file");
        }
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", self.netns.path().display()))
            .arg(
                self.options
                    .binary
                    .clone()
                    .unwrap_or_else(|| crate::workspace_bin("cri")),
            )
            .arg("serve")
            .arg("--listen")
            .arg(self.socket())
            .arg("--root")
            .arg(self.root())
            .arg("--state")
            .arg(self.state())
            .args(["--bridge", "cri0", "--cluster-cidr", "10.77.0.0/16"])
            .arg("--cgroup-root")
            .arg(&self.cgroup_root)
            .arg("--registries")
            .arg(self.registries());
        if let Some(cidr) = &self.options.pod_cidr {
            command.args(["--pod-cidr", cidr]);
        }
        if let Some(address) = &self.streaming_address {
            command.args(["--streaming-address", address]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start cri serve");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(self.socket()).is_err() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("cri serve exited ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "cri serve did not listen: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its containers' monitors: `cri monitor` processes with configs under its state.
    pub fn monitor_pids(&self) -> Vec<u32> {
        let state = self.state().display().to_string();
        processes_matching(|cmdline| {
            cmdline.get(1).is_some_and(|a| a.starts_with("monitor"))
                && cmdline.get(2).is_some_and(|a| a.starts_with(&state))
        })
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Kills the daemon with SIGKILL (containers and monitors stay).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the daemon with SIGTERM and returns how long it took.
    pub fn terminate(&mut self) -> Duration {
        let started = Instant::now();
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
        }
        started.elapsed()
    }

    /// Starts the daemon again on the same state.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// A runtime client.
    pub async fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(unix_channel(&self.socket()).await)
    }

    /// The sandboxes and containers the daemon holds (from a thread that is not async).
    pub fn runtime_objects(&self) -> (Vec<k8s_cri::v1::PodSandbox>, Vec<k8s_cri::v1::Container>) {
        let socket = self.socket();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let mut client = RuntimeServiceClient::new(unix_channel(&socket).await);
                let sandboxes = client
                    .list_pod_sandbox(k8s_cri::v1::ListPodSandboxRequest::default())
                    .await
                    .expect("list sandboxes")
                    .into_inner()
                    .items;
                let containers = client
                    .list_containers(k8s_cri::v1::ListContainersRequest::default())
                    .await
                    .expect("list containers")
                    .into_inner()
                    .containers;
                (sandboxes, containers)
            })
        })
        .join()
        .expect("list the runtime")
    }

    /// An image client.
    pub async fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(unix_channel(&self.socket()).await)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        let runc_root = self.state().join("runc");
        if let Ok(entries) = std::fs::read_dir(&runc_root) {
            for entry in entries.flatten() {
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(&runc_root)
                    .args(["delete", "--force"])
                    .arg(entry.file_name())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        unmount_under(self.dir.path());
        remove_cgroups(&self.cgroup_root);
    }
}

/// Unmounts every mount point under `dir`, deepest first.
pub fn unmount_under(dir: &Path) {
    let mounts = mounts_under(dir);
    for mount in mounts.iter().rev() {
        let _ = nix::mount::umount2(mount.as_path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Mount points under `dir`, in mount order.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let prefix = dir.to_path_buf();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(PathBuf::from))
        .filter(|p| p.starts_with(&prefix))
        .collect()
}

/// Removes a cgroup subtree in every v1 hierarchy, leaves first.
pub fn remove_cgroups(root: &str) {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for h in hierarchies.flatten() {
        remove_cgroup_tree(&h.path().join(root.trim_start_matches('/')));
    }
}

fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Cgroup directories left below `root` (the daemon's own parent) in any hierarchy.
pub fn cgroups_left(root: &str) -> Vec<PathBuf> {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return vec![];
    };
    hierarchies
        .flatten()
        .filter_map(|h| std::fs::read_dir(h.path().join(root.trim_start_matches('/'))).ok())
        .flat_map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A docker-registry process on 127.0.0.1, killed when dropped.
pub struct Registry {
    child: Child,
    /// host:port.
    pub address: String,
    credentials: Option<(String, String)>,
    push_cert_dir: Option<PathBuf>,
    netns: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

/// How to start a [`Registry`].
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// The network namespace (the host's when `None`).
    pub netns: Option<PathBuf>,
    /// htpasswd credentials the registry requires.
    pub credentials: Option<(String, String)>,
    /// Serve HTTPS with this certificate and key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// With `tls`: require client certificates signed by this CA (PEM); pushes present the
    /// certificate directory's `*.cert`/`*.key` (skopeo's `--dest-cert-dir` layout).
    pub client_auth: Option<ClientAuth>,
}

/// Client-certificate authentication of a TLS [`Registry`].
#[derive(Debug, Clone)]
pub struct ClientAuth {
    /// The CA client certificates must chain to.
    pub ca: PathBuf,
    /// A directory with a client certificate and key for pushing.
    pub push_cert_dir: PathBuf,
}

/// `program`, run inside the network namespace at `netns` when one is given.
pub fn command_in(netns: Option<&Path>, program: &str) -> Command {
    match netns {
        Some(ns) => {
            let mut command = Command::new("nsenter");
            command.arg(format!("--net={}", ns.display())).arg(program);
            command
        }
        None => Command::new(program),
    }
}

impl Registry {
    /// Starts a registry; with `credentials`, it requires them (htpasswd, bcrypt). `None` if
    /// htpasswd files cannot be made here.
    pub fn start(credentials: Option<(&str, &str)>) -> Option<Registry> {
        Self::start_in(None, credentials)
    }

    /// Starts a registry on the loopback of the network namespace at `netns` (the host's when
    /// `None`); pushes go there too.
    pub fn start_in(netns: Option<&Path>, credentials: Option<(&str, &str)>) -> Option<Registry> {
        Self::start_with(RegistryOptions {
            netns: netns.map(Path::to_path_buf),
            credentials: credentials.map(|(u, p)| (u.to_string(), p.to_string())),
            ..RegistryOptions::default()
        })
    }

    /// Starts a registry as `options` say. Its access log (one line per request) is kept for
    /// [`Registry::requests`].
    pub fn start_with(options: RegistryOptions) -> Option<Registry> {
        let netns = options.netns.as_deref();
        let credentials = options
            .credentials
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()));
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let address = format!("127.0.0.1:{port}");
        let client_cas = match &options.client_auth {
            Some(auth) => format!(", clientcas: [{}]", auth.ca.display()),
            None => String::new(),
        };
        let tls = match &options.tls {
            Some((cert, key)) => format!(
                ", tls: {{certificate: {}, key: {}{client_cas}}}",
                cert.display(),
                key.display()
            ),
            None => String::new(),
        };
        let mut config = format!(
            "version: 0.1\nlog: {{level: warn, accesslog: {{disabled: false}}}}\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp: {{addr: {address}{tls}}}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = credentials {
            let hash = bcrypt(password)?;
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{hash}\n")).expect("write htpasswd");
            config.push_str(&format!(
                "auth: {{htpasswd: {{realm: test, path: {}}}}}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log file");
        let child = command_in(netns, "docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start docker-registry (apt-get install docker-registry)");
        let registry = Registry {
            child,
            address,
            credentials: credentials.map(|(u, p)| (u.to_string(), p.to_string())),
            push_cert_dir: options.client_auth.map(|auth| auth.push_cert_dir),
            netns: netns.map(Path::to_path_buf),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !registry.listening() {
            assert!(Instant::now() < deadline, "registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(registry)
    }

    fn listening(&self) -> bool {
        match &self.netns {
            None => TcpStream::connect(&self.address).is_ok(),
            Some(_) => {
                let (host, port) = self
                    .address
                    .split_once(':')
                    .unwrap_or((&self.address, "80"));
                command_in(self.netns.as_deref(), "bash")
                    .args(["-c", &format!("echo > /dev/tcp/{host}/{port}")])
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            }
        }
    }

    /// How many requests the access log shows whose request line contains `needle` (e.g.
    /// `"GET /v2/busybox/blobs/"`).
    pub fn requests(&self, needle: &str) -> usize {
        std::fs::read_to_string(self._dir.path().join("registry.log"))
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains(needle) && line.contains("HTTP/"))
            .count()
    }

    /// Pushes `name:1` from the layouts as `<registry>/<as_name>`.
    pub fn push(&self, layouts: &Path, name: &str, as_name: &str) {
        let mut command = command_in(self.netns.as_deref(), "skopeo");
        command.args(["copy", "--quiet", "--dest-tls-verify=false"]);
        if let Some((user, password)) = &self.credentials {
            command.arg(format!("--dest-creds={user}:{password}"));
        }
        if let Some(dir) = &self.push_cert_dir {
            command.arg(format!("--dest-cert-dir={}", dir.display()));
        }
        let status = command
            .arg(format!("oci:{}:{name}:1", layouts.join(name).display()))
            .arg(format!("docker://{}/{as_name}", self.address))
            .status()
            .expect("run skopeo");
        assert!(status.success(), "skopeo push of {name} failed");
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bcrypt hash of `password` for htpasswd, from python3's crypt module, if it has one.
pub fn bcrypt(password: &str) -> Option<String> {
    let output = Command::new("python3")
        .args([
            "-W",
            "ignore",
            "-c",
            "import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH)))",
            password,
        ])
        .output()
        .ok()?;
    let hash = String::from_utf8(output.stdout).ok()?.trim().to_string();
    hash.starts_with("$2").then_some(hash)
}

/// A gRPC channel to the server on the unix socket at `path`.
pub async fn unix_channel(path: &Path) -> tonic::transport::Channel {
    let path = path.to_path_buf();
    tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .expect("connect to the CRI socket")
}

/// Pids of the processes whose command line (split at NULs) satisfies `matches`.
pub fn processes_matching(matches: impl Fn(&[String]) -> bool) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let args: Vec<String> = raw
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            matches(&args)
        })
        .collect()
}

/// A process's resident set size in KiB (VmRSS), if it still runs.
pub fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A process's resident memory split as /proc/<pid>/status does, in KiB: (anonymous, file
/// backed, shared memory).
pub fn rss_parts_kib(pid: u32) -> Option<(u64, u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some((field("RssAnon:")?, field("RssFile:")?, field("RssShmem:")?))
}

/// A process's proportional set size in KiB (shared pages divided among their users).
pub fn pss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
