//! `pubsub.rabbitmq`: not written yet.

use std::sync::Arc;

use mecha_core::component::{ComponentError, ComponentInit};
use mecha_core::pubsub::PubSub;

/// The broker.
pub struct RabbitMqPubSub;

impl RabbitMqPubSub {
    /// Creates the broker.
    pub async fn create(_init: ComponentInit) -> Result<Arc<dyn PubSub>, ComponentError> {
        Err(ComponentError::Init("pubsub.rabbitmq is not implemented yet".into()))
    }
}
