//! A private PostgreSQL server in a temporary directory, for outage tests: started, killed
//! and restarted on the same port without touching the shared server.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A private server; killed on drop.
pub(crate) struct PrivatePostgres {
    _dir: tempfile::TempDir,
    data: PathBuf,
    socket_dir: PathBuf,
    /// The TCP port on 127.0.0.1.
    pub(crate) port: u16,
    ids: Option<(u32, u32)>,
    child: Option<Child>,
}

impl PrivatePostgres {
    /// Runs `initdb` into a temporary directory and starts the server on a free port.
    pub(crate) async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ids = postgres_ids();
        if let Some((uid, gid)) = ids {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let data = dir.path().join("data");
        let out = as_user(Command::new(bin("initdb")), ids)
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .arg("-D")
            .arg(&data)
            .output()
            .unwrap_or_else(|e| panic!("cannot run initdb: {e}"));
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = Self {
            socket_dir: dir.path().to_owned(),
            _dir: dir,
            data,
            port,
            ids,
            child: None,
        };
        server.restart().await;
        server
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server (again) on the same port and waits until it accepts connections.
    pub(crate) async fn restart(&mut self) {
        assert!(self.child.is_none(), "the server is already running");
        let child = as_user(Command::new(bin("postgres")), self.ids)
            .arg("-D")
            .arg(&self.data)
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&self.socket_dir)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start postgres: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(pool) = sqlx::PgPool::connect(&self.url()).await {
                pool.close().await;
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the private server did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills the server as a crash would (`SIGQUIT`: immediate shutdown) and waits for it.
    pub(crate) fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-QUIT", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::park_timeout(Duration::from_millis(20));
        }
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.kill();
    }
}

fn bin(name: &str) -> PathBuf {
    let dir = std::env::var("MECHA_TEST_POSTGRES_BIN")
        .unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
    PathBuf::from(dir).join(name)
}

/// The `postgres` user's ids when running as root (PostgreSQL refuses to run as root).
fn postgres_ids() -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").arg(flag).arg("postgres").output().ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    let me = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&me.stdout).trim() != "0" {
        return None;
    }
    Some((
        id("-u").expect("running as root needs a postgres user"),
        id("-g")?,
    ))
}

fn as_user(mut cmd: Command, ids: Option<(u32, u32)>) -> Command {
    if let Some((uid, gid)) = ids {
        cmd.uid(uid).gid(gid);
    }
    cmd
}
