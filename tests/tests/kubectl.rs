//! Real kubectl against a freshly started apiserver-lite: the everyday commands and the bad
//! cases, with kubectl's own output and exit codes. Each test starts its own server.

use std::io::Write;
use std::time::Duration;

use e2e::{ApiServer, Etcd, ServerOptions, kubectl_version, run_kubectl, wait_for};

const MANIFEST: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: demo
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
  namespace: demo
data:
  a: "1"
---
apiVersion: v1
kind: Secret
metadata:
  name: creds
  namespace: demo
stringData:
  password: hunter2
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: demo
  labels:
    app: web
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: busybox:1
        env:
        - name: MODE
          value: blue
        ports:
        - containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: demo
spec:
  type: NodePort
  selector:
    app: web
  ports:
  - port: 80
    targetPort: 80
"#;

fn write_file(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .unwrap();
    path.display().to_string()
}

fn apply_of_a_multi_document_manifest_creates_then_configures_then_leaves_unchanged(
    server: &ApiServer,
) {
    let dir = server.data_dir.path();
    let file = write_file(dir, "app.yaml", MANIFEST);
    let out = server.kubectl(&["apply", "-f", &file]);
    let text = out.ok();
    for line in [
        "namespace/demo created",
        "configmap/cfg created",
        "secret/creds created",
        "deployment.apps/web created",
        "service/web created",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    // Change one field of the deployment: configured; the rest unchanged.
    let changed = MANIFEST
        .replace("value: blue", "value: green")
        .replace("replicas: 2", "replicas: 3");
    let file2 = write_file(dir, "app2.yaml", &changed);
    let text = server.kubectl(&["apply", "-f", &file2]).ok().to_string();
    assert!(text.contains("deployment.apps/web configured"), "{text}");
    assert!(text.contains("configmap/cfg unchanged"), "{text}");
    let env = server.kubectl(&["get", "deploy", "web", "-n", "demo", "-o", "jsonpath={.spec.template.spec.containers[0].env[0].value} {.spec.replicas} {.metadata.generation}"]);
    assert_eq!(env.ok(), "green 3 2");
    // The last-applied annotation is kept for the next client-side apply.
    let annotations = server.kubectl(&[
        "get",
        "deploy",
        "web",
        "-n",
        "demo",
        "-o",
        "jsonpath={.metadata.annotations}",
    ]);
    assert!(
        annotations
            .ok()
            .contains("kubectl.kubernetes.io/last-applied-configuration")
    );
    // A removed env entry goes away on the next apply (strategic merge by name).
    let removed = changed.replace(
        "        env:\n        - name: MODE\n          value: green\n",
        "",
    );
    let file3 = write_file(dir, "app3.yaml", &removed);
    server.kubectl(&["apply", "-f", &file3]).ok();
    let env = server.kubectl(&[
        "get",
        "deploy",
        "web",
        "-n",
        "demo",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].env}",
    ]);
    assert_eq!(env.ok(), "");
    // Secrets from stringData are stored as data.
    let data = server.kubectl(&[
        "get",
        "secret",
        "creds",
        "-n",
        "demo",
        "-o",
        "jsonpath={.data.password}",
    ]);
    assert_eq!(data.ok(), "aHVudGVyMg==");
}

