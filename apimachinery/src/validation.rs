//! Validation of the built-in kinds, with field causes worded as upstream (kubectl prints
//! them): object names per kind, labels and annotations, and the rules of each kind that
//! clients most often get wrong (containers and images, ports, selectors matching templates,
//! restart policies, config keys and sizes, immutable fields).

use serde_json::{Map, Value};

use crate::names;
use crate::status::FieldCause;

/// Validates an object on create (`old` is None) or update; empty when valid.
pub fn validate(group: &str, kind: &str, obj: &Value, old: Option<&Value>) -> Vec<FieldCause> {
    let mut errs = Vec::new();
    object_meta(group, kind, obj, &mut errs);
    match (group, kind) {
        ("", "Pod") => {
            pod_spec(
                &obj["spec"],
                "spec",
                &["Always", "OnFailure", "Never"],
                &mut errs,
            );
            if let Some(old) = old {
                pod_update(obj, old, &mut errs);
            }
        }
        ("", "Service") => service(obj, &mut errs),
        ("", "ConfigMap") => config_data(obj, &["data", "binaryData"], &mut errs),
        ("", "Secret") => config_data(obj, &["data"], &mut errs),
        ("apps", "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet") => {
            workload(obj, &["Always"], &mut errs);
            if let Some(old) = old {
                immutable(
                    &obj["spec"]["selector"],
                    &old["spec"]["selector"],
                    "spec.selector",
                    &mut errs,
                );
            }
            if kind == "Deployment" {
                deployment_strategy(&obj["spec"]["strategy"], &mut errs);
            }
        }
        ("batch", "Job") => {
            job(&obj["spec"], "spec", &mut errs);
            if let Some(old) = old {
                immutable(
                    &obj["spec"]["selector"],
                    &old["spec"]["selector"],
                    "spec.selector",
                    &mut errs,
                );
                immutable(
                    &obj["spec"]["completions"],
                    &old["spec"]["completions"],
                    "spec.completions",
                    &mut errs,
                );
            }
        }
        ("batch", "CronJob") => cronjob(obj, &mut errs),
        _ => {}
    }
    if let Some(old) = old
        && old["immutable"] == true
        && matches!((group, kind), ("", "ConfigMap" | "Secret"))
    {
        for field in ["data", "binaryData", "stringData"] {
            if obj[field] != old[field] {
                errs.push(FieldCause::forbidden(
                    field,
                    "field is immutable when `immutable` is set",
                ));
            }
        }
        if obj["immutable"] != true {
            errs.push(FieldCause::forbidden(
                "immutable",
                "field is immutable when `immutable` is set",
            ));
        }
    }
    errs
}

fn object_meta(group: &str, kind: &str, obj: &Value, errs: &mut Vec<FieldCause>) {
    let meta = &obj["metadata"];
    if let Some(name) = meta["name"].as_str().filter(|n| !n.is_empty()) {
        let problems = match (group, kind) {
            ("", "Namespace") => names::dns1123_label(name),
            ("", "Service") => names::dns1035_label(name),
            ("rbac.authorization.k8s.io", _) | ("", "Node") => path_segment(name),
            _ => names::dns1123_subdomain(name),
        };
        for p in problems {
            errs.push(FieldCause::invalid("metadata.name", name, p));
        }
    }
    for (k, v) in meta["labels"].as_object().into_iter().flatten() {
        for p in names::qualified_name(k) {
            errs.push(FieldCause::invalid("metadata.labels", k.as_str(), p));
        }
        let value = v.as_str().unwrap_or_default();
        for p in names::label_value(value) {
            errs.push(FieldCause::invalid("metadata.labels", value, p));
        }
    }
    let annotations = meta["annotations"].as_object().cloned().unwrap_or_default();
    for k in annotations.keys() {
        for p in names::qualified_name(&k.to_lowercase()) {
            errs.push(FieldCause::invalid("metadata.annotations", k.as_str(), p));
        }
    }
    if let Some(too_big) = names::annotations_size(&annotations) {
        errs.push(FieldCause::new(
            crate::status::CauseType::TooLong,
            "metadata.annotations",
            None,
            too_big,
        ));
    }
}

fn path_segment(name: &str) -> Vec<String> {
    if name == "." || name == ".." {
        return vec![format!("may not be '{name}'")];
    }
    ['/', '%']
        .iter()
        .filter(|c| name.contains(**c))
        .map(|c| format!("may not contain '{c}'"))
        .collect()
}

