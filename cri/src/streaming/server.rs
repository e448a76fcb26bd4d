//! The streaming HTTP server: `GET /exec/<token>`, `/attach/<token>` and
//! `/portforward/<token>`, upgraded to SPDY/3.1 (`Upgrade: SPDY/3.1`, the subprotocol
//! negotiated through `X-Stream-Protocol-Version`) or to WebSocket (`Sec-WebSocket-Protocol`).
//! The token names the request an RPC stored; it is consumed by the first connection.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role as WsRole;

use super::remotecommand::{self, Options};
use super::tokens::RequestCache;
use super::websocket::{self, ByteStream, V2_PORT_FORWARD};
use super::{Backend, Request, StreamingError, portforward, spdy};

/// The header that negotiates SPDY subprotocols.
pub const PROTOCOL_HEADER: &str = "x-stream-protocol-version";
/// The header listing what the server accepts when negotiation fails.
pub const ACCEPTED_PROTOCOLS_HEADER: &str = "x-accepted-stream-protocol-versions";

/// The streaming server: where the URLs point, and the requests waiting behind them.
pub struct StreamingServer {
    address: SocketAddr,
    cache: RequestCache,
    backend: Arc<dyn Backend>,
    listener: std::sync::Mutex<Option<TcpListener>>,
}

impl std::fmt::Debug for StreamingServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamingServer")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

type Body = Full<Bytes>;

