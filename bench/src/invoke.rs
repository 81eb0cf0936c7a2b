//! Service invocation scenarios: the same 1 KB request to the same target app, measured side
//! by side in one run on three paths:
//!
//! * **baseline**: the client calls the app directly;
//! * **HAProxy ×2**: two chained HAProxy processes (`mode http`, keep-alive both sides,
//!   `nbthread 2` each, as many threads as the sidecar's runtime has workers on two cores),
//!   client → HAProxy 1 → HAProxy 2 → app — the same number of proxy hops as two sidecars;
//! * **Mecha ×2**: client → caller sidecar (`/v1.0/invoke/<app>/method/echo`) → callee sidecar
//!   (HTTP/2 between them, found through SQLite name resolution) → app.
//!
//! HTTP load comes from `oha` (16 connections): a constant 1000 req/s with latency correction
//! for the percentiles, then a closed loop for saturation. gRPC uses this crate's own load code
//! against a tiny echo service ([`crate::grpc_echo`]): paced at 1000 req/s and a closed loop of
//! 16 workers, on one HTTP/2 connection, directly, through two HAProxy processes in h2c mode,
//! and through two sidecars with `dapr-app-id` metadata (transparent gRPC proxying). Each
//! phase runs the three targets one after the other, so drift on a shared machine hits all of
//! them. The proxies' CPU time (`/proc/<pid>/stat`) and resident memory are read around and
//! during each load.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;

use futures::future::BoxFuture;

use crate::load::{self, Load, Outcome};
use crate::procs::{self, Helper, Sidecar, free_port};

/// Requests per second of the constant-rate phase.
pub(crate) const RATE: u32 = 1000;
/// Connections (HTTP) or workers (gRPC) of every phase.
pub(crate) const CONNECTIONS: usize = 16;
/// Request and response body size.
pub(crate) const BODY: usize = 1024;
/// The percentiles reported, with oha's names.
pub(crate) const QUANTILES: [(&str, f64); 9] = [
    ("p10", 0.10),
    ("p25", 0.25),
    ("p50", 0.50),
    ("p75", 0.75),
    ("p90", 0.90),
    ("p95", 0.95),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("p99.99", 0.9999),
];

/// Target names, in report order.
pub(crate) const BASELINE: &str = "baseline";
pub(crate) const HAPROXY: &str = "HAProxy ×2";
pub(crate) const MECHA: &str = "Mecha ×2";
/// The same two sidecars' path with mTLS between them (HTTP only).
pub(crate) const MECHA_MTLS: &str = "Mecha ×2 mTLS";

/// One load phase on one target.
#[derive(Clone, Default)]
pub(crate) struct Measure {
    /// Successful (2xx / OK) requests.
    pub(crate) ok: u64,
    pub(crate) errors: u64,
    /// Successful requests per second.
    pub(crate) rps: f64,
    /// Latency in µs at each of [`QUANTILES`].
    pub(crate) pct_us: Vec<f64>,
    /// CPU seconds each proxy process used during the phase.
    pub(crate) cpu_s: Vec<f64>,
    /// Resident memory of each proxy process in the middle of the phase, kB.
    pub(crate) rss_kb: Vec<u64>,
}

/// One target: both phases and its processes' memory.
pub(crate) struct Target {
    pub(crate) name: &'static str,
    /// What each process of `cpu_s` / `rss_kb` is.
    pub(crate) processes: Vec<&'static str>,
    pub(crate) rate: Measure,
    pub(crate) sat: Measure,
    pub(crate) idle_rss_kb: Vec<u64>,
    pub(crate) peak_rss_kb: Vec<u64>,
}

/// Everything the invocation scenarios measured.
pub(crate) struct Results {
    /// Length of the constant-rate phase.
    pub(crate) duration: Duration,
    /// Length of the closed-loop phase.
    pub(crate) sat_duration: Duration,
    /// Interleaved rounds each phase is split into.
    pub(crate) rounds: u32,
    pub(crate) http: Vec<Target>,
    pub(crate) grpc: Vec<Target>,
    pub(crate) notes: Vec<String>,
    pub(crate) tools: String,
}

