//! `pubsub.jetstream` v1: NATS JetStream as a pub/sub broker (tested against nats-server 2.9).
//!
//! - **Topics** are NATS subjects: a message is published to the subject named like its topic
//!   (so topics must be valid subjects without wildcards: no spaces, `*`, `>` or empty `.`
//!   tokens, not starting with `$`). Publishing waits for JetStream's acknowledgement (the
//!   message is stored), bounded by `publishTimeout`.
//! - **Streams.** Dapr expects the stream to exist; Mecha uses the stream that already covers
//!   the topic's subject, and otherwise creates one: named `streamName` (or, without it, after
//!   the topic with characters other than letters, digits, `-` and `_` replaced), covering the
//!   topic's subject, with limits retention and no limits set (messages stay until an operator
//!   sets limits on the stream or purges it), file storage (memory with `memoryStorage: true`)
//!   and `replicas` replicas. When a `streamName` stream exists but does not cover the topic,
//!   the topic's subject is added to its subjects (serialised within the process; a publish
//!   failing because another process undid the addition looks the stream up again next time).
//! - **Consumer groups.** Each subscription uses a durable pull consumer on the topic's stream,
//!   filtered on the topic's subject, named after the group and the topic (so every topic has
//!   its own consumer): the group is `durableName`, else `queueGroupName`, else the consumer
//!   group of the contract (`consumerID`, else the app id). All replicas of one group pull
//!   from the same consumer and so share the messages. The consumer is created with the deliver
//!   policy when missing; an existing consumer is used as it is (its position and settings are
//!   the server's). Dapr's own push consumers are not reused (the names differ).
//! - **Deliver policy** (for a new consumer): `deliverPolicy` (`all`, `last`, `new`,
//!   `sequence`, `startTime`), or `startSequence`, `startTime` (Unix seconds), `deliverAll`,
//!   `deliverNew`; the default is new messages only.
//! - **Acknowledgement.** Explicit acks only (`ackPolicy: explicit`; other policies are
//!   refused). A message is acked when the handler returned `Ok`, and NAKed with a delay of
//!   `redeliverInterval` (a Go duration, default `1s`) on `Err`. A message not answered within
//!   `ackWait` (default `30s`; e.g. its subscriber crashed) is delivered again, up to
//!   `maxDeliver` times (default unlimited), following `backOff` (`50ms, 1s, 10s`) when set.
//!   `maxAckPending` bounds the unacknowledged messages of a consumer (server default when
//!   unset).
//! - **In flight.** A subscription pulls at most its `max_in_flight` messages at a time
//!   (`concurrency: single` makes it 1); with 1, messages are delivered in publish order.
//!   Messages that still arrive for a stopped subscription's last pull request are handed back
//!   (NAK without delay) so that the group gets them at once, not after `ackWait`.
//! - **Headers.** The content type travels in the `Content-Type` header, every publish
//!   metadata entry in a header of its own name (names must be valid header names), and the
//!   expiry of a message published with `ttlInSeconds` in `Mecha-Expires-At` (milliseconds
//!   since the Unix epoch): an expired message is acknowledged and dropped instead of being
//!   delivered.
//! - **Connection**: `natsURL` (required), `name` (connection name), `token`,
//!   `tls_client_cert`/`tls_client_key` (PEM file paths, untested), `domain` and `apiPrefix` (JetStream API
//!   domain or prefix, exclusive). JWT authentication (`jwt`/`seedKey`) is not supported yet
//!   and refused. The client reconnects by itself after a server restart; the pull loops
//!   survive errors, retrying with a growing pause (at most 5 s) and logging them.
//! - Push consumer settings (`flowControl`, `heartbeat`, `rateLimit`) do not apply to pull
//!   consumers and are ignored with a warning.
//!
//! Mecha's own fields: `redeliverInterval` (above) and `publishTimeout` (a Go duration,
//! default `5s`): the longest a publish may wait for the server before failing.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_nats::jetstream::{
    self, AckKind,
    consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull},
    stream,
};
use async_nats::{HeaderMap, HeaderName, HeaderValue};
use async_trait::async_trait;
use futures::StreamExt;
use mecha_core::component::{ComponentError, ComponentInit};
use mecha_core::duration::parse_go_duration;
use mecha_core::pubsub::{
    Message, MessageHandler, PubSub, PubSubError, PubSubFeature, PublishRequest, StopSignal,
    SubscribeRequest, Subscription, consumer_group, expires_at, is_expired,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

/// The component type, for logs.
const COMPONENT: &str = "pubsub.jetstream";
/// The metadata fields this component reads.
const KNOWN: &[&str] = &[
    "natsURL",
    "name",
    "jwt",
    "seedKey",
    "token",
    "tls_client_cert",
    "tls_client_key",
    "streamName",
    "durableName",
    "queueGroupName",
    "startSequence",
    "startTime",
    "deliverAll",
    "deliverNew",
    "deliverPolicy",
    "flowControl",
    "ackWait",
    "maxDeliver",
    "backOff",
    "maxAckPending",
    "replicas",
    "memoryStorage",
    "rateLimit",
    "heartbeat",
    "ackPolicy",
    "domain",
    "apiPrefix",
    "concurrency",
    "redeliverInterval",
    "publishTimeout",
    "consumerID",
];
/// The header carrying the content type.
const CONTENT_TYPE_HEADER: &str = "Content-Type";
/// The header carrying a message's expiry (ms since the Unix epoch).
const EXPIRES_HEADER: &str = "Mecha-Expires-At";
/// The default `ackWait`.
const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);
/// The default `redeliverInterval` (NAK delay).
const DEFAULT_REDELIVER: Duration = Duration::from_secs(1);
/// The default `publishTimeout`.
const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one pull request waits at the server for messages.
const PULL_EXPIRY: Duration = Duration::from_secs(3);
/// How much longer than [`PULL_EXPIRY`] a pull waits before giving up on the server's answer
/// (lost with a server restart).
const PULL_GRACE: Duration = Duration::from_secs(1);
/// The longest pause between retries of a failing pull loop.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(5);
/// The longest stream or consumer name part derived from a topic or group.
const MAX_NAME_PART: usize = 64;

