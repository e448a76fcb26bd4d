//! The CronJob controller: creates a Job from `jobTemplate` at each time the schedule fires
//! in the CronJob's `timeZone` (UTC when unset), named `<cronjob>-<minutes since the epoch>`
//! so a run is created once however often it is reconciled. `startingDeadlineSeconds`,
//! `concurrencyPolicy` (Allow, Forbid, Replace), `suspend`, `status.active`,
//! `lastScheduleTime`, `lastSuccessfulTime`, and the successful/failed history limits. The
//! decision is the pure [`decide`]; the schedule arithmetic is `apimachinery::cron`.

use std::sync::Arc;
use std::time::Duration;

use apimachinery::cron::Schedule;
use futures::StreamExt;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;

use super::{
    Context, ControllerError, api_err, controller_reference, controller_uid, is_not_found,
    object_key, shutdown_signal,
};

/// The annotation recording when a job was scheduled (RFC 3339 in the CronJob's zone).
const SCHEDULED_AT: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Upstream stops counting missed starts here and warns.
const MISSED_LIMIT: usize = 100;

/// What the schedule says now.
#[derive(Debug, PartialEq)]
pub(crate) enum Decision {
    /// Nothing is due; look again after this long (`None`: the schedule never fires again).
    Wait(Option<Duration>),
    /// Start the run scheduled at `at`; `replace`: delete the running jobs first.
    Start {
        at: Timestamp,
        replace: bool,
        /// More than upstream's limit of starts were missed.
        many_missed: bool,
        next: Option<Duration>,
    },
    /// The run at `at` is due but a job still runs and the policy is Forbid.
    Forbidden { next: Option<Duration> },
    /// The run at `at` is past its starting deadline.
    TooLate {
        at: Timestamp,
        next: Option<Duration>,
    },
}

/// What [`decide`] looks at.
#[derive(Debug)]
pub(crate) struct View<'a> {
    pub(crate) schedule: &'a Schedule,
    pub(crate) tz: &'a TimeZone,
    pub(crate) created: Timestamp,
    pub(crate) last_scheduled: Option<Timestamp>,
    pub(crate) starting_deadline_seconds: Option<i64>,
    pub(crate) policy: &'a str,
    pub(crate) running_jobs: usize,
    pub(crate) now: Timestamp,
}

/// The pure decision for a CronJob that is not suspended.
pub(crate) fn decide(v: &View<'_>) -> Decision {
    let next = v
        .schedule
        .next_after(v.now, v.tz)
        .map(|n| n.duration_since(v.now).unsigned_abs());
    let mut earliest = v.last_scheduled.unwrap_or(v.created);
    if let Some(deadline) = v.starting_deadline_seconds {
        let bound = v.now - jiff::SignedDuration::from_secs(deadline.max(0));
        earliest = earliest.max(bound);
    }
    let (due, missed) = v.schedule.last_between(earliest, v.now, v.tz, MISSED_LIMIT);
    let Some(at) = due else {
        return Decision::Wait(next);
    };
    if let Some(deadline) = v.starting_deadline_seconds
        && at + jiff::SignedDuration::from_secs(deadline.max(0)) < v.now
    {
        return Decision::TooLate { at, next };
    }
    match v.policy {
        "Forbid" if v.running_jobs > 0 => Decision::Forbidden { next },
        policy => Decision::Start {
            at,
            replace: policy == "Replace" && v.running_jobs > 0,
            many_missed: missed >= MISSED_LIMIT,
            next,
        },
    }
}

/// The finished state of a job: `Some("Complete")`, `Some("Failed")` or `None` (running).
fn finished(job: &Job) -> Option<&'static str> {
    let conditions = job.status.as_ref().and_then(|s| s.conditions.as_ref())?;
    ["Complete", "Failed"].into_iter().find(|kind| {
        conditions
            .iter()
            .any(|c| c.type_ == *kind && c.status == "True")
    })
}

fn started(job: &Job) -> Option<Timestamp> {
    job.status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .or(job.metadata.creation_timestamp.as_ref())
        .map(|t| t.0)
}

