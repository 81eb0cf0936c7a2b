//! The SQL of the `state.mysql` store, built once per table.
//!
//! Schema and table names are validated by the metadata and quoted with backticks; every value
//! is a bound parameter. Expiry uses the server's clock (`NOW(3)`), so that sidecars on several
//! hosts agree on it.

use std::sync::Arc;

/// A value is live while it has no expiry or its expiry is in the future.
const LIVE: &str = "(expiredate IS NULL OR expiredate > NOW(3))";
/// The expiry of a write from its TTL in microseconds (`NULL` for none), capped at the
/// largest `TIMESTAMP` MySQL can hold.
const EXPIRY: &str = "LEAST(TIMESTAMPADD(MICROSECOND, ?, NOW(3)), FROM_UNIXTIME(2147483647))";
/// The expiry in milliseconds since the Unix epoch, `NULL` for none.
const EXPIRY_MILLIS: &str = "CAST(UNIX_TIMESTAMP(expiredate) * 1000 AS SIGNED)";

/// The statements of one table, built once from its validated schema and name.
pub(super) struct Statements {
    schema: String,
    table: String,
    /// `SELECT value, isbinary, eTag, expiry WHERE id = ?`.
    pub(super) get: Arc<str>,
    /// Binds id, value, isbinary, eTag, TTL.
    pub(super) upsert: Arc<str>,
    /// Binds id, value, isbinary, eTag, TTL; fails on a duplicate key.
    pub(super) insert: Arc<str>,
    /// Binds id: deletes the row if it has expired, before a first write.
    pub(super) delete_if_expired: Arc<str>,
    /// Binds value, isbinary, new eTag, TTL, id, old eTag.
    pub(super) update_if_etag: Arc<str>,
    /// Binds id.
    pub(super) delete: Arc<str>,
    /// Binds id, eTag.
    pub(super) delete_if_etag: Arc<str>,
    /// Binds a `LIKE` pattern escaped with `!`.
    pub(super) query: Arc<str>,
    pub(super) delete_expired: Arc<str>,
}

// === impl Statements ===

impl Statements {
    /// Builds the statements for `schema`.`table`, both already validated.
    pub(super) fn new(schema: &str, table: &str) -> Self {
        let t = format!("`{schema}`.`{table}`");
        let columns = "(id, value, isbinary, eTag, expiredate)";
        let insert = format!("INSERT INTO {t} {columns} VALUES (?, ?, ?, ?, {EXPIRY})");
        Self {
            get: format!(
                "SELECT value, isbinary, eTag, {EXPIRY_MILLIS} FROM {t} WHERE id = ? AND {LIVE}"
            )
            .into(),
            upsert: format!(
                "{insert} ON DUPLICATE KEY UPDATE value = VALUES(value), \
                 isbinary = VALUES(isbinary), eTag = VALUES(eTag), \
                 expiredate = VALUES(expiredate)"
            )
            .into(),
            insert: insert.into(),
            delete_if_expired: format!(
                "DELETE FROM {t} WHERE id = ? AND expiredate IS NOT NULL AND expiredate <= NOW(3)"
            )
            .into(),
            update_if_etag: format!(
                "UPDATE {t} SET value = ?, isbinary = ?, eTag = ?, expiredate = {EXPIRY} \
                 WHERE id = ? AND eTag = ? AND {LIVE}"
            )
            .into(),
            delete: format!("DELETE FROM {t} WHERE id = ?").into(),
            delete_if_etag: format!("DELETE FROM {t} WHERE id = ? AND eTag = ? AND {LIVE}").into(),
            query: format!(
                "SELECT id, value, isbinary, eTag FROM {t} WHERE id LIKE ? ESCAPE '!' AND {LIVE}"
            )
            .into(),
            delete_expired: format!(
                "DELETE FROM {t} WHERE expiredate IS NOT NULL AND expiredate <= NOW(3)"
            )
            .into(),
            schema: schema.to_owned(),
            table: table.to_owned(),
        }
    }

    /// Creates the schema if missing.
    pub(super) fn create_schema(&self) -> String {
        format!("CREATE DATABASE IF NOT EXISTS `{}`", self.schema)
    }

    /// Creates the table, laid out as Dapr's. Keys compare byte for byte: `collation` is a
    /// binary one that also keeps trailing spaces significant where the server has one.
    pub(super) fn create_table(&self, collation: &str) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS `{}`.`{}` (\
             id VARCHAR(255) CHARACTER SET utf8mb4 COLLATE {collation} NOT NULL PRIMARY KEY, \
             value JSON NOT NULL, \
             isbinary BOOLEAN NOT NULL, \
             insertDate TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, \
             updateDate TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP, \
             eTag VARCHAR(36) NOT NULL, \
             expiredate TIMESTAMP(3) NULL, \
             INDEX expiredate_idx (expiredate))",
            self.schema, self.table
        )
    }

    /// Adds the `expiredate` column to a table made before Dapr 1.11.
    pub(super) fn add_expiry(&self) -> [String; 2] {
        let t = format!("`{}`.`{}`", self.schema, self.table);
        [
            format!("ALTER TABLE {t} ADD COLUMN expiredate TIMESTAMP(3) NULL"),
            format!("CREATE INDEX expiredate_idx ON {t} (expiredate)"),
        ]
    }

    /// The schema name.
    pub(super) fn schema(&self) -> &str {
        &self.schema
    }

    /// The table name.
    pub(super) fn table(&self) -> &str {
        &self.table
    }

    /// Reads `id, value, isbinary, eTag, expiry` of `n` keys.
    pub(super) fn bulk_get(&self, n: usize) -> String {
        let keys = vec!["?"; n].join(", ");
        format!(
            "SELECT id, value, isbinary, eTag, {EXPIRY_MILLIS} FROM `{}`.`{}` \
             WHERE id IN ({keys}) AND {LIVE}",
            self.schema, self.table
        )
    }
}

/// A `LIKE` pattern matching the keys that start with `prefix`, escaped with `!`.
pub(super) fn prefix_pattern(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len() + 2);
    for c in prefix.chars() {
        if matches!(c, '!' | '%' | '_') {
            pattern.push('!');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}
