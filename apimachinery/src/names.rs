//! Name validation: DNS-1123 labels and subdomains, DNS-1035 labels, qualified names (label and
//! annotation keys), label values and the total size of annotations.
//!
//! Every function returns the list of problems with the wording the upstream API server uses
//! (Kubernetes 1.33), and an empty list when the value is valid. Callers usually join the list
//! with `"; "` (label selectors) or `", "` and wrap it in a field error.

use std::sync::LazyLock;

use regex::Regex;

/// Maximum length of a DNS-1123 label and of a DNS-1035 label.
pub const DNS1123_LABEL_MAX_LENGTH: usize = 63;
/// Maximum length of a DNS-1123 subdomain.
pub const DNS1123_SUBDOMAIN_MAX_LENGTH: usize = 253;
/// Maximum length of the name part of a qualified name.
pub const QUALIFIED_NAME_MAX_LENGTH: usize = 63;
/// Maximum length of a label value.
pub const LABEL_VALUE_MAX_LENGTH: usize = 63;
/// Maximum total size, in bytes, of the keys and values of an object's annotations.
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";

fn dns1123_subdomain_fmt() -> String {
    format!("{DNS1123_LABEL_FMT}(\\.{DNS1123_LABEL_FMT})*")
}

fn label_value_fmt() -> String {
    format!("({QUALIFIED_NAME_FMT})?")
}

fn anchored(fmt: &str) -> Regex {
    Regex::new(&format!("^(?:{fmt})$")).expect("validation regex compiles")
}

static DNS1123_LABEL_RE: LazyLock<Regex> = LazyLock::new(|| anchored(DNS1123_LABEL_FMT));
static DNS1123_SUBDOMAIN_RE: LazyLock<Regex> = LazyLock::new(|| anchored(&dns1123_subdomain_fmt()));
static DNS1035_LABEL_RE: LazyLock<Regex> = LazyLock::new(|| anchored(DNS1035_LABEL_FMT));
static QUALIFIED_NAME_RE: LazyLock<Regex> = LazyLock::new(|| anchored(QUALIFIED_NAME_FMT));
static LABEL_VALUE_RE: LazyLock<Regex> = LazyLock::new(|| anchored(&label_value_fmt()));

/// `must be no more than N characters`.
pub fn max_len_error(length: usize) -> String {
    format!("must be no more than {length} characters")
}

/// `must be non-empty`.
pub fn empty_error() -> String {
    "must be non-empty".to_string()
}

/// A regex failure explained: `<msg> (e.g. 'a' or 'b', regex used for validation is '<re>')`.
pub fn regex_error(msg: &str, re: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{msg} (regex used for validation is '{re}')");
    }
    let examples = examples
        .iter()
        .map(|e| format!("'{e}', "))
        .collect::<Vec<_>>()
        .join(" or ");
    format!("{msg} (e.g. {examples}regex used for validation is '{re}')")
}

/// Errors for a name that must be a DNS-1123 subdomain (most object names); empty when valid.
pub fn dns1123_subdomain(name: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if name.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    if !DNS1123_SUBDOMAIN_RE.is_match(name) {
        errs.push(regex_error(
            DNS1123_SUBDOMAIN_MSG,
            &dns1123_subdomain_fmt(),
            &["example.com"],
        ));
    }
    errs
}

/// Errors for a name that must be a DNS-1123 label (namespaces, ...); empty when valid.
pub fn dns1123_label(name: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if name.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    if !DNS1123_LABEL_RE.is_match(name) {
        if DNS1123_SUBDOMAIN_RE.is_match(name) {
            // A valid subdomain that is not a label: the length is checked above, so dots.
            errs.push("must not contain dots".to_string());
        } else {
            errs.push(regex_error(
                DNS1123_LABEL_MSG,
                DNS1123_LABEL_FMT,
                &["my-name", "123-abc"],
            ));
        }
    }
    errs
}

/// Errors for a name that must be a DNS-1035 label (service names); empty when valid.
pub fn dns1035_label(name: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if name.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    if !DNS1035_LABEL_RE.is_match(name) {
        errs.push(regex_error(
            DNS1035_LABEL_MSG,
            DNS1035_LABEL_FMT,
            &["my-name", "abc-123"],
        ));
    }
    errs
}

