//! The `mecha-conformance` state suite, run against every state store of this crate.

#![cfg(feature = "state-sqlite")]

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use mecha_components::state::in_memory::InMemoryStateStore;
use mecha_components::state::sqlite::SqliteStateStore;
use mecha_core::Metadata;
use mecha_core::component::ComponentInit;
use mecha_core::state::{GetRequest, SetRequest, StateError, StateStore};

fn init(name: &str, metadata: &[(&str, &str)]) -> ComponentInit {
    ComponentInit {
        name: name.to_owned(),
        metadata: Metadata::new(
            metadata
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<HashMap<_, _>>(),
        ),
        app_id: "conformance".to_owned(),
    }
}

async fn sqlite(connection_string: &str) -> Arc<dyn StateStore> {
    SqliteStateStore::create(init("sqlite", &[("connectionString", connection_string)]))
        .await
        .unwrap_or_else(|e| panic!("opening sqlite at {connection_string}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory() {
    let store = InMemoryStateStore::create(init("memory", &[]))
        .await
        .unwrap();
    mecha_conformance::state::run(|| {
        let store = store.clone();
        async move { store }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    // A directory that does not exist yet: the store creates it.
    let path = dir.path().join("nested").join("state.db");
    let path = path.to_str().unwrap().to_owned();
    // A store per check, all on one file: also exercises reopening an existing database.
    mecha_conformance::state::run(|| sqlite(&path)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_uri() {
    let dir = tempfile::tempdir().unwrap();
    let uri = format!(
        "file:{}?_pragma=busy_timeout(5000)&_txlock=immediate",
        dir.path().join("uri.db").display()
    );
    let store = sqlite(&uri).await;
    mecha_conformance::state::run(|| {
        let store = store.clone();
        async move { store }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_in_memory() {
    let store = sqlite(":memory:").await;
    mecha_conformance::state::run(|| {
        let store = store.clone();
        async move { store }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_two_stores_share_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let path = path.to_str().unwrap();
    let (a, b) = (sqlite(path).await, sqlite(path).await);
    let get = |key: &str| GetRequest {
        key: key.to_owned(),
        ..GetRequest::default()
    };
    let set = |value: &'static str, etag: Option<String>| SetRequest {
        key: "shared".to_owned(),
        value: Bytes::from_static(value.as_bytes()),
        etag,
        ..SetRequest::default()
    };

    a.set(&set("from a", None)).await.unwrap();
    let seen = b.get(&get("shared")).await.unwrap().unwrap();
    assert_eq!(seen.data, "from a");
    let etag = seen.etag.clone();
    assert_eq!(a.get(&get("shared")).await.unwrap().unwrap().etag, etag);

    b.set(&set("from b", etag.clone())).await.unwrap();
    assert_eq!(
        a.set(&set("stale from a", etag)).await,
        Err(StateError::EtagMismatch)
    );
    let now = a.get(&get("shared")).await.unwrap().unwrap();
    assert_eq!(now.data, "from b");
    a.set(&set("fresh from a", now.etag)).await.unwrap();
    assert_eq!(
        b.get(&get("shared")).await.unwrap().unwrap().data,
        "fresh from a"
    );

    // Writers racing through both stores on one etag: SQLite alone must pick one winner.
    let start = a.get(&get("shared")).await.unwrap().unwrap().etag;
    let mut racers = tokio::task::JoinSet::new();
    for i in 0..10 {
        let (store, req) = ([&a, &b][i % 2].clone(), set("racer", start.clone()));
        racers.spawn(async move { store.set(&req).await });
    }
    let results = racers.join_all().await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Ok(()) | Err(StateError::EtagMismatch)))
    );

    // The suite, with the checks alternating between the two stores.
    let stores = [a, b];
    let next = std::sync::atomic::AtomicUsize::new(0);
    mecha_conformance::state::run(|| {
        let store = stores[next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 2].clone();
        async move { store }
    })
    .await;
}
