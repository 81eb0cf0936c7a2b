//! Turns measurements into `bench/RESULTS.md`, keeping earlier headline figures as history.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::load::{Load, Outcome};

const HISTORY_MARK: &str = "<!-- history rows -->";
/// Columns of the history table.
const HISTORY_COLUMNS: usize = 12;

/// One table row.
pub(crate) struct Row {
    target: String,
    store: String,
    protocol: &'static str,
    op: &'static str,
    concurrency: usize,
    p50_us: u64,
    p99_us: u64,
    rps: f64,
    errors: u64,
    cpu_per_1000: Option<f64>,
}

/// Start-up and memory figures.
pub(crate) struct Footprint {
    idle_rss_kb: u64,
    healthy_median: Duration,
    healthy_max: Duration,
    runs: usize,
    binary_bytes: u64,
}

/// Publish→deliver figures of one broker.
pub(crate) struct Delivery {
    pub(crate) broker: &'static str,
    pub(crate) lat_sent: usize,
    pub(crate) lat_received: usize,
    pub(crate) lat_p50_us: u64,
    pub(crate) lat_p99_us: u64,
    pub(crate) lat_max_us: u64,
    pub(crate) thr_sent: usize,
    pub(crate) thr_received: usize,
    pub(crate) publish_rps: f64,
    pub(crate) delivered_rps: f64,
    pub(crate) thr_p50_us: u64,
    pub(crate) thr_p99_us: u64,
    pub(crate) duplicates: u64,
    pub(crate) errors: u64,
    pub(crate) peak_rss_kb: u64,
}

/// Everything a run measured.
pub(crate) struct Report {
    quick: bool,
    duration: Duration,
    pub(crate) rows: Vec<Row>,
    /// Publish rows (no subscriber), shown in the pub/sub section.
    pub(crate) pubsub_rows: Vec<Row>,
    pub(crate) deliveries: Vec<Delivery>,
    /// Scenarios that failed, shown under the pub/sub headline figures.
    pub(crate) notes: Vec<String>,
    pub(crate) peak_rss_kb: Vec<(String, u64)>,
    pub(crate) footprint: Option<Footprint>,
    /// The service invocation scenarios, when they ran.
    pub(crate) invoke: Option<crate::invoke::Results>,
    /// Plots written next to the report: (title, path relative to the report).
    pub(crate) plots: Vec<(String, String)>,
}

impl Row {
    pub(crate) fn new(
        target: &str,
        store: &str,
        protocol: &'static str,
        op: &'static str,
        load: Load,
        o: &Outcome,
        cpu: Option<f64>,
    ) -> Self {
        let count = o.latency_us.len();
        Self {
            target: target.into(),
            store: store.into(),
            protocol,
            op,
            concurrency: load.concurrency,
            p50_us: o.latency_us.value_at_quantile(0.50),
            p99_us: o.latency_us.value_at_quantile(0.99),
            rps: count as f64 / o.elapsed.as_secs_f64(),
            errors: o.errors,
            cpu_per_1000: cpu.map(|c| c * 1000.0 / count.max(1) as f64),
        }
    }
}

impl Footprint {
    pub(crate) async fn measure(mecha: &Path, runs: usize) -> anyhow::Result<Self> {
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            times.push(crate::procs::time_to_healthy(mecha).await?);
        }
        times.sort();
        let sidecar = crate::procs::Sidecar::start(mecha, "state.sqlite", &[]).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let idle_rss_kb = sidecar.rss_kb()?;
        Ok(Self {
            idle_rss_kb,
            healthy_median: times[times.len() / 2],
            healthy_max: times[times.len() - 1],
            runs,
            binary_bytes: std::fs::metadata(mecha)?.len(),
        })
    }
}

impl Report {
    pub(crate) fn new(quick: bool, duration: Duration) -> Self {
        Self {
            quick,
            duration,
            rows: Vec::new(),
            pubsub_rows: Vec::new(),
            deliveries: Vec::new(),
            notes: Vec::new(),
            peak_rss_kb: Vec::new(),
            footprint: None,
            invoke: None,
            plots: Vec::new(),
        }
    }

