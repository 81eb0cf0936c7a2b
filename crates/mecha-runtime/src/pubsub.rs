//! The pub/sub building block: publishing (single and bulk, with the CloudEvent envelope and
//! topic scopes), and subscriptions — declarative (`kind: Subscription`), programmatic (the
//! app's `GET /dapr/subscribe` or `ListTopicSubscriptions`) and streaming (gRPC
//! `SubscribeTopicEventsAlpha1`) — with CEL routing, retries, dead-letter topics and bulk
//! delivery.
//!
//! Delivery of one message: read the envelope (or synthesise one for raw payloads), drop it if
//! its `expiration` passed, pick the route, wait until the app is healthy, deliver, and act on
//! the answer: success acknowledges; `RETRY` or a failure is retried with backoff
//! ([`RetryPolicy`]) and, once the retries are exhausted, the message goes to the dead-letter
//! topic if one is set or back to the broker (which delivers it again later) otherwise; `DROP`
//! (or a 404) sends it to the dead-letter topic if one is set and acknowledges it. A message
//! is never discarded without a log line.

pub mod cloudevent;
pub mod delivery;
pub mod routing;
pub mod scopes;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use mecha_core::pubsub::{
    HandlerFuture, Message, MessageHandler, PubSub, PubSubError, PublishRequest, SubscribeRequest,
    Subscription,
};
use mecha_core::resource::{SubscriptionResource, SubscriptionSpec};
use mecha_proto::runtime as rt;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};
use tonic::Code;

use self::delivery::{BulkEntry, Outcome};
use self::routing::Router;
use self::scopes::TopicScopes;
use crate::app_channel::AppChannel;
use crate::components::Loaded;
use crate::error::ApiError;
use crate::health::Health;

const APP_READY_POLL: Duration = Duration::from_millis(50);
const DEFAULT_BULK_MAX_MESSAGES: usize = 100;
const DEFAULT_BULK_MAX_AWAIT: Duration = Duration::from_millis(1000);

/// The pub/sub service.
pub struct PubSubService {
    app_id: String,
    brokers: HashMap<String, Broker>,
    declarative: Vec<SubscriptionResource>,
    active: Mutex<Vec<Active>>,
    retry: RetryPolicy,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    tracer: crate::trace::Tracer,
}

struct Broker {
    pubsub: Arc<dyn PubSub>,
    /// The component's outbound resiliency policy (publishing).
    policy: crate::resiliency::Policy,
    scopes: TopicScopes,
    /// Component-level `concurrency`: handler calls in flight per subscription.
    concurrency: Option<usize>,
}

/// How a subscription was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscriptionKind {
    /// A `kind: Subscription` resource.
    Declarative,
    /// The app's `/dapr/subscribe` or `ListTopicSubscriptions`.
    Programmatic,
    /// A gRPC `SubscribeTopicEventsAlpha1` stream.
    Streaming,
}

/// What the metadata API reports about a subscription.
#[derive(Clone, Debug)]
pub struct SubscriptionInfo {
    /// The pub/sub component.
    pub pubsub: String,
    /// The topic.
    pub topic: String,
    /// The dead-letter topic, if any.
    pub dead_letter_topic: Option<String>,
    /// Subscription metadata.
    pub metadata: HashMap<String, String>,
    /// `(match, path)` rules; the default route has an empty match.
    pub rules: Vec<(String, String)>,
    /// How it was made.
    pub kind: SubscriptionKind,
}

struct Active {
    id: u64,
    info: SubscriptionInfo,
    subscription: Option<Subscription>,
}

/// Retries of a delivery the app did not accept, before the message goes to the dead-letter
/// topic or back to the broker.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// The first backoff; it doubles on each retry.
    pub initial_backoff: Duration,
    /// The longest backoff.
    pub max_backoff: Duration,
}

/// A message to publish through the API.
#[derive(Debug, Default)]
pub struct Publish {
    /// The pub/sub component.
    pub pubsub: String,
    /// The topic.
    pub topic: String,
    /// The body.
    pub data: Bytes,
    /// The body's content type.
    pub content_type: Option<String>,
    /// Request metadata (`rawPayload`, `ttlInSeconds`, `cloudevent.*`, broker options).
    pub metadata: HashMap<String, String>,
    /// The caller's `traceparent`.
    pub traceparent: Option<String>,
    /// The caller's `tracestate`.
    pub tracestate: Option<String>,
}

/// One entry of a bulk publish.
#[derive(Debug, Default)]
pub struct BulkPublishEntry {
    /// The caller's id for the entry.
    pub entry_id: String,
    /// The event, as bytes.
    pub data: Bytes,
    /// The event's content type.
    pub content_type: String,
    /// Entry metadata.
    pub metadata: HashMap<String, String>,
}

