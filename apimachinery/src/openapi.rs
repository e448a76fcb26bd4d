//! OpenAPI documents of the served resources: the `/openapi/v3` discovery root, one OpenAPI 3.0
//! document per group version (`/openapi/v3/apis/apps/v1`), and the Swagger 2.0 document
//! served at `/openapi/v2`.
//!
//! What the clients read from them:
//!
//! * `kubectl apply/create/replace/patch` (`--validate=strict`, the default) look in the group
//!   version's v3 document for the first PATCH operation whose `x-kubernetes-group-version-kind`
//!   (a single `{group, kind, version}` object) is the object's kind; if its operation-level
//!   `parameters` name `fieldValidation`, validation is left to the server. Every PATCH
//!   operation here therefore lists `fieldValidation` inline (not as a `$ref`).
//! * `kubectl explain` takes the kind from the operations of the resource's paths, finds the
//!   schema under `components.schemas` whose `x-kubernetes-group-version-kind` list holds that
//!   kind, and follows `properties`, `items`, `additionalProperties`, `allOf` and
//!   `#/components/schemas/...` references.
//! * Client-side `kubectl apply` computes its strategic merge patch from the v3 schema only when
//!   the PATCH operation accepts `application/strategic-merge-patch+json`. The k8s-openapi
//!   schemas carry no `x-kubernetes-patch-merge-key`/`x-kubernetes-patch-strategy`, and a patch
//!   computed without them replaces merge lists (containers, env, ...) wholesale. So the
//!   documents do not advertise that content type (see [`ADVERTISE_STRATEGIC_MERGE_PATCH`]),
//!   and kubectl falls back to its compiled-in patch metadata, exactly the upstream one. The
//!   server still accepts strategic merge patches.
//! * client-go fetches `/openapi/v2` only as the gnostic protobuf ([`v2_protobuf`]); kubectl
//!   needs it to validate `kind: List` files client-side (the v3 check never passes for
//!   `v1/List`). Its schemas keep only Swagger 2.0 keywords, `$ref` siblings stay siblings.

use std::sync::OnceLock;

use k8s_openapi::api::{
    authentication::v1 as authentication, autoscaling::v1 as autoscaling, core::v1 as core,
    policy::v1 as policy,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};

use crate::resources::{self, ResourceInfo, Subresource};

/// Whether PATCH operations list `application/strategic-merge-patch+json` among the content
/// types they accept. Off: without patch-merge metadata in the schemas kubectl would compute
/// list-replacing patches from the document instead of using its compiled-in metadata.
pub const ADVERTISE_STRATEGIC_MERGE_PATCH: bool = false;

const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
const WATCH_EVENT: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent";
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";
const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
const GVK_EXTENSION: &str = "x-kubernetes-group-version-kind";

/// The `/openapi/v3` root: each served group version with the URL of its document.
pub fn v3_root() -> Value {
    let paths: Map<String, Value> = v3_docs()
        .iter()
        .map(|d| {
            let url = format!("/openapi/v3/{}?hash={}", d.path, d.hash);
            (d.path.clone(), json!({ "serverRelativeURL": url }))
        })
        .collect();
    json!({ "paths": paths })
}

/// The OpenAPI 3.0 document of one group version (`""` for the core group), `None` if the
/// group version is not served.
pub fn v3_group_version(group: &str, version: &str) -> Option<Value> {
    v3_doc(group, version).map(|d| d.value.clone())
}

/// The serialized document of [`v3_group_version`] and its hash (the `hash` query parameter
/// of the root's URL, usable as an ETag).
pub fn v3_group_version_json(group: &str, version: &str) -> Option<(&'static [u8], &'static str)> {
    v3_doc(group, version).map(|d| (d.json.as_slice(), d.hash.as_str()))
}

/// The Swagger 2.0 document served at `/openapi/v2`.
pub fn v2() -> Value {
    v2_doc().0.clone()
}

/// The serialized document of [`v2`] and its hash.
pub fn v2_json() -> (&'static [u8], &'static str) {
    let (_, json, hash) = v2_doc();
    (json.as_slice(), hash.as_str())
}

/// The media type client-go asks `/openapi/v2` for (its only `Accept`); answer it with
/// [`v2_protobuf`]. Match on `protobuf` in an `Accept` without `application/json`.
pub const V2_PROTOBUF_ACCEPT: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

/// The `Content-Type` to answer [`v2_protobuf`] with: the dotted form, as upstream does, since
/// Go's `mime.ParseMediaType` rejects the `@` of [`V2_PROTOBUF_ACCEPT`] ("mime: unexpected
/// content after media subtype").
pub const V2_PROTOBUF_CONTENT_TYPE: &str =
    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// The Swagger 2.0 document as the gnostic `openapi.v2.Document` protobuf message, which is
/// what client-go's `OpenAPISchema()` requests (it accepts nothing else, and kubectl's
/// client-side validation of `kind: List` files needs it). It holds `swagger`, `info` and the
/// `definitions`; the paths are left out, so kubectl finds no PATCH content types there and
/// builds strategic merge patches from its compiled-in metadata.
pub fn v2_protobuf() -> &'static [u8] {
    static DOC: OnceLock<Vec<u8>> = OnceLock::new();
    DOC.get_or_init(|| protobuf::document(&v2_doc().0))
}

/// The JSON schema of one definition (e.g. `io.k8s.api.core.v1.PodSpec`), with `$ref`s to
/// others, for readers that walk the structure of a kind (the protobuf request decoder).
pub fn definition(name: &str) -> Option<&'static Value> {
    crate::patch::definitions().get(name)
}

/// `api/v1` or `apis/apps/v1`: the key of a group version in the v3 root.
pub fn group_version_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

struct V3Doc {
    group: &'static str,
    version: &'static str,
    path: String,
    value: Value,
    json: Vec<u8>,
    hash: String,
}

fn v3_docs() -> &'static [V3Doc] {
    static DOCS: OnceLock<Vec<V3Doc>> = OnceLock::new();
    DOCS.get_or_init(|| {
        let mut docs = Vec::new();
        for (group, versions) in resources::groups() {
            for version in versions {
                let value = build_v3(group, version);
                let json = serde_json::to_vec(&value).expect("a JSON value serializes");
                let hash = content_hash(&json);
                docs.push(V3Doc {
                    group,
                    version,
                    path: group_version_path(group, version),
                    value,
                    json,
                    hash,
                });
            }
        }
        docs
    })
}

fn v3_doc(group: &str, version: &str) -> Option<&'static V3Doc> {
    v3_docs()
        .iter()
        .find(|d| d.group == group && d.version == version)
}

fn v2_doc() -> &'static (Value, Vec<u8>, String) {
    static DOC: OnceLock<(Value, Vec<u8>, String)> = OnceLock::new();
    DOC.get_or_init(|| {
        let value = build_v2();
        let json = serde_json::to_vec(&value).expect("a JSON value serializes");
        let hash = content_hash(&json);
        (value, json, hash)
    })
}

