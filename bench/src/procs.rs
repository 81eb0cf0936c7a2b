//! The processes a run starts: the bare HTTP server, the invocation target apps, HAProxy and
//! sidecars, with their footprint.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A bare HTTP server in a child process: the baseline round trip.
pub(crate) struct BareServer {
    child: Child,
    pub(crate) port: u16,
}

/// A sidecar in a child process, with one store named `statestore` or the given components.
pub(crate) struct Sidecar {
    child: Child,
    _dir: tempfile::TempDir,
    pub(crate) http_port: u16,
    pub(crate) grpc_port: u16,
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Writes a resources folder with one `statestore` of `store_type` and `metadata`; a SQLite
/// store gets a file in `dir`.
fn resources(dir: &Path, store_type: &str, metadata: &[(&str, String)]) -> anyhow::Result<PathBuf> {
    let mut items: Vec<(&str, String)> = metadata.to_vec();
    if store_type == "state.sqlite" {
        items.push((
            "connectionString",
            dir.join("state.db").display().to_string(),
        ));
    }
    write_components(dir, &[("statestore", store_type, items)])
}

/// One component: name, type and plain metadata.
pub(crate) type ComponentSpec<'a> = (&'a str, &'a str, Vec<(&'a str, String)>);

/// Writes a resources folder in `dir` with `components`.
fn write_components(dir: &Path, components: &[ComponentSpec<'_>]) -> anyhow::Result<PathBuf> {
    let res = dir.join("resources");
    std::fs::create_dir_all(&res)?;
    for (name, component_type, items) in components {
        let mut yaml = format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: {component_type}\n  version: v1\n  metadata:"
        );
        if items.is_empty() {
            yaml.push_str(" []\n");
        } else {
            yaml.push('\n');
            for (k, v) in items {
                yaml.push_str(&format!("  - name: {k}\n    value: \"{v}\"\n"));
            }
        }
        std::fs::write(res.join(format!("{name}.yaml")), yaml)?;
    }
    Ok(res)
}

/// The readiness path a sidecar without an app answers 204 on once its components are up.
const OUTBOUND: &str = "/v1.0/healthz/outbound";
/// The readiness path that also waits for the app channel and the subscriptions.
const HEALTHZ: &str = "/v1.0/healthz";

async fn wait_healthy(port: u16, path: &str, deadline: Duration) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
            )
            .await?;
            let mut buf = [0u8; 16];
            let n = s.read(&mut buf).await?;
            if buf[..n].starts_with(b"HTTP/1.1 204") {
                return Ok(start.elapsed());
            }
        }
        if start.elapsed() > deadline {
            bail!("port {port} did not answer 204 on {path} within {deadline:?}");
        }
        // The app-channel check logs a warning per refusal, so it is polled less often.
        let pause = if path == HEALTHZ {
            Duration::from_millis(10)
        } else {
            Duration::from_micros(500)
        };
        tokio::time::sleep(pause).await;
    }
}

fn spawn_sidecar(
    mecha: &Path,
    res: &Path,
    http: u16,
    grpc: u16,
    app_port: Option<u16>,
) -> anyhow::Result<Child> {
    let mut extra = Vec::new();
    if let Some(port) = app_port {
        extra.extend(["--app-port".to_owned(), port.to_string()]);
    }
    spawn_mecha(mecha, "bench", res, http, grpc, &extra)
}

fn spawn_mecha(
    mecha: &Path,
    app_id: &str,
    res: &Path,
    http: u16,
    grpc: u16,
    extra: &[String],
) -> anyhow::Result<Child> {
    let mut cmd = Command::new(mecha);
    cmd.args(["sidecar", "--app-id", app_id, "--log-level", "warn"]);
    cmd.args(extra);
    cmd.args([
        "--dapr-http-port",
        &http.to_string(),
        "--dapr-grpc-port",
        &grpc.to_string(),
    ])
    .args(["--metrics-port", &free_port()?.to_string()])
    .arg("--resources-path")
    .arg(res)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .spawn()
    .with_context(|| format!("cannot start {}", mecha.display()))
}

