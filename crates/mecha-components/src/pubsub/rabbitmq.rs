//! `pubsub.rabbitmq` v1: a RabbitMQ broker (AMQP 0.9.1) for the pub/sub building block.
//!
//! # Model
//!
//! - Each topic is an exchange named as the topic (kind `exchangeKind`, default `fanout`;
//!   durable when `durable`). Each consumer group of a topic has its own queue named
//!   `{consumerID}-{topic}` (Dapr's naming) bound to that exchange, so subscriptions in one group
//!   share the messages and every group gets every message published after it subscribed.
//! - Publishing waits for the broker's publisher confirmation, so `Ok` means RabbitMQ stored the
//!   message; a publish that is not confirmed within a bound fails with a backend error.
//!   The content type travels in the `content-type` property and every publish metadata entry
//!   as a string header; subscribers get the string headers back as message metadata.
//! - `ttlInSeconds` (publish metadata, or the component's default) becomes the per-message AMQP
//!   `expiration`, so RabbitMQ discards the message once expired; the subscriber also checks
//!   the expiry time (carried in the `x-mecha-expires-at` header, milliseconds since the Unix
//!   epoch) and drops a message that expired while it waited in the client.
//! - Consumers use manual acknowledgements: a message is acked once the handler returned `Ok`.
//!   On `Err` it stays unacknowledged for `redeliverInterval` (Go duration, default `1s`) and is
//!   then nacked with requeue, so RabbitMQ delivers it again; nothing is dropped. At most
//!   `max_in_flight` handler calls run at once per subscription, and the channel's prefetch is
//!   `prefetchCount` when set, else `max_in_flight`; with one in flight (prefetch 1) messages are
//!   handled in publish order.
//! - One connection per component (client property `connection_name` is `clientName`, else
//!   `mecha-<app id>-<component>`), one confirm-mode channel for publishing and one channel per
//!   subscription. When the connection is lost, publishes fail with a backend error until a new
//!   connection is opened (each attempt is bounded), and every subscription reconnects by
//!   itself with a back-off starting at `reconnectWait` (default `3s`, doubling up to 30 s),
//!   declaring its exchange, queue and binding again before consuming.
//!
//! # Metadata (Dapr's names)
//!
//! - `connectionString` (or the older `host`): `amqp://user:pass@host:5672/vhost`, `amqps://`
//!   for TLS. Without them: `protocol` (default `amqp`), `hostname`, `username`, `password`.
//! - `consumerID`: the consumer group (default: the app id).
//! - `durable` (default **true**), `deletedWhenUnused` (also `deleteWhenUnused`; default
//!   **false**, so queues survive restarts), `deliveryMode` (1 transient, 2 persistent;
//!   default **2**), `prefetchCount`, `exchangeKind` (`fanout`, `direct`, `topic`, `headers`),
//!   `maxLen` (`x-max-length`), `maxLenBytes` (`x-max-length-bytes`), `maxPriority`
//!   (`x-max-priority`; publish metadata `priority`), `ttlInSeconds` (default message TTL),
//!   `redeliverInterval`, `reconnectWait`, `heartBeat` (Go duration, default `10s`),
//!   `clientName`.
//! - With an `exchangeKind` other than `fanout`, publishes use the publish metadata
//!   `routingKey` and queues are bound with the subscription metadata `routingKey`
//!   (comma-separated; default the empty key).
//!
//! # Refused or ignored
//!
//! - `enableDeadLetter: true` is refused: failed messages are always requeued, never
//!   dead-lettered. `autoAck: true` and `requeueInFailure: false` are ignored with a warning
//!   (acknowledging before the handler answered, or dropping failed messages, would lose them).
//!   `publisherConfirm` is ignored: confirms are always on. `concurrencyMode` is ignored
//!   (concurrency comes from the subscription). `maxLen`/`maxLenBytes` make RabbitMQ drop the
//!   oldest messages of a full queue: that is the operator's explicit choice.
//! - `caCert`, `clientCert`, `clientKey` and `saslExternal` are refused (not supported yet).
//!
//! Tested against RabbitMQ 3.10.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::uri::AMQPUri;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use mecha_core::component::{ComponentError, ComponentInit};
use mecha_core::duration::parse_go_duration;
use mecha_core::pubsub::{
    Message, MessageHandler, PubSub, PubSubError, PubSubFeature, PublishRequest, StopSignal,
    SubscribeRequest, Subscription, TTL_IN_SECONDS, consumer_group, expires_at, is_expired,
};
use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinSet;

