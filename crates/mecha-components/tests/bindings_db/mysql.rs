//! `bindings.mysql` on the shared MariaDB.

use std::sync::Arc;

use mecha_components::bindings::mysql::MySqlBinding;
use mecha_core::bindings::{BindingError, OutputBinding};
use serde_json::json;

use crate::{call, check_sql_metadata, fresh, init, json, output};

fn url() -> String {
    std::env::var("MECHA_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

async fn binding() -> Arc<dyn OutputBinding> {
    output(
        MySqlBinding::create(init(&[("url", &url())]))
            .await
            .unwrap(),
    )
}

async fn exec(b: &dyn OutputBinding, sql: &str, params: &str) -> u64 {
    let r = call(b, "exec", b"", &[("sql", sql), ("params", params)])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    check_sql_metadata(&r, "exec", sql);
    r.metadata["rows-affected"].parse().unwrap()
}

async fn query(b: &dyn OutputBinding, sql: &str, params: &str) -> serde_json::Value {
    let r = call(b, "query", b"", &[("sql", sql), ("params", params)])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    check_sql_metadata(&r, "query", sql);
    json(&r)
}

#[tokio::test]
async fn exec_and_query_with_parameters() {
    let b = binding().await;
    let t = fresh("mecha_binding");
    exec(
        &*b,
        &format!(
            "CREATE TABLE {t} (id INT PRIMARY KEY, name VARCHAR(200), price DECIMAL(10,2), \
             created DATETIME(3), flag BOOLEAN, big BIGINT UNSIGNED, ratio DOUBLE, \
             raw BLOB, doc JSON, day DATE, span TIME)"
        ),
        "",
    )
    .await;
    let insert = format!(
        "INSERT INTO {t} (id, name, price, created, flag, big, ratio, raw, doc, day, span) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    );
    let params = json!([
        1, "alice", 100.32, "2024-01-02 03:04:05.678", true, 18_000_000_000_000_000_000_u64,
        0.25, "bytes", {"a": [1, 2]}, "2024-01-02", "-26:01:02"
    ]);
    assert_eq!(exec(&*b, &insert, &params.to_string()).await, 1);
    // What would be SQL if it were interpolated is stored literally.
    let evil = format!("'; DROP TABLE {t}; --");
    let params = json!([
        2, evil, null, null, null, null, null, null, null, null, null
    ]);
    assert_eq!(exec(&*b, &insert, &params.to_string()).await, 1);

    let expected = json!([
        {
            "id": 1, "name": "alice", "price": 100.32, "created": "2024-01-02T03:04:05.678Z",
            "flag": 1, "big": 18_000_000_000_000_000_000_u64, "ratio": 0.25, "raw": "Ynl0ZXM=",
            "doc": "{\"a\":[1,2]}", "day": "2024-01-02T00:00:00Z", "span": "-26:01:02"
        },
        // NULL columns are left out, as Dapr's binding does.
        {"id": 2, "name": evil}
    ]);
    let all = format!("SELECT * FROM {t} ORDER BY id");
    // Prepared (with parameters) and text protocol (without) give the same JSON.
    assert_eq!(query(&*b, &all, "").await, expected);
    let prepared = format!("SELECT * FROM {t} WHERE id > ? ORDER BY id");
    assert_eq!(query(&*b, &prepared, "[0]").await, expected);
    let one = query(
        &*b,
        &format!("SELECT name FROM {t} WHERE name = ?"),
        &json!([evil]).to_string(),
    )
    .await;
    assert_eq!(one, json!([{"name": evil}]));
    assert_eq!(
        query(&*b, &format!("SELECT id FROM {t} WHERE id = ?"), "[9]").await,
        json!([])
    );
    assert_eq!(
        exec(
            &*b,
            &format!("UPDATE {t} SET price = ? WHERE id < ?"),
            r#"["1.5", 10]"#
        )
        .await,
        2
    );
    assert_eq!(exec(&*b, &format!("DELETE FROM {t}"), "").await, 2);
    exec(&*b, &format!("DROP TABLE {t}"), "").await;
}

#[tokio::test]
async fn bad_requests_carry_the_server_message() {
    let b = binding().await;
    let bad = |r: Result<_, BindingError>| match r {
        Err(BindingError::BadRequest(m)) => m,
        other => panic!("want a bad request, got {other:?}"),
    };
    let m = bad(call(&*b, "query", b"", &[("sql", "SELEC 1")]).await);
    assert!(m.contains("1064") && m.contains("SQL syntax"), "{m}");
    let m = bad(call(
        &*b,
        "exec",
        b"",
        &[
            ("sql", "SELECT * FROM mecha_no_such_table WHERE 1 = ?"),
            ("params", "[1]"),
        ],
    )
    .await);
    assert!(m.contains("1146") && m.contains("doesn't exist"), "{m}");
    let m = bad(call(&*b, "query", b"", &[]).await);
    assert!(m.contains("sql"), "{m}");
    let m = bad(call(&*b, "query", b"", &[("sql", "SELECT 1"), ("params", "1")]).await);
    assert!(m.contains("params"), "{m}");
    match call(&*b, "delete", b"", &[("sql", "SELECT 1")]).await {
        Err(BindingError::UnsupportedOperation { supported, .. }) => {
            assert_eq!(supported, ["exec", "query", "close"]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(query(&*b, "SELECT 1 AS one", "").await, json!([{"one": 1}]));
}

#[tokio::test]
async fn go_dsn_and_close() {
    let host = url()
        .trim_start_matches("mysql://")
        .split_once('@')
        .map(|(_, rest)| rest.split('/').next().unwrap_or_default().to_owned())
        .unwrap_or_else(|| "127.0.0.1:3306".into());
    let dsn = format!("root@tcp({host})/test?parseTime=true");
    let b = output(
        MySqlBinding::create(init(&[
            ("url", &dsn),
            ("maxOpenConns", "2"),
            ("connMaxLifetime", "1m"),
        ]))
        .await
        .unwrap(),
    );
    assert_eq!(
        query(&*b, "SELECT DATABASE() AS db", "").await,
        json!([{"db": "test"}])
    );
    call(&*b, "close", b"", &[]).await.unwrap();
    let err = call(&*b, "query", b"", &[("sql", "SELECT 1")])
        .await
        .unwrap_err();
    assert!(
        matches!(err, BindingError::Backend(ref m) if m.contains("closed")),
        "{err:?}"
    );
    assert!(MySqlBinding::create(init(&[])).await.is_err());
}
