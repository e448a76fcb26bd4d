//! The runtime's state and operations, independent of gRPC: sandboxes and containers recorded
//! on disk (rebuilt at start, so a daemon restart loses nothing), their namespaces, network,
//! root filesystems and OCI containers. Side effects go through the traits it is given:
//! [`OciRuntime`], [`ImageSource`], [`Firewall`].

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use k8s_cri::v1::{ContainerConfig, PodSandboxConfig};
use tracing::{info, warn};

use crate::container::monitor::ExitRecord;
use crate::container::oci::{Created, ExecOutput, OciError, OciRuntime};
use crate::container::spec::{self, ImageDefaults, SandboxFiles, SpecInput};
use crate::container::{ContainerRecord, mount_rootfs, unmount_rootfs};
use crate::persist;
use crate::sandbox::ipam::{Ipam, Ipv4Cidr};
use crate::sandbox::namespaces::{self, NamespaceKind};
use crate::sandbox::network::{self, Firewall, HostPortMapping, NodeRules};
use crate::sandbox::{SandboxRecord, render_hosts, render_resolv_conf};

/// An image the runtime can run.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// Image id (config digest).
    pub id: String,
    /// How to run it.
    pub defaults: ImageDefaults,
}

/// Where images come from: the image store, or a fake in tests.
pub trait ImageSource: Send + Sync {
    /// Finds a local image by reference or id.
    fn resolve(&self, reference: &str) -> Option<ResolvedImage>;
    /// Marks `image_id` in use by `holder`; returns its unpacked layers, lowest first.
    fn lease(&self, holder: &str, image_id: &str) -> Result<Vec<PathBuf>, String>;
    /// Ends `holder`'s use.
    fn release(&self, holder: &str);
}

/// Why an operation failed; the service maps each to a gRPC code.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The caller asked for something impossible.
    #[error("{0}")]
    Invalid(String),
    /// An object does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The runtime is not in a state to do it.
    #[error("{0}")]
    Precondition(String),
    /// The OCI runtime failed.
    #[error(transparent)]
    Oci(#[from] OciError),
    /// Anything else on the host.
    #[error("{0}")]
    Host(String),
}

fn host<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> RuntimeError + '_ {
    move |e| RuntimeError::Host(format!("{what}: {e}"))
}

/// Where things go and how the node network looks.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Persistent records (sandboxes, containers, IPAM, writable layers).
    pub root: PathBuf,
    /// Volatile state (bundles, pinned namespaces, root filesystem mounts).
    pub state: PathBuf,
    /// The node bridge.
    pub bridge: String,
    /// The nftables table of this instance.
    pub nft_table: String,
    /// The cluster's pod network.
    pub cluster_cidr: Ipv4Cidr,
    /// This node's pod subnet, until UpdateRuntimeConfig gives one.
    pub pod_cidr: Option<Ipv4Cidr>,
    /// Cgroup parent for sandboxes that name none.
    pub cgroup_root: String,
}

/// A container's state as CRI reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Exited, with how.
    Exited(ExitRecord),
    /// Unknown (its monitor is gone without a record).
    Unknown,
}