/// The `pubsub.jetstream` broker.
pub struct JetStreamPubSub {
    client: async_nats::Client,
    js: jetstream::Context,
    settings: Arc<Settings>,
    /// The stream found or created for each topic.
    streams: tokio::sync::Mutex<HashMap<String, String>>,
}

/// What the metadata configures, beyond the connection.
#[derive(Clone, Debug)]
struct Settings {
    stream_name: Option<String>,
    group: String,
    deliver_policy: DeliverPolicy,
    ack_wait: Duration,
    max_deliver: i64,
    max_ack_pending: i64,
    backoff: Vec<Duration>,
    replicas: usize,
    memory_storage: bool,
    single: bool,
    redeliver: Duration,
    publish_timeout: Duration,
}

/// One subscription's delivery loop.
struct PullLoop {
    js: jetstream::Context,
    settings: Arc<Settings>,
    topic: String,
    durable: String,
    handler: MessageHandler,
    max_in_flight: usize,
}

// === impl JetStreamPubSub ===

impl JetStreamPubSub {
    /// Connects to NATS and creates the broker.
    pub async fn create(init: ComponentInit) -> Result<Arc<dyn PubSub>, ComponentError> {
        let md = &init.metadata;
        md.warn_unknown(COMPONENT, KNOWN);
        let url = md.required("natsURL")?.trim().to_owned();
        let settings = Settings::parse(&init)?;

        for field in ["jwt", "seedKey"] {
            if non_empty(md.get(field)).is_some() {
                return Err(ComponentError::InvalidField {
                    field: if field == "jwt" { "jwt" } else { "seedKey" },
                    reason: "JWT authentication is not supported yet; use token or TLS client \
                             certificates"
                        .into(),
                });
            }
        }
        for field in ["flowControl", "heartbeat", "rateLimit"] {
            if non_empty(md.get(field)).is_some() {
                tracing::warn!(
                    component = COMPONENT,
                    field,
                    "Ignoring a push consumer setting: subscriptions use pull consumers"
                );
            }
        }

        let name = non_empty(md.get("name"))
            .map(str::to_owned)
            .unwrap_or_else(|| format!("mecha-{}-{}", init.app_id, init.name));
        let mut options = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(5))
            .reconnect_delay_callback(|attempt| {
                Duration::from_millis(100u64.saturating_mul(1 << attempt.min(5)))
                    .min(Duration::from_secs(2))
            })
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => {
                        tracing::info!(component = COMPONENT, "Connected to NATS")
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!(
                            component = COMPONENT,
                            "Disconnected from NATS; reconnecting"
                        )
                    }
                    other => {
                        tracing::debug!(component = COMPONENT, event = %other, "NATS client event")
                    }
                }
            });
        if let Some(token) = non_empty(md.get("token")) {
            options = options.token(token.to_owned());
        }
        match (
            non_empty(md.get("tls_client_cert")),
            non_empty(md.get("tls_client_key")),
        ) {
            (Some(cert), Some(key)) => {
                options = options.add_client_certificate(PathBuf::from(cert), PathBuf::from(key));
            }
            (None, None) => {}
            (Some(_), None) => return Err(ComponentError::MissingField("tls_client_key")),
            (None, Some(_)) => return Err(ComponentError::MissingField("tls_client_cert")),
        }
        let client = options.connect(url.as_str()).await.map_err(|e| {
            ComponentError::Init(format!("cannot connect to NATS at {url}: {}", describe(&e)))
        })?;

        let domain = non_empty(md.get("domain"));
        let api_prefix = non_empty(md.get("apiPrefix"));
        let builder = jetstream::ContextBuilder::new().timeout(settings.publish_timeout);
        let js = match (domain, api_prefix) {
            (Some(_), Some(_)) => {
                return Err(ComponentError::InvalidField {
                    field: "apiPrefix",
                    reason: "set either domain or apiPrefix, not both".into(),
                });
            }
            (Some(domain), None) => builder.domain(domain).build(client.clone()),
            (None, Some(prefix)) => builder.api_prefix(prefix).build(client.clone()),
            (None, None) => builder.build(client.clone()),
        };
        // Fail early when JetStream is not enabled on the server or refuses the account.
        let info: serde_json::Value =
            js.request("INFO", &serde_json::json!({}))
                .await
                .map_err(|e| {
                    ComponentError::Init(format!(
                        "JetStream is not available at {url}: {}",
                        describe(&e)
                    ))
                })?;
        if let Some(error) = info.get("error") {
            return Err(ComponentError::Init(format!(
                "JetStream is not available at {url}: {error}"
            )));
        }

        Ok(Arc::new(Self {
            client,
            js,
            settings: Arc::new(settings),
            streams: Default::default(),
        }))
    }

    /// The name of the stream covering `topic`, found or created.
    async fn stream_for(&self, topic: &str) -> Result<String, PubSubError> {
        if let Some(name) = self.streams.lock().await.get(topic) {
            return Ok(name.clone());
        }
        let name = ensure_stream(&self.js, &self.settings, topic).await?;
        self.streams
            .lock()
            .await
            .insert(topic.to_owned(), name.clone());
        Ok(name)
    }

    /// Forgets the stream of `topic` (after an error that may mean it is gone).
    async fn forget_stream(&self, topic: &str) {
        self.streams.lock().await.remove(topic);
    }
}

