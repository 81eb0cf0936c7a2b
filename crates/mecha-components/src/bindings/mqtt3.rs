//! `bindings.mqtt3` v1: an MQTT 3.1.1 broker as an input and output binding.
//!
//! - **Output:** operation `create` publishes the request data to the `topic` request metadata
//!   (or the component's `topic`) with the component's `qos` and `retain` (request metadata
//!   `retain` overrides). The call returns once the broker acknowledged the message (PUBACK for
//!   QoS 1), bounded by a timeout.
//! - **Input:** subscribes to `topic`; each message goes to the app with event metadata `topic`,
//!   and is acknowledged (PUBACK, manual acks) only after the app accepted it. A failed delivery
//!   is retried `backOffMaxRetries` times (every 5 s, as Dapr does); then the consumer
//!   connection is reset without acknowledging, so the broker redelivers the message from the
//!   persistent session (`cleanSession: false`).
//! - Both sides (client ids `<consumerID>-producer` and `<consumerID>-consumer`, as in Dapr)
//!   reconnect by themselves after a broker restart; the consumer subscribes again on every
//!   connection.
//!
//! - Metadata (Dapr's names): `url` (required; `tcp://[user:pass@]host:port`, or `ssl://` /
//!   `mqtts://` for TLS with `caCert`, and `clientCert` + `clientKey` for a client
//!   certificate), `topic`, `consumerID` (default `<app id>-<component name>`), `qos` (0, 1 or
//!   2; default 1), `retain` (default false), `cleanSession` (default false),
//!   `backOffMaxRetries` (default 0; -1 retries forever). The connection settings are parsed by
//!   `crate::mqtt::ConnectionSettings`, shared with `pubsub.mqtt3`.
//!
//! Tested against Mosquitto 2.0.

mod consumer;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use mecha_core::bindings::{
    BindingComponent, BindingError, EventHandler, InputBinding, InvokeRequest, InvokeResponse,
    OutputBinding,
};
use mecha_core::component::{ComponentError, ComponentInit};
use tokio::sync::Mutex;

use crate::mqtt::{ConnectionSettings, PublishError, Publisher};

/// The operations of the output side.
const OPERATIONS: &[&str] = &["create"];
/// Request and event metadata key of the topic.
const TOPIC: &str = "topic";
/// Request metadata key overriding `retain`.
const RETAIN: &str = "retain";

/// The `bindings.mqtt3` component.
pub struct MqttBinding;

/// The component metadata, by Dapr key.
#[derive(Clone)]
pub(crate) struct MqttMetadata {
    /// `url` (with `caCert`, `clientCert`, `clientKey`), `qos`, `retain`, `cleanSession`.
    pub(crate) conn: ConnectionSettings,
    /// `topic`: the subscribed topic, and the default topic of `create`.
    pub(crate) topic: Option<String>,
    /// `consumerID`: the base of the client ids (default `<app id>-<component name>`).
    pub(crate) consumer_id: String,
    /// `backOffMaxRetries`: in-process retries of a failed delivery; -1 retries forever.
    pub(crate) back_off_max_retries: i64,
}

/// The output side.
struct MqttOutput {
    meta: Arc<MqttMetadata>,
    producer: Mutex<Option<Arc<Publisher>>>,
}

/// The input side.
struct MqttInput {
    meta: Arc<MqttMetadata>,
    consumer: Mutex<Option<consumer::Consumer>>,
}

// === impl MqttBinding ===

impl MqttBinding {
    /// Creates the component; connections are opened on first use, as Dapr does.
    pub async fn create(init: ComponentInit) -> Result<Arc<BindingComponent>, ComponentError> {
        let meta = Arc::new(MqttMetadata::parse(&init)?);
        Ok(Arc::new(BindingComponent {
            input: Some(Arc::new(MqttInput {
                meta: meta.clone(),
                consumer: Mutex::new(None),
            })),
            output: Some(Arc::new(MqttOutput {
                meta,
                producer: Mutex::new(None),
            })),
        }))
    }
}

// === impl MqttMetadata ===

