//! The Job controller: runs a Job's pods to completion as upstream's does. Pods carry the
//! `batch.kubernetes.io/job-tracking` finalizer, so a finished pod is counted exactly once
//! (recorded in `status.uncountedTerminatedPods`, finalizer removed, then moved into
//! `succeeded`/`failed`) even if it is deleted meanwhile or the controller restarts.
//! Parallelism and completions (NonIndexed and Indexed, or a work queue without
//! completions), `backoffLimit` with the crash back-off between replacements,
//! `activeDeadlineSeconds`, `suspend`, and `ttlSecondsAfterFinished` (the TTL-after-finished
//! controller's job). The decisions are the pure [`account`] and [`decide`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{Job, JobSpec, JobStatus};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use super::{
    Context, ControllerError, api_err, claim, controller_reference, is_not_found, is_ready,
    object_key, pod_selector, shutdown_signal,
};

/// The finalizer that keeps a pod until its job has counted it.
pub(crate) const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// The annotation (and label) carrying an Indexed job's completion index.
pub(crate) const INDEX_KEY: &str = "batch.kubernetes.io/job-completion-index";
/// Upstream's base and cap for the delay before replacing failed pods.
const BACKOFF_BASE: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(360);

/// What a pod amounts to for its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Still running (or about to).
    Active,
    /// Finished successfully.
    Succeeded,
    /// Failed, or deleted before it succeeded (an orphan that will never report).
    Failed,
    /// Deleted because the job stopped (suspended or finished): not counted either way.
    Removed,
}

/// A pod's outcome; `job_stopping` when the job is suspended or finished, whose deletions are
/// the controller's own and count as nothing.
pub(crate) fn outcome(pod: &Pod, job_stopping: bool) -> Outcome {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Succeeded") => Outcome::Succeeded,
        Some("Failed") => Outcome::Failed,
        _ if pod.metadata.deletion_timestamp.is_some() => {
            if job_stopping {
                Outcome::Removed
            } else {
                Outcome::Failed
            }
        }
        _ => Outcome::Active,
    }
}

fn has_tracking_finalizer(pod: &Pod) -> bool {
    pod.finalizers().iter().any(|f| f == TRACKING_FINALIZER)
}

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

/// A pod's completion index, when it has a valid one.
pub(crate) fn completion_index(pod: &Pod) -> Option<i32> {
    pod.annotations()
        .get(INDEX_KEY)
        .and_then(|i| i.parse().ok())
        .filter(|i| *i >= 0)
}

/// The bookkeeping step: finished pods still holding the tracking finalizer are recorded as
/// uncounted (written to status before any finalizer goes), then released.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Accounting {
    /// Uids of succeeded pods recorded but not yet in `status.succeeded`.
    pub(crate) uncounted_succeeded: BTreeSet<String>,
    /// Uids of failed pods recorded but not yet in `status.failed`.
    pub(crate) uncounted_failed: BTreeSet<String>,
    /// Names of the pods whose tracking finalizer can be removed (once the above is stored).
    pub(crate) release: Vec<String>,
    /// The message of the first `FailJob` rule a newly failed pod matched.
    pub(crate) fail_job: Option<String>,
}

/// Works out [`Accounting`] from the stored status and the job's pods. Failed pods are
/// judged by the job's `podFailurePolicy`: an ignored one is released without being
/// counted, and the first `FailJob` match is returned in `fail_job`.
pub(crate) fn account(
    spec: &JobSpec,
    status: &JobStatus,
    pods: &[Pod],
    job_stopping: bool,
) -> Accounting {
    let stored = status.uncounted_terminated_pods.clone().unwrap_or_default();
    let mut acc = Accounting {
        uncounted_succeeded: stored.succeeded.unwrap_or_default().into_iter().collect(),
        uncounted_failed: stored.failed.unwrap_or_default().into_iter().collect(),
        release: Vec::new(),
        fail_job: None,
    };
    for pod in pods.iter().filter(|p| has_tracking_finalizer(p)) {
        let set = match outcome(pod, job_stopping) {
            Outcome::Active => continue,
            Outcome::Succeeded => Some(&mut acc.uncounted_succeeded),
            Outcome::Failed => match match_failure_policy(spec, pod) {
                Some(PolicyAction::Ignore) => None,
                Some(PolicyAction::FailJob(message)) => {
                    acc.fail_job.get_or_insert(message);
                    Some(&mut acc.uncounted_failed)
                }
                Some(PolicyAction::Count) | None => Some(&mut acc.uncounted_failed),
            },
            Outcome::Removed => None,
        };
        if let Some(set) = set {
            set.insert(uid(pod));
        }
        acc.release.push(pod.name_any());
    }
    acc
}

/// The counters once every uncounted pod has lost its finalizer (or is gone): `succeeded`,
/// `failed` and the completed indexes, with the uncounted lists emptied of those pods.
/// `still_held` are uids whose finalizer could not be removed yet; they stay uncounted.
pub(crate) fn fold_counts(
    status: &JobStatus,
    acc: &Accounting,
    pods: &[Pod],
    still_held: &BTreeSet<String>,
) -> (i32, i32, BTreeSet<i32>, Accounting) {
    let index_of: BTreeMap<String, Option<i32>> =
        pods.iter().map(|p| (uid(p), completion_index(p))).collect();
    let mut succeeded = status.succeeded.unwrap_or(0);
    let mut failed = status.failed.unwrap_or(0);
    let mut completed = parse_indexes(status.completed_indexes.as_deref().unwrap_or(""));
    let mut left = Accounting::default();
    for u in &acc.uncounted_succeeded {
        if still_held.contains(u) {
            left.uncounted_succeeded.insert(u.clone());
            continue;
        }
        match index_of.get(u).copied().flatten() {
            Some(i) => {
                completed.insert(i);
            }
            None => succeeded += 1,
        }
    }
    for u in &acc.uncounted_failed {
        if still_held.contains(u) {
            left.uncounted_failed.insert(u.clone());
        } else {
            failed += 1;
        }
    }
    (succeeded, failed, completed, left)
}

