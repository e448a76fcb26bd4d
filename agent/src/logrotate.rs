//! Container log rotation, as kubelet's container log manager does it: every monitor interval
//! (10 s) each running container's log file is checked; one that reached
//! `--container-log-max-size` (10Mi) is renamed to `<log>.<YYYYMMDD-HHMMSS>` and the runtime
//! is asked to reopen it (CRI ReopenContainerLog), so at most `--container-log-max-files` (5)
//! files per container exist: the live one, the newest rotated one kept plain (so a reader
//! following the log can finish it), and older ones gzip-compressed (`.gz`), the oldest
//! deleted first. Temporary files of an interrupted compression and plain copies that already
//! have a `.gz` are removed.
//!
//! [`plan`] is the pure decision; [`LogFiles`] (the filesystem) and [`LogRuntime`] (the CRI
//! calls) are the side effects, and [`run`] the loop.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::runtime::{ContainerRuntime, RuntimeError};

/// Suffix of a compression in progress.
const TMP_SUFFIX: &str = ".tmp";
/// Suffix of a compressed rotated log.
const GZ_SUFFIX: &str = ".gz";

/// How logs rotate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Size at which the live log is rotated.
    pub max_size: u64,
    /// Files kept per container, the live one included (at least 2).
    pub max_files: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_size: 10 * 1024 * 1024,
            max_files: 5,
        }
    }
}

/// One thing to do to a container's log files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Delete a file.
    Remove(PathBuf),
    /// Gzip a rotated file into `<file>.gz` and delete the plain one.
    Compress(PathBuf),
    /// Rename the live log and have the runtime reopen it.
    Rotate {
        /// The live log.
        from: PathBuf,
        /// Its rotated name.
        to: PathBuf,
    },
}

/// What to do with the live log `log` of `size` bytes, given the names of the files beside
/// it that start with `<log file name>.` (`siblings`) and the current time's stamp
/// (`YYYYMMDD-HHMMSS`). Nothing when the log is under the limit.
pub fn plan(log: &Path, size: u64, siblings: &[String], policy: Policy, stamp: &str) -> Vec<Step> {
    if size < policy.max_size {
        return Vec::new();
    }
    let Some(dir) = log.parent() else {
        return Vec::new();
    };
    let Some(base) = log.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Vec::new();
    };
    let prefix = format!("{base}.");
    let mut steps = Vec::new();
    let mut rotated: Vec<&String> = Vec::new();
    for name in siblings {
        if !name.starts_with(&prefix) {
            continue;
        }
        let plain_has_gz = !name.ends_with(GZ_SUFFIX)
            && siblings
                .iter()
                .any(|other| *other == format!("{name}{GZ_SUFFIX}"));
        if name.ends_with(TMP_SUFFIX) || plain_has_gz {
            steps.push(Step::Remove(dir.join(name)));
        } else {
            rotated.push(name);
        }
    }
    // Names sort by their time stamp (a `.gz` suffix does not change the order).
    rotated.sort();
    // The live log and the one about to be rotated take two of the files.
    let keep = policy.max_files.saturating_sub(2);
    let excess = rotated.len().saturating_sub(keep);
    for name in rotated.drain(..excess) {
        steps.push(Step::Remove(dir.join(name)));
    }
    // All but the newest rotated file are compressed; the newest stays plain until the next
    // rotation, as a follower may still be reading it.
    for name in rotated.iter().take(rotated.len().saturating_sub(1)) {
        if !name.ends_with(GZ_SUFFIX) {
            steps.push(Step::Compress(dir.join(name)));
        }
    }
    let to = dir.join(format!("{base}.{stamp}"));
    if siblings.iter().any(|n| dir.join(n) == to) {
        // Rotated already within this second; the next round does it.
        return steps;
    }
    steps.push(Step::Rotate {
        from: log.to_path_buf(),
        to,
    });
    steps
}