/// A stable hash of a document's bytes (64-bit FNV-1a, twice with different offsets), as
/// uppercase hex. Clients only use it as a cache key.
fn content_hash(bytes: &[u8]) -> String {
    let fnv = |seed: u64| {
        bytes.iter().fold(seed, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    format!(
        "{:016X}{:016X}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x6c62_272e_07bb_0142)
    )
}

/// The two dialects the documents are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    /// OpenAPI 3.0: `#/components/schemas/` references, `$ref` siblings moved into `allOf`,
    /// request bodies.
    V3,
    /// Swagger 2.0: `#/definitions/` references with siblings, body parameters.
    V2,
}

impl Dialect {
    fn ref_prefix(self) -> &'static str {
        match self {
            Dialect::V3 => "#/components/schemas/",
            Dialect::V2 => "#/definitions/",
        }
    }

    fn generator(self) -> SchemaGenerator {
        match self {
            Dialect::V3 => SchemaSettings::openapi3()
                .with(|s| s.meta_schema = None)
                .into_generator(),
            Dialect::V2 => SchemaSettings::draft07()
                .with(|s| {
                    s.meta_schema = None;
                    s.transforms.clear();
                })
                .into_generator(),
        }
    }

    fn reference(self, name: &str) -> Value {
        json!({ "$ref": format!("{}{name}", self.ref_prefix()) })
    }

    /// A reference with a description of its own, in the dialect's shape.
    fn described_reference(self, name: &str, description: &str) -> Value {
        match self {
            Dialect::V3 => json!({ "allOf": [self.reference(name)], "description": description }),
            Dialect::V2 => {
                json!({ "$ref": format!("{}{name}", self.ref_prefix()), "description": description })
            }
        }
    }
}

/// A group, version and kind, serialized the way the `x-kubernetes-group-version-kind`
/// extension spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Gvk<'a> {
    group: &'a str,
    version: &'a str,
    kind: &'a str,
}

impl Gvk<'_> {
    fn to_value(self) -> Value {
        json!({ "group": self.group, "kind": self.kind, "version": self.version })
    }
}

fn gvk_of(r: &ResourceInfo) -> Gvk<'static> {
    Gvk {
        group: r.group,
        version: r.version,
        kind: r.kind,
    }
}

fn sub_gvk<'a>(sub: Subresource, r: &'a ResourceInfo) -> Gvk<'a> {
    let (group, version, kind) = sub.kind(r);
    Gvk {
        group,
        version,
        kind,
    }
}

/// The definition name of a kind's list, e.g. `io.k8s.api.core.v1.PodList`.
fn list_definition(r: &ResourceInfo) -> String {
    format!("{}List", r.typed.definition_name())
}

/// The definition name of the kind a subresource reads and writes.
fn sub_definition(sub: Subresource, r: &ResourceInfo) -> String {
    match sub {
        Subresource::Status | Subresource::Approval => r.typed.definition_name(),
        Subresource::Scale => "io.k8s.api.autoscaling.v1.Scale".to_string(),
        Subresource::Binding => "io.k8s.api.core.v1.Binding".to_string(),
        Subresource::Eviction => "io.k8s.api.policy.v1.Eviction".to_string(),
        Subresource::Token => "io.k8s.api.authentication.v1.TokenRequest".to_string(),
    }
}

