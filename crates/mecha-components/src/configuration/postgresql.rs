//! `configuration.postgresql` v1 (also registered as `configuration.postgres`): configuration
//! items in one PostgreSQL table, watched with `LISTEN`/`NOTIFY`.
//!
//! Tested against PostgreSQL 15 by the configuration conformance suite, with writes made by
//! plain SQL on the table (`tests/postgresql.rs`).
//!
//! The table (`table`, required, may be `schema.table`) has Dapr's columns `key`, `value`,
//! `version` and `metadata` (JSON object of strings); Mecha creates it if missing, with `key`
//! as primary key. Unlike Dapr, which leaves it to the operator, Mecha also installs a trigger
//! `mecha_notify` on the table, calling the function `mecha_configuration_notify` (in the
//! table's schema), which sends every inserted, updated or deleted row on the channel
//! `mecha_<schema>_<table>` (`mecha_<table>` without a schema, cut to 63 bytes) in the payload
//! format of Dapr's documented trigger: `{"table", "action", "data": row}`. A row too large for
//! a notification (8000 bytes) is sent as its key only and read back from the table.
//!
//! Subscribers listen on the subscribe request's `pgNotifyChannel` metadata when given, as in
//! Dapr (a channel fed by the operator's own trigger), else on the default channel. Each
//! subscription holds its own connection, re-established after an outage; changes made while
//! it is down are not replayed. A deleted key is yielded with an empty item.
//!
//! Metadata: `table` and the connection fields of `state.postgresql` (`connectionString` in
//! URL or keyword/value form, `timeout`/`timeoutInSeconds`, `maxConns`,
//! `connectionMaxIdleTime` or `maxIdleTimeout`, `queryExecMode`…).

use crate::state::postgresql::connection;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mecha_core::component::{ComponentError, ComponentInit};
use mecha_core::configuration::{
    ConfigurationError, ConfigurationItem, ConfigurationStore, ConfigurationUpdate,
    ConfigurationUpdates,
};
use mecha_core::state::RequestMetadata;
use serde_json::Value;
use sqlx::postgres::{PgListener, PgPool, PgRow};
use sqlx::{AssertSqlSafe, Row};

use connection::{CONNECTION_KEYS, Connection, TableName};

const TABLE: &str = "table";
/// Subscribe request metadata naming the channel to listen on.
const PG_NOTIFY_CHANNEL: &str = "pgNotifyChannel";
const TRIGGER: &str = "mecha_notify";
const FUNCTION: &str = "mecha_configuration_notify";
/// Longest channel name PostgreSQL accepts.
const MAX_CHANNEL: usize = 63;
/// The pause before a subscription tries again after its connection failed.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// The `configuration.postgresql` configuration store.
pub struct PostgresConfigurationStore {
    reader: Reader,
    connection: Connection,
    channel: String,
}

/// Reads items; shared with the subscriptions, which read rows too large to be notified.
#[derive(Clone)]
struct Reader {
    pool: PgPool,
    timeout: Duration,
    get_all: Arc<str>,
    get_keys: Arc<str>,
}

/// One subscription: its listener and the keys it watches (all when empty).
struct Watch {
    listener: PgListener,
    keys: HashSet<String>,
    reader: Reader,
}

// === impl PostgresConfigurationStore ===

impl PostgresConfigurationStore {
    /// Connects, creates the table if missing and installs the notification trigger.
    pub async fn create(
        init: ComponentInit,
    ) -> Result<Arc<dyn ConfigurationStore>, ComponentError> {
        let md = &init.metadata;
        let known: Vec<&str> = CONNECTION_KEYS.iter().chain(&[TABLE]).copied().collect();
        md.warn_unknown(&init.name, &known);
        let connection = Connection::parse(md)?;
        let table = TableName::parse(md.required(TABLE)?, TABLE)?;
        let channel: String = format!("mecha_{}", table.flat())
            .chars()
            .take(MAX_CHANNEL)
            .collect();
        let pool = connection.connect().await?;
        connection
            .prepare(&pool, "mecha-configuration", &schema(&table, &channel))
            .await?;
        let t = table.quoted();
        let columns = "key::text, value::text, version::text, metadata::text";
        Ok(Arc::new(Self {
            reader: Reader {
                pool,
                timeout: connection.timeout,
                get_all: format!("SELECT {columns} FROM {t}").into(),
                get_keys: format!("SELECT {columns} FROM {t} WHERE key = ANY($1)").into(),
            },
            connection,
            channel,
        }))
    }
}

#[async_trait]
impl ConfigurationStore for PostgresConfigurationStore {
    async fn get(
        &self,
        keys: &[String],
        _metadata: &RequestMetadata,
    ) -> Result<HashMap<String, ConfigurationItem>, ConfigurationError> {
        self.reader.get(keys).await
    }

    async fn subscribe(
        &self,
        keys: &[String],
        metadata: &RequestMetadata,
    ) -> Result<ConfigurationUpdates, ConfigurationError> {
        let channel = metadata
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(PG_NOTIFY_CHANNEL))
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
            .unwrap_or(&self.channel);
        // A pool of one connection per subscription: the listener takes it for good, and the
        // pool re-establishes it after an outage.
        let pool = self
            .connection
            .pool_options()
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_lazy_with(self.connection.options.clone());
        let listen = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(channel).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let listener = self.reader.timed(listen).await?;
        let watch = Watch {
            listener,
            keys: keys.iter().cloned().collect(),
            reader: self.reader.clone(),
        };
        let updates = futures::stream::unfold(watch, |mut watch| async move {
            let update = watch.next().await;
            Some((update, watch))
        });
        Ok(Box::pin(updates))
    }

    async fn close(&self) {
        self.reader.pool.close().await;
    }
}

