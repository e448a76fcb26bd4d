//! The distributed store: etcd v3. Several API servers can share one etcd cluster; every
//! operation maps to one etcd request (a transaction for the conditional writes), and etcd's
//! revision is the store revision, exactly as upstream's storage layer uses it.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, EventType as EtcdEvent, GetOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};
use tokio::sync::mpsc;

use super::{
    Event, EventType, KeyValue, ListOptions, ListResult, Store, StoreError, StoreResult,
    WatchReceiver, prefix_end,
};

const BACKEND: &str = "etcd";
const WATCH_BUFFER: usize = 1024;

/// Parses `etcd://h1:p1,h2:p2` (or `etcd+https://...`) into endpoint URLs.
pub fn parse_url(url: &str) -> Result<Vec<String>, String> {
    let (scheme, hosts) = if let Some(h) = url.strip_prefix("etcd://") {
        ("http", h)
    } else if let Some(h) = url.strip_prefix("etcd+https://") {
        ("https", h)
    } else if let Some(h) = url.strip_prefix("etcd+http://") {
        ("http", h)
    } else {
        return Err(format!(
            "{url:?} is not an etcd URL (etcd://host:port[,host:port])"
        ));
    };
    let endpoints: Vec<String> = hosts
        .trim_end_matches('/')
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| format!("{scheme}://{h}"))
        .collect();
    if endpoints.is_empty() {
        return Err(format!("{url:?} names no etcd endpoint"));
    }
    Ok(endpoints)
}

/// The etcd store.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    compacted: Arc<AtomicI64>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EtcdStore")
    }
}

fn err(operation: &'static str) -> impl Fn(etcd_client::Error) -> StoreError {
    move |e| {
        let message = e.to_string();
        StoreError::Backend {
            backend: BACKEND,
            operation,
            message,
        }
    }
}

