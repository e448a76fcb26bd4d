//! What a request asks for: the path parsed into a resource request (group, version,
//! resource, namespace, name, subresource, verb) or a non-resource path, and the query
//! parameters the verbs understand.

use std::collections::HashMap;

use apimachinery::resources::{self, ResourceInfo, Subresource};
use apimachinery::status::ApiError;

/// The verb of a resource request, as authorization and audit name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// GET of one object.
    Get,
    /// GET of a collection.
    List,
    /// GET of a collection with `watch=true`, or under `/watch/`.
    Watch,
    /// POST.
    Create,
    /// PUT.
    Update,
    /// PATCH.
    Patch,
    /// DELETE of one object.
    Delete,
    /// DELETE of a collection.
    DeleteCollection,
}

impl Verb {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
        }
    }
}

/// A request for a resource.
#[derive(Debug, Clone)]
pub struct ResourceRequest {
    /// The resource served.
    pub resource: &'static ResourceInfo,
    /// The namespace in the path; `None` for cluster-scoped resources and lists across all
    /// namespaces.
    pub namespace: Option<String>,
    /// The object name; `None` for collections.
    pub name: Option<String>,
    /// The subresource, if any.
    pub subresource: Option<Subresource>,
    /// The verb.
    pub verb: Verb,
    /// Query parameters.
    pub query: Query,
}

impl ResourceRequest {
    /// `pods`, `deployments.apps` — the name errors use.
    pub fn group_resource(&self) -> String {
        self.resource.group_resource()
    }
}

/// What a path is.
#[derive(Debug, Clone)]
pub enum Target {
    /// A resource request.
    Resource(ResourceRequest),
    /// `/api`.
    CoreVersions,
    /// `/apis`.
    Groups,
    /// `/apis/<group>`.
    Group(String),
    /// `/api/v1` or `/apis/<group>/<version>`.
    GroupVersion(String, String),
    /// Anything else: health, version, OpenAPI, or nothing.
    NonResource(String),
}

/// Query parameters, decoded once.
#[derive(Debug, Clone, Default)]
pub struct Query {
    params: HashMap<String, String>,
}

impl Query {
    /// Parses the query string.
    pub fn parse(query: Option<&str>) -> Self {
        let params = query
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        Query { params }
    }

    /// A parameter's value, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }

    /// A non-empty parameter's value.
    pub fn non_empty(&self, key: &str) -> Option<&str> {
        self.get(key).filter(|v| !v.is_empty())
    }

    /// A boolean parameter (`true`/`1`).
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1" | "True"))
    }

    /// An integer parameter; a malformed one is a 400.
    pub fn int(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.non_empty(key) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                ApiError::bad_request(format!("invalid value for {key}: {v:?} is not an integer"))
            }),
        }
    }

    /// Whether `dryRun=All` was asked for; any other value is a 400.
    pub fn dry_run(&self) -> Result<bool, ApiError> {
        match self.get("dryRun") {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "Invalid dryRun value: {other:?}: supported values: \"All\""
            ))),
        }
    }
}

