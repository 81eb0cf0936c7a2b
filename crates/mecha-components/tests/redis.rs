//! `state.redis`, `lock.redis` and `configuration.redis` against real Redis servers: the
//! conformance suites on the shared server (`MECHA_TEST_REDIS_URL`, default `127.0.0.1:6379`),
//! the storage layout seen from a plain client, and authentication and outages on private
//! `redis-server` processes.

#![cfg(all(
    feature = "state-redis",
    feature = "lock-redis",
    feature = "configuration-redis"
))]
// Test helpers outside `#[test]` functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "redis/outages.rs"]
mod outages;
#[path = "redis/private_server.rs"]
mod private_server;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use mecha_components::configuration::redis::RedisConfigurationStore;
use mecha_components::lock::redis::RedisLockStore;
use mecha_components::state::redis::RedisStateStore;
use mecha_core::Metadata;
use mecha_core::component::ComponentInit;
use mecha_core::state::{
    DeleteRequest, GetRequest, SetRequest, StateError, StateStore, TTL_EXPIRE_TIME, TTL_IN_SECONDS,
    TransactionOperation,
};
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;

/// The shared server, `host:port`.
fn shared_address() -> String {
    let raw = std::env::var("MECHA_TEST_REDIS_URL").unwrap_or_else(|_| "127.0.0.1:6379".into());
    raw.trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned()
}

fn init(metadata: &[(&str, &str)]) -> ComponentInit {
    ComponentInit {
        name: "redis".to_owned(),
        metadata: Metadata::new(
            metadata
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<HashMap<_, _>>(),
        ),
        app_id: "redis-tests".to_owned(),
    }
}

async fn state_at(address: &str, extra: &[(&str, &str)]) -> Arc<dyn StateStore> {
    let mut md = vec![("redisHost", address)];
    md.extend_from_slice(extra);
    RedisStateStore::create(init(&md))
        .await
        .unwrap_or_else(|e| panic!("state.redis at {address}: {e}"))
}

async fn shared_state(extra: &[(&str, &str)]) -> Arc<dyn StateStore> {
    state_at(&shared_address(), extra).await
}

/// A plain client on `db` of the shared server, bypassing the components.
async fn raw(db: i64) -> MultiplexedConnection {
    let url = format!("redis://{}/{db}", shared_address());
    let client = redis::Client::open(url).unwrap();
    client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("redis at {}: {e}", shared_address()))
}

fn key(tag: &str) -> String {
    format!("mecha-redis-test-{tag}-{}", uuid::Uuid::new_v4().simple())
}

fn get(k: &str) -> GetRequest {
    GetRequest {
        key: k.to_owned(),
        ..GetRequest::default()
    }
}