/// User plus system CPU seconds process `pid` has used so far.
pub(crate) fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_comm = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("bad /proc stat")?;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime) are at 11 and 12 after the command name.
    let ticks: f64 = fields
        .get(11)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    Ok(ticks / 100.0)
}

/// Current resident memory (VmRSS) of `pid` in kB.
pub(crate) fn rss_kb(pid: u32) -> anyhow::Result<u64> {
    status_kb(pid, "VmRSS:")
}

/// Peak resident memory (VmHWM) of `pid` in kB.
pub(crate) fn peak_rss_kb(pid: u32) -> anyhow::Result<u64> {
    status_kb(pid, "VmHWM:")
}

/// Waits until something accepts TCP connections on `port`.
pub(crate) async fn wait_listening(port: u16, what: &str) -> anyhow::Result<()> {
    let start = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if start.elapsed() > Duration::from_secs(10) {
            bail!("{what} did not listen on port {port} within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// A child process of this binary serving on a free port (`app-server`, `grpc-echo`), or any
/// other server process the harness starts and stops (HAProxy).
pub(crate) struct Helper {
    child: Child,
    pub(crate) port: u16,
}

impl Helper {
    /// Runs `mecha-bench <command> PORT <args…>` and waits until it listens.
    pub(crate) async fn start_self(command: &str, args: &[&str]) -> anyhow::Result<Self> {
        let port = free_port()?;
        let child = Command::new(std::env::current_exe()?)
            .arg(command)
            .arg(port.to_string())
            .args(args)
            .stdin(Stdio::null())
            .spawn()?;
        let h = Self { child, port };
        wait_listening(port, command).await?;
        Ok(h)
    }

    /// Wraps a started process that listens on `port`, and waits until it does.
    pub(crate) async fn adopt(child: Child, port: u16, what: &str) -> anyhow::Result<Self> {
        let h = Self { child, port };
        wait_listening(port, what).await?;
        Ok(h)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads a `/proc/<pid>/status` field in kB.
fn status_kb(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("{field} missing from /proc/{pid}/status"))
}

impl BareServer {
    pub(crate) async fn start() -> anyhow::Result<Self> {
        let port = free_port()?;
        let child = Command::new(std::env::current_exe()?)
            .args(["bare-server", &port.to_string()])
            .stdin(Stdio::null())
            .spawn()?;
        let start = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if start.elapsed() > Duration::from_secs(10) {
                bail!("the bare server did not start");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(Self { child, port })
    }
}

impl Drop for BareServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sidecar {
    pub(crate) async fn start(
        mecha: &Path,
        store_type: &str,
        metadata: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let res = resources(dir.path(), store_type, metadata)?;
        Self::start_in(mecha, dir, res, None).await
    }

    /// A sidecar with the given components.
    pub(crate) async fn start_with(
        mecha: &Path,
        components: &[ComponentSpec<'_>],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let res = write_components(dir.path(), components)?;
        Self::start_in(mecha, dir, res, None).await
    }

    /// A sidecar with the given components that delivers to the app on `app_port`; ready once
    /// `/v1.0/healthz` answers 204, that is once its subscriptions are made.
    pub(crate) async fn start_with_app(
        mecha: &Path,
        components: &[ComponentSpec<'_>],
        app_port: u16,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let res = write_components(dir.path(), components)?;
        Self::start_in(mecha, dir, res, Some(app_port)).await
    }

    async fn start_in(
        mecha: &Path,
        dir: tempfile::TempDir,
        res: PathBuf,
        app_port: Option<u16>,
    ) -> anyhow::Result<Self> {
        let (http_port, grpc_port) = (free_port()?, free_port()?);
        let child = spawn_sidecar(mecha, &res, http_port, grpc_port, app_port)?;
        let s = Self {
            child,
            _dir: dir,
            http_port,
            grpc_port,
        };
        wait_healthy(http_port, OUTBOUND, Duration::from_secs(10)).await?;
        if app_port.is_some() {
            wait_healthy(http_port, HEALTHZ, Duration::from_secs(10)).await?;
        }
        Ok(s)
    }

    /// User plus system CPU seconds the sidecar has used so far.
    pub(crate) fn cpu_seconds(&self) -> anyhow::Result<f64> {
        cpu_seconds(self.child.id())
    }

    /// Peak resident memory (VmHWM) in kB.
    pub(crate) fn peak_rss_kb(&self) -> anyhow::Result<u64> {
        peak_rss_kb(self.child.id())
    }

    /// Current resident memory (VmRSS) in kB.
    pub(crate) fn rss_kb(&self) -> anyhow::Result<u64> {
        rss_kb(self.child.id())
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A sidecar for service invocation: app id `app_id`, the Configuration file `config` (its
    /// name resolution), no components, `more` flags, and with `app` = (port, protocol) an app
    /// behind it. Ready once `/v1.0/healthz` answers 204 (with an app, that includes the app channel).
    pub(crate) async fn start_invoke(
        mecha: &Path,
        app_id: &str,
        config: &Path,
        app: Option<(u16, &str)>,
        more: &[String],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let res = write_components(dir.path(), &[])?;
        let (http_port, grpc_port) = (free_port()?, free_port()?);
        let mut extra = vec!["--config".to_owned(), config.display().to_string()];
        extra.extend_from_slice(more);
        if let Some((port, protocol)) = app {
            extra.extend([
                "--app-port".to_owned(),
                port.to_string(),
                "--app-protocol".to_owned(),
                protocol.to_owned(),
            ]);
        }
        let child = spawn_mecha(mecha, app_id, &res, http_port, grpc_port, &extra)?;
        let s = Self {
            child,
            _dir: dir,
            http_port,
            grpc_port,
        };
        wait_healthy(http_port, OUTBOUND, Duration::from_secs(10)).await?;
        wait_healthy(http_port, HEALTHZ, Duration::from_secs(10)).await?;
        Ok(s)
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA made by `mecha ca init` in `dir/pki` and `mecha sentry` serving it; returns the
/// signing service and the flags that give a sidecar mTLS with it.
pub(crate) async fn start_sentry(
    mecha: &Path,
    dir: &Path,
) -> anyhow::Result<(Helper, Vec<String>)> {
    let pki = dir.join("pki");
    let out = Command::new(mecha)
        .args(["ca", "init", "--dir"])
        .arg(&pki)
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!(
            "mecha ca init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let port = free_port()?;
    let child = Command::new(mecha)
        .args([
            "sentry",
            "--log-level",
            "warn",
            "--port",
            &port.to_string(),
            "--dir",
        ])
        .arg(&pki)
        .stdin(Stdio::null())
        .spawn()?;
    let sentry = Helper::adopt(child, port, "mecha sentry").await?;
    let flags = vec![
        "--enable-mtls".to_owned(),
        "--sentry-address".to_owned(),
        format!("127.0.0.1:{port}"),
        "--trust-anchors-file".to_owned(),
        pki.join("ca.crt").display().to_string(),
        "--sentry-token-file".to_owned(),
        pki.join("token").display().to_string(),
    ];
    Ok((sentry, flags))
}

/// Time from `spawn` to the first 204 of `/v1.0/healthz/outbound`, with a SQLite store.
pub(crate) async fn time_to_healthy(mecha: &Path) -> anyhow::Result<Duration> {
    let dir = tempfile::tempdir()?;
    let res = resources(dir.path(), "state.sqlite", &[])?;
    let (http, grpc) = (free_port()?, free_port()?);
    let start = Instant::now();
    let mut child = spawn_sidecar(mecha, &res, http, grpc, None)?;
    let r = wait_healthy(http, OUTBOUND, Duration::from_secs(10)).await;
    let elapsed = start.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    r.map(|_| elapsed)
}
