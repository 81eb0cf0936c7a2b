//! A `redis-server` process of a test's own, on a free port, for outage and authentication
//! checks that must not touch the shared server.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a private server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A private `redis-server`, killed on drop.
pub(crate) struct PrivateRedis {
    /// Its port on 127.0.0.1.
    pub(crate) port: u16,
    extra: Vec<String>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Starts a server without persistence, with `extra` arguments (`--requirepass x`).
    pub(crate) async fn start(extra: &[&str]) -> Self {
        let mut server = Self {
            port: free_port(),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        server.restart().await;
        server
    }

    /// `127.0.0.1:<port>`.
    pub(crate) fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops (`SIGSTOP`) or continues (`SIGCONT`) the server: a stopped server keeps its
    /// connections open but never answers.
    pub(crate) fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().map(Child::id).unwrap();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// Starts the server again on the same port and waits until it accepts connections.
    pub(crate) async fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not start within {START_TIMEOUT:?}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        // SIGKILL ends a stopped (`SIGSTOP`) server too.
        self.kill();
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}
