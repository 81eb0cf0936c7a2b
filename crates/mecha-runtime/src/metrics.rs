//! Prometheus metrics of one sidecar, named and labelled like Dapr's so that existing Dapr
//! dashboards and alerts work unchanged.
//!
//! One [`Metrics`] exists per sidecar, shared as `Arc<Metrics>`. Recording never allocates once
//! a label combination has been seen: label values are small fixed types (`&'static str`, `u16`,
//! `bool`) or strings interned once per distinct value ([`Arc<str>`]); on the request paths
//! (HTTP and gRPC API, invocation) the series of a combination are also cached, so a request
//! costs one foldhash lookup of its raw label values. Every free-form label
//! (path template, method name, component, topic, app id, status) is capped at
//! [`MAX_LABEL_VALUES`] distinct values per dimension; further values are recorded as
//! [`OVERFLOW_LABEL`] so a misbehaving client cannot grow memory without bound.
//!
//! # Exposed metrics
//!
//! Latencies are histograms in milliseconds with Dapr's default buckets ([`LATENCY_BUCKETS_MS`]);
//! sizes use Dapr's size buckets ([`SIZE_BUCKETS_BYTES`]). Every series carries `app_id`.
//!
//! | name | type | labels |
//! |---|---|---|
//! | `dapr_http_server_request_count` | unknown¹ | `app_id, method, path` |
//! | `dapr_http_server_response_count` | unknown¹ | `app_id, method, path, status` |
//! | `dapr_http_server_latency` | histogram | `app_id, method, path, status` |
//! | `dapr_http_server_request_bytes` | histogram | `app_id, method, path` |
//! | `dapr_http_server_response_bytes` | histogram | `app_id, method, path, status` |
//! | `dapr_grpc_io_server_completed_rpcs` | unknown¹ | `app_id, grpc_server_method, grpc_server_status` |
//! | `dapr_grpc_io_server_server_latency` | histogram | `app_id, grpc_server_method, grpc_server_status` |
//! | `dapr_runtime_service_invocation_req_sent_total` | counter | `app_id, dest_app_id, method` |
//! | `dapr_runtime_service_invocation_res_recv_total` | counter | `app_id, dest_app_id, method, status` |
//! | `dapr_runtime_service_invocation_res_recv_latency_ms` | histogram | `app_id, dest_app_id, method, status` |
//! | `dapr_runtime_service_invocation_req_recv_total` | counter | `app_id, src_app_id, method` |
//! | `dapr_runtime_service_invocation_res_sent_total` | counter | `app_id, src_app_id, method, status` |
//! | `dapr_runtime_service_invocation_res_sent_latency_ms` | histogram | `app_id, src_app_id, method, status` |
//! | `dapr_component_pubsub_ingress_count` | unknown¹ | `app_id, component, process_status, status, topic` |
//! | `dapr_component_pubsub_ingress_latencies` | histogram | same as above |
//! | `dapr_component_pubsub_egress_count` | unknown¹ | `app_id, component, success, topic` |
//! | `dapr_component_pubsub_egress_latencies` | histogram | same as above |
//! | `dapr_component_{state,output_binding,configuration,secret,crypto}_count` | unknown¹ | `app_id, component, operation, success` |
//! | `dapr_component_{state,output_binding,configuration,secret,crypto}_latencies` | histogram | same as above |
//! | `dapr_component_{input_binding,conversation}_count` | unknown¹ | `app_id, component, success` |
//! | `dapr_component_{input_binding,conversation}_latencies` | histogram | same as above |
//!
//! ¹ Dapr exposes these monotonic counts under names without `_total`. OpenMetrics (and the
//! encoder) only allow that for untyped series, so they are typed `unknown` (`untyped` in the
//! Prometheus text format); the sample names and values are exactly Dapr's, and `rate()` works.
//!
//! Differences from Dapr: the `path` label is always the route template (`/v1.0/state/{store}`),
//! never the raw path, and `unmatched` for requests no route matched; `namespace` is not
//! exported; the HTTP byte histograms are labelled by method and path as well;
//! `..._res_sent_latency_ms` is an addition. Dapr labels the caller of a received invocation
//! `src_app_id` and the callee of a sent one `dest_app_id` (in Dapr, the response counters swap
//! them); here both the request and the response series of one direction use the same label.
//!
//! # Wiring
//!
//! ```ignore
//! // Once, at start-up (sidecar.rs):
//! let metrics = Arc::new(mecha_runtime::metrics::Metrics::new(&config.app_id));
//!
//! // HTTP API router (api/http.rs): add as the outermost layer so every route is measured.
//! // `Router::layer` wraps each route, so the route template (MatchedPath) is available.
//! router.layer(axum::middleware::from_fn_with_state(metrics.clone(), metrics::http_layer))
//!
//! // gRPC API server (sidecar.rs):
//! tonic::transport::Server::builder()
//!     .layer(metrics::GrpcMetricsLayer::new(metrics.clone()))
//!     .add_service(..)
//!
//! // Metrics endpoint (Dapr's default port is 9090):
//! let listener = tokio::net::TcpListener::bind(("0.0.0.0", 9090)).await?;
//! tokio::spawn(metrics::serve(listener, metrics.clone(), services.shutdown.clone().wait()));
//!
//! // Building blocks, after each call:
//! metrics.component_op(&store, metrics::KIND_STATE, metrics::OP_GET, result.is_ok(), started.elapsed());
//! metrics.pubsub_egress(&pubsub, &topic, result.is_ok(), started.elapsed());
//! metrics.pubsub_ingress(&pubsub, &topic, metrics::PUBSUB_SUCCESS, started.elapsed());
//! ```

