//! `pubsub.mqtt3` v1: an MQTT 3.1.1 broker for the pub/sub building block.
//!
//! # Model
//!
//! - **Publishing** goes through one connection per component (client id
//!   `<consumerID>-pub-<random>`, clean session) with the component's `qos` and `retain`. A
//!   publish returns once the broker acknowledged it (PUBACK for QoS 1, PUBCOMP for QoS 2); a
//!   publish without a working connection, or not acknowledged in time, fails with a backend
//!   error within a few seconds. The connection reopens by itself.
//! - **Consumer groups** use MQTT shared subscriptions: a subscription subscribes to
//!   `$share/<consumerID>/<topic>`, so the subscriptions of one group (in one process or in
//!   replicas of one app) share the messages, and each group gets every message. Mosquitto
//!   (1.6 and later) supports shared subscriptions for MQTT 3.1.1 clients too.
//! - **Subscriptions** each have their own connection and a persistent session
//!   (`cleanSession` default **false**). The client id is
//!   `<consumerID>-<topic hash>-<slot>[-<instanceID>]`: the slot is the lowest number not used
//!   by another running subscription of this process to the same topic and group, so a
//!   subscription that is stopped and started again (or a restarted process) gets the same
//!   session back, with the messages the broker kept for it meanwhile. Replicas of one app on
//!   several processes must set a distinct `instanceID` metadata each (for example the pod
//!   name), otherwise their client ids collide.
//! - **Acknowledgement**: manual acks. A message is acknowledged (PUBACK) only after the
//!   handler returned `Ok`. On `Err` the message is kept and handed to the handler again after
//!   `redeliverInterval` (Go duration, default `1s`), in process, until it succeeds; it is
//!   never acknowledged before. If the connection it came on is lost meanwhile, the retries end
//!   and the broker redelivers it on the next connection.
//! - At most `max_in_flight` handler calls run at once per subscription; with one, messages are
//!   handled in the order the broker sends them (publish order for one publisher).
//! - **Stopping** a subscription waits for its handler calls and disconnects; its session,
//!   with its shared subscription, stays with the broker. MQTT 3 cannot hand a message back to
//!   a group: the broker keeps sending a stopped session its share of the group's messages
//!   (Mosquitto includes offline persistent sessions in the share) and delivers them when that
//!   client id connects again.
//!
//! - **Broker restarts**: a subscription reconnects by itself and subscribes again on every
//!   connection. Messages published after a broker restart but before the subscriber is back
//!   are only kept for it if the broker restored its shared subscription from persistence;
//!   with Mosquitto 2.0.11 such messages were seen to be missed occasionally, so they are not
//!   guaranteed.
//!
//! MQTT 3 carries neither metadata nor a content type: messages arrive without them, and
//! `ttlInSeconds` is not honoured (no expiry).
//!
//! # Metadata (Dapr's names)
//!
//! - `url` (required): `tcp://[user:pass@]host:port` or `mqtt://`; `ssl://`, `mqtts://`,
//!   `tcps://` or `tls://` for TLS with `caCert` (and `clientCert`/`clientKey` for a client
//!   certificate).
//! - `consumerID`: the consumer group and the base of the client ids (default: the app id).
//!   It may not contain `/`, `+` or `#`.
//! - `qos` (0, 1 or 2; default 1), `retain` (default false), `cleanSession` (default false),
//!   `redeliverInterval`, `instanceID` (Mecha's: distinguishes replicas' client ids).
//! - `backOffMaxRetries` is ignored: failed messages are retried until they succeed.
//!
//! The connection settings and the publishing connection are shared with `bindings.mqtt3`
//! (`crate::mqtt`).
//!
//! Tested against Mosquitto 2.0.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use mecha_core::component::{ComponentError, ComponentInit};
use mecha_core::duration::parse_go_duration;
use mecha_core::pubsub::{
    Message, MessageHandler, PubSub, PubSubError, PubSubFeature, PublishRequest, StopSignal,
    SubscribeRequest, Subscription, consumer_group,
};
use rumqttc::{Event, EventLoop, Outgoing, Packet, Publish};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::mqtt::{
    CONNECTION_KEYS, ConnectionSettings, DEFAULT_WAIT, PublishError, Publisher, RECONNECT_WAIT,
    SubscriberConnection,
};

