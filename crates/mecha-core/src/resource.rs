//! The resource model: `kind: Component` (and friends) documents read from YAML files.
//!
//! This is the first, raw stage of configuration: it follows the input closely and checks
//! only what the YAML itself must carry. The runtime resolves secrets, scopes and types later.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

mod subscription;

pub use subscription::{BulkSubscribe, Routes, Rule, SubscriptionResource, SubscriptionSpec};

/// The `apiVersion` group of every Dapr resource.
pub const API_GROUP: &str = "dapr.io/";

/// One resource document read from a file.
#[derive(Clone, Debug, PartialEq)]
pub enum Resource {
    /// `kind: Component`.
    Component(ComponentResource),
    /// `kind: Configuration`.
    Configuration(ConfigurationResource),
    /// `kind: Subscription`.
    Subscription(SubscriptionResource),
    /// `kind: Resiliency`.
    Resiliency(RawResource),
    /// `kind: HTTPEndpoint`.
    HttpEndpoint(RawResource),
    /// A document of another kind, kept only to be reported and skipped.
    Other {
        /// The document's `kind`.
        kind: String,
        /// The document's `metadata.name`, if any.
        name: Option<String>,
        /// The file it came from.
        source: PathBuf,
    },
}

/// A `kind: Component` document.
#[derive(Clone, Debug, PartialEq)]
pub struct ComponentResource {
    /// `metadata.name`: the name apps use, e.g. `statestore`.
    pub name: String,
    /// `metadata.namespace`, if set.
    pub namespace: Option<String>,
    /// `spec.type`, e.g. `state.sqlite`.
    pub component_type: String,
    /// `spec.version`, e.g. `v1`.
    pub version: String,
    /// `spec.metadata`.
    pub metadata: Vec<MetadataItem>,
    /// `spec.ignoreErrors`: a failing component is logged and skipped instead of stopping start-up.
    pub ignore_errors: bool,
    /// `spec.initTimeout`, a Go duration.
    pub init_timeout: Option<String>,
    /// `scopes`: the app ids allowed to load the component; empty means every app.
    pub scopes: Vec<String>,
    /// `auth.secretStore`: the store `secretKeyRef` values are resolved through.
    pub secret_store: Option<String>,
    /// The file it came from.
    pub source: PathBuf,
}

/// A resource whose `spec` its building block reads itself (`Resiliency`, `HTTPEndpoint`).
#[derive(Clone, Debug, PartialEq)]
pub struct RawResource {
    /// `metadata.name`.
    pub name: String,
    /// `spec`, as written.
    pub spec: Value,
    /// `scopes`: the app ids it applies to; empty means every app.
    pub scopes: Vec<String>,
    /// The file it came from.
    pub source: PathBuf,
}

impl RawResource {
    /// Whether `app_id` may use this resource.
    pub fn in_scope(&self, app_id: &str) -> bool {
        self.scopes.is_empty() || self.scopes.iter().any(|s| s == app_id)
    }
}

/// A `kind: Configuration` document. Its `spec` stays raw; each building block reads its own
/// part through a typed accessor, so unknown parts never stop start-up.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigurationResource {
    /// `metadata.name`.
    pub name: String,
    /// `spec`, as written.
    pub spec: Value,
    /// The file it came from.
    pub source: PathBuf,
}

/// Access to the secrets of one store, from `spec.secrets.scopes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretScope {
    /// `storeName`.
    pub store_name: String,
    /// `defaultAccess`: `true` for allow (the default), `false` for deny.
    pub default_allow: bool,
    /// `allowedSecrets`: when not empty, only these secrets are readable.
    pub allowed: Vec<String>,
    /// `deniedSecrets`.
    pub denied: Vec<String>,
}

/// One `spec.metadata` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetadataItem {
    /// The Dapr field name, e.g. `connectionString`.
    pub name: String,
    /// Where the value comes from.
    pub value: MetadataValue,
}

/// Where a metadata value comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataValue {
    /// An inline `value`, rendered as a string.
    Plain(String),
    /// `secretKeyRef: {name, key}`: resolved through the component's secret store.
    SecretKeyRef {
        /// The secret's name.
        name: String,
        /// The key within the secret; defaults to the name.
        key: String,
    },
    /// `envRef: VAR`: read from the sidecar's environment.
    EnvRef(String),
}

/// An error reading resources from a file.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// The file could not be read.
    #[error("cannot read {}: {error}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The file is not valid YAML.
    #[error("invalid YAML in {}: {error}", file.display())]
    Yaml {
        /// The file.
        file: PathBuf,
        /// The parser's message.
        error: String,
    },
    /// A document lacks a field or has a field of the wrong shape.
    #[error("{} in {}: {reason}", Named(kind, name.as_deref()), file.display())]
    Invalid {
        /// The file.
        file: PathBuf,
        /// The resource's kind, in lower case (`component`, `subscription`…).
        kind: String,
        /// The resource's name, when known.
        name: Option<String>,
        /// What is wrong.
        reason: String,
    },
}

