//! `secretstores.local.env` v1: secrets read from the sidecar's environment variables.
//!
//! Capabilities: none (one value per secret). Tested against real process environments: the
//! tests re-run their own binary with chosen variables (`tests/secretstores.rs`), and the e2e
//! tests start the `mecha` binary with them.
//!
//! A secret `NAME` is the variable `<prefix>NAME` and has the single key `NAME`. The environment
//! is read at call time, so the store never caches a value. As Dapr does, variables whose full
//! name starts with `DAPR_` (any case) and `APP_API_TOKEN` are never visible: they hold the
//! sidecar's own tokens. Variables whose name or value is not valid UTF-8 are not visible either.
//!
//! Metadata: `prefix` (optional): only variables whose name starts with it (case-sensitively) and
//! is longer than it are visible, and apps name them without it.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use mecha_core::component::{ComponentError, ComponentInit};
use mecha_core::secretstores::{SecretError, SecretStore, SecretValues};
use mecha_core::state::RequestMetadata;

/// Variables with this prefix (compared case-insensitively) are the sidecar's own.
const HIDDEN_PREFIX: &str = "DAPR_";
/// The app's token for calls from the sidecar: never a secret of the app.
const HIDDEN_NAME: &str = "APP_API_TOKEN";

/// The `secretstores.local.env` component.
pub struct EnvSecretStore {
    metadata: Metadata,
}

/// The component's `spec.metadata`.
struct Metadata {
    /// `prefix`: what visible variable names start with; empty for every variable.
    prefix: String,
}

// === impl EnvSecretStore ===

impl EnvSecretStore {
    /// Creates the component.
    pub async fn create(init: ComponentInit) -> Result<Arc<dyn SecretStore>, ComponentError> {
        init.metadata.warn_unknown(&init.name, &["prefix"]);
        let prefix = init.metadata.get("prefix").unwrap_or_default().to_owned();
        Ok(Arc::new(Self {
            metadata: Metadata { prefix },
        }))
    }

    /// The secret name of the variable `var`, when the store shows it.
    fn secret_name<'a>(&self, var: &'a str) -> Option<&'a str> {
        let name = var.strip_prefix(self.metadata.prefix.as_str())?;
        (!name.is_empty() && is_visible(var)).then_some(name)
    }
}

#[async_trait]
impl SecretStore for EnvSecretStore {
    async fn get_secret(
        &self,
        name: &str,
        _metadata: &RequestMetadata,
    ) -> Result<SecretValues, SecretError> {
        let var = format!("{}{name}", self.metadata.prefix);
        // `=` and NUL cannot be part of a variable name; asking the OS for them is pointless.
        if name.is_empty() || var.contains(['=', '\0']) || !is_visible(&var) {
            return Err(SecretError::NotFound(name.to_owned()));
        }
        match std::env::var(&var) {
            Ok(value) => Ok(HashMap::from([(name.to_owned(), value)])),
            Err(std::env::VarError::NotPresent) => Err(SecretError::NotFound(name.to_owned())),
            Err(std::env::VarError::NotUnicode(_)) => Err(SecretError::Backend(format!(
                "environment variable '{var}' is not valid UTF-8"
            ))),
        }
    }

    async fn bulk_get_secret(
        &self,
        _metadata: &RequestMetadata,
    ) -> Result<HashMap<String, SecretValues>, SecretError> {
        Ok(std::env::vars_os()
            .filter_map(|(var, value)| Some((var.into_string().ok()?, value.into_string().ok()?)))
            .filter_map(|(var, value)| {
                let name = self.secret_name(&var)?.to_owned();
                Some((name.clone(), HashMap::from([(name, value)])))
            })
            .collect())
    }
}

/// Whether the variable `var` (its full name) may be shown at all.
fn is_visible(var: &str) -> bool {
    let hidden_prefix = var
        .get(..HIDDEN_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(HIDDEN_PREFIX));
    !hidden_prefix && !var.eq_ignore_ascii_case(HIDDEN_NAME)
}
