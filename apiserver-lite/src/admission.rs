//! Built-in admission: the namespace lifecycle (no new objects in a missing or terminating
//! namespace) and Service address allocation.
//!
//! ClusterIPs and NodePorts are allocated by creating one store key per address
//! (`/registry/ranges/serviceips/<ip>`, `/registry/ranges/servicenodeports/<port>`) with
//! create-if-absent, so several API servers over one etcd can never hand out the same address
//! twice, and a restart keeps every allocation. A delete releases them; a repair pass at start
//! adds keys for services that lack them and removes keys no service uses (left by a crash
//! between allocation and create).

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::sync::Arc;

use apimachinery::status::{ApiError, FieldCause};
use rand::Rng;
use serde_json::{Value, json};

use crate::storage::{Store, StoreError, list_all};

const IP_PREFIX: &str = "/registry/ranges/serviceips/";
const PORT_PREFIX: &str = "/registry/ranges/servicenodeports/";
const NAMESPACES: &str = "/registry/namespaces/";

/// An IPv4 CIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    base: u32,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (ip, len) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (want a.b.c.d/n)"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let prefix: u8 = len.parse().map_err(|e| format!("{s:?}: {e}"))?;
        if !(8..=30).contains(&prefix) {
            return Err(format!("{s:?}: prefix length must be between 8 and 30"));
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(Cidr {
            base: u32::from(ip) & mask,
            prefix,
        })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

impl Cidr {
    fn size(&self) -> u32 {
        1u32 << (32 - self.prefix)
    }

    /// The first usable address: the `kubernetes` Service's ClusterIP.
    pub fn first(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base + 1)
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        let ip = u32::from(ip);
        ip > self.base && ip < self.base + self.size() - 1
    }

    fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.base + 1 + n)
    }
}

/// Built-in admission state.
#[derive(Debug, Clone)]
pub struct Admission {
    /// The ClusterIP range.
    pub service_range: Cidr,
    /// The NodePort range.
    pub node_ports: RangeInclusive<u16>,
}

/// Addresses taken for one Service, released again if its write fails.
#[derive(Debug, Default)]
pub struct Allocated {
    keys: Vec<String>,
}

/// A random number in `range`; the generator is not kept across awaits.
fn random_in(range: std::ops::Range<u32>) -> u32 {
    rand::rng().random_range(range)
}

fn backend(e: StoreError) -> ApiError {
    ApiError::internal(e)
}

fn owner(svc: &Value) -> String {
    format!(
        "{}/{}",
        svc["metadata"]["namespace"].as_str().unwrap_or(""),
        svc["metadata"]["name"].as_str().unwrap_or("")
    )
}

fn service_ips(svc: &Value) -> Vec<Ipv4Addr> {
    let mut ips: Vec<Ipv4Addr> = svc["spec"]["clusterIPs"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()?.parse().ok()).collect())
        .unwrap_or_default();
    if let Some(ip) = svc["spec"]["clusterIP"]
        .as_str()
        .and_then(|s| s.parse().ok())
        && !ips.contains(&ip)
    {
        ips.push(ip);
    }
    ips
}

fn node_ports(svc: &Value) -> Vec<u16> {
    let mut ports: Vec<u16> = svc["spec"]["ports"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["nodePort"].as_u64())
                .filter_map(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0)
                .collect()
        })
        .unwrap_or_default();
    ports.extend(health_check_port(svc));
    ports
}

