//! Property tests: arbitrary paths, queries, headers and bodies never panic the request
//! decoders (path parsing, content negotiation, continue tokens, schema checks).

use proptest::prelude::*;
use serde_json::Value;

use super::negotiate::{Allowed, negotiate};
use super::objects::fuzz_entry_points as entry;
use super::request::{Query, parse};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z$]{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn request_paths_and_queries_never_panic(path in "(/[a-z0-9.%-]{0,12}){0,8}/?", query in ".{0,64}", method in prop::sample::select(vec!["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])) {
        let method = http::Method::from_bytes(method.as_bytes()).unwrap();
        let _ = parse(&method, &path, Some(&query));
        let q = Query::parse(Some(&query));
        let _ = q.dry_run();
        let _ = q.int("limit");
    }

    #[test]
    fn resource_paths_of_every_served_resource_parse(idx in 0usize..apimachinery::resources::RESOURCES.len(), ns in "[a-z]{1,8}", name in "[a-z0-9-]{1,12}") {
        let r = &apimachinery::resources::RESOURCES[idx];
        let base = if r.group.is_empty() { format!("/api/{}", r.version) } else { format!("/apis/{}/{}", r.group, r.version) };
        let path = if r.namespaced { format!("{base}/namespaces/{ns}/{}/{name}", r.plural) } else { format!("{base}/{}/{name}", r.plural) };
        prop_assert!(parse(&http::Method::GET, &path, None).is_ok(), "{}", path);
    }

    #[test]
    fn protobuf_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..200)) {
        let mut framed = b"k8s\0".to_vec();
        framed.extend(&body);
        let _ = super::protobuf::decode(&framed);
        let _ = super::protobuf::decode(&body);
    }

    #[test]
    fn accept_headers_never_panic(accept in ".{0,120}") {
        let _ = negotiate(Some(&accept), Allowed::Objects);
        let _ = negotiate(Some(&accept), Allowed::Discovery);
    }

    #[test]
    fn continue_tokens_never_panic(token in ".{0,80}") {
        let _ = entry::decode_continue(&token, "/registry/pods/");
    }

    #[test]
    fn arbitrary_bodies_never_panic_the_schema_check(body in json_value(), idx in 0usize..apimachinery::resources::RESOURCES.len()) {
        let r = &apimachinery::resources::RESOURCES[idx];
        let mut obj = body.clone();
        if let Value::Object(m) = &mut obj {
            m.insert("kind".into(), r.kind.into());
            m.insert("apiVersion".into(), r.api_version().into());
        }
        let _ = entry::check_schema(r, body, &Query::default());
        let _ = entry::check_schema(r, obj, &Query::parse(Some("fieldValidation=Strict")));
    }
}
