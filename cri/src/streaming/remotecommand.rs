//! The remote command protocol of exec and attach, over either transport: which streams a
//! session has (error, stdin, stdout, stderr, resize), how the outcome is reported (v4 and
//! later: a metav1.Status JSON on the error stream, `NonZeroExitCode` with an `ExitCode` cause
//! for a failed command; earlier versions: the error text), and the plumbing between the
//! transport and a [`SessionIo`].

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::spdy::{self, Role, StreamWriter};
use super::websocket::{CLOSE_CHANNEL, Framing};
use super::{SessionIo, StreamingError, TermSize};

/// SPDY subprotocol v4: Status JSON on the error stream.
pub const V4: &str = "v4.channel.k8s.io";
/// v3: adds the resize stream.
pub const V3: &str = "v3.channel.k8s.io";
/// v2: error text on the error stream.
pub const V2: &str = "v2.channel.k8s.io";
/// The SPDY versions served, preferred first.
pub const SPDY_PROTOCOLS: &[&str] = &[V4, V3, V2];

/// How long a client may take to open its streams (upstream's default).
pub const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Which streams the session has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Standard input.
    pub stdin: bool,
    /// Standard output.
    pub stdout: bool,
    /// Standard error.
    pub stderr: bool,
    /// A terminal.
    pub tty: bool,
}

/// How a session ended: the command's exit code, or why it could not run.
pub type Outcome = Result<i32, StreamingError>;

/// The metav1.Status upstream writes for `outcome` (v4 and later).
pub fn status_json(outcome: &Outcome) -> String {
    let status = match outcome {
        Ok(0) => json!({"metadata": {}, "status": "Success"}),
        Ok(code) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Err(e) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("Internal error occurred: {e}"),
            "reason": "InternalError",
            "details": {"causes": [{"message": e.to_string()}]},
            "code": 500,
        }),
    };
    status.to_string()
}

/// What versions before v4 write on the error stream (nothing on success).
pub fn status_text(outcome: &Outcome) -> Option<String> {
    match outcome {
        Ok(0) => None,
        Ok(code) => Some(format!(
            "command terminated with non-zero exit code: exit status {code}"
        )),
        Err(e) => Some(e.to_string()),
    }
}

/// Reads JSON terminal sizes from a byte stream (objects back to back, as Go's encoder
/// writes them) into `sizes`.
pub fn spawn_resize_decoder(
    mut input: mpsc::Receiver<Bytes>,
    sizes: mpsc::Sender<TermSize>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut pending = Vec::new();
        while let Some(chunk) = input.recv().await {
            pending.extend_from_slice(&chunk);
            let mut decoded = serde_json::Deserializer::from_slice(&pending).into_iter();
            let mut complete = Vec::new();
            let mut used = 0;
            loop {
                match decoded.next() {
                    Some(Ok(size)) => {
                        used = decoded.byte_offset();
                        complete.push(size);
                    }
                    Some(Err(e)) if e.is_eof() => break,
                    Some(Err(_)) => return,
                    None => break,
                }
            }
            pending.drain(..used);
            for size in complete {
                if sizes.send(size).await.is_err() {
                    return;
                }
            }
        }
    })
}

/// A pump from an output channel to a SPDY stream; half-closes the stream at the end.
fn spdy_output(writer: StreamWriter) -> (mpsc::Sender<Bytes>, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Bytes>(32);
    let task = tokio::spawn(async move {
        while let Some(data) = rx.recv().await {
            if writer.write(&data).await.is_err() {
                return;
            }
        }
        let _ = writer.close().await;
    });
    (tx, task)
}

/// Serves one remote command session over the SPDY connection on `io`: waits for the
/// client's streams, runs `run`, reports its outcome on the error stream.
pub async fn serve_spdy<IO, F, Fut>(
    io: IO,
    protocol: &str,
    options: Options,
    run: F,
) -> Result<(), StreamingError>
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
    F: FnOnce(SessionIo) -> Fut,
    Fut: Future<Output = Outcome>,
{
    let (conn, mut incoming) = spdy::Connection::new(io, Role::Server)?;
    let with_resize = options.tty && protocol != V2;
    let expected = 1
        + usize::from(options.stdin)
        + usize::from(options.stdout)
        + usize::from(options.stderr)
        + usize::from(with_resize);
    let mut error = None;
    let mut stdin = None;
    let mut stdout = None;
    let mut stderr = None;
    let mut resize = None;
    let mut received = 0;
    let deadline = tokio::time::Instant::now() + STREAM_CREATION_TIMEOUT;
    while received < expected {
        let stream = match tokio::time::timeout_at(deadline, incoming.recv()).await {
            Ok(Some(stream)) => stream,
            Ok(None) => {
                conn.close().await;
                return Err(StreamingError::Invalid(
                    "the client closed the connection before opening its streams".into(),
                ));
            }
            Err(_) => {
                conn.close().await;
                return Err(StreamingError::Invalid(
                    "timed out waiting for the client to create streams".into(),
                ));
            }
        };
        let slot = match stream.headers.get("streamtype").unwrap_or_default() {
            "error" => &mut error,
            "stdin" if options.stdin => &mut stdin,
            "stdout" if options.stdout => &mut stdout,
            "stderr" if options.stderr => &mut stderr,
            "resize" if with_resize => &mut resize,
            other => {
                tracing::debug!(stream_type = other, "unexpected stream; resetting it");
                let _ = stream.writer.reset().await;
                continue;
            }
        };
        if slot.is_none() {
            received += 1;
        }
        *slot = Some(stream);
    }
    // Streams opened after these are refused (reset) rather than queued.
    drop(incoming);
    let mut pumps = Vec::new();
    let mut session = SessionIo::default();
    if let Some(stream) = stdin {
        session.stdin = Some(stream.data);
    }
    for (stream, sink) in [(stdout, &mut session.stdout), (stderr, &mut session.stderr)] {
        if let Some(stream) = stream {
            let (tx, task) = spdy_output(stream.writer);
            *sink = Some(tx);
            pumps.push(task);
        }
    }
    let resize_task = resize.map(|stream| {
        let (tx, rx) = mpsc::channel(8);
        session.resize = Some(rx);
        spawn_resize_decoder(stream.data, tx)
    });
    let outcome = tokio::select! {
        outcome = run(session) => outcome,
        () = conn.peer_gone() => Err(StreamingError::Invalid("the client went away".into())),
    };
    for pump in pumps {
        let _ = pump.await;
    }
    if let Some(task) = resize_task {
        task.abort();
    }
    if let Some(error) = error {
        let report = if protocol == V4 {
            Some(status_json(&outcome))
        } else {
            status_text(&outcome)
        };
        if let Some(report) = report {
            let _ = error.writer.write(report.as_bytes()).await;
        }
        let _ = error.writer.close().await;
    }
    conn.close().await;
    outcome.map(|_| ())
}

