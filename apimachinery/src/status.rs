//! API errors as metav1.Status, with the reasons, codes and messages upstream uses.
//!
//! kubectl prints `Error from server (<Reason>): <message>`, so the message formats here follow
//! the upstream API server's (`pods "x" not found`, `Pod "x" is invalid: spec...: Required
//! value`) to make kubectl's output the same against both servers.

use serde_json::{Value, json};

/// The reason of one field error, as in metav1.StatusCause.reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CauseType {
    /// `FieldValueRequired`: "Required value".
    Required,
    /// `FieldValueInvalid`: "Invalid value: <value>: <detail>".
    Invalid,
    /// `FieldValueNotSupported`: "Unsupported value: <value>: supported values: ...".
    NotSupported,
    /// `FieldValueDuplicate`: "Duplicate value: <value>".
    Duplicate,
    /// `FieldValueForbidden`: "Forbidden: <detail>".
    Forbidden,
    /// `FieldValueTooLong`: "Too long: may not be more than N bytes".
    TooLong,
    /// `FieldValueTooMany`: "Too many: N: must have at most M items".
    TooMany,
    /// `FieldValueNotFound`: "Not found: <value>".
    NotFound,
}

impl CauseType {
    /// The reason string of the cause.
    pub fn reason(self) -> &'static str {
        match self {
            CauseType::Required => "FieldValueRequired",
            CauseType::Invalid => "FieldValueInvalid",
            CauseType::NotSupported => "FieldValueNotSupported",
            CauseType::Duplicate => "FieldValueDuplicate",
            CauseType::Forbidden => "FieldValueForbidden",
            CauseType::TooLong => "FieldValueTooLong",
            CauseType::TooMany => "FieldValueTooMany",
            CauseType::NotFound => "FieldValueNotFound",
        }
    }
}

/// One field error of an invalid object.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldCause {
    /// What is wrong.
    pub kind: CauseType,
    /// The field path, e.g. `spec.containers[0].image`.
    pub field: String,
    /// The offending value, when it is shown (Invalid, NotSupported, Duplicate, NotFound).
    pub value: Option<Value>,
    /// Detail after the value: why it is invalid, or the supported values.
    pub detail: String,
}

impl FieldCause {
    /// A required field is missing.
    pub fn required(field: impl Into<String>) -> Self {
        Self::new(CauseType::Required, field, None, "")
    }

    /// A field has an invalid value.
    pub fn invalid(
        field: impl Into<String>,
        value: impl Into<Value>,
        detail: impl Into<String>,
    ) -> Self {
        Self::new(CauseType::Invalid, field, Some(value.into()), detail)
    }

    /// A field has a value outside a fixed set.
    pub fn not_supported(
        field: impl Into<String>,
        value: impl Into<Value>,
        supported: &[&str],
    ) -> Self {
        let list = supported
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ");
        Self::new(
            CauseType::NotSupported,
            field,
            Some(value.into()),
            format!("supported values: {list}"),
        )
    }

    /// A value appears twice where it must be unique.
    pub fn duplicate(field: impl Into<String>, value: impl Into<Value>) -> Self {
        Self::new(CauseType::Duplicate, field, Some(value.into()), "")
    }

    /// A field may not be set or changed.
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(CauseType::Forbidden, field, None, detail)
    }

    /// A generic constructor.
    pub fn new(
        kind: CauseType,
        field: impl Into<String>,
        value: Option<Value>,
        detail: impl Into<String>,
    ) -> Self {
        FieldCause {
            kind,
            field: field.into(),
            value,
            detail: detail.into(),
        }
    }

    /// The message without the field, as in StatusCause.message: `Required value`,
    /// `Invalid value: "x": must be ...`.
    pub fn message(&self) -> String {
        let value = self.value.as_ref().map(render_value);
        let head = match self.kind {
            CauseType::Required => "Required value",
            CauseType::Invalid => "Invalid value",
            CauseType::NotSupported => "Unsupported value",
            CauseType::Duplicate => "Duplicate value",
            CauseType::Forbidden => "Forbidden",
            CauseType::TooLong => "Too long",
            CauseType::TooMany => "Too many",
            CauseType::NotFound => "Not found",
        };
        let mut out = head.to_string();
        if let Some(v) = value {
            out.push_str(": ");
            out.push_str(&v);
        }
        if !self.detail.is_empty() {
            out.push_str(": ");
            out.push_str(&self.detail);
        }
        out
    }
}

