//! The Deployment controller's arithmetic, with no I/O: the pod template hash, surge and
//! unavailability bounds, how far a rolling update may scale the new ReplicaSet up and the old
//! ones down, proportional scaling of several ReplicaSets, and the rules of the Progressing
//! and Available conditions. Behaviour follows upstream's deployment controller.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The label that ties a ReplicaSet and its pods to one template of a Deployment.
pub const HASH_LABEL: &str = "pod-template-hash";
/// The revision of a ReplicaSet (and of its Deployment: the newest).
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Earlier revisions a ReplicaSet had before a rollback made it current again.
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// `spec.replicas` of the Deployment when it last sized this ReplicaSet.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// `spec.replicas + maxSurge` of the Deployment when it last sized this ReplicaSet.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

/// Deployment annotations that are not copied onto its ReplicaSets.
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

/// Condition types and reasons, as upstream names them.
pub mod reason {
    /// Condition type: the rollout moves, is done, or is stuck.
    pub const PROGRESSING: &str = "Progressing";
    /// Condition type: enough pods are available.
    pub const AVAILABLE: &str = "Available";
    /// A new ReplicaSet was created.
    pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
    /// The new ReplicaSet already existed.
    pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
    /// Pods of the new ReplicaSet went up or old ones went down.
    pub const RS_UPDATED: &str = "ReplicaSetUpdated";
    /// The rollout is complete.
    pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
    /// No progress within `progressDeadlineSeconds`.
    pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
    /// `spec.paused` was set.
    pub const PAUSED: &str = "DeploymentPaused";
    /// `spec.paused` was cleared.
    pub const RESUMED: &str = "DeploymentResumed";
    /// At least `replicas - maxUnavailable` pods are available.
    pub const MIN_AVAILABLE: &str = "MinimumReplicasAvailable";
    /// Fewer than `replicas - maxUnavailable` pods are available.
    pub const MIN_UNAVAILABLE: &str = "MinimumReplicasUnavailable";
}

/// A rollout parameter the controller cannot use (validation normally rejects these).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value {value:?} for {field}: expected an integer or a percentage")]
pub struct BadIntOrPercent {
    /// The field.
    pub field: &'static str,
    /// The value.
    pub value: String,
}

/// An int-or-percentage of `total`; percentages round up or down.
pub fn scaled(
    value: &IntOrString,
    total: i32,
    round_up: bool,
    field: &'static str,
) -> Result<i32, BadIntOrPercent> {
    match value {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let bad = || BadIntOrPercent {
                field,
                value: s.clone(),
            };
            let pct: i64 = s
                .strip_suffix('%')
                .ok_or_else(bad)?
                .parse()
                .map_err(|_| bad())?;
            let product = pct * i64::from(total);
            let v = if round_up {
                (product + 99).div_euclid(100)
            } else {
                product.div_euclid(100)
            };
            i32::try_from(v).map_err(|_| bad())
        }
    }
}

/// `spec.replicas` (default 1).
pub fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn is_rolling(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        .is_none_or(|t| t == "RollingUpdate")
}

/// `(maxSurge, maxUnavailable)` resolved against `replicas`: surge rounds up, unavailability
/// down; when both come to 0, one pod may be unavailable, so a rollout can always move.
pub fn fenceposts(
    surge: Option<&IntOrString>,
    unavailable: Option<&IntOrString>,
    replicas: i32,
) -> Result<(i32, i32), BadIntOrPercent> {
    let quarter = IntOrString::String("25%".into());
    let s = scaled(surge.unwrap_or(&quarter), replicas, true, "maxSurge")?;
    let u = scaled(
        unavailable.unwrap_or(&quarter),
        replicas,
        false,
        "maxUnavailable",
    )?;
    Ok(if s == 0 && u == 0 { (0, 1) } else { (s, u) })
}

fn deployment_fenceposts(d: &Deployment) -> Result<(i32, i32), BadIntOrPercent> {
    let ru = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    fenceposts(
        ru.and_then(|r| r.max_surge.as_ref()),
        ru.and_then(|r| r.max_unavailable.as_ref()),
        replicas(d),
    )
}

/// How many pods above `spec.replicas` a Deployment may run (0 for Recreate).
pub fn max_surge(d: &Deployment) -> Result<i32, BadIntOrPercent> {
    if !is_rolling(d) {
        return Ok(0);
    }
    Ok(deployment_fenceposts(d)?.0)
}

