//! The resource verbs: get, list, create, update, patch, delete, deletecollection and the
//! subresources (status, scale, binding, eviction), over the store and the per-kind rules.
//!
//! Every write follows the same path: decode and schema-check the body (unknown fields per
//! `fieldValidation`), apply server-owned fields, defaults and validation, then a
//! compare-and-swap on the stored revision. Writes that do not name a resourceVersion retry on
//! a lost race; ones that do get 409 Conflict, exactly as upstream.

use std::sync::Arc;

use apimachinery::fields::FieldSelector;
use apimachinery::resources::{ResourceInfo, Subresource};
use apimachinery::selector::LabelSelector;
use apimachinery::status::{self, ApiError, FieldCause};
use apimachinery::{defaults, meta, patch, printers, validation};
use base64::Engine;
use http::{Response, StatusCode, header};
use serde_json::{Map, Value, json};

use super::negotiate::{self, Allowed, Format};
use super::request::{Query, ResourceRequest, Verb};
use super::{Api, ApiRequest, Body, Reply, respond};
use crate::auth::UserInfo;
use crate::registry;
use crate::storage::{KeyValue, ListOptions, StoreError};

/// How many times a write that lost a race is retried before giving up with 409.
const MAX_RETRIES: usize = 16;

/// Dispatches a resource request.
pub async fn handle(
    api: &Arc<Api>,
    r: ResourceRequest,
    req: ApiRequest,
    _user: &UserInfo,
) -> Result<Response<Body>, ApiError> {
    let accept = req.header(header::ACCEPT).map(String::from);
    let format = negotiate::negotiate(accept.as_deref(), Allowed::Objects)?;
    let reply = match (r.verb, r.subresource) {
        (Verb::Watch, _) => return super::watch::serve(api, &r, format).await,
        (Verb::Get, Some(Subresource::Scale)) => {
            let (obj, _) = get_current(api, &r).await?;
            Reply::ok(registry::scale_of(&obj))
        }
        (Verb::Get, _) => {
            let (obj, _) = get_current(api, &r).await?;
            Reply::ok(obj)
        }
        (Verb::List, _) => list(api, &r).await?,
        (Verb::Create, Some(Subresource::Binding)) => binding(api, &r, &req).await?,
        (Verb::Create, Some(Subresource::Eviction)) => eviction(api, &r, &req).await?,
        (Verb::Create, Some(Subresource::Token)) => token_request(api, &r, &req).await?,
        (Verb::Create, _) => create(api, &r, &req).await?,
        (Verb::Update, _) => update(api, &r, &req).await?,
        (Verb::Patch, _) => patch_object(api, &r, &req).await?,
        (Verb::Delete, _) => delete(api, &r, &req).await?,
        (Verb::DeleteCollection, _) => delete_collection(api, &r, &req).await?,
    };
    Ok(respond(shape(reply, &r, format)))
}

/// Turns a reply into the requested representation: Table, metadata-only or as is.
fn shape(mut reply: Reply, r: &ResourceRequest, format: Format) -> Reply {
    if reply.body["kind"] == "Status" || !reply.status.is_success() {
        return reply;
    }
    let is_list = r.verb == Verb::List;
    match format {
        Format::Table(version) => {
            let (objects, rv, cont) = if is_list {
                let items = reply.body["items"].as_array().cloned().unwrap_or_default();
                let m = &reply.body["metadata"];
                (
                    items,
                    m["resourceVersion"].as_str().unwrap_or("").to_string(),
                    m["continue"].as_str().map(String::from),
                )
            } else {
                let rv = meta::resource_version(&reply.body)
                    .unwrap_or("")
                    .to_string();
                (vec![reply.body.clone()], rv, None)
            };
            let (group, kind) = table_kind(r);
            let include = r.query.get("includeObject").unwrap_or("Metadata");
            reply.body = table(
                group,
                kind,
                &objects,
                include,
                &rv,
                cont.as_deref(),
                version,
            );
        }
        Format::Metadata => {
            let to_meta = |o: &Value| json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]});
            reply.body = if is_list {
                let items: Vec<Value> = reply.body["items"]
                    .as_array()
                    .map(|a| a.iter().map(to_meta).collect())
                    .unwrap_or_default();
                json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": reply.body["metadata"], "items": items})
            } else {
                to_meta(&reply.body)
            };
        }
        _ => {}
    }
    reply.format = format;
    reply
}

/// The (group, kind) whose printer renders a request's objects.
pub(crate) fn table_kind(r: &ResourceRequest) -> (&'static str, &'static str) {
    match r.subresource {
        Some(Subresource::Scale) => ("autoscaling", "Scale"),
        _ => (r.resource.group, r.resource.kind),
    }
}

/// A meta.k8s.io Table of `objects` in the Table version the client asked for.
pub(crate) fn table(
    group: &str,
    kind: &str,
    objects: &[Value],
    include: &str,
    rv: &str,
    cont: Option<&str>,
    version: &str,
) -> Value {
    let include = include.parse().unwrap_or(printers::IncludeObject::Metadata);
    let mut t = printers::table(
        group,
        kind,
        objects,
        jiff::Timestamp::now(),
        include,
        rv,
        cont.unwrap_or(""),
    );
    t["apiVersion"] = format!("meta.k8s.io/{version}").into();
    t
}

