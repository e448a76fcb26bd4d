//! Name validation: DNS-1123 labels and subdomains, DNS-1035 labels, qualified names (label
//! and annotation keys) and label values. Each check returns the list of problems, worded as
//! the upstream API server words them (kubectl prints them verbatim); empty when valid.

use std::sync::OnceLock;

use regex::Regex;

fn regex(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(&format!("^(?:{pattern})$")).expect("static pattern"))
}

const LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const SUBDOMAIN_FMT: &str = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1035_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const QUALIFIED_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";

fn too_long(max: usize) -> String {
    format!("must be no more than {max} characters")
}

/// Problems of a name that must be a DNS-1123 label (at most 63 characters).
pub fn dns1123_label(name: &str) -> Vec<String> {
    static RE: OnceLock<Regex> = OnceLock::new();
    let mut errs = Vec::new();
    if name.len() > 63 {
        errs.push(too_long(63));
    }
    if !regex(&RE, LABEL_FMT).is_match(name) {
        errs.push(format!(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '{LABEL_FMT}')"
        ));
    }
    errs
}

/// Problems of a name that must be a DNS-1123 subdomain (at most 253 characters).
pub fn dns1123_subdomain(name: &str) -> Vec<String> {
    static RE: OnceLock<Regex> = OnceLock::new();
    let mut errs = Vec::new();
    if name.len() > 253 {
        errs.push(too_long(253));
    }
    if !regex(&RE, SUBDOMAIN_FMT).is_match(name) {
        errs.push(format!(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '{SUBDOMAIN_FMT}')"
        ));
    }
    errs
}

/// Problems of a name that must be a DNS-1035 label (Services).
pub fn dns1035_label(name: &str) -> Vec<String> {
    static RE: OnceLock<Regex> = OnceLock::new();
    let mut errs = Vec::new();
    if name.len() > 63 {
        errs.push(too_long(63));
    }
    if !regex(&RE, DNS1035_FMT).is_match(name) {
        errs.push(format!(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '{DNS1035_FMT}')"
        ));
    }
    errs
}

/// Problems of a qualified name: an optional DNS subdomain prefix and `/`, then a name of at
/// most 63 characters (label and annotation keys).
pub fn qualified_name(value: &str) -> Vec<String> {
    static RE: OnceLock<Regex> = OnceLock::new();
    let mut errs = Vec::new();
    let (prefix, name) = match value.split_once('/') {
        Some((p, n)) if !n.contains('/') => (Some(p), n),
        Some(_) => {
            errs.push(format!(
                "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '{QUALIFIED_FMT}') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            ));
            return errs;
        }
        None => (None, value),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            errs.push("prefix part must be non-empty".into());
        } else {
            errs.extend(
                dns1123_subdomain(prefix)
                    .into_iter()
                    .map(|e| format!("prefix part {e}")),
            );
        }
    }
    if name.is_empty() {
        errs.push("name part must be non-empty".into());
    } else if name.len() > 63 {
        errs.push(format!("name part {}", too_long(63)));
    }
    if !name.is_empty() && !regex(&RE, QUALIFIED_FMT).is_match(name) {
        errs.push(format!(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '{QUALIFIED_FMT}')"
        ));
    }
    errs
}

/// Problems of a label value (may be empty).
pub fn label_value(value: &str) -> Vec<String> {
    static RE: OnceLock<Regex> = OnceLock::new();
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push(too_long(63));
    }
    if !regex(&RE, LABEL_VALUE_FMT).is_match(value) {
        errs.push(format!(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '{LABEL_VALUE_FMT}')"
        ));
    }
    errs
}

/// The most bytes all annotations of an object may take together.
pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn subdomains_allow_dots_and_labels_do_not() {
        assert!(dns1123_subdomain("example.com").is_empty());
        assert!(!dns1123_label("example.com").is_empty());
        assert!(dns1123_label("my-name").is_empty());
        assert!(!dns1123_subdomain("Bad_Name").is_empty());
        assert!(
            dns1123_subdomain(&"a".repeat(254))
                .contains(&"must be no more than 253 characters".to_string())
        );
    }

    #[test]
    fn dns1035_labels_start_with_a_letter() {
        assert!(dns1035_label("web").is_empty());
        assert!(!dns1035_label("1web").is_empty());
    }

    #[test]
    fn qualified_names_take_an_optional_prefix() {
        assert!(qualified_name("app").is_empty());
        assert!(qualified_name("app.kubernetes.io/name").is_empty());
        assert!(!qualified_name("Bad Prefix/name").is_empty());
        assert!(!qualified_name("a/b/c").is_empty());
        assert_eq!(qualified_name("/x"), ["prefix part must be non-empty"]);
        assert!(!qualified_name("-x").is_empty());
    }

    #[test]
    fn label_values_may_be_empty_but_not_malformed() {
        assert!(label_value("").is_empty());
        assert!(label_value("v1.2_x").is_empty());
        assert!(!label_value("-bad").is_empty());
        assert!(!label_value(&"a".repeat(64)).is_empty());
    }

    proptest! {
        #[test]
        fn checks_never_panic(s in ".{0,80}") {
            let _ = (dns1123_label(&s), dns1123_subdomain(&s), dns1035_label(&s), qualified_name(&s), label_value(&s));
        }
    }
}
