//! The kubelet's resource statistics: `/stats/summary` (the Summary API, stats/v1alpha1, as
//! `kubectl get --raw /api/v1/nodes/<node>/proxy/stats/summary` shows it) and
//! `/metrics/resource` (the Prometheus text metrics-server scrapes, kubelet's stable names).
//!
//! Pods and containers come from the runtime (CRI ListPodSandboxStats, which carries each
//! pod's cgroup, network and process numbers and its containers'), start times from the
//! sandbox and container lists; the node's own numbers from the host ([`HostStats`]: /proc
//! and statvfs), its CPU rate from two samples. [`summary`] and [`resource_metrics`] are pure.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use k8s_cri::v1 as cri;
use serde::Serialize;

/// A filesystem's numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsNumbers {
    /// Bytes free to unprivileged users.
    pub available: u64,
    /// Size.
    pub capacity: u64,
    /// Bytes in use.
    pub used: u64,
    /// Inodes free.
    pub inodes_free: u64,
    /// Inodes.
    pub inodes: u64,
}

/// The node's numbers at one time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeSample {
    /// When sampled (nanoseconds since the epoch).
    pub time_ns: i64,
    /// CPU time used by everything, in core-nanoseconds.
    pub cpu_usage_core_ns: u64,
    /// The rate since the previous sample, nanocores.
    pub cpu_nano_cores: Option<u64>,
    /// Total memory.
    pub memory_total: u64,
    /// Memory in use (total minus free).
    pub memory_usage: u64,
    /// Usage minus inactive file pages, what eviction looks at.
    pub memory_working_set: u64,
    /// The filesystem of the agent's root dir.
    pub fs: Option<FsNumbers>,
    /// When the node booted (nanoseconds since the epoch).
    pub boot_time_ns: i64,
}

/// Reads the host's numbers.
pub trait HostStats: Send + Sync {
    /// Samples the node now.
    fn sample(&self) -> NodeSample;
    /// A filesystem's numbers (`None` when it cannot be read).
    fn fs(&self, path: &Path) -> Option<FsNumbers>;
    /// Bytes used by the files under `dir`.
    fn du(&self, dir: &Path) -> u64;
}

/// The real host: /proc/stat, /proc/meminfo, statvfs.
pub struct ProcHost {
    root_dir: PathBuf,
    previous: Mutex<Option<(i64, u64)>>,
}

impl ProcHost {
    /// A host reader; `root_dir` is the agent's root dir (the node filesystem reported).
    pub fn new(root_dir: PathBuf) -> Self {
        ProcHost {
            root_dir,
            previous: Mutex::new(None),
        }
    }
}

/// Clock ticks per second of /proc/stat (USER_HZ, 100 on Linux).
const USER_HZ: u64 = 100;

/// CPU time in core-nanoseconds from /proc/stat's `cpu` line (everything but idle and iowait,
/// as cAdvisor's root cgroup usage counts).
pub fn parse_proc_stat_cpu(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal guest guest_nice
    let busy: u64 = fields
        .iter()
        .enumerate()
        .filter(|(i, _)| matches!(i, 0 | 1 | 2 | 5 | 6 | 7))
        .map(|(_, v)| *v)
        .sum();
    Some(busy * (1_000_000_000 / USER_HZ))
}

/// `btime` (boot time, seconds since the epoch) from /proc/stat.
pub fn parse_boot_time(stat: &str) -> Option<i64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// (total, usage, working set) in bytes from /proc/meminfo.
pub fn parse_meminfo(meminfo: &str) -> Option<(u64, u64, u64)> {
    let field = |name: &str| {
        meminfo.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            let kib: u64 = rest.split_whitespace().next()?.parse().ok()?;
            Some(kib * 1024)
        })
    };
    let total = field("MemTotal")?;
    let free = field("MemFree")?;
    let inactive_file = field("Inactive(file)").unwrap_or(0);
    let usage = total.saturating_sub(free);
    Some((total, usage, usage.saturating_sub(inactive_file)))
}

