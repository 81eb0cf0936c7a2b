//! `lock.postgresql`: the conformance suite, and two stores contending through one table.

use std::sync::Arc;
use std::time::Duration;

use mecha_components::lock::postgresql::PostgresLockStore;
use mecha_core::lock::{LockStore, UnlockStatus};

use crate::{drop_tables, fresh_table, init, url};

async fn store(table: &str) -> Arc<dyn LockStore> {
    PostgresLockStore::create(init(&[("connectionString", &url()), ("tableName", table)]))
        .await
        .unwrap_or_else(|e| panic!("opening lock.postgresql: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_conformance() {
    let table = fresh_table("locks");
    let s = store(&table).await;
    mecha_conformance::lock::run(|| {
        let s = s.clone();
        async move { s }
    })
    .await;
    s.close().await;
    drop_tables(&[&table]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_exclude_each_other() {
    let table = fresh_table("locks2");
    let (a, b) = (store(&table).await, store(&table).await);
    let hold = Duration::from_secs(30);
    let attempts = (0..20).map(|i| {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        async move {
            let owner = format!("owner-{i}");
            s.try_lock("shared", &owner, hold)
                .await
                .unwrap()
                .then_some(owner)
        }
    });
    let winners: Vec<String> = futures::future::join_all(attempts)
        .await
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(
        a.unlock("shared", "someone-else").await.unwrap(),
        UnlockStatus::LockBelongsToOthers
    );
    assert_eq!(
        b.unlock("shared", &winners[0]).await.unwrap(),
        UnlockStatus::Success
    );
    assert_eq!(
        a.unlock("shared", &winners[0]).await.unwrap(),
        UnlockStatus::LockDoesNotExist
    );
    drop_tables(&[&table]).await;
}
