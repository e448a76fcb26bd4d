//! Pod namespaces without a pause process: a short-lived thread unshares the network, IPC and
//! UTS namespaces, sets the hostname, and bind-mounts its namespace files onto files in the
//! sandbox's state directory. The bind mounts keep the namespaces alive; containers join them
//! by path. Unpinning unmounts and removes the files; both directions are idempotent.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};

/// A namespace kind a sandbox may own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamespaceKind {
    /// Network.
    Net,
    /// System V IPC and POSIX message queues.
    Ipc,
    /// Hostname.
    Uts,
}

impl NamespaceKind {
    /// The file name under /proc/<tid>/ns and in the pin directory.
    pub fn file_name(self) -> &'static str {
        match self {
            Self::Net => "net",
            Self::Ipc => "ipc",
            Self::Uts => "uts",
        }
    }

    /// The OCI namespace type name.
    pub fn oci_name(self) -> &'static str {
        match self {
            Self::Net => "network",
            Self::Ipc => "ipc",
            Self::Uts => "uts",
        }
    }

    fn clone_flag(self) -> CloneFlags {
        match self {
            Self::Net => CloneFlags::CLONE_NEWNET,
            Self::Ipc => CloneFlags::CLONE_NEWIPC,
            Self::Uts => CloneFlags::CLONE_NEWUTS,
        }
    }
}

/// Why pinning failed.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    /// A system call failed.
    #[error("{what}: {source}")]
    Sys {
        /// The step that failed.
        what: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

fn sys(what: impl Into<String>) -> impl FnOnce(nix::Error) -> NamespaceError {
    let what = what.into();
    move |e| NamespaceError::Sys {
        what,
        source: io::Error::from(e),
    }
}

/// Creates the namespaces in `kinds`, sets `hostname` when UTS is among them, and pins each at
/// `dir/<kind>`. Returns the pinned paths in the order of `kinds`. On failure nothing stays
/// pinned.
pub fn pin(
    dir: &Path,
    kinds: &[NamespaceKind],
    hostname: &str,
) -> Result<Vec<PathBuf>, NamespaceError> {
    fs::create_dir_all(dir).map_err(|source| NamespaceError::Sys {
        what: format!("create {}", dir.display()),
        source,
    })?;
    let dir = dir.to_path_buf();
    let kinds = kinds.to_vec();
    let hostname = hostname.to_string();
    // Namespaces unshared on a thread belong to that thread only; it exits once they are
    // pinned, leaving the daemon's other threads where they were.
    let worker = std::thread::spawn(move || -> Result<Vec<PathBuf>, NamespaceError> {
        let flags = kinds
            .iter()
            .fold(CloneFlags::empty(), |f, k| f | k.clone_flag());
        unshare(flags).map_err(sys("unshare"))?;
        if kinds.contains(&NamespaceKind::Uts) && !hostname.is_empty() {
            nix::unistd::sethostname(&hostname).map_err(sys(format!("sethostname {hostname}")))?;
        }
        let mut pinned: Vec<PathBuf> = Vec::new();
        for kind in &kinds {
            let target = dir.join(kind.file_name());
            let result = pin_one(*kind, &target);
            if let Err(e) = result {
                for path in &pinned {
                    unpin(path);
                }
                return Err(e);
            }
            pinned.push(target);
        }
        Ok(pinned)
    });
    worker.join().unwrap_or_else(|_| {
        Err(NamespaceError::Sys {
            what: "namespace thread".into(),
            source: io::Error::other("panicked"),
        })
    })
}

fn pin_one(kind: NamespaceKind, target: &Path) -> Result<(), NamespaceError> {
    fs::File::create(target).map_err(|source| NamespaceError::Sys {
        what: format!("create {}", target.display()),
        source,
    })?;
    let source = format!("/proc/thread-self/ns/{}", kind.file_name());
    mount(
        Some(source.as_str()),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(sys(format!("bind {source} to {}", target.display())))
}

/// Unmounts and removes a pinned namespace file. Missing files and mounts are fine.
pub fn unpin(path: &Path) {
    // A file bind-mounted twice (a retried pin) needs two unmounts.
    while umount2(path, MntFlags::MNT_DETACH).is_ok() {}
    let _ = fs::remove_file(path);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn pins_and_unpins_namespaces() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let kinds = [NamespaceKind::Net, NamespaceKind::Uts, NamespaceKind::Ipc];
        let paths = pin(dir.path(), &kinds, "pinned-host").unwrap();
        let own = fs::read_link("/proc/self/ns/net").unwrap();
        // The pinned namespace is a different one from ours.
        let pinned = nix::sys::stat::stat(&paths[0]).unwrap();
        let mine = nix::sys::stat::stat("/proc/self/ns/net").unwrap();
        assert_ne!(pinned.st_ino, mine.st_ino, "{own:?}");
        for p in &paths {
            unpin(p);
            assert!(!p.exists());
        }
        // Idempotent.
        unpin(&paths[0]);
    }
}
