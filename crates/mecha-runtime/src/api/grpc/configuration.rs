//! gRPC handlers of the configuration API (and their `Alpha1` aliases).

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use mecha_core::configuration::ConfigurationItem;
use mecha_proto::{common, runtime as rt};
use tonic::{Request, Response, Status};

use super::Unsupported;
use crate::sidecar::Services;

/// The stream of `SubscribeConfiguration`.
pub(super) type UpdateStream = Unsupported<rt::SubscribeConfigurationResponse>;

fn items(items: HashMap<String, ConfigurationItem>) -> HashMap<String, common::ConfigurationItem> {
    items
        .into_iter()
        .map(|(k, i)| {
            (
                k,
                common::ConfigurationItem {
                    value: i.value,
                    version: i.version,
                    metadata: i.metadata,
                },
            )
        })
        .collect()
}

/// `GetConfiguration`.
pub(super) async fn get(
    s: &Arc<Services>,
    req: Request<rt::GetConfigurationRequest>,
) -> Result<Response<rt::GetConfigurationResponse>, Status> {
    let req = req.into_inner();
    let found = s
        .configuration
        .get(&req.store_name, &req.keys, &req.metadata)
        .await?;
    Ok(Response::new(rt::GetConfigurationResponse {
        items: items(found),
    }))
}

/// `SubscribeConfiguration`: the first message carries only the subscription id.
pub(super) async fn subscribe(
    s: &Arc<Services>,
    req: Request<rt::SubscribeConfigurationRequest>,
) -> Result<Response<UpdateStream>, Status> {
    let req = req.into_inner();
    let (id, updates) = s
        .configuration
        .subscribe(&req.store_name, &req.keys, &req.metadata)
        .await?;
    let first = rt::SubscribeConfigurationResponse {
        id: id.clone(),
        items: HashMap::new(),
    };
    let rest = updates.map(move |u| {
        Ok(rt::SubscribeConfigurationResponse {
            id: id.clone(),
            items: items(u),
        })
    });
    let stream = futures::stream::once(async move { Ok(first) }).chain(rest);
    Ok(Response::new(Box::pin(stream)))
}

/// `UnsubscribeConfiguration`: failures are reported in the response, not as an error.
pub(super) async fn unsubscribe(
    s: &Arc<Services>,
    req: Request<rt::UnsubscribeConfigurationRequest>,
) -> Result<Response<rt::UnsubscribeConfigurationResponse>, Status> {
    let req = req.into_inner();
    Ok(Response::new(
        match s.configuration.unsubscribe(&req.store_name, &req.id) {
            Ok(()) => rt::UnsubscribeConfigurationResponse {
                ok: true,
                message: String::new(),
            },
            Err(e) => rt::UnsubscribeConfigurationResponse {
                ok: false,
                message: e.message,
            },
        },
    ))
}
