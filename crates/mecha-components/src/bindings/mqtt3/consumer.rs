//! The input side's connection (`<consumerID>-consumer`): subscribes on every connection and
//! acknowledges a message only after the app accepted it.
//!
//! Each connection gets a fresh rumqttc client and event loop. A message keeps the connection it
//! came on ([`SubscriberConnection`]): its acknowledgement is sent only while that connection is
//! alive, so a late acknowledgement can never hit another message's packet id. A message the app refused (after
//! the in-process retries) is left unacknowledged and its connection is reset: the broker then
//! redelivers it from the persistent session.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mecha_core::bindings::{BindingError, BindingEvent, EventHandler};
use rumqttc::{Event, EventLoop, Packet, Publish, QoS};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{MqttMetadata, TOPIC};
use crate::mqtt::{DEFAULT_WAIT, RECONNECT_WAIT, SubscriberConnection};

/// The pause between in-process retries of a failed delivery (Dapr's constant back-off).
const RETRY_INTERVAL: Duration = Duration::from_secs(5);

/// A running subscription.
pub(super) struct Consumer {
    connection: JoinHandle<()>,
    worker: JoinHandle<()>,
}

/// Why a connection ended.
enum Ended {
    Reset,
    Failed(String),
    Closed,
}

// === impl Consumer ===

impl Consumer {
    /// Connects and subscribes; returns once the broker confirmed the subscription.
    pub(super) async fn start(
        meta: Arc<MqttMetadata>,
        topic: String,
        handler: EventHandler,
    ) -> Result<Self, BindingError> {
        let (msg_tx, msg_rx) = mpsc::unbounded_channel();
        let (reset_tx, reset_rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let broker = meta.conn.broker.display().to_owned();
        let retries = meta.back_off_max_retries;
        let connection = tokio::spawn(run(meta, topic, msg_tx, reset_rx, ready_tx));
        let worker = tokio::spawn(work(msg_rx, handler, reset_tx, retries));
        let consumer = Self { connection, worker };
        match tokio::time::timeout(DEFAULT_WAIT, ready_rx).await {
            Ok(Ok(Ok(()))) => Ok(consumer),
            Ok(Ok(Err(e))) => {
                consumer.close();
                Err(BindingError::Backend(format!(
                    "MQTT subscription on {broker} failed: {e}"
                )))
            }
            _ => {
                consumer.close();
                Err(BindingError::Backend(format!(
                    "MQTT subscription on {broker} did not complete within {} s",
                    DEFAULT_WAIT.as_secs()
                )))
            }
        }
    }

    /// Stops reading; unacknowledged messages stay with the broker.
    pub(super) fn close(&self) {
        self.connection.abort();
        self.worker.abort();
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.close();
    }
}

/// Connects, subscribes, forwards messages, and reconnects when the connection ends.
async fn run(
    meta: Arc<MqttMetadata>,
    topic: String,
    messages: mpsc::UnboundedSender<(Arc<SubscriberConnection>, Publish)>,
    mut resets: mpsc::UnboundedReceiver<Arc<SubscriberConnection>>,
    ready: oneshot::Sender<Result<(), String>>,
) {
    let client_id = format!("{}-consumer", meta.consumer_id);
    let mut ready = Some(ready);
    loop {
        let (session, mut events) = SubscriberConnection::open(&meta.conn, &client_id);
        let ended = drive(
            &mut events,
            &session,
            &meta,
            &topic,
            &messages,
            &mut resets,
            &mut ready,
        )
        .await;
        session.end();
        drop(events);
        match ended {
            Ended::Closed => return,
            Ended::Reset => {
                tracing::debug!(topic, "MQTT consumer reconnecting so the broker redelivers");
            }
            Ended::Failed(e) => {
                if let Some(r) = ready.take() {
                    let _ = r.send(Err(e));
                    return;
                }
                tracing::warn!(broker = meta.conn.broker.display(), error = %e, "MQTT consumer connection failed; reconnecting");
            }
        }
        tokio::time::sleep(RECONNECT_WAIT).await;
    }
}

/// Drives one connection until it fails, is reset, or the worker is gone.
async fn drive(
    events: &mut EventLoop,
    session: &Arc<SubscriberConnection>,
    meta: &MqttMetadata,
    topic: &str,
    messages: &mpsc::UnboundedSender<(Arc<SubscriberConnection>, Publish)>,
    resets: &mut mpsc::UnboundedReceiver<Arc<SubscriberConnection>>,
    ready: &mut Option<oneshot::Sender<Result<(), String>>>,
) -> Ended {
    loop {
        tokio::select! {
            biased;
            reset = resets.recv() => match reset {
                Some(s) if Arc::ptr_eq(&s, session) => return Ended::Reset,
                Some(_) => {}
                None => return Ended::Closed,
            },
            event = events.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    tracing::debug!(topic, session_present = ack.session_present, "MQTT consumer connected");
                    if let Err(e) = session.client().try_subscribe(topic, meta.conn.qos) {
                        return Ended::Failed(e.to_string());
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    if crate::mqtt::refused(&ack) {
                        return Ended::Failed(format!("the broker refused the subscription to '{topic}'"));
                    }
                    if let Some(r) = ready.take() {
                        let _ = r.send(Ok(()));
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if messages.send((session.clone(), p)).is_err() {
                        return Ended::Closed;
                    }
                }
                Ok(_) => {}
                Err(e) => return Ended::Failed(e.to_string()),
            },
        }
    }
}

/// Delivers messages one by one, acknowledging each only after the app accepted it.
async fn work(
    mut messages: mpsc::UnboundedReceiver<(Arc<SubscriberConnection>, Publish)>,
    handler: EventHandler,
    resets: mpsc::UnboundedSender<Arc<SubscriberConnection>>,
    max_retries: i64,
) {
    while let Some((session, publish)) = messages.recv().await {
        if !session.alive() {
            continue; // its connection is gone: the broker redelivers it
        }
        let event = BindingEvent {
            data: publish.payload.clone(),
            metadata: HashMap::from([(TOPIC.to_owned(), publish.topic.clone())]),
        };
        let mut failures = 0i64;
        loop {
            match handler(event.clone()).await {
                Ok(()) => {
                    session.ack(&publish).await;
                    break;
                }
                Err(e) if max_retries < 0 || failures < max_retries => {
                    failures += 1;
                    tracing::warn!(topic = %publish.topic, error = %e, "App rejected an MQTT message; retrying");
                    tokio::time::sleep(RETRY_INTERVAL).await;
                    if !session.alive() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(topic = %publish.topic, error = %e, "App rejected an MQTT message; the broker will redeliver it");
                    if publish.qos != QoS::AtMostOnce {
                        // Later messages of this connection will be redelivered too.
                        session.end();
                        let _ = resets.send(session.clone());
                    }
                    break;
                }
            }
        }
    }
}