impl MqttMetadata {
    fn parse(init: &ComponentInit) -> Result<Self, ComponentError> {
        let md = &init.metadata;
        let known = [
            crate::mqtt::CONNECTION_KEYS,
            &[
                "topic",
                "consumerID",
                "backOffMaxRetries",
                mecha_core::bindings::DIRECTION,
                mecha_core::bindings::ROUTE,
            ],
        ]
        .concat();
        md.warn_unknown("bindings.mqtt3", &known);
        let conn = ConnectionSettings::parse(md)?;
        let back_off_max_retries = match md.get("backOffMaxRetries").map(str::trim) {
            None | Some("") => 0,
            Some(v) => v.parse::<i64>().ok().filter(|n| *n >= -1).ok_or_else(|| {
                ComponentError::InvalidField {
                    field: "backOffMaxRetries",
                    reason: format!("'{v}' is not an integer >= -1"),
                }
            })?,
        };
        let consumer_id = match md.get("consumerID").map(str::trim) {
            Some(id) if !id.is_empty() => id.to_owned(),
            _ => format!("{}-{}", init.app_id, init.name),
        };
        Ok(Self {
            conn,
            topic: md
                .get("topic")
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
            consumer_id,
            back_off_max_retries,
        })
    }
}

// === impl MqttOutput ===

impl MqttOutput {
    /// The producer connection (`<consumerID>-producer`), started on first use.
    async fn producer(&self) -> Arc<Publisher> {
        let mut slot = self.producer.lock().await;
        if let Some(p) = slot.as_ref() {
            return p.clone();
        }
        let conn = &self.meta.conn;
        let p = Arc::new(Publisher::start(
            &conn.broker,
            format!("{}-producer", self.meta.consumer_id),
            conn.clean_session,
            conn.qos,
        ));
        *slot = Some(p.clone());
        p
    }
}

#[async_trait]
impl OutputBinding for MqttOutput {
    fn operations(&self) -> &[&'static str] {
        OPERATIONS
    }

    async fn invoke(&self, req: InvokeRequest) -> Result<InvokeResponse, BindingError> {
        if req.operation != "create" {
            return Err(BindingError::unsupported(&req.operation, OPERATIONS));
        }
        let topic = match request_value(&req.metadata, TOPIC) {
            Some(t) => t.to_owned(),
            None => self.meta.topic.clone().ok_or_else(|| {
                BindingError::BadRequest(
                    "no topic: set the 'topic' request metadata or the component's 'topic'".into(),
                )
            })?,
        };
        let retain = match request_value(&req.metadata, RETAIN) {
            None => self.meta.conn.retain,
            Some(v) => mecha_core::metadata::parse_bool(v).ok_or_else(|| {
                BindingError::BadRequest(format!("'retain' metadata '{v}' is not a boolean"))
            })?,
        };
        self.producer()
            .await
            .publish(topic, retain, req.data)
            .await?;
        Ok(InvokeResponse::default())
    }

    async fn close(&self) {
        if let Some(p) = self.producer.lock().await.take() {
            p.close();
        }
    }
}

// === impl MqttInput ===

#[async_trait]
impl InputBinding for MqttInput {
    async fn read(&self, handler: EventHandler) -> Result<(), BindingError> {
        let topic = self.meta.topic.clone().ok_or_else(|| {
            BindingError::BadRequest("bindings.mqtt3 input needs the 'topic' metadata".into())
        })?;
        let mut slot = self.consumer.lock().await;
        if let Some(old) = slot.take() {
            old.close();
        }
        *slot = Some(consumer::Consumer::start(self.meta.clone(), topic, handler).await?);
        Ok(())
    }

    async fn close(&self) {
        if let Some(c) = self.consumer.lock().await.take() {
            c.close();
        }
    }
}

impl From<PublishError> for BindingError {
    fn from(e: PublishError) -> Self {
        BindingError::Backend(e.to_string())
    }
}

/// A non-empty request metadata value, keys matched case-insensitively.
fn request_value<'a>(md: &'a HashMap<String, String>, key: &str) -> Option<&'a str> {
    md.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}
