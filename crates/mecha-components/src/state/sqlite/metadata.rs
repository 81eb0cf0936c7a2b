//! The `state.sqlite` component metadata, and the connection string it turns into.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use mecha_core::component::{ComponentError, ComponentInit};
use mecha_core::duration::parse_go_duration;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};

const CONNECTION_STRING: &str = "connectionString";
const TABLE_NAME: &str = "tableName";
const METADATA_TABLE_NAME: &str = "metadataTableName";
const TIMEOUT: &str = "timeout";
const TIMEOUT_IN_SECONDS: &str = "timeoutInSeconds";
const BUSY_TIMEOUT: &str = "busyTimeout";
const CLEANUP_INTERVAL: &str = "cleanupInterval";
const DISABLE_WAL: &str = "disableWAL";

/// Every key this component reads; `actorStateStore` and `keyPrefix` are the runtime's.
const KNOWN_KEYS: &[&str] = &[
    CONNECTION_STRING,
    TABLE_NAME,
    METADATA_TABLE_NAME,
    TIMEOUT,
    TIMEOUT_IN_SECONDS,
    BUSY_TIMEOUT,
    CLEANUP_INTERVAL,
    DISABLE_WAL,
    "actorStateStore",
    "keyPrefix",
];

/// The validated `spec.metadata` of a `state.sqlite` component.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Metadata {
    /// `connectionString`: a path (`state.db`), a `file:` URI or `:memory:`. Required.
    pub(super) connection_string: String,
    /// `tableName`: the table holding the values (letters, digits, `_`). Default `state`.
    pub(super) table_name: String,
    /// `metadataTableName`: validated only; Mecha keeps no migration metadata. Default `metadata`.
    pub(super) metadata_table_name: String,
    /// `timeout` (Go duration or seconds) or the older `timeoutInSeconds`: the limit on each
    /// operation. Default 20s.
    pub(super) timeout: Duration,
    /// `busyTimeout`: how long a statement waits for another writer's lock. Default 2s.
    pub(super) busy_timeout: Duration,
    /// `cleanupInterval`: how often expired rows are deleted; `None` (`0` or negative)
    /// disables the clean-up. Default 1h.
    pub(super) cleanup_interval: Option<Duration>,
    /// `disableWAL`: keep the rollback journal instead of write-ahead logging. Default false.
    pub(super) disable_wal: bool,
}

/// Where and how to open the database, derived from the connection string.
#[derive(Clone, Debug)]
pub(super) struct Target {
    /// Options for every pooled connection.
    pub(super) options: SqliteConnectOptions,
    /// The database lives in this process only; the pool keeps exactly one connection.
    pub(super) in_memory: bool,
    /// The file to create the parent directory of, when it may be created.
    pub(super) create_file: Option<PathBuf>,
    /// The database was opened read-only (`mode=ro` or `immutable=1`).
    pub(super) read_only: bool,
    /// The journal mode (`WAL`, `DELETE`) to set once at start-up: it is stored in the file.
    pub(super) journal_mode: Option<&'static str>,
}

// === impl Metadata ===

impl Metadata {
    /// Reads and validates the metadata, warning about unknown keys.
    pub(super) fn parse(init: &ComponentInit) -> Result<Self, ComponentError> {
        Self::parse_with_table(init, "state")
    }

