//! The pod subresources served by the node: `pods/log`, `pods/exec`, `pods/attach` and
//! `pods/portforward`, and `nodes/proxy` (any kubelet path, e.g. `/stats/summary`),
//! proxied to the kubelet API of the pod's node
//! (`https://<InternalIP>:<daemonEndpoints.kubeletEndpoint.Port>`) with a client certificate
//! this server issues itself from the cluster CA (`kube-apiserver-kubelet-client`, group
//! `system:masters`). As upstream, the kubelet's serving certificate is only verified when a
//! CA for it is configured (`--kubelet-certificate-authority`).
//!
//! The request is checked here first (pod, container, node, address) so the errors are
//! Status objects worded as upstream; then [`upgrade_proxy::forward`] carries the log stream
//! or the upgraded SPDY/WebSocket connection. A kubelet's plain-text error becomes a Status
//! with its code.

use std::path::Path;
use std::sync::Arc;

use apimachinery::resources;
use apimachinery::status::ApiError;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::Value;

use crate::api::{Api, Body, error_response};
use crate::pki::Pki;

/// Why the proxy could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NodeProxyError {
    /// Issuing the client certificate failed.
    #[error("kubelet client certificate: {0}")]
    Pki(#[from] crate::pki::PkiError),
    /// A PEM file or text is unusable.
    #[error("{what}: {why}")]
    Pem {
        /// Which material.
        what: String,
        /// What is wrong.
        why: String,
    },
    /// rustls refused the configuration.
    #[error("kubelet client TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// The subresources proxied to the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// pods/log.
    Log,
    /// pods/exec.
    Exec,
    /// pods/attach.
    Attach,
    /// pods/portforward.
    PortForward,
}

/// A request for one of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The namespace.
    pub namespace: String,
    /// The pod.
    pub pod: String,
    /// Which subresource.
    pub kind: Kind,
}

/// Recognises `/api/v1/namespaces/{ns}/pods/{name}/{log,exec,attach,portforward}`.
pub fn target(method: &Method, path: &str) -> Option<Target> {
    let rest = path.strip_prefix("/api/v1/namespaces/")?;
    let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let [namespace, "pods", pod, sub] = parts.as_slice() else {
        return None;
    };
    let kind = match (*sub, method.as_str()) {
        ("log", "GET" | "HEAD") => Kind::Log,
        ("exec", "GET" | "POST") => Kind::Exec,
        ("attach", "GET" | "POST") => Kind::Attach,
        ("portforward", "GET" | "POST") => Kind::PortForward,
        _ => return None,
    };
    Some(Target {
        namespace: namespace.to_string(),
        pod: pod.to_string(),
        kind,
    })
}

/// A `nodes/proxy` request: `/api/v1/nodes/{name}/proxy/{path}` goes to the kubelet's
/// `/{path}` with the query, any method, and the kubelet's answer comes back as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTarget {
    /// The node.
    pub node: String,
    /// The kubelet path, starting with `/`.
    pub path: String,
}

/// The `nodes/proxy` request `path` names, if it is one.
pub fn node_target(path: &str) -> Option<NodeTarget> {
    let rest = path.strip_prefix("/api/v1/nodes/")?;
    let (node, rest) = rest.split_once('/')?;
    let kubelet_path = rest.strip_prefix("proxy")?;
    if !(kubelet_path.is_empty() || kubelet_path.starts_with('/')) || node.is_empty() {
        return None;
    }
    Some(NodeTarget {
        node: node.to_string(),
        path: if kubelet_path.is_empty() {
            "/".to_string()
        } else {
            kubelet_path.to_string()
        },
    })
}

/// Accepts any kubelet serving certificate (no `--kubelet-certificate-authority`), checking
/// only the handshake signatures.
#[derive(Debug)]
struct AnyServerCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The proxy: TLS client settings for kubelets.
#[derive(Clone)]
pub struct NodeProxy {
    tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for NodeProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeProxy").finish()
    }
}

fn pem_error(what: &str) -> impl Fn(std::io::Error) -> NodeProxyError + '_ {
    move |e| NodeProxyError::Pem {
        what: what.to_string(),
        why: e.to_string(),
    }
}