fn store_err(r: &ResourceRequest, name: &str) -> impl Fn(StoreError) -> ApiError {
    let gr = r.group_resource();
    let name = name.to_string();
    move |e| match e {
        StoreError::NotFound { .. } => ApiError::not_found(&gr, &name),
        StoreError::AlreadyExists { .. } => ApiError::already_exists(&gr, &name),
        StoreError::Conflict { .. } => ApiError::conflict(&gr, &name, ApiError::STALE_OBJECT),
        StoreError::Compacted {
            requested,
            compacted,
        } => ApiError::gone(format!(
            "too old resource version: {requested} ({compacted})"
        )),
        StoreError::FutureRevision { requested, current } => {
            let mut e = ApiError::timeout(format!(
                "Too large resource version: {requested}, current: {current}"
            ));
            e.retry_after = Some(1);
            e
        }
        other => {
            tracing::error!(error = %other, resource = %gr, %name, "storage failure");
            ApiError::internal(other)
        }
    }
}

/// Decodes a stored value into the object clients see.
pub(crate) fn from_store(r: &ResourceInfo, kv: &KeyValue) -> Result<Value, ApiError> {
    let mut obj: Value = serde_json::from_slice(&kv.value).map_err(|e| {
        ApiError::internal(format!("stored object {} is not valid JSON: {e}", kv.key))
    })?;
    meta::set(
        &mut obj,
        "resourceVersion",
        Some(kv.mod_revision.to_string().into()),
    );
    if r.storage_of.is_some() {
        obj = crate::conversion::from_storage(r, obj);
    }
    Ok(obj)
}

fn to_store(r: &ResourceInfo, obj: &Value) -> Vec<u8> {
    let mut obj = if r.storage_of.is_some() {
        crate::conversion::to_storage(r, obj.clone())
    } else {
        obj.clone()
    };
    meta::set(&mut obj, "resourceVersion", None);
    serde_json::to_vec(&obj).unwrap_or_default()
}

fn key_of(r: &ResourceRequest, name: &str) -> String {
    r.resource.storage_key(r.namespace.as_deref(), name)
}

async fn get_current(api: &Api, r: &ResourceRequest) -> Result<(Value, KeyValue), ApiError> {
    let name = r.name.as_deref().unwrap_or_default();
    let kv = api
        .store
        .get(&key_of(r, name))
        .await
        .map_err(store_err(r, name))?
        .ok_or_else(|| ApiError::not_found(&r.group_resource(), name))?;
    Ok((from_store(r.resource, &kv)?, kv))
}

/// Field validation directive of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

fn field_validation(q: &Query) -> Result<FieldValidation, ApiError> {
    match q.get("fieldValidation") {
        None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
        Some("Ignore") => Ok(FieldValidation::Ignore),
        Some("Strict") => Ok(FieldValidation::Strict),
        Some(other) => Err(ApiError::bad_request(format!(
            "fieldValidation parameter unsupported: {other}. Supported values: Ignore, Warn, Strict"
        ))),
    }
}

/// Paths present in `input` but dropped by the schema round trip.
fn unknown_fields(input: &Value, normalized: &Value, path: &str, out: &mut Vec<String>) {
    match (input, normalized) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    None if !v.is_null() => out.push(p),
                    Some(n) => unknown_fields(v, n, &p, out),
                    None => {}
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                unknown_fields(x, y, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Parses a request body as JSON or YAML.
fn parse_body(req: &ApiRequest) -> Result<Value, ApiError> {
    let content_type = req
        .header(header::CONTENT_TYPE)
        .unwrap_or("application/json");
    let media = content_type.split(';').next().unwrap_or("").trim();
    if req.body.is_empty() {
        return Err(ApiError::bad_request(
            "the request body is empty; an object was expected",
        ));
    }
    match media {
        "application/yaml" => serde_yaml::from_slice(&req.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}"))),
        "application/json" | "" | "*/*" => serde_json::from_slice(&req.body).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        }),
        "application/vnd.kubernetes.protobuf" => super::protobuf::decode(&req.body),
        other => Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format ({other}) - accepted media types include: application/json, application/yaml"
        ))),
    }
}

/// Checks the object's kind, drops fields the schema does not know (warning or failing per
/// `fieldValidation`) and returns the normalized object.
fn check_schema(
    r: &ResourceInfo,
    input: Value,
    q: &Query,
    warnings: &mut Vec<String>,
) -> Result<Value, ApiError> {
    if !input.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    let kind = input["kind"].as_str().unwrap_or_default();
    let api_version = input["apiVersion"].as_str().unwrap_or_default();
    if kind.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Object 'Kind' is missing in '{}'",
            truncate(&input.to_string(), 200)
        )));
    }
    if kind != r.kind || (api_version != r.api_version() && !api_version.is_empty()) {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            r.api_version()
        ))
        .with_kind_mismatch(kind, r.kind));
    }
    let directive = field_validation(q)?;
    let typed_err = |e: serde_json::Error| {
        ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {e}",
            r.kind, r.version, r.kind
        ))
    };
    let mut normalized = r.typed.normalize(input.clone()).map_err(typed_err)?;
    normalized["apiVersion"] = r.api_version().into();
    normalized["kind"] = r.kind.into();
    if directive != FieldValidation::Ignore {
        let mut unknown = Vec::new();
        unknown_fields(&input, &normalized, "", &mut unknown);
        if !unknown.is_empty() {
            let lines: Vec<String> = unknown
                .iter()
                .map(|p| format!("unknown field \"{p}\""))
                .collect();
            if directive == FieldValidation::Strict {
                return Err(ApiError::bad_request(format!(
                    "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
                    r.kind,
                    r.version,
                    r.kind,
                    lines.join(", ")
                )));
            }
            warnings.extend(lines);
        }
    }
    Ok(normalized)
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

