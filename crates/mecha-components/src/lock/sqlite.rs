//! `lock.sqlite` v1: expiring locks in a SQLite file, shared by the sidecars on one machine.
//!
//! Mecha's own component (Dapr has no SQLite lock). Metadata as `state.sqlite`:
//! `connectionString` (required), `tableName` (default `locks`), `timeout`, `busyTimeout`,
//! `disableWAL`. Each check-and-write is one SQL statement, so the sidecars sharing the file
//! need no other coordination. Tested by the lock conformance suite on a temporary file
//! (`tests/lock_sqlite.rs`) and across two sidecars in the end-to-end tests.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mecha_core::component::{ComponentError, ComponentInit};
use mecha_core::lock::{LockError, LockStore, UnlockStatus};
use mecha_core::state::now_millis;
use sqlx::sqlite::SqlitePool;
use sqlx::{AssertSqlSafe, Row};

use crate::state::sqlite::open_shared;

/// The `lock.sqlite` lock store.
pub struct SqliteLockStore {
    pool: SqlitePool,
    timeout: Duration,
    try_lock: String,
    unlock: String,
    holder: String,
}

// === impl SqliteLockStore ===

impl SqliteLockStore {
    /// Opens the database and creates the lock table if missing.
    pub async fn create(init: ComponentInit) -> Result<Arc<dyn LockStore>, ComponentError> {
        let (db, table, timeout) = open_shared(&init, "locks").await?;
        let t = format!("\"{table}\"");
        let ddl = format!(
            "CREATE TABLE IF NOT EXISTS {t} (resource_id TEXT NOT NULL PRIMARY KEY, \
             owner TEXT NOT NULL, expires_at INTEGER NOT NULL)"
        );
        tokio::time::timeout(timeout, sqlx::query(AssertSqlSafe(ddl)).execute(&db.pool))
            .await
            .map_err(|_| ComponentError::Init("creating the lock table timed out".into()))?
            .map_err(|e| ComponentError::Init(format!("creating the lock table: {e}")))?;
        Ok(Arc::new(Self {
            pool: db.pool,
            timeout,
            // Insert, or take over a row whose lock has expired; anything else changes nothing.
            try_lock: format!(
                "INSERT INTO {t} (resource_id, owner, expires_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (resource_id) DO UPDATE SET owner = excluded.owner, \
                 expires_at = excluded.expires_at WHERE {t}.expires_at <= ?4"
            ),
            unlock: format!(
                "DELETE FROM {t} WHERE resource_id = ?1 AND owner = ?2 AND expires_at > ?3"
            ),
            holder: format!("SELECT owner FROM {t} WHERE resource_id = ?1 AND expires_at > ?2"),
        }))
    }

    async fn timed<T>(
        &self,
        op: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, LockError> {
        match tokio::time::timeout(self.timeout, op).await {
            Ok(r) => r.map_err(|e| LockError(format!("sqlite: {e}"))),
            Err(_) => Err(LockError(format!(
                "sqlite: timed out after {:?}",
                self.timeout
            ))),
        }
    }
}

#[async_trait]
impl LockStore for SqliteLockStore {
    async fn try_lock(
        &self,
        resource_id: &str,
        owner: &str,
        expiry: Duration,
    ) -> Result<bool, LockError> {
        let now = now_millis();
        let until = now.saturating_add(i64::try_from(expiry.as_millis()).unwrap_or(i64::MAX));
        let done = self
            .timed(
                sqlx::query(AssertSqlSafe(self.try_lock.as_str()))
                    .bind(resource_id)
                    .bind(owner)
                    .bind(until)
                    .bind(now)
                    .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn unlock(&self, resource_id: &str, owner: &str) -> Result<UnlockStatus, LockError> {
        let now = now_millis();
        let done = self
            .timed(
                sqlx::query(AssertSqlSafe(self.unlock.as_str()))
                    .bind(resource_id)
                    .bind(owner)
                    .bind(now)
                    .execute(&self.pool),
            )
            .await?;
        if done.rows_affected() == 1 {
            return Ok(UnlockStatus::Success);
        }
        let holder = self
            .timed(
                sqlx::query(AssertSqlSafe(self.holder.as_str()))
                    .bind(resource_id)
                    .bind(now)
                    .fetch_optional(&self.pool),
            )
            .await?;
        Ok(match holder.map(|r| r.try_get::<String, _>(0)) {
            Some(Ok(_)) => UnlockStatus::LockBelongsToOthers,
            Some(Err(e)) => return Err(LockError(format!("sqlite: {e}"))),
            None => UnlockStatus::LockDoesNotExist,
        })
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