/// An entry of a bulk publish that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedEntry {
    /// The caller's id for the entry.
    pub entry_id: String,
    /// Why.
    pub error: String,
}

/// Where a subscription's events go.
#[derive(Clone)]
enum Target {
    App(Arc<AppChannel>),
    Bulk(mpsc::Sender<BulkItem>),
    Stream(mpsc::Sender<StreamEvent>),
}

/// An event of a streaming subscription and where its answer goes.
pub struct StreamEvent {
    /// The event, in its gRPC form.
    pub event: rt::TopicEventRequest,
    /// Receives the app's answer.
    pub answer: oneshot::Sender<Option<rt::TopicEventResponse>>,
}

struct BulkItem {
    event: Map<String, Value>,
    metadata: HashMap<String, String>,
    path: String,
    answer: oneshot::Sender<Outcome>,
}

/// One subscription's delivery context.
struct Route {
    pubsub: String,
    topic: String,
    router: Router,
    dead_letter_topic: Option<String>,
    raw_payload: bool,
    broker: Arc<dyn PubSub>,
    target: Target,
    health: Arc<Health>,
    retry: RetryPolicy,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    tracer: crate::trace::Tracer,
}

/// Stops a streaming subscription when dropped.
pub struct StreamSubscription {
    service: Arc<PubSubService>,
    id: u64,
}

// === impl RetryPolicy ===

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    fn backoff(&self, retry: u32) -> Duration {
        self.initial_backoff
            .saturating_mul(1u32 << retry.min(16))
            .min(self.max_backoff)
    }
}

// === impl SubscriptionKind ===

impl SubscriptionKind {
    /// Dapr's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionKind::Declarative => "DECLARATIVE",
            SubscriptionKind::Programmatic => "PROGRAMMATIC",
            SubscriptionKind::Streaming => "STREAMING",
        }
    }

    /// The value of `PubsubSubscriptionType` in the gRPC metadata answer.
    pub fn as_grpc(self) -> i32 {
        match self {
            SubscriptionKind::Declarative => 1,
            SubscriptionKind::Programmatic => 2,
            SubscriptionKind::Streaming => 3,
        }
    }
}

// === errors ===

fn not_configured() -> ApiError {
    ApiError::new(
        "ERR_PUBSUB_NOT_CONFIGURED",
        StatusCode::BAD_REQUEST,
        Code::FailedPrecondition,
        "pubsub is not configured",
    )
    .with_reason("DAPR_PUBSUB_NOT_CONFIGURED", vec![])
}

fn not_found(name: &str) -> ApiError {
    ApiError::new(
        "ERR_PUBSUB_NOT_FOUND",
        StatusCode::NOT_FOUND,
        Code::InvalidArgument,
        format!("pubsub {name} is not found"),
    )
    .with_reason("DAPR_PUBSUB_NOT_FOUND", vec![])
    .with_resource("pubsub", name)
}

fn name_empty() -> ApiError {
    ApiError::new(
        "ERR_PUBSUB_EMPTY",
        StatusCode::NOT_FOUND,
        Code::InvalidArgument,
        "pubsub name is empty",
    )
    .with_reason("DAPR_PUBSUB_NAME_EMPTY", vec![])
}

fn topic_empty(name: &str) -> ApiError {
    ApiError::new(
        "ERR_TOPIC_NAME_EMPTY",
        StatusCode::NOT_FOUND,
        Code::InvalidArgument,
        format!("topic is empty in pubsub {name}"),
    )
    .with_reason("DAPR_PUBSUB_TOPIC_NAME_EMPTY", vec![])
    .with_resource("pubsub", name)
}

fn forbidden(name: &str, topic: &str, app_id: &str) -> ApiError {
    ApiError::new(
        "ERR_PUBSUB_FORBIDDEN",
        StatusCode::FORBIDDEN,
        Code::PermissionDenied,
        format!("topic {topic} is not allowed for app id {app_id}"),
    )
    .with_reason("DAPR_PUBSUB_FORBIDDEN", vec![("topic", topic.to_owned())])
    .with_resource("pubsub", name)
}

fn publish_failed(name: &str, topic: &str, e: &PubSubError) -> ApiError {
    ApiError::new(
        "ERR_PUBSUB_PUBLISH_MESSAGE",
        StatusCode::INTERNAL_SERVER_ERROR,
        Code::Internal,
        format!("error when publish to topic {topic} in pubsub {name}: {e}"),
    )
    .with_reason(
        "DAPR_PUBSUB_PUBLISH_MESSAGE",
        vec![("topic", topic.to_owned())],
    )
    .with_resource("pubsub", name)
}

