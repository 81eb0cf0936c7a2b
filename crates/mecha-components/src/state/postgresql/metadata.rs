//! The `state.postgresql` component metadata.

use std::time::Duration;

use mecha_core::component::{ComponentError, ComponentInit};

use super::connection::{CONNECTION_KEYS, Connection, TableName, seconds_or_duration};

const TABLE_NAME: &str = "tableName";
const METADATA_TABLE_NAME: &str = "metadataTableName";
const CLEANUP_INTERVAL: &str = "cleanupInterval";
const CLEANUP_INTERVAL_IN_SECONDS: &str = "cleanupIntervalInSeconds";
/// Keys of this component besides the connection's; `actorStateStore` and `keyPrefix` belong
/// to the runtime.
const STATE_KEYS: &[&str] = &[
    TABLE_NAME,
    METADATA_TABLE_NAME,
    CLEANUP_INTERVAL,
    CLEANUP_INTERVAL_IN_SECONDS,
    "actorStateStore",
    "keyPrefix",
];
const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(3600);

/// The validated `spec.metadata` of a `state.postgresql` component.
#[derive(Clone, Debug)]
pub(super) struct Metadata {
    /// `connectionString` and the other connection fields (see `connection`).
    pub(super) connection: Connection,
    /// `tableName`: the table holding the values, `name` or `schema.name`. Default `state`.
    /// (`metadataTableName`, default `dapr_metadata`, is validated but unused.)
    pub(super) table: TableName,
    /// `cleanupInterval` (Go duration or seconds) or the older `cleanupIntervalInSeconds`: how
    /// often expired rows are deleted; `None` (`0` or negative) disables it. Default 1h.
    pub(super) cleanup_interval: Option<Duration>,
}

// === impl Metadata ===

impl Metadata {
    /// Reads and validates the metadata, warning about unknown keys.
    pub(super) fn parse(init: &ComponentInit) -> Result<Self, ComponentError> {
        let md = &init.metadata;
        let known: Vec<&str> = CONNECTION_KEYS.iter().chain(STATE_KEYS).copied().collect();
        md.warn_unknown(&init.name, &known);
        let connection = Connection::parse(md)?;
        let table = table_name(md.get(TABLE_NAME), TABLE_NAME, "state")?;
        // `metadataTableName` is validated only: Mecha keeps no migration metadata.
        table_name(
            md.get(METADATA_TABLE_NAME),
            METADATA_TABLE_NAME,
            "dapr_metadata",
        )?;
        let cleanup_interval = match (
            md.get(CLEANUP_INTERVAL),
            md.get(CLEANUP_INTERVAL_IN_SECONDS),
        ) {
            (Some(v), _) if !v.trim().is_empty() => interval(CLEANUP_INTERVAL, v)?,
            (_, Some(v)) if !v.trim().is_empty() => interval(CLEANUP_INTERVAL_IN_SECONDS, v)?,
            _ => Some(DEFAULT_CLEANUP_INTERVAL),
        };
        Ok(Self {
            connection,
            table,
            cleanup_interval,
        })
    }
}

fn table_name(
    value: Option<&str>,
    field: &'static str,
    default: &str,
) -> Result<TableName, ComponentError> {
    let name = value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .unwrap_or(default);
    TableName::parse(name, field)
}

/// An interval that may be switched off: seconds or a Go duration; zero or negative gives
/// `None`.
fn interval(field: &'static str, value: &str) -> Result<Option<Duration>, ComponentError> {
    let value = value.trim();
    match value.strip_prefix('-') {
        Some(rest) => seconds_or_duration(field, rest).map(|_| None),
        None => Ok(Some(seconds_or_duration(field, value)?).filter(|d| !d.is_zero())),
    }
}
