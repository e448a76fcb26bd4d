//! Leader election through a coordination.k8s.io Lease, as client-go's leaderelection with
//! the `leases` lock: several apiserver-lite instances over one etcd run one scheduler (lease
//! `kube-system/kube-scheduler`) and one set of controllers (`kube-controller-manager`).
//!
//! A candidate takes the lease when it is free (no holder) or when its record has not changed
//! for `leaseDurationSeconds` as this candidate observed it (its own clock, never the
//! timestamps written by others), renews it every retry period while leading, and stops the
//! work it leads when it could not renew within the renew deadline or sees another holder.
//! On shutdown it releases the lease (empty holder) so another takes over at once. Writes
//! carry the resourceVersion read, so two candidates never both win. [`step`] is pure.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

/// Lease names and timings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The lease's name (`kube-controller-manager`, `kube-scheduler`).
    pub name: String,
    /// Its namespace (`kube-system`).
    pub namespace: String,
    /// This candidate.
    pub identity: String,
    /// How long a lease record stays valid without renewal.
    pub lease_duration: Duration,
    /// How long a leader keeps trying to renew before it stops leading.
    pub renew_deadline: Duration,
    /// Time between attempts.
    pub retry_period: Duration,
}

impl Settings {
    /// Upstream's defaults: 15 s lease, 10 s renew deadline, 2 s retry, in kube-system.
    pub fn new(name: &str, identity: &str) -> Self {
        Settings {
            name: name.into(),
            namespace: "kube-system".into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// What a candidate does with the lease record it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Take it (free or expired).
    Take,
    /// Renew it (ours).
    Renew,
    /// Leave it (someone else's, still valid).
    Wait,
}

/// The step for `me` given the lease's spec and whether its record is expired.
pub fn step(spec: Option<&LeaseSpec>, me: &str, expired: bool) -> Step {
    let holder = spec
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty());
    match holder {
        Some(h) if h == me => Step::Renew,
        Some(_) if !expired => Step::Wait,
        _ => Step::Take,
    }
}

/// The record as last seen, and when it was seen to change.
#[derive(Debug, Default)]
struct Observed {
    record: Option<(Option<String>, Option<String>)>,
    at: Option<Instant>,
}

/// One attempt: `Ok(true)` when this candidate holds the lease afterwards.
async fn try_acquire_or_renew(
    api: &Api<Lease>,
    settings: &Settings,
    observed: &mut Observed,
) -> Result<bool, kube::Error> {
    let now = MicroTime(jiff::Timestamp::now());
    let seconds = i32::try_from(settings.lease_duration.as_secs()).unwrap_or(15);
    let Some(lease) = api.get_opt(&settings.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(settings.name.clone()),
                namespace: Some(settings.namespace.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(settings.identity.clone()),
                lease_duration_seconds: Some(seconds),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let record = (
        spec.holder_identity.clone(),
        spec.renew_time.as_ref().map(|t| t.0.to_string()),
    );
    let seen_now = Instant::now();
    if observed.record.as_ref() != Some(&record) {
        observed.record = Some(record);
        observed.at = Some(seen_now);
    }
    let valid_for = Duration::from_secs(
        u64::try_from(spec.lease_duration_seconds.unwrap_or(seconds).max(1)).unwrap_or(15),
    );
    let expired = observed.at.is_none_or(|at| seen_now >= at + valid_for);
    let step = step(Some(&spec), &settings.identity, expired);
    if step == Step::Wait {
        return Ok(false);
    }
    let mut next = lease.clone();
    let mut new_spec = spec.clone();
    if step == Step::Take {
        // Another holder (or none) before: one more transition, as upstream counts them.
        new_spec.acquire_time = Some(now.clone());
        new_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    new_spec.holder_identity = Some(settings.identity.clone());
    new_spec.lease_duration_seconds = Some(seconds);
    new_spec.renew_time = Some(now);
    next.spec = Some(new_spec);
    match api
        .replace(&settings.name, &PostParams::default(), &next)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Gives the lease up (empty holder, 1 s duration) if this candidate holds it.
async fn release(api: &Api<Lease>, settings: &Settings) {
    let Ok(Some(mut lease)) = api.get_opt(&settings.name).await else {
        return;
    };
    let Some(spec) = lease.spec.as_mut() else {
        return;
    };
    if spec.holder_identity.as_deref() != Some(settings.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
    match api
        .replace(&settings.name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => tracing::info!(lease = %settings.name, "leadership released"),
        Err(error) => tracing::warn!(%error, lease = %settings.name, "releasing the lease"),
    }
}

/// Runs `work` while this candidate leads: waits to acquire the lease, starts `work` with a
/// shutdown receiver of its own, renews, and when leadership is lost stops `work` and
/// campaigns again. Returns (after releasing the lease) when `shutdown` turns true.
pub async fn run_elected<F, Fut>(
    client: kube::Client,
    settings: Settings,
    shutdown: watch::Receiver<bool>,
    work: F,
) where
    F: Fn(watch::Receiver<bool>) -> Fut + Send + Sync,
    Fut: Future<Output = ()> + Send + 'static,
{
    let api: Api<Lease> = Api::namespaced(client, &settings.namespace);
    let mut observed = Observed::default();
    let stopping = || *shutdown.borrow();
    let pause = |d: Duration| {
        let shutdown = shutdown.clone();
        async move {
            tokio::select! {
                () = tokio::time::sleep(d) => {}
                () = crate::controllers::shutdown_signal(shutdown) => {}
            }
        }
    };
    loop {
        // Campaign.
        loop {
            if stopping() {
                return;
            }
            match try_acquire_or_renew(&api, &settings, &mut observed).await {
                Ok(true) => break,
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, lease = %settings.name, "leader election"),
            }
            pause(settings.retry_period).await;
        }
        tracing::info!(lease = %settings.name, identity = %settings.identity, "became leader");
        let (term_tx, term_rx) = watch::channel(false);
        let task = tokio::spawn(work(term_rx));
        let mut renewed = Instant::now();
        let lost = loop {
            pause(settings.retry_period).await;
            if stopping() {
                break false;
            }
            match try_acquire_or_renew(&api, &settings, &mut observed).await {
                Ok(true) => renewed = Instant::now(),
                Ok(false) => break true,
                Err(error) => {
                    tracing::warn!(%error, lease = %settings.name, "renewing the lease");
                    if renewed.elapsed() >= settings.renew_deadline {
                        break true;
                    }
                }
            }
        };
        let _ = term_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        if !lost {
            release(&api, &settings).await;
            return;
        }
        tracing::warn!(lease = %settings.name, "leadership lost; stopped, campaigning again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(who: &str) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(who.into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_free_or_expired_lease_is_taken_a_valid_one_of_another_is_left() {
        assert_eq!(step(None, "me", false), Step::Take);
        assert_eq!(step(Some(&held_by("")), "me", false), Step::Take);
        assert_eq!(step(Some(&held_by("other")), "me", false), Step::Wait);
        assert_eq!(step(Some(&held_by("other")), "me", true), Step::Take);
        assert_eq!(step(Some(&held_by("me")), "me", false), Step::Renew);
        assert_eq!(step(Some(&held_by("me")), "me", true), Step::Renew);
    }

    #[test]
    fn defaults_are_upstreams() {
        let s = Settings::new("kube-scheduler", "host_1");
        assert_eq!(s.lease_duration, Duration::from_secs(15));
        assert_eq!(s.renew_deadline, Duration::from_secs(10));
        assert_eq!(s.retry_period, Duration::from_secs(2));
        assert_eq!(s.namespace, "kube-system");
    }
}