// === impl Reader ===

impl Reader {
    async fn timed<T>(
        &self,
        op: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, ConfigurationError> {
        match tokio::time::timeout(self.timeout, op).await {
            Ok(r) => {
                r.map_err(|e| ConfigurationError::Backend(connection::describe(&e, self.timeout)))
            }
            Err(_) => Err(ConfigurationError::Backend(format!(
                "postgresql: timed out after {:?}",
                self.timeout
            ))),
        }
    }

    async fn get(
        &self,
        keys: &[String],
    ) -> Result<HashMap<String, ConfigurationItem>, ConfigurationError> {
        let rows = if keys.is_empty() {
            let q = sqlx::query(AssertSqlSafe(self.get_all.clone()));
            self.timed(q.fetch_all(&self.pool)).await?
        } else {
            let q = sqlx::query(AssertSqlSafe(self.get_keys.clone())).bind(keys);
            self.timed(q.fetch_all(&self.pool)).await?
        };
        rows.iter()
            .map(decode_row)
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| ConfigurationError::Backend(format!("postgresql: {e}")))
    }
}

fn decode_row(row: &PgRow) -> Result<(String, ConfigurationItem), sqlx::Error> {
    let key: String = row.try_get(0)?;
    let value: Option<String> = row.try_get(1)?;
    let version: Option<String> = row.try_get(2)?;
    let metadata: Option<String> = row.try_get(3)?;
    let metadata = metadata
        .and_then(|m| serde_json::from_str::<Value>(&m).ok())
        .map(|m| string_map(&m))
        .unwrap_or_default();
    Ok((
        key,
        ConfigurationItem {
            value: value.unwrap_or_default(),
            version: version.unwrap_or_default(),
            metadata,
        },
    ))
}

// === impl Watch ===

impl Watch {
    /// Waits for the next change of a watched key, reconnecting after failures.
    async fn next(&mut self) -> ConfigurationUpdate {
        loop {
            match self.listener.recv().await {
                Ok(n) => {
                    if let Some(update) = self.update(n.payload()).await {
                        return update;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "Configuration subscription lost its connection; retrying");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }

    /// The update a notification carries, if it is about a watched key.
    async fn update(&self, payload: &str) -> Option<ConfigurationUpdate> {
        let Ok(notification) = serde_json::from_str::<Value>(payload) else {
            tracing::warn!(
                payload,
                "Ignoring a configuration notification that is not JSON"
            );
            return None;
        };
        let data = field(&notification, "data")?;
        let key = field(data, "key").and_then(Value::as_str)?.to_owned();
        if !self.keys.is_empty() && !self.keys.contains(&key) {
            return None;
        }
        let action = field(&notification, "action").and_then(Value::as_str);
        let item = if action.is_some_and(|a| a.eq_ignore_ascii_case("DELETE")) {
            ConfigurationItem::default()
        } else if field(&notification, "truncated").and_then(Value::as_bool) == Some(true) {
            match self.reader.get(std::slice::from_ref(&key)).await {
                Ok(mut items) => items.remove(&key).unwrap_or_default(),
                Err(error) => {
                    tracing::warn!(%error, key, "Reading a changed configuration item failed");
                    return None;
                }
            }
        } else {
            ConfigurationItem {
                value: field(data, "value").map(text).unwrap_or_default(),
                version: field(data, "version").map(text).unwrap_or_default(),
                metadata: field(data, "metadata").map(string_map).unwrap_or_default(),
            }
        };
        Some(HashMap::from([(key, item)]))
    }
}

/// `name` of a JSON object, matched case-insensitively (a table created with quoted
/// upper-case columns gives `"KEY"`).
fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    let obj = v.as_object()?;
    obj.get(name).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

/// A JSON value as item text: strings as they are, null as empty, others as JSON.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn string_map(v: &Value) -> HashMap<String, String> {
    v.as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), text(v))).collect())
        .unwrap_or_default()
}

/// The table, the notification function and the trigger, each created only if missing
/// (the function is replaced, so that it is always this version).
fn schema(table: &TableName, channel: &str) -> Vec<String> {
    let t = table.quoted();
    let f = table.qualify(FUNCTION);
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {t} (key text NOT NULL PRIMARY KEY, \
             value text NOT NULL, version text NOT NULL DEFAULT '', metadata json)"
        ),
        format!(
            "CREATE OR REPLACE FUNCTION {f}() RETURNS trigger LANGUAGE plpgsql AS $mecha$
DECLARE
    data json;
    payload text;
BEGIN
    IF TG_OP = 'DELETE' THEN data := row_to_json(OLD); ELSE data := row_to_json(NEW); END IF;
    payload := json_build_object('table', TG_TABLE_NAME, 'action', TG_OP, 'data', data)::text;
    IF octet_length(payload) > 7900 THEN
        payload := json_build_object('table', TG_TABLE_NAME, 'action', TG_OP,
            'truncated', true, 'data', json_build_object('key', data->>'key'))::text;
    END IF;
    PERFORM pg_notify(TG_ARGV[0], payload);
    RETURN NULL;
END
$mecha$"
        ),
        format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_trigger \
             WHERE tgrelid = '{t}'::regclass AND tgname = '{TRIGGER}') THEN \
             CREATE TRIGGER {TRIGGER} AFTER INSERT OR UPDATE OR DELETE ON {t} \
             FOR EACH ROW EXECUTE FUNCTION {f}('{channel}'); END IF; END $$"
        ),
    ]
}
