//! Services' endpoints and load balancers against a real apiserver-lite, with real kubectl:
//! `kubectl expose` gives EndpointSlices and Endpoints that follow pods (named target ports
//! resolved per pod, not-ready and terminating pods, headless services,
//! publishNotReadyAddresses), slices go with their Service, services without a selector keep
//! what their owner wrote, and LoadBalancer Services get addresses from `--lb-pool` (or the
//! Ready node's InternalIP) that come back when they are deleted or change type.

use std::time::Duration;

use e2e::{ApiServer, FakeKubelet, ServerOptions, wait_for};
use serde_json::Value;

const NODE: &str = "apiVersion: v1
kind: Node
metadata:
  name: n1
  labels: {topology.kubernetes.io/zone: zone-a}
status:
  allocatable: {cpu: \"8\", memory: 8Gi, pods: \"50\"}
  addresses: [{type: InternalIP, address: 192.0.2.10}, {type: Hostname, address: n1}]
  conditions: [{type: Ready, status: \"True\"}]
";

fn pod(name: &str, labels: &str, port: u16, extra_meta: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{{labels}}}
{extra_meta}spec:
{extra_spec}  containers:
  - name: c
    image: busybox
    ports: [{{name: http, containerPort: {port}}}]
---
"
    )
}

/// Pods are ready unless labelled `ready: "no"`.
fn kubelet(server: &ApiServer) -> FakeKubelet {
    FakeKubelet::start_with_ips(server, |p| {
        p.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("ready"))
            .is_none_or(|v| v != "no")
    })
}

fn get_json(server: &ApiServer, args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let run = server.kubectl(&all);
    if !run.success() {
        return Value::Null;
    }
    serde_json::from_str(run.ok()).unwrap_or(Value::Null)
}

fn slices(server: &ApiServer, service: &str) -> Vec<Value> {
    let selector = format!("kubernetes.io/service-name={service}");
    get_json(server, &["endpointslices", "-l", &selector])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn pod_ip(server: &ApiServer, name: &str) -> String {
    server.jsonpath(&["pod", name], "{.status.podIP}")
}

/// Endpoint of `ip` in the slice whose first port is `port`: (ready, serving, terminating).
fn endpoint(slices: &[Value], port: i64, ip: &str) -> Option<(bool, bool, bool)> {
    let slice = slices.iter().find(|s| s["ports"][0]["port"] == port)?;
    let e = slice["endpoints"]
        .as_array()?
        .iter()
        .find(|e| e["addresses"][0] == ip)?;
    let c = &e["conditions"];
    Some((
        c["ready"].as_bool()?,
        c["serving"].as_bool()?,
        c["terminating"].as_bool()?,
    ))
}

fn addresses(subset: &Value, field: &str) -> Vec<String> {
    let mut out: Vec<String> = subset[field]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["ip"].as_str().map(String::from))
        .collect();
    out.sort();
    out
}