mod endpoint;
mod grpc_server;
mod http_server;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

pub use endpoint::{CONTENT_TYPE_OPENMETRICS, CONTENT_TYPE_PROMETHEUS, router, serve};
pub use grpc_server::{
    GrpcCall, GrpcMetricsBody, GrpcMetricsFuture, GrpcMetricsLayer, GrpcMetricsService,
};
pub use http_server::{http_layer, measure};

/// Dapr's default latency buckets, in milliseconds.
pub const LATENCY_BUCKETS_MS: [f64; 34] = [
    1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 13.0, 16.0, 20.0, 25.0, 30.0, 40.0, 50.0, 65.0, 80.0,
    100.0, 130.0, 160.0, 200.0, 250.0, 300.0, 400.0, 500.0, 650.0, 800.0, 1_000.0, 2_000.0,
    5_000.0, 10_000.0, 20_000.0, 50_000.0, 100_000.0,
];

/// Dapr's default size buckets, in bytes (1 KiB to 4 GiB).
pub const SIZE_BUCKETS_BYTES: [f64; 13] = [
    1024.0,
    2048.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
    268_435_456.0,
    1_073_741_824.0,
    4_294_967_296.0,
];

/// Distinct values kept per free-form label dimension before values collapse into
/// [`OVERFLOW_LABEL`].
pub const MAX_LABEL_VALUES: usize = 1000;

/// The label value recorded once a dimension holds [`MAX_LABEL_VALUES`] distinct values.
pub const OVERFLOW_LABEL: &str = "_other";

/// The `path` label of HTTP requests that matched no route.
pub const UNMATCHED_PATH: &str = "unmatched";

/// [`Metrics::component_op`] kind: state stores (`dapr_component_state_*`).
pub const KIND_STATE: &str = "state";
/// [`Metrics::component_op`] kind: output bindings (`dapr_component_output_binding_*`).
pub const KIND_OUTPUT_BINDING: &str = "output_binding";
/// [`Metrics::component_op`] kind: input bindings (`dapr_component_input_binding_*`; the
/// operation is ignored, the latency is the app's processing time).
pub const KIND_INPUT_BINDING: &str = "input_binding";
/// [`Metrics::component_op`] kind: configuration stores (`dapr_component_configuration_*`).
pub const KIND_CONFIGURATION: &str = "configuration";
/// [`Metrics::component_op`] kind: secret stores (`dapr_component_secret_*`).
pub const KIND_SECRET: &str = "secret";
/// [`Metrics::component_op`] kind: crypto providers (`dapr_component_crypto_*`).
pub const KIND_CRYPTO: &str = "crypto";
/// [`Metrics::component_op`] kind: conversation components (`dapr_component_conversation_*`;
/// the operation is ignored).
pub const KIND_CONVERSATION: &str = "conversation";

/// Dapr's `operation` label values for component calls.
pub const OP_GET: &str = "get";
/// See [`OP_GET`].
pub const OP_SET: &str = "set";
/// See [`OP_GET`].
pub const OP_DELETE: &str = "delete";
/// See [`OP_GET`].
pub const OP_BULK_GET: &str = "bulk_get";
/// See [`OP_GET`].
pub const OP_BULK_DELETE: &str = "bulk_delete";
/// See [`OP_GET`].
pub const OP_TRANSACTION: &str = "transaction";
/// See [`OP_GET`].
pub const OP_QUERY: &str = "query";
/// See [`OP_GET`].
pub const OP_SUBSCRIBE: &str = "subscribe";
/// See [`OP_GET`].
pub const OP_UNSUBSCRIBE: &str = "unsubscribe";

/// [`Metrics::pubsub_ingress`] status: the app accepted the message.
pub const PUBSUB_SUCCESS: &str = "success";
/// [`Metrics::pubsub_ingress`] status: the app asked for redelivery (or failed).
pub const PUBSUB_RETRY: &str = "retry";
/// [`Metrics::pubsub_ingress`] status: the message was dropped.
pub const PUBSUB_DROP: &str = "drop";

/// A monotonic count exposed under an exact name (no `_total` suffix), as Dapr does for its
/// `*_count` metrics. Typed `unknown`, since OpenMetrics counters must end in `_total`.
#[derive(Debug, Default, Clone)]
struct Count(Counter);

impl Count {
    fn inc(&self) {
        self.0.inc();
    }
}

impl TypedMetric for Count {
    const TYPE: MetricType = MetricType::Unknown;
}

impl EncodeMetric for Count {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&self.0.get())
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Interns the values of one label dimension, so recording clones an `Arc` instead of
/// allocating, and caps the dimension at [`MAX_LABEL_VALUES`] values.
#[derive(Debug)]
struct Interner {
    /// Hashed with foldhash: interning is on every request's path.
    values: RwLock<hashbrown::HashSet<Arc<str>>>,
    overflow: Arc<str>,
}

impl Interner {
    fn new() -> Self {
        Self {
            values: RwLock::new(hashbrown::HashSet::new()),
            overflow: Arc::from(OVERFLOW_LABEL),
        }
    }

    fn get(&self, value: &str) -> Arc<str> {
        {
            let values = self.values.read().unwrap_or_else(|e| e.into_inner());
            if let Some(v) = values.get(value) {
                return v.clone();
            }
        }
        let mut values = self.values.write().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = values.get(value) {
            return v.clone();
        }
        if values.len() >= MAX_LABEL_VALUES {
            return self.overflow.clone();
        }
        let v: Arc<str> = Arc::from(value);
        values.insert(v.clone());
        v
    }
}