    /// An error when a scenario could not run (the report says which); missed targets are not
    /// errors.
    pub(crate) fn check(&self) -> anyhow::Result<()> {
        let failed: Vec<&String> = self
            .notes
            .iter()
            .chain(self.invoke.iter().flat_map(|i| &i.notes))
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            for f in &failed {
                eprintln!("Scenario failure: {f}");
            }
            anyhow::bail!("{} scenario(s) could not run", failed.len())
        }
    }

    fn find(&self, target: &str, store: &str, protocol: &str, op: &str, c: usize) -> Option<&Row> {
        self.rows.iter().chain(&self.pubsub_rows).find(|r| {
            r.target == target
                && r.store == store
                && r.protocol == protocol
                && r.op == op
                && r.concurrency == c
        })
    }

    /// Writes the pub/sub section; returns the publish added p50 on in-memory, when measured.
    fn write_pubsub(&self, s: &mut String) -> anyhow::Result<Option<i64>> {
        use crate::pubsub::{PUBLISHERS, RATE, SUB_CONCURRENCY};
        if self.pubsub_rows.is_empty() && self.deliveries.is_empty() && self.notes.is_empty() {
            return Ok(None);
        }
        writeln!(s, "\n## Pub/sub\n")?;
        writeln!(
            s,
            "Publish rows: closed loop of `POST /v1.0/publish/pubsub/{{topic}}` with `{{\"n\":1}}` \
             (`application/json`) on a sidecar started without `--app-port`, so the topic has no \
             subscriber (`pubsub.sqlite` drops a message for a topic no consumer group ever subscribed \
             to, so its row stores nothing); the bare HTTP rows are measured again right before \
             them, as their baseline. \
             Publish→deliver: \
             **one sidecar per broker both publishes and delivers**, to a subscriber app served by \
             the bench process (hyper, HTTP/1.1) that answers `GET /dapr/subscribe` and \
             acknowledges each CloudEvent with 200. Latency: {RATE} msg/s paced, one publish at a \
             time, for {:?} after 20 warm-up messages, subscription `concurrency` 1 (ordered); \
             receive − send on one monotonic clock. Throughput: N messages from {PUBLISHERS} \
             concurrent publishers to a subscription with `concurrency` {SUB_CONCURRENCY}; \
             delivered msg/s = distinct messages received / (last arrival − first publish), \
             publish req/s = N / time to publish them all. Topics, SQLite files and JetStream \
             streams are new for every run; Redis and JetStream streams are deleted afterwards.\n",
            self.duration
        )?;
        writeln!(s, "### Publish latency and throughput (no subscriber)\n")?;
        writeln!(
            s,
            "| target | broker | protocol | op | concurrency | p50 µs | p99 µs | req/s | errors | CPU s / 1000 req |"
        )?;
        writeln!(s, "|---|---|---|---|---:|---:|---:|---:|---:|---:|")?;
        for r in &self.pubsub_rows {
            write_row(s, r)?;
        }
        writeln!(
            s,
            "\n### Publish→deliver (one sidecar publishes and delivers)\n"
        )?;
        writeln!(
            s,
            "| broker | latency p50 µs | p99 µs | max µs | received | throughput: published | publish req/s | delivered msg/s | p50 ms under load | p99 ms under load | received | duplicates | publish errors | peak RSS MB |"
        )?;
        writeln!(
            s,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        )?;
        for d in &self.deliveries {
            writeln!(
                s,
                "| {} | {} | {} | {} | {}/{} | {} | {:.0} | {:.0} | {:.1} | {:.1} | {}/{} | {} | {} | {:.1} |",
                d.broker,
                d.lat_p50_us,
                d.lat_p99_us,
                d.lat_max_us,
                d.lat_received,
                d.lat_sent,
                d.thr_sent,
                d.publish_rps,
                d.delivered_rps,
                d.thr_p50_us as f64 / 1e3,
                d.thr_p99_us as f64 / 1e3,
                d.thr_received,
                d.thr_sent,
                d.duplicates,
                d.errors,
                d.peak_rss_kb as f64 / 1024.0,
            )?;
        }

        writeln!(s, "\n### Pub/sub headline figures\n")?;
        let bare = self
            .pubsub_rows
            .iter()
            .find(|r| r.target == "bare HTTP" && r.concurrency == 1);
        let added = match (
            self.find("mecha", "pubsub.in-memory", "HTTP", "publish", 1),
            bare,
        ) {
            (Some(m), Some(b)) => Some((
                m.p50_us as i64 - b.p50_us as i64,
                m.p99_us as i64 - b.p99_us as i64,
            )),
            _ => None,
        };
        if let Some((p50, p99)) = added {
            writeln!(
                s,
                "- Publish added latency on `pubsub.in-memory` over a bare HTTP round trip, concurrency 1: **{p50} µs p50**, {p99} µs p99 (target ≤ 60 µs p50)."
            )?;
        }
        for broker in crate::pubsub::BROKERS {
            if let (Some(r1), Some(r16)) = (
                self.find("mecha", broker, "HTTP", "publish", 1),
                self.find("mecha", broker, "HTTP", "publish", 16),
            ) {
                writeln!(
                    s,
                    "- Publish on `{broker}` (no subscriber): {} µs p50 / {} µs p99 at concurrency 1; {:.0} req/s at concurrency 16.",
                    r1.p50_us, r1.p99_us, r16.rps
                )?;
            }
        }
        for d in &self.deliveries {
            let complete = |got: usize, sent: usize| {
                if got == sent {
                    format!("all {sent} received")
                } else {
                    format!("**only {got} of {sent} received**")
                }
            };
            writeln!(
                s,
                "- Publish→deliver on `{}`: **{} µs p50**, {} µs p99 at {RATE} msg/s ({}); **{:.0} delivered msg/s** with {PUBLISHERS} publishers (publish {:.0} req/s; {}).",
                d.broker,
                d.lat_p50_us,
                d.lat_p99_us,
                complete(d.lat_received, d.lat_sent),
                d.delivered_rps,
                d.publish_rps,
                complete(d.thr_received, d.thr_sent),
            )?;
        }
        for n in &self.notes {
            writeln!(s, "- {n}")?;
        }
        Ok(added.map(|a| a.0))
    }

    pub(crate) fn write(&self, out: &Path) -> anyhow::Result<()> {
        let previous = std::fs::read_to_string(out).unwrap_or_default();
        let old_history: Vec<&str> = previous
            .split_once(HISTORY_MARK)
            .map(|(_, rest)| rest.lines().filter(|l| l.starts_with("| 20")).collect())
            .unwrap_or_default();
        let date = command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines()
                    .find(|l| l.starts_with("model name"))
                    .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0);

        let mut s = String::new();
        writeln!(s, "# Mecha benchmark results\n")?;
        writeln!(
            s,
            "Produced by `bench/run.sh{}` on {date}; machine: {cores} cores, {cpu}.",
            if self.quick { " --quick" } else { "" }
        )?;
        writeln!(
            s,
            "Load generator, sidecar and baseline server share those cores, so absolute figures are"
        )?;
        writeln!(
            s,
            "pessimistic; compare rows of the same run. Each scenario runs {:?} after a 300 ms warm-up,",
            self.duration
        )?;
        writeln!(
            s,
            "as a closed loop at the given concurrency (HTTP/1.1 keep-alive pool; gRPC over one HTTP/2"
        )?;
        writeln!(
            s,
            "connection, as the SDKs do). Values are `{{\"n\":1}}`.\n"
        )?;

        writeln!(s, "## State API latency and throughput\n")?;
        writeln!(
            s,
            "| target | store | protocol | op | concurrency | p50 µs | p99 µs | req/s | errors | CPU s / 1000 req |"
        )?;
        writeln!(s, "|---|---|---|---|---:|---:|---:|---:|---:|---:|")?;
        for r in &self.rows {
            write_row(&mut s, r)?;
        }

        let added = match (
            self.find("mecha", "state.in-memory", "HTTP", "GET", 1),
            self.find("bare HTTP", "-", "HTTP", "GET", 1),
        ) {
            (Some(m), Some(b)) => Some((
                m.p50_us as i64 - b.p50_us as i64,
                m.p99_us as i64 - b.p99_us as i64,
            )),
            _ => None,
        };
        writeln!(s, "\n## Headline figures\n")?;
        if let Some((p50, p99)) = added {
            writeln!(
                s,
                "- Added latency of a state GET on `state.in-memory` over a bare HTTP round trip, concurrency 1: **{p50} µs p50**, {p99} µs p99 (target ≤ 40 µs p50)."
            )?;
        }
        for (store, direct) in [
            ("state.redis", "direct redis"),
            ("state.postgresql", "direct sqlx"),
            ("bindings.redis", "direct redis"),
            ("bindings.postgresql", "direct sqlx"),
        ] {
            for op in ["GET", "SAVE", "get", "query"] {
                for protocol in ["HTTP", "gRPC"] {
                    let (Some(m1), Some(d1), Some(m16), Some(d16)) = (
                        self.find("mecha", store, protocol, op, 1),
                        self.find(direct, store, "native", op, 1),
                        self.find("mecha", store, protocol, op, 16),
                        self.find(direct, store, "native", op, 16),
                    ) else {
                        continue;
                    };
                    writeln!(
                        s,
                        "- `{store}` {op} over {protocol} vs the same operation with the store's client ({direct}): added **{} µs p50**, {} µs p99 at concurrency 1 (state target ≤ 60 µs p50); throughput at concurrency 16 is {:.0}% of direct.",
                        m1.p50_us as i64 - d1.p50_us as i64,
                        m1.p99_us as i64 - d1.p99_us as i64,
                        100.0 * m16.rps / d16.rps.max(1.0),
                    )?;
                }
            }
        }
        for (store, kb) in &self.peak_rss_kb {
            writeln!(
                s,
                "- Peak RSS after all load on `{store}`: {:.1} MB.",
                *kb as f64 / 1024.0
            )?;
        }
        if let Some(f) = &self.footprint {
            writeln!(
                s,
                "- Idle RSS with a SQLite store, 1 s after healthy: **{:.1} MB** (target ≤ 10 MB).",
                f.idle_rss_kb as f64 / 1024.0
            )?;
            writeln!(
                s,
                "- Process start to first 204 from `/v1.0/healthz/outbound` with a SQLite store: **median {:.1} ms**, max {:.1} ms over {} runs (target ≤ 50 ms).",
                f.healthy_median.as_secs_f64() * 1e3,
                f.healthy_max.as_secs_f64() * 1e3,
                f.runs
            )?;
            writeln!(
                s,
                "- Release binary size: {:.1} MB.",
                f.binary_bytes as f64 / 1_048_576.0
            )?;
        }

        let publish_added = self.write_pubsub(&mut s)?;
        if let Some(inv) = &self.invoke {
            self.write_invoke(&mut s, inv)?;
        }

        writeln!(s, "\n## History\n")?;
        writeln!(
            s,
            "| date | mode | added GET p50 µs | in-memory HTTP GET c=16 req/s | sqlite HTTP SAVE c=16 req/s | idle RSS MB | healthy ms | publish added p50 µs | in-memory delivered msg/s | invoke added p50 µs | invoke added p99 µs | Mecha/HAProxy added p50 |"
        )?;
        writeln!(
            s,
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        )?;
        writeln!(s, "{HISTORY_MARK}")?;
        for line in old_history {
            // Rows written before a column existed get `-` in it.
            let mut line = line.trim_end().to_owned();
            while line.matches('|').count() < HISTORY_COLUMNS + 1 {
                line.push_str(" - |");
            }
            writeln!(s, "{line}")?;
        }
        let rps = |store: &str, op: &str| {
            self.find("mecha", store, "HTTP", op, 16)
                .map_or("-".to_owned(), |r| format!("{:.0}", r.rps))
        };
        let f = self.footprint.as_ref();
        let delivered = self
            .deliveries
            .iter()
            .find(|d| d.broker == "pubsub.in-memory")
            .map_or("-".to_owned(), |d| format!("{:.0}", d.delivered_rps));
        let inv = self.invoke.as_ref();
        let inv_added = |p: &str| {
            inv.and_then(|i| i.added(false, crate::invoke::MECHA, p))
                .map_or("-".to_owned(), |a| format!("{a:.0}"))
        };
        let inv_ratio = inv
            .and_then(|i| {
                ratio(
                    i.added(false, crate::invoke::MECHA, "p50")?,
                    i.added(false, crate::invoke::HAPROXY, "p50")?,
                )
            })
            .map_or("-".to_owned(), |r| format!("{r:.2}"));
        writeln!(
            s,
            "| {date} | {} | {} | {} | {} | {} | {} | {} | {delivered} | {} | {} | {inv_ratio} |",
            if self.quick { "quick" } else { "full" },
            added.map_or("-".into(), |a| a.0.to_string()),
            rps("state.in-memory", "GET"),
            rps("state.sqlite", "SAVE"),
            f.map_or("-".into(), |f| format!(
                "{:.1}",
                f.idle_rss_kb as f64 / 1024.0
            )),
            f.map_or("-".into(), |f| format!(
                "{:.1}",
                f.healthy_median.as_secs_f64() * 1e3
            )),
            publish_added.map_or("-".into(), |a| a.to_string()),
            inv_added("p50"),
            inv_added("p99"),
        )?;
        std::fs::write(out, s)?;
        Ok(())
    }
}

