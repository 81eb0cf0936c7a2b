//! The configuration suite: what every [`ConfigurationStore`] MUST do.
//!
//! * `get` returns the requested keys that exist, with their values, and leaves absent keys
//!   out; an empty key list returns every key (the suite only checks that its own keys are
//!   among them, as the server may hold others).
//! * `subscribe` returns once the store is watching; every later change of a watched key is
//!   yielded, a deleted key as an item with an empty value; changes of other keys are not.
//!
//! The suite writes values through `writer`, which changes the backing server directly, so
//! that changes made outside Mecha are what the store must notice.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use mecha_core::configuration::{ConfigurationStore, ConfigurationUpdates};
use mecha_core::state::RequestMetadata;

const CHECK_TIMEOUT: Duration = Duration::from_secs(60);
const UPDATE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs every check; `writer(key, Some(value))` sets a key in the backing server and
/// `writer(key, None)` deletes it. Panics naming the first failing check.
pub async fn run<F, Fut, W, WFut>(factory: F, writer: W)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn ConfigurationStore>>,
    W: Fn(String, Option<String>) -> WFut,
    WFut: Future<Output = ()>,
{
    macro_rules! checks {
        ($($check:ident),+ $(,)?) => {$(
            let store = factory().await;
            if tokio::time::timeout(CHECK_TIMEOUT, $check(&*store, &writer)).await.is_err() {
                panic!("configuration conformance check `{}` timed out", stringify!($check));
            }
        )+};
    }
    checks!(get_keys, get_all, subscribe_updates, subscribe_deletes);
}

fn key(tag: &str) -> String {
    format!("conformance-{tag}-{}", uuid::Uuid::new_v4().simple())
}

fn no_metadata() -> RequestMetadata {
    RequestMetadata::new()
}

/// Reads given keys; absent keys are left out.
pub async fn get_keys<W, WFut>(s: &dyn ConfigurationStore, writer: &W)
where
    W: Fn(String, Option<String>) -> WFut,
    WFut: Future<Output = ()>,
{
    let (k1, k2, absent) = (key("get1"), key("get2"), key("absent"));
    writer(k1.clone(), Some("v1".into())).await;
    writer(k2.clone(), Some("v2".into())).await;
    let got = s
        .get(&[k1.clone(), k2.clone(), absent.clone()], &no_metadata())
        .await
        .unwrap_or_else(|e| panic!("check `get_keys`: get failed: {e}"));
    assert_eq!(
        got.get(&k1).map(|i| i.value.as_str()),
        Some("v1"),
        "check `get_keys`"
    );
    assert_eq!(
        got.get(&k2).map(|i| i.value.as_str()),
        Some("v2"),
        "check `get_keys`"
    );
    assert!(
        !got.contains_key(&absent),
        "check `get_keys`: absent keys are left out"
    );
    writer(k1, None).await;
    writer(k2, None).await;
}

/// An empty key list reads every key.
pub async fn get_all<W, WFut>(s: &dyn ConfigurationStore, writer: &W)
where
    W: Fn(String, Option<String>) -> WFut,
    WFut: Future<Output = ()>,
{
    let k = key("all");
    writer(k.clone(), Some("x".into())).await;
    let got = s
        .get(&[], &no_metadata())
        .await
        .unwrap_or_else(|e| panic!("check `get_all`: get failed: {e}"));
    assert_eq!(
        got.get(&k).map(|i| i.value.as_str()),
        Some("x"),
        "check `get_all`"
    );
    writer(k, None).await;
}

async fn next_for(updates: &mut ConfigurationUpdates, key: &str, check: &str) -> String {
    loop {
        let update = tokio::time::timeout(UPDATE_TIMEOUT, updates.next())
            .await
            .unwrap_or_else(|_| {
                panic!("check `{check}`: no update for {key} within {UPDATE_TIMEOUT:?}")
            })
            .unwrap_or_else(|| panic!("check `{check}`: the update stream ended"));
        for (k, item) in update {
            assert!(
                k == key || !k.starts_with("conformance-sub"),
                "check `{check}`: an update for unwatched key {k}"
            );
            if k == key {
                return item.value;
            }
        }
    }
}

/// Changes of watched keys are yielded; others are not.
pub async fn subscribe_updates<W, WFut>(s: &dyn ConfigurationStore, writer: &W)
where
    W: Fn(String, Option<String>) -> WFut,
    WFut: Future<Output = ()>,
{
    let (watched, other) = (key("sub-watched"), key("sub-other"));
    let mut updates = s
        .subscribe(std::slice::from_ref(&watched), &no_metadata())
        .await
        .unwrap_or_else(|e| panic!("check `subscribe_updates`: subscribe failed: {e}"));
    writer(watched.clone(), Some("a".into())).await;
    assert_eq!(
        next_for(&mut updates, &watched, "subscribe_updates").await,
        "a"
    );
    writer(other.clone(), Some("ignored".into())).await;
    writer(watched.clone(), Some("b".into())).await;
    assert_eq!(
        next_for(&mut updates, &watched, "subscribe_updates").await,
        "b"
    );
    drop(updates);
    writer(watched, None).await;
    writer(other, None).await;
}

/// A deleted watched key is yielded with an empty value.
pub async fn subscribe_deletes<W, WFut>(s: &dyn ConfigurationStore, writer: &W)
where
    W: Fn(String, Option<String>) -> WFut,
    WFut: Future<Output = ()>,
{
    let k = key("sub-deleted");
    writer(k.clone(), Some("here".into())).await;
    let mut updates = s
        .subscribe(std::slice::from_ref(&k), &no_metadata())
        .await
        .unwrap_or_else(|e| panic!("check `subscribe_deletes`: subscribe failed: {e}"));
    writer(k.clone(), None).await;
    assert_eq!(
        next_for(&mut updates, &k, "subscribe_deletes").await,
        "",
        "check `subscribe_deletes`"
    );
}