fn cloud_event_error(name: &str, topic: &str, e: &str) -> ApiError {
    ApiError::new(
        "ERR_PUBSUB_CLOUD_EVENTS_SER",
        StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument,
        format!("error when creating the cloud event for topic {topic} in pubsub {name}: {e}"),
    )
    .with_reason("DAPR_PUBSUB_CLOUD_EVENT_CREATION", vec![])
    .with_resource("pubsub", name)
}

/// The error for a bulk request whose entries cannot be read.
pub fn events_error(message: impl Into<String>) -> ApiError {
    ApiError::new(
        "ERR_PUBSUB_EVENTS_SER",
        StatusCode::BAD_REQUEST,
        Code::InvalidArgument,
        message,
    )
    .with_reason("DAPR_PUBSUB_MARSHAL_EVENTS", vec![])
}

fn metadata_error(message: impl Into<String>) -> ApiError {
    ApiError::new(
        "ERR_PUBSUB_REQUEST_METADATA",
        StatusCode::BAD_REQUEST,
        Code::InvalidArgument,
        message,
    )
    .with_reason("DAPR_PUBSUB_METADATA_DESERIALIZATION", vec![])
}

// === impl PubSubService ===

impl PubSubService {
    /// Builds the service over the loaded brokers and the declarative subscriptions in scope.
    pub fn new(
        app_id: &str,
        brokers: &[Loaded<dyn PubSub>],
        declarative: Vec<SubscriptionResource>,
    ) -> Self {
        Self {
            app_id: app_id.to_owned(),
            brokers: brokers
                .iter()
                .map(|b| {
                    (
                        b.info.name.clone(),
                        Broker {
                            pubsub: b.component.clone(),
                            policy: crate::resiliency::Policy::default(),
                            scopes: TopicScopes::from_metadata(&b.metadata),
                            concurrency: b
                                .metadata
                                .get("concurrency")
                                .and_then(|c| c.trim().parse().ok())
                                .filter(|c| *c > 0),
                        },
                    )
                })
                .collect(),
            declarative,
            active: Mutex::new(Vec::new()),
            retry: RetryPolicy::default(),
            metrics: None,
            tracer: crate::trace::Tracer::disabled(),
        }
    }

    /// Traces publishes (producer spans, their context in the CloudEvent) and deliveries
    /// (consumer spans, their context sent to the app).
    pub fn with_tracer(mut self, tracer: crate::trace::Tracer) -> Self {
        self.tracer = tracer;
        self
    }

    /// Publishes through each component's outbound policy of `resiliency`.
    pub fn with_resiliency(mut self, resiliency: &crate::resiliency::Resiliency) -> Self {
        for (name, b) in &mut self.brokers {
            b.policy = resiliency.component(
                crate::resiliency::ComponentKind::Pubsub,
                name,
                crate::resiliency::Direction::Outbound,
            );
        }
        self
    }

