//! Upstream defaulting of the built-in kinds. (Being written.)

use serde_json::Value;

/// Fills in the defaults of an object of the given kind, as the upstream API server does on
/// create and update.
pub fn apply(_group: &str, _kind: &str, _obj: &mut Value) {}
