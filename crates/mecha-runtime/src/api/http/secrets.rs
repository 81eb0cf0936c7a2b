//! HTTP handlers of the secrets API.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;

use super::{json_response, split_metadata};
use crate::error::ApiError;
use crate::sidecar::Services;

/// `GET /v1.0/secrets/{store}/{key}`; `{key}` = `bulk` reads every secret.
pub(super) async fn get(
    State(s): State<Arc<Services>>,
    Path((store, key)): Path<(String, String)>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let (metadata, _) = split_metadata(params);
    if key == "bulk" {
        return Ok(json_response(&s.secrets.bulk(&store, &metadata).await?));
    }
    let values = s.secrets.get(&store, &key, &metadata).await?;
    if values.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Ok(json_response(&values))
}
