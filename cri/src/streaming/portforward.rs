//! Port forwarding: connections to the loopback of a sandbox's network namespace (opened on
//! a short-lived thread that joined the pinned namespace, then handed to tokio), and the two
//! port-forward protocols: `portforward.k8s.io` over SPDY (a data and an error stream per
//! connection, paired by their `requestID` header, the port in a `port` header), and the
//! WebSocket channel protocol (ports from the `ports` query parameter, channels 2n and 2n+1,
//! each opening with the port as two little-endian bytes).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::spdy::{self, Role, Stream};
use super::websocket::Framing;
use super::{Backend, StreamingError, io_error};

/// The SPDY port-forward protocol.
pub const PROTOCOL_V1: &str = "portforward.k8s.io";

/// Connects to `127.0.0.1:port` inside the network namespace at `netns` (the node's when
/// `None`).
pub async fn connect_in(netns: Option<PathBuf>, port: u16) -> Result<TcpStream, StreamingError> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let std_stream = match netns {
        None => std::net::TcpStream::connect(address)
            .map_err(io_error(format!("connect to {address}")))?,
        Some(netns) => {
            let worker = std::thread::spawn(move || connect_on_this_thread(&netns, address));
            worker
                .join()
                .map_err(|_| StreamingError::Invalid("the connecting thread panicked".into()))??
        }
    };
    std_stream
        .set_nonblocking(true)
        .map_err(io_error("make the connection non-blocking"))?;
    TcpStream::from_std(std_stream).map_err(io_error("hand the connection to tokio"))
}

/// Joins `netns` (this thread only; it ends right after) and connects.
fn connect_on_this_thread(
    netns: &Path,
    address: SocketAddr,
) -> Result<std::net::TcpStream, StreamingError> {
    let file = std::fs::File::open(netns).map_err(io_error(format!(
        "open the network namespace {}",
        netns.display()
    )))?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
        StreamingError::Io {
            what: format!("join the network namespace {}", netns.display()),
            source: e.into(),
        }
    })?;
    std::net::TcpStream::connect(address).map_err(io_error(format!(
        "connect to {address} in the pod's network namespace"
    )))
}

/// Copies between `conn` and a forwarded stream: `input` is what the client sends (its end
/// shuts down the connection's write side), `output` gets what the pod sends. Forwarding
/// ends when the pod's side ends, as containerd's does.
async fn copy(conn: TcpStream, mut input: mpsc::Receiver<Bytes>, output: mpsc::Sender<Bytes>) {
    let (mut read, mut write) = conn.into_split();
    let upstream = async {
        while let Some(data) = input.recv().await {
            if write.write_all(&data).await.is_err() {
                break;
            }
        }
        let _ = write.shutdown().await;
    };
    let downstream = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if output
                        .send(Bytes::copy_from_slice(&buf[..n]))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    };
    tokio::pin!(upstream, downstream);
    let mut upstream_done = false;
    loop {
        tokio::select! {
            _ = &mut upstream, if !upstream_done => upstream_done = true,
            _ = &mut downstream => break,
        }
    }
}

fn error_message(port: u16, sandbox_id: &str, e: &StreamingError) -> String {
    format!("error forwarding port {port} to pod {sandbox_id}: {e}")
}

/// Serves `portforward.k8s.io` over the SPDY connection on `io` until the client closes it.
pub async fn serve_spdy<IO>(
    io: IO,
    backend: Arc<dyn Backend>,
    sandbox_id: String,
) -> Result<(), StreamingError>
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (conn, mut incoming) = spdy::Connection::new(io, Role::Server)?;
    let mut pending: HashMap<String, (Option<Stream>, Option<Stream>)> = HashMap::new();
    let mut tasks = Vec::new();
    while let Some(stream) = incoming.recv().await {
        let request = stream
            .headers
            .get("requestid")
            .unwrap_or_default()
            .to_string();
        let entry = pending.entry(request.clone()).or_default();
        match stream.headers.get("streamtype") {
            Some("data") => entry.0 = Some(stream),
            Some("error") => entry.1 = Some(stream),
            other => {
                tracing::debug!(stream_type = ?other, "unexpected port-forward stream");
                let _ = stream.writer.reset().await;
                continue;
            }
        }
        if matches!(pending.get(&request), Some((Some(_), Some(_))))
            && let Some((Some(data), Some(error))) = pending.remove(&request)
        {
            let backend = backend.clone();
            let sandbox_id = sandbox_id.clone();
            tasks.push(tokio::spawn(async move {
                forward_spdy(backend, &sandbox_id, data, error).await;
            }));
        }
    }
    for task in tasks {
        let _ = task.await;
    }
    conn.close().await;
    Ok(())
}

