//! The service load balancer for dev clusters, in the spirit of k3s's servicelb but without
//! pods: a Service of type LoadBalancer with no `spec.loadBalancerClass` gets
//! `status.loadBalancer.ingress`: one address of `--lb-pool` (a CIDR or a `first-last`
//! range) when a pool is given, otherwise the InternalIPs of the Ready nodes (as k3s
//! advertises the nodes that run its proxies). The node proxy routes those addresses.
//!
//! Pool addresses are taken from what the Services' statuses already hold, so they survive
//! restarts; an address goes back to the pool when its Service is deleted or stops being a
//! LoadBalancer (the status is cleared then). Services with a class are another
//! implementation's and are left alone.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use serde_json::json;

use super::{Context, ControllerError, api_err, object_key, shutdown_signal};

/// An address pool: every IPv4 address from `first` to `last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    first: u32,
    last: u32,
}

impl std::str::FromStr for Pool {
    type Err = String;

    /// `10.0.0.0/24` (network and broadcast addresses left out for prefixes below /31) or
    /// `192.168.1.240-192.168.1.250`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("--lb-pool {s:?}: {why}");
        if let Some((ip, len)) = s.split_once('/') {
            let ip: Ipv4Addr = ip.trim().parse().map_err(|_| bad("not an IPv4 address"))?;
            let len: u32 = len.trim().parse().map_err(|_| bad("bad prefix length"))?;
            if !(1..=32).contains(&len) {
                return Err(bad("prefix length must be 1 to 32"));
            }
            let size = 1u64 << (32 - len);
            let base = u32::from(ip) & !(u32::try_from(size - 1).unwrap_or(u32::MAX));
            let last = u32::try_from(u64::from(base) + size - 1).unwrap_or(u32::MAX);
            return Ok(if len >= 31 {
                Pool { first: base, last }
            } else {
                Pool {
                    first: base + 1,
                    last: last - 1,
                }
            });
        }
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| bad("expected a CIDR or first-last"))?;
        let a: Ipv4Addr = a.trim().parse().map_err(|_| bad("not an IPv4 address"))?;
        let b: Ipv4Addr = b.trim().parse().map_err(|_| bad("not an IPv4 address"))?;
        if u32::from(a) > u32::from(b) {
            return Err(bad("first is above last"));
        }
        Ok(Pool {
            first: a.into(),
            last: b.into(),
        })
    }
}

impl Pool {
    /// Whether `ip` is in the pool.
    pub fn contains(&self, ip: &str) -> bool {
        ip.parse::<Ipv4Addr>()
            .is_ok_and(|ip| (self.first..=self.last).contains(&u32::from(ip)))
    }

    /// The address for a Service now holding `current`: the one it has when that is in the
    /// pool and nobody else's, else the lowest free one; `None` when the pool is exhausted.
    pub fn choose(&self, current: &[String], taken: &BTreeSet<String>) -> Option<String> {
        if let Some(ip) = current
            .iter()
            .find(|ip| self.contains(ip) && !taken.contains(*ip))
        {
            return Some(ip.clone());
        }
        (self.first..=self.last)
            .map(|n| Ipv4Addr::from(n).to_string())
            .find(|ip| !taken.contains(ip))
    }
}

/// Whether this controller answers for a Service: type LoadBalancer, no class.
pub fn handles(svc: &Service) -> bool {
    let spec = svc.spec.as_ref();
    spec.and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
        && spec
            .and_then(|s| s.load_balancer_class.as_deref())
            .is_none()
        && svc.metadata.deletion_timestamp.is_none()
}

/// The ingress IPs a Service's status holds.
pub fn ingress_ips(svc: &Service) -> Vec<String> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.clone())
        .collect()
}

/// The InternalIPs of the Ready nodes, sorted.
pub fn ready_node_ips<'a>(nodes: impl IntoIterator<Item = &'a Node>) -> Vec<String> {
    let mut ips: Vec<String> = nodes
        .into_iter()
        .filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .flat_map(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.addresses.clone())
                .unwrap_or_default()
        })
        .filter(|a| a.type_ == "InternalIP")
        .map(|a| a.address)
        .filter(|a| a.parse::<IpAddr>().is_ok())
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

