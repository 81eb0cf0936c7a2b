//! `state.postgresql` through the real sidecar: a private PostgreSQL server stopped and
//! restarted under a running sidecar, and the HTTP query API on the shared server.
//!
//! The private server needs the PostgreSQL binaries (`$MECHA_TEST_POSTGRES_BIN`, default
//! `/usr/lib/postgresql/15/bin`), run as the `postgres` user when the tests run as root. The
//! shared server is `$MECHA_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`).

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mecha_test_support::{MechaProcess, ResourcesDir, component, eventually, free_port};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::MECHA;

/// The state store's operation timeout in these tests.
const TIMEOUT_SECS: u64 = 2;

/// A private server in a temporary directory; killed on drop.
struct PrivatePostgres {
    dir: tempfile::TempDir,
    port: u16,
    ids: Option<(u32, u32)>,
    child: Option<Child>,
}

impl PrivatePostgres {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ids = postgres_ids();
        if let Some((uid, gid)) = ids {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
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
            .arg(dir.path().join("data"))
            .output()
            .unwrap_or_else(|e| panic!("cannot run initdb: {e}"));
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut server = Self {
            dir,
            port: free_port(),
            ids,
            child: None,
        };
        server.restart();
        server
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server on its port and waits until it accepts connections.
    fn restart(&mut self) {
        let child = as_user(Command::new(bin("postgres")), self.ids)
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start postgres: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = self.port.to_string();
        while !Command::new(bin("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &port])
            .status()
            .is_ok_and(|s| s.success())
        {
            assert!(
                Instant::now() < deadline,
                "the private server did not start"
            );
            std::thread::park_timeout(Duration::from_millis(100));
        }
    }

    /// Kills the server as a crash would (`SIGQUIT`) and waits for it to exit.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-QUIT", &child.id().to_string()])
                .status();
            let _ = child.wait();
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
    let id = |args: &[&str]| -> Option<u32> {
        let out = Command::new("id").args(args).output().ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    if id(&["-u"])? != 0 {
        return None;
    }
    Some((
        id(&["-u", "postgres"]).expect("running as root needs a postgres user"),
        id(&["-g", "postgres"])?,
    ))
}

fn as_user(mut cmd: Command, ids: Option<(u32, u32)>) -> Command {
    if let Some((uid, gid)) = ids {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

/// A table name no other run uses.
fn fresh_table(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("mecha_e2e_{tag}_{}_{nanos}", std::process::id())
}

async fn sidecar(connection_string: &str, table: &str) -> (MechaProcess, ResourcesDir) {
    let timeout = TIMEOUT_SECS.to_string();
    let res = ResourcesDir::new().with(
        "statestore.yaml",
        &component(
            "statestore",
            "state.postgresql",
            &[
                ("connectionString", connection_string),
                ("tableName", table),
                ("timeoutInSeconds", &timeout),
            ],
        ),
    );
    let p = MechaProcess::builder(MECHA)
        .resources(res.path())
        .start()
        .await;
    (p, res)
}

async fn error_code(r: reqwest::Response) -> (StatusCode, String) {
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (
        status,
        body["errorCode"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn state_errors_during_an_outage_and_recovers_without_a_restart() {
    let mut server = PrivatePostgres::start();
    let (p, _res) = sidecar(&server.url(), "state").await;
    let c = Client::new();
    let state = format!("{}/v1.0/state/statestore", p.http_url());
    let key = format!("{state}/k");
    let save = |value: Value| {
        c.post(&state)
            .json(&json!([{"key": "k", "value": value}]))
            .send()
    };
    assert_eq!(
        save(json!({"n": 1})).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    let r = c.get(&key).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"n": 1}));

    server.kill();
    let limit = Duration::from_secs(TIMEOUT_SECS + 3);
    let started = Instant::now();
    let got = error_code(c.get(&key).send().await.unwrap()).await;
    assert_eq!(
        got,
        (StatusCode::INTERNAL_SERVER_ERROR, "ERR_STATE_GET".into())
    );
    assert!(
        started.elapsed() < limit,
        "GET took {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let got = error_code(save(json!({"n": 2})).await.unwrap()).await;
    assert_eq!(
        got,
        (StatusCode::INTERNAL_SERVER_ERROR, "ERR_STATE_SAVE".into())
    );
    assert!(
        started.elapsed() < limit,
        "SAVE took {:?}",
        started.elapsed()
    );

    server.restart();
    // The same sidecar recovers by itself.
    eventually!(
        Duration::from_secs(15),
        c.get(&key)
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK),
        "state did not recover after the server came back:\n{}",
        p.log()
    );
    assert_eq!(
        save(json!({"n": 3})).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    let r = c.get(&key).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"n": 3}));
}

#[tokio::test(flavor = "multi_thread")]
async fn query_api_on_postgresql() {
    let url = std::env::var("MECHA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let table = fresh_table("query");
    let (p, _res) = sidecar(&url, &table).await;
    let c = Client::new();
    let docs: Vec<Value> = [
        (
            "o1",
            json!({"n": 1, "city": "Seattle", "person": {"org": "Dev"}}),
        ),
        (
            "o2",
            json!({"n": 2.5, "city": "Portland", "person": {"org": "Finance"}}),
        ),
        (
            "o3",
            json!({"n": 10, "city": "Seattle", "person": {"org": "Finance"}}),
        ),
        (
            "o4",
            json!({"n": "9", "city": "Seattle", "person": {"org": "Dev"}}),
        ),
        (
            "o5",
            json!({"n": 7, "city": "Austin", "person": {"org": "Ops"}}),
        ),
    ]
    .into_iter()
    .map(|(k, v)| json!({"key": k, "value": v}))
    .collect();
    let r = c
        .post(format!("{}/v1.0/state/statestore", p.http_url()))
        .json(&docs)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    let query_url = format!("{}/v1.0-alpha1/state/statestore/query", p.http_url());
    let query = |q: Value| {
        let (c, query_url) = (c.clone(), query_url.clone());
        async move {
            let r = c.post(&query_url).json(&q).send().await.unwrap();
            match r.status() {
                StatusCode::NO_CONTENT => json!({"results": []}),
                StatusCode::OK => r.json::<Value>().await.unwrap(),
                other => panic!("query {q}: {other}: {}", r.text().await.unwrap()),
            }
        }
    };
    let keys = |body: &Value| -> Vec<String> {
        body["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["key"].as_str().unwrap().to_owned())
            .collect()
    };

    // Numeric comparison ("9" is a string), nested paths, AND/OR, sort DESC, paging.
    let filter = json!({"AND": [
        {"OR": [{"EQ": {"city": "Seattle"}}, {"IN": {"person.org": ["Ops"]}}]},
        {"GTE": {"n": 1}}
    ]});
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut q = json!({"filter": filter, "sort": [{"key": "n", "order": "DESC"}],
            "page": {"limit": 2}});
        if let Some(t) = &token {
            q["page"]["token"] = json!(t);
        }
        let body = query(q).await;
        for r in body["results"].as_array().unwrap() {
            assert!(r["etag"].as_str().is_some_and(|e| !e.is_empty()));
        }
        seen.extend(keys(&body));
        token = body["token"].as_str().map(str::to_owned);
        if token.is_none() {
            break;
        }
        assert!(seen.len() < 10, "paging does not end");
    }
    assert_eq!(seen, ["o3", "o5", "o1"]);
    let body = query(json!({"filter": {"EQ": {"person.org": "Finance"}}})).await;
    assert_eq!(keys(&body), ["o2", "o3"]);
    assert_eq!(
        body["results"][0]["data"],
        json!({"n": 2.5, "city": "Portland", "person": {"org": "Finance"}})
    );
    let body = query(json!({"filter": {"LT": {"n": 1}}})).await;
    assert!(keys(&body).is_empty());

    drop(p);
    // Best effort: the table is unique to this run, so leaving it behind harms nothing.
    let _ = Command::new("psql")
        .args([
            url.as_str(),
            "-q",
            "-c",
            &format!("DROP TABLE IF EXISTS \"{table}\""),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
