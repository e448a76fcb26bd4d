//! Test clients of the streaming server, one per protocol, written from the protocol
//! descriptions (kubectl cannot dial a bare streaming URL): the remote command protocol
//! over SPDY/3.1 (`v4.channel.k8s.io`) and over WebSocket (`v5`/`v4.channel.k8s.io`), and
//! port-forward over SPDY (`portforward.k8s.io`), WebSocket channels (`v4.channel.k8s.io`)
//! and the WebSocket SPDY tunnel (`v2.portforward.k8s.io`). Connections are opened inside
//! the daemon's network namespace, where the streaming server listens on loopback.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use cri::streaming::spdy::{Connection, Headers, Role};
use cri::streaming::websocket::ByteStream;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// What a remote command session produced.
#[derive(Debug, Default)]
pub struct Output {
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
    /// The error stream (a metav1.Status JSON with v4 and later).
    pub error: Vec<u8>,
}

impl Output {
    /// Stdout as text.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// The error stream as JSON.
    pub fn status(&self) -> serde_json::Value {
        serde_json::from_slice(&self.error)
            .unwrap_or_else(|e| panic!("status {:?}: {e}", String::from_utf8_lossy(&self.error)))
    }
}

/// What the client does in a session.
#[derive(Debug, Clone, Default)]
pub struct Script {
    /// Open stdin and send this, then close it (when `close_stdin`).
    pub stdin: Option<Vec<u8>>,
    /// Close stdin after sending (SPDY FIN, v5 close signal).
    pub close_stdin: bool,
    /// Ask for stdout.
    pub stdout: bool,
    /// Ask for stderr.
    pub stderr: bool,
    /// A terminal session: open the resize stream and send this size first.
    pub tty: Option<(u16, u16)>,
    /// Wait for this text on stdout before sending stdin.
    pub wait_for: Option<String>,
    /// Leave (WebSocket) once stdout contains this text, instead of waiting for the end.
    pub until: Option<String>,
}

/// A TCP connection to `address` opened inside the network namespace at `netns`.
pub async fn connect(netns: &Path, address: &str) -> TcpStream {
    let netns = netns.to_path_buf();
    let address = address.to_string();
    let stream = std::thread::spawn(move || {
        let file = std::fs::File::open(&netns).expect("open netns");
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        std::net::TcpStream::connect(&address).expect("connect to the streaming server")
    })
    .join()
    .expect("connect thread");
    stream.set_nonblocking(true).unwrap();
    TcpStream::from_std(stream).unwrap()
}

fn split_url(url: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest.split_once('/').expect("a path");
    (host.to_string(), format!("/{path}"))
}

