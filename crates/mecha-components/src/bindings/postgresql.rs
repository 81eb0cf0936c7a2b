//! `bindings.postgresql` v1 (also registered as `bindings.postgres`): an output binding
//! running the app's SQL on a PostgreSQL server, as Dapr's.
//!
//! Operations: `exec` (request metadata `sql`, optional `params`: a JSON array bound to the
//! placeholders `$1`, `$2`…, never interpolated; response metadata `rows-affected`), `query`
//! (same request; the response data is a JSON array of rows, each an array of column values,
//! as Dapr's pgx rows marshal), and `close` (closes the pool; later calls fail, as in Dapr).
//! Every `exec`/`query` answers the metadata `operation`, `sql`, `start-time`, `end-time`
//! (RFC 3339) and `duration` (a Go duration). `exec` without `params` runs through the simple
//! protocol, so it may hold several statements. Values map to JSON as `codec` describes.
//! SQL the server refuses is a bad request carrying the server's message and SQLSTATE;
//! connection, resource and server-side failures are backend errors.
//!
//! Tested against PostgreSQL 15 (`MECHA_TEST_POSTGRES_URL`) and a private server restarted
//! under the same binding, by `tests/bindings_db.rs`.
//!
//! Metadata: the connection keys of Mecha's PostgreSQL components (see
//! `state::postgresql::connection`): `connectionString` (URL or keyword/value form; Dapr's
//! older `url` is accepted for it), `timeout`/`timeoutInSeconds` (default 20s; bounds every
//! operation here, where Dapr applies it when connecting only), `maxConns`,
//! `connectionMaxIdleTime`, and the `host`… overrides. `useAzureAD` and `useAWSIAM` are
//! refused. Pooled connections are checked before use, so the binding recovers by itself
//! after a server restart.

mod codec;

use super::sql::request;
use super::sql::{self, Database, Outcome};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use async_trait::async_trait;
use mecha_core::Metadata;
use mecha_core::bindings::{
    BindingComponent, BindingError, InvokeRequest, InvokeResponse, OutputBinding,
};
use mecha_core::component::{ComponentError, ComponentInit};
use serde_json::Value;
use sqlx::postgres::{PgConnection, PgPool, PgRow};
use sqlx::{AssertSqlSafe, Connection as _, Either, Executor, Row, SqlSafeStr, Statement};

use self::codec::Param;
use crate::state::postgresql::connection::{self, CONNECTION_KEYS, Connection};
use request::{EXEC, OPERATIONS, SqlRequest};

const CONNECTION_STRING: &str = "connectionString";
/// Dapr's older name of `connectionString`.
const URL: &str = "url";
/// SQLSTATE classes that are the server's trouble, not the statement's: connection
/// exception, insufficient resources, operator intervention, system error, internal error.
const BACKEND_CLASSES: &[&str] = &["08", "53", "57", "58", "XX"];
/// SQLSTATE of "cached plan must not change result type": a cached statement outlived a
/// change of the table it reads, and is prepared again.
const FEATURE_NOT_SUPPORTED: &str = "0A000";

/// The `bindings.postgresql` component.
pub struct PostgresBinding {
    pool: PgPool,
    timeout: Duration,
    closed: AtomicBool,
}

// === impl PostgresBinding ===

impl PostgresBinding {
    /// Connects (checking that the server answers) and returns the output binding.
    pub async fn create(init: ComponentInit) -> Result<Arc<BindingComponent>, ComponentError> {
        let known: Vec<&str> = CONNECTION_KEYS
            .iter()
            .copied()
            .chain([
                URL,
                mecha_core::bindings::DIRECTION,
                mecha_core::bindings::ROUTE,
            ])
            .collect();
        init.metadata.warn_unknown(&init.name, &known);
        let mut values: HashMap<String, String> = init
            .metadata
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let has_connection_string = values
            .get(CONNECTION_STRING)
            .is_some_and(|v| !v.trim().is_empty());
        if !has_connection_string && let Some(url) = values.get(URL).cloned() {
            values.insert(CONNECTION_STRING.to_owned(), url);
        }
        let connection = Connection::parse(&Metadata::new(values))?;
        let pool = connection.connect().await?;
        let binding = Self {
            pool,
            timeout: connection.timeout,
            closed: AtomicBool::new(false),
        };
        Ok(Arc::new(BindingComponent {
            input: None,
            output: Some(Arc::new(binding)),
        }))
    }

