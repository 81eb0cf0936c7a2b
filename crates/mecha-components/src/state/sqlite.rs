//! `state.sqlite` v1: a store in one SQLite database, which several sidecars may share.
//!
//! Capabilities: ETAG, TRANSACTIONAL, TTL, QUERY_API (the runtime adds ACTOR). Tested against
//! the SQLite bundled by `libsqlite3-sys`, on a temporary file and in memory, by the
//! `mecha-conformance` state suite (`tests/state_conformance.rs`).
//!
//! Values are stored verbatim in a BLOB column with a random UUIDv4 ETag and an optional expiry
//! in milliseconds since the Unix epoch. Because several processes may write the same file,
//! every check (ETag, first-write, expiry) happens inside the statement that writes, and a
//! transaction takes the write lock up front (`BEGIN IMMEDIATE`). Writers of one process also
//! queue on an async mutex: it adds no correctness, but spares them SQLite's busy-wait sleeps,
//! which otherwise dominate tail latency under concurrent writes.
//! Expired rows are never returned and are deleted every `cleanupInterval`.
//!
//! Metadata: `connectionString` (required: a path, a `file:` URI or `:memory:`; a missing file
//! and its directory are created), `tableName` (`state`), `metadataTableName` (`metadata`,
//! validated but unused), `timeout` or `timeoutInSeconds` (per operation, `20s`), `busyTimeout`
//! (`2s`), `cleanupInterval` (`1h`; `0` or negative disables it), `disableWAL` (`false`).
//! `actorStateStore` and `keyPrefix` belong to the runtime.

mod metadata;
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
    SetRequest, StateError, StateStore, TransactionOperation, expiry_metadata, expiry_millis,
    now_millis,
};
use sqlx::sqlite::{SqliteConnection, SqlitePool, SqlitePoolOptions, SqliteRow};
use sqlx::{AssertSqlSafe, Row};

use self::metadata::{Metadata, Target};
use self::sql::Statements;

const FEATURES: &[Feature] = &[
    Feature::Etag,
    Feature::Transactional,
    Feature::Ttl,
    Feature::QueryApi,
];
/// Connections to a database file: readers run in parallel, SQLite serialises the writers.
const MAX_CONNECTIONS: u32 = 4;
/// Keys per `IN (...)` list of a bulk read, well below SQLite's limit on bound parameters.
const BULK_GET_CHUNK: usize = 500;
/// The pause between attempts to change the journal mode while another process holds a lock.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// The `state.sqlite` state store.
pub struct SqliteStateStore {
    pool: SqlitePool,
    sql: Statements,
    timeout: Duration,
    cleanup: Cleanup,
    /// Serialises this process's writers (see the module doc).
    writer: tokio::sync::Mutex<()>,
}

// === impl SqliteStateStore ===

impl SqliteStateStore {
    /// Opens the database named by `connectionString`, creates the table if missing and starts
    /// the clean-up of expired rows.
    pub async fn create(init: ComponentInit) -> Result<Arc<dyn StateStore>, ComponentError> {
        Ok(Self::open(init).await?)
    }

    async fn open(init: ComponentInit) -> Result<Arc<Self>, ComponentError> {
        let md = Metadata::parse(&init)?;
        let db = open_database(&md).await?;
        let (pool, target) = (db.pool, db.target);
        let sql = Statements::new(&md.table_name);
        if !target.read_only {
            let schema = async {
                for ddl in sql.schema() {
                    sqlx::query(AssertSqlSafe(ddl)).execute(&pool).await?;
                }
                Ok::<_, sqlx::Error>(())
            };
            tokio::time::timeout(md.timeout, schema)
                .await
                .map_err(|_| ComponentError::Init("preparing the database timed out".into()))?
                .map_err(|e| ComponentError::Init(format!("preparing the database: {e}")))?;
        }
        let store = Arc::new(Self {
            pool,
            sql,
            timeout: md.timeout,
            cleanup: Cleanup::default(),
            writer: tokio::sync::Mutex::new(()),
        });
        if let Some(every) = md.cleanup_interval.filter(|_| !target.read_only) {
            store.cleanup.start(&store, every);
        }
        Ok(store)
    }

    /// Runs `op` within the operation timeout.
    async fn timed<T>(
        &self,
        op: impl Future<Output = Result<T, StateError>>,
    ) -> Result<T, StateError> {
        within(self.timeout, || "sqlite: no answer".to_owned(), op).await
    }
}

