//! The two small HTTP endpoints kube-proxy serves: `/healthz` (default :10256; 200 with
//! `lastUpdated`/`currentTime` JSON while syncs keep up, 503 when they are stale) and
//! `/metrics` (default 127.0.0.1:10249; Prometheus text).

use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::sync::Stats;

/// What the handlers read.
#[derive(Clone)]
pub struct Shared {
    /// Sync statistics.
    pub stats: Arc<Mutex<Stats>>,
    /// `--sync-period`.
    pub sync_period: Duration,
    /// How long pending changes or a missing resync may be late before /healthz fails.
    pub health_timeout: Duration,
}

fn rfc3339(t: std::time::SystemTime) -> String {
    jiff::Timestamp::try_from(t)
        .map(|ts| ts.to_string())
        .unwrap_or_default()
}

/// The answer to a request for `path`: status, content type, body.
pub fn respond(shared: &Shared, path: &str) -> (StatusCode, &'static str, String) {
    let Ok(stats) = shared.stats.lock() else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            "stats lock poisoned\n".into(),
        );
    };
    match path {
        "/healthz" | "/livez" => {
            let healthy = stats.healthy(
                tokio::time::Instant::now(),
                shared.sync_period,
                shared.health_timeout,
            );
            let body = serde_json::json!({
                "lastUpdated": stats.last_success.map(rfc3339).unwrap_or_default(),
                "currentTime": rfc3339(std::time::SystemTime::now()),
                "nodeEligible": true,
            })
            .to_string();
            let code = if healthy {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (code, "application/json", body)
        }
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            stats.prometheus(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "404 page not found\n".into(),
        ),
    }
}

/// Serves `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, shared: Shared, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let (code, ctype, body) = respond(&shared, req.uri().path());
                let mut resp = Response::new(Full::new(Bytes::from(body)));
                *resp.status_mut() = code;
                if let Ok(v) = ctype.parse() {
                    resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
                }
                async move { Ok::<_, Infallible>(resp) }
            });
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "http connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthz_is_503_before_the_first_sync_and_names_the_times() {
        let shared = Shared {
            stats: Arc::new(Mutex::new(Stats::default())),
            sync_period: Duration::from_secs(30),
            health_timeout: Duration::from_secs(60),
        };
        let (code, ctype, body) = respond(&shared, "/healthz");
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(ctype, "application/json");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["lastUpdated"], "");
        assert!(v["currentTime"].as_str().unwrap().ends_with('Z'));
        assert_eq!(respond(&shared, "/nope").0, StatusCode::NOT_FOUND);
        assert!(
            respond(&shared, "/metrics")
                .2
                .contains("# TYPE kubeproxy_sync_proxy_rules_duration_seconds histogram")
        );
    }
}