/// The schemas of `served` and everything they reference, plus their lists and the meta kinds
/// every group version uses, with the group-version-kind extensions set.
fn definitions(dialect: Dialect, served: &[&ResourceInfo]) -> Map<String, Value> {
    let mut generator = dialect.generator();
    let mut kinds: Vec<(String, Gvk<'_>)> = Vec::new();
    for r in served {
        r.typed.schema(&mut generator);
        kinds.push((r.typed.definition_name(), gvk_of(r)));
        for &sub in r.subresources {
            match sub {
                Subresource::Status | Subresource::Approval => continue,
                Subresource::Scale => generator.subschema_for::<autoscaling::Scale>(),
                Subresource::Binding => generator.subschema_for::<core::Binding>(),
                Subresource::Eviction => generator.subschema_for::<policy::Eviction>(),
                Subresource::Token => generator.subschema_for::<authentication::TokenRequest>(),
            };
            kinds.push((sub_definition(sub, r), sub_gvk(sub, r)));
        }
    }
    generator.subschema_for::<meta::Status>();
    generator.subschema_for::<meta::DeleteOptions>();
    generator.subschema_for::<meta::WatchEvent<core::Pod>>();
    generator.subschema_for::<meta::ListMeta>();
    let mut defs = generator.take_definitions(true);

    for r in served {
        defs.insert(list_definition(r), list_schema(dialect, r));
    }
    defs.insert(
        PATCH.to_string(),
        json!({
            "description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body.",
            "type": "object",
        }),
    );

    for (name, gvk) in &kinds {
        add_gvk(&mut defs, name, *gvk);
    }
    for r in served {
        add_gvk(
            &mut defs,
            &list_definition(r),
            Gvk {
                group: r.group,
                version: r.version,
                kind: &format!("{}List", r.kind),
            },
        );
    }
    add_gvk(
        &mut defs,
        STATUS,
        Gvk {
            group: "",
            version: "v1",
            kind: "Status",
        },
    );
    // DeleteOptions and WatchEvent are registered in every group version, as upstream.
    for (group, versions) in resources::groups() {
        for version in versions {
            for (name, kind) in [
                (DELETE_OPTIONS, "DeleteOptions"),
                (WATCH_EVENT, "WatchEvent"),
            ] {
                let gvk = Gvk {
                    group,
                    version,
                    kind,
                };
                add_gvk(&mut defs, name, gvk);
            }
        }
    }

    for schema in defs.values_mut() {
        clean_schema(dialect, schema);
    }
    defs.sort_keys();
    defs
}

fn add_gvk(defs: &mut Map<String, Value>, name: &str, gvk: Gvk<'_>) {
    let Some(Value::Object(schema)) = defs.get_mut(name) else {
        return;
    };
    let list = schema
        .entry(GVK_EXTENSION)
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(list) = list {
        let value = gvk.to_value();
        if !list.contains(&value) {
            list.push(value);
        }
    }
}

/// The schema of `<Kind>List`, which k8s-openapi has no schema type for.
fn list_schema(dialect: Dialect, r: &ResourceInfo) -> Value {
    json!({
        "description": format!("{}List is a list of {} objects.", r.kind, r.kind),
        "type": "object",
        "properties": {
            "apiVersion": {
                "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources",
                "type": "string",
            },
            "items": {
                "description": format!("List of {}.", r.plural),
                "type": "array",
                "items": dialect.reference(&r.typed.definition_name()),
            },
            "kind": {
                "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
                "type": "string",
            },
            "metadata": dialect.described_reference(
                LIST_META,
                "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
            ),
        },
        "required": ["items"],
    })
}

/// Schema keywords Swagger 2.0 allows (gnostic rejects others); `x-` extensions are kept too.
const V2_KEYWORDS: &[&str] = &[
    "$ref",
    "format",
    "title",
    "description",
    "default",
    "multipleOf",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "maxProperties",
    "minProperties",
    "required",
    "enum",
    "additionalProperties",
    "type",
    "items",
    "allOf",
    "properties",
    "discriminator",
    "readOnly",
    "externalDocs",
    "example",
];

/// Brings a schema into the dialect's shape, recursively: no `$schema`/`$id`; for Swagger 2.0
/// only its keywords and a single `type`.
fn clean_schema(dialect: Dialect, schema: &mut Value) {
    let Value::Object(obj) = schema else {
        return;
    };
    obj.remove("$schema");
    obj.remove("$id");
    if dialect == Dialect::V2 {
        obj.retain(|k, _| k.starts_with("x-") || V2_KEYWORDS.contains(&k.as_str()));
        if let Some(Value::Array(types)) = obj.get("type") {
            let first = types.iter().find(|t| *t != "null").cloned();
            match first {
                Some(t) => obj.insert("type".into(), t),
                None => obj.remove("type"),
            };
        }
    }
    if let Some(Value::Object(props)) = obj.get_mut("properties") {
        for sub in props.values_mut() {
            clean_schema(dialect, sub);
        }
    }
    for key in ["items", "additionalProperties", "not"] {
        match obj.get_mut(key) {
            Some(Value::Array(subs)) => subs.iter_mut().for_each(|s| clean_schema(dialect, s)),
            Some(sub @ Value::Object(_)) => clean_schema(dialect, sub),
            _ => {}
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(subs)) = obj.get_mut(key) {
            subs.iter_mut().for_each(|s| clean_schema(dialect, s));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Paths and operations
// ---------------------------------------------------------------------------------------------

/// `/api/v1` or `/apis/apps/v1`.
fn url_prefix(group: &str, version: &str) -> String {
    format!("/{}", group_version_path(group, version))
}

/// `CoreV1`, `AppsV1`, `RbacAuthorizationV1`: the group version as operation ids spell it.
fn operation_group(group: &str, version: &str) -> String {
    let group = if group.is_empty() { "core" } else { group };
    let group = group.strip_suffix(".k8s.io").unwrap_or(group);
    let mut out = String::new();
    for part in group.split('.').chain(std::iter::once(version)) {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    out
}

fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// One parameter of an operation.
#[derive(Clone, Copy)]
struct Param {
    name: &'static str,
    location: &'static str,
    ty: &'static str,
    description: &'static str,
}

impl Param {
    fn render(self, dialect: Dialect) -> Value {
        let mut p = json!({
            "name": self.name,
            "in": self.location,
            "description": self.description,
        });
        if self.location == "path" {
            p["required"] = json!(true);
        }
        match dialect {
            Dialect::V3 => p["schema"] = json!({ "type": self.ty }),
            Dialect::V2 => p["type"] = json!(self.ty),
        }
        p
    }
}

const fn query(name: &'static str, ty: &'static str, description: &'static str) -> Param {
    Param {
        name,
        location: "query",
        ty,
        description,
    }
}

const NAME: Param = Param {
    name: "name",
    location: "path",
    ty: "string",
    description: "name of the object",
};
const NAMESPACE: Param = Param {
    name: "namespace",
    location: "path",
    ty: "string",
    description: "object name and auth scope, such as for teams and projects",
};
const PRETTY: Param = query(
    "pretty",
    "string",
    "If 'true', then the output is pretty printed.",
);
const DRY_RUN: Param = query(
    "dryRun",
    "string",
    "When present, indicates that modifications should not be persisted. An invalid or unrecognized dryRun directive will result in an error response and no further processing of the request. Valid values are: - All: all dry run stages will be processed",
);
const FIELD_MANAGER: Param = query(
    "fieldManager",
    "string",
    "fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint.",
);
const FIELD_VALIDATION: Param = query(
    "fieldValidation",
    "string",
    "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields. Valid values are: - Ignore: unknown fields are dropped silently and only the last of duplicate fields is kept. - Warn: unknown and duplicate fields are reported as warnings and the request is otherwise processed as with Ignore. - Strict: unknown or duplicate fields fail the request with BadRequest.",
);
const FORCE: Param = query(
    "force",
    "boolean",
    "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people. Force flag must be unset for non-apply patch requests.",
);
const LIST_PARAMS: &[Param] = &[
    query(
        "allowWatchBookmarks",
        "boolean",
        "allowWatchBookmarks requests watch events with type \"BOOKMARK\". Servers that do not implement bookmarks may ignore this flag.",
    ),
    query(
        "continue",
        "string",
        "The continue option should be set when retrieving more results from the server, with the value returned in the previous list response's metadata.continue.",
    ),
    query(
        "fieldSelector",
        "string",
        "A selector to restrict the list of returned objects by their fields. Defaults to everything.",
    ),
    query(
        "labelSelector",
        "string",
        "A selector to restrict the list of returned objects by their labels. Defaults to everything.",
    ),
    query(
        "limit",
        "integer",
        "limit is a maximum number of responses to return for a list call. If more items exist, the server sets the continue field of the list metadata to a value that retrieves the next chunk.",
    ),
    query(
        "resourceVersion",
        "string",
        "resourceVersion sets a constraint on what resource versions a request may be served from. Defaults to unset.",
    ),
    query(
        "resourceVersionMatch",
        "string",
        "resourceVersionMatch determines how resourceVersion is applied to list calls: Exact or NotOlderThan. Defaults to unset.",
    ),
    query(
        "sendInitialEvents",
        "boolean",
        "`sendInitialEvents=true` may be set together with `watch=true`. The watch stream then begins with synthetic ADDED events for the current state of all objects, followed by a BOOKMARK event.",
    ),
    query(
        "timeoutSeconds",
        "integer",
        "Timeout for the list/watch call. This limits the duration of the call, regardless of any activity or inactivity.",
    ),
    query(
        "watch",
        "boolean",
        "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications.",
    ),
];
const DELETE_PARAMS: &[Param] = &[
    DRY_RUN,
    query(
        "gracePeriodSeconds",
        "integer",
        "The duration in seconds before the object should be deleted. Value must be non-negative integer. The value zero indicates delete immediately.",
    ),
    query(
        "orphanDependents",
        "boolean",
        "Deprecated: please use the PropagationPolicy, this field will be deprecated in 1.7. Should the dependent objects be orphaned.",
    ),
    query(
        "propagationPolicy",
        "string",
        "Whether and how garbage collection will be performed: 'Orphan', 'Background' or 'Foreground'.",
    ),
];

/// The content types the body of a PATCH may have.
fn patch_content_types() -> Vec<&'static str> {
    let mut types = vec![
        "application/json-patch+json",
        "application/merge-patch+json",
    ];
    if ADVERTISE_STRATEGIC_MERGE_PATCH {
        types.push("application/strategic-merge-patch+json");
    }
    types.push("application/apply-patch+yaml");
    types
}

/// The content types of responses: JSON and YAML (no protobuf is served).
const RESPONSE_TYPES: &[&str] = &["application/json", "application/yaml"];
const LIST_RESPONSE_TYPES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/json;stream=watch",
];

/// One operation of a path.
struct Operation<'a> {
    method: &'static str,
    action: &'static str,
    id: String,
    description: String,
    gvk: Gvk<'a>,
    params: Vec<Param>,
    /// The request body's definition and content types.
    body: Option<(String, Vec<&'static str>)>,
    /// The response's definition.
    response: String,
    /// Success codes besides 200.
    also: &'static [&'static str],
    response_types: &'static [&'static str],
}

impl Operation<'_> {
    fn render(&self, dialect: Dialect) -> Value {
        let mut op = Map::new();
        op.insert("description".into(), json!(self.description));
        if dialect == Dialect::V2 {
            if let Some((_, types)) = &self.body {
                op.insert("consumes".into(), json!(types));
            } else {
                op.insert("consumes".into(), json!(["*/*"]));
            }
            op.insert("produces".into(), json!(self.response_types));
            op.insert("schemes".into(), json!(["https"]));
        }
        op.insert("operationId".into(), json!(self.id));
        let mut params: Vec<Value> = self.params.iter().map(|p| p.render(dialect)).collect();
        match (&self.body, dialect) {
            (Some((definition, types)), Dialect::V3) => {
                let schema = dialect.reference(definition);
                let content: Map<String, Value> = types
                    .iter()
                    .map(|t| (t.to_string(), json!({ "schema": schema })))
                    .collect();
                op.insert(
                    "requestBody".into(),
                    json!({ "content": content, "required": self.method != "delete" }),
                );
            }
            (Some((definition, _)), Dialect::V2) => params.push(json!({
                "name": "body",
                "in": "body",
                "required": self.method != "delete",
                "schema": dialect.reference(definition),
            })),
            (None, _) => {}
        }
        if !params.is_empty() {
            op.insert("parameters".into(), Value::Array(params));
        }
        let mut responses = Map::new();
        for code in std::iter::once("200").chain(self.also.iter().copied()) {
            let description = match code {
                "201" => "Created",
                "202" => "Accepted",
                _ => "OK",
            };
            let response = match dialect {
                Dialect::V3 => {
                    let schema = dialect.reference(&self.response);
                    let content: Map<String, Value> = self
                        .response_types
                        .iter()
                        .map(|t| (t.to_string(), json!({ "schema": schema })))
                        .collect();
                    json!({ "description": description, "content": content })
                }
                Dialect::V2 => json!({
                    "description": description,
                    "schema": dialect.reference(&self.response),
                }),
            };
            responses.insert(code.to_string(), response);
        }
        responses.insert("401".into(), json!({ "description": "Unauthorized" }));
        op.insert("responses".into(), Value::Object(responses));
        op.insert("x-kubernetes-action".into(), json!(self.action));
        op.insert(GVK_EXTENSION.into(), self.gvk.to_value());
        Value::Object(op)
    }
}

