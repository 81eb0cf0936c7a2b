//! `pubsub.redis` v1: a broker on Redis Streams with consumer groups, laid out as Dapr's.
//!
//! Each topic is a stream of that name. Publishing is `XADD` (one pipelined round of them for
//! a bulk publish); each entry carries the field `data` (the payload, verbatim), and, when
//! they are set, `metadata` (the request metadata as a JSON object, as Dapr writes it),
//! `contentType` and `expiresAt` (milliseconds since the Unix epoch, from the request's
//! `ttlInSeconds`). Entries written by Dapr (only `data`, maybe `metadata`) are read as well.
//!
//! Subscribing creates the consumer group (`XGROUP CREATE … 0 MKSTREAM`, as Dapr, so a new
//! group also reads what the stream already holds; an existing group is kept). Every
//! subscription is its own consumer in the group, named `<app id>-<uuid>`, and reads with a
//! blocking `XREADGROUP` on a connection of its own, so that publishing on the shared,
//! multiplexed connection never waits behind a blocked read. It takes only as many entries as
//! it has free handler slots ([`SubscribeRequest::max_in_flight`]), so with one slot the
//! entries are handed over in stream (publish) order. An entry is acknowledged (`XACK`) once
//! the handler returned `Ok`; an expired entry is acknowledged without being delivered.
//!
//! Redelivery:
//! * a failed handler call: the entry stays pending for this consumer and is claimed back and
//!   delivered again after `redeliverInterval` (after `processingTimeout` when that is `0`);
//! * a consumer that died with entries pending (a crashed sidecar, a handler that never
//!   returned): every `redeliverInterval` each subscription runs `XAUTOCLAIM` for the entries
//!   idle longer than `processingTimeout` and delivers them; `0` for either disables this.
//!   A handler call that runs longer than `processingTimeout` may thus see its message
//!   delivered to another member of the group as well, as in Dapr.
//!
//! When Redis goes away, publishing fails with [`PubSubError::Backend`] within the call
//! timeout, and the readers reconnect by themselves with a growing backoff (logged once per
//! outage), recreating the group if the stream was lost. A subscription that stops cleanly
//! with nothing pending removes its consumer from the group.
//!
//! Metadata: the connection keys of every Redis component (`redisHost` required,
//! `redisPassword`, `redisUsername`, `redisDB`, `enableTLS`, `dialTimeout`, `readTimeout`,
//! `writeTimeout`, `maxRetries`, …; see `state::redis::connection`; `redisType: cluster`,
//! `failover` and `useEntraID` are refused), and:
//! * `consumerID`: the consumer group, default the app id;
//! * `processingTimeout` (default `60s`) and `redeliverInterval` (default `60s`): Go durations
//!   or integers of milliseconds, see above;
//! * `queueDepth` (default 100): the most entries one `XREADGROUP` or `XAUTOCLAIM` takes;
//! * `maxLenApprox`: trims each stream to about this many entries on publish (`MAXLEN ~`);
//! * `streamTTL`: a Go duration; trims entries older than this on publish (`MINID ~`); used
//!   only without `maxLenApprox`, as in Dapr;
//! * `concurrency`: accepted and ignored; the subscription's `max_in_flight` decides how many
//!   handler calls run at once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use mecha_core::component::{ComponentError, ComponentInit};
use mecha_core::duration::parse_go_duration;
use mecha_core::pubsub::{
    CONSUMER_ID, Message, MessageHandler, PubSub, PubSubError, PubSubFeature, PublishRequest,
    StopSignal, SubscribeRequest, Subscription, consumer_group, expires_at, is_expired, now_millis,
};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ProtocolVersion, RedisError, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::state::redis::connection::{CONNECTION_KEYS, ConnectionMetadata, RedisConnection};

const PROCESSING_TIMEOUT: &str = "processingTimeout";
const REDELIVER_INTERVAL: &str = "redeliverInterval";
const QUEUE_DEPTH: &str = "queueDepth";
const CONCURRENCY: &str = "concurrency";
const MAX_LEN_APPROX: &str = "maxLenApprox";
const STREAM_TTL: &str = "streamTTL";
const PUBSUB_KEYS: &[&str] = &[
    CONSUMER_ID,
    PROCESSING_TIMEOUT,
    REDELIVER_INTERVAL,
    QUEUE_DEPTH,
    CONCURRENCY,
    MAX_LEN_APPROX,
    STREAM_TTL,
];

