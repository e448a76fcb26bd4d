//! Field selectors: parsing `fieldSelector` and the per-kind fields upstream supports.
//!
//! The syntax is upstream's: comma-separated terms `field=value`, `field==value` or
//! `field!=value`. In values, `\,`, `\=` and `\\` stand for `,`, `=` and `\`; any other escape,
//! or an unescaped `,`/`=` inside a value, is an error. (Upstream has no `\!` escape: `!` needs no
//! escaping in a value.)
//!
//! Which fields a kind supports, and what value each has for an object, follow the upstream
//! field label conversion functions and `ToSelectableFields` of each kind: for example a pod's
//! `spec.hostNetwork` reads `"false"` when unset, a job's `status.successful` is the decimal
//! `status.succeeded` (`"0"` when unset), and a missing string field reads as `""` (so
//! `spec.nodeName=` selects unscheduled pods).

use std::fmt;

use serde_json::Value;

use crate::selector::go_quote;
use crate::status::ApiError;

/// The operator of a field requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldOp {
    /// `field=value` or `field==value`.
    Equals,
    /// `field!=value`.
    NotEquals,
}

/// One term of a field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    /// The field label, e.g. `spec.nodeName`.
    pub field: String,
    /// The operator.
    pub op: FieldOp,
    /// The value, unescaped.
    pub value: String,
}

/// A parsed field selector: a conjunction of terms.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

fn parse_error(message: String) -> ApiError {
    ApiError::bad_request(message)
}

/// Splits at unescaped commas; escapes stay in the terms.
fn split_terms(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' {
            terms.push(&s[start..i]);
            start = i + 1;
        }
    }
    terms.push(&s[start..]);
    terms
}

/// Splits a term at the first operator (`!=`, then `==`, then `=` at each position).
fn split_term(term: &str) -> Option<(&str, FieldOp, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        if let Some(v) = rest.strip_prefix("!=") {
            return Some((&term[..i], FieldOp::NotEquals, v));
        }
        if let Some(v) = rest.strip_prefix("==") {
            return Some((&term[..i], FieldOp::Equals, v));
        }
        if let Some(v) = rest.strip_prefix('=') {
            return Some((&term[..i], FieldOp::Equals, v));
        }
    }
    None
}

/// Undoes [`escape_value`], with upstream's errors.
pub fn unescape_value(s: &str) -> Result<String, String> {
    if !s.contains(['\\', ',', '=']) {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            match c {
                '\\' | ',' | '=' => out.push(c),
                other => {
                    return Err(format!(
                        "invalid field selector: invalid escape sequence: \\{other}"
                    ));
                }
            }
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            // Upstream formats the rune with %v, which prints its code point in decimal.
            ',' | '=' => {
                return Err(format!(
                    "invalid field selector: unescaped character in value: {}",
                    c as u32
                ));
            }
            other => out.push(other),
        }
    }
    if escaped {
        return Err("invalid field selector: invalid escape sequence: \\".to_string());
    }
    Ok(out)
}

/// Escapes `\`, `,` and `=` in a value so that it can be put in a field selector.
pub fn escape_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// How a kind's field labels are checked.
enum Support {
    /// Only `metadata.name` and `metadata.namespace` (upstream's default conversion, with its
    /// own error wording).
    Default,
    /// An explicit list of labels, rejected with `field label not supported: x`.
    Listed(&'static [&'static str]),
}

const POD_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.podIPs",
    "status.nominatedNodeName",
    // Old v1 clients send spec.host for spec.nodeName.
    "spec.host",
];
const EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
    "metadata.namespace",
    "metadata.name",
];
const EVENTS_V1_FIELDS: &[&str] = &[
    "reason",
    "regarding.kind",
    "regarding.namespace",
    "regarding.name",
    "regarding.uid",
    "regarding.apiVersion",
    "regarding.resourceVersion",
    "regarding.fieldPath",
    "reportingController",
    "source",
    "type",
    "metadata.namespace",
    "metadata.name",
];
const NODE_FIELDS: &[&str] = &["metadata.name", "spec.unschedulable"];
const NAMESPACE_FIELDS: &[&str] = &["metadata.name", "status.phase"];
const SECRET_FIELDS: &[&str] = &["metadata.name", "metadata.namespace", "type"];
const SERVICE_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "spec.clusterIP",
    "spec.type",
];
const REPLICAS_FIELDS: &[&str] = &["metadata.name", "metadata.namespace", "status.replicas"];
const JOB_FIELDS: &[&str] = &["metadata.name", "metadata.namespace", "status.successful"];
const CSR_FIELDS: &[&str] = &["metadata.name", "spec.signerName"];