/// A path with its path-level parameters and operations.
struct PathItem<'a> {
    path: String,
    params: Vec<Param>,
    operations: Vec<Operation<'a>>,
}

impl PathItem<'_> {
    fn render(&self, dialect: Dialect) -> Value {
        let mut item = Map::new();
        for op in &self.operations {
            item.insert(op.method.into(), op.render(dialect));
        }
        let params: Vec<Value> = self.params.iter().map(|p| p.render(dialect)).collect();
        item.insert("parameters".into(), Value::Array(params));
        Value::Object(item)
    }
}

fn write_params(patch: bool) -> Vec<Param> {
    let mut params = vec![DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION];
    if patch {
        params.push(FORCE);
    }
    params
}

/// The paths of one resource: collection, object, the list across namespaces for namespaced
/// resources, and the subresources.
fn resource_paths(r: &ResourceInfo) -> Vec<PathItem<'_>> {
    let prefix = url_prefix(r.group, r.version);
    let og = operation_group(r.group, r.version);
    let scope = if r.namespaced { "Namespaced" } else { "" };
    let kind = r.kind;
    let gvk = gvk_of(r);
    let definition = r.typed.definition_name();
    let list = list_definition(r);
    let (collection, scope_params) = if r.namespaced {
        (
            format!("{prefix}/namespaces/{{namespace}}/{}", r.plural),
            vec![NAMESPACE, PRETTY],
        )
    } else {
        (format!("{prefix}/{}", r.plural), vec![PRETTY])
    };
    let item = format!("{collection}/{{name}}");
    let item_params = {
        let mut p = vec![NAME];
        p.extend(scope_params.iter().copied());
        p
    };
    let list_op = |id: String| Operation {
        method: "get",
        action: "list",
        id,
        description: format!("list or watch objects of kind {kind}"),
        gvk,
        params: LIST_PARAMS.to_vec(),
        body: None,
        response: list.clone(),
        also: &[],
        response_types: LIST_RESPONSE_TYPES,
    };

    let mut paths = Vec::new();
    let mut delete_collection_params = DELETE_PARAMS.to_vec();
    delete_collection_params.extend(LIST_PARAMS.iter().copied().filter(|p| {
        !matches!(
            p.name,
            "allowWatchBookmarks" | "watch" | "sendInitialEvents"
        )
    }));
    paths.push(PathItem {
        path: collection,
        params: scope_params.clone(),
        operations: vec![
            list_op(format!("list{og}{scope}{kind}")),
            Operation {
                method: "post",
                action: "post",
                id: format!("create{og}{scope}{kind}"),
                description: format!("create a {kind}"),
                gvk,
                params: write_params(false),
                body: Some((definition.clone(), vec!["*/*"])),
                response: definition.clone(),
                also: &["201", "202"],
                response_types: RESPONSE_TYPES,
            },
            Operation {
                method: "delete",
                action: "deletecollection",
                id: format!("delete{og}Collection{scope}{kind}"),
                description: format!("delete collection of {kind}"),
                gvk,
                params: delete_collection_params,
                body: Some((DELETE_OPTIONS.to_string(), vec!["*/*"])),
                response: STATUS.to_string(),
                also: &[],
                response_types: RESPONSE_TYPES,
            },
        ],
    });
    paths.push(PathItem {
        path: item.clone(),
        params: item_params.clone(),
        operations: vec![
            Operation {
                method: "get",
                action: "get",
                id: format!("read{og}{scope}{kind}"),
                description: format!("read the specified {kind}"),
                gvk,
                params: Vec::new(),
                body: None,
                response: definition.clone(),
                also: &[],
                response_types: RESPONSE_TYPES,
            },
            Operation {
                method: "put",
                action: "put",
                id: format!("replace{og}{scope}{kind}"),
                description: format!("replace the specified {kind}"),
                gvk,
                params: write_params(false),
                body: Some((definition.clone(), vec!["*/*"])),
                response: definition.clone(),
                also: &["201"],
                response_types: RESPONSE_TYPES,
            },
            Operation {
                method: "patch",
                action: "patch",
                id: format!("patch{og}{scope}{kind}"),
                description: format!("partially update the specified {kind}"),
                gvk,
                params: write_params(true),
                body: Some((PATCH.to_string(), patch_content_types())),
                response: definition.clone(),
                also: &["201"],
                response_types: RESPONSE_TYPES,
            },
            Operation {
                method: "delete",
                action: "delete",
                id: format!("delete{og}{scope}{kind}"),
                description: format!("delete a {kind}"),
                gvk,
                params: DELETE_PARAMS.to_vec(),
                body: Some((DELETE_OPTIONS.to_string(), vec!["*/*"])),
                response: definition.clone(),
                also: &["202"],
                response_types: RESPONSE_TYPES,
            },
        ],
    });
    if r.namespaced {
        paths.push(PathItem {
            path: format!("{prefix}/{}", r.plural),
            params: vec![PRETTY],
            operations: vec![list_op(format!("list{og}{kind}ForAllNamespaces"))],
        });
    }

    for &sub in r.subresources {
        let sub_gvk = sub_gvk(sub, r);
        let sub_definition = sub_definition(sub, r);
        let suffix = capitalized(sub.name());
        let what = format!("{} of the specified {kind}", sub.name());
        let mut operations = Vec::new();
        for verb in sub.verbs() {
            operations.push(match *verb {
                "get" => Operation {
                    method: "get",
                    action: "get",
                    id: format!("read{og}{scope}{kind}{suffix}"),
                    description: format!("read {what}"),
                    gvk: sub_gvk,
                    params: Vec::new(),
                    body: None,
                    response: sub_definition.clone(),
                    also: &[],
                    response_types: RESPONSE_TYPES,
                },
                "update" => Operation {
                    method: "put",
                    action: "put",
                    id: format!("replace{og}{scope}{kind}{suffix}"),
                    description: format!("replace {what}"),
                    gvk: sub_gvk,
                    params: write_params(false),
                    body: Some((sub_definition.clone(), vec!["*/*"])),
                    response: sub_definition.clone(),
                    also: &["201"],
                    response_types: RESPONSE_TYPES,
                },
                "patch" => Operation {
                    method: "patch",
                    action: "patch",
                    id: format!("patch{og}{scope}{kind}{suffix}"),
                    description: format!("partially update {what}"),
                    gvk: sub_gvk,
                    params: write_params(true),
                    body: Some((PATCH.to_string(), patch_content_types())),
                    response: sub_definition.clone(),
                    also: &["201"],
                    response_types: RESPONSE_TYPES,
                },
                _ => Operation {
                    method: "post",
                    action: "post",
                    id: format!("create{og}{scope}{kind}{suffix}"),
                    description: format!("create {} of a {kind}", sub.name()),
                    gvk: sub_gvk,
                    params: write_params(false),
                    body: Some((sub_definition.clone(), vec!["*/*"])),
                    response: sub_definition.clone(),
                    also: &["201", "202"],
                    response_types: RESPONSE_TYPES,
                },
            });
        }
        paths.push(PathItem {
            path: format!("{item}/{}", sub.name()),
            params: item_params.clone(),
            operations,
        });
    }
    paths
}

