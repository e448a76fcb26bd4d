//! apiserver-lite: a Kubernetes API server that kubectl, client-go and kube-rs use unchanged,
//! on an embedded SQLite store or etcd.
//!
//! Layers, outermost first: [`server`] (TLS, HTTP, limits, shutdown) → [`auth`] → [`api`]
//! (routing, discovery, the verbs) → [`admission`] and [`registry`] (per-kind rules) →
//! [`storage`]. [`nodeproxy`] carries the pod subresources served by kubelets (log, exec,
//! attach, port-forward) past the API layer. [`bootstrap`] and [`namespaces`] are the server's own background work;
//! [`scheduler`] is an ordinary API client that runs in the same process by default, as are
//! [`controllers`] and the cluster DNS ([`dns`]).

pub mod admission;
pub mod api;
pub mod auth;
pub mod bootstrap;
pub mod controllers;
pub mod conversion;
pub mod dns;
pub mod leader;
pub mod namespaces;
pub mod nodeproxy;
pub mod pki;
pub mod registry;
pub mod scheduler;
pub mod server;
pub mod serviceaccount;
pub mod storage;
