//! `secretstores.local.file` v1: not written yet.

use std::sync::Arc;

use mecha_core::component::{ComponentError, ComponentInit};
use mecha_core::secretstores::SecretStore;

/// The `secretstores.local.file` component.
pub struct FileSecretStore;

// === impl FileSecretStore ===

impl FileSecretStore {
    /// Creates the component.
    pub async fn create(_init: ComponentInit) -> Result<Arc<dyn SecretStore>, ComponentError> {
        Err(ComponentError::Init(
            "secretstores.local.file is not implemented yet".into(),
        ))
    }
}
