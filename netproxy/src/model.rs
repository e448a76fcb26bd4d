//! Services and endpoints as the proxy sees them: a pure function from the API objects
//! (Services, EndpointSlices, this node's name and addresses) to one [`ServicePort`] per
//! service port, naming what to route and where. No I/O; the rule generators start from here.
//!
//! Endpoint selection follows upstream kube-proxy: only ready endpoints are used; when a
//! traffic class has none, serving-and-terminating ones are the fallback. Headless and
//! ExternalName services get nothing. Only IPv4 is modelled (the `ip` family table).

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label an EndpointSlice carries naming its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Default ClientIP affinity timeout (upstream: 3 hours).
pub const DEFAULT_AFFINITY_SECONDS: u32 = 10800;

/// An L4 protocol a Service port can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP (the default).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// Parses the API spelling; `None` (unset) is TCP.
    pub fn parse(s: Option<&str>) -> Option<Protocol> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// Lower-case name as nft, iptables and conntrack spell it.
    pub fn lower(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// `namespace/name:port-name/protocol`, the identity of one service port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePortName {
    /// Namespace.
    pub namespace: String,
    /// Service name.
    pub name: String,
    /// The port's name ("" for a single unnamed port).
    pub port: String,
    /// Protocol.
    pub protocol: Protocol,
}

impl fmt::Display for ServicePortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}",
            self.namespace,
            self.name,
            self.protocol.lower(),
            self.port
        )
    }
}

/// One backend of a service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    /// Pod (or other) address.
    pub ip: Ipv4Addr,
    /// Target port, resolved by the slice.
    pub port: u16,
    /// Whether the endpoint runs on this node.
    pub local: bool,
}

/// Everything the rule generators need about one service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// Identity.
    pub name: ServicePortName,
    /// Cluster IPs (IPv4).
    pub cluster_ips: Vec<Ipv4Addr>,
    /// The service port.
    pub port: u16,
    /// NodePort, for NodePort and LoadBalancer services.
    pub node_port: Option<u16>,
    /// `spec.externalIPs`.
    pub external_ips: Vec<Ipv4Addr>,
    /// `status.loadBalancer.ingress[].ip`.
    pub lb_ips: Vec<Ipv4Addr>,
    /// ClientIP affinity timeout, when sessionAffinity is ClientIP.
    pub affinity_seconds: Option<u32>,
    /// externalTrafficPolicy Local.
    pub external_local: bool,
    /// internalTrafficPolicy Local.
    pub internal_local: bool,
    /// Endpoints for traffic to the cluster IPs (after policy and readiness filtering).
    pub cluster_endpoints: Vec<Endpoint>,
    /// Endpoints for traffic to node ports, external and LB IPs (all of `cluster_endpoints`
    /// unless externalTrafficPolicy is Local, then the local ones only).
    pub external_endpoints: Vec<Endpoint>,
}

impl ServicePort {
    /// Whether anything reaches this port from outside the cluster IPs.
    pub fn has_external(&self) -> bool {
        self.node_port.is_some() || !self.external_ips.is_empty() || !self.lb_ips.is_empty()
    }

    /// All endpoints either traffic class may use, deduplicated.
    pub fn all_endpoints(&self) -> BTreeSet<Endpoint> {
        self.cluster_endpoints
            .iter()
            .chain(&self.external_endpoints)
            .copied()
            .collect()
    }
}

/// The node the proxy runs on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeView {
    /// Node name (`--hostname-override`), to tell local endpoints.
    pub name: String,
}

/// An endpoint with its conditions, before selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Candidate {
    endpoint: Endpoint,
    ready: bool,
    serving: bool,
    terminating: bool,
}

/// Upstream's choice: ready endpoints; if none, the serving-and-terminating ones.
fn usable(candidates: &[Candidate]) -> Vec<Endpoint> {
    let ready: Vec<Endpoint> = candidates
        .iter()
        .filter(|c| c.ready)
        .map(|c| c.endpoint)
        .collect();
    if !ready.is_empty() {
        return ready;
    }
    candidates
        .iter()
        .filter(|c| c.serving && c.terminating)
        .map(|c| c.endpoint)
        .collect()
}

/// Builds the service ports from the API state. Slices are matched to services by the
/// `kubernetes.io/service-name` label, ports by name and protocol.
pub fn build<S: Borrow<Service>, E: Borrow<EndpointSlice>>(
    services: &[S],
    slices: &[E],
    node: &NodeView,
) -> BTreeMap<ServicePortName, ServicePort> {
    let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in slices {
        let slice: &EndpointSlice = slice.borrow();
        if slice.address_type != "IPv4" {
            continue;
        }
        let Some(svc) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            continue;
        };
        let ns = slice.metadata.namespace.clone().unwrap_or_default();
        by_service.entry((ns, svc.clone())).or_default().push(slice);
    }
    let mut out = BTreeMap::new();
    for svc in services {
        let svc: &Service = svc.borrow();
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let Some(name) = svc.metadata.name.clone() else {
            continue;
        };
        let slices = by_service
            .get(&(ns.clone(), name.clone()))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for port in service_ports(svc, &ns, &name, slices, node) {
            out.insert(port.name.clone(), port);
        }
    }
    out
}

