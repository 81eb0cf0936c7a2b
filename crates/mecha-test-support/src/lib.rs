//! Test helpers for Mecha (dev-only): free ports, the real `mecha` binary started and awaited,
//! and a temporary resources folder.
//!
//! Nothing here mocks a server: tests talk to the real binary and the real backing servers.

pub mod otlp;

use std::collections::HashSet;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a sidecar may take to become healthy before a test fails.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A loopback port that was free a moment ago and that this process has not handed out before.
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("cannot find a free port: {e}"));
        let mut guard = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
        if guard.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
}

/// A temporary folder of resource YAML files.
pub struct ResourcesDir {
    dir: tempfile::TempDir,
}

impl ResourcesDir {
    /// An empty folder.
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap_or_else(|e| panic!("cannot create a temp dir: {e}")),
        }
    }

    /// Writes `name` with `yaml` and returns `self` for chaining.
    pub fn with(self, name: &str, yaml: &str) -> Self {
        self.write(name, yaml);
        self
    }

    /// Writes one file.
    pub fn write(&self, name: &str, yaml: &str) {
        std::fs::write(self.dir.path().join(name), yaml)
            .unwrap_or_else(|e| panic!("cannot write {name}: {e}"));
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for ResourcesDir {
    fn default() -> Self {
        Self::new()
    }
}

/// A `state.in-memory` component named `name`.
pub fn in_memory_store(name: &str) -> String {
    component(name, "state.in-memory", &[])
}

/// A component document with plain metadata values.
pub fn component(name: &str, component_type: &str, metadata: &[(&str, &str)]) -> String {
    let mut yaml = format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: {component_type}\n  version: v1\n"
    );
    if metadata.is_empty() {
        yaml.push_str("  metadata: []\n");
    } else {
        yaml.push_str("  metadata:\n");
    }
    for (k, v) in metadata {
        yaml.push_str(&format!("  - name: {k}\n    value: \"{v}\"\n"));
    }
    yaml
}

/// A running `mecha sidecar` process on free ports, killed on drop.
pub struct MechaProcess {
    child: Option<Child>,
    log: PathBuf,
    _log_dir: tempfile::TempDir,
    /// The HTTP API port.
    pub http_port: u16,
    /// The gRPC API port.
    pub grpc_port: u16,
    /// The metrics port.
    pub metrics_port: u16,
    /// The app id.
    pub app_id: String,
}

/// Builds a [`MechaProcess`].
pub struct MechaBuilder {
    bin: PathBuf,
    app_id: String,
    args: Vec<String>,
    envs: Vec<(String, String)>,
}

impl MechaProcess {
    /// Starts describing a sidecar run from the binary at `bin` (use
    /// `env!("CARGO_BIN_EXE_mecha")`).
    pub fn builder(bin: impl Into<PathBuf>) -> MechaBuilder {
        MechaBuilder {
            bin: bin.into(),
            app_id: "test-app".into(),
            args: Vec::new(),
            envs: Vec::new(),
        }
    }

    /// `http://127.0.0.1:<http_port>`.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// `http://127.0.0.1:<grpc_port>`.
    pub fn grpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    /// Everything the process has logged so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or_default()
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        wait_timeout(child, timeout)
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        wait_timeout(self.child.as_mut()?, timeout)
    }
}

impl Drop for MechaProcess {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- mecha log ({}) ----\n{}", self.app_id, self.log());
        }
    }
}

impl MechaBuilder {
    /// Sets `--app-id`.
    pub fn app_id(mut self, id: &str) -> Self {
        self.app_id = id.into();
        self
    }

    /// Adds `--resources-path`.
    pub fn resources(mut self, path: &Path) -> Self {
        self.args.push("--resources-path".into());
        self.args.push(path.display().to_string());
        self
    }

    /// Adds raw arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable of the process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Starts the process without waiting; returns it with its log file.
    pub fn spawn(self) -> MechaProcess {
        let http_port = free_port();
        let grpc_port = free_port();
        let metrics_port = free_port();
        let log_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let log = log_dir.path().join("mecha.log");
        let out = std::fs::File::create(&log).unwrap_or_else(|e| panic!("log file: {e}"));
        let err = out.try_clone().unwrap_or_else(|e| panic!("log file: {e}"));
        let mut cmd = Command::new(&self.bin);
        cmd.arg("sidecar")
            .args(["--app-id", &self.app_id])
            .args(["--dapr-http-port", &http_port.to_string()])
            .args(["--dapr-grpc-port", &grpc_port.to_string()])
            .args(["--metrics-port", &metrics_port.to_string()])
            .args(&self.args)
            .env_remove("DAPR_API_TOKEN")
            .envs(self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        MechaProcess {
            child: Some(child),
            log,
            _log_dir: log_dir,
            http_port,
            grpc_port,
            metrics_port,
            app_id: self.app_id,
        }
    }

    /// Starts the process and waits until `/v1.0/healthz/outbound` answers 204.
    pub async fn start(self) -> MechaProcess {
        let mut p = self.spawn();
        let url = format!("{}/v1.0/healthz/outbound", p.http_url());
        let client = reqwest::Client::new();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(r) = client.get(&url).send().await
                && r.status().as_u16() == 204
            {
                return p;
            }
            if let Some(status) = p.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("mecha exited during start-up with {status}:\n{}", p.log());
            }
            if Instant::now() > deadline {
                panic!(
                    "mecha was not healthy within {START_TIMEOUT:?}:\n{}",
                    p.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::park_timeout(Duration::from_millis(10));
    }
}

/// Retries `$check` (an expression giving `bool`) every 20 ms until it holds or `$timeout`
/// passes, then panics with `$msg`.
#[macro_export]
macro_rules! eventually {
    ($timeout:expr, $check:expr, $($msg:tt)+) => {{
        let deadline = std::time::Instant::now() + $timeout;
        loop {
            if $check {
                break;
            }
            if std::time::Instant::now() > deadline {
                panic!($($msg)+);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }};
}