fn now_ns() -> i64 {
    jiff::Timestamp::now().as_nanosecond() as i64
}

impl HostStats for ProcHost {
    fn sample(&self) -> NodeSample {
        let time_ns = now_ns();
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let cpu = parse_proc_stat_cpu(&stat).unwrap_or(0);
        let cpu_nano_cores = {
            let mut previous = self.previous.lock().unwrap_or_else(|p| p.into_inner());
            let rate = previous.and_then(|(t0, c0)| {
                let wall = u64::try_from(time_ns - t0).ok().filter(|w| *w > 0)?;
                Some(((cpu.saturating_sub(c0)) as u128 * 1_000_000_000 / wall as u128) as u64)
            });
            *previous = Some((time_ns, cpu));
            rate
        };
        let (memory_total, memory_usage, memory_working_set) =
            parse_meminfo(&std::fs::read_to_string("/proc/meminfo").unwrap_or_default())
                .unwrap_or_default();
        NodeSample {
            time_ns,
            cpu_usage_core_ns: cpu,
            cpu_nano_cores,
            memory_total,
            memory_usage,
            memory_working_set,
            fs: self.fs(&self.root_dir),
            boot_time_ns: parse_boot_time(&stat).unwrap_or(0) * 1_000_000_000,
        }
    }

    fn fs(&self, path: &Path) -> Option<FsNumbers> {
        let st = nix::sys::statvfs::statvfs(path).ok()?;
        let block = st.fragment_size() as u64;
        let capacity = st.blocks() as u64 * block;
        Some(FsNumbers {
            available: st.blocks_available() as u64 * block,
            capacity,
            used: capacity.saturating_sub(st.blocks_free() as u64 * block),
            inodes_free: st.files_free() as u64,
            inodes: st.files() as u64,
        })
    }

    fn du(&self, dir: &Path) -> u64 {
        let mut total = 0;
        let mut stack = vec![dir.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                match entry.metadata() {
                    Ok(meta) if meta.is_dir() => stack.push(entry.path()),
                    Ok(meta) => total += meta.len(),
                    Err(_) => {}
                }
            }
        }
        total
    }
}

/// Everything the summary is made of.
#[derive(Debug, Clone, Default)]
pub struct SummaryInput {
    /// This node's name.
    pub node_name: String,
    /// The node.
    pub node: NodeSample,
    /// The image filesystem (CRI ImageFsInfo used bytes over the filesystem's numbers).
    pub image_fs: Option<FsNumbers>,
    /// ListPodSandboxStats.
    pub pods: Vec<cri::PodSandboxStats>,
    /// Sandbox creation times by id (nanoseconds).
    pub sandbox_created: HashMap<String, i64>,
    /// Container creation times by id (nanoseconds).
    pub container_created: HashMap<String, i64>,
    /// Log bytes and filesystem of each container's log dir, by container id.
    pub container_logs: HashMap<String, FsNumbers>,
}

/// stats/v1alpha1 Summary.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    /// The node.
    pub node: NodeStats,
    /// Its pods.
    pub pods: Vec<PodStats>,
}

/// stats/v1alpha1 NodeStats.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    /// The node's name.
    pub node_name: String,
    /// Boot time.
    pub start_time: String,
    /// CPU.
    pub cpu: CpuStats,
    /// Memory.
    pub memory: MemoryStats,
    /// The root filesystem (the agent's root dir).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fs: Option<FsStats>,
    /// The runtime's filesystems.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeStats>,
}

/// stats/v1alpha1 RuntimeStats.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeStats {
    /// Where images live.
    pub image_fs: FsStats,
}

/// stats/v1alpha1 CPUStats.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CpuStats {
    /// When.
    pub time: String,
    /// Rate, nanocores.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_nano_cores: Option<u64>,
    /// Cumulative, core-nanoseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_core_nano_seconds: Option<u64>,
}

