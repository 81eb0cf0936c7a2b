//! `lock.redis` v1: not written yet.

use std::sync::Arc;

use mecha_core::component::{ComponentError, ComponentInit};
use mecha_core::lock::LockStore;

/// The `lock.redis` component.
pub struct RedisLockStore;

// === impl RedisLockStore ===

impl RedisLockStore {
    /// Creates the component.
    pub async fn create(_init: ComponentInit) -> Result<Arc<dyn LockStore>, ComponentError> {
        Err(ComponentError::Init(
            "lock.redis is not implemented yet".into(),
        ))
    }
}
