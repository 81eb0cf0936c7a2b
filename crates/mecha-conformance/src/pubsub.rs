//! The pub/sub suite: what every [`PubSub`] broker MUST do (the contract in
//! `mecha_core::pubsub`).
//!
//! [`run`] calls every check in a fixed order, skipping those of features the broker does not
//! declare ([`PubSubFeature::Ordered`], [`PubSubFeature::Ttl`],
//! [`PubSubFeature::MessageMetadata`]). Each check builds its own brokers from the factory
//! (a broker per app id, which is its consumer group), uses fresh random topics
//! (`conformance-<check>-<uuid>`) and fresh random app ids, so brokers may share a server with
//! other tests. Each check is also a public function, so a broker's tests can call them one by
//! one. A failing check panics with a message naming it.
//!
//! 1. [`every_message_received`]: 100 distinct messages (one of them not UTF-8) all arrive,
//!    byte for byte.
//! 2. [`in_order`]: with one message in flight, delivery order is publish order.
//! 3. [`redelivery`]: a message whose handler failed is delivered again until it succeeds,
//!    within a bound derived from [`Options::redelivery_timeout`].
//! 4. [`multiple_topics`]: two subscriptions on two topics each get exactly their own messages.
//! 5. [`consumer_groups`]: subscriptions in one group share the messages; other groups get
//!    every message.
//! 6. [`republish_from_handler`]: a handler may publish through the broker (the dead-letter
//!    pattern).
//! 7. [`bulk_publish`]: every message of a bulk publish is accepted and delivered.
//! 8. [`concurrency_bound`]: `max_in_flight` handler calls run at once, never more.
//! 9. [`ttl`]: an expired message is not delivered.
//! 10. [`stop_one_subscription`]: stopping waits for the handler call in flight, no call starts
//!     afterwards, and other subscriptions go on.
//! 11. [`metadata_and_content_type`]: both travel with the message.
//! 12. [`durability_within_group`]: messages published while a group has no running
//!     subscription are delivered when it subscribes again.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use std::time::Duration;
//! # use mecha_core::pubsub::PubSub;
//! # async fn open(app_id: String) -> Arc<dyn PubSub> { unimplemented!() }
//! # async fn example() {
//! let options = mecha_conformance::pubsub::Options::new(Duration::from_secs(2));
//! mecha_conformance::pubsub::run(options, |app_id| open(app_id)).await;
//! # }
//! ```

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mecha_core::pubsub::{
    Message, MessageHandler, PubSub, PubSubFeature, PublishRequest, SubscribeRequest, Subscription,
    TTL_IN_SECONDS,
};

/// The longest any one check may take, on top of four times the redelivery timeout.
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest a message published to a running subscription may take to arrive.
const DELIVERY: Duration = Duration::from_secs(20);
/// How long the suite waits to be sure that something does not happen.
const QUIET: Duration = Duration::from_secs(2);
/// How often the suite looks at what has arrived.
const POLL: Duration = Duration::from_millis(20);

/// How the suite treats one broker.
#[derive(Clone, Debug)]
pub struct Options {
    /// The longest a message whose handler failed may take to be delivered again, as the
    /// broker under test is configured.
    pub redelivery_timeout: Duration,
}

/// Builds a broker for an app id (its consumer group). Implemented by every
/// `Fn(String) -> impl Future<Output = Arc<dyn PubSub>>`.
pub trait BrokerFactory {
    /// A broker whose consumer group is `app_id`.
    fn broker(&self, app_id: String) -> impl Future<Output = Arc<dyn PubSub>>;
}

impl<F, Fut> BrokerFactory for F
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Arc<dyn PubSub>>,
{
    fn broker(&self, app_id: String) -> impl Future<Output = Arc<dyn PubSub>> {
        self(app_id)
    }
}

// === impl Options ===

impl Options {
    /// Options for a broker that delivers a failed message again within `redelivery_timeout`.
    pub fn new(redelivery_timeout: Duration) -> Self {
        Self { redelivery_timeout }
    }
}

