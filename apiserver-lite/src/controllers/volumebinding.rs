//! The PersistentVolume controller for pre-provisioned volumes, as upstream's: a Pending
//! claim is bound to the smallest Available volume that fits (same storageClassName, every
//! requested access mode, capacity at least the request, the claim's selector matching the
//! volume's labels; a volume already reserved for the claim by its claimRef first); the
//! volume gets `claimRef` and phase Bound, the claim `volumeName`, the bind annotations and
//! phase Bound. A claim naming a volume in `volumeName` is bound to it. New volumes become
//! Available; when a bound claim is gone, a volume with reclaim policy Retain becomes
//! Released and one with Delete is deleted. No dynamic provisioning: a claim nothing fits
//! stays Pending with upstream's FailedBinding event. The choice is the pure [`best_match`].

use std::sync::Arc;
use std::time::Duration;

use apimachinery::quantity::Quantity;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde_json::json;

use super::{Context, ControllerError, api_err, is_not_found, object_key, shutdown_signal};

/// Set on a claim once the controller bound it.
const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// Set on a claim or volume the controller bound (rather than the user).
const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";

fn storage(
    map: Option<
        &std::collections::BTreeMap<
            String,
            k8s_openapi::apimachinery::pkg::api::resource::Quantity,
        >,
    >,
) -> Option<i128> {
    let q = map?.get("storage")?;
    Quantity::parse(&q.0).ok().map(|q| q.0)
}

fn class_of_claim(claim: &PersistentVolumeClaim) -> String {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.clone())
        .unwrap_or_default()
}

fn class_of_volume(pv: &PersistentVolume) -> String {
    pv.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.clone())
        .unwrap_or_default()
}

/// Whether `pv` can hold `claim`, ignoring whether it is free.
pub(crate) fn fits(claim: &PersistentVolumeClaim, pv: &PersistentVolume) -> bool {
    let Some(spec) = claim.spec.as_ref() else {
        return false;
    };
    let Some(pv_spec) = pv.spec.as_ref() else {
        return false;
    };
    if class_of_claim(claim) != class_of_volume(pv) {
        return false;
    }
    let modes = pv_spec.access_modes.clone().unwrap_or_default();
    if !spec
        .access_modes
        .iter()
        .flatten()
        .all(|m| modes.contains(m))
    {
        return false;
    }
    let claim_mode = spec.volume_mode.as_deref().unwrap_or("Filesystem");
    if pv_spec.volume_mode.as_deref().unwrap_or("Filesystem") != claim_mode {
        return false;
    }
    let request = storage(spec.resources.as_ref().and_then(|r| r.requests.as_ref())).unwrap_or(0);
    let Some(capacity) = storage(pv_spec.capacity.as_ref()) else {
        return false;
    };
    if capacity < request {
        return false;
    }
    match &spec.selector {
        None => true,
        Some(selector) => apimachinery::selector::LabelSelector::from_api(selector)
            .map(|s| s.matches_btree(&pv.labels().clone()))
            .unwrap_or(false),
    }
}

/// Whether `pv`'s claimRef names `claim` (by namespace and name, and uid when both have one).
fn reserved_for(pv: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let Some(r) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return false;
    };
    r.name.as_deref() == Some(claim.name_any().as_str())
        && r.namespace == claim.namespace()
        && match (&r.uid, &claim.metadata.uid) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
}

/// The volume for `claim`: one reserved for it if it fits, else the smallest free one that
/// fits (as upstream's `findBestMatchForClaim`).
pub(crate) fn best_match<'a>(
    claim: &PersistentVolumeClaim,
    volumes: &'a [PersistentVolume],
) -> Option<&'a PersistentVolume> {
    let usable = |pv: &&PersistentVolume| {
        pv.metadata.deletion_timestamp.is_none()
            && fits(claim, pv)
            && pv.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Released")
            && pv.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Failed")
    };
    if let Some(pv) = volumes
        .iter()
        .filter(usable)
        .find(|pv| reserved_for(pv, claim))
    {
        return Some(pv);
    }
    volumes
        .iter()
        .filter(usable)
        .filter(|pv| pv.spec.as_ref().is_none_or(|s| s.claim_ref.is_none()))
        .min_by_key(|pv| storage(pv.spec.as_ref().and_then(|s| s.capacity.as_ref())))
}

