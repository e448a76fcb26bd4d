//! The EndpointSlice controller, as upstream's: for every Service with a selector, the pods it
//! selects become endpoints in EndpointSlices labelled `kubernetes.io/service-name` and
//! `endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io`, owned by the
//! Service (so the garbage collector removes them with it), named `<service>-<random>`.
//!
//! Slices hold at most [`MAX_ENDPOINTS_PER_SLICE`] endpoints of one address family and one
//! port mapping: pods whose named target ports resolve to different numbers land in different
//! slices. Each endpoint carries ready/serving/terminating (terminating pods stay, with
//! ready=false and serving = their readiness), nodeName, zone (the node's
//! `topology.kubernetes.io/zone`), hostname (when the pod's subdomain is the service) and a
//! targetRef. An address family with no endpoints keeps one empty placeholder slice.
//! Services without a selector (the `kubernetes` Service among them) are left alone.
//!
//! The decisions are pure ([`desired_groups`], [`plan`]); the reconcile lists, plans and
//! writes only slices that change, keeping endpoints in the slice they are already in.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::{Node, Pod, Service, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};

use super::{
    Context, ControllerError, api_err, controller_reference, is_not_found, is_ready, object_key,
    shutdown_signal,
};

/// The label naming a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming the controller that manages a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`MANAGED_BY_LABEL`], as upstream's.
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
/// The label marking objects of headless Services.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Upstream's default `--max-endpoints-per-slice`.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Whether a pod belongs in a Service's endpoints at all: not finished, has an IP, and (unless
/// `include_terminating`) not being deleted. Upstream's `ShouldPodBeInEndpoints`.
pub(crate) fn should_pod_be_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    if apimachinery::scheduling::is_terminal(pod) {
        return false;
    }
    let status = pod.status.as_ref();
    let has_ip = status
        .and_then(|s| s.pod_ip.as_deref())
        .is_some_and(|ip| !ip.is_empty())
        || status
            .and_then(|s| s.pod_ips.as_ref())
            .is_some_and(|ips| !ips.is_empty());
    has_ip && (include_terminating || pod.metadata.deletion_timestamp.is_none())
}

/// The pod's hostname when it is published for the service (its subdomain is the service).
pub(crate) fn hostname_for(pod: &Pod, svc: &Service) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let hostname = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    (spec.subdomain.as_deref() == Some(svc.name_any().as_str())
        && pod.namespace() == svc.namespace())
    .then(|| hostname.to_string())
}

/// The container port a service port reaches on `pod`: a numbered target port as it is, a
/// named one looked up among the pod's container ports of the same protocol.
pub(crate) fn find_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(0)) => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            if let Ok(n) = name.parse::<i32>() {
                return Some(n);
            }
            let protocol = port.protocol.as_deref().unwrap_or("TCP");
            pod.spec
                .iter()
                .flat_map(|s| &s.containers)
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|p| p.container_port)
        }
    }
}

/// A pod's reference as endpoints carry it.
pub(crate) fn target_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.namespace(),
        name: Some(pod.name_any()),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

/// The address families of a Service's slices: its ipFamilies, or IPv4.
pub(crate) fn address_types(svc: &Service) -> Vec<String> {
    let families: Vec<String> = svc
        .spec
        .as_ref()
        .and_then(|s| s.ip_families.clone())
        .unwrap_or_default();
    if families.is_empty() {
        vec!["IPv4".into()]
    } else {
        families
    }
}

fn pod_ip_of_family(pod: &Pod, family: &str) -> Option<String> {
    let status = pod.status.as_ref()?;
    let mut ips: Vec<&str> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.as_str())
        .collect();
    if let Some(ip) = status.pod_ip.as_deref() {
        ips.insert(0, ip);
    }
    ips.into_iter()
        .find(|ip| match ip.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(_)) => family == "IPv4",
            Ok(std::net::IpAddr::V6(_)) => family == "IPv6",
            Err(_) => false,
        })
        .map(String::from)
}

/// The ports of a slice as a sortable key.
pub(crate) type PortsKey = Vec<(String, String, i32, String)>;