    /// Records publishes and deliveries in `metrics`.
    pub fn with_metrics(mut self, metrics: Option<Arc<crate::metrics::Metrics>>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Replaces the delivery retry policy (before subscriptions start).
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    fn broker(&self, name: &str, topic: &str) -> Result<&Broker, ApiError> {
        if self.brokers.is_empty() {
            return Err(not_configured());
        }
        if name.is_empty() {
            return Err(name_empty());
        }
        let broker = self.brokers.get(name).ok_or_else(|| not_found(name))?;
        if topic.is_empty() {
            return Err(topic_empty(name));
        }
        Ok(broker)
    }

    /// Publishes one message.
    pub async fn publish(&self, req: Publish) -> Result<(), ApiError> {
        let broker = self.broker(&req.pubsub, &req.topic)?;
        if !broker.scopes.can_publish(&self.app_id, &req.topic) {
            return Err(forbidden(&req.pubsub, &req.topic, &self.app_id));
        }
        let raw = raw_payload(&req.metadata)?;
        let span = self.tracer.start_lazy(
            req.traceparent
                .as_deref()
                .and_then(crate::trace::SpanContext::from_traceparent),
            || format!("publish/{}/{}", req.pubsub, req.topic),
            crate::trace::SpanKind::Producer,
        );
        let (traceparent, tracestate) = match span.context() {
            Some(ctx) => (Some(ctx.traceparent()), ctx.tracestate.clone()),
            None => (req.traceparent.clone(), req.tracestate.clone()),
        };
        let (data, content_type) = if raw {
            (req.data, req.content_type)
        } else {
            let ctx = cloudevent::Context {
                app_id: &self.app_id,
                pubsub: &req.pubsub,
                topic: &req.topic,
                traceparent: traceparent.as_deref(),
                tracestate: tracestate.as_deref(),
                metadata: &req.metadata,
            };
            let ce = cloudevent::envelope(&req.data, req.content_type.as_deref(), &ctx)
                .map_err(|e| cloud_event_error(&req.pubsub, &req.topic, &e))?;
            (
                Bytes::from(ce),
                Some(cloudevent::CLOUDEVENT_CONTENT_TYPE.to_owned()),
            )
        };
        let started = std::time::Instant::now();
        let message = PublishRequest {
            topic: req.topic.clone(),
            data,
            content_type,
            metadata: broker_metadata(req.metadata),
        };
        let result = crate::resiliency::component_call(
            &broker.policy,
            |e| matches!(e, PubSubError::Backend(_)),
            PubSubError::Backend,
            || broker.pubsub.publish(message.clone()),
        )
        .await;
        if let Some(m) = &self.metrics {
            m.pubsub_egress(&req.pubsub, &req.topic, result.is_ok(), started.elapsed());
        }
        result.map_err(|e| publish_failed(&req.pubsub, &req.topic, &e))
    }

    /// Publishes several messages to one topic; returns the entries that failed (an error
    /// only when the request as a whole is refused).
    pub async fn bulk_publish(
        &self,
        pubsub: &str,
        topic: &str,
        entries: Vec<BulkPublishEntry>,
        metadata: HashMap<String, String>,
        traceparent: Option<&str>,
    ) -> Result<Vec<FailedEntry>, ApiError> {
        let broker = self.broker(pubsub, topic)?;
        if !broker.scopes.can_publish(&self.app_id, topic) {
            return Err(forbidden(pubsub, topic, &self.app_id));
        }
        let mut seen = std::collections::HashSet::with_capacity(entries.len());
        for e in &entries {
            if e.entry_id.is_empty() {
                return Err(events_error("entryId is required for every entry"));
            }
            if !seen.insert(e.entry_id.as_str()) {
                return Err(events_error(format!(
                    "entryId '{}' is duplicated; entry ids must be unique",
                    e.entry_id
                )));
            }
        }
        let raw = raw_payload(&metadata)?;
        let mut ids = Vec::with_capacity(entries.len());
        let mut reqs = Vec::with_capacity(entries.len());
        for e in entries {
            let mut md = metadata.clone();
            md.extend(e.metadata);
            let (data, content_type) = if raw || raw_payload(&md)? {
                (e.data, Some(e.content_type))
            } else {
                let ctx = cloudevent::Context {
                    app_id: &self.app_id,
                    pubsub,
                    topic,
                    traceparent,
                    tracestate: None,
                    metadata: &md,
                };
                let ce = cloudevent::envelope(&e.data, Some(&e.content_type), &ctx)
                    .map_err(|err| events_error(format!("entry '{}': {err}", e.entry_id)))?;
                (
                    Bytes::from(ce),
                    Some(cloudevent::CLOUDEVENT_CONTENT_TYPE.to_owned()),
                )
            };
            ids.push(e.entry_id);
            reqs.push(PublishRequest {
                topic: topic.to_owned(),
                data,
                content_type,
                metadata: broker_metadata(md),
            });
        }
        let results = broker.pubsub.bulk_publish(reqs).await;
        Ok(ids
            .into_iter()
            .zip(results)
            .filter_map(|(entry_id, r)| {
                r.err().map(|e| FailedEntry {
                    entry_id,
                    error: e.to_string(),
                })
            })
            .collect())
    }

    /// The subscriptions in place, for the metadata API.
    pub fn subscriptions(&self) -> Vec<SubscriptionInfo> {
        self.active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|a| a.info.clone())
            .collect()
    }

    /// Once the app is ready, reads its programmatic subscriptions and starts every
    /// subscription; `/v1.0/healthz` waits for this.
    pub fn start(self: &Arc<Self>, app: Option<Arc<AppChannel>>, health: Arc<Health>) {
        if self.brokers.is_empty() {
            if !self.declarative.is_empty() {
                tracing::warn!(
                    "Subscription resources are loaded but no pub/sub component is configured"
                );
            }
            return;
        }
        let Some(app) = app else {
            if !self.declarative.is_empty() {
                tracing::warn!(
                    "Subscriptions are declared but there is no --app-port to deliver to"
                );
            }
            return;
        };
        health.set_subscriptions_ready(false);
        let service = self.clone();
        tokio::spawn(async move {
            while !health.app_ready() {
                tokio::time::sleep(APP_READY_POLL).await;
            }
            let mut specs: Vec<(SubscriptionSpec, SubscriptionKind)> = service
                .declarative
                .iter()
                .map(|d| (d.spec.clone(), SubscriptionKind::Declarative))
                .collect();
            specs.extend(
                programmatic(&app)
                    .await
                    .into_iter()
                    .map(|s| (s, SubscriptionKind::Programmatic)),
            );
            let mut seen = std::collections::HashSet::new();
            for (spec, kind) in specs {
                if !seen.insert((spec.pubsubname.clone(), spec.topic.clone())) {
                    tracing::warn!(pubsub = %spec.pubsubname, topic = %spec.topic, kind = kind.as_str(), "A subscription to this topic already exists; this one is ignored");
                    continue;
                }
                if let Err(e) = service
                    .subscribe_app(&spec, kind, app.clone(), health.clone())
                    .await
                {
                    tracing::error!(pubsub = %spec.pubsubname, topic = %spec.topic, error = %e, "Subscription failed");
                }
            }
            health.set_subscriptions_ready(true);
        });
    }

