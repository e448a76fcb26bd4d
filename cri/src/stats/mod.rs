//! Container and pod statistics for CRI: CPU and memory from each cgroup, the writable
//! layer's size, a pod's network counters and process count. CPU usage in nano cores is a
//! rate between two samples: the collector keeps the previous sample of every container and
//! pod, so the first request after a start has none (kubelet then computes it from its own
//! samples) and later ones cover the time since the previous request.

pub mod cgroup;
pub mod netdev;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use k8s_cri::v1 as cri;

use crate::container::ContainerRecord;
use crate::disk::{DiskError, tree_usage};
use crate::sandbox::SandboxRecord;
use cgroup::{CgroupError, CgroupReader, MemorySample};
use netdev::{NetDevError, NetDevReader, parse_net_dev};

/// Why stats could not be gathered.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// A cgroup file.
    #[error("cgroup stats: {0}")]
    Cgroup(#[from] CgroupError),
    /// The writable layer.
    #[error("writable layer usage: {0}")]
    Disk(#[from] DiskError),
    /// The pod's network namespace.
    #[error("network stats: {0}")]
    Net(#[from] NetDevError),
}

/// The interface CRI reports as a pod's default one.
pub const DEFAULT_INTERFACE: &str = "eth0";

/// A cumulative CPU counter at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuSample {
    /// Wall clock, nanoseconds since the epoch.
    pub timestamp: i64,
    /// Cumulative CPU time, nanoseconds.
    pub usage: u64,
}

/// CPU usage between two samples in nano cores (1e9 = one core busy all the time); `None`
/// when time did not advance or the counter went back (a cgroup made anew under the same id).
pub fn nano_cores(previous: CpuSample, current: CpuSample) -> Option<u64> {
    let elapsed = u128::try_from(current.timestamp.checked_sub(previous.timestamp)?).ok()?;
    let used = u128::from(current.usage.checked_sub(previous.usage)?);
    if elapsed == 0 {
        return None;
    }
    u64::try_from(used * 1_000_000_000 / elapsed).ok()
}

/// Gathers stats; shared by all requests, it remembers the previous CPU sample per object.
pub struct StatsCollector {
    cgroups: Arc<dyn CgroupReader>,
    net: Arc<dyn NetDevReader>,
    previous: Mutex<HashMap<String, CpuSample>>,
}

impl std::fmt::Debug for StatsCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsCollector").finish_non_exhaustive()
    }
}

fn value(value: u64) -> Option<cri::UInt64Value> {
    Some(cri::UInt64Value { value })
}

/// Where a container's writable layer is and which file system holds it.
#[derive(Debug, Clone, Copy)]
pub struct WritableLayer<'a> {
    /// The overlay upper directory.
    pub dir: &'a Path,
    /// The mount point of the image file system (the CRI fs id).
    pub mountpoint: &'a Path,
}

impl StatsCollector {
    /// A collector reading cgroups and network counters through the given readers.
    pub fn new(cgroups: Arc<dyn CgroupReader>, net: Arc<dyn NetDevReader>) -> Self {
        StatsCollector {
            cgroups,
            net,
            previous: Mutex::new(HashMap::new()),
        }
    }

    /// A collector over the real cgroup hierarchies and namespaces.
    pub fn host() -> Self {
        Self::new(
            Arc::new(cgroup::CgroupFs::default()),
            Arc::new(netdev::NetnsDev),
        )
    }

    fn previous(&self) -> std::sync::MutexGuard<'_, HashMap<String, CpuSample>> {
        self.previous
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Remembers `sample` for `key` and returns the rate since the previous one, if any.
    fn rate(&self, key: &str, sample: CpuSample) -> Option<u64> {
        let previous = self.previous().insert(key.to_string(), sample)?;
        nano_cores(previous, sample)
    }

    /// Forgets the samples of objects not in `live` (removed containers and pods).
    pub fn retain(&self, live: &HashSet<String>) {
        self.previous().retain(|k, _| live.contains(k));
    }