fn paths(dialect: Dialect, served: &[&ResourceInfo]) -> Map<String, Value> {
    let mut out = Map::new();
    for r in served {
        for item in resource_paths(r) {
            out.insert(item.path.clone(), item.render(dialect));
        }
    }
    out.sort_keys();
    out
}

fn build_v3(group: &str, version: &str) -> Value {
    let served = resources::in_group_version(group, version);
    json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes", "version": "unversioned" },
        "paths": paths(Dialect::V3, &served),
        "components": {
            "schemas": definitions(Dialect::V3, &served),
            "securitySchemes": {
                "BearerToken": {
                    "type": "apiKey",
                    "description": "Bearer Token authentication",
                    "name": "authorization",
                    "in": "header",
                },
            },
        },
        "security": [{ "BearerToken": [] }],
    })
}

fn build_v2() -> Value {
    let served: Vec<&ResourceInfo> = resources::RESOURCES.iter().collect();
    json!({
        "swagger": "2.0",
        "info": { "title": "Kubernetes", "version": "unversioned" },
        "paths": paths(Dialect::V2, &served),
        "definitions": definitions(Dialect::V2, &served),
        "securityDefinitions": {
            "BearerToken": {
                "type": "apiKey",
                "description": "Bearer Token authentication",
                "name": "authorization",
                "in": "header",
            },
        },
        "security": [{ "BearerToken": [] }],
    })
}

/// Encoding of the gnostic `openapi.v2` protobuf messages (OpenAPIv2.proto), from the JSON
/// document: only the messages and fields the served documents use.
mod protobuf {
    use serde_json::Value;

    /// A message being written.
    #[derive(Default)]
    pub(super) struct Message(pub(super) Vec<u8>);

    impl Message {
        fn varint(&mut self, mut v: u64) {
            while v >= 0x80 {
                self.0.push((v as u8 & 0x7f) | 0x80);
                v >>= 7;
            }
            self.0.push(v as u8);
        }

        fn tag(&mut self, field: u32, wire_type: u8) {
            self.varint(u64::from(field) << 3 | u64::from(wire_type));
        }

        fn bytes(&mut self, field: u32, bytes: &[u8]) {
            self.tag(field, 2);
            self.varint(bytes.len() as u64);
            self.0.extend_from_slice(bytes);
        }

        fn string(&mut self, field: u32, s: &str) {
            self.bytes(field, s.as_bytes());
        }

        fn message(&mut self, field: u32, m: Message) {
            self.bytes(field, &m.0);
        }

        fn bool(&mut self, field: u32, b: bool) {
            self.tag(field, 0);
            self.varint(u64::from(b));
        }

        fn int64(&mut self, field: u32, i: i64) {
            self.tag(field, 0);
            self.varint(i as u64);
        }

        fn double(&mut self, field: u32, d: f64) {
            self.tag(field, 1);
            self.0.extend_from_slice(&d.to_le_bytes());
        }
    }

    /// `Any`: a value as YAML text (JSON is YAML).
    fn any(value: &Value) -> Message {
        let mut m = Message::default();
        m.string(2, &value.to_string());
        m
    }

    /// `NamedAny`: a vendor extension.
    fn named_any(name: &str, value: &Value) -> Message {
        let mut m = Message::default();
        m.string(1, name);
        m.message(2, any(value));
        m
    }

    fn named_schema(name: &str, schema: &Value) -> Message {
        let mut m = Message::default();
        m.string(1, name);
        m.message(2, self::schema(schema));
        m
    }

