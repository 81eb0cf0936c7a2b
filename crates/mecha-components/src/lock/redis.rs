//! `lock.redis` v1: expiring locks in one Redis server (a single node), as Dapr's standalone
//! Redis lock keeps them.
//!
//! Tested against Redis 7 on `127.0.0.1:6379` (`MECHA_TEST_REDIS_URL`) by the
//! `mecha-conformance` lock suite and `tests/redis.rs`.
//!
//! A lock is the string key `resourceId` holding the owner, taken with
//! `SET key owner NX PX expiry`, so Redis drops it when it expires. Unlocking is one Lua
//! script: a missing key is `LockDoesNotExist`, another owner is `LockBelongsToOthers`, else
//! the key is deleted. Replicas are not checked: a failover may lose a lock, as with Dapr.
//!
//! Metadata: the connection keys of every Redis component (`redisHost` required,
//! `redisPort`, `redisUsername`, `redisPassword`, `redisDB`, `dialTimeout`, `readTimeout`,
//! `writeTimeout`, `maxRetries`, `maxRetryBackoff`, …; see `state/redis/connection.rs`).
//! `redisType: cluster`, `failover`, `sentinelMasterName`, `useEntraID` and are refused.

use crate::state::redis::connection;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mecha_core::component::{ComponentError, ComponentInit};
use mecha_core::lock::{LockError, LockStore, UnlockStatus};
use redis::Script;

use connection::{CONNECTION_KEYS, ConnectionMetadata, RedisConnection};

/// `KEYS[1]`, `ARGV[1]`: the owner → -1 when absent, -2 when held by another, else 1.
const UNLOCK: &str = r#"
local v = redis.call("GET", KEYS[1])
if not v then return -1 end
if v ~= ARGV[1] then return -2 end
return redis.call("DEL", KEYS[1])
"#;

/// The `lock.redis` lock store.
pub struct RedisLockStore {
    redis: RedisConnection,
    unlock: Script,
}

// === impl RedisLockStore ===

impl RedisLockStore {
    /// Connects to `redisHost` and checks that it answers.
    pub async fn create(init: ComponentInit) -> Result<Arc<dyn LockStore>, ComponentError> {
        init.metadata.warn_unknown(&init.name, CONNECTION_KEYS);
        let md = ConnectionMetadata::parse(&init)?;
        let redis = RedisConnection::connect(&md).await?;
        Ok(Arc::new(Self {
            redis,
            unlock: Script::new(UNLOCK),
        }))
    }
}

#[async_trait]
impl LockStore for RedisLockStore {
    async fn try_lock(
        &self,
        resource_id: &str,
        owner: &str,
        expiry: Duration,
    ) -> Result<bool, LockError> {
        let millis = u64::try_from(expiry.as_millis()).unwrap_or(u64::MAX).max(1);
        let set: Option<String> = self
            .redis
            .call(|mut c| async move {
                redis::cmd("SET")
                    .arg(resource_id)
                    .arg(owner)
                    .arg("NX")
                    .arg("PX")
                    .arg(millis)
                    .query_async(&mut c)
                    .await
            })
            .await
            .map_err(LockError)?;
        Ok(set.is_some())
    }

    async fn unlock(&self, resource_id: &str, owner: &str) -> Result<UnlockStatus, LockError> {
        let answer: i64 = self
            .redis
            .call(|mut c| {
                let mut inv = self.unlock.prepare_invoke();
                inv.key(resource_id).arg(owner);
                async move { inv.invoke_async(&mut c).await }
            })
            .await
            .map_err(LockError)?;
        Ok(match answer {
            -1 => UnlockStatus::LockDoesNotExist,
            -2 => UnlockStatus::LockBelongsToOthers,
            _ => UnlockStatus::Success,
        })
    }
}
