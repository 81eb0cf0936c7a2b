//! The distributed lock API against the real binary, on `lock.sqlite` shared by two sidecars.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mecha_test_support::{MechaProcess, ResourcesDir, component};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::MECHA;

async fn lock(c: &Client, p: &MechaProcess, resource: &str, owner: &str, expiry: i64) -> bool {
    let r = c
        .post(format!("{}/v1.0-alpha1/lock/lockstore", p.http_url()))
        .json(&json!({"resourceId": resource, "lockOwner": owner, "expiryInSeconds": expiry}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    body["success"]
        .as_bool()
        .expect("success is always present")
}

async fn unlock(c: &Client, p: &MechaProcess, resource: &str, owner: &str) -> i64 {
    let r = c
        .post(format!("{}/v1.0-alpha1/unlock/lockstore", p.http_url()))
        .json(&json!({"resourceId": resource, "lockOwner": owner}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    body["status"].as_i64().expect("status is numeric")
}

async fn two_sidecars(dir: &tempfile::TempDir) -> (MechaProcess, MechaProcess, ResourcesDir) {
    let file = dir.path().join("locks.db").display().to_string();
    let res = ResourcesDir::new().with(
        "lock.yaml",
        &component("lockstore", "lock.sqlite", &[("connectionString", &file)]),
    );
    // Two replicas of one app: same app id, so the same lock keys.
    let a = MechaProcess::builder(MECHA)
        .app_id("locker")
        .resources(res.path())
        .start()
        .await;
    let b = MechaProcess::builder(MECHA)
        .app_id("locker")
        .resources(res.path())
        .start()
        .await;
    (a, b, res)
}

#[tokio::test(flavor = "multi_thread")]
async fn lock_unlock_statuses_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, _res) = two_sidecars(&dir).await;
    let c = Client::new();
    assert!(lock(&c, &a, "order-1", "alice", 30).await);
    assert!(!lock(&c, &b, "order-1", "bob", 30).await);
    assert_eq!(
        unlock(&c, &b, "order-1", "bob").await,
        2,
        "LOCK_BELONGS_TO_OTHERS"
    );
    assert_eq!(unlock(&c, &a, "order-1", "alice").await, 0, "SUCCESS");
    assert_eq!(
        unlock(&c, &a, "order-1", "alice").await,
        1,
        "LOCK_DOES_NOT_EXIST"
    );
    // Expiry is honoured.
    assert!(lock(&c, &a, "order-2", "alice", 1).await);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(lock(&c, &b, "order-2", "bob", 30).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_contenders_on_two_sidecars_never_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, _res) = two_sidecars(&dir).await;
    let (a, b) = (Arc::new(a), Arc::new(b));
    let c = Client::new();

    // One race on a free lock: exactly one winner.
    let attempts = (0..20).map(|i| {
        let (c, p) = (c.clone(), if i % 2 == 0 { a.clone() } else { b.clone() });
        async move { lock(&c, &p, "race", &format!("owner-{i}"), 30).await }
    });
    let wins = futures::future::join_all(attempts)
        .await
        .into_iter()
        .filter(|w| *w)
        .count();
    assert_eq!(wins, 1, "exactly one of 20 contenders must win");

    // Then contention over time: each contender repeatedly takes the lock, checks it is alone
    // in its critical section, and releases it.
    let inside = Arc::new(AtomicUsize::new(0));
    let entries = Arc::new(AtomicUsize::new(0));
    let tasks = (0..20).map(|i| {
        let (c, p) = (c.clone(), if i % 2 == 0 { a.clone() } else { b.clone() });
        let (inside, entries) = (inside.clone(), entries.clone());
        tokio::spawn(async move {
            let owner = format!("worker-{i}");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
            while tokio::time::Instant::now() < deadline {
                if lock(&c, &p, "critical", &owner, 10).await {
                    assert_eq!(
                        inside.fetch_add(1, Ordering::SeqCst),
                        0,
                        "two holders at once"
                    );
                    entries.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    inside.fetch_sub(1, Ordering::SeqCst);
                    assert_eq!(unlock(&c, &p, "critical", &owner).await, 0);
                } else {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        })
    });
    for t in futures::future::join_all(tasks).await {
        t.unwrap();
    }
    assert!(
        entries.load(Ordering::SeqCst) >= 10,
        "the lock was taken too rarely to prove anything"
    );
}

#[tokio::test]
async fn lock_errors_have_the_reference_codes() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _b, _res) = two_sidecars(&dir).await;
    let c = Client::new();
    let post = |path: &str, body: Value| {
        c.post(format!("{}/v1.0-alpha1/{path}", a.http_url()))
            .json(&body)
            .send()
    };
    let code = |r: reqwest::Response| async move {
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        (
            status,
            body["errorCode"].as_str().unwrap_or_default().to_owned(),
        )
    };
    let cases = [
        (
            "lock/nostore",
            json!({"resourceId": "r", "lockOwner": "o", "expiryInSeconds": 5}),
            StatusCode::BAD_REQUEST,
            "ERR_LOCK_STORE_NOT_FOUND",
        ),
        (
            "lock/lockstore",
            json!({"resourceId": "", "lockOwner": "o", "expiryInSeconds": 5}),
            StatusCode::BAD_REQUEST,
            "ERR_MALFORMED_REQUEST",
        ),
        (
            "lock/lockstore",
            json!({"resourceId": "r", "lockOwner": "", "expiryInSeconds": 5}),
            StatusCode::BAD_REQUEST,
            "ERR_MALFORMED_REQUEST",
        ),
        (
            "lock/lockstore",
            json!({"resourceId": "r", "lockOwner": "o", "expiryInSeconds": 0}),
            StatusCode::BAD_REQUEST,
            "ERR_MALFORMED_REQUEST",
        ),
        (
            "unlock/lockstore",
            json!({"resourceId": "r", "lockOwner": ""}),
            StatusCode::BAD_REQUEST,
            "ERR_MALFORMED_REQUEST",
        ),
        (
            "lock/lockstore",
            json!({"resourceId": 5}),
            StatusCode::BAD_REQUEST,
            "ERR_MALFORMED_REQUEST",
        ),
    ];
    for (path, body, status, want) in cases {
        assert_eq!(
            code(post(path, body.clone()).await.unwrap()).await,
            (status, want.to_owned()),
            "{path} {body}"
        );
    }
    let none = ResourcesDir::new();
    let p = MechaProcess::builder(MECHA)
        .resources(none.path())
        .start()
        .await;
    let r = c
        .post(format!("{}/v1.0-alpha1/lock/x", p.http_url()))
        .json(&json!({"resourceId": "r", "lockOwner": "o", "expiryInSeconds": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(r).await,
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "ERR_LOCK_STORE_NOT_CONFIGURED".to_owned()
        )
    );
}
