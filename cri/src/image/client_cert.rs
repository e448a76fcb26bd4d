//! Client certificates for registry endpoints (`tls.cert_file` and `tls.key_file` in the
//! registries file).
//!
//! The registry client (oci-client) has no way to present a client certificate, so a pull
//! from a host whose config names one goes through a [`ClientCertBridge`]: a plain-HTTP
//! listener on 127.0.0.1 that forwards each request to the real HTTPS endpoint over a
//! connection that presents the certificate (reqwest with an identity, the same CA settings
//! as the host's config), and rewrites the absolute URLs the registry hands back that point
//! at itself (a token service's realm, redirects) so those requests come through the bridge
//! too. The bridge serves one pull attempt and stops when dropped. Only loopback clients can
//! reach it, and it only ever talks to the one endpoint it was made for.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HOST, HeaderName, LOCATION, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use upgrade_proxy::HOP_BY_HOP;

use super::pull::error_chain;

/// Why a bridge could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The certificate and key do not make a client identity.
    #[error("client certificate for {host}: {detail}")]
    Identity {
        /// The registry host.
        host: String,
        /// What is wrong.
        detail: String,
    },
    /// The CA bundle could not be used.
    #[error("ca_file for {host}: {detail}")]
    Roots {
        /// The registry host.
        host: String,
        /// What is wrong.
        detail: String,
    },
    /// The HTTPS client could not be built.
    #[error("client for {host}: {detail}")]
    Client {
        /// The registry host.
        host: String,
        /// What is wrong.
        detail: String,
    },
    /// The loopback listener could not be opened.
    #[error("loopback listener for {host}: {source}")]
    Listen {
        /// The registry host.
        host: String,
        /// The socket error.
        source: std::io::Error,
    },
}

/// TLS settings of the endpoint the bridge talks to.
#[derive(Debug, Clone, Copy)]
pub struct BridgeTls<'a> {
    /// PEM with the client certificate (chain) and its private key.
    pub identity_pem: &'a [u8],
    /// PEM of extra CAs to trust (`tls.ca_file`).
    pub ca_pem: Option<&'a [u8]>,
    /// `tls.insecure_skip_verify`.
    pub insecure_skip_verify: bool,
    /// Connect timeout towards the endpoint.
    pub connect_timeout: Duration,
    /// Read timeout towards the endpoint.
    pub read_timeout: Duration,
}

/// A loopback bridge to one HTTPS registry endpoint that presents a client certificate.
/// Dropping it stops the listener and every connection it serves.
#[derive(Debug)]
pub struct ClientCertBridge {
    local: String,
    task: JoinHandle<()>,
}

struct BridgeState {
    /// `host[:port]` of the real endpoint.
    upstream: String,
    /// `http://127.0.0.1:<port>`, what the upstream's own URLs are rewritten to.
    local_origin: String,
    client: reqwest::Client,
}

impl ClientCertBridge {
    /// Starts a bridge to `https://<upstream>` on a free loopback port.
    pub async fn start(upstream: &str, tls: BridgeTls<'_>) -> Result<Self, BridgeError> {
        let client = https_client(upstream, &tls)?;
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .map_err(|source| BridgeError::Listen {
                host: upstream.to_string(),
                source,
            })?;
        let local = listener
            .local_addr()
            .map_err(|source| BridgeError::Listen {
                host: upstream.to_string(),
                source,
            })?
            .to_string();
        let state = Arc::new(BridgeState {
            upstream: upstream.to_string(),
            local_origin: format!("http://{local}"),
            client,
        });
        let task = tokio::spawn(serve(listener, state));
        Ok(ClientCertBridge { local, task })
    }

    /// `127.0.0.1:<port>`: the registry host to give the registry client (plain HTTP).
    pub fn local_host(&self) -> &str {
        &self.local
    }
}

impl Drop for ClientCertBridge {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn https_client(upstream: &str, tls: &BridgeTls<'_>) -> Result<reqwest::Client, BridgeError> {
    let identity =
        reqwest::Identity::from_pem(tls.identity_pem).map_err(|e| BridgeError::Identity {
            host: upstream.to_string(),
            detail: error_chain(&e),
        })?;
    let extra_roots = match tls.ca_pem {
        Some(pem) => {
            reqwest::Certificate::from_pem_bundle(pem).map_err(|e| BridgeError::Roots {
                host: upstream.to_string(),
                detail: error_chain(&e),
            })?
        }
        None => Vec::new(),
    };
    reqwest::Client::builder()
        .identity(identity)
        .tls_certs_merge(extra_roots)
        .tls_danger_accept_invalid_certs(tls.insecure_skip_verify)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(tls.connect_timeout)
        .read_timeout(tls.read_timeout)
        .build()
        .map_err(|e| BridgeError::Client {
            host: upstream.to_string(),
            detail: error_chain(&e),
        })
}

async fn serve(listener: TcpListener, state: Arc<BridgeState>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(upstream = %state.upstream, error = %e, "bridge accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| forward(state.clone(), request));
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        // Reap finished connections so the set stays small.
        while connections.try_join_next().is_some() {}
    }
}

type BridgeBody = BoxBody<Bytes, std::io::Error>;

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
}

