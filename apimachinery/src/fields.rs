//! Field selectors: the `fieldSelector` syntax (`a=b,c!=d`, with `\` escaping `,`, `=`, `!`
//! and `\` in values) and the fields each kind can be selected by, as upstream publishes them
//! (`spec.nodeName` of pods, `involvedObject.*` of events, ...). Every kind supports
//! `metadata.name` and `metadata.namespace`.

use serde_json::Value;

use crate::status::ApiError;

/// One requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    /// The field path, e.g. `spec.nodeName`.
    pub field: String,
    /// `true` for `!=`.
    pub negated: bool,
    /// The value compared with.
    pub value: String,
}

/// A parsed field selector; every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

/// What a selectable field holds, for rendering absent values as upstream does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldType {
    Text,
    Bool,
    Int,
}

/// The selectable fields of a kind beyond metadata.name and metadata.namespace:
/// (selector name, JSON path, type).
fn kind_fields(group: &str, kind: &str) -> &'static [(&'static str, &'static str, FieldType)] {
    use FieldType::{Bool, Int, Text};
    match (group, kind) {
        ("", "Pod") => &[
            ("spec.nodeName", "spec.nodeName", Text),
            ("spec.restartPolicy", "spec.restartPolicy", Text),
            ("spec.schedulerName", "spec.schedulerName", Text),
            ("spec.serviceAccountName", "spec.serviceAccountName", Text),
            ("spec.hostNetwork", "spec.hostNetwork", Bool),
            ("status.phase", "status.phase", Text),
            ("status.podIP", "status.podIP", Text),
            ("status.nominatedNodeName", "status.nominatedNodeName", Text),
        ],
        ("", "Event") => &[
            ("involvedObject.kind", "involvedObject.kind", Text),
            ("involvedObject.namespace", "involvedObject.namespace", Text),
            ("involvedObject.name", "involvedObject.name", Text),
            ("involvedObject.uid", "involvedObject.uid", Text),
            (
                "involvedObject.apiVersion",
                "involvedObject.apiVersion",
                Text,
            ),
            (
                "involvedObject.resourceVersion",
                "involvedObject.resourceVersion",
                Text,
            ),
            ("involvedObject.fieldPath", "involvedObject.fieldPath", Text),
            ("reason", "reason", Text),
            ("reportingComponent", "reportingComponent", Text),
            ("source", "source.component", Text),
            ("type", "type", Text),
        ],
        ("events.k8s.io", "Event") => &[
            ("regarding.kind", "regarding.kind", Text),
            ("regarding.namespace", "regarding.namespace", Text),
            ("regarding.name", "regarding.name", Text),
            ("regarding.uid", "regarding.uid", Text),
            ("regarding.apiVersion", "regarding.apiVersion", Text),
            (
                "regarding.resourceVersion",
                "regarding.resourceVersion",
                Text,
            ),
            ("regarding.fieldPath", "regarding.fieldPath", Text),
            ("reason", "reason", Text),
            ("reportingController", "reportingController", Text),
            ("type", "type", Text),
        ],
        ("", "Secret") => &[("type", "type", Text)],
        ("", "Namespace") => &[("status.phase", "status.phase", Text)],
        ("", "Node") => &[("spec.unschedulable", "spec.unschedulable", Bool)],
        ("", "Service") => &[
            ("spec.clusterIP", "spec.clusterIP", Text),
            ("spec.type", "spec.type", Text),
        ],
        ("apps", "ReplicaSet") => &[("status.replicas", "status.replicas", Int)],
        ("batch", "Job") => &[("status.successful", "status.successful", Int)],
        ("certificates.k8s.io", "CertificateSigningRequest") => {
            &[("spec.signerName", "spec.signerName", Text)]
        }
        _ => &[],
    }
}

/// Splits on `sep` where it is not escaped by a backslash.
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            current.push('\\');
            current.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    if escaped {
        current.push('\\');
    }
    parts.push(current);
    parts
}

fn unescape(s: &str) -> Result<String, ApiError> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(e @ ('\\' | ',' | '=' | '!')) => out.push(e),
                Some(other) => {
                    return Err(ApiError::bad_request(format!(
                        "invalid field selector: invalid escape sequence: \\{other}"
                    )));
                }
                None => {
                    return Err(ApiError::bad_request(
                        "invalid field selector: unterminated escape sequence",
                    ));
                }
            }
        } else if matches!(c, ',' | '=' | '!') {
            return Err(ApiError::bad_request(format!(
                "invalid field selector: unescaped {c:?} in value"
            )));
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// Finds the first unescaped operator: `!=`, `==` or `=`.
fn split_term(term: &str) -> Option<(&str, bool, &str)> {
    let bytes = term.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'!' if bytes.get(i + 1) == Some(&b'=') => {
                return Some((&term[..i], true, &term[i + 2..]));
            }
            b'=' if bytes.get(i + 1) == Some(&b'=') => {
                return Some((&term[..i], false, &term[i + 2..]));
            }
            b'=' => return Some((&term[..i], false, &term[i + 1..])),
            _ => i += 1,
        }
    }
    None
}

