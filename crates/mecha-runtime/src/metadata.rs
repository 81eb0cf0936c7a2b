//! The metadata building block: what the sidecar reports about itself, and the attributes an
//! app may set on it.

use std::collections::BTreeMap;
use std::sync::RwLock;

use crate::components::ComponentInfo;
use crate::config::RuntimeConfig;

/// The runtime version reported by the metadata API.
pub const RUNTIME_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The metadata service.
pub struct MetadataService {
    app_id: String,
    components: Vec<ComponentInfo>,
    app: Option<AppConnection>,
    extended: RwLock<BTreeMap<String, String>>,
}

/// How the sidecar reaches the app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppConnection {
    /// The app port.
    pub port: u16,
    /// The protocol name.
    pub protocol: &'static str,
    /// The app host.
    pub channel_address: String,
    /// `--app-max-concurrency` (0: unlimited).
    pub max_concurrency: usize,
    /// The app health check, when enabled: (path, interval, timeout, threshold).
    pub health: Option<crate::config::AppHealthCheck>,
}

/// A snapshot of the sidecar's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetadataSnapshot {
    /// The app id.
    pub id: String,
    /// The runtime version.
    pub runtime_version: &'static str,
    /// Loaded components.
    pub components: Vec<ComponentInfo>,
    /// Attributes set by the app, plus `daprRuntimeVersion`.
    pub extended: BTreeMap<String, String>,
    /// The app connection, when an app port is set.
    pub app: Option<AppConnection>,
}

// === impl MetadataService ===

impl MetadataService {
    /// Builds the service.
    pub fn new(config: &RuntimeConfig, components: Vec<ComponentInfo>) -> Self {
        let mut extended = BTreeMap::new();
        extended.insert("daprRuntimeVersion".to_owned(), RUNTIME_VERSION.to_owned());
        extended.insert("runtime".to_owned(), "mecha".to_owned());
        Self {
            app_id: config.app_id.clone(),
            components,
            app: config.app_port.map(|port| AppConnection {
                port,
                protocol: config.app_protocol.as_str(),
                channel_address: config.app_channel_address.clone(),
                max_concurrency: config.app_max_concurrency.unwrap_or(0),
                health: config.app_health_check.clone(),
            }),
            extended: RwLock::new(extended),
        }
    }

    /// The current metadata.
    pub fn snapshot(&self) -> MetadataSnapshot {
        MetadataSnapshot {
            id: self.app_id.clone(),
            runtime_version: RUNTIME_VERSION,
            components: self.components.clone(),
            extended: self
                .extended
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            app: self.app.clone(),
        }
    }

    /// Sets an extended attribute.
    pub fn set(&self, key: String, value: String) {
        self.extended
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, value);
    }
}
