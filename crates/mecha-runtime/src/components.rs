//! Loading components: read resource files, keep what is in scope, resolve metadata, and build
//! each component through its block's registry.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mecha_components::state as state_registry;
use mecha_core::Metadata;
use mecha_core::component::{ComponentError, ComponentInit, Feature};
use mecha_core::duration::parse_go_duration;
use mecha_core::metadata::parse_bool;
use mecha_core::resource::{ComponentResource, MetadataValue, Resource, ResourceError};
use mecha_core::state::StateStore;

use crate::config::RuntimeConfig;

const DEFAULT_INIT_TIMEOUT: Duration = Duration::from_secs(5);

/// The components a sidecar loaded, by block.
#[derive(Default)]
pub struct Components {
    /// State stores, in load order.
    pub state: Vec<LoadedStateStore>,
}

/// A loaded state store with what the state service needs to know about it.
pub struct LoadedStateStore {
    /// The component's name and type.
    pub info: ComponentInfo,
    /// The store.
    pub store: Arc<dyn StateStore>,
    /// The resolved metadata (`keyPrefix`, `actorStateStore`…).
    pub metadata: Metadata,
}

/// What the metadata API reports about a component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComponentInfo {
    /// `metadata.name`.
    pub name: String,
    /// `spec.type`.
    pub component_type: String,
    /// `spec.version`.
    pub version: String,
    /// Capability names (`ETAG`, `TRANSACTIONAL`…).
    pub capabilities: Vec<&'static str>,
}

/// Why the components could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A resources path does not exist or cannot be listed.
    #[error("cannot read resources path {}: {error}", path.display())]
    Path {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// A file could not be read or parsed.
    #[error(transparent)]
    Resource(#[from] ResourceError),
    /// Two components share a name.
    #[error("duplicate component name '{name}' in {} and {}", first.display(), second.display())]
    Duplicate {
        /// The name.
        name: String,
        /// Where it was first defined.
        first: PathBuf,
        /// Where it was defined again.
        second: PathBuf,
    },
    /// A component failed to be created.
    #[error("component '{name}' ({component_type}) in {}: {reason}", file.display())]
    Component {
        /// The component's name.
        name: String,
        /// `type/version`.
        component_type: String,
        /// The file it came from.
        file: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

// === impl Components ===

impl Components {
    /// Reads every resources path of `config` and builds the components in scope.
    pub async fn load(config: &RuntimeConfig) -> Result<Self, LoadError> {
        let mut resources = Vec::new();
        for path in &config.resources_paths {
            resources.extend(read_resources_path(path)?);
        }
        let mut seen: HashMap<String, PathBuf> = HashMap::new();
        let mut components = Components::default();
        for resource in resources {
            let spec = match resource {
                Resource::Component(c) => c,
                Resource::Other { kind, name, source } => {
                    tracing::info!(
                        kind = %kind,
                        name = name.as_deref().unwrap_or(""),
                        file = %source.display(),
                        "Skipping resource of a kind this sidecar does not load"
                    );
                    continue;
                }
            };
            if !spec.in_scope(&config.app_id) {
                tracing::info!(component = %spec.name, "Component is scoped to other apps; not loaded");
                continue;
            }
            if let Some(first) = seen.get(&spec.name) {
                return Err(LoadError::Duplicate {
                    name: spec.name.clone(),
                    first: first.clone(),
                    second: spec.source.clone(),
                });
            }
            seen.insert(spec.name.clone(), spec.source.clone());
            match components.build(&spec, config).await {
                Ok(()) => {}
                Err(reason) if spec.ignore_errors => tracing::warn!(
                    component = %spec.name,
                    r#type = %spec.type_and_version(),
                    error = %reason,
                    "Component failed to load; skipped because ignoreErrors is set"
                ),
                Err(reason) => {
                    return Err(LoadError::Component {
                        name: spec.name.clone(),
                        component_type: spec.type_and_version(),
                        file: spec.source.clone(),
                        reason,
                    });
                }
            }
        }
        Ok(components)
    }

    async fn build(
        &mut self,
        spec: &ComponentResource,
        config: &RuntimeConfig,
    ) -> Result<(), String> {
        let metadata = resolve_metadata(spec)?;
        let timeout = match &spec.init_timeout {
            Some(t) => parse_go_duration(t).map_err(|e| format!("spec.initTimeout: {e}"))?,
            None => DEFAULT_INIT_TIMEOUT,
        };
        let init = ComponentInit {
            name: spec.name.clone(),
            metadata: metadata.clone(),
            app_id: config.app_id.clone(),
        };
        let registration = state_registry::find(&spec.component_type, &spec.version)
            .ok_or_else(|| unknown_type(spec))?;
        let store = tokio::time::timeout(timeout, (registration.create)(init))
            .await
            .map_err(|_| format!("initialisation did not finish within {timeout:?}"))?
            .map_err(|e: ComponentError| e.to_string())?;
        let mut capabilities: Vec<&'static str> =
            store.features().iter().map(|f| f.as_str()).collect();
        let actor = metadata
            .get("actorStateStore")
            .and_then(parse_bool)
            .unwrap_or(false);
        if actor && store.features().contains(&Feature::Transactional) {
            capabilities.push(Feature::Actor.as_str());
        }
        tracing::info!(
            component = %spec.name,
            r#type = %spec.type_and_version(),
            capabilities = ?capabilities,
            "Component loaded"
        );
        self.state.push(LoadedStateStore {
            info: ComponentInfo {
                name: spec.name.clone(),
                component_type: spec.component_type.clone(),
                version: spec.version.clone(),
                capabilities,
            },
            store,
            metadata,
        });
        Ok(())
    }

    /// Every loaded component, for the metadata API.
    pub fn infos(&self) -> Vec<ComponentInfo> {
        self.state.iter().map(|s| s.info.clone()).collect()
    }
}

fn unknown_type(spec: &ComponentResource) -> String {
    let supported: Vec<String> = state_registry::REGISTRY
        .iter()
        .map(|r| format!("{}/{}", r.component_type, r.version))
        .collect();
    format!(
        "unknown component type {}; this build supports: {}",
        spec.type_and_version(),
        supported.join(", ")
    )
}

fn resolve_metadata(spec: &ComponentResource) -> Result<Metadata, String> {
    spec.metadata
        .iter()
        .map(|item| {
            let value = match &item.value {
                MetadataValue::Plain(v) => v.clone(),
                MetadataValue::EnvRef(var) => std::env::var(var).map_err(|_| {
                    format!(
                        "metadata '{}': environment variable '{var}' is not set",
                        item.name
                    )
                })?,
                MetadataValue::SecretKeyRef { name, key } => {
                    return Err(format!(
                        "metadata '{}' refers to secret '{name}' key '{key}', but secret \
                         references cannot be resolved: no secret store is available",
                        item.name
                    ));
                }
            };
            Ok((item.name.clone(), value))
        })
        .collect()
}

/// Reads the YAML files of one resources folder, in name order.
fn read_resources_path(path: &Path) -> Result<Vec<Resource>, LoadError> {
    let path_error = |error| LoadError::Path {
        path: path.to_owned(),
        error,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(path_error)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        out.extend(Resource::read_file(&file)?);
    }
    Ok(out)
}
