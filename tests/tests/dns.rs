//! The cluster DNS end to end: apiserver-lite runs it on a free loopback port; Services,
//! EndpointSlices and an ExternalName Service are made with kubectl and asked for with a real
//! DNS client (hickory-proto messages over UDP and TCP); names outside the cluster go to a
//! small upstream server the test runs; the kube-dns Service and EndpointSlice are published;
//! `--dns-only` serves against an API server it does not run in.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use e2e::{ApiServer, Process, ServerOptions, free_port, wait_for, wait_until, workspace_bin};
use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// Asks `server` one question over UDP (TCP when `tcp`); `None` when nothing answers.
fn try_ask(server: SocketAddr, name: &str, qtype: RecordType, tcp: bool) -> Option<Message> {
    let mut query = Message::query();
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    let bytes = query.to_vec().unwrap();
    let answer = if tcp {
        let mut stream = TcpStream::connect_timeout(&server, Duration::from_secs(5)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        stream.write_all(&framed).ok()?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).ok()?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut buf).ok()?;
        buf
    } else {
        let socket = UdpSocket::bind("127.0.0.1:0").ok()?;
        socket.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        socket.connect(server).ok()?;
        socket.send(&bytes).ok()?;
        let mut buf = vec![0u8; 65535];
        let n = socket.recv(&mut buf).ok()?;
        buf.truncate(n);
        buf
    };
    let message = Message::from_vec(&answer).expect("a DNS message");
    assert_eq!(message.metadata.id, query.metadata.id);
    Some(message)
}

fn ask_with(server: SocketAddr, name: &str, qtype: RecordType, tcp: bool) -> Message {
    try_ask(server, name, qtype, tcp)
        .unwrap_or_else(|| panic!("no answer from {server} to {name} {qtype}"))
}

fn ask(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    ask_with(server, name, qtype, false)
}

/// The answer section as text: `A 10.0.0.1`, `SRV 0 50 5432 db-0...`, sorted.
fn answers(message: &Message) -> Vec<String> {
    let mut out: Vec<String> = message
        .answers
        .iter()
        .map(|r| format!("{} {}", r.record_type(), r.data))
        .collect();
    out.sort();
    out
}