#[async_trait]
impl PubSub for JetStreamPubSub {
    fn features(&self) -> &[PubSubFeature] {
        &[
            PubSubFeature::MessageMetadata,
            PubSubFeature::Ordered,
            PubSubFeature::Ttl,
        ]
    }

    async fn publish(&self, req: PublishRequest) -> Result<(), PubSubError> {
        validate_subject(&req.topic)?;
        let headers = encode_headers(&req)?;
        let topic = req.topic.clone();
        let result = tokio::time::timeout(self.settings.publish_timeout, async {
            self.stream_for(&req.topic).await?;
            let ack = self
                .js
                .publish_with_headers(req.topic.clone(), headers, req.data)
                .await
                .map_err(|e| backend("cannot publish", &e))?;
            ack.await
                .map_err(|e| backend("the server did not store the message", &e))?;
            Ok(())
        })
        .await
        .unwrap_or_else(|_| {
            Err(PubSubError::Backend(format!(
                "publishing to '{topic}' timed out after {:?}",
                self.settings.publish_timeout
            )))
        });
        if result.is_err() {
            self.forget_stream(&topic).await;
        }
        result
    }

    async fn subscribe(
        &self,
        req: SubscribeRequest,
        handler: MessageHandler,
    ) -> Result<Subscription, PubSubError> {
        validate_subject(&req.topic)?;
        let durable = durable_name(&self.settings.group, &req.topic);
        let max_in_flight = if self.settings.single {
            1
        } else {
            req.max_in_flight.max(1)
        };
        let pull = PullLoop {
            js: self.js.clone(),
            settings: self.settings.clone(),
            topic: req.topic.clone(),
            durable,
            handler,
            max_in_flight,
        };
        let stream = self.stream_for(&req.topic).await?;
        let consumer = match pull.consumer(&stream).await {
            Ok(c) => c,
            Err(e) => {
                self.forget_stream(&req.topic).await;
                return Err(e);
            }
        };
        tracing::debug!(
            component = COMPONENT,
            topic = %req.topic,
            stream = %stream,
            consumer = %pull.durable,
            "Subscribed"
        );
        let (sub, stop) = Subscription::new();
        let task = tokio::spawn(pull.run(consumer, stop));
        Ok(sub.with_task(task))
    }