    async fn subscribe_app(
        self: &Arc<Self>,
        spec: &SubscriptionSpec,
        kind: SubscriptionKind,
        app: Arc<AppChannel>,
        health: Arc<Health>,
    ) -> Result<(), String> {
        let broker = self
            .brokers
            .get(&spec.pubsubname)
            .ok_or_else(|| format!("pubsub {} is not loaded", spec.pubsubname))?;
        if !broker.scopes.can_subscribe(&self.app_id, &spec.topic) {
            return Err(format!(
                "topic {} is not allowed for app id {} by the component's subscription scopes",
                spec.topic, self.app_id
            ));
        }
        let mut rules = spec.rules();
        if app.is_grpc() && !rules.iter().any(|(expr, _)| expr.is_empty()) {
            // A gRPC app's default route may be empty: its events then arrive with an empty
            // path, which is how the SDKs key a handler registered without a rule.
            rules.push((String::new(), String::new()));
        }
        if rules.is_empty() {
            return Err("the subscription has no route".into());
        }
        let router = Router::new(&rules)?;
        let bulk = spec.bulk_subscribe.as_ref().filter(|b| b.enabled);
        let (target, max_in_flight) = match bulk {
            Some(b) => {
                let max = b
                    .max_messages_count
                    .filter(|n| *n > 0)
                    .map_or(DEFAULT_BULK_MAX_MESSAGES, |n| n as usize);
                let wait = b
                    .max_await_duration_ms
                    .filter(|n| *n > 0)
                    .map_or(DEFAULT_BULK_MAX_AWAIT, |n| Duration::from_millis(n as u64));
                let tx = spawn_batcher(
                    app.clone(),
                    spec.pubsubname.clone(),
                    spec.topic.clone(),
                    max,
                    wait,
                );
                (Target::Bulk(tx), max)
            }
            None => (
                Target::App(app),
                spec.metadata
                    .get("concurrency")
                    .and_then(|c| c.trim().parse().ok())
                    .filter(|c: &usize| *c > 0)
                    .or(broker.concurrency)
                    .unwrap_or(1),
            ),
        };
        let route = Arc::new(Route {
            pubsub: spec.pubsubname.clone(),
            topic: spec.topic.clone(),
            router,
            dead_letter_topic: spec
                .dead_letter_topic
                .clone()
                .filter(|t| !t.trim().is_empty()),
            raw_payload: spec.raw_payload(),
            broker: broker.pubsub.clone(),
            target,
            health,
            retry: self.retry,
            metrics: self.metrics.clone(),
            tracer: self.tracer.clone(),
        });
        let subscription = broker
            .pubsub
            .subscribe(
                SubscribeRequest {
                    topic: spec.topic.clone(),
                    metadata: spec.metadata.clone(),
                    max_in_flight,
                },
                handler(route),
            )
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(pubsub = %spec.pubsubname, topic = %spec.topic, routes = ?rules, kind = kind.as_str(), dead_letter_topic = spec.dead_letter_topic.as_deref().unwrap_or(""), bulk = bulk.is_some(), "Subscribed");
        self.register(spec, rules, kind, Some(subscription));
        Ok(())
    }

