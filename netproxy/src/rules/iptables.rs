//! The iptables ruleset (`--mode iptables`), in the style of kube-proxy's iptables mode but with
//! chains of our own: `KUBE-LITE-SERVICES` (nat) dispatches on destination and port to
//! `KL-SVC-*` chains that pick an endpoint with `statistic --mode random --probability`,
//! `KL-SEP-*` chains DNAT (and mark hairpin traffic), `KL-EXT-*` handle node ports and
//! external IPs, `recent` lists give ClientIP affinity, and `KUBE-LITE-FILTER` (filter) rejects
//! traffic to services without endpoints. Input for `iptables-restore --noflush`: declaring a
//! chain flushes it, so only our chains change; the jumps from the built-in chains are
//! ensured separately.
//!
//! Unlike nftables' verdict maps, the dispatch chain is one list: a delta rewrites it whole
//! (as upstream's partial syncs do) plus only the changed service and endpoint chains.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use super::{Config, MASQ_MARK};
use crate::model::{Endpoint, Protocol, ServicePort, ServicePortName};

/// nat: dispatch from PREROUTING and OUTPUT.
pub const SERVICES: &str = "KUBE-LITE-SERVICES";
/// nat: node ports, jumped to for local destinations.
pub const NODEPORTS: &str = "KUBE-LITE-NODEPORTS";
/// nat: marks for masquerade.
pub const MARK_MASQ: &str = "KUBE-LITE-MARK-MASQ";
/// nat: from POSTROUTING, masquerades marked packets.
pub const POSTROUTING: &str = "KUBE-LITE-POSTROUTING";
/// filter: rejects traffic to services without endpoints (INPUT, FORWARD, OUTPUT).
pub const FILTER: &str = "KUBE-LITE-FILTER";

/// The jumps from built-in chains: (table, built-in chain, our chain, extra match).
pub const JUMPS: [(&str, &str, &str, &str); 6] = [
    ("nat", "PREROUTING", SERVICES, ""),
    ("nat", "OUTPUT", SERVICES, ""),
    ("nat", "POSTROUTING", POSTROUTING, ""),
    ("filter", "INPUT", FILTER, "-m conntrack --ctstate NEW"),
    ("filter", "FORWARD", FILTER, "-m conntrack --ctstate NEW"),
    ("filter", "OUTPUT", FILTER, "-m conntrack --ctstate NEW"),
];

/// Whether a chain name is one of ours.
pub fn is_ours(chain: &str) -> bool {
    chain.starts_with("KUBE-LITE-") || chain.starts_with("KL-")
}

/// A 64-bit hash in base 16, to keep chain names under iptables' 28 characters.
fn hash16(s: &str) -> String {
    Sha256::digest(s.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}

fn key(p: &ServicePortName) -> String {
    format!(
        "{}/{}:{}/{}",
        p.namespace,
        p.name,
        p.port,
        p.protocol.lower()
    )
}

fn svc_chain(p: &ServicePort) -> String {
    format!("KL-SVC-{}", hash16(&key(&p.name)))
}

fn ext_chain(p: &ServicePort) -> String {
    format!("KL-EXT-{}", hash16(&key(&p.name)))
}

fn sep_chain(p: &ServicePort, ep: &Endpoint) -> String {
    format!(
        "KL-SEP-{}",
        hash16(&format!("{}@{}:{}", key(&p.name), ep.ip, ep.port))
    )
}

fn dport(proto: Protocol, port: u16) -> String {
    let l = proto.lower();
    format!("-p {l} -m {l} --dport {port}")
}

/// What one service port contributes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fragment {
    /// nat chains of its own: name -> rules (the part after `-A <chain> `).
    pub chains: BTreeMap<String, Vec<String>>,
    /// Rules it adds to `KUBE-LITE-SERVICES`.
    pub services: Vec<String>,
    /// Rules it adds to `KUBE-LITE-NODEPORTS`.
    pub nodeports: Vec<String>,
    /// Rules it adds to `KUBE-LITE-FILTER`.
    pub filter: Vec<String>,
}

