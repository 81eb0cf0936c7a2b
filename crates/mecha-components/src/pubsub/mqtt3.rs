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
//! Tested against Mosquitto 2.0.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use mecha_core::component::{ComponentError, ComponentInit};
use mecha_core::duration::parse_go_duration;
use mecha_core::pubsub::{
    Message, MessageHandler, PubSub, PubSubError, PubSubFeature, PublishRequest, StopSignal,
    SubscribeRequest, Subscription, consumer_group,
};
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, Publish, QoS,
    SubscribeReasonCode, TlsConfiguration, Transport,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

/// How long a connection may stay silent before the client pings the broker.
const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// The pause between reconnection attempts.
const RECONNECT_WAIT: Duration = Duration::from_secs(1);
/// The bound on connecting, subscribing and publishing.
const DEFAULT_WAIT: Duration = Duration::from_secs(10);
/// How long a publish waits for a connection before failing.
const CONNECT_WAIT: Duration = Duration::from_secs(3);
/// The bound on each step of a graceful disconnect.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Capacity of the request channel of each connection.
const REQUEST_CAPACITY: usize = 256;
/// The default pause before a failed message is handed to the handler again.
const DEFAULT_REDELIVER: Duration = Duration::from_secs(1);

/// The `pubsub.mqtt3` broker.
pub struct MqttPubSub {
    meta: Arc<Meta>,
    producer: Producer,
}

/// The component metadata.
struct Meta {
    url: BrokerOptions,
    group: String,
    qos: QoS,
    retain: bool,
    clean_session: bool,
    redeliver: Duration,
    instance: Option<String>,
}

// === impl MqttPubSub ===

impl MqttPubSub {
    /// Creates the broker and waits for its publishing connection.
    pub async fn create(init: ComponentInit) -> Result<Arc<dyn PubSub>, ComponentError> {
        let meta = Arc::new(Meta::parse(&init)?);
        let producer = Producer::start(meta.clone());
        // Fail at the first refused connection attempt rather than after the whole wait.
        let deadline = tokio::time::Instant::now() + DEFAULT_WAIT;
        loop {
            if producer.current.borrow().is_some() {
                break;
            }
            let refused = producer
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some();
            if refused || tokio::time::Instant::now() >= deadline {
                return Err(ComponentError::Init(producer.lost().to_string()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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
        self.producer.publish(req.topic, req.data).await
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
        let broker = self.meta.url.display();
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
        md.warn_unknown(
            "pubsub.mqtt3",
            &[
                "url",
                "consumerID",
                "qos",
                "retain",
                "cleanSession",
                "redeliverInterval",
                "instanceID",
                "backOffMaxRetries",
                "caCert",
                "clientCert",
                "clientKey",
            ],
        );
        let url = BrokerOptions::parse(
            md.required("url")?,
            md.get("caCert"),
            md.get("clientCert"),
            md.get("clientKey"),
        )?;
        let qos = match md.u64("qos", 1)? {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            2 => QoS::ExactlyOnce,
            other => {
                return Err(ComponentError::InvalidField {
                    field: "qos",
                    reason: format!("'{other}' is not 0, 1 or 2"),
                });
            }
        };
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
            url,
            group,
            qos,
            retain: md.bool("retain", false)?,
            clean_session: md.bool("cleanSession", false)?,
            redeliver,
            instance: md
                .get("instanceID")
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned),
        })
    }
}

// === Producer ===

/// The publishing connection, kept open (and reopened) in the background.
///
/// Each connection gets a fresh rumqttc client and event loop, so a publish belongs to exactly
/// one connection: when it drops, the publishes waiting on it fail at once instead of being
/// retransmitted later behind the caller's back.
struct Producer {
    meta: Arc<Meta>,
    current: watch::Receiver<Option<Arc<ProducerSession>>>,
    last_error: Arc<Mutex<Option<String>>>,
    task: JoinHandle<()>,
}

/// One live publishing connection.
struct ProducerSession {
    client: AsyncClient,
    waiters: Mutex<Waiters>,
}

/// Publishes waiting for the broker: first queued in request order, then by packet id.
#[derive(Default)]
struct Waiters {
    dead: bool,
    queued: VecDeque<oneshot::Sender<()>>,
    inflight: HashMap<u16, oneshot::Sender<()>>,
}

impl Producer {
    /// Starts connecting in the background.
    fn start(meta: Arc<Meta>) -> Self {
        let (tx, current) = watch::channel(None);
        let last_error = Arc::new(Mutex::new(None));
        let task = tokio::spawn(run_producer(meta.clone(), tx, last_error.clone()));
        Self {
            meta,
            current,
            last_error,
            task,
        }
    }