impl DeletesExpired for SqliteStateStore {
    async fn delete_expired(&self) -> Result<u64, StateError> {
        let _writer = self.writer.lock().await;
        let done = sqlx::query(AssertSqlSafe(self.sql.delete_expired.clone()))
            .bind(now_millis())
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl StateStore for SqliteStateStore {
    fn features(&self) -> &[Feature] {
        FEATURES
    }

    async fn get(&self, req: &GetRequest) -> Result<Option<GetResponse>, StateError> {
        self.timed(async {
            let row = sqlx::query(AssertSqlSafe(self.sql.get.clone()))
                .bind(req.key.as_str())
                .bind(now_millis())
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
            row.map(|r| decode_value(&r, 0)).transpose()
        })
        .await
    }

    async fn set(&self, req: &SetRequest) -> Result<(), StateError> {
        self.timed(async {
            let _writer = self.writer.lock().await;
            let mut conn = self.pool.acquire().await.map_err(backend)?;
            set_on(&self.sql, &mut conn, req).await
        })
        .await
    }

    async fn delete(&self, req: &DeleteRequest) -> Result<(), StateError> {
        self.timed(async {
            let _writer = self.writer.lock().await;
            let mut conn = self.pool.acquire().await.map_err(backend)?;
            delete_on(&self.sql, &mut conn, req).await
        })
        .await
    }

    async fn bulk_get(&self, reqs: &[GetRequest]) -> Result<Vec<BulkGetItem>, StateError> {
        if reqs.is_empty() {
            return Ok(Vec::new());
        }
        let found = self
            .timed(async {
                // One read transaction, so that every chunk sees the same snapshot.
                let mut tx = self.pool.begin().await.map_err(backend)?;
                let now = now_millis();
                let mut found = HashMap::new();
                for chunk in reqs.chunks(BULK_GET_CHUNK) {
                    let mut q = sqlx::query(AssertSqlSafe(self.sql.bulk_get(chunk.len())));
                    q = q.bind(now);
                    for r in chunk {
                        q = q.bind(r.key.as_str());
                    }
                    for row in q.fetch_all(&mut *tx).await.map_err(backend)? {
                        let key: String = row.try_get(0).map_err(backend)?;
                        found.insert(key, decode_value(&row, 1).map_err(|e| e.to_string()));
                    }
                }
                tx.commit().await.map_err(backend)?;
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
            // Taking the write lock first means the checks below see the state the writes
            // apply to. Dropping the transaction on an error rolls it back.
            let _writer = self.writer.lock().await;
            let mut tx = self
                .pool
                .begin_with("BEGIN IMMEDIATE")
                .await
                .map_err(backend)?;
            for op in ops {
                match op {
                    TransactionOperation::Upsert(r) => set_on(&self.sql, &mut tx, r).await?,
                    TransactionOperation::Delete(r) => delete_on(&self.sql, &mut tx, r).await?,
                }
            }
            tx.commit().await.map_err(backend)
        })
        .await
    }

    async fn query(&self, query: &Query) -> Result<QueryResponse, StateError> {
        let rows = self
            .timed(async {
                let prefix = query.key_prefix.as_str();
                let rows = sqlx::query(AssertSqlSafe(self.sql.query.clone()))
                    .bind(i64::try_from(prefix.chars().count()).unwrap_or(i64::MAX))
                    .bind(prefix)
                    .bind(now_millis())
                    .fetch_all(&self.pool)
                    .await
                    .map_err(backend)?;
                rows.iter()
                    .map(|row| {
                        let key: String = row.try_get(0)?;
                        let value: Vec<u8> = row.try_get(1)?;
                        let etag: String = row.try_get(2)?;
                        Ok((key, Bytes::from(value), Some(etag)))
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()
                    .map_err(backend)
            })
            .await?;
        query
            .evaluate(rows)
            .map_err(|e| StateError::BadRequest(e.to_string()))
    }

    async fn close(&self) {
        self.cleanup.stop();
        self.pool.close().await;
    }
}

fn pool_options(target: &Target, timeout: Duration) -> SqlitePoolOptions {
    let options = SqlitePoolOptions::new().acquire_timeout(timeout);
    if target.in_memory {
        // The database lives as long as its one connection: never let the pool close it.
        options
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
    } else {
        options.max_connections(MAX_CONNECTIONS)
    }
}

/// A database opened as `state.sqlite` opens it: the file (and its folder) created, the pool
/// sized, the journal mode set. Other components on SQLite files (`lock.sqlite`) share this.
pub(crate) struct Database {
    /// The connection pool.
    pub(crate) pool: SqlitePool,
    target: Target,
}

/// Opens the database that `md` names.
async fn open_database(md: &Metadata) -> Result<Database, ComponentError> {
    let target = md.target()?;
    let parent = target
        .create_file
        .as_deref()
        .and_then(std::path::Path::parent);
    if let Some(parent) = parent.filter(|p| !p.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| ComponentError::Init(format!("creating {}: {e}", parent.display())))?;
    }
    let pool = pool_options(&target, md.timeout)
        .connect_with(target.options.clone())
        .await
        .map_err(|e| ComponentError::Init(format!("opening the SQLite database: {e}")))?;
    if let Some(mode) = target.journal_mode.filter(|_| !target.read_only) {
        tokio::time::timeout(md.timeout, set_journal_mode(&pool, mode))
            .await
            .map_err(|_| ComponentError::Init("setting the journal mode timed out".into()))?
            .map_err(|e| ComponentError::Init(format!("setting the journal mode: {e}")))?;
    }
    Ok(Database { pool, target })
}

/// Opens the SQLite database of a component whose metadata follows `state.sqlite`'s, with
/// `tableName` defaulting to `default_table`; returns the database, the table name and the
/// per-operation timeout.
pub(crate) async fn open_shared(
    init: &ComponentInit,
    default_table: &str,
) -> Result<(Database, String, Duration), ComponentError> {
    let md = Metadata::parse_with_table(init, default_table)?;
    let db = open_database(&md).await?;
    Ok((db, md.table_name, md.timeout))
}

/// Sets the journal mode. It needs an exclusive lock that SQLite does not wait for, so retry
/// while another process uses the file; the caller bounds the wait.
async fn set_journal_mode(pool: &SqlitePool, mode: &str) -> Result<(), sqlx::Error> {
    /// The longest this waits for other connections to let go of the file.
    const JOURNAL_MODE_WAIT: Duration = Duration::from_secs(30);
    let mut conn = pool.acquire().await?;
    let pragma = format!("PRAGMA journal_mode = {mode}");
    let started = std::time::Instant::now();
    while let Err(e) = sqlx::query(AssertSqlSafe(pragma.as_str()))
        .execute(&mut *conn)
        .await
    {
        if !is_busy(&e) || started.elapsed() > JOURNAL_MODE_WAIT {
            return Err(e);
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
    Ok(())
}

/// Writes one key on `conn`, checking the ETag or first-write condition in the same statement.
async fn set_on(
    sql: &Statements,
    conn: &mut SqliteConnection,
    req: &SetRequest,
) -> Result<(), StateError> {
    let statement = match (&req.etag, req.concurrency) {
        (Some(_), _) => &sql.update_if_etag,
        (None, Concurrency::FirstWrite) => &sql.first_write,
        (None, _) => &sql.upsert,
    };
    let mut q = sqlx::query(AssertSqlSafe(statement.clone()))
        .bind(req.key.as_str())
        .bind(req.value.as_ref())
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(expiry_millis(req.ttl))
        .bind(now_millis());
    if let Some(etag) = &req.etag {
        q = q.bind(etag.as_str());
    }
    let done = q.execute(&mut *conn).await.map_err(backend)?;
    if done.rows_affected() == 0 {
        return Err(StateError::EtagMismatch);
    }
    Ok(())
}

/// Deletes one key on `conn`, checking the ETag in the same statement.
async fn delete_on(
    sql: &Statements,
    conn: &mut SqliteConnection,
    req: &DeleteRequest,
) -> Result<(), StateError> {
    let Some(etag) = &req.etag else {
        let q = sqlx::query(AssertSqlSafe(sql.delete.clone())).bind(req.key.as_str());
        q.execute(&mut *conn).await.map_err(backend)?;
        return Ok(());
    };
    let done = sqlx::query(AssertSqlSafe(sql.delete_if_etag.clone()))
        .bind(req.key.as_str())
        .bind(etag.as_str())
        .bind(now_millis())
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    if done.rows_affected() == 0 {
        return Err(StateError::EtagMismatch);
    }
    Ok(())
}

/// Reads `value, etag, expiration_time` starting at column `first`.
fn decode_value(row: &SqliteRow, first: usize) -> Result<GetResponse, StateError> {
    let data: Vec<u8> = row.try_get(first).map_err(backend)?;
    let etag: String = row.try_get(first + 1).map_err(backend)?;
    let expires_at: Option<i64> = row.try_get(first + 2).map_err(backend)?;
    Ok(GetResponse {
        data: Bytes::from(data),
        etag: Some(etag),
        metadata: expiry_metadata(expires_at),
    })
}

fn backend(e: sqlx::Error) -> StateError {
    StateError::Backend(format!("sqlite: {e}"))
}

/// Whether SQLite refused because another connection holds a lock (`SQLITE_BUSY`/`LOCKED`).
fn is_busy(e: &sqlx::Error) -> bool {
    let code = e
        .as_database_error()
        .and_then(|d| d.code())
        .and_then(|c| c.parse::<i32>().ok());
    code.is_some_and(|c| matches!(c & 0xff, 5 | 6))
}
