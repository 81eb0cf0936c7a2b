//! The lock conformance suite on `lock.sqlite`, and two stores contending through one file.

#![cfg(feature = "lock-sqlite")]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mecha_components::lock::sqlite::SqliteLockStore;
use mecha_core::Metadata;
use mecha_core::component::ComponentInit;
use mecha_core::lock::LockStore;

fn init(file: &std::path::Path) -> ComponentInit {
    let md = HashMap::from([("connectionString".to_owned(), file.display().to_string())]);
    ComponentInit {
        name: "lockstore".into(),
        metadata: Metadata::new(md),
        app_id: "app".into(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lock_conformance_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nested/locks.db");
    let store = SqliteLockStore::create(init(&file)).await.unwrap();
    mecha_conformance::lock::run(|| {
        let store = store.clone();
        async move { store }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_stores_on_one_file_exclude_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("locks.db");
    let a: Arc<dyn LockStore> = SqliteLockStore::create(init(&file)).await.unwrap();
    let b: Arc<dyn LockStore> = SqliteLockStore::create(init(&file)).await.unwrap();
    let hold = Duration::from_secs(30);
    let attempts = (0..20).map(|i| {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        async move {
            store
                .try_lock("shared", &format!("owner-{i}"), hold)
                .await
                .unwrap()
        }
    });
    let wins = futures::future::join_all(attempts)
        .await
        .into_iter()
        .filter(|w| *w)
        .count();
    assert_eq!(wins, 1);
}
