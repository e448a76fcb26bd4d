//! Exec, Attach and PortForward end to end: the RPCs hand out URLs, and test clients speak
//! the Kubernetes streaming protocols to them over SPDY/3.1 and over WebSocket, against real
//! containers (busybox under runc) in a daemon in its own network namespace.

mod support;

use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use support::daemon::{Daemon, DaemonOptions};
use support::pod::{busybox, container_config, pull, run_sandbox, sandbox_config, start};
use support::streaming::{
    Output, Script, spdy_forward, spdy_session, spdy_upgrade, websocket_forward, websocket_session,
};
use tonic::Code;
use tonic::transport::Channel;

fn exec_request(id: &str, cmd: &[&str], script: &Script) -> cri::ExecRequest {
    cri::ExecRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty: script.tty.is_some(),
        stdin: script.stdin.is_some(),
        stdout: script.stdout,
        stderr: script.stderr,
    }
}

async fn exec_url(client: &mut RuntimeServiceClient<Channel>, request: cri::ExecRequest) -> String {
    client.exec(request).await.expect("Exec").into_inner().url
}

/// The three transports a client may pick for a remote command.
#[derive(Debug, Clone, Copy)]
enum Transport {
    Spdy,
    WebSocketV5,
    WebSocketV4,
}

async fn run(
    daemon: &Daemon,
    client: &mut RuntimeServiceClient<Channel>,
    transport: Transport,
    id: &str,
    cmd: &[&str],
    script: Script,
) -> Output {
    let url = exec_url(client, exec_request(id, cmd, &script)).await;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let netns = daemon.netns.path();
    match transport {
        Transport::Spdy => spdy_session(&netns, &url, script).await,
        Transport::WebSocketV5 => {
            websocket_session(&netns, &url, "v5.channel.k8s.io", script).await
        }
        Transport::WebSocketV4 => {
            websocket_session(&netns, &url, "v4.channel.k8s.io", script).await
        }
    }
}

