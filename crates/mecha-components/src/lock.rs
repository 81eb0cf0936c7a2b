//! Lock stores and their registration table.

#[cfg(feature = "lock-postgresql")]
pub mod postgresql;
#[cfg(feature = "lock-redis")]
pub mod redis;
#[cfg(feature = "lock-sqlite")]
pub mod sqlite;

use mecha_core::lock::LockStore;

#[allow(unused_imports)]
use crate::register;
use crate::registry::Registration;

/// Every lock store this build contains.
pub static REGISTRY: &[Registration<dyn LockStore>] = &[
    #[cfg(feature = "lock-redis")]
    register!("lock.redis", "v1", redis::RedisLockStore),
    #[cfg(feature = "lock-sqlite")]
    register!("lock.sqlite", "v1", sqlite::SqliteLockStore),
    #[cfg(feature = "lock-postgresql")]
    register!("lock.postgresql", "v1", postgresql::PostgresLockStore),
];
