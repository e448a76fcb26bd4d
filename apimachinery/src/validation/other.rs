//! ConfigMaps, Secrets, Namespaces, Nodes, volumes and claims, endpoints, events, leases,
//! EndpointSlices, RBAC, StorageClasses, PriorityClasses and PodDisruptionBudgets.

use serde_json::Value;

use super::{
    Detail, each_problem, formats, immutable, label_selector, non_negative, one_of, positive,
    required_str, too_long, too_many,
};
use crate::names;
use crate::status::FieldCause;

/// The largest total size of a ConfigMap's or Secret's data, in bytes.
pub const MAX_DATA_BYTES: usize = 1024 * 1024;

const IMMUTABLE_SET: &str = "field is immutable when `immutable` is set";

/// The decoded length of base64 text.
fn base64_len(s: &str) -> usize {
    let s = s.trim_end_matches('=');
    s.len() * 3 / 4
}

fn keys(map: &Value, field: &str, errs: &mut Vec<FieldCause>) {
    for k in map.as_object().into_iter().flat_map(|m| m.keys()) {
        each_problem(formats::config_key(k), &format!("{field}[{k}]"), k, errs);
    }
}

fn immutable_data(obj: &Value, old: Option<&Value>, fields: &[&str], errs: &mut Vec<FieldCause>) {
    let Some(old) = old.filter(|o| o["immutable"] == true) else {
        return;
    };
    for field in fields {
        if obj[*field] != old[*field] {
            errs.push(FieldCause::forbidden(*field, IMMUTABLE_SET));
        }
    }
    if obj["immutable"] != true {
        errs.push(FieldCause::forbidden("immutable", IMMUTABLE_SET));
    }
}

/// Validates a ConfigMap.
pub fn config_map(obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldCause>) {
    keys(&obj["data"], "data", errs);
    keys(&obj["binaryData"], "binaryData", errs);
    let mut total = 0;
    for (k, v) in obj["data"].as_object().into_iter().flatten() {
        total += v.as_str().map_or(0, str::len);
        if obj["binaryData"].get(k).is_some() {
            errs.push(FieldCause::invalid(
                format!("data[{k}]"),
                k.as_str(),
                "duplicate of key present in binaryData",
            ));
        }
    }
    for v in obj["binaryData"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
    {
        total += base64_len(v.as_str().unwrap_or(""));
    }
    if total > MAX_DATA_BYTES {
        errs.push(too_long("", MAX_DATA_BYTES));
    }
    immutable_data(obj, old, &["data", "binaryData"], errs);
}

/// Validates a Secret.
pub fn secret(obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldCause>) {
    let data = &obj["data"];
    keys(data, "data", errs);
    let total: usize = data
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
        .map(|v| base64_len(v.as_str().unwrap_or("")))
        .sum();
    if total > MAX_DATA_BYTES {
        errs.push(too_long("data", MAX_DATA_BYTES));
    }
    let has = |k: &str| data.get(k).is_some();
    let ty = obj["type"].as_str().unwrap_or("Opaque");
    match ty {
        "kubernetes.io/service-account-token" => {
            let annotation = "kubernetes.io/service-account.name";
            if obj["metadata"]["annotations"][annotation]
                .as_str()
                .is_none_or(str::is_empty)
            {
                errs.push(FieldCause::required(format!(
                    "metadata.annotations[{annotation}]"
                )));
            }
        }
        "kubernetes.io/dockercfg" if !has(".dockercfg") => {
            errs.push(FieldCause::required("data[.dockercfg]"))
        }
        "kubernetes.io/dockerconfigjson" if !has(".dockerconfigjson") => {
            errs.push(FieldCause::required("data[.dockerconfigjson]"))
        }
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            errs.push(FieldCause::required("data[username]"));
            errs.push(FieldCause::required("data[password]"));
        }
        "kubernetes.io/ssh-auth" if !has("ssh-privatekey") => {
            errs.push(FieldCause::required("data[ssh-privatekey]"))
        }
        "kubernetes.io/tls" => {
            for k in ["tls.key", "tls.crt"] {
                if !has(k) {
                    errs.push(FieldCause::required(format!("data[{k}]")));
                }
            }
        }
        _ => {}
    }
    if let Some(old) = old {
        immutable(&obj["type"], &old["type"], "type", errs);
    }
    immutable_data(obj, old, &["data"], errs);
}

