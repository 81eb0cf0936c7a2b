//! Turns measurements into `bench/RESULTS.md`, keeping earlier headline figures as history.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::load::{Load, Outcome};

const HISTORY_MARK: &str = "<!-- history rows -->";
/// Columns of the history table.
const HISTORY_COLUMNS: usize = 9;

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

        writeln!(s, "\n## History\n")?;
        writeln!(
            s,
            "| date | mode | added GET p50 µs | in-memory HTTP GET c=16 req/s | sqlite HTTP SAVE c=16 req/s | idle RSS MB | healthy ms | publish added p50 µs | in-memory delivered msg/s |"
        )?;
        writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|")?;
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
        writeln!(
            s,
            "| {date} | {} | {} | {} | {} | {} | {} | {} | {delivered} |",
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
        )?;
        std::fs::write(out, s)?;
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