/// How many of its pods a Deployment may have unavailable (0 for Recreate or no replicas),
/// never more than `spec.replicas`.
pub fn max_unavailable(d: &Deployment) -> Result<i32, BadIntOrPercent> {
    let want = replicas(d);
    if !is_rolling(d) || want == 0 {
        return Ok(0);
    }
    Ok(deployment_fenceposts(d)?.1.min(want))
}

/// The pod template hash: FNV-1a (32 bits) of the template's canonical JSON (see
/// [`canonical`]) and of the collision count when there is one, written with consonants and
/// digits only so it never spells words, as upstream's hashes look.
pub fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let json = serde_json::to_vec(&canonical(template)).unwrap_or_default();
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    feed(&json);
    if let Some(c) = collision_count {
        feed(&c.to_le_bytes());
    }
    const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|b| char::from(SAFE[usize::from(b) % SAFE.len()]))
        .collect()
}

/// A template as JSON without the pod-template-hash label and without empty values (null,
/// `{}`, `[]`, `false`, `0`, `""`), so that a template that went through a client which writes
/// `resources: {}` or `stdin: false` (kubectl does: Go structs have no "absent", and protobuf
/// bodies carry zero values) compares equal to the same template without them, as upstream's
/// semantic equality has it. Fields whose zero differs from their absence all have defaults,
/// which the server fills in, so both sides carry them.
pub fn canonical(template: &PodTemplateSpec) -> serde_json::Value {
    fn prune(v: &mut serde_json::Value) -> bool {
        match v {
            serde_json::Value::Null => true,
            serde_json::Value::Bool(b) => !*b,
            serde_json::Value::Number(n) => n.as_f64() == Some(0.0),
            serde_json::Value::String(s) => s.is_empty(),
            serde_json::Value::Object(map) => {
                map.retain(|_, v| !prune(v));
                map.is_empty()
            }
            serde_json::Value::Array(items) => {
                for item in items.iter_mut() {
                    prune(item);
                }
                items.is_empty()
            }
        }
    }
    let mut v = serde_json::to_value(template).unwrap_or_default();
    if let Some(labels) = v
        .pointer_mut("/metadata/labels")
        .and_then(|l| l.as_object_mut())
    {
        labels.remove(HASH_LABEL);
    }
    prune(&mut v);
    v
}

/// Whether two templates are the same but for the pod-template-hash label (and empty
/// values, see [`canonical`]).
pub fn equal_ignoring_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    canonical(a) == canonical(b)
}

/// An integer annotation of a ReplicaSet (desired or max replicas).
pub fn annotation_i32(rs: &ReplicaSet, key: &str) -> Option<i32> {
    rs.metadata.annotations.as_ref()?.get(key)?.parse().ok()
}

/// A ReplicaSet's revision (0 when it has none).
pub fn revision(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// `spec.replicas` of a ReplicaSet (default 1).
pub fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// `status.availableReplicas` of a ReplicaSet.
pub fn rs_available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

/// Sets the desired/max replicas annotations; whether anything changed.
pub fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (key, value) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        let value = value.to_string();
        if annotations.get(key) != Some(&value) {
            annotations.insert(key.to_string(), value);
            changed = true;
        }
    }
    changed
}

/// Copies the Deployment's own annotations onto the ReplicaSet and raises its revision to
/// `new_revision` (keeping the one it had in the revision history: a rollback); whether
/// anything changed.
pub fn set_new_rs_annotations(d: &Deployment, rs: &mut ReplicaSet, new_revision: i64) -> bool {
    let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if NOT_COPIED.contains(&k.as_str()) || annotations.get(k) == Some(v) {
            continue;
        }
        annotations.insert(k.clone(), v.clone());
        changed = true;
    }
    let old = annotations.get(REVISION).cloned();
    let old_n: i64 = old.as_deref().and_then(|r| r.parse().ok()).unwrap_or(0);
    if old_n < new_revision {
        annotations.insert(REVISION.into(), new_revision.to_string());
        changed = true;
        if let Some(old) = old.filter(|o| !o.is_empty()) {
            let history = match annotations.get(REVISION_HISTORY) {
                Some(h) if !h.is_empty() => format!("{h},{old}"),
                _ => old,
            };
            annotations.insert(REVISION_HISTORY.into(), history);
        }
    }
    changed
}

