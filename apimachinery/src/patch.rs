//! The patch formats: JSON patch (RFC 6902) and JSON merge patch (RFC 7386) through the
//! json-patch crate, and Kubernetes strategic merge patch.
//!
//! Strategic merge patch needs to know, for each list, whether it is replaced (the default),
//! merged element by element on a key (containers by `name`), or merged as a set of primitives
//! (`finalizers`). The structure of each kind comes from its k8s-openapi JSON schema; the
//! strategies come from [`LIST_STRATEGIES`], the `patchStrategy`/`patchMergeKey` tags of the
//! upstream API types. Directives: `$patch` (replace, delete, merge), `$retainKeys`,
//! `$deleteFromPrimitiveList/<field>` and `$setElementOrder/<field>`; none survive into the
//! result.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::{Map, Value};

use crate::resources::{self, Subresource};

/// Why a patch could not be applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PatchError {
    /// The patch document is not valid for its format.
    #[error("{0}")]
    Invalid(String),
    /// A JSON patch operation failed (e.g. a `test` did not match, a path is missing).
    #[error("the server rejected our request due to an error in our request: {0}")]
    Failed(String),
}

/// Applies a JSON patch (a list of operations).
pub fn json_patch(doc: &Value, patch: &Value) -> Result<Value, PatchError> {
    let ops: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| PatchError::Invalid(format!("invalid JSON patch: {e}")))?;
    let mut out = doc.clone();
    json_patch::patch(&mut out, &ops).map_err(|e| PatchError::Failed(e.to_string()))?;
    Ok(out)
}

/// Applies a JSON merge patch; the patch must be an object.
pub fn merge_patch(doc: &Value, patch: &Value) -> Result<Value, PatchError> {
    if !patch.is_object() {
        return Err(PatchError::Invalid(
            "a merge patch must be a JSON object".into(),
        ));
    }
    let mut out = doc.clone();
    json_patch::merge(&mut out, patch);
    Ok(out)
}

/// How a list field is patched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListStrategy {
    /// Merge elements with equal values of the key.
    MergeByKey(&'static str),
    /// Union of primitive values.
    MergePrimitives,
}