fn plain(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(message.into() + "\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn header_values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect()
}

/// How the client wants to talk.
#[derive(Debug, Clone)]
enum Transport {
    /// SPDY with this subprotocol.
    Spdy(String),
    /// WebSocket with this subprotocol ("" for none).
    WebSocket(String),
}

impl StreamingServer {
    /// Binds `address` (port 0 picks one); serving starts with [`StreamingServer::serve`].
    pub async fn bind(
        address: SocketAddr,
        backend: Arc<dyn Backend>,
    ) -> Result<Arc<StreamingServer>, StreamingError> {
        let listener = TcpListener::bind(address)
            .await
            .map_err(super::io_error(format!("listen on {address}")))?;
        let address = listener
            .local_addr()
            .map_err(super::io_error("read the streaming address"))?;
        Ok(Arc::new(StreamingServer {
            address,
            cache: RequestCache::default(),
            backend,
            listener: std::sync::Mutex::new(Some(listener)),
        }))
    }

    /// The address served.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stores `request` and returns the URL its client connects to.
    pub fn url_for(&self, request: Request) -> Result<String, StreamingError> {
        let kind = request.kind();
        let token = self.cache.insert(request)?;
        Ok(format!("http://{}/{kind}/{token}", self.address))
    }

    /// Serves until `shutdown` resolves; sessions in progress are dropped with the process.
    pub async fn serve(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        let listener = self
            .listener
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(listener) = listener else {
            return;
        };
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                _ = &mut shutdown => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "streaming accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let server = self.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let server = server.clone();
                    async move { Ok::<_, Infallible>(server.handle(request)) }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await
                {
                    tracing::debug!(%peer, error = %e, "streaming connection ended");
                }
            });
        }
    }

    fn handle(&self, mut request: http::Request<Incoming>) -> Response<Body> {
        if request.method() != Method::GET && request.method() != Method::POST {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        }
        let path = request.uri().path().trim_start_matches('/').to_string();
        let Some((kind, token)) = path.split_once('/') else {
            return plain(StatusCode::NOT_FOUND, "not found");
        };
        let Some(stored) = self.cache.consume(token) else {
            return plain(StatusCode::NOT_FOUND, "token not found or expired");
        };
        if stored.kind() != kind {
            return plain(StatusCode::NOT_FOUND, "token not found or expired");
        }
        let headers = request.headers();
        let upgrade = headers
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let port_forward = matches!(stored, Request::PortForward(_));
        let mut ports = Vec::new();
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let out = response.headers_mut();
        out.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        let transport = if upgrade == "websocket" {
            let supported = if port_forward {
                websocket::PORT_FORWARD_PROTOCOLS
            } else {
                websocket::REMOTE_COMMAND_PROTOCOLS
            };
            let requested = header_values(headers, "sec-websocket-protocol");
            let Some(protocol) = websocket::negotiate(&requested, supported) else {
                return plain(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "requested protocol(s) are not supported: {requested:?}; supports {supported:?}"
                    ),
                );
            };
            let Some(key) = headers.get("sec-websocket-key") else {
                return plain(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
            };
            if port_forward && protocol != V2_PORT_FORWARD {
                match portforward::parse_ports(request.uri().query().unwrap_or_default()) {
                    Ok(p) => ports = p,
                    Err(e) => return plain(StatusCode::BAD_REQUEST, e),
                }
            }
            out.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
                out.insert("sec-websocket-accept", accept);
            }
            if !protocol.is_empty() {
                out.insert("sec-websocket-protocol", HeaderValue::from_static(protocol));
            }
            Transport::WebSocket(protocol.to_string())
        } else if upgrade == spdy::UPGRADE.to_ascii_lowercase() {
            let supported: &[&str] = if port_forward {
                &[portforward::PROTOCOL_V1]
            } else {
                remotecommand::SPDY_PROTOCOLS
            };
            let requested = header_values(headers, PROTOCOL_HEADER);
            let chosen = requested
                .iter()
                .flat_map(|h| h.split(','))
                .map(str::trim)
                .find_map(|p| supported.iter().find(|s| **s == p).copied());
            let Some(protocol) = chosen else {
                let mut refused = plain(
                    StatusCode::FORBIDDEN,
                    format!(
                        "unable to upgrade: unable to negotiate protocol: client supports {requested:?}, server accepts {supported:?}"
                    ),
                );
                for p in supported {
                    refused
                        .headers_mut()
                        .append(ACCEPTED_PROTOCOLS_HEADER, HeaderValue::from_static(p));
                }
                return refused;
            };
            out.insert(header::UPGRADE, HeaderValue::from_static(spdy::UPGRADE));
            out.insert(PROTOCOL_HEADER, HeaderValue::from_static(protocol));
            Transport::Spdy(protocol.to_string())
        } else {
            return plain(
                StatusCode::BAD_REQUEST,
                "unable to upgrade: missing upgrade headers in request",
            );
        };
        let upgraded = hyper::upgrade::on(&mut request);
        let backend = self.backend.clone();
        tokio::spawn(async move {
            let io = match upgraded.await {
                Ok(u) => TokioIo::new(u),
                Err(e) => {
                    tracing::debug!(error = %e, "streaming upgrade failed");
                    return;
                }
            };
            let kind = stored.kind();
            if let Err(e) = run_session(io, transport, stored, backend, ports).await {
                tracing::info!(kind, error = %e, "streaming session ended with an error");
            }
        });
        response
    }
}

