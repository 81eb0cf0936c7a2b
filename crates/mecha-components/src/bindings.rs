//! Bindings (input and output) and their registration table.

#[cfg(feature = "bindings-cron")]
pub mod cron;
#[cfg(feature = "bindings-http")]
pub mod http;
#[cfg(feature = "bindings-localstorage")]
pub mod localstorage;
#[cfg(feature = "bindings-mqtt3")]
pub mod mqtt3;
#[cfg(feature = "bindings-mysql")]
pub mod mysql;
#[cfg(feature = "bindings-postgresql")]
pub mod postgresql;
#[cfg(feature = "bindings-rabbitmq")]
pub mod rabbitmq;
#[cfg(feature = "bindings-redis")]
pub mod redis;
#[cfg(any(feature = "bindings-mysql", feature = "bindings-postgresql"))]
mod sql;

use mecha_core::bindings::BindingComponent;

#[allow(unused_imports)]
use crate::register;
use crate::registry::Registration;

/// Every binding this build contains.
pub static REGISTRY: &[Registration<BindingComponent>] = &[
    #[cfg(feature = "bindings-cron")]
    register!("bindings.cron", "v1", cron::CronBinding),
    #[cfg(feature = "bindings-http")]
    register!("bindings.http", "v1", http::HttpBinding),
    #[cfg(feature = "bindings-localstorage")]
    register!(
        "bindings.localstorage",
        "v1",
        localstorage::LocalStorageBinding
    ),
    #[cfg(feature = "bindings-mqtt3")]
    register!("bindings.mqtt3", "v1", mqtt3::MqttBinding),
    #[cfg(feature = "bindings-mysql")]
    register!("bindings.mysql", "v1", mysql::MySqlBinding),
    #[cfg(feature = "bindings-postgresql")]
    register!("bindings.postgresql", "v1", postgresql::PostgresBinding),
    #[cfg(feature = "bindings-postgresql")]
    register!("bindings.postgres", "v1", postgresql::PostgresBinding),
    #[cfg(feature = "bindings-rabbitmq")]
    register!("bindings.rabbitmq", "v1", rabbitmq::RabbitMqBinding),
    #[cfg(feature = "bindings-redis")]
    register!("bindings.redis", "v1", redis::RedisBinding),
];
