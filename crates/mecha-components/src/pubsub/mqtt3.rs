//! `pubsub.mqtt3`: not written yet.

use std::sync::Arc;

use mecha_core::component::{ComponentError, ComponentInit};
use mecha_core::pubsub::PubSub;

/// The broker.
pub struct MqttPubSub;

impl MqttPubSub {
    /// Creates the broker.
    pub async fn create(_init: ComponentInit) -> Result<Arc<dyn PubSub>, ComponentError> {
        Err(ComponentError::Init("pubsub.mqtt3 is not implemented yet".into()))
    }
}
