//! `pubsub.jetstream` against real NATS servers: the pub/sub conformance suite and direct checks
//! on the shared server (`MECHA_TEST_NATS_URL`, default `nats://127.0.0.1:4222`) with fresh
//! streams, topics and groups per test (the streams are deleted at the end), and a server
//! restart on a private `nats-server` process.

#![cfg(feature = "pubsub-jetstream")]
// Test helpers outside `#[test]` functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mecha_components::pubsub::jetstream::JetStreamPubSub;
use mecha_core::Metadata;
use mecha_core::component::{ComponentError, ComponentInit};
use mecha_core::pubsub::{
    HandlerFuture, Message, MessageHandler, PubSub, PubSubError, PublishRequest, SubscribeRequest,
    Subscription,
};

/// The shared server.
fn nats_url() -> String {
    std::env::var("MECHA_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// A fresh name.
fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

fn init(app_id: &str, metadata: &[(&str, &str)]) -> ComponentInit {
    ComponentInit {
        name: "jetstream".to_owned(),
        metadata: Metadata::new(
            metadata
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<HashMap<_, _>>(),
        ),
        app_id: app_id.to_owned(),
    }
}

async fn broker(app_id: &str, metadata: &[(&str, &str)]) -> Arc<dyn PubSub> {
    JetStreamPubSub::create(init(app_id, metadata))
        .await
        .unwrap_or_else(|e| panic!("cannot create the broker: {e}"))
}

/// A plain JetStream client on `url`, to look at and clean up what the broker did.
async fn admin(url: &str) -> async_nats::jetstream::Context {
    async_nats::jetstream::new(async_nats::connect(url).await.unwrap())
}

fn request(topic: &str, data: impl Into<Bytes>) -> PublishRequest {
    PublishRequest {
        topic: topic.to_owned(),
        data: data.into(),
        content_type: None,
        metadata: HashMap::new(),
    }
}

async fn subscribe(
    broker: &dyn PubSub,
    topic: &str,
    max_in_flight: usize,
    handler: MessageHandler,
) -> Subscription {
    broker
        .subscribe(
            SubscribeRequest {
                topic: topic.to_owned(),
                metadata: HashMap::new(),
                max_in_flight,
            },
            handler,
        )
        .await
        .unwrap_or_else(|e| panic!("subscribe to {topic} failed: {e}"))
}

/// A handler recording every message and accepting it.
fn recorder() -> (MessageHandler, Arc<Mutex<Vec<Message>>>) {
    let seen: Arc<Mutex<Vec<Message>>> = Arc::default();
    let s = seen.clone();
    let handler: MessageHandler = Arc::new(move |m: Message| -> HandlerFuture {
        s.lock().unwrap().push(m);
        Box::pin(async { Ok(()) })
    });
    (handler, seen)
}

fn payloads(seen: &Mutex<Vec<Message>>) -> HashSet<Bytes> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|m| m.data.clone())
        .collect()
}

async fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "waited {within:?} for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance() {
    // Every topic of the suite goes into one stream of this run (its subjects are added as
    // topics appear), deleted at the end.
    let stream = unique("mecha-conformance");
    let url = nats_url();
    let factory = {
        let (stream, url) = (stream.clone(), url.clone());
        move |app_id: String| {
            let (stream, url) = (stream.clone(), url.clone());
            async move {
                broker(
                    &app_id,
                    &[
                        ("natsURL", &url),
                        ("streamName", &stream),
                        ("redeliverInterval", "200ms"),
                    ],
                )
                .await
            }
        }
    };
    mecha_conformance::pubsub::run(
        mecha_conformance::pubsub::Options::new(Duration::from_secs(2)),
        factory,
    )
    .await;
    admin(&url).await.delete_stream(&stream).await.unwrap();
}