trait KindMismatch {
    fn with_kind_mismatch(self, got: &str, want: &str) -> Self;
}

impl KindMismatch for ApiError {
    fn with_kind_mismatch(mut self, got: &str, want: &str) -> Self {
        if got != want {
            self.message = format!(
                "the kind of the object ({got}) does not match the kind of the endpoint ({want})"
            );
        }
        self
    }
}

/// Defaults and validates an object that is about to be stored.
fn default_and_validate(
    r: &ResourceRequest,
    obj: &mut Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    if (r.resource.group, r.resource.kind) == ("", "Secret") {
        registry::fold_string_data(obj);
    }
    registry::drop_empty_fields(obj);
    defaults::apply(r.resource.group, r.resource.kind, obj);
    let name = meta::name(obj).unwrap_or_default().to_string();
    let mut causes = Vec::new();
    if name.is_empty() {
        causes.push(FieldCause::new(
            status::CauseType::Required,
            "metadata.name",
            None,
            "name or generateName is required",
        ));
    }
    causes.extend(validation::validate(
        r.resource.group,
        r.resource.kind,
        obj,
        old,
    ));
    if let Some(old) = old {
        for field in ["name", "namespace"] {
            if meta::str_field(obj, field) != meta::str_field(old, field) {
                causes.push(FieldCause::invalid(
                    format!("metadata.{field}"),
                    meta::str_field(obj, field).unwrap_or(""),
                    "field is immutable",
                ));
            }
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            r.resource.group,
            r.resource.kind,
            &name,
            causes,
        ))
    }
}

/// The namespace the object must be in: the path's; a different one in the body is a 400.
fn place_in_namespace(r: &ResourceRequest, obj: &mut Value) -> Result<(), ApiError> {
    if r.resource.namespaced {
        let ns = r.namespace.as_deref().unwrap_or_default();
        match meta::namespace(obj) {
            Some(body_ns) if body_ns != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => meta::set(obj, "namespace", Some(ns.into())),
        }
    } else {
        meta::set(obj, "namespace", None);
    }
    Ok(())
}

async fn create(api: &Api, r: &ResourceRequest, req: &ApiRequest) -> Result<Reply, ApiError> {
    let dry_run = r.query.dry_run()?;
    let mut warnings = Vec::new();
    let mut obj = check_schema(r.resource, parse_body(req)?, &r.query, &mut warnings)?;
    place_in_namespace(r, &mut obj)?;
    let generate = meta::name(&obj)
        .is_none()
        .then(|| {
            meta::str_field(&obj, "generateName")
                .unwrap_or("")
                .to_string()
        })
        .filter(|g| !g.is_empty());
    if let Some(prefix) = &generate {
        meta::set(
            &mut obj,
            "name",
            Some(registry::generate_name(prefix).into()),
        );
    }
    let name = meta::name(&obj).unwrap_or_default().to_string();
    if let (true, Some(ns)) = (r.resource.namespaced, r.namespace.as_deref()) {
        api.admission
            .check_namespace(api.store.as_ref(), ns, &r.group_resource(), &name)
            .await?;
    }
    registry::prepare_create(r.resource, &mut obj);
    if r.resource.kind == "Pod" && r.resource.group.is_empty() {
        api.admission
            .resolve_priority(api.store.as_ref(), &mut obj, &name)
            .await?;
    }
    if r.resource.kind == "PriorityClass" {
        api.admission
            .check_default_priority_class(api.store.as_ref(), &obj)
            .await?;
    }
    default_and_validate(r, &mut obj, None)?;
    let mut allocated = None;
    if r.resource.kind == "Service" && r.resource.group.is_empty() && !dry_run {
        allocated = Some(
            api.admission
                .allocate_service(api.store.as_ref(), &mut obj, None)
                .await?,
        );
    }
    if dry_run {
        return Ok(Reply {
            status: StatusCode::CREATED,
            warnings,
            ..Reply::ok(obj)
        });
    }
    let mut attempt = 0;
    let kv = loop {
        match api
            .store
            .create(&key_of(r, &name), to_store(r.resource, &obj))
            .await
        {
            Err(StoreError::AlreadyExists { .. }) if generate.is_some() && attempt < 3 => {
                attempt += 1;
                let fresh = registry::generate_name(generate.as_deref().unwrap_or_default());
                meta::set(&mut obj, "name", Some(fresh.into()));
            }
            Err(e) => {
                if let Some(taken) = allocated.take() {
                    api.admission.release(api.store.as_ref(), taken).await;
                }
                return Err(store_err(r, meta::name(&obj).unwrap_or_default())(e));
            }
            Ok(kv) => break kv,
        }
    };
    Ok(Reply {
        status: StatusCode::CREATED,
        warnings,
        ..Reply::ok(from_store(r.resource, &kv)?)
    })
}

