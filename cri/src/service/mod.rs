//! The CRI v1 gRPC services: handlers translate requests into runtime and image-store calls
//! and errors into gRPC statuses, with no logic of their own.

pub mod image;
pub mod runtime;
pub mod stats;
