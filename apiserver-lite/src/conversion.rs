//! Conversion between the two shapes of one stored kind.
//!
//! events.k8s.io/v1 Events are core/v1 Events in another shape, as upstream stores them: a
//! write through either API is readable through both (kubectl describe reads core events that
//! kube-rs recorders wrote through events.k8s.io).

use apimachinery::resources::ResourceInfo;
use serde_json::{Map, Value};

/// Field renames between events.k8s.io/v1 (left) and core/v1 (right).
const EVENT_FIELDS: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
    ("reportingController", "reportingComponent"),
];

fn rename(obj: Value, to_core: bool, api_version: &str) -> Value {
    let Value::Object(fields) = obj else {
        return obj;
    };
    let mut out = Map::new();
    for (k, v) in fields {
        let renamed = EVENT_FIELDS
            .iter()
            .find(|(events, core)| if to_core { events == &k } else { core == &k })
            .map(|(events, core)| if to_core { *core } else { *events })
            .unwrap_or(&k)
            .to_string();
        out.insert(renamed, v);
    }
    out.insert("apiVersion".into(), api_version.into());
    Value::Object(out)
}

/// The stored (core) shape of an object written through `r`.
pub fn to_storage(r: &ResourceInfo, obj: Value) -> Value {
    match (r.group, r.kind) {
        ("events.k8s.io", "Event") => rename(obj, true, "v1"),
        _ => obj,
    }
}

/// The shape `r` serves of a stored object.
pub fn from_storage(r: &ResourceInfo, obj: Value) -> Value {
    match (r.group, r.kind) {
        ("events.k8s.io", "Event") => rename(obj, false, "events.k8s.io/v1"),
        _ => obj,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_convert_both_ways_without_loss() {
        let r = apimachinery::resources::find("events.k8s.io", "v1", "events").unwrap();
        let ev = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
            "regarding": {"kind": "Pod", "name": "p"}, "note": "hello", "reason": "Started", "reportingController": "c", "type": "Normal"});
        let core = to_storage(r, ev.clone());
        assert_eq!(core["involvedObject"]["name"], "p");
        assert_eq!(core["message"], "hello");
        assert_eq!(core["reportingComponent"], "c");
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(from_storage(r, core), ev);
    }
}