/// Runs every check on brokers from `factory`, which builds a broker for the given app id
/// (its consumer group); panics naming the first failing check.
///
/// # Panics
///
/// On the first failing check, with a message naming it; also when a check takes longer
/// than a minute plus four times the redelivery timeout.
pub async fn run<F, Fut>(options: Options, factory: F)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Arc<dyn PubSub>>,
{
    let limit = CHECK_TIMEOUT + options.redelivery_timeout * 4;
    macro_rules! checks {
        ($($check:ident),+ $(,)?) => {$(
            if tokio::time::timeout(limit, $check(&options, &factory)).await.is_err() {
                panic!(
                    "pub/sub conformance check `{}` timed out after {limit:?}",
                    stringify!($check)
                );
            }
        )+};
    }
    checks!(
        every_message_received,
        in_order,
        redelivery,
        multiple_topics,
        consumer_groups,
        republish_from_handler,
        bulk_publish,
        concurrency_bound,
        ttl,
        stop_one_subscription,
        metadata_and_content_type,
        durability_within_group,
    );
}

// === The checks ===

/// Every one of 100 distinct messages arrives, with its exact bytes (one payload is binary,
/// not UTF-8) and its topic.
pub async fn every_message_received(_options: &Options, factory: &impl BrokerFactory) {
    const CHECK: &str = "every_message_received";
    let broker = factory.broker(app_id(CHECK)).await;
    let topic = topic(CHECK);
    let inbox = Inbox::new();
    let sub = subscribe(CHECK, &*broker, &topic, 4, inbox.handler()).await;
    let mut sent = vec![binary_payload()];
    sent.extend((1..100).map(|i| Bytes::from(format!("{CHECK}-{i}"))));
    for data in &sent {
        publish(CHECK, &*broker, &topic, data.clone()).await;
    }
    let expected: HashSet<Bytes> = sent.iter().cloned().collect();
    assert_eq!(expected.len(), 100, "check `{CHECK}`: distinct payloads");
    inbox
        .wait_for(CHECK, "all 100 messages to arrive", DELIVERY, |got| {
            distinct(got).len() >= 100
        })
        .await;
    let got = inbox.messages();
    assert_eq!(
        distinct(&got),
        expected,
        "check `{CHECK}`: the payloads delivered must be exactly those published"
    );
    assert!(
        got.iter().all(|m| m.topic == topic),
        "check `{CHECK}`: every message must carry its topic"
    );
    sub.stop().await;
    broker.close().await;
}

/// With one message in flight, 50 messages arrive in publish order (brokers declaring
/// [`PubSubFeature::Ordered`]).
pub async fn in_order(_options: &Options, factory: &impl BrokerFactory) {
    const CHECK: &str = "in_order";
    let broker = factory.broker(app_id(CHECK)).await;
    if !broker.features().contains(&PubSubFeature::Ordered) {
        broker.close().await;
        return;
    }
    let topic = topic(CHECK);
    let inbox = Inbox::new();
    let sub = subscribe(CHECK, &*broker, &topic, 1, inbox.handler()).await;
    let sent: Vec<Bytes> = (0..50)
        .map(|i| Bytes::from(format!("{CHECK}-{i:03}")))
        .collect();
    for data in &sent {
        publish(CHECK, &*broker, &topic, data.clone()).await;
    }
    inbox
        .wait_for(CHECK, "all 50 messages to arrive", DELIVERY, |got| {
            distinct(got).len() >= 50
        })
        .await;
    // At-least-once delivery may repeat a message; the first deliveries must be in order.
    let mut seen = HashSet::new();
    let order: Vec<Bytes> = inbox
        .messages()
        .into_iter()
        .map(|m| m.data)
        .filter(|d| seen.insert(d.clone()))
        .collect();
    assert_eq!(
        order, sent,
        "check `{CHECK}`: messages must be delivered in publish order"
    );
    sub.stop().await;
    broker.close().await;
}