async fn forward(
    state: Arc<BridgeState>,
    request: Request<Incoming>,
) -> Result<Response<BridgeBody>, Infallible> {
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let url = format!("https://{}{path}", state.upstream);
    let method = request.method().clone();
    let mut headers = HeaderMap::new();
    for (name, value) in request.headers() {
        if name != HOST && !is_hop_by_hop(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return Ok(bad_gateway(&state, &url, &e.to_string())),
    };
    let sent = state
        .client
        .request(method, &url)
        .headers(headers)
        .body(body)
        .send()
        .await;
    let upstream = match sent {
        Ok(response) => response,
        Err(e) => return Ok(bad_gateway(&state, &url, &error_chain(&e))),
    };
    let upstream: Response<reqwest::Body> = upstream.into();
    let (mut parts, body) = upstream.into_parts();
    for name in HOP_BY_HOP.iter().copied() {
        parts.headers.remove(name);
    }
    for name in [LOCATION, WWW_AUTHENTICATE] {
        let rewritten: Vec<HeaderValue> = parts
            .headers
            .get_all(&name)
            .iter()
            .map(|value| {
                value
                    .to_str()
                    .ok()
                    .map(|text| rewrite_origin(text, &state.upstream, &state.local_origin))
                    .and_then(|text| HeaderValue::from_str(&text).ok())
                    .unwrap_or_else(|| value.clone())
            })
            .collect();
        if !rewritten.is_empty() {
            parts.headers.remove(&name);
            for value in rewritten {
                parts.headers.append(&name, value);
            }
        }
    }
    let body = body.map_err(std::io::Error::other).boxed();
    Ok(Response::from_parts(parts, body))
}

fn bad_gateway(state: &BridgeState, url: &str, detail: &str) -> Response<BridgeBody> {
    tracing::warn!(upstream = %state.upstream, url, error = detail, "registry request through client-certificate bridge failed");
    let mut response = Response::new(
        Full::new(Bytes::from(format!("{url}: {detail}")))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}

/// Whether `host` (`name`, `name:port`, `[v6]` or `[v6]:port`) names a port.
fn has_port(host: &str) -> bool {
    host.rsplit_once(':').is_some_and(|(name, port)| {
        !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && (name.ends_with(']') || !name.contains(':'))
    })
}

/// Replaces the upstream's HTTPS origin in `text` with the bridge's (the origin with an
/// explicit `:443` and without it are the same place).
fn rewrite_origin(text: &str, upstream: &str, local_origin: &str) -> String {
    let bare = upstream.strip_suffix(":443").unwrap_or(upstream);
    let origins = if has_port(bare) {
        vec![format!("https://{bare}")]
    } else {
        vec![format!("https://{bare}:443"), format!("https://{bare}")]
    };
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    'scan: while !rest.is_empty() {
        for origin in &origins {
            if let Some(after) = rest.strip_prefix(origin.as_str()) {
                // Only a whole authority: the next character ends it.
                if after.is_empty() || after.starts_with(['/', '"', '?', '#', ',', ' ']) {
                    out.push_str(local_origin);
                    rest = after;
                    continue 'scan;
                }
            }
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
        }
        rest = chars.as_str();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls_in_headers_point_back_at_the_bridge() {
        let local = "http://127.0.0.1:4000";
        assert_eq!(
            rewrite_origin(
                r#"Bearer realm="https://reg.lan:8443/token",service="reg.lan:8443""#,
                "reg.lan:8443",
                local
            ),
            r#"Bearer realm="http://127.0.0.1:4000/token",service="reg.lan:8443""#
        );
        assert_eq!(
            rewrite_origin("https://reg.lan/v2/x/blobs/sha256:1", "reg.lan", local),
            "http://127.0.0.1:4000/v2/x/blobs/sha256:1"
        );
        // Port 443 written or not is the same origin.
        assert_eq!(
            rewrite_origin("https://reg.lan:443/v2/", "reg.lan", local),
            "http://127.0.0.1:4000/v2/"
        );
        assert_eq!(
            rewrite_origin("https://reg.lan/v2/", "reg.lan:443", local),
            "http://127.0.0.1:4000/v2/"
        );
    }

    #[test]
    fn other_hosts_and_longer_names_are_left_alone() {
        let local = "http://127.0.0.1:4000";
        for text in [
            "https://auth.example/token",
            "https://reg.lan.evil/v2/",
            "https://reg.lan:84430/v2/",
            "http://reg.lan:8443/v2/",
            r#"Basic realm="Registry Realm""#,
        ] {
            assert_eq!(rewrite_origin(text, "reg.lan:8443", local), text);
        }
        assert_eq!(
            rewrite_origin("https://reg.lan.evil/v2/", "reg.lan", local),
            "https://reg.lan.evil/v2/"
        );
    }

    #[test]
    fn ports_are_told_apart_from_ipv6_addresses() {
        assert!(has_port("reg.lan:8443"));
        assert!(has_port("[::1]:5000"));
        assert!(!has_port("reg.lan"));
        assert!(!has_port("[::1]"));
        assert!(!has_port("::1"));
        let local = "http://127.0.0.1:4000";
        assert_eq!(
            rewrite_origin("https://[::1]:5000/v2/", "[::1]:5000", local),
            "http://127.0.0.1:4000/v2/"
        );
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        assert!(is_hop_by_hop(&HeaderName::from_static("connection")));
        assert!(is_hop_by_hop(&HeaderName::from_static("transfer-encoding")));
        assert!(!is_hop_by_hop(&HeaderName::from_static("authorization")));
        assert!(!is_hop_by_hop(&HeaderName::from_static("accept")));
    }

    #[tokio::test]
    async fn a_bad_identity_is_refused_with_the_host_named() {
        let err = ClientCertBridge::start(
            "reg.lan:8443",
            BridgeTls {
                identity_pem: b"not a pem",
                ca_pem: None,
                insecure_skip_verify: false,
                connect_timeout: Duration::from_secs(1),
                read_timeout: Duration::from_secs(1),
            },
        )
        .await
        .expect_err("junk identity");
        assert!(
            err.to_string()
                .starts_with("client certificate for reg.lan:8443"),
            "{err}"
        );
    }
}
