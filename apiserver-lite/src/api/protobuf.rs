//! Decoding of request bodies in the Kubernetes protobuf encoding
//! (`application/vnd.kubernetes.protobuf`), which kubectl 1.32+ typed commands (`create
//! configmap`, `create namespace`, deletes with options, ...) and controllers built on
//! client-go send. Responses are always JSON, which those clients accept.
//!
//! The wire format is the `k8s\0` magic and a `runtime.Unknown` envelope holding the type and
//! the object's message. Field numbers and types come from the sources of the k8s-pb crate
//! (prost bindings generated from the upstream .proto files), read once at first use; JSON
//! field names come from the k8s-openapi schema of the same type, matched by name. Special
//! messages (Time, Quantity, IntOrString, RawExtension, ...) become their JSON forms.

use std::collections::HashMap;
use std::sync::OnceLock;

use apimachinery::status::ApiError;
use base64::Engine;
use prost::encoding::{WireType, decode_key, decode_varint};
use serde_json::{Map, Value};

/// A scalar protobuf type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scalar {
    String,
    Bytes,
    Bool,
    Int,
    Double,
    Float,
}

/// What a field holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Scalar(Scalar),
    Message(String),
    Map(Box<Kind>),
}

#[derive(Debug, Clone)]
struct Field {
    tag: u32,
    rust_name: String,
    kind: Kind,
    repeated: bool,
}

/// Modules of k8s-pb read, by their path under its `src`.
macro_rules! sources {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_str!(concat!(env!("K8S_PB_SRC"), "/", $path, "/mod.rs")))),*]
    };
}

const SOURCES: &[(&str, &str)] = sources!(
    "api/core/v1",
    "api/apps/v1",
    "api/batch/v1",
    "api/coordination/v1",
    "api/discovery/v1",
    "api/events/v1",
    "api/certificates/v1",
    "api/rbac/v1",
    "api/storage/v1",
    "api/scheduling/v1",
    "api/policy/v1",
    "api/autoscaling/v1",
    "api/authentication/v1",
    "apimachinery/pkg/apis/meta/v1",
    "apimachinery/pkg/api/resource",
    "apimachinery/pkg/util/intstr",
    "apimachinery/pkg/runtime",
    "apiextensions_apiserver/pkg/apis/apiextensions/v1",
);

fn catalog() -> &'static HashMap<String, Vec<Field>> {
    static CATALOG: OnceLock<HashMap<String, Vec<Field>>> = OnceLock::new();
    CATALOG.get_or_init(|| {
        let mut out = HashMap::new();
        for (path, src) in SOURCES {
            parse_module(&path.replace('/', "."), src, &mut out);
        }
        out
    })
}

/// Reads the prost structs of one generated module.
fn parse_module(module: &str, src: &str, out: &mut HashMap<String, Vec<Field>>) {
    let mut current: Option<(String, Vec<Field>)> = None;
    let mut attr: Option<String> = None;
    let mut pending: Option<(String, String)> = None; // (attr, declaration so far)
    for line in src.lines() {
        if let Some(name) = line
            .strip_prefix("pub struct ")
            .and_then(|l| l.strip_suffix(" {"))
        {
            current = Some((name.to_string(), Vec::new()));
            continue;
        }
        if line == "}" {
            if let Some((name, fields)) = current.take() {
                out.insert(format!("{module}.{name}"), fields);
            }
            continue;
        }
        let Some((_, fields)) = current.as_mut() else {
            continue;
        };
        let trimmed = line.trim();
        if let Some((a, mut decl)) = pending.take() {
            decl.push_str(trimmed);
            if declaration_complete(&decl) {
                if let Some(f) = parse_field(module, &a, &decl) {
                    fields.push(f);
                }
            } else {
                pending = Some((a, decl));
            }
            continue;
        }
        if trimmed.starts_with("#[prost(") {
            attr = Some(trimmed.to_string());
            continue;
        }
        if let (Some(a), true) = (&attr, trimmed.starts_with("pub ")) {
            let a = a.clone();
            attr = None;
            if declaration_complete(trimmed) {
                if let Some(f) = parse_field(module, &a, trimmed) {
                    fields.push(f);
                }
            } else {
                pending = Some((a, trimmed.to_string()));
            }
        }
    }
}

/// A field declaration ends with a comma outside any angle brackets.
fn declaration_complete(decl: &str) -> bool {
    decl.ends_with(',') && decl.matches('<').count() == decl.matches('>').count()
}