/// stats/v1alpha1 MemoryStats.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStats {
    /// When.
    pub time: String,
    /// Free to use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_bytes: Option<u64>,
    /// In use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_bytes: Option<u64>,
    /// Working set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_set_bytes: Option<u64>,
    /// Anonymous and swap cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
    /// Page faults.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_faults: Option<u64>,
    /// Major page faults.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub major_page_faults: Option<u64>,
}

/// stats/v1alpha1 FsStats.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct FsStats {
    /// When.
    pub time: String,
    /// Free bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_bytes: Option<u64>,
    /// Size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity_bytes: Option<u64>,
    /// Used bytes (by the object measured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used_bytes: Option<u64>,
    /// Free inodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inodes_free: Option<u64>,
    /// Inodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inodes: Option<u64>,
    /// Used inodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inodes_used: Option<u64>,
}

/// stats/v1alpha1 PodReference.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PodReference {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// UID.
    pub uid: String,
}

/// stats/v1alpha1 NetworkStats (the default interface's numbers).
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NetworkStats {
    /// When.
    pub time: String,
    /// Interface.
    pub name: String,
    /// Received bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rx_bytes: Option<u64>,
    /// Receive errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rx_errors: Option<u64>,
    /// Sent bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx_bytes: Option<u64>,
    /// Send errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx_errors: Option<u64>,
}

/// stats/v1alpha1 ProcessStats.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProcessStats {
    /// Processes in the pod.
    pub process_count: u64,
}

/// stats/v1alpha1 PodStats.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodStats {
    /// Which pod.
    pub pod_ref: PodReference,
    /// When its sandbox was made.
    pub start_time: String,
    /// Its containers.
    pub containers: Vec<ContainerStats>,
    /// The pod cgroup's CPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    /// The pod cgroup's memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
    /// Its network.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkStats>,
    /// Containers' writable layers and logs together.
    #[serde(rename = "ephemeral-storage", skip_serializing_if = "Option::is_none")]
    pub ephemeral_storage: Option<FsStats>,
    /// Its processes (upstream spells this field in snake case).
    #[serde(rename = "process_stats", skip_serializing_if = "Option::is_none")]
    pub process_stats: Option<ProcessStats>,
}

/// stats/v1alpha1 ContainerStats.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStats {
    /// The container's name in the pod.
    pub name: String,
    /// When it was created.
    pub start_time: String,
    /// CPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    /// Memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
    /// Its writable layer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<FsStats>,
    /// Its log files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logs: Option<FsStats>,
}

/// RFC 3339 of nanoseconds since the epoch.
fn time(ns: i64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(ns))
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn cpu_of(cpu: Option<&cri::CpuUsage>) -> Option<CpuStats> {
    let cpu = cpu?;
    Some(CpuStats {
        time: time(cpu.timestamp),
        usage_nano_cores: cpu.usage_nano_cores.as_ref().map(|v| v.value),
        usage_core_nano_seconds: cpu.usage_core_nano_seconds.as_ref().map(|v| v.value),
    })
}

fn memory_of(memory: Option<&cri::MemoryUsage>) -> Option<MemoryStats> {
    let m = memory?;
    Some(MemoryStats {
        time: time(m.timestamp),
        available_bytes: m.available_bytes.as_ref().map(|v| v.value),
        usage_bytes: m.usage_bytes.as_ref().map(|v| v.value),
        working_set_bytes: m.working_set_bytes.as_ref().map(|v| v.value),
        rss_bytes: m.rss_bytes.as_ref().map(|v| v.value),
        page_faults: m.page_faults.as_ref().map(|v| v.value),
        major_page_faults: m.major_page_faults.as_ref().map(|v| v.value),
    })
}

fn fs_of(at: &str, numbers: FsNumbers, used: u64) -> FsStats {
    FsStats {
        time: at.to_string(),
        available_bytes: Some(numbers.available),
        capacity_bytes: Some(numbers.capacity),
        used_bytes: Some(used),
        inodes_free: Some(numbers.inodes_free),
        inodes: Some(numbers.inodes),
        inodes_used: Some(numbers.inodes.saturating_sub(numbers.inodes_free)),
    }
}