/// The replicas of a new ReplicaSet in a rolling update: up to `replicas + maxSurge` pods in
/// all, never beyond `replicas` for the new one.
pub fn new_rs_replicas_rolling(
    replicas: i32,
    max_surge: i32,
    all_rs_replicas: i32,
    new_rs_replicas: i32,
) -> i32 {
    let max_total = replicas + max_surge;
    if all_rs_replicas >= max_total {
        return new_rs_replicas;
    }
    let up = (max_total - all_rs_replicas).min(replicas - new_rs_replicas);
    new_rs_replicas + up.max(0)
}

/// Spec and available replicas of one ReplicaSet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// `spec.replicas`.
    pub replicas: i32,
    /// `status.availableReplicas`.
    pub available: i32,
}

/// New `spec.replicas` for the old ReplicaSets of a rolling update (`old` oldest first):
/// first unhealthy pods go (as far as the total may shrink), then available ones while more
/// than `replicas - maxUnavailable` would stay available.
pub fn scale_down_old(replicas: i32, max_unavailable: i32, new: Sizes, old: &[Sizes]) -> Vec<i32> {
    let mut sizes: Vec<i32> = old.iter().map(|s| s.replicas).collect();
    if sizes.iter().sum::<i32>() == 0 {
        return sizes;
    }
    let all: i32 = sizes.iter().sum::<i32>() + new.replicas;
    let min_available = replicas - max_unavailable;
    let new_unavailable = new.replicas - new.available;
    let max_scaled_down = all - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return sizes;
    }
    // Unhealthy pods of old sets first: they add nothing to availability.
    let mut cleaned = 0;
    for (size, s) in sizes.iter_mut().zip(old) {
        if cleaned >= max_scaled_down {
            break;
        }
        if *size == 0 || *size == s.available {
            continue;
        }
        let down = (max_scaled_down - cleaned).min(*size - s.available);
        *size -= down;
        cleaned += down;
    }
    // Then available pods, keeping the minimum available.
    let available: i32 = old.iter().map(|s| s.available).sum::<i32>() + new.available;
    if available <= min_available {
        return sizes;
    }
    let to_scale_down = available - min_available;
    let mut scaled_down = 0;
    for size in sizes.iter_mut() {
        if scaled_down >= to_scale_down {
            break;
        }
        if *size == 0 {
            continue;
        }
        let down = (*size).min(to_scale_down - scaled_down);
        *size -= down;
        scaled_down += down;
    }
    sizes
}

/// One active ReplicaSet in a proportional scaling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// Its name (ties of age break by name).
    pub name: String,
    /// `spec.replicas`.
    pub replicas: i32,
    /// The max-replicas annotation, when set.
    pub max_replicas: Option<i32>,
    /// Creation time.
    pub created: Option<jiff::Timestamp>,
}

/// New sizes when a Deployment with several active ReplicaSets is scaled mid-rollout: the
/// difference to `replicas + maxSurge` is spread in proportion to each set's share of the
/// size it was made for (its max-replicas annotation, else the Deployment's
/// `status.replicas`); what rounding leaves goes to the largest set (the newer one on ties
/// when growing, the older one when shrinking). Returns sizes in the order of `sets`.
pub fn proportional_sizes(
    replicas: i32,
    max_surge: i32,
    status_replicas: i32,
    sets: &[Share],
) -> Vec<i32> {
    let allowed = if replicas > 0 {
        replicas + max_surge
    } else {
        0
    };
    let current: i32 = sets.iter().map(|s| s.replicas).sum();
    let to_add = allowed - current;
    let mut order: Vec<usize> = (0..sets.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&sets[a], &sets[b]);
        let by_age = (a.created, &a.name).cmp(&(b.created, &b.name));
        b.replicas
            .cmp(&a.replicas)
            .then(if to_add > 0 { by_age.reverse() } else { by_age })
    });
    let mut sizes: Vec<i32> = sets.iter().map(|s| s.replicas).collect();
    if to_add == 0 {
        return sizes;
    }
    let mut added = 0;
    for &i in &order {
        let set = &sets[i];
        if set.replicas == 0 || to_add == added {
            continue;
        }
        let fraction = if replicas == 0 {
            -set.replicas
        } else {
            let annotated = set.max_replicas.unwrap_or(status_replicas);
            if annotated == 0 {
                0
            } else {
                let target = f64::from(set.replicas) * f64::from(replicas + max_surge)
                    / f64::from(annotated);
                // In range: a share of an i32 total.
                target.round() as i32 - set.replicas
            }
        };
        let left = to_add - added;
        let share = if to_add > 0 {
            fraction.min(left)
        } else {
            fraction.max(left)
        };
        sizes[i] += share;
        added += share;
    }
    if let Some(&first) = order.first() {
        sizes[first] = (sizes[first] + to_add - added).max(0);
    }
    sizes
}

