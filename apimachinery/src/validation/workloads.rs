//! Deployments, ReplicaSets, DaemonSets, StatefulSets, Jobs and CronJobs.

use serde_json::Value;

use super::pod::{Context, pod_spec};
use super::{
    Detail, formats, immutable, label_selector, labels, non_negative, one_of, selector_is_empty,
    selector_matches,
};
use crate::status::FieldCause;

/// Validates a Deployment, ReplicaSet, DaemonSet or StatefulSet.
pub fn apps(kind: &str, obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldCause>) {
    let spec = &obj["spec"];
    // Upstream words the empty-selector error of ReplicaSets as of Deployments.
    let noun = match kind {
        "DaemonSet" => "daemonset",
        "StatefulSet" => "statefulset",
        _ => "deployment",
    };
    selector_and_template(spec, "spec", noun, true, errs);
    let template_kind = match kind {
        "DaemonSet" => "DaemonSet",
        "StatefulSet" => "StatefulSet",
        _ => "ReplicaSet",
    };
    // A StatefulSet's containers may mount its volumeClaimTemplates: each becomes a claim
    // volume of the pod.
    let mut template_spec = spec["template"]["spec"].clone();
    if kind == "StatefulSet"
        && let Some(claims) = spec["volumeClaimTemplates"].as_array()
        && template_spec.is_object()
    {
        let volumes = &mut template_spec["volumes"];
        if !volumes.is_array() {
            *volumes = Value::Array(Vec::new());
        }
        if let Some(volumes) = volumes.as_array_mut() {
            for claim in claims {
                let name = claim["metadata"]["name"].clone();
                volumes.retain(|v| v["name"] != name);
                volumes.push(serde_json::json!({
                    "name": name, "persistentVolumeClaim": {"claimName": name},
                }));
            }
        }
    }
    pod_spec(
        &template_spec,
        "spec.template.spec",
        Context::Workload(template_kind),
        errs,
    );
    if kind != "DaemonSet" {
        non_negative(&spec["replicas"], "spec.replicas", errs);
    }
    non_negative(&spec["minReadySeconds"], "spec.minReadySeconds", errs);
    non_negative(
        &spec["revisionHistoryLimit"],
        "spec.revisionHistoryLimit",
        errs,
    );
    match kind {
        "Deployment" => deployment(spec, errs),
        "DaemonSet" => daemon_set(spec, errs),
        "StatefulSet" => stateful_set(spec, errs),
        _ => {}
    }
    if let Some(old) = old {
        immutable(
            &spec["selector"],
            &old["spec"]["selector"],
            "spec.selector",
            errs,
        );
        if kind == "StatefulSet" {
            stateful_set_update(spec, &old["spec"], errs);
        }
    }
}

/// The selector (required, valid, non-empty) and whether it matches the template's labels.
fn selector_and_template(
    spec: &Value,
    path: &str,
    noun: &str,
    required: bool,
    errs: &mut Vec<FieldCause>,
) {
    let selector = &spec["selector"];
    if selector.is_null() {
        if required {
            errs.push(FieldCause::required(format!("{path}.selector")));
        }
    } else {
        label_selector(selector, &format!("{path}.selector"), errs);
        if selector_is_empty(selector) {
            errs.push(FieldCause::invalid(
                format!("{path}.selector"),
                selector.clone(),
                format!("empty selector is invalid for {noun}"),
            ));
        }
    }
    let template_labels = spec["template"]["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    labels(
        &spec["template"]["metadata"]["labels"],
        &format!("{path}.template.metadata.labels"),
        errs,
    );
    if !selector.is_null()
        && !selector_is_empty(selector)
        && !selector_matches(selector, &template_labels)
    {
        errs.push(FieldCause::invalid(
            format!("{path}.template.metadata.labels"),
            Value::Object(template_labels),
            "`selector` does not match template `labels`",
        ));
    }
}

/// maxUnavailable / maxSurge: non-negative, percentages at most 100%.
fn int_or_percent(v: &Value, path: &str, max_100: bool, errs: &mut Vec<FieldCause>) -> i64 {
    match formats::int_or_percent(v) {
        Err(m) => {
            errs.push(FieldCause::invalid(path, v.clone(), m));
            -1
        }
        Ok(None) => 0,
        Ok(Some((n, percent))) => {
            if n < 0 {
                errs.push(FieldCause::invalid(
                    path,
                    v.clone(),
                    "must be greater than or equal to 0",
                ));
            } else if percent && max_100 && n > 100 {
                errs.push(FieldCause::invalid(
                    path,
                    v.clone(),
                    "must not be greater than 100%",
                ));
            }
            n
        }
    }
}

fn rolling_update(ru: &Value, path: &str, errs: &mut Vec<FieldCause>) {
    let unavailable = int_or_percent(
        &ru["maxUnavailable"],
        &format!("{path}.maxUnavailable"),
        true,
        errs,
    );
    let surge = int_or_percent(&ru["maxSurge"], &format!("{path}.maxSurge"), false, errs);
    if unavailable == 0 && surge == 0 {
        errs.push(FieldCause::invalid(
            format!("{path}.maxUnavailable"),
            ru["maxUnavailable"].clone(),
            "may not be 0 when `maxSurge` is 0",
        ));
    }
}

