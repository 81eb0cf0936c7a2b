//! `configuration.redis` v1: configuration items as plain Redis strings, watched through
//! keyspace notifications, as Dapr keeps them.
//!
//! Tested against Redis 7 on `127.0.0.1:6379` (`MECHA_TEST_REDIS_URL`) and private
//! `redis-server` processes, by the `mecha-conformance` configuration suite and
//! `tests/redis.rs`.
//!
//! An item is the string key `key` holding `value||version` (`value` alone has the version
//! `""`). `get` reads the given keys with one `MGET`, or every string key (`SCAN`) when none
//! are given. `subscribe` makes sure the server publishes keyspace events
//! (`notify-keyspace-events` gains `KEA`; a server that refuses `CONFIG SET` is warned about
//! and used as it is), subscribes to `__keyspace@<db>__:<key>` for each key (or the pattern
//! `__keyspace@<db>__:*`) on a connection of its own, and reads the key again on each event: a
//! deleted or expired key yields an empty value and version. If that connection drops, the
//! stream reconnects and yields the watched keys' current values, so no change is lost.
//! Dropping the stream closes its connection.
//!
//! Metadata: the connection keys of every Redis component (`redisHost` required,
//! `redisPort`, `redisUsername`, `redisPassword`, `redisDB`, `dialTimeout`, `readTimeout`,
//! `writeTimeout`, `maxRetries`, `maxRetryBackoff`, …; see `state/redis/connection.rs`).
//! `redisType: cluster`, `failover`, `sentinelMasterName`, `useEntraID` and are refused.

use crate::state::redis::connection;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use mecha_core::component::{ComponentError, ComponentInit};
use mecha_core::configuration::{
    ConfigurationError, ConfigurationItem, ConfigurationStore, ConfigurationUpdate,
    ConfigurationUpdates,
};
use mecha_core::state::RequestMetadata;
use redis::aio::PubSubStream;
use redis::{Client, Msg, ProtocolVersion, RedisResult};

use connection::{CONNECTION_KEYS, ConnectionMetadata, RedisConnection};

/// Separates the value from its version in a stored item.
const SEPARATOR: &str = "||";
/// The server setting that enables keyspace notifications.
const NOTIFY_KEYSPACE_EVENTS: &str = "notify-keyspace-events";
/// The notification classes a watch needs: keyspace events (`K`), keyevent events (`E`) and
/// all commands (`A`), as Dapr sets them.
const NEEDED_EVENTS: &str = "KEA";
/// Keys per `MGET` when reading every key.
const MGET_CHUNK: usize = 500;
/// The keyspace events after which a key is gone.
const REMOVAL_EVENTS: &[&str] = &["del", "expired", "evicted", "rename_from", "move_from"];
/// The longest pause between attempts to re-open a dropped watch.
const MAX_RESUBSCRIBE_PAUSE: Duration = Duration::from_secs(5);

/// The `configuration.redis` configuration store.
pub struct RedisConfigurationStore {
    redis: RedisConnection,
    /// Dedicated pubsub connections speak RESP2, which `redis::aio::PubSub` expects.
    pubsub_client: Client,
    db: i64,
    dial_timeout: Duration,
}

/// One subscription: what it watches and how to reconnect.
struct Watch {
    redis: RedisConnection,
    client: Client,
    dial_timeout: Duration,
    /// `__keyspace@<db>__:`.
    prefix: String,
    /// The watched keys; empty for every key.
    keys: Vec<String>,
}

// === impl RedisConfigurationStore ===

impl RedisConfigurationStore {
    /// Connects to `redisHost` and checks that it answers.
    pub async fn create(
        init: ComponentInit,
    ) -> Result<Arc<dyn ConfigurationStore>, ComponentError> {
        init.metadata.warn_unknown(&init.name, CONNECTION_KEYS);
        let md = ConnectionMetadata::parse(&init)?;
        let redis = RedisConnection::connect(&md).await?;
        Ok(Arc::new(Self {
            redis,
            pubsub_client: md.client(ProtocolVersion::RESP2)?,
            db: md.db,
            dial_timeout: md.dial_timeout,
        }))
    }
}