/// The Summary of `input`.
pub fn summary(input: &SummaryInput) -> Summary {
    let now = time(input.node.time_ns);
    let node = &input.node;
    let node_stats = NodeStats {
        node_name: input.node_name.clone(),
        start_time: time(node.boot_time_ns),
        cpu: CpuStats {
            time: now.clone(),
            usage_nano_cores: node.cpu_nano_cores,
            usage_core_nano_seconds: Some(node.cpu_usage_core_ns),
        },
        memory: MemoryStats {
            time: now.clone(),
            available_bytes: Some(node.memory_total.saturating_sub(node.memory_working_set)),
            usage_bytes: Some(node.memory_usage),
            working_set_bytes: Some(node.memory_working_set),
            ..MemoryStats::default()
        },
        fs: node.fs.map(|fs| fs_of(&now, fs, fs.used)),
        runtime: input.image_fs.map(|fs| RuntimeStats {
            image_fs: fs_of(&now, fs, fs.used),
        }),
    };
    let mut pods: Vec<PodStats> = input
        .pods
        .iter()
        .filter_map(|pod| pod_stats(pod, input, &now))
        .collect();
    pods.sort_by(|a, b| {
        (&a.pod_ref.namespace, &a.pod_ref.name).cmp(&(&b.pod_ref.namespace, &b.pod_ref.name))
    });
    Summary {
        node: node_stats,
        pods,
    }
}

fn pod_stats(pod: &cri::PodSandboxStats, input: &SummaryInput, now: &str) -> Option<PodStats> {
    let attributes = pod.attributes.as_ref()?;
    let metadata = attributes.metadata.as_ref()?;
    let linux = pod.linux.clone().unwrap_or_default();
    let mut ephemeral_used = 0;
    let mut ephemeral_fs = None;
    let mut containers: Vec<ContainerStats> = linux
        .containers
        .iter()
        .filter_map(|c| {
            let attrs = c.attributes.as_ref()?;
            let name = attrs.metadata.as_ref()?.name.clone();
            let rootfs = c.writable_layer.as_ref().map(|layer| {
                let used = layer.used_bytes.as_ref().map_or(0, |v| v.value);
                ephemeral_used += used;
                FsStats {
                    time: time(layer.timestamp),
                    used_bytes: Some(used),
                    inodes_used: layer.inodes_used.as_ref().map(|v| v.value),
                    ..FsStats::default()
                }
            });
            let logs = input.container_logs.get(&attrs.id).map(|numbers| {
                ephemeral_used += numbers.used;
                ephemeral_fs = Some(*numbers);
                fs_of(now, *numbers, numbers.used)
            });
            Some(ContainerStats {
                name,
                start_time: time(input.container_created.get(&attrs.id).copied().unwrap_or(0)),
                cpu: cpu_of(c.cpu.as_ref()),
                memory: memory_of(c.memory.as_ref()),
                rootfs,
                logs,
            })
        })
        .collect();
    containers.sort_by(|a, b| a.name.cmp(&b.name));
    let network = linux
        .network
        .as_ref()
        .and_then(|n| n.default_interface.as_ref().map(|i| (n.timestamp, i)))
        .map(|(ts, i)| NetworkStats {
            time: time(ts),
            name: i.name.clone(),
            rx_bytes: i.rx_bytes.as_ref().map(|v| v.value),
            rx_errors: i.rx_errors.as_ref().map(|v| v.value),
            tx_bytes: i.tx_bytes.as_ref().map(|v| v.value),
            tx_errors: i.tx_errors.as_ref().map(|v| v.value),
        });
    Some(PodStats {
        pod_ref: PodReference {
            name: metadata.name.clone(),
            namespace: metadata.namespace.clone(),
            uid: metadata.uid.clone(),
        },
        start_time: time(
            input
                .sandbox_created
                .get(&attributes.id)
                .copied()
                .unwrap_or(0),
        ),
        containers,
        cpu: cpu_of(linux.cpu.as_ref()),
        memory: memory_of(linux.memory.as_ref()),
        network,
        ephemeral_storage: ephemeral_fs
            .or(input.node.fs)
            .map(|fs| fs_of(now, fs, ephemeral_used)),
        process_stats: linux.process.as_ref().and_then(|p| {
            p.process_count.as_ref().map(|v| ProcessStats {
                process_count: v.value,
            })
        }),
    })
}