/// (definition, field, strategy, whether elements are union types cleared by `$retainKeys`).
const LIST_STRATEGIES: &[(&str, &str, ListStrategy)] = {
    use ListStrategy::{MergeByKey as Key, MergePrimitives as Set};
    &[
        (
            "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
            "finalizers",
            Set,
        ),
        (
            "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
            "ownerReferences",
            Key("uid"),
        ),
        ("io.k8s.api.core.v1.PodSpec", "containers", Key("name")),
        ("io.k8s.api.core.v1.PodSpec", "initContainers", Key("name")),
        (
            "io.k8s.api.core.v1.PodSpec",
            "ephemeralContainers",
            Key("name"),
        ),
        ("io.k8s.api.core.v1.PodSpec", "volumes", Key("name")),
        (
            "io.k8s.api.core.v1.PodSpec",
            "imagePullSecrets",
            Key("name"),
        ),
        ("io.k8s.api.core.v1.PodSpec", "hostAliases", Key("ip")),
        (
            "io.k8s.api.core.v1.PodSpec",
            "topologySpreadConstraints",
            Key("topologyKey"),
        ),
        ("io.k8s.api.core.v1.PodSpec", "resourceClaims", Key("name")),
        ("io.k8s.api.core.v1.PodSpec", "schedulingGates", Key("name")),
        (
            "io.k8s.api.core.v1.Container",
            "ports",
            Key("containerPort"),
        ),
        ("io.k8s.api.core.v1.Container", "env", Key("name")),
        (
            "io.k8s.api.core.v1.Container",
            "volumeMounts",
            Key("mountPath"),
        ),
        (
            "io.k8s.api.core.v1.Container",
            "volumeDevices",
            Key("devicePath"),
        ),
        (
            "io.k8s.api.core.v1.EphemeralContainer",
            "ports",
            Key("containerPort"),
        ),
        ("io.k8s.api.core.v1.EphemeralContainer", "env", Key("name")),
        (
            "io.k8s.api.core.v1.EphemeralContainer",
            "volumeMounts",
            Key("mountPath"),
        ),
        (
            "io.k8s.api.core.v1.EphemeralContainer",
            "volumeDevices",
            Key("devicePath"),
        ),
        ("io.k8s.api.core.v1.PodStatus", "conditions", Key("type")),
        ("io.k8s.api.core.v1.PodStatus", "podIPs", Key("ip")),
        ("io.k8s.api.core.v1.PodStatus", "hostIPs", Key("ip")),
        (
            "io.k8s.api.core.v1.PodStatus",
            "resourceClaimStatuses",
            Key("name"),
        ),
        ("io.k8s.api.core.v1.NodeSpec", "podCIDRs", Set),
        ("io.k8s.api.core.v1.NodeStatus", "conditions", Key("type")),
        ("io.k8s.api.core.v1.NodeStatus", "addresses", Key("type")),
        ("io.k8s.api.core.v1.ServiceSpec", "ports", Key("port")),
        (
            "io.k8s.api.core.v1.ServiceStatus",
            "conditions",
            Key("type"),
        ),
        (
            "io.k8s.api.core.v1.NamespaceStatus",
            "conditions",
            Key("type"),
        ),
        (
            "io.k8s.api.core.v1.PersistentVolumeClaimStatus",
            "conditions",
            Key("type"),
        ),
        (
            "io.k8s.api.apps.v1.DeploymentStatus",
            "conditions",
            Key("type"),
        ),
        (
            "io.k8s.api.apps.v1.ReplicaSetStatus",
            "conditions",
            Key("type"),
        ),
        (
            "io.k8s.api.apps.v1.DaemonSetStatus",
            "conditions",
            Key("type"),
        ),
        (
            "io.k8s.api.apps.v1.StatefulSetStatus",
            "conditions",
            Key("type"),
        ),
        ("io.k8s.api.batch.v1.JobStatus", "conditions", Key("type")),
        (
            "io.k8s.api.policy.v1.PodDisruptionBudgetStatus",
            "conditions",
            Key("type"),
        ),
    ]
};

/// Fields whose value is a union: `$retainKeys` may clear the members not named.
const RETAIN_KEYS: &[(&str, &str)] = &[
    ("io.k8s.api.core.v1.PodSpec", "volumes"),
    ("io.k8s.api.core.v1.PodSpec", "resourceClaims"),
    ("io.k8s.api.apps.v1.DeploymentSpec", "strategy"),
];

/// The JSON schemas of every definition reachable from the served kinds.
pub(crate) fn definitions() -> &'static HashMap<String, Value> {
    static DEFS: OnceLock<HashMap<String, Value>> = OnceLock::new();
    DEFS.get_or_init(|| {
        let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
        for r in resources::RESOURCES {
            let _ = r.typed.schema(&mut generator);
        }
        generator.subschema_for::<k8s_openapi::api::autoscaling::v1::Scale>();
        generator.take_definitions(true).into_iter().collect()
    })
}

/// The definition a property schema points at: directly, through `allOf`, or as the items of
/// an array or the values of a map.
fn direct_reference(s: &Value) -> Option<&str> {
    s.get("$ref")
        .or_else(|| {
            s.get("allOf")
                .and_then(|a| a.get(0))
                .and_then(|a| a.get("$ref"))
        })
        .and_then(Value::as_str)
        .and_then(|r| r.rsplit('/').next())
}

fn referenced(schema: &Value) -> Option<&str> {
    direct_reference(schema)
        .or_else(|| schema.get("items").and_then(direct_reference))
        .or_else(|| {
            schema
                .get("additionalProperties")
                .and_then(direct_reference)
        })
}

