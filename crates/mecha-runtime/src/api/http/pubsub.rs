//! HTTP handlers of the pub/sub API: publish and bulk publish.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{body, split_metadata};
use crate::error::ApiError;
use crate::pubsub::{BulkPublishEntry, Publish, events_error};
use crate::sidecar::Services;

fn header_text(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// `POST|PUT /v1.0/publish/{pubsub}/{topic...}`.
pub(super) async fn publish(
    State(s): State<Arc<Services>>,
    Path((pubsub, topic)): Path<(String, String)>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let data = body(raw, s.max_request_body)?;
    let (metadata, _) = split_metadata(params);
    s.pubsub
        .publish(Publish {
            pubsub,
            topic,
            data,
            content_type: header_text(&headers, header::CONTENT_TYPE),
            metadata,
            traceparent: header_text(&headers, "traceparent"),
            tracestate: header_text(&headers, "tracestate"),
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BulkEntryIn {
    #[serde(default)]
    entry_id: String,
    #[serde(default)]
    event: Value,
    #[serde(default)]
    content_type: String,
    #[serde(default)]
    metadata: HashMap<String, String>,
}

/// `POST|PUT /v1.0(-alpha1)/publish/bulk/{pubsub}/{topic...}`: 204 when every entry was
/// published, else 500 listing the failed entries.
pub(super) async fn bulk_publish(
    State(s): State<Arc<Services>>,
    Path((pubsub, topic)): Path<(String, String)>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let raw = body(raw, s.max_request_body)?;
    let entries: Vec<BulkEntryIn> = serde_json::from_slice(&raw).map_err(|e| {
        events_error(format!(
            "error when unmarshaling the request for bulk publish: {e}"
        ))
    })?;
    let entries = entries
        .into_iter()
        .map(|e| {
            let content_type = if e.content_type.is_empty() {
                if e.event.is_string() {
                    "text/plain"
                } else {
                    "application/json"
                }
                .to_owned()
            } else {
                e.content_type
            };
            let data = match &e.event {
                Value::String(text) if !crate::pubsub::cloudevent::is_json(&content_type) => {
                    Bytes::from(text.clone())
                }
                v => Bytes::from(serde_json::to_vec(v).unwrap_or_default()),
            };
            BulkPublishEntry {
                entry_id: e.entry_id,
                data,
                content_type,
                metadata: e.metadata,
            }
        })
        .collect();
    let (metadata, _) = split_metadata(params);
    let traceparent = header_text(&headers, "traceparent");
    let failed = s
        .pubsub
        .bulk_publish(&pubsub, &topic, entries, metadata, traceparent.as_deref())
        .await?;
    if failed.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    tracing::warn!(pubsub = %pubsub, topic = %topic, failed = failed.len(), "Bulk publish partly failed");
    let body = json!({
        "failedEntries": failed
            .iter()
            .map(|f| json!({"entryId": f.entry_id, "error": f.error}))
            .collect::<Vec<_>>(),
        "errorCode": "ERR_PUBSUB_PUBLISH_MESSAGE",
    });
    Ok((
        StatusCode::INTERNAL_SERVER_ERROR,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response())
}