fn get_prints_upstream_tables_and_every_output_format(server: &ApiServer) {
    let file = write_file(server.data_dir.path(), "app.yaml", MANIFEST);
    server.kubectl(&["apply", "-f", &file]).ok();
    let table = server
        .kubectl(&["get", "deploy,svc,cm", "-n", "demo"])
        .ok()
        .to_string();
    assert!(
        table.contains("READY") && table.contains("UP-TO-DATE") && table.contains("AVAILABLE"),
        "{table}"
    );
    assert!(
        table.contains("TYPE") && table.contains("CLUSTER-IP") && table.contains("PORT(S)"),
        "{table}"
    );
    assert!(
        table.contains("80:3"),
        "node port shown as 80:3xxxx/TCP: {table}"
    );
    let wide = server
        .kubectl(&["get", "deploy", "-n", "demo", "-o", "wide"])
        .ok()
        .to_string();
    assert!(
        wide.contains("CONTAINERS") && wide.contains("busybox:1") && wide.contains("app=web"),
        "{wide}"
    );
    let all = server
        .kubectl(&["get", "all", "-n", "demo"])
        .ok()
        .to_string();
    assert!(
        all.contains("deployment.apps/web") && all.contains("service/web"),
        "{all}"
    );
    let yaml = server
        .kubectl(&["get", "cm", "cfg", "-n", "demo", "-o", "yaml"])
        .ok()
        .to_string();
    assert!(
        yaml.contains("kind: ConfigMap")
            && yaml.contains("resourceVersion:")
            && yaml.contains("uid:"),
        "{yaml}"
    );
    let json: serde_json::Value = serde_json::from_str(
        server
            .kubectl(&["get", "cm", "-n", "demo", "-o", "json"])
            .ok(),
    )
    .unwrap();
    assert_eq!(json["kind"], "List");
    assert_eq!(json["items"][0]["data"]["a"], "1");
    let custom = server.kubectl(&[
        "get",
        "svc",
        "web",
        "-n",
        "demo",
        "-o",
        "custom-columns=NAME:.metadata.name,TYPE:.spec.type",
    ]);
    assert_eq!(
        custom.ok().split_whitespace().collect::<Vec<_>>(),
        ["NAME", "TYPE", "web", "NodePort"]
    );
    let ns = server.kubectl(&["get", "ns"]).ok().to_string();
    for name in [
        "default",
        "kube-system",
        "kube-public",
        "kube-node-lease",
        "demo",
    ] {
        assert!(ns.contains(name), "{ns}");
    }
    assert!(ns.contains("Active"), "{ns}");
    let labels = server
        .kubectl(&[
            "get",
            "deploy",
            "-n",
            "demo",
            "-l",
            "app=web",
            "--show-labels",
        ])
        .ok()
        .to_string();
    assert!(labels.contains("app=web"), "{labels}");
    let none = server.kubectl(&["get", "deploy", "-n", "demo", "-l", "app=other"]);
    assert!(
        none.stderr
            .contains("No resources found in demo namespace."),
        "{none:?}"
    );
    let explain = server
        .kubectl(&["explain", "pods.spec.containers"])
        .ok()
        .to_string();
    assert!(
        explain.contains("KIND:") && explain.contains("Pod") && explain.contains("image"),
        "{explain}"
    );
    let resources = server.kubectl(&["api-resources"]).ok().to_string();
    assert!(
        resources.contains("deployments")
            && resources.contains("deploy")
            && resources.contains("apps/v1"),
        "{resources}"
    );
    let describe = server
        .kubectl(&["describe", "deploy", "web", "-n", "demo"])
        .ok()
        .to_string();
    assert!(
        describe.contains("Name:") && describe.contains("web") && describe.contains("Replicas:"),
        "{describe}"
    );
    let describe = server
        .kubectl(&["describe", "cm", "cfg", "-n", "demo"])
        .ok()
        .to_string();
    assert!(
        describe.contains("Data") && describe.contains("a:"),
        "{describe}"
    );
}

