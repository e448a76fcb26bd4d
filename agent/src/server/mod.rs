//! The kubelet API: HTTPS on `--address:--port` (10250), what kube-apiserver (and ours)
//! calls for `kubectl logs`, `exec`, `attach`, `port-forward` and `cp`.
//!
//! Clients authenticate with a client certificate signed by the client CA, or a bearer token
//! the API server confirms with a TokenReview (where it serves them; apiserver-lite does not,
//! so there only certificates work). Anonymous requests get 401 unless `--anonymous-auth`.
//! Every authenticated client may use every endpoint (no SubjectAccessReview yet).
//!
//! Endpoints: `/healthz`; `/pods` (the pods bound here, a PodList); `/containerLogs/{ns}/
//! {pod}/{container}` (see [`logs`]); `/exec`, `/attach` (`/{ns}/{pod}/{container}`) and
//! `/portForward/{ns}/{pod}`, which ask the runtime for a streaming URL and hand the
//! client's upgrade request to it through [`upgrade_proxy::forward`]; `/run/{ns}/{pod}/
//! {container}?cmd=...` runs a command and answers with its output; `/stats/summary` and
//! `/metrics/resource` (see [`stats`]); `/metrics` (see [`crate::metrics`]).

pub mod logs;
pub mod stats;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_cri::v1 as cri;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use upgrade_proxy::Body;

use crate::pod::config::{CONTAINER_NAME_LABEL, POD_UID_LABEL, RESTART_COUNT_ANNOTATION};
use crate::runtime::{ContainerRuntime, RuntimeError};
use logs::{LogOptions, Output};

/// What the handlers need.
pub struct Kubelet {
    /// The API client (pods, TokenReviews).
    pub client: kube::Client,
    /// The container runtime.
    pub runtime: Arc<dyn ContainerRuntime>,
    /// This node's name.
    pub node_name: String,
    /// Where container logs are.
    pub pod_log_dir: PathBuf,
    /// Whether unauthenticated requests are served.
    pub anonymous_auth: bool,
    /// The node's own numbers for `/stats/summary`.
    pub host: Arc<dyn stats::HostStats>,
    /// Counts of the CRI calls, for `/metrics`.
    pub runtime_metrics: Arc<crate::metrics::RuntimeMetrics>,
}

impl std::fmt::Debug for Kubelet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubelet")
            .field("node_name", &self.node_name)
            .finish()
    }
}

/// A failed request: status and plain-text message, as kubelet answers.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct HttpError {
    status: StatusCode,
    message: String,
}

impl HttpError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        HttpError {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    fn internal(message: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message.to_string())
    }
}

impl From<RuntimeError> for HttpError {
    fn from(e: RuntimeError) -> Self {
        let status = match e.code() {
            Some(tonic::Code::NotFound) => StatusCode::NOT_FOUND,
            Some(tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition) => {
                StatusCode::BAD_REQUEST
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        HttpError::new(status, e.message())
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()).boxed_unsync());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// A Prometheus text answer.
fn prometheus(body: String) -> Response<Body> {
    let mut resp = text(StatusCode::OK, body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

fn json(body: Vec<u8>) -> Result<Response<Body>, HttpError> {
    let mut resp = text(StatusCode::OK, body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// Serves the kubelet API on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    kubelet: Arc<Kubelet>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "kubelet API: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let acceptor = acceptor.clone();
        let kubelet = kubelet.clone();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "kubelet API: TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            // rustls only lets through certificates that chain to the client CA.
            let certificate = tls
                .get_ref()
                .1
                .peer_certificates()
                .is_some_and(|c| !c.is_empty());
            let service = hyper::service::service_fn(move |req| {
                let kubelet = kubelet.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(kubelet.handle(req, certificate, peer).await)
                }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "kubelet API: connection ended with an error");
            }
        });
    }
}

fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn flag(pairs: &[(String, String)], names: &[&str]) -> bool {
    pairs
        .iter()
        .any(|(k, v)| names.contains(&k.as_str()) && matches!(v.as_str(), "1" | "true" | "True"))
}

fn values<'a>(pairs: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    pairs
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

impl Kubelet {
    async fn authenticated(&self, req: &Request<Incoming>, certificate: bool) -> bool {
        if certificate {
            return true;
        }
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        match token {
            Some(token) => self.review_token(token).await,
            None => self.anonymous_auth,
        }
    }

