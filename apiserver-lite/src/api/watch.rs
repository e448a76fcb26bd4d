//! Watches: a stream of `{"type": ..., "object": ...}` lines from a resourceVersion on.
//!
//! Without a resourceVersion (or with "0") the stream starts with synthetic ADDED events for
//! every current object, as upstream does; `sendInitialEvents=true` adds the bookmark that
//! marks the end of them. With a resourceVersion the stream carries exactly the changes after
//! it, or 410 Expired once it is compacted. With selectors, an object that stops matching is
//! reported DELETED and one that starts matching ADDED. Bookmarks, the timeout and server
//! shutdown end or punctuate the stream cleanly.

use std::sync::Arc;
use std::time::Duration;

use apimachinery::meta;
use apimachinery::status::ApiError;
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, Response, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::negotiate::Format;
use super::objects::{Selection, collection_prefix, from_store, table, table_kind};
use super::request::ResourceRequest;
use super::{Api, Body, WatchSlot};
use crate::storage::{EventType, StoreError};

/// Starts a watch and returns the streaming response.
pub async fn serve(
    api: &Arc<Api>,
    r: &ResourceRequest,
    format: Format,
) -> Result<Response<Body>, ApiError> {
    let slot = api
        .open_watch()
        .ok_or_else(|| ApiError::too_many_requests("too many open watches; try again later", 1))?;
    let selection = Selection::from_query(r)?;
    let prefix = match &r.name {
        // Watching one object: the deprecated /watch/.../name path.
        Some(name) => r.resource.storage_key(r.namespace.as_deref(), name),
        None => collection_prefix(r),
    };
    let send_initial = r.query.get("sendInitialEvents").map(|v| v == "true");
    let rv = r.query.non_empty("resourceVersion");
    let bookmarks = r.query.flag("allowWatchBookmarks");
    if send_initial == Some(true) && !bookmarks {
        return Err(ApiError::invalid(
            "meta.k8s.io",
            "ListOptions",
            "",
            vec![apimachinery::status::FieldCause::forbidden(
                "allowWatchBookmarks",
                "allowWatchBookmarks must be true if sendInitialEvents = true",
            )],
        ));
    }
    let initial_events = send_initial.unwrap_or(rv.is_none() || rv == Some("0"));
    let (start, initial) = if initial_events {
        let listed = crate::storage::list_all(api.store.as_ref(), &prefix)
            .await
            .map_err(ApiError::internal)?;
        let mut objects = Vec::new();
        for kv in &listed.items {
            if r.name.is_some() && kv.key != prefix {
                continue;
            }
            let obj = from_store(r.resource, kv)?;
            if selection.matches(r.resource, &obj) {
                objects.push(obj);
            }
        }
        (listed.revision, objects)
    } else {
        let n: i64 = rv.unwrap_or("0").parse().map_err(|_| {
            ApiError::bad_request(format!("invalid resource version: {}", rv.unwrap_or("")))
        })?;
        (n, Vec::new())
    };
    let store_watch = api.store.watch(&prefix, start).await.map_err(|e| match e {
        StoreError::Compacted {
            requested,
            compacted,
        } => ApiError::gone(format!(
            "too old resource version: {requested} ({compacted})"
        )),
        other => ApiError::internal(other),
    })?;
    let timeout = match r.query.int("timeoutSeconds")? {
        Some(t) if t > 0 => Duration::from_secs(t as u64),
        _ => {
            let max = api.config.max_watch_seconds.max(2);
            Duration::from_secs(rand::rng().random_range(max / 2..=max))
        }
    };
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let pump = Pump {
        r: r.clone(),
        selection,
        format,
        exact_key: r.name.as_ref().map(|_| prefix.clone()),
        last_rv: start,
        bookmarks,
        bookmark_interval: api.config.bookmark_interval,
        tx,
        _slot: slot,
    };
    let shutdown = api.shutdown_signal();
    tokio::spawn(pump.run(
        initial,
        send_initial == Some(true),
        store_watch,
        timeout,
        shutdown,
    ));
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx)
        .map(|b| Ok::<_, std::convert::Infallible>(Frame::data(b)));
    let mut resp = Response::new(StreamBody::new(stream).boxed_unsync());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    Ok(resp)
}