/// Serves one remote command session over a WebSocket with the negotiated `protocol`.
pub async fn serve_websocket<S, F, Fut>(
    ws: WebSocketStream<S>,
    protocol: &str,
    options: Options,
    run: F,
) -> Result<(), StreamingError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnOnce(SessionIo) -> Fut,
    Fut: Future<Output = Outcome>,
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
    let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(32);
    let (resize_tx, resize_rx) = mpsc::channel::<TermSize>(8);
    let (gone_tx, mut gone) = tokio::sync::watch::channel(false);
    let reader = tokio::spawn(async move {
        let _gone = gone_tx;
        let mut stdin_tx = options.stdin.then_some(stdin_tx);
        while let Some(Ok(message)) = source.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
            let Some((channel, data)) = framing.decode(&message) else {
                continue;
            };
            match channel {
                0 => {
                    if let Some(tx) = &stdin_tx {
                        let _ = tx.send(data).await;
                    }
                }
                4 if options.tty => {
                    if let Ok(size) = serde_json::from_slice::<TermSize>(&data) {
                        let _ = resize_tx.send(size).await;
                    }
                }
                CLOSE_CHANNEL if framing.close_signal && data.first() == Some(&0) => {
                    stdin_tx = None;
                }
                _ => {}
            }
        }
    });
    let mut session = SessionIo {
        stdin: options.stdin.then_some(stdin_rx),
        resize: options.tty.then_some(resize_rx),
        ..SessionIo::default()
    };
    let mut pumps = Vec::new();
    for (wanted, channel, sink) in [
        (options.stdout, 1u8, &mut session.stdout),
        (options.stderr, 2u8, &mut session.stderr),
    ] {
        if !wanted {
            continue;
        }
        let (tx, mut rx) = mpsc::channel::<Bytes>(32);
        let out = out_tx.clone();
        pumps.push(tokio::spawn(async move {
            while let Some(data) = rx.recv().await {
                if out.send(framing.encode(channel, &data)).await.is_err() {
                    return;
                }
            }
        }));
        *sink = Some(tx);
    }
    // The reader ends (dropping its end of `gone`) when the client closes the WebSocket.
    let outcome = tokio::select! {
        outcome = run(session) => outcome,
        _ = gone.changed() => Err(StreamingError::Invalid("the client went away".into())),
    };
    for pump in pumps {
        let _ = pump.await;
    }
    let report = if framing.status {
        Some(status_json(&outcome))
    } else {
        status_text(&outcome)
    };
    if let Some(report) = report {
        let _ = out_tx.send(framing.encode(3, report.as_bytes())).await;
    }
    drop(out_tx);
    let _ = writer.await;
    reader.abort();
    outcome.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_match_upstream() {
        assert_eq!(status_json(&Ok(0)), r#"{"metadata":{},"status":"Success"}"#);
        let failed: serde_json::Value = serde_json::from_str(&status_json(&Ok(3))).unwrap();
        assert_eq!(failed["status"], "Failure");
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(failed["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(failed["details"]["causes"][0]["message"], "3");
        let broken: serde_json::Value =
            serde_json::from_str(&status_json(&Err(StreamingError::Invalid("boom".into()))))
                .unwrap();
        assert_eq!(broken["reason"], "InternalError");
        assert_eq!(broken["code"], 500);
        assert_eq!(status_text(&Ok(0)), None);
        assert!(status_text(&Ok(2)).unwrap().contains("exit status 2"));
    }

    #[tokio::test]
    async fn resize_events_split_across_frames_are_decoded() {
        let (tx, rx) = mpsc::channel(4);
        let (sizes_tx, mut sizes) = mpsc::channel(4);
        let task = spawn_resize_decoder(rx, sizes_tx);
        tx.send(Bytes::from_static(br#"{"Width":80,"Hei"#))
            .await
            .unwrap();
        tx.send(Bytes::from_static(br#"ght":24}{"Width":100,"Height":50}"#))
            .await
            .unwrap();
        assert_eq!(
            sizes.recv().await,
            Some(TermSize {
                width: 80,
                height: 24
            })
        );
        assert_eq!(
            sizes.recv().await,
            Some(TermSize {
                width: 100,
                height: 50
            })
        );
        drop(tx);
        task.await.unwrap();
    }
}
