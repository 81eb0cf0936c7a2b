//! HTTP handlers of the metadata API.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use serde::Serialize;

use super::{body, json_response};
use crate::error::ApiError;
use crate::sidecar::Services;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MetadataOut<'a> {
    id: &'a str,
    runtime_version: &'a str,
    enabled_features: [&'a str; 0],
    actors: [&'a str; 0],
    components: Vec<ComponentOut<'a>>,
    extended: &'a BTreeMap<String, String>,
    subscriptions: Vec<SubscriptionOut>,
    http_endpoints: [&'a str; 0],
    #[serde(skip_serializing_if = "Option::is_none")]
    app_connection_properties: Option<AppOut<'a>>,
    actor_runtime: ActorRuntimeOut,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SubscriptionOut {
    pubsubname: String,
    topic: String,
    metadata: std::collections::HashMap<String, String>,
    rules: Vec<RuleOut>,
    dead_letter_topic: String,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct RuleOut {
    #[serde(rename = "match")]
    match_expr: String,
    path: String,
}

#[derive(Serialize)]
struct ComponentOut<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    component_type: &'a str,
    version: &'a str,
    capabilities: &'a [&'static str],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AppOut<'a> {
    port: u16,
    protocol: &'a str,
    channel_address: &'a str,
    #[serde(skip_serializing_if = "is_zero")]
    max_concurrency: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    health: Option<HealthOut>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HealthOut {
    health_check_path: String,
    health_probe_interval: String,
    health_probe_timeout: String,
    health_threshold: u32,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ActorRuntimeOut {
    runtime_status: &'static str,
    host_ready: bool,
    placement: &'static str,
}

/// `GET /v1.0/metadata`.
pub(super) async fn get_metadata(State(s): State<Arc<Services>>) -> Response {
    let mut m = s.metadata.snapshot();
    if m.app.as_ref().is_some_and(|a| a.health.is_some()) {
        let status = if s.health.app_healthy() {
            "healthy"
        } else {
            "unhealthy"
        };
        m.extended.insert("appHealth".to_owned(), status.to_owned());
    }
    json_response(&MetadataOut {
        id: &m.id,
        runtime_version: m.runtime_version,
        enabled_features: [],
        actors: [],
        components: m
            .components
            .iter()
            .map(|c| ComponentOut {
                name: &c.name,
                component_type: &c.component_type,
                version: &c.version,
                capabilities: &c.capabilities,
            })
            .collect(),
        extended: &m.extended,
        subscriptions: s
            .pubsub
            .subscriptions()
            .into_iter()
            .map(|sub| SubscriptionOut {
                pubsubname: sub.pubsub,
                topic: sub.topic,
                metadata: sub.metadata,
                rules: sub
                    .rules
                    .into_iter()
                    .map(|(match_expr, path)| RuleOut { match_expr, path })
                    .collect(),
                dead_letter_topic: sub.dead_letter_topic.unwrap_or_default(),
                kind: sub.kind.as_str(),
            })
            .collect(),
        http_endpoints: [],
        app_connection_properties: m.app.as_ref().map(|a| AppOut {
            port: a.port,
            protocol: a.protocol,
            channel_address: &a.channel_address,
            max_concurrency: a.max_concurrency,
            health: a.health.as_ref().map(|h| HealthOut {
                health_check_path: h.path.clone(),
                health_probe_interval: format!("{}s", h.interval.as_secs_f64()),
                health_probe_timeout: format!("{}ms", h.timeout.as_millis()),
                health_threshold: h.threshold,
            }),
        }),
        actor_runtime: ActorRuntimeOut {
            runtime_status: "DISABLED",
            host_ready: false,
            placement: "",
        },
    })
}

/// `PUT /v1.0/metadata/{key}`: the raw body becomes the attribute's value.
pub(super) async fn put_metadata(
    State(s): State<Arc<Services>>,
    Path(key): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let raw = body(raw, s.max_request_body)?;
    let value = String::from_utf8(raw.to_vec())
        .map_err(|_| ApiError::malformed("the metadata value must be UTF-8 text"))?;
    s.metadata.set(key, value);
    Ok(StatusCode::NO_CONTENT)
}
