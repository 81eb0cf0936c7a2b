//! The state building block: one service that owns store lookup, key prefixing, validation,
//! ETag and concurrency rules and error codes. The HTTP and gRPC handlers only translate.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use mecha_core::Feature;
use mecha_core::state::{
    Concurrency, Consistency, DeleteRequest, GetRequest, GetResponse, Query, RequestMetadata,
    SetRequest, StateError, StateStore, TTL_IN_SECONDS, TransactionOperation,
};
use tonic::Code;

use crate::components::LoadedStateStore;
use crate::error::ApiError;

/// The separator between a key prefix and the key.
pub const KEY_SEPARATOR: &str = "||";

/// The state service.
pub struct StateService {
    app_id: String,
    stores: HashMap<String, StoreEntry>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

struct StoreEntry {
    store: Arc<dyn StateStore>,
    /// The outbound resiliency policy of the component.
    policy: crate::resiliency::Policy,
    /// `appId||`, `name||`, a custom prefix or nothing, per the `keyPrefix` metadata.
    prefix: String,
}

/// Write and delete options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateOptions {
    /// First-write or last-write.
    pub concurrency: Concurrency,
    /// Requested consistency.
    pub consistency: Consistency,
}

/// One value to save, as an app sent it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SaveItem {
    /// The app's key.
    pub key: String,
    /// The bytes to store.
    pub value: Bytes,
    /// The ETag the stored value must have.
    pub etag: Option<String>,
    /// Per-item metadata (`ttlInSeconds`…).
    pub metadata: RequestMetadata,
    /// Options.
    pub options: StateOptions,
}

/// One key to delete, as an app sent it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteItem {
    /// The app's key.
    pub key: String,
    /// The ETag the stored value must have.
    pub etag: Option<String>,
    /// Per-request metadata.
    pub metadata: RequestMetadata,
    /// Options.
    pub options: StateOptions,
}

/// One operation of a transaction, as an app sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxOperation {
    /// `upsert`.
    Upsert(SaveItem),
    /// `delete`.
    Delete(DeleteItem),
}

/// One result of a bulk get, keyed by the app's key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BulkItem {
    /// The app's key.
    pub key: String,
    /// The value, if present.
    pub value: Option<GetResponse>,
    /// The error reading this key.
    pub error: Option<String>,
}

/// One query result, keyed by the app's key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryItem {
    /// The app's key.
    pub key: String,
    /// The stored bytes.
    pub data: Bytes,
    /// The ETag.
    pub etag: Option<String>,
}

// === impl StateService ===

impl StateService {
    /// Builds the service over the loaded stores.
    pub fn new(
        app_id: &str,
        namespace: Option<&str>,
        stores: &[LoadedStateStore],
        resiliency: &crate::resiliency::Resiliency,
        metrics: Option<Arc<crate::metrics::Metrics>>,
    ) -> Self {
        let stores = stores
            .iter()
            .map(|s| {
                let prefix = key_prefix(&s.metadata, app_id, &s.info.name, namespace);
                (
                    s.info.name.clone(),
                    StoreEntry {
                        store: s.component.clone(),
                        policy: resiliency.component(
                            crate::resiliency::ComponentKind::Statestore,
                            &s.info.name,
                            crate::resiliency::Direction::Outbound,
                        ),
                        prefix,
                    },
                )
            })
            .collect();
        Self {
            app_id: app_id.to_owned(),
            stores,
            metrics,
        }
    }

    /// Runs one store operation under the component's resiliency policy (only backend
    /// failures are retried and count against its breaker) and records its metrics.
    async fn guarded<T, F, Fut>(
        &self,
        entry: &StoreEntry,
        store: &str,
        op: &'static str,
        mut call: F,
    ) -> Result<T, StateError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StateError>>,
    {
        let started = std::time::Instant::now();
        let result = crate::resiliency::component_call(
            &entry.policy,
            |e| matches!(e, StateError::Backend(_)),
            StateError::Backend,
            &mut call,
        )
        .await;
        if let Some(m) = &self.metrics {
            m.component_op(
                store,
                crate::metrics::KIND_STATE,
                op,
                !matches!(result, Err(StateError::Backend(_))),
                started.elapsed(),
            );
        }
        result
    }

