//! Pod specs, in pods and in the templates of workloads, and pod updates.

use serde_json::Value;

use super::formats;
use super::{
    Detail, each_problem, labels, non_negative, not_found, one_of, positive, required_str,
};
use crate::names;
use crate::status::FieldCause;

/// Where a pod spec is: its restart policies and what its templates may not set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// A pod.
    Pod,
    /// The template of a Deployment, ReplicaSet, DaemonSet or StatefulSet: named in the
    /// activeDeadlineSeconds message.
    Workload(&'static str),
    /// The template of a Job or CronJob.
    Job,
}

const RESTART_ALL: &[&str] = &["Always", "OnFailure", "Never"];
const DNS_POLICIES: &[&str] = &["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"];
const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
const MESSAGE_POLICIES: &[&str] = &["FallbackToLogsOnError", "File"];

/// The volume sources a pod volume may name (defaulting gives a volume naming none an
/// emptyDir).
pub(crate) const POD_VOLUME_SOURCES: &[&str] = &[
    "hostPath",
    "emptyDir",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "persistentVolumeClaim",
    "rbd",
    "quobyte",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "downwardAPI",
    "fc",
    "azureFile",
    "configMap",
    "vsphereVolume",
    "azureDisk",
    "photonPersistentDisk",
    "projected",
    "portworxVolume",
    "scaleIO",
    "storageos",
    "csi",
    "ephemeral",
    "image",
];

/// Validates a pod spec at `path` (`spec`, `spec.template.spec`, ...).
pub fn pod_spec(spec: &Value, path: &str, ctx: Context, errs: &mut Vec<FieldCause>) {
    if !spec.is_object() {
        errs.push(FieldCause::required(path));
        return;
    }
    let volumes = volumes(&spec["volumes"], &format!("{path}.volumes"), errs);
    if spec["containers"].as_array().is_none_or(Vec::is_empty) {
        errs.push(FieldCause::required(format!("{path}.containers")));
    }
    let mut seen = Vec::new();
    for list in ["initContainers", "containers"] {
        containers(
            &spec[list],
            &format!("{path}.{list}"),
            &volumes,
            &mut seen,
            errs,
        );
    }
    restart_policy(&spec["restartPolicy"], path, ctx, errs);
    one_of(
        &spec["dnsPolicy"],
        &format!("{path}.dnsPolicy"),
        DNS_POLICIES,
        false,
        errs,
    );
    if spec["dnsPolicy"] == "None" && !spec["dnsConfig"].is_object() {
        errs.push(
            FieldCause::required(format!("{path}.dnsConfig"))
                .detail("must provide `dnsConfig` when `dnsPolicy` is None"),
        );
    }
    match ctx {
        Context::Pod => {
            if let Some(n) = spec["activeDeadlineSeconds"].as_i64()
                && !(1..=i64::from(i32::MAX)).contains(&n)
            {
                errs.push(FieldCause::invalid(
                    format!("{path}.activeDeadlineSeconds"),
                    n,
                    "must be between 1 and 2147483647, inclusive",
                ));
            }
        }
        Context::Workload(kind) => {
            if !spec["activeDeadlineSeconds"].is_null() {
                errs.push(FieldCause::forbidden(
                    format!("{path}.activeDeadlineSeconds"),
                    format!("activeDeadlineSeconds in {kind} is not Supported"),
                ));
            }
        }
        Context::Job => positive(
            &spec["activeDeadlineSeconds"],
            &format!("{path}.activeDeadlineSeconds"),
            errs,
        ),
    }
    labels(&spec["nodeSelector"], &format!("{path}.nodeSelector"), errs);
    for (field, check) in [
        (
            "serviceAccountName",
            names::dns1123_subdomain as fn(&str) -> Vec<String>,
        ),
        ("hostname", names::dns1123_label),
        ("subdomain", names::dns1123_label),
        ("priorityClassName", names::dns1123_subdomain),
    ] {
        if let Some(v) = spec[field].as_str().filter(|v| !v.is_empty()) {
            each_problem(check(v), &format!("{path}.{field}"), v, errs);
        }
    }
    tolerations(&spec["tolerations"], &format!("{path}.tolerations"), errs);
    non_negative(
        &spec["terminationGracePeriodSeconds"],
        &format!("{path}.terminationGracePeriodSeconds"),
        errs,
    );
}

