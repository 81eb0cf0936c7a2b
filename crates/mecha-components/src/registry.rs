//! The registration row shared by every building block's table.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use mecha_core::component::{ComponentError, ComponentInit};

/// The future a component constructor returns.
pub type ComponentFuture<T> = Pin<Box<dyn Future<Output = Result<Arc<T>, ComponentError>> + Send>>;

/// One row of a registry: a Dapr `spec.type` and `spec.version` and its constructor.
pub struct Registration<T: ?Sized + 'static> {
    /// The Dapr type, e.g. `state.sqlite`.
    pub component_type: &'static str,
    /// The Dapr version, e.g. `v1`.
    pub version: &'static str,
    /// Builds and initialises the component.
    pub create: fn(ComponentInit) -> ComponentFuture<T>,
}

/// Finds the row for `component_type` at `version` in `table`.
pub fn find<T: ?Sized>(
    table: &'static [Registration<T>],
    component_type: &str,
    version: &str,
) -> Option<&'static Registration<T>> {
    table
        .iter()
        .find(|r| r.component_type == component_type && r.version == version)
}

/// Registers `$ty::create` (an `async fn(ComponentInit) -> Result<Arc<dyn Trait>, _>`).
#[macro_export]
macro_rules! register {
    ($component_type:literal, $version:literal, $ty:path) => {
        $crate::registry::Registration {
            component_type: $component_type,
            version: $version,
            create: |init| Box::pin(<$ty>::create(init)),
        }
    };
}
