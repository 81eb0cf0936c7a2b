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

/// A binding name and the payload of one of its events.
type Payload = (String, Vec<u8>);

/// A binding name and the `dapr-api-token` the app received with it.
type Event = (String, Option<String>);

#[derive(Clone)]
struct App {
    events: Arc<Mutex<Vec<Event>>>,
    data: Arc<Mutex<Vec<Payload>>>, // (binding, payload)
    wanted: Vec<String>,
}

impl App {
    fn wanting(names: &[&str]) -> Self {
        Self {
            events: Arc::default(),
            data: Arc::default(),
            wanted: names.iter().map(|n| (*n).to_owned()).collect(),
        }
    }
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
        Ok(Response::new(rt::ListInputBindingsResponse {
            bindings: self.wanted.clone(),
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
        let event = req.into_inner();
        self.data
            .lock()
            .unwrap()
            .push((event.name.clone(), event.data));
        self.events.lock().unwrap().push((event.name, token));
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
    // `ignored` is configured in the sidecar but not wanted by the app.
    let app = App::wanting(&["ticker"]);
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

#[tokio::test(flavor = "multi_thread")]
async fn mqtt_and_rabbitmq_messages_reach_a_grpc_app() {
    let app = App::wanting(&["mq", "rq"]);
    let port = free_port();
    let server = tonic::transport::Server::builder()
        .add_service(AppCallbackServer::new(app.clone()))
        .serve(([127, 0, 0, 1], port).into());
    tokio::spawn(server);
    let (res, queue) = crate::bindings_brokers::resources();
    let p = MechaProcess::builder(MECHA)
        .resources(res.path())
        .args(["--app-port", &port.to_string(), "--app-protocol", "grpc"])
        .start()
        .await;
    let c = reqwest::Client::new();
    let publish = |name: &'static str, n: u32| {
        let c = c.clone();
        let url = format!("{}/v1.0/bindings/{name}", p.http_url());
        async move {
            let body = serde_json::json!({"operation": "create", "data": {"from": name, "n": n}});
            c.post(url).json(&body).send().await.unwrap().status()
        }
    };
    // The sidecar may be ready before the subscriptions exist; publish until both arrive.
    let mut n = 0;
    eventually!(
        Duration::from_secs(20),
        {
            n += 1;
            assert!(publish("mq", n).await.is_success());
            assert!(publish("rq", n).await.is_success());
            tokio::time::sleep(Duration::from_millis(300)).await;
            let data = app.data.lock().unwrap().clone();
            ["mq", "rq"]
                .iter()
                .all(|b| data.iter().any(|(name, _)| name == b))
        },
        "MQTT and RabbitMQ messages did not both reach the gRPC app\n{}",
        p.log()
    );
    for (name, data) in app.data.lock().unwrap().iter() {
        let v: serde_json::Value = serde_json::from_slice(data).unwrap();
        assert_eq!(
            v["from"],
            name.as_str(),
            "the event carries what was published"
        );
    }
    crate::bindings_brokers::delete_queue(&queue);
}
