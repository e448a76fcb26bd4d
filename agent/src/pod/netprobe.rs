//! The network handlers of probes and lifecycle hooks, run from the node as kubelet runs
//! them: httpGet over HTTP or HTTPS (certificates not checked, redirects followed on the same
//! host only, `>= 200` and `< 400` succeeds), tcpSocket (a connection opens) and grpc (the
//! `grpc.health.v1.Health/Check` call answers SERVING). Messages are kubelet's, so
//! `kubectl describe` reads the same.

use std::time::Duration;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::probe::Outcome;

/// The User-Agent kubelet 1.33 sends.
const USER_AGENT: &str = "kube-probe/1.33";
/// How many redirects kubelet follows.
const MAX_REDIRECTS: usize = 10;
/// How much of a response body kubelet keeps for messages.
const MAX_BODY: usize = 10 * 1024;

/// Why the HTTP client could not be made.
#[derive(Debug, thiserror::Error)]
#[error("probe HTTP client: {0}")]
pub struct ClientError(#[from] reqwest::Error);

/// The HTTP client of httpGet probes and hooks: no certificate checks, no connection reuse,
/// redirects followed while they stay on the first request's host.
pub fn http_client() -> Result<reqwest::Client, ClientError> {
    install_crypto_provider();
    let redirects = reqwest::redirect::Policy::custom(|attempt| {
        let same_host = attempt
            .previous()
            .first()
            .is_some_and(|first| first.host_str() == attempt.url().host_str());
        if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error("stopped after 10 redirects")
        } else if same_host {
            attempt.follow()
        } else {
            attempt.stop()
        }
    });
    Ok(reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .redirect(redirects)
        .pool_max_idle_per_host(0)
        .no_proxy()
        .build()?)
}

fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Fails only if a provider is installed already, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// One httpGet attempt.
#[derive(Debug, Clone)]
pub struct HttpTarget {
    /// `http` or `https`.
    pub scheme: String,
    /// Host (pod IP by default).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path with query, starting with `/`.
    pub path: String,
    /// Headers; a `Host` header sets the request's host as kubelet does.
    pub headers: Vec<(String, String)>,
}

impl HttpTarget {
    /// The URL as kubelet's messages show it.
    pub fn url(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{}://{host}:{}{}", self.scheme, self.port, self.path)
    }
}

/// Runs an httpGet probe or hook within `timeout`.
pub async fn http_get(client: &reqwest::Client, target: &HttpTarget, timeout: Duration) -> Outcome {
    let url = target.url();
    let mut request = client
        .get(&url)
        .timeout(timeout)
        .header(reqwest::header::USER_AGENT, USER_AGENT);
    if !target
        .headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("accept"))
    {
        request = request.header(reqwest::header::ACCEPT, "*/*");
    }
    for (name, value) in &target.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(e) if e.is_timeout() => {
            return Outcome::Failure(format!(
                "Get \"{url}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            ));
        }
        Err(e) => return Outcome::Failure(format!("Get \"{url}\": {}", error_chain(&e))),
    };
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        return Outcome::Success;
    }
    if (300..400).contains(&status) {
        // A redirect to another host is not followed; kubelet counts it as a success with a
        // warning.
        let body = body_prefix(response).await;
        tracing::info!(url, status, body, "Probe terminated redirects");
        return Outcome::Success;
    }
    Outcome::Failure(format!("HTTP probe failed with statuscode: {status}"))
}

async fn body_prefix(response: reqwest::Response) -> String {
    let mut response = response;
    let mut body = Vec::new();
    while body.len() < MAX_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(MAX_BODY);
    String::from_utf8_lossy(&body).into_owned()
}

/// Runs a tcpSocket probe or hook within `timeout`.
pub async fn tcp_connect(host: &str, port: u16, timeout: Duration) -> Outcome {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port))).await {
        Ok(Ok(_)) => Outcome::Success,
        Ok(Err(e)) => Outcome::Failure(format!("dial tcp {host}:{port}: {e}")),
        Err(_) => Outcome::Failure(format!("dial tcp {host}:{port}: i/o timeout")),
    }
}