/// The bound on opening a connection.
const CONNECT_WAIT: Duration = Duration::from_secs(5);
/// The bound on a publish and its confirmation.
const PUBLISH_WAIT: Duration = Duration::from_secs(10);
/// The bound on opening a subscription's channel, declaring its topology and consuming.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(10);
/// The default pause before a failed message is requeued.
const DEFAULT_REDELIVER: Duration = Duration::from_secs(1);
/// The default first pause before reconnecting a subscription (Dapr's `reconnectWait`).
const DEFAULT_RECONNECT_WAIT: Duration = Duration::from_secs(3);
/// The longest pause between reconnection attempts.
const MAX_RECONNECT_WAIT: Duration = Duration::from_secs(30);
/// The default AMQP heartbeat.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);
/// The header carrying a message's expiry time (milliseconds since the Unix epoch).
const EXPIRES_AT_HEADER: &str = "x-mecha-expires-at";
/// Publish and subscription metadata key of the routing key (non-fanout exchanges).
const ROUTING_KEY: &str = "routingKey";
/// Publish metadata key of the message priority.
const PRIORITY: &str = "priority";

/// The `pubsub.rabbitmq` broker.
pub struct RabbitMqPubSub {
    link: Arc<Link>,
}

/// The component metadata.
#[derive(Debug)]
struct Meta {
    uri: AMQPUri,
    /// `host:port/vhost`, for messages.
    display: String,
    connection_name: String,
    group: String,
    durable: bool,
    delete_when_unused: bool,
    delivery_mode: u8,
    prefetch: Option<u16>,
    exchange_kind: ExchangeKind,
    max_len: Option<u64>,
    max_len_bytes: Option<u64>,
    max_priority: Option<u8>,
    default_ttl: Option<u64>,
    redeliver: Duration,
    reconnect_wait: Duration,
}

/// The component's connection, opened on demand and replaced once lost.
struct Link {
    meta: Meta,
    slot: Mutex<Option<Arc<Live>>>,
    closed: AtomicBool,
}

/// An open connection with its publishing channel.
struct Live {
    conn: Connection,
    publisher: Mutex<Option<Publisher>>,
}

/// The confirm-mode publishing channel and the exchanges declared on it.
struct Publisher {
    channel: Channel,
    exchanges: HashSet<String>,
}

/// What one subscription consumes.
struct Target {
    link: Arc<Link>,
    topic: String,
    queue: String,
    binding_keys: Vec<String>,
    prefetch: u16,
}

/// A consuming channel.
struct Consuming {
    channel: Channel,
    tag: String,
    consumer: lapin::Consumer,
}

// === impl RabbitMqPubSub ===

impl RabbitMqPubSub {
    /// Creates the broker and checks that RabbitMQ is reachable.
    pub async fn create(init: ComponentInit) -> Result<Arc<dyn PubSub>, ComponentError> {
        let meta = Meta::parse(&init)?;
        let link = Arc::new(Link {
            meta,
            slot: Mutex::new(None),
            closed: AtomicBool::new(false),
        });
        link.live().await.map_err(ComponentError::Init)?;
        Ok(Arc::new(Self { link }))
    }