fn pick(p: &ServicePort, endpoints: &[Endpoint], rules: &mut Vec<String>) {
    if let Some(timeout) = p.affinity_seconds {
        for ep in endpoints {
            let sep = sep_chain(p, ep);
            rules.push(format!(
                "-m recent --name {sep} --mask 255.255.255.255 --rsource --rcheck --seconds {timeout} --reap -j {sep}"
            ));
        }
    }
    let n = endpoints.len();
    for (i, ep) in endpoints.iter().enumerate() {
        let sep = sep_chain(p, ep);
        if i + 1 < n {
            let prob = 1.0 / (n - i) as f64;
            rules.push(format!(
                "-m statistic --mode random --probability {prob:.11} -j {sep}"
            ));
        } else {
            rules.push(format!("-j {sep}"));
        }
    }
}

/// The fragment of one service port.
pub fn fragment(p: &ServicePort, cfg: &Config) -> Fragment {
    let mut f = Fragment::default();
    let proto = p.name.protocol;
    let dp = dport(proto, p.port);
    let svc = svc_chain(p);
    let ext = ext_chain(p);
    let has_cluster = !p.cluster_endpoints.is_empty();
    let has_external = !p.external_endpoints.is_empty();
    let no_external = if p.external_local { "DROP" } else { "REJECT" };
    for ip in &p.cluster_ips {
        if has_cluster {
            f.services.push(format!("-d {ip}/32 {dp} -j {svc}"));
        } else {
            f.filter.push(format!("-d {ip}/32 {dp} -j REJECT"));
        }
    }
    for ip in p.external_ips.iter().chain(&p.lb_ips) {
        if has_external {
            f.services.push(format!("-d {ip}/32 {dp} -j {ext}"));
        } else {
            f.filter.push(format!("-d {ip}/32 {dp} -j {no_external}"));
        }
    }
    if let Some(np) = p.node_port {
        let npm = dport(proto, np);
        if has_external {
            f.nodeports.push(format!("{npm} -j {ext}"));
        } else {
            f.filter.push(format!(
                "-m addrtype --dst-type LOCAL {npm} -j {no_external}"
            ));
        }
    }
    if has_cluster {
        let mut rules = Vec::new();
        if let Some(cidr) = cfg.cluster_cidr {
            for ip in &p.cluster_ips {
                rules.push(format!("! -s {cidr} -d {ip}/32 {dp} -j {MARK_MASQ}"));
            }
        }
        pick(p, &p.cluster_endpoints, &mut rules);
        f.chains.insert(svc.clone(), rules);
    }
    if has_external && p.has_external() {
        let mut rules = Vec::new();
        if p.external_local {
            if has_cluster {
                if let Some(cidr) = cfg.cluster_cidr {
                    rules.push(format!("-s {cidr} -j {svc}"));
                }
                rules.push(format!("-m addrtype --src-type LOCAL -j {MARK_MASQ}"));
                rules.push(format!("-m addrtype --src-type LOCAL -j {svc}"));
            }
        } else {
            rules.push(format!("-j {MARK_MASQ}"));
        }
        pick(p, &p.external_endpoints, &mut rules);
        f.chains.insert(ext, rules);
    }
    let endpoints: BTreeSet<Endpoint> = p.all_endpoints();
    for ep in &endpoints {
        let sep = sep_chain(p, ep);
        let recent = if p.affinity_seconds.is_some() {
            format!(" -m recent --name {sep} --set --rsource")
        } else {
            String::new()
        };
        f.chains.insert(
            sep,
            vec![
                format!("-s {}/32 -j {MARK_MASQ}", ep.ip),
                format!(
                    "-p {}{recent} -j DNAT --to-destination {}:{}",
                    proto.lower(),
                    ep.ip,
                    ep.port
                ),
            ],
        );
    }
    f
}

/// What has been applied: each port's model and fragment.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    ports: BTreeMap<ServicePortName, (ServicePort, Fragment)>,
}

impl Applied {
    /// Sizes of the applied state.
    pub fn counts(&self) -> super::nft::Counts {
        let mut c = super::nft::Counts {
            services: self.ports.len(),
            ..Default::default()
        };
        for (p, f) in self.ports.values() {
            c.endpoints += p.all_endpoints().len();
            c.chains += f.chains.len();
            c.rules += f.chains.values().map(Vec::len).sum::<usize>()
                + f.services.len()
                + f.nodeports.len()
                + f.filter.len();
        }
        c
    }
}

