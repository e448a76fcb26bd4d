//! The Deployment controller (kube-runtime `Controller` owning ReplicaSets): one ReplicaSet
//! per pod template, named `<deployment>-<pod-template-hash>`; RollingUpdate within
//! maxSurge/maxUnavailable and Recreate; revisions, rollbacks, revision history, pausing,
//! proportional scaling mid-rollout, the progress deadline, and status with the Progressing
//! and Available conditions. The arithmetic lives in [`super::rollout`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use apimachinery::selector::LabelSelector;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;

use super::rollout::{self, HASH_LABEL, REVISION, Share, Sizes, reason};
use super::{
    Context, ControllerError, api_err, claim, controller_reference, controller_uid, is_not_found,
    object_key, shutdown_signal,
};

/// How often a settled Deployment is looked at again anyway.
const RESYNC: Duration = Duration::from_secs(300);
/// How soon Recreate looks again while old pods are still running.
const POD_POLL: Duration = Duration::from_secs(1);

/// One reconcile of one Deployment: the fresh object, its ReplicaSets and clients.
struct Sync {
    ctx: Arc<Context>,
    d: Deployment,
    object: String,
    sets: Api<ReplicaSet>,
    deployments: Api<Deployment>,
    pods: Api<Pod>,
    now: jiff::Timestamp,
    /// When to look again at the latest (a progress deadline, pods still going away).
    requeue: Duration,
}

impl Sync {
    fn err(&self, action: &'static str) -> impl FnOnce(kube::Error) -> ControllerError + use<> {
        api_err(&self.object, action)
    }

    fn invalid(&self, why: impl std::fmt::Display) -> ControllerError {
        ControllerError::Invalid {
            object: self.object.clone(),
            why: why.to_string(),
        }
    }

    fn replicas(&self) -> i32 {
        rollout::replicas(&self.d)
    }

    fn max_surge(&self) -> Result<i32, ControllerError> {
        rollout::max_surge(&self.d).map_err(|e| self.invalid(e))
    }

    fn max_unavailable(&self) -> Result<i32, ControllerError> {
        rollout::max_unavailable(&self.d).map_err(|e| self.invalid(e))
    }

    fn template(&self) -> Result<k8s_openapi::api::core::v1::PodTemplateSpec, ControllerError> {
        Ok(self
            .d
            .spec
            .as_ref()
            .ok_or_else(|| self.invalid("no spec"))?
            .template
            .clone())
    }

    fn status(&self) -> DeploymentStatus {
        self.d.status.clone().unwrap_or_default()
    }

    fn min_ready_seconds(&self) -> Option<i32> {
        self.d
            .spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .filter(|s| *s > 0)
    }

    /// The ReplicaSets this Deployment owns (adopting and releasing by selector), oldest
    /// first.
    async fn replica_sets(&self) -> Result<Vec<ReplicaSet>, ControllerError> {
        let spec = self
            .d
            .spec
            .as_ref()
            .ok_or_else(|| self.invalid("no spec"))?;
        let selector = LabelSelector::from_api(&spec.selector).map_err(|e| self.invalid(e))?;
        if selector.is_empty() {
            return Err(self.invalid("an empty selector selects every ReplicaSet"));
        }
        let all = self
            .sets
            .list(&ListParams::default())
            .await
            .map_err(self.err("listing replicasets"))?;
        let mut owned = claim(
            &self.sets,
            controller_reference(&self.d),
            self.d.metadata.deletion_timestamp.is_some(),
            &selector,
            all.items,
            &self.object,
        )
        .await?;
        owned.sort_by(|a, b| {
            (
                &a.metadata.creation_timestamp.as_ref().map(|t| t.0),
                a.name_any(),
            )
                .cmp(&(
                    &b.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    b.name_any(),
                ))
        });
        Ok(owned)
    }

