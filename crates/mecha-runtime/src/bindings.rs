//! The bindings building block: output invocations, and input bindings read from their
//! sources and delivered to the app (HTTP `POST /<route>` after an `OPTIONS` probe, or gRPC
//! `OnBindingEvent` to bindings the app lists).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode, header};
use mecha_core::bindings::{
    BindingComponent, BindingError, BindingEvent, DIRECTION, EventHandler, InputBinding,
    InvokeRequest, InvokeResponse, OutputBinding, ROUTE,
};
use mecha_proto::runtime as rt;
use tonic::Code;

use crate::app_channel::AppChannel;
use crate::components::Loaded;
use crate::error::ApiError;
use crate::health::Health;

const APP_READY_POLL: Duration = Duration::from_millis(50);

/// The bindings service.
pub struct BindingsService {
    outputs: HashMap<String, (Arc<dyn OutputBinding>, crate::resiliency::Policy)>,
    inputs: Vec<InputEntry>,
    tracer: crate::trace::Tracer,
}

struct InputEntry {
    name: String,
    route: String,
    binding: Arc<dyn InputBinding>,
}

// === impl BindingsService ===

impl BindingsService {
    /// Builds the service, keeping the sides each component's `direction` allows.
    pub fn new(
        bindings: &[Loaded<BindingComponent>],
        resiliency: &crate::resiliency::Resiliency,
    ) -> Self {
        let mut outputs = HashMap::new();
        let mut inputs = Vec::new();
        for b in bindings {
            let direction = b.metadata.get(DIRECTION).unwrap_or("").to_ascii_lowercase();
            let allows = |side: &str| direction.trim().is_empty() || direction.contains(side);
            if let Some(output) = b.component.output.clone().filter(|_| allows("output")) {
                let policy = resiliency.component(
                    crate::resiliency::ComponentKind::Binding,
                    &b.info.name,
                    crate::resiliency::Direction::Outbound,
                );
                outputs.insert(b.info.name.clone(), (output, policy));
            }
            if let Some(input) = b.component.input.clone().filter(|_| allows("input")) {
                let route = match b
                    .metadata
                    .get(ROUTE)
                    .map(str::trim)
                    .filter(|r| !r.is_empty())
                {
                    Some(r) if r.starts_with('/') => r.to_owned(),
                    Some(r) => format!("/{r}"),
                    None => format!("/{}", b.info.name),
                };
                inputs.push(InputEntry {
                    name: b.info.name.clone(),
                    route,
                    binding: input,
                });
            }
        }
        Self {
            outputs,
            inputs,
            tracer: crate::trace::Tracer::disabled(),
        }
    }

    /// Traces output invocations (client spans; `traceparent` in the request metadata) and
    /// input deliveries (consumer spans; `traceparent` sent to the app).
    pub fn with_tracer(mut self, tracer: crate::trace::Tracer) -> Self {
        self.tracer = tracer;
        self
    }

    /// Invokes an output binding.
    pub async fn invoke(
        &self,
        name: &str,
        mut req: InvokeRequest,
        parent: Option<crate::trace::SpanContext>,
    ) -> Result<InvokeResponse, ApiError> {
        let span = self.tracer.start_lazy(
            parent,
            || format!("bindings/{name}/{}", req.operation),
            crate::trace::SpanKind::Client,
        );
        if let Some(ctx) = span.context() {
            req.metadata
                .insert(crate::trace::TRACEPARENT.to_owned(), ctx.traceparent());
        }
        let (binding, policy) = self.outputs.get(name).ok_or_else(|| {
            ApiError::new(
                "ERR_INVOKE_OUTPUT_BINDING",
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::Internal,
                format!("error invoking output binding {name}: binding {name} not found"),
            )
        })?;
        crate::resiliency::component_call(
            policy,
            |e| matches!(e, BindingError::Backend(_)),
            BindingError::Backend,
            || binding.invoke(req.clone()),
        )
        .await
        .map_err(|e| {
            let (http, grpc) = match &e {
                BindingError::UnsupportedOperation { .. } => {
                    (StatusCode::BAD_REQUEST, Code::InvalidArgument)
                }
                BindingError::BadRequest(_) | BindingError::Backend(_) => {
                    (StatusCode::INTERNAL_SERVER_ERROR, Code::Internal)
                }
            };
            ApiError::new(
                "ERR_INVOKE_OUTPUT_BINDING",
                http,
                grpc,
                format!("error invoking output binding {name}: {e}"),
            )
        })
    }

