//! `state.redis` v1: a store in one Redis server (a single node), laid out as Dapr lays it out.
//!
//! Capabilities: ETAG, TRANSACTIONAL, TTL (the runtime adds ACTOR). Tested against Redis 7 on
//! `127.0.0.1:6379` (`MECHA_TEST_REDIS_URL`) and private `redis-server` processes, by the
//! `mecha-conformance` state suite and the outage checks in `tests/redis.rs`.
//!
//! Each key is a hash with the fields `data` (the bytes, verbatim) and `version` (an integer
//! starting at 1), and the version is the ETag, so values written by Dapr and by Mecha can be
//! read by either. Each write is one Lua script that checks the ETag or first-write condition,
//! writes, and sets or removes the expiry (`ttlInSeconds` of the request, else of the
//! component; Redis itself removes expired keys). A transaction is one script too: it checks
//! every operation against the state the earlier ones leave, then applies them all, so a
//! mismatch anywhere leaves nothing applied. A plain string (from an old Dapr) reads as a value
//! without an ETag. An ETag that is not an integer is refused as invalid, as Dapr does.
//!
//! Metadata: the connection keys of every Redis component (`redisHost` required,
//! `redisPort`, `redisUsername`, `redisPassword`, `redisDB`, `dialTimeout`, `readTimeout`,
//! `writeTimeout`, `maxRetries`, `maxRetryBackoff`, …; see `redis/connection.rs`), and
//! `ttlInSeconds`, the default time to live of every write. `redisType: cluster`, `failover`,
//! `sentinelMasterName` and `useEntraID` are refused; `enableTLS` connects over TLS without
//! verifying the certificate, as Dapr does; `queryIndexes` is
//! ignored with a warning (no query API). `actorStateStore` and `keyPrefix` belong to the
//! runtime.

/// The connection shared by every Redis component (`lock.redis` and `configuration.redis` too).
pub(crate) mod connection;
mod scripts;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use mecha_core::component::{ComponentError, ComponentInit, Feature};
use mecha_core::state::{
    BulkGetItem, Concurrency, DeleteRequest, GetRequest, GetResponse, SetRequest, StateError,
    StateStore, TTL_IN_SECONDS, TransactionOperation, expiry_metadata, now_millis,
};
use redis::{RedisResult, Script};

use self::connection::{CONNECTION_KEYS, ConnectionMetadata, RedisConnection};

const FEATURES: &[Feature] = &[Feature::Etag, Feature::Transactional, Feature::Ttl];
const QUERY_INDEXES: &str = "queryIndexes";
/// Keys this component reads besides the connection keys; the last two are the runtime's.
const STATE_KEYS: &[&str] = &[
    TTL_IN_SECONDS,
    QUERY_INDEXES,
    "actorStateStore",
    "keyPrefix",
];

/// What the get script answers for a present key: data, version, PTTL in milliseconds.
type StoredValue = (Vec<u8>, Option<String>, i64);

/// The `state.redis` state store.
pub struct RedisStateStore {
    redis: RedisConnection,
    /// `ttlInSeconds`: the time to live of writes whose request names none.
    default_ttl: Option<Duration>,
    get: Script,
    set: Script,
    delete_if: Script,
    transact: Script,
}

/// The validated `spec.metadata` of a `state.redis` component.
struct Metadata {
    /// The connection keys.
    connection: ConnectionMetadata,
    /// `ttlInSeconds`: a positive number of seconds; `0`, `-1` or absent mean no expiry.
    ttl_in_seconds: Option<Duration>,
}

// === impl Metadata ===

impl Metadata {
    fn parse(init: &ComponentInit) -> Result<Self, ComponentError> {
        let known: Vec<&str> = CONNECTION_KEYS.iter().chain(STATE_KEYS).copied().collect();
        init.metadata.warn_unknown(&init.name, &known);
        let connection = ConnectionMetadata::parse(init)?;
        if init
            .metadata
            .get(QUERY_INDEXES)
            .is_some_and(|v| !v.trim().is_empty())
        {
            tracing::warn!(
                component = %init.name,
                "Ignoring queryIndexes: state.redis offers no query API"
            );
        }
        let ttl_in_seconds = match init.metadata.get(TTL_IN_SECONDS).map(str::trim) {
            None | Some("") => None,
            Some(v) => match v.parse::<i64>() {
                Ok(n) if n > 0 => Some(Duration::from_secs(n.unsigned_abs())),
                Ok(-1 | 0) => None,
                _ => {
                    return Err(ComponentError::InvalidField {
                        field: TTL_IN_SECONDS,
                        reason: format!("'{v}' is not a number of seconds (or -1)"),
                    });
                }
            },
        };
        Ok(Self {
            connection,
            ttl_in_seconds,
        })
    }
}

// === impl RedisStateStore ===

impl RedisStateStore {
    /// Connects to `redisHost` and checks that it answers.
    pub async fn create(init: ComponentInit) -> Result<Arc<dyn StateStore>, ComponentError> {
        let md = Metadata::parse(&init)?;
        let redis = RedisConnection::connect(&md.connection).await?;
        Ok(Arc::new(Self {
            redis,
            default_ttl: md.ttl_in_seconds,
            get: Script::new(scripts::GET),
            set: Script::new(scripts::SET),
            delete_if: Script::new(scripts::DELETE_IF),
            transact: Script::new(scripts::TRANSACT),
        }))
    }

    /// The expiry of a write in milliseconds, `0` for none: the request's `ttlInSeconds`, or
    /// the component's when the request names none (`-1` in the request means none).
    fn ttl_millis(&self, req: &SetRequest) -> u64 {
        let ttl = match req.ttl {
            Some(ttl) => Some(ttl),
            None if req.metadata.contains_key(TTL_IN_SECONDS) => None,
            None => self.default_ttl,
        };
        ttl.map_or(0, |t| {
            u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1)
        })
    }
}

