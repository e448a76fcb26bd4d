//! kubectl against a whole node: apiserver-lite proxies pods/log, pods/exec, pods/attach and
//! pods/portforward to the agent's kubelet API, which reads the CRI log files or hands the
//! connection to the runtime's streaming server. Real /usr/bin/kubectl (WebSocket first,
//! SPDY as fallback), the real `cri` with runc in a network namespace, the real `agent`.

use std::io::{BufRead, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e::node::TestNode;
use e2e::{ApiServer, wait_until};

fn pod(name: &str, image: &str, restart: &str, command: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: default
spec:
  terminationGracePeriodSeconds: 1
  restartPolicy: {restart}
  volumes:
  - name: data
    emptyDir: {{}}
  containers:
  - name: main
    image: {image}
    command: [sh, -c, '{command}']
    volumeMounts: [{{name: data, mountPath: /data}}]
"
    )
}

fn wait_running(api: &ApiServer, name: &str) {
    wait_until(&format!("{name} to run"), Duration::from_secs(60), || {
        api.jsonpath(&["pod", name], "{.status.phase}") == "Running"
    });
}

#[test]
fn kubectl_logs_exec_port_forward_and_cp_reach_pods_through_the_kubelet_api() {
    let api = ApiServer::start().expect("apiserver-lite");
    let node = TestNode::start(&api);
    let image = node.image.clone();
    node.wait_ready(&api);

    // The kubelet API refuses clients without credentials.
    let anonymous = Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("https://127.0.0.1:{}/pods", node.port))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&anonymous.stdout), "401");

    // A pod no node can take has no kubelet to ask.
    api.apply(&format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: nowhere, namespace: default}}
spec:
  nodeSelector: {{no-such-label: x}}
  containers: [{{name: main, image: {image}}}]
"
    ));
    let unscheduled = api.kubectl(&["logs", "nowhere"]);
    assert!(
        unscheduled
            .stderr
            .contains("pod nowhere does not have a host assigned"),
        "{unscheduled:?}"
    );

    // A long-running pod with a web server and a few log lines.
    api.apply(&pod(
            "web",
            &image,
            "Always",
            "echo hello; sleep 0.3; echo err >&2; sleep 0.3; for i in 1 2 3; do echo line $i; done; mkdir -p /www; echo served-by-httpd > /www/index.html; exec httpd -f -p 8080 -h /www",
        ),
    );
    wait_running(&api, "web");
    wait_until("web's logs", Duration::from_secs(20), || {
        api.kubectl(&["logs", "web"]).stdout.contains("line 3")
    });
    assert_eq!(
        api.kubectl(&["logs", "web"]).ok(),
        "hello\nerr\nline 1\nline 2\nline 3\n"
    );
    assert_eq!(
        api.kubectl(&["logs", "web", "--tail=2"]).ok(),
        "line 2\nline 3\n"
    );
    assert_eq!(
        api.kubectl(&["logs", "web", "--limit-bytes=8"]).ok(),
        "hello\ner"
    );
    let stamped = api.kubectl(&["logs", "web", "--timestamps", "--tail=1"]);
    let line = stamped.ok().trim_end();
    let (time, text) = line.split_once(' ').expect("a timestamp and the line");
    assert_eq!(text, "line 3");
    assert!(
        time.len() >= 20 && time.ends_with('Z') && time.contains('T'),
        "{time}"
    );
    let since = api.kubectl(&["logs", "web", "--since=1h"]);
    assert!(since.ok().contains("line 1"));
    let wrong = api.kubectl(&["logs", "web", "-c", "nope"]);
    assert!(!wrong.success());
    assert!(
        wrong
            .stderr
            .contains("container nope is not valid for pod web"),
        "{}",
        wrong.stderr
    );
    let missing = api.kubectl(&["logs", "nothere"]);
    assert!(
        missing.stderr.contains("pods \"nothere\" not found"),
        "{}",
        missing.stderr
    );

    // exec: output, exit codes, stdin.
    assert_eq!(
        api.kubectl(&["exec", "web", "--", "cat", "/www/index.html"])
            .ok(),
        "served-by-httpd\n"
    );
    let exit = api.kubectl(&["exec", "web", "--", "sh", "-c", "exit 3"]);
    assert_eq!(exit.code, 3, "{exit:?}");
    let echoed = api.kubectl_stdin(&["exec", "-i", "web", "--", "cat"], "hi\n");
    assert_eq!(echoed.ok(), "hi\n");

    // cp into and out of the pod (tar over exec with stdin).
    let dir = tempfile::tempdir().expect("tempdir");
    let local = dir.path().join("up.txt");
    std::fs::write(&local, "copied in\n").expect("write");
    api.kubectl(&[
        "cp",
        local.to_str().unwrap_or_default(),
        "default/web:/data/up.txt",
    ])
    .ok();
    assert_eq!(
        api.kubectl(&["exec", "web", "--", "cat", "/data/up.txt"])
            .ok(),
        "copied in\n"
    );
    let back = dir.path().join("back.txt");
    api.kubectl(&[
        "cp",
        "default/web:/www/index.html",
        back.to_str().unwrap_or_default(),
    ])
    .ok();
    assert_eq!(
        std::fs::read_to_string(&back).expect("copied out"),
        "served-by-httpd\n"
    );

    // port-forward: an HTTP request through the tunnel to httpd in the pod.
    port_forward_serves_http(&api, &[]);

    // The same over SPDY, kubectl's fallback and what a real kube-apiserver sends a kubelet.
    let spdy = e2e::run_kubectl(
        "kubectl",
        &api.kubeconfig(),
        &["exec", "-i", "web", "--", "sh", "-c", "cat; exit 4"],
        Some("over spdy\n"),
        &[("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")],
    );
    assert_eq!(
        (spdy.code, spdy.stdout.as_str()),
        (4, "over spdy\n"),
        "{spdy:?}"
    );
    port_forward_serves_http(&api, &[("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")]);

    // attach: stdin to a container that waits for it, its answer back.
    api.apply(&format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: listener, namespace: default}}
