//! Reads, writes and deletes without ETags: every store MUST pass these.

use bytes::Bytes;
use mecha_core::state::{DeleteRequest, GetRequest, StateStore};

use super::{Check, fresh_key};

/// Every kind of value MUST come back byte for byte: JSON of each type, non-UTF-8 bytes and
/// the empty value (which is present, not absent).
pub async fn set_and_get_value_types(store: &dyn StateStore) {
    let c = Check::new("set_and_get_value_types");
    let values: [(&str, &'static [u8]); 8] = [
        (
            "a JSON object",
            br#"{"name":"mecha","n":1,"nested":{"list":[1,2]}}"#,
        ),
        ("a JSON array", br#"[1,"two",{"three":3.5},null]"#),
        ("a JSON string with quotes", br#""she said \"hi\"""#),
        ("a JSON number", b"-12.5e3"),
        ("a JSON bool", b"true"),
        ("JSON null", b"null"),
        ("non-UTF-8 bytes", &[0xff, 0xfe, 0x00, 0x80, 0xc3, 0x28]),
        ("empty bytes", b""),
    ];
    for (what, value) in values {
        let key = fresh_key("value");
        c.set(store, &key, value).await;
        let Some(got) = c.get(store, &key).await else {
            c.fail(format!("{what}: get returned nothing after set"));
        };
        c.eq(got.data, Bytes::from_static(value), what);
    }
}

/// A key never written MUST read as absent, not as an error.
pub async fn get_absent_key(store: &dyn StateStore) {
    let c = Check::new("get_absent_key");
    c.absent(store, &fresh_key("absent"), "get of a key never written")
        .await;
}

/// A second write MUST replace the first.
pub async fn overwrite(store: &dyn StateStore) {
    let c = Check::new("overwrite");
    let key = fresh_key("overwrite");
    c.set(store, &key, "first").await;
    c.set(store, &key, "second").await;
    c.eq(
        c.data(store, &key).await,
        Bytes::from("second"),
        "value after the second write",
    );
}

/// A deleted key MUST read as absent; other keys MUST stay.
pub async fn delete(store: &dyn StateStore) {
    let c = Check::new("delete");
    let (key, other) = (fresh_key("delete"), fresh_key("delete-other"));
    c.set(store, &key, "doomed").await;
    c.set(store, &other, "kept").await;
    let req = DeleteRequest {
        key: key.clone(),
        ..DeleteRequest::default()
    };
    c.ok(store.delete(&req).await, "delete of a present key");
    c.absent(store, &key, "after delete").await;
    c.eq(
        c.data(store, &other).await,
        Bytes::from("kept"),
        "another key after delete",
    );
}

/// Deleting a key that is absent, without an ETag, MUST succeed.
pub async fn delete_absent_key(store: &dyn StateStore) {
    let c = Check::new("delete_absent_key");
    let req = DeleteRequest {
        key: fresh_key("absent"),
        ..DeleteRequest::default()
    };
    c.ok(store.delete(&req).await, "delete of an absent key");
    c.ok(
        store.delete(&req).await,
        "second delete of the same absent key",
    );
}

/// A bulk read MUST return one item per requested key, in request order, with the value of
/// each present key and `None` for each absent one.
pub async fn bulk_get(store: &dyn StateStore) {
    let c = Check::new("bulk_get");
    let (a, b, missing) = (
        fresh_key("bulk-a"),
        fresh_key("bulk-b"),
        fresh_key("bulk-missing"),
    );
    c.set(store, &a, "value a").await;
    c.set(store, &b, r#"{"b":true}"#).await;
    let order = [b.clone(), missing.clone(), a.clone()];
    let reqs: Vec<GetRequest> = order
        .iter()
        .map(|k| GetRequest {
            key: k.clone(),
            ..GetRequest::default()
        })
        .collect();
    let items = c.ok(store.bulk_get(&reqs).await, "bulk_get");
    let keys: Vec<&str> = items.iter().map(|i| i.key.as_str()).collect();
    c.eq(
        keys,
        order.iter().map(String::as_str).collect(),
        "keys of the bulk_get items",
    );
    let want: [Option<&'static [u8]>; 3] = [Some(br#"{"b":true}"#), None, Some(b"value a")];
    for (item, want) in items.iter().zip(want) {
        match &item.result {
            Ok(got) => c.eq(
                got.as_ref().map(|r| r.data.clone()),
                want.map(Bytes::from_static),
                &format!("bulk_get value of {}", item.key),
            ),
            Err(e) => c.fail(format!("bulk_get item {}: unexpected error {e}", item.key)),
        }
    }
}
