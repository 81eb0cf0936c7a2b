//! The Dapr gRPC API (`dapr.proto.runtime.v1.Dapr`), served by tonic.
//!
//! Block modules decode the protobuf request, call a service and encode the answer.

mod bindings;
mod configuration;
mod invoke;
mod lock;
mod metadata;
mod pubsub;
mod secrets;
mod service;
mod state;

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use mecha_proto::prost::Message;
use mecha_proto::rpc::{self, ErrorInfo, ResourceInfo};
use mecha_proto::runtime::dapr_server::DaprServer;
use tonic::Status;
use tonic::service::interceptor::InterceptedService;

pub use service::DaprApi;

use crate::error::{ApiError, ERROR_DOMAIN};
use crate::sidecar::Services;

/// The stream type of streaming RPCs this sidecar does not implement yet.
pub type Unsupported<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Checks the `dapr-api-token` metadata of every call when a token is configured.
#[derive(Clone)]
pub struct TokenCheck {
    token: Option<Arc<str>>,
}

impl tonic::service::Interceptor for TokenCheck {
    fn call(&mut self, req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let Some(expected) = &self.token else {
            return Ok(req);
        };
        match req.metadata().get(super::http::API_TOKEN_HEADER) {
            None => Err(Status::unauthenticated(
                "missing api token in request metadata",
            )),
            Some(given) if given.as_bytes() == expected.as_bytes() => Ok(req),
            Some(_) => Err(Status::unauthenticated(
                "authentication error: api token mismatch",
            )),
        }
    }
}

/// Builds the `Dapr` gRPC service with its token check and message size limit.
pub fn dapr_service(
    services: Arc<Services>,
) -> InterceptedService<DaprServer<DaprApi>, TokenCheck> {
    let limit = services.max_request_body;
    let token = services.api_token.as_deref().map(Arc::from);
    let server = DaprServer::new(DaprApi { services })
        .max_decoding_message_size(limit)
        .max_encoding_message_size(usize::MAX);
    InterceptedService::new(server, TokenCheck { token })
}

/// The gRPC API as routes: the `Dapr` service, and every other service passed through to the
/// app named by `dapr-app-id` (transparent proxying).
pub fn routes(services: Arc<Services>) -> tonic::service::Routes {
    let proxy_services = services.clone();
    let access = services.clone();
    let restricted = services.api_access.is_restricted();
    let router = tonic::service::Routes::new(dapr_service(services))
        .prepare()
        .into_axum_router();
    // The allow-list check, only when there is a list (a layer costs a boxed call per call).
    let router = if !restricted {
        router
    } else {
        router.layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let s = access.clone();
                async move {
                    if let Some(method) =
                        req.uri().path().strip_prefix("/dapr.proto.runtime.v1.Dapr/")
                    {
                        let name = crate::acl::grpc_api(method);
                        if !s.api_access.allows(name, "v1", "grpc") {
                            return Status::permission_denied(format!(
                                "the {name} API ({method}) is not allowed by the Configuration's spec.api"
                            ))
                            .into_http::<axum::body::Body>();
                        }
                    }
                    next.run(req).await
                }
            },
        ))
    };
    let router = router.fallback(move |req: axum::extract::Request| {
        let s = proxy_services.clone();
        async move { invoke::proxy(s, req).await }
    });
    tonic::service::Routes::from(router)
}

fn unsupported(rpc: &str) -> Status {
    Status::unimplemented(format!("{rpc} is not implemented by this sidecar yet"))
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        super::http::log_error(&e);
        let Some(d) = &e.details else {
            return Status::new(e.grpc, e.message);
        };
        let info = ErrorInfo {
            reason: d.reason.to_owned(),
            domain: ERROR_DOMAIN.to_owned(),
            metadata: d
                .metadata
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        };
        let mut details = vec![mecha_proto::prost_types::Any {
            type_url: rpc::ERROR_INFO_TYPE_URL.to_owned(),
            value: info.encode_to_vec(),
        }];
        if let Some((kind, name)) = &d.resource {
            let resource = ResourceInfo {
                resource_type: (*kind).to_owned(),
                resource_name: name.clone(),
                owner: String::new(),
                description: String::new(),
            };
            details.push(mecha_proto::prost_types::Any {
                type_url: rpc::RESOURCE_INFO_TYPE_URL.to_owned(),
                value: resource.encode_to_vec(),
            });
        }
        // The status inside the details must repeat the code and message: clients such as
        // grpcio-status refuse details that disagree with the call's status.
        let status = rpc::Status {
            code: e.grpc as i32,
            message: e.message.clone(),
            details,
        };
        Status::with_details(e.grpc, e.message, status.encode_to_vec().into())
    }
}
