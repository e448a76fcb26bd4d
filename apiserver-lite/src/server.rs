//! The HTTPS front: TLS with client-certificate authentication, HTTP/1.1 and HTTP/2, request
//! limits (body size, requests in flight), authentication, and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apimachinery::status::ApiError;
use http::{Request, Response, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::api::{Api, ApiRequest, Body, error_response};
use crate::auth::{TokenAuthenticator, UserInfo, user_from_certificate};
use crate::pki::Pki;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The TLS material is unusable.
    #[error("TLS setup: {0}")]
    Tls(String),
    /// Accepting connections failed.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
}

/// Everything the connections share.
pub struct Frontend {
    /// The API.
    pub api: Arc<Api>,
    /// Bearer tokens.
    pub tokens: TokenAuthenticator,
    /// Requests in flight, watches excepted.
    pub inflight: Semaphore,
    /// Request body cap in bytes.
    pub max_body_bytes: usize,
    /// The pod subresources proxied to kubelets.
    pub node_proxy: crate::nodeproxy::NodeProxy,
}

/// The rustls configuration: our serving certificate, client certificates optional but
/// verified against the cluster CA when presented, HTTP/2 preferred.
pub fn tls_config(pki: &Pki) -> Result<rustls::ServerConfig, ServeError> {
    let certs: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut pki.serving_cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| ServeError::Tls(format!("serving certificate: {e}")))?;
    let key: PrivateKeyDer<'static> =
        rustls_pemfile::private_key(&mut pki.serving_key_pem.as_bytes())
            .map_err(|e| ServeError::Tls(format!("serving key: {e}")))?
            .ok_or_else(|| ServeError::Tls("serving key: no key in PEM".into()))?;
    let mut roots = RootCertStore::empty();
    for ca in rustls_pemfile::certs(&mut pki.ca_cert_pem.as_bytes()) {
        let ca = ca.map_err(|e| ServeError::Tls(format!("CA certificate: {e}")))?;
        roots
            .add(ca)
            .map_err(|e| ServeError::Tls(format!("CA certificate: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| ServeError::Tls(format!("client verifier: {e}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| ServeError::Tls(format!("serving certificate: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves connections until `shutdown` turns true, then waits up to `drain` for requests in
/// flight (watches end on the same signal).
pub async fn serve(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    frontend: Arc<Frontend>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    drain: Duration,
) -> Result<(), ServeError> {
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let acceptor = acceptor.clone();
        let frontend = frontend.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let cert_user = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(user_from_certificate);
            let service = hyper::service::service_fn(move |req| {
                let frontend = frontend.clone();
                let cert_user = cert_user.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(frontend.handle(req, cert_user, peer).await)
                }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("stopped accepting connections; draining requests in flight");
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?drain,
            "requests still in flight after the drain period; closing them"
        );
    }
    Ok(())
}

fn anonymous_paths(path: &str) -> bool {
    matches!(
        path,
        "/healthz"
            | "/livez"
            | "/readyz"
            | "/version"
            | "/healthz/ping"
            | "/livez/ping"
            | "/readyz/ping"
    )
}

impl Frontend {
    /// The client certificate's user, else the bearer token's: a static token, else a
    /// ServiceAccount token.
    async fn authenticate(
        &self,
        req: &Request<Incoming>,
        cert_user: Option<UserInfo>,
    ) -> Option<UserInfo> {
        if let Some(user) = cert_user {
            return Some(user);
        }
        let auth = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
        let token = auth
            .strip_prefix("Bearer ")
            .or_else(|| auth.strip_prefix("bearer "))?
            .trim();
        if let Some(user) = self.tokens.authenticate(token) {
            return Some(user);
        }
        let service = self.api.service_account_tokens.as_deref()?;
        let objects = crate::serviceaccount::StoreObjects(self.api.store.as_ref());
        match service
            .authenticate(token, &objects, jiff::Timestamp::now().as_second())
            .await
        {
            Ok(user) => Some(user),
            Err(e) => {
                tracing::debug!(error = %e, "bearer token refused");
                None
            }
        }
    }

    async fn handle(
        &self,
        req: Request<Incoming>,
        cert_user: Option<UserInfo>,
        peer: SocketAddr,
    ) -> Response<Body> {
        let started = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let user = match self.authenticate(&req, cert_user).await {
            Some(u) => u,
            None if anonymous_paths(&path) => UserInfo {
                name: "system:anonymous".into(),
                uid: String::new(),
                groups: vec!["system:unauthenticated".into()],
            },
            None => return error_response(&ApiError::unauthorized()),
        };
        // Logs and streams go to the pod's kubelet with the request unread (upgrades need
        // the connection); like watches they are long-running and not counted in flight.
        if let Some(target) = crate::nodeproxy::target(&method, &path) {
            let resp = self.node_proxy.handle(&self.api, req, target).await;
            tracing::debug!(%peer, user = %user.name, %method, %path, status = resp.status().as_u16(), "proxied to the node");
            return resp;
        }
        if let Some(target) = crate::nodeproxy::node_target(&path) {
            let resp = self.node_proxy.handle_node(&self.api, req, target).await;
            tracing::debug!(%peer, user = %user.name, %method, %path, status = resp.status().as_u16(), "proxied to the node");
            return resp;
        }
        // Watches, health checks and system:masters (the cluster's own components and admins)
        // are not limited, as upstream's max-in-flight filter exempts them.
        let exempt = is_watch(&req)
            || anonymous_paths(&path)
            || user.groups.iter().any(|g| g == "system:masters");
        let _permit = if exempt {
            None
        } else {
            match self.inflight.try_acquire() {
                Ok(p) => Some(p),
                Err(_) => {
                    return error_response(&ApiError::too_many_requests(
                        "Too many requests, please try again later.",
                        1,
                    ));
                }
            }
        };
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, self.max_body_bytes).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e)
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                return error_response(&ApiError::too_large(format!(
                    "Request entity too large: limit is {}",
                    self.max_body_bytes
                )));
            }
            Err(e) => {
                return error_response(&ApiError::bad_request(format!(
                    "reading the request body failed: {e}"
                )));
            }
        };
        let request = ApiRequest {
            method: parts.method,
            path: parts.uri.path().to_string(),
            query: parts.uri.query().map(String::from),
            headers: parts.headers,
            body,
        };
        let resp = self.api.handle(request, &user).await;
        tracing::debug!(%peer, user = %user.name, %method, %path, status = resp.status().as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "request");
        resp
    }
}

fn is_watch(req: &Request<Incoming>) -> bool {
    req.uri().path().contains("/watch/")
        || req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"))
}