/// What a write does to the current object to get the new one.
enum Change<'a> {
    /// Replace with the request body (PUT).
    Replace(&'a Value),
    /// Apply a patch of this type.
    Patch(PatchType, &'a Value),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatchType {
    Json,
    Merge,
    Strategic,
}

async fn update(api: &Api, r: &ResourceRequest, req: &ApiRequest) -> Result<Reply, ApiError> {
    let body = parse_body(req)?;
    guarded_update(api, r, Change::Replace(&body)).await
}

async fn patch_object(api: &Api, r: &ResourceRequest, req: &ApiRequest) -> Result<Reply, ApiError> {
    let content_type = req.header(header::CONTENT_TYPE).unwrap_or("");
    let patch_type = match content_type.split(';').next().unwrap_or("").trim() {
        "application/json-patch+json" => PatchType::Json,
        "application/merge-patch+json" => PatchType::Merge,
        "application/strategic-merge-patch+json" => PatchType::Strategic,
        "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
            return Err(ApiError::unsupported_media_type(
                "server-side apply is not supported by this server yet; use client-side apply (kubectl apply without --server-side)",
            ));
        }
        other => {
            return Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format ({other}) - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json"
            )));
        }
    };
    if req.body.is_empty() {
        return Err(ApiError::bad_request("the patch is empty"));
    }
    let patch_doc: Value = serde_json::from_slice(&req.body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    guarded_update(api, r, Change::Patch(patch_type, &patch_doc)).await
}

fn apply_patch(
    r: &ResourceRequest,
    base: &Value,
    kind: PatchType,
    doc: &Value,
) -> Result<Value, ApiError> {
    let (group, kind_name) = table_kind(r);
    let result = match kind {
        PatchType::Json => patch::json_patch(base, doc),
        PatchType::Merge => patch::merge_patch(base, doc),
        PatchType::Strategic => patch::strategic_merge_patch(group, kind_name, base, doc),
    };
    result.map_err(|e| {
        let mut err = ApiError::invalid(
            group,
            kind_name,
            r.name.as_deref().unwrap_or_default(),
            vec![],
        );
        err.message = e.to_string();
        err.code = match kind {
            PatchType::Json => 422,
            _ => 400,
        };
        if err.code == 400 {
            err.reason = "BadRequest";
        }
        err
    })
}

/// The update loop shared by PUT and PATCH of objects and their subresources.
async fn guarded_update(
    api: &Api,
    r: &ResourceRequest,
    change: Change<'_>,
) -> Result<Reply, ApiError> {
    let dry_run = r.query.dry_run()?;
    let name = r.name.clone().unwrap_or_default();
    for _ in 0..MAX_RETRIES {
        let mut warnings = Vec::new();
        let (current, kv) = get_current(api, r).await?;
        let scale = r.subresource == Some(Subresource::Scale);
        // The document the change applies to: the object, or its Scale view.
        let base = if scale {
            registry::scale_of(&current)
        } else {
            current.clone()
        };
        let changed = match &change {
            Change::Replace(body) => (*body).clone(),
            Change::Patch(kind, doc) => apply_patch(r, &base, *kind, doc)?,
        };
        // A replacement's resourceVersion is a precondition. A patch applies to the current
        // object, so the merged result carries its resourceVersion: only a patch that set a
        // different one asks for a precondition (and if it set the current one, a concurrent
        // write shows up as a difference on the retry).
        let precondition = match &change {
            Change::Replace(_) => meta::resource_version(&changed).map(String::from),
            Change::Patch(..) => meta::resource_version(&changed)
                .filter(|rv| Some(*rv) != meta::resource_version(&base))
                .map(String::from),
        };
        if let Some(rv) = &precondition
            && *rv != kv.mod_revision.to_string()
        {
            return Err(ApiError::conflict(
                &r.group_resource(),
                &name,
                ApiError::STALE_OBJECT,
            ));
        }
        let mut new = if scale {
            if changed["kind"] != "Scale" && !changed["kind"].is_null() {
                return Err(ApiError::bad_request("expected a Scale object"));
            }
            let mut obj = current.clone();
            registry::apply_scale(&mut obj, &changed, &name)?;
            obj
        } else {
            let checked = check_schema(r.resource, changed, &r.query, &mut warnings)?;
            if meta::name(&checked) != Some(name.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({}) does not match the name on the URL ({name})",
                    meta::name(&checked).unwrap_or_default()
                )));
            }
            checked
        };
        place_in_namespace(r, &mut new)?;
        meta::set(
            &mut new,
            "resourceVersion",
            Some(kv.mod_revision.to_string().into()),
        );
        let sub = if scale { None } else { r.subresource };
        registry::prepare_update(r.resource, sub, &mut new, &current);
        default_and_validate(r, &mut new, Some(&current))?;
        // An object marked for deletion goes once its last finalizer is removed.
        if meta::is_being_deleted(&new)
            && meta::finalizers(&new).is_empty()
            && !is_graceful_pod_pending(&new)
        {
            if dry_run {
                return Ok(Reply {
                    warnings,
                    ..Reply::ok(new)
                });
            }
            match api.store.delete(&kv.key, Some(kv.mod_revision)).await {
                Ok(_) => {
                    after_delete(api, r, &current).await;
                    return Ok(Reply {
                        warnings,
                        ..Reply::ok(new)
                    });
                }
                Err(StoreError::Conflict { .. }) if precondition.is_none() => continue,
                Err(e) => return Err(store_err(r, &name)(e)),
            }
        }
        if registry::unchanged(&new, &current) {
            let body = if scale {
                registry::scale_of(&current)
            } else {
                current
            };
            return Ok(Reply {
                warnings,
                ..Reply::ok(body)
            });
        }
        if r.resource.kind == "PriorityClass" {
            api.admission
                .check_default_priority_class(api.store.as_ref(), &new)
                .await?;
        }
        let mut allocated = None;
        if r.resource.kind == "Service" && r.resource.group.is_empty() && sub.is_none() && !dry_run
        {
            allocated = Some(
                api.admission
                    .allocate_service(api.store.as_ref(), &mut new, Some(&current))
                    .await?,
            );
        }
        if dry_run {
            return Ok(Reply {
                warnings,
                ..Reply::ok(new)
            });
        }
        match api
            .store
            .update(&kv.key, kv.mod_revision, to_store(r.resource, &new))
            .await
        {
            Ok(stored) => {
                if r.resource.kind == "Service" && allocated.is_some() {
                    api.admission
                        .release_service(api.store.as_ref(), &current, Some(&new))
                        .await;
                }
                let obj = from_store(r.resource, &stored)?;
                let body = if scale { registry::scale_of(&obj) } else { obj };
                return Ok(Reply {
                    warnings,
                    ..Reply::ok(body)
                });
            }
            Err(e) => {
                if let Some(taken) = allocated {
                    api.admission.release(api.store.as_ref(), taken).await;
                }
                match e {
                    StoreError::Conflict { .. } if precondition.is_none() => continue,
                    e => return Err(store_err(r, &name)(e)),
                }
            }
        }
    }
    Err(ApiError::conflict(
        &r.group_resource(),
        &name,
        "too many concurrent updates; please try again",
    ))
}