fn deployment(spec: &Value, errs: &mut Vec<FieldCause>) {
    let strategy = &spec["strategy"];
    one_of(
        &strategy["type"],
        "spec.strategy.type",
        &["Recreate", "RollingUpdate"],
        true,
        errs,
    );
    match strategy["type"].as_str() {
        Some("Recreate") if !strategy["rollingUpdate"].is_null() => {
            errs.push(FieldCause::forbidden(
                "spec.strategy.rollingUpdate",
                "may not be specified when strategy `type` is 'Recreate'",
            ))
        }
        Some("RollingUpdate") if strategy["rollingUpdate"].is_object() => rolling_update(
            &strategy["rollingUpdate"],
            "spec.strategy.rollingUpdate",
            errs,
        ),
        _ => {}
    }
    non_negative(
        &spec["progressDeadlineSeconds"],
        "spec.progressDeadlineSeconds",
        errs,
    );
    if let (Some(deadline), Some(min_ready)) = (
        spec["progressDeadlineSeconds"].as_i64(),
        spec["minReadySeconds"].as_i64(),
    ) && deadline <= min_ready
    {
        errs.push(FieldCause::invalid(
            "spec.progressDeadlineSeconds",
            deadline,
            "must be greater than minReadySeconds",
        ));
    }
}

fn daemon_set(spec: &Value, errs: &mut Vec<FieldCause>) {
    let strategy = &spec["updateStrategy"];
    one_of(
        &strategy["type"],
        "spec.updateStrategy.type",
        &["OnDelete", "RollingUpdate"],
        true,
        errs,
    );
    if strategy["type"] == "RollingUpdate" && strategy["rollingUpdate"].is_object() {
        rolling_update(
            &strategy["rollingUpdate"],
            "spec.updateStrategy.rollingUpdate",
            errs,
        );
    }
}

fn stateful_set(spec: &Value, errs: &mut Vec<FieldCause>) {
    one_of(
        &spec["podManagementPolicy"],
        "spec.podManagementPolicy",
        &["OrderedReady", "Parallel"],
        true,
        errs,
    );
    let strategy = &spec["updateStrategy"];
    one_of(
        &strategy["type"],
        "spec.updateStrategy.type",
        &["OnDelete", "RollingUpdate"],
        true,
        errs,
    );
    if strategy["type"] == "OnDelete" && !strategy["rollingUpdate"].is_null() {
        errs.push(FieldCause::invalid(
            "spec.updateStrategy.rollingUpdate",
            strategy["rollingUpdate"].clone(),
            "only allowed for updateStrategy 'RollingUpdate'",
        ));
    }
    non_negative(
        &strategy["rollingUpdate"]["partition"],
        "spec.updateStrategy.rollingUpdate.partition",
        errs,
    );
    let retention = &spec["persistentVolumeClaimRetentionPolicy"];
    for field in ["whenDeleted", "whenScaled"] {
        one_of(
            &retention[field],
            &format!("spec.persistentVolumeClaimRetentionPolicy.{field}"),
            &["Delete", "Retain"],
            false,
            errs,
        );
    }
    for (i, t) in spec["volumeClaimTemplates"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        if t["metadata"]["name"].as_str().is_none_or(str::is_empty) {
            errs.push(FieldCause::required(format!(
                "spec.volumeClaimTemplates[{i}].metadata.name"
            )));
        }
    }
}

const STS_UPDATE_FORBIDDEN: &str = "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden";

fn stateful_set_update(spec: &Value, old: &Value, errs: &mut Vec<FieldCause>) {
    let strip = |s: &Value| {
        let mut s = s.clone();
        if let Some(m) = s.as_object_mut() {
            for field in [
                "replicas",
                "ordinals",
                "template",
                "updateStrategy",
                "revisionHistoryLimit",
                "persistentVolumeClaimRetentionPolicy",
                "minReadySeconds",
                "selector",
            ] {
                m.remove(field);
            }
        }
        s
    };
    if strip(spec) != strip(old) {
        errs.push(FieldCause::forbidden("spec", STS_UPDATE_FORBIDDEN));
    }
}

