//! gRPC handlers of the state API.

use std::sync::Arc;

use bytes::Bytes;
use mecha_core::state::{Concurrency, Consistency};
use mecha_proto::{common, runtime as rt};
use tonic::{Request, Response, Status};

use crate::sidecar::Services;
use crate::state::{DeleteItem, SaveItem, StateOptions, TxOperation};

/// `GetState`: a missing key is an empty response, not an error.
pub(super) async fn get_state(
    s: &Arc<Services>,
    req: Request<rt::GetStateRequest>,
) -> Result<Response<rt::GetStateResponse>, Status> {
    let req = req.into_inner();
    let value = s
        .state
        .get(
            &req.store_name,
            &req.key,
            req.metadata,
            consistency(req.consistency),
        )
        .await?;
    Ok(Response::new(match value {
        None => rt::GetStateResponse::default(),
        Some(v) => rt::GetStateResponse {
            data: v.data.into(),
            etag: v.etag.unwrap_or_default(),
            metadata: v.metadata,
        },
    }))
}

/// `GetBulkState`.
pub(super) async fn get_bulk_state(
    s: &Arc<Services>,
    req: Request<rt::GetBulkStateRequest>,
) -> Result<Response<rt::GetBulkStateResponse>, Status> {
    let req = req.into_inner();
    let items = s
        .state
        .bulk_get(&req.store_name, &req.keys, &req.metadata)
        .await?;
    let items = items
        .into_iter()
        .map(|i| match i.value {
            Some(v) => rt::BulkStateItem {
                key: i.key,
                data: v.data.into(),
                etag: v.etag.unwrap_or_default(),
                error: String::new(),
                metadata: v.metadata,
            },
            None => rt::BulkStateItem {
                key: i.key,
                error: i.error.unwrap_or_default(),
                ..Default::default()
            },
        })
        .collect();
    Ok(Response::new(rt::GetBulkStateResponse { items }))
}

/// `SaveState`.
pub(super) async fn save_state(
    s: &Arc<Services>,
    req: Request<rt::SaveStateRequest>,
) -> Result<Response<()>, Status> {
    let req = req.into_inner();
    let items = req.states.into_iter().map(save_item).collect();
    s.state.save(&req.store_name, items).await?;
    Ok(Response::new(()))
}

/// `DeleteState`.
pub(super) async fn delete_state(
    s: &Arc<Services>,
    req: Request<rt::DeleteStateRequest>,
) -> Result<Response<()>, Status> {
    let req = req.into_inner();
    let item = DeleteItem {
        key: req.key,
        etag: req.etag.map(|e| e.value),
        metadata: req.metadata,
        options: options(req.options),
    };
    s.state.delete(&req.store_name, item).await?;
    Ok(Response::new(()))
}

/// `DeleteBulkState`.
pub(super) async fn delete_bulk_state(
    s: &Arc<Services>,
    req: Request<rt::DeleteBulkStateRequest>,
) -> Result<Response<()>, Status> {
    let req = req.into_inner();
    let items = req
        .states
        .into_iter()
        .map(|i| DeleteItem {
            key: i.key,
            etag: i.etag.map(|e| e.value),
            metadata: i.metadata,
            options: options(i.options),
        })
        .collect();
    s.state.bulk_delete(&req.store_name, items).await?;
    Ok(Response::new(()))
}

/// `ExecuteStateTransaction`.
pub(super) async fn execute_state_transaction(
    s: &Arc<Services>,
    req: Request<rt::ExecuteStateTransactionRequest>,
) -> Result<Response<()>, Status> {
    let req = req.into_inner();
    let ops = req
        .operations
        .into_iter()
        .map(|op| {
            let mut item = save_item(op.request.unwrap_or_default());
            for (k, v) in &req.metadata {
                item.metadata.entry(k.clone()).or_insert_with(|| v.clone());
            }
            TxOperation::from_wire(&op.operation_type, item)
        })
        .collect::<Result<Vec<_>, _>>()?;
    s.state.transact(&req.store_name, ops).await?;
    Ok(Response::new(()))
}

/// `QueryStateAlpha1`.
pub(super) async fn query_state(
    s: &Arc<Services>,
    req: Request<rt::QueryStateRequest>,
) -> Result<Response<rt::QueryStateResponse>, Status> {
    let req = req.into_inner();
    let (items, token) = s
        .state
        .query(&req.store_name, req.query.as_bytes(), &req.metadata)
        .await?;
    let results = items
        .into_iter()
        .map(|i| rt::QueryStateItem {
            key: i.key,
            data: i.data.into(),
            etag: i.etag.unwrap_or_default(),
            error: String::new(),
        })
        .collect();
    Ok(Response::new(rt::QueryStateResponse {
        results,
        token: token.unwrap_or_default(),
        metadata: Default::default(),
    }))
}

fn save_item(i: common::StateItem) -> SaveItem {
    SaveItem {
        key: i.key,
        value: Bytes::from(i.value),
        etag: i.etag.map(|e| e.value),
        metadata: i.metadata,
        options: options(i.options),
    }
}

fn options(o: Option<common::StateOptions>) -> StateOptions {
    let o = o.unwrap_or_default();
    StateOptions {
        concurrency: match o.concurrency {
            1 => Concurrency::FirstWrite,
            2 => Concurrency::LastWrite,
            _ => Concurrency::Unspecified,
        },
        consistency: consistency(o.consistency),
    }
}

fn consistency(c: i32) -> Consistency {
    match c {
        1 => Consistency::Eventual,
        2 => Consistency::Strong,
        _ => Consistency::Unspecified,
    }
}
