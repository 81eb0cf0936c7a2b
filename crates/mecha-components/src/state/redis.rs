//! `state.redis` v1: not written yet.

use std::sync::Arc;

use mecha_core::component::{ComponentError, ComponentInit};
use mecha_core::state::StateStore;

/// The `state.redis` component.
pub struct RedisStateStore;

// === impl RedisStateStore ===

impl RedisStateStore {
    /// Creates the component.
    pub async fn create(_init: ComponentInit) -> Result<Arc<dyn StateStore>, ComponentError> {
        Err(ComponentError::Init(
            "state.redis is not implemented yet".into(),
        ))
    }
}
