//! The health check node ports of Services with externalTrafficPolicy Local, as kube-proxy's
//! service health server: on `spec.healthCheckNodePort` (all addresses) every GET is answered
//! with `{"service":{"namespace","name"},"localEndpoints":N,"serviceProxyHealthy":bool}`,
//! 200 when this node has ready local endpoints and the proxy is healthy, 503 otherwise, so
//! a cloud load balancer sends traffic only to nodes that can serve it locally.
//!
//! [`wanted`] (pure) says which ports serve which Service with how many local endpoints;
//! [`HealthServers`] opens and closes the listeners as that changes.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::model::SERVICE_NAME_LABEL;

/// What one health check port reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceHealth {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// Ready endpoints on this node.
    pub local_endpoints: usize,
}

/// The health check ports this node serves: Services with externalTrafficPolicy Local and a
/// `spec.healthCheckNodePort`, each with its count of ready endpoints on `node` (distinct
/// addresses over all its slices).
pub fn wanted(
    services: &[impl Borrow<Service>],
    slices: &[impl Borrow<EndpointSlice>],
    node: &str,
) -> BTreeMap<u16, ServiceHealth> {
    let mut out = BTreeMap::new();
    for svc in services {
        let svc: &Service = svc.borrow();
        let Some(spec) = &svc.spec else { continue };
        if spec.external_traffic_policy.as_deref() != Some("Local") {
            continue;
        }
        let Some(port) = spec
            .health_check_node_port
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
        else {
            continue;
        };
        let namespace = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let local: BTreeSet<&String> = slices
            .iter()
            .map(|s| -> &EndpointSlice { s.borrow() })
            .filter(|s| {
                s.metadata.namespace.as_deref() == Some(namespace.as_str())
                    && s.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(SERVICE_NAME_LABEL))
                        == Some(&name)
                    && s.address_type == "IPv4"
            })
            .flat_map(|s| &s.endpoints)
            .filter(|e| e.node_name.as_deref() == Some(node))
            // As upstream, an endpoint without a ready condition counts as ready.
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
            .filter_map(|e| e.addresses.first())
            .collect();
        out.insert(
            port,
            ServiceHealth {
                namespace,
                name,
                local_endpoints: local.len(),
            },
        );
    }
    out
}

/// The answer for a Service: status and JSON body.
pub fn respond(health: &ServiceHealth, proxy_healthy: bool) -> (StatusCode, String) {
    let body = serde_json::json!({
        "service": {"namespace": health.namespace, "name": health.name},
        "localEndpoints": health.local_endpoints,
        "serviceProxyHealthy": proxy_healthy,
    })
    .to_string();
    let code = if health.local_endpoints > 0 && proxy_healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body)
}

type Current = Arc<Mutex<ServiceHealth>>;

/// The listeners, one per health check port.
pub struct HealthServers {
    servers: BTreeMap<u16, (Current, JoinHandle<()>)>,
    proxy_healthy: Arc<dyn Fn() -> bool + Send + Sync>,
    address: Ipv4Addr,
}

impl HealthServers {
    /// Serves on `address` (kube-proxy: every address) and asks `proxy_healthy` for
    /// `serviceProxyHealthy`.
    pub fn new(address: Ipv4Addr, proxy_healthy: Arc<dyn Fn() -> bool + Send + Sync>) -> Self {
        HealthServers {
            servers: BTreeMap::new(),
            proxy_healthy,
            address,
        }
    }

    /// The ports served now.
    pub fn ports(&self) -> Vec<u16> {
        self.servers.keys().copied().collect()
    }

    /// Serves exactly `wanted`: new ports are bound, gone ones closed, counts updated. A
    /// port that cannot be bound is logged and tried again on the next call.
    pub async fn sync(&mut self, wanted: BTreeMap<u16, ServiceHealth>) {
        let gone: Vec<u16> = self
            .servers
            .keys()
            .filter(|p| !wanted.contains_key(p))
            .copied()
            .collect();
        for port in gone {
            if let Some((_, task)) = self.servers.remove(&port) {
                task.abort();
                tracing::info!(port, "health check node port closed");
            }
        }
        for (port, health) in wanted {
            if let Some((current, _)) = self.servers.get(&port) {
                if let Ok(mut c) = current.lock() {
                    *c = health;
                }
                continue;
            }
            let listener = match TcpListener::bind(SocketAddr::from((self.address, port))).await {
                Ok(l) => l,
                Err(error) => {
                    tracing::error!(port, %error, service = %format!("{}/{}", health.namespace, health.name), "binding the health check node port failed");
                    continue;
                }
            };
            tracing::info!(port, service = %format!("{}/{}", health.namespace, health.name), "health check node port open");
            let current = Arc::new(Mutex::new(health));
            let task = tokio::spawn(serve(listener, current.clone(), self.proxy_healthy.clone()));
            self.servers.insert(port, (current, task));
        }
    }
}

