//! The state store suite: what every [`StateStore`] MUST do, as Dapr defines it.
//!
//! [`run`] calls every check, each on a store from the factory, skipping the checks of
//! capabilities the store does not declare (ETag, transactions, TTL, query). Each check is
//! also a public function taking `&dyn StateStore`, so a store's tests can call them one by
//! one. Checks write only fresh random keys (`mecha-conformance-<check>-<uuid>`), so a store
//! may be shared between checks and with other tests. A failing check panics with a message
//! naming it.

mod basic;
mod etag;
mod query;
mod transaction;
mod ttl;

use std::fmt::{Debug, Display};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mecha_core::component::Feature;
use mecha_core::state::{GetRequest, GetResponse, SetRequest, StateError, StateStore};

pub use basic::{
    bulk_get, delete, delete_absent_key, get_absent_key, overwrite, set_and_get_value_types,
};
pub use etag::{
    concurrent_etag_writes, delete_with_etag_on_absent_key, delete_with_matching_etag,
    delete_with_stale_etag, etag_changes_on_every_write, first_write, set_with_etag_on_absent_key,
    set_with_matching_etag, set_with_stale_etag,
};
pub use query::{query_filters, query_key_prefix, query_paging, query_sort};
pub use transaction::{transaction_all_or_nothing, transaction_order};
pub use ttl::ttl_expiry;

/// The longest any one check may take before the suite reports it as hung.
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs every check that applies to the store's declared features, in a fixed order.
///
/// `factory` is called once per check; it may return a fresh store or the same one.
///
/// # Panics
///
/// On the first failing check, with a message naming it; also when a check takes longer
/// than a minute.
pub async fn run<F, Fut>(factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn StateStore>>,
{
    macro_rules! checks {
        ($($check:ident),+ $(,)?) => {$(
            let store = factory().await;
            if tokio::time::timeout(CHECK_TIMEOUT, $check(&*store)).await.is_err() {
                panic!("state conformance check `{}` timed out", stringify!($check));
            }
        )+};
    }
    let features = factory().await.features().to_vec();
    checks!(
        set_and_get_value_types,
        get_absent_key,
        overwrite,
        delete,
        delete_absent_key,
        bulk_get,
    );
    if features.contains(&Feature::Etag) {
        checks!(
            etag_changes_on_every_write,
            set_with_stale_etag,
            set_with_matching_etag,
            set_with_etag_on_absent_key,
            delete_with_stale_etag,
            delete_with_matching_etag,
            delete_with_etag_on_absent_key,
            first_write,
            concurrent_etag_writes,
        );
    }
    if features.contains(&Feature::Transactional) {
        checks!(transaction_order);
        if features.contains(&Feature::Etag) {
            checks!(transaction_all_or_nothing);
        }
    }
    if features.contains(&Feature::Ttl) {
        checks!(ttl_expiry);
    }
    if features.contains(&Feature::QueryApi) {
        checks!(query_filters, query_sort, query_paging, query_key_prefix);
    }
}

/// A fresh key no other run uses: `mecha-conformance-<tag>-<uuid>`.
fn fresh_key(tag: &str) -> String {
    format!("mecha-conformance-{tag}-{}", uuid::Uuid::new_v4())
}

/// A plain write of `value` to `key`.
fn set_request(key: &str, value: impl Into<Bytes>) -> SetRequest {
    SetRequest {
        key: key.to_owned(),
        value: value.into(),
        ..SetRequest::default()
    }
}

/// The check being run: names it in every failure.
struct Check {
    name: &'static str,
}

// === impl Check ===

impl Check {
    const fn new(name: &'static str) -> Self {
        Self { name }
    }

    fn fail(&self, message: impl Display) -> ! {
        panic!("state conformance check `{}` failed: {message}", self.name)
    }

    /// The value of `result`, failing when it is an error.
    fn ok<T>(&self, result: Result<T, StateError>, what: &str) -> T {
        result.unwrap_or_else(|e| self.fail(format!("{what}: unexpected error: {e:?}")))
    }

    fn eq<T: PartialEq + Debug>(&self, got: T, want: T, what: &str) {
        if got != want {
            self.fail(format!("{what}: got {got:?}, want {want:?}"));
        }
    }

    /// Fails unless `result` is [`StateError::EtagMismatch`].
    fn mismatch<T: Debug>(&self, result: Result<T, StateError>, what: &str) {
        match result {
            Err(StateError::EtagMismatch) => {}
            other => self.fail(format!("{what}: got {other:?}, want Err(EtagMismatch)")),
        }
    }

    async fn set(&self, store: &dyn StateStore, key: &str, value: impl Into<Bytes>) {
        let what = format!("set {key}");
        self.ok(store.set(&set_request(key, value)).await, &what);
    }

    async fn get(&self, store: &dyn StateStore, key: &str) -> Option<GetResponse> {
        let req = GetRequest {
            key: key.to_owned(),
            ..GetRequest::default()
        };
        self.ok(store.get(&req).await, &format!("get {key}"))
    }

    /// The stored bytes of `key`, failing when it is absent.
    async fn data(&self, store: &dyn StateStore, key: &str) -> Bytes {
        match self.get(store, key).await {
            Some(r) => r.data,
            None => self.fail(format!("get {key}: absent, want a value")),
        }
    }

    /// The ETag of `key`, failing when it is absent or has none.
    async fn etag(&self, store: &dyn StateStore, key: &str) -> String {
        match self.get(store, key).await {
            Some(GetResponse {
                etag: Some(etag), ..
            }) => etag,
            Some(_) => self.fail(format!("get {key}: no etag from a store declaring ETAG")),
            None => self.fail(format!("get {key}: absent, want a value")),
        }
    }

    async fn absent(&self, store: &dyn StateStore, key: &str, what: &str) {
        if let Some(r) = self.get(store, key).await {
            self.fail(format!("{what}: {key} holds {:?}, want it absent", r.data));
        }
    }

    /// Writes `key` twice and returns the now stale ETag of the first write.
    async fn stale_etag(&self, store: &dyn StateStore, key: &str) -> String {
        self.set(store, key, "first").await;
        let stale = self.etag(store, key).await;
        self.set(store, key, "second").await;
        stale
    }
}