    /// Splits the sets into the new one (the oldest whose template is the Deployment's) and
    /// the others.
    fn split(
        &self,
        sets: Vec<ReplicaSet>,
    ) -> Result<(Option<ReplicaSet>, Vec<ReplicaSet>), ControllerError> {
        let template = self.template()?;
        let mut new = None;
        let mut old = Vec::new();
        for rs in sets {
            let same = rs
                .spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .is_some_and(|t| rollout::equal_ignoring_hash(t, &template));
            if same && new.is_none() {
                new = Some(rs);
            } else {
                old.push(rs);
            }
        }
        Ok((new, old))
    }

    /// Writes changed metadata and spec of a ReplicaSet (optimistically, at its version).
    async fn update_rs(&self, rs: &ReplicaSet) -> Result<ReplicaSet, ControllerError> {
        let patch = json!({
            "metadata": {
                "annotations": rs.metadata.annotations,
                "resourceVersion": rs.metadata.resource_version,
            },
            "spec": {
                "replicas": rs.spec.as_ref().and_then(|s| s.replicas),
                "minReadySeconds": rs.spec.as_ref().and_then(|s| s.min_ready_seconds),
            },
        });
        self.sets
            .patch(
                &rs.name_any(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await
            .map_err(self.err("updating a replicaset"))
    }

    /// Sets a ReplicaSet's size and its desired/max annotations; whether it changed size.
    async fn scale(&self, rs: &mut ReplicaSet, size: i32) -> Result<bool, ControllerError> {
        let from = rollout::rs_replicas(rs);
        let resized = from != size;
        let annotated = rollout::set_replicas_annotations(
            rs,
            self.replicas(),
            self.replicas() + self.max_surge()?,
        );
        if resized || annotated {
            rs.spec.get_or_insert_with(Default::default).replicas = Some(size);
            *rs = self.update_rs(rs).await?;
            if resized {
                let way = if size > from { "up" } else { "down" };
                let note = format!(
                    "Scaled {way} replica set {} from {from} to {size}",
                    rs.name_any()
                );
                tracing::info!(deployment = %self.object, "{note}");
                self.ctx
                    .event(&self.d, "ScalingReplicaSet", "Scaling", note)
                    .await;
            }
        }
        Ok(resized)
    }

    /// Writes the Deployment's revision annotation when it differs.
    async fn sync_revision(&mut self, revision: &str) -> Result<(), ControllerError> {
        let current = self.d.annotations().get(REVISION).map(String::as_str);
        if current == Some(revision) {
            return Ok(());
        }
        let patch = json!({"metadata": {"annotations": {REVISION: revision}}});
        let updated = self
            .deployments
            .patch(
                &self.d.name_any(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await
            .map_err(self.err("setting the revision"))?;
        let status = self.d.status.take();
        self.d = updated;
        self.d.status = status;
        Ok(())
    }

    /// Writes status when it changed.
    async fn write_status(&mut self, status: DeploymentStatus) -> Result<(), ControllerError> {
        if self.d.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let patch = json!({"status": status});
        self.deployments
            .patch_status(
                &self.d.name_any(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await
            .map_err(self.err("updating status"))?;
        self.d.status = Some(status);
        Ok(())
    }

    /// The new ReplicaSet brought up to date (annotations, revision, minReadySeconds), or
    /// created when `create` and there is none. Returns it with the old sets.
    async fn new_and_old(
        &mut self,
        sets: Vec<ReplicaSet>,
        create: bool,
    ) -> Result<(Option<ReplicaSet>, Vec<ReplicaSet>), ControllerError> {
        let (new, old) = self.split(sets)?;
        let max_old = old.iter().map(rollout::revision).max().unwrap_or(0);
        let revision = max_old + 1;
        let min_ready = self.min_ready_seconds();
        if let Some(mut rs) = new {
            let mut changed = rollout::set_new_rs_annotations(&self.d, &mut rs, revision);
            let spec = rs.spec.get_or_insert_with(Default::default);
            if spec.min_ready_seconds.filter(|s| *s > 0) != min_ready {
                spec.min_ready_seconds = min_ready;
                changed = true;
            }
            if changed {
                rs = self.update_rs(&rs).await?;
            }
            let rs_revision = rollout::revision(&rs).to_string();
            self.sync_revision(&rs_revision).await?;
            let mut status = self.status();
            if rollout::progress_deadline(&self.d).is_some()
                && rollout::condition(&status, reason::PROGRESSING).is_none()
            {
                rollout::set_condition(
                    &mut status,
                    rollout::new_condition(
                        reason::PROGRESSING,
                        "True",
                        reason::FOUND_NEW_RS,
                        format!("Found new replica set {:?}", rs.name_any()),
                        self.now,
                    ),
                );
                self.write_status(status).await?;
            }
            return Ok((Some(rs), old));
        }
        if !create {
            return Ok((None, old));
        }
        let rs = self.create_new(&old, revision).await?;
        Ok((Some(rs), old))
    }

    async fn create_new(
        &mut self,
        old: &[ReplicaSet],
        revision: i64,
    ) -> Result<ReplicaSet, ControllerError> {
        let spec = self.d.spec.clone().ok_or_else(|| self.invalid("no spec"))?;
        let collisions = self.status().collision_count;
        let hash = rollout::template_hash(&spec.template, collisions);
        let mut template = spec.template.clone();
        template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(HASH_LABEL.into(), hash.clone());
        let mut selector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(HASH_LABEL.into(), hash.clone());
        let all_replicas: i32 = old.iter().map(rollout::rs_replicas).sum();
        let size = if rollout_is_recreate(&self.d) {
            self.replicas()
        } else {
            rollout::new_rs_replicas_rolling(self.replicas(), self.max_surge()?, all_replicas, 0)
        };
        let name = format!("{}-{hash}", self.d.name_any());
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: self.d.namespace(),
                labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
                owner_references: Some(vec![controller_reference(&self.d)]),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(size),
                min_ready_seconds: self.min_ready_seconds(),
                selector,
                template: Some(template),
            }),
            status: None,
        };
        rollout::set_new_rs_annotations(&self.d, &mut rs, revision);
        rollout::set_replicas_annotations(
            &mut rs,
            self.replicas(),
            self.replicas() + self.max_surge()?,
        );
        let created = match self.sets.create(&PostParams::default(), &rs).await {
            Ok(created) => created,
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // Ours already (a stale list)? Otherwise a hash collision: count it, so the
                // next attempt hashes differently.
                let existing = self
                    .sets
                    .get(&name)
                    .await
                    .map_err(self.err("reading an existing replicaset"))?;
                let ours = controller_uid(&existing.metadata) == self.d.metadata.uid.as_deref();
                let same = existing
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| rollout::equal_ignoring_hash(t, &spec.template));
                if ours && same {
                    existing
                } else {
                    let mut status = self.status();
                    status.collision_count = Some(collisions.unwrap_or(0) + 1);
                    self.write_status(status).await?;
                    return Err(self.invalid(format!(
                        "replica set {name} exists with another template: hash collision"
                    )));
                }
            }
            Err(e) => return Err(self.err("creating a replicaset")(e)),
        };
        if size > 0 {
            let note = format!("Scaled up replica set {name} from 0 to {size}");
            tracing::info!(deployment = %self.object, "{note}");
            self.ctx
                .event(&self.d, "ScalingReplicaSet", "Scaling", note)
                .await;
        }
        self.sync_revision(&revision.to_string()).await?;
        if rollout::progress_deadline(&self.d).is_some() {
            let mut status = self.status();
            rollout::set_condition(
                &mut status,
                rollout::new_condition(
                    reason::PROGRESSING,
                    "True",
                    reason::NEW_RS_CREATED,
                    format!("Created new replica set {name:?}"),
                    self.now,
                ),
            );
            self.write_status(status).await?;
        }
        Ok(created)
    }

    /// Status computed from the sets (conditions carried over, Available set).
    fn calculate_status(
        &self,
        all: &[&ReplicaSet],
        new: Option<&ReplicaSet>,
    ) -> Result<DeploymentStatus, ControllerError> {
        let st = |rs: &ReplicaSet| rs.status.clone().unwrap_or_default();
        let replicas: i32 = all.iter().map(|rs| st(rs).replicas).sum();
        let ready: i32 = all
            .iter()
            .map(|rs| st(rs).ready_replicas.unwrap_or(0))
            .sum();
        let available: i32 = all.iter().map(|rs| rollout::rs_available(rs)).sum();
        let updated = new.map(|rs| st(rs).replicas).unwrap_or(0);
        let mut status = DeploymentStatus {
            observed_generation: self.d.metadata.generation,
            replicas: Some(replicas),
            updated_replicas: Some(updated),
            ready_replicas: Some(ready),
            available_replicas: Some(available),
            unavailable_replicas: Some((replicas - available).max(0)),
            collision_count: self.status().collision_count,
            conditions: self.status().conditions,
            terminating_replicas: None,
        };
        let min_available = self.replicas() - self.max_unavailable()?;
        let c = if available >= min_available {
            rollout::new_condition(
                reason::AVAILABLE,
                "True",
                reason::MIN_AVAILABLE,
                "Deployment has minimum availability.".into(),
                self.now,
            )
        } else {
            rollout::new_condition(
                reason::AVAILABLE,
                "False",
                reason::MIN_UNAVAILABLE,
                "Deployment does not have minimum availability.".into(),
                self.now,
            )
        };
        rollout::set_condition(&mut status, c);
        Ok(status)
    }

    /// Status without touching progress (paused, scaling, deleting).
    async fn sync_status(
        &mut self,
        new: Option<&ReplicaSet>,
        old: &[ReplicaSet],
    ) -> Result<(), ControllerError> {
        let all: Vec<&ReplicaSet> = old.iter().chain(new).collect();
        let status = self.calculate_status(&all, new)?;
        self.write_status(status).await
    }

    /// Status with the Progressing condition moved on (done, progressing, or timed out).
    async fn sync_rollout_status(
        &mut self,
        new: Option<&ReplicaSet>,
        old: &[ReplicaSet],
    ) -> Result<(), ControllerError> {
        let all: Vec<&ReplicaSet> = old.iter().chain(new).collect();
        let mut status = self.calculate_status(&all, new)?;
        let deadline = rollout::progress_deadline(&self.d);
        if deadline.is_none() {
            rollout::remove_condition(&mut status, reason::PROGRESSING);
        }
        let current = rollout::condition(&self.status(), reason::PROGRESSING).cloned();
        let done = status.replicas == status.updated_replicas
            && current.as_ref().and_then(|c| c.reason.as_deref()) == Some(reason::NEW_RS_AVAILABLE);
        let name = new.map(|rs| rs.name_any()).unwrap_or_default();
        if deadline.is_some() && !done {
            if rollout::complete(&self.d, &status) {
                rollout::set_condition(
                    &mut status,
                    rollout::new_condition(
                        reason::PROGRESSING,
                        "True",
                        reason::NEW_RS_AVAILABLE,
                        format!("ReplicaSet {name:?} has successfully progressed."),
                        self.now,
                    ),
                );
            } else if rollout::progressing(&self.d, &status) {
                let mut c = rollout::new_condition(
                    reason::PROGRESSING,
                    "True",
                    reason::RS_UPDATED,
                    format!("ReplicaSet {name:?} is progressing."),
                    self.now,
                );
                if let Some(current) = &current {
                    if current.status == "True" {
                        c.last_transition_time = current.last_transition_time.clone();
                    }
                    rollout::remove_condition(&mut status, reason::PROGRESSING);
                }
                rollout::set_condition(&mut status, c);
            } else if rollout::timed_out(&self.d, &status, self.now) {
                rollout::set_condition(
                    &mut status,
                    rollout::new_condition(
                        reason::PROGRESSING,
                        "False",
                        reason::TIMED_OUT,
                        format!("ReplicaSet {name:?} has timed out progressing."),
                        self.now,
                    ),
                );
            }
        }
        // Look again when the deadline of a rollout still under way would pass.
        if let (Some(secs), Some(c)) = (deadline, rollout::condition(&status, reason::PROGRESSING))
        {
            let settled = matches!(
                c.reason.as_deref(),
                Some(reason::NEW_RS_AVAILABLE | reason::TIMED_OUT)
            );
            if !settled && let Some(t) = &c.last_update_time {
                let at = t.0 + jiff::SignedDuration::from_secs(secs);
                let left = at.duration_since(self.now).as_secs().max(0) + 1;
                self.requeue = self.requeue.min(Duration::from_secs(left.unsigned_abs()));
            }
        }
        self.write_status(status).await
    }

    /// Deletes the oldest old sets with no pods beyond `revisionHistoryLimit`.
    async fn cleanup(&self, old: &[ReplicaSet]) -> Result<(), ControllerError> {
        let Some(limit) = self.d.spec.as_ref().and_then(|s| s.revision_history_limit) else {
            return Ok(());
        };
        let mut alive: Vec<&ReplicaSet> = old
            .iter()
            .filter(|rs| rs.metadata.deletion_timestamp.is_none())
            .collect();
        let excess = alive
            .len()
            .saturating_sub(usize::try_from(limit.max(0)).unwrap_or(0));
        alive.sort_by_key(|rs| {
            (
                rollout::revision(rs),
                rs.metadata.creation_timestamp.as_ref().map(|t| t.0),
            )
        });
        for rs in alive.into_iter().take(excess) {
            let status = rs.status.clone().unwrap_or_default();
            if status.replicas != 0
                || rollout::rs_replicas(rs) != 0
                || rs.metadata.generation > status.observed_generation
            {
                continue;
            }
            match self
                .sets
                .delete(&rs.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(self.err("deleting an old replicaset")(e)),
            }
        }
        Ok(())
    }

    /// A scaling event: some active set was sized for another `spec.replicas`.
    fn is_scaling_event(&self, new: Option<&ReplicaSet>, old: &[ReplicaSet]) -> bool {
        old.iter()
            .chain(new)
            .filter(|rs| rollout::rs_replicas(rs) > 0)
            .any(|rs| {
                rollout::annotation_i32(rs, rollout::DESIRED_REPLICAS)
                    .is_some_and(|desired| desired != self.replicas())
            })
    }

    /// Sizes the sets for the current `spec.replicas` without moving the rollout: all to the
    /// one active (or newest) set, or proportionally across several.
    async fn scale_sets(
        &self,
        new: &mut Option<ReplicaSet>,
        old: &mut [ReplicaSet],
    ) -> Result<(), ControllerError> {
        let replicas = self.replicas();
        let active = |rs: &ReplicaSet| rollout::rs_replicas(rs) > 0;
        let active_count = old.iter().chain(new.iter()).filter(|rs| active(rs)).count();
        // One active set (or none): it takes everything.
        if active_count <= 1 {
            let target: Option<&mut ReplicaSet> = if active_count == 1 {
                old.iter_mut().chain(new.iter_mut()).find(|rs| active(rs))
            } else if new.is_some() {
                new.as_mut()
            } else {
                old.iter_mut()
                    .max_by_key(|rs| rs.metadata.creation_timestamp.as_ref().map(|t| t.0))
            };
            if let Some(rs) = target
                && rollout::rs_replicas(rs) != replicas
            {
                self.scale(rs, replicas).await?;
            }
            return Ok(());
        }
        // The new set is saturated: old ones go.
        if let Some(n) = new.as_ref()
            && rollout::rs_replicas(n) == replicas
            && rollout::rs_available(n) == replicas
            && rollout::annotation_i32(n, rollout::DESIRED_REPLICAS) == Some(replicas)
        {
            for rs in old.iter_mut().filter(|rs| active(rs)) {
                self.scale(rs, 0).await?;
            }
            return Ok(());
        }
        if rollout_is_recreate(&self.d) {
            return Ok(());
        }
        let mut targets: Vec<&mut ReplicaSet> = old
            .iter_mut()
            .chain(new.iter_mut())
            .filter(|rs| active(rs))
            .collect();
        let shares: Vec<Share> = targets
            .iter()
            .map(|rs| Share {
                name: rs.name_any(),
                replicas: rollout::rs_replicas(rs),
                max_replicas: rollout::annotation_i32(rs, rollout::MAX_REPLICAS),
                created: rs.metadata.creation_timestamp.as_ref().map(|t| t.0),
            })
            .collect();
        let sizes = rollout::proportional_sizes(
            replicas,
            self.max_surge()?,
            self.status().replicas.unwrap_or(0),
            &shares,
        );
        for (rs, size) in targets.iter_mut().zip(sizes) {
            self.scale(rs, size).await?;
        }
        Ok(())
    }

    /// Whether pods of the old sets still run (Recreate waits for them to be gone).
    async fn old_pods_running(
        &self,
        new: Option<&ReplicaSet>,
        old: &[ReplicaSet],
    ) -> Result<bool, ControllerError> {
        if old
            .iter()
            .any(|rs| rs.status.as_ref().is_some_and(|s| s.replicas > 0))
        {
            return Ok(true);
        }
        let old_uids: Vec<&str> = old
            .iter()
            .filter_map(|rs| rs.metadata.uid.as_deref())
            .collect();
        let new_uid = new.and_then(|rs| rs.metadata.uid.as_deref());
        let pods = self
            .pods
            .list(&ListParams::default())
            .await
            .map_err(self.err("listing pods"))?;
        Ok(pods.items.iter().any(|p| {
            let owner = controller_uid(&p.metadata);
            owner.is_some_and(|o| old_uids.contains(&o) && Some(o) != new_uid)
                && !apimachinery::scheduling::is_terminal(p)
        }))
    }

    async fn rolling(&mut self, sets: Vec<ReplicaSet>) -> Result<(), ControllerError> {
        let (new, mut old) = self.new_and_old(sets, true).await?;
        let Some(mut new) = new else {
            return Err(self.invalid("no new replica set after creating it"));
        };
        let replicas = self.replicas();
        // Scale the new set up (or down to size).
        let new_size = rollout::rs_replicas(&new);
        let all_replicas: i32 = old.iter().map(rollout::rs_replicas).sum::<i32>() + new_size;
        let target = if new_size > replicas {
            replicas
        } else {
            rollout::new_rs_replicas_rolling(replicas, self.max_surge()?, all_replicas, new_size)
        };
        if target != new_size {
            self.scale(&mut new, target).await?;
            return self.sync_rollout_status(Some(&new), &old).await;
        }
        // Scale old sets down, within availability.
        let sizes_of = |rs: &ReplicaSet| Sizes {
            replicas: rollout::rs_replicas(rs),
            available: rollout::rs_available(rs),
        };
        let mut active: Vec<&mut ReplicaSet> = old
            .iter_mut()
            .filter(|rs| rollout::rs_replicas(rs) > 0)
            .collect();
        let current: Vec<Sizes> = active.iter().map(|rs| sizes_of(rs)).collect();
        let targets =
            rollout::scale_down_old(replicas, self.max_unavailable()?, sizes_of(&new), &current);
        let mut scaled = false;
        for (rs, size) in active.iter_mut().zip(targets) {
            if size != rollout::rs_replicas(rs) {
                self.scale(rs, size).await?;
                scaled = true;
            }
        }
        if scaled {
            return self.sync_rollout_status(Some(&new), &old).await;
        }
        if rollout::complete(&self.d, &self.status()) {
            self.cleanup(&old).await?;
        }
        self.sync_rollout_status(Some(&new), &old).await
    }

    async fn recreate(&mut self, sets: Vec<ReplicaSet>) -> Result<(), ControllerError> {
        let (mut new, mut old) = self.new_and_old(sets, false).await?;
        let mut scaled = false;
        for rs in old.iter_mut().filter(|rs| rollout::rs_replicas(rs) > 0) {
            scaled |= self.scale(rs, 0).await?;
        }
        if scaled {
            self.requeue = self.requeue.min(POD_POLL);
            return self.sync_rollout_status(new.as_ref(), &old).await;
        }
        if self.old_pods_running(new.as_ref(), &old).await? {
            self.requeue = self.requeue.min(POD_POLL);
            return self.sync_rollout_status(new.as_ref(), &old).await;
        }
        if new.is_none() {
            let mut sets = old;
            sets.extend(new);
            (new, old) = self.new_and_old(sets, true).await?;
        }
        if let Some(rs) = new.as_mut()
            && rollout::rs_replicas(rs) != self.replicas()
        {
            let replicas = self.replicas();
            self.scale(rs, replicas).await?;
        }
        if rollout::complete(&self.d, &self.status()) {
            self.cleanup(&old).await?;
        }
        self.sync_rollout_status(new.as_ref(), &old).await
    }

    /// The Progressing condition says Paused or Resumed as `spec.paused` changes.
    async fn paused_conditions(&mut self) -> Result<(), ControllerError> {
        if rollout::progress_deadline(&self.d).is_none() {
            return Ok(());
        }
        let paused = self.d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
        let mut status = self.status();
        let current =
            rollout::condition(&status, reason::PROGRESSING).and_then(|c| c.reason.clone());
        let c = if paused && current.as_deref() != Some(reason::PAUSED) {
            rollout::new_condition(
                reason::PROGRESSING,
                "Unknown",
                reason::PAUSED,
                "Deployment is paused".into(),
                self.now,
            )
        } else if !paused && current.as_deref() == Some(reason::PAUSED) {
            rollout::new_condition(
                reason::PROGRESSING,
                "Unknown",
                reason::RESUMED,
                "Deployment is resumed".into(),
                self.now,
            )
        } else {
            return Ok(());
        };
        rollout::set_condition(&mut status, c);
        self.write_status(status).await
    }
}

fn rollout_is_recreate(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        == Some("Recreate")
}

async fn reconcile(d: Arc<Deployment>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    let ns = d.namespace().unwrap_or_default();
    let object = object_key(d.as_ref());
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    // Work from the stored object, not the cache: status written by the last pass counts.
    let Some(d) = deployments
        .get_opt(&d.name_any())
        .await
        .map_err(api_err(&object, "reading the deployment"))?
    else {
        return Ok(Action::await_change());
    };
    let mut sync = Sync {
        ctx: ctx.clone(),
        d,
        object,
        sets: Api::namespaced(ctx.client.clone(), &ns),
        deployments,
        pods: Api::namespaced(ctx.client.clone(), &ns),
        now: jiff::Timestamp::now(),
        requeue: RESYNC,
    };
    let sets = sync.replica_sets().await?;
    if sync.d.metadata.deletion_timestamp.is_some() {
        let (new, old) = sync.split(sets)?;
        sync.sync_status(new.as_ref(), &old).await?;
        return Ok(Action::await_change());
    }
    sync.paused_conditions().await?;
    let paused = sync.d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
    let scaling = {
        let (new, old) = sync.split(sets.clone())?;
        sync.is_scaling_event(new.as_ref(), &old)
    };
    if paused || scaling {
        let (mut new, mut old) = sync.new_and_old(sets, false).await?;
        sync.scale_sets(&mut new, &mut old).await?;
        if paused {
            sync.cleanup(&old).await?;
        }
        sync.sync_status(new.as_ref(), &old).await?;
        return Ok(Action::requeue(if scaling {
            Duration::from_millis(200)
        } else {
            RESYNC
        }));
    }
    if rollout_is_recreate(&sync.d) {
        sync.recreate(sets).await?;
    } else {
        sync.rolling(sets).await?;
    }
    Ok(Action::requeue(sync.requeue))
}

fn error_policy(_d: Arc<Deployment>, error: &ControllerError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(%error, "deployment reconcile failed; retrying");
    Action::requeue(Duration::from_secs(1))
}

/// Runs the Deployment controller until `shutdown` turns true.
pub async fn run(client: kube::Client, shutdown: tokio::sync::watch::Receiver<bool>) {
    let deployments: Api<Deployment> = Api::all(client.clone());
    let sets: Api<ReplicaSet> = Api::all(client.clone());
    let ctx = Arc::new(Context::new(client, "deployment-controller"));
    Controller::new(deployments, watcher::Config::default())
        .owns(sets, watcher::Config::default())
        .graceful_shutdown_on(shutdown_signal(shutdown))
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "deployment controller");
            }
        })
        .await;
}