/// One Prometheus metric family of the resource metrics.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    samples: Vec<String>,
}

fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            let escaped = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{escaped}\"")
        })
        .collect();
    format!("{{{}}}", inner.join(","))
}

fn rfc3339_ms(at: &str) -> i64 {
    at.parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .unwrap_or(0)
}

fn seconds(ns: u64) -> String {
    format!("{}", ns as f64 / 1e9)
}

/// `/metrics/resource` of `summary`: kubelet's stable resource metrics.
pub fn resource_metrics(summary: &Summary) -> String {
    let mut families = [
        Family {
            name: "container_cpu_usage_seconds_total",
            help: "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
            kind: "counter",
            samples: Vec::new(),
        },
        Family {
            name: "container_memory_working_set_bytes",
            help: "[STABLE] Current working set of the container in bytes",
            kind: "gauge",
            samples: Vec::new(),
        },
        Family {
            name: "container_start_time_seconds",
            help: "[STABLE] Start time of the container since unix epoch in seconds",
            kind: "gauge",
            samples: Vec::new(),
        },
        Family {
            name: "node_cpu_usage_seconds_total",
            help: "[STABLE] Cumulative cpu time consumed by the node in core-seconds",
            kind: "counter",
            samples: Vec::new(),
        },
        Family {
            name: "node_memory_working_set_bytes",
            help: "[STABLE] Current working set of the node in bytes",
            kind: "gauge",
            samples: Vec::new(),
        },
        Family {
            name: "pod_cpu_usage_seconds_total",
            help: "[STABLE] Cumulative cpu time consumed by the pod in core-seconds",
            kind: "counter",
            samples: Vec::new(),
        },
        Family {
            name: "pod_memory_working_set_bytes",
            help: "[STABLE] Current working set of the pod in bytes",
            kind: "gauge",
            samples: Vec::new(),
        },
        Family {
            name: "resource_scrape_error",
            help: "[STABLE] 1 if there was an error while getting container metrics, 0 otherwise",
            kind: "gauge",
            samples: vec!["resource_scrape_error 0".to_string()],
        },
    ];
    let mut push = |family: usize, labels: String, value: String, at: &str| {
        let sample = format!(
            "{}{labels} {value} {}",
            families[family].name,
            rfc3339_ms(at)
        );
        families[family].samples.push(sample);
    };
    let node = &summary.node;
    if let Some(core_ns) = node.cpu.usage_core_nano_seconds {
        push(3, String::new(), seconds(core_ns), &node.cpu.time);
    }
    if let Some(ws) = node.memory.working_set_bytes {
        push(4, String::new(), ws.to_string(), &node.memory.time);
    }
    for pod in &summary.pods {
        let (ns, name) = (pod.pod_ref.namespace.as_str(), pod.pod_ref.name.as_str());
        if let Some(cpu) = &pod.cpu
            && let Some(core_ns) = cpu.usage_core_nano_seconds
        {
            push(
                5,
                labels(&[("namespace", ns), ("pod", name)]),
                seconds(core_ns),
                &cpu.time,
            );
        }
        if let Some(memory) = &pod.memory
            && let Some(ws) = memory.working_set_bytes
        {
            push(
                6,
                labels(&[("namespace", ns), ("pod", name)]),
                ws.to_string(),
                &memory.time,
            );
        }
        for container in &pod.containers {
            let l = labels(&[
                ("container", &container.name),
                ("namespace", ns),
                ("pod", name),
            ]);
            if let Some(cpu) = &container.cpu
                && let Some(core_ns) = cpu.usage_core_nano_seconds
            {
                push(0, l.clone(), seconds(core_ns), &cpu.time);
            }
            if let Some(memory) = &container.memory
                && let Some(ws) = memory.working_set_bytes
            {
                push(1, l.clone(), ws.to_string(), &memory.time);
            }
            let start = rfc3339_ms(&container.start_time) as f64 / 1e3;
            push(2, l, format!("{start}"), &container.start_time);
        }
    }
    let mut out = String::new();
    for family in families {
        out.push_str(&format!("# HELP {} {}\n", family.name, family.help));
        out.push_str(&format!("# TYPE {} {}\n", family.name, family.kind));
        for sample in family.samples {
            out.push_str(&sample);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(v: u64) -> Option<cri::UInt64Value> {
        Some(cri::UInt64Value { value: v })
    }

    const T: i64 = 1_765_000_000_000_000_000;

    fn input() -> SummaryInput {
        let container = cri::ContainerStats {
            attributes: Some(cri::ContainerAttributes {
                id: "c1".into(),
                metadata: Some(cri::ContainerMetadata {
                    name: "main".into(),
                    attempt: 0,
                }),
                ..Default::default()
            }),
            cpu: Some(cri::CpuUsage {
                timestamp: T,
                usage_core_nano_seconds: value(2_500_000_000),
                usage_nano_cores: value(1_000_000),
            }),
            memory: Some(cri::MemoryUsage {
                timestamp: T,
                working_set_bytes: value(4096),
                usage_bytes: value(8192),
                ..Default::default()
            }),
            writable_layer: Some(cri::FilesystemUsage {
                timestamp: T,
                used_bytes: value(100),
                inodes_used: value(3),
                ..Default::default()
            }),
            ..Default::default()
        };
        let pod = cri::PodSandboxStats {
            attributes: Some(cri::PodSandboxAttributes {
                id: "s1".into(),
                metadata: Some(cri::PodSandboxMetadata {
                    name: "web".into(),
                    uid: "u1".into(),
                    namespace: "default".into(),
                    attempt: 0,
                }),
                ..Default::default()
            }),
            linux: Some(cri::LinuxPodSandboxStats {
                cpu: Some(cri::CpuUsage {
                    timestamp: T,
                    usage_core_nano_seconds: value(3_000_000_000),
                    usage_nano_cores: None,
                }),
                memory: Some(cri::MemoryUsage {
                    timestamp: T,
                    working_set_bytes: value(5000),
                    ..Default::default()
                }),
                network: Some(cri::NetworkUsage {
                    timestamp: T,
                    default_interface: Some(cri::NetworkInterfaceUsage {
                        name: "eth0".into(),
                        rx_bytes: value(10),
                        rx_errors: value(0),
                        tx_bytes: value(20),
                        tx_errors: value(0),
                    }),
                    interfaces: Vec::new(),
                }),
                process: Some(cri::ProcessUsage {
                    timestamp: T,
                    process_count: value(2),
                }),
                containers: vec![container],
            }),
            ..Default::default()
        };
        let fs = FsNumbers {
            available: 1000,
            capacity: 5000,
            used: 4000,
            inodes_free: 10,
            inodes: 50,
        };
        SummaryInput {
            node_name: "n1".into(),
            node: NodeSample {
                time_ns: T,
                cpu_usage_core_ns: 7_000_000_000,
                cpu_nano_cores: Some(500_000_000),
                memory_total: 10_000,
                memory_usage: 6000,
                memory_working_set: 4000,
                fs: Some(fs),
                boot_time_ns: T - 3_600_000_000_000,
            },
            image_fs: Some(fs),
            pods: vec![pod],
            sandbox_created: HashMap::from([("s1".to_string(), T - 1_000_000_000)]),
            container_created: HashMap::from([("c1".to_string(), T - 500_000_000)]),
            container_logs: HashMap::from([("c1".to_string(), FsNumbers { used: 42, ..fs })]),
        }
    }

    #[test]
    fn the_summary_has_upstreams_shape() {
        let json = serde_json::to_value(summary(&input())).unwrap();
        let node = &json["node"];
        assert_eq!(node["nodeName"], "n1");
        assert_eq!(node["cpu"]["usageNanoCores"], 500_000_000);
        assert_eq!(node["memory"]["availableBytes"], 6000);
        assert_eq!(node["memory"]["workingSetBytes"], 4000);
        assert_eq!(node["fs"]["inodesUsed"], 40);
        assert_eq!(node["runtime"]["imageFs"]["capacityBytes"], 5000);
        let pod = &json["pods"][0];
        assert_eq!(pod["podRef"]["name"], "web");
        assert_eq!(pod["cpu"]["usageCoreNanoSeconds"], 3_000_000_000u64);
        assert_eq!(pod["network"]["name"], "eth0");
        assert_eq!(pod["process_stats"]["process_count"], 2);
        // Writable layer plus logs.
        assert_eq!(pod["ephemeral-storage"]["usedBytes"], 142);
        let container = &pod["containers"][0];
        assert_eq!(container["name"], "main");
        assert_eq!(container["memory"]["workingSetBytes"], 4096);
        assert_eq!(container["rootfs"]["usedBytes"], 100);
        assert_eq!(container["logs"]["usedBytes"], 42);
        assert!(
            container["startTime"]
                .as_str()
                .unwrap()
                .starts_with("2025-12-06T")
        );
    }

    #[test]
    fn resource_metrics_use_kubelets_names_and_labels() {
        let text = resource_metrics(&summary(&input()));
        let ms = T / 1_000_000;
        for line in [
            format!(
                "container_cpu_usage_seconds_total{{container=\"main\",namespace=\"default\",pod=\"web\"}} 2.5 {ms}"
            ),
            format!(
                "container_memory_working_set_bytes{{container=\"main\",namespace=\"default\",pod=\"web\"}} 4096 {ms}"
            ),
            format!("pod_cpu_usage_seconds_total{{namespace=\"default\",pod=\"web\"}} 3 {ms}"),
            format!("pod_memory_working_set_bytes{{namespace=\"default\",pod=\"web\"}} 5000 {ms}"),
            format!("node_cpu_usage_seconds_total 7 {ms}"),
            format!("node_memory_working_set_bytes 4000 {ms}"),
            "resource_scrape_error 0".to_string(),
            "# TYPE container_cpu_usage_seconds_total counter".to_string(),
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn proc_files_parse() {
        let stat = "cpu  100 5 50 1000 20 3 2 1 0 0\ncpu0 1 2 3 4\nbtime 1765000000\n";
        // (100 + 5 + 50 + 3 + 2 + 1) ticks of 10 ms.
        assert_eq!(parse_proc_stat_cpu(stat), Some(1_610_000_000));
        assert_eq!(parse_boot_time(stat), Some(1_765_000_000));
        let meminfo = "MemTotal:       1000 kB\nMemFree:         200 kB\nMemAvailable:    600 kB\nInactive(file):  100 kB\n";
        assert_eq!(parse_meminfo(meminfo), Some((1_024_000, 819_200, 716_800)));
        assert_eq!(parse_meminfo("nothing"), None);
    }

    #[test]
    fn the_real_host_reads_numbers() {
        let host = ProcHost::new(std::env::temp_dir());
        let first = host.sample();
        assert!(first.memory_total > 0 && first.cpu_usage_core_ns > 0);
        assert!(first.fs.is_some_and(|fs| fs.capacity > 0));
        assert_eq!(first.cpu_nano_cores, None);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(host.sample().cpu_nano_cores.is_some());
    }
}
