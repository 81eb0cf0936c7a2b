//! `state.postgresql` v1: not written yet.

use std::sync::Arc;

use mecha_core::component::{ComponentError, ComponentInit};
use mecha_core::state::StateStore;

/// The `state.postgresql` component.
pub struct PostgresStateStore;

// === impl PostgresStateStore ===

impl PostgresStateStore {
    /// Creates the component.
    pub async fn create(_init: ComponentInit) -> Result<Arc<dyn StateStore>, ComponentError> {
        Err(ComponentError::Init(
            "state.postgresql is not implemented yet".into(),
        ))
    }
}
