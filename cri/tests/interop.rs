//! Interoperability with moby/spdystream, the SPDY implementation of client-go and
//! kube-apiserver: `spdystream/main.go` is a small client on it. The test runs when
//! `CRI_SPDYSTREAM_CLIENT` names that client built (`go build` in `spdystream/`; this
//! machine has no Go module proxy, so build it against a local checkout with
//! `go mod edit -replace github.com/moby/spdystream=<dir>`). It is ignored by default (CI has
//! no Go toolchain): run it with `cargo test -p cri --test interop -- --ignored`.

mod support;

use k8s_cri::v1 as cri;
use support::daemon::{Daemon, DaemonOptions};
use support::pod::{busybox, container_config, pull, run_sandbox, sandbox_config, start};

fn client() -> Option<String> {
    std::env::var("CRI_SPDYSTREAM_CLIENT")
        .ok()
        .filter(|p| std::path::Path::new(p).is_file())
}

fn run_client(daemon: &Daemon, args: &[&str]) -> String {
    let output = daemon.netns.exec(
        &[&client().expect("client")[..]]
            .into_iter()
            .chain(args.iter().copied())
            .collect::<Vec<_>>(),
    );
    assert!(
        output.status.success(),
        "spdystream client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs CRI_SPDYSTREAM_CLIENT: a Go build of cri/tests/spdystream"]
async fn exec_and_port_forward_interoperate_with_gos_spdystream() {
    assert!(
        client().is_some(),
        "CRI_SPDYSTREAM_CLIENT must name the built spdystream client"
    );
    support::timed(async {
        let daemon = Daemon::start(DaemonOptions::default());
        let (_registry, image) = busybox(&daemon);
        let mut client = daemon.runtime().await;
        pull(&daemon, &image).await;
        let config = sandbox_config(&daemon, "interop");
        let sandbox = run_sandbox(&mut client, config.clone()).await;
        let id = start(
            &mut client,
            &sandbox,
            &config,
            container_config(
                "web",
                &image,
                &[
                    "sh",
                    "-c",
                    "mkdir -p /www && echo hello-go > /www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /www",
                ],
            ),
        )
        .await;
        let exec_url = |cmd: &[&str]| {
            let mut client = client.clone();
            let request = cri::ExecRequest {
                container_id: id.clone(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                tty: false,
                stdin: true,
                stdout: true,
                stderr: true,
            };
            async move { client.exec(request).await.expect("Exec").into_inner().url }
        };
        let url = exec_url(&["cat"]).await;
        let out = run_client(&daemon, &["exec", &url, "through spdystream\n"]);
        assert!(out.starts_with("through spdystream\n"), "{out}");
        assert!(out.contains(r#""status":"Success""#), "{out}");
        let url = exec_url(&["sh", "-c", "cat >/dev/null; exit 7"]).await;
        let out = run_client(&daemon, &["exec", &url, ""]);
        assert!(out.contains("NonZeroExitCode") && out.contains(r#""message":"7""#), "{out}");

        let url = client
            .port_forward(cri::PortForwardRequest {
                pod_sandbox_id: sandbox.clone(),
                port: vec![8080],
            })
            .await
            .expect("PortForward")
            .into_inner()
            .url;
        let out = run_client(
            &daemon,
            &["forward", &url, "8080", "GET /index.html HTTP/1.0\r\n\r\n"],
        );
        assert!(out.contains("hello-go"), "{out}");
        eprintln!("spdystream client: exec and port-forward interoperate");
    })
    .await;
}