/// Maps etcd's revision errors to the store's.
fn revision_error(
    e: etcd_client::Error,
    requested: i64,
    compacted: i64,
    operation: &'static str,
) -> StoreError {
    let text = e.to_string();
    if text.contains("required revision has been compacted") {
        StoreError::Compacted {
            requested,
            compacted,
        }
    } else if text.contains("future revision") {
        StoreError::FutureRevision {
            requested,
            current: requested - 1,
        }
    } else {
        err(operation)(e)
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

impl EtcdStore {
    /// Connects to the etcd cluster at `endpoints` and checks that it answers.
    pub async fn connect(endpoints: &[String]) -> StoreResult<Self> {
        let client = Client::connect(endpoints, None)
            .await
            .map_err(err("connect"))?;
        let store = EtcdStore {
            client,
            compacted: Arc::new(AtomicI64::new(0)),
        };
        store.current_revision().await?;
        Ok(store)
    }

    /// Runs a transaction; returns the answer and the revision it was applied at.
    async fn txn(
        &self,
        txn: Txn,
        operation: &'static str,
    ) -> StoreResult<(etcd_client::TxnResponse, i64)> {
        let resp = self
            .client
            .kv_client()
            .txn(txn)
            .await
            .map_err(err(operation))?;
        let rev = resp.header().map(|h| h.revision()).unwrap_or_default();
        Ok((resp, rev))
    }

    async fn current(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        let resp = self
            .client
            .kv_client()
            .get(key, None)
            .await
            .map_err(err("get"))?;
        Ok(resp.kvs().first().map(to_kv))
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
        let (resp, rev) = self.txn(txn, "create").await?;
        if !resp.succeeded() {
            return Err(StoreError::AlreadyExists { key: key.into() });
        }
        Ok(KeyValue {
            key: key.into(),
            value,
            create_revision: rev,
            mod_revision: rev,
        })
    }

    async fn update(
        &self,
        key: &str,
        expected_revision: i64,
        value: Vec<u8>,
    ) -> StoreResult<KeyValue> {
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key,
                CompareOp::Equal,
                expected_revision,
            )])
            .and_then([TxnOp::put(
                key,
                value.clone(),
                Some(etcd_client::PutOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(key, None)]);
        let (resp, rev) = self.txn(txn, "update").await?;
        if resp.succeeded() {
            let create_revision = match resp.op_responses().first() {
                Some(TxnOpResponse::Put(p)) => {
                    p.prev_key().map(|kv| kv.create_revision()).unwrap_or(rev)
                }
                _ => rev,
            };
            return Ok(KeyValue {
                key: key.into(),
                value,
                create_revision,
                mod_revision: rev,
            });
        }
        let current = match resp.op_responses().first() {
            Some(TxnOpResponse::Get(g)) => g.kvs().first().map(to_kv),
            _ => None,
        };
        match current {
            Some(kv) => Err(StoreError::Conflict {
                key: key.into(),
                expected: expected_revision,
                actual: kv.mod_revision,
            }),
            None => Err(StoreError::NotFound { key: key.into() }),
        }
    }

    async fn delete(&self, key: &str, expected_revision: Option<i64>) -> StoreResult<KeyValue> {
        let condition = match expected_revision {
            Some(rev) => Compare::mod_revision(key, CompareOp::Equal, rev),
            None => Compare::create_revision(key, CompareOp::Greater, 0),
        };
        let txn = Txn::new()
            .when([condition])
            .and_then([TxnOp::delete(
                key,
                Some(DeleteOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(key, None)]);
        let (resp, rev) = self.txn(txn, "delete").await?;
        if resp.succeeded() {
            let prev = match resp.op_responses().first() {
                Some(TxnOpResponse::Delete(d)) => d.prev_kvs().first().map(to_kv),
                _ => None,
            };
            let mut kv = prev.ok_or_else(|| StoreError::NotFound { key: key.into() })?;
            kv.mod_revision = rev;
            return Ok(kv);
        }
        match resp.op_responses().first() {
            Some(TxnOpResponse::Get(g)) if !g.kvs().is_empty() => Err(StoreError::Conflict {
                key: key.into(),
                expected: expected_revision.unwrap_or_default(),
                actual: g.kvs()[0].mod_revision(),
            }),
            _ => Err(StoreError::NotFound { key: key.into() }),
        }
    }

    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        self.current(key).await
    }

    async fn list(&self, options: &ListOptions) -> StoreResult<ListResult> {
        let start = match &options.start_after {
            Some(k) => format!("{k}\0"),
            None => options.prefix.clone(),
        };
        let mut get = GetOptions::new().with_range(prefix_end(&options.prefix));
        if let Some(limit) = options.limit {
            get = get.with_limit(limit as i64 + 1);
        }
        if let Some(rev) = options.revision {
            get = get.with_revision(rev);
        }
        let compacted = self.compacted.load(Ordering::Acquire);
        let resp = self
            .client
            .kv_client()
            .get(start, Some(get))
            .await
            .map_err(|e| {
                revision_error(e, options.revision.unwrap_or_default(), compacted, "list")
            })?;
        let mut items: Vec<KeyValue> = resp.kvs().iter().map(to_kv).collect();
        let more = super::trim_page(&mut items, options.limit) || resp.more();
        let last_key = items.last().map(|kv| kv.key.clone());
        let revision = options
            .revision
            .unwrap_or_else(|| resp.header().map(|h| h.revision()).unwrap_or_default());
        Ok(ListResult {
            items,
            revision,
            more,
            last_key,
        })
    }

    async fn current_revision(&self) -> StoreResult<i64> {
        let resp = self
            .client
            .kv_client()
            .get("/", Some(GetOptions::new().with_count_only()))
            .await
            .map_err(err("revision"))?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or_default())
    }

    async fn watch(&self, prefix: &str, after_revision: i64) -> StoreResult<WatchReceiver> {
        let options = WatchOptions::new()
            .with_range(prefix_end(prefix))
            .with_start_revision(after_revision + 1)
            .with_prev_key();
        let mut stream = self
            .client
            .watch_client()
            .watch(prefix, Some(options))
            .await
            .map_err(err("watch"))?;
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let compacted = self.compacted.clone();
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    _ = tx.closed() => return,
                    m = stream.message() => m,
                };
                let resp = match message {
                    Ok(Some(resp)) => resp,
                    Ok(None) => return,
                    Err(e) => {
                        let _ = tx.send(Err(err("watch")(e))).await;
                        return;
                    }
                };
                if resp.compact_revision() > 0 {
                    compacted.fetch_max(resp.compact_revision(), Ordering::AcqRel);
                    let _ = tx
                        .send(Err(StoreError::Compacted {
                            requested: after_revision,
                            compacted: resp.compact_revision(),
                        }))
                        .await;
                    return;
                }
                if resp.canceled() {
                    let _ = tx
                        .send(Err(StoreError::Backend {
                            backend: BACKEND,
                            operation: "watch",
                            message: resp.cancel_reason().to_string(),
                        }))
                        .await;
                    return;
                }
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let event = match ev.event_type() {
                        EtcdEvent::Put => {
                            let kv = to_kv(kv);
                            let kind = if kv.create_revision == kv.mod_revision {
                                EventType::Created
                            } else {
                                EventType::Modified
                            };
                            Event {
                                kind,
                                prev_value: ev.prev_kv().map(|p| p.value().to_vec()),
                                kv,
                            }
                        }
                        EtcdEvent::Delete => {
                            let mut last = ev.prev_kv().map(to_kv).unwrap_or_else(|| to_kv(kv));
                            last.mod_revision = kv.mod_revision();
                            Event {
                                kind: EventType::Deleted,
                                kv: last,
                                prev_value: None,
                            }
                        }
                    };
                    if tx.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }

    async fn compact(&self, revision: i64) -> StoreResult<()> {
        let done = self.compacted.load(Ordering::Acquire);
        if revision <= done {
            return Ok(());
        }
        match self.client.kv_client().compact(revision, None).await {
            Ok(_) => {
                self.compacted.fetch_max(revision, Ordering::AcqRel);
                Ok(())
            }
            // Another API server compacted further already.
            Err(e) if e.to_string().contains("compacted") => {
                self.compacted.fetch_max(revision, Ordering::AcqRel);
                Ok(())
            }
            Err(e) => Err(err("compact")(e)),
        }
    }

    async fn compacted_revision(&self) -> StoreResult<i64> {
        Ok(self.compacted.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    /// A real etcd on free loopback ports, killed when dropped.
    struct EtcdProcess {
        child: Child,
        url: String,
        _dir: tempfile::TempDir,
    }

    impl Drop for EtcdProcess {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn start_etcd() -> EtcdProcess {
        let binary = ["/usr/bin/etcd", "/usr/local/bin/etcd"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists());
        let binary =
            binary.expect("etcd is not installed: apt-get install etcd-server (hack/test.sh does)");
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new(binary)
            .args(["--name", "default", "--data-dir"])
            .arg(dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &format!("default={peer_url}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        EtcdProcess {
            child,
            url,
            _dir: dir,
        }
    }

    async fn connect(url: &str) -> EtcdStore {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match EtcdStore::connect(&[url.to_string()]).await {
                Ok(s) => return s,
                Err(e) if Instant::now() > deadline => panic!("etcd did not come up: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn etcd_store_passes_the_conformance_suite() {
        let etcd = start_etcd();
        let store = connect(&etcd.url).await;
        super::super::conformance::run(&store).await;
    }

    #[test]
    fn etcd_urls_become_endpoint_lists() {
        assert_eq!(
            parse_url("etcd://127.0.0.1:2379").unwrap(),
            ["http://127.0.0.1:2379"]
        );
        assert_eq!(
            parse_url("etcd://a:1,b:2").unwrap(),
            ["http://a:1", "http://b:2"]
        );
        assert_eq!(parse_url("etcd+https://a:1").unwrap(), ["https://a:1"]);
        assert!(parse_url("http://a:1").is_err());
        assert!(parse_url("etcd://").is_err());
    }
}
