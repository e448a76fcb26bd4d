//! The nftables ruleset, laid out as modern kube-proxy's nftables mode: one table of our own
//! (`ip kube-lite-proxy`), dispatch through verdict maps keyed by
//! `daddr . l4proto . dport` (`service-ips`) and `l4proto . dport` (`service-nodeports`),
//! per-service chains picking an endpoint with `numgen random mod N`, per-endpoint DNAT
//! chains, ClientIP affinity through dynamic sets with timeouts, and the `no-endpoint-*` maps
//! rejecting (TCP reset / ICMP port unreachable) in filter hooks before NAT.
//!
//! Each service port becomes a [`Fragment`] (its chains, sets and map elements). A full sync
//! rewrites every chain and map and deletes what is stale; a delta touches only the
//! fragments of service ports whose model changed. Both are one `nft -f` transaction.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::{Config, MASQ_MARK, short_hash};
use crate::model::{Endpoint, ServicePort, ServicePortName};

/// Our table's name (family `ip`).
pub const TABLE: &str = "kube-lite-proxy";
/// `ip kube-lite-proxy`.
pub const FAMILY_TABLE: &str = "ip kube-lite-proxy";

/// The verdict maps a fragment puts elements into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Map {
    /// `daddr . proto . port` of cluster, external and LB IPs -> service/external chain.
    ServiceIps,
    /// `proto . port` of node ports -> external chain.
    ServiceNodePorts,
    /// `daddr . proto . port` of services without endpoints -> reject or drop.
    NoEndpointServices,
    /// `proto . port` of node ports without endpoints -> reject or drop.
    NoEndpointNodePorts,
}

impl Map {
    /// Every map, in declaration order.
    pub const ALL: [Map; 4] = [
        Map::ServiceIps,
        Map::ServiceNodePorts,
        Map::NoEndpointServices,
        Map::NoEndpointNodePorts,
    ];

    /// The map's name in the table.
    pub fn name(self) -> &'static str {
        match self {
            Map::ServiceIps => "service-ips",
            Map::ServiceNodePorts => "service-nodeports",
            Map::NoEndpointServices => "no-endpoint-services",
            Map::NoEndpointNodePorts => "no-endpoint-nodeports",
        }
    }

    fn key_type(self) -> &'static str {
        match self {
            Map::ServiceIps | Map::NoEndpointServices => "ipv4_addr . inet_proto . inet_service",
            Map::ServiceNodePorts | Map::NoEndpointNodePorts => "inet_proto . inet_service",
        }
    }
}

/// What one service port contributes to the table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fragment {
    /// Regular chains: name -> rules.
    pub chains: BTreeMap<String, Vec<String>>,
    /// Affinity sets: name -> timeout in seconds.
    pub sets: BTreeMap<String, u32>,
    /// Named endpoint-choice verdict maps (`pick-...`): name -> elements
    /// (`0 : goto endpoint-..., ...`). Named rather than anonymous: the kernel gives each
    /// anonymous set a free `__map%d` name by scanning every set of the table, which makes
    /// one anonymous vmap per service quadratic (4,000 services took 24 s, 2,000 4 s).
    pub picks: BTreeMap<String, String>,
    /// Map elements: (map, key) -> verdict.
    pub elements: BTreeMap<(Map, String), String>,
}

impl Fragment {
    /// Number of rules in its chains.
    pub fn rule_count(&self) -> usize {
        self.chains.values().map(Vec::len).sum()
    }
}

fn base_name(p: &ServicePort) -> String {
    let port = if p.name.port.is_empty() {
        format!("p{}", p.port)
    } else {
        p.name.port.clone()
    };
    format!(
        "{}/{}/{}/{}",
        p.name.namespace,
        p.name.name,
        p.name.protocol.lower(),
        port
    )
}

/// The name of a service port's cluster chain.
pub fn service_chain(p: &ServicePort) -> String {
    let base = base_name(p);
    format!("service-{}-{base}", short_hash(&base))
}

fn external_chain(p: &ServicePort) -> String {
    let base = base_name(p);
    format!("external-{}-{base}", short_hash(&base))
}

fn endpoint_suffix(p: &ServicePort, ep: &Endpoint) -> String {
    let base = format!("{}__{}/{}", base_name(p), ep.ip, ep.port);
    format!("{}-{base}", short_hash(&base))
}

/// The name of an endpoint's DNAT chain.
pub fn endpoint_chain(p: &ServicePort, ep: &Endpoint) -> String {
    format!("endpoint-{}", endpoint_suffix(p, ep))
}

fn affinity_set(p: &ServicePort, ep: &Endpoint, timeout: u32) -> String {
    let base = format!("{}__{}/{}", base_name(p), ep.ip, ep.port);
    format!(
        "affinity-{}-{base}",
        short_hash(&format!("{base}@{timeout}"))
    )
}

