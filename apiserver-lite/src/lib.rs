//! apiserver-lite: a Kubernetes API server that kubectl, client-go and kube-rs use unchanged,
//! on an embedded SQLite store or etcd.
//!
//! Layers, outermost first: [`server`] (TLS, HTTP, limits, shutdown) → [`auth`] →
//! [`api`] (routing, discovery, the verbs) → [`registry`] (per-kind rules) → [`storage`].

pub mod auth;
pub mod pki;
pub mod storage;
