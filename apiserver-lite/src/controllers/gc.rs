//! The garbage collector: follows ownerReferences across every kind the API server serves
//! (found by discovery, watched metadata-only) and, as upstream's collector does:
//! - deletes an object once none of its owners exists any more (an owner whose uid is gone
//!   from the cache is confirmed gone by a live read first), in the background;
//! - for an owner deleted with `propagationPolicy=Foreground` (the `foregroundDeletion`
//!   finalizer) deletes its dependents first and removes the finalizer once no dependent
//!   with `blockOwnerDeletion` is left;
//! - for an owner deleted with `propagationPolicy=Orphan` (the `orphan` finalizer) removes
//!   the owner references to it from its dependents, then the finalizer.
//!
//! Deciding is pure ([`plan`]); [`run`] watches, confirms absent owners and carries the
//! steps out, again after every change it sees (and every few seconds).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, PartialObjectMeta, Patch, PatchParams,
    Preconditions, PropagationPolicy,
};
use kube::discovery::{Discovery, Scope};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use super::{ControllerError, api_err, is_not_found, shutdown_signal};

/// The finalizer of a foreground deletion.
pub const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer of an orphaning deletion.
pub const ORPHAN: &str = "orphan";

/// How often the whole graph is looked at without any change.
const RESYNC: Duration = Duration::from_secs(5);
/// Changes arriving within this time are handled in one pass.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// How long an owner read live and found present is not read again.
const PRESENT_FOR: Duration = Duration::from_secs(5);

/// One object of the graph: what the collector needs of its metadata.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Item {
    /// Index of its kind in the collector's resource list.
    pub resource: usize,
    /// Namespace (None for cluster-scoped objects).
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// uid.
    pub uid: String,
    /// resourceVersion (a precondition of every change).
    pub resource_version: Option<String>,
    /// ownerReferences.
    pub owners: Vec<OwnerReference>,
    /// finalizers.
    pub finalizers: Vec<String>,
    /// Whether it has a deletionTimestamp.
    pub deleting: bool,
}

impl Item {
    fn has(&self, finalizer: &str) -> bool {
        self.finalizers.iter().any(|f| f == finalizer)
    }
}

/// What the collector does to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Delete it with this propagation policy.
    Delete {
        /// Index in the items.
        item: usize,
        /// Background, Foreground or Orphan.
        policy: &'static str,
    },
    /// Remove its owner references to these uids.
    DropOwners {
        /// Index in the items.
        item: usize,
        /// Owner uids.
        uids: Vec<String>,
    },
    /// Remove a finalizer (its dependents are dealt with).
    RemoveFinalizer {
        /// Index in the items.
        item: usize,
        /// The finalizer.
        finalizer: &'static str,
    },
}

/// Owner references whose owner is not among `items` (to be confirmed gone by a live read),
/// as (item index, reference).
pub fn unknown_owners(items: &[Item]) -> Vec<(usize, OwnerReference)> {
    let uids: HashSet<&str> = items.iter().map(|i| i.uid.as_str()).collect();
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        for r in &item.owners {
            if !uids.contains(r.uid.as_str()) {
                out.push((i, r.clone()));
            }
        }
    }
    out
}

/// The steps for a graph, given the owner uids confirmed `absent` (an owner neither among
/// the items nor confirmed absent is taken to exist).
pub fn plan(items: &[Item], absent: &HashSet<String>) -> Vec<Step> {
    let by_uid: HashMap<&str, usize> = items
        .iter()
        .enumerate()
        .map(|(i, item)| (item.uid.as_str(), i))
        .collect();
    let mut dependents: HashMap<&str, Vec<(usize, &OwnerReference)>> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        for r in &item.owners {
            dependents.entry(r.uid.as_str()).or_default().push((i, r));
        }
    }
    let mut steps = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let deps = dependents
            .get(item.uid.as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        // As an owner being deleted.
        if item.deleting && item.has(ORPHAN) {
            if deps.is_empty() {
                steps.push(Step::RemoveFinalizer {
                    item: i,
                    finalizer: ORPHAN,
                });
            }
            for (d, _) in deps {
                steps.push(Step::DropOwners {
                    item: *d,
                    uids: vec![item.uid.clone()],
                });
            }
        } else if item.deleting
            && item.has(FOREGROUND)
            && !deps
                .iter()
                .any(|(_, r)| r.block_owner_deletion == Some(true))
        {
            steps.push(Step::RemoveFinalizer {
                item: i,
                finalizer: FOREGROUND,
            });
        }
        // As a dependent.
        if item.owners.is_empty() {
            continue;
        }
        let (mut solid, mut gone, mut waiting) = (false, Vec::new(), false);
        for r in &item.owners {
            match by_uid.get(r.uid.as_str()) {
                Some(&o) if items[o].deleting && items[o].has(FOREGROUND) => {
                    waiting = true;
                    gone.push(r.uid.clone());
                }
                Some(_) => solid = true,
                None if absent.contains(&r.uid) => gone.push(r.uid.clone()),
                None => solid = true,
            }
        }
        if gone.is_empty() {
            continue;
        }
        if solid {
            steps.push(Step::DropOwners {
                item: i,
                uids: gone,
            });
        } else if !item.deleting {
            let policy = if (waiting && !deps.is_empty()) || item.has(FOREGROUND) {
                "Foreground"
            } else if item.has(ORPHAN) {
                "Orphan"
            } else {
                "Background"
            };
            steps.push(Step::Delete { item: i, policy });
        }
    }
    steps
}