/// The rules choosing one endpoint: affinity lookups first, then a random pick.
fn pick(
    p: &ServicePort,
    endpoints: &[Endpoint],
    map: String,
    rules: &mut Vec<String>,
    picks: &mut BTreeMap<String, String>,
) {
    if let Some(timeout) = p.affinity_seconds {
        for ep in endpoints {
            rules.push(format!(
                "ip saddr @{} goto {}",
                affinity_set(p, ep, timeout),
                endpoint_chain(p, ep)
            ));
        }
    }
    let mut vmap = String::new();
    for (i, ep) in endpoints.iter().enumerate() {
        if i > 0 {
            vmap.push_str(", ");
        }
        let _ = write!(vmap, "{i} : goto {}", endpoint_chain(p, ep));
    }
    rules.push(format!("numgen random mod {} vmap @{map}", endpoints.len()));
    picks.insert(map, vmap);
}

/// The name of a chain's endpoint-choice map.
fn pick_map(chain: &str) -> String {
    format!("pick-{chain}")
}

/// The fragment of one service port.
pub fn fragment(p: &ServicePort, cfg: &Config) -> Fragment {
    let mut f = Fragment::default();
    let proto = p.name.protocol.lower();
    let svc_chain = service_chain(p);
    let ext_chain = external_chain(p);
    let has_cluster = !p.cluster_endpoints.is_empty();
    let has_external = !p.external_endpoints.is_empty();
    // Where nothing can serve: reject as upstream, but drop external traffic for a Local
    // policy with no local endpoint (the load balancer is expected to steer away).
    let no_external = if p.external_local {
        "drop"
    } else {
        "goto reject-chain"
    };

    for ip in &p.cluster_ips {
        let key = format!("{ip} . {proto} . {}", p.port);
        if has_cluster {
            f.elements
                .insert((Map::ServiceIps, key), format!("goto {svc_chain}"));
        } else {
            f.elements
                .insert((Map::NoEndpointServices, key), "goto reject-chain".into());
        }
    }
    for ip in p.external_ips.iter().chain(&p.lb_ips) {
        let key = format!("{ip} . {proto} . {}", p.port);
        if has_external {
            f.elements
                .insert((Map::ServiceIps, key), format!("goto {ext_chain}"));
        } else {
            f.elements
                .insert((Map::NoEndpointServices, key), no_external.into());
        }
    }
    if let Some(np) = p.node_port {
        let key = format!("{proto} . {np}");
        if has_external {
            f.elements
                .insert((Map::ServiceNodePorts, key), format!("goto {ext_chain}"));
        } else {
            f.elements
                .insert((Map::NoEndpointNodePorts, key), no_external.into());
        }
    }

    if has_cluster {
        let mut rules = Vec::new();
        if let Some(cidr) = cfg.cluster_cidr {
            for ip in &p.cluster_ips {
                rules.push(format!(
                    "ip daddr {ip} ip saddr != {cidr} jump mark-for-masquerade"
                ));
            }
        }
        pick(
            p,
            &p.cluster_endpoints,
            pick_map(&svc_chain),
            &mut rules,
            &mut f.picks,
        );
        f.chains.insert(svc_chain.clone(), rules);
    }
    if has_external && p.has_external() {
        let mut rules = Vec::new();
        if p.external_local {
            if has_cluster {
                // Pods and the node itself may use any endpoint (upstream's short circuit);
                // the node's own traffic is masqueraded so replies come back through it.
                if let Some(cidr) = cfg.cluster_cidr {
                    rules.push(format!("ip saddr {cidr} goto {svc_chain}"));
                }
                rules.push("fib saddr type local jump mark-for-masquerade".into());
                rules.push(format!("fib saddr type local goto {svc_chain}"));
            }
        } else {
            rules.push("jump mark-for-masquerade".into());
        }
        pick(
            p,
            &p.external_endpoints,
            pick_map(&ext_chain),
            &mut rules,
            &mut f.picks,
        );
        f.chains.insert(ext_chain, rules);
    }

    let endpoints: BTreeSet<Endpoint> = p.all_endpoints();
    for ep in &endpoints {
        let mut rules = vec![format!("ip saddr {} jump mark-for-masquerade", ep.ip)];
        if let Some(timeout) = p.affinity_seconds {
            let set = affinity_set(p, ep, timeout);
            rules.push(format!("update @{set} {{ ip saddr }}"));
            f.sets.insert(set, timeout);
        }
        rules.push(format!(
            "meta l4proto {proto} dnat to {}:{}",
            ep.ip, ep.port
        ));
        f.chains.insert(endpoint_chain(p, ep), rules);
    }
    f
}

/// What is in our table now, as far as a full sync must know (read back from the kernel).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Existing {
    /// Whether the table exists at all.
    pub table: bool,
    /// Chain names.
    pub chains: BTreeSet<String>,
    /// Set names (maps excluded).
    pub sets: BTreeSet<String>,
    /// Map names.
    pub maps: BTreeSet<String>,
}

