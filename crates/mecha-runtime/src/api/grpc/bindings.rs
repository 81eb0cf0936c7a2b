//! gRPC handlers of the bindings API.

use std::sync::Arc;

use bytes::Bytes;
use mecha_core::bindings::InvokeRequest;
use mecha_proto::runtime as rt;
use tonic::{Request, Response, Status};

use crate::sidecar::Services;

/// `InvokeBinding`.
pub(super) async fn invoke(
    s: &Arc<Services>,
    req: Request<rt::InvokeBindingRequest>,
) -> Result<Response<rt::InvokeBindingResponse>, Status> {
    let parent = crate::trace::SpanContext::from_headers(&req.metadata().clone().into_headers());
    let req = req.into_inner();
    let binding = InvokeRequest {
        operation: req.operation,
        data: Bytes::from(req.data),
        metadata: req.metadata,
    };
    let res = s.bindings.invoke(&req.name, binding, parent).await?;
    Ok(Response::new(rt::InvokeBindingResponse {
        data: res.data.map(|d| d.to_vec()).unwrap_or_default(),
        metadata: res.metadata,
    }))
}
