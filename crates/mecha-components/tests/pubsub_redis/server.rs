//! A `redis-server` process of a test's own, on a free port, with an append-only file synced
//! on every write, so that what it accepted survives a restart.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a private server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A private, persistent `redis-server`, killed on drop.
pub(crate) struct PersistentRedis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PersistentRedis {
    /// Starts a server with `--appendonly yes --appendfsync always` in a temp dir.
    pub(crate) async fn start() -> Self {
        let mut server = Self {
            port: free_port(),
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

    /// Starts the server again on the same port and directory (replaying its append-only
    /// file) and waits until it answers `PING`.
    pub(crate) async fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        let client = redis::Client::open(format!("redis://{}/", self.address())).unwrap();
        loop {
            if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                // Loading the append-only file answers LOADING until done.
                if redis::cmd("PING").query_async::<()>(&mut c).await.is_ok() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not start within {START_TIMEOUT:?}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for PersistentRedis {
    fn drop(&mut self) {
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
