//! Loading components: read resource files, keep what is in scope, resolve metadata (including
//! `secretKeyRef` through a secret store), and build each component through its block's
//! registry table.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mecha_components::registry::{Registration, find};
use mecha_core::Metadata;
use mecha_core::bindings::BindingComponent;
use mecha_core::component::{ComponentInit, Feature};
use mecha_core::configuration::ConfigurationStore;
use mecha_core::duration::parse_go_duration;
use mecha_core::lock::LockStore;
use mecha_core::metadata::parse_bool;
use mecha_core::pubsub::PubSub;
use mecha_core::resource::{
    ComponentResource, MetadataValue, RawResource, Resource, ResourceError, SubscriptionResource,
};
use mecha_core::secretstores::SecretStore;
use mecha_core::state::StateStore;

use crate::config::RuntimeConfig;

const DEFAULT_INIT_TIMEOUT: Duration = Duration::from_secs(5);
const SECRET_STORES: &str = "secretstores";

/// The components a sidecar loaded, by block.
#[derive(Default)]
pub struct Components {
    /// State stores, in load order.
    pub state: Vec<Loaded<dyn StateStore>>,
    /// Secret stores.
    pub secrets: Vec<Loaded<dyn SecretStore>>,
    /// Configuration stores.
    pub configuration: Vec<Loaded<dyn ConfigurationStore>>,
    /// Lock stores.
    pub locks: Vec<Loaded<dyn LockStore>>,
    /// Input and output bindings.
    pub bindings: Vec<Loaded<BindingComponent>>,
    /// Pub/sub brokers.
    pub pubsub: Vec<Loaded<dyn PubSub>>,
    /// `kind: Subscription` resources in scope for this app.
    pub subscriptions: Vec<SubscriptionResource>,
    /// `middleware.http.*` components, for the Configuration's pipelines.
    pub middleware: Vec<crate::middleware::MiddlewareSpec>,
    /// `kind: Resiliency` resources in scope for this app.
    pub resiliency: Vec<RawResource>,
    /// `kind: HTTPEndpoint` resources in scope for this app.
    pub http_endpoints: Vec<RawResource>,
    infos: Vec<ComponentInfo>,
}

/// A loaded component with what its service needs to know about it.
pub struct Loaded<T: ?Sized> {
    /// The component's name and type.
    pub info: ComponentInfo,
    /// The component.
    pub component: Arc<T>,
    /// The resolved metadata (`keyPrefix`, `actorStateStore`…).
    pub metadata: Metadata,
}

