//! `pubsub.rabbitmq` and `pubsub.mqtt3` against real brokers: the shared RabbitMQ
//! (`MECHA_TEST_RABBITMQ_URL`, default `amqp://guest:guest@127.0.0.1:5672`) and Mosquitto
//! (`MECHA_TEST_MQTT_URL`, default `tcp://127.0.0.1:1883`), with fresh topics and app ids per
//! test; the pub/sub conformance suite on both; a broker restart on a private `mosquitto`; a
//! RabbitMQ connection cut by a TCP proxy in the test.

#![cfg(all(feature = "pubsub-mqtt3", feature = "pubsub-rabbitmq"))]
// Test helpers outside `#[test]` functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "pubsub_brokers/mqtt.rs"]
mod mqtt;
#[path = "pubsub_brokers/rabbitmq.rs"]
mod rabbitmq;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use mecha_core::Metadata;
use mecha_core::component::ComponentInit;
use mecha_core::pubsub::{
    Message, MessageHandler, PubSub, PublishRequest, SubscribeRequest, Subscription,
};
use tokio::sync::mpsc;

/// A component init with plain metadata.
fn init(app_id: &str, metadata: &[(&str, &str)]) -> ComponentInit {
    ComponentInit {
        name: "pubsub".to_owned(),
        metadata: Metadata::new(
            metadata
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<HashMap<_, _>>(),
        ),
        app_id: app_id.to_owned(),
    }
}

/// A fresh name for topics and app ids.
fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A handler recording every delivery (and whether it was accepted) that refuses the first
/// `fail_first` ones.
fn recorder(fail_first: usize) -> (MessageHandler, mpsc::UnboundedReceiver<(Message, bool)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let left = Arc::new(AtomicUsize::new(fail_first));
    let handler: MessageHandler = Arc::new(move |m: Message| {
        let fail = left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let _ = tx.send((m, !fail));
        Box::pin(async move {
            if fail {
                Err("refused by the test".to_owned())
            } else {
                Ok(())
            }
        })
    });
    (handler, rx)
}

/// The next delivery, failing the test after `within`.
async fn next(
    rx: &mut mpsc::UnboundedReceiver<(Message, bool)>,
    within: Duration,
) -> (Message, bool) {
    tokio::time::timeout(within, rx.recv())
        .await
        .expect("no message arrived in time")
        .expect("the handler was dropped")
}

/// Collects accepted payloads until `want` distinct ones arrived, failing after `within`.
async fn accepted_until(
    rx: &mut mpsc::UnboundedReceiver<(Message, bool)>,
    want: &std::collections::HashSet<Bytes>,
    within: Duration,
) -> std::collections::HashSet<Bytes> {
    let mut got = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + within;
    while !want.is_subset(&got) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some((m, true))) => {
                got.insert(m.data);
            }
            Ok(Some(_)) => {}
            _ => panic!(
                "only {} of {} messages arrived in time; missing {:?}",
                got.intersection(want).count(),
                want.len(),
                want.difference(&got).collect::<Vec<_>>()
            ),
        }
    }
    got
}

/// Subscribes with `max_in_flight`.
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
        .expect("subscribe failed")
}

/// A plain publish request.
fn request(topic: &str, data: impl Into<Bytes>) -> PublishRequest {
    PublishRequest {
        topic: topic.to_owned(),
        data: data.into(),
        content_type: None,
        metadata: HashMap::new(),
    }
}
