//! `pubsub.redis`: not written yet.

use std::sync::Arc;

use mecha_core::component::{ComponentError, ComponentInit};
use mecha_core::pubsub::PubSub;

/// The broker.
pub struct RedisPubSub;

impl RedisPubSub {
    /// Creates the broker.
    pub async fn create(_init: ComponentInit) -> Result<Arc<dyn PubSub>, ComponentError> {
        Err(ComponentError::Init("pubsub.redis is not implemented yet".into()))
    }
}