impl NodeProxy {
    /// Issues this server's kubelet client certificate from the cluster CA; the kubelet's
    /// certificate is verified against `kubelet_ca` (a PEM file) when given.
    pub fn new(pki: &Pki, kubelet_ca: Option<&Path>) -> Result<Self, NodeProxyError> {
        let (cert_pem, key_pem) =
            pki.issue_client("kube-apiserver-kubelet-client", &["system:masters"])?;
        let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(pem_error("kubelet client certificate"))?;
        let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .map_err(pem_error("kubelet client key"))?
            .ok_or_else(|| NodeProxyError::Pem {
                what: "kubelet client key".into(),
                why: "no key in PEM".into(),
            })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = match kubelet_ca {
            Some(path) => {
                let what = path.display().to_string();
                let pem = std::fs::read(path).map_err(pem_error(&what))?;
                let mut roots = rustls::RootCertStore::empty();
                for ca in rustls_pemfile::certs(&mut &pem[..]) {
                    roots.add(ca.map_err(pem_error(&what))?)?;
                }
                builder.with_root_certificates(roots)
            }
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider))),
        };
        let mut tls = builder.with_client_auth_cert(certs, key)?;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(NodeProxy { tls: Arc::new(tls) })
    }

    /// Serves one proxied subresource request.
    pub async fn handle(
        &self,
        api: &Api,
        req: Request<Incoming>,
        target: Target,
    ) -> Response<Body> {
        match self.proxy(api, req, &target).await {
            Ok(resp) => resp,
            Err(e) => error_response(&e),
        }
    }

    async fn proxy(
        &self,
        api: &Api,
        req: Request<Incoming>,
        target: &Target,
    ) -> Result<Response<Body>, ApiError> {
        let pod = load(api, "pods", Some(&target.namespace), &target.pod)
            .await?
            .ok_or_else(|| ApiError::not_found("pods", &target.pod))?;
        let query: Vec<(String, String)> =
            url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
        let container = match target.kind {
            Kind::PortForward => None,
            _ => Some(container_of(&pod, &target.pod, &query)?),
        };
        let node_name = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                ApiError::bad_request(format!("pod {} does not have a host assigned", target.pod))
            })?;
        let path = kubelet_path(target, container.as_deref(), &query);
        let resp = self.forward(api, req, node_name, &path, false).await?;
        if resp.status().is_client_error() || resp.status().is_server_error() {
            return Err(kubelet_error(resp).await);
        }
        Ok(resp)
    }

    /// Serves one `nodes/proxy` request: the kubelet's answer, whatever its status.
    pub async fn handle_node(
        &self,
        api: &Api,
        req: Request<Incoming>,
        target: NodeTarget,
    ) -> Response<Body> {
        let mut path = target.path.clone();
        if let Some(query) = req.uri().query() {
            path.push('?');
            path.push_str(query);
        }
        match self.forward(api, req, &target.node, &path, true).await {
            Ok(resp) => resp,
            Err(e) => error_response(&e),
        }
    }

    /// Sends `req` to `path` on the kubelet of `node_name`.
    async fn forward(
        &self,
        api: &Api,
        req: Request<Incoming>,
        node_name: &str,
        path: &str,
        node_must_exist: bool,
    ) -> Result<Response<Body>, ApiError> {
        let node = load(api, "nodes", None, node_name).await?.ok_or_else(|| {
            if node_must_exist {
                ApiError::not_found("nodes", node_name)
            } else {
                ApiError::bad_request(format!("node \"{node_name}\" not found"))
            }
        })?;
        let (address, port) = kubelet_endpoint(&node).ok_or_else(|| {
            ApiError::bad_request(format!("node {node_name} has no InternalIP address"))
        })?;
        let server_name = ServerName::try_from(address.clone()).map_err(|_| {
            ApiError::bad_request(format!(
                "node {node_name} has an invalid address {address:?}"
            ))
        })?;
        let unreachable = |e: std::io::Error| {
            ApiError::internal(format!(
                "error dialing backend: dial tcp {address}:{port}: {e}"
            ))
        };
        let host = if address.contains(':') {
            format!("[{address}]:{port}")
        } else {
            format!("{address}:{port}")
        };
        let tcp = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            tokio::net::TcpStream::connect((address.as_str(), port)),
        )
        .await
        .map_err(|_| unreachable(std::io::Error::from(std::io::ErrorKind::TimedOut)))?
        .map_err(unreachable)?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(server_name, tcp)
            .await
            .map_err(unreachable)?;
        upgrade_proxy::forward(req, path, &host, tls)
            .await
            .map_err(|e| ApiError::internal(e.to_string()))
    }
}