    /// Asks the API server whether `token` is valid (a TokenReview).
    async fn review_token(&self, token: &str) -> bool {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: None,
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        match api.create(&PostParams::default(), &review).await {
            Ok(answer) => answer.status.and_then(|s| s.authenticated).unwrap_or(false),
            Err(e) => {
                tracing::debug!(error = %e, "TokenReview failed; the token is refused");
                false
            }
        }
    }

    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        certificate: bool,
        peer: SocketAddr,
    ) -> Response<Body> {
        if !self.authenticated(&req, certificate).await {
            return text(StatusCode::UNAUTHORIZED, "Unauthorized");
        }
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let result = self.route(req).await;
        let resp = result.unwrap_or_else(|e| text(e.status, e.message));
        tracing::debug!(%peer, %method, %path, status = resp.status().as_u16(), "kubelet API request");
        resp
    }

    async fn route(self: &Arc<Self>, req: Request<Incoming>) -> Result<Response<Body>, HttpError> {
        let path = req.uri().path().to_string();
        let segments: Vec<String> = path
            .trim_matches('/')
            .split('/')
            .map(|s| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .collect();
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        let get = req.method() == Method::GET || req.method() == Method::HEAD;
        match segments.as_slice() {
            ["healthz"] if get => Ok(text(StatusCode::OK, "ok")),
            ["pods"] if get => self.pods().await,
            ["stats", "summary"] if get => {
                let summary = stats::summary(&self.summary_input().await?);
                json(serde_json::to_vec(&summary).map_err(HttpError::internal)?)
            }
            ["metrics"] if get => Ok(prometheus(crate::metrics::render(
                &self.metrics_input().await?,
            ))),
            ["metrics", "resource"] if get => {
                let summary = stats::summary(&self.summary_input().await?);
                Ok(prometheus(stats::resource_metrics(&summary)))
            }
            ["containerLogs", ns, pod, container] if get => {
                let query = query_pairs(req.uri().query());
                self.container_logs(ns, pod, container, &query).await
            }
            ["exec", ns, pod, container] => {
                let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
                self.exec(req, &ns, &pod, &container).await
            }
            ["attach", ns, pod, container] => {
                let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
                self.attach(req, &ns, &pod, &container).await
            }
            ["portForward", ns, pod] => {
                let (ns, pod) = (ns.to_string(), pod.to_string());
                self.port_forward(req, &ns, &pod).await
            }
            ["run", ns, pod, container] if req.method() == Method::POST => {
                let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
                self.run(req, &ns, &pod, &container).await
            }
            _ => Err(HttpError::not_found("404 page not found")),
        }
    }

    async fn pods(&self) -> Result<Response<Body>, HttpError> {
        let api: Api<Pod> = Api::all(self.client.clone());
        let list = api
            .list(&ListParams::default().fields(&format!("spec.nodeName={}", self.node_name)))
            .await
            .map_err(HttpError::internal)?;
        let body = serde_json::json!({
            "kind": "PodList",
            "apiVersion": "v1",
            "metadata": {},
            "items": list.items,
        });
        json(serde_json::to_vec(&body).map_err(HttpError::internal)?)
    }

    /// What `/metrics` shows: pods and containers from the runtime, its call counts and the
    /// process's numbers.
    async fn metrics_input(&self) -> Result<crate::metrics::MetricsInput, HttpError> {
        let running_pods = self
            .runtime
            .list_sandboxes()
            .await?
            .iter()
            .filter(|s| s.state == cri::PodSandboxState::SandboxReady as i32)
            .count() as u64;
        let mut containers_by_state = std::collections::BTreeMap::new();
        for container in self.runtime.list_containers().await? {
            let state = match cri::ContainerState::try_from(container.state) {
                Ok(cri::ContainerState::ContainerRunning) => "running",
                Ok(cri::ContainerState::ContainerExited) => "exited",
                Ok(cri::ContainerState::ContainerCreated) => "created",
                _ => "unknown",
            };
            *containers_by_state.entry(state.to_string()).or_insert(0) += 1;
        }
        Ok(crate::metrics::MetricsInput {
            node_name: self.node_name.clone(),
            running_pods,
            containers_by_state,
            operations: self.runtime_metrics.snapshot(),
            process: crate::metrics::process_numbers(),
        })
    }

    /// What `/stats/summary` is made of: the runtime's pod and image filesystem stats, start
    /// times, log sizes and the host's numbers.
    async fn summary_input(&self) -> Result<stats::SummaryInput, HttpError> {
        let pods = self.runtime.list_pod_sandbox_stats().await?;
        let sandbox_created = self
            .runtime
            .list_sandboxes()
            .await?
            .into_iter()
            .map(|s| (s.id, s.created_at))
            .collect();
        let container_created = self
            .runtime
            .list_containers()
            .await?
            .into_iter()
            .map(|c| (c.id, c.created_at))
            .collect();
        // A runtime without ImageFsInfo still gets a summary, without imageFs.
        let image_fs = self.runtime.image_fs_info().await.unwrap_or_default();
        let host = self.host.clone();
        let pod_log_dir = self.pod_log_dir.clone();
        let node_name = self.node_name.clone();
        tokio::task::spawn_blocking(move || {
            let image_fs = image_fs.first().and_then(|usage| {
                let mountpoint = usage.fs_id.as_ref()?.mountpoint.clone();
                let numbers = host.fs(std::path::Path::new(&mountpoint))?;
                Some(stats::FsNumbers {
                    used: usage.used_bytes.as_ref().map_or(numbers.used, |v| v.value),
                    ..numbers
                })
            });
            let log_fs = host.fs(&pod_log_dir);
            let mut container_logs = std::collections::HashMap::new();
            for pod in &pods {
                let Some(meta) = pod.attributes.as_ref().and_then(|a| a.metadata.as_ref()) else {
                    continue;
                };
                let pod_dir =
                    pod_log_dir.join(format!("{}_{}_{}", meta.namespace, meta.name, meta.uid));
                for container in pod.linux.iter().flat_map(|l| &l.containers) {
                    let Some(attrs) = &container.attributes else {
                        continue;
                    };
                    let Some(name) = attrs.metadata.as_ref().map(|m| &m.name) else {
                        continue;
                    };
                    if let Some(fs) = log_fs {
                        let used = host.du(&pod_dir.join(name));
                        container_logs.insert(attrs.id.clone(), stats::FsNumbers { used, ..fs });
                    }
                }
            }
            stats::SummaryInput {
                node_name,
                node: host.sample(),
                image_fs,
                pods,
                sandbox_created,
                container_created,
                container_logs,
            }
        })
        .await
        .map_err(HttpError::internal)
    }

    /// The pod `ns/name` bound to this node, with its uid.
    async fn pod(&self, ns: &str, name: &str) -> Result<(Pod, String), HttpError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let pod = api
            .get_opt(name)
            .await
            .map_err(HttpError::internal)?
            .filter(|p| {
                p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&self.node_name)
            })
            .ok_or_else(|| HttpError::not_found(format!("pod \"{name}\" not found")))?;
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        Ok((pod, uid))
    }

    /// The runtime's containers named `container` of the pod `uid`.
    async fn containers(
        &self,
        uid: &str,
        container: &str,
    ) -> Result<Vec<cri::Container>, HttpError> {
        Ok(self
            .runtime
            .list_containers()
            .await?
            .into_iter()
            .filter(|c| {
                c.labels.get(POD_UID_LABEL).map(String::as_str) == Some(uid)
                    && c.labels.get(CONTAINER_NAME_LABEL).map(String::as_str) == Some(container)
            })
            .collect())
    }

    async fn running_container(
        &self,
        ns: &str,
        pod: &str,
        container: &str,
    ) -> Result<String, HttpError> {
        let (_, uid) = self.pod(ns, pod).await?;
        self.containers(&uid, container)
            .await?
            .into_iter()
            .find(|c| c.state == cri::ContainerState::ContainerRunning as i32)
            .map(|c| c.id)
            .ok_or_else(|| HttpError::not_found(format!("container not found (\"{container}\")")))
    }

    async fn container_logs(
        self: &Arc<Self>,
        ns: &str,
        pod_name: &str,
        container: &str,
        query: &[(String, String)],
    ) -> Result<Response<Body>, HttpError> {
        let options = LogOptions::from_query(query, jiff::Timestamp::now())
            .map_err(|e| HttpError::bad_request(e.to_string()))?;
        let (pod, uid) = self.pod(ns, pod_name).await?;
        let known = pod.spec.as_ref().is_some_and(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
                .any(|c| c.name == container)
        });
        if !known {
            return Err(HttpError::bad_request(format!(
                "container {container} is not valid for pod {pod_name}"
            )));
        }
        let dir = self
            .pod_log_dir
            .join(format!("{ns}_{pod_name}_{uid}"))
            .join(container);
        let restarts = logs::restarts(&dir).unwrap_or_default();
        let chosen = if options.previous {
            restarts.iter().rev().nth(1).copied().ok_or_else(|| {
                HttpError::bad_request(format!(
                    "previous terminated container \"{container}\" in pod \"{pod_name}\" not found"
                ))
            })?
        } else {
            restarts.last().copied().ok_or_else(|| {
                HttpError::bad_request(format!(
                    "container \"{container}\" in pod \"{pod_name}\" is waiting to start: ContainerCreating"
                ))
            })?
        };
        let read_dir = dir.clone();
        let (lines, position) =
            tokio::task::spawn_blocking(move || logs::read_lines(&read_dir, chosen))
                .await
                .map_err(HttpError::internal)?
                .map_err(HttpError::internal)?;
        let mut output = Output::new(&options);
        let first = logs::select(lines, &options, &mut output);
        if !options.follow || options.previous || output.done() {
            return Ok(text(StatusCode::OK, first));
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
        let kubelet = self.clone();
        let container = container.to_string();
        tokio::spawn(async move {
            if !first.is_empty() && tx.send(Bytes::from(first)).await.is_err() {
                return;
            }
            // A client that went away ends the follow at the next poll, not at the next line.
            let running = || {
                let kubelet = kubelet.clone();
                let (uid, container) = (uid.clone(), container.clone());
                let gone = tx.is_closed();
                async move { !gone && kubelet.restart_running(&uid, &container, chosen).await }
            };
            let sink = |chunk: Vec<u8>| {
                let tx = tx.clone();
                async move { tx.send(Bytes::from(chunk)).await.is_ok() }
            };
            if let Err(e) = logs::follow(position, output, running, sink).await {
                tracing::warn!(error = %e, "following a container log failed");
            }
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|chunk| (Ok::<_, std::convert::Infallible>(Frame::data(chunk)), rx))
        });
        let mut resp = Response::new(StreamBody::new(stream).boxed_unsync());
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        Ok(resp)
    }

    /// Whether restart `n` of the container runs (a failed runtime call counts as running, so
    /// a runtime hiccup does not cut a follow short).
    async fn restart_running(&self, uid: &str, container: &str, n: u32) -> bool {
        let Ok(containers) = self.containers(uid, container).await else {
            return true;
        };
        containers.iter().any(|c| {
            c.state == cri::ContainerState::ContainerRunning as i32
                && c.annotations
                    .get(RESTART_COUNT_ANNOTATION)
                    .and_then(|v| v.parse::<u32>().ok())
                    == Some(n)
        })
    }

    async fn exec(
        &self,
        req: Request<Incoming>,
        ns: &str,
        pod: &str,
        container: &str,
    ) -> Result<Response<Body>, HttpError> {
        let query = query_pairs(req.uri().query());
        let cmd: Vec<String> = values(&query, "command")
            .into_iter()
            .map(String::from)
            .collect();
        let container_id = self.running_container(ns, pod, container).await?;
        let io = Stdio::of(&query);
        let url = self
            .runtime
            .exec(cri::ExecRequest {
                container_id,
                cmd,
                tty: io.tty,
                stdin: io.stdin,
                stdout: io.stdout,
                stderr: io.stderr,
            })
            .await?;
        proxy_to(req, &url).await
    }

    async fn attach(
        &self,
        req: Request<Incoming>,
        ns: &str,
        pod: &str,
        container: &str,
    ) -> Result<Response<Body>, HttpError> {
        let query = query_pairs(req.uri().query());
        let container_id = self.running_container(ns, pod, container).await?;
        let io = Stdio::of(&query);
        let url = self
            .runtime
            .attach(cri::AttachRequest {
                container_id,
                tty: io.tty,
                stdin: io.stdin,
                stdout: io.stdout,
                stderr: io.stderr,
            })
            .await?;
        proxy_to(req, &url).await
    }

    async fn port_forward(
        &self,
        req: Request<Incoming>,
        ns: &str,
        pod: &str,
    ) -> Result<Response<Body>, HttpError> {
        let query = query_pairs(req.uri().query());
        let mut ports = Vec::new();
        for value in values(&query, "port")
            .into_iter()
            .chain(values(&query, "ports"))
        {
            for p in value.split(',').filter(|p| !p.is_empty()) {
                let port: i32 = p
                    .trim()
                    .parse()
                    .map_err(|_| HttpError::bad_request(format!("invalid port {p:?}")))?;
                ports.push(port);
            }
        }
        let (_, uid) = self.pod(ns, pod).await?;
        let sandbox = self
            .runtime
            .list_sandboxes()
            .await?
            .into_iter()
            .find(|s| {
                s.labels.get(POD_UID_LABEL).map(String::as_str) == Some(uid.as_str())
                    && s.state == cri::PodSandboxState::SandboxReady as i32
            })
            .ok_or_else(|| HttpError::not_found(format!("pod \"{pod}\" has no running sandbox")))?;
        let url = self
            .runtime
            .port_forward(cri::PortForwardRequest {
                pod_sandbox_id: sandbox.id,
                port: ports,
            })
            .await?;
        proxy_to(req, &url).await
    }

    async fn run(
        &self,
        req: Request<Incoming>,
        ns: &str,
        pod: &str,
        container: &str,
    ) -> Result<Response<Body>, HttpError> {
        let mut query = query_pairs(req.uri().query());
        let form = req
            .into_body()
            .collect()
            .await
            .map_err(|e| HttpError::bad_request(format!("reading the request body: {e}")))?
            .to_bytes();
        query.extend(query_pairs(std::str::from_utf8(&form).ok()));
        let cmd: Vec<String> = values(&query, "cmd")
            .iter()
            .flat_map(|c| c.split_whitespace())
            .map(String::from)
            .collect();
        if cmd.is_empty() {
            return Err(HttpError::bad_request("missing cmd"));
        }
        let container_id = self.running_container(ns, pod, container).await?;
        let answer = self
            .runtime
            .exec_sync(&container_id, &cmd, Duration::from_secs(60))
            .await?;
        let mut out = answer.stdout;
        out.extend_from_slice(&answer.stderr);
        Ok(text(StatusCode::OK, out))
    }
}