/// `mecha / haproxy`, when HAProxy's figure is positive.
fn ratio(mecha: f64, haproxy: f64) -> Option<f64> {
    (haproxy > 0.0).then(|| mecha / haproxy)
}

fn mb(kb: u64) -> String {
    format!("{:.1}", kb as f64 / 1024.0)
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

impl Report {
    /// The service invocation section: tables, plots and the figures against their targets.
    fn write_invoke(&self, s: &mut String, inv: &crate::invoke::Results) -> anyhow::Result<()> {
        use crate::invoke::{BASELINE, BODY, CONNECTIONS, HAPROXY, MECHA, MECHA_MTLS, RATE};
        writeln!(s, "\n## Service invocation\n")?;
        writeln!(
            s,
            "The same {BODY}-byte POST (HTTP) or {BODY}-byte echo message (gRPC) to the same app, \
             measured in one run on these paths: **baseline** (client → app), **{HAPROXY}** (client \
             → HAProxy → HAProxy → app: two HAProxy processes, `mode http`, keep-alive on both sides, \
             `http-reuse always`, `nbthread 2` each), **{MECHA}** (client → caller sidecar \
             `/v1.0/invoke/bench-b/method/echo` → callee sidecar → app; the sidecars find each \
             other through SQLite name resolution and talk pooled HTTP/1.1 for HTTP calls, HTTP/2 \
             for gRPC) and, for HTTP, **{MECHA_MTLS}** (the same with mTLS between the sidecars: \
             certificates from `mecha sentry`, TLS 1.3). The HTTP app is a hyper \
             HTTP/1.1 server in a child process answering {BODY} bytes; HTTP load is `oha` with \
             {CONNECTIONS} connections: **{RATE} req/s constant rate** with `--latency-correction` \
             for {:?} per target (latency from each request's scheduled time), then a **closed \
             loop** for saturation ({:?} per target). gRPC: a tonic echo service in a child process, load from this harness on \
             one HTTP/2 connection ({CONNECTIONS} workers): paced at {RATE} req/s (latency from the \
             send time, or from the scheduled time when a worker fell behind) and a closed loop; HAProxy forwards it in h2c mode, the sidecars by \
             `dapr-app-id` proxying. After a warm-up at the same rate, each phase runs in {} \
             interleaved rounds (every target once per round, in turn); the figures are the \
             median over rounds of each percentile and of req/s. \"Added\" = target − baseline at the same percentile. CPU \
             is user+system time of each proxy process (`/proc/<pid>/stat`) over the phase, per \
             1000 successful requests; RSS is sampled half-way through each phase. Tools: {}.\n",
            inv.duration, inv.sat_duration, inv.rounds, inv.tools
        )?;
        for (grpc, title) in [(false, "HTTP"), (true, "gRPC")] {
            let list = if grpc { &inv.grpc } else { &inv.http };
            if list.is_empty() {
                continue;
            }
            writeln!(s, "### {title}: latency at {RATE} req/s and saturation\n")?;
            writeln!(
                s,
                "| target | p50 µs | p90 µs | p99 µs | p99.9 µs | added p50 | added p90 | added p99 | added p99.9 | req/s achieved | errors | closed-loop req/s | closed-loop p50 µs | closed-loop p99 µs | closed-loop errors |"
            )?;
            writeln!(
                s,
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
            )?;
            let ps = ["p50", "p90", "p99", "p99.9"];
            for t in list {
                let mut line = format!("| {} |", t.name);
                for p in ps {
                    line.push_str(&format!(" {:.0} |", t.rate.pct(p).unwrap_or(f64::NAN)));
                }
                for p in ps {
                    let a = if t.name == BASELINE {
                        "-".to_owned()
                    } else {
                        inv.added(grpc, t.name, p)
                            .map_or("-".to_owned(), |a| format!("{a:.0}"))
                    };
                    line.push_str(&format!(" {a} |"));
                }
                line.push_str(&format!(
                    " {:.0} | {} | {:.0} | {:.0} | {:.0} | {} |",
                    t.rate.rps,
                    t.rate.errors,
                    t.sat.rps,
                    t.sat.pct("p50").unwrap_or(f64::NAN),
                    t.sat.pct("p99").unwrap_or(f64::NAN),
                    t.sat.errors
                ));
                writeln!(s, "{line}")?;
            }
            if inv.target(grpc, HAPROXY).is_some() {
                let mut line = format!("| {MECHA} added ÷ {HAPROXY} added | | | | |");
                for p in ps {
                    let r = inv
                        .added(grpc, MECHA, p)
                        .zip(inv.added(grpc, HAPROXY, p))
                        .and_then(|(m, h)| ratio(m, h));
                    line.push_str(&format!(
                        " {} |",
                        r.map_or("-".to_owned(), |r| format!("{r:.2}"))
                    ));
                }
                let sat = inv
                    .target(grpc, MECHA)
                    .zip(inv.target(grpc, HAPROXY))
                    .and_then(|(m, h)| ratio(m.sat.rps, h.sat.rps));
                line.push_str(&format!(
                    " | | {} | | | |",
                    sat.map_or("-".to_owned(), |r| format!("{r:.2}"))
                ));
                writeln!(s, "{line}")?;
            }
            writeln!(s, "\n#### {title}: proxy processes\n")?;
            writeln!(
                s,
                "| target | process | idle RSS MB | RSS at {RATE} req/s MB | RSS closed loop MB | peak RSS MB | CPU s / 1000 req at {RATE} req/s | CPU s / 1000 req closed loop |"
            )?;
            writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|")?;
            for t in list {
                for (i, p) in t.processes.iter().enumerate() {
                    let get = |v: &[u64]| v.get(i).map_or("-".to_owned(), |k| mb(*k));
                    let c = |m: &crate::invoke::Measure| {
                        m.cpu_per_1000(i)
                            .map_or("-".to_owned(), |c| format!("{c:.3}"))
                    };
                    writeln!(
                        s,
                        "| {} | {p} | {} | {} | {} | {} | {} | {} |",
                        t.name,
                        get(&t.idle_rss_kb),
                        get(&t.rate.rss_kb),
                        get(&t.sat.rss_kb),
                        get(&t.peak_rss_kb),
                        c(&t.rate),
                        c(&t.sat),
                    )?;
                }
            }
            writeln!(s)?;
        }
        if !self.plots.is_empty() {
            writeln!(s, "### Plots\n")?;
            for (title, path) in &self.plots {
                writeln!(s, "- [{title}]({path})")?;
            }
            for (title, path) in &self.plots {
                writeln!(s, "\n![{title}]({path})")?;
            }
            writeln!(s)?;
        }

        writeln!(s, "### Invocation headline figures against targets\n")?;
        for (grpc, title) in [(false, "HTTP"), (true, "gRPC")] {
            let (Some(p50), Some(p99)) =
                (inv.added(grpc, MECHA, "p50"), inv.added(grpc, MECHA, "p99"))
            else {
                continue;
            };
            let h50 = inv.added(grpc, HAPROXY, "p50");
            let h99 = inv.added(grpc, HAPROXY, "p99");
            let vs = match (h50, h99) {
                (Some(h50), Some(h99)) => format!(
                    "; {HAPROXY} adds {h50:.0} µs p50 / {h99:.0} µs p99, so Mecha adds {} / {} of that (target ≤ 1.00: {} / {})",
                    ratio(p50, h50).map_or("-".to_owned(), |r| format!("{r:.2}×")),
                    ratio(p99, h99).map_or("-".to_owned(), |r| format!("{r:.2}×")),
                    met(p50 <= h50.max(0.0)),
                    met(p99 <= h99.max(0.0)),
                ),
                _ => String::new(),
            };
            writeln!(
                s,
                "- {title} invocation through two sidecars at {RATE} req/s adds **{p50:.0} µs p50** (target ≤ 150 µs: {}) and **{p99:.0} µs p99** (target ≤ 400 µs: {}){vs}.",
                met(p50 <= 150.0),
                met(p99 <= 400.0),
            )?;
            if let (Some(m), Some(h)) = (inv.target(grpc, MECHA), inv.target(grpc, HAPROXY)) {
                writeln!(
                    s,
                    "- {title} saturation ({CONNECTIONS} connections, closed loop): Mecha **{:.0} req/s**, {HAPROXY} {:.0} req/s, baseline {:.0} req/s (target Mecha ≥ {HAPROXY}: {}).",
                    m.sat.rps,
                    h.sat.rps,
                    inv.target(grpc, BASELINE).map_or(0.0, |b| b.sat.rps),
                    met(m.sat.rps >= h.sat.rps),
                )?;
            }
            if let Some(m) = inv.target(grpc, MECHA) {
                let per: Vec<String> = (0..m.processes.len())
                    .map(|i| {
                        format!(
                            "{} {:.3}",
                            m.processes[i],
                            m.rate.cpu_per_1000(i).unwrap_or(f64::NAN)
                        )
                    })
                    .collect();
                let worst = (0..m.processes.len())
                    .filter_map(|i| m.rate.cpu_per_1000(i))
                    .fold(0.0, f64::max);
                let h = inv.target(grpc, HAPROXY).map_or(String::new(), |h| {
                    let per: Vec<String> = (0..h.processes.len())
                        .map(|i| format!("{:.3}", h.rate.cpu_per_1000(i).unwrap_or(f64::NAN)))
                        .collect();
                    format!(" (HAProxy: {})", per.join(", "))
                });
                writeln!(
                    s,
                    "- {title} CPU per sidecar at {RATE} req/s: {} CPU-s per 1000 requests{h} (target ≤ 0.05: {}).",
                    per.join(", "),
                    met(worst <= 0.05),
                )?;
                let under = m
                    .rate
                    .rss_kb
                    .iter()
                    .chain(&m.sat.rss_kb)
                    .chain(&m.peak_rss_kb)
                    .copied()
                    .max()
                    .unwrap_or(0);
                let idle = m.idle_rss_kb.iter().copied().max().unwrap_or(0);
                writeln!(
                    s,
                    "- {title} sidecar RSS: at most **{} MB under load** (peak over both phases, target ≤ 20 MB: {}); {} MB idle before the load (target ≤ 10 MB: {}).",
                    mb(under),
                    met(under <= 20 * 1024),
                    mb(idle),
                    met(idle <= 10 * 1024),
                )?;
            }
        }
        if let (Some(tls), Some(plain)) = (
            inv.added(false, crate::invoke::MECHA_MTLS, "p50"),
            inv.added(false, MECHA, "p50"),
        ) {
            let cpu = inv
                .target(false, crate::invoke::MECHA_MTLS)
                .map(|t| {
                    (0..t.processes.len())
                        .map(|i| format!("{:.3}", t.rate.cpu_per_1000(i).unwrap_or(f64::NAN)))
                        .collect::<Vec<_>>()
                        .join(" / ")
                })
                .unwrap_or_default();
            writeln!(
                s,
                "- HTTP invocation with mTLS between the sidecars adds **{tls:.0} µs p50** ({:+.0} µs over plaintext), {cpu} CPU-s per 1000 requests (caller / callee), at {RATE} req/s.",
                tls - plain,
            )?;
        }
        if let Some(f) = &self.footprint {
            writeln!(
                s,
                "- Idle RSS of a sidecar with a SQLite store: {} MB (target ≤ 10 MB: {}); start to healthy: median {:.1} ms (target ≤ 50 ms: {}).",
                mb(f.idle_rss_kb),
                met(f.idle_rss_kb <= 10 * 1024),
                f.healthy_median.as_secs_f64() * 1e3,
                met(f.healthy_median <= Duration::from_millis(50)),
            )?;
        }
        for n in &inv.notes {
            writeln!(s, "- {n}")?;
        }
        Ok(())
    }
}

fn write_row(s: &mut String, r: &Row) -> std::fmt::Result {
    let cpu = r.cpu_per_1000.map_or("-".to_owned(), |c| format!("{c:.3}"));
    writeln!(
        s,
        "| {} | {} | {} | {} | {} | {} | {} | {:.0} | {} | {cpu} |",
        r.target, r.store, r.protocol, r.op, r.concurrency, r.p50_us, r.p99_us, r.rps, r.errors
    )
}

fn command_line(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
