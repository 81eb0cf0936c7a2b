//! The distributed lock building block: store lookup, resource-id prefixing and validation.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use mecha_core::lock::{LockStore, UnlockStatus};
use tonic::Code;

use crate::components::Loaded;
use crate::error::ApiError;

/// The lock service.
pub struct LockService {
    stores: HashMap<String, StoreEntry>,
}

struct StoreEntry {
    store: Arc<dyn LockStore>,
    prefix: String,
}

// === impl LockService ===

impl LockService {
    /// Builds the service; resource ids are prefixed per the store's `keyPrefix`, as state keys.
    pub fn new(app_id: &str, namespace: Option<&str>, stores: &[Loaded<dyn LockStore>]) -> Self {
        let stores = stores
            .iter()
            .map(|s| {
                let prefix = crate::state::key_prefix(&s.metadata, app_id, &s.info.name, namespace);
                (
                    s.info.name.clone(),
                    StoreEntry {
                        store: s.component.clone(),
                        prefix,
                    },
                )
            })
            .collect();
        Self { stores }
    }

    fn entry(&self, name: &str) -> Result<&StoreEntry, ApiError> {
        if self.stores.is_empty() {
            return Err(ApiError::new(
                "ERR_LOCK_STORE_NOT_CONFIGURED",
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::FailedPrecondition,
                "lock store is not configured",
            ));
        }
        self.stores.get(name).ok_or_else(|| {
            ApiError::new(
                "ERR_LOCK_STORE_NOT_FOUND",
                StatusCode::BAD_REQUEST,
                Code::InvalidArgument,
                format!("lock store {name} not found"),
            )
        })
    }

    /// Tries to take the lock; `false` when another owner holds it.
    pub async fn try_lock(
        &self,
        store: &str,
        resource_id: &str,
        owner: &str,
        expiry_in_seconds: i64,
    ) -> Result<bool, ApiError> {
        let entry = self.entry(store)?;
        check_ids(resource_id, owner)?;
        if expiry_in_seconds <= 0 {
            return Err(ApiError::malformed(
                "expiryInSeconds must be greater than 0",
            ));
        }
        let expiry = Duration::from_secs(expiry_in_seconds.unsigned_abs());
        let key = format!("{}{resource_id}", entry.prefix);
        entry
            .store
            .try_lock(&key, owner, expiry)
            .await
            .map_err(|e| {
                ApiError::new(
                    "ERR_TRY_LOCK",
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Code::Internal,
                    format!("failed to try acquiring lock: {e}"),
                )
            })
    }

    /// Releases the lock if `owner` holds it.
    pub async fn unlock(
        &self,
        store: &str,
        resource_id: &str,
        owner: &str,
    ) -> Result<UnlockStatus, ApiError> {
        let entry = self.entry(store)?;
        check_ids(resource_id, owner)?;
        let key = format!("{}{resource_id}", entry.prefix);
        entry.store.unlock(&key, owner).await.map_err(|e| {
            ApiError::new(
                "ERR_UNLOCK",
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::Internal,
                format!("failed to release lock: {e}"),
            )
        })
    }

    /// Closes every store.
    pub async fn close(&self) {
        for entry in self.stores.values() {
            entry.store.close().await;
        }
    }
}

fn check_ids(resource_id: &str, owner: &str) -> Result<(), ApiError> {
    if resource_id.is_empty() {
        return Err(ApiError::malformed("ResourceId is empty in lock store"));
    }
    if owner.is_empty() {
        return Err(ApiError::malformed("LockOwner is empty in lock store"));
    }
    Ok(())
}