/// Hands `req` to the runtime's streaming `url` (`http://host:port/path`), keeping the
/// client's query when the URL has none.
async fn proxy_to(req: Request<Incoming>, url: &str) -> Result<Response<Body>, HttpError> {
    let parsed = url::Url::parse(url)
        .map_err(|e| HttpError::internal(format!("runtime streaming URL {url:?}: {e}")))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| HttpError::internal(format!("runtime streaming URL {url:?} has no host")))?
        .to_string();
    let port = parsed.port_or_known_default().unwrap_or(80);
    let mut path_and_query = parsed.path().to_string();
    match (parsed.query(), req.uri().query()) {
        (Some(q), _) | (None, Some(q)) => {
            path_and_query.push('?');
            path_and_query.push_str(q);
        }
        (None, None) => {}
    }
    let authority = format!("{host}:{port}");
    let ip_or_name = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = tokio::net::TcpStream::connect((ip_or_name, port))
        .await
        .map_err(|e| {
            HttpError::internal(format!("connecting to the runtime at {authority}: {e}"))
        })?;
    upgrade_proxy::forward(req, &path_and_query, &authority, tcp)
        .await
        .map_err(HttpError::internal)
}
/// The streams an exec or attach asks for, from either spelling of the query (the
/// apiserver's `input/output/error` or the CRI's `stdin/stdout/stderr`); a terminal merges
/// stderr into stdout.
struct Stdio {
    tty: bool,
    stdin: bool,
    stdout: bool,
    stderr: bool,
}

impl Stdio {
    fn of(query: &[(String, String)]) -> Self {
        let tty = flag(query, &["tty"]);
        Stdio {
            tty,
            stdin: flag(query, &["input", "stdin"]),
            stdout: flag(query, &["output", "stdout"]),
            stderr: !tty && flag(query, &["error", "stderr"]),
        }
    }
}
