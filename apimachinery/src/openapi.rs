//! OpenAPI documents of the served resources: v3 per group-version (what kubectl reads for
//! `explain` and to learn that the server validates fields itself), and a Swagger 2.0 JSON
//! document for old clients.
//!
//! Schemas come from the k8s-openapi types through schemars; paths and operations from the
//! resource table. Two details follow kubectl's readers: kind schemas carry
//! `x-kubernetes-group-version-kind` (a list) and operations carry it as a single object, and
//! each PATCH operation lists a `fieldValidation` query parameter. PATCH request bodies name
//! JSON and merge patches but not strategic merge patch, because the schemas carry no patch
//! metadata: kubectl then computes strategic merge patches from its built-in types, exactly as
//! against an upstream server without OpenAPI patch metadata.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use schemars::JsonSchema;
use serde_json::{Map, Value, json};

use crate::resources::{self, ResourceInfo, Subresource};

const SCHEMAS: &str = "#/components/schemas/";

/// One group-version document and its hash.
struct Doc {
    value: Value,
    hash: String,
}

fn docs() -> &'static BTreeMap<String, Doc> {
    static DOCS: OnceLock<BTreeMap<String, Doc>> = OnceLock::new();
    DOCS.get_or_init(|| {
        resources::groups()
            .into_iter()
            .flat_map(|(g, versions)| versions.into_iter().map(move |v| (g, v)))
            .map(|(g, v)| {
                let value = build_group_version(g, v);
                let hash = fnv_hex(&serde_json::to_vec(&value).unwrap_or_default());
                (gv_path(g, v), Doc { value, hash })
            })
            .collect()
    })
}

/// `api/v1` or `apis/<group>/<version>`.
fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn fnv_hex(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016X}")
}

/// The `/openapi/v3` root: where each group-version document is, with a hash clients use as
/// a cache key.
pub fn v3_root() -> Value {
    let paths: Map<String, Value> = docs()
        .iter()
        .map(|(path, doc)| {
            (
                path.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={}", doc.hash)}),
            )
        })
        .collect();
    json!({"paths": paths})
}

/// The OpenAPI v3 document of one group version, `None` if not served.
pub fn v3_group_version(group: &str, version: &str) -> Option<Value> {
    docs()
        .get(&gv_path(group, version))
        .map(|d| d.value.clone())
}

/// The Swagger 2.0 document of everything served.
pub fn v2() -> Value {
    static V2: OnceLock<Value> = OnceLock::new();
    V2.get_or_init(|| {
        let mut paths = Map::new();
        let mut definitions = Map::new();
        for doc in docs().values() {
            let text = serde_json::to_string(&doc.value).unwrap_or_default().replace(SCHEMAS, "#/definitions/");
            let v3: Value = serde_json::from_str(&text).unwrap_or_default();
            if let Some(p) = v3["paths"].as_object() {
                for (k, v) in p {
                    paths.insert(k.clone(), v3_path_to_v2(v));
                }
            }
            if let Some(s) = v3["components"]["schemas"].as_object() {
                definitions.extend(s.clone());
            }
        }
        json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": crate::KUBERNETES_VERSION}, "paths": paths, "definitions": definitions})
    })
    .clone()
}

/// Rewrites one v3 path item into Swagger 2.0 shape: parameters carry `type` directly, bodies
/// are `in: body` parameters, responses carry `schema`.
fn v3_path_to_v2(item: &Value) -> Value {
    let param = |p: &Value| {
        let mut p = p.clone();
        if let Some(schema) = p.as_object_mut().and_then(|o| o.remove("schema"))
            && let Some(t) = schema.get("type")
        {
            p["type"] = t.clone();
        }
        p
    };
    let mut out = Map::new();
    if let Some(obj) = item.as_object() {
        for (k, v) in obj {
            if k == "parameters" {
                out.insert(
                    k.clone(),
                    Value::Array(
                        v.as_array()
                            .map(|a| a.iter().map(param).collect())
                            .unwrap_or_default(),
                    ),
                );
                continue;
            }
            let mut op = v.clone();
            let mut params: Vec<Value> = op["parameters"]
                .as_array()
                .map(|a| a.iter().map(param).collect())
                .unwrap_or_default();
            if let Some(body) = op.as_object_mut().and_then(|o| o.remove("requestBody")) {
                let consumes: Vec<String> = body["content"]
                    .as_object()
                    .map(|c| c.keys().cloned().collect())
                    .unwrap_or_default();
                let schema = body["content"]
                    .as_object()
                    .and_then(|c| c.values().next())
                    .map(|m| m["schema"].clone())
                    .unwrap_or(json!({}));
                params.push(
                    json!({"name": "body", "in": "body", "required": true, "schema": schema}),
                );
                op["consumes"] = json!(consumes);
            }
            if !params.is_empty() {
                op["parameters"] = Value::Array(params);
            }
            if let Some(responses) = op["responses"].as_object_mut() {
                for r in responses.values_mut() {
                    let schema = r["content"]
                        .as_object()
                        .and_then(|c| c.values().next())
                        .map(|m| m["schema"].clone());
                    if let Some(o) = r.as_object_mut() {
                        o.remove("content");
                        if let Some(s) = schema {
                            o.insert("schema".into(), s);
                        }
                    }
                }
            }
            out.insert(k.clone(), op);
        }
    }
    Value::Object(out)
}

