//! `bindings.cron`, `bindings.http` and `bindings.localstorage` through the real binary: cron
//! ticks delivered to an HTTP app (after its `OPTIONS` probe), HTTP output to a server started
//! by the test, and files through the bindings API.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use mecha_test_support::{MechaProcess, ResourcesDir, component, eventually};
use reqwest::Client;
use serde_json::{Value, json};

use crate::MECHA;

/// (route, readTimeUTC, timeZone) of each event the app received.
type Ticks = Arc<Mutex<Vec<(String, String, String)>>>;

/// An HTTP app accepting input binding events at `/ticks` and `/beat`; returns its port.
async fn app() -> (u16, Ticks) {
    let ticks: Ticks = Arc::default();
    let seen = ticks.clone();
    let record = move |Path(route): Path<String>, headers: HeaderMap| {
        let seen = seen.clone();
        async move {
            let h = |k: &str| {
                headers
                    .get(k)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            seen.lock()
                .unwrap()
                .push((route, h("readtimeutc"), h("timezone")));
            StatusCode::OK
        }
    };
    let router = Router::new().route(
        "/{route}",
        post(record).options(|| async { StatusCode::OK }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (port, ticks)
}

/// The "external system" of the HTTP binding (also used by the Python SDK test): echoes
/// bodies and the `X-Custom` header; `/things/missing` answers 404.
pub(crate) async fn external() -> String {
    let echo = |Path(id): Path<String>, req: Request| async move {
        if id == "missing" {
            return (
                StatusCode::NOT_FOUND,
                HeaderMap::new(),
                "no such thing".to_owned(),
            );
        }
        let mut headers = HeaderMap::new();
        if let Some(v) = req.headers().get("x-custom") {
            headers.insert("x-seen-custom", v.clone());
        }
        let body = axum::body::to_bytes(req.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            StatusCode::CREATED,
            headers,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    };
    let router = Router::new().route("/things/{id}", axum::routing::any(echo));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

async fn invoke(c: &Client, p: &MechaProcess, name: &str, body: Value) -> reqwest::Response {
    c.post(format!("{}/v1.0/bindings/{name}", p.http_url()))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn error_of(r: reqwest::Response) -> (StatusCode, String, String) {
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    let text = |k: &str| body[k].as_str().unwrap_or_default().to_owned();
    (status, text("errorCode"), text("message"))
}

#[tokio::test(flavor = "multi_thread")]
async fn cron_ticks_reach_an_http_app_and_delete_stops_them() {
    let (app_port, ticks) = app().await;
    let res = ResourcesDir::new()
        .with(
            "ticker.yaml",
            &component(
                "ticker",
                "bindings.cron",
                &[("schedule", "@every 1s"), ("route", "/ticks")],
            ),
        )
        .with(
            "beat.yaml",
            &component("beat", "bindings.cron", &[("schedule", "*/1 * * * * *")]),
        );
    let p = MechaProcess::builder(MECHA)
        .resources(res.path())
        .args(["--app-port", &app_port.to_string()])
        .start()
        .await;
    let count = |route: &str| {
        ticks
            .lock()
            .unwrap()
            .iter()
            .filter(|t| t.0 == route)
            .count()
    };
    eventually!(
        Duration::from_secs(10),
        count("ticks") >= 3 && count("beat") >= 3,
        "ticks did not arrive: {:?}\n{}",
        ticks.lock().unwrap(),
        p.log()
    );
    for route in ["ticks", "beat"] {
        let all = ticks.lock().unwrap().clone();
        let mine: Vec<_> = all.iter().filter(|t| t.0 == route).collect();
        let seconds: HashSet<_> = mine
            .iter()
            .map(|t| t.1.get(..19).unwrap_or_default())
            .collect();
        assert_eq!(seconds.len(), mine.len(), "a slot fired twice: {mine:?}");
        for (_, read_time, tz) in mine {
            assert_eq!(tz, "UTC");
            assert!(
                read_time.ends_with('Z') && read_time.contains('T'),
                "{read_time}"
            );
        }
    }

    // The output operation `delete` stops the schedule.
    let c = Client::new();
    let r = invoke(&c, &p, "ticker", json!({"operation": "delete"})).await;
    assert!(r.status().is_success(), "{}: {}", r.status(), p.log());
    assert_eq!(r.headers()["metadata.schedule"], "@every 1s");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped_at = count("ticks");
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    assert_eq!(
        count("ticks"),
        stopped_at,
        "ticker still fires after delete"
    );
    assert!(count("beat") >= 4, "the other schedule keeps going");
}

#[tokio::test(flavor = "multi_thread")]
async fn http_output_through_the_sidecar() {
    let base = external().await;
    let res = ResourcesDir::new().with(
        "web.yaml",
        &component(
            "web",
            "bindings.http",
            &[("url", &base), ("securityToken", "t0k")],
        ),
    );
    let p = MechaProcess::builder(MECHA)
        .resources(res.path())
        .start()
        .await;
    let c = Client::new();

    let r = invoke(
        &c,
        &p,
        "web",
        json!({"operation": "post", "data": {"a": 1}, "metadata": {"path": "/things/1", "X-Custom": "v"}}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK, "{}", p.log());
    assert_eq!(r.headers()["metadata.statusCode"], "201");
    assert_eq!(r.headers()["metadata.status"], "201 Created");
    assert_eq!(r.headers()["metadata.X-Seen-Custom"], "v");
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"a": 1}));

    let r = invoke(
        &c,
        &p,
        "web",
        json!({"operation": "get", "metadata": {"path": "/things/missing"}}),
    )
    .await;
    let (status, code, message) = error_of(r).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(code, "ERR_INVOKE_OUTPUT_BINDING");
    assert!(message.contains("received status code 404"), "{message}");

    let r = invoke(&c, &p, "web", json!({"operation": "fly"})).await;
    let (status, _, message) = error_of(r).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        message.contains("fly") && message.contains("get, head, post"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn localstorage_through_the_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("files");
    let res = ResourcesDir::new().with(
        "files.yaml",
        &component(
            "files",
            "bindings.localstorage",
            &[("rootPath", root.to_str().unwrap())],
        ),
    );
    let p = MechaProcess::builder(MECHA)
        .resources(res.path())
        .start()
        .await;
    let c = Client::new();

    let r = invoke(
        &c,
        &p,
        "files",
        json!({"operation": "create", "data": "hello", "metadata": {"fileName": "a/b.txt"}}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK, "{}", p.log());
    assert_eq!(r.headers()["metadata.fileName"], "a/b.txt");
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"fileName": "a/b.txt"})
    );
    assert_eq!(
        std::fs::read_to_string(root.join("a/b.txt")).unwrap(),
        "hello"
    );

    let r = invoke(
        &c,
        &p,
        "files",
        json!({"operation": "get", "metadata": {"fileName": "a/b.txt"}}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "hello");

    let r = invoke(&c, &p, "files", json!({"operation": "list"})).await;
    assert_eq!(r.json::<Value>().await.unwrap(), json!(["a/b.txt"]));

    let r = invoke(
        &c,
        &p,
        "files",
        json!({"operation": "delete", "metadata": {"fileName": "a/b.txt"}}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(!root.join("a/b.txt").exists());

    let escape = dir.path().join("escaped");
    let r = invoke(
        &c,
        &p,
        "files",
        json!({"operation": "create", "data": "x", "metadata": {"fileName": "../escaped"}}),
    )
    .await;
    let (status, code, message) = error_of(r).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(code, "ERR_INVOKE_OUTPUT_BINDING");
    assert!(message.contains("outside the root folder"), "{message}");
    assert!(!escape.exists());

    let r = invoke(&c, &p, "files", json!({"operation": "exec"})).await;
    let (status, _, message) = error_of(r).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message.contains("create, get, list, delete"), "{message}");
}
