//! The Endpoints controller, as upstream's: every Service with a selector has an Endpoints
//! object of the same name whose subsets list the selected pods' addresses (ready ones under
//! `addresses`, the others under `notReadyAddresses`, all ready with
//! `publishNotReadyAddresses`; terminating pods only then), grouped by the port numbers they
//! resolve to. Written only when it changes. When a Service goes, its Endpoints go too;
//! Endpoints of Services without a selector (the `kubernetes` Service's among them) are the
//! user's and are left alone.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Pod, Service,
};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};

use super::endpointslice::{
    HEADLESS_LABEL, Members, find_port, hostname_for, is_headless, selected_pods, selector_of,
    should_pod_be_in_endpoints, target_ref,
};
use super::{
    Context, ControllerError, api_err, is_not_found, is_ready, object_key, shutdown_signal,
};

/// The annotation upstream leaves on Endpoints that serve as a leader-election lock; such
/// objects are never taken for leftovers.
const LEADER_ANNOTATION: &str = "control-plane.alpha.kubernetes.io/leader";

type PortKey = (String, i32, String, String);

fn port_key(p: &EndpointPort) -> PortKey {
    (
        p.name.clone().unwrap_or_default(),
        p.port,
        p.protocol.clone().unwrap_or_else(|| "TCP".into()),
        p.app_protocol.clone().unwrap_or_default(),
    )
}

/// The subsets a Service's Endpoints should have for `pods` (those it selects), packed and
/// sorted as upstream's `RepackSubsets`: addresses with the same set of ports share a subset.
pub fn desired_subsets(svc: &Service, pods: &[Pod]) -> Vec<EndpointSubset> {
    let spec = svc.spec.clone().unwrap_or_default();
    let publish = spec.publish_not_ready_addresses.unwrap_or(false);
    let ports = spec.ports.unwrap_or_default();
    // (ip, ready) → the address and the ports it serves.
    let mut by_address: BTreeMap<
        (String, bool),
        (EndpointAddress, BTreeMap<PortKey, EndpointPort>),
    > = BTreeMap::new();
    for pod in pods {
        if !should_pod_be_in_endpoints(pod, publish) {
            continue;
        }
        let Some(ip) = pod.status.as_ref().and_then(|s| {
            s.pod_ip
                .clone()
                .or_else(|| Some(s.pod_ips.as_ref()?.first()?.ip.clone()))
        }) else {
            continue;
        };
        let address = EndpointAddress {
            ip: ip.clone(),
            hostname: hostname_for(pod, svc),
            node_name: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty()),
            target_ref: Some(target_ref(pod)),
        };
        let ready = publish || is_ready(pod);
        let entry = by_address
            .entry((ip, ready))
            .or_insert_with(|| (address, BTreeMap::new()));
        if ports.is_empty() && is_headless(svc) {
            continue;
        }
        for sp in &ports {
            let Some(number) = find_port(pod, sp) else {
                continue;
            };
            let p = EndpointPort {
                name: sp.name.clone().filter(|n| !n.is_empty()),
                port: number,
                protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: sp.app_protocol.clone(),
            };
            entry.1.insert(port_key(&p), p);
        }
    }
    // Port set → (ready addresses, not-ready addresses).
    type Packed = (
        Vec<EndpointPort>,
        Vec<EndpointAddress>,
        Vec<EndpointAddress>,
    );
    let mut packed: BTreeMap<Vec<PortKey>, Packed> = BTreeMap::new();
    for ((_, ready), (address, ports)) in by_address {
        // An address with no port resolved is not an endpoint (unless headless without ports).
        if ports.is_empty() && !(spec_has_no_ports(svc) && is_headless(svc)) {
            continue;
        }
        let key: Vec<PortKey> = ports.keys().cloned().collect();
        let slot = packed
            .entry(key)
            .or_insert_with(|| (ports.into_values().collect(), Vec::new(), Vec::new()));
        if ready {
            slot.1.push(address);
        } else {
            slot.2.push(address);
        }
    }
    packed
        .into_values()
        .map(|(ports, ready, not_ready)| EndpointSubset {
            addresses: (!ready.is_empty()).then_some(ready),
            not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
            ports: (!ports.is_empty()).then_some(ports),
        })
        .collect()
}

fn spec_has_no_ports(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .is_none_or(Vec::is_empty)
}

/// The labels of a Service's Endpoints: the Service's, plus the headless label when headless.
pub fn endpoints_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = svc.labels().clone();
    labels.remove(HEADLESS_LABEL);
    if is_headless(svc) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels
}

fn normalized(subsets: Option<&Vec<EndpointSubset>>) -> Vec<EndpointSubset> {
    subsets
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|mut s| {
            s.addresses = s.addresses.filter(|a| !a.is_empty());
            s.not_ready_addresses = s.not_ready_addresses.filter(|a| !a.is_empty());
            s.ports = s.ports.filter(|p| !p.is_empty());
            s
        })
        .collect()
}

