//! Unit tests of the record index: every record type, positive and negative answers.

use super::*;
use serde_json::json;

fn config() -> ZoneConfig {
    ZoneConfig {
        domain: "cluster.local".into(),
        service_range: Some("10.96.0.0/12".parse().unwrap()),
        dns_ip: Some("10.96.0.10".parse().unwrap()),
    }
}

fn service(ns: &str, name: &str, spec: serde_json::Value) -> Service {
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name},
        "spec": spec,
    }))
    .unwrap()
}

fn slice(ns: &str, name: &str, svc: &str, body: serde_json::Value) -> EndpointSlice {
    let mut v = json!({
        "metadata": {"namespace": ns, "name": name, "labels": {SERVICE_NAME_LABEL: svc}},
        "addressType": "IPv4",
    });
    for (k, val) in body.as_object().unwrap() {
        v[k] = val.clone();
    }
    serde_json::from_value(v).unwrap()
}

/// A cluster: `web` (ClusterIP, named ports), `db` (headless, one endpoint with hostname, one
/// without, one not ready), `lazy` (headless, publishNotReadyAddresses), `ext` (ExternalName),
/// `v6` (dual-stack ClusterIP).
fn cluster() -> Index {
    let services = vec![
        service(
            "default",
            "web",
            json!({"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"], "ports": [
                {"name": "http", "port": 80, "protocol": "TCP"},
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"port": 9000}]}),
        ),
        service(
            "data",
            "db",
            json!({"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}),
        ),
        service(
            "data",
            "lazy",
            json!({"clusterIP": "None", "publishNotReadyAddresses": true}),
        ),
        service(
            "default",
            "ext",
            json!({"type": "ExternalName", "externalName": "Example.COM."}),
        ),
        service(
            "default",
            "v6",
            json!({"clusterIP": "10.96.0.30", "clusterIPs": ["10.96.0.30", "fd00::30"]}),
        ),
    ];
    let slices = vec![
        slice(
            "data",
            "db-abc",
            "db",
            json!({
                "endpoints": [
                    {"addresses": ["10.244.0.5"], "hostname": "db-0", "conditions": {"ready": true}},
                    {"addresses": ["10.244.0.6"]},
                    {"addresses": ["10.244.0.7"], "hostname": "db-2", "conditions": {"ready": false}},
                ],
                "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
            }),
        ),
        slice(
            "data",
            "lazy-1",
            "lazy",
            json!({"endpoints": [{"addresses": ["10.244.1.9"], "conditions": {"ready": false}}]}),
        ),
        // A slice of another namespace's service with the same name is not db's.
        slice(
            "other",
            "db-x",
            "db",
            json!({"endpoints": [{"addresses": ["10.244.9.9"]}]}),
        ),
    ];
    Index::build(config(), 42, &services, &slices)
}

fn ask(index: &Index, name: &str, qtype: RecordType) -> Answer {
    index
        .answer(name, qtype)
        .unwrap_or_else(|| panic!("{name} should be answered here"))
}

fn data(answer: &Answer) -> Vec<Rdata> {
    answer.answers.iter().map(|r| r.data.clone()).collect()
}

fn a(ip: &str) -> Rdata {
    Rdata::A(ip.parse().unwrap())
}

fn assert_nodata(answer: &Answer) {
    assert_eq!(answer.rcode, Rcode::NoError);
    assert!(answer.answers.is_empty(), "{answer:?}");
    assert!(
        matches!(
            answer.authority.as_slice(),
            [Record {
                data: Rdata::Soa { .. },
                ttl: TTL,
                ..
            }]
        ),
        "{answer:?}"
    );
}

fn assert_nxdomain(answer: &Answer) {
    assert_eq!(answer.rcode, Rcode::NxDomain, "{answer:?}");
    assert!(answer.answers.is_empty());
    assert!(
        matches!(
            answer.authority.as_slice(),
            [Record {
                data: Rdata::Soa { serial: 42, .. },
                ..
            }]
        ),
        "{answer:?}"
    );
}