    /// The message properties for `req`.
    fn properties(&self, req: &PublishRequest) -> Result<BasicProperties, PubSubError> {
        let meta = &self.link.meta;
        let mut headers = FieldTable::default();
        for (k, v) in &req.metadata {
            headers.insert(k.as_str().into(), AMQPValue::LongString(v.as_str().into()));
        }
        let mut props = BasicProperties::default()
            .with_delivery_mode(meta.delivery_mode)
            .with_timestamp(mecha_core::pubsub::now_millis() / 1000);
        if let Some(ct) = req.content_type.as_deref().filter(|c| !c.is_empty()) {
            props = props.with_content_type(ct.into());
        }
        let ttl = match request_value(&req.metadata, TTL_IN_SECONDS) {
            Some(v) => Some(v.parse::<u64>().map_err(|_| {
                PubSubError::BadRequest(format!(
                    "'{TTL_IN_SECONDS}' metadata '{v}' is not a non-negative integer"
                ))
            })?),
            None => meta.default_ttl,
        }
        .filter(|t| *t > 0);
        if let Some(ttl) = ttl {
            let md = HashMap::from([(TTL_IN_SECONDS.to_owned(), ttl.to_string())]);
            if let Some(at) = expires_at(&md) {
                headers.insert(
                    EXPIRES_AT_HEADER.into(),
                    AMQPValue::LongLongInt(i64::try_from(at).unwrap_or(i64::MAX)),
                );
            }
            props = props.with_expiration(ttl.saturating_mul(1000).to_string().as_str().into());
        }
        if let Some(p) = request_value(&req.metadata, PRIORITY) {
            let p: u64 = p.parse().map_err(|_| {
                PubSubError::BadRequest(format!(
                    "'{PRIORITY}' metadata '{p}' is not a non-negative integer"
                ))
            })?;
            props = props.with_priority(p.min(255) as u8);
        }
        Ok(props.with_headers(headers))
    }
}

#[async_trait]
impl PubSub for RabbitMqPubSub {
    fn features(&self) -> &[PubSubFeature] {
        &[
            PubSubFeature::MessageMetadata,
            PubSubFeature::Ordered,
            PubSubFeature::Ttl,
        ]
    }

    async fn publish(&self, req: PublishRequest) -> Result<(), PubSubError> {
        if req.topic.is_empty() {
            return Err(PubSubError::BadRequest("the topic name is empty".into()));
        }
        let props = self.properties(&req)?;
        let routing_key = if self.link.meta.exchange_kind == ExchangeKind::Fanout {
            ""
        } else {
            request_value(&req.metadata, ROUTING_KEY).unwrap_or("")
        };
        let live = self.link.live().await.map_err(PubSubError::Backend)?;
        let meta = &self.link.meta;
        let publish = async {
            let confirm = {
                let mut slot = live.publisher.lock().await;
                let publisher = match slot.take() {
                    Some(p) if p.channel.status().connected() => slot.insert(p),
                    _ => {
                        let channel = live.conn.create_channel().await?;
                        channel
                            .confirm_select(ConfirmSelectOptions::default())
                            .await?;
                        slot.insert(Publisher {
                            channel,
                            exchanges: HashSet::new(),
                        })
                    }
                };
                if !publisher.exchanges.contains(&req.topic) {
                    declare_exchange(&publisher.channel, meta, &req.topic).await?;
                    publisher.exchanges.insert(req.topic.clone());
                }
                publisher
                    .channel
                    .basic_publish(
                        req.topic.as_str().into(),
                        routing_key.into(),
                        BasicPublishOptions::default(),
                        &req.data,
                        props,
                    )
                    .await?
            };
            confirm.await
        };
        let failure = match tokio::time::timeout(PUBLISH_WAIT, publish).await {
            Ok(Ok(Confirmation::Ack(_) | Confirmation::NotRequested)) => return Ok(()),
            Ok(Ok(Confirmation::Nack(_))) => {
                return Err(PubSubError::Backend(format!(
                    "RabbitMQ refused the message to topic '{}' (nack)",
                    req.topic
                )));
            }
            Ok(Err(e)) => format!("publishing to RabbitMQ topic '{}' failed: {e}", req.topic),
            Err(_) => format!(
                "RabbitMQ did not confirm the message to topic '{}' within {} s",
                req.topic,
                PUBLISH_WAIT.as_secs()
            ),
        };
        if !live.conn.status().connected() {
            self.link.invalidate(&live).await;
        } else if let Some(p) = live.publisher.lock().await.take() {
            // Start the next publish on a fresh channel.
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                p.channel.close(200, "closed by mecha".into()),
            )
            .await;
        }
        tracing::warn!(broker = %meta.display, topic = %req.topic, error = %failure, "RabbitMQ publish failed");
        Err(PubSubError::Backend(failure))
    }

    async fn subscribe(
        &self,
        req: SubscribeRequest,
        handler: MessageHandler,
    ) -> Result<Subscription, PubSubError> {
        if req.topic.is_empty() {
            return Err(PubSubError::BadRequest("the topic name is empty".into()));
        }
        let meta = &self.link.meta;
        let max_in_flight = req.max_in_flight.max(1);
        let binding_keys = if meta.exchange_kind == ExchangeKind::Fanout {
            vec![String::new()]
        } else {
            let keys: Vec<String> = request_value(&req.metadata, ROUTING_KEY)
                .unwrap_or("")
                .split(',')
                .map(|k| k.trim().to_owned())
                .collect();
            keys
        };
        let target = Arc::new(Target {
            link: self.link.clone(),
            queue: format!("{}-{}", meta.group, req.topic),
            topic: req.topic,
            binding_keys,
            prefetch: meta
                .prefetch
                .unwrap_or_else(|| u16::try_from(max_in_flight).unwrap_or(u16::MAX)),
        });
        let first = target.consume().await.map_err(PubSubError::Backend)?;
        tracing::debug!(topic = %target.topic, queue = %target.queue, "Subscribed to RabbitMQ");
        let (sub, stop) = Subscription::new();
        let task = tokio::spawn(run(target, first, handler, max_in_flight, stop));
        Ok(sub.with_task(task))
    }

    async fn close(&self) {
        self.link.closed.store(true, Ordering::Release);
        if let Some(live) = self.link.slot.lock().await.take() {
            live.close().await;
        }
    }
}

