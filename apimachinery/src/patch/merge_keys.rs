//! Where strategic merge patch learns how each field is patched.
//!
//! The shape of every kind (which field holds which type, what the items of a list are) comes
//! from the JSON schemas k8s-openapi generates. The schemas do not say how lists are merged, so
//! [`FIELD_STRATEGIES`] restates the `patchStrategy` / `patchMergeKey` struct tags of the
//! upstream Go API types for the definitions this server serves.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value;

use crate::resources;

/// How a list field is combined with the list in the patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListMerge {
    /// The patch's list replaces the original (no `patchStrategy` tag).
    Atomic,
    /// Elements are maps merged pairwise on equal values of the key.
    ByKey(&'static str),
    /// Elements are primitives; the result is the union.
    Set,
}

/// The patch strategy of one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Strategy {
    /// How the field is merged when it is a list.
    pub list: ListMerge,
    /// The value is a union whose members `$retainKeys` may clear (`retainKeys`).
    pub retain_keys: bool,
    /// The value is replaced as a whole, never merged (`replace`).
    pub replace: bool,
}

impl Strategy {
    /// No tag: maps merge, lists are replaced.
    pub const DEFAULT: Strategy = Strategy {
        list: ListMerge::Atomic,
        retain_keys: false,
        replace: false,
    };

    const fn by_key(key: &'static str) -> Strategy {
        Strategy {
            list: ListMerge::ByKey(key),
            ..Strategy::DEFAULT
        }
    }

    const fn set() -> Strategy {
        Strategy {
            list: ListMerge::Set,
            ..Strategy::DEFAULT
        }
    }

    const fn retaining(self) -> Strategy {
        Strategy {
            retain_keys: true,
            ..self
        }
    }

    const fn replace() -> Strategy {
        Strategy {
            replace: true,
            ..Strategy::DEFAULT
        }
    }
}

const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.";
const CORE: &str = "io.k8s.api.core.v1.";
const APPS: &str = "io.k8s.api.apps.v1.";

/// The definition name of `ObjectMeta`, which every kind's `metadata` is.
pub(crate) const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

