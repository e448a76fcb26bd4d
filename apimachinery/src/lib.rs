//! Kubernetes API machinery with no I/O.
//!
//! Everything here is a pure function of its inputs so that it can be unit-tested exhaustively:
//! the table of served resources, label and field selectors, name validation, the three patch
//! formats, defaulting and validation of the built-in kinds, server-side table printing,
//! metav1.Status errors and the OpenAPI documents. The API server (`apiserver-lite`) wires
//! these to storage and HTTP; the controllers and the agent reuse the selectors.

/// The Kubernetes version whose API this workspace serves.
pub const KUBERNETES_VERSION: &str = "v1.33.0";

pub mod cron;
pub mod defaults;
pub mod fields;
pub mod meta;
pub mod names;
pub mod openapi;
pub mod patch;
pub mod printers;
pub mod quantity;
pub mod resources;
pub mod scheduling;
pub mod selector;
pub mod status;
pub mod validation;
