//! The CRI v1 runtime as a library: the image store and the gRPC services over it.

pub mod image;
pub mod service;
