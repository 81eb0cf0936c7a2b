//! The pub/sub building block's component contract: a [`PubSub`] broker publishes messages to
//! topics and delivers them to subscribers, at least once.
//!
//! # The contract every broker MUST keep (checked by the pub/sub conformance suite)
//!
//! * **Consumer groups.** A broker's consumer group is its `consumerID` metadata, defaulting to
//!   the app id ([`consumer_group`]). Subscriptions to one topic in one group share the
//!   messages (each message goes to one of them); subscriptions in different groups each get
//!   every message published after they subscribed.
//! * **Acknowledgement.** A message is acknowledged only when the [`MessageHandler`] returned
//!   `Ok`. On `Err` the broker delivers it again later (after its redelivery delay); a message
//!   whose subscriber crashed before answering is delivered again too (after a lease or
//!   processing timeout). A message is never dropped by the broker while it has not expired.
//! * **In flight.** At most [`SubscribeRequest::max_in_flight`] handler calls run at once for
//!   one subscription. With 1, messages of a topic are handed over in publish order where the
//!   broker orders them.
//! * **TTL** (brokers declaring [`PubSubFeature::Ttl`]). A message published with metadata
//!   `ttlInSeconds` is not delivered once that many
//!   seconds have passed since it was published ([`expires_at`], [`is_expired`]).
//! * **Stopping.** [`Subscription::stop`] returns once no handler call is running and no new
//!   one will start; other subscriptions go on.
//! * **Errors.** A publish the broker did not accept returns `Err`; nothing is accepted
//!   silently and then lost.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;

/// Metadata key overriding the consumer group (Dapr's name).
pub const CONSUMER_ID: &str = "consumerID";
/// Publish metadata key giving the message a time to live, in seconds.
pub const TTL_IN_SECONDS: &str = "ttlInSeconds";

/// A message to publish.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublishRequest {
    /// The topic.
    pub topic: String,
    /// The payload: a serialised CloudEvent, or the raw bytes for raw-payload publishing.
    pub data: Bytes,
    /// The payload's content type.
    pub content_type: Option<String>,
    /// Per-message metadata (`ttlInSeconds`, broker options). Brokers that can carry headers
    /// deliver it with the message.
    pub metadata: HashMap<String, String>,
}

/// A message delivered to a subscriber.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// The topic it was published to.
    pub topic: String,
    /// The payload, as published.
    pub data: Bytes,
    /// The content type, when the broker carries it.
    pub content_type: Option<String>,
    /// Message metadata, when the broker carries it.
    pub metadata: HashMap<String, String>,
}

/// What a subscription asks of the broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscribeRequest {
    /// The topic.
    pub topic: String,
    /// Subscription metadata (from the subscription's `metadata`).
    pub metadata: HashMap<String, String>,
    /// The most handler calls running at once for this subscription (at least 1).
    pub max_in_flight: usize,
}

/// The future a handler returns: `Ok` acknowledges the message, `Err` asks for redelivery.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Processes one delivered message; given to [`PubSub::subscribe`] by the runtime.
pub type MessageHandler = Arc<dyn Fn(Message) -> HandlerFuture + Send + Sync>;

/// A capability a broker declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PubSubFeature {
    /// Message metadata travels with the message.
    MessageMetadata,
    /// Publish order is delivery order within a topic (with one message in flight).
    Ordered,
    /// `ttlInSeconds` on publish is honoured (the message is not delivered once expired).
    Ttl,
}

/// A message broker.
#[async_trait]
pub trait PubSub: Send + Sync + 'static {
    /// The capabilities of this broker.
    fn features(&self) -> &[PubSubFeature] {
        &[]
    }

    /// Publishes one message; `Ok` means the broker has accepted (stored) it.
    async fn publish(&self, req: PublishRequest) -> Result<(), PubSubError>;

    /// Publishes several messages; the result at index `i` is that of `reqs[i]`. The default
    /// publishes them one after the other.
    async fn bulk_publish(&self, reqs: Vec<PublishRequest>) -> Vec<Result<(), PubSubError>> {
        let mut out = Vec::with_capacity(reqs.len());
        for req in reqs {
            out.push(self.publish(req).await);
        }
        out
    }

    /// Starts delivering the topic's messages to `handler` in the background; returns once
    /// the subscription exists at the broker (messages published after this are delivered).
    async fn subscribe(
        &self,
        req: SubscribeRequest,
        handler: MessageHandler,
    ) -> Result<Subscription, PubSubError>;

    /// Releases connections and background tasks.
    async fn close(&self) {}
}

