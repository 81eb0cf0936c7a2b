//! Pub/sub scenarios, on `pubsub.in-memory`, `pubsub.sqlite`, `pubsub.redis` and
//! `pubsub.jetstream`:
//!
//! * **Publish latency**: a closed loop of `POST /v1.0/publish/pubsub/{topic}` with `{"n":1}` on
//!   a sidecar started without `--app-port`, so the topic has no subscriber; compared with the
//!   bare HTTP round trip, measured again right before these rows.
//! * **Publish→deliver**: one sidecar per broker both publishes and delivers, to a subscriber
//!   app served from this process (`GET /dapr/subscribe`, `POST /msg/{topic}`, 200 to
//!   acknowledge). Latency: messages are published one at a time at a fixed rate with the send
//!   time in the payload, and the app records receive − send. Throughput: N messages are
//!   published by 16 concurrent publishers to a subscription with `concurrency` 16, and the app
//!   counts distinct messages until the last one arrives.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;

use crate::load::{self, Call, Load, VALUE};
use crate::procs::{ComponentSpec, Sidecar};
use crate::report::{Delivery, Report, Row};

/// The name of the pub/sub component in every scenario.
const PUBSUB: &str = "pubsub";
/// The brokers measured, in report order.
pub(crate) const BROKERS: &[&str] = &[
    "pubsub.in-memory",
    "pubsub.sqlite",
    "pubsub.redis",
    "pubsub.jetstream",
];
/// Messages per second of the paced latency scenario.
pub(crate) const RATE: u32 = 200;
/// Concurrent publishers of the throughput scenario.
pub(crate) const PUBLISHERS: usize = 16;
/// `concurrency` of the throughput subscription.
pub(crate) const SUB_CONCURRENCY: usize = 16;
/// Sequence numbers from here on are warm-up messages, which the app acknowledges and ignores.
const WARM_UP_BASE: u64 = 1_000_000_000;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Microseconds since the first call, on the monotonic clock shared by publisher and app.
fn now_us() -> u64 {
    u64::try_from(EPOCH.get_or_init(Instant::now).elapsed().as_micros()).unwrap_or(u64::MAX)
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?)
}

/// Where the brokers live, and what a run created there, to remove it afterwards.
pub(crate) struct Brokers {
    pub(crate) redis: String,
    pub(crate) nats: String,
    run: String,
    dir: tempfile::TempDir,
    redis_keys: Vec<String>,
    streams: Vec<String>,
}

impl Brokers {
    pub(crate) fn new(redis: String, nats: String) -> anyhow::Result<Self> {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Ok(Self {
            redis,
            nats,
            run: format!("{}-{secs}", std::process::id()),
            dir: tempfile::tempdir()?,
            redis_keys: Vec::new(),
            streams: Vec::new(),
        })
    }

    /// A topic name unique to this run.
    fn topic(&mut self, kind: &str, tag: &str) -> String {
        let t = format!("bench-{}-{}-{tag}", self.run, short(kind));
        if kind == "pubsub.redis" {
            self.redis_keys.push(t.clone());
        }
        t
    }

    /// The component metadata of `kind`, with a fresh SQLite file or JetStream stream.
    fn metadata(&mut self, kind: &str, tag: &str) -> Vec<(&'static str, String)> {
        match kind {
            "pubsub.sqlite" => vec![(
                "connectionString",
                self.dir
                    .path()
                    .join(format!("{tag}.db"))
                    .display()
                    .to_string(),
            )],
            "pubsub.redis" => vec![("redisHost", self.redis.clone())],
            "pubsub.jetstream" => {
                let stream = format!("bench_{}_{tag}", self.run.replace('-', "_"));
                self.streams.push(stream.clone());
                vec![("natsURL", self.nats.clone()), ("streamName", stream)]
            }
            _ => vec![],
        }
    }

    /// Deletes the Redis streams and JetStream streams the run created.
    pub(crate) async fn cleanup(&mut self) {
        if !self.redis_keys.is_empty()
            && let Ok(client) = redis::Client::open(format!("redis://{}", self.redis))
            && let Ok(mut conn) = client.get_multiplexed_async_connection().await
        {
            let _ = redis::cmd("DEL")
                .arg(&self.redis_keys)
                .query_async::<()>(&mut conn)
                .await;
        }
        if !self.streams.is_empty()
            && let Ok(client) = async_nats::connect(&self.nats).await
        {
            let js = async_nats::jetstream::new(client);
            for s in &self.streams {
                let _ = js.delete_stream(s).await;
            }
        }
        self.redis_keys.clear();
        self.streams.clear();
    }
}