#[async_trait]
impl ConfigurationStore for RedisConfigurationStore {
    async fn get(
        &self,
        keys: &[String],
        _metadata: &RequestMetadata,
    ) -> Result<HashMap<String, ConfigurationItem>, ConfigurationError> {
        let keys = if keys.is_empty() {
            all_keys(&self.redis).await?
        } else {
            keys.to_vec()
        };
        let mut items = HashMap::new();
        for chunk in keys.chunks(MGET_CHUNK) {
            for (key, value) in chunk.iter().zip(read(&self.redis, chunk).await?) {
                if let Some(item) = value {
                    items.insert(key.clone(), item);
                }
            }
        }
        Ok(items)
    }

    async fn subscribe(
        &self,
        keys: &[String],
        _metadata: &RequestMetadata,
    ) -> Result<ConfigurationUpdates, ConfigurationError> {
        enable_notifications(&self.redis).await;
        let watch = Watch {
            redis: self.redis.clone(),
            client: self.pubsub_client.clone(),
            dial_timeout: self.dial_timeout,
            prefix: format!("__keyspace@{}__:", self.db),
            keys: keys.to_vec(),
        };
        let messages = watch
            .open()
            .await
            .map_err(|e| ConfigurationError::Backend(format!("redis: subscribing: {e}")))?;
        Ok(Box::pin(futures::stream::unfold(
            (watch, Some(messages)),
            next_update,
        )))
    }
}

// === impl Watch ===

impl Watch {
    /// Opens a pubsub connection subscribed to the watched keys' channels.
    async fn open(&self) -> RedisResult<PubSubStream> {
        let subscribing = async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            if self.keys.is_empty() {
                pubsub.psubscribe(format!("{}*", self.prefix)).await?;
            } else {
                // Plain channels: a key is matched exactly, never as a glob pattern.
                let channels: Vec<String> = self
                    .keys
                    .iter()
                    .map(|k| format!("{}{k}", self.prefix))
                    .collect();
                pubsub.subscribe(channels).await?;
            }
            Ok(pubsub.into_on_message())
        };
        tokio::time::timeout(self.dial_timeout, subscribing)
            .await
            .unwrap_or_else(|_| {
                Err(redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "subscribing timed out",
                )))
            })
    }

    /// The update an event announces: the key's value now, empty when it is gone.
    ///
    /// Events on keys that hold no string (a hash written by a state store sharing the
    /// database) announce nothing.
    async fn update(&self, msg: &Msg) -> Option<ConfigurationUpdate> {
        let key = msg
            .get_channel_name()
            .strip_prefix(&self.prefix)?
            .to_owned();
        let event: String = msg.get_payload().unwrap_or_default();
        match read(&self.redis, std::slice::from_ref(&key)).await {
            Ok(mut values) => match values.pop().flatten() {
                Some(item) => Some(HashMap::from([(key, item)])),
                None if REMOVAL_EVENTS.contains(&event.as_str()) => {
                    Some(HashMap::from([(key, ConfigurationItem::default())]))
                }
                None => None,
            },
            Err(error) => {
                tracing::warn!(%key, %error, "Reading a changed configuration item failed");
                None
            }
        }
    }

    /// The watched keys' values after a reconnection; `None` when watching every key.
    async fn snapshot(&self) -> Option<ConfigurationUpdate> {
        if self.keys.is_empty() {
            return None;
        }
        let values = read(&self.redis, &self.keys).await.ok()?;
        Some(
            self.keys
                .iter()
                .cloned()
                .zip(values.into_iter().map(Option::unwrap_or_default))
                .collect(),
        )
    }

    /// Re-opens the subscription, waiting longer after each failure; only dropping the
    /// stream stops it.
    async fn reopen(&self) -> PubSubStream {
        let mut pause = Duration::from_millis(100);
        loop {
            match self.open().await {
                Ok(messages) => {
                    // A restarted server has forgotten the setting.
                    enable_notifications(&self.redis).await;
                    tracing::info!("Configuration subscription to Redis restored");
                    return messages;
                }
                Err(error) => {
                    tracing::debug!(%error, "Re-subscribing to Redis failed");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_RESUBSCRIBE_PAUSE);
                }
            }
        }
    }
}