/// Entry fields.
const FIELD_DATA: &str = "data";
const FIELD_METADATA: &str = "metadata";
const FIELD_CONTENT_TYPE: &str = "contentType";
const FIELD_EXPIRES_AT: &str = "expiresAt";

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_QUEUE_DEPTH: u64 = 100;
/// How long one `XREADGROUP` blocks; bounds how long a redelivery waits for a handler slot
/// that the reader holds.
const READ_BLOCK: Duration = Duration::from_secs(1);
/// The reader's first and longest reconnection backoff.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// The most `XAUTOCLAIM` pages one reclaim pass reads.
const MAX_RECLAIM_PAGES: usize = 10;

/// The `pubsub.redis` broker.
pub struct RedisPubSub {
    redis: RedisConnection,
    settings: Arc<Settings>,
    closed: watch::Sender<bool>,
}

/// The validated metadata.
struct Settings {
    connection: ConnectionMetadata,
    app_id: String,
    group: String,
    /// `processingTimeout`; zero disables reclaiming.
    processing_timeout: Duration,
    /// `redeliverInterval`; zero disables reclaiming.
    redeliver_interval: Duration,
    /// How long a failed entry waits before it is delivered again.
    retry_delay: Duration,
    queue_depth: usize,
    max_len_approx: Option<u64>,
    stream_ttl: Option<Duration>,
}

/// One subscription: a consumer of the group.
struct Consumer {
    redis: RedisConnection,
    settings: Arc<Settings>,
    topic: String,
    name: String,
    handler: MessageHandler,
    permits: Arc<Semaphore>,
    max_in_flight: usize,
    /// Entries this subscription is handling or will retry; a reclaim pass skips them.
    owned: Mutex<HashSet<String>>,
    halt: Halt,
}

/// Set when the subscription is stopped or the broker closed.
#[derive(Clone)]
struct Halt {
    stop: StopSignal,
    closed: watch::Receiver<bool>,
}

/// One stream entry: its id and fields, `None` when the entry was deleted meanwhile.
struct Entry {
    id: String,
    fields: Option<HashMap<String, Vec<u8>>>,
}

// === impl RedisPubSub ===

impl RedisPubSub {
    /// Connects to `redisHost`, checking that it answers, and returns the broker.
    pub async fn create(init: ComponentInit) -> Result<Arc<dyn PubSub>, ComponentError> {
        let known: Vec<&str> = CONNECTION_KEYS.iter().chain(PUBSUB_KEYS).copied().collect();
        init.metadata.warn_unknown(&init.name, &known);
        let settings = Settings::parse(&init)?;
        let redis = RedisConnection::connect(&settings.connection).await?;
        let (closed, _) = watch::channel(false);
        Ok(Arc::new(Self {
            redis,
            settings: Arc::new(settings),
            closed,
        }))
    }

    /// The `XADD` of one message.
    fn xadd(&self, req: &PublishRequest) -> redis::Cmd {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&req.topic);
        if let Some(n) = self.settings.max_len_approx {
            cmd.arg("MAXLEN").arg("~").arg(n);
        } else if let Some(ttl) = self.settings.stream_ttl {
            let ttl = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
            cmd.arg("MINID")
                .arg("~")
                .arg(format!("{}-0", now_millis().saturating_sub(ttl)));
        }
        cmd.arg("*").arg(FIELD_DATA).arg(req.data.as_ref());
        if !req.metadata.is_empty() {
            // A map of strings always serialises.
            let json = serde_json::to_vec(&req.metadata).unwrap_or_default();
            cmd.arg(FIELD_METADATA).arg(json);
        }
        if let Some(ct) = &req.content_type {
            cmd.arg(FIELD_CONTENT_TYPE).arg(ct);
        }
        if let Some(at) = expires_at(&req.metadata) {
            cmd.arg(FIELD_EXPIRES_AT).arg(at);
        }
        cmd
    }
}

