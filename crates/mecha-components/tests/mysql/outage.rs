//! An outage of a private `mariadbd`: every operation fails with a clear backend error within
//! the timeout, and the same store works again once the server is back on the same port.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use mecha_core::state::{DeleteRequest, Query, StateError, StateStore, TransactionOperation};
use sqlx::{Connection, MySqlConnection};

use crate::{free_port, get, set, store};

/// A `mariadbd` of this test alone, on a temporary data directory and a free port.
struct PrivateMariaDb {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<tokio::process::Child>,
}

impl PrivateMariaDb {
    /// Creates the data directory (root without a password) and starts the server.
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = tokio::process::Command::new("mariadb-install-db")
            // The machine's my.cnf would set another user and log file.
            .arg("--no-defaults")
            .arg("--user=root")
            .arg(format!("--datadir={}", dir.path().join("data").display()))
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db")
            .output()
            .await
            .expect("running mariadb-install-db");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut server = Self {
            dir,
            port: free_port(),
            child: None,
        };
        server.restart().await;
        server
    }

    /// Starts `mariadbd` on the same port and data, and waits until it answers.
    async fn restart(&mut self) {
        let path = |name: &str| -> PathBuf { self.dir.path().join(name) };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path("server.log"))
            .unwrap();
        let child = tokio::process::Command::new("mariadbd")
            .arg("--no-defaults")
            .arg("--user=root")
            .arg(format!("--datadir={}", path("data").display()))
            .arg(format!("--port={}", self.port))
            .arg(format!("--socket={}", path("sock").display()))
            .arg(format!("--pid-file={}", path("pid").display()))
            .args([
                "--skip-networking=0",
                "--bind-address=127.0.0.1",
                "--skip-name-resolve",
            ])
            .args(["--innodb-buffer-pool-size=16M", "--innodb-log-file-size=8M"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("starting mariadbd");
        self.child = Some(child);
        let url = format!("mysql://root@127.0.0.1:{}/", self.port);
        let deadline = Instant::now() + Duration::from_secs(30);
        while MySqlConnection::connect(&url).await.is_err() {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            assert!(exited.is_none(), "mariadbd exited: {}", self.log());
            assert!(
                Instant::now() < deadline,
                "mariadbd did not start: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills the server at once, as a crash would.
    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }

    /// Stops (`SIGSTOP`) or resumes (`SIGCONT`) the server: a hung server.
    async fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().and_then(|c| c.id()).unwrap();
        let status = tokio::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .await
            .unwrap();
        assert!(status.success());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

/// Every operation fails with a backend error, within the timeout and a little.
async fn assert_all_fail(s: &dyn StateStore, within: Duration) {
    let started = Instant::now();
    let errors = [
        s.get(&get("k")).await.err(),
        s.set(&set("k", "v")).await.err(),
        s.delete(&DeleteRequest {
            key: "k".into(),
            ..DeleteRequest::default()
        })
        .await
        .err(),
        s.bulk_get(&[get("k"), get("j")]).await.err(),
        s.transact(&[TransactionOperation::Upsert(set("k", "v"))])
            .await
            .err(),
        s.query(&Query::default()).await.err(),
    ];
    for e in errors {
        assert!(matches!(e, Some(StateError::Backend(_))), "{e:?}");
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < within * 6,
        "six failing operations took {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_of_a_private_server() {
    let mut server = PrivateMariaDb::start().await;
    let dsn = format!("root:@tcp(127.0.0.1:{})/?parseTime=true", server.port);
    let s = store(&[("connectionString", &dsn), ("timeoutInSeconds", "2")]).await;
    s.set(&set("before", "1")).await.unwrap();

    server.kill().await;
    let started = Instant::now();
    let err = s.get(&get("before")).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let StateError::Backend(message) = &err else {
        panic!("{err:?}")
    };
    assert!(message.contains(&server.port.to_string()), "{message}");
    assert_all_fail(&*s, Duration::from_secs(3)).await;

    server.restart().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match s.get(&get("before")).await {
            Ok(found) => {
                assert_eq!(
                    found.unwrap().data,
                    "1",
                    "the committed write survived the crash"
                );
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "never recovered: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.set(&set("after", "2")).await.unwrap();
    assert_eq!(s.get(&get("after")).await.unwrap().unwrap().data, "2");

    // A hung server: operations give up after the timeout, then work once it resumes.
    server.signal("-STOP").await;
    let started = Instant::now();
    let hung = s.get(&get("after")).await;
    assert!(matches!(hung, Err(StateError::Backend(_))));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    server.signal("-CONT").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while s.get(&get("after")).await.is_err() {
        assert!(Instant::now() < deadline, "never recovered from SIGSTOP");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.close().await;
    server.kill().await;
}
