//! `state.postgresql`: the conformance suite, Dapr's table layout, ETags and connection
//! strings.

use std::str::FromStr;
use std::sync::Arc;

use bytes::Bytes;
use mecha_components::state::postgresql::PostgresStateStore;
use mecha_core::state::{DeleteRequest, GetRequest, SetRequest, StateError, StateStore};
use sqlx::Row;
use sqlx::postgres::PgConnectOptions;

use crate::{admin, drop_tables, fresh_table, init, url};

pub(crate) async fn store(connection_string: &str, table: &str) -> Arc<dyn StateStore> {
    PostgresStateStore::create(init(&[
        ("connectionString", connection_string),
        ("tableName", table),
    ]))
    .await
    .unwrap_or_else(|e| panic!("opening state.postgresql at {connection_string}: {e}"))
}

fn get(key: &str) -> GetRequest {
    GetRequest {
        key: key.to_owned(),
        ..GetRequest::default()
    }
}

fn set(key: &str, value: &'static [u8]) -> SetRequest {
    SetRequest {
        key: key.to_owned(),
        value: Bytes::from_static(value),
        ..SetRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_conformance() {
    let table = fresh_table("state");
    let url = url();
    // A new store per check, all on one table: also exercises opening an existing table.
    mecha_conformance::state::run(|| store(&url, &table)).await;
    drop_tables(&[&table]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_conformance_with_keyword_value_string_and_schema() {
    let opts = PgConnectOptions::from_str(&url()).unwrap();
    let kv = format!(
        "host={} port={} user='{}' dbname={} sslmode=disable connect_timeout=10 \
         pool_max_conns=4 application_name=mecha\\ test",
        opts.get_host(),
        opts.get_port(),
        opts.get_username(),
        opts.get_database().unwrap_or("postgres"),
    );
    let table = fresh_table("kv");
    let qualified = format!("public.{table}");
    let s = store(&kv, &qualified).await;
    mecha_conformance::state::run(|| {
        let s = s.clone();
        async move { s }
    })
    .await;
    s.close().await;
    drop_tables(&[&table]).await;
}

/// Rows are Dapr's: JSON in `value`, other bytes as a base64 JSON string with `isbinary`, the
/// ETag is `xmin`; rows written by Dapr (no `rawvalue`, or a stale one) read back correctly.
#[tokio::test]
async fn keeps_dapr_table_layout() {
    let table = fresh_table("layout");
    let s = store(&url(), &table).await;
    let db = admin().await;
    s.set(&set("json", br#"{"b":1,  "a":[true]}"#))
        .await
        .unwrap();
    s.set(&set("canonical", br#"{"a": 1}"#)).await.unwrap();
    s.set(&set("binary", &[0xff, 0x00, b'x'])).await.unwrap();
    let row = |key: &'static str| {
        let sql = format!(
            "SELECT value::text, isbinary, rawvalue, xmin::text FROM \"{table}\" WHERE key = $1"
        );
        let db = db.clone();
        async move {
            let r = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(key)
                .fetch_one(&db)
                .await
                .unwrap();
            let value: String = r.get(0);
            let binary: bool = r.get(1);
            let raw: Option<String> = r.get(2);
            let xmin: String = r.get(3);
            (value, binary, raw, xmin)
        }
    };
    let (value, binary, raw, xmin) = row("json").await;
    assert_eq!(
        (value.as_str(), binary, raw.as_deref()),
        (
            r#"{"a": [true], "b": 1}"#,
            false,
            Some(r#"{"b":1,  "a":[true]}"#)
        )
    );
    assert_eq!(s.get(&get("json")).await.unwrap().unwrap().etag, Some(xmin));
    assert_eq!(
        row("canonical").await.2,
        None,
        "no copy when jsonb gives it back"
    );
    let (value, binary, raw, _) = row("binary").await;
    assert_eq!((value.as_str(), binary, raw), (r#""/wB4""#, true, None));

    // Dapr writing the same table: a new row, and an update that leaves `rawvalue` stale.
    let dapr = format!(
        "INSERT INTO \"{table}\" (key, value, isbinary) VALUES ($1, $2::jsonb, false) \
         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updatedate = now()"
    );
    for (key, value) in [("from-dapr", r#"{"x":1}"#), ("json", r#"{"new":true}"#)] {
        sqlx::query(sqlx::AssertSqlSafe(dapr.clone()))
            .bind(key)
            .bind(value)
            .execute(&db)
            .await
            .unwrap();
    }
    let data = |key: &'static str| {
        let s = s.clone();
        async move { s.get(&get(key)).await.unwrap().unwrap().data }
    };
    assert_eq!(data("from-dapr").await, r#"{"x": 1}"#);
    assert_eq!(data("json").await, r#"{"new": true}"#);
    assert_eq!(
        data("binary").await,
        Bytes::from_static(&[0xff, 0x00, b'x'])
    );
    s.close().await;
    drop_tables(&[&table]).await;
}

/// Like Dapr's store, an ETag that cannot be an `xmin` is invalid, not a mismatch.
#[tokio::test]
async fn refuses_malformed_etags() {
    let table = fresh_table("etag");
    let s = store(&url(), &table).await;
    s.set(&set("k", b"v")).await.unwrap();
    let bad = SetRequest {
        etag: Some("not-a-number".into()),
        ..set("k", b"w")
    };
    assert!(matches!(s.set(&bad).await, Err(StateError::InvalidEtag(_))));
    let bad = DeleteRequest {
        key: "k".into(),
        etag: Some("-1".into()),
        ..DeleteRequest::default()
    };
    assert!(matches!(
        s.delete(&bad).await,
        Err(StateError::InvalidEtag(_))
    ));
    assert_eq!(s.get(&get("k")).await.unwrap().unwrap().data, "v");
    drop_tables(&[&table]).await;
}

/// Expired rows are deleted by the background clean-up, which `close` stops.
#[tokio::test]
async fn cleans_up_expired_rows() {
    let table = fresh_table("cleanup");
    let s = PostgresStateStore::create(init(&[
        ("connectionString", &url()),
        ("tableName", &table),
        ("cleanupInterval", "200ms"),
    ]))
    .await
    .unwrap();
    let brief = SetRequest {
        ttl: Some(std::time::Duration::from_millis(100)),
        ..set("brief", b"1")
    };
    s.set(&brief).await.unwrap();
    s.set(&set("kept", b"2")).await.unwrap();
    let db = admin().await;
    let count = format!("SELECT count(*) FROM \"{table}\"");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count.clone()))
            .fetch_one(&db)
            .await
            .unwrap();
        if n == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the expired row stayed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    s.close().await;
    drop_tables(&[&table]).await;
}

#[tokio::test]
async fn refuses_bad_metadata_and_unreachable_servers() {
    for md in [
        vec![("tableName", "x".to_owned())],
        vec![
            ("connectionString", url()),
            ("tableName", "bad;name".into()),
        ],
        vec![
            ("connectionString", url()),
            ("timeoutInSeconds", "soon".into()),
        ],
    ] {
        let md: Vec<(&str, &str)> = md.iter().map(|(k, v)| (*k, v.as_ref())).collect();
        assert!(
            PostgresStateStore::create(init(&md)).await.is_err(),
            "{md:?}"
        );
    }
    // Nothing listens on port 1: start-up fails within the timeout.
    let started = std::time::Instant::now();
    let r = PostgresStateStore::create(init(&[
        ("connectionString", "host=127.0.0.1 port=1 user=postgres"),
        ("timeout", "1s"),
    ]))
    .await;
    assert!(r.is_err());
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}
