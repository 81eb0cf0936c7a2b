//! The PostgreSQL components against a real server: the state, lock and configuration
//! conformance suites, the query push-down, Dapr's table layout, keyword/value connection
//! strings, and an outage of a private server started by the test.
//!
//! The shared server is `$MECHA_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); every test uses fresh tables. The private
//! server needs the PostgreSQL binaries (`$MECHA_TEST_POSTGRES_BIN`, default
//! `/usr/lib/postgresql/15/bin`) and, when run as root, a `postgres` user to run them as.

#![cfg(all(
    feature = "state-postgresql",
    feature = "lock-postgresql",
    feature = "configuration-postgresql"
))]
// Test helpers outside `#[test]` functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod postgresql {
    pub(crate) mod configuration;
    pub(crate) mod lock;
    pub(crate) mod outage;
    pub(crate) mod query;
    pub(crate) mod server;
    pub(crate) mod state;
}

use std::collections::HashMap;

use mecha_core::Metadata;
use mecha_core::component::ComponentInit;
use sqlx::postgres::PgPool;

/// The shared server's URL.
pub(crate) fn url() -> String {
    std::env::var("MECHA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh table name: `mecha_<tag>_<32 hex digits>`.
pub(crate) fn fresh_table(tag: &str) -> String {
    format!("mecha_{tag}_{}", uuid::Uuid::new_v4().simple())
}

pub(crate) fn init(metadata: &[(&str, &str)]) -> ComponentInit {
    ComponentInit {
        name: "postgresql".to_owned(),
        metadata: Metadata::new(
            metadata
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<HashMap<_, _>>(),
        ),
        app_id: "conformance".to_owned(),
    }
}

/// A plain connection pool to the shared server, bypassing the components.
pub(crate) async fn admin() -> PgPool {
    PgPool::connect(&url())
        .await
        .unwrap_or_else(|e| panic!("the PostgreSQL server at {} is unreachable: {e}", url()))
}

/// Drops `tables` (and what depends on them) on the shared server.
pub(crate) async fn drop_tables(tables: &[&str]) {
    let pool = admin().await;
    for t in tables {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP TABLE IF EXISTS \"{t}\" CASCADE"
        )))
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;
}
