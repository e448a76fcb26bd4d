//! netproxy against the real kernel: a "node" namespace runs netproxy (talking to a real
//! apiserver-lite through a loopback forwarder), "pod" namespaces run busybox httpd serving
//! their own name, and client namespaces connect through point-to-point veths. Services and
//! EndpointSlices are created with kubectl (no selector, so no controller touches them).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::cri::TestNetns;
use e2e::netns::{Forwarder, Get, HttpdPod, default_route, http_get, in_netns, link, sh, sysctl};
use e2e::{ApiServer, Process, wait_until, workspace_bin};

const NODE: &str = "node-a";

/// One node with netproxy, `pods` pod namespaces (10.244.<i>.2), a client namespace
/// (192.168.77.2, off-cluster) and a second "host" namespace (192.168.78.2).
struct Cluster {
    api: ApiServer,
    node: TestNetns,
    client: TestNetns,
    host: TestNetns,
    pods: Vec<HttpdPod>,
    proxy: Option<Process>,
    mode: &'static str,
    _forwarder: Forwarder,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn start(pods: usize) -> Cluster {
        Self::start_mode(pods, "nftables")
    }

    fn start_mode(pods: usize, mode: &'static str) -> Cluster {
        // Without the cluster DNS, the only Service the server makes is `kubernetes`, so
        // the rule counts below are exact.
        let api = ApiServer::start_with(e2e::ServerOptions {
            extra_args: vec!["--cluster-dns=false".into()],
            ..Default::default()
        })
        .expect("apiserver-lite");
        let node = TestNetns::create();
        let forwarder = Forwarder::start(&node, api.port);
        sysctl(&node, "net.ipv4.ip_forward=1");
        let client = TestNetns::create();
        link(
            &node,
            "cl0",
            "192.168.77.1/24",
            &client,
            "eth0",
            "192.168.77.2/24",
        );
        default_route(&client, "192.168.77.1");
        let host = TestNetns::create();
        link(
            &node,
            "ho0",
            "192.168.78.1/24",
            &host,
            "eth0",
            "192.168.78.2/24",
        );
        default_route(&host, "192.168.78.1");
        // A node has a default route: cluster IPs are routed before they are DNATed.
        default_route(&node, "192.168.78.2");
        let dir = tempfile::Builder::new()
            .prefix("netproxy-e2e-")
            .tempdir()
            .unwrap();
        let pods = (1..=pods)
            .map(|i| {
                HttpdPod::start(
                    &node,
                    &format!("p{i}"),
                    &format!("10.244.{i}"),
                    &format!("pod-{i}\n"),
                    dir.path(),
                )
            })
            .collect();
        let mut c = Cluster {
            api,
            node,
            client,
            host,
            pods,
            proxy: None,
            mode,
            _forwarder: forwarder,
            dir,
        };
        c.start_proxy();
        c
    }

    fn proxy_command(&self, extra: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.node.name])
            .arg(workspace_bin("netproxy"))
            .arg("--kubeconfig")
            .arg(self.api.kubeconfig())
            .args([
                "--hostname-override",
                NODE,
                "--cluster-cidr",
                "10.244.0.0/16",
                "--min-sync-period",
                "100ms",
                "--mode",
                self.mode,
            ])
            .args(extra)
            .env("RUST_LOG", "info");
        cmd
    }

    fn start_proxy(&mut self) {
        let log = self.dir.path().join(format!(
            "netproxy-{}.log",
            Instant::now().elapsed().as_nanos()
        ));
        let cmd = self.proxy_command(&[]);
        self.proxy = Some(Process::spawn("netproxy", cmd, log).expect("netproxy"));
        let node = self.node.name.clone();
        wait_until(
            "netproxy /healthz answers 200",
            Duration::from_secs(20),
            || {
                assert!(
                    self.proxy.as_mut().unwrap().running(),
                    "netproxy exited:\n{}",
                    self.proxy_log()
                );
                healthz(&node).is_some_and(|(code, _)| code == 200)
            },
        );
    }

    fn proxy_log(&self) -> String {
        self.proxy.as_ref().map(Process::log).unwrap_or_default()
    }

    /// A selector-less Service; returns its cluster IP.
    fn service(&self, name: &str, spec: &str) -> String {
        self.api.apply(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n{spec}\n"
        ));
        self.api.jsonpath(&["service", name], "{.spec.clusterIP}")
    }

    /// An EndpointSlice for `service` with the given pods (index, ready, node).
    fn slice(&self, service: &str, endpoints: &[(usize, bool, &str)]) {
        let mut eps = String::new();
        for (i, ready, node) in endpoints {
            eps.push_str(&format!(
                "- addresses: [\"{}\"]\n  conditions: {{ready: {ready}}}\n  nodeName: {node}\n",
                self.pods[i - 1].ip
            ));
        }
        if eps.is_empty() {
            eps = "[]".into();
        }
        self.api.apply(&format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {service}-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: {service}}}\naddressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}]\nendpoints:\n{eps}"
        ));
    }

    fn get(&self, from: &TestNetns, ip: &str, port: u16) -> Get {
        http_get(&from.name, SocketAddr::new(ip.parse().unwrap(), port))
    }

    /// Pod names answering `n` GETs, panicking on any failure.
    fn spread(&self, ip: &str, port: u16, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| match self.get(&self.client, ip, port) {
                Get::Body(b) => b,
                other => panic!(
                    "GET {ip}:{port}: {other:?}\nnetproxy log:\n{}",
                    self.proxy_log()
                ),
            })
            .collect()
    }

    fn wait_serves(&self, from: &TestNetns, ip: &str, port: u16, body: &str) {
        wait_until(
            &format!("{ip}:{port} serves {body}"),
            Duration::from_secs(15),
            || self.get(from, ip, port) == Get::Body(body.into()),
        );
    }

    fn nft(&self, args: &[&str]) -> String {
        self.in_node("nft", args)
    }

    fn in_node(&self, program: &str, args: &[&str]) -> String {
        let mut all = vec!["ip", "netns", "exec", &self.node.name, program];
        all.extend_from_slice(args);
        sh(&all)
    }
}

