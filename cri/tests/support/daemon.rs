//! A `cri serve` daemon for tests, inside a network namespace of its own (so its bridge, veths
//! and nftables table never touch the host), with its own socket, state, cgroup root and
//! temporary directory. Dropping it kills the daemon and removes everything it created:
//! containers (through runc), monitors, mounts, cgroups and the namespace.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

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
}

impl Default for DaemonOptions {
    fn default() -> Self {
        DaemonOptions {
            pod_cidr: Some("10.77.0.0/24".into()),
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
    options: DaemonOptions,
}

impl Daemon {
    /// Starts a daemon and waits for its socket.
    pub fn start(options: DaemonOptions) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("cri-test")
            .tempdir()
            .expect("tempdir");
        let netns = TestNetns::create();
        let cgroup_root = format!("/{}", netns.name);
        let mut daemon = Daemon {
            child: None,
            dir,
            netns,
            cgroup_root,
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
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", self.netns.path().display()))
            .arg(env!("CARGO_BIN_EXE_cri"))
            .arg("serve")
            .arg("--listen")
            .arg(self.socket())
            .arg("--root")
            .arg(self.root())
            .arg("--state")
            .arg(self.state())
            .args(["--bridge", "cri0", "--cluster-cidr", "10.77.0.0/16"])
            .arg("--cgroup-root")
            .arg(&self.cgroup_root);
        if let Some(cidr) = &self.options.pod_cidr {
            command.args(["--pod-cidr", cidr]);
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
        super::processes_matching(|cmdline| {
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
        RuntimeServiceClient::new(super::unix_channel(&self.socket()).await)
    }

    /// An image client.
    pub async fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(super::unix_channel(&self.socket()).await)
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
