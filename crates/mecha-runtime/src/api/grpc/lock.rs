//! gRPC handlers of the distributed lock API.

use std::sync::Arc;

use mecha_proto::runtime as rt;
use tonic::{Request, Response, Status};

use crate::sidecar::Services;

/// `TryLockAlpha1`.
pub(super) async fn try_lock(
    s: &Arc<Services>,
    req: Request<rt::TryLockRequest>,
) -> Result<Response<rt::TryLockResponse>, Status> {
    let req = req.into_inner();
    let success = s
        .lock
        .try_lock(
            &req.store_name,
            &req.resource_id,
            &req.lock_owner,
            i64::from(req.expiry_in_seconds),
        )
        .await?;
    Ok(Response::new(rt::TryLockResponse { success }))
}

/// `UnlockAlpha1`.
pub(super) async fn unlock(
    s: &Arc<Services>,
    req: Request<rt::UnlockRequest>,
) -> Result<Response<rt::UnlockResponse>, Status> {
    let req = req.into_inner();
    let status = s
        .lock
        .unlock(&req.store_name, &req.resource_id, &req.lock_owner)
        .await?;
    Ok(Response::new(rt::UnlockResponse {
        status: status as i32,
    }))
}