fn label_annotate_patch_edit_replace_and_scale_change_objects(server: &ApiServer) {
    let dir = server.data_dir.path();
    let file = write_file(dir, "app.yaml", MANIFEST);
    server.kubectl(&["apply", "-f", &file]).ok();
    let ns = ["-n", "demo"];
    let k = |args: &[&str]| server.kubectl(&[args, &ns[..]].concat());
    assert!(
        k(&["label", "cm", "cfg", "tier=backend"])
            .ok()
            .contains("configmap/cfg labeled")
    );
    assert!(
        k(&["annotate", "cm", "cfg", "note=hello"])
            .ok()
            .contains("configmap/cfg annotated")
    );
    assert!(
        k(&["label", "cm", "cfg", "tier-"])
            .ok()
            .contains("configmap/cfg unlabeled")
    );
    assert!(
        k(&[
            "patch",
            "cm",
            "cfg",
            "--type=merge",
            "-p",
            r#"{"data":{"b":"2"}}"#
        ])
        .ok()
        .contains("configmap/cfg patched")
    );
    assert!(
        k(&[
            "patch",
            "cm",
            "cfg",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/data/a","value":"10"}]"#
        ])
        .ok()
        .contains("patched")
    );
    assert!(
        k(&[
            "patch",
            "deploy",
            "web",
            "-p",
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"busybox:2"}]}}}}"#
        ])
        .ok()
        .contains("patched")
    );
    let image = k(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].ports[0].containerPort}",
    ]);
    assert_eq!(
        image.ok(),
        "busybox:2 80",
        "strategic merge kept the ports of the container it merged"
    );
    let no_change = k(&[
        "patch",
        "cm",
        "cfg",
        "--type=merge",
        "-p",
        r#"{"data":{"b":"2"}}"#,
    ]);
    assert!(
        no_change.ok().contains("patched (no change)"),
        "{no_change:?}"
    );
    let data = k(&[
        "get",
        "cm",
        "cfg",
        "-o",
        "jsonpath={.data.a},{.data.b},{.metadata.annotations.note},{.metadata.labels}",
    ]);
    assert_eq!(data.ok(), "10,2,hello,");
    // Non-interactive edit through EDITOR.
    let editor = write_file(
        dir,
        "editor.sh",
        "#!/bin/sh\nsed -i 's/a: \"10\"/a: \"11\"/' \"$1\"\n",
    );
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let edited = run_kubectl(
        "kubectl",
        &server.kubeconfig(),
        &["edit", "cm", "cfg", "-n", "demo"],
        None,
        &[("EDITOR", &editor)],
    );
    assert!(edited.ok().contains("configmap/cfg edited"), "{edited:?}");
    assert_eq!(
        k(&["get", "cm", "cfg", "-o", "jsonpath={.data.a}"]).ok(),
        "11"
    );
    // Replace with the object as read.
    let current = k(&["get", "cm", "cfg", "-o", "yaml"])
        .ok()
        .replace("\"11\"", "\"12\"");
    let replaced = server.kubectl_stdin(&["replace", "-f", "-"], &current);
    assert!(
        replaced.ok().contains("configmap/cfg replaced"),
        "{replaced:?}"
    );
    assert!(
        k(&["scale", "deploy", "web", "--replicas=5"])
            .ok()
            .contains("deployment.apps/web scaled")
    );
    assert_eq!(
        k(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]).ok(),
        "5"
    );
    let scale: serde_json::Value = serde_json::from_str(
        server
            .kubectl(&[
                "get",
                "--raw",
                "/apis/apps/v1/namespaces/demo/deployments/web/scale",
            ])
            .ok(),
    )
    .unwrap();
    assert_eq!(
        (
            scale["kind"].as_str(),
            scale["spec"]["replicas"].as_i64(),
            scale["status"]["selector"].as_str()
        ),
        (Some("Scale"), Some(5), Some("app=web")),
        "{scale}"
    );
}