fn healthz(node: &str) -> Option<(u16, String)> {
    in_netns(node, || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", 10256)).ok()?;
        s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let code = out.split_whitespace().nth(1)?.parse().ok()?;
        Some((code, out.split_once("\r\n\r\n")?.1.to_string()))
    })
}

fn metrics(node: &str) -> String {
    in_netns(node, || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", 10249)).expect("metrics port");
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
}

fn require_tools() {
    for tool in ["/usr/sbin/nft", "/bin/busybox", "/usr/bin/ss"] {
        assert!(Path::new(tool).exists(), "{tool} is needed");
    }
}

#[test]
fn cluster_ip_spreads_over_ready_endpoints_and_a_service_without_endpoints_rejects_at_once() {
    require_tools();
    let c = Cluster::start(3);
    let ip = c.service("web", "  ports: [{name: http, port: 80, targetPort: 8080}]");
    c.slice(
        "web",
        &[(1, true, NODE), (2, true, "node-b"), (3, false, NODE)],
    );
    c.wait_serves(&c.client, &ip, 80, "pod-1");
    let seen: BTreeSet<String> = c.spread(&ip, 80, 40).into_iter().collect();
    assert_eq!(
        seen,
        BTreeSet::from(["pod-1".to_string(), "pod-2".to_string()]),
        "spread over both ready endpoints, none to the not-ready one"
    );

    // The not-ready endpoint becomes ready: a delta brings it in.
    c.slice(
        "web",
        &[(1, true, NODE), (2, true, "node-b"), (3, true, NODE)],
    );
    wait_until("pod-3 gets traffic", Duration::from_secs(15), || {
        c.spread(&ip, 80, 10).iter().any(|b| b == "pod-3")
    });

    let empty = c.service("empty", "  ports: [{name: http, port: 80}]");
    wait_until(
        "the empty service is programmed",
        Duration::from_secs(15),
        || {
            c.nft(&[
                "list",
                "map",
                "ip",
                "kube-lite-proxy",
                "no-endpoint-services",
            ])
            .contains(&empty)
        },
    );
    let started = Instant::now();
    assert_eq!(c.get(&c.client, &empty, 80), Get::Refused);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "rejected at once, not a timeout"
    );
    // From the node itself too (output hook).
    assert_eq!(c.get(&c.node, &empty, 80), Get::Refused);

    let (code, body) = healthz(&c.node.name).unwrap();
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["lastUpdated"].as_str().unwrap().ends_with('Z'), "{body}");
    let m = metrics(&c.node.name);
    // web and empty, plus the `kubernetes` service apiserver-lite creates (one endpoint).
    assert!(m.contains("kubeproxy_sync_proxy_rules_services 3"), "{m}");
    assert!(m.contains("kubeproxy_sync_proxy_rules_endpoints 4"), "{m}");
    assert!(
        m.contains("kubeproxy_sync_proxy_rules_duration_seconds_count"),
        "{m}"
    );
}