/// The bound on each step of a graceful disconnect.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// The default pause before a failed message is handed to the handler again.
const DEFAULT_REDELIVER: Duration = Duration::from_secs(1);

/// The `pubsub.mqtt3` broker.
pub struct MqttPubSub {
    meta: Arc<Meta>,
    producer: Publisher,
}

/// The component metadata.
struct Meta {
    conn: ConnectionSettings,
    group: String,
    redeliver: Duration,
    instance: Option<String>,
}

// === impl MqttPubSub ===

impl MqttPubSub {
    /// Creates the broker and waits for its publishing connection.
    pub async fn create(init: ComponentInit) -> Result<Arc<dyn PubSub>, ComponentError> {
        let meta = Arc::new(Meta::parse(&init)?);
        let producer = Publisher::start(
            &meta.conn.broker,
            format!("{}-pub-{}", meta.group, short_id()),
            true,
            meta.conn.qos,
        );
        producer
            .wait_connected(DEFAULT_WAIT)
            .await
            .map_err(|e| ComponentError::Init(e.to_string()))?;
        Ok(Arc::new(Self { meta, producer }))
    }
}

#[async_trait]
impl PubSub for MqttPubSub {
    fn features(&self) -> &[PubSubFeature] {
        &[PubSubFeature::Ordered]
    }

    async fn publish(&self, req: PublishRequest) -> Result<(), PubSubError> {
        check_topic(&req.topic)?;
        let retain = self.meta.conn.retain;
        Ok(self.producer.publish(req.topic, retain, req.data).await?)
    }

    async fn subscribe(
        &self,
        req: SubscribeRequest,
        handler: MessageHandler,
    ) -> Result<Subscription, PubSubError> {
        check_topic(&req.topic)?;
        let filter = format!("$share/{}/{}", self.meta.group, req.topic);
        let slot = Slot::take(&self.meta, &req.topic);
        let (sub, stop) = Subscription::new();
        let (msg_tx, msg_rx) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = watch::channel(false);
        let (ready_tx, ready_rx) = oneshot::channel();
        let connection = tokio::spawn(run_subscriber(
            self.meta.clone(),
            filter.clone(),
            slot,
            msg_tx,
            stop.clone(),
            done_rx,
            ready_tx,
        ));
        let worker = tokio::spawn(work(
            self.meta.clone(),
            req.topic.clone(),
            msg_rx,
            handler,
            req.max_in_flight.max(1),
            stop,
            done_tx,
        ));
        let sub = sub.with_task(worker).with_task(connection);
        let broker = self.meta.conn.broker.display();
        match tokio::time::timeout(DEFAULT_WAIT, ready_rx).await {
            Ok(Ok(Ok(()))) => {
                tracing::debug!(broker, filter, "Subscribed to MQTT");
                Ok(sub)
            }
            Ok(Ok(Err(e))) => {
                sub.stop().await;
                Err(PubSubError::Backend(format!(
                    "MQTT subscription to '{filter}' on {broker} failed: {e}"
                )))
            }
            _ => {
                sub.stop().await;
                Err(PubSubError::Backend(format!(
                    "MQTT subscription to '{filter}' on {broker} did not complete within {} s",
                    DEFAULT_WAIT.as_secs()
                )))
            }
        }
    }

    async fn close(&self) {
        self.producer.close();
    }
}

impl From<PublishError> for PubSubError {
    fn from(e: PublishError) -> Self {
        PubSubError::Backend(e.to_string())
    }
}

/// Refuses topics MQTT cannot publish to or share.
fn check_topic(topic: &str) -> Result<(), PubSubError> {
    if topic.is_empty() {
        return Err(PubSubError::BadRequest("the topic name is empty".into()));
    }
    if topic.contains(['+', '#', '\0']) {
        return Err(PubSubError::BadRequest(format!(
            "the MQTT topic '{topic}' contains a wildcard or NUL character"
        )));
    }
    Ok(())
}