fn immutable(new: &Value, old: &Value, field: &str, errs: &mut Vec<FieldCause>) {
    if new != old {
        errs.push(FieldCause::invalid(
            field,
            render(new),
            "field is immutable",
        ));
    }
}

fn render(v: &Value) -> Value {
    match v {
        Value::String(_) | Value::Number(_) | Value::Bool(_) => v.clone(),
        other => Value::String(other.to_string()),
    }
}

const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];

fn port_range(v: &Value, field: &str, errs: &mut Vec<FieldCause>) {
    match v.as_i64() {
        Some(p) if (1..=65535).contains(&p) => {}
        Some(p) => errs.push(FieldCause::invalid(
            field,
            p,
            "must be between 1 and 65535, inclusive",
        )),
        None => errs.push(FieldCause::required(field)),
    }
}

/// A port number field and the protocol beside it.
fn port_and_protocol(
    port: &Value,
    entry: &Value,
    at: &str,
    port_field: &str,
    errs: &mut Vec<FieldCause>,
) {
    port_range(port, &format!("{at}.{port_field}"), errs);
    if let Some(proto) = entry["protocol"].as_str()
        && !PROTOCOLS.contains(&proto)
    {
        errs.push(FieldCause::not_supported(
            format!("{at}.protocol"),
            proto,
            PROTOCOLS,
        ));
    }
}

fn containers(list: &Value, field: &str, seen: &mut Vec<String>, errs: &mut Vec<FieldCause>) {
    for (i, c) in list.as_array().into_iter().flatten().enumerate() {
        let at = format!("{field}[{i}]");
        match c["name"].as_str().filter(|n| !n.is_empty()) {
            None => errs.push(FieldCause::required(format!("{at}.name"))),
            Some(name) => {
                for p in names::dns1123_label(name) {
                    errs.push(FieldCause::invalid(format!("{at}.name"), name, p));
                }
                if seen.iter().any(|s| s == name) {
                    errs.push(FieldCause::duplicate(format!("{at}.name"), name));
                }
                seen.push(name.to_string());
            }
        }
        if c["image"].as_str().is_none_or(|i| i.trim().is_empty()) {
            errs.push(FieldCause::required(format!("{at}.image")));
        }
        for (j, p) in c["ports"].as_array().into_iter().flatten().enumerate() {
            port_and_protocol(
                &p["containerPort"],
                p,
                &format!("{at}.ports[{j}]"),
                "containerPort",
                errs,
            );
        }
        if let Some(policy) = c["imagePullPolicy"].as_str()
            && !["Always", "IfNotPresent", "Never"].contains(&policy)
        {
            errs.push(FieldCause::not_supported(
                format!("{at}.imagePullPolicy"),
                policy,
                &["Always", "IfNotPresent", "Never"],
            ));
        }
    }
}

