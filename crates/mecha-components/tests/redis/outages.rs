//! Checks on private `redis-server` processes: authentication, an unreachable server, an
//! outage with a restart, and a server that stops answering.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mecha_components::configuration::redis::RedisConfigurationStore;
use mecha_components::lock::redis::RedisLockStore;
use mecha_components::state::redis::RedisStateStore;
use mecha_core::component::ComponentError;
use mecha_core::lock::UnlockStatus;
use mecha_core::state::{StateError, TransactionOperation};
use redis::AsyncCommands;

use super::private_server::PrivateRedis;
use super::{get, init, set, state_at};

/// How soon an operation must fail while its server is down.
const OUTAGE_ANSWER: Duration = Duration::from_secs(5);

#[tokio::test]
async fn password_and_acl_user() {
    let server = PrivateRedis::start(&["--requirepass", "s3cret"]).await;
    let address = server.address();
    let refused = RedisStateStore::create(init(&[("redisHost", &address)])).await;
    assert!(
        matches!(refused, Err(ComponentError::Init(_))),
        "no password: {:?}",
        refused.err().map(|e| e.to_string())
    );
    let wrong =
        RedisStateStore::create(init(&[("redisHost", &address), ("redisPassword", "nope")])).await;
    assert!(wrong.is_err(), "a wrong password is refused");

    let store = state_at(&address, &[("redisPassword", "s3cret")]).await;
    store.set(&set("k", "v")).await.unwrap();
    assert_eq!(
        store.get(&get("k")).await.unwrap().unwrap().data.as_ref(),
        b"v"
    );

    let admin = redis::Client::open(format!("redis://:s3cret@{address}/")).unwrap();
    let mut admin = admin.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "alice", "on", ">pw", "~*", "+@all"])
        .query_async(&mut admin)
        .await
        .unwrap();
    let alice = state_at(
        &address,
        &[("redisUsername", "alice"), ("redisPassword", "pw")],
    )
    .await;
    assert_eq!(
        alice.get(&get("k")).await.unwrap().unwrap().data.as_ref(),
        b"v"
    );
    let lock = RedisLockStore::create(init(&[
        ("redisHost", &address),
        ("redisUsername", "alice"),
        ("redisPassword", "pw"),
    ]))
    .await
    .unwrap();
    assert!(
        lock.try_lock("r", "me", Duration::from_secs(10))
            .await
            .unwrap()
    );
    let not_alice = RedisStateStore::create(init(&[
        ("redisHost", &address),
        ("redisUsername", "alice"),
        ("redisPassword", "s3cret"),
    ]))
    .await;
    assert!(
        not_alice.is_err(),
        "alice's password is not the default user's"
    );
}

#[tokio::test]
async fn unreachable_server_fails_creation_quickly() {
    let server = PrivateRedis::start(&[]).await;
    let address = server.address();
    drop(server);
    let started = Instant::now();
    let res =
        RedisStateStore::create(init(&[("redisHost", &address), ("dialTimeout", "1s")])).await;
    assert!(matches!(res, Err(ComponentError::Init(_))));
    assert!(
        started.elapsed() < OUTAGE_ANSWER,
        "took {:?}",
        started.elapsed()
    );
    let res =
        RedisStateStore::create(init(&[("redisHost", "h:1"), ("redisType", "cluster")])).await;
    assert!(matches!(
        res,
        Err(ComponentError::InvalidField {
            field: "redisType",
            ..
        })
    ));
}

/// Kill the server: every operation fails quickly with a readable error; restart it on the
/// same port: the same component objects work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_and_recovery() {
    let mut server = PrivateRedis::start(&[]).await;
    let address = server.address();
    let state = state_at(&address, &[]).await;
    let lock = RedisLockStore::create(init(&[("redisHost", &address)]))
        .await
        .unwrap();
    let config = RedisConfigurationStore::create(init(&[("redisHost", &address)]))
        .await
        .unwrap();
    state.set(&set("k", "before")).await.unwrap();
    let mut updates = config
        .subscribe(&["watched".to_owned()], &HashMap::new())
        .await
        .unwrap();

    server.kill();
    for round in 0..3 {
        let started = Instant::now();
        match state.get(&get("k")).await {
            Err(StateError::Backend(msg)) => assert!(msg.contains(&address), "{msg}"),
            other => panic!("get during the outage (round {round}): {other:?}"),
        }
        assert!(matches!(
            state.set(&set("k", "during")).await,
            Err(StateError::Backend(_))
        ));
        assert!(matches!(
            state
                .transact(&[TransactionOperation::Upsert(set("k", "tx"))])
                .await,
            Err(StateError::Backend(_))
        ));
        assert!(matches!(
            state.bulk_get(&[get("k")]).await,
            Err(StateError::Backend(_))
        ));
        assert!(
            lock.try_lock("r", "me", Duration::from_secs(5))
                .await
                .is_err()
        );
        assert!(config.get(&[], &HashMap::new()).await.is_err());
        assert!(
            started.elapsed() < OUTAGE_ANSWER,
            "round {round} of failures took {:?}",
            started.elapsed()
        );
    }

    server.restart().await;
    // The server lost everything (no persistence); the same objects work at once.
    assert_eq!(state.get(&get("k")).await.unwrap(), None);
    state.set(&set("k", "after")).await.unwrap();
    assert_eq!(
        state.get(&get("k")).await.unwrap().unwrap().data.as_ref(),
        b"after"
    );
    assert!(
        lock.try_lock("r", "me", Duration::from_secs(5))
            .await
            .unwrap()
    );
    assert_eq!(lock.unlock("r", "me").await.unwrap(), UnlockStatus::Success);

    // The subscription reconnects by itself, re-enables notifications and sees new changes.
    let mut conn = redis::Client::open(format!("redis://{address}/"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let _: () = conn.set("watched", "back||9").await.unwrap();
        let next = tokio::time::timeout(Duration::from_millis(500), updates.next()).await;
        if let Ok(Some(update)) = next
            && update.get("watched").is_some_and(|i| i.value == "back")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the subscription did not recover"
        );
    }
}

/// A server that accepts connections but never answers makes calls fail after `readTimeout`
/// rather than hang; once it answers again, the same store works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresponsive_server_times_out() {
    let server = PrivateRedis::start(&[]).await;
    let state = state_at(&server.address(), &[("readTimeout", "1s")]).await;
    state.set(&set("k", "v")).await.unwrap();
    server.signal("STOP");
    for _ in 0..2 {
        let started = Instant::now();
        match state.get(&get("k")).await {
            Err(StateError::Backend(msg)) => assert!(!msg.is_empty()),
            other => panic!("get from a stopped server: {other:?}"),
        }
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(3),
            "a 1 s read timeout took {took:?}"
        );
    }
    server.signal("CONT");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match state.get(&get("k")).await {
            Ok(Some(r)) if r.data.as_ref() == b"v" => break,
            other => assert!(Instant::now() < deadline, "after SIGCONT: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