impl FieldSelector {
    /// Parses `a=b,c!=d`; a malformed selector is a 400.
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let mut requirements = Vec::new();
        if s.trim().is_empty() {
            return Ok(Self::default());
        }
        for term in split_unescaped(s, ',') {
            let (field, negated, value) = split_term(&term).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "invalid selector: '{s}'; can't understand '{term}'"
                ))
            })?;
            let field = field.trim();
            if field.is_empty() {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{s}'; can't understand '{term}'"
                )));
            }
            requirements.push(FieldRequirement {
                field: field.to_string(),
                negated,
                value: unescape(value)?,
            });
        }
        Ok(FieldSelector { requirements })
    }

    /// Checks every field can be selected on the kind: `field label not supported: <field>`.
    pub fn check_supported(&self, group: &str, kind: &str) -> Result<(), ApiError> {
        for r in &self.requirements {
            let known = matches!(r.field.as_str(), "metadata.name" | "metadata.namespace")
                || kind_fields(group, kind)
                    .iter()
                    .any(|(name, _, _)| *name == r.field);
            if !known {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {}",
                    r.field
                )));
            }
        }
        Ok(())
    }

    /// Whether the object satisfies every requirement.
    pub fn matches(&self, group: &str, kind: &str, obj: &Value) -> bool {
        self.requirements.iter().all(|r| {
            let actual = field_value(group, kind, obj, &r.field);
            (actual == r.value) != r.negated
        })
    }

    /// Whether the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The value an `=` requirement demands of `field`, if any: lets callers narrow reads.
    pub fn exact(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && !r.negated)
            .map(|r| r.value.as_str())
    }

    /// The requirements.
    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }
}

/// The value of a selectable field, rendered as upstream renders it ("" when absent, "false"
/// and "0" for absent booleans and integers).
pub fn field_value(group: &str, kind: &str, obj: &Value, field: &str) -> String {
    let (path, ty) = match field {
        "metadata.name" | "metadata.namespace" => (field, FieldType::Text),
        _ => match kind_fields(group, kind)
            .iter()
            .find(|(name, _, _)| *name == field)
        {
            Some((_, path, ty)) => (*path, *ty),
            None => return String::new(),
        },
    };
    let v = crate::meta::path(obj, path);
    match (v, ty) {
        (Some(Value::String(s)), _) => s.clone(),
        (Some(Value::Bool(b)), _) => b.to_string(),
        (Some(Value::Number(n)), _) => n.to_string(),
        (_, FieldType::Bool) => "false".into(),
        (_, FieldType::Int) => "0".into(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn pods_select_by_node_and_phase_and_unscheduled_pods_by_empty_node() {
        let bound = json!({"metadata": {"name": "a", "namespace": "d"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let pending = json!({"metadata": {"name": "b", "namespace": "d"}, "spec": {}, "status": {"phase": "Pending"}});
        let on_n1 = FieldSelector::parse("spec.nodeName=n1").unwrap();
        assert!(on_n1.matches("", "Pod", &bound) && !on_n1.matches("", "Pod", &pending));
        let unscheduled = FieldSelector::parse("spec.nodeName=").unwrap();
        assert!(
            unscheduled.matches("", "Pod", &pending) && !unscheduled.matches("", "Pod", &bound)
        );
        let not_running =
            FieldSelector::parse("status.phase!=Running,metadata.namespace==d").unwrap();
        assert!(
            not_running.matches("", "Pod", &pending) && !not_running.matches("", "Pod", &bound)
        );
        assert_eq!(on_n1.exact("spec.nodeName"), Some("n1"));
        let host = FieldSelector::parse("spec.hostNetwork=false").unwrap();
        assert!(host.matches("", "Pod", &pending));
    }

    #[test]
    fn events_select_by_involved_object() {
        let ev = json!({"metadata": {"name": "e"}, "involvedObject": {"kind": "Pod", "name": "p", "uid": "u1"}, "source": {"component": "kubelet"}});
        let s = FieldSelector::parse(
            "involvedObject.name=p,involvedObject.kind=Pod,involvedObject.uid=u1,source=kubelet",
        )
        .unwrap();
        s.check_supported("", "Event").unwrap();
        assert!(s.matches("", "Event", &ev));
    }

    #[test]
    fn unsupported_fields_are_bad_requests_with_the_upstream_message() {
        let s = FieldSelector::parse("spec.foo=bar").unwrap();
        let e = s.check_supported("", "Pod").unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (400, "field label not supported: spec.foo")
        );
        assert!(
            FieldSelector::parse("metadata.name=x")
                .unwrap()
                .check_supported("apps", "Deployment")
                .is_ok()
        );
        assert!(
            FieldSelector::parse("status.replicas=0")
                .unwrap()
                .check_supported("apps", "ReplicaSet")
                .is_ok()
        );
    }

    #[test]
    fn escaping_and_malformed_selectors() {
        let s = FieldSelector::parse(r"metadata.name=a\,b\=c").unwrap();
        assert_eq!(s.requirements()[0].value, "a,b=c");
        for bad in ["nofield", "=x", r"metadata.name=a\q", "metadata.name=a=b"] {
            assert_eq!(FieldSelector::parse(bad).unwrap_err().code, 400, "{bad}");
        }
        assert!(FieldSelector::parse("").unwrap().is_empty());
    }

    proptest! {
        #[test]
        fn arbitrary_selectors_never_panic(s in ".{0,60}") {
            if let Ok(sel) = FieldSelector::parse(&s) {
                let _ = sel.check_supported("", "Pod");
                let _ = sel.matches("", "Pod", &json!({"spec": {"nodeName": "x"}}));
            }
        }
    }
}
