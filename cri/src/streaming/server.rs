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