/// A short random suffix for client ids.
fn short_id() -> String {
    let mut id = uuid::Uuid::new_v4().simple().to_string();
    id.truncate(12);
    id
}

// === impl Meta ===

impl Meta {
    fn parse(init: &ComponentInit) -> Result<Self, ComponentError> {
        let md = &init.metadata;
        let known = [
            CONNECTION_KEYS,
            &[
                "consumerID",
                "redeliverInterval",
                "instanceID",
                "backOffMaxRetries",
            ],
        ]
        .concat();
        md.warn_unknown("pubsub.mqtt3", &known);
        let conn = ConnectionSettings::parse(md)?;
        let group = consumer_group(md, &init.app_id);
        if group.contains(['/', '+', '#', '\0']) {
            return Err(ComponentError::InvalidField {
                field: "consumerID",
                reason: format!(
                    "'{group}' cannot name an MQTT shared subscription (no '/', '+' or '#')"
                ),
            });
        }
        let redeliver = match md.get("redeliverInterval").map(str::trim) {
            None | Some("") => DEFAULT_REDELIVER,
            Some(v) => parse_go_duration(v).map_err(|e| ComponentError::InvalidField {
                field: "redeliverInterval",
                reason: e.to_string(),
            })?,
        };
        Ok(Self {
            conn,
            group,
            redeliver,
            instance: md
                .get("instanceID")
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned),
        })
    }
}

// === Subscriber ===

