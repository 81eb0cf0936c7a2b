//! The configuration building block's component contract: [`ConfigurationStore`].

use std::collections::HashMap;
use std::pin::Pin;

use async_trait::async_trait;
use futures_core::Stream;

use crate::state::RequestMetadata;

/// One configuration value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigurationItem {
    /// The value.
    pub value: String,
    /// Its version, as the store reports it.
    pub version: String,
    /// Item metadata.
    pub metadata: HashMap<String, String>,
}

/// Changed items, keyed by configuration key. A deleted key is reported with an empty value
/// and version.
pub type ConfigurationUpdate = HashMap<String, ConfigurationItem>;

/// A stream of updates; the store stops watching when it is dropped.
pub type ConfigurationUpdates = Pin<Box<dyn Stream<Item = ConfigurationUpdate> + Send>>;

/// A store of configuration items that can be read and watched.
#[async_trait]
pub trait ConfigurationStore: Send + Sync + 'static {
    /// Reads `keys`; an empty list reads every key. Absent keys are left out.
    async fn get(
        &self,
        keys: &[String],
        metadata: &RequestMetadata,
    ) -> Result<HashMap<String, ConfigurationItem>, ConfigurationError>;

    /// Watches `keys` (every key when empty) and yields each change. Returns once the store
    /// is watching, so that a change made right after the call is seen.
    async fn subscribe(
        &self,
        keys: &[String],
        metadata: &RequestMetadata,
    ) -> Result<ConfigurationUpdates, ConfigurationError>;

    /// Releases connections and background tasks.
    async fn close(&self) {}
}

/// An error from a configuration store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigurationError {
    /// The request is invalid for this store.
    #[error("{0}")]
    BadRequest(String),
    /// The backing server failed or is unreachable.
    #[error("{0}")]
    Backend(String),
}
