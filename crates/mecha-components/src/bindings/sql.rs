//! What the SQL bindings (`bindings.postgresql`, `bindings.mysql`) share: the request and
//! response shape of `exec`/`query`/`close`, the time formats of their metadata, and the
//! operation dispatch itself, so that each binding only says how to run one statement.

pub(crate) mod request;
pub(crate) mod time;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use mecha_core::bindings::{BindingError, InvokeRequest, InvokeResponse};
use serde_json::Value;

use self::request::{CLOSE, EXEC, OPERATIONS, QUERY, SqlRequest};

/// What running one statement gave.
pub(crate) enum Outcome {
    /// The rows of a query, each already in its JSON shape.
    Rows(Vec<Value>),
    /// The rows an `exec` changed.
    Affected(u64),
}

/// A database a SQL binding runs statements on.
pub(crate) trait Database: Send + Sync {
    /// Runs one `exec` or `query`.
    fn run(&self, req: &SqlRequest) -> impl Future<Output = Result<Outcome, BindingError>> + Send;

    /// Closes the connection pool.
    fn close_pool(&self) -> impl Future<Output = ()> + Send;

    /// Set once the binding is closed.
    fn closed(&self) -> &AtomicBool;
}

/// `exec`, `query` and `close`, as every SQL binding answers them.
pub(crate) async fn invoke<D: Database>(
    db: &D,
    req: InvokeRequest,
) -> Result<InvokeResponse, BindingError> {
    match req.operation.as_str() {
        CLOSE => {
            close(db).await;
            return Ok(InvokeResponse::default());
        }
        EXEC | QUERY => {}
        other => return Err(BindingError::unsupported(other, OPERATIONS)),
    }
    if db.closed().load(Ordering::Acquire) {
        return Err(BindingError::Backend("component is closed".into()));
    }
    let sql = SqlRequest::parse(&req)?;
    Ok(match db.run(&sql).await? {
        Outcome::Affected(rows) => sql.respond(None, Some(rows)),
        Outcome::Rows(rows) => {
            let data = serde_json::to_vec(&rows)
                .map_err(|e| BindingError::Backend(format!("serializing the rows: {e}")))?;
            sql.respond(Some(Bytes::from(data)), None)
        }
    })
}

/// Closes the pool once; later operations fail with "component is closed".
pub(crate) async fn close<D: Database>(db: &D) {
    if !db.closed().swap(true, Ordering::AcqRel) {
        db.close_pool().await;
    }
}