fn parse_ips<'a>(it: impl IntoIterator<Item = &'a String>) -> Vec<Ipv4Addr> {
    let mut ips: Vec<Ipv4Addr> = it.into_iter().filter_map(|s| s.parse().ok()).collect();
    ips.sort();
    ips.dedup();
    ips
}

fn service_ports(
    svc: &Service,
    ns: &str,
    name: &str,
    slices: &[&EndpointSlice],
    node: &NodeView,
) -> Vec<ServicePort> {
    let Some(spec) = &svc.spec else {
        return Vec::new();
    };
    let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
    if kind == "ExternalName" {
        return Vec::new();
    }
    let mut cluster_ips = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => parse_ips(ips),
        _ => parse_ips(spec.cluster_ip.iter()),
    };
    if spec.cluster_ip.as_deref() == Some("None") {
        return Vec::new(); // headless
    }
    cluster_ips.retain(|ip| !ip.is_unspecified());
    if cluster_ips.is_empty() {
        return Vec::new();
    }
    let external_ips = parse_ips(spec.external_ips.iter().flatten());
    let lb_ips = if kind == "LoadBalancer" {
        parse_ips(
            svc.status
                .iter()
                .filter_map(|s| s.load_balancer.as_ref())
                .filter_map(|lb| lb.ingress.as_ref())
                .flatten()
                .filter_map(|i| i.ip.as_ref()),
        )
    } else {
        Vec::new()
    };
    let affinity_seconds = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .filter(|t| *t > 0)
            .unwrap_or(DEFAULT_AFFINITY_SECONDS)
    });
    let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let mut out = Vec::new();
    for p in spec.ports.iter().flatten() {
        let Some(protocol) = Protocol::parse(p.protocol.as_deref()) else {
            continue;
        };
        let Ok(port) = u16::try_from(p.port) else {
            continue;
        };
        let port_name = p.name.clone().unwrap_or_default();
        let node_port = if matches!(kind, "NodePort" | "LoadBalancer") {
            p.node_port
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n > 0)
        } else {
            None
        };
        let candidates = candidates(slices, &port_name, protocol, node);
        let all = usable(&candidates);
        let local: Vec<Candidate> = candidates
            .iter()
            .copied()
            .filter(|c| c.endpoint.local)
            .collect();
        let local = usable(&local);
        out.push(ServicePort {
            name: ServicePortName {
                namespace: ns.to_string(),
                name: name.to_string(),
                port: port_name,
                protocol,
            },
            cluster_ips: cluster_ips.clone(),
            port,
            node_port,
            external_ips: external_ips.clone(),
            lb_ips: lb_ips.clone(),
            affinity_seconds,
            external_local,
            internal_local,
            cluster_endpoints: if internal_local {
                local.clone()
            } else {
                all.clone()
            },
            external_endpoints: if external_local { local } else { all },
        });
    }
    out
}