/// An `iptables-restore --noflush` input and the state it leads to.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The input (empty: nothing to do).
    pub script: String,
    /// Whether the plan replaces everything.
    pub full: bool,
    /// Changed ports: new (model, fragment), or None when removed.
    pub updates: BTreeMap<ServicePortName, Option<(ServicePort, Fragment)>>,
}

impl Applied {
    /// Records a plan the kernel took.
    pub fn commit(&mut self, plan: Plan) {
        if plan.full {
            self.ports.clear();
        }
        for (n, e) in plan.updates {
            match e {
                Some(e) => {
                    self.ports.insert(n, e);
                }
                None => {
                    self.ports.remove(&n);
                }
            }
        }
    }
}

/// The fragments of the state after `updates` (unordered: dispatch rules are disjoint).
fn merged<'a>(
    applied: &'a Applied,
    updates: &'a BTreeMap<ServicePortName, Option<(ServicePort, Fragment)>>,
    full: bool,
) -> impl Iterator<Item = &'a Fragment> + Clone {
    applied
        .ports
        .iter()
        .filter(move |(n, _)| !full && !updates.contains_key(*n))
        .map(|(_, (_, f))| f)
        .chain(updates.values().flatten().map(|(_, f)| f))
}

fn shared<'a>(
    fragments: impl Iterator<Item = &'a Fragment> + Clone,
    s: &mut String,
    decl: &mut String,
    nat: &mut String,
) {
    let _ = writeln!(s, "*filter\n:{FILTER} - [0:0]");
    for f in fragments.clone() {
        for r in &f.filter {
            let _ = writeln!(s, "-A {FILTER} {r}");
        }
    }
    let _ = writeln!(s, "COMMIT");
    for c in [SERVICES, NODEPORTS, MARK_MASQ, POSTROUTING] {
        let _ = writeln!(decl, ":{c} - [0:0]");
    }
    let _ = writeln!(nat, "-A {MARK_MASQ} -j MARK --or-mark {MASQ_MARK:#x}");
    let _ = writeln!(
        nat,
        "-A {POSTROUTING} -m mark ! --mark {MASQ_MARK:#x}/{MASQ_MARK:#x} -j RETURN"
    );
    let _ = writeln!(nat, "-A {POSTROUTING} -j MARK --xor-mark {MASQ_MARK:#x}");
    let _ = writeln!(nat, "-A {POSTROUTING} -j MASQUERADE --random-fully");
    for f in fragments {
        for r in &f.services {
            let _ = writeln!(nat, "-A {SERVICES} {r}");
        }
        for r in &f.nodeports {
            let _ = writeln!(nat, "-A {NODEPORTS} {r}");
        }
    }
    let _ = writeln!(
        nat,
        "-A {SERVICES} -m addrtype --dst-type LOCAL -j {NODEPORTS}"
    );
}

fn write_chains<'a>(
    decl: &mut String,
    nat: &mut String,
    chains: impl Iterator<Item = (&'a String, &'a Vec<String>)>,
) {
    for (c, rules) in chains {
        let _ = writeln!(decl, ":{c} - [0:0]");
        for r in rules {
            let _ = writeln!(nat, "-A {c} {r}");
        }
    }
}

/// A full sync: every chain of ours declared (so flushed) and rewritten; `existing` chains
/// of ours (nat) no longer wanted are flushed and deleted.
pub fn full_sync(
    cfg: &Config,
    ports: &BTreeMap<ServicePortName, ServicePort>,
    existing: &BTreeSet<String>,
) -> Plan {
    let updates: BTreeMap<ServicePortName, Option<(ServicePort, Fragment)>> = ports
        .iter()
        .map(|(n, p)| (n.clone(), Some((p.clone(), fragment(p, cfg)))))
        .collect();
    let empty = Applied::default();
    let mut s = String::new();
    let mut decl = String::new();
    let mut rules = String::new();
    shared(
        merged(&empty, &updates, true),
        &mut s,
        &mut decl,
        &mut rules,
    );
    let mut wanted: BTreeSet<&str> = BTreeSet::from([SERVICES, NODEPORTS, MARK_MASQ, POSTROUTING]);
    for (_, f) in updates.values().flatten() {
        write_chains(&mut decl, &mut rules, f.chains.iter());
        wanted.extend(f.chains.keys().map(String::as_str));
    }
    let mut delete = String::new();
    for c in existing
        .iter()
        .filter(|c| is_ours(c) && !wanted.contains(c.as_str()) && c.as_str() != FILTER)
    {
        let _ = writeln!(decl, ":{c} - [0:0]");
        let _ = writeln!(delete, "-X {c}");
    }
    let _ = write!(s, "*nat\n{decl}{rules}{delete}COMMIT\n");
    Plan {
        script: s,
        full: true,
        updates,
    }
}

