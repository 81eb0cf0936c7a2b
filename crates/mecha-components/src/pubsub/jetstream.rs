//! `pubsub.jetstream`: not written yet.

use std::sync::Arc;

use mecha_core::component::{ComponentError, ComponentInit};
use mecha_core::pubsub::PubSub;

/// The broker.
pub struct JetStreamPubSub;

impl JetStreamPubSub {
    /// Creates the broker.
    pub async fn create(_init: ComponentInit) -> Result<Arc<dyn PubSub>, ComponentError> {
        Err(ComponentError::Init("pubsub.jetstream is not implemented yet".into()))
    }
}