/// The endpoints of the slices for one port, deduplicated by address (the first condition seen
/// wins, as upstream merges slices).
fn candidates(
    slices: &[&EndpointSlice],
    port_name: &str,
    protocol: Protocol,
    node: &NodeView,
) -> Vec<Candidate> {
    let mut seen: BTreeMap<(Ipv4Addr, u16), Candidate> = BTreeMap::new();
    for slice in slices {
        let Some(target) = slice.ports.iter().flatten().find_map(|sp| {
            let name = sp.name.as_deref().unwrap_or("");
            let proto = Protocol::parse(sp.protocol.as_deref())?;
            (name == port_name && proto == protocol)
                .then_some(sp.port)
                .flatten()
                .and_then(|p| u16::try_from(p).ok())
        }) else {
            continue;
        };
        for ep in &slice.endpoints {
            let conditions = ep.conditions.as_ref();
            let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let serving = conditions.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
            let local =
                ep.node_name.as_deref() == Some(node.name.as_str()) && !node.name.is_empty();
            for ip in parse_ips(ep.addresses.iter()) {
                seen.entry((ip, target)).or_insert(Candidate {
                    endpoint: Endpoint {
                        ip,
                        port: target,
                        local,
                    },
                    ready,
                    serving,
                    terminating,
                });
            }
        }
    }
    seen.into_values().collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).expect("service")
    }

    pub(crate) fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).expect("slice")
    }

    fn node() -> NodeView {
        NodeView { name: "n1".into() }
    }

    fn web() -> Service {
        svc(json!({
            "metadata": {"namespace": "default", "name": "web"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                "ports": [{"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080},
                          {"name": "dns", "port": 53, "protocol": "UDP"}]}
        }))
    }

    fn web_slice(endpoints: serde_json::Value) -> EndpointSlice {
        slice(json!({
            "metadata": {"namespace": "default", "name": "web-abc",
                "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                      {"name": "dns", "port": 5353, "protocol": "UDP"}],
            "endpoints": endpoints
        }))
    }

    fn eps(ports: &BTreeMap<ServicePortName, ServicePort>, port: &str) -> Vec<Ipv4Addr> {
        ports
            .values()
            .find(|p| p.name.port == port)
            .expect("port")
            .cluster_endpoints
            .iter()
            .map(|e| e.ip)
            .collect()
    }

    #[test]
    fn named_ports_resolve_through_the_slice_port_names() {
        let ports = build(
            &[web()],
            &[web_slice(json!([{"addresses": ["10.244.0.2"]}]))],
            &node(),
        );
        assert_eq!(ports.len(), 2);
        let http = ports.values().find(|p| p.name.port == "http").unwrap();
        assert_eq!(http.cluster_endpoints[0].port, 8080);
        assert_eq!(http.node_port, Some(30080));
        let dns = ports.values().find(|p| p.name.port == "dns").unwrap();
        assert_eq!(dns.name.protocol, Protocol::Udp);
        assert_eq!(dns.cluster_endpoints[0].port, 5353);
        assert_eq!(dns.node_port, None);
    }

    #[test]
    fn not_ready_endpoints_are_left_out_and_terminating_serving_ones_are_the_fallback() {
        let ports = build(
            &[web()],
            &[web_slice(json!([
                {"addresses": ["10.244.0.2"], "conditions": {"ready": true}},
                {"addresses": ["10.244.0.3"], "conditions": {"ready": false}},
                {"addresses": ["10.244.0.4"], "conditions": {"ready": false, "serving": true, "terminating": true}}
            ]))],
            &node(),
        );
        assert_eq!(
            eps(&ports, "http"),
            vec!["10.244.0.2".parse::<Ipv4Addr>().unwrap()]
        );
        let ports = build(
            &[web()],
            &[web_slice(json!([
                {"addresses": ["10.244.0.3"], "conditions": {"ready": false}},
                {"addresses": ["10.244.0.4"], "conditions": {"ready": false, "serving": true, "terminating": true}},
                {"addresses": ["10.244.0.5"], "conditions": {"ready": false, "serving": false, "terminating": true}}
            ]))],
            &node(),
        );
        assert_eq!(
            eps(&ports, "http"),
            vec!["10.244.0.4".parse::<Ipv4Addr>().unwrap()]
        );
    }

    #[test]
    fn headless_and_external_name_services_get_nothing() {
        let headless = svc(json!({"metadata": {"namespace": "d", "name": "h"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}));
        let ext = svc(json!({"metadata": {"namespace": "d", "name": "e"},
            "spec": {"type": "ExternalName", "externalName": "example.com"}}));
        assert!(build(&[headless, ext], &[] as &[EndpointSlice], &node()).is_empty());
    }

    #[test]
    fn local_policies_choose_local_endpoints_per_traffic_class() {
        let mut s = web();
        let spec = s.spec.as_mut().unwrap();
        spec.external_traffic_policy = Some("Local".into());
        let sl = web_slice(json!([
            {"addresses": ["10.244.0.2"], "nodeName": "n1"},
            {"addresses": ["10.244.1.2"], "nodeName": "n2"}
        ]));
        let ports = build(&[s.clone()], std::slice::from_ref(&sl), &node());
        let http = ports.values().find(|p| p.name.port == "http").unwrap();
        assert_eq!(http.cluster_endpoints.len(), 2);
        assert_eq!(http.external_endpoints.len(), 1);
        assert!(http.external_endpoints[0].local);
        s.spec.as_mut().unwrap().internal_traffic_policy = Some("Local".into());
        let ports = build(&[s], &[sl], &NodeView { name: "n3".into() });
        let http = ports.values().find(|p| p.name.port == "http").unwrap();
        assert!(http.cluster_endpoints.is_empty());
        assert!(http.external_endpoints.is_empty());
    }

    #[test]
    fn affinity_external_and_load_balancer_ips_are_read() {
        let s = svc(json!({
            "metadata": {"namespace": "d", "name": "lb"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.11", "externalIPs": ["192.0.2.9"],
                "sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
                "ports": [{"port": 443, "nodePort": 31443, "protocol": "SCTP"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}
        }));
        let ports = build(&[s], &[] as &[EndpointSlice], &node());
        let p = ports.values().next().unwrap();
        assert_eq!(p.affinity_seconds, Some(60));
        assert_eq!(
            p.external_ips,
            vec!["192.0.2.9".parse::<Ipv4Addr>().unwrap()]
        );
        assert_eq!(p.lb_ips, vec!["192.0.2.10".parse::<Ipv4Addr>().unwrap()]);
        assert_eq!(p.name.protocol, Protocol::Sctp);
        assert_eq!(p.node_port, Some(31443));
        assert!(p.cluster_endpoints.is_empty());
    }

    #[test]
    fn endpoints_repeated_across_slices_count_once() {
        let a = web_slice(json!([{"addresses": ["10.244.0.2"]}]));
        let mut b = a.clone();
        b.metadata.name = Some("web-def".into());
        let ports = build(&[web()], &[a, b], &node());
        assert_eq!(eps(&ports, "http").len(), 1);
    }
}