/// The Endpoints to write for `svc`, or `None` when `existing` is already right.
pub fn endpoints_update(
    svc: &Service,
    pods: &[Pod],
    existing: Option<&Endpoints>,
) -> Option<Endpoints> {
    let subsets = desired_subsets(svc, pods);
    let labels = endpoints_labels(svc);
    if let Some(e) = existing
        && normalized(e.subsets.as_ref()) == subsets
        && e.labels() == &labels
    {
        return None;
    }
    let mut next = existing.cloned().unwrap_or_else(|| Endpoints {
        metadata: ObjectMeta {
            name: Some(svc.name_any()),
            namespace: svc.namespace(),
            ..Default::default()
        },
        ..Default::default()
    });
    next.metadata.labels = Some(labels);
    next.subsets = Some(subsets);
    Some(next)
}

/// Endpoints left from Services that no longer exist: `(namespace, name)` of those to delete.
pub fn leftovers(
    endpoints: &[Endpoints],
    services: &BTreeSet<(String, String)>,
) -> Vec<(String, String)> {
    endpoints
        .iter()
        .filter(|e| !e.annotations().contains_key(LEADER_ANNOTATION))
        .map(|e| (e.namespace().unwrap_or_default(), e.name_any()))
        .filter(|key| !services.contains(key))
        .collect()
}

struct State {
    ctx: Context,
    members: Arc<Members>,
}

async fn reconcile(svc: Arc<Service>, this: Arc<State>) -> Result<Action, ControllerError> {
    let ns = svc.namespace().unwrap_or_default();
    let object = object_key(svc.as_ref());
    if svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let Some(selector) = selector_of(&svc) else {
        return Ok(Action::await_change());
    };
    let client = &this.ctx.client;
    let pods = selected_pods(client, &ns, &selector, &object).await?;
    let names: BTreeSet<String> = pods.iter().map(ResourceExt::name_any).collect();
    this.members.record(&ns, &svc.name_any(), &names);
    let api: Api<Endpoints> = Api::namespaced(client.clone(), &ns);
    let existing = api
        .get_opt(&svc.name_any())
        .await
        .map_err(api_err(&object, "reading endpoints"))?;
    let Some(next) = endpoints_update(&svc, &pods, existing.as_ref()) else {
        return Ok(Action::await_change());
    };
    if existing.is_some() {
        api.replace(&svc.name_any(), &PostParams::default(), &next)
            .await
            .map_err(api_err(&object, "updating endpoints"))?;
    } else {
        api.create(&PostParams::default(), &next)
            .await
            .map_err(api_err(&object, "creating endpoints"))?;
    }
    tracing::info!(service = %object, "endpoints synced");
    Ok(Action::await_change())
}

fn error_policy(_svc: Arc<Service>, error: &ControllerError, _this: Arc<State>) -> Action {
    tracing::warn!(%error, "endpoints reconcile failed; retrying");
    Action::requeue(Duration::from_secs(1))
}

async fn delete_endpoints(client: &kube::Client, ns: &str, name: &str) {
    let api: Api<Endpoints> = Api::namespaced(client.clone(), ns);
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => tracing::info!(endpoints = %format!("{ns}/{name}"), "deleted with its service"),
        Err(e) if is_not_found(&e) => {}
        Err(error) => tracing::warn!(%error, endpoints = %format!("{ns}/{name}"), "deleting"),
    }
}

/// Deletes Endpoints whose Service is deleted; after every (re)list, those left from Services
/// that went while nobody watched.
async fn follow_deletions(client: kube::Client) {
    let services: Api<Service> = Api::all(client.clone());
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    let mut listing: BTreeSet<(String, String)> = BTreeSet::new();
    let mut events = watcher(services, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        let key = |s: &Service| (s.namespace().unwrap_or_default(), s.name_any());
        match event {
            Ok(watcher::Event::Init) => listing.clear(),
            Ok(watcher::Event::InitApply(s)) => {
                listing.insert(key(&s));
            }
            Ok(watcher::Event::InitDone) => {
                seen = std::mem::take(&mut listing);
                let all: Api<Endpoints> = Api::all(client.clone());
                match all.list(&Default::default()).await {
                    Ok(list) => {
                        for (ns, name) in leftovers(&list.items, &seen) {
                            delete_endpoints(&client, &ns, &name).await;
                        }
                    }
                    Err(error) => tracing::warn!(%error, "listing endpoints for leftovers"),
                }
            }
            Ok(watcher::Event::Apply(s)) => {
                seen.insert(key(&s));
            }
            Ok(watcher::Event::Delete(s)) => {
                let (ns, name) = key(&s);
                seen.remove(&(ns.clone(), name.clone()));
                delete_endpoints(&client, &ns, &name).await;
            }
            Err(error) => tracing::debug!(%error, "endpoints controller: service watch"),
        }
    }
}