    /// Waits up to `within` for a connection.
    async fn wait_connected(&self, within: Duration) -> Result<Arc<ProducerSession>, PubSubError> {
        let mut rx = self.current.clone();
        match tokio::time::timeout(within, rx.wait_for(Option::is_some)).await {
            Ok(Ok(s)) => s.clone().ok_or_else(|| self.lost()),
            _ => Err(self.lost()),
        }
    }

    /// Publishes `data` to `topic` and waits for the broker's acknowledgement.
    async fn publish(&self, topic: String, data: bytes::Bytes) -> Result<(), PubSubError> {
        let session = self.wait_connected(CONNECT_WAIT).await?;
        let acked = {
            let mut w = session.waiters();
            if w.dead {
                return Err(self.lost());
            }
            session
                .client
                .try_publish(topic, self.meta.qos, self.meta.retain, data.to_vec())
                .map_err(|e| PubSubError::Backend(format!("MQTT publish failed: {e}")))?;
            let (tx, rx) = oneshot::channel();
            w.queued.push_back(tx);
            rx
        };
        match tokio::time::timeout(DEFAULT_WAIT, acked).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(self.lost()),
            Err(_) => Err(PubSubError::Backend(format!(
                "MQTT broker {} did not acknowledge the message within {} s",
                self.meta.url.display(),
                DEFAULT_WAIT.as_secs()
            ))),
        }
    }

    /// Stops the connection.
    fn close(&self) {
        self.task.abort();
    }

    /// The error for a publish without a working connection.
    fn lost(&self) -> PubSubError {
        let last = self
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        PubSubError::Backend(match last {
            Some(e) => format!(
                "MQTT broker {} is not reachable: {e}",
                self.meta.url.display()
            ),
            None => format!(
                "MQTT connection to {} was lost before the message was acknowledged",
                self.meta.url.display()
            ),
        })
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ProducerSession {
    fn waiters(&self) -> std::sync::MutexGuard<'_, Waiters> {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A publish left with `pkid` (0 for QoS 0, which is then done).
    fn on_sent(&self, pkid: u16) {
        let mut w = self.waiters();
        if pkid != 0 && w.inflight.contains_key(&pkid) {
            return; // a retransmission
        }
        if let Some(tx) = w.queued.pop_front() {
            if pkid == 0 {
                let _ = tx.send(());
            } else {
                w.inflight.insert(pkid, tx);
            }
        }
    }

    /// The broker acknowledged `pkid`.
    fn on_acked(&self, pkid: u16) {
        if let Some(tx) = self.waiters().inflight.remove(&pkid) {
            let _ = tx.send(());
        }
    }

    /// The connection is gone: every waiting publish fails.
    fn fail(&self) {
        let mut w = self.waiters();
        w.dead = true;
        w.queued.clear();
        w.inflight.clear();
    }
}

/// Connects, drives the event loop, and reconnects after a pause when the connection fails.
async fn run_producer(
    meta: Arc<Meta>,
    current: watch::Sender<Option<Arc<ProducerSession>>>,
    last_error: Arc<Mutex<Option<String>>>,
) {
    let client_id = format!("{}-pub-{}", meta.group, short_id());
    let mut connected_once = false;
    loop {
        let options = meta.url.mqtt_options(&client_id, true);
        let (client, mut events) = AsyncClient::new(options, REQUEST_CAPACITY);
        let session = Arc::new(ProducerSession {
            client,
            waiters: Mutex::new(Waiters::default()),
        });
        let mut was_connected = false;
        let error = loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    if connected_once {
                        tracing::info!(broker = meta.url.display(), "MQTT publisher reconnected");
                    }
                    connected_once = true;
                    was_connected = true;
                    *last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    current.send_replace(Some(session.clone()));
                }
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => session.on_sent(pkid),
                Ok(Event::Incoming(Packet::PubAck(ack))) => session.on_acked(ack.pkid),
                Ok(Event::Incoming(Packet::PubComp(ack))) => session.on_acked(ack.pkid),
                Ok(_) => {}
                Err(e) => break e.to_string(),
            }
        };
        current.send_replace(None);
        session.fail();
        drop(events);
        if was_connected {
            tracing::warn!(broker = meta.url.display(), error = %error, "MQTT publisher connection lost; reconnecting");
        } else {
            tracing::debug!(broker = meta.url.display(), error = %error, "MQTT publisher cannot connect; retrying");
        }
        *last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
        tokio::time::sleep(RECONNECT_WAIT).await;
    }
}