fn scalar(name: &str) -> Option<Scalar> {
    Some(match name {
        "string" => Scalar::String,
        "bytes" => Scalar::Bytes,
        "bool" => Scalar::Bool,
        "int32" | "int64" | "uint32" | "uint64" | "sint32" | "sint64" | "enumeration" => {
            Scalar::Int
        }
        "double" => Scalar::Double,
        "float" => Scalar::Float,
        _ => return None,
    })
}

/// Resolves a Rust type path such as `super::super::apimachinery::pkg::apis::meta::v1::Time`
/// relative to `module` into a full message name.
fn resolve(module: &str, rust_path: &str) -> String {
    let mut base: Vec<&str> = module.split('.').collect();
    let mut rest = rust_path;
    while let Some(r) = rest.strip_prefix("super::") {
        base.pop();
        rest = r;
    }
    let mut parts: Vec<String> = base.iter().map(|s| s.to_string()).collect();
    parts.extend(rest.split("::").map(String::from));
    parts.join(".")
}

/// The innermost type of a declaration's Rust type, without Option/Vec wrappers; for maps the
/// value type.
fn inner_type(ty: &str) -> String {
    let mut t = ty.trim().trim_end_matches(',').to_string();
    for wrapper in [
        "::core::option::Option<",
        "::prost::alloc::vec::Vec<",
        "::prost::alloc::boxed::Box<",
    ] {
        if let Some(inner) = t.strip_prefix(wrapper).and_then(|x| x.strip_suffix('>')) {
            t = inner.to_string();
        }
    }
    if let Some(inner) = t
        .strip_prefix("::prost::alloc::collections::BTreeMap<")
        .and_then(|x| x.strip_suffix('>'))
        && let Some((_, value)) = inner.split_once(',')
    {
        t = value.trim().trim_end_matches(',').to_string();
    }
    t
}

fn parse_field(module: &str, attr: &str, decl: &str) -> Option<Field> {
    let tag: u32 = attr
        .split("tag = \"")
        .nth(1)?
        .split('"')
        .next()?
        .parse()
        .ok()?;
    let decl = decl.strip_prefix("pub ")?;
    let (name, ty) = decl.split_once(':')?;
    let rust_name = name.trim().trim_start_matches("r#").to_string();
    let body = attr.trim_start_matches("#[prost(").trim_end_matches(")]");
    let repeated = body.contains("repeated");
    let first = body.split(',').next()?.trim();
    let kind = if let Some(map) = body.strip_prefix("btree_map = \"") {
        let value = map.split('"').next()?.split(',').nth(1)?.trim();
        let value_kind = match scalar(value) {
            Some(s) => Kind::Scalar(s),
            None => Kind::Message(resolve(module, &inner_type(ty))),
        };
        Kind::Map(Box::new(value_kind))
    } else if first == "message" {
        Kind::Message(resolve(module, &inner_type(ty)))
    } else if first.starts_with("bytes") {
        Kind::Scalar(Scalar::Bytes)
    } else if first.starts_with("enumeration") {
        Kind::Scalar(Scalar::Int)
    } else {
        Kind::Scalar(scalar(first)?)
    };
    Some(Field {
        tag,
        rust_name,
        kind,
        repeated,
    })
}

fn bad(why: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("error decoding protobuf body: {why}"))
}

/// The JSON property names of a message, keyed by their name with underscores removed and
/// lower-cased, which is how the prost field names are matched to them.
fn json_names(message: &str) -> HashMap<String, String> {
    let definition = format!(
        "io.k8s.{}",
        message.replace("apiextensions_apiserver", "apiextensions-apiserver")
    );
    apimachinery::openapi::definition(&definition)
        .and_then(|s| s["properties"].as_object().cloned())
        .map(|props| {
            props
                .keys()
                .map(|k| (k.to_lowercase(), k.clone()))
                .collect()
        })
        .unwrap_or_default()
}

fn json_name(names: &HashMap<String, String>, rust: &str) -> String {
    let key = rust.replace('_', "").to_lowercase();
    names.get(&key).cloned().unwrap_or_else(|| {
        // Not in the schema: lowerCamelCase of the Rust name.
        let mut out = String::new();
        let mut upper = false;
        for c in rust.chars() {
            if c == '_' {
                upper = true;
            } else if upper {
                out.extend(c.to_uppercase());
                upper = false;
            } else {
                out.push(c);
            }
        }
        out
    })
}

