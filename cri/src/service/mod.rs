//! The CRI v1 gRPC services.

pub mod image;
