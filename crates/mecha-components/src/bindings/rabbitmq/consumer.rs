//! The input side: one consumer channel on the shared connection, re-created after
//! `reconnectWaitInSeconds` whenever the broker ends it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use mecha_core::bindings::{BindingError, BindingEvent, EventHandler};
use tokio::task::JoinHandle;

use super::link::{Link, Live, Side};

/// The bound on opening the consumer channel and registering the consumer.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(5);

/// A running consumer.
pub(super) struct Consumer {
    task: JoinHandle<()>,
}

/// A registered consumer with the channel it lives on.
struct Subscription {
    _live: Arc<Live>,
    _channel: Channel,
    consumer: lapin::Consumer,
}

// === impl Consumer ===

impl Consumer {
    /// Registers the consumer; returns once the broker accepted it.
    pub(super) async fn start(
        link: Arc<Link>,
        handler: EventHandler,
    ) -> Result<Self, BindingError> {
        link.acquire(Side::Input);
        let sub = subscribe(&link).await?;
        Ok(Self {
            task: tokio::spawn(run(link, handler, sub)),
        })
    }

    /// Stops consuming; unacknowledged messages go back to the queue with the channel.
    pub(super) fn close(&self) {
        self.task.abort();
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Opens a channel on the live connection and starts consuming the queue.
async fn subscribe(link: &Link) -> Result<Subscription, BindingError> {
    let live = link.live().await?;
    let meta = link.meta();
    let tag = format!("mecha-{}", uuid::Uuid::new_v4().simple());
    let open = async {
        let channel = live.conn.create_channel().await?;
        channel
            .basic_qos(meta.prefetch_count, BasicQosOptions::default())
            .await?;
        let consumer = channel
            .basic_consume(
                meta.queue_name.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok::<_, lapin::Error>((channel, consumer))
    };
    match tokio::time::timeout(SUBSCRIBE_WAIT, open).await {
        Ok(Ok((channel, consumer))) => Ok(Subscription {
            _live: live,
            _channel: channel,
            consumer,
        }),
        Ok(Err(e)) => {
            link.invalidate(&live).await;
            Err(BindingError::Backend(format!(
                "cannot consume RabbitMQ queue '{}': {e}",
                meta.queue_name
            )))
        }
        Err(_) => {
            link.invalidate(&live).await;
            Err(BindingError::Backend(format!(
                "consuming RabbitMQ queue '{}' timed out",
                meta.queue_name
            )))
        }
    }
}

/// Delivers messages until the consumer ends, then subscribes again.
async fn run(link: Arc<Link>, handler: EventHandler, mut sub: Subscription) {
    loop {
        while let Some(next) = sub.consumer.next().await {
            match next {
                Ok(delivery) => deliver(&handler, delivery).await,
                Err(e) => {
                    tracing::warn!(error = %e, "RabbitMQ consumer failed");
                    break;
                }
            }
        }
        tracing::warn!(
            queue = %link.meta().queue_name,
            "RabbitMQ consumer stopped; reconnecting"
        );
        sub = loop {
            tokio::time::sleep(link.meta().reconnect_wait).await;
            match subscribe(&link).await {
                Ok(s) => break s,
                Err(e) => tracing::warn!(error = %e, "RabbitMQ reconnection failed"),
            }
        };
        tracing::info!(queue = %link.meta().queue_name, "RabbitMQ consumer reconnected");
    }
}

/// Hands one message to the app; acks it on success, nacks it with requeue otherwise.
async fn deliver(handler: &EventHandler, mut delivery: Delivery) {
    let metadata = delivery
        .properties
        .headers()
        .as_ref()
        .map(headers_metadata)
        .unwrap_or_default();
    let event = BindingEvent {
        data: Bytes::from(std::mem::take(&mut delivery.data)),
        metadata,
    };
    let outcome = match handler(event).await {
        Ok(()) => delivery.acker.ack(BasicAckOptions::default()).await,
        Err(e) => {
            tracing::debug!(error = %e, "App rejected a RabbitMQ message; requeueing it");
            let requeue = BasicNackOptions {
                requeue: true,
                multiple: false,
            };
            delivery.acker.nack(requeue).await
        }
    };
    if let Err(e) = outcome {
        tracing::warn!(error = %e, "RabbitMQ acknowledgement failed; the broker will redeliver");
    }
}

/// String headers as event metadata, query-escaped so they are valid HTTP headers (as Dapr).
fn headers_metadata(headers: &FieldTable) -> HashMap<String, String> {
    headers
        .inner()
        .iter()
        .filter_map(|(k, v)| {
            let value = match v {
                AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                AMQPValue::ShortString(s) => s.as_str().to_owned(),
                _ => return None,
            };
            Some((query_escape(k.as_str()), query_escape(&value)))
        })
        .collect()
}

/// Go's `url.QueryEscape`.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
