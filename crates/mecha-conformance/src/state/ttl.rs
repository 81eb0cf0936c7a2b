//! Time to live, for stores declaring TTL.

use std::time::Duration;

use bytes::Bytes;
use mecha_core::component::Feature;
use mecha_core::state::{
    Concurrency, DeleteRequest, GetRequest, Query, SetRequest, StateStore, TTL_EXPIRE_TIME,
};
use tokio::time::{Instant, sleep};

use super::{Check, fresh_key, set_request};

/// The TTL given to expiring values.
const TTL: Duration = Duration::from_secs(1);
/// How long after its TTL a value may still be readable before the check fails.
const GRACE: Duration = Duration::from_secs(4);
const POLL: Duration = Duration::from_millis(100);

/// A value with a TTL MUST be readable at once, with `ttlExpireTime` metadata, and MUST NOT be
/// returned (by get, bulk_get or query) once the TTL has passed; afterwards the key MUST count
/// as absent for ETags and first-write. Writing a value again without a TTL MUST remove its
/// expiry.
pub async fn ttl_expiry(store: &dyn StateStore) {
    let c = Check::new("ttl_expiry");
    let prefix = format!("{}||", fresh_key("ttl"));
    let [expiring, renewed, forever] =
        ["expiring", "renewed", "forever"].map(|k| prefix.clone() + k);
    let with_ttl = |key: &str| SetRequest {
        ttl: Some(TTL),
        ..set_request(key, r#""ttl""#)
    };
    c.ok(store.set(&with_ttl(&expiring)).await, "set with a TTL");
    c.ok(store.set(&with_ttl(&renewed)).await, "set with a TTL");
    c.set(store, &renewed, r#""renewed""#).await;
    c.set(store, &forever, r#""forever""#).await;

    match c.get(store, &expiring).await {
        Some(r)
            if r.metadata
                .get(TTL_EXPIRE_TIME)
                .is_some_and(|t| !t.is_empty()) => {}
        Some(r) => c.fail(format!(
            "a value with a TTL has no {TTL_EXPIRE_TIME}: {:?}",
            r.metadata
        )),
        None => c.fail("a value with a TTL of 1s was not readable at once"),
    }
    for key in [&renewed, &forever] {
        if let Some(r) = c
            .get(store, key)
            .await
            .filter(|r| r.metadata.contains_key(TTL_EXPIRE_TIME))
        {
            c.fail(format!(
                "{key}, written without a TTL, has {TTL_EXPIRE_TIME}: {:?}",
                r.metadata
            ));
        }
    }
    let etags = store.features().contains(&Feature::Etag);
    let old_etag = if etags {
        Some(c.etag(store, &expiring).await)
    } else {
        None
    };

    let deadline = Instant::now() + TTL + GRACE;
    while c.get(store, &expiring).await.is_some() {
        if Instant::now() > deadline {
            c.fail(format!(
                "a value with a TTL of {TTL:?} was still readable after {:?}",
                TTL + GRACE
            ));
        }
        sleep(POLL).await;
    }

    c.eq(
        c.data(store, &renewed).await,
        Bytes::from(r#""renewed""#),
        "a value rewritten without TTL",
    );
    let reqs = [&expiring, &renewed].map(|k| GetRequest {
        key: k.clone(),
        ..GetRequest::default()
    });
    let items = c.ok(store.bulk_get(&reqs).await, "bulk_get after expiry");
    let found: Vec<bool> = items
        .iter()
        .map(|i| matches!(i.result, Ok(Some(_))))
        .collect();
    c.eq(
        found,
        vec![false, true],
        "bulk_get of [expired, renewed] found",
    );
    if store.features().contains(&Feature::QueryApi) {
        let query = Query {
            key_prefix: prefix.clone(),
            ..Query::default()
        };
        let res = c.ok(store.query(&query).await, "query after expiry");
        let mut keys: Vec<String> = res.results.into_iter().map(|r| r.key).collect();
        keys.sort();
        c.eq(
            keys,
            vec![forever.clone(), renewed.clone()],
            "query keys after expiry",
        );
    }
    if let Some(etag) = old_etag {
        let req = SetRequest {
            etag: Some(etag.clone()),
            ..set_request(&expiring, "x")
        };
        c.mismatch(
            store.set(&req).await,
            "set with the etag of an expired value",
        );
        let req = DeleteRequest {
            key: expiring.clone(),
            etag: Some(etag),
            ..DeleteRequest::default()
        };
        c.mismatch(
            store.delete(&req).await,
            "delete with the etag of an expired value",
        );
    }
    let req = SetRequest {
        concurrency: Concurrency::FirstWrite,
        ..set_request(&expiring, r#""again""#)
    };
    c.ok(store.set(&req).await, "first-write of an expired key");
    c.eq(
        c.data(store, &expiring).await,
        Bytes::from(r#""again""#),
        "value after first-write",
    );
}