// === impl Meta ===

impl Meta {
    fn parse(init: &ComponentInit) -> Result<Self, ComponentError> {
        let md = &init.metadata;
        md.warn_unknown(
            "pubsub.rabbitmq",
            &[
                "connectionString",
                "host",
                "protocol",
                "hostname",
                "username",
                "password",
                "consumerID",
                "durable",
                "deletedWhenUnused",
                "deleteWhenUnused",
                "autoAck",
                "requeueInFailure",
                "deliveryMode",
                "prefetchCount",
                "exchangeKind",
                "maxLen",
                "maxLenBytes",
                "maxPriority",
                "ttlInSeconds",
                "enableDeadLetter",
                "publisherConfirm",
                "concurrencyMode",
                "redeliverInterval",
                "reconnectWait",
                "heartBeat",
                "clientName",
                "caCert",
                "clientCert",
                "clientKey",
                "saslExternal",
            ],
        );
        for field in ["caCert", "clientCert", "clientKey"] {
            if md
                .get(field)
                .is_some_and(|v| !v.trim().is_empty() && v.trim() != "null")
            {
                return Err(ComponentError::InvalidField {
                    field: static_key(field),
                    reason: "TLS client settings are not supported by Mecha's pubsub.rabbitmq yet"
                        .into(),
                });
            }
        }
        if md.bool("saslExternal", false)? {
            return Err(ComponentError::InvalidField {
                field: "saslExternal",
                reason: "SASL EXTERNAL is not supported by Mecha's pubsub.rabbitmq yet".into(),
            });
        }
        if md.bool("enableDeadLetter", false)? {
            return Err(ComponentError::InvalidField {
                field: "enableDeadLetter",
                reason: "Mecha's pubsub.rabbitmq always requeues failed messages and never \
                         dead-letters them; remove enableDeadLetter"
                    .into(),
            });
        }
        if md.bool("autoAck", false)? {
            tracing::warn!(
                component = %init.name,
                "Ignoring autoAck: messages are acknowledged once the app processed them"
            );
        }
        if !md.bool("requeueInFailure", true)? {
            tracing::warn!(
                component = %init.name,
                "Ignoring requeueInFailure=false: failed messages are always requeued"
            );
        }
        let _ = md.bool("publisherConfirm", true)?;

        let mut uri = connection_uri(md)?;
        let heartbeat = duration(md, "heartBeat", DEFAULT_HEARTBEAT)?;
        if uri.query.heartbeat.is_none() {
            uri.query.heartbeat = Some(u16::try_from(heartbeat.as_secs()).unwrap_or(u16::MAX));
        }
        if uri.query.connection_timeout.is_none() {
            uri.query.connection_timeout = Some(CONNECT_WAIT.as_millis() as u64);
        }
        let display = format!(
            "{}:{}/{}",
            uri.authority.host, uri.authority.port, uri.vhost
        );

        let delivery_mode = match md.u64("deliveryMode", 2)? {
            0 | 2 => 2,
            1 => 1,
            other => {
                return Err(ComponentError::InvalidField {
                    field: "deliveryMode",
                    reason: format!("'{other}' is not 1 (transient) or 2 (persistent)"),
                });
            }
        };
        let prefetch = match md.get("prefetchCount").map(str::trim) {
            None | Some("") | Some("0") => None,
            Some(_) => {
                let n = md.u64("prefetchCount", 0)?;
                Some(u16::try_from(n).map_err(|_| ComponentError::InvalidField {
                    field: "prefetchCount",
                    reason: format!("{n} is larger than 65535"),
                })?)
            }
        };
        let exchange_kind = match md
            .get("exchangeKind")
            .map(|k| k.trim().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("") | Some("fanout") => ExchangeKind::Fanout,
            Some("direct") => ExchangeKind::Direct,
            Some("topic") => ExchangeKind::Topic,
            Some("headers") => ExchangeKind::Headers,
            Some(other) => {
                return Err(ComponentError::InvalidField {
                    field: "exchangeKind",
                    reason: format!("'{other}' is not fanout, direct, topic or headers"),
                });
            }
        };
        let optional = |key: &'static str| -> Result<Option<u64>, ComponentError> {
            match md.get(key).map(str::trim) {
                None | Some("") => Ok(None),
                Some(_) => md.u64(key, 0).map(Some),
            }
        };
        let max_priority = optional("maxPriority")?.map(|p| p.min(255) as u8);
        let connection_name = md
            .get("clientName")
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .unwrap_or_else(|| format!("mecha-{}-{}", init.app_id, init.name));
        Ok(Self {
            uri,
            display,
            connection_name,
            group: consumer_group(md, &init.app_id),
            durable: md.bool("durable", true)?,
            delete_when_unused: match md.get("deletedWhenUnused") {
                Some(_) => md.bool("deletedWhenUnused", false)?,
                None => md.bool("deleteWhenUnused", false)?,
            },
            delivery_mode,
            prefetch,
            exchange_kind,
            max_len: optional("maxLen")?.filter(|n| *n > 0),
            max_len_bytes: optional("maxLenBytes")?.filter(|n| *n > 0),
            max_priority,
            default_ttl: optional("ttlInSeconds")?.filter(|n| *n > 0),
            redeliver: duration(md, "redeliverInterval", DEFAULT_REDELIVER)?,
            reconnect_wait: duration(md, "reconnectWait", DEFAULT_RECONNECT_WAIT)?
                .max(Duration::from_millis(10)),
        })
    }

    /// The arguments of a group's queue.
    fn queue_arguments(&self) -> FieldTable {
        let mut args = FieldTable::default();
        let long = |n: u64| AMQPValue::LongLongInt(i64::try_from(n).unwrap_or(i64::MAX));
        if let Some(n) = self.max_len {
            args.insert("x-max-length".into(), long(n));
        }
        if let Some(n) = self.max_len_bytes {
            args.insert("x-max-length-bytes".into(), long(n));
        }
        if let Some(p) = self.max_priority {
            args.insert("x-max-priority".into(), AMQPValue::ShortShortUInt(p));
        }
        args
    }
}

