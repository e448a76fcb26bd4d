//! The revisioned key-value store the API server keeps objects in.
//!
//! One trait, [`Store`], with the operations the API layer needs — create-if-absent, update
//! with compare-and-swap on the revision, get, range by prefix with limit and continue, delete,
//! watch from a revision, compaction — and two implementations: [`sqlite::SqliteStore`] (the
//! embedded default) and [`etcd::EtcdStore`]. Revisions are one counter for the whole store,
//! exactly like etcd's, and become the objects' resourceVersions.

pub mod etcd;
pub mod sqlite;

#[cfg(test)]
pub(crate) mod conformance;

use async_trait::async_trait;
use tokio::sync::mpsc;

/// One stored key at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The full key, e.g. `/registry/pods/default/web`.
    pub key: String,
    /// The stored bytes (JSON objects, without resourceVersion).
    pub value: Vec<u8>,
    /// The revision that created the key.
    pub create_revision: i64,
    /// The revision of the last change: the object's resourceVersion.
    pub mod_revision: i64,
}

/// What a watch event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// The key was created.
    Created,
    /// The key was updated.
    Modified,
    /// The key was deleted; the event carries its last value.
    Deleted,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub kind: EventType,
    /// The new value, or the last value before a delete; `mod_revision` is the revision of
    /// the change itself in every case.
    pub kv: KeyValue,
    /// For `Modified`, the value before the change, so filtered watches can tell when an
    /// object stops or starts matching.
    pub prev_value: Option<Vec<u8>>,
}

/// A range read.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// Only keys starting with this prefix.
    pub prefix: String,
    /// Only keys strictly after this one (the continue token's key).
    pub start_after: Option<String>,
    /// At most this many items; `None` for all.
    pub limit: Option<usize>,
    /// Read as of this revision; `None` for the current one.
    pub revision: Option<i64>,
}

/// The answer to a range read.
#[derive(Debug, Clone, Default)]
pub struct ListResult {
    /// The items, in key order.
    pub items: Vec<KeyValue>,
    /// The revision the read was served at.
    pub revision: i64,
    /// Whether keys remain after the last item.
    pub more: bool,
    /// The last key the read examined (it may be past the last item when deleted keys were
    /// skipped): where the next page starts.
    pub last_key: Option<String>,
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    /// Create of a key that exists.
    #[error("key {key} already exists")]
    AlreadyExists {
        /// The key.
        key: String,
    },
    /// Update or delete of a key that does not exist.
    #[error("key {key} not found")]
    NotFound {
        /// The key.
        key: String,
    },
    /// Compare-and-swap failed: the key changed since the expected revision.
    #[error("key {key} is at revision {actual}, not {expected}")]
    Conflict {
        /// The key.
        key: String,
        /// The revision the caller expected.
        expected: i64,
        /// The revision the key is at.
        actual: i64,
    },
    /// The requested revision is older than the last compaction.
    #[error("revision {requested} has been compacted (oldest available is {compacted})")]
    Compacted {
        /// The revision asked for.
        requested: i64,
        /// The compaction revision.
        compacted: i64,
    },
    /// The requested revision does not exist yet.
    #[error("revision {requested} is newer than the current revision {current}")]
    FutureRevision {
        /// The revision asked for.
        requested: i64,
        /// The current revision.
        current: i64,
    },
    /// The backend failed (I/O, disk full, database error, network to etcd).
    #[error("{backend} storage failed during {operation}: {message}")]
    Backend {
        /// `sqlite` or `etcd`.
        backend: &'static str,
        /// What the store was doing.
        operation: &'static str,
        /// The underlying error.
        message: String,
    },
    /// The store is shutting down.
    #[error("storage is closed")]
    Closed,
}

/// Result of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// The receiving end of a watch: events in revision order. The stream ends with an error when
/// the watch cannot go on (compaction, backend failure) and closes when the store shuts down.
pub type WatchReceiver = mpsc::Receiver<StoreResult<Event>>;