#[async_trait]
impl PubSub for RedisPubSub {
    fn features(&self) -> &[PubSubFeature] {
        &[
            PubSubFeature::MessageMetadata,
            PubSubFeature::Ordered,
            PubSubFeature::Ttl,
        ]
    }

    async fn publish(&self, req: PublishRequest) -> Result<(), PubSubError> {
        check_topic(&req.topic)?;
        let cmd = self.xadd(&req);
        self.redis
            .call(|mut c| {
                let cmd = cmd.clone();
                async move { cmd.query_async::<Value>(&mut c).await }
            })
            .await
            .map(drop)
            .map_err(PubSubError::Backend)
    }

    async fn bulk_publish(&self, reqs: Vec<PublishRequest>) -> Vec<Result<(), PubSubError>> {
        // The multiplexed connection pipelines concurrent calls, in the order they are sent.
        futures::future::join_all(reqs.into_iter().map(|req| self.publish(req))).await
    }

    async fn subscribe(
        &self,
        req: SubscribeRequest,
        handler: MessageHandler,
    ) -> Result<Subscription, PubSubError> {
        check_topic(&req.topic)?;
        ensure_group(&self.redis, &req.topic, &self.settings.group)
            .await
            .map_err(PubSubError::Backend)?;
        let reader = connect_reader(&self.settings.connection)
            .await
            .map_err(PubSubError::Backend)?;
        let (sub, stop) = Subscription::new();
        let max_in_flight = req.max_in_flight.max(1);
        let consumer = Arc::new(Consumer {
            redis: self.redis.clone(),
            settings: self.settings.clone(),
            name: format!("{}-{}", self.settings.app_id, uuid::Uuid::new_v4().simple()),
            topic: req.topic,
            handler,
            permits: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            owned: Mutex::new(HashSet::new()),
            halt: Halt {
                stop,
                closed: self.closed.subscribe(),
            },
        });
        tracing::debug!(
            topic = %consumer.topic,
            group = %self.settings.group,
            consumer = %consumer.name,
            "Subscribed to Redis stream"
        );
        let mut sub = sub.with_task(tokio::spawn(consumer.clone().read_loop(reader)));
        if !self.settings.processing_timeout.is_zero()
            && !self.settings.redeliver_interval.is_zero()
        {
            sub = sub.with_task(tokio::spawn(consumer.reclaim_loop()));
        }
        Ok(sub)
    }

    async fn close(&self) {
        self.closed.send_replace(true);
    }
}

// === impl Settings ===

impl Settings {
    fn parse(init: &ComponentInit) -> Result<Self, ComponentError> {
        let md = &init.metadata;
        let connection = ConnectionMetadata::parse(init)?;
        let processing_timeout =
            duration(md.get(PROCESSING_TIMEOUT), PROCESSING_TIMEOUT)?.unwrap_or(DEFAULT_TIMEOUT);
        let redeliver_interval =
            duration(md.get(REDELIVER_INTERVAL), REDELIVER_INTERVAL)?.unwrap_or(DEFAULT_TIMEOUT);
        let retry_delay = [redeliver_interval, processing_timeout]
            .into_iter()
            .find(|d| !d.is_zero())
            .unwrap_or(DEFAULT_TIMEOUT);
        let queue_depth = md.u64(QUEUE_DEPTH, DEFAULT_QUEUE_DEPTH)?;
        if queue_depth == 0 {
            return Err(ComponentError::InvalidField {
                field: QUEUE_DEPTH,
                reason: "must be at least 1".into(),
            });
        }
        // Checked so that a typo is reported, though the value is not used.
        md.u64(CONCURRENCY, 10)?;
        let max_len_approx = Some(md.u64(MAX_LEN_APPROX, 0)?).filter(|n| *n > 0);
        let stream_ttl = duration(md.get(STREAM_TTL), STREAM_TTL)?.filter(|d| !d.is_zero());
        Ok(Self {
            connection,
            app_id: init.app_id.clone(),
            group: consumer_group(md, &init.app_id),
            processing_timeout,
            redeliver_interval,
            retry_delay,
            queue_depth: usize::try_from(queue_depth).unwrap_or(usize::MAX),
            max_len_approx,
            stream_ttl,
        })
    }
}

// === impl Consumer ===