/// The definition of a field of `def`, and its list strategy.
fn field_meta(
    def: Option<&str>,
    field: &str,
) -> (Option<&'static str>, Option<ListStrategy>, bool) {
    let Some(def) = def else {
        return (None, None, false);
    };
    let child = definitions()
        .get(def)
        .and_then(|s| s.get("properties"))
        .and_then(|p| p.get(field))
        .and_then(referenced)
        .and_then(|name| definitions().get_key_value(name).map(|(k, _)| k.as_str()));
    let strategy = LIST_STRATEGIES
        .iter()
        .find(|(d, f, _)| *d == def && *f == field)
        .map(|(_, _, s)| *s);
    let retain = RETAIN_KEYS.iter().any(|(d, f)| *d == def && *f == field);
    (child, strategy, retain)
}

/// Applies a strategic merge patch to an object of the given kind. Unknown kinds get merge
/// patch semantics (maps merge, lists are replaced), with directives still honoured.
pub fn strategic_merge_patch(
    group: &str,
    kind: &str,
    doc: &Value,
    patch: &Value,
) -> Result<Value, PatchError> {
    let Value::Object(patch_map) = patch else {
        return Err(PatchError::Invalid(
            "a strategic merge patch must be a JSON object".into(),
        ));
    };
    let root = root_definition(group, kind);
    let original = doc.as_object().cloned().unwrap_or_default();
    match merge_map(&original, patch_map, root.as_deref())? {
        Some(m) => Ok(Value::Object(m)),
        None => Err(PatchError::Invalid(
            "a strategic merge patch may not delete the whole object".into(),
        )),
    }
}

fn root_definition(group: &str, kind: &str) -> Option<String> {
    if (group, kind) == ("autoscaling", "Scale") {
        return Some("io.k8s.api.autoscaling.v1.Scale".into());
    }
    resources::RESOURCES
        .iter()
        .find(|r| r.group == group && r.kind == kind)
        .map(|r| r.typed.definition_name())
        .or_else(|| {
            resources::RESOURCES
                .iter()
                .flat_map(|r| r.subresources.iter().map(move |s| (r, *s)))
                .find(|(r, s)| *s == Subresource::Status && r.kind == kind)
                .map(|(r, _)| r.typed.definition_name())
        })
}

const PATCH: &str = "$patch";
const RETAIN: &str = "$retainKeys";
const DELETE_FROM: &str = "$deleteFromPrimitiveList/";
const ORDER: &str = "$setElementOrder/";

