//! The StatefulSet controller, as upstream's: pods with stable names `<set>-<ordinal>`
//! (from `spec.ordinals.start`), labelled `statefulset.kubernetes.io/pod-name` and
//! `apps.kubernetes.io/pod-index`, with hostname and subdomain (`spec.serviceName`); one
//! PersistentVolumeClaim per volumeClaimTemplate and ordinal (`<template>-<set>-<ordinal>`),
//! kept unless `persistentVolumeClaimRetentionPolicy` says Delete (done through owner
//! references, so the garbage collector removes them with the set or the scaled-down pod).
//! OrderedReady creates one pod at a time, each Running and Ready before the next, and scales
//! down from the highest ordinal one at a time; Parallel does not wait. Templates are kept as
//! ControllerRevisions (`<set>-<hash>`, the hash also in each pod's `controller-revision-hash`
//! label), which `kubectl rollout history/undo` read; RollingUpdate replaces pods from the
//! highest ordinal down to `partition`, at most `maxUnavailable` at once; OnDelete waits for
//! the user. Failed pods are deleted and created again. The decision is the pure [`plan`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;

use super::rollout::{equal_ignoring_hash, scaled, template_hash};
use super::{
    Context, ControllerError, api_err, available_in, claim, controller_reference, is_not_found,
    is_ready, object_key, pod_selector, shutdown_signal,
};

/// The label with a pod's name, so a Service can select one member.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label with a pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
/// The label with the ControllerRevision hash of a pod's template.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// What the planner needs to know of one pod of the set.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Member {
    pub(crate) name: String,
    pub(crate) ordinal: i32,
    pub(crate) revision: Option<String>,
    /// Running and Ready, not terminating.
    pub(crate) healthy: bool,
    /// Ready for at least `minReadySeconds`, not terminating.
    pub(crate) available: bool,
    pub(crate) terminating: bool,
    /// Phase Failed or Succeeded: it will not run again.
    pub(crate) finished: bool,
}

impl Member {
    fn of(pod: &Pod, ordinal: i32, min_ready: i32, now: jiff::Timestamp) -> Self {
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let ready = is_ready(pod);
        Member {
            name: pod.name_any(),
            ordinal,
            revision: pod.labels().get(REVISION_LABEL).cloned(),
            healthy: !terminating && phase == Some("Running") && ready,
            available: !terminating
                && phase == Some("Running")
                && available_in(pod, min_ready, now).is_some_and(|l| l.is_zero()),
            terminating,
            finished: matches!(phase, Some("Failed" | "Succeeded")),
        }
    }
}

/// The set's spec as the planner sees it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Settings {
    pub(crate) start: i32,
    pub(crate) replicas: i32,
    /// OrderedReady (else Parallel).
    pub(crate) ordered: bool,
    /// RollingUpdate's `(partition, maxUnavailable)`; `None` for OnDelete.
    pub(crate) rolling: Option<(i32, i32)>,
    pub(crate) current_revision: String,
    pub(crate) update_revision: String,
}

impl Settings {
    /// The revision a new pod of `ordinal` gets: below the partition the current one.
    pub(crate) fn revision_for(&self, ordinal: i32) -> &str {
        match self.rolling {
            Some((partition, _)) if ordinal - self.start < partition => &self.current_revision,
            _ => &self.update_revision,
        }
    }
}

/// Why a pod is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Why {
    /// It failed or finished; it is created again.
    Finished,
    /// Its ordinal is beyond the replicas.
    ScaledDown,
    /// It runs an old revision.
    Update,
}

/// One thing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    Create { ordinal: i32, revision: String },
    Delete { name: String, why: Why },
}

