//! The connection metadata and the reconnecting, time-bounded connection shared by the Redis
//! components (`state.redis`, `lock.redis`, `configuration.redis`).
//!
//! The metadata keys are those of Dapr's shared Redis settings. Every call is bounded by one
//! deadline, so an outage surfaces as an error within seconds, and runs on a
//! [`ConnectionManager`], which replaces a dropped connection in the background: once Redis is
//! back, the same component works again without a restart.
//!
//! The lock and configuration components reuse it, so their features enable `state-redis`.

use std::future::Future;
use std::time::Duration;

use mecha_core::component::{ComponentError, ComponentInit};
use mecha_core::duration::parse_go_duration;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{
    Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, ProtocolVersion, RedisError,
    RedisResult,
};

const REDIS_HOST: &str = "redisHost";
const REDIS_PORT: &str = "redisPort";
const REDIS_USERNAME: &str = "redisUsername";
const REDIS_PASSWORD: &str = "redisPassword";
const REDIS_DB: &str = "redisDB";
const REDIS_TYPE: &str = "redisType";
const ENABLE_TLS: &str = "enableTLS";
const FAILOVER: &str = "failover";
const SENTINEL_MASTER_NAME: &str = "sentinelMasterName";
const USE_ENTRA_ID: &str = "useEntraID";
const DIAL_TIMEOUT: &str = "dialTimeout";
const READ_TIMEOUT: &str = "readTimeout";
const WRITE_TIMEOUT: &str = "writeTimeout";
const MAX_RETRIES: &str = "maxRetries";
const REDIS_MAX_RETRIES: &str = "redisMaxRetries";
const MAX_RETRY_BACKOFF: &str = "maxRetryBackoff";
const REDIS_MAX_RETRY_INTERVAL: &str = "redisMaxRetryInterval";
const REDIS_MIN_RETRY_INTERVAL: &str = "redisMinRetryInterval";

/// The connection keys every Redis component reads, plus Dapr's connection-pool keys, which
/// mean nothing to one multiplexed connection and are accepted without effect.
pub(crate) const CONNECTION_KEYS: &[&str] = &[
    REDIS_HOST,
    REDIS_PORT,
    REDIS_USERNAME,
    REDIS_PASSWORD,
    REDIS_DB,
    REDIS_TYPE,
    ENABLE_TLS,
    FAILOVER,
    SENTINEL_MASTER_NAME,
    USE_ENTRA_ID,
    DIAL_TIMEOUT,
    READ_TIMEOUT,
    WRITE_TIMEOUT,
    MAX_RETRIES,
    REDIS_MAX_RETRIES,
    MAX_RETRY_BACKOFF,
    REDIS_MAX_RETRY_INTERVAL,
    REDIS_MIN_RETRY_INTERVAL,
    "poolSize",
    "minIdleConns",
    "poolTimeout",
    "idleTimeout",
    "idleCheckFrequency",
    "maxConnAge",
];

/// The bound on a call when both `readTimeout` and `writeTimeout` are disabled (`-1`).
const FALLBACK_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The validated connection metadata of a Redis component.
#[derive(Clone, Debug)]
pub(crate) struct ConnectionMetadata {
    /// `redisHost`: `host:port` (`host` alone takes `redisPort`, default 6379). Required.
    pub(crate) host: String,
    /// The port, from `redisHost` or `redisPort`.
    pub(crate) port: u16,
    /// `redisUsername`: the ACL user (Redis 6+).
    pub(crate) username: Option<String>,
    /// `redisPassword`.
    pub(crate) password: Option<String>,
    /// `redisDB`: the database selected after connecting. Default 0.
    pub(crate) db: i64,
    /// `enableTLS`: connect over TLS. As in Dapr, the server's certificate is not verified
    /// (Dapr sets `InsecureSkipVerify` from this flag). Default false.
    pub(crate) tls: bool,
    /// `dialTimeout`: the limit on establishing a connection. Default 5s.
    pub(crate) dial_timeout: Duration,
    /// `readTimeout` / `writeTimeout`: the limit on a command; `None` when both are `-1`.
    /// Default 3s.
    pub(crate) command_timeout: Option<Duration>,
    /// `maxRetries` (or `redisMaxRetries`): reconnection attempts after a failure. Default 3.
    pub(crate) max_retries: usize,
    /// `redisMinRetryInterval`: the first reconnection backoff. Default 8ms.
    pub(crate) min_retry_backoff: Duration,
    /// `maxRetryBackoff` (or `redisMaxRetryInterval`): the longest reconnection backoff.
    /// Default 2s.
    pub(crate) max_retry_backoff: Duration,
}