/// A pod on a node whose deletion is graceful stays until its node confirms (deletes it with
/// a zero grace period).
fn is_graceful_pod_pending(obj: &Value) -> bool {
    obj["kind"] == "Pod"
        && obj["metadata"]["deletionGracePeriodSeconds"]
            .as_i64()
            .unwrap_or(0)
            > 0
}

async fn binding(api: &Api, r: &ResourceRequest, req: &ApiRequest) -> Result<Reply, ApiError> {
    let binding = parse_body(req)?;
    let name = r.name.clone().unwrap_or_default();
    if let Some(body_name) = meta::name(&binding)
        && body_name != name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    for _ in 0..MAX_RETRIES {
        let (mut pod, kv) = get_current(api, r).await?;
        registry::bind_pod(&mut pod, &binding, &name)?;
        if r.query.dry_run()? {
            return Ok(Reply {
                status: StatusCode::CREATED,
                ..Reply::ok(status::success("", "pods", &name, None))
            });
        }
        match api
            .store
            .update(&kv.key, kv.mod_revision, to_store(r.resource, &pod))
            .await
        {
            Ok(_) => {
                let mut ok = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
                ok["details"] = json!({"name": name, "kind": "pods"});
                return Ok(Reply {
                    status: StatusCode::CREATED,
                    ..Reply::ok(ok)
                });
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(store_err(r, &name)(e)),
        }
    }
    Err(ApiError::conflict(
        "pods/binding",
        &name,
        "too many concurrent updates",
    ))
}

async fn eviction(api: &Api, r: &ResourceRequest, req: &ApiRequest) -> Result<Reply, ApiError> {
    let eviction = parse_body(req)?;
    let options = eviction
        .get("deleteOptions")
        .cloned()
        .unwrap_or(Value::Null);
    let name = r.name.clone().unwrap_or_default();
    delete_one(
        api,
        r,
        &name,
        &DeleteOptions::from_body(&options, &r.query)?,
    )
    .await?;
    let ok = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
    Ok(Reply {
        status: StatusCode::CREATED,
        ..Reply::ok(ok)
    })
}

/// `serviceaccounts/{name}/token`: a TokenRequest answered with a signed token.
async fn token_request(
    api: &Api,
    r: &ResourceRequest,
    req: &ApiRequest,
) -> Result<Reply, ApiError> {
    let service = api
        .service_account_tokens
        .as_deref()
        .ok_or_else(ApiError::no_route)?;
    let body = parse_body(req)?;
    let namespace = r.namespace.as_deref().unwrap_or_default();
    let name = r.name.as_deref().unwrap_or_default();
    let answer = crate::serviceaccount::token_request(
        service,
        &crate::serviceaccount::StoreObjects(api.store.as_ref()),
        namespace,
        name,
        &body,
        jiff::Timestamp::now().as_second(),
    )
    .await?;
    Ok(Reply {
        status: StatusCode::CREATED,
        ..Reply::ok(answer)
    })
}

/// metav1.DeleteOptions from the body and the query.
#[derive(Debug, Clone, Default)]
struct DeleteOptions {
    grace_period: Option<i64>,
    propagation: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    dry_run: bool,
}

impl DeleteOptions {
    fn from_body(body: &Value, q: &Query) -> Result<Self, ApiError> {
        let mut o = DeleteOptions {
            grace_period: body["gracePeriodSeconds"].as_i64(),
            propagation: body["propagationPolicy"].as_str().map(String::from),
            uid: body["preconditions"]["uid"].as_str().map(String::from),
            resource_version: body["preconditions"]["resourceVersion"]
                .as_str()
                .map(String::from),
            dry_run: body["dryRun"]
                .as_array()
                .is_some_and(|a| a.iter().any(|v| v == "All"))
                || q.dry_run()?,
        };
        if body["orphanDependents"].as_bool() == Some(true) || q.flag("orphanDependents") {
            o.propagation = Some("Orphan".into());
        }
        if let Some(p) = q.non_empty("propagationPolicy") {
            o.propagation = Some(p.into());
        }
        if let Some(g) = q.int("gracePeriodSeconds")? {
            o.grace_period = Some(g);
        }
        if let Some(p) = &o.propagation
            && !matches!(p.as_str(), "Orphan" | "Background" | "Foreground")
        {
            return Err(ApiError::invalid(
                "meta.k8s.io",
                "DeleteOptions",
                "",
                vec![FieldCause::not_supported(
                    "propagationPolicy",
                    p.as_str(),
                    &["Foreground", "Background", "Orphan"],
                )],
            ));
        }
        if o.grace_period.is_some_and(|g| g < 0) {
            o.grace_period = Some(0);
        }
        Ok(o)
    }
}

fn delete_options(req: &ApiRequest, q: &Query) -> Result<DeleteOptions, ApiError> {
    let body = if req.body.is_empty() {
        Value::Null
    } else {
        parse_body(req)?
    };
    DeleteOptions::from_body(&body, q)
}

async fn delete(api: &Api, r: &ResourceRequest, req: &ApiRequest) -> Result<Reply, ApiError> {
    let options = delete_options(req, &r.query)?;
    let name = r.name.clone().unwrap_or_default();
    delete_one(api, r, &name, &options).await
}

/// Deletes one object with default options, for the server's own loops.
pub(crate) async fn delete_internal(api: &Api, r: &ResourceRequest) -> Result<Reply, ApiError> {
    let name = r.name.clone().unwrap_or_default();
    delete_one(api, r, &name, &DeleteOptions::default()).await
}

/// Deletes one object: at once, or by marking it (finalizers, graceful pods, namespaces).
async fn delete_one(
    api: &Api,
    r: &ResourceRequest,
    name: &str,
    options: &DeleteOptions,
) -> Result<Reply, ApiError> {
    let key = key_of(r, name);
    for _ in 0..MAX_RETRIES {
        let kv = api
            .store
            .get(&key)
            .await
            .map_err(store_err(r, name))?
            .ok_or_else(|| ApiError::not_found(&r.group_resource(), name))?;
        let current = from_store(r.resource, &kv)?;
        if let Some(uid) = &options.uid
            && meta::uid(&current) != Some(uid.as_str())
        {
            return Err(ApiError::conflict(
                &r.group_resource(),
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta::uid(&current).unwrap_or("")
                ),
            ));
        }
        if let Some(rv) = &options.resource_version
            && *rv != kv.mod_revision.to_string()
        {
            return Err(ApiError::conflict(
                &r.group_resource(),
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    kv.mod_revision
                ),
            ));
        }
        let mut marked = current.clone();
        let mut finalizers = meta::finalizers(&current);
        match options.propagation.as_deref() {
            Some("Foreground") if !finalizers.iter().any(|f| f == "foregroundDeletion") => {
                finalizers.push("foregroundDeletion".into())
            }
            Some("Orphan") if !finalizers.iter().any(|f| f == "orphan") => {
                finalizers.push("orphan".into())
            }
            _ => {}
        }
        let is_namespace = r.resource.plural == "namespaces" && r.resource.group.is_empty();
        let grace = pod_grace_period(r.resource, &current, options);
        let already = meta::is_being_deleted(&current);
        let immediate = finalizers.is_empty() && grace.is_none() && !is_namespace;
        if immediate {
            if options.dry_run {
                return Ok(deleted_reply(r, &current));
            }
            match api.store.delete(&key, Some(kv.mod_revision)).await {
                Ok(_) => {
                    after_delete(api, r, &current).await;
                    return Ok(deleted_reply(r, &current));
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::NotFound { .. }) => {
                    return Err(ApiError::not_found(&r.group_resource(), name));
                }
                Err(e) => return Err(store_err(r, name)(e)),
            }
        }
        // Mark for deletion.
        let now = jiff::Timestamp::now();
        match grace {
            Some(g) => {
                let shorter = current["metadata"]["deletionGracePeriodSeconds"]
                    .as_i64()
                    .is_none_or(|old| g < old);
                if !already || shorter {
                    let at = now
                        .checked_add(jiff::SignedDuration::from_secs(g))
                        .unwrap_or(now);
                    meta::set(
                        &mut marked,
                        "deletionTimestamp",
                        Some(at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string().into()),
                    );
                    meta::set(&mut marked, "deletionGracePeriodSeconds", Some(g.into()));
                }
            }
            None if !already => {
                meta::set(
                    &mut marked,
                    "deletionTimestamp",
                    Some(registry::now_rfc3339().into()),
                );
                meta::set(&mut marked, "deletionGracePeriodSeconds", Some(0.into()));
            }
            None => {}
        }
        if !finalizers.is_empty() {
            meta::set(&mut marked, "finalizers", Some(json!(finalizers)));
        }
        if is_namespace {
            marked["status"]["phase"] = "Terminating".into();
        }
        if registry::unchanged(&marked, &current) || options.dry_run {
            return Ok(Reply::ok(marked));
        }
        match api
            .store
            .update(&key, kv.mod_revision, to_store(r.resource, &marked))
            .await
        {
            Ok(stored) => {
                if is_namespace {
                    crate::namespaces::finalize_soon(api, name);
                }
                return Ok(Reply::ok(from_store(r.resource, &stored)?));
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(store_err(r, name)(e)),
        }
    }
    Err(ApiError::conflict(
        &r.group_resource(),
        name,
        "too many concurrent updates; please try again",
    ))
}

