//! Pub/sub delivered to a gRPC app: `ListTopicSubscriptions` read at start-up, events through
//! `OnTopicEvent` (with CEL routes, the RETRY and DROP answers and the app token), batches
//! through `OnBulkTopicEvent`, and publishing through the gRPC API.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dapr::dapr::proto::common::v1 as common;
use dapr::dapr::proto::runtime::v1 as rt;
use dapr::dapr::proto::runtime::v1::app_callback_server::{AppCallback, AppCallbackServer};
use dapr::dapr::proto::runtime::v1::dapr_client::DaprClient;
use mecha_test_support::{MechaProcess, ResourcesDir, component, eventually, free_port};
use tonic::{Request, Response, Status};

use crate::MECHA;

/// One `OnTopicEvent` call: (path, event, app token).
type Seen = (String, rt::TopicEventRequest, Option<String>);

#[derive(Clone, Default)]
struct App {
    events: Arc<Mutex<Vec<Seen>>>,
    bulk: Arc<Mutex<Vec<rt::TopicEventBulkRequest>>>,
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
        let sub = |topic: &str, rules: Vec<(&str, &str)>, default: &str, dlt: &str| {
            rt::TopicSubscription {
                pubsub_name: "ps".into(),
                topic: topic.into(),
                routes: Some(rt::TopicRoutes {
                    rules: rules
                        .into_iter()
                        .map(|(m, p)| rt::TopicRule {
                            r#match: m.into(),
                            path: p.into(),
                        })
                        .collect(),
                    default: default.into(),
                }),
                dead_letter_topic: dlt.into(),
                ..Default::default()
            }
        };
        let mut bulk = sub("batch", vec![], "/batch", "");
        bulk.bulk_subscribe = Some(rt::BulkSubscribeConfig {
            enabled: true,
            max_messages_count: 5,
            max_await_duration_ms: 100,
        });
        Ok(Response::new(rt::ListTopicSubscriptionsResponse {
            subscriptions: vec![
                sub(
                    "orders",
                    vec![(r#"event.data.kind == "gold""#, "/gold")],
                    "/orders",
                    "",
                ),
                sub("flaky", vec![], "/flaky", ""),
                sub("unwanted", vec![], "/unwanted", "graveyard"),
                sub("graveyard", vec![], "/graveyard", ""),
                bulk,
            ],
        }))
    }
    async fn on_topic_event(
        &self,
        req: Request<rt::TopicEventRequest>,
    ) -> Result<Response<rt::TopicEventResponse>, Status> {
        use rt::topic_event_response::TopicEventResponseStatus as S;
        let token = req
            .metadata()
            .get("dapr-api-token")
            .and_then(|t| t.to_str().ok())
            .map(str::to_owned);
        let ev = req.into_inner();
        let path = ev.path.clone();
        let earlier = {
            let mut events = self.events.lock().unwrap();
            let earlier = events.iter().filter(|(p, _, _)| *p == path).count();
            events.push((path.clone(), ev, token));
            earlier
        };
        let status = match path.as_str() {
            "/flaky" if earlier == 0 => S::Retry,
            "/unwanted" => S::Drop,
            _ => S::Success,
        };
        Ok(Response::new(rt::TopicEventResponse {
            status: status as i32,
        }))
    }
    async fn list_input_bindings(
        &self,
        _: Request<()>,
    ) -> Result<Response<rt::ListInputBindingsResponse>, Status> {
        Ok(Response::new(rt::ListInputBindingsResponse::default()))
    }
    async fn on_binding_event(
        &self,
        _: Request<rt::BindingEventRequest>,
    ) -> Result<Response<rt::BindingEventResponse>, Status> {
        Err(Status::unimplemented("on_binding_event"))
    }
    async fn on_bulk_topic_event(
        &self,
        req: Request<rt::TopicEventBulkRequest>,
    ) -> Result<Response<rt::TopicEventBulkResponse>, Status> {
        let req = req.into_inner();
        let statuses = req
            .entries
            .iter()
            .map(|e| rt::TopicEventBulkResponseEntry {
                entry_id: e.entry_id.clone(),
                status: 0,
            })
            .collect();
        self.bulk.lock().unwrap().push(req);
        Ok(Response::new(rt::TopicEventBulkResponse { statuses }))
    }
    async fn on_job_event(
        &self,
        _: Request<rt::JobEventRequest>,
    ) -> Result<Response<rt::JobEventResponse>, Status> {
        Err(Status::unimplemented("on_job_event"))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_app_gets_routed_retried_dropped_and_bulk_events() {
    let app = App::default();
    let port = free_port();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AppCallbackServer::new(app.clone()))
            .serve(([127, 0, 0, 1], port).into()),
    );
    let res = ResourcesDir::new().with(
        "ps.yaml",
        &component("ps", "pubsub.in-memory", &[("redeliverInterval", "200ms")]),
    );
    let p = MechaProcess::builder(MECHA)
        .app_id("grpc-sub")
        .resources(res.path())
        .args(["--app-port", &port.to_string(), "--app-protocol", "grpc"])
        .env("APP_API_TOKEN", "app-secret")
        .start()
        .await;
    let http = reqwest::Client::new();
    crate::pubsub::wait_ready(&http, &p).await;

    let mut client = DaprClient::connect(p.grpc_url()).await.unwrap();
    let publish = |topic: &str, data: &str| rt::PublishEventRequest {
        pubsub_name: "ps".into(),
        topic: topic.into(),
        data: data.as_bytes().to_vec(),
        data_content_type: "application/json".into(),
        metadata: Default::default(),
    };
    for (topic, data) in [
        ("orders", r#"{"kind":"plain"}"#),
        ("orders", r#"{"kind":"gold"}"#),
        ("flaky", r#"{"n":1}"#),
        ("unwanted", r#"{"n":2}"#),
    ] {
        client.publish_event(publish(topic, data)).await.unwrap();
    }
    let at = |path: &str| -> Vec<(rt::TopicEventRequest, Option<String>)> {
        app.events
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _, _)| p == path)
            .map(|(_, e, t)| (e.clone(), t.clone()))
            .collect()
    };
    eventually!(
        Duration::from_secs(10),
        at("/orders").len() == 1
            && at("/gold").len() == 1
            && at("/flaky").len() == 2
            && at("/graveyard").len() == 1,
        "events not delivered as expected: {:?}\n{}",
        app.events
            .lock()
            .unwrap()
            .iter()
            .map(|(p, _, _)| p.clone())
            .collect::<Vec<_>>(),
        p.log()
    );
    let (gold, token) = at("/gold").remove(0);
    assert_eq!(gold.data, br#"{"kind":"gold"}"#.to_vec());
    assert_eq!(gold.topic, "orders");
    assert_eq!(gold.pubsub_name, "ps");
    assert_eq!(gold.source, "grpc-sub");
    assert_eq!(gold.r#type, "com.dapr.event.sent");
    assert_eq!(gold.spec_version, "1.0");
    assert_eq!(gold.data_content_type, "application/json");
    assert_eq!(token.as_deref(), Some("app-secret"));
    let flaky = at("/flaky");
    assert_eq!(
        flaky[0].0.id, flaky[1].0.id,
        "RETRY redelivers the same event"
    );
    // DROP with a dead-letter topic: the graveyard subscription gets the dropped event.
    assert_eq!(at("/graveyard")[0].0.data, br#"{"n":2}"#.to_vec());

    // Bulk publish over gRPC, bulk delivery to OnBulkTopicEvent.
    let entries = (0..12)
        .map(|i| rt::BulkPublishRequestEntry {
            entry_id: i.to_string(),
            event: format!(r#"{{"i":{i}}}"#).into_bytes(),
            content_type: "application/json".into(),
            metadata: Default::default(),
        })
        .collect();
    let r = client
        .bulk_publish_event(rt::BulkPublishRequest {
            pubsub_name: "ps".into(),
            topic: "batch".into(),
            entries,
            metadata: Default::default(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.failed_entries.is_empty(), "{:?}", r.failed_entries);
    let delivered = || -> usize {
        app.bulk
            .lock()
            .unwrap()
            .iter()
            .map(|b| b.entries.len())
            .sum()
    };
    eventually!(
        Duration::from_secs(10),
        delivered() == 12,
        "bulk events not delivered: {}",
        delivered()
    );
    let batches = app.bulk.lock().unwrap().clone();
    assert!(batches.iter().all(|b| b.entries.len() <= 5));
    assert!(batches.len() >= 3);
    assert_eq!(batches[0].topic, "batch");
    assert_eq!(batches[0].path, "/batch");

    // Errors over gRPC.
    let err = client
        .publish_event(rt::PublishEventRequest {
            pubsub_name: "nope".into(),
            ..publish("t", "{}")
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("not found"), "{}", err.message());
}

/// A gRPC app's `AppCallbackHealthCheck`: failures make the sidecar report the app unhealthy
/// and hold deliveries; once it answers again, the held event arrives.
#[tokio::test(flavor = "multi_thread")]
async fn grpc_app_health_check_pauses_and_resumes_deliveries() {
    use dapr::dapr::proto::runtime::v1::app_callback_health_check_server::{
        AppCallbackHealthCheck, AppCallbackHealthCheckServer,
    };
    use std::sync::atomic::{AtomicBool, Ordering};
    #[derive(Clone)]
    struct Health(Arc<AtomicBool>);
    #[tonic::async_trait]
    impl AppCallbackHealthCheck for Health {
        async fn health_check(
            &self,
            _: Request<()>,
        ) -> Result<Response<rt::HealthCheckResponse>, Status> {
            if self.0.load(Ordering::SeqCst) {
                Ok(Response::new(rt::HealthCheckResponse {}))
            } else {
                Err(Status::unavailable("not now"))
            }
        }
    }
    let healthy = Arc::new(AtomicBool::new(true));
    let app = App::default();
    let port = free_port();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AppCallbackServer::new(app.clone()))
            .add_service(AppCallbackHealthCheckServer::new(Health(healthy.clone())))
            .serve(([127, 0, 0, 1], port).into()),
    );
    let res = ResourcesDir::new().with("ps.yaml", &component("ps", "pubsub.in-memory", &[]));
    let p = MechaProcess::builder(MECHA)
        .app_id("grpc-health")
        .resources(res.path())
        .args([
            "--app-port",
            &port.to_string(),
            "--app-protocol",
            "grpc",
            "--enable-app-health-check",
            "--app-health-probe-interval",
            "1",
            "--app-health-threshold",
            "1",
        ])
        .start()
        .await;
    let http = reqwest::Client::new();
    crate::pubsub::wait_ready(&http, &p).await;
    let app_health = || {
        let (http, url) = (http.clone(), format!("{}/v1.0/metadata", p.http_url()));
        async move {
            let v: serde_json::Value = http.get(url).send().await.unwrap().json().await.unwrap();
            v["extended"]["appHealth"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        }
    };
    assert_eq!(app_health().await, "healthy");
    healthy.store(false, Ordering::SeqCst);
    eventually!(
        Duration::from_secs(10),
        app_health().await == "unhealthy",
        "the failing HealthCheck was not noticed:\n{}",
        p.log()
    );
    let mut client = DaprClient::connect(p.grpc_url()).await.unwrap();
    client
        .publish_event(rt::PublishEventRequest {
            pubsub_name: "ps".into(),
            topic: "orders".into(),
            data: br#"{"held":true}"#.to_vec(),
            data_content_type: "application/json".into(),
            metadata: Default::default(),
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        app.events.lock().unwrap().is_empty(),
        "an event reached the unhealthy app"
    );
    healthy.store(true, Ordering::SeqCst);
    eventually!(
        Duration::from_secs(10),
        app.events.lock().unwrap().len() == 1,
        "the held event was not delivered after recovery"
    );
}