fn restart_policy(v: &Value, path: &str, ctx: Context, errs: &mut Vec<FieldCause>) {
    let at = format!("{path}.restartPolicy");
    let allowed: &[&str] = match ctx {
        Context::Pod => RESTART_ALL,
        Context::Workload(_) => &["Always"],
        Context::Job => &["OnFailure", "Never"],
    };
    match v.as_str().filter(|s| !s.is_empty()) {
        None if ctx == Context::Job => {
            errs.push(FieldCause::required(at).detail("valid values: \"OnFailure\", \"Never\""))
        }
        None => errs.push(FieldCause::required(at)),
        Some(p) if !allowed.contains(&p) => errs.push(FieldCause::not_supported(at, p, allowed)),
        Some(_) => {}
    }
}

/// Validates the volumes and returns their names.
fn volumes<'a>(list: &'a Value, path: &str, errs: &mut Vec<FieldCause>) -> Vec<&'a str> {
    let mut names_seen: Vec<&str> = Vec::new();
    for (i, v) in list.as_array().into_iter().flatten().enumerate() {
        let at = format!("{path}[{i}]");
        match v["name"].as_str().filter(|n| !n.is_empty()) {
            None => errs.push(FieldCause::required(format!("{at}.name"))),
            Some(n) => {
                each_problem(names::dns1123_label(n), &format!("{at}.name"), n, errs);
                if names_seen.contains(&n) {
                    errs.push(FieldCause::duplicate(format!("{at}.name"), n));
                } else {
                    names_seen.push(n);
                }
            }
        }
        let sources: Vec<&str> = POD_VOLUME_SOURCES
            .iter()
            .copied()
            .filter(|s| !v[*s].is_null())
            .collect();
        match sources.as_slice() {
            [] => errs.push(FieldCause::required(at.clone()).detail("must specify a volume type")),
            [_, extra @ ..] => {
                for s in extra {
                    errs.push(FieldCause::forbidden(
                        format!("{at}.{s}"),
                        "may not specify more than 1 volume type",
                    ));
                }
            }
        }
        for (source, field) in [
            ("secret", "secretName"),
            ("configMap", "name"),
            ("hostPath", "path"),
            ("persistentVolumeClaim", "claimName"),
            ("nfs", "server"),
            ("nfs", "path"),
            ("csi", "driver"),
        ] {
            if v[source].is_object() {
                required_str(&v[source][field], &format!("{at}.{source}.{field}"), errs);
            }
        }
        for source in ["secret", "configMap", "downwardAPI", "projected"] {
            if let Some(mode) = v[source]["defaultMode"].as_i64()
                && !(0..=0o777).contains(&mode)
            {
                errs.push(FieldCause::invalid(
                    format!("{at}.{source}.defaultMode"),
                    mode,
                    "must be a number between 0 and 0777 (octal), both inclusive",
                ));
            }
        }
        if v["hostPath"].is_object() {
            one_of(
                &v["hostPath"]["type"],
                &format!("{at}.hostPath.type"),
                &[
                    "",
                    "BlockDevice",
                    "CharDevice",
                    "Directory",
                    "DirectoryOrCreate",
                    "File",
                    "FileOrCreate",
                    "Socket",
                ],
                false,
                errs,
            );
        }
    }
    names_seen
}

