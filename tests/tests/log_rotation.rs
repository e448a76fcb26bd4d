//! Container log rotation end to end: an agent with a tiny `--container-log-max-size` and a
//! chatty pod on a real node (apiserver-lite, our `cri` with runc, the agent). The log is
//! renamed and reopened through CRI ReopenContainerLog, older rotations are gzipped, no more
//! than `--container-log-max-files` files exist, and `kubectl logs` keeps showing new lines.

use std::path::Path;
use std::time::Duration;

use e2e::node::{TestNode, shell_pod};
use e2e::{ApiServer, wait_until};

/// The files in the directory of the pod's `main` container logs.
fn log_files(node: &TestNode) -> Vec<String> {
    let Ok(pods) = std::fs::read_dir(node.pod_log_dir()) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    for pod in pods.flatten() {
        if !pod
            .file_name()
            .to_string_lossy()
            .starts_with("default_chatty_")
        {
            continue;
        }
        let dir = pod.path().join("main");
        if let Ok(entries) = std::fs::read_dir(&dir) {
            names.extend(
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned()),
            );
        }
    }
    names.sort();
    names
}

fn size_of(node: &TestNode, name: &str) -> u64 {
    std::fs::read_dir(node.pod_log_dir())
        .into_iter()
        .flatten()
        .flatten()
        .map(|pod| pod.path().join("main").join(name))
        .find(|p| Path::exists(p))
        .and_then(|p| std::fs::metadata(p).ok())
        .map_or(0, |m| m.len())
}

#[test]
fn chatty_containers_logs_rotate_compress_and_stay_readable() {
    let api = ApiServer::start().expect("apiserver-lite");
    let mut node = TestNode::start(&api);
    node.stop_agent();
    node.start_agent_with(&[
        "--container-log-max-size",
        "4Ki",
        "--container-log-max-files",
        "4",
        "--container-log-monitor-interval",
        "1",
    ]);
    node.wait_ready(&api);
    api.apply(&shell_pod(
        "chatty",
        &node.name,
        &node.image,
        r#"n=0; while true; do n=$((n+1)); seq 1 60 | sed "s/^/round-$n-line-/"; sleep 1; done"#,
    ));
    wait_until("the pod runs", Duration::from_secs(60), || {
        api.jsonpath(&["pod", "chatty"], "{.status.phase}") == "Running"
    });

    // Rotation happens, and older rotations get compressed.
    wait_until("a compressed rotated log", Duration::from_secs(60), || {
        log_files(&node).iter().any(|n| n.ends_with(".gz"))
    });
    // Several more rounds: the number of files stays bounded.
    for _ in 0..6 {
        std::thread::sleep(Duration::from_secs(1));
        let files = log_files(&node);
        assert!(files.len() <= 4, "more than 4 log files: {files:?}");
        assert!(
            !files.iter().any(|n| n.ends_with(".tmp")),
            "a compression left a temporary file: {files:?}"
        );
    }
    let files = log_files(&node);
    assert!(files.iter().any(|n| n == "0.log"), "{files:?}");
    // The live file is reopened, so it stays near the limit rather than growing.
    assert!(
        size_of(&node, "0.log") < 64 * 1024,
        "the live log was not rotated: {} bytes",
        size_of(&node, "0.log")
    );

    // `kubectl logs` still sees new output after rotations.
    let last_line = || {
        api.kubectl(&["logs", "chatty", "--tail", "1"])
            .ok()
            .trim()
            .to_string()
    };
    let mut first = String::new();
    wait_until("a log line", Duration::from_secs(10), || {
        first = last_line();
        first.starts_with("round-")
    });
    let round = |line: &str| -> u64 {
        line.split('-')
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    wait_until("newer log lines", Duration::from_secs(20), || {
        round(&last_line()) > round(&first)
    });
    assert!(
        node.agent_log().contains("rotated container log"),
        "{}",
        node.agent_log()
    );
    api.kubectl(&["delete", "pod", "chatty", "--wait=true"])
        .ok();
}