/// What the status of a Service should say, given the other Services (for the pool's taken
/// addresses) and the Ready nodes' IPs: `Some(ips)` to write (empty to clear), `None` to
/// leave it.
pub fn wanted_ingress(
    svc: &Service,
    others: &[Arc<Service>],
    pool: Option<&Pool>,
    node_ips: &[String],
) -> Result<Option<Vec<String>>, String> {
    let current = ingress_ips(svc);
    if !handles(svc) {
        let is_lb = svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer");
        // No longer a LoadBalancer: the address goes back. A class: someone else's status.
        return Ok((!is_lb && !current.is_empty()).then(Vec::new));
    }
    let want = match pool {
        Some(pool) => {
            let me = (svc.namespace(), svc.name_any());
            let taken: BTreeSet<String> = others
                .iter()
                .filter(|o| handles(o) && (o.namespace(), o.name_any()) != me)
                .flat_map(|o| ingress_ips(o))
                .collect();
            vec![
                pool.choose(&current, &taken)
                    .ok_or_else(|| "no free address in the load balancer pool".to_string())?,
            ]
        }
        None => node_ips.to_vec(),
    };
    Ok((want != current).then_some(want))
}

struct State {
    ctx: Context,
    pool: Option<Pool>,
    services: Store<Service>,
    nodes: Store<Node>,
    /// Serializes reconciles so two Services never take one pool address.
    lock: tokio::sync::Mutex<BTreeMap<(String, String), Vec<String>>>,
}