impl Measure {
    /// Latency at percentile `name` (e.g. `p99`), µs.
    pub(crate) fn pct(&self, name: &str) -> Option<f64> {
        QUANTILES
            .iter()
            .position(|(n, _)| *n == name)
            .and_then(|i| self.pct_us.get(i).copied())
    }

    /// CPU seconds per 1000 successful requests of process `i`.
    pub(crate) fn cpu_per_1000(&self, i: usize) -> Option<f64> {
        self.cpu_s
            .get(i)
            .map(|c| c * 1000.0 / self.ok.max(1) as f64)
    }

    fn from_outcome(o: &Outcome) -> Self {
        let ok = o.latency_us.len().saturating_sub(o.errors);
        Self {
            ok,
            errors: o.errors,
            rps: ok as f64 / o.elapsed.as_secs_f64().max(1e-9),
            pct_us: QUANTILES
                .iter()
                .map(|(_, q)| o.latency_us.value_at_quantile(*q) as f64)
                .collect(),
            cpu_s: Vec::new(),
            rss_kb: Vec::new(),
        }
    }
}

impl Results {
    /// The target named `name` of the HTTP (`grpc == false`) or gRPC scenarios.
    pub(crate) fn target(&self, grpc: bool, name: &str) -> Option<&Target> {
        let list = if grpc { &self.grpc } else { &self.http };
        list.iter().find(|t| t.name == name)
    }

    /// `target − baseline` at percentile `p` of the constant-rate phase, µs.
    pub(crate) fn added(&self, grpc: bool, name: &str, p: &str) -> Option<f64> {
        let t = self.target(grpc, name)?.rate.pct(p)?;
        let b = self.target(grpc, BASELINE)?.rate.pct(p)?;
        Some(t - b)
    }
}

/// Finds a program: `$env`, then `PATH`, then the given fallbacks.
fn find_program(env: &str, name: &str, fallbacks: &[PathBuf]) -> Option<PathBuf> {
    if let Ok(p) = std::env::var(env) {
        return Some(PathBuf::from(p));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    fallbacks.iter().find(|p| p.is_file()).cloned()
}

fn version(program: &Path, arg: &str) -> String {
    Command::new(program)
        .arg(arg)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

/// Runs every invocation scenario. A part that cannot run (a tool missing, a process that does
/// not start) is recorded in `notes` and the rest goes on.
pub(crate) async fn run(mecha: &Path, quick: bool) -> Results {
    let duration = Duration::from_secs(if quick { 2 } else { 10 });
    let mut results = Results {
        duration,
        sat_duration: if quick {
            Duration::from_secs(1)
        } else {
            duration
        },
        rounds: if quick { 1 } else { 5 },
        http: Vec::new(),
        grpc: Vec::new(),
        notes: Vec::new(),
        tools: String::new(),
    };
    let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_default());
    let oha = find_program("MECHA_BENCH_OHA", "oha", &[home.join(".cargo/bin/oha")]);
    let haproxy = find_program(
        "MECHA_BENCH_HAPROXY",
        "haproxy",
        &[PathBuf::from("/usr/sbin/haproxy")],
    );
    let mut tools = Vec::new();
    if let Some(o) = &oha {
        tools.push(version(o, "--version"));
    }
    if let Some(h) = &haproxy {
        tools.push(version(h, "-v"));
    }
    results.tools = tools.join("; ");
    if haproxy.is_none() {
        results.notes.push(
            "HAProxy is not installed (set `MECHA_BENCH_HAPROXY` or install `haproxy`): its rows are missing."
                .into(),
        );
    }
    match &oha {
        Some(oha) => {
            if let Err(e) = http(mecha, oha, haproxy.as_deref(), quick, &mut results).await {
                eprintln!("invocation over HTTP failed: {e:#}");
                results
                    .notes
                    .push(format!("invocation over HTTP failed: {e:#}"));
            }
        }
        None => results.notes.push(
            "`oha` is not installed (`cargo install oha --locked`, or set `MECHA_BENCH_OHA`): HTTP invocation was not measured."
                .into(),
        ),
    }
    if let Err(e) = grpc(mecha, haproxy.as_deref(), quick, &mut results).await {
        eprintln!("invocation over gRPC failed: {e:#}");
        results
            .notes
            .push(format!("invocation over gRPC failed: {e:#}"));
    }
    results
}

/// Writes a Configuration whose name resolution is a SQLite file in `dir`.
fn mesh_config(dir: &Path) -> anyhow::Result<PathBuf> {
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: bench\nspec:\n  nameResolution:\n    component: sqlite\n    configuration:\n      connectionString: \"{}\"\n",
            dir.join("names.db").display()
        ),
    )?;
    Ok(config)
}

