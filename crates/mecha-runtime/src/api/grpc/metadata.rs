//! gRPC handlers of metadata and shutdown.

use std::sync::Arc;

use mecha_proto::runtime as rt;
use tonic::{Request, Response, Status};

use crate::sidecar::Services;

/// `GetMetadata`.
pub(super) async fn get_metadata(
    s: &Arc<Services>,
    _req: Request<rt::GetMetadataRequest>,
) -> Result<Response<rt::GetMetadataResponse>, Status> {
    let mut m = s.metadata.snapshot();
    if m.app.as_ref().is_some_and(|a| a.health.is_some()) {
        let status = if s.health.app_healthy() {
            "healthy"
        } else {
            "unhealthy"
        };
        m.extended.insert("appHealth".to_owned(), status.to_owned());
    }
    Ok(Response::new(rt::GetMetadataResponse {
        id: m.id,
        runtime_version: m.runtime_version.to_owned(),
        registered_components: m
            .components
            .into_iter()
            .map(|c| rt::RegisteredComponents {
                name: c.name,
                r#type: c.component_type,
                version: c.version,
                capabilities: c.capabilities.iter().map(|c| (*c).to_owned()).collect(),
            })
            .collect(),
        extended_metadata: m.extended.into_iter().collect(),
        app_connection_properties: m.app.map(|a| rt::AppConnectionProperties {
            port: i32::from(a.port),
            protocol: a.protocol.to_owned(),
            channel_address: a.channel_address,
            max_concurrency: i32::try_from(a.max_concurrency).unwrap_or(i32::MAX),
            health: a.health.map(|h| rt::AppConnectionHealthProperties {
                health_check_path: h.path,
                health_probe_interval: format!("{}s", h.interval.as_secs_f64()),
                health_probe_timeout: format!("{}ms", h.timeout.as_millis()),
                health_threshold: i32::try_from(h.threshold).unwrap_or(i32::MAX),
            }),
        }),
        actor_runtime: Some(rt::ActorRuntime::default()),
        subscriptions: s
            .pubsub
            .subscriptions()
            .into_iter()
            .map(|sub| rt::PubsubSubscription {
                pubsub_name: sub.pubsub,
                topic: sub.topic,
                metadata: sub.metadata,
                rules: Some(rt::PubsubSubscriptionRules {
                    rules: sub
                        .rules
                        .into_iter()
                        .map(|(m, path)| rt::PubsubSubscriptionRule { r#match: m, path })
                        .collect(),
                }),
                dead_letter_topic: sub.dead_letter_topic.unwrap_or_default(),
                r#type: sub.kind.as_grpc(),
            })
            .collect(),
        ..Default::default()
    }))
}

/// `SetMetadata`.
pub(super) async fn set_metadata(
    s: &Arc<Services>,
    req: Request<rt::SetMetadataRequest>,
) -> Result<Response<()>, Status> {
    let req = req.into_inner();
    s.metadata.set(req.key, req.value);
    Ok(Response::new(()))
}

/// `Shutdown`.
pub(super) async fn shutdown(
    s: &Arc<Services>,
    _req: Request<rt::ShutdownRequest>,
) -> Result<Response<()>, Status> {
    tracing::info!("Shutdown requested through the API");
    s.shutdown.trigger();
    Ok(Response::new(()))
}
