//! Span creation, sampling and the batching OTLP/gRPC exporter.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1 as proto;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint};

use super::config::{OtlpConfig, TracingConfig, TracingConfigError};
use super::context::{SpanContext, hex, random_span_id};

/// Spans waiting for export; when full, further spans are dropped and counted.
pub const QUEUE_CAPACITY: usize = 2048;
/// Most spans sent in one export call.
pub const MAX_BATCH: usize = 512;
/// Longest time a span waits in a partial batch.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Export failures and dropped spans are logged at most this often.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Attribute values longer than this are cut (at a character boundary).
const MAX_ATTRIBUTE_LEN: usize = 4096;
/// Attributes beyond this count on one span are dropped and counted.
const MAX_ATTRIBUTES: usize = 128;

/// The role of a span, as in OpenTelemetry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SpanKind {
    /// Work inside the sidecar.
    Internal,
    /// Handling an incoming request (API call, invocation received from another sidecar).
    Server,
    /// An outgoing request (to the app, another sidecar or a component).
    Client,
    /// Publishing a message.
    Producer,
    /// Delivering a received message to the app.
    Consumer,
}

impl SpanKind {
    fn to_proto(self) -> proto::span::SpanKind {
        match self {
            Self::Internal => proto::span::SpanKind::Internal,
            Self::Server => proto::span::SpanKind::Server,
            Self::Client => proto::span::SpanKind::Client,
            Self::Producer => proto::span::SpanKind::Producer,
            Self::Consumer => proto::span::SpanKind::Consumer,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Internal => "internal",
            Self::Server => "server",
            Self::Client => "client",
            Self::Producer => "producer",
            Self::Consumer => "consumer",
        }
    }
}

/// A span attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum AttributeValue {
    /// A string.
    String(String),
    /// An integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
    /// A floating-point number.
    Double(f64),
}

impl From<&str> for AttributeValue {
    fn from(v: &str) -> Self {
        Self::String(v.to_owned())
    }
}
impl From<String> for AttributeValue {
    fn from(v: String) -> Self {
        Self::String(v)
    }
}
impl From<i64> for AttributeValue {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}
impl From<i32> for AttributeValue {
    fn from(v: i32) -> Self {
        Self::Int(i64::from(v))
    }
}
impl From<u16> for AttributeValue {
    fn from(v: u16) -> Self {
        Self::Int(i64::from(v))
    }
}
impl From<u32> for AttributeValue {
    fn from(v: u32) -> Self {
        Self::Int(i64::from(v))
    }
}
impl From<bool> for AttributeValue {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}
impl From<f64> for AttributeValue {
    fn from(v: f64) -> Self {
        Self::Double(v)
    }
}

impl fmt::Display for AttributeValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::String(s) => f.write_str(s),
            Self::Int(i) => write!(f, "{i}"),
            Self::Bool(b) => write!(f, "{b}"),
            Self::Double(d) => write!(f, "{d}"),
        }
    }
}

/// Creates spans for one sidecar and hands ended, sampled spans to the exporter. Cheap to
/// clone (one `Arc`); a disabled tracer holds nothing.
#[derive(Clone, Default)]
pub struct Tracer {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    /// `None` samples every new trace.
    threshold: Option<u64>,
    sampling_rate: f64,
    stdout: bool,
    exporter: Option<mpsc::Sender<Message>>,
    dropped: Arc<AtomicU64>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

enum Message {
    Span(Box<FinishedSpan>),
    Flush(oneshot::Sender<()>),
}

struct FinishedSpan {
    context: SpanContext,
    parent_span_id: Option<[u8; 8]>,
    name: String,
    kind: SpanKind,
    start_unix_nanos: u64,
    end_unix_nanos: u64,
    attributes: Vec<(String, AttributeValue)>,
    dropped_attributes: u32,
    error: Option<String>,
}

impl fmt::Debug for Tracer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            None => f.write_str("Tracer(disabled)"),
            Some(inner) => f
                .debug_struct("Tracer")
                .field("sampling_rate", &inner.sampling_rate)
                .field("stdout", &inner.stdout)
                .field("exporting", &inner.exporter.is_some())
                .finish(),
        }
    }
}

