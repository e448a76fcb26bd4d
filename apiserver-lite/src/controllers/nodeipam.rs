//! Node IPAM, as upstream's range allocator: every Node without `spec.podCIDR` gets the next
//! free block of `--node-cidr-mask-size` bits from `--cluster-cidr` in `spec.podCIDR` and
//! `spec.podCIDRs`. Blocks Nodes already hold count as taken (so a restart keeps them); a
//! Node's block is free again once the Node is deleted. With the range exhausted the Node gets
//! a `CIDRNotAvailable` event and is tried again later.
//!
//! What is taken is derived from the Nodes themselves (the controller's store) plus the
//! blocks this process handed out that the store does not show yet; [`next_free`] is pure.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use serde_json::json;

use super::{Context, ControllerError, api_err, shutdown_signal};

/// An IPv4 CIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    base: u32,
    prefix: u8,
}

impl std::str::FromStr for Ipv4Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (ip, len) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: expected an IPv4 CIDR like 10.244.0.0/16"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("{s:?}: not an IPv4 address"))?;
        let prefix: u8 = len
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{s:?}: bad prefix length"))?;
        Ok(Ipv4Cidr {
            base: u32::from(ip) & mask(prefix),
            prefix,
        })
    }
}

impl std::fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

/// How nodes get pod CIDRs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// The range node blocks come from (`--cluster-cidr`).
    pub cluster_cidr: Ipv4Cidr,
    /// The prefix length of a node's block (`--node-cidr-mask-size`).
    pub node_mask: u8,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cluster_cidr: Ipv4Cidr {
                base: u32::from(Ipv4Addr::new(10, 244, 0, 0)),
                prefix: 16,
            },
            node_mask: 24,
        }
    }
}

impl Settings {
    /// Checks that node blocks fit the range.
    pub fn validate(&self) -> Result<(), String> {
        if self.node_mask < self.cluster_cidr.prefix || self.node_mask > 32 {
            return Err(format!(
                "--node-cidr-mask-size {} must be between the cluster CIDR's prefix ({}) and 32",
                self.node_mask, self.cluster_cidr.prefix
            ));
        }
        if self.node_mask - self.cluster_cidr.prefix > 20 {
            return Err("more than 2^20 node blocks: use a smaller --node-cidr-mask-size".into());
        }
        Ok(())
    }

    fn blocks(&self) -> u32 {
        1u32 << (self.node_mask - self.cluster_cidr.prefix)
    }

    fn block(&self, i: u32) -> String {
        let size = 1u64 << (32 - u32::from(self.node_mask));
        let base = u64::from(self.cluster_cidr.base) + u64::from(i) * size;
        format!(
            "{}/{}",
            Ipv4Addr::from(u32::try_from(base).unwrap_or(0)),
            self.node_mask
        )
    }

    /// The index of `cidr` when it is one of this range's node blocks.
    fn index(&self, cidr: &str) -> Option<u32> {
        let c: Ipv4Cidr = cidr.parse().ok()?;
        if c.prefix != self.node_mask
            || c.base & mask(self.cluster_cidr.prefix) != self.cluster_cidr.base
        {
            return None;
        }
        Some((c.base - self.cluster_cidr.base) >> (32 - u32::from(self.node_mask)))
    }
}

/// The first block of the range not in `taken` (CIDR strings), or `None` when all are.
pub fn next_free(settings: &Settings, taken: &BTreeSet<String>) -> Option<String> {
    let used: BTreeSet<u32> = taken.iter().filter_map(|c| settings.index(c)).collect();
    (0..settings.blocks())
        .find(|i| !used.contains(i))
        .map(|i| settings.block(i))
}

/// A Node's pod CIDRs.
pub fn node_cidrs(node: &Node) -> Vec<String> {
    let spec = node.spec.as_ref();
    let mut out: Vec<String> = spec.and_then(|s| s.pod_cidrs.clone()).unwrap_or_default();
    if let Some(c) = spec.and_then(|s| s.pod_cidr.clone())
        && !out.contains(&c)
    {
        out.push(c);
    }
    out.retain(|c| !c.is_empty());
    out
}

struct State {
    ctx: Context,
    settings: Settings,
    nodes: Store<Node>,
    /// Blocks handed out by this process, by node, until the store shows them.
    given: tokio::sync::Mutex<BTreeMap<String, String>>,
}