    async fn close(&self) {
        if let Err(e) = self.client.drain().await {
            tracing::debug!(component = COMPONENT, error = %e, "Closing the NATS connection failed");
        }
    }
}

// === impl Settings ===

impl Settings {
    fn parse(init: &ComponentInit) -> Result<Self, ComponentError> {
        let md = &init.metadata;
        let duration = |field: &'static str, default: Duration| match non_empty(md.get(field)) {
            None => Ok(default),
            Some(v) => parse_go_duration(v).map_err(|e| ComponentError::InvalidField {
                field,
                reason: e.to_string(),
            }),
        };
        let ack_policy = non_empty(md.get("ackPolicy")).unwrap_or("explicit");
        if !ack_policy.eq_ignore_ascii_case("explicit") {
            return Err(ComponentError::InvalidField {
                field: "ackPolicy",
                reason: format!(
                    "'{ack_policy}' is not supported: messages are acknowledged one by one \
                     (explicit)"
                ),
            });
        }
        let single = match non_empty(md.get("concurrency")) {
            None => false,
            Some(v) if v.eq_ignore_ascii_case("single") => true,
            Some(v) if v.eq_ignore_ascii_case("parallel") => false,
            Some(v) => {
                return Err(ComponentError::InvalidField {
                    field: "concurrency",
                    reason: format!("'{v}' is neither 'single' nor 'parallel'"),
                });
            }
        };
        let max_deliver = md.u64("maxDeliver", 0)?;
        let max_deliver = if max_deliver == 0 {
            -1
        } else {
            i64::try_from(max_deliver).unwrap_or(i64::MAX)
        };
        let max_ack_pending = md.u64("maxAckPending", 0)?;
        let max_ack_pending = if max_ack_pending == 0 {
            0
        } else {
            i64::try_from(max_ack_pending).unwrap_or(i64::MAX)
        };
        let backoff = match non_empty(md.get("backOff")) {
            None => Vec::new(),
            Some(v) => v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(parse_go_duration)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ComponentError::InvalidField {
                    field: "backOff",
                    reason: e.to_string(),
                })?,
        };
        if !backoff.is_empty() && max_deliver > 0 && max_deliver <= backoff.len() as i64 {
            return Err(ComponentError::InvalidField {
                field: "maxDeliver",
                reason: "must be greater than the number of backOff durations".into(),
            });
        }
        let replicas = md.u64("replicas", 1)?;
        if !(1..=5).contains(&replicas) {
            return Err(ComponentError::InvalidField {
                field: "replicas",
                reason: format!("{replicas} is not between 1 and 5"),
            });
        }
        let ack_wait = duration("ackWait", DEFAULT_ACK_WAIT)?;
        if ack_wait < Duration::from_millis(100) {
            return Err(ComponentError::InvalidField {
                field: "ackWait",
                reason: "must be at least 100ms".into(),
            });
        }
        let publish_timeout = duration("publishTimeout", DEFAULT_PUBLISH_TIMEOUT)?;
        if publish_timeout.is_zero() {
            return Err(ComponentError::InvalidField {
                field: "publishTimeout",
                reason: "must be positive".into(),
            });
        }
        let stream_name = match non_empty(md.get("streamName")) {
            None => None,
            Some(v) if is_valid_name(v) => Some(v.to_owned()),
            Some(v) => {
                return Err(ComponentError::InvalidField {
                    field: "streamName",
                    reason: format!(
                        "'{v}' is not a valid stream name (no spaces, '.', '*', '>', '/' or '\\')"
                    ),
                });
            }
        };
        let group = non_empty(md.get("durableName"))
            .or_else(|| non_empty(md.get("queueGroupName")))
            .map(str::to_owned)
            .unwrap_or_else(|| consumer_group(md, &init.app_id));
        Ok(Self {
            stream_name,
            group,
            deliver_policy: deliver_policy(md)?,
            ack_wait,
            max_deliver,
            max_ack_pending,
            backoff,
            replicas: replicas as usize,
            memory_storage: md.bool("memoryStorage", false)?,
            single,
            redeliver: duration("redeliverInterval", DEFAULT_REDELIVER)?,
            publish_timeout,
        })
    }
}

