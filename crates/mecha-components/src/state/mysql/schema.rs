//! Start-up of the `state.mysql` store: learning the server's flavour and creating the schema
//! and table when they are missing.

use sqlx::mysql::MySqlConnection;
use sqlx::{AssertSqlSafe, Connection};

use super::dsn::Target;
use super::sql::{self, Statements};

/// Key collations that compare bytes and keep trailing spaces significant, best first
/// (MariaDB's, then MySQL 8's); `utf8mb4_bin` otherwise.
const KEY_COLLATIONS: &[&str] = &["utf8mb4_nopad_bin", "utf8mb4_0900_bin"];

/// Connects once, learns the server's flavour, and creates the schema and table if missing.
/// Returns whether the server keeps JSON text verbatim (MariaDB).
pub(super) async fn prepare(target: &Target, sql: &Statements) -> Result<bool, sqlx::Error> {
    let mut conn = MySqlConnection::connect_with(&target.options).await?;
    let version: String = sqlx::query_scalar("SELECT VERSION()")
        .fetch_one(&mut conn)
        .await?;
    let count = |q: &'static str, binds: &[&str]| {
        let mut query = sqlx::query_scalar::<_, i64>(q);
        for b in binds {
            query = query.bind(b.to_string());
        }
        query
    };
    let schema_exists = count(sql::SCHEMA_EXISTS, &[sql.schema()])
        .fetch_one(&mut conn)
        .await?;
    if schema_exists == 0 {
        tracing::info!(schema = sql.schema(), "Creating the MySQL schema");
        sqlx::query(AssertSqlSafe(sql.create_schema()))
            .execute(&mut conn)
            .await?;
    }
    let mut collation = "utf8mb4_bin";
    for candidate in KEY_COLLATIONS {
        if count(sql::COLLATION_EXISTS, &[candidate])
            .fetch_one(&mut conn)
            .await?
            > 0
        {
            collation = candidate;
            break;
        }
    }
    sqlx::query(AssertSqlSafe(sql.create_table(collation)))
        .execute(&mut conn)
        .await?;
    let has_expiry = count(
        sql::COLUMN_EXISTS,
        &[sql.schema(), sql.table(), "expiredate"],
    )
    .fetch_one(&mut conn)
    .await?;
    if has_expiry == 0 {
        tracing::info!(table = sql.table(), "Adding the expiredate column");
        for ddl in sql.add_expiry() {
            sqlx::query(AssertSqlSafe(ddl)).execute(&mut conn).await?;
        }
    }
    conn.close().await?;
    Ok(version.to_ascii_lowercase().contains("mariadb"))
}
