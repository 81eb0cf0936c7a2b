//! `pubsub.sqlite`: not written yet.

use std::sync::Arc;

use mecha_core::component::{ComponentError, ComponentInit};
use mecha_core::pubsub::PubSub;

/// The broker.
pub struct SqlitePubSub;

impl SqlitePubSub {
    /// Creates the broker.
    pub async fn create(_init: ComponentInit) -> Result<Arc<dyn PubSub>, ComponentError> {
        Err(ComponentError::Init("pubsub.sqlite is not implemented yet".into()))
    }
}
