//! Per-kind rules applied around storage, in the role of upstream's registry strategies:
//! what the server sets on create (uid, timestamps, generation, initial status), what an
//! update of the main resource or of the status subresource may change, when generation is
//! bumped, and the pod binding and scale views.
//!
//! Pure functions over JSON objects; the handlers in [`crate::api`] call them in order.

use apimachinery::meta;
use apimachinery::resources::{ResourceInfo, Subresource};
use apimachinery::status::{ApiError, FieldCause};
use serde_json::{Map, Value, json};

/// Kinds whose objects carry `metadata.generation`, bumped when anything but metadata and
/// status changes.
fn tracks_generation(r: &ResourceInfo) -> bool {
    r.has(Subresource::Status) && r.kind != "Pod" && r.kind != "Node" && r.kind != "Namespace"
}

/// Kinds whose status is cleared on create (the controllers fill it in).
fn clears_status_on_create(r: &ResourceInfo) -> bool {
    matches!(
        r.kind,
        "Deployment"
            | "ReplicaSet"
            | "DaemonSet"
            | "StatefulSet"
            | "Job"
            | "CronJob"
            | "PodDisruptionBudget"
            | "CertificateSigningRequest"
    )
}

/// The current time as an RFC 3339 timestamp with seconds precision, as metav1.Time encodes.
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Sets what the server owns on a new object: uid, creationTimestamp, generation, initial
/// status; clears fields clients may not set.
pub fn prepare_create(r: &ResourceInfo, obj: &mut Value) {
    let now = now_rfc3339();
    let m = meta::metadata_mut(obj);
    m.insert("uid".into(), uuid::Uuid::new_v4().to_string().into());
    m.insert("creationTimestamp".into(), now.into());
    for field in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
        "managedFields",
    ] {
        m.remove(field);
    }
    if tracks_generation(r) {
        m.insert("generation".into(), 1.into());
    } else {
        m.remove("generation");
    }
    if clears_status_on_create(r) {
        obj["status"] = json!({});
    }
    match r.kind {
        "Pod" => {
            let qos = pod_qos_class(obj);
            let status = obj
                .as_object_mut()
                .expect("objects are JSON objects")
                .entry("status")
                .or_insert_with(|| json!({}));
            if status.get("phase").is_none_or(Value::is_null) {
                status["phase"] = "Pending".into();
            }
            status["qosClass"] = qos.into();
        }
        "Namespace" => {
            obj["status"] = json!({"phase": "Active"});
        }
        "Service" if obj.get("status").is_none() => {
            obj["status"] = json!({"loadBalancer": {}});
        }
        "PersistentVolumeClaim" => {
            obj["status"] = json!({"phase": "Pending"});
        }
        "PersistentVolume" => {
            obj["status"] = json!({"phase": "Pending"});
        }
        _ => {}
    }
}

/// Builds the object stored by an update from the client's `new` and the stored `old`:
/// server-owned metadata is carried over, the main resource keeps the old status and the
/// status subresource keeps everything but status; generation is bumped on a spec change.
pub fn prepare_update(r: &ResourceInfo, sub: Option<Subresource>, new: &mut Value, old: &Value) {
    let old_meta = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
    {
        let m = meta::metadata_mut(new);
        for field in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match old_meta.get(field) {
                Some(v) => m.insert(field.into(), v.clone()),
                None => m.remove(field),
            };
        }
        m.remove("selfLink");
        m.remove("managedFields");
    }
    match sub {
        Some(Subresource::Status) | Some(Subresource::Approval) => {
            // Everything but status (and, for approval, the conditions in it) comes from the
            // stored object; labels, annotations, finalizers and owners too, as upstream.
            let status = new.get("status").cloned();
            let mut merged = old.clone();
            match status {
                Some(s) => merged["status"] = s,
                None => {
                    if let Some(o) = merged.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
            let rv = meta::resource_version(new).map(String::from);
            meta::set(&mut merged, "resourceVersion", rv.map(Value::from));
            *new = merged;
        }
        _ => {
            if r.has(Subresource::Status) {
                match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        if let Some(o) = new.as_object_mut() {
                            o.remove("status");
                        }
                    }
                }
            }
            if tracks_generation(r) && spec_changed(new, old) {
                let generation = old_meta
                    .get("generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
                    + 1;
                meta::set(new, "generation", Some(generation.into()));
            }
        }
    }
}

/// Whether anything outside metadata and status differs.
fn spec_changed(new: &Value, old: &Value) -> bool {
    let strip = |v: &Value| -> Map<String, Value> {
        let mut m = v.as_object().cloned().unwrap_or_default();
        m.remove("metadata");
        m.remove("status");
        m
    };
    strip(new) != strip(old)
}

