//! `bindings.mysql` v1: an output binding running the app's SQL on a MySQL or MariaDB server,
//! as Dapr's.
//!
//! Operations: `exec` (request metadata `sql`, optional `params`: a JSON array bound to the
//! `?` placeholders, never interpolated; response metadata `rows-affected`), `query` (same
//! request; the response data is a JSON array of rows, each an object keyed by column name,
//! as Dapr's; see `codec` for the values), and `close` (closes the pool; later calls fail, as
//! in Dapr). Every `exec`/`query` answers the metadata `operation`, `sql`, `start-time`,
//! `end-time` (RFC 3339) and `duration` (a Go duration). SQL the server refuses is a bad
//! request carrying the server's error number, SQLSTATE and message; lost connections and
//! server-side resource errors are backend errors. A query with no rows answers `[]` (Dapr's
//! answers `null`).
//!
//! Tested against MariaDB 10.11 (`MECHA_TEST_MYSQL_URL`) by `tests/bindings_db.rs`.
//!
//! Metadata: `url` (required): a Go MySQL DSN (`user:pass@tcp(host:3306)/db`) or a `mysql://`
//! URL, parsed as `state.mysql`'s `connectionString`; the DSN's `timeout` (default 5s) bounds
//! connecting. `maxOpenConns` (default 10), `maxIdleConns` (validated; the pool closes idle
//! connections after `connMaxIdleTime` instead), `connMaxLifetime`, `connMaxIdleTime` (Go
//! durations or seconds), `pemPath` (the CA for `tls=custom`: not supported, this build has
//! no TLS client for MySQL). Mecha adds `timeoutInSeconds` (default 20, as `state.mysql`),
//! the bound on each operation. Sessions run in UTC with the server's default `sql_mode`
//! (`||` stays `OR`). Pooled connections are checked before use, so the binding recovers by
//! itself after a server restart.

mod codec;

use super::sql::request;
use super::sql::{self, Database, Outcome};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use async_trait::async_trait;
use mecha_core::bindings::{
    BindingComponent, BindingError, DIRECTION, InvokeRequest, InvokeResponse, OutputBinding, ROUTE,
};
use mecha_core::component::{ComponentError, ComponentInit};
use mecha_core::duration::parse_go_duration;
use sqlx::AssertSqlSafe;
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};

use crate::state::mysql::dsn;
use request::{EXEC, OPERATIONS, SqlRequest};

const URL: &str = "url";
const MAX_IDLE_CONNS: &str = "maxIdleConns";
const MAX_OPEN_CONNS: &str = "maxOpenConns";
const CONN_MAX_LIFETIME: &str = "connMaxLifetime";
const CONN_MAX_IDLE_TIME: &str = "connMaxIdleTime";
const PEM_PATH: &str = "pemPath";
const TIMEOUT_IN_SECONDS: &str = "timeoutInSeconds";
const KNOWN_KEYS: &[&str] = &[
    URL,
    MAX_IDLE_CONNS,
    MAX_OPEN_CONNS,
    CONN_MAX_LIFETIME,
    CONN_MAX_IDLE_TIME,
    PEM_PATH,
    TIMEOUT_IN_SECONDS,
    DIRECTION,
    ROUTE,
];
/// How long connecting may take when the DSN's `timeout` does not say.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);
/// Server error numbers that are the server's trouble, not the statement's: too many
/// connections, shutting down, lock wait timeout, deadlock, connection killed.
const BACKEND_ERRORS: &[u16] = &[1040, 1053, 1205, 1213, 1927];

/// The `bindings.mysql` component.
pub struct MySqlBinding {
    pool: MySqlPool,
    timeout: Duration,
    address: String,
    closed: AtomicBool,
}

/// The validated `spec.metadata` of a `bindings.mysql` component.
struct Metadata {
    /// `url`: the DSN, parsed.
    url: dsn::Target,
    /// `maxOpenConns`: the pool size; `0` or less means 10.
    max_open_conns: u32,
    /// `connMaxLifetime`: connections older than this are closed. Default: kept.
    conn_max_lifetime: Option<Duration>,
    /// `connMaxIdleTime`: idle connections older than this are closed. Default: kept.
    conn_max_idle_time: Option<Duration>,
    /// `timeoutInSeconds` (Mecha's): the bound on each operation.
    timeout: Duration,
}

// === impl Metadata ===

impl Metadata {
    fn parse(init: &ComponentInit) -> Result<Self, ComponentError> {
        let md = &init.metadata;
        md.warn_unknown(&init.name, KNOWN_KEYS);
        let text = |key: &str| md.get(key).map(str::trim).filter(|v| !v.is_empty());
        let raw = md.required(URL)?.trim();
        let mut url = dsn::parse(raw)
            .map_err(|reason| ComponentError::InvalidField { field: URL, reason })?;
        if let Some(db) = &url.database {
            url.options = url.options.clone().database(db);
        }
        url.options = url.options.clone().pipes_as_concat(false);
        if let Some(pem_path) = text(PEM_PATH) {
            url.options = url.options.clone().ssl_ca(pem_path);
            tracing::warn!(
                component = %init.name,
                pem_path,
                "pemPath is not supported: this build has no TLS client for MySQL"
            );
        }
        if let Some(v) = text(MAX_IDLE_CONNS) {
            integer(MAX_IDLE_CONNS, v)?;
        }
        let max_open_conns = match text(MAX_OPEN_CONNS) {
            None => 10,
            Some(v) => u32::try_from(integer(MAX_OPEN_CONNS, v)?)
                .ok()
                .filter(|n| *n > 0)
                .unwrap_or(10),
        };
        let timeout = match text(TIMEOUT_IN_SECONDS) {
            None => DEFAULT_TIMEOUT,
            Some(v) => duration(TIMEOUT_IN_SECONDS, v)?.unwrap_or(DEFAULT_TIMEOUT),
        };
        Ok(Self {
            url,
            max_open_conns,
            conn_max_lifetime: text(CONN_MAX_LIFETIME)
                .map(|v| duration(CONN_MAX_LIFETIME, v))
                .transpose()?
                .flatten(),
            conn_max_idle_time: text(CONN_MAX_IDLE_TIME)
                .map(|v| duration(CONN_MAX_IDLE_TIME, v))
                .transpose()?
                .flatten(),
            timeout,
        })
    }
}

