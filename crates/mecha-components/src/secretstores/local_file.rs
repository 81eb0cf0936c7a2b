//! `secretstores.local.file` v1: secrets read once, at start-up, from a JSON file.
//!
//! Capabilities: with `multiValued` true a secret holds several keys (Dapr reports this as
//! MULTIPLE_KEY_VALUES_PER_SECRET; the `SecretStore` contract has no capability list yet).
//! Tested against real files in temporary folders (`tests/secretstores.rs`) and through the
//! `mecha` binary (e2e).
//!
//! The file must hold a JSON object. Nested objects and arrays are flattened: their keys (array
//! indices for arrays) are joined with `nestedSeparator`, so `{"db":{"user":"u"}}` gives the key
//! `db:user`. Strings are taken as they are; numbers and booleans become their JSON text and
//! `null` the empty string (Dapr's store renders those through Go's `%s`, which yields strings
//! such as `%!s(float64=1)`). Two paths that flatten to the same key (`{"a:b":1,"a":{"b":2}}`)
//! are a start-up error, where Dapr silently keeps one of them.
//!
//! With `multiValued` false every flattened key is a secret with that one key. With
//! `multiValued` true every top-level key is a secret: a scalar gives `{key: value}`, an object
//! or array gives its flattened children, keyed relative to it.
//!
//! Changes to the file are not seen until the sidecar restarts, as in Dapr.
//!
//! Metadata: `secretsFile` (required: the path of the JSON file, relative to the sidecar's
//! working directory), `nestedSeparator` (`:`), `multiValued` (`false`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use mecha_core::component::{ComponentError, ComponentInit};
use mecha_core::secretstores::{SecretError, SecretStore, SecretValues};
use mecha_core::state::RequestMetadata;
use serde_json::Value;

const SECRETS_FILE: &str = "secretsFile";
const NESTED_SEPARATOR: &str = "nestedSeparator";
const MULTI_VALUED: &str = "multiValued";
const DEFAULT_SEPARATOR: &str = ":";

/// The `secretstores.local.file` component.
pub struct FileSecretStore {
    secrets: HashMap<String, SecretValues>,
}

/// The component's `spec.metadata`.
struct Metadata {
    /// `secretsFile`: the JSON file.
    secrets_file: PathBuf,
    /// `nestedSeparator`: joins the keys of nested objects.
    nested_separator: String,
    /// `multiValued`: each top-level key is one secret with several keys.
    multi_valued: bool,
}

// === impl FileSecretStore ===

impl FileSecretStore {
    /// Reads and flattens `secretsFile`; a missing, unreadable or invalid file is an error
    /// naming it.
    pub async fn create(init: ComponentInit) -> Result<Arc<dyn SecretStore>, ComponentError> {
        init.metadata
            .warn_unknown(&init.name, &[SECRETS_FILE, NESTED_SEPARATOR, MULTI_VALUED]);
        let md = Metadata::parse(&init)?;
        let invalid_file = |reason: String| ComponentError::InvalidField {
            field: SECRETS_FILE,
            reason: format!("{}: {reason}", md.secrets_file.display()),
        };
        let text = tokio::fs::read_to_string(&md.secrets_file)
            .await
            .map_err(|e| invalid_file(format!("cannot read the file: {e}")))?;
        let root = match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(root)) => root,
            Ok(_) => return Err(invalid_file("the file must hold a JSON object".into())),
            Err(e) => return Err(invalid_file(format!("invalid JSON: {e}"))),
        };
        let sep = md.nested_separator.as_str();
        let secrets = if md.multi_valued {
            root.iter()
                .map(|(name, value)| {
                    let values = match value {
                        Value::Object(_) | Value::Array(_) => flatten_children(value, sep),
                        scalar => Ok(HashMap::from([(name.clone(), render(scalar))])),
                    };
                    Ok((name.clone(), values.map_err(&invalid_file)?))
                })
                .collect::<Result<_, ComponentError>>()?
        } else {
            flatten_children(&Value::Object(root), sep)
                .map_err(invalid_file)?
                .into_iter()
                .map(|(key, value)| (key.clone(), HashMap::from([(key, value)])))
                .collect()
        };
        Ok(Arc::new(Self { secrets }))
    }
}

#[async_trait]
impl SecretStore for FileSecretStore {
    async fn get_secret(
        &self,
        name: &str,
        _metadata: &RequestMetadata,
    ) -> Result<SecretValues, SecretError> {
        self.secrets
            .get(name)
            .cloned()
            .ok_or_else(|| SecretError::NotFound(name.to_owned()))
    }

    async fn bulk_get_secret(
        &self,
        _metadata: &RequestMetadata,
    ) -> Result<HashMap<String, SecretValues>, SecretError> {
        Ok(self.secrets.clone())
    }
}

// === impl Metadata ===

impl Metadata {
    fn parse(init: &ComponentInit) -> Result<Self, ComponentError> {
        let md = &init.metadata;
        Ok(Self {
            secrets_file: PathBuf::from(md.required(SECRETS_FILE)?),
            nested_separator: md
                .get(NESTED_SEPARATOR)
                .filter(|s| !s.is_empty())
                .unwrap_or(DEFAULT_SEPARATOR)
                .to_owned(),
            multi_valued: md.bool(MULTI_VALUED, false)?,
        })
    }
}

/// The scalar leaves under the object or array `value`, keyed by their paths joined with `sep`
/// (relative to `value`); an error names a key reached by two paths.
fn flatten_children(value: &Value, sep: &str) -> Result<SecretValues, String> {
    let mut out = HashMap::new();
    let mut path = Vec::new();
    visit(value, sep, &mut path, &mut out)?;
    Ok(out)
}

fn visit(
    value: &Value,
    sep: &str,
    path: &mut Vec<String>,
    out: &mut SecretValues,
) -> Result<(), String> {
    let children: Vec<(String, &Value)> = match value {
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), v)).collect(),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v))
            .collect(),
        scalar => {
            let key = path.join(sep);
            if out.insert(key.clone(), render(scalar)).is_some() {
                return Err(format!(
                    "the key '{key}' is reached by two paths once nested keys are joined with \
                     '{sep}'"
                ));
            }
            return Ok(());
        }
    };
    for (key, child) in children {
        path.push(key);
        visit(child, sep, path, out)?;
        path.pop();
    }
    Ok(())
}

/// A scalar's secret value: strings as they are, other scalars as their JSON text, `null` empty.
fn render(scalar: &Value) -> String {
    match scalar {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}
