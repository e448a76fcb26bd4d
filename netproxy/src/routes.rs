//! Pod routes between nodes, host-gw style (as flannel's host-gw backend and kube-router do):
//! every other Node's pod CIDR is routed through that Node's InternalIP, so pods on different
//! nodes reach each other directly without an overlay.
//!
//! [`desired_routes`] is a pure function of this node's name and the Nodes; [`plan`] compares
//! it with the routes we own; [`reconcile`] applies the plan through the narrow [`RouteTable`]
//! trait, whose real implementation ([`NetlinkRoutes`]) speaks rtnetlink and marks our routes
//! with the route protocol [`ROUTE_PROTOCOL`], so a restart finds and reconciles them and
//! `--cleanup` removes only ours. A gateway the kernel cannot reach directly (not on-link) is
//! skipped and reported, never routed through another hop.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Node;
use rtnetlink::RouteMessageBuilder;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol,
};

use crate::rules::Cidr;

/// The route protocol number our routes carry (`ip route show proto 87`); unassigned in
/// `/etc/iproute2/rt_protos`.
pub const ROUTE_PROTOCOL: u8 = 87;

/// One pod route: `dest via gateway`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodRoute {
    /// Another node's pod CIDR.
    pub dest: Cidr,
    /// That node's InternalIP.
    pub gateway: Ipv4Addr,
}

impl fmt::Display for PodRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} via {}", self.dest, self.gateway)
    }
}

/// The routes this node should have: each other Node's IPv4 pod CIDRs (`spec.podCIDRs`, or
/// `spec.podCIDR`) through its first IPv4 InternalIP. Nodes without either are left out, as
/// are CIDRs that overlap this node's own.
pub fn desired_routes(local_node: &str, nodes: &[Node]) -> BTreeSet<PodRoute> {
    let own: Vec<Cidr> = nodes
        .iter()
        .filter(|n| n.metadata.name.as_deref() == Some(local_node))
        .flat_map(pod_cidrs)
        .collect();
    let mut routes = BTreeSet::new();
    for node in nodes {
        if node.metadata.name.as_deref() == Some(local_node) {
            continue;
        }
        let Some(gateway) = internal_ip(node) else {
            continue;
        };
        for dest in pod_cidrs(node) {
            if own.iter().any(|o| overlaps(*o, dest)) {
                continue;
            }
            routes.insert(PodRoute { dest, gateway });
        }
    }
    routes
}

fn pod_cidrs(node: &Node) -> Vec<Cidr> {
    let Some(spec) = &node.spec else {
        return Vec::new();
    };
    let listed: Vec<&String> = match &spec.pod_cidrs {
        Some(list) if !list.is_empty() => list.iter().collect(),
        _ => spec.pod_cidr.iter().collect(),
    };
    listed.into_iter().filter_map(|c| c.parse().ok()).collect()
}

fn internal_ip(node: &Node) -> Option<Ipv4Addr> {
    node.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .filter(|a| a.type_ == "InternalIP")
        .find_map(|a| a.address.parse().ok())
}

fn overlaps(a: Cidr, b: Cidr) -> bool {
    let prefix = a.prefix.min(b.prefix);
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    u32::from(a.addr) & mask == u32::from(b.addr) & mask
}

/// What to change: routes to delete (ours, no longer wanted or with another gateway) and
/// routes to add.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RoutePlan {
    /// Routes to remove.
    pub delete: Vec<PodRoute>,
    /// Routes to add.
    pub add: Vec<PodRoute>,
}

/// The plan taking `current` (our routes in the kernel) to `desired`.
pub fn plan(desired: &BTreeSet<PodRoute>, current: &BTreeSet<PodRoute>) -> RoutePlan {
    RoutePlan {
        delete: current.difference(desired).copied().collect(),
        add: desired.difference(current).copied().collect(),
    }
}