struct Named<'a>(&'a str, Option<&'a str>);

impl fmt::Display for Named<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Some(n) => write!(f, "{} '{n}'", self.0),
            None => f.write_str("resource"),
        }
    }
}

// === impl Resource ===

impl Resource {
    /// Reads every resource document of one YAML file.
    pub fn read_file(file: &Path) -> Result<Vec<Resource>, ResourceError> {
        let text = std::fs::read_to_string(file).map_err(|error| ResourceError::Read {
            file: file.to_owned(),
            error,
        })?;
        Self::parse(&text, file)
    }

    /// Parses every document of a multi-document YAML text; `source` names it in errors.
    pub fn parse(text: &str, source: &Path) -> Result<Vec<Resource>, ResourceError> {
        let docs: Vec<Value> =
            serde_saphyr::from_multiple(text).map_err(|e| ResourceError::Yaml {
                file: source.to_owned(),
                error: e.to_string(),
            })?;
        docs.into_iter()
            .filter(|d| !d.is_null())
            .map(|d| Self::from_document(d, source))
            .collect()
    }

    fn from_document(doc: Value, source: &Path) -> Result<Resource, ResourceError> {
        let kind_label = match doc.get("kind").and_then(Value::as_str) {
            Some(k) if !k.is_empty() && k != "Component" => k.to_ascii_lowercase(),
            _ => "component".to_owned(),
        };
        let invalid = |name: Option<&str>, reason: String| ResourceError::Invalid {
            file: source.to_owned(),
            kind: kind_label.clone(),
            name: name.map(str::to_owned),
            reason,
        };
        if !doc.is_object() {
            return Err(invalid(
                None,
                "a resource document must be a mapping".into(),
            ));
        }
        let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
        let api_version = doc
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let name = doc.pointer("/metadata/name").and_then(Value::as_str);
        if kind == "Configuration" && api_version.starts_with(API_GROUP) {
            return Ok(Resource::Configuration(ConfigurationResource {
                name: name.unwrap_or_default().to_owned(),
                spec: doc.get("spec").cloned().unwrap_or(Value::Null),
                source: source.to_owned(),
            }));
        }
        if (kind == "Resiliency" || kind == "HTTPEndpoint") && api_version.starts_with(API_GROUP) {
            let name = match name {
                Some(n) if !n.trim().is_empty() => n,
                _ => return Err(invalid(None, format!("{kind} has no metadata.name"))),
            };
            let spec = doc
                .get("spec")
                .filter(|s| s.is_object())
                .cloned()
                .ok_or_else(|| invalid(Some(name), format!("{kind} has no spec")))?;
            let scopes = match doc.get("scopes") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(s)) => s.iter().map(scalar_to_string).collect(),
                Some(_) => {
                    return Err(invalid(
                        Some(name),
                        "scopes must be a list of app ids".into(),
                    ));
                }
            };
            let raw = RawResource {
                name: name.to_owned(),
                spec,
                scopes,
                source: source.to_owned(),
            };
            return Ok(if kind == "Resiliency" {
                Resource::Resiliency(raw)
            } else {
                Resource::HttpEndpoint(raw)
            });
        }
        if kind == "Subscription" && api_version.starts_with(API_GROUP) {
            let name = match name {
                Some(n) if !n.trim().is_empty() => n,
                _ => return Err(invalid(None, "subscription has no metadata.name".into())),
            };
            return SubscriptionResource::from_document(&doc, name, source.to_owned())
                .map(Resource::Subscription)
                .map_err(|r| invalid(Some(name), r));
        }
        if kind != "Component" || !api_version.starts_with(API_GROUP) {
            return Ok(Resource::Other {
                kind: if api_version.starts_with(API_GROUP) {
                    kind.to_owned()
                } else {
                    format!("{kind} ({api_version})")
                },
                name: name.map(str::to_owned),
                source: source.to_owned(),
            });
        }
        let name = match name {
            Some(n) if !n.trim().is_empty() => n,
            _ => return Err(invalid(None, "component has no metadata.name".into())),
        };
        let spec = doc
            .get("spec")
            .filter(|s| s.is_object())
            .ok_or_else(|| invalid(Some(name), "component has no spec".into()))?;
        let text_field = |field: &str| -> Result<String, ResourceError> {
            match spec.get(field) {
                Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
                Some(Value::Number(n)) => Ok(n.to_string()),
                _ => Err(invalid(Some(name), format!("spec.{field} is required"))),
            }
        };
        let component_type = text_field("type")?;
        let version = text_field("version")?;
        let metadata = match spec.get("metadata") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| MetadataItem::from_value(i).map_err(|r| invalid(Some(name), r)))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(invalid(Some(name), "spec.metadata must be a list".into())),
        };
        let ignore_errors = match spec.get("ignoreErrors") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => crate::metadata::parse_bool(s)
                .ok_or_else(|| invalid(Some(name), "spec.ignoreErrors must be a boolean".into()))?,
            Some(_) => {
                return Err(invalid(
                    Some(name),
                    "spec.ignoreErrors must be a boolean".into(),
                ));
            }
        };
        let scopes = match doc.get("scopes") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(s)) => s.iter().map(scalar_to_string).collect(),
            Some(_) => {
                return Err(invalid(
                    Some(name),
                    "scopes must be a list of app ids".into(),
                ));
            }
        };
        Ok(Resource::Component(ComponentResource {
            name: name.to_owned(),
            namespace: doc
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .map(Into::into),
            component_type,
            version,
            metadata,
            ignore_errors,
            init_timeout: spec
                .get("initTimeout")
                .and_then(Value::as_str)
                .map(Into::into),
            scopes,
            secret_store: doc
                .pointer("/auth/secretStore")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(Into::into),
            source: source.to_owned(),
        }))
    }
}

