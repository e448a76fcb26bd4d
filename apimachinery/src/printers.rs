//! Server-side printing: the meta.k8s.io/v1 Table columns and rows of each kind.
//! (Being written.)

use serde_json::{Value, json};

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

/// The columns of a kind.
pub fn columns(_group: &str, _kind: &str) -> Vec<Column> {
    vec![
        Column {
            name: "Name",
            type_: "string",
            format: "name",
            description: "Name",
            priority: 0,
        },
        Column {
            name: "Created At",
            type_: "date",
            format: "",
            description: "Creation time",
            priority: 0,
        },
    ]
}

/// The cells of one object's row, in column order.
pub fn row(_group: &str, _kind: &str, obj: &Value, _now: jiff::Timestamp) -> Vec<Value> {
    vec![
        obj["metadata"]["name"].clone(),
        obj["metadata"]
            .get("creationTimestamp")
            .cloned()
            .unwrap_or(json!(null)),
    ]
}