/// (definition name without its package prefix, package prefix, field, strategy), from the
/// struct tags of the upstream types (k8s.io/api and k8s.io/apimachinery).
const FIELD_STRATEGIES: &[(&str, &str, &str, Strategy)] = &[
    // meta/v1
    (META, "ObjectMeta", "finalizers", Strategy::set()),
    (
        META,
        "ObjectMeta",
        "ownerReferences",
        Strategy::by_key("uid"),
    ),
    // core/v1: pods
    (
        CORE,
        "PodSpec",
        "volumes",
        Strategy::by_key("name").retaining(),
    ),
    (CORE, "PodSpec", "initContainers", Strategy::by_key("name")),
    (CORE, "PodSpec", "containers", Strategy::by_key("name")),
    (
        CORE,
        "PodSpec",
        "ephemeralContainers",
        Strategy::by_key("name"),
    ),
    (
        CORE,
        "PodSpec",
        "imagePullSecrets",
        Strategy::by_key("name"),
    ),
    (CORE, "PodSpec", "hostAliases", Strategy::by_key("ip")),
    (
        CORE,
        "PodSpec",
        "topologySpreadConstraints",
        Strategy::by_key("topologyKey"),
    ),
    (CORE, "PodSpec", "schedulingGates", Strategy::by_key("name")),
    (
        CORE,
        "PodSpec",
        "resourceClaims",
        Strategy::by_key("name").retaining(),
    ),
    (
        CORE,
        "Container",
        "ports",
        Strategy::by_key("containerPort"),
    ),
    (CORE, "Container", "env", Strategy::by_key("name")),
    (
        CORE,
        "Container",
        "volumeMounts",
        Strategy::by_key("mountPath"),
    ),
    (
        CORE,
        "Container",
        "volumeDevices",
        Strategy::by_key("devicePath"),
    ),
    (
        CORE,
        "EphemeralContainer",
        "ports",
        Strategy::by_key("containerPort"),
    ),
    (CORE, "EphemeralContainer", "env", Strategy::by_key("name")),
    (
        CORE,
        "EphemeralContainer",
        "volumeMounts",
        Strategy::by_key("mountPath"),
    ),
    (
        CORE,
        "EphemeralContainer",
        "volumeDevices",
        Strategy::by_key("devicePath"),
    ),
    (CORE, "PodStatus", "conditions", Strategy::by_key("type")),
    (CORE, "PodStatus", "hostIPs", Strategy::by_key("ip")),
    (CORE, "PodStatus", "podIPs", Strategy::by_key("ip")),
    (
        CORE,
        "PodStatus",
        "resourceClaimStatuses",
        Strategy::by_key("name").retaining(),
    ),
    (
        CORE,
        "ContainerStatus",
        "volumeMounts",
        Strategy::by_key("mountPath"),
    ),
    (
        CORE,
        "ContainerStatus",
        "allocatedResourcesStatus",
        Strategy::by_key("name"),
    ),
    // core/v1: everything else
    (
        CORE,
        "PersistentVolumeClaimStatus",
        "conditions",
        Strategy::by_key("type"),
    ),
    (
        CORE,
        "ReplicationControllerStatus",
        "conditions",
        Strategy::by_key("type"),
    ),
    (CORE, "ServiceSpec", "ports", Strategy::by_key("port")),
    (
        CORE,
        "ServiceStatus",
        "conditions",
        Strategy::by_key("type"),
    ),
    (CORE, "ServiceAccount", "secrets", Strategy::by_key("name")),
    (CORE, "NodeSpec", "podCIDRs", Strategy::set()),
    (CORE, "NodeStatus", "conditions", Strategy::by_key("type")),
    (CORE, "NodeStatus", "addresses", Strategy::by_key("type")),
    (
        CORE,
        "NamespaceStatus",
        "conditions",
        Strategy::by_key("type"),
    ),
    (
        CORE,
        "ComponentStatus",
        "conditions",
        Strategy::by_key("type"),
    ),
    // apps/v1
    (
        APPS,
        "DeploymentSpec",
        "strategy",
        Strategy::DEFAULT.retaining(),
    ),
    (
        APPS,
        "DeploymentStatus",
        "conditions",
        Strategy::by_key("type"),
    ),
    (
        APPS,
        "ReplicaSetStatus",
        "conditions",
        Strategy::by_key("type"),
    ),
    (
        APPS,
        "DaemonSetStatus",
        "conditions",
        Strategy::by_key("type"),
    ),
    (
        APPS,
        "StatefulSetStatus",
        "conditions",
        Strategy::by_key("type"),
    ),
    // batch/v1, policy/v1, storage/v1
    (
        "io.k8s.api.batch.v1.",
        "JobStatus",
        "conditions",
        Strategy::by_key("type"),
    ),
    (
        "io.k8s.api.policy.v1.",
        "PodDisruptionBudgetSpec",
        "selector",
        Strategy::replace(),
    ),
    (
        "io.k8s.api.policy.v1.",
        "PodDisruptionBudgetStatus",
        "conditions",
        Strategy::by_key("type"),
    ),
    (
        "io.k8s.api.storage.v1.",
        "CSINodeSpec",
        "drivers",
        Strategy::by_key("name"),
    ),
];

/// The patch strategy of `field` in the definition `def`.
pub(crate) fn strategy(def: &str, field: &str) -> Strategy {
    FIELD_STRATEGIES
        .iter()
        .find(|(package, ty, f, _)| {
            *f == field && def.strip_prefix(package).is_some_and(|rest| rest == *ty)
        })
        .map_or(Strategy::DEFAULT, |entry| entry.3)
}

/// The JSON schemas (OpenAPI 3 flavour) of every definition reachable from the served kinds and
/// autoscaling/v1 Scale, by definition name.
pub fn definitions() -> &'static HashMap<String, Value> {
    static DEFS: OnceLock<HashMap<String, Value>> = OnceLock::new();
    DEFS.get_or_init(|| {
        let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
        for r in resources::RESOURCES {
            r.typed.schema(&mut generator);
        }
        generator.subschema_for::<k8s_openapi::api::autoscaling::v1::Scale>();
        generator.take_definitions(true).into_iter().collect()
    })
}

/// The definition named by a schema that is only a reference (`$ref`, or `allOf` with one
/// reference, as the OpenAPI 3 settings write a reference with a description beside it).
fn reference(schema: &Value) -> Option<&str> {
    let r = schema.get("$ref").or_else(|| {
        schema
            .get("allOf")
            .and_then(Value::as_array)
            .filter(|all| all.len() == 1)
            .and_then(|all| all[0].get("$ref"))
    })?;
    r.as_str()?.rsplit('/').next()
}