/// Sends an HTTP upgrade request for SPDY/3.1 and reads the response head.
pub async fn spdy_upgrade(netns: &Path, url: &str, protocols: &[&str]) -> (u16, String, TcpStream) {
    let (host, path) = split_url(url);
    let mut stream = connect(netns, &host).await;
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
    );
    for p in protocols {
        request.push_str(&format!("X-Stream-Protocol-Version: {p}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        if stream.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, head, stream)
}

async fn drain(mut rx: tokio::sync::mpsc::Receiver<Bytes>) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = rx.recv().await {
        out.extend_from_slice(&chunk);
    }
    out
}

/// Runs a remote command session over SPDY with `v4.channel.k8s.io`.
pub async fn spdy_session(netns: &Path, url: &str, script: Script) -> Output {
    let (code, head, stream) = spdy_upgrade(netns, url, &["v4.channel.k8s.io"]).await;
    assert_eq!(code, 101, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("x-stream-protocol-version: v4.channel.k8s.io"),
        "{head}"
    );
    let (conn, _incoming) = Connection::new(stream, Role::Client).unwrap();
    let open = |kind: &str| {
        let headers = Headers::from_pairs(&[("streamType", kind)]);
        conn.open(headers)
    };
    let error = open("error").await.unwrap();
    let stdin = match script.stdin {
        Some(_) => Some(open("stdin").await.unwrap()),
        None => None,
    };
    let stdout = match script.stdout {
        true => Some(open("stdout").await.unwrap()),
        false => None,
    };
    let stderr = match script.stderr {
        true => Some(open("stderr").await.unwrap()),
        false => None,
    };
    if let Some((width, height)) = script.tty {
        let resize = open("resize").await.unwrap();
        let size = format!(r#"{{"Width":{width},"Height":{height}}}"#);
        resize.writer.write(size.as_bytes()).await.unwrap();
    }
    let mut stdout_rx = stdout.map(|s| s.data);
    let mut early = Vec::new();
    if let (Some(needle), Some(rx)) = (&script.wait_for, stdout_rx.as_mut()) {
        while !String::from_utf8_lossy(&early).contains(needle.as_str()) {
            match rx.recv().await {
                Some(chunk) => early.extend_from_slice(&chunk),
                None => break,
            }
        }
    }
    if let (Some(stdin), Some(data)) = (stdin, script.stdin) {
        stdin.writer.write(&data).await.unwrap();
        if script.close_stdin {
            stdin.writer.close().await.unwrap();
        }
    }
    let stdout_task = tokio::spawn(async move {
        match stdout_rx {
            Some(rx) => drain(rx).await,
            None => Vec::new(),
        }
    });
    let stderr_task = tokio::spawn(async move {
        match stderr {
            Some(s) => drain(s.data).await,
            None => Vec::new(),
        }
    });
    let error = drain(error.data).await;
    let mut stdout = early;
    stdout.extend(stdout_task.await.unwrap());
    let output = Output {
        stdout,
        stderr: stderr_task.await.unwrap(),
        error,
    };
    conn.close().await;
    output
}

/// Opens a WebSocket to `url` asking for `protocols`; returns the one the server chose.
pub async fn websocket(
    netns: &Path,
    url: &str,
    protocols: &str,
) -> (
    tokio_tungstenite::WebSocketStream<TcpStream>,
    Option<String>,
) {
    let (host, _) = split_url(url);
    let stream = connect(netns, &host).await;
    let mut request = url
        .replacen("http://", "ws://", 1)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_str(protocols).unwrap(),
    );
    let (ws, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .expect("WebSocket handshake");
    let chosen = response
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (ws, chosen)
}

/// Runs a remote command session over WebSocket with `protocol` (binary v5 or v4).
pub async fn websocket_session(netns: &Path, url: &str, protocol: &str, script: Script) -> Output {
    let (ws, chosen) = websocket(netns, url, protocol).await;
    assert_eq!(chosen.as_deref(), Some(protocol));
    let (mut sink, mut source) = ws.split();
    if let Some((width, height)) = script.tty {
        let mut message = vec![4u8];
        message.extend(format!(r#"{{"Width":{width},"Height":{height}}}"#).bytes());
        sink.send(Message::Binary(message.into())).await.unwrap();
    }
    let mut output = Output::default();
    let mut stdin = script.stdin.clone();
    let mut send_stdin = async |sink: &mut futures::stream::SplitSink<_, Message>| {
        if let Some(data) = stdin.take() {
            let mut message = vec![0u8];
            message.extend(data);
            sink.send(Message::Binary(message.into())).await.unwrap();
            if script.close_stdin {
                sink.send(Message::Binary(vec![255u8, 0].into()))
                    .await
                    .unwrap();
            }
        }
    };
    if script.wait_for.is_none() {
        send_stdin(&mut sink).await;
    }
    while let Some(message) = source.next().await {
        let message = match message {
            Ok(m) => m,
            Err(_) => break,
        };
        let Message::Binary(bytes) = message else {
            if matches!(message, Message::Close(_)) {
                break;
            }
            continue;
        };
        let Some((&channel, data)) = bytes.split_first() else {
            continue;
        };
        match channel {
            1 => output.stdout.extend_from_slice(data),
            2 => output.stderr.extend_from_slice(data),
            3 => output.error.extend_from_slice(data),
            _ => {}
        }
        if let Some(needle) = &script.wait_for
            && output.stdout_text().contains(needle.as_str())
        {
            send_stdin(&mut sink).await;
        }
        if let Some(needle) = &script.until
            && output.stdout_text().contains(needle.as_str())
        {
            let _ = sink.close().await;
            break;
        }
    }
    output
}

/// Forwards one connection over SPDY (`portforward.k8s.io`, on a plain upgrade or inside
/// the `v2.portforward.k8s.io` WebSocket tunnel): sends `request`, returns what came back
/// until the pod closed, and the error stream.
pub async fn spdy_forward(
    netns: &Path,
    url: &str,
    tunnel: bool,
    port: u16,
    request: &[u8],
) -> (Vec<u8>, Vec<u8>) {
    let conn = if tunnel {
        let (ws, chosen) = websocket(netns, url, "v2.portforward.k8s.io").await;
        assert_eq!(chosen.as_deref(), Some("v2.portforward.k8s.io"));
        Connection::new(ByteStream::wrap(ws), Role::Client)
            .unwrap()
            .0
    } else {
        let (code, head, stream) = spdy_upgrade(netns, url, &["portforward.k8s.io"]).await;
        assert_eq!(code, 101, "{head}");
        Connection::new(stream, Role::Client).unwrap().0
    };
    let port = port.to_string();
    let error = conn
        .open(Headers::from_pairs(&[
            ("streamType", "error"),
            ("port", &port),
            ("requestID", "0"),
        ]))
        .await
        .unwrap();
    let data = conn
        .open(Headers::from_pairs(&[
            ("streamType", "data"),
            ("port", &port),
            ("requestID", "0"),
        ]))
        .await
        .unwrap();
    data.writer.write(request).await.unwrap();
    let received = tokio::time::timeout(Duration::from_secs(30), drain(data.data))
        .await
        .expect("forwarded data");
    let errors = tokio::time::timeout(Duration::from_secs(30), drain(error.data))
        .await
        .expect("error stream");
    conn.close().await;
    (received, errors)
}

/// Forwards `port` over WebSocket channels (`v4.channel.k8s.io`): checks the port prefix of
/// both channels, sends `request`, returns data until it contains `until`.
pub async fn websocket_forward(
    netns: &Path,
    url: &str,
    port: u16,
    request: &[u8],
    until: &str,
) -> Vec<u8> {
    let url = format!("{url}?ports={port}");
    let (ws, chosen) = websocket(netns, &url, "v4.channel.k8s.io").await;
    assert_eq!(chosen.as_deref(), Some("v4.channel.k8s.io"));
    let (mut sink, mut source) = ws.split();
    let mut prefixes = Vec::new();
    let mut data = Vec::new();
    let mut sent = false;
    while let Some(Ok(message)) = source.next().await {
        let Message::Binary(bytes) = message else {
            continue;
        };
        let Some((&channel, payload)) = bytes.split_first() else {
            continue;
        };
        if prefixes.len() < 2 {
            assert_eq!(
                payload,
                port.to_le_bytes(),
                "channel {channel} opens with the port"
            );
            prefixes.push(channel);
            if prefixes.len() == 2 && !sent {
                assert_eq!(prefixes, [0, 1]);
                let mut message = vec![0u8];
                message.extend_from_slice(request);
                sink.send(Message::Binary(message.into())).await.unwrap();
                sent = true;
            }
            continue;
        }
        match channel {
            0 => data.extend_from_slice(payload),
            1 => panic!("port-forward error: {}", String::from_utf8_lossy(payload)),
            _ => {}
        }
        if String::from_utf8_lossy(&data).contains(until) {
            break;
        }
    }
    let _ = sink.close().await;
    data
}
