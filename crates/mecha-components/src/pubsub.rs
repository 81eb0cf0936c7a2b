//! Pub/sub brokers and their registration table.

pub mod in_memory;
#[cfg(feature = "pubsub-jetstream")]
pub mod jetstream;
#[cfg(feature = "pubsub-mqtt3")]
pub mod mqtt3;
#[cfg(feature = "pubsub-rabbitmq")]
pub mod rabbitmq;
#[cfg(feature = "pubsub-redis")]
pub mod redis;
#[cfg(feature = "pubsub-sqlite")]
pub mod sqlite;

use mecha_core::pubsub::PubSub;

use crate::register;
use crate::registry::Registration;

/// Every broker this build contains.
pub static REGISTRY: &[Registration<dyn PubSub>] = &[
    register!("pubsub.in-memory", "v1", in_memory::InMemoryPubSub),
    #[cfg(feature = "pubsub-jetstream")]
    register!("pubsub.jetstream", "v1", jetstream::JetStreamPubSub),
    #[cfg(feature = "pubsub-mqtt3")]
    register!("pubsub.mqtt3", "v1", mqtt3::MqttPubSub),
    #[cfg(feature = "pubsub-rabbitmq")]
    register!("pubsub.rabbitmq", "v1", rabbitmq::RabbitMqPubSub),
    #[cfg(feature = "pubsub-redis")]
    register!("pubsub.redis", "v1", redis::RedisPubSub),
    #[cfg(feature = "pubsub-sqlite")]
    register!("pubsub.sqlite", "v1", sqlite::SqlitePubSub),
];
