//! State stores and their registration table.

pub mod in_memory;
#[cfg(feature = "state-mysql")]
pub mod mysql;
#[cfg(feature = "state-postgresql")]
pub mod postgresql;
#[cfg(feature = "state-redis")]
pub mod redis;
#[cfg(any(
    feature = "state-sqlite",
    feature = "state-postgresql",
    feature = "state-mysql"
))]
mod shared;
#[cfg(feature = "state-sqlite")]
pub mod sqlite;

use mecha_core::state::StateStore;

use crate::register;
use crate::registry::Registration;

/// Every state store this build contains.
pub static REGISTRY: &[Registration<dyn StateStore>] = &[
    register!("state.in-memory", "v1", in_memory::InMemoryStateStore),
    #[cfg(feature = "state-sqlite")]
    register!("state.sqlite", "v1", sqlite::SqliteStateStore),
    #[cfg(feature = "state-redis")]
    register!("state.redis", "v1", redis::RedisStateStore),
    #[cfg(feature = "state-postgresql")]
    register!("state.postgresql", "v1", postgresql::PostgresStateStore),
    #[cfg(feature = "state-postgresql")]
    register!("state.postgresql", "v2", postgresql::PostgresStateStore),
    #[cfg(feature = "state-mysql")]
    register!("state.mysql", "v1", mysql::MySqlStateStore),
];
