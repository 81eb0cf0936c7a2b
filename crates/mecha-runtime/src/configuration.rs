//! The configuration building block: reads, subscriptions (streamed to gRPC callers or POSTed
//! to the app) and unsubscribes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use futures::StreamExt;
use http::StatusCode;
use mecha_core::configuration::{ConfigurationItem, ConfigurationStore, ConfigurationUpdates};
use mecha_core::state::RequestMetadata;
use serde_json::json;
use tokio::sync::oneshot;
use tonic::Code;

use crate::app_channel::AppChannel;
use crate::components::Loaded;
use crate::error::ApiError;

type Subscriptions = Arc<Mutex<HashMap<String, Subscription>>>;

/// The configuration service.
pub struct ConfigurationService {
    stores: HashMap<String, Arc<dyn ConfigurationStore>>,
    subscriptions: Subscriptions,
    app: Option<Arc<AppChannel>>,
}

struct Subscription {
    store: String,
    stop: oneshot::Sender<()>,
}

/// Removes a subscription from the table when its stream is dropped.
struct Registered {
    subscriptions: Weak<Mutex<HashMap<String, Subscription>>>,
    id: String,
}

// === impl ConfigurationService ===

impl ConfigurationService {
    /// Builds the service; `app` receives HTTP subscriptions' updates.
    pub fn new(stores: &[Loaded<dyn ConfigurationStore>], app: Option<Arc<AppChannel>>) -> Self {
        Self {
            stores: stores
                .iter()
                .map(|s| (s.info.name.clone(), s.component.clone()))
                .collect(),
            subscriptions: Arc::default(),
            app,
        }
    }

    fn store(&self, name: &str) -> Result<&Arc<dyn ConfigurationStore>, ApiError> {
        if self.stores.is_empty() {
            return Err(ApiError::new(
                "ERR_CONFIGURATION_STORE_NOT_CONFIGURED",
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::FailedPrecondition,
                "configuration store is not configured",
            ));
        }
        self.stores.get(name).ok_or_else(|| {
            ApiError::new(
                "ERR_CONFIGURATION_STORE_NOT_FOUND",
                StatusCode::BAD_REQUEST,
                Code::InvalidArgument,
                format!("configuration store {name} not found"),
            )
        })
    }

    /// Reads `keys` (every key when empty).
    pub async fn get(
        &self,
        store: &str,
        keys: &[String],
        metadata: &RequestMetadata,
    ) -> Result<HashMap<String, ConfigurationItem>, ApiError> {
        self.store(store)?.get(keys, metadata).await.map_err(|e| {
            ApiError::new(
                "ERR_CONFIGURATION_GET",
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::Internal,
                format!("failed to get {keys:?} from Configuration store {store}: {e}"),
            )
        })
    }

    /// Subscribes to `keys`; returns the subscription id and the stream of updates, which ends
    /// on unsubscribe.
    pub async fn subscribe(
        &self,
        store: &str,
        keys: &[String],
        metadata: &RequestMetadata,
    ) -> Result<(String, ConfigurationUpdates), ApiError> {
        let updates = self
            .store(store)?
            .subscribe(keys, metadata)
            .await
            .map_err(|e| {
                ApiError::new(
                    "ERR_CONFIGURATION_SUBSCRIBE",
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Code::Internal,
                    format!("failed to subscribe {keys:?} from Configuration store {store}: {e}"),
                )
            })?;
        let id = uuid::Uuid::new_v4().to_string();
        let (stop, stopped) = oneshot::channel();
        self.table().insert(
            id.clone(),
            Subscription {
                store: store.to_owned(),
                stop,
            },
        );
        let guard = Registered {
            subscriptions: Arc::downgrade(&self.subscriptions),
            id: id.clone(),
        };
        let stream = updates.take_until(stopped).map(move |update| {
            let _registered = &guard;
            update
        });
        tracing::info!(store, id = %id, keys = ?keys, "Configuration subscription started");
        Ok((id, Box::pin(stream)))
    }

    /// Subscribes to `keys` and POSTs every change to the app at
    /// `/configuration/{store}/{key}`.
    pub async fn subscribe_for_app(
        &self,
        store: &str,
        keys: &[String],
        metadata: &RequestMetadata,
    ) -> Result<String, ApiError> {
        let app = self.app.clone().ok_or_else(|| {
            ApiError::new(
                "ERR_APP_CHANNEL_NIL",
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::FailedPrecondition,
                "app channel is nil: the sidecar has no --app-port to send updates to",
            )
        })?;
        let (id, mut updates) = self.subscribe(store, keys, metadata).await?;
        let (store, sub_id) = (store.to_owned(), id.clone());
        tokio::spawn(async move {
            while let Some(update) = updates.next().await {
                for (key, item) in update {
                    let body = json!({
                        "id": sub_id,
                        "items": { key.clone(): {"value": item.value, "version": item.version, "metadata": item.metadata} },
                    });
                    let path = format!("/configuration/{store}/{key}");
                    match app.post_json(&path, body.to_string().into_bytes()).await {
                        Ok(s) if s.is_success() => {}
                        Ok(s) => {
                            tracing::warn!(path = %path, status = %s, "App refused a configuration update")
                        }
                        Err(e) => {
                            tracing::warn!(path = %path, error = %e, "Configuration update not delivered")
                        }
                    }
                }
            }
        });
        Ok(id)
    }

    /// Ends a subscription.
    pub fn unsubscribe(&self, store: &str, id: &str) -> Result<(), ApiError> {
        self.store(store)?;
        let mut table = self.table();
        match table.get(id) {
            Some(sub) if sub.store == store => {
                if let Some(sub) = table.remove(id) {
                    let _ = sub.stop.send(());
                }
                tracing::info!(store, id, "Configuration subscription stopped");
                Ok(())
            }
            _ => Err(ApiError::new(
                "ERR_CONFIGURATION_UNSUBSCRIBE",
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::Internal,
                format!("subscription {id} of store {store} does not exist"),
            )),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, Subscription>> {
        self.subscriptions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops every subscription and closes every store.
    pub async fn close(&self) {
        for (_, sub) in self.table().drain() {
            let _ = sub.stop.send(());
        }
        for store in self.stores.values() {
            store.close().await;
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Some(subs) = self.subscriptions.upgrade() {
            subs.lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&self.id);
        }
    }
}
