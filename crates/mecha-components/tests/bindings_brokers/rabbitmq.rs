//! `bindings.rabbitmq` on the shared RabbitMQ; outages by closing the component's connection
//! from the broker side (`rabbitmqctl close_connection`), never by restarting the broker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::options::{BasicGetOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};
use mecha_components::bindings::rabbitmq::RabbitMqBinding;
use mecha_core::bindings::{BindingComponent, BindingError, InputBinding, OutputBinding};

use super::{assert_quiet, create, init, next, recorder, unique};

const WAIT: Duration = Duration::from_secs(15);

fn shared_url() -> String {
    std::env::var("MECHA_TEST_RABBITMQ_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".into())
}

async fn component(name: &str, queue: &str, extra: &[(&str, &str)]) -> Arc<BindingComponent> {
    let url = shared_url();
    let mut md = vec![("host", url.as_str()), ("queueName", queue)];
    md.extend_from_slice(extra);
    RabbitMqBinding::create(init(name, &md)).await.unwrap()
}

fn sides(c: &Arc<BindingComponent>) -> (Arc<dyn InputBinding>, Arc<dyn OutputBinding>) {
    (c.input.clone().unwrap(), c.output.clone().unwrap())
}

/// A plain client on the shared broker.
async fn raw() -> (Connection, lapin::Channel) {
    let conn = Connection::connect(&shared_url(), ConnectionProperties::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    (conn, channel)
}

async fn delete_queue(queue: &str) {
    let (conn, channel) = raw().await;
    let _ = channel
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await;
    let _ = conn.close(200, "done".into()).await;
}

#[tokio::test]
async fn round_trip_with_headers_as_event_metadata() {
    let queue = unique("mecha-rt");
    let (input, output) = sides(&component(&unique("rt"), &queue, &[]).await);
    let (handler, mut rx) = recorder(0);
    input.read(handler).await.unwrap();
    let res = output
        .invoke(create("hello", &[("custom", "a b/c")]))
        .await
        .unwrap();
    assert_eq!(res.data, None);
    let (event, accepted) = next(&mut rx, WAIT).await;
    assert!(accepted);
    assert_eq!(&event.data[..], b"hello");
    assert_eq!(
        event.metadata.get("custom").map(String::as_str),
        Some("a+b%2Fc")
    );
    input.close().await;
    output.close().await;
    delete_queue(&queue).await;
}

#[tokio::test]
async fn message_properties_follow_metadata() {
    let queue = unique("mecha-props");
    let (_, output) = sides(
        &component(
            &unique("props"),
            &queue,
            &[("durable", "true"), ("maxPriority", "5")],
        )
        .await,
    );
    output.invoke(create("a", &[])).await.unwrap();
    output
        .invoke(create(
            "b",
            &[("contentType", "application/json"), ("priority", "3")],
        ))
        .await
        .unwrap();
    let (conn, channel) = raw().await;
    let get = |c: lapin::Channel, q: String| async move {
        c.basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .expect("a message")
            .delivery
    };
    // Priority 3 is served before the default priority 0.
    let first = get(channel.clone(), queue.clone()).await;
    assert_eq!(&first.data[..], b"b");
    assert_eq!(
        first.properties.content_type().as_ref().map(|c| c.as_str()),
        Some("application/json")
    );
    assert_eq!(*first.properties.priority(), Some(3));
    assert_eq!(*first.properties.delivery_mode(), Some(2));
    let second = get(channel.clone(), queue.clone()).await;
    assert_eq!(&second.data[..], b"a");
    assert_eq!(
        second
            .properties
            .content_type()
            .as_ref()
            .map(|c| c.as_str()),
        Some("text/plain")
    );
    let _ = conn.close(200, "done".into()).await;
    output.close().await;
    delete_queue(&queue).await;
}

#[tokio::test]
async fn per_message_ttl_expires_unconsumed_messages() {
    let queue = unique("mecha-ttl");
    let (input, output) = sides(&component(&unique("ttl"), &queue, &[]).await);
    output
        .invoke(create("short-lived", &[("ttlInSeconds", "1")]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    output.invoke(create("marker", &[])).await.unwrap();
    let (handler, mut rx) = recorder(0);
    input.read(handler).await.unwrap();
    assert_eq!(&next(&mut rx, WAIT).await.0.data[..], b"marker");
    assert_quiet(&mut rx, Duration::from_millis(500)).await;

    let err = output
        .invoke(create("x", &[("ttlInSeconds", "soon")]))
        .await;
    assert!(matches!(err, Err(BindingError::BadRequest(_))), "{err:?}");
    input.close().await;
    output.close().await;
    delete_queue(&queue).await;
}

#[tokio::test]
async fn queue_ttl_applies_to_every_message() {
    let queue = unique("mecha-qttl");
    let (input, output) =
        sides(&component(&unique("qttl"), &queue, &[("ttlInSeconds", "1")]).await);
    output.invoke(create("old", &[])).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    output.invoke(create("new", &[])).await.unwrap();
    let (handler, mut rx) = recorder(0);
    input.read(handler).await.unwrap();
    assert_eq!(&next(&mut rx, WAIT).await.0.data[..], b"new");
    assert_quiet(&mut rx, Duration::from_millis(500)).await;
    input.close().await;
    output.close().await;
    delete_queue(&queue).await;
}

#[tokio::test]
async fn priority_queue_delivers_higher_priorities_first() {
    let queue = unique("mecha-prio");
    let (input, output) =
        sides(&component(&unique("prio"), &queue, &[("maxPriority", "10")]).await);
    for (body, priority) in [("low", "1"), ("high", "9"), ("mid", "5")] {
        output
            .invoke(create(body, &[("priority", priority)]))
            .await
            .unwrap();
    }
    let (handler, mut rx) = recorder(0);
    input.read(handler).await.unwrap();
    for expected in ["high", "mid", "low"] {
        assert_eq!(&next(&mut rx, WAIT).await.0.data[..], expected.as_bytes());
    }
    input.close().await;
    output.close().await;
    delete_queue(&queue).await;
}

#[tokio::test]
async fn failed_deliveries_are_requeued_until_accepted_once() {
    let queue = unique("mecha-nack");
    let (input, output) = sides(&component(&unique("nack"), &queue, &[]).await);
    let (handler, mut rx) = recorder(2);
    input.read(handler).await.unwrap();
    output.invoke(create("again", &[])).await.unwrap();
    for expected in [false, false, true] {
        let (event, accepted) = next(&mut rx, WAIT).await;
        assert_eq!(&event.data[..], b"again");
        assert_eq!(accepted, expected);
    }
    assert_quiet(&mut rx, Duration::from_secs(1)).await;
    input.close().await;
    output.close().await;
    delete_queue(&queue).await;
}

#[tokio::test]
async fn bad_metadata_and_requests_are_refused() {
    let url = shared_url();
    let dead = format!("amqp://guest:guest@127.0.0.1:{}", free_port());
    for md in [
        vec![("queueName", "q")],
        vec![("host", url.as_str())],
        vec![
            ("host", url.as_str()),
            ("queueName", "q"),
            ("caCert", "-----BEGIN"),
        ],
        vec![
            ("host", url.as_str()),
            ("queueName", "q"),
            ("externalSasl", "true"),
        ],
        vec![
            ("host", url.as_str()),
            ("queueName", "q"),
            ("prefetchCount", "-1"),
        ],
    ] {
        assert!(
            RabbitMqBinding::create(init("bad", &md)).await.is_err(),
            "{md:?}"
        );
    }
    let started = Instant::now();
    let err = RabbitMqBinding::create(init("bad", &[("host", &dead), ("queueName", "q")])).await;
    assert!(err.is_err());
    assert!(started.elapsed() < Duration::from_secs(6));

    let queue = unique("mecha-bad");
    let (_, output) = sides(&component(&unique("bad"), &queue, &[]).await);
    let mut req = create("x", &[]);
    req.operation = "get".into();
    let err = output.invoke(req).await.unwrap_err();
    assert!(
        matches!(err, BindingError::UnsupportedOperation { .. }),
        "{err:?}"
    );
    let err = output.invoke(create("x", &[("priority", "high")])).await;
    assert!(matches!(err, Err(BindingError::BadRequest(_))), "{err:?}");
    output.close().await;
    delete_queue(&queue).await;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Closes, from the broker side, every connection whose client properties name `name`.
async fn close_connections_named(name: &str) -> usize {
    let out = tokio::process::Command::new("rabbitmqctl")
        .args(["-q", "list_connections", "pid", "client_properties"])
        .output()
        .await
        .expect("rabbitmqctl");
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut closed = 0;
    for line in listing.lines().filter(|l| l.contains(name)) {
        let pid = line.split('\t').next().unwrap_or_default().trim();
        let status = tokio::process::Command::new("rabbitmqctl")
            .args(["close_connection", pid, "mecha outage test"])
            .output()
            .await
            .expect("rabbitmqctl");
        assert!(status.status.success(), "{pid}: {status:?}\n{listing}");
        closed += 1;
    }
    closed
}

#[tokio::test]
async fn both_sides_recover_after_the_broker_closes_the_connection() {
    let queue = unique("mecha-outage");
    let name = unique("outage");
    let c = component(&name, &queue, &[("reconnectWaitInSeconds", "1")]).await;
    let (input, output) = sides(&c);
    let (handler, mut rx) = recorder(0);
    input.read(handler).await.unwrap();
    output.invoke(create("before", &[])).await.unwrap();
    assert_eq!(&next(&mut rx, WAIT).await.0.data[..], b"before");

    let connection_name = format!("mecha-brokers-tests-{name}");
    assert_eq!(close_connections_named(&connection_name).await, 1);

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    loop {
        n += 1;
        let body = format!("after-{n}");
        let started = Instant::now();
        let sent = output.invoke(create(&body, &[])).await;
        assert!(started.elapsed() < Duration::from_secs(12));
        if sent.is_ok()
            && let Ok(Some((event, _))) =
                tokio::time::timeout(Duration::from_secs(2), rx.recv()).await
        {
            assert!(event.data.starts_with(b"after-"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery after the connection was closed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    input.close().await;
    output.close().await;
    delete_queue(&queue).await;
}