/// The deliver policy of new consumers.
fn deliver_policy(md: &mecha_core::Metadata) -> Result<DeliverPolicy, ComponentError> {
    let start_sequence = match non_empty(md.get("startSequence")) {
        None => None,
        Some(_) => match md.u64("startSequence", 0)? {
            0 => {
                return Err(ComponentError::InvalidField {
                    field: "startSequence",
                    reason: "sequences start at 1".into(),
                });
            }
            n => Some(n),
        },
    };
    let start_time = match non_empty(md.get("startTime")) {
        None => None,
        Some(_) => Some(md.u64("startTime", 0)?),
    };
    let by_sequence = || {
        start_sequence
            .map(|start_sequence| DeliverPolicy::ByStartSequence { start_sequence })
            .ok_or(ComponentError::MissingField("startSequence"))
    };
    let by_time = || match start_time {
        Some(secs) => by_start_time(secs),
        None => Err(ComponentError::MissingField("startTime")),
    };
    match non_empty(md.get("deliverPolicy")).map(str::to_ascii_lowercase) {
        Some(p) => match p.as_str() {
            "all" => Ok(DeliverPolicy::All),
            "last" => Ok(DeliverPolicy::Last),
            "new" => Ok(DeliverPolicy::New),
            "sequence" => by_sequence(),
            "starttime" => by_time(),
            _ => Err(ComponentError::InvalidField {
                field: "deliverPolicy",
                reason: format!("'{p}' is not one of all, last, new, sequence, startTime"),
            }),
        },
        None if start_sequence.is_some() => by_sequence(),
        None if start_time.is_some() => by_time(),
        None if md.bool("deliverAll", false)? => Ok(DeliverPolicy::All),
        None => {
            // `deliverNew` is the default; read it only to refuse a bad value.
            md.bool("deliverNew", true)?;
            Ok(DeliverPolicy::New)
        }
    }
}

/// A by-start-time deliver policy from Unix seconds.
fn by_start_time(secs: u64) -> Result<DeliverPolicy, ComponentError> {
    let invalid = |reason: String| ComponentError::InvalidField {
        field: "startTime",
        reason,
    };
    let stamp = rfc3339(secs).ok_or_else(|| invalid(format!("{secs} is out of range")))?;
    serde_json::from_value(serde_json::json!({
        "deliver_policy": "by_start_time",
        "opt_start_time": stamp,
    }))
    .map_err(|e| invalid(e.to_string()))
}

/// `secs` since the Unix epoch as an RFC 3339 UTC timestamp.
fn rfc3339(secs: u64) -> Option<String> {
    let days = i64::try_from(secs / 86_400).ok()?;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    if year > 9999 {
        return None;
    }
    Some(format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    ))
}

// === streams and names ===

/// Serialises stream creation and updates within this process, so that two subscriptions
/// adding subjects to one stream do not undo each other's update.
fn stream_setup_lock() -> &'static tokio::sync::Mutex<()> {
    static LOCK: OnceLock<tokio::sync::Mutex<()>> = OnceLock::new();
    LOCK.get_or_init(Default::default)
}