/// A route operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The netlink socket could not be opened.
    #[error("opening a netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    /// The kernel refused a request.
    #[error("{what}: {source}")]
    Netlink {
        /// What was being done.
        what: String,
        /// The kernel's answer.
        #[source]
        source: rtnetlink::Error,
    },
    /// Some routes could not be removed.
    #[error("{failed} route(s) could not be deleted, first {first}")]
    Incomplete {
        /// How many.
        failed: usize,
        /// The first route and its error.
        first: String,
    },
    /// The gateway is not directly reachable from this node (not on-link).
    #[error("route {0}: gateway is not on a directly connected network")]
    NotOnLink(PodRoute),
}

/// The routes we own in the kernel's main table.
#[allow(async_fn_in_trait)]
pub trait RouteTable {
    /// Our routes (those with [`ROUTE_PROTOCOL`]).
    async fn list(&mut self) -> Result<BTreeSet<PodRoute>, RouteError>;
    /// Adds `route` (replacing one with the same destination).
    async fn add(&mut self, route: PodRoute) -> Result<(), RouteError>;
    /// Deletes `route`; a route already gone is not an error.
    async fn delete(&mut self, route: PodRoute) -> Result<(), RouteError>;
}

/// What one reconcile did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// Routes added.
    pub added: Vec<PodRoute>,
    /// Routes deleted.
    pub deleted: Vec<PodRoute>,
    /// Routes left out because their gateway is not on-link.
    pub not_on_link: Vec<PodRoute>,
    /// Other failures, per route (tried again on the next reconcile).
    pub failed: Vec<(PodRoute, String)>,
}

/// Makes our routes in `table` equal to `desired`; only listing failures abort.
pub async fn reconcile(
    table: &mut impl RouteTable,
    desired: &BTreeSet<PodRoute>,
) -> Result<Reconciled, RouteError> {
    let current = table.list().await?;
    let plan = plan(desired, &current);
    let mut done = Reconciled::default();
    for route in plan.delete {
        match table.delete(route).await {
            Ok(()) => done.deleted.push(route),
            Err(e) => done.failed.push((route, e.to_string())),
        }
    }
    for route in plan.add {
        match table.add(route).await {
            Ok(()) => done.added.push(route),
            Err(RouteError::NotOnLink(r)) => done.not_on_link.push(r),
            Err(e) => done.failed.push((route, e.to_string())),
        }
    }
    Ok(done)
}

/// Deletes every route we own; returns how many went.
pub async fn cleanup(table: &mut impl RouteTable) -> Result<usize, RouteError> {
    let done = reconcile(table, &BTreeSet::new()).await?;
    if let Some((route, error)) = done.failed.first() {
        return Err(RouteError::Incomplete {
            failed: done.failed.len(),
            first: format!("{route}: {error}"),
        });
    }
    Ok(done.deleted.len())
}

/// The kernel's main routing table through rtnetlink.
pub struct NetlinkRoutes {
    handle: rtnetlink::Handle,
}

impl NetlinkRoutes {
    /// Opens a netlink socket (in the caller's network namespace); needs a tokio runtime.
    pub fn new() -> Result<NetlinkRoutes, RouteError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(RouteError::Socket)?;
        tokio::spawn(connection);
        Ok(NetlinkRoutes { handle })
    }

    fn message(route: PodRoute) -> RouteMessage {
        RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(route.dest.addr, route.dest.prefix)
            .gateway(route.gateway)
            .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
            .build()
    }
}

const ENETUNREACH: i32 = 101;
const ESRCH: i32 = 3;

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

/// Our route in a dumped message, if it is one.
fn ours(msg: &RouteMessage) -> Option<PodRoute> {
    let in_main = msg
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(msg.header.table))
        == u32::from(RouteHeader::RT_TABLE_MAIN);
    if msg.header.protocol != RouteProtocol::Other(ROUTE_PROTOCOL) || !in_main {
        return None;
    }
    let mut dest = None;
    let mut gateway = None;
    for a in &msg.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dest = Some(*ip),
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gateway = Some(*ip),
            _ => {}
        }
    }
    Some(PodRoute {
        dest: Cidr {
            addr: dest?,
            prefix: msg.header.destination_prefix_length,
        },
        gateway: gateway?,
    })
}