/// The JSON schema of one definition (e.g. `io.k8s.api.core.v1.PodSpec`), with `$ref`s to
/// others, for readers that walk the structure of a kind.
pub fn definition(name: &str) -> Option<&'static Value> {
    crate::patch::definitions().get(name)
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("{SCHEMAS}{name}")})
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "version": version, "kind": kind})
}

fn query_param(name: &str, ty: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": ty, "uniqueItems": true}})
}

fn path_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "description": description, "required": true, "schema": {"type": "string", "uniqueItems": true}})
}

fn write_params(patch: bool) -> Vec<Value> {
    let mut p = vec![
        query_param(
            "dryRun",
            "string",
            "When present, indicates that modifications should not be persisted. Valid value: All.",
        ),
        query_param(
            "fieldManager",
            "string",
            "A name associated with the actor or entity that is making these changes.",
        ),
        query_param(
            "fieldValidation",
            "string",
            "How the server handles fields the schema does not know: Ignore, Warn (the default) or Strict.",
        ),
    ];
    if patch {
        p.push(query_param(
            "force",
            "boolean",
            "Force is for apply requests only; this server does not serve apply yet.",
        ));
    }
    p
}

fn list_params() -> Vec<Value> {
    [
        (
            "allowWatchBookmarks",
            "boolean",
            "Ask for BOOKMARK events on watches.",
        ),
        (
            "continue",
            "string",
            "The continue token of the previous page.",
        ),
        (
            "fieldSelector",
            "string",
            "Restrict the returned objects by their fields.",
        ),
        (
            "labelSelector",
            "string",
            "Restrict the returned objects by their labels.",
        ),
        ("limit", "integer", "The most items to return in one page."),
        ("resourceVersion", "string", "Where a list or watch starts."),
        (
            "resourceVersionMatch",
            "string",
            "How resourceVersion applies to a list: Exact or NotOlderThan.",
        ),
        (
            "sendInitialEvents",
            "boolean",
            "Start a watch with the current objects and a bookmark.",
        ),
        (
            "timeoutSeconds",
            "integer",
            "How long a list or watch may take.",
        ),
        ("watch", "boolean", "Watch for changes instead of listing."),
    ]
    .iter()
    .map(|(n, t, d)| query_param(n, t, d))
    .collect()
}

fn json_content(schema: Value) -> Value {
    json!({"application/json": {"schema": schema.clone()}, "application/yaml": {"schema": schema}})
}

fn response(schema: Value, codes: &[&str]) -> Value {
    let mut out = Map::new();
    for code in codes {
        out.insert(
            (*code).into(),
            json!({"description": "OK", "content": json_content(schema.clone())}),
        );
    }
    out.insert("401".into(), json!({"description": "Unauthorized"}));
    Value::Object(out)
}

