//! `configuration.postgresql`: the conformance suite with writes made by plain SQL, item
//! fields, large rows, Dapr's `pgNotifyChannel`, and the listener ending with its stream.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mecha_components::configuration::postgresql::PostgresConfigurationStore;
use mecha_core::configuration::{ConfigurationStore, ConfigurationUpdate, ConfigurationUpdates};
use sqlx::AssertSqlSafe;
use sqlx::postgres::PgPool;

use crate::{admin, drop_tables, fresh_table, init, url};

pub(crate) async fn store(connection_string: &str, table: &str) -> Arc<dyn ConfigurationStore> {
    PostgresConfigurationStore::create(init(&[
        ("connectionString", connection_string),
        ("table", table),
        ("timeoutInSeconds", "3"),
    ]))
    .await
    .unwrap_or_else(|e| panic!("opening configuration.postgresql: {e}"))
}

/// Sets (`Some`) or deletes (`None`) a key with plain SQL, as an operator would.
pub(crate) fn writer(
    pool: PgPool,
    table: &str,
) -> impl Fn(String, Option<String>) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
    let upsert = format!(
        "INSERT INTO \"{table}\" (key, value, version, metadata) \
         VALUES ($1, $2, $3, '{{\"source\":\"sql\"}}') \
         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, version = EXCLUDED.version"
    );
    let delete = format!("DELETE FROM \"{table}\" WHERE key = $1");
    move |key, value| {
        let (pool, upsert, delete) = (pool.clone(), upsert.clone(), delete.clone());
        Box::pin(async move {
            let q = match &value {
                Some(v) => sqlx::query(AssertSqlSafe(upsert))
                    .bind(key)
                    .bind(v.clone())
                    .bind(uuid::Uuid::new_v4().to_string()),
                None => sqlx::query(AssertSqlSafe(delete)).bind(key),
            };
            q.execute(&pool).await.unwrap();
        })
    }
}

async fn next(updates: &mut ConfigurationUpdates) -> ConfigurationUpdate {
    tokio::time::timeout(Duration::from_secs(10), updates.next())
        .await
        .expect("no update within 10s")
        .expect("the update stream ended")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_conformance() {
    let table = fresh_table("config");
    let url = url();
    let s = store(&url, &table).await;
    let db = admin().await;
    // A new store per check as well, on the same table: the trigger is installed only once.
    let first = std::sync::atomic::AtomicBool::new(true);
    mecha_conformance::configuration::run(
        || {
            let reuse = first.swap(false, std::sync::atomic::Ordering::Relaxed);
            let (s, url, table) = (s.clone(), url.clone(), table.clone());
            async move { if reuse { s } else { store(&url, &table).await } }
        },
        writer(db.clone(), &table),
    )
    .await;
    let triggers: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = '\"{table}\"'::regclass"
    )))
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(triggers, 1);
    drop_tables(&[&table]).await;
}

#[tokio::test]
async fn items_carry_version_metadata_and_large_values() {
    let table = fresh_table("items");
    let s = store(&url(), &table).await;
    let db = admin().await;
    let write = writer(db.clone(), &table);
    let mut all = s.subscribe(&[], &HashMap::new()).await.unwrap();
    write("small".into(), Some("v".into())).await;
    let update = next(&mut all).await;
    let item = &update["small"];
    assert_eq!(item.value, "v");
    assert!(!item.version.is_empty());
    assert_eq!(item.metadata.get("source").map(String::as_str), Some("sql"));
    let got = s.get(&["small".into()], &HashMap::new()).await.unwrap();
    assert_eq!(got["small"], *item);

    // Too large for one notification: the key is sent and the row read back.
    let big = "x".repeat(20_000);
    write("big".into(), Some(big.clone())).await;
    assert_eq!(next(&mut all).await["big"].value, big);
    write("big".into(), None).await;
    assert_eq!(next(&mut all).await["big"].value, "");
    drop(all);
    drop_tables(&[&table]).await;
}

/// As in Dapr, `pgNotifyChannel` names a channel fed by the operator's own trigger.
#[tokio::test]
async fn listens_on_the_requested_channel() {
    let table = fresh_table("channel");
    let s = store(&url(), &table).await;
    let db = admin().await;
    let channel = format!("ops_{table}");
    let ddl = [
        format!(
            "CREATE FUNCTION \"{table}_ops\"() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN PERFORM pg_notify('{channel}', json_build_object('table', TG_TABLE_NAME, \
             'action', TG_OP, 'data', row_to_json(NEW))::text); RETURN NULL; END $$"
        ),
        format!(
            "CREATE TRIGGER ops AFTER INSERT OR UPDATE ON \"{table}\" \
             FOR EACH ROW EXECUTE FUNCTION \"{table}_ops\"()"
        ),
    ];
    for statement in ddl {
        sqlx::query(AssertSqlSafe(statement))
            .execute(&db)
            .await
            .unwrap();
    }
    let md = HashMap::from([("pgNotifyChannel".to_owned(), channel.clone())]);
    let mut updates = s.subscribe(&["k".into()], &md).await.unwrap();
    writer(db.clone(), &table)("k".into(), Some("via ops".into())).await;
    assert_eq!(next(&mut updates).await["k"].value, "via ops");

    // Dropping the stream ends the subscription's connection.
    let listening =
        format!("SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN \"{channel}\"'");
    let listeners = || {
        let (db, sql) = (db.clone(), listening.clone());
        async move {
            let n: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
                .fetch_one(&db)
                .await
                .unwrap();
            n
        }
    };
    assert_eq!(listeners().await, 1);
    drop(updates);
    let deadline = Instant::now() + Duration::from_secs(10);
    while listeners().await != 0 {
        assert!(
            Instant::now() < deadline,
            "the listener outlived its stream"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sqlx::query(AssertSqlSafe(format!(
        "DROP FUNCTION \"{table}_ops\"() CASCADE"
    )))
    .execute(&db)
    .await
    .unwrap();
    drop_tables(&[&table]).await;
}
