//! The Node: registration (labels, taints, capacity and allocatable measured from the machine,
//! addresses, nodeInfo, daemon endpoint), the Lease heartbeat in kube-node-lease (renewed every
//! 10 s for 40 s), and node status (conditions Ready, MemoryPressure, DiskPressure, PIDPressure)
//! sent when it changes and at least every 5 minutes, Ready=False with the reason when the
//! runtime or its network is not ready. A deleted Node is registered again; an unreachable API
//! is retried with back-off, never fatal.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    Node, NodeAddress, NodeCondition, NodeSpec, NodeStatus, NodeSystemInfo, Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::runtime::ContainerRuntime;

/// How the node registers.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// Its name.
    pub name: String,
    /// Extra labels.
    pub labels: BTreeMap<String, String>,
    /// Taints to register with.
    pub taints: Vec<Taint>,
    /// maxPods.
    pub max_pods: i64,
    /// The node's address.
    pub node_ip: String,
    /// The kubelet API port.
    pub port: i32,
    /// A pod CIDR from the flag (spec.podCIDR otherwise).
    pub pod_cidr: Option<String>,
    /// Root dir, for ephemeral-storage capacity.
    pub root_dir: std::path::PathBuf,
    /// Reserved for the system (cpu millicores, memory bytes) subtracted for allocatable.
    pub reserved_cpu_milli: i64,
    /// Reserved memory bytes.
    pub reserved_memory: i64,
}

/// Lease renewal interval and duration, as upstream.
pub const LEASE_RENEW: Duration = Duration::from_secs(10);
/// Lease duration.
pub const LEASE_DURATION_SECONDS: i32 = 40;
/// Status is sent at least this often.
pub const STATUS_REPORT: Duration = Duration::from_secs(300);

fn machine_id() -> String {
    std::fs::read_to_string("/etc/machine-id")
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn os_image() -> String {
    read_trim("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into())
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Capacity measured from the machine: cpu, memory, ephemeral-storage, pods.
pub fn capacity(settings: &NodeSettings) -> BTreeMap<String, Quantity> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let memory = crate::pod::config::machine_memory_bytes();
    let storage = nix::sys::statvfs::statvfs(&settings.root_dir)
        .map(|s| s.blocks() * s.fragment_size())
        .unwrap_or(0);
    let mut c = BTreeMap::new();
    c.insert("cpu".into(), Quantity(cpus.to_string()));
    c.insert("memory".into(), Quantity(format!("{}Ki", memory / 1024)));
    c.insert(
        "ephemeral-storage".into(),
        Quantity(format!("{}Ki", storage / 1024)),
    );
    c.insert("pods".into(), Quantity(settings.max_pods.to_string()));
    c
}

/// Allocatable: capacity minus the reservations.
pub fn allocatable(
    settings: &NodeSettings,
    capacity: &BTreeMap<String, Quantity>,
) -> BTreeMap<String, Quantity> {
    let mut a = capacity.clone();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
    a.insert(
        "cpu".into(),
        Quantity(format!(
            "{}m",
            (cpus * 1000 - settings.reserved_cpu_milli).max(0)
        )),
    );
    let memory = crate::pod::config::machine_memory_bytes();
    a.insert(
        "memory".into(),
        Quantity(format!(
            "{}Ki",
            ((memory - settings.reserved_memory).max(0)) / 1024
        )),
    );
    a
}

fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    previous: Option<&NodeStatus>,
    now: Timestamp,
) -> NodeCondition {
    let status_s = if status { "True" } else { "False" };
    let old = previous
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == type_));
    NodeCondition {
        type_: type_.into(),
        status: status_s.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(Time(now)),
        last_transition_time: match old {
            Some(c) if c.status == status_s => c.last_transition_time.clone(),
            _ => Some(Time(now)),
        },
    }
}