/// A connection that reconnects by itself, with every call bounded in time.
#[derive(Clone)]
pub(crate) struct RedisConnection {
    manager: ConnectionManager,
    call_timeout: Duration,
    address: String,
}

// === impl ConnectionMetadata ===

impl ConnectionMetadata {
    /// Reads and validates the connection keys of `init`.
    pub(crate) fn parse(init: &ComponentInit) -> Result<Self, ComponentError> {
        let md = &init.metadata;
        refuse_unsupported(init)?;
        let (host, port) = host_and_port(md.required(REDIS_HOST)?, md.get(REDIS_PORT))?;
        let text = |key: &str| md.get(key).filter(|v| !v.is_empty()).map(str::to_owned);
        let db = i64::try_from(md.u64(REDIS_DB, 0)?).map_err(|_| ComponentError::InvalidField {
            field: REDIS_DB,
            reason: "too large".into(),
        })?;
        let dial_timeout = duration(md.get(DIAL_TIMEOUT), DIAL_TIMEOUT)?;
        let read_timeout = duration(md.get(READ_TIMEOUT), READ_TIMEOUT)?;
        let write_timeout = duration(md.get(WRITE_TIMEOUT), WRITE_TIMEOUT)?;
        let read_timeout = read_timeout.unwrap_or(Some(Duration::from_secs(3)));
        let write_timeout = write_timeout.unwrap_or(read_timeout);
        let retries = md
            .get(MAX_RETRIES)
            .filter(|v| !v.trim().is_empty())
            .map(|v| (MAX_RETRIES, v))
            .or_else(|| md.get(REDIS_MAX_RETRIES).map(|v| (REDIS_MAX_RETRIES, v)));
        let max_retries = match retries {
            None => 3,
            Some((field, v)) => match v.trim().parse::<i64>() {
                Ok(n) => usize::try_from(n).unwrap_or(0),
                Err(_) if v.trim().is_empty() => 3,
                Err(_) => return Err(invalid(field, format!("'{v}' is not an integer"))),
            },
        };
        let backoff = match md.get(MAX_RETRY_BACKOFF).filter(|v| !v.trim().is_empty()) {
            Some(v) => duration(Some(v), MAX_RETRY_BACKOFF)?,
            None => duration(md.get(REDIS_MAX_RETRY_INTERVAL), REDIS_MAX_RETRY_INTERVAL)?,
        };
        let min_backoff = duration(md.get(REDIS_MIN_RETRY_INTERVAL), REDIS_MIN_RETRY_INTERVAL)?;
        Ok(Self {
            host,
            port,
            username: text(REDIS_USERNAME),
            password: text(REDIS_PASSWORD),
            db,
            tls: md.bool(ENABLE_TLS, false)?,
            dial_timeout: dial_timeout.flatten().unwrap_or(Duration::from_secs(5)),
            command_timeout: read_timeout.max(write_timeout),
            max_retries,
            min_retry_backoff: min_backoff.flatten().unwrap_or(Duration::from_millis(8)),
            max_retry_backoff: backoff.flatten().unwrap_or(Duration::from_secs(2)),
        })
    }

