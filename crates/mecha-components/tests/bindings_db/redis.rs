//! `bindings.redis` on the shared server.

use std::sync::Arc;

use mecha_components::bindings::redis::RedisBinding;
use mecha_core::bindings::{BindingError, OutputBinding};
use redis::AsyncCommands;

use crate::{call, fresh, init, output};

fn address() -> String {
    let raw = std::env::var("MECHA_TEST_REDIS_URL").unwrap_or_else(|_| "127.0.0.1:6379".into());
    raw.trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned()
}

async fn binding() -> Arc<dyn OutputBinding> {
    output(
        RedisBinding::create(init(&[("redisHost", &address())]))
            .await
            .unwrap(),
    )
}

async fn raw() -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://{}", address()))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test]
async fn create_get_delete_store_plain_strings() {
    let b = binding().await;
    let key = fresh("mecha-binding");
    let data = b"\x00binary \xff payload";
    let created = call(&*b, "create", data, &[("key", &key)]).await.unwrap();
    assert!(created.data.is_none());
    // A plain Redis string, readable by anyone.
    let stored: Vec<u8> = raw().await.get(&key).await.unwrap();
    assert_eq!(stored, data);
    let got = call(&*b, "get", b"", &[("key", &key)]).await.unwrap();
    assert_eq!(got.data.as_deref(), Some(&data[..]));
    call(&*b, "delete", b"", &[("key", &key)]).await.unwrap();
    let gone = call(&*b, "get", b"", &[("key", &key)]).await.unwrap();
    assert!(gone.data.is_none(), "an absent key answers no data");
    // Deleting an absent key is fine.
    call(&*b, "delete", b"", &[("key", &key)]).await.unwrap();
}

#[tokio::test]
async fn get_with_delete_removes_the_key() {
    let b = binding().await;
    let key = fresh("mecha-binding");
    call(&*b, "create", b"once", &[("key", &key)])
        .await
        .unwrap();
    let got = call(&*b, "get", b"", &[("key", &key), ("delete", "true")])
        .await
        .unwrap();
    assert_eq!(got.data.as_deref(), Some(&b"once"[..]));
    let gone = call(&*b, "get", b"", &[("key", &key)]).await.unwrap();
    assert!(gone.data.is_none());
}

#[tokio::test]
async fn ttl_and_increment() {
    let b = binding().await;
    let mut conn = raw().await;
    let key = fresh("mecha-binding");
    call(
        &*b,
        "create",
        b"v",
        &[("key", &key), ("ttlInSeconds", "100")],
    )
    .await
    .unwrap();
    let ttl: i64 = conn.ttl(&key).await.unwrap();
    assert!((90..=100).contains(&ttl), "ttl {ttl}");
    // Without ttlInSeconds a write keeps no expiry.
    call(&*b, "create", b"v", &[("key", &key)]).await.unwrap();
    assert_eq!(conn.ttl::<_, i64>(&key).await.unwrap(), -1);

    let counter = fresh("mecha-counter");
    for _ in 0..3 {
        let r = call(&*b, "increment", b"", &[("key", &counter)])
            .await
            .unwrap();
        assert!(r.data.is_none(), "increment answers nothing, as Dapr's");
    }
    call(
        &*b,
        "increment",
        b"",
        &[("key", &counter), ("ttlInSeconds", "50")],
    )
    .await
    .unwrap();
    let value = call(&*b, "get", b"", &[("key", &counter)]).await.unwrap();
    assert_eq!(value.data.as_deref(), Some(&b"4"[..]));
    let ttl: i64 = conn.ttl(&counter).await.unwrap();
    assert!((40..=50).contains(&ttl), "ttl {ttl}");
    let _: () = conn.del(&[&key, &counter]).await.unwrap();
}

#[tokio::test]
async fn bad_requests() {
    let b = binding().await;
    for op in ["create", "get", "delete", "increment"] {
        let err = call(&*b, op, b"x", &[]).await.unwrap_err();
        assert!(
            matches!(err, BindingError::BadRequest(ref m) if m.contains("key")),
            "{op}: {err:?}"
        );
    }
    let key = fresh("mecha-binding");
    for ttl in ["abc", "0", "-5"] {
        let err = call(&*b, "create", b"x", &[("key", &key), ("ttlInSeconds", ttl)])
            .await
            .unwrap_err();
        assert!(matches!(err, BindingError::BadRequest(_)), "{ttl}: {err:?}");
    }
    let err = call(&*b, "list", b"", &[("key", &key)]).await.unwrap_err();
    match err {
        BindingError::UnsupportedOperation {
            operation,
            supported,
        } => {
            assert_eq!(operation, "list");
            assert_eq!(supported, ["create", "delete", "get", "increment"]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(b.operations(), ["create", "delete", "get", "increment"]);
}

#[tokio::test]
async fn unreachable_server_fails_creation() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = std::time::Instant::now();
    let r = RedisBinding::create(init(&[
        ("redisHost", &format!("127.0.0.1:{port}")),
        ("dialTimeout", "1s"),
    ]))
    .await;
    assert!(r.is_err());
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
}
