//! Reading and writing object metadata in `serde_json::Value` objects.
//!
//! The server handles every kind as JSON; these helpers keep the field paths in one place.

use serde_json::{Map, Value};

/// `metadata.<field>` as a string, if present.
pub fn str_field<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

/// `metadata.name`.
pub fn name(obj: &Value) -> Option<&str> {
    str_field(obj, "name").filter(|s| !s.is_empty())
}

/// `metadata.namespace`.
pub fn namespace(obj: &Value) -> Option<&str> {
    str_field(obj, "namespace").filter(|s| !s.is_empty())
}

/// `metadata.resourceVersion`.
pub fn resource_version(obj: &Value) -> Option<&str> {
    str_field(obj, "resourceVersion").filter(|s| !s.is_empty())
}

/// `metadata.uid`.
pub fn uid(obj: &Value) -> Option<&str> {
    str_field(obj, "uid").filter(|s| !s.is_empty())
}

/// `metadata`, created as an empty object when absent or not an object.
pub fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let map = obj.as_object_mut().expect("made an object above");
    let meta = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut().expect("made an object above")
}

/// Sets or, with `None`, removes `metadata.<field>`.
pub fn set(obj: &mut Value, field: &str, value: Option<Value>) {
    let meta = metadata_mut(obj);
    match value {
        Some(v) => {
            meta.insert(field.to_string(), v);
        }
        None => {
            meta.remove(field);
        }
    }
}

/// `metadata.labels` as a map (empty when absent).
pub fn labels(obj: &Value) -> Map<String, Value> {
    map_field(obj, "labels")
}

/// `metadata.annotations` as a map (empty when absent).
pub fn annotations(obj: &Value) -> Map<String, Value> {
    map_field(obj, "annotations")
}

fn map_field(obj: &Value, field: &str) -> Map<String, Value> {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// `metadata.finalizers` as strings.
pub fn finalizers(obj: &Value) -> Vec<String> {
    obj.get("metadata")
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `metadata.deletionTimestamp` is set.
pub fn is_being_deleted(obj: &Value) -> bool {
    str_field(obj, "deletionTimestamp").is_some()
}

/// Follows a dotted path of object fields (`spec.nodeName`), no array indexing.
pub fn path<'a>(obj: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted.split('.').try_fold(obj, |v, key| v.get(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metadata_mut_repairs_a_missing_or_wrong_metadata() {
        let mut v = json!({"metadata": 3});
        set(&mut v, "name", Some("a".into()));
        assert_eq!(name(&v), Some("a"));
        set(&mut v, "name", None);
        assert_eq!(name(&v), None);
    }

    #[test]
    fn path_walks_nested_objects() {
        let v = json!({"spec": {"nodeName": "n1"}});
        assert_eq!(path(&v, "spec.nodeName"), Some(&json!("n1")));
        assert_eq!(path(&v, "spec.missing"), None);
    }
}
