//! The etcd v3 store: the same [`Store`] semantics as the SQLite backend, served by an etcd
//! cluster through its gRPC API.
//!
//! etcd already has everything the trait asks for — one revision counter, compare-and-swap
//! transactions, reads at a past revision, watches from a revision — so every operation is one
//! request: creates and updates are transactions comparing the key's create or mod revision,
//! with a read of the key in the else branch to tell `NotFound` from `Conflict`; deletes ask
//! for the previous value so the caller gets the last object. etcd does not expose the last
//! compaction revision cheaply, so the store remembers the newest one it did or was told about
//! (by a `Compacted` error or a canceled watch).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType as EtcdEventType,
    GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions, WatchResponse, WatchStream,
};
use tokio::sync::mpsc;

use super::{
    Event, EventType, KeyValue, ListOptions, ListResult, Store, StoreError, StoreResult,
    WatchReceiver,
};

const BACKEND: &str = "etcd";
/// Events buffered per watcher.
const WATCH_BUFFER: usize = 1024;
/// How long `connect` waits for the first answer from the cluster.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one read or write may take before it fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `watch` waits for etcd to confirm the watch was created.
const WATCH_CREATE_TIMEOUT: Duration = Duration::from_secs(30);
/// etcd's message for reads and watches below the compaction revision.
const ERR_COMPACTED: &str = "required revision has been compacted";
/// etcd's message for reads above the current revision.
const ERR_FUTURE_REVISION: &str = "required revision is a future revision";

/// The etcd store. Cheap to share behind an `Arc`; the client multiplexes every request and
/// watch over its connections.
pub struct EtcdStore {
    endpoints: Vec<String>,
    client: Client,
    compacted: Arc<AtomicI64>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

/// Parses the server's `--storage` value, `etcd://host:port[,host:port...]` (or
/// `etcd+https://...`, `etcd+http://...`), into client endpoint URLs.
pub fn parse_url(url: &str) -> Result<Vec<String>, String> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("etcd+https://") {
        ("https", rest)
    } else if let Some(rest) = url.strip_prefix("etcd+http://") {
        ("http", rest)
    } else if let Some(rest) = url.strip_prefix("etcd://") {
        ("http", rest)
    } else {
        return Err(format!(
            "storage URL {url:?} must start with etcd://, etcd+http:// or etcd+https://"
        ));
    };
    let rest = rest.trim_end_matches('/');
    let mut endpoints = Vec::new();
    for host in rest.split(',') {
        let host = host.trim();
        if host.is_empty() {
            return Err(format!("storage URL {url:?} has an empty endpoint"));
        }
        if host.contains('/') || host.contains('@') {
            return Err(format!(
                "storage URL {url:?}: endpoint {host:?} must be host:port"
            ));
        }
        let has_port = match host.rsplit_once(':') {
            // `[::1]:2379` has its port after the bracket; `[::1]` alone has none.
            Some((h, port)) => {
                !h.is_empty()
                    && !port.is_empty()
                    && port.chars().all(|c| c.is_ascii_digit())
                    && (!h.starts_with('[') || h.ends_with(']'))
            }
            None => false,
        };
        let host = if has_port {
            host.to_string()
        } else if host.contains(':') && !host.starts_with('[') {
            return Err(format!(
                "storage URL {url:?}: endpoint {host:?} has an invalid port"
            ));
        } else {
            format!("{host}:2379")
        };
        endpoints.push(format!("{scheme}://{host}"));
    }
    Ok(endpoints)
}

/// What an etcd error means to the store.
enum EtcdFailure {
    /// A read or watch below the compaction revision.
    Compacted,
    /// A read above the current revision.
    FutureRevision,
    /// Anything else: the backend failed.
    Other(String),
}