/// Parses `completedIndexes` ("1,3-5").
pub(crate) fn parse_indexes(s: &str) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
            out.extend(a..=b);
        }
    }
    out
}

/// Formats indexes as upstream's `completedIndexes` (ranges of consecutive ones).
pub(crate) fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut run: Option<(i32, i32)> = None;
    for &i in set {
        run = match run {
            Some((a, b)) if i == b + 1 => Some((a, i)),
            Some((a, b)) => {
                parts.push(range(a, b));
                Some((i, i))
            }
            None => Some((i, i)),
        };
    }
    if let Some((a, b)) = run {
        parts.push(range(a, b));
    }
    parts.join(",")
}

fn range(a: i32, b: i32) -> String {
    if a == b {
        a.to_string()
    } else {
        format!("{a}-{b}")
    }
}

/// Why a job failed, as upstream words it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// More failed pods than `backoffLimit`.
    BackoffLimitExceeded,
    /// Active longer than `activeDeadlineSeconds`.
    DeadlineExceeded,
    /// A failed pod matched a `FailJob` rule of `podFailurePolicy` (the message says which).
    PodFailurePolicy(String),
}

impl Failure {
    fn reason(&self) -> &'static str {
        match self {
            Failure::BackoffLimitExceeded => "BackoffLimitExceeded",
            Failure::DeadlineExceeded => "DeadlineExceeded",
            Failure::PodFailurePolicy(_) => "PodFailurePolicy",
        }
    }

    fn message(&self) -> &str {
        match self {
            Failure::BackoffLimitExceeded => "Job has reached the specified backoff limit",
            Failure::DeadlineExceeded => "Job was active longer than specified deadline",
            Failure::PodFailurePolicy(message) => message,
        }
    }
}

/// What a `podFailurePolicy` rule does with a failed pod it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PolicyAction {
    /// Fail the job at once, with this message.
    FailJob(String),
    /// Do not count the failure against `backoffLimit`.
    Ignore,
    /// Count it, as without a policy.
    Count,
}

/// The first rule of the job's `podFailurePolicy` a failed pod matches, as upstream evaluates
/// them: `onExitCodes` against the terminated containers (init containers, then the others;
/// `In` the listed codes, `NotIn` any other non-zero code; `containerName` narrows), or
/// `onPodConditions` against the pod's conditions (status `True` by default). `None` when no
/// rule matches (the failure counts) or the job has no policy.
pub(crate) fn match_failure_policy(spec: &JobSpec, pod: &Pod) -> Option<PolicyAction> {
    let rules = &spec.pod_failure_policy.as_ref()?.rules;
    let status = pod.status.as_ref();
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let terminated: Vec<(&str, i32)> = status
        .into_iter()
        .flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        })
        .filter_map(|c| {
            let t = c.state.as_ref()?.terminated.as_ref()?;
            Some((c.name.as_str(), t.exit_code))
        })
        .collect();
    let conditions: Vec<(&str, &str)> = status
        .into_iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .map(|c| (c.type_.as_str(), c.status.as_str()))
        .collect();
    for (index, rule) in rules.iter().enumerate() {
        let what = if let Some(codes) = &rule.on_exit_codes {
            terminated.iter().find_map(|(container, code)| {
                let named = codes.container_name.as_deref().is_none_or(|n| n == *container);
                let matches = match codes.operator.as_str() {
                    "In" => codes.values.contains(code),
                    "NotIn" => *code != 0 && !codes.values.contains(code),
                    _ => false,
                };
                (named && matches).then(|| {
                    format!(
                        "Container {container} for pod {ns}/{name} failed with exit code {code} matching {} rule at index {index}",
                        rule.action
                    )
                })
            })
        } else {
            rule.on_pod_conditions.iter().flatten().find_map(|pattern| {
                let wanted = pattern.status.as_str();
                conditions
                    .iter()
                    .any(|(kind, truth)| *kind == pattern.type_ && *truth == wanted)
                    .then(|| {
                        format!(
                            "Pod {ns}/{name} has condition {} matching {} rule at index {index}",
                            pattern.type_, rule.action
                        )
                    })
            })
        };
        if let Some(message) = what {
            return Some(match rule.action.as_str() {
                "FailJob" => PolicyAction::FailJob(message),
                "Ignore" => PolicyAction::Ignore,
                // FailIndex needs backoffLimitPerIndex, which this controller does not
                // implement; it counts like Count.
                _ => PolicyAction::Count,
            });
        }
    }
    None
}

/// What the job looks like after accounting, for [`decide`].
#[derive(Debug)]
pub(crate) struct View<'a> {
    pub(crate) spec: &'a JobSpec,
    /// Succeeded pods counted (NonIndexed).
    pub(crate) succeeded: i32,
    /// Failed pods counted, plus restarts of active pods under `restartPolicy: OnFailure`.
    pub(crate) failed: i32,
    /// Completed indexes (Indexed).
    pub(crate) completed: &'a BTreeSet<i32>,
    /// Pods neither finished nor being deleted.
    pub(crate) active: Vec<&'a Pod>,
    /// When the job (last) started running.
    pub(crate) started: Option<Timestamp>,
    /// When the most recent failure happened.
    pub(crate) last_failure: Option<Timestamp>,
    /// A failure already decided (the FailureTarget condition).
    pub(crate) failing: Option<Failure>,
    pub(crate) now: Timestamp,
}

