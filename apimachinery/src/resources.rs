//! The table of resources the API server serves.
//!
//! One row per group/version/resource with everything discovery, routing, storage and OpenAPI
//! need to know about it: its kind, whether it is namespaced, short names, categories, the
//! subresources it has, and a handle on its k8s-openapi type for schema-checked decoding.

use std::marker::PhantomData;

use k8s_openapi::api::{
    apps::v1 as apps, batch::v1 as batch, certificates::v1 as certificates,
    coordination::v1 as coordination, core::v1 as core, discovery::v1 as discovery,
    events::v1 as events, policy::v1 as policy, rbac::v1 as rbac, scheduling::v1 as scheduling,
    storage::v1 as storage,
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

/// A subresource served below an object: `/namespaces/{ns}/pods/{name}/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    /// `status`: get, update and patch of `.status` alone.
    Status,
    /// `scale`: an autoscaling/v1 Scale view of `.spec.replicas`.
    Scale,
    /// `binding`: pods only, sets `.spec.nodeName`.
    Binding,
    /// `eviction`: pods only, a policy/v1 Eviction that deletes the pod.
    Eviction,
    /// `approval`: CertificateSigningRequests, updates `.status.conditions`.
    Approval,
    /// `token`: ServiceAccounts only, an authentication.k8s.io/v1 TokenRequest answered with
    /// a signed token.
    Token,
}

impl Subresource {
    /// The path segment of the subresource.
    pub fn name(self) -> &'static str {
        match self {
            Subresource::Status => "status",
            Subresource::Scale => "scale",
            Subresource::Binding => "binding",
            Subresource::Eviction => "eviction",
            Subresource::Approval => "approval",
            Subresource::Token => "token",
        }
    }

    /// The kind the subresource reads and writes, as (group, version, kind).
    pub fn kind(self, parent: &ResourceInfo) -> (&str, &str, &str) {
        match self {
            Subresource::Status | Subresource::Approval => {
                (parent.group, parent.version, parent.kind)
            }
            Subresource::Scale => ("autoscaling", "v1", "Scale"),
            Subresource::Binding => ("", "v1", "Binding"),
            Subresource::Eviction => ("policy", "v1", "Eviction"),
            Subresource::Token => ("authentication.k8s.io", "v1", "TokenRequest"),
        }
    }

    /// The verbs discovery lists for the subresource.
    pub fn verbs(self) -> &'static [&'static str] {
        match self {
            Subresource::Status | Subresource::Scale | Subresource::Approval => {
                &["get", "patch", "update"]
            }
            Subresource::Binding | Subresource::Eviction | Subresource::Token => &["create"],
        }
    }
}

/// The typed view of a kind, through its k8s-openapi Rust type.
pub trait TypedKind: Sync {
    /// Decodes `value` into the Rust type and encodes it again. Fields the schema does not know
    /// are dropped, as the upstream decoder drops them; a value of the wrong type is an error.
    fn normalize(&self, value: Value) -> Result<Value, serde_json::Error>;
    /// The OpenAPI definition name, e.g. `io.k8s.api.core.v1.Pod`.
    fn definition_name(&self) -> String;
    /// The JSON schema of the kind, with referenced definitions added to the generator.
    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema;
}

/// [`TypedKind`] for any k8s-openapi type.
pub struct Typed<T>(PhantomData<fn() -> T>);

impl<T> Typed<T> {
    /// The typed handle for `T`.
    pub const NEW: Self = Typed(PhantomData);
}

impl<T: Serialize + DeserializeOwned + schemars::JsonSchema> TypedKind for Typed<T> {
    fn normalize(&self, value: Value) -> Result<Value, serde_json::Error> {
        let typed: T = serde_json::from_value(value)?;
        serde_json::to_value(typed)
    }

    fn definition_name(&self) -> String {
        T::schema_name().into_owned()
    }

    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<T>()
    }
}

/// One served resource.
pub struct ResourceInfo {
    /// API group, "" for the core group.
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// The kind of one object, e.g. `Pod`.
    pub kind: &'static str,
    /// The resource name in URLs, e.g. `pods`.
    pub plural: &'static str,
    /// The singular name, e.g. `pod`.
    pub singular: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Short names kubectl accepts, e.g. `po`.
    pub short_names: &'static [&'static str],
    /// Categories, e.g. `all`.
    pub categories: &'static [&'static str],
    /// The subresources served below each object.
    pub subresources: &'static [Subresource],
    /// The Rust type behind the kind.
    pub typed: &'static dyn TypedKind,
    /// Where the objects are stored, when another resource owns the storage (events.k8s.io
    /// events are core events in another shape); `None` for the resource's own.
    pub storage_of: Option<(&'static str, &'static str)>,
}

