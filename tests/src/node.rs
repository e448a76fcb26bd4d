//! A whole test node: a `cri` daemon in its own network namespace, a registry in that
//! namespace with busybox pushed, and an `agent` registered with a given API server. Dropping
//! it stops the agent and the daemon and removes what they created.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::cri::{Daemon, DaemonOptions, Registry, layouts};
use crate::{ApiServer, Process, workspace_bin};

/// A pod bound to `node` (no scheduler needed) with one container `main` running `script`
/// with `sh -c`, stopped within a second.
pub fn shell_pod(name: &str, node: &str, image: &str, script: &str) -> String {
    let script = script.replace('\'', "''");
    format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    command: [sh, -c, '{script}']
"
    )
}

/// Waits (30 s at most) until `api` shows the node `name` Ready.
pub fn wait_node_ready(api: &ApiServer, name: &str) {
    crate::wait_until("the node to be Ready", Duration::from_secs(30), || {
        api.jsonpath(
            &["node", name],
            "{.status.conditions[?(@.type==\"Ready\")].status}",
        ) == "True"
    });
}

/// How a test node's agent is started: its API server, name, runtime socket, directory (its
/// root dir, pod logs and log file go below), kubelet API port and cgroup root.
pub struct AgentLaunch<'a> {
    /// The API server's kubeconfig.
    pub kubeconfig: &'a Path,
    /// The node's name.
    pub name: &'a str,
    /// The CRI socket.
    pub socket: &'a Path,
    /// The node's directory (`root`, `logs`, `agent.log`).
    pub dir: &'a Path,
    /// The kubelet API port on 127.0.0.1.
    pub port: u16,
    /// The runtime's cgroup root (pods go below `<root>/kubepods`).
    pub cgroup_root: &'a str,
    /// `--pod-cidr`, or empty for the Node's.
    pub pod_cidr: &'a str,
    /// `--node-ip`, the InternalIP the Node reports.
    pub node_ip: &'a str,
}

impl AgentLaunch<'_> {
    /// Spawns the agent with `extra` flags after the usual ones; its log is `<dir>/agent.log`.
    pub fn spawn(&self, extra: &[&str]) -> Process {
        let mut cmd = Command::new(workspace_bin("agent"));
        cmd.arg("--kubeconfig")
            .arg(self.kubeconfig)
            .args(["--node-name", self.name])
            .arg("--runtime-endpoint")
            .arg(format!("unix://{}", self.socket.display()))
            .arg("--root-dir")
            .arg(self.dir.join("root"))
            .arg("--pod-log-dir")
            .arg(self.dir.join("logs"))
            .args(["--node-ip", self.node_ip])
            .args(["--cluster-dns", "10.96.0.10"])
            .args(["--address", "127.0.0.1", "--port", &self.port.to_string()])
            .arg("--cgroup-root")
            .arg(format!("{}/kubepods", self.cgroup_root))
            .env("RUST_LOG", "info");
        if !self.pod_cidr.is_empty() {
            cmd.args(["--pod-cidr", self.pod_cidr]);
        }
        cmd.args(extra);
        Process::spawn("agent", cmd, self.dir.join("agent.log")).expect("start the agent")
    }
}

/// A node with a runtime and an agent.
pub struct TestNode {
    /// The agent; `None` while stopped.
    agent: Option<Process>,
    /// The registry (dropped after the agent, before the runtime).
    pub registry: Registry,
    /// The runtime.
    pub cri: Daemon,
    /// The node's name.
    pub name: String,
    /// The busybox image as pods name it.
    pub image: String,
    /// The pod subnet given with `--pod-cidr` (empty: the agent takes the Node's).
    pub pod_cidr: String,
    /// The kubelet API port (on 127.0.0.1).
    pub port: u16,
    /// The address the agent reports as the Node's InternalIP (`--node-ip`).
    pub node_ip: String,
    kubeconfig: PathBuf,
    dir: tempfile::TempDir,
}

impl TestNode {
    /// Starts the runtime, the registry and an agent registered with `api`.
    pub fn start(api: &ApiServer) -> TestNode {
        Self::start_inner(api, "10.77.0.0/24", "127.0.0.1")
    }

    /// Like [`TestNode::start`], with an agent given no `--pod-cidr`: it takes the one node
    /// IPAM puts in the Node's spec.podCIDR (`pod_cidr` is empty).
    pub fn start_with_cidr_from_api(api: &ApiServer) -> TestNode {
        Self::start_inner(api, "", "127.0.0.1")
    }

    /// Like [`TestNode::start_with_cidr_from_api`], reporting `node_ip` as the InternalIP (an
    /// address the caller gives the runtime's namespace, e.g. on a link to another node).
    pub fn start_with_node_ip(api: &ApiServer, node_ip: &str) -> TestNode {
        Self::start_inner(api, "", node_ip)
    }

    fn start_inner(api: &ApiServer, pod_cidr: &str, node_ip: &str) -> TestNode {
        let cri = Daemon::start(DaemonOptions {
            pod_cidr: None,
            binary: None,
            streaming_on_host_link: true,
        });
        let registry = Registry::start_in(Some(&cri.netns.path()), None).expect("registry");
        registry.push(&layouts(), "busybox", "busybox:1");
        let image = format!("{}/busybox:1", registry.address);
        let name = format!("node-{}", &cri.netns.name["cri-test-".len()..]);
        let dir = tempfile::Builder::new()
            .prefix("agent")
            .tempdir()
            .expect("tempdir");
        let mut node = TestNode {
            agent: None,
            registry,
            cri,
            name,
            image,
            pod_cidr: pod_cidr.into(),
            port: crate::free_port(),
            node_ip: node_ip.into(),
            kubeconfig: api.kubeconfig(),
            dir,
        };
        node.start_agent();
        node
    }

    /// Waits (30 s at most) until `api` shows this node Ready.
    pub fn wait_ready(&self, api: &ApiServer) {
        wait_node_ready(api, &self.name);
    }

    /// Where container logs go.
    pub fn pod_log_dir(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    /// Starts the agent (again).
    pub fn start_agent(&mut self) {
        self.start_agent_with(&[]);
    }

    /// Starts the agent with `extra` flags after the usual ones.
    pub fn start_agent_with(&mut self, extra: &[&str]) {
        let launch = AgentLaunch {
            kubeconfig: &self.kubeconfig,
            name: &self.name,
            socket: &self.cri.socket(),
            dir: self.dir.path(),
            port: self.port,
            cgroup_root: &self.cri.cgroup_root,
            pod_cidr: &self.pod_cidr,
            node_ip: &self.node_ip,
        };
        self.agent = Some(launch.spawn(extra));
    }

    /// Kills the agent with SIGKILL (pods keep running).
    pub fn kill_agent(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            agent.kill9();
        }
    }

    /// Stops the agent with SIGTERM.
    pub fn stop_agent(&mut self) -> Option<std::process::ExitStatus> {
        self.agent
            .take()
            .and_then(|mut a| a.terminate(Duration::from_secs(10)))
    }

    /// The agent's log.
    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- agent log ---\n{}", self.agent_log());
            eprintln!("--- cri log ---\n{}", self.cri.log());
        }
        self.kill_agent();
    }
}