#[test]
fn a_cluster_ip_service_answers_its_cluster_ip_with_ttl_5() {
    let answer = ask(&cluster(), "web.default.svc.cluster.local.", RecordType::A);
    assert_eq!(answer.rcode, Rcode::NoError);
    assert_eq!(data(&answer), [a("10.96.0.20")]);
    assert_eq!(answer.answers[0].ttl, 5);
    assert_eq!(answer.answers[0].name, "web.default.svc.cluster.local");
    assert!(answer.authority.is_empty());
}

#[test]
fn names_are_matched_without_regard_to_case() {
    let answer = ask(&cluster(), "WEB.Default.SVC.cluster.LOCAL", RecordType::A);
    assert_eq!(data(&answer), [a("10.96.0.20")]);
}

#[test]
fn aaaa_of_a_dual_stack_service_is_its_ipv6_cluster_ip_and_nodata_for_v4_only() {
    let index = cluster();
    let answer = ask(&index, "v6.default.svc.cluster.local", RecordType::AAAA);
    assert_eq!(data(&answer), [Rdata::Aaaa("fd00::30".parse().unwrap())]);
    assert_nodata(&ask(
        &index,
        "web.default.svc.cluster.local",
        RecordType::AAAA,
    ));
}

#[test]
fn a_headless_service_answers_its_ready_endpoints_only() {
    let answer = ask(&cluster(), "db.data.svc.cluster.local", RecordType::A);
    assert_eq!(data(&answer), [a("10.244.0.5"), a("10.244.0.6")]);
}

#[test]
fn publish_not_ready_addresses_publishes_endpoints_that_are_not_ready() {
    let answer = ask(&cluster(), "lazy.data.svc.cluster.local", RecordType::A);
    assert_eq!(data(&answer), [a("10.244.1.9")]);
}

#[test]
fn endpoints_of_headless_services_have_names_from_hostname_or_address() {
    let index = cluster();
    assert_eq!(
        data(&ask(
            &index,
            "db-0.db.data.svc.cluster.local",
            RecordType::A
        )),
        [a("10.244.0.5")]
    );
    assert_eq!(
        data(&ask(
            &index,
            "10-244-0-6.db.data.svc.cluster.local",
            RecordType::A
        )),
        [a("10.244.0.6")]
    );
    // Not ready: no name.
    assert_nxdomain(&ask(
        &index,
        "db-2.db.data.svc.cluster.local",
        RecordType::A,
    ));
}

#[test]
fn srv_of_a_cluster_ip_service_points_at_the_service_name_with_its_address_additional() {
    let index = cluster();
    let answer = ask(
        &index,
        "_http._tcp.web.default.svc.cluster.local",
        RecordType::SRV,
    );
    assert_eq!(
        data(&answer),
        [Rdata::Srv {
            priority: 0,
            weight: 100,
            port: 80,
            target: "web.default.svc.cluster.local".into()
        }]
    );
    assert_eq!(
        answer.additionals,
        [Record {
            name: "web.default.svc.cluster.local".into(),
            ttl: 5,
            data: a("10.96.0.20")
        }]
    );
    let udp = ask(
        &index,
        "_dns._udp.web.default.svc.cluster.local",
        RecordType::SRV,
    );
    assert!(matches!(
        data(&udp).as_slice(),
        [Rdata::Srv { port: 53, .. }]
    ));
    // Wrong protocol or unnamed port: no such name.
    assert_nxdomain(&ask(
        &index,
        "_http._udp.web.default.svc.cluster.local",
        RecordType::SRV,
    ));
    // The protocol label alone exists (empty non-terminal).
    assert_nodata(&ask(
        &index,
        "_tcp.web.default.svc.cluster.local",
        RecordType::SRV,
    ));
}