/// The AMQP URI from `connectionString`, `host`, or `protocol`/`hostname`/`username`/`password`.
fn connection_uri(md: &mecha_core::Metadata) -> Result<AMQPUri, ComponentError> {
    let nonempty = |key: &str| md.get(key).map(str::trim).filter(|v| !v.is_empty());
    let (field, raw) = if let Some(v) = nonempty("connectionString") {
        ("connectionString", v.to_owned())
    } else if let Some(v) = nonempty("host") {
        ("host", v.to_owned())
    } else if let Some(host) = nonempty("hostname") {
        let protocol = nonempty("protocol").unwrap_or("amqp");
        let userinfo = match (nonempty("username"), md.get("password")) {
            (Some(u), Some(p)) => format!("{}:{}@", percent_encode(u), percent_encode(p)),
            (Some(u), None) => format!("{}@", percent_encode(u)),
            _ => String::new(),
        };
        ("hostname", format!("{protocol}://{userinfo}{host}"))
    } else {
        return Err(ComponentError::MissingField("connectionString"));
    };
    let scheme_ok = raw.starts_with("amqp://") || raw.starts_with("amqps://");
    let uri = raw
        .parse::<AMQPUri>()
        .ok()
        .filter(|_| scheme_ok)
        .ok_or_else(|| ComponentError::InvalidField {
            field,
            reason: format!(
                "'{}' is not an AMQP URI (amqp://user:pass@host:5672/vhost)",
                redact(&raw)
            ),
        })?;
    if uri.authority.host.is_empty() {
        return Err(ComponentError::InvalidField {
            field,
            reason: format!("'{}' has no host", redact(&raw)),
        });
    }
    Ok(uri)
}

