//! The API: routing a request to discovery, OpenAPI, health or a resource verb, and shaping
//! the answer (JSON, YAML, Table, Status errors, watch streams).

pub mod discovery;
#[cfg(test)]
mod fuzz;
pub mod negotiate;
pub mod objects;
pub mod protobuf;
pub mod request;
pub mod watch;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use apimachinery::status::ApiError;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use serde_json::Value;

use crate::admission::Admission;
use crate::auth::{Attributes, Authorizer, Decision, UserInfo};
use crate::storage::Store;
use negotiate::{Allowed, Format};
use request::Target;

/// The response body type: whole documents and watch streams alike.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Settings of the API layer.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// `host:port` clients reach this server at, for `/api`'s serverAddressByClientCIDRs.
    pub advertise_address: String,
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// Most watches open at once (429 beyond).
    pub max_watches: usize,
    /// Upper bound of a watch's length when the client gives no timeoutSeconds; each watch
    /// gets a random length between half of this and this, as upstream spreads reconnects.
    pub max_watch_seconds: u64,
    /// Interval of bookmarks on watches that allow them.
    pub bookmark_interval: std::time::Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            advertise_address: "127.0.0.1:6443".into(),
            max_body_bytes: 3 * 1024 * 1024,
            max_watches: 10_000,
            max_watch_seconds: 3600,
            bookmark_interval: std::time::Duration::from_secs(60),
        }
    }
}

/// The API server's request handling, shared by all connections.
pub struct Api {
    /// Where objects live.
    pub store: Arc<dyn Store>,
    /// Settings.
    pub config: ApiConfig,
    /// The authorization step.
    pub authorizer: Box<dyn Authorizer>,
    /// Built-in admission: namespaces, allocations.
    pub admission: Admission,
    /// Issues and verifies ServiceAccount tokens; without it `serviceaccounts/token` answers
    /// 404 and no ServiceAccount token authenticates.
    pub service_account_tokens: Option<Arc<crate::serviceaccount::TokenService>>,
    open_watches: AtomicUsize,
    /// Woken when a namespace is marked for deletion.
    pub namespace_wakeup: tokio::sync::Notify,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("store", &self.store.backend())
            .finish()
    }
}

/// A finished answer before it becomes an HTTP response.
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// The document.
    pub body: Value,
    /// The representation.
    pub format: Format,
    /// `Warning` headers.
    pub warnings: Vec<String>,
}

impl Reply {
    /// A 200 JSON document.
    pub fn ok(body: Value) -> Self {
        Reply {
            status: StatusCode::OK,
            body,
            format: Format::Json,
            warnings: Vec::new(),
        }
    }
}

/// Serializes a document in `format`.
pub fn encode(body: &Value, format: Format) -> Bytes {
    match format {
        Format::Yaml => serde_yaml::to_string(body).unwrap_or_default().into(),
        _ => serde_json::to_vec(body).unwrap_or_default().into(),
    }
}