/// A position in the structure of a kind: the schema of the value found there, when known.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ty {
    /// The definition the value is an instance of, when it is one.
    def: Option<&'static str>,
    /// The schema of the value; `None` when nothing is known (free-form or unknown kinds).
    schema: Option<&'static Value>,
    /// The root of an object of an unknown kind: only its `metadata` is known.
    unknown_root: bool,
}

impl Ty {
    /// Nothing known: maps merge, lists are replaced.
    pub const ANY: Ty = Ty {
        def: None,
        schema: None,
        unknown_root: false,
    };

    fn of_schema(schema: &'static Value) -> Ty {
        let mut schema = schema;
        let mut def = None;
        // References can chain; a bounded walk also guards against cycles.
        for _ in 0..8 {
            let Some(name) = reference(schema) else { break };
            match definitions().get_key_value(name) {
                Some((k, s)) => {
                    def = Some(k.as_str());
                    schema = s;
                }
                None => return Ty::ANY,
            }
        }
        Ty {
            def,
            schema: Some(schema),
            unknown_root: false,
        }
    }

    /// The definition called `name`.
    pub fn definition(name: &str) -> Ty {
        match definitions().get_key_value(name) {
            Some((k, s)) => Ty {
                def: Some(k.as_str()),
                schema: Some(s),
                unknown_root: false,
            },
            None => Ty::ANY,
        }
    }

    /// The root type of objects of a kind (`group` "" for core). Kinds not served get a root
    /// whose `metadata` is still an `ObjectMeta`.
    pub fn of_kind(group: &str, kind: &str) -> Ty {
        if (group, kind) == ("autoscaling", "Scale") {
            return Ty::definition("io.k8s.api.autoscaling.v1.Scale");
        }
        match resources::RESOURCES
            .iter()
            .find(|r| r.group == group && r.kind == kind)
        {
            Some(r) => Ty::definition(&r.typed.definition_name()),
            None => Ty {
                unknown_root: true,
                ..Ty::ANY
            },
        }
    }

    /// The definition name, if the value is an instance of one.
    #[cfg(test)]
    pub fn def(&self) -> Option<&'static str> {
        self.def
    }

    /// The type and strategy of the field `name` of this map.
    pub fn field(&self, name: &str) -> (Ty, Strategy) {
        if self.unknown_root && name == "metadata" {
            return (Ty::definition(OBJECT_META), Strategy::DEFAULT);
        }
        let Some(schema) = self.schema else {
            return (Ty::ANY, Strategy::DEFAULT);
        };
        let child = schema
            .get("properties")
            .and_then(|p| p.get(name))
            .or_else(|| schema.get("additionalProperties").filter(|a| a.is_object()))
            .map_or(Ty::ANY, Ty::of_schema);
        let strategy = self
            .def
            .map_or(Strategy::DEFAULT, |def| strategy(def, name));
        (child, strategy)
    }

    /// The type of the items of this list.
    pub fn items(&self) -> Ty {
        self.schema
            .and_then(|s| s.get("items"))
            .filter(|i| i.is_object())
            .map_or(Ty::ANY, Ty::of_schema)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tagged_field_exists_in_its_definition_when_the_definition_is_served() {
        let mut checked = 0;
        for (package, ty, field, _) in FIELD_STRATEGIES {
            let name = format!("{package}{ty}");
            let Some(def) = definitions().get(&name) else {
                continue;
            };
            assert!(
                def["properties"].get(*field).is_some(),
                "{name} has no field {field}"
            );
            checked += 1;
        }
        assert!(checked > 35, "only {checked} entries checked");
    }

    #[test]
    fn merge_keys_are_fields_of_the_list_items() {
        for (package, ty, field, strategy) in FIELD_STRATEGIES {
            let ListMerge::ByKey(key) = strategy.list else {
                continue;
            };
            let (list, _) = Ty::definition(&format!("{package}{ty}")).field(field);
            if let Some(schema) = list.items().schema {
                assert!(
                    schema["properties"].get(key).is_some(),
                    "{ty}.{field} items have no {key}"
                );
            }
        }
    }
}
