//! What exists in every cluster from its first start: the namespaces default, kube-system,
//! kube-public and kube-node-lease, and the `kubernetes` Service in `default` (the first
//! ClusterIP) with Endpoints and an EndpointSlice pointing at this API server. Written through
//! the normal API path so defaulting, validation and allocation apply.
//!
//! Also the periodic compaction of the store, as upstream compacts etcd every few minutes.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use apimachinery::resources;
use apimachinery::status::ApiError;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::api::{Api, ApiRequest};
use crate::auth::UserInfo;

fn system_user() -> UserInfo {
    UserInfo {
        name: "system:apiserver".into(),
        uid: String::new(),
        groups: vec!["system:masters".into()],
    }
}

async fn call(
    api: &Arc<Api>,
    method: http::Method,
    path: &str,
    body: &Value,
) -> Result<Value, ApiError> {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    let req = ApiRequest {
        method,
        path: path.into(),
        query: None,
        headers,
        body: if body.is_null() {
            Bytes::new()
        } else {
            Bytes::from(serde_json::to_vec(body).unwrap_or_default())
        },
    };
    let resp = api.handle(req, &system_user()).await;
    let status = resp.status();
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if status.is_success() {
        Ok(value)
    } else {
        let mut e = ApiError::internal(value["message"].as_str().unwrap_or("request failed"));
        e.code = status.as_u16();
        e.reason = match status.as_u16() {
            404 => "NotFound",
            409 => "AlreadyExists",
            _ => "InternalError",
        };
        Err(e)
    }
}

/// Creates `obj` unless an object of its name exists. Another API server over the same
/// etcd may create it at the same moment: a failed create is fine if the object then exists.
async fn ensure(api: &Arc<Api>, collection: &str, obj: Value) -> Result<(), ApiError> {
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let item = format!("{collection}/{name}");
    match call(api, http::Method::GET, &item, &Value::Null).await {
        Ok(_) => return Ok(()),
        Err(e) if e.code == 404 => {}
        Err(e) => return Err(e),
    }
    match call(api, http::Method::POST, collection, &obj).await {
        Ok(_) => Ok(()),
        Err(e) => match call(api, http::Method::GET, &item, &Value::Null).await {
            Ok(_) => Ok(()),
            Err(_) => Err(e),
        },
    }
}

/// Replaces an object if it differs from `obj` (ignoring server-owned fields), creating it if
/// missing.
async fn reconcile(
    api: &Arc<Api>,
    collection: &str,
    name: &str,
    obj: Value,
    compare: &[&str],
) -> Result<(), ApiError> {
    let item = format!("{collection}/{name}");
    match call(api, http::Method::GET, &item, &Value::Null).await {
        Ok(current) => {
            if compare.iter().all(|f| current[*f] == obj[*f]) {
                return Ok(());
            }
            let mut updated = obj;
            updated["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
            call(api, http::Method::PUT, &item, &updated)
                .await
                .map(|_| ())
        }
        Err(e) if e.code == 404 => call(api, http::Method::POST, collection, &obj)
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    }
}

/// Creates what every cluster has; safe to run on every start.
pub async fn run(api: &Arc<Api>, advertise_ip: IpAddr, port: u16) -> Result<(), ApiError> {
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        ensure(
            api,
            "/api/v1/namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .await?;
    }
    let first_ip = api.admission.service_range.first().to_string();
    ensure(
        api,
        "/api/v1/namespaces/default/services",
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"type": "ClusterIP", "clusterIP": first_ip, "sessionAffinity": "None",
                     "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]},
        }),
    )
    .await?;
    reconcile(
        api,
        "/api/v1/namespaces/default/endpoints",
        "kubernetes",
        json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": advertise_ip.to_string()}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
        }),
        &["subsets"],
    )
    .await?;
    let family = if advertise_ip.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    };
    reconcile(
        api,
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
        "kubernetes",
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"kubernetes.io/service-name": "kubernetes"}},
            "addressType": family,
            "endpoints": [{"addresses": [advertise_ip.to_string()], "conditions": {"ready": true}}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        }),
        &["endpoints", "ports", "addressType"],
    )
    .await?;
    debug_assert!(resources::find("", "v1", "namespaces").is_some());
    Ok(())
}

/// Compacts the store every `interval` to the revision seen one interval earlier, so watches
/// can resume within one interval and history does not grow without bound.
pub async fn compaction_loop(
    api: Arc<Api>,
    interval: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut previous: Option<i64> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
        if let Some(rev) = previous
            && let Err(e) = api.store.compact(rev).await
        {
            tracing::warn!(revision = rev, error = %e, "compaction failed; will retry");
        }
        previous = api.store.current_revision().await.ok();
    }
}