/// The pure decision, as upstream's `updateStatefulSet`: what to create and delete now.
pub(crate) fn plan(settings: &Settings, members: &[Member]) -> Vec<Step> {
    let end = settings.start + settings.replicas.max(0);
    let in_range = |o: i32| o >= settings.start && o < end;
    let by_ordinal: BTreeMap<i32, &Member> = members
        .iter()
        .filter(|m| in_range(m.ordinal))
        .map(|m| (m.ordinal, m))
        .collect();
    let mut condemned: Vec<&Member> = members.iter().filter(|m| !in_range(m.ordinal)).collect();
    condemned.sort_by_key(|m| std::cmp::Reverse(m.ordinal));
    let mut steps = Vec::new();
    let ordered = settings.ordered;

    // Replicas first, lowest ordinal first.
    for ordinal in settings.start..end {
        match by_ordinal.get(&ordinal) {
            None => {
                steps.push(Step::Create {
                    ordinal,
                    revision: settings.revision_for(ordinal).to_string(),
                });
                if ordered {
                    return steps;
                }
            }
            Some(m) if m.finished && !m.terminating => {
                steps.push(Step::Delete {
                    name: m.name.clone(),
                    why: Why::Finished,
                });
                if ordered {
                    return steps;
                }
            }
            Some(m) if !m.healthy && ordered => return steps,
            Some(_) => {}
        }
    }

    // Then the condemned, highest ordinal first.
    for m in &condemned {
        if m.terminating {
            if ordered {
                return steps;
            }
            continue;
        }
        steps.push(Step::Delete {
            name: m.name.clone(),
            why: Why::ScaledDown,
        });
        if ordered {
            return steps;
        }
    }

    // Then the rolling update, from the highest ordinal down to the partition.
    let Some((partition, max_unavailable)) = settings.rolling else {
        return steps;
    };
    let mut unavailable = (settings.start..end)
        .filter(|o| !by_ordinal.get(o).is_some_and(|m| m.available))
        .count();
    let max_unavailable = usize::try_from(max_unavailable.max(1)).unwrap_or(1);
    let lowest = settings.start + partition.max(0);
    for ordinal in (lowest..end).rev() {
        let Some(m) = by_ordinal.get(&ordinal) else {
            continue;
        };
        if m.terminating || m.revision.as_deref() == Some(settings.update_revision.as_str()) {
            continue;
        }
        if m.available {
            if unavailable >= max_unavailable {
                break;
            }
            unavailable += 1;
        }
        if !steps
            .iter()
            .any(|s| matches!(s, Step::Delete { name, .. } if *name == m.name))
        {
            steps.push(Step::Delete {
                name: m.name.clone(),
                why: Why::Update,
            });
        }
    }
    steps
}

/// The ordinal of a pod of set `set` from its name, if it is one of the set's names.
pub(crate) fn ordinal_of(set: &str, pod: &str) -> Option<i32> {
    let rest = pod.strip_prefix(set)?.strip_prefix('-')?;
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok()
}

/// The name of the claim of `template` for the pod of `ordinal`.
pub(crate) fn claim_name(template: &str, set: &str, ordinal: i32) -> String {
    format!("{template}-{set}-{ordinal}")
}

/// The pod of `ordinal` from `template`: name, labels, hostname and claims.
pub(crate) fn pod_for(
    set: &StatefulSet,
    template: &PodTemplateSpec,
    ordinal: i32,
    revision: &str,
) -> Pod {
    let name = format!("{}-{ordinal}", set.name_any());
    let spec_of_set = set.spec.clone().unwrap_or_default();
    let meta = template.metadata.clone().unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(REVISION_LABEL.into(), revision.into());
    let mut spec = template.spec.clone().unwrap_or_default();
    spec.hostname = Some(name.clone());
    spec.subdomain = spec_of_set.service_name.filter(|s| !s.is_empty());
    let volumes = spec.volumes.get_or_insert_with(Vec::new);
    for claim_template in spec_of_set.volume_claim_templates.iter().flatten() {
        let template_name = claim_template.name_any();
        volumes.retain(|v| v.name != template_name);
        volumes.push(Volume {
            name: template_name.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name(&template_name, &set.name_any(), ordinal),
                read_only: None,
            }),
            ..Default::default()
        });
    }
    if volumes.is_empty() {
        spec.volumes = None;
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: set.namespace(),
            labels: Some(labels),
            annotations: meta.annotations,
            owner_references: Some(vec![controller_reference(set)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// A ControllerRevision's `data`: a strategic merge patch that puts the template back (what
/// `kubectl rollout undo` applies).
fn revision_data(template: &PodTemplateSpec) -> serde_json::Value {
    let mut t = serde_json::to_value(template).unwrap_or_default();
    if let Some(map) = t.as_object_mut() {
        map.insert("$patch".into(), "replace".into());
    }
    json!({"spec": {"template": t}})
}

/// The template a ControllerRevision holds.
fn revision_template(rev: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = rev.data.as_ref()?.0.pointer("/spec/template")?.clone();
    if let Some(map) = t.as_object_mut() {
        map.remove("$patch");
    }
    serde_json::from_value(t).ok()
}

/// Whether a claim has an owner reference to `uid`.
fn owned_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references.iter().flatten().any(|r| r.uid == uid)
}

/// A non-controller owner reference (claims are not controlled by the set or the pod).
fn owner_reference<K: kube::Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        controller: None,
        ..controller_reference(owner)
    }
}