fn ports_key(ports: &[EndpointPort]) -> PortsKey {
    let mut key: PortsKey = ports
        .iter()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                p.port.unwrap_or(0),
                p.app_protocol.clone().unwrap_or_default(),
            )
        })
        .collect();
    key.sort();
    key
}

/// The endpoints wanted for a Service, grouped by address family and port mapping.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Groups {
    /// (address type, ports) → the ports and endpoints sorted by address.
    pub groups: BTreeMap<(String, PortsKey), (Vec<EndpointPort>, Vec<Endpoint>)>,
    /// Every address family the Service wants.
    pub address_types: Vec<String>,
}

/// The endpoints a Service wants from `pods` (those it selects); `zone_of` gives a node's zone.
pub fn desired_groups(
    svc: &Service,
    pods: &[Pod],
    zone_of: impl Fn(&str) -> Option<String>,
) -> Groups {
    let spec = svc.spec.clone().unwrap_or_default();
    let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
    let address_types = address_types(svc);
    let mut groups: BTreeMap<(String, PortsKey), (Vec<EndpointPort>, Vec<Endpoint>)> =
        BTreeMap::new();
    for pod in pods {
        if !should_pod_be_in_endpoints(pod, true) {
            continue;
        }
        let ports: Vec<EndpointPort> = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|sp| {
                Some(EndpointPort {
                    name: Some(sp.name.clone().unwrap_or_default()),
                    protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                    port: Some(find_port(pod, sp)?),
                    app_protocol: sp.app_protocol.clone(),
                })
            })
            .collect();
        let serving = is_ready(pod);
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        for family in &address_types {
            let Some(ip) = pod_ip_of_family(pod, family) else {
                continue;
            };
            let endpoint = Endpoint {
                addresses: vec![ip],
                conditions: Some(EndpointConditions {
                    // Never ready while terminating, unless not-ready addresses are published.
                    ready: Some(publish_not_ready || (serving && !terminating)),
                    serving: Some(serving),
                    terminating: Some(terminating),
                }),
                hostname: hostname_for(pod, svc),
                node_name: node.clone().filter(|n| !n.is_empty()),
                zone: node.as_deref().and_then(&zone_of),
                target_ref: Some(target_ref(pod)),
                ..Default::default()
            };
            let key = (family.clone(), ports_key(&ports));
            groups
                .entry(key)
                .or_insert_with(|| (ports.clone(), Vec::new()))
                .1
                .push(endpoint);
        }
    }
    for (_, endpoints) in groups.values_mut() {
        endpoints.sort_by(|a, b| a.addresses.cmp(&b.addresses));
    }
    Groups {
        groups,
        address_types,
    }
}

/// What to write to make a Service's slices right.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    /// New slices (generateName set).
    pub create: Vec<EndpointSlice>,
    /// Changed slices (name and resourceVersion of the existing one).
    pub update: Vec<EndpointSlice>,
    /// Names of slices to delete.
    pub delete: Vec<String>,
}

/// The labels a Service's slices carry: the Service's own, plus the service name, the
/// managing controller and, for a headless Service, the headless label.
pub fn slice_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = svc.labels().clone();
    labels.remove(MANAGED_BY_LABEL);
    labels.remove(HEADLESS_LABEL);
    labels.insert(SERVICE_NAME_LABEL.into(), svc.name_any());
    labels.insert(MANAGED_BY_LABEL.into(), CONTROLLER_NAME.into());
    if is_headless(svc) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels
}

/// Whether a Service is headless (clusterIP None).
pub(crate) fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

fn new_slice(svc: &Service, address_type: &str, ports: Vec<EndpointPort>) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", svc.name_any())),
            namespace: svc.namespace(),
            labels: Some(slice_labels(svc)),
            owner_references: Some(vec![controller_reference(svc)]),
            ..Default::default()
        },
        address_type: address_type.into(),
        endpoints: Vec::new(),
        ports: Some(ports),
    }
}

fn endpoint_key(e: &Endpoint) -> String {
    e.addresses.join(",")
}