/// Finds the stream covering `topic`, creating it or adding the subject to `streamName`.
async fn ensure_stream(
    js: &jetstream::Context,
    settings: &Settings,
    topic: &str,
) -> Result<String, PubSubError> {
    let _guard = stream_setup_lock().lock().await;
    let mut last_error = String::new();
    for _ in 0..3 {
        match js.stream_by_subject(topic).await {
            Ok(name) => return Ok(name),
            Err(e) if e.kind() == jetstream::context::GetStreamByNameErrorKind::NotFound => {}
            Err(e) => return Err(backend("cannot look up the stream of the topic", &e)),
        }
        let name = settings
            .stream_name
            .clone()
            .unwrap_or_else(|| name_part(topic));
        let outcome = match js.get_stream(&name).await {
            Ok(mut stream) => {
                let mut config = match stream.info().await {
                    Ok(info) => info.config.clone(),
                    Err(e) => return Err(backend("cannot read the stream", &e)),
                };
                config.subjects.push(topic.to_owned());
                tracing::info!(component = COMPONENT, stream = %name, subject = %topic, "Adding the topic's subject to the stream");
                js.update_stream(config)
                    .await
                    .map(drop)
                    .map_err(|e| describe(&e))
            }
            Err(e)
                if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(ref j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
            {
                tracing::info!(component = COMPONENT, stream = %name, subject = %topic, "Creating the stream");
                js.create_stream(stream::Config {
                    name: name.clone(),
                    subjects: vec![topic.to_owned()],
                    retention: stream::RetentionPolicy::Limits,
                    storage: if settings.memory_storage {
                        stream::StorageType::Memory
                    } else {
                        stream::StorageType::File
                    },
                    num_replicas: settings.replicas,
                    ..Default::default()
                })
                .await
                .map(drop)
                .map_err(|e| describe(&e))
            }
            Err(e) => return Err(backend("cannot read the stream", &e)),
        };
        match outcome {
            Ok(()) => return Ok(name),
            // Another process may have changed the stream at the same time: look again.
            Err(e) => last_error = e,
        }
    }
    Err(PubSubError::Backend(format!(
        "cannot create a stream for topic '{topic}': {last_error}"
    )))
}

/// The durable consumer name of `group` on `topic`.
fn durable_name(group: &str, topic: &str) -> String {
    format!(
        "{}_{}_{:08x}",
        name_part(group),
        name_part(topic),
        fnv1a(&[group.as_bytes(), b"\0", topic.as_bytes()].concat()) as u32
    )
}

/// `raw` as a stream or consumer name: letters, digits, `-` and `_` kept, other characters
/// replaced by `_`; a hash of `raw` is appended when anything was replaced or cut.
fn name_part(raw: &str) -> String {
    let mut out: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out != raw || out.len() > MAX_NAME_PART || out.is_empty() {
        out.truncate(MAX_NAME_PART - 9);
        out.push_str(&format!("-{:08x}", fnv1a(raw.as_bytes()) as u32));
    }
    out
}

/// The 64-bit FNV-1a hash.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Whether `name` is a valid stream or consumer name.
fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.chars().any(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>' | '/' | '\\')
        })
}

/// Refuses topics that are not plain NATS subjects.
fn validate_subject(topic: &str) -> Result<(), PubSubError> {
    let bad = |why: &str| {
        Err(PubSubError::BadRequest(format!(
            "invalid topic '{topic}': {why}"
        )))
    };
    if topic.is_empty() {
        return bad("the topic name is empty");
    }
    if topic.starts_with('$') {
        return bad("subjects starting with '$' are reserved");
    }
    if topic.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("NATS subjects cannot contain spaces or control characters");
    }
    for token in topic.split('.') {
        if token.is_empty() {
            return bad("NATS subjects cannot have empty '.'-separated tokens");
        }
        if token == "*" || token == ">" {
            return bad("wildcards cannot be published to");
        }
    }
    Ok(())
}

// === headers ===

/// The headers of a published message.
fn encode_headers(req: &PublishRequest) -> Result<HeaderMap, PubSubError> {
    let mut headers = HeaderMap::new();
    let header = |name: &str, value: &str| -> Result<(HeaderName, HeaderValue), PubSubError> {
        let n = HeaderName::from_str(name).map_err(|_| {
            PubSubError::BadRequest(format!(
                "metadata key '{name}' cannot be sent as a NATS header"
            ))
        })?;
        let v = HeaderValue::from_str(value).map_err(|_| {
            PubSubError::BadRequest(format!(
                "the value of metadata key '{name}' cannot be sent as a NATS header (line breaks)"
            ))
        })?;
        Ok((n, v))
    };
    for (k, v) in &req.metadata {
        if k.eq_ignore_ascii_case(CONTENT_TYPE_HEADER) || k.eq_ignore_ascii_case(EXPIRES_HEADER) {
            continue;
        }
        let (n, v) = header(k, v)?;
        headers.insert(n, v);
    }
    if let Some(ct) = &req.content_type {
        let (n, v) = header(CONTENT_TYPE_HEADER, ct)?;
        headers.insert(n, v);
    }
    if let Some(at) = expires_at(&req.metadata) {
        let (n, v) = header(EXPIRES_HEADER, &at.to_string())?;
        headers.insert(n, v);
    }
    Ok(headers)
}

/// The content type, metadata and expiry carried by `headers`.
fn decode_headers(
    headers: Option<&HeaderMap>,
) -> (Option<String>, HashMap<String, String>, Option<u64>) {
    let mut content_type = None;
    let mut metadata = HashMap::new();
    let mut expires = None;
    if let Some(headers) = headers {
        for (name, values) in headers.iter() {
            let name: &str = name.as_ref();
            let Some(value) = values.last().map(|v| v.as_str().to_owned()) else {
                continue;
            };
            if name.eq_ignore_ascii_case(CONTENT_TYPE_HEADER) {
                content_type = Some(value);
            } else if name.eq_ignore_ascii_case(EXPIRES_HEADER) {
                expires = value.parse().ok();
            } else if !name.starts_with("Nats-") {
                metadata.insert(name.to_owned(), value);
            }
        }
    }
    (content_type, metadata, expires)
}

