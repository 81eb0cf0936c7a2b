//! `bindings.postgresql` on the shared server.

use std::sync::Arc;

use mecha_components::bindings::postgresql::PostgresBinding;
use mecha_core::bindings::{BindingError, OutputBinding};
use serde_json::json;

use crate::{call, check_sql_metadata, fresh, init, json, output};

pub(crate) fn url() -> String {
    std::env::var("MECHA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

async fn binding(md: &[(&str, &str)]) -> Arc<dyn OutputBinding> {
    output(PostgresBinding::create(init(md)).await.unwrap())
}

async fn exec(b: &dyn OutputBinding, sql: &str, params: &str) -> u64 {
    let r = call(b, "exec", b"", &[("sql", sql), ("params", params)])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    check_sql_metadata(&r, "exec", sql);
    assert!(r.data.is_none());
    r.metadata["rows-affected"].parse().unwrap()
}

async fn query(b: &dyn OutputBinding, sql: &str, params: &str) -> serde_json::Value {
    let r = call(b, "query", b"", &[("sql", sql), ("params", params)])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    check_sql_metadata(&r, "query", sql);
    assert!(!r.metadata.contains_key("rows-affected"));
    json(&r)
}

#[tokio::test]
async fn exec_and_query_with_parameters() {
    let b = binding(&[("connectionString", &url())]).await;
    let t = fresh("mecha_binding");
    exec(
        &*b,
        &format!("CREATE TABLE {t} (id int PRIMARY KEY, name text, price numeric(10,2))"),
        "",
    )
    .await;
    let insert = format!("INSERT INTO {t} (id, name, price) VALUES ($1, $2, $3)");
    assert_eq!(exec(&*b, &insert, r#"[1, "alice", 100.32]"#).await, 1);
    assert_eq!(exec(&*b, &insert, r#"[2, "bob", "15.4"]"#).await, 1);
    // What would be SQL if it were interpolated is stored literally.
    let evil = format!("'; DROP TABLE {t}; --");
    let params = serde_json::to_string(&json!([3, evil, null])).unwrap();
    assert_eq!(exec(&*b, &insert, &params).await, 1);
    let rows = query(
        &*b,
        &format!("SELECT id, name, price FROM {t} ORDER BY id"),
        "",
    )
    .await;
    assert_eq!(
        rows,
        json!([[1, "alice", 100.32], [2, "bob", 15.4], [3, evil, null]])
    );
    let one = query(&*b, &format!("SELECT name FROM {t} WHERE id = $1"), "[3]").await;
    assert_eq!(one, json!([[evil]]));
    let none = query(&*b, &format!("SELECT name FROM {t} WHERE id = $1"), "[99]").await;
    assert_eq!(none, json!([]));
    let updated = exec(
        &*b,
        &format!("UPDATE {t} SET price = price + 1 WHERE id < $1"),
        "[10]",
    )
    .await;
    assert_eq!(updated, 3);
    // Several statements at once, when there are no parameters.
    let both = format!("DELETE FROM {t} WHERE id = 1; DELETE FROM {t} WHERE id = 2");
    exec(&*b, &both, "").await;
    assert_eq!(
        query(&*b, &format!("SELECT count(*) FROM {t}"), "").await,
        json!([[1]])
    );
    exec(&*b, &format!("DROP TABLE {t}"), "").await;
}

#[tokio::test]
async fn column_types_map_to_json() {
    let b = binding(&[("connectionString", &url())]).await;
    let sql = "SELECT true, 7::int2, 8::int4, 9::int8, 1.5::float4, 2.25::float8, \
               'NaN'::float8, 123.450::numeric, 12345678901234567890.12::numeric, 'txt'::text, \
               'v'::varchar, '{\"a\":[1,2]}'::json, '{\"b\":null}'::jsonb, '\\x00ff'::bytea, \
               'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid, \
               '2024-01-02 03:04:05.5+00'::timestamptz, '2024-01-02 03:04:05'::timestamp, \
               '2024-01-02'::date, '13:14:15'::time, ARRAY[1,2,NULL]::int4[], \
               ARRAY['x','y']::text[], NULL::text";
    let rows = query(&*b, sql, "").await;
    assert_eq!(
        rows,
        json!([[
            true, 7, 8, 9, 1.5, 2.25, "NaN", 123.45, "12345678901234567890.12", "txt", "v",
            {"a": [1, 2]}, {"b": null}, "AP8=", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "2024-01-02T03:04:05.5Z", "2024-01-02T03:04:05Z", "2024-01-02T00:00:00Z",
            "13:14:15", [1, 2, null], ["x", "y"], null
        ]])
    );
}

#[tokio::test]
async fn parameters_take_the_placeholder_types() {
    let b = binding(&[("connectionString", &url())]).await;
    let t = fresh("mecha_binding");
    exec(
        &*b,
        &format!(
            "CREATE TABLE {t} (id bigint, ok boolean, doc jsonb, at timestamptz, day date, \
             tags text[], u uuid, raw bytea, f real)"
        ),
        "",
    )
    .await;
    let insert = format!("INSERT INTO {t} VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)");
    let params = json!([
        5_000_000_000_i64, true, {"k": "v", "n": [1, 2]}, "2024-05-06T07:08:09.123+02:00",
        "2024-05-06", ["a", "b"], "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "bytes", 0.5
    ]);
    assert_eq!(exec(&*b, &insert, &params.to_string()).await, 1);
    let rows = query(&*b, &format!("SELECT * FROM {t}"), "").await;
    assert_eq!(
        rows,
        json!([[
            5_000_000_000_i64, true, {"k": "v", "n": [1, 2]}, "2024-05-06T05:08:09.123Z",
            "2024-05-06T00:00:00Z", ["a", "b"], "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "Ynl0ZXM=", 0.5
        ]])
    );
    // Any type works when the SQL casts the placeholder from text.
    let cast = query(
        &*b,
        "SELECT $1::text::inet = '10.0.0.1'::inet",
        r#"["10.0.0.1"]"#,
    )
    .await;
    assert_eq!(cast, json!([[true]]));
    exec(&*b, &format!("DROP TABLE {t}"), "").await;
}

#[tokio::test]
async fn bad_requests_carry_the_server_message() {
    let b = binding(&[("connectionString", &url())]).await;
    let bad = |r: Result<_, BindingError>| match r {
        Err(BindingError::BadRequest(m)) => m,
        other => panic!("want a bad request, got {other:?}"),
    };
    let m = bad(call(&*b, "query", b"", &[("sql", "SELEC 1")]).await);
    assert!(m.contains("syntax error") && m.contains("42601"), "{m}");
    let m = bad(call(
        &*b,
        "exec",
        b"",
        &[("sql", "SELECT * FROM mecha_no_such_table")],
    )
    .await);
    assert!(m.contains("does not exist"), "{m}");
    let m = bad(call(&*b, "exec", b"", &[]).await);
    assert!(m.contains("sql"), "{m}");
    let m = bad(call(&*b, "query", b"", &[("sql", "SELECT 1"), ("params", "{")]).await);
    assert!(m.contains("params"), "{m}");
    let m = bad(call(
        &*b,
        "query",
        b"",
        &[("sql", "SELECT $1::int"), ("params", "[]")],
    )
    .await);
    assert!(m.contains("placeholders"), "{m}");
    let m = bad(call(
        &*b,
        "query",
        b"",
        &[("sql", "SELECT $1::int"), ("params", r#"["x"]"#)],
    )
    .await);
    assert!(m.contains("not an integer"), "{m}");
    match call(&*b, "create", b"", &[("sql", "SELECT 1")]).await {
        Err(BindingError::UnsupportedOperation { supported, .. }) => {
            assert_eq!(supported, ["exec", "query", "close"]);
        }
        other => panic!("{other:?}"),
    }
    // The connection is still fine after the errors.
    assert_eq!(query(&*b, "SELECT 1", "").await, json!([[1]]));
}

#[tokio::test]
async fn older_url_key_and_keyword_value_strings() {
    let b = binding(&[("url", &url())]).await;
    assert_eq!(query(&*b, "SELECT 2", "").await, json!([[2]]));
    let kv = binding(&[(
        "connectionString",
        "host=127.0.0.1 port=5432 user=postgres dbname=test",
    )])
    .await;
    assert_eq!(
        query(&*kv, "SELECT current_database()", "").await,
        json!([["test"]])
    );
    assert!(PostgresBinding::create(init(&[])).await.is_err());
}

#[tokio::test]
async fn close_ends_the_binding() {
    let b = binding(&[("connectionString", &url())]).await;
    assert!(call(&*b, "close", b"", &[]).await.unwrap().data.is_none());
    let err = call(&*b, "query", b"", &[("sql", "SELECT 1")])
        .await
        .unwrap_err();
    assert!(
        matches!(err, BindingError::Backend(ref m) if m.contains("closed")),
        "{err:?}"
    );
    // Closing twice is fine.
    call(&*b, "close", b"", &[]).await.unwrap();
}