/// Plans the writes that turn `existing` (the Service's managed slices) into `want`, with at
/// most `max` endpoints per slice. Endpoints stay in the slice they are in; new ones fill
/// slices with room first; slices left empty go, except one placeholder per address family
/// that has no endpoints at all.
pub fn plan(svc: &Service, want: &Groups, existing: &[EndpointSlice], max: usize) -> Plan {
    let max = max.max(1);
    let labels = slice_labels(svc);
    let mut out = Plan::default();
    let mut existing: Vec<&EndpointSlice> = existing.iter().collect();
    existing.sort_by_key(|s| s.name_any());
    let mut kept_types: BTreeSet<String> = BTreeSet::new();
    let mut unused: Vec<&EndpointSlice> = Vec::new();
    let mut used_names: BTreeSet<String> = BTreeSet::new();
    for ((family, key), (ports, endpoints)) in &want.groups {
        let wanted: BTreeMap<String, &Endpoint> =
            endpoints.iter().map(|e| (endpoint_key(e), e)).collect();
        let mut placed: BTreeSet<String> = BTreeSet::new();
        // Existing slices of this group keep the endpoints they have that are still wanted.
        let mut slices: Vec<(EndpointSlice, bool)> = Vec::new();
        let mine: Vec<&EndpointSlice> = existing
            .iter()
            .filter(|s| {
                &s.address_type == family
                    && &ports_key(s.ports.as_deref().unwrap_or_default()) == key
                    && !used_names.contains(&s.name_any())
            })
            .copied()
            .collect();
        for slice in mine {
            used_names.insert(slice.name_any());
            let mut next = (*slice).clone();
            next.endpoints = slice
                .endpoints
                .iter()
                .filter_map(|e| {
                    let k = endpoint_key(e);
                    let w = wanted.get(&k)?;
                    if !placed.insert(k) {
                        return None;
                    }
                    Some((*w).clone())
                })
                .collect();
            slices.push((next, false));
        }
        // New endpoints fill slices with room, then new slices.
        for e in endpoints {
            if placed.contains(&endpoint_key(e)) {
                continue;
            }
            placed.insert(endpoint_key(e));
            match slices.iter_mut().find(|(s, _)| s.endpoints.len() < max) {
                Some((s, _)) => s.endpoints.push(e.clone()),
                None => {
                    let mut s = new_slice(svc, family, ports.clone());
                    s.endpoints.push(e.clone());
                    slices.push((s, true));
                }
            }
        }
        for (slice, is_new) in slices {
            if is_new {
                kept_types.insert(family.clone());
                out.create.push(slice);
                continue;
            }
            let before = existing
                .iter()
                .find(|s| s.name_any() == slice.name_any())
                .copied();
            if slice.endpoints.is_empty() {
                if let Some(b) = before {
                    unused.push(b);
                }
                continue;
            }
            kept_types.insert(family.clone());
            if let Some(b) = before
                && (b.endpoints != slice.endpoints || b.labels() != &labels)
            {
                let mut updated = slice;
                updated.metadata.labels = Some(labels.clone());
                out.update.push(updated);
            }
        }
    }
    unused.extend(
        existing
            .iter()
            .filter(|s| !used_names.contains(&s.name_any()))
            .copied(),
    );
    // A family without endpoints keeps (or gets) one empty slice, as upstream's placeholder.
    for family in &want.address_types {
        if kept_types.contains(family) {
            continue;
        }
        let reusable = unused.iter().position(|s| {
            &s.address_type == family
                && s.endpoints.is_empty()
                && s.ports.as_deref().unwrap_or_default().is_empty()
        });
        match reusable {
            Some(i) => {
                let s = unused.remove(i);
                if s.labels() != &labels {
                    let mut updated = s.clone();
                    updated.metadata.labels = Some(labels.clone());
                    out.update.push(updated);
                }
            }
            None => out.create.push(new_slice(svc, family, Vec::new())),
        }
    }
    out.delete = unused.iter().map(|s| s.name_any()).collect();
    out.delete.sort();
    out.delete.dedup();
    out
}

/// Services in `svc`'s reach of a pod: those whose selector matches the pod's labels now, and
/// those that listed the pod last time (so a pod that stopped matching leaves them).
#[derive(Default)]
pub(crate) struct Members {
    /// (namespace, pod name) → names of the Services whose endpoints held it.
    by_pod: Mutex<HashMap<(String, String), BTreeSet<String>>>,
}