fn camel(s: &str) -> String {
    s.split(['.', '-'])
        .filter(|p| !p.is_empty() && *p != "k8s" && *p != "io")
        .map(|p| {
            let mut c = p.chars();
            c.next()
                .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn operation(
    action: &str,
    verb: &str,
    r: &ResourceInfo,
    scope: &str,
    suffix: &str,
    kind: (&str, &str, &str),
) -> Value {
    let group = if r.group.is_empty() {
        "Core".to_string()
    } else {
        camel(r.group)
    };
    let id = format!("{verb}{group}{}{scope}{}{suffix}", camel(r.version), r.kind);
    json!({
        "operationId": id,
        "description": format!("{verb} {} {}", r.kind, suffix.to_lowercase()).trim_end().to_string(),
        "tags": [format!("{}_{}", if r.group.is_empty() { "core" } else { r.group }, r.version)],
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(kind.0, kind.1, kind.2),
    })
}

fn with(mut op: Value, field: &str, v: Value) -> Value {
    op[field] = v;
    op
}

fn add_paths(paths: &mut Map<String, Value>, r: &ResourceInfo, base: &str, list_name: &str) {
    let kind_ref = reference(&r.typed.definition_name());
    let list_ref = reference(list_name);
    let status_ref = reference("io.k8s.apimachinery.pkg.apis.meta.v1.Status");
    let me = (r.group, r.version, r.kind);
    let ns_param = path_param(
        "namespace",
        "object name and auth scope, such as for teams and projects",
    );
    let name_param = path_param("name", &format!("name of the {}", r.kind));
    let (collection, scope) = if r.namespaced {
        (
            format!("{base}/namespaces/{{namespace}}/{}", r.plural),
            "Namespaced",
        )
    } else {
        (format!("{base}/{}", r.plural), "")
    };
    let scope_params: Vec<Value> = if r.namespaced {
        vec![ns_param.clone()]
    } else {
        vec![]
    };
    let patch_body = json!({"content": {
        "application/json-patch+json": {"schema": reference("io.k8s.apimachinery.pkg.apis.meta.v1.Patch")},
        "application/merge-patch+json": {"schema": reference("io.k8s.apimachinery.pkg.apis.meta.v1.Patch")},
    }, "required": true});
    let write_body = json!({"content": json_content(kind_ref.clone()), "required": true});

    // The collection.
    let mut item = Map::new();
    item.insert("parameters".into(), Value::Array(scope_params.clone()));
    item.insert(
        "get".into(),
        with(
            with(
                operation("list", "list", r, scope, "", me),
                "parameters",
                json!(list_params()),
            ),
            "responses",
            response(list_ref.clone(), &["200"]),
        ),
    );
    item.insert(
        "post".into(),
        with(
            with(
                with(
                    operation("post", "create", r, scope, "", me),
                    "parameters",
                    json!(write_params(false)),
                ),
                "requestBody",
                write_body.clone(),
            ),
            "responses",
            response(kind_ref.clone(), &["200", "201", "202"]),
        ),
    );
    item.insert(
        "delete".into(),
        with(
            with(
                operation("deletecollection", "deletecollection", r, scope, "", me),
                "parameters",
                json!(list_params()),
            ),
            "responses",
            response(status_ref.clone(), &["200"]),
        ),
    );
    paths.insert(collection.clone(), Value::Object(item));
    if r.namespaced {
        let all = format!("{base}/{}", r.plural);
        paths.insert(
            all,
            json!({"get": with(with(operation("list", "list", r, "ForAllNamespaces", "", me), "parameters", json!(list_params())), "responses", response(list_ref, &["200"]))}),
        );
    }
    // One object.
    let mut object_params = scope_params.clone();
    object_params.push(name_param.clone());
    let object_path = format!("{collection}/{{name}}");
    let mut item = Map::new();
    item.insert("parameters".into(), Value::Array(object_params.clone()));
    item.insert(
        "get".into(),
        with(
            operation("get", "read", r, scope, "", me),
            "responses",
            response(kind_ref.clone(), &["200"]),
        ),
    );
    item.insert(
        "put".into(),
        with(
            with(
                with(
                    operation("put", "replace", r, scope, "", me),
                    "parameters",
                    json!(write_params(false)),
                ),
                "requestBody",
                write_body.clone(),
            ),
            "responses",
            response(kind_ref.clone(), &["200", "201"]),
        ),
    );
    item.insert(
        "patch".into(),
        with(
            with(
                with(
                    operation("patch", "patch", r, scope, "", me),
                    "parameters",
                    json!(write_params(true)),
                ),
                "requestBody",
                patch_body.clone(),
            ),
            "responses",
            response(kind_ref.clone(), &["200", "201"]),
        ),
    );
    item.insert(
        "delete".into(),
        with(
            with(
                with(
                    operation("delete", "delete", r, scope, "", me),
                    "parameters",
                    json!([query_param("dryRun", "string", "Valid value: All."), query_param("gracePeriodSeconds", "integer", "Seconds before the object should be deleted."), query_param("propagationPolicy", "string", "Orphan, Background or Foreground.")]),
                ),
                "requestBody",
                json!({"content": json_content(reference("io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions"))}),
            ),
            "responses",
            response(status_ref.clone(), &["200", "202"]),
        ),
    );
    paths.insert(object_path.clone(), Value::Object(item));
    // Subresources.
    for sub in r.subresources {
        let (g, v, k) = sub.kind(r);
        let sub_ref = reference(&subresource_definition(*sub, r));
        let suffix = camel(sub.name());
        let sub_me = (g, v, k);
        let mut item = Map::new();
        item.insert("parameters".into(), Value::Array(object_params.clone()));
        match sub {
            Subresource::Binding | Subresource::Eviction => {
                item.insert(
                    "post".into(),
                    with(
                        with(
                            with(
                                operation("post", "create", r, scope, &suffix, sub_me),
                                "parameters",
                                json!(write_params(false)),
                            ),
                            "requestBody",
                            json!({"content": json_content(sub_ref.clone()), "required": true}),
                        ),
                        "responses",
                        response(sub_ref.clone(), &["200", "201", "202"]),
                    ),
                );
            }
            _ => {
                item.insert(
                    "get".into(),
                    with(
                        operation("get", "read", r, scope, &suffix, sub_me),
                        "responses",
                        response(sub_ref.clone(), &["200"]),
                    ),
                );
                item.insert(
                    "put".into(),
                    with(
                        with(
                            with(
                                operation("put", "replace", r, scope, &suffix, sub_me),
                                "parameters",
                                json!(write_params(false)),
                            ),
                            "requestBody",
                            json!({"content": json_content(sub_ref.clone()), "required": true}),
                        ),
                        "responses",
                        response(sub_ref.clone(), &["200", "201"]),
                    ),
                );
                item.insert(
                    "patch".into(),
                    with(
                        with(
                            with(
                                operation("patch", "patch", r, scope, &suffix, sub_me),
                                "parameters",
                                json!(write_params(true)),
                            ),
                            "requestBody",
                            patch_body.clone(),
                        ),
                        "responses",
                        response(sub_ref.clone(), &["200", "201"]),
                    ),
                );
            }
        }
        paths.insert(format!("{object_path}/{}", sub.name()), Value::Object(item));
    }
}

fn subresource_definition(sub: Subresource, r: &ResourceInfo) -> String {
    match sub {
        Subresource::Scale => k8s_openapi::api::autoscaling::v1::Scale::schema_name().into_owned(),
        Subresource::Binding => k8s_openapi::api::core::v1::Binding::schema_name().into_owned(),
        Subresource::Eviction => k8s_openapi::api::policy::v1::Eviction::schema_name().into_owned(),
        Subresource::Status | Subresource::Approval => r.typed.definition_name(),
    }
}

/// Wraps a `$ref` that has siblings (a description) as `allOf`, as upstream publishes it: in
/// OpenAPI 3.0 the siblings of a `$ref` are otherwise ignored.
fn wrap_refs(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if m.len() > 1
                && let Some(r) = m.remove("$ref")
            {
                m.insert("allOf".into(), json!([{"$ref": r}]));
            }
            for child in m.values_mut() {
                wrap_refs(child);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(wrap_refs),
        _ => {}
    }
}

fn build_group_version(group: &str, version: &str) -> Value {
    let served = resources::in_group_version(group, version);
    let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
    let mut kinds: Vec<(String, Value)> = Vec::new();
    for r in &served {
        let _ = r.typed.schema(&mut generator);
        kinds.push((r.typed.definition_name(), gvk(r.group, r.version, r.kind)));
    }
    for r in &served {
        for sub in r.subresources {
            match sub {
                Subresource::Scale => {
                    generator.subschema_for::<k8s_openapi::api::autoscaling::v1::Scale>();
                    kinds.push((
                        "io.k8s.api.autoscaling.v1.Scale".into(),
                        gvk("autoscaling", "v1", "Scale"),
                    ));
                }
                Subresource::Binding => {
                    generator.subschema_for::<k8s_openapi::api::core::v1::Binding>();
                    kinds.push((
                        "io.k8s.api.core.v1.Binding".into(),
                        gvk("", "v1", "Binding"),
                    ));
                }
                Subresource::Eviction => {
                    generator.subschema_for::<k8s_openapi::api::policy::v1::Eviction>();
                    kinds.push((
                        "io.k8s.api.policy.v1.Eviction".into(),
                        gvk("policy", "v1", "Eviction"),
                    ));
                }
                _ => {}
            }
        }
    }
    generator.subschema_for::<meta::Status>();
    generator.subschema_for::<meta::DeleteOptions>();
    generator.subschema_for::<meta::ListMeta>();
    generator.subschema_for::<meta::Patch>();
    let mut schemas: Map<String, Value> = generator.take_definitions(true).into_iter().collect();
    // List kinds, which k8s-openapi models as one generic type.
    for r in &served {
        let name = list_definition(r);
        schemas.insert(
            name,
            json!({
                "description": format!("{}List is a list of {}.", r.kind, r.kind),
                "type": "object",
                "required": ["items"],
                "properties": {
                    "apiVersion": {"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."},
                    "kind": {"type": "string", "description": "Kind is a string value representing the REST resource this object represents."},
                    "metadata": {"allOf": [reference("io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta")], "description": "Standard list metadata."},
                    "items": {"type": "array", "items": reference(&r.typed.definition_name()), "description": format!("List of {}.", r.plural)},
                },
                "x-kubernetes-group-version-kind": [gvk(r.group, r.version, &format!("{}List", r.kind))],
            }),
        );
    }
    for (name, kind) in kinds {
        if let Some(Value::Object(s)) = schemas.get_mut(&name) {
            let entry = s
                .entry("x-kubernetes-group-version-kind")
                .or_insert_with(|| json!([]));
            if let Some(list) = entry.as_array_mut()
                && !list.contains(&kind)
            {
                list.push(kind);
            }
        }
    }
    let mut schemas = Value::Object(schemas);
    wrap_refs(&mut schemas);
    let base = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    let mut paths = Map::new();
    for r in &served {
        add_paths(&mut paths, r, &base, &list_definition(r));
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": crate::KUBERNETES_VERSION},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

fn list_definition(r: &ResourceInfo) -> String {
    let name = r.typed.definition_name();
    format!("{name}List")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|c| refs(c, out));
            }
            Value::Array(a) => a.iter().for_each(|c| refs(c, out)),
            _ => {}
        }
    }

    #[test]
    fn every_served_kind_has_a_schema_marked_with_its_group_version_kind() {
        for r in resources::RESOURCES {
            let doc = v3_group_version(r.group, r.version).unwrap();
            let schema = &doc["components"]["schemas"][r.typed.definition_name()];
            let kinds = schema["x-kubernetes-group-version-kind"]
                .as_array()
                .unwrap_or_else(|| panic!("{r:?} has no gvk"));
            assert!(kinds.contains(&gvk(r.group, r.version, r.kind)), "{r:?}");
        }
    }

    #[test]
    fn every_reference_resolves_within_its_document() {
        for path in docs().keys() {
            let doc = &docs()[path].value;
            let mut all = Vec::new();
            refs(doc, &mut all);
            for r in all {
                let name = r
                    .strip_prefix(SCHEMAS)
                    .unwrap_or_else(|| panic!("{path}: foreign ref {r}"));
                assert!(
                    doc["components"]["schemas"].get(name).is_some(),
                    "{path}: {r} does not resolve"
                );
            }
        }
    }

    #[test]
    fn patch_operations_accept_field_validation_and_name_their_kind() {
        let doc = v3_group_version("apps", "v1").unwrap();
        let patch =
            &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"],
            gvk("apps", "v1", "Deployment")
        );
        assert!(
            patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation" && p["in"] == "query")
        );
        assert!(
            patch["requestBody"]["content"]
                .get("application/strategic-merge-patch+json")
                .is_none()
        );
    }

    #[test]
    fn pod_containers_are_reachable_with_descriptions() {
        let doc = v3_group_version("", "v1").unwrap();
        let schemas = &doc["components"]["schemas"];
        let spec = &schemas["io.k8s.api.core.v1.Pod"]["properties"]["spec"];
        assert_eq!(
            spec["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.PodSpec"
        );
        let containers = &schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert!(
            containers["description"]
                .as_str()
                .unwrap()
                .contains("containers")
        );
        assert_eq!(
            containers["items"]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.Container"
        );
    }

    #[test]
    fn the_root_lists_every_group_version_with_a_stable_hash() {
        let root = v3_root();
        for (g, versions) in resources::groups() {
            for v in versions {
                let url = root["paths"][gv_path(g, v)]["serverRelativeURL"]
                    .as_str()
                    .unwrap()
                    .to_string();
                assert!(url.starts_with(&format!("/openapi/v3/{}?hash=", gv_path(g, v))));
            }
        }
        assert_eq!(v3_root(), root);
    }

    #[test]
    fn swagger_two_has_definitions_and_body_parameters() {
        let doc = v2();
        assert!(doc["definitions"]["io.k8s.api.core.v1.Pod"].is_object());
        let post = &doc["paths"]["/api/v1/namespaces/{namespace}/pods"]["post"];
        assert!(
            post["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["in"] == "body")
        );
        assert!(
            !serde_json::to_string(&doc)
                .unwrap()
                .contains("#/components/")
        );
    }
}
