//! `lock.postgresql` v1: expiring locks in one PostgreSQL table, shared by every sidecar that
//! uses the database.
//!
//! Mecha's own component (Dapr has no PostgreSQL lock). Tested against PostgreSQL 15 by the
//! lock conformance suite and across two stores (`tests/postgresql.rs`).
//!
//! The table `<tableName>` (default `locks`, may be `schema.table`) holds `resource_id text
//! primary key, owner text, expires_at timestamptz`. Taking a lock is one `INSERT … ON
//! CONFLICT DO UPDATE … WHERE expires_at < now()`: it writes a row only when the resource is
//! free or its lock has expired, so the server alone arbitrates between contenders. Unlocking
//! is one statement too, which deletes the owner's live lock and reports who held it. Expiry
//! uses the server's clock. Rows of expired locks stay until the resource is locked again.
//!
//! Metadata: the connection fields of `state.postgresql` (`connectionString` in URL or
//! keyword/value form, `timeout`/`timeoutInSeconds`, `maxConns`, `connectionMaxIdleTime`…) and
//! `tableName`.

use crate::state::postgresql::connection;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mecha_core::component::{ComponentError, ComponentInit};
use mecha_core::lock::{LockError, LockStore, UnlockStatus};
use sqlx::postgres::PgPool;
use sqlx::{AssertSqlSafe, Row};

use connection::{CONNECTION_KEYS, Connection, TableName};

const TABLE_NAME: &str = "tableName";
const DEFAULT_TABLE: &str = "locks";

/// The `lock.postgresql` lock store.
pub struct PostgresLockStore {
    pool: PgPool,
    timeout: Duration,
    try_lock: String,
    unlock: String,
}

// === impl PostgresLockStore ===

impl PostgresLockStore {
    /// Connects and creates the lock table if missing.
    pub async fn create(init: ComponentInit) -> Result<Arc<dyn LockStore>, ComponentError> {
        let md = &init.metadata;
        let known: Vec<&str> = CONNECTION_KEYS
            .iter()
            .chain(&[TABLE_NAME])
            .copied()
            .collect();
        md.warn_unknown(&init.name, &known);
        let connection = Connection::parse(md)?;
        let table = md
            .get(TABLE_NAME)
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .unwrap_or(DEFAULT_TABLE);
        let t = TableName::parse(table, TABLE_NAME)?.quoted();
        let pool = connection.connect().await?;
        let ddl = format!(
            "CREATE TABLE IF NOT EXISTS {t} (resource_id text NOT NULL PRIMARY KEY, \
             owner text NOT NULL, expires_at timestamp with time zone NOT NULL)"
        );
        connection
            .prepare(&pool, &format!("mecha-lock-{t}"), &[ddl])
            .await?;
        Ok(Arc::new(Self {
            pool,
            timeout: connection.timeout,
            // Insert, or take over a row whose lock has expired; anything else writes nothing.
            try_lock: format!(
                "INSERT INTO {t} AS l (resource_id, owner, expires_at) \
                 VALUES ($1, $2, now() + make_interval(secs => $3)) \
                 ON CONFLICT (resource_id) DO UPDATE SET owner = EXCLUDED.owner, \
                 expires_at = EXCLUDED.expires_at WHERE l.expires_at < now()"
            ),
            // The sub-select sees the table as it was before the delete: who held the lock.
            unlock: format!(
                "WITH released AS (DELETE FROM {t} WHERE resource_id = $1 AND owner = $2 \
                 AND expires_at >= now() RETURNING 1) \
                 SELECT (SELECT count(*) FROM released) AS released, \
                 (SELECT owner FROM {t} WHERE resource_id = $1 AND expires_at >= now()) AS holder"
            ),
        }))
    }

    async fn timed<T>(
        &self,
        op: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, LockError> {
        match tokio::time::timeout(self.timeout, op).await {
            Ok(r) => r.map_err(|e| LockError(connection::describe(&e, self.timeout))),
            Err(_) => Err(LockError(format!(
                "postgresql: timed out after {:?}",
                self.timeout
            ))),
        }
    }
}

#[async_trait]
impl LockStore for PostgresLockStore {
    async fn try_lock(
        &self,
        resource_id: &str,
        owner: &str,
        expiry: Duration,
    ) -> Result<bool, LockError> {
        let done = self
            .timed(
                sqlx::query(AssertSqlSafe(self.try_lock.as_str()))
                    .bind(resource_id)
                    .bind(owner)
                    .bind(expiry.as_secs_f64())
                    .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn unlock(&self, resource_id: &str, owner: &str) -> Result<UnlockStatus, LockError> {
        let row = self
            .timed(
                sqlx::query(AssertSqlSafe(self.unlock.as_str()))
                    .bind(resource_id)
                    .bind(owner)
                    .fetch_one(&self.pool),
            )
            .await?;
        let decode = |e: sqlx::Error| LockError(format!("postgresql: {e}"));
        let released: i64 = row.try_get(0).map_err(decode)?;
        let holder: Option<String> = row.try_get(1).map_err(decode)?;
        Ok(match (released, holder) {
            (n, _) if n > 0 => UnlockStatus::Success,
            (_, None) => UnlockStatus::LockDoesNotExist,
            (_, Some(_)) => UnlockStatus::LockBelongsToOthers,
        })
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
