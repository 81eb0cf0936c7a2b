//! The `/metrics` endpoint Prometheus scrapes.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderMap, header};

use super::Metrics;

/// The `Content-Type` of the OpenMetrics text format ([`Metrics::render`]).
pub const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The `Content-Type` of the Prometheus text format 0.0.4 ([`Metrics::render_prometheus_text`]).
pub const CONTENT_TYPE_PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A router answering `GET /metrics` (and 404 elsewhere). Like Dapr, it answers in the
/// Prometheus text format unless the scraper accepts OpenMetrics (Prometheus does by default).
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(metrics)
}

/// Serves [`router`] on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(address = %addr, "Metrics listening");
    }
    axum::serve(listener, router(metrics))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn scrape(State(metrics): State<Arc<Metrics>>, headers: HeaderMap) -> Response {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    if openmetrics {
        (
            [(header::CONTENT_TYPE, CONTENT_TYPE_OPENMETRICS)],
            metrics.render(),
        )
            .into_response()
    } else {
        (
            [(header::CONTENT_TYPE, CONTENT_TYPE_PROMETHEUS)],
            metrics.render_prometheus_text(),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: std::net::SocketAddr, path: &str, accept: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn serves_metrics_over_tcp_and_stops_on_shutdown() {
        let metrics = Arc::new(Metrics::new("app1"));
        metrics.pubsub_egress("pubsub", "orders", true, Duration::from_millis(3));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, metrics.clone(), async {
            let _ = stopped.await;
        }));

        let response = get(addr, "/metrics", "*/*").await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(
            response
                .to_ascii_lowercase()
                .contains(&format!("content-type: {}", CONTENT_TYPE_PROMETHEUS))
        );
        assert!(response.contains(
            r#"dapr_component_pubsub_egress_count{app_id="app1",component="pubsub",success="true",topic="orders"} 1"#
        ));

        let response = get(
            addr,
            "/metrics",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(
            response
                .to_ascii_lowercase()
                .contains(&format!("content-type: {}", CONTENT_TYPE_OPENMETRICS))
        );
        assert!(response.contains("# TYPE dapr_component_pubsub_egress_count unknown"));
        assert!(response.trim_end().ends_with("# EOF"), "{response}");

        let response = get(addr, "/other", "*/*").await;
        assert!(response.starts_with("HTTP/1.1 404"), "{response}");

        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