/// The fixed chains of the table, with their rules (base chains carry a hook spec).
fn skeleton(cfg: &Config) -> Vec<(&'static str, Option<&'static str>, Vec<String>)> {
    let nodeport_match = if cfg.nodeport_cidrs.is_empty() {
        "fib daddr type local".to_string()
    } else {
        "fib daddr type local ip daddr @nodeport-ips".to_string()
    };
    vec![
        (
            "mark-for-masquerade",
            None,
            vec![format!("meta mark set meta mark or {MASQ_MARK:#x}")],
        ),
        (
            "masquerading",
            None,
            vec![
                format!("meta mark & {MASQ_MARK:#x} == 0 return"),
                format!("meta mark set meta mark xor {MASQ_MARK:#x}"),
                "masquerade fully-random".into(),
            ],
        ),
        (
            "reject-chain",
            None,
            vec![
                "meta l4proto tcp reject with tcp reset".into(),
                "reject".into(),
            ],
        ),
        (
            "service-endpoints-check",
            None,
            vec!["ip daddr . meta l4proto . th dport vmap @no-endpoint-services".into()],
        ),
        (
            "nodeport-endpoints-check",
            None,
            vec![format!(
                "{nodeport_match} meta l4proto . th dport vmap @no-endpoint-nodeports"
            )],
        ),
        (
            "services",
            None,
            vec![
                "ip daddr . meta l4proto . th dport vmap @service-ips".into(),
                format!("{nodeport_match} meta l4proto . th dport vmap @service-nodeports"),
            ],
        ),
        (
            "filter-input",
            Some("type filter hook input priority -110; policy accept;"),
            vec![
                "ct state new jump nodeport-endpoints-check".into(),
                "ct state new jump service-endpoints-check".into(),
            ],
        ),
        (
            "filter-forward",
            Some("type filter hook forward priority -110; policy accept;"),
            vec!["ct state new jump service-endpoints-check".into()],
        ),
        (
            "filter-output",
            Some("type filter hook output priority -110; policy accept;"),
            vec!["ct state new jump service-endpoints-check".into()],
        ),
        (
            "nat-prerouting",
            Some("type nat hook prerouting priority dstnat; policy accept;"),
            vec!["jump services".into()],
        ),
        (
            "nat-output",
            Some("type nat hook output priority -100; policy accept;"),
            vec!["jump services".into()],
        ),
        (
            "nat-postrouting",
            Some("type nat hook postrouting priority srcnat; policy accept;"),
            vec!["jump masquerading".into()],
        ),
    ]
}

/// The applied state: every service port's model and fragment, as last written.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    ports: BTreeMap<ServicePortName, (ServicePort, Fragment)>,
}

/// Sizes for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Service ports.
    pub services: usize,
    /// Distinct endpoints over all service ports.
    pub endpoints: usize,
    /// Regular chains written by us for services.
    pub chains: usize,
    /// Rules in those chains.
    pub rules: usize,
}

impl Applied {
    /// Sizes of the applied state.
    pub fn counts(&self) -> Counts {
        let mut c = Counts {
            services: self.ports.len(),
            ..Counts::default()
        };
        for (p, f) in self.ports.values() {
            c.endpoints += p.all_endpoints().len();
            c.chains += f.chains.len();
            c.rules += f.rule_count();
        }
        c
    }

    /// The service ports applied.
    pub fn names(&self) -> impl Iterator<Item = &ServicePortName> {
        self.ports.keys()
    }

    /// The applied model of one service port.
    pub fn get(&self, name: &ServicePortName) -> Option<&ServicePort> {
        self.ports.get(name).map(|(p, _)| p)
    }

    /// Records a successfully applied plan.
    pub fn commit(&mut self, plan: Plan) {
        if plan.full {
            self.ports.clear();
        }
        for (name, entry) in plan.updates {
            match entry {
                Some(e) => {
                    self.ports.insert(name, e);
                }
                None => {
                    self.ports.remove(&name);
                }
            }
        }
    }
}

/// A transaction to apply, and the state it leads to.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The `nft -f` input.
    pub script: String,
    /// Whether this replaces everything.
    pub full: bool,
    /// Service ports changed: new (model, fragment) or None when removed.
    pub updates: Vec<(ServicePortName, Option<(ServicePort, Fragment)>)>,
}

impl Plan {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.script.is_empty()
    }
}

fn line(script: &mut String, args: std::fmt::Arguments<'_>) {
    let _ = script.write_fmt(args);
    script.push('\n');
}