impl Tracer {
    /// A tracer that creates no spans and propagates nothing.
    pub fn disabled() -> Self {
        Self { inner: None }
    }

    /// A tracer for `config`, reporting spans under `service.name` = `service_name` (the app
    /// id). With an OTLP endpoint this spawns the export task, so it must be called inside a
    /// Tokio runtime (else an error); the collector is connected lazily, so it need not be up
    /// yet.
    pub fn new(config: &TracingConfig, service_name: &str) -> Result<Self, TracingConfigError> {
        Self::with_capacity(config, service_name, QUEUE_CAPACITY)
    }

    fn with_capacity(
        config: &TracingConfig,
        service_name: &str,
        capacity: usize,
    ) -> Result<Self, TracingConfigError> {
        if !config.is_enabled() {
            return Ok(Self::disabled());
        }
        if let Some(zipkin) = &config.zipkin_endpoint {
            tracing::warn!(
                endpoint = %zipkin,
                "Zipkin export is not supported; spans are not sent there (use otel)"
            );
        }
        let dropped = Arc::new(AtomicU64::new(0));
        let (exporter, worker) = match &config.otlp {
            None => (None, None),
            Some(otlp) => {
                let (tx, rx) = mpsc::channel(capacity.max(1));
                let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
                    TracingConfigError::Invalid {
                        field: "otel",
                        reason: "the span exporter must be created inside a Tokio runtime".into(),
                    }
                })?;
                let worker = Worker::new(otlp, service_name, rx, dropped.clone())?;
                (Some(tx), Some(runtime.spawn(worker.run())))
            }
        };
        let rate = config.sampling_rate;
        let threshold = (rate < 1.0).then_some((rate * (1u64 << 63) as f64) as u64);
        Ok(Self {
            inner: Some(Arc::new(Inner {
                threshold,
                sampling_rate: rate,
                stdout: config.stdout,
                exporter,
                dropped,
                worker: Mutex::new(worker),
            })),
        })
    }

    /// Whether spans are created and trace context is propagated (sampling rate above 0).
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The configured sampling rate (0 when disabled).
    pub fn sampling_rate(&self) -> f64 {
        self.inner.as_ref().map_or(0.0, |i| i.sampling_rate)
    }

    /// Spans dropped so far because the export queue was full.
    pub fn dropped_spans(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |i| i.dropped.load(Ordering::Relaxed))
    }

    /// Starts a span. With a parent (read from the incoming request) the span joins its trace
    /// and follows its sampled flag; without one it starts a new trace, sampled with the
    /// configured rate (decided on the trace id, so every sidecar decides alike). When disabled
    /// this returns a no-op span without allocating. Only sampled spans are recorded, and only
    /// when they go somewhere (OTLP or `stdout`); unsampled spans still carry a context so the
    /// trace id is propagated.
    pub fn start(&self, parent: Option<SpanContext>, name: &str, kind: SpanKind) -> Span {
        let Some(inner) = &self.inner else {
            return Span::noop();
        };
        let (context, parent_span_id) = match parent {
            Some(p) => (
                SpanContext {
                    trace_id: p.trace_id,
                    span_id: random_span_id(),
                    flags: p.flags,
                    tracestate: p.tracestate,
                },
                Some(p.span_id),
            ),
            None => {
                let mut root = SpanContext::new_root(false);
                if inner.samples(&root.trace_id) {
                    root.flags |= SpanContext::FLAG_SAMPLED;
                }
                (root, None)
            }
        };
        let recording =
            (context.is_sampled() && (inner.exporter.is_some() || inner.stdout)).then(|| {
                Box::new(Recording {
                    inner: inner.clone(),
                    parent_span_id,
                    name: name.to_owned(),
                    kind,
                    start_unix_nanos: unix_nanos(),
                    started: Instant::now(),
                    attributes: Vec::new(),
                    dropped_attributes: 0,
                    error: None,
                })
            });
        Span {
            context: Some(context),
            recording,
        }
    }

    /// [`Tracer::start`] with the name built only when tracing is enabled (no allocation on
    /// the request path otherwise).
    pub fn start_lazy(
        &self,
        parent: Option<SpanContext>,
        name: impl FnOnce() -> String,
        kind: SpanKind,
    ) -> Span {
        if self.inner.is_none() {
            return Span::noop();
        }
        self.start(parent, &name(), kind)
    }

    /// Exports every span ended before this call, waiting for the export to finish (or fail).
    pub async fn flush(&self) {
        let Some(tx) = self.inner.as_ref().and_then(|i| i.exporter.clone()) else {
            return;
        };
        let (done_tx, done_rx) = oneshot::channel();
        if tx.send(Message::Flush(done_tx)).await.is_ok() {
            let _ = done_rx.await;
        }
    }

    /// Flushes and stops the export task; spans ended afterwards are discarded.
    pub async fn shutdown(&self) {
        self.flush().await;
        let worker = self
            .inner
            .as_ref()
            .and_then(|i| i.worker.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(worker) = worker {
            worker.abort();
            let _ = worker.await;
        }
    }
}

