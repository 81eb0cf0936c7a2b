//! The state building block's component contract: [`StateStore`] and its requests.
//!
//! Stores see keys already prefixed and requests already validated by the runtime's state
//! service. The contract, which the conformance suite checks, is:
//!
//! * `set` with an ETag writes only if the stored ETag equals it (an absent key never matches);
//!   without an ETag but with [`Concurrency::FirstWrite`] it writes only if the key is absent;
//!   otherwise it overwrites. Each successful write gives the value a new ETag.
//! * `delete` with an ETag removes only a value with that ETag; without one it removes the key
//!   if present and succeeds if absent.
//! * A value whose TTL has passed is never returned.
//! * `transact` applies all operations in order, or none of them.

mod query;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;

use crate::component::Feature;

pub use query::{Query, QueryError, QueryFilter, QueryResponse, QueryResult, SortOrder};

/// Metadata key with a value's time to live in seconds.
pub const TTL_IN_SECONDS: &str = "ttlInSeconds";
/// Response metadata key with the RFC 3339 expiry time of a value that has a TTL.
pub const TTL_EXPIRE_TIME: &str = "ttlExpireTime";

/// Per-request metadata (`metadata.*` query parameters or the gRPC `metadata` map).
pub type RequestMetadata = HashMap<String, String>;

/// A key/value store.
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// The capabilities this store offers.
    fn features(&self) -> &[Feature];

    /// Reads one key; `None` when it is absent or expired.
    async fn get(&self, req: &GetRequest) -> Result<Option<GetResponse>, StateError>;

    /// Writes one key, honouring ETag, first-write and TTL.
    async fn set(&self, req: &SetRequest) -> Result<(), StateError>;

    /// Deletes one key, honouring the ETag.
    async fn delete(&self, req: &DeleteRequest) -> Result<(), StateError>;

    /// Reads several keys; the default reads them one by one.
    async fn bulk_get(&self, reqs: &[GetRequest]) -> Result<Vec<BulkGetItem>, StateError> {
        let mut out = Vec::with_capacity(reqs.len());
        for r in reqs {
            out.push(match self.get(r).await {
                Ok(v) => BulkGetItem {
                    key: r.key.clone(),
                    result: Ok(v),
                },
                Err(e) => BulkGetItem {
                    key: r.key.clone(),
                    result: Err(e.to_string()),
                },
            });
        }
        Ok(out)
    }

    /// Applies upserts and deletes atomically, in order.
    async fn transact(&self, _ops: &[TransactionOperation]) -> Result<(), StateError> {
        Err(StateError::NotSupported("transactions"))
    }

    /// Runs a query over the JSON values whose keys start with `query.key_prefix`.
    async fn query(&self, _query: &Query) -> Result<QueryResponse, StateError> {
        Err(StateError::NotSupported("query"))
    }

    /// Releases connections and background tasks.
    async fn close(&self) {}
}

/// How concurrent writers are arbitrated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Concurrency {
    /// Last write wins; the ETag, if any, is not checked.
    #[default]
    Unspecified,
    /// The first write wins: an ETag must match, or the key must be absent.
    FirstWrite,
    /// The last write wins.
    LastWrite,
}

/// Read consistency; accepted and passed on, stores may ignore it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Consistency {
    /// Not stated.
    #[default]
    Unspecified,
    /// Eventual consistency.
    Eventual,
    /// Strong consistency.
    Strong,
}

/// A read of one key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GetRequest {
    /// The stored (prefixed) key.
    pub key: String,
    /// Per-request metadata.
    pub metadata: RequestMetadata,
    /// Requested consistency.
    pub consistency: Consistency,
}

/// A value that was read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GetResponse {
    /// The stored bytes, verbatim.
    pub data: Bytes,
    /// The value's ETag.
    pub etag: Option<String>,
    /// Response metadata, e.g. [`TTL_EXPIRE_TIME`].
    pub metadata: RequestMetadata,
}

/// A write of one key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetRequest {
    /// The stored (prefixed) key.
    pub key: String,
    /// The bytes to store.
    pub value: Bytes,
    /// The ETag the stored value must have, if any.
    pub etag: Option<String>,
    /// Concurrency mode.
    pub concurrency: Concurrency,
    /// Time to live; `None` means the value never expires.
    pub ttl: Option<Duration>,
    /// Per-request metadata.
    pub metadata: RequestMetadata,
}

/// A delete of one key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRequest {
    /// The stored (prefixed) key.
    pub key: String,
    /// The ETag the stored value must have, if any.
    pub etag: Option<String>,
    /// Concurrency mode.
    pub concurrency: Concurrency,
    /// Per-request metadata.
    pub metadata: RequestMetadata,
}

/// One operation of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransactionOperation {
    /// Insert or update.
    Upsert(SetRequest),
    /// Delete.
    Delete(DeleteRequest),
}

/// One item of a bulk read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BulkGetItem {
    /// The stored (prefixed) key.
    pub key: String,
    /// The value, `None` when absent, or the error reading this key.
    pub result: Result<Option<GetResponse>, String>,
}

/// An error from a state store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The ETag did not match the stored value (or the key was absent).
    #[error("possible etag mismatch: the stored value has another etag or does not exist")]
    EtagMismatch,
    /// The ETag is not one this store could have produced.
    #[error("invalid etag value: {0}")]
    InvalidEtag(String),
    /// The store does not support the operation.
    #[error("the store does not support {0}")]
    NotSupported(&'static str),
    /// The request is invalid for this store.
    #[error("{0}")]
    BadRequest(String),
    /// The backing server failed or is unreachable.
    #[error("{0}")]
    Backend(String),
}

/// The expiry time of a value written now with `ttl`, in milliseconds since the Unix epoch.
pub fn expiry_millis(ttl: Option<Duration>) -> Option<i64> {
    ttl.map(|t| now_millis().saturating_add(i64::try_from(t.as_millis()).unwrap_or(i64::MAX)))
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Formats milliseconds since the Unix epoch as RFC 3339 in UTC (`2026-01-02T03:04:05Z`).
pub fn rfc3339_millis(millis: i64) -> String {
    let secs = millis.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60
    )
}

/// Response metadata for a value that expires at `expires_at` (ms since epoch), if any.
pub fn expiry_metadata(expires_at: Option<i64>) -> RequestMetadata {
    let mut m = RequestMetadata::new();
    if let Some(at) = expires_at {
        m.insert(TTL_EXPIRE_TIME.to_owned(), rfc3339_millis(at));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_millis(1_709_251_199_000), "2024-02-29T23:59:59Z");
        assert_eq!(rfc3339_millis(1_798_761_600_000), "2027-01-01T00:00:00Z");
    }
}
