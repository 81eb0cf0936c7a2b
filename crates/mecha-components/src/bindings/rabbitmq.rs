//! `bindings.rabbitmq` v1: a RabbitMQ queue as an input and output binding (AMQP 0.9.1).
//!
//! - **Output:** operation `create` publishes the data to `queueName` through the default
//!   exchange, persistent when `durable`, with request metadata `ttlInSeconds` (per-message
//!   expiration), `priority` and `contentType`; every request metadata entry also becomes a
//!   message header, as in Dapr. The call returns once the broker confirmed the message
//!   (publisher confirms), bounded by a timeout.
//! - **Input:** consumes `queueName` with manual acknowledgements: a message is acked once the
//!   app accepted it and nacked with requeue otherwise. String headers become event metadata
//!   (query-escaped, as Dapr does).
//! - The queue is declared on every connection with `durable`, `deleteWhenUnused`,
//!   `exclusive`, `ttlInSeconds` (`x-message-ttl`) and `maxPriority` (`x-max-priority`). Both
//!   sides share one connection (named `mecha-<app id>-<component>` in the client properties),
//!   which is reopened after `reconnectWaitInSeconds` when the broker closes it.
//! - TLS client certificates and `externalSasl` are not supported yet and are refused.
//!
//! Tested against RabbitMQ 3.10.

mod consumer;
mod link;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};
use mecha_core::bindings::{
    BindingComponent, BindingError, EventHandler, InputBinding, InvokeRequest, InvokeResponse,
    OutputBinding,
};
use mecha_core::component::{ComponentError, ComponentInit};
use tokio::sync::Mutex;

use self::link::Link;

/// The operations of the output side.
const OPERATIONS: &[&str] = &["create"];
/// Request metadata key of the per-message time to live, in seconds.
const TTL_IN_SECONDS: &str = "ttlInSeconds";
/// Request metadata key of the message priority.
const PRIORITY: &str = "priority";
/// Request metadata key of the content type.
const CONTENT_TYPE: &str = "contentType";
/// The content type when neither the request nor the component sets one (Dapr's).
const DEFAULT_CONTENT_TYPE: &str = "text/plain";

/// The `bindings.rabbitmq` component.
pub struct RabbitMqBinding;

/// The component metadata, by Dapr key.
#[derive(Clone, Debug)]
pub(crate) struct RabbitMqMetadata {
    /// `host`: the AMQP URI, `amqp://user:pass@host:5672[/vhost]`.
    pub(crate) host: String,
    /// `queueName`: the queue published to and consumed from.
    pub(crate) queue_name: String,
    /// `durable`: a durable queue and persistent messages (default false).
    pub(crate) durable: bool,
    /// `deleteWhenUnused`: an auto-delete queue (default false).
    pub(crate) delete_when_unused: bool,
    /// `exclusive`: a queue only this connection may use (default false).
    pub(crate) exclusive: bool,
    /// `prefetchCount`: unacknowledged messages the broker may push (0: no limit).
    pub(crate) prefetch_count: u16,
    /// `maxPriority`: makes the queue a priority queue (`x-max-priority`, 1–255).
    pub(crate) max_priority: Option<u8>,
    /// `ttlInSeconds`: the queue's default message TTL (`x-message-ttl`).
    pub(crate) ttl: Option<Duration>,
    /// `contentType`: the default content type of published messages.
    pub(crate) content_type: String,
    /// `reconnectWaitInSeconds`: the pause before reconnecting (default 5 s).
    pub(crate) reconnect_wait: Duration,
    /// The connection name sent in the client properties.
    pub(crate) connection_name: String,
}

/// The output side.
struct RabbitMqOutput {
    link: Arc<Link>,
}

/// The input side.
struct RabbitMqInput {
    link: Arc<Link>,
    consumer: Mutex<Option<consumer::Consumer>>,
}

// === impl RabbitMqBinding ===

impl RabbitMqBinding {
    /// Creates the component: connects and declares the queue, as Dapr's `Init` does.
    pub async fn create(init: ComponentInit) -> Result<Arc<BindingComponent>, ComponentError> {
        let meta = Arc::new(RabbitMqMetadata::parse(&init)?);
        let link = Arc::new(Link::new(meta));
        link.live()
            .await
            .map_err(|e| ComponentError::Init(e.to_string()))?;
        Ok(Arc::new(BindingComponent {
            input: Some(Arc::new(RabbitMqInput {
                link: link.clone(),
                consumer: Mutex::new(None),
            })),
            output: Some(Arc::new(RabbitMqOutput { link })),
        }))
    }
}

// === impl RabbitMqMetadata ===