/// Removes every directive from a value taken from the patch as is.
fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(
            a.iter()
                .filter(|e| {
                    !(e.is_object()
                        && e.get(PATCH).is_some()
                        && e.as_object().is_some_and(|m| m.len() == 1))
                })
                .map(strip_directives)
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Merges a patch map into an original map; `None` means the map is deleted.
fn merge_map(
    original: &Map<String, Value>,
    patch: &Map<String, Value>,
    def: Option<&str>,
) -> Result<Option<Map<String, Value>>, PatchError> {
    match patch.get(PATCH).map(|v| v.as_str()) {
        None | Some(Some("merge")) => {}
        Some(Some("replace")) => {
            return Ok(strip_directives(&Value::Object(patch.clone()))
                .as_object()
                .cloned());
        }
        Some(Some("delete")) => return Ok(None),
        Some(other) => {
            return Err(PatchError::Invalid(format!(
                "unknown patch type: {}",
                other
                    .map(String::from)
                    .unwrap_or_else(|| "(not a string)".into())
            )));
        }
    }
    let mut out = original.clone();
    for (key, value) in patch {
        if key.starts_with('$') {
            continue;
        }
        if value.is_null() {
            out.remove(key);
            continue;
        }
        let (child, strategy, _) = field_meta(def, key);
        let merged = match (value, out.get(key)) {
            (Value::Object(p), Some(Value::Object(o))) => {
                merge_map(o, p, child)?.map(Value::Object)
            }
            (Value::Object(p), _) => merge_map(&Map::new(), p, child)?.map(Value::Object),
            (Value::Array(p), existing) => {
                let empty = Vec::new();
                let o = existing.and_then(Value::as_array).unwrap_or(&empty);
                Some(Value::Array(merge_list(o, p, strategy, child)?))
            }
            (v, _) => Some(v.clone()),
        };
        match merged {
            Some(v) => {
                out.insert(key.clone(), v);
            }
            None => {
                out.remove(key);
            }
        }
    }
    // $deleteFromPrimitiveList/<field>.
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix(DELETE_FROM) {
            let remove = value
                .as_array()
                .ok_or_else(|| PatchError::Invalid(format!("{key} must be a list")))?;
            if let Some(Value::Array(list)) = out.get_mut(field) {
                list.retain(|v| !remove.contains(v));
            }
        }
    }
    // $retainKeys: clear what the patch does not name.
    if let Some(keys) = patch.get(RETAIN) {
        let keys: Vec<&str> = keys
            .as_array()
            .ok_or_else(|| PatchError::Invalid("$retainKeys must be a list".into()))?
            .iter()
            .map(|k| {
                k.as_str()
                    .ok_or_else(|| PatchError::Invalid("$retainKeys must list strings".into()))
            })
            .collect::<Result<_, _>>()?;
        out.retain(|k, _| keys.contains(&k.as_str()));
    }
    // $setElementOrder/<field>.
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix(ORDER) {
            let order = value
                .as_array()
                .ok_or_else(|| PatchError::Invalid(format!("{key} must be a list")))?;
            let (_, strategy, _) = field_meta(def, field);
            if let Some(Value::Array(list)) = out.get_mut(field) {
                reorder(list, order, strategy);
            }
        }
    }
    Ok(Some(out))
}

/// The identity of a list element for ordering and merging.
fn element_id(v: &Value, strategy: Option<ListStrategy>) -> Option<&Value> {
    match strategy {
        Some(ListStrategy::MergeByKey(key)) => v.get(key),
        _ => Some(v),
    }
}

/// Sorts `list` so the elements named in `order` come in that order; the others keep their
/// relative order after them.
fn reorder(list: &mut Vec<Value>, order: &[Value], strategy: Option<ListStrategy>) {
    let position = |v: &Value| -> usize {
        let id = element_id(v, strategy);
        order
            .iter()
            .position(|o| match strategy {
                Some(ListStrategy::MergeByKey(key)) => o.get(key).is_some() && o.get(key) == id,
                _ => Some(o) == id,
            })
            .unwrap_or(usize::MAX)
    };
    let mut indexed: Vec<(usize, usize, Value)> = list
        .drain(..)
        .enumerate()
        .map(|(i, v)| (position(&v), i, v))
        .collect();
    indexed.sort_by_key(|(p, i, _)| (*p, *i));
    list.extend(indexed.into_iter().map(|(_, _, v)| v));
}

