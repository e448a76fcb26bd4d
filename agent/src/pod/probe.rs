//! Container probes as kubelet runs them: liveness, readiness and startup, each by exec (CRI
//! ExecSync), httpGet, tcpSocket or grpc (from the node, see [`super::netprobe`]), with
//! upstream's defaults (period 10 s, timeout 1 s, success threshold 1, failure threshold 3).
//! [`Tracker`] is the pure threshold bookkeeping; [`run`] is the loop of one probe of one
//! container instance, reporting changes to the pod worker.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::sync::mpsc;

use super::netprobe;
use crate::runtime::ContainerRuntime;

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// Restart the container when it fails.
    Liveness,
    /// Keep the container out of Service endpoints while it fails.
    Readiness,
    /// Hold the other probes until it succeeds; restart when it fails.
    Startup,
}

impl ProbeKind {
    /// The word upstream's events use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Liveness => "Liveness",
            Self::Readiness => "Readiness",
            Self::Startup => "Startup",
        }
    }

    /// The container's probe of this kind.
    pub fn of(self, container: &Container) -> Option<&Probe> {
        match self {
            Self::Liveness => container.liveness_probe.as_ref(),
            Self::Readiness => container.readiness_probe.as_ref(),
            Self::Startup => container.startup_probe.as_ref(),
        }
    }
}

/// One probe's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It passed.
    Success,
    /// It failed, with why.
    Failure(String),
}

/// What a probe runs against.
#[derive(Debug, Clone)]
pub struct Target {
    /// The container instance.
    pub container_id: String,
    /// Its spec (named ports).
    pub container: Container,
    /// The pod's IP (httpGet and tcpSocket default host).
    pub pod_ip: String,
}

/// Runs one probe attempt.
#[async_trait]
pub trait Prober: Send + Sync {
    /// Probes once.
    async fn probe(&self, probe: &Probe, target: &Target) -> Outcome;
}

/// The prober of a real node: exec through CRI; HTTP(S), TCP and gRPC from the node.
pub struct NodeProber {
    runtime: Arc<dyn ContainerRuntime>,
    http: reqwest::Client,
}

impl NodeProber {
    /// A prober using `runtime` for exec probes.
    pub fn new(runtime: Arc<dyn ContainerRuntime>) -> Result<Self, netprobe::ClientError> {
        Ok(NodeProber {
            runtime,
            http: netprobe::http_client()?,
        })
    }
}

/// The host a network handler addresses: its own `host`, else the pod's IP.
fn host_or_pod_ip(host: &Option<String>, target: &Target) -> String {
    host.clone()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| target.pod_ip.clone())
}

fn timeout_of(probe: &Probe) -> Duration {
    Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64)
}

fn port_of(port: &IntOrString, container: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p).map_err(|_| format!("invalid port {p}")),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| {
                format!(
                    "couldn't find port {name:?} in container {:?}",
                    container.name
                )
            }),
    }
}

#[async_trait]
impl Prober for NodeProber {
    async fn probe(&self, probe: &Probe, target: &Target) -> Outcome {
        let timeout = timeout_of(probe);
        if let Some(exec) = &probe.exec {
            let command = exec.command.clone().unwrap_or_default();
            return match self
                .runtime
                .exec_sync(&target.container_id, &command, timeout)
                .await
            {
                Ok(r) if r.exit_code == 0 => Outcome::Success,
                Ok(r) => {
                    let output = String::from_utf8_lossy(if r.stdout.is_empty() {
                        &r.stderr
                    } else {
                        &r.stdout
                    })
                    .trim()
                    .to_string();
                    Outcome::Failure(if output.is_empty() {
                        format!("command {command:?} exited with {}", r.exit_code)
                    } else {
                        output
                    })
                }
                Err(e) if e.code() == Some(tonic::Code::DeadlineExceeded) => {
                    Outcome::Failure(format!("command timed out after {}s", timeout.as_secs()))
                }
                Err(e) => Outcome::Failure(e.message()),
            };
        }
        if let Some(http) = &probe.http_get {
            let port = match port_of(&http.port, &target.container) {
                Ok(p) => p,
                Err(e) => return Outcome::Failure(e),
            };
            let path = http
                .path
                .clone()
                .filter(|p| !p.is_empty())
                .unwrap_or_default();
            let http_target = netprobe::HttpTarget {
                scheme: http
                    .scheme
                    .as_deref()
                    .unwrap_or("HTTP")
                    .to_ascii_lowercase(),
                host: host_or_pod_ip(&http.host, target),
                port,
                path: if path.starts_with('/') {
                    path
                } else {
                    format!("/{path}")
                },
                headers: http
                    .http_headers
                    .iter()
                    .flatten()
                    .map(|h| (h.name.clone(), h.value.clone()))
                    .collect(),
            };
            return netprobe::http_get(&self.http, &http_target, timeout).await;
        }
        if let Some(tcp) = &probe.tcp_socket {
            let port = match port_of(&tcp.port, &target.container) {
                Ok(p) => p,
                Err(e) => return Outcome::Failure(e),
            };
            return netprobe::tcp_connect(&host_or_pod_ip(&tcp.host, target), port, timeout).await;
        }
        if let Some(grpc) = &probe.grpc {
            let Ok(port) = u16::try_from(grpc.port) else {
                return Outcome::Failure(format!("invalid gRPC port {}", grpc.port));
            };
            let service = grpc.service.as_deref().unwrap_or_default();
            return netprobe::grpc_check(&target.pod_ip, port, service, timeout).await;
        }
        Outcome::Failure("the probe names no handler".into())
    }
}

