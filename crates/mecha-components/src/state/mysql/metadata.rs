//! The `state.mysql` component metadata.

use std::time::Duration;

use mecha_core::component::{ComponentError, ComponentInit};
use mecha_core::duration::parse_go_duration;

const CONNECTION_STRING: &str = "connectionString";
const SCHEMA_NAME: &str = "schemaName";
const TABLE_NAME: &str = "tableName";
const METADATA_TABLE_NAME: &str = "metadataTableName";
const TIMEOUT_IN_SECONDS: &str = "timeoutInSeconds";
const CLEANUP_INTERVAL: &str = "cleanupInterval";
const CLEANUP_INTERVAL_IN_SECONDS: &str = "cleanupIntervalInSeconds";
const MAX_IDLE_CONNS: &str = "maxIdleConns";
const MAX_OPEN_CONNS: &str = "maxOpenConns";
const CONN_MAX_LIFETIME: &str = "connMaxLifetime";
const CONN_MAX_IDLE_TIME: &str = "connMaxIdleTime";
const PEM_PATH: &str = "pemPath";

/// Every key this component reads; `actorStateStore` and `keyPrefix` are the runtime's.
const KNOWN_KEYS: &[&str] = &[
    CONNECTION_STRING,
    SCHEMA_NAME,
    TABLE_NAME,
    METADATA_TABLE_NAME,
    TIMEOUT_IN_SECONDS,
    CLEANUP_INTERVAL,
    CLEANUP_INTERVAL_IN_SECONDS,
    MAX_IDLE_CONNS,
    MAX_OPEN_CONNS,
    CONN_MAX_LIFETIME,
    CONN_MAX_IDLE_TIME,
    PEM_PATH,
    "actorStateStore",
    "keyPrefix",
];

/// The longest identifier MySQL accepts.
const MAX_IDENTIFIER_LEN: usize = 64;

/// The validated `spec.metadata` of a `state.mysql` component.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Metadata {
    /// `connectionString`: a Go MySQL DSN (`user:pass@tcp(host:3306)/db?parseTime=true`) or a
    /// `mysql://` URL. Required.
    pub(super) connection_string: String,
    /// `schemaName`: the database holding the table, created if missing. `None` when not set:
    /// the connection string's database, else `dapr_state_store`, is used.
    pub(super) schema_name: Option<String>,
    /// `tableName`: the table holding the values. Default `state`.
    pub(super) table_name: String,
    /// `metadataTableName`: validated only; Mecha keeps no metadata table. Default
    /// `dapr_metadata`.
    pub(super) metadata_table_name: String,
    /// `timeoutInSeconds` (seconds or a Go duration): the limit on each operation. Default 20s.
    pub(super) timeout: Duration,
    /// `cleanupInterval` (Go duration) or `cleanupIntervalInSeconds`: how often expired rows are
    /// deleted; `None` (`0` or negative) disables the clean-up. Default 1h.
    pub(super) cleanup_interval: Option<Duration>,
    /// `maxOpenConns`: the most connections the pool opens. Default 10.
    pub(super) max_open_conns: u32,
    /// `maxIdleConns`: validated only, the pool closes idle connections after
    /// `connMaxIdleTime` instead of capping their number.
    pub(super) max_idle_conns: Option<u32>,
    /// `connMaxLifetime` (Go duration): connections older than this are closed; `0` keeps
    /// them. Default 30m.
    pub(super) conn_max_lifetime: Option<Duration>,
    /// `connMaxIdleTime` (Go duration): idle connections older than this are closed; `0` keeps
    /// them. Default 10m.
    pub(super) conn_max_idle_time: Option<Duration>,
    /// `pemPath`: a CA file for TLS. Not supported: this build has no TLS client.
    pub(super) pem_path: Option<String>,
}

// === impl Metadata ===

