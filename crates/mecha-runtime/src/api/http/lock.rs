//! HTTP handlers of the distributed lock API (`v1.0-alpha1`).

use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::Response;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use super::{body, json_response};
use crate::error::ApiError;
use crate::sidecar::Services;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LockBody {
    #[serde(default)]
    resource_id: String,
    #[serde(default)]
    lock_owner: String,
    #[serde(default)]
    expiry_in_seconds: i64,
}

fn decode(raw: &[u8]) -> Result<LockBody, ApiError> {
    serde_json::from_slice(raw)
        .map_err(|e| ApiError::malformed(format!("failed deserializing HTTP body: {e}")))
}

/// `POST /v1.0-alpha1/lock/{store}` → `{"success": bool}`.
pub(super) async fn lock(
    State(s): State<Arc<Services>>,
    Path(store): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req = decode(&body(raw, s.max_request_body)?)?;
    let success = s
        .lock
        .try_lock(
            &store,
            &req.resource_id,
            &req.lock_owner,
            req.expiry_in_seconds,
        )
        .await?;
    Ok(json_response(&json!({ "success": success })))
}

/// `POST /v1.0-alpha1/unlock/{store}` → `{"status": n}`.
pub(super) async fn unlock(
    State(s): State<Arc<Services>>,
    Path(store): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req = decode(&body(raw, s.max_request_body)?)?;
    let status = s
        .lock
        .unlock(&store, &req.resource_id, &req.lock_owner)
        .await?;
    Ok(json_response(&json!({ "status": status as i32 })))
}