fn classify(e: &etcd_client::Error) -> EtcdFailure {
    let message = match e {
        etcd_client::Error::GRpcStatus(status) => status.message().to_string(),
        other => other.to_string(),
    };
    if message.contains(ERR_COMPACTED) {
        EtcdFailure::Compacted
    } else if message.contains(ERR_FUTURE_REVISION) {
        EtcdFailure::FutureRevision
    } else {
        EtcdFailure::Other(e.to_string())
    }
}

/// Bounds one unary request: without a quorum etcd may never answer, and callers (API
/// requests, controllers) must get an error rather than hang.
async fn timed<T>(
    request: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, etcd_client::Error> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(result) => result,
        Err(_) => Err(etcd_client::Error::IoError(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {REQUEST_TIMEOUT:?}"),
        ))),
    }
}

fn backend_error(operation: &'static str, message: impl Into<String>) -> StoreError {
    StoreError::Backend {
        backend: BACKEND,
        operation,
        message: message.into(),
    }
}

fn backend_err(operation: &'static str) -> impl Fn(etcd_client::Error) -> StoreError {
    move |e| backend_error(operation, e.to_string())
}

/// The first key after every key starting with `prefix`, as etcd wants a range end: `\0`
/// (every key from the start) when no such key exists.
fn range_end(prefix: &[u8]) -> Vec<u8> {
    let mut bytes = prefix.to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0xff {
            bytes.push(last + 1);
            return bytes;
        }
    }
    vec![0]
}

/// etcd refuses empty keys; `\0` is the first key there is.
fn non_empty_key(key: &[u8]) -> Vec<u8> {
    if key.is_empty() {
        vec![0]
    } else {
        key.to_vec()
    }
}

fn to_kv(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
    }
}

fn header_revision(
    header: Option<&etcd_client::ResponseHeader>,
    operation: &'static str,
) -> StoreResult<i64> {
    header
        .map(|h| h.revision())
        .ok_or_else(|| backend_error(operation, "etcd response without a header"))
}

/// The key read by the else branch of a failed transaction, if it exists.
fn else_branch_kv(responses: &[TxnOpResponse]) -> Option<KeyValue> {
    responses.iter().find_map(|r| match r {
        TxnOpResponse::Get(get) => get.kvs().first().map(to_kv),
        _ => None,
    })
}

