//! The record index: a pure function from Services and EndpointSlices to the names of the
//! cluster domain, and the answer to one question, as CoreDNS's kubernetes plugin gives it
//! (the Kubernetes DNS-based service discovery specification, "pods insecure" mode).
//!
//! Nothing here does I/O: [`Index::build`] takes the objects, [`Index::answer`] takes a
//! name and a type and says what to answer, or that the name is not ours (to forward).
//! Names are handled lower case and without the trailing dot.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::RecordType;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// TTL of every record and the SOA minimum (negative caching), CoreDNS's default.
pub const TTL: u32 = 5;

/// The label naming the Service an EndpointSlice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Version of the DNS specification answered at `dns-version.<domain>`.
const SPEC_VERSION: &str = "1.1.0";

/// An IPv4 CIDR (the service range, whose reverse names this server answers for).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    /// The network address.
    pub network: Ipv4Addr,
    /// Prefix length, 0 to 32.
    pub prefix: u8,
}

impl Ipv4Cidr {
    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0);
        u32::from(ip) & mask == u32::from(self.network) & mask
    }

    /// The `n`th address of the range (the cluster DNS IP is the 10th, as kubeadm takes it).
    pub fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network).wrapping_add(n))
    }
}

impl std::str::FromStr for Ipv4Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (ip, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: expected an IPv4 CIDR like 10.96.0.0/12"))?;
        let network: Ipv4Addr = ip.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let prefix: u8 = prefix.parse().map_err(|e| format!("{s:?}: {e}"))?;
        if prefix > 32 {
            return Err(format!("{s:?}: prefix above 32"));
        }
        Ok(Ipv4Cidr { network, prefix })
    }
}

/// What the index is built for.
#[derive(Debug, Clone)]
pub struct ZoneConfig {
    /// The cluster domain, e.g. `cluster.local` (no trailing dot).
    pub domain: String,
    /// The service range: PTR questions inside it are answered here, NXDOMAIN when unknown.
    pub service_range: Option<Ipv4Cidr>,
    /// The cluster DNS address, answered at `ns.dns.<domain>` (the SOA's primary server).
    pub dns_ip: Option<IpAddr>,
}

/// Record data, as the server turns it into wire records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rdata {
    /// IPv4 address.
    A(Ipv4Addr),
    /// IPv6 address.
    Aaaa(Ipv6Addr),
    /// Canonical name (ExternalName services).
    Cname(String),
    /// Reverse pointer.
    Ptr(String),
    /// Service location.
    Srv {
        /// Priority (always 0).
        priority: u16,
        /// Weight: 100 shared among the records of one name.
        weight: u16,
        /// Port.
        port: u16,
        /// Target host name.
        target: String,
    },
    /// The zone's start of authority.
    Soa {
        /// Primary server.
        mname: String,
        /// Mailbox of the responsible person.
        rname: String,
        /// Serial (changes when the index does).
        serial: u32,
    },
    /// Name server of the zone.
    Ns(String),
    /// Text (only `dns-version`).
    Txt(String),
}

/// One resource record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Owner name, lower case, no trailing dot.
    pub name: String,
    /// Time to live in seconds.
    pub ttl: u32,
    /// The data.
    pub data: Rdata,
}

/// Response code of an authoritative answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rcode {
    /// The name exists (with or without records of the type asked: NODATA when none).
    NoError,
    /// The name does not exist.
    NxDomain,
}

/// An authoritative answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// NOERROR or NXDOMAIN.
    pub rcode: Rcode,
    /// Answer section.
    pub answers: Vec<Record>,
    /// Authority section: the SOA on negative answers (NXDOMAIN and NODATA).
    pub authority: Vec<Record>,
    /// Additional section: addresses of SRV targets.
    pub additionals: Vec<Record>,
}

/// The records of one owner name. An empty node is a name that exists without records
/// (an empty non-terminal such as `<ns>.svc.<domain>`).
#[derive(Debug, Clone, Default)]
struct Node {
    a: Vec<Ipv4Addr>,
    aaaa: Vec<Ipv6Addr>,
    cname: Option<String>,
    srv: Vec<Rdata>,
}

/// Every name of the cluster domain (except pod names, which are computed from the question)
/// and the reverse pointers, built from one snapshot of Services and EndpointSlices.
#[derive(Debug, Clone)]
pub struct Index {
    config: ZoneConfig,
    serial: u32,
    names: HashMap<String, Node>,
    ptrs: HashMap<IpAddr, Vec<String>>,
}

