//! When to sync and what a sync does. [`State`] is the explicit state machine of the sync
//! loop (a pure `next` decides: full sync first and after any failure, with backoff; deltas
//! for changes, no closer together than `--min-sync-period`; a full resync every
//! `--sync-period`). [`Syncer`] turns the model into a plan, applies it through the [`Nft`]
//! trait and flushes stale UDP conntrack entries; [`Stats`] keeps what /healthz and /metrics
//! report.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::apply::{ApplyError, Conntrack, Iptables, Nft, stale_udp_flows};
use crate::model::{ServicePort, ServicePortName};
use crate::rules::Config;
use crate::rules::nft::{Applied, Counts, Plan, delta, full_sync};

/// Which kind of sync to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Rewrite the whole table and delete what is stale.
    Full,
    /// Only what changed since the last applied state.
    Delta,
}

/// The loop's periods.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// `--min-sync-period`: the least time between two syncs.
    pub min_sync: Duration,
    /// `--sync-period`: how often a full resync runs.
    pub sync_period: Duration,
}

/// The sync loop's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Nothing applied yet, or the last attempt failed: the next sync is a full one.
    NeedFull {
        /// Failed attempts in a row.
        failures: u32,
        /// When the last attempt ran.
        last_attempt: Option<Instant>,
    },
    /// The rules match the API state as of the last sync.
    InSync {
        /// When the last full sync ran.
        last_full: Instant,
        /// When the last sync of any kind ran.
        last_sync: Instant,
        /// Since when changes wait to be applied.
        dirty_since: Option<Instant>,
    },
}

/// What the loop does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Sync now.
    Sync(Kind),
    /// Sleep until then (or until a change arrives).
    Wait(Instant),
}

impl State {
    /// The start state.
    pub fn start() -> State {
        State::NeedFull {
            failures: 0,
            last_attempt: None,
        }
    }

    /// Decides what to do at `now`.
    pub fn next(&self, now: Instant, t: &Timing) -> Next {
        match *self {
            State::NeedFull {
                last_attempt: None, ..
            } => Next::Sync(Kind::Full),
            State::NeedFull {
                failures,
                last_attempt: Some(at),
            } => {
                let backoff = t
                    .min_sync
                    .max(Duration::from_millis(200))
                    .saturating_mul(1 << failures.min(8))
                    .min(t.sync_period.max(t.min_sync));
                if now >= at + backoff {
                    Next::Sync(Kind::Full)
                } else {
                    Next::Wait(at + backoff)
                }
            }
            State::InSync {
                last_full,
                last_sync,
                dirty_since,
            } => {
                let periodic = last_full + t.sync_period;
                if now >= periodic {
                    return Next::Sync(Kind::Full);
                }
                match dirty_since {
                    Some(_) if now >= last_sync + t.min_sync => Next::Sync(Kind::Delta),
                    Some(_) => Next::Wait((last_sync + t.min_sync).min(periodic)),
                    None => Next::Wait(periodic),
                }
            }
        }
    }

    /// An API change arrived.
    pub fn changed(self, now: Instant) -> State {
        match self {
            State::InSync {
                last_full,
                last_sync,
                dirty_since: None,
            } => State::InSync {
                last_full,
                last_sync,
                dirty_since: Some(now),
            },
            other => other,
        }
    }

    /// A sync of `kind` finished at `now`.
    pub fn finished(self, kind: Kind, now: Instant, ok: bool) -> State {
        match (self, ok) {
            (State::NeedFull { failures, .. }, false) => State::NeedFull {
                failures: failures.saturating_add(1),
                last_attempt: Some(now),
            },
            (State::InSync { .. }, false) => State::NeedFull {
                failures: 1,
                last_attempt: Some(now),
            },
            (State::InSync { last_full, .. }, true) if kind == Kind::Delta => State::InSync {
                last_full,
                last_sync: now,
                dirty_since: None,
            },
            (_, true) => State::InSync {
                last_full: now,
                last_sync: now,
                dirty_since: None,
            },
        }
    }