fn containers(
    list: &Value,
    path: &str,
    volumes: &[&str],
    seen: &mut Vec<String>,
    errs: &mut Vec<FieldCause>,
) {
    for (i, c) in list.as_array().into_iter().flatten().enumerate() {
        let at = format!("{path}[{i}]");
        match c["name"].as_str().filter(|n| !n.is_empty()) {
            None => errs.push(FieldCause::required(format!("{at}.name"))),
            Some(name) => {
                each_problem(
                    names::dns1123_label(name),
                    &format!("{at}.name"),
                    name,
                    errs,
                );
                if seen.iter().any(|s| s == name) {
                    errs.push(FieldCause::duplicate(format!("{at}.name"), name));
                }
                seen.push(name.to_string());
            }
        }
        match c["image"].as_str() {
            None | Some("") => errs.push(FieldCause::required(format!("{at}.image"))),
            Some(image) if image.trim() != image => errs.push(FieldCause::invalid(
                format!("{at}.image"),
                image,
                "must not have leading or trailing whitespace",
            )),
            Some(_) => {}
        }
        one_of(
            &c["imagePullPolicy"],
            &format!("{at}.imagePullPolicy"),
            PULL_POLICIES,
            false,
            errs,
        );
        one_of(
            &c["terminationMessagePolicy"],
            &format!("{at}.terminationMessagePolicy"),
            MESSAGE_POLICIES,
            false,
            errs,
        );
        ports(&c["ports"], &format!("{at}.ports"), errs);
        env(&c["env"], &format!("{at}.env"), errs);
        mounts(
            &c["volumeMounts"],
            &format!("{at}.volumeMounts"),
            volumes,
            errs,
        );
        resources(&c["resources"], &format!("{at}.resources"), errs);
        let init = path.ends_with("initContainers");
        for probe_name in ["livenessProbe", "readinessProbe", "startupProbe"] {
            if c[probe_name].is_null() {
                continue;
            }
            let probe_path = format!("{at}.{probe_name}");
            if init && c["restartPolicy"] != "Always" {
                errs.push(FieldCause::forbidden(
                    probe_path,
                    "may not be set for init containers without restartPolicy=Always",
                ));
                continue;
            }
            probe(
                &c[probe_name],
                &probe_path,
                probe_name != "readinessProbe",
                errs,
            );
        }
        if !c["restartPolicy"].is_null() {
            if init {
                one_of(
                    &c["restartPolicy"],
                    &format!("{at}.restartPolicy"),
                    &["Always"],
                    false,
                    errs,
                );
            } else {
                errs.push(FieldCause::forbidden(
                    format!("{at}.restartPolicy"),
                    "may not be set for non-init containers",
                ));
            }
        }
    }
}

fn ports(list: &Value, path: &str, errs: &mut Vec<FieldCause>) {
    let mut names_seen: Vec<&str> = Vec::new();
    for (j, p) in list.as_array().into_iter().flatten().enumerate() {
        let at = format!("{path}[{j}]");
        if let Some(name) = p["name"].as_str().filter(|n| !n.is_empty()) {
            each_problem(formats::port_name(name), &format!("{at}.name"), name, errs);
            if names_seen.contains(&name) {
                errs.push(FieldCause::duplicate(format!("{at}.name"), name));
            }
            names_seen.push(name);
        }
        match p["containerPort"].as_i64() {
            None | Some(0) => errs.push(FieldCause::required(format!("{at}.containerPort"))),
            Some(n) => {
                for m in formats::port_number(n) {
                    errs.push(FieldCause::invalid(format!("{at}.containerPort"), n, m));
                }
            }
        }
        if let Some(n) = p["hostPort"].as_i64().filter(|n| *n != 0) {
            for m in formats::port_number(n) {
                errs.push(FieldCause::invalid(format!("{at}.hostPort"), n, m));
            }
        }
        one_of(
            &p["protocol"],
            &format!("{at}.protocol"),
            super::PROTOCOLS,
            true,
            errs,
        );
    }
}

fn env(list: &Value, path: &str, errs: &mut Vec<FieldCause>) {
    for (j, e) in list.as_array().into_iter().flatten().enumerate() {
        let at = format!("{path}[{j}]");
        if let Some(name) = required_str(&e["name"], &format!("{at}.name"), errs) {
            each_problem(
                formats::env_var_name(name),
                &format!("{at}.name"),
                name,
                errs,
            );
        }
        let from = &e["valueFrom"];
        if from.is_object() {
            if e["value"].as_str().is_some_and(|v| !v.is_empty()) {
                errs.push(FieldCause::invalid(
                    format!("{at}.valueFrom"),
                    "",
                    "may not be specified when `value` is not empty",
                ));
            }
            let sources = [
                "fieldRef",
                "resourceFieldRef",
                "configMapKeyRef",
                "secretKeyRef",
            ]
            .iter()
            .filter(|s| !from[**s].is_null())
            .count();
            if sources == 0 {
                errs.push(FieldCause::invalid(
                    format!("{at}.valueFrom"),
                    "",
                    "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
                ));
            } else if sources > 1 {
                errs.push(FieldCause::invalid(
                    format!("{at}.valueFrom"),
                    "",
                    "may not have more than one field specified at a time",
                ));
            }
            for r in ["configMapKeyRef", "secretKeyRef"] {
                if from[r].is_object() {
                    required_str(&from[r]["key"], &format!("{at}.valueFrom.{r}.key"), errs);
                }
            }
            if from["fieldRef"].is_object() {
                required_str(
                    &from["fieldRef"]["fieldPath"],
                    &format!("{at}.valueFrom.fieldRef.fieldPath"),
                    errs,
                );
            }
        }
    }
}