impl RabbitMqMetadata {
    fn parse(init: &ComponentInit) -> Result<Self, ComponentError> {
        let md = &init.metadata;
        md.warn_unknown(
            "bindings.rabbitmq",
            &[
                "host",
                "queueName",
                "durable",
                "deleteWhenUnused",
                "exclusive",
                "prefetchCount",
                "maxPriority",
                "ttlInSeconds",
                "contentType",
                "reconnectWaitInSeconds",
                "externalSasl",
                "saslExternal",
                "caCert",
                "clientCert",
                "clientKey",
                mecha_core::bindings::DIRECTION,
                mecha_core::bindings::ROUTE,
            ],
        );
        for key in ["caCert", "clientCert", "clientKey"] {
            if md
                .get(key)
                .is_some_and(|v| !v.trim().is_empty() && v.trim() != "null")
            {
                return Err(ComponentError::InvalidField {
                    field: static_key(key),
                    reason:
                        "TLS client settings are not supported by Mecha's bindings.rabbitmq yet"
                            .into(),
                });
            }
        }
        for key in ["externalSasl", "saslExternal"] {
            if md.bool(static_key(key), false)? {
                return Err(ComponentError::InvalidField {
                    field: static_key(key),
                    reason: "SASL EXTERNAL is not supported by Mecha's bindings.rabbitmq yet"
                        .into(),
                });
            }
        }
        let prefetch = md.u64("prefetchCount", 0)?;
        let max_priority = match md.get("maxPriority").map(str::trim) {
            None | Some("") => None,
            // Dapr clamps larger values to 255.
            Some(_) => Some(md.u64("maxPriority", 0)?.min(255) as u8),
        };
        let ttl = match md.get("ttlInSeconds").map(str::trim) {
            None | Some("") => None,
            Some(_) => Some(Duration::from_secs(md.u64("ttlInSeconds", 0)?)),
        };
        Ok(Self {
            host: md.required("host")?.trim().to_owned(),
            queue_name: md.required("queueName")?.trim().to_owned(),
            durable: md.bool("durable", false)?,
            delete_when_unused: md.bool("deleteWhenUnused", false)?,
            exclusive: md.bool("exclusive", false)?,
            prefetch_count: u16::try_from(prefetch).map_err(|_| ComponentError::InvalidField {
                field: "prefetchCount",
                reason: format!("{prefetch} is larger than 65535"),
            })?,
            max_priority,
            ttl,
            content_type: md
                .get("contentType")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .unwrap_or(DEFAULT_CONTENT_TYPE)
                .to_owned(),
            reconnect_wait: Duration::from_secs(md.u64("reconnectWaitInSeconds", 5)?),
            connection_name: format!("mecha-{}-{}", init.app_id, init.name),
        })
    }

    /// The queue arguments: `x-message-ttl` and `x-max-priority`, typed as Dapr sends them.
    pub(crate) fn queue_arguments(&self) -> FieldTable {
        let mut args = FieldTable::default();
        if let Some(ttl) = self.ttl {
            let ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
            args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ms));
        }
        if let Some(p) = self.max_priority {
            args.insert("x-max-priority".into(), AMQPValue::ShortShortUInt(p));
        }
        args
    }
}

/// The `&'static str` spelling of a metadata key we know.
fn static_key(key: &str) -> &'static str {
    match key {
        "caCert" => "caCert",
        "clientCert" => "clientCert",
        "clientKey" => "clientKey",
        "externalSasl" => "externalSasl",
        _ => "saslExternal",
    }
}

// === impl RabbitMqOutput ===

#[async_trait]
impl OutputBinding for RabbitMqOutput {
    fn operations(&self) -> &[&'static str] {
        OPERATIONS
    }

    async fn invoke(&self, req: InvokeRequest) -> Result<InvokeResponse, BindingError> {
        if req.operation != "create" {
            return Err(BindingError::unsupported(&req.operation, OPERATIONS));
        }
        let props = self.properties(&req.metadata)?;
        self.link.publish(&req.data, props).await?;
        Ok(InvokeResponse::default())
    }

    async fn close(&self) {
        self.link.release(link::Side::Output).await;
    }
}

impl RabbitMqOutput {
    /// The message properties from the request metadata.
    fn properties(&self, md: &HashMap<String, String>) -> Result<BasicProperties, BindingError> {
        let meta = self.link.meta();
        let mut headers = FieldTable::default();
        for (k, v) in md {
            headers.insert(k.as_str().into(), AMQPValue::LongString(v.as_str().into()));
        }
        let content_type = request_value(md, CONTENT_TYPE).unwrap_or(meta.content_type.as_str());
        let mut props = BasicProperties::default()
            .with_content_type(content_type.into())
            .with_headers(headers);
        if meta.durable {
            props = props.with_delivery_mode(2);
        }
        if let Some(ttl) = request_value(md, TTL_IN_SECONDS) {
            let secs: u64 = ttl.parse().map_err(|_| {
                BindingError::BadRequest(format!(
                    "'{TTL_IN_SECONDS}' metadata '{ttl}' is not a non-negative integer"
                ))
            })?;
            props = props.with_expiration(secs.saturating_mul(1000).to_string().as_str().into());
        }
        if let Some(p) = request_value(md, PRIORITY) {
            let p: u64 = p.parse().map_err(|_| {
                BindingError::BadRequest(format!(
                    "'{PRIORITY}' metadata '{p}' is not a non-negative integer"
                ))
            })?;
            props = props.with_priority(p.min(255) as u8);
        }
        Ok(props)
    }
}

// === impl RabbitMqInput ===

#[async_trait]
impl InputBinding for RabbitMqInput {
    async fn read(&self, handler: EventHandler) -> Result<(), BindingError> {
        let mut slot = self.consumer.lock().await;
        if let Some(old) = slot.take() {
            old.close();
        }
        *slot = Some(consumer::Consumer::start(self.link.clone(), handler).await?);
        Ok(())
    }

    async fn close(&self) {
        if let Some(c) = self.consumer.lock().await.take() {
            c.close();
        }
        self.link.release(link::Side::Input).await;
    }
}

/// A non-empty request metadata value, keys matched case-insensitively.
fn request_value<'a>(md: &'a HashMap<String, String>, key: &str) -> Option<&'a str> {
    md.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}
