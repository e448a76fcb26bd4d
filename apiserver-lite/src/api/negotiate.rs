//! Content negotiation: which representation the client's `Accept` header asks for.
//!
//! Clients list alternatives in preference order (`application/json;as=Table;v=v1;g=meta.k8s.io,
//! application/json`); the first one this server can produce wins. Protobuf is not served, so a
//! client that accepts nothing else gets 406.

use apimachinery::status::ApiError;

/// A representation the server can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Plain JSON.
    Json,
    /// YAML.
    Yaml,
    /// A meta.k8s.io Table of the given version (`v1` or `v1beta1`).
    Table(&'static str),
    /// PartialObjectMetadata(List) of meta.k8s.io/v1.
    Metadata,
    /// Aggregated discovery, apidiscovery.k8s.io of the given version.
    Discovery(&'static str),
}

impl Format {
    /// The Content-Type of a response in this format.
    pub fn content_type(self) -> String {
        match self {
            Format::Json => "application/json".into(),
            Format::Yaml => "application/yaml".into(),
            Format::Table(v) => format!("application/json;as=Table;v={v};g=meta.k8s.io"),
            Format::Metadata => {
                "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io".into()
            }
            Format::Discovery(v) => {
                format!("application/json;g=apidiscovery.k8s.io;v={v};as=APIGroupDiscoveryList")
            }
        }
    }
}

/// What a request may receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowed {
    /// An object or list: JSON, YAML, Table, metadata.
    Objects,
    /// A discovery document: JSON or aggregated discovery.
    Discovery,
    /// JSON only (watch streams, Status).
    JsonOnly,
}

/// Picks the format for an `Accept` header.
pub fn negotiate(accept: Option<&str>, allowed: Allowed) -> Result<Format, ApiError> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Ok(Format::Json);
    };
    for option in accept.split(',') {
        let mut parts = option.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let mut params = std::collections::HashMap::new();
        for p in parts {
            if let Some((k, v)) = p.split_once('=') {
                params.insert(
                    k.trim().to_ascii_lowercase(),
                    v.trim().trim_matches('"').to_string(),
                );
            }
        }
        let as_ = params.get("as").map(String::as_str);
        let group = params.get("g").map(String::as_str);
        let version = params.get("v").map(String::as_str);
        let picked = match (media.as_str(), as_) {
            ("application/json" | "application/*" | "*/*", None) => Some(Format::Json),
            ("application/yaml", None) if allowed == Allowed::Objects => Some(Format::Yaml),
            ("application/json", Some("Table"))
                if allowed == Allowed::Objects && group == Some("meta.k8s.io") =>
            {
                match version {
                    Some("v1") => Some(Format::Table("v1")),
                    Some("v1beta1") => Some(Format::Table("v1beta1")),
                    _ => None,
                }
            }
            ("application/json", Some("PartialObjectMetadata" | "PartialObjectMetadataList"))
                if allowed == Allowed::Objects
                    && group == Some("meta.k8s.io")
                    && version == Some("v1") =>
            {
                Some(Format::Metadata)
            }
            ("application/json", Some("APIGroupDiscoveryList"))
                if allowed == Allowed::Discovery && group == Some("apidiscovery.k8s.io") =>
            {
                match version {
                    Some("v2") => Some(Format::Discovery("v2")),
                    Some("v2beta1") => Some(Format::Discovery("v2beta1")),
                    _ => None,
                }
            }
            _ => None,
        };
        if let Some(format) = picked {
            return Ok(format);
        }
    }
    Err(ApiError::not_acceptable(format!(
        "only the following media types are accepted: application/json, application/yaml (asked for {accept})"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_get_receives_a_v1_table() {
        let accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(
            negotiate(Some(accept), Allowed::Objects).unwrap(),
            Format::Table("v1")
        );
        assert_eq!(
            negotiate(Some(accept), Allowed::JsonOnly).unwrap(),
            Format::Json
        );
    }

    #[test]
    fn aggregated_discovery_is_picked_in_order_and_protobuf_alone_is_refused() {
        let accept =
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";
        assert_eq!(
            negotiate(Some(accept), Allowed::Discovery).unwrap(),
            Format::Discovery("v2")
        );
        assert_eq!(
            negotiate(
                Some("application/vnd.kubernetes.protobuf"),
                Allowed::Objects
            )
            .unwrap_err()
            .code,
            406
        );
        assert_eq!(
            negotiate(
                Some("application/vnd.kubernetes.protobuf, */*"),
                Allowed::Objects
            )
            .unwrap(),
            Format::Json
        );
        assert_eq!(negotiate(None, Allowed::Objects).unwrap(), Format::Json);
    }
}
