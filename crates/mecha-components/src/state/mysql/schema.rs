//! Start-up of the `state.mysql` store: learning the server's flavour and creating the schema
//! and table when they are missing.
//!
//! Everything here runs as plain text statements and asks the server by trying rather than
//! through `information_schema`: MariaDB 10.11 was seen to crash (signal 11, freeing the
//! temporary table of a prepared `information_schema.columns` query) while other clients
//! created and dropped tables.

use sqlx::mysql::MySqlConnection;
use sqlx::{AssertSqlSafe, Connection, Row};

use super::dsn::Target;
use super::ops::error_number;
use super::sql::Statements;

/// Key collations that compare bytes and keep trailing spaces significant, best first
/// (MariaDB's, then MySQL 8's); `utf8mb4_bin` otherwise.
const KEY_COLLATIONS: &[&str] = &["utf8mb4_nopad_bin", "utf8mb4_0900_bin"];
/// `ER_DBACCESS_DENIED_ERROR` and `ER_SPECIFIC_ACCESS_DENIED_ERROR`: no right to create the
/// schema, which may well exist already.
const ACCESS_DENIED: [u16; 2] = [1044, 1227];
/// `ER_UNKNOWN_COLLATION`.
const UNKNOWN_COLLATION: u16 = 1273;
/// `ER_BAD_FIELD_ERROR`: the column does not exist.
const BAD_FIELD: u16 = 1054;

/// Connects once, learns the server's flavour, and creates the schema and table if missing.
/// Returns whether the server keeps JSON text verbatim (MariaDB).
pub(super) async fn prepare(target: &Target, sql: &Statements) -> Result<bool, sqlx::Error> {
    let mut conn = MySqlConnection::connect_with(&target.options).await?;
    let version: String = sqlx::raw_sql("SELECT VERSION()")
        .fetch_one(&mut conn)
        .await?
        .try_get(0)?;
    match run(&mut conn, sql.create_schema()).await {
        Err(e) if error_number(&e).is_some_and(|n| ACCESS_DENIED.contains(&n)) => {
            tracing::debug!(
                schema = sql.schema(),
                "No right to create the MySQL schema; using it as it is"
            );
        }
        other => other?,
    }
    let mut collation = "utf8mb4_bin";
    for candidate in KEY_COLLATIONS {
        match run(&mut conn, format!("SELECT _utf8mb4'a' COLLATE {candidate}")).await {
            Ok(()) => {
                collation = candidate;
                break;
            }
            Err(e) if error_number(&e) == Some(UNKNOWN_COLLATION) => {}
            Err(e) => return Err(e),
        }
    }
    run(&mut conn, sql.create_table(collation)).await?;
    let probe = format!(
        "SELECT expiredate FROM `{}`.`{}` LIMIT 0",
        sql.schema(),
        sql.table()
    );
    match run(&mut conn, probe).await {
        Err(e) if error_number(&e) == Some(BAD_FIELD) => {
            // A table Dapr made before 1.11.
            tracing::info!(table = sql.table(), "Adding the expiredate column");
            for ddl in sql.add_expiry() {
                run(&mut conn, ddl).await?;
            }
        }
        other => other?,
    }
    conn.close().await?;
    Ok(version.to_ascii_lowercase().contains("mariadb"))
}

/// Runs one statement built from validated names, as text.
async fn run(conn: &mut MySqlConnection, statement: String) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(AssertSqlSafe(statement))
        .execute(&mut *conn)
        .await
        .map(drop)
}