/// A Go duration field (a bare number is seconds), `default` when absent.
fn duration(
    md: &mecha_core::Metadata,
    key: &'static str,
    default: Duration,
) -> Result<Duration, ComponentError> {
    match md.get(key).map(str::trim) {
        None | Some("") => Ok(default),
        Some(v) => match v.parse::<u64>() {
            Ok(secs) => Ok(Duration::from_secs(secs)),
            Err(_) => parse_go_duration(v).map_err(|e| ComponentError::InvalidField {
                field: key,
                reason: e.to_string(),
            }),
        },
    }
}

/// The URI with its password hidden, for error messages.
fn redact(uri: &str) -> String {
    match (uri.find("://"), uri.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &uri[s + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &uri[..s + 3], &uri[at..]),
                None => uri.to_owned(),
            }
        }
        _ => uri.to_owned(),
    }
}

/// Percent-encodes a URI user-info part.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The `&'static str` spelling of a metadata key we know.
fn static_key(key: &str) -> &'static str {
    match key {
        "caCert" => "caCert",
        "clientCert" => "clientCert",
        _ => "clientKey",
    }
}

/// A non-empty request metadata value, keys matched case-insensitively.
fn request_value<'a>(md: &'a HashMap<String, String>, key: &str) -> Option<&'a str> {
    md.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

// === impl Link ===

impl Link {
    /// The open connection, reconnecting (bounded by [`CONNECT_WAIT`]) if it was lost.
    async fn live(&self) -> Result<Arc<Live>, String> {
        let attempt = async {
            let mut slot = self.slot.lock().await;
            if self.closed.load(Ordering::Acquire) {
                return Err("the pubsub.rabbitmq component is closed".to_owned());
            }
            if let Some(live) = slot.as_ref() {
                if live.conn.status().connected() {
                    return Ok(live.clone());
                }
                tracing::warn!(broker = %self.meta.display, "RabbitMQ connection lost; reconnecting");
            }
            if let Some(old) = slot.take() {
                old.close().await;
            }
            let props = ConnectionProperties::default()
                .with_connection_name(self.meta.connection_name.as_str().into());
            let conn = Connection::connect_uri(self.meta.uri.clone(), props)
                .await
                .map_err(|e| format!("cannot connect to RabbitMQ at {}: {e}", self.meta.display))?;
            tracing::info!(broker = %self.meta.display, "Connected to RabbitMQ");
            let live = Arc::new(Live {
                conn,
                publisher: Mutex::new(None),
            });
            *slot = Some(live.clone());
            Ok(live)
        };
        match tokio::time::timeout(CONNECT_WAIT, attempt).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "connecting to RabbitMQ at {} timed out after {} s",
                self.meta.display,
                CONNECT_WAIT.as_secs()
            )),
        }
    }

    /// Drops `live` if it is still the current connection, so the next use reconnects.
    async fn invalidate(&self, live: &Arc<Live>) {
        let mut slot = self.slot.lock().await;
        if slot.as_ref().is_some_and(|l| Arc::ptr_eq(l, live))
            && let Some(old) = slot.take()
        {
            old.close().await;
        }
    }
}