/// The peer address httpd in `pod` sees on its established connections.
fn peers(pod: &TestNetns) -> Vec<String> {
    sh(&[
        "ip",
        "netns",
        "exec",
        &pod.name,
        "ss",
        "-Htn",
        "state",
        "established",
    ])
    .lines()
    .filter_map(|l| l.split_whitespace().last())
    // httpd listens on ::, so IPv4 peers show as [::ffff:a.b.c.d]:port.
    .map(|p| p.replace("[::ffff:", "").replace(']', ""))
    .collect()
}

#[test]
fn node_ports_answer_from_another_host_and_local_policy_keeps_the_client_address() {
    require_tools();
    let c = Cluster::start(2);
    c.service(
        "np",
        "  type: NodePort\n  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30080}]",
    );
    c.slice("np", &[(1, true, "node-b")]);
    c.wait_serves(&c.host, "192.168.78.1", 30080, "pod-1");
    // Any local address of the node answers.
    c.wait_serves(&c.client, "192.168.77.1", 30080, "pod-1");

    c.service(
        "lcl",
        "  type: NodePort\n  externalTrafficPolicy: Local\n  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30081}]",
    );
    c.slice("lcl", &[(2, true, NODE)]);
    c.wait_serves(&c.host, "192.168.78.1", 30081, "pod-2");

    // Hold connections open and look at them from the pods' side.
    let held = |port: u16| {
        in_netns(&c.host.name, || {
            std::net::TcpStream::connect(("192.168.78.1", port)).expect("connect")
        })
    };
    let local = held(30081);
    let cluster = held(30080);
    wait_until(
        "both connections are established",
        Duration::from_secs(5),
        || !peers(&c.pods[0].ns).is_empty() && !peers(&c.pods[1].ns).is_empty(),
    );
    let p2 = peers(&c.pods[1].ns);
    assert!(
        p2.iter().any(|p| p.starts_with("192.168.78.2:")),
        "Local keeps the client address: {p2:?}"
    );
    let p1 = peers(&c.pods[0].ns);
    assert!(
        p1.iter().all(|p| p.starts_with("10.244.1.1:")),
        "Cluster policy masquerades: {p1:?}"
    );
    drop((local, cluster));

    // Local policy with no local endpoint: external traffic is dropped, not sent elsewhere.
    c.slice("lcl", &[(2, true, "node-b")]);
    wait_until(
        "the local nodeport goes to the drop map",
        Duration::from_secs(15),
        || {
            c.nft(&[
                "list",
                "map",
                "ip",
                "kube-lite-proxy",
                "no-endpoint-nodeports",
            ])
            .contains("30081 : drop")
        },
    );
    assert!(matches!(
        c.get(&c.host, "192.168.78.1", 30081),
        Get::Failed(_)
    ));
}

#[test]
fn client_ip_affinity_sticks_to_one_endpoint() {
    require_tools();
    let c = Cluster::start(3);
    let ip = c.service(
        "sticky",
        "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}\n  ports: [{name: http, port: 80, targetPort: 8080}]",
    );
    c.slice(
        "sticky",
        &[(1, true, NODE), (2, true, NODE), (3, true, NODE)],
    );
    wait_until("sticky serves", Duration::from_secs(15), || {
        matches!(c.get(&c.client, &ip, 80), Get::Body(_))
    });
    let seen: BTreeSet<String> = c.spread(&ip, 80, 20).into_iter().collect();
    assert_eq!(seen.len(), 1, "affinity sticks: {seen:?}");
}

