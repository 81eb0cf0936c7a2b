//! Configuration stores and their registration table.

#[cfg(feature = "configuration-postgresql")]
pub mod postgresql;
#[cfg(feature = "configuration-redis")]
pub mod redis;

use mecha_core::configuration::ConfigurationStore;

#[allow(unused_imports)]
use crate::register;
use crate::registry::Registration;

/// Every configuration store this build contains.
pub static REGISTRY: &[Registration<dyn ConfigurationStore>] = &[
    #[cfg(feature = "configuration-redis")]
    register!("configuration.redis", "v1", redis::RedisConfigurationStore),
    #[cfg(feature = "configuration-postgresql")]
    register!(
        "configuration.postgresql",
        "v1",
        postgresql::PostgresConfigurationStore
    ),
    #[cfg(feature = "configuration-postgresql")]
    register!(
        "configuration.postgres",
        "v1",
        postgresql::PostgresConfigurationStore
    ),
];