/// Starts two chained HAProxy processes in `dir`: the returned pair's first listens on the
/// port clients use and forwards to the second, which forwards to `app_port`. `h2` makes both
/// hops HTTP/2 cleartext (for gRPC).
async fn start_haproxy(
    haproxy: &Path,
    dir: &Path,
    app_port: u16,
    h2: bool,
) -> anyhow::Result<(Helper, Helper)> {
    let (front, back) = (free_port()?, free_port()?);
    let proto = if h2 { " proto h2" } else { "" };
    let write = |name: &str, listen: u16, to: u16| -> anyhow::Result<PathBuf> {
        let cfg = dir.join(format!("{name}.cfg"));
        std::fs::write(
            &cfg,
            format!(
                "global\n  nbthread 2\n  maxconn 4096\n\ndefaults\n  mode http\n  option http-keep-alive\n  http-reuse always\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\nfrontend in\n  bind 127.0.0.1:{listen}{proto}\n  default_backend out\n\nbackend out\n  server next 127.0.0.1:{to}{proto}\n"
            ),
        )?;
        Ok(cfg)
    };
    let spawn = |cfg: PathBuf, port: u16| -> anyhow::Result<std::process::Child> {
        Command::new(haproxy)
            .arg("-db")
            .arg("-f")
            .arg(cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {} for port {port}", haproxy.display()))
    };
    let second_cfg = write("second", back, app_port)?;
    let first_cfg = write("first", front, back)?;
    let second = Helper::adopt(spawn(second_cfg, back)?, back, "haproxy").await?;
    let first = Helper::adopt(spawn(first_cfg, front)?, front, "haproxy").await?;
    Ok((first, second))
}

/// One POST of `body` to `url`; true on 2xx.
async fn probe(url: &str, body: &Bytes) -> bool {
    let c = load::http_client(1);
    let Ok(req) = http::Request::post(url)
        .header("content-type", "application/octet-stream")
        .body(http_body_util::Full::new(body.clone()))
    else {
        return false;
    };
    load::send(&c, req).await
}

async fn until(what: &str, mut ok: impl AsyncFnMut() -> bool) -> anyhow::Result<()> {
    let start = std::time::Instant::now();
    while !ok().await {
        if start.elapsed() > Duration::from_secs(15) {
            bail!("{what} did not succeed within 15 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn idle_rss(pids: &[u32]) -> Vec<u64> {
    pids.iter()
        .map(|&p| procs::rss_kb(p).unwrap_or(0))
        .collect()
}

fn cpu(pids: &[u32]) -> Vec<f64> {
    pids.iter()
        .map(|&p| procs::cpu_seconds(p).unwrap_or(0.0))
        .collect()
}

/// Runs `load` while sampling the processes' RSS half-way and their CPU time around it.
async fn measured<F>(pids: &[u32], half: Duration, load: F) -> anyhow::Result<Measure>
where
    F: Future<Output = anyhow::Result<Measure>>,
{
    let before = cpu(pids);
    let sample = async {
        tokio::time::sleep(half).await;
        idle_rss(pids)
    };
    let (m, rss) = tokio::join!(load, sample);
    let mut m = m?;
    m.cpu_s = cpu(pids).iter().zip(&before).map(|(a, b)| a - b).collect();
    m.rss_kb = rss;
    Ok(m)
}

/// One `oha` run against `url`; with `rate`, a constant rate with latency correction.
async fn oha(
    oha: &Path,
    url: &str,
    body: &Path,
    duration: Duration,
    rate: Option<u32>,
) -> anyhow::Result<Measure> {
    let secs = duration.as_secs_f64();
    let mut cmd = tokio::process::Command::new(oha);
    cmd.args(["--no-tui", "--output-format", "json", "-m", "POST"])
        .args(["-c", &CONNECTIONS.to_string(), "-z"])
        .arg(format!("{}ms", duration.as_millis()))
        .args(["-T", "application/octet-stream", "-D"])
        .arg(body)
        .stdin(Stdio::null());
    if let Some(r) = rate {
        cmd.args(["-q", &r.to_string(), "--latency-correction"]);
    }
    cmd.arg(url);
    let out = cmd
        .output()
        .await
        .with_context(|| format!("cannot run {}", oha.display()))?;
    if !out.status.success() {
        bail!(
            "oha failed on {url}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("oha's JSON")?;
    let codes = v["statusCodeDistribution"]
        .as_object()
        .context("oha: no status codes")?;
    let mut ok = 0;
    let mut errors = 0;
    for (code, n) in codes {
        let n = n.as_u64().unwrap_or(0);
        if code.starts_with('2') {
            ok += n;
        } else {
            errors += n;
        }
    }
    if let Some(errs) = v["errorDistribution"].as_object() {
        for (what, n) in errs {
            // Requests still in flight when `-z` ends are cut off by oha, not failed.
            if what != "aborted due to deadline" {
                errors += n.as_u64().unwrap_or(0);
            }
        }
    }
    let total = v["summary"]["total"].as_f64().unwrap_or(secs);
    let pct_us = QUANTILES
        .iter()
        .map(|(name, _)| v["latencyPercentiles"][name].as_f64().unwrap_or(f64::NAN) * 1e6)
        .collect();
    Ok(Measure {
        ok,
        errors,
        rps: ok as f64 / total.max(1e-9),
        pct_us,
        cpu_s: Vec::new(),
        rss_kb: Vec::new(),
    })
}

struct Path3 {
    name: &'static str,
    processes: Vec<&'static str>,
    pids: Vec<u32>,
}

/// One load of a target: `Some(rate)` for a constant rate, `None` for a closed loop, over the
/// given duration.
type Runner = Box<dyn Fn(Option<u32>, Duration) -> BoxFuture<'static, anyhow::Result<Measure>>>;

impl Measure {
    /// Several rounds of one phase as one: the median of each percentile and of req/s, total
    /// counts and CPU time, the largest RSS sample.
    fn combine(rounds: &[Measure]) -> Measure {
        let median = |mut v: Vec<f64>| -> f64 {
            v.retain(|x| x.is_finite());
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
        };
        let width = |f: fn(&Measure) -> usize| rounds.iter().map(f).max().unwrap_or(0);
        Measure {
            ok: rounds.iter().map(|m| m.ok).sum(),
            errors: rounds.iter().map(|m| m.errors).sum(),
            rps: median(rounds.iter().map(|m| m.rps).collect()),
            pct_us: (0..width(|m| m.pct_us.len()))
                .map(|i| {
                    median(
                        rounds
                            .iter()
                            .filter_map(|m| m.pct_us.get(i).copied())
                            .collect(),
                    )
                })
                .collect(),
            cpu_s: (0..width(|m| m.cpu_s.len()))
                .map(|i| rounds.iter().filter_map(|m| m.cpu_s.get(i)).sum())
                .collect(),
            rss_kb: (0..width(|m| m.rss_kb.len()))
                .map(|i| {
                    rounds
                        .iter()
                        .filter_map(|m| m.rss_kb.get(i).copied())
                        .max()
                        .unwrap_or(0)
                })
                .collect(),
        }
    }
}

/// Warms every target up at the constant rate, then runs the constant-rate phase and the
/// closed-loop phase, each as `results.rounds` rounds in which every target runs once in turn.
async fn phases(
    label: &str,
    targets: Vec<(Path3, Runner)>,
    warm: Duration,
    results: &Results,
) -> anyhow::Result<Vec<Target>> {
    let idle: Vec<Vec<u64>> = targets.iter().map(|(t, _)| idle_rss(&t.pids)).collect();
    for (_, run) in &targets {
        run(Some(RATE), warm).await?;
    }
    let n = targets.len();
    let mut rate: Vec<Vec<Measure>> = vec![Vec::new(); n];
    let mut sat: Vec<Vec<Measure>> = vec![Vec::new(); n];
    for (phase, per_round, out) in [
        (Some(RATE), results.duration / results.rounds, &mut rate),
        (None, results.sat_duration / results.rounds, &mut sat),
    ] {
        for round in 1..=results.rounds {
            for (i, (t, run)) in targets.iter().enumerate() {
                eprintln!(
                    "invocation ({label}): {} {}, round {round}/{} …",
                    t.name,
                    phase.map_or("closed loop".to_owned(), |r| format!("at {r} req/s")),
                    results.rounds
                );
                out[i].push(measured(&t.pids, per_round / 2, run(phase, per_round)).await?);
            }
        }
    }
    Ok(targets
        .into_iter()
        .zip(rate.iter().zip(&sat).zip(idle))
        .map(|((t, _), ((rate, sat), idle))| Target {
            name: t.name,
            rate: Measure::combine(rate),
            sat: Measure::combine(sat),
            idle_rss_kb: idle,
            peak_rss_kb: t
                .pids
                .iter()
                .map(|&p| procs::peak_rss_kb(p).unwrap_or(0))
                .collect(),
            processes: t.processes,
        })
        .collect())
}

async fn http(
    mecha: &Path,
    oha_bin: &Path,
    haproxy: Option<&Path>,
    quick: bool,
    results: &mut Results,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let body_file = dir.path().join("body.bin");
    let body = Bytes::from(vec![b'y'; BODY]);
    std::fs::write(&body_file, &body)?;
    let app = Helper::start_self("app-server", &[&BODY.to_string()]).await?;

    eprintln!("invocation (HTTP): starting HAProxy ×2 and two sidecars …");
    let proxies = match haproxy {
        Some(h) => Some(start_haproxy(h, dir.path(), app.port, false).await?),
        None => None,
    };
    let config = mesh_config(dir.path())?;
    let callee =
        Sidecar::start_invoke(mecha, "bench-b", &config, Some((app.port, "http")), &[]).await?;
    let caller = Sidecar::start_invoke(mecha, "bench-a", &config, None, &[]).await?;
    // The mTLS pair has its own name resolution file and app ids.
    let tls_dir = dir.path().join("mtls");
    std::fs::create_dir_all(&tls_dir)?;
    let (_sentry, tls_flags) = crate::procs::start_sentry(mecha, &tls_dir).await?;
    let tls_config = mesh_config(&tls_dir)?;
    let tls_callee = Sidecar::start_invoke(
        mecha,
        "bench-tb",
        &tls_config,
        Some((app.port, "http")),
        &tls_flags,
    )
    .await?;
    let tls_caller =
        Sidecar::start_invoke(mecha, "bench-ta", &tls_config, None, &tls_flags).await?;

    let mut targets = vec![(
        Path3 {
            name: BASELINE,
            processes: vec![],
            pids: vec![],
        },
        format!("http://127.0.0.1:{}/echo", app.port),
    )];
    if let Some((first, second)) = &proxies {
        targets.push((
            Path3 {
                name: HAPROXY,
                processes: vec!["haproxy 1", "haproxy 2"],
                pids: vec![first.pid(), second.pid()],
            },
            format!("http://127.0.0.1:{}/echo", first.port),
        ));
    }
    targets.push((
        Path3 {
            name: MECHA,
            processes: vec!["caller sidecar", "callee sidecar"],
            pids: vec![caller.pid(), callee.pid()],
        },
        format!(
            "http://127.0.0.1:{}/v1.0/invoke/bench-b/method/echo",
            caller.http_port
        ),
    ));
    targets.push((
        Path3 {
            name: MECHA_MTLS,
            processes: vec!["caller sidecar", "callee sidecar"],
            pids: vec![tls_caller.pid(), tls_callee.pid()],
        },
        format!(
            "http://127.0.0.1:{}/v1.0/invoke/bench-tb/method/echo",
            tls_caller.http_port
        ),
    ));
    let mut runners = Vec::new();
    for (t, url) in targets {
        until(&format!("a POST through {}", t.name), async || {
            probe(&url, &body).await
        })
        .await?;
        let (oha_bin, body_file) = (oha_bin.to_owned(), body_file.clone());
        let run: Runner = Box::new(move |rate, d| {
            let (oha_bin, body_file, url) = (oha_bin.clone(), body_file.clone(), url.clone());
            Box::pin(async move { oha(&oha_bin, &url, &body_file, d, rate).await })
        });
        runners.push((t, run));
    }
    let warm = Duration::from_secs(if quick { 1 } else { 2 });
    results.http = phases("HTTP", runners, warm, results).await?;
    Ok(())
}

async fn grpc(
    mecha: &Path,
    haproxy: Option<&Path>,
    quick: bool,
    results: &mut Results,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let echo = Helper::start_self("grpc-echo", &[]).await?;
    eprintln!("invocation (gRPC): starting HAProxy ×2 (h2c) and two sidecars …");
    let proxies = match haproxy {
        Some(h) => match start_haproxy(h, dir.path(), echo.port, true).await {
            Ok(p) => Some(p),
            Err(e) => {
                results
                    .notes
                    .push(format!("HAProxy in h2c mode for gRPC did not start: {e:#}"));
                None
            }
        },
        None => None,
    };
    let config = mesh_config(dir.path())?;
    let callee =
        Sidecar::start_invoke(mecha, "bench-gb", &config, Some((echo.port, "grpc")), &[]).await?;
    let caller = Sidecar::start_invoke(mecha, "bench-ga", &config, None, &[]).await?;
    let body = crate::grpc_echo::payload(BODY);

    let mut targets = vec![(
        Path3 {
            name: BASELINE,
            processes: vec![],
            pids: vec![],
        },
        echo.port,
        None,
    )];
    if let Some((first, second)) = &proxies {
        targets.push((
            Path3 {
                name: HAPROXY,
                processes: vec!["haproxy 1", "haproxy 2"],
                pids: vec![first.pid(), second.pid()],
            },
            first.port,
            None,
        ));
    }
    targets.push((
        Path3 {
            name: MECHA,
            processes: vec!["caller sidecar", "callee sidecar"],
            pids: vec![caller.pid(), callee.pid()],
        },
        caller.grpc_port,
        Some("bench-gb"),
    ));
    let mut runners = Vec::new();
    for (t, port, app_id) in targets {
        let call = crate::grpc_echo::call(port, app_id, body.clone()).await?;
        let c = call.clone();
        until(&format!("a gRPC echo through {}", t.name), async || {
            c(0).await
        })
        .await?;
        let run: Runner = Box::new(move |rate, d| {
            let call = call.clone();
            Box::pin(async move {
                let o = match rate {
                    Some(r) => load::paced(r, CONNECTIONS, d, call).await?,
                    None => {
                        let l = Load {
                            concurrency: CONNECTIONS,
                            duration: d,
                        };
                        load::run(l, call).await?
                    }
                };
                Ok(Measure::from_outcome(&o))
            })
        });
        runners.push((t, run));
    }
    let warm = Duration::from_secs(if quick { 1 } else { 2 });
    results.grpc = phases("gRPC", runners, warm, results).await?;
    Ok(())
}
