//! One behavioural suite every [`Store`] implementation must pass, so the SQLite and etcd
//! backends cannot drift apart. Each backend's tests call [`run`] on a fresh, empty store.

use std::time::Duration;

use super::{EventType, ListOptions, Store, StoreError};

async fn next_event(rx: &mut super::WatchReceiver) -> super::Event {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("watch event within 10s")
        .expect("watch still open")
        .expect("watch event, not error")
}

/// Runs every check against `store`, which must be empty.
pub(crate) async fn run(store: &dyn Store) {
    create_get_update_delete(store).await;
    compare_and_swap_has_one_winner(store).await;
    list_pages_are_consistent_at_one_revision(store).await;
    watch_resumes_with_exactly_the_missed_events(store).await;
    compaction_expires_old_revisions(store).await;
    reading_everything_pages_at_one_revision(store).await;
}

async fn reading_everything_pages_at_one_revision(store: &dyn Store) {
    let total = super::PAGE * 2 + 7;
    let writes = (0..total)
        .map(|i| async move { store.create(&format!("/t/all/{i:05}"), b"x".to_vec()).await });
    for r in futures::future::join_all(writes).await {
        r.unwrap();
    }
    let all = super::list_all(store, "/t/all/").await.unwrap();
    assert_eq!(all.items.len(), total);
    assert!(
        all.items.windows(2).all(|w| w[0].key < w[1].key),
        "in key order, no repeats"
    );
    // Pages that hold only deleted keys still move on.
    for i in 0..super::PAGE + 3 {
        store.delete(&format!("/t/all/{i:05}"), None).await.unwrap();
    }
    let rest = super::list_all(store, "/t/all/").await.unwrap();
    assert_eq!(rest.items.len(), total - super::PAGE - 3);
    assert_eq!(rest.items[0].key, format!("/t/all/{:05}", super::PAGE + 3));
}