/// A revisioned key-value store.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A short name for logs: `sqlite` or `etcd`.
    fn backend(&self) -> &'static str;

    /// Creates `key` unless it exists.
    async fn create(&self, key: &str, value: Vec<u8>) -> StoreResult<KeyValue>;

    /// Replaces `key` if its mod revision is still `expected_revision`.
    async fn update(
        &self,
        key: &str,
        expected_revision: i64,
        value: Vec<u8>,
    ) -> StoreResult<KeyValue>;

    /// Deletes `key`, if given only when its mod revision is `expected_revision`. Returns the
    /// last value, with `mod_revision` set to the revision of the delete.
    async fn delete(&self, key: &str, expected_revision: Option<i64>) -> StoreResult<KeyValue>;

    /// Reads `key` at the current revision.
    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>>;

    /// Reads a range of keys.
    async fn list(&self, options: &ListOptions) -> StoreResult<ListResult>;

    /// The current revision of the whole store.
    async fn current_revision(&self) -> StoreResult<i64>;

    /// Watches keys under `prefix`, starting with the first change after `after_revision`.
    async fn watch(&self, prefix: &str, after_revision: i64) -> StoreResult<WatchReceiver>;

    /// Forgets history before `revision` (as etcd does, the revision itself stays readable):
    /// reads at and watches from older revisions then fail with [`StoreError::Compacted`].
    async fn compact(&self, revision: i64) -> StoreResult<()>;

    /// The revision of the last compaction (0 if none).
    async fn compacted_revision(&self) -> StoreResult<i64>;
}

/// How many keys one range read of [`list_all`] asks for: bounded so no single response of
/// either backend grows past its message limits (etcd's gRPC default is 4 MiB).
pub const PAGE: usize = 500;

/// Reads every key under `prefix`, page by page at the revision of the first page, so the
/// result is one consistent snapshot however many keys there are.
pub async fn list_all(store: &dyn Store, prefix: &str) -> StoreResult<ListResult> {
    let mut out = ListResult::default();
    let mut options = ListOptions {
        prefix: prefix.to_string(),
        limit: Some(PAGE),
        ..Default::default()
    };
    loop {
        let page = store.list(&options).await?;
        out.revision = page.revision;
        options.revision = Some(page.revision);
        out.items.extend(page.items);
        if !page.more {
            return Ok(out);
        }
        options.start_after = Some(next_start(
            &options.start_after,
            page.last_key,
            store.backend(),
        )?);
    }
}

/// The key the next page starts after; a backend that reports more keys without moving past
/// the previous page is a backend error, not a reason to read the same page forever.
pub(crate) fn next_start(
    previous: &Option<String>,
    last_key: Option<String>,
    backend: &'static str,
) -> StoreResult<String> {
    match last_key {
        Some(k) if previous.as_ref().is_none_or(|p| *p < k) => Ok(k),
        _ => Err(StoreError::Backend {
            backend,
            operation: "list",
            message: "a page reported more keys but did not advance".into(),
        }),
    }
}

/// Trims a range read of `limit + 1` items to the page, telling whether more remain.
pub(crate) fn trim_page(items: &mut Vec<KeyValue>, limit: Option<usize>) -> bool {
    match limit {
        Some(l) if items.len() > l => {
            items.truncate(l);
            true
        }
        _ => false,
    }
}

/// The first key after every key with `prefix`: the end of a prefix range.
pub fn prefix_end(prefix: &str) -> String {
    let mut bytes = prefix.as_bytes().to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0xff {
            bytes.push(last + 1);
            // Keys are ASCII paths, so the result stays valid UTF-8.
            return String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    "\u{10FFFF}".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_that_does_not_advance_is_an_error_not_a_loop() {
        assert_eq!(next_start(&None, Some("/a".into()), "x").unwrap(), "/a");
        assert_eq!(
            next_start(&Some("/a".into()), Some("/b".into()), "x").unwrap(),
            "/b"
        );
        assert!(next_start(&Some("/b".into()), Some("/b".into()), "x").is_err());
        assert!(next_start(&Some("/b".into()), None, "x").is_err());
    }

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end("/registry/pods/"), "/registry/pods0");
        assert!(*"/registry/pods/default/x" < *prefix_end("/registry/pods/"));
    }
}
