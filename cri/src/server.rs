//! Serving gRPC on a unix socket: the listener (a stale socket from a crashed run is replaced;
//! a live one is refused).

use std::io;
use std::path::Path;

use tokio::net::{UnixListener, UnixStream};

/// Binds the CRI socket at `path`.
pub async fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{} is served by another process", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    UnixListener::bind(path)
}