/// A full sync: (re)declares the table, rewrites every chain, map and set of ours, and deletes
/// chains and sets no longer wanted. Affinity sets that stay keep their entries.
pub fn full_sync(
    cfg: &Config,
    ports: &BTreeMap<ServicePortName, ServicePort>,
    existing: &Existing,
) -> Plan {
    let mut s = String::with_capacity(ports.len() * 2048);
    line(&mut s, format_args!("add table {FAMILY_TABLE}"));
    let skeleton = skeleton(cfg);
    let mut wanted_chains: BTreeSet<&str> = BTreeSet::new();
    for (name, hook, _) in &skeleton {
        wanted_chains.insert(name);
        match hook {
            Some(h) => line(
                &mut s,
                format_args!("add chain {FAMILY_TABLE} {name} {{ {h} }}"),
            ),
            None => line(&mut s, format_args!("add chain {FAMILY_TABLE} {name}")),
        }
        line(&mut s, format_args!("flush chain {FAMILY_TABLE} {name}"));
    }
    for m in Map::ALL {
        line(
            &mut s,
            format_args!(
                "add map {FAMILY_TABLE} {} {{ type {} : verdict; }}",
                m.name(),
                m.key_type()
            ),
        );
        line(
            &mut s,
            format_args!("flush map {FAMILY_TABLE} {}", m.name()),
        );
    }
    line(
        &mut s,
        format_args!("add set {FAMILY_TABLE} nodeport-ips {{ type ipv4_addr; flags interval; }}"),
    );
    line(
        &mut s,
        format_args!("flush set {FAMILY_TABLE} nodeport-ips"),
    );
    if !cfg.nodeport_cidrs.is_empty() {
        let list: Vec<String> = cfg.nodeport_cidrs.iter().map(|c| c.to_string()).collect();
        line(
            &mut s,
            format_args!(
                "add element {FAMILY_TABLE} nodeport-ips {{ {} }}",
                list.join(", ")
            ),
        );
    }

    let mut updates = Vec::with_capacity(ports.len());
    let mut wanted_sets: BTreeSet<String> = BTreeSet::new();
    let fragments: Vec<(&ServicePortName, &ServicePort, Fragment)> = ports
        .iter()
        .map(|(n, p)| (n, p, fragment(p, cfg)))
        .collect();
    // Sets and chains exist before any rule refers to them.
    for (_, _, f) in &fragments {
        for (set, timeout) in &f.sets {
            declare_set(&mut s, set, *timeout);
            wanted_sets.insert(set.clone());
        }
        for map in f.picks.keys() {
            declare_pick(&mut s, map);
            if existing.maps.contains(map) {
                line(&mut s, format_args!("flush map {FAMILY_TABLE} {map}"));
            }
        }
        for chain in f.chains.keys() {
            line(&mut s, format_args!("add chain {FAMILY_TABLE} {chain}"));
            if existing.chains.contains(chain) {
                line(&mut s, format_args!("flush chain {FAMILY_TABLE} {chain}"));
            }
        }
    }
    let fragment_chains: std::collections::HashSet<&str> = fragments
        .iter()
        .flat_map(|(_, _, f)| f.chains.keys().map(String::as_str))
        .collect();
    let stale_chains: Vec<&String> = existing
        .chains
        .iter()
        .filter(|c| !wanted_chains.contains(c.as_str()) && !fragment_chains.contains(c.as_str()))
        .collect();
    for c in &stale_chains {
        line(&mut s, format_args!("flush chain {FAMILY_TABLE} {c}"));
    }
    let fragment_picks: std::collections::HashSet<&str> = fragments
        .iter()
        .flat_map(|(_, _, f)| f.picks.keys().map(String::as_str))
        .collect();
    let stale_maps: Vec<&String> = existing
        .maps
        .iter()
        .filter(|m| m.starts_with("pick-") && !fragment_picks.contains(m.as_str()))
        .collect();
    // Emptied before the endpoint chains their elements name are deleted.
    for map in &stale_maps {
        line(&mut s, format_args!("flush map {FAMILY_TABLE} {map}"));
    }
    for (name, _, rules) in &skeleton {
        for r in rules {
            line(&mut s, format_args!("add rule {FAMILY_TABLE} {name} {r}"));
        }
    }
    for (_, _, f) in &fragments {
        write_picks(&mut s, f.picks.iter());
        write_rules(&mut s, f.chains.iter());
        write_elements(&mut s, "add", f.elements.iter());
    }
    for c in &stale_chains {
        line(&mut s, format_args!("delete chain {FAMILY_TABLE} {c}"));
    }
    for map in &stale_maps {
        line(&mut s, format_args!("delete map {FAMILY_TABLE} {map}"));
    }
    for set in existing
        .sets
        .iter()
        .filter(|x| !wanted_sets.contains(*x) && x.as_str() != "nodeport-ips")
    {
        line(&mut s, format_args!("delete set {FAMILY_TABLE} {set}"));
    }
    for (n, p, f) in fragments {
        updates.push((n.clone(), Some((p.clone(), f))));
    }
    Plan {
        script: s,
        full: true,
        updates,
    }
}

fn declare_pick(s: &mut String, map: &str) {
    line(
        s,
        format_args!("add map {FAMILY_TABLE} {map} {{ typeof numgen random mod 2 : verdict; }}"),
    );
}

fn write_picks<'a>(s: &mut String, picks: impl Iterator<Item = (&'a String, &'a String)>) {
    for (map, elements) in picks {
        line(
            s,
            format_args!("add element {FAMILY_TABLE} {map} {{ {elements} }}"),
        );
    }
}

fn declare_set(s: &mut String, set: &str, timeout: u32) {
    line(
        s,
        format_args!(
            "add set {FAMILY_TABLE} {set} {{ type ipv4_addr; flags dynamic,timeout; timeout {timeout}s; }}"
        ),
    );
}

fn write_rules<'a>(s: &mut String, chains: impl Iterator<Item = (&'a String, &'a Vec<String>)>) {
    for (chain, rules) in chains {
        for r in rules {
            line(s, format_args!("add rule {FAMILY_TABLE} {chain} {r}"));
        }
    }
}