fn read_len<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], ApiError> {
    let len = decode_varint(buf).map_err(bad)? as usize;
    if len > buf.len() {
        return Err(bad("truncated message"));
    }
    let (head, tail) = buf.split_at(len);
    *buf = tail;
    Ok(head)
}

fn skip(buf: &mut &[u8], wire: WireType) -> Result<(), ApiError> {
    match wire {
        WireType::Varint => decode_varint(buf).map(|_| ()).map_err(bad),
        WireType::SixtyFourBit if buf.len() >= 8 => {
            *buf = &buf[8..];
            Ok(())
        }
        WireType::ThirtyTwoBit if buf.len() >= 4 => {
            *buf = &buf[4..];
            Ok(())
        }
        WireType::LengthDelimited => read_len(buf).map(|_| ()),
        _ => Err(bad("unsupported or truncated field")),
    }
}

fn scalar_value(buf: &mut &[u8], wire: WireType, s: Scalar) -> Result<Value, ApiError> {
    Ok(match (s, wire) {
        (Scalar::String, WireType::LengthDelimited) => Value::String(
            String::from_utf8(read_len(buf)?.to_vec()).map_err(|_| bad("string is not UTF-8"))?,
        ),
        (Scalar::Bytes, WireType::LengthDelimited) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(read_len(buf)?))
        }
        (Scalar::Bool, WireType::Varint) => Value::Bool(decode_varint(buf).map_err(bad)? != 0),
        (Scalar::Int, WireType::Varint) => Value::from(decode_varint(buf).map_err(bad)? as i64),
        (Scalar::Double, WireType::SixtyFourBit) if buf.len() >= 8 => {
            let v = f64::from_le_bytes(buf[..8].try_into().map_err(bad)?);
            *buf = &buf[8..];
            Value::from(v)
        }
        (Scalar::Float, WireType::ThirtyTwoBit) if buf.len() >= 4 => {
            let v = f32::from_le_bytes(buf[..4].try_into().map_err(bad)?);
            *buf = &buf[4..];
            Value::from(f64::from(v))
        }
        _ => {
            return Err(bad(format!(
                "wire type {wire:?} does not fit a {s:?} field"
            )));
        }
    })
}

/// Decodes one message into its JSON form; `None` for values upstream leaves out (a zero
/// time).
fn message(name: &str, mut buf: &[u8], depth: usize) -> Result<Option<Value>, ApiError> {
    if depth > 64 {
        return Err(bad("nesting too deep"));
    }
    let fields = catalog()
        .get(name)
        .ok_or_else(|| bad(format!("unknown message {name}")))?;
    let names = json_names(name);
    let mut raw: Map<String, Value> = Map::new();
    while !buf.is_empty() {
        let (tag, wire) = decode_key(&mut buf).map_err(bad)?;
        let Some(field) = fields.iter().find(|f| f.tag == tag) else {
            skip(&mut buf, wire)?;
            continue;
        };
        let key = json_name(&names, &field.rust_name);
        let value = match &field.kind {
            Kind::Scalar(s) => Some(scalar_value(&mut buf, wire, *s)?),
            Kind::Message(inner) => message(inner, read_len(&mut buf)?, depth + 1)?,
            Kind::Map(value_kind) => {
                let mut entry = read_len(&mut buf)?;
                let (mut k, mut v) = (String::new(), Value::Null);
                while !entry.is_empty() {
                    let (t, w) = decode_key(&mut entry).map_err(bad)?;
                    match (t, value_kind.as_ref()) {
                        (1, _) => {
                            k = scalar_value(&mut entry, w, Scalar::String)?
                                .as_str()
                                .unwrap_or("")
                                .to_string()
                        }
                        (2, Kind::Scalar(s)) => v = scalar_value(&mut entry, w, *s)?,
                        (2, Kind::Message(m)) => {
                            v = message(m, read_len(&mut entry)?, depth + 1)?.unwrap_or(Value::Null)
                        }
                        _ => skip(&mut entry, w)?,
                    }
                }
                let map = raw.entry(key).or_insert_with(|| Value::Object(Map::new()));
                if let Some(m) = map.as_object_mut() {
                    m.insert(k, v);
                }
                continue;
            }
        };
        let Some(value) = value else { continue };
        if field.repeated {
            if let Some(list) = raw
                .entry(key)
                .or_insert_with(|| Value::Array(Vec::new()))
                .as_array_mut()
            {
                list.push(value);
            }
        } else {
            raw.insert(key, value);
        }
    }
    Ok(special(name, raw))
}

