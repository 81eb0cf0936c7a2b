//! HTTP handlers of the bindings API.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode, header};
use mecha_core::bindings::InvokeRequest;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::body;
use crate::error::ApiError;
use crate::sidecar::Services;

#[derive(Deserialize)]
struct InvokeBody {
    #[serde(default)]
    data: Option<Box<RawValue>>,
    #[serde(default)]
    metadata: HashMap<String, String>,
    #[serde(default)]
    operation: String,
}

/// `POST|PUT /v1.0/bindings/{name}`: `data` reaches the binding JSON-encoded, as in Dapr.
pub(super) async fn invoke(
    State(s): State<Arc<Services>>,
    Path(name): Path<String>,
    parent: Option<axum::Extension<crate::trace::SpanContext>>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let raw = body(raw, s.max_request_body)?;
    let req: InvokeBody = serde_json::from_slice(&raw)
        .map_err(|e| ApiError::malformed(format!("failed deserializing HTTP body: {e}")))?;
    let data = req
        .data
        .map(|d| Bytes::from(String::from(Box::<str>::from(d))))
        .unwrap_or_default();
    let res = s
        .bindings
        .invoke(
            &name,
            InvokeRequest {
                operation: req.operation,
                data,
                metadata: req.metadata,
            },
            parent.map(|p| p.0),
        )
        .await?;
    let mut out = match res.data.filter(|d| !d.is_empty()) {
        Some(data) => {
            let mut r = data.into_response();
            let ct = res.content_type.as_deref().unwrap_or("application/json");
            if let Ok(v) = HeaderValue::from_str(ct) {
                r.headers_mut().insert(header::CONTENT_TYPE, v);
            }
            r
        }
        None => StatusCode::NO_CONTENT.into_response(),
    };
    for (k, v) in res.metadata {
        if let (Ok(name), Ok(v)) = (
            HeaderName::try_from(format!("metadata.{k}")),
            HeaderValue::from_bytes(v.as_bytes()),
        ) {
            out.headers_mut().insert(name, v);
        }
    }
    Ok(out)
}
