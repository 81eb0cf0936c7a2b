//! `sqlite`: the embedded default. Sidecars started on one machine by one user announce
//! themselves in one SQLite file and find each other with no configuration at all.
//!
//! Each resolver gets a random instance id. [`NameResolver::register`] upserts one row
//! (instance id, app id, namespace, host, port, heartbeat in milliseconds since the Unix epoch)
//! and starts a task that refreshes the heartbeat every `heartbeatInterval`, re-inserting the
//! row if another process deleted it. A row whose heartbeat is older than `staleAfter` is never
//! returned; every resolver deletes such rows when it opens the file and then about every
//! `staleAfter` while it heartbeats. Registering also deletes any other row announcing the same
//! host and port: the port is now ours, so a sidecar restarted on the same port replaces its
//! old entry at once, and one restarted on a new port leaves an entry that goes stale within
//! `staleAfter`. [`NameResolver::close`] stops the heartbeat and deletes the row; dropping the
//! resolver without closing stops the heartbeat, so the row goes stale.
//!
//! [`NameResolver::resolve`] returns the live instances ordered by instance id, and caches each
//! (app id, namespace) answer for `cacheTtl` so that the invocation hot path rarely touches the
//! file; registering or closing clears this process's cache.
//!
//! The file is opened as `state.sqlite` opens it (write-ahead logging, a busy timeout, the
//! folder created), so several processes can share it.
//!
//! Configuration: `connectionString` (a path or `file:` URI; default: the runtime's
//! `~/.mecha/nameresolution.db`, an error when neither is known), `tableName`
//! (`nameresolution`), `heartbeatInterval` (Go duration, `1s`), `staleAfter` (`5s`, at least
//! twice `heartbeatInterval`), `cacheTtl` (`500ms`; `0` disables the cache), `timeout`
//! (per operation, `5s`), `busyTimeout` (`2s`), `disableWAL` (`false`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use mecha_core::Metadata;
use mecha_core::component::{ComponentError, ComponentInit};
use mecha_core::nameresolution::{Instance, Instances, NameResolver, ResolveError, ResolverInit};
use mecha_core::state::now_millis;
use sqlx::sqlite::SqlitePool;
use sqlx::{AssertSqlSafe, Row};
use tokio::task::JoinHandle;

use super::{Config, ResolveCache};
use crate::state::sqlite::open_shared;

const CONNECTION_STRING: &str = "connectionString";
const TABLE_NAME: &str = "tableName";
const HEARTBEAT_INTERVAL: &str = "heartbeatInterval";
const STALE_AFTER: &str = "staleAfter";
const CACHE_TTL: &str = "cacheTtl";
const TIMEOUT: &str = "timeout";
const BUSY_TIMEOUT: &str = "busyTimeout";
const DISABLE_WAL: &str = "disableWAL";

const KNOWN_KEYS: &[&str] = &[
    CONNECTION_STRING,
    TABLE_NAME,
    HEARTBEAT_INTERVAL,
    STALE_AFTER,
    CACHE_TTL,
    TIMEOUT,
    BUSY_TIMEOUT,
    DISABLE_WAL,
];

/// The `sqlite` resolver.
pub struct SqliteResolver {
    inner: Arc<Inner>,
    /// The current registration's heartbeat task.
    heartbeat: Mutex<Option<JoinHandle<()>>>,
    cache: ResolveCache,
}

/// What the heartbeat task shares with the resolver.
struct Inner {
    pool: SqlitePool,
    sql: Statements,
    instance_id: String,
    heartbeat_interval: Duration,
    stale_after: Duration,
    timeout: Duration,
}

/// The statements, with the table name filled in.
struct Statements {
    schema: [String; 2],
    upsert: String,
    delete_same_address: String,
    delete_own: String,
    delete_stale: String,
    select: String,
}

// === impl SqliteResolver ===

impl SqliteResolver {
    /// Opens (creating if needed) the file, creates the table and deletes stale rows.
    pub async fn create(init: ResolverInit) -> Result<Arc<dyn NameResolver>, ResolveError> {
        Ok(Arc::new(Self::open(init).await?))
    }

