//! Pods on different nodes, against the real kernel: two "node" namespaces joined by a veth
//! (their InternalIPs on one link), each with a "pod" namespace behind it on its own pod CIDR
//! running busybox httpd, and a netproxy per node (in that node's namespace) talking to a real
//! apiserver-lite through a loopback forwarder. netproxy's host-gw routes let a pod on node A
//! reach a pod on node B by pod IP, and a ClusterIP Service backed by both; a Node that goes
//! takes its route along; SIGTERM leaves the routes and `--cleanup` removes only ours. The
//! same with two real nodes (`TestNode`: cri and agent, runtime namespaces joined by a link
//! carrying their `--node-ip`), pods made through the API.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use e2e::cri::TestNetns;
use e2e::netns::{Forwarder, Get, HttpdPod, http_get, link, sh, sysctl};
use e2e::node::TestNode;
use e2e::{ApiServer, Process, wait_until, workspace_bin};

/// One node: its namespace, netproxy, and one pod namespace with httpd.
struct Node {
    name: &'static str,
    ns: TestNetns,
    pod: HttpdPod,
    proxy: Option<Process>,
    _forwarder: Forwarder,
}

impl Node {
    fn proxy_log(&self) -> String {
        self.proxy.as_ref().map(Process::log).unwrap_or_default()
    }

    /// Our routes (`ip route show proto 87`), one per line.
    fn routes(&self) -> String {
        sh(&["ip", "-n", &self.ns.name, "route", "show", "proto", "87"])
            .trim()
            .to_string()
    }
}

struct Cluster {
    api: ApiServer,
    a: Node,
    b: Node,
    dir: tempfile::TempDir,
}

const LINK_A: &str = "192.168.91.1";
const LINK_B: &str = "192.168.91.2";

fn node_manifest(name: &str, cidr: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\nspec: {{podCIDR: {cidr}, podCIDRs: [{cidr}]}}\nstatus:\n  addresses: [{{type: InternalIP, address: {ip}}}, {{type: Hostname, address: {name}}}]\n  conditions: [{{type: Ready, status: \"True\"}}]\n---\n"
    )
}

impl Cluster {
    fn start() -> Cluster {
        let api = ApiServer::start_with(e2e::ServerOptions {
            extra_args: vec!["--cluster-dns=false".into()],
            ..Default::default()
        })
        .expect("apiserver-lite");
        let dir = tempfile::Builder::new()
            .prefix("pod-network-e2e-")
            .tempdir()
            .unwrap();
        let ns_a = TestNetns::create();
        let ns_b = TestNetns::create();
        link(
            &ns_a,
            "n0",
            &format!("{LINK_A}/24"),
            &ns_b,
            "n0",
            &format!("{LINK_B}/24"),
        );
        // A third node whose InternalIP no link reaches: its route is skipped, not added.
        api.apply(&format!(
            "{}{}{}",
            node_manifest("node-a", "10.245.0.0/24", LINK_A),
            node_manifest("node-b", "10.245.1.0/24", LINK_B),
            node_manifest("node-c", "10.245.2.0/24", "172.31.99.3"),
        ));
        let a = Self::node(&api, &dir, "node-a", ns_a, 0);
        let b = Self::node(&api, &dir, "node-b", ns_b, 1);
        let mut c = Cluster { api, a, b, dir };
        for which in [0, 1] {
            c.start_proxy(which, &[]);
        }
        c
    }

    fn node(
        api: &ApiServer,
        dir: &tempfile::TempDir,
        name: &'static str,
        ns: TestNetns,
        i: usize,
    ) -> Node {
        sysctl(&ns, "net.ipv4.ip_forward=1");
        let forwarder = Forwarder::start(&ns, api.port);
        let pod = HttpdPod::start(
            &ns,
            "p0",
            &format!("10.245.{i}"),
            &format!("pod-on-{name}\n"),
            dir.path(),
        );
        Node {
            name,
            ns,
            pod,
            proxy: None,
            _forwarder: forwarder,
        }
    }

    fn node_mut(&mut self, which: usize) -> &mut Node {
        if which == 0 { &mut self.a } else { &mut self.b }
    }

    fn proxy_command(&self, node: &Node, extra: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &node.ns.name])
            .arg(workspace_bin("netproxy"))
            .arg("--kubeconfig")
            .arg(self.api.kubeconfig())
            .args([
                "--hostname-override",
                node.name,
                "--cluster-cidr",
                "10.245.0.0/16",
                "--min-sync-period",
                "100ms",
            ])
            .args(extra)
            .env("RUST_LOG", "info");
        cmd
    }

    fn start_proxy(&mut self, which: usize, extra: &[&str]) {
        let node = if which == 0 { &self.a } else { &self.b };
        let cmd = self.proxy_command(node, extra);
        let log = self
            .dir
            .path()
            .join(format!("netproxy-{}-{}.log", node.name, uuid_ish()));
        let proxy = Process::spawn("netproxy", cmd, log).expect("netproxy");
        self.node_mut(which).proxy = Some(proxy);
    }

    fn get(&self, from: &Node, ip: &str, port: u16) -> Get {
        http_get(
            &from.pod.ns.name,
            SocketAddr::new(ip.parse().unwrap(), port),
        )
    }
}