async fn set_volume_phase(
    api: &Api<PersistentVolume>,
    pv: &str,
    phase: &str,
    object: &str,
) -> Result<(), ControllerError> {
    match api
        .patch_status(
            pv,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": phase}})),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(api_err(object, "updating a volume's phase")(e)),
    }
}

async fn bind(
    ctx: &Context,
    claim: &PersistentVolumeClaim,
    pv: &PersistentVolume,
) -> Result<(), ControllerError> {
    let object = object_key(claim);
    let ns = claim.namespace().unwrap_or_default();
    let volumes: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let pv_name = pv.name_any();
    if !reserved_for(pv, claim)
        || pv
            .spec
            .as_ref()
            .and_then(|s| s.claim_ref.as_ref())
            .is_some_and(|r| r.uid.is_none())
    {
        let claim_ref = json!({
            "kind": "PersistentVolumeClaim", "apiVersion": "v1",
            "namespace": ns, "name": claim.name_any(),
            "uid": claim.metadata.uid, "resourceVersion": claim.metadata.resource_version,
        });
        volumes
            .patch(
                &pv_name,
                &PatchParams::default(),
                &Patch::Merge(json!({
                    "metadata": {"annotations": {BOUND_BY_CONTROLLER: "yes"},
                                 "resourceVersion": pv.metadata.resource_version},
                    "spec": {"claimRef": claim_ref},
                })),
            )
            .await
            .map_err(api_err(&object, "binding a volume"))?;
    }
    set_volume_phase(&volumes, &pv_name, "Bound", &object).await?;
    let pv_spec = pv.spec.clone().unwrap_or_default();
    let bound_by_controller = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_ref())
        .is_none_or(String::is_empty);
    let mut annotations = json!({BIND_COMPLETED: "yes"});
    if bound_by_controller {
        annotations[BOUND_BY_CONTROLLER] = "yes".into();
    }
    claims
        .patch(
            &claim.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": {"annotations": annotations},
                "spec": {"volumeName": pv_name},
            })),
        )
        .await
        .map_err(api_err(&object, "binding a claim"))?;
    claims
        .patch_status(
            &claim.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "phase": "Bound",
                "accessModes": pv_spec.access_modes,
                "capacity": pv_spec.capacity,
            }})),
        )
        .await
        .map_err(api_err(&object, "updating a claim's phase"))?;
    Ok(())
}

async fn reconcile_claim(
    claim: Arc<PersistentVolumeClaim>,
    ctx: Arc<Context>,
) -> Result<Action, ControllerError> {
    let object = object_key(claim.as_ref());
    if claim.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let volumes: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let all = volumes
        .list(&ListParams::default())
        .await
        .map_err(api_err(&object, "listing volumes"))?
        .items;
    let phase = claim.status.as_ref().and_then(|s| s.phase.as_deref());
    let named = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .filter(|n| !n.is_empty());
    match named {
        Some(name) => {
            let Some(pv) = all.iter().find(|pv| pv.name_any() == name) else {
                if phase == Some("Bound") {
                    let claims: Api<PersistentVolumeClaim> =
                        Api::namespaced(ctx.client.clone(), &claim.namespace().unwrap_or_default());
                    claims
                        .patch_status(
                            &claim.name_any(),
                            &PatchParams::default(),
                            &Patch::Merge(json!({"status": {"phase": "Lost"}})),
                        )
                        .await
                        .map_err(api_err(&object, "updating a claim's phase"))?;
                    let note =
                        "Bound claim has lost its PersistentVolume. Data on the volume is lost!"
                            .to_string();
                    ctx.warning(claim.as_ref(), "ClaimLost", "Bind", note).await;
                }
                return Ok(Action::await_change());
            };
            let taken = pv
                .spec
                .as_ref()
                .and_then(|s| s.claim_ref.as_ref())
                .is_some_and(|_| !reserved_for(pv, &claim));
            if taken {
                let note = format!("volume \"{name}\" already bound to a different claim.");
                ctx.warning(claim.as_ref(), "FailedBinding", "Bind", note)
                    .await;
                return Ok(Action::await_change());
            }
            let pv_phase = pv.status.as_ref().and_then(|s| s.phase.as_deref());
            if phase != Some("Bound") || pv_phase != Some("Bound") {
                bind(&ctx, &claim, pv).await?;
            }
        }
        None => match best_match(&claim, &all) {
            Some(pv) => bind(&ctx, &claim, pv).await?,
            None if phase != Some("Bound") => {
                let note = if class_of_claim(&claim).is_empty() {
                    "no persistent volumes available for this claim and no storage class is set"
                        .to_string()
                } else {
                    format!(
                        "storageclass.storage.k8s.io \"{}\" not found",
                        class_of_claim(&claim)
                    )
                };
                ctx.warning(claim.as_ref(), "FailedBinding", "Bind", note)
                    .await;
                return Ok(Action::requeue(Duration::from_secs(15)));
            }
            None => {}
        },
    }
    Ok(Action::await_change())
}

