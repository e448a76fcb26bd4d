//! Objects every namespace has, kept by one controller shape (kube-runtime `Controller` over
//! namespaces, watching the kept objects by name): the `default` ServiceAccount (created when
//! missing, as upstream's serviceaccounts controller does) and the `kube-root-ca.crt`
//! ConfigMap with the cluster CA under `ca.crt` (created when missing, its data restored
//! when changed, as upstream's root CA publisher does). Namespaces being deleted are left
//! alone.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{ControllerError, api_err, shutdown_signal};

/// The ServiceAccount every namespace gets.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// The ConfigMap with the cluster CA every namespace gets.
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";

/// Builds the object wanted in a namespace.
type Want<K> = Box<dyn Fn(&str) -> K + Send + Sync>;
/// A merge patch that makes an existing object right, if it needs one.
type Repair<K> = Box<dyn Fn(&K) -> Option<serde_json::Value> + Send + Sync>;

/// One kind of object kept in every namespace.
struct Kept<K> {
    /// Its name.
    name: &'static str,
    /// The object wanted in a namespace.
    want: Want<K>,
    /// What to patch on an existing one.
    repair: Repair<K>,
    client: kube::Client,
}

async fn reconcile<K>(ns: Arc<Namespace>, kept: Arc<Kept<K>>) -> Result<Action, ControllerError>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + Debug,
{
    let name = ns.name_any();
    let terminating = ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    if ns.metadata.deletion_timestamp.is_some() || terminating {
        return Ok(Action::await_change());
    }
    let object = format!("{name}/{}", kept.name);
    let api: Api<K> = Api::namespaced(kept.client.clone(), &name);
    match api
        .get_opt(kept.name)
        .await
        .map_err(api_err(&object, "reading"))?
    {
        None => match api
            .create(&PostParams::default(), &(kept.want)(&name))
            .await
        {
            Ok(_) => tracing::info!(%object, "created"),
            // Created meanwhile, or the namespace started terminating: the next event says.
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 403 => {}
            Err(e) => return Err(api_err(&object, "creating")(e)),
        },
        Some(existing) => {
            if let Some(patch) = (kept.repair)(&existing) {
                api.patch(kept.name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                    .map_err(api_err(&object, "restoring"))?;
                tracing::info!(%object, "restored");
            }
        }
    }
    Ok(Action::requeue(Duration::from_secs(300)))
}

fn error_policy<K>(_ns: Arc<Namespace>, error: &ControllerError, _kept: Arc<Kept<K>>) -> Action {
    tracing::warn!(%error, "per-namespace object; retrying");
    Action::requeue(Duration::from_secs(2))
}

async fn keep<K>(kept: Kept<K>, shutdown: tokio::sync::watch::Receiver<bool>)
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + Debug
        + Send
        + Sync
        + 'static,
{
    let namespaces: Api<Namespace> = Api::all(kept.client.clone());
    let objects: Api<K> = Api::all(kept.client.clone());
    let by_name = watcher::Config::default().fields(&format!("metadata.name={}", kept.name));
    Controller::new(namespaces, watcher::Config::default())
        .watches(objects, by_name, |obj: K| {
            obj.namespace().map(|ns| ObjectRef::<Namespace>::new(&ns))
        })
        .graceful_shutdown_on(shutdown_signal(shutdown))
        .run(reconcile, error_policy, Arc::new(kept))
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "per-namespace controller");
            }
        })
        .await;
}

/// Keeps a `default` ServiceAccount in every namespace until `shutdown` turns true.
pub async fn run_service_accounts(
    client: kube::Client,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let kept = Kept {
        name: DEFAULT_SERVICE_ACCOUNT,
        want: Box::new(|ns| ServiceAccount {
            metadata: ObjectMeta {
                name: Some(DEFAULT_SERVICE_ACCOUNT.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            ..Default::default()
        }),
        repair: Box::new(|_| None),
        client,
    };
    keep(kept, shutdown).await;
}

/// Keeps the `kube-root-ca.crt` ConfigMap (`ca.crt` = `ca_pem`) in every namespace until
/// `shutdown` turns true.
pub async fn run_root_ca(
    client: kube::Client,
    ca_pem: String,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let data = BTreeMap::from([("ca.crt".to_string(), ca_pem)]);
    let wanted = data.clone();
    let kept = Kept {
        name: ROOT_CA_CONFIGMAP,
        want: Box::new(move |ns| ConfigMap {
            metadata: ObjectMeta {
                name: Some(ROOT_CA_CONFIGMAP.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            data: Some(data.clone()),
            ..Default::default()
        }),
        repair: Box::new(move |cm: &ConfigMap| {
            (cm.data.as_ref() != Some(&wanted) || cm.binary_data.is_some()).then(|| {
                // Merge patch: every other key removed, ca.crt set.
                let mut data: serde_json::Map<String, serde_json::Value> = cm
                    .data
                    .iter()
                    .flatten()
                    .map(|(k, _)| (k.clone(), serde_json::Value::Null))
                    .collect();
                for (k, v) in &wanted {
                    data.insert(k.clone(), v.clone().into());
                }
                serde_json::json!({
                    "data": data,
                    "binaryData": null,
                    "metadata": {"resourceVersion": cm.metadata.resource_version},
                })
            })
        }),
        client,
    };
    keep(kept, shutdown).await;
}