    fn cpu(
        &self,
        key: &str,
        path: &str,
        timestamp: i64,
    ) -> Result<Option<cri::CpuUsage>, StatsError> {
        let Some(usage) = cgroup::cpu_usage(self.cgroups.as_ref(), path)? else {
            return Ok(None);
        };
        let rate = self.rate(key, CpuSample { timestamp, usage });
        Ok(Some(cri::CpuUsage {
            timestamp,
            usage_core_nano_seconds: value(usage),
            usage_nano_cores: rate.and_then(value),
        }))
    }

    fn memory(&self, path: &str, timestamp: i64) -> Result<Option<cri::MemoryUsage>, StatsError> {
        Ok(
            cgroup::memory(self.cgroups.as_ref(), path)?.map(|m: MemorySample| cri::MemoryUsage {
                timestamp,
                working_set_bytes: value(m.working_set),
                available_bytes: m.available().and_then(value),
                usage_bytes: value(m.usage),
                rss_bytes: value(m.rss),
                page_faults: value(m.page_faults),
                major_page_faults: value(m.major_page_faults),
            }),
        )
    }

    /// A container's stats at `timestamp`. A container whose cgroup is gone (exited) has
    /// attributes and its writable layer only.
    pub fn container(
        &self,
        record: &ContainerRecord,
        layer: WritableLayer<'_>,
        timestamp: i64,
    ) -> Result<cri::ContainerStats, StatsError> {
        let usage = tree_usage(layer.dir)?;
        Ok(cri::ContainerStats {
            attributes: Some(cri::ContainerAttributes {
                id: record.id.clone(),
                metadata: record.config.metadata.clone(),
                labels: record.config.labels.clone(),
                annotations: record.config.annotations.clone(),
            }),
            cpu: self.cpu(&record.id, &record.cgroups_path, timestamp)?,
            memory: self.memory(&record.cgroups_path, timestamp)?,
            writable_layer: Some(cri::FilesystemUsage {
                timestamp,
                fs_id: Some(cri::FilesystemIdentifier {
                    mountpoint: layer.mountpoint.display().to_string(),
                }),
                used_bytes: value(usage.bytes),
                inodes_used: value(usage.inodes),
            }),
            swap: None,
        })
    }

    /// A pod's stats at `timestamp`: its cgroup (the parent of its containers'), the
    /// counters of its network namespace (none for host-network pods) and `containers`.
    pub fn sandbox(
        &self,
        record: &SandboxRecord,
        containers: Vec<cri::ContainerStats>,
        timestamp: i64,
    ) -> Result<cri::PodSandboxStats, StatsError> {
        let network = match &record.netns {
            Some(netns) => Some(network_usage(&self.net.read(netns)?, timestamp)),
            None => None,
        };
        let process =
            cgroup::process_count(self.cgroups.as_ref(), &record.cgroup_parent)?.map(|count| {
                cri::ProcessUsage {
                    timestamp,
                    process_count: value(count),
                }
            });
        Ok(cri::PodSandboxStats {
            attributes: Some(cri::PodSandboxAttributes {
                id: record.id.clone(),
                metadata: record.config.metadata.clone(),
                labels: record.config.labels.clone(),
                annotations: record.config.annotations.clone(),
            }),
            linux: Some(cri::LinuxPodSandboxStats {
                cpu: self.cpu(&record.id, &record.cgroup_parent, timestamp)?,
                memory: self.memory(&record.cgroup_parent, timestamp)?,
                network,
                process,
                containers,
            }),
            windows: None,
        })
    }
}

/// The CRI network usage from `/proc/net/dev` text: eth0 as the default interface, every
/// interface but loopback in the list.
pub fn network_usage(net_dev: &str, timestamp: i64) -> cri::NetworkUsage {
    let interfaces: Vec<cri::NetworkInterfaceUsage> = parse_net_dev(net_dev)
        .into_iter()
        .filter(|i| i.name != "lo")
        .map(|i| cri::NetworkInterfaceUsage {
            name: i.name,
            rx_bytes: value(i.rx_bytes),
            rx_errors: value(i.rx_errors),
            tx_bytes: value(i.tx_bytes),
            tx_errors: value(i.tx_errors),
        })
        .collect();
    cri::NetworkUsage {
        timestamp,
        default_interface: interfaces
            .iter()
            .find(|i| i.name == DEFAULT_INTERFACE)
            .cloned(),
        interfaces,
    }
}