    /// A client for this server speaking `protocol`.
    pub(crate) fn client(&self, protocol: ProtocolVersion) -> Result<Client, ComponentError> {
        let mut redis = redis::RedisConnectionInfo::default()
            .set_db(self.db)
            .set_protocol(protocol);
        if let Some(user) = &self.username {
            redis = redis.set_username(user);
        }
        if let Some(password) = &self.password {
            redis = redis.set_password(password);
        }
        let addr = if self.tls {
            // rustls needs a process-wide crypto provider; the ring one is the build's only
            // provider. Installing it twice is harmless (the second call is refused).
            let _ = rustls::crypto::ring::default_provider().install_default();
            ConnectionAddr::TcpTls {
                host: self.host.clone(),
                port: self.port,
                insecure: true,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(self.host.clone(), self.port)
        };
        let info: ConnectionInfo = addr
            .into_connection_info()
            .map_err(|e| ComponentError::Init(format!("redis: {e}")))?
            .set_redis_settings(redis);
        Client::open(info).map_err(|e| ComponentError::Init(format!("redis: {e}")))
    }

    /// `host:port`, for messages.
    pub(crate) fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    fn manager_config(&self) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.dial_timeout))
            .set_response_timeout(self.command_timeout)
            .set_number_of_retries(self.max_retries)
            .set_min_delay(self.min_retry_backoff)
            .set_max_delay(self.max_retry_backoff)
    }
}

// === impl RedisConnection ===

impl RedisConnection {
    /// Connects and checks the server answers `PING`.
    ///
    /// RESP3 is preferred because it lets the connection notice at once that the server went
    /// away and reconnect before the next call; servers older than Redis 6 get RESP2.
    pub(crate) async fn connect(md: &ConnectionMetadata) -> Result<Self, ComponentError> {
        let address = md.address();
        let manager = match open(md, md.client(ProtocolVersion::RESP3)?).await {
            Ok(manager) => manager,
            Err(e) if e.kind() == redis::ErrorKind::RESP3NotSupported => {
                tracing::debug!(error = %e, "Redis refused RESP3, falling back to RESP2");
                let client = md.client(ProtocolVersion::RESP2)?;
                open(md, client)
                    .await
                    .map_err(|e| init_error(&address, e))?
            }
            Err(e) => return Err(init_error(&address, e)),
        };
        let conn = Self {
            manager,
            call_timeout: md.command_timeout.unwrap_or(FALLBACK_CALL_TIMEOUT),
            address,
        };
        conn.call(|mut c| async move { redis::cmd("PING").query_async::<()>(&mut c).await })
            .await
            .map_err(ComponentError::Init)?;
        Ok(conn)
    }

    /// Runs `op` on the connection within the call timeout, returning a readable error.
    ///
    /// A connection refusal is retried once: it comes from a reconnection that failed earlier
    /// (the command was never sent), and the retry waits for the fresh attempt that the
    /// failure started, so the first call after Redis comes back succeeds.
    pub(crate) async fn call<T, F, Fut>(&self, op: F) -> Result<T, String>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let deadline = tokio::time::Instant::now() + self.call_timeout;
        let mut retried = false;
        loop {
            match tokio::time::timeout_at(deadline, op(self.manager.clone())).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) if !retried && e.is_connection_refusal() => retried = true,
                Ok(Err(e)) => return Err(describe(&self.address, &e)),
                Err(_) => {
                    return Err(format!(
                        "redis at {}: no answer within {:?}",
                        self.address, self.call_timeout
                    ));
                }
            }
        }
    }
}

async fn open(md: &ConnectionMetadata, client: Client) -> RedisResult<ConnectionManager> {
    // Bounds the first connection with its retries; later ones are bounded per call.
    let limit = md.dial_timeout + md.max_retry_backoff;
    let connecting = ConnectionManager::new_with_config(client, md.manager_config());
    tokio::time::timeout(limit, connecting)
        .await
        .unwrap_or_else(|_| {
            Err(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no connection within {limit:?}"),
            )))
        })
}