#[test]
fn srv_of_a_headless_service_has_one_record_per_ready_endpoint() {
    let answer = ask(
        &cluster(),
        "_pg._tcp.db.data.svc.cluster.local",
        RecordType::SRV,
    );
    assert_eq!(
        data(&answer),
        [
            Rdata::Srv {
                priority: 0,
                weight: 50,
                port: 5432,
                target: "10-244-0-6.db.data.svc.cluster.local".into()
            },
            Rdata::Srv {
                priority: 0,
                weight: 50,
                port: 5432,
                target: "db-0.db.data.svc.cluster.local".into()
            },
        ]
    );
    let mut extra: Vec<_> = answer
        .additionals
        .iter()
        .map(|r| (r.name.as_str(), r.data.clone()))
        .collect();
    extra.sort_by(|x, y| x.0.cmp(y.0));
    assert_eq!(
        extra,
        [
            ("10-244-0-6.db.data.svc.cluster.local", a("10.244.0.6")),
            ("db-0.db.data.svc.cluster.local", a("10.244.0.5")),
        ]
    );
}

#[test]
fn ptr_of_a_cluster_ip_is_the_service_name_and_of_an_endpoint_its_host_name() {
    let index = cluster();
    assert_eq!(
        data(&ask(&index, "20.0.96.10.in-addr.arpa.", RecordType::PTR)),
        [Rdata::Ptr("web.default.svc.cluster.local".into())]
    );
    assert_eq!(
        data(&ask(&index, "5.0.244.10.in-addr.arpa", RecordType::PTR)),
        [Rdata::Ptr("db-0.db.data.svc.cluster.local".into())]
    );
    let v6 = "0.3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa";
    assert_eq!(
        data(&ask(&index, v6, RecordType::PTR)),
        [Rdata::Ptr("v6.default.svc.cluster.local".into())]
    );
}

#[test]
fn an_unknown_address_of_the_service_range_is_nxdomain_and_others_are_forwarded() {
    let index = cluster();
    let answer = ask(&index, "99.0.96.10.in-addr.arpa", RecordType::PTR);
    assert_eq!(answer.rcode, Rcode::NxDomain);
    assert_eq!(answer.authority[0].name, "in-addr.arpa");
    assert_eq!(index.answer("8.8.8.8.in-addr.arpa", RecordType::PTR), None);
    assert_eq!(index.answer("96.10.in-addr.arpa", RecordType::PTR), None);
}

#[test]
fn pod_names_answer_the_address_they_spell_in_any_namespace() {
    let index = cluster();
    assert_eq!(
        data(&ask(
            &index,
            "10-244-3-4.anything.pod.cluster.local",
            RecordType::A
        )),
        [a("10.244.3.4")]
    );
    assert_eq!(
        data(&ask(
            &index,
            "fd00--7.default.pod.cluster.local",
            RecordType::AAAA
        )),
        [Rdata::Aaaa("fd00::7".parse().unwrap())]
    );
    assert_nodata(&ask(
        &index,
        "10-244-3-4.default.pod.cluster.local",
        RecordType::AAAA,
    ));
    assert_nxdomain(&ask(
        &index,
        "10-244-3.default.pod.cluster.local",
        RecordType::A,
    ));
    assert_nxdomain(&ask(
        &index,
        "not-an-ip.default.pod.cluster.local",
        RecordType::A,
    ));
    assert_nodata(&ask(&index, "default.pod.cluster.local", RecordType::A));
}

#[test]
fn an_external_name_service_answers_a_cname_for_any_type() {
    let index = cluster();
    for qtype in [RecordType::A, RecordType::AAAA, RecordType::CNAME] {
        let answer = ask(&index, "ext.default.svc.cluster.local", qtype);
        assert_eq!(data(&answer), [Rdata::Cname("example.com".into())]);
    }
}