    /// Since when changes wait (for /healthz).
    pub fn pending_since(&self) -> Option<Instant> {
        match *self {
            State::InSync { dirty_since, .. } => dirty_since,
            State::NeedFull { .. } => None,
        }
    }
}

/// A sync that failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Reading our table back failed.
    #[error("reading the nftables state: {0}")]
    Read(#[source] ApplyError),
    /// The transaction was refused; nothing changed.
    #[error("applying the {kind:?} sync ({bytes} bytes): {source}")]
    Apply {
        /// Full or delta.
        kind: Kind,
        /// Script size.
        bytes: usize,
        /// Cause.
        #[source]
        source: ApplyError,
    },
}

/// What one sync did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Full or delta.
    pub kind: Kind,
    /// Script size in bytes (0: nothing to apply).
    pub bytes: usize,
    /// Service ports whose model changed since the last sync.
    pub changed: usize,
    /// Conntrack deletions run.
    pub flows_flushed: usize,
    /// Sizes after the sync.
    pub counts: Counts,
}

/// A rules backend: plans against what it applied last, applies, and remembers it only when
/// the kernel took it.
pub trait Backend: Send {
    /// Rewrites everything of ours; returns the script size.
    fn full(&mut self, ports: &BTreeMap<ServicePortName, ServicePort>) -> Result<usize, SyncError>;
    /// Applies what changed since the last success; returns the script size (0: nothing).
    fn delta(&mut self, ports: &BTreeMap<ServicePortName, ServicePort>)
    -> Result<usize, SyncError>;
    /// Sizes of the applied state.
    fn counts(&self) -> Counts;
}

/// The nftables backend: [`crate::rules::nft`] through the [`Nft`] trait.
pub struct NftBackend {
    cfg: Config,
    nft: Box<dyn Nft>,
    applied: Applied,
}

impl NftBackend {
    /// A backend that has applied nothing yet.
    pub fn new(cfg: Config, nft: Box<dyn Nft>) -> NftBackend {
        NftBackend {
            cfg,
            nft,
            applied: Applied::default(),
        }
    }

    fn apply(&mut self, kind: Kind, plan: Plan) -> Result<usize, SyncError> {
        let bytes = plan.script.len();
        if !plan.is_empty() {
            self.nft
                .apply(&plan.script)
                .map_err(|source| SyncError::Apply {
                    kind,
                    bytes,
                    source,
                })?;
        }
        self.applied.commit(plan);
        Ok(bytes)
    }
}

impl Backend for NftBackend {
    fn full(&mut self, ports: &BTreeMap<ServicePortName, ServicePort>) -> Result<usize, SyncError> {
        let existing = self.nft.existing().map_err(SyncError::Read)?;
        let plan = full_sync(&self.cfg, ports, &existing);
        self.apply(Kind::Full, plan)
    }

    fn delta(
        &mut self,
        ports: &BTreeMap<ServicePortName, ServicePort>,
    ) -> Result<usize, SyncError> {
        let plan = delta(&self.cfg, &self.applied, ports);
        self.apply(Kind::Delta, plan)
    }

    fn counts(&self) -> Counts {
        self.applied.counts()
    }
}

/// The iptables backend: [`crate::rules::iptables`] through the [`Iptables`] trait.
pub struct IptablesBackend {
    cfg: Config,
    ipt: Box<dyn Iptables>,
    applied: crate::rules::iptables::Applied,
}

impl IptablesBackend {
    /// A backend that has applied nothing yet.
    pub fn new(cfg: Config, ipt: Box<dyn Iptables>) -> IptablesBackend {
        IptablesBackend {
            cfg,
            ipt,
            applied: Default::default(),
        }
    }

    fn apply(
        &mut self,
        kind: Kind,
        plan: crate::rules::iptables::Plan,
    ) -> Result<usize, SyncError> {
        let bytes = plan.script.len();
        if !plan.script.is_empty() {
            self.ipt
                .restore(&plan.script)
                .map_err(|source| SyncError::Apply {
                    kind,
                    bytes,
                    source,
                })?;
        }
        self.applied.commit(plan);
        Ok(bytes)
    }
}