fn pod_spec(spec: &Value, field: &str, restart_policies: &[&str], errs: &mut Vec<FieldCause>) {
    if !spec.is_object() {
        errs.push(FieldCause::required(field));
        return;
    }
    let mut seen = Vec::new();
    if spec["containers"].as_array().is_none_or(Vec::is_empty) {
        errs.push(FieldCause::required(format!("{field}.containers")));
    }
    containers(
        &spec["containers"],
        &format!("{field}.containers"),
        &mut seen,
        errs,
    );
    containers(
        &spec["initContainers"],
        &format!("{field}.initContainers"),
        &mut seen,
        errs,
    );
    match spec["restartPolicy"].as_str() {
        Some(p) if !restart_policies.contains(&p) => {
            errs.push(FieldCause::not_supported(
                format!("{field}.restartPolicy"),
                p,
                restart_policies,
            ));
        }
        None if restart_policies.len() < 3 => {
            errs.push(FieldCause::new(
                crate::status::CauseType::Required,
                format!("{field}.restartPolicy"),
                None,
                format!(
                    "valid values: {}",
                    restart_policies
                        .iter()
                        .map(|p| format!("\"{p}\""))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        _ => {}
    }
    if let Some(p) = spec["dnsPolicy"].as_str()
        && !["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"].contains(&p)
    {
        errs.push(FieldCause::not_supported(
            format!("{field}.dnsPolicy"),
            p,
            &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        ));
    }
    let mut volumes: Vec<&str> = Vec::new();
    for (i, v) in spec["volumes"].as_array().into_iter().flatten().enumerate() {
        let at = format!("{field}.volumes[{i}]");
        match v["name"].as_str().filter(|n| !n.is_empty()) {
            None => errs.push(FieldCause::required(format!("{at}.name"))),
            Some(n) if volumes.contains(&n) => {
                errs.push(FieldCause::duplicate(format!("{at}.name"), n))
            }
            Some(n) => volumes.push(n),
        }
        let sources = v
            .as_object()
            .map_or(0, |m| m.keys().filter(|k| *k != "name").count());
        if sources == 0 {
            errs.push(FieldCause::required(at.clone()).with_detail("must specify a volume type"));
        } else if sources > 1 {
            errs.push(FieldCause::forbidden(
                at.clone(),
                "may not specify more than 1 volume type",
            ));
        }
    }
    for list in ["containers", "initContainers"] {
        for (i, c) in spec[list].as_array().into_iter().flatten().enumerate() {
            for (j, m) in c["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                let name = m["name"].as_str().unwrap_or_default();
                if !volumes.contains(&name) {
                    errs.push(FieldCause::new(
                        crate::status::CauseType::NotFound,
                        format!("{field}.{list}[{i}].volumeMounts[{j}].name"),
                        Some(name.into()),
                        "",
                    ));
                }
                if m["mountPath"].as_str().is_none_or(str::is_empty) {
                    errs.push(FieldCause::required(format!(
                        "{field}.{list}[{i}].volumeMounts[{j}].mountPath"
                    )));
                }
            }
        }
    }
}

trait WithDetail {
    fn with_detail(self, detail: &str) -> Self;
}

impl WithDetail for FieldCause {
    fn with_detail(mut self, detail: &str) -> Self {
        self.detail = detail.to_string();
        self
    }
}

/// Pod updates may change only images, activeDeadlineSeconds, tolerations (additions) and
/// terminationGracePeriodSeconds, as upstream.
fn pod_update(new: &Value, old: &Value, errs: &mut Vec<FieldCause>) {
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
            for field in [
                "activeDeadlineSeconds",
                "tolerations",
                "terminationGracePeriodSeconds",
            ] {
                m.remove(field);
            }
        }
        s
    };
    // nodeName included: only the binding subresource sets it.
    if strip(&new["spec"]) != strip(&old["spec"]) {
        errs.push(FieldCause::forbidden(
            "spec",
            "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
        ));
    }
}

fn selector_matches(selector: &Value, labels: &Map<String, Value>) -> bool {
    match crate::selector::LabelSelector::from_api(
        &serde_json::from_value(selector.clone()).unwrap_or_default(),
    ) {
        Ok(s) => !s.is_empty() && s.matches(labels),
        Err(_) => false,
    }
}

fn workload(obj: &Value, restart_policies: &[&str], errs: &mut Vec<FieldCause>) {
    let spec = &obj["spec"];
    let selector = &spec["selector"];
    let empty = selector.as_object().is_none_or(|s| {
        s.get("matchLabels")
            .and_then(Value::as_object)
            .is_none_or(Map::is_empty)
            && s.get("matchExpressions")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty)
    });
    if empty {
        errs.push(FieldCause::required("spec.selector"));
    }
    if let Some(r) = spec["replicas"].as_i64()
        && r < 0
    {
        errs.push(FieldCause::invalid(
            "spec.replicas",
            r,
            "must be greater than or equal to 0",
        ));
    }
    let labels = spec["template"]["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    if !empty && !selector_matches(selector, &labels) {
        errs.push(FieldCause::invalid(
            "spec.template.metadata.labels",
            Value::Object(labels).to_string(),
            "`selector` does not match template `labels`",
        ));
    }
    pod_spec(
        &spec["template"]["spec"],
        "spec.template.spec",
        restart_policies,
        errs,
    );
}

fn deployment_strategy(strategy: &Value, errs: &mut Vec<FieldCause>) {
    match strategy["type"].as_str() {
        Some("Recreate") if !strategy["rollingUpdate"].is_null() => {
            errs.push(FieldCause::forbidden(
                "spec.strategy.rollingUpdate",
                "may not be specified when strategy `type` is 'Recreate'",
            ));
        }
        Some("Recreate" | "RollingUpdate") | None => {}
        Some(other) => errs.push(FieldCause::not_supported(
            "spec.strategy.type",
            other,
            &["Recreate", "RollingUpdate"],
        )),
    }
    let zero =
        |v: &Value| v.as_i64() == Some(0) || v.as_str() == Some("0%") || v.as_str() == Some("0");
    let ru = &strategy["rollingUpdate"];
    if ru.is_object() && zero(&ru["maxSurge"]) && zero(&ru["maxUnavailable"]) {
        errs.push(FieldCause::invalid(
            "spec.strategy.rollingUpdate.maxUnavailable",
            render(&ru["maxUnavailable"]),
            "may not be 0 when `maxSurge` is 0",
        ));
    }
}

fn job(spec: &Value, field: &str, errs: &mut Vec<FieldCause>) {
    for key in [
        "completions",
        "parallelism",
        "backoffLimit",
        "activeDeadlineSeconds",
    ] {
        if let Some(n) = spec[key].as_i64()
            && n < 0
        {
            errs.push(FieldCause::invalid(
                format!("{field}.{key}"),
                n,
                "must be greater than or equal to 0",
            ));
        }
    }
    pod_spec(
        &spec["template"]["spec"],
        &format!("{field}.template.spec"),
        &["OnFailure", "Never"],
        errs,
    );
}

fn cronjob(obj: &Value, errs: &mut Vec<FieldCause>) {
    let spec = &obj["spec"];
    match spec["schedule"].as_str().filter(|s| !s.trim().is_empty()) {
        None => errs.push(FieldCause::required("spec.schedule")),
        Some(s) => {
            let ok = s.starts_with('@')
                && [
                    "@yearly",
                    "@annually",
                    "@monthly",
                    "@weekly",
                    "@daily",
                    "@midnight",
                    "@hourly",
                ]
                .contains(&s.trim())
                || s.split_whitespace().count() == 5
                || (s.starts_with("TZ=") || s.starts_with("CRON_TZ="))
                    && s.split_whitespace().count() == 6;
            if !ok {
                errs.push(FieldCause::invalid(
                    "spec.schedule",
                    s,
                    format!(
                        "unparseable schedule: expected exactly 5 fields, found {}: [{s}]",
                        s.split_whitespace().count()
                    ),
                ));
            }
        }
    }
    if let Some(p) = spec["concurrencyPolicy"].as_str()
        && !["Allow", "Forbid", "Replace"].contains(&p)
    {
        errs.push(FieldCause::not_supported(
            "spec.concurrencyPolicy",
            p,
            &["Allow", "Forbid", "Replace"],
        ));
    }
    job(&spec["jobTemplate"]["spec"], "spec.jobTemplate.spec", errs);
}

fn service(obj: &Value, errs: &mut Vec<FieldCause>) {
    let spec = &obj["spec"];
    let ty = spec["type"].as_str().unwrap_or("ClusterIP");
    const TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
    if !TYPES.contains(&ty) {
        errs.push(FieldCause::not_supported("spec.type", ty, TYPES));
    }
    let headless = spec["clusterIP"] == "None";
    let ports = spec["ports"].as_array().cloned().unwrap_or_default();
    if ports.is_empty() && ty != "ExternalName" && !headless {
        errs.push(FieldCause::required("spec.ports"));
    }
    if ty == "ExternalName" && spec["externalName"].as_str().is_none_or(str::is_empty) {
        errs.push(FieldCause::required("spec.externalName"));
    }
    let mut names_seen: Vec<&str> = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        match p["name"].as_str().filter(|n| !n.is_empty()) {
            None if ports.len() > 1 => errs.push(FieldCause::required(format!("{at}.name"))),
            None => {}
            Some(n) => {
                if names_seen.contains(&n) {
                    errs.push(FieldCause::duplicate(format!("{at}.name"), n));
                }
                names_seen.push(n);
            }
        }
        port_and_protocol(&p["port"], p, &at, "port", errs);
        if let Some(n) = p["nodePort"].as_i64()
            && n != 0
            && !matches!(ty, "NodePort" | "LoadBalancer")
        {
            errs.push(FieldCause::forbidden(
                format!("{at}.nodePort"),
                "may not be used when `type` is 'ClusterIP'",
            ));
        }
        if let Some(t) = p["targetPort"].as_i64()
            && !(1..=65535).contains(&t)
        {
            errs.push(FieldCause::invalid(
                format!("{at}.targetPort"),
                t,
                "must be between 1 and 65535, inclusive",
            ));
        }
    }
    for (k, v) in spec["selector"].as_object().into_iter().flatten() {
        for p in names::qualified_name(k) {
            errs.push(FieldCause::invalid("spec.selector", k.as_str(), p));
        }
        for p in names::label_value(v.as_str().unwrap_or_default()) {
            errs.push(FieldCause::invalid("spec.selector", v.clone(), p));
        }
    }
    if let Some(a) = spec["sessionAffinity"].as_str()
        && !["ClientIP", "None"].contains(&a)
    {
        errs.push(FieldCause::not_supported(
            "spec.sessionAffinity",
            a,
            &["ClientIP", "None"],
        ));
    }
}