/// The JSON form of messages that are not plain objects; plain objects lose the empty strings
/// Go writes for unset non-pointer fields.
fn special(name: &str, mut raw: Map<String, Value>) -> Option<Value> {
    match name {
        "apimachinery.pkg.apis.meta.v1.Time" | "apimachinery.pkg.apis.meta.v1.MicroTime" => {
            let seconds = raw.get("seconds").and_then(Value::as_i64).unwrap_or(0);
            let nanos = raw.get("nanos").and_then(Value::as_i64).unwrap_or(0);
            if seconds <= 0 {
                return None;
            }
            let ts = jiff::Timestamp::new(seconds, nanos as i32).ok()?;
            Some(Value::String(if name.ends_with("MicroTime") {
                ts.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()
            } else {
                ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
            }))
        }
        "apimachinery.pkg.api.resource.Quantity" => raw.remove("string"),
        "apimachinery.pkg.util.intstr.IntOrString" => match raw.get("type").and_then(Value::as_i64)
        {
            Some(1) => Some(
                raw.remove("strVal")
                    .unwrap_or_else(|| Value::String(String::new())),
            ),
            _ => Some(raw.remove("intVal").unwrap_or_else(|| Value::from(0))),
        },
        "apimachinery.pkg.runtime.RawExtension" | "apimachinery.pkg.apis.meta.v1.FieldsV1" => {
            let b64 = raw.remove("raw")?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.as_str().unwrap_or(""))
                .ok()?;
            serde_json::from_slice(&bytes).ok()
        }
        "apimachinery.pkg.apis.meta.v1.Duration" => {
            let nanos = raw.get("duration").and_then(Value::as_i64).unwrap_or(0);
            Some(Value::String(format!("{}s", nanos / 1_000_000_000)))
        }
        _ => {
            raw.retain(|_, v| !v.as_str().is_some_and(str::is_empty));
            Some(Value::Object(raw))
        }
    }
}

/// The protobuf message of a served kind.
fn message_of(api_version: &str, kind: &str) -> Option<String> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let module = match group {
        "" => "api.core",
        "meta.k8s.io" => "apimachinery.pkg.apis.meta",
        "apiextensions.k8s.io" => "apiextensions_apiserver.pkg.apis.apiextensions",
        g => {
            let short = g.split('.').next().unwrap_or(g);
            return Some(format!("api.{short}.{version}.{kind}"));
        }
    };
    Some(format!("{module}.{version}.{kind}"))
}

