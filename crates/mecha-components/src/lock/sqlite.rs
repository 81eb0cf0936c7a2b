//! `lock.sqlite` v1: not written yet.

use std::sync::Arc;

use mecha_core::component::{ComponentError, ComponentInit};
use mecha_core::lock::LockStore;

/// The `lock.sqlite` component.
pub struct SqliteLockStore;

// === impl SqliteLockStore ===

impl SqliteLockStore {
    /// Creates the component.
    pub async fn create(_init: ComponentInit) -> Result<Arc<dyn LockStore>, ComponentError> {
        Err(ComponentError::Init(
            "lock.sqlite is not implemented yet".into(),
        ))
    }
}
