//! `pubsub.sqlite` v1: a durable broker in one SQLite file, Mecha's embedded default. Several
//! sidecars on one machine share it through the same file (write-ahead logging and a busy
//! timeout let their processes take turns).
//!
//! Mecha's own component (Dapr has no SQLite broker). Three tables, named after `tableName`
//! (a prefix, default `pubsub`): `<prefix>_messages` holds each published message once (payload,
//! content type, metadata as JSON, expiry); `<prefix>_subscribers` remembers every consumer
//! group that ever subscribed to a topic; `<prefix>_deliveries` holds one row per message and
//! group still to be acknowledged, filled in the publishing transaction for every group
//! registered on the topic. A message published to a topic no group has subscribed to is
//! dropped, as Dapr's brokers do; a group keeps receiving (and storing) messages after its
//! subscriptions stop, until it subscribes again.
//!
//! A subscription claims the oldest visible deliveries of its group and topic with one
//! `UPDATE`, which leases them for `processingTimeout`; `Ok` from the handler deletes the
//! delivery (and the message once no group needs it), `Err` makes it visible again after
//! `redeliverInterval`. A subscriber that dies mid-message leaves a lease that expires, after
//! which the message is delivered again; a handler running longer than `processingTimeout`
//! may therefore see its message delivered a second time. With `max_in_flight` 1 messages are
//! handed over in publish order (a failed one is retried after the later ones have been
//! tried). Subscribers in this process are woken at once by a local publish; those of other
//! processes find new messages within `pollInterval`. Expired messages (publish metadata
//! `ttlInSeconds`) are never delivered and are deleted every minute.
//!
//! Metadata: `connectionString` (required; a path, a `file:` URI or `:memory:`, exactly as for
//! `state.sqlite`), `tableName` (the table prefix, `pubsub`), `timeout` (per operation, `20s`),
//! `busyTimeout` (`2s`), `disableWAL` (`false`), `redeliverInterval` (Go duration, `2s`),
//! `processingTimeout` (Go duration, `30s`), `pollInterval` (Go duration, `100ms`) and
//! `consumerID` (the consumer group, default the app id). `metadataTableName` and
//! `cleanupInterval` are validated as for `state.sqlite` but unused. Tested by the pub/sub
//! conformance suite, across two brokers on one file and after a simulated crash
//! (`tests/pubsub_sqlite.rs`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use mecha_core::Metadata;
use mecha_core::component::{ComponentError, ComponentInit};
use mecha_core::duration::parse_go_duration;
use mecha_core::pubsub::{
    Message, MessageHandler, PubSub, PubSubError, PubSubFeature, PublishRequest, SubscribeRequest,
    Subscription, consumer_group, expires_at, now_millis,
};
use sqlx::sqlite::SqlitePool;
use sqlx::{AssertSqlSafe, Row, Sqlite, Transaction};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

use crate::state::sqlite::open_shared;

const FEATURES: &[PubSubFeature] = &[
    PubSubFeature::MessageMetadata,
    PubSubFeature::Ordered,
    PubSubFeature::Ttl,
];
const REDELIVER_INTERVAL: &str = "redeliverInterval";
const PROCESSING_TIMEOUT: &str = "processingTimeout";
const POLL_INTERVAL: &str = "pollInterval";
/// This component's own keys; the others are `state.sqlite`'s and validated by it.
const OWN_KEYS: &[&str] = &[
    REDELIVER_INTERVAL,
    PROCESSING_TIMEOUT,
    POLL_INTERVAL,
    mecha_core::pubsub::CONSUMER_ID,
];
const DEFAULT_PREFIX: &str = "pubsub";
const DEFAULT_REDELIVER: Duration = Duration::from_secs(2);
const DEFAULT_PROCESSING_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_POLL: Duration = Duration::from_millis(100);
/// How often expired and orphaned rows are deleted.
const CLEANUP_EVERY: Duration = Duration::from_secs(60);
/// The most deliveries one claim takes.
const MAX_CLAIM: usize = 32;
/// Attempts at acknowledging a message before leaving it to its lease.
const ACK_ATTEMPTS: u32 = 3;

