//! Not written yet.

use std::sync::Arc;

use mecha_core::nameresolution::{NameResolver, ResolveError, ResolverInit};

/// The resolver.
pub struct SqliteResolver;

impl SqliteResolver {
    /// Creates the resolver.
    pub async fn create(_init: ResolverInit) -> Result<Arc<dyn NameResolver>, ResolveError> {
        Err(ResolveError::Config("not implemented yet".into()))
    }
}