impl std::fmt::Display for FieldCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.message())
        } else {
            write!(f, "{}: {}", self.field, self.message())
        }
    }
}

fn render_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

/// An API error: becomes a metav1.Status body with the HTTP code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{reason} ({code}): {message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// metav1.StatusReason, e.g. `NotFound`.
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
    /// The object the error is about: (group, kind or resource, name).
    pub details: Option<Details>,
    /// Field causes, for Invalid.
    pub causes: Vec<FieldCause>,
    /// Seconds the client should wait before retrying (429, 500 on timeouts).
    pub retry_after: Option<u32>,
}

/// The object an error is about.
#[derive(Debug, Clone, PartialEq)]
pub struct Details {
    /// API group of the object.
    pub group: String,
    /// The resource (plural) or kind.
    pub kind: String,
    /// Name of the object.
    pub name: String,
    /// UID, when known.
    pub uid: Option<String>,
}

impl ApiError {
    fn plain(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
            causes: Vec::new(),
            retry_after: None,
        }
    }

    fn with_details(mut self, group: &str, kind: &str, name: &str) -> Self {
        self.details = Some(Details {
            group: group.into(),
            kind: kind.into(),
            name: name.into(),
            uid: None,
        });
        self
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::plain(400, "BadRequest", message)
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> Self {
        Self::plain(401, "Unauthorized", "Unauthorized")
    }

    /// 403 Forbidden, as the authorizer words it.
    pub fn forbidden(group_resource: &str, name: &str, message: impl Into<String>) -> Self {
        let what = if name.is_empty() {
            group_resource.to_string()
        } else {
            format!("{group_resource} \"{name}\"")
        };
        Self::plain(
            403,
            "Forbidden",
            format!("{what} is forbidden: {}", message.into()),
        )
        .with_details(group_of(group_resource), resource_of(group_resource), name)
    }

    /// 404 NotFound for an object: `pods "x" not found`.
    pub fn not_found(group_resource: &str, name: &str) -> Self {
        Self::plain(
            404,
            "NotFound",
            format!("{group_resource} \"{name}\" not found"),
        )
        .with_details(group_of(group_resource), resource_of(group_resource), name)
    }

    /// 404 NotFound for a path that serves nothing.
    pub fn no_route() -> Self {
        Self::plain(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(method: &str, what: &str) -> Self {
        Self::plain(
            405,
            "MethodNotAllowed",
            format!("{method} is not supported on {what}"),
        )
    }

    /// 406 NotAcceptable.
    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::plain(406, "NotAcceptable", message)
    }

    /// 409 AlreadyExists: `pods "x" already exists`.
    pub fn already_exists(group_resource: &str, name: &str) -> Self {
        Self::plain(
            409,
            "AlreadyExists",
            format!("{group_resource} \"{name}\" already exists"),
        )
        .with_details(group_of(group_resource), resource_of(group_resource), name)
    }

    /// 409 Conflict on a stale resourceVersion.
    pub fn conflict(group_resource: &str, name: &str, why: &str) -> Self {
        Self::plain(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {group_resource} \"{name}\": {why}"),
        )
        .with_details(group_of(group_resource), resource_of(group_resource), name)
    }

    /// The `why` of a conflict caused by a stale resourceVersion.
    pub const STALE_OBJECT: &'static str = "the object has been modified; please apply your changes to the latest version and try again";

    /// 410 Gone / Expired for a compacted resourceVersion.
    pub fn gone(message: impl Into<String>) -> Self {
        Self::plain(410, "Expired", message)
    }

    /// 413 RequestEntityTooLarge.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::plain(413, "RequestEntityTooLarge", message)
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::plain(415, "UnsupportedMediaType", message)
    }

    /// 422 Invalid with field causes: `Pod "x" is invalid: spec...: Required value`.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<FieldCause>) -> Self {
        let listed = match causes.as_slice() {
            [one] => one.to_string(),
            many => format!(
                "[{}]",
                many.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let mut e = Self::plain(
            422,
            "Invalid",
            format!("{kind} \"{name}\" is invalid: {listed}"),
        )
        .with_details(group, kind, name);
        e.causes = causes;
        e
    }

    /// 429 TooManyRequests.
    pub fn too_many_requests(message: impl Into<String>, retry_after: u32) -> Self {
        let mut e = Self::plain(429, "TooManyRequests", message);
        e.retry_after = Some(retry_after);
        e
    }

    /// 500 InternalError.
    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self::plain(
            500,
            "InternalError",
            format!("Internal error occurred: {message}"),
        )
    }

    /// 503 ServiceUnavailable.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::plain(503, "ServiceUnavailable", message)
    }

    /// 504 Timeout.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::plain(504, "Timeout", message)
    }

    /// The metav1.Status body.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        let mut details = serde_json::Map::new();
        if let Some(d) = &self.details {
            if !d.name.is_empty() {
                details.insert("name".into(), d.name.clone().into());
            }
            if !d.group.is_empty() {
                details.insert("group".into(), d.group.clone().into());
            }
            details.insert("kind".into(), d.kind.clone().into());
            if let Some(uid) = &d.uid {
                details.insert("uid".into(), uid.clone().into());
            }
        }
        if !self.causes.is_empty() {
            let causes: Vec<Value> = self
                .causes
                .iter()
                .map(|c| json!({"reason": c.kind.reason(), "message": c.message(), "field": c.field}))
                .collect();
            details.insert("causes".into(), causes.into());
        }
        if let Some(secs) = self.retry_after {
            details.insert("retryAfterSeconds".into(), secs.into());
        }
        if !details.is_empty() {
            status["details"] = Value::Object(details);
        }
        status
    }
}

