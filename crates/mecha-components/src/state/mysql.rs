//! `state.mysql` v1: a store in one MySQL or MariaDB table, which several sidecars may share.
//!
//! Capabilities: ETAG, TRANSACTIONAL, TTL, QUERY_API (the runtime adds ACTOR). Tested against
//! MariaDB 10.11 (`MECHA_TEST_MYSQL_URL`, default `mysql://root@127.0.0.1:3306/test`) and
//! private `mariadbd` processes by `tests/mysql.rs`: the `mecha-conformance` state suite, two
//! stores on one table, tables Dapr made, and outages.
//!
//! The table is laid out as Dapr's: `id` (primary key), `value` (JSON), `isbinary`,
//! `insertDate`, `updateDate`, `eTag` (a UUIDv4 per write) and `expiredate`; tables Dapr made
//! are used as they are (an old one gains `expiredate`). A new table differs in two details:
//! `id` compares bytes (a binary, no-pad collation, so `a`, `A` and `a ` are three keys) and
//! `expiredate` keeps milliseconds. JSON values are stored verbatim; other bytes as a base64
//! JSON string with `isbinary` set, as Dapr does, so both read each other's rows. MySQL
//! proper normalises JSON text, so there every value is stored as base64. Every check (ETag, expiry) happens in the statement that
//! writes; a first write deletes an expired row and inserts, failing on a duplicate key.
//! Expiry uses the server's clock; expired rows are never returned and are deleted every
//! `cleanupInterval`. A transaction is one SQL transaction. The query API reads the live rows
//! under the key prefix and evaluates the query in Mecha.
//!
//! Metadata: `connectionString` (required: a Go MySQL DSN such as
//! `user:pass@tcp(host:3306)/?parseTime=true`, or a `mysql://` URL), `schemaName` (created if
//! missing; when not set, the connection string's database, else `dapr_state_store`),
//! `tableName` (`state`), `metadataTableName` (`dapr_metadata`, validated but unused),
//! `timeoutInSeconds` (per operation, `20`), `cleanupInterval` or `cleanupIntervalInSeconds`
//! (`1h`; `0` or negative disables it), `maxOpenConns` (`10`), `maxIdleConns` (validated but
//! unused), `connMaxLifetime` (`30m`), `connMaxIdleTime` (`10m`) and `pemPath` (the CA for
//! `tls=custom`; not supported yet: this build has no TLS client, so `tls=true` or
//! `tls=custom` fail to connect). Connecting
//! may take the DSN's `timeout` (`5s`), at most three quarters of the operation timeout: a
//! server that is down fails operations in that time.
//! `actorStateStore` and `keyPrefix` belong to the runtime.

mod codec;
/// The connection string parser, shared with `bindings.mysql`.
pub(crate) mod dsn;
mod metadata;
mod ops;
mod schema;
mod sql;
#[cfg(test)]
mod tests;

use super::shared::{Cleanup, DeletesExpired, within};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mecha_core::component::{ComponentError, ComponentInit, Feature};
use mecha_core::state::{
    BulkGetItem, DeleteRequest, GetRequest, GetResponse, Query, QueryResponse, SetRequest,
    StateError, StateStore, TransactionOperation,
};
use sqlx::mysql::{MySqlConnection, MySqlPool, MySqlPoolOptions};
use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, Connection, MySql, Row};

use self::metadata::Metadata;
use self::ops::{backend, decode_row};
use self::sql::Statements;

const FEATURES: &[Feature] = &[
    Feature::Etag,
    Feature::Transactional,
    Feature::Ttl,
    Feature::QueryApi,
];
/// How long connecting may take when the connection string's `timeout` does not say.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Keys per `IN (...)` list of a bulk read.
const BULK_GET_CHUNK: usize = 1000;
/// The schema used when neither `schemaName` nor the connection string names one.
const DEFAULT_SCHEMA: &str = "dapr_state_store";

