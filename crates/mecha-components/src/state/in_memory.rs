//! `state.in-memory` v1: a process-local store, for tests and throwaway work.
//!
//! Capabilities: ETAG, TRANSACTIONAL, TTL, QUERY_API. Values are lost when the sidecar stops.
//! ETags are decimal numbers drawn from one counter per store, so an ETag is never reused; an
//! ETag this store could not have produced simply does not match.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use mecha_core::component::{ComponentError, ComponentInit, Feature};
use mecha_core::state::{
    BulkGetItem, DeleteRequest, GetRequest, GetResponse, Query, QueryResponse, SetRequest,
    StateError, StateStore, TransactionOperation, expiry_metadata, expiry_millis, now_millis,
};

const FEATURES: &[Feature] = &[
    Feature::Etag,
    Feature::Transactional,
    Feature::Ttl,
    Feature::QueryApi,
];
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// The in-memory state store.
pub struct InMemoryStateStore {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    items: HashMap<String, Entry>,
    next_etag: u64,
}

struct Entry {
    data: Bytes,
    etag: u64,
    expires_at: Option<i64>,
}

// === impl InMemoryStateStore ===

impl InMemoryStateStore {
    /// Creates the store and starts its expiry sweeper.
    pub async fn create(init: ComponentInit) -> Result<Arc<dyn StateStore>, ComponentError> {
        init.metadata
            .warn_unknown(&init.name, &["actorStateStore", "keyPrefix"]);
        let store = Arc::new(Self {
            inner: RwLock::new(Inner::default()),
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(sweep(Arc::downgrade(&store)));
        }
        Ok(store)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }
}

async fn sweep(store: Weak<InMemoryStateStore>) {
    loop {
        tokio::time::sleep(SWEEP_INTERVAL).await;
        let Some(store) = store.upgrade() else { return };
        let now = now_millis();
        store
            .write()
            .items
            .retain(|_, e| e.expires_at.is_none_or(|at| at > now));
    }
}

/// Whether `etag` names the version `current`.
fn etag_matches(etag: &str, current: u64) -> bool {
    etag.parse::<u64>().is_ok_and(|e| e == current)
}

// === impl Inner ===

impl Inner {
    fn live(&self, key: &str, now: i64) -> Option<&Entry> {
        self.items
            .get(key)
            .filter(|e| e.expires_at.is_none_or(|at| at > now))
    }

    fn check_set(&self, req: &SetRequest, now: i64) -> Result<(), StateError> {
        let current = self.live(&req.key, now);
        match (&req.etag, current) {
            (Some(etag), Some(e)) if etag_matches(etag, e.etag) => Ok(()),
            (Some(_), _) => Err(StateError::EtagMismatch),
            (None, Some(_)) if req.concurrency == mecha_core::state::Concurrency::FirstWrite => {
                Err(StateError::EtagMismatch)
            }
            (None, _) => Ok(()),
        }
    }

    fn check_delete(&self, req: &DeleteRequest, now: i64) -> Result<(), StateError> {
        match (&req.etag, self.live(&req.key, now)) {
            (Some(etag), Some(e)) if etag_matches(etag, e.etag) => Ok(()),
            (Some(_), _) => Err(StateError::EtagMismatch),
            (None, _) => Ok(()),
        }
    }

    fn apply_set(&mut self, req: &SetRequest) {
        self.next_etag += 1;
        let entry = Entry {
            data: req.value.clone(),
            etag: self.next_etag,
            expires_at: expiry_millis(req.ttl),
        };
        self.items.insert(req.key.clone(), entry);
    }

    fn get(&self, key: &str, now: i64) -> Option<GetResponse> {
        self.live(key, now).map(|e| GetResponse {
            data: e.data.clone(),
            etag: Some(e.etag.to_string()),
            metadata: expiry_metadata(e.expires_at),
        })
    }
}

#[async_trait]
impl StateStore for InMemoryStateStore {
    fn features(&self) -> &[Feature] {
        FEATURES
    }

    async fn get(&self, req: &GetRequest) -> Result<Option<GetResponse>, StateError> {
        Ok(self.read().get(&req.key, now_millis()))
    }

    async fn set(&self, req: &SetRequest) -> Result<(), StateError> {
        let mut inner = self.write();
        inner.check_set(req, now_millis())?;
        inner.apply_set(req);
        Ok(())
    }

    async fn delete(&self, req: &DeleteRequest) -> Result<(), StateError> {
        let mut inner = self.write();
        inner.check_delete(req, now_millis())?;
        inner.items.remove(&req.key);
        Ok(())
    }

    async fn bulk_get(&self, reqs: &[GetRequest]) -> Result<Vec<BulkGetItem>, StateError> {
        let inner = self.read();
        let now = now_millis();
        Ok(reqs
            .iter()
            .map(|r| BulkGetItem {
                key: r.key.clone(),
                result: Ok(inner.get(&r.key, now)),
            })
            .collect())
    }

    async fn transact(&self, ops: &[TransactionOperation]) -> Result<(), StateError> {
        let mut inner = self.write();
        let now = now_millis();
        // Check every operation against the state the earlier ones leave behind, on a scratch
        // copy of the touched keys, so that a failure leaves the store untouched.
        let mut scratch = Inner {
            items: HashMap::new(),
            next_etag: inner.next_etag,
        };
        for op in ops {
            let key = match op {
                TransactionOperation::Upsert(r) => &r.key,
                TransactionOperation::Delete(r) => &r.key,
            };
            if !scratch.items.contains_key(key)
                && let Some(e) = inner.live(key, now)
            {
                let copy = Entry {
                    data: e.data.clone(),
                    etag: e.etag,
                    expires_at: e.expires_at,
                };
                scratch.items.insert(key.clone(), copy);
            }
        }
        let mut deleted = Vec::new();
        for op in ops {
            match op {
                TransactionOperation::Upsert(r) => {
                    scratch.check_set(r, now)?;
                    scratch.apply_set(r);
                    deleted.retain(|k| k != &r.key);
                }
                TransactionOperation::Delete(r) => {
                    scratch.check_delete(r, now)?;
                    scratch.items.remove(&r.key);
                    deleted.push(r.key.clone());
                }
            }
        }
        inner.next_etag = scratch.next_etag;
        for key in deleted {
            inner.items.remove(&key);
        }
        inner.items.extend(scratch.items);
        Ok(())
    }

    async fn query(&self, query: &Query) -> Result<QueryResponse, StateError> {
        let rows: Vec<_> = {
            let inner = self.read();
            let now = now_millis();
            inner
                .items
                .iter()
                .filter(|(k, e)| {
                    k.starts_with(&query.key_prefix) && e.expires_at.is_none_or(|at| at > now)
                })
                .map(|(k, e)| (k.clone(), e.data.clone(), Some(e.etag.to_string())))
                .collect()
        };
        query
            .evaluate(rows)
            .map_err(|e| StateError::BadRequest(e.to_string()))
    }
}
