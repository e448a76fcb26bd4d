//! Server-side printing: the meta.k8s.io/v1 Table columns and rows of each kind.
//!
//! `kubectl get` asks for `application/json;as=Table;v=v1;g=meta.k8s.io` and prints the
//! columns the server returns, hiding those of priority 1 unless `-o wide`. The columns and
//! cell formats here follow the upstream printers of Kubernetes 1.33 so that the output reads
//! the same; kinds without a printer of their own get the default table (Name, Created At).

mod format;
mod kinds;
#[cfg(test)]
mod tests;

use std::str::FromStr;

use serde_json::{Map, Value, json};

pub use format::{
    format_label_selector, format_labels, human_duration, label_selector_string, since,
};
pub use kinds::{
    access_modes, csr_condition, format_endpoints, job_status, node_roles, service_external_ip,
    service_ports,
};

/// One column definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Header, e.g. `Name`.
    pub name: &'static str,
    /// OpenAPI type: string, integer, number, boolean, date.
    pub type_: &'static str,
    /// Format, e.g. `name` for the name column.
    pub format: &'static str,
    /// Description.
    pub description: &'static str,
    /// 0 for default columns, 1 for `-o wide` ones.
    pub priority: i32,
}

impl Column {
    /// The column as a meta.k8s.io/v1 TableColumnDefinition.
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "type": self.type_,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        })
    }
}

/// The columns of the default table, used for kinds without a printer of their own.
static DEFAULT_COLUMNS: &[Column] = &[
    kinds::NAME,
    Column {
        name: "Created At",
        type_: "date",
        format: "",
        description: kinds::AGE_DESC,
        priority: 0,
    },
];

/// Whether a kind has a printer of its own (otherwise it gets the default table).
pub fn has_printer(group: &str, kind: &str) -> bool {
    kinds::printer(group, kind).is_some()
}

/// The columns of a kind.
pub fn columns(group: &str, kind: &str) -> Vec<Column> {
    match kinds::printer(group, kind) {
        Some(p) => p.columns.to_vec(),
        None => DEFAULT_COLUMNS.to_vec(),
    }
}

/// The cells of one object's row, in column order.
pub fn row(group: &str, kind: &str, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    match kinds::printer(group, kind) {
        Some(p) => (p.row)(obj, now),
        None => default_row(obj),
    }
}

/// The default row: the name and the creation time in RFC 3339 (UTC, whole seconds).
fn default_row(obj: &Value) -> Vec<Value> {
    let created = match format::time_at(obj, &["metadata", "creationTimestamp"]) {
        Some(t) => t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        None => "0001-01-01T00:00:00Z".to_string(),
    };
    vec![
        json!(format::str_at(obj, &["metadata", "name"])),
        json!(created),
    ]
}

/// Row conditions (meta.k8s.io/v1 TableRowCondition list), where the kind has any: pods that
/// have finished are marked `Completed`.
pub fn row_conditions(group: &str, kind: &str, obj: &Value) -> Option<Value> {
    match (group, kind) {
        ("", "Pod") => kinds::pod_row_conditions(obj),
        _ => None,
    }
}

/// What each row carries besides its cells: the `includeObject` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// No object.
    None,
    /// The object's metadata as a PartialObjectMetadata (the default).
    #[default]
    Metadata,
    /// The whole object.
    Object,
}

impl IncludeObject {
    /// The parameter's value as sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            IncludeObject::None => "None",
            IncludeObject::Metadata => "Metadata",
            IncludeObject::Object => "Object",
        }
    }
}

impl FromStr for IncludeObject {
    type Err = String;

    /// Parses the query parameter; the empty string means the default, `Metadata`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "None" => Ok(IncludeObject::None),
            "" | "Metadata" => Ok(IncludeObject::Metadata),
            "Object" => Ok(IncludeObject::Object),
            other => Err(format!(
                "includeObject: Unsupported value: {other:?}: supported values: \"None\", \"Metadata\", \"Object\""
            )),
        }
    }
}

/// The object a row carries for `include`, or `None` to leave it out.
pub fn row_object(obj: &Value, include: IncludeObject) -> Option<Value> {
    match include {
        IncludeObject::None => None,
        IncludeObject::Object => Some(obj.clone()),
        IncludeObject::Metadata => Some(json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
        })),
    }
}

/// A whole meta.k8s.io/v1 Table of `objects` (all of `group`/`kind`): column definitions (all
/// of them; kubectl hides the wide ones itself), one row per object, and list metadata with
/// `resource_version` and `continue_token` where not empty.
pub fn table(
    group: &str,
    kind: &str,
    objects: &[Value],
    now: jiff::Timestamp,
    include_object: IncludeObject,
    resource_version: &str,
    continue_token: &str,
) -> Value {
    let column_definitions: Vec<Value> = columns(group, kind).iter().map(Column::to_json).collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|obj| {
            let mut r = Map::new();
            r.insert("cells".into(), Value::Array(row(group, kind, obj, now)));
            if let Some(conditions) = row_conditions(group, kind, obj) {
                r.insert("conditions".into(), conditions);
            }
            if let Some(o) = row_object(obj, include_object) {
                r.insert("object".into(), o);
            }
            Value::Object(r)
        })
        .collect();
    let mut metadata = Map::new();
    if !resource_version.is_empty() {
        metadata.insert("resourceVersion".into(), json!(resource_version));
    }
    if !continue_token.is_empty() {
        metadata.insert("continue".into(), json!(continue_token));
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": column_definitions,
        "rows": rows,
    })
}