/// A loaded state store.
pub type LoadedStateStore = Loaded<dyn StateStore>;

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
    /// Reads every resources path of `config` and builds the components in scope. Secret
    /// stores are built first, so that other components can take values from them.
    pub async fn load(config: &RuntimeConfig) -> Result<Self, LoadError> {
        let InScope {
            components: specs,
            subscriptions,
            resiliency,
            http_endpoints,
        } = in_scope_resources(config)?;
        let (secret_specs, other_specs): (Vec<_>, Vec<_>) = specs
            .into_iter()
            .partition(|s| block_of(&s.component_type) == SECRET_STORES);
        let mut components = Components {
            subscriptions,
            resiliency,
            http_endpoints,
            ..Components::default()
        };
        for spec in secret_specs.iter().chain(&other_specs) {
            match components.build(spec, config).await {
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
        let metadata = self.resolve_metadata(spec).await?;
        let timeout = match &spec.init_timeout {
            Some(t) => parse_go_duration(t).map_err(|e| format!("spec.initTimeout: {e}"))?,
            None => DEFAULT_INIT_TIMEOUT,
        };
        let init = ComponentInit {
            name: spec.name.clone(),
            metadata: metadata.clone(),
            app_id: config.app_id.clone(),
        };
        let (t, v) = (spec.component_type.as_str(), spec.version.as_str());
        let mut info = ComponentInfo {
            name: spec.name.clone(),
            component_type: spec.component_type.clone(),
            version: spec.version.clone(),
            capabilities: Vec::new(),
        };
        match block_of(t) {
            "state" => {
                let store = create(
                    find(mecha_components::state::REGISTRY, t, v),
                    spec,
                    init,
                    timeout,
                )
                .await?;
                info.capabilities = store.features().iter().map(|f| f.as_str()).collect();
                let actor = metadata
                    .get("actorStateStore")
                    .and_then(parse_bool)
                    .unwrap_or(false);
                if actor && store.features().contains(&Feature::Transactional) {
                    info.capabilities.push(Feature::Actor.as_str());
                }
                self.state.push(Loaded {
                    info: info.clone(),
                    component: store,
                    metadata,
                });
            }
            SECRET_STORES => {
                let store = create(
                    find(mecha_components::secretstores::REGISTRY, t, v),
                    spec,
                    init,
                    timeout,
                )
                .await?;
                self.secrets.push(Loaded {
                    info: info.clone(),
                    component: store,
                    metadata,
                });
            }
            "configuration" => {
                let store = create(
                    find(mecha_components::configuration::REGISTRY, t, v),
                    spec,
                    init,
                    timeout,
                )
                .await?;
                self.configuration.push(Loaded {
                    info: info.clone(),
                    component: store,
                    metadata,
                });
            }
            "lock" => {
                let store = create(
                    find(mecha_components::lock::REGISTRY, t, v),
                    spec,
                    init,
                    timeout,
                )
                .await?;
                self.locks.push(Loaded {
                    info: info.clone(),
                    component: store,
                    metadata,
                });
            }
            "bindings" => {
                let binding = create(
                    find(mecha_components::bindings::REGISTRY, t, v),
                    spec,
                    init,
                    timeout,
                )
                .await?;
                if binding.input.is_some() {
                    info.capabilities.push("INPUT_BINDING");
                }
                if binding.output.is_some() {
                    info.capabilities.push("OUTPUT_BINDING");
                }
                self.bindings.push(Loaded {
                    info: info.clone(),
                    component: binding,
                    metadata,
                });
            }
            "middleware" => {
                if !spec.component_type.starts_with("middleware.http.") {
                    return Err(unknown_type(spec));
                }
                self.middleware.push(crate::middleware::MiddlewareSpec {
                    name: spec.name.clone(),
                    component_type: spec.component_type.clone(),
                    metadata: metadata
                        .iter()
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect(),
                });
            }
            "pubsub" => {
                let broker = create(
                    find(mecha_components::pubsub::REGISTRY, t, v),
                    spec,
                    init,
                    timeout,
                )
                .await?;
                self.pubsub.push(Loaded {
                    info: info.clone(),
                    component: broker,
                    metadata,
                });
            }
            _ => return Err(unknown_type(spec)),
        }
        tracing::info!(
            component = %spec.name,
            r#type = %spec.type_and_version(),
            capabilities = ?info.capabilities,
            "Component loaded"
        );
        self.infos.push(info);
        Ok(())
    }

    /// Every loaded component, in load order, for the metadata API.
    pub fn infos(&self) -> Vec<ComponentInfo> {
        self.infos.clone()
    }

    /// Resolves `value`, `envRef` and `secretKeyRef` entries to plain strings.
    async fn resolve_metadata(&self, spec: &ComponentResource) -> Result<Metadata, String> {
        let mut out = HashMap::with_capacity(spec.metadata.len());
        for item in &spec.metadata {
            let value = match &item.value {
                MetadataValue::Plain(v) => v.clone(),
                MetadataValue::EnvRef(var) => std::env::var(var).map_err(|_| {
                    format!(
                        "metadata '{}': environment variable '{var}' is not set",
                        item.name
                    )
                })?,
                MetadataValue::SecretKeyRef { name, key } => {
                    self.resolve_secret(spec, &item.name, name, key).await?
                }
            };
            out.insert(item.name.clone(), value);
        }
        Ok(Metadata::new(out))
    }

    /// Reads `key` of secret `secret` through the component's `auth.secretStore`, or from the
    /// environment when it names none.
    async fn resolve_secret(
        &self,
        spec: &ComponentResource,
        field: &str,
        secret: &str,
        key: &str,
    ) -> Result<String, String> {
        let unresolved = |why: String| {
            format!(
                "metadata '{field}' refers to secret '{secret}' key '{key}', which cannot be resolved: {why}"
            )
        };
        let Some(store_name) = &spec.secret_store else {
            if key != secret {
                return Err(unresolved(format!(
                    "without auth.secretStore secrets come from the environment, where a secret has only the key '{secret}'"
                )));
            }
            return std::env::var(secret)
                .map_err(|_| unresolved(format!("environment variable '{secret}' is not set")));
        };
        if block_of(&spec.component_type) == SECRET_STORES {
            return Err(unresolved(
                "a secret store cannot take its metadata from another secret store".into(),
            ));
        }
        let store = self
            .secrets
            .iter()
            .find(|s| &s.info.name == store_name)
            .ok_or_else(|| unresolved(format!("secret store '{store_name}' is not loaded")))?;
        let values = store
            .component
            .get_secret(secret, &HashMap::new())
            .await
            .map_err(|e| unresolved(format!("secret store '{store_name}': {e}")))?;
        values
            .get(key)
            .cloned()
            .ok_or_else(|| unresolved(format!("secret '{secret}' has no key '{key}'")))
    }
}

/// Builds one component with `registration`, bounded by `timeout`.
async fn create<T: ?Sized>(
    registration: Option<&'static Registration<T>>,
    spec: &ComponentResource,
    init: ComponentInit,
    timeout: Duration,
) -> Result<Arc<T>, String> {
    let registration = registration.ok_or_else(|| unknown_type(spec))?;
    tokio::time::timeout(timeout, (registration.create)(init))
        .await
        .map_err(|_| format!("initialisation did not finish within {timeout:?}"))?
        .map_err(|e| e.to_string())
}

/// The building block of a component type: `state` for `state.redis`.
fn block_of(component_type: &str) -> &str {
    component_type.split('.').next().unwrap_or_default()
}

fn unknown_type(spec: &ComponentResource) -> String {
    format!(
        "unknown component type {}; this build supports: {}",
        spec.type_and_version(),
        supported_types().join(", ")
    )
}

/// Every `type/version` this build can load.
pub fn supported_types() -> Vec<String> {
    fn rows<T: ?Sized>(table: &[Registration<T>]) -> impl Iterator<Item = String> + '_ {
        table
            .iter()
            .map(|r| format!("{}/{}", r.component_type, r.version))
    }
    rows(mecha_components::state::REGISTRY)
        .chain(rows(mecha_components::secretstores::REGISTRY))
        .chain(rows(mecha_components::configuration::REGISTRY))
        .chain(rows(mecha_components::lock::REGISTRY))
        .chain(rows(mecha_components::bindings::REGISTRY))
        .chain(rows(mecha_components::pubsub::REGISTRY))
        .collect()
}

