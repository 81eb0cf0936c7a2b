//! `state.postgresql` v1 (also registered as v2): a store in one PostgreSQL table, in the
//! layout of Dapr's v1 component.
//!
//! Capabilities: ETAG, TRANSACTIONAL, TTL, QUERY_API (the runtime adds ACTOR). Tested against
//! PostgreSQL 15 (`MECHA_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`)
//! by the state conformance suite, query push-down checks and an outage test on a private
//! server (`tests/postgresql.rs`).
//!
//! The table is Dapr's: `key text primary key, value jsonb, isbinary boolean, insertdate,
//! updatedate, expiredate`. A value that is JSON is stored in `value` as is; other bytes as
//! the base64 JSON string of them with `isbinary` set. `jsonb` normalises JSON (white space,
//! key order, number spelling), so Mecha adds one nullable column, `rawvalue text`, holding the
//! JSON text as written whenever `jsonb` would give back something else; reads return it as
//! long as it still equals `value` (a Dapr sidecar writing the same table does not know the
//! column), so values come back byte for byte. The ETag is the row's `xmin`, as in Dapr: an
//! ETag that is not a 32-bit unsigned number is refused as invalid. Every check (ETag,
//! first-write, expiry) happens in the statement that writes; a transaction is one SQL
//! transaction. Expired rows are never returned and are deleted every `cleanupInterval`.
//! Queries are translated to SQL over the `jsonb` column (see `query`).
//!
//! Metadata: the connection fields (see `connection`: `connectionString` in URL or
//! keyword/value form, `timeout`/`timeoutInSeconds`, `maxConns`, `connectionMaxIdleTime`,
//! `queryExecMode`…), `tableName` (`state`, may be `schema.table`), `metadataTableName`
//! (validated, unused), `cleanupInterval` or `cleanupIntervalInSeconds` (`1h`; `0` or negative
//! disables it). `actorStateStore` and `keyPrefix` belong to the runtime.
//!
//! Outages: an operation that cannot reach the server fails with a backend error after at most
//! `timeout` (sqlx retries refused connections until then, which rides out a quick restart);
//! pooled connections are checked before use, so the pool recovers by itself once the server is
//! back.

#[allow(dead_code)] // Shared with the lock and configuration stores; each uses a part.
pub(crate) mod connection;
mod metadata;
mod query;
mod sql;
#[cfg(test)]
mod tests;

use super::shared::{Cleanup, DeletesExpired, within};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use mecha_core::component::{ComponentError, ComponentInit, Feature};
use mecha_core::state::{
    BulkGetItem, Concurrency, DeleteRequest, GetRequest, GetResponse, Query, QueryResponse,
    QueryResult, SetRequest, StateError, StateStore, TransactionOperation, expiry_metadata,
};
use sqlx::postgres::{PgConnection, PgPool, PgRow};
use sqlx::{AssertSqlSafe, Row};

use self::metadata::Metadata;
use self::query::{Param, Translated};
use self::sql::Statements;

const FEATURES: &[Feature] = &[
    Feature::Etag,
    Feature::Transactional,
    Feature::Ttl,
    Feature::QueryApi,
];

/// The `state.postgresql` state store.
pub struct PostgresStateStore {
    pool: PgPool,
    sql: Statements,
    timeout: Duration,
    cleanup: Cleanup,
}

// === impl PostgresStateStore ===

impl PostgresStateStore {
    /// Connects, creates the table if missing and starts the clean-up of expired rows.
    pub async fn create(init: ComponentInit) -> Result<Arc<dyn StateStore>, ComponentError> {
        let md = Metadata::parse(&init)?;
        let pool = md.connection.connect().await?;
        let sql = Statements::new(&md.table);
        md.connection
            .prepare(&pool, &format!("mecha-state-{}", sql.table), &sql.schema())
            .await?;
        let store = Arc::new(Self {
            pool,
            sql,
            timeout: md.connection.timeout,
            cleanup: Cleanup::default(),
        });
        if let Some(every) = md.cleanup_interval {
            store.cleanup.start(&store, every);
        }
        Ok(store)
    }