impl Drop for HealthServers {
    fn drop(&mut self) {
        for (_, task) in self.servers.values() {
            task.abort();
        }
    }
}

async fn serve(
    listener: TcpListener,
    current: Current,
    proxy_healthy: Arc<dyn Fn() -> bool + Send + Sync>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(error) => {
                tracing::warn!(%error, "health check accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let current = current.clone();
        let proxy_healthy = proxy_healthy.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_req| {
                let answer = current
                    .lock()
                    .map(|h| respond(&h, proxy_healthy()))
                    .unwrap_or_else(|_| (StatusCode::INTERNAL_SERVER_ERROR, String::new()));
                let (code, body) = answer;
                let mut resp = Response::new(Full::new(Bytes::from(body)));
                *resp.status_mut() = code;
                let headers = resp.headers_mut();
                headers.insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static("application/json"),
                );
                headers.insert(
                    hyper::header::X_CONTENT_TYPE_OPTIONS,
                    hyper::header::HeaderValue::from_static("nosniff"),
                );
                async move { Ok::<_, Infallible>(resp) }
            });
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "health check connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, policy: &str, hc: Option<i32>) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": policy,
                     "healthCheckNodePort": hc, "ports": [{"port": 80}]},
        }))
        .unwrap()
    }

    fn slice(svc: &str, name: &str, eps: &[(&str, Option<bool>, &str)]) -> EndpointSlice {
        let endpoints: Vec<_> = eps
            .iter()
            .map(|(ip, ready, node)| {
                serde_json::json!({"addresses": [ip], "conditions": {"ready": ready}, "nodeName": node})
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ns", "labels": {SERVICE_NAME_LABEL: svc}},
            "addressType": "IPv4", "endpoints": endpoints,
        }))
        .unwrap()
    }

    #[test]
    fn local_services_report_their_ready_endpoints_on_this_node() {
        let services = [
            service("local", "Local", Some(31000)),
            service("cluster", "Cluster", Some(31001)),
            service("unallocated", "Local", None),
            service("empty", "Local", Some(31002)),
        ];
        let slices = [
            slice(
                "local",
                "a",
                &[
                    ("10.0.0.1", Some(true), "me"),
                    ("10.0.0.2", None, "me"),
                    ("10.0.0.3", Some(false), "me"),
                    ("10.0.0.4", Some(true), "other"),
                ],
            ),
            // The same endpoint in a second slice counts once.
            slice("local", "b", &[("10.0.0.1", Some(true), "me")]),
            slice("empty", "c", &[("10.0.0.5", Some(true), "other")]),
        ];
        let got = wanted(&services, &slices, "me");
        assert_eq!(got.keys().copied().collect::<Vec<_>>(), vec![31000, 31002]);
        assert_eq!(got[&31000].local_endpoints, 2);
        assert_eq!(got[&31002].local_endpoints, 0);

        let (code, body) = respond(&got[&31000], true);
        assert_eq!(code, StatusCode::OK);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"service": {"namespace": "ns", "name": "local"},
                               "localEndpoints": 2, "serviceProxyHealthy": true})
        );
        assert_eq!(
            respond(&got[&31002], true).0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            respond(&got[&31000], false).0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    async fn get(port: u16) -> (u16, String, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let code = out.split_whitespace().nth(1).unwrap().parse().unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        (code, head.to_ascii_lowercase(), body.to_string())
    }

    #[tokio::test]
    async fn listeners_open_answer_and_close_with_their_services() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut servers = HealthServers::new(Ipv4Addr::LOCALHOST, Arc::new(|| true));
        let health = |n| ServiceHealth {
            namespace: "ns".into(),
            name: "web".into(),
            local_endpoints: n,
        };
        servers.sync([(port, health(1))].into()).await;
        assert_eq!(servers.ports(), vec![port]);
        let (code, head, body) = get(port).await;
        assert_eq!(code, 200);
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(head.contains("x-content-type-options: nosniff"), "{head}");
        assert!(body.contains("\"localEndpoints\":1"), "{body}");
        servers.sync([(port, health(0))].into()).await;
        assert_eq!(get(port).await.0, 503);
        servers.sync(BTreeMap::new()).await;
        assert!(servers.ports().is_empty());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
        );
    }
}
