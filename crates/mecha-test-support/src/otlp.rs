//! A small OTLP/gRPC trace collector for end-to-end tests: it accepts `TraceService/Export`
//! on a free loopback port and keeps every span it receives.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tokio::sync::{Notify, oneshot};

/// One span as the collector received it; ids are lowercase hex (empty when absent).
#[derive(Clone, Debug, PartialEq)]
pub struct ReceivedSpan {
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// 16 hex digits, or empty for a root span.
    pub parent_span_id: String,
    /// The span name.
    pub name: String,
    /// The OTLP kind name, e.g. `SPAN_KIND_SERVER`.
    pub kind: String,
    /// The `service.name` resource attribute.
    pub service_name: String,
    /// Span attributes, values rendered as text.
    pub attributes: BTreeMap<String, String>,
    /// OTLP status code: 0 unset, 1 ok, 2 error.
    pub status_code: i32,
    /// The status message.
    pub status_message: String,
    /// The W3C `tracestate` of the span.
    pub trace_state: String,
}

#[derive(Default)]
struct State {
    spans: Mutex<Vec<ReceivedSpan>>,
    headers: Mutex<Vec<(String, String)>>,
    changed: Notify,
}

struct Service {
    state: Arc<State>,
}

#[tonic::async_trait]
impl TraceService for Service {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        {
            let mut headers = self.state.headers.lock().unwrap_or_else(|p| p.into_inner());
            for kv in request.metadata().iter() {
                if let tonic::metadata::KeyAndValueRef::Ascii(k, v) = kv {
                    headers.push((k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()));
                }
            }
        }
        let mut received = Vec::new();
        for rs in request.into_inner().resource_spans {
            let service_name = rs
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                .map(value_text)
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    let status = span.status.unwrap_or_default();
                    received.push(ReceivedSpan {
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        name: span.name,
                        kind: SpanKind::try_from(span.kind)
                            .map(|k| k.as_str_name().to_owned())
                            .unwrap_or_else(|_| span.kind.to_string()),
                        service_name: service_name.clone(),
                        attributes: span
                            .attributes
                            .iter()
                            .map(|a| (a.key.clone(), value_text(a)))
                            .collect(),
                        status_code: status.code,
                        status_message: status.message,
                        trace_state: span.trace_state,
                    });
                }
            }
        }
        self.state
            .spans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(received);
        self.state.changed.notify_waiters();
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn value_text(kv: &KeyValue) -> String {
    match kv.value.as_ref().and_then(|v: &AnyValue| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A running collector; stops when dropped.
pub struct Receiver {
    addr: SocketAddr,
    state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
}

impl Receiver {
    /// Starts a collector on a free loopback port.
    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    /// Starts a collector on `port` (0 = any free port), e.g. to bring a collector back on the
    /// address a sidecar was already configured with.
    pub async fn start_on(port: u16) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("cannot bind the OTLP receiver on port {port}: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("OTLP receiver address: {e}"));
        let state = Arc::new(State::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let service = TraceServiceServer::new(Service {
            state: state.clone(),
        });
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = stopped.await;
                    },
                )
                .await;
        });
        Self {
            addr,
            state,
            stop: Some(stop),
        }
    }

    /// `127.0.0.1:<port>`, as `otel.endpointAddress` expects.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.state
            .spans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The values of request metadata `name` over all export calls so far.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.state
            .headers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Waits until at least `n` spans have arrived and returns all of them; panics with the
    /// spans seen so far after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + timeout;
        loop {
            let changed = self.state.changed.notified();
            let spans = self.spans();
            if spans.len() >= n {
                return spans;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "expected {n} spans within {timeout:?}, received {}: {spans:#?}",
                    spans.len()
                );
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(100)), changed).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