/// The success Status returned by deletes that remove the object at once, and by
/// deletecollection in older clients.
pub fn success(group: &str, kind: &str, name: &str, uid: Option<&str>) -> Value {
    let mut details = json!({"name": name, "kind": kind});
    if !group.is_empty() {
        details["group"] = group.into();
    }
    if let Some(uid) = uid {
        details["uid"] = uid.into();
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}

fn group_of(group_resource: &str) -> &str {
    group_resource.split_once('.').map(|(_, g)| g).unwrap_or("")
}

fn resource_of(group_resource: &str) -> &str {
    group_resource
        .split_once('.')
        .map(|(r, _)| r)
        .unwrap_or(group_resource)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_names_the_group_resource_as_kubectl_prints_it() {
        let e = ApiError::not_found("deployments.apps", "web");
        assert_eq!(e.message, "deployments.apps \"web\" not found");
        let s = e.to_status();
        assert_eq!(s["details"]["group"], "apps");
        assert_eq!(s["details"]["kind"], "deployments");
        assert_eq!(s["code"], 404);
    }

    #[test]
    fn invalid_lists_one_cause_bare_and_several_in_brackets() {
        let one = ApiError::invalid(
            "",
            "Pod",
            "p",
            vec![FieldCause::required("spec.containers[0].image")],
        );
        assert_eq!(
            one.message,
            "Pod \"p\" is invalid: spec.containers[0].image: Required value"
        );
        let two = ApiError::invalid(
            "",
            "Pod",
            "p",
            vec![
                FieldCause::required("spec.containers"),
                FieldCause::invalid("metadata.name", "Bad", "must be lower case"),
            ],
        );
        assert_eq!(
            two.message,
            "Pod \"p\" is invalid: [spec.containers: Required value, metadata.name: Invalid value: \"Bad\": must be lower case]"
        );
        assert_eq!(
            two.to_status()["details"]["causes"][1]["reason"],
            "FieldValueInvalid"
        );
    }

    #[test]
    fn not_supported_lists_the_supported_values() {
        let c = FieldCause::not_supported("spec.restartPolicy", "Sometimes", &["Always", "Never"]);
        assert_eq!(
            c.to_string(),
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"Never\""
        );
    }
}