/// The `pubsub.sqlite` broker.
pub struct SqlitePubSub {
    inner: Arc<Inner>,
    /// Single publishes wait here to be written together (group commit).
    publishes: tokio::sync::mpsc::Sender<PendingPublish>,
}

/// A publish waiting for the next group commit, and where its result goes.
type PendingPublish = (
    PublishRequest,
    tokio::sync::oneshot::Sender<Result<(), PubSubError>>,
);

/// The most single publishes written in one transaction.
const GROUP_COMMIT_MAX: usize = 256;

/// What the broker and its subscriptions' delivery loops share.
struct Inner {
    pool: SqlitePool,
    sql: Statements,
    local: Arc<Local>,
    group: String,
    redeliver: Duration,
    processing_timeout: Duration,
    poll: Duration,
    timeout: Duration,
    /// Set by `close()`: delivery loops and the clean-up end.
    closed: watch::Sender<bool>,
    /// Acknowledgements waiting to be written together (group commit).
    acks: tokio::sync::mpsc::Sender<PendingAck>,
}

/// An acknowledgement waiting for the next group commit: (delivery id, message seq), and
/// where the result goes.
type PendingAck = (
    i64,
    i64,
    tokio::sync::oneshot::Sender<Result<(), PubSubError>>,
);

/// What the brokers of this process on one database share: the wake-up of local subscribers
/// after a local publish, and a queue for writers (it spares them SQLite's busy-wait sleeps).
#[derive(Default)]
struct Local {
    published: Notify,
    writer: tokio::sync::Mutex<()>,
}

/// The SQL statements for one table prefix.
struct Statements {
    schema: Vec<String>,
    register: String,
    groups: String,
    insert_message: String,
    fan_out: String,
    ready: String,
    claim: String,
    claimed: String,
    ack: String,
    delete_done: String,
    nack: String,
    cleanup: Vec<String>,
}

/// A delivery this process has leased.
struct Claimed {
    id: i64,
    seq: i64,
    lease: String,
    message: Message,
}

/// This broker's own settings.
struct Settings {
    redeliver: Duration,
    processing_timeout: Duration,
    poll: Duration,
}

fn locals() -> &'static Mutex<HashMap<String, Weak<Local>>> {
    static LOCALS: OnceLock<Mutex<HashMap<String, Weak<Local>>>> = OnceLock::new();
    LOCALS.get_or_init(Default::default)
}

// === impl SqlitePubSub ===

impl SqlitePubSub {
    /// Opens the database named by `connectionString`, creates the tables if missing and
    /// starts the clean-up of expired messages.
    pub async fn create(init: ComponentInit) -> Result<Arc<dyn PubSub>, ComponentError> {
        let settings = Settings::parse(&init.metadata)?;
        let group = consumer_group(&init.metadata, &init.app_id);
        // The database keys are `state.sqlite`'s; hand them over without ours.
        let db_metadata: Metadata = init
            .metadata
            .iter()
            .filter(|(k, _)| !OWN_KEYS.iter().any(|own| own.eq_ignore_ascii_case(k)))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let db_init = ComponentInit {
            metadata: db_metadata,
            ..init.clone()
        };
        let (db, prefix, timeout) = open_shared(&db_init, DEFAULT_PREFIX).await?;
        let sql = Statements::new(&prefix);
        let schema = async {
            for ddl in &sql.schema {
                sqlx::query(AssertSqlSafe(ddl.as_str()))
                    .execute(&db.pool)
                    .await?;
            }
            Ok::<_, sqlx::Error>(())
        };
        tokio::time::timeout(timeout, schema)
            .await
            .map_err(|_| ComponentError::Init("creating the pub/sub tables timed out".into()))?
            .map_err(|e| ComponentError::Init(format!("creating the pub/sub tables: {e}")))?;
        let connection = init
            .metadata
            .get("connectionString")
            .unwrap_or_default()
            .trim();
        let local = local_for(connection, &prefix);
        let (acks, ack_queue) = tokio::sync::mpsc::channel(GROUP_COMMIT_MAX * 4);
        let inner = Arc::new(Inner {
            pool: db.pool,
            sql,
            local,
            group,
            redeliver: settings.redeliver,
            processing_timeout: settings.processing_timeout,
            poll: settings.poll,
            timeout,
            closed: watch::channel(false).0,
            acks,
        });
        tokio::spawn(ack_group_commit(Arc::downgrade(&inner), ack_queue));
        tokio::spawn(cleanup(Arc::downgrade(&inner), inner.closed.subscribe()));
        let (publishes, queue) = tokio::sync::mpsc::channel(GROUP_COMMIT_MAX * 4);
        tokio::spawn(group_commit(inner.clone(), queue));
        Ok(Arc::new(Self { inner, publishes }))
    }
}