impl Consumer {
    /// Reads new entries with a blocking `XREADGROUP` on a connection of its own, reconnecting
    /// after failures; at the end waits for the handler calls in flight.
    async fn read_loop(self: Arc<Self>, reader: MultiplexedConnection) {
        let mut conn = Some(reader);
        let mut halt = self.halt.clone();
        let mut backoff = MIN_BACKOFF;
        let mut failing = false;
        while !halt.is_set() {
            let mut c = match conn.take() {
                Some(c) => c,
                None => match connect_reader(&self.settings.connection).await {
                    Ok(c) => c,
                    Err(e) => {
                        if !failing {
                            tracing::warn!(topic = %self.topic, error = %e, "Redis stream reader lost its connection; reconnecting");
                            failing = true;
                        }
                        tokio::select! {
                            _ = halt.wait() => break,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                },
            };
            let Some(permits) = self.free_slots(&mut halt).await else {
                break;
            };
            let mut cmd = redis::cmd("XREADGROUP");
            cmd.arg("GROUP")
                .arg(&self.settings.group)
                .arg(&self.name)
                .arg("COUNT")
                .arg(permits.len())
                .arg("BLOCK")
                .arg(READ_BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&self.topic)
                .arg(">");
            let read = cmd.query_async::<Value>(&mut c);
            let read = tokio::select! {
                _ = halt.wait() => break,
                r = read => r,
            };
            match read {
                Ok(reply) => {
                    if failing {
                        tracing::info!(topic = %self.topic, "Redis stream reader reconnected");
                        failing = false;
                    }
                    backoff = MIN_BACKOFF;
                    conn = Some(c);
                    for (entry, permit) in parse_read(reply).into_iter().zip(permits) {
                        self.clone().dispatch(entry, permit).await;
                    }
                }
                Err(e) if e.code() == Some("NOGROUP") => {
                    tracing::info!(topic = %self.topic, group = %self.settings.group, "Redis stream or consumer group is gone; creating it again");
                    conn = Some(c);
                    drop(permits);
                    if let Err(e) =
                        ensure_group(&self.redis, &self.topic, &self.settings.group).await
                    {
                        tracing::debug!(topic = %self.topic, error = %e, "Creating the consumer group failed");
                        tokio::select! {
                            _ = halt.wait() => break,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
                Err(e) => {
                    drop(permits);
                    if !failing {
                        tracing::warn!(topic = %self.topic, error = %describe(&e), "Redis stream read failed; reconnecting");
                        failing = true;
                    }
                    tokio::select! {
                        _ = halt.wait() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        drop(conn);
        // Every slot free again means no handler call runs, and none will start (each one
        // checks the halt after taking its slot).
        let all = u32::try_from(self.max_in_flight).unwrap_or(u32::MAX);
        let _ = self.permits.acquire_many(all).await;
        if self.halt.stop.is_stopped() {
            self.forget().await;
        }
    }

    /// Every `redeliverInterval`, claims the entries of the group idle longer than
    /// `processingTimeout` (a dead consumer's) and delivers them.
    async fn reclaim_loop(self: Arc<Self>) {
        let mut halt = self.halt.clone();
        let mut ticks = tokio::time::interval(self.settings.redeliver_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let idle = u64::try_from(self.settings.processing_timeout.as_millis()).unwrap_or(u64::MAX);
        loop {
            tokio::select! {
                _ = halt.wait() => return,
                _ = ticks.tick() => {}
            }
            let mut cursor = "0-0".to_owned();
            for _ in 0..MAX_RECLAIM_PAGES {
                // Free slots first, so that claimed entries are handed over at once (a claim
                // resets their idle time; waiting afterwards would let them age again).
                let Some(mut permits) = self.free_slots(&mut halt).await else {
                    return;
                };
                // What this subscription handles now: an entry acknowledged while the claim
                // is under way may still come back in the reply, and must not be redelivered.
                let handling = self.lock_owned().clone();
                let (topic, group, name, count) =
                    (&self.topic, &self.settings.group, &self.name, permits.len());
                let start = &cursor;
                let reply = self
                    .redis
                    .call(|mut c| async move {
                        redis::cmd("XAUTOCLAIM")
                            .arg(topic)
                            .arg(group)
                            .arg(name)
                            .arg(idle)
                            .arg(start)
                            .arg("COUNT")
                            .arg(count)
                            .query_async::<Value>(&mut c)
                            .await
                    })
                    .await;
                let (next, entries) = match reply.map(parse_autoclaim) {
                    Ok(Some(page)) => page,
                    Ok(None) => {
                        tracing::warn!(topic = %self.topic, "Unexpected XAUTOCLAIM reply");
                        break;
                    }
                    Err(e) => {
                        if e.contains("NOGROUP") {
                            let _ = ensure_group(&self.redis, &self.topic, group).await;
                        }
                        tracing::debug!(topic = %self.topic, error = %e, "Reclaiming pending entries failed");
                        break;
                    }
                };
                for entry in entries {
                    if handling.contains(&entry.id) || self.is_owned(&entry.id) {
                        continue;
                    }
                    let Some(permit) = permits.pop() else { break };
                    tracing::debug!(topic = %self.topic, id = %entry.id, "Redelivering an entry idle for longer than processingTimeout");
                    self.clone().dispatch(entry, permit).await;
                }
                drop(permits);
                if next == "0-0" || next.is_empty() {
                    break;
                }
                cursor = next;
            }
        }
    }

    /// Hands `entry` to the handler, holding `permit` until it is done.
    async fn dispatch(self: Arc<Self>, entry: Entry, permit: OwnedSemaphorePermit) {
        if self.halt.is_set() {
            return;
        }
        let Some(fields) = entry.fields else {
            // Trimmed from the stream before it was delivered: nothing to deliver.
            self.ack(&entry.id).await;
            return;
        };
        let (message, expires) = decode(&self.topic, fields);
        if is_expired(expires) {
            tracing::debug!(topic = %self.topic, id = %entry.id, "Dropping an expired message");
            self.ack(&entry.id).await;
            return;
        }
        if !self.lock_owned().insert(entry.id.clone()) {
            return;
        }
        let id = entry.id;
        tokio::spawn(async move {
            let result = (self.handler)(message).await;
            match result {
                Ok(()) => {
                    self.ack(&id).await;
                    self.lock_owned().remove(&id);
                }
                Err(e) => {
                    tracing::debug!(topic = %self.topic, id = %id, error = %e, "Message not processed; redelivering later");
                    self.clone().retry_later(id);
                }
            }
            drop(permit);
        });
    }

    /// After the retry delay, claims the failed entry `id` back (if it is still this
    /// consumer's) and delivers it again.
    fn retry_later(self: Arc<Self>, id: String) {
        tokio::spawn(async move {
            let mut halt = self.halt.clone();
            loop {
                tokio::select! {
                    _ = halt.wait() => break,
                    _ = tokio::time::sleep(self.settings.retry_delay) => {}
                }
                let permit = tokio::select! {
                    _ = halt.wait() => break,
                    p = self.permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                };
                match self.claim_own(&id).await {
                    Ok(Some(entry)) => {
                        self.lock_owned().remove(&id);
                        self.clone().dispatch(entry, permit).await;
                        return;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(topic = %self.topic, id = %id, error = %e, "Claiming a failed entry back failed; retrying later");
                    }
                }
            }
            self.lock_owned().remove(&id);
        });
    }

    /// Claims `id` for this consumer again if it is still pending for it.
    async fn claim_own(&self, id: &str) -> Result<Option<Entry>, String> {
        let (topic, group, name) = (&self.topic, &self.settings.group, &self.name);
        let pending = self
            .redis
            .call(|mut c| async move {
                redis::cmd("XPENDING")
                    .arg(topic)
                    .arg(group)
                    .arg(id)
                    .arg(id)
                    .arg(1)
                    .query_async::<Value>(&mut c)
                    .await
            })
            .await?;
        let owner = match pending {
            Value::Array(rows) => rows.into_iter().next().and_then(|row| match row {
                Value::Array(cols) => cols.into_iter().nth(1).and_then(text),
                _ => None,
            }),
            _ => None,
        };
        if owner.as_deref() != Some(name.as_str()) {
            return Ok(None);
        }
        let claimed = self
            .redis
            .call(|mut c| async move {
                redis::cmd("XCLAIM")
                    .arg(topic)
                    .arg(group)
                    .arg(name)
                    .arg(0)
                    .arg(id)
                    .query_async::<Value>(&mut c)
                    .await
            })
            .await?;
        Ok(parse_entries(claimed)
            .into_iter()
            .find(|e| e.id == id && e.fields.is_some()))
    }

    /// Acknowledges `id`, trying a few times; an entry left unacknowledged is delivered again
    /// later, which at-least-once delivery allows.
    /// Waits for a free handler slot, then takes every other free one (up to `queueDepth`);
    /// `None` once the subscription is halted.
    async fn free_slots(&self, halt: &mut Halt) -> Option<Vec<OwnedSemaphorePermit>> {
        let first = tokio::select! {
            _ = halt.wait() => return None,
            p = self.permits.clone().acquire_owned() => p.ok()?,
        };
        let mut permits = vec![first];
        while permits.len() < self.settings.queue_depth {
            match self.permits.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        Some(permits)
    }

    async fn ack(&self, id: &str) {
        let (topic, group) = (&self.topic, &self.settings.group);
        for attempt in 0..3u32 {
            let done = self
                .redis
                .call(|mut c| async move {
                    redis::cmd("XACK")
                        .arg(topic)
                        .arg(group)
                        .arg(id)
                        .query_async::<i64>(&mut c)
                        .await
                })
                .await;
            match done {
                Ok(_) => return,
                Err(e) if attempt == 2 => {
                    tracing::warn!(topic = %self.topic, id = %id, error = %e, "Acknowledging a message failed; it will be delivered again");
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Removes this consumer from the group when nothing is pending for it.
    async fn forget(&self) {
        let (topic, group, name) = (&self.topic, &self.settings.group, &self.name);
        let pending = self
            .redis
            .call(|mut c| async move {
                redis::cmd("XPENDING")
                    .arg(topic)
                    .arg(group)
                    .arg("-")
                    .arg("+")
                    .arg(1)
                    .arg(name)
                    .query_async::<Value>(&mut c)
                    .await
            })
            .await;
        if matches!(&pending, Ok(Value::Array(rows)) if rows.is_empty()) {
            let _ = self
                .redis
                .call(|mut c| async move {
                    redis::cmd("XGROUP")
                        .arg("DELCONSUMER")
                        .arg(topic)
                        .arg(group)
                        .arg(name)
                        .query_async::<Value>(&mut c)
                        .await
                })
                .await;
        }
    }

    fn is_owned(&self, id: &str) -> bool {
        self.lock_owned().contains(id)
    }

    fn lock_owned(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.owned.lock().unwrap_or_else(|e| e.into_inner())
    }
}

// === impl Halt ===

impl Halt {
    fn is_set(&self) -> bool {
        self.stop.is_stopped() || *self.closed.borrow()
    }

    /// Resolves once the subscription is stopped or the broker closed (dropping the broker
    /// without closing it leaves its subscriptions running).
    async fn wait(&mut self) {
        let closed = async {
            if self.closed.wait_for(|v| *v).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            _ = self.stop.stopped() => {}
            _ = closed => {}
        }
    }
}

/// Creates the group (and the stream) unless it exists.
async fn ensure_group(redis: &RedisConnection, topic: &str, group: &str) -> Result<(), String> {
    redis
        .call(|mut c| async move {
            let created = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(topic)
                .arg(group)
                .arg("0")
                .arg("MKSTREAM")
                .query_async::<()>(&mut c)
                .await;
            match created {
                Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
                other => other,
            }
        })
        .await
}

/// A connection of the reader's own (RESP2, which every server speaks), whose replies may
/// take as long as a blocking read.
async fn connect_reader(md: &ConnectionMetadata) -> Result<MultiplexedConnection, String> {
    let client = md
        .client(ProtocolVersion::RESP2)
        .map_err(|e| e.to_string())?;
    let timeout = md.command_timeout.unwrap_or(Duration::from_secs(30));
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(md.dial_timeout))
        .set_response_timeout(Some(READ_BLOCK + timeout));
    let connecting = client.get_multiplexed_async_connection_with_config(&config);
    match tokio::time::timeout(md.dial_timeout + timeout, connecting).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(format!("redis at {}: {}", md.address(), describe(&e))),
        Err(_) => Err(format!(
            "redis at {}: no connection within {:?}",
            md.address(),
            md.dial_timeout + timeout
        )),
    }
}

fn check_topic(topic: &str) -> Result<(), PubSubError> {
    if topic.is_empty() {
        return Err(PubSubError::BadRequest("the topic name is empty".into()));
    }
    Ok(())
}

/// The message of an entry and its expiry.
fn decode(topic: &str, mut fields: HashMap<String, Vec<u8>>) -> (Message, Option<u64>) {
    let metadata = match fields.remove(FIELD_METADATA) {
        Some(raw) => serde_json::from_slice::<HashMap<String, serde_json::Value>>(&raw)
            .map(|m| {
                m.into_iter()
                    .map(|(k, v)| match v {
                        serde_json::Value::String(s) => (k, s),
                        other => (k, other.to_string()),
                    })
                    .collect()
            })
            .unwrap_or_else(|e| {
                tracing::warn!(topic, error = %e, "Ignoring message metadata that is not a JSON object");
                HashMap::new()
            }),
        None => HashMap::new(),
    };
    let expires = fields
        .get(FIELD_EXPIRES_AT)
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let content_type = fields
        .remove(FIELD_CONTENT_TYPE)
        .and_then(|v| String::from_utf8(v).ok());
    let message = Message {
        topic: topic.to_owned(),
        data: Bytes::from(fields.remove(FIELD_DATA).unwrap_or_default()),
        content_type,
        metadata,
    };
    (message, expires)
}

/// The entries of an `XREADGROUP` reply (an array, or a map in RESP3, of streams).
fn parse_read(reply: Value) -> Vec<Entry> {
    let streams: Vec<Value> = match reply {
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(kv) => kv.into_iter().nth(1),
                _ => None,
            })
            .collect(),
        Value::Map(pairs) => pairs.into_iter().map(|(_, v)| v).collect(),
        _ => Vec::new(),
    };
    streams.into_iter().flat_map(parse_entries).collect()
}

/// The cursor and entries of an `XAUTOCLAIM` reply.
fn parse_autoclaim(reply: Value) -> Option<(String, Vec<Entry>)> {
    let Value::Array(parts) = reply else {
        return None;
    };
    let mut parts = parts.into_iter();
    let next = text(parts.next()?)?;
    let entries = parse_entries(parts.next()?);
    Some((next, entries))
}

/// A list of entries, each `[id, [field, value, …]]`, or nil for a deleted one.
fn parse_entries(list: Value) -> Vec<Entry> {
    let Value::Array(items) = list else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| {
            let Value::Array(parts) = item else {
                return None;
            };
            let mut parts = parts.into_iter();
            let id = text(parts.next()?)?;
            let fields = match parts.next() {
                Some(Value::Array(flat)) => {
                    let mut map = HashMap::new();
                    let mut flat = flat.into_iter();
                    while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
                        if let (Some(k), Some(v)) = (text(k), bytes(v)) {
                            map.insert(k, v);
                        }
                    }
                    Some(map)
                }
                Some(Value::Map(pairs)) => Some(
                    pairs
                        .into_iter()
                        .filter_map(|(k, v)| Some((text(k)?, bytes(v)?)))
                        .collect(),
                ),
                _ => None,
            };
            Some(Entry { id, fields })
        })
        .collect()
}

fn bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::VerbatimString { text, .. } => Some(text.into_bytes()),
        Value::Int(n) => Some(n.to_string().into_bytes()),
        _ => None,
    }
}

fn text(v: Value) -> Option<String> {
    bytes(v).and_then(|b| String::from_utf8(b).ok())
}

/// A Dapr duration: a Go duration or an integer of milliseconds; `None` when absent.
fn duration(value: Option<&str>, field: &'static str) -> Result<Option<Duration>, ComponentError> {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if let Ok(ms) = v.parse::<u64>() {
        return Ok(Some(Duration::from_millis(ms)));
    }
    parse_go_duration(v)
        .map(Some)
        .map_err(|e| ComponentError::InvalidField {
            field,
            reason: e.to_string(),
        })
}

fn describe(e: &RedisError) -> String {
    if e.is_io_error() {
        format!("unreachable: {e}")
    } else {
        e.to_string()
    }
}
