//! HTTP handlers of the configuration API (`v1.0` and `v1.0-alpha1`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::json;

use super::{json_response, split_metadata};
use crate::error::ApiError;
use crate::sidecar::Services;

type Params = Query<Vec<(String, String)>>;

fn keys(rest: Vec<(String, String)>) -> Vec<String> {
    rest.into_iter()
        .filter(|(k, _)| k == "key")
        .map(|(_, v)| v)
        .collect()
}

/// `GET /{ver}/configuration/{store}?key=a&key=b`.
pub(super) async fn get(
    State(s): State<Arc<Services>>,
    Path(store): Path<String>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let (metadata, rest) = split_metadata(params);
    let items = s.configuration.get(&store, &keys(rest), &metadata).await?;
    if items.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let out: BTreeMap<_, _> = items
        .into_iter()
        .map(|(k, i)| {
            (
                k,
                json!({"value": i.value, "version": i.version, "metadata": i.metadata}),
            )
        })
        .collect();
    Ok(json_response(&out))
}

/// `GET /{ver}/configuration/{store}/subscribe?key=…` → `{"id": …}`; updates go to the app.
pub(super) async fn subscribe(
    State(s): State<Arc<Services>>,
    Path(store): Path<String>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let (metadata, rest) = split_metadata(params);
    let id = s
        .configuration
        .subscribe_for_app(&store, &keys(rest), &metadata)
        .await?;
    Ok(json_response(&json!({ "id": id })))
}

/// `GET /{ver}/configuration/{store}/{id}/unsubscribe` → `{"ok": true}`, or 500 with
/// `{"ok": false, "message": …}`.
pub(super) async fn unsubscribe(
    State(s): State<Arc<Services>>,
    Path((store, id)): Path<(String, String)>,
) -> Response {
    match s.configuration.unsubscribe(&store, &id) {
        Ok(()) => json_response(&json!({ "ok": true })),
        Err(e) => {
            super::log_error(&e);
            let body = json!({ "ok": false, "message": e.message });
            (StatusCode::INTERNAL_SERVER_ERROR, json_response(&body)).into_response()
        }
    }
}
