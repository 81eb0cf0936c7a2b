//! Optimistic concurrency: ETags and first-write, for stores declaring ETAG.

use bytes::Bytes;
use futures::future::join_all;
use mecha_core::state::{Concurrency, DeleteRequest, SetRequest, StateError, StateStore};

use super::{Check, fresh_key, set_request};

/// Writers racing on one ETag.
const RACERS: usize = 10;

/// A read MUST return an ETag, and every successful write MUST change it.
pub async fn etag_changes_on_every_write(store: &dyn StateStore) {
    let c = Check::new("etag_changes_on_every_write");
    let key = fresh_key("etag-changes");
    let mut seen = Vec::new();
    for value in ["one", "two", "three"] {
        c.set(store, &key, value).await;
        let etag = c.etag(store, &key).await;
        if seen.contains(&etag) {
            c.fail(format!(
                "write of {value:?} kept the etag {etag:?} of an earlier write"
            ));
        }
        seen.push(etag);
    }
    let etag = seen.last().cloned();
    let req = SetRequest {
        etag: etag.clone(),
        ..set_request(&key, "four")
    };
    c.ok(store.set(&req).await, "set with the current etag");
    let now = c.etag(store, &key).await;
    if Some(&now) == etag.as_ref() {
        c.fail("a write with an etag kept the same etag");
    }
}

/// A write with an ETag the value no longer has MUST fail with a mismatch and change nothing.
pub async fn set_with_stale_etag(store: &dyn StateStore) {
    let c = Check::new("set_with_stale_etag");
    let key = fresh_key("stale-set");
    let stale = c.stale_etag(store, &key).await;
    let current = c.etag(store, &key).await;
    let req = SetRequest {
        etag: Some(stale),
        ..set_request(&key, "third")
    };
    c.mismatch(store.set(&req).await, "set with a stale etag");
    c.eq(
        c.data(store, &key).await,
        Bytes::from("second"),
        "value after the refused write",
    );
    c.eq(
        c.etag(store, &key).await,
        current,
        "etag after the refused write",
    );
}

/// A write with the value's current ETag MUST succeed.
pub async fn set_with_matching_etag(store: &dyn StateStore) {
    let c = Check::new("set_with_matching_etag");
    let key = fresh_key("matching-set");
    c.set(store, &key, "first").await;
    let etag = c.etag(store, &key).await;
    for concurrency in [Concurrency::FirstWrite, Concurrency::LastWrite] {
        let etag = c.etag(store, &key).await;
        let req = SetRequest {
            etag: Some(etag),
            concurrency,
            ..set_request(&key, "next")
        };
        c.ok(
            store.set(&req).await,
            &format!("set with the current etag ({concurrency:?})"),
        );
    }
    let req = SetRequest {
        etag: Some(etag),
        ..set_request(&key, "late")
    };
    c.mismatch(store.set(&req).await, "set with the etag of two writes ago");
    c.eq(
        c.data(store, &key).await,
        Bytes::from("next"),
        "value after the writes",
    );
}

/// A write with an ETag to an absent key MUST fail with a mismatch and not create it.
pub async fn set_with_etag_on_absent_key(store: &dyn StateStore) {
    let c = Check::new("set_with_etag_on_absent_key");
    let (donor, key) = (fresh_key("etag-donor"), fresh_key("absent"));
    // An ETag this store produced, so that only its absence can make it fail.
    c.set(store, &donor, "donor").await;
    let etag = c.etag(store, &donor).await;
    let req = SetRequest {
        etag: Some(etag),
        ..set_request(&key, "value")
    };
    c.mismatch(store.set(&req).await, "set with an etag on an absent key");
    c.absent(store, &key, "after the refused write").await;
}

