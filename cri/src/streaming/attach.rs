//! Attach sessions: a client of the container monitor's attach socket
//! ([`crate::container::attach`]) relaying the container's output, the client's input (when
//! the container keeps stdin open) and terminal resizes, until the container exits or the
//! client leaves.

use std::path::Path;

use bytes::Bytes;
use k8s_cri::v1 as cri;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{SessionIo, StreamingError, io_error};
use crate::container::attach::{self as wire, SOCKET_NAME, short_path};

/// Attaches `io` to the container whose monitor serves `state_dir/attach`.
pub async fn attach(
    state_dir: &Path,
    request: &cri::AttachRequest,
    io: SessionIo,
) -> Result<(), StreamingError> {
    let dir = std::fs::File::open(state_dir)
        .map_err(io_error(format!("open {}", state_dir.display())))?;
    let stream = tokio::net::UnixStream::connect(short_path(&dir, SOCKET_NAME))
        .await
        .map_err(io_error(format!(
            "reach the monitor of container {}",
            request.container_id
        )))?;
    drop(dir);
    let (mut read, mut write) = stream.into_split();
    let SessionIo {
        stdin,
        stdout,
        stderr,
        resize,
    } = io;
    let input = tokio::spawn(async move {
        let mut stdin = stdin;
        let mut resize = resize;
        loop {
            let message = tokio::select! {
                data = async { match stdin.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => {
                    match data {
                        Some(data) => wire::message(wire::STDIN, &data),
                        None => {
                            stdin = None;
                            wire::message(wire::STDIN_CLOSE, b"")
                        }
                    }
                }
                size = async { match resize.as_mut() { Some(r) => r.recv().await, None => std::future::pending().await } } => {
                    match size {
                        Some(size) => {
                            let mut payload = size.width.to_be_bytes().to_vec();
                            payload.extend(size.height.to_be_bytes());
                            wire::message(wire::RESIZE, &payload)
                        }
                        None => {
                            resize = None;
                            continue;
                        }
                    }
                }
            };
            if write.write_all(&message).await.is_err() {
                return;
            }
        }
    });
    let mut head = [0u8; 5];
    let result = loop {
        match read.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break Ok(()),
            Err(e) => break Err(io_error("read from the container's monitor")(e)),
        }
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut payload = vec![0u8; len];
        if let Err(e) = read.read_exact(&mut payload).await {
            break Err(io_error("read from the container's monitor")(e));
        }
        let sink = match head[0] {
            wire::STDOUT => stdout.as_ref(),
            wire::STDERR => stderr.as_ref(),
            _ => None,
        };
        if let Some(sink) = sink
            && sink.send(Bytes::from(payload)).await.is_err()
        {
            // The client is gone.
            break Ok(());
        }
    };
    input.abort();
    result
}
