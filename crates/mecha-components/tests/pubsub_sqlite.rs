//! `pubsub.sqlite`: the pub/sub conformance suite on a temporary file, two brokers sharing one
//! file as two sidecars of one app would, redelivery after a subscriber crashed, durability
//! across a restart, and refused metadata.

#![cfg(feature = "pubsub-sqlite")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mecha_components::pubsub::sqlite::SqlitePubSub;
use mecha_core::Metadata;
use mecha_core::component::{ComponentError, ComponentInit};
use mecha_core::pubsub::{
    Message, MessageHandler, PubSub, PublishRequest, SubscribeRequest, Subscription,
};

fn init(connection: &str, app_id: &str, extra: &[(&str, &str)]) -> ComponentInit {
    let mut md = HashMap::from([
        ("connectionString".to_owned(), connection.to_owned()),
        ("redeliverInterval".to_owned(), "200ms".to_owned()),
    ]);
    md.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    ComponentInit {
        name: "pubsub".into(),
        metadata: Metadata::new(md),
        app_id: app_id.into(),
    }
}

async fn open(connection: &str, app_id: &str, extra: &[(&str, &str)]) -> Arc<dyn PubSub> {
    SqlitePubSub::create(init(connection, app_id, extra))
        .await
        .unwrap()
}

fn path_of(file: &Path) -> String {
    file.display().to_string()
}

/// A `file:` URI for the same file: a broker opened with it does not share the in-process
/// wake-ups of one opened with the plain path, as if it ran in another process.
fn uri_of(file: &Path) -> String {
    format!("file:{}", file.display())
}

fn request(topic: &str, data: impl Into<Bytes>) -> PublishRequest {
    PublishRequest {
        topic: topic.into(),
        data: data.into(),
        ..Default::default()
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
                topic: topic.into(),
                metadata: HashMap::new(),
                max_in_flight,
            },
            handler,
        )
        .await
        .unwrap()
}

/// A handler recording each payload, pausing `pause` before acknowledging.
fn recorder(pause: Duration) -> (MessageHandler, Arc<Mutex<Vec<Bytes>>>) {
    let got: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let g = got.clone();
    let handler: MessageHandler = Arc::new(move |m: Message| {
        g.lock().unwrap().push(m.data);
        Box::pin(async move {
            tokio::time::sleep(pause).await;
            Ok(())
        })
    });
    (handler, got)
}

async fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "waited {within:?} for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn topic() -> String {
    format!("topic-{}", uuid::Uuid::new_v4().simple())
}