/// The filesystem operations of rotation.
pub trait LogFiles: Send + Sync {
    /// The size of `path`, `None` when it does not exist.
    fn size(&self, path: &Path) -> std::io::Result<Option<u64>>;
    /// Names in `dir`.
    fn list(&self, dir: &Path) -> std::io::Result<Vec<String>>;
    /// Deletes a file (a missing one is fine).
    fn remove(&self, path: &Path) -> std::io::Result<()>;
    /// Renames a file.
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()>;
    /// Writes `<path>.gz` (through a `.tmp` file) and deletes `path`.
    fn compress(&self, path: &Path) -> std::io::Result<()>;
}

/// The real filesystem.
pub struct RealLogFiles;

impl LogFiles for RealLogFiles {
    fn size(&self, path: &Path) -> std::io::Result<Option<u64>> {
        match std::fs::metadata(path) {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn list(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    fn remove(&self, path: &Path) -> std::io::Result<()> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        std::fs::rename(from, to)
    }

    fn compress(&self, path: &Path) -> std::io::Result<()> {
        let gz = PathBuf::from(format!("{}{GZ_SUFFIX}", path.display()));
        let tmp = PathBuf::from(format!("{}{TMP_SUFFIX}", gz.display()));
        let result = (|| {
            let mut input = std::fs::File::open(path)?;
            let output = std::fs::File::create(&tmp)?;
            let mut encoder = flate2::write::GzEncoder::new(output, flate2::Compression::default());
            std::io::copy(&mut input, &mut encoder)?;
            encoder.finish()?.sync_all()?;
            std::fs::rename(&tmp, &gz)?;
            std::fs::remove_file(path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

/// The runtime calls of rotation.
#[async_trait]
pub trait LogRuntime: Send + Sync {
    /// Running containers: id and log path.
    async fn running_logs(&self) -> Result<Vec<(String, PathBuf)>, RuntimeError>;
    /// ReopenContainerLog.
    async fn reopen_log(&self, id: &str) -> Result<(), RuntimeError>;
}

#[async_trait]
impl LogRuntime for Arc<dyn ContainerRuntime> {
    async fn running_logs(&self) -> Result<Vec<(String, PathBuf)>, RuntimeError> {
        let mut logs = Vec::new();
        for container in self.list_containers().await? {
            if container.state != k8s_cri::v1::ContainerState::ContainerRunning as i32 {
                continue;
            }
            // A container gone between the list and the status is skipped.
            if let Ok(status) = self.container_status(&container.id).await
                && !status.log_path.is_empty()
            {
                logs.push((container.id, PathBuf::from(status.log_path)));
            }
        }
        Ok(logs)
    }

    async fn reopen_log(&self, id: &str) -> Result<(), RuntimeError> {
        self.reopen_container_log(id).await
    }
}

/// Why one container's rotation failed.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was done.
        op: &'static str,
        /// On which file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The runtime did not reopen the log (the rename was undone).
    #[error("reopen log of container {id}: {source}")]
    Reopen {
        /// The container.
        id: String,
        /// The runtime's error.
        source: RuntimeError,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> RotateError + 'a {
    move |source| RotateError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Rotates one container's log if it needs it. Returns whether it was rotated. The file work
/// (compression above all) runs on a blocking thread, off the async workers.
pub async fn rotate_one(
    files: &Arc<dyn LogFiles>,
    runtime: &dyn LogRuntime,
    id: &str,
    log: &Path,
    policy: Policy,
    stamp: &str,
) -> Result<bool, RotateError> {
    let (task_files, task_log, task_stamp) = (files.clone(), log.to_path_buf(), stamp.to_string());
    let renamed =
        tokio::task::spawn_blocking(move || prepare(&*task_files, &task_log, policy, &task_stamp))
            .await
            .map_err(|e| RotateError::Io {
                op: "rotate",
                path: log.to_path_buf(),
                source: std::io::Error::other(e.to_string()),
            })??;
    let Some((from, to)) = renamed else {
        return Ok(false);
    };
    if let Err(source) = runtime.reopen_log(id).await {
        // Put the file back so the runtime keeps writing where it was.
        let _ = files.rename(&to, &from);
        return Err(RotateError::Reopen {
            id: id.to_string(),
            source,
        });
    }
    Ok(true)
}

/// The file part of a rotation: removals, compressions and the rename of the live log, which
/// is returned (from, to) when it happened.
fn prepare(
    files: &dyn LogFiles,
    log: &Path,
    policy: Policy,
    stamp: &str,
) -> Result<Option<(PathBuf, PathBuf)>, RotateError> {
    let Some(size) = files.size(log).map_err(io("stat", log))? else {
        return Ok(None);
    };
    if size < policy.max_size {
        return Ok(None);
    }
    let dir = log.parent().unwrap_or(Path::new("/"));
    let siblings = files.list(dir).map_err(io("list", dir))?;
    let mut renamed = None;
    for step in plan(log, size, &siblings, policy, stamp) {
        match step {
            Step::Remove(path) => files.remove(&path).map_err(io("remove", &path))?,
            Step::Compress(path) => files.compress(&path).map_err(io("compress", &path))?,
            Step::Rotate { from, to } => {
                files.rename(&from, &to).map_err(io("rename", &from))?;
                renamed = Some((from, to));
            }
        }
    }
    Ok(renamed)
}

/// The time stamp of rotated names, in UTC.
pub fn stamp(now: jiff::Timestamp) -> String {
    now.strftime("%Y%m%d-%H%M%S").to_string()
}

/// Checks every running container's log each `interval` until shutdown.
pub async fn run(
    files: Arc<dyn LogFiles>,
    runtime: Arc<dyn LogRuntime>,
    policy: Policy,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        let logs = match runtime.running_logs().await {
            Ok(logs) => logs,
            Err(e) => {
                tracing::warn!(error = %e, "log rotation: listing containers failed");
                continue;
            }
        };
        let now = stamp(jiff::Timestamp::now());
        for (id, log) in logs {
            match rotate_one(&files, &*runtime, &id, &log, policy, &now).await {
                Ok(true) => {
                    tracing::info!(container = %id, log = %log.display(), "rotated container log")
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(container = %id, error = %e, "log rotation failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    const POLICY: Policy = Policy {
        max_size: 100,
        max_files: 5,
    };

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn p(name: &str) -> PathBuf {
        PathBuf::from("/logs/c").join(name)
    }

    #[test]
    fn small_logs_are_left_alone() {
        assert!(
            plan(
                &p("0.log"),
                99,
                &names(&["0.log"]),
                POLICY,
                "20260101-000000"
            )
            .is_empty()
        );
    }

    #[test]
    fn the_first_rotation_only_renames() {
        assert_eq!(
            plan(
                &p("0.log"),
                100,
                &names(&["0.log"]),
                POLICY,
                "20260101-000000"
            ),
            [Step::Rotate {
                from: p("0.log"),
                to: p("0.log.20260101-000000")
            }]
        );
    }

    #[test]
    fn older_rotations_are_compressed_and_the_oldest_removed() {
        let siblings = names(&[
            "0.log",
            "0.log.20260101-000003",
            "0.log.20260101-000001.gz",
            "0.log.20260101-000002.gz",
            "0.log.20260101-000000.gz",
            "1.log",
            "0.log.20260101-000002.gz.tmp",
        ]);
        let steps = plan(&p("0.log"), 500, &siblings, POLICY, "20260101-000004");
        assert_eq!(
            steps,
            [
                Step::Remove(p("0.log.20260101-000002.gz.tmp")),
                // 5 files: the live one and the one rotated now take two, so 3 stay.
                Step::Remove(p("0.log.20260101-000000.gz")),
                Step::Rotate {
                    from: p("0.log"),
                    to: p("0.log.20260101-000004")
                },
            ]
        );
    }

    #[test]
    fn all_but_the_newest_rotated_log_are_compressed() {
        let siblings = names(&["0.log", "0.log.20260101-000001", "0.log.20260101-000002"]);
        assert_eq!(
            plan(&p("0.log"), 500, &siblings, POLICY, "20260101-000003"),
            [
                Step::Compress(p("0.log.20260101-000001")),
                Step::Rotate {
                    from: p("0.log"),
                    to: p("0.log.20260101-000003")
                },
            ]
        );
    }

    #[test]
    fn plain_copies_of_compressed_logs_are_removed() {
        let siblings = names(&["0.log", "0.log.20260101-000001", "0.log.20260101-000001.gz"]);
        let steps = plan(&p("0.log"), 500, &siblings, POLICY, "20260101-000002");
        assert_eq!(steps[0], Step::Remove(p("0.log.20260101-000001")));
    }

    #[test]
    fn two_files_keep_only_the_live_and_the_last_rotated() {
        let policy = Policy {
            max_size: 100,
            max_files: 2,
        };
        let siblings = names(&["0.log", "0.log.20260101-000001"]);
        assert_eq!(
            plan(&p("0.log"), 500, &siblings, policy, "20260101-000002"),
            [
                Step::Remove(p("0.log.20260101-000001")),
                Step::Rotate {
                    from: p("0.log"),
                    to: p("0.log.20260101-000002")
                },
            ]
        );
    }

    #[test]
    fn a_rotation_within_the_same_second_waits() {
        let siblings = names(&["0.log", "0.log.20260101-000001"]);
        let steps = plan(&p("0.log"), 500, &siblings, POLICY, "20260101-000001");
        assert!(
            !steps.iter().any(|s| matches!(s, Step::Rotate { .. })),
            "{steps:?}"
        );
    }

    #[test]
    fn stamps_are_kubelets_format() {
        let t: jiff::Timestamp = "2026-12-08T01:02:03.456Z".parse().unwrap();
        assert_eq!(stamp(t), "20261208-010203");
    }

    struct FailingReopen;

    #[async_trait]
    impl LogRuntime for FailingReopen {
        async fn running_logs(&self) -> Result<Vec<(String, PathBuf)>, RuntimeError> {
            Ok(Vec::new())
        }
        async fn reopen_log(&self, _id: &str) -> Result<(), RuntimeError> {
            Err(RuntimeError::Unreachable {
                endpoint: "/run/test.sock".into(),
                message: "runtime down".into(),
            })
        }
    }

    struct Reopened(Mutex<Vec<String>>);

    #[async_trait]
    impl LogRuntime for Reopened {
        async fn running_logs(&self) -> Result<Vec<(String, PathBuf)>, RuntimeError> {
            Ok(Vec::new())
        }
        async fn reopen_log(&self, id: &str) -> Result<(), RuntimeError> {
            self.0.lock().unwrap().push(id.to_string());
            Ok(())
        }
    }

    #[tokio::test]
    async fn real_files_rotate_compress_and_survive_a_failed_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("0.log");
        let policy = Policy {
            max_size: 10,
            max_files: 4,
        };
        let reopened = Reopened(Mutex::new(Vec::new()));
        let files: Arc<dyn LogFiles> = Arc::new(RealLogFiles);
        let mut contents = BTreeMap::new();
        for (i, stamp) in ["20260101-000001", "20260101-000002", "20260101-000003"]
            .into_iter()
            .enumerate()
        {
            let text = format!("round {i} ......\n");
            std::fs::write(&log, &text).unwrap();
            contents.insert(stamp, text);
            assert!(
                rotate_one(&files, &reopened, "c1", &log, policy, stamp)
                    .await
                    .unwrap()
            );
        }
        let mut left = RealLogFiles.list(dir.path()).unwrap();
        left.sort();
        // The live log is gone (the runtime would reopen it); the oldest is compressed.
        assert_eq!(
            left,
            [
                "0.log.20260101-000001.gz",
                "0.log.20260101-000002",
                "0.log.20260101-000003"
            ]
        );
        let mut unzipped = String::new();
        std::io::Read::read_to_string(
            &mut flate2::read::GzDecoder::new(
                std::fs::File::open(dir.path().join("0.log.20260101-000001.gz")).unwrap(),
            ),
            &mut unzipped,
        )
        .unwrap();
        assert_eq!(unzipped, contents["20260101-000001"]);
        assert_eq!(reopened.0.lock().unwrap().len(), 3);

        // The runtime cannot reopen: the file goes back where it was.
        std::fs::write(&log, "0123456789abc").unwrap();
        let err = rotate_one(
            &files,
            &FailingReopen,
            "c1",
            &log,
            policy,
            "20260101-000004",
        )
        .await
        .unwrap_err();
        assert!(matches!(err, RotateError::Reopen { .. }), "{err}");
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "0123456789abc");
    }
}
