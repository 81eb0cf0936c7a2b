//! `bindings.mqtt3` and `bindings.rabbitmq` against real brokers: the shared Mosquitto
//! (`MECHA_TEST_MQTT_URL`, default `tcp://127.0.0.1:1883`) and RabbitMQ
//! (`MECHA_TEST_RABBITMQ_URL`, default `amqp://guest:guest@127.0.0.1:5672`), with fresh topics
//! and queues per test; broker outages on a private `mosquitto` process and on RabbitMQ
//! connections closed from the broker side (`rabbitmqctl close_connection`).

#![cfg(all(feature = "bindings-mqtt3", feature = "bindings-rabbitmq"))]
// Test helpers outside `#[test]` functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "bindings_brokers/mqtt.rs"]
mod mqtt;
#[path = "bindings_brokers/rabbitmq.rs"]
mod rabbitmq;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mecha_core::Metadata;
use mecha_core::bindings::{BindingEvent, DeliveryFuture, EventHandler, InvokeRequest};
use mecha_core::component::ComponentInit;
use tokio::sync::mpsc;

/// One delivery seen by the test handler, and whether the handler accepted it.
type Seen = (BindingEvent, bool);

/// A component init with plain metadata.
fn init(name: &str, metadata: &[(&str, &str)]) -> ComponentInit {
    ComponentInit {
        name: name.to_owned(),
        metadata: Metadata::new(
            metadata
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<HashMap<_, _>>(),
        ),
        app_id: "brokers-tests".to_owned(),
    }
}

/// A fresh name for topics, queues and client ids.
fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A handler recording every delivery that refuses the first `fail_first` ones.
fn recorder(fail_first: usize) -> (EventHandler, mpsc::UnboundedReceiver<Seen>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let left = Arc::new(AtomicUsize::new(fail_first));
    let handler: EventHandler = Arc::new(move |event: BindingEvent| -> DeliveryFuture {
        let tx = tx.clone();
        let left = left.clone();
        Box::pin(async move {
            let fail = left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            let _ = tx.send((event, !fail));
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
async fn next(rx: &mut mpsc::UnboundedReceiver<Seen>, within: Duration) -> Seen {
    tokio::time::timeout(within, rx.recv())
        .await
        .expect("no event arrived in time")
        .expect("the handler was dropped")
}

/// Asserts nothing arrives for `quiet`.
async fn assert_quiet(rx: &mut mpsc::UnboundedReceiver<Seen>, quiet: Duration) {
    if let Ok(Some((event, _))) = tokio::time::timeout(quiet, rx.recv()).await {
        panic!(
            "unexpected event: {:?}",
            String::from_utf8_lossy(&event.data)
        );
    }
}

/// A `create` request.
fn create(data: &str, metadata: &[(&str, &str)]) -> InvokeRequest {
    InvokeRequest {
        operation: "create".to_owned(),
        data: bytes::Bytes::from(data.to_owned()),
        metadata: metadata
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}