    /// Once the app is ready, asks it which input bindings it wants and starts reading them.
    pub fn start_inputs(self: &Arc<Self>, app: Option<Arc<AppChannel>>, health: Arc<Health>) {
        if self.inputs.is_empty() {
            return;
        }
        let Some(app) = app else {
            tracing::warn!(
                "Input bindings are configured but there is no --app-port to deliver to"
            );
            return;
        };
        let service = self.clone();
        health.set_inputs_ready(false);
        tokio::spawn(async move {
            while !health.app_ready() {
                tokio::time::sleep(APP_READY_POLL).await;
            }
            let wanted = match app.grpc() {
                Some(mut grpc) => match grpc.list_input_bindings(app.grpc_request(())).await {
                    Ok(r) => {
                        let names = r.into_inner().bindings;
                        tracing::info!(bindings = ?names, "The app lists its input bindings");
                        Some(names.into_iter().collect::<HashSet<_>>())
                    }
                    Err(e) if e.code() == Code::Unimplemented => {
                        tracing::info!("The app does not implement ListInputBindings");
                        Some(HashSet::new())
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "ListInputBindings failed; no input binding is read");
                        Some(HashSet::new())
                    }
                },
                None => None,
            };
            for input in &service.inputs {
                let subscribed = match &wanted {
                    Some(names) => names.contains(&input.name),
                    None => http_app_wants(&app, &input.route).await,
                };
                if !subscribed {
                    tracing::info!(binding = %input.name, "The app does not subscribe to this input binding");
                    continue;
                }
                let handler = deliver_to(
                    app.clone(),
                    health.clone(),
                    service.tracer.clone(),
                    input.name.clone(),
                    input.route.clone(),
                );
                match input.binding.read(handler).await {
                    Ok(()) => {
                        tracing::info!(binding = %input.name, route = %input.route, "Reading input binding")
                    }
                    Err(e) => {
                        tracing::error!(binding = %input.name, error = %e, "Input binding failed to start")
                    }
                }
            }
            // `/v1.0/healthz` waits for this, so that an app that checks it sees no event lost
            // to a subscription not made yet.
            health.set_inputs_ready(true);
        });
    }

    /// Stops reading the input bindings: nothing more is delivered to the app.
    pub async fn stop_inputs(&self) {
        for input in &self.inputs {
            input.binding.close().await;
        }
    }

    /// Closes the output bindings.
    pub async fn close(&self) {
        for (output, _) in self.outputs.values() {
            output.close().await;
        }
    }
}

/// The `OPTIONS` probe: 2xx or 405 means the app handles the route.
async fn http_app_wants(app: &AppChannel, route: &str) -> bool {
    match app.request(Method::OPTIONS, route, [], Bytes::new()).await {
        Ok(r) => r.status.is_success() || r.status == StatusCode::METHOD_NOT_ALLOWED,
        Err(e) => {
            tracing::warn!(route, error = %e, "Input binding probe failed");
            false
        }
    }
}

/// The handler that delivers one event to the app.
fn deliver_to(
    app: Arc<AppChannel>,
    health: Arc<Health>,
    tracer: crate::trace::Tracer,
    name: String,
    route: String,
) -> EventHandler {
    Arc::new(move |mut event: BindingEvent| {
        let (app, health, tracer, name, route) = (
            app.clone(),
            health.clone(),
            tracer.clone(),
            name.clone(),
            route.clone(),
        );
        Box::pin(async move {
            let span = tracer.start_lazy(
                None,
                || format!("bindings/{name}"),
                crate::trace::SpanKind::Consumer,
            );
            if let Some(ctx) = span.context() {
                event
                    .metadata
                    .insert(crate::trace::TRACEPARENT.to_owned(), ctx.traceparent());
            }
            // Nothing is delivered while the app's health check fails.
            while !health.app_healthy() {
                tokio::time::sleep(APP_READY_POLL).await;
            }
            let permit = app.permit().await;
            let result = if let Some(mut grpc) = app.grpc() {
                let req = rt::BindingEventRequest {
                    name: name.clone(),
                    data: event.data.to_vec(),
                    metadata: event.metadata,
                };
                grpc.on_binding_event(app.grpc_request(req))
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("OnBindingEvent failed: {e}"))
            } else {
                let mut headers = vec![(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )];
                headers.extend(event.metadata.iter().filter_map(|(k, v)| {
                    Some((
                        HeaderName::try_from(k.as_str()).ok()?,
                        HeaderValue::from_bytes(v.as_bytes()).ok()?,
                    ))
                }));
                match app.request(Method::POST, &route, headers, event.data).await {
                    Ok(r) if r.status.is_success() => Ok(()),
                    Ok(r) => Err(format!("the app answered {}", r.status)),
                    Err(e) => Err(e),
                }
            };
            drop(permit);
            if let Err(e) = &result {
                tracing::warn!(binding = %name, error = %e, "Input binding event not accepted by the app");
            }
            result
        })
    })
}
