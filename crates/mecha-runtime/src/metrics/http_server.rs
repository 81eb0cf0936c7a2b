//! The axum middleware that measures the HTTP API.

use std::sync::Arc;
use std::time::Instant;

use axum::body::HttpBody;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderMap, header};

use super::{Metrics, UNMATCHED_PATH};

/// Records [`Metrics::http_server_request`] for every request of a router:
/// `router.layer(axum::middleware::from_fn_with_state(metrics, http_layer))`.
///
/// The `path` label is the route template ([`MatchedPath`]), which `Router::layer` middleware
/// sees; requests no route matched (the fallback) are labelled [`UNMATCHED_PATH`]. The latency
/// ends when the handler returns its response (before a streamed body is sent). Sizes come from
/// `Content-Length` or an exactly known body size, and are 0 for streamed bodies.
pub async fn http_layer(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let path = req.extensions().get::<MatchedPath>().cloned();
    let path = path.as_ref().map_or(UNMATCHED_PATH, MatchedPath::as_str);
    measure(&metrics, path, req, |req| next.run(req)).await
}

/// Runs `handle` on `req` and records it as a request to the route `path` (a template).
pub async fn measure<F, Fut>(metrics: &Metrics, path: &str, req: Request, handle: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let start = Instant::now();
    let method = req.method().clone();
    let req_bytes = body_size(req.headers(), req.body().size_hint().exact());
    let response = handle(req).await;
    let res_bytes = body_size(response.headers(), response.body().size_hint().exact());
    metrics.http_server_request(
        &method,
        path,
        response.status().as_u16(),
        start.elapsed(),
        req_bytes,
        res_bytes,
    );
    response
}

fn body_size(headers: &HeaderMap, exact: Option<u64>) -> u64 {
    exact
        .or_else(|| {
            headers
                .get(header::CONTENT_LENGTH)?
                .to_str()
                .ok()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::super::tests::sample;
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::routing::{get, post};
    use tower::ServiceExt;

    #[tokio::test]
    async fn records_route_template_status_and_sizes() {
        let metrics = Arc::new(Metrics::new("app1"));
        let router = Router::new()
            .route("/v1.0/state/{store}/{key}", get(|| async { "hello" }))
            .route(
                "/v1.0/publish/{pubsub}/{*topic}",
                post(|| async { (http::StatusCode::NO_CONTENT, "") }),
            )
            .layer(axum::middleware::from_fn_with_state(
                metrics.clone(),
                http_layer,
            ));

        for key in ["a", "b"] {
            let res = router
                .clone()
                .oneshot(
                    Request::get(format!("/v1.0/state/store1/{key}"))
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
        }
        let res = router
            .clone()
            .oneshot(
                Request::post("/v1.0/publish/ps/orders/eu")
                    .body(Body::from("0123456789"))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
        let res = router
            .clone()
            .oneshot(Request::get("/nowhere/123").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), 404);

        let text = metrics.render();
        let get = r#"app_id="app1",method="GET",path="/v1.0/state/{store}/{key}""#;
        assert_eq!(
            sample(&text, &format!("dapr_http_server_request_count{{{get}}}")),
            Some(2.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                &format!("dapr_http_server_response_bytes_sum{{{get},status=\"200\"}}")
            ),
            Some(10.0)
        );
        let post = r#"app_id="app1",method="POST",path="/v1.0/publish/{pubsub}/{*topic}""#;
        assert_eq!(
            sample(
                &text,
                &format!("dapr_http_server_latency_count{{{post},status=\"204\"}}")
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                &format!("dapr_http_server_request_bytes_sum{{{post}}}")
            ),
            Some(10.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"dapr_http_server_response_count{app_id="app1",method="GET",path="unmatched",status="404"}"#
            ),
            Some(1.0)
        );
        assert!(!text.contains("store1"));
        assert!(!text.contains("nowhere"));
    }
}