fn write_elements<'a>(
    s: &mut String,
    verb: &str,
    elements: impl Iterator<Item = (&'a (Map, String), &'a String)>,
) {
    for ((map, key), verdict) in elements {
        if verb == "delete" {
            line(
                s,
                format_args!("delete element {FAMILY_TABLE} {} {{ {key} }}", map.name()),
            );
        } else {
            line(
                s,
                format_args!(
                    "add element {FAMILY_TABLE} {} {{ {key} : {verdict} }}",
                    map.name()
                ),
            );
        }
    }
}

/// One changed service port: its name, old fragment, new (model, fragment).
type Change<'a> = (
    ServicePortName,
    Option<&'a Fragment>,
    Option<(ServicePort, Fragment)>,
);

/// A delta: only the service ports whose model differs from `applied` are rewritten; their
/// stale chains, sets and elements are removed. Empty script when nothing changed.
pub fn delta(
    cfg: &Config,
    applied: &Applied,
    ports: &BTreeMap<ServicePortName, ServicePort>,
) -> Plan {
    let mut changed: Vec<Change<'_>> = Vec::new();
    for (name, p) in ports {
        match applied.ports.get(name) {
            Some((old, _)) if old == p => {}
            old => changed.push((
                name.clone(),
                old.map(|(_, f)| f),
                Some((p.clone(), fragment(p, cfg))),
            )),
        }
    }
    for (name, (_, f)) in &applied.ports {
        if !ports.contains_key(name) {
            changed.push((name.clone(), Some(f), None));
        }
    }
    let empty = Fragment::default();
    let mut add_sets = String::new();
    let mut add_chains = String::new();
    let mut del_elements = String::new();
    let mut rewrite = String::new();
    let mut add_elements = String::new();
    let mut flush_stale = String::new();
    let mut del_stale = String::new();
    let mut del_sets = String::new();
    for (_, old, new) in &changed {
        let old = old.unwrap_or(&empty);
        let new = new.as_ref().map(|(_, f)| f).unwrap_or(&empty);
        for (set, timeout) in &new.sets {
            if !old.sets.contains_key(set) {
                declare_set(&mut add_sets, set, *timeout);
            }
        }
        for (map, elements) in &new.picks {
            match old.picks.get(map) {
                Some(old_elements) if old_elements == elements => continue,
                Some(_) => line(&mut rewrite, format_args!("flush map {FAMILY_TABLE} {map}")),
                None => declare_pick(&mut add_sets, map),
            }
            write_picks(&mut rewrite, std::iter::once((map, elements)));
        }
        for map in old.picks.keys().filter(|m| !new.picks.contains_key(*m)) {
            // Emptied before the endpoint chains its elements name are deleted.
            line(
                &mut flush_stale,
                format_args!("flush map {FAMILY_TABLE} {map}"),
            );
            line(
                &mut del_sets,
                format_args!("delete map {FAMILY_TABLE} {map}"),
            );
        }
        for set in old.sets.keys().filter(|s| !new.sets.contains_key(*s)) {
            line(
                &mut del_sets,
                format_args!("delete set {FAMILY_TABLE} {set}"),
            );
        }
        for (chain, rules) in &new.chains {
            match old.chains.get(chain) {
                Some(old_rules) if old_rules == rules => continue,
                Some(_) => line(
                    &mut rewrite,
                    format_args!("flush chain {FAMILY_TABLE} {chain}"),
                ),
                None => line(
                    &mut add_chains,
                    format_args!("add chain {FAMILY_TABLE} {chain}"),
                ),
            }
            write_rules(&mut rewrite, std::iter::once((chain, rules)));
        }
        for chain in old.chains.keys().filter(|c| !new.chains.contains_key(*c)) {
            line(
                &mut flush_stale,
                format_args!("flush chain {FAMILY_TABLE} {chain}"),
            );
            line(
                &mut del_stale,
                format_args!("delete chain {FAMILY_TABLE} {chain}"),
            );
        }
        write_elements(
            &mut del_elements,
            "delete",
            old.elements
                .iter()
                .filter(|(k, v)| new.elements.get(*k) != Some(*v)),
        );
        write_elements(
            &mut add_elements,
            "add",
            new.elements
                .iter()
                .filter(|(k, v)| old.elements.get(*k) != Some(*v)),
        );
    }
    let script = [
        add_sets,
        add_chains,
        del_elements,
        rewrite,
        add_elements,
        flush_stale,
        del_stale,
        del_sets,
    ]
    .concat();
    Plan {
        script,
        full: false,
        updates: changed.into_iter().map(|(n, _, new)| (n, new)).collect(),
    }
}

