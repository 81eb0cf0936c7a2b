//! gRPC service invocation: `InvokeService` (mapped to an HTTP call of the target), and
//! transparent proxying of any other gRPC service to the app named by `dapr-app-id`.

use std::sync::Arc;

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderValue, Request as HttpRequest, Response as HttpResponse, header};
use http_body_util::BodyExt;
use mecha_proto::{common, runtime as rt};
use tonic::{Request, Response, Status};

use crate::invoke::{forward_app_id, grpc_code_of};
use crate::sidecar::Services;

/// `InvokeService`: the message becomes an HTTP request (`http_extension` verb, default POST;
/// path `/<method>`; query string; body; content type) to the target app.
pub(super) async fn invoke_service(
    s: &Arc<Services>,
    req: Request<rt::InvokeServiceRequest>,
) -> Result<Response<common::InvokeResponse>, Status> {
    let (metadata, _, req) = req.into_parts();
    let message = req.message.unwrap_or_default();
    let ext = message.http_extension.unwrap_or_default();
    let verb = match common::http_extension::Verb::try_from(ext.verb) {
        Ok(common::http_extension::Verb::None) | Err(_) => "POST",
        Ok(v) => v.as_str_name(),
    };
    let mut uri = format!("/{}", message.method.trim_start_matches('/'));
    if !ext.querystring.is_empty() {
        uri.push('?');
        uri.push_str(ext.querystring.trim_start_matches('?'));
    }
    let mut http = HttpRequest::builder()
        .method(verb)
        .uri(uri)
        .body(Body::from(Bytes::from(
            message.data.map(|d| d.value).unwrap_or_default(),
        )))
        .map_err(|e| Status::invalid_argument(format!("invalid method: {e}")))?;
    if !message.content_type.is_empty()
        && let Ok(v) = HeaderValue::from_str(&message.content_type)
    {
        http.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    for kv in metadata.iter() {
        if let tonic::metadata::KeyAndValueRef::Ascii(k, v) = kv {
            let name = k.as_str();
            if name.starts_with("grpc-")
                || name == "content-type"
                || name == "te"
                || name == "user-agent"
            {
                continue;
            }
            if let (Ok(n), Ok(v)) = (
                http::HeaderName::try_from(name),
                HeaderValue::from_bytes(v.as_encoded_bytes()),
            ) {
                http.headers_mut().insert(n, v);
            }
        }
    }
    let res = s.invoke.invoke_http(&req.id, http, None).await?;
    let status = res.status();
    let content_type = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(|e| Status::internal(format!("reading the answer: {e}")))?
        .to_bytes();
    if !status.is_success() {
        return Err(Status::new(
            grpc_code_of(status),
            String::from_utf8_lossy(&body).into_owned(),
        ));
    }
    Ok(Response::new(common::InvokeResponse {
        data: Some(prost_types::Any {
            type_url: String::new(),
            value: body.to_vec(),
        }),
        content_type,
    }))
}

/// Any gRPC call the sidecar does not serve itself: passed through to the app named by the
/// `dapr-app-id` metadata (`UNIMPLEMENTED` without it).
pub(crate) async fn proxy(s: Arc<Services>, req: HttpRequest<Body>) -> HttpResponse<Body> {
    if let Some(expected) = &s.api_token
        && req
            .headers()
            .get(crate::api::http::API_TOKEN_HEADER)
            .map(HeaderValue::as_bytes)
            != Some(expected.as_bytes())
    {
        return grpc_error(Status::unauthenticated("missing or wrong api token"));
    }
    let Some(app_id) = forward_app_id(req.headers()) else {
        return grpc_error(Status::unimplemented(format!(
            "unknown service or method {}; set dapr-app-id metadata to call an app",
            req.uri().path()
        )));
    };
    match s.invoke.proxy_grpc(&app_id, req).await {
        Ok(res) => res,
        Err(e) => grpc_error(Status::from(e)),
    }
}

fn grpc_error(status: Status) -> HttpResponse<Body> {
    status.into_http::<Body>()
}