/// Runs a grpc probe within `timeout`: `grpc.health.v1.Health/Check` for `service` must
/// answer SERVING.
pub async fn grpc_check(host: &str, port: u16, service: &str, timeout: Duration) -> Outcome {
    let address = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let seconds = format!("{}s", timeout.as_secs_f64());
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .and_then(|endpoint| endpoint.user_agent(USER_AGENT));
    let endpoint = match endpoint {
        Ok(endpoint) => endpoint.connect_timeout(timeout).timeout(timeout),
        Err(e) => return Outcome::Failure(format!("bad gRPC address {address}: {e}")),
    };
    let channel = match endpoint.connect().await {
        Ok(channel) => channel,
        Err(e) => {
            return Outcome::Failure(format!(
                "timeout: failed to connect service {address:?} within {seconds}: {}",
                error_chain(&e)
            ));
        }
    };
    let request = HealthCheckRequest {
        service: service.to_string(),
    };
    match HealthClient::new(channel).check(request).await {
        Ok(response) => {
            let status = response.into_inner().status();
            if status == ServingStatus::Serving {
                Outcome::Success
            } else {
                Outcome::Failure(format!(
                    "service unhealthy (responded with {:?})",
                    status.as_str_name()
                ))
            }
        }
        Err(status) => Outcome::Failure(match status.code() {
            tonic::Code::Unimplemented => format!(
                "this server does not implement the grpc health protocol (grpc.health.v1.Health): {}",
                status.message()
            ),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                format!("timeout: health rpc did not complete within {seconds}")
            }
            _ => format!("error: health rpc probe failed: {}", status.message()),
        }),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Answers each connection with the next canned response (status line and headers).
    async fn canned_http(responses: Vec<String>) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            for response in responses {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 2048];
                let _ = stream.read(&mut buf).await;
                let _ = stream.write_all(response.as_bytes()).await;
            }
        });
        port
    }

    fn target(scheme: &str, port: u16, path: &str) -> HttpTarget {
        HttpTarget {
            scheme: scheme.into(),
            host: "127.0.0.1".into(),
            port,
            path: path.into(),
            headers: vec![("X-Probe".into(), "1".into())],
        }
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn http_status_codes_decide_as_kubelet() {
        let client = http_client().unwrap();
        let port = canned_http(vec![
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".into(),
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n".into(),
            // A redirect to another host is not followed and counts as success.
            "HTTP/1.1 302 Found\r\nLocation: http://other.invalid/\r\nContent-Length: 0\r\n\r\n"
                .into(),
        ])
        .await;
        let t = target("http", port, "/healthz");
        assert_eq!(http_get(&client, &t, SECOND).await, Outcome::Success);
        assert_eq!(
            http_get(&client, &t, SECOND).await,
            Outcome::Failure("HTTP probe failed with statuscode: 503".into())
        );
        assert_eq!(http_get(&client, &t, SECOND).await, Outcome::Success);
    }

    #[tokio::test]
    async fn same_host_redirects_are_followed() {
        let client = http_client().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            for response in [
                "HTTP/1.1 301 Moved\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n",
                "HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n",
            ] {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 2048];
                let _ = stream.read(&mut buf).await;
                let _ = stream.write_all(response.as_bytes()).await;
            }
        });
        assert_eq!(
            http_get(&client, &target("http", port, "/"), SECOND).await,
            Outcome::Failure("HTTP probe failed with statuscode: 500".into())
        );
    }

    #[tokio::test]
    async fn https_probes_skip_certificate_checks() {
        install_crypto_provider();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["somewhere.invalid".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(stream).await.unwrap();
            let mut buf = [0u8; 2048];
            let _ = tls.read(&mut buf).await;
            let _ = tls
                .write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                .await;
            let _ = tls.shutdown().await;
        });
        let client = http_client().unwrap();
        assert_eq!(
            http_get(&client, &target("https", port, "/"), SECOND).await,
            Outcome::Success
        );
    }

    #[tokio::test]
    async fn unreachable_and_slow_servers_fail_with_kubelets_words() {
        let client = http_client().unwrap();
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let Outcome::Failure(refused) =
            http_get(&client, &target("http", closed, "/x"), SECOND).await
        else {
            panic!("a closed port succeeded");
        };
        assert!(
            refused.starts_with(&format!("Get \"http://127.0.0.1:{closed}/x\": ")),
            "{refused}"
        );
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        let Outcome::Failure(slow) = http_get(
            &client,
            &target("http", port, "/"),
            Duration::from_millis(300),
        )
        .await
        else {
            panic!("a silent server succeeded");
        };
        assert!(slow.contains("context deadline exceeded"), "{slow}");
        drop(silent);
        assert_eq!(
            tcp_connect("127.0.0.1", port, SECOND).await,
            Outcome::Failure(format!(
                "dial tcp 127.0.0.1:{port}: Connection refused (os error 111)"
            ))
        );
    }

    #[tokio::test]
    async fn grpc_health_checks_against_a_real_server() {
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("ready", tonic_health::ServingStatus::Serving)
            .await;
        reporter
            .set_service_status("draining", tonic_health::ServingStatus::NotServing)
            .await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        assert_eq!(
            grpc_check("127.0.0.1", port, "ready", SECOND).await,
            Outcome::Success
        );
        assert_eq!(
            grpc_check("127.0.0.1", port, "draining", SECOND).await,
            Outcome::Failure("service unhealthy (responded with \"NOT_SERVING\")".into())
        );
        let Outcome::Failure(unknown) = grpc_check("127.0.0.1", port, "nope", SECOND).await else {
            panic!("an unknown service succeeded");
        };
        assert!(
            unknown.starts_with("error: health rpc probe failed"),
            "{unknown}"
        );
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let Outcome::Failure(refused) = grpc_check("127.0.0.1", closed, "", SECOND).await else {
            panic!("a closed port succeeded");
        };
        assert!(
            refused.starts_with(&format!(
                "timeout: failed to connect service \"127.0.0.1:{closed}\" within 1s"
            )),
            "{refused}"
        );
    }
}