/// Parses a request path and method.
pub fn parse(method: &http::Method, path: &str, query: Option<&str>) -> Result<Target, ApiError> {
    let trimmed = path.trim_matches('/');
    let mut parts: Vec<&str> = trimmed.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api"] => return Ok(Target::CoreVersions),
        ["apis"] => return Ok(Target::Groups),
        ["apis", g] => return Ok(Target::Group(g.to_string())),
        ["api", v] => return Ok(Target::GroupVersion(String::new(), v.to_string())),
        ["apis", g, v] => return Ok(Target::GroupVersion(g.to_string(), v.to_string())),
        ["api", v, ..] => {
            let v = v.to_string();
            parts.drain(..2);
            (String::new(), v, parts)
        }
        ["apis", g, v, ..] => {
            let (g, v) = (g.to_string(), v.to_string());
            parts.drain(..3);
            (g, v, parts)
        }
        _ => return Ok(Target::NonResource(path.to_string())),
    };
    let mut rest: Vec<String> = rest.iter().map(|s| percent_decode(s)).collect();
    let mut watch_path = false;
    if rest.first().map(String::as_str) == Some("watch") {
        watch_path = true;
        rest.remove(0);
    }
    let mut namespace = None;
    if rest.len() >= 2 && rest[0] == "namespaces" {
        // `/namespaces/{ns}/status` is the namespace's own subresource, not a resource in it.
        let own_subresource = rest.len() == 3 && matches!(rest[2].as_str(), "status" | "finalize");
        if rest.len() > 2 && !own_subresource {
            namespace = Some(rest[1].clone());
            rest.drain(..2);
        }
    }
    let (plural, name, sub) = match rest.as_slice() {
        [r] => (r.clone(), None, None),
        [r, n] => (r.clone(), Some(n.clone()), None),
        [r, n, s] => (r.clone(), Some(n.clone()), Some(s.clone())),
        _ => return Err(ApiError::no_route()),
    };
    let resource = resources::find(&group, &version, &plural).ok_or_else(ApiError::no_route)?;
    if namespace.is_some() && !resource.namespaced {
        return Err(ApiError::no_route());
    }
    let subresource = match sub.as_deref() {
        None => None,
        Some("finalize") if resource.plural == "namespaces" => Some(Subresource::Status),
        Some(s) => Some(
            resource
                .subresources
                .iter()
                .copied()
                .find(|candidate| candidate.name() == s)
                .ok_or_else(ApiError::no_route)?,
        ),
    };
    let query = Query::parse(query);
    let verb = match (method.as_str(), name.is_some()) {
        ("GET" | "HEAD", _) if watch_path || query.flag("watch") => Verb::Watch,
        ("GET" | "HEAD", true) => Verb::Get,
        ("GET" | "HEAD", false) => Verb::List,
        ("POST", _) => Verb::Create,
        ("PUT", true) => Verb::Update,
        ("PATCH", true) => Verb::Patch,
        ("DELETE", true) => Verb::Delete,
        ("DELETE", false) => Verb::DeleteCollection,
        (m, _) => {
            return Err(ApiError::method_not_allowed(m, &resource.group_resource()));
        }
    };
    if resource.namespaced && namespace.is_none() && !matches!(verb, Verb::List | Verb::Watch) {
        // Creating, reading or changing a namespaced object needs its namespace in the path.
        return Err(ApiError::no_route());
    }
    if let Some(sub) = subresource {
        let allowed = match sub {
            Subresource::Binding | Subresource::Eviction | Subresource::Token => {
                verb == Verb::Create
            }
            _ => matches!(verb, Verb::Get | Verb::Update | Verb::Patch),
        };
        if !allowed {
            return Err(ApiError::method_not_allowed(
                method.as_str(),
                &format!("{}/{}", resource.plural, sub.name()),
            ));
        }
    }
    if name.is_none() && matches!(verb, Verb::Create) && subresource.is_some() {
        return Err(ApiError::no_route());
    }
    Ok(Target::Resource(ResourceRequest {
        resource,
        namespace,
        name,
        subresource,
        verb,
        query,
    }))
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn resource(method: Method, path: &str, query: Option<&str>) -> ResourceRequest {
        match parse(&method, path, query).unwrap() {
            Target::Resource(r) => r,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn namespaced_paths_give_namespace_name_and_verb() {
        let r = resource(Method::GET, "/api/v1/namespaces/default/pods/web", None);
        assert_eq!(
            (
                r.resource.plural,
                r.namespace.as_deref(),
                r.name.as_deref(),
                r.verb
            ),
            ("pods", Some("default"), Some("web"), Verb::Get)
        );
        let r = resource(
            Method::GET,
            "/apis/apps/v1/namespaces/ns1/deployments",
            Some("watch=1"),
        );
        assert_eq!(r.verb, Verb::Watch);
        let r = resource(Method::GET, "/api/v1/pods", None);
        assert_eq!((r.namespace, r.verb), (None, Verb::List));
        let r = resource(Method::GET, "/api/v1/watch/namespaces/a/pods/b", None);
        assert_eq!(r.verb, Verb::Watch);
    }

    #[test]
    fn namespace_objects_and_their_subresources_are_not_mistaken_for_namespaced_resources() {
        let r = resource(Method::GET, "/api/v1/namespaces/kube-system", None);
        assert_eq!(
            (r.resource.plural, r.name.as_deref(), r.namespace),
            ("namespaces", Some("kube-system"), None)
        );
        let r = resource(Method::PUT, "/api/v1/namespaces/x/status", None);
        assert_eq!(
            (r.resource.plural, r.subresource),
            ("namespaces", Some(Subresource::Status))
        );
        let r = resource(Method::PUT, "/api/v1/namespaces/x/finalize", None);
        assert_eq!(r.subresource, Some(Subresource::Status));
    }

    #[test]
    fn unknown_resources_and_wrong_methods_are_errors() {
        assert_eq!(
            parse(&Method::GET, "/api/v1/namespaces/a/widgets", None)
                .unwrap_err()
                .code,
            404
        );
        assert_eq!(
            parse(&Method::PUT, "/api/v1/namespaces/a/pods", None)
                .unwrap_err()
                .code,
            405
        );
        assert_eq!(
            parse(&Method::GET, "/api/v1/namespaces/a/nodes", None)
                .unwrap_err()
                .code,
            404
        );
        assert_eq!(
            parse(&Method::GET, "/api/v1/namespaces/a/pods/p/scale", None)
                .unwrap_err()
                .code,
            404
        );
        assert_eq!(
            parse(&Method::POST, "/api/v1/pods", None).unwrap_err().code,
            404
        );
    }

    #[test]
    fn discovery_paths_are_recognised() {
        assert!(matches!(
            parse(&Method::GET, "/api", None).unwrap(),
            Target::CoreVersions
        ));
        assert!(matches!(
            parse(&Method::GET, "/apis/", None).unwrap(),
            Target::Groups
        ));
        assert!(
            matches!(parse(&Method::GET, "/apis/apps/v1", None).unwrap(), Target::GroupVersion(g, v) if g == "apps" && v == "v1")
        );
        assert!(matches!(
            parse(&Method::GET, "/healthz", None).unwrap(),
            Target::NonResource(_)
        ));
    }

    #[test]
    fn dry_run_accepts_only_all() {
        assert!(Query::parse(Some("dryRun=All")).dry_run().unwrap());
        assert!(!Query::parse(None).dry_run().unwrap());
        assert_eq!(
            Query::parse(Some("dryRun=Some"))
                .dry_run()
                .unwrap_err()
                .code,
            400
        );
    }
}