#[async_trait]
impl PubSub for SqlitePubSub {
    fn features(&self) -> &[PubSubFeature] {
        FEATURES
    }

    async fn publish(&self, req: PublishRequest) -> Result<(), PubSubError> {
        check_topic(&req.topic)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.publishes.send((req, tx)).await.is_err() {
            return Err(PubSubError::Backend("sqlite: the broker is closed".into()));
        }
        rx.await
            .unwrap_or_else(|_| Err(PubSubError::Backend("sqlite: the broker is closed".into())))
    }

    async fn bulk_publish(&self, reqs: Vec<PublishRequest>) -> Vec<Result<(), PubSubError>> {
        // One transaction for the valid requests: they are all stored, or none is.
        let mut out: Vec<Result<(), PubSubError>> =
            reqs.iter().map(|r| check_topic(&r.topic)).collect();
        let valid: Vec<PublishRequest> = reqs
            .into_iter()
            .zip(&out)
            .filter(|(_, checked)| checked.is_ok())
            .map(|(r, _)| r)
            .collect();
        if let Err(e) = self.inner.publish(&valid).await {
            for r in out.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(e.clone());
            }
        }
        out
    }

    async fn subscribe(
        &self,
        req: SubscribeRequest,
        handler: MessageHandler,
    ) -> Result<Subscription, PubSubError> {
        check_topic(&req.topic)?;
        let inner = &self.inner;
        inner
            .timed(async {
                let (_writer, mut tx) = inner.begin().await?;
                sqlx::query(AssertSqlSafe(inner.sql.register.as_str()))
                    .bind(req.topic.as_str())
                    .bind(inner.group.as_str())
                    .bind(millis(now_millis()))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await
            })
            .await?;
        tracing::debug!(topic = %req.topic, group = %inner.group, "Subscribed");
        let (sub, stop) = Subscription::new();
        let task = tokio::spawn(deliver(
            inner.clone(),
            req.topic,
            handler,
            req.max_in_flight.max(1),
            stop,
        ));
        Ok(sub.with_task(task))
    }

    async fn close(&self) {
        self.inner.closed.send_replace(true);
        self.inner.pool.close().await;
    }
}

/// Writes the publishes waiting at the same time in one transaction: under concurrent
/// publishing this turns one commit (and one fsync) per message into one per batch, and a
/// lone publish is written at once. Every publish of a batch gets the batch's result.
async fn group_commit(inner: Arc<Inner>, mut queue: tokio::sync::mpsc::Receiver<PendingPublish>) {
    let mut reqs = Vec::with_capacity(GROUP_COMMIT_MAX);
    let mut waiting = Vec::with_capacity(GROUP_COMMIT_MAX);
    while let Some((req, tx)) = queue.recv().await {
        reqs.push(req);
        waiting.push(tx);
        while reqs.len() < GROUP_COMMIT_MAX {
            match queue.try_recv() {
                Ok((req, tx)) => {
                    reqs.push(req);
                    waiting.push(tx);
                }
                Err(_) => break,
            }
        }
        let result = inner.publish(&reqs).await;
        reqs.clear();
        for tx in waiting.drain(..) {
            let _ = tx.send(result.clone());
        }
    }
}