/// A kubelet's error answer as a Status with its code.
async fn kubelet_error(resp: Response<Body>) -> ApiError {
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_else(|_| Bytes::new());
    let text = String::from_utf8_lossy(&body).trim().to_string();
    match status {
        StatusCode::BAD_REQUEST => ApiError::bad_request(text),
        StatusCode::NOT_FOUND | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            ApiError::bad_request(format!("{text} (kubelet answered {status})"))
        }
        _ => ApiError::internal(text),
    }
}

async fn load(
    api: &Api,
    plural: &str,
    namespace: Option<&str>,
    name: &str,
) -> Result<Option<Value>, ApiError> {
    let Some(info) = resources::find("", "v1", plural) else {
        return Err(ApiError::internal(format!(
            "resource {plural} is not served"
        )));
    };
    let key = info.storage_key(namespace, name);
    let kv = api
        .store
        .get(&key)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    kv.map(|kv| serde_json::from_slice(&kv.value))
        .transpose()
        .map_err(|e| ApiError::internal(format!("decoding {key}: {e}")))
}

/// The container the request names, or the pod's only one; upstream's errors otherwise.
pub fn container_of(
    pod: &Value,
    pod_name: &str,
    query: &[(String, String)],
) -> Result<String, ApiError> {
    let names = |field: &str| -> Vec<String> {
        pod.pointer(&format!("/spec/{field}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("name").and_then(Value::as_str).map(String::from))
            .collect()
    };
    let containers = names("containers");
    let init = names("initContainers");
    let ephemeral = names("ephemeralContainers");
    let requested = query
        .iter()
        .find(|(k, _)| k == "container")
        .map(|(_, v)| v.clone())
        .filter(|v| !v.is_empty());
    match requested {
        Some(name) => {
            if containers.contains(&name) || init.contains(&name) || ephemeral.contains(&name) {
                Ok(name)
            } else {
                Err(ApiError::bad_request(format!(
                    "container {name} is not valid for pod {pod_name}"
                )))
            }
        }
        None if containers.len() == 1 => Ok(containers[0].clone()),
        None => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {pod_name}, choose one of: [{}]",
            containers.join(" ")
        ))),
    }
}

/// The node's InternalIP and kubelet port (10250 when not reported).
pub fn kubelet_endpoint(node: &Value) -> Option<(String, u16)> {
    let address = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)?
        .iter()
        .find(|a| a.get("type").and_then(Value::as_str) == Some("InternalIP"))?
        .get("address")
        .and_then(Value::as_str)?
        .to_string();
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .unwrap_or(10250);
    Some((address, port))
}