#[test]
fn a_restart_keeps_traffic_flowing_without_duplicates_and_cleanup_removes_only_our_table() {
    require_tools();
    let mut c = Cluster::start(2);
    let ip = c.service("web", "  ports: [{name: http, port: 80, targetPort: 8080}]");
    c.slice("web", &[(1, true, NODE), (2, true, NODE)]);
    c.wait_serves(&c.client, &ip, 80, "pod-1");
    c.nft(&["add", "table", "ip", "foreign-test"]);
    c.nft(&["add", "chain", "ip", "foreign-test", "keep"]);
    c.nft(&["add", "rule", "ip", "foreign-test", "keep", "counter"]);
    let before = c.nft(&["list", "table", "ip", "kube-lite-proxy"]);

    let status = c.proxy.as_mut().unwrap().terminate(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "clean exit on SIGTERM");
    assert_eq!(
        c.spread(&ip, 80, 5).len(),
        5,
        "rules stay while netproxy is down"
    );
    c.start_proxy();
    c.spread(&ip, 80, 5);
    let after = c.nft(&["list", "table", "ip", "kube-lite-proxy"]);
    assert_eq!(
        before, after,
        "a restart leaves the same rules, no duplicates"
    );

    c.proxy.as_mut().unwrap().terminate(Duration::from_secs(10));
    let out = c.proxy_command(&["--cleanup"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tables = c.nft(&["list", "tables"]);
    assert!(!tables.contains("kube-lite-proxy"), "{tables}");
    assert!(tables.contains("foreign-test"), "{tables}");
    assert!(
        c.nft(&["list", "table", "ip", "foreign-test"])
            .contains("counter")
    );
    assert!(
        !matches!(c.get(&c.client, &ip, 80), Get::Body(_)),
        "no routing after cleanup"
    );
}

#[test]
fn iptables_mode_spreads_over_ready_endpoints_rejects_without_endpoints_and_cleans_up_only_its_chains()
 {
    require_tools();
    let mut c = Cluster::start_mode(3, "iptables");
    let ip = c.service("web", "  ports: [{name: http, port: 80, targetPort: 8080}]");
    c.slice("web", &[(1, true, NODE), (2, true, NODE), (3, false, NODE)]);
    c.wait_serves(&c.client, &ip, 80, "pod-1");
    let seen: BTreeSet<String> = c.spread(&ip, 80, 40).into_iter().collect();
    assert_eq!(
        seen,
        BTreeSet::from(["pod-1".to_string(), "pod-2".to_string()])
    );
    let empty = c.service("empty", "  ports: [{name: http, port: 80}]");
    wait_until(
        "the empty service is rejected",
        Duration::from_secs(15),
        || {
            c.in_node("iptables-save", &["-t", "filter"])
                .contains(&format!("-d {empty}/32"))
        },
    );
    let started = Instant::now();
    assert_eq!(c.get(&c.client, &empty, 80), Get::Refused);
    assert!(started.elapsed() < Duration::from_millis(500));
    assert!(
        c.nft(&["list", "tables"])
            .lines()
            .all(|l| !l.contains("kube-lite-proxy")),
        "no nftables table in iptables mode"
    );

    c.in_node("iptables", &["-t", "nat", "-N", "FOREIGN-TEST"]);
    c.proxy.as_mut().unwrap().terminate(Duration::from_secs(10));
    let out = c.proxy_command(&["--cleanup"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let nat = c.in_node("iptables-save", &["-t", "nat"]);
    assert!(!nat.contains("KUBE-LITE") && !nat.contains(":KL-"), "{nat}");
    assert!(nat.contains(":FOREIGN-TEST"), "{nat}");
    assert!(
        !c.in_node("iptables-save", &["-t", "filter"])
            .contains("KUBE-LITE")
    );
}

/// `GET /` on `ip:port` from `ns`: status, lower-cased head and body.
fn raw_get(ns: &str, ip: &str, port: u16) -> Option<(u16, String, String)> {
    in_netns(ns, || {
        use std::io::{Read, Write};
        let addr = SocketAddr::new(ip.parse().ok()?, port);
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let code = out.split_whitespace().nth(1)?.parse().ok()?;
        let (head, body) = out.split_once("\r\n\r\n")?;
        Some((code, head.to_ascii_lowercase(), body.to_string()))
    })
}

#[test]
fn local_load_balancer_health_check_node_port_counts_local_endpoints() {
    require_tools();
    let c = Cluster::start(2);
    c.service(
        "lb",
        "  type: LoadBalancer\n  externalTrafficPolicy: Local\n  ports: [{name: http, port: 80, targetPort: 8080}]",
    );
    // apiserver-lite allocates the port, as upstream does for this kind of Service.
    let hc: u16 = c
        .api
        .jsonpath(&["service", "lb"], "{.spec.healthCheckNodePort}")
        .parse()
        .expect("a healthCheckNodePort");
    c.slice("lb", &[(1, true, NODE), (2, true, "node-b")]);
    let answer = |want: u16| {
        let mut last = None;
        wait_until(
            &format!("health check port {hc} answers {want}"),
            Duration::from_secs(15),
            || {
                last = raw_get(&c.client.name, "192.168.77.1", hc);
                last.as_ref().is_some_and(|(code, _, _)| *code == want)
            },
        );
        last.unwrap()
    };
    let (_, head, body) = answer(200);
    assert!(head.contains("content-type: application/json"), "{head}");
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"service": {"namespace": "default", "name": "lb"},
                           "localEndpoints": 1, "serviceProxyHealthy": true})
    );
    // Only a remote endpoint left: 503 with none local.
    c.slice("lb", &[(2, true, "node-b")]);
    let (_, _, body) = answer(503);
    assert!(body.contains("\"localEndpoints\":0"), "{body}");
    // The Service goes: so does the listener.
    c.api.kubectl(&["delete", "service", "lb"]);
    wait_until(
        "the health check port closes",
        Duration::from_secs(15),
        || raw_get(&c.client.name, "192.168.77.1", hc).is_none(),
    );
}
