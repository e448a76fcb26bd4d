//! Debian's containerd (1.6) as a second CRI runtime, for side-by-side measurements: its own
//! config, root, state, socket, runc root and CNI configuration (bridge, host-local with its
//! own data directory, portmap) under a temporary directory, inside a network namespace of its
//! own, pulling through a mirror entry for a plain-HTTP local registry. Dropping it stops
//! containerd and its shims, deletes leftover containers and unmounts what it mounted.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

use super::daemon::{TestNetns, unmount_under};

/// A running containerd and what it owns.
pub struct Containerd {
    child: Option<Child>,
    /// Config, root, state, socket, CNI files, logs.
    pub dir: tempfile::TempDir,
    /// Its network namespace (pods get theirs from CNI, attached to a bridge in this one).
    pub netns: TestNetns,
}

impl Containerd {
    /// Starts containerd in `netns` with `sandbox_image` as the pause image and `registry`
    /// (host:port, plain HTTP) mirrored; waits for its socket.
    pub fn start(netns: TestNetns, registry: &str, sandbox_image: &str) -> Containerd {
        let dir = tempfile::Builder::new()
            .prefix("containerd-bench")
            .tempdir()
            .expect("tempdir");
        let path = dir.path();
        let net_d = path.join("net.d");
        std::fs::create_dir_all(&net_d).expect("net.d");
        std::fs::write(
            net_d.join("10-bridge.conflist"),
            format!(
                r#"{{"cniVersion": "0.4.0", "name": "bench", "plugins": [
  {{"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {{"type": "host-local", "dataDir": "{}", "ranges": [[{{"subnet": "10.88.0.0/16"}}]],
            "routes": [{{"dst": "0.0.0.0/0"}}]}}}},
  {{"type": "portmap", "capabilities": {{"portMappings": true}}}}
]}}"#,
                path.join("cni-ipam").display()
            ),
        )
        .expect("CNI config");
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{socket}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  disable_hugetlb_controller = true
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      Root = "{runc_root}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{net_d}"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."{registry}"]
    endpoint = ["http://{registry}"]
"#,
            root = path.join("root").display(),
            state = path.join("state").display(),
            socket = path.join("containerd.sock").display(),
            runc_root = path.join("runc").display(),
            net_d = net_d.display(),
        );
        let config_path = path.join("config.toml");
        std::fs::write(&config_path, config).expect("containerd config");
        let log = std::fs::File::create(path.join("containerd.log")).expect("log");
        let child = Command::new("nsenter")
            .arg(format!("--net={}", netns.path().display()))
            .args(["containerd", "--config"])
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start containerd (apt-get install containerd containernetworking-plugins)");
        let mut containerd = Containerd {
            child: Some(child),
            dir,
            netns,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(containerd.socket()).is_err() {
            if let Some(status) = containerd
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("containerd exited ({status}): {}", containerd.log());
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not listen: {}",
                containerd.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        containerd
    }

    /// The CRI socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// The containerd process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its shims: containerd-shim processes started with its socket address.
    pub fn shim_pids(&self) -> Vec<u32> {
        let socket = self.socket().display().to_string();
        super::processes_matching(|cmdline| {
            cmdline
                .first()
                .is_some_and(|c| c.contains("containerd-shim"))
                && cmdline.iter().any(|a| a == &socket)
        })
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

impl Drop for Containerd {
    fn drop(&mut self) {
        let shims = self.shim_pids();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let runc_root = self.dir.path().join("runc");
        for namespace in std::fs::read_dir(&runc_root)
            .into_iter()
            .flatten()
            .flatten()
        {
            for container in std::fs::read_dir(namespace.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(namespace.path())
                    .args(["delete", "--force"])
                    .arg(container.file_name())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        for pid in shims {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        unmount_under(self.dir.path());
    }
}