    /// Like [`SqliteResolver::create`], returning the concrete type.
    pub async fn open(init: ResolverInit) -> Result<Self, ResolveError> {
        let config = Config::new(&init.configuration)?;
        config.warn_unknown("sqlite", KNOWN_KEYS);
        let heartbeat_interval = config.duration(HEARTBEAT_INTERVAL, Duration::from_secs(1))?;
        let stale_after = config.duration(STALE_AFTER, Duration::from_secs(5))?;
        let cache_ttl = config.duration(CACHE_TTL, Duration::from_millis(500))?;
        if heartbeat_interval.is_zero() {
            return Err(ResolveError::Config(format!(
                "'{HEARTBEAT_INTERVAL}' must be positive"
            )));
        }
        if stale_after < heartbeat_interval * 2 {
            return Err(ResolveError::Config(format!(
                "'{STALE_AFTER}' ({stale_after:?}) must be at least twice \
                 '{HEARTBEAT_INTERVAL}' ({heartbeat_interval:?})"
            )));
        }
        let path = match config.string(CONNECTION_STRING)?.filter(|s| !s.is_empty()) {
            Some(path) => path,
            None => match &init.default_path {
                Some(path) => path.display().to_string(),
                None => {
                    return Err(ResolveError::Config(format!(
                        "no '{CONNECTION_STRING}' is configured and no home folder is known"
                    )));
                }
            },
        };
        // Hand the database settings over in `state.sqlite`'s terms.
        let mut metadata = HashMap::from([(CONNECTION_STRING.to_owned(), path.clone())]);
        metadata.insert(
            TIMEOUT.to_owned(),
            config.string(TIMEOUT)?.unwrap_or_else(|| "5s".into()),
        );
        for key in [TABLE_NAME, BUSY_TIMEOUT, DISABLE_WAL] {
            if let Some(v) = config.string(key)? {
                metadata.insert(key.to_owned(), v);
            }
        }
        let db_init = ComponentInit {
            name: "nameresolution".into(),
            metadata: Metadata::new(metadata),
            app_id: init.app_id.clone(),
        };
        let (db, table, timeout) =
            open_shared(&db_init, "nameresolution")
                .await
                .map_err(|e| match e {
                    ComponentError::Init(reason) => {
                        ResolveError::Lookup(format!("{path}: {reason}"))
                    }
                    other => ResolveError::Config(other.to_string()),
                })?;
        let inner = Inner {
            pool: db.pool,
            sql: Statements::new(&table),
            instance_id: uuid::Uuid::new_v4().to_string(),
            heartbeat_interval,
            stale_after,
            timeout,
        };
        let prepare = async {
            for ddl in &inner.sql.schema {
                sqlx::query(AssertSqlSafe(ddl.as_str()))
                    .execute(&inner.pool)
                    .await?;
            }
            Ok::<_, sqlx::Error>(())
        };
        inner
            .timed("creating the table", prepare)
            .await
            .map_err(|e| ResolveError::Lookup(format!("{path}: {e}")))?;
        if let Err(e) = inner.delete_stale().await {
            tracing::warn!(error = %e, "Deleting stale name resolution entries failed");
        }
        tracing::debug!(path = %path, instance = %inner.instance_id, "Opened the name resolution file");
        Ok(Self {
            inner: Arc::new(inner),
            heartbeat: Mutex::new(None),
            cache: ResolveCache::new(cache_ttl),
        })
    }

    /// The id this resolver registers under.
    pub fn instance_id(&self) -> &str {
        &self.inner.instance_id
    }

    fn stop_heartbeat(&self) {
        let task = self
            .heartbeat
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = task {
            task.abort();
        }
    }
}

impl Drop for SqliteResolver {
    fn drop(&mut self) {
        self.stop_heartbeat();
    }
}

#[async_trait]
impl NameResolver for SqliteResolver {
    async fn register(&self, me: &Instance) -> Result<(), ResolveError> {
        self.stop_heartbeat();
        self.inner.announce(me, true).await?;
        self.cache.clear();
        let inner = self.inner.clone();
        let me = me.clone();
        let task = tokio::spawn(async move { inner.heartbeat_loop(me).await });
        let previous = self
            .heartbeat
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(task);
        if let Some(previous) = previous {
            previous.abort();
        }
        Ok(())
    }

    async fn resolve(&self, app_id: &str, namespace: &str) -> Result<Instances, ResolveError> {
        if let Some(found) = self.cache.get(app_id, namespace) {
            return Ok(found);
        }
        let found: Instances = self.inner.select(app_id, namespace).await?.into();
        self.cache.put(app_id, namespace, &found);
        Ok(found)
    }

    async fn close(&self) {
        self.stop_heartbeat();
        let inner = &self.inner;
        let delete = sqlx::query(AssertSqlSafe(inner.sql.delete_own.as_str()))
            .bind(inner.instance_id.as_str())
            .execute(&inner.pool);
        match inner.timed("deleting the entry", delete).await {
            Ok(_) => {
                tracing::debug!(instance = %inner.instance_id, "Withdrew the name resolution entry")
            }
            Err(e) => tracing::warn!(error = %e, "Withdrawing the name resolution entry failed"),
        }
        self.cache.clear();
    }
}

// === impl Inner ===

impl Inner {
    /// Runs `op` within the per-operation timeout.
    async fn timed<T>(
        &self,
        what: &str,
        op: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, ResolveError> {
        match tokio::time::timeout(self.timeout, op).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(ResolveError::Lookup(format!("sqlite: {what}: {e}"))),
            Err(_) => Err(ResolveError::Lookup(format!(
                "sqlite: {what} timed out after {:?}",
                self.timeout
            ))),
        }
    }