impl Metadata {
    /// Reads and validates the metadata, warning about unknown keys.
    pub(super) fn parse(init: &ComponentInit) -> Result<Self, ComponentError> {
        let md = &init.metadata;
        md.warn_unknown(&init.name, KNOWN_KEYS);
        let text = |key: &str| md.get(key).map(str::trim).filter(|v| !v.is_empty());
        let connection_string = md.required(CONNECTION_STRING)?.trim().to_owned();
        let schema_name = text(SCHEMA_NAME)
            .map(|v| identifier(SCHEMA_NAME, v))
            .transpose()?;
        let table_name = identifier(TABLE_NAME, text(TABLE_NAME).unwrap_or("state"))?;
        let metadata_table_name = identifier(
            METADATA_TABLE_NAME,
            text(METADATA_TABLE_NAME).unwrap_or("dapr_metadata"),
        )?;
        let timeout = match text(TIMEOUT_IN_SECONDS) {
            None => Duration::from_secs(20),
            Some(v) => seconds_or_duration(TIMEOUT_IN_SECONDS, v)?
                .filter(|d| !d.is_zero())
                .unwrap_or(Duration::from_secs(20)),
        };
        let cleanup_interval = match (text(CLEANUP_INTERVAL), text(CLEANUP_INTERVAL_IN_SECONDS)) {
            (Some(v), _) => seconds_or_duration(CLEANUP_INTERVAL, v)?,
            (None, Some(v)) => seconds_or_duration(CLEANUP_INTERVAL_IN_SECONDS, v)?,
            (None, None) => Some(Duration::from_secs(3600)),
        }
        .filter(|d| !d.is_zero());
        let max_open_conns = match text(MAX_OPEN_CONNS) {
            None => 10,
            Some(v) => count(MAX_OPEN_CONNS, v)?.filter(|n| *n > 0).unwrap_or(10),
        };
        let max_idle_conns = text(MAX_IDLE_CONNS)
            .map(|v| count(MAX_IDLE_CONNS, v))
            .transpose()?
            .flatten();
        let keep = |key: &'static str, default: u64| match text(key) {
            None => Ok(Some(Duration::from_secs(default))),
            Some(v) => Ok(go_duration(key, v)?.filter(|d| !d.is_zero())),
        };
        Ok(Self {
            connection_string,
            schema_name,
            table_name,
            metadata_table_name,
            timeout,
            cleanup_interval,
            max_open_conns,
            max_idle_conns,
            conn_max_lifetime: keep(CONN_MAX_LIFETIME, 30 * 60)?,
            conn_max_idle_time: keep(CONN_MAX_IDLE_TIME, 10 * 60)?,
            pem_path: text(PEM_PATH).map(str::to_owned),
        })
    }
}

/// A table or schema name: ASCII letters, digits and `_`, as Dapr allows, so that it can be
/// quoted into SQL safely.
pub(super) fn identifier(field: &'static str, name: &str) -> Result<String, ComponentError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_IDENTIFIER_LEN
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(name.to_owned())
    } else {
        Err(ComponentError::InvalidField {
            field,
            reason: format!(
                "'{name}' must be 1 to {MAX_IDENTIFIER_LEN} letters, digits or underscores"
            ),
        })
    }
}

/// A whole number of seconds or a Go duration; `None` when zero or negative.
fn seconds_or_duration(
    field: &'static str,
    value: &str,
) -> Result<Option<Duration>, ComponentError> {
    match value.parse::<i64>() {
        Ok(secs) => Ok(u64::try_from(secs).ok().map(Duration::from_secs)),
        Err(_) => go_duration(field, value),
    }
}

/// A Go duration; `None` when negative.
fn go_duration(field: &'static str, value: &str) -> Result<Option<Duration>, ComponentError> {
    let invalid = |reason: String| ComponentError::InvalidField { field, reason };
    match value.strip_prefix('-') {
        Some(rest) => parse_go_duration(rest)
            .map(|_| None)
            .map_err(|e| invalid(e.to_string())),
        None => parse_go_duration(value)
            .map(Some)
            .map_err(|e| invalid(e.to_string())),
    }
}

/// A connection count; `None` when zero or negative (Go's "no limit").
fn count(field: &'static str, value: &str) -> Result<Option<u32>, ComponentError> {
    let n: i64 = value.parse().map_err(|_| ComponentError::InvalidField {
        field,
        reason: format!("'{value}' is not an integer"),
    })?;
    Ok(u32::try_from(n).ok().filter(|n| *n > 0))
}
