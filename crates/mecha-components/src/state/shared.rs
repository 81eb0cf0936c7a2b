//! What the SQL state stores share: the bound on every operation, and the periodic clean-up
//! of expired rows (they never return an expired row; this task keeps their tables from
//! growing with them).

use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use mecha_core::state::StateError;
use tokio::task::AbortHandle;

/// Runs `op`, or fails with a backend error saying `what` did not answer within `limit`.
pub(crate) async fn within<T>(
    limit: Duration,
    what: impl FnOnce() -> String,
    op: impl Future<Output = Result<T, StateError>>,
) -> Result<T, StateError> {
    tokio::time::timeout(limit, op)
        .await
        .unwrap_or_else(|_| Err(StateError::Backend(format!("{} within {limit:?}", what()))))
}

/// A store that can delete its expired rows.
pub(crate) trait DeletesExpired: Send + Sync + 'static {
    /// Deletes the rows that have expired, returning how many.
    fn delete_expired(&self) -> impl Future<Output = Result<u64, StateError>> + Send;
}

/// The clean-up task of one store: started once, stopped by `close()` or when dropped, and
/// holding only a weak reference so that it never keeps the store alive.
#[derive(Default)]
pub(crate) struct Cleanup(Mutex<Option<AbortHandle>>);

// === impl Cleanup ===

impl Cleanup {
    /// Starts deleting `store`'s expired rows every `every`.
    pub(crate) fn start<S: DeletesExpired>(&self, store: &Arc<S>, every: Duration) {
        let store: Weak<S> = Arc::downgrade(store);
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(store) = store.upgrade() else { return };
                match store.delete_expired().await {
                    Ok(rows) => tracing::debug!(rows, "Deleted expired state"),
                    Err(error) => tracing::warn!(%error, "Deleting expired state failed"),
                }
            }
        });
        *self.handle() = Some(task.abort_handle());
    }

    /// Stops the task, if running.
    pub(crate) fn stop(&self) {
        if let Some(task) = self.handle().take() {
            task.abort();
        }
    }

    /// The running task, for tests that check it stops.
    #[cfg(test)]
    pub(crate) fn task(&self) -> Option<AbortHandle> {
        self.handle().clone()
    }

    fn handle(&self) -> std::sync::MutexGuard<'_, Option<AbortHandle>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.stop();
    }
}