    /// Like [`Metadata::parse`], with another default `tableName`.
    pub(super) fn parse_with_table(
        init: &ComponentInit,
        default_table: &str,
    ) -> Result<Self, ComponentError> {
        let md = &init.metadata;
        md.warn_unknown(&init.name, KNOWN_KEYS);
        let connection_string = md.required(CONNECTION_STRING)?.trim().to_owned();
        let table_name = table(md.get(TABLE_NAME), TABLE_NAME, default_table)?;
        let metadata_table_name =
            table(md.get(METADATA_TABLE_NAME), METADATA_TABLE_NAME, "metadata")?;
        let timeout = match (md.get(TIMEOUT), md.get(TIMEOUT_IN_SECONDS)) {
            (Some(v), _) if !v.trim().is_empty() => timeout(TIMEOUT, v)?,
            (_, Some(v)) if !v.trim().is_empty() => timeout(TIMEOUT_IN_SECONDS, v)?,
            _ => Duration::from_secs(20),
        };
        let busy_timeout = match md.get(BUSY_TIMEOUT).map(str::trim) {
            None | Some("") => Duration::from_secs(2),
            Some(v) => duration(BUSY_TIMEOUT, v)?,
        };
        let cleanup_interval = match md.get(CLEANUP_INTERVAL).map(str::trim) {
            None | Some("") => Some(Duration::from_secs(3600)),
            Some(v) => match v.strip_prefix('-') {
                Some(rest) => duration(CLEANUP_INTERVAL, rest).map(|_| None)?,
                None => Some(duration(CLEANUP_INTERVAL, v)?).filter(|d| !d.is_zero()),
            },
        };
        let disable_wal = md.bool(DISABLE_WAL, false)?;
        Ok(Self {
            connection_string,
            table_name,
            metadata_table_name,
            timeout,
            busy_timeout,
            cleanup_interval,
            disable_wal,
        })
    }

    /// Turns the connection string into connection options.
    ///
    /// Besides a plain path, Dapr's `file:` URIs are accepted: `mode`, `cache`, `immutable` and
    /// `vfs` are SQLite's own; `_pragma=name(value)` sets a pragma on every connection (a
    /// `busy_timeout` pragma wins over `busyTimeout`; `journal_mode` is refused in favour of
    /// `disableWAL`, as Dapr does); `_txlock` is ignored because writes always take the write
    /// lock first. Other parameters are logged and ignored.
    pub(super) fn target(&self) -> Result<Target, ComponentError> {
        let invalid = |reason: String| ComponentError::InvalidField {
            field: CONNECTION_STRING,
            reason,
        };
        let (db, params) = match self.connection_string.split_once('?') {
            Some((db, params)) => (db, params),
            None => (self.connection_string.as_str(), ""),
        };
        let path = match strip_prefix_ci(db, "file:") {
            Some(rest) => uri_path(rest).map_err(invalid)?,
            None => db.to_owned(),
        };
        let mut in_memory = path == ":memory:";
        let mut options = SqliteConnectOptions::new();
        let (mut read_only, mut create, mut shared_cache, mut immutable) =
            (false, true, None, false);
        let mut busy_timeout = self.busy_timeout;
        for (key, value) in params.split('&').filter(|p| !p.is_empty()).map(split_param) {
            let value = percent_decode(value).map_err(invalid)?;
            match key {
                "mode" => match value.as_str() {
                    "ro" => (read_only, create) = (true, false),
                    "rw" => create = false,
                    "rwc" => create = true,
                    "memory" => in_memory = true,
                    other => return Err(invalid(format!("unknown mode '{other}'"))),
                },
                "cache" => shared_cache = Some(value == "shared"),
                "immutable" => {
                    immutable = mecha_core::metadata::parse_bool(&value).unwrap_or(false)
                }
                "vfs" => options = options.vfs(value),
                "_pragma" => match pragma(&value).map_err(invalid)? {
                    ("busy_timeout", ms) => {
                        let ms = ms
                            .parse()
                            .map_err(|_| invalid(format!("bad busy_timeout '{ms}'")))?;
                        busy_timeout = Duration::from_millis(ms);
                    }
                    ("journal_mode", _) => {
                        return Err(invalid(
                            "set disableWAL instead of the journal_mode pragma".into(),
                        ));
                    }
                    (name, v) => options = options.pragma(name.to_owned(), v.to_owned()),
                },
                "_txlock" => {}
                other => tracing::warn!(
                    parameter = other,
                    "Ignoring unknown SQLite connection parameter"
                ),
            }
        }
        read_only |= immutable;
        if in_memory {
            // A name unique to this store, so that two in-memory stores never share data.
            options = SqliteConnectOptions::from_str("sqlite::memory:")
                .map_err(|e| invalid(e.to_string()))?
                .journal_mode(SqliteJournalMode::Memory);
        } else {
            options = options
                .filename(&path)
                .create_if_missing(create)
                .read_only(read_only);
        }
        if let Some(shared) = shared_cache.filter(|_| !in_memory) {
            options = options.shared_cache(shared);
        }
        let journal_mode = match (in_memory, read_only, self.disable_wal) {
            (true, _, _) | (_, true, _) => None,
            (false, false, true) => Some("DELETE"),
            (false, false, false) => Some("WAL"),
        };
        if journal_mode == Some("WAL") {
            // In WAL mode NORMAL loses no committed write when the process dies, only on power
            // loss, and spares an fsync per commit.
            options = options.synchronous(sqlx::sqlite::SqliteSynchronous::Normal);
        }
        Ok(Target {
            options: options.busy_timeout(busy_timeout).immutable(immutable),
            in_memory,
            create_file: (!in_memory && create).then(|| PathBuf::from(path)),
            read_only,
            journal_mode,
        })
    }
}

