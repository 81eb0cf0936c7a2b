//! Header rules of invocation, and handing a request to the app: HTTP as HTTP, gRPC as gRPC,
//! or an HTTP request mapped to `OnInvoke` for gRPC apps.

use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use mecha_proto::common;

use super::Kind;
use crate::app_channel::AppChannel;

/// Headers that belong to one connection, never forwarded.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes what must not reach the callee: hop-by-hop headers, the sidecar's API token and the
/// `dapr-app-id` routing header (and a basic-auth header that only carried the app id).
pub(crate) fn strip_request_headers(h: &mut HeaderMap) {
    const API_TOKEN: HeaderName = HeaderName::from_static(crate::api::http::API_TOKEN_HEADER);
    const APP_ID: HeaderName = HeaderName::from_static("dapr-app-id");
    strip_hop_by_hop(h);
    h.remove(API_TOKEN);
    h.remove(APP_ID);
    h.remove(header::HOST);
    if h.get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| app_id_from_basic_auth(v).is_some())
    {
        h.remove(header::AUTHORIZATION);
    }
}

/// Removes the hop-by-hop headers, and those named by `Connection`.
pub(crate) fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Most messages carry none (gRPC ones only `TE: trailers`, which stays): one pass over
    // the names is cheaper than a lookup for each.
    let te_only_trailers = || {
        let mut te = h.get_all(header::TE).iter();
        te.next()
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"))
            && te.next().is_none()
    };
    if !h
        .keys()
        .any(|n| HOP_BY_HOP.contains(n) && (n != header::TE || !te_only_trailers()))
    {
        return;
    }
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::try_from(n.trim()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    // `TE: trailers` is end to end for gRPC (HTTP/2 allows no other value).
    let te_trailers = h
        .get(header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    for n in &HOP_BY_HOP {
        h.remove(n);
    }
    if te_trailers {
        h.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// The `X-Forwarded-For` and `Forwarded` values of the last (caller address, `Host`) seen:
/// apps call their sidecar from one address with one `Host`, so the values are made once.
#[derive(Default)]
pub(crate) struct ForwardedCache(Mutex<Option<ForwardedValues>>);

struct ForwardedValues {
    ip: Option<IpAddr>,
    host: Option<HeaderValue>,
    forwarded_for: Option<HeaderValue>,
    forwarded: Option<HeaderValue>,
}

impl ForwardedCache {
    /// The `X-Forwarded-For` and `Forwarded` values for a caller at `ip` that sent `host`.
    fn values(
        &self,
        ip: Option<IpAddr>,
        host: Option<&HeaderValue>,
    ) -> (Option<HeaderValue>, Option<HeaderValue>) {
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = last.as_ref()
            && v.ip == ip
            && v.host.as_ref() == host
        {
            return (v.forwarded_for.clone(), v.forwarded.clone());
        }
        let host_text = host.and_then(|v| v.to_str().ok());
        let ip_text = ip.map(|ip| ip.to_string());
        let mut forwarded = String::new();
        if let Some(ip) = &ip_text {
            forwarded.push_str("for=");
            forwarded.push_str(ip);
        }
        if let Some(host) = host_text {
            if !forwarded.is_empty() {
                forwarded.push(';');
            }
            forwarded.push_str("host=");
            forwarded.push_str(host);
        }
        let values = ForwardedValues {
            ip,
            host: host.cloned(),
            forwarded_for: ip_text.and_then(|ip| HeaderValue::from_str(&ip).ok()),
            forwarded: (!forwarded.is_empty())
                .then(|| HeaderValue::from_str(&forwarded).ok())
                .flatten(),
        };
        let answer = (values.forwarded_for.clone(), values.forwarded.clone());
        *last = Some(values);
        answer
    }
}

/// Adds `X-Forwarded-For`, `X-Forwarded-Host` and `Forwarded` for the calling app.
pub(crate) fn add_forwarded(h: &mut HeaderMap, peer: Option<SocketAddr>, cache: &ForwardedCache) {
    let host = h.get(header::HOST).filter(|v| v.to_str().is_ok()).cloned();
    let (forwarded_for, forwarded) = cache.values(peer.map(|p| p.ip()), host.as_ref());
    if let Some(v) = forwarded_for {
        h.append(HeaderName::from_static("x-forwarded-for"), v);
    }
    if let Some(host) = host {
        h.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
    if let Some(v) = forwarded {
        h.insert(header::FORWARDED, v);
    }
}

/// The app id of `Authorization: Basic base64("dapr-app-id:<appId>")`.
pub(crate) fn app_id_from_basic_auth(value: &str) -> Option<String> {
    use base64::Engine;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, app) = text.split_once(':')?;
    (user == "dapr-app-id" && !app.is_empty()).then(|| app.to_owned())
}

/// Hands `req` (its URI the method path and query) to the app, within `deadline` if given.
pub(crate) async fn to_app(
    app: &AppChannel,
    kind: Kind,
    req: Request<Body>,
    deadline: Option<Duration>,
    pipeline: Option<&crate::middleware::Pipeline>,
) -> Result<Response<Body>, String> {
    let call = async {
        let _permit = app.permit().await;
        if kind == Kind::Http && app.is_grpc() {
            return on_invoke(app, req).await;
        }
        if let Some(p) = pipeline {
            return Ok(p
                .handle(req, |req| async move {
                    match app.forward(req).await {
                        Ok(mut res) => {
                            strip_hop_by_hop(res.headers_mut());
                            res
                        }
                        Err(e) => {
                            let mut res = Response::new(Body::from(e));
                            *res.status_mut() = StatusCode::BAD_GATEWAY;
                            res
                        }
                    }
                })
                .await);
        }
        let mut res = app.forward(req).await?;
        strip_hop_by_hop(res.headers_mut());
        Ok(res)
    };
    match deadline {
        Some(d) => tokio::time::timeout(d, call)
            .await
            .map_err(|_| format!("the app did not answer within the caller's deadline of {d:?}"))?,
        None => call.await,
    }
}

/// An HTTP invocation of a gRPC app: `AppCallback.OnInvoke` with the HTTP extension.
async fn on_invoke(app: &AppChannel, req: Request<Body>) -> Result<Response<Body>, String> {
    let Some(mut grpc) = app.grpc() else {
        return Err("the app does not speak gRPC".into());
    };
    let (parts, body) = req.into_parts();
    let data = body
        .collect()
        .await
        .map_err(|e| format!("reading the request body: {e}"))?
        .to_bytes();
    let verb = match parts.method.as_str() {
        "GET" => common::http_extension::Verb::Get,
        "HEAD" => common::http_extension::Verb::Head,
        "POST" => common::http_extension::Verb::Post,
        "PUT" => common::http_extension::Verb::Put,
        "DELETE" => common::http_extension::Verb::Delete,
        "CONNECT" => common::http_extension::Verb::Connect,
        "OPTIONS" => common::http_extension::Verb::Options,
        "TRACE" => common::http_extension::Verb::Trace,
        "PATCH" => common::http_extension::Verb::Patch,
        _ => common::http_extension::Verb::None,
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let message = common::InvokeRequest {
        method: parts.uri.path().trim_start_matches('/').to_owned(),
        data: Some(prost_types::Any {
            type_url: String::new(),
            value: data.to_vec(),
        }),
        content_type,
        http_extension: Some(common::HttpExtension {
            verb: verb as i32,
            querystring: parts.uri.query().unwrap_or_default().to_owned(),
        }),
    };
    let mut request = app.grpc_request(message);
    for (k, v) in &parts.headers {
        if k == header::CONTENT_TYPE || k == header::CONTENT_LENGTH {
            continue;
        }
        if let (Ok(k), Ok(v)) = (
            tonic::metadata::MetadataKey::from_bytes(k.as_str().as_bytes()),
            tonic::metadata::MetadataValue::try_from(v.as_bytes()),
        ) {
            request.metadata_mut().insert(k, v);
        }
    }
    match grpc.on_invoke(request).await {
        Ok(r) => {
            let r = r.into_inner();
            let mut res = Response::new(Body::from(Bytes::from(
                r.data.map(|d| d.value).unwrap_or_default(),
            )));
            if let Ok(ct) = HeaderValue::from_str(&r.content_type)
                && !r.content_type.is_empty()
            {
                res.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            Ok(res)
        }
        Err(status) => {
            let http = http_status_of(status.code());
            let body = serde_json::json!({
                "code": status.code() as i32,
                "message": status.message(),
                "details": [],
            });
            let mut res = Response::new(Body::from(body.to_string()));
            *res.status_mut() = http;
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Ok(res)
        }
    }
}

/// The HTTP status for a gRPC code, as gRPC-gateway maps them.
pub fn http_status_of(code: tonic::Code) -> StatusCode {
    use tonic::Code as C;
    match code {
        C::Ok => StatusCode::OK,
        C::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        C::InvalidArgument | C::OutOfRange | C::FailedPrecondition => StatusCode::BAD_REQUEST,
        C::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        C::NotFound => StatusCode::NOT_FOUND,
        C::AlreadyExists | C::Aborted => StatusCode::CONFLICT,
        C::PermissionDenied => StatusCode::FORBIDDEN,
        C::Unauthenticated => StatusCode::UNAUTHORIZED,
        C::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        C::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        C::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        C::Unknown | C::Internal | C::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The gRPC code for an HTTP status (for `InvokeService` answers).
pub fn grpc_code_of(status: StatusCode) -> tonic::Code {
    use tonic::Code as C;
    match status.as_u16() {
        200..=299 => C::Ok,
        400 => C::InvalidArgument,
        401 => C::Unauthenticated,
        403 => C::PermissionDenied,
        404 => C::NotFound,
        409 => C::Aborted,
        429 => C::ResourceExhausted,
        499 => C::Cancelled,
        501 => C::Unimplemented,
        503 => C::Unavailable,
        504 => C::DeadlineExceeded,
        _ => C::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_rules() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("x-private, close"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("dapr-api-token", HeaderValue::from_static("secret"));
        h.insert("dapr-app-id", HeaderValue::from_static("b"));
        h.insert("x-keep", HeaderValue::from_static("yes"));
        h.insert(header::HOST, HeaderValue::from_static("localhost:3500"));
        let cache = ForwardedCache::default();
        add_forwarded(&mut h, Some(([10, 0, 0, 1], 1234).into()), &cache);
        strip_request_headers(&mut h);
        assert!(h.get("x-private").is_none());
        assert!(h.get(header::CONNECTION).is_none());
        assert!(h.get(header::TRANSFER_ENCODING).is_none());
        assert!(h.get("dapr-api-token").is_none());
        assert!(h.get("dapr-app-id").is_none());
        assert_eq!(h["x-keep"], "yes");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
        assert_eq!(h["x-forwarded-host"], "localhost:3500");
        assert_eq!(h[header::FORWARDED], "for=10.0.0.1;host=localhost:3500");

        // The cached values follow the caller's address and Host.
        let mut again = HeaderMap::new();
        again.insert(header::HOST, HeaderValue::from_static("localhost:3500"));
        add_forwarded(&mut again, Some(([10, 0, 0, 1], 9).into()), &cache);
        assert_eq!(again[header::FORWARDED], "for=10.0.0.1;host=localhost:3500");
        let mut other = HeaderMap::new();
        other.insert(header::HOST, HeaderValue::from_static("127.0.0.1:3500"));
        add_forwarded(&mut other, Some(([10, 0, 0, 2], 9).into()), &cache);
        assert_eq!(other["x-forwarded-for"], "10.0.0.2");
        assert_eq!(other["x-forwarded-host"], "127.0.0.1:3500");
        assert_eq!(other[header::FORWARDED], "for=10.0.0.2;host=127.0.0.1:3500");
        let mut no_host = HeaderMap::new();
        add_forwarded(&mut no_host, None, &cache);
        assert!(no_host.is_empty(), "{no_host:?}");
    }

    #[test]
    fn te_trailers_stays_and_other_hop_by_hop_headers_go() {
        let mut grpc = HeaderMap::new();
        grpc.insert(header::TE, HeaderValue::from_static("trailers"));
        grpc.insert("x-keep", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut grpc);
        assert_eq!(grpc.len(), 2);
        assert_eq!(grpc[header::TE], "trailers");

        let mut h = grpc.clone();
        h.insert(header::CONNECTION, HeaderValue::from_static("x-keep"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h[header::TE], "trailers");

        let mut h = HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("gzip"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn basic_auth_form() {
        use base64::Engine;
        let v = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("dapr-app-id:orders")
        );
        assert_eq!(app_id_from_basic_auth(&v).as_deref(), Some("orders"));
        let other = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("user:pw")
        );
        assert_eq!(app_id_from_basic_auth(&other), None);
    }
}
