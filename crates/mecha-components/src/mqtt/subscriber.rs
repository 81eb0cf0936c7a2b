//! One subscriber connection, as both components use it: a message keeps the connection it
//! came on, and its acknowledgement is sent only while that connection is alive, so a late
//! acknowledgement can never hit another message's packet id (packet ids restart with each
//! connection). A message not acknowledged on its connection is redelivered by the broker.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rumqttc::{AsyncClient, EventLoop, Publish, SubAck, SubscribeReasonCode};

use super::{ConnectionSettings, REQUEST_CAPACITY};

/// A live subscriber connection (rumqttc client with manual acknowledgements).
pub(crate) struct SubscriberConnection {
    client: AsyncClient,
    alive: AtomicBool,
}

// === impl SubscriberConnection ===

impl SubscriberConnection {
    /// A new connection as `client_id` with the `cleanSession` of `settings`; it connects
    /// when its event loop is polled.
    pub(crate) fn open(settings: &ConnectionSettings, client_id: &str) -> (Arc<Self>, EventLoop) {
        let options = settings
            .broker
            .mqtt_options(client_id, settings.clean_session);
        let (client, events) = AsyncClient::new(options, REQUEST_CAPACITY);
        let connection = Self {
            client,
            alive: AtomicBool::new(true),
        };
        (Arc::new(connection), events)
    }

    /// The connection's client.
    pub(crate) fn client(&self) -> &AsyncClient {
        &self.client
    }

    /// Whether the connection is still the live one.
    pub(crate) fn alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Marks the connection gone: its messages are no longer acknowledged.
    pub(crate) fn end(&self) {
        self.alive.store(false, Ordering::Release);
    }

    /// Acknowledges `publish` while its connection is alive; otherwise (or when the request
    /// cannot be queued) the broker redelivers it.
    pub(crate) async fn ack(&self, publish: &Publish) {
        if self.alive()
            && let Err(e) = self.client.ack(publish).await
        {
            tracing::debug!(error = %e, "MQTT acknowledgement not sent");
        }
    }
}

/// Whether the broker refused (part of) a subscription.
pub(crate) fn refused(ack: &SubAck) -> bool {
    ack.return_codes
        .iter()
        .any(|c| matches!(c, SubscribeReasonCode::Failure))
}