async fn forward_spdy(backend: Arc<dyn Backend>, sandbox_id: &str, data: Stream, error: Stream) {
    let port = data
        .headers
        .get("port")
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|p| *p > 0);
    let Some(port) = port else {
        let message = format!(
            "invalid port {:?} in the port-forward request",
            data.headers.get("port").unwrap_or_default()
        );
        let _ = error.writer.write(message.as_bytes()).await;
        let _ = error.writer.close().await;
        let _ = data.writer.close().await;
        return;
    };
    match backend.connect(sandbox_id, port).await {
        Err(e) => {
            let message = error_message(port, sandbox_id, &e);
            tracing::info!(port, sandbox = sandbox_id, error = %e, "port-forward failed");
            let _ = error.writer.write(message.as_bytes()).await;
            let _ = error.writer.close().await;
            let _ = data.writer.close().await;
        }
        Ok(conn) => {
            let (tx, mut rx) = mpsc::channel::<Bytes>(32);
            let writer = data.writer.clone();
            let pump = tokio::spawn(async move {
                while let Some(chunk) = rx.recv().await {
                    if writer.write(&chunk).await.is_err() {
                        return;
                    }
                }
                let _ = writer.close().await;
            });
            copy(conn, data.data, tx).await;
            let _ = pump.await;
            let _ = error.writer.close().await;
        }
    }
}

/// The `ports` query parameter (repeated or comma-separated) as ports.
pub fn parse_ports(query: &str) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if key != "ports" {
            continue;
        }
        for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let port = part
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("unable to parse {part:?} as a port"))?;
            ports.push(port);
        }
    }
    if ports.is_empty() {
        return Err("query parameter \"ports\" is required".into());
    }
    Ok(ports)
}

/// Serves the WebSocket channel port-forward protocol for `ports`.
pub async fn serve_websocket<S>(
    ws: WebSocketStream<S>,
    protocol: &str,
    backend: Arc<dyn Backend>,
    sandbox_id: String,
    ports: Vec<u16>,
) -> Result<(), StreamingError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let framing = Framing::of(protocol);
    let (mut sink, mut source) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(64);
    let writer = tokio::spawn(async move {
        while let Some(message) = out_rx.recv().await {
            if sink.send(message).await.is_err() {
                return;
            }
        }
        super::websocket::close_normally(&mut sink).await;
    });
    let mut inputs = Vec::new();
    let mut tasks = Vec::new();
    for (index, port) in ports.iter().copied().enumerate() {
        let data_channel = (index * 2) as u8;
        let error_channel = data_channel + 1;
        for channel in [data_channel, error_channel] {
            let _ = out_tx
                .send(framing.encode(channel, &port.to_le_bytes()))
                .await;
        }
        let (input_tx, input_rx) = mpsc::channel::<Bytes>(32);
        inputs.push(input_tx);
        let out = out_tx.clone();
        let backend = backend.clone();
        let sandbox_id = sandbox_id.clone();
        tasks.push(tokio::spawn(async move {
            match backend.connect(&sandbox_id, port).await {
                Err(e) => {
                    let message = error_message(port, &sandbox_id, &e);
                    let _ = out
                        .send(framing.encode(error_channel, message.as_bytes()))
                        .await;
                }
                Ok(conn) => {
                    let (tx, mut rx) = mpsc::channel::<Bytes>(32);
                    let pump = {
                        let out = out.clone();
                        tokio::spawn(async move {
                            while let Some(chunk) = rx.recv().await {
                                if out
                                    .send(framing.encode(data_channel, &chunk))
                                    .await
                                    .is_err()
                                {
                                    return;
                                }
                            }
                        })
                    };
                    copy(conn, input_rx, tx).await;
                    let _ = pump.await;
                }
            }
        }));
    }
    let reader = tokio::spawn(async move {
        while let Some(Ok(message)) = source.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
            if let Some((channel, data)) = framing.decode(&message)
                && channel % 2 == 0
                && let Some(input) = inputs.get(usize::from(channel / 2))
            {
                let _ = input.send(data).await;
            }
        }
    });
    for task in tasks {
        let _ = task.await;
    }
    drop(out_tx);
    let _ = writer.await;
    reader.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_the_query() {
        assert_eq!(parse_ports("ports=80,8080").unwrap(), vec![80, 8080]);
        assert_eq!(parse_ports("ports=80&ports=81").unwrap(), vec![80, 81]);
        assert!(parse_ports("ports=0").is_err());
        assert!(parse_ports("ports=x").is_err());
        assert!(parse_ports("").is_err());
    }
}