fn watch_wait_and_delete_with_each_propagation_policy(server: &ApiServer) {
    let file = write_file(server.data_dir.path(), "app.yaml", MANIFEST);
    server.kubectl(&["apply", "-f", &file]).ok();
    // get -w sees later changes.
    let out_path = server.data_dir.path().join("watch.out");
    let mut watch = std::process::Command::new("kubectl")
        .args(["get", "cm", "-n", "demo", "-w", "--output-watch-events"])
        .env("KUBECONFIG", server.kubeconfig())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    server
        .kubectl(&[
            "create",
            "configmap",
            "later",
            "-n",
            "demo",
            "--from-literal=x=y",
        ])
        .ok();
    wait_for("get -w to print the new configmap", || {
        std::fs::read_to_string(&out_path).is_ok_and(|s| {
            s.lines()
                .any(|l| l.contains("ADDED") && l.contains("later"))
        })
    });
    let _ = watch.kill();
    let _ = watch.wait();
    // wait --for=jsonpath sees a change made after it started.
    let kubeconfig = server.kubeconfig();
    let waiter = std::thread::spawn(move || {
        run_kubectl(
            "kubectl",
            &kubeconfig,
            &[
                "wait",
                "cm/cfg",
                "-n",
                "demo",
                "--for=jsonpath={.data.a}=2",
                "--timeout=30s",
            ],
            None,
            &[],
        )
    });
    std::thread::sleep(Duration::from_millis(500));
    server
        .kubectl(&[
            "patch",
            "cm",
            "cfg",
            "-n",
            "demo",
            "--type=merge",
            "-p",
            r#"{"data":{"a":"2"}}"#,
        ])
        .ok();
    assert!(waiter.join().unwrap().ok().contains("condition met"));
    // wait --for=delete returns once the object is gone.
    let kubeconfig = server.kubeconfig();
    let waiter = std::thread::spawn(move || {
        run_kubectl(
            "kubectl",
            &kubeconfig,
            &[
                "wait",
                "cm/later",
                "-n",
                "demo",
                "--for=delete",
                "--timeout=30s",
            ],
            None,
            &[],
        )
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        server
            .kubectl(&["delete", "cm", "later", "-n", "demo"])
            .ok()
            .contains("deleted")
    );
    waiter.join().unwrap().ok();
    // Background (default): gone at once.
    server
        .kubectl(&[
            "delete",
            "secret",
            "creds",
            "-n",
            "demo",
            "--cascade=background",
        ])
        .ok();
    assert!(
        server
            .kubectl(&["get", "secret", "creds", "-n", "demo"])
            .fails()
            .contains("NotFound")
    );
    // Foreground and orphan: the object is marked with the finalizer the garbage collector
    // acts on (it runs in the server), which completes the deletion: the Deployment after its
    // ReplicaSets, the Service (it has no dependents) at once; `gc.rs` covers the rest.
    server
        .kubectl(&[
            "delete",
            "deploy",
            "web",
            "-n",
            "demo",
            "--cascade=foreground",
            "--timeout=30s",
        ])
        .ok();
    let sets = server.kubectl(&["get", "rs", "-n", "demo", "-l", "app=web", "-o", "name"]);
    assert_eq!(
        sets.ok().trim(),
        "",
        "ReplicaSets outlived their Deployment"
    );
    server
        .kubectl(&[
            "delete",
            "svc",
            "web",
            "-n",
            "demo",
            "--cascade=orphan",
            "--timeout=30s",
        ])
        .ok();
    assert!(
        server
            .kubectl(&["get", "svc", "web", "-n", "demo"])
            .fails()
            .contains("NotFound")
    );
}

fn namespaces_terminate_and_refuse_new_content(server: &ApiServer) {
    server.kubectl(&["create", "namespace", "gone"]).ok();
    server
        .kubectl(&[
            "create",
            "configmap",
            "c1",
            "-n",
            "gone",
            "--from-literal=a=b",
        ])
        .ok();
    // A finalizer keeps one object, and so the namespace, around while it terminates.
    server
        .kubectl(&[
            "patch",
            "cm",
            "c1",
            "-n",
            "gone",
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":["example.com/hold"]}}"#,
        ])
        .ok();
    server
        .kubectl(&["delete", "namespace", "gone", "--wait=false"])
        .ok();
    assert!(
        server
            .kubectl(&["get", "ns", "gone"])
            .ok()
            .contains("Terminating")
    );
    let refused = server.kubectl(&["create", "configmap", "c2", "-n", "gone"]);
    assert!(
        refused.fails().contains("because it is being terminated"),
        "{refused:?}"
    );
    server
        .kubectl(&[
            "patch",
            "cm",
            "c1",
            "-n",
            "gone",
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ])
        .ok();
    server
        .kubectl(&["wait", "ns/gone", "--for=delete", "--timeout=30s"])
        .ok();
    let missing = server.kubectl(&["create", "configmap", "c3", "-n", "nowhere"]);
    assert!(
        missing.fails().contains("namespaces \"nowhere\" not found"),
        "{missing:?}"
    );
}

fn create_with_generate_name_and_pods_bound_to_nodes_delete_gracefully(server: &ApiServer) {
    let generated = server.kubectl_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  generateName: gen-\n  namespace: default\n",
    );
    let text = generated.ok().to_string();
    assert!(
        text.starts_with("configmap/gen-") && text.trim().ends_with("created"),
        "{text}"
    );
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: default\nspec:\n  nodeName: node-1\n  containers:\n  - name: c\n    image: busybox\n";
    server.kubectl_stdin(&["create", "-f", "-"], pod).ok();
    let defaults = server.kubectl(&["get", "pod", "p", "-o", "jsonpath={.spec.restartPolicy} {.spec.dnsPolicy} {.spec.schedulerName} {.spec.containers[0].imagePullPolicy} {.status.phase} {.status.qosClass}"]);
    assert_eq!(
        defaults.ok(),
        "Always ClusterFirst default-scheduler Always Pending BestEffort"
    );
    let table = server.kubectl(&["get", "pods"]).ok().to_string();
    assert!(
        table.contains("READY")
            && table.contains("STATUS")
            && table.contains("RESTARTS")
            && table.contains("0/1"),
        "{table}"
    );
    // A pod on a node stays, marked, until its node confirms.
    server.kubectl(&["delete", "pod", "p", "--wait=false"]).ok();
    let marked = server.kubectl(&[
        "get",
        "pod",
        "p",
        "-o",
        "jsonpath={.metadata.deletionGracePeriodSeconds}",
    ]);
    assert_eq!(marked.ok(), "30");
    assert!(
        server
            .kubectl(&["get", "pods"])
            .ok()
            .contains("Terminating")
    );
    server
        .kubectl(&["delete", "pod", "p", "--grace-period=0", "--force"])
        .ok();
    assert!(
        server
            .kubectl(&["get", "pod", "p"])
            .fails()
            .contains("NotFound")
    );
}