/// Refuses the deployment modes Mecha does not implement, rather than silently using one node.
fn refuse_unsupported(init: &ComponentInit) -> Result<(), ComponentError> {
    let md = &init.metadata;
    match md.get(REDIS_TYPE).map(str::trim) {
        None | Some("") => {}
        Some(t) if t.eq_ignore_ascii_case("node") => {}
        Some(t) if t.eq_ignore_ascii_case("cluster") => {
            return Err(invalid(REDIS_TYPE, "Redis Cluster is not supported".into()));
        }
        Some(t) => return Err(invalid(REDIS_TYPE, format!("'{t}' is not node or cluster"))),
    }
    if md.bool(FAILOVER, false)? {
        return Err(invalid(
            FAILOVER,
            "Redis Sentinel failover is not supported".into(),
        ));
    }
    if md
        .get(SENTINEL_MASTER_NAME)
        .is_some_and(|v| !v.trim().is_empty())
    {
        return Err(invalid(
            SENTINEL_MASTER_NAME,
            "Redis Sentinel is not supported".into(),
        ));
    }
    if md.bool(USE_ENTRA_ID, false)? {
        return Err(invalid(
            USE_ENTRA_ID,
            "Entra ID authentication is not supported".into(),
        ));
    }
    Ok(())
}

/// Splits `host:port`, `[v6]:port` or a bare host (taking `redisPort`, default 6379).
fn host_and_port(raw: &str, port_key: Option<&str>) -> Result<(String, u16), ComponentError> {
    let raw = raw.trim();
    if raw.contains(',') {
        return Err(invalid(
            REDIS_HOST,
            "several hosts need Redis Cluster or Sentinel, which are not supported".into(),
        ));
    }
    let port_of = |field: &'static str, p: &str| {
        p.trim()
            .parse::<u16>()
            .map_err(|_| invalid(field, format!("'{p}' is not a port")))
    };
    let extra_port = match port_key.map(str::trim).filter(|p| !p.is_empty()) {
        Some(p) => Some(port_of(REDIS_PORT, p)?),
        None => None,
    };
    let (host, port) = if let Some(rest) = raw.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| invalid(REDIS_HOST, format!("'{raw}' is not host:port")))?;
        match after.strip_prefix(':') {
            Some(p) => (host, Some(port_of(REDIS_HOST, p)?)),
            None => (host, None),
        }
    } else {
        match raw.rsplit_once(':') {
            Some((host, p)) if !host.contains(':') => (host, Some(port_of(REDIS_HOST, p)?)),
            _ => (raw, None),
        }
    };
    if host.is_empty() {
        return Err(invalid(REDIS_HOST, format!("'{raw}' has no host")));
    }
    match (port, extra_port) {
        (Some(a), Some(b)) if a != b => Err(invalid(
            REDIS_PORT,
            format!("redisHost already names port {a}"),
        )),
        (Some(p), _) | (None, Some(p)) => Ok((host.to_owned(), p)),
        (None, None) => Ok((host.to_owned(), 6379)),
    }
}

/// A Dapr Redis duration: an integer of milliseconds or a Go duration; a negative value
/// disables it (`Some(None)`); absent gives `None`.
fn duration(
    value: Option<&str>,
    field: &'static str,
) -> Result<Option<Option<Duration>>, ComponentError> {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if let Ok(ms) = v.parse::<i64>() {
        // `0` means the default, as in Dapr.
        return Ok((ms != 0).then(|| u64::try_from(ms).ok().map(Duration::from_millis)));
    }
    if let Some(positive) = v.strip_prefix('-') {
        return parse_go_duration(positive)
            .map(|_| Some(None))
            .map_err(|e| invalid(field, e.to_string()));
    }
    parse_go_duration(v)
        .map(|d| (!d.is_zero()).then_some(Some(d)))
        .map_err(|e| invalid(field, e.to_string()))
}

fn invalid(field: &'static str, reason: String) -> ComponentError {
    ComponentError::InvalidField { field, reason }
}

fn init_error(address: &str, e: RedisError) -> ComponentError {
    ComponentError::Init(describe(address, &e))
}

fn describe(address: &str, e: &RedisError) -> String {
    if e.is_io_error() {
        format!("redis at {address} is unreachable: {e}")
    } else {
        format!("redis at {address}: {e}")
    }
}