// === Subscriber ===

/// One live subscriber connection; a message keeps the connection it came on so that its
/// acknowledgement is sent only while that connection is alive (a late acknowledgement never
/// hits another message's packet id).
struct SubSession {
    client: AsyncClient,
    alive: AtomicBool,
}

impl SubSession {
    fn alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }
}

/// Connects, subscribes, forwards messages, and reconnects when the connection ends; on stop,
/// unsubscribes, waits for the worker, disconnects and removes the session.
async fn run_subscriber(
    meta: Arc<Meta>,
    filter: String,
    slot: Slot,
    messages: mpsc::UnboundedSender<(Arc<SubSession>, Publish)>,
    mut stop: StopSignal,
    mut worker_done: watch::Receiver<bool>,
    ready: oneshot::Sender<Result<(), String>>,
) {
    let client_id = slot.client_id.clone();
    let mut ready = Some(ready);
    let mut connected_once = false;
    loop {
        let options = meta.url.mqtt_options(&client_id, meta.clean_session);
        let (client, mut events) = AsyncClient::new(options, REQUEST_CAPACITY);
        let session = Arc::new(SubSession {
            client,
            alive: AtomicBool::new(true),
        });
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
                            tracing::info!(broker = meta.url.display(), filter, session_present = ack.session_present, "MQTT subscriber reconnected");
                        }
                        connected_once = true;
                        if !stopping && let Err(e) = session.client.try_subscribe(filter.clone(), meta.qos) {
                            break e.to_string();
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        if ack.return_codes.iter().any(|c| matches!(c, SubscribeReasonCode::Failure)) {
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
        session.alive.store(false, Ordering::Release);
        drop(events);
        if let Some(r) = ready.take() {
            let _ = r.send(Err(failure));
            return;
        }
        if stopping || stop.is_stopped() {
            return;
        }
        if was_connected {
            tracing::warn!(broker = meta.url.display(), filter, error = %failure, "MQTT subscriber connection lost; reconnecting");
        } else {
            tracing::debug!(broker = meta.url.display(), filter, error = %failure, "MQTT subscriber cannot connect; retrying");
        }
        tokio::select! {
            _ = stop.stopped() => return,
            _ = tokio::time::sleep(RECONNECT_WAIT) => {}
        }
    }
}

/// Disconnects gracefully, sending the acknowledgements still queued; the session stays.
async fn shut_down(session: &SubSession, events: &mut EventLoop) {
    session.alive.store(false, Ordering::Release);
    let _ = session.client.try_disconnect();
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
            meta.url.display(),
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
    mut messages: mpsc::UnboundedReceiver<(Arc<SubSession>, Publish)>,
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
    session: &SubSession,
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
                if session.alive()
                    && let Err(e) = session.client.ack(publish).await
                {
                    tracing::debug!(error = %e, "MQTT acknowledgement not sent");
                }
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

// === Broker address and TLS ===

/// Where and how to connect, parsed from the `url` metadata.
#[derive(Clone)]
struct BrokerOptions {
    host: String,
    port: u16,
    credentials: Option<(String, String)>,
    tls: Option<Arc<ClientConfig>>,
    display: String,
}

impl BrokerOptions {
    /// Parses `scheme://[user[:password]@]host[:port]`; `tcp`/`mqtt` are plain,
    /// `ssl`/`mqtts`/`tcps`/`tls` use TLS with `caCert` (and `clientCert`/`clientKey`).
    fn parse(
        url: &str,
        ca_cert: Option<&str>,
        client_cert: Option<&str>,
        client_key: Option<&str>,
    ) -> Result<Self, ComponentError> {
        let invalid = |reason: String| ComponentError::InvalidField {
            field: "url",
            reason,
        };
        let url = url.trim();
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid(format!("'{url}' has no scheme (tcp://host:1883)")))?;
        let secure = match scheme.to_ascii_lowercase().as_str() {
            "tcp" | "mqtt" => false,
            "ssl" | "mqtts" | "tcps" | "tls" => true,
            other => return Err(invalid(format!("unsupported scheme '{other}'"))),
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let (credentials, host_port) = match authority.rsplit_once('@') {
            Some((user, hp)) => {
                let (u, p) = user.split_once(':').unwrap_or((user, ""));
                (Some((u.to_owned(), p.to_owned())), hp)
            }
            None => (None, authority),
        };
        let default_port = if secure { 8883 } else { 1883 };
        let (host, port) = split_host_port(host_port, default_port).map_err(invalid)?;
        if host.is_empty() {
            return Err(invalid(format!("'{scheme}://…' has no host")));
        }
        let tls = if secure {
            Some(Arc::new(tls_config(ca_cert, client_cert, client_key)?))
        } else {
            if nonempty(ca_cert).is_some() {
                tracing::warn!("Ignoring caCert: the MQTT url does not use ssl:// or mqtts://");
            }
            None
        };
        Ok(Self {
            host: host.to_owned(),
            port,
            credentials,
            tls,
            display: format!("{host}:{port}"),
        })
    }

    /// `host:port`, for messages.
    fn display(&self) -> &str {
        &self.display
    }

    /// Options for one connection with `client_id` (manual acknowledgements).
    fn mqtt_options(&self, client_id: &str, clean_session: bool) -> MqttOptions {
        let mut o = MqttOptions::new(client_id, self.host.clone(), self.port);
        o.set_keep_alive(KEEP_ALIVE)
            .set_clean_session(clean_session)
            .set_manual_acks(true)
            .set_request_channel_capacity(REQUEST_CAPACITY);
        if let Some((u, p)) = &self.credentials {
            o.set_credentials(u.clone(), p.clone());
        }
        if let Some(tls) = &self.tls {
            o.set_transport(Transport::Tls(TlsConfiguration::Rustls(tls.clone())));
        }
        o
    }
}

/// A rustls client config (ring provider) trusting `caCert`, with the client certificate when
/// both `clientCert` and `clientKey` are set.
fn tls_config(
    ca_cert: Option<&str>,
    client_cert: Option<&str>,
    client_key: Option<&str>,
) -> Result<ClientConfig, ComponentError> {
    let ca = nonempty(ca_cert).ok_or_else(|| ComponentError::InvalidField {
        field: "caCert",
        reason: "a TLS url (ssl://, mqtts://) needs the broker's CA certificate in caCert".into(),
    })?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        let cert = cert.map_err(|e| invalid_pem("caCert", e))?;
        roots.add(cert).map_err(|e| invalid_pem("caCert", e))?;
    }
    if roots.is_empty() {
        return Err(invalid_pem("caCert", "no certificate found"));
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| ComponentError::Init(format!("TLS setup failed: {e}")))?
            .with_root_certificates(roots);
    match (nonempty(client_cert), nonempty(client_key)) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| invalid_pem("clientCert", e))?;
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
                .map_err(|e| invalid_pem("clientKey", e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| invalid_pem("clientCert", e))
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err(ComponentError::InvalidField {
            field: "clientCert",
            reason: "clientCert and clientKey must be set together".into(),
        }),
    }
}

/// Splits `host[:port]` or `[v6]:port`.
fn split_host_port(s: &str, default_port: u16) -> Result<(&str, u16), String> {
    let (host, port) = match s.strip_prefix('[') {
        Some(v6) => {
            let (h, rest) = v6
                .split_once(']')
                .ok_or_else(|| format!("'{s}' is not a valid address"))?;
            (h, rest.strip_prefix(':'))
        }
        None => match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        },
    };
    let port = match port {
        Some(p) => p.parse().map_err(|_| format!("'{p}' is not a port"))?,
        None => default_port,
    };
    Ok((host, port))
}

/// A set, non-blank value.
fn nonempty(v: Option<&str>) -> Option<&str> {
    v.map(str::trim).filter(|s| !s.is_empty())
}

fn invalid_pem(field: &'static str, e: impl std::fmt::Display) -> ComponentError {
    ComponentError::InvalidField {
        field,
        reason: format!("invalid PEM: {e}"),
    }
}