impl RouteTable for NetlinkRoutes {
    async fn list(&mut self) -> Result<BTreeSet<PodRoute>, RouteError> {
        let query = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let messages: Vec<RouteMessage> = self
            .handle
            .route()
            .get(query)
            .execute()
            .try_collect()
            .await
            .map_err(|source| RouteError::Netlink {
                what: "listing routes".into(),
                source,
            })?;
        Ok(messages.iter().filter_map(ours).collect())
    }

    async fn add(&mut self, route: PodRoute) -> Result<(), RouteError> {
        match self
            .handle
            .route()
            .add(Self::message(route))
            .replace()
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(ENETUNREACH) => Err(RouteError::NotOnLink(route)),
            Err(source) => Err(RouteError::Netlink {
                what: format!("adding route {route}"),
                source,
            }),
        }
    }

    async fn delete(&mut self, route: PodRoute) -> Result<(), RouteError> {
        match self
            .handle
            .route()
            .del(Self::message(route))
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(ESRCH) => Ok(()),
            Err(source) => Err(RouteError::Netlink {
                what: format!("deleting route {route}"),
                source,
            }),
        }
    }
}

/// A routing table in memory, for tests: `on_link` lists the reachable gateways' networks;
/// `refuse` makes adds of these destinations fail.
#[derive(Debug, Default, Clone)]
pub struct FakeRoutes {
    /// Our routes, by destination (the kernel keeps one route per destination).
    pub routes: BTreeMap<Cidr, Ipv4Addr>,
    /// Directly connected networks.
    pub on_link: Vec<Cidr>,
    /// Destinations whose adds fail.
    pub refuse: Vec<Cidr>,
    /// Operations done, as `add <route>` / `delete <route>`.
    pub log: Vec<String>,
}

impl RouteTable for FakeRoutes {
    async fn list(&mut self) -> Result<BTreeSet<PodRoute>, RouteError> {
        Ok(self
            .routes
            .iter()
            .map(|(dest, gateway)| PodRoute {
                dest: *dest,
                gateway: *gateway,
            })
            .collect())
    }

    async fn add(&mut self, route: PodRoute) -> Result<(), RouteError> {
        let host = Cidr {
            addr: route.gateway,
            prefix: 32,
        };
        if !self.on_link.iter().any(|c| overlaps(*c, host)) {
            return Err(RouteError::NotOnLink(route));
        }
        if self.refuse.contains(&route.dest) {
            return Err(RouteError::Netlink {
                what: format!("adding route {route}"),
                source: rtnetlink::Error::RequestFailed,
            });
        }
        self.log.push(format!("add {route}"));
        self.routes.insert(route.dest, route.gateway);
        Ok(())
    }