spec:
  terminationGracePeriodSeconds: 1
  restartPolicy: Never
  containers:
  - name: main
    image: {image}
    stdin: true
    stdinOnce: true
    command: [sh, -c, 'read line; echo got $line']
"
    ));
    wait_running(&api, "listener");
    let attached = api.kubectl_stdin(&["attach", "-i", "listener"], "hello\n");
    assert!(attached.stdout.contains("got hello"), "{attached:?}");

    // logs -f ends when the container exits.
    api.apply(&pod(
        "counter",
        &image,
        "Never",
        "for i in 1 2 3 4; do echo tick $i; sleep 1; done",
    ));
    wait_until("counter to start", Duration::from_secs(60), || {
        let phase = api.jsonpath(&["pod", "counter"], "{.status.phase}");
        phase == "Running" || phase == "Succeeded"
    });
    let started = Instant::now();
    let followed = api.kubectl(&["logs", "-f", "counter"]);
    assert_eq!(followed.ok(), "tick 1\ntick 2\ntick 3\ntick 4\n");
    assert!(started.elapsed() < Duration::from_secs(30));

    // --previous after a restart.
    api.apply(&pod(
            "crashy",
            &image,
            "Always",
            "n=$(cat /data/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /data/n; echo run $n; sleep 3; exit 1",
        ),
    );
    wait_until("crashy to restart", Duration::from_secs(90), || {
        api.jsonpath(
            &["pod", "crashy"],
            "{.status.containerStatuses[0].restartCount}",
        )
        .parse::<u32>()
        .is_ok_and(|n| n >= 1)
    });
    wait_until(
        "--previous to show the run before",
        Duration::from_secs(30),
        || {
            let current = api.kubectl(&["logs", "crashy"]).stdout;
            let previous = api.kubectl(&["logs", "crashy", "--previous"]).stdout;
            let number = |s: &str| {
                s.trim()
                    .strip_prefix("run ")
                    .and_then(|n| n.parse::<u32>().ok())
            };
            matches!((number(&current), number(&previous)), (Some(c), Some(p)) if p + 1 == c)
        },
    );
    let never = api.kubectl(&["logs", "web", "--previous"]);
    assert!(!never.success());
    assert!(
        never
            .stderr
            .contains("previous terminated container \"main\" in pod \"web\" not found"),
        "{}",
        never.stderr
    );
    drop(node);
}

fn port_forward_serves_http(api: &ApiServer, env: &[(&str, &str)]) {
    let mut child = Command::new("kubectl");
    child
        .args(["port-forward", "pod/web", ":8080", "--address", "127.0.0.1"])
        .env("KUBECONFIG", api.kubeconfig());
    for (k, v) in env {
        child.env(k, v);
    }
    let mut child = child
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl port-forward");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| {
            let _ = child.kill();
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("kubectl port-forward printed nothing: {err}")
        });
    // "Forwarding from 127.0.0.1:PORT -> 8080"
    let port: u16 = line
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no local port in {line:?}"));
    let mut answer = String::new();
    for _ in 0..2 {
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(10))).ok();
        tcp.write_all(b"GET /index.html HTTP/1.0\r\nHost: web\r\n\r\n")
            .expect("request");
        answer.clear();
        let _ = tcp.read_to_string(&mut answer);
        assert!(
            answer.starts_with("HTTP/1.")
                && answer.lines().next().is_some_and(|l| l.contains(" 200")),
            "{answer}"
        );
        assert!(answer.ends_with("served-by-httpd\n"), "{answer}");
    }
    let _ = child.kill();
    let _ = child.wait();
}