async fn reconcile_volume(
    pv: Arc<PersistentVolume>,
    ctx: Arc<Context>,
) -> Result<Action, ControllerError> {
    let object = pv.name_any();
    if pv.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let volumes: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let phase = pv.status.as_ref().and_then(|s| s.phase.clone());
    let spec = pv.spec.clone().unwrap_or_default();
    let Some(claim_ref) = spec.claim_ref.clone() else {
        if phase.as_deref() != Some("Available") {
            set_volume_phase(&volumes, &object, "Available", &object).await?;
        }
        return Ok(Action::await_change());
    };
    let (Some(ns), Some(name)) = (claim_ref.namespace.clone(), claim_ref.name.clone()) else {
        return Ok(Action::await_change());
    };
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let claim = match claims.get(&name).await {
        Ok(c) => Some(c),
        Err(e) if is_not_found(&e) => None,
        Err(e) => return Err(api_err(&object, "reading a claim")(e)),
    };
    let gone = match (&claim, &claim_ref.uid) {
        (None, Some(_)) => true,
        (Some(c), Some(uid)) => c.metadata.uid.as_deref() != Some(uid.as_str()),
        _ => false,
    };
    if gone {
        match spec.persistent_volume_reclaim_policy.as_deref() {
            Some("Delete") => match volumes.delete(&object, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(api_err(&object, "deleting a released volume")(e)),
            },
            _ => {
                if phase.as_deref() != Some("Released") {
                    set_volume_phase(&volumes, &object, "Released", &object).await?;
                }
            }
        }
        return Ok(Action::await_change());
    }
    // A volume reserved for a claim (claimRef without uid, or the claim not bound yet):
    // the claim's reconcile binds it; nudge it by phase Available until then.
    if claim_ref.uid.is_none() && phase.as_deref() != Some("Available") {
        set_volume_phase(&volumes, &object, "Available", &object).await?;
    }
    Ok(Action::requeue(Duration::from_secs(60)))
}

