//! What the PostgreSQL components (`state.postgresql`, `lock.postgresql`,
//! `configuration.postgresql`) share: the connection metadata, the pool, table names and the
//! schema preparation.
//!
//! The lock and configuration stores include this file with `#[path]`, so that each component
//! feature still builds alone; it must therefore depend on nothing but `mecha-core` and `sqlx`.
//!
//! Connection metadata, as Dapr's PostgreSQL components read it:
//!
//! * `connectionString` (required): a `postgres://` / `postgresql://` URL or a libpq
//!   keyword/value string (`host=localhost user=postgres port=5432 dbname=test`). pgx's pool
//!   parameters `pool_max_conns` and `pool_max_conn_idle_time` are honoured, other `pool_*` and
//!   `connect_timeout` are ignored (the operation timeout bounds connecting too); unknown
//!   keywords become server run-time parameters, as pgx does. `.pgpass` is read for URLs only.
//! * `host`, `hostaddr`, `port`, `database`, `user`, `password`, `sslRootCert`: override the
//!   same parts of the connection string.
//! * `timeout` or the older `timeoutInSeconds`: the limit on each operation, including getting
//!   a connection (a Go duration or seconds; default 20s).
//! * `maxConns`: the pool size; `0` or less means the larger of 4 and the number of CPUs.
//! * `connectionMaxIdleTime` (alias `maxIdleTimeout`): how long an idle pooled connection is
//!   kept (a Go duration or seconds).
//! * `queryExecMode`: accepted and ignored; statements are always prepared and cached.
//!
//! `useAzureAD` and `useAWSIAM` are refused: Mecha supports password authentication only. TLS
//! (`sslmode=require` and stricter) needs one of sqlx's TLS features, which this build does
//! not enable; `disable`, `allow` and `prefer` connect without TLS.

#[path = "conninfo.rs"]
pub(crate) mod conninfo;

use std::time::Duration;

use mecha_core::Metadata;
use mecha_core::component::ComponentError;
use mecha_core::duration::parse_go_duration;
use sqlx::AssertSqlSafe;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use self::conninfo::{PoolParams, apply_keyword, apply_keywords, is_url, parse_url};

const CONNECTION_STRING: &str = "connectionString";
const TIMEOUT: &str = "timeout";
const TIMEOUT_IN_SECONDS: &str = "timeoutInSeconds";
const MAX_CONNS: &str = "maxConns";
const CONNECTION_MAX_IDLE_TIME: &str = "connectionMaxIdleTime";
const MAX_IDLE_TIMEOUT: &str = "maxIdleTimeout";
const UNSUPPORTED_AUTH: [&str; 2] = ["useAzureAD", "useAWSIAM"];
/// Dapr's individual connection fields, which override the connection string.
const OVERRIDES: [&str; 7] = [
    "host",
    "hostaddr",
    "port",
    "database",
    "user",
    "password",
    "sslRootCert",
];
/// The default operation timeout, as Dapr's.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest identifier PostgreSQL keeps (`NAMEDATALEN - 1`).
const MAX_IDENTIFIER: usize = 63;

/// Every connection key this module reads, for `warn_unknown`.
pub(crate) const CONNECTION_KEYS: &[&str] = &[
    CONNECTION_STRING,
    TIMEOUT,
    TIMEOUT_IN_SECONDS,
    MAX_CONNS,
    CONNECTION_MAX_IDLE_TIME,
    MAX_IDLE_TIMEOUT,
    "queryExecMode",
    "useAzureAD",
    "useAWSIAM",
    "host",
    "hostaddr",
    "port",
    "database",
    "user",
    "password",
    "sslRootCert",
];

/// How to reach the server, validated from the metadata.
#[derive(Clone, Debug)]
pub(crate) struct Connection {
    /// Options for every connection.
    pub(crate) options: PgConnectOptions,
    /// The limit on each operation.
    pub(crate) timeout: Duration,
    /// The pool size.
    pub(crate) max_conns: u32,
    /// How long idle connections are kept; `None` leaves sqlx's default.
    pub(crate) idle_timeout: Option<Duration>,
}