/// Without a stream, publishing creates one named after the topic (file storage, limits
/// retention); a new group with `deliverPolicy: all` gets what was published before it
/// existed, a new group by default only what comes after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derived_stream_and_deliver_policies() {
    let url = nats_url();
    let topic = format!("mecha.{}", unique("policies"));
    let publisher = broker(&unique("publisher"), &[("natsURL", &url)]).await;
    publisher.publish(request(&topic, "early")).await.unwrap();

    let js = admin(&url).await;
    let stream_name = js.stream_by_subject(topic.clone()).await.unwrap();
    assert!(
        stream_name.starts_with("mecha_policies-"),
        "stream named after the topic: {stream_name}"
    );
    let mut stream = js.get_stream(&stream_name).await.unwrap();
    let config = stream.info().await.unwrap().config.clone();
    assert_eq!(config.subjects, vec![topic.clone()]);
    assert_eq!(
        config.storage,
        async_nats::jetstream::stream::StorageType::File
    );
    assert_eq!(
        config.retention,
        async_nats::jetstream::stream::RetentionPolicy::Limits
    );

    let all = broker(
        &unique("all"),
        &[("natsURL", &url), ("deliverPolicy", "all")],
    )
    .await;
    let from_seq = broker(&unique("seq"), &[("natsURL", &url), ("startSequence", "1")]).await;
    let new = broker(&unique("new"), &[("natsURL", &url)]).await;
    let (h_all, seen_all) = recorder();
    let (h_seq, seen_seq) = recorder();
    let (h_new, seen_new) = recorder();
    let sub_all = subscribe(&*all, &topic, 1, h_all).await;
    let sub_seq = subscribe(&*from_seq, &topic, 1, h_seq).await;
    let sub_new = subscribe(&*new, &topic, 1, h_new).await;
    publisher.publish(request(&topic, "late")).await.unwrap();

    let both: HashSet<Bytes> = [Bytes::from("early"), Bytes::from("late")].into();
    wait_until(
        "deliverPolicy all to get both",
        Duration::from_secs(10),
        || payloads(&seen_all) == both && payloads(&seen_seq) == both,
    )
    .await;
    wait_until(
        "the default group to get the late one",
        Duration::from_secs(10),
        || !payloads(&seen_new).is_empty(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(payloads(&seen_new), [Bytes::from("late")].into());

    // One durable pull consumer per group and topic.
    let consumers: Vec<String> = {
        use futures::TryStreamExt;
        stream.consumer_names().try_collect().await.unwrap()
    };
    assert_eq!(consumers.len(), 3, "{consumers:?}");

    for sub in [sub_all, sub_seq, sub_new] {
        sub.stop().await;
    }
    js.delete_stream(&stream_name).await.unwrap();
}

/// A subscriber that took a message and died (its handler never answered, its broker was
/// dropped): the message goes to another subscriber of the group after `ackWait`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivery_after_a_subscriber_died() {
    let url = nats_url();
    let stream = unique("mecha-died");
    let topic = unique("died");
    let group = unique("group");
    let md = [
        ("natsURL", url.as_str()),
        ("streamName", stream.as_str()),
        ("ackWait", "2s"),
    ];
    let first = broker(&group, &md).await;
    let took: Arc<Mutex<Option<Instant>>> = Arc::default();
    let hung: MessageHandler = {
        let took = took.clone();
        Arc::new(move |_m: Message| -> HandlerFuture {
            *took.lock().unwrap() = Some(Instant::now());
            Box::pin(std::future::pending())
        })
    };
    let sub = subscribe(&*first, &topic, 1, hung).await;
    first.publish(request(&topic, "orphan")).await.unwrap();
    wait_until(
        "the first subscriber to take it",
        Duration::from_secs(10),
        || took.lock().unwrap().is_some(),
    )
    .await;
    drop(sub);
    drop(first);

    let second = broker(&group, &md).await;
    let (handler, seen) = recorder();
    let sub = subscribe(&*second, &topic, 1, handler).await;
    wait_until(
        "the other subscriber to get it",
        Duration::from_secs(10),
        || !seen.lock().unwrap().is_empty(),
    )
    .await;
    let after = took.lock().unwrap().unwrap().elapsed();
    assert!(
        after >= Duration::from_millis(1500),
        "redelivered after {after:?}, before ackWait"
    );
    assert_eq!(payloads(&seen), [Bytes::from("orphan")].into());
    sub.stop().await;
    second.close().await;
    admin(&url).await.delete_stream(&stream).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_bad_metadata_and_requests() {
    let url = nats_url();
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[], "natsURL"),
        (&[("natsURL", &url), ("ackPolicy", "all")], "ackPolicy"),
        (&[("natsURL", &url), ("ackWait", "soon")], "ackWait"),
        (
            &[("natsURL", &url), ("deliverPolicy", "sequence")],
            "startSequence",
        ),
        (
            &[("natsURL", &url), ("deliverPolicy", "sometimes")],
            "deliverPolicy",
        ),
        (
            &[("natsURL", &url), ("startSequence", "0")],
            "startSequence",
        ),
        (
            &[("natsURL", &url), ("startTime", "yesterday")],
            "startTime",
        ),
        (
            &[("natsURL", &url), ("deliverAll", "perhaps")],
            "deliverAll",
        ),
        (&[("natsURL", &url), ("maxDeliver", "-3")], "maxDeliver"),
        (&[("natsURL", &url), ("backOff", "1s, x")], "backOff"),
        (
            &[("natsURL", &url), ("backOff", "1s,2s"), ("maxDeliver", "2")],
            "maxDeliver",
        ),
        (&[("natsURL", &url), ("concurrency", "many")], "concurrency"),
        (&[("natsURL", &url), ("replicas", "0")], "replicas"),
        (&[("natsURL", &url), ("streamName", "a.b")], "streamName"),
        (
            &[("natsURL", &url), ("jwt", "eyJ"), ("seedKey", "SU")],
            "jwt",
        ),
        (
            &[("natsURL", &url), ("tls_client_cert", "/x.crt")],
            "tls_client_key",
        ),
        (
            &[("natsURL", &url), ("domain", "a"), ("apiPrefix", "b")],
            "apiPrefix",
        ),
        (
            &[("natsURL", &url), ("redeliverInterval", "-1s")],
            "redeliverInterval",
        ),
    ];
    for (md, field) in cases {
        let err = match JetStreamPubSub::create(init("bad", md)).await {
            Ok(_) => panic!("{md:?} was accepted"),
            Err(e) => e,
        };
        match &err {
            ComponentError::MissingField(f) => assert_eq!(f, field, "{md:?}: {err}"),
            ComponentError::InvalidField { field: f, .. } => {
                assert_eq!(f, field, "{md:?}: {err}")
            }
            ComponentError::Init(_) => panic!("{md:?}: unexpected {err}"),
        }
    }

    // Nobody listens there: a clear initialisation error, quickly.
    let dead = format!("nats://127.0.0.1:{}", free_port());
    let started = Instant::now();
    let err = match JetStreamPubSub::create(init("bad", &[("natsURL", &dead)])).await {
        Ok(_) => panic!("connected to {dead}"),
        Err(e) => e,
    };
    assert!(
        matches!(&err, ComponentError::Init(m) if m.contains("cannot connect")),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    // Requests the broker cannot carry are bad requests, not backend failures.
    let good = broker("bad", &[("natsURL", &url)]).await;
    for topic in ["", "a b", "a..b", "orders.*", "orders.>", "$JS.API.INFO"] {
        let err = good.publish(request(topic, "x")).await.unwrap_err();
        assert!(matches!(err, PubSubError::BadRequest(_)), "{topic}: {err}");
        let (handler, _) = recorder();
        let err = good
            .subscribe(
                SubscribeRequest {
                    topic: topic.to_owned(),
                    metadata: HashMap::new(),
                    max_in_flight: 1,
                },
                handler,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, PubSubError::BadRequest(_)), "{topic}: {err}");
    }
    let mut req = request(&unique("headers"), "x");
    req.metadata.insert("bad key".into(), "v".into());
    let err = good.publish(req).await.unwrap_err();
    assert!(matches!(err, PubSubError::BadRequest(_)), "{err}");
    let mut req = request(&unique("headers"), "x");
    req.metadata.insert("key".into(), "two\r\nlines".into());
    let err = good.publish(req).await.unwrap_err();
    assert!(matches!(err, PubSubError::BadRequest(_)), "{err}");
    good.close().await;
}