fn short(kind: &str) -> &str {
    kind.strip_prefix("pubsub.").unwrap_or(kind)
}

/// Closed-loop publishing of `{"n":1}` to `topic`.
fn publish_call(port: u16, topic: &str, concurrency: usize) -> Call {
    let c = load::http_client(concurrency);
    let url = format!("http://127.0.0.1:{port}/v1.0/publish/{PUBSUB}/{topic}");
    Arc::new(move |_| {
        let (c, url) = (c.clone(), url.clone());
        Box::pin(async move { publish(&c, url, Bytes::from_static(VALUE.as_bytes())).await })
    })
}

async fn publish(c: &Client<HttpConnector, Full<Bytes>>, url: String, body: Bytes) -> bool {
    let req = http::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(body));
    let Ok(req) = req else { return false };
    load::send(c, req).await
}

fn stamped(i: u64) -> Bytes {
    Bytes::from(format!(r#"{{"t":{},"i":{i}}}"#, now_us()))
}

/// What the app received on one topic since [`App::expect`].
struct Inbox {
    seen: Vec<bool>,
    unique: usize,
    duplicates: u64,
    latency_us: Histogram<u64>,
    last: Option<Instant>,
}

impl Inbox {
    fn new(expected: usize) -> anyhow::Result<Self> {
        Ok(Self {
            seen: vec![false; expected],
            unique: 0,
            duplicates: 0,
            latency_us: histogram()?,
            last: None,
        })
    }

    fn record(&mut self, i: u64, latency_us: u64, at: Instant) {
        let Some(slot) = usize::try_from(i).ok().and_then(|i| self.seen.get_mut(i)) else {
            return;
        };
        if *slot {
            self.duplicates += 1;
            return;
        }
        *slot = true;
        self.unique += 1;
        let _ = self.latency_us.record(latency_us.max(1));
        self.last = Some(at);
    }
}

type Inboxes = Arc<Mutex<HashMap<String, Inbox>>>;

/// The subscriber app: an HTTP/1.1 server in this process.
struct App {
    port: u16,
    inboxes: Inboxes,
    task: tokio::task::JoinHandle<()>,
}

impl App {
    /// Serves `/dapr/subscribe` with one subscription per `(topic, concurrency)`.
    async fn start(subscriptions: &[(String, usize)]) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let list: Vec<String> = subscriptions
            .iter()
            .map(|(topic, c)| {
                format!(
                    r#"{{"pubsubname":"{PUBSUB}","topic":"{topic}","route":"/msg/{topic}","metadata":{{"concurrency":"{c}"}}}}"#
                )
            })
            .collect();
        let subscribe = Bytes::from(format!("[{}]", list.join(",")));
        let inboxes: Inboxes = Arc::default();
        {
            let mut map = inboxes.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            for (topic, _) in subscriptions {
                map.insert(topic.clone(), Inbox::new(0)?);
            }
        }
        let shared = inboxes.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = tcp.set_nodelay(true);
                let (subscribe, inboxes) = (subscribe.clone(), shared.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        handle(req, subscribe.clone(), inboxes.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Ok(Self {
            port,
            inboxes,
            task,
        })
    }

    /// Starts counting `expected` messages numbered from 0 on `topic`.
    fn expect(&self, topic: &str, expected: usize) -> anyhow::Result<()> {
        let mut map = self
            .inboxes
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?;
        map.insert(topic.to_owned(), Inbox::new(expected)?);
        Ok(())
    }

    fn received(&self, topic: &str) -> usize {
        self.inboxes
            .lock()
            .ok()
            .and_then(|m| m.get(topic).map(|i| i.unique))
            .unwrap_or(0)
    }

    fn take(&self, topic: &str) -> anyhow::Result<Inbox> {
        let mut map = self
            .inboxes
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?;
        map.remove(topic).context("unknown topic")
    }

    /// Waits until `expected` distinct messages arrived on `topic`, or none arrived for
    /// `quiet`.
    async fn wait_for(&self, topic: &str, expected: usize, quiet: Duration) {
        let mut last_count = 0;
        let mut last_change = Instant::now();
        loop {
            let n = self.received(topic);
            if n >= expected {
                return;
            }
            if n != last_count {
                last_count = n;
                last_change = Instant::now();
            } else if last_change.elapsed() > quiet {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    req: http::Request<Incoming>,
    subscribe: Bytes,
    inboxes: Inboxes,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let reply = |status: u16, body: Bytes| {
        let mut res = http::Response::new(Full::new(body));
        *res.status_mut() = http::StatusCode::from_u16(status).unwrap_or_default();
        res.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        Ok(res)
    };
    if path == "/dapr/subscribe" {
        return reply(200, subscribe);
    }
    let Some(topic) = path.strip_prefix("/msg/") else {
        return reply(404, Bytes::new());
    };
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let (now, at) = (now_us(), Instant::now());
    if let Some((t, i)) = stamp(&body)
        && let Ok(mut map) = inboxes.lock()
        && let Some(inbox) = map.get_mut(topic)
    {
        inbox.record(i, now.saturating_sub(t), at);
    }
    reply(200, Bytes::new())
}

/// The `t` and `i` of a CloudEvent's `data` (an object, or a JSON string holding one).
fn stamp(body: &[u8]) -> Option<(u64, u64)> {
    let event: serde_json::Value = serde_json::from_slice(body).ok()?;
    let data = event.get("data")?;
    let owned;
    let data = match data {
        serde_json::Value::String(s) => {
            owned = serde_json::from_str::<serde_json::Value>(s).ok()?;
            &owned
        }
        other => other,
    };
    Some((data.get("t")?.as_u64()?, data.get("i")?.as_u64()?))
}

/// Runs every pub/sub scenario on every broker; a broker that fails is reported and skipped.
pub(crate) async fn run(
    mecha: &Path,
    report: &mut Report,
    duration: Duration,
    quick: bool,
    brokers: &mut Brokers,
) {
    // The baseline again, right before the publish rows it is compared with: on a shared
    // machine the round trip drifts over the minutes the other scenarios take.
    if let Err(e) = baseline(report, duration).await {
        eprintln!("pub/sub baseline failed: {e:#}");
        report
            .notes
            .push(format!("the bare HTTP baseline failed: {e:#}"));
    }
    for kind in BROKERS {
        if let Err(e) = publish_only(mecha, report, duration, brokers, kind).await {
            eprintln!("{kind}: publish scenario failed: {e:#}");
            report
                .notes
                .push(format!("`{kind}` publish scenario failed: {e:#}"));
        }
        match deliver(mecha, duration, quick, brokers, kind).await {
            Ok(d) => report.deliveries.push(d),
            Err(e) => {
                eprintln!("{kind}: publish→deliver scenario failed: {e:#}");
                report
                    .notes
                    .push(format!("`{kind}` publish→deliver scenario failed: {e:#}"));
            }
        }
        brokers.cleanup().await;
    }
}

/// The bare HTTP round trip, into the pub/sub rows.
async fn baseline(report: &mut Report, duration: Duration) -> anyhow::Result<()> {
    eprintln!("Bare HTTP round trip (pub/sub baseline) …");
    let bare = crate::procs::BareServer::start().await?;
    for &concurrency in crate::CONCURRENCIES {
        let load = Load {
            concurrency,
            duration,
        };
        let r = load::run(load, load::bare_get(bare.port, concurrency)).await?;
        report
            .pubsub_rows
            .push(Row::new("bare HTTP", "-", "HTTP", "GET", load, &r, None));
    }
    Ok(())
}

/// Publish latency on a sidecar without an app.
async fn publish_only(
    mecha: &Path,
    report: &mut Report,
    duration: Duration,
    brokers: &mut Brokers,
    kind: &'static str,
) -> anyhow::Result<()> {
    let topic = brokers.topic(kind, "pub");
    let components: [ComponentSpec<'_>; 1] = [(PUBSUB, kind, brokers.metadata(kind, "pub"))];
    let sidecar = Sidecar::start_with(mecha, &components).await?;
    for &concurrency in crate::CONCURRENCIES {
        let load = Load {
            concurrency,
            duration,
        };
        eprintln!("{kind}: publish at concurrency {concurrency} …");
        let call = publish_call(sidecar.http_port, &topic, concurrency);
        let cpu_before = sidecar.cpu_seconds()?;
        let r = load::run(load, call).await?;
        let cpu = sidecar.cpu_seconds()? - cpu_before;
        report.pubsub_rows.push(Row::new(
            "mecha",
            kind,
            "HTTP",
            "publish",
            load,
            &r,
            Some(cpu),
        ));
    }
    Ok(())
}

/// Publish→deliver latency and throughput through one sidecar that publishes and delivers.
async fn deliver(
    mecha: &Path,
    duration: Duration,
    quick: bool,
    brokers: &mut Brokers,
    kind: &'static str,
) -> anyhow::Result<Delivery> {
    let lat_topic = brokers.topic(kind, "lat");
    let thr_topic = brokers.topic(kind, "thr");
    let app = App::start(&[(lat_topic.clone(), 1), (thr_topic.clone(), SUB_CONCURRENCY)]).await?;
    let components: [ComponentSpec<'_>; 1] = [(PUBSUB, kind, brokers.metadata(kind, "e2e"))];
    let sidecar = Sidecar::start_with_app(mecha, &components, app.port).await?;
    let quiet = Duration::from_secs(if quick { 5 } else { 10 });
    let base = format!(
        "http://127.0.0.1:{}/v1.0/publish/{PUBSUB}",
        sidecar.http_port
    );

    // Latency: one message at a time, paced.
    eprintln!("{kind}: publish→deliver latency at {RATE} msg/s …");
    let c = load::http_client(1);
    let url = format!("{base}/{lat_topic}");
    for k in 0..20 {
        publish(&c, url.clone(), stamped(WARM_UP_BASE + k)).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lat_sent = (f64::from(RATE) * duration.as_secs_f64()) as usize;
    app.expect(&lat_topic, lat_sent)?;
    let mut tick = tokio::time::interval(Duration::from_secs(1) / RATE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut errors = 0u64;
    for i in 0..lat_sent as u64 {
        tick.tick().await;
        errors += u64::from(!publish(&c, url.clone(), stamped(i)).await);
    }
    app.wait_for(&lat_topic, lat_sent, quiet).await;
    let lat = app.take(&lat_topic)?;

    // Throughput: N messages from 16 publishers as fast as they go.
    let thr_sent = if quick { 3_000 } else { 20_000 };
    eprintln!("{kind}: publish→deliver throughput, {thr_sent} messages …");
    app.expect(&thr_topic, thr_sent)?;
    let c = load::http_client(PUBLISHERS);
    let url = format!("{base}/{thr_topic}");
    let next = Arc::new(AtomicUsize::new(0));
    let thr_errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..PUBLISHERS {
        let (c, url, next, thr_errors) = (c.clone(), url.clone(), next.clone(), thr_errors.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= thr_sent {
                    break;
                }
                if !publish(&c, url.clone(), stamped(i as u64)).await {
                    thr_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.context("publisher panicked")?;
    }
    let publish_elapsed = start.elapsed();
    app.wait_for(&thr_topic, thr_sent, quiet).await;
    let thr = app.take(&thr_topic)?;
    let deliver_elapsed = thr.last.map_or(Duration::ZERO, |l| l - start);
    let peak_rss_kb = sidecar.peak_rss_kb()?;
    drop(sidecar);
    drop(app);
    Ok(Delivery {
        broker: kind,
        lat_sent,
        lat_received: lat.unique,
        lat_p50_us: lat.latency_us.value_at_quantile(0.50),
        lat_p99_us: lat.latency_us.value_at_quantile(0.99),
        lat_max_us: lat.latency_us.max(),
        thr_sent,
        thr_received: thr.unique,
        publish_rps: thr_sent as f64 / publish_elapsed.as_secs_f64(),
        delivered_rps: thr.unique as f64 / deliver_elapsed.as_secs_f64().max(1e-9),
        thr_p50_us: thr.latency_us.value_at_quantile(0.50),
        thr_p99_us: thr.latency_us.value_at_quantile(0.99),
        duplicates: lat.duplicates + thr.duplicates,
        errors: errors + thr_errors.load(Ordering::Relaxed),
        peak_rss_kb,
    })
}