fn uuid_ish() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

#[test]
fn pods_on_two_nodes_reach_each_other_and_a_service_backed_by_both() {
    let mut c = Cluster::start();
    wait_until(
        "host-gw routes on both nodes",
        Duration::from_secs(20),
        || {
            c.a.routes() == format!("10.245.1.0/24 via {LINK_B} dev n0")
                && c.b.routes() == format!("10.245.0.0/24 via {LINK_A} dev n0")
        },
    );
    // node-c's gateway is not on-link: logged, not routed.
    wait_until(
        "the unreachable gateway is reported",
        Duration::from_secs(10),
        || c.a.proxy_log().contains("gateway not on-link"),
    );
    assert!(!c.a.routes().contains("10.245.2.0"), "{}", c.a.routes());

    // Pod to pod across nodes, both ways.
    assert_eq!(
        c.get(&c.a, &c.b.pod.ip, 8080),
        Get::Body("pod-on-node-b".into())
    );
    assert_eq!(
        c.get(&c.b, &c.a.pod.ip, 8080),
        Get::Body("pod-on-node-a".into())
    );

    // A ClusterIP Service backed by one pod on each node, reached from the pod on node A.
    c.api.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: both, namespace: default}\nspec:\n  ports: [{name: http, port: 80, targetPort: 8080}]\n",
    );
    let ip = c.api.jsonpath(&["service", "both"], "{.spec.clusterIP}");
    c.api.apply(&format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: both-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: both}}\naddressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}]\nendpoints:\n- addresses: [\"{}\"]\n  conditions: {{ready: true}}\n  nodeName: node-a\n- addresses: [\"{}\"]\n  conditions: {{ready: true}}\n  nodeName: node-b\n",
        c.a.pod.ip, c.b.pod.ip
    ));
    wait_until("the service answers", Duration::from_secs(15), || {
        matches!(c.get(&c.a, &ip, 80), Get::Body(_))
    });
    let seen: BTreeSet<String> = (0..40)
        .map(|_| match c.get(&c.a, &ip, 80) {
            Get::Body(b) => b,
            other => panic!("GET {ip}:80: {other:?}\n{}", c.a.proxy_log()),
        })
        .collect();
    assert_eq!(
        seen,
        BTreeSet::from(["pod-on-node-a".to_string(), "pod-on-node-b".to_string()]),
        "spread over the pods of both nodes"
    );

    // node-b goes: its route goes from node A.
    c.api.kubectl(&["delete", "node", "node-b"]);
    wait_until("node-b's route removed", Duration::from_secs(20), || {
        c.a.routes().is_empty()
    });
    assert!(
        matches!(c.get(&c.a, &c.b.pod.ip, 8080), Get::Failed(_)),
        "no route to node-b's pods any more"
    );
    c.api
        .apply(&node_manifest("node-b", "10.245.1.0/24", LINK_B));
    wait_until("node-b's route back", Duration::from_secs(20), || {
        !c.a.routes().is_empty()
    });

    // SIGTERM leaves the routes; --cleanup removes ours and nothing else.
    let before = sh(&["ip", "-n", &c.a.ns.name, "route", "show"]);
    let status =
        c.a.proxy
            .take()
            .and_then(|mut p| p.terminate(Duration::from_secs(10)));
    assert!(status.is_some_and(|s| s.success()), "clean exit");
    assert_eq!(sh(&["ip", "-n", &c.a.ns.name, "route", "show"]), before);
    assert_eq!(
        c.get(&c.a, &c.b.pod.ip, 8080),
        Get::Body("pod-on-node-b".into()),
        "traffic keeps flowing while netproxy is down"
    );
    let out = c
        .proxy_command(&c.a, &["--cleanup"])
        .output()
        .expect("netproxy --cleanup");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(c.a.routes(), "");
    let after = sh(&["ip", "-n", &c.a.ns.name, "route", "show"]);
    assert!(after.contains("10.245.0.0/24 dev p0"), "{after}");
    assert!(after.contains("192.168.91.0/24 dev n0"), "{after}");

    // With --pod-routes=false nothing is routed.
    c.start_proxy(0, &["--pod-routes=false"]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(c.a.routes(), "", "{}", c.a.proxy_log());
}

