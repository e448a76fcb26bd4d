//! The Kubernetes streaming server for Exec, Attach and PortForward, as kubelet's streaming
//! package and containerd's CRI plugin serve it: the RPCs hand out single-use URLs
//! ([`tokens`]), and [`server`] answers them over SPDY/3.1 ([`spdy`]) or WebSocket
//! ([`websocket`]) with the remote command and port-forward subprotocols
//! ([`remotecommand`], [`portforward`]). What runs behind a session is a [`Backend`]: the
//! runtime's ([`exec`], [`attach`], [`portforward`]) or a fake in tests.

pub mod attach;
pub mod exec;
pub mod portforward;
pub mod remotecommand;
pub mod server;
pub mod spdy;
pub mod tokens;
pub mod websocket;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use k8s_cri::v1 as cri;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// A terminal size, as the resize stream and channel carry it (JSON `{"Width":..,"Height":..}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermSize {
    /// Columns.
    #[serde(rename = "Width")]
    pub width: u16,
    /// Rows.
    #[serde(rename = "Height")]
    pub height: u16,
}

/// The streams of one exec or attach session, protocol-independent. A channel that ends
/// means end of input (stdin) or that the client is gone (outputs).
#[derive(Debug, Default)]
pub struct SessionIo {
    /// Bytes typed by the client; `None` when stdin was not asked for.
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    /// Where standard output goes.
    pub stdout: Option<mpsc::Sender<Bytes>>,
    /// Where standard error goes.
    pub stderr: Option<mpsc::Sender<Bytes>>,
    /// Terminal resizes (tty sessions).
    pub resize: Option<mpsc::Receiver<TermSize>>,
}

/// A request waiting for its client to connect.
#[derive(Debug, Clone)]
pub enum Request {
    /// Exec.
    Exec(cri::ExecRequest),
    /// Attach.
    Attach(cri::AttachRequest),
    /// PortForward.
    PortForward(cri::PortForwardRequest),
}

impl Request {
    /// The URL path segment of its kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Exec(_) => "exec",
            Request::Attach(_) => "attach",
            Request::PortForward(_) => "portforward",
        }
    }
}

/// Why a session failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamingError {
    /// The request cannot be served (bad options, missing container).
    #[error("{0}")]
    Invalid(String),
    /// Too many requests wait for their clients.
    #[error("maximum number of in-flight requests ({0}) exceeded")]
    TooManyRequests(usize),
    /// The command or the attachment failed on the node.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The runtime refused.
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    /// The SPDY connection failed.
    #[error(transparent)]
    Spdy(#[from] spdy::SpdyError),
}

/// Wraps an I/O error with what was being done.
pub fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StreamingError {
    let what = what.into();
    move |source| StreamingError::Io { what, source }
}

/// What runs behind the streaming server.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Runs `request`'s command with `io`; returns its exit code.
    async fn exec(&self, request: &cri::ExecRequest, io: SessionIo) -> Result<i32, StreamingError>;
    /// Attaches `io` to the container until it exits or the client leaves.
    async fn attach(
        &self,
        request: &cri::AttachRequest,
        io: SessionIo,
    ) -> Result<(), StreamingError>;
    /// A connection to `port` on the loopback of the sandbox's network namespace.
    async fn connect(
        &self,
        sandbox_id: &str,
        port: u16,
    ) -> Result<tokio::net::TcpStream, StreamingError>;
}

/// The runtime behind the streaming server.
#[derive(Debug, Clone)]
pub struct RuntimeBackend {
    runtime: Arc<crate::runtime::Runtime>,
}

impl RuntimeBackend {
    /// Serves sessions of `runtime`'s containers and sandboxes.
    pub fn new(runtime: Arc<crate::runtime::Runtime>) -> Self {
        RuntimeBackend { runtime }
    }
}

#[async_trait]
impl Backend for RuntimeBackend {
    async fn exec(&self, request: &cri::ExecRequest, io: SessionIo) -> Result<i32, StreamingError> {
        let record = self.runtime.running_container(&request.container_id)?;
        exec::exec(self.runtime.oci(), &record.id, request, io).await
    }

    async fn attach(
        &self,
        request: &cri::AttachRequest,
        io: SessionIo,
    ) -> Result<(), StreamingError> {
        let record = self.runtime.running_container(&request.container_id)?;
        attach::attach(&self.runtime.container_dir(&record.id), request, io).await
    }

    async fn connect(
        &self,
        sandbox_id: &str,
        port: u16,
    ) -> Result<tokio::net::TcpStream, StreamingError> {
        let sandbox = self
            .runtime
            .sandbox(sandbox_id)
            .ok_or_else(|| StreamingError::Invalid(format!("sandbox {sandbox_id:?} not found")))?;
        portforward::connect_in(sandbox.netns.clone(), port).await
    }
}

/// The checks kubelet's streaming server makes on exec and attach options.
pub fn validate_stdio(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Result<(), String> {
    if tty && stderr {
        return Err("tty and stderr cannot both be true".into());
    }
    if !stdin && !stdout && !stderr {
        return Err("one of stdin, stdout, or stderr must be set".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdio_options_are_checked_as_upstream() {
        assert!(validate_stdio(true, true, true, false).is_ok());
        assert!(validate_stdio(false, true, false, true).is_ok());
        assert!(validate_stdio(false, true, true, true).is_err());
        assert!(validate_stdio(false, false, false, false).is_err());
    }

    #[test]
    fn term_size_json_is_capitalized() {
        let size: TermSize = serde_json::from_str(r#"{"Width":80,"Height":24}"#).unwrap();
        assert_eq!(
            size,
            TermSize {
                width: 80,
                height: 24
            }
        );
    }
}