/// The kubelet path and query for a request: the pod API's parameters renamed to the
/// kubelet's (stdin → input, stdout → output, stderr → error, ports → port).
pub fn kubelet_path(
    target: &Target,
    container: Option<&str>,
    query: &[(String, String)],
) -> String {
    let esc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let (ns, pod) = (esc(&target.namespace), esc(&target.pod));
    let c = esc(container.unwrap_or_default());
    let path = match target.kind {
        Kind::Log => format!("/containerLogs/{ns}/{pod}/{c}"),
        Kind::Exec => format!("/exec/{ns}/{pod}/{c}"),
        Kind::Attach => format!("/attach/{ns}/{pod}/{c}"),
        Kind::PortForward => format!("/portForward/{ns}/{pod}"),
    };
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in query {
        let key = match (target.kind, k.as_str()) {
            (_, "container") => continue,
            (Kind::Exec | Kind::Attach, "stdin") => "input",
            (Kind::Exec | Kind::Attach, "stdout") => "output",
            (Kind::Exec | Kind::Attach, "stderr") => "error",
            (Kind::PortForward, "ports") => "port",
            (_, other) => other,
        };
        out.append_pair(key, v);
    }
    let q = out.finish();
    if q.is_empty() {
        path
    } else {
        format!("{path}?{q}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_proxy_paths_name_the_node_and_the_kubelet_path() {
        let t = |path: &str| node_target(path).map(|t| (t.node, t.path));
        assert_eq!(
            t("/api/v1/nodes/n1/proxy/stats/summary"),
            Some(("n1".into(), "/stats/summary".into()))
        );
        assert_eq!(t("/api/v1/nodes/n1/proxy"), Some(("n1".into(), "/".into())));
        assert_eq!(
            t("/api/v1/nodes/n1/proxy/"),
            Some(("n1".into(), "/".into()))
        );
        assert_eq!(t("/api/v1/nodes/n1/proxyish"), None);
        assert_eq!(t("/api/v1/nodes/n1/status"), None);
        assert_eq!(t("/api/v1/nodes/n1"), None);
        assert_eq!(t("/api/v1/namespaces/x/pods/p/proxy"), None);
    }

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn only_the_node_subresources_are_recognised() {
        let t = target(&Method::POST, "/api/v1/namespaces/default/pods/web/exec").unwrap();
        assert_eq!(t.kind, Kind::Exec);
        assert_eq!((t.namespace.as_str(), t.pod.as_str()), ("default", "web"));
        assert_eq!(
            target(&Method::GET, "/api/v1/namespaces/a/pods/b/log").map(|t| t.kind),
            Some(Kind::Log)
        );
        assert!(target(&Method::POST, "/api/v1/namespaces/a/pods/b/log").is_none());
        assert!(target(&Method::GET, "/api/v1/namespaces/a/pods/b/status").is_none());
        assert!(target(&Method::GET, "/api/v1/namespaces/a/pods/b").is_none());
    }

    #[test]
    fn containers_are_checked_with_upstream_wording() {
        let pod = serde_json::json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]}});
        assert_eq!(
            container_of(&pod, "p", &q(&[("container", "i")])).unwrap(),
            "i"
        );
        let err = container_of(&pod, "p", &q(&[("container", "x")])).unwrap_err();
        assert_eq!(err.message, "container x is not valid for pod p");
        let err = container_of(&pod, "p", &[]).unwrap_err();
        assert_eq!(
            err.message,
            "a container name must be specified for pod p, choose one of: [a b]"
        );
        let one = serde_json::json!({"spec": {"containers": [{"name": "only"}]}});
        assert_eq!(container_of(&one, "p", &[]).unwrap(), "only");
    }

    #[test]
    fn the_kubelet_gets_its_own_parameter_names() {
        let exec = Target {
            namespace: "ns".into(),
            pod: "p".into(),
            kind: Kind::Exec,
        };
        let query = q(&[
            ("command", "sh"),
            ("command", "-c"),
            ("command", "echo hi"),
            ("container", "c"),
            ("stdin", "true"),
            ("stdout", "true"),
        ]);
        assert_eq!(
            kubelet_path(&exec, Some("c"), &query),
            "/exec/ns/p/c?command=sh&command=-c&command=echo+hi&input=true&output=true"
        );
        let pf = Target {
            kind: Kind::PortForward,
            ..exec
        };
        assert_eq!(
            kubelet_path(&pf, None, &q(&[("ports", "80")])),
            "/portForward/ns/p?port=80"
        );
    }

    #[test]
    fn the_endpoint_is_the_internal_ip_and_the_advertised_port() {
        let node = serde_json::json!({"status": {
            "addresses": [{"type": "Hostname", "address": "n"}, {"type": "InternalIP", "address": "10.0.0.2"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 12345}}}});
        assert_eq!(kubelet_endpoint(&node), Some(("10.0.0.2".into(), 12345)));
        let bare = serde_json::json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.2"}]}});
        assert_eq!(kubelet_endpoint(&bare), Some(("10.0.0.2".into(), 10250)));
        assert_eq!(kubelet_endpoint(&serde_json::json!({})), None);
    }
}
