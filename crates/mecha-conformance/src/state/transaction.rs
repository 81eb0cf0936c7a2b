//! Transactions, for stores declaring TRANSACTIONAL.

use bytes::Bytes;
use mecha_core::component::Feature;
use mecha_core::state::{DeleteRequest, SetRequest, StateError, StateStore, TransactionOperation};

use super::{Check, fresh_key, set_request};

fn upsert(key: &str, value: &'static str) -> TransactionOperation {
    TransactionOperation::Upsert(set_request(key, value))
}

fn upsert_if(key: &str, value: &'static str, etag: &str) -> TransactionOperation {
    TransactionOperation::Upsert(SetRequest {
        etag: Some(etag.to_owned()),
        ..set_request(key, value)
    })
}

fn delete(key: &str) -> TransactionOperation {
    TransactionOperation::Delete(DeleteRequest {
        key: key.to_owned(),
        ..DeleteRequest::default()
    })
}

fn delete_if(key: &str, etag: &str) -> TransactionOperation {
    TransactionOperation::Delete(DeleteRequest {
        key: key.to_owned(),
        etag: Some(etag.to_owned()),
        ..DeleteRequest::default()
    })
}

/// Operations MUST apply in order, each seeing the ones before it: an upsert then a delete
/// of one key leaves it absent, a delete then an upsert leaves it present, and an ETag
/// taken before the transaction matches (if the store declares ETAG).
pub async fn transaction_order(store: &dyn StateStore) {
    let c = Check::new("transaction_order");
    let [gone, back, twice, guarded, absent] =
        ["gone", "back", "twice", "guarded", "absent"].map(|t| fresh_key(&format!("tx-{t}")));
    let etags = store.features().contains(&Feature::Etag);
    c.set(store, &back, "old").await;
    c.set(store, &guarded, "old").await;
    let mut ops = vec![
        upsert(&gone, "brief"),
        delete(&gone),
        delete(&back),
        upsert(&back, "new"),
        upsert(&twice, "first"),
        upsert(&twice, "second"),
        delete(&absent),
    ];
    if etags {
        ops.push(upsert_if(&guarded, "new", &c.etag(store, &guarded).await));
    }
    c.ok(store.transact(&ops).await, "transaction");
    c.absent(store, &gone, "upsert then delete").await;
    c.eq(
        c.data(store, &back).await,
        Bytes::from("new"),
        "delete then upsert",
    );
    c.eq(
        c.data(store, &twice).await,
        Bytes::from("second"),
        "two upserts",
    );
    c.absent(store, &absent, "delete of an absent key").await;
    if etags {
        c.eq(
            c.data(store, &guarded).await,
            Bytes::from("new"),
            "upsert with the current etag",
        );
    }
}

/// A transaction with one failing operation MUST apply none (needs ETAG to make one fail): a stale ETag on its last
/// operation leaves the earlier upserts and deletes unapplied, and the error is the mismatch.
pub async fn transaction_all_or_nothing(store: &dyn StateStore) {
    let c = Check::new("transaction_all_or_nothing");
    let [kept, created, deleted, guarded] =
        ["kept", "created", "deleted", "guarded"].map(|t| fresh_key(&format!("tx-{t}")));
    c.set(store, &kept, "old").await;
    let kept_etag = c.etag(store, &kept).await;
    c.set(store, &deleted, "still here").await;
    let stale = c.stale_etag(store, &guarded).await;

    let ops = [
        upsert(&kept, "new"),
        upsert(&created, "new"),
        delete(&deleted),
        upsert_if(&guarded, "new", &stale),
    ];
    match store.transact(&ops).await {
        Err(StateError::EtagMismatch) => {}
        other => c.fail(format!(
            "transaction ending in a stale upsert: got {other:?}"
        )),
    }
    let ops = [delete(&kept), delete_if(&guarded, &stale)];
    match store.transact(&ops).await {
        Err(StateError::EtagMismatch) => {}
        other => c.fail(format!(
            "transaction ending in a stale delete: got {other:?}"
        )),
    }

    c.eq(
        c.data(store, &kept).await,
        Bytes::from("old"),
        "an upserted key after rollback",
    );
    c.eq(
        c.etag(store, &kept).await,
        kept_etag,
        "the etag of that key after rollback",
    );
    c.absent(store, &created, "a created key after rollback")
        .await;
    c.eq(
        c.data(store, &deleted).await,
        Bytes::from("still here"),
        "a deleted key after rollback",
    );
    c.eq(
        c.data(store, &guarded).await,
        Bytes::from("second"),
        "the guarded key after rollback",
    );
}
