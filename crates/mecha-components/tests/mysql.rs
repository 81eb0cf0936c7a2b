//! `state.mysql` against MariaDB: the conformance suite on the shared server
//! (`MECHA_TEST_MYSQL_URL`, default `mysql://root@127.0.0.1:3306/test`), Dapr's table layout,
//! two stores on one table, and an outage of a private `mariadbd`.
#![cfg(feature = "state-mysql")]
// Test helpers outside `#[test]` functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod mysql {
    pub(crate) mod outage;
}

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mecha_components::state::mysql::MySqlStateStore;
use mecha_core::Metadata;
use mecha_core::component::ComponentInit;
use mecha_core::state::{GetRequest, SetRequest, StateError, StateStore, TransactionOperation};
use sqlx::{Connection, MySqlConnection, Row};

fn server_url() -> String {
    std::env::var("MECHA_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

/// The server URL as the Go DSN Dapr users write: `user:pass@tcp(host:port)/db?parseTime=true`.
fn server_dsn() -> String {
    let url = server_url();
    let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
    let (credentials, rest) = rest.rsplit_once('@').unwrap_or(("root", rest));
    let (address, db) = rest.split_once('/').unwrap_or((rest, ""));
    let credentials = if credentials.contains(':') {
        credentials.to_owned()
    } else {
        format!("{credentials}:")
    };
    format!("{credentials}@tcp({address})/{db}?parseTime=true&allowNativePasswords=true")
}

/// A table name no other test uses.
fn fresh_table() -> String {
    format!("mecha_{}", uuid::Uuid::new_v4().simple())
}

fn init(metadata: &[(&str, &str)]) -> ComponentInit {
    ComponentInit {
        name: "mysql".to_owned(),
        metadata: Metadata::new(
            metadata
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<HashMap<_, _>>(),
        ),
        app_id: "conformance".to_owned(),
    }
}

pub(crate) async fn store(metadata: &[(&str, &str)]) -> Arc<dyn StateStore> {
    MySqlStateStore::create(init(metadata))
        .await
        .unwrap_or_else(|e| panic!("opening state.mysql with {metadata:?}: {e}"))
}

/// A store on `table` of the `test` schema, through the Go DSN.
async fn test_store(table: &str) -> Arc<dyn StateStore> {
    let dsn = server_dsn();
    store(&[
        ("connectionString", &dsn),
        ("schemaName", "test"),
        ("tableName", table),
    ])
    .await
}

/// A direct connection to the shared server, bypassing the store.
async fn direct() -> MySqlConnection {
    MySqlConnection::connect(&server_url())
        .await
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", server_url()))
}

async fn drop_table(table: &str) {
    let sql = format!("DROP TABLE IF EXISTS `test`.`{table}`");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&mut direct().await)
        .await
        .unwrap();
}

pub(crate) fn get(key: &str) -> GetRequest {
    GetRequest {
        key: key.to_owned(),
        ..GetRequest::default()
    }
}

pub(crate) fn set(key: &str, value: impl Into<Bytes>) -> SetRequest {
    SetRequest {
        key: key.to_owned(),
        value: value.into(),
        ..SetRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance() {
    let table = fresh_table();
    // A store per check, all on one table: also exercises opening an existing table.
    mecha_conformance::state::run(|| test_store(&table)).await;
    drop_table(&table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_share_one_table() {
    let table = fresh_table();
    let url = server_url();
    let a = test_store(&table).await;
    // The second store comes through a mysql:// URL naming the schema as its database.
    let b = store(&[("connectionString", &url), ("tableName", &table)]).await;

    a.set(&set("shared", "from a")).await.unwrap();
    let seen = b.get(&get("shared")).await.unwrap().unwrap();
    assert_eq!(seen.data, "from a");
    let etag = seen.etag.clone();
    assert_eq!(a.get(&get("shared")).await.unwrap().unwrap().etag, etag);
    let with_etag = |value: &'static str, etag: Option<String>| SetRequest {
        etag,
        ..set("shared", value)
    };
    b.set(&with_etag("from b", etag.clone())).await.unwrap();
    assert_eq!(
        a.set(&with_etag("stale from a", etag)).await,
        Err(StateError::EtagMismatch)
    );

    // Writers racing through both stores on one etag: the server alone picks one winner.
    let start = a.get(&get("shared")).await.unwrap().unwrap().etag;
    let mut racers = tokio::task::JoinSet::new();
    for i in 0..10 {
        let (store, req) = ([&a, &b][i % 2].clone(), with_etag("racer", start.clone()));
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
    drop_table(&table).await;
}

#[tokio::test]
async fn rows_are_laid_out_as_dapr_lays_them_out() {
    let table = fresh_table();
    let s = test_store(&table).await;
    s.set(&set("json", r#"{"a": [1, 2]}"#)).await.unwrap();
    s.set(&set("bytes", &b"\xff\x00hi"[..])).await.unwrap();
    let ttl = SetRequest {
        ttl: Some(Duration::from_secs(60)),
        ..set("ttl", "1")
    };
    s.set(&ttl).await.unwrap();

    let mut db = direct().await;
    let sql = format!(
        "SELECT id, CAST(value AS CHAR), isbinary, eTag, expiredate IS NOT NULL, \
         insertDate IS NOT NULL AND updateDate IS NOT NULL FROM `test`.`{table}` ORDER BY id"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(&mut db)
        .await
        .unwrap();
    let rows: Vec<(String, String, bool, String, bool, bool)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect();
    let view: Vec<(&str, &str, bool, bool)> = rows
        .iter()
        .map(|r| (r.0.as_str(), r.1.as_str(), r.2, r.4))
        .collect();
    assert_eq!(
        view,
        [
            ("bytes", r#""/wBoaQ==""#, true, false),
            ("json", r#"{"a": [1, 2]}"#, false, false),
            ("ttl", "1", false, true),
        ]
    );
    for row in &rows {
        assert!(
            uuid::Uuid::parse_str(&row.3).is_ok(),
            "eTag {} is a UUID",
            row.3
        );
        assert!(row.5, "insertDate and updateDate are set");
    }
    let expiry = s.get(&get("ttl")).await.unwrap().unwrap().metadata;
    assert!(expiry["ttlExpireTime"].ends_with('Z'), "{expiry:?}");

    // A row Dapr wrote: bytes as base64 with isbinary, and keys that differ only in case or
    // in a trailing space are different keys.
    let sql = format!(
        "INSERT INTO `test`.`{table}` (id, value, isbinary, eTag) \
         VALUES ('dapr', '\"aGk=\"', 1, 'e1'), ('Dapr', '\"x\"', 0, 'e2'), ('dapr ', '2', 0, 'e3')"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&mut db)
        .await
        .unwrap();
    for (key, data, etag) in [
        ("dapr", "hi", "e1"),
        ("Dapr", "\"x\"", "e2"),
        ("dapr ", "2", "e3"),
    ] {
        let got = s.get(&get(key)).await.unwrap().unwrap();
        assert_eq!(
            (got.data, got.etag.as_deref()),
            (Bytes::from(data), Some(etag)),
            "{key:?}"
        );
    }
    drop_table(&table).await;
}

#[tokio::test]
async fn json_the_server_refuses_is_stored_as_bytes() {
    let table = fresh_table();
    let s = test_store(&table).await;
    // MariaDB's JSON check allows 32 levels of nesting; serde_json allows more.
    let deep = format!("{}1{}", "[".repeat(40), "]".repeat(40));
    s.set(&set("deep", deep.clone())).await.unwrap();
    assert_eq!(s.get(&get("deep")).await.unwrap().unwrap().data, deep);
    let ops = [TransactionOperation::Upsert(set("deep2", deep.clone()))];
    s.transact(&ops).await.unwrap();
    assert_eq!(s.get(&get("deep2")).await.unwrap().unwrap().data, deep);
    drop_table(&table).await;
}

#[tokio::test]
async fn bulk_get_spans_chunks() {
    let table = fresh_table();
    let s = test_store(&table).await;
    let n = 1_207;
    let ops: Vec<TransactionOperation> = (0..n)
        .step_by(2)
        .map(|i| TransactionOperation::Upsert(set(&format!("k{i}"), format!("{i}"))))
        .collect();
    s.transact(&ops).await.unwrap();
    let reqs: Vec<GetRequest> = (0..n).rev().map(|i| get(&format!("k{i}"))).collect();
    let items = s.bulk_get(&reqs).await.unwrap();
    assert_eq!(items.len(), n);
    for (item, i) in items.iter().zip((0..n).rev()) {
        assert_eq!(item.key, format!("k{i}"));
        let data = item.result.clone().unwrap().map(|r| r.data);
        assert_eq!(data, (i % 2 == 0).then(|| Bytes::from(format!("{i}"))));
    }
    drop_table(&table).await;
}

#[tokio::test]
async fn creates_the_schema_and_cleans_up_expired_rows() {
    let schema = fresh_table();
    let dsn = server_dsn();
    let (head, _) = dsn.split_once(")/").unwrap();
    // No database in the DSN: the store uses schemaName and creates it.
    let connection_string = format!("{head})/?parseTime=true");
    let s = store(&[
        ("connectionString", &connection_string),
        ("schemaName", &schema),
        ("cleanupInterval", "100ms"),
    ])
    .await;
    let expiring = SetRequest {
        ttl: Some(Duration::from_secs(1)),
        ..set("expiring", "1")
    };
    s.set(&expiring).await.unwrap();
    s.set(&set("kept", "2")).await.unwrap();
    let mut db = direct().await;
    let count = format!("SELECT COUNT(*) FROM `{schema}`.`state`");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count.clone()))
            .fetch_one(&mut db)
            .await
            .unwrap();
        if n == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the expired row was never deleted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.close().await;
    let sql = format!("DROP DATABASE `{schema}`");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&mut db)
        .await
        .unwrap();
}

#[tokio::test]
async fn unreachable_server_fails_start_up_quickly() {
    let port = free_port();
    let started = Instant::now();
    let err = MySqlStateStore::create(init(&[
        ("connectionString", &format!("root:@tcp(127.0.0.1:{port})/")),
        ("timeoutInSeconds", "2"),
    ]))
    .await
    .err()
    .expect("no server listens there");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

/// A loopback port that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

#[tokio::test]
async fn opens_a_table_dapr_made_before_ttls() {
    let table = fresh_table();
    let mut db = direct().await;
    // Dapr's layout before 1.11: no expiredate, keys in the schema's case-insensitive
    // collation.
    let ddl = format!(
        "CREATE TABLE `test`.`{table}` (id VARCHAR(255) NOT NULL PRIMARY KEY, \
         value JSON NOT NULL, isbinary BOOLEAN NOT NULL, \
         insertDate TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, \
         updateDate TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP, \
         eTag VARCHAR(36) NOT NULL) DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_general_ci"
    );
    let rows = format!(
        "INSERT INTO `test`.`{table}` (id, value, isbinary, eTag) VALUES \
         ('app||doc', '{{\"city\":\"Oslo\"}}', 0, 'e1'), ('APP||decoy', '{{\"city\":\"Oslo\"}}', 0, 'e2')"
    );
    for sql in [ddl, rows] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut db)
            .await
            .unwrap();
    }
    let s = test_store(&table).await;
    let got = s.get(&get("app||doc")).await.unwrap().unwrap();
    assert_eq!(got.data, r#"{"city":"Oslo"}"#);
    let ttl = SetRequest {
        ttl: Some(Duration::from_secs(60)),
        ..set("app||ttl", "1")
    };
    s.set(&ttl).await.unwrap();
    let found = s.get(&get("app||ttl")).await.unwrap().unwrap();
    assert!(found.metadata.contains_key("ttlExpireTime"), "{found:?}");
    let query = mecha_core::state::Query {
        key_prefix: "app||".into(),
        ..mecha_core::state::Query::default()
    };
    let mut keys: Vec<String> = s
        .query(&query)
        .await
        .unwrap()
        .results
        .into_iter()
        .map(|r| r.key)
        .collect();
    keys.sort();
    assert_eq!(keys, ["app||doc", "app||ttl"]);
    drop_table(&table).await;
}
