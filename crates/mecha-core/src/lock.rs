//! The distributed lock building block's component contract: [`LockStore`].
//!
//! A lock is held by one owner until it unlocks or the expiry passes; only the owner may
//! unlock it. Stores must enforce this with the backing server's atomic operations, since
//! several sidecars contend for the same lock.

use std::time::Duration;

use async_trait::async_trait;

/// The outcome of an unlock, numbered as Dapr's `UnlockResponse.Status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnlockStatus {
    /// The lock was released.
    Success = 0,
    /// No lock is held on the resource.
    LockDoesNotExist = 1,
    /// Another owner holds the lock.
    LockBelongsToOthers = 2,
    /// The store failed.
    InternalError = 3,
}

/// A store of expiring locks.
#[async_trait]
pub trait LockStore: Send + Sync + 'static {
    /// Takes the lock on `resource_id` for `owner` if nobody holds it; `false` when held.
    async fn try_lock(
        &self,
        resource_id: &str,
        owner: &str,
        expiry: Duration,
    ) -> Result<bool, LockError>;

    /// Releases the lock if `owner` holds it.
    async fn unlock(&self, resource_id: &str, owner: &str) -> Result<UnlockStatus, LockError>;

    /// Releases connections and background tasks.
    async fn close(&self) {}
}

/// An error from a lock store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LockError(pub String);
