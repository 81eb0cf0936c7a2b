//! `pubsub.rabbitmq` tests.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};
use mecha_components::pubsub::rabbitmq::RabbitMqPubSub;
use mecha_conformance::pubsub::{Options, run};
use mecha_core::component::ComponentError;
use mecha_core::pubsub::{PubSub, PubSubError, PubSubFeature};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::{accepted_until, init, next, recorder, request, subscribe, unique};

fn url() -> String {
    std::env::var("MECHA_TEST_RABBITMQ_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".to_owned())
}

async fn broker(app_id: &str, url: &str) -> Arc<dyn PubSub> {
    RabbitMqPubSub::create(init(
        app_id,
        &[
            ("connectionString", url),
            ("redeliverInterval", "200ms"),
            ("reconnectWait", "300ms"),
        ],
    ))
    .await
    .expect("pubsub.rabbitmq create failed")
}

/// Deletes the queues `{group}-{topic}` and the exchanges `topic`.
async fn cleanup(groups: &[&str], topics: &[&str]) {
    let conn = Connection::connect(&url(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    for t in topics {
        for g in groups {
            let q = format!("{g}-{t}");
            ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await
                .unwrap();
        }
        ch.exchange_delete((*t).into(), ExchangeDeleteOptions::default())
            .await
            .unwrap();
    }
    let _ = conn.close(200, "test done".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_conformance() {
    let url = url();
    run(Options::new(Duration::from_secs(2)), |app_id| {
        let url = url.clone();
        async move { broker(&app_id, &url).await }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_metadata_ttl_and_redelivery() {
    let app = unique("rmq-app");
    let topic = unique("rmq-topic");
    let b = broker(&app, &url()).await;
    assert!(b.features().contains(&PubSubFeature::Ttl));
    assert!(b.features().contains(&PubSubFeature::MessageMetadata));
    let (handler, mut rx) = recorder(2);
    let sub = subscribe(&*b, &topic, 1, handler).await;
    let mut req = request(&topic, "payload");
    req.content_type = Some("application/json".to_owned());
    req.metadata.insert("k1".to_owned(), "v1".to_owned());
    req.metadata
        .insert("ttlInSeconds".to_owned(), "60".to_owned());
    let started = Instant::now();
    b.publish(req).await.unwrap();
    // Refused twice, then accepted: three deliveries of the same message.
    for accepted in [false, false, true] {
        let (m, ok) = next(&mut rx, Duration::from_secs(10)).await;
        assert_eq!(ok, accepted);
        assert_eq!(m.data, Bytes::from_static(b"payload"));
        assert_eq!(m.topic, topic);
        assert_eq!(m.content_type.as_deref(), Some("application/json"));
        assert_eq!(m.metadata.get("k1").map(String::as_str), Some("v1"));
        assert!(!m.metadata.contains_key("x-mecha-expires-at"));
    }
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "redelivery delay not kept"
    );
    // Nothing more: the accepted message was acked.
    assert!(
        tokio::time::timeout(Duration::from_millis(800), rx.recv())
            .await
            .is_err()
    );
    // A bad TTL is refused.
    let mut bad = request(&topic, "x");
    bad.metadata
        .insert("ttlInSeconds".to_owned(), "soon".to_owned());
    assert!(matches!(
        b.publish(bad).await,
        Err(PubSubError::BadRequest(_))
    ));
    assert!(matches!(
        b.publish(request("", "x")).await,
        Err(PubSubError::BadRequest(_))
    ));
    sub.stop().await;
    b.close().await;
    cleanup(&[&app], &[&topic]).await;
}

/// A TCP proxy whose connections can be cut (and new ones refused) and restored.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    conns: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = {
            let (up, conns) = (up.clone(), conns.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((mut inbound, _)) = listener.accept().await else {
                        return;
                    };
                    if !up.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let target = target.clone();
                    conns.lock().unwrap().push(tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(&target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    }));
                }
            })
        };
        Self {
            port,
            up,
            conns,
            accept,
        }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// `url` with its host and port replaced by 127.0.0.1:`port`, and the original `host:port`.
fn through(url: &str, port: u16) -> (String, String) {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (userinfo, hostpart) = match rest.rsplit_once('@') {
        Some((u, h)) => (format!("{u}@"), h),
        None => (String::new(), rest),
    };
    let (authority, path) = match hostpart.split_once('/') {
        Some((a, p)) => (a, format!("/{p}")),
        None => (hostpart, String::new()),
    };
    let target = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:5672")
    };
    (
        format!("{scheme}://{userinfo}127.0.0.1:{port}{path}"),
        target,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_reconnects_after_connection_cut() {
    let probe = Proxy::start(String::new()).await;
    let (_, target) = through(&url(), probe.port);
    drop(probe);
    let proxy = Proxy::start(target).await;
    let (proxied_url, _) = through(&url(), proxy.port);
    let app = unique("rmq-cut-app");
    let topic = unique("rmq-cut-topic");
    let via_proxy = broker(&app, &proxied_url).await;
    let direct = broker(&unique("rmq-cut-publisher"), &url()).await;
    let (handler, mut rx) = recorder(0);
    let sub = subscribe(&*via_proxy, &topic, 2, handler).await;

    let mut want = HashSet::new();
    for i in 0..5 {
        let data = Bytes::from(format!("before-{i}"));
        via_proxy
            .publish(request(&topic, data.clone()))
            .await
            .unwrap();
        want.insert(data);
    }
    accepted_until(&mut rx, &want, Duration::from_secs(10)).await;

    proxy.cut();
    // Publishing through the cut connection fails, in bounded time.
    let started = Instant::now();
    let err = via_proxy
        .publish(request(&topic, "during-outage"))
        .await
        .expect_err("a publish through a cut connection must fail");
    assert!(matches!(err, PubSubError::Backend(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(16),
        "took {:?}",
        started.elapsed()
    );
    // Messages accepted by the broker meanwhile wait in the group's queue.
    let mut want = HashSet::new();
    for i in 0..5 {
        let data = Bytes::from(format!("outage-{i}"));
        direct.publish(request(&topic, data.clone())).await.unwrap();
        want.insert(data);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.restore();

    // The subscription comes back by itself and gets them; publishing works again.
    accepted_until(&mut rx, &want, Duration::from_secs(20)).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match via_proxy.publish(request(&topic, "after")).await {
            Ok(()) => break,
            Err(e) => {
                assert!(Instant::now() < deadline, "publishing did not recover: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let want = HashSet::from([Bytes::from_static(b"after")]);
    accepted_until(&mut rx, &want, Duration::from_secs(10)).await;

    sub.stop().await;
    via_proxy.close().await;
    direct.close().await;
    cleanup(&[&app], &[&topic]).await;
}

#[tokio::test]
async fn rabbitmq_bad_metadata() {
    let create = |md: &[(&str, &str)]| RabbitMqPubSub::create(init("bad-app", md));
    let err = create(&[]).await.err().expect("no connection string");
    assert!(
        matches!(err, ComponentError::MissingField("connectionString")),
        "{err}"
    );
    let err = create(&[("connectionString", "http://x")])
        .await
        .err()
        .expect("bad scheme");
    assert!(
        matches!(
            err,
            ComponentError::InvalidField {
                field: "connectionString",
                ..
            }
        ),
        "{err}"
    );
    let u = url();
    for (field, value) in [
        ("enableDeadLetter", "true"),
        ("deliveryMode", "5"),
        ("exchangeKind", "bogus"),
        ("durable", "maybe"),
        ("prefetchCount", "70000"),
        ("redeliverInterval", "soon"),
        ("caCert", "-----BEGIN CERTIFICATE-----"),
    ] {
        let err = create(&[("connectionString", &u), (field, value)])
            .await
            .err()
            .unwrap_or_else(|| panic!("{field}={value} must be refused"));
        assert!(
            matches!(&err, ComponentError::InvalidField { field: f, .. } if *f == field),
            "{field}: {err}"
        );
    }
    // Unreachable broker: a clear init error, quickly.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let started = Instant::now();
    let err = create(&[("host", &format!("amqp://guest:guest@127.0.0.1:{port}"))])
        .await
        .err()
        .expect("unreachable broker");
    assert!(matches!(err, ComponentError::Init(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // The hostname form builds a URI.
    let ok = create(&[
        ("hostname", "127.0.0.1"),
        ("username", "guest"),
        ("password", "guest"),
    ])
    .await;
    if u.starts_with("amqp://guest:guest@127.0.0.1") {
        assert!(ok.is_ok(), "{:?}", ok.err());
    }
}