    fn entry(&self, name: &str) -> Result<&StoreEntry, ApiError> {
        if self.stores.is_empty() {
            return Err(ApiError::new(
                "ERR_STATE_STORE_NOT_CONFIGURED",
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::FailedPrecondition,
                "state store is not configured",
            )
            .with_reason(
                "DAPR_STATE_NOT_CONFIGURED",
                vec![("appID", self.app_id.clone())],
            )
            .with_resource("state", name));
        }
        self.stores.get(name).ok_or_else(|| {
            ApiError::new(
                "ERR_STATE_STORE_NOT_FOUND",
                StatusCode::BAD_REQUEST,
                Code::InvalidArgument,
                format!("state store {name} is not found"),
            )
            .with_reason("DAPR_STATE_NOT_FOUND", vec![("appID", self.app_id.clone())])
            .with_resource("state", name)
        })
    }

    fn stored_key(&self, entry: &StoreEntry, store: &str, key: &str) -> Result<String, ApiError> {
        if key.is_empty() {
            return Err(ApiError::malformed("the state key is empty"));
        }
        if key.contains(KEY_SEPARATOR) {
            return Err(ApiError::malformed(format!(
                "input key/keyPrefix '{key}' can't contain '||'"
            ))
            .with_reason(
                "DAPR_STATE_ILLEGAL_KEY",
                vec![("appID", self.app_id.clone())],
            )
            .with_resource("state", store));
        }
        Ok(format!("{}{key}", entry.prefix))
    }

    /// Reads one key; `None` when absent.
    pub async fn get(
        &self,
        store: &str,
        key: &str,
        metadata: RequestMetadata,
        consistency: Consistency,
    ) -> Result<Option<GetResponse>, ApiError> {
        let entry = self.entry(store)?;
        let req = GetRequest {
            key: self.stored_key(entry, store, key)?,
            metadata,
            consistency,
        };
        self.guarded(entry, store, crate::metrics::OP_GET, || {
            entry.store.get(&req)
        })
        .await
        .map_err(|e| store_error("ERR_STATE_GET", e))
    }