/// Validates a Namespace (its name is checked with the metadata).
pub fn namespace(obj: &Value, errs: &mut Vec<FieldCause>) {
    for (i, f) in obj["spec"]["finalizers"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let f = f.as_str().unwrap_or("");
        let path = format!("spec.finalizers[{i}]");
        let problems = names::qualified_name(f);
        if !problems.is_empty() {
            each_problem(problems, &path, f, errs);
        } else if !f.contains('/') && f != "kubernetes" {
            errs.push(FieldCause::invalid(
                path,
                f,
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
}

/// Validates a Node.
pub fn node(obj: &Value, errs: &mut Vec<FieldCause>) {
    for (i, t) in obj["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let at = format!("spec.taints[{i}]");
        if let Some(key) = required_str(&t["key"], &format!("{at}.key"), errs) {
            each_problem(names::qualified_name(key), &format!("{at}.key"), key, errs);
        }
        one_of(
            &t["effect"],
            &format!("{at}.effect"),
            &["NoExecute", "NoSchedule", "PreferNoSchedule"],
            true,
            errs,
        );
    }
}

const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];

fn access_modes(v: &Value, path: &str, errs: &mut Vec<FieldCause>) {
    match v.as_array().filter(|a| !a.is_empty()) {
        None => errs.push(FieldCause::required(path).detail("at least 1 access mode is required")),
        Some(modes) => {
            for m in modes {
                one_of(m, path, ACCESS_MODES, false, errs);
            }
        }
    }
}

/// Validates a PersistentVolume.
pub fn persistent_volume(obj: &Value, errs: &mut Vec<FieldCause>) {
    let spec = &obj["spec"];
    access_modes(&spec["accessModes"], "spec.accessModes", errs);
    if spec["capacity"]["storage"].is_null() {
        errs.push(FieldCause::required("spec.capacity"));
    }
    one_of(
        &spec["persistentVolumeReclaimPolicy"],
        "spec.persistentVolumeReclaimPolicy",
        &["Delete", "Recycle", "Retain"],
        false,
        errs,
    );
    one_of(
        &spec["volumeMode"],
        "spec.volumeMode",
        &["Block", "Filesystem"],
        false,
        errs,
    );
}

/// Validates a PersistentVolumeClaim; its spec is fixed once created but for the requests.
pub fn persistent_volume_claim(obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldCause>) {
    let spec = &obj["spec"];
    access_modes(&spec["accessModes"], "spec.accessModes", errs);
    if spec["resources"]["requests"]["storage"].is_null() {
        errs.push(FieldCause::required("spec.resources[storage]"));
    }
    one_of(
        &spec["volumeMode"],
        "spec.volumeMode",
        &["Block", "Filesystem"],
        false,
        errs,
    );
    if let Some(old) = old {
        let strip = |s: &Value| {
            let mut s = s.clone();
            if let Some(m) = s.as_object_mut() {
                m.remove("volumeAttributesClassName");
                if let Some(r) = m.get_mut("resources").and_then(Value::as_object_mut) {
                    r.remove("requests");
                }
            }
            if old["spec"]["volumeName"].as_str().is_none_or(str::is_empty)
                && let Some(m) = s.as_object_mut()
            {
                m.remove("volumeName");
            }
            s
        };
        if strip(spec) != strip(&old["spec"]) {
            errs.push(FieldCause::forbidden(
                "spec",
                "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
            ));
        }
    }
}

/// Validates Endpoints.
pub fn endpoints(obj: &Value, errs: &mut Vec<FieldCause>) {
    for (i, s) in obj["subsets"].as_array().into_iter().flatten().enumerate() {
        for list in ["addresses", "notReadyAddresses"] {
            for (j, a) in s[list].as_array().into_iter().flatten().enumerate() {
                let path = format!("subsets[{i}].{list}[{j}].ip");
                if let Some(ip) = required_str(&a["ip"], &path, errs) {
                    each_problem(formats::ip(ip), &path, ip, errs);
                }
            }
        }
        for (j, p) in s["ports"].as_array().into_iter().flatten().enumerate() {
            let at = format!("subsets[{i}].ports[{j}]");
            super::port_and_protocol(p, &at, true, errs);
        }
    }
}

/// Validates a core/v1 Event: its involved object must be in its namespace.
pub fn core_event(obj: &Value, errs: &mut Vec<FieldCause>) {
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or("");
    let involved = obj["involvedObject"]["namespace"].as_str().unwrap_or("");
    if !involved.is_empty() && !ns.is_empty() && involved != ns {
        errs.push(FieldCause::invalid(
            "involvedObject.namespace",
            involved,
            "does not match event.namespace",
        ));
    }
    if obj["reportingController"]
        .as_str()
        .is_some_and(|c| !c.is_empty())
    {
        one_of(&obj["type"], "type", &["Normal", "Warning"], false, errs);
    }
}

/// Validates an events.k8s.io/v1 Event, which must say who reported what and when.
pub fn events_event(obj: &Value, errs: &mut Vec<FieldCause>) {
    if obj["eventTime"].as_str().is_none_or(str::is_empty) {
        errs.push(FieldCause::required("eventTime"));
    }
    let ty = obj["type"].as_str().unwrap_or("");
    if ty != "Normal" && ty != "Warning" {
        errs.push(FieldCause::invalid(
            "type",
            "",
            format!("has invalid value: {ty}"),
        ));
    }
    for field in [
        "reportingController",
        "reportingInstance",
        "action",
        "reason",
    ] {
        required_str(&obj[field], field, errs);
    }
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or("");
    let regarding = obj["regarding"]["namespace"].as_str().unwrap_or("");
    if !regarding.is_empty() && !ns.is_empty() && regarding != ns {
        errs.push(FieldCause::invalid(
            "regarding.namespace",
            regarding,
            "does not match event.namespace",
        ));
    }
}

/// Validates a Lease.
pub fn lease(obj: &Value, errs: &mut Vec<FieldCause>) {
    let spec = &obj["spec"];
    positive(
        &spec["leaseDurationSeconds"],
        "spec.leaseDurationSeconds",
        errs,
    );
    non_negative(&spec["leaseTransitions"], "spec.leaseTransitions", errs);
}

/// Validates an EndpointSlice.
pub fn endpoint_slice(obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldCause>) {
    let address_type = obj["addressType"].as_str().unwrap_or("");
    one_of(
        &obj["addressType"],
        "addressType",
        &["FQDN", "IPv4", "IPv6"],
        true,
        errs,
    );
    let endpoints = obj["endpoints"].as_array().cloned().unwrap_or_default();
    if endpoints.len() > 1000 {
        errs.push(too_many("endpoints", endpoints.len(), 1000));
    }
    for (i, e) in endpoints.iter().enumerate() {
        let at = format!("endpoints[{i}].addresses");
        let addresses = e["addresses"].as_array().cloned().unwrap_or_default();
        if addresses.is_empty() {
            errs.push(FieldCause::required(&at).detail("must contain at least 1 address"));
        } else if addresses.len() > 100 {
            errs.push(too_many(&at, addresses.len(), 100));
        }
        for (j, a) in addresses.iter().enumerate() {
            let a = a.as_str().unwrap_or("");
            let path = format!("{at}[{j}]");
            let ok = match address_type {
                "IPv4" => a.parse::<std::net::Ipv4Addr>().is_ok(),
                "IPv6" => a.parse::<std::net::Ipv6Addr>().is_ok(),
                "FQDN" => names::dns1123_subdomain(a).is_empty(),
                _ => true,
            };
            if !ok {
                let why = match address_type {
                    "IPv4" => "must be a valid IPv4 address".to_string(),
                    "IPv6" => "must be a valid IPv6 address".to_string(),
                    _ => names::dns1123_subdomain(a).join(", "),
                };
                errs.push(FieldCause::invalid(path, a, why));
            }
        }
        if let Some(h) = e["hostname"].as_str() {
            each_problem(
                names::dns1123_label(h),
                &format!("endpoints[{i}].hostname"),
                h,
                errs,
            );
        }
    }
    let mut names_seen: Vec<&str> = Vec::new();
    let ports = obj["ports"].as_array();
    for (i, p) in ports.into_iter().flatten().enumerate() {
        let at = format!("ports[{i}]");
        let name = p["name"].as_str().unwrap_or("");
        if !name.is_empty() {
            each_problem(
                names::dns1123_label(name),
                &format!("{at}.name"),
                name,
                errs,
            );
        }
        if names_seen.contains(&name) {
            errs.push(FieldCause::duplicate(format!("{at}.name"), name));
        }
        names_seen.push(name);
        super::port_and_protocol(p, &at, false, errs);
    }
    if let Some(old) = old {
        immutable(
            &obj["addressType"],
            &old["addressType"],
            "addressType",
            errs,
        );
    }
}

/// Validates the RBAC kinds.
pub fn rbac(kind: &str, obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldCause>) {
    match kind {
        "Role" | "ClusterRole" => {
            for (i, r) in obj["rules"].as_array().into_iter().flatten().enumerate() {
                let at = format!("rules[{i}]");
                let non_empty = |k: &str| r[k].as_array().is_some_and(|a| !a.is_empty());
                if !non_empty("verbs") {
                    errs.push(
                        FieldCause::required(format!("{at}.verbs"))
                            .detail("verbs must contain at least one value"),
                    );
                }
                if non_empty("nonResourceURLs") {
                    if kind == "Role" {
                        errs.push(FieldCause::invalid(
                            format!("{at}.nonResourceURLs"),
                            r["nonResourceURLs"].clone(),
                            "namespaced rules cannot apply to non-resource URLs",
                        ));
                    }
                    if non_empty("apiGroups") || non_empty("resources") {
                        errs.push(FieldCause::invalid(
                            format!("{at}.nonResourceURLs"),
                            r["nonResourceURLs"].clone(),
                            "rules cannot apply to both regular resources and non-resource URLs",
                        ));
                    }
                } else if !non_empty("apiGroups") && obj["aggregationRule"].is_null() {
                    errs.push(
                        FieldCause::required(format!("{at}.apiGroups"))
                            .detail("resource rules must supply at least one api group"),
                    );
                } else if !non_empty("resources") && obj["aggregationRule"].is_null() {
                    errs.push(
                        FieldCause::required(format!("{at}.resources"))
                            .detail("resource rules must supply at least one resource"),
                    );
                }
            }
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            let role_ref = &obj["roleRef"];
            if role_ref["apiGroup"] != "rbac.authorization.k8s.io" {
                errs.push(FieldCause::not_supported(
                    "roleRef.apiGroup",
                    role_ref["apiGroup"].as_str().unwrap_or(""),
                    &["rbac.authorization.k8s.io"],
                ));
            }
            let kinds: &[&str] = if kind == "RoleBinding" {
                &["Role", "ClusterRole"]
            } else {
                &["ClusterRole"]
            };
            one_of(&role_ref["kind"], "roleRef.kind", kinds, false, errs);
            if let Some(name) = required_str(&role_ref["name"], "roleRef.name", errs) {
                each_problem(formats::path_segment(name), "roleRef.name", name, errs);
            }
            for (i, s) in obj["subjects"].as_array().into_iter().flatten().enumerate() {
                let at = format!("subjects[{i}]");
                required_str(&s["name"], &format!("{at}.name"), errs);
                one_of(
                    &s["kind"],
                    &format!("{at}.kind"),
                    &["Group", "ServiceAccount", "User"],
                    true,
                    errs,
                );
                if s["kind"] == "ServiceAccount" {
                    if s["apiGroup"].as_str().is_some_and(|g| !g.is_empty()) {
                        errs.push(FieldCause::not_supported(
                            format!("{at}.apiGroup"),
                            s["apiGroup"].as_str().unwrap_or(""),
                            &[""],
                        ));
                    }
                    if kind == "ClusterRoleBinding"
                        && s["namespace"].as_str().is_none_or(str::is_empty)
                    {
                        errs.push(FieldCause::required(format!("{at}.namespace")));
                    }
                }
            }
            if let Some(old) = old
                && role_ref != &old["roleRef"]
            {
                errs.push(FieldCause::invalid(
                    "roleRef",
                    role_ref.clone(),
                    "cannot change roleRef",
                ));
            }
        }
        _ => {}
    }
}

/// Validates a StorageClass.
pub fn storage_class(obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldCause>) {
    if let Some(p) = required_str(&obj["provisioner"], "provisioner", errs) {
        each_problem(names::qualified_name(p), "provisioner", p, errs);
    }
    one_of(
        &obj["reclaimPolicy"],
        "reclaimPolicy",
        &["Delete", "Retain"],
        false,
        errs,
    );
    one_of(
        &obj["volumeBindingMode"],
        "volumeBindingMode",
        &["Immediate", "WaitForFirstConsumer"],
        false,
        errs,
    );
    if let Some(old) = old {
        for field in [
            "parameters",
            "provisioner",
            "reclaimPolicy",
            "volumeBindingMode",
        ] {
            if obj[field] != old[field] {
                errs.push(FieldCause::forbidden(
                    field,
                    format!("updates to {field} are forbidden."),
                ));
            }
        }
    }
}

/// Validates a PriorityClass.
pub fn priority_class(obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldCause>) {
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    if name.starts_with("system-")
        && !matches!(name, "system-node-critical" | "system-cluster-critical")
    {
        errs.push(FieldCause::invalid(
            "metadata.name",
            name,
            "priority class names with 'system-' prefix are reserved",
        ));
    }
    one_of(
        &obj["preemptionPolicy"],
        "preemptionPolicy",
        &["Never", "PreemptLowerPriority"],
        false,
        errs,
    );
    if let Some(old) = old
        && obj["value"] != old["value"]
    {
        errs.push(FieldCause::forbidden(
            "value",
            "may not be changed in an update.",
        ));
    }
}

/// Validates a PodDisruptionBudget.
pub fn pod_disruption_budget(obj: &Value, errs: &mut Vec<FieldCause>) {
    let spec = &obj["spec"];
    if !spec["minAvailable"].is_null() && !spec["maxUnavailable"].is_null() {
        errs.push(FieldCause::invalid(
            "spec",
            spec.clone(),
            "minAvailable and maxUnavailable cannot be both set",
        ));
    }
    for field in ["minAvailable", "maxUnavailable"] {
        let v = &spec[field];
        match formats::int_or_percent(v) {
            Err(m) => errs.push(FieldCause::invalid(format!("spec.{field}"), v.clone(), m)),
            Ok(Some((n, percent))) if n < 0 || (percent && n > 100) => {
                let why = if n < 0 {
                    "must be greater than or equal to 0"
                } else {
                    "must not be greater than 100%"
                };
                errs.push(FieldCause::invalid(format!("spec.{field}"), v.clone(), why));
            }
            _ => {}
        }
    }
    if spec["selector"].is_object() {
        label_selector(&spec["selector"], "spec.selector", errs);
    }
    one_of(
        &spec["unhealthyPodEvictionPolicy"],
        "spec.unhealthyPodEvictionPolicy",
        &["AlwaysAllow", "IfHealthyBudget"],
        false,
        errs,
    );
}