fn support(group: &str, kind: &str) -> Support {
    match (group, kind) {
        ("", "Pod") => Support::Listed(POD_FIELDS),
        ("", "Event") => Support::Listed(EVENT_FIELDS),
        ("events.k8s.io", "Event") => Support::Listed(EVENTS_V1_FIELDS),
        ("", "Node") => Support::Listed(NODE_FIELDS),
        ("", "Namespace") => Support::Listed(NAMESPACE_FIELDS),
        ("", "Secret") => Support::Listed(SECRET_FIELDS),
        ("", "Service") => Support::Listed(SERVICE_FIELDS),
        ("", "ReplicationController") | ("apps", "ReplicaSet") => Support::Listed(REPLICAS_FIELDS),
        ("batch", "Job") => Support::Listed(JOB_FIELDS),
        ("certificates.k8s.io", "CertificateSigningRequest") => Support::Listed(CSR_FIELDS),
        _ => Support::Default,
    }
}

/// The field labels a kind supports in field selectors.
pub fn supported_fields(group: &str, kind: &str) -> &'static [&'static str] {
    match support(group, kind) {
        Support::Default => &["metadata.name", "metadata.namespace"],
        Support::Listed(list) => list,
    }
}

/// Why `field` is not a supported field label of the kind, in upstream's words; `None` when it is
/// supported.
pub fn unsupported_field_message(group: &str, kind: &str, field: &str) -> Option<String> {
    match support(group, kind) {
        Support::Default => {
            if matches!(field, "metadata.name" | "metadata.namespace") {
                None
            } else {
                Some(format!(
                    "{} is not a known field selector: only \"metadata.name\", \"metadata.namespace\"",
                    go_quote(field)
                ))
            }
        }
        Support::Listed(list) => {
            if list.contains(&field) {
                None
            } else {
                Some(format!("field label not supported: {field}"))
            }
        }
    }
}

/// Follows a dotted path through JSON objects.
fn lookup<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(obj, |v, part| v.get(part))
}

