//! `configuration.redis` v1: not written yet.

use std::sync::Arc;

use mecha_core::component::{ComponentError, ComponentInit};
use mecha_core::configuration::ConfigurationStore;

/// The `configuration.redis` component.
pub struct RedisConfigurationStore;

// === impl RedisConfigurationStore ===

impl RedisConfigurationStore {
    /// Creates the component.
    pub async fn create(
        _init: ComponentInit,
    ) -> Result<Arc<dyn ConfigurationStore>, ComponentError> {
        Err(ComponentError::Init(
            "configuration.redis is not implemented yet".into(),
        ))
    }
}
