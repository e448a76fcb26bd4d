//! Cgroup v1 accounting files behind a narrow trait ([`CgroupReader`]), and what the stats
//! read from them: cumulative CPU time (`cpuacct.usage`), memory (`memory.usage_in_bytes`,
//! `memory.limit_in_bytes`, the hierarchical totals of `memory.stat`) and the number of tasks
//! (`pids.current`). Parsing is pure; [`CgroupFs`] reads the real hierarchies.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

/// Why a cgroup file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// Reading failed for another reason than the cgroup being gone.
    #[error("read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The file holds something else than the kernel writes there.
    #[error("unexpected content in {path}: {content:?}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What it held (trimmed).
        content: String,
    },
}

/// Reads files of cgroups in the v1 hierarchies.
pub trait CgroupReader: Send + Sync {
    /// The content of `file` in the cgroup `path` (like `/kubepods/pod1/c1`) of the
    /// hierarchy of `controller`; `None` when the cgroup does not exist (never created, or
    /// removed once its container exited).
    fn read(&self, controller: &str, path: &str, file: &str)
    -> Result<Option<String>, CgroupError>;
}

/// The real hierarchies, mounted per controller under `root` (`/sys/fs/cgroup`).
#[derive(Debug, Clone)]
pub struct CgroupFs {
    /// Where the hierarchies are mounted.
    pub root: PathBuf,
}

impl Default for CgroupFs {
    fn default() -> Self {
        CgroupFs {
            root: PathBuf::from("/sys/fs/cgroup"),
        }
    }
}

impl CgroupFs {
    fn file(&self, controller: &str, path: &str, file: &str) -> PathBuf {
        self.root
            .join(controller)
            .join(path.trim_start_matches('/'))
            .join(file)
    }
}

impl CgroupReader for CgroupFs {
    fn read(
        &self,
        controller: &str,
        path: &str,
        file: &str,
    ) -> Result<Option<String>, CgroupError> {
        let path = self.file(controller, path, file);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            // ENODEV: the cgroup was removed between open and read.
            Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(19) => {
                Ok(None)
            }
            Err(source) => Err(CgroupError::Read { path, source }),
        }
    }
}

fn parse_u64(controller: &str, file: &str, text: &str) -> Result<u64, CgroupError> {
    text.trim().parse().map_err(|_| CgroupError::Parse {
        path: Path::new(controller).join(file),
        content: text.trim().to_string(),
    })
}

/// Cumulative CPU time of the cgroup's tasks in nanoseconds, if the cgroup exists.
pub fn cpu_usage(reader: &dyn CgroupReader, path: &str) -> Result<Option<u64>, CgroupError> {
    reader
        .read("cpuacct", path, "cpuacct.usage")?
        .map(|text| parse_u64("cpuacct", "cpuacct.usage", &text))
        .transpose()
}

/// Number of tasks in the cgroup and below it, if the cgroup exists.
pub fn process_count(reader: &dyn CgroupReader, path: &str) -> Result<Option<u64>, CgroupError> {
    reader
        .read("pids", path, "pids.current")?
        .map(|text| parse_u64("pids", "pids.current", &text))
        .transpose()
}

/// Memory of a cgroup, as kubelet reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemorySample {
    /// Everything charged to the cgroup, page cache included.
    pub usage: u64,
    /// Usage minus inactive file pages: what the kernel cannot easily reclaim, and what
    /// kubelet evicts on.
    pub working_set: u64,
    /// Anonymous memory and swap cache.
    pub rss: u64,
    /// Page faults.
    pub page_faults: u64,
    /// Major page faults.
    pub major_page_faults: u64,
    /// The limit, when there is one.
    pub limit: Option<u64>,
}

impl MemorySample {
    /// What may still be used before the limit: limit minus working set, when limited.
    pub fn available(&self) -> Option<u64> {
        self.limit.map(|l| l.saturating_sub(self.working_set))
    }
}

/// Limits at or above this are "unlimited": cgroup v1 reports the largest page-aligned
/// counter (9223372036854771712 with 4 KiB pages) for a cgroup without a limit.
const UNLIMITED: u64 = 1 << 62;

/// The `key value` lines of `memory.stat`.
pub fn parse_memory_stat(text: &str) -> HashMap<&str, u64> {
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(' ')?;
            Some((key, value.trim().parse().ok()?))
        })
        .collect()
}