/// A table name, `default` when absent; letters, digits and `_` only, so it can be quoted
/// into SQL safely.
fn table(
    value: Option<&str>,
    field: &'static str,
    default: &str,
) -> Result<String, ComponentError> {
    let name = value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .unwrap_or(default);
    if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(name.to_owned())
    } else {
        Err(ComponentError::InvalidField {
            field,
            reason: format!("'{name}' may only contain letters, digits and underscores"),
        })
    }
}

/// A positive timeout: a number of seconds or a Go duration.
fn timeout(field: &'static str, value: &str) -> Result<Duration, ComponentError> {
    let value = value.trim();
    let d = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => duration(field, value)?,
    };
    if d.is_zero() {
        return Err(ComponentError::InvalidField {
            field,
            reason: "must be positive".into(),
        });
    }
    Ok(d)
}

fn duration(field: &'static str, value: &str) -> Result<Duration, ComponentError> {
    parse_go_duration(value).map_err(|e| ComponentError::InvalidField {
        field,
        reason: e.to_string(),
    })
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// The path of a `file:` URI without its scheme: `data.db`, `///abs/x.db`, `//localhost/x.db`.
fn uri_path(rest: &str) -> Result<String, String> {
    let path = match rest.strip_prefix("//") {
        Some(authority_and_path) => {
            let slash = authority_and_path
                .find('/')
                .unwrap_or(authority_and_path.len());
            let authority = &authority_and_path[..slash];
            if !authority.is_empty() && authority != "localhost" {
                return Err(format!("unsupported authority '{authority}' in file: URI"));
            }
            &authority_and_path[slash..]
        }
        None => rest,
    };
    percent_decode(path)
}

fn split_param(p: &str) -> (&str, &str) {
    p.split_once('=').unwrap_or((p, ""))
}

/// `name(value)` (Dapr's form) or `name=value`, with a conservative character set since
/// sqlx writes both into a `PRAGMA` statement.
fn pragma(p: &str) -> Result<(&str, &str), String> {
    let (name, value) = match p.strip_suffix(')').and_then(|p| p.split_once('(')) {
        Some((name, value)) => (name.trim(), value.trim()),
        None => p
            .split_once('=')
            .map(|(n, v)| (n.trim(), v.trim()))
            .unwrap_or((p.trim(), "")),
    };
    let name_ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let value_ok = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if name_ok && value_ok {
        Ok((name, value))
    } else {
        Err(format!("unsupported _pragma '{p}': expected name(value)"))
    }
}

/// Decodes the `%XX` escapes of a URI component.
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s
                    .get(i + 1..i + 3)
                    .ok_or_else(|| format!("bad escape in '{s}'"))?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad escape in '{s}'"))?);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("'{s}' does not decode to UTF-8"))
}
