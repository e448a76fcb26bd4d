//! One reverse-proxy step for the node's streaming endpoints, shared by the agent (client →
//! the runtime's streaming URL) and apiserver-lite (client → the node's kubelet API).
//!
//! The request is sent on a connection the caller opened (plain TCP, TLS, anything that reads
//! and writes), over HTTP/1.1. Ordinary answers (`pods/log`, errors) stream back as they come.
//! When the client asked for an upgrade (`Upgrade: SPDY/3.1` or `websocket`) and the backend
//! answers 101, that answer with its negotiation headers (`X-Stream-Protocol-Version`,
//! `Sec-WebSocket-Accept`, `Sec-WebSocket-Protocol`) goes back to the client, and from then on
//! the bytes are copied both ways untouched until either side closes. The proxy never looks
//! inside the stream, so every protocol version the backend speaks works through it.

use std::convert::Infallible;

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, BodyStream, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// The body of a proxied answer. A backend error mid-stream ends the body (the client sees a
/// short stream, as with a dropped connection).
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Why a request could not be proxied.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The HTTP exchange with the backend failed.
    #[error("proxying to {backend}: {source}")]
    Backend {
        /// The backend, for the message.
        backend: String,
        /// The error.
        #[source]
        source: hyper::Error,
    },
    /// The target path is not a valid request URI.
    #[error("proxying to {backend}: invalid path {path:?}")]
    Path {
        /// The backend.
        backend: String,
        /// The path.
        path: String,
    },
}

/// Headers that belong to one connection (RFC 9110 §7.6.1) and are never forwarded as they
/// are; `Upgrade` is set again on its own when the request is an upgrade.
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whether the request asks to switch protocols.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// The headers to forward: everything but hop-by-hop headers, the client's credentials (the
/// proxy authenticates on its own connection) and `Host`; `Upgrade` kept for upgrades.
fn forwarded_headers(headers: &HeaderMap, upgrade: bool) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n) || n == "authorization" || n == "host" {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    if upgrade {
        if let Some(u) = headers.get(header::UPGRADE) {
            out.insert(header::UPGRADE, u.clone());
        }
        out.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    }
    out
}

fn body_of(incoming: Incoming) -> Body {
    let frames = BodyStream::new(incoming)
        .take_while(|frame| futures::future::ready(frame.is_ok()))
        .filter_map(|frame| futures::future::ready(frame.ok().map(Ok::<Frame<Bytes>, Infallible>)));
    StreamBody::new(frames).boxed_unsync()
}

/// Sends `req` to `path_and_query` on `backend` (an open connection to `host`) and answers
/// with the backend's response; for an upgrade answered with 101, spawns the byte copy
/// between the two upgraded connections.
pub async fn forward<S>(
    mut req: Request<Incoming>,
    path_and_query: &str,
    host: &str,
    backend: S,
) -> Result<Response<Body>, ProxyError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let upgrade = is_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let uri: Uri = path_and_query.parse().map_err(|_| ProxyError::Path {
        backend: host.to_string(),
        path: path_and_query.to_string(),
    })?;
    let (parts, body) = req.into_parts();
    let mut outgoing = Request::builder()
        .method(parts.method)
        .uri(uri)
        .body(body)
        .map_err(|_| ProxyError::Path {
            backend: host.to_string(),
            path: path_and_query.to_string(),
        })?;
    *outgoing.headers_mut() = forwarded_headers(&parts.headers, upgrade);
    if let Ok(h) = HeaderValue::from_str(host) {
        outgoing.headers_mut().insert(header::HOST, h);
    }
    let backend_err = |source| ProxyError::Backend {
        backend: host.to_string(),
        source,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(backend))
        .await
        .map_err(backend_err)?;
    let host_name = host.to_string();
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(backend = %host_name, error = %e, "backend connection ended");
        }
    });
    let mut resp = sender.send_request(outgoing).await.map_err(backend_err)?;
    let status = resp.status();
    let mut headers = resp.headers().clone();
    if status == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_upgrade) = client_upgrade
    {
        let backend_upgrade = hyper::upgrade::on(&mut resp);
        let host_name = host.to_string();
        tokio::spawn(async move {
            match futures::future::try_join(client_upgrade, backend_upgrade).await {
                Ok((client, backend)) => {
                    let mut client = TokioIo::new(client);
                    let mut backend = TokioIo::new(backend);
                    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut backend).await {
                        tracing::debug!(backend = %host_name, error = %e, "upgraded stream ended");
                    }
                }
                Err(e) => {
                    tracing::debug!(backend = %host_name, error = %e, "upgrade failed");
                }
            }
        });
        let mut answer = Response::new(http_body_util::Empty::new().boxed_unsync());
        *answer.status_mut() = status;
        *answer.headers_mut() = headers;
        return Ok(answer);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
    headers.remove(header::CONTENT_LENGTH);
    let mut answer = Response::new(body_of(resp.into_body()));
    *answer.status_mut() = if status == StatusCode::SWITCHING_PROTOCOLS {
        StatusCode::BAD_GATEWAY
    } else {
        status
    };
    *answer.headers_mut() = headers;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_needs_both_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        assert!(!is_upgrade(&h));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(is_upgrade(&h));
    }

    #[test]
    fn credentials_and_hop_by_hop_headers_are_not_forwarded() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        h.insert(header::HOST, HeaderValue::from_static("client"));
        h.insert("sec-websocket-key", HeaderValue::from_static("abc"));
        h.insert("x-stream-protocol-version", HeaderValue::from_static("v4"));
        let out = forwarded_headers(&h, true);
        assert!(out.get(header::AUTHORIZATION).is_none());
        assert!(out.get(header::HOST).is_none());
        assert_eq!(out.get(header::UPGRADE).unwrap(), "websocket");
        assert_eq!(out.get(header::CONNECTION).unwrap(), "Upgrade");
        assert_eq!(out.get("sec-websocket-key").unwrap(), "abc");
        let plain = forwarded_headers(&h, false);
        assert!(plain.get(header::UPGRADE).is_none());
    }
}