fn mounts(list: &Value, path: &str, volumes: &[&str], errs: &mut Vec<FieldCause>) {
    let mut paths_seen: Vec<&str> = Vec::new();
    for (j, m) in list.as_array().into_iter().flatten().enumerate() {
        let at = format!("{path}[{j}]");
        match m["name"].as_str().filter(|n| !n.is_empty()) {
            None => errs.push(FieldCause::required(format!("{at}.name"))),
            Some(name) if !volumes.contains(&name) => {
                errs.push(not_found(format!("{at}.name"), name))
            }
            Some(_) => {}
        }
        if let Some(mount_path) = required_str(&m["mountPath"], &format!("{at}.mountPath"), errs) {
            if paths_seen.contains(&mount_path) {
                errs.push(FieldCause::invalid(
                    format!("{at}.mountPath"),
                    mount_path,
                    "must be unique",
                ));
            }
            paths_seen.push(mount_path);
        }
        if let Some(sub) = m["subPath"].as_str()
            && (sub.starts_with('/') || sub.split('/').any(|s| s == ".."))
        {
            let why = if sub.starts_with('/') {
                "must be a relative path"
            } else {
                "must not contain '..'"
            };
            errs.push(FieldCause::invalid(format!("{at}.subPath"), sub, why));
        }
    }
}

fn resources(r: &Value, path: &str, errs: &mut Vec<FieldCause>) {
    let mut parsed = |kind: &str| -> Vec<(String, f64, String)> {
        let mut out = Vec::new();
        for (name, q) in r[kind].as_object().into_iter().flatten() {
            let text = q
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| q.to_string());
            let at = format!("{path}.{kind}[{name}]");
            match formats::quantity(&text) {
                None => errs.push(FieldCause::invalid(
                    at,
                    text.as_str(),
                    format!(
                        "quantities must match the regular expression '{}'",
                        formats::QUANTITY_RE
                    ),
                )),
                Some(v) if v < 0.0 => errs.push(FieldCause::invalid(
                    at,
                    text.as_str(),
                    "must be greater than or equal to 0",
                )),
                Some(v) => out.push((name.clone(), v, text)),
            }
        }
        out
    };
    let limits = parsed("limits");
    let requests = parsed("requests");
    for (name, request, text) in &requests {
        if let Some((_, limit, limit_text)) = limits.iter().find(|(n, _, _)| n == name)
            && request > limit
        {
            errs.push(FieldCause::invalid(
                format!("{path}.requests"),
                text.as_str(),
                format!("must be less than or equal to {name} limit of {limit_text}"),
            ));
        }
    }
}

fn probe(p: &Value, path: &str, success_must_be_one: bool, errs: &mut Vec<FieldCause>) {
    let handlers: Vec<&str> = ["exec", "httpGet", "tcpSocket", "grpc"]
        .into_iter()
        .filter(|h| !p[*h].is_null())
        .collect();
    match handlers.as_slice() {
        [] => errs.push(FieldCause::required(path).detail("must specify a handler type")),
        [_, extra @ ..] => {
            for h in extra {
                errs.push(FieldCause::forbidden(
                    format!("{path}.{h}"),
                    "may not specify more than 1 handler type",
                ));
            }
        }
    }
    for field in [
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
    ] {
        non_negative(&p[field], &format!("{path}.{field}"), errs);
    }
    if success_must_be_one
        && let Some(n) = p["successThreshold"].as_i64()
        && n != 1
    {
        errs.push(FieldCause::invalid(
            format!("{path}.successThreshold"),
            n,
            "must be 1",
        ));
    }
    for (handler, field) in [("httpGet", "port"), ("tcpSocket", "port")] {
        let port = &p[handler][field];
        if p[handler].is_object() {
            port_or_name(port, &format!("{path}.{handler}.{field}"), errs);
        }
    }
    if p["httpGet"].is_object() {
        one_of(
            &p["httpGet"]["scheme"],
            &format!("{path}.httpGet.scheme"),
            &["HTTP", "HTTPS"],
            false,
            errs,
        );
    }
}