    /// `Schema` from a Swagger 2.0 schema object.
    pub(super) fn schema(value: &Value) -> Message {
        let mut m = Message::default();
        let Value::Object(obj) = value else {
            return m;
        };
        let str_field = |m: &mut Message, field: u32, key: &str| {
            if let Some(Value::String(s)) = obj.get(key) {
                m.string(field, s);
            }
        };
        let f64_field = |m: &mut Message, field: u32, key: &str| {
            if let Some(d) = obj.get(key).and_then(Value::as_f64) {
                m.double(field, d);
            }
        };
        let i64_field = |m: &mut Message, field: u32, key: &str| {
            if let Some(i) = obj.get(key).and_then(Value::as_i64) {
                m.int64(field, i);
            }
        };
        let bool_field = |m: &mut Message, field: u32, key: &str| {
            if let Some(Value::Bool(b)) = obj.get(key) {
                m.bool(field, *b);
            }
        };
        str_field(&mut m, 1, "$ref");
        str_field(&mut m, 2, "format");
        str_field(&mut m, 3, "title");
        str_field(&mut m, 4, "description");
        if let Some(d) = obj.get("default") {
            m.message(5, any(d));
        }
        f64_field(&mut m, 6, "multipleOf");
        f64_field(&mut m, 7, "maximum");
        bool_field(&mut m, 8, "exclusiveMaximum");
        f64_field(&mut m, 9, "minimum");
        bool_field(&mut m, 10, "exclusiveMinimum");
        i64_field(&mut m, 11, "maxLength");
        i64_field(&mut m, 12, "minLength");
        str_field(&mut m, 13, "pattern");
        i64_field(&mut m, 14, "maxItems");
        i64_field(&mut m, 15, "minItems");
        bool_field(&mut m, 16, "uniqueItems");
        i64_field(&mut m, 17, "maxProperties");
        i64_field(&mut m, 18, "minProperties");
        if let Some(Value::Array(required)) = obj.get("required") {
            for r in required.iter().filter_map(Value::as_str) {
                m.string(19, r);
            }
        }
        if let Some(Value::Array(values)) = obj.get("enum") {
            for v in values {
                m.message(20, any(v));
            }
        }
        match obj.get("additionalProperties") {
            Some(Value::Bool(b)) => {
                let mut item = Message::default();
                item.bool(2, *b);
                m.message(21, item);
            }
            Some(sub @ Value::Object(_)) => {
                let mut item = Message::default();
                item.message(1, schema(sub));
                m.message(21, item);
            }
            _ => {}
        }
        match obj.get("type") {
            Some(Value::String(t)) => {
                let mut item = Message::default();
                item.string(1, t);
                m.message(22, item);
            }
            Some(Value::Array(types)) => {
                let mut item = Message::default();
                types
                    .iter()
                    .filter_map(Value::as_str)
                    .for_each(|t| item.string(1, t));
                m.message(22, item);
            }
            _ => {}
        }
        match obj.get("items") {
            Some(sub @ Value::Object(_)) => {
                let mut item = Message::default();
                item.message(1, schema(sub));
                m.message(23, item);
            }
            Some(Value::Array(subs)) => {
                let mut item = Message::default();
                subs.iter().for_each(|s| item.message(1, schema(s)));
                m.message(23, item);
            }
            _ => {}
        }
        if let Some(Value::Array(subs)) = obj.get("allOf") {
            for sub in subs {
                m.message(24, schema(sub));
            }
        }
        if let Some(Value::Object(props)) = obj.get("properties") {
            let mut item = Message::default();
            for (name, sub) in props {
                item.message(1, named_schema(name, sub));
            }
            m.message(25, item);
        }
        str_field(&mut m, 26, "discriminator");
        bool_field(&mut m, 27, "readOnly");
        if let Some(e) = obj.get("example") {
            m.message(30, any(e));
        }
        for (k, v) in obj.iter().filter(|(k, _)| k.starts_with("x-")) {
            m.message(31, named_any(k, v));
        }
        m
    }