fn integer(field: &'static str, v: &str) -> Result<i64, ComponentError> {
    v.parse().map_err(|_| ComponentError::InvalidField {
        field,
        reason: format!("'{v}' is not an integer"),
    })
}

/// A Go duration or a number of seconds; `None` when zero or negative.
fn duration(field: &'static str, v: &str) -> Result<Option<Duration>, ComponentError> {
    if let Ok(secs) = v.parse::<i64>() {
        return Ok(u64::try_from(secs)
            .ok()
            .filter(|s| *s > 0)
            .map(Duration::from_secs));
    }
    if v.starts_with('-') {
        return Ok(None);
    }
    parse_go_duration(v)
        .map(|d| Some(d).filter(|d| !d.is_zero()))
        .map_err(|e| ComponentError::InvalidField {
            field,
            reason: e.to_string(),
        })
}

// === impl MySqlBinding ===

impl MySqlBinding {
    /// Connects (checking that the server answers) and returns the output binding.
    pub async fn create(init: ComponentInit) -> Result<Arc<BindingComponent>, ComponentError> {
        let md = Metadata::parse(&init)?;
        let connect_timeout = md
            .url
            .connect_timeout
            .unwrap_or(CONNECT_TIMEOUT)
            .min(md.timeout);
        let pool = MySqlPoolOptions::new()
            .max_connections(md.max_open_conns)
            .acquire_timeout(connect_timeout)
            .test_before_acquire(true)
            .max_lifetime(md.conn_max_lifetime)
            .idle_timeout(md.conn_max_idle_time)
            .connect_with(md.url.options.clone())
            .await
            .map_err(|e| {
                ComponentError::Init(format!("unable to ping the DB at {}: {e}", md.url.address))
            })?;
        Ok(Arc::new(BindingComponent {
            input: None,
            output: Some(Arc::new(Self {
                pool,
                timeout: md.timeout,
                address: md.url.address,
                closed: AtomicBool::new(false),
            })),
        }))
    }

    /// Runs the statement within the operation timeout: rows for `query`, the affected row
    /// count for `exec`.
    async fn run_statement(&self, req: &SqlRequest) -> Result<Outcome, BindingError> {
        let work = async {
            let mut conn = self.pool.acquire().await.map_err(|e| match e {
                sqlx::Error::PoolTimedOut => BindingError::Backend(format!(
                    "mysql: cannot connect to {}: the connection was refused or timed out",
                    self.address
                )),
                e => self.error(e),
            })?;
            // Without arguments the text protocol runs it, as Go's driver does: statements
            // the server cannot prepare work too.
            if req.params.is_empty() {
                let sql = sqlx::raw_sql(AssertSqlSafe(req.sql.clone()));
                if req.operation == EXEC {
                    let done = sql.execute(&mut *conn).await.map_err(|e| self.error(e))?;
                    return Ok(Outcome::Affected(done.rows_affected()));
                }
                let rows = sql.fetch_all(&mut *conn).await.map_err(|e| self.error(e))?;
                return Ok(Outcome::Rows(
                    rows.iter().map(|r| codec::row_object(r, false)).collect(),
                ));
            }
            let mut query = sqlx::query(AssertSqlSafe(req.sql.clone()));
            for value in &req.params {
                query = codec::bind(query, value);
            }
            if req.operation == EXEC {
                let done = query.execute(&mut *conn).await.map_err(|e| self.error(e))?;
                return Ok(Outcome::Affected(done.rows_affected()));
            }
            let rows = query
                .fetch_all(&mut *conn)
                .await
                .map_err(|e| self.error(e))?;
            Ok(Outcome::Rows(
                rows.iter().map(|r| codec::row_object(r, true)).collect(),
            ))
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .unwrap_or_else(|_| {
                Err(BindingError::Backend(format!(
                    "mysql: no answer from {} within {:?}",
                    self.address, self.timeout
                )))
            })
    }

    /// A statement's failure: the statement's fault (a bad request with the server's
    /// message) or the server's (a backend error).
    fn error(&self, e: sqlx::Error) -> BindingError {
        match e {
            sqlx::Error::Database(db) => {
                let number = db
                    .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                    .map(|m| m.number());
                let code = db.code().unwrap_or_default().into_owned();
                let message = match number {
                    Some(n) => format!(
                        "error executing query: Error {n} ({code}): {}",
                        db.message()
                    ),
                    None => format!("error executing query: {} ({code})", db.message()),
                };
                let backend =
                    code.starts_with("08") || number.is_some_and(|n| BACKEND_ERRORS.contains(&n));
                if backend {
                    BindingError::Backend(format!("mysql at {}: {message}", self.address))
                } else {
                    BindingError::BadRequest(message)
                }
            }
            e => BindingError::Backend(format!("mysql at {}: {e}", self.address)),
        }
    }
}

impl Database for MySqlBinding {
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
impl OutputBinding for MySqlBinding {
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