#[test]
fn missing_names_are_nxdomain_and_existing_names_without_the_type_are_nodata() {
    let index = cluster();
    assert_nxdomain(&ask(
        &index,
        "nope.default.svc.cluster.local",
        RecordType::A,
    ));
    assert_nxdomain(&ask(&index, "web.nope.svc.cluster.local", RecordType::A));
    assert_nxdomain(&ask(
        &index,
        "web.default.svc.cluster.local.default.svc.cluster.local",
        RecordType::A,
    ));
    assert_nxdomain(&ask(&index, "x.y.cluster.local", RecordType::A));
    assert_nodata(&ask(
        &index,
        "web.default.svc.cluster.local",
        RecordType::TXT,
    ));
    // Empty non-terminals exist.
    assert_nodata(&ask(&index, "default.svc.cluster.local", RecordType::A));
    assert_nodata(&ask(&index, "svc.cluster.local", RecordType::A));
}

#[test]
fn the_apex_has_soa_and_ns_and_the_dns_version() {
    let index = cluster();
    let soa = ask(&index, "cluster.local", RecordType::SOA);
    assert!(matches!(
        data(&soa).as_slice(),
        [Rdata::Soa { mname, serial: 42, .. }] if mname == "ns.dns.cluster.local"
    ));
    assert_eq!(
        data(&ask(&index, "cluster.local", RecordType::NS)),
        [Rdata::Ns("ns.dns.cluster.local".into())]
    );
    assert_eq!(
        data(&ask(&index, "ns.dns.cluster.local", RecordType::A)),
        [a("10.96.0.10")]
    );
    assert_eq!(
        data(&ask(&index, "dns-version.cluster.local", RecordType::TXT)),
        [Rdata::Txt("1.1.0".into())]
    );
}

#[test]
fn names_outside_the_domain_are_not_ours() {
    let index = cluster();
    assert_eq!(index.answer("example.com", RecordType::A), None);
    assert_eq!(index.answer("notcluster.local", RecordType::A), None);
}

#[test]
fn another_domain_is_served_when_configured() {
    let index = Index::build(
        ZoneConfig {
            domain: "Corp.Example.".into(),
            ..config()
        },
        1,
        &[service(
            "default",
            "web",
            json!({"clusterIP": "10.96.0.20"}),
        )],
        [],
    );
    assert_eq!(
        data(&ask(&index, "web.default.svc.corp.example", RecordType::A)),
        [a("10.96.0.20")]
    );
    assert_eq!(
        index.answer("web.default.svc.cluster.local", RecordType::A),
        None
    );
}

#[test]
fn endpoints_moving_change_the_answer_of_a_rebuilt_index() {
    let svc = [service("data", "db", json!({"clusterIP": "None"}))];
    let before = slice(
        "data",
        "db-1",
        "db",
        json!({"endpoints": [{"addresses": ["10.244.0.5"]}]}),
    );
    let after = slice(
        "data",
        "db-1",
        "db",
        json!({"endpoints": [{"addresses": ["10.244.7.7"]}]}),
    );
    let one = Index::build(config(), 1, &svc, [&before]);
    let two = Index::build(config(), 2, &svc, [&after]);
    let name = "db.data.svc.cluster.local";
    assert_eq!(data(&ask(&one, name, RecordType::A)), [a("10.244.0.5")]);
    assert_eq!(data(&ask(&two, name, RecordType::A)), [a("10.244.7.7")]);
    assert_eq!(two.answer("5.0.244.10.in-addr.arpa", RecordType::PTR), None);
}

#[test]
fn cidr_parsing_and_membership() {
    let range: Ipv4Cidr = "10.96.0.0/12".parse().unwrap();
    assert!(range.contains("10.111.255.255".parse().unwrap()));
    assert!(!range.contains("10.112.0.0".parse().unwrap()));
    assert_eq!(range.nth(10), "10.96.0.10".parse::<Ipv4Addr>().unwrap());
    assert!("10.96.0.0".parse::<Ipv4Cidr>().is_err());
    assert!("10.96.0.0/33".parse::<Ipv4Cidr>().is_err());
    let all: Ipv4Cidr = "0.0.0.0/0".parse().unwrap();
    assert!(all.contains("1.2.3.4".parse().unwrap()));
}