impl Backend for IptablesBackend {
    fn full(&mut self, ports: &BTreeMap<ServicePortName, ServicePort>) -> Result<usize, SyncError> {
        use crate::rules::iptables::{JUMPS, full_sync, parse_chains};
        let existing = parse_chains(&self.ipt.save("nat").map_err(SyncError::Read)?);
        let plan = full_sync(&self.cfg, ports, &existing);
        let bytes = self.apply(Kind::Full, plan)?;
        for (table, chain, target, matches) in JUMPS {
            self.ipt
                .ensure_jump(table, chain, target, matches)
                .map_err(|source| SyncError::Apply {
                    kind: Kind::Full,
                    bytes,
                    source,
                })?;
        }
        Ok(bytes)
    }

    fn delta(
        &mut self,
        ports: &BTreeMap<ServicePortName, ServicePort>,
    ) -> Result<usize, SyncError> {
        let plan = crate::rules::iptables::delta(&self.cfg, &self.applied, ports);
        self.apply(Kind::Delta, plan)
    }

    fn counts(&self) -> Counts {
        self.applied.counts()
    }
}

/// Runs syncs through a backend and flushes stale UDP conntrack entries after each.
pub struct Syncer {
    backend: Box<dyn Backend>,
    conntrack: Box<dyn Conntrack>,
    /// The model as of the last successful sync (None before the first).
    model: Option<BTreeMap<ServicePortName, ServicePort>>,
}

impl Syncer {
    /// A syncer that has applied nothing yet.
    pub fn new(backend: Box<dyn Backend>, conntrack: Box<dyn Conntrack>) -> Syncer {
        Syncer {
            backend,
            conntrack,
            model: None,
        }
    }

    /// Sizes of the applied state.
    pub fn counts(&self) -> Counts {
        self.backend.counts()
    }

    /// Runs one sync against `ports`.
    pub fn sync(
        &mut self,
        kind: Kind,
        ports: BTreeMap<ServicePortName, ServicePort>,
    ) -> Result<Report, SyncError> {
        let bytes = match kind {
            Kind::Full => self.backend.full(&ports)?,
            Kind::Delta => self.backend.delta(&ports)?,
        };
        // Flows are only judged against a state we applied ourselves: after a restart every
        // port looks new, and flushing every UDP flow then would hurt more than help.
        let mut flows = Vec::new();
        let mut changed = ports.len();
        if let Some(old) = &self.model {
            changed = 0;
            let names: std::collections::BTreeSet<&ServicePortName> =
                old.keys().chain(ports.keys()).collect();
            for name in names {
                let (o, n) = (old.get(name), ports.get(name));
                if o != n {
                    changed += 1;
                    flows.extend(stale_udp_flows(o, n));
                }
            }
        }
        self.model = Some(ports);
        for flow in &flows {
            if let Err(error) = self.conntrack.delete(flow) {
                tracing::warn!(?flow, %error, "conntrack flush failed");
            }
        }
        Ok(Report {
            kind,
            bytes,
            changed,
            flows_flushed: flows.len(),
            counts: self.backend.counts(),
        })
    }
}

/// Upper bounds (seconds) of the sync duration histogram.
pub const BUCKETS: [f64; 12] = [
    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// What /healthz and /metrics report.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Wall time of the last successful sync.
    pub last_success: Option<SystemTime>,
    /// Monotonic time of the last successful sync.
    pub last_success_at: Option<Instant>,
    /// Since when changes wait to be applied.
    pub pending_since: Option<Instant>,
    /// Histogram bucket counts (cumulative on output).
    pub buckets: [u64; BUCKETS.len()],
    /// Sum of sync durations.
    pub duration_sum: f64,
    /// Number of syncs timed.
    pub duration_count: u64,
    /// Full syncs done.
    pub full_syncs: u64,
    /// Delta syncs done.
    pub delta_syncs: u64,
    /// Failed syncs.
    pub failures: u64,
    /// Sizes after the last sync.
    pub counts: Counts,
    /// Conntrack deletions run.
    pub flows_flushed: u64,
}