#[async_trait]
impl StateStore for RedisStateStore {
    fn features(&self) -> &[Feature] {
        FEATURES
    }

    async fn get(&self, req: &GetRequest) -> Result<Option<GetResponse>, StateError> {
        let stored: Option<StoredValue> = self
            .redis
            .call(|mut c| {
                let mut inv = self.get.prepare_invoke();
                inv.key(req.key.as_str());
                async move { inv.invoke_async(&mut c).await }
            })
            .await
            .map_err(StateError::Backend)?;
        Ok(stored.map(response))
    }

    async fn set(&self, req: &SetRequest) -> Result<(), StateError> {
        let etag = canonical_etag(req.etag.as_deref())?;
        let first_write = req.concurrency == Concurrency::FirstWrite;
        let ttl = self.ttl_millis(req);
        let version: i64 = self
            .redis
            .call(|mut c| {
                let mut inv = self.set.prepare_invoke();
                inv.key(req.key.as_str())
                    .arg(req.value.as_ref())
                    .arg(etag.as_str())
                    .arg(if first_write { "1" } else { "0" })
                    .arg(ttl);
                async move { inv.invoke_async(&mut c).await }
            })
            .await
            .map_err(StateError::Backend)?;
        if version < 0 {
            return Err(StateError::EtagMismatch);
        }
        Ok(())
    }

    async fn delete(&self, req: &DeleteRequest) -> Result<(), StateError> {
        let etag = canonical_etag(req.etag.as_deref())?;
        if etag.is_empty() {
            return self
                .redis
                .call(|mut c| async move {
                    redis::cmd("DEL")
                        .arg(req.key.as_str())
                        .query_async::<()>(&mut c)
                        .await
                })
                .await
                .map_err(StateError::Backend);
        }
        let deleted: i64 = self
            .redis
            .call(|mut c| {
                let mut inv = self.delete_if.prepare_invoke();
                inv.key(req.key.as_str()).arg(etag.as_str());
                async move { inv.invoke_async(&mut c).await }
            })
            .await
            .map_err(StateError::Backend)?;
        if deleted < 0 {
            return Err(StateError::EtagMismatch);
        }
        Ok(())
    }

    async fn bulk_get(&self, reqs: &[GetRequest]) -> Result<Vec<BulkGetItem>, StateError> {
        if reqs.is_empty() {
            return Ok(Vec::new());
        }
        // One pipeline: every read in one round trip, each answered on its own.
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for r in reqs {
            pipe.cmd("EVAL")
                .arg(scripts::GET)
                .arg(1)
                .arg(r.key.as_str());
        }
        let results: Vec<RedisResult<Option<StoredValue>>> = self
            .redis
            .call(|mut c| {
                let pipe = &pipe;
                async move { pipe.query_async(&mut c).await }
            })
            .await
            .map_err(StateError::Backend)?;
        Ok(reqs
            .iter()
            .zip(results)
            .map(|(r, res)| BulkGetItem {
                key: r.key.clone(),
                result: res.map(|v| v.map(response)).map_err(|e| e.to_string()),
            })
            .collect())
    }

    async fn transact(&self, ops: &[TransactionOperation]) -> Result<(), StateError> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut args: Vec<[Vec<u8>; scripts::TRANSACT_ARGS]> = Vec::with_capacity(ops.len());
        for op in ops {
            args.push(match op {
                TransactionOperation::Upsert(r) => [
                    b"s".to_vec(),
                    r.value.to_vec(),
                    canonical_etag(r.etag.as_deref())?.into_bytes(),
                    flag(r.concurrency == Concurrency::FirstWrite),
                    self.ttl_millis(r).to_string().into_bytes(),
                ],
                TransactionOperation::Delete(r) => [
                    b"d".to_vec(),
                    Vec::new(),
                    canonical_etag(r.etag.as_deref())?.into_bytes(),
                    flag(false),
                    b"0".to_vec(),
                ],
            });
        }
        let answer: i64 = self
            .redis
            .call(|mut c| {
                let mut inv = self.transact.prepare_invoke();
                for (op, op_args) in ops.iter().zip(&args) {
                    inv.key(op_key(op));
                    for a in op_args {
                        inv.arg(a.as_slice());
                    }
                }
                async move { inv.invoke_async(&mut c).await }
            })
            .await
            .map_err(StateError::Backend)?;
        if answer < 0 {
            return Err(StateError::EtagMismatch);
        }
        Ok(())
    }
}

/// A stored value as a response, with `ttlExpireTime` when it expires.
fn response((data, version, pttl): StoredValue) -> GetResponse {
    GetResponse {
        data: Bytes::from(data),
        etag: version,
        metadata: expiry_metadata((pttl > 0).then(|| now_millis().saturating_add(pttl))),
    }
}

/// The ETag as the scripts compare it (`""` for none): versions are integers, so anything else
/// can never match and is refused as invalid, as Dapr does.
fn canonical_etag(etag: Option<&str>) -> Result<String, StateError> {
    match etag {
        None => Ok(String::new()),
        Some(e) => e
            .trim()
            .parse::<i64>()
            .map(|v| v.to_string())
            .map_err(|_| StateError::InvalidEtag(e.to_owned())),
    }
}

fn flag(on: bool) -> Vec<u8> {
    if on { b"1".to_vec() } else { b"0".to_vec() }
}

fn op_key(op: &TransactionOperation) -> &str {
    match op {
        TransactionOperation::Upsert(r) => &r.key,
        TransactionOperation::Delete(r) => &r.key,
    }
}