/// A delete with a stale ETag MUST fail with a mismatch and keep the value.
pub async fn delete_with_stale_etag(store: &dyn StateStore) {
    let c = Check::new("delete_with_stale_etag");
    let key = fresh_key("stale-delete");
    let stale = c.stale_etag(store, &key).await;
    let req = DeleteRequest {
        key: key.clone(),
        etag: Some(stale),
        ..DeleteRequest::default()
    };
    c.mismatch(store.delete(&req).await, "delete with a stale etag");
    c.eq(
        c.data(store, &key).await,
        Bytes::from("second"),
        "value after the refused delete",
    );
}

/// A delete with the current ETag MUST remove the value.
pub async fn delete_with_matching_etag(store: &dyn StateStore) {
    let c = Check::new("delete_with_matching_etag");
    let key = fresh_key("matching-delete");
    c.set(store, &key, "doomed").await;
    let etag = c.etag(store, &key).await;
    let req = DeleteRequest {
        key: key.clone(),
        etag: Some(etag),
        ..DeleteRequest::default()
    };
    c.ok(store.delete(&req).await, "delete with the current etag");
    c.absent(store, &key, "after the delete").await;
}

/// A delete with an ETag of an absent key MUST fail with a mismatch.
pub async fn delete_with_etag_on_absent_key(store: &dyn StateStore) {
    let c = Check::new("delete_with_etag_on_absent_key");
    let key = fresh_key("absent-delete");
    c.set(store, &key, "soon gone").await;
    let etag = c.etag(store, &key).await;
    let plain = DeleteRequest {
        key: key.clone(),
        ..DeleteRequest::default()
    };
    c.ok(store.delete(&plain).await, "delete without an etag");
    let req = DeleteRequest {
        etag: Some(etag),
        ..plain
    };
    c.mismatch(
        store.delete(&req).await,
        "delete with an etag of a deleted key",
    );
}

/// With first-write and no ETag, a write MUST create an absent key and MUST NOT replace a
/// present one.
pub async fn first_write(store: &dyn StateStore) {
    let c = Check::new("first_write");
    let key = fresh_key("first-write");
    let first = |value: &'static str| SetRequest {
        concurrency: Concurrency::FirstWrite,
        ..set_request(&key, value)
    };
    c.ok(
        store.set(&first("first")).await,
        "first-write of an absent key",
    );
    c.mismatch(
        store.set(&first("second")).await,
        "first-write of a present key",
    );
    c.eq(
        c.data(store, &key).await,
        Bytes::from("first"),
        "value after the refused write",
    );
    let stale = c.etag(store, &key).await;
    c.set(store, &key, "plain").await;
    let req = SetRequest {
        etag: Some(stale),
        ..first("third")
    };
    c.mismatch(store.set(&req).await, "first-write with a stale etag");
    c.eq(
        c.data(store, &key).await,
        Bytes::from("plain"),
        "value after the refused write",
    );
}

/// Of writers racing with the same current ETag, exactly one MUST win; the others MUST fail
/// with a mismatch.
pub async fn concurrent_etag_writes(store: &dyn StateStore) {
    let c = Check::new("concurrent_etag_writes");
    let key = fresh_key("race");
    c.set(store, &key, "start").await;
    let etag = c.etag(store, &key).await;
    let reqs: Vec<SetRequest> = (0..RACERS)
        .map(|i| SetRequest {
            etag: Some(etag.clone()),
            ..set_request(&key, format!("racer {i}"))
        })
        .collect();
    let results = join_all(reqs.iter().map(|r| store.set(r))).await;
    let mut winners = Vec::new();
    for (i, result) in results.into_iter().enumerate() {
        match result {
            Ok(()) => winners.push(format!("racer {i}")),
            Err(StateError::EtagMismatch) => {}
            Err(e) => c.fail(format!("racer {i}: got {e:?}, want Ok or EtagMismatch")),
        }
    }
    if winners.len() != 1 {
        c.fail(format!(
            "{} of {RACERS} writers won ({winners:?}); want exactly one",
            winners.len()
        ));
    }
    let data = c.data(store, &key).await;
    c.eq(data, Bytes::from(winners.remove(0)), "value after the race");
}