/// The node's status: conditions from the runtime's health, capacity, addresses, info.
pub fn node_status(
    settings: &NodeSettings,
    runtime_problem: Option<String>,
    version: &str,
    previous: Option<&NodeStatus>,
    now: Timestamp,
) -> NodeStatus {
    let capacity = capacity(settings);
    let (ready_reason, ready_message) = match &runtime_problem {
        None => (
            "KubeletReady",
            "kubelet is posting ready status".to_string(),
        ),
        Some(p) => ("KubeletNotReady", p.clone()),
    };
    NodeStatus {
        allocatable: Some(allocatable(settings, &capacity)),
        capacity: Some(capacity),
        conditions: Some(vec![
            condition(
                "MemoryPressure",
                false,
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
                previous,
                now,
            ),
            condition(
                "DiskPressure",
                false,
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
                previous,
                now,
            ),
            condition(
                "PIDPressure",
                false,
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
                previous,
                now,
            ),
            condition(
                "Ready",
                runtime_problem.is_none(),
                ready_reason,
                &ready_message,
                previous,
                now,
            ),
        ]),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: settings.node_ip.clone(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: settings.name.clone(),
            },
        ]),
        daemon_endpoints: Some(k8s_openapi::api::core::v1::NodeDaemonEndpoints {
            kubelet_endpoint: Some(k8s_openapi::api::core::v1::DaemonEndpoint {
                port: settings.port,
            }),
        }),
        node_info: Some(NodeSystemInfo {
            machine_id: machine_id(),
            system_uuid: read_trim("/sys/class/dmi/id/product_uuid"),
            boot_id: read_trim("/proc/sys/kernel/random/boot_id"),
            kernel_version: nix::sys::utsname::uname()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default(),
            os_image: os_image(),
            container_runtime_version: version.to_string(),
            kubelet_version: format!("v1.33.0-agent+{}", env!("CARGO_PKG_VERSION")),
            kube_proxy_version: String::new(),
            architecture: arch().into(),
            operating_system: "linux".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The Node object to register.
pub fn node_object(settings: &NodeSettings) -> Node {
    let mut labels = settings.labels.clone();
    labels.insert("kubernetes.io/hostname".into(), settings.name.clone());
    labels.insert("kubernetes.io/os".into(), "linux".into());
    labels.insert("kubernetes.io/arch".into(), arch().into());
    labels.insert("beta.kubernetes.io/os".into(), "linux".into());
    labels.insert("beta.kubernetes.io/arch".into(), arch().into());
    Node {
        metadata: ObjectMeta {
            name: Some(settings.name.clone()),
            labels: Some(labels),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            taints: (!settings.taints.is_empty()).then(|| settings.taints.clone()),
            pod_cidr: settings.pod_cidr.clone(),
            pod_cidrs: settings.pod_cidr.clone().map(|c| vec![c]),
            ..Default::default()
        }),
        status: None,
    }
}

/// Why the runtime cannot run pods, if it cannot.
async fn runtime_problem(runtime: &dyn ContainerRuntime) -> (Option<String>, String) {
    let version = match runtime.version().await {
        Ok(v) => format!("{}://{}", v.runtime_name, v.runtime_version),
        Err(e) => {
            return (
                Some(format!("container runtime is down: {e}")),
                String::new(),
            );
        }
    };
    match runtime.status().await {
        Ok(conditions) => {
            let bad: Vec<String> = conditions
                .iter()
                .filter(|c| !c.status)
                .map(|c| {
                    format!(
                        "container runtime {} is false: {}: {}",
                        c.r#type, c.reason, c.message
                    )
                })
                .collect();
            ((!bad.is_empty()).then(|| bad.join("; ")), version)
        }
        Err(e) => (
            Some(format!("container runtime status check failed: {e}")),
            version,
        ),
    }
}

/// Keeps the Node registered, its lease renewed and its status current until shutdown.
pub async fn run(
    client: kube::Client,
    runtime: Arc<dyn ContainerRuntime>,
    settings: NodeSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let mut last_status: Option<NodeStatus> = None;
    let mut last_report = Instant::now() - STATUS_REPORT;
    let mut pod_cidr_sent: Option<String> = None;
    let mut backoff = Duration::from_millis(200);
    loop {
        let result = async {
            let node = match nodes.get_opt(&settings.name).await? {
                Some(n) => n,
                None => {
                    info!(node = %settings.name, "registering the node");
                    match nodes
                        .create(&PostParams::default(), &node_object(&settings))
                        .await
                    {
                        Ok(n) => n,
                        Err(kube::Error::Api(s)) if s.code == 409 => {
                            nodes.get(&settings.name).await?
                        }
                        Err(e) => return Err(e),
                    }
                }
            };
            let cidr = node
                .spec
                .as_ref()
                .and_then(|s| s.pod_cidr.clone())
                .or_else(|| settings.pod_cidr.clone());
            if let Some(cidr) = cidr.filter(|c| pod_cidr_sent.as_ref() != Some(c)) {
                match runtime.update_pod_cidr(&cidr).await {
                    Ok(()) => pod_cidr_sent = Some(cidr),
                    Err(e) => warn!(error = %e, "passing the pod CIDR to the runtime failed"),
                }
            }
            let (problem, version) = runtime_problem(runtime.as_ref()).await;
            let now = Timestamp::now();
            let status = node_status(&settings, problem, &version, node.status.as_ref(), now);
            let changed = strip_heartbeats(Some(&status)) != strip_heartbeats(node.status.as_ref());
            if changed || last_report.elapsed() >= STATUS_REPORT {
                let patch = serde_json::json!({"status": status});
                nodes
                    .patch_status(
                        &settings.name,
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await?;
                last_report = Instant::now();
                if strip_heartbeats(last_status.as_ref()) != strip_heartbeats(Some(&status)) {
                    let ready = status
                        .conditions
                        .iter()
                        .flatten()
                        .find(|c| c.type_ == "Ready")
                        .map(|c| c.status.clone());
                    info!(node = %settings.name, ready = ?ready, "node status updated");
                }
                last_status = Some(status);
            }
            renew_lease(&leases, &settings.name, node.metadata.uid.as_deref()).await
        }
        .await;
        let wait = match result {
            Ok(()) => {
                backoff = Duration::from_millis(200);
                LEASE_RENEW
            }
            Err(e) => {
                warn!(error = %e, "node heartbeat failed; retrying");
                backoff = (backoff * 2).min(LEASE_RENEW);
                backoff
            }
        };
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

fn strip_heartbeats(status: Option<&NodeStatus>) -> Option<NodeStatus> {
    let mut s = status?.clone();
    for c in s.conditions.iter_mut().flatten() {
        c.last_heartbeat_time = None;
        c.last_transition_time = None;
    }
    Some(s)
}

async fn renew_lease(
    leases: &Api<Lease>,
    name: &str,
    node_uid: Option<&str>,
) -> Result<(), kube::Error> {
    let now = MicroTime(Timestamp::now());
    match leases.get_opt(name).await? {
        Some(mut lease) => {
            let spec = lease.spec.get_or_insert_with(Default::default);
            spec.renew_time = Some(now);
            spec.holder_identity = Some(name.into());
            spec.lease_duration_seconds = Some(LEASE_DURATION_SECONDS);
            leases.replace(name, &PostParams::default(), &lease).await?;
        }
        None => {
            let owner = node_uid.map(|uid| {
                vec![
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                        api_version: "v1".into(),
                        kind: "Node".into(),
                        name: name.into(),
                        uid: uid.into(),
                        ..Default::default()
                    },
                ]
            });
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    owner_references: owner,
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(name.into()),
                    lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
                    renew_time: Some(now),
                    ..Default::default()
                }),
            };
            match leases.create(&PostParams::default(), &lease).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> NodeSettings {
        NodeSettings {
            name: "n1".into(),
            labels: BTreeMap::from([("role".to_string(), "edge".to_string())]),
            taints: vec![],
            max_pods: 110,
            node_ip: "192.0.2.7".into(),
            port: 10250,
            pod_cidr: None,
            root_dir: std::env::temp_dir(),
            reserved_cpu_milli: 100,
            reserved_memory: 100 << 20,
        }
    }

    #[test]
    fn registration_carries_the_standard_labels() {
        let node = node_object(&settings());
        let labels = node.metadata.labels.unwrap();
        assert_eq!(labels["kubernetes.io/hostname"], "n1");
        assert_eq!(labels["kubernetes.io/os"], "linux");
        assert_eq!(labels["role"], "edge");
    }

    #[test]
    fn status_reports_capacity_conditions_and_reasons() {
        let now = Timestamp::now();
        let s = node_status(&settings(), None, "cri-lite://0.1.0", None, now);
        assert_eq!(s.capacity.as_ref().unwrap()["pods"].0, "110");
        let ready = s
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("True", Some("KubeletReady"))
        );
        let later = now + Duration::from_secs(5);
        let down = node_status(
            &settings(),
            Some("container runtime is down".into()),
            "",
            Some(&s),
            later,
        );
        let ready = down
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("False", Some("KubeletNotReady"))
        );
        assert_eq!(ready.last_transition_time, Some(Time(later)));
        let memory = down
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "MemoryPressure")
            .unwrap();
        assert_eq!(
            memory.last_transition_time,
            Some(Time(now)),
            "unchanged conditions keep their transition time"
        );
    }
}
