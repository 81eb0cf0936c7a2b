//! `bindings.redis` v1: an output binding storing plain Redis strings, as Dapr's.
//!
//! Operations (each needs the request metadata `key`):
//! * `create`: `SET key data`, with the request's `ttlInSeconds` (a positive integer) as the
//!   expiry, set in the same command (Dapr sends `EXPIRE` after `SET`).
//! * `get`: the value, or an empty response when the key is absent; with the request
//!   metadata `delete: true` the key is removed as it is read (`GETDEL`).
//! * `delete`: `DEL key`.
//! * `increment`: `INCR key`, then the expiry when `ttlInSeconds` is given (one `MULTI`);
//!   answers nothing, as Dapr's.
//!
//! Tested against Redis 7 on `127.0.0.1:6379` (`MECHA_TEST_REDIS_URL`) by
//! `tests/bindings_db.rs`.
//!
//! Metadata: the connection keys of every Redis component (`redisHost` required,
//! `redisPassword`, `redisUsername`, `redisDB`, `enableTLS`, `dialTimeout`, `readTimeout`,
//! `writeTimeout`, `maxRetries`, …; see `state::redis::connection`), with the same
//! time-bounded, self-reconnecting connection. `redisType: cluster`, `failover` and
//! `useEntraID` are refused.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use mecha_core::bindings::{
    BindingComponent, BindingError, DIRECTION, InvokeRequest, InvokeResponse, OutputBinding, ROUTE,
};
use mecha_core::component::{ComponentError, ComponentInit};
use mecha_core::metadata::parse_bool;

use crate::state::redis::connection::{CONNECTION_KEYS, ConnectionMetadata, RedisConnection};

const CREATE: &str = "create";
const GET: &str = "get";
const DELETE: &str = "delete";
const INCREMENT: &str = "increment";
const OPERATIONS: &[&str] = &[CREATE, DELETE, GET, INCREMENT];
const KEY: &str = "key";
const TTL_IN_SECONDS: &str = "ttlInSeconds";
/// Request metadata of `get`: remove the key as it is read.
const DELETE_FLAG: &str = "delete";

/// The `bindings.redis` component.
pub struct RedisBinding {
    redis: RedisConnection,
}

// === impl RedisBinding ===

impl RedisBinding {
    /// Connects to `redisHost`, checking that it answers, and returns the output binding.
    pub async fn create(init: ComponentInit) -> Result<Arc<BindingComponent>, ComponentError> {
        let known: Vec<&str> = CONNECTION_KEYS
            .iter()
            .copied()
            .chain([DIRECTION, ROUTE])
            .collect();
        init.metadata.warn_unknown(&init.name, &known);
        let md = ConnectionMetadata::parse(&init)?;
        let redis = RedisConnection::connect(&md).await?;
        Ok(Arc::new(BindingComponent {
            input: None,
            output: Some(Arc::new(Self { redis })),
        }))
    }
}

#[async_trait]
impl OutputBinding for RedisBinding {
    fn operations(&self) -> &[&'static str] {
        OPERATIONS
    }

    async fn invoke(&self, req: InvokeRequest) -> Result<InvokeResponse, BindingError> {
        if !OPERATIONS.contains(&req.operation.as_str()) {
            return Err(BindingError::unsupported(&req.operation, OPERATIONS));
        }
        let key = match req.metadata.get(KEY) {
            Some(k) if !k.is_empty() => k.as_str(),
            _ => {
                return Err(BindingError::BadRequest(
                    "redis binding: missing key in request metadata".into(),
                ));
            }
        };
        let backend = BindingError::Backend;
        match req.operation.as_str() {
            GET => {
                let command = match req.metadata.get(DELETE_FLAG).map(|v| parse_bool(v)) {
                    Some(Some(true)) => "GETDEL",
                    _ => "GET",
                };
                let value: Option<Vec<u8>> =
                    self.redis
                        .call(|mut c| async move {
                            redis::cmd(command).arg(key).query_async(&mut c).await
                        })
                        .await
                        .map_err(backend)?;
                Ok(InvokeResponse {
                    data: value.map(Bytes::from),
                    ..InvokeResponse::default()
                })
            }
            CREATE => {
                let ttl = ttl_seconds(&req)?;
                let data = req.data.as_ref();
                self.redis
                    .call(|mut c| async move {
                        let mut cmd = redis::cmd("SET");
                        cmd.arg(key).arg(data);
                        if let Some(ttl) = ttl {
                            cmd.arg("EX").arg(ttl);
                        }
                        cmd.query_async::<()>(&mut c).await
                    })
                    .await
                    .map_err(backend)?;
                Ok(InvokeResponse::default())
            }
            DELETE => {
                self.redis
                    .call(|mut c| async move {
                        redis::cmd("DEL").arg(key).query_async::<()>(&mut c).await
                    })
                    .await
                    .map_err(backend)?;
                Ok(InvokeResponse::default())
            }
            _ => {
                let ttl = ttl_seconds(&req)?;
                self.redis
                    .call(|mut c| async move {
                        let mut pipe = redis::pipe();
                        pipe.atomic().cmd("INCR").arg(key).ignore();
                        if let Some(ttl) = ttl {
                            pipe.cmd("EXPIRE").arg(key).arg(ttl).ignore();
                        }
                        pipe.query_async::<()>(&mut c).await
                    })
                    .await
                    .map_err(backend)?;
                Ok(InvokeResponse::default())
            }
        }
    }
}

/// The request's `ttlInSeconds`: a positive number of seconds, as Dapr requires.
fn ttl_seconds(req: &InvokeRequest) -> Result<Option<u64>, BindingError> {
    match req.metadata.get(TTL_IN_SECONDS).map(|v| v.trim()) {
        None | Some("") => Ok(None),
        Some(v) => match v.parse::<i64>() {
            Ok(n) if n > 0 => Ok(Some(n.unsigned_abs())),
            Ok(n) => Err(BindingError::BadRequest(format!(
                "{TTL_IN_SECONDS} value must be higher than zero: actual is {n}"
            ))),
            Err(_) => Err(BindingError::BadRequest(format!(
                "{TTL_IN_SECONDS} value must be a valid integer: actual is '{v}'"
            ))),
        },
    }
}
