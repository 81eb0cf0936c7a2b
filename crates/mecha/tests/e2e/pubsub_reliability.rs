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
                let r = client.post(&url).json(&json!({ "n": n })).send().await;
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
            accepted
                .iter()
                .filter(|n| !seen.contains(n))
                .copied()
                .collect()
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
        deliveries
            .load(Ordering::Relaxed)
            .saturating_sub(accepted.len()),
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
    let url =
        std::env::var("MECHA_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let stream = format!("REL_{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    no_loss(
        "pubsub.jetstream",
        &[
            ("natsURL", &url),
            ("streamName", &stream),
            ("ackWait", "2s"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_loss_on_rabbitmq_across_subscriber_kills() {
    let url = std::env::var("MECHA_TEST_RABBITMQ_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".into());
    no_loss("pubsub.rabbitmq", &[("connectionString", &url)]).await;
}

/// Two replicas of one app id (two sidecars, two app processes) share a topic through one
/// SQLite file; a different app gets every message.
#[tokio::test(flavor = "multi_thread")]
async fn replicas_share_and_other_apps_each_get_everything_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pubsub.db").display().to_string();
    let res = ResourcesDir::new().with(
        "ps.yaml",
        &component("ps", "pubsub.sqlite", &[("connectionString", &file)]),
    );
    let topic = format!("shared-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let (port1, seen1, _) = subscriber_app(topic.clone()).await;
    let (port2, seen2, _) = subscriber_app(topic.clone()).await;
    let (port3, seen3, _) = subscriber_app(topic.clone()).await;
    let _r1 = start_subscriber(&res, "replicated", port1).await;
    let _r2 = start_subscriber(&res, "replicated", port2).await;
    let _other = start_subscriber(&res, "other-app", port3).await;
    let publisher = MechaProcess::builder(MECHA)
        .app_id("group-publisher")
        .resources(res.path())
        .start()
        .await;
    let c = reqwest::Client::new();
    const N: u64 = 200;
    for n in 0..N {
        let r = c
            .post(format!("{}/v1.0/publish/ps/{topic}", publisher.http_url()))
            .json(&json!({ "n": n }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }
    let all: HashSet<u64> = (0..N).collect();
    mecha_test_support::eventually!(
        Duration::from_secs(30),
        {
            let union: HashSet<u64> = seen1
                .lock()
                .unwrap()
                .union(&seen2.lock().unwrap())
                .copied()
                .collect();
            union == all && *seen3.lock().unwrap() == all
        },
        "replicas got {} + {}, the other app {} of {N}",
        seen1.lock().unwrap().len(),
        seen2.lock().unwrap().len(),
        seen3.lock().unwrap().len()
    );
    let (a, b) = (seen1.lock().unwrap().len(), seen2.lock().unwrap().len());
    assert!(a > 0 && b > 0, "one replica got nothing: {a} / {b}");
    assert!(
        a + b < 2 * N as usize,
        "each replica got every message: the group is not shared"
    );
}

/// The broker (a private NATS server) restarts while the sidecar publishes: publishes fail with
/// ERR_PUBSUB_PUBLISH_MESSAGE while it is down, every accepted message is delivered, and
/// delivery resumes by itself.
#[tokio::test(flavor = "multi_thread")]
async fn broker_restart_during_publishing_loses_nothing_accepted() {
    let store = tempfile::tempdir().unwrap();
    let port = mecha_test_support::free_port();
    let start_nats = || {
        std::process::Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(store.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server must be installed (.ci/run installs it)")
    };
    let wait_port = || async {
        mecha_test_support::eventually!(
            Duration::from_secs(10),
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok(),
            "nats-server did not start"
        );
    };
    let mut nats = start_nats();
    wait_port().await;
    let url = format!("nats://127.0.0.1:{port}");
    let res = ResourcesDir::new().with(
        "ps.yaml",
        &component(
            "ps",
            "pubsub.jetstream",
            &[
                ("natsURL", &url),
                ("streamName", "RESTART"),
                ("ackWait", "2s"),
                ("publishTimeout", "1s"),
            ],
        ),
    );
    let topic = "restart-topic".to_owned();
    let (app_port, seen, _) = subscriber_app(topic.clone()).await;
    let sub = start_subscriber(&res, "restart-sub", app_port).await;
    let publisher = MechaProcess::builder(MECHA)
        .app_id("restart-pub")
        .resources(res.path())
        .start()
        .await;
    let c = reqwest::Client::new();
    let publish_url = format!("{}/v1.0/publish/ps/{topic}", publisher.http_url());
    let mut accepted = HashSet::new();
    let mut refused_codes = HashSet::new();
    let mut n = 0u64;
    let mut publish_some =
        async |count: u64, accepted: &mut HashSet<u64>, codes: &mut HashSet<String>| {
            for _ in 0..count {
                let r = c
                    .post(&publish_url)
                    .json(&json!({ "n": n }))
                    .send()
                    .await
                    .unwrap();
                if r.status() == StatusCode::NO_CONTENT {
                    accepted.insert(n);
                } else {
                    let status = r.status();
                    let body: Value = r.json().await.unwrap_or(Value::Null);
                    codes.insert(format!(
                        "{status} {}",
                        body["errorCode"].as_str().unwrap_or("")
                    ));
                }
                n += 1;
            }
        };
    publish_some(200, &mut accepted, &mut refused_codes).await;
    let _ = nats.kill();
    let _ = nats.wait();
    publish_some(10, &mut accepted, &mut refused_codes).await;
    assert!(
        !refused_codes.is_empty(),
        "publishes were accepted while the broker was down"
    );
    assert_eq!(
        refused_codes.iter().collect::<Vec<_>>(),
        vec!["500 Internal Server Error ERR_PUBSUB_PUBLISH_MESSAGE"],
    );
    nats = start_nats();
    wait_port().await;
    // Publishing works again once the client has reconnected.
    mecha_test_support::eventually!(
        Duration::from_secs(20),
        {
            let before = accepted.len();
            publish_some(1, &mut accepted, &mut refused_codes).await;
            accepted.len() > before
        },
        "publishing did not recover after the broker restart\n{}",
        publisher.log()
    );
    publish_some(200, &mut accepted, &mut refused_codes).await;
    mecha_test_support::eventually!(
        Duration::from_secs(30),
        accepted.iter().all(|n| seen.lock().unwrap().contains(n)),
        "{} of {} accepted messages not delivered after the restart\n{}",
        accepted
            .iter()
            .filter(|n| !seen.lock().unwrap().contains(n))
            .count(),
        accepted.len(),
        sub.log()
    );
    let _ = nats.kill();
    let _ = nats.wait();
}