/// The grace period of a pod delete that must wait for its node, or `None` to delete now.
fn pod_grace_period(r: &ResourceInfo, pod: &Value, options: &DeleteOptions) -> Option<i64> {
    if r.kind != "Pod" || !r.group.is_empty() {
        return None;
    }
    let on_node = pod["spec"]["nodeName"]
        .as_str()
        .is_some_and(|n| !n.is_empty());
    let terminal = matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    );
    if !on_node || terminal {
        return None;
    }
    let grace = options
        .grace_period
        .or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(30);
    (grace > 0).then_some(grace)
}

/// Upstream answers deletes of pods and services with the object and of other kinds with a
/// Status.
fn deleted_reply(r: &ResourceRequest, obj: &Value) -> Reply {
    if r.resource.group.is_empty() && matches!(r.resource.kind, "Pod" | "Service") {
        Reply::ok(obj.clone())
    } else {
        Reply::ok(status::success(
            r.resource.group,
            r.resource.plural,
            meta::name(obj).unwrap_or(""),
            meta::uid(obj),
        ))
    }
}

/// Work after an object left the store.
async fn after_delete(api: &Api, r: &ResourceRequest, obj: &Value) {
    if r.resource.kind == "Service" && r.resource.group.is_empty() {
        api.admission
            .release_service(api.store.as_ref(), obj, None)
            .await;
    }
}