/// Whether a status shows the rollout done: every replica updated and available, and the
/// current generation observed.
pub fn complete(d: &Deployment, status: &DeploymentStatus) -> bool {
    let want = replicas(d);
    status.updated_replicas.unwrap_or(0) == want
        && status.replicas.unwrap_or(0) == want
        && status.available_replicas.unwrap_or(0) == want
        && status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

/// Whether `new` shows progress over the Deployment's current status: more updated, ready
/// or available pods, or fewer old ones.
pub fn progressing(d: &Deployment, new: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let n = |v: Option<i32>| v.unwrap_or(0);
    let old_old = n(old.replicas) - n(old.updated_replicas);
    let new_old = n(new.replicas) - n(new.updated_replicas);
    n(new.updated_replicas) > n(old.updated_replicas)
        || new_old < old_old
        || n(new.ready_replicas) > n(old.ready_replicas)
        || n(new.available_replicas) > n(old.available_replicas)
}

/// `spec.progressDeadlineSeconds`, when set (upstream treats MaxInt32 as none).
pub fn progress_deadline(d: &Deployment) -> Option<i64> {
    d.spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .filter(|s| *s != i32::MAX)
        .map(i64::from)
}

/// The condition of a type.
pub fn condition<'a>(status: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_)
}

/// Whether the rollout has gone without progress past its deadline at `now`.
pub fn timed_out(d: &Deployment, status: &DeploymentStatus, now: jiff::Timestamp) -> bool {
    let Some(deadline) = progress_deadline(d) else {
        return false;
    };
    let Some(c) = condition(status, reason::PROGRESSING) else {
        return false;
    };
    match c.reason.as_deref() {
        Some(reason::NEW_RS_AVAILABLE) => false,
        Some(reason::TIMED_OUT) => true,
        _ => c
            .last_update_time
            .as_ref()
            .is_some_and(|t| t.0 + jiff::SignedDuration::from_secs(deadline) < now),
    }
}

/// A condition stamped `now`.
pub fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: jiff::Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Sets a condition as upstream does: one with the same status and reason is left as it is;
/// one with the same status keeps its transition time; otherwise it is replaced.
pub fn set_condition(status: &mut DeploymentStatus, mut c: DeploymentCondition) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    if let Some(current) = conditions.iter().find(|x| x.type_ == c.type_) {
        if current.status == c.status && current.reason == c.reason {
            return;
        }
        if current.status == c.status {
            c.last_transition_time = current.last_transition_time.clone();
        }
    }
    conditions.retain(|x| x.type_ != c.type_);
    conditions.push(c);
}