/// A validated table name, `name` or `schema.name`, folded to lower case as PostgreSQL folds
/// the unquoted names Dapr writes into its SQL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TableName {
    schema: Option<String>,
    name: String,
}

// === impl Connection ===

impl Connection {
    /// Reads the connection metadata.
    pub(crate) fn parse(md: &Metadata) -> Result<Self, ComponentError> {
        for key in UNSUPPORTED_AUTH {
            if md.bool(key, false)? {
                return Err(ComponentError::InvalidField {
                    field: key,
                    reason: "Mecha supports password authentication only".into(),
                });
            }
        }
        let raw = md.required(CONNECTION_STRING)?.trim();
        let invalid = |reason: String| ComponentError::InvalidField {
            field: CONNECTION_STRING,
            reason,
        };
        let (mut options, pool) = if is_url(raw) {
            parse_url(raw).map_err(invalid)?
        } else {
            let pairs = conninfo::parse_keyword_value(raw).map_err(invalid)?;
            apply_keywords(PgConnectOptions::new_without_pgpass(), &pairs).map_err(invalid)?
        };
        for field in OVERRIDES {
            if let Some(v) = md.get(field).map(str::trim).filter(|v| !v.is_empty()) {
                let key = match field {
                    "database" => "dbname",
                    "sslRootCert" => "sslrootcert",
                    other => other,
                };
                options = apply_keyword(options, key, v, &mut PoolParams::default())
                    .map_err(|reason| ComponentError::InvalidField { field, reason })?;
            }
        }
        let timeout = match (md.get(TIMEOUT), md.get(TIMEOUT_IN_SECONDS)) {
            (Some(v), _) if !v.trim().is_empty() => positive(TIMEOUT, v)?,
            (_, Some(v)) if !v.trim().is_empty() => positive(TIMEOUT_IN_SECONDS, v)?,
            _ => DEFAULT_TIMEOUT,
        };
        let max_conns = match md.get(MAX_CONNS).map(str::trim) {
            None | Some("") => pool.max_conns,
            Some(v) => {
                let n: i64 = v.parse().map_err(|_| ComponentError::InvalidField {
                    field: MAX_CONNS,
                    reason: format!("'{v}' is not an integer"),
                })?;
                u32::try_from(n).ok().filter(|n| *n > 0)
            }
        };
        let idle_timeout = match (md.get(CONNECTION_MAX_IDLE_TIME), md.get(MAX_IDLE_TIMEOUT)) {
            (Some(v), _) if !v.trim().is_empty() => {
                Some(seconds_or_duration(CONNECTION_MAX_IDLE_TIME, v)?)
            }
            (_, Some(v)) if !v.trim().is_empty() => Some(seconds_or_duration(MAX_IDLE_TIMEOUT, v)?),
            _ => pool.idle_timeout,
        };
        Ok(Self {
            options,
            timeout,
            max_conns: max_conns.unwrap_or_else(default_max_conns),
            idle_timeout: idle_timeout.filter(|d| !d.is_zero()),
        })
    }

    /// Pool options: `maxConns` connections, each checked before use so that connections
    /// broken by a server restart are replaced, and waits bounded by the operation timeout.
    pub(crate) fn pool_options(&self) -> PgPoolOptions {
        let options = PgPoolOptions::new()
            .max_connections(self.max_conns)
            .acquire_timeout(self.timeout)
            .test_before_acquire(true);
        match self.idle_timeout {
            Some(idle) => options.idle_timeout(idle),
            None => options,
        }
    }

    /// Opens the pool and checks that the server answers.
    pub(crate) async fn connect(&self) -> Result<PgPool, ComponentError> {
        self.pool_options()
            .connect_with(self.options.clone())
            .await
            .map_err(|e| ComponentError::Init(describe(&e, self.timeout)))
    }

