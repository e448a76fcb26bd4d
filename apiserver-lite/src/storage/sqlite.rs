//! The embedded store: one SQLite file in WAL mode.
//!
//! Every change appends a row to one table (`kv`): the row id is the revision, a delete is a
//! row marked `deleted` that keeps the last value. The current value of a key is its newest
//! row; a read at an older revision takes the newest row at or before it, so paged lists stay
//! consistent. Compaction drops rows that a newer row at or before the compaction revision
//! supersedes, then checkpoints the WAL and returns free pages, so lease churn does not grow
//! the file without bound.
//!
//! Writes go through one writer thread that commits whatever has queued up as one transaction
//! (group commit): with `synchronous=FULL` every acknowledged write is on disk, yet concurrent
//! writers share one fsync. Reads use a small pool of read-only connections. Watches read
//! history from the table, then follow the writer's broadcast of committed events; a watcher
//! that falls behind the broadcast re-reads the table instead of losing events.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{
    Event, EventType, KeyValue, ListOptions, ListResult, Store, StoreError, StoreResult,
    WatchReceiver, prefix_end,
};

const BACKEND: &str = "sqlite";
/// Write operations committed together at most.
const MAX_BATCH: usize = 512;
/// Batches of committed events the broadcast keeps. The ring holds its values until they
/// are overwritten, so it is kept small: a watcher that falls further behind re-reads the
/// table, which has every event anyway.
const BROADCAST_CAPACITY: usize = 64;
/// Events buffered per watcher.
const WATCH_BUFFER: usize = 1024;
const READERS: usize = 4;

fn backend_err(operation: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |e| StoreError::Backend {
        backend: BACKEND,
        operation,
        message: e.to_string(),
    }
}

enum WriteOp {
    Create {
        key: String,
        value: Vec<u8>,
    },
    Update {
        key: String,
        expected: i64,
        value: Vec<u8>,
    },
    Delete {
        key: String,
        expected: Option<i64>,
    },
    Compact {
        revision: i64,
    },
}

struct WriteRequest {
    op: WriteOp,
    reply: oneshot::Sender<StoreResult<Option<Event>>>,
}

/// The SQLite store. Cheap to share behind an `Arc`.
pub struct SqliteStore {
    path: PathBuf,
    writer: mpsc::Sender<WriteRequest>,
    readers: Arc<ReaderPool>,
    revision: Arc<AtomicI64>,
    compacted: Arc<AtomicI64>,
    events: broadcast::Sender<Arc<Vec<Event>>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

fn open_connection(path: &Path, read_only: bool) -> rusqlite::Result<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> StoreResult<Self> {
        let open = backend_err("open");
        let writer_conn = open_connection(path, false).map_err(&open)?;
        writer_conn
            .execute_batch(
                "PRAGMA auto_vacuum = INCREMENTAL;
                 PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = FULL;
                 CREATE TABLE IF NOT EXISTS kv (
                     rev INTEGER PRIMARY KEY AUTOINCREMENT,
                     key TEXT NOT NULL,
                     deleted INTEGER NOT NULL,
                     create_rev INTEGER NOT NULL,
                     prev_rev INTEGER,
                     value BLOB NOT NULL
                 );
                 CREATE INDEX IF NOT EXISTS kv_key_rev ON kv (key, rev);
                 CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);",
            )
            .map_err(&open)?;
        let revision: i64 = writer_conn
            .query_row(
                "SELECT seq FROM sqlite_sequence WHERE name = 'kv'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(&open)?
            .unwrap_or(0);
        let compacted: i64 = writer_conn
            .query_row("SELECT value FROM meta WHERE name = 'compacted'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(&open)?
            .unwrap_or(0);
        let readers = (0..READERS)
            .map(|_| open_connection(path, true).map(Mutex::new))
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(&open)?;

        let revision = Arc::new(AtomicI64::new(revision));
        let compacted = Arc::new(AtomicI64::new(compacted));
        let (events, _) = broadcast::channel(BROADCAST_CAPACITY);
        let (writer, rx) = mpsc::channel(4 * MAX_BATCH);
        let writer_state = Writer {
            conn: writer_conn,
            revision: revision.clone(),
            compacted: compacted.clone(),
            events: events.clone(),
        };
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_state.run(rx))
            .map_err(|e| StoreError::Backend {
                backend: BACKEND,
                operation: "open",
                message: e.to_string(),
            })?;
        Ok(SqliteStore {
            path: path.to_path_buf(),
            writer,
            readers: Arc::new(ReaderPool {
                connections: readers,
                next: AtomicUsize::new(0),
            }),
            revision,
            compacted,
            events,
        })
    }

