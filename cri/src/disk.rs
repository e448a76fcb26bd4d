//! File system usage of a directory tree (allocated bytes and distinct inodes) and the mount
//! point holding a path: what `ImageFsInfo` reports for the image store and container stats
//! report for a container's writable layer.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Why usage could not be measured.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}: {source}", path.display())]
pub struct DiskError {
    /// What was being done.
    pub op: &'static str,
    /// Where.
    pub path: PathBuf,
    /// The error.
    #[source]
    pub source: io::Error,
}

fn io_error(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DiskError + use<> {
    let path = path.to_path_buf();
    move |source| DiskError { op, path, source }
}

/// Allocated bytes and distinct inodes below a directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeUsage {
    /// Bytes allocated (blocks of 512 bytes), each inode counted once.
    pub bytes: u64,
    /// Distinct inodes (hard links count once).
    pub inodes: u64,
}

/// Walks the tree below `root` (not counting `root` itself), counting each inode once, so
/// hard-linked files shared between layers are not counted twice. Entries removed during the
/// walk are skipped; a missing `root` is empty.
pub fn tree_usage(root: &Path) -> Result<TreeUsage, DiskError> {
    let mut seen = HashSet::new();
    let mut bytes = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            // Removed under us (a garbage collection, a container removed).
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error("read", &dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_error("read", &dir))?;
            let Ok(meta) = entry.metadata() else { continue };
            if seen.insert((meta.dev(), meta.ino())) {
                bytes += meta.blocks() * 512;
            }
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(TreeUsage {
        bytes,
        inodes: seen.len() as u64,
    })
}

/// The mount point of the file system holding `path`: the longest mount point in
/// /proc/self/mountinfo that prefixes its canonical form.
pub fn mountpoint_of(path: &Path) -> Result<PathBuf, DiskError> {
    let path = path.canonicalize().map_err(io_error("resolve", path))?;
    let mountinfo = Path::new("/proc/self/mountinfo");
    let text = fs::read_to_string(mountinfo).map_err(io_error("read", mountinfo))?;
    let best = text
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(field.replace("\\040", " ")))
        .filter(|mount| path.starts_with(mount))
        .max_by_key(|mount| mount.as_os_str().len());
    Ok(best.unwrap_or_else(|| PathBuf::from("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_usage_counts_hard_links_once_and_a_missing_root_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let empty = tree_usage(dir.path()).unwrap();
        assert_eq!(empty, TreeUsage::default());
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub/big"), vec![7u8; 100_000]).unwrap();
        fs::hard_link(dir.path().join("sub/big"), dir.path().join("link")).unwrap();
        let used = tree_usage(dir.path()).unwrap();
        assert_eq!(used.inodes, 2, "the directory and the file, linked twice");
        assert!(
            (100_000..200_000).contains(&used.bytes),
            "{used:?}: the file counted once"
        );
        assert_eq!(
            tree_usage(&dir.path().join("gone")).unwrap(),
            TreeUsage::default()
        );
    }

    #[test]
    fn the_mountpoint_prefixes_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let mount = mountpoint_of(dir.path()).unwrap();
        assert!(dir.path().canonicalize().unwrap().starts_with(&mount));
    }
}