/// Whether two objects are the same apart from resourceVersion: such an update writes nothing.
pub fn unchanged(new: &Value, old: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        meta::set(&mut v, "resourceVersion", None);
        v
    };
    strip(new) == strip(old)
}

/// Drops empty maps and lists that upstream's encoder omits (`omitempty` maps and slices of
/// object metadata and config data), so `kubectl label x a-` leaves no `labels: {}`.
pub fn drop_empty_fields(obj: &mut Value) {
    let empty = |v: &Value| {
        v.as_object().is_some_and(Map::is_empty) || v.as_array().is_some_and(Vec::is_empty)
    };
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.retain(|k, v| {
            !(matches!(
                k.as_str(),
                "labels" | "annotations" | "finalizers" | "ownerReferences"
            ) && empty(v))
        });
    }
    if let Some(m) = obj.as_object_mut() {
        m.retain(|k, v| !(matches!(k.as_str(), "data" | "binaryData" | "stringData") && empty(v)));
    }
}

/// Folds a Secret's write-only `stringData` into `data` (base64), as upstream does on every
/// write; `stringData` is never stored.
pub fn fold_string_data(obj: &mut Value) {
    use base64::Engine;
    let Some(string_data) = obj.as_object_mut().and_then(|o| o.remove("stringData")) else {
        return;
    };
    let Some(entries) = string_data.as_object() else {
        return;
    };
    if !obj["data"].is_object() {
        obj["data"] = json!({});
    }
    for (k, v) in entries {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap_or_default());
        obj["data"][k] = encoded.into();
    }
}

/// The pod's QoS class from its containers' requests and limits.
pub fn pod_qos_class(pod: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|f| pod["spec"][*f].as_array())
        .flatten()
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        let requests = c["resources"]["requests"].as_object();
        let limits = c["resources"]["limits"].as_object();
        for res in ["cpu", "memory"] {
            let req = requests.and_then(|r| r.get(res)).and_then(Value::as_str);
            let lim = limits.and_then(|l| l.get(res)).and_then(Value::as_str);
            if req.is_some() || lim.is_some() {
                any = true;
            }
            match (req, lim) {
                (_, None) => guaranteed = false,
                (Some(q), Some(l)) if q != l => guaranteed = false,
                _ => {}
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Applies a Binding to a pod: sets `spec.nodeName` and the PodScheduled condition.
pub fn bind_pod(pod: &mut Value, binding: &Value, pod_name: &str) -> Result<(), ApiError> {
    let node = binding["target"]["name"].as_str().unwrap_or_default();
    if node.is_empty() {
        return Err(ApiError::invalid(
            "",
            "Binding",
            pod_name,
            vec![FieldCause::required("target.name")],
        ));
    }
    if let Some(current) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
        return Err(ApiError::conflict(
            "pods/binding",
            pod_name,
            &format!("pod {pod_name} is already assigned to node \"{current}\""),
        ));
    }
    if meta::is_being_deleted(pod) {
        return Err(ApiError::conflict(
            "pods/binding",
            pod_name,
            "pod is being deleted",
        ));
    }
    pod["spec"]["nodeName"] = node.into();
    let status = pod
        .as_object_mut()
        .expect("pods are objects")
        .entry("status")
        .or_insert_with(|| json!({}));
    let conditions = status
        .as_object_mut()
        .expect("status is an object")
        .entry("conditions")
        .or_insert_with(|| json!([]));
    if let Some(list) = conditions.as_array_mut() {
        list.retain(|c| c["type"] != "PodScheduled");
        list.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now_rfc3339()}));
    }
    Ok(())
}

/// The autoscaling/v1 Scale view of a scalable object.
pub fn scale_of(obj: &Value) -> Value {
    let m = &obj["metadata"];
    let selector = obj["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
            "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"],
        },
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    })
}

/// Applies a Scale's replicas to the scaled object.
pub fn apply_scale(obj: &mut Value, scale: &Value, name: &str) -> Result<(), ApiError> {
    match scale["spec"]["replicas"].as_i64() {
        Some(n) if n >= 0 => {
            obj["spec"]["replicas"] = n.into();
            Ok(())
        }
        Some(n) => Err(ApiError::invalid(
            "autoscaling",
            "Scale",
            name,
            vec![FieldCause::invalid(
                "spec.replicas",
                n,
                "must be greater than or equal to 0",
            )],
        )),
        None => {
            obj["spec"]["replicas"] = 0.into();
            Ok(())
        }
    }
}

