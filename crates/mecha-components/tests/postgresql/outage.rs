//! A private server killed and restarted under the same store objects: operations fail with
//! a backend error within the timeout, then work again without re-creating the stores.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use mecha_components::lock::postgresql::PostgresLockStore;
use mecha_components::state::postgresql::PostgresStateStore;
use mecha_core::state::{
    DeleteRequest, GetRequest, Query, SetRequest, StateError, TransactionOperation,
};

use super::server::PrivatePostgres;
use crate::init;

/// The operation timeout of the stores under test.
const TIMEOUT_SECS: u64 = 2;
/// How late an error may come after the timeout.
const SLACK: Duration = Duration::from_secs(2);

fn get() -> GetRequest {
    GetRequest {
        key: "k".into(),
        ..GetRequest::default()
    }
}

fn set(value: &'static str) -> SetRequest {
    SetRequest {
        key: "k".into(),
        value: Bytes::from_static(value.as_bytes()),
        ..SetRequest::default()
    }
}

/// Checks that `op` fails with a backend error soon enough.
async fn fails_quickly<T: std::fmt::Debug>(
    what: &str,
    op: impl std::future::Future<Output = Result<T, StateError>>,
) {
    let started = Instant::now();
    let r = op.await;
    let took = started.elapsed();
    match r {
        Err(StateError::Backend(msg)) => {
            eprintln!("{what} during the outage: {msg} (after {took:?})");
            assert!(msg.starts_with("postgresql: "), "{msg}");
        }
        other => panic!("{what} during the outage: got {other:?}, want a backend error"),
    }
    assert!(
        took < Duration::from_secs(TIMEOUT_SECS) + SLACK,
        "{what} took {took:?} to fail"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_survive_a_server_restart() {
    let mut server = PrivatePostgres::start().await;
    let timeout = TIMEOUT_SECS.to_string();
    let state = PostgresStateStore::create(init(&[
        ("connectionString", &server.url()),
        ("timeoutInSeconds", &timeout),
    ]))
    .await
    .unwrap();
    let locks = PostgresLockStore::create(init(&[
        ("connectionString", &server.url()),
        ("timeout", &format!("{TIMEOUT_SECS}s")),
    ]))
    .await
    .unwrap();
    let config = super::configuration::store(&server.url(), "config").await;
    let mut updates = config
        .subscribe(&["c".into()], &HashMap::new())
        .await
        .unwrap();
    state.set(&set(r#"{"before":true}"#)).await.unwrap();
    assert!(
        locks
            .try_lock("r", "a", Duration::from_secs(60))
            .await
            .unwrap()
    );

    server.kill();
    fails_quickly("get", state.get(&get())).await;
    fails_quickly("set", state.set(&set("during"))).await;
    let del = DeleteRequest {
        key: "k".into(),
        ..DeleteRequest::default()
    };
    fails_quickly("delete", state.delete(&del)).await;
    fails_quickly("bulk_get", state.bulk_get(&[get()])).await;
    fails_quickly(
        "transact",
        state.transact(&[TransactionOperation::Upsert(set("tx"))]),
    )
    .await;
    let query = Query::default();
    fails_quickly("query", state.query(&query)).await;
    let started = Instant::now();
    assert!(
        locks
            .try_lock("r", "b", Duration::from_secs(1))
            .await
            .is_err()
    );
    assert!(started.elapsed() < Duration::from_secs(TIMEOUT_SECS) + SLACK);
    assert!(config.get(&[], &HashMap::new()).await.is_err());

    server.restart().await;
    // The same objects work again; the pool replaces its broken connections by itself.
    let data = state.get(&get()).await.unwrap().unwrap().data;
    assert_eq!(data, r#"{"before":true}"#);
    state.set(&set("after")).await.unwrap();
    assert_eq!(state.get(&get()).await.unwrap().unwrap().data, "after");
    assert!(
        !locks
            .try_lock("r", "b", Duration::from_secs(60))
            .await
            .unwrap()
    );
    assert_eq!(
        locks.unlock("r", "a").await.unwrap(),
        mecha_core::lock::UnlockStatus::Success
    );
    // The subscription reconnects in the background: write until a change arrives.
    let db = sqlx::PgPool::connect(&server.url()).await.unwrap();
    let write = super::configuration::writer(db, "config");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        write("c".into(), Some("after".into())).await;
        match tokio::time::timeout(Duration::from_millis(500), updates.next()).await {
            Ok(Some(update)) => {
                assert_eq!(update["c"].value, "after");
                break;
            }
            Ok(None) => panic!("the subscription ended during the outage"),
            Err(_) => assert!(
                Instant::now() < deadline,
                "the subscription did not recover"
            ),
        }
    }
    state.close().await;
}
