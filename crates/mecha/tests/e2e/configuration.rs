//! The configuration API against the real binary on `configuration.redis`, with changes made
//! directly in Redis reaching HTTP apps and gRPC subscribers.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dapr::dapr::proto::runtime::v1 as rt;
use dapr::dapr::proto::runtime::v1::dapr_client::DaprClient;
use futures::StreamExt;
use mecha_test_support::{MechaProcess, ResourcesDir, component, eventually, free_port};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::MECHA;

fn redis_url() -> String {
    std::env::var("MECHA_TEST_REDIS_URL").unwrap_or_else(|_| "127.0.0.1:6379".into())
}

/// Sets (or deletes) a key directly in Redis, as an operator would.
fn redis_set(key: &str, value: Option<&str>) {
    let (host, port) = redis_url()
        .rsplit_once(':')
        .map(|(h, p)| (h.to_owned(), p.to_owned()))
        .unwrap();
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-h", &host, "-p", &port]);
    match value {
        Some(v) => cmd.args(["SET", key, v]),
        None => cmd.args(["DEL", key]),
    };
    let out = cmd.output().expect("redis-cli runs");
    assert!(out.status.success(), "redis-cli failed: {out:?}");
}

fn resources() -> ResourcesDir {
    ResourcesDir::new().with(
        "config.yaml",
        &component(
            "configstore",
            "configuration.redis",
            &[("redisHost", &redis_url())],
        ),
    )
}

/// A tiny app that records every configuration update POSTed to it.
async fn app() -> (u16, Arc<Mutex<Vec<(String, Value)>>>) {
    let seen: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let port = free_port();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let record = seen.clone();
    let router = axum::Router::new().route(
        "/configuration/{store}/{key}",
        axum::routing::post(
            move |axum::extract::Path((store, key)): axum::extract::Path<(String, String)>,
                  body: axum::Json<Value>| {
                let record = record.clone();
                async move {
                    record
                        .lock()
                        .unwrap()
                        .push((format!("{store}/{key}"), body.0));
                    StatusCode::OK
                }
            },
        ),
    );
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (port, seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn http_get_subscribe_and_unsubscribe() {
    let run = uuid_like();
    let (k1, k2) = (format!("cfg-{run}-a"), format!("cfg-{run}-b"));
    redis_set(&k1, Some("red||1"));
    redis_set(&k2, Some("7"));
    let (app_port, seen) = app().await;
    let res = resources();
    let p = MechaProcess::builder(MECHA)
        .resources(res.path())
        .args(["--app-port", &app_port.to_string()])
        .start()
        .await;
    let c = Client::new();
    let base = format!("{}/v1.0/configuration/configstore", p.http_url());

    let got: Value = c
        .get(format!("{base}?key={k1}&key={k2}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got[&k1]["value"], "red");
    assert_eq!(got[&k1]["version"], "1");
    assert_eq!(got[&k2]["value"], "7");
    let alpha = format!(
        "{}/v1.0-alpha1/configuration/configstore?key={k1}",
        p.http_url()
    );
    assert_eq!(c.get(alpha).send().await.unwrap().status(), StatusCode::OK);
    let none = c
        .get(format!("{base}?key=cfg-{run}-missing"))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), StatusCode::NO_CONTENT);

    let sub: Value = c
        .get(format!("{base}/subscribe?key={k1}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = sub["id"].as_str().expect("subscription id").to_owned();
    redis_set(&k2, Some("ignored"));
    redis_set(&k1, Some("green||2"));
    eventually!(
        Duration::from_secs(10),
        !seen.lock().unwrap().is_empty(),
        "no update reached the app"
    );
    let (path, body) = seen.lock().unwrap()[0].clone();
    assert_eq!(path, format!("configstore/{k1}"));
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["items"][&k1]["value"], "green");
    assert_eq!(body["items"][&k1]["version"], "2");

    let r: Value = c
        .get(format!("{base}/{id}/unsubscribe"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r, json!({"ok": true}));
    let r = c
        .get(format!("{base}/{id}/unsubscribe"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["ok"], false);
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));

    // After unsubscribing, changes no longer reach the app.
    let before = seen.lock().unwrap().len();
    redis_set(&k1, Some("blue||3"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(seen.lock().unwrap().len(), before);
    redis_set(&k1, None);
    redis_set(&k2, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_subscription_streams_changes_after_an_id_only_message() {
    let run = uuid_like();
    let key = format!("cfg-{run}-grpc");
    let res = resources();
    let p = MechaProcess::builder(MECHA)
        .resources(res.path())
        .start()
        .await;
    let mut c = DaprClient::connect(p.grpc_url()).await.unwrap();
    let mut stream = c
        .subscribe_configuration(rt::SubscribeConfigurationRequest {
            store_name: "configstore".into(),
            keys: vec![key.clone()],
            metadata: Default::default(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    assert!(!first.id.is_empty() && first.items.is_empty(), "{first:?}");
    redis_set(&key, Some("on||5"));
    let update = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(update.id, first.id);
    assert_eq!(update.items[&key].value, "on");
    let r = c
        .unsubscribe_configuration(rt::UnsubscribeConfigurationRequest {
            store_name: "configstore".into(),
            id: first.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.ok);
    // The stream ends after the unsubscribe.
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap();
    assert!(end.is_none(), "{end:?}");
    redis_set(&key, None);
}

#[tokio::test]
async fn configuration_errors_have_the_reference_codes() {
    let res = resources();
    let p = MechaProcess::builder(MECHA)
        .resources(res.path())
        .start()
        .await;
    let c = Client::new();
    let code = |r: reqwest::Response| async move {
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        (
            status,
            body["errorCode"].as_str().unwrap_or_default().to_owned(),
        )
    };
    let r = c
        .get(format!("{}/v1.0/configuration/nostore?key=a", p.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(r).await,
        (
            StatusCode::BAD_REQUEST,
            "ERR_CONFIGURATION_STORE_NOT_FOUND".into()
        )
    );
    let r = c
        .get(format!(
            "{}/v1.0/configuration/configstore/subscribe?key=a",
            p.http_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(r).await,
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "ERR_APP_CHANNEL_NIL".into()
        )
    );
    let empty = ResourcesDir::new();
    let p = MechaProcess::builder(MECHA)
        .resources(empty.path())
        .start()
        .await;
    let r = c
        .get(format!("{}/v1.0/configuration/x?key=a", p.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(r).await,
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "ERR_CONFIGURATION_STORE_NOT_CONFIGURED".into()
        )
    );
}

fn uuid_like() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}