    /// `Document` with `swagger`, `info` and `definitions`.
    pub(super) fn document(doc: &Value) -> Vec<u8> {
        let mut m = Message::default();
        m.string(1, doc["swagger"].as_str().unwrap_or("2.0"));
        let mut info = Message::default();
        info.string(1, doc["info"]["title"].as_str().unwrap_or_default());
        info.string(2, doc["info"]["version"].as_str().unwrap_or_default());
        m.message(2, info);
        if let Some(Value::Object(defs)) = doc.get("definitions") {
            let mut definitions = Message::default();
            for (name, schema) in defs {
                definitions.message(1, named_schema(name, schema));
            }
            m.message(9, definitions);
        }
        m.0
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every `$ref` string in a document, with where it was found.
    fn refs(value: &Value, at: &str, out: &mut Vec<(String, String)>) {
        match value {
            Value::Object(obj) => {
                for (k, v) in obj {
                    if k == "$ref" {
                        if let Value::String(s) = v {
                            out.push((at.to_string(), s.clone()));
                        }
                    } else {
                        let k = k.replace('~', "~0").replace('/', "~1");
                        refs(v, &format!("{at}/{k}"), out);
                    }
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    refs(v, &format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }

    fn served_group_versions() -> Vec<(&'static str, &'static str)> {
        resources::groups()
            .into_iter()
            .flat_map(|(g, vs)| vs.into_iter().map(move |v| (g, v)))
            .collect()
    }

    fn v3(group: &str, version: &str) -> Value {
        v3_group_version(group, version).expect("served group version")
    }

    fn gvk_value(group: &str, version: &str, kind: &str) -> Value {
        json!({ "group": group, "kind": kind, "version": version })
    }

    /// The schema that lists `gvk` in its extension, as `kubectl explain` finds it.
    fn schema_with_gvk<'a>(schemas: &'a Map<String, Value>, gvk: &Value) -> Option<&'a Value> {
        schemas.values().find(|s| {
            s.get(GVK_EXTENSION)
                .and_then(Value::as_array)
                .is_some_and(|l| l.contains(gvk))
        })
    }

    /// Resolves a `#/components/schemas/` reference, a one-element `allOf` or the schema itself.
    fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            let name = r.strip_prefix("#/components/schemas/").expect("v3 ref");
            return resolve(doc, &doc["components"]["schemas"][name]);
        }
        if let Some([only]) = schema
            .get("allOf")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
        {
            return resolve(doc, only);
        }
        schema
    }

    #[test]
    fn every_served_kind_has_a_schema_with_its_group_version_kind_in_its_group_version_document() {
        for r in resources::RESOURCES {
            let doc = v3(r.group, r.version);
            let schemas = doc["components"]["schemas"].as_object().unwrap();
            for kind in [r.kind.to_string(), format!("{}List", r.kind)] {
                let gvk = gvk_value(r.group, r.version, &kind);
                let schema = schema_with_gvk(schemas, &gvk)
                    .unwrap_or_else(|| panic!("no schema for {gvk} in {r:?}"));
                assert_eq!(schema["type"], "object", "{gvk}");
            }
            let schema = &schemas[&r.typed.definition_name()];
            assert_eq!(
                schema[GVK_EXTENSION],
                json!([gvk_value(r.group, r.version, r.kind)])
            );
            for &sub in r.subresources {
                let (g, v, k) = sub.kind(r);
                assert!(schema_with_gvk(schemas, &gvk_value(g, v, k)).is_some());
            }
        }
    }

    #[test]
    fn every_served_kind_has_a_definition_with_its_group_version_kind_in_the_v2_document() {
        let doc = v2();
        let defs = doc["definitions"].as_object().unwrap();
        for r in resources::RESOURCES {
            let gvk = gvk_value(r.group, r.version, r.kind);
            let name = r.typed.definition_name();
            assert_eq!(defs[&name][GVK_EXTENSION], json!([gvk]), "{name}");
        }
    }

    #[test]
    fn every_reference_resolves_within_its_group_version_document() {
        for (group, version) in served_group_versions() {
            let doc = v3(group, version);
            let schemas = doc["components"]["schemas"].as_object().unwrap();
            let mut found = Vec::new();
            refs(&doc, "", &mut found);
            assert!(!found.is_empty());
            for (at, r) in found {
                let name = r
                    .strip_prefix("#/components/schemas/")
                    .unwrap_or_else(|| panic!("{at}: {r} is not a components ref"));
                assert!(schemas.contains_key(name), "{group}/{version} {at}: {r}");
            }
        }
    }

    #[test]
    fn every_reference_resolves_within_the_v2_document() {
        let doc = v2();
        let defs = doc["definitions"].as_object().unwrap();
        let mut found = Vec::new();
        refs(&doc, "", &mut found);
        for (at, r) in found {
            let name = r
                .strip_prefix("#/definitions/")
                .unwrap_or_else(|| panic!("{at}: {r} is not a definitions ref"));
            assert!(defs.contains_key(name), "{at}: {r}");
        }
    }

    #[test]
    fn v3_references_carry_no_siblings_and_v2_schemas_use_only_swagger_keywords() {
        for (group, version) in served_group_versions() {
            let mut found = Vec::new();
            refs(&v3(group, version), "", &mut found);
            let doc = v3(group, version);
            for (at, _) in found {
                let holder = doc.pointer(&at).unwrap_or(&doc);
                assert_eq!(holder.as_object().map(Map::len), Some(1), "{at}");
            }
        }
        fn check(schema: &Value, at: &str) {
            let Value::Object(obj) = schema else { return };
            for (k, v) in obj {
                assert!(
                    k.starts_with("x-") || V2_KEYWORDS.contains(&k.as_str()),
                    "{at}: {k}"
                );
                assert!(k != "type" || v.is_string(), "{at}: {v}");
            }
            if let Some(Value::Object(props)) = obj.get("properties") {
                for (k, v) in props {
                    check(v, &format!("{at}/properties/{k}"));
                }
            }
            for key in ["items", "additionalProperties"] {
                if let Some(v) = obj.get(key) {
                    check(v, &format!("{at}/{key}"));
                }
            }
        }
        let doc = v2();
        for (name, schema) in doc["definitions"].as_object().unwrap() {
            check(schema, name);
        }
    }

    #[test]
    fn the_pods_patch_operation_lists_field_validation_inline() {
        let doc = v3("", "v1");
        let patch = &doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"];
        assert_eq!(patch[GVK_EXTENSION], gvk_value("", "v1", "Pod"));
        let names: Vec<&str> = patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        for name in ["fieldValidation", "fieldManager", "dryRun", "force"] {
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
    }

    #[test]
    fn every_patch_operation_of_every_document_lists_field_validation() {
        let mut docs: Vec<Value> = served_group_versions()
            .into_iter()
            .map(|(g, v)| v3(g, v))
            .collect();
        docs.push(v2());
        for doc in docs {
            for (path, item) in doc["paths"].as_object().unwrap() {
                let Some(patch) = item.get("patch") else {
                    continue;
                };
                assert!(patch[GVK_EXTENSION].is_object(), "{path}");
                let has = patch["parameters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["name"] == "fieldValidation" && p["in"] == "query");
                assert!(has, "{path}");
            }
        }
    }

    #[test]
    fn every_served_kind_has_a_patch_operation_in_its_document() {
        for r in resources::RESOURCES {
            let doc = v3(r.group, r.version);
            let gvk = gvk_value(r.group, r.version, r.kind);
            let patched = doc["paths"]
                .as_object()
                .unwrap()
                .values()
                .filter_map(|item| item.get("patch"))
                .any(|op| op[GVK_EXTENSION] == gvk);
            assert!(patched, "{r:?}");
        }
    }

    #[test]
    fn patch_operations_leave_strategic_merge_metadata_to_the_client() {
        let doc = v3("apps", "v1");
        let patch =
            &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        let content = patch["requestBody"]["content"].as_object().unwrap();
        assert!(content.contains_key("application/merge-patch+json"));
        assert!(content.contains_key("application/apply-patch+yaml"));
        assert_eq!(
            content.contains_key("application/strategic-merge-patch+json"),
            ADVERTISE_STRATEGIC_MERGE_PATCH
        );
    }

    #[test]
    fn pod_spec_containers_is_reachable_through_references_and_described() {
        let doc = v3("", "v1");
        // As `kubectl explain pods.spec.containers` does: the kind from the resource's paths,
        // the schema from the kind, then properties and references.
        let gvk = &doc["paths"]["/api/v1/pods"]["get"][GVK_EXTENSION];
        assert_eq!(*gvk, gvk_value("", "v1", "Pod"));
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let pod = schema_with_gvk(schemas, gvk).unwrap();
        let spec = &pod["properties"]["spec"];
        assert!(spec["description"].as_str().is_some_and(|d| !d.is_empty()));
        let spec = resolve(&doc, spec);
        assert!(
            spec["required"]
                .as_array()
                .unwrap()
                .contains(&json!("containers"))
        );
        let containers = &spec["properties"]["containers"];
        assert_eq!(containers["type"], "array");
        assert!(
            containers["description"]
                .as_str()
                .is_some_and(|d| d.contains("containers"))
        );
        let container = resolve(&doc, &containers["items"]);
        assert_eq!(container["type"], "object");
        assert_eq!(container["properties"]["image"]["type"], "string");
        let ports = resolve(&doc, &container["properties"]["ports"]["items"]);
        assert_eq!(ports["properties"]["containerPort"]["format"], "int32");
    }

    #[test]
    fn deployment_scale_and_pod_eviction_are_served_with_their_own_kinds() {
        let apps = v3("apps", "v1");
        let scale = &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"];
        for method in ["get", "put", "patch"] {
            assert_eq!(
                scale[method][GVK_EXTENSION],
                gvk_value("autoscaling", "v1", "Scale")
            );
        }
        assert!(apps["components"]["schemas"]["io.k8s.api.autoscaling.v1.Scale"].is_object());
        let core = v3("", "v1");
        let eviction = &core["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/eviction"];
        assert_eq!(
            eviction["post"][GVK_EXTENSION],
            gvk_value("policy", "v1", "Eviction")
        );
        let status = &core["paths"]["/api/v1/nodes/{name}/status"];
        assert_eq!(status["patch"][GVK_EXTENSION], gvk_value("", "v1", "Node"));
        assert!(
            core["paths"]
                .get("/api/v1/namespaces/{namespace}/nodes")
                .is_none()
        );
        assert!(core["paths"].get("/api/v1/nodes").is_some());
    }

    #[test]
    fn list_operations_answer_with_the_list_kind() {
        let doc = v3("", "v1");
        let list = &doc["paths"]["/api/v1/namespaces/{namespace}/configmaps"]["get"];
        assert_eq!(list["x-kubernetes-action"], "list");
        assert_eq!(
            list["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.ConfigMapList"
        );
        let names: Vec<&str> = list["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert!(names.contains(&"labelSelector") && names.contains(&"watch"));
        let list_schema = &doc["components"]["schemas"]["io.k8s.api.core.v1.ConfigMapList"];
        assert_eq!(
            list_schema["properties"]["items"]["items"]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.ConfigMap"
        );
    }

    #[test]
    fn operation_ids_are_unique_within_each_document() {
        let mut docs: Vec<Value> = served_group_versions()
            .into_iter()
            .map(|(g, v)| v3(g, v))
            .collect();
        docs.push(v2());
        for doc in docs {
            let mut seen = BTreeSet::new();
            for item in doc["paths"].as_object().unwrap().values() {
                for (method, op) in item.as_object().unwrap() {
                    if method == "parameters" {
                        continue;
                    }
                    let id = op["operationId"].as_str().unwrap().to_string();
                    assert!(seen.insert(id.clone()), "{id} twice");
                }
            }
        }
        let doc = v3("rbac.authorization.k8s.io", "v1");
        let op = &doc["paths"]["/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}"]["get"];
        assert_eq!(op["operationId"], "readRbacAuthorizationV1ClusterRole");
    }

    #[test]
    fn v3_root_lists_every_group_version_with_a_stable_hash() {
        let root = v3_root();
        let paths = root["paths"].as_object().unwrap();
        let gvs = served_group_versions();
        assert_eq!(paths.len(), gvs.len());
        let mut hashes = BTreeSet::new();
        for (group, version) in gvs {
            let key = group_version_path(group, version);
            let url = paths[&key]["serverRelativeURL"].as_str().unwrap();
            let (json, hash) = v3_group_version_json(group, version).unwrap();
            assert_eq!(url, format!("/openapi/v3/{key}?hash={hash}"));
            assert_eq!(hash, content_hash(json));
            assert_eq!(
                serde_json::from_slice::<Value>(json).unwrap(),
                v3(group, version)
            );
            hashes.insert(hash.to_string());
        }
        assert_eq!(
            hashes.len(),
            paths.len(),
            "distinct documents, distinct hashes"
        );
        assert_eq!(v3_root(), root);
        assert!(paths.contains_key("api/v1") && paths.contains_key("apis/apps/v1"));
    }

    #[test]
    fn the_hash_changes_when_the_document_changes() {
        let (json, hash) = v3_group_version_json("", "v1").unwrap();
        let mut changed = json.to_vec();
        changed.push(b' ');
        assert_ne!(content_hash(&changed), hash);
        assert_eq!(content_hash(json), hash);
    }

    #[test]
    fn unserved_group_versions_have_no_document() {
        assert!(v3_group_version("apps", "v1beta1").is_none());
        assert!(v3_group_version("nonexistent.example.com", "v1").is_none());
        assert!(v3_group_version_json("", "v2").is_none());
    }

    #[test]
    fn documents_declare_their_dialect() {
        let doc = v3("", "v1");
        assert_eq!(doc["openapi"], "3.0.0");
        assert!(doc.get("swagger").is_none());
        let text = serde_json::to_string(&doc).unwrap();
        assert!(!text.contains("#/definitions/") && !text.contains("\"$schema\""));
        let doc = v2();
        assert_eq!(doc["swagger"], "2.0");
        assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
        // JSONSchemaProps (CRDs) has properties named `$ref` and `$schema`; leave it out.
        let mut checked = doc.clone();
        if let Some(defs) = checked["definitions"].as_object_mut() {
            defs.retain(|name, _| !name.ends_with("JSONSchemaProps"));
        }
        let text = serde_json::to_string(&checked).unwrap();
        assert!(!text.contains("#/components/") && !text.contains("\"$schema\""));
        let (json, hash) = v2_json();
        assert_eq!(serde_json::from_slice::<Value>(json).unwrap(), doc);
        assert_eq!(hash, content_hash(json));
    }

    /// Reads the fields of one protobuf message: (field, wire type, payload or varint value).
    fn pb_fields(mut buf: &[u8]) -> Vec<(u64, u64, &[u8])> {
        fn varint(buf: &mut &[u8]) -> u64 {
            let mut v = 0u64;
            for shift in (0..64).step_by(7) {
                let b = buf[0];
                *buf = &buf[1..];
                v |= u64::from(b & 0x7f) << shift;
                if b < 0x80 {
                    break;
                }
            }
            v
        }
        let mut out = Vec::new();
        while !buf.is_empty() {
            let key = varint(&mut buf);
            let (field, wire) = (key >> 3, key & 7);
            match wire {
                0 => out.push((field, wire, &[][..])),
                1 => {
                    out.push((field, wire, &buf[..8]));
                    buf = &buf[8..];
                }
                2 => {
                    let len = varint(&mut buf) as usize;
                    out.push((field, wire, &buf[..len]));
                    buf = &buf[len..];
                }
                _ => panic!("unexpected wire type {wire}"),
            }
            if wire == 0 {
                // The varint was consumed by `varint` above only for keys; consume the value.
                let _ = varint(&mut buf);
            }
        }
        out
    }

    #[test]
    fn the_v2_protobuf_holds_every_definition_with_its_group_version_kind() {
        let pb = v2_protobuf();
        let fields = pb_fields(pb);
        assert_eq!(fields[0], (1, 2, &b"2.0"[..]));
        let definitions = fields.iter().find(|f| f.0 == 9).expect("definitions").2;
        let named: Vec<(&[u8], &[u8])> = pb_fields(definitions)
            .into_iter()
            .map(|(field, _, named)| {
                assert_eq!(field, 1);
                let parts = pb_fields(named);
                (parts[0].2, parts[1].2)
            })
            .collect();
        let doc = v2();
        assert_eq!(named.len(), doc["definitions"].as_object().unwrap().len());
        let (_, pod) = named
            .iter()
            .find(|(name, _)| *name == b"io.k8s.api.core.v1.Pod")
            .expect("Pod");
        let pod = pb_fields(pod);
        // type: object, and the group-version-kind extension as YAML (JSON) text.
        let ty = pod.iter().find(|f| f.0 == 22).unwrap().2;
        assert_eq!(pb_fields(ty)[0].2, b"object");
        let ext = pod.iter().find(|f| f.0 == 31).unwrap().2;
        let ext = pb_fields(ext);
        assert_eq!(ext[0].2, GVK_EXTENSION.as_bytes());
        let yaml = pb_fields(ext[1].2)[0].2;
        let value: Value = serde_json::from_slice(yaml).unwrap();
        assert_eq!(value, json!([gvk_value("", "v1", "Pod")]));
    }
}
