//! The SQL of the `state.sqlite` store, built once per table.
//!
//! Parameters are numbered (`?1`) so that one value, such as the current time, can be used
//! twice; the table name is validated by the metadata and quoted.

use std::sync::Arc;

/// The statements of one table, built once from its validated name.
pub(super) struct Statements {
    table: String,
    pub(super) get: Arc<str>,
    pub(super) upsert: Arc<str>,
    pub(super) first_write: Arc<str>,
    pub(super) update_if_etag: Arc<str>,
    pub(super) delete: Arc<str>,
    pub(super) delete_if_etag: Arc<str>,
    pub(super) query: Arc<str>,
    pub(super) delete_expired: Arc<str>,
}

// === impl Statements ===

impl Statements {
    /// Builds the statements for `table`, which must already be validated.
    pub(super) fn new(table: &str) -> Self {
        let t = format!("\"{table}\"");
        let live = "(expiration_time IS NULL OR expiration_time > ?2)";
        let upsert = format!(
            "INSERT INTO {t} (key, value, etag, expiration_time, update_time) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (key) DO UPDATE SET \
             value = excluded.value, etag = excluded.etag, \
             expiration_time = excluded.expiration_time, update_time = excluded.update_time"
        );
        Self {
            get: format!("SELECT value, etag, expiration_time FROM {t} WHERE key = ?1 AND {live}")
                .into(),
            // First write: only replace a row that has expired.
            first_write: format!(
                "{upsert} WHERE {t}.expiration_time IS NOT NULL AND {t}.expiration_time <= ?5"
            )
            .into(),
            upsert: upsert.into(),
            update_if_etag: format!(
                "UPDATE {t} SET value = ?2, etag = ?3, expiration_time = ?4, update_time = ?5 \
                 WHERE key = ?1 AND etag = ?6 \
                 AND (expiration_time IS NULL OR expiration_time > ?5)"
            )
            .into(),
            delete: format!("DELETE FROM {t} WHERE key = ?1").into(),
            delete_if_etag: format!(
                "DELETE FROM {t} WHERE key = ?1 AND etag = ?2 \
                 AND (expiration_time IS NULL OR expiration_time > ?3)"
            )
            .into(),
            // `substr` rather than LIKE, whose wildcards and case folding would need escaping.
            query: format!(
                "SELECT key, value, etag FROM {t} \
                 WHERE substr(key, 1, ?1) = ?2 AND (expiration_time IS NULL OR expiration_time > ?3)"
            )
            .into(),
            delete_expired: format!(
                "DELETE FROM {t} WHERE expiration_time IS NOT NULL AND expiration_time <= ?1"
            )
            .into(),
            table: t,
        }
    }

    /// Creates the table and an index for the clean-up.
    pub(super) fn schema(&self) -> [String; 2] {
        let t = &self.table;
        let index = format!("\"{}_expiration_time\"", t.trim_matches('"'));
        [
            format!(
                "CREATE TABLE IF NOT EXISTS {t} (key TEXT NOT NULL PRIMARY KEY, \
                 value BLOB NOT NULL, etag TEXT NOT NULL, expiration_time INTEGER, \
                 update_time INTEGER NOT NULL)"
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS {index} ON {t} (expiration_time) \
                 WHERE expiration_time IS NOT NULL"
            ),
        ]
    }

    /// Reads `key, value, etag, expiration_time` of `n` keys, bound as `?2`… after the time.
    pub(super) fn bulk_get(&self, n: usize) -> String {
        let t = &self.table;
        let keys: Vec<String> = (2..n + 2).map(|i| format!("?{i}")).collect();
        let keys = keys.join(", ");
        format!(
            "SELECT key, value, etag, expiration_time FROM {t} WHERE key IN ({keys}) \
             AND (expiration_time IS NULL OR expiration_time > ?1)"
        )
    }
}
