//! Name resolution: how a sidecar finds the sidecars of another app id. A [`NameResolver`] is
//! chosen by the Configuration resource (`spec.nameResolution.component`, with its
//! `configuration` map); the embedded default is `sqlite`.
//!
//! # The contract
//!
//! * [`NameResolver::register`] announces this sidecar (app id, namespace, the address of its
//!   internal invocation endpoint) and keeps the announcement fresh until
//!   [`NameResolver::close`]; resolvers that only read (DNS, static) ignore it.
//! * [`NameResolver::resolve`] returns every live instance of an app id in a namespace, in a
//!   stable order (the caller load-balances); an app id with no instance gives an empty list,
//!   not an error. Errors are for a resolver that cannot answer (unreadable file, DNS failure).
//! * Resolving is on the invocation hot path: implementations cache where they can.

use async_trait::async_trait;
use serde_json::Value;

/// One sidecar, as registered and resolved.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Instance {
    /// The app id.
    pub app_id: String,
    /// The namespace (`default` when none is set).
    pub namespace: String,
    /// The host other sidecars connect to (an IP address or a DNS name).
    pub host: String,
    /// The port of the sidecar's internal invocation endpoint.
    pub port: u16,
}

/// The instances of an app id, as [`NameResolver::resolve`] returns them.
pub type Instances = std::sync::Arc<[Instance]>;

/// What a resolver is built from.
#[derive(Clone, Debug)]
pub struct ResolverInit {
    /// This sidecar's app id.
    pub app_id: String,
    /// This sidecar's namespace (`default` when none is set).
    pub namespace: String,
    /// `spec.nameResolution.configuration`, as written (`Value::Null` when absent).
    pub configuration: Value,
    /// Where the embedded default keeps its file when the configuration names none
    /// (`~/.mecha/nameresolution.db`), if a home folder is known.
    pub default_path: Option<std::path::PathBuf>,
}

/// Finds the sidecars of an app id.
#[async_trait]
pub trait NameResolver: Send + Sync + 'static {
    /// Announces `me` and keeps it fresh until [`NameResolver::close`].
    async fn register(&self, me: &Instance) -> Result<(), ResolveError>;

    /// Every live instance of `app_id` in `namespace` (shared: resolvers that cache hand out
    /// the cached list without copying it).
    async fn resolve(&self, app_id: &str, namespace: &str) -> Result<Instances, ResolveError>;

    /// Withdraws the announcement and stops background work.
    async fn close(&self) {}
}

/// A resolver that cannot answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The configuration is unusable.
    #[error("invalid name resolution configuration: {0}")]
    Config(String),
    /// The lookup failed.
    #[error("name resolution failed: {0}")]
    Lookup(String),
}

/// The namespace used when none is set.
pub const DEFAULT_NAMESPACE: &str = "default";