// === impl PullLoop ===

impl PullLoop {
    /// The group's durable pull consumer on `stream`, created when missing.
    async fn consumer(&self, stream: &str) -> Result<PullConsumer, PubSubError> {
        let stream = self
            .js
            .get_stream_no_info(stream)
            .await
            .map_err(|e| backend("cannot open the stream", &e))?;
        let s = &self.settings;
        let config = pull::Config {
            durable_name: Some(self.durable.clone()),
            description: Some(format!(
                "Consumer group '{}' of topic '{}'",
                s.group, self.topic
            )),
            deliver_policy: s.deliver_policy,
            ack_policy: AckPolicy::Explicit,
            ack_wait: s.ack_wait,
            max_deliver: s.max_deliver,
            max_ack_pending: s.max_ack_pending,
            backoff: s.backoff.clone(),
            filter_subject: self.topic.clone(),
            num_replicas: if s.replicas > 1 { s.replicas } else { 0 },
            ..Default::default()
        };
        let consumer: PullConsumer = stream
            .get_or_create_consumer(&self.durable, config)
            .await
            .map_err(|e| backend("cannot create the durable consumer", &e))?;
        let filter = &consumer.cached_info().config.filter_subject;
        if filter != &self.topic {
            return Err(PubSubError::Backend(format!(
                "consumer '{}' exists with filter subject '{filter}', not '{}'",
                self.durable, self.topic
            )));
        }
        Ok(consumer)
    }

    /// Pulls and delivers messages until `stop`.
    async fn run(self, consumer: PullConsumer, mut stop: StopSignal) {
        let this = Arc::new(self);
        let permits = Arc::new(Semaphore::new(this.max_in_flight));
        let mut in_flight = JoinSet::new();
        let mut consumer = Some(consumer);
        let mut failures: u32 = 0;
        'pull: loop {
            while in_flight.try_join_next().is_some() {}
            if failures > 0 {
                let pause = Duration::from_millis(100u64.saturating_mul(1 << failures.min(6)))
                    .min(MAX_RETRY_PAUSE);
                tokio::select! {
                    _ = stop.stopped() => break 'pull,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
            // Find the consumer again after errors: it (or its stream) may have been lost.
            let current = match consumer.take() {
                Some(c) => c,
                None => {
                    let found = tokio::select! {
                        _ = stop.stopped() => break 'pull,
                        found = this.reopen() => found,
                    };
                    match found {
                        Ok(c) => c,
                        Err(e) => {
                            failures = failures.saturating_add(1);
                            tracing::warn!(component = COMPONENT, topic = %this.topic, consumer = %this.durable, error = %e, failures, "Cannot reopen the consumer; retrying");
                            continue;
                        }
                    }
                }
            };
            // Pull as many messages as handler calls may start now.
            let first = tokio::select! {
                _ = stop.stopped() => break 'pull,
                p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break 'pull },
            };
            let mut held: Vec<OwnedSemaphorePermit> = vec![first];
            while let Ok(p) = permits.clone().try_acquire_owned() {
                held.push(p);
            }
            // Not raced against `stop`: a pull request sent but not followed would hold
            // messages until they time out; a stop during the pull hands them back instead.
            let batch = tokio::time::timeout(
                PULL_EXPIRY,
                current
                    .batch()
                    .max_messages(held.len())
                    .expires(PULL_EXPIRY)
                    .messages(),
            )
            .await;
            let mut batch = match batch {
                Ok(Ok(b)) => b,
                Ok(Err(e)) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(component = COMPONENT, topic = %this.topic, consumer = %this.durable, error = %describe(&e), failures, "Pulling messages failed; retrying");
                    continue;
                }
                Err(_) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(component = COMPONENT, topic = %this.topic, consumer = %this.durable, failures, "Sending a pull request timed out; retrying");
                    continue;
                }
            };
            let deadline = tokio::time::Instant::now() + PULL_EXPIRY + PULL_GRACE;
            let mut failed = false;
            loop {
                tokio::select! {
                    biased;
                    _ = stop.stopped() => {
                        drop(held);
                        tokio::spawn(give_back(batch, deadline, this.topic.clone()));
                        break 'pull;
                    }
                    _ = tokio::time::sleep_until(deadline) => break,
                    next = batch.next() => match next {
                        None => break,
                        Some(Err(e)) => {
                            tracing::warn!(component = COMPONENT, topic = %this.topic, consumer = %this.durable, error = %e, failures, "Pulling messages failed; retrying");
                            failed = true;
                            break;
                        }
                        Some(Ok(msg)) => {
                            failures = 0;
                            let Some(permit) = held.pop() else { break };
                            in_flight.spawn(this.clone().deliver(msg, permit));
                        }
                    },
                }
            }
            drop(held);
            if failed {
                failures = failures.saturating_add(1);
            } else {
                consumer = Some(current);
            }
        }
        while in_flight.join_next().await.is_some() {}
    }

    /// Finds (or recreates) the stream and the consumer after an error.
    async fn reopen(&self) -> Result<PullConsumer, PubSubError> {
        let stream = ensure_stream(&self.js, &self.settings, &self.topic).await?;
        self.consumer(&stream).await
    }

    /// Hands one message to the handler and acks or NAKs it.
    async fn deliver(self: Arc<Self>, msg: jetstream::Message, permit: OwnedSemaphorePermit) {
        let (content_type, metadata, expires) = decode_headers(msg.headers.as_ref());
        if is_expired(expires) {
            tracing::debug!(component = COMPONENT, topic = %self.topic, "Dropping an expired message");
            if let Err(e) = msg.ack().await {
                tracing::debug!(component = COMPONENT, topic = %self.topic, error = %e, "Acknowledging an expired message failed");
            }
            return;
        }
        let message = Message {
            topic: self.topic.clone(),
            data: msg.payload.clone(),
            content_type,
            metadata,
        };
        let result = (self.handler)(message).await;
        let ack = match &result {
            Ok(()) => msg.ack().await,
            Err(e) => {
                tracing::debug!(component = COMPONENT, topic = %self.topic, error = %e, "Message not processed; redelivering later");
                msg.ack_with(AckKind::Nak(Some(self.settings.redeliver)))
                    .await
            }
        };
        if let Err(e) = ack {
            tracing::warn!(component = COMPONENT, topic = %self.topic, error = %e, "Answering a message failed; the server will deliver it again");
        }
        drop(permit);
    }
}