/// What to do.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Decision {
    /// Pods to create: the completion index of each (`None` for NonIndexed jobs).
    pub(crate) create: Vec<Option<i32>>,
    /// Names of pods to delete.
    pub(crate) delete: Vec<String>,
    /// The job has failed (or is failing: pods still to go).
    pub(crate) failure: Option<Failure>,
    /// The job has met its completions.
    pub(crate) complete: bool,
    /// Look again after this long (back-off or deadline).
    pub(crate) requeue: Option<Duration>,
}

fn is_indexed(spec: &JobSpec) -> bool {
    spec.completion_mode.as_deref() == Some("Indexed")
}

/// How many pods have succeeded, in the job's terms.
fn successes(view: &View<'_>) -> i32 {
    if is_indexed(view.spec) {
        i32::try_from(view.completed.len()).unwrap_or(i32::MAX)
    } else {
        view.succeeded
    }
}

/// The delay before replacing pods after `failed` failures: 10 s doubling, at most 6 min.
pub(crate) fn backoff(failed: i32) -> Duration {
    if failed <= 0 {
        return Duration::ZERO;
    }
    let doublings = u32::try_from(failed - 1).unwrap_or(0).min(16);
    BACKOFF_BASE
        .saturating_mul(1u32 << doublings)
        .min(BACKOFF_MAX)
}

fn until(from: Timestamp, after: Duration, now: Timestamp) -> Option<Duration> {
    let at = from + jiff::SignedDuration::try_from(after).unwrap_or_default();
    let left = at.duration_since(now);
    left.is_positive().then(|| left.unsigned_abs())
}

/// The pure decision for a running (not suspended, not finished) job.
pub(crate) fn decide(view: &View<'_>) -> Decision {
    let spec = view.spec;
    let mut d = Decision::default();
    let active_names = || view.active.iter().map(|p| p.name_any()).collect::<Vec<_>>();
    // Failure first: the backoff limit, then the deadline.
    let deadline_left = match (spec.active_deadline_seconds, view.started) {
        (Some(secs), Some(start)) => {
            until(start, Duration::from_secs(secs.max(0) as u64), view.now)
        }
        _ => None,
    };
    let failure = view.failing.clone().or_else(|| {
        if view.failed > spec.backoff_limit.unwrap_or(6) {
            Some(Failure::BackoffLimitExceeded)
        } else if spec.active_deadline_seconds.is_some()
            && view.started.is_some()
            && deadline_left.is_none()
        {
            Some(Failure::DeadlineExceeded)
        } else {
            None
        }
    });
    if let Some(failure) = failure {
        d.failure = Some(failure);
        d.delete = active_names();
        return d;
    }
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let succeeded = successes(view);
    let active = i32::try_from(view.active.len()).unwrap_or(i32::MAX);
    let done = match spec.completions {
        Some(completions) => succeeded >= completions,
        // A work queue: done once one pod succeeded and the others have finished.
        None => succeeded > 0 && active == 0,
    };
    if done {
        d.complete = true;
        d.delete = active_names();
        return d;
    }
    d.requeue = deadline_left;
    // How many should run now.
    let wanted = match spec.completions {
        Some(completions) => parallelism.min(completions - succeeded),
        None if succeeded > 0 => 0,
        None => parallelism,
    }
    .max(0);
    if active > wanted {
        // Surplus (parallelism lowered): not-ready and newest first.
        let mut surplus: Vec<&Pod> = view.active.clone();
        surplus.sort_by_key(|p| {
            (
                is_ready(p),
                std::cmp::Reverse(p.metadata.creation_timestamp.as_ref().map(|t| t.0)),
            )
        });
        d.delete = surplus
            .iter()
            .take(usize::try_from(active - wanted).unwrap_or(0))
            .map(|p| p.name_any())
            .collect();
        return d;
    }
    if active == wanted {
        return d;
    }
    // Replacements after failures wait out the back-off.
    if let Some(last) = view.last_failure
        && let Some(left) = until(last, backoff(view.failed), view.now)
    {
        d.requeue = Some(d.requeue.map_or(left, |r| r.min(left)));
        return d;
    }
    let missing = usize::try_from(wanted - active).unwrap_or(0);
    if is_indexed(spec) {
        let running: BTreeSet<i32> = view
            .active
            .iter()
            .filter_map(|p| completion_index(p))
            .collect();
        let completions = spec.completions.unwrap_or(0);
        d.create = (0..completions)
            .filter(|i| !view.completed.contains(i) && !running.contains(i))
            .take(missing)
            .map(Some)
            .collect();
    } else {
        d.create = vec![None; missing];
    }
    d
}

/// The pod a job creates, for `index` when it is Indexed.
fn new_pod(job: &Job, index: Option<i32>) -> Result<Pod, ControllerError> {
    let template = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .ok_or_else(|| ControllerError::Invalid {
            object: object_key(job),
            why: "no pod template".into(),
        })?;
    let meta = template.metadata.unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    let mut finalizers = meta.finalizers.unwrap_or_default();
    finalizers.push(TRACKING_FINALIZER.into());
    let mut spec = template.spec.unwrap_or_default();
    let mut generate_name = format!("{}-", job.name_any());
    if let Some(i) = index {
        labels.insert(INDEX_KEY.into(), i.to_string());
        annotations.insert(INDEX_KEY.into(), i.to_string());
        generate_name = format!("{}-{i}-", job.name_any());
        if spec.hostname.as_deref().is_none_or(str::is_empty) {
            spec.hostname = Some(format!("{}-{i}", job.name_any()));
        }
        let env = EnvVar {
            name: "JOB_COMPLETION_INDEX".into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    api_version: None,
                    field_path: format!("metadata.annotations['{INDEX_KEY}']"),
                }),
                ..Default::default()
            }),
        };
        let containers = spec
            .containers
            .iter_mut()
            .chain(spec.init_containers.iter_mut().flatten());
        for c in containers {
            let vars = c.env.get_or_insert_with(Vec::new);
            if !vars.iter().any(|v| v.name == env.name) {
                vars.push(env.clone());
            }
        }
    }
    Ok(Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name),
            namespace: job.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            finalizers: Some(finalizers),
            owner_references: Some(vec![controller_reference(job)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    })
}

