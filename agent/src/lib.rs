//! The node agent (kubelet role) as a library: the Node and its heartbeat, pods driven through
//! a CRI runtime, the runtime client, and the kubelet API (logs, exec, attach, port-forward).

pub mod logrotate;
pub mod metrics;
pub mod node;
pub mod pod;
pub mod runtime;
pub mod server;
