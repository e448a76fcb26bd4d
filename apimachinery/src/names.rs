//! Name validation: DNS-1123 labels and subdomains, qualified names, label values.
//! (Being written.)

/// Errors for a name that must be a DNS-1123 subdomain; empty when valid.
pub fn dns1123_subdomain(_name: &str) -> Vec<String> {
    Vec::new()
}

/// Errors for a name that must be a DNS-1123 label; empty when valid.
pub fn dns1123_label(_name: &str) -> Vec<String> {
    Vec::new()
}