/// Errors for a qualified name (label keys, annotation keys, finalizers...): an optional DNS-1123
/// subdomain prefix and `/`, then a name of at most 63 characters. Empty when valid.
pub fn qualified_name(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push(format!("prefix part {}", empty_error()));
            } else {
                errs.extend(
                    dns1123_subdomain(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(
                    QUALIFIED_NAME_MSG,
                    QUALIFIED_NAME_FMT,
                    &["MyName", "my.name", "123-abc"]
                )
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push(format!("name part {}", empty_error()));
    } else if name.len() > QUALIFIED_NAME_MAX_LENGTH {
        errs.push(format!(
            "name part {}",
            max_len_error(QUALIFIED_NAME_MAX_LENGTH)
        ));
    }
    if !QUALIFIED_NAME_RE.is_match(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_MSG,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

/// Errors for a label value (empty, or at most 63 alphanumerics, `-`, `_`, `.` starting and
/// ending with an alphanumeric). Empty when valid.
pub fn label_value(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > LABEL_VALUE_MAX_LENGTH {
        errs.push(max_len_error(LABEL_VALUE_MAX_LENGTH));
    }
    if !LABEL_VALUE_RE.is_match(value) {
        errs.push(regex_error(
            LABEL_VALUE_MSG,
            &label_value_fmt(),
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// The total size of annotations (the bytes of every key and value).
pub fn annotations_total_size<'a>(
    annotations: impl IntoIterator<Item = (&'a String, &'a serde_json::Value)>,
) -> usize {
    annotations
        .into_iter()
        .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
        .sum()
}

/// The detail of the `TooLong` error on `metadata.annotations` when the annotations exceed
/// 256 KiB in total, as upstream 1.33 words it (`Too long: may not be more than 262144 bytes`);
/// `None` when they fit.
pub fn annotations_size(
    annotations: &serde_json::Map<String, serde_json::Value>,
) -> Option<String> {
    if annotations_total_size(annotations) > TOTAL_ANNOTATION_SIZE_LIMIT {
        Some(format!(
            "may not be more than {TOTAL_ANNOTATION_SIZE_LIMIT} bytes"
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Map, Value, json};

    #[test]
    fn a_simple_subdomain_is_valid() {
        assert!(dns1123_subdomain("example.com").is_empty());
        assert!(dns1123_subdomain("a").is_empty());
        assert!(dns1123_subdomain("0-a.b-1").is_empty());
    }

    #[test]
    fn a_subdomain_with_upper_case_is_rejected_with_upstream_wording() {
        assert_eq!(
            dns1123_subdomain("Example.com"),
            vec![
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
            ]
        );
    }

    #[test]
    fn an_empty_subdomain_is_rejected() {
        assert_eq!(dns1123_subdomain("").len(), 1);
    }

    #[test]
    fn a_too_long_subdomain_reports_the_length() {
        let name = "a".repeat(254);
        assert_eq!(
            dns1123_subdomain(&name),
            vec!["must be no more than 253 characters"]
        );
        assert!(dns1123_subdomain(&"a".repeat(253)).is_empty());
    }

    #[test]
    fn a_label_with_dots_is_told_not_to_contain_dots() {
        assert_eq!(dns1123_label("a.b"), vec!["must not contain dots"]);
    }

    #[test]
    fn a_label_with_bad_characters_gets_the_label_regex() {
        assert_eq!(
            dns1123_label("a_b"),
            vec![
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
            ]
        );
        assert!(dns1123_label("123-abc").is_empty());
        assert_eq!(
            dns1123_label(&"a".repeat(64)),
            vec!["must be no more than 63 characters"]
        );
    }

    #[test]
    fn a_dns1035_label_must_start_with_a_letter() {
        assert!(dns1035_label("my-svc").is_empty());
        assert_eq!(
            dns1035_label("1svc"),
            vec![
                "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
            ]
        );
    }

    #[test]
    fn qualified_names_accept_an_optional_prefix() {
        assert!(qualified_name("app").is_empty());
        assert!(qualified_name("My.Name_1").is_empty());
        assert!(qualified_name("example.com/app").is_empty());
        assert!(qualified_name("kubernetes.io/metadata.name").is_empty());
    }

    #[test]
    fn a_qualified_name_with_an_empty_prefix_or_name_is_rejected() {
        assert_eq!(qualified_name("/a"), vec!["prefix part must be non-empty"]);
        let errs = qualified_name("example.com/");
        assert_eq!(errs[0], "name part must be non-empty");
        assert!(errs[1].starts_with("name part must consist of alphanumeric characters"));
    }

    #[test]
    fn a_qualified_name_with_two_slashes_gets_the_whole_format() {
        assert_eq!(
            qualified_name("a/b/c"),
            vec![
                "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            ]
        );
    }

    #[test]
    fn a_qualified_name_with_a_bad_prefix_prefixes_each_message() {
        let errs = qualified_name("Example.com/a");
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("prefix part a lowercase RFC 1123 subdomain"));
    }

    #[test]
    fn a_long_qualified_name_reports_the_name_part() {
        assert_eq!(
            qualified_name(&"a".repeat(64)),
            vec!["name part must be no more than 63 characters"]
        );
    }

    #[test]
    fn label_values_may_be_empty_but_not_punctuated_at_the_ends() {
        assert!(label_value("").is_empty());
        assert!(label_value("v1.2_3-a").is_empty());
        assert_eq!(
            label_value("-a"),
            vec![
                "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
            ]
        );
        assert_eq!(
            label_value(&"a".repeat(64)),
            vec!["must be no more than 63 characters"]
        );
    }

    #[test]
    fn annotations_over_256_kib_are_too_long() {
        let mut small = Map::new();
        small.insert("a".into(), json!("b"));
        assert_eq!(annotations_size(&small), None);
        let mut big = Map::new();
        big.insert(
            "k".into(),
            Value::String("x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT)),
        );
        assert_eq!(
            annotations_size(&big).as_deref(),
            Some("may not be more than 262144 bytes")
        );
        let mut exact = Map::new();
        exact.insert(
            "k".into(),
            Value::String("x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT - 1)),
        );
        assert_eq!(annotations_size(&exact), None);
    }

    proptest! {
        #[test]
        fn name_validators_never_panic(s in ".*") {
            let _ = dns1123_subdomain(&s);
            let _ = dns1123_label(&s);
            let _ = dns1035_label(&s);
            let _ = qualified_name(&s);
            let _ = label_value(&s);
        }

        #[test]
        fn generated_labels_are_valid(s in "[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?") {
            prop_assert!(dns1123_label(&s).is_empty());
            prop_assert!(dns1123_subdomain(&s).is_empty());
            prop_assert!(label_value(&s).is_empty());
            prop_assert!(qualified_name(&s).is_empty());
        }
    }
}