impl Stats {
    /// Records a sync.
    pub fn record(&mut self, result: &Result<Report, SyncError>, took: Duration, now: Instant) {
        let secs = took.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i] += 1;
        }
        self.duration_sum += secs;
        self.duration_count += 1;
        match result {
            Ok(r) => {
                self.last_success = Some(SystemTime::now());
                self.last_success_at = Some(now);
                self.counts = r.counts;
                self.flows_flushed += r.flows_flushed as u64;
                match r.kind {
                    Kind::Full => self.full_syncs += 1,
                    Kind::Delta => self.delta_syncs += 1,
                }
            }
            Err(_) => self.failures += 1,
        }
    }

    /// Healthy as upstream: a sync has succeeded, no change waits longer than `timeout`,
    /// and the last success is not older than the sync period plus `timeout`.
    pub fn healthy(&self, now: Instant, sync_period: Duration, timeout: Duration) -> bool {
        let Some(at) = self.last_success_at else {
            return false;
        };
        let pending_ok = self
            .pending_since
            .is_none_or(|p| now.saturating_duration_since(p) <= timeout);
        pending_ok && now.saturating_duration_since(at) <= sync_period + timeout
    }

    /// Prometheus text exposition.
    pub fn prometheus(&self) -> String {
        let mut s = String::new();
        let name = "kubeproxy_sync_proxy_rules_duration_seconds";
        s.push_str(&format!(
            "# HELP {name} SyncProxyRules latency in seconds\n# TYPE {name} histogram\n"
        ));
        let mut cumulative = 0;
        for (b, n) in BUCKETS.iter().zip(self.buckets) {
            cumulative += n;
            s.push_str(&format!("{name}_bucket{{le=\"{b}\"}} {cumulative}\n"));
        }
        s.push_str(&format!(
            "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}\n",
            self.duration_count, self.duration_sum, self.duration_count
        ));
        let last = self
            .last_success
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let gauges: [(&str, &str, &str, String); 8] = [
            (
                "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
                "gauge",
                "The last time proxy rules were successfully synced",
                last.to_string(),
            ),
            (
                "kubeproxy_sync_full_proxy_rules_total",
                "counter",
                "Full syncs",
                self.full_syncs.to_string(),
            ),
            (
                "kubeproxy_sync_partial_proxy_rules_total",
                "counter",
                "Delta syncs",
                self.delta_syncs.to_string(),
            ),
            (
                "kubeproxy_sync_proxy_rules_failures_total",
                "counter",
                "Failed syncs",
                self.failures.to_string(),
            ),
            (
                "kubeproxy_sync_proxy_rules_services",
                "gauge",
                "Service ports programmed",
                self.counts.services.to_string(),
            ),
            (
                "kubeproxy_sync_proxy_rules_endpoints",
                "gauge",
                "Endpoints programmed over all service ports",
                self.counts.endpoints.to_string(),
            ),
            (
                "kubeproxy_sync_proxy_rules_nftables_chains",
                "gauge",
                "Per-service and per-endpoint chains",
                self.counts.chains.to_string(),
            ),
            (
                "kubeproxy_sync_proxy_rules_nftables_rules",
                "gauge",
                "Rules in those chains",
                self.counts.rules.to_string(),
            ),
        ];
        for (n, t, help, v) in gauges {
            s.push_str(&format!("# HELP {n} {help}\n# TYPE {n} {t}\n{n} {v}\n"));
        }
        let n = "kubeproxy_conntrack_udp_flushes_total";
        s.push_str(&format!(
            "# HELP {n} conntrack deletions for UDP endpoints that went away\n# TYPE {n} counter\n{n} {}\n",
            self.flows_flushed
        ));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::UdpFlow;
    use crate::model::{Endpoint, Protocol};
    use crate::rules::nft::Existing;
    use std::sync::{Arc, Mutex};

    fn t() -> Timing {
        Timing {
            min_sync: Duration::from_secs(1),
            sync_period: Duration::from_secs(30),
        }
    }

    #[test]
    fn the_first_sync_is_full_and_changes_wait_for_the_min_sync_period() {
        let t0 = Instant::now();
        let s = State::start();
        assert_eq!(s.next(t0, &t()), Next::Sync(Kind::Full));
        let s = s.finished(Kind::Full, t0, true);
        assert_eq!(s.next(t0, &t()), Next::Wait(t0 + Duration::from_secs(30)));
        let s = s.changed(t0 + Duration::from_millis(100));
        assert_eq!(
            s.next(t0 + Duration::from_millis(100), &t()),
            Next::Wait(t0 + Duration::from_secs(1))
        );
        assert_eq!(
            s.next(t0 + Duration::from_secs(1), &t()),
            Next::Sync(Kind::Delta)
        );
        let s = s.finished(Kind::Delta, t0 + Duration::from_secs(1), true);
        assert_eq!(s.pending_since(), None);
        assert_eq!(
            s.next(t0 + Duration::from_secs(30), &t()),
            Next::Sync(Kind::Full),
            "periodic resync"
        );
    }

    #[test]
    fn a_failed_sync_is_retried_as_a_full_sync_with_backoff() {
        let t0 = Instant::now();
        let s = State::start().finished(Kind::Full, t0, true).changed(t0);
        let s = s.finished(Kind::Delta, t0, false);
        assert_eq!(s.next(t0, &t()), Next::Wait(t0 + Duration::from_secs(2)));
        assert_eq!(
            s.next(t0 + Duration::from_secs(2), &t()),
            Next::Sync(Kind::Full)
        );
        let s = s
            .finished(Kind::Full, t0, false)
            .finished(Kind::Full, t0, false);
        assert_eq!(s.next(t0, &t()), Next::Wait(t0 + Duration::from_secs(8)));
        let mut s = s;
        for _ in 0..20 {
            s = s.finished(Kind::Full, t0, false);
        }
        assert_eq!(
            s.next(t0, &t()),
            Next::Wait(t0 + Duration::from_secs(30)),
            "capped"
        );
        // Changes during NeedFull do not turn it into a delta.
        assert_eq!(s.changed(t0), s);
    }

    #[derive(Default, Clone)]
    struct Recorder {
        scripts: Arc<Mutex<Vec<String>>>,
        flows: Arc<Mutex<Vec<UdpFlow>>>,
        fail: Arc<Mutex<bool>>,
    }

    impl Nft for Recorder {
        fn apply(&self, script: &str) -> Result<(), ApplyError> {
            if *self.fail.lock().unwrap() {
                return Err(ApplyError::Spawn {
                    program: "nft".into(),
                    source: std::io::Error::other("refused"),
                });
            }
            self.scripts.lock().unwrap().push(script.into());
            Ok(())
        }
        fn existing(&self) -> Result<Existing, ApplyError> {
            Ok(Existing::default())
        }
        fn delete_table(&self) -> Result<bool, ApplyError> {
            panic!("a sync must never delete the table")
        }
    }

    impl Conntrack for Recorder {
        fn delete(&self, flow: &UdpFlow) -> Result<(), ApplyError> {
            self.flows.lock().unwrap().push(*flow);
            Ok(())
        }
    }

    fn dns(eps: &[&str]) -> BTreeMap<ServicePortName, ServicePort> {
        let eps: Vec<Endpoint> = eps
            .iter()
            .map(|ip| Endpoint {
                ip: ip.parse().unwrap(),
                port: 53,
                local: false,
            })
            .collect();
        let name = ServicePortName {
            namespace: "kube-system".into(),
            name: "dns".into(),
            port: "dns".into(),
            protocol: Protocol::Udp,
        };
        let p = ServicePort {
            name: name.clone(),
            cluster_ips: vec!["10.96.0.10".parse().unwrap()],
            port: 53,
            node_port: None,
            external_ips: vec![],
            lb_ips: vec![],
            affinity_seconds: None,
            external_local: false,
            internal_local: false,
            cluster_endpoints: eps.clone(),
            external_endpoints: eps,
        };
        BTreeMap::from([(name, p)])
    }

    #[test]
    fn a_udp_endpoint_that_goes_away_has_its_flows_flushed_after_the_rules_change() {
        let rec = Recorder::default();
        let mut syncer = Syncer::new(
            Box::new(NftBackend::new(Config::default(), Box::new(rec.clone()))),
            Box::new(rec.clone()),
        );
        let r = syncer
            .sync(Kind::Full, dns(&["10.244.0.2", "10.244.0.3"]))
            .unwrap();
        assert_eq!(r.flows_flushed, 0, "nothing flushed on the first sync");
        let r = syncer.sync(Kind::Delta, dns(&["10.244.0.3"])).unwrap();
        assert_eq!(r.changed, 1);
        assert_eq!(
            *rec.flows.lock().unwrap(),
            vec![UdpFlow {
                dst: Some("10.96.0.10".parse().unwrap()),
                port: 53,
                endpoint: Some("10.244.0.2".parse().unwrap())
            }]
        );
        assert_eq!(rec.scripts.lock().unwrap().len(), 2);
        let r = syncer.sync(Kind::Delta, dns(&["10.244.0.3"])).unwrap();
        assert_eq!(r.bytes, 0, "no change, nothing applied");
        assert_eq!(rec.scripts.lock().unwrap().len(), 2);
    }

    #[test]
    fn a_refused_transaction_leaves_the_applied_state_unchanged() {
        let rec = Recorder::default();
        let mut syncer = Syncer::new(
            Box::new(NftBackend::new(Config::default(), Box::new(rec.clone()))),
            Box::new(rec.clone()),
        );
        syncer.sync(Kind::Full, dns(&["10.244.0.2"])).unwrap();
        *rec.fail.lock().unwrap() = true;
        assert!(syncer.sync(Kind::Delta, dns(&["10.244.0.3"])).is_err());
        *rec.fail.lock().unwrap() = false;
        let r = syncer.sync(Kind::Delta, dns(&["10.244.0.3"])).unwrap();
        assert_eq!(r.changed, 1, "the change is still pending");
        assert!(
            rec.flows
                .lock()
                .unwrap()
                .iter()
                .all(|f| f.endpoint == Some("10.244.0.2".parse().unwrap()))
        );
    }

    #[test]
    fn health_follows_upstream_staleness_rules_and_metrics_are_prometheus_text() {
        let t0 = Instant::now();
        let mut stats = Stats::default();
        let period = Duration::from_secs(30);
        let timeout = Duration::from_secs(60);
        assert!(!stats.healthy(t0, period, timeout), "never synced");
        let report = Report {
            kind: Kind::Full,
            bytes: 10,
            changed: 1,
            flows_flushed: 0,
            counts: Counts {
                services: 3,
                endpoints: 5,
                chains: 8,
                rules: 20,
            },
        };
        stats.record(&Ok(report), Duration::from_millis(3), t0);
        assert!(stats.healthy(t0 + Duration::from_secs(10), period, timeout));
        assert!(!stats.healthy(t0 + Duration::from_secs(100), period, timeout));
        stats.pending_since = Some(t0);
        assert!(!stats.healthy(t0 + Duration::from_secs(61), period, timeout));
        let text = stats.prometheus();
        assert!(
            text.contains("kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.005\"} 1")
        );
        assert!(
            text.contains("kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.002\"} 0")
        );
        assert!(text.contains("kubeproxy_sync_proxy_rules_duration_seconds_count 1"));
        assert!(text.contains("kubeproxy_sync_proxy_rules_services 3"));
        assert!(text.contains("kubeproxy_sync_proxy_rules_nftables_rules 20"));
    }
}