/// The A records of `name`; none when nothing answers.
fn addresses(server: SocketAddr, name: &str) -> BTreeSet<String> {
    let Some(answer) = try_ask(server, name, RecordType::A, false) else {
        return BTreeSet::new();
    };
    answer
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

/// A small upstream resolver: `*.example.test` has the address 192.0.2.44, every other name
/// is NXDOMAIN. Counts the questions it gets; stops when dropped.
struct Upstream {
    addr: SocketAddr,
    asked: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Upstream {
    fn start() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let asked = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (stop, asked) = (stop.clone(), asked.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 4096];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    let Ok(query) = Message::from_vec(&buf[..n]) else {
                        continue;
                    };
                    asked.fetch_add(1, Ordering::Relaxed);
                    let mut reply = query.clone();
                    reply.metadata.message_type = MessageType::Response;
                    reply.metadata.recursion_available = true;
                    let name = query.queries[0].name().to_ascii().to_ascii_lowercase();
                    if name.ends_with(".example.test.") {
                        reply.answers.push(Record::from_rdata(
                            query.queries[0].name().clone(),
                            300,
                            RData::A(A(Ipv4Addr::new(192, 0, 2, 44))),
                        ));
                    } else {
                        reply.metadata.response_code = ResponseCode::NXDomain;
                    }
                    let _ = socket.send_to(&reply.to_vec().unwrap(), from);
                }
            })
        };
        Upstream {
            addr,
            asked,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A free port on 127.0.0.1 for both UDP and TCP.
fn free_dns_port() -> u16 {
    loop {
        let port = free_port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn start_server(dns: SocketAddr, upstream: SocketAddr) -> ApiServer {
    ApiServer::start_with(ServerOptions {
        extra_args: vec![
            "--dns-bind-address".into(),
            dns.to_string(),
            "--dns-upstream".into(),
            upstream.to_string(),
            "--scheduler=false".into(),
        ],
        ..Default::default()
    })
    .expect("apiserver-lite starts")
}

const APPS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  ports: [{name: http, port: 80, protocol: TCP}, {name: metrics, port: 9100, protocol: UDP}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: default}
spec:
  clusterIP: None
  ports: [{name: pg, port: 5432}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-1
  namespace: default
  labels: {kubernetes.io/service-name: db}
addressType: IPv4
endpoints:
- {addresses: [10.244.0.5], hostname: db-0, conditions: {ready: true}}
- {addresses: [10.244.0.6], conditions: {ready: true}}
- {addresses: [10.244.0.7], hostname: db-2, conditions: {ready: false}}
ports: [{name: pg, port: 5432, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: default}
spec: {type: ExternalName, externalName: www.example.test}
"#;

#[test]
fn cluster_dns_answers_services_endpoints_and_pods_and_forwards_the_rest() {
    let upstream = Upstream::start();
    let dns = SocketAddr::from(([127, 0, 0, 1], free_dns_port()));
    let server = start_server(dns, upstream.addr);

    // Published as kube-dns, pointing at where it serves.
    wait_for("the kube-dns Service", || {
        server.jsonpath(
            &["svc", "kube-dns", "-n", "kube-system"],
            "{.spec.clusterIP}",
        ) == "10.96.0.10"
    });
    assert_eq!(
        server.jsonpath(
            &["svc", "kube-dns", "-n", "kube-system"],
            "{.spec.ports[*].name} {.spec.ports[*].protocol} {.metadata.labels.k8s-app}"
        ),
        "dns dns-tcp UDP TCP kube-dns"
    );
    wait_for("the kube-dns EndpointSlice", || {
        server.jsonpath(
            &["endpointslice", "kube-dns-clusterdns", "-n", "kube-system"],
            "{.endpoints[0].addresses[0]}:{.ports[0].port}",
        ) == dns.to_string()
    });
    wait_for("kube-dns resolving itself", || {
        addresses(dns, "kube-dns.kube-system.svc.cluster.local.").contains("10.96.0.10")
    });

    server.apply(APPS);
    let web_ip = server.jsonpath(&["svc", "web"], "{.spec.clusterIP}");
    assert!(!web_ip.is_empty());
    wait_for("web's A record", || {
        addresses(dns, "web.default.svc.cluster.local.").contains(&web_ip)
    });

    // A: the ClusterIP, authoritative, TTL 5; over TCP too.
    for tcp in [false, true] {
        let a = ask_with(dns, "web.default.svc.cluster.local.", RecordType::A, tcp);
        assert_eq!(a.metadata.response_code, ResponseCode::NoError);
        assert!(a.metadata.authoritative);
        assert_eq!(answers(&a), [format!("A {web_ip}")]);
        assert_eq!(a.answers[0].ttl, 5);
    }
    // Headless: the ready endpoints; their hostnames.
    wait_for("db's endpoints", || {
        addresses(dns, "db.default.svc.cluster.local.").len() == 2
    });
    assert_eq!(
        addresses(dns, "db.default.svc.cluster.local."),
        BTreeSet::from(["10.244.0.5".to_string(), "10.244.0.6".to_string()])
    );
    assert_eq!(
        answers(&ask(
            dns,
            "db-0.db.default.svc.cluster.local.",
            RecordType::A
        )),
        ["A 10.244.0.5"]
    );
    // SRV: the service name for a ClusterIP service, one per endpoint for a headless one.
    let srv = ask(
        dns,
        "_http._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
    );
    assert_eq!(
        answers(&srv),
        ["SRV 0 100 80 web.default.svc.cluster.local."]
    );
    assert_eq!(srv.additionals.len(), 1, "{srv:?}");
    assert_eq!(
        answers(&ask(
            dns,
            "_metrics._udp.web.default.svc.cluster.local.",
            RecordType::SRV
        )),
        ["SRV 0 100 9100 web.default.svc.cluster.local."]
    );
    assert_eq!(
        answers(&ask(
            dns,
            "_pg._tcp.db.default.svc.cluster.local.",
            RecordType::SRV
        )),
        [
            "SRV 0 50 5432 10-244-0-6.db.default.svc.cluster.local.",
            "SRV 0 50 5432 db-0.db.default.svc.cluster.local.",
        ]
    );
    // PTR of the ClusterIP and of an endpoint.
    let octets: Vec<&str> = web_ip.split('.').rev().collect();
    let reverse = format!("{}.in-addr.arpa.", octets.join("."));
    assert_eq!(
        answers(&ask(dns, &reverse, RecordType::PTR)),
        ["PTR web.default.svc.cluster.local."]
    );
    assert_eq!(
        answers(&ask(dns, "5.0.244.10.in-addr.arpa.", RecordType::PTR)),
        ["PTR db-0.db.default.svc.cluster.local."]
    );
    // Pods by address.
    assert_eq!(
        answers(&ask(
            dns,
            "10-244-3-4.default.pod.cluster.local.",
            RecordType::A
        )),
        ["A 10.244.3.4"]
    );
    // ExternalName: a CNAME.
    assert_eq!(
        answers(&ask(dns, "ext.default.svc.cluster.local.", RecordType::A)),
        ["CNAME www.example.test."]
    );
    // Negative answers: NXDOMAIN, and NODATA, both with the SOA.
    let asked_before = upstream.asked.load(Ordering::Relaxed);
    let nx = ask(dns, "nope.default.svc.cluster.local.", RecordType::A);
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert!(nx.metadata.authoritative);
    assert_eq!(nx.authorities[0].record_type(), RecordType::SOA);
    let nodata = ask(dns, "web.default.svc.cluster.local.", RecordType::AAAA);
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.is_empty());
    assert_eq!(nodata.authorities[0].record_type(), RecordType::SOA);
    let unknown_service_ip = ask(dns, "254.255.111.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(
        unknown_service_ip.metadata.response_code,
        ResponseCode::NXDomain
    );
    assert_eq!(
        upstream.asked.load(Ordering::Relaxed),
        asked_before,
        "cluster names must not be forwarded"
    );
    // Other names: the upstream's answers, NXDOMAIN included.
    let out = ask(dns, "www.example.test.", RecordType::A);
    assert_eq!(answers(&out), ["A 192.0.2.44"]);
    assert!(!out.metadata.authoritative);
    assert_eq!(
        ask(dns, "missing.invalid.", RecordType::A)
            .metadata
            .response_code,
        ResponseCode::NXDomain
    );
    assert_eq!(upstream.asked.load(Ordering::Relaxed), asked_before + 2);

    // Endpoints move: the answer follows.
    server.apply(
        r#"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-1
  namespace: default
  labels: {kubernetes.io/service-name: db}
addressType: IPv4
endpoints:
- {addresses: [10.244.1.9], hostname: db-0, conditions: {ready: true}}
ports: [{name: pg, port: 5432, protocol: TCP}]
"#,
    );
    let moved = Instant::now();
    wait_for("db's answer to follow the moved endpoint", || {
        addresses(dns, "db.default.svc.cluster.local.") == BTreeSet::from(["10.244.1.9".into()])
    });
    let followed = moved.elapsed();
    println!("answer followed the endpoint move {followed:?} after kubectl apply returned");
    assert!(followed < Duration::from_secs(2), "{followed:?}");
    assert_eq!(
        answers(&ask(
            dns,
            "db-0.db.default.svc.cluster.local.",
            RecordType::A
        )),
        ["A 10.244.1.9"]
    );
    assert_eq!(
        ask(
            dns,
            "10-244-0-6.db.default.svc.cluster.local.",
            RecordType::A
        )
        .metadata
        .response_code,
        ResponseCode::NXDomain
    );
    // A deleted Service goes away.
    server.kubectl(&["delete", "svc", "web"]).ok();
    wait_for("web to be gone", || {
        ask(dns, "web.default.svc.cluster.local.", RecordType::A)
            .metadata
            .response_code
            == ResponseCode::NXDomain
    });
}

#[test]
fn an_unreachable_upstream_gives_servfail_and_cluster_names_still_resolve() {
    // A port nobody answers on.
    let dead = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let dns = SocketAddr::from(([127, 0, 0, 1], free_dns_port()));
    let server = start_server(dns, dead_addr);
    wait_for("kube-dns resolving itself", || {
        addresses(dns, "kube-dns.kube-system.svc.cluster.local.").contains("10.96.0.10")
    });
    let started = Instant::now();
    let answer = ask(dns, "www.example.test.", RecordType::A);
    assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(server);
}

#[test]
fn dns_only_serves_from_another_api_server_and_cluster_dns_false_turns_it_off() {
    let upstream = Upstream::start();
    let server = ApiServer::start_with(ServerOptions {
        extra_args: vec!["--cluster-dns=false".into(), "--scheduler=false".into()],
        ..Default::default()
    })
    .expect("apiserver-lite starts");
    // Off: no kube-dns Service.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        server.jsonpath(&["svc", "-n", "kube-system"], "{.items[*].metadata.name}"),
        ""
    );
    let dns = SocketAddr::from(([127, 0, 0, 1], free_dns_port()));
    let mut cmd = Command::new(workspace_bin("apiserver-lite"));
    cmd.args(["--dns-only", "--kubeconfig"])
        .arg(server.kubeconfig())
        .args(["--dns-bind-address", &dns.to_string()])
        .args(["--dns-upstream", &upstream.addr.to_string()])
        .args(["--cluster-domain", "corp.example"])
        .args(["--cluster-dns-ip", "10.96.0.53"]);
    let mut dns_only = Process::spawn(
        "apiserver-lite --dns-only",
        cmd,
        server.data_dir.path().join("dns-only.log"),
    )
    .unwrap();
    server.kubectl(&["create", "namespace", "team"]).ok();
    server.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: team}\nspec:\n  clusterIP: 10.96.0.77\n  ports: [{port: 443}]\n",
    );
    wait_for("the --dns-only server to answer", || {
        assert!(dns_only.running(), "{}", dns_only.log());
        addresses(dns, "api.team.svc.corp.example.").contains("10.96.0.77")
    });
    assert_eq!(
        server.jsonpath(
            &["svc", "kube-dns", "-n", "kube-system"],
            "{.spec.clusterIP}"
        ),
        "10.96.0.53"
    );
    assert_eq!(
        answers(&ask(dns, "www.example.test.", RecordType::A)),
        ["A 192.0.2.44"]
    );
    // SIGTERM: stops cleanly.
    let status = dns_only.terminate(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        dns_only.log()
    );
}

/// From inside a real pod (our runtime and agent): busybox `nslookup` against the cluster DNS
/// (`--dns-only`, listening on the host end of the node's link, port 53) resolves a Service,
/// a headless Service and a name outside the cluster, and sees an endpoint move.
#[test]
fn a_pod_resolves_services_through_the_cluster_dns_and_sees_endpoints_move() {
    let upstream = Upstream::start();
    let api = ApiServer::start_with(ServerOptions {
        extra_args: vec!["--cluster-dns=false".into()],
        ..Default::default()
    })
    .expect("apiserver-lite starts");
    let node = e2e::node::TestNode::start(&api);
    // The node's namespace end of its link is .2 of a /30; the host end is .1.
    let ns_ip: Ipv4Addr = node
        .cri
        .streaming_address
        .as_deref()
        .and_then(|a| a.split(':').next())
        .and_then(|a| a.parse().ok())
        .expect("the node is linked to the host");
    let host_ip = Ipv4Addr::from(u32::from(ns_ip) - 1);
    let dns = SocketAddr::from((host_ip, 53));
    let mut cmd = Command::new(workspace_bin("apiserver-lite"));
    cmd.args(["--dns-only", "--kubeconfig"])
        .arg(api.kubeconfig())
        .args(["--dns-bind-address", &dns.to_string()])
        .args(["--dns-upstream", &upstream.addr.to_string()]);
    let mut dns_only = Process::spawn(
        "apiserver-lite --dns-only",
        cmd,
        api.data_dir.path().join("dns-only.log"),
    )
    .unwrap();
    api.apply(APPS);
    let web_ip = api.jsonpath(&["svc", "web"], "{.spec.clusterIP}");
    wait_for("the DNS to serve web", || {
        assert!(dns_only.running(), "{}", dns_only.log());
        addresses(dns, "web.default.svc.cluster.local.").contains(&web_ip)
    });
    let script = format!(
        "while true; do for n in web.default.svc.cluster.local db.default.svc.cluster.local \
         www.example.test; do nslookup $n {host_ip}; done; \
         nslookup -type=srv _http._tcp.web.default.svc.cluster.local {host_ip}; sleep 0.5; done"
    );
    api.apply(&format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: default}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {}
    command: [sh, -c, {script:?}]
",
        node.image
    ));
    let logs = || api.kubectl(&["logs", "client"]).stdout;
    wait_until("the pod's lookups", Duration::from_secs(60), || {
        let out = logs();
        out.contains(&format!("Address: {web_ip}"))
            && out.contains("Address: 10.244.0.5")
            && out.contains("Address: 10.244.0.6")
            && out.contains("Address: 192.0.2.44")
            && out.contains("web.default.svc.cluster.local")
            && out.contains("100 80 web.default.svc.cluster.local")
    });
    api.apply(
        r#"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-1
  namespace: default
  labels: {kubernetes.io/service-name: db}
addressType: IPv4
endpoints:
- {addresses: [10.244.1.9], conditions: {ready: true}}
"#,
    );
    wait_until(
        "the pod to see the moved endpoint",
        Duration::from_secs(10),
        || logs().contains("Address: 10.244.1.9"),
    );
    let status = dns_only.terminate(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    api.kubectl(&["delete", "pod", "client", "--wait=false"])
        .ok();
}