/// Normalizes a name: lower case, no trailing dot.
pub fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The label of an endpoint without hostname: its address with `-` for `.` and `:`.
fn dashed(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

/// Whether an endpoint's address is published: ready (unset counts as ready), or any when the
/// Service publishes not-ready addresses.
fn published(
    endpoint: &k8s_openapi::api::discovery::v1::Endpoint,
    publish_not_ready: bool,
) -> bool {
    publish_not_ready
        || endpoint
            .conditions
            .as_ref()
            .and_then(|c| c.ready)
            .unwrap_or(true)
}

impl Index {
    /// An index with no Services (what is answered before the first list arrives is decided
    /// by the server, not here).
    pub fn empty(config: ZoneConfig) -> Self {
        Self::build(config, 1, [], [])
    }

    /// Builds the index from every Service and EndpointSlice. `serial` becomes the SOA serial.
    pub fn build<'a>(
        config: ZoneConfig,
        serial: u32,
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) -> Self {
        let domain = normalize(&config.domain);
        let mut index = Index {
            config: ZoneConfig {
                domain: domain.clone(),
                ..config
            },
            serial,
            names: HashMap::new(),
            ptrs: HashMap::new(),
        };
        for ent in [
            domain.clone(),
            format!("svc.{domain}"),
            format!("pod.{domain}"),
        ] {
            index.names.entry(ent).or_default();
        }
        if let Some(ip) = index.config.dns_ip {
            let node = index.names.entry(format!("ns.dns.{domain}")).or_default();
            match ip {
                IpAddr::V4(v4) => node.a.push(v4),
                IpAddr::V6(v6) => node.aaaa.push(v6),
            }
            index.names.entry(format!("dns.{domain}")).or_default();
        }
        // Slices by (namespace, service).
        let mut by_service: HashMap<(String, String), Vec<&EndpointSlice>> = HashMap::new();
        for slice in slices {
            let labels = slice.metadata.labels.as_ref();
            let (Some(ns), Some(svc)) = (
                slice.metadata.namespace.as_ref(),
                labels.and_then(|l| l.get(SERVICE_NAME_LABEL)),
            ) else {
                continue;
            };
            by_service
                .entry((ns.clone(), svc.clone()))
                .or_default()
                .push(slice);
        }
        for service in services {
            let (Some(ns), Some(name)) = (
                service.metadata.namespace.as_ref(),
                service.metadata.name.as_ref(),
            ) else {
                continue;
            };
            let key = (ns.to_ascii_lowercase(), name.to_ascii_lowercase());
            let slices = by_service
                .get(&(ns.clone(), name.clone()))
                .map(Vec::as_slice)
                .unwrap_or_default();
            index.add_service(&key.0, &key.1, service, slices);
        }
        for node in index.names.values_mut() {
            node.a.sort();
            node.a.dedup();
            node.aaaa.sort();
            node.aaaa.dedup();
            node.srv
                .sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
            node.srv.dedup();
            let n = node.srv.len().max(1) as u16;
            for srv in &mut node.srv {
                if let Rdata::Srv { weight, .. } = srv {
                    *weight = (100 / n).max(1);
                }
            }
        }
        for names in index.ptrs.values_mut() {
            names.sort();
            names.dedup();
        }
        index
    }

    fn add_service(&mut self, ns: &str, name: &str, service: &Service, slices: &[&EndpointSlice]) {
        let domain = &self.config.domain;
        let svc_name = format!("{name}.{ns}.svc.{domain}");
        self.names.entry(format!("{ns}.svc.{domain}")).or_default();
        let Some(spec) = service.spec.as_ref() else {
            return;
        };
        if spec.type_.as_deref() == Some("ExternalName") {
            let target = spec.external_name.as_deref().map(normalize);
            self.names.entry(svc_name).or_default().cname = target.filter(|t| !t.is_empty());
            return;
        }
        let headless = spec.cluster_ip.as_deref() == Some("None");
        self.names.entry(svc_name.clone()).or_default();
        if !headless {
            let ips = spec
                .cluster_ips
                .clone()
                .unwrap_or_else(|| spec.cluster_ip.clone().into_iter().collect());
            for ip in ips.iter().filter_map(|ip| ip.parse::<IpAddr>().ok()) {
                self.add_address(&svc_name, ip);
                self.ptrs.entry(ip).or_default().push(svc_name.clone());
            }
            for port in spec.ports.iter().flatten() {
                let Some(port_name) = port.name.as_deref().filter(|n| !n.is_empty()) else {
                    continue;
                };
                let proto = port.protocol.as_deref().unwrap_or("TCP");
                self.add_srv(&svc_name, port_name, proto, port.port, svc_name.clone());
            }
            return;
        }
        let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
        for slice in slices {
            for endpoint in slice.endpoints.iter() {
                if !published(endpoint, publish_not_ready) {
                    continue;
                }
                for ip in endpoint
                    .addresses
                    .iter()
                    .filter_map(|a| a.parse::<IpAddr>().ok())
                {
                    let label = endpoint
                        .hostname
                        .as_deref()
                        .filter(|h| !h.is_empty())
                        .map(str::to_ascii_lowercase)
                        .unwrap_or_else(|| dashed(ip));
                    let host = format!("{label}.{svc_name}");
                    self.add_address(&svc_name, ip);
                    self.add_address(&host, ip);
                    self.ptrs.entry(ip).or_default().push(host.clone());
                    for port in slice.ports.iter().flatten() {
                        let (Some(port_name), Some(number)) =
                            (port.name.as_deref().filter(|n| !n.is_empty()), port.port)
                        else {
                            continue;
                        };
                        let proto = port.protocol.as_deref().unwrap_or("TCP");
                        self.add_srv(&svc_name, port_name, proto, number, host.clone());
                    }
                }
            }
        }
    }

    fn add_address(&mut self, name: &str, ip: IpAddr) {
        let node = self.names.entry(name.to_string()).or_default();
        match ip {
            IpAddr::V4(v4) => node.a.push(v4),
            IpAddr::V6(v6) => node.aaaa.push(v6),
        }
    }

    fn add_srv(&mut self, svc_name: &str, port: &str, proto: &str, number: i32, target: String) {
        let Ok(number) = u16::try_from(number) else {
            return;
        };
        let proto = proto.to_ascii_lowercase();
        let port = port.to_ascii_lowercase();
        self.names
            .entry(format!("_{proto}.{svc_name}"))
            .or_default();
        self.names
            .entry(format!("_{port}._{proto}.{svc_name}"))
            .or_default()
            .srv
            .push(Rdata::Srv {
                priority: 0,
                weight: 100,
                port: number,
                target,
            });
    }

    /// The cluster domain.
    pub fn domain(&self) -> &str {
        &self.config.domain
    }

    /// How many names the index holds (for logs).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the index holds no names at all.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    fn record(&self, name: &str, data: Rdata) -> Record {
        Record {
            name: name.to_string(),
            ttl: TTL,
            data,
        }
    }

    fn soa(&self, zone: &str) -> Record {
        let domain = &self.config.domain;
        self.record(
            zone,
            Rdata::Soa {
                mname: format!("ns.dns.{domain}"),
                rname: format!("hostmaster.{domain}"),
                serial: self.serial,
            },
        )
    }

    fn negative(&self, zone: &str, rcode: Rcode) -> Answer {
        Answer {
            rcode,
            answers: Vec::new(),
            authority: vec![self.soa(zone)],
            additionals: Vec::new(),
        }
    }

    fn positive(&self, zone: &str, answers: Vec<Record>, additionals: Vec<Record>) -> Answer {
        if answers.is_empty() {
            return self.negative(zone, Rcode::NoError);
        }
        Answer {
            rcode: Rcode::NoError,
            answers,
            authority: Vec::new(),
            additionals,
        }
    }

    /// The answer to `qname`/`qtype`, or `None` when the name is not served here (outside the
    /// cluster domain, or a reverse name neither known nor in the service range): forward it.
    pub fn answer(&self, qname: &str, qtype: RecordType) -> Option<Answer> {
        let qname = normalize(qname);
        let domain = self.config.domain.as_str();
        let in_zone = qname == domain || qname.ends_with(&format!(".{domain}"));
        if !in_zone {
            return self.reverse(&qname, qtype);
        }
        if let Some(node) = self.names.get(&qname) {
            return Some(self.node_answer(&qname, node, qtype));
        }
        if qname == format!("dns-version.{domain}") {
            let answers = match qtype {
                RecordType::TXT | RecordType::ANY => {
                    vec![self.record(&qname, Rdata::Txt(SPEC_VERSION.into()))]
                }
                _ => Vec::new(),
            };
            return Some(self.positive(domain, answers, Vec::new()));
        }
        if let Some(ip) = pod_address(&qname, domain) {
            let answers = match (ip, qtype) {
                (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => {
                    vec![self.record(&qname, Rdata::A(v4))]
                }
                (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => {
                    vec![self.record(&qname, Rdata::Aaaa(v6))]
                }
                _ => Vec::new(),
            };
            return Some(self.positive(domain, answers, Vec::new()));
        }
        // `<ns>.pod.<domain>` exists for any namespace in insecure mode.
        if qname
            .strip_suffix(&format!(".pod.{domain}"))
            .is_some_and(|ns| !ns.contains('.'))
        {
            return Some(self.negative(domain, Rcode::NoError));
        }
        Some(self.negative(domain, Rcode::NxDomain))
    }

    fn node_answer(&self, qname: &str, node: &Node, qtype: RecordType) -> Answer {
        let domain = self.config.domain.as_str();
        if let Some(target) = &node.cname {
            // A CNAME answers every type but itself is the only record at its name.
            return self.positive(
                domain,
                vec![self.record(qname, Rdata::Cname(target.clone()))],
                Vec::new(),
            );
        }
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        let any = qtype == RecordType::ANY;
        if any || qtype == RecordType::A {
            answers.extend(node.a.iter().map(|ip| self.record(qname, Rdata::A(*ip))));
        }
        if any || qtype == RecordType::AAAA {
            answers.extend(
                node.aaaa
                    .iter()
                    .map(|ip| self.record(qname, Rdata::Aaaa(*ip))),
            );
        }
        if any || qtype == RecordType::SRV {
            for srv in &node.srv {
                answers.push(self.record(qname, srv.clone()));
                if let Rdata::Srv { target, .. } = srv
                    && let Some(t) = self.names.get(target)
                {
                    additionals.extend(t.a.iter().map(|ip| self.record(target, Rdata::A(*ip))));
                    additionals.extend(
                        t.aaaa
                            .iter()
                            .map(|ip| self.record(target, Rdata::Aaaa(*ip))),
                    );
                }
            }
            additionals.dedup();
        }
        if qname == domain {
            if any || qtype == RecordType::SOA {
                answers.push(self.soa(domain));
            }
            if (any || qtype == RecordType::NS) && self.config.dns_ip.is_some() {
                answers.push(self.record(domain, Rdata::Ns(format!("ns.dns.{domain}"))));
            }
        }
        self.positive(domain, answers, additionals)
    }

    /// PTR questions: known addresses answer; unknown ones in the service range are NXDOMAIN;
    /// the rest are not ours.
    fn reverse(&self, qname: &str, qtype: RecordType) -> Option<Answer> {
        let ip = reverse_address(qname)?;
        let zone = if ip.is_ipv4() {
            "in-addr.arpa"
        } else {
            "ip6.arpa"
        };
        let names = self.ptrs.get(&ip);
        let in_range = match (ip, self.config.service_range) {
            (IpAddr::V4(v4), Some(range)) => range.contains(v4),
            _ => false,
        };
        match names {
            Some(names) => {
                let answers = if matches!(qtype, RecordType::PTR | RecordType::ANY) {
                    names
                        .iter()
                        .map(|n| self.record(qname, Rdata::Ptr(n.clone())))
                        .collect()
                } else {
                    Vec::new()
                };
                Some(self.positive(zone, answers, Vec::new()))
            }
            None if in_range => Some(self.negative(zone, Rcode::NxDomain)),
            None => None,
        }
    }
}

/// The address of `a-b-c-d.<ns>.pod.<domain>` (IPv6 with `-` for `:`), if the name is one.
fn pod_address(qname: &str, domain: &str) -> Option<IpAddr> {
    let rest = qname.strip_suffix(&format!(".pod.{domain}"))?;
    let (label, ns) = rest.split_once('.')?;
    if ns.is_empty() || ns.contains('.') {
        return None;
    }
    if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>()
        && label.matches('-').count() == 3
    {
        return Some(IpAddr::V4(v4));
    }
    label
        .replace('-', ":")
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

/// The address of a full reverse name (`d.c.b.a.in-addr.arpa`, 32 nibbles `.ip6.arpa`).
pub fn reverse_address(qname: &str) -> Option<IpAddr> {
    if let Some(rest) = qname.strip_suffix(".in-addr.arpa") {
        let mut octets: Vec<u8> = rest
            .split('.')
            .map(|o| o.parse::<u8>().ok())
            .collect::<Option<_>>()?;
        if octets.len() != 4 {
            return None;
        }
        octets.reverse();
        return Some(IpAddr::V4(Ipv4Addr::new(
            octets[0], octets[1], octets[2], octets[3],
        )));
    }
    let rest = qname.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<u8> = rest
        .split('.')
        .map(|n| u8::from_str_radix(n, 16).ok().filter(|_| n.len() == 1))
        .collect::<Option<_>>()?;
    if nibbles.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, pair) in nibbles
        .iter()
        .rev()
        .collect::<Vec<_>>()
        .chunks(2)
        .enumerate()
    {
        bytes[i] = (*pair[0] << 4) | *pair[1];
    }
    Some(IpAddr::V6(Ipv6Addr::from(bytes)))
}

#[cfg(test)]
mod tests;
