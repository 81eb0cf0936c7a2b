//! `state.mysql` v1: not written yet.

use std::sync::Arc;

use mecha_core::component::{ComponentError, ComponentInit};
use mecha_core::state::StateStore;

/// The `state.mysql` component.
pub struct MySqlStateStore;

// === impl MySqlStateStore ===

impl MySqlStateStore {
    /// Creates the component.
    pub async fn create(_init: ComponentInit) -> Result<Arc<dyn StateStore>, ComponentError> {
        Err(ComponentError::Init(
            "state.mysql is not implemented yet".into(),
        ))
    }
}