fn bad_input_gets_kubectls_upstream_errors_and_a_non_zero_exit(server: &ApiServer) {
    let dir = server.data_dir.path();
    let malformed = write_file(
        dir,
        "bad.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n data: [\n",
    );
    let out = server.kubectl(&["apply", "-f", &malformed]);
    assert!(
        out.fails().contains("error converting YAML to JSON"),
        "{out:?}"
    );
    let unknown = write_file(
        dir,
        "unknown.yaml",
        "apiVersion: v1\nkind: Widget\nmetadata:\n  name: x\n",
    );
    let out = server.kubectl(&["apply", "-f", &unknown]);
    assert!(
        out.fails()
            .contains("no matches for kind \"Widget\" in version \"v1\""),
        "{out:?}"
    );
    let out = server.kubectl_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\n",
    );
    let err = out.fails();
    assert!(
        err.contains("is invalid") && err.contains("metadata.name: Invalid value: \"Bad_Name\""),
        "{err}"
    );
    let out = server.kubectl_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n",
    );
    let err = out.fails();
    assert!(
        err.contains("The Pod \"p\" is invalid: spec.containers[0].image: Required value"),
        "{err}"
    );
    // Strict field validation (kubectl's default) rejects unknown fields.
    let out = server.kubectl_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: u\ndatta:\n  a: b\n",
    );
    assert!(out.fails().contains("unknown field \"datta\""), "{out:?}");
    // A stale resourceVersion is a conflict.
    server
        .kubectl(&["create", "configmap", "cfg", "--from-literal=a=1"])
        .ok();
    let old = server
        .kubectl(&["get", "cm", "cfg", "-o", "yaml"])
        .ok()
        .to_string();
    server
        .kubectl(&[
            "patch",
            "cm",
            "cfg",
            "--type=merge",
            "-p",
            r#"{"data":{"a":"2"}}"#,
        ])
        .ok();
    let out = server.kubectl_stdin(&["replace", "-f", "-"], &old);
    let err = out.fails();
    assert!(
        err.contains("Error from server (Conflict)")
            && err.contains("the object has been modified"),
        "{err}"
    );
    // Already exists.
    let out = server.kubectl_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\n",
    );
    assert!(out.fails().contains("Error from server (AlreadyExists): error when creating \"STDIN\": configmaps \"cfg\" already exists"), "{out:?}");
    let out = server.kubectl(&["create", "configmap", "cfg"]);
    assert!(
        out.fails().contains("configmaps \"cfg\" already exists"),
        "{out:?}"
    );
    // Not found.
    let out = server.kubectl(&["get", "cm", "nope"]);
    assert!(
        out.fails()
            .contains("Error from server (NotFound): configmaps \"nope\" not found"),
        "{out:?}"
    );
    // An object too large for a request.
    let big = dir.join("big");
    std::fs::write(&big, vec![b'x'; 4 * 1024 * 1024]).unwrap();
    let out = server.kubectl(&[
        "create",
        "configmap",
        "big",
        &format!("--from-file=big={}", big.display()),
    ]);
    assert!(out.fails().contains("Request entity too large"), "{out:?}");
    // Server-side apply is refused clearly, and nothing is written.
    let out = server.kubectl_stdin(
        &["apply", "--server-side", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\n  namespace: default\n",
    );
    assert!(
        out.fails().contains("server-side apply is not supported"),
        "{out:?}"
    );
    assert!(
        server
            .kubectl(&["get", "cm", "ssa"])
            .fails()
            .contains("NotFound")
    );
    // Unauthenticated requests get 401 with a Status body.
    let anon = write_file(
        dir,
        "anon.kubeconfig",
        &format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    insecure-skip-tls-verify: true\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user:\n    token: not-a-valid-token\n",
            server.url
        ),
    );
    let out = run_kubectl(
        "kubectl",
        std::path::Path::new(&anon),
        &["get", "cm"],
        None,
        &[],
    );
    assert!(
        out.fails()
            .contains("You must be logged in to the server (Unauthorized)"),
        "{out:?}"
    );
}