    /// Runs `op` within the operation timeout.
    async fn timed<T>(
        &self,
        op: impl Future<Output = Result<T, StateError>>,
    ) -> Result<T, StateError> {
        within(self.timeout, || "postgresql: no answer".to_owned(), op).await
    }

    fn backend(&self, e: sqlx::Error) -> StateError {
        StateError::Backend(connection::describe(&e, self.timeout))
    }

    /// Writes one key on `conn`, checking the ETag or first-write condition in the same
    /// statement.
    async fn set_on(&self, conn: &mut PgConnection, req: &SetRequest) -> Result<(), StateError> {
        let etag = req.etag.as_deref().map(parse_etag).transpose()?;
        let statement = match (etag, req.concurrency) {
            (Some(_), _) => &self.sql.update_if_etag,
            (None, Concurrency::FirstWrite) => &self.sql.first_write,
            (None, _) => &self.sql.upsert,
        };
        let (json, bytes) = match json_text(&req.value) {
            Some(text) => (Some(text), None),
            None => (None, Some(req.value.as_ref())),
        };
        let mut q = sqlx::query(AssertSqlSafe(statement.clone()))
            .bind(req.key.as_str())
            .bind(json)
            .bind(bytes)
            .bind(req.ttl.map(|t| t.as_secs_f64()));
        if let Some(etag) = etag {
            q = q.bind(etag);
        }
        let done = q.execute(&mut *conn).await.map_err(|e| self.backend(e))?;
        if done.rows_affected() == 0 {
            return Err(StateError::EtagMismatch);
        }
        Ok(())
    }

    /// Deletes one key on `conn`, checking the ETag in the same statement.
    async fn delete_on(
        &self,
        conn: &mut PgConnection,
        req: &DeleteRequest,
    ) -> Result<(), StateError> {
        let Some(etag) = req.etag.as_deref().map(parse_etag).transpose()? else {
            sqlx::query(AssertSqlSafe(self.sql.delete.clone()))
                .bind(req.key.as_str())
                .execute(&mut *conn)
                .await
                .map_err(|e| self.backend(e))?;
            return Ok(());
        };
        let done = sqlx::query(AssertSqlSafe(self.sql.delete_if_etag.clone()))
            .bind(req.key.as_str())
            .bind(etag)
            .execute(&mut *conn)
            .await
            .map_err(|e| self.backend(e))?;
        if done.rows_affected() == 0 {
            return Err(StateError::EtagMismatch);
        }
        Ok(())
    }
}

impl DeletesExpired for PostgresStateStore {
    async fn delete_expired(&self) -> Result<u64, StateError> {
        self.timed(async {
            let done = sqlx::query(AssertSqlSafe(self.sql.delete_expired.clone()))
                .execute(&self.pool)
                .await
                .map_err(|e| self.backend(e))?;
            Ok(done.rows_affected())
        })
        .await
    }
}

#[async_trait]
impl StateStore for PostgresStateStore {
    fn features(&self) -> &[Feature] {
        FEATURES
    }

    async fn get(&self, req: &GetRequest) -> Result<Option<GetResponse>, StateError> {
        self.timed(async {
            let row = sqlx::query(AssertSqlSafe(self.sql.get.clone()))
                .bind(req.key.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| self.backend(e))?;
            row.map(|r| decode_value(&r, 0).map_err(|e| self.backend(e)))
                .transpose()
        })
        .await
    }

    async fn set(&self, req: &SetRequest) -> Result<(), StateError> {
        self.timed(async {
            let mut conn = self.pool.acquire().await.map_err(|e| self.backend(e))?;
            self.set_on(&mut conn, req).await
        })
        .await
    }

    async fn delete(&self, req: &DeleteRequest) -> Result<(), StateError> {
        self.timed(async {
            let mut conn = self.pool.acquire().await.map_err(|e| self.backend(e))?;
            self.delete_on(&mut conn, req).await
        })
        .await
    }