// === impl Inner ===

impl Inner {
    /// Begins a write transaction, queued behind this process's other writers of the
    /// database; dropping the transaction rolls it back.
    async fn begin(
        &self,
    ) -> Result<
        (
            tokio::sync::MutexGuard<'_, ()>,
            Transaction<'static, Sqlite>,
        ),
        sqlx::Error,
    > {
        let writer = self.local.writer.lock().await;
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        Ok((writer, tx))
    }

    /// Runs `op` within the operation timeout.
    async fn timed<T>(
        &self,
        op: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, PubSubError> {
        match tokio::time::timeout(self.timeout, op).await {
            Ok(result) => result.map_err(backend),
            Err(_) => Err(PubSubError::Backend(format!(
                "sqlite: no answer within {:?}",
                self.timeout
            ))),
        }
    }

    /// Stores `reqs` in one transaction, with a delivery for every group of each topic.
    async fn publish(&self, reqs: &[PublishRequest]) -> Result<(), PubSubError> {
        if reqs.is_empty() {
            return Ok(());
        }
        let rows = reqs
            .iter()
            .map(|r| {
                let metadata = serde_json::to_string(&r.metadata)
                    .map_err(|e| PubSubError::BadRequest(format!("message metadata: {e}")))?;
                Ok((r, metadata, expires_at(&r.metadata).map(millis)))
            })
            .collect::<Result<Vec<_>, PubSubError>>()?;
        let now = millis(now_millis());
        let delivered = self
            .timed(async {
                let (_writer, mut tx) = self.begin().await?;
                let conn = &mut *tx;
                let mut has_groups: HashMap<&str, bool> = HashMap::new();
                let mut delivered = 0u64;
                for (req, metadata, expires) in &rows {
                    let topic = req.topic.as_str();
                    if !has_groups.contains_key(topic) {
                        let found = sqlx::query(AssertSqlSafe(self.sql.groups.as_str()))
                            .bind(topic)
                            .fetch_optional(&mut *conn)
                            .await?
                            .is_some();
                        has_groups.insert(topic, found);
                    }
                    if has_groups.get(topic) != Some(&true) {
                        continue;
                    }
                    let seq: i64 = sqlx::query(AssertSqlSafe(self.sql.insert_message.as_str()))
                        .bind(topic)
                        .bind(req.data.as_ref())
                        .bind(req.content_type.as_deref())
                        .bind(metadata.as_str())
                        .bind(now)
                        .bind(*expires)
                        .fetch_one(&mut *conn)
                        .await?
                        .try_get(0)?;
                    delivered += sqlx::query(AssertSqlSafe(self.sql.fan_out.as_str()))
                        .bind(topic)
                        .bind(seq)
                        .bind(*expires)
                        .execute(&mut *conn)
                        .await?
                        .rows_affected();
                }
                tx.commit().await?;
                Ok(delivered)
            })
            .await?;
        if delivered > 0 {
            self.local.published.notify_waiters();
        }
        Ok(())
    }

    /// Whether the group has a delivery of `topic` ready to claim (a read, cheaper than an
    /// empty claim, which takes the write lock).
    async fn ready(&self, topic: &str) -> Result<bool, PubSubError> {
        let query = sqlx::query(AssertSqlSafe(self.sql.ready.as_str()))
            .bind(self.group.as_str())
            .bind(topic)
            .bind(millis(now_millis()))
            .fetch_one(&self.pool);
        match tokio::time::timeout(self.timeout, query).await {
            Ok(row) => row.and_then(|r| r.try_get::<bool, _>(0)).map_err(backend),
            Err(_) => Err(PubSubError::Backend(format!(
                "sqlite: no answer within {:?}",
                self.timeout
            ))),
        }
    }

    /// Leases up to `max` of the oldest visible deliveries of `topic` to this group.
    async fn claim(&self, topic: &str, max: usize) -> Result<Vec<Claimed>, PubSubError> {
        if !self.ready(topic).await? {
            return Ok(Vec::new());
        }
        let lease = uuid::Uuid::new_v4().simple().to_string();
        let rows = self
            .timed(async {
                let (_writer, mut tx) = self.begin().await?;
                let conn = &mut *tx;
                let now = now_millis();
                sqlx::query(AssertSqlSafe(self.sql.claim.as_str()))
                    .bind(self.group.as_str())
                    .bind(topic)
                    .bind(millis(now))
                    .bind(millis(now).saturating_add(duration_millis(self.processing_timeout)))
                    .bind(lease.as_str())
                    .bind(i64::try_from(max).unwrap_or(i64::MAX))
                    .execute(&mut *conn)
                    .await?;
                let rows = sqlx::query(AssertSqlSafe(self.sql.claimed.as_str()))
                    .bind(self.group.as_str())
                    .bind(topic)
                    .bind(lease.as_str())
                    .fetch_all(&mut *conn)
                    .await?;
                tx.commit().await?;
                Ok(rows)
            })
            .await?;
        rows.iter()
            .map(|row| {
                let metadata: String = row.try_get(4)?;
                let metadata = serde_json::from_str(&metadata).unwrap_or_else(|error| {
                    tracing::warn!(%error, topic, "Ignoring unreadable message metadata");
                    HashMap::new()
                });
                let data: Vec<u8> = row.try_get(2)?;
                Ok(Claimed {
                    id: row.try_get(0)?,
                    seq: row.try_get(1)?,
                    lease: lease.clone(),
                    message: Message {
                        topic: topic.to_owned(),
                        data: Bytes::from(data),
                        content_type: row.try_get(3)?,
                        metadata,
                    },
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(backend)
    }

    /// Deletes the delivery, and its message once no group needs it; acknowledgements made
    /// at the same time are written in one transaction.
    async fn ack(&self, c: &Claimed) -> Result<(), PubSubError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.acks.send((c.id, c.seq, tx)).await.is_err() {
            return Err(PubSubError::Backend("sqlite: the broker is closed".into()));
        }
        rx.await
            .unwrap_or_else(|_| Err(PubSubError::Backend("sqlite: the broker is closed".into())))
    }

    /// Deletes the deliveries `(id, seq)`, and their messages once no group needs them.
    async fn ack_all(&self, acks: &[(i64, i64)]) -> Result<(), PubSubError> {
        self.timed(async {
            let (_writer, mut tx) = self.begin().await?;
            for (id, _) in acks {
                sqlx::query(AssertSqlSafe(self.sql.ack.as_str()))
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            for (_, seq) in acks {
                sqlx::query(AssertSqlSafe(self.sql.delete_done.as_str()))
                    .bind(seq)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        })
        .await
    }

    /// Makes the delivery visible again after `after`, unless its lease has passed to another.
    async fn release(&self, c: &Claimed, after: Duration) -> Result<(), PubSubError> {
        let at = millis(now_millis()).saturating_add(duration_millis(after));
        self.timed(async {
            let _writer = self.local.writer.lock().await;
            sqlx::query(AssertSqlSafe(self.sql.nack.as_str()))
                .bind(c.id)
                .bind(at)
                .bind(c.lease.as_str())
                .execute(&self.pool)
                .await
                .map(drop)
        })
        .await
    }

    /// Acknowledges (`ok`) or releases a handled delivery, retrying a few times; a delivery
    /// left behind is delivered again once its lease has passed.
    async fn settle(&self, c: &Claimed, ok: bool) {
        for attempt in 1..=ACK_ATTEMPTS {
            let result = if ok {
                self.ack(c).await
            } else {
                self.release(c, self.redeliver).await
            };
            match result {
                Ok(()) => return,
                Err(error) if attempt == ACK_ATTEMPTS => tracing::warn!(
                    topic = %c.message.topic,
                    %error,
                    acknowledged = ok,
                    "Settling a message failed; it will be delivered again after its lease"
                ),
                Err(_) => tokio::time::sleep(self.poll).await,
            }
        }
    }

    /// Deletes expired deliveries and messages, and messages no group needs any more.
    async fn cleanup(&self) -> Result<u64, PubSubError> {
        let now = millis(now_millis());
        self.timed(async {
            let (_writer, mut tx) = self.begin().await?;
            let conn = &mut *tx;
            let mut rows = 0;
            for statement in &self.sql.cleanup {
                rows += sqlx::query(AssertSqlSafe(statement.as_str()))
                    .bind(now)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
            }
            tx.commit().await?;
            Ok(rows)
        })
        .await
    }
}

/// Writes the acknowledgements waiting at the same time in one transaction (see
/// [`group_commit`]); ends when the broker is dropped.
async fn ack_group_commit(inner: Weak<Inner>, mut queue: tokio::sync::mpsc::Receiver<PendingAck>) {
    let mut batch = Vec::with_capacity(GROUP_COMMIT_MAX);
    let mut waiting = Vec::with_capacity(GROUP_COMMIT_MAX);
    while let Some((id, seq, tx)) = queue.recv().await {
        batch.push((id, seq));
        waiting.push(tx);
        while batch.len() < GROUP_COMMIT_MAX {
            match queue.try_recv() {
                Ok((id, seq, tx)) => {
                    batch.push((id, seq));
                    waiting.push(tx);
                }
                Err(_) => break,
            }
        }
        let result = match inner.upgrade() {
            Some(inner) => inner.ack_all(&batch).await,
            None => Err(PubSubError::Backend("sqlite: the broker is closed".into())),
        };
        batch.clear();
        for tx in waiting.drain(..) {
            let _ = tx.send(result.clone());
        }
    }
}

/// Delivers `topic`'s messages of the group to `handler` until stopped or closed.
async fn deliver(
    inner: Arc<Inner>,
    topic: String,
    handler: MessageHandler,
    max_in_flight: usize,
    mut stop: mecha_core::pubsub::StopSignal,
) {
    let permits = Arc::new(Semaphore::new(max_in_flight));
    let mut closed = inner.closed.subscribe();
    let mut in_flight = JoinSet::new();
    'deliver: loop {
        let first = tokio::select! {
            _ = stop.stopped() => break,
            _ = closed.wait_for(|c| *c) => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let mut held: Vec<OwnedSemaphorePermit> = vec![first];
        while held.len() < MAX_CLAIM {
            match permits.clone().try_acquire_owned() {
                Ok(p) => held.push(p),
                Err(_) => break,
            }
        }
        loop {
            // Listen before looking, so that a publish in between wakes us.
            let published = inner.local.published.notified();
            tokio::pin!(published);
            published.as_mut().enable();
            match inner.claim(&topic, held.len()).await {
                Ok(batch) if !batch.is_empty() => {
                    if stop.is_stopped() || *closed.borrow() {
                        for c in &batch {
                            if let Err(error) = inner.release(c, Duration::ZERO).await {
                                tracing::debug!(%topic, %error, "Releasing a message failed");
                            }
                        }
                        break 'deliver;
                    }
                    for (c, permit) in batch.into_iter().zip(held.drain(..)) {
                        let (inner, handler) = (inner.clone(), handler.clone());
                        in_flight.spawn(async move {
                            let result = handler(c.message.clone()).await;
                            if let Err(error) = &result {
                                tracing::debug!(
                                    topic = %c.message.topic,
                                    %error,
                                    "Message not processed; redelivering later"
                                );
                            }
                            inner.settle(&c, result.is_ok()).await;
                            drop(permit);
                        });
                    }
                    break;
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%topic, group = %inner.group, %error, "Fetching messages failed");
                }
            }
            tokio::select! {
                _ = stop.stopped() => break 'deliver,
                _ = closed.wait_for(|c| *c) => break 'deliver,
                _ = &mut published => {}
                _ = tokio::time::sleep(inner.poll) => {}
            }
        }
        while in_flight.try_join_next().is_some() {}
    }
    while in_flight.join_next().await.is_some() {}
}

/// Deletes expired and finished rows every [`CLEANUP_EVERY`] until the broker is closed or
/// dropped.
async fn cleanup(inner: Weak<Inner>, mut closed: watch::Receiver<bool>) {
    loop {
        {
            let Some(inner) = inner.upgrade() else { return };
            match inner.cleanup().await {
                Ok(rows) => tracing::debug!(rows, "Deleted expired and delivered messages"),
                Err(error) => tracing::warn!(%error, "Deleting expired messages failed"),
            }
        }
        tokio::select! {
            _ = closed.wait_for(|c| *c) => return,
            _ = tokio::time::sleep(CLEANUP_EVERY) => {}
        }
    }
}

/// The state shared by this process's brokers on one database; an in-memory database is
/// never shared.
fn local_for(connection: &str, prefix: &str) -> Arc<Local> {
    let lowered = connection.to_ascii_lowercase();
    if lowered.contains(":memory:") || lowered.contains("mode=memory") {
        return Arc::default();
    }
    let key = format!("{prefix}\u{0}{connection}");
    let mut all = locals().lock().unwrap_or_else(PoisonError::into_inner);
    all.retain(|_, l| l.strong_count() > 0);
    match all.get(&key).and_then(Weak::upgrade) {
        Some(local) => local,
        None => {
            let local = Arc::new(Local::default());
            all.insert(key, Arc::downgrade(&local));
            local
        }
    }
}

// === impl Settings ===

impl Settings {
    fn parse(md: &Metadata) -> Result<Self, ComponentError> {
        let duration = |field: &'static str, default: Duration, positive: bool| {
            let Some(v) = md.get(field).map(str::trim).filter(|v| !v.is_empty()) else {
                return Ok(default);
            };
            let d = parse_go_duration(v).map_err(|e| ComponentError::InvalidField {
                field,
                reason: e.to_string(),
            })?;
            if positive && d.is_zero() {
                return Err(ComponentError::InvalidField {
                    field,
                    reason: "must be positive".into(),
                });
            }
            Ok(d)
        };
        Ok(Self {
            redeliver: duration(REDELIVER_INTERVAL, DEFAULT_REDELIVER, false)?,
            processing_timeout: duration(PROCESSING_TIMEOUT, DEFAULT_PROCESSING_TIMEOUT, true)?,
            poll: duration(POLL_INTERVAL, DEFAULT_POLL, true)?,
        })
    }
}

// === impl Statements ===

impl Statements {
    fn new(prefix: &str) -> Self {
        let m = format!("\"{prefix}_messages\"");
        let s = format!("\"{prefix}_subscribers\"");
        let d = format!("\"{prefix}_deliveries\"");
        let visible = "consumer_group = ?1 AND topic = ?2 AND visible_at <= ?3 \
                       AND (expires_at IS NULL OR expires_at > ?3)";
        Self {
            schema: vec![
                format!(
                    "CREATE TABLE IF NOT EXISTS {m} (seq INTEGER PRIMARY KEY AUTOINCREMENT, \
                     topic TEXT NOT NULL, data BLOB NOT NULL, content_type TEXT, \
                     metadata TEXT NOT NULL, published_at INTEGER NOT NULL, expires_at INTEGER)"
                ),
                format!(
                    "CREATE TABLE IF NOT EXISTS {s} (topic TEXT NOT NULL, \
                     consumer_group TEXT NOT NULL, created_at INTEGER NOT NULL, \
                     PRIMARY KEY (topic, consumer_group)) WITHOUT ROWID"
                ),
                format!(
                    "CREATE TABLE IF NOT EXISTS {d} (id INTEGER PRIMARY KEY, \
                     consumer_group TEXT NOT NULL, topic TEXT NOT NULL, seq INTEGER NOT NULL, \
                     visible_at INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, \
                     lease TEXT, expires_at INTEGER)"
                ),
                format!(
                    "CREATE UNIQUE INDEX IF NOT EXISTS \"{prefix}_deliveries_order\" \
                     ON {d} (consumer_group, topic, seq)"
                ),
                format!("CREATE INDEX IF NOT EXISTS \"{prefix}_deliveries_seq\" ON {d} (seq)"),
            ],
            register: format!(
                "INSERT INTO {s} (topic, consumer_group, created_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT DO NOTHING"
            ),
            groups: format!("SELECT 1 FROM {s} WHERE topic = ?1 LIMIT 1"),
            insert_message: format!(
                "INSERT INTO {m} (topic, data, content_type, metadata, published_at, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING seq"
            ),
            fan_out: format!(
                "INSERT INTO {d} (consumer_group, topic, seq, visible_at, attempts, expires_at) \
                 SELECT consumer_group, topic, ?2, 0, 0, ?3 FROM {s} WHERE topic = ?1"
            ),
            ready: format!("SELECT EXISTS (SELECT 1 FROM {d} WHERE {visible})"),
            claim: format!(
                "UPDATE {d} SET visible_at = ?4, attempts = attempts + 1, lease = ?5 \
                 WHERE id IN (SELECT id FROM {d} WHERE {visible} ORDER BY seq LIMIT ?6)"
            ),
            claimed: format!(
                "SELECT d.id, d.seq, m.data, m.content_type, m.metadata FROM {d} AS d \
                 JOIN {m} AS m ON m.seq = d.seq \
                 WHERE d.consumer_group = ?1 AND d.topic = ?2 AND d.lease = ?3 ORDER BY d.seq"
            ),
            ack: format!("DELETE FROM {d} WHERE id = ?1"),
            delete_done: format!(
                "DELETE FROM {m} WHERE seq = ?1 AND NOT EXISTS (SELECT 1 FROM {d} WHERE seq = ?1)"
            ),
            nack: format!(
                "UPDATE {d} SET visible_at = ?2, lease = NULL WHERE id = ?1 AND lease = ?3"
            ),
            // Each takes the current time as ?1 (unused by the last two).
            cleanup: vec![
                format!("DELETE FROM {d} WHERE expires_at <= ?1"),
                format!("DELETE FROM {m} WHERE expires_at <= ?1"),
                format!(
                    "DELETE FROM {d} WHERE ?1 IS NOT NULL AND \
                     NOT EXISTS (SELECT 1 FROM {m} WHERE {m}.seq = {d}.seq)"
                ),
                format!(
                    "DELETE FROM {m} WHERE ?1 IS NOT NULL AND \
                     NOT EXISTS (SELECT 1 FROM {d} WHERE {d}.seq = {m}.seq)"
                ),
            ],
        }
    }
}

fn check_topic(topic: &str) -> Result<(), PubSubError> {
    if topic.is_empty() {
        return Err(PubSubError::BadRequest("the topic name is empty".into()));
    }
    Ok(())
}

fn millis(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

fn duration_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn backend(e: sqlx::Error) -> PubSubError {
    PubSubError::Backend(format!("sqlite: {e}"))
}
