//! The secrets building block's component contract: [`SecretStore`].

use std::collections::HashMap;

use async_trait::async_trait;

use crate::state::RequestMetadata;

/// The values of one secret: a secret may hold several keys (`multiValued` stores).
pub type SecretValues = HashMap<String, String>;

/// A read-only store of secrets.
#[async_trait]
pub trait SecretStore: Send + Sync + 'static {
    /// Reads one secret; [`SecretError::NotFound`] when it does not exist.
    async fn get_secret(
        &self,
        name: &str,
        metadata: &RequestMetadata,
    ) -> Result<SecretValues, SecretError>;

    /// Reads every secret, keyed by secret name.
    async fn bulk_get_secret(
        &self,
        metadata: &RequestMetadata,
    ) -> Result<HashMap<String, SecretValues>, SecretError>;

    /// Releases connections and background tasks.
    async fn close(&self) {}
}

/// An error from a secret store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The secret does not exist.
    #[error("secret '{0}' not found")]
    NotFound(String),
    /// The backing store failed.
    #[error("{0}")]
    Backend(String),
}