/// A handler failing the first two attempts of each message: every message is delivered again
/// until the handler succeeds, each at least three times, within
/// `3 × redelivery_timeout + 10 s`.
pub async fn redelivery(options: &Options, factory: &impl BrokerFactory) {
    const CHECK: &str = "redelivery";
    const COUNT: usize = 5;
    let broker = factory.broker(app_id(CHECK)).await;
    let topic = topic(CHECK);
    let attempts: Arc<Mutex<HashMap<Bytes, usize>>> = Arc::default();
    let acked: Arc<Mutex<HashSet<Bytes>>> = Arc::default();
    let handler: MessageHandler = {
        let (attempts, acked) = (attempts.clone(), acked.clone());
        Arc::new(move |m: Message| {
            let n = {
                let mut attempts = lock(&attempts);
                let n = attempts.entry(m.data.clone()).or_default();
                *n += 1;
                *n
            };
            let result = if n <= 2 {
                Err(format!("failing attempt {n} on purpose"))
            } else {
                lock(&acked).insert(m.data);
                Ok(())
            };
            Box::pin(async move { result })
        })
    };
    let sub = subscribe(CHECK, &*broker, &topic, COUNT, handler).await;
    let sent: HashSet<Bytes> = (0..COUNT)
        .map(|i| Bytes::from(format!("{CHECK}-{i}")))
        .collect();
    for data in &sent {
        publish(CHECK, &*broker, &topic, data.clone()).await;
    }
    let bound = options.redelivery_timeout * 3 + Duration::from_secs(10);
    wait_until(
        CHECK,
        "every message to be acknowledged after two failed attempts",
        bound,
        || lock(&acked).len() >= COUNT,
    )
    .await;
    assert_eq!(
        *lock(&acked),
        sent,
        "check `{CHECK}`: acknowledged payloads"
    );
    let attempts = lock(&attempts).clone();
    for data in &sent {
        let n = attempts.get(data).copied().unwrap_or_default();
        assert!(
            n >= 3,
            "check `{CHECK}`: {data:?} was delivered {n} times, expected at least 3"
        );
    }
    sub.stop().await;
    broker.close().await;
}

/// Two subscriptions on two topics: each gets all of its topic's messages and none of the
/// other's.
pub async fn multiple_topics(_options: &Options, factory: &impl BrokerFactory) {
    const CHECK: &str = "multiple_topics";
    let broker = factory.broker(app_id(CHECK)).await;
    let (topic_a, topic_b) = (topic(CHECK), topic(CHECK));
    let (inbox_a, inbox_b) = (Inbox::new(), Inbox::new());
    let sub_a = subscribe(CHECK, &*broker, &topic_a, 2, inbox_a.handler()).await;
    let sub_b = subscribe(CHECK, &*broker, &topic_b, 2, inbox_b.handler()).await;
    let sent_a: HashSet<Bytes> = (0..10).map(|i| Bytes::from(format!("a-{i}"))).collect();
    let sent_b: HashSet<Bytes> = (0..10).map(|i| Bytes::from(format!("b-{i}"))).collect();
    for (a, b) in sent_a.iter().zip(&sent_b) {
        publish(CHECK, &*broker, &topic_a, a.clone()).await;
        publish(CHECK, &*broker, &topic_b, b.clone()).await;
    }
    for (inbox, sent) in [(&inbox_a, &sent_a), (&inbox_b, &sent_b)] {
        inbox
            .wait_for(CHECK, "each topic's messages to arrive", DELIVERY, |got| {
                distinct(got).len() >= sent.len()
            })
            .await;
    }
    tokio::time::sleep(QUIET / 4).await;
    for (inbox, sent, topic) in [(&inbox_a, &sent_a, &topic_a), (&inbox_b, &sent_b, &topic_b)] {
        let got = inbox.messages();
        assert_eq!(
            &distinct(&got),
            sent,
            "check `{CHECK}`: the subscription of {topic} must get exactly its own messages"
        );
        assert!(
            got.iter().all(|m| &m.topic == topic),
            "check `{CHECK}`: messages must carry their topic"
        );
    }
    sub_a.stop().await;
    sub_b.stop().await;
    broker.close().await;
}

