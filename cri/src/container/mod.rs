//! Containers: their on-disk record, root filesystem (overlayfs over the image's shared layer
//! directories with a per-container upper directory), OCI spec, runtime driver, monitor and
//! CRI log format.

pub mod attach;
pub mod log;
pub mod monitor;
pub mod oci;
pub mod spec;

use std::path::{Path, PathBuf};

use k8s_cri::v1::ContainerConfig;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use serde::{Deserialize, Serialize};

/// A container as recorded on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// Container id.
    pub id: String,
    /// Its sandbox.
    pub sandbox_id: String,
    /// The config it was created with.
    pub config: ContainerConfig,
    /// The image as the caller named it.
    pub image_ref: String,
    /// The image id (config digest).
    pub image_id: String,
    /// The image's StopSignal.
    pub stop_signal: String,
    /// Creation time, nanoseconds since the epoch.
    pub created_at: i64,
    /// Start time, once started.
    pub started_at: Option<i64>,
    /// The CRI log file, if any.
    pub log_path: Option<PathBuf>,
    /// Init pid once created.
    pub pid: Option<u32>,
    /// Monitor pid once created.
    pub monitor_pid: Option<u32>,
    /// Its cgroup path.
    pub cgroups_path: String,
}

/// Mounts the overlay root filesystem at `target`: `layers` lowest first, the writable layer
/// in `upper` and overlayfs's scratch in `work`.
pub fn mount_rootfs(
    layers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> std::io::Result<()> {
    for dir in [upper, work, target] {
        std::fs::create_dir_all(dir)?;
    }
    if layers.is_empty() {
        return Err(std::io::Error::other("the image has no layers"));
    }
    let lower: Vec<String> = layers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(|e| std::io::Error::other(format!("mount overlay at {}: {e}", target.display())))
}

/// Unmounts the root filesystem; an unmounted one is fine.
pub fn unmount_rootfs(target: &Path) {
    while umount2(target, MntFlags::MNT_DETACH).is_ok() {}
}