// === impl ConfigurationResource ===

impl ConfigurationResource {
    /// `spec.secrets.scopes`.
    pub fn secret_scopes(&self) -> Result<Vec<SecretScope>, ResourceError> {
        let invalid = |reason: String| ResourceError::Invalid {
            file: self.source.clone(),
            kind: "configuration".to_owned(),
            name: Some(self.name.clone()),
            reason,
        };
        let Some(scopes) = self
            .spec
            .pointer("/secrets/scopes")
            .filter(|v| !v.is_null())
        else {
            return Ok(Vec::new());
        };
        let scopes = scopes
            .as_array()
            .ok_or_else(|| invalid("spec.secrets.scopes must be a list".into()))?;
        scopes
            .iter()
            .map(|scope| {
                let store_name =
                    scope
                        .get("storeName")
                        .and_then(Value::as_str)
                        .ok_or_else(|| {
                            invalid("every spec.secrets.scopes entry needs storeName".into())
                        })?;
                let default_allow = match scope.get("defaultAccess").and_then(Value::as_str) {
                    None | Some("") => true,
                    Some(a) if a.eq_ignore_ascii_case("allow") => true,
                    Some(a) if a.eq_ignore_ascii_case("deny") => false,
                    Some(a) => {
                        return Err(invalid(format!(
                            "defaultAccess '{a}' must be allow or deny"
                        )));
                    }
                };
                let list = |field: &str| -> Vec<String> {
                    scope
                        .get(field)
                        .and_then(Value::as_array)
                        .map(|a| a.iter().map(scalar_to_string).collect())
                        .unwrap_or_default()
                };
                Ok(SecretScope {
                    store_name: store_name.to_owned(),
                    default_allow,
                    allowed: list("allowedSecrets"),
                    denied: list("deniedSecrets"),
                })
            })
            .collect()
    }
}

// === impl SecretScope ===

impl SecretScope {
    /// Whether `secret` may be read, as Dapr decides: a non-empty allow list is exclusive, then
    /// the deny list, then the default access.
    pub fn allows(&self, secret: &str) -> bool {
        if !self.allowed.is_empty() {
            return self.allowed.iter().any(|s| s == secret);
        }
        if self.denied.iter().any(|s| s == secret) {
            return false;
        }
        self.default_allow
    }
}

// === impl ComponentResource ===

impl ComponentResource {
    /// `type/version`, e.g. `state.sqlite/v1`, as the registry and logs name it.
    pub fn type_and_version(&self) -> String {
        format!("{}/{}", self.component_type, self.version)
    }

    /// Whether the app `app_id` may load this component.
    pub fn in_scope(&self, app_id: &str) -> bool {
        self.scopes.is_empty() || self.scopes.iter().any(|s| s == app_id)
    }
}

// === impl MetadataItem ===

impl MetadataItem {
    fn from_value(item: &Value) -> Result<Self, String> {
        let name = item
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or("every spec.metadata entry needs a name")?
            .to_owned();
        let value = if let Some(r) = item.get("secretKeyRef").filter(|v| !v.is_null()) {
            let secret = r
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("metadata '{name}': secretKeyRef needs a name"))?;
            let key = r
                .get("key")
                .and_then(Value::as_str)
                .filter(|k| !k.is_empty())
                .unwrap_or(secret);
            MetadataValue::SecretKeyRef {
                name: secret.to_owned(),
                key: key.to_owned(),
            }
        } else if let Some(var) = item.get("envRef").and_then(Value::as_str) {
            MetadataValue::EnvRef(var.to_owned())
        } else {
            MetadataValue::Plain(item.get("value").map(scalar_to_string).unwrap_or_default())
        };
        Ok(Self { name, value })
    }
}

/// Renders a YAML value as Dapr does for metadata: strings as they are, other scalars in
/// their plain form, and maps or lists as JSON.
fn scalar_to_string(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;
