//! The tower layer that measures a tonic gRPC server.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::HttpBody;
use futures::FutureExt;
use futures::future::{Join, Map, Ready};
use http_body_util::BodyStream;
use tower::{Layer, Service};

use super::Metrics;

/// gRPC status `CANCELLED`: the response was dropped before it finished.
const CANCELLED: i32 = 1;
/// gRPC status `UNKNOWN`: the response ended without a status.
const UNKNOWN: i32 = 2;

/// A tower layer recording [`Metrics::grpc_server_rpc`] for every call of a tonic server:
/// `tonic::transport::Server::builder().layer(GrpcMetricsLayer::new(metrics))`.
///
/// The status is read from the `grpc-status` trailer when the response body ends (or from the
/// response headers for trailers-only responses), so the latency of a streaming call covers the
/// whole stream, as in Dapr. A response dropped before it ended (client gone) is recorded as
/// `CANCELLED`; one that ended without any status as `UNKNOWN`.
#[derive(Debug, Clone)]
pub struct GrpcMetricsLayer {
    metrics: Arc<Metrics>,
}

impl GrpcMetricsLayer {
    /// A layer recording into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`GrpcMetricsLayer`] wraps around a gRPC server.
#[derive(Debug, Clone)]
pub struct GrpcMetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

/// A gRPC call in flight (opaque): recorded exactly once, when its response ends or is dropped.
#[derive(Debug)]
pub struct GrpcCall {
    metrics: Arc<Metrics>,
    method: Arc<str>,
    start: Instant,
}

impl GrpcCall {
    fn finish(self, code: i32) {
        self.metrics
            .grpc_server_rpc_interned(self.method, code, self.start.elapsed());
    }
}

type MapResponse<R, B, E> = fn((Result<http::Response<B>, E>, GrpcCall)) -> R;

/// The response future of [`GrpcMetricsService`].
pub type GrpcMetricsFuture<F, B, E> =
    Map<Join<F, Ready<GrpcCall>>, MapResponse<Result<http::Response<GrpcMetricsBody<B>>, E>, B, E>>;

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for GrpcMetricsService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: HttpBody + Unpin,
{
    type Response = http::Response<GrpcMetricsBody<ResBody>>;
    type Error = S::Error;
    type Future = GrpcMetricsFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let pending = GrpcCall {
            method: self.metrics.grpc_methods.get(req.uri().path()),
            metrics: self.metrics.clone(),
            start: Instant::now(),
        };
        let map: MapResponse<Result<Self::Response, S::Error>, ResBody, S::Error> = wrap_response;
        futures::future::join(self.inner.call(req), futures::future::ready(pending)).map(map)
    }
}

fn wrap_response<B, E>(
    (result, pending): (Result<http::Response<B>, E>, GrpcCall),
) -> Result<http::Response<GrpcMetricsBody<B>>, E> {
    match result {
        Ok(response) => {
            let header_status = grpc_status(response.headers());
            Ok(response.map(|inner| GrpcMetricsBody {
                inner,
                header_status,
                pending: Some(pending),
            }))
        }
        Err(error) => {
            pending.finish(UNKNOWN);
            Err(error)
        }
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// The response body of [`GrpcMetricsService`]: the inner body, recording the call when it
/// ends.
#[derive(Debug)]
pub struct GrpcMetricsBody<B> {
    inner: B,
    header_status: Option<i32>,
    pending: Option<GrpcCall>,
}

impl<B> GrpcMetricsBody<B> {
    fn finish(&mut self, code: Option<i32>) {
        if let Some(pending) = self.pending.take() {
            pending.finish(code.or(self.header_status).unwrap_or(UNKNOWN));
        }
    }
}

impl<B> HttpBody for GrpcMetricsBody<B>
where
    B: HttpBody + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    // The frame type is spelled through `BodyStream`'s item, which is the same type.
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<<BodyStream<B> as futures::Stream>::Item>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.finish(grpc_status(trailers));
                }
            }
            Poll::Ready(Some(Err(_))) => this.finish(Some(UNKNOWN)),
            Poll::Ready(None) => this.finish(None),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