/// Finished jobs beyond the history limits, oldest first: the names to delete.
pub(crate) fn beyond_history(
    jobs: &[Job],
    successful_limit: i32,
    failed_limit: i32,
) -> Vec<String> {
    let mut out = Vec::new();
    for (kind, limit) in [("Complete", successful_limit), ("Failed", failed_limit)] {
        let mut done: Vec<&Job> = jobs.iter().filter(|j| finished(j) == Some(kind)).collect();
        done.sort_by_key(|j| started(j));
        let surplus = done
            .len()
            .saturating_sub(usize::try_from(limit.max(0)).unwrap_or(0));
        out.extend(done.iter().take(surplus).map(|j| j.name_any()));
    }
    out
}

/// The Job for the run scheduled at `at`.
fn new_job(cj: &CronJob, at: Timestamp, tz: &TimeZone) -> Job {
    let template = cj
        .spec
        .as_ref()
        .map(|s| s.job_template.clone())
        .unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(
        SCHEDULED_AT.into(),
        at.to_zoned(tz.clone())
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string(),
    );
    Job {
        metadata: ObjectMeta {
            name: Some(format!("{}-{}", cj.name_any(), at.as_second() / 60)),
            namespace: cj.namespace(),
            labels: meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![controller_reference(cj)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

fn reference(job: &Job) -> serde_json::Value {
    json!({"apiVersion": "batch/v1", "kind": "Job", "name": job.name_any(),
           "namespace": job.namespace(), "uid": job.metadata.uid,
           "resourceVersion": job.metadata.resource_version})
}

async fn reconcile(cj: Arc<CronJob>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    let ns = cj.namespace().unwrap_or_default();
    let object = object_key(cj.as_ref());
    if cj.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let spec = cj.spec.clone().unwrap_or_default();
    let status = cj.status.clone().unwrap_or_default();
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let cronjobs: Api<CronJob> = Api::namespaced(ctx.client.clone(), &ns);
    let own_uid = cj.metadata.uid.clone().unwrap_or_default();
    let mut jobs: Vec<Job> = jobs_api
        .list(&ListParams::default())
        .await
        .map_err(api_err(&object, "listing jobs"))?
        .items
        .into_iter()
        .filter(|j| controller_uid(&j.metadata) == Some(own_uid.as_str()))
        .collect();

    // Jobs that left the active list finished.
    let was_active: Vec<String> = status
        .active
        .iter()
        .flatten()
        .filter_map(|r| r.name.clone())
        .collect();
    for job in jobs.iter().filter(|j| was_active.contains(&j.name_any())) {
        if let Some(kind) = finished(job) {
            let note = format!("Saw completed job: {}, status: {kind}", job.name_any());
            ctx.event(cj.as_ref(), "SawCompletedJob", "Update", note)
                .await;
        }
    }

    let tz_name = spec.time_zone.clone().unwrap_or_else(|| "UTC".into());
    let schedule = Schedule::parse(&spec.schedule).map_err(|why| ControllerError::Invalid {
        object: object.clone(),
        why: format!("unparseable schedule {:?}: {why}", spec.schedule),
    })?;
    let tz = TimeZone::get(&tz_name).map_err(|e| ControllerError::Invalid {
        object: object.clone(),
        why: format!("unknown time zone {tz_name}: {e}"),
    })?;
    let now = Timestamp::now();
    let running = jobs.iter().filter(|j| finished(j).is_none()).count();
    let mut last_scheduled = status.last_schedule_time.as_ref().map(|t| t.0);
    let mut requeue = None;
    if spec.suspend != Some(true) {
        let created = cj.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0);
        let view = View {
            schedule: &schedule,
            tz: &tz,
            created,
            last_scheduled,
            starting_deadline_seconds: spec.starting_deadline_seconds,
            policy: spec.concurrency_policy.as_deref().unwrap_or("Allow"),
            running_jobs: running,
            now,
        };
        match decide(&view) {
            Decision::Wait(next) => requeue = next,
            Decision::Forbidden { next } => {
                let note = "Not starting job because prior execution is running and concurrency policy is Forbid".to_string();
                ctx.event(cj.as_ref(), "JobAlreadyActive", "Create", note)
                    .await;
                requeue = next;
            }
            Decision::TooLate { at, next } => {
                let note = format!("Missed scheduled time to start a job: {at}");
                ctx.warning(cj.as_ref(), "MissSchedule", "Create", note)
                    .await;
                requeue = next;
            }
            Decision::Start {
                at,
                replace,
                many_missed,
                next,
            } => {
                if many_missed {
                    let note = "too many missed start times; check clock skew".to_string();
                    ctx.warning(cj.as_ref(), "TooManyMissedTimes", "Create", note)
                        .await;
                }
                if replace {
                    let background = DeleteParams::background();
                    for job in jobs.iter().filter(|j| finished(j).is_none()) {
                        match jobs_api.delete(&job.name_any(), &background).await {
                            Ok(_) => {
                                let note = format!("Deleted job {}", job.name_any());
                                ctx.event(cj.as_ref(), "SuccessfulDelete", "Delete", note)
                                    .await;
                            }
                            Err(e) if is_not_found(&e) => {}
                            Err(e) => return Err(api_err(&object, "deleting a running job")(e)),
                        }
                    }
                    jobs.retain(|j| finished(j).is_some());
                }
                let job = new_job(&cj, at, &tz);
                match jobs_api.create(&PostParams::default(), &job).await {
                    Ok(created) => {
                        let note = format!("Created job {}", created.name_any());
                        ctx.event(cj.as_ref(), "SuccessfulCreate", "Create", note)
                            .await;
                        jobs.push(created);
                    }
                    // Created by an earlier round whose status write was lost.
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => return Err(api_err(&object, "creating a job")(e)),
                }
                last_scheduled = Some(at);
                requeue = next;
            }
        }
    }

    // History.
    let doomed = beyond_history(
        &jobs,
        spec.successful_jobs_history_limit.unwrap_or(3),
        spec.failed_jobs_history_limit.unwrap_or(1),
    );
    for name in &doomed {
        match jobs_api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {
                let note = format!("Deleted job {name}");
                ctx.event(cj.as_ref(), "SuccessfulDelete", "Delete", note)
                    .await;
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(api_err(&object, "deleting an old job")(e)),
        }
    }
    jobs.retain(|j| !doomed.contains(&j.name_any()));

    let active: Vec<serde_json::Value> = jobs
        .iter()
        .filter(|j| finished(j).is_none())
        .map(reference)
        .collect();
    let last_success = jobs
        .iter()
        .filter(|j| finished(j) == Some("Complete"))
        .filter_map(|j| j.status.as_ref()?.completion_time.as_ref().map(|t| t.0))
        .chain(status.last_successful_time.as_ref().map(|t| t.0))
        .max();
    let patch = json!({"status": {
        "active": if active.is_empty() { json!(null) } else { json!(active) },
        "lastScheduleTime": last_scheduled.map(|t| t.to_string()),
        "lastSuccessfulTime": last_success.map(|t| t.to_string()),
    }});
    cronjobs
        .patch_status(
            &cj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
        .map_err(api_err(&object, "updating status"))?;
    Ok(match requeue {
        Some(d) => Action::requeue(d + Duration::from_millis(100)),
        None if spec.suspend == Some(true) => Action::await_change(),
        None => Action::requeue(Duration::from_secs(3600)),
    })
}

fn error_policy(_cj: Arc<CronJob>, error: &ControllerError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(%error, "cronjob reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// Runs the CronJob controller until `shutdown` turns true.
pub async fn run(client: kube::Client, shutdown: tokio::sync::watch::Receiver<bool>) {
    let cronjobs: Api<CronJob> = Api::all(client.clone());
    let jobs: Api<Job> = Api::all(client.clone());
    let ctx = Arc::new(Context::new(client, "cronjob-controller"));
    Controller::new(cronjobs, watcher::Config::default())
        .owns(jobs, watcher::Config::default())
        .graceful_shutdown_on(shutdown_signal(shutdown))
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "cronjob controller");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    static UTC: TimeZone = TimeZone::UTC;

    fn view<'a>(schedule: &'a Schedule, policy: &'a str, now: &str) -> View<'a> {
        View {
            schedule,
            tz: &UTC,
            created: ts("2026-01-01T10:00:30Z"),
            last_scheduled: None,
            starting_deadline_seconds: None,
            policy,
            running_jobs: 0,
            now: ts(now),
        }
    }

    #[test]
    fn nothing_is_due_before_the_first_time() {
        let s = Schedule::parse("*/5 * * * *").expect("schedule");
        let d = decide(&view(&s, "Allow", "2026-01-01T10:03:00Z"));
        assert_eq!(d, Decision::Wait(Some(Duration::from_secs(120))));
    }

    #[test]
    fn the_latest_due_run_starts_once() {
        let s = Schedule::parse("* * * * *").expect("schedule");
        let mut v = view(&s, "Allow", "2026-01-01T10:03:10Z");
        match decide(&v) {
            Decision::Start { at, replace, .. } => {
                assert_eq!(at, ts("2026-01-01T10:03:00Z"));
                assert!(!replace);
            }
            d => panic!("{d:?}"),
        }
        v.last_scheduled = Some(ts("2026-01-01T10:03:00Z"));
        assert!(matches!(decide(&v), Decision::Wait(Some(_))));
    }

    #[test]
    fn concurrency_policies() {
        let s = Schedule::parse("* * * * *").expect("schedule");
        let mut v = view(&s, "Forbid", "2026-01-01T10:03:10Z");
        v.running_jobs = 1;
        assert!(matches!(decide(&v), Decision::Forbidden { .. }));
        v.policy = "Replace";
        assert!(matches!(decide(&v), Decision::Start { replace: true, .. }));
        v.policy = "Allow";
        assert!(matches!(decide(&v), Decision::Start { replace: false, .. }));
    }

    #[test]
    fn the_starting_deadline_bounds_how_far_back_runs_start() {
        let s = Schedule::parse("0 * * * *").expect("schedule");
        let mut v = view(&s, "Allow", "2026-01-01T12:00:30Z");
        v.starting_deadline_seconds = Some(10);
        // The 12:00 run is 30 s late with a 10 s deadline: not started.
        assert!(matches!(decide(&v), Decision::Wait(_)));
        v.starting_deadline_seconds = Some(60);
        assert!(matches!(decide(&v), Decision::Start { .. }));
    }

    fn finished_job(name: &str, kind: &str, start: &str) -> Job {
        let mut j = Job::default();
        j.metadata.name = Some(name.into());
        j.status = Some(JobStatus {
            start_time: Some(Time(ts(start))),
            conditions: Some(vec![JobCondition {
                type_: kind.into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        j
    }

    #[test]
    fn history_keeps_the_newest_finished_jobs() {
        let jobs = vec![
            finished_job("c1", "Complete", "2026-01-01T10:00:00Z"),
            finished_job("c3", "Complete", "2026-01-01T10:02:00Z"),
            finished_job("c2", "Complete", "2026-01-01T10:01:00Z"),
            finished_job("f1", "Failed", "2026-01-01T10:00:00Z"),
            finished_job("f2", "Failed", "2026-01-01T10:01:00Z"),
            Job {
                metadata: ObjectMeta {
                    name: Some("running".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        ];
        assert_eq!(beyond_history(&jobs, 1, 1), vec!["c1", "c2", "f1"]);
        assert!(beyond_history(&jobs, 3, 2).is_empty());
    }

    #[test]
    fn jobs_are_named_by_their_minute() {
        let mut cj = CronJob::default();
        cj.metadata.name = Some("tick".into());
        let zone = TimeZone::get("Europe/Berlin").expect("zone");
        let job = new_job(&cj, ts("2026-01-01T10:03:00Z"), &zone);
        assert_eq!(job.metadata.name.as_deref(), Some("tick-29454363"));
        assert_eq!(
            job.metadata.annotations.unwrap_or_default()[SCHEDULED_AT],
            "2026-01-01T11:03:00+01:00"
        );
    }
}