/// A delta: the shared dispatch chains rewritten, plus only the chains of changed ports.
/// Empty script when nothing changed.
pub fn delta(
    cfg: &Config,
    applied: &Applied,
    ports: &BTreeMap<ServicePortName, ServicePort>,
) -> Plan {
    let mut updates: BTreeMap<ServicePortName, Option<(ServicePort, Fragment)>> = BTreeMap::new();
    for (n, p) in ports {
        match applied.ports.get(n) {
            Some((old, _)) if old == p => {}
            _ => {
                updates.insert(n.clone(), Some((p.clone(), fragment(p, cfg))));
            }
        }
    }
    for n in applied.ports.keys() {
        if !ports.contains_key(n) {
            updates.insert(n.clone(), None);
        }
    }
    if updates.is_empty() {
        return Plan {
            script: String::new(),
            full: false,
            updates,
        };
    }
    let mut old_chains: BTreeMap<&String, &Vec<String>> = BTreeMap::new();
    let mut new_chains: BTreeMap<&String, &Vec<String>> = BTreeMap::new();
    for (n, e) in &updates {
        if let Some((_, f)) = applied.ports.get(n) {
            old_chains.extend(f.chains.iter());
        }
        if let Some((_, f)) = e {
            new_chains.extend(f.chains.iter());
        }
    }
    let mut s = String::new();
    let mut decl = String::new();
    let mut rules = String::new();
    shared(
        merged(applied, &updates, false),
        &mut s,
        &mut decl,
        &mut rules,
    );
    write_chains(
        &mut decl,
        &mut rules,
        new_chains
            .iter()
            .filter(|(c, r)| old_chains.get(*c) != Some(*r))
            .map(|(c, r)| (*c, *r)),
    );
    let mut delete = String::new();
    for c in old_chains.keys().filter(|c| !new_chains.contains_key(*c)) {
        let _ = writeln!(decl, ":{c} - [0:0]");
        let _ = writeln!(delete, "-X {c}");
    }
    let _ = write!(s, "*nat\n{decl}{rules}{delete}COMMIT\n");
    Plan {
        script: s,
        full: false,
        updates,
    }
}