/// The next update of a subscription, reconnecting when its connection drops.
async fn next_update(
    (watch, mut messages): (Watch, Option<PubSubStream>),
) -> Option<(ConfigurationUpdate, (Watch, Option<PubSubStream>))> {
    loop {
        match messages.as_mut() {
            Some(stream) => match stream.next().await {
                Some(msg) => {
                    if let Some(update) = watch.update(&msg).await {
                        return Some((update, (watch, messages)));
                    }
                }
                None => {
                    tracing::warn!("Configuration subscription lost its Redis connection");
                    messages = None;
                }
            },
            None => {
                messages = Some(watch.reopen().await);
                if let Some(update) = watch.snapshot().await {
                    return Some((update, (watch, messages)));
                }
            }
        }
    }
}

/// Adds the keyspace notification classes a watch needs to the server's setting, keeping
/// the ones already set.
async fn enable_notifications(conn: &RedisConnection) {
    let current = conn
        .call(|mut c| async move {
            redis::cmd("CONFIG")
                .arg("GET")
                .arg(NOTIFY_KEYSPACE_EVENTS)
                .query_async::<HashMap<String, String>>(&mut c)
                .await
        })
        .await
        .map(|m| m.get(NOTIFY_KEYSPACE_EVENTS).cloned().unwrap_or_default());
    let current = match current {
        Ok(flags) if NEEDED_EVENTS.chars().all(|f| flags.contains(f)) => return,
        Ok(flags) => flags,
        Err(error) => {
            tracing::warn!(%error, "Cannot read notify-keyspace-events; watching anyway");
            return;
        }
    };
    let mut wanted = current.clone();
    wanted.extend(NEEDED_EVENTS.chars().filter(|f| !current.contains(*f)));
    let set = conn
        .call(|mut c| {
            let wanted = wanted.as_str();
            async move {
                redis::cmd("CONFIG")
                    .arg("SET")
                    .arg(NOTIFY_KEYSPACE_EVENTS)
                    .arg(wanted)
                    .query_async::<()>(&mut c)
                    .await
            }
        })
        .await;
    match set {
        Ok(()) => tracing::info!(
            flags = %wanted,
            previous = %current,
            "Enabled Redis keyspace notifications for configuration subscriptions"
        ),
        Err(error) => tracing::warn!(
            %error,
            "Cannot enable Redis keyspace notifications (notify-keyspace-events {NEEDED_EVENTS}); \
             subscriptions see changes only if the server publishes them"
        ),
    }
}

/// Every key of the database, by `SCAN`.
async fn all_keys(conn: &RedisConnection) -> Result<Vec<String>, ConfigurationError> {
    conn.call(|mut c| async move {
        let mut keys = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut c)
                .await?;
            keys.extend(
                batch
                    .iter()
                    .map(|k| String::from_utf8_lossy(k).into_owned()),
            );
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    })
    .await
    .map_err(ConfigurationError::Backend)
}

/// The items of `keys`, `None` for absent keys and keys that do not hold a string.
async fn read(
    conn: &RedisConnection,
    keys: &[String],
) -> Result<Vec<Option<ConfigurationItem>>, ConfigurationError> {
    let values: Vec<Option<Vec<u8>>> = conn
        .call(|mut c| async move { redis::cmd("MGET").arg(keys).query_async(&mut c).await })
        .await
        .map_err(ConfigurationError::Backend)?;
    Ok(values
        .into_iter()
        .map(|v| v.map(|raw| item(&String::from_utf8_lossy(&raw))))
        .collect())
}

/// Splits `value||version` as Dapr does: the text before the first separator is the value,
/// the text after it (up to any further separator) the version.
fn item(stored: &str) -> ConfigurationItem {
    let mut parts = stored.split(SEPARATOR);
    ConfigurationItem {
        value: parts.next().unwrap_or_default().to_owned(),
        version: parts.next().unwrap_or_default().to_owned(),
        metadata: HashMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::item;

    #[test]
    fn splits_value_and_version() {
        let split = |s: &str| {
            let i = item(s);
            (i.value, i.version)
        };
        assert_eq!(split("on||3"), ("on".into(), "3".into()));
        assert_eq!(split("on"), ("on".into(), String::new()));
        assert_eq!(split(""), (String::new(), String::new()));
        assert_eq!(split("a||b||c"), ("a".into(), "b".into()));
    }
}
