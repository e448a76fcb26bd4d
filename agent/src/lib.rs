//! The node agent (kubelet role) as a library: the Node and its heartbeat, pods driven through
//! a CRI runtime, and the runtime client.

pub mod node;
pub mod pod;
pub mod runtime;