/// A JSON value rendered as a field value: strings as is, booleans `true`/`false`, numbers in
/// decimal, anything else (missing, null, objects) as `""`.
fn render(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

fn string_at(obj: &Value, path: &str) -> String {
    render(lookup(obj, path))
}

fn bool_at(obj: &Value, path: &str) -> String {
    lookup(obj, path)
        .and_then(Value::as_bool)
        .unwrap_or(false)
        .to_string()
}

fn int_at(obj: &Value, path: &str) -> String {
    match lookup(obj, path) {
        Some(Value::Number(n)) => n.to_string(),
        _ => "0".to_string(),
    }
}

/// The value of a field label for an object of the kind, as upstream's `ToSelectableFields`
/// computes it (missing fields are `""`, or the zero value for booleans and integers).
pub fn field_value(group: &str, kind: &str, field: &str, obj: &Value) -> String {
    match (group, kind, field) {
        (_, _, "metadata.name") => string_at(obj, "metadata.name"),
        (_, _, "metadata.namespace") => string_at(obj, "metadata.namespace"),
        ("", "Pod", "spec.host") => string_at(obj, "spec.nodeName"),
        ("", "Pod", "spec.hostNetwork") => bool_at(obj, "spec.hostNetwork"),
        ("", "Pod", "status.podIP") => {
            let first = lookup(obj, "status.podIPs")
                .and_then(Value::as_array)
                .and_then(|ips| ips.first())
                .and_then(|ip| ip.get("ip"));
            match first {
                Some(ip) => render(Some(ip)),
                None => string_at(obj, "status.podIP"),
            }
        }
        // Accepted by upstream's conversion but absent from the pod's field set.
        ("", "Pod", "status.podIPs") => String::new(),
        ("", "Event", "source") => {
            let component = string_at(obj, "source.component");
            if component.is_empty() {
                string_at(obj, "reportingComponent")
            } else {
                component
            }
        }
        ("events.k8s.io", "Event", "source") => {
            let component = string_at(obj, "deprecatedSource.component");
            if component.is_empty() {
                string_at(obj, "reportingController")
            } else {
                component
            }
        }
        ("", "Node", "spec.unschedulable") => bool_at(obj, "spec.unschedulable"),
        ("", "ReplicationController", "status.replicas")
        | ("apps", "ReplicaSet", "status.replicas") => int_at(obj, "status.replicas"),
        ("batch", "Job", "status.successful") => int_at(obj, "status.succeeded"),
        _ => string_at(obj, field),
    }
}

impl FieldSelector {
    /// The selector that matches everything.
    pub fn everything() -> Self {
        Self::default()
    }

    /// Parses `a=b,c!=d` (400 BadRequest on bad syntax, with upstream's message).
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let mut terms = split_terms(s);
        terms.sort_unstable();
        let mut requirements = Vec::new();
        for term in terms {
            if term.is_empty() {
                continue;
            }
            let Some((field, op, raw)) = split_term(term) else {
                return Err(parse_error(format!(
                    "invalid selector: '{s}'; can't understand '{term}'"
                )));
            };
            let value = unescape_value(raw).map_err(parse_error)?;
            requirements.push(FieldRequirement {
                field: field.to_string(),
                op,
                value,
            });
        }
        Ok(FieldSelector { requirements })
    }

    /// A selector with the single term `field=value`.
    pub fn one_term_equal(field: impl Into<String>, value: impl Into<String>) -> Self {
        FieldSelector {
            requirements: vec![FieldRequirement {
                field: field.into(),
                op: FieldOp::Equals,
                value: value.into(),
            }],
        }
    }

    /// Checks every field is supported for the kind (400 `field label not supported: x`, or for
    /// kinds with only the metadata fields `"x" is not a known field selector: only
    /// "metadata.name", "metadata.namespace"`).
    pub fn check_supported(&self, group: &str, kind: &str) -> Result<(), ApiError> {
        for r in &self.requirements {
            if let Some(message) = unsupported_field_message(group, kind, &r.field) {
                return Err(ApiError::bad_request(message));
            }
        }
        Ok(())
    }

    /// Whether the object matches. Call [`FieldSelector::check_supported`] first: an unsupported
    /// field is read at its JSON path.
    pub fn matches(&self, group: &str, kind: &str, obj: &Value) -> bool {
        self.requirements.iter().all(|r| {
            let actual = field_value(group, kind, &r.field, obj);
            match r.op {
                FieldOp::Equals => actual == r.value,
                FieldOp::NotEquals => actual != r.value,
            }
        })
    }

    /// Whether the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The terms.
    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    /// The value an `=` term requires of `field`, if any (upstream's `RequiresExactMatch`), to
    /// narrow a list, e.g. `exact("spec.nodeName")`.
    pub fn exact(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && r.op == FieldOp::Equals)
            .map(|r| r.value.as_str())
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let op = match r.op {
                FieldOp::Equals => "=",
                FieldOp::NotEquals => "!=",
            };
            write!(f, "{}{op}{}", r.field, escape_value(&r.value))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn sel(s: &str) -> FieldSelector {
        FieldSelector::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e:?}"))
    }

    fn parse_err(s: &str) -> String {
        let e = FieldSelector::parse(s).unwrap_err();
        let status = e.to_status();
        assert_eq!(status["code"], 400);
        assert_eq!(status["reason"], "BadRequest");
        status["message"].as_str().unwrap().to_string()
    }

    fn support_err(s: &str, group: &str, kind: &str) -> String {
        let e = sel(s).check_supported(group, kind).unwrap_err();
        let status = e.to_status();
        assert_eq!(status["code"], 400);
        status["message"].as_str().unwrap().to_string()
    }

    fn pod() -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"nodeName": "n1", "restartPolicy": "Always", "schedulerName": "default-scheduler",
                     "serviceAccountName": "default"},
            "status": {"phase": "Running", "podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}]}
        })
    }

    #[test]
    fn the_empty_string_selects_everything() {
        let s = sel("");
        assert!(s.is_empty());
        assert!(s.matches("", "Pod", &pod()));
        assert!(sel(",,").is_empty());
    }

    #[test]
    fn equals_double_equals_and_not_equals_compare_the_value() {
        assert!(sel("metadata.name=web").matches("", "Pod", &pod()));
        assert!(sel("metadata.name==web").matches("", "Pod", &pod()));
        assert!(!sel("metadata.name!=web").matches("", "Pod", &pod()));
        assert!(sel("metadata.name!=db").matches("", "Pod", &pod()));
    }

    #[test]
    fn terms_are_a_conjunction() {
        let s = sel("metadata.name=web,spec.nodeName=n1,status.phase!=Pending");
        assert!(s.matches("", "Pod", &pod()));
        let s = sel("metadata.name=web,spec.nodeName=n2");
        assert!(!s.matches("", "Pod", &pod()));
    }

    #[test]
    fn the_first_operator_splits_the_term() {
        let s = sel("a!=b");
        assert_eq!(s.requirements()[0].op, FieldOp::NotEquals);
        let s = sel("a==b");
        assert_eq!(s.requirements()[0].value, "b");
        // After the first '=', a '!' in the value is plain data.
        assert_eq!(sel("a=b!c").requirements()[0].value, "b!c");
    }

    #[test]
    fn escaped_commas_equals_and_backslashes_are_data() {
        let s = sel(r"metadata.name=a\,b\=c\\d,type=x");
        assert_eq!(s.exact("metadata.name"), Some(r"a,b=c\d"));
        assert_eq!(s.exact("type"), Some("x"));
        assert_eq!(s.to_string(), r"metadata.name=a\,b\=c\\d,type=x");
    }

    #[test]
    fn an_unknown_escape_is_rejected() {
        assert_eq!(
            parse_err(r"a=b\x"),
            r"invalid field selector: invalid escape sequence: \x"
        );
        assert_eq!(
            parse_err(r"a=b\"),
            r"invalid field selector: invalid escape sequence: \"
        );
    }

    #[test]
    fn an_unescaped_equals_in_a_value_is_rejected_with_its_code_point() {
        assert_eq!(
            parse_err("a=b=c"),
            "invalid field selector: unescaped character in value: 61"
        );
        assert_eq!(
            parse_err("a!==b"),
            "invalid field selector: unescaped character in value: 61"
        );
    }

    #[test]
    fn a_term_without_an_operator_is_rejected() {
        assert_eq!(
            parse_err("a=b,c"),
            "invalid selector: 'a=b,c'; can't understand 'c'"
        );
    }

    #[test]
    fn terms_are_sorted_and_printed_canonically() {
        let s = sel("b==2,a!=1");
        assert_eq!(s.to_string(), "a!=1,b=2");
    }

    #[test]
    fn exact_ignores_not_equals() {
        let s = sel("spec.nodeName!=n1");
        assert_eq!(s.exact("spec.nodeName"), None);
        let s = sel("spec.nodeName=");
        assert_eq!(s.exact("spec.nodeName"), Some(""));
    }

    #[test]
    fn every_kind_supports_metadata_name_and_namespace_by_default() {
        assert!(
            sel("metadata.name=a,metadata.namespace=b")
                .check_supported("", "ConfigMap")
                .is_ok()
        );
        assert!(
            sel("metadata.name=a")
                .check_supported("apps", "Deployment")
                .is_ok()
        );
        assert!(
            sel("metadata.namespace=a")
                .check_supported("", "Pod")
                .is_ok()
        );
    }

    #[test]
    fn kinds_without_extra_fields_use_the_default_wording() {
        assert_eq!(
            support_err("foo.bar=baz", "networking.k8s.io", "Ingress"),
            "\"foo.bar\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
        );
    }

    #[test]
    fn pods_support_their_upstream_fields() {
        let s = sel(
            "spec.nodeName=a,spec.restartPolicy=b,spec.schedulerName=c,spec.serviceAccountName=d,\
             spec.hostNetwork=e,status.phase=f,status.podIP=g,status.podIPs=h,status.nominatedNodeName=i,spec.host=j",
        );
        assert!(s.check_supported("", "Pod").is_ok());
        assert_eq!(
            support_err("spec.containers=x", "", "Pod"),
            "field label not supported: spec.containers"
        );
    }

    #[test]
    fn pod_field_values_are_rendered_as_upstream() {
        let p = pod();
        assert!(sel("spec.hostNetwork=false").matches("", "Pod", &p));
        assert!(sel("status.podIP=10.0.0.1").matches("", "Pod", &p));
        assert!(sel("spec.host=n1").matches("", "Pod", &p));
        assert!(sel("status.podIPs!=10.0.0.1").matches("", "Pod", &p));
        let host = json!({"spec": {"hostNetwork": true}});
        assert!(sel("spec.hostNetwork=true").matches("", "Pod", &host));
    }

    #[test]
    fn an_empty_node_name_selects_unscheduled_pods() {
        let pending = json!({"metadata": {"name": "p"}, "spec": {}});
        assert!(sel("spec.nodeName=").matches("", "Pod", &pending));
        assert!(!sel("spec.nodeName=").matches("", "Pod", &pod()));
        assert!(sel("spec.nodeName!=").matches("", "Pod", &pod()));
    }

    #[test]
    fn core_events_support_involved_object_fields() {
        let s = sel(
            "involvedObject.kind=a,involvedObject.namespace=b,involvedObject.name=c,involvedObject.uid=d,\
             involvedObject.apiVersion=e,involvedObject.resourceVersion=f,involvedObject.fieldPath=g,\
             reason=h,reportingComponent=i,source=j,type=k,metadata.name=l,metadata.namespace=m",
        );
        assert!(s.check_supported("", "Event").is_ok());
        assert_eq!(
            support_err("regarding.kind=Pod", "", "Event"),
            "field label not supported: regarding.kind"
        );
        let ev = json!({"involvedObject": {"kind": "Pod", "name": "web"}, "reason": "Started",
                        "reportingComponent": "kubelet", "type": "Normal"});
        assert!(
            sel("involvedObject.kind=Pod,involvedObject.name=web,reason=Started")
                .matches("", "Event", &ev)
        );
        assert!(sel("source=kubelet").matches("", "Event", &ev));
        let ev2 = json!({"source": {"component": "scheduler"}, "reportingComponent": "x"});
        assert!(sel("source=scheduler").matches("", "Event", &ev2));
    }

    #[test]
    fn events_k8s_io_events_use_regarding_and_reporting_controller() {
        let s = sel(
            "regarding.kind=a,regarding.namespace=b,regarding.name=c,regarding.uid=d,regarding.apiVersion=e,\
             regarding.resourceVersion=f,regarding.fieldPath=g,reason=h,reportingController=i,source=j,type=k",
        );
        assert!(s.check_supported("events.k8s.io", "Event").is_ok());
        assert_eq!(
            support_err("involvedObject.kind=Pod", "events.k8s.io", "Event"),
            "field label not supported: involvedObject.kind"
        );
        let ev = json!({"regarding": {"kind": "Pod"}, "reportingController": "kubelet"});
        assert!(
            sel("regarding.kind=Pod,reportingController=kubelet,source=kubelet").matches(
                "events.k8s.io",
                "Event",
                &ev
            )
        );
    }

    #[test]
    fn secrets_support_type() {
        assert!(sel("type=Opaque").check_supported("", "Secret").is_ok());
        assert!(sel("type=Opaque").matches("", "Secret", &json!({"type": "Opaque"})));
        assert_eq!(
            support_err("data.x=y", "", "Secret"),
            "field label not supported: data.x"
        );
    }

    #[test]
    fn namespaces_support_status_phase_but_not_metadata_namespace() {
        assert!(
            sel("status.phase=Active,metadata.name=x")
                .check_supported("", "Namespace")
                .is_ok()
        );
        assert_eq!(
            support_err("metadata.namespace=x", "", "Namespace"),
            "field label not supported: metadata.namespace"
        );
    }

    #[test]
    fn nodes_support_spec_unschedulable_rendered_as_a_boolean() {
        assert!(
            sel("spec.unschedulable=false")
                .check_supported("", "Node")
                .is_ok()
        );
        assert!(sel("spec.unschedulable=false").matches("", "Node", &json!({"spec": {}})));
        assert!(sel("spec.unschedulable=true").matches(
            "",
            "Node",
            &json!({"spec": {"unschedulable": true}})
        ));
        assert_eq!(
            support_err("metadata.namespace=", "", "Node"),
            "field label not supported: metadata.namespace"
        );
    }

    #[test]
    fn services_support_cluster_ip_and_type() {
        assert!(
            sel("spec.clusterIP=None,spec.type=ClusterIP")
                .check_supported("", "Service")
                .is_ok()
        );
        assert!(sel("spec.clusterIP=None").matches(
            "",
            "Service",
            &json!({"spec": {"clusterIP": "None"}})
        ));
        assert_eq!(
            support_err("spec.ports=1", "", "Service"),
            "field label not supported: spec.ports"
        );
    }

    #[test]
    fn replica_sets_and_controllers_support_status_replicas_as_an_integer() {
        assert!(
            sel("status.replicas=0")
                .check_supported("apps", "ReplicaSet")
                .is_ok()
        );
        assert!(
            sel("status.replicas=0")
                .check_supported("", "ReplicationController")
                .is_ok()
        );
        assert!(sel("status.replicas=0").matches("apps", "ReplicaSet", &json!({"status": {}})));
        assert!(sel("status.replicas=3").matches(
            "apps",
            "ReplicaSet",
            &json!({"status": {"replicas": 3}})
        ));
        assert_eq!(
            support_err("status.readyReplicas=1", "apps", "ReplicaSet"),
            "field label not supported: status.readyReplicas"
        );
    }

    #[test]
    fn jobs_support_status_successful_read_from_succeeded() {
        assert!(
            sel("status.successful=1")
                .check_supported("batch", "Job")
                .is_ok()
        );
        assert!(sel("status.successful=1").matches(
            "batch",
            "Job",
            &json!({"status": {"succeeded": 1}})
        ));
        assert!(sel("status.successful=0").matches("batch", "Job", &json!({})));
    }

    #[test]
    fn certificate_signing_requests_support_signer_name() {
        let s = sel("spec.signerName=kubernetes.io/kube-apiserver-client");
        assert!(
            s.check_supported("certificates.k8s.io", "CertificateSigningRequest")
                .is_ok()
        );
        assert!(s.matches(
            "certificates.k8s.io",
            "CertificateSigningRequest",
            &json!({"spec": {"signerName": "kubernetes.io/kube-apiserver-client"}})
        ));
    }

    #[test]
    fn supported_fields_lists_the_defaults_for_other_kinds() {
        assert_eq!(
            supported_fields("", "ConfigMap"),
            ["metadata.name", "metadata.namespace"]
        );
        assert!(supported_fields("", "Pod").contains(&"spec.nodeName"));
    }

    #[test]
    fn escape_and_unescape_are_inverse() {
        let v = r"a,b=c\d!e";
        assert_eq!(unescape_value(&escape_value(v)).unwrap(), v);
    }

    proptest! {
        #[test]
        fn arbitrary_strings_never_panic_the_parser(s in ".*") {
            if let Ok(sel) = FieldSelector::parse(&s) {
                let _ = sel.matches("", "Pod", &json!({}));
            }
        }

        #[test]
        fn valid_selectors_round_trip_through_display(
            terms in proptest::collection::vec(
                ("[a-zA-Z][a-zA-Z.]{0,12}", proptest::bool::ANY, ".{0,10}"), 0..5)
        ) {
            let text = terms
                .iter()
                .map(|(f, ne, v)| format!("{f}{}{}", if *ne { "!=" } else { "=" }, escape_value(v)))
                .collect::<Vec<_>>()
                .join(",");
            let parsed = FieldSelector::parse(&text);
            prop_assert!(parsed.is_ok(), "{text:?}");
            let parsed = parsed.unwrap();
            for (f, ne, v) in &terms {
                let op = if *ne { FieldOp::NotEquals } else { FieldOp::Equals };
                prop_assert!(parsed.requirements().iter().any(|r| &r.field == f && r.op == op && &r.value == v));
            }
            let printed = parsed.to_string();
            prop_assert_eq!(FieldSelector::parse(&printed).unwrap(), parsed);
        }
    }
}
