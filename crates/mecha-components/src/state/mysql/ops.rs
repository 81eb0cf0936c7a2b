//! Writes, deletes and row decoding of the `state.mysql` store, on one connection or
//! transaction.

use mecha_core::state::{
    Concurrency, DeleteRequest, GetResponse, SetRequest, StateError, expiry_metadata,
};
use sqlx::mysql::{MySqlConnection, MySqlDatabaseError, MySqlRow};
use sqlx::{AssertSqlSafe, Row};

use super::codec::{self, Encoded};
use super::sql::Statements;

/// MariaDB's `ER_CONSTRAINT_FAILED`: the `json_valid` check of the `value` column refused.
const ER_CONSTRAINT_FAILED: u16 = 4025;
/// MySQL's `ER_INVALID_JSON_TEXT`.
const ER_INVALID_JSON_TEXT: u16 = 3140;
/// The longest TTL passed to the server (100 years, in microseconds): longer ones are capped
/// at `TIMESTAMP`'s maximum anyway, and this keeps the arithmetic far from overflowing.
const MAX_TTL_MICROS: i64 = 100 * 365 * 86_400 * 1_000_000;

/// Writes one key on `conn`, checking the ETag or first-write condition in the statement that
/// writes.
pub(super) async fn set_on(
    sql: &Statements,
    conn: &mut MySqlConnection,
    req: &SetRequest,
    json_verbatim: bool,
) -> Result<(), StateError> {
    let value = Encoded::new(&req.value, json_verbatim);
    let written = match write(sql, conn, req, &value).await {
        // JSON that serde accepts but the server does not (MariaDB nests 32 levels at most):
        // store it as bytes instead. Only the failed statement was undone.
        Err(e) if !value.binary && refused_json(&e) => {
            write(sql, conn, req, &Encoded::binary(&req.value)).await
        }
        other => other,
    };
    match written.map_err(backend)? {
        true => Ok(()),
        false => Err(StateError::EtagMismatch),
    }
}

/// Runs the write for `req`; `false` when the ETag or first-write condition refused it.
async fn write(
    sql: &Statements,
    conn: &mut MySqlConnection,
    req: &SetRequest,
    value: &Encoded,
) -> Result<bool, sqlx::Error> {
    let etag = uuid::Uuid::new_v4().to_string();
    let ttl = req
        .ttl
        .map(|t| i64::try_from(t.as_micros()).map_or(MAX_TTL_MICROS, |m| m.min(MAX_TTL_MICROS)));
    match (&req.etag, req.concurrency) {
        (Some(old), _) => {
            let done = sqlx::query(AssertSqlSafe(sql.update_if_etag.clone()))
                .bind(value.text.as_str())
                .bind(value.binary)
                .bind(etag)
                .bind(ttl)
                .bind(req.key.as_str())
                .bind(old.as_str())
                .execute(&mut *conn)
                .await?;
            // The session reports found rows (CLIENT_FOUND_ROWS), and the ETag changes anyway.
            Ok(done.rows_affected() > 0)
        }
        (None, Concurrency::FirstWrite) => {
            // An expired row counts as absent: remove it, then insert, which fails when a live
            // row exists, whoever wrote it in the meantime.
            sqlx::query(AssertSqlSafe(sql.delete_if_expired.clone()))
                .bind(req.key.as_str())
                .execute(&mut *conn)
                .await?;
            let inserted = sqlx::query(AssertSqlSafe(sql.insert.clone()))
                .bind(req.key.as_str())
                .bind(value.text.as_str())
                .bind(value.binary)
                .bind(etag)
                .bind(ttl)
                .execute(&mut *conn)
                .await;
            match inserted {
                Ok(_) => Ok(true),
                Err(e)
                    if e.as_database_error()
                        .is_some_and(|d| d.is_unique_violation()) =>
                {
                    Ok(false)
                }
                Err(e) => Err(e),
            }
        }
        (None, _) => {
            sqlx::query(AssertSqlSafe(sql.upsert.clone()))
                .bind(req.key.as_str())
                .bind(value.text.as_str())
                .bind(value.binary)
                .bind(etag)
                .bind(ttl)
                .execute(&mut *conn)
                .await?;
            Ok(true)
        }
    }
}

/// Deletes one key on `conn`, checking the ETag in the same statement.
pub(super) async fn delete_on(
    sql: &Statements,
    conn: &mut MySqlConnection,
    req: &DeleteRequest,
) -> Result<(), StateError> {
    let Some(etag) = &req.etag else {
        sqlx::query(AssertSqlSafe(sql.delete.clone()))
            .bind(req.key.as_str())
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
        return Ok(());
    };
    let done = sqlx::query(AssertSqlSafe(sql.delete_if_etag.clone()))
        .bind(req.key.as_str())
        .bind(etag.as_str())
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    if done.rows_affected() == 0 {
        return Err(StateError::EtagMismatch);
    }
    Ok(())
}

/// Reads `value, isbinary, eTag, expiry` starting at column `first`.
pub(super) fn decode_row(row: &MySqlRow, first: usize) -> Result<GetResponse, StateError> {
    // MySQL reports the column as JSON, MariaDB as text: take the bytes either way.
    let value = row
        .try_get_unchecked::<Vec<u8>, _>(first)
        .map_err(backend)?;
    let binary: bool = row.try_get(first + 1).map_err(backend)?;
    let etag: String = row.try_get(first + 2).map_err(backend)?;
    let expires_at: Option<i64> = row.try_get(first + 3).map_err(backend)?;
    Ok(GetResponse {
        data: codec::decode(value, binary)
            .map_err(|e| StateError::Backend(format!("mysql: {e}")))?,
        etag: Some(etag),
        metadata: expiry_metadata(expires_at),
    })
}

/// A backend failure, with the server's message.
pub(super) fn backend(e: sqlx::Error) -> StateError {
    StateError::Backend(format!("mysql: {e}"))
}

/// Whether the server refused the `value` column's text as JSON.
fn refused_json(e: &sqlx::Error) -> bool {
    matches!(
        error_number(e),
        Some(ER_CONSTRAINT_FAILED | ER_INVALID_JSON_TEXT)
    )
}

/// The server's error number, when the server refused a statement.
pub(super) fn error_number(e: &sqlx::Error) -> Option<u16> {
    e.as_database_error()
        .and_then(|d| d.try_downcast_ref::<MySqlDatabaseError>())
        .map(MySqlDatabaseError::number)
}
