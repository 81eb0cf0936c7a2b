//! gRPC handlers of the secrets API.

use std::sync::Arc;

use mecha_proto::runtime as rt;
use tonic::{Request, Response, Status};

use crate::sidecar::Services;

/// `GetSecret`.
pub(super) async fn get_secret(
    s: &Arc<Services>,
    req: Request<rt::GetSecretRequest>,
) -> Result<Response<rt::GetSecretResponse>, Status> {
    let req = req.into_inner();
    let data = s
        .secrets
        .get(&req.store_name, &req.key, &req.metadata)
        .await?;
    Ok(Response::new(rt::GetSecretResponse { data }))
}

/// `GetBulkSecret`.
pub(super) async fn get_bulk_secret(
    s: &Arc<Services>,
    req: Request<rt::GetBulkSecretRequest>,
) -> Result<Response<rt::GetBulkSecretResponse>, Status> {
    let req = req.into_inner();
    let all = s.secrets.bulk(&req.store_name, &req.metadata).await?;
    let data = all
        .into_iter()
        .map(|(k, secrets)| (k, rt::SecretResponse { secrets }))
        .collect();
    Ok(Response::new(rt::GetBulkSecretResponse { data }))
}