    async fn bulk_get(&self, reqs: &[GetRequest]) -> Result<Vec<BulkGetItem>, StateError> {
        if reqs.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<&str> = reqs.iter().map(|r| r.key.as_str()).collect();
        let found = self
            .timed(async {
                let rows = sqlx::query(AssertSqlSafe(self.sql.bulk_get.clone()))
                    .bind(&keys)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|e| self.backend(e))?;
                let mut found = HashMap::with_capacity(rows.len());
                for row in rows {
                    let key: String = row.try_get(0).map_err(|e| self.backend(e))?;
                    let value = decode_value(&row, 1).map_err(|e| self.backend(e).to_string());
                    found.insert(key, value);
                }
                Ok(found)
            })
            .await?;
        Ok(reqs
            .iter()
            .map(|r| BulkGetItem {
                key: r.key.clone(),
                result: found.get(&r.key).cloned().transpose(),
            })
            .collect())
    }

    async fn transact(&self, ops: &[TransactionOperation]) -> Result<(), StateError> {
        self.timed(async {
            // Dropping the transaction on an error rolls it back.
            let mut tx = self.pool.begin().await.map_err(|e| self.backend(e))?;
            for op in ops {
                match op {
                    TransactionOperation::Upsert(r) => self.set_on(&mut tx, r).await?,
                    TransactionOperation::Delete(r) => self.delete_on(&mut tx, r).await?,
                }
            }
            tx.commit().await.map_err(|e| self.backend(e))
        })
        .await
    }

    async fn query(&self, query: &Query) -> Result<QueryResponse, StateError> {
        let translated = Translated::new(&self.sql.table, query)?;
        let rows = self
            .timed(async {
                let mut q = sqlx::query(AssertSqlSafe(translated.sql.clone()));
                for param in &translated.params {
                    q = match param {
                        Param::Text(s) => q.bind(s.as_str()),
                        Param::Path(p) => q.bind(p.as_slice()),
                        Param::Int(n) => q.bind(*n),
                    };
                }
                q.fetch_all(&self.pool).await.map_err(|e| self.backend(e))
            })
            .await?;
        let mut results = rows
            .iter()
            .map(|row| {
                Ok(QueryResult {
                    key: row.try_get(0)?,
                    data: Bytes::from(row.try_get::<Vec<u8>, _>(1)?),
                    etag: Some(row.try_get(2)?),
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(|e| self.backend(e))?;
        let token = match translated.limit {
            Some(limit) if results.len() > limit => {
                results.truncate(limit);
                Some(translated.offset.saturating_add(limit).to_string())
            }
            _ => None,
        };
        Ok(QueryResponse { results, token })
    }

    async fn close(&self) {
        self.cleanup.stop();
        self.pool.close().await;
    }
}

/// The ETag as Dapr's store checks it: the row's `xmin`, a 32-bit unsigned number.
fn parse_etag(etag: &str) -> Result<&str, StateError> {
    match etag.parse::<u32>() {
        Ok(_) => Ok(etag),
        Err(e) => Err(StateError::InvalidEtag(format!("'{etag}': {e}"))),
    }
}

/// The value as JSON text when it is JSON that `jsonb` can hold, else `None` (stored as
/// base64). `jsonb` refuses the `\u0000` escape, which JSON allows.
fn json_text(value: &[u8]) -> Option<&str> {
    let parsed: serde_json::Value = serde_json::from_slice(value).ok()?;
    if has_nul(&parsed) {
        return None;
    }
    std::str::from_utf8(value).ok()
}

fn has_nul(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(has_nul),
        serde_json::Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// Reads the stored bytes, ETag and expiry starting at column `first`.
fn decode_value(row: &PgRow, first: usize) -> Result<GetResponse, sqlx::Error> {
    let data: Vec<u8> = row.try_get(first)?;
    let etag: String = row.try_get(first + 1)?;
    let expires_at: Option<i64> = row.try_get(first + 2)?;
    Ok(GetResponse {
        data: Bytes::from(data),
        etag: Some(etag),
        metadata: expiry_metadata(expires_at),
    })
}
