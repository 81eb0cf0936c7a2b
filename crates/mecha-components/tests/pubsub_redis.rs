//! `pubsub.redis` against real Redis servers: the conformance suite and direct checks on the
//! shared server (`MECHA_TEST_REDIS_URL`, default `127.0.0.1:6379`), the reclaiming of a dead
//! consumer's entries, and a restart of a private, persistent `redis-server` while publishing.

#![cfg(feature = "pubsub-redis")]
// Test helpers outside `#[test]` functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "pubsub_redis/server.rs"]
mod server;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mecha_components::pubsub::redis::RedisPubSub;
use mecha_conformance::pubsub::Options;
use mecha_core::Metadata;
use mecha_core::component::{ComponentError, ComponentInit};
use mecha_core::pubsub::{
    Message, MessageHandler, PubSub, PubSubError, PubSubFeature, PublishRequest, SubscribeRequest,
};
use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;

use self::server::PersistentRedis;

/// Redelivery settings small enough for tests.
const FAST: &[(&str, &str)] = &[("redeliverInterval", "300ms"), ("processingTimeout", "1s")];

/// The shared server, `host:port`.
fn shared_address() -> String {
    let raw = std::env::var("MECHA_TEST_REDIS_URL").unwrap_or_else(|_| "127.0.0.1:6379".into());
    raw.trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned()
}

fn init(app_id: &str, metadata: &[(&str, &str)]) -> ComponentInit {
    ComponentInit {
        name: "redis-pubsub".to_owned(),
        metadata: Metadata::new(
            metadata
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<HashMap<_, _>>(),
        ),
        app_id: app_id.to_owned(),
    }
}

async fn broker_at(address: &str, app_id: &str, extra: &[(&str, &str)]) -> Arc<dyn PubSub> {
    let mut md = vec![("redisHost", address)];
    md.extend_from_slice(extra);
    RedisPubSub::create(init(app_id, &md))
        .await
        .unwrap_or_else(|e| panic!("pubsub.redis at {address}: {e}"))
}

async fn broker(app_id: &str, extra: &[(&str, &str)]) -> Arc<dyn PubSub> {
    broker_at(&shared_address(), app_id, extra).await
}