/// Two brokers of one app id share a topic's messages (together they get all of them, not
/// both every one); a broker of another app id gets every message.
pub async fn consumer_groups(_options: &Options, factory: &impl BrokerFactory) {
    const CHECK: &str = "consumer_groups";
    const COUNT: usize = 40;
    let shared_id = app_id(CHECK);
    let a1 = factory.broker(shared_id.clone()).await;
    let a2 = factory.broker(shared_id).await;
    let b = factory.broker(app_id(CHECK)).await;
    let topic = topic(CHECK);
    let (in_a1, in_a2, in_b) = (Inbox::new(), Inbox::new(), Inbox::new());
    // A short pause in the handlers gives the other member of the group a chance.
    let slow = Duration::from_millis(5);
    let sub_a1 = subscribe(CHECK, &*a1, &topic, 1, in_a1.slow_handler(slow)).await;
    let sub_a2 = subscribe(CHECK, &*a2, &topic, 1, in_a2.slow_handler(slow)).await;
    let sub_b = subscribe(CHECK, &*b, &topic, 1, in_b.handler()).await;
    let sent: HashSet<Bytes> = (0..COUNT)
        .map(|i| Bytes::from(format!("{CHECK}-{i}")))
        .collect();
    for data in &sent {
        publish(CHECK, &*a1, &topic, data.clone()).await;
    }
    in_b.wait_for(
        CHECK,
        "the other group to get every message",
        DELIVERY,
        |got| distinct(got).len() >= COUNT,
    )
    .await;
    wait_until(
        CHECK,
        "the shared group to get every message",
        DELIVERY,
        || {
            let (x, y) = (distinct(&in_a1.messages()), distinct(&in_a2.messages()));
            x.union(&y).count() >= COUNT
        },
    )
    .await;
    tokio::time::sleep(QUIET / 4).await;
    let (x, y) = (distinct(&in_a1.messages()), distinct(&in_a2.messages()));
    let union: HashSet<Bytes> = x.union(&y).cloned().collect();
    assert_eq!(
        union, sent,
        "check `{CHECK}`: the shared group must get exactly the published messages"
    );
    assert!(
        x.intersection(&y).count() < COUNT,
        "check `{CHECK}`: subscriptions of one group must share the messages, yet both got \
         every one"
    );
    assert_eq!(
        distinct(&in_b.messages()),
        sent,
        "check `{CHECK}`: another group must get every message"
    );
    for sub in [sub_a1, sub_a2, sub_b] {
        sub.stop().await;
    }
    for broker in [a1, a2, b] {
        broker.close().await;
    }
}

/// A handler that publishes each message to a second topic through the broker and then
/// acknowledges it (the dead-letter pattern): the second topic's subscriber gets them all.
pub async fn republish_from_handler(_options: &Options, factory: &impl BrokerFactory) {
    const CHECK: &str = "republish_from_handler";
    const COUNT: usize = 20;
    let broker = factory.broker(app_id(CHECK)).await;
    let (topic_a, topic_b) = (topic(CHECK), topic(CHECK));
    let inbox = Inbox::new();
    let sub_b = subscribe(CHECK, &*broker, &topic_b, 2, inbox.handler()).await;
    let forward: MessageHandler = {
        let (broker, topic_b) = (broker.clone(), topic_b.clone());
        Arc::new(move |m: Message| {
            let (broker, topic_b) = (broker.clone(), topic_b.clone());
            Box::pin(async move {
                let req = PublishRequest {
                    topic: topic_b,
                    data: m.data,
                    content_type: m.content_type,
                    metadata: HashMap::new(),
                };
                broker.publish(req).await.map_err(|e| e.to_string())
            })
        })
    };
    let sub_a = subscribe(CHECK, &*broker, &topic_a, 2, forward).await;
    let sent: HashSet<Bytes> = (0..COUNT)
        .map(|i| Bytes::from(format!("{CHECK}-{i}")))
        .collect();
    for data in &sent {
        publish(CHECK, &*broker, &topic_a, data.clone()).await;
    }
    inbox
        .wait_for(
            CHECK,
            "every republished message to arrive",
            DELIVERY,
            |got| distinct(got).len() >= COUNT,
        )
        .await;
    assert_eq!(
        distinct(&inbox.messages()),
        sent,
        "check `{CHECK}`: republished payloads"
    );
    sub_a.stop().await;
    sub_b.stop().await;
    broker.close().await;
}

/// A bulk publish of 50 messages answers 50 `Ok` results and all 50 arrive.
pub async fn bulk_publish(_options: &Options, factory: &impl BrokerFactory) {
    const CHECK: &str = "bulk_publish";
    const COUNT: usize = 50;
    let broker = factory.broker(app_id(CHECK)).await;
    let topic = topic(CHECK);
    let inbox = Inbox::new();
    let sub = subscribe(CHECK, &*broker, &topic, 4, inbox.handler()).await;
    let sent: Vec<Bytes> = (0..COUNT)
        .map(|i| Bytes::from(format!("{CHECK}-{i}")))
        .collect();
    let reqs = sent.iter().map(|d| request(&topic, d.clone())).collect();
    let results = broker.bulk_publish(reqs).await;
    assert_eq!(
        results.len(),
        COUNT,
        "check `{CHECK}`: one result per message"
    );
    for (i, r) in results.iter().enumerate() {
        assert!(r.is_ok(), "check `{CHECK}`: message {i} was refused: {r:?}");
    }
    inbox
        .wait_for(CHECK, "all 50 messages to arrive", DELIVERY, |got| {
            distinct(got).len() >= COUNT
        })
        .await;
    assert_eq!(
        distinct(&inbox.messages()),
        sent.into_iter().collect::<HashSet<_>>(),
        "check `{CHECK}`: delivered payloads"
    );
    sub.stop().await;
    broker.close().await;
}