/// Decodes a protobuf request body into the JSON object it encodes.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let envelope = body
        .strip_prefix(b"k8s\0")
        .ok_or_else(|| bad("missing the k8s protobuf prefix"))?;
    let mut buf = envelope;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    while !buf.is_empty() {
        let (tag, wire) = decode_key(&mut buf).map_err(bad)?;
        match (tag, wire) {
            (1, WireType::LengthDelimited) => {
                let mut tm = read_len(&mut buf)?;
                while !tm.is_empty() {
                    let (t, w) = decode_key(&mut tm).map_err(bad)?;
                    let v = scalar_value(&mut tm, w, Scalar::String)?;
                    match t {
                        1 => api_version = v.as_str().unwrap_or("").into(),
                        2 => kind = v.as_str().unwrap_or("").into(),
                        _ => {}
                    }
                }
            }
            (2, WireType::LengthDelimited) => raw = read_len(&mut buf)?,
            (_, w) => skip(&mut buf, w)?,
        }
    }
    let name = message_of(&api_version, &kind)
        .ok_or_else(|| bad(format!("no protobuf schema for {api_version} {kind}")))?;
    if !catalog().contains_key(&name) {
        return Err(ApiError::unsupported_media_type(format!(
            "protobuf bodies of {kind} ({api_version}) are not supported; send application/json"
        )));
    }
    let mut obj = message(&name, raw, 0)?.unwrap_or_else(|| Value::Object(Map::new()));
    obj["apiVersion"] = api_version.into();
    obj["kind"] = kind.into();
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        #[derive(Clone, PartialEq, prost::Message)]
        struct TypeMeta {
            #[prost(string, tag = "1")]
            api_version: String,
            #[prost(string, tag = "2")]
            kind: String,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        struct Unknown {
            #[prost(message, optional, tag = "1")]
            type_meta: Option<TypeMeta>,
            #[prost(bytes = "vec", tag = "2")]
            raw: Vec<u8>,
        }
        let mut out = b"k8s\0".to_vec();
        out.extend(
            Unknown {
                type_meta: Some(TypeMeta {
                    api_version: api_version.into(),
                    kind: kind.into(),
                }),
                raw,
            }
            .encode_to_vec(),
        );
        out
    }

    #[test]
    fn the_catalog_knows_the_served_kinds_with_their_field_numbers() {
        let cm = &catalog()["api.core.v1.ConfigMap"];
        assert!(cm.iter().any(|f| f.tag == 1
            && f.kind == Kind::Message("apimachinery.pkg.apis.meta.v1.ObjectMeta".into())));
        assert!(cm.iter().any(|f| f.tag == 2
            && matches!(&f.kind, Kind::Map(v) if **v == Kind::Scalar(Scalar::String))));
        for r in apimachinery::resources::RESOURCES {
            let name = message_of(&r.api_version(), r.kind).unwrap();
            assert!(catalog().contains_key(&name), "{name}");
        }
    }

    #[test]
    fn a_configmap_encoded_by_the_upstream_schema_decodes_to_its_json() {
        use k8s_pb::api::core::v1::ConfigMap;
        use k8s_pb::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
        let cm = ConfigMap {
            metadata: Some(ObjectMeta {
                name: Some("cfg".into()),
                namespace: Some(String::new()),
                labels: [("app".to_string(), "web".to_string())].into(),
                creation_timestamp: Some(Time {
                    seconds: Some(-62135596800),
                    nanos: Some(0),
                }),
                ..Default::default()
            }),
            data: [("a".to_string(), "1".to_string())].into(),
            ..Default::default()
        };
        let obj = decode(&envelope("v1", "ConfigMap", cm.encode_to_vec())).unwrap();
        assert_eq!(
            obj,
            serde_json::json!({"metadata": {"name": "cfg", "labels": {"app": "web"}}, "data": {"a": "1"}, "apiVersion": "v1", "kind": "ConfigMap"})
        );
    }

    #[test]
    fn a_deployment_with_quantities_and_int_or_string_decodes() {
        use k8s_pb::api::apps::v1::{
            Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
        };
        use k8s_pb::api::core::v1::{Container, PodSpec, PodTemplateSpec, ResourceRequirements};
        use k8s_pb::apimachinery::pkg::api::resource::Quantity;
        use k8s_pb::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
        use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
        let d = Deployment {
            metadata: Some(ObjectMeta {
                name: Some("web".into()),
                ..Default::default()
            }),
            spec: Some(DeploymentSpec {
                replicas: Some(3),
                selector: Some(LabelSelector {
                    match_labels: [("app".to_string(), "web".to_string())].into(),
                    ..Default::default()
                }),
                strategy: Some(DeploymentStrategy {
                    r#type: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(IntOrString {
                            r#type: Some(1),
                            int_val: Some(0),
                            str_val: Some("25%".into()),
                        }),
                        max_unavailable: Some(IntOrString {
                            r#type: Some(0),
                            int_val: Some(1),
                            str_val: Some(String::new()),
                        }),
                    }),
                }),
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: [("app".to_string(), "web".to_string())].into(),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: Some("web".into()),
                            image: Some("busybox".into()),
                            resources: Some(ResourceRequirements {
                                limits: [(
                                    "cpu".to_string(),
                                    Quantity {
                                        string: Some("500m".into()),
                                    },
                                )]
                                .into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let obj = decode(&envelope("apps/v1", "Deployment", d.encode_to_vec())).unwrap();
        assert_eq!(obj["spec"]["replicas"], 3);
        assert_eq!(
            obj["spec"]["strategy"]["rollingUpdate"],
            serde_json::json!({"maxSurge": "25%", "maxUnavailable": 1})
        );
        assert_eq!(
            obj["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"],
            "500m"
        );
        assert_eq!(obj["spec"]["selector"]["matchLabels"]["app"], "web");
        // And it is a valid Deployment for the schema.
        let r = apimachinery::resources::find("apps", "v1", "deployments").unwrap();
        r.typed.normalize(obj).unwrap();
    }

    #[test]
    fn garbage_is_a_bad_request_not_a_panic() {
        assert_eq!(decode(b"not protobuf").unwrap_err().code, 400);
        assert_eq!(decode(b"k8s\0\x0a\xff\xff").unwrap_err().code, 400);
        let unknown = envelope("example.com/v1", "Widget", vec![]);
        assert!(decode(&unknown).is_err());
    }
}