impl Members {
    /// Records that `service` now holds exactly `pods` (names) in `ns`.
    pub(crate) fn record(&self, ns: &str, service: &str, pods: &BTreeSet<String>) {
        let Ok(mut map) = self.by_pod.lock() else {
            return;
        };
        map.retain(|(pns, pod), services| {
            if pns == ns && !pods.contains(pod) {
                services.remove(service);
            }
            !services.is_empty()
        });
        for pod in pods {
            map.entry((ns.to_string(), pod.clone()))
                .or_default()
                .insert(service.to_string());
        }
    }

    /// The Services to look at again when `pod` changes.
    pub(crate) fn services_for(
        &self,
        services: &Store<Service>,
        pod: &Pod,
    ) -> Vec<ObjectRef<Service>> {
        let ns = pod.namespace().unwrap_or_default();
        let mut out: BTreeSet<String> = self
            .by_pod
            .lock()
            .ok()
            .and_then(|m| m.get(&(ns.clone(), pod.name_any())).cloned())
            .unwrap_or_default();
        for svc in services.state() {
            if svc.namespace().as_deref() != Some(ns.as_str()) {
                continue;
            }
            let Some(selector) = selector_of(&svc) else {
                continue;
            };
            if selector.iter().all(|(k, v)| pod.labels().get(k) == Some(v)) {
                out.insert(svc.name_any());
            }
        }
        out.into_iter()
            .map(|name| ObjectRef::new(&name).within(&ns))
            .collect()
    }
}

/// A Service's selector when it has a non-empty one (the controllers manage only those).
pub(crate) fn selector_of(svc: &Service) -> Option<BTreeMap<String, String>> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.clone().filter(|s| !s.is_empty())
}

/// The pods of `ns` that `selector` selects.
pub(crate) async fn selected_pods(
    client: &kube::Client,
    ns: &str,
    selector: &BTreeMap<String, String>,
    object: &str,
) -> Result<Vec<Pod>, ControllerError> {
    let label_selector = selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    Ok(pods
        .list(&ListParams::default().labels(&label_selector))
        .await
        .map_err(api_err(object, "listing pods"))?
        .items)
}

struct Slices {
    ctx: Context,
    members: Arc<Members>,
    nodes: Store<Node>,
}

async fn reconcile(svc: Arc<Service>, this: Arc<Slices>) -> Result<Action, ControllerError> {
    let ns = svc.namespace().unwrap_or_default();
    let object = object_key(svc.as_ref());
    if svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let Some(selector) = selector_of(&svc) else {
        // Not ours: the user's (or the API server's) slices stay as they are.
        return Ok(Action::await_change());
    };
    let client = &this.ctx.client;
    let pods = selected_pods(client, &ns, &selector, &object).await?;
    let names: BTreeSet<String> = pods.iter().map(ResourceExt::name_any).collect();
    this.members.record(&ns, &svc.name_any(), &names);
    let nodes = &this.nodes;
    let want = desired_groups(&svc, &pods, |node| {
        nodes
            .get(&ObjectRef::new(node))
            .and_then(|n| n.labels().get(ZONE_LABEL).cloned())
    });
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
    let existing = slices
        .list(&ListParams::default().labels(&format!(
            "{SERVICE_NAME_LABEL}={},{MANAGED_BY_LABEL}={CONTROLLER_NAME}",
            svc.name_any()
        )))
        .await
        .map_err(api_err(&object, "listing endpointslices"))?
        .items;
    let plan = plan(&svc, &want, &existing, MAX_ENDPOINTS_PER_SLICE);
    for slice in &plan.update {
        slices
            .replace(&slice.name_any(), &PostParams::default(), slice)
            .await
            .map_err(api_err(&object, "updating an endpointslice"))?;
    }
    for slice in &plan.create {
        slices
            .create(&PostParams::default(), slice)
            .await
            .map_err(api_err(&object, "creating an endpointslice"))?;
    }
    for name in &plan.delete {
        match slices.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(api_err(&object, "deleting an endpointslice")(e)),
        }
    }
    if !(plan.create.is_empty() && plan.update.is_empty() && plan.delete.is_empty()) {
        tracing::info!(
            service = %object,
            created = plan.create.len(),
            updated = plan.update.len(),
            deleted = plan.delete.len(),
            "endpointslices synced"
        );
    }
    Ok(Action::await_change())
}