async fn reconcile(svc: Arc<Service>, this: Arc<State>) -> Result<Action, ControllerError> {
    let object = object_key(svc.as_ref());
    // Every Service must be known before a pool address is chosen.
    if this.services.wait_until_ready().await.is_err() {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let mut written = this.lock.lock().await;
    let key = (svc.namespace().unwrap_or_default(), svc.name_any());
    // The store may not show our own last write yet: count it as taken by that Service.
    let mut others: Vec<Arc<Service>> = this.services.state();
    written.retain(|(ns, name), _| {
        others.iter().any(|o| {
            o.namespace().as_deref() == Some(ns.as_str()) && &o.name_any() == name && handles(o)
        })
    });
    for o in &mut others {
        let k = (o.namespace().unwrap_or_default(), o.name_any());
        if let Some(ips) = written.get(&k)
            && &ingress_ips(o) != ips
        {
            let mut fresher = (**o).clone();
            let ingress: Vec<_> = ips.iter().map(|ip| json!({"ip": ip})).collect();
            fresher.status =
                serde_json::from_value(json!({"loadBalancer": {"ingress": ingress}})).ok();
            *o = Arc::new(fresher);
        }
    }
    let node_ips = ready_node_ips(this.nodes.state().iter().map(AsRef::as_ref));
    let want = match wanted_ingress(&svc, &others, this.pool.as_ref(), &node_ips) {
        Ok(w) => w,
        Err(why) => {
            this.ctx
                .warning(svc.as_ref(), "AllocationFailed", "Allocate", why)
                .await;
            return Ok(Action::requeue(Duration::from_secs(30)));
        }
    };
    let Some(ips) = want else {
        return Ok(Action::await_change());
    };
    let ingress: Vec<serde_json::Value> = ips
        .iter()
        .map(|ip| json!({"ip": ip, "ipMode": "VIP"}))
        .collect();
    let api: Api<Service> = Api::namespaced(this.ctx.client.clone(), &key.0);
    api.patch_status(
        &key.1,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": ingress}}})),
    )
    .await
    .map_err(api_err(&object, "updating load balancer status"))?;
    if ips.is_empty() {
        written.remove(&key);
        tracing::info!(service = %object, "load balancer address released");
    } else {
        tracing::info!(service = %object, ingress = ?ips, "load balancer address given");
        this.ctx
            .event(
                svc.as_ref(),
                "EnsuredLoadBalancer",
                "Ensure",
                format!("Ensured load balancer at {}", ips.join(", ")),
            )
            .await;
        written.insert(key, ips);
    }
    Ok(Action::await_change())
}

fn error_policy(_svc: Arc<Service>, error: &ControllerError, _this: Arc<State>) -> Action {
    tracing::warn!(%error, "service load balancer reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// Runs the service load balancer controller until `shutdown` turns true.
pub async fn run(
    client: kube::Client,
    pool: Option<Pool>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let nodes = super::endpointslice::node_store(&client, shutdown.clone());
    let controller = Controller::new(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    );
    let services = controller.store();
    let for_nodes = services.clone();
    let this = Arc::new(State {
        ctx: Context::new(client.clone(), "service-lb-controller"),
        pool,
        services,
        nodes,
        lock: tokio::sync::Mutex::new(BTreeMap::new()),
    });
    let mut controller = controller;
    if pool.is_none() {
        // Node addresses are what LoadBalancers get: look again when nodes change.
        controller = controller.watches(
            Api::<Node>::all(client),
            watcher::Config::default(),
            move |_node| {
                for_nodes
                    .state()
                    .into_iter()
                    .filter(|s| handles(s))
                    .map(|s| ObjectRef::from_obj(s.as_ref()))
                    .collect::<Vec<_>>()
            },
        );
    }
    controller
        .graceful_shutdown_on(shutdown_signal(shutdown))
        .run(reconcile, error_policy, this)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "service load balancer controller");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, ty: &str, class: Option<&str>, ips: &[&str]) -> Arc<Service> {
        let ingress: Vec<_> = ips.iter().map(|ip| json!({"ip": ip})).collect();
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"type": ty, "loadBalancerClass": class},
                "status": {"loadBalancer": {"ingress": ingress}},
            }))
            .unwrap(),
        )
    }

    #[test]
    fn pools_parse_from_cidrs_and_ranges() {
        let p: Pool = "10.0.0.0/30".parse().unwrap();
        assert!(!p.contains("10.0.0.0") && p.contains("10.0.0.1") && p.contains("10.0.0.2"));
        assert!(!p.contains("10.0.0.3"));
        let r: Pool = "192.168.1.240-192.168.1.241".parse().unwrap();
        assert!(r.contains("192.168.1.240") && r.contains("192.168.1.241"));
        assert!(!r.contains("192.168.1.242"));
        let one: Pool = "10.1.2.3/32".parse().unwrap();
        assert!(one.contains("10.1.2.3"));
        assert!("10.0.0.9-10.0.0.1".parse::<Pool>().is_err());
        assert!("nope".parse::<Pool>().is_err());
    }

    #[test]
    fn a_pool_address_is_kept_given_once_and_exhaustion_is_an_error() {
        let pool: Pool = "10.0.0.1-10.0.0.2".parse().unwrap();
        let a = svc("a", "LoadBalancer", None, &[]);
        let b = svc("b", "LoadBalancer", None, &["10.0.0.1"]);
        let others = vec![a.clone(), b.clone()];
        assert_eq!(
            wanted_ingress(&a, &others, Some(&pool), &[]).unwrap(),
            Some(vec!["10.0.0.2".to_string()])
        );
        assert_eq!(wanted_ingress(&b, &others, Some(&pool), &[]).unwrap(), None);
        let a2 = svc("a", "LoadBalancer", None, &["10.0.0.2"]);
        let c = svc("c", "LoadBalancer", None, &[]);
        assert!(wanted_ingress(&c, &[a2, b, c.clone()], Some(&pool), &[]).is_err());
    }

    #[test]
    fn another_class_is_left_alone_and_a_changed_type_releases() {
        let classed = svc("a", "LoadBalancer", Some("example.com/lb"), &["1.2.3.4"]);
        assert_eq!(
            wanted_ingress(&classed, &[], None, &["10.0.0.5".into()]).unwrap(),
            None
        );
        let now_cluster_ip = svc("a", "ClusterIP", None, &["10.0.0.5"]);
        assert_eq!(
            wanted_ingress(&now_cluster_ip, &[], None, &[]).unwrap(),
            Some(vec![])
        );
        let plain = svc("a", "ClusterIP", None, &[]);
        assert_eq!(wanted_ingress(&plain, &[], None, &[]).unwrap(), None);
    }

    #[test]
    fn without_a_pool_the_ready_nodes_internal_ips_are_given() {
        let node = |name: &str, ready: &str, ip: &str| -> Node {
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "status": {"conditions": [{"type": "Ready", "status": ready}],
                           "addresses": [{"type": "InternalIP", "address": ip},
                                         {"type": "Hostname", "address": name}]},
            }))
            .unwrap()
        };
        let nodes = [
            node("b", "True", "10.0.0.6"),
            node("a", "True", "10.0.0.5"),
            node("c", "False", "10.0.0.7"),
        ];
        let ips = ready_node_ips(nodes.iter());
        assert_eq!(ips, vec!["10.0.0.5", "10.0.0.6"]);
        let s = svc("a", "LoadBalancer", None, &[]);
        assert_eq!(
            wanted_ingress(&s, &[], None, &ips).unwrap(),
            Some(ips.clone())
        );
    }
}