fn subset_for_port(server: &ApiServer, name: &str, port: i64) -> Value {
    get_json(server, &["endpoints", name])["subsets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["ports"][0]["port"] == port)
        .cloned()
        .unwrap_or(Value::Null)
}

#[test]
fn kubectl_expose_gives_slices_and_endpoints_that_follow_the_pods() {
    let server = ApiServer::start().unwrap();
    let _kubelet = kubelet(&server);
    server.apply(NODE);
    let hold = "  finalizers: [e2e.test/hold]\n";
    let pods = [
        pod("a", "app: web", 8080, hold, ""),
        pod("b", "app: web, ready: \"no\"", 8080, "", ""),
        pod("c", "app: web", 9090, "", ""),
        pod("other", "app: other", 8080, "", ""),
    ]
    .concat();
    server.apply(&pods);
    wait_for("pod IPs", || {
        ["a", "b", "c"]
            .iter()
            .all(|p| !pod_ip(&server, p).is_empty())
    });
    server
        .kubectl(&[
            "expose",
            "pod",
            "a",
            "--name=web",
            "--port=80",
            "--target-port=http",
            "--selector=app=web",
        ])
        .ok();
    let (a, b, c) = (
        pod_ip(&server, "a"),
        pod_ip(&server, "b"),
        pod_ip(&server, "c"),
    );

    // The named port resolves per pod: one slice for 8080, one for 9090.
    wait_for("two slices with the pods", || {
        let s = slices(&server, "web");
        endpoint(&s, 8080, &a) == Some((true, true, false))
            && endpoint(&s, 8080, &b) == Some((false, false, false))
            && endpoint(&s, 9090, &c) == Some((true, true, false))
    });
    let s = slices(&server, "web");
    assert_eq!(s.len(), 2, "{s:#?}");
    let uid = server.jsonpath(&["service", "web"], "{.metadata.uid}");
    for slice in &s {
        let meta = &slice["metadata"];
        assert!(meta["name"].as_str().unwrap().starts_with("web-"));
        assert_eq!(
            meta["labels"]["endpointslice.kubernetes.io/managed-by"],
            "endpointslice-controller.k8s.io"
        );
        assert_eq!(meta["ownerReferences"][0]["uid"], uid.as_str());
        assert_eq!(meta["ownerReferences"][0]["controller"], true);
        assert_eq!(slice["addressType"], "IPv4");
        let e = &slice["endpoints"][0];
        assert_eq!(e["nodeName"], "n1");
        assert_eq!(e["zone"], "zone-a");
        assert_eq!(e["targetRef"]["kind"], "Pod");
    }
    assert!(
        !s.iter()
            .any(|sl| sl.to_string().contains(&pod_ip(&server, "other"))),
        "a pod the selector does not pick is no endpoint"
    );
    wait_for("endpoints with ready and not-ready addresses", || {
        let s8080 = subset_for_port(&server, "web", 8080);
        addresses(&s8080, "addresses") == vec![a.clone()]
            && addresses(&s8080, "notReadyAddresses") == vec![b.clone()]
            && addresses(&subset_for_port(&server, "web", 9090), "addresses") == vec![c.clone()]
    });

    // Nothing changes: nothing is written.
    let versions = |server: &ApiServer| {
        let mut v: Vec<String> = slices(server, "web")
            .iter()
            .map(|s| {
                s["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        v.sort();
        v.push(server.jsonpath(&["endpoints", "web"], "{.metadata.resourceVersion}"));
        v
    };
    let before = versions(&server);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(versions(&server), before, "no churn without changes");

    // b becomes ready.
    server
        .kubectl(&["label", "pod", "b", "ready-", "--overwrite"])
        .ok();
    let mut both = vec![a.clone(), b.clone()];
    both.sort();
    wait_for("b ready in its slice and in endpoints", || {
        endpoint(&slices(&server, "web"), 8080, &b) == Some((true, true, false))
            && addresses(&subset_for_port(&server, "web", 8080), "addresses") == both
    });

    // a terminates (held by a finalizer): in the slice as terminating and serving, not ready;
    // out of the Endpoints.
    server.kubectl(&["delete", "pod", "a", "--wait=false"]).ok();
    wait_for("a terminating", || {
        endpoint(&slices(&server, "web"), 8080, &a) == Some((false, true, true))
            && addresses(&subset_for_port(&server, "web", 8080), "addresses") == vec![b.clone()]
    });
    server
        .kubectl(&[
            "patch",
            "pod",
            "a",
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ])
        .ok();
    wait_for("a gone from the slice", || {
        let s = slices(&server, "web");
        endpoint(&s, 8080, &a).is_none() && endpoint(&s, 8080, &b).is_some()
    });

    // c stops matching the selector: it leaves, and its slice goes (the other one stays).
    server
        .kubectl(&["label", "pod", "c", "app=moved", "--overwrite"])
        .ok();
    wait_for("c's slice gone", || {
        let s = slices(&server, "web");
        s.len() == 1 && endpoint(&s, 8080, &b).is_some()
    });
    wait_for("c gone from endpoints", || {
        subset_for_port(&server, "web", 9090).is_null()
    });

    // The service goes: its slices (garbage collector) and its Endpoints go too.
    server.kubectl(&["delete", "service", "web"]).ok();
    wait_for("slices and endpoints deleted", || {
        slices(&server, "web").is_empty() && !server.kubectl(&["get", "endpoints", "web"]).success()
    });
}

const HEADLESS: &str = "apiVersion: v1
kind: Service
metadata:
  name: db
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector: {app: db}
  ports: [{name: pg, port: 5432, targetPort: 5432}]
---
apiVersion: v1
kind: Service
metadata:
  name: manual
spec:
  ports: [{port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: manual-1
  labels: {kubernetes.io/service-name: manual}
addressType: IPv4
endpoints: [{addresses: [198.51.100.7]}]
ports: [{port: 80, protocol: TCP, name: \"\"}]
---
apiVersion: v1
kind: Endpoints
metadata:
  name: manual
subsets: [{addresses: [{ip: 198.51.100.7}], ports: [{port: 80}]}]
---
apiVersion: v1
kind: Service
metadata:
  name: empty
spec:
  selector: {app: nobody}
  ports: [{port: 80}]
";

#[test]
fn headless_published_not_ready_and_selectorless_services() {
    let server = ApiServer::start().unwrap();
    let _kubelet = kubelet(&server);
    server.apply(NODE);
    let hostname = "  hostname: db-0\n  subdomain: db\n";
    server.apply(&pod("db-0", "app: db, ready: \"no\"", 5432, "", hostname));
    server.apply(HEADLESS);
    wait_for("db-0 has an IP", || !pod_ip(&server, "db-0").is_empty());
    let ip = pod_ip(&server, "db-0");

    // Published although not ready, with its hostname, labelled headless.
    wait_for("the headless slice", || {
        endpoint(&slices(&server, "db"), 5432, &ip) == Some((true, false, false))
    });
    let slice = &slices(&server, "db")[0];
    assert_eq!(slice["endpoints"][0]["hostname"], "db-0");
    assert_eq!(
        slice["metadata"]["labels"]["service.kubernetes.io/headless"],
        ""
    );
    wait_for("db endpoints list db-0 as ready", || {
        let s = subset_for_port(&server, "db", 5432);
        addresses(&s, "addresses") == vec![ip.clone()] && s["addresses"][0]["hostname"] == "db-0"
    });

    // A service selecting nothing has one empty placeholder slice and empty Endpoints.
    wait_for("the placeholder slice", || {
        let s = slices(&server, "empty");
        s.len() == 1 && s[0]["endpoints"].as_array().is_none_or(Vec::is_empty)
    });
    wait_for("empty endpoints", || {
        server.kubectl(&["get", "endpoints", "empty"]).success()
    });

    // Services without a selector keep what their owner wrote; so does `kubernetes`.
    std::thread::sleep(Duration::from_secs(1));
    let manual = slices(&server, "manual");
    assert_eq!(manual.len(), 1);
    assert_eq!(manual[0]["metadata"]["name"], "manual-1");
    assert_eq!(manual[0]["endpoints"][0]["addresses"][0], "198.51.100.7");
    assert_eq!(
        server.jsonpath(&["endpoints", "manual"], "{.subsets[0].addresses[0].ip}"),
        "198.51.100.7"
    );
    assert_eq!(
        server.jsonpath(
            &["endpoints", "kubernetes"],
            "{.subsets[0].addresses[0].ip}"
        ),
        "127.0.0.1"
    );
    let k = slices(&server, "kubernetes");
    assert_eq!(k.len(), 1, "{k:#?}");
    assert_eq!(k[0]["metadata"]["name"], "kubernetes");
}

fn ingress(server: &ApiServer, name: &str) -> String {
    server.jsonpath(&["service", name], "{.status.loadBalancer.ingress[*].ip}")
}

fn lb(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  type: LoadBalancer
{extra}  selector: {{app: web}}
  ports: [{{port: 80}}]
---
"
    )
}

#[test]
fn load_balancers_get_pool_addresses_that_come_back() {
    let server = ApiServer::start_with(ServerOptions {
        extra_args: vec!["--lb-pool".into(), "10.123.0.1-10.123.0.2".into()],
        ..Default::default()
    })
    .unwrap();
    server.apply(&[lb("one", ""), lb("two", "")].concat());
    wait_for("two addresses", || {
        !ingress(&server, "one").is_empty() && !ingress(&server, "two").is_empty()
    });
    let (one, two) = (ingress(&server, "one"), ingress(&server, "two"));
    assert_ne!(one, two);
    for ip in [&one, &two] {
        assert!(ip == "10.123.0.1" || ip == "10.123.0.2", "{ip}");
    }
    // The pool is exhausted: the third waits, with a warning event.
    server.apply(
        &[
            lb("three", ""),
            lb("classy", "  loadBalancerClass: example.com/lb\n"),
        ]
        .concat(),
    );
    wait_for("an AllocationFailed event", || {
        server
            .kubectl(&[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=three",
            ])
            .stdout
            .contains("AllocationFailed")
    });
    assert_eq!(ingress(&server, "three"), "");
    // `kubectl get` shows the address as EXTERNAL-IP.
    let table = server.kubectl(&["get", "service", "one"]).ok().to_string();
    assert!(table.contains(&one), "{table}");

    // Deleting one gives its address to three.
    server.kubectl(&["delete", "service", "one"]).ok();
    wait_for("three gets one's address", || {
        ingress(&server, "three") == one
    });
    // two stops being a LoadBalancer: its address is released.
    server
        .kubectl(&["patch", "service", "two", "--type=merge", "-p",
            r#"{"spec":{"type":"ClusterIP","externalTrafficPolicy":null,"allocateLoadBalancerNodePorts":null,"ports":[{"port":80,"nodePort":null}]}}"#])
        .ok();
    wait_for("two's status cleared", || {
        ingress(&server, "two").is_empty()
    });
    server.apply(&lb("four", ""));
    wait_for("four gets two's address", || {
        ingress(&server, "four") == two
    });
    assert_eq!(ingress(&server, "classy"), "", "another class is not ours");
}

#[test]
fn without_a_pool_load_balancers_get_the_ready_node_address() {
    let server = ApiServer::start().unwrap();
    server.apply(NODE);
    server.apply(&lb("web", ""));
    wait_for("the node's InternalIP", || {
        ingress(&server, "web") == "192.0.2.10"
    });
    // A second Ready node adds its address.
    server.apply(
        &NODE
            .replace("name: n1", "name: n2")
            .replace("192.0.2.10", "192.0.2.11"),
    );
    wait_for("both nodes' addresses", || {
        ingress(&server, "web") == "192.0.2.10 192.0.2.11"
    });
}