/// How many label combinations [`HandleCache`] keeps per kind of series.
const MAX_CACHED_HANDLES: usize = 4096;

/// The metric handles of one combination of raw label values, looked up with one fast hash of
/// those values: no interning and no hashing of label sets per family once a combination has
/// been seen. Past [`MAX_CACHED_HANDLES`] combinations, lookups go to the families each time.
struct HandleCache<H> {
    map: RwLock<hashbrown::HashMap<HandleKey, H>>,
}

#[derive(Hash, PartialEq, Eq)]
struct HandleKey {
    a: Box<str>,
    b: Box<str>,
    n: u16,
}

/// A [`HandleKey`] borrowed: same fields in the same order, so the same hash.
#[derive(Hash)]
struct HandleKeyRef<'a> {
    a: &'a str,
    b: &'a str,
    n: u16,
}

impl hashbrown::Equivalent<HandleKey> for HandleKeyRef<'_> {
    fn equivalent(&self, key: &HandleKey) -> bool {
        self.n == key.n && self.a == &*key.a && self.b == &*key.b
    }
}

impl<H> std::fmt::Debug for HandleCache<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let len = self.map.read().map_or(0, |m| m.len());
        f.debug_struct("HandleCache").field("len", &len).finish()
    }
}

impl<H> HandleCache<H> {
    fn new() -> Self {
        Self {
            map: RwLock::new(hashbrown::HashMap::new()),
        }
    }

    /// Calls `record` with the handles of (`a`, `b`, `n`), made by `make` the first time.
    fn record(&self, a: &str, b: &str, n: u16, make: impl FnOnce() -> H, record: impl FnOnce(&H)) {
        let key = HandleKeyRef { a, b, n };
        {
            let map = self.map.read().unwrap_or_else(|e| e.into_inner());
            if let Some(h) = map.get(&key) {
                record(h);
                return;
            }
        }
        let h = make();
        record(&h);
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if map.len() < MAX_CACHED_HANDLES && !map.contains_key(&key) {
            map.insert(
                HandleKey {
                    a: a.into(),
                    b: b.into(),
                    n,
                },
                h,
            );
        }
    }
}

/// The series one HTTP API request updates.
struct HttpHandles {
    request_count: Count,
    request_bytes: Histogram,
    response_count: Count,
    latency: Histogram,
    response_bytes: Histogram,
}

/// The series one gRPC API call updates.
struct GrpcHandles {
    count: Count,
    latency: Histogram,
}