    /// Reads several keys, in the order asked.
    pub async fn bulk_get(
        &self,
        store: &str,
        keys: &[String],
        metadata: &RequestMetadata,
    ) -> Result<Vec<BulkItem>, ApiError> {
        let entry = self.entry(store)?;
        let reqs = keys
            .iter()
            .map(|k| {
                Ok(GetRequest {
                    key: self.stored_key(entry, store, k)?,
                    metadata: metadata.clone(),
                    consistency: Consistency::Unspecified,
                })
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        let items = entry
            .store
            .bulk_get(&reqs)
            .await
            .map_err(|e| store_error("ERR_STATE_BULK_GET", e))?;
        Ok(keys
            .iter()
            .zip(items)
            .map(|(key, item)| match item.result {
                Ok(value) => BulkItem {
                    key: key.clone(),
                    value,
                    error: None,
                },
                Err(e) => BulkItem {
                    key: key.clone(),
                    value: None,
                    error: Some(e),
                },
            })
            .collect())
    }

    /// Saves values; stops at the first failure, as Dapr does.
    pub async fn save(&self, store: &str, items: Vec<SaveItem>) -> Result<(), ApiError> {
        let entry = self.entry(store)?;
        let reqs = items
            .into_iter()
            .map(|i| self.set_request(entry, store, i, "ERR_STATE_SAVE"))
            .collect::<Result<Vec<_>, _>>()?;
        for req in &reqs {
            self.guarded(entry, store, crate::metrics::OP_SET, || {
                entry.store.set(req)
            })
            .await
            .map_err(|e| store_error("ERR_STATE_SAVE", e))?;
        }
        Ok(())
    }

    /// Deletes one key.
    pub async fn delete(&self, store: &str, item: DeleteItem) -> Result<(), ApiError> {
        let entry = self.entry(store)?;
        let req = self.delete_request(entry, store, item)?;
        self.guarded(entry, store, crate::metrics::OP_DELETE, || {
            entry.store.delete(&req)
        })
        .await
        .map_err(|e| store_error("ERR_STATE_DELETE", e))
    }

    /// Deletes several keys.
    pub async fn bulk_delete(&self, store: &str, items: Vec<DeleteItem>) -> Result<(), ApiError> {
        let entry = self.entry(store)?;
        let reqs = items
            .into_iter()
            .map(|i| self.delete_request(entry, store, i))
            .collect::<Result<Vec<_>, _>>()?;
        for req in &reqs {
            entry
                .store
                .delete(req)
                .await
                .map_err(|e| store_error("ERR_STATE_DELETE", e))?;
        }
        Ok(())
    }

    /// Applies a transaction: every operation, in order, or none.
    pub async fn transact(&self, store: &str, ops: Vec<TxOperation>) -> Result<(), ApiError> {
        let entry = self.entry(store)?;
        if !entry.store.features().contains(&Feature::Transactional) {
            return Err(not_supported(
                store,
                "transactions",
                "DAPR_STATE_TRANSACTIONS_NOT_SUPPORTED",
            ));
        }
        let ops = ops
            .into_iter()
            .map(|op| {
                Ok(match op {
                    TxOperation::Upsert(i) => TransactionOperation::Upsert(self.set_request(
                        entry,
                        store,
                        i,
                        "ERR_STATE_TRANSACTION",
                    )?),
                    TxOperation::Delete(i) => {
                        TransactionOperation::Delete(self.delete_request(entry, store, i)?)
                    }
                })
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        self.guarded(entry, store, crate::metrics::OP_TRANSACTION, || {
            entry.store.transact(&ops)
        })
        .await
        .map_err(|e| match e {
            StateError::NotSupported(_) => not_supported(
                store,
                "transactions",
                "DAPR_STATE_TRANSACTIONS_NOT_SUPPORTED",
            ),
            e => ApiError::new(
                "ERR_STATE_TRANSACTION",
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::Internal,
                format!("error while executing state transaction: {e}"),
            ),
        })
    }

    /// Runs a query (`body` is the JSON query) and returns results with the app's keys.
    pub async fn query(
        &self,
        store: &str,
        body: &[u8],
        _metadata: &RequestMetadata,
    ) -> Result<(Vec<QueryItem>, Option<String>), ApiError> {
        let entry = self.entry(store)?;
        if !entry.store.features().contains(&Feature::QueryApi) {
            return Err(not_supported(
                store,
                "querying",
                "DAPR_STATE_QUERYING_NOT_SUPPORTED",
            ));
        }
        let mut query = Query::parse(body).map_err(|e| ApiError::malformed(e.to_string()))?;
        query.key_prefix = entry.prefix.clone();
        let res = entry.store.query(&query).await.map_err(|e| {
            ApiError::new(
                "ERR_STATE_QUERY",
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::Internal,
                format!("failed query in state store {store}: {e}"),
            )
            .with_reason(
                "DAPR_STATE_QUERY_FAILED",
                vec![("appID", self.app_id.clone())],
            )
        })?;
        let items = res
            .results
            .into_iter()
            .map(|r| QueryItem {
                key: r
                    .key
                    .strip_prefix(entry.prefix.as_str())
                    .unwrap_or(&r.key)
                    .to_owned(),
                data: r.data,
                etag: r.etag,
            })
            .collect();
        Ok((items, res.token))
    }

    fn set_request(
        &self,
        entry: &StoreEntry,
        store: &str,
        item: SaveItem,
        code: &'static str,
    ) -> Result<SetRequest, ApiError> {
        let ttl = parse_ttl(&item.metadata)
            .map_err(|m| ApiError::new(code, StatusCode::BAD_REQUEST, Code::InvalidArgument, m))?;
        Ok(SetRequest {
            key: self.stored_key(entry, store, &item.key)?,
            value: item.value,
            etag: effective_etag(item.etag, item.options.concurrency),
            concurrency: item.options.concurrency,
            ttl,
            metadata: item.metadata,
        })
    }

    fn delete_request(
        &self,
        entry: &StoreEntry,
        store: &str,
        item: DeleteItem,
    ) -> Result<DeleteRequest, ApiError> {
        Ok(DeleteRequest {
            key: self.stored_key(entry, store, &item.key)?,
            etag: effective_etag(item.etag, item.options.concurrency),
            concurrency: item.options.concurrency,
            metadata: item.metadata,
        })
    }

    /// Closes every store.
    pub async fn close(&self) {
        for (name, entry) in &self.stores {
            entry.store.close().await;
            tracing::debug!(component = %name, "State store closed");
        }
    }
}

// === impl TxOperation ===

impl TxOperation {
    /// Builds an operation from its wire name (`upsert` or `delete`).
    pub fn from_wire(kind: &str, item: SaveItem) -> Result<Self, ApiError> {
        match kind {
            "upsert" => Ok(TxOperation::Upsert(item)),
            "delete" => Ok(TxOperation::Delete(DeleteItem {
                key: item.key,
                etag: item.etag,
                metadata: item.metadata,
                options: item.options,
            })),
            other => Err(ApiError::new(
                "ERR_NOT_SUPPORTED_STATE_OPERATION",
                StatusCode::BAD_REQUEST,
                Code::Unimplemented,
                format!("operation type {other} not supported"),
            )),
        }
    }
}

/// The prefix of every key a component stores for `app_id`, from its `keyPrefix` metadata:
/// `appid` (the default) → `appId||`, `name` → `name||`, `namespace` → `namespace.appId||`,
/// `none` → nothing, anything else → `custom||`.
pub(crate) fn key_prefix(
    metadata: &mecha_core::Metadata,
    app_id: &str,
    name: &str,
    namespace: Option<&str>,
) -> String {
    match metadata.get("keyPrefix").map(str::trim) {
        None | Some("") => format!("{app_id}{KEY_SEPARATOR}"),
        Some(p) if p.eq_ignore_ascii_case("appid") => format!("{app_id}{KEY_SEPARATOR}"),
        Some(p) if p.eq_ignore_ascii_case("name") => format!("{name}{KEY_SEPARATOR}"),
        Some(p) if p.eq_ignore_ascii_case("namespace") => match namespace {
            Some(ns) => format!("{ns}.{app_id}{KEY_SEPARATOR}"),
            None => format!("{app_id}{KEY_SEPARATOR}"),
        },
        Some(p) if p.eq_ignore_ascii_case("none") => String::new(),
        Some(custom) => format!("{custom}{KEY_SEPARATOR}"),
    }
}

/// An explicit last-write request does not check the ETag; an empty ETag is no ETag.
fn effective_etag(etag: Option<String>, concurrency: Concurrency) -> Option<String> {
    etag.filter(|e| !e.is_empty() && concurrency != Concurrency::LastWrite)
}

/// Reads `ttlInSeconds`: a positive integer sets a TTL, `0` and `-1` mean none.
fn parse_ttl(metadata: &RequestMetadata) -> Result<Option<Duration>, String> {
    let Some(raw) = metadata.get(TTL_IN_SECONDS) else {
        return Ok(None);
    };
    match raw.trim().parse::<i64>() {
        Ok(n) if n > 0 => Ok(Some(Duration::from_secs(n.unsigned_abs()))),
        Ok(-1 | 0) => Ok(None),
        _ => Err(format!(
            "invalid value for metadata ttlInSeconds '{raw}': must be an integer of -1 or more"
        )),
    }
}

fn not_supported(store: &str, what: &str, reason: &'static str) -> ApiError {
    ApiError::new(
        "ERR_STATE_STORE_NOT_SUPPORTED",
        StatusCode::INTERNAL_SERVER_ERROR,
        Code::Internal,
        format!("state store {store} doesn't support {what}"),
    )
    .with_reason(reason, Vec::new())
    .with_resource("state", store)
}

/// Maps a store error on one operation to the API error of that operation.
fn store_error(code: &'static str, e: StateError) -> ApiError {
    let (http, grpc) = match &e {
        StateError::EtagMismatch => (StatusCode::CONFLICT, Code::Aborted),
        StateError::InvalidEtag(_) | StateError::BadRequest(_) => {
            (StatusCode::BAD_REQUEST, Code::InvalidArgument)
        }
        StateError::NotSupported(_) | StateError::Backend(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, Code::Internal)
        }
    };
    let verb = match code {
        "ERR_STATE_SAVE" => "failed saving state",
        "ERR_STATE_DELETE" => "failed deleting state",
        "ERR_STATE_BULK_GET" => "failed getting bulk state",
        _ => "failed getting state",
    };
    ApiError::new(code, http, grpc, format!("{verb}: {e}"))
}

#[cfg(test)]
mod tests;