/// Moves events from the store to one client.
struct Pump {
    r: ResourceRequest,
    selection: Selection,
    format: Format,
    exact_key: Option<String>,
    last_rv: i64,
    bookmarks: bool,
    bookmark_interval: Duration,
    tx: mpsc::Sender<Bytes>,
    _slot: WatchSlot,
}

impl Pump {
    fn render(&self, kind: &str, obj: &Value) -> Bytes {
        let object = match self.format {
            Format::Table(version) => {
                let (group, k) = table_kind(&self.r);
                let rv = meta::resource_version(obj).unwrap_or("").to_string();
                table(
                    group,
                    k,
                    std::slice::from_ref(obj),
                    self.r.query.get("includeObject").unwrap_or("Metadata"),
                    &rv,
                    None,
                    version,
                )
            }
            Format::Metadata => {
                json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]})
            }
            _ => obj.clone(),
        };
        let mut line =
            serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
        line.push(b'\n');
        line.into()
    }

    fn bookmark(&self, initial_end: bool) -> Bytes {
        let mut metadata = json!({"resourceVersion": self.last_rv.to_string()});
        if initial_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj = json!({"kind": self.r.resource.kind, "apiVersion": self.r.resource.api_version(), "metadata": metadata});
        let mut line =
            serde_json::to_vec(&json!({"type": "BOOKMARK", "object": obj})).unwrap_or_default();
        line.push(b'\n');
        line.into()
    }

    async fn send(&self, line: Bytes) -> bool {
        self.tx.send(line).await.is_ok()
    }

    async fn run(
        mut self,
        initial: Vec<Value>,
        initial_bookmark: bool,
        mut events: crate::storage::WatchReceiver,
        timeout: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        for obj in &initial {
            if !self.send(self.render("ADDED", obj)).await {
                return;
            }
        }
        if initial_bookmark && !self.send(self.bookmark(true)).await {
            return;
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(self.bookmark_interval);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = shutdown.changed() => return,
                _ = self.tx.closed() => return,
                _ = ticker.tick(), if self.bookmarks => {
                    if !self.send(self.bookmark(false)).await {
                        return;
                    }
                }
                next = events.recv() => match next {
                    None => return,
                    Some(Err(e)) => {
                        let status = match e {
                            StoreError::Compacted { requested, compacted } => ApiError::gone(format!("too old resource version: {requested} ({compacted})")),
                            other => ApiError::internal(other),
                        };
                        let _ = self.send(self.error_line(&status)).await;
                        return;
                    }
                    Some(Ok(event)) => {
                        if let Some(line) = self.translate(&event)
                            && !self.send(line).await
                        {
                            return;
                        }
                        self.last_rv = event.kv.mod_revision;
                    }
                }
            }
        }
    }

    fn error_line(&self, e: &ApiError) -> Bytes {
        let mut line = serde_json::to_vec(&json!({"type": "ERROR", "object": e.to_status()}))
            .unwrap_or_default();
        line.push(b'\n');
        line.into()
    }

    /// The line for a store event, or `None` when the client does not see it.
    fn translate(&self, event: &crate::storage::Event) -> Option<Bytes> {
        if self.exact_key.as_ref().is_some_and(|k| *k != event.kv.key) {
            return None;
        }
        let obj = match from_store(self.r.resource, &event.kv) {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(key = %event.kv.key, error = %e, "undecodable object in watch");
                return None;
            }
        };
        let matches_now = self.selection.matches(self.r.resource, &obj);
        let kind = match event.kind {
            EventType::Created if matches_now => "ADDED",
            EventType::Deleted if matches_now => "DELETED",
            EventType::Modified if self.selection.is_everything() => "MODIFIED",
            EventType::Modified => {
                let matched_before = event
                    .prev_value
                    .as_ref()
                    .and_then(|v| serde_json::from_slice::<Value>(v).ok())
                    .map(|prev| self.selection.matches(self.r.resource, &prev))
                    .unwrap_or(matches_now);
                match (matched_before, matches_now) {
                    (true, true) => "MODIFIED",
                    (false, true) => "ADDED",
                    (true, false) => "DELETED",
                    (false, false) => return None,
                }
            }
            _ => return None,
        };
        Some(self.render(kind, &obj))
    }
}