/// netproxy for `node` inside its runtime's namespace (where its pods' bridge is).
fn node_proxy(api: &ApiServer, node: &TestNode, log: &std::path::Path) -> Process {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &node.cri.netns.name])
        .arg(workspace_bin("netproxy"))
        .arg("--kubeconfig")
        .arg(api.kubeconfig())
        .args([
            "--hostname-override",
            &node.name,
            "--cluster-cidr",
            "10.252.0.0/16",
            "--min-sync-period",
            "100ms",
        ])
        .env("RUST_LOG", "info");
    Process::spawn("netproxy", cmd, log.to_path_buf()).expect("netproxy")
}

#[test]
fn pods_of_two_real_nodes_reach_each_other_and_a_service_backed_by_both() {
    let api = ApiServer::start_with(e2e::ServerOptions {
        extra_args: vec![
            "--cluster-dns=false".into(),
            "--cluster-cidr=10.252.0.0/16".into(),
        ],
        ..Default::default()
    })
    .expect("apiserver-lite");
    // Each runtime has a namespace of its own: one link joins them, carrying the InternalIPs.
    let a = TestNode::start_with_node_ip(&api, "192.168.93.1");
    let b = TestNode::start_with_node_ip(&api, "192.168.93.2");
    link(
        &a.cri.netns,
        "n0",
        "192.168.93.1/24",
        &b.cri.netns,
        "n0",
        "192.168.93.2/24",
    );
    a.wait_ready(&api);
    b.wait_ready(&api);
    let dir = tempfile::Builder::new()
        .prefix("pod-network-nodes-")
        .tempdir()
        .unwrap();
    let _forwarders = [
        Forwarder::start(&a.cri.netns, api.port),
        Forwarder::start(&b.cri.netns, api.port),
    ];
    let proxy_a = node_proxy(&api, &a, &dir.path().join("netproxy-a.log"));
    let _proxy_b = node_proxy(&api, &b, &dir.path().join("netproxy-b.log"));

    let web = |name: &str, node: &TestNode| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: web}}}}\nspec:\n  nodeName: {}\n  terminationGracePeriodSeconds: 1\n  containers: [{{name: c, image: {}, command: [sh, -c, 'mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www']}}]\n---\n",
            node.name, node.image
        )
    };
    api.apply(&format!(
        "{}{}apiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  selector: {{app: web}}\n  ports: [{{port: 80, targetPort: 8080}}]\n",
        web("web-a", &a),
        web("web-b", &b),
    ));
    let running = |pod: &str| {
        wait_until(&format!("{pod} runs"), Duration::from_secs(60), || {
            api.jsonpath(&["pod", pod], "{.status.phase}") == "Running"
        });
        api.jsonpath(&["pod", pod], "{.status.podIP}")
    };
    let web_b_ip = running("web-b");
    running("web-a");
    let routes = |node: &TestNode| {
        sh(&[
            "ip",
            "-n",
            &node.cri.netns.name,
            "route",
            "show",
            "proto",
            "87",
        ])
    };
    wait_until(
        "host-gw routes on both nodes",
        Duration::from_secs(20),
        || {
            routes(&a).contains("via 192.168.93.2 dev n0")
                && routes(&b).contains("via 192.168.93.1 dev n0")
        },
    );
    // The API server reaches the agents on 127.0.0.1 only, not on these node addresses, so
    // the client fetches in a loop and its log is read from node A's log directory.
    let cluster_ip = api.jsonpath(&["service", "web"], "{.spec.clusterIP}");
    api.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: client}}\nspec:\n  nodeName: {}\n  terminationGracePeriodSeconds: 1\n  containers: [{{name: c, image: {}, command: [sh, -c, 'while true; do echo \"direct $(wget -qO- http://{web_b_ip}:8080/)\"; echo \"service $(wget -qO- http://{cluster_ip}/)\"; sleep 0.2; done']}}]\n",
        a.name, a.image
    ));
    running("client");
    let client_log = || {
        let mut out = String::new();
        for entry in walk(&a.pod_log_dir()) {
            if entry.to_string_lossy().contains("_client_") {
                out.push_str(&std::fs::read_to_string(&entry).unwrap_or_default());
            }
        }
        out
    };
    wait_until(
        "the client reaches web-b directly and the Service on both nodes",
        Duration::from_secs(30),
        || {
            let log = client_log();
            log.contains("direct web-b")
                && log.contains("service web-a")
                && log.contains("service web-b")
        },
    );
    let log = client_log();
    let answers: BTreeSet<&str> = log
        .lines()
        .filter_map(|l| l.split_once(" F ").map(|(_, m)| m.trim()))
        .collect();
    assert!(
        answers.is_subset(&BTreeSet::from([
            "direct web-b",
            "service web-a",
            "service web-b"
        ])),
        "every fetch answered: {answers:?}\nroutes A: {}\nnetproxy A: {}",
        routes(&a),
        proxy_a.log()
    );
    assert!(answers.len() >= 3, "{log}");
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
