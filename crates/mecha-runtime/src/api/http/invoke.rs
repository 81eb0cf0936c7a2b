//! HTTP handlers of service invocation: `/v1.0/invoke/{appId}/method/{method...}` with any
//! verb, and any other path carrying `dapr-app-id` (header or basic auth).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use http::{Uri, header};

use crate::invoke::{forward_app_id, no_app_id};
use crate::sidecar::Services;

/// Where invocation calls start; [`ROUTE`] is their route.
pub(super) const PREFIX: &str = "/v1.0/invoke/";
/// The route of invocation calls (also their `path` label in the HTTP metrics).
pub(super) const ROUTE: &str = "/v1.0/invoke/{*rest}";

/// `ANY /v1.0/invoke/{appId}/method/{method...}`: the raw (still escaped) method path and
/// the query string are forwarded.
pub(super) async fn invoke(State(s): State<Arc<Services>>, req: Request) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    invoke_from(&s, req, peer).await
}

/// [`invoke`] without the router (see [`super::HttpApi`]), measured as [`ROUTE`].
pub(super) async fn direct(s: Arc<Services>, req: Request, peer: SocketAddr) -> Response {
    match &s.metrics {
        Some(m) => {
            crate::metrics::measure(m, ROUTE, req, |req| invoke_from(&s, req, Some(peer))).await
        }
        None => invoke_from(&s, req, Some(peer)).await,
    }
}

async fn invoke_from(s: &Arc<Services>, req: Request, peer: Option<SocketAddr>) -> Response {
    let path = req.uri().path();
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return no_app_id().into_response();
    };
    let Some((app_id, method)) = rest.split_once("/method") else {
        return no_app_id().into_response();
    };
    let app_id = app_id.to_owned();
    let method = if method.is_empty() { "/" } else { method };
    let target_uri = match req.uri().query() {
        Some(q) => format!("{method}?{q}"),
        None => method.to_owned(),
    };
    forward(s, app_id, target_uri, req, peer).await
}

/// Any path with `dapr-app-id` (or basic auth with user `dapr-app-id`): the whole path is the
/// method. Without it, the reference's 404.
pub(super) async fn fallback(State(s): State<Arc<Services>>, req: Request) -> Response {
    let Some(app_id) = forward_app_id(req.headers()) else {
        return no_app_id().into_response();
    };
    let target_uri = req
        .uri()
        .path_and_query()
        .map_or("/".to_owned(), |p| p.as_str().to_owned());
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    forward(&s, app_id, target_uri, req, peer).await
}

async fn forward(
    s: &Arc<Services>,
    app_id: String,
    target_uri: String,
    req: Request,
    peer: Option<SocketAddr>,
) -> Response {
    let (mut parts, body) = req.into_parts();
    parts.uri = match target_uri.parse::<Uri>() {
        Ok(u) => u,
        Err(e) => {
            return crate::error::ApiError::malformed(format!("invalid method path: {e}"))
                .into_response();
        }
    };
    // The original Host is what X-Forwarded-Host reports.
    if !parts.headers.contains_key(header::HOST)
        && let Some(a) = parts.extensions.get::<http::uri::Authority>()
        && let Ok(v) = http::HeaderValue::from_str(a.as_str())
    {
        parts.headers.insert(header::HOST, v);
    }
    let req = http::Request::from_parts(parts, Body::new(body));
    match s.invoke.invoke_http(&app_id, req, peer).await {
        Ok(res) => res.into_response(),
        Err(e) => e.into_response(),
    }
}
