//! The patch formats: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and Kubernetes
//! strategic merge patch. (Being written.)

use serde_json::Value;

/// Why a patch could not be applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PatchError {
    /// The patch document is not valid for its format.
    #[error("{0}")]
    Invalid(String),
}

/// Applies a JSON patch.
pub fn json_patch(_doc: &Value, _patch: &Value) -> Result<Value, PatchError> {
    Err(PatchError::Invalid("json patch not supported yet".into()))
}

/// Applies a JSON merge patch.
pub fn merge_patch(_doc: &Value, _patch: &Value) -> Result<Value, PatchError> {
    Err(PatchError::Invalid("merge patch not supported yet".into()))
}

/// Applies a strategic merge patch to an object of the given kind.
pub fn strategic_merge_patch(
    _group: &str,
    _kind: &str,
    _doc: &Value,
    _patch: &Value,
) -> Result<Value, PatchError> {
    Err(PatchError::Invalid(
        "strategic merge patch not supported yet".into(),
    ))
}