fn retention(set: &StatefulSet) -> (bool, bool) {
    let policy = set
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_claim_retention_policy.clone())
        .unwrap_or_default();
    (
        policy.when_deleted.as_deref() == Some("Delete"),
        policy.when_scaled.as_deref() == Some("Delete"),
    )
}

/// The set's revisions: finds or creates the one of the current template (bumping its
/// revision number when an older one comes back, as a rollback does), and drops the oldest
/// beyond `revisionHistoryLimit`. Returns `(update revision name, collision count)`.
async fn sync_revisions(
    set: &StatefulSet,
    ctx: &Context,
    revisions: Vec<ControllerRevision>,
    in_use: &[String],
    current: Option<&str>,
) -> Result<(String, i32), ControllerError> {
    let object = object_key(set);
    let ns = set.namespace().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &ns);
    let spec = set.spec.clone().unwrap_or_default();
    let template = spec.template.clone();
    let mut collisions = set
        .status
        .as_ref()
        .and_then(|s| s.collision_count)
        .unwrap_or(0);
    let max_revision = revisions.iter().map(|r| r.revision).max().unwrap_or(0);
    let name = loop {
        let hash = template_hash(&template, (collisions > 0).then_some(collisions));
        let name = format!("{}-{hash}", set.name_any());
        match revisions.iter().find(|r| r.name_any() == name) {
            Some(rev)
                if revision_template(rev).is_some_and(|t| equal_ignoring_hash(&t, &template)) =>
            {
                if rev.revision < max_revision {
                    api.patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"revision": max_revision + 1})),
                    )
                    .await
                    .map_err(api_err(&object, "updating a revision"))?;
                }
                break name;
            }
            Some(_) => collisions += 1,
            None => {
                let mut labels = template
                    .metadata
                    .as_ref()
                    .and_then(|m| m.labels.clone())
                    .unwrap_or_default();
                labels.insert(REVISION_LABEL.into(), hash.clone());
                let rev = ControllerRevision {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(ns.clone()),
                        labels: Some(labels),
                        owner_references: Some(vec![controller_reference(set)]),
                        ..Default::default()
                    },
                    data: Some(RawExtension(revision_data(&template))),
                    revision: max_revision + 1,
                };
                match api.create(&PostParams::default(), &rev).await {
                    Ok(_) => break name,
                    // Someone else's object of that name: a collision.
                    Err(kube::Error::Api(s)) if s.code == 409 => collisions += 1,
                    Err(e) => return Err(api_err(&object, "creating a revision")(e)),
                }
            }
        }
        if collisions > 1000 {
            return Err(ControllerError::Invalid {
                object,
                why: "too many ControllerRevision hash collisions".into(),
            });
        }
    };
    // History: revisions neither current, nor the update's, nor in use by a pod.
    let limit = usize::try_from(spec.revision_history_limit.unwrap_or(10).max(0)).unwrap_or(10);
    let mut old: Vec<&ControllerRevision> = revisions
        .iter()
        .filter(|r| {
            let n = r.name_any();
            n != name
                && Some(n.as_str()) != current
                && !in_use
                    .iter()
                    .any(|h| n == format!("{}-{h}", set.name_any()))
        })
        .collect();
    old.sort_by_key(|r| r.revision);
    let excess = old.len().saturating_sub(limit);
    for rev in old.into_iter().take(excess) {
        match api.delete(&rev.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(api_err(&object, "deleting an old revision")(e)),
        }
    }
    Ok((name, collisions))
}