fn health_check_port(svc: &Value) -> Option<u16> {
    svc["spec"]["healthCheckNodePort"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
}

/// A LoadBalancer Service with externalTrafficPolicy Local (upstream's NeedsHealthCheck).
fn needs_health_check(svc: &Value) -> bool {
    svc["spec"]["type"] == "LoadBalancer" && svc["spec"]["externalTrafficPolicy"] == "Local"
}

fn wants_node_ports(svc: &Value) -> bool {
    match svc["spec"]["type"].as_str() {
        Some("NodePort") => true,
        Some("LoadBalancer") => svc["spec"]["allocateLoadBalancerNodePorts"]
            .as_bool()
            .unwrap_or(true),
        _ => false,
    }
}

/// A PriorityClass's `value` and `preemptionPolicy`.
fn priority_of(class: &Value) -> (i64, Option<String>) {
    (
        class["value"].as_i64().unwrap_or(0),
        class["preemptionPolicy"].as_str().map(str::to_string),
    )
}

/// Sets the pod's resolved priority, refusing a `spec.priority` the client gave that differs.
fn set_priority(
    pod: &mut Value,
    name: &str,
    value: i64,
    policy: Option<String>,
) -> Result<(), ApiError> {
    if let Some(given) = pod["spec"]["priority"].as_i64()
        && given != value
    {
        return Err(ApiError::forbidden(
            "pods",
            name,
            format!(
                "the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name"
            ),
        ));
    }
    pod["spec"]["priority"] = json!(value);
    pod["spec"]["preemptionPolicy"] =
        json!(policy.unwrap_or_else(|| "PreemptLowerPriority".into()));
    Ok(())
}

/// The `globalDefault` PriorityClass; should a race have made several, the lowest value, as
/// upstream.
async fn default_priority_class(store: &dyn Store) -> Result<Option<Value>, ApiError> {
    let prefix = apimachinery::resources::find("scheduling.k8s.io", "v1", "priorityclasses")
        .map(|r| r.storage_prefix())
        .ok_or_else(|| ApiError::internal("no priorityclasses resource"))?;
    let classes = list_all(store, &prefix).await.map_err(backend)?;
    Ok(classes
        .items
        .iter()
        .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
        .filter(|pc| pc["globalDefault"].as_bool() == Some(true))
        .min_by_key(|pc| pc["value"].as_i64().unwrap_or(0)))
}

impl Admission {
    /// Refuses new objects in a namespace that does not exist or is being deleted.
    pub async fn check_namespace(
        &self,
        store: &dyn Store,
        namespace: &str,
        group_resource: &str,
        name: &str,
    ) -> Result<(), ApiError> {
        let ns = store
            .get(&format!("{NAMESPACES}{namespace}"))
            .await
            .map_err(backend)?;
        let Some(ns) = ns else {
            return Err(ApiError::not_found("namespaces", namespace));
        };
        let obj: Value = serde_json::from_slice(&ns.value).map_err(ApiError::internal)?;
        if obj["metadata"]
            .get("deletionTimestamp")
            .is_some_and(|v| !v.is_null())
            || obj["status"]["phase"] == "Terminating"
        {
            let mut e = ApiError::forbidden(
                group_resource,
                name,
                format!(
                    "unable to create new content in namespace {namespace} because it is being terminated"
                ),
            );
            e.causes = vec![FieldCause::new(
                apimachinery::status::CauseType::Forbidden,
                "",
                None,
                "NamespaceTerminating",
            )];
            return Err(e);
        }
        Ok(())
    }

    /// Priority admission for a new pod naming a `priorityClassName`: `spec.priority` and
    /// `spec.preemptionPolicy` come from the PriorityClass (the two built-in
    /// `system-node-critical` and `system-cluster-critical` need no object, as upstream
    /// creates them at start); an unknown class, or a `priority` that disagrees with it, is
    /// refused with upstream's words. A pod naming no class gets the `globalDefault` class
    /// (its name too), or priority 0 and `PreemptLowerPriority` when there is none.
    pub async fn resolve_priority(
        &self,
        store: &dyn Store,
        pod: &mut Value,
        name: &str,
    ) -> Result<(), ApiError> {
        let Some(class) = pod["spec"]["priorityClassName"]
            .as_str()
            .filter(|c| !c.is_empty())
            .map(str::to_string)
        else {
            let (value, policy) = match default_priority_class(store).await? {
                Some(pc) => {
                    pod["spec"]["priorityClassName"] = pc["metadata"]["name"].clone();
                    priority_of(&pc)
                }
                None => (0, None),
            };
            return set_priority(pod, name, value, policy);
        };
        let (value, policy) = match class.as_str() {
            "system-node-critical" => (2_000_001_000, None),
            "system-cluster-critical" => (2_000_000_000, None),
            _ => {
                let key =
                    apimachinery::resources::find("scheduling.k8s.io", "v1", "priorityclasses")
                        .map(|r| r.storage_key(None, &class))
                        .ok_or_else(|| ApiError::internal("no priorityclasses resource"))?;
                let kv = store.get(&key).await.map_err(backend)?.ok_or_else(|| {
                    ApiError::forbidden(
                        "pods",
                        name,
                        format!("no PriorityClass with name {class} was found"),
                    )
                })?;
                let pc: Value = serde_json::from_slice(&kv.value).map_err(ApiError::internal)?;
                priority_of(&pc)
            }
        };
        set_priority(pod, name, value, policy)
    }

    /// Priority admission for a PriorityClass being created or updated: only one class may
    /// be the `globalDefault` (upstream's message names the one that already is).
    pub async fn check_default_priority_class(
        &self,
        store: &dyn Store,
        class: &Value,
    ) -> Result<(), ApiError> {
        if class["globalDefault"].as_bool() != Some(true) {
            return Ok(());
        }
        let name = class["metadata"]["name"].as_str().unwrap_or("");
        if let Some(current) = default_priority_class(store).await?
            && let Some(current_name) = current["metadata"]["name"].as_str()
            && current_name != name
        {
            return Err(ApiError::forbidden(
                "priorityclasses.scheduling.k8s.io",
                name,
                format!(
                    "PriorityClass {current_name} is already marked as default. Only one default can exist"
                ),
            ));
        }
        Ok(())
    }

    async fn take(
        &self,
        store: &dyn Store,
        key: String,
        owner: &str,
        taken: &mut Allocated,
    ) -> Result<bool, ApiError> {
        match store.create(&key, owner.as_bytes().to_vec()).await {
            Ok(_) => {
                taken.keys.push(key);
                Ok(true)
            }
            Err(StoreError::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(backend(e)),
        }
    }

    /// Gives a new or changed Service its ClusterIP and NodePorts. `old` is the stored Service
    /// on update, whose addresses are kept.
    pub async fn allocate_service(
        &self,
        store: &dyn Store,
        svc: &mut Value,
        old: Option<&Value>,
    ) -> Result<Allocated, ApiError> {
        let mut taken = Allocated::default();
        let result = self.allocate_inner(store, svc, old, &mut taken).await;
        if result.is_err() {
            self.release(store, taken).await;
            return result.map(|_| Allocated::default());
        }
        Ok(taken)
    }

    async fn allocate_inner(
        &self,
        store: &dyn Store,
        svc: &mut Value,
        old: Option<&Value>,
        taken: &mut Allocated,
    ) -> Result<(), ApiError> {
        let name = svc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let who = owner(svc);
        let invalid = |field: &str, value: Value, why: String| {
            ApiError::invalid(
                "",
                "Service",
                &name,
                vec![FieldCause::invalid(field, value, why)],
            )
        };
        let svc_type = svc["spec"]["type"]
            .as_str()
            .unwrap_or("ClusterIP")
            .to_string();
        // ClusterIP.
        if svc_type == "ExternalName" {
            svc["spec"].as_object_mut().map(|s| {
                s.remove("clusterIP");
                s.remove("clusterIPs")
            });
        } else {
            let requested = svc["spec"]["clusterIP"].as_str().unwrap_or("").to_string();
            let kept = old
                .and_then(|o| o["spec"]["clusterIP"].as_str())
                .filter(|s| !s.is_empty())
                .map(String::from);
            let ip = match (requested.as_str(), kept) {
                ("", Some(old_ip)) => old_ip,
                (r, Some(old_ip)) if r == old_ip => old_ip,
                ("None", None) => "None".into(),
                ("", None) => {
                    let mut found = None;
                    let size = self.service_range.size();
                    // As upstream, dynamic addresses come from above a low band kept for
                    // fixed ones (the cluster DNS takes the 10th) while the rest has room.
                    let reserved = (size / 16).clamp(16, 256).min(size - 3);
                    for attempt in 0..64 {
                        let low = if attempt < 48 { reserved } else { 1 };
                        let candidate = self.service_range.nth(random_in(low..size - 2));
                        if self
                            .take(store, format!("{IP_PREFIX}{candidate}"), &who, taken)
                            .await?
                        {
                            found = Some(candidate);
                            break;
                        }
                    }
                    found
                        .ok_or_else(|| {
                            invalid(
                                "spec.clusterIPs",
                                json!([]),
                                "failed to allocate IP: range is full".into(),
                            )
                        })?
                        .to_string()
                }
                (r, None) => {
                    let ip: Ipv4Addr = r.parse().map_err(|_| {
                        invalid(
                            "spec.clusterIPs",
                            json!([r]),
                            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)".into(),
                        )
                    })?;
                    if !self.service_range.contains(ip) {
                        return Err(invalid(
                            "spec.clusterIPs",
                            json!([r]),
                            format!(
                                "failed to allocate IP {r}: the provided IP ({r}) is not in the valid range. The range of valid IPs is {}",
                                self.service_range
                            ),
                        ));
                    }
                    if !self
                        .take(store, format!("{IP_PREFIX}{ip}"), &who, taken)
                        .await?
                    {
                        return Err(invalid(
                            "spec.clusterIPs",
                            json!([r]),
                            format!("failed to allocate IP {r}: provided IP is already allocated"),
                        ));
                    }
                    r.to_string()
                }
                (_, Some(old_ip)) => {
                    return Err(invalid(
                        "spec.clusterIPs[0]",
                        json!(requested),
                        format!("may not change once set (was {old_ip})"),
                    ));
                }
            };
            svc["spec"]["clusterIP"] = ip.clone().into();
            svc["spec"]["clusterIPs"] = json!([ip]);
        }
        // NodePorts.
        if wants_node_ports(svc) {
            let old_ports: Vec<(i64, String, u64)> = old
                .and_then(|o| o["spec"]["ports"].as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|p| {
                            Some((
                                p["port"].as_i64()?,
                                p["protocol"].as_str().unwrap_or("TCP").to_string(),
                                p["nodePort"].as_u64()?,
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let old_set: HashSet<u64> = old_ports.iter().map(|(_, _, n)| *n).collect();
            let count = svc["spec"]["ports"].as_array().map(Vec::len).unwrap_or(0);
            for i in 0..count {
                let port = svc["spec"]["ports"][i].clone();
                let mut node_port = port["nodePort"].as_u64().unwrap_or(0);
                if node_port == 0
                    && let Some((_, _, n)) = old_ports.iter().find(|(p, proto, _)| {
                        Some(*p) == port["port"].as_i64()
                            && proto == port["protocol"].as_str().unwrap_or("TCP")
                    })
                {
                    node_port = *n;
                }
                let field = format!("spec.ports[{i}].nodePort");
                let node_port = self
                    .node_port(store, &who, node_port, &old_set, &field, &invalid, taken)
                    .await?;
                svc["spec"]["ports"][i]["nodePort"] = node_port.into();
            }
        }
        // As upstream, a LoadBalancer with externalTrafficPolicy Local gets a health check
        // node port (kept across updates) from the same range.
        if needs_health_check(svc) {
            let old_hc = old
                .filter(|o| needs_health_check(o))
                .and_then(|o| o["spec"]["healthCheckNodePort"].as_u64())
                .unwrap_or(0);
            let old_set: HashSet<u64> = [old_hc].into_iter().filter(|p| *p != 0).collect();
            let requested = match svc["spec"]["healthCheckNodePort"].as_u64().unwrap_or(0) {
                0 => old_hc,
                p => p,
            };
            let port = self
                .node_port(
                    store,
                    &who,
                    requested,
                    &old_set,
                    "spec.healthCheckNodePort",
                    &invalid,
                    taken,
                )
                .await?;
            svc["spec"]["healthCheckNodePort"] = port.into();
        }
        Ok(())
    }

    /// A node port for `field`: `requested` (0: a free one from the range) taken for `who`
    /// unless `keep` already holds it.
    #[allow(clippy::too_many_arguments)]
    async fn node_port(
        &self,
        store: &dyn Store,
        who: &str,
        requested: u64,
        keep: &HashSet<u64>,
        field: &str,
        invalid: &impl Fn(&str, Value, String) -> ApiError,
        taken: &mut Allocated,
    ) -> Result<u64, ApiError> {
        let mut node_port = requested;
        if node_port == 0 {
            let span = u32::from(*self.node_ports.end() - *self.node_ports.start()) + 1;
            let mut found = None;
            for _ in 0..128 {
                let candidate = *self.node_ports.start() as u32 + random_in(0..span);
                if self
                    .take(store, format!("{PORT_PREFIX}{candidate}"), who, taken)
                    .await?
                {
                    found = Some(candidate);
                    break;
                }
            }
            node_port = found
                .ok_or_else(|| {
                    invalid(
                        field,
                        json!(0),
                        "failed to allocate a nodePort: range is full".into(),
                    )
                })?
                .into();
        } else if !keep.contains(&node_port) {
            let Ok(p) = u16::try_from(node_port) else {
                return Err(invalid(
                    field,
                    json!(node_port),
                    "must be between 1 and 65535, inclusive".into(),
                ));
            };
            if !self.node_ports.contains(&p) {
                return Err(invalid(
                    field,
                    json!(node_port),
                    format!(
                        "provided port is not in the valid range. The range of valid ports is {}-{}",
                        self.node_ports.start(),
                        self.node_ports.end()
                    ),
                ));
            }
            if !self
                .take(store, format!("{PORT_PREFIX}{p}"), who, taken)
                .await?
            {
                return Err(invalid(
                    field,
                    json!(node_port),
                    "provided port is already allocated".into(),
                ));
            }
        }
        Ok(node_port)
    }

    /// Gives back addresses taken for a write that failed.
    pub async fn release(&self, store: &dyn Store, taken: Allocated) {
        for key in taken.keys {
            if let Err(e) = store.delete(&key, None).await
                && !matches!(e, StoreError::NotFound { .. })
            {
                tracing::warn!(%key, error = %e, "releasing an unused service address failed");
            }
        }
    }

    /// Releases the addresses of a deleted Service, or those an update stopped using.
    pub async fn release_service(&self, store: &dyn Store, old: &Value, new: Option<&Value>) {
        let keep_ips: Vec<Ipv4Addr> = new.map(service_ips).unwrap_or_default();
        let keep_ports: Vec<u16> = match new {
            Some(n) if wants_node_ports(n) => node_ports(n),
            Some(n) if needs_health_check(n) => health_check_port(n).into_iter().collect(),
            _ => Vec::new(),
        };
        let mut keys: Vec<String> = service_ips(old)
            .into_iter()
            .filter(|ip| !keep_ips.contains(ip))
            .map(|ip| format!("{IP_PREFIX}{ip}"))
            .collect();
        keys.extend(
            node_ports(old)
                .into_iter()
                .filter(|p| !keep_ports.contains(p))
                .map(|p| format!("{PORT_PREFIX}{p}")),
        );
        self.release(store, Allocated { keys }).await;
    }

    /// Makes the allocation keys agree with the stored Services: adds missing ones, removes
    /// ones no Service uses.
    pub async fn repair(&self, store: Arc<dyn Store>) -> Result<(), StoreError> {
        let services = list_all(store.as_ref(), "/registry/services/").await?;
        let mut wanted: HashSet<String> = HashSet::new();
        for kv in &services.items {
            let Ok(svc) = serde_json::from_slice::<Value>(&kv.value) else {
                continue;
            };
            for ip in service_ips(&svc) {
                wanted.insert(format!("{IP_PREFIX}{ip}"));
                let _ = store
                    .create(&format!("{IP_PREFIX}{ip}"), owner(&svc).into_bytes())
                    .await;
            }
            for port in node_ports(&svc) {
                wanted.insert(format!("{PORT_PREFIX}{port}"));
                let _ = store
                    .create(&format!("{PORT_PREFIX}{port}"), owner(&svc).into_bytes())
                    .await;
            }
        }
        for prefix in [IP_PREFIX, PORT_PREFIX] {
            let keys = list_all(store.as_ref(), prefix).await?;
            for kv in keys.items {
                // Only keys older than the service list can be orphans; newer ones belong to
                // creates under way.
                if kv.mod_revision <= services.revision && !wanted.contains(&kv.key) {
                    tracing::info!(key = %kv.key, "releasing a service address no service uses");
                    let _ = store.delete(&kv.key, Some(kv.mod_revision)).await;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::ListOptions;
    use crate::storage::sqlite::SqliteStore;

    fn admission() -> Admission {
        Admission {
            service_range: "10.96.0.0/24".parse().unwrap(),
            node_ports: 30000..=30002,
        }
    }

    #[test]
    fn cidrs_parse_and_reserve_network_and_broadcast() {
        let c: Cidr = "10.96.0.5/12".parse().unwrap();
        assert_eq!(c.to_string(), "10.96.0.0/12");
        assert_eq!(c.first(), Ipv4Addr::new(10, 96, 0, 1));
        assert!(!c.contains(Ipv4Addr::new(10, 96, 0, 0)));
        assert!("10.0.0.0".parse::<Cidr>().is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pods_get_their_priority_class_value() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db")).unwrap();
        let key = apimachinery::resources::find("scheduling.k8s.io", "v1", "priorityclasses")
            .unwrap()
            .storage_key(None, "high");
        let pc = json!({"metadata": {"name": "high"}, "value": 1000, "preemptionPolicy": "Never"});
        store
            .create(&key, serde_json::to_vec(&pc).unwrap())
            .await
            .unwrap();
        let adm = admission();
        let mut pod = json!({"spec": {"priorityClassName": "high"}});
        adm.resolve_priority(&store, &mut pod, "p").await.unwrap();
        assert_eq!(pod["spec"]["priority"], 1000);
        assert_eq!(pod["spec"]["preemptionPolicy"], "Never");
        let mut pod = json!({"spec": {"priorityClassName": "system-node-critical"}});
        adm.resolve_priority(&store, &mut pod, "p").await.unwrap();
        assert_eq!(pod["spec"]["priority"], 2_000_001_000);
        let mut pod = json!({"spec": {"priorityClassName": "nope"}});
        let e = adm
            .resolve_priority(&store, &mut pod, "p")
            .await
            .unwrap_err();
        assert!(
            e.message
                .contains("no PriorityClass with name nope was found"),
            "{}",
            e.message
        );
        let mut pod = json!({"spec": {"priorityClassName": "high", "priority": 5}});
        let e = adm
            .resolve_priority(&store, &mut pod, "p")
            .await
            .unwrap_err();
        assert!(
            e.message.contains("must not be provided in pod spec"),
            "{}",
            e.message
        );
        let mut pod = json!({"spec": {}});
        adm.resolve_priority(&store, &mut pod, "p").await.unwrap();
        assert_eq!(pod["spec"]["priority"], 0, "no default class: priority 0");
        assert_eq!(pod["spec"]["preemptionPolicy"], "PreemptLowerPriority");
        assert!(pod["spec"]["priorityClassName"].is_null());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_global_default_class_gives_unnamed_pods_its_priority_and_is_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db")).unwrap();
        let resource =
            apimachinery::resources::find("scheduling.k8s.io", "v1", "priorityclasses").unwrap();
        let adm = admission();
        let standard = json!({"metadata": {"name": "standard"}, "value": 50, "globalDefault": true, "preemptionPolicy": "Never"});
        adm.check_default_priority_class(&store, &standard)
            .await
            .unwrap();
        store
            .create(
                &resource.storage_key(None, "standard"),
                serde_json::to_vec(&standard).unwrap(),
            )
            .await
            .unwrap();
        let mut pod = json!({"spec": {}});
        adm.resolve_priority(&store, &mut pod, "p").await.unwrap();
        assert_eq!(pod["spec"]["priorityClassName"], "standard");
        assert_eq!(pod["spec"]["priority"], 50);
        assert_eq!(pod["spec"]["preemptionPolicy"], "Never");
        // A second default is refused; updating the default itself, or a non-default, is not.
        let second = json!({"metadata": {"name": "other"}, "value": 7, "globalDefault": true});
        let e = adm
            .check_default_priority_class(&store, &second)
            .await
            .unwrap_err();
        assert_eq!(
            e.message,
            "priorityclasses.scheduling.k8s.io \"other\" is forbidden: PriorityClass standard is already marked as default. Only one default can exist"
        );
        adm.check_default_priority_class(&store, &standard)
            .await
            .unwrap();
        let plain = json!({"metadata": {"name": "other"}, "value": 7});
        adm.check_default_priority_class(&store, &plain)
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn addresses_are_never_given_twice_and_come_back_on_release() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db")).unwrap();
        let adm = admission();
        let mut a = json!({"metadata": {"name": "a", "namespace": "d"}, "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "ports": [{"port": 80, "protocol": "TCP"}]}});
        adm.allocate_service(&store, &mut a, None).await.unwrap();
        assert_eq!(a["spec"]["clusterIPs"], json!(["10.96.0.10"]));
        let port = a["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
        assert!((30000..=30002).contains(&port));

        let mut b = json!({"metadata": {"name": "b", "namespace": "d"}, "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}});
        let err = adm
            .allocate_service(&store, &mut b, None)
            .await
            .unwrap_err();
        assert_eq!(err.code, 422);
        assert!(
            err.message.contains("provided IP is already allocated"),
            "{}",
            err.message
        );

        let mut c = json!({"metadata": {"name": "c", "namespace": "d"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": port}]}});
        let err = adm
            .allocate_service(&store, &mut c, None)
            .await
            .unwrap_err();
        assert!(
            err.message.contains("provided port is already allocated"),
            "{}",
            err.message
        );
        // The failed attempt released the ClusterIP it had taken.
        let ips = store
            .list(&ListOptions {
                prefix: IP_PREFIX.into(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(ips.items.len(), 1);

        adm.release_service(&store, &a, None).await;
        let mut d = json!({"metadata": {"name": "d", "namespace": "d"}, "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}});
        adm.allocate_service(&store, &mut d, None).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dynamic_cluster_ips_stay_out_of_the_low_band_kept_for_fixed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db")).unwrap();
        let adm = admission();
        for i in 0..40 {
            let mut svc = json!({"metadata": {"name": format!("s{i}"), "namespace": "d"}, "spec": {"ports": [{"port": 80}]}});
            adm.allocate_service(&store, &mut svc, None).await.unwrap();
            let ip: Ipv4Addr = svc["spec"]["clusterIP"].as_str().unwrap().parse().unwrap();
            assert!(
                ip.octets()[3] >= 17,
                "{ip} is in the band of fixed addresses"
            );
        }
        // The cluster DNS's fixed address is still free.
        let mut dns = json!({"metadata": {"name": "kube-dns", "namespace": "kube-system"}, "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 53}]}});
        adm.allocate_service(&store, &mut dns, None).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn updates_keep_the_addresses_they_had() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db")).unwrap();
        let adm = admission();
        let mut old = json!({"metadata": {"name": "a", "namespace": "d"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}});
        adm.allocate_service(&store, &mut old, None).await.unwrap();
        let mut new = json!({"metadata": {"name": "a", "namespace": "d"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}});
        adm.allocate_service(&store, &mut new, Some(&old))
            .await
            .unwrap();
        assert_eq!(new["spec"]["clusterIP"], old["spec"]["clusterIP"]);
        assert_eq!(
            new["spec"]["ports"][0]["nodePort"],
            old["spec"]["ports"][0]["nodePort"]
        );
        let mut changed = new.clone();
        changed["spec"]["clusterIP"] = "10.96.0.99".into();
        assert_eq!(
            adm.allocate_service(&store, &mut changed, Some(&old))
                .await
                .unwrap_err()
                .code,
            422
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn local_load_balancers_get_a_health_check_node_port() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db")).unwrap();
        let adm = admission();
        let spec = json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "allocateLoadBalancerNodePorts": false, "ports": [{"port": 80}]});
        let mut lb = json!({"metadata": {"name": "lb", "namespace": "d"}, "spec": spec});
        adm.allocate_service(&store, &mut lb, None).await.unwrap();
        let hc = lb["spec"]["healthCheckNodePort"].as_u64().unwrap();
        assert!((30000..=30002).contains(&hc), "{lb}");
        assert!(lb["spec"]["ports"][0]["nodePort"].is_null());
        // An update keeps it (and does not release it).
        let mut again = json!({"metadata": {"name": "lb", "namespace": "d"}, "spec": spec});
        adm.allocate_service(&store, &mut again, Some(&lb))
            .await
            .unwrap();
        assert_eq!(again["spec"]["healthCheckNodePort"], json!(hc));
        adm.release_service(&store, &lb, Some(&again)).await;
        let mut clash = json!({"metadata": {"name": "x", "namespace": "d"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": hc}]}});
        assert!(
            adm.allocate_service(&store, &mut clash, None)
                .await
                .unwrap_err()
                .message
                .contains("provided port is already allocated")
        );
        // Cluster policy: none.
        let mut cluster = json!({"metadata": {"name": "c", "namespace": "d"}, "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}});
        adm.allocate_service(&store, &mut cluster, None)
            .await
            .unwrap();
        assert!(cluster["spec"].get("healthCheckNodePort").is_none());
    }
}
