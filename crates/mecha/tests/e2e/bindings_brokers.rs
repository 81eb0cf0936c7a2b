//! `bindings.mqtt3` and `bindings.rabbitmq` through the real binary, on the shared Mosquitto
//! (`MECHA_TEST_MQTT_URL`) and RabbitMQ (`MECHA_TEST_RABBITMQ_URL`): output over the HTTP API,
//! input delivered to an HTTP app that refuses each route's first event, so the broker's
//! redelivery is exercised; the Python SDK's `invoke_binding` for both.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use mecha_test_support::{MechaProcess, ResourcesDir, component, eventually};
use reqwest::Client;
use serde_json::{Value, json};

use crate::MECHA;

/// One event the app received: (route, body, headers, the status it answered).
#[derive(Clone, Debug)]
pub(crate) struct Received {
    pub(crate) route: String,
    pub(crate) body: String,
    pub(crate) headers: HashMap<String, String>,
    pub(crate) status: u16,
}

/// Everything the app received.
pub(crate) type Inbox = Arc<Mutex<Vec<Received>>>;

pub(crate) fn mqtt_url() -> String {
    std::env::var("MECHA_TEST_MQTT_URL").unwrap_or_else(|_| "tcp://127.0.0.1:1883".into())
}

pub(crate) fn rabbitmq_url() -> String {
    std::env::var("MECHA_TEST_RABBITMQ_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".into())
}

/// An HTTP app receiving events at `/{route}`; with `refuse_first`, it answers 500 to the first
/// event of each route. Returns its port.
pub(crate) async fn app(refuse_first: bool) -> (u16, Inbox) {
    let inbox: Inbox = Arc::default();
    let seen = inbox.clone();
    let record = move |Path(route): Path<String>, headers: HeaderMap, body: Bytes| {
        let seen = seen.clone();
        async move {
            let mut all = seen.lock().unwrap();
            let first = !all.iter().any(|r| r.route == route);
            let status = if refuse_first && first { 500 } else { 200 };
            all.push(Received {
                route,
                body: String::from_utf8_lossy(&body).into_owned(),
                headers: headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
                    .collect(),
                status,
            });
            StatusCode::from_u16(status).unwrap()
        }
    };
    let router = Router::new().route(
        "/{route}",
        post(record).options(|| async { StatusCode::OK }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (port, inbox)
}

/// Resources with an MQTT binding `mq` and a RabbitMQ binding `rq` on fresh topic and queue;
/// returns them with the queue name.
pub(crate) fn resources() -> (ResourcesDir, String) {
    let id = unique_id();
    let topic = format!("mecha/e2e/{id}");
    let queue = format!("mecha-e2e-{id}");
    let mqtt = mqtt_url();
    let rabbit = rabbitmq_url();
    let res = ResourcesDir::new()
        .with(
            "mq.yaml",
            &component(
                "mq",
                "bindings.mqtt3",
                &[
                    ("url", &mqtt),
                    ("topic", &topic),
                    ("consumerID", &format!("e2e-{id}")),
                ],
            ),
        )
        .with(
            "rq.yaml",
            &component(
                "rq",
                "bindings.rabbitmq",
                &[
                    ("host", &rabbit),
                    ("queueName", &queue),
                    ("reconnectWaitInSeconds", "1"),
                ],
            ),
        );
    (res, queue)
}

/// A fresh id for topics, queues and client ids.
fn unique_id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!(
        "{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Deletes a test queue on the shared broker.
pub(crate) fn delete_queue(queue: &str) {
    let _ = std::process::Command::new("rabbitmqctl")
        .args(["delete_queue", queue])
        .output();
}

/// The events of `route` with their bodies.
pub(crate) fn events(inbox: &Inbox, route: &str) -> Vec<Received> {
    inbox
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.route == route)
        .cloned()
        .collect()
}

/// Publishes to `mq` over HTTP until the app sees an event: the sidecar may report ready
/// before the MQTT subscription exists, and MQTT keeps nothing for a subscription not made yet.
pub(crate) async fn warm_up_mqtt(p: &MechaProcess, inbox: &Inbox) {
    let c = Client::new();
    let mut n = 0;
    eventually!(
        Duration::from_secs(15),
        {
            n += 1;
            let body = json!({"operation": "create", "data": {"warmup": n}});
            let r = invoke(&c, p, "mq", body).await;
            assert_eq!(r.status(), StatusCode::NO_CONTENT, "{}", p.log());
            tokio::time::sleep(Duration::from_millis(300)).await;
            !events(inbox, "mq").is_empty()
        },
        "no MQTT event reached the app\n{}",
        p.log()
    );
}

async fn invoke(c: &Client, p: &MechaProcess, name: &str, body: Value) -> reqwest::Response {
    c.post(format!("{}/v1.0/bindings/{name}", p.http_url()))
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_bindings_through_the_sidecar_with_redelivery() {
    let (app_port, inbox) = app(true).await;
    let (res, queue) = resources();
    let p = MechaProcess::builder(MECHA)
        .resources(res.path())
        .args(["--app-port", &app_port.to_string()])
        .start()
        .await;
    let c = Client::new();

    warm_up_mqtt(&p, &inbox).await;
    let r = invoke(
        &c,
        &p,
        "rq",
        json!({"operation": "create", "data": {"n": 2}, "metadata": {"custom": "v1"}}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "{}", p.log());

    // Each route's first delivery is refused; the broker redelivers it and the app accepts it.
    let all_accepted = |route: &str| {
        let seen = events(&inbox, route);
        !seen.is_empty()
            && seen
                .iter()
                .all(|e| seen.iter().any(|a| a.body == e.body && a.status == 200))
    };
    for route in ["mq", "rq"] {
        eventually!(
            Duration::from_secs(20),
            all_accepted(route),
            "{route}: not every message was accepted: {:?}\n{}",
            events(&inbox, route),
            p.log()
        );
        assert_eq!(events(&inbox, route)[0].status, 500);
    }
    let mq = events(&inbox, "mq");
    assert!(
        mq[0]
            .headers
            .get("topic")
            .is_some_and(|t| t.starts_with("mecha/e2e/")),
        "{mq:?}"
    );
    let rq = events(&inbox, "rq");
    assert!(rq.iter().all(|e| e.body == r#"{"n":2}"#), "{rq:?}");
    assert_eq!(
        rq.last().unwrap().headers.get("custom").map(String::as_str),
        Some("v1")
    );

    // Accepted messages are not delivered again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for route in ["mq", "rq"] {
        let seen = events(&inbox, route);
        for e in seen.iter().filter(|e| e.status == 200) {
            let times = seen
                .iter()
                .filter(|a| a.body == e.body && a.status == 200)
                .count();
            assert_eq!(times, 1, "{route}: {seen:?}");
        }
    }

    // Errors.
    let r = invoke(&c, &p, "rq", json!({"operation": "get"})).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("create"),
        "{body}"
    );
    let r = invoke(
        &c,
        &p,
        "rq",
        json!({"operation": "create", "data": 1, "metadata": {"ttlInSeconds": "x"}}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errorCode"], "ERR_INVOKE_OUTPUT_BINDING");
    drop(p);
    delete_queue(&queue);
}