/// Runs the Endpoints controller until `shutdown` turns true.
pub async fn run(client: kube::Client, shutdown: tokio::sync::watch::Receiver<bool>) {
    let deletions = tokio::spawn({
        let (client, shutdown) = (client.clone(), shutdown.clone());
        async move {
            tokio::select! {
                () = follow_deletions(client) => {}
                () = shutdown_signal(shutdown) => {}
            }
        }
    });
    let services: Api<Service> = Api::all(client.clone());
    let controller = Controller::new(services, watcher::Config::default());
    let store = controller.store();
    let members = Arc::new(Members::default());
    let this = Arc::new(State {
        ctx: Context::new(client.clone(), "endpoint-controller"),
        members: members.clone(),
    });
    controller
        .watches(
            Api::<Endpoints>::all(client.clone()),
            watcher::Config::default(),
            |e: Endpoints| {
                Some(ObjectRef::new(&e.name_any()).within(&e.namespace().unwrap_or_default()))
            },
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
                tracing::debug!(error = %e, "endpoints controller");
            }
        })
        .await;
    let _ = deletions.await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(extra: serde_json::Value) -> Service {
        let mut v = json!({
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {"selector": {"app": "web"}, "clusterIP": "10.96.0.10",
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}]},
        });
        if let Some(spec) = extra.get("spec").and_then(|s| s.as_object()) {
            for (k, val) in spec {
                v["spec"][k] = val.clone();
            }
        }
        serde_json::from_value(v).unwrap()
    }

    fn pod(name: &str, ip: &str, port: i32, ready: bool, terminating: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("u-{name}"),
                         "labels": {"app": "web"},
                         "deletionTimestamp": if terminating { json!("2026-01-01T00:00:00Z") } else { json!(null) }},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": port}]}]},
            "status": {"phase": "Running", "podIP": ip,
                       "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        }))
        .unwrap()
    }

    fn ips(list: &Option<Vec<EndpointAddress>>) -> Vec<&str> {
        list.iter().flatten().map(|a| a.ip.as_str()).collect()
    }

    #[test]
    fn ready_and_not_ready_addresses_split_and_ports_group_subsets() {
        let s = svc(json!({}));
        let pods = vec![
            pod("a", "10.0.0.1", 8080, true, false),
            pod("b", "10.0.0.2", 8080, false, false),
            pod("c", "10.0.0.3", 9090, true, false),
            pod("d", "10.0.0.4", 8080, true, true),
        ];
        let subsets = desired_subsets(&s, &pods);
        assert_eq!(subsets.len(), 2, "{subsets:?}");
        let s8080 = subsets
            .iter()
            .find(|s| s.ports.as_ref().unwrap()[0].port == 8080)
            .unwrap();
        assert_eq!(ips(&s8080.addresses), vec!["10.0.0.1"]);
        assert_eq!(ips(&s8080.not_ready_addresses), vec!["10.0.0.2"]);
        let a = &s8080.addresses.as_ref().unwrap()[0];
        assert_eq!(a.node_name.as_deref(), Some("n1"));
        assert_eq!(a.target_ref.as_ref().unwrap().name.as_deref(), Some("a"));
    }

    #[test]
    fn published_not_ready_addresses_are_all_ready_terminating_included() {
        let s = svc(json!({"spec": {"publishNotReadyAddresses": true}}));
        let pods = vec![
            pod("b", "10.0.0.2", 8080, false, false),
            pod("d", "10.0.0.4", 8080, true, true),
        ];
        let subsets = desired_subsets(&s, &pods);
        assert_eq!(ips(&subsets[0].addresses), vec!["10.0.0.2", "10.0.0.4"]);
        assert!(subsets[0].not_ready_addresses.is_none());
    }

    #[test]
    fn headless_services_without_ports_list_addresses_alone() {
        let mut s = svc(json!({"spec": {"clusterIP": "None"}}));
        s.spec.as_mut().unwrap().ports = None;
        let subsets = desired_subsets(&s, &[pod("a", "10.0.0.1", 8080, true, false)]);
        assert_eq!(subsets.len(), 1);
        assert!(subsets[0].ports.is_none());
        assert_eq!(
            endpoints_labels(&s).get(HEADLESS_LABEL).map(String::as_str),
            Some("")
        );
    }

    #[test]
    fn nothing_is_written_when_nothing_changed() {
        let s = svc(json!({}));
        let pods = vec![pod("a", "10.0.0.1", 8080, true, false)];
        let first = endpoints_update(&s, &pods, None).unwrap();
        assert_eq!(first.name_any(), "web");
        assert!(endpoints_update(&s, &pods, Some(&first)).is_none());
        let changed = vec![pod("a", "10.0.0.1", 8080, false, false)];
        assert!(endpoints_update(&s, &changed, Some(&first)).is_some());
    }

    #[test]
    fn leftovers_are_endpoints_without_a_service_except_leader_locks() {
        let e = |name: &str, leader: bool| Endpoints {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                annotations: leader
                    .then(|| [(LEADER_ANNOTATION.to_string(), "x".to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let services: BTreeSet<(String, String)> =
            [("default".to_string(), "kept".to_string())].into();
        let got = leftovers(
            &[e("kept", false), e("gone", false), e("lock", true)],
            &services,
        );
        assert_eq!(got, vec![("default".to_string(), "gone".to_string())]);
    }
}