impl std::fmt::Debug for ResourceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.group_version_resource())
    }
}

impl ResourceInfo {
    /// `v1` for the core group, `group/version` otherwise.
    pub fn api_version(&self) -> String {
        api_version(self.group, self.version)
    }

    /// `pods`, `deployments.apps`, ... as kubectl names resources.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `apps/v1/deployments`, for logs.
    pub fn group_version_resource(&self) -> String {
        format!("{}/{}", self.api_version(), self.plural)
    }

    /// Whether the resource has the given subresource.
    pub fn has(&self, sub: Subresource) -> bool {
        self.subresources.contains(&sub)
    }

    /// The key prefix of this resource's objects in the store, ending in `/`.
    pub fn storage_prefix(&self) -> String {
        let (group, plural) = self.storage_of.unwrap_or((self.group, self.plural));
        if group.is_empty() {
            format!("/registry/{plural}/")
        } else {
            format!("/registry/{group}/{plural}/")
        }
    }

    /// The store key of one object.
    pub fn storage_key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace.filter(|_| self.namespaced) {
            Some(ns) => format!("{}{ns}/{name}", self.storage_prefix()),
            None => format!("{}{name}", self.storage_prefix()),
        }
    }

    /// The verbs of the main resource, as discovery lists them.
    pub fn verbs(&self) -> &'static [&'static str] {
        &[
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }
}

/// `v1` for the core group, `group/version` otherwise.
pub fn api_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

use Subresource::{Approval, Binding, Eviction, Scale, Status, Token};

macro_rules! resource {
    ($group:expr, $version:expr, $kind:expr, $plural:expr, $singular:expr, $namespaced:expr,
     short: [$($short:expr),*], cat: [$($cat:expr),*], sub: [$($sub:expr),*], $ty:ty) => {
        ResourceInfo {
            group: $group,
            version: $version,
            kind: $kind,
            plural: $plural,
            singular: $singular,
            namespaced: $namespaced,
            short_names: &[$($short),*],
            categories: &[$($cat),*],
            subresources: &[$($sub),*],
            typed: &Typed::<$ty>::NEW,
            storage_of: None,
        }
    };
}