#[cfg(test)]
mod tests {
    use super::cgroup::tests::FakeCgroups;
    use super::*;
    use std::path::PathBuf;

    /// Serves one canned `/proc/net/dev`; any other namespace is a surprise.
    struct FakeNet(PathBuf, String);

    impl NetDevReader for FakeNet {
        fn read(&self, netns: &Path) -> Result<String, NetDevError> {
            assert_eq!(netns, self.0, "unexpected namespace");
            Ok(self.1.clone())
        }
    }

    const SECOND: i64 = 1_000_000_000;

    fn container(id: &str, cgroup: &str) -> ContainerRecord {
        ContainerRecord {
            id: id.into(),
            sandbox_id: "s1".into(),
            config: cri::ContainerConfig {
                metadata: Some(cri::ContainerMetadata {
                    name: "app".into(),
                    attempt: 0,
                }),
                labels: HashMap::from([(
                    "io.kubernetes.container.name".to_string(),
                    "app".to_string(),
                )]),
                ..Default::default()
            },
            image_ref: "busybox".into(),
            image_id: "sha256:1".into(),
            stop_signal: String::new(),
            created_at: 0,
            started_at: Some(1),
            log_path: None,
            pid: Some(1),
            monitor_pid: Some(2),
            cgroups_path: cgroup.into(),
        }
    }

    fn sandbox(netns: Option<&str>) -> SandboxRecord {
        SandboxRecord {
            id: "s1".into(),
            config: cri::PodSandboxConfig {
                metadata: Some(cri::PodSandboxMetadata {
                    name: "p".into(),
                    namespace: "default".into(),
                    uid: "u".into(),
                    attempt: 0,
                }),
                ..Default::default()
            },
            runtime_handler: String::new(),
            created_at: 0,
            ready: true,
            ip: None,
            netns: netns.map(PathBuf::from),
            ipcns: None,
            utsns: None,
            cgroup_parent: "/pods/s1".into(),
            host_ports: vec![],
        }
    }

    fn collector(cgroups: Arc<FakeCgroups>, net: FakeNet) -> StatsCollector {
        StatsCollector::new(cgroups, Arc::new(net))
    }

    fn no_net() -> FakeNet {
        FakeNet(PathBuf::from("/nowhere"), String::new())
    }

    #[test]
    fn nano_cores_is_the_cpu_time_per_wall_time() {
        let a = CpuSample {
            timestamp: 10 * SECOND,
            usage: 5 * SECOND as u64,
        };
        let b = CpuSample {
            timestamp: 12 * SECOND,
            usage: 6 * SECOND as u64,
        };
        assert_eq!(nano_cores(a, b), Some(500_000_000), "half a core");
        assert_eq!(nano_cores(a, a), None, "no time passed");
        assert_eq!(nano_cores(b, a), None, "clock or counter went back");
        let restarted = CpuSample {
            timestamp: 13 * SECOND,
            usage: 1,
        };
        assert_eq!(nano_cores(b, restarted), None, "a new cgroup");
    }

    #[test]
    fn the_first_sample_has_no_rate_and_the_second_the_rate_since_the_first() {
        let cgroups = Arc::new(FakeCgroups::default());
        let stats = collector(cgroups.clone(), no_net());
        let layer_dir = tempfile::tempdir().unwrap();
        let layer = WritableLayer {
            dir: layer_dir.path(),
            mountpoint: Path::new("/var"),
        };
        let record = container("c1", "/pods/s1/c1");
        cgroups.set("cpuacct", "/pods/s1/c1", "cpuacct.usage", "1000000000\n");
        let first = stats.container(&record, layer, 100 * SECOND).unwrap();
        let cpu = first.cpu.unwrap();
        assert_eq!(cpu.usage_core_nano_seconds.unwrap().value, 1_000_000_000);
        assert_eq!(cpu.usage_nano_cores, None);
        cgroups.set("cpuacct", "/pods/s1/c1", "cpuacct.usage", "2500000000\n");
        let second = stats.container(&record, layer, 102 * SECOND).unwrap();
        assert_eq!(
            second.cpu.unwrap().usage_nano_cores.unwrap().value,
            750_000_000
        );
        // Forgotten once removed: the rate starts over.
        stats.retain(&HashSet::new());
        let third = stats.container(&record, layer, 103 * SECOND).unwrap();
        assert_eq!(third.cpu.unwrap().usage_nano_cores, None);
    }

