//! Debian's containerd (1.6) as a second CRI runtime, for the agent's e2e tests and
//! side-by-side measurements: its own
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

use crate::cri::{TestNetns, processes_matching, unix_channel, unmount_under};

/// A running containerd and what it owns.
pub struct Containerd {
    child: Option<Child>,
    /// Config, root, state, socket, CNI files, logs.
    pub dir: tempfile::TempDir,
    /// Its network namespace (pods get theirs from CNI, attached to a bridge in this one).
    pub netns: TestNetns,
    /// Its cgroup root (pods' cgroup parents go below it).
    pub cgroup_root: String,
}

impl Containerd {
    /// Starts containerd in `netns` with `sandbox_image` as the pause image and `registry`
    /// (host:port, plain HTTP) mirrored; waits for its socket.
    pub fn start(netns: TestNetns, registry: &str, sandbox_image: &str) -> Containerd {
        Self::start_with_streaming(netns, registry, sandbox_image, "127.0.0.1")
    }

    /// Like [`Containerd::start`], with its streaming server (exec, attach, port-forward) on
    /// `stream_address` (e.g. the namespace's end of [`TestNetns::link_to_host`], so a client
    /// on the host reaches it).
    pub fn start_with_streaming(
        netns: TestNetns,
        registry: &str,
        sandbox_image: &str,
        stream_address: &str,
    ) -> Containerd {
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
  stream_server_address = "{stream_address}"
  stream_server_port = "0"
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
        let cgroup_root = format!("/{}", netns.name);
        let mut containerd = Containerd {
            child: Some(child),
            dir,
            netns,
            cgroup_root,
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
        processes_matching(|cmdline| {
            cmdline
                .first()
                .is_some_and(|c| c.contains("containerd-shim"))
                && cmdline.iter().any(|a| a == &socket)
        })
    }

    /// A runtime client.
    pub async fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(unix_channel(&self.socket()).await)
    }

    /// An image client.
    pub async fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(unix_channel(&self.socket()).await)
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
        crate::cri::remove_cgroups(&self.cgroup_root);
    }
}

/// A whole test node on containerd: containerd in its own network namespace (CNI bridge; its
/// streaming server on the namespace's link to the host, so the agent reaches it), a registry
/// there with busybox and the pause image, and an agent registered with an API server.
/// Dropping it stops the agent, then containerd and its shims.
pub struct ContainerdNode {
    agent: Option<crate::Process>,
    /// The registry.
    pub registry: crate::cri::Registry,
    /// The runtime.
    pub containerd: Containerd,
    /// The node's name.
    pub name: String,
    /// The busybox image as pods name it.
    pub image: String,
    /// The kubelet API port (on 127.0.0.1).
    pub port: u16,
    kubeconfig: PathBuf,
    dir: tempfile::TempDir,
}

impl ContainerdNode {
    /// Starts containerd, the registry and an agent registered with `api`.
    pub fn start(api: &crate::ApiServer) -> ContainerdNode {
        let netns = TestNetns::create();
        let (_, stream_address) = netns.link_to_host();
        let registry = crate::cri::Registry::start_in(Some(&netns.path()), None).expect("registry");
        let layouts = crate::cri::layouts();
        registry.push(&layouts, "busybox", "busybox:1");
        registry.push(&layouts, "pause", "pause:3.10");
        let pause = format!("{}/pause:3.10", registry.address);
        let name = format!("ctrd-{}", &netns.name["cri-test-".len()..]);
        let containerd =
            Containerd::start_with_streaming(netns, &registry.address, &pause, &stream_address);
        let dir = tempfile::Builder::new()
            .prefix("agent-containerd")
            .tempdir()
            .expect("tempdir");
        let mut node = ContainerdNode {
            agent: None,
            image: format!("{}/busybox:1", registry.address),
            registry,
            containerd,
            name,
            port: crate::free_port(),
            kubeconfig: api.kubeconfig(),
            dir,
        };
        node.start_agent();
        node
    }

    /// Starts the agent (again).
    pub fn start_agent(&mut self) {
        let launch = crate::node::AgentLaunch {
            kubeconfig: &self.kubeconfig,
            name: &self.name,
            socket: &self.containerd.socket(),
            dir: self.dir.path(),
            port: self.port,
            cgroup_root: &self.containerd.cgroup_root,
            pod_cidr: "10.88.0.0/16",
            node_ip: "127.0.0.1",
        };
        self.agent = Some(launch.spawn(&[]));
    }

    /// Stops the agent with SIGTERM.
    pub fn stop_agent(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            agent.terminate(Duration::from_secs(10));
        }
    }

    /// The agent's log.
    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }
}

impl Drop for ContainerdNode {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- agent log ---\n{}", self.agent_log());
            eprintln!("--- containerd log ---\n{}", self.containerd.log());
        }
        if let Some(mut agent) = self.agent.take() {
            agent.kill9();
        }
    }
}
