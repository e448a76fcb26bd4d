//! Validation of the built-in kinds, with field causes worded as upstream (kubectl prints
//! them): object metadata (names per kind, labels, annotations, finalizers, owner references)
//! and the rules of each kind on create and update, after defaulting.
//!
//! Field paths and messages follow Kubernetes 1.33. Values in `Invalid value:` are rendered as
//! JSON where upstream prints a Go value (maps, lists, structs).

use serde_json::{Map, Value};

use crate::names;
use crate::status::{CauseType, FieldCause};

mod formats;
mod other;
mod pod;
mod service;
mod workloads;

#[cfg(test)]
mod tests;

pub(crate) use pod::POD_VOLUME_SOURCES;

/// Validates an object on create (`old` is None) or update; empty when valid.
pub fn validate(group: &str, kind: &str, obj: &Value, old: Option<&Value>) -> Vec<FieldCause> {
    let mut errs = Vec::new();
    object_meta(group, kind, obj, &mut errs);
    match (group, kind) {
        ("", "Pod") => {
            pod::pod_spec(&obj["spec"], "spec", pod::Context::Pod, &mut errs);
            if let Some(old) = old {
                pod::pod_update(obj, old, &mut errs);
            }
        }
        ("", "Service") => service::service(obj, old, &mut errs),
        ("", "ConfigMap") => other::config_map(obj, old, &mut errs),
        ("", "Secret") => other::secret(obj, old, &mut errs),
        ("", "Namespace") => other::namespace(obj, &mut errs),
        ("", "Node") => other::node(obj, &mut errs),
        ("", "PersistentVolume") => other::persistent_volume(obj, &mut errs),
        ("", "PersistentVolumeClaim") => other::persistent_volume_claim(obj, old, &mut errs),
        ("", "Endpoints") => other::endpoints(obj, &mut errs),
        ("", "Event") => other::core_event(obj, &mut errs),
        ("events.k8s.io", "Event") => other::events_event(obj, &mut errs),
        ("apps", "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet") => {
            workloads::apps(kind, obj, old, &mut errs)
        }
        ("batch", "Job") => workloads::job(obj, old, &mut errs),
        ("batch", "CronJob") => workloads::cron_job(obj, &mut errs),
        ("coordination.k8s.io", "Lease") => other::lease(obj, &mut errs),
        ("discovery.k8s.io", "EndpointSlice") => other::endpoint_slice(obj, old, &mut errs),
        ("rbac.authorization.k8s.io", _) => other::rbac(kind, obj, old, &mut errs),
        ("storage.k8s.io", "StorageClass") => other::storage_class(obj, old, &mut errs),
        ("scheduling.k8s.io", "PriorityClass") => other::priority_class(obj, old, &mut errs),
        ("policy", "PodDisruptionBudget") => other::pod_disruption_budget(obj, &mut errs),
        _ => {}
    }
    errs
}

/// The name rule of a kind: the problems of `name`.
pub fn name_problems(group: &str, kind: &str, name: &str) -> Vec<String> {
    match (group, kind) {
        ("", "Namespace") => names::dns1123_label(name),
        ("", "Service") => names::dns1035_label(name),
        ("rbac.authorization.k8s.io", _) => formats::path_segment(name),
        ("batch", "CronJob") => {
            let mut p = names::dns1123_subdomain(name);
            if name.len() > 52 {
                p.push(names::max_len_error(52));
            }
            p
        }
        _ => names::dns1123_subdomain(name),
    }
}

const STANDARD_FINALIZERS: &[&str] = &["kubernetes", "orphan", "foregroundDeletion"];