/// Reads every resources path and keeps the components and subscriptions this app may load,
/// refusing duplicate component names.
fn in_scope_resources(config: &RuntimeConfig) -> Result<InScope, LoadError> {
    let mut resources = Vec::new();
    for path in &config.resources_paths {
        resources.extend(read_resources_path(path)?);
    }
    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    let mut out = Vec::new();
    let mut subscriptions = Vec::new();
    let mut resiliency = Vec::new();
    let mut http_endpoints = Vec::new();
    for resource in resources {
        let spec = match resource {
            Resource::Component(c) => c,
            Resource::Resiliency(r) | Resource::HttpEndpoint(r) if !r.in_scope(&config.app_id) => {
                tracing::info!(name = %r.name, "Resource is scoped to other apps; not loaded");
                continue;
            }
            Resource::Resiliency(r) => {
                tracing::info!(name = %r.name, file = %r.source.display(), "Resiliency loaded");
                resiliency.push(r);
                continue;
            }
            Resource::HttpEndpoint(r) => {
                tracing::info!(name = %r.name, file = %r.source.display(), "HTTPEndpoint loaded");
                http_endpoints.push(r);
                continue;
            }
            Resource::Subscription(s) => {
                if s.in_scope(&config.app_id) {
                    tracing::info!(name = %s.name, pubsub = %s.spec.pubsubname, topic = %s.spec.topic, file = %s.source.display(), "Subscription loaded");
                    subscriptions.push(s);
                } else {
                    tracing::info!(name = %s.name, "Subscription is scoped to other apps; not loaded");
                }
                continue;
            }
            Resource::Configuration(c) => {
                tracing::info!(
                    name = %c.name,
                    file = %c.source.display(),
                    "Skipping a Configuration in the resources path; pass it with --config"
                );
                continue;
            }
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
        out.push(spec);
    }
    Ok(InScope {
        components: out,
        subscriptions,
        resiliency,
        http_endpoints,
    })
}

/// The resources of the resources paths this app may use, by kind.
struct InScope {
    components: Vec<ComponentResource>,
    subscriptions: Vec<SubscriptionResource>,
    resiliency: Vec<RawResource>,
    http_endpoints: Vec<RawResource>,
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