async fn reconcile(node: Arc<Node>, this: Arc<State>) -> Result<Action, ControllerError> {
    let name = node.name_any();
    if node.metadata.deletion_timestamp.is_some() || !node_cidrs(&node).is_empty() {
        return Ok(Action::await_change());
    }
    // Every Node must be known before a block is chosen.
    if this.nodes.wait_until_ready().await.is_err() {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let mut given = this.given.lock().await;
    let nodes = this.nodes.state();
    given.retain(|n, _| {
        nodes
            .iter()
            .any(|node| &node.name_any() == n && node_cidrs(node).is_empty())
    });
    if let Some(c) = given.get(&name) {
        // Handed out already; the store has not caught up.
        tracing::debug!(node = %name, cidr = %c, "pod CIDR given, waiting for the store");
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    let mut taken: BTreeSet<String> = nodes.iter().flat_map(|n| node_cidrs(n)).collect();
    taken.extend(given.values().cloned());
    let Some(cidr) = next_free(&this.settings, &taken) else {
        this.ctx
            .warning(
                node.as_ref(),
                "CIDRNotAvailable",
                "Allocate",
                format!("Node {name} status is now: CIDRNotAvailable"),
            )
            .await;
        return Ok(Action::requeue(Duration::from_secs(30)));
    };
    let api: Api<Node> = Api::all(this.ctx.client.clone());
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}})),
    )
    .await
    .map_err(api_err(&name, "setting the pod CIDR"))?;
    tracing::info!(node = %name, %cidr, "pod CIDR allocated");
    this.ctx
        .event(
            node.as_ref(),
            "CIDRAssigned",
            "Allocate",
            format!("Node {name} got pod CIDR {cidr}"),
        )
        .await;
    given.insert(name, cidr);
    Ok(Action::await_change())
}

fn error_policy(_node: Arc<Node>, error: &ControllerError, _this: Arc<State>) -> Action {
    tracing::warn!(%error, "node IPAM reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// Runs node IPAM until `shutdown` turns true.
pub async fn run(
    client: kube::Client,
    settings: Settings,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let controller = Controller::new(Api::<Node>::all(client.clone()), watcher::Config::default());
    let nodes = controller.store();
    let waiting = nodes.clone();
    let this = Arc::new(State {
        ctx: Context::new(client.clone(), "node-ipam-controller"),
        settings,
        nodes,
        given: tokio::sync::Mutex::new(BTreeMap::new()),
    });
    controller
        // Any node change (a deletion above all) may free a block for nodes still waiting.
        .watches(
            Api::<Node>::all(client),
            watcher::Config::default(),
            move |_node: Node| {
                waiting
                    .state()
                    .into_iter()
                    .filter(|n| node_cidrs(n).is_empty())
                    .map(|n| ObjectRef::from_obj(n.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(shutdown_signal(shutdown))
        .run(reconcile, error_policy, this)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "node IPAM controller");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(cidr: &str, mask: u8) -> Settings {
        Settings {
            cluster_cidr: cidr.parse().unwrap(),
            node_mask: mask,
        }
    }

    #[test]
    fn blocks_are_handed_out_in_order_skipping_taken_ones() {
        let s = Settings::default();
        assert_eq!(
            next_free(&s, &BTreeSet::new()).as_deref(),
            Some("10.244.0.0/24")
        );
        let taken: BTreeSet<String> =
            ["10.244.0.0/24".to_string(), "10.244.2.0/24".to_string()].into();
        assert_eq!(next_free(&s, &taken).as_deref(), Some("10.244.1.0/24"));
        let taken: BTreeSet<String> = ["10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24"]
            .map(String::from)
            .into();
        assert_eq!(next_free(&s, &taken).as_deref(), Some("10.244.3.0/24"));
    }

    #[test]
    fn blocks_outside_the_range_or_of_another_size_do_not_count() {
        let s = Settings::default();
        let taken: BTreeSet<String> = ["10.245.0.0/24", "10.244.0.0/25", "junk"]
            .map(String::from)
            .into();
        assert_eq!(next_free(&s, &taken).as_deref(), Some("10.244.0.0/24"));
    }

    #[test]
    fn an_exhausted_range_has_nothing_free() {
        let s = settings("10.10.0.0/23", 24);
        let taken: BTreeSet<String> = ["10.10.0.0/24", "10.10.1.0/24"].map(String::from).into();
        assert_eq!(next_free(&s, &taken), None);
        // Deleting a node frees its block.
        let taken: BTreeSet<String> = ["10.10.1.0/24"].map(String::from).into();
        assert_eq!(next_free(&s, &taken).as_deref(), Some("10.10.0.0/24"));
    }

    #[test]
    fn settings_reject_blocks_larger_than_the_range() {
        assert!(settings("10.0.0.0/16", 8).validate().is_err());
        assert!(settings("10.0.0.0/8", 30).validate().is_err());
        assert!(Settings::default().validate().is_ok());
        assert_eq!(
            "10.244.3.7/16".parse::<Ipv4Cidr>().unwrap().to_string(),
            "10.244.0.0/16"
        );
    }
}