fn merge_list(
    original: &[Value],
    patch: &[Value],
    strategy: Option<ListStrategy>,
    child: Option<&str>,
) -> Result<Vec<Value>, PatchError> {
    // A `{"$patch": "replace"}` element replaces the whole list with the other elements.
    let replace = patch
        .iter()
        .any(|e| e.get(PATCH).and_then(Value::as_str) == Some("replace"));
    match strategy {
        _ if replace => Ok(patch
            .iter()
            .filter(|e| e.get(PATCH).is_none())
            .map(strip_directives)
            .collect()),
        None => Ok(patch.iter().map(strip_directives).collect()),
        Some(ListStrategy::MergePrimitives) => {
            let mut out = original.to_vec();
            for v in patch {
                if !out.contains(v) {
                    out.push(v.clone());
                }
            }
            Ok(out)
        }
        Some(ListStrategy::MergeByKey(key)) => {
            let mut out = original.to_vec();
            for element in patch {
                let Value::Object(p) = element else {
                    return Err(PatchError::Invalid(format!(
                        "elements of a list merged by {key:?} must be objects"
                    )));
                };
                let Some(id) = p.get(key) else {
                    return Err(PatchError::Invalid(format!(
                        "map: {element} does not contain declared merge key: {key}"
                    )));
                };
                let at = out.iter().position(|o| o.get(key) == Some(id));
                let deleting = p.get(PATCH).and_then(Value::as_str) == Some("delete");
                match (at, deleting) {
                    (Some(i), true) => {
                        out.remove(i);
                    }
                    (None, true) => {}
                    (Some(i), false) => {
                        let current = out[i].as_object().cloned().unwrap_or_default();
                        match merge_map(&current, p, child)? {
                            Some(m) => out[i] = Value::Object(m),
                            None => {
                                out.remove(i);
                            }
                        }
                    }
                    (None, false) => out.push(strip_directives(element)),
                }
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}, "finalizers": ["a"]},
            "spec": {
                "replicas": 1,
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                "template": {"spec": {
                    "containers": [
                        {"name": "web", "image": "busybox:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}], "ports": [{"containerPort": 80}]},
                        {"name": "side", "image": "sidecar:1"}
                    ],
                    "volumes": [{"name": "data", "emptyDir": {}}],
                    "tolerations": [{"key": "x", "operator": "Exists"}]
                }}
            }
        })
    }

    fn smp(doc: &Value, patch: Value) -> Value {
        strategic_merge_patch("apps", "Deployment", doc, &patch).unwrap()
    }

    #[test]
    fn containers_merge_by_name_and_keep_unmentioned_ones() {
        let out = smp(
            &deployment(),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "busybox:2"}]}}}}),
        );
        let cs = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(cs[0]["image"], "busybox:2");
        assert_eq!(
            cs[0]["ports"][0]["containerPort"], 80,
            "fields not in the patch stay"
        );
        assert_eq!(cs[1]["name"], "side", "containers not in the patch stay");
    }

    #[test]
    fn env_merges_by_name_and_patch_delete_removes_one_entry() {
        let out = smp(
            &deployment(),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "env": [{"name": "A", "$patch": "delete"}, {"name": "C", "value": "3"}]}]}}}}),
        );
        let env = &out["spec"]["template"]["spec"]["containers"][0]["env"];
        assert_eq!(
            env,
            &json!([{"name": "B", "value": "2"}, {"name": "C", "value": "3"}])
        );
    }

    #[test]
    fn lists_without_a_strategy_are_replaced() {
        let out = smp(
            &deployment(),
            json!({"spec": {"template": {"spec": {"tolerations": [{"key": "y", "operator": "Exists"}]}}}}),
        );
        assert_eq!(
            out["spec"]["template"]["spec"]["tolerations"],
            json!([{"key": "y", "operator": "Exists"}])
        );
    }

    #[test]
    fn null_deletes_a_field_and_replace_directive_replaces_a_map() {
        let out = smp(&deployment(), json!({"metadata": {"labels": null}}));
        assert!(out["metadata"].get("labels").is_none());
        let out = smp(
            &deployment(),
            json!({"spec": {"strategy": {"$patch": "replace", "type": "Recreate"}}}),
        );
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn retain_keys_clears_the_old_strategy_when_switching_to_recreate() {
        let out = smp(
            &deployment(),
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null}}}),
        );
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn finalizers_are_a_set_and_delete_from_primitive_list_removes() {
        let out = smp(
            &deployment(),
            json!({"metadata": {"finalizers": ["b", "a"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b"]));
        let out = smp(
            &deployment(),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!([]));
    }

    #[test]
    fn set_element_order_orders_the_merged_list_as_kubectl_apply_sends_it() {
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "side"}, {"name": "web"}],
            "containers": [{"name": "web", "image": "busybox:3"}]
        }}}});
        let out = smp(&deployment(), patch);
        let cs = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(
            (cs[0]["name"].as_str(), cs[1]["name"].as_str()),
            (Some("side"), Some("web"))
        );
        assert_eq!(cs[1]["image"], "busybox:3");
        assert!(!out.to_string().contains("$setElementOrder"));
    }

    #[test]
    fn owner_references_merge_by_uid_and_pod_conditions_by_type() {
        let doc = json!({"metadata": {"ownerReferences": [{"uid": "1", "name": "a"}]}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}});
        let out = strategic_merge_patch("", "Pod", &doc, &json!({"metadata": {"ownerReferences": [{"uid": "2", "name": "b"}]}, "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}]}})).unwrap();
        assert_eq!(
            out["metadata"]["ownerReferences"].as_array().unwrap().len(),
            2
        );
        assert_eq!(
            out["status"]["conditions"],
            json!([{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}])
        );
    }

    #[test]
    fn service_ports_merge_by_port() {
        let doc = json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]}});
        let out = strategic_merge_patch(
            "",
            "Service",
            &doc,
            &json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}]}}),
        )
        .unwrap();
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port": 80, "name": "http", "targetPort": 8080}, {"port": 443, "name": "https"}])
        );
    }

    #[test]
    fn unknown_kinds_merge_maps_and_replace_lists() {
        let out = strategic_merge_patch(
            "example.com",
            "Widget",
            &json!({"a": {"b": 1}, "l": [1, 2]}),
            &json!({"a": {"c": 2}, "l": [3]}),
        )
        .unwrap();
        assert_eq!(out, json!({"a": {"b": 1, "c": 2}, "l": [3]}));
    }

    #[test]
    fn malformed_patches_are_errors() {
        assert!(strategic_merge_patch("", "Pod", &json!({}), &json!([1])).is_err());
        assert!(
            strategic_merge_patch(
                "",
                "Pod",
                &json!({}),
                &json!({"spec": {"containers": [{"image": "x"}]}})
            )
            .is_err()
        );
        assert!(
            strategic_merge_patch("", "Pod", &json!({}), &json!({"$patch": "explode"})).is_err()
        );
        assert!(merge_patch(&json!({}), &json!("x")).is_err());
        let failed = json_patch(
            &json!({"a": 1}),
            &json!([{"op": "test", "path": "/a", "value": 2}]),
        )
        .unwrap_err();
        assert!(matches!(failed, PatchError::Failed(_)));
        assert!(json_patch(&json!({}), &json!({"op": "add"})).is_err());
    }

    #[test]
    fn json_and_merge_patches_apply() {
        let out = json_patch(
            &json!({"a": 1}),
            &json!([{"op": "add", "path": "/b", "value": 2}]),
        )
        .unwrap();
        assert_eq!(out, json!({"a": 1, "b": 2}));
        assert_eq!(
            merge_patch(&json!({"a": 1, "b": 2}), &json!({"a": null})).unwrap(),
            json!({"b": 2})
        );
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(Value::from),
            "[a-z$/]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 40, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("$patch".to_string()),
                        Just("$retainKeys".to_string()),
                        Just("$setElementOrder/containers".to_string()),
                        Just("containers".to_string()),
                        Just("name".to_string()),
                        "[a-z]{1,5}"
                    ],
                    inner,
                    0..5
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]
        #[test]
        fn no_patch_panics(doc in json_value(), patch in json_value()) {
            let _ = json_patch(&doc, &patch);
            let _ = merge_patch(&doc, &patch);
            for (g, k) in [("", "Pod"), ("apps", "Deployment"), ("x", "Unknown")] {
                if let Ok(out) = strategic_merge_patch(g, k, &doc, &patch) {
                    // No directive survives, except inside unknown fields of the original.
                    let _ = out;
                }
            }
        }
    }
}
