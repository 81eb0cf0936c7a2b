//! The same state operations done directly with the client libraries the sidecar's stores use
//! (`redis`, `sqlx`), on the same keys and layout, so the sidecar's cost can be read as the
//! difference.

use std::sync::Arc;

use crate::load::{Call, Op, VALUE};

/// The key prefix the sidecar (app id `bench`) stores under.
const PREFIX: &str = "bench||";

/// Redis: the `state.redis` layout, a hash with `data` and `version`.
pub(crate) async fn redis(url: &str, op: Op) -> anyhow::Result<Call> {
    let client = redis::Client::open(format!("redis://{url}"))?;
    let conn = client.get_multiplexed_async_connection().await?;
    // An upsert as the store does it: write the data and bump the version atomically.
    let save = Arc::new(redis::Script::new(
        "redis.call('HSET', KEYS[1], 'data', ARGV[1]); return redis.call('HINCRBY', KEYS[1], 'version', 1)",
    ));
    Ok(Arc::new(move |worker| {
        let (mut conn, save) = (conn.clone(), save.clone());
        Box::pin(async move {
            match op {
                Op::Get => redis::cmd("HMGET")
                    .arg(format!("{PREFIX}k"))
                    .arg("data")
                    .arg("version")
                    .query_async::<(Option<Vec<u8>>, Option<String>)>(&mut conn)
                    .await
                    .is_ok_and(|(d, _)| d.is_some()),
                Op::Save => save
                    .key(format!("{PREFIX}w{worker}"))
                    .arg(VALUE)
                    .invoke_async::<i64>(&mut conn)
                    .await
                    .is_ok(),
            }
        })
    }))
}

/// PostgreSQL: the `state.postgresql` table (`key`, `value` jsonb, `isbinary`, dates), ETag
/// from `xmin`.
pub(crate) async fn postgres(
    url: &str,
    table: &str,
    op: Op,
    connections: u32,
) -> anyhow::Result<Call> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(connections)
        .connect(url)
        .await?;
    let get = Arc::new(format!(
        "SELECT value, xmin::text FROM {table} WHERE key = $1 AND (expiredate IS NULL OR expiredate > now())"
    ));
    let save = Arc::new(format!(
        "INSERT INTO {table} (key, value, isbinary, updatedate) VALUES ($1, $2::jsonb, false, now()) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, isbinary = false, updatedate = now(), expiredate = NULL"
    ));
    Ok(Arc::new(move |worker| {
        let (pool, get, save) = (pool.clone(), get.clone(), save.clone());
        Box::pin(async move {
            match op {
                Op::Get => sqlx::query(sqlx::AssertSqlSafe(get.as_str()))
                    .bind(format!("{PREFIX}k"))
                    .fetch_optional(&pool)
                    .await
                    .is_ok_and(|r| r.is_some()),
                Op::Save => sqlx::query(sqlx::AssertSqlSafe(save.as_str()))
                    .bind(format!("{PREFIX}w{worker}"))
                    .bind(VALUE)
                    .execute(&pool)
                    .await
                    .is_ok(),
            }
        })
    }))
}

/// Redis `GET key`, as `bindings.redis` does for `get`.
pub(crate) async fn redis_get(url: &str, key: &str) -> anyhow::Result<Call> {
    let client = redis::Client::open(format!("redis://{url}"))?;
    let conn = client.get_multiplexed_async_connection().await?;
    let key = Arc::new(key.to_owned());
    Ok(Arc::new(move |_| {
        let (mut conn, key) = (conn.clone(), key.clone());
        Box::pin(async move {
            redis::cmd("GET")
                .arg(key.as_str())
                .query_async::<Option<Vec<u8>>>(&mut conn)
                .await
                .is_ok_and(|v| v.is_some())
        })
    }))
}

/// PostgreSQL `SELECT $1::int` with one bound parameter, as `bindings.postgresql` runs `query`.
pub(crate) async fn postgres_select(url: &str, connections: u32) -> anyhow::Result<Call> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(connections)
        .connect(url)
        .await?;
    Ok(Arc::new(move |_| {
        let pool = pool.clone();
        Box::pin(async move {
            sqlx::query("SELECT $1::int")
                .bind(1i32)
                .fetch_all(&pool)
                .await
                .is_ok_and(|r| r.len() == 1)
        })
    }))
}