/// Threshold bookkeeping of one probe: the result flips after `successThreshold` successes
/// or `failureThreshold` failures in a row.
#[derive(Debug, Clone)]
pub struct Tracker {
    success_threshold: i32,
    failure_threshold: i32,
    successes: i32,
    failures: i32,
    /// The current result; `None` before the first flip.
    pub result: Option<bool>,
}

impl Tracker {
    /// A tracker for `probe`.
    pub fn new(probe: &Probe) -> Self {
        Tracker {
            success_threshold: probe.success_threshold.unwrap_or(1).max(1),
            failure_threshold: probe.failure_threshold.unwrap_or(3).max(1),
            successes: 0,
            failures: 0,
            result: None,
        }
    }

    /// Records an outcome; returns the new result when it changed.
    pub fn record(&mut self, outcome: &Outcome) -> Option<bool> {
        let next = match outcome {
            Outcome::Success => {
                self.failures = 0;
                self.successes += 1;
                (self.successes >= self.success_threshold).then_some(true)
            }
            Outcome::Failure(_) => {
                self.successes = 0;
                self.failures += 1;
                (self.failures >= self.failure_threshold).then_some(false)
            }
        };
        match next {
            Some(r) if self.result != Some(r) => {
                self.result = Some(r);
                Some(r)
            }
            _ => None,
        }
    }
}

/// What a probe loop reports to its worker.
#[derive(Debug, Clone)]
pub struct Report {
    /// The container instance.
    pub container_id: String,
    /// The container name.
    pub name: String,
    /// Which probe.
    pub kind: ProbeKind,
    /// The outcome of this attempt.
    pub outcome: Outcome,
    /// The result, when it changed with this attempt.
    pub changed: Option<bool>,
}

/// Probes `target` until the receiver is gone or `gate` says to stop waiting: the startup
/// gate holds liveness and readiness until the startup probe succeeded.
pub async fn run(
    prober: Arc<dyn Prober>,
    kind: ProbeKind,
    probe: Probe,
    target: Target,
    mut started: tokio::sync::watch::Receiver<bool>,
    reports: mpsc::Sender<Report>,
) {
    let period = Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64);
    let delay = Duration::from_secs(probe.initial_delay_seconds.unwrap_or(0).max(0) as u64);
    if kind != ProbeKind::Startup {
        while !*started.borrow() {
            if started.changed().await.is_err() {
                return;
            }
        }
    }
    tokio::time::sleep(delay).await;
    let mut tracker = Tracker::new(&probe);
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let outcome = prober.probe(&probe, &target).await;
        let changed = tracker.record(&outcome);
        let report = Report {
            container_id: target.container_id.clone(),
            name: target.container.name.clone(),
            kind,
            outcome,
            changed,
        };
        let failed = matches!(report.outcome, Outcome::Failure(_));
        if (failed || report.changed.is_some()) && reports.send(report).await.is_err() {
            return;
        }
        if kind == ProbeKind::Startup && tracker.result == Some(true) {
            return;
        }
    }
}

/// Runs a lifecycle hook (postStart, preStop): exec, httpGet and tcpSocket as probes are run,
/// sleep by waiting; bounded by `timeout`.
pub async fn run_hook(
    prober: &dyn Prober,
    handler: &k8s_openapi::api::core::v1::LifecycleHandler,
    target: &Target,
    timeout: Duration,
) -> Outcome {
    if let Some(sleep) = &handler.sleep {
        let wanted = Duration::from_secs(sleep.seconds.max(0) as u64);
        tokio::time::sleep(wanted.min(timeout)).await;
        return Outcome::Success;
    }
    let as_probe = Probe {
        exec: handler.exec.clone(),
        http_get: handler.http_get.clone(),
        tcp_socket: handler.tcp_socket.clone(),
        timeout_seconds: Some(timeout.as_secs().clamp(1, i32::MAX as u64) as i32),
        ..Default::default()
    };
    match tokio::time::timeout(timeout, prober.probe(&as_probe, target)).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::Failure(format!(
            "the hook did not finish within {}s",
            timeout.as_secs()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_flip_the_result() {
        let probe = Probe {
            success_threshold: Some(2),
            failure_threshold: Some(2),
            ..Default::default()
        };
        let mut t = Tracker::new(&probe);
        let fail = Outcome::Failure("x".into());
        assert_eq!(t.record(&Outcome::Success), None);
        assert_eq!(t.record(&Outcome::Success), Some(true));
        assert_eq!(t.record(&fail), None);
        assert_eq!(
            t.record(&Outcome::Success),
            None,
            "a success resets the failures"
        );
        assert_eq!(t.record(&fail), None);
        assert_eq!(t.record(&fail), Some(false));
        assert_eq!(t.record(&fail), None, "no change, no report of a change");
    }

    #[test]
    fn defaults_are_upstreams() {
        let t = Tracker::new(&Probe::default());
        assert_eq!((t.success_threshold, t.failure_threshold), (1, 3));
        assert_eq!(timeout_of(&Probe::default()), Duration::from_secs(1));
    }

    #[test]
    fn named_ports_resolve_from_the_container() {
        let c: Container = serde_json::from_value(
            serde_json::json!({"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}),
        )
        .unwrap();
        assert_eq!(port_of(&IntOrString::String("http".into()), &c), Ok(8080));
        assert!(
            port_of(&IntOrString::String("nope".into()), &c)
                .unwrap_err()
                .contains("couldn't find port")
        );
    }
}