fn output_only() -> Script {
    Script {
        stdout: true,
        stderr: true,
        ..Script::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_streams_stdin_output_terminals_and_exit_codes_over_spdy_and_websocket() {
    support::timed(async {
        let daemon = Daemon::start(DaemonOptions::default());
        let (_registry, image) = busybox(&daemon);
        let mut client = daemon.runtime().await;
        pull(&daemon, &image).await;
        let config = sandbox_config(&daemon, "exec");
        let sandbox = run_sandbox(&mut client, config.clone()).await;
        let id = start(
            &mut client,
            &sandbox,
            &config,
            container_config("main", &image, &["sleep", "3600"]),
        )
        .await;

        for transport in [
            Transport::Spdy,
            Transport::WebSocketV5,
            Transport::WebSocketV4,
        ] {
            let what = format!("{transport:?}");
            let both = run(
                &daemon,
                &mut client,
                transport,
                &id,
                &["sh", "-c", "echo out; echo err >&2"],
                output_only(),
            )
            .await;
            assert_eq!(
                (both.stdout_text(), String::from_utf8_lossy(&both.stderr)),
                ("out\n".to_string(), "err\n".into()),
                "{what}"
            );
            assert_eq!(both.status()["status"], "Success", "{what}");

            let failed = run(
                &daemon,
                &mut client,
                transport,
                &id,
                &["sh", "-c", "exit 3"],
                output_only(),
            )
            .await;
            let status = failed.status();
            assert_eq!(status["status"], "Failure", "{what}: {status}");
            assert_eq!(status["reason"], "NonZeroExitCode", "{what}: {status}");
            assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
            assert_eq!(status["details"]["causes"][0]["message"], "3", "{what}");

            let tty = run(
                &daemon,
                &mut client,
                transport,
                &id,
                &["tty"],
                Script {
                    stdout: true,
                    tty: Some((80, 24)),
                    ..Script::default()
                },
            )
            .await;
            assert!(
                tty.stdout_text().starts_with("/dev/pts/"),
                "{what}: {tty:?} {}",
                String::from_utf8_lossy(&tty.error)
            );

            // The size sent on the resize stream reaches the terminal.
            let sized = run(
                &daemon,
                &mut client,
                transport,
                &id,
                &["sh", "-c", "sleep 1; stty size"],
                Script {
                    stdout: true,
                    tty: Some((100, 40)),
                    ..Script::default()
                },
            )
            .await;
            assert_eq!(sized.stdout_text().trim(), "40 100", "{what}");
        }

        // stdin to a command that reads to end of input: SPDY half-closes the stream, v5
        // sends the close signal (v4 has none, so cat would wait forever).
        for transport in [Transport::Spdy, Transport::WebSocketV5] {
            let cat = run(
                &daemon,
                &mut client,
                transport,
                &id,
                &["cat"],
                Script {
                    stdin: Some(b"hello\nworld\n".to_vec()),
                    close_stdin: true,
                    stdout: true,
                    stderr: true,
                    ..Script::default()
                },
            )
            .await;
            assert_eq!(cat.stdout_text(), "hello\nworld\n", "{transport:?}");
            assert_eq!(cat.status()["status"], "Success");
        }

        // A command that cannot start is an error, not an exit code.
        let missing = run(
            &daemon,
            &mut client,
            Transport::Spdy,
            &id,
            &["no-such-command"],
            Script {
                stdout: true,
                tty: Some((80, 24)),
                ..Script::default()
            },
        )
        .await;
        let status = missing.status();
        assert_eq!(status["reason"], "InternalError", "{status}");
        assert!(
            status["message"]
                .as_str()
                .unwrap_or_default()
                .contains("no-such-command"),
            "{status}"
        );

        // What the RPC refuses, as upstream.
        let refused = |request: cri::ExecRequest| {
            let mut client = client.clone();
            async move { client.exec(request).await.unwrap_err().code() }
        };
        let mut request = exec_request(&id, &["true"], &output_only());
        request.tty = true;
        assert_eq!(refused(request).await, Code::InvalidArgument);
        assert_eq!(
            refused(exec_request(&id, &["true"], &Script::default())).await,
            Code::InvalidArgument
        );
        assert_eq!(
            refused(exec_request("missing", &["true"], &output_only())).await,
            Code::NotFound
        );

        // A token serves one connection; unknown ones get 404.
        let url = exec_url(&mut client, exec_request(&id, &["true"], &output_only())).await;
        let netns = daemon.netns.path();
        let used = spdy_session(&netns, &url, output_only()).await;
        assert_eq!(used.status()["status"], "Success");
        let (code, _, _) = spdy_upgrade(&netns, &url, &["v4.channel.k8s.io"]).await;
        assert_eq!(code, 404);
        // A protocol the server does not speak is refused with what it accepts.
        let url = exec_url(&mut client, exec_request(&id, &["true"], &output_only())).await;
        let (code, head, _) = spdy_upgrade(&netns, &url, &["v9.channel.k8s.io"]).await;
        assert_eq!(code, 403, "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("x-accepted-stream-protocol-versions: v4.channel.k8s.io"),
            "{head}"
        );
    })
    .await;
}

async fn wait_running(client: &mut RuntimeServiceClient<Channel>, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = client
            .container_status(cri::ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap()
            .state;
        if state == cri::ContainerState::ContainerRunning as i32 {
            return;
        }
        assert!(Instant::now() < deadline, "{id} is not running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn attach_relays_a_containers_stdin_and_its_terminal() {
    support::timed(async {
        let daemon = Daemon::start(DaemonOptions::default());
        let (_registry, image) = busybox(&daemon);
        let mut client = daemon.runtime().await;
        pull(&daemon, &image).await;
        let config = sandbox_config(&daemon, "attach");
        let sandbox = run_sandbox(&mut client, config.clone()).await;
        let netns = daemon.netns.path();

        // A container reading its stdin, attached over SPDY: the input reaches it, its
        // output comes back, and the session ends when it exits.
        let mut reader = container_config(
            "reader",
            &image,
            &[
                "sh",
                "-c",
                "read line; echo got $line; read more; echo then $more",
            ],
        );
        reader.stdin = true;
        let id = start(&mut client, &sandbox, &config, reader).await;
        wait_running(&mut client, &id).await;
        let url = client
            .attach(cri::AttachRequest {
                container_id: id.clone(),
                stdin: true,
                tty: false,
                stdout: true,
                stderr: true,
            })
            .await
            .expect("Attach")
            .into_inner()
            .url;
        assert!(url.contains("/attach/"), "{url}");
        let attached = spdy_session(
            &netns,
            &url,
            Script {
                stdin: Some(b"one\ntwo\n".to_vec()),
                close_stdin: true,
                stdout: true,
                stderr: true,
                ..Script::default()
            },
        )
        .await;
        assert_eq!(attached.stdout_text(), "got one\nthen two\n");
        assert_eq!(attached.status()["status"], "Success");

        // stdin_once: the first session's end of input is the container's (cat ends), here
        // over WebSocket v5 and its stdin close signal.
        let mut once = container_config("once", &image, &["cat"]);
        once.stdin = true;
        once.stdin_once = true;
        let id = start(&mut client, &sandbox, &config, once).await;
        wait_running(&mut client, &id).await;
        let url = client
            .attach(cri::AttachRequest {
                container_id: id.clone(),
                stdin: true,
                tty: false,
                stdout: true,
                stderr: true,
            })
            .await
            .expect("Attach")
            .into_inner()
            .url;
        let attached = websocket_session(
            &netns,
            &url,
            "v5.channel.k8s.io",
            Script {
                stdin: Some(b"only once\n".to_vec()),
                close_stdin: true,
                stdout: true,
                stderr: true,
                ..Script::default()
            },
        )
        .await;
        assert_eq!(attached.stdout_text(), "only once\n");
        assert_eq!(attached.status()["status"], "Success");

        // A terminal container, attached over WebSocket v5: typed lines come back through
        // the terminal, which the log also records as stdout.
        let mut shell = container_config(
            "shell",
            &image,
            &["sh", "-c", "while read l; do echo \"echo:$l\"; done"],
        );
        shell.stdin = true;
        shell.tty = true;
        let id = start(&mut client, &sandbox, &config, shell).await;
        wait_running(&mut client, &id).await;
        let url = client
            .attach(cri::AttachRequest {
                container_id: id.clone(),
                stdin: true,
                tty: true,
                stdout: true,
                stderr: false,
            })
            .await
            .expect("Attach")
            .into_inner()
            .url;
        let attached = websocket_session(
            &netns,
            &url,
            "v5.channel.k8s.io",
            Script {
                stdin: Some(b"abc\n".to_vec()),
                stdout: true,
                tty: Some((80, 24)),
                until: Some("echo:abc".into()),
                ..Script::default()
            },
        )
        .await;
        assert!(attached.stdout_text().contains("echo:abc"), "{attached:?}");
        let log = daemon.logs().join("attach").join("shell/0.log");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains(" stdout ") && text.contains("echo:abc") {
                break;
            }
            assert!(Instant::now() < deadline, "{}: {text}", log.display());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn port_forward_reaches_a_pod_port_over_spdy_websocket_and_the_tunnel() {
    support::timed(async {
        let daemon = Daemon::start(DaemonOptions::default());
        let (_registry, image) = busybox(&daemon);
        let mut client = daemon.runtime().await;
        pull(&daemon, &image).await;
        let config = sandbox_config(&daemon, "forward");
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
                    "mkdir -p /www && echo hello-from-pod > /www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /www",
                ],
            ),
        )
        .await;
        wait_running(&mut client, &id).await;
        let netns = daemon.netns.path();
        let url = || {
            let mut client = client.clone();
            let sandbox = sandbox.clone();
            async move {
                client
                    .port_forward(cri::PortForwardRequest {
                        pod_sandbox_id: sandbox,
                        port: vec![8080],
                    })
                    .await
                    .expect("PortForward")
                    .into_inner()
                    .url
            }
        };
        let request = b"GET /index.html HTTP/1.0\r\n\r\n";

        // httpd needs a moment to listen: retry the first forward.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (data, errors) = spdy_forward(&netns, &url().await, false, 8080, request).await;
            if String::from_utf8_lossy(&data).contains("hello-from-pod") {
                assert!(errors.is_empty(), "{}", String::from_utf8_lossy(&errors));
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no answer: {:?} {:?}",
                String::from_utf8_lossy(&data),
                String::from_utf8_lossy(&errors)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        let (data, errors) = spdy_forward(&netns, &url().await, true, 8080, request).await;
        assert!(
            String::from_utf8_lossy(&data).contains("hello-from-pod"),
            "tunnel: {:?} {:?}",
            String::from_utf8_lossy(&data),
            String::from_utf8_lossy(&errors)
        );

        let data = websocket_forward(&netns, &url().await, 8080, request, "hello-from-pod").await;
        assert!(String::from_utf8_lossy(&data).contains("HTTP/1."));

        // Nothing listens on 9999: the error stream says so and the data stream ends.
        let (data, errors) = spdy_forward(&netns, &url().await, false, 9999, request).await;
        assert!(data.is_empty());
        let errors = String::from_utf8_lossy(&errors);
        assert!(errors.contains("error forwarding port 9999"), "{errors}");

        // Unknown sandboxes are refused by the RPC.
        let missing = client
            .port_forward(cri::PortForwardRequest {
                pod_sandbox_id: "missing".into(),
                port: vec![80],
            })
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::NotFound);
    })
    .await;
}
