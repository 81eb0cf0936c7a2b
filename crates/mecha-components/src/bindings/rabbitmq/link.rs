//! The connection both sides share: opened (and the queue declared) on demand, replaced when
//! the broker closed it, and closed once neither side uses it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use mecha_core::bindings::BindingError;
use tokio::sync::Mutex;

use super::RabbitMqMetadata;

/// The bound on opening a connection and declaring the queue.
const CONNECT_WAIT: Duration = Duration::from_secs(5);
/// The bound on a publish and its confirmation.
const PUBLISH_WAIT: Duration = Duration::from_secs(10);

/// Which side of the binding uses the link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Side {
    /// The consumer.
    Input,
    /// The publisher.
    Output,
}

/// The shared connection.
pub(super) struct Link {
    meta: Arc<RabbitMqMetadata>,
    slot: Mutex<Option<Arc<Live>>>,
    input_active: AtomicBool,
    output_active: AtomicBool,
}

/// An open connection with its publishing channel (in confirm mode).
pub(super) struct Live {
    /// The connection, on which consumers open their own channel.
    pub(super) conn: Connection,
    channel: Channel,
}

// === impl Link ===

impl Link {
    /// A link that connects on first use.
    pub(super) fn new(meta: Arc<RabbitMqMetadata>) -> Self {
        Self {
            meta,
            slot: Mutex::new(None),
            input_active: AtomicBool::new(false),
            output_active: AtomicBool::new(false),
        }
    }

    /// The component metadata.
    pub(super) fn meta(&self) -> &RabbitMqMetadata {
        &self.meta
    }

    /// The open connection, reconnecting if the previous one is gone.
    pub(super) async fn live(&self) -> Result<Arc<Live>, BindingError> {
        let mut slot = self.slot.lock().await;
        if let Some(live) = slot.as_ref()
            && live.conn.status().connected()
            && live.channel.status().connected()
        {
            return Ok(live.clone());
        }
        if let Some(old) = slot.take() {
            old.close().await;
        }
        let live = match tokio::time::timeout(CONNECT_WAIT, open(&self.meta)).await {
            Ok(Ok(live)) => Arc::new(live),
            Ok(Err(e)) => return Err(BindingError::Backend(e)),
            Err(_) => {
                return Err(BindingError::Backend(format!(
                    "connecting to RabbitMQ timed out after {} s",
                    CONNECT_WAIT.as_secs()
                )));
            }
        };
        tracing::debug!(queue = %self.meta.queue_name, "Connected to RabbitMQ");
        *slot = Some(live.clone());
        Ok(live)
    }

    /// Marks `side` as using the link.
    pub(super) fn acquire(&self, side: Side) {
        self.flag(side).store(true, Ordering::Release);
    }

    /// Publishes one message to the queue and waits for the broker's confirmation.
    pub(super) async fn publish(
        &self,
        data: &[u8],
        props: BasicProperties,
    ) -> Result<(), BindingError> {
        self.acquire(Side::Output);
        let live = self.live().await?;
        let publish = async {
            live.channel
                .basic_publish(
                    "".into(),
                    self.meta.queue_name.as_str().into(),
                    BasicPublishOptions::default(),
                    data,
                    props,
                )
                .await?
                .await
        };
        let failure = match tokio::time::timeout(PUBLISH_WAIT, publish).await {
            Ok(Ok(Confirmation::Ack(_) | Confirmation::NotRequested)) => return Ok(()),
            Ok(Ok(Confirmation::Nack(_))) => {
                return Err(BindingError::Backend(
                    "RabbitMQ refused the message (nack)".into(),
                ));
            }
            Ok(Err(e)) => format!("publishing to RabbitMQ failed: {e}"),
            Err(_) => format!(
                "RabbitMQ did not confirm the message within {} s",
                PUBLISH_WAIT.as_secs()
            ),
        };
        self.invalidate(&live).await;
        Err(BindingError::Backend(failure))
    }

    /// Drops `live` if it is still the current connection, so the next use reconnects.
    pub(super) async fn invalidate(&self, live: &Arc<Live>) {
        let mut slot = self.slot.lock().await;
        if slot.as_ref().is_some_and(|l| Arc::ptr_eq(l, live))
            && let Some(old) = slot.take()
        {
            old.close().await;
        }
    }

    /// `side` no longer uses the link; the connection closes when neither side does.
    pub(super) async fn release(&self, side: Side) {
        self.flag(side).store(false, Ordering::Release);
        if self.input_active.load(Ordering::Acquire) || self.output_active.load(Ordering::Acquire) {
            return;
        }
        if let Some(old) = self.slot.lock().await.take() {
            old.close().await;
        }
    }

    fn flag(&self, side: Side) -> &AtomicBool {
        match side {
            Side::Input => &self.input_active,
            Side::Output => &self.output_active,
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

/// Opens a connection and a confirm-mode channel, and declares the queue.
async fn open(meta: &RabbitMqMetadata) -> Result<Live, String> {
    let props =
        ConnectionProperties::default().with_connection_name(meta.connection_name.as_str().into());
    let conn = Connection::connect(&meta.host, props)
        .await
        .map_err(|e| format!("cannot connect to RabbitMQ: {e}"))?;
    let channel = conn
        .create_channel()
        .await
        .map_err(|e| format!("cannot open a RabbitMQ channel: {e}"))?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| format!("cannot enable publisher confirms: {e}"))?;
    declare_queue(&channel, meta).await?;
    Ok(Live { conn, channel })
}

/// Declares the queue with the component's flags and arguments.
pub(super) async fn declare_queue(
    channel: &Channel,
    meta: &RabbitMqMetadata,
) -> Result<(), String> {
    let options = QueueDeclareOptions {
        durable: meta.durable,
        exclusive: meta.exclusive,
        auto_delete: meta.delete_when_unused,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(
            meta.queue_name.as_str().into(),
            options,
            meta.queue_arguments(),
        )
        .await
        .map(|_| ())
        .map_err(|e| format!("cannot declare queue '{}': {e}", meta.queue_name))
}
