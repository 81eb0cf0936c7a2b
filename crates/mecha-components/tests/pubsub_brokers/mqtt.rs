//! `pubsub.mqtt3` tests.

use std::collections::HashSet;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mecha_components::pubsub::mqtt3::MqttPubSub;
use mecha_conformance::pubsub::{Options, run};
use mecha_core::component::ComponentError;
use mecha_core::pubsub::{PubSub, PubSubError, PubSubFeature};

use super::{accepted_until, init, next, recorder, request, subscribe, unique};

fn url() -> String {
    std::env::var("MECHA_TEST_MQTT_URL").unwrap_or_else(|_| "tcp://127.0.0.1:1883".to_owned())
}

async fn broker(app_id: &str, url: &str) -> Arc<dyn PubSub> {
    MqttPubSub::create(init(
        app_id,
        &[("url", url), ("redeliverInterval", "200ms")],
    ))
    .await
    .expect("pubsub.mqtt3 create failed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_conformance() {
    let url = url();
    run(Options::new(Duration::from_secs(2)), |app_id| {
        let url = url.clone();
        async move { broker(&app_id, &url).await }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_retries_in_process_until_accepted() {
    let app = unique("mqtt-app");
    let topic = unique("mqtt-topic");
    let b = broker(&app, &url()).await;
    assert!(!b.features().contains(&PubSubFeature::MessageMetadata));
    assert!(!b.features().contains(&PubSubFeature::Ttl));
    let (handler, mut rx) = recorder(2);
    let sub = subscribe(&*b, &topic, 1, handler).await;
    let started = Instant::now();
    b.publish(request(&topic, "payload")).await.unwrap();
    for accepted in [false, false, true] {
        let (m, ok) = next(&mut rx, Duration::from_secs(10)).await;
        assert_eq!(ok, accepted);
        assert_eq!(m.data, Bytes::from_static(b"payload"));
        assert_eq!(m.topic, topic);
    }
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert!(
        tokio::time::timeout(Duration::from_millis(800), rx.recv())
            .await
            .is_err()
    );
    assert!(matches!(
        b.publish(request("a/+/b", "x")).await,
        Err(PubSubError::BadRequest(_))
    ));
    sub.stop().await;
    b.close().await;
}

/// A private `mosquitto` with persistence, on a fixed port, killed on drop.
struct PrivateMosquitto {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateMosquitto {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let conf = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\n",
            dir.path().display()
        );
        std::fs::write(dir.path().join("mosquitto.conf"), conf).unwrap();
        let mut me = Self {
            port,
            dir,
            child: None,
        };
        me.restart().await;
        me
    }

    async fn restart(&mut self) {
        let child = Command::new("/usr/sbin/mosquitto")
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start mosquitto");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops it with SIGTERM (so it saves its persistence file) and waits for the exit.
    async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().unwrap().is_none() {
                assert!(Instant::now() < deadline, "mosquitto did not stop");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateMosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_survives_broker_restart() {
    let mut server = PrivateMosquitto::start().await;
    let app = unique("mqtt-restart-app");
    let topic = unique("mqtt-restart-topic");
    let b = broker(&app, &server.url()).await;
    let (handler, mut rx) = recorder(0);
    let sub = subscribe(&*b, &topic, 1, handler).await;
    let mut accepted = HashSet::new();
    for i in 0..5 {
        let data = Bytes::from(format!("before-{i}"));
        b.publish(request(&topic, data.clone())).await.unwrap();
        accepted.insert(data);
    }
    accepted_until(&mut rx, &accepted, Duration::from_secs(10)).await;

    server.stop().await;
    // While it is down, publishes fail with a backend error in bounded time.
    for i in 0..3 {
        let started = Instant::now();
        let err = b
            .publish(request(&topic, format!("down-{i}")))
            .await
            .expect_err("a publish to a stopped broker must fail");
        assert!(matches!(err, PubSubError::Backend(_)), "{err:?}");
        assert!(
            started.elapsed() < Duration::from_secs(12),
            "took {:?}",
            started.elapsed()
        );
    }
    server.restart().await;

    // Publishing and the subscription resume by itself: probes are published until one
    // arrives (messages accepted before the subscriber is back may miss the shared
    // subscription, see the module doc), then every accepted message is delivered.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut probe = 0;
    'probing: loop {
        assert!(
            Instant::now() < deadline,
            "delivery did not resume after the restart"
        );
        probe += 1;
        if b.publish(request(&topic, format!("probe-{probe}")))
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let until = Instant::now() + Duration::from_millis(1500);
        while let Ok(Some((m, _))) =
            tokio::time::timeout(until.saturating_duration_since(Instant::now()), rx.recv()).await
        {
            if m.data.starts_with(b"probe-") {
                break 'probing;
            }
        }
    }
    let mut after = HashSet::new();
    for i in 0..5 {
        let data = Bytes::from(format!("after-{i}"));
        b.publish(request(&topic, data.clone())).await.unwrap();
        after.insert(data);
    }
    accepted_until(&mut rx, &after, Duration::from_secs(20)).await;
    sub.stop().await;
    b.close().await;
}

#[tokio::test]
async fn mqtt_bad_metadata() {
    let create = |md: &[(&str, &str)]| MqttPubSub::create(init("bad-app", md));
    let err = create(&[]).await.err().expect("no url");
    assert!(matches!(err, ComponentError::MissingField("url")), "{err}");
    let u = url();
    for (field, md) in [
        ("url", vec![("url", "http://127.0.0.1:1883")]),
        ("url", vec![("url", "127.0.0.1:1883")]),
        ("qos", vec![("url", u.as_str()), ("qos", "3")]),
        (
            "consumerID",
            vec![("url", u.as_str()), ("consumerID", "a/b")],
        ),
        ("caCert", vec![("url", "ssl://127.0.0.1:8883")]),
        (
            "cleanSession",
            vec![("url", u.as_str()), ("cleanSession", "perhaps")],
        ),
        (
            "redeliverInterval",
            vec![("url", u.as_str()), ("redeliverInterval", "x")],
        ),
    ] {
        let err = create(&md)
            .await
            .err()
            .unwrap_or_else(|| panic!("{md:?} must be refused"));
        assert!(
            matches!(&err, ComponentError::InvalidField { field: f, .. } if *f == field),
            "{field}: {err}"
        );
    }
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let started = Instant::now();
    let err = create(&[("url", &format!("tcp://127.0.0.1:{port}"))])
        .await
        .err()
        .expect("unreachable broker");
    assert!(matches!(err, ComponentError::Init(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(12));
}