/// An int-or-string port: a number in range or an IANA service name.
pub(crate) fn port_or_name(v: &Value, path: &str, errs: &mut Vec<FieldCause>) {
    match v {
        Value::Number(n) => {
            let n = n.as_i64().unwrap_or(0);
            for m in formats::port_number(n) {
                errs.push(FieldCause::invalid(path, n, m));
            }
        }
        Value::String(s) => each_problem(formats::port_name(s), path, s, errs),
        _ => errs.push(FieldCause::required(path)),
    }
}

fn tolerations(list: &Value, path: &str, errs: &mut Vec<FieldCause>) {
    for (i, t) in list.as_array().into_iter().flatten().enumerate() {
        let at = format!("{path}[{i}]");
        let key = t["key"].as_str().unwrap_or("");
        if !key.is_empty() {
            each_problem(names::qualified_name(key), &format!("{at}.key"), key, errs);
        }
        let operator = t["operator"].as_str().unwrap_or("");
        if key.is_empty() && operator != "Exists" {
            errs.push(FieldCause::invalid(
                format!("{at}.operator"),
                operator,
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        match operator {
            "" | "Equal" => {
                if let Some(v) = t["value"].as_str().filter(|v| !v.is_empty()) {
                    each_problem(names::label_value(v), &format!("{at}.value"), v, errs);
                }
            }
            "Exists" => {
                if t["value"].as_str().is_some_and(|v| !v.is_empty()) {
                    errs.push(FieldCause::invalid(
                        format!("{at}.operator"),
                        t.clone(),
                        "value must be empty when `operator` is 'Exists'",
                    ));
                }
            }
            other => errs.push(FieldCause::not_supported(
                format!("{at}.operator"),
                other,
                &["Equal", "Exists"],
            )),
        }
        if !t["tolerationSeconds"].is_null() && t["effect"] != "NoExecute" {
            errs.push(FieldCause::invalid(
                format!("{at}.effect"),
                t["effect"].as_str().unwrap_or(""),
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
        one_of(
            &t["effect"],
            &format!("{at}.effect"),
            &["NoExecute", "NoSchedule", "PreferNoSchedule"],
            false,
            errs,
        );
    }
}

/// The message of a forbidden pod update.
pub const POD_UPDATE_FORBIDDEN: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// Pod updates may change only images, activeDeadlineSeconds, tolerations (additions) and
/// terminationGracePeriodSeconds (from negative to 1), as upstream.
pub fn pod_update(new: &Value, old: &Value, errs: &mut Vec<FieldCause>) {
    let (new_spec, old_spec) = (&new["spec"], &old["spec"]);
    if let (Some(o), n) = (
        old_spec["activeDeadlineSeconds"].as_i64(),
        &new_spec["activeDeadlineSeconds"],
    ) {
        match n.as_i64() {
            None => errs.push(FieldCause::invalid(
                "spec.activeDeadlineSeconds",
                Value::Null,
                "must not update from a positive integer to nil value",
            )),
            Some(n) if n > o => errs.push(FieldCause::invalid(
                "spec.activeDeadlineSeconds",
                n,
                "must be less than or equal to previous value",
            )),
            _ => {}
        }
    }
    let old_tolerations = old_spec["tolerations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let new_tolerations = new_spec["tolerations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for t in &old_tolerations {
        if !new_tolerations.contains(t) {
            errs.push(FieldCause::forbidden(
                "spec.tolerations",
                "existing toleration can not be modified except its tolerationSeconds",
            ));
            break;
        }
    }
    let strip = |spec: &Value| {
        let mut s = spec.clone();
        for list in ["containers", "initContainers"] {
            if let Some(cs) = s.get_mut(list).and_then(Value::as_array_mut) {
                for c in cs {
                    c["image"] = Value::Null;
                }
            }
        }
        if let Some(m) = s.as_object_mut() {
            m.remove("activeDeadlineSeconds");
            m.remove("tolerations");
            m.remove("terminationGracePeriodSeconds");
        }
        s
    };
    // nodeName stays part of the comparison: only the binding subresource sets it.
    let new_stripped = strip(new_spec);
    let grace_ok = match (
        old_spec["terminationGracePeriodSeconds"].as_i64(),
        new_spec["terminationGracePeriodSeconds"].as_i64(),
    ) {
        (o, n) if o == n => true,
        (Some(o), Some(1)) => o < 0,
        _ => false,
    };
    if new_stripped != strip(old_spec) || !grace_ok {
        errs.push(FieldCause::forbidden("spec", POD_UPDATE_FORBIDDEN));
    }
}
