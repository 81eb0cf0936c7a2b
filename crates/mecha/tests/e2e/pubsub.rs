//! Pub/sub through the real binary with an HTTP app: programmatic and declarative
//! subscriptions, CEL routing, the CloudEvent envelope, raw payloads, retries, dead letters,
//! bulk publish and bulk subscribe, topic scopes, error codes and the metadata listing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use mecha_test_support::{MechaProcess, ResourcesDir, component, eventually};
use reqwest::Client;
use serde_json::{Value, json};

use crate::MECHA;

/// What the app received: (path, content type, body).
pub(crate) type Received = Arc<Mutex<Vec<(String, String, Value)>>>;

#[derive(Clone)]
struct AppState {
    received: Received,
    subscriptions: Value,
}

/// An HTTP app: answers `/dapr/subscribe` with `subscriptions`, records every POST; `/fail`
/// always answers 500, `/retry-once/...` asks for a retry the first time it sees an event id,
/// `/drop` answers DROP, `/bulk` answers per-entry statuses (SUCCESS).
pub(crate) async fn app(subscriptions: Value) -> (u16, Received) {
    let received: Received = Arc::default();
    let state = AppState {
        received: received.clone(),
        subscriptions,
    };
    async fn subscribe(State(s): State<AppState>) -> impl IntoResponse {
        axum::Json(s.subscriptions.clone())
    }
    async fn deliver(
        State(s): State<AppState>,
        Path(path): Path<String>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> axum::response::Response {
        let ct = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let path = format!("/{path}");
        let id = value["id"].as_str().unwrap_or_default().to_owned();
        let seen_before = {
            let mut r = s.received.lock().unwrap();
            let before = r
                .iter()
                .any(|(p, _, v)| p == &path && v["id"].as_str() == Some(id.as_str()));
            r.push((path.clone(), ct, value.clone()));
            before
        };
        if path == "/fail" {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        if path.starts_with("/retry-once") && !seen_before {
            return axum::Json(json!({"status": "RETRY"})).into_response();
        }
        if path == "/drop" {
            return axum::Json(json!({"status": "DROP"})).into_response();
        }
        if path == "/bulk" {
            let statuses: Vec<Value> = value["entries"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|e| json!({"entryId": e["entryId"], "status": "SUCCESS"}))
                .collect();
            return axum::Json(json!({ "statuses": statuses })).into_response();
        }
        axum::Json(json!({"status": "SUCCESS"})).into_response()
    }
    let router = Router::new()
        .route("/dapr/subscribe", get(subscribe))
        .route("/{*path}", post(deliver))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (port, received)
}

pub(crate) fn events_at(received: &Received, path: &str) -> Vec<Value> {
    received
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, _, _)| p == path)
        .map(|(_, _, v)| v.clone())
        .collect()
}

/// Waits until the sidecar reports itself ready (subscriptions made).
pub(crate) async fn wait_ready(c: &Client, p: &MechaProcess) {
    eventually!(
        Duration::from_secs(20),
        c.get(format!("{}/v1.0/healthz", p.http_url()))
            .send()
            .await
            .map(|r| r.status() == StatusCode::NO_CONTENT)
            .unwrap_or(false),
        "the sidecar never became ready: {}",
        p.log()
    );
}

const SUBSCRIPTION: &str = "\
apiVersion: dapr.io/v2alpha1
kind: Subscription
metadata:
  name: decl
spec:
  pubsubname: ps
  topic: decl
  routes:
    default: /decl
scopes: [pubsub-app]
---
apiVersion: dapr.io/v2alpha1
kind: Subscription
metadata:
  name: other-app
spec:
  pubsubname: ps
  topic: elsewhere
  route: /elsewhere
scopes: [someone-else]
";

async fn start(subscriptions: Value, extra: &[(&str, &str)]) -> (MechaProcess, Received) {
    let (port, received) = app(subscriptions).await;
    let mut md = vec![("redeliverInterval", "200ms")];
    md.extend_from_slice(extra);
    let res = ResourcesDir::new()
        .with("ps.yaml", &component("ps", "pubsub.in-memory", &md))
        .with("subs.yaml", SUBSCRIPTION);
    let p = MechaProcess::builder(MECHA)
        .app_id("pubsub-app")
        .resources(res.path())
        .args(["--app-port", &port.to_string()])
        .start()
        .await;
    std::mem::forget(res);
    (p, received)
}