/// The fields of a JobSpec, at `path` (`spec` or `spec.jobTemplate.spec`).
fn job_spec(spec: &Value, path: &str, in_cron_job: bool, errs: &mut Vec<FieldCause>) {
    for field in [
        "parallelism",
        "completions",
        "backoffLimit",
        "ttlSecondsAfterFinished",
        "backoffLimitPerIndex",
        "maxFailedIndexes",
    ] {
        non_negative(&spec[field], &format!("{path}.{field}"), errs);
    }
    if let Some(n) = spec["activeDeadlineSeconds"].as_i64()
        && n <= 0
    {
        errs.push(FieldCause::invalid(
            format!("{path}.activeDeadlineSeconds"),
            n,
            "must be greater than 0",
        ));
    }
    one_of(
        &spec["completionMode"],
        &format!("{path}.completionMode"),
        &["Indexed", "NonIndexed"],
        false,
        errs,
    );
    if spec["completionMode"] == "Indexed" && spec["completions"].is_null() {
        errs.push(
            FieldCause::required(format!("{path}.completions"))
                .detail("when completion mode is Indexed"),
        );
    }
    one_of(
        &spec["podReplacementPolicy"],
        &format!("{path}.podReplacementPolicy"),
        &["Failed", "TerminatingOrFailed"],
        false,
        errs,
    );
    if in_cron_job {
        if spec["manualSelector"] == true {
            errs.push(FieldCause::not_supported(
                format!("{path}.manualSelector"),
                true,
                &["nil", "false"],
            ));
        }
        if !spec["selector"].is_null() {
            errs.push(FieldCause::invalid(
                format!("{path}.selector"),
                spec["selector"].clone(),
                "`selector` will be auto-generated",
            ));
        }
        labels(
            &spec["template"]["metadata"]["labels"],
            &format!("{path}.template.metadata.labels"),
            errs,
        );
    } else {
        selector_and_template(spec, path, "job", true, errs);
    }
    pod_spec(
        &spec["template"]["spec"],
        &format!("{path}.template.spec"),
        Context::Job,
        errs,
    );
}

/// Validates a Job on create and update.
pub fn job(obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldCause>) {
    let spec = &obj["spec"];
    job_spec(spec, "spec", false, errs);
    if let Some(old) = old {
        let old_spec = &old["spec"];
        immutable(
            &spec["selector"],
            &old_spec["selector"],
            "spec.selector",
            errs,
        );
        // Suspended jobs that never started may change their scheduling directives; the rest
        // of the template is fixed.
        let strip_scheduling = |t: &Value| {
            let mut t = t.clone();
            if let Some(s) = t["spec"].as_object_mut() {
                for f in ["nodeSelector", "affinity", "tolerations", "schedulingGates"] {
                    s.remove(f);
                }
            }
            if let Some(m) = t["metadata"].as_object_mut() {
                m.remove("labels");
                m.remove("annotations");
            }
            t
        };
        let suspended = old_spec["suspend"] == true;
        let template_changed = if suspended {
            strip_scheduling(&spec["template"]) != strip_scheduling(&old_spec["template"])
        } else {
            spec["template"] != old_spec["template"]
        };
        if template_changed {
            errs.push(FieldCause::invalid(
                "spec.template",
                spec["template"].clone(),
                "field is immutable",
            ));
        }
        let elastic = spec["completionMode"] == "Indexed"
            && spec["completions"] == spec["parallelism"]
            && old_spec["completions"] == old_spec["parallelism"];
        if !elastic {
            immutable(
                &spec["completions"],
                &old_spec["completions"],
                "spec.completions",
                errs,
            );
        }
        immutable(
            &spec["completionMode"],
            &old_spec["completionMode"],
            "spec.completionMode",
            errs,
        );
        immutable(
            &spec["podFailurePolicy"],
            &old_spec["podFailurePolicy"],
            "spec.podFailurePolicy",
            errs,
        );
    }
}

/// Validates a CronJob.
pub fn cron_job(obj: &Value, errs: &mut Vec<FieldCause>) {
    let spec = &obj["spec"];
    match spec["schedule"].as_str().filter(|s| !s.is_empty()) {
        None => errs.push(FieldCause::required("spec.schedule")),
        Some(schedule) => {
            if schedule.contains("TZ") {
                errs.push(FieldCause::invalid(
                    "spec.schedule",
                    schedule,
                    "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
                ));
            } else if let Err(e) = parse_schedule(schedule) {
                errs.push(FieldCause::invalid("spec.schedule", schedule, e));
            }
        }
    }
    if let Some(tz) = spec["timeZone"].as_str() {
        let db = jiff::tz::db();
        let problem = if tz.is_empty() {
            Some("timeZone must be nil or non-empty string".to_string())
        } else if tz == "Local" {
            Some(
                "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones"
                    .to_string(),
            )
        } else if !db.is_definitively_empty() && db.get(tz).is_err() {
            Some(format!("unknown time zone {tz}"))
        } else {
            None
        };
        if let Some(p) = problem {
            errs.push(FieldCause::invalid("spec.timeZone", tz, p));
        }
    }
    one_of(
        &spec["concurrencyPolicy"],
        "spec.concurrencyPolicy",
        &["Allow", "Forbid", "Replace"],
        true,
        errs,
    );
    for field in [
        "startingDeadlineSeconds",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    ] {
        non_negative(&spec[field], &format!("spec.{field}"), errs);
    }
    let job_template = &spec["jobTemplate"];
    labels(
        &job_template["metadata"]["labels"],
        "spec.jobTemplate.metadata.labels",
        errs,
    );
    job_spec(&job_template["spec"], "spec.jobTemplate.spec", true, errs);
}

/// Parses a cron schedule as the standard five-field parser of the CronJob controller does;
/// the error is worded as that parser words it.
pub fn parse_schedule(schedule: &str) -> Result<(), String> {
    crate::cron::Schedule::parse(schedule).map(|_| ())
}