/// Publishing on while a private server is killed and started again on the same store:
/// publishes fail with a backend error within the publish timeout while it is down, every
/// publish that returned `Ok` is delivered, and delivery resumes by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_during_publishing() {
    let mut server = PrivateNats::start().await;
    let url = server.url();
    let topic = unique("restart");
    let publish_timeout = Duration::from_secs(1);
    let ps = broker(
        "restart-tests",
        &[
            ("natsURL", &url),
            ("publishTimeout", "1s"),
            ("ackWait", "3s"),
        ],
    )
    .await;
    let (handler, seen) = recorder();
    let sub = subscribe(&*ps, &topic, 4, handler).await;

    // Publish continuously in the background.
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    type Outcome = (Bytes, Result<(), PubSubError>, Duration);
    let publisher = {
        let (ps, topic, running) = (ps.clone(), topic.clone(), running.clone());
        tokio::spawn(async move {
            let mut outcomes: Vec<Outcome> = Vec::new();
            let mut i = 0;
            while running.load(std::sync::atomic::Ordering::SeqCst) {
                let data = Bytes::from(format!("m-{i}"));
                i += 1;
                let started = Instant::now();
                let result = ps.publish(request(&topic, data.clone())).await;
                outcomes.push((data, result, started.elapsed()));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            outcomes
        })
    };

    tokio::time::sleep(Duration::from_millis(700)).await;
    server.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.restart().await;
    // Publish on until several messages were accepted after the restart.
    let restarted_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    running.store(false, std::sync::atomic::Ordering::SeqCst);
    let outcomes = publisher.await.unwrap();

    let slowest = outcomes.iter().map(|o| o.2).max().unwrap();
    assert!(
        slowest <= publish_timeout + Duration::from_secs(2),
        "a publish took {slowest:?}"
    );
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.1.is_err()).collect();
    assert!(
        !failed.is_empty(),
        "no publish failed while the server was down"
    );
    for (data, result, _) in &failed {
        assert!(
            matches!(result, Err(PubSubError::Backend(_))),
            "{data:?}: {result:?}"
        );
    }
    let accepted: HashSet<Bytes> = outcomes
        .iter()
        .filter(|o| o.1.is_ok())
        .map(|o| o.0.clone())
        .collect();
    let last_failure = outcomes.iter().rposition(|o| o.1.is_err()).unwrap();
    let accepted_after = outcomes[last_failure + 1..]
        .iter()
        .filter(|o| o.1.is_ok())
        .count();
    assert!(
        accepted_after >= 5,
        "only {accepted_after} publishes succeeded after the restart (within {:?})",
        restarted_at.elapsed()
    );
    wait_until(
        "every accepted message to be delivered",
        Duration::from_secs(20),
        || payloads(&seen).is_superset(&accepted),
    )
    .await;
    sub.stop().await;
    ps.close().await;
}

/// A private `nats-server` with JetStream, killed on drop.
struct PrivateNats {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateNats {
    async fn start() -> Self {
        let mut server = Self {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        server.restart().await;
        server
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server (again) on the same port and store, and waits until it accepts
    /// connections.
    async fn restart(&mut self) {
        self.kill();
        let child = Command::new("/usr/sbin/nats-server")
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start nats-server: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "nats-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}