type Meta = PartialObjectMeta<DynamicObject>;

/// A watched kind.
struct Watched {
    resource: ApiResource,
    namespaced: bool,
    store: Store<Meta>,
}

struct Collector {
    client: kube::Client,
    kinds: Vec<Watched>,
    /// (group, kind) → index in `kinds`.
    by_kind: HashMap<(String, String), usize>,
    /// Owners read live and found present, and when.
    present: HashMap<String, Instant>,
}

fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("")
}

impl Collector {
    /// The part of the graph that can lead to a step: objects with owners, objects being
    /// deleted with a finalizer of ours, and the objects referenced as owners. Everything
    /// else (most objects, in most clusters) is skipped without copying.
    fn items(&self) -> Vec<Item> {
        let states: Vec<Vec<Arc<Meta>>> = self.kinds.iter().map(|w| w.store.state()).collect();
        let referenced: HashSet<&str> = states
            .iter()
            .flatten()
            .flat_map(|o| o.metadata.owner_references.iter().flatten())
            .map(|r| r.uid.as_str())
            .collect();
        let mut items = Vec::new();
        let mut seen = HashSet::new();
        for (k, state) in states.iter().enumerate() {
            for obj in state {
                let m = &obj.metadata;
                let Some(uid) = m.uid.as_deref() else {
                    continue;
                };
                let ours = m.deletion_timestamp.is_some()
                    && m.finalizers
                        .iter()
                        .flatten()
                        .any(|f| f == ORPHAN || f == FOREGROUND);
                let relevant = m.owner_references.as_ref().is_some_and(|o| !o.is_empty())
                    || ours
                    || referenced.contains(uid);
                if !relevant || !seen.insert(uid) {
                    continue;
                }
                items.push(Item {
                    resource: k,
                    namespace: m.namespace.clone(),
                    name: m.name.clone().unwrap_or_default(),
                    uid: uid.to_string(),
                    resource_version: m.resource_version.clone(),
                    owners: m.owner_references.clone().unwrap_or_default(),
                    finalizers: m.finalizers.clone().unwrap_or_default(),
                    deleting: m.deletion_timestamp.is_some(),
                });
            }
        }
        items
    }

    fn api(&self, resource: usize, namespace: Option<&str>) -> Api<DynamicObject> {
        let w = &self.kinds[resource];
        match namespace {
            Some(ns) if w.namespaced => Api::namespaced_with(self.client.clone(), ns, &w.resource),
            _ => Api::all_with(self.client.clone(), &w.resource),
        }
    }

    /// Reads the owners missing from the cache; returns the uids confirmed gone (not found,
    /// or found with another uid). Owners of kinds not served are left alone.
    async fn confirm_absent(&mut self, items: &[Item]) -> HashSet<String> {
        let mut absent = HashSet::new();
        self.present.retain(|_, at| at.elapsed() < PRESENT_FOR);
        for (i, r) in unknown_owners(items) {
            if absent.contains(&r.uid) || self.present.contains_key(&r.uid) {
                continue;
            }
            let key = (group_of(&r.api_version).to_string(), r.kind.clone());
            let Some(&k) = self.by_kind.get(&key) else {
                continue;
            };
            let api = self.api(k, items[i].namespace.as_deref());
            match api.get_metadata_opt(&r.name).await {
                Ok(Some(found)) if found.metadata.uid.as_deref() == Some(r.uid.as_str()) => {
                    self.present.insert(r.uid.clone(), Instant::now());
                }
                Ok(_) => {
                    absent.insert(r.uid.clone());
                }
                Err(e) => {
                    tracing::debug!(error = %e, owner = %r.name, "reading an owner");
                }
            }
        }
        absent
    }