/// A counter and a latency histogram of one invocation series.
struct CallHandles {
    count: Counter,
    latency: Histogram,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpRequestLabels {
    app_id: Arc<str>,
    method: &'static str,
    path: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpResponseLabels {
    app_id: Arc<str>,
    method: &'static str,
    path: Arc<str>,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrpcLabels {
    app_id: Arc<str>,
    grpc_server_method: Arc<str>,
    grpc_server_status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InvokeSentLabels {
    app_id: Arc<str>,
    dest_app_id: Arc<str>,
    method: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InvokeRecvLabels {
    app_id: Arc<str>,
    dest_app_id: Arc<str>,
    method: Arc<str>,
    status: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InvokeInLabels {
    app_id: Arc<str>,
    src_app_id: Arc<str>,
    method: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InvokeOutLabels {
    app_id: Arc<str>,
    src_app_id: Arc<str>,
    method: Arc<str>,
    status: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ComponentOpLabels {
    app_id: Arc<str>,
    component: Arc<str>,
    operation: Arc<str>,
    success: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ComponentLabels {
    app_id: Arc<str>,
    component: Arc<str>,
    success: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IngressLabels {
    app_id: Arc<str>,
    component: Arc<str>,
    process_status: Arc<str>,
    status: Arc<str>,
    topic: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EgressLabels {
    app_id: Arc<str>,
    component: Arc<str>,
    success: bool,
    topic: Arc<str>,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS_MS)
}

fn size_histogram() -> Histogram {
    Histogram::new(SIZE_BUCKETS_BYTES)
}

fn latency_family<L: Clone + std::hash::Hash + Eq>() -> HistogramFamily<L> {
    Family::new_with_constructor(latency_histogram)
}

fn millis(latency: Duration) -> f64 {
    latency.as_secs_f64() * 1000.0
}

/// A count and a latency histogram of one kind of component call.
#[derive(Debug)]
struct ComponentFamilies<L: Clone + std::hash::Hash + Eq> {
    count: Family<L, Count>,
    latency: HistogramFamily<L>,
}

impl<L> ComponentFamilies<L>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    fn register(registry: &mut Registry, kind: &str, what: &str) -> Self {
        let this = Self {
            count: Family::default(),
            latency: latency_family(),
        };
        registry.register(
            format!("dapr_component_{kind}_count"),
            format!("The number of operations performed on the {what} component"),
            this.count.clone(),
        );
        registry.register(
            format!("dapr_component_{kind}_latencies"),
            format!("The latency of the response from the {what} component, in milliseconds"),
            this.latency.clone(),
        );
        this
    }

    fn record(&self, labels: &L, latency: Duration) {
        self.count.get_or_create(labels).inc();
        self.latency.get_or_create(labels).observe(millis(latency));
    }
}

/// The metrics of one sidecar. Cheap to record from any task; share it as `Arc<Metrics>`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    app_id: Arc<str>,

    paths: Interner,
    grpc_methods: Interner,
    app_ids: Interner,
    invoke_methods: Interner,
    statuses: Interner,
    components: Interner,
    operations: Interner,
    topics: Interner,

    http_request_count: Family<HttpRequestLabels, Count>,
    http_response_count: Family<HttpResponseLabels, Count>,
    http_latency: HistogramFamily<HttpResponseLabels>,
    http_request_bytes: HistogramFamily<HttpRequestLabels>,
    http_response_bytes: HistogramFamily<HttpResponseLabels>,

    grpc_completed: Family<GrpcLabels, Count>,
    grpc_latency: HistogramFamily<GrpcLabels>,

    invoke_req_sent: Family<InvokeSentLabels, Counter>,
    invoke_res_recv: Family<InvokeRecvLabels, Counter>,
    invoke_res_recv_latency: HistogramFamily<InvokeRecvLabels>,
    invoke_req_recv: Family<InvokeInLabels, Counter>,
    invoke_res_sent: Family<InvokeOutLabels, Counter>,
    invoke_res_sent_latency: HistogramFamily<InvokeOutLabels>,

    http_handles: HandleCache<HttpHandles>,
    grpc_handles: HandleCache<GrpcHandles>,
    invoke_sent_handles: HandleCache<Counter>,
    invoke_recv_handles: HandleCache<CallHandles>,
    invoke_in_handles: HandleCache<Counter>,
    invoke_out_handles: HandleCache<CallHandles>,

    pubsub_ingress_count: Family<IngressLabels, Count>,
    pubsub_ingress_latency: HistogramFamily<IngressLabels>,
    pubsub_egress_count: Family<EgressLabels, Count>,
    pubsub_egress_latency: HistogramFamily<EgressLabels>,

    state: ComponentFamilies<ComponentOpLabels>,
    output_binding: ComponentFamilies<ComponentOpLabels>,
    configuration: ComponentFamilies<ComponentOpLabels>,
    secret: ComponentFamilies<ComponentOpLabels>,
    crypto: ComponentFamilies<ComponentOpLabels>,
    input_binding: ComponentFamilies<ComponentLabels>,
    conversation: ComponentFamilies<ComponentLabels>,
}

impl Metrics {
    /// Creates the metrics of the sidecar of `app_id` (the `app_id` label of every series).
    pub fn new(app_id: &str) -> Self {
        let mut registry = Registry::default();

        let http_request_count = Family::<HttpRequestLabels, Count>::default();
        registry.register(
            "dapr_http_server_request_count",
            "Number of HTTP requests started in server",
            http_request_count.clone(),
        );
        let http_response_count = Family::<HttpResponseLabels, Count>::default();
        registry.register(
            "dapr_http_server_response_count",
            "Number of HTTP responses in server",
            http_response_count.clone(),
        );
        let http_latency = latency_family::<HttpResponseLabels>();
        registry.register(
            "dapr_http_server_latency",
            "HTTP request end to end latency in server, in milliseconds",
            http_latency.clone(),
        );
        let http_request_bytes: HistogramFamily<HttpRequestLabels> =
            Family::new_with_constructor(size_histogram);
        registry.register(
            "dapr_http_server_request_bytes",
            "HTTP request body size if set as ContentLength (uncompressed) in server",
            http_request_bytes.clone(),
        );
        let http_response_bytes: HistogramFamily<HttpResponseLabels> =
            Family::new_with_constructor(size_histogram);
        registry.register(
            "dapr_http_server_response_bytes",
            "HTTP response body size (uncompressed) in server",
            http_response_bytes.clone(),
        );

        let grpc_completed = Family::<GrpcLabels, Count>::default();
        registry.register(
            "dapr_grpc_io_server_completed_rpcs",
            "Count of RPCs by method and status",
            grpc_completed.clone(),
        );
        let grpc_latency = latency_family::<GrpcLabels>();
        registry.register(
            "dapr_grpc_io_server_server_latency",
            "Distribution of server latency in milliseconds, by method",
            grpc_latency.clone(),
        );

        // Counters get their `_total` suffix from the encoder.
        let invoke_req_sent = Family::<InvokeSentLabels, Counter>::default();
        registry.register(
            "dapr_runtime_service_invocation_req_sent",
            "The number of requests sent via service invocation",
            invoke_req_sent.clone(),
        );
        let invoke_res_recv = Family::<InvokeRecvLabels, Counter>::default();
        registry.register(
            "dapr_runtime_service_invocation_res_recv",
            "The number of responses received via service invocation",
            invoke_res_recv.clone(),
        );
        let invoke_res_recv_latency = latency_family::<InvokeRecvLabels>();
        registry.register(
            "dapr_runtime_service_invocation_res_recv_latency_ms",
            "The latency of service invocation responses, in milliseconds",
            invoke_res_recv_latency.clone(),
        );
        let invoke_req_recv = Family::<InvokeInLabels, Counter>::default();
        registry.register(
            "dapr_runtime_service_invocation_req_recv",
            "The number of requests received via service invocation",
            invoke_req_recv.clone(),
        );
        let invoke_res_sent = Family::<InvokeOutLabels, Counter>::default();
        registry.register(
            "dapr_runtime_service_invocation_res_sent",
            "The number of responses sent via service invocation",
            invoke_res_sent.clone(),
        );
        let invoke_res_sent_latency = latency_family::<InvokeOutLabels>();
        registry.register(
            "dapr_runtime_service_invocation_res_sent_latency_ms",
            "The time the app took to answer invocations received, in milliseconds",
            invoke_res_sent_latency.clone(),
        );

        let pubsub_ingress_count = Family::<IngressLabels, Count>::default();
        registry.register(
            "dapr_component_pubsub_ingress_count",
            "The number of incoming messages arriving from the pub/sub component",
            pubsub_ingress_count.clone(),
        );
        let pubsub_ingress_latency = latency_family::<IngressLabels>();
        registry.register(
            "dapr_component_pubsub_ingress_latencies",
            "The consuming app event processing latency, in milliseconds",
            pubsub_ingress_latency.clone(),
        );
        let pubsub_egress_count = Family::<EgressLabels, Count>::default();
        registry.register(
            "dapr_component_pubsub_egress_count",
            "The number of outgoing messages published to the pub/sub component",
            pubsub_egress_count.clone(),
        );
        let pubsub_egress_latency = latency_family::<EgressLabels>();
        registry.register(
            "dapr_component_pubsub_egress_latencies",
            "The latency of the response from the pub/sub component, in milliseconds",
            pubsub_egress_latency.clone(),
        );

        let state = ComponentFamilies::register(&mut registry, "state", "state");
        let output_binding =
            ComponentFamilies::register(&mut registry, "output_binding", "output binding");
        let input_binding =
            ComponentFamilies::register(&mut registry, "input_binding", "input binding");
        let configuration =
            ComponentFamilies::register(&mut registry, "configuration", "configuration");
        let secret = ComponentFamilies::register(&mut registry, "secret", "secret");
        let crypto = ComponentFamilies::register(&mut registry, "crypto", "crypto");
        let conversation =
            ComponentFamilies::register(&mut registry, "conversation", "conversation");

        Self {
            registry,
            app_id: Arc::from(app_id),
            paths: Interner::new(),
            grpc_methods: Interner::new(),
            app_ids: Interner::new(),
            invoke_methods: Interner::new(),
            statuses: Interner::new(),
            components: Interner::new(),
            operations: Interner::new(),
            topics: Interner::new(),
            http_request_count,
            http_response_count,
            http_latency,
            http_request_bytes,
            http_response_bytes,
            grpc_completed,
            grpc_latency,
            invoke_req_sent,
            invoke_res_recv,
            invoke_res_recv_latency,
            invoke_req_recv,
            invoke_res_sent,
            invoke_res_sent_latency,
            http_handles: HandleCache::new(),
            grpc_handles: HandleCache::new(),
            invoke_sent_handles: HandleCache::new(),
            invoke_recv_handles: HandleCache::new(),
            invoke_in_handles: HandleCache::new(),
            invoke_out_handles: HandleCache::new(),
            pubsub_ingress_count,
            pubsub_ingress_latency,
            pubsub_egress_count,
            pubsub_egress_latency,
            state,
            output_binding,
            configuration,
            secret,
            crypto,
            input_binding,
            conversation,
        }
    }

    /// The `app_id` label of every series.
    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// Renders every metric in the OpenMetrics text format (ends with `# EOF`); serve it as
    /// [`CONTENT_TYPE_OPENMETRICS`].
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(%error, "Encoding metrics failed");
        }
        out
    }

    /// Renders every metric in the Prometheus text format 0.0.4; serve it as
    /// [`CONTENT_TYPE_PROMETHEUS`].
    pub fn render_prometheus_text(&self) -> String {
        let mut out = String::new();
        if let Err(error) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        {
            tracing::warn!(%error, "Encoding metrics failed");
        }
        out
    }

    /// Records one request served by the HTTP API. `path` must be the route template
    /// (axum's `MatchedPath`), never the raw path; use [`UNMATCHED_PATH`] when no route matched.
    pub fn http_server_request(
        &self,
        method: &http::Method,
        path: &str,
        status: u16,
        latency: Duration,
        req_bytes: u64,
        res_bytes: u64,
    ) {
        let method = method_label(method);
        self.http_handles.record(
            method,
            path,
            status,
            || {
                let request = HttpRequestLabels {
                    app_id: self.app_id.clone(),
                    method,
                    path: self.paths.get(path),
                };
                let response = HttpResponseLabels {
                    app_id: request.app_id.clone(),
                    method,
                    path: request.path.clone(),
                    status,
                };
                HttpHandles {
                    request_count: self.http_request_count.get_or_create_owned(&request),
                    request_bytes: self.http_request_bytes.get_or_create_owned(&request),
                    response_count: self.http_response_count.get_or_create_owned(&response),
                    latency: self.http_latency.get_or_create_owned(&response),
                    response_bytes: self.http_response_bytes.get_or_create_owned(&response),
                }
            },
            |h| {
                h.request_count.inc();
                h.request_bytes.observe(req_bytes as f64);
                h.response_count.inc();
                h.latency.observe(millis(latency));
                h.response_bytes.observe(res_bytes as f64);
            },
        );
    }

    /// Records one completed gRPC call: `method` is the full method name
    /// (`/dapr.proto.runtime.v1.Dapr/GetState`), `code` the `grpc-status` code.
    pub fn grpc_server_rpc(&self, method: &str, code: i32, latency: Duration) {
        let method = self.grpc_methods.get(method);
        self.grpc_server_rpc_interned(method, code, latency);
    }

    fn grpc_server_rpc_interned(&self, method: Arc<str>, code: i32, latency: Duration) {
        let status = grpc_code_name(code);
        self.grpc_handles.record(
            &method,
            status,
            0,
            || {
                let labels = GrpcLabels {
                    app_id: self.app_id.clone(),
                    grpc_server_method: method.clone(),
                    grpc_server_status: status,
                };
                GrpcHandles {
                    count: self.grpc_completed.get_or_create_owned(&labels),
                    latency: self.grpc_latency.get_or_create_owned(&labels),
                }
            },
            |h| {
                h.count.inc();
                h.latency.observe(millis(latency));
            },
        );
    }

    /// Records an invocation request sent to `dest_app_id`.
    pub fn invoke_req_sent(&self, dest_app_id: &str, method: &str) {
        self.invoke_sent_handles.record(
            dest_app_id,
            method,
            0,
            || {
                self.invoke_req_sent.get_or_create_owned(&InvokeSentLabels {
                    app_id: self.app_id.clone(),
                    dest_app_id: self.app_ids.get(dest_app_id),
                    method: self.invoke_methods.get(method),
                })
            },
            |c| {
                c.inc();
            },
        );
    }

    /// Records the response of `dest_app_id` to an invocation request: `status` is the HTTP
    /// status code (`200`) or gRPC code (`0`), `latency` the round trip.
    pub fn invoke_res_recv(&self, dest_app_id: &str, method: &str, status: u16, latency: Duration) {
        let series = (&self.invoke_res_recv, &self.invoke_res_recv_latency);
        self.record_call(
            &self.invoke_recv_handles,
            series,
            (dest_app_id, method, status),
            latency,
            |dest_app_id, method, status| InvokeRecvLabels {
                app_id: self.app_id.clone(),
                dest_app_id,
                method,
                status,
            },
        );
    }

    /// Records an invocation request received from `src_app_id`.
    pub fn invoke_req_recv(&self, src_app_id: &str, method: &str) {
        self.invoke_in_handles.record(
            src_app_id,
            method,
            0,
            || {
                self.invoke_req_recv.get_or_create_owned(&InvokeInLabels {
                    app_id: self.app_id.clone(),
                    src_app_id: self.app_ids.get(src_app_id),
                    method: self.invoke_methods.get(method),
                })
            },
            |c| {
                c.inc();
            },
        );
    }

    /// Records the response sent back to `src_app_id` (`status` as in
    /// [`Metrics::invoke_res_recv`]); `latency` is the time the app took.
    pub fn invoke_res_sent(&self, src_app_id: &str, method: &str, status: u16, latency: Duration) {
        let series = (&self.invoke_res_sent, &self.invoke_res_sent_latency);
        self.record_call(
            &self.invoke_out_handles,
            series,
            (src_app_id, method, status),
            latency,
            |src_app_id, method, status| InvokeOutLabels {
                app_id: self.app_id.clone(),
                src_app_id,
                method,
                status,
            },
        );
    }

    /// Counts one answered invocation and its latency in `series`, whose labels `labels` makes
    /// from the interned (app id, method, status).
    fn record_call<L: Clone + std::hash::Hash + Eq>(
        &self,
        cache: &HandleCache<CallHandles>,
        series: (&Family<L, Counter>, &HistogramFamily<L>),
        (app_id, method, status): (&str, &str, u16),
        latency: Duration,
        labels: impl FnOnce(Arc<str>, Arc<str>, Arc<str>) -> L,
    ) {
        cache.record(
            app_id,
            method,
            status,
            || {
                let labels = labels(
                    self.app_ids.get(app_id),
                    self.invoke_methods.get(method),
                    self.statuses.get(&status.to_string()),
                );
                CallHandles {
                    count: series.0.get_or_create_owned(&labels),
                    latency: series.1.get_or_create_owned(&labels),
                }
            },
            |h| {
                h.count.inc();
                h.latency.observe(millis(latency));
            },
        );
    }

    /// Records one call to a component. `kind` is one of the `KIND_*` constants (`"bindings"`
    /// and `"secretstores"` are accepted as aliases of output bindings and secrets); calls of
    /// other kinds are not recorded (pub/sub has [`Metrics::pubsub_egress`]). `op` is Dapr's
    /// operation name (`OP_*`, or the binding operation); input bindings and conversation
    /// components have no operation label.
    pub fn component_op(
        &self,
        component: &str,
        kind: &str,
        op: &str,
        success: bool,
        latency: Duration,
    ) {
        let families = match kind {
            KIND_STATE => &self.state,
            KIND_OUTPUT_BINDING | "bindings" | "binding" => &self.output_binding,
            KIND_CONFIGURATION => &self.configuration,
            KIND_SECRET | "secretstores" => &self.secret,
            KIND_CRYPTO => &self.crypto,
            KIND_INPUT_BINDING | KIND_CONVERSATION => {
                let families = if kind == KIND_INPUT_BINDING {
                    &self.input_binding
                } else {
                    &self.conversation
                };
                let labels = ComponentLabels {
                    app_id: self.app_id.clone(),
                    component: self.components.get(component),
                    success,
                };
                families.record(&labels, latency);
                return;
            }
            _ => {
                tracing::debug!(kind, component, "No metrics for this component kind");
                return;
            }
        };
        let labels = ComponentOpLabels {
            app_id: self.app_id.clone(),
            component: self.components.get(component),
            operation: self.operations.get(op),
            success,
        };
        families.record(&labels, latency);
    }

    /// Records one message delivered to the app: `status` is [`PUBSUB_SUCCESS`],
    /// [`PUBSUB_RETRY`] or [`PUBSUB_DROP`] (exported as both `process_status` and `status`,
    /// like Dapr), `latency` the app's processing time.
    pub fn pubsub_ingress(&self, component: &str, topic: &str, status: &str, latency: Duration) {
        let status = self.statuses.get(status);
        let labels = IngressLabels {
            app_id: self.app_id.clone(),
            component: self.components.get(component),
            process_status: status.clone(),
            status,
            topic: self.topics.get(topic),
        };
        self.pubsub_ingress_count.get_or_create(&labels).inc();
        self.pubsub_ingress_latency
            .get_or_create(&labels)
            .observe(millis(latency));
    }

    /// Records one publish to a broker; `latency` is the broker's response time.
    pub fn pubsub_egress(&self, component: &str, topic: &str, success: bool, latency: Duration) {
        let labels = EgressLabels {
            app_id: self.app_id.clone(),
            component: self.components.get(component),
            success,
            topic: self.topics.get(topic),
        };
        self.pubsub_egress_count.get_or_create(&labels).inc();
        self.pubsub_egress_latency
            .get_or_create(&labels)
            .observe(millis(latency));
    }
}

/// The `method` label of an HTTP request; non-standard methods share one value.
fn method_label(method: &http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "OTHER",
    }
}

/// The `grpc_server_status` label: the canonical code name, as Dapr (OpenCensus) exports it.
fn grpc_code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample line starting with `series ` (name and labels, exactly).
    pub(super) fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn http_request_is_recorded_with_dapr_names_and_labels() {
        let m = Metrics::new("app1");
        let path = "/v1.0/state/{store}";
        m.http_server_request(
            &http::Method::GET,
            path,
            200,
            Duration::from_millis(7),
            10,
            2000,
        );
        m.http_server_request(
            &http::Method::GET,
            path,
            200,
            Duration::from_millis(70),
            0,
            100,
        );
        m.http_server_request(
            &http::Method::POST,
            path,
            500,
            Duration::from_millis(1),
            0,
            0,
        );
        let text = m.render();
        let req = r#"app_id="app1",method="GET",path="/v1.0/state/{store}""#;
        let res = r#"app_id="app1",method="GET",path="/v1.0/state/{store}",status="200""#;
        assert!(
            text.contains("# TYPE dapr_http_server_request_count unknown"),
            "{text}"
        );
        assert_eq!(
            sample(&text, &format!("dapr_http_server_request_count{{{req}}}")),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, &format!("dapr_http_server_response_count{{{res}}}")),
            Some(2.0)
        );
        assert!(text.contains("# TYPE dapr_http_server_latency histogram"));
        assert_eq!(
            sample(&text, &format!("dapr_http_server_latency_count{{{res}}}")),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, &format!("dapr_http_server_latency_sum{{{res}}}")),
            Some(77.0)
        );
        // 7 ms falls in the 8 ms bucket, 70 ms in the 80 ms one.
        assert_eq!(
            sample(
                &text,
                &format!("dapr_http_server_latency_bucket{{le=\"6.0\",{res}}}")
            ),
            Some(0.0)
        );
        assert_eq!(
            sample(
                &text,
                &format!("dapr_http_server_latency_bucket{{le=\"8.0\",{res}}}")
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                &format!("dapr_http_server_latency_bucket{{le=\"80.0\",{res}}}")
            ),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &text,
                &format!("dapr_http_server_response_bytes_sum{{{res}}}")
            ),
            Some(2100.0)
        );
        assert_eq!(
            sample(
                &text,
                &format!("dapr_http_server_request_bytes_bucket{{le=\"1024.0\",{req}}}")
            ),
            Some(2.0)
        );
        let failed = r#"app_id="app1",method="POST",path="/v1.0/state/{store}",status="500""#;
        assert_eq!(
            sample(
                &text,
                &format!("dapr_http_server_response_count{{{failed}}}")
            ),
            Some(1.0)
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn grpc_rpc_is_recorded_with_code_names() {
        let m = Metrics::new("app1");
        let method = "/dapr.proto.runtime.v1.Dapr/GetState";
        m.grpc_server_rpc(method, 0, Duration::from_millis(3));
        m.grpc_server_rpc(method, 5, Duration::from_millis(3));
        m.grpc_server_rpc(method, 5, Duration::from_millis(3));
        m.grpc_server_rpc(method, 99, Duration::from_millis(3));
        let text = m.render();
        let labels = |status: &str| {
            format!(
                r#"{{app_id="app1",grpc_server_method="{method}",grpc_server_status="{status}"}}"#
            )
        };
        let completed = |s: &str| format!("dapr_grpc_io_server_completed_rpcs{}", labels(s));
        assert_eq!(sample(&text, &completed("OK")), Some(1.0));
        assert_eq!(sample(&text, &completed("NOT_FOUND")), Some(2.0));
        assert_eq!(sample(&text, &completed("UNKNOWN")), Some(1.0));
        let latency = format!(
            "dapr_grpc_io_server_server_latency_count{}",
            labels("NOT_FOUND")
        );
        assert_eq!(sample(&text, &latency), Some(2.0));
    }

    #[test]
    fn service_invocation_counters_end_in_total() {
        let m = Metrics::new("caller");
        m.invoke_req_sent("callee", "orders");
        m.invoke_req_sent("callee", "orders");
        m.invoke_res_recv("callee", "orders", 200, Duration::from_millis(12));
        m.invoke_req_recv("other", "hello");
        m.invoke_res_sent("other", "hello", 0, Duration::from_millis(2));
        let text = m.render();
        assert!(text.contains("# TYPE dapr_runtime_service_invocation_req_sent counter"));
        assert_eq!(
            sample(
                &text,
                r#"dapr_runtime_service_invocation_req_sent_total{app_id="caller",dest_app_id="callee",method="orders"}"#
            ),
            Some(2.0)
        );
        let recv = r#"{app_id="caller",dest_app_id="callee",method="orders",status="200"}"#;
        assert_eq!(
            sample(
                &text,
                &format!("dapr_runtime_service_invocation_res_recv_total{recv}")
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                &format!("dapr_runtime_service_invocation_res_recv_latency_ms_sum{recv}")
            ),
            Some(12.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"dapr_runtime_service_invocation_req_recv_total{app_id="caller",src_app_id="other",method="hello"}"#
            ),
            Some(1.0)
        );
        let sent = r#"{app_id="caller",src_app_id="other",method="hello",status="0"}"#;
        assert_eq!(
            sample(
                &text,
                &format!("dapr_runtime_service_invocation_res_sent_total{sent}")
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                &format!("dapr_runtime_service_invocation_res_sent_latency_ms_count{sent}")
            ),
            Some(1.0)
        );
    }

    #[test]
    fn component_and_pubsub_metrics_use_dapr_names() {
        let m = Metrics::new("app1");
        m.component_op("redis", KIND_STATE, OP_GET, true, Duration::from_millis(2));
        m.component_op("redis", KIND_STATE, OP_GET, false, Duration::from_millis(2));
        m.component_op(
            "kafka-out",
            "bindings",
            "create",
            true,
            Duration::from_millis(4),
        );
        m.component_op(
            "cron",
            KIND_INPUT_BINDING,
            "ignored",
            true,
            Duration::from_millis(4),
        );
        m.component_op(
            "vault",
            "secretstores",
            OP_GET,
            true,
            Duration::from_millis(4),
        );
        m.component_op("x", "no-such-kind", OP_GET, true, Duration::from_millis(4));
        m.pubsub_ingress("pubsub", "orders", PUBSUB_RETRY, Duration::from_millis(30));
        m.pubsub_egress("pubsub", "orders", true, Duration::from_millis(1));
        let text = m.render();
        let state = |success: &str| {
            format!(
                r#"dapr_component_state_count{{app_id="app1",component="redis",operation="get",success="{success}"}}"#
            )
        };
        assert_eq!(sample(&text, &state("true")), Some(1.0));
        assert_eq!(sample(&text, &state("false")), Some(1.0));
        assert_eq!(
            sample(
                &text,
                r#"dapr_component_state_latencies_count{app_id="app1",component="redis",operation="get",success="true"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"dapr_component_output_binding_count{app_id="app1",component="kafka-out",operation="create",success="true"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"dapr_component_input_binding_count{app_id="app1",component="cron",success="true"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"dapr_component_secret_count{app_id="app1",component="vault",operation="get",success="true"}"#
            ),
            Some(1.0)
        );
        assert!(!text.contains(r#"component="x""#));
        let ingress = r#"{app_id="app1",component="pubsub",process_status="retry",status="retry",topic="orders"}"#;
        assert_eq!(
            sample(
                &text,
                &format!("dapr_component_pubsub_ingress_count{ingress}")
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                &format!("dapr_component_pubsub_ingress_latencies_sum{ingress}")
            ),
            Some(30.0)
        );
        let egress = r#"{app_id="app1",component="pubsub",success="true",topic="orders"}"#;
        assert_eq!(
            sample(
                &text,
                &format!("dapr_component_pubsub_egress_count{egress}")
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                &format!("dapr_component_pubsub_egress_latencies_count{egress}")
            ),
            Some(1.0)
        );
    }

    #[test]
    fn prometheus_text_format_has_untyped_counts() {
        let m = Metrics::new("app1");
        m.pubsub_egress("pubsub", "orders", false, Duration::from_millis(1));
        m.invoke_req_sent("b", "m");
        let text = m.render_prometheus_text();
        assert!(
            text.contains("# TYPE dapr_component_pubsub_egress_count untyped"),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                r#"dapr_component_pubsub_egress_count{app_id="app1",component="pubsub",success="false",topic="orders"}"#
            ),
            Some(1.0)
        );
        assert!(text.contains("# TYPE dapr_runtime_service_invocation_req_sent_total counter"));
        assert!(!text.contains("# EOF"));
    }

    #[test]
    fn label_values_are_capped_per_dimension() {
        let m = Metrics::new("app1");
        for i in 0..MAX_LABEL_VALUES + 5 {
            m.pubsub_egress("pubsub", &format!("topic-{i}"), true, Duration::ZERO);
        }
        let text = m.render();
        let overflow = format!(
            r#"dapr_component_pubsub_egress_count{{app_id="app1",component="pubsub",success="true",topic="{OVERFLOW_LABEL}"}}"#
        );
        assert_eq!(sample(&text, &overflow), Some(5.0));
        let first = r#"dapr_component_pubsub_egress_count{app_id="app1",component="pubsub",success="true",topic="topic-0"}"#;
        assert_eq!(sample(&text, first), Some(1.0));
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new("app\"1");
        m.invoke_req_sent("b\\x", "line\nbreak");
        let text = m.render();
        assert!(
            text.contains(r#"{app_id="app\"1",dest_app_id="b\\x",method="line\nbreak"} 1"#),
            "{text}"
        );
    }
}
