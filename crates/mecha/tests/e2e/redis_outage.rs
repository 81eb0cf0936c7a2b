//! The Redis components through the real binary: a `state.redis` store whose private
//! `redis-server` is killed and restarted under a running sidecar, and `lock.redis` over the
//! HTTP lock API.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mecha_test_support::{MechaProcess, ResourcesDir, component, free_port};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};

use crate::MECHA;

/// How soon the sidecar must answer while Redis is down.
const OUTAGE_ANSWER: Duration = Duration::from_secs(5);

/// A `redis-server` of this test's own, without persistence, killed on drop.
struct PrivateRedis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateRedis {
    async fn start() -> Self {
        let mut server = Self {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        server.restart().await;
        server
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// (Re)starts the server on its port and waits until it accepts connections.
    async fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn error_code(r: Response) -> (StatusCode, String) {
    let status = r.status();
    let body: Value = r.json().await.expect("error body is JSON");
    let code = body["errorCode"].as_str().unwrap_or_default().to_owned();
    (status, code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_redis_outage_and_recovery() {
    let mut redis = PrivateRedis::start().await;
    let res = ResourcesDir::new().with(
        "statestore.yaml",
        &component(
            "statestore",
            "state.redis",
            &[("redisHost", &redis.address())],
        ),
    );
    let p = MechaProcess::builder(MECHA)
        .resources(res.path())
        .start()
        .await;
    let c = Client::new();
    let url = format!("{}/v1.0/state/statestore", p.http_url());
    let save = |value: &'static str| {
        c.post(&url)
            .json(&json!([{"key": "k", "value": value}]))
            .send()
    };
    assert_eq!(
        save("before").await.unwrap().status(),
        StatusCode::NO_CONTENT
    );

    redis.kill();
    for _ in 0..2 {
        let started = Instant::now();
        let r = c.get(format!("{url}/k")).send().await.unwrap();
        assert_eq!(
            error_code(r).await,
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "ERR_STATE_GET".to_owned()
            )
        );
        let r = save("during").await.unwrap();
        assert_eq!(
            error_code(r).await,
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "ERR_STATE_SAVE".to_owned()
            )
        );
        assert!(
            started.elapsed() < 2 * OUTAGE_ANSWER,
            "a get and a save during the outage took {:?}",
            started.elapsed()
        );
    }

    // Without persistence the restarted server is empty; the same sidecar uses it at once.
    redis.restart().await;
    let r = c.get(format!("{url}/k")).send().await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NO_CONTENT,
        "the key is gone with the old server"
    );
    assert_eq!(
        save("after").await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    let r = c.get(format!("{url}/k")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().get("etag").is_some());
    assert_eq!(r.json::<Value>().await.unwrap(), json!("after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_redis_over_http() {
    let host = std::env::var("MECHA_TEST_REDIS_URL").unwrap_or_else(|_| "127.0.0.1:6379".into());
    let res = ResourcesDir::new().with(
        "lockstore.yaml",
        &component("lockstore", "lock.redis", &[("redisHost", &host)]),
    );
    let p = MechaProcess::builder(MECHA)
        .resources(res.path())
        .start()
        .await;
    let c = Client::new();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let resource = format!("e2e-lock-{}-{nanos}", std::process::id());
    let lock = |owner: &str| {
        let body = json!({"resourceId": resource, "lockOwner": owner, "expiryInSeconds": 30});
        c.post(format!("{}/v1.0-alpha1/lock/lockstore", p.http_url()))
            .json(&body)
            .send()
    };
    let unlock = |owner: &str| {
        let body = json!({"resourceId": resource, "lockOwner": owner});
        c.post(format!("{}/v1.0-alpha1/unlock/lockstore", p.http_url()))
            .json(&body)
            .send()
    };
    let json_of = |r: Response| async move {
        assert_eq!(r.status(), StatusCode::OK);
        r.json::<Value>().await.unwrap()
    };

    assert_eq!(
        json_of(lock("a").await.unwrap()).await,
        json!({"success": true})
    );
    assert_eq!(
        json_of(lock("b").await.unwrap()).await,
        json!({"success": false})
    );
    assert_eq!(
        json_of(unlock("b").await.unwrap()).await,
        json!({"status": 2})
    );
    assert_eq!(
        json_of(unlock("a").await.unwrap()).await,
        json!({"status": 0})
    );
    assert_eq!(
        json_of(unlock("a").await.unwrap()).await,
        json!({"status": 1})
    );
}

/// A component resiliency policy on the state store: while Redis is down, failures trip the
/// breaker and later calls fail at once with "circuit breaker is open"; once Redis is back and
/// the breaker's timeout passed, calls succeed again.
#[tokio::test(flavor = "multi_thread")]
async fn component_circuit_breaker_opens_during_an_outage_and_closes_after() {
    let mut redis = PrivateRedis::start().await;
    let res = ResourcesDir::new()
        .with(
            "store.yaml",
            &component("statestore", "state.redis", &[("redisHost", &redis.address())]),
        )
        .with(
            "resiliency.yaml",
            "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: store\nspec:\n  policies:\n    timeouts:\n      quick: 1s\n    circuitBreakers:\n      cb:\n        maxRequests: 1\n        timeout: 2s\n        trip: consecutiveFailures > 1\n  targets:\n    components:\n      statestore:\n        outbound:\n          timeout: quick\n          circuitBreaker: cb\n",
        );
    let p = MechaProcess::builder(MECHA)
        .resources(res.path())
        .start()
        .await;
    let c = Client::new();
    let save = || {
        let c = c.clone();
        let url = format!("{}/v1.0/state/statestore", p.http_url());
        async move {
            c.post(url)
                .json(&json!([{"key": "k", "value": 1}]))
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(save().await.status(), StatusCode::NO_CONTENT);
    redis.kill();
    let mut messages = Vec::new();
    for _ in 0..4 {
        let r = save().await;
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let v: Value = r.json().await.unwrap();
        messages.push(v["message"].as_str().unwrap_or_default().to_owned());
    }
    assert!(
        messages.last().unwrap().contains("circuit breaker is open"),
        "the breaker did not open: {messages:?}"
    );
    redis.restart().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if save().await.status() == StatusCode::NO_CONTENT {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the breaker never closed\n{}",
            p.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