/// Makes sure the claims of the pod of `ordinal` exist (with the owner references the
/// retention policy asks for).
async fn ensure_claims(
    set: &StatefulSet,
    ctx: &Context,
    claims: &BTreeMap<String, PersistentVolumeClaim>,
    ordinal: i32,
    pod_name: &str,
) -> Result<(), ControllerError> {
    let object = object_key(set);
    let ns = set.namespace().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let spec = set.spec.clone().unwrap_or_default();
    let (delete_with_set, _) = retention(set);
    let uid = set.metadata.uid.clone().unwrap_or_default();
    for template in spec.volume_claim_templates.iter().flatten() {
        let name = claim_name(&template.name_any(), &set.name_any(), ordinal);
        if let Some(existing) = claims.get(&name) {
            if delete_with_set && !owned_by(&existing.metadata, &uid) {
                let mut refs = existing
                    .metadata
                    .owner_references
                    .clone()
                    .unwrap_or_default();
                refs.push(owner_reference(set));
                api.patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"ownerReferences": refs}})),
                )
                .await
                .map_err(api_err(&object, "updating a claim's owners"))?;
            }
            continue;
        }
        let mut labels = template.metadata.labels.clone().unwrap_or_default();
        labels.extend(spec.selector.match_labels.clone().unwrap_or_default());
        let claim = PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                labels: Some(labels),
                annotations: template.metadata.annotations.clone(),
                owner_references: delete_with_set.then(|| vec![owner_reference(set)]),
                ..Default::default()
            },
            spec: template.spec.clone(),
            status: None,
        };
        match api.create(&PostParams::default(), &claim).await {
            Ok(_) => {
                let note = format!(
                    "create Claim {name} Pod {pod_name} in StatefulSet {} success",
                    set.name_any()
                );
                ctx.event(set, "SuccessfulCreate", "Create", note).await;
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => {
                let note = format!(
                    "create Claim {name} for Pod {pod_name} in StatefulSet {} failed error: {e}",
                    set.name_any()
                );
                ctx.warning(set, "FailedCreate", "Create", note).await;
                return Err(api_err(&object, "creating a claim")(e));
            }
        }
    }
    Ok(())
}

/// whenScaled: Delete: the claims of a condemned pod get the pod as owner, so they go with it.
async fn hand_claims_to_pod(
    set: &StatefulSet,
    ctx: &Context,
    claims: &BTreeMap<String, PersistentVolumeClaim>,
    pod: &Pod,
    ordinal: i32,
) -> Result<(), ControllerError> {
    let object = object_key(set);
    let api: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), &set.namespace().unwrap_or_default());
    let pod_uid = pod.metadata.uid.clone().unwrap_or_default();
    for template in set
        .spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.as_ref())
        .into_iter()
        .flatten()
    {
        let name = claim_name(&template.name_any(), &set.name_any(), ordinal);
        let Some(existing) = claims.get(&name) else {
            continue;
        };
        if owned_by(&existing.metadata, &pod_uid) {
            continue;
        }
        let mut refs = existing
            .metadata
            .owner_references
            .clone()
            .unwrap_or_default();
        refs.push(owner_reference(pod));
        match api
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"ownerReferences": refs}})),
            )
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(api_err(&object, "updating a claim's owners")(e)),
        }
    }
    Ok(())
}