const CONFIG_KEY_FMT: &str = "[-._a-zA-Z0-9]+";
/// The most bytes a ConfigMap's or Secret's data may hold.
pub const MAX_CONFIG_BYTES: usize = 1024 * 1024;

fn config_data(obj: &Value, fields: &[&str], errs: &mut Vec<FieldCause>) {
    let mut total = 0usize;
    for field in fields {
        for (k, v) in obj[*field].as_object().into_iter().flatten() {
            let valid = !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
                && k != "."
                && k != "..";
            if !valid {
                errs.push(FieldCause::invalid(
                    format!("{field}[{k}]"),
                    k.as_str(),
                    format!("a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '{CONFIG_KEY_FMT}')"),
                ));
            }
            total += k.len() + v.as_str().map_or(0, str::len);
        }
    }
    if total > MAX_CONFIG_BYTES {
        errs.push(FieldCause::new(
            crate::status::CauseType::TooLong,
            "",
            None,
            format!("must have at most {MAX_CONFIG_BYTES} bytes"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn causes(group: &str, kind: &str, obj: Value) -> Vec<String> {
        validate(group, kind, &obj, None)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn deployment() -> Value {
        json!({"metadata": {"name": "web"}, "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"restartPolicy": "Always", "containers": [{"name": "web", "image": "busybox"}]}}}})
    }

    #[test]
    fn valid_objects_of_each_kind_pass() {
        assert!(causes("apps", "Deployment", deployment()).is_empty());
        assert!(causes("", "Pod", json!({"metadata": {"name": "p"}, "spec": {"restartPolicy": "Always", "containers": [{"name": "c", "image": "i", "volumeMounts": [{"name": "d", "mountPath": "/d"}]}], "volumes": [{"name": "d", "emptyDir": {}}]}})).is_empty());
        assert!(causes("", "Service", json!({"metadata": {"name": "svc"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}], "selector": {"app": "web"}}})).is_empty());
        assert!(
            causes(
                "",
                "ConfigMap",
                json!({"metadata": {"name": "cfg"}, "data": {"a.b_c-d": "x"}})
            )
            .is_empty()
        );
        assert!(causes("batch", "CronJob", json!({"metadata": {"name": "c"}, "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}}}}})).is_empty());
        assert!(
            causes(
                "rbac.authorization.k8s.io",
                "ClusterRole",
                json!({"metadata": {"name": "system:controller:foo"}})
            )
            .is_empty()
        );
    }

    #[test]
    fn names_are_checked_per_kind() {
        let bad = causes("", "ConfigMap", json!({"metadata": {"name": "Bad_Name"}}));
        assert_eq!(bad.len(), 1);
        assert!(
            bad[0].starts_with(
                "metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"
            ),
            "{}",
            bad[0]
        );
        assert!(!causes("", "Namespace", json!({"metadata": {"name": "a.b"}})).is_empty());
        assert!(
            !causes(
                "",
                "Service",
                json!({"metadata": {"name": "1svc"}, "spec": {"ports": [{"port": 1}]}})
            )
            .is_empty()
        );
    }

    #[test]
    fn pods_need_containers_with_images() {
        assert_eq!(
            causes(
                "",
                "Pod",
                json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}})
            ),
            ["spec.containers[0].image: Required value"]
        );
        assert_eq!(
            causes(
                "",
                "Pod",
                json!({"metadata": {"name": "p"}, "spec": {"containers": []}})
            ),
            ["spec.containers: Required value"]
        );
        let dup = causes(
            "",
            "Pod",
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}], "initContainers": [{"name": "c", "image": "i"}]}}),
        );
        assert_eq!(dup, ["spec.initContainers[0].name: Duplicate value: \"c\""]);
        let policy = causes(
            "",
            "Pod",
            json!({"metadata": {"name": "p"}, "spec": {"restartPolicy": "Sometimes", "containers": [{"name": "c", "image": "i"}]}}),
        );
        assert_eq!(
            policy,
            [
                "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\""
            ]
        );
        let mount = causes(
            "",
            "Pod",
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i", "volumeMounts": [{"name": "x", "mountPath": "/x"}]}]}}),
        );
        assert_eq!(
            mount,
            ["spec.containers[0].volumeMounts[0].name: Not found: \"x\""]
        );
    }

    #[test]
    fn workload_selectors_must_match_their_templates_and_stay_fixed() {
        let mut d = deployment();
        d["spec"]["template"]["metadata"]["labels"]["app"] = "other".into();
        let c = causes("apps", "Deployment", d);
        assert_eq!(c.len(), 1);
        assert!(
            c[0].starts_with("spec.template.metadata.labels: Invalid value:")
                && c[0].ends_with("`selector` does not match template `labels`"),
            "{}",
            c[0]
        );
        let mut no_sel = deployment();
        no_sel["spec"]["selector"] = Value::Null;
        assert_eq!(
            causes("apps", "Deployment", no_sel),
            ["spec.selector: Required value"]
        );
        let old = deployment();
        let mut new = deployment();
        new["spec"]["selector"]["matchLabels"]["tier"] = "x".into();
        new["spec"]["template"]["metadata"]["labels"]["tier"] = "x".into();
        let c: Vec<String> = validate("apps", "Deployment", &new, Some(&old))
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(
            c.iter()
                .any(|c| c.starts_with("spec.selector: Invalid value:")
                    && c.ends_with("field is immutable")),
            "{c:?}"
        );
    }

    #[test]
    fn jobs_must_not_restart_always() {
        let c = causes(
            "batch",
            "Job",
            json!({"metadata": {"name": "j"}, "spec": {"template": {"spec": {"restartPolicy": "Always", "containers": [{"name": "c", "image": "i"}]}}}}),
        );
        assert_eq!(
            c,
            [
                "spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""
            ]
        );
    }

    #[test]
    fn services_need_valid_ports() {
        assert_eq!(
            causes(
                "",
                "Service",
                json!({"metadata": {"name": "s"}, "spec": {"type": "ClusterIP"}})
            ),
            ["spec.ports: Required value"]
        );
        let c = causes(
            "",
            "Service",
            json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 0}]}}),
        );
        assert_eq!(
            c,
            ["spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"]
        );
        let c = causes(
            "",
            "Service",
            json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}, {"port": 81}]}}),
        );
        assert_eq!(
            c,
            [
                "spec.ports[0].name: Required value",
                "spec.ports[1].name: Required value"
            ]
        );
    }

    #[test]
    fn config_keys_and_sizes_are_limited_and_immutable_data_stays() {
        let c = causes(
            "",
            "ConfigMap",
            json!({"metadata": {"name": "c"}, "data": {"bad key": "x"}}),
        );
        assert!(
            c[0].starts_with("data[bad key]: Invalid value: \"bad key\": a valid config key"),
            "{c:?}"
        );
        let big = causes(
            "",
            "ConfigMap",
            json!({"metadata": {"name": "c"}, "data": {"k": "x".repeat(MAX_CONFIG_BYTES + 1)}}),
        );
        assert_eq!(big, ["Too long: must have at most 1048576 bytes"]);
        let old = json!({"metadata": {"name": "c"}, "immutable": true, "data": {"a": "1"}});
        let new = json!({"metadata": {"name": "c"}, "immutable": true, "data": {"a": "2"}});
        assert_eq!(validate("", "ConfigMap", &new, Some(&old)).len(), 1);
    }

    #[test]
    fn pod_specs_are_immutable_except_images() {
        let old = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n", "containers": [{"name": "c", "image": "a"}]}});
        let image = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n", "containers": [{"name": "c", "image": "b"}]}});
        assert!(validate("", "Pod", &image, Some(&old)).is_empty());
        let pending = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "a"}]}, "status": {"phase": "Pending"}});
        let status_only = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "a"}]}, "status": {"phase": "Pending", "conditions": []}});
        assert!(
            validate("", "Pod", &status_only, Some(&pending)).is_empty(),
            "unscheduled pods take status updates"
        );
        let self_bound = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n", "containers": [{"name": "c", "image": "a"}]}});
        assert_eq!(
            validate("", "Pod", &self_bound, Some(&pending)).len(),
            1,
            "updates may not bind"
        );
        let cmd = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n", "containers": [{"name": "c", "image": "a", "command": ["x"]}]}});
        let c = validate("", "Pod", &cmd, Some(&old));
        assert_eq!(c.len(), 1);
        assert!(
            c[0].to_string()
                .starts_with("spec: Forbidden: pod updates may not change fields other than")
        );
    }
}