    fn register(
        &self,
        spec: &SubscriptionSpec,
        rules: Vec<(String, String)>,
        kind: SubscriptionKind,
        subscription: Option<Subscription>,
    ) -> u64 {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Active {
                id,
                info: SubscriptionInfo {
                    pubsub: spec.pubsubname.clone(),
                    topic: spec.topic.clone(),
                    dead_letter_topic: spec.dead_letter_topic.clone(),
                    metadata: spec.metadata.clone(),
                    rules,
                    kind,
                },
                subscription,
            });
        id
    }

    /// Starts a streaming subscription: events arrive on the returned receiver, each with a
    /// channel for the app's answer. The subscription ends when the handle is dropped.
    pub async fn subscribe_stream(
        self: &Arc<Self>,
        pubsub: &str,
        topic: &str,
        metadata: HashMap<String, String>,
        dead_letter_topic: Option<String>,
        health: Arc<Health>,
    ) -> Result<(StreamSubscription, mpsc::Receiver<StreamEvent>), ApiError> {
        let broker = self.broker(pubsub, topic)?;
        if !broker.scopes.can_subscribe(&self.app_id, topic) {
            return Err(forbidden(pubsub, topic, &self.app_id));
        }
        let (tx, rx) = mpsc::channel(16);
        let spec = SubscriptionSpec {
            pubsubname: pubsub.to_owned(),
            topic: topic.to_owned(),
            dead_letter_topic: dead_letter_topic.filter(|t| !t.trim().is_empty()),
            metadata,
            ..Default::default()
        };
        let route = Arc::new(Route {
            pubsub: pubsub.to_owned(),
            topic: topic.to_owned(),
            router: Router::new(&[(String::new(), String::new())]).map_err(ApiError::internal)?,
            dead_letter_topic: spec.dead_letter_topic.clone(),
            raw_payload: spec.raw_payload(),
            broker: broker.pubsub.clone(),
            target: Target::Stream(tx),
            health,
            retry: self.retry,
            metrics: self.metrics.clone(),
            tracer: self.tracer.clone(),
        });
        let subscription = broker
            .pubsub
            .subscribe(
                SubscribeRequest {
                    topic: topic.to_owned(),
                    metadata: spec.metadata.clone(),
                    max_in_flight: broker.concurrency.unwrap_or(1),
                },
                handler(route),
            )
            .await
            .map_err(|e| {
                ApiError::new(
                    "ERR_PUBSUB_SUBSCRIBE",
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Code::Internal,
                    format!("error subscribing to topic {topic} in pubsub {pubsub}: {e}"),
                )
            })?;
        tracing::info!(pubsub, topic, "Streaming subscription started");
        let id = self.register(
            &spec,
            Vec::new(),
            SubscriptionKind::Streaming,
            Some(subscription),
        );
        Ok((
            StreamSubscription {
                service: self.clone(),
                id,
            },
            rx,
        ))
    }

    /// Stops every subscription: nothing more is delivered to the app.
    pub async fn stop(&self) {
        let subs: Vec<Subscription> = self
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter_mut()
            .filter_map(|a| a.subscription.take())
            .collect();
        for s in subs {
            s.stop().await;
        }
    }

    /// Closes the brokers.
    pub async fn close(&self) {
        for b in self.brokers.values() {
            b.pubsub.close().await;
        }
    }
}

// === impl StreamSubscription ===

impl Drop for StreamSubscription {
    fn drop(&mut self) {
        let mut active = self
            .service
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(pos) = active.iter().position(|a| a.id == self.id) {
            let a = active.remove(pos);
            tracing::info!(pubsub = %a.info.pubsub, topic = %a.info.topic, "Streaming subscription ended");
            if let Some(s) = a.subscription {
                tokio::spawn(s.stop());
            }
        }
    }
}

/// Whether `metadata.rawPayload` is set; an unreadable value is a request error.
fn raw_payload(metadata: &HashMap<String, String>) -> Result<bool, ApiError> {
    match metadata.get("rawPayload") {
        None => Ok(false),
        Some(v) => mecha_core::metadata::parse_bool(v).ok_or_else(|| {
            metadata_error(format!("metadata rawPayload must be a boolean, got '{v}'"))
        }),
    }
}

/// The metadata the broker sees: everything but the envelope overrides.
fn broker_metadata(mut metadata: HashMap<String, String>) -> HashMap<String, String> {
    metadata.retain(|k, _| !k.starts_with("cloudevent.") && k != "rawPayload");
    metadata
}

