//! `state.mysql` through the real sidecar: save, get and transactions over HTTP against the
//! shared MariaDB (`MECHA_TEST_MYSQL_URL`, default `mysql://root@127.0.0.1:3306/test`), and an
//! outage of a private `mariadbd` that the sidecar rides out without a restart.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use mecha_test_support::{MechaProcess, ResourcesDir, component, free_port};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};

use crate::MECHA;

/// The shared server as the Go DSN Dapr users write.
fn shared_dsn() -> String {
    let url = std::env::var("MECHA_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into());
    let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
    let (credentials, rest) = rest.rsplit_once('@').unwrap_or(("root", rest));
    let (address, db) = rest.split_once('/').unwrap_or((rest, ""));
    let credentials = if credentials.contains(':') {
        credentials.to_owned()
    } else {
        format!("{credentials}:")
    };
    format!("{credentials}@tcp({address})/{db}?parseTime=true&allowNativePasswords=true")
}

async fn sidecar(metadata: &[(&str, &str)]) -> (MechaProcess, ResourcesDir) {
    let res = ResourcesDir::new().with(
        "store.yaml",
        &component("statestore", "state.mysql", metadata),
    );
    let p = MechaProcess::builder(MECHA)
        .resources(res.path())
        .start()
        .await;
    (p, res)
}

fn state_url(p: &MechaProcess, rest: &str) -> String {
    format!("{}/v1.0/state/statestore{rest}", p.http_url())
}

async fn error_code(r: Response) -> (StatusCode, String) {
    let status = r.status();
    let body: Value = r.json().await.expect("error body is JSON");
    (
        status,
        body["errorCode"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn mysql_save_get_and_transaction_over_http() {
    let dsn = shared_dsn();
    // One table for every run; keys are fresh so that runs do not meet.
    let (p, _r) = sidecar(&[("connectionString", &dsn), ("tableName", "mecha_e2e_state")]).await;
    let c = Client::new();
    let k = |name: &str| format!("{name}-{}", uuid_like());
    let (a, b, gone) = (k("a"), k("b"), k("gone"));

    let save = json!([{"key": a, "value": {"n": 1}}, {"key": gone, "value": "bye"}]);
    let r = c.post(state_url(&p, "")).json(&save).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = c.get(state_url(&p, &format!("/{a}"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"n": 1}));

    let tx = json!({"operations": [
        {"operation": "upsert", "request": {"key": a, "value": 2, "etag": etag}},
        {"operation": "upsert", "request": {"key": b, "value": [1, "x"]}},
        {"operation": "delete", "request": {"key": gone}},
    ]});
    let r = c
        .post(state_url(&p, "/transaction"))
        .json(&tx)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let text = |key: String| {
        let (c, url) = (c.clone(), state_url(&p, &format!("/{key}")));
        async move { c.get(url).send().await.unwrap().text().await.unwrap() }
    };
    assert_eq!(text(a.clone()).await, "2");
    assert_eq!(text(b.clone()).await, r#"[1,"x"]"#);
    assert_eq!(text(gone.clone()).await, "");

    // The same stale etag again: all or nothing.
    let stale = json!({"operations": [
        {"operation": "upsert", "request": {"key": b, "value": "changed"}},
        {"operation": "upsert", "request": {"key": a, "value": 3, "etag": etag}},
    ]});
    let r = c
        .post(state_url(&p, "/transaction"))
        .json(&stale)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await.1, "ERR_STATE_TRANSACTION");
    assert_eq!(text(b.clone()).await, r#"[1,"x"]"#);
    let save = json!([{"key": a, "value": 4, "etag": etag}]);
    let r = c.post(state_url(&p, "")).json(&save).send().await.unwrap();
    assert_eq!(
        error_code(r).await,
        (StatusCode::CONFLICT, "ERR_STATE_SAVE".to_owned())
    );
    for key in [a, b] {
        let r = c
            .delete(state_url(&p, &format!("/{key}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }
}

/// A fresh random token (the e2e crate has no uuid dependency).
fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{nanos:x}-{}-{}", std::process::id(), free_port())
}

/// A `mariadbd` of this test alone, on a temporary data directory and a free port.
struct PrivateMariaDb {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<tokio::process::Child>,
}

impl PrivateMariaDb {
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
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ping = tokio::process::Command::new("mariadb-admin")
                .args(["--no-defaults", "--protocol=tcp", "-h127.0.0.1", "-uroot"])
                .arg(format!("-P{}", self.port))
                .args(["--connect-timeout=1", "ping"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await
                .unwrap();
            if ping.success() {
                return;
            }
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

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

#[tokio::test]
async fn mysql_outage_answers_500_then_recovers_without_a_restart() {
    let mut server = PrivateMariaDb::start().await;
    let dsn = format!("root:@tcp(127.0.0.1:{})/?parseTime=true", server.port);
    let (p, _r) = sidecar(&[("connectionString", &dsn), ("timeoutInSeconds", "2")]).await;
    let c = Client::new();
    let save = |value: Value| {
        let (c, url) = (c.clone(), state_url(&p, ""));
        async move {
            c.post(url)
                .json(&json!([{"key": "k", "value": value}]))
                .send()
                .await
                .unwrap()
        }
    };
    let get = || {
        let (c, url) = (c.clone(), state_url(&p, "/k"));
        async move { c.get(url).send().await.unwrap() }
    };
    assert_eq!(save(json!("before")).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(get().await.text().await.unwrap(), r#""before""#);

    server.kill().await;
    let started = Instant::now();
    assert_eq!(
        error_code(get().await).await,
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "ERR_STATE_GET".to_owned()
        )
    );
    assert_eq!(
        error_code(save(json!("during")).await).await,
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "ERR_STATE_SAVE".to_owned()
        )
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(6),
        "two failures took {elapsed:?}"
    );

    server.restart().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = get().await;
        if r.status() == StatusCode::OK {
            assert_eq!(r.text().await.unwrap(), r#""before""#);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sidecar never recovered:\n{}",
            p.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(save(json!("after")).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(get().await.text().await.unwrap(), r#""after""#);
    server.kill().await;
}
