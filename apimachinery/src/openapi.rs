//! OpenAPI v3 (and v2) documents of the served resources. (Being written.)

use serde_json::{Value, json};

/// The `/openapi/v3` root.
pub fn v3_root() -> Value {
    json!({"paths": {}})
}

/// The OpenAPI v3 document of one group version.
pub fn v3_group_version(_group: &str, _version: &str) -> Option<Value> {
    None
}

/// The Swagger 2.0 document.
pub fn v2() -> Value {
    json!({"swagger": "2.0", "paths": {}, "definitions": {}})
}