async fn create_get_update_delete(store: &dyn Store) {
    let created = store.create("/t/crud/a", b"1".to_vec()).await.unwrap();
    assert_eq!(created.create_revision, created.mod_revision);
    assert!(matches!(
        store.create("/t/crud/a", b"2".to_vec()).await,
        Err(StoreError::AlreadyExists { .. })
    ));
    let got = store.get("/t/crud/a").await.unwrap().unwrap();
    assert_eq!(got, created);
    let updated = store
        .update("/t/crud/a", created.mod_revision, b"2".to_vec())
        .await
        .unwrap();
    assert!(updated.mod_revision > created.mod_revision);
    assert_eq!(updated.create_revision, created.create_revision);
    assert!(matches!(
        store
            .update("/t/crud/a", created.mod_revision, b"3".to_vec())
            .await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(matches!(
        store.update("/t/crud/missing", 1, b"3".to_vec()).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.delete("/t/crud/a", Some(created.mod_revision)).await,
        Err(StoreError::Conflict { .. })
    ));
    let deleted = store
        .delete("/t/crud/a", Some(updated.mod_revision))
        .await
        .unwrap();
    assert_eq!(deleted.value, b"2");
    assert!(deleted.mod_revision > updated.mod_revision);
    assert_eq!(store.get("/t/crud/a").await.unwrap(), None);
    assert!(matches!(
        store.delete("/t/crud/a", None).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(
        store.current_revision().await.unwrap(),
        deleted.mod_revision
    );
    // A key can be created again after a delete, with a new create revision.
    let again = store.create("/t/crud/a", b"4".to_vec()).await.unwrap();
    assert!(again.create_revision > deleted.mod_revision);
}

async fn compare_and_swap_has_one_winner(store: &dyn Store) {
    let start = store.create("/t/cas/x", b"0".to_vec()).await.unwrap();
    let attempts = (0..16).map(|i| store.update("/t/cas/x", start.mod_revision, vec![i]));
    let results = futures::future::join_all(attempts).await;
    let winners = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(winners, 1, "{results:?}");
    assert!(
        results
            .iter()
            .filter(|r| r.is_err())
            .all(|r| matches!(r, Err(StoreError::Conflict { .. })))
    );
}

async fn list_pages_are_consistent_at_one_revision(store: &dyn Store) {
    for i in 0..5 {
        store
            .create(&format!("/t/list/{i}"), vec![i])
            .await
            .unwrap();
    }
    store.create("/t/listx", b"outside".to_vec()).await.unwrap();
    let first = store
        .list(&ListOptions {
            prefix: "/t/list/".into(),
            limit: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(first.items.len(), 2);
    assert!(first.more);
    // Changes after the first page do not show in later pages read at its revision.
    store.delete("/t/list/3", None).await.unwrap();
    store.create("/t/list/5", b"new".to_vec()).await.unwrap();
    let rest = store
        .list(&ListOptions {
            prefix: "/t/list/".into(),
            start_after: Some(first.items[1].key.clone()),
            limit: Some(10),
            revision: Some(first.revision),
        })
        .await
        .unwrap();
    let keys: Vec<_> = rest.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/t/list/2", "/t/list/3", "/t/list/4"]);
    assert!(!rest.more);
    let now = store
        .list(&ListOptions {
            prefix: "/t/list/".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(now.items.len(), 5);
    assert!(now.revision > first.revision);
}

async fn watch_resumes_with_exactly_the_missed_events(store: &dyn Store) {
    let base = store.create("/t/watch/a", b"1".to_vec()).await.unwrap();
    let b = store.create("/t/watch/b", b"1".to_vec()).await.unwrap();
    store.create("/t/other/c", b"1".to_vec()).await.unwrap();
    let a2 = store
        .update("/t/watch/a", base.mod_revision, b"2".to_vec())
        .await
        .unwrap();
    store
        .delete("/t/watch/b", Some(b.mod_revision))
        .await
        .unwrap();

    let mut rx = store.watch("/t/watch/", base.mod_revision).await.unwrap();
    let e1 = next_event(&mut rx).await;
    assert_eq!(
        (e1.kind, e1.kv.key.as_str()),
        (EventType::Created, "/t/watch/b")
    );
    let e2 = next_event(&mut rx).await;
    assert_eq!(
        (e2.kind, e2.kv.mod_revision),
        (EventType::Modified, a2.mod_revision)
    );
    let e3 = next_event(&mut rx).await;
    assert_eq!(
        (e3.kind, e3.kv.key.as_str()),
        (EventType::Deleted, "/t/watch/b")
    );
    assert_eq!(e3.kv.value, b"1", "a delete event carries the last value");
    // Live events follow the history without gaps or repeats.
    let a3 = store
        .update("/t/watch/a", a2.mod_revision, b"3".to_vec())
        .await
        .unwrap();
    let e4 = next_event(&mut rx).await;
    assert_eq!(e4.kv.mod_revision, a3.mod_revision);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), rx.recv())
            .await
            .is_err(),
        "no further events"
    );
}

async fn compaction_expires_old_revisions(store: &dyn Store) {
    let old = store.create("/t/compact/a", b"1".to_vec()).await.unwrap();
    let mid = store
        .update("/t/compact/a", old.mod_revision, b"1.5".to_vec())
        .await
        .unwrap();
    let new = store
        .update("/t/compact/a", mid.mod_revision, b"2".to_vec())
        .await
        .unwrap();
    store.compact(new.mod_revision).await.unwrap();
    assert!(store.compacted_revision().await.unwrap() >= new.mod_revision);
    match store.watch("/t/compact/", old.mod_revision).await {
        Err(StoreError::Compacted { .. }) => {}
        Ok(mut rx) => {
            // etcd reports compaction on the stream rather than at the call.
            let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .unwrap();
            assert!(
                matches!(got, Some(Err(StoreError::Compacted { .. }))),
                "{got:?}"
            );
        }
        Err(e) => panic!("unexpected {e:?}"),
    }
    let stale = store
        .list(&ListOptions {
            prefix: "/t/compact/".into(),
            revision: Some(old.mod_revision),
            ..Default::default()
        })
        .await;
    assert!(
        matches!(stale, Err(StoreError::Compacted { .. })),
        "{stale:?}"
    );
    // The current value is still there.
    assert_eq!(
        store.get("/t/compact/a").await.unwrap().unwrap().value,
        b"2"
    );
}