    #[test]
    fn an_exited_container_has_attributes_and_writable_layer_only() {
        let stats = collector(Arc::new(FakeCgroups::default()), no_net());
        let layer_dir = tempfile::tempdir().unwrap();
        std::fs::write(layer_dir.path().join("written"), vec![1u8; 8192]).unwrap();
        let s = stats
            .container(
                &container("c1", "/pods/s1/c1"),
                WritableLayer {
                    dir: layer_dir.path(),
                    mountpoint: Path::new("/var"),
                },
                SECOND,
            )
            .unwrap();
        assert_eq!(s.attributes.as_ref().unwrap().id, "c1");
        assert_eq!(
            s.attributes.unwrap().labels["io.kubernetes.container.name"],
            "app"
        );
        assert!(s.cpu.is_none() && s.memory.is_none());
        let layer = s.writable_layer.unwrap();
        assert_eq!(layer.fs_id.unwrap().mountpoint, "/var");
        assert_eq!(layer.inodes_used.unwrap().value, 1);
        assert!(layer.used_bytes.unwrap().value >= 8192);
    }

    #[test]
    fn a_pod_reports_its_cgroup_its_network_and_its_processes() {
        let cgroups = Arc::new(FakeCgroups::default());
        cgroups.set("cpuacct", "/pods/s1", "cpuacct.usage", "42\n");
        cgroups.set("memory", "/pods/s1", "memory.usage_in_bytes", "4096\n");
        cgroups.set("memory", "/pods/s1", "memory.limit_in_bytes", "8192\n");
        cgroups.set(
            "memory",
            "/pods/s1",
            "memory.stat",
            "total_inactive_file 1024\n",
        );
        cgroups.set("pids", "/pods/s1", "pids.current", "2\n");
        let net = FakeNet(
            PathBuf::from("/run/ns/net"),
            "h1\nh2\n    lo: 9 9 0 0 0 0 0 0 9 9 0 0 0 0 0 0\n  eth0: 100 1 0 0 0 0 0 0 200 2 3 0 0 0 0 0\n"
                .into(),
        );
        let stats = collector(cgroups, net);
        let s = stats
            .sandbox(&sandbox(Some("/run/ns/net")), vec![], SECOND)
            .unwrap();
        assert_eq!(s.attributes.unwrap().metadata.unwrap().name, "p");
        let linux = s.linux.unwrap();
        assert_eq!(
            linux.cpu.unwrap().usage_core_nano_seconds.unwrap().value,
            42
        );
        let memory = linux.memory.unwrap();
        assert_eq!(memory.working_set_bytes.unwrap().value, 3072);
        assert_eq!(memory.available_bytes.unwrap().value, 8192 - 3072);
        assert_eq!(linux.process.unwrap().process_count.unwrap().value, 2);
        let network = linux.network.unwrap();
        let eth0 = network.default_interface.unwrap();
        assert_eq!(
            (
                eth0.name.as_str(),
                eth0.rx_bytes.unwrap().value,
                eth0.tx_bytes.unwrap().value,
                eth0.tx_errors.unwrap().value
            ),
            ("eth0", 100, 200, 3)
        );
        assert_eq!(network.interfaces.len(), 1, "loopback left out");
    }

    #[test]
    fn a_host_network_pod_without_containers_has_no_network_or_cgroup_stats() {
        let stats = collector(Arc::new(FakeCgroups::default()), no_net());
        let linux = stats
            .sandbox(&sandbox(None), vec![], SECOND)
            .unwrap()
            .linux
            .unwrap();
        assert!(linux.network.is_none() && linux.cpu.is_none() && linux.memory.is_none());
        assert!(linux.process.is_none());
    }
}
