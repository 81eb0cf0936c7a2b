//! Distributed tracing: W3C trace context propagation and OTLP/gRPC span export, configured
//! by the `spec.tracing` section of a Dapr Configuration resource.
//!
//! * [`SpanContext`] reads `traceparent`/`tracestate` (W3C) or, when there is no valid
//!   `traceparent`, the OpenCensus binary `grpc-trace-bin` header, and writes them back.
//!   Invalid values are treated as absent, as W3C requires.
//! * [`TracingConfig`] reads `samplingRate`, `stdout` and `otel` (`endpointAddress`,
//!   `isSecure`, `protocol`, `headers`, `timeout`). Refused with [`TracingConfigError`]:
//!   `protocol: http`, and TLS (`isSecure: true`, which is also Dapr's default when unset, or
//!   an `https://` address). `zipkin` is accepted but not exported to (a warning is logged).
//! * [`Tracer`] (one per sidecar, cheap to clone) starts [`Span`]s. A new trace is sampled with
//!   the configured rate, decided on the trace id; a span with a parent follows the parent's
//!   sampled flag. Ended sampled spans go to a bounded queue ([`QUEUE_CAPACITY`]; when it is
//!   full spans are dropped and counted, never blocking the request) that a background task
//!   exports in batches of up to [`MAX_BATCH`] spans or every [`FLUSH_INTERVAL`], with a
//!   resource carrying `service.name` = the app id. Export failures are logged at most once a
//!   minute. A disabled tracer (rate 0 or no `tracing` section) returns no-op spans without
//!   allocating.
//!
//! Propagation follows Dapr: a request's incoming context becomes the parent of the span the
//! sidecar starts for it, and that span's context is what goes downstream (`traceparent`,
//! `tracestate`, plus `grpc-trace-bin` on gRPC) and back in the response headers.

mod config;
mod context;
mod tracer;

pub use config::{
    DEFAULT_EXPORT_TIMEOUT, DEFAULT_SAMPLING_RATE, OtlpConfig, TracingConfig, TracingConfigError,
};
pub use context::{GRPC_TRACE_BIN, GRPC_TRACE_BIN_LEN, SpanContext, TRACEPARENT, TRACESTATE};
pub use tracer::{
    AttributeValue, FLUSH_INTERVAL, MAX_BATCH, QUEUE_CAPACITY, Span, SpanKind, Tracer,
};
