//! `bindings.mqtt3` on the shared Mosquitto and on a private one for outages.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mecha_components::bindings::mqtt3::MqttBinding;
use mecha_core::bindings::{BindingComponent, BindingError, InputBinding, OutputBinding};

use super::{assert_quiet, create, init, next, recorder, unique};

const WAIT: Duration = Duration::from_secs(15);

fn shared_url() -> String {
    std::env::var("MECHA_TEST_MQTT_URL").unwrap_or_else(|_| "tcp://127.0.0.1:1883".into())
}

async fn component(url: &str, extra: &[(&str, &str)]) -> Arc<BindingComponent> {
    let mut md = vec![("url", url)];
    md.extend_from_slice(extra);
    MqttBinding::create(init("mqtt", &md)).await.unwrap()
}

fn sides(c: &Arc<BindingComponent>) -> (Arc<dyn InputBinding>, Arc<dyn OutputBinding>) {
    (c.input.clone().unwrap(), c.output.clone().unwrap())
}

#[tokio::test]
async fn round_trip_with_topic_metadata_and_topic_override() {
    let topic = unique("mecha/in");
    let id = unique("rt");
    let (input, _) =
        sides(&component(&shared_url(), &[("topic", &topic), ("consumerID", &id)]).await);
    let (handler, mut rx) = recorder(0);
    input.read(handler).await.unwrap();

    // Another component whose default topic is elsewhere publishes with a `topic` override.
    let other = unique("mecha/other");
    let (_, output) = sides(
        &component(
            &shared_url(),
            &[("topic", &other), ("consumerID", &unique("p"))],
        )
        .await,
    );
    let res = output
        .invoke(create("hello", &[("topic", &topic)]))
        .await
        .unwrap();
    assert_eq!(res.data, None);
    let (event, accepted) = next(&mut rx, WAIT).await;
    assert!(accepted);
    assert_eq!(&event.data[..], b"hello");
    assert_eq!(event.metadata.get("topic"), Some(&topic));

    // Its default topic is not ours.
    output.invoke(create("elsewhere", &[])).await.unwrap();
    assert_quiet(&mut rx, Duration::from_millis(500)).await;
    input.close().await;
    output.close().await;
}

#[tokio::test]
async fn bad_requests_and_unsupported_operations() {
    let (input, output) = sides(&component(&shared_url(), &[("consumerID", &unique("bad"))]).await);
    let err = output.invoke(create("x", &[])).await.unwrap_err();
    assert!(matches!(err, BindingError::BadRequest(_)), "{err:?}");
    let mut req = create("x", &[("topic", "a/b")]);
    req.operation = "delete".into();
    let err = output.invoke(req).await.unwrap_err();
    assert!(
        matches!(err, BindingError::UnsupportedOperation { .. }),
        "{err:?}"
    );
    let err = output
        .invoke(create("x", &[("topic", "a/b"), ("retain", "maybe")]))
        .await;
    assert!(matches!(err, Err(BindingError::BadRequest(_))), "{err:?}");
    let (handler, _rx) = recorder(0);
    assert!(input.read(handler).await.is_err(), "input without a topic");

    for md in [
        vec![("topic", "t")],
        vec![("url", "http://x:1"), ("topic", "t")],
        vec![("url", "tcp://h:1883"), ("qos", "3")],
        vec![("url", "ssl://h:8883")],
        vec![("url", "ssl://h:8883"), ("caCert", "not pem")],
        vec![("url", "tcp://h:1883"), ("backOffMaxRetries", "-2")],
    ] {
        assert!(
            MqttBinding::create(init("mqtt", &md)).await.is_err(),
            "{md:?}"
        );
    }
}

#[tokio::test]
async fn retained_messages_reach_later_subscribers_and_qos0_works() {
    let topic = unique("mecha/retain");
    let (_, output) = sides(
        &component(
            &shared_url(),
            &[("topic", &topic), ("consumerID", &unique("r"))],
        )
        .await,
    );
    output
        .invoke(create("kept", &[("retain", "true")]))
        .await
        .unwrap();

    let (input, _) = sides(
        &component(
            &shared_url(),
            &[
                ("topic", &topic),
                ("consumerID", &unique("r")),
                ("qos", "0"),
                ("cleanSession", "true"),
            ],
        )
        .await,
    );
    let (handler, mut rx) = recorder(0);
    input.read(handler).await.unwrap();
    let (event, _) = next(&mut rx, WAIT).await;
    assert_eq!(&event.data[..], b"kept");

    // QoS 0 publishes are delivered too.
    let (_, qos0) = sides(
        &component(
            &shared_url(),
            &[
                ("topic", &topic),
                ("consumerID", &unique("q")),
                ("qos", "0"),
            ],
        )
        .await,
    );
    qos0.invoke(create("fast", &[])).await.unwrap();
    let (event, _) = next(&mut rx, WAIT).await;
    assert_eq!(&event.data[..], b"fast");

    // Clear the retained message.
    output
        .invoke(create("", &[("retain", "true")]))
        .await
        .unwrap();
    input.close().await;
}