/// Hands back (NAKs without delay) the messages that still arrive for the pull request of a
/// stopped subscription, until the request expires, so that other subscribers get them at once
/// rather than after `ackWait`.
async fn give_back(mut batch: pull::Batch, deadline: tokio::time::Instant, topic: String) {
    let _ = tokio::time::timeout_at(deadline, async {
        while let Some(Ok(msg)) = batch.next().await {
            if let Err(e) = msg.ack_with(AckKind::Nak(None)).await {
                tracing::debug!(component = COMPONENT, topic = %topic, error = %e, "Handing back a message failed");
            }
        }
    })
    .await;
}

// === helpers ===

/// `v` unless blank.
fn non_empty(v: Option<&str>) -> Option<&str> {
    v.map(str::trim).filter(|v| !v.is_empty())
}

/// An error and its sources, as one line.
fn describe(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    out
}

/// A backend error: `what` and the cause.
fn backend(what: &str, e: &dyn std::error::Error) -> PubSubError {
    PubSubError::Backend(format!("{what}: {}", describe(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(name_part("orders"), "orders");
        let dotted = name_part("orders.created");
        assert!(dotted.starts_with("orders_created-"), "{dotted}");
        assert!(is_valid_name(&dotted));
        assert_ne!(name_part("a.b"), name_part("a_b"));
        let long = name_part(&"x".repeat(300));
        assert!(long.len() <= MAX_NAME_PART);
        assert_ne!(durable_name("a-b", "c"), durable_name("a", "b-c"));
        assert!(is_valid_name(&durable_name("my app", "t.1")));
    }

    #[test]
    fn subjects() {
        assert!(validate_subject("orders.created").is_ok());
        for bad in ["", "a b", "a..b", ".a", "a.", "a.*", ">", "$JS.API.x"] {
            assert!(validate_subject(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0).as_deref(), Some("1970-01-01T00:00:00Z"));
        assert_eq!(
            rfc3339(1_630_349_391).as_deref(),
            Some("2021-08-30T18:49:51Z")
        );
        assert_eq!(
            rfc3339(951_782_400).as_deref(),
            Some("2000-02-29T00:00:00Z")
        );
    }
}