/// A plain client on the shared server.
async fn raw() -> MultiplexedConnection {
    let client = redis::Client::open(format!("redis://{}/", shared_address())).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

fn unique(tag: &str) -> String {
    format!("mecha-pubsub-test-{tag}-{}", uuid::Uuid::new_v4().simple())
}

fn request(topic: &str, max_in_flight: usize) -> SubscribeRequest {
    SubscribeRequest {
        topic: topic.to_owned(),
        metadata: HashMap::new(),
        max_in_flight,
    }
}

fn message(topic: &str, data: &str) -> PublishRequest {
    PublishRequest {
        topic: topic.to_owned(),
        data: Bytes::from(data.to_owned()),
        ..PublishRequest::default()
    }
}

/// A handler forwarding every message to the returned receiver and acknowledging it.
fn collector() -> (MessageHandler, mpsc::UnboundedReceiver<Message>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handler: MessageHandler = Arc::new(move |m| {
        let _ = tx.send(m);
        Box::pin(async { Ok(()) })
    });
    (handler, rx)
}

/// The next message within `within`, or `None`.
async fn next(rx: &mut mpsc::UnboundedReceiver<Message>, within: Duration) -> Option<Message> {
    tokio::time::timeout(within, rx.recv()).await.ok().flatten()
}

/// `n` messages, each within `within` of the previous one; panics naming what is missing.
async fn take(
    rx: &mut mpsc::UnboundedReceiver<Message>,
    n: usize,
    within: Duration,
) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match next(rx, within).await {
            Some(m) => out.push(String::from_utf8(m.data.to_vec()).unwrap()),
            None => panic!("got {} of {n} messages: {out:?}", out.len()),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance() {
    mecha_conformance::pubsub::run(
        // A failed message waits redeliverInterval, then at most one blocking read for a slot.
        Options::new(Duration::from_secs(2)),
        |app_id| async move { broker(&app_id, FAST).await },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_data_metadata_and_content_type() {
    let (topic, app) = (unique("roundtrip"), unique("app"));
    let ps = broker(&app, FAST).await;
    for f in [
        PubSubFeature::MessageMetadata,
        PubSubFeature::Ordered,
        PubSubFeature::Ttl,
    ] {
        assert!(ps.features().contains(&f), "{f:?} not declared");
    }
    let (handler, mut rx) = collector();
    let sub = ps.subscribe(request(&topic, 1), handler).await.unwrap();
    let mut req = message(&topic, "");
    req.data = Bytes::from_static(b"\x00\xffbinary");
    req.content_type = Some("application/octet-stream".into());
    req.metadata.insert("k".into(), "v".into());
    ps.publish(req).await.unwrap();
    let got = next(&mut rx, Duration::from_secs(5))
        .await
        .expect("no message");
    assert_eq!(got.topic, topic);
    assert_eq!(got.data.as_ref(), b"\x00\xffbinary");
    assert_eq!(
        got.content_type.as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(got.metadata.get("k").map(String::as_str), Some("v"));
    sub.stop().await;

    // The entry as a plain client sees it: Dapr's `data` and `metadata` fields.
    let mut c = raw().await;
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(&topic)
        .arg("-")
        .arg("+")
        .query_async(&mut c)
        .await
        .unwrap();
    let entry = &entries.ids[0];
    assert_eq!(entry.get::<Vec<u8>>("data").unwrap(), b"\x00\xffbinary");
    let md: HashMap<String, String> =
        serde_json::from_str(&entry.get::<String>("metadata").unwrap()).unwrap();
    assert_eq!(md.get("k").map(String::as_str), Some("v"));
    // The stopped consumer had nothing pending and left the group.
    let consumers: redis::Value = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(&topic)
        .arg(&app)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(consumers, redis::Value::Array(vec![]));
    let _: () = redis::cmd("DEL")
        .arg(&topic)
        .query_async(&mut c)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_entries_written_by_dapr() {
    let (topic, app) = (unique("dapr"), unique("app"));
    let ps = broker(&app, FAST).await;
    let (handler, mut rx) = collector();
    let sub = ps.subscribe(request(&topic, 1), handler).await.unwrap();
    let mut c = raw().await;
    let _: String = redis::cmd("XADD")
        .arg(&topic)
        .arg("*")
        .arg("data")
        .arg("from dapr")
        .query_async(&mut c)
        .await
        .unwrap();
    let got = next(&mut rx, Duration::from_secs(5))
        .await
        .expect("no message");
    assert_eq!(got.data.as_ref(), b"from dapr");
    assert!(got.metadata.is_empty());
    assert_eq!(got.content_type, None);
    sub.stop().await;
    let _: () = redis::cmd("DEL")
        .arg(&topic)
        .query_async(&mut c)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_share_and_fan_out() {
    let topic = unique("groups");
    let (group_a, group_b) = (unique("a"), unique("b"));
    let a1 = broker(&group_a, FAST).await;
    let a2 = broker(&group_a, FAST).await;
    // Another app in group A through consumerID.
    let a3 = broker(
        &unique("other"),
        &[("consumerID", group_a.as_str()), FAST[0], FAST[1]],
    )
    .await;
    let b = broker(&group_b, FAST).await;
    let (tx, mut rx_a) = mpsc::unbounded_channel::<String>();
    let mut subs = Vec::new();
    for ps in [&a1, &a2, &a3] {
        let tx = tx.clone();
        let handler: MessageHandler = Arc::new(move |m| {
            let _ = tx.send(String::from_utf8(m.data.to_vec()).unwrap());
            Box::pin(async { Ok(()) })
        });
        subs.push(ps.subscribe(request(&topic, 4), handler).await.unwrap());
    }
    let (handler, mut rx_b) = collector();
    subs.push(b.subscribe(request(&topic, 4), handler).await.unwrap());
    let n = 60;
    let results = a1
        .bulk_publish((0..n).map(|i| message(&topic, &i.to_string())).collect())
        .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let mut seen_a = HashSet::new();
    for _ in 0..n {
        let m = tokio::time::timeout(Duration::from_secs(5), rx_a.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(seen_a.insert(m.clone()), "group A got {m} twice");
    }
    let seen_b: HashSet<String> = take(&mut rx_b, n, Duration::from_secs(5))
        .await
        .into_iter()
        .collect();
    assert_eq!(seen_a.len(), n);
    assert_eq!(seen_b.len(), n);
    // Nothing more arrives in group A (no duplicates after acknowledgement).
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), rx_a.recv())
            .await
            .is_err()
    );
    for s in subs {
        s.stop().await;
    }
    let _: () = redis::cmd("DEL")
        .arg(&topic)
        .query_async(&mut raw().await)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_handler_is_redelivered_and_order_is_kept() {
    let (topic, app) = (unique("retry"), unique("app"));
    let ps = broker(&app, FAST).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let c = calls.clone();
    let handler: MessageHandler = Arc::new(move |m: Message| {
        let (tx, c) = (tx.clone(), c.clone());
        Box::pin(async move {
            let data = String::from_utf8(m.data.to_vec()).unwrap();
            if data == "fail-once" && c.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err("first attempt fails".into());
            }
            let _ = tx.send(m);
            Ok(())
        })
    });
    let sub = ps.subscribe(request(&topic, 1), handler).await.unwrap();
    let ordered: Vec<String> = (0..30).map(|i| format!("m{i:02}")).collect();
    for m in &ordered {
        ps.publish(message(&topic, m)).await.unwrap();
    }
    assert_eq!(take(&mut rx, 30, Duration::from_secs(5)).await, ordered);
    let started = Instant::now();
    ps.publish(message(&topic, "fail-once")).await.unwrap();
    let got = take(&mut rx, 1, Duration::from_secs(5)).await;
    assert_eq!(got, ["fail-once"]);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert!(next(&mut rx, Duration::from_millis(1500)).await.is_none());
    sub.stop().await;
    let _: () = redis::cmd("DEL")
        .arg(&topic)
        .query_async(&mut raw().await)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_limit_ttl_and_stop() {
    let (topic, app) = (unique("inflight"), unique("app"));
    let ps = broker(&app, FAST).await;
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let (r, p, d) = (running.clone(), peak.clone(), done.clone());
    let handler: MessageHandler = Arc::new(move |_m| {
        let (r, p, d) = (r.clone(), p.clone(), d.clone());
        Box::pin(async move {
            let now = r.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            r.fetch_sub(1, Ordering::SeqCst);
            d.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
    });
    let sub = ps.subscribe(request(&topic, 3), handler).await.unwrap();
    let results = ps
        .bulk_publish((0..15).map(|i| message(&topic, &i.to_string())).collect())
        .await;
    assert!(results.iter().all(Result::is_ok));
    let deadline = Instant::now() + Duration::from_secs(10);
    while done.load(Ordering::SeqCst) < 15 {
        assert!(Instant::now() < deadline, "only {done:?} of 15 handled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(peak.load(Ordering::SeqCst) <= 3, "peak {peak:?}");
    assert!(peak.load(Ordering::SeqCst) >= 2, "peak {peak:?}");

    // Stop waits for the call in flight.
    ps.publish(message(&topic, "last")).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while running.load(Ordering::SeqCst) == 0 && done.load(Ordering::SeqCst) < 16 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sub.stop().await;
    assert_eq!(running.load(Ordering::SeqCst), 0);
    assert_eq!(done.load(Ordering::SeqCst), 16);

    // TTL: a message that expires while an earlier one is being handled is not delivered.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handler: MessageHandler = Arc::new(move |m: Message| {
        let tx = tx.clone();
        Box::pin(async move {
            if m.data.as_ref() == b"slow" {
                tokio::time::sleep(Duration::from_millis(1500)).await;
            }
            let _ = tx.send(m);
            Ok(())
        })
    });
    let sub = ps.subscribe(request(&topic, 1), handler).await.unwrap();
    ps.publish(message(&topic, "slow")).await.unwrap();
    let mut expiring = message(&topic, "expiring");
    expiring.metadata.insert("ttlInSeconds".into(), "1".into());
    ps.publish(expiring).await.unwrap();
    let mut lasting = message(&topic, "lasting");
    lasting.metadata.insert("ttlInSeconds".into(), "60".into());
    ps.publish(lasting).await.unwrap();
    assert_eq!(
        take(&mut rx, 2, Duration::from_secs(5)).await,
        ["slow", "lasting"]
    );
    assert!(next(&mut rx, Duration::from_millis(800)).await.is_none());
    sub.stop().await;
    let _: () = redis::cmd("DEL")
        .arg(&topic)
        .query_async(&mut raw().await)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_consumer_entries_are_reclaimed() {
    let (topic, group) = (unique("reclaim"), unique("group"));
    let extra = [
        ("consumerID", group.as_str()),
        ("redeliverInterval", "200ms"),
        ("processingTimeout", "1s"),
    ];
    // The first consumer takes the message and never answers, then its sidecar goes away.
    let dying = broker(&unique("dying"), &extra).await;
    let (tx, mut taken) = mpsc::unbounded_channel();
    let handler: MessageHandler = Arc::new(move |m: Message| {
        let _ = tx.send(m);
        Box::pin(std::future::pending())
    });
    let sub = dying.subscribe(request(&topic, 1), handler).await.unwrap();
    dying.publish(message(&topic, "orphan")).await.unwrap();
    let got = next(&mut taken, Duration::from_secs(5))
        .await
        .expect("not taken");
    assert_eq!(got.data.as_ref(), b"orphan");
    let died = Instant::now();
    drop(sub);
    dying.close().await;
    drop(dying);

    // Another member of the group gets it once it has been idle for processingTimeout.
    let heir = broker(&unique("heir"), &extra).await;
    let (handler, mut rx) = collector();
    let sub = heir.subscribe(request(&topic, 1), handler).await.unwrap();
    let got = next(&mut rx, Duration::from_secs(5))
        .await
        .expect("not reclaimed");
    assert_eq!(got.data.as_ref(), b"orphan");
    assert!(
        died.elapsed() >= Duration::from_millis(900),
        "{:?}",
        died.elapsed()
    );
    // Acknowledged now: not delivered again.
    assert!(next(&mut rx, Duration::from_millis(1800)).await.is_none());
    sub.stop().await;
    let _: () = redis::cmd("DEL")
        .arg(&topic)
        .query_async(&mut raw().await)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_len_approx_trims_the_stream() {
    let (topic, app) = (unique("maxlen"), unique("app"));
    let ps = broker(&app, &[("maxLenApprox", "10")]).await;
    let results = ps
        .bulk_publish((0..500).map(|i| message(&topic, &i.to_string())).collect())
        .await;
    assert!(results.iter().all(Result::is_ok));
    let mut c = raw().await;
    let len: u64 = redis::cmd("XLEN")
        .arg(&topic)
        .query_async(&mut c)
        .await
        .unwrap();
    assert!((10..=200).contains(&len), "XLEN {len}");
    let _: () = redis::cmd("DEL")
        .arg(&topic)
        .query_async(&mut c)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_while_publishing_loses_nothing_accepted() {
    let mut server = PersistentRedis::start().await;
    let address = server.address();
    let topic = unique("restart");
    let ps = broker_at(
        &address,
        &unique("app"),
        &[
            ("redeliverInterval", "300ms"),
            ("processingTimeout", "1s"),
            ("dialTimeout", "500ms"),
            ("readTimeout", "1s"),
            ("maxRetryBackoff", "200ms"),
        ],
    )
    .await;
    let (handler, mut rx) = collector();
    let sub = ps.subscribe(request(&topic, 4), handler).await.unwrap();
    // A second group exists but reads nothing until after the restart: what it gets then
    // was kept by the server across the restart.
    let offline = broker_at(&address, &unique("offline"), &[]).await;
    let (handler, _rx) = collector();
    offline
        .subscribe(request(&topic, 4), handler)
        .await
        .unwrap()
        .stop()
        .await;

    let mut accepted = HashSet::new();
    let mut failed = 0;
    for i in 0..20 {
        let data = format!("before-{i}");
        ps.publish(message(&topic, &data)).await.unwrap();
        accepted.insert(data);
    }
    server.kill();
    for i in 0..5 {
        let data = format!("down-{i}");
        let started = Instant::now();
        match ps.publish(message(&topic, &data)).await {
            Ok(()) => {
                accepted.insert(data);
            }
            Err(PubSubError::Backend(e)) => {
                assert!(!e.is_empty());
                failed += 1;
            }
            Err(e) => panic!("not a backend error: {e:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "publish took {:?}",
            started.elapsed()
        );
    }
    assert!(failed > 0, "no publish failed while Redis was down");
    server.restart().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut i = 0;
    let mut after = 0;
    while after < 20 {
        let data = format!("after-{i}");
        i += 1;
        match ps.publish(message(&topic, &data)).await {
            Ok(()) => {
                accepted.insert(data);
                after += 1;
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "publishing did not resume: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let mut seen = HashSet::new();
    while !accepted.is_subset(&seen) {
        match next(&mut rx, Duration::from_secs(10)).await {
            Some(m) => {
                seen.insert(String::from_utf8(m.data.to_vec()).unwrap());
            }
            None => {
                let missing: Vec<_> = accepted.difference(&seen).collect();
                panic!("never delivered: {missing:?}");
            }
        }
    }
    sub.stop().await;
    ps.close().await;

    let (handler, mut rx_offline) = collector();
    let sub = offline
        .subscribe(request(&topic, 4), handler)
        .await
        .unwrap();
    let mut seen = HashSet::new();
    while !accepted.is_subset(&seen) {
        match next(&mut rx_offline, Duration::from_secs(10)).await {
            Some(m) => {
                seen.insert(String::from_utf8(m.data.to_vec()).unwrap());
            }
            None => {
                let missing: Vec<_> = accepted.difference(&seen).collect();
                panic!("lost in the restart: {missing:?}");
            }
        }
    }
    sub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_deleted_under_a_subscription_is_recreated() {
    let (topic, app) = (unique("deleted"), unique("app"));
    let ps = broker(&app, FAST).await;
    let (handler, mut rx) = collector();
    let sub = ps.subscribe(request(&topic, 1), handler).await.unwrap();
    ps.publish(message(&topic, "one")).await.unwrap();
    assert_eq!(take(&mut rx, 1, Duration::from_secs(5)).await, ["one"]);
    let mut c = raw().await;
    let _: () = redis::cmd("DEL")
        .arg(&topic)
        .query_async(&mut c)
        .await
        .unwrap();
    // The reader notices the missing group and creates it again; publishing meanwhile
    // recreates the stream, so retry until the group sees the message.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut i = 0;
    loop {
        ps.publish(message(&topic, &format!("two-{i}")))
            .await
            .unwrap();
        if let Some(m) = next(&mut rx, Duration::from_millis(500)).await {
            assert!(m.data.starts_with(b"two-"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no delivery after the stream was deleted"
        );
        i += 1;
    }
    sub.stop().await;
    let _: () = redis::cmd("DEL")
        .arg(&topic)
        .query_async(&mut c)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_metadata_and_requests_are_refused() {
    let address = shared_address();
    let err = |r: Result<Arc<dyn PubSub>, ComponentError>| match r {
        Ok(_) => panic!("accepted"),
        Err(e) => e,
    };
    let e = err(RedisPubSub::create(init("app", &[])).await);
    assert!(
        matches!(e, ComponentError::MissingField("redisHost")),
        "{e:?}"
    );
    for (field, value) in [
        ("processingTimeout", "soon"),
        ("redeliverInterval", "-5s"),
        ("queueDepth", "0"),
        ("queueDepth", "many"),
        ("maxLenApprox", "-1"),
        ("streamTTL", "a while"),
        ("concurrency", "x"),
        ("redisType", "cluster"),
        ("enableTLS", "perhaps"),
    ] {
        let e =
            err(RedisPubSub::create(init("app", &[("redisHost", &address), (field, value)])).await);
        match e {
            ComponentError::InvalidField { field: f, .. } => assert_eq!(f, field, "{value}"),
            other => panic!("{field}={value}: {other:?}"),
        }
    }
    // Nothing listens on port 1.
    let started = Instant::now();
    let e = err(RedisPubSub::create(init(
        "app",
        &[("redisHost", "127.0.0.1:1"), ("dialTimeout", "500ms")],
    ))
    .await);
    assert!(matches!(e, ComponentError::Init(_)), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(10));

    let ps = broker("app", &[]).await;
    assert!(matches!(
        ps.publish(message("", "x")).await,
        Err(PubSubError::BadRequest(_))
    ));
    let (handler, _rx) = collector();
    assert!(matches!(
        ps.subscribe(request("", 1), handler).await,
        Err(PubSubError::BadRequest(_))
    ));
}