/// Every resource served, in discovery order.
pub static RESOURCES: &[ResourceInfo] = &[
    resource!("", "v1", "Namespace", "namespaces", "namespace", false, short: ["ns"], cat: [], sub: [Status], core::Namespace),
    resource!("", "v1", "Pod", "pods", "pod", true, short: ["po"], cat: ["all"], sub: [Status, Binding, Eviction], core::Pod),
    resource!("", "v1", "Node", "nodes", "node", false, short: ["no"], cat: [], sub: [Status], core::Node),
    resource!("", "v1", "Service", "services", "service", true, short: ["svc"], cat: ["all"], sub: [Status], core::Service),
    resource!("", "v1", "Endpoints", "endpoints", "endpoints", true, short: ["ep"], cat: [], sub: [], core::Endpoints),
    resource!("", "v1", "ConfigMap", "configmaps", "configmap", true, short: ["cm"], cat: [], sub: [], core::ConfigMap),
    resource!("", "v1", "Secret", "secrets", "secret", true, short: [], cat: [], sub: [], core::Secret),
    resource!("", "v1", "ServiceAccount", "serviceaccounts", "serviceaccount", true, short: ["sa"], cat: [], sub: [Token], core::ServiceAccount),
    resource!("", "v1", "Event", "events", "event", true, short: ["ev"], cat: [], sub: [], core::Event),
    resource!("", "v1", "PersistentVolume", "persistentvolumes", "persistentvolume", false, short: ["pv"], cat: [], sub: [Status], core::PersistentVolume),
    resource!("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", "persistentvolumeclaim", true, short: ["pvc"], cat: [], sub: [Status], core::PersistentVolumeClaim),
    resource!("apps", "v1", "Deployment", "deployments", "deployment", true, short: ["deploy"], cat: ["all"], sub: [Status, Scale], apps::Deployment),
    resource!("apps", "v1", "ReplicaSet", "replicasets", "replicaset", true, short: ["rs"], cat: ["all"], sub: [Status, Scale], apps::ReplicaSet),
    resource!("apps", "v1", "DaemonSet", "daemonsets", "daemonset", true, short: ["ds"], cat: ["all"], sub: [Status], apps::DaemonSet),
    resource!("apps", "v1", "StatefulSet", "statefulsets", "statefulset", true, short: ["sts"], cat: ["all"], sub: [Status, Scale], apps::StatefulSet),
    resource!("apps", "v1", "ControllerRevision", "controllerrevisions", "controllerrevision", true, short: [], cat: [], sub: [], apps::ControllerRevision),
    resource!("batch", "v1", "Job", "jobs", "job", true, short: [], cat: ["all"], sub: [Status], batch::Job),
    resource!("batch", "v1", "CronJob", "cronjobs", "cronjob", true, short: ["cj"], cat: ["all"], sub: [Status], batch::CronJob),
    resource!("coordination.k8s.io", "v1", "Lease", "leases", "lease", true, short: [], cat: [], sub: [], coordination::Lease),
    resource!("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", "endpointslice", true, short: [], cat: [], sub: [], discovery::EndpointSlice),
    ResourceInfo {
        storage_of: Some(("", "events")),
        ..resource!("events.k8s.io", "v1", "Event", "events", "event", true, short: ["ev"], cat: [], sub: [], events::Event)
    },
    resource!("certificates.k8s.io", "v1", "CertificateSigningRequest", "certificatesigningrequests", "certificatesigningrequest", false, short: ["csr"], cat: [], sub: [Status, Approval], certificates::CertificateSigningRequest),
    resource!("rbac.authorization.k8s.io", "v1", "Role", "roles", "role", true, short: [], cat: [], sub: [], rbac::Role),
    resource!("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", "rolebinding", true, short: [], cat: [], sub: [], rbac::RoleBinding),
    resource!("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", "clusterrole", false, short: [], cat: [], sub: [], rbac::ClusterRole),
    resource!("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", "clusterrolebinding", false, short: [], cat: [], sub: [], rbac::ClusterRoleBinding),
    resource!("storage.k8s.io", "v1", "StorageClass", "storageclasses", "storageclass", false, short: ["sc"], cat: [], sub: [], storage::StorageClass),
    resource!("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", "priorityclass", false, short: ["pc"], cat: [], sub: [], scheduling::PriorityClass),
    resource!("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", "customresourcedefinition", false, short: ["crd", "crds"], cat: ["api-extensions"], sub: [Status], k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition),
    resource!("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", "poddisruptionbudget", true, short: ["pdb"], cat: [], sub: [Status], policy::PodDisruptionBudget),
];

/// The resource served at `group/version/plural`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource of a kind, as named in an object's `apiVersion` and `kind`.
pub fn find_kind(api_version: &str, kind: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.api_version() == api_version && r.kind == kind)
}

/// The API groups served, in discovery order (the core group "" first), each with its
/// versions.
pub fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for r in RESOURCES {
        match out.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, versions)) if !versions.contains(&r.version) => versions.push(r.version),
            Some(_) => {}
            None => out.push((r.group, vec![r.version])),
        }
    }
    out
}

/// The resources of one group version.
pub fn in_group_version(group: &str, version: &str) -> Vec<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resource_is_unique_and_decodes_an_empty_object() {
        for (i, r) in RESOURCES.iter().enumerate() {
            assert!(
                RESOURCES[..i]
                    .iter()
                    .all(|o| (o.group, o.version, o.plural) != (r.group, r.version, r.plural)),
                "{r:?} twice"
            );
            let empty = serde_json::json!({"metadata": {"name": "x"}});
            // Kinds with required fields fail to decode an empty object; those without must not.
            let _ = r.typed.normalize(empty);
            assert!(!r.typed.definition_name().is_empty());
        }
    }

    #[test]
    fn core_resources_are_stored_without_a_group_and_events_share_one_prefix() {
        let pods = find("", "v1", "pods").unwrap();
        assert_eq!(
            pods.storage_key(Some("default"), "a"),
            "/registry/pods/default/a"
        );
        let nodes = find("", "v1", "nodes").unwrap();
        assert_eq!(
            nodes.storage_key(Some("ignored"), "n1"),
            "/registry/nodes/n1"
        );
        let deploy = find("apps", "v1", "deployments").unwrap();
        assert_eq!(deploy.storage_prefix(), "/registry/apps/deployments/");
        let ev = find("events.k8s.io", "v1", "events").unwrap();
        assert_eq!(
            ev.storage_prefix(),
            find("", "v1", "events").unwrap().storage_prefix()
        );
    }

    #[test]
    fn groups_start_with_core() {
        let g = groups();
        assert_eq!(g[0], ("", vec!["v1"]));
        assert!(g.iter().any(|(name, _)| *name == "apps"));
    }
}