async fn delete_collection(
    api: &Api,
    r: &ResourceRequest,
    req: &ApiRequest,
) -> Result<Reply, ApiError> {
    let options = delete_options(req, &r.query)?;
    let selection = Selection::from_query(r)?;
    let listed = crate::storage::list_all(api.store.as_ref(), &collection_prefix(r))
        .await
        .map_err(store_err(r, ""))?;
    let mut deleted = Vec::new();
    for kv in &listed.items {
        let obj = from_store(r.resource, kv)?;
        if !selection.matches(r.resource, &obj) {
            continue;
        }
        let name = meta::name(&obj).unwrap_or_default().to_string();
        let mut scoped = r.clone();
        scoped.namespace = meta::namespace(&obj).map(String::from);
        match delete_one(api, &scoped, &name, &options).await {
            Ok(_) => deleted.push(obj),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Reply::ok(list_body(
        r.resource,
        deleted,
        &listed.revision.to_string(),
        None,
    )))
}

/// Label and field selectors of a list or watch.
pub(crate) struct Selection {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Selection {
    pub(crate) fn from_query(r: &ResourceRequest) -> Result<Self, ApiError> {
        let labels = LabelSelector::parse(r.query.get("labelSelector").unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
        let fields = FieldSelector::parse(r.query.get("fieldSelector").unwrap_or(""))?;
        fields.check_supported(r.resource.group, r.resource.kind)?;
        Ok(Selection { labels, fields })
    }

    pub(crate) fn is_everything(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    pub(crate) fn matches(&self, r: &ResourceInfo, obj: &Value) -> bool {
        self.labels.matches(&meta::labels(obj)) && self.fields.matches(r.group, r.kind, obj)
    }
}

pub(crate) fn collection_prefix(r: &ResourceRequest) -> String {
    match (&r.namespace, r.resource.namespaced) {
        (Some(ns), true) => format!("{}{ns}/", r.resource.storage_prefix()),
        _ => r.resource.storage_prefix(),
    }
}

pub(crate) fn list_body(
    r: &ResourceInfo,
    items: Vec<Value>,
    rv: &str,
    cont: Option<String>,
) -> Value {
    let mut metadata = Map::new();
    metadata.insert("resourceVersion".into(), rv.into());
    if let Some(c) = cont {
        metadata.insert("continue".into(), c.into());
    }
    json!({"kind": format!("{}List", r.kind), "apiVersion": r.api_version(), "metadata": metadata, "items": items})
}

/// A continue token: the revision of the first page and the last key returned.
fn encode_continue(revision: i64, key: &str, prefix: &str) -> String {
    let token = json!({"v": "meta.k8s.io/v1", "rv": revision, "start": key.strip_prefix(prefix).unwrap_or(key)});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.to_string())
}

fn decode_continue(token: &str, prefix: &str) -> Result<(i64, String), ApiError> {
    let bad = || ApiError::bad_request("continue key is not valid: the token could not be decoded");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rv = v["rv"].as_i64().filter(|rv| *rv > 0).ok_or_else(bad)?;
    let start = v["start"].as_str().ok_or_else(bad)?;
    if start.contains("..") || start.starts_with('/') {
        return Err(bad());
    }
    Ok((rv, format!("{prefix}{start}")))
}

async fn list(api: &Api, r: &ResourceRequest) -> Result<Reply, ApiError> {
    let selection = Selection::from_query(r)?;
    let prefix = collection_prefix(r);
    let limit = r.query.int("limit")?.filter(|l| *l > 0).map(|l| l as usize);
    let rv_param = r.query.non_empty("resourceVersion");
    let rv_match = r.query.non_empty("resourceVersionMatch");
    let (mut revision, mut start_after) = (None, None);
    if let Some(token) = r.query.non_empty("continue") {
        if rv_param.is_some() {
            return Err(ApiError::bad_request(
                "specifying resource version is not allowed when using continue",
            ));
        }
        let (rv, key) = decode_continue(token, &prefix)?;
        revision = Some(rv);
        start_after = Some(key);
    } else if let Some(rv) = rv_param {
        let n: i64 = rv
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))?;
        match rv_match {
            Some("Exact") => revision = Some(n),
            Some("NotOlderThan") | None => {
                let current = api
                    .store
                    .current_revision()
                    .await
                    .map_err(store_err(r, ""))?;
                if n > current {
                    let mut e = ApiError::timeout(format!(
                        "Too large resource version: {n}, current: {current}"
                    ));
                    e.retry_after = Some(1);
                    return Err(e);
                }
            }
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "unsupported resourceVersionMatch {other:?}: supported values: \"Exact\", \"NotOlderThan\""
                )));
            }
        }
    } else if rv_match.is_some() {
        return Err(ApiError::bad_request(
            "resourceVersionMatch is forbidden unless resourceVersion is provided",
        ));
    }
    let mut items = Vec::new();
    let mut cont = None;
    let mut read_at = revision;
    loop {
        let want = limit.map(|l| l - items.len());
        // Selectors filter after the read, so read more than the limit asks for.
        let chunk = Some(match want {
            Some(w) if selection.is_everything() => w.min(crate::storage::PAGE),
            Some(w) => w.max(crate::storage::PAGE),
            None => crate::storage::PAGE,
        });
        let page = api
            .store
            .list(&ListOptions {
                prefix: prefix.clone(),
                start_after: start_after.clone(),
                limit: chunk,
                revision: read_at,
            })
            .await
            .map_err(store_err(r, ""))?;
        read_at = Some(page.revision);
        let mut last_key = None;
        for kv in &page.items {
            last_key = Some(kv.key.clone());
            let obj = from_store(r.resource, kv)?;
            if selection.matches(r.resource, &obj) {
                items.push(obj);
                if limit.is_some_and(|l| items.len() >= l) {
                    break;
                }
            }
        }
        let consumed_all = last_key.as_ref() == page.items.last().map(|kv| &kv.key);
        let more = page.more || !consumed_all;
        if limit.is_some_and(|l| items.len() >= l) {
            if more {
                cont = last_key.map(|k| encode_continue(page.revision, &k, &prefix));
            }
            break;
        }
        if !page.more {
            break;
        }
        // Past deleted keys too, so a page of nothing but deletions still moves on.
        start_after = Some(
            crate::storage::next_start(
                &start_after,
                page.last_key.clone().or(last_key),
                api.store.backend(),
            )
            .map_err(store_err(r, ""))?,
        );
    }
    let rv = read_at.unwrap_or_default().to_string();
    Ok(Reply::ok(list_body(r.resource, items, &rv, cont)))
}