/// Parses `nft -j list chains ip kube-lite-proxy` and `nft -j list sets ...` output merged
/// into one JSON document (any object with `chain` or `set` entries of our table counts).
pub fn parse_existing(json: &str) -> Result<Existing, serde_json::Error> {
    let v: serde_json::Value = serde_json::from_str(json)?;
    let mut e = Existing::default();
    for item in v["nftables"].as_array().into_iter().flatten() {
        for (kind, into) in [
            ("chain", &mut e.chains),
            ("set", &mut e.sets),
            ("map", &mut e.maps),
        ] {
            let obj = &item[kind];
            if obj["table"] == TABLE
                && obj["family"] == "ip"
                && let Some(name) = obj["name"].as_str()
            {
                into.insert(name.to_string());
            }
        }
        if item["table"]["name"] == TABLE && item["table"]["family"] == "ip" {
            e.table = true;
        }
    }
    if !e.chains.is_empty() {
        e.table = true;
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::{slice, svc};
    use crate::model::{NodeView, build};
    use serde_json::json;

    fn cfg() -> Config {
        Config {
            cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
            nodeport_cidrs: vec![],
        }
    }

    fn service(
        name: &str,
        ip: &str,
        extra: serde_json::Value,
    ) -> k8s_openapi::api::core::v1::Service {
        let mut v = json!({
            "metadata": {"namespace": "default", "name": name},
            "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}
        });
        if let (Some(spec), Some(extra)) = (v["spec"].as_object_mut(), extra.as_object()) {
            for (k, val) in extra {
                spec.insert(k.clone(), val.clone());
            }
        }
        svc(v)
    }

    fn endpoints(
        name: &str,
        ips: &[&str],
        node: &str,
    ) -> k8s_openapi::api::discovery::v1::EndpointSlice {
        let eps: Vec<serde_json::Value> = ips
            .iter()
            .map(|ip| json!({"addresses": [ip], "nodeName": node}))
            .collect();
        slice(json!({
            "metadata": {"namespace": "default", "name": format!("{name}-x"),
                "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": eps
        }))
    }

    fn node() -> NodeView {
        NodeView { name: "n1".into() }
    }

    #[test]
    fn cluster_ip_dispatches_to_a_random_endpoint_with_dnat_and_masquerade_rules() {
        let ports = build(
            &[service("web", "10.96.0.10", json!({}))],
            &[endpoints("web", &["10.244.0.2", "10.244.0.3"], "n1")],
            &node(),
        );
        let plan = full_sync(&cfg(), &ports, &Existing::default());
        let s = &plan.script;
        let svc_chain = service_chain(ports.values().next().unwrap());
        assert!(svc_chain.starts_with("service-") && svc_chain.ends_with("-default/web/tcp/http"));
        assert!(s.contains(&format!(
            "add element ip kube-lite-proxy service-ips {{ 10.96.0.10 . tcp . 80 : goto {svc_chain} }}"
        )));
        assert!(s.contains(&format!(
            "add rule ip kube-lite-proxy {svc_chain} ip daddr 10.96.0.10 ip saddr != 10.244.0.0/16 jump mark-for-masquerade"
        )));
        assert!(s.contains(&format!("numgen random mod 2 vmap @pick-{svc_chain}")));
        assert!(s.contains(&format!(
            "add map ip kube-lite-proxy pick-{svc_chain} {{ typeof numgen random mod 2 : verdict; }}"
        )));
        assert!(s.contains(&format!(
            "add element ip kube-lite-proxy pick-{svc_chain} {{ 0 : goto endpoint-"
        )));
        assert!(s.contains("meta l4proto tcp dnat to 10.244.0.2:8080"));
        assert!(s.contains("meta l4proto tcp dnat to 10.244.0.3:8080"));
        assert!(
            s.contains("ip saddr 10.244.0.3 jump mark-for-masquerade"),
            "hairpin"
        );
        assert!(s.contains("masquerade fully-random"));
        // Not a NodePort service: no nodeport element.
        assert!(!s.contains("service-nodeports { tcp"));
        assert!(!s.contains("delete "), "nothing stale on a fresh table");
    }

    #[test]
    fn services_without_endpoints_reject_and_local_policy_without_local_endpoints_drops() {
        let ports = build(
            &[
                service("empty", "10.96.0.11", json!({"type": "NodePort"})),
                service(
                    "local",
                    "10.96.0.12",
                    json!({"type": "NodePort", "externalTrafficPolicy": "Local",
                        "ports": [{"name": "http", "port": 80, "nodePort": 30081}]}),
                ),
            ],
            &[endpoints("local", &["10.244.1.2"], "other-node")],
            &node(),
        );
        let s = full_sync(&cfg(), &ports, &Existing::default()).script;
        assert!(s.contains("no-endpoint-services { 10.96.0.11 . tcp . 80 : goto reject-chain }"));
        assert!(s.contains("no-endpoint-nodeports { tcp . 30080 : goto reject-chain }"));
        assert!(s.contains("no-endpoint-nodeports { tcp . 30081 : drop }"));
        // The local service still serves its cluster IP through the remote endpoint.
        assert!(s.contains("service-ips { 10.96.0.12 . tcp . 80 : goto service-"));
        assert!(s.contains("reject with tcp reset"));
    }

    #[test]
    fn node_ports_and_external_ips_go_through_the_external_chain() {
        let ports = build(
            &[
                service(
                    "np",
                    "10.96.0.13",
                    json!({"type": "NodePort", "externalIPs": ["192.0.2.1"]}),
                ),
                service(
                    "lcl",
                    "10.96.0.14",
                    json!({"type": "NodePort", "externalTrafficPolicy": "Local",
                        "ports": [{"name": "http", "port": 80, "nodePort": 30082}]}),
                ),
            ],
            &[
                endpoints("np", &["10.244.0.2"], "n2"),
                endpoints("lcl", &["10.244.0.4", "10.244.1.4"], "n1"),
            ],
            &node(),
        );
        let mut cfg = cfg();
        cfg.nodeport_cidrs = vec!["192.168.1.0/24".parse().unwrap()];
        let plan = full_sync(&cfg, &ports, &Existing::default());
        let s = &plan.script;
        assert!(s.contains("service-nodeports { tcp . 30080 : goto external-"));
        assert!(s.contains("service-ips { 192.0.2.1 . tcp . 80 : goto external-"));
        assert!(s.contains("add element ip kube-lite-proxy nodeport-ips { 192.168.1.0/24 }"));
        assert!(s.contains("fib daddr type local ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports"));
        let lcl = ports.values().find(|p| p.name.name == "lcl").unwrap();
        let f = fragment(lcl, &cfg);
        let ext = f
            .chains
            .iter()
            .find(|(k, _)| k.starts_with("external-"))
            .unwrap()
            .1;
        // Pod and host traffic short-circuit to all endpoints; outside traffic keeps its
        // source and reaches only the local endpoint.
        assert_eq!(
            ext[0],
            format!("ip saddr 10.244.0.0/16 goto {}", service_chain(lcl))
        );
        assert!(ext.iter().all(|r| r != "jump mark-for-masquerade"));
        assert!(
            ext.last()
                .unwrap()
                .starts_with("numgen random mod 2 vmap @pick-external-")
        );
        let np = ports.values().find(|p| p.name.name == "np").unwrap();
        let ext = fragment(np, &cfg)
            .chains
            .into_iter()
            .find(|(k, _)| k.starts_with("external-"))
            .unwrap()
            .1;
        assert_eq!(ext[0], "jump mark-for-masquerade");
    }

    #[test]
    fn client_ip_affinity_uses_a_timed_set_per_endpoint() {
        let ports = build(
            &[service(
                "aff",
                "10.96.0.15",
                json!({"sessionAffinity": "ClientIP",
                    "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 300}}}),
            )],
            &[endpoints("aff", &["10.244.0.2", "10.244.0.3"], "n1")],
            &node(),
        );
        let s = full_sync(&cfg(), &ports, &Existing::default()).script;
        assert_eq!(s.matches("flags dynamic,timeout; timeout 300s;").count(), 2);
        assert_eq!(s.matches("update @affinity-").count(), 2);
        assert!(s.contains("ip saddr @affinity-"));
    }

    #[test]
    fn udp_and_sctp_ports_use_their_protocol() {
        let s = svc(json!({"metadata": {"namespace": "d", "name": "dns"},
            "spec": {"clusterIP": "10.96.0.16", "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "s", "port": 99, "protocol": "SCTP"}]}}));
        let sl = slice(json!({"metadata": {"namespace": "d", "name": "dns-a",
                "labels": {"kubernetes.io/service-name": "dns"}},
            "addressType": "IPv4",
            "ports": [{"name": "dns", "port": 5353, "protocol": "UDP"}, {"name": "s", "port": 9999, "protocol": "SCTP"}],
            "endpoints": [{"addresses": ["10.244.0.9"]}]}));
        let ports = build(&[s], &[sl], &node());
        let script = full_sync(&cfg(), &ports, &Existing::default()).script;
        assert!(script.contains("10.96.0.16 . udp . 53 : goto"));
        assert!(script.contains("meta l4proto udp dnat to 10.244.0.9:5353"));
        assert!(script.contains("10.96.0.16 . sctp . 99 : goto"));
        assert!(script.contains("meta l4proto sctp dnat to 10.244.0.9:9999"));
    }

    #[test]
    fn a_full_sync_deletes_stale_chains_and_sets_and_keeps_wanted_ones() {
        let ports = build(
            &[service("web", "10.96.0.10", json!({}))],
            &[endpoints("web", &["10.244.0.2"], "n1")],
            &node(),
        );
        let first = full_sync(&cfg(), &ports, &Existing::default());
        let mut existing = Existing {
            table: true,
            ..Existing::default()
        };
        for (_, e) in &first.updates {
            let (_, f) = e.as_ref().unwrap();
            existing.chains.extend(f.chains.keys().cloned());
        }
        existing.chains.insert("services".into());
        existing
            .chains
            .insert("endpoint-OLD-default/gone/tcp/http__10.244.9.9/80".into());
        existing.sets.insert("affinity-OLD".into());
        existing.sets.insert("nodeport-ips".into());
        let s = full_sync(&cfg(), &ports, &existing).script;
        assert!(s.contains(
            "delete chain ip kube-lite-proxy endpoint-OLD-default/gone/tcp/http__10.244.9.9/80"
        ));
        assert!(s.contains("delete set ip kube-lite-proxy affinity-OLD"));
        assert!(!s.contains("delete set ip kube-lite-proxy nodeport-ips"));
        assert!(!s.contains("delete chain ip kube-lite-proxy services"));
        assert!(s.contains("flush chain ip kube-lite-proxy services"));
        assert!(
            !s.contains("delete table"),
            "never deletes the table on a sync"
        );
    }

    fn many(
        n: usize,
        eps_per: usize,
        moved: Option<usize>,
    ) -> (
        Vec<k8s_openapi::api::core::v1::Service>,
        Vec<k8s_openapi::api::discovery::v1::EndpointSlice>,
    ) {
        let mut services = Vec::with_capacity(n);
        let mut slices = Vec::with_capacity(n);
        for i in 0..n {
            let name = format!("s{i}");
            let ip = format!("10.{}.{}.{}", 96 + i / 65536, (i / 256) % 256, i % 256);
            services.push(service(&name, &ip, json!({})));
            let ips: Vec<String> = (0..eps_per)
                .map(|j| {
                    let j = if moved == Some(i) && j == 0 { 250 } else { j };
                    format!("10.{}.{}.{}", 200 + i / 65536, (i / 256) % 256, j)
                })
                .collect();
            let refs: Vec<&str> = ips.iter().map(String::as_str).collect();
            slices.push(endpoints(&name, &refs, "n1"));
        }
        (services, slices)
    }

    #[test]
    fn a_delta_for_one_endpoint_among_ten_thousand_services_is_small() {
        let (services, slices) = many(10_000, 10, None);
        let ports = build(&services, &slices, &node());
        let mut applied = Applied::default();
        let full = full_sync(&cfg(), &ports, &Existing::default());
        assert!(full.script.len() > 10_000 * 10 * 100);
        applied.commit(full);
        assert_eq!(applied.counts().services, 10_000);
        assert_eq!(applied.counts().endpoints, 100_000);
        assert!(
            delta(&cfg(), &applied, &ports).is_empty(),
            "no change, no delta"
        );

        let (services, slices) = many(10_000, 10, Some(4242));
        let ports = build(&services, &slices, &node());
        let plan = delta(&cfg(), &applied, &ports);
        assert_eq!(plan.updates.len(), 1);
        let s = &plan.script;
        assert!(s.lines().count() < 20, "delta too large:\n{s}");
        assert!(s.contains("add chain ip kube-lite-proxy endpoint-"));
        assert!(s.contains("dnat to 10.200.16.250:8080"));
        assert!(s.contains("flush map ip kube-lite-proxy pick-service-"));
        assert!(
            !s.contains("flush chain ip kube-lite-proxy service-"),
            "service chain unchanged"
        );
        assert!(s.contains("delete chain ip kube-lite-proxy endpoint-"));
        assert!(s.contains("__10.200.16.0/8080"));
        // The choice map is refilled before the old endpoint chain goes.
        let rewrite = s
            .find("flush map ip kube-lite-proxy pick-service-")
            .unwrap();
        let delete = s.find("delete chain").unwrap();
        assert!(rewrite < delete);
        applied.commit(plan);
        assert!(delta(&cfg(), &applied, &ports).is_empty());
    }

    #[test]
    fn a_delta_removing_a_service_deletes_its_elements_chains_and_sets() {
        let aff = json!({"sessionAffinity": "ClientIP"});
        let services = vec![
            service("a", "10.96.0.20", aff.clone()),
            service("b", "10.96.0.21", aff),
        ];
        let slices = vec![
            endpoints("a", &["10.244.0.2"], "n1"),
            endpoints("b", &["10.244.0.3"], "n1"),
        ];
        let mut applied = Applied::default();
        applied.commit(full_sync(
            &cfg(),
            &build(&services, &slices, &node()),
            &Existing::default(),
        ));
        let plan = delta(
            &cfg(),
            &applied,
            &build(&services[..1], &slices[..1], &node()),
        );
        let s = &plan.script;
        assert!(
            s.contains("delete element ip kube-lite-proxy service-ips { 10.96.0.21 . tcp . 80 }")
        );
        assert_eq!(s.matches("delete chain").count(), 2, "{s}");
        assert_eq!(s.matches("delete set").count(), 1, "{s}");
        assert!(!s.contains("10.96.0.20"));
        // Endpoints gone: the element moves to the reject map.
        let plan = delta(&cfg(), &applied, &build(&services, &slices[..1], &node()));
        assert!(
            plan.script.contains(
                "delete element ip kube-lite-proxy service-ips { 10.96.0.21 . tcp . 80 }"
            )
        );
        assert!(plan.script.contains("add element ip kube-lite-proxy no-endpoint-services { 10.96.0.21 . tcp . 80 : goto reject-chain }"));
    }

    #[test]
    fn existing_objects_are_read_from_nft_json() {
        let json = r#"{"nftables": [{"metainfo": {}},
            {"table": {"family": "ip", "name": "kube-lite-proxy", "handle": 1}},
            {"chain": {"family": "ip", "table": "kube-lite-proxy", "name": "services", "handle": 2}},
            {"chain": {"family": "ip", "table": "other", "name": "x", "handle": 3}},
            {"set": {"family": "ip", "table": "kube-lite-proxy", "name": "affinity-A", "handle": 4}},
            {"map": {"family": "ip", "table": "kube-lite-proxy", "name": "service-ips", "handle": 5}}]}"#;
        let e = parse_existing(json).unwrap();
        assert!(e.table);
        assert_eq!(e.chains.iter().collect::<Vec<_>>(), vec!["services"]);
        assert_eq!(e.sets.iter().collect::<Vec<_>>(), vec!["affinity-A"]);
    }
}
