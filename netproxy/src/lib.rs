//! netproxy: the node's service proxy in the role of kube-proxy. Services and EndpointSlices
//! (through kube-rs reflectors) become a pure model ([`model`]), the model becomes an
//! nftables ruleset or delta ([`rules`]), and thin layers apply it ([`apply`]) on the
//! schedule of an explicit state machine ([`sync`]); [`http`] serves /healthz and /metrics.

pub mod apply;
pub mod healthcheck;
pub mod http;
pub mod model;
pub mod routes;
pub mod rules;
pub mod sync;