impl Inner {
    fn samples(&self, trace_id: &[u8; 16]) -> bool {
        let Some(threshold) = self.threshold else {
            return true;
        };
        let mut low = [0u8; 8];
        low.copy_from_slice(&trace_id[8..]);
        (u64::from_be_bytes(low) >> 1) < threshold
    }
}

/// One span; ends on [`Span::end`] or when dropped.
pub struct Span {
    context: Option<SpanContext>,
    recording: Option<Box<Recording>>,
}

struct Recording {
    inner: Arc<Inner>,
    parent_span_id: Option<[u8; 8]>,
    name: String,
    kind: SpanKind,
    start_unix_nanos: u64,
    started: Instant,
    attributes: Vec<(String, AttributeValue)>,
    dropped_attributes: u32,
    error: Option<String>,
}

impl fmt::Debug for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Span")
            .field("context", &self.context)
            .field("recording", &self.recording.is_some())
            .finish()
    }
}

impl Span {
    /// A span that records and propagates nothing.
    pub const fn noop() -> Self {
        Self {
            context: None,
            recording: None,
        }
    }

    /// The span's context, to propagate downstream (`None` when tracing is disabled).
    pub fn context(&self) -> Option<&SpanContext> {
        self.context.as_ref()
    }

    /// Whether attributes and status are kept (the span is sampled and goes somewhere).
    pub fn is_recording(&self) -> bool {
        self.recording.is_some()
    }

    /// Sets an attribute, replacing an earlier value for the same key. Free when not recording.
    pub fn set_attribute(&mut self, key: &str, value: impl Into<AttributeValue>) {
        let Some(rec) = self.recording.as_mut() else {
            return;
        };
        let mut value = value.into();
        if let AttributeValue::String(s) = &mut value
            && s.len() > MAX_ATTRIBUTE_LEN
        {
            let mut cut = MAX_ATTRIBUTE_LEN;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
        }
        if let Some(slot) = rec.attributes.iter_mut().find(|(k, _)| k == key) {
            slot.1 = value;
        } else if rec.attributes.len() < MAX_ATTRIBUTES {
            rec.attributes.push((key.to_owned(), value));
        } else {
            rec.dropped_attributes += 1;
        }
    }

    /// Marks the span as failed with `message` (OTLP status `ERROR`).
    pub fn set_status_error(&mut self, message: impl Into<String>) {
        if let Some(rec) = self.recording.as_mut() {
            rec.error = Some(message.into());
        }
    }

    /// Ends the span now.
    pub fn end(self) {}
}

