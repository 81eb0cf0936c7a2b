//! What every component shares: its capabilities and the error it reports at start-up.

use std::fmt;

/// A capability a component declares; the block services check it before calling the component.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Feature {
    /// Values carry an ETag for optimistic concurrency.
    Etag,
    /// Several operations can be applied atomically.
    Transactional,
    /// Values can expire (`ttlInSeconds`).
    Ttl,
    /// The state query API is supported.
    QueryApi,
    /// The store can hold actor state (`actorStateStore: "true"`).
    Actor,
}

/// An error raised while a component is created or initialised.
#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    /// A required metadata field is missing.
    #[error("missing required metadata field '{0}'")]
    MissingField(&'static str),
    /// A metadata field has a value that cannot be used.
    #[error("invalid value for metadata field '{field}': {reason}")]
    InvalidField {
        /// The Dapr metadata key.
        field: &'static str,
        /// Why the value was refused.
        reason: String,
    },
    /// Connecting to or preparing the backing server failed.
    #[error("initialisation failed: {0}")]
    Init(String),
}

// === impl Feature ===

impl Feature {
    /// The name Dapr uses for this capability in the metadata API.
    pub fn as_str(self) -> &'static str {
        match self {
            Feature::Etag => "ETAG",
            Feature::Transactional => "TRANSACTIONAL",
            Feature::Ttl => "TTL",
            Feature::QueryApi => "QUERY_API",
            Feature::Actor => "ACTOR",
        }
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a component constructor receives.
#[derive(Clone, Debug)]
pub struct ComponentInit {
    /// The component's name (`metadata.name`).
    pub name: String,
    /// The resolved `spec.metadata`.
    pub metadata: crate::Metadata,
    /// The id of the app this sidecar serves.
    pub app_id: String,
}