/// The `state.mysql` state store.
pub struct MySqlStateStore {
    pool: MySqlPool,
    sql: Statements,
    timeout: Duration,
    /// The server keeps JSON text verbatim (MariaDB); MySQL's JSON type normalises it, so
    /// there every value is stored as base64 to come back byte for byte.
    json_verbatim: bool,
    /// `host:port` or the socket path, for error messages.
    address: String,
    max_connections: u32,
    cleanup: Cleanup,
}

// === impl MySqlStateStore ===

impl MySqlStateStore {
    /// Connects, creates the schema and table if missing and starts the clean-up of expired
    /// rows.
    pub async fn create(init: ComponentInit) -> Result<Arc<dyn StateStore>, ComponentError> {
        Ok(Self::open(init).await?)
    }

    async fn open(init: ComponentInit) -> Result<Arc<Self>, ComponentError> {
        let md = Metadata::parse(&init)?;
        let invalid = |reason: String| ComponentError::InvalidField {
            field: "connectionString",
            reason,
        };
        let mut target = dsn::parse(&md.connection_string).map_err(invalid)?;
        if let Some(pem_path) = &md.pem_path {
            // Kept for `tls=custom`, as Dapr does; connecting with TLS fails until the
            // client is built with TLS support.
            target.options = target.options.ssl_ca(pem_path);
            tracing::warn!(
                component = %init.name,
                pem_path = %pem_path,
                "pemPath is not supported: this build has no TLS client for MySQL"
            );
        }
        let schema = match (&md.schema_name, &target.database) {
            (Some(schema), _) => schema.clone(),
            (None, Some(db)) => metadata::identifier("connectionString", db)?,
            (None, None) => DEFAULT_SCHEMA.to_owned(),
        };
        let sql = Statements::new(&schema, &md.table_name);
        let init_error =
            |e: String| ComponentError::Init(format!("MySQL at {}: {e}", target.address));
        let json_verbatim = tokio::time::timeout(md.timeout, schema::prepare(&target, &sql))
            .await
            .map_err(|_| init_error(format!("preparing timed out after {:?}", md.timeout)))?
            .map_err(|e| init_error(e.to_string()))?;
        // Connecting gets part of the operation timeout, so that its clearer error wins.
        let connect_timeout = target
            .connect_timeout
            .unwrap_or(CONNECT_TIMEOUT)
            .min(md.timeout.mul_f64(0.75));
        let pool = MySqlPoolOptions::new()
            .max_connections(md.max_open_conns)
            .acquire_timeout(connect_timeout)
            .max_lifetime(md.conn_max_lifetime)
            .idle_timeout(md.conn_max_idle_time)
            .connect_lazy_with(target.options.clone());
        let store = Arc::new(Self {
            pool,
            sql,
            timeout: md.timeout,
            json_verbatim,
            address: target.address.clone(),
            max_connections: md.max_open_conns,
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
        within(
            self.timeout,
            || format!("mysql: no answer from {}", self.address),
            op,
        )
        .await
    }

    /// A pooled connection, or an error saying why none could be had.
    async fn conn(&self) -> Result<PoolConnection<MySql>, StateError> {
        self.pool.acquire().await.map_err(|e| match e {
            sqlx::Error::PoolTimedOut if self.pool.size() >= self.max_connections => {
                StateError::Backend(format!(
                    "mysql: all {} connections to {} are busy (maxOpenConns)",
                    self.max_connections, self.address
                ))
            }
            sqlx::Error::PoolTimedOut => StateError::Backend(format!(
                "mysql: cannot connect to {}: the connection was refused or timed out",
                self.address
            )),
            e => backend(e),
        })
    }
}

impl DeletesExpired for MySqlStateStore {
    async fn delete_expired(&self) -> Result<u64, StateError> {
        self.timed(async {
            let mut conn = self.conn().await?;
            let done = sqlx::query(AssertSqlSafe(self.sql.delete_expired.clone()))
                .execute(&mut *conn)
                .await
                .map_err(backend)?;
            Ok(done.rows_affected())
        })
        .await
    }
}

#[async_trait]
impl StateStore for MySqlStateStore {
    fn features(&self) -> &[Feature] {
        FEATURES
    }

    async fn get(&self, req: &GetRequest) -> Result<Option<GetResponse>, StateError> {
        self.timed(async {
            let mut conn = self.conn().await?;
            let row = sqlx::query(AssertSqlSafe(self.sql.get.clone()))
                .bind(req.key.as_str())
                .fetch_optional(&mut *conn)
                .await
                .map_err(backend)?;
            row.map(|r| decode_row(&r, 0)).transpose()
        })
        .await
    }

    async fn set(&self, req: &SetRequest) -> Result<(), StateError> {
        self.timed(async {
            let mut conn = self.conn().await?;
            ops::set_on(&self.sql, &mut conn, req, self.json_verbatim).await
        })
        .await
    }

    async fn delete(&self, req: &DeleteRequest) -> Result<(), StateError> {
        self.timed(async {
            let mut conn = self.conn().await?;
            ops::delete_on(&self.sql, &mut conn, req).await
        })
        .await
    }

    async fn bulk_get(&self, reqs: &[GetRequest]) -> Result<Vec<BulkGetItem>, StateError> {
        if reqs.is_empty() {
            return Ok(Vec::new());
        }
        let found = self
            .timed(async {
                let mut conn = self.conn().await?;
                if reqs.len() <= BULK_GET_CHUNK {
                    return bulk_read(&self.sql, &mut conn, reqs).await;
                }
                // One transaction, so that every chunk reads the same snapshot.
                let mut tx = conn.begin().await.map_err(backend)?;
                let found = bulk_read(&self.sql, &mut tx, reqs).await?;
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
            let mut conn = self.conn().await?;
            // Dropping the transaction on an error rolls it back.
            let mut tx = conn.begin().await.map_err(backend)?;
            for op in ops {
                match op {
                    TransactionOperation::Upsert(r) => {
                        ops::set_on(&self.sql, &mut tx, r, self.json_verbatim).await?
                    }
                    TransactionOperation::Delete(r) => {
                        ops::delete_on(&self.sql, &mut tx, r).await?
                    }
                }
            }
            tx.commit().await.map_err(backend)
        })
        .await
    }

    async fn query(&self, query: &Query) -> Result<QueryResponse, StateError> {
        let rows = self
            .timed(async {
                let mut conn = self.conn().await?;
                let rows = sqlx::query(AssertSqlSafe(self.sql.query.clone()))
                    .bind(sql::prefix_pattern(&query.key_prefix))
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(backend)?;
                let prefix = query.key_prefix.as_str();
                let mut found = Vec::with_capacity(rows.len());
                for row in &rows {
                    let key: String = row.try_get(0).map_err(backend)?;
                    // A table made by Dapr compares keys case-insensitively: keep exact
                    // prefixes only.
                    if !key.starts_with(prefix) {
                        continue;
                    }
                    let value = row.try_get_unchecked::<Vec<u8>, _>(1).map_err(backend)?;
                    let binary: bool = row.try_get(2).map_err(backend)?;
                    let etag: String = row.try_get(3).map_err(backend)?;
                    let data = codec::decode(value, binary)
                        .map_err(|e| StateError::Backend(format!("mysql: {key}: {e}")))?;
                    found.push((key, data, Some(etag)));
                }
                Ok(found)
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

/// Reads the live rows of `reqs` on `conn`, by key.
async fn bulk_read(
    sql: &Statements,
    conn: &mut MySqlConnection,
    reqs: &[GetRequest],
) -> Result<HashMap<String, Result<GetResponse, String>>, StateError> {
    let mut found = HashMap::with_capacity(reqs.len());
    for chunk in reqs.chunks(BULK_GET_CHUNK) {
        // Each length is its own statement: do not fill the statement cache with them.
        let mut q = sqlx::query(AssertSqlSafe(sql.bulk_get(chunk.len()))).persistent(false);
        for r in chunk {
            q = q.bind(r.key.as_str());
        }
        for row in q.fetch_all(&mut *conn).await.map_err(backend)? {
            let key: String = row.try_get(0).map_err(backend)?;
            found.insert(key, decode_row(&row, 1).map_err(|e| e.to_string()));
        }
    }
    Ok(found)
}