impl Drop for Span {
    fn drop(&mut self) {
        let (Some(rec), Some(context)) = (self.recording.take(), self.context.take()) else {
            return;
        };
        let rec = *rec;
        let elapsed = u64::try_from(rec.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let span = FinishedSpan {
            context,
            parent_span_id: rec.parent_span_id,
            name: rec.name,
            kind: rec.kind,
            start_unix_nanos: rec.start_unix_nanos,
            end_unix_nanos: rec.start_unix_nanos.saturating_add(elapsed),
            attributes: rec.attributes,
            dropped_attributes: rec.dropped_attributes,
            error: rec.error,
        };
        if rec.inner.stdout {
            log_span(&span);
        }
        if let Some(tx) = &rec.inner.exporter
            && let Err(mpsc::error::TrySendError::Full(_)) =
                tx.try_send(Message::Span(Box::new(span)))
        {
            rec.inner.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn log_span(span: &FinishedSpan) {
    let attributes = span
        .attributes
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ");
    tracing::info!(
        name = %span.name,
        kind = span.kind.as_str(),
        trace_id = %span.context.trace_id_hex(),
        span_id = %span.context.span_id_hex(),
        parent_span_id = %span.parent_span_id.map(|p| hex(&p)).unwrap_or_default(),
        duration_us = span.end_unix_nanos.saturating_sub(span.start_unix_nanos) / 1000,
        error = span.error.as_deref().unwrap_or(""),
        attributes = %attributes,
        "Span ended"
    );
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The background task that batches spans and exports them.
struct Worker {
    rx: mpsc::Receiver<Message>,
    client: TraceServiceClient<Channel>,
    endpoint: String,
    metadata: MetadataMap,
    timeout: Duration,
    resource: Resource,
    dropped: Arc<AtomicU64>,
    dropped_reported: u64,
    failed_unreported: u64,
    last_error_log: Option<Instant>,
}

impl Worker {
    fn new(
        otlp: &OtlpConfig,
        service_name: &str,
        rx: mpsc::Receiver<Message>,
        dropped: Arc<AtomicU64>,
    ) -> Result<Self, TracingConfigError> {
        let invalid =
            |field: &'static str, reason: String| TracingConfigError::Invalid { field, reason };
        let channel = Endpoint::from_shared(otlp.endpoint.clone())
            .map_err(|e| invalid("otel.endpointAddress", e.to_string()))?
            .connect_timeout(otlp.timeout)
            .timeout(otlp.timeout)
            .connect_lazy();
        let mut metadata = MetadataMap::new();
        for (name, value) in &otlp.headers {
            let key = MetadataKey::from_bytes(name.as_bytes())
                .map_err(|e| invalid("otel.headers", format!("{name}: {e}")))?;
            let value = MetadataValue::try_from(value.as_str())
                .map_err(|e| invalid("otel.headers", format!("{name}: {e}")))?;
            metadata.insert(key, value);
        }
        Ok(Self {
            rx,
            client: TraceServiceClient::new(channel),
            endpoint: otlp.endpoint.clone(),
            metadata,
            timeout: otlp.timeout,
            resource: Resource {
                attributes: vec![string_attribute("service.name", service_name)],
                ..Default::default()
            },
            dropped,
            dropped_reported: 0,
            failed_unreported: 0,
            last_error_log: None,
        })
    }

    async fn run(mut self) {
        let mut batch: Vec<proto::Span> = Vec::with_capacity(MAX_BATCH);
        let mut tick = tokio::time::interval(FLUSH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = self.rx.recv() => match message {
                    None => {
                        self.export(&mut batch).await;
                        return;
                    }
                    Some(Message::Span(span)) => {
                        batch.push(to_proto(*span));
                        if batch.len() >= MAX_BATCH {
                            self.export(&mut batch).await;
                        }
                    }
                    Some(Message::Flush(done)) => {
                        self.export(&mut batch).await;
                        let _ = done.send(());
                    }
                },
                _ = tick.tick() => {
                    if !batch.is_empty() {
                        self.export(&mut batch).await;
                    }
                    self.report_problems(None);
                }
            }
        }
    }

    async fn export(&mut self, batch: &mut Vec<proto::Span>) {
        if batch.is_empty() {
            return;
        }
        let count = batch.len() as u64;
        let request = ExportTraceServiceRequest {
            resource_spans: vec![proto::ResourceSpans {
                resource: Some(self.resource.clone()),
                scope_spans: vec![proto::ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "mecha".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    spans: std::mem::replace(batch, Vec::with_capacity(MAX_BATCH)),
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        let mut request = tonic::Request::new(request);
        *request.metadata_mut() = self.metadata.clone();
        let result = tokio::time::timeout(self.timeout, self.client.export(request)).await;
        let error = match result {
            Ok(Ok(response)) => match response.into_inner().partial_success {
                Some(p) if p.rejected_spans > 0 => {
                    self.failed_unreported += u64::try_from(p.rejected_spans).unwrap_or(0);
                    Some(format!("collector rejected spans: {}", p.error_message))
                }
                _ => None,
            },
            Ok(Err(status)) => {
                self.failed_unreported += count;
                Some(format!("{}: {}", status.code(), status.message()))
            }
            Err(_) => {
                self.failed_unreported += count;
                Some(format!("timed out after {:?}", self.timeout))
            }
        };
        self.report_problems(error);
    }

    /// Logs export failures and queue drops, at most once per [`ERROR_LOG_INTERVAL`].
    fn report_problems(&mut self, error: Option<String>) {
        let dropped = self.dropped.load(Ordering::Relaxed);
        let new_drops = dropped - self.dropped_reported.min(dropped);
        if (error.is_none() && new_drops == 0)
            || self
                .last_error_log
                .is_some_and(|t| t.elapsed() < ERROR_LOG_INTERVAL)
        {
            return;
        }
        if let Some(error) = error {
            tracing::warn!(
                endpoint = %self.endpoint,
                error = %error,
                failed_spans = self.failed_unreported,
                dropped_spans = new_drops,
                "Exporting spans failed"
            );
        } else {
            tracing::warn!(
                endpoint = %self.endpoint,
                dropped_spans = new_drops,
                "Span export queue full; spans dropped"
            );
        }
        self.failed_unreported = 0;
        self.dropped_reported = dropped;
        self.last_error_log = Some(Instant::now());
    }
}

fn string_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

fn to_proto(span: FinishedSpan) -> proto::Span {
    let attributes = span
        .attributes
        .into_iter()
        .map(|(key, value)| KeyValue {
            key,
            value: Some(AnyValue {
                value: Some(match value {
                    AttributeValue::String(s) => any_value::Value::StringValue(s),
                    AttributeValue::Int(i) => any_value::Value::IntValue(i),
                    AttributeValue::Bool(b) => any_value::Value::BoolValue(b),
                    AttributeValue::Double(d) => any_value::Value::DoubleValue(d),
                }),
            }),
            ..Default::default()
        })
        .collect();
    proto::Span {
        trace_id: span.context.trace_id.to_vec(),
        span_id: span.context.span_id.to_vec(),
        trace_state: span.context.tracestate.unwrap_or_default(),
        parent_span_id: span.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
        flags: u32::from(span.context.flags),
        name: span.name,
        kind: span.kind.to_proto() as i32,
        start_time_unix_nano: span.start_unix_nanos,
        end_time_unix_nano: span.end_unix_nanos,
        attributes,
        dropped_attributes_count: span.dropped_attributes,
        status: span.error.map(|message| proto::Status {
            message,
            code: proto::status::StatusCode::Error as i32,
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mecha_test_support::otlp::Receiver;

    use super::super::config::OtlpConfig;
    use super::*;

    fn config(rate: f64, endpoint: Option<String>) -> TracingConfig {
        TracingConfig {
            sampling_rate: rate,
            stdout: false,
            otlp: endpoint.map(|endpoint| OtlpConfig {
                endpoint,
                headers: vec![("x-api-key".into(), "secret".into())],
                timeout: Duration::from_secs(2),
            }),
            zipkin_endpoint: None,
        }
    }

    #[test]
    fn trace_disabled_tracer_is_noop() {
        let tracer = Tracer::new(&config(0.0, None), "app").unwrap();
        assert!(!tracer.is_enabled());
        let parent = SpanContext::new_root(true);
        let mut span = tracer.start(Some(parent), "op", SpanKind::Server);
        assert!(span.context().is_none());
        assert!(!span.is_recording());
        span.set_attribute("k", "v");
        span.end();
        assert!(!Tracer::disabled().is_enabled());
    }

    #[test]
    fn trace_sampling_rate_one_and_tiny() {
        let all = Tracer::new(&config(1.0, None), "app").unwrap();
        for _ in 0..100 {
            assert!(
                all.start(None, "op", SpanKind::Server)
                    .context()
                    .unwrap()
                    .is_sampled()
            );
        }
        let tiny = Tracer::new(&config(1e-12, None), "app").unwrap();
        assert!(tiny.is_enabled());
        for _ in 0..100 {
            let span = tiny.start(None, "op", SpanKind::Server);
            assert!(!span.context().unwrap().is_sampled());
            assert!(!span.is_recording());
        }
        let half = Tracer::new(&config(0.5, None), "app").unwrap();
        let sampled = (0..2000)
            .filter(|_| {
                half.start(None, "op", SpanKind::Server)
                    .context()
                    .unwrap()
                    .is_sampled()
            })
            .count();
        assert!(
            (800..1200).contains(&sampled),
            "{sampled} of 2000 sampled at 0.5"
        );
    }

    #[test]
    fn trace_parent_sampled_flag_is_honoured() {
        let tiny = Tracer::new(&config(1e-12, None), "app").unwrap();
        let parent = SpanContext::new_root(true);
        let span = tiny.start(Some(parent.clone()), "op", SpanKind::Server);
        let ctx = span.context().unwrap();
        assert!(ctx.is_sampled());
        assert_eq!(ctx.trace_id, parent.trace_id);
        assert_ne!(ctx.span_id, parent.span_id);

        let all = Tracer::new(&config(1.0, None), "app").unwrap();
        let mut unsampled = SpanContext::new_root(false);
        unsampled.tracestate = Some("v=1".into());
        let span = all.start(Some(unsampled.clone()), "op", SpanKind::Server);
        assert!(!span.context().unwrap().is_sampled());
        assert_eq!(span.context().unwrap().trace_id, unsampled.trace_id);
        assert_eq!(span.context().unwrap().tracestate.as_deref(), Some("v=1"));
    }

    #[tokio::test]
    async fn trace_export_reaches_receiver() {
        let receiver = Receiver::start().await;
        let tracer = Tracer::new(
            &config(1.0, Some(format!("http://{}", receiver.endpoint()))),
            "order-app",
        )
        .unwrap();
        let incoming = SpanContext::from_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .unwrap();
        let mut server = tracer.start(
            Some(incoming.clone()),
            "CallLocal/orders/new",
            SpanKind::Server,
        );
        server.set_attribute("rpc.service", "ServiceInvocation");
        server.set_attribute("http.status_code", 200u16);
        let server_ctx = server.context().unwrap().clone();
        let mut client = tracer.start(
            Some(server_ctx.clone()),
            "/v1.0/state/store",
            SpanKind::Client,
        );
        client.set_status_error("boom");
        let client_ctx = client.context().unwrap().clone();
        client.end();
        server.end();
        let root = tracer.start(None, "root", SpanKind::Producer);
        let root_ctx = root.context().unwrap().clone();
        drop(root);
        // An unsampled parent is followed: nothing is exported for it.
        let unsampled = tracer.start(Some(SpanContext::new_root(false)), "skip", SpanKind::Server);
        assert!(!unsampled.is_recording());
        unsampled.end();
        tracer.flush().await;

        let spans = receiver.wait_for(3, Duration::from_secs(10)).await;
        assert_eq!(spans.len(), 3, "{spans:?}");
        let by_name = |n: &str| spans.iter().find(|s| s.name == n).unwrap().clone();
        let s = by_name("CallLocal/orders/new");
        assert_eq!(s.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(s.span_id, server_ctx.span_id_hex());
        assert_eq!(s.parent_span_id, "00f067aa0ba902b7");
        assert_eq!(s.kind, "SPAN_KIND_SERVER");
        assert_eq!(s.service_name, "order-app");
        assert_eq!(
            s.attributes.get("rpc.service").map(String::as_str),
            Some("ServiceInvocation")
        );
        assert_eq!(
            s.attributes.get("http.status_code").map(String::as_str),
            Some("200")
        );
        assert_eq!(s.status_code, 0);
        let c = by_name("/v1.0/state/store");
        assert_eq!(c.trace_id, incoming.trace_id_hex());
        assert_eq!(c.span_id, client_ctx.span_id_hex());
        assert_eq!(c.parent_span_id, server_ctx.span_id_hex());
        assert_eq!(c.kind, "SPAN_KIND_CLIENT");
        assert_eq!(c.status_code, 2);
        assert_eq!(c.status_message, "boom");
        let r = by_name("root");
        assert_eq!(r.trace_id, root_ctx.trace_id_hex());
        assert_eq!(r.parent_span_id, "");
        assert_eq!(r.kind, "SPAN_KIND_PRODUCER");
        assert_eq!(
            receiver.header_values("x-api-key"),
            vec!["secret".to_string()]
        );
        tracer.shutdown().await;
        // After shutdown spans are discarded without blocking.
        tracer.start(None, "late", SpanKind::Internal).end();
    }

    #[tokio::test]
    async fn trace_export_batches_by_interval() {
        let receiver = Receiver::start().await;
        let tracer = Tracer::new(
            &config(1.0, Some(format!("http://{}", receiver.endpoint()))),
            "batch-app",
        )
        .unwrap();
        // Let the export task pass its first (immediate) tick.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let before = Instant::now();
        for i in 0..5 {
            tracer
                .start(None, &format!("op-{i}"), SpanKind::Internal)
                .end();
        }
        // No flush: the interval sends them.
        let spans = receiver.wait_for(5, Duration::from_secs(5)).await;
        assert_eq!(spans.len(), 5);
        assert!(
            before.elapsed() >= FLUSH_INTERVAL / 2,
            "{:?}",
            before.elapsed()
        );
        assert!(spans.iter().all(|s| s.service_name == "batch-app"));
    }

    #[tokio::test]
    async fn trace_export_to_unreachable_collector_does_not_block() {
        let port = mecha_test_support::free_port();
        let tracer = Tracer::new(
            &config(1.0, Some(format!("http://127.0.0.1:{port}"))),
            "app",
        )
        .unwrap();
        for _ in 0..10 {
            tracer.start(None, "op", SpanKind::Server).end();
        }
        tokio::time::timeout(Duration::from_secs(10), tracer.shutdown())
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn trace_full_queue_drops_and_counts() {
        let receiver = Receiver::start().await;
        let tracer = Tracer::with_capacity(
            &config(1.0, Some(format!("http://{}", receiver.endpoint()))),
            "app",
            4,
        )
        .unwrap();
        // The export task cannot run before this test yields, so the queue fills up.
        for _ in 0..10 {
            tracer.start(None, "op", SpanKind::Server).end();
        }
        assert_eq!(tracer.dropped_spans(), 6);
        tracer.flush().await;
        let spans = receiver.wait_for(4, Duration::from_secs(5)).await;
        assert_eq!(spans.len(), 4);
    }
}