    async fn delete(&mut self, route: PodRoute) -> Result<(), RouteError> {
        self.log.push(format!("delete {route}"));
        if self.routes.get(&route.dest) == Some(&route.gateway) {
            self.routes.remove(&route.dest);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};
    use kube::api::ObjectMeta;

    fn node(name: &str, cidrs: &[&str], ips: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: cidrs.first().map(|c| c.to_string()),
                pod_cidrs: Some(cidrs.iter().map(|c| c.to_string()).collect()),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(
                    ips.iter()
                        .map(|(t, a)| NodeAddress {
                            type_: t.to_string(),
                            address: a.to_string(),
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
        }
    }

    fn route(dest: &str, gw: &str) -> PodRoute {
        PodRoute {
            dest: dest.parse().unwrap(),
            gateway: gw.parse().unwrap(),
        }
    }

    #[test]
    fn every_other_node_cidr_goes_through_its_internal_ip() {
        let nodes = [
            node("a", &["10.244.0.0/24"], &[("InternalIP", "192.168.1.1")]),
            node(
                "b",
                &["10.244.1.0/24", "fd00::/64"],
                &[
                    ("Hostname", "b"),
                    ("InternalIP", "fd00::2"),
                    ("InternalIP", "192.168.1.2"),
                ],
            ),
            node("c", &["10.244.2.0/24"], &[("ExternalIP", "1.2.3.4")]),
            node("d", &[], &[("InternalIP", "192.168.1.4")]),
            // Claims a block overlapping ours: never routed away from us.
            node("e", &["10.244.0.0/16"], &[("InternalIP", "192.168.1.5")]),
        ];
        let want: BTreeSet<_> = [route("10.244.1.0/24", "192.168.1.2")].into();
        assert_eq!(desired_routes("a", &nodes), want);
        // Seen from b, a's block is routed and b's own is not.
        let from_b = desired_routes("b", &nodes);
        assert!(from_b.contains(&route("10.244.0.0/24", "192.168.1.1")));
        assert!(!from_b.contains(&route("10.244.0.0/16", "192.168.1.5")));
        assert!(
            !from_b
                .iter()
                .any(|r| r.gateway == "192.168.1.2".parse::<Ipv4Addr>().unwrap())
        );
    }

    #[test]
    fn spec_pod_cidr_is_used_when_the_list_is_empty() {
        let mut n = node("b", &["10.244.1.0/24"], &[("InternalIP", "10.0.0.2")]);
        n.spec.as_mut().unwrap().pod_cidrs = None;
        assert_eq!(
            desired_routes("a", &[n]),
            [route("10.244.1.0/24", "10.0.0.2")].into()
        );
    }

    #[test]
    fn plan_replaces_a_changed_gateway_and_drops_gone_nodes() {
        let desired: BTreeSet<_> = [
            route("10.244.1.0/24", "10.0.0.2"),
            route("10.244.2.0/24", "10.0.0.9"),
        ]
        .into();
        let current: BTreeSet<_> = [
            route("10.244.2.0/24", "10.0.0.3"),
            route("10.244.3.0/24", "10.0.0.4"),
        ]
        .into();
        let p = plan(&desired, &current);
        assert_eq!(
            p.delete,
            vec![
                route("10.244.2.0/24", "10.0.0.3"),
                route("10.244.3.0/24", "10.0.0.4")
            ]
        );
        assert_eq!(
            p.add,
            vec![
                route("10.244.1.0/24", "10.0.0.2"),
                route("10.244.2.0/24", "10.0.0.9")
            ]
        );
        assert_eq!(plan(&desired, &desired), RoutePlan::default());
    }

    #[tokio::test]
    async fn reconcile_adds_on_link_routes_reports_the_rest_and_converges() {
        let mut table = FakeRoutes {
            on_link: vec!["10.0.0.0/24".parse().unwrap()],
            refuse: vec!["10.244.5.0/24".parse().unwrap()],
            ..Default::default()
        };
        table.routes.insert(
            "10.244.9.0/24".parse().unwrap(),
            "10.0.0.9".parse().unwrap(),
        );
        let desired: BTreeSet<_> = [
            route("10.244.1.0/24", "10.0.0.2"),
            route("10.244.4.0/24", "172.16.0.4"),
            route("10.244.5.0/24", "10.0.0.5"),
        ]
        .into();
        let done = reconcile(&mut table, &desired).await.unwrap();
        assert_eq!(done.added, vec![route("10.244.1.0/24", "10.0.0.2")]);
        assert_eq!(done.deleted, vec![route("10.244.9.0/24", "10.0.0.9")]);
        assert_eq!(done.not_on_link, vec![route("10.244.4.0/24", "172.16.0.4")]);
        assert_eq!(done.failed.len(), 1);
        assert_eq!(done.failed[0].0, route("10.244.5.0/24", "10.0.0.5"));
        // Nothing changes on the next pass except retrying what failed.
        table.log.clear();
        table.refuse.clear();
        let again = reconcile(&mut table, &desired).await.unwrap();
        assert_eq!(again.added, vec![route("10.244.5.0/24", "10.0.0.5")]);
        assert!(again.deleted.is_empty());
        assert_eq!(table.log, vec!["add 10.244.5.0/24 via 10.0.0.5"]);
        // Cleanup removes every route of ours.
        assert_eq!(cleanup(&mut table).await.unwrap(), 2);
        assert!(table.routes.is_empty());
    }
}
