//! The secrets building block: store lookup, secret scopes from the Configuration resource,
//! and error codes.

use std::collections::HashMap;
use std::sync::Arc;

use http::StatusCode;
use mecha_core::resource::SecretScope;
use mecha_core::secretstores::{SecretStore, SecretValues};
use mecha_core::state::RequestMetadata;
use tonic::Code;

use crate::components::Loaded;
use crate::error::ApiError;

/// The secrets service.
pub struct SecretsService {
    stores: HashMap<String, Arc<dyn SecretStore>>,
    scopes: HashMap<String, SecretScope>,
}

// === impl SecretsService ===

impl SecretsService {
    /// Builds the service over the loaded stores and the configured scopes.
    pub fn new(stores: &[Loaded<dyn SecretStore>], scopes: Vec<SecretScope>) -> Self {
        Self {
            stores: stores
                .iter()
                .map(|s| (s.info.name.clone(), s.component.clone()))
                .collect(),
            scopes: scopes
                .into_iter()
                .map(|s| (s.store_name.clone(), s))
                .collect(),
        }
    }

    fn store(&self, name: &str) -> Result<&Arc<dyn SecretStore>, ApiError> {
        if self.stores.is_empty() {
            return Err(ApiError::new(
                "ERR_SECRET_STORES_NOT_CONFIGURED",
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::FailedPrecondition,
                "secret store is not configured",
            ));
        }
        self.stores.get(name).ok_or_else(|| {
            ApiError::new(
                "ERR_SECRET_STORE_NOT_FOUND",
                StatusCode::UNAUTHORIZED,
                Code::InvalidArgument,
                format!("failed finding secret store with key {name}"),
            )
        })
    }

    fn allowed(&self, store: &str, secret: &str) -> bool {
        self.scopes.get(store).is_none_or(|s| s.allows(secret))
    }

    /// Reads one secret.
    pub async fn get(
        &self,
        store: &str,
        key: &str,
        metadata: &RequestMetadata,
    ) -> Result<SecretValues, ApiError> {
        let s = self.store(store)?;
        if !self.allowed(store, key) {
            return Err(ApiError::new(
                "ERR_PERMISSION_DENIED",
                StatusCode::FORBIDDEN,
                Code::PermissionDenied,
                format!("access denied by policy to get {key} from {store}"),
            ));
        }
        s.get_secret(key, metadata)
            .await
            .map_err(|e| get_error(store, Some(key), e))
    }

    /// Reads every secret the scopes allow.
    pub async fn bulk(
        &self,
        store: &str,
        metadata: &RequestMetadata,
    ) -> Result<HashMap<String, SecretValues>, ApiError> {
        let s = self.store(store)?;
        let mut all = s
            .bulk_get_secret(metadata)
            .await
            .map_err(|e| get_error(store, None, e))?;
        all.retain(|name, _| self.allowed(store, name));
        Ok(all)
    }

    /// Closes every store.
    pub async fn close(&self) {
        for store in self.stores.values() {
            store.close().await;
        }
    }
}

/// `ERR_SECRET_GET`, worded as Dapr words it for one secret (`key`) or for a bulk read.
fn get_error(store: &str, key: Option<&str>, e: mecha_core::secretstores::SecretError) -> ApiError {
    let message = match key {
        Some(key) => format!("failed getting secret with key {key} from secret store {store}: {e}"),
        None => format!("failed getting secrets from secret store {store}: {e}"),
    };
    ApiError::new(
        "ERR_SECRET_GET",
        StatusCode::INTERNAL_SERVER_ERROR,
        Code::Internal,
        message,
    )
}