/// Removes a condition.
pub fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(c) = status.conditions.as_mut() {
        c.retain(|x| x.type_ != type_);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use kube::api::ObjectMeta;

    fn int(i: i32) -> IntOrString {
        IntOrString::Int(i)
    }
    fn pct(s: &str) -> IntOrString {
        IntOrString::String(s.into())
    }

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "web".into(),
                    image: Some(image.into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    fn deployment(
        replicas: i32,
        strategy: &str,
        surge: IntOrString,
        unavail: IntOrString,
    ) -> Deployment {
        Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                strategy: Some(DeploymentStrategy {
                    type_: Some(strategy.into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(surge),
                        max_unavailable: Some(unavail),
                    }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn percentages_of_surge_round_up_and_of_unavailability_round_down() {
        assert_eq!(
            fenceposts(Some(&pct("25%")), Some(&pct("25%")), 10),
            Ok((3, 2))
        );
        assert_eq!(
            fenceposts(Some(&pct("25%")), Some(&pct("25%")), 3),
            Ok((1, 0))
        );
        assert_eq!(
            fenceposts(Some(&pct("100%")), Some(&pct("0%")), 7),
            Ok((7, 0))
        );
        assert_eq!(fenceposts(Some(&int(2)), Some(&pct("50%")), 5), Ok((2, 2)));
        assert_eq!(
            fenceposts(None, None, 4),
            Ok((1, 1)),
            "the defaults are 25%"
        );
    }

    #[test]
    fn zero_surge_and_zero_unavailability_still_let_one_pod_go() {
        assert_eq!(fenceposts(Some(&int(0)), Some(&pct("0%")), 3), Ok((0, 1)));
        assert_eq!(
            fenceposts(Some(&pct("10%")), Some(&pct("10%")), 1),
            Ok((1, 0))
        );
    }

    #[test]
    fn a_value_that_is_neither_int_nor_percentage_is_an_error() {
        assert!(fenceposts(Some(&pct("ten")), None, 3).is_err());
        assert!(fenceposts(None, Some(&pct("5")), 3).is_err());
    }

    #[test]
    fn recreate_has_no_surge_and_unavailability_is_capped_at_replicas() {
        let d = deployment(3, "Recreate", int(2), int(2));
        assert_eq!((max_surge(&d), max_unavailable(&d)), (Ok(0), Ok(0)));
        let d = deployment(2, "RollingUpdate", int(0), int(5));
        assert_eq!(max_unavailable(&d), Ok(2));
        let d = deployment(0, "RollingUpdate", int(1), int(5));
        assert_eq!(max_unavailable(&d), Ok(0));
    }

    #[test]
    fn the_template_hash_is_stable_and_changes_with_the_template_only() {
        let a = template_hash(&template("nginx:1"), None);
        assert_eq!(a, template_hash(&template("nginx:1"), None));
        assert!(!a.is_empty() && a.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
        assert_ne!(a, template_hash(&template("nginx:2"), None));
        assert_ne!(
            a,
            template_hash(&template("nginx:1"), Some(1)),
            "collisions rehash"
        );
        let mut labelled = template("nginx:1");
        if let Some(l) = labelled.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            l.insert(HASH_LABEL.into(), a.clone());
        }
        assert_eq!(
            a,
            template_hash(&labelled, None),
            "the hash label is ignored"
        );
        assert!(equal_ignoring_hash(&labelled, &template("nginx:1")));
        assert!(!equal_ignoring_hash(&labelled, &template("nginx:2")));
    }

    #[test]
    fn empty_values_written_by_clients_do_not_change_the_template() {
        let plain = template("nginx:1");
        let mut with_empties = plain.clone();
        if let Some(spec) = with_empties.spec.as_mut() {
            spec.containers[0].resources = Some(Default::default());
            spec.volumes = Some(Vec::new());
            // What a protobuf body from `kubectl create deployment` carries.
            spec.containers[0].stdin = Some(false);
            spec.containers[0].tty = Some(false);
            spec.host_network = Some(false);
        }
        if let Some(meta) = with_empties.metadata.as_mut() {
            meta.generation = Some(0);
        }
        assert!(equal_ignoring_hash(&plain, &with_empties));
        assert_eq!(
            template_hash(&plain, None),
            template_hash(&with_empties, None)
        );
    }

    #[test]
    fn a_rolling_update_grows_the_new_set_up_to_the_surge() {
        // 3 replicas, surge 1: 3 old → new set gets 1.
        assert_eq!(new_rs_replicas_rolling(3, 1, 3, 0), 1);
        // Already at 4 in all: wait.
        assert_eq!(new_rs_replicas_rolling(3, 1, 4, 1), 1);
        // Old ones gone: new set fills up to replicas, never beyond.
        assert_eq!(new_rs_replicas_rolling(3, 1, 1, 1), 3);
        assert_eq!(new_rs_replicas_rolling(10, 3, 10, 0), 3);
    }

    #[test]
    fn old_sets_shrink_only_as_far_as_availability_allows() {
        let s = |replicas, available| Sizes {
            replicas,
            available,
        };
        // 3 replicas, maxUnavailable 0, new set has 1 pod not yet available: nothing goes.
        assert_eq!(scale_down_old(3, 0, s(1, 0), &[s(3, 3)]), vec![3]);
        // New pod available: one old pod may go.
        assert_eq!(scale_down_old(3, 0, s(1, 1), &[s(3, 3)]), vec![2]);
        // maxUnavailable 1 at the start: one old pod goes at once.
        assert_eq!(scale_down_old(3, 1, s(0, 0), &[s(3, 3)]), vec![2]);
        // Unhealthy old pods go first, oldest set first, within the total allowed.
        assert_eq!(
            scale_down_old(4, 1, s(1, 0), &[s(2, 0), s(2, 2)]),
            vec![1, 2]
        );
        assert_eq!(
            scale_down_old(10, 2, s(2, 2), &[s(4, 2), s(6, 6)]),
            vec![0, 6]
        );
    }

    fn share(name: &str, replicas: i32, max: Option<i32>, age_secs: i64) -> Share {
        Share {
            name: name.into(),
            replicas,
            max_replicas: max,
            created: Some(jiff::Timestamp::from_second(1_000_000 + age_secs).unwrap_or_default()),
        }
    }

    #[test]
    fn scaling_mid_rollout_spreads_the_difference_in_proportion() {
        // Upstream's documented example: 10 replicas, surge 3, 5 old + 8 new (13 = max);
        // scaled to 15 (max 18): +5 split 2 old / 3 new.
        let sets = [share("old", 5, Some(13), 0), share("new", 8, Some(13), 10)];
        assert_eq!(proportional_sizes(15, 3, 13, &sets), vec![7, 11]);
        // Scaled down to 5 (max 8 with surge 3): -5 split.
        assert_eq!(proportional_sizes(5, 3, 13, &sets), vec![3, 5]);
        // Scaled to zero: everything goes.
        assert_eq!(proportional_sizes(0, 3, 13, &sets), vec![0, 0]);
    }

    #[test]
    fn rounding_leftovers_go_to_the_largest_set() {
        let sets = [
            share("a", 1, Some(3), 0),
            share("b", 1, Some(3), 1),
            share("c", 1, Some(3), 2),
        ];
        let sizes = proportional_sizes(4, 0, 3, &sets);
        assert_eq!(sizes.iter().sum::<i32>(), 4);
        // Growing: ties of size go to the newest.
        assert_eq!(sizes, vec![1, 1, 2]);
        let sizes = proportional_sizes(2, 0, 3, &sets);
        assert_eq!(sizes.iter().sum::<i32>(), 2);
    }

    #[test]
    fn a_condition_with_the_same_status_keeps_its_transition_time() {
        let t0 = jiff::Timestamp::from_second(1_000).unwrap_or_default();
        let t1 = jiff::Timestamp::from_second(2_000).unwrap_or_default();
        let mut status = DeploymentStatus::default();
        set_condition(
            &mut status,
            new_condition(
                reason::PROGRESSING,
                "True",
                reason::NEW_RS_CREATED,
                "a".into(),
                t0,
            ),
        );
        set_condition(
            &mut status,
            new_condition(
                reason::PROGRESSING,
                "True",
                reason::RS_UPDATED,
                "b".into(),
                t1,
            ),
        );
        let c = condition(&status, reason::PROGRESSING)
            .cloned()
            .unwrap_or_default();
        assert_eq!(c.reason.as_deref(), Some(reason::RS_UPDATED));
        assert_eq!(c.last_transition_time, Some(Time(t0)));
        assert_eq!(c.last_update_time, Some(Time(t1)));
        // Same status and reason: unchanged.
        set_condition(
            &mut status,
            new_condition(
                reason::PROGRESSING,
                "True",
                reason::RS_UPDATED,
                "c".into(),
                t1,
            ),
        );
        assert_eq!(
            condition(&status, reason::PROGRESSING).and_then(|c| c.message.as_deref()),
            Some("b")
        );
    }

    #[test]
    fn a_rollback_raises_the_revision_and_keeps_the_old_one_in_history() {
        let d = Deployment {
            metadata: ObjectMeta {
                annotations: Some(BTreeMap::from([
                    ("kubernetes.io/change-cause".into(), "v2".into()),
                    (REVISION.into(), "2".into()),
                ])),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                annotations: Some(BTreeMap::from([(REVISION.into(), "1".into())])),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(set_new_rs_annotations(&d, &mut rs, 3));
        let a = rs.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(a.get(REVISION).map(String::as_str), Some("3"));
        assert_eq!(a.get(REVISION_HISTORY).map(String::as_str), Some("1"));
        assert_eq!(
            a.get("kubernetes.io/change-cause").map(String::as_str),
            Some("v2")
        );
        assert!(
            !set_new_rs_annotations(&d, &mut rs, 3),
            "nothing more to change"
        );
    }
}
