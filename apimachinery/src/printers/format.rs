//! Small formatting helpers shared by the printers: reading loosely-typed JSON, ages and
//! durations the way kubectl shows them, label and selector strings.

use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

/// The value at `path` below `v`, or `Null` when any step is missing.
pub(crate) fn at<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    static NULL: Value = Value::Null;
    let mut cur = v;
    for key in path {
        match cur.get(key) {
            Some(next) => cur = next,
            None => return &NULL,
        }
    }
    cur
}

/// The string at `path`, or `""`.
pub(crate) fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    at(v, path).as_str().unwrap_or("")
}

/// The integer at `path`, or 0.
pub(crate) fn int_at(v: &Value, path: &[&str]) -> i64 {
    let x = at(v, path);
    x.as_i64()
        .or_else(|| x.as_f64().map(|f| f as i64))
        .unwrap_or(0)
}

/// The boolean at `path`, or false.
pub(crate) fn bool_at(v: &Value, path: &[&str]) -> bool {
    at(v, path).as_bool().unwrap_or(false)
}

/// The array at `path`, or an empty slice.
pub(crate) fn list_at<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    at(v, path).as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// Whether `path` holds something other than null.
pub(crate) fn has(v: &Value, path: &[&str]) -> bool {
    !at(v, path).is_null()
}

/// The number of entries of the map (or array) at `path`.
pub(crate) fn len_at(v: &Value, path: &[&str]) -> usize {
    match at(v, path) {
        Value::Object(m) => m.len(),
        Value::Array(a) => a.len(),
        _ => 0,
    }
}

/// The timestamp at `path`, if present and RFC 3339.
pub(crate) fn time_at(v: &Value, path: &[&str]) -> Option<Timestamp> {
    at(v, path)
        .as_str()
        .and_then(|s| s.parse::<Timestamp>().ok())
}

/// An int-or-string as Go's `IntOrString.String()` renders it.
pub(crate) fn int_or_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

/// A quantity as text (`"0"` when missing, as Go prints a zero `Quantity`).
pub(crate) fn quantity(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => "0".to_string(),
    }
}

/// The first non-empty string, or `""`.
pub(crate) fn first_non_empty<'a>(items: &[&'a str]) -> &'a str {
    items.iter().copied().find(|s| !s.is_empty()).unwrap_or("")
}

/// `"<none>"` for an empty string.
pub(crate) fn or_none(s: &str) -> String {
    if s.is_empty() {
        "<none>".to_string()
    } else {
        s.to_string()
    }
}

/// A duration as kubectl's AGE column shows it: about two or three significant figures,
/// `"5s"`, `"3m2s"`, `"10m"`, `"3h4m"`, `"2d3h"`, `"45d"`, `"3y20d"`. Up to a second and a bit
/// in the future reads as `"0s"`; further ahead is `"<invalid>"`.
pub fn human_duration(d: SignedDuration) -> String {
    let secs = d.as_secs();
    if secs < -1 {
        return "<invalid>".to_string();
    }
    if secs < 0 {
        return "0s".to_string();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let rest = secs % 60;
        return if rest == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{rest}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let rest = minutes % 60;
        return if rest == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{rest}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        let rest = hours % 24;
        return if rest == 0 {
            format!("{days}d")
        } else {
            format!("{days}d{rest}h")
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        let rest = days % 365;
        return if rest == 0 {
            format!("{years}y")
        } else {
            format!("{years}y{rest}d")
        };
    }
    format!("{years}y")
}

/// How long ago `then` was, as [`human_duration`]; `"<unknown>"` without a time.
pub fn since(then: Option<Timestamp>, now: Timestamp) -> String {
    match then {
        Some(t) => human_duration(now.duration_since(t)),
        None => "<unknown>".to_string(),
    }
}

/// The AGE cell of an object.
pub(crate) fn age(obj: &Value, now: Timestamp) -> String {
    since(time_at(obj, &["metadata", "creationTimestamp"]), now)
}

/// A label map as `k1=v1,k2=v2` in key order; `"<none>"` when empty (Go's `labels.FormatLabels`).
pub fn format_labels(map: &Value) -> String {
    let mut pairs: Vec<(String, String)> = match map.as_object() {
        Some(m) => m
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
            .collect(),
        None => Vec::new(),
    };
    if pairs.is_empty() {
        return "<none>".to_string();
    }
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A metav1.LabelSelector as selector text (`app=x,tier in (a,b),!gone`), requirements sorted
/// by key; `""` for a missing or empty selector and `Err` for an unknown operator.
pub fn label_selector_string(sel: &Value) -> Result<String, String> {
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(m) = at(sel, &["matchLabels"]).as_object() {
        for (k, v) in m {
            reqs.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or(""))));
        }
    }
    for expr in list_at(sel, &["matchExpressions"]) {
        let key = str_at(expr, &["key"]);
        let mut values: Vec<&str> = list_at(expr, &["values"])
            .iter()
            .filter_map(Value::as_str)
            .collect();
        values.sort_unstable();
        let text = match str_at(expr, &["operator"]) {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            other => return Err(format!("{other:?} is not a valid label selector operator")),
        };
        reqs.push((key.to_string(), text));
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(reqs
        .into_iter()
        .map(|(_, t)| t)
        .collect::<Vec<_>>()
        .join(","))
}

/// Go's `metav1.FormatLabelSelector`: the selector text, `"<none>"` when empty, `"<error>"`
/// when invalid.
pub fn format_label_selector(sel: &Value) -> String {
    match label_selector_string(sel) {
        Ok(s) if s.is_empty() => "<none>".to_string(),
        Ok(s) => s,
        Err(_) => "<error>".to_string(),
    }
}

/// Container names and images of a pod spec, each comma-joined.
pub(crate) fn container_cells(pod_spec: &Value) -> (String, String) {
    let containers = list_at(pod_spec, &["containers"]);
    let names: Vec<&str> = containers.iter().map(|c| str_at(c, &["name"])).collect();
    let images: Vec<&str> = containers.iter().map(|c| str_at(c, &["image"])).collect();
    (names.join(","), images.join(","))
}

/// `ip:port`, with brackets around IPv6 addresses (Go's `net.JoinHostPort`).
pub(crate) fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Up to three items joined by commas, with `" + N more..."` past that; `"<unset>"` when empty.
pub(crate) fn list_with_more(items: &[String], total: usize) -> String {
    const MAX: usize = 3;
    let shown = items
        .iter()
        .take(MAX)
        .cloned()
        .collect::<Vec<_>>()
        .join(",");
    if total > MAX {
        return format!("{shown} + {} more...", total - MAX);
    }
    if shown.is_empty() {
        "<unset>".to_string()
    } else {
        shown
    }
}

/// Deduplicates strings keeping the first occurrence of each.
pub(crate) fn dedup(items: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}