/// Computes a [`MemorySample`] from the three files' contents. The hierarchical `total_*`
/// counters are used, so a pod's cgroup counts its containers.
pub fn memory_sample(usage: &str, limit: &str, stat: &str) -> Result<MemorySample, CgroupError> {
    let usage = parse_u64("memory", "memory.usage_in_bytes", usage)?;
    let limit = parse_u64("memory", "memory.limit_in_bytes", limit)?;
    let stat = parse_memory_stat(stat);
    let get = |key: &str| stat.get(key).copied().unwrap_or(0);
    Ok(MemorySample {
        usage,
        working_set: usage.saturating_sub(get("total_inactive_file")),
        rss: get("total_rss"),
        page_faults: get("total_pgfault"),
        major_page_faults: get("total_pgmajfault"),
        limit: (limit < UNLIMITED).then_some(limit),
    })
}

/// The memory of the cgroup at `path`, if it exists.
pub fn memory(reader: &dyn CgroupReader, path: &str) -> Result<Option<MemorySample>, CgroupError> {
    let read = |file| reader.read("memory", path, file);
    let (Some(usage), Some(limit), Some(stat)) = (
        read("memory.usage_in_bytes")?,
        read("memory.limit_in_bytes")?,
        read("memory.stat")?,
    ) else {
        return Ok(None);
    };
    memory_sample(&usage, &limit, &stat).map(Some)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Cgroup files from a map of `controller/path/file`; anything else is a missing cgroup.
    #[derive(Default)]
    pub(crate) struct FakeCgroups {
        pub files: Mutex<HashMap<String, String>>,
    }

    impl FakeCgroups {
        pub fn set(&self, controller: &str, path: &str, file: &str, text: &str) {
            self.files
                .lock()
                .unwrap()
                .insert(format!("{controller}{path}/{file}"), text.to_string());
        }
    }

    impl CgroupReader for FakeCgroups {
        fn read(
            &self,
            controller: &str,
            path: &str,
            file: &str,
        ) -> Result<Option<String>, CgroupError> {
            Ok(self
                .files
                .lock()
                .unwrap()
                .get(&format!("{controller}{path}/{file}"))
                .cloned())
        }
    }

    const STAT: &str = "cache 8192\nrss 4096\ntotal_cache 1048576\ntotal_rss 2097152\n\
        total_inactive_file 524288\ntotal_pgfault 1234\ntotal_pgmajfault 5\n";

    #[test]
    fn working_set_is_usage_minus_inactive_file_with_the_hierarchical_totals() {
        let m = memory_sample("3145728\n", "9223372036854771712\n", STAT).unwrap();
        assert_eq!(
            m,
            MemorySample {
                usage: 3_145_728,
                working_set: 3_145_728 - 524_288,
                rss: 2_097_152,
                page_faults: 1234,
                major_page_faults: 5,
                limit: None,
            }
        );
        assert_eq!(m.available(), None, "unlimited");
    }

    #[test]
    fn a_limit_gives_available_bytes_and_never_underflows() {
        let m = memory_sample("3145728", "4194304", STAT).unwrap();
        assert_eq!(m.available(), Some(4_194_304 - (3_145_728 - 524_288)));
        let over = memory_sample("100", "50", "total_inactive_file 1000\n").unwrap();
        assert_eq!(over.working_set, 0);
        assert_eq!(over.available(), Some(50));
    }

    #[test]
    fn garbage_in_a_counter_is_an_error_naming_the_file() {
        let err = memory_sample("lots", "1", "").unwrap_err().to_string();
        assert!(err.contains("memory.usage_in_bytes"), "{err}");
        assert!(err.contains("lots"), "{err}");
    }

    #[test]
    fn missing_cgroups_read_as_none() {
        let fake = FakeCgroups::default();
        assert_eq!(cpu_usage(&fake, "/gone").unwrap(), None);
        assert_eq!(memory(&fake, "/gone").unwrap(), None);
        assert_eq!(process_count(&fake, "/gone").unwrap(), None);
        fake.set("cpuacct", "/p", "cpuacct.usage", "12345\n");
        fake.set("pids", "/p", "pids.current", "3\n");
        assert_eq!(cpu_usage(&fake, "/p").unwrap(), Some(12345));
        assert_eq!(process_count(&fake, "/p").unwrap(), Some(3));
    }

    #[test]
    fn the_real_hierarchy_of_this_process_reads_when_present() {
        let fs = CgroupFs::default();
        if !Path::new("/sys/fs/cgroup/cpuacct/cpuacct.usage").exists() {
            eprintln!("skipped: no cgroup v1 cpuacct hierarchy");
            return;
        }
        assert!(cpu_usage(&fs, "/").unwrap().is_some_and(|u| u > 0));
        assert_eq!(cpu_usage(&fs, "/no-such-cgroup-here").unwrap(), None);
    }
}