fn older_and_newer_kubectl_versions_work_too(server: &ApiServer) {
    let file = write_file(server.data_dir.path(), "app.yaml", MANIFEST);
    for minor in ["1.27", "1.33"] {
        let kubectl = kubectl_version(minor);
        if !std::path::Path::new(&kubectl).exists() {
            panic!(
                "{kubectl} is missing; the Cloud SDK kubectl binaries are expected on these machines"
            );
        }
        let out = server.kubectl_with(&kubectl, &["apply", "-f", &file], None);
        let text = out.ok();
        assert!(
            text.contains("deployment.apps/web"),
            "kubectl {minor}: {text}"
        );
        let got = server.kubectl_with(&kubectl, &["get", "deploy", "-n", "demo"], None);
        assert!(got.ok().contains("web"), "kubectl {minor}");
        assert!(
            got.stderr.is_empty(),
            "kubectl {minor} warned: {}",
            got.stderr
        );
        server
            .kubectl_with(&kubectl, &["delete", "-f", &file, "--wait=false"], None)
            .ok();
        server
            .kubectl_with(
                &kubectl,
                &["wait", "ns/demo", "--for=delete", "--timeout=60s"],
                None,
            )
            .ok();
    }
}

/// Runs each scenario against a fresh server on each storage backend.
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $scenario() {
                    let server = super::ApiServer::start().unwrap();
                    super::$scenario(&server);
                }
            )*
        }
        mod etcd {
            $(
                #[test]
                fn $scenario() {
                    let etcd = super::Etcd::start().unwrap();
                    let options = super::ServerOptions { storage: Some(etcd.storage_flag()), ..Default::default() };
                    let server = super::ApiServer::start_with(options).unwrap();
                    super::$scenario(&server);
                    drop(server);
                    drop(etcd);
                }
            )*
        }
    };
}

on_both_backends!(
    apply_of_a_multi_document_manifest_creates_then_configures_then_leaves_unchanged,
    get_prints_upstream_tables_and_every_output_format,
    label_annotate_patch_edit_replace_and_scale_change_objects,
    watch_wait_and_delete_with_each_propagation_policy,
    namespaces_terminate_and_refuse_new_content,
    create_with_generate_name_and_pods_bound_to_nodes_delete_gracefully,
    bad_input_gets_kubectls_upstream_errors_and_a_non_zero_exit,
    older_and_newer_kubectl_versions_work_too,
);