#[tokio::test]
async fn failed_deliveries_are_redelivered_until_accepted_once() {
    let topic = unique("mecha/redeliver");
    let c = component(
        &shared_url(),
        &[("topic", &topic), ("consumerID", &unique("rd"))],
    )
    .await;
    let (input, output) = sides(&c);
    let (handler, mut rx) = recorder(2);
    input.read(handler).await.unwrap();
    output.invoke(create("again", &[])).await.unwrap();
    for expected in [false, false, true] {
        let (event, accepted) = next(&mut rx, WAIT).await;
        assert_eq!(&event.data[..], b"again");
        assert_eq!(accepted, expected);
    }
    output.invoke(create("second", &[])).await.unwrap();
    let (event, accepted) = next(&mut rx, WAIT).await;
    assert_eq!((&event.data[..], accepted), (&b"second"[..], true));
    // Accepted messages are not delivered again.
    assert_quiet(&mut rx, Duration::from_secs(2)).await;
    input.close().await;
}

#[tokio::test]
async fn in_process_retries_follow_back_off_max_retries() {
    let topic = unique("mecha/retry");
    let c = component(
        &shared_url(),
        &[
            ("topic", &topic),
            ("consumerID", &unique("br")),
            ("backOffMaxRetries", "1"),
        ],
    )
    .await;
    let (input, output) = sides(&c);
    let (handler, mut rx) = recorder(1);
    input.read(handler).await.unwrap();
    output.invoke(create("retry", &[])).await.unwrap();
    assert!(!next(&mut rx, WAIT).await.1);
    assert!(next(&mut rx, WAIT).await.1);
    assert_quiet(&mut rx, Duration::from_secs(1)).await;
    input.close().await;
}

#[tokio::test]
async fn persistent_session_keeps_messages_while_the_consumer_is_away() {
    let topic = unique("mecha/away");
    let id = unique("away");
    let md = [("topic", topic.as_str()), ("consumerID", id.as_str())];
    let (input, output) = sides(&component(&shared_url(), &md).await);
    let (handler, _rx) = recorder(0);
    input.read(handler).await.unwrap();
    input.close().await;

    output.invoke(create("while-away-1", &[])).await.unwrap();
    output.invoke(create("while-away-2", &[])).await.unwrap();

    let (input, _) = sides(&component(&shared_url(), &md).await);
    let (handler, mut rx) = recorder(0);
    input.read(handler).await.unwrap();
    let mut got = vec![
        next(&mut rx, WAIT).await.0.data,
        next(&mut rx, WAIT).await.0.data,
    ];
    got.sort();
    assert_eq!(got, vec![&b"while-away-1"[..], &b"while-away-2"[..]]);
    input.close().await;
}

/// A private `mosquitto` on a fixed port, killed on drop.
struct PrivateMosquitto {
    port: u16,
    child: Child,
}

impl PrivateMosquitto {
    async fn start(port: u16) -> Self {
        let child = Command::new("mosquitto")
            .args(["-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start mosquitto");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { port, child }
    }

    fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateMosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn outage_fails_fast_and_both_sides_recover_after_restart() {
    let port = free_port();
    let broker = PrivateMosquitto::start(port).await;
    let topic = unique("mecha/outage");
    let c = component(
        &broker.url(),
        &[("topic", &topic), ("consumerID", &unique("o"))],
    )
    .await;
    let (input, output) = sides(&c);
    let (handler, mut rx) = recorder(0);
    input.read(handler).await.unwrap();
    output.invoke(create("before", &[])).await.unwrap();
    assert_eq!(&next(&mut rx, WAIT).await.0.data[..], b"before");

    drop(broker);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let err = output.invoke(create("during", &[])).await.unwrap_err();
    assert!(matches!(err, BindingError::Backend(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "took {:?}",
        started.elapsed()
    );

    let _broker = PrivateMosquitto::start(port).await;
    // The producer reconnects, and the consumer subscribes again on the new broker.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    loop {
        n += 1;
        let body = format!("after-{n}");
        if output.invoke(create(&body, &[])).await.is_ok()
            && let Ok(Some((event, _))) =
                tokio::time::timeout(Duration::from_secs(1), rx.recv()).await
        {
            assert!(event.data.starts_with(b"after-"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery after the broker restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    input.close().await;
    output.close().await;
}

#[tokio::test]
async fn unreachable_broker_fails_reads_and_publishes_quickly() {
    let url = format!("tcp://127.0.0.1:{}", free_port());
    let (input, output) = sides(
        &component(
            &url,
            &[("topic", "mecha/none"), ("consumerID", &unique("u"))],
        )
        .await,
    );
    let started = Instant::now();
    let (handler, _rx) = recorder(0);
    let err = input.read(handler).await.unwrap_err();
    assert!(
        matches!(err, BindingError::Backend(ref m) if m.contains("127.0.0.1")),
        "{err:?}"
    );
    let err = output.invoke(create("x", &[])).await.unwrap_err();
    assert!(
        matches!(err, BindingError::Backend(ref m) if m.contains("not reachable")),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "took {:?}",
        started.elapsed()
    );
}