/// The decoders, for the property tests in `api::fuzz`.
#[cfg(test)]
pub(crate) mod fuzz_entry_points {
    use super::*;

    pub(crate) fn decode_continue(token: &str, prefix: &str) -> Result<(i64, String), ApiError> {
        super::decode_continue(token, prefix)
    }

    pub(crate) fn check_schema(
        r: &ResourceInfo,
        input: Value,
        q: &Query,
    ) -> Result<Value, ApiError> {
        super::check_schema(r, input, q, &mut Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_found_at_their_paths_and_nulls_are_ignored() {
        let input = json!({"metadata": {"name": "a", "creationTimestamp": null}, "spec": {"containers": [{"name": "c", "bogus": 1}], "extra": true}});
        let normalized =
            json!({"metadata": {"name": "a"}, "spec": {"containers": [{"name": "c"}]}});
        let mut out = Vec::new();
        unknown_fields(&input, &normalized, "", &mut out);
        assert_eq!(out, ["spec.containers[0].bogus", "spec.extra"]);
    }

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let token = encode_continue(42, "/registry/pods/ns/b", "/registry/pods/");
        assert_eq!(
            decode_continue(&token, "/registry/pods/").unwrap(),
            (42, "/registry/pods/ns/b".to_string())
        );
        assert_eq!(
            decode_continue("not-a-token", "/registry/pods/")
                .unwrap_err()
                .code,
            400
        );
        let sneaky = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(r#"{"rv":1,"start":"../secrets/x"}"#);
        assert_eq!(
            decode_continue(&sneaky, "/registry/pods/")
                .unwrap_err()
                .code,
            400
        );
    }

    #[test]
    fn strict_field_validation_rejects_unknown_fields_and_warn_reports_them() {
        let pods = apimachinery::resources::find("", "v1", "pods").unwrap();
        let body = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i", "imagePullPolice": "x"}]}});
        let strict = Query::parse(Some("fieldValidation=Strict"));
        let err = check_schema(pods, body.clone(), &strict, &mut Vec::new()).unwrap_err();
        assert_eq!(
            err.message,
            "Pod in version \"v1\" cannot be handled as a Pod: strict decoding error: unknown field \"spec.containers[0].imagePullPolice\""
        );
        let mut warnings = Vec::new();
        let obj = check_schema(pods, body, &Query::default(), &mut warnings).unwrap();
        assert_eq!(
            warnings,
            ["unknown field \"spec.containers[0].imagePullPolice\""]
        );
        assert!(
            obj["spec"]["containers"][0]
                .get("imagePullPolice")
                .is_none()
        );
    }

    #[test]
    fn kind_and_type_mismatches_are_bad_requests() {
        let pods = apimachinery::resources::find("", "v1", "pods").unwrap();
        let wrong_kind = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "p"}});
        assert_eq!(
            check_schema(pods, wrong_kind, &Query::default(), &mut Vec::new())
                .unwrap_err()
                .code,
            400
        );
        let wrong_type = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": "nope"}});
        let err = check_schema(pods, wrong_type, &Query::default(), &mut Vec::new()).unwrap_err();
        assert!(
            err.message
                .starts_with("Pod in version \"v1\" cannot be handled as a Pod"),
            "{}",
            err.message
        );
        let no_kind = json!({"metadata": {"name": "p"}});
        assert!(
            check_schema(pods, no_kind, &Query::default(), &mut Vec::new())
                .unwrap_err()
                .message
                .starts_with("Object 'Kind' is missing")
        );
    }
}
