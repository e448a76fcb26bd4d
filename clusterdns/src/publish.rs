//! Publishes the server as the `kube-dns` Service of kube-system: a Service without selector
//! whose ClusterIP is the cluster DNS IP (ports 53/UDP `dns` and 53/TCP `dns-tcp`, label
//! `k8s-app=kube-dns`, as kubeadm's), and an EndpointSlice of our own pointing at the address
//! and port this server listens on, so a service proxy routes the ClusterIP here.
//!
//! Both are created when missing and otherwise merge-patched to what they should be, again
//! every minute, so a deleted or edited object comes back. (Merge patches rather than
//! server-side apply, which apiserver-lite does not serve yet.) A kube-dns Service that
//! exists with another ClusterIP keeps it (a ClusterIP cannot change): that is logged.

use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// Namespace, name and label value of the Service.
pub const NAMESPACE: &str = "kube-system";
/// The Service's name.
pub const SERVICE: &str = "kube-dns";
/// Name of our EndpointSlice.
pub const SLICE: &str = "kube-dns-clusterdns";
/// `endpointslice.kubernetes.io/managed-by` of our slice (the EndpointSlice controller leaves
/// slices managed by others alone).
pub const MANAGED_BY: &str = "clusterdns.kube-lite.io";
/// Field manager of our writes.
const FIELD_MANAGER: &str = "clusterdns";

/// Why publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The API refused or could not be reached.
    #[error("writing {what}: {source}")]
    Api {
        /// `Service kube-system/kube-dns` or the slice.
        what: &'static str,
        /// The client error.
        #[source]
        source: kube::Error,
    },
}

/// The kube-dns Service with ClusterIP `dns_ip`.
pub fn service(dns_ip: std::net::IpAddr) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": SERVICE,
            "namespace": NAMESPACE,
            "labels": {
                "k8s-app": "kube-dns",
                "kubernetes.io/name": "CoreDNS",
                "kubernetes.io/cluster-service": "true",
            },
        },
        "spec": {
            "clusterIP": dns_ip.to_string(),
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
            ],
        },
    })
}

/// Our EndpointSlice of kube-dns: one ready endpoint, the address served on, with its port
/// for UDP and TCP (names matching the Service's ports).
pub fn slice(serving: SocketAddr) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": SLICE,
            "namespace": NAMESPACE,
            "labels": {
                crate::index::SERVICE_NAME_LABEL: SERVICE,
                "endpointslice.kubernetes.io/managed-by": MANAGED_BY,
                "k8s-app": "kube-dns",
            },
        },
        "addressType": if serving.is_ipv4() { "IPv4" } else { "IPv6" },
        "endpoints": [{
            "addresses": [serving.ip().to_string()],
            "conditions": {"ready": true, "serving": true, "terminating": false},
        }],
        "ports": [
            {"name": "dns", "port": serving.port(), "protocol": "UDP"},
            {"name": "dns-tcp", "port": serving.port(), "protocol": "TCP"},
        ],
    })
}

/// Creates `body` as `name` when missing, else merge-patches it with `body` less the spec
/// fields in `kept` (those that cannot change once set).
async fn create_or_patch<K>(
    api: &Api<K>,
    name: &str,
    mut body: Value,
    kept: &[&str],
    what: &'static str,
) -> Result<Option<K>, PublishError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let api_err = |source| PublishError::Api { what, source };
    let Some(_) = api.get_opt(name).await.map_err(api_err)? else {
        let object: K = serde_json::from_value(body).map_err(|e| PublishError::Api {
            what,
            source: kube::Error::SerdeError(e),
        })?;
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        return api
            .create(&params, &object)
            .await
            .map(Some)
            .map_err(api_err);
    };
    if let Some(spec) = body.get_mut("spec").and_then(Value::as_object_mut) {
        for field in kept {
            spec.remove(*field);
        }
    }
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    api.patch(name, &params, &Patch::Merge(body))
        .await
        .map(Some)
        .map_err(api_err)
}

/// Creates or updates the Service and the EndpointSlice once.
pub async fn apply(
    client: &kube::Client,
    dns_ip: std::net::IpAddr,
    serving: SocketAddr,
) -> Result<(), PublishError> {
    let services = Api::<Service>::namespaced(client.clone(), NAMESPACE);
    let svc = create_or_patch(
        &services,
        SERVICE,
        service(dns_ip),
        &["clusterIP", "clusterIPs"],
        "Service kube-system/kube-dns",
    )
    .await?;
    let has = svc.and_then(|s| s.spec).and_then(|s| s.cluster_ip);
    if has.as_deref() != Some(dns_ip.to_string().as_str()) {
        tracing::warn!(
            want = %dns_ip,
            has = has.as_deref().unwrap_or(""),
            "the kube-dns Service has another ClusterIP; delete it to have it made again"
        );
    }
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), NAMESPACE);
    create_or_patch(
        &slices,
        SLICE,
        slice(serving),
        &[],
        "EndpointSlice kube-system/kube-dns-clusterdns",
    )
    .await?;
    Ok(())
}

/// Applies both now and every minute until `shutdown` turns true; failures are logged and
/// retried after a second (doubling, up to the minute).
pub async fn run(
    client: kube::Client,
    dns_ip: std::net::IpAddr,
    serving: SocketAddr,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut retry = Duration::from_secs(1);
    loop {
        let wait = match apply(&client, dns_ip, serving).await {
            Ok(()) => {
                tracing::debug!(%dns_ip, %serving, "kube-dns Service and EndpointSlice applied");
                retry = Duration::from_secs(1);
                Duration::from_secs(60)
            }
            Err(error) => {
                tracing::warn!(%error, %dns_ip, "publishing the kube-dns Service (retrying)");
                let wait = retry;
                retry = (retry * 2).min(Duration::from_secs(60));
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_is_kubeadms_kube_dns_with_the_fixed_cluster_ip_and_no_selector() {
        let svc: Service = serde_json::from_value(service("10.96.0.10".parse().unwrap())).unwrap();
        let spec = svc.spec.unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("10.96.0.10"));
        assert!(spec.selector.is_none());
        let ports: Vec<_> = spec
            .ports
            .unwrap()
            .into_iter()
            .map(|p| (p.name.unwrap(), p.port, p.protocol.unwrap()))
            .collect();
        assert_eq!(
            ports,
            [
                ("dns".into(), 53, "UDP".into()),
                ("dns-tcp".into(), 53, "TCP".into())
            ]
        );
        assert_eq!(svc.metadata.labels.unwrap()["k8s-app"], "kube-dns");
    }

    #[test]
    fn the_slice_points_at_the_serving_address_and_port() {
        let slice: EndpointSlice =
            serde_json::from_value(slice("192.168.1.5:5353".parse().unwrap())).unwrap();
        assert_eq!(slice.address_type, "IPv4");
        assert_eq!(slice.endpoints[0].addresses, ["192.168.1.5"]);
        let labels = slice.metadata.labels.unwrap();
        assert_eq!(labels["kubernetes.io/service-name"], "kube-dns");
        assert_eq!(labels["endpointslice.kubernetes.io/managed-by"], MANAGED_BY);
        let ports: Vec<_> = slice
            .ports
            .unwrap()
            .into_iter()
            .map(|p| (p.name.unwrap(), p.port.unwrap()))
            .collect();
        assert_eq!(ports, [("dns".into(), 5353), ("dns-tcp".into(), 5353)]);
    }
}