/// Connects, subscribes, forwards messages, and reconnects when the connection ends; on stop,
/// unsubscribes, waits for the worker, disconnects and removes the session.
async fn run_subscriber(
    meta: Arc<Meta>,
    filter: String,
    slot: Slot,
    messages: mpsc::UnboundedSender<(Arc<SubscriberConnection>, Publish)>,
    mut stop: StopSignal,
    mut worker_done: watch::Receiver<bool>,
    ready: oneshot::Sender<Result<(), String>>,
) {
    let client_id = slot.client_id.clone();
    let mut ready = Some(ready);
    let mut connected_once = false;
    loop {
        let (session, mut events) = SubscriberConnection::open(&meta.conn, &client_id);
        let mut stopping = false;
        let mut was_connected = false;
        let failure = loop {
            tokio::select! {
                biased;
                _ = stop.stopped(), if !stopping => {
                    stopping = true;
                }
                _ = async { worker_done.wait_for(|d| *d).await.is_ok() }, if stopping => {
                    shut_down(&session, &mut events).await;
                    return;
                }
                event = events.poll() => match event {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        was_connected = true;
                        if connected_once {
                            tracing::info!(broker = meta.conn.broker.display(), filter, session_present = ack.session_present, "MQTT subscriber reconnected");
                        }
                        connected_once = true;
                        if !stopping && let Err(e) = session.client().try_subscribe(filter.clone(), meta.conn.qos) {
                            break e.to_string();
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        if crate::mqtt::refused(&ack) {
                            break format!("the broker refused the subscription to '{filter}'");
                        }
                        if let Some(r) = ready.take() {
                            let _ = r.send(Ok(()));
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        // Once stopping, messages are left unacknowledged.
                        if !stopping && messages.send((session.clone(), p)).is_err() {
                            stopping = true;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => break e.to_string(),
                },
            }
        };
        session.end();
        drop(events);
        if let Some(r) = ready.take() {
            let _ = r.send(Err(failure));
            return;
        }
        if stopping || stop.is_stopped() {
            return;
        }
        if was_connected {
            tracing::warn!(broker = meta.conn.broker.display(), filter, error = %failure, "MQTT subscriber connection lost; reconnecting");
        } else {
            tracing::debug!(broker = meta.conn.broker.display(), filter, error = %failure, "MQTT subscriber cannot connect; retrying");
        }
        tokio::select! {
            _ = stop.stopped() => return,
            _ = tokio::time::sleep(RECONNECT_WAIT) => {}
        }
    }
}

/// Disconnects gracefully, sending the acknowledgements still queued; the session stays.
async fn shut_down(session: &SubscriberConnection, events: &mut EventLoop) {
    session.end();
    let _ = session.client().try_disconnect();
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        loop {
            match events.poll().await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
}

/// A subscription's client id slot, given back when dropped.
struct Slot {
    base: String,
    number: u32,
    client_id: String,
}

/// The slots in use, by client id base.
fn slots() -> &'static Mutex<HashMap<String, BTreeSet<u32>>> {
    static SLOTS: OnceLock<Mutex<HashMap<String, BTreeSet<u32>>>> = OnceLock::new();
    SLOTS.get_or_init(Default::default)
}

impl Slot {
    /// The lowest free slot for subscriptions of `meta`'s group to `topic`.
    fn take(meta: &Meta, topic: &str) -> Self {
        let base = format!(
            "{}|{}|{}|{}",
            meta.conn.broker.display(),
            meta.group,
            topic,
            meta.instance.as_deref().unwrap_or_default()
        );
        let number = {
            let mut all = slots().lock().unwrap_or_else(|p| p.into_inner());
            let used = all.entry(base.clone()).or_default();
            let n = (0..).find(|n| !used.contains(n)).unwrap_or_default();
            used.insert(n);
            n
        };
        let mut client_id = format!("{}-{}-{number}", meta.group, topic_hash(topic));
        if let Some(instance) = &meta.instance {
            client_id.push('-');
            client_id.push_str(instance);
        }
        Self {
            base,
            number,
            client_id,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut all = slots().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(used) = all.get_mut(&self.base) {
            used.remove(&self.number);
            if used.is_empty() {
                all.remove(&self.base);
            }
        }
    }
}

/// A stable 64-bit FNV-1a hash of the topic, in hex (client ids stay short and valid).
fn topic_hash(topic: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in topic.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Hands messages to the handler, at most `max_in_flight` at once, acknowledging each only
/// after the handler returned `Ok`; on stop, waits for the calls in flight.
async fn work(
    meta: Arc<Meta>,
    topic: String,
    mut messages: mpsc::UnboundedReceiver<(Arc<SubscriberConnection>, Publish)>,
    handler: MessageHandler,
    max_in_flight: usize,
    mut stop: StopSignal,
    done: watch::Sender<bool>,
) {
    let permits = Arc::new(Semaphore::new(max_in_flight));
    let mut in_flight = JoinSet::new();
    loop {
        let permit = tokio::select! {
            _ = stop.stopped() => break,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let next = tokio::select! {
            _ = stop.stopped() => break,
            next = messages.recv() => next,
        };
        let Some((session, publish)) = next else {
            break;
        };
        if !session.alive() {
            continue; // its connection is gone: the broker redelivers it
        }
        let (handler, stop, topic) = (handler.clone(), stop.clone(), topic.clone());
        let redeliver = meta.redeliver;
        in_flight.spawn(async move {
            deliver(&topic, &handler, &session, &publish, redeliver, stop).await;
            drop(permit);
        });
        while in_flight.try_join_next().is_some() {}
    }
    while in_flight.join_next().await.is_some() {}
    done.send_replace(true);
}

/// Calls the handler until it returns `Ok` (then acknowledges), the connection is lost or the
/// subscription stops (then the message stays unacknowledged with the broker).
async fn deliver(
    topic: &str,
    handler: &MessageHandler,
    session: &SubscriberConnection,
    publish: &Publish,
    redeliver: Duration,
    mut stop: StopSignal,
) {
    let msg = Message {
        topic: topic.to_owned(),
        data: publish.payload.clone(),
        content_type: None,
        metadata: HashMap::new(),
    };
    loop {
        match handler(msg.clone()).await {
            Ok(()) => {
                session.ack(publish).await;
                return;
            }
            Err(e) => {
                tracing::debug!(topic, error = %e, "Message not processed; redelivering later");
                tokio::select! {
                    _ = stop.stopped() => return,
                    _ = tokio::time::sleep(redeliver) => {}
                }
                if !session.alive() {
                    return; // the broker redelivers it on the next connection
                }
            }
        }
    }
}