/// Random suffix for generateName: five characters from upstream's alphabet (no vowels, no
/// look-alikes).
pub fn generate_name(prefix: &str) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    let suffix: String = (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    let prefix = if prefix.len() > 58 {
        &prefix[..58]
    } else {
        prefix
    };
    format!("{prefix}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use apimachinery::resources::find;

    #[test]
    fn create_sets_server_fields_and_pending_pods() {
        let pods = find("", "v1", "pods").unwrap();
        let mut pod = json!({"metadata": {"name": "p", "resourceVersion": "5"}, "spec": {"containers": [{"name": "c", "image": "x"}]}});
        prepare_create(pods, &mut pod);
        assert!(meta::uid(&pod).is_some());
        assert!(meta::resource_version(&pod).is_none());
        assert_eq!(pod["status"]["phase"], "Pending");
        assert_eq!(pod["status"]["qosClass"], "BestEffort");
        let deploy = find("apps", "v1", "deployments").unwrap();
        let mut d = json!({"metadata": {"name": "d"}, "spec": {}, "status": {"replicas": 3}});
        prepare_create(deploy, &mut d);
        assert_eq!(d["metadata"]["generation"], 1);
        assert_eq!(d["status"], json!({}));
    }

    #[test]
    fn main_updates_keep_status_and_bump_generation_only_on_spec_change() {
        let deploy = find("apps", "v1", "deployments").unwrap();
        let old = json!({"metadata": {"name": "d", "uid": "u", "generation": 2}, "spec": {"replicas": 1}, "status": {"replicas": 1}});
        let mut labels_only = json!({"metadata": {"name": "d", "labels": {"a": "b"}}, "spec": {"replicas": 1}, "status": {"replicas": 9}});
        prepare_update(deploy, None, &mut labels_only, &old);
        assert_eq!(labels_only["metadata"]["generation"], 2);
        assert_eq!(labels_only["status"]["replicas"], 1);
        assert_eq!(labels_only["metadata"]["uid"], "u");
        let mut scaled = json!({"metadata": {"name": "d"}, "spec": {"replicas": 3}});
        prepare_update(deploy, None, &mut scaled, &old);
        assert_eq!(scaled["metadata"]["generation"], 3);
    }

    #[test]
    fn status_updates_change_only_status() {
        let pods = find("", "v1", "pods").unwrap();
        let old = json!({"metadata": {"name": "p", "labels": {"a": "1"}}, "spec": {"nodeName": "n1"}, "status": {"phase": "Pending"}});
        let mut new = json!({"metadata": {"name": "p", "labels": {"a": "2"}, "resourceVersion": "7"}, "spec": {"nodeName": "evil"}, "status": {"phase": "Running"}});
        prepare_update(pods, Some(Subresource::Status), &mut new, &old);
        assert_eq!(new["spec"]["nodeName"], "n1");
        assert_eq!(new["metadata"]["labels"]["a"], "1");
        assert_eq!(new["status"]["phase"], "Running");
        assert_eq!(new["metadata"]["resourceVersion"], "7");
    }

    #[test]
    fn binding_sets_the_node_once() {
        let mut pod =
            json!({"metadata": {"name": "p"}, "spec": {}, "status": {"phase": "Pending"}});
        bind_pod(&mut pod, &json!({"target": {"name": "n1"}}), "p").unwrap();
        assert_eq!(pod["spec"]["nodeName"], "n1");
        assert_eq!(pod["status"]["conditions"][0]["type"], "PodScheduled");
        assert_eq!(
            bind_pod(&mut pod, &json!({"target": {"name": "n2"}}), "p")
                .unwrap_err()
                .code,
            409
        );
    }

    #[test]
    fn qos_classes_follow_requests_and_limits() {
        let pod = |res: Value| json!({"spec": {"containers": [{"name": "c", "resources": res}]}});
        assert_eq!(pod_qos_class(&pod(json!({}))), "BestEffort");
        assert_eq!(
            pod_qos_class(&pod(
                json!({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1", "memory": "1Gi"}})
            )),
            "Guaranteed"
        );
        assert_eq!(
            pod_qos_class(&pod(json!({"requests": {"cpu": "1"}}))),
            "Burstable"
        );
    }

    #[test]
    fn string_data_is_folded_into_data() {
        let mut secret = json!({"data": {"a": "eA=="}, "stringData": {"b": "hunter2"}});
        fold_string_data(&mut secret);
        assert_eq!(secret, json!({"data": {"a": "eA==", "b": "aHVudGVyMg=="}}));
    }

    #[test]
    fn generated_names_keep_the_prefix() {
        let n = generate_name("web-");
        assert!(n.starts_with("web-") && n.len() == 9);
    }
}