#[tokio::test(flavor = "multi_thread")]
async fn pubsub_conformance_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let file = path_of(&dir.path().join("nested/pubsub.db"));
    let options = mecha_conformance::pubsub::Options::new(Duration::from_secs(1));
    mecha_conformance::pubsub::run(options, |app_id| {
        let file = file.clone();
        async move { open(&file, &app_id, &[("pollInterval", "50ms")]).await }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn in_memory_database_delivers() {
    let broker = open(":memory:", "app", &[]).await;
    let topic = topic();
    let (handler, got) = recorder(Duration::ZERO);
    let sub = subscribe(&*broker, &topic, 1, handler).await;
    broker.publish(request(&topic, "hello")).await.unwrap();
    wait_until("the message", Duration::from_secs(5), || {
        !got.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(got.lock().unwrap()[0].as_ref(), b"hello");
    sub.stop().await;
    broker.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_brokers_on_one_file_share_messages() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shared.db");
    let fast = [("pollInterval", "10ms")];
    let a = open(&path_of(&file), "app", &fast).await;
    let b = open(&uri_of(&file), "app", &fast).await;
    let topic = topic();
    let pause = Duration::from_millis(20);
    let (handler_a, got_a) = recorder(pause);
    let (handler_b, got_b) = recorder(pause);
    let sub_a = subscribe(&*a, &topic, 1, handler_a).await;
    let sub_b = subscribe(&*b, &topic, 1, handler_b).await;
    let sent: HashSet<Bytes> = (0..40).map(|i| Bytes::from(format!("m-{i}"))).collect();
    let results = a
        .bulk_publish(sent.iter().map(|d| request(&topic, d.clone())).collect())
        .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    wait_until("every message", Duration::from_secs(10), || {
        got_a.lock().unwrap().len() + got_b.lock().unwrap().len() >= 40
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (got_a, got_b) = (got_a.lock().unwrap().clone(), got_b.lock().unwrap().clone());
    assert!(
        !got_a.is_empty() && !got_b.is_empty(),
        "a: {got_a:?}, b: {got_b:?}"
    );
    assert_eq!(
        got_a.len() + got_b.len(),
        40,
        "each message is delivered once"
    );
    let union: HashSet<Bytes> = got_a.into_iter().chain(got_b).collect();
    assert_eq!(union, sent);
    sub_a.stop().await;
    sub_b.stop().await;
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn message_of_a_crashed_subscriber_is_delivered_again() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("crash.db");
    let settings = [("processingTimeout", "1s"), ("pollInterval", "20ms")];
    let topic = topic();
    let first = open(&path_of(&file), "app", &settings).await;
    let (tx, rx) = tokio::sync::oneshot::channel::<Instant>();
    let tx = Arc::new(Mutex::new(Some(tx)));
    // A handler that never answers, as if the sidecar died while the app was busy.
    let hang: MessageHandler = Arc::new(move |_m: Message| {
        if let Some(tx) = tx.lock().unwrap().take() {
            let _ = tx.send(Instant::now());
        }
        Box::pin(futures::future::pending())
    });
    let sub = subscribe(&*first, &topic, 1, hang).await;
    first.publish(request(&topic, "lost?")).await.unwrap();
    let claimed_at = tokio::time::timeout(Duration::from_secs(5), rx)
        .await
        .unwrap()
        .unwrap();
    drop(sub);
    drop(first);

    let second = open(&uri_of(&file), "app", &settings).await;
    let (handler, got) = recorder(Duration::ZERO);
    let sub = subscribe(&*second, &topic, 1, handler).await;
    wait_until("the redelivery", Duration::from_secs(5), || {
        !got.lock().unwrap().is_empty()
    })
    .await;
    let waited = claimed_at.elapsed();
    assert_eq!(got.lock().unwrap()[0].as_ref(), b"lost?");
    assert!(
        waited >= Duration::from_millis(900),
        "delivered again after {waited:?}, before the processing timeout"
    );
    sub.stop().await;
    second.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = path_of(&dir.path().join("restart.db"));
    let topic = topic();
    let first = open(&file, "app", &[]).await;
    let (handler, _) = recorder(Duration::ZERO);
    subscribe(&*first, &topic, 1, handler).await.stop().await;
    for i in 0..3 {
        first
            .publish(request(&topic, format!("kept-{i}")))
            .await
            .unwrap();
    }
    first.close().await;
    drop(first);

    let second = open(&file, "app", &[]).await;
    let (handler, got) = recorder(Duration::ZERO);
    let sub = subscribe(&*second, &topic, 1, handler).await;
    wait_until("the stored messages", Duration::from_secs(5), || {
        got.lock().unwrap().len() >= 3
    })
    .await;
    let expected: Vec<Bytes> = (0..3).map(|i| Bytes::from(format!("kept-{i}"))).collect();
    assert_eq!(*got.lock().unwrap(), expected, "in publish order");
    sub.stop().await;
    second.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_metadata_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = path_of(&dir.path().join("bad.db"));
    let missing = ComponentInit {
        name: "pubsub".into(),
        metadata: Metadata::default(),
        app_id: "app".into(),
    };
    assert!(matches!(
        SqlitePubSub::create(missing).await,
        Err(ComponentError::MissingField("connectionString"))
    ));
    for (key, value) in [
        ("processingTimeout", "soon"),
        ("processingTimeout", "0"),
        ("pollInterval", "0"),
        ("redeliverInterval", "-1s"),
        ("tableName", "bad-name"),
        ("busyTimeout", "x"),
    ] {
        match SqlitePubSub::create(init(&file, "app", &[(key, value)])).await {
            Err(ComponentError::InvalidField { field, reason }) => {
                assert_eq!(field, key, "{reason}");
                assert!(!reason.is_empty());
            }
            Err(other) => panic!("{key}={value}: unexpected error {other}"),
            Ok(_) => panic!("{key}={value} was accepted"),
        }
    }
}