    /// Writes this instance's row with a fresh heartbeat; `first` also deletes other rows
    /// announcing the same address.
    async fn announce(&self, me: &Instance, first: bool) -> Result<(), ResolveError> {
        let write = async {
            let mut tx = self.pool.begin().await?;
            if first {
                sqlx::query(AssertSqlSafe(self.sql.delete_same_address.as_str()))
                    .bind(me.host.as_str())
                    .bind(i64::from(me.port))
                    .bind(self.instance_id.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query(AssertSqlSafe(self.sql.upsert.as_str()))
                .bind(self.instance_id.as_str())
                .bind(me.app_id.as_str())
                .bind(me.namespace.as_str())
                .bind(me.host.as_str())
                .bind(i64::from(me.port))
                .bind(now_millis())
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        };
        self.timed("registering", write).await
    }

    /// Deletes every row whose heartbeat is older than `stale_after`.
    async fn delete_stale(&self) -> Result<u64, ResolveError> {
        let delete = sqlx::query(AssertSqlSafe(self.sql.delete_stale.as_str()))
            .bind(self.oldest_live())
            .execute(&self.pool);
        Ok(self
            .timed("deleting stale entries", delete)
            .await?
            .rows_affected())
    }

    /// The oldest heartbeat that still counts as live.
    fn oldest_live(&self) -> i64 {
        let stale = i64::try_from(self.stale_after.as_millis()).unwrap_or(i64::MAX);
        now_millis().saturating_sub(stale)
    }

    async fn select(&self, app_id: &str, namespace: &str) -> Result<Vec<Instance>, ResolveError> {
        let query = sqlx::query(AssertSqlSafe(self.sql.select.as_str()))
            .bind(app_id)
            .bind(namespace)
            .bind(self.oldest_live())
            .fetch_all(&self.pool);
        let rows = self.timed("resolving", query).await?;
        rows.iter()
            .map(|row| {
                let host: String = row.try_get(0)?;
                let port: i64 = row.try_get(1)?;
                Ok((host, port))
            })
            .filter_map(|r: Result<(String, i64), sqlx::Error>| match r {
                Ok((host, port)) => match u16::try_from(port) {
                    Ok(port) => Some(Ok(Instance {
                        app_id: app_id.to_owned(),
                        namespace: namespace.to_owned(),
                        host,
                        port,
                    })),
                    Err(_) => None,
                },
                Err(e) => Some(Err(ResolveError::Lookup(format!("sqlite: {e}")))),
            })
            .collect()
    }

    /// Refreshes the heartbeat until aborted; deletes stale rows about every `stale_after`.
    async fn heartbeat_loop(self: Arc<Self>, me: Instance) {
        let mut ticker = tokio::time::interval(self.heartbeat_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        let mut last_cleanup = tokio::time::Instant::now();
        let mut failing = false;
        loop {
            ticker.tick().await;
            match self.announce(&me, false).await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!(app_id = %me.app_id, "Name resolution heartbeat recovered");
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(app_id = %me.app_id, error = %e, "Name resolution heartbeat failed");
                }
                Err(_) => {}
            }
            if last_cleanup.elapsed() >= self.stale_after {
                last_cleanup = tokio::time::Instant::now();
                match self.delete_stale().await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(deleted = n, "Deleted stale name resolution entries"),
                    Err(e) => tracing::debug!(error = %e, "Deleting stale entries failed"),
                }
            }
        }
    }
}

// === impl Statements ===

impl Statements {
    fn new(table: &str) -> Self {
        Self {
            schema: [
                format!(
                    "CREATE TABLE IF NOT EXISTS {table} (\
                     instance_id TEXT NOT NULL PRIMARY KEY, \
                     app_id TEXT NOT NULL, \
                     namespace TEXT NOT NULL, \
                     host TEXT NOT NULL, \
                     port INTEGER NOT NULL, \
                     heartbeat INTEGER NOT NULL)"
                ),
                format!(
                    "CREATE INDEX IF NOT EXISTS {table}_app_idx \
                     ON {table} (app_id, namespace, heartbeat)"
                ),
            ],
            upsert: format!(
                "INSERT INTO {table} (instance_id, app_id, namespace, host, port, heartbeat) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (instance_id) DO UPDATE SET app_id = excluded.app_id, \
                 namespace = excluded.namespace, host = excluded.host, port = excluded.port, \
                 heartbeat = excluded.heartbeat"
            ),
            delete_same_address: format!(
                "DELETE FROM {table} WHERE host = ?1 AND port = ?2 AND instance_id <> ?3"
            ),
            delete_own: format!("DELETE FROM {table} WHERE instance_id = ?1"),
            delete_stale: format!("DELETE FROM {table} WHERE heartbeat < ?1"),
            select: format!(
                "SELECT host, port FROM {table} \
                 WHERE app_id = ?1 AND namespace = ?2 AND heartbeat >= ?3 \
                 ORDER BY instance_id"
            ),
        }
    }
}
