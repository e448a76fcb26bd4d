//! apiserver-lite: a Kubernetes API server that real clients use unchanged.