/// The runtime.
pub struct Runtime {
    opts: RuntimeOptions,
    oci: Arc<dyn OciRuntime>,
    images: Arc<dyn ImageSource>,
    firewall: Arc<dyn Firewall>,
    /// The ruleset last applied, so a pod that changes no rule (no hostPort) costs no `nft`.
    applied_rules: Mutex<Option<String>>,
    pod_cidr: RwLock<Option<Ipv4Cidr>>,
    sandboxes: Mutex<BTreeMap<String, SandboxRecord>>,
    containers: Mutex<BTreeMap<String, ContainerRecord>>,
    network_lock: tokio::sync::Mutex<()>,
    min_oom_score_adj: i32,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

fn now_nanos() -> i64 {
    jiff::Timestamp::now().as_nanosecond() as i64
}

fn new_id() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Runtime {
    /// Opens the runtime, rebuilding its records from disk.
    pub fn open(
        opts: RuntimeOptions,
        oci: Arc<dyn OciRuntime>,
        images: Arc<dyn ImageSource>,
        firewall: Arc<dyn Firewall>,
    ) -> Result<Self, RuntimeError> {
        for dir in [
            opts.root.join("sandboxes"),
            opts.root.join("containers"),
            opts.state.clone(),
        ] {
            std::fs::create_dir_all(&dir).map_err(host("create state directories"))?;
        }
        let mut sandboxes = BTreeMap::new();
        for record in load_records::<SandboxRecord>(&opts.root.join("sandboxes"))? {
            sandboxes.insert(record.id.clone(), record);
        }
        let mut containers = BTreeMap::new();
        for record in load_records::<ContainerRecord>(&opts.root.join("containers"))? {
            containers.insert(record.id.clone(), record);
        }
        let pod_cidr = persist::read_json::<String>(&opts.root.join("pod-cidr.json"))
            .ok()
            .flatten()
            .and_then(|s| s.parse().ok())
            .or(opts.pod_cidr);
        let min_oom_score_adj = std::fs::read_to_string("/proc/self/oom_score_adj")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        info!(
            sandboxes = sandboxes.len(),
            containers = containers.len(),
            "runtime state loaded"
        );
        Ok(Runtime {
            opts,
            oci,
            images,
            firewall,
            applied_rules: Mutex::new(None),
            pod_cidr: RwLock::new(pod_cidr),
            sandboxes: Mutex::new(sandboxes),
            containers: Mutex::new(containers),
            network_lock: tokio::sync::Mutex::new(()),
            min_oom_score_adj,
        })
    }

    /// The OCI runtime's version line.
    pub async fn oci_version(&self) -> Result<String, RuntimeError> {
        Ok(self.oci.version().await?)
    }

    /// The pod subnet, if known.
    pub fn pod_cidr(&self) -> Option<Ipv4Cidr> {
        *self
            .pod_cidr
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets the pod subnet (UpdateRuntimeConfig). Changing it while pods hold addresses of the
    /// old one is refused.
    pub async fn set_pod_cidr(&self, cidr: &str) -> Result<(), RuntimeError> {
        if cidr.is_empty() {
            return Ok(());
        }
        let first = cidr.split(',').next().unwrap_or(cidr).trim();
        let parsed: Ipv4Cidr = first.parse().map_err(RuntimeError::Invalid)?;
        if self.pod_cidr() == Some(parsed) {
            return Ok(());
        }
        let live = lock(&self.sandboxes)
            .values()
            .any(|s| s.ip.is_some() && s.ready);
        if live && self.pod_cidr().is_some() {
            return Err(RuntimeError::Precondition(format!(
                "pod CIDR {} is in use by running sandboxes; cannot change it to {parsed}",
                self.pod_cidr().map(|c| c.to_string()).unwrap_or_default()
            )));
        }
        persist::write_json(&self.opts.root.join("pod-cidr.json"), &parsed.to_string())
            .map_err(host("record the pod CIDR"))?;
        *self
            .pod_cidr
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(parsed);
        info!(pod_cidr = %parsed, "pod CIDR set");
        Ok(())
    }

    /// Whether pod networking can work, with the reason when not.
    pub fn network_ready(&self) -> Result<(), String> {
        match self.pod_cidr() {
            Some(_) => Ok(()),
            None => {
                Err("no pod CIDR configured: pass --pod-cidr or call UpdateRuntimeConfig".into())
            }
        }
    }

    fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.opts.state.join("sandboxes").join(id)
    }

    fn sandbox_record_path(&self, id: &str) -> PathBuf {
        self.opts
            .root
            .join("sandboxes")
            .join(id)
            .join("record.json")
    }

    fn container_state_dir(&self, id: &str) -> PathBuf {
        self.opts.state.join("containers").join(id)
    }

    fn container_root_dir(&self, id: &str) -> PathBuf {
        self.opts.root.join("containers").join(id)
    }

    /// A container's writable layer (the overlay upper directory).
    pub fn writable_layer_dir(&self, id: &str) -> PathBuf {
        self.container_root_dir(id).join("upper")
    }

    fn save_sandbox(&self, record: &SandboxRecord) -> Result<(), RuntimeError> {
        self.write_sandbox(record, persist::write_json)
    }

    /// Records a step of a sandbox's setup (namespaces pinned, address taken) without waiting
    /// for the disk: those steps do not survive a power loss either, and the durable record
    /// written before them is enough for the next start to clean up.
    fn save_sandbox_step(&self, record: &SandboxRecord) -> Result<(), RuntimeError> {
        self.write_sandbox(record, persist::write_json_volatile)
    }

    fn write_sandbox(
        &self,
        record: &SandboxRecord,
        write: fn(&Path, &SandboxRecord) -> std::io::Result<()>,
    ) -> Result<(), RuntimeError> {
        write(&self.sandbox_record_path(&record.id), record).map_err(host("record the sandbox"))?;
        lock(&self.sandboxes).insert(record.id.clone(), record.clone());
        Ok(())
    }

    /// Records a container being set up without waiting for the disk: a power loss takes the
    /// mounts and processes of the set-up with it.
    fn save_container_step(&self, record: &ContainerRecord) -> Result<(), RuntimeError> {
        self.write_container(record, persist::write_json_volatile)
    }

    fn save_container(&self, record: &ContainerRecord) -> Result<(), RuntimeError> {
        self.write_container(record, persist::write_json)
    }

    fn write_container(
        &self,
        record: &ContainerRecord,
        write: fn(&Path, &ContainerRecord) -> std::io::Result<()>,
    ) -> Result<(), RuntimeError> {
        write(
            &self.container_root_dir(&record.id).join("record.json"),
            record,
        )
        .map_err(host("record the container"))?;
        lock(&self.containers).insert(record.id.clone(), record.clone());
        Ok(())
    }

    /// A sandbox by id or unique id prefix.
    pub fn sandbox(&self, id: &str) -> Option<SandboxRecord> {
        find_by_prefix(&lock(&self.sandboxes), id)
    }

    /// A container by id or unique id prefix.
    pub fn container(&self, id: &str) -> Option<ContainerRecord> {
        find_by_prefix(&lock(&self.containers), id)
    }

    /// All sandboxes.
    pub fn sandboxes(&self) -> Vec<SandboxRecord> {
        lock(&self.sandboxes).values().cloned().collect()
    }

    /// All containers.
    pub fn containers(&self) -> Vec<ContainerRecord> {
        lock(&self.containers).values().cloned().collect()
    }

    /// Creates and starts a sandbox: namespaces, network, shared files.
    pub async fn run_sandbox(
        &self,
        config: PodSandboxConfig,
        runtime_handler: &str,
    ) -> Result<String, RuntimeError> {
        let meta = config
            .metadata
            .as_ref()
            .ok_or_else(|| RuntimeError::Invalid("sandbox config must include metadata".into()))?;
        if meta.name.is_empty() || meta.namespace.is_empty() {
            return Err(RuntimeError::Invalid(
                "sandbox metadata must include name and namespace".into(),
            ));
        }
        if !runtime_handler.is_empty() && runtime_handler != "runc" {
            return Err(RuntimeError::NotFound(format!(
                "no runtime for {runtime_handler:?} is configured"
            )));
        }
        let id = new_id();
        let cgroup_parent = config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.clone())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| format!("{}/{}", self.opts.cgroup_root, id));
        let mut record = SandboxRecord {
            id: id.clone(),
            config,
            runtime_handler: runtime_handler.to_string(),
            created_at: now_nanos(),
            ready: false,
            ip: None,
            netns: None,
            ipcns: None,
            utsns: None,
            cgroup_parent,
            host_ports: Vec::new(),
        };
        // Recorded first, so a crash in the middle leaves something the next start cleans.
        self.save_sandbox(&record)?;
        match self.set_up_sandbox(&mut record).await {
            Ok(()) => {
                record.ready = true;
                self.save_sandbox(&record)?;
                info!(sandbox = %id, pod = %record.config.metadata.as_ref().map(|m| format!("{}/{}", m.namespace, m.name)).unwrap_or_default(), ip = ?record.ip, "sandbox ready");
                Ok(id)
            }
            Err(e) => {
                warn!(sandbox = %id, error = %e, "sandbox setup failed; undoing it");
                let _ = self.tear_down_sandbox(&record).await;
                let _ =
                    persist::remove_dir_all_if_exists(&self.opts.root.join("sandboxes").join(&id));
                lock(&self.sandboxes).remove(&id);
                Err(e)
            }
        }
    }

    async fn set_up_sandbox(&self, record: &mut SandboxRecord) -> Result<(), RuntimeError> {
        let dir = self.sandbox_dir(&record.id);
        std::fs::create_dir_all(&dir).map_err(host("create the sandbox directory"))?;
        let mut kinds = Vec::new();
        if !record.host_network() {
            kinds.push(NamespaceKind::Net);
            kinds.push(NamespaceKind::Uts);
        }
        if !record.host_ipc() {
            kinds.push(NamespaceKind::Ipc);
        }
        // Pinning unshares on a thread of its own and waits for it: off the async workers.
        let (ns_dir, pin_kinds, hostname) = (
            dir.join("ns"),
            kinds.clone(),
            record.config.hostname.clone(),
        );
        let pinned =
            tokio::task::spawn_blocking(move || namespaces::pin(&ns_dir, &pin_kinds, &hostname))
                .await
                .map_err(host("create the pod namespaces"))?
                .map_err(host("create the pod namespaces"))?;
        for (kind, path) in kinds.iter().zip(pinned) {
            match kind {
                NamespaceKind::Net => record.netns = Some(path),
                NamespaceKind::Uts => record.utsns = Some(path),
                NamespaceKind::Ipc => record.ipcns = Some(path),
            }
        }
        self.save_sandbox_step(record)?;
        if let Some(netns) = record.netns.clone() {
            let subnet = self.pod_cidr().ok_or_else(|| {
                RuntimeError::Precondition(
                    "no pod CIDR configured: pass --pod-cidr or call UpdateRuntimeConfig".into(),
                )
            })?;
            let _guard = self.network_lock.lock().await;
            network::ensure_bridge(&self.opts.bridge, subnet)
                .await
                .map_err(host("set up the node bridge"))?;
            let ipam =
                Ipam::open(&self.opts.root.join("ipam"), subnet).map_err(host("open IPAM"))?;
            let ip = ipam.allocate(&record.id).map_err(|e| match e {
                crate::sandbox::ipam::IpamError::Exhausted(_) => {
                    RuntimeError::Precondition(e.to_string())
                }
                other => RuntimeError::Host(other.to_string()),
            })?;
            record.ip = Some(ip);
            self.save_sandbox_step(record)?;
            network::attach(&self.opts.bridge, &record.id, &netns, ip, subnet)
                .await
                .map_err(host("connect the pod to the node network"))?;
            record.host_ports = host_ports(&record.config, ip);
            self.save_sandbox_step(record)?;
            self.apply_rules_locked(subnet, Some(record))?;
        }
        let hostname = record.hostname();
        let node_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let files = self.sandbox_files(&record.id);
        persist::write_bytes_volatile(&files.hosts, render_hosts(record.ip, &hostname).as_bytes())
            .map_err(host("write hosts"))?;
        persist::write_bytes_volatile(
            &files.resolv_conf,
            render_resolv_conf(record.config.dns_config.as_ref(), &node_resolv).as_bytes(),
        )
        .map_err(host("write resolv.conf"))?;
        persist::write_bytes_volatile(&files.hostname, format!("{hostname}\n").as_bytes())
            .map_err(host("write hostname"))?;
        Ok(())
    }

    fn sandbox_files(&self, id: &str) -> SandboxFiles {
        let dir = self.sandbox_dir(id);
        SandboxFiles {
            hosts: dir.join("hosts"),
            resolv_conf: dir.join("resolv.conf"),
            hostname: dir.join("hostname"),
        }
    }

    /// Rewrites the node rules from every ready sandbox (plus `extra`, being set up).
    fn apply_rules_locked(
        &self,
        subnet: Ipv4Cidr,
        extra: Option<&SandboxRecord>,
    ) -> Result<(), RuntimeError> {
        let mut ports: Vec<HostPortMapping> = lock(&self.sandboxes)
            .values()
            .filter(|s| s.ready && extra.is_none_or(|e| e.id != s.id))
            .flat_map(|s| s.host_ports.clone())
            .collect();
        if let Some(e) = extra {
            ports.extend(e.host_ports.clone());
        }
        let rules = network::render_node_rules(&NodeRules {
            table: &self.opts.nft_table,
            subnet,
            cluster_cidr: self.opts.cluster_cidr,
            bridge: &self.opts.bridge,
            host_ports: &ports,
        });
        // Callers hold the network lock, so nothing applies rules between the check and the
        // update.
        if lock(&self.applied_rules).as_deref() == Some(rules.as_str()) {
            return Ok(());
        }
        self.firewall
            .apply(&rules)
            .map_err(host("apply node rules"))?;
        *lock(&self.applied_rules) = Some(rules);
        Ok(())
    }

    async fn tear_down_sandbox(&self, record: &SandboxRecord) -> Result<(), RuntimeError> {
        let mut first_error = None;
        if record.netns.is_some() || record.ip.is_some() {
            let _guard = self.network_lock.lock().await;
            if let Err(e) = network::detach(&record.id).await {
                first_error.get_or_insert(RuntimeError::Host(format!("disconnect the pod: {e}")));
            }
            if let Some(subnet) = self.pod_cidr() {
                if let Ok(ipam) = Ipam::open(&self.opts.root.join("ipam"), subnet) {
                    let _ = ipam.release(&record.id);
                }
                let mut without = record.clone();
                without.ready = false;
                lock(&self.sandboxes).insert(record.id.clone(), without);
                if let Err(e) = self.apply_rules_locked(subnet, None) {
                    first_error.get_or_insert(e);
                }
            }
        }
        for path in [&record.netns, &record.ipcns, &record.utsns]
            .into_iter()
            .flatten()
        {
            namespaces::unpin(path);
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Stops a sandbox: kills its containers, frees its network and namespaces. Idempotent.
    pub async fn stop_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        let Some(mut record) = self.sandbox(id) else {
            return Ok(());
        };
        for container in self
            .containers()
            .into_iter()
            .filter(|c| c.sandbox_id == record.id)
        {
            self.stop_container(&container.id, 0).await?;
        }
        self.tear_down_sandbox(&record).await?;
        record.ready = false;
        record.netns = None;
        record.ipcns = None;
        record.utsns = None;
        record.host_ports.clear();
        self.save_sandbox(&record)?;
        info!(sandbox = %record.id, "sandbox stopped");
        Ok(())
    }

    /// Removes a sandbox and its containers. Idempotent.
    pub async fn remove_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        let Some(record) = self.sandbox(id) else {
            return Ok(());
        };
        self.stop_sandbox(&record.id).await?;
        for container in self
            .containers()
            .into_iter()
            .filter(|c| c.sandbox_id == record.id)
        {
            self.remove_container(&container.id).await?;
        }
        persist::remove_dir_all_if_exists(&self.sandbox_dir(&record.id))
            .map_err(host("remove the sandbox state"))?;
        if record
            .config
            .linux
            .as_ref()
            .is_none_or(|l| l.cgroup_parent.is_empty())
        {
            remove_cgroup_dirs(&record.cgroup_parent);
        }
        persist::remove_dir_all_if_exists(&self.opts.root.join("sandboxes").join(&record.id))
            .map_err(host("remove the sandbox record"))?;
        lock(&self.sandboxes).remove(&record.id);
        info!(sandbox = %record.id, "sandbox removed");
        Ok(())
    }

    /// Creates a container in a ready sandbox.
    pub async fn create_container(
        &self,
        sandbox_id: &str,
        config: ContainerConfig,
    ) -> Result<String, RuntimeError> {
        let sandbox = self
            .sandbox(sandbox_id)
            .ok_or_else(|| RuntimeError::NotFound(format!("sandbox {sandbox_id:?} not found")))?;
        if !sandbox.ready {
            return Err(RuntimeError::Precondition(format!(
                "sandbox {} is not ready",
                sandbox.id
            )));
        }
        let meta = config.metadata.as_ref().ok_or_else(|| {
            RuntimeError::Invalid("container config must include metadata".into())
        })?;
        if meta.name.is_empty() {
            return Err(RuntimeError::Invalid(
                "container metadata must include a name".into(),
            ));
        }
        let image_ref = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        if image_ref.is_empty() {
            return Err(RuntimeError::Invalid(
                "container config must name an image".into(),
            ));
        }
        let image = self.images.resolve(&image_ref).ok_or_else(|| {
            RuntimeError::NotFound(format!("image {image_ref:?} not found: pull it first"))
        })?;
        let id = new_id();
        let log_path = sandbox_log_path(&sandbox, &config);
        let record = ContainerRecord {
            id: id.clone(),
            sandbox_id: sandbox.id.clone(),
            config,
            image_ref,
            image_id: image.id.clone(),
            stop_signal: image.defaults.stop_signal.clone(),
            created_at: now_nanos(),
            started_at: None,
            log_path,
            pid: None,
            monitor_pid: None,
            cgroups_path: format!("{}/{}", sandbox.cgroup_parent, id),
        };
        // Set-up steps are recorded without waiting for the disk (as for sandboxes); the
        // created container's record below is durable.
        self.save_container_step(&record)?;
        match self.set_up_container(&sandbox, &record, &image).await {
            Ok(created) => {
                let mut record = record;
                record.pid = Some(created.pid);
                record.monitor_pid = Some(created.monitor_pid);
                self.save_container(&record)?;
                info!(container = %id, sandbox = %sandbox.id, pid = created.pid, "container created");
                Ok(id)
            }
            Err(e) => {
                warn!(container = %id, error = %e, "container creation failed; undoing it");
                self.discard_container(&record).await;
                Err(e)
            }
        }
    }

    async fn set_up_container(
        &self,
        sandbox: &SandboxRecord,
        record: &ContainerRecord,
        image: &ResolvedImage,
    ) -> Result<Created, RuntimeError> {
        let state_dir = self.container_state_dir(&record.id);
        let root_dir = self.container_root_dir(&record.id);
        let rootfs = state_dir.join("rootfs");
        let started = Instant::now();
        let layers = self
            .images
            .lease(&record.id, &image.id)
            .map_err(RuntimeError::Host)?;
        mount_rootfs(
            &layers,
            &self.writable_layer_dir(&record.id),
            &root_dir.join("work"),
            &rootfs,
        )
        .map_err(host("mount the root filesystem"))?;
        let mounted = started.elapsed();
        let read = |p: &str| std::fs::read_to_string(rootfs.join(p)).ok();
        let spec = spec::build(&SpecInput {
            config: &record.config,
            sandbox,
            image: &image.defaults,
            rootfs: rootfs.clone(),
            files: self.sandbox_files(&sandbox.id),
            cgroups_path: record.cgroups_path.clone(),
            passwd: read("etc/passwd"),
            group: read("etc/group"),
            min_oom_score_adj: self.min_oom_score_adj,
        })
        .map_err(|e| RuntimeError::Invalid(e.to_string()))?;
        if let Some(cwd) = spec.process().as_ref().map(|p| p.cwd().clone()) {
            let _ = std::fs::create_dir_all(rootfs.join(cwd.strip_prefix("/").unwrap_or(&cwd)));
        }
        persist::write_json_volatile(&state_dir.join("config.json"), &spec)
            .map_err(host("write the OCI spec"))?;
        let memory_cgroup = Some(
            PathBuf::from("/sys/fs/cgroup/memory")
                .join(record.cgroups_path.trim_start_matches('/')),
        );
        let mut monitor = self.oci.monitor_config(
            &record.id,
            &state_dir,
            record.log_path.clone(),
            memory_cgroup,
        );
        monitor.stdin = record.config.stdin;
        monitor.stdin_once = record.config.stdin_once;
        monitor.tty = record.config.tty;
        let monitor_path = state_dir.join("monitor.json");
        persist::write_json_volatile(&monitor_path, &monitor)
            .map_err(host("write the monitor config"))?;
        let prepared = started.elapsed();
        let created = self.oci.create(&monitor_path).await?;
        tracing::debug!(
            container = %record.id,
            mounted_ms = mounted.as_secs_f64() * 1000.0,
            prepared_ms = prepared.as_secs_f64() * 1000.0,
            created_ms = started.elapsed().as_secs_f64() * 1000.0,
            "container set up"
        );
        Ok(created)
    }

    async fn discard_container(&self, record: &ContainerRecord) {
        if let Err(e) = self.oci.delete(&record.id).await {
            warn!(container = %record.id, error = %e, "OCI delete failed");
        }
        let state_dir = self.container_state_dir(&record.id);
        unmount_rootfs(&state_dir.join("rootfs"));
        self.images.release(&record.id);
        let _ = persist::remove_dir_all_if_exists(&state_dir);
        let _ = persist::remove_dir_all_if_exists(&self.container_root_dir(&record.id));
        lock(&self.containers).remove(&record.id);
    }

    /// Starts a created container.
    pub async fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        let mut record = self
            .container(id)
            .ok_or_else(|| RuntimeError::NotFound(format!("container {id:?} not found")))?;
        match self.container_state(&record) {
            ContainerState::Created => {}
            other => {
                return Err(RuntimeError::Precondition(format!(
                    "container {} is {}, not created",
                    record.id,
                    state_name(&other)
                )));
            }
        }
        // Taken before the start: a container that exits at once must not look finished
        // before it started (its monitor stamps the exit while `start` returns).
        let started_at = now_nanos();
        self.oci.start(&record.id).await?;
        record.started_at = Some(started_at);
        self.save_container(&record)?;
        info!(container = %record.id, "container started");
        Ok(())
    }

    /// The state of a container, from its exit record and its monitor.
    pub fn container_state(&self, record: &ContainerRecord) -> ContainerState {
        let exit = persist::read_json::<ExitRecord>(
            &self.container_state_dir(&record.id).join("exit.json"),
        );
        if let Ok(Some(exit)) = exit {
            return ContainerState::Exited(exit);
        }
        let monitor_alive = record.monitor_pid.is_some_and(|p| {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(p as i32), None).is_ok()
        });
        match (record.pid, record.started_at, monitor_alive) {
            (Some(_), None, true) => ContainerState::Created,
            (Some(_), Some(_), true) => ContainerState::Running,
            (None, _, _) => ContainerState::Created,
            _ => ContainerState::Unknown,
        }
    }

    /// Stops a container: its StopSignal (or SIGTERM), SIGKILL after `timeout` seconds.
    pub async fn stop_container(&self, id: &str, timeout: i64) -> Result<(), RuntimeError> {
        let Some(record) = self.container(id) else {
            return Err(RuntimeError::NotFound(format!(
                "container {id:?} not found"
            )));
        };
        match self.container_state(&record) {
            ContainerState::Running => {}
            ContainerState::Created => {
                // Never started: nothing runs, but the init waits in the runtime; end it.
                self.oci.kill(&record.id, "KILL", true).await?;
                return Ok(());
            }
            _ => return Ok(()),
        }
        if timeout > 0 {
            let signal = if record.stop_signal.is_empty() {
                "TERM".to_string()
            } else {
                record.stop_signal.clone()
            };
            self.oci
                .kill(&record.id, signal.trim_start_matches("SIG"), false)
                .await?;
            if self
                .wait_exit(&record, Duration::from_secs(timeout as u64))
                .await
            {
                return Ok(());
            }
        }
        self.oci.kill(&record.id, "KILL", true).await?;
        if !self.wait_exit(&record, Duration::from_secs(10)).await {
            return Err(RuntimeError::Host(format!(
                "container {} did not exit after SIGKILL",
                record.id
            )));
        }
        Ok(())
    }

    async fn wait_exit(&self, record: &ContainerRecord, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if !matches!(
                self.container_state(record),
                ContainerState::Running | ContainerState::Created
            ) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Removes a container (killing it if it runs). Idempotent.
    pub async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        let Some(record) = self.container(id) else {
            return Ok(());
        };
        if matches!(
            self.container_state(&record),
            ContainerState::Running | ContainerState::Created
        ) {
            self.stop_container(&record.id, 0).await?;
        }
        self.oci.delete(&record.id).await?;
        self.discard_container(&record).await;
        info!(container = %record.id, "container removed");
        Ok(())
    }

    /// Runs a command in a running container.
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: &[String],
        timeout: Option<Duration>,
    ) -> Result<ExecOutput, RuntimeError> {
        let record = self
            .container(id)
            .ok_or_else(|| RuntimeError::NotFound(format!("container {id:?} not found")))?;
        if self.container_state(&record) != ContainerState::Running {
            return Err(RuntimeError::Precondition(format!(
                "container {} is not running",
                record.id
            )));
        }
        if cmd.is_empty() {
            return Err(RuntimeError::Invalid("exec needs a command".into()));
        }
        Ok(self.oci.exec(&record.id, cmd, timeout).await?)
    }

    /// Updates a container's resources.
    pub async fn update_resources(
        &self,
        id: &str,
        resources: &k8s_cri::v1::LinuxContainerResources,
    ) -> Result<(), RuntimeError> {
        let record = self
            .container(id)
            .ok_or_else(|| RuntimeError::NotFound(format!("container {id:?} not found")))?;
        let value = serde_json::to_value(spec::resources_update(resources))
            .map_err(host("encode resources"))?;
        Ok(self.oci.update(&record.id, &value).await?)
    }

    /// Asks a container's monitor to reopen its log file.
    pub fn reopen_log(&self, id: &str) -> Result<(), RuntimeError> {
        let record = self
            .container(id)
            .ok_or_else(|| RuntimeError::NotFound(format!("container {id:?} not found")))?;
        if self.container_state(&record) != ContainerState::Running {
            return Err(RuntimeError::Precondition(format!(
                "container {} is not running",
                record.id
            )));
        }
        crate::container::monitor::request_reopen(
            &self.container_state_dir(&record.id).join("control"),
        )
        .map_err(host("reach the container's monitor"))
    }

    /// A running container by id or unique prefix (streaming sessions need one).
    pub fn running_container(&self, id: &str) -> Result<ContainerRecord, RuntimeError> {
        let record = self
            .container(id)
            .ok_or_else(|| RuntimeError::NotFound(format!("container {id:?} not found")))?;
        let state = self.container_state(&record);
        if state != ContainerState::Running {
            return Err(RuntimeError::Precondition(format!(
                "container {} is {}, not running",
                record.id,
                state_name(&state)
            )));
        }
        Ok(record)
    }

    /// The OCI runtime (streaming exec).
    pub fn oci(&self) -> &Arc<dyn OciRuntime> {
        &self.oci
    }

    /// A container's volatile state directory (its monitor's attach socket lives there).
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.container_state_dir(id)
    }

    /// Removes what the firewall holds for this instance (at shutdown with no pods).
    pub fn firewall(&self) -> &Arc<dyn Firewall> {
        &self.firewall
    }

    /// The options.
    pub fn options(&self) -> &RuntimeOptions {
        &self.opts
    }
}

