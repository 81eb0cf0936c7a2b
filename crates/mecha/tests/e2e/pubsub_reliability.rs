//! No message loss: 10,000 messages are published through one sidecar while the subscribing
//! app's sidecar is killed with SIGKILL and restarted twice; every accepted message must reach
//! the app at least once (distinct ids are counted). Run on the durable brokers: SQLite (two
//! sidecars on one file), Redis, NATS JetStream and RabbitMQ.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use mecha_test_support::{MechaProcess, ResourcesDir, component};
use serde_json::{Value, json};

use crate::MECHA;

const MESSAGES: usize = 10_000;
const PUBLISHERS: usize = 16;
/// Accepted counts at which the subscriber's sidecar is killed (then restarted).
const KILL_AT: [usize; 2] = [2_500, 6_000];
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(120);

/// The subscribing app: records the distinct `n` of every event; answers 200.
async fn subscriber_app(topic: String) -> (u16, Arc<Mutex<HashSet<u64>>>, Arc<AtomicUsize>) {
    let seen: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let deliveries = Arc::new(AtomicUsize::new(0));
    let (s, d) = (seen.clone(), deliveries.clone());
    let router = Router::new()
        .route(
            "/dapr/subscribe",
            get(move || {
                let topic = topic.clone();
                async move {
                    axum::Json(json!([{"pubsubname": "ps", "topic": topic, "route": "/msg",
                                       "metadata": {"concurrency": "4"}}]))
                }
            }),
        )
        .route(
            "/msg",
            post(move |body: axum::body::Bytes| {
                let (s, d) = (s.clone(), d.clone());
                async move {
                    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    if let Some(n) = v["data"]["n"].as_u64() {
                        s.lock().unwrap().insert(n);
                    }
                    d.fetch_add(1, Ordering::Relaxed);
                    StatusCode::OK
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (port, seen, deliveries)
}

async fn start_subscriber(res: &ResourcesDir, app_id: &str, port: u16) -> MechaProcess {
    let p = MechaProcess::builder(MECHA)
        .app_id(app_id)
        .resources(res.path())
        .args(["--app-port", &port.to_string()])
        .start()
        .await;
    crate::pubsub::wait_ready(&reqwest::Client::new(), &p).await;
    p
}

/// Publishes [`MESSAGES`] through a publisher sidecar while killing and restarting the
/// subscriber's; then waits until every accepted message was delivered.
async fn no_loss(broker: &str, metadata: &[(&str, &str)]) {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let topic = format!("reliability-{}", &run[..12]);
    let sub_id = format!("rel-sub-{}", &run[..8]);
    let res = ResourcesDir::new().with("ps.yaml", &component("ps", broker, metadata));
    let (app_port, seen, deliveries) = subscriber_app(topic.clone()).await;
    let mut subscriber = Some(start_subscriber(&res, &sub_id, app_port).await);
    let publisher = MechaProcess::builder(MECHA)
        .app_id(&format!("rel-pub-{}", &run[..8]))
        .resources(res.path())
        .start()
        .await;

    let url = format!("{}/v1.0/publish/ps/{topic}", publisher.http_url());
    let client = reqwest::Client::new();
    let next = Arc::new(AtomicUsize::new(0));
    let accepted: Arc<Mutex<Vec<u64>>> = Arc::default();
    let refused = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..PUBLISHERS {
        let (client, url, next, accepted, refused) = (
            client.clone(),
            url.clone(),
            next.clone(),
            accepted.clone(),
            refused.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= MESSAGES {
                    return;
                }
                let r = client
                    .post(&url)
                    .json(&json!({ "n": n }))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == StatusCode::NO_CONTENT => {
                        accepted.lock().unwrap().push(n as u64)
                    }
                    _ => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let started = Instant::now();
    for at in KILL_AT {
        while accepted.lock().unwrap().len() < at {
            assert!(
                started.elapsed() < Duration::from_secs(150),
                "publishing stalled at {} accepted\n{}",
                accepted.lock().unwrap().len(),
                publisher.log()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // SIGKILL: no drain, in-flight deliveries are lost by the sidecar.
        drop(subscriber.take());
        tokio::time::sleep(Duration::from_millis(300)).await;
        subscriber = Some(start_subscriber(&res, &sub_id, app_port).await);
    }
    for t in tasks {
        t.await.unwrap();
    }
    let publish_time = started.elapsed();
    let accepted: HashSet<u64> = accepted.lock().unwrap().iter().copied().collect();
    assert!(
        accepted.len() >= MESSAGES * 99 / 100,
        "too many publishes refused ({}) with a healthy broker\n{}",
        refused.load(Ordering::Relaxed),
        publisher.log()
    );
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    loop {
        let missing: Vec<u64> = {
            let seen = seen.lock().unwrap();
            accepted.iter().filter(|n| !seen.contains(n)).copied().collect()
        };
        if missing.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            panic!(
                "{broker}: {} of {} accepted messages never delivered (e.g. {:?})\n---- subscriber ----\n{}",
                missing.len(),
                accepted.len(),
                &missing[..missing.len().min(10)],
                subscriber.as_ref().map(|s| s.log()).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "{broker}: {} accepted, all delivered ({} deliveries, {} redelivered) in {:?}; publishing took {publish_time:?}",
        accepted.len(),
        deliveries.load(Ordering::Relaxed),
        deliveries.load(Ordering::Relaxed).saturating_sub(accepted.len()),
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn no_loss_on_sqlite_across_subscriber_kills() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pubsub.db").display().to_string();
    no_loss(
        "pubsub.sqlite",
        &[
            ("connectionString", &file),
            ("processingTimeout", "2s"),
            ("redeliverInterval", "500ms"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_loss_on_redis_across_subscriber_kills() {
    let host = std::env::var("MECHA_TEST_REDIS_URL").unwrap_or_else(|_| "127.0.0.1:6379".into());
    let host = host.trim_start_matches("redis://").trim_end_matches('/');
    no_loss(
        "pubsub.redis",
        &[
            ("redisHost", host),
            ("processingTimeout", "2s"),
            ("redeliverInterval", "1s"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_loss_on_jetstream_across_subscriber_kills() {
    let url = std::env::var("MECHA_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let stream = format!("REL_{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    no_loss(
        "pubsub.jetstream",
        &[("natsURL", &url), ("streamName", &stream), ("ackWait", "2s")],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_loss_on_rabbitmq_across_subscriber_kills() {
    let url = std::env::var("MECHA_TEST_RABBITMQ_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".into());
    no_loss("pubsub.rabbitmq", &[("connectionString", &url)]).await;
}
