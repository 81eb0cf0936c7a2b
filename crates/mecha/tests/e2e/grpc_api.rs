//! The gRPC API against the real binary, through the official Rust SDK's generated client.

use dapr::dapr::proto::common::v1 as common;
use dapr::dapr::proto::runtime::v1 as rt;
use dapr::dapr::proto::runtime::v1::dapr_client::DaprClient;
use mecha_test_support::{MechaProcess, ResourcesDir, in_memory_store};
use prost::Message;
use tonic::Code;
use tonic::transport::Channel;

use crate::MECHA;

async fn client(p: &MechaProcess) -> DaprClient<Channel> {
    DaprClient::connect(p.grpc_url())
        .await
        .expect("connect to the gRPC API")
}

async fn sidecar(extra: &[&str]) -> (MechaProcess, ResourcesDir) {
    let res = ResourcesDir::new().with("store.yaml", &in_memory_store("statestore"));
    let p = MechaProcess::builder(MECHA)
        .resources(res.path())
        .args(extra.iter().copied())
        .start()
        .await;
    (p, res)
}

fn item(key: &str, value: &[u8], etag: Option<&str>) -> common::StateItem {
    common::StateItem {
        key: key.into(),
        value: value.to_vec(),
        etag: etag.map(|e| common::Etag { value: e.into() }),
        ..Default::default()
    }
}

#[tokio::test]
async fn raw_bytes_round_trip_with_etags() {
    let (p, _r) = sidecar(&[]).await;
    let mut c = client(&p).await;
    let raw = vec![0u8, 159, 146, 150, 255];
    c.save_state(rt::SaveStateRequest {
        store_name: "statestore".into(),
        states: vec![item("bin", &raw, None)],
    })
    .await
    .unwrap();
    let got = c
        .get_state(rt::GetStateRequest {
            store_name: "statestore".into(),
            key: "bin".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.data, raw);
    assert!(!got.etag.is_empty());

    let missing = c
        .get_state(rt::GetStateRequest {
            store_name: "statestore".into(),
            key: "none".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(missing.data.is_empty() && missing.etag.is_empty());

    let err = c
        .save_state(rt::SaveStateRequest {
            store_name: "statestore".into(),
            states: vec![item("bin", b"x", Some("77777"))],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "{err:?}");
    c.save_state(rt::SaveStateRequest {
        store_name: "statestore".into(),
        states: vec![item("bin", b"x", Some(&got.etag))],
    })
    .await
    .unwrap();

    let bulk = c
        .get_bulk_state(rt::GetBulkStateRequest {
            store_name: "statestore".into(),
            keys: vec!["bin".into(), "none".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bulk.items.len(), 2);
    assert_eq!(bulk.items[0].data, b"x");
    assert!(bulk.items[1].data.is_empty());

    c.execute_state_transaction(rt::ExecuteStateTransactionRequest {
        store_name: "statestore".into(),
        operations: vec![
            rt::TransactionalStateOperation {
                operation_type: "upsert".into(),
                request: Some(item("t", b"1", None)),
            },
            rt::TransactionalStateOperation {
                operation_type: "delete".into(),
                request: Some(item("bin", b"", None)),
            },
        ],
        metadata: Default::default(),
    })
    .await
    .unwrap();
    let gone = c
        .get_state(rt::GetStateRequest {
            store_name: "statestore".into(),
            key: "bin".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(gone.data.is_empty());
    c.delete_bulk_state(rt::DeleteBulkStateRequest {
        store_name: "statestore".into(),
        states: vec![item("t", b"", None)],
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn unknown_store_is_invalid_argument_with_rich_details() {
    let (p, _r) = sidecar(&[]).await;
    let mut c = client(&p).await;
    let err = c
        .get_state(rt::GetStateRequest {
            store_name: "nope".into(),
            key: "k".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let status = dapr::google::rpc::Status::decode(err.details()).expect("grpc-status-details-bin");
    assert_eq!(status.code, Code::InvalidArgument as i32);
    assert_eq!(status.message, err.message());
    let info = status
        .details
        .iter()
        .find(|d| d.type_url == "type.googleapis.com/google.rpc.ErrorInfo")
        .expect("ErrorInfo detail");
    let info = mecha_proto_error_info(&info.value);
    assert_eq!(info, "DAPR_STATE_NOT_FOUND");
}

/// Reads the `reason` (field 1) of an encoded `google.rpc.ErrorInfo`.
fn mecha_proto_error_info(bytes: &[u8]) -> String {
    #[derive(Clone, PartialEq, Message)]
    struct ErrorInfo {
        #[prost(string, tag = "1")]
        reason: String,
    }
    ErrorInfo::decode(bytes).unwrap().reason
}

#[tokio::test]
async fn token_unimplemented_and_size_limits() {
    let res = ResourcesDir::new().with("store.yaml", &in_memory_store("statestore"));
    let p = MechaProcess::builder(MECHA)
        .resources(res.path())
        .env("DAPR_API_TOKEN", "s3cret")
        .args(["--dapr-http-max-request-size", "1"])
        .start()
        .await;
    let mut c = client(&p).await;
    let get = || rt::GetStateRequest {
        store_name: "statestore".into(),
        key: "k".into(),
        ..Default::default()
    };
    assert_eq!(
        c.get_state(get()).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let mut req = tonic::Request::new(get());
    req.metadata_mut()
        .insert("dapr-api-token", "s3cret".parse().unwrap());
    c.get_state(req).await.unwrap();

    let mut req = tonic::Request::new(rt::ScheduleJobRequest::default());
    req.metadata_mut()
        .insert("dapr-api-token", "s3cret".parse().unwrap());
    assert_eq!(
        c.schedule_job(req).await.unwrap_err().code(),
        Code::Unimplemented
    );

    let big = vec![7u8; 1_200_000];
    let mut req = tonic::Request::new(rt::SaveStateRequest {
        store_name: "statestore".into(),
        states: vec![item("big", &big, None)],
    });
    req.metadata_mut()
        .insert("dapr-api-token", "s3cret".parse().unwrap());
    let err = c.save_state(req).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");

    let mut req = tonic::Request::new(rt::GetMetadataRequest::default());
    req.metadata_mut()
        .insert("dapr-api-token", "s3cret".parse().unwrap());
    let m = c.get_metadata(req).await.unwrap().into_inner();
    assert_eq!(m.id, "test-app");
    assert_eq!(m.registered_components[0].r#type, "state.in-memory");
}