/// Our chains named in `iptables-save -t <table>` output.
pub fn parse_chains(save: &str) -> BTreeSet<String> {
    save.lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| is_ours(c))
        .map(str::to_string)
        .collect()
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

    fn ports(n: usize, eps: usize, moved: Option<usize>) -> BTreeMap<ServicePortName, ServicePort> {
        let mut services = Vec::new();
        let mut slices = Vec::new();
        for i in 0..n {
            services.push(svc(
                json!({"metadata": {"namespace": "d", "name": format!("s{i}")},
                "spec": {"type": "NodePort", "clusterIP": format!("10.96.{}.{}", i / 256, i % 256),
                    "sessionAffinity": if i == 0 { "ClientIP" } else { "None" },
                    "ports": [{"name": "http", "port": 80, "nodePort": 30000 + i}]}}),
            ));
            let addrs: Vec<serde_json::Value> = (0..eps)
                .map(|j| {
                    let j = if moved == Some(i) && j == 0 { 250 } else { j };
                    json!({"addresses": [format!("10.200.{}.{j}", i % 256)]})
                })
                .collect();
            slices.push(slice(
                json!({"metadata": {"namespace": "d", "name": format!("s{i}-a"),
                    "labels": {"kubernetes.io/service-name": format!("s{i}")}},
                "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
                "endpoints": addrs}),
            ));
        }
        build(&services, &slices, &NodeView { name: "n1".into() })
    }

    #[test]
    fn services_dispatch_to_random_endpoints_with_falling_probabilities() {
        let plan = full_sync(&cfg(), &ports(2, 3, None), &BTreeSet::new());
        let s = &plan.script;
        assert!(
            s.starts_with("*filter\n:KUBE-LITE-FILTER - [0:0]\nCOMMIT\n*nat\n"),
            "{s}"
        );
        assert!(
            s.contains("-A KUBE-LITE-SERVICES -d 10.96.0.1/32 -p tcp -m tcp --dport 80 -j KL-SVC-")
        );
        assert!(s.contains("-m statistic --mode random --probability 0.33333333333 -j KL-SEP-"));
        assert!(s.contains("-m statistic --mode random --probability 0.50000000000 -j KL-SEP-"));
        assert!(s.contains("-j DNAT --to-destination 10.200.1.2:8080"));
        assert!(s.contains(
            "! -s 10.244.0.0/16 -d 10.96.0.1/32 -p tcp -m tcp --dport 80 -j KUBE-LITE-MARK-MASQ"
        ));
        assert!(s.contains("-A KUBE-LITE-NODEPORTS -p tcp -m tcp --dport 30001 -j KL-EXT-"));
        assert!(s.contains("-A KUBE-LITE-POSTROUTING -j MASQUERADE --random-fully"));
        let last_dispatch = s.lines().rfind(|l| l.starts_with("-A KUBE-LITE-SERVICES "));
        assert_eq!(
            last_dispatch,
            Some("-A KUBE-LITE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-LITE-NODEPORTS"),
            "node ports come after every service IP"
        );
        // Affinity on s0 through recent lists.
        assert!(s.contains("--rcheck --seconds 10800 --reap -j KL-SEP-"));
        assert!(s.contains("-m recent --name KL-SEP-"));
        for line in s.lines().filter(|l| l.starts_with(':')) {
            let name = line[1..].split_whitespace().next().unwrap();
            assert!(name.len() <= 28, "{name} too long for iptables");
        }
    }

    #[test]
    fn services_without_endpoints_are_rejected_in_the_filter_table() {
        let plan = full_sync(&cfg(), &ports(1, 0, None), &BTreeSet::new());
        assert!(
            plan.script
                .contains("-A KUBE-LITE-FILTER -d 10.96.0.0/32 -p tcp -m tcp --dport 80 -j REJECT")
        );
        assert!(plan.script.contains(
            "-A KUBE-LITE-FILTER -m addrtype --dst-type LOCAL -p tcp -m tcp --dport 30000 -j REJECT"
        ));
        assert!(!plan.script.contains("KL-SVC-"));
    }

    #[test]
    fn a_delta_rewrites_dispatch_and_only_the_changed_chains_and_a_full_sync_deletes_stale_ones() {
        let base = ports(1000, 10, None);
        let full = full_sync(&cfg(), &base, &BTreeSet::new());
        let full_len = full.script.len();
        let mut applied = Applied::default();
        applied.commit(full);
        assert!(delta(&cfg(), &applied, &base).script.is_empty());
        let plan = delta(&cfg(), &applied, &ports(1000, 10, Some(7)));
        let s = &plan.script;
        let own_chains: Vec<&str> = s.lines().filter(|l| l.starts_with(":KL-")).collect();
        assert_eq!(
            own_chains.len(),
            4,
            "service and external chains, new and old endpoint: {own_chains:?}"
        );
        assert_eq!(s.matches("\n-X KL-SEP-").count(), 1);
        assert!(s.contains("DNAT --to-destination 10.200.7.250:8080"));
        assert!(s.len() < full_len / 5);
        applied.commit(plan.clone());
        assert!(
            delta(&cfg(), &applied, &ports(1000, 10, Some(7)))
                .script
                .is_empty()
        );
        let stale = BTreeSet::from([
            "KL-SEP-DEADBEEF".to_string(),
            "KUBE-LITE-SERVICES".to_string(),
            "DOCKER".to_string(),
        ]);
        let s = full_sync(&cfg(), &base, &stale).script;
        assert!(s.contains("-X KL-SEP-DEADBEEF"));
        assert!(!s.contains("-X KUBE-LITE-SERVICES"));
        assert!(!s.contains("DOCKER"));
    }

    #[test]
    fn our_chains_are_read_from_iptables_save() {
        let save = "*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-LITE-SERVICES - [0:0]\n:KL-SVC-AB - [0:0]\n:DOCKER - [0:0]\nCOMMIT\n";
        assert_eq!(
            parse_chains(save).into_iter().collect::<Vec<_>>(),
            vec!["KL-SVC-AB", "KUBE-LITE-SERVICES"]
        );
    }
}
