use crate::resiliency::Resiliency;
use std::collections::HashMap;

use mecha_components::state::in_memory::InMemoryStateStore;
use mecha_core::component::ComponentInit;
use mecha_core::state::GetRequest;

use super::*;
use crate::components::ComponentInfo;

async fn loaded(name: &str, key_prefix: Option<&str>) -> LoadedStateStore {
    let mut md = HashMap::new();
    if let Some(p) = key_prefix {
        md.insert("keyPrefix".to_owned(), p.to_owned());
    }
    let metadata = mecha_core::Metadata::new(md);
    let init = ComponentInit {
        name: name.into(),
        metadata: metadata.clone(),
        app_id: "app".into(),
    };
    LoadedStateStore {
        info: ComponentInfo {
            name: name.into(),
            component_type: "state.in-memory".into(),
            version: "v1".into(),
            capabilities: vec![],
        },
        component: InMemoryStateStore::create(init).await.unwrap(),
        metadata,
    }
}

fn save(key: &str, value: &'static str) -> SaveItem {
    SaveItem {
        key: key.into(),
        value: Bytes::from_static(value.as_bytes()),
        ..Default::default()
    }
}

async fn raw_get(s: &LoadedStateStore, key: &str) -> Option<GetResponse> {
    s.component
        .get(&GetRequest {
            key: key.into(),
            ..Default::default()
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn key_prefix_strategies() {
    let stores = [
        loaded("a", None).await,
        loaded("b", Some("name")).await,
        loaded("c", Some("none")).await,
        loaded("d", Some("team")).await,
        loaded("e", Some("namespace")).await,
    ];
    let svc = StateService::new("app", Some("prod"), &stores, &Resiliency::none(), None);
    for name in ["a", "b", "c", "d", "e"] {
        svc.save(name, vec![save("k", "1")]).await.unwrap();
    }
    assert!(raw_get(&stores[0], "app||k").await.is_some());
    assert!(raw_get(&stores[1], "b||k").await.is_some());
    assert!(raw_get(&stores[2], "k").await.is_some());
    assert!(raw_get(&stores[3], "team||k").await.is_some());
    assert!(raw_get(&stores[4], "prod.app||k").await.is_some());
    // Reads go through the same prefix.
    assert_eq!(
        svc.get("d", "k", Default::default(), Default::default())
            .await
            .unwrap()
            .unwrap()
            .data,
        "1"
    );
}

#[tokio::test]
async fn lookup_errors_carry_codes_and_reasons() {
    let none = StateService::new("app", None, &[], &Resiliency::none(), None);
    let e = none
        .get("x", "k", Default::default(), Default::default())
        .await
        .unwrap_err();
    assert_eq!(
        (e.code, e.http),
        (
            "ERR_STATE_STORE_NOT_CONFIGURED",
            StatusCode::INTERNAL_SERVER_ERROR
        )
    );
    let svc = StateService::new(
        "app",
        None,
        &[loaded("s", None).await],
        &Resiliency::none(),
        None,
    );
    let e = svc
        .get("x", "k", Default::default(), Default::default())
        .await
        .unwrap_err();
    assert_eq!(
        (e.code, e.grpc, e.reason()),
        (
            "ERR_STATE_STORE_NOT_FOUND",
            Code::InvalidArgument,
            Some("DAPR_STATE_NOT_FOUND")
        )
    );
    let e = svc.save("s", vec![save("a||b", "1")]).await.unwrap_err();
    assert_eq!(
        (e.code, e.reason()),
        ("ERR_MALFORMED_REQUEST", Some("DAPR_STATE_ILLEGAL_KEY"))
    );
}

#[tokio::test]
async fn last_write_ignores_the_etag_and_first_write_needs_absence() {
    let svc = StateService::new(
        "app",
        None,
        &[loaded("s", None).await],
        &Resiliency::none(),
        None,
    );
    svc.save("s", vec![save("k", "1")]).await.unwrap();
    let mut stale = save("k", "2");
    stale.etag = Some("12345".into());
    let e = svc.save("s", vec![stale.clone()]).await.unwrap_err();
    assert_eq!((e.http, e.grpc), (StatusCode::CONFLICT, Code::Aborted));
    stale.options.concurrency = Concurrency::LastWrite;
    svc.save("s", vec![stale]).await.unwrap();
    let mut first = save("k", "3");
    first.options.concurrency = Concurrency::FirstWrite;
    assert_eq!(
        svc.save("s", vec![first.clone()]).await.unwrap_err().http,
        StatusCode::CONFLICT
    );
    first.key = "fresh".into();
    svc.save("s", vec![first]).await.unwrap();
}

#[test]
fn ttl_parsing() {
    let md = |v: &str| HashMap::from([(TTL_IN_SECONDS.to_owned(), v.to_owned())]);
    assert_eq!(parse_ttl(&HashMap::new()), Ok(None));
    assert_eq!(parse_ttl(&md("10")), Ok(Some(Duration::from_secs(10))));
    assert_eq!(parse_ttl(&md("-1")), Ok(None));
    assert_eq!(parse_ttl(&md("0")), Ok(None));
    assert!(parse_ttl(&md("-2")).is_err());
    assert!(parse_ttl(&md("ten")).is_err());
}

#[tokio::test]
async fn transactions_need_the_capability_and_known_operations() {
    let e = TxOperation::from_wire("merge", save("k", "1")).unwrap_err();
    assert_eq!(
        (e.code, e.http),
        ("ERR_NOT_SUPPORTED_STATE_OPERATION", StatusCode::BAD_REQUEST)
    );
    let svc = StateService::new(
        "app",
        None,
        &[loaded("s", None).await],
        &Resiliency::none(),
        None,
    );
    let ops = vec![
        TxOperation::from_wire("upsert", save("a", "1")).unwrap(),
        TxOperation::from_wire("delete", save("a", "")).unwrap(),
        TxOperation::from_wire("upsert", save("b", "2")).unwrap(),
    ];
    svc.transact("s", ops).await.unwrap();
    assert!(
        svc.get("s", "a", Default::default(), Default::default())
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        svc.get("s", "b", Default::default(), Default::default())
            .await
            .unwrap()
            .is_some()
    );
}
