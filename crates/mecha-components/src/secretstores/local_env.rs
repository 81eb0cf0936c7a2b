//! `secretstores.local.env` v1: not written yet.

use std::sync::Arc;

use mecha_core::component::{ComponentError, ComponentInit};
use mecha_core::secretstores::SecretStore;

/// The `secretstores.local.env` component.
pub struct EnvSecretStore;

// === impl EnvSecretStore ===

impl EnvSecretStore {
    /// Creates the component.
    pub async fn create(_init: ComponentInit) -> Result<Arc<dyn SecretStore>, ComponentError> {
        Err(ComponentError::Init(
            "secretstores.local.env is not implemented yet".into(),
        ))
    }
}