async fn run_session<IO>(
    io: IO,
    transport: Transport,
    request: Request,
    backend: Arc<dyn Backend>,
    ports: Vec<u16>,
) -> Result<(), StreamingError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (options, sandbox) = match &request {
        Request::Exec(r) => (
            Options {
                stdin: r.stdin,
                stdout: r.stdout,
                stderr: r.stderr,
                tty: r.tty,
            },
            None,
        ),
        Request::Attach(r) => (
            Options {
                stdin: r.stdin,
                stdout: r.stdout,
                stderr: r.stderr,
                tty: r.tty,
            },
            None,
        ),
        Request::PortForward(r) => (
            Options {
                stdin: false,
                stdout: false,
                stderr: false,
                tty: false,
            },
            Some(r.pod_sandbox_id.clone()),
        ),
    };
    let run = {
        let backend = backend.clone();
        move |session| async move {
            match request {
                Request::Exec(r) => backend.exec(&r, session).await,
                Request::Attach(r) => backend.attach(&r, session).await.map(|()| 0),
                Request::PortForward(_) => Ok(0),
            }
        }
    };
    match (transport, sandbox) {
        (Transport::Spdy(_), Some(sandbox)) => portforward::serve_spdy(io, backend, sandbox).await,
        (Transport::Spdy(protocol), None) => {
            remotecommand::serve_spdy(io, &protocol, options, run).await
        }
        (Transport::WebSocket(protocol), sandbox) => {
            let ws = WebSocketStream::from_raw_socket(io, WsRole::Server, None).await;
            match sandbox {
                Some(sandbox) if protocol == V2_PORT_FORWARD => {
                    portforward::serve_spdy(ByteStream::wrap(ws), backend, sandbox).await
                }
                Some(sandbox) => {
                    portforward::serve_websocket(ws, &protocol, backend, sandbox, ports).await
                }
                None => remotecommand::serve_websocket(ws, &protocol, options, run).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use async_trait::async_trait;
    use futures::{SinkExt, StreamExt};
    use k8s_cri::v1 as cri;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    use super::*;
    use crate::streaming::spdy::{Connection, Headers, Role};
    use crate::streaming::{SessionIo, websocket::ByteStream};

    /// Exec echoes stdin to stdout, says "err" on stderr and exits with the code its command
    /// names; connect reaches a local echo server. Anything else is a surprise.
    struct Fake {
        echo: SocketAddr,
    }

    #[async_trait]
    impl Backend for Fake {
        async fn exec(
            &self,
            request: &cri::ExecRequest,
            mut io: SessionIo,
        ) -> Result<i32, StreamingError> {
            if let Some(err) = &io.stderr {
                err.send(Bytes::from_static(b"err")).await.unwrap();
            }
            if let (Some(mut input), Some(out)) = (io.stdin.take(), io.stdout.as_ref()) {
                while let Some(data) = input.recv().await {
                    out.send(data).await.unwrap();
                }
            }
            Ok(request.cmd[0].parse().expect("an exit code"))
        }

        async fn attach(&self, _: &cri::AttachRequest, _: SessionIo) -> Result<(), StreamingError> {
            panic!("did not expect an attach")
        }

        async fn connect(&self, sandbox_id: &str, port: u16) -> Result<TcpStream, StreamingError> {
            assert_eq!(sandbox_id, "pod", "unexpected sandbox");
            if port != self.echo.port() {
                return Err(StreamingError::Invalid(format!("nothing on {port}")));
            }
            TcpStream::connect(self.echo)
                .await
                .map_err(super::super::io_error("connect to the echo server"))
        }
    }

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = conn.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        address
    }

    /// A server over the fake, and the fake's echo server.
    async fn serve_fake() -> (Arc<StreamingServer>, SocketAddr) {
        let echo = echo_server().await;
        let server = StreamingServer::bind("127.0.0.1:0".parse().unwrap(), Arc::new(Fake { echo }))
            .await
            .unwrap();
        tokio::spawn(server.clone().serve(std::future::pending()));
        (server, echo)
    }

    async fn server() -> Arc<StreamingServer> {
        serve_fake().await.0
    }

    fn exec(code: &str, stdin: bool) -> Request {
        Request::Exec(cri::ExecRequest {
            container_id: "c".into(),
            cmd: vec![code.into()],
            tty: false,
            stdin,
            stdout: true,
            stderr: true,
        })
    }

    fn forward() -> Request {
        Request::PortForward(cri::PortForwardRequest {
            pod_sandbox_id: "pod".into(),
            port: vec![],
        })
    }

    /// Sends a raw upgrade request; returns the status line and headers, and the connection.
    async fn upgrade(url: &str, extra: &str) -> (String, TcpStream) {
        let (host, path) = url.trim_start_matches("http://").split_once('/').unwrap();
        let mut conn = TcpStream::connect(host).await.unwrap();
        let request = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n");
        conn.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let byte = conn.read_u8().await.unwrap();
            head.push(byte);
        }
        (String::from_utf8(head).unwrap().to_ascii_lowercase(), conn)
    }

    async fn all(mut rx: tokio::sync::mpsc::Receiver<Bytes>) -> String {
        let mut out = Vec::new();
        while let Some(chunk) = rx.recv().await {
            out.extend_from_slice(&chunk);
        }
        String::from_utf8(out).unwrap()
    }

    async fn spdy_exec(server: &StreamingServer, protocol: &str) -> (String, String, String) {
        let url = server.url_for(exec("3", true)).unwrap();
        let (head, conn) = upgrade(
            &url,
            &format!(
                "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v9.channel.k8s.io, {protocol}\r\n"
            ),
        )
        .await;
        assert!(head.starts_with("http/1.1 101"), "{head}");
        assert!(
            head.contains(&format!("x-stream-protocol-version: {protocol}")),
            "{head}"
        );
        let (client, _) = Connection::new(conn, Role::Client).unwrap();
        let mut streams = Vec::new();
        for kind in ["error", "stdin", "stdout", "stderr"] {
            let headers = Headers::from_pairs(&[("streamType", kind)]);
            streams.push(client.open(headers).await.unwrap());
        }
        let mut streams = streams.into_iter();
        let (error, stdin, stdout, stderr) = (
            streams.next().unwrap(),
            streams.next().unwrap(),
            streams.next().unwrap(),
            streams.next().unwrap(),
        );
        stdin.writer.write(b"typed").await.unwrap();
        stdin.writer.close().await.unwrap();
        let out = (
            all(stdout.data).await,
            all(stderr.data).await,
            all(error.data).await,
        );
        client.close().await;
        out
    }

    async fn timed<F: std::future::Future>(f: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(20), f)
            .await
            .expect("test timed out")
    }

    #[tokio::test]
    async fn spdy_exec_reports_the_exit_code_as_each_version_does() {
        timed(async {
            let server = server().await;
            let (out, err, status) = spdy_exec(&server, "v4.channel.k8s.io").await;
            assert_eq!((out.as_str(), err.as_str()), ("typed", "err"));
            let status: serde_json::Value = serde_json::from_str(&status).unwrap();
            assert_eq!(status["reason"], "NonZeroExitCode");
            assert_eq!(status["details"]["causes"][0]["message"], "3");
            let (out, _, status) = spdy_exec(&server, "v2.channel.k8s.io").await;
            assert_eq!(out, "typed");
            assert_eq!(
                status,
                "command terminated with non-zero exit code: exit status 3"
            );
        })
        .await;
    }

    #[tokio::test]
    async fn base64_websocket_exec_uses_text_frames() {
        timed(async {
            let server = server().await;
            let url = server.url_for(exec("0", false)).unwrap();
            let mut request = url
                .replace("http://", "ws://")
                .into_client_request()
                .unwrap();
            request.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_static("v4.base64.channel.k8s.io"),
            );
            let conn = TcpStream::connect(server.address()).await.unwrap();
            let (mut ws, _) = tokio_tungstenite::client_async(request, conn)
                .await
                .unwrap();
            let mut frames = Vec::new();
            while let Some(Ok(message)) = ws.next().await {
                if let Message::Text(text) = message {
                    frames.push(text.to_string());
                }
            }
            // "err" on stderr (channel 2), then a Success status on the error channel (3).
            assert_eq!(frames[0], "2ZXJy");
            let status =
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &frames[1][1..])
                    .unwrap();
            assert_eq!(frames[1].as_bytes()[0], b'3');
            assert_eq!(status, br#"{"metadata":{},"status":"Success"}"#);
        })
        .await;
    }

    #[tokio::test]
    async fn bad_requests_are_refused_before_any_upgrade() {
        timed(async {
            let server = server().await;
            let base = format!("http://{}", server.address());
            let (head, _) = upgrade(&format!("{base}/exec/nope"), "").await;
            assert!(head.starts_with("http/1.1 404"), "{head}");
            // A token is for its own kind only, and is gone after one try.
            let url = server.url_for(exec("0", false)).unwrap();
            let wrong = url.replace("/exec/", "/attach/");
            let (head, _) = upgrade(&wrong, "").await;
            assert!(head.starts_with("http/1.1 404"), "{head}");
            let (head, _) = upgrade(&url, "").await;
            assert!(head.starts_with("http/1.1 404"), "{head}");
            let url = server.url_for(exec("0", false)).unwrap();
            let (head, _) = upgrade(&url, "").await;
            assert!(head.starts_with("http/1.1 400"), "{head}");
            let url = server.url_for(exec("0", false)).unwrap();
            let (head, _) = upgrade(
                &url,
                "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: channel.k8s.io\r\n",
            )
            .await;
            assert!(head.starts_with("http/1.1 403"), "{head}");
            assert!(
                head.contains("x-accepted-stream-protocol-versions: v4.channel.k8s.io"),
                "{head}"
            );
            let url = server.url_for(exec("0", false)).unwrap();
            let (head, _) = upgrade(
                &url,
                "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v9.channel.k8s.io\r\n",
            )
            .await;
            assert!(head.starts_with("http/1.1 400"), "{head}");
            let url = server.url_for(forward()).unwrap();
            let (head, _) = upgrade(
                &url,
                "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v4.channel.k8s.io\r\n",
            )
            .await;
            assert!(head.starts_with("http/1.1 400"), "no ports: {head}");
        })
        .await;
    }

    #[tokio::test]
    async fn port_forward_reaches_the_backend_over_channels_and_the_spdy_tunnel() {
        timed(async {
            let (server, echo) = serve_fake().await;
            // WebSocket channels: both channels open with the port, then data flows.
            let url = server.url_for(forward()).unwrap();
            let url = format!("{}?ports={}", url.replace("http://", "ws://"), echo.port());
            let mut request = url.into_client_request().unwrap();
            request.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_static("v4.channel.k8s.io"),
            );
            let conn = TcpStream::connect(server.address()).await.unwrap();
            let (mut ws, _) = tokio_tungstenite::client_async(request, conn)
                .await
                .unwrap();
            let port = echo.port().to_le_bytes();
            for channel in [0u8, 1] {
                let Some(Ok(Message::Binary(first))) = ws.next().await else {
                    panic!("no port frame");
                };
                assert_eq!(&first[..], &[channel, port[0], port[1]]);
            }
            ws.send(Message::Binary(Bytes::from_static(b"\x00ping")))
                .await
                .unwrap();
            let Some(Ok(Message::Binary(echoed))) = ws.next().await else {
                panic!("no echo");
            };
            assert_eq!(&echoed[..], b"\x00ping");
            ws.close(None).await.unwrap();

            // v2.portforward.k8s.io: SPDY inside the WebSocket, one pair per connection.
            let url = server.url_for(forward()).unwrap();
            let mut request = url
                .replace("http://", "ws://")
                .into_client_request()
                .unwrap();
            request.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_static("v2.portforward.k8s.io"),
            );
            let conn = TcpStream::connect(server.address()).await.unwrap();
            let (ws, _) = tokio_tungstenite::client_async(request, conn)
                .await
                .unwrap();
            let (client, _) = Connection::new(ByteStream::wrap(ws), Role::Client).unwrap();
            let port = echo.port().to_string();
            for (request_id, port) in [("1", port.as_str()), ("2", "1")] {
                let mut pair = Vec::new();
                for kind in ["error", "data"] {
                    let headers = Headers::from_pairs(&[
                        ("streamType", kind),
                        ("port", port),
                        ("requestID", request_id),
                    ]);
                    pair.push(client.open(headers).await.unwrap());
                }
                let data = pair.pop().unwrap();
                let error = pair.pop().unwrap();
                if port == "1" {
                    assert!(all(data.data).await.is_empty());
                    let message = all(error.data).await;
                    assert!(message.contains("error forwarding port 1"), "{message}");
                } else {
                    data.writer.write(b"tunneled").await.unwrap();
                    let mut rx = data.data;
                    assert_eq!(&rx.recv().await.unwrap()[..], b"tunneled");
                }
            }
            client.close().await;
        })
        .await;
    }
}
