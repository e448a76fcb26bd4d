//! Keeps the index current: kube-runtime reflectors of Services and EndpointSlices; after a
//! change (a burst of changes settles for a few milliseconds) the index is rebuilt from the
//! reflectors' stores and swapped in whole, so a question sees one consistent snapshot.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, watcher};

use crate::index::{Index, ZoneConfig};
use crate::server::IndexCell;

/// How long a burst of changes settles before the index is rebuilt.
const SETTLE: Duration = Duration::from_millis(20);

/// A serial that grows with time (seconds), as CoreDNS takes the last change's time.
fn serial() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(1)
}

fn rebuild(config: &ZoneConfig, services: &Store<Service>, slices: &Store<EndpointSlice>) -> Index {
    let services = services.state();
    let slices = slices.state();
    Index::build(
        config.clone(),
        serial(),
        services.iter().map(|s| s.as_ref()),
        slices.iter().map(|s| s.as_ref()),
    )
}

/// Watches Services and EndpointSlices through `client` and keeps `cell` current until
/// `shutdown` turns true. The cell stays empty until both first lists have arrived.
pub async fn run(
    client: kube::Client,
    config: ZoneConfig,
    cell: Arc<IndexCell>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let (services, service_writer) = reflector::store();
    let (slices, slice_writer) = reflector::store();
    let wake = Arc::new(tokio::sync::Notify::new());
    let service_stream = reflector::reflector(
        service_writer,
        watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    );
    let slice_stream = reflector::reflector(
        slice_writer,
        watcher(
            Api::<EndpointSlice>::all(client),
            watcher::Config::default(),
        )
        .default_backoff(),
    );
    let mut streams = futures::stream::select(
        service_stream
            .map(|e| e.map(|_| ()).map_err(|e| e.to_string()))
            .boxed(),
        slice_stream
            .map(|e| e.map(|_| ()).map_err(|e| e.to_string()))
            .boxed(),
    );
    let pump = {
        let wake = wake.clone();
        async move {
            while let Some(event) = streams.next().await {
                if let Err(error) = event {
                    tracing::warn!(%error, "watching Services or EndpointSlices (retrying)");
                }
                wake.notify_one();
            }
        }
    };
    let build = async {
        let _ = services.wait_until_ready().await;
        let _ = slices.wait_until_ready().await;
        let index = rebuild(&config, &services, &slices);
        tracing::info!(names = index.len(), domain = %config.domain, "cluster DNS names loaded");
        cell.set(index);
        loop {
            wake.notified().await;
            tokio::time::sleep(SETTLE).await;
            let index = rebuild(&config, &services, &slices);
            tracing::debug!(names = index.len(), "cluster DNS names rebuilt");
            cell.set(index);
        }
    };
    tokio::select! {
        _ = pump => {}
        _ = build => {}
        _ = shutdown.wait_for(|stop| *stop) => {}
    }
}