/// A complete response.
pub fn respond(reply: Reply) -> Response<Body> {
    let bytes = encode(&reply.body, reply.format);
    let mut resp = Response::new(Full::new(bytes).boxed_unsync());
    *resp.status_mut() = reply.status;
    if let Ok(v) = HeaderValue::from_str(&reply.format.content_type()) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    for w in reply.warnings {
        if let Ok(v) = HeaderValue::from_str(&format!("299 - {}", serde_json::Value::String(w))) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

/// A Status error response.
pub fn error_response(err: &ApiError) -> Response<Body> {
    let mut resp = respond(Reply {
        status: StatusCode::from_u16(err.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body: err.to_status(),
        format: Format::Json,
        warnings: Vec::new(),
    });
    if let Some(secs) = err.retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

fn plain_text(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from_static(text.as_bytes())).boxed_unsync());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// The parts of an HTTP request the API needs, with the body read.
pub struct ApiRequest {
    /// Method.
    pub method: http::Method,
    /// Path.
    pub path: String,
    /// Raw query.
    pub query: Option<String>,
    /// Headers.
    pub headers: http::HeaderMap,
    /// Body bytes (already capped).
    pub body: Bytes,
}

impl ApiRequest {
    /// A header as text.
    pub fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Api {
    /// Builds the API over a store.
    pub fn new(
        store: Arc<dyn Store>,
        config: ApiConfig,
        authorizer: Box<dyn Authorizer>,
        admission: Admission,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Api {
            store,
            config,
            authorizer,
            admission,
            service_account_tokens: None,
            open_watches: AtomicUsize::new(0),
            namespace_wakeup: tokio::sync::Notify::new(),
            shutdown,
        }
    }

    /// Handles one authenticated request.
    pub async fn handle(self: &Arc<Self>, req: ApiRequest, user: &UserInfo) -> Response<Body> {
        match self.route(req, user).await {
            Ok(resp) => resp,
            Err(e) => error_response(&e),
        }
    }

    async fn route(
        self: &Arc<Self>,
        req: ApiRequest,
        user: &UserInfo,
    ) -> Result<Response<Body>, ApiError> {
        let target = request::parse(&req.method, &req.path, req.query.as_deref())?;
        let accept = req.header(header::ACCEPT).map(String::from);
        let read_only = matches!(req.method, http::Method::GET | http::Method::HEAD);
        match target {
            Target::Resource(r) => {
                self.authorize(user, &r)?;
                objects::handle(self, r, req, user).await
            }
            _ if !read_only => Err(ApiError::method_not_allowed(req.method.as_str(), &req.path)),
            Target::CoreVersions | Target::Groups => {
                let core = matches!(target, Target::CoreVersions);
                let format = negotiate::negotiate(accept.as_deref(), Allowed::Discovery)?;
                let body = match format {
                    Format::Discovery(v) => discovery::aggregated(core, v),
                    _ if core => discovery::core_versions(&self.config.advertise_address),
                    _ => discovery::group_list(),
                };
                Ok(respond(Reply {
                    format,
                    ..Reply::ok(body)
                }))
            }
            Target::Group(g) => discovery::group(&g)
                .map(|d| respond(Reply::ok(d)))
                .ok_or_else(ApiError::no_route),
            Target::GroupVersion(g, v) => discovery::resource_list(&g, &v)
                .map(|d| respond(Reply::ok(d)))
                .ok_or_else(ApiError::no_route),
            Target::NonResource(path) => self.non_resource(&path, accept.as_deref()).await,
        }
    }

    fn authorize(&self, user: &UserInfo, r: &request::ResourceRequest) -> Result<(), ApiError> {
        let attrs = Attributes {
            user,
            verb: r.verb.as_str(),
            group: r.resource.group,
            resource: r.resource.plural,
            subresource: r.subresource.map(|s| s.name()).unwrap_or(""),
            namespace: r.namespace.as_deref().unwrap_or(""),
            name: r.name.as_deref().unwrap_or(""),
            path: "",
        };
        match self.authorizer.authorize(&attrs) {
            Decision::Allow => Ok(()),
            Decision::Deny(why) => Err(ApiError::forbidden(
                &r.group_resource(),
                r.name.as_deref().unwrap_or(""),
                format!(
                    "User \"{}\" cannot {} resource \"{}\": {why}",
                    user.name,
                    r.verb.as_str(),
                    r.resource.plural
                ),
            )),
        }
    }

    async fn non_resource(
        &self,
        path: &str,
        accept: Option<&str>,
    ) -> Result<Response<Body>, ApiError> {
        let path = path.trim_end_matches('/');
        match path {
            "/version" => Ok(respond(Reply::ok(version_info()))),
            "/healthz" | "/livez" | "/healthz/ping" | "/livez/ping" => {
                Ok(plain_text(StatusCode::OK, "ok"))
            }
            "/readyz" | "/readyz/ping" => {
                if *self.shutdown.borrow() {
                    return Ok(plain_text(StatusCode::SERVICE_UNAVAILABLE, "shutting down"));
                }
                match self.store.current_revision().await {
                    Ok(_) => Ok(plain_text(StatusCode::OK, "ok")),
                    Err(_) => Ok(plain_text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "storage not ready",
                    )),
                }
            }
            "/.well-known/openid-configuration" | "/openid/v1/jwks" => {
                let service = self
                    .service_account_tokens
                    .as_deref()
                    .ok_or_else(ApiError::no_route)?;
                Ok(respond(Reply::ok(if path == "/openid/v1/jwks" {
                    service.jwks()
                } else {
                    service.openid_configuration(&format!(
                        "https://{}/openid/v1/jwks",
                        self.config.advertise_address
                    ))
                })))
            }
            "/openapi/v3" => Ok(respond(Reply::ok(apimachinery::openapi::v3_root()))),
            "/openapi/v2" => {
                if accept.is_some_and(|a| a.contains("protobuf")) {
                    let mut resp = Response::new(
                        Full::new(Bytes::from_static(apimachinery::openapi::v2_protobuf()))
                            .boxed_unsync(),
                    );
                    resp.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static(apimachinery::openapi::V2_PROTOBUF_CONTENT_TYPE),
                    );
                    return Ok(resp);
                }
                Ok(respond(Reply::ok(apimachinery::openapi::v2())))
            }
            p if p.starts_with("/openapi/v3/") => {
                let gv = &p["/openapi/v3/".len()..];
                let (group, version) = match gv.split('/').collect::<Vec<_>>().as_slice() {
                    ["api", v] => (String::new(), v.to_string()),
                    ["apis", g, v] => (g.to_string(), v.to_string()),
                    _ => return Err(ApiError::no_route()),
                };
                let doc = apimachinery::openapi::v3_group_version(&group, &version)
                    .ok_or_else(ApiError::no_route)?;
                Ok(respond(Reply::ok(doc)))
            }
            _ => Err(ApiError::no_route()),
        }
    }

    /// Counts an open watch; `None` when the cap is reached.
    pub(crate) fn open_watch(self: &Arc<Self>) -> Option<WatchSlot> {
        let before = self.open_watches.fetch_add(1, Ordering::AcqRel);
        if before >= self.config.max_watches {
            self.open_watches.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(WatchSlot(self.clone()))
    }

    /// A receiver that turns true when the server begins shutting down.
    pub fn shutdown_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shutdown.clone()
    }
}

/// One open watch, counted until dropped.
pub(crate) struct WatchSlot(Arc<Api>);

impl Drop for WatchSlot {
    fn drop(&mut self) {
        self.0.open_watches.fetch_sub(1, Ordering::AcqRel);
    }
}

pub use apimachinery::KUBERNETES_VERSION;

/// The `/version` document.
pub fn version_info() -> Value {
    serde_json::json!({
        "major": "1",
        "minor": "33",
        "gitVersion": format!("{KUBERNETES_VERSION}+lite.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "n/a (rust)",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, match std::env::consts::ARCH { "x86_64" => "amd64", "aarch64" => "arm64", a => a }),
    })
}