fn settings_of(
    set: &StatefulSet,
    current: &str,
    update: &str,
) -> Result<Settings, ControllerError> {
    let spec = set.spec.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1);
    let strategy = spec.update_strategy.unwrap_or_default();
    let rolling = if strategy.type_.as_deref() == Some("OnDelete") {
        None
    } else {
        let ru = strategy.rolling_update.unwrap_or_default();
        let max = scaled(
            ru.max_unavailable.as_ref().unwrap_or(&IntOrString::Int(1)),
            replicas,
            false,
            "maxUnavailable",
        )
        .map_err(|e| ControllerError::Invalid {
            object: object_key(set),
            why: e.to_string(),
        })?;
        Some((ru.partition.unwrap_or(0), max))
    };
    Ok(Settings {
        start: spec.ordinals.and_then(|o| o.start).unwrap_or(0),
        replicas,
        ordered: spec.pod_management_policy.as_deref() != Some("Parallel"),
        rolling,
        current_revision: current.into(),
        update_revision: update.into(),
    })
}

async fn reconcile(set: Arc<StatefulSet>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    let ns = set.namespace().unwrap_or_default();
    let object = object_key(set.as_ref());
    if set.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let set_name = set.name_any();
    let spec = set.spec.clone().unwrap_or_default();
    let selector = pod_selector(Some(&spec.selector), &object)?;
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let listed = pods_api
        .list(&ListParams::default())
        .await
        .map_err(api_err(&object, "listing pods"))?;
    // Only pods with one of the set's names are members (upstream's isMemberOf).
    let candidates = listed
        .items
        .into_iter()
        .filter(|p| ordinal_of(&set_name, &p.name_any()).is_some())
        .collect();
    let owner = controller_reference(set.as_ref());
    let pods = claim(
        &pods_api,
        owner.clone(),
        false,
        &selector,
        candidates,
        &object,
    )
    .await?;
    let revisions_api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &ns);
    let listed = revisions_api
        .list(&ListParams::default())
        .await
        .map_err(api_err(&object, "listing revisions"))?;
    let revisions = claim(
        &revisions_api,
        owner,
        false,
        &selector,
        listed.items,
        &object,
    )
    .await?;

    let in_use: Vec<String> = pods
        .iter()
        .filter_map(|p| p.labels().get(REVISION_LABEL).cloned())
        .collect();
    let status = set.status.clone().unwrap_or_default();
    let (update_revision, collisions) = sync_revisions(
        &set,
        &ctx,
        revisions.clone(),
        &in_use,
        status.current_revision.as_deref(),
    )
    .await?;
    let update_hash = update_revision
        .strip_prefix(&format!("{set_name}-"))
        .unwrap_or(&update_revision)
        .to_string();
    // The current revision: the one recorded, if it still exists; else the update's.
    let current_revision = status
        .current_revision
        .clone()
        .filter(|c| revisions.iter().any(|r| r.name_any() == *c))
        .unwrap_or_else(|| update_revision.clone());
    let hash_of = |rev: &str| {
        rev.strip_prefix(&format!("{set_name}-"))
            .unwrap_or(rev)
            .to_string()
    };
    let current_hash = hash_of(&current_revision);
    let settings = settings_of(&set, &current_hash, &update_hash)?;

    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let now = jiff::Timestamp::now();
    let members: Vec<Member> = pods
        .iter()
        .filter_map(|p| {
            let ordinal = ordinal_of(&set_name, &p.name_any())?;
            Some(Member::of(p, ordinal, min_ready, now))
        })
        .collect();

    let claims_api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let claims: BTreeMap<String, PersistentVolumeClaim> = if spec
        .volume_claim_templates
        .as_ref()
        .is_some_and(|t| !t.is_empty())
    {
        claims_api
            .list(&ListParams::default())
            .await
            .map_err(api_err(&object, "listing claims"))?
            .items
            .into_iter()
            .map(|c| (c.name_any(), c))
            .collect()
    } else {
        BTreeMap::new()
    };
    let (_, delete_when_scaled) = retention(&set);
    // Claims of live replicas that went missing are created again, as upstream.
    for m in members.iter().filter(|m| !m.terminating) {
        if m.ordinal >= settings.start && m.ordinal < settings.start + settings.replicas {
            ensure_claims(&set, &ctx, &claims, m.ordinal, &m.name).await?;
        }
    }

    for step in plan(&settings, &members) {
        match step {
            Step::Create { ordinal, revision } => {
                let template = if revision == settings.update_revision {
                    Some(spec.template.clone())
                } else {
                    revisions
                        .iter()
                        .find(|r| r.name_any() == current_revision)
                        .and_then(revision_template)
                };
                let template = template.unwrap_or_else(|| spec.template.clone());
                let revision = if template == spec.template {
                    settings.update_revision.clone()
                } else {
                    revision
                };
                let pod = pod_for(&set, &template, ordinal, &revision);
                let pod_name = pod.name_any();
                ensure_claims(&set, &ctx, &claims, ordinal, &pod_name).await?;
                match pods_api.create(&PostParams::default(), &pod).await {
                    Ok(_) => {
                        let note =
                            format!("create Pod {pod_name} in StatefulSet {set_name} successful");
                        ctx.event(set.as_ref(), "SuccessfulCreate", "Create", note)
                            .await;
                    }
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => {
                        let note = format!(
                            "create Pod {pod_name} in StatefulSet {set_name} failed error: {e}"
                        );
                        ctx.warning(set.as_ref(), "FailedCreate", "Create", note)
                            .await;
                        return Err(api_err(&object, "creating a pod")(e));
                    }
                }
            }
            Step::Delete { name, why } => {
                if why == Why::Finished {
                    let note =
                        format!("StatefulSet {ns}/{set_name} is recreating failed Pod {name}");
                    ctx.warning(set.as_ref(), "RecreatingFailedPod", "Delete", note)
                        .await;
                }
                if why == Why::ScaledDown
                    && delete_when_scaled
                    && let (Some(pod), Some(ordinal)) = (
                        pods.iter().find(|p| p.name_any() == name),
                        ordinal_of(&set_name, &name),
                    )
                {
                    hand_claims_to_pod(&set, &ctx, &claims, pod, ordinal).await?;
                }
                match pods_api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => {
                        let note =
                            format!("delete Pod {name} in StatefulSet {set_name} successful");
                        ctx.event(set.as_ref(), "SuccessfulDelete", "Delete", note)
                            .await;
                    }
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => {
                        let note = format!(
                            "delete Pod {name} in StatefulSet {set_name} failed error: {e}"
                        );
                        ctx.warning(set.as_ref(), "FailedDelete", "Delete", note)
                            .await;
                        return Err(api_err(&object, "deleting a pod")(e));
                    }
                }
            }
        }
    }

    // Status, from the pods as they were (the next round sees the changes).
    let counted: Vec<&Member> = members.iter().filter(|m| !m.terminating).collect();
    let count = |f: &dyn Fn(&Member) -> bool| counted.iter().filter(|m| f(m)).count();
    let replicas = count(&|_| true);
    let ready = count(&|m| m.healthy);
    let available = count(&|m| m.available);
    let updated = count(&|m| m.revision.as_deref() == Some(update_hash.as_str()));
    let mut current_count = count(&|m| m.revision.as_deref() == Some(current_hash.as_str()));
    let mut current_revision = current_revision;
    // A finished rolling update makes the update revision current (upstream's
    // completeRollingUpdate).
    let want = usize::try_from(settings.replicas.max(0)).unwrap_or(0);
    if settings.rolling.is_some() && updated == want && ready == want && replicas == want {
        current_revision = update_revision.clone();
        current_count = updated;
    }
    let status = json!({"status": {
        "replicas": replicas,
        "readyReplicas": ready,
        "availableReplicas": available,
        "currentReplicas": current_count,
        "updatedReplicas": updated,
        "currentRevision": current_revision,
        "updateRevision": update_revision,
        "collisionCount": collisions,
        "observedGeneration": set.metadata.generation,
    }});
    let sets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
    sets.patch_status(&set_name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .map_err(api_err(&object, "updating status"))?;
    Ok(Action::requeue(Duration::from_secs(if min_ready > 0 {
        1
    } else {
        300
    })))
}