fn condition_true(status: &JobStatus, kind: &str) -> bool {
    status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == kind && c.status == "True")
}

/// The time a finished job finished: its completion time, or when it was marked failed.
fn finished_at(status: &JobStatus) -> Option<Timestamp> {
    status.completion_time.as_ref().map(|t| t.0).or_else(|| {
        status
            .conditions
            .iter()
            .flatten()
            .find(|c| matches!(c.type_.as_str(), "Complete" | "Failed") && c.status == "True")
            .and_then(|c| c.last_transition_time.as_ref().map(|t| t.0))
    })
}

/// The already decided failure (a FailureTarget condition), if any.
fn failing(status: &JobStatus) -> Option<Failure> {
    let c = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "FailureTarget" && c.status == "True")?;
    Some(match c.reason.as_deref() {
        Some("DeadlineExceeded") => Failure::DeadlineExceeded,
        Some("PodFailurePolicy") => {
            Failure::PodFailurePolicy(c.message.clone().unwrap_or_default())
        }
        _ => Failure::BackoffLimitExceeded,
    })
}

/// When a failed pod last failed: its containers' finish times, else its last condition.
fn failed_at(pod: &Pod) -> Option<Timestamp> {
    let status = pod.status.as_ref()?;
    let finished = status
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max();
    finished.or_else(|| {
        status
            .conditions
            .iter()
            .flatten()
            .filter_map(|c| c.last_transition_time.as_ref().map(|t| t.0))
            .max()
    })
}

/// Restarts of a pod's containers (failures under `restartPolicy: OnFailure`).
fn restarts(pod: &Pod) -> i32 {
    pod.status
        .iter()
        .flat_map(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
        })
        .map(|c| c.restart_count)
        .sum()
}

/// A condition as the status patch writes it (kept if already there with that status).
fn condition(
    status: &JobStatus,
    kind: &str,
    truth: &str,
    reason: &str,
    message: &str,
) -> serde_json::Value {
    let now = Timestamp::now().to_string();
    let since = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == kind && c.status == truth)
        .and_then(|c| c.last_transition_time.as_ref().map(|t| t.0.to_string()))
        .unwrap_or_else(|| now.clone());
    json!({"type": kind, "status": truth, "reason": reason, "message": message,
           "lastProbeTime": now, "lastTransitionTime": since})
}

/// Conditions as they will be: `updates` replace those of the same type.
fn merged_conditions(status: &JobStatus, updates: Vec<serde_json::Value>) -> serde_json::Value {
    let mut out: Vec<serde_json::Value> = status
        .conditions
        .iter()
        .flatten()
        .filter(|c| !updates.iter().any(|u| u["type"] == c.type_.as_str()))
        .filter_map(|c| serde_json::to_value(c).ok())
        .collect();
    out.extend(updates);
    serde_json::Value::Array(out)
}

