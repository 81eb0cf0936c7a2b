//! `configuration.postgresql` v1: not written yet.

use std::sync::Arc;

use mecha_core::component::{ComponentError, ComponentInit};
use mecha_core::configuration::ConfigurationStore;

/// The `configuration.postgresql` component.
pub struct PostgresConfigurationStore;

// === impl PostgresConfigurationStore ===

impl PostgresConfigurationStore {
    /// Creates the component.
    pub async fn create(
        _init: ComponentInit,
    ) -> Result<Arc<dyn ConfigurationStore>, ComponentError> {
        Err(ComponentError::Init(
            "configuration.postgresql is not implemented yet".into(),
        ))
    }
}