/// Asks the app for its subscriptions.
async fn programmatic(app: &AppChannel) -> Vec<SubscriptionSpec> {
    if let Some(mut grpc) = app.grpc() {
        return match grpc.list_topic_subscriptions(app.grpc_request(())).await {
            Ok(r) => r
                .into_inner()
                .subscriptions
                .into_iter()
                .map(|s| {
                    let routes = s.routes.unwrap_or_default();
                    SubscriptionSpec {
                        pubsubname: s.pubsub_name,
                        topic: s.topic,
                        route: None,
                        routes: Some(mecha_core::resource::Routes {
                            rules: routes
                                .rules
                                .into_iter()
                                .map(|r| mecha_core::resource::Rule {
                                    match_expr: r.r#match,
                                    path: r.path,
                                })
                                .collect(),
                            default: Some(routes.default).filter(|d| !d.is_empty()),
                        }),
                        dead_letter_topic: Some(s.dead_letter_topic).filter(|d| !d.is_empty()),
                        metadata: s.metadata,
                        bulk_subscribe: s.bulk_subscribe.map(|b| {
                            mecha_core::resource::BulkSubscribe {
                                enabled: b.enabled,
                                max_messages_count: Some(i64::from(b.max_messages_count)),
                                max_await_duration_ms: Some(i64::from(b.max_await_duration_ms)),
                            }
                        }),
                    }
                })
                .filter(|s| {
                    // A gRPC subscription with no route at all still gets its events.
                    !s.pubsubname.is_empty() && !s.topic.is_empty()
                })
                .collect(),
            Err(e) if e.code() == Code::Unimplemented => Vec::new(),
            Err(e) => {
                tracing::warn!(error = %e, "ListTopicSubscriptions failed; no programmatic subscription");
                Vec::new()
            }
        };
    }
    let res = match app
        .request(Method::GET, "/dapr/subscribe", [], Bytes::new())
        .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "GET /dapr/subscribe failed; no programmatic subscription");
            return Vec::new();
        }
    };
    if !res.status.is_success() {
        tracing::debug!(status = %res.status, "The app has no programmatic subscriptions");
        return Vec::new();
    }
    let items: Vec<Value> = match serde_json::from_slice(&res.body) {
        Ok(Value::Array(items)) => items,
        Ok(Value::Null) => Vec::new(),
        Ok(_) | Err(_) => {
            tracing::error!(
                "GET /dapr/subscribe did not answer a JSON array; no programmatic subscription"
            );
            return Vec::new();
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match serde_json::from_value::<SubscriptionSpec>(item) {
            Ok(s) if s.rules().is_empty() => {
                tracing::warn!(pubsub = %s.pubsubname, topic = %s.topic, "Subscription without a route is ignored")
            }
            Ok(s) => out.push(s),
            Err(e) => tracing::error!(error = %e, "Unreadable entry in /dapr/subscribe ignored"),
        }
    }
    out
}

/// The handler the broker calls for each message of one subscription.
fn handler(route: Arc<Route>) -> MessageHandler {
    Arc::new(move |msg: Message| -> HandlerFuture {
        let route = route.clone();
        Box::pin(async move {
            let started = std::time::Instant::now();
            let result = route.handle(msg).await;
            if let Some(m) = &route.metrics {
                let status = if result.is_ok() {
                    crate::metrics::PUBSUB_SUCCESS
                } else {
                    crate::metrics::PUBSUB_RETRY
                };
                m.pubsub_ingress(&route.pubsub, &route.topic, status, started.elapsed());
            }
            result
        })
    })
}

// === impl Route ===

impl Route {
    async fn handle(&self, msg: Message) -> Result<(), String> {
        let event = if self.raw_payload {
            cloudevent::synthesize(&msg.data, &self.pubsub, &self.topic)
        } else {
            match serde_json::from_slice::<Value>(&msg.data) {
                Ok(Value::Object(ce)) => ce,
                _ => {
                    return self
                        .undeliverable(&msg, "the message is not a CloudEvent (publish with rawPayload, or subscribe with rawPayload)")
                        .await;
                }
            }
        };
        if cloudevent::is_expired(&event) {
            tracing::warn!(pubsub = %self.pubsub, topic = %self.topic, id = event.get("id").and_then(serde_json::Value::as_str).unwrap_or(""), "Event expired before delivery; dropped");
            return Ok(());
        }
        let Some(path) = self.router.route(&event).map(str::to_owned) else {
            return self.undeliverable(&msg, "no route matched the event").await;
        };
        // Streaming subscribers are not the app channel: only app deliveries wait for its health.
        while !matches!(self.target, Target::Stream(_)) && !self.health.app_healthy() {
            tokio::time::sleep(APP_READY_POLL).await;
        }
        // A consumer span, child of the publisher's context carried in the event; the app gets
        // the span's context.
        let span = self.tracer.start_lazy(
            event
                .get("traceparent")
                .and_then(serde_json::Value::as_str)
                .and_then(crate::trace::SpanContext::from_traceparent),
            || format!("pubsub/{}/{}", self.pubsub, self.topic),
            crate::trace::SpanKind::Consumer,
        );
        let mut event = event;
        if let Some(ctx) = span.context() {
            event.insert("traceparent".into(), ctx.traceparent().into());
        }
        let mut retry = 0;
        loop {
            let outcome = match &self.target {
                Target::App(app) => {
                    let _permit = app.permit().await;
                    delivery::deliver(app, &self.pubsub, &self.topic, &path, &event, &msg.metadata)
                        .await
                }
                Target::Bulk(tx) => {
                    let (answer, rx) = oneshot::channel();
                    let item = BulkItem {
                        event: event.clone(),
                        metadata: msg.metadata.clone(),
                        path: path.clone(),
                        answer,
                    };
                    if tx.send(item).await.is_err() {
                        return Err("the subscription is stopping".into());
                    }
                    rx.await
                        .unwrap_or_else(|_| Outcome::Retry("the subscription is stopping".into()))
                }
                Target::Stream(tx) => {
                    let (answer, rx) = oneshot::channel();
                    let ev = delivery::topic_event_request(&event, &self.pubsub, &self.topic, "");
                    if tx.send(StreamEvent { event: ev, answer }).await.is_err() {
                        return Err("the streaming subscriber is gone".into());
                    }
                    match rx.await {
                        Ok(status) => delivery::stream_status(status.as_ref()),
                        Err(_) => return Err("the streaming subscriber is gone".into()),
                    }
                }
            };
            match outcome {
                Outcome::Success => return Ok(()),
                Outcome::Drop(why) => {
                    tracing::warn!(pubsub = %self.pubsub, topic = %self.topic, reason = %why, "Event dropped");
                    return self.dead_letter_or_ack(&msg, &why).await;
                }
                Outcome::Retry(why) if retry < self.retry.max_retries => {
                    tracing::debug!(pubsub = %self.pubsub, topic = %self.topic, retry, reason = %why, "Delivery failed; retrying");
                    tokio::time::sleep(self.retry.backoff(retry)).await;
                    retry += 1;
                }
                Outcome::Retry(why) => {
                    return match &self.dead_letter_topic {
                        Some(_) => self.dead_letter_or_ack(&msg, &why).await,
                        None => {
                            tracing::warn!(pubsub = %self.pubsub, topic = %self.topic, reason = %why, "Delivery failed after retries; the broker will deliver it again");
                            Err(why)
                        }
                    };
                }
            }
        }
    }