/// With `max_in_flight` 5 and a handler taking 100 ms, more than one and at most five handler
/// calls run at once.
pub async fn concurrency_bound(_options: &Options, factory: &impl BrokerFactory) {
    const CHECK: &str = "concurrency_bound";
    const COUNT: usize = 30;
    const MAX_IN_FLIGHT: usize = 5;
    let broker = factory.broker(app_id(CHECK)).await;
    let topic = topic(CHECK);
    let active = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let done: Arc<Mutex<HashSet<Bytes>>> = Arc::default();
    let handler: MessageHandler = {
        let (active, peak, done) = (active.clone(), peak.clone(), done.clone());
        Arc::new(move |m: Message| {
            let (active, peak, done) = (active.clone(), peak.clone(), done.clone());
            Box::pin(async move {
                let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                active.fetch_sub(1, Ordering::SeqCst);
                lock(&done).insert(m.data);
                Ok(())
            })
        })
    };
    let sub = subscribe(CHECK, &*broker, &topic, MAX_IN_FLIGHT, handler).await;
    for i in 0..COUNT {
        publish(CHECK, &*broker, &topic, format!("{CHECK}-{i}").into()).await;
    }
    wait_until(CHECK, "all 30 messages to be handled", DELIVERY, || {
        lock(&done).len() >= COUNT
    })
    .await;
    let peak = peak.load(Ordering::SeqCst);
    assert!(
        peak <= MAX_IN_FLIGHT,
        "check `{CHECK}`: {peak} handler calls ran at once, max_in_flight is {MAX_IN_FLIGHT}"
    );
    assert!(
        peak > 1,
        "check `{CHECK}`: handler calls never overlapped although max_in_flight is \
         {MAX_IN_FLIGHT}"
    );
    sub.stop().await;
    broker.close().await;
}

/// A message published with `ttlInSeconds` = 1 while its group has no running subscription is
/// not delivered 2.5 s later; one without TTL is (brokers declaring [`PubSubFeature::Ttl`]).
pub async fn ttl(_options: &Options, factory: &impl BrokerFactory) {
    const CHECK: &str = "ttl";
    let broker = factory.broker(app_id(CHECK)).await;
    if !broker.features().contains(&PubSubFeature::Ttl) {
        broker.close().await;
        return;
    }
    let topic = topic(CHECK);
    let inbox = Inbox::new();
    // Subscribing once creates the group, which then keeps what is published for it.
    subscribe(CHECK, &*broker, &topic, 1, inbox.handler())
        .await
        .stop()
        .await;
    let mut expiring = request(&topic, Bytes::from_static(b"expiring"));
    expiring
        .metadata
        .insert(TTL_IN_SECONDS.to_owned(), "1".to_owned());
    broker
        .publish(expiring)
        .await
        .unwrap_or_else(|e| panic!("check `{CHECK}`: publishing with a TTL failed: {e}"));
    publish(CHECK, &*broker, &topic, Bytes::from_static(b"lasting")).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let sub = subscribe(CHECK, &*broker, &topic, 1, inbox.handler()).await;
    inbox
        .wait_for(
            CHECK,
            "the message without TTL to arrive",
            DELIVERY,
            |got| got.iter().any(|m| m.data.as_ref() == b"lasting"),
        )
        .await;
    tokio::time::sleep(QUIET).await;
    assert!(
        !inbox
            .messages()
            .iter()
            .any(|m| m.data.as_ref() == b"expiring"),
        "check `{CHECK}`: a message was delivered after its TTL had passed"
    );
    sub.stop().await;
    broker.close().await;
}