fn object_meta(group: &str, kind: &str, obj: &Value, errs: &mut Vec<FieldCause>) {
    let meta = &obj["metadata"];
    if let Some(name) = meta["name"].as_str().filter(|n| !n.is_empty()) {
        for p in name_problems(group, kind, name) {
            errs.push(FieldCause::invalid("metadata.name", name, p));
        }
    }
    labels(&meta["labels"], "metadata.labels", errs);
    let annotations = meta["annotations"].as_object().cloned().unwrap_or_default();
    for k in annotations.keys() {
        for p in names::qualified_name(&k.to_lowercase()) {
            errs.push(FieldCause::invalid("metadata.annotations", k.as_str(), p));
        }
    }
    if let Some(too_big) = names::annotations_size(&annotations) {
        errs.push(FieldCause::new(
            CauseType::TooLong,
            "metadata.annotations",
            None,
            too_big,
        ));
    }
    for f in meta["finalizers"].as_array().into_iter().flatten() {
        let f = f.as_str().unwrap_or_default();
        let problems = names::qualified_name(f);
        if !problems.is_empty() {
            for p in problems {
                errs.push(FieldCause::invalid("metadata.finalizers", f, p));
            }
        } else if !f.contains('/') && !STANDARD_FINALIZERS.contains(&f) {
            errs.push(FieldCause::invalid(
                "metadata.finalizers",
                f,
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
    let mut controllers = Vec::new();
    for r in meta["ownerReferences"].as_array().into_iter().flatten() {
        for (field, what) in [
            ("apiVersion", "version"),
            ("kind", "kind"),
            ("name", "name"),
            ("uid", "uid"),
        ] {
            if r[field].as_str().is_none_or(str::is_empty) {
                errs.push(FieldCause::invalid(
                    format!("metadata.ownerReferences.{field}"),
                    "",
                    format!("{what} must not be empty"),
                ));
            }
        }
        if r["controller"] == true {
            controllers.push(format!(
                "{}/{}",
                r["kind"].as_str().unwrap_or(""),
                r["name"].as_str().unwrap_or("")
            ));
        }
    }
    if controllers.len() > 1 {
        errs.push(FieldCause::invalid(
            "metadata.ownerReferences",
            meta["ownerReferences"].clone(),
            format!(
                "Only one reference can have Controller set to true. Found \"true\" in references for {}",
                controllers.join(" and ")
            ),
        ));
    }
}

// ---- shared helpers ---------------------------------------------------------------------------

/// Label keys and values of a map at `path`.
pub(crate) fn labels(map: &Value, path: &str, errs: &mut Vec<FieldCause>) {
    for (k, v) in map.as_object().into_iter().flatten() {
        for p in names::qualified_name(k) {
            errs.push(FieldCause::invalid(path, k.as_str(), p));
        }
        let value = v.as_str().unwrap_or_default();
        for p in names::label_value(value) {
            errs.push(FieldCause::invalid(path, value, p));
        }
    }
}

/// A metav1.LabelSelector at `path`.
pub(crate) fn label_selector(sel: &Value, path: &str, errs: &mut Vec<FieldCause>) {
    labels(&sel["matchLabels"], &format!("{path}.matchLabels"), errs);
    for (i, e) in sel["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let at = format!("{path}.matchExpressions[{i}]");
        let has_values = e["values"].as_array().is_some_and(|v| !v.is_empty());
        match e["operator"].as_str().unwrap_or("") {
            "In" | "NotIn" if !has_values => errs.push(
                FieldCause::required(format!("{at}.values"))
                    .detail("must be specified when `operator` is 'In' or 'NotIn'"),
            ),
            "Exists" | "DoesNotExist" if has_values => errs.push(FieldCause::forbidden(
                format!("{at}.values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            op => errs.push(FieldCause::invalid(
                format!("{at}.operator"),
                op,
                "not a valid selector operator",
            )),
        }
        let key = e["key"].as_str().unwrap_or_default();
        for p in names::qualified_name(key) {
            errs.push(FieldCause::invalid(format!("{at}.key"), key, p));
        }
    }
}

/// Whether a label selector selects nothing in particular (no labels, no expressions).
pub(crate) fn selector_is_empty(sel: &Value) -> bool {
    sel["matchLabels"].as_object().is_none_or(Map::is_empty)
        && sel["matchExpressions"].as_array().is_none_or(Vec::is_empty)
}

/// Whether a label selector matches a label map.
pub(crate) fn selector_matches(sel: &Value, labels: &Map<String, Value>) -> bool {
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    let labels_ok = sel["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| get(k) == v.as_str());
    let exprs_ok = sel["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|e| {
            let key = e["key"].as_str().unwrap_or("");
            let values: Vec<&str> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            match e["operator"].as_str().unwrap_or("") {
                "In" => get(key).is_some_and(|v| values.contains(&v)),
                "NotIn" => get(key).is_none_or(|v| !values.contains(&v)),
                "Exists" => get(key).is_some(),
                "DoesNotExist" => get(key).is_none(),
                _ => false,
            }
        });
    labels_ok && exprs_ok
}

/// `field is immutable` when the value changed.
pub(crate) fn immutable(new: &Value, old: &Value, path: &str, errs: &mut Vec<FieldCause>) {
    if new != old {
        errs.push(FieldCause::invalid(path, new.clone(), "field is immutable"));
    }
}

/// An integer field that may not be negative, when set.
/// The `port` of a port entry (`required`: a missing one is checked as 0, as upstream does)
/// and the `protocol` beside it.
pub(crate) fn port_and_protocol(p: &Value, at: &str, required: bool, errs: &mut Vec<FieldCause>) {
    let port = p["port"].as_i64().or(required.then_some(0));
    for m in port.into_iter().flat_map(formats::port_number) {
        errs.push(FieldCause::invalid(
            format!("{at}.port"),
            port.unwrap_or_default(),
            m,
        ));
    }
    one_of(
        &p["protocol"],
        &format!("{at}.protocol"),
        PROTOCOLS,
        true,
        errs,
    );
}

/// The protocols of ports.
pub(crate) const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];

pub(crate) fn non_negative(v: &Value, path: &str, errs: &mut Vec<FieldCause>) {
    if let Some(n) = v.as_i64()
        && n < 0
    {
        errs.push(FieldCause::invalid(
            path,
            n,
            "must be greater than or equal to 0",
        ));
    }
}

/// An integer field that must be positive, when set.
pub(crate) fn positive(v: &Value, path: &str, errs: &mut Vec<FieldCause>) {
    if let Some(n) = v.as_i64()
        && n <= 0
    {
        errs.push(FieldCause::invalid(path, n, "must be greater than 0"));
    }
}

/// A string field from a fixed set: NotSupported when set to another value, Required when
/// `required` and empty.
pub(crate) fn one_of(
    v: &Value,
    path: &str,
    allowed: &[&str],
    required: bool,
    errs: &mut Vec<FieldCause>,
) {
    match v.as_str().filter(|s| !s.is_empty()) {
        Some(s) if !allowed.contains(&s) => errs.push(FieldCause::not_supported(path, s, allowed)),
        None if required => errs.push(FieldCause::required(path)),
        _ => {}
    }
}

/// A string field that must be set.
pub(crate) fn required_str<'a>(
    v: &'a Value,
    path: &str,
    errs: &mut Vec<FieldCause>,
) -> Option<&'a str> {
    let s = v.as_str().filter(|s| !s.is_empty());
    if s.is_none() {
        errs.push(FieldCause::required(path));
    }
    s
}

/// Invalid causes for each problem of a value.
pub(crate) fn each_problem(
    problems: Vec<String>,
    path: &str,
    value: &str,
    errs: &mut Vec<FieldCause>,
) {
    for p in problems {
        errs.push(FieldCause::invalid(path, value, p));
    }
}

/// Adds a detail to a cause built without one.
pub(crate) trait Detail {
    fn detail(self, detail: &str) -> Self;
}

impl Detail for FieldCause {
    fn detail(mut self, detail: &str) -> Self {
        self.detail = detail.to_string();
        self
    }
}

/// A `Not found` cause.
pub(crate) fn not_found(path: impl Into<String>, value: &str) -> FieldCause {
    FieldCause::new(CauseType::NotFound, path, Some(value.into()), "")
}

/// A `Too long` cause.
pub(crate) fn too_long(path: impl Into<String>, max: usize) -> FieldCause {
    FieldCause::new(
        CauseType::TooLong,
        path,
        None,
        format!("may not be more than {max} bytes"),
    )
}

/// A `Too many` cause.
pub(crate) fn too_many(path: impl Into<String>, n: usize, max: usize) -> FieldCause {
    FieldCause::new(
        CauseType::TooMany,
        path,
        Some(n.into()),
        format!("must have at most {max} items"),
    )
}