async fn delete_pods(
    ctx: &Context,
    job: &Job,
    pods: &Api<Pod>,
    names: &[String],
    object: &str,
) -> Result<(), ControllerError> {
    for name in names {
        match pods.delete(name, &DeleteParams::default()).await {
            Ok(_) => {
                ctx.event(
                    job,
                    "SuccessfulDelete",
                    "Delete",
                    format!("Deleted pod: {name}"),
                )
                .await;
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(api_err(object, "deleting a pod")(e)),
        }
    }
    Ok(())
}

/// Removes the tracking finalizer from `names`; returns the uids of pods that still hold it.
/// The patch is conditional on the pod's resourceVersion (other finalizers are kept as they
/// are); a conflict with a concurrent write, such as the node agent's status, reads the pod
/// again and retries.
async fn release(
    pods_api: &Api<Pod>,
    pods: &[Pod],
    names: &[String],
    object: &str,
) -> Result<BTreeSet<String>, ControllerError> {
    let mut held = BTreeSet::new();
    for pod in pods.iter().filter(|p| names.contains(&p.name_any())) {
        let mut current = pod.clone();
        let mut released = false;
        for _attempt in 0..3 {
            let Some(at) = current
                .finalizers()
                .iter()
                .position(|f| f == TRACKING_FINALIZER)
            else {
                released = true;
                break;
            };
            let mut kept = current.finalizers().to_vec();
            kept.remove(at);
            let patch = Patch::Merge(json!({"metadata": {
                "finalizers": kept, "resourceVersion": current.metadata.resource_version}}));
            let name = pod.name_any();
            match pods_api.patch(&name, &PatchParams::default(), &patch).await {
                Ok(_) => {
                    released = true;
                    break;
                }
                Err(e) if is_not_found(&e) => {
                    released = true;
                    break;
                }
                Err(kube::Error::Api(s)) if s.code == 409 => match pods_api.get_opt(&name).await {
                    Ok(Some(fresh)) => current = fresh,
                    Ok(None) => {
                        released = true;
                        break;
                    }
                    Err(e) => return Err(api_err(object, "reading a pod")(e)),
                },
                Err(e) => return Err(api_err(object, "removing a pod's tracking finalizer")(e)),
            }
        }
        if !released {
            held.insert(uid(pod));
        }
    }
    Ok(held)
}

async fn reconcile(cached: Arc<Job>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    let ns = cached.namespace().unwrap_or_default();
    let object = object_key(cached.as_ref());
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    // The counts must be the stored ones: a cached copy older than this controller's last
    // write would count finished pods again, or replace a pod that already succeeded.
    let job = match jobs.get_opt(&cached.name_any()).await {
        Ok(Some(job)) => Arc::new(job),
        Ok(None) => return Ok(Action::await_change()),
        Err(e) => return Err(api_err(&object, "reading the job")(e)),
    };
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let spec = job.spec.clone().unwrap_or_default();
    let status = job.status.clone().unwrap_or_default();
    let finished = condition_true(&status, "Complete") || condition_true(&status, "Failed");
    let suspended = spec.suspend == Some(true);

    // The TTL-after-finished controller's part.
    if finished
        && job.metadata.deletion_timestamp.is_none()
        && let (Some(ttl), Some(at)) = (spec.ttl_seconds_after_finished, finished_at(&status))
    {
        match until(at, Duration::from_secs(ttl.max(0) as u64), Timestamp::now()) {
            Some(left) => return Ok(Action::requeue(left + Duration::from_millis(100))),
            None => {
                let foreground = DeleteParams::foreground();
                match jobs.delete(&job.name_any(), &foreground).await {
                    Ok(_) => return Ok(Action::await_change()),
                    Err(e) if is_not_found(&e) => return Ok(Action::await_change()),
                    Err(e) => return Err(api_err(&object, "deleting a finished job")(e)),
                }
            }
        }
    }

    let selector = pod_selector(spec.selector.as_ref(), &object)?;
    let listed = pods_api
        .list(&ListParams::default())
        .await
        .map_err(api_err(&object, "listing pods"))?;
    let pods = claim(
        &pods_api,
        controller_reference(job.as_ref()),
        job.metadata.deletion_timestamp.is_some(),
        &selector,
        listed.items,
        &object,
    )
    .await?;

    // Count finished pods exactly once: record, release, fold.
    let stopping = finished || suspended;
    let acc = account(&spec, &status, &pods, stopping);
    let stored = status.uncounted_terminated_pods.clone().unwrap_or_default();
    let stored_s: BTreeSet<String> = stored.succeeded.unwrap_or_default().into_iter().collect();
    let stored_f: BTreeSet<String> = stored.failed.unwrap_or_default().into_iter().collect();
    if acc.uncounted_succeeded != stored_s || acc.uncounted_failed != stored_f {
        let patch = json!({"status": {"uncountedTerminatedPods": {
            "succeeded": acc.uncounted_succeeded, "failed": acc.uncounted_failed}}});
        jobs.patch_status(
            &job.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
        .map_err(api_err(&object, "recording finished pods"))?;
    }
    let held = release(&pods_api, &pods, &acc.release, &object).await?;
    let (succeeded, failed, completed, left) = fold_counts(&status, &acc, &pods, &held);

    let active: Vec<&Pod> = pods
        .iter()
        .filter(|p| outcome(p, false) == Outcome::Active)
        .collect();
    let terminating = pods
        .iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_some() && !apimachinery::scheduling::is_terminal(p)
        })
        .count();
    let on_failure = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        == Some("OnFailure");
    let restarted: i32 = if on_failure {
        active.iter().map(|p| restarts(p)).sum()
    } else {
        0
    };
    let mut start = status.start_time.as_ref().map(|t| t.0);
    let mut conditions = Vec::new();
    let mut completion_time = status.completion_time.as_ref().map(|t| t.0.to_string());
    let mut requeue = None;

    if finished {
        // Only bookkeeping is left (done above).
    } else if suspended {
        let names: Vec<String> = active.iter().map(|p| p.name_any()).collect();
        delete_pods(&ctx, &job, &pods_api, &names, &object).await?;
        if !condition_true(&status, "Suspended") {
            conditions.push(condition(
                &status,
                "Suspended",
                "True",
                "JobSuspended",
                "Job suspended",
            ));
            ctx.event(job.as_ref(), "Suspended", "Suspend", "Job suspended".into())
                .await;
        }
        start = None;
    } else {
        if condition_true(&status, "Suspended") {
            conditions.push(condition(
                &status,
                "Suspended",
                "False",
                "JobResumed",
                "Job resumed",
            ));
            ctx.event(job.as_ref(), "Resumed", "Resume", "Job resumed".into())
                .await;
            start = None;
        }
        let now = Timestamp::now();
        let start_time = *start.get_or_insert(now);
        let last_failure = pods
            .iter()
            .filter(|p| outcome(p, false) == Outcome::Failed)
            .filter_map(failed_at)
            .max();
        // Finished pods still holding their finalizer count for the decision, so they are
        // not replaced (they stay uncounted in status until released).
        let mut decided_completed = completed.clone();
        let mut decided_succeeded = succeeded;
        for p in pods
            .iter()
            .filter(|p| left.uncounted_succeeded.contains(&uid(p)))
        {
            match completion_index(p) {
                Some(i) => {
                    decided_completed.insert(i);
                }
                None => decided_succeeded += 1,
            }
        }
        let held_failed = i32::try_from(left.uncounted_failed.len()).unwrap_or(0);
        let view = View {
            spec: &spec,
            succeeded: decided_succeeded,
            failed: failed + held_failed + restarted,
            completed: &decided_completed,
            active: active.clone(),
            started: Some(start_time),
            last_failure,
            failing: failing(&status)
                .or_else(|| acc.fail_job.clone().map(Failure::PodFailurePolicy)),
            now,
        };
        let decision = decide(&view);
        delete_pods(&ctx, &job, &pods_api, &decision.delete, &object).await?;
        for index in &decision.create {
            let created = pods_api
                .create(&PostParams::default(), &new_pod(&job, *index)?)
                .await
                .map_err(api_err(&object, "creating a pod"))?;
            let note = format!("Created pod: {}", created.name_any());
            ctx.event(job.as_ref(), "SuccessfulCreate", "Create", note)
                .await;
        }
        // Pods deleted now are still running: the terminal condition waits for them.
        let still_running = terminating + decision.delete.len();
        if let Some(failure) = &decision.failure {
            let (reason, message) = (failure.reason(), failure.message());
            conditions.push(condition(&status, "FailureTarget", "True", reason, message));
            if still_running == 0 {
                conditions.push(condition(&status, "Failed", "True", reason, message));
                ctx.warning(job.as_ref(), reason, "Fail", message.into())
                    .await;
            }
        } else if decision.complete {
            let message = "Reached expected number of succeeded pods";
            conditions.push(condition(
                &status,
                "SuccessCriteriaMet",
                "True",
                "CompletionsReached",
                message,
            ));
            if still_running == 0 {
                conditions.push(condition(
                    &status,
                    "Complete",
                    "True",
                    "CompletionsReached",
                    message,
                ));
                completion_time = Some(now.to_string());
                ctx.event(
                    job.as_ref(),
                    "Completed",
                    "Complete",
                    "Job completed".into(),
                )
                .await;
            }
        }
        requeue = decision.requeue;
    }

    let ready = active.iter().filter(|p| is_ready(p)).count();
    let indexed = is_indexed(&spec);
    let patch = json!({"status": {
        "active": active.len(),
        "ready": ready,
        "terminating": terminating,
        "succeeded": if indexed { i32::try_from(completed.len()).unwrap_or(i32::MAX) } else { succeeded },
        "failed": failed,
        "completedIndexes": if indexed { json!(format_indexes(&completed)) } else { json!(null) },
        "uncountedTerminatedPods": {"succeeded": left.uncounted_succeeded, "failed": left.uncounted_failed},
        "startTime": start.map(|t| t.to_string()),
        "completionTime": completion_time,
        "conditions": if conditions.is_empty() { json!(null) } else { merged_conditions(&status, conditions) },
    }});
    let mut patch = patch;
    if let Some(s) = patch["status"].as_object_mut() {
        // Absent means "leave as it is" in a merge patch; null would clear.
        s.retain(|k, v| !(v.is_null() && k == "conditions"));
    }
    jobs.patch_status(
        &job.name_any(),
        &PatchParams::default(),
        &Patch::Merge(patch),
    )
    .await
    .map_err(api_err(&object, "updating status"))?;
    // Finished pods not yet folded in (a conflict on their finalizer) need another look.
    if !left.uncounted_succeeded.is_empty() || !left.uncounted_failed.is_empty() {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    Ok(match requeue {
        Some(d) => Action::requeue(d + Duration::from_millis(100)),
        None if finished && spec.ttl_seconds_after_finished.is_none() => Action::await_change(),
        None => Action::requeue(Duration::from_secs(300)),
    })
}

fn error_policy(_job: Arc<Job>, error: &ControllerError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(%error, "job reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// Whether `pod` holds the tracking finalizer for a job that no longer exists (deleted in
/// the background, so no reconcile of it will ever release the pod).
async fn orphaned(client: &kube::Client, pod: &Pod) -> bool {
    if !has_tracking_finalizer(pod) {
        return false;
    }
    let Some(owner) = pod
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == "Job")
    else {
        return true;
    };
    let jobs: Api<Job> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    match jobs.get_opt(&owner.name).await {
        Ok(Some(job)) => job.metadata.uid.as_deref() != Some(owner.uid.as_str()),
        Ok(None) => true,
        Err(_) => false,
    }
}

/// Releases pods whose job is gone, as upstream's controller does from its pod handler:
/// watches job pods (by the label every job template gets) and drops the finalizer of those
/// being deleted or finished whose owner no longer exists.
async fn release_orphans(client: kube::Client, shutdown: tokio::sync::watch::Receiver<bool>) {
    let pods: Api<Pod> = Api::all(client.clone());
    let config = watcher::Config::default().labels("batch.kubernetes.io/controller-uid");
    let events = watcher::watcher(pods, config)
        .default_backoff()
        .take_until(shutdown_signal(shutdown));
    futures::pin_mut!(events);
    while let Some(event) = events.next().await {
        let pod = match event {
            Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => pod,
            Ok(_) => continue,
            Err(error) => {
                tracing::debug!(%error, "watching job pods");
                continue;
            }
        };
        let done = pod.metadata.deletion_timestamp.is_some()
            || apimachinery::scheduling::is_terminal(&pod);
        if done && orphaned(&client, &pod).await {
            let api: Api<Pod> =
                Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
            let object = object_key(&pod);
            if let Err(error) =
                release(&api, std::slice::from_ref(&pod), &[pod.name_any()], &object).await
            {
                tracing::warn!(%error, pod = %object, "releasing an orphaned job pod");
            }
        }
    }
}

/// Runs the Job controller until `shutdown` turns true.
pub async fn run(client: kube::Client, shutdown: tokio::sync::watch::Receiver<bool>) {
    let jobs: Api<Job> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let orphans = tokio::spawn(release_orphans(client.clone(), shutdown.clone()));
    let ctx = Arc::new(Context::new(client, "job-controller"));
    Controller::new(jobs, watcher::Config::default())
        .owns(pods, watcher::Config::default())
        .graceful_shutdown_on(shutdown_signal(shutdown))
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "job controller");
            }
        })
        .await;
    let _ = orphans.await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::UncountedTerminatedPods;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStatus, PodCondition, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn pod(name: &str, phase: &str, index: Option<i32>) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.uid = Some(format!("uid-{name}"));
        p.metadata.finalizers = Some(vec![TRACKING_FINALIZER.into()]);
        if let Some(i) = index {
            p.metadata.annotations = Some([(INDEX_KEY.to_string(), i.to_string())].into());
        }
        p.status = Some(PodStatus {
            phase: Some(phase.into()),
            ..Default::default()
        });
        p
    }

    fn deleting(mut p: Pod) -> Pod {
        p.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        p
    }

    fn spec(completions: Option<i32>, parallelism: i32) -> JobSpec {
        JobSpec {
            completions,
            parallelism: Some(parallelism),
            backoff_limit: Some(2),
            ..Default::default()
        }
    }

    fn view<'a>(spec: &'a JobSpec, completed: &'a BTreeSet<i32>, active: Vec<&'a Pod>) -> View<'a> {
        View {
            spec,
            succeeded: 0,
            failed: 0,
            completed,
            active,
            started: Some(Timestamp::now()),
            last_failure: None,
            failing: None,
            now: Timestamp::now(),
        }
    }

    /// A failed pod whose container `main` exited with `code`, with a DisruptionTarget
    /// condition when `disrupted`.
    fn failed_with(name: &str, code: i32, disrupted: bool) -> Pod {
        let mut p = pod(name, "Failed", None);
        p.metadata.namespace = Some("ns".into());
        let status = p.status.as_mut().unwrap();
        status.container_statuses = Some(vec![ContainerStatus {
            name: "main".into(),
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: code,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        if disrupted {
            status.conditions = Some(vec![PodCondition {
                type_: "DisruptionTarget".into(),
                status: "True".into(),
                ..Default::default()
            }]);
        }
        p
    }

    fn with_policy(rules: serde_json::Value) -> JobSpec {
        let mut spec = spec(Some(3), 1);
        spec.pod_failure_policy = Some(serde_json::from_value(json!({"rules": rules})).unwrap());
        spec
    }

    #[test]
    fn pod_failure_policy_rules_match_in_order_as_upstream() {
        let spec = with_policy(json!([
            {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [1]}},
        ]));
        assert_eq!(
            match_failure_policy(&spec, &failed_with("p", 42, true)),
            Some(PolicyAction::FailJob(
                "Container main for pod ns/p failed with exit code 42 matching FailJob rule at index 0".into()
            ))
        );
        assert_eq!(
            match_failure_policy(&spec, &failed_with("p", 1, true)),
            Some(PolicyAction::Ignore)
        );
        assert_eq!(
            match_failure_policy(&spec, &failed_with("p", 7, false)),
            Some(PolicyAction::Count)
        );
        // Exit code 1 is excluded by NotIn and nothing else matches.
        assert_eq!(
            match_failure_policy(&spec, &failed_with("p", 1, false)),
            None
        );
        // A container name narrows the rule.
        let other = with_policy(json!([
            {"action": "FailJob", "onExitCodes": {"containerName": "side", "operator": "In", "values": [42]}},
        ]));
        assert_eq!(
            match_failure_policy(&other, &failed_with("p", 42, false)),
            None
        );
        // No policy: nothing matches.
        assert_eq!(
            match_failure_policy(&JobSpec::default(), &failed_with("p", 42, false)),
            None
        );
        let by_condition = with_policy(json!([
            {"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]));
        assert_eq!(
            match_failure_policy(&by_condition, &failed_with("p", 1, true)),
            Some(PolicyAction::FailJob(
                "Pod ns/p has condition DisruptionTarget matching FailJob rule at index 0".into()
            ))
        );
    }

    #[test]
    fn ignored_failures_are_released_uncounted_and_fail_job_is_reported() {
        let spec = with_policy(json!([
            {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [3]}},
            {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}},
        ]));
        let pods = vec![
            failed_with("ignored", 3, false),
            failed_with("counted", 1, false),
        ];
        let acc = account(&spec, &JobStatus::default(), &pods, false);
        assert_eq!(acc.uncounted_failed, ["uid-counted".to_string()].into());
        assert_eq!(acc.release.len(), 2, "both finalizers go");
        assert_eq!(acc.fail_job, None);
        let pods = vec![failed_with("fatal", 42, false)];
        let acc = account(&spec, &JobStatus::default(), &pods, false);
        assert!(
            acc.fail_job
                .as_deref()
                .is_some_and(|m| m.contains("matching FailJob rule at index 1"))
        );
        // The decision then fails the job with reason PodFailurePolicy and stops the rest.
        let running = pod("r", "Running", None);
        let completed = BTreeSet::new();
        let mut v = view(&spec, &completed, vec![&running]);
        v.failing = acc.fail_job.clone().map(Failure::PodFailurePolicy);
        let d = decide(&v);
        assert_eq!(
            d.failure.as_ref().map(Failure::reason),
            Some("PodFailurePolicy")
        );
        assert_eq!(d.delete, ["r"]);
    }

    #[test]
    fn finished_pods_are_recorded_before_release_and_counted_once() {
        let pods = vec![
            pod("a", "Succeeded", None),
            pod("b", "Failed", None),
            pod("c", "Running", None),
            deleting(pod("d", "Running", None)),
        ];
        let acc = account(&JobSpec::default(), &JobStatus::default(), &pods, false);
        assert_eq!(acc.uncounted_succeeded, ["uid-a".to_string()].into());
        assert_eq!(
            acc.uncounted_failed,
            ["uid-b".to_string(), "uid-d".to_string()].into()
        );
        assert_eq!(acc.release, vec!["a", "b", "d"]);
        let status = JobStatus {
            succeeded: Some(2),
            failed: Some(1),
            ..Default::default()
        };
        // One finalizer could not go yet: that pod stays uncounted.
        let held: BTreeSet<String> = ["uid-d".to_string()].into();
        let (s, f, _, left) = fold_counts(&status, &acc, &pods, &held);
        assert_eq!((s, f), (3, 2));
        assert_eq!(left.uncounted_failed, held);
        assert!(left.uncounted_succeeded.is_empty());
    }

    #[test]
    fn uncounted_pods_already_gone_are_still_counted() {
        // A crash between releasing finalizers and folding: the pods are gone.
        let status = JobStatus {
            succeeded: Some(1),
            uncounted_terminated_pods: Some(UncountedTerminatedPods {
                succeeded: Some(vec!["gone".into()]),
                failed: None,
            }),
            ..Default::default()
        };
        let acc = account(&JobSpec::default(), &status, &[], false);
        let (s, f, _, left) = fold_counts(&status, &acc, &[], &BTreeSet::new());
        assert_eq!((s, f), (2, 0));
        assert_eq!(left, Accounting::default());
    }

    #[test]
    fn a_stopping_job_releases_deleted_pods_without_counting_them() {
        let pods = vec![deleting(pod("d", "Running", None))];
        let acc = account(&JobSpec::default(), &JobStatus::default(), &pods, true);
        assert!(acc.uncounted_failed.is_empty());
        assert_eq!(acc.release, vec!["d"]);
    }

    #[test]
    fn indexes_round_trip_as_ranges() {
        let set = parse_indexes("0,2-4,7");
        assert_eq!(set, [0, 2, 3, 4, 7].into());
        assert_eq!(format_indexes(&set), "0,2-4,7");
        assert_eq!(format_indexes(&BTreeSet::new()), "");
    }

    #[test]
    fn pods_are_created_up_to_parallelism_and_remaining_completions() {
        let s = spec(Some(5), 2);
        let none = BTreeSet::new();
        assert_eq!(decide(&view(&s, &none, vec![])).create.len(), 2);
        let mut v = view(&s, &none, vec![]);
        v.succeeded = 4;
        assert_eq!(decide(&v).create.len(), 1);
        v.succeeded = 5;
        let d = decide(&v);
        assert!(d.complete && d.create.is_empty());
    }

    #[test]
    fn a_work_queue_completes_when_one_pod_succeeded_and_none_runs() {
        let s = spec(None, 3);
        let none = BTreeSet::new();
        let running = pod("r", "Running", None);
        let mut v = view(&s, &none, vec![&running]);
        v.succeeded = 1;
        let d = decide(&v);
        assert!(!d.complete && d.create.is_empty(), "{d:?}");
        let mut v = view(&s, &none, vec![]);
        v.succeeded = 1;
        assert!(decide(&v).complete);
    }

    #[test]
    fn indexed_jobs_create_the_lowest_missing_indexes() {
        let s = JobSpec {
            completion_mode: Some("Indexed".into()),
            ..spec(Some(4), 2)
        };
        let completed: BTreeSet<i32> = [0].into();
        let running = pod("r", "Running", Some(1));
        let d = decide(&view(&s, &completed, vec![&running]));
        assert_eq!(d.create, vec![Some(2)]);
        let all: BTreeSet<i32> = [0, 1, 2, 3].into();
        assert!(decide(&view(&s, &all, vec![])).complete);
    }

    #[test]
    fn too_many_failures_fail_the_job_and_stop_its_pods() {
        let s = spec(Some(3), 1);
        let none = BTreeSet::new();
        let running = pod("r", "Running", None);
        let mut v = view(&s, &none, vec![&running]);
        v.failed = 3;
        let d = decide(&v);
        assert_eq!(d.failure, Some(Failure::BackoffLimitExceeded));
        assert_eq!(d.delete, vec!["r"]);
        assert!(d.create.is_empty());
    }

    #[test]
    fn the_deadline_fails_the_job() {
        let s = JobSpec {
            active_deadline_seconds: Some(10),
            ..spec(Some(1), 1)
        };
        let none = BTreeSet::new();
        let mut v = view(&s, &none, vec![]);
        v.started = Some(Timestamp::now() - jiff::SignedDuration::from_secs(11));
        assert_eq!(decide(&v).failure, Some(Failure::DeadlineExceeded));
        v.started = Some(Timestamp::now() - jiff::SignedDuration::from_secs(5));
        let d = decide(&v);
        assert_eq!(d.failure, None);
        assert!(d.requeue.is_some_and(|r| r <= Duration::from_secs(6)));
    }

    #[test]
    fn replacements_wait_out_the_backoff() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::from_secs(10));
        assert_eq!(backoff(3), Duration::from_secs(40));
        assert_eq!(backoff(40), Duration::from_secs(360));
        let s = spec(Some(1), 1);
        let none = BTreeSet::new();
        let mut v = view(&s, &none, vec![]);
        v.failed = 1;
        v.last_failure = Some(Timestamp::now() - jiff::SignedDuration::from_secs(3));
        let d = decide(&v);
        assert!(d.create.is_empty());
        assert!(d.requeue.is_some_and(|r| r > Duration::from_secs(5)));
        v.last_failure = Some(Timestamp::now() - jiff::SignedDuration::from_secs(11));
        assert_eq!(decide(&v).create.len(), 1);
    }

    #[test]
    fn lowering_parallelism_deletes_the_surplus() {
        let s = spec(Some(10), 1);
        let none = BTreeSet::new();
        let (a, b) = (pod("a", "Running", None), pod("b", "Running", None));
        let d = decide(&view(&s, &none, vec![&a, &b]));
        assert_eq!(d.delete.len(), 1);
        assert!(d.create.is_empty());
    }

    #[test]
    fn indexed_pods_carry_their_index() {
        let mut job = Job::default();
        job.metadata.name = Some("pi".into());
        job.metadata.uid = Some("u".into());
        job.spec = Some(JobSpec {
            template: k8s_openapi::api::core::v1::PodTemplateSpec {
                spec: Some(k8s_openapi::api::core::v1::PodSpec {
                    containers: vec![Default::default()],
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        });
        let p = new_pod(&job, Some(3)).expect("pod");
        assert_eq!(p.metadata.generate_name.as_deref(), Some("pi-3-"));
        assert_eq!(completion_index(&p), Some(3));
        let spec = p.spec.expect("spec");
        assert_eq!(spec.hostname.as_deref(), Some("pi-3"));
        let env = spec.containers[0].env.clone().unwrap_or_default();
        assert_eq!(env[0].name, "JOB_COMPLETION_INDEX");
        assert!(
            p.metadata
                .finalizers
                .unwrap_or_default()
                .contains(&TRACKING_FINALIZER.to_string())
        );
    }
}