// === impl Live ===

impl Live {
    /// Closes the connection, ignoring errors (it may already be gone).
    async fn close(&self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            self.conn.close(200, "closed by mecha".into()),
        )
        .await;
    }
}

/// Declares the topic's exchange.
async fn declare_exchange(channel: &Channel, meta: &Meta, topic: &str) -> lapin::Result<()> {
    let options = ExchangeDeclareOptions {
        durable: meta.durable,
        auto_delete: meta.delete_when_unused,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            topic.into(),
            meta.exchange_kind.clone(),
            options,
            FieldTable::default(),
        )
        .await
}

// === impl Target ===

impl Target {
    /// Opens a channel, declares the exchange, the queue and its bindings, and consumes.
    async fn consume(&self) -> Result<Consuming, String> {
        let live = self.link.live().await?;
        let meta = &self.link.meta;
        let tag = format!("mecha-{}", uuid::Uuid::new_v4().simple());
        let open = async {
            let channel = live.conn.create_channel().await?;
            declare_exchange(&channel, meta, &self.topic).await?;
            let options = QueueDeclareOptions {
                durable: meta.durable,
                auto_delete: meta.delete_when_unused,
                ..QueueDeclareOptions::default()
            };
            channel
                .queue_declare(self.queue.as_str().into(), options, meta.queue_arguments())
                .await?;
            for key in &self.binding_keys {
                channel
                    .queue_bind(
                        self.queue.as_str().into(),
                        self.topic.as_str().into(),
                        key.as_str().into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
            }
            channel
                .basic_qos(self.prefetch, BasicQosOptions::default())
                .await?;
            let consumer = channel
                .basic_consume(
                    self.queue.as_str().into(),
                    tag.as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            Ok::<_, lapin::Error>((channel, consumer))
        };
        match tokio::time::timeout(SUBSCRIBE_WAIT, open).await {
            Ok(Ok((channel, consumer))) => Ok(Consuming {
                channel,
                tag,
                consumer,
            }),
            Ok(Err(e)) => {
                if !live.conn.status().connected() {
                    self.link.invalidate(&live).await;
                }
                Err(format!(
                    "cannot consume RabbitMQ queue '{}' of topic '{}': {e}",
                    self.queue, self.topic
                ))
            }
            Err(_) => {
                self.link.invalidate(&live).await;
                Err(format!(
                    "consuming RabbitMQ queue '{}' timed out after {} s",
                    self.queue,
                    SUBSCRIBE_WAIT.as_secs()
                ))
            }
        }
    }
}

/// Delivers messages until stopped, consuming again after the channel or connection is lost.
async fn run(
    target: Arc<Target>,
    first: Consuming,
    handler: MessageHandler,
    max_in_flight: usize,
    mut stop: StopSignal,
) {
    let permits = Arc::new(Semaphore::new(max_in_flight));
    let mut in_flight = JoinSet::new();
    let mut current = Some(first);
    let meta = &target.link.meta;
    'outer: loop {
        let mut consuming = match current.take() {
            Some(c) => c,
            None => {
                let mut wait = meta.reconnect_wait;
                loop {
                    tokio::select! {
                        _ = stop.stopped() => break 'outer,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    if target.link.closed.load(Ordering::Acquire) {
                        break 'outer;
                    }
                    match target.consume().await {
                        Ok(c) => {
                            tracing::info!(topic = %target.topic, queue = %target.queue, "RabbitMQ subscription resumed");
                            break c;
                        }
                        Err(e) => {
                            wait = (wait * 2).min(MAX_RECONNECT_WAIT);
                            tracing::warn!(topic = %target.topic, error = %e, retry_in_ms = wait.as_millis() as u64, "RabbitMQ resubscription failed");
                        }
                    }
                }
            }
        };
        loop {
            let permit = tokio::select! {
                _ = stop.stopped() => {
                    current = Some(consuming);
                    break 'outer;
                }
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break 'outer,
                },
            };
            let next = tokio::select! {
                _ = stop.stopped() => {
                    current = Some(consuming);
                    break 'outer;
                }
                next = consuming.consumer.next() => next,
            };
            match next {
                Some(Ok(delivery)) => {
                    let (handler, target, stop) = (handler.clone(), target.clone(), stop.clone());
                    in_flight.spawn(async move {
                        deliver(&target, &handler, delivery, stop).await;
                        drop(permit);
                    });
                }
                Some(Err(e)) => {
                    tracing::warn!(topic = %target.topic, error = %e, "RabbitMQ subscription lost; resubscribing");
                    break;
                }
                None => {
                    tracing::warn!(topic = %target.topic, "RabbitMQ consumer cancelled by the broker; resubscribing");
                    break;
                }
            }
            while in_flight.try_join_next().is_some() {}
        }
        // Messages in flight on the lost channel are redelivered by the broker.
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            consuming.channel.close(200, "closed by mecha".into()),
        )
        .await;
    }
    // Stopping: no new deliveries, then wait for the handlers, then give back what was
    // prefetched by closing the channel (the broker requeues unacknowledged messages).
    if let Some(c) = &current {
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            c.channel
                .basic_cancel(c.tag.as_str().into(), BasicCancelOptions::default()),
        )
        .await;
    }
    while in_flight.join_next().await.is_some() {}
    if let Some(c) = current {
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            c.channel.close(200, "closed by mecha".into()),
        )
        .await;
    }
    tracing::debug!(topic = %target.topic, queue = %target.queue, "RabbitMQ subscription stopped");
}