    async fn write(&self, op: WriteOp) -> StoreResult<Option<Event>> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(WriteRequest { op, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` on a reader connection on the blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        ReaderPool::read(&self.readers, f).await
    }

    fn check_revision(&self, requested: i64) -> StoreResult<()> {
        let compacted = self.compacted.load(Ordering::Acquire);
        if requested < compacted {
            return Err(StoreError::Compacted {
                requested,
                compacted,
            });
        }
        let current = self.revision.load(Ordering::Acquire);
        if requested > current {
            return Err(StoreError::FutureRevision { requested, current });
        }
        Ok(())
    }
}

/// The read-only connections every read and watch shares (a watch holds none between reads,
/// so thousands of watches cost no file descriptors).
struct ReaderPool {
    connections: Vec<Mutex<Connection>>,
    next: AtomicUsize,
}

impl ReaderPool {
    /// Runs `f` on a free connection (or waits for one) on the blocking pool.
    async fn read<T: Send + 'static>(
        pool: &Arc<ReaderPool>,
        f: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let start = pool.next.fetch_add(1, Ordering::Relaxed);
        let pool = pool.clone();
        tokio::task::spawn_blocking(move || {
            let n = pool.connections.len();
            for i in 0..n {
                if let Ok(conn) = pool.connections[(start + i) % n].try_lock() {
                    return f(&conn);
                }
            }
            let conn = pool.connections[start % n]
                .lock()
                .map_err(|_| StoreError::Closed)?;
            f(&conn)
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }
}

fn row_to_kv(row: &rusqlite::Row<'_>) -> rusqlite::Result<KeyValue> {
    Ok(KeyValue {
        mod_revision: row.get(0)?,
        key: row.get(1)?,
        create_revision: row.get(2)?,
        value: row.get(3)?,
    })
}

fn latest(conn: &Connection, key: &str) -> rusqlite::Result<Option<(KeyValue, bool)>> {
    conn.prepare_cached("SELECT rev, key, create_rev, value, deleted FROM kv WHERE key = ?1 ORDER BY rev DESC LIMIT 1")?
        .query_row(params![key], |row| Ok((row_to_kv(row)?, row.get::<_, i64>(4)? != 0)))
        .optional()
}

/// Events after `after` under `prefix`, at most `limit` of them, in revision order.
fn history(
    conn: &Connection,
    prefix: &str,
    after: i64,
    limit: usize,
) -> rusqlite::Result<Vec<Event>> {
    let end = prefix_end(prefix);
    let mut stmt = conn.prepare_cached(
        "SELECT kv.rev, kv.key, kv.create_rev, kv.value, kv.deleted, prev.value FROM kv
         LEFT JOIN kv AS prev ON prev.rev = kv.prev_rev AND kv.deleted = 0
         WHERE kv.rev > ?1 AND kv.key >= ?2 AND kv.key < ?3 ORDER BY kv.rev LIMIT ?4",
    )?;
    let rows = stmt.query_map(params![after, prefix, end, limit as i64], |row| {
        let kv = row_to_kv(row)?;
        let kind = if row.get::<_, i64>(4)? != 0 {
            EventType::Deleted
        } else if kv.create_revision == kv.mod_revision {
            EventType::Created
        } else {
            EventType::Modified
        };
        Ok(Event {
            kind,
            kv,
            prev_value: row.get(5)?,
        })
    })?;
    rows.collect()
}

struct Writer {
    conn: Connection,
    revision: Arc<AtomicI64>,
    compacted: Arc<AtomicI64>,
    events: broadcast::Sender<Arc<Vec<Event>>>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<WriteRequest>) {
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(more) => batch.push(more),
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
        tracing::debug!("sqlite writer stopped");
    }

    fn commit(&mut self, batch: Vec<WriteRequest>) {
        let compactions = batch
            .iter()
            .filter(|r| matches!(r.op, WriteOp::Compact { .. }))
            .count();
        let outcome = (|| -> rusqlite::Result<Vec<StoreResult<Option<Event>>>> {
            let tx = self.conn.transaction()?;
            let mut results = Vec::with_capacity(batch.len());
            for req in &batch {
                results.push(apply(&tx, &req.op)?);
            }
            tx.commit()?;
            Ok(results)
        })();
        match outcome {
            Ok(results) => {
                let mut committed = Vec::new();
                for r in results.iter().flatten().flatten() {
                    committed.push(r.clone());
                }
                if let Some(last) = committed.last() {
                    self.revision.store(last.kv.mod_revision, Ordering::Release);
                }
                if let Ok(c) = self.conn.query_row(
                    "SELECT value FROM meta WHERE name = 'compacted'",
                    [],
                    |r| r.get(0),
                ) {
                    self.compacted.store(c, Ordering::Release);
                }
                if !committed.is_empty() {
                    // No receivers is fine: nobody watches.
                    let _ = self.events.send(Arc::new(committed));
                }
                for (req, result) in batch.into_iter().zip(results) {
                    let _ = req.reply.send(result);
                }
                if compactions > 0 {
                    self.reclaim_space();
                }
            }
            Err(e) => {
                tracing::error!(error = %e, writes = batch.len(), "sqlite commit failed");
                let err = backend_err("commit")(e);
                for req in batch {
                    let _ = req.reply.send(Err(err.clone()));
                }
            }
        }
    }

    fn reclaim_space(&self) {
        if let Err(e) = self
            .conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA incremental_vacuum;")
        {
            tracing::warn!(error = %e, "sqlite checkpoint after compaction failed");
        }
    }
}

/// Applies one write inside the batch transaction. The outer error aborts the whole batch
/// (database failure); the inner one is this request's answer.
fn apply(
    tx: &rusqlite::Transaction<'_>,
    op: &WriteOp,
) -> rusqlite::Result<StoreResult<Option<Event>>> {
    let insert = |key: &str,
                  deleted: bool,
                  prev: Option<&KeyValue>,
                  value: &[u8]|
     -> rusqlite::Result<KeyValue> {
        let create_rev = prev.map(|p| p.create_revision);
        tx.prepare_cached(
            "INSERT INTO kv (key, deleted, create_rev, prev_rev, value) VALUES (?1, ?2, COALESCE(?3, 0), ?4, ?5)",
        )?
        .execute(params![key, deleted as i64, create_rev, prev.map(|p| p.mod_revision), value])?;
        let rev = tx.last_insert_rowid();
        let create_revision = match create_rev {
            Some(c) => c,
            None => {
                tx.prepare_cached("UPDATE kv SET create_rev = rev WHERE rev = ?1")?
                    .execute(params![rev])?;
                rev
            }
        };
        Ok(KeyValue {
            key: key.to_string(),
            value: value.to_vec(),
            create_revision,
            mod_revision: rev,
        })
    };
    Ok(match op {
        WriteOp::Create { key, value } => match latest(tx, key)? {
            Some((_, false)) => Err(StoreError::AlreadyExists { key: key.clone() }),
            _ => Ok(Some(Event {
                kind: EventType::Created,
                kv: insert(key, false, None, value)?,
                prev_value: None,
            })),
        },
        WriteOp::Update {
            key,
            expected,
            value,
        } => match latest(tx, key)? {
            Some((cur, false)) if cur.mod_revision == *expected => {
                let kv = insert(key, false, Some(&cur), value)?;
                Ok(Some(Event {
                    kind: EventType::Modified,
                    kv,
                    prev_value: Some(cur.value),
                }))
            }
            Some((cur, false)) => Err(StoreError::Conflict {
                key: key.clone(),
                expected: *expected,
                actual: cur.mod_revision,
            }),
            _ => Err(StoreError::NotFound { key: key.clone() }),
        },
        WriteOp::Delete { key, expected } => match latest(tx, key)? {
            Some((cur, false)) if expected.is_none_or(|e| e == cur.mod_revision) => {
                let kv = insert(key, true, Some(&cur), &cur.value)?;
                Ok(Some(Event {
                    kind: EventType::Deleted,
                    kv,
                    prev_value: None,
                }))
            }
            Some((cur, false)) => Err(StoreError::Conflict {
                key: key.clone(),
                expected: expected.unwrap_or_default(),
                actual: cur.mod_revision,
            }),
            _ => Err(StoreError::NotFound { key: key.clone() }),
        },
        WriteOp::Compact { revision } => {
            let done: i64 = tx
                .query_row("SELECT value FROM meta WHERE name = 'compacted'", [], |r| {
                    r.get(0)
                })
                .optional()?
                .unwrap_or(0);
            if *revision > done {
                tx.execute(
                    "DELETE FROM kv WHERE rev <= ?1 AND (deleted = 1 OR EXISTS (
                         SELECT 1 FROM kv AS newer WHERE newer.key = kv.key AND newer.rev > kv.rev AND newer.rev <= ?1))",
                    params![revision],
                )?;
                tx.execute(
                    "INSERT INTO meta (name, value) VALUES ('compacted', ?1)
                     ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    params![revision],
                )?;
            }
            Ok(None)
        }
    })
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> StoreResult<KeyValue> {
        let ev = self
            .write(WriteOp::Create {
                key: key.to_string(),
                value,
            })
            .await?;
        ev.map(|e| e.kv).ok_or(StoreError::Closed)
    }

    async fn update(
        &self,
        key: &str,
        expected_revision: i64,
        value: Vec<u8>,
    ) -> StoreResult<KeyValue> {
        let ev = self
            .write(WriteOp::Update {
                key: key.to_string(),
                expected: expected_revision,
                value,
            })
            .await?;
        ev.map(|e| e.kv).ok_or(StoreError::Closed)
    }

    async fn delete(&self, key: &str, expected_revision: Option<i64>) -> StoreResult<KeyValue> {
        let ev = self
            .write(WriteOp::Delete {
                key: key.to_string(),
                expected: expected_revision,
            })
            .await?;
        ev.map(|e| e.kv).ok_or(StoreError::Closed)
    }

    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        let key = key.to_string();
        self.read(move |conn| {
            Ok(latest(conn, &key)
                .map_err(backend_err("get"))?
                .and_then(|(kv, deleted)| (!deleted).then_some(kv)))
        })
        .await
    }

    async fn list(&self, options: &ListOptions) -> StoreResult<ListResult> {
        let revision = match options.revision {
            Some(r) => {
                self.check_revision(r)?;
                r
            }
            None => self.revision.load(Ordering::Acquire),
        };
        let start = match &options.start_after {
            Some(k) => format!("{k}\0"),
            None => options.prefix.clone(),
        };
        let end = prefix_end(&options.prefix);
        let fetch = options.limit.map(|l| l as i64 + 1).unwrap_or(-1);
        // The page limit applies to keys (the newest row of each at the revision), deleted
        // ones included, so a page costs what it returns, not the whole range.
        let mut rows = self
            .read(move |conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT kv.rev, kv.key, kv.create_rev, kv.value, kv.deleted FROM kv
                         JOIN (SELECT MAX(rev) AS rev FROM kv WHERE key >= ?1 AND key < ?2 AND rev <= ?3
                               GROUP BY key ORDER BY key LIMIT ?4) AS newest
                           ON kv.rev = newest.rev
                         ORDER BY kv.key",
                    )
                    .map_err(backend_err("list"))?;
                let rows = stmt
                    .query_map(params![start, end, revision, fetch], |row| Ok((row_to_kv(row)?, row.get::<_, i64>(4)? != 0)))
                    .map_err(backend_err("list"))?;
                rows.collect::<rusqlite::Result<Vec<_>>>().map_err(backend_err("list"))
            })
            .await?;
        let more = options.limit.is_some_and(|l| rows.len() > l);
        if let Some(l) = options.limit {
            rows.truncate(l);
        }
        let last_key = rows.last().map(|(kv, _)| kv.key.clone());
        let items = rows
            .into_iter()
            .filter(|(_, deleted)| !deleted)
            .map(|(kv, _)| kv)
            .collect();
        Ok(ListResult {
            items,
            revision,
            more,
            last_key,
        })
    }

    async fn current_revision(&self) -> StoreResult<i64> {
        Ok(self.revision.load(Ordering::Acquire))
    }

    async fn watch(&self, prefix: &str, after_revision: i64) -> StoreResult<WatchReceiver> {
        let compacted = self.compacted.load(Ordering::Acquire);
        // The compaction revision itself stays readable, as in etcd.
        if after_revision + 1 < compacted {
            return Err(StoreError::Compacted {
                requested: after_revision,
                compacted,
            });
        }
        let live = self.events.subscribe();
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let follower = WatchFollower {
            prefix: prefix.to_string(),
            last: after_revision,
            readers: self.readers.clone(),
            tx,
        };
        tokio::spawn(follower.run(live));
        Ok(rx)
    }

    async fn compact(&self, revision: i64) -> StoreResult<()> {
        let current = self.revision.load(Ordering::Acquire);
        self.write(WriteOp::Compact {
            revision: revision.min(current),
        })
        .await
        .map(|_| ())
    }

    async fn compacted_revision(&self) -> StoreResult<i64> {
        Ok(self.compacted.load(Ordering::Acquire))
    }
}

/// One watcher: catches up from the table, then follows the broadcast.
struct WatchFollower {
    prefix: String,
    last: i64,
    readers: Arc<ReaderPool>,
    tx: mpsc::Sender<StoreResult<Event>>,
}

impl WatchFollower {
    /// The next events from the table, read on the blocking pool.
    async fn read_history(&mut self) -> StoreResult<Vec<Event>> {
        let (prefix, last) = (self.prefix.clone(), self.last);
        ReaderPool::read(&self.readers, move |conn| {
            history(conn, &prefix, last, 1000).map_err(backend_err("watch"))
        })
        .await
    }

    async fn run(mut self, mut live: broadcast::Receiver<Arc<Vec<Event>>>) {
        loop {
            // Catch up from the table until it has nothing newer than what was sent.
            loop {
                let batch = self.read_history().await;
                match batch {
                    Ok(events) if events.is_empty() => break,
                    Ok(events) => {
                        for ev in events {
                            self.last = ev.kv.mod_revision;
                            if self.tx.send(Ok(ev)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = self.tx.send(Err(e)).await;
                        return;
                    }
                }
            }
            // Follow live events until the broadcast runs ahead of this watcher.
            loop {
                tokio::select! {
                    _ = self.tx.closed() => return,
                    got = live.recv() => match got {
                        Ok(batch) => {
                            for ev in batch.iter() {
                                if ev.kv.mod_revision <= self.last || !ev.kv.key.starts_with(&self.prefix) {
                                    continue;
                                }
                                self.last = ev.kv.mod_revision;
                                if self.tx.send(Ok(ev.clone())).await.is_err() {
                                    return;
                                }
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => break,
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_store_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("state.db")).unwrap();
        super::super::conformance::run(&store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_watcher_far_behind_the_broadcast_still_sees_every_event_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("state.db")).unwrap();
        let mut rx = store.watch("/lag/", 0).await.unwrap();
        // Far more commits than the broadcast keeps, while the watcher reads nothing.
        let total = BROADCAST_CAPACITY * 20 + WATCH_BUFFER;
        for i in 0..total {
            store
                .create(&format!("/lag/{i:06}"), vec![1])
                .await
                .unwrap();
        }
        let mut last = 0;
        for i in 0..total {
            let ev = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(ev.kv.key, format!("/lag/{i:06}"));
            assert!(ev.kv.mod_revision > last);
            last = ev.kv.mod_revision;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn data_and_revisions_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let rev = {
            let store = SqliteStore::open(&path).unwrap();
            store.create("/a/1", b"one".to_vec()).await.unwrap();
            store
                .create("/a/2", b"two".to_vec())
                .await
                .unwrap()
                .mod_revision
        };
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.current_revision().await.unwrap(), rev);
        let next = store.create("/a/3", b"three".to_vec()).await.unwrap();
        assert!(next.mod_revision > rev);
        assert_eq!(store.get("/a/1").await.unwrap().unwrap().value, b"one");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn compaction_keeps_the_file_bounded_under_churn() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = SqliteStore::open(&path).unwrap();
        let mut kv = store.create("/leases/n1", vec![7u8; 512]).await.unwrap();
        for round in 0..4 {
            for _ in 0..500 {
                kv = store
                    .update("/leases/n1", kv.mod_revision, vec![round as u8; 512])
                    .await
                    .unwrap();
            }
            store.compact(kv.mod_revision).await.unwrap();
        }
        let rows: i64 = open_connection(&path, true)
            .unwrap()
            .query_row("SELECT COUNT(*) FROM kv", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1, "only the newest row of the lease remains");
        let bytes = std::fs::metadata(&path).unwrap().len();
        assert!(
            bytes < 512 * 1024,
            "database file is {bytes} bytes after 2000 updates"
        );
    }
}