/// A running subscription; [`Subscription::stop`] ends it. Dropping it stops it too, without
/// waiting for the handler call in flight.
pub struct Subscription {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Tells a broker's delivery loop when its subscription is stopped.
#[derive(Clone, Debug)]
pub struct StopSignal(tokio::sync::watch::Receiver<bool>);

/// An error from a broker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PubSubError {
    /// The request is invalid (bad metadata, bad topic name…).
    #[error("{0}")]
    BadRequest(String),
    /// The broker failed or is unreachable.
    #[error("{0}")]
    Backend(String),
}

// === impl Subscription ===

impl Subscription {
    /// A subscription whose delivery loops watch the returned [`StopSignal`]. Add the loops'
    /// tasks with [`Subscription::with_task`] so that [`Subscription::stop`] waits for them.
    pub fn new() -> (Self, StopSignal) {
        let (stop, rx) = tokio::sync::watch::channel(false);
        (
            Self {
                stop,
                tasks: Vec::new(),
            },
            StopSignal(rx),
        )
    }

    /// Adds a task that [`Subscription::stop`] waits for.
    pub fn with_task(mut self, task: tokio::task::JoinHandle<()>) -> Self {
        self.tasks.push(task);
        self
    }

    /// Stops delivering and waits until the handler call in flight (if any) has finished.
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("tasks", &self.tasks.len())
            .finish()
    }
}

// === impl StopSignal ===

impl StopSignal {
    /// Whether the subscription has been stopped.
    pub fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once the subscription is stopped (at once if it already is).
    pub async fn stopped(&mut self) {
        // An error means the Subscription is gone, which also means stopped.
        let _ = self.0.wait_for(|v| *v).await;
    }
}

/// The consumer group of a broker created for `app_id` with `metadata`: `consumerID`, else the
/// app id.
pub fn consumer_group(metadata: &crate::Metadata, app_id: &str) -> String {
    metadata
        .get(CONSUMER_ID)
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .unwrap_or(app_id)
        .to_owned()
}

/// When a message published now with `metadata` expires, as milliseconds since the Unix epoch;
/// `None` without a (valid, positive) `ttlInSeconds`.
pub fn expires_at(metadata: &HashMap<String, String>) -> Option<u64> {
    let ttl: u64 = metadata.get(TTL_IN_SECONDS)?.trim().parse().ok()?;
    if ttl == 0 {
        return None;
    }
    // A century is "never" here, and keeps the expiry a representable date.
    let ttl = ttl.min(100 * 365 * 24 * 3600);
    Some(now_millis().saturating_add(ttl.saturating_mul(1000)))
}

/// Whether a message that expires at `expires_at_ms` (see [`expires_at`]) has expired.
pub fn is_expired(expires_at_ms: Option<u64>) -> bool {
    expires_at_ms.is_some_and(|at| now_millis() >= at)
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_and_expiry() {
        let mut md = HashMap::new();
        assert_eq!(expires_at(&md), None);
        md.insert(TTL_IN_SECONDS.to_owned(), "0".to_owned());
        assert_eq!(expires_at(&md), None);
        md.insert(TTL_IN_SECONDS.to_owned(), "x".to_owned());
        assert_eq!(expires_at(&md), None);
        md.insert(TTL_IN_SECONDS.to_owned(), "10".to_owned());
        let at = expires_at(&md).unwrap_or_default();
        assert!(at >= now_millis() + 9_000);
        assert!(!is_expired(Some(at)));
        assert!(is_expired(Some(now_millis() - 1)));
        assert!(!is_expired(None));
    }

    #[tokio::test]
    async fn stop_waits_for_tasks() {
        let (sub, mut signal) = Subscription::new();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let d = done.clone();
        let sub = sub.with_task(tokio::spawn(async move {
            signal.stopped().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            d.store(true, std::sync::atomic::Ordering::SeqCst);
        }));
        sub.stop().await;
        assert!(done.load(std::sync::atomic::Ordering::SeqCst));
    }
}