    /// A message that can never be delivered: to the dead-letter topic, else logged and
    /// acknowledged.
    async fn undeliverable(&self, msg: &Message, why: &str) -> Result<(), String> {
        tracing::error!(pubsub = %self.pubsub, topic = %self.topic, reason = why, "Event cannot be delivered");
        self.dead_letter_or_ack(msg, why).await
    }

    async fn dead_letter_or_ack(&self, msg: &Message, why: &str) -> Result<(), String> {
        let Some(dlt) = &self.dead_letter_topic else {
            return Ok(());
        };
        let req = PublishRequest {
            topic: dlt.clone(),
            data: msg.data.clone(),
            content_type: msg.content_type.clone(),
            metadata: msg.metadata.clone(),
        };
        match self.broker.publish(req).await {
            Ok(()) => {
                tracing::warn!(pubsub = %self.pubsub, topic = %self.topic, dead_letter_topic = %dlt, reason = why, "Event sent to the dead-letter topic");
                Ok(())
            }
            Err(e) => {
                tracing::error!(pubsub = %self.pubsub, topic = %self.topic, dead_letter_topic = %dlt, error = %e, "Publishing to the dead-letter topic failed; the broker will deliver the event again");
                Err(e.to_string())
            }
        }
    }
}

/// Collects events of a bulk subscription into batches of at most `max`, waiting at most
/// `wait` for a batch to fill, and delivers each batch (per route) to the app.
fn spawn_batcher(
    app: Arc<AppChannel>,
    pubsub: String,
    topic: String,
    max: usize,
    wait: Duration,
) -> mpsc::Sender<BulkItem> {
    let (tx, mut rx) = mpsc::channel::<BulkItem>(max.max(1));
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            let deadline = tokio::time::Instant::now() + wait;
            while batch.len() < max {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(item)) => batch.push(item),
                    Ok(None) | Err(_) => break,
                }
            }
            let mut by_path: HashMap<String, Vec<BulkItem>> = HashMap::new();
            for item in batch {
                by_path.entry(item.path.clone()).or_default().push(item);
            }
            for (path, items) in by_path {
                let entries: Vec<BulkEntry<'_>> = items
                    .iter()
                    .map(|i| BulkEntry {
                        entry_id: uuid::Uuid::new_v4().to_string(),
                        event: &i.event,
                        metadata: &i.metadata,
                    })
                    .collect();
                let outcomes = {
                    let _permit = app.permit().await;
                    delivery::deliver_bulk(&app, &pubsub, &topic, &path, &entries).await
                };
                drop(entries);
                for (item, outcome) in items.into_iter().zip(outcomes) {
                    let _ = item.answer.send(outcome);
                }
            }
        }
    });
    tx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(0), Duration::from_millis(100));
        assert_eq!(p.backoff(1), Duration::from_millis(200));
        assert_eq!(p.backoff(10), Duration::from_secs(2));
    }
}
