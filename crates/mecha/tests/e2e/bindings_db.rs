//! `bindings.redis`, `bindings.postgresql` and `bindings.mysql` through the real binary over
//! HTTP: each binding's operations, the response metadata headers, bad SQL (500
//! `ERR_INVOKE_OUTPUT_BINDING` with the server's message) and unknown operations (400 listing
//! the supported ones). Servers: `MECHA_TEST_REDIS_URL`, `MECHA_TEST_POSTGRES_URL`,
//! `MECHA_TEST_MYSQL_URL` (localhost by default); fresh keys and tables per test.

use std::sync::atomic::{AtomicU32, Ordering};

use mecha_test_support::{MechaProcess, ResourcesDir, component};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};

use crate::MECHA;

pub(crate) fn redis_address() -> String {
    std::env::var("MECHA_TEST_REDIS_URL")
        .unwrap_or_else(|_| "127.0.0.1:6379".into())
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned()
}

pub(crate) fn postgres_url() -> String {
    std::env::var("MECHA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub(crate) fn mysql_url() -> String {
    std::env::var("MECHA_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

/// A fresh name for keys and tables: `<tag>_<pid>_<nanos>_<n>`.
pub(crate) fn fresh(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{tag}_{}_{nanos}_{n}", std::process::id())
}

/// A resources directory with the three bindings: `kv` (Redis), `pg` (PostgreSQL) and `my`
/// (MySQL).
pub(crate) fn resources() -> ResourcesDir {
    ResourcesDir::new()
        .with(
            "kv.yaml",
            &component("kv", "bindings.redis", &[("redisHost", &redis_address())]),
        )
        .with(
            "pg.yaml",
            &component(
                "pg",
                "bindings.postgresql",
                &[("connectionString", &postgres_url())],
            ),
        )
        .with(
            "my.yaml",
            &component("my", "bindings.mysql", &[("url", &mysql_url())]),
        )
}

async fn invoke(c: &Client, p: &MechaProcess, name: &str, body: Value) -> Response {
    c.post(format!("{}/v1.0/bindings/{name}", p.http_url()))
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn header(r: &Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn error_body(r: Response, status: StatusCode) -> (String, String) {
    assert_eq!(r.status(), status);
    let body: Value = r.json().await.unwrap();
    (
        body["errorCode"].as_str().unwrap_or_default().to_owned(),
        body["message"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_binding_over_http() {
    let res = resources();
    let p = MechaProcess::builder(MECHA)
        .resources(res.path())
        .start()
        .await;
    let c = Client::new();
    let key = fresh("e2e-kv");
    let create = json!({"operation": "create", "data": {"n": 1}, "metadata": {"key": key}});
    let r = invoke(&c, &p, "kv", create).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let get = json!({"operation": "get", "metadata": {"key": key}});
    let r = invoke(&c, &p, "kv", get.clone()).await;
    assert_eq!(r.status(), StatusCode::OK);
    // Over HTTP `data` reaches the binding JSON-encoded, and is stored so.
    assert_eq!(r.text().await.unwrap(), r#"{"n":1}"#);

    let counter = fresh("e2e-counter");
    for _ in 0..2 {
        let inc =
            json!({"operation": "increment", "metadata": {"key": counter, "ttlInSeconds": "60"}});
        assert_eq!(
            invoke(&c, &p, "kv", inc).await.status(),
            StatusCode::NO_CONTENT
        );
    }
    let r = invoke(
        &c,
        &p,
        "kv",
        json!({"operation": "get", "metadata": {"key": counter}}),
    )
    .await;
    assert_eq!(r.text().await.unwrap(), "2");

    for k in [&key, &counter] {
        let del = json!({"operation": "delete", "metadata": {"key": k}});
        assert_eq!(
            invoke(&c, &p, "kv", del).await.status(),
            StatusCode::NO_CONTENT
        );
    }
    let r = invoke(&c, &p, "kv", get).await;
    assert_eq!(
        r.status(),
        StatusCode::NO_CONTENT,
        "an absent key answers no data"
    );

    let r = invoke(&c, &p, "kv", json!({"operation": "create", "data": 1})).await;
    let (code, msg) = error_body(r, StatusCode::INTERNAL_SERVER_ERROR).await;
    assert_eq!(code, "ERR_INVOKE_OUTPUT_BINDING");
    assert!(msg.contains("key"), "{msg}");
    let r = invoke(
        &c,
        &p,
        "kv",
        json!({"operation": "list", "metadata": {"key": key}}),
    )
    .await;
    let (_, msg) = error_body(r, StatusCode::BAD_REQUEST).await;
    for op in ["create", "get", "delete", "increment"] {
        assert!(msg.contains(op), "{msg}");
    }
}

/// Runs the SQL checks shared by both SQL bindings on binding `name`; `p1`/`p2` are the
/// placeholder spellings and `row` builds the expected row shape.
async fn sql_binding_over_http(name: &str, p1: &str, p2: &str, row: impl Fn(i64, &str) -> Value) {
    let res = resources();
    let p = MechaProcess::builder(MECHA)
        .resources(res.path())
        .start()
        .await;
    let c = Client::new();
    let t = fresh("e2e_sql");
    let exec = |sql: String, params: Value| json!({"operation": "exec", "metadata": {"sql": sql, "params": params.to_string()}});
    let r = invoke(
        &c,
        &p,
        name,
        exec(
            format!("CREATE TABLE {t} (id int, name varchar(100))"),
            json!([]),
        ),
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::NO_CONTENT,
        "{}",
        r.text().await.unwrap()
    );

    let evil = format!("'); DROP TABLE {t}; --");
    let insert = format!("INSERT INTO {t} (id, name) VALUES ({p1}, {p2})");
    for (id, n) in [(1, "alice"), (2, evil.as_str())] {
        let r = invoke(&c, &p, name, exec(insert.clone(), json!([id, n]))).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert_eq!(header(&r, "metadata.rows-affected").as_deref(), Some("1"));
        assert_eq!(header(&r, "metadata.operation").as_deref(), Some("exec"));
        assert_eq!(header(&r, "metadata.sql"), Some(insert.clone()));
        assert!(header(&r, "metadata.start-time").is_some());
        assert!(header(&r, "metadata.end-time").is_some());
    }
    let select = format!("SELECT id, name FROM {t} ORDER BY id");
    let q = json!({"operation": "query", "metadata": {"sql": select}});
    let r = invoke(&c, &p, name, q).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "metadata.operation").as_deref(), Some("query"));
    let rows: Value = r.json().await.unwrap();
    assert_eq!(rows, json!([row(1, "alice"), row(2, &evil)]));

    let bad = json!({"operation": "query", "metadata": {"sql": format!("SELEC * FROM {t}")}});
    let (code, msg) = error_body(
        invoke(&c, &p, name, bad).await,
        StatusCode::INTERNAL_SERVER_ERROR,
    )
    .await;
    assert_eq!(code, "ERR_INVOKE_OUTPUT_BINDING");
    assert!(msg.to_lowercase().contains("syntax"), "{msg}");

    let unknown = json!({"operation": "upsert", "metadata": {"sql": "SELECT 1"}});
    let (_, msg) = error_body(invoke(&c, &p, name, unknown).await, StatusCode::BAD_REQUEST).await;
    for op in ["exec", "query", "close"] {
        assert!(msg.contains(op), "{msg}");
    }
    let r = invoke(&c, &p, name, exec(format!("DROP TABLE {t}"), json!([]))).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

#[tokio::test(flavor = "multi_thread")]
async fn postgresql_binding_over_http() {
    sql_binding_over_http("pg", "$1", "$2", |id, name| json!([id, name])).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_binding_over_http() {
    sql_binding_over_http("my", "?", "?", |id, name| json!({"id": id, "name": name})).await;
}