/// Of two subscriptions to one topic in different groups, stopping one waits for its handler
/// call in flight, starts no call afterwards, and leaves the other receiving.
pub async fn stop_one_subscription(_options: &Options, factory: &impl BrokerFactory) {
    const CHECK: &str = "stop_one_subscription";
    let a = factory.broker(app_id(CHECK)).await;
    let b = factory.broker(app_id(CHECK)).await;
    let topic = topic(CHECK);
    let stopped = Arc::new(AtomicBool::new(false));
    let active = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let late_starts = Arc::new(AtomicUsize::new(0));
    let handler_a: MessageHandler = {
        let (stopped, active) = (stopped.clone(), active.clone());
        let (started, late_starts) = (started.clone(), late_starts.clone());
        Arc::new(move |_m: Message| {
            if stopped.load(Ordering::SeqCst) {
                late_starts.fetch_add(1, Ordering::SeqCst);
            }
            started.fetch_add(1, Ordering::SeqCst);
            active.fetch_add(1, Ordering::SeqCst);
            let active = active.clone();
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                active.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            })
        })
    };
    let inbox_b = Inbox::new();
    let sub_a = subscribe(CHECK, &*a, &topic, 1, handler_a).await;
    let sub_b = subscribe(CHECK, &*b, &topic, 1, inbox_b.handler()).await;
    for i in 0..10 {
        publish(CHECK, &*b, &topic, format!("before-{i}").into()).await;
    }
    // Stop while the stopped subscription is busy with this batch.
    wait_until(CHECK, "the first subscription to start", DELIVERY, || {
        started.load(Ordering::SeqCst) >= 2
    })
    .await;
    sub_a.stop().await;
    stopped.store(true, Ordering::SeqCst);
    assert_eq!(
        active.load(Ordering::SeqCst),
        0,
        "check `{CHECK}`: stop() returned while a handler call was still running"
    );
    for i in 0..10 {
        publish(CHECK, &*b, &topic, format!("after-{i}").into()).await;
    }
    inbox_b
        .wait_for(
            CHECK,
            "the other subscription to get every message after the stop",
            DELIVERY,
            |got| distinct(got).len() >= 20,
        )
        .await;
    tokio::time::sleep(QUIET / 2).await;
    assert_eq!(
        late_starts.load(Ordering::SeqCst),
        0,
        "check `{CHECK}`: a handler call started after stop() had returned"
    );
    sub_b.stop().await;
    a.close().await;
    b.close().await;
}