/// The CRI name of a state.
pub fn state_name(state: &ContainerState) -> &'static str {
    match state {
        ContainerState::Created => "created",
        ContainerState::Running => "running",
        ContainerState::Exited(_) => "exited",
        ContainerState::Unknown => "unknown",
    }
}

fn host_ports(config: &PodSandboxConfig, ip: Ipv4Addr) -> Vec<HostPortMapping> {
    config
        .port_mappings
        .iter()
        .filter(|p| p.host_port > 0 && p.container_port > 0)
        .map(|p| HostPortMapping {
            protocol: match p.protocol {
                1 => "udp",
                2 => "sctp",
                _ => "tcp",
            }
            .to_string(),
            host_ip: p.host_ip.clone(),
            host_port: p.host_port as u16,
            pod_ip: ip,
            container_port: p.container_port as u16,
        })
        .collect()
}

fn sandbox_log_path(sandbox: &SandboxRecord, config: &ContainerConfig) -> Option<PathBuf> {
    if config.log_path.is_empty() {
        return None;
    }
    let dir = &sandbox.config.log_directory;
    Some(if dir.is_empty() {
        PathBuf::from(&config.log_path)
    } else {
        Path::new(dir).join(&config.log_path)
    })
}

fn find_by_prefix<T: Clone>(map: &BTreeMap<String, T>, id: &str) -> Option<T> {
    if id.is_empty() {
        return None;
    }
    if let Some(v) = map.get(id) {
        return Some(v.clone());
    }
    let mut matches = map
        .range(id.to_string()..)
        .take_while(|(k, _)| k.starts_with(id));
    let first = matches.next()?;
    matches.next().is_none().then(|| first.1.clone())
}

fn load_records<T: serde::de::DeserializeOwned>(dir: &Path) -> Result<Vec<T>, RuntimeError> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(host("read records"))?;
    for entry in entries.flatten() {
        let path = entry.path().join("record.json");
        match persist::read_json::<T>(&path) {
            Ok(Some(r)) => out.push(r),
            Ok(None) => {}
            Err(e) => warn!(path = %path.display(), error = %e, "skipping an unreadable record"),
        }
    }
    Ok(out)
}

/// Removes a cgroup directory this runtime created, in every v1 hierarchy.
fn remove_cgroup_dirs(path: &str) {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for h in hierarchies.flatten() {
        let _ = std::fs::remove_dir(h.path().join(path.trim_start_matches('/')));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_resolve_by_unique_prefix() {
        let mut map = BTreeMap::new();
        map.insert("abc1".to_string(), 1);
        map.insert("abc2".to_string(), 2);
        map.insert("def".to_string(), 3);
        assert_eq!(find_by_prefix(&map, "abc1"), Some(1));
        assert_eq!(find_by_prefix(&map, "abc"), None, "ambiguous");
        assert_eq!(find_by_prefix(&map, "d"), Some(3));
        assert_eq!(find_by_prefix(&map, ""), None);
    }
}
