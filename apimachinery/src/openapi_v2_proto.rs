//! The Swagger 2.0 document in the protobuf encoding client-go asks for on `/openapi/v2`
//! (the gnostic `openapi.v2.Document` message). Only the part clients read is encoded: each
//! path's operations with their operation id, query parameters and the
//! `x-kubernetes-group-version-kind` extension. kubectl before 1.29 reads it to learn that the
//! server validates fields itself (`fieldValidation`), and every kubectl falls back to it for
//! kinds the v3 documents do not list.
//!
//! The message structs below follow the field numbers of the published gnostic schema; only
//! the fields used are declared, which protobuf allows.

use prost::Message;
use serde_json::Value;

#[derive(Clone, PartialEq, Message)]
struct Document {
    #[prost(string, tag = "1")]
    swagger: String,
    #[prost(message, optional, tag = "2")]
    info: Option<Info>,
    #[prost(message, optional, tag = "8")]
    paths: Option<Paths>,
}

#[derive(Clone, PartialEq, Message)]
struct Info {
    #[prost(string, tag = "1")]
    title: String,
    #[prost(string, tag = "2")]
    version: String,
}

#[derive(Clone, PartialEq, Message)]
struct Paths {
    #[prost(message, repeated, tag = "2")]
    path: Vec<NamedPathItem>,
}

#[derive(Clone, PartialEq, Message)]
struct NamedPathItem {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    value: Option<PathItem>,
}

#[derive(Clone, PartialEq, Message)]
struct PathItem {
    #[prost(message, optional, tag = "2")]
    get: Option<Operation>,
    #[prost(message, optional, tag = "3")]
    put: Option<Operation>,
    #[prost(message, optional, tag = "4")]
    post: Option<Operation>,
    #[prost(message, optional, tag = "5")]
    delete: Option<Operation>,
    #[prost(message, optional, tag = "8")]
    patch: Option<Operation>,
}

#[derive(Clone, PartialEq, Message)]
struct Operation {
    #[prost(string, repeated, tag = "1")]
    tags: Vec<String>,
    #[prost(string, tag = "5")]
    operation_id: String,
    #[prost(string, repeated, tag = "7")]
    consumes: Vec<String>,
    #[prost(message, repeated, tag = "8")]
    parameters: Vec<ParametersItem>,
    #[prost(message, repeated, tag = "13")]
    vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, Message)]
struct ParametersItem {
    #[prost(message, optional, tag = "1")]
    parameter: Option<Parameter>,
}

#[derive(Clone, PartialEq, Message)]
struct Parameter {
    #[prost(message, optional, tag = "2")]
    non_body_parameter: Option<NonBodyParameter>,
}

#[derive(Clone, PartialEq, Message)]
struct NonBodyParameter {
    #[prost(message, optional, tag = "3")]
    query_parameter_sub_schema: Option<QueryParameterSubSchema>,
}

#[derive(Clone, PartialEq, Message)]
struct QueryParameterSubSchema {
    #[prost(bool, tag = "1")]
    required: bool,
    #[prost(string, tag = "2")]
    r#in: String,
    #[prost(string, tag = "3")]
    description: String,
    #[prost(string, tag = "4")]
    name: String,
    #[prost(string, tag = "6")]
    r#type: String,
    #[prost(bool, tag = "20")]
    unique_items: bool,
}

#[derive(Clone, PartialEq, Message)]
struct NamedAny {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    value: Option<AnyValue>,
}

#[derive(Clone, PartialEq, Message)]
struct AnyValue {
    #[prost(string, tag = "2")]
    yaml: String,
}

fn operation(op: &Value) -> Option<Operation> {
    if !op.is_object() {
        return None;
    }
    let parameters = op["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["in"] == "query")
        .map(|p| ParametersItem {
            parameter: Some(Parameter {
                non_body_parameter: Some(NonBodyParameter {
                    query_parameter_sub_schema: Some(QueryParameterSubSchema {
                        required: false,
                        r#in: "query".into(),
                        description: p["description"].as_str().unwrap_or("").into(),
                        name: p["name"].as_str().unwrap_or("").into(),
                        r#type: p["type"].as_str().unwrap_or("string").into(),
                        unique_items: true,
                    }),
                }),
            }),
        })
        .collect();
    let mut vendor_extension = Vec::new();
    let gvk = &op["x-kubernetes-group-version-kind"];
    if gvk.is_object() {
        let yaml = format!(
            "group: \"{}\"\nkind: {}\nversion: {}\n",
            gvk["group"].as_str().unwrap_or(""),
            gvk["kind"].as_str().unwrap_or(""),
            gvk["version"].as_str().unwrap_or("")
        );
        vendor_extension.push(NamedAny {
            name: "x-kubernetes-group-version-kind".into(),
            value: Some(AnyValue { yaml }),
        });
    }
    if let Some(action) = op["x-kubernetes-action"].as_str() {
        vendor_extension.push(NamedAny {
            name: "x-kubernetes-action".into(),
            value: Some(AnyValue {
                yaml: format!("{action}\n"),
            }),
        });
    }
    Some(Operation {
        tags: op["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str().map(String::from))
            .collect(),
        operation_id: op["operationId"].as_str().unwrap_or("").into(),
        consumes: op["consumes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str().map(String::from))
            .collect(),
        parameters,
        vendor_extension,
    })
}

/// Encodes the Swagger 2.0 JSON document (as [`super::openapi::v2`] builds it).
pub fn encode(v2: &Value) -> Vec<u8> {
    let path = v2["paths"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, item)| NamedPathItem {
            name: name.clone(),
            value: Some(PathItem {
                get: operation(&item["get"]),
                put: operation(&item["put"]),
                post: operation(&item["post"]),
                delete: operation(&item["delete"]),
                patch: operation(&item["patch"]),
            }),
        })
        .collect();
    Document {
        swagger: "2.0".into(),
        info: Some(Info {
            title: "Kubernetes".into(),
            version: crate::KUBERNETES_VERSION.into(),
        }),
        paths: Some(Paths { path }),
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_encoded_document_lists_patch_operations_with_field_validation() {
        let bytes = encode(&crate::openapi::v2());
        let doc = Document::decode(bytes.as_slice()).unwrap();
        let paths = doc.paths.unwrap().path;
        let ns = paths
            .iter()
            .find(|p| p.name == "/api/v1/namespaces/{name}")
            .expect("namespace path");
        let patch = ns.value.as_ref().unwrap().patch.as_ref().unwrap();
        assert!(patch.parameters.iter().any(|p| {
            p.parameter
                .as_ref()
                .and_then(|p| p.non_body_parameter.as_ref())
                .and_then(|n| n.query_parameter_sub_schema.as_ref())
                .is_some_and(|q| q.name == "fieldValidation")
        }));
        let gvk = patch
            .vendor_extension
            .iter()
            .find(|e| e.name == "x-kubernetes-group-version-kind")
            .unwrap();
        assert_eq!(
            gvk.value.as_ref().unwrap().yaml,
            "group: \"\"\nkind: Namespace\nversion: v1\n"
        );
    }
}
