//! OpenAPI v3 (and v2) documents of the served resources. (Being written.)

use serde_json::{Value, json};

/// The `/openapi/v3` root.
pub fn v3_root() -> Value {
    json!({"paths": {}})
}
