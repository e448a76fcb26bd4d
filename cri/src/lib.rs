//! A CRI v1 container runtime: pod sandboxes as pinned namespaces on a node bridge, containers
//! as OCI bundles run by an OCI runtime (runc by default) under a small monitor process that
//! holds their stdio, writes CRI logs and records exit codes, and a content-addressed image
//! store. The gRPC handlers in `service` only translate and delegate; everything touching the
//! OS sits behind narrow traits.

pub mod container;
pub mod disk;
pub mod image;
pub mod images;
pub mod persist;
pub mod runtime;
pub mod sandbox;
pub mod server;
pub mod service;
pub mod stats;
pub mod streaming;