    async fn apply(&self, items: &[Item], step: &Step) -> Result<(), ControllerError> {
        let (i, action) = match step {
            Step::Delete { item, .. } => (*item, "deleting a dependent"),
            Step::DropOwners { item, .. } => (*item, "removing owner references"),
            Step::RemoveFinalizer { item, .. } => (*item, "removing a finalizer"),
        };
        let item = &items[i];
        let object = match &item.namespace {
            Some(ns) => format!(
                "{}/{ns}/{}",
                self.kinds[item.resource].resource.plural, item.name
            ),
            None => format!(
                "{}/{}",
                self.kinds[item.resource].resource.plural, item.name
            ),
        };
        let api = self.api(item.resource, item.namespace.as_deref());
        let result = match step {
            Step::Delete { policy, .. } => {
                let dp = DeleteParams {
                    propagation_policy: Some(match *policy {
                        "Foreground" => PropagationPolicy::Foreground,
                        "Orphan" => PropagationPolicy::Orphan,
                        _ => PropagationPolicy::Background,
                    }),
                    preconditions: Some(Preconditions {
                        uid: Some(item.uid.clone()),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                tracing::info!(%object, policy, "garbage collecting");
                api.delete(&item.name, &dp).await.map(|_| ())
            }
            Step::DropOwners { uids, .. } => {
                let kept: Vec<&OwnerReference> = item
                    .owners
                    .iter()
                    .filter(|r| !uids.contains(&r.uid))
                    .collect();
                let patch = json!({"metadata": {
                    "ownerReferences": kept,
                    "resourceVersion": item.resource_version,
                }});
                api.patch(&item.name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                    .map(|_| ())
            }
            Step::RemoveFinalizer { finalizer, .. } => {
                let kept: Vec<&String> =
                    item.finalizers.iter().filter(|f| f != finalizer).collect();
                let patch = json!({"metadata": {
                    "finalizers": kept,
                    "resourceVersion": item.resource_version,
                }});
                api.patch(&item.name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                    .map(|_| ())
            }
        };
        match result {
            Ok(()) => Ok(()),
            // Gone already, or changed since the cache saw it: the next pass decides again.
            Err(e) if is_not_found(&e) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(api_err(&object, action)(e)),
        }
    }

    async fn pass(&mut self) {
        let items = self.items();
        let absent = self.confirm_absent(&items).await;
        for step in plan(&items, &absent) {
            if let Err(error) = self.apply(&items, &step).await {
                tracing::warn!(%error, "garbage collector");
            }
        }
    }
}

/// The kinds to watch: every listable, watchable, deletable, patchable resource (events
/// excepted: they are many and own nothing).
async fn discover(client: &kube::Client) -> Result<Vec<(ApiResource, bool)>, kube::Error> {
    let discovery = Discovery::new(client.clone()).run().await?;
    let mut out = Vec::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            let can = |verb: &str| caps.operations.iter().any(|o| o == verb);
            if ar.plural == "events" || !["list", "watch", "delete", "patch"].iter().all(|v| can(v))
            {
                continue;
            }
            out.push((ar, matches!(caps.scope, Scope::Namespaced)));
        }
    }
    Ok(out)
}

/// Runs the garbage collector until `shutdown` turns true.
pub async fn run(client: kube::Client, shutdown: tokio::sync::watch::Receiver<bool>) {
    let stop = shutdown_signal(shutdown.clone());
    tokio::pin!(stop);
    let mut backoff = Duration::from_millis(200);
    let resources = loop {
        match discover(&client).await {
            Ok(r) => break r,
            Err(error) => tracing::warn!(%error, "garbage collector: discovery failed; retrying"),
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    };
    let changed = Arc::new(tokio::sync::Notify::new());
    let mut kinds = Vec::new();
    let mut by_kind = HashMap::new();
    for (resource, namespaced) in resources {
        let writer = reflector::store::Writer::<Meta>::new(resource.clone());
        let store = writer.as_reader();
        let api: Api<Meta> = Api::all_with(client.clone(), &resource);
        let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff();
        let (notify, shutdown) = (changed.clone(), shutdown.clone());
        tokio::spawn(async move {
            let events = stream
                .take_until(shutdown_signal(shutdown))
                .for_each(|event| {
                    if let Err(error) = event {
                        tracing::debug!(%error, "garbage collector watch");
                    }
                    notify.notify_one();
                    async {}
                });
            events.await;
        });
        by_kind.insert((resource.group.clone(), resource.kind.clone()), kinds.len());
        kinds.push(Watched {
            resource,
            namespaced,
            store,
        });
    }
    // Decide nothing before every kind has been listed once: an owner not yet seen is not
    // an absent owner.
    for w in &kinds {
        tokio::select! {
            _ = &mut stop => return,
            _ = w.store.wait_until_ready() => {}
        }
    }
    let mut collector = Collector {
        client,
        kinds,
        by_kind,
        present: HashMap::new(),
    };
    loop {
        collector.pass().await;
        tokio::select! {
            _ = &mut stop => return,
            _ = changed.notified() => {}
            _ = tokio::time::sleep(RESYNC) => {}
        }
        tokio::time::sleep(DEBOUNCE).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner_ref(uid: &str, block: bool) -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: format!("rs-{uid}"),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(block),
        }
    }

    fn item(uid: &str, owners: Vec<OwnerReference>) -> Item {
        Item {
            name: uid.into(),
            uid: uid.into(),
            owners,
            ..Default::default()
        }
    }

    fn deleting(mut i: Item, finalizer: &str) -> Item {
        i.deleting = true;
        i.finalizers.push(finalizer.into());
        i
    }

    fn absent(uids: &[&str]) -> HashSet<String> {
        uids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_dependent_whose_owner_is_confirmed_gone_is_deleted_in_the_background() {
        let items = [item("pod", vec![owner_ref("rs", true)])];
        assert_eq!(unknown_owners(&items).len(), 1);
        assert_eq!(
            plan(&items, &absent(&["rs"])),
            vec![Step::Delete {
                item: 0,
                policy: "Background"
            }]
        );
        // Not confirmed gone (a cache that lags): left alone.
        assert!(plan(&items, &absent(&[])).is_empty());
    }

    #[test]
    fn a_dependent_with_another_live_owner_only_loses_the_dangling_reference() {
        let items = [
            item("rs2", vec![]),
            item("pod", vec![owner_ref("rs", true), owner_ref("rs2", false)]),
        ];
        assert_eq!(
            plan(&items, &absent(&["rs"])),
            vec![Step::DropOwners {
                item: 1,
                uids: vec!["rs".into()]
            }]
        );
    }

    #[test]
    fn foreground_deletion_deletes_dependents_and_waits_for_the_blocking_ones() {
        let items = [
            deleting(item("rs", vec![]), FOREGROUND),
            item("pod", vec![owner_ref("rs", true)]),
        ];
        assert_eq!(
            plan(&items, &absent(&[])),
            vec![Step::Delete {
                item: 1,
                policy: "Background"
            }]
        );
        // Only non-blocking dependents left: the finalizer goes.
        let items = [
            deleting(item("rs", vec![]), FOREGROUND),
            item("pod", vec![owner_ref("rs", false)]),
        ];
        let steps = plan(&items, &absent(&[]));
        assert!(steps.contains(&Step::RemoveFinalizer {
            item: 0,
            finalizer: FOREGROUND
        }));
        // A dependent that has dependents of its own goes in the foreground too.
        let items = [
            deleting(item("deploy", vec![]), FOREGROUND),
            item("rs", vec![owner_ref("deploy", true)]),
            item("pod", vec![owner_ref("rs", true)]),
        ];
        assert_eq!(
            plan(&items, &absent(&[])),
            vec![Step::Delete {
                item: 1,
                policy: "Foreground"
            }]
        );
        // No dependents at all: the finalizer goes.
        let items = [deleting(item("rs", vec![]), FOREGROUND)];
        assert_eq!(
            plan(&items, &absent(&[])),
            vec![Step::RemoveFinalizer {
                item: 0,
                finalizer: FOREGROUND
            }]
        );
    }

    #[test]
    fn orphaning_drops_the_references_then_the_finalizer() {
        let items = [
            deleting(item("rs", vec![]), ORPHAN),
            item("pod", vec![owner_ref("rs", true)]),
        ];
        assert_eq!(
            plan(&items, &absent(&[])),
            vec![Step::DropOwners {
                item: 1,
                uids: vec!["rs".into()]
            }]
        );
        let items = [deleting(item("rs", vec![]), ORPHAN), item("pod", vec![])];
        assert_eq!(
            plan(&items, &absent(&[])),
            vec![Step::RemoveFinalizer {
                item: 0,
                finalizer: ORPHAN
            }]
        );
    }

    #[test]
    fn a_dependent_already_being_deleted_is_not_deleted_again() {
        let mut pod = item("pod", vec![owner_ref("rs", true)]);
        pod.deleting = true;
        assert!(plan(&[pod], &absent(&["rs"])).is_empty());
    }
}
