//! Input bindings delivered to a gRPC app through `ListInputBindings` and `OnBindingEvent`,
//! with the app token on every call.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dapr::dapr::proto::common::v1 as common;
use dapr::dapr::proto::runtime::v1 as rt;
use dapr::dapr::proto::runtime::v1::app_callback_server::{AppCallback, AppCallbackServer};
use mecha_test_support::{MechaProcess, ResourcesDir, component, eventually, free_port};
use tonic::{Request, Response, Status};

use crate::MECHA;

/// A binding name and the `dapr-api-token` the app received with it.
type Event = (String, Option<String>);

#[derive(Default, Clone)]
struct App {
    events: Arc<Mutex<Vec<Event>>>,
}

#[tonic::async_trait]
impl AppCallback for App {
    async fn on_invoke(
        &self,
        _: Request<common::InvokeRequest>,
    ) -> Result<Response<common::InvokeResponse>, Status> {
        Err(Status::unimplemented("on_invoke"))
    }
    async fn list_topic_subscriptions(
        &self,
        _: Request<()>,
    ) -> Result<Response<rt::ListTopicSubscriptionsResponse>, Status> {
        Ok(Response::new(rt::ListTopicSubscriptionsResponse::default()))
    }
    async fn on_topic_event(
        &self,
        _: Request<rt::TopicEventRequest>,
    ) -> Result<Response<rt::TopicEventResponse>, Status> {
        Err(Status::unimplemented("on_topic_event"))
    }
    async fn list_input_bindings(
        &self,
        _: Request<()>,
    ) -> Result<Response<rt::ListInputBindingsResponse>, Status> {
        // `ignored` is configured in the sidecar but not wanted by the app.
        Ok(Response::new(rt::ListInputBindingsResponse {
            bindings: vec!["ticker".into()],
        }))
    }
    async fn on_binding_event(
        &self,
        req: Request<rt::BindingEventRequest>,
    ) -> Result<Response<rt::BindingEventResponse>, Status> {
        let token = req
            .metadata()
            .get("dapr-api-token")
            .and_then(|t| t.to_str().ok())
            .map(str::to_owned);
        self.events
            .lock()
            .unwrap()
            .push((req.into_inner().name, token));
        Ok(Response::new(rt::BindingEventResponse::default()))
    }
    async fn on_bulk_topic_event(
        &self,
        _: Request<rt::TopicEventBulkRequest>,
    ) -> Result<Response<rt::TopicEventBulkResponse>, Status> {
        Err(Status::unimplemented("on_bulk_topic_event"))
    }
    async fn on_job_event(
        &self,
        _: Request<rt::JobEventRequest>,
    ) -> Result<Response<rt::JobEventResponse>, Status> {
        Err(Status::unimplemented("on_job_event"))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cron_ticks_reach_a_grpc_app_that_lists_the_binding() {
    let app = App::default();
    let port = free_port();
    let server = tonic::transport::Server::builder()
        .add_service(AppCallbackServer::new(app.clone()))
        .serve(([127, 0, 0, 1], port).into());
    tokio::spawn(server);

    let res = ResourcesDir::new()
        .with(
            "ticker.yaml",
            &component("ticker", "bindings.cron", &[("schedule", "@every 1s")]),
        )
        .with(
            "ignored.yaml",
            &component("ignored", "bindings.cron", &[("schedule", "@every 1s")]),
        );
    let _p = MechaProcess::builder(MECHA)
        .resources(res.path())
        .args(["--app-port", &port.to_string(), "--app-protocol", "grpc"])
        .env("APP_API_TOKEN", "app-secret")
        .start()
        .await;
    eventually!(
        Duration::from_secs(8),
        app.events.lock().unwrap().len() >= 2,
        "fewer than 2 ticks in 8 s"
    );
    let events = app.events.lock().unwrap().clone();
    for (name, token) in events {
        assert_eq!(
            name, "ticker",
            "only the binding the app listed is delivered"
        );
        assert_eq!(
            token.as_deref(),
            Some("app-secret"),
            "APP_API_TOKEN is sent to the app"
        );
    }
}
