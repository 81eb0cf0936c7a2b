//! `lock.postgresql` v1: not written yet.

use std::sync::Arc;

use mecha_core::component::{ComponentError, ComponentInit};
use mecha_core::lock::LockStore;

/// The `lock.postgresql` component.
pub struct PostgresLockStore;

// === impl PostgresLockStore ===

impl PostgresLockStore {
    /// Creates the component.
    pub async fn create(_init: ComponentInit) -> Result<Arc<dyn LockStore>, ComponentError> {
        Err(ComponentError::Init(
            "lock.postgresql is not implemented yet".into(),
        ))
    }
}
