//! State stores and their registration table.

pub mod in_memory;
#[cfg(feature = "state-sqlite")]
pub mod sqlite;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use mecha_core::component::{ComponentError, ComponentInit};
use mecha_core::state::StateStore;

/// The future a state store constructor returns.
pub type StateStoreFuture =
    Pin<Box<dyn Future<Output = Result<Arc<dyn StateStore>, ComponentError>> + Send>>;

/// One row of the registry: a Dapr `spec.type` and `spec.version` and its constructor.
#[derive(Clone, Copy)]
pub struct StateRegistration {
    /// The Dapr type, e.g. `state.sqlite`.
    pub component_type: &'static str,
    /// The Dapr version, e.g. `v1`.
    pub version: &'static str,
    /// Builds and initialises the store.
    pub create: fn(ComponentInit) -> StateStoreFuture,
}

/// Every state store this build contains.
pub static REGISTRY: &[StateRegistration] = &[
    StateRegistration {
        component_type: "state.in-memory",
        version: "v1",
        create: |init| Box::pin(async move { in_memory::InMemoryStateStore::create(init) }),
    },
    #[cfg(feature = "state-sqlite")]
    StateRegistration {
        component_type: "state.sqlite",
        version: "v1",
        create: |init| Box::pin(sqlite::SqliteStateStore::create(init)),
    },
];

/// Finds the registration for `component_type` at `version`.
pub fn find(component_type: &str, version: &str) -> Option<&'static StateRegistration> {
    REGISTRY
        .iter()
        .find(|r| r.component_type == component_type && r.version == version)
}