    /// Runs `ddl` in one transaction, serialised by an advisory lock on `lock` so that
    /// sidecars starting together do not race to create the same objects.
    pub(crate) async fn prepare(
        &self,
        pool: &PgPool,
        lock: &str,
        ddl: &[String],
    ) -> Result<(), ComponentError> {
        let run = async {
            let mut tx = pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                .bind(lock)
                .execute(&mut *tx)
                .await?;
            for statement in ddl {
                sqlx::query(AssertSqlSafe(statement.as_str()))
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        };
        match tokio::time::timeout(self.timeout, run).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ComponentError::Init(format!(
                "preparing the database: {}",
                describe(&e, self.timeout)
            ))),
            Err(_) => Err(ComponentError::Init(format!(
                "preparing the database timed out after {:?}",
                self.timeout
            ))),
        }
    }
}

/// A readable message for a failed operation.
pub(crate) fn describe(e: &sqlx::Error, timeout: Duration) -> String {
    match e {
        sqlx::Error::PoolTimedOut => {
            format!("postgresql: no connection to the server within {timeout:?}")
        }
        e => format!("postgresql: {e}"),
    }
}

// === impl TableName ===

impl TableName {
    /// Validates `value` (`name` or `schema.name`; letters, digits and `_`, not starting with
    /// a digit, at most 63 characters each).
    pub(crate) fn parse(value: &str, field: &'static str) -> Result<Self, ComponentError> {
        let value = value.trim();
        let invalid = |reason: &str| ComponentError::InvalidField {
            field,
            reason: format!("'{value}' {reason}"),
        };
        let parts: Vec<&str> = value.split('.').collect();
        if parts.len() > 2 {
            return Err(invalid(
                "may have at most one '.', between schema and table",
            ));
        }
        for part in &parts {
            let mut chars = part.chars();
            let first_ok = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
            if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(invalid(
                    "must be letters, digits and '_', not starting with a digit",
                ));
            }
            if part.len() > MAX_IDENTIFIER {
                return Err(invalid("is longer than 63 characters"));
            }
        }
        let lower: Vec<String> = parts.iter().map(|p| p.to_ascii_lowercase()).collect();
        Ok(match lower.as_slice() {
            [schema, name] => Self {
                schema: Some(schema.clone()),
                name: name.clone(),
            },
            _ => Self {
                schema: None,
                name: lower.concat(),
            },
        })
    }

    /// The name quoted for SQL: `"name"` or `"schema"."name"`.
    pub(crate) fn quoted(&self) -> String {
        self.qualify(&self.name)
    }

    /// `object` (a validated identifier) quoted in the table's schema.
    pub(crate) fn qualify(&self, object: &str) -> String {
        match &self.schema {
            Some(schema) => format!("\"{schema}\".\"{object}\""),
            None => format!("\"{object}\""),
        }
    }

    /// The name with `_` for the dot, for deriving other identifiers.
    pub(crate) fn flat(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{schema}_{}", self.name),
            None => self.name.clone(),
        }
    }
}

fn default_max_conns() -> u32 {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    u32::try_from(cpus).unwrap_or(u32::MAX).max(4)
}

/// A number of seconds or a Go duration.
pub(crate) fn seconds_or_duration(
    field: &'static str,
    value: &str,
) -> Result<Duration, ComponentError> {
    let value = value.trim();
    match value.parse::<u64>() {
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(_) => parse_go_duration(value).map_err(|e| ComponentError::InvalidField {
            field,
            reason: e.to_string(),
        }),
    }
}

/// A positive number of seconds or Go duration.
fn positive(field: &'static str, value: &str) -> Result<Duration, ComponentError> {
    let d = seconds_or_duration(field, value)?;
    if d.is_zero() {
        return Err(ComponentError::InvalidField {
            field,
            reason: "must be positive".into(),
        });
    }
    Ok(d)
}