fn error_policy(_svc: Arc<Service>, error: &ControllerError, _this: Arc<Slices>) -> Action {
    tracing::warn!(%error, "endpointslice reconcile failed; retrying");
    Action::requeue(Duration::from_secs(1))
}

/// Keeps a reflector of nodes (for zones) running until `shutdown`; returns its store.
pub(crate) fn node_store(
    client: &kube::Client,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Store<Node> {
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(Api::<Node>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects()
    .for_each(|_| futures::future::ready(()));
    tokio::spawn(async move {
        tokio::select! {
            () = stream => {}
            () = shutdown_signal(shutdown) => {}
        }
    });
    reader
}

/// Runs the EndpointSlice controller until `shutdown` turns true.
pub async fn run(client: kube::Client, shutdown: tokio::sync::watch::Receiver<bool>) {
    let nodes = node_store(&client, shutdown.clone());
    let services: Api<Service> = Api::all(client.clone());
    let controller = Controller::new(services, watcher::Config::default());
    let store = controller.store();
    let members = Arc::new(Members::default());
    let this = Arc::new(Slices {
        ctx: Context::new(client.clone(), "endpointslice-controller"),
        members: members.clone(),
        nodes,
    });
    controller
        .owns(
            Api::<EndpointSlice>::all(client.clone()),
            watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={CONTROLLER_NAME}")),
        )
        .watches(
            Api::<Pod>::all(client),
            watcher::Config::default(),
            move |pod| members.services_for(&store, &pod),
        )
        .graceful_shutdown_on(shutdown_signal(shutdown))
        .run(reconcile, error_policy, this)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "endpointslice controller");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerPort, PodIP, PodStatus};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use serde_json::json;

    fn svc(extra: serde_json::Value) -> Service {
        let mut base = json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "svc-uid", "labels": {"app": "web"}},
            "spec": {"selector": {"app": "web"}, "clusterIP": "10.96.0.10", "ipFamilies": ["IPv4"],
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}]},
        });
        merge(&mut base, extra);
        serde_json::from_value(base).unwrap()
    }

    fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn pod(name: &str, ip: &str, port: i32, ready: bool) -> Pod {
        let mut p = Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut spec = k8s_openapi::api::core::v1::PodSpec {
            node_name: Some("n1".into()),
            ..Default::default()
        };
        spec.containers.push(k8s_openapi::api::core::v1::Container {
            name: "c".into(),
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: port,
                ..Default::default()
            }]),
            ..Default::default()
        });
        p.spec = Some(spec);
        let conditions = ready.then(|| {
            vec![k8s_openapi::api::core::v1::PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }]
        });
        p.status = Some(PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some(ip.into()),
            pod_ips: Some(vec![PodIP { ip: ip.into() }]),
            conditions,
            ..Default::default()
        });
        p
    }

    fn no_zone(_: &str) -> Option<String> {
        None
    }

    fn conditions(e: &Endpoint) -> (bool, bool, bool) {
        let c = e.conditions.clone().unwrap();
        (c.ready.unwrap(), c.serving.unwrap(), c.terminating.unwrap())
    }

    #[test]
    fn named_target_ports_resolve_per_pod_into_separate_slices() {
        let s = svc(json!({}));
        let pods = vec![
            pod("a", "10.0.0.1", 8080, true),
            pod("b", "10.0.0.2", 9090, true),
        ];
        let want = desired_groups(&s, &pods, no_zone);
        assert_eq!(want.groups.len(), 2);
        let plan = plan(&s, &want, &[], MAX_ENDPOINTS_PER_SLICE);
        assert_eq!(plan.create.len(), 2);
        let mut ports: Vec<i32> = plan
            .create
            .iter()
            .map(|s| s.ports.as_ref().unwrap()[0].port.unwrap())
            .collect();
        ports.sort();
        assert_eq!(ports, vec![8080, 9090]);
        let slice = &plan.create[0];
        assert_eq!(slice.metadata.generate_name.as_deref(), Some("web-"));
        assert_eq!(slice.labels()[SERVICE_NAME_LABEL], "web");
        assert_eq!(slice.labels()[MANAGED_BY_LABEL], CONTROLLER_NAME);
        let owner = &slice.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Service", "svc-uid")
        );
        assert_eq!(owner.controller, Some(true));
    }

    #[test]
    fn a_port_a_pod_does_not_name_is_left_out_of_its_slice() {
        let s = svc(json!({"spec": {"ports": [
            {"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"},
            {"name": "metrics", "port": 9100, "protocol": "TCP", "targetPort": "metrics"}]}}));
        let want = desired_groups(&s, &[pod("a", "10.0.0.1", 8080, true)], no_zone);
        let (ports, _) = want.groups.values().next().unwrap();
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].name.as_deref(), Some("http"));
    }

    #[test]
    fn conditions_follow_readiness_and_termination_as_upstream() {
        let s = svc(json!({}));
        let mut terminating = pod("t", "10.0.0.3", 8080, true);
        terminating.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
        );
        let pods = vec![
            pod("r", "10.0.0.1", 8080, true),
            pod("n", "10.0.0.2", 8080, false),
            terminating,
        ];
        let want = desired_groups(&s, &pods, no_zone);
        let (_, eps) = want.groups.values().next().unwrap();
        let got: Vec<(bool, bool, bool)> = eps.iter().map(conditions).collect();
        assert_eq!(
            got,
            vec![
                (true, true, false),
                (false, false, false),
                (false, true, true)
            ]
        );
        let publish = svc(json!({"spec": {"publishNotReadyAddresses": true}}));
        let want = desired_groups(&publish, &pods, no_zone);
        let (_, eps) = want.groups.values().next().unwrap();
        assert!(
            eps.iter().all(|e| conditions(e).0),
            "all ready when published"
        );
    }

    #[test]
    fn pods_without_an_ip_or_finished_are_not_endpoints() {
        let s = svc(json!({}));
        let mut no_ip = pod("a", "10.0.0.1", 8080, true);
        no_ip.status.as_mut().unwrap().pod_ip = None;
        no_ip.status.as_mut().unwrap().pod_ips = None;
        let mut done = pod("b", "10.0.0.2", 8080, true);
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        let want = desired_groups(&s, &[no_ip, done], no_zone);
        assert!(want.groups.is_empty());
        // Only a placeholder: one empty slice of the family, no ports.
        let plan = plan(&s, &want, &[], MAX_ENDPOINTS_PER_SLICE);
        assert_eq!(plan.create.len(), 1);
        assert!(plan.create[0].endpoints.is_empty());
        assert_eq!(plan.create[0].ports.as_deref(), Some(&[][..]));
    }

    #[test]
    fn endpoints_carry_node_zone_hostname_and_target() {
        let s = svc(json!({"spec": {"clusterIP": "None"}}));
        let mut p = pod("a", "10.0.0.1", 8080, true);
        p.spec.as_mut().unwrap().hostname = Some("db-0".into());
        p.spec.as_mut().unwrap().subdomain = Some("web".into());
        let want = desired_groups(&s, &[p], |n| (n == "n1").then(|| "z1".to_string()));
        let (_, eps) = want.groups.values().next().unwrap();
        let e = &eps[0];
        assert_eq!(e.hostname.as_deref(), Some("db-0"));
        assert_eq!(e.node_name.as_deref(), Some("n1"));
        assert_eq!(e.zone.as_deref(), Some("z1"));
        assert_eq!(e.target_ref.as_ref().unwrap().name.as_deref(), Some("a"));
        assert_eq!(
            slice_labels(&s).get(HEADLESS_LABEL).map(String::as_str),
            Some("")
        );
    }

    #[test]
    fn one_slice_per_address_family() {
        let s = svc(json!({"spec": {"ipFamilies": ["IPv4", "IPv6"]}}));
        let mut p = pod("a", "10.0.0.1", 8080, true);
        p.status.as_mut().unwrap().pod_ips = Some(vec![
            PodIP {
                ip: "10.0.0.1".into(),
            },
            PodIP {
                ip: "fd00::1".into(),
            },
        ]);
        let plan = plan(&s, &desired_groups(&s, &[p], no_zone), &[], 100);
        let mut types: Vec<&str> = plan
            .create
            .iter()
            .map(|s| s.address_type.as_str())
            .collect();
        types.sort();
        assert_eq!(types, vec!["IPv4", "IPv6"]);
    }

    fn named(mut s: EndpointSlice, name: &str) -> EndpointSlice {
        s.metadata.name = Some(name.into());
        s.metadata.generate_name = None;
        s
    }

    #[test]
    fn slices_hold_at_most_the_maximum_and_keep_endpoints_where_they_are() {
        let s = svc(json!({}));
        let pods: Vec<Pod> = (1..=5)
            .map(|i| pod(&format!("p{i}"), &format!("10.0.0.{i}"), 8080, true))
            .collect();
        let first = plan(&s, &desired_groups(&s, &pods, no_zone), &[], 2);
        assert_eq!(first.create.len(), 3);
        let existing: Vec<EndpointSlice> = first
            .create
            .into_iter()
            .enumerate()
            .map(|(i, sl)| named(sl, &format!("web-{i}")))
            .collect();
        // Nothing changed: nothing written.
        let again = plan(&s, &desired_groups(&s, &pods, no_zone), &existing, 2);
        assert_eq!(again, Plan::default());
        // p2 goes and p9 comes: only the slice that held p2 changes, and p9 takes its place.
        let mut pods2: Vec<Pod> = pods
            .iter()
            .filter(|p| p.name_any() != "p2")
            .cloned()
            .collect();
        pods2.push(pod("p9", "10.0.0.9", 8080, true));
        let change = plan(&s, &desired_groups(&s, &pods2, no_zone), &existing, 2);
        assert!(change.create.is_empty() && change.delete.is_empty());
        assert_eq!(change.update.len(), 1);
        let addrs: Vec<String> = change.update[0]
            .endpoints
            .iter()
            .map(|e| e.addresses[0].clone())
            .collect();
        assert_eq!(addrs, vec!["10.0.0.1", "10.0.0.9"]);
        // Every pod gone: slices go but one placeholder stays.
        let gone = plan(&s, &desired_groups(&s, &[], no_zone), &existing, 2);
        assert_eq!(gone.delete.len() + gone.update.len(), 3);
        assert_eq!(gone.create.len(), 1);
        assert!(gone.create[0].endpoints.is_empty());
    }

    #[test]
    fn a_readiness_change_updates_only_its_slice_in_place() {
        let s = svc(json!({}));
        let pods = vec![pod("a", "10.0.0.1", 8080, false)];
        let existing: Vec<EndpointSlice> = plan(&s, &desired_groups(&s, &pods, no_zone), &[], 100)
            .create
            .into_iter()
            .map(|sl| named(sl, "web-x"))
            .collect();
        let ready = vec![pod("a", "10.0.0.1", 8080, true)];
        let p = plan(&s, &desired_groups(&s, &ready, no_zone), &existing, 100);
        assert_eq!(p.update.len(), 1);
        assert_eq!(p.update[0].name_any(), "web-x");
        assert!(conditions(&p.update[0].endpoints[0]).0);
    }

    #[test]
    fn numbered_and_defaulted_target_ports_are_used_as_they_are() {
        let p = pod("a", "10.0.0.1", 8080, true);
        let port = |t: Option<IntOrString>| ServicePort {
            port: 80,
            target_port: t,
            ..Default::default()
        };
        assert_eq!(find_port(&p, &port(None)), Some(80));
        assert_eq!(find_port(&p, &port(Some(IntOrString::Int(81)))), Some(81));
        assert_eq!(
            find_port(&p, &port(Some(IntOrString::String("http".into())))),
            Some(8080)
        );
        assert_eq!(
            find_port(&p, &port(Some(IntOrString::String("nope".into())))),
            None
        );
        let udp = ServicePort {
            protocol: Some("UDP".into()),
            ..port(Some(IntOrString::String("http".into())))
        };
        assert_eq!(find_port(&p, &udp), None, "the protocol must match too");
    }

    #[test]
    fn services_without_a_selector_are_not_managed() {
        let mut s = svc(json!({}));
        s.spec.as_mut().unwrap().selector = None;
        assert!(selector_of(&s).is_none());
        let ext = svc(json!({"spec": {"type": "ExternalName"}}));
        assert!(selector_of(&ext).is_none());
    }
}
