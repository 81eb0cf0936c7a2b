//! HTTP handlers of health and shutdown.

use std::sync::Arc;

use axum::extract::{Query, State};
use http::StatusCode;

use crate::error::ApiError;
use crate::sidecar::Services;

/// `GET /v1.0/healthz[?appid=X]`.
pub(super) async fn healthz(
    State(s): State<Arc<Services>>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<StatusCode, ApiError> {
    let asked = params
        .iter()
        .find(|(k, _)| k == "appid")
        .map(|(_, v)| v.as_str());
    s.health.check(&s.app_id, asked)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1.0/healthz/outbound`.
pub(super) async fn outbound(State(s): State<Arc<Services>>) -> Result<StatusCode, ApiError> {
    s.health.check_outbound()?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1.0/shutdown`: answers, then starts a graceful shutdown.
pub(super) async fn shutdown(State(s): State<Arc<Services>>) -> StatusCode {
    tracing::info!("Shutdown requested through the API");
    s.shutdown.trigger();
    StatusCode::NO_CONTENT
}