/// Hands one message to the handler; acks it on `Ok`, nacks it with requeue after the
/// redelivery delay otherwise. Expired messages are acked without delivery.
async fn deliver(target: &Target, handler: &MessageHandler, delivery: Delivery, stop: StopSignal) {
    let mut metadata = HashMap::new();
    let mut expires = None;
    if let Some(headers) = delivery.properties.headers() {
        for (k, v) in headers.inner() {
            if k.as_str() == EXPIRES_AT_HEADER {
                expires = match v {
                    AMQPValue::LongLongInt(n) => u64::try_from(*n).ok(),
                    AMQPValue::LongUInt(n) => Some(u64::from(*n)),
                    AMQPValue::LongInt(n) => u64::try_from(*n).ok(),
                    _ => None,
                };
                continue;
            }
            let value = match v {
                AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                AMQPValue::ShortString(s) => s.as_str().to_owned(),
                _ => continue,
            };
            metadata.insert(k.as_str().to_owned(), value);
        }
    }
    if is_expired(expires) {
        tracing::debug!(topic = %target.topic, "Dropping an expired RabbitMQ message");
        if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
            tracing::debug!(error = %e, "RabbitMQ acknowledgement failed");
        }
        return;
    }
    let msg = Message {
        topic: target.topic.clone(),
        data: Bytes::from(delivery.data),
        content_type: delivery
            .properties
            .content_type()
            .as_ref()
            .map(|c| c.as_str().to_owned()),
        metadata,
    };
    let outcome = match handler(msg).await {
        Ok(()) => delivery.acker.ack(BasicAckOptions::default()).await,
        Err(e) => {
            tracing::debug!(topic = %target.topic, error = %e, "Message not processed; redelivering later");
            let mut stop = stop;
            tokio::select! {
                _ = tokio::time::sleep(target.link.meta.redeliver) => {}
                _ = stop.stopped() => {}
            }
            delivery
                .acker
                .nack(BasicNackOptions {
                    requeue: true,
                    multiple: false,
                })
                .await
        }
    };
    if let Err(e) = outcome {
        tracing::warn!(topic = %target.topic, error = %e, "RabbitMQ acknowledgement failed; the broker will redeliver");
    }
}
