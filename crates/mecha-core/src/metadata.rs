//! Component metadata: the `spec.metadata` name/value pairs, resolved to strings.

use std::collections::HashMap;

use crate::component::ComponentError;

/// Resolved component metadata, keyed by the Dapr field name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    values: HashMap<String, String>,
}

// === impl Metadata ===

impl Metadata {
    /// Wraps already resolved values.
    pub fn new(values: HashMap<String, String>) -> Self {
        Self { values }
    }

    /// The value of `key`, if set. Keys are matched case-insensitively, as Dapr does.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str).or_else(|| {
            self.values
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.as_str())
        })
    }

    /// The value of `key`, or an error naming it when absent or empty.
    pub fn required(&self, key: &'static str) -> Result<&str, ComponentError> {
        match self.get(key) {
            Some(v) if !v.trim().is_empty() => Ok(v),
            _ => Err(ComponentError::MissingField(key)),
        }
    }

    /// A boolean field (`true`/`false`/`1`/`0`/`yes`/`no`), `default` when absent.
    pub fn bool(&self, key: &'static str, default: bool) -> Result<bool, ComponentError> {
        match self.get(key).map(str::trim) {
            None | Some("") => Ok(default),
            Some(v) => parse_bool(v).ok_or_else(|| ComponentError::InvalidField {
                field: key,
                reason: format!("'{v}' is not a boolean"),
            }),
        }
    }

    /// An unsigned integer field, `default` when absent.
    pub fn u64(&self, key: &'static str, default: u64) -> Result<u64, ComponentError> {
        match self.get(key).map(str::trim) {
            None | Some("") => Ok(default),
            Some(v) => v.parse().map_err(|_| ComponentError::InvalidField {
                field: key,
                reason: format!("'{v}' is not a non-negative integer"),
            }),
        }
    }

    /// Every key and value.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Logs, once at WARN, every key that `known` does not list.
    ///
    /// Unknown keys are not an error: component files written for Dapr may carry keys that
    /// Mecha does not use yet.
    pub fn warn_unknown(&self, component: &str, known: &[&str]) {
        for key in self.values.keys() {
            if !known.iter().any(|k| k.eq_ignore_ascii_case(key)) {
                tracing::warn!(component, key = %key, "Ignoring unknown metadata field");
            }
        }
    }
}

/// Parses the boolean spellings Dapr accepts in metadata.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "y" | "on" => Some(true),
        "false" | "0" | "no" | "n" | "off" => Some(false),
        _ => None,
    }
}

impl FromIterator<(String, String)> for Metadata {
    fn from_iter<T: IntoIterator<Item = (String, String)>>(iter: T) -> Self {
        Self::new(iter.into_iter().collect())
    }
}