impl EtcdStore {
    /// Connects to the cluster at `endpoints` (`http://host:port` URLs) and checks that it
    /// answers.
    pub async fn connect(endpoints: &[String]) -> StoreResult<Self> {
        if endpoints.is_empty() {
            return Err(backend_error("connect", "no etcd endpoints given"));
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            // etcd's default keepalive policy rejects pings more often than every 5 s.
            .with_keep_alive(Duration::from_secs(30), Duration::from_secs(10));
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(backend_err("connect"))?;
        let store = EtcdStore {
            endpoints: endpoints.to_vec(),
            client,
            compacted: Arc::new(AtomicI64::new(0)),
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, store.current_revision()).await {
            Ok(Ok(_)) => Ok(store),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(backend_error(
                "connect",
                format!(
                    "no answer from {} within {CONNECT_TIMEOUT:?}",
                    endpoints.join(",")
                ),
            )),
        }
    }

    /// The error for a read or watch at `requested` that etcd says is compacted. The exact
    /// compaction revision is unknown unless this store did it, but it is past `requested`.
    fn compacted_error(&self, requested: i64) -> StoreError {
        let at_least = requested.saturating_add(1);
        let previous = self.compacted.fetch_max(at_least, Ordering::AcqRel);
        StoreError::Compacted {
            requested,
            compacted: previous.max(at_least),
        }
    }

    /// Maps an etcd error of a read at `requested`.
    async fn read_error(
        &self,
        operation: &'static str,
        requested: i64,
        e: etcd_client::Error,
    ) -> StoreError {
        match classify(&e) {
            EtcdFailure::Compacted => self.compacted_error(requested),
            EtcdFailure::FutureRevision => match self.current_revision().await {
                Ok(current) => StoreError::FutureRevision { requested, current },
                Err(e) => e,
            },
            EtcdFailure::Other(message) => backend_error(operation, message),
        }
    }
}

#[async_trait]
impl Store for EtcdStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> StoreResult<KeyValue> {
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value.clone(), None)]);
        let resp = timed(self.client.kv_client().txn(txn))
            .await
            .map_err(backend_err("create"))?;
        if !resp.succeeded() {
            return Err(StoreError::AlreadyExists {
                key: key.to_string(),
            });
        }
        let revision = header_revision(resp.header(), "create")?;
        Ok(KeyValue {
            key: key.to_string(),
            value,
            create_revision: revision,
            mod_revision: revision,
        })
    }

    async fn update(
        &self,
        key: &str,
        expected_revision: i64,
        value: Vec<u8>,
    ) -> StoreResult<KeyValue> {
        // The key must exist: a missing key has mod revision 0, and an update expecting 0
        // must not create it.
        let txn = Txn::new()
            .when([
                Compare::create_revision(key, CompareOp::Greater, 0),
                Compare::mod_revision(key, CompareOp::Equal, expected_revision),
            ])
            .and_then([TxnOp::put(
                key,
                value.clone(),
                Some(PutOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(key, None)]);
        let resp = timed(self.client.kv_client().txn(txn))
            .await
            .map_err(backend_err("update"))?;
        let responses = resp.op_responses();
        if !resp.succeeded() {
            return Err(match else_branch_kv(&responses) {
                Some(current) => StoreError::Conflict {
                    key: key.to_string(),
                    expected: expected_revision,
                    actual: current.mod_revision,
                },
                None => StoreError::NotFound {
                    key: key.to_string(),
                },
            });
        }
        let revision = header_revision(resp.header(), "update")?;
        let create_revision = responses
            .iter()
            .find_map(|r| match r {
                TxnOpResponse::Put(put) => put.prev_key().map(|kv| kv.create_revision()),
                _ => None,
            })
            .ok_or_else(|| backend_error("update", "etcd returned no previous value for a put"))?;
        Ok(KeyValue {
            key: key.to_string(),
            value,
            create_revision,
            mod_revision: revision,
        })
    }

    async fn delete(&self, key: &str, expected_revision: Option<i64>) -> StoreResult<KeyValue> {
        let mut compares = vec![Compare::create_revision(key, CompareOp::Greater, 0)];
        if let Some(expected) = expected_revision {
            compares.push(Compare::mod_revision(key, CompareOp::Equal, expected));
        }
        let txn = Txn::new()
            .when(compares)
            .and_then([TxnOp::delete(
                key,
                Some(DeleteOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(key, None)]);
        let resp = timed(self.client.kv_client().txn(txn))
            .await
            .map_err(backend_err("delete"))?;
        let responses = resp.op_responses();
        if !resp.succeeded() {
            return Err(match else_branch_kv(&responses) {
                Some(current) => StoreError::Conflict {
                    key: key.to_string(),
                    expected: expected_revision.unwrap_or_default(),
                    actual: current.mod_revision,
                },
                None => StoreError::NotFound {
                    key: key.to_string(),
                },
            });
        }
        let revision = header_revision(resp.header(), "delete")?;
        let last = responses
            .iter()
            .find_map(|r| match r {
                TxnOpResponse::Delete(del) => del.prev_kvs().first().map(to_kv),
                _ => None,
            })
            // The compare saw the key, so the delete in the same transaction removed it.
            .ok_or_else(|| {
                backend_error("delete", "etcd returned no previous value for a delete")
            })?;
        Ok(KeyValue {
            mod_revision: revision,
            ..last
        })
    }

    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        let resp = timed(self.client.kv_client().get(key, None))
            .await
            .map_err(backend_err("get"))?;
        Ok(resp.kvs().first().map(to_kv))
    }

    async fn list(&self, options: &ListOptions) -> StoreResult<ListResult> {
        let start = match &options.start_after {
            Some(k) => {
                let mut start = k.as_bytes().to_vec();
                start.push(0);
                start
            }
            None => non_empty_key(options.prefix.as_bytes()),
        };
        let mut get = GetOptions::new().with_range(range_end(options.prefix.as_bytes()));
        if let Some(limit) = options.limit {
            let fetch = i64::try_from(limit)
                .unwrap_or(i64::MAX - 1)
                .saturating_add(1);
            get = get.with_limit(fetch);
        }
        if let Some(revision) = options.revision {
            if revision <= 0 {
                // etcd reads the newest revision for 0; the trait's revision 0 predates
                // every key.
                let compacted = self.compacted.load(Ordering::Acquire);
                if revision < compacted {
                    return Err(StoreError::Compacted {
                        requested: revision,
                        compacted,
                    });
                }
                return Ok(ListResult {
                    revision,
                    ..Default::default()
                });
            }
            get = get.with_revision(revision);
        }
        let resp = match timed(self.client.kv_client().get(start, Some(get))).await {
            Ok(resp) => resp,
            Err(e) => {
                return Err(self
                    .read_error("list", options.revision.unwrap_or_default(), e)
                    .await);
            }
        };
        let revision = match options.revision {
            Some(r) => r,
            None => header_revision(resp.header(), "list")?,
        };
        let mut items: Vec<KeyValue> = resp.kvs().iter().map(to_kv).collect();
        let more = super::trim_page(&mut items, options.limit);
        let last_key = items.last().map(|kv| kv.key.clone());
        Ok(ListResult {
            items,
            revision,
            more,
            last_key,
        })
    }

    async fn current_revision(&self) -> StoreResult<i64> {
        // A linearizable read of one key nobody writes: its header carries the revision.
        let resp = timed(self.client.kv_client().get(
            [0u8],
            Some(GetOptions::new().with_keys_only().with_limit(1)),
        ))
        .await
        .map_err(backend_err("current revision"))?;
        header_revision(resp.header(), "current revision")
    }

    async fn watch(&self, prefix: &str, after_revision: i64) -> StoreResult<WatchReceiver> {
        let known = self.compacted.load(Ordering::Acquire);
        if after_revision < known {
            return Err(StoreError::Compacted {
                requested: after_revision,
                compacted: known,
            });
        }
        let options = WatchOptions::new()
            .with_range(range_end(prefix.as_bytes()))
            .with_start_revision(after_revision.saturating_add(1).max(1))
            .with_prev_key();
        let mut stream = timed(
            self.client
                .watch_client()
                .watch(non_empty_key(prefix.as_bytes()), Some(options)),
        )
        .await
        .map_err(backend_err("watch"))?;
        // Wait for etcd to accept the watch, so a refused watch fails here.
        let first = tokio::time::timeout(WATCH_CREATE_TIMEOUT, stream.message())
            .await
            .map_err(|_| {
                backend_error(
                    "watch",
                    format!("etcd did not confirm the watch within {WATCH_CREATE_TIMEOUT:?}"),
                )
            })?
            .map_err(backend_err("watch"))?
            .ok_or_else(|| backend_error("watch", "etcd closed the watch stream"))?;
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let follower = WatchFollower {
            prefix: prefix.to_string(),
            last: after_revision,
            watch_id: first.watch_id(),
            compacted: self.compacted.clone(),
            tx,
        };
        tokio::spawn(follower.run(stream, first));
        Ok(rx)
    }

    async fn compact(&self, revision: i64) -> StoreResult<()> {
        let current = self.current_revision().await?;
        let revision = revision.min(current);
        if revision <= self.compacted.load(Ordering::Acquire) || revision <= 0 {
            return Ok(());
        }
        match timed(self.client.kv_client().compact(revision, None)).await {
            Ok(_) => {}
            // Someone compacted at or past this revision already.
            Err(e) if matches!(classify(&e), EtcdFailure::Compacted) => {}
            Err(e) => return Err(backend_error("compact", e.to_string())),
        }
        self.compacted.fetch_max(revision, Ordering::AcqRel);
        Ok(())
    }

    async fn compacted_revision(&self) -> StoreResult<i64> {
        Ok(self.compacted.load(Ordering::Acquire))
    }
}

/// One watcher: forwards etcd's watch responses as store events until the receiver goes away
/// or the watch cannot go on.
struct WatchFollower {
    prefix: String,
    /// The revision of the last event sent (or the watch's starting point).
    last: i64,
    watch_id: i64,
    compacted: Arc<AtomicI64>,
    tx: mpsc::Sender<StoreResult<Event>>,
}

/// What to do after one watch response.
enum Step {
    Continue,
    Stop,
}

impl WatchFollower {
    async fn run(mut self, mut stream: WatchStream, first: WatchResponse) {
        if let Step::Stop = self.handle(first).await {
            self.cancel(&mut stream).await;
            return;
        }
        loop {
            let message = tokio::select! {
                _ = self.tx.closed() => break,
                message = stream.message() => message,
            };
            let step = match message {
                Ok(Some(resp)) => self.handle(resp).await,
                Ok(None) => {
                    self.fail(backend_error("watch", "etcd closed the watch stream"))
                        .await;
                    Step::Stop
                }
                Err(e) => {
                    self.fail(backend_error("watch", e.to_string())).await;
                    Step::Stop
                }
            };
            if let Step::Stop = step {
                break;
            }
        }
        self.cancel(&mut stream).await;
    }

    /// Tells etcd to stop the watch; dropping the stream afterwards closes it in any case.
    async fn cancel(&self, stream: &mut WatchStream) {
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.cancel(self.watch_id)).await;
    }

    async fn fail(&self, error: StoreError) {
        tracing::debug!(prefix = %self.prefix, error = %error, "etcd watch ended");
        let _ = self.tx.send(Err(error)).await;
    }

    async fn handle(&mut self, resp: WatchResponse) -> Step {
        if resp.compact_revision() != 0 {
            let compacted = resp.compact_revision();
            self.compacted.fetch_max(compacted, Ordering::AcqRel);
            self.fail(StoreError::Compacted {
                requested: self.last,
                compacted,
            })
            .await;
            return Step::Stop;
        }
        if resp.canceled() {
            let reason = match resp.cancel_reason() {
                "" => "etcd canceled the watch".to_string(),
                reason => format!("etcd canceled the watch: {reason}"),
            };
            self.fail(backend_error("watch", reason)).await;
            return Step::Stop;
        }
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let event = match ev.event_type() {
                EtcdEventType::Put if kv.create_revision() == kv.mod_revision() => Event {
                    kind: EventType::Created,
                    kv: to_kv(kv),
                    prev_value: None,
                },
                EtcdEventType::Put => Event {
                    kind: EventType::Modified,
                    kv: to_kv(kv),
                    prev_value: ev.prev_kv().map(|p| p.value().to_vec()),
                },
                EtcdEventType::Delete => {
                    // etcd's delete event has the key and the delete's revision; the last
                    // value and create revision come from the previous pair.
                    let prev = ev.prev_kv();
                    Event {
                        kind: EventType::Deleted,
                        kv: KeyValue {
                            key: String::from_utf8_lossy(kv.key()).into_owned(),
                            value: prev.map(|p| p.value().to_vec()).unwrap_or_default(),
                            create_revision: prev.map(|p| p.create_revision()).unwrap_or_default(),
                            mod_revision: kv.mod_revision(),
                        },
                        prev_value: None,
                    }
                }
            };
            self.last = event.kv.mod_revision;
            if self.tx.send(Ok(event)).await.is_err() {
                return Step::Stop;
            }
        }
        Step::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};

    const ETCD_BINARY: &str = "/usr/bin/etcd";

    /// A throwaway single-member etcd on loopback ports, killed when dropped.
    struct EtcdServer {
        child: Child,
        client_url: String,
        log: PathBuf,
        _dir: tempfile::TempDir,
    }

    impl Drop for EtcdServer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind a free loopback port")
            .port()
    }

    fn log_tail(path: &Path) -> String {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    impl EtcdServer {
        fn start() -> EtcdServer {
            assert!(
                Path::new(ETCD_BINARY).exists(),
                "{ETCD_BINARY} is missing: the etcd store tests need a real etcd; \
                 install it with `apt-get install etcd-server`"
            );
            let dir = tempfile::tempdir().expect("temporary directory");
            let client_url = format!("http://127.0.0.1:{}", free_port());
            let peer_url = format!("http://127.0.0.1:{}", free_port());
            let log = dir.path().join("etcd.log");
            let log_file = std::fs::File::create(&log).expect("etcd log file");
            let child = Command::new(ETCD_BINARY)
                .arg("--name=default")
                .arg(format!("--data-dir={}", dir.path().join("data").display()))
                .arg(format!("--listen-client-urls={client_url}"))
                .arg(format!("--advertise-client-urls={client_url}"))
                .arg(format!("--listen-peer-urls={peer_url}"))
                .arg(format!("--initial-advertise-peer-urls={peer_url}"))
                .arg(format!("--initial-cluster=default={peer_url}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
                .unwrap_or_else(|e| panic!("start {ETCD_BINARY}: {e}"));
            EtcdServer {
                child,
                client_url,
                log,
                _dir: dir,
            }
        }

        /// Connects once etcd answers, for up to 20 s.
        async fn connect(&mut self) -> EtcdStore {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!(
                        "etcd exited with {status}; its log:\n{}",
                        log_tail(&self.log)
                    );
                }
                match EtcdStore::connect(std::slice::from_ref(&self.client_url)).await {
                    Ok(store) => return store,
                    Err(e) if tokio::time::Instant::now() > deadline => panic!(
                        "etcd at {} did not answer within 20s: {e}; its log:\n{}",
                        self.client_url,
                        log_tail(&self.log)
                    ),
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn etcd_store_passes_the_conformance_suite() {
        let mut etcd = EtcdServer::start();
        let store = etcd.connect().await;
        tokio::time::timeout(
            Duration::from_secs(120),
            super::super::conformance::run(&store),
        )
        .await
        .expect("conformance suite within 120s");
    }

    /// etcd's count of live watchers, from its metrics endpoint.
    async fn etcd_watchers(client_url: &str) -> i64 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = client_url.trim_start_matches("http://");
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        conn.write_all(request.as_bytes()).await.unwrap();
        let mut body = String::new();
        conn.read_to_string(&mut body).await.unwrap();
        body.lines()
            .find_map(|l| l.strip_prefix("etcd_debugging_mvcc_watcher_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .expect("etcd_debugging_mvcc_watcher_total in etcd's metrics") as i64
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_the_receiver_cancels_the_etcd_watch() {
        let mut etcd = EtcdServer::start();
        let store = etcd.connect().await;
        tokio::time::timeout(Duration::from_secs(60), async {
            let mut rx = store.watch("/w/", 0).await.unwrap();
            let kv = store.create("/w/a", b"1".to_vec()).await.unwrap();
            let ev = rx.recv().await.unwrap().unwrap();
            assert_eq!((ev.kind, ev.kv), (EventType::Created, kv));
            assert_eq!(etcd_watchers(&etcd.client_url).await, 1);
            drop(rx);
            while etcd_watchers(&etcd.client_url).await != 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // The store goes on serving writes and new watches.
            let mut rx = store.watch("/w/", 0).await.unwrap();
            let ev = rx.recv().await.unwrap().unwrap();
            assert_eq!(ev.kv.key, "/w/a");
        })
        .await
        .expect("the etcd watch is canceled within 60s");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_at_future_revisions_are_refused() {
        let mut etcd = EtcdServer::start();
        let store = etcd.connect().await;
        tokio::time::timeout(Duration::from_secs(60), async {
            let current = store.current_revision().await.unwrap();
            let got = store
                .list(&ListOptions {
                    prefix: "/f/".into(),
                    revision: Some(current + 100),
                    ..Default::default()
                })
                .await;
            assert_eq!(
                got.unwrap_err(),
                StoreError::FutureRevision {
                    requested: current + 100,
                    current
                }
            );
        })
        .await
        .expect("test within 60s");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_compaction_by_another_client_still_expires_old_revisions() {
        let mut etcd = EtcdServer::start();
        let compactor = etcd.connect().await;
        let store = etcd.connect().await;
        tokio::time::timeout(Duration::from_secs(60), async {
            let old = store.create("/c/a", b"1".to_vec()).await.unwrap();
            let new = store
                .update("/c/a", old.mod_revision, b"2".to_vec())
                .await
                .unwrap();
            compactor.compact(new.mod_revision).await.unwrap();
            // This store did not compact, so etcd has to tell it, on the watch stream.
            assert_eq!(store.compacted_revision().await.unwrap(), 0);
            let mut rx = store.watch("/c/", old.mod_revision - 1).await.unwrap();
            let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("compaction reported within 10s");
            assert_eq!(
                got,
                Some(Err(StoreError::Compacted {
                    requested: old.mod_revision - 1,
                    compacted: new.mod_revision
                }))
            );
            assert!(rx.recv().await.is_none(), "the watch ends after the error");
            assert_eq!(store.compacted_revision().await.unwrap(), new.mod_revision);
            let stale = store
                .list(&ListOptions {
                    prefix: "/c/".into(),
                    revision: Some(old.mod_revision),
                    ..Default::default()
                })
                .await;
            assert!(
                matches!(stale, Err(StoreError::Compacted { .. })),
                "{stale:?}"
            );
            // Compacting again at or below the compaction revision is a no-op.
            let unaware = etcd.connect().await;
            unaware.compact(old.mod_revision).await.unwrap();
            assert_eq!(
                unaware.compacted_revision().await.unwrap(),
                old.mod_revision
            );
        })
        .await
        .expect("test within 60s");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connecting_where_no_etcd_listens_fails_with_a_backend_error() {
        let url = format!("http://127.0.0.1:{}", free_port());
        let got = tokio::time::timeout(Duration::from_secs(30), EtcdStore::connect(&[url]))
            .await
            .expect("connect gives up within 30s");
        assert!(
            matches!(
                got,
                Err(StoreError::Backend {
                    backend: "etcd",
                    ..
                })
            ),
            "{got:?}"
        );
    }

    #[test]
    fn storage_urls_become_client_endpoints() {
        assert_eq!(
            parse_url("etcd://127.0.0.1:2379,127.0.0.1:22379").unwrap(),
            ["http://127.0.0.1:2379", "http://127.0.0.1:22379"]
        );
        assert_eq!(
            parse_url("etcd+https://etcd-0:2379,etcd-1").unwrap(),
            ["https://etcd-0:2379", "https://etcd-1:2379"]
        );
        assert_eq!(
            parse_url("etcd://[::1]:2379/").unwrap(),
            ["http://[::1]:2379"]
        );
        assert!(parse_url("sqlite:///var/lib/state.db").is_err());
        assert!(parse_url("etcd://").is_err());
        assert!(parse_url("etcd://a:2379,,b:2379").is_err());
        assert!(parse_url("etcd://a:port").is_err());
    }

    #[test]
    fn range_ends_cover_exactly_the_prefix() {
        assert_eq!(range_end(b"/registry/pods/"), b"/registry/pods0");
        assert_eq!(range_end(b"a\xff"), b"b");
        assert_eq!(range_end(b""), [0]);
    }
}