async fn publish(
    c: &Client,
    p: &MechaProcess,
    topic: &str,
    body: &[u8],
    content_type: &str,
    query: &str,
) -> reqwest::Response {
    c.post(format!("{}/v1.0/publish/ps/{topic}{query}", p.http_url()))
        .header("content-type", content_type)
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn http_app_gets_events_routed_enveloped_retried_and_dead_lettered() {
    let subs = json!([
        {"pubsubname": "ps", "topic": "orders",
         "routes": {"rules": [{"match": "event.type == \"big\"", "path": "/big"},
                              {"match": "event.data.qty > 10", "path": "/many"}],
                    "default": "/orders"}},
        {"pubsubname": "ps", "topic": "fail", "route": "/fail", "deadLetterTopic": "poison"},
        {"pubsubname": "ps", "topic": "poison", "route": "/poison"},
        {"pubsubname": "ps", "topic": "again", "route": "/retry-once"},
        {"pubsubname": "ps", "topic": "dropped", "route": "/drop", "deadLetterTopic": "poison"},
        {"pubsubname": "ps", "topic": "raw", "route": "/raw", "metadata": {"rawPayload": "true"}},
        {"pubsubname": "ps", "topic": "noroute"}
    ]);
    let (p, received) = start(subs, &[]).await;
    let c = Client::new();
    wait_ready(&c, &p).await;

    // JSON data is wrapped in a CloudEvent built by the sidecar.
    let r = publish(&c, &p, "orders", br#"{"qty":1}"#, "application/json", "").await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    eventually!(
        Duration::from_secs(10),
        events_at(&received, "/orders").len() == 1,
        "default route not reached: {:?}\n{}",
        received.lock().unwrap(),
        p.log()
    );
    let ev = &events_at(&received, "/orders")[0];
    assert_eq!(ev["data"], json!({"qty": 1}));
    assert_eq!(ev["source"], "pubsub-app");
    assert_eq!(ev["type"], "com.dapr.event.sent");
    assert_eq!(ev["specversion"], "1.0");
    assert_eq!(ev["datacontenttype"], "application/json");
    assert_eq!(ev["topic"], "orders");
    assert_eq!(ev["pubsubname"], "ps");
    assert_eq!(
        ev["traceparent"],
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );
    assert!(ev["id"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(ev["time"].as_str().is_some());
    let ct = received.lock().unwrap()[0].1.clone();
    assert_eq!(ct, "application/cloudevents+json");

    // CEL rules: first match wins; a caller-supplied CloudEvent keeps its fields.
    let ce = json!({"specversion": "1.0", "id": "my-id", "source": "me", "type": "big",
                    "datacontenttype": "application/json", "data": {"qty": 99}});
    let r = publish(
        &c,
        &p,
        "orders",
        ce.to_string().as_bytes(),
        "application/cloudevents+json",
        "",
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = publish(&c, &p, "orders", br#"{"qty":50}"#, "application/json", "").await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    eventually!(
        Duration::from_secs(10),
        events_at(&received, "/big").len() == 1 && events_at(&received, "/many").len() == 1,
        "CEL routes not reached: {:?}",
        received.lock().unwrap()
    );
    let big = &events_at(&received, "/big")[0];
    assert_eq!(big["id"], "my-id");
    assert_eq!(big["source"], "me");
    assert_eq!(big["topic"], "orders");

    // A handler that always fails: retried, then sent to the dead-letter topic.
    let r = publish(&c, &p, "fail", b"doomed", "text/plain", "").await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    eventually!(
        Duration::from_secs(15),
        events_at(&received, "/poison").len() == 1,
        "dead letter not delivered: {:?}\n{}",
        received.lock().unwrap(),
        p.log()
    );
    assert!(
        events_at(&received, "/fail").len() >= 2,
        "no retries before dead-lettering"
    );
    assert_eq!(events_at(&received, "/poison")[0]["data"], "doomed");

    // RETRY then SUCCESS: delivered twice, acknowledged once.
    publish(&c, &p, "again", b"x", "text/plain", "").await;
    eventually!(
        Duration::from_secs(10),
        events_at(&received, "/retry-once").len() == 2,
        "RETRY did not cause a redelivery: {:?}",
        received.lock().unwrap()
    );

    // DROP goes to the dead-letter topic.
    publish(&c, &p, "dropped", b"unwanted", "text/plain", "").await;
    eventually!(
        Duration::from_secs(10),
        events_at(&received, "/poison").len() == 2,
        "dropped event not dead-lettered: {:?}",
        received.lock().unwrap()
    );

    // Raw payload: published without an envelope, received in a synthesised one.
    let r = publish(
        &c,
        &p,
        "raw",
        &[0, 1, 2, 255],
        "application/octet-stream",
        "?metadata.rawPayload=true",
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    eventually!(
        Duration::from_secs(10),
        events_at(&received, "/raw").len() == 1,
        "raw event not delivered"
    );
    let raw = &events_at(&received, "/raw")[0];
    assert_eq!(raw["data_base64"], "AAEC/w==");
    assert_eq!(raw["datacontenttype"], "application/octet-stream");

    // The declarative subscription (scoped to this app) works; the other app's does not exist.
    publish(&c, &p, "decl", br#""hi""#, "application/json", "").await;
    eventually!(
        Duration::from_secs(10),
        events_at(&received, "/decl").len() == 1,
        "declarative subscription not delivered"
    );

    // The metadata API lists the subscriptions with their kind.
    let md: Value = c
        .get(format!("{}/v1.0/metadata", p.http_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let subs = md["subscriptions"].as_array().unwrap();
    let kind = |topic: &str| {
        subs.iter()
            .find(|s| s["topic"] == topic)
            .map(|s| s["type"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(kind("decl").as_deref(), Some("DECLARATIVE"));
    assert_eq!(kind("orders").as_deref(), Some("PROGRAMMATIC"));
    assert_eq!(kind("elsewhere"), None);
    assert_eq!(
        kind("noroute"),
        None,
        "a subscription without a route is ignored"
    );
    let orders = subs.iter().find(|s| s["topic"] == "orders").unwrap();
    assert_eq!(orders["rules"].as_array().unwrap().len(), 3);
    assert_eq!(orders["rules"][0]["match"], "event.type == \"big\"");
    assert_eq!(
        subs.iter().find(|s| s["topic"] == "fail").unwrap()["deadLetterTopic"],
        "poison"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_scopes_bulk_publish_and_bulk_subscribe() {
    let subs = json!([
        {"pubsubname": "ps", "topic": "many", "route": "/bulk",
         "bulkSubscribe": {"enabled": true, "maxMessagesCount": 10, "maxAwaitDurationMs": 200}},
    ]);
    let (p, received) = start(
        subs,
        &[
            ("publishingScopes", "pubsub-app=many,open"),
            ("allowedTopics", "many,open,secret"),
        ],
    )
    .await;
    let c = Client::new();
    wait_ready(&c, &p).await;
    let error = |r: reqwest::Response| async move {
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        (
            status,
            body["errorCode"].as_str().unwrap_or_default().to_owned(),
        )
    };
    let r = c
        .post(format!("{}/v1.0/publish/nope/t", p.http_url()))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error(r).await,
        (StatusCode::NOT_FOUND, "ERR_PUBSUB_NOT_FOUND".to_owned())
    );
    let r = publish(&c, &p, "secret", b"x", "text/plain", "").await;
    assert_eq!(
        error(r).await,
        (StatusCode::FORBIDDEN, "ERR_PUBSUB_FORBIDDEN".to_owned())
    );
    let r = publish(
        &c,
        &p,
        "open",
        b"x",
        "text/plain",
        "?metadata.rawPayload=maybe",
    )
    .await;
    assert_eq!(
        error(r).await,
        (
            StatusCode::BAD_REQUEST,
            "ERR_PUBSUB_REQUEST_METADATA".to_owned()
        )
    );
    let r = publish(
        &c,
        &p,
        "open",
        b"{not json",
        "application/cloudevents+json",
        "",
    )
    .await;
    assert_eq!(
        error(r).await,
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "ERR_PUBSUB_CLOUD_EVENTS_SER".to_owned()
        )
    );

    // Bulk publish: ids must be unique; then 25 entries all arrive, in batches.
    let bulk_url = format!("{}/v1.0-alpha1/publish/bulk/ps/many", p.http_url());
    let dup = json!([{"entryId": "1", "event": "a", "contentType": "text/plain"},
                     {"entryId": "1", "event": "b", "contentType": "text/plain"}]);
    let r = c.post(&bulk_url).json(&dup).send().await.unwrap();
    assert_eq!(
        error(r).await,
        (StatusCode::BAD_REQUEST, "ERR_PUBSUB_EVENTS_SER".to_owned())
    );
    let entries: Vec<Value> = (0..25)
        .map(|i| json!({"entryId": i.to_string(), "event": {"n": i}, "contentType": "application/json"}))
        .collect();
    let r = c.post(&bulk_url).json(&entries).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let delivered = || -> Vec<i64> {
        let mut n: Vec<i64> = events_at(&received, "/bulk")
            .iter()
            .flat_map(|b| b["entries"].as_array().cloned().unwrap_or_default())
            .filter_map(|e| e["event"]["data"]["n"].as_i64())
            .collect();
        n.sort();
        n.dedup();
        n
    };
    eventually!(
        Duration::from_secs(10),
        delivered().len() == 25,
        "bulk events not all delivered: {:?}\n{}",
        delivered(),
        p.log()
    );
    let batches = events_at(&received, "/bulk");
    assert!(
        batches.len() < 25,
        "events were not batched: {} requests",
        batches.len()
    );
    let first = &batches[0];
    assert_eq!(first["type"], "com.dapr.event.sent.bulk");
    assert_eq!(first["topic"], "many");
    assert_eq!(first["pubsubname"], "ps");
    assert!(first["entries"].as_array().unwrap().len() <= 10);
    assert_eq!(
        first["entries"][0]["contentType"],
        "application/cloudevents+json"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deliveries_pause_while_the_app_is_unhealthy_and_respect_max_concurrency() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    #[derive(Clone, Default)]
    struct Probe {
        healthy: Arc<AtomicBool>,
        delivered: Arc<AtomicUsize>,
        in_flight: Arc<AtomicUsize>,
        peak: Arc<AtomicUsize>,
    }
    let probe = Probe::default();
    probe.healthy.store(true, Ordering::SeqCst);
    let router = Router::new()
        .route(
            "/healthz",
            get(|State(p): State<Probe>| async move {
                if p.healthy.load(Ordering::SeqCst) {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            }),
        )
        .route(
            "/dapr/subscribe",
            get(|| async {
                axum::Json(
                    json!([{"pubsubname": "ps", "topic": "work", "route": "/work",
                                   "metadata": {"concurrency": "8"}}]),
                )
            }),
        )
        .route(
            "/work",
            post(|State(p): State<Probe>| async move {
                let now = p.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                p.peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                p.in_flight.fetch_sub(1, Ordering::SeqCst);
                p.delivered.fetch_add(1, Ordering::SeqCst);
                StatusCode::OK
            }),
        )
        .with_state(probe.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let res = ResourcesDir::new().with("ps.yaml", &component("ps", "pubsub.in-memory", &[]));
    let p = MechaProcess::builder(MECHA)
        .app_id("health-app")
        .resources(res.path())
        .args([
            "--app-port",
            &port.to_string(),
            "--app-max-concurrency",
            "2",
            "--enable-app-health-check",
            "--app-health-probe-interval",
            "1",
            "--app-health-threshold",
            "1",
        ])
        .start()
        .await;
    let c = Client::new();
    wait_ready(&c, &p).await;
    for i in 0..10 {
        let r = publish(&c, &p, "work", format!("{i}").as_bytes(), "text/plain", "").await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }
    eventually!(
        Duration::from_secs(10),
        probe.delivered.load(Ordering::SeqCst) == 10,
        "not all delivered"
    );
    let peak = probe.peak.load(Ordering::SeqCst);
    assert!(
        peak <= 2,
        "--app-max-concurrency 2 exceeded: {peak} in flight"
    );
    assert_eq!(
        peak, 2,
        "deliveries did not run in parallel up to the limit"
    );

    // Unhealthy: nothing is delivered; healthy again: the backlog arrives.
    probe.healthy.store(false, Ordering::SeqCst);
    eventually!(
        Duration::from_secs(10),
        p.log().contains("The app is unhealthy"),
        "the sidecar did not notice the unhealthy app:\n{}",
        p.log()
    );
    let md: Value = c
        .get(format!("{}/v1.0/metadata", p.http_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(md["extended"]["appHealth"], "unhealthy", "{md}");
    assert_eq!(
        md["appConnectionProperties"]["health"]["healthCheckPath"],
        "/healthz"
    );
    assert_eq!(md["appConnectionProperties"]["maxConcurrency"], 2);
    for i in 0..5 {
        publish(
            &c,
            &p,
            "work",
            format!("late-{i}").as_bytes(),
            "text/plain",
            "",
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        probe.delivered.load(Ordering::SeqCst),
        10,
        "events were delivered to an unhealthy app"
    );
    probe.healthy.store(true, Ordering::SeqCst);
    eventually!(
        Duration::from_secs(10),
        probe.delivered.load(Ordering::SeqCst) == 15,
        "deliveries did not resume after the app recovered:\n{}",
        p.log()
    );
}
