//! The patch formats: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and Kubernetes
//! strategic merge patch.
//!
//! JSON patch and merge patch come from the json-patch crate. Strategic merge patch is a merge
//! patch in which some lists merge element by element: containers on their `name`, ports on
//! `containerPort`, finalizers as a set, and so on. Which lists those are comes from the
//! k8s-openapi JSON schema of the kind (its structure) and a table of the upstream
//! `patchStrategy` / `patchMergeKey` tags ([`merge_keys`]). The directives `$patch`
//! (`replace`, `delete`, `merge`), `$retainKeys`, `$deleteFromPrimitiveList/<field>` and
//! `$setElementOrder/<field>` are honoured and never appear in the result.

mod merge_keys;
mod strategic;

use serde_json::Value;

pub use merge_keys::definitions;

/// Why a patch could not be applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PatchError {
    /// The patch document is not valid for its format (malformed operations, a merge patch
    /// that is not an object, a malformed directive).
    #[error("{0}")]
    Invalid(String),
    /// A well-formed JSON patch could not be applied to this object: a `test` operation did
    /// not match, or a path does not exist.
    #[error("the server rejected our request due to an error in our request: {0}")]
    Failed(String),
}

/// Applies a JSON patch (RFC 6902), a list of operations, to `doc`.
pub fn json_patch(doc: &Value, patch: &Value) -> Result<Value, PatchError> {
    if !patch.is_array() {
        return Err(PatchError::Invalid(
            "a JSON patch must be a list of operations".into(),
        ));
    }
    let ops: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| PatchError::Invalid(format!("invalid JSON patch: {e}")))?;
    let mut out = doc.clone();
    json_patch::patch(&mut out, &ops).map_err(|e| {
        let operation = ops.0.get(e.operation);
        let message = match (&e.kind, operation) {
            (
                json_patch::PatchErrorKind::TestFailed,
                Some(json_patch::PatchOperation::Test(test)),
            ) => {
                // The document as the operations before the failed test left it.
                let mut before = doc.clone();
                let _ = json_patch::patch(&mut before, &ops.0[..e.operation]);
                let found = before
                    .pointer(test.path.as_str())
                    .map_or_else(|| "nothing".to_string(), Value::to_string);
                format!(
                    "test operation {} failed: the value at {:?} is {found}, not {}",
                    e.operation,
                    test.path.as_str(),
                    test.value
                )
            }
            _ => format!(
                "operation {} ({}) failed at path {:?}: {}",
                e.operation,
                operation.map_or("?", op_name),
                e.path.as_str(),
                e.kind
            ),
        };
        PatchError::Failed(message)
    })?;
    Ok(out)
}

fn op_name(op: &json_patch::PatchOperation) -> &'static str {
    use json_patch::PatchOperation as Op;
    match op {
        Op::Add(_) => "add",
        Op::Remove(_) => "remove",
        Op::Replace(_) => "replace",
        Op::Move(_) => "move",
        Op::Copy(_) => "copy",
        Op::Test(_) => "test",
    }
}

/// Applies a JSON merge patch (RFC 7386) to `doc`; the patch must be an object.
pub fn merge_patch(doc: &Value, patch: &Value) -> Result<Value, PatchError> {
    if !patch.is_object() {
        return Err(PatchError::Invalid(format!(
            "a merge patch must be a JSON object, not {}",
            kind_of(patch)
        )));
    }
    let mut out = doc.clone();
    json_patch::merge(&mut out, patch);
    Ok(out)
}

/// Applies a strategic merge patch to `doc`, an object of `kind` in `group` ("" for core).
///
/// Kinds that are not served (and so have no known structure) get merge patch semantics for
/// everything but their `metadata`: maps merge, lists are replaced, and the directives are
/// still honoured.
pub fn strategic_merge_patch(
    group: &str,
    kind: &str,
    doc: &Value,
    patch: &Value,
) -> Result<Value, PatchError> {
    let Value::Object(patch) = patch else {
        return Err(PatchError::Invalid(format!(
            "a strategic merge patch must be a JSON object, not {}",
            kind_of(patch)
        )));
    };
    strategic::apply(doc, patch, merge_keys::Ty::of_kind(group, kind))
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests;