fn error_policy(_set: Arc<StatefulSet>, error: &ControllerError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(%error, "statefulset reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// Runs the StatefulSet controller until `shutdown` turns true.
pub async fn run(client: kube::Client, shutdown: tokio::sync::watch::Receiver<bool>) {
    let sets: Api<StatefulSet> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let revisions: Api<ControllerRevision> = Api::all(client.clone());
    let ctx = Arc::new(Context::new(client, "statefulset-controller"));
    Controller::new(sets, watcher::Config::default())
        .owns(pods, watcher::Config::default())
        .owns(revisions, watcher::Config::default())
        .graceful_shutdown_on(shutdown_signal(shutdown))
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "statefulset controller");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(ordinal: i32, revision: &str, healthy: bool) -> Member {
        Member {
            name: format!("web-{ordinal}"),
            ordinal,
            revision: Some(revision.into()),
            healthy,
            available: healthy,
            terminating: false,
            finished: false,
        }
    }

    fn settings(replicas: i32, ordered: bool, rolling: Option<(i32, i32)>) -> Settings {
        Settings {
            start: 0,
            replicas,
            ordered,
            rolling,
            current_revision: "old".into(),
            update_revision: "new".into(),
        }
    }

    fn create(ordinal: i32, revision: &str) -> Step {
        Step::Create {
            ordinal,
            revision: revision.into(),
        }
    }

    fn delete(ordinal: i32, why: Why) -> Step {
        Step::Delete {
            name: format!("web-{ordinal}"),
            why,
        }
    }

    #[test]
    fn ordered_ready_creates_one_at_a_time_after_the_previous_is_ready() {
        let s = settings(3, true, Some((0, 1)));
        assert_eq!(plan(&s, &[]), vec![create(0, "new")]);
        // web-0 exists but is not ready: wait.
        assert_eq!(plan(&s, &[member(0, "new", false)]), vec![]);
        assert_eq!(plan(&s, &[member(0, "new", true)]), vec![create(1, "new")]);
        // A gap is filled first, lowest ordinal first.
        assert_eq!(
            plan(&s, &[member(0, "new", true), member(2, "new", true)]),
            vec![create(1, "new")]
        );
    }

    #[test]
    fn parallel_creates_and_deletes_at_once() {
        let s = settings(3, false, Some((0, 1)));
        assert_eq!(
            plan(&s, &[member(1, "new", false)]),
            vec![create(0, "new"), create(2, "new")]
        );
        let s = settings(1, false, None);
        let pods = [
            member(0, "new", true),
            member(1, "new", true),
            member(2, "new", false),
        ];
        assert_eq!(
            plan(&s, &pods),
            vec![delete(2, Why::ScaledDown), delete(1, Why::ScaledDown)]
        );
    }

    #[test]
    fn ordered_scale_down_goes_from_the_highest_ordinal_one_at_a_time() {
        let s = settings(1, true, Some((0, 1)));
        let mut pods = vec![
            member(0, "new", true),
            member(1, "new", true),
            member(2, "new", true),
        ];
        assert_eq!(plan(&s, &pods), vec![delete(2, Why::ScaledDown)]);
        pods[2].terminating = true;
        assert_eq!(plan(&s, &pods), vec![], "waits for web-2 to go");
        // Not while a replica is unhealthy.
        pods.pop();
        pods[0].healthy = false;
        assert_eq!(plan(&s, &pods), vec![]);
    }

    #[test]
    fn failed_pods_are_deleted_to_be_created_again() {
        let s = settings(2, true, Some((0, 1)));
        let mut failed = member(0, "new", false);
        failed.finished = true;
        assert_eq!(
            plan(&s, &[failed, member(1, "new", true)]),
            vec![delete(0, Why::Finished)]
        );
    }

    #[test]
    fn rolling_update_goes_down_to_the_partition_within_max_unavailable() {
        let pods = [
            member(0, "old", true),
            member(1, "old", true),
            member(2, "old", true),
        ];
        let s = settings(3, true, Some((0, 1)));
        assert_eq!(plan(&s, &pods), vec![delete(2, Why::Update)]);
        // The replaced pod not ready yet: nothing more.
        let mid = [
            member(0, "old", true),
            member(1, "old", true),
            member(2, "new", false),
        ];
        assert_eq!(plan(&settings(3, false, Some((0, 1))), &mid), vec![]);
        // Partition 2: only web-2 is updated.
        let s = settings(3, true, Some((2, 1)));
        let done = [
            member(0, "old", true),
            member(1, "old", true),
            member(2, "new", true),
        ];
        assert_eq!(plan(&s, &done), vec![]);
        // maxUnavailable 2 replaces two at once.
        let s = settings(3, false, Some((0, 2)));
        assert_eq!(
            plan(&s, &pods),
            vec![delete(2, Why::Update), delete(1, Why::Update)]
        );
        // OnDelete: nothing.
        assert_eq!(plan(&settings(3, true, None), &pods), vec![]);
    }

    #[test]
    fn new_pods_below_the_partition_get_the_current_revision() {
        let s = settings(3, false, Some((2, 1)));
        assert_eq!(
            plan(&s, &[]),
            vec![create(0, "old"), create(1, "old"), create(2, "new")]
        );
    }

    #[test]
    fn ordinals_start_is_honoured() {
        let mut s = settings(2, true, Some((0, 1)));
        s.start = 5;
        assert_eq!(plan(&s, &[]), vec![create(5, "new")]);
        let mut m = member(0, "new", true);
        m.ordinal = 0;
        assert_eq!(plan(&s, &[m]), vec![create(5, "new")]);
    }

    #[test]
    fn names_and_ordinals() {
        assert_eq!(ordinal_of("web", "web-0"), Some(0));
        assert_eq!(ordinal_of("web", "web-12"), Some(12));
        assert_eq!(ordinal_of("web", "web-x"), None);
        assert_eq!(ordinal_of("web", "webby-1"), None);
        assert_eq!(ordinal_of("web", "web-"), None);
        assert_eq!(claim_name("data", "web", 1), "data-web-1");
    }

    #[test]
    fn pods_get_identity_and_claims() {
        let set: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u1"},
            "spec": {
                "serviceName": "nginx",
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "i"}],
                             "volumes": [{"name": "data", "emptyDir": {}}]}
                },
                "volumeClaimTemplates": [{"metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"]}}]
            }
        }))
        .unwrap();
        let template = set.spec.clone().unwrap().template;
        let pod = pod_for(&set, &template, 1, "h1");
        assert_eq!(pod.name_any(), "web-1");
        let labels = pod.labels();
        assert_eq!(labels[POD_NAME_LABEL], "web-1");
        assert_eq!(labels[POD_INDEX_LABEL], "1");
        assert_eq!(labels[REVISION_LABEL], "h1");
        assert_eq!(labels["app"], "web");
        let spec = pod.spec.unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("web-1"));
        assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
        let volumes = spec.volumes.unwrap();
        assert_eq!(volumes.len(), 1, "the claim replaces the template's volume");
        assert_eq!(
            volumes[0]
                .persistent_volume_claim
                .as_ref()
                .unwrap()
                .claim_name,
            "data-web-1"
        );
    }

    #[test]
    fn revision_data_round_trips_the_template() {
        let template: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]}
        }))
        .unwrap();
        let rev = ControllerRevision {
            data: Some(RawExtension(revision_data(&template))),
            ..Default::default()
        };
        assert_eq!(
            rev.data.as_ref().unwrap().0["spec"]["template"]["$patch"],
            "replace"
        );
        assert_eq!(revision_template(&rev), Some(template));
    }
}