    /// Runs the statement within the operation timeout.
    async fn run_statement(&self, req: &SqlRequest) -> Result<Outcome, BindingError> {
        let work = async {
            let mut conn = self.pool.acquire().await.map_err(|e| self.backend(&e))?;
            if req.operation == EXEC && req.params.is_empty() {
                let done = sqlx::raw_sql(AssertSqlSafe(req.sql.clone()))
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| self.sql_error(&e))?;
                return Ok(Outcome::Affected(done.rows_affected()));
            }
            match self.prepared(&mut conn, req).await {
                Err(sqlx::Error::Database(e))
                    if e.code().as_deref() == Some(FEATURE_NOT_SUPPORTED)
                        && e.message().starts_with("cached plan") =>
                {
                    conn.clear_cached_statements()
                        .await
                        .map_err(|e| self.backend(&e))?;
                    self.prepared(&mut conn, req)
                        .await
                        .map_err(|e| self.sql_error(&e))
                }
                other => other.map_err(|e| self.sql_error(&e)),
            }
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .unwrap_or_else(|_| {
                Err(BindingError::Backend(format!(
                    "postgresql: no answer within {:?}",
                    self.timeout
                )))
            })
    }

    /// Prepares the statement, encodes the parameters for the types the server inferred and
    /// runs it.
    async fn prepared(
        &self,
        conn: &mut PgConnection,
        req: &SqlRequest,
    ) -> Result<Outcome, sqlx::Error> {
        let statement = (&mut *conn)
            .prepare(AssertSqlSafe(req.sql.clone()).into_sql_str())
            .await?;
        let types = match statement.parameters() {
            Some(Either::Left(types)) => types.to_vec(),
            _ => Vec::new(),
        };
        if types.len() != req.params.len() {
            return Err(sqlx::Error::InvalidArgument(format!(
                "the statement has {} placeholders but params has {} values",
                types.len(),
                req.params.len()
            )));
        }
        let mut query = sqlx::query(AssertSqlSafe(req.sql.clone()));
        for (i, (ty, value)) in types.iter().zip(&req.params).enumerate() {
            query = query.bind(Param::new(i + 1, ty, value).map_err(sqlx::Error::InvalidArgument)?);
        }
        if req.operation == EXEC {
            let done = query.execute(&mut *conn).await?;
            return Ok(Outcome::Affected(done.rows_affected()));
        }
        let rows = query.fetch_all(&mut *conn).await?;
        Ok(Outcome::Rows(rows.iter().map(row_values).collect()))
    }

    fn backend(&self, e: &sqlx::Error) -> BindingError {
        BindingError::Backend(connection::describe(e, self.timeout))
    }

    /// A statement's failure: the statement's fault (a bad request with the server's
    /// message) or the server's (a backend error).
    fn sql_error(&self, e: &sqlx::Error) -> BindingError {
        match e {
            sqlx::Error::Database(db) => {
                let code = db.code().unwrap_or_default().into_owned();
                let message = format!("error executing query: {} (SQLSTATE {code})", db.message());
                if BACKEND_CLASSES.iter().any(|c| code.starts_with(c)) {
                    BindingError::Backend(format!("postgresql: {message}"))
                } else {
                    BindingError::BadRequest(message)
                }
            }
            sqlx::Error::InvalidArgument(why) => BindingError::BadRequest(why.clone()),
            e => self.backend(e),
        }
    }
}

impl Database for PostgresBinding {
    fn run(&self, req: &SqlRequest) -> impl Future<Output = Result<Outcome, BindingError>> + Send {
        self.run_statement(req)
    }

    async fn close_pool(&self) {
        self.pool.close().await;
    }

    fn closed(&self) -> &AtomicBool {
        &self.closed
    }
}

#[async_trait]
impl OutputBinding for PostgresBinding {
    fn operations(&self) -> &[&'static str] {
        OPERATIONS
    }

    async fn invoke(&self, req: InvokeRequest) -> Result<InvokeResponse, BindingError> {
        sql::invoke(self, req).await
    }

    async fn close(&self) {
        sql::close(self).await;
    }
}

/// A row as Dapr's pgx binding returns it: an array of the column values.
fn row_values(row: &PgRow) -> Value {
    Value::Array(
        (0..row.len())
            .map(|i| row.try_get_raw(i).map_or(Value::Null, codec::decode))
            .collect(),
    )
}