fn error_policy<K>(_obj: Arc<K>, error: &ControllerError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(%error, "persistent volume reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// Runs the binder until `shutdown` turns true: one loop over claims (any volume change
/// looks at every unbound claim again), one over volumes.
pub async fn run(client: kube::Client, shutdown: tokio::sync::watch::Receiver<bool>) {
    let claims: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let ctx = Arc::new(Context::new(client, "persistentvolume-controller"));
    let claim_controller = Controller::new(claims, watcher::Config::default());
    let store = claim_controller.store();
    let claim_loop = claim_controller
        .watches(volumes.clone(), watcher::Config::default(), move |_pv| {
            store
                .state()
                .iter()
                .filter(|c| c.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound"))
                .map(|c| ObjectRef::from_obj(c.as_ref()))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown_signal(shutdown.clone()))
        .run(reconcile_claim, error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "persistentvolume controller (claims)");
            }
        });
    let volume_loop = Controller::new(volumes, watcher::Config::default())
        .graceful_shutdown_on(shutdown_signal(shutdown))
        .run(reconcile_volume, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "persistentvolume controller (volumes)");
            }
        });
    futures::join!(claim_loop, volume_loop);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pv(
        name: &str,
        size: &str,
        modes: &[&str],
        class: &str,
        labels: serde_json::Value,
    ) -> PersistentVolume {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"capacity": {"storage": size}, "accessModes": modes,
                     "storageClassName": class, "hostPath": {"path": "/tmp"}},
            "status": {"phase": "Available"}
        }))
        .unwrap()
    }

    fn claim(
        size: &str,
        modes: &[&str],
        class: &str,
        selector: Option<serde_json::Value>,
    ) -> PersistentVolumeClaim {
        let mut spec = json!({"accessModes": modes, "resources": {"requests": {"storage": size}},
                              "storageClassName": class});
        if let Some(s) = selector {
            spec["selector"] = s;
        }
        serde_json::from_value(json!({
            "metadata": {"name": "c", "namespace": "ns", "uid": "u1"},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn the_smallest_fitting_volume_wins() {
        let volumes = [
            pv("big", "10Gi", &["ReadWriteOnce"], "", json!({})),
            pv("small", "1Gi", &["ReadWriteOnce"], "", json!({})),
            pv("tiny", "100Mi", &["ReadWriteOnce"], "", json!({})),
            pv("rox", "1Gi", &["ReadOnlyMany"], "", json!({})),
            pv("classy", "1Gi", &["ReadWriteOnce"], "fast", json!({})),
        ];
        let c = claim("500Mi", &["ReadWriteOnce"], "", None);
        assert_eq!(
            best_match(&c, &volumes).map(|p| p.name_any()).as_deref(),
            Some("small")
        );
        let c = claim("500Mi", &["ReadWriteOnce"], "fast", None);
        assert_eq!(
            best_match(&c, &volumes).map(|p| p.name_any()).as_deref(),
            Some("classy")
        );
        let c = claim("20Gi", &["ReadWriteOnce"], "", None);
        assert!(best_match(&c, &volumes).is_none());
    }

    #[test]
    fn selectors_bound_volumes_and_reservations() {
        let mut taken = pv("taken", "1Gi", &["ReadWriteOnce"], "", json!({"tier": "a"}));
        taken.spec.as_mut().unwrap().claim_ref =
            Some(k8s_openapi::api::core::v1::ObjectReference {
                name: Some("other".into()),
                namespace: Some("ns".into()),
                ..Default::default()
            });
        let volumes = [
            taken,
            pv("a", "2Gi", &["ReadWriteOnce"], "", json!({"tier": "a"})),
            pv("b", "1Gi", &["ReadWriteOnce"], "", json!({"tier": "b"})),
        ];
        let c = claim(
            "1Gi",
            &["ReadWriteOnce"],
            "",
            Some(json!({"matchLabels": {"tier": "a"}})),
        );
        assert_eq!(
            best_match(&c, &volumes).map(|p| p.name_any()).as_deref(),
            Some("a")
        );
        // A volume reserved for this claim wins over a smaller free one.
        let mut reserved = pv("reserved", "5Gi", &["ReadWriteOnce"], "", json!({}));
        reserved.spec.as_mut().unwrap().claim_ref =
            Some(k8s_openapi::api::core::v1::ObjectReference {
                name: Some("c".into()),
                namespace: Some("ns".into()),
                ..Default::default()
            });
        let volumes = [
            pv("free", "1Gi", &["ReadWriteOnce"], "", json!({})),
            reserved,
        ];
        let c = claim("1Gi", &["ReadWriteOnce"], "", None);
        assert_eq!(
            best_match(&c, &volumes).map(|p| p.name_any()).as_deref(),
            Some("reserved")
        );
        // Released volumes are not reused.
        let mut released = pv("r", "1Gi", &["ReadWriteOnce"], "", json!({}));
        released.status.as_mut().unwrap().phase = Some("Released".into());
        assert!(best_match(&c, &[released]).is_none());
    }
}
