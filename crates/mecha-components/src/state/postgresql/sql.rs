//! The SQL of the `state.postgresql` store, built once per table.
//!
//! Writes bind `$1` key, `$2` the value as JSON text (NULL when it is not JSON), `$3` the
//! value as bytes (NULL when it is JSON), `$4` the TTL in seconds (NULL for none) and, when
//! checking an ETag, `$5` the ETag. Reads return the stored bytes as `bytea`, the ETag and the
//! expiry in milliseconds since the Unix epoch.

use std::sync::Arc;

use super::connection::TableName;

/// The value column: the JSON as is, or the base64 of other bytes as a JSON string (as Dapr's
/// store writes it; PostgreSQL's base64 breaks lines, Go's does not).
const VALUE: &str = "COALESCE($2::jsonb, to_jsonb(translate(encode($3, 'base64'), E'\\n', '')))";
/// `rawvalue`: the JSON text as written, when `jsonb` would not give it back byte for byte.
const RAW: &str = "NULLIF($2, $2::jsonb::text)";
const EXPIRY: &str = "now() + make_interval(secs => $4)";
/// Rows that have not expired.
pub(super) const LIVE: &str = "(expiredate IS NULL OR expiredate > now())";
/// The stored bytes. `rawvalue` is used only while it still equals `value`: a writer that
/// knows nothing of it (Dapr) leaves it stale.
pub(super) const DATA: &str = "CASE WHEN isbinary THEN decode(value #>> '{}', 'base64') \
     WHEN rawvalue IS NOT NULL AND rawvalue::jsonb = value THEN convert_to(rawvalue, 'UTF8') \
     ELSE convert_to(value::text, 'UTF8') END";
/// The expiry in milliseconds since the Unix epoch.
const EXPIRES: &str = "(extract(epoch FROM expiredate) * 1000)::bigint";

/// The statements of one table, built once from its validated name.
pub(super) struct Statements {
    /// The quoted table name.
    pub(super) table: String,
    pub(super) get: Arc<str>,
    pub(super) bulk_get: Arc<str>,
    pub(super) upsert: Arc<str>,
    pub(super) first_write: Arc<str>,
    pub(super) update_if_etag: Arc<str>,
    pub(super) delete: Arc<str>,
    pub(super) delete_if_etag: Arc<str>,
    pub(super) delete_expired: Arc<str>,
}

// === impl Statements ===

impl Statements {
    /// Builds the statements for `table`.
    pub(super) fn new(table: &TableName) -> Self {
        let t = table.quoted();
        let upsert = format!(
            "INSERT INTO {t} AS s (key, value, isbinary, rawvalue, insertdate, expiredate) \
             VALUES ($1, {VALUE}, $3 IS NOT NULL, {RAW}, now(), {EXPIRY}) \
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, \
             isbinary = EXCLUDED.isbinary, rawvalue = EXCLUDED.rawvalue, updatedate = now(), \
             expiredate = EXCLUDED.expiredate"
        );
        Self {
            get: format!("SELECT {DATA}, xmin::text, {EXPIRES} FROM {t} WHERE key = $1 AND {LIVE}")
                .into(),
            bulk_get: format!(
                "SELECT key, {DATA}, xmin::text, {EXPIRES} FROM {t} \
                 WHERE key = ANY($1) AND {LIVE}"
            )
            .into(),
            // First write: only replace a row that has expired.
            first_write: format!(
                "{upsert} WHERE s.expiredate IS NOT NULL AND s.expiredate <= now()"
            )
            .into(),
            upsert: upsert.into(),
            update_if_etag: format!(
                "UPDATE {t} SET value = {VALUE}, isbinary = $3 IS NOT NULL, rawvalue = {RAW}, \
                 updatedate = now(), expiredate = {EXPIRY} \
                 WHERE key = $1 AND xmin = $5::text::xid AND {LIVE}"
            )
            .into(),
            delete: format!("DELETE FROM {t} WHERE key = $1").into(),
            delete_if_etag: format!(
                "DELETE FROM {t} WHERE key = $1 AND xmin = $2::text::xid AND {LIVE}"
            )
            .into(),
            delete_expired: format!(
                "DELETE FROM {t} WHERE expiredate IS NOT NULL AND expiredate <= now()"
            )
            .into(),
            table: t,
        }
    }

    /// Creates the table as Dapr does, and adds the columns an older Dapr table lacks
    /// (`expiredate`) and Mecha's `rawvalue`. A column is added only when missing, so that
    /// start-up takes no exclusive lock on a table in use.
    pub(super) fn schema(&self) -> [String; 2] {
        let t = &self.table;
        let add_missing = |column: &str, definition: &str| {
            format!(
                "IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = '{t}'::regclass \
                 AND attname = '{column}' AND NOT attisdropped) THEN \
                 ALTER TABLE {t} ADD COLUMN {column} {definition}; END IF;"
            )
        };
        [
            format!(
                "CREATE TABLE IF NOT EXISTS {t} (key text NOT NULL PRIMARY KEY, \
                 value jsonb NOT NULL, isbinary boolean NOT NULL, \
                 insertdate timestamp with time zone NOT NULL DEFAULT now(), \
                 updatedate timestamp with time zone NULL, \
                 expiredate timestamp with time zone NULL, rawvalue text NULL)"
            ),
            format!(
                "DO $$ BEGIN {} {} END $$",
                add_missing("expiredate", "timestamp with time zone NULL"),
                add_missing("rawvalue", "text NULL"),
            ),
        ]
    }
}