impl<B> Drop for GrpcMetricsBody<B> {
    fn drop(&mut self) {
        // A trailers-only response may never be polled; its status is in the headers.
        let code = self.header_status.unwrap_or(CANCELLED);
        self.finish(Some(code));
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::sample;
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use std::convert::Infallible;
    use tower::ServiceExt;

    const METHOD: &str = "/dapr.proto.runtime.v1.Dapr/GetState";

    fn completed(text: &str, status: &str) -> Option<f64> {
        sample(
            text,
            &format!(
                r#"dapr_grpc_io_server_completed_rpcs{{app_id="app1",grpc_server_method="{METHOD}",grpc_server_status="{status}"}}"#
            ),
        )
    }

    fn request() -> http::Request<()> {
        http::Request::post(format!("http://localhost{METHOD}"))
            .body(())
            .unwrap()
    }

    #[tokio::test]
    async fn records_status_from_trailers_when_the_body_ends() {
        let metrics = Arc::new(Metrics::new("app1"));
        let svc = GrpcMetricsLayer::new(metrics.clone()).layer(tower::service_fn(
            |_req: http::Request<()>| async {
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", http::HeaderValue::from_static("5"));
                let body = Full::new(Bytes::from_static(b"\0\0\0\0\0"))
                    .with_trailers(futures::future::ready(Some(Ok(trailers))));
                Ok::<_, Infallible>(http::Response::new(body))
            },
        ));
        let response = svc.oneshot(request()).await.unwrap();
        // Nothing is recorded before the body has been sent.
        assert_eq!(completed(&metrics.render(), "NOT_FOUND"), None);
        let collected = response.into_body().collect().await.unwrap();
        assert!(collected.trailers().is_some());
        let text = metrics.render();
        assert_eq!(completed(&text, "NOT_FOUND"), Some(1.0), "{text}");
        assert_eq!(completed(&text, "CANCELLED"), None);
    }

    #[tokio::test]
    async fn records_trailers_only_status_from_headers() {
        let metrics = Arc::new(Metrics::new("app1"));
        let svc = GrpcMetricsLayer::new(metrics.clone()).layer(tower::service_fn(
            |_req: http::Request<()>| async {
                let response = http::Response::builder()
                    .header("grpc-status", "16")
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                Ok::<_, Infallible>(response)
            },
        ));
        let response = svc.oneshot(request()).await.unwrap();
        assert!(response.body().is_end_stream());
        drop(response);
        assert_eq!(completed(&metrics.render(), "UNAUTHENTICATED"), Some(1.0));
    }

    #[tokio::test]
    async fn records_cancelled_when_the_body_is_dropped_early() {
        let metrics = Arc::new(Metrics::new("app1"));
        let svc = GrpcMetricsLayer::new(metrics.clone()).layer(tower::service_fn(
            |_req: http::Request<()>| async {
                Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"x"))))
            },
        ));
        let response = svc.clone().oneshot(request()).await.unwrap();
        drop(response);
        assert_eq!(completed(&metrics.render(), "CANCELLED"), Some(1.0));
        // A body that ends without trailers has no status.
        let response = svc.oneshot(request()).await.unwrap();
        response.into_body().collect().await.unwrap();
        let text = metrics.render();
        assert_eq!(completed(&text, "UNKNOWN"), Some(1.0));
        assert_eq!(completed(&text, "CANCELLED"), Some(1.0));
    }

    /// A real tonic server answers an unknown method with a trailers-only `UNIMPLEMENTED`.
    #[tokio::test]
    async fn measures_a_real_tonic_server() {
        let metrics = Arc::new(Metrics::new("app1"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .layer(GrpcMetricsLayer::new(metrics.clone()))
                .add_routes(tonic::service::Routes::default())
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = stopped.await;
                    },
                ),
        );

        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .http2_only(true)
                .build_http::<Full<Bytes>>();
        let request = http::Request::post(format!("http://{addr}/test.v1.Nope/Call"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
            .unwrap();
        let response = client.request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let status = response.headers().get("grpc-status").cloned().or(response
            .into_body()
            .collect()
            .await
            .unwrap()
            .trailers()
            .and_then(|t| t.get("grpc-status").cloned()));
        assert_eq!(status.unwrap(), "12");

        let series = r#"dapr_grpc_io_server_completed_rpcs{app_id="app1",grpc_server_method="/test.v1.Nope/Call",grpc_server_status="UNIMPLEMENTED"}"#;
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while sample(&metrics.render(), series).is_none() && Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(sample(&metrics.render(), series), Some(1.0));

        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