/// Content type and metadata arrive with the message (brokers declaring
/// [`PubSubFeature::MessageMetadata`]).
pub async fn metadata_and_content_type(_options: &Options, factory: &impl BrokerFactory) {
    const CHECK: &str = "metadata_and_content_type";
    let broker = factory.broker(app_id(CHECK)).await;
    if !broker.features().contains(&PubSubFeature::MessageMetadata) {
        broker.close().await;
        return;
    }
    let topic = topic(CHECK);
    let inbox = Inbox::new();
    let sub = subscribe(CHECK, &*broker, &topic, 1, inbox.handler()).await;
    let content_type = "application/vnd.conformance+json";
    let data = Bytes::from_static(br#"{"hello":"world"}"#);
    let req = PublishRequest {
        topic: topic.clone(),
        data: data.clone(),
        content_type: Some(content_type.to_owned()),
        metadata: HashMap::from([("conformance-key".to_owned(), "value-1".to_owned())]),
    };
    broker
        .publish(req)
        .await
        .unwrap_or_else(|e| panic!("check `{CHECK}`: publish failed: {e}"));
    inbox
        .wait_for(CHECK, "the message to arrive", DELIVERY, |got| {
            !got.is_empty()
        })
        .await;
    let got = inbox.messages().remove(0);
    assert_eq!(got.data, data, "check `{CHECK}`: payload");
    assert_eq!(
        got.content_type.as_deref(),
        Some(content_type),
        "check `{CHECK}`: the content type must travel with the message"
    );
    assert_eq!(
        got.metadata.get("conformance-key").map(String::as_str),
        Some("value-1"),
        "check `{CHECK}`: the metadata must travel with the message (got {:?})",
        got.metadata
    );
    sub.stop().await;
    broker.close().await;
}

/// Messages published while a group's only subscription is stopped arrive when it subscribes
/// again.
pub async fn durability_within_group(_options: &Options, factory: &impl BrokerFactory) {
    const CHECK: &str = "durability_within_group";
    let broker = factory.broker(app_id(CHECK)).await;
    let topic = topic(CHECK);
    let inbox = Inbox::new();
    let sub = subscribe(CHECK, &*broker, &topic, 1, inbox.handler()).await;
    publish(CHECK, &*broker, &topic, Bytes::from_static(b"first")).await;
    inbox
        .wait_for(CHECK, "the first message to arrive", DELIVERY, |got| {
            !got.is_empty()
        })
        .await;
    sub.stop().await;
    let sent: HashSet<Bytes> = (0..5)
        .map(|i| Bytes::from(format!("{CHECK}-{i}")))
        .collect();
    for data in &sent {
        publish(CHECK, &*broker, &topic, data.clone()).await;
    }
    tokio::time::sleep(QUIET / 4).await;
    let sub = subscribe(CHECK, &*broker, &topic, 1, inbox.handler()).await;
    inbox
        .wait_for(
            CHECK,
            "the messages published while stopped to arrive after subscribing again",
            DELIVERY,
            |got| sent.iter().all(|d| got.iter().any(|m| m.data == *d)),
        )
        .await;
    sub.stop().await;
    broker.close().await;
}

// === Helpers ===

/// The messages a handler has received, in arrival order.
#[derive(Default)]
struct Inbox {
    messages: Mutex<Vec<Message>>,
}

impl Inbox {
    fn new() -> Arc<Self> {
        Arc::default()
    }

    /// A handler recording each message and acknowledging it.
    fn handler(self: &Arc<Self>) -> MessageHandler {
        let inbox = self.clone();
        Arc::new(move |m: Message| {
            lock(&inbox.messages).push(m);
            Box::pin(async { Ok(()) })
        })
    }

    /// Like [`Inbox::handler`], taking `pause` before acknowledging.
    fn slow_handler(self: &Arc<Self>, pause: Duration) -> MessageHandler {
        let inbox = self.clone();
        Arc::new(move |m: Message| {
            lock(&inbox.messages).push(m);
            Box::pin(async move {
                tokio::time::sleep(pause).await;
                Ok(())
            })
        })
    }

    fn messages(&self) -> Vec<Message> {
        lock(&self.messages).clone()
    }

    /// Waits until `done` holds for the messages received; panics naming `check` otherwise.
    async fn wait_for(
        &self,
        check: &str,
        what: &str,
        within: Duration,
        done: impl Fn(&[Message]) -> bool,
    ) {
        wait_until(check, what, within, || done(&lock(&self.messages))).await;
    }
}

async fn wait_until(check: &str, what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "check `{check}`: waited {within:?} for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn distinct(messages: &[Message]) -> HashSet<Bytes> {
    messages.iter().map(|m| m.data.clone()).collect()
}

fn topic(check: &str) -> String {
    format!("conformance-{check}-{}", uuid::Uuid::new_v4().simple())
}

fn app_id(check: &str) -> String {
    format!("conformance-{check}-app-{}", uuid::Uuid::new_v4().simple())
}

/// Every byte value, then bytes that are never valid UTF-8.
fn binary_payload() -> Bytes {
    let mut data: Vec<u8> = (0..=255).collect();
    data.extend_from_slice(&[0xff, 0xfe, 0x00, 0xc3, 0x28]);
    Bytes::from(data)
}

fn request(topic: &str, data: Bytes) -> PublishRequest {
    PublishRequest {
        topic: topic.to_owned(),
        data,
        content_type: None,
        metadata: HashMap::new(),
    }
}

async fn publish(check: &str, broker: &dyn PubSub, topic: &str, data: Bytes) {
    broker
        .publish(request(topic, data))
        .await
        .unwrap_or_else(|e| panic!("check `{check}`: publish to {topic} failed: {e}"));
}

async fn subscribe(
    check: &str,
    broker: &dyn PubSub,
    topic: &str,
    max_in_flight: usize,
    handler: MessageHandler,
) -> Subscription {
    let req = SubscribeRequest {
        topic: topic.to_owned(),
        metadata: HashMap::new(),
        max_in_flight,
    };
    broker
        .subscribe(req, handler)
        .await
        .unwrap_or_else(|e| panic!("check `{check}`: subscribe to {topic} failed: {e}"))
}