fn set(k: &str, value: &'static str) -> SetRequest {
    SetRequest {
        key: k.to_owned(),
        value: Bytes::from(value),
        ..SetRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_conformance() {
    mecha_conformance::state::run(|| shared_state(&[])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_conformance() {
    let address = shared_address();
    mecha_conformance::lock::run(|| async {
        RedisLockStore::create(init(&[("redisHost", &address)]))
            .await
            .unwrap_or_else(|e| panic!("lock.redis at {address}: {e}"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_conformance() {
    let address = shared_address();
    let conn = raw(0).await;
    mecha_conformance::configuration::run(
        || async {
            RedisConfigurationStore::create(init(&[("redisHost", &address)]))
                .await
                .unwrap_or_else(|e| panic!("configuration.redis at {address}: {e}"))
        },
        |k: String, v: Option<String>| {
            let mut conn = conn.clone();
            async move {
                match v {
                    Some(v) => conn.set::<_, _, ()>(k, v).await.unwrap(),
                    None => conn.del::<_, ()>(k).await.unwrap(),
                }
            }
        },
    )
    .await;
}

/// Values are Dapr's hashes: `data` verbatim and `version` as the ETag, counting from 1.
#[tokio::test]
async fn state_layout_is_daprs() {
    let store = shared_state(&[]).await;
    let mut conn = raw(0).await;
    let k = key("layout");
    store.set(&set(&k, "{\"a\":1}")).await.unwrap();
    store.set(&set(&k, "{\"a\":2}")).await.unwrap();
    let fields: HashMap<String, Vec<u8>> = conn.hgetall(&k).await.unwrap();
    assert_eq!(fields["data"], b"{\"a\":2}");
    assert_eq!(fields["version"], b"2");
    let got = store.get(&get(&k)).await.unwrap().unwrap();
    assert_eq!(got.etag.as_deref(), Some("2"));

    // A value written by Dapr is read, and its ETag honoured.
    let dapr = key("dapr");
    let _: () = conn
        .hset_multiple(&dapr, &[("data", "\"from dapr\""), ("version", "7")])
        .await
        .unwrap();
    let got = store.get(&get(&dapr)).await.unwrap().unwrap();
    assert_eq!(
        (got.data.as_ref(), got.etag.as_deref()),
        (&b"\"from dapr\""[..], Some("7"))
    );
    let guarded = SetRequest {
        etag: Some("7".into()),
        ..set(&dapr, "\"from mecha\"")
    };
    store.set(&guarded).await.unwrap();
    let version: String = conn.hget(&dapr, "version").await.unwrap();
    assert_eq!(version, "8");

    // A plain string (old Dapr) reads without an ETag and is replaced on write.
    let legacy = key("legacy");
    let _: () = conn.set(&legacy, "old").await.unwrap();
    let got = store.get(&get(&legacy)).await.unwrap().unwrap();
    assert_eq!((got.data.as_ref(), got.etag), (&b"old"[..], None));
    store.set(&set(&legacy, "new")).await.unwrap();
    let version: String = conn.hget(&legacy, "version").await.unwrap();
    assert_eq!(version, "1");
    let _: () = conn.del(&[&k, &dapr, &legacy]).await.unwrap();
}

#[tokio::test]
async fn non_integer_etags_are_invalid() {
    let store = shared_state(&[]).await;
    let k = key("invalid-etag");
    store.set(&set(&k, "v")).await.unwrap();
    let bad = SetRequest {
        etag: Some("not-a-version".into()),
        ..set(&k, "w")
    };
    assert!(matches!(
        store.set(&bad).await,
        Err(StateError::InvalidEtag(_))
    ));
    let bad_delete = DeleteRequest {
        key: k.clone(),
        etag: Some("x".into()),
        ..DeleteRequest::default()
    };
    assert!(matches!(
        store.delete(&bad_delete).await,
        Err(StateError::InvalidEtag(_))
    ));
    let ops = [
        TransactionOperation::Upsert(set(&k, "in tx")),
        TransactionOperation::Upsert(bad),
    ];
    assert!(matches!(
        store.transact(&ops).await,
        Err(StateError::InvalidEtag(_))
    ));
    let got = store.get(&get(&k)).await.unwrap().unwrap();
    assert_eq!(
        got.data.as_ref(),
        b"v",
        "nothing of the refused transaction applied"
    );
    let delete = DeleteRequest {
        etag: None,
        ..bad_delete
    };
    store.delete(&delete).await.unwrap();
}

/// The expiry is Redis's own: PEXPIRE on a TTL, PERSIST without one, the component's
/// `ttlInSeconds` as the default and `-1` in a request overriding it.
#[tokio::test]
async fn ttl_is_set_on_the_redis_side() {
    let store = shared_state(&[]).await;
    let with_default = shared_state(&[(TTL_IN_SECONDS, "50")]).await;
    let mut conn = raw(0).await;
    let k = key("ttl");
    let pttl = |conn: &mut MultiplexedConnection, k: String| {
        let mut conn = conn.clone();
        async move { conn.pttl::<_, i64>(k).await.unwrap() }
    };

    let req = SetRequest {
        ttl: Some(Duration::from_secs(100)),
        ..set(&k, "v")
    };
    store.set(&req).await.unwrap();
    let ms = pttl(&mut conn, k.clone()).await;
    assert!(
        (90_000..=100_000).contains(&ms),
        "PTTL {ms} after a 100 s TTL"
    );
    let got = store.get(&get(&k)).await.unwrap().unwrap();
    assert!(got.metadata.contains_key(TTL_EXPIRE_TIME));

    store.set(&set(&k, "v")).await.unwrap();
    assert_eq!(
        pttl(&mut conn, k.clone()).await,
        -1,
        "a write without TTL persists"
    );

    with_default.set(&set(&k, "v")).await.unwrap();
    let ms = pttl(&mut conn, k.clone()).await;
    assert!(
        (40_000..=50_000).contains(&ms),
        "PTTL {ms} with ttlInSeconds 50"
    );

    let mut req = set(&k, "v");
    req.metadata.insert(TTL_IN_SECONDS.into(), "-1".into());
    with_default.set(&req).await.unwrap();
    assert_eq!(
        pttl(&mut conn, k.clone()).await,
        -1,
        "-1 overrides the default"
    );

    let ops = [TransactionOperation::Upsert(SetRequest {
        ttl: Some(Duration::from_secs(30)),
        ..set(&k, "tx")
    })];
    store.transact(&ops).await.unwrap();
    let ms = pttl(&mut conn, k.clone()).await;
    assert!(
        (20_000..=30_000).contains(&ms),
        "PTTL {ms} after a transaction with TTL"
    );
    let _: () = conn.del(&k).await.unwrap();
}

/// A stale ETag on the last operation leaves the earlier ones unapplied, as seen from Redis.
#[tokio::test]
async fn transactions_are_all_or_nothing_on_the_redis_side() {
    let store = shared_state(&[]).await;
    let mut conn = raw(0).await;
    let (a, b, c) = (key("tx-a"), key("tx-b"), key("tx-c"));
    store.set(&set(&a, "a1")).await.unwrap();
    store.set(&set(&c, "c1")).await.unwrap();
    store.set(&set(&c, "c2")).await.unwrap();
    let ops = [
        TransactionOperation::Upsert(set(&a, "a2")),
        TransactionOperation::Upsert(set(&b, "b1")),
        TransactionOperation::Delete(DeleteRequest {
            key: a.clone(),
            ..DeleteRequest::default()
        }),
        TransactionOperation::Upsert(SetRequest {
            etag: Some("1".into()),
            ..set(&c, "c3")
        }),
    ];
    assert_eq!(store.transact(&ops).await, Err(StateError::EtagMismatch));
    let a_now: HashMap<String, String> = conn.hgetall(&a).await.unwrap();
    assert_eq!(
        (a_now["data"].as_str(), a_now["version"].as_str()),
        ("a1", "1")
    );
    assert!(!conn.exists::<_, bool>(&b).await.unwrap());
    let c_version: String = conn.hget(&c, "version").await.unwrap();
    assert_eq!(c_version, "2");

    // The ETag an earlier operation of the same transaction produces is the one a later
    // operation must name.
    let ops = [
        TransactionOperation::Upsert(set(&c, "c3")),
        TransactionOperation::Upsert(SetRequest {
            etag: Some("3".into()),
            ..set(&c, "c4")
        }),
    ];
    store.transact(&ops).await.unwrap();
    let c_now: HashMap<String, String> = conn.hgetall(&c).await.unwrap();
    assert_eq!(
        (c_now["data"].as_str(), c_now["version"].as_str()),
        ("c4", "4")
    );
    let _: () = conn.del(&[&a, &b, &c]).await.unwrap();
}

#[tokio::test]
async fn redis_db_selects_the_database() {
    let store = shared_state(&[("redisDB", "5")]).await;
    let k = key("db");
    store.set(&set(&k, "in five")).await.unwrap();
    let mut db5 = raw(5).await;
    let data: Vec<u8> = db5.hget(&k, "data").await.unwrap();
    assert_eq!(data, b"in five");
    assert!(!raw(0).await.exists::<_, bool>(&k).await.unwrap());
    let _: () = db5.del(&k).await.unwrap();

    let config = RedisConfigurationStore::create(init(&[
        ("redisHost", &shared_address()),
        ("redisDB", "5"),
    ]))
    .await
    .unwrap();
    let item = key("db-config");
    let mut updates = config
        .subscribe(std::slice::from_ref(&item), &HashMap::new())
        .await
        .unwrap();
    let _: () = db5.set(&item, "on||2").await.unwrap();
    let update = tokio::time::timeout(Duration::from_secs(10), updates.next())
        .await
        .expect("an update from database 5")
        .expect("an open stream");
    assert_eq!(
        (update[&item].value.as_str(), update[&item].version.as_str()),
        ("on", "2")
    );
    let _: () = db5.del(&item).await.unwrap();
}

/// Dropping an update stream closes its subscription on the server.
#[tokio::test]
async fn dropping_a_subscription_unsubscribes() {
    let config = RedisConfigurationStore::create(init(&[("redisHost", &shared_address())]))
        .await
        .unwrap();
    let watched = key("dropped");
    let channel = format!("__keyspace@0__:{watched}");
    let mut conn = raw(0).await;
    let subscribers = |conn: &mut MultiplexedConnection| {
        let mut conn = conn.clone();
        let channel = channel.clone();
        async move {
            let counts: Vec<(String, i64)> = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(&channel)
                .query_async(&mut conn)
                .await
                .unwrap();
            counts[0].1
        }
    };
    let updates = config
        .subscribe(std::slice::from_ref(&watched), &HashMap::new())
        .await
        .unwrap();
    assert_eq!(subscribers(&mut conn).await, 1);
    drop(updates);
    let deadline = Instant::now() + Duration::from_secs(5);
    while subscribers(&mut conn).await != 0 {
        assert!(
            Instant::now() < deadline,
            "the subscription outlived its stream"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `enableTLS: true` talks TLS to a private server with a self-signed certificate (as in
/// Dapr, the certificate is not verified).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enable_tls_connects_over_tls() {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(made.success(), "openssl could not make a certificate");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .args([
            "--save",
            "",
            "--appendonly",
            "no",
            "--tls-auth-clients",
            "no",
        ])
        .arg("--tls-cert-file")
        .arg(&cert)
        .arg("--tls-key-file")
        .arg(&key)
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "TLS redis-server did not start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let address = format!("127.0.0.1:{port}");
    let store = state_at(&address, &[("enableTLS", "true")]).await;
    let set = SetRequest {
        key: "tls-key".into(),
        value: "over-tls".into(),
        ..Default::default()
    };
    store.set(&set).await.unwrap();
    let got = store
        .get(&GetRequest {
            key: "tls-key".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(got.unwrap().data, "over-tls");
    // Without TLS the same server refuses to talk.
    let plain =
        RedisStateStore::create(init(&[("redisHost", &address), ("dialTimeout", "1s")])).await;
    assert!(plain.is_err(), "a plain connection to a TLS port must fail");
    let _ = server.kill();
    let _ = server.wait();
}
