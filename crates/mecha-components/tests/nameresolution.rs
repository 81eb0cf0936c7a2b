//! The name resolvers: `sqlite` on real files shared by resolvers and processes, `static`
//! parsing, and `dns` against the system resolver and a small UDP nameserver run by the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mecha_components::nameresolution::dns::DnsResolver;
use mecha_components::nameresolution::static_list::StaticResolver;
use mecha_components::nameresolution::{self as registry};
use mecha_core::nameresolution::{Instance, NameResolver, ResolveError, ResolverInit};
use serde_json::{Value, json};
use tokio::time::Instant;

fn init(app_id: &str, configuration: Value) -> ResolverInit {
    ResolverInit {
        app_id: app_id.into(),
        namespace: "default".into(),
        configuration,
        default_path: None,
    }
}

fn instance(app_id: &str, port: u16) -> Instance {
    Instance {
        app_id: app_id.into(),
        namespace: "default".into(),
        host: "127.0.0.1".into(),
        port,
    }
}

fn ports(found: &[Instance]) -> Vec<u16> {
    found.iter().map(|i| i.port).collect()
}

/// Polls `resolver` until `done` holds for the ports of `app_id`, or `limit` passes.
async fn wait_for(
    resolver: &dyn NameResolver,
    app_id: &str,
    limit: Duration,
    done: impl Fn(&[u16]) -> bool,
) -> Vec<u16> {
    let start = Instant::now();
    loop {
        let found = ports(&resolver.resolve(app_id, "default").await.unwrap());
        if done(&found) || start.elapsed() > limit {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn registry_lists_every_resolver() {
    #[cfg(feature = "state-sqlite")]
    assert!(registry::find("sqlite").is_some());
    for name in ["dns", "kubernetes", "static", "STATIC"] {
        assert!(registry::find(name).is_some(), "{name}");
    }
    assert!(registry::find("mdns").is_none());
}

#[cfg(feature = "state-sqlite")]
mod sqlite {
    use super::*;
    use mecha_components::nameresolution::sqlite::SqliteResolver;

    /// A fast heartbeat so that staleness shows within a second.
    fn fast(file: &Path) -> Value {
        json!({
            "connectionString": file.display().to_string(),
            "heartbeatInterval": "100ms",
            "staleAfter": "600ms",
            "cacheTtl": "0",
        })
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn two_resolvers_on_one_file_see_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nested/nr.db");
        let a = SqliteResolver::open(init("appa", fast(&file)))
            .await
            .unwrap();
        let b = SqliteResolver::open(init("appb", fast(&file)))
            .await
            .unwrap();
        let b2 = SqliteResolver::open(init("appb", fast(&file)))
            .await
            .unwrap();
        a.register(&instance("appa", 41001)).await.unwrap();
        b.register(&instance("appb", 41002)).await.unwrap();
        b2.register(&instance("appb", 41012)).await.unwrap();

        assert_eq!(ports(&b.resolve("appa", "default").await.unwrap()), [41001]);
        // Both instances, ordered by instance id, the same from every resolver.
        let mut expected = [(b.instance_id(), 41002), (b2.instance_id(), 41012)];
        expected.sort();
        let expected: Vec<u16> = expected.iter().map(|(_, p)| *p).collect();
        let from_a = a.resolve("appb", "default").await.unwrap();
        assert_eq!(ports(&from_a), expected);
        assert_eq!(from_a, b.resolve("appb", "default").await.unwrap());
        assert_eq!(from_a[0].host, "127.0.0.1");
        assert_eq!(from_a[0].app_id, "appb");
        // Other namespaces and unknown apps are empty, not errors.
        assert!(a.resolve("appb", "prod").await.unwrap().is_empty());
        assert!(a.resolve("nobody", "default").await.unwrap().is_empty());

        // Still there after several heartbeats and past staleAfter.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(
            ports(&a.resolve("appb", "default").await.unwrap()),
            expected
        );
        for r in [&a, &b, &b2] {
            r.close().await;
        }
        assert!(a.resolve("appb", "default").await.unwrap().is_empty());
    }

    /// Also the child process of `killed_process_goes_stale`: with `MECHA_TEST_NR_CHILD_DB`
    /// set, it registers on that file and waits to be killed.
    #[tokio::test(flavor = "multi_thread")]
    async fn close_removes_the_entry() {
        if let Ok(file) = std::env::var("MECHA_TEST_NR_CHILD_DB") {
            let port: u16 = std::env::var("MECHA_TEST_NR_CHILD_PORT")
                .unwrap()
                .parse()
                .unwrap();
            let r = SqliteResolver::open(init("child", fast(Path::new(&file))))
                .await
                .unwrap();
            r.register(&instance("child", port)).await.unwrap();
            println!("REGISTERED");
            tokio::time::sleep(Duration::from_secs(120)).await;
            panic!("the parent should have killed this process");
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nr.db");
        // Heartbeats are slow here: the entry must go because of close, not staleness.
        let slow = json!({"connectionString": file.display().to_string(), "cacheTtl": "0"});
        let a = SqliteResolver::open(init("appa", slow.clone()))
            .await
            .unwrap();
        let reader = SqliteResolver::open(init("reader", slow)).await.unwrap();
        a.register(&instance("appa", 41101)).await.unwrap();
        assert_eq!(
            ports(&reader.resolve("appa", "default").await.unwrap()),
            [41101]
        );
        a.close().await;
        assert!(reader.resolve("appa", "default").await.unwrap().is_empty());
        // The heartbeat is stopped: the entry does not come back.
        tokio::time::sleep(Duration::from_millis(1300)).await;
        assert!(reader.resolve("appa", "default").await.unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn dropped_resolver_goes_stale() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nr.db");
        let reader = SqliteResolver::open(init("reader", fast(&file)))
            .await
            .unwrap();
        let old = SqliteResolver::open(init("appa", fast(&file)))
            .await
            .unwrap();
        old.register(&instance("appa", 41201)).await.unwrap();
        assert_eq!(
            ports(&reader.resolve("appa", "default").await.unwrap()),
            [41201]
        );
        // "Restart" on a new port: the old process vanishes without closing.
        drop(old);
        let new = SqliteResolver::open(init("appa", fast(&file)))
            .await
            .unwrap();
        new.register(&instance("appa", 41202)).await.unwrap();
        let both = ports(&reader.resolve("appa", "default").await.unwrap());
        assert!(both.contains(&41201) && both.contains(&41202), "{both:?}");
        let start = Instant::now();
        let left = wait_for(&reader, "appa", Duration::from_secs(3), |p| p == [41202]).await;
        assert_eq!(left, [41202]);
        let took = start.elapsed();
        assert!(took < Duration::from_millis(1500), "stale after {took:?}");
        new.close().await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn restart_on_the_same_port_replaces_the_old_entry() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nr.db");
        let slow = json!({"connectionString": file.display().to_string(), "cacheTtl": "0"});
        let old = SqliteResolver::open(init("appa", slow.clone()))
            .await
            .unwrap();
        old.register(&instance("appa", 41301)).await.unwrap();
        drop(old);
        let new = SqliteResolver::open(init("appa", slow)).await.unwrap();
        new.register(&instance("appa", 41301)).await.unwrap();
        let found = new.resolve("appa", "default").await.unwrap();
        assert_eq!(ports(&found), [41301]);
        new.close().await;
        assert!(new.resolve("appa", "default").await.unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn killed_process_goes_stale() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nr.db");
        let reader = SqliteResolver::open(init("reader", fast(&file)))
            .await
            .unwrap();
        let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "sqlite::close_removes_the_entry",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("MECHA_TEST_NR_CHILD_DB", &file)
            .env("MECHA_TEST_NR_CHILD_PORT", "41401")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let wait_registered = async {
            use tokio::io::AsyncBufReadExt;
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Some(line) = lines.next_line().await.unwrap() {
                if line.contains("REGISTERED") {
                    return;
                }
            }
            panic!("the child exited before registering");
        };
        tokio::time::timeout(Duration::from_secs(30), wait_registered)
            .await
            .unwrap();
        // Alive and heartbeating: still there after several staleAfter periods.
        assert_eq!(
            ports(&reader.resolve("child", "default").await.unwrap()),
            [41401]
        );
        tokio::time::sleep(Duration::from_millis(1300)).await;
        assert_eq!(
            ports(&reader.resolve("child", "default").await.unwrap()),
            [41401]
        );
        child.start_kill().unwrap();
        child.wait().await.unwrap();
        let start = Instant::now();
        let left = wait_for(&reader, "child", Duration::from_secs(3), <[u16]>::is_empty).await;
        assert!(left.is_empty(), "{left:?}");
        assert!(start.elapsed() < Duration::from_millis(1500));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn resolve_results_are_cached_for_cache_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nr.db");
        let writer = SqliteResolver::open(init("appa", fast(&file)))
            .await
            .unwrap();
        let cached = json!({"connectionString": file.display().to_string(), "cacheTtl": "1500ms"});
        let reader = SqliteResolver::open(init("reader", cached)).await.unwrap();
        assert!(reader.resolve("appa", "default").await.unwrap().is_empty());
        let cached_at = Instant::now();
        writer.register(&instance("appa", 41501)).await.unwrap();
        // Within the TTL the cached (empty) answer is served; afterwards the new one.
        assert!(reader.resolve("appa", "default").await.unwrap().is_empty());
        assert!(cached_at.elapsed() < Duration::from_millis(1500));
        let found = wait_for(&reader, "appa", Duration::from_secs(3), |p| !p.is_empty()).await;
        assert_eq!(found, [41501]);
        assert!(cached_at.elapsed() >= Duration::from_millis(1500));
        writer.close().await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn default_path_and_bad_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let default = dir.path().join(".mecha/nameresolution.db");
        let with_default = ResolverInit {
            default_path: Some(default.clone()),
            ..init("appa", Value::Null)
        };
        let r = (registry::find("sqlite").unwrap().create)(with_default)
            .await
            .unwrap();
        r.register(&instance("appa", 41601)).await.unwrap();
        assert!(default.exists());
        assert_eq!(ports(&r.resolve("appa", "default").await.unwrap()), [41601]);
        r.close().await;

        let config_error = |r: Result<SqliteResolver, ResolveError>| match r {
            Err(ResolveError::Config(msg)) => msg,
            Err(other) => panic!("expected a configuration error, got {other:?}"),
            Ok(_) => panic!("expected a configuration error"),
        };
        let msg = config_error(SqliteResolver::open(init("appa", Value::Null)).await);
        assert!(msg.contains("connectionString"), "{msg}");
        let path = dir.path().join("x.db").display().to_string();
        for bad in [
            json!("a string"),
            json!({"connectionString": path, "heartbeatInterval": "soon"}),
            json!({"connectionString": path, "heartbeatInterval": "0"}),
            json!({"connectionString": path, "heartbeatInterval": "1s", "staleAfter": "1s"}),
            json!({"connectionString": path, "tableName": "no spaces allowed"}),
            json!({"connectionString": ["a list"]}),
        ] {
            config_error(SqliteResolver::open(init("appa", bad)).await);
        }
    }
}

mod static_list {
    use super::*;

    #[tokio::test]
    async fn resolves_listed_addresses() {
        let config = json!({"apps": {
            "appb": ["127.0.0.1:50002", "127.0.0.1:50012", "127.0.0.1:50002"],
            "prod/appb": [{"host": "appb.prod.internal", "port": 50002}],
            "appc": "[::1]:50003",
            "appd": [{"host": "10.0.0.4", "port": "50004"}, "node-2:50004"],
            "empty": [],
        }});
        let r = (registry::find("static").unwrap().create)(init("appa", config))
            .await
            .unwrap();
        r.register(&instance("appa", 1)).await.unwrap();

        let b = r.resolve("appb", "default").await.unwrap();
        assert_eq!(
            ports(&b),
            [50002, 50012],
            "listed order, duplicates removed"
        );
        assert_eq!(b[0], instance("appb", 50002));
        // Plain keys answer in every namespace; `namespace/appid` wins in its namespace.
        assert_eq!(
            ports(&r.resolve("appb", "staging").await.unwrap()),
            [50002, 50012]
        );
        let prod = r.resolve("appb", "prod").await.unwrap();
        assert_eq!(prod.len(), 1);
        assert_eq!(prod[0].host, "appb.prod.internal");
        assert_eq!(prod[0].namespace, "prod");

        let c = r.resolve("appc", "default").await.unwrap();
        assert_eq!((c[0].host.as_str(), c[0].port), ("::1", 50003));
        let d = r.resolve("appd", "default").await.unwrap();
        let d: Vec<_> = d.iter().map(|i| (i.host.as_str(), i.port)).collect();
        assert_eq!(d, [("10.0.0.4", 50004), ("node-2", 50004)]);
        assert!(r.resolve("empty", "default").await.unwrap().is_empty());
        assert!(r.resolve("nobody", "default").await.unwrap().is_empty());
    }

    #[test]
    fn refuses_bad_configuration() {
        for bad in [
            Value::Null,
            json!("appb=127.0.0.1:50002"),
            json!({}),
            json!({"apps": ["127.0.0.1:50002"]}),
            json!({"apps": {"appb": ["127.0.0.1"]}}),
            json!({"apps": {"appb": ["127.0.0.1:0"]}}),
            json!({"apps": {"appb": ["127.0.0.1:http"]}}),
            json!({"apps": {"appb": [":50002"]}}),
            json!({"apps": {"appb": ["::1:50002"]}}),
            json!({"apps": {"appb": ["[::1:50002"]}}),
            json!({"apps": {"appb": [50002]}}),
            json!({"apps": {"appb": [{"host": "h"}]}}),
            json!({"apps": {"appb": [{"port": 1}]}}),
            json!({"apps": {"appb": [{"host": "h", "port": 70000}]}}),
            json!({"apps": {"a/b/c": ["h:1"]}}),
            json!({"apps": {"/appb": ["h:1"]}}),
        ] {
            match StaticResolver::parse(&bad) {
                Err(ResolveError::Config(_)) => {}
                other => panic!("{bad} should be refused, got {other:?}"),
            }
        }
    }
}

mod dns {
    use super::*;

    fn dns_init(configuration: Value) -> ResolverInit {
        init("appb", configuration)
    }

    #[tokio::test]
    async fn builds_kubernetes_names() {
        let r = DnsResolver::open(&dns_init(Value::Null)).await.unwrap();
        assert_eq!(
            r.name_for("appb", "prod"),
            "appb-dapr.prod.svc.cluster.local"
        );
        let r = DnsResolver::open(&dns_init(json!({"clusterDomain": "corp.example."})))
            .await
            .unwrap();
        assert_eq!(
            r.name_for("appb", "default"),
            "appb-dapr.default.svc.corp.example"
        );
        let r = DnsResolver::open(&dns_init(json!({"template": "{appid}.{namespace}.mesh"})))
            .await
            .unwrap();
        assert_eq!(r.name_for("appb", "prod"), "appb.prod.mesh");
    }

    #[tokio::test]
    async fn falls_back_to_addresses_with_the_configured_port() {
        let config = json!({"template": "localhost", "port": 50777, "srvPrefix": ""});
        let r = (registry::find("kubernetes").unwrap().create)(dns_init(config))
            .await
            .unwrap();
        r.register(&instance("appb", 1)).await.unwrap();
        let found = r.resolve("appb", "default").await.unwrap();
        assert!(
            found
                .iter()
                .any(|i| i.host == "127.0.0.1" && i.port == 50777),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .all(|i| i.app_id == "appb" && i.namespace == "default")
        );
        assert!(
            found.iter().all(|i| i.host.parse::<IpAddr>().is_ok()),
            "{found:?}"
        );
        let mut sorted = found.to_vec();
        sorted.sort_by(|a, b| a.host.cmp(&b.host));
        assert_eq!(found.to_vec(), sorted, "stable order");
    }

    #[tokio::test]
    async fn unknown_names_give_no_instance() {
        let config = json!({"template": "{appid}.invalid", "srvPrefix": ""});
        let r = DnsResolver::open(&dns_init(config)).await.unwrap();
        let found = r.resolve("no-such-app", "default").await.unwrap();
        assert!(found.is_empty(), "{found:?}");
    }

    /// What the test nameserver answers.
    #[derive(Clone)]
    enum Answer {
        NxDomain,
        /// SRV records (priority, port, target) and additional A records (name, address).
        Srv(Vec<(u16, u16, &'static str)>, Vec<(&'static str, [u8; 4])>),
        Silent,
    }

    /// A UDP nameserver on 127.0.0.1 answering every query with `answer`; counts queries and
    /// records the names asked.
    struct TestNameserver {
        addr: SocketAddr,
        queries: Arc<AtomicUsize>,
        names: Arc<std::sync::Mutex<Vec<String>>>,
    }

    fn name_bytes(name: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for label in name.split('.') {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
        out
    }

    fn record(out: &mut Vec<u8>, name: &[u8], rtype: u16, rdata: &[u8]) {
        out.extend_from_slice(name);
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&5u32.to_be_bytes());
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(rdata);
    }

    async fn nameserver(answer: Answer) -> TestNameserver {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let queries = Arc::new(AtomicUsize::new(0));
        let names = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (q2, n2) = (queries.clone(), names.clone());
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                let (n, from) = socket.recv_from(&mut buf).await.unwrap();
                let query = &buf[..n];
                q2.fetch_add(1, Ordering::SeqCst);
                // The question: labels from offset 12, then type and class.
                let mut pos = 12;
                let mut labels = Vec::new();
                while query[pos] != 0 {
                    let len = usize::from(query[pos]);
                    labels
                        .push(String::from_utf8_lossy(&query[pos + 1..pos + 1 + len]).into_owned());
                    pos += 1 + len;
                }
                let question_end = pos + 5;
                assert_eq!(&query[pos + 1..pos + 3], &[0, 33], "an SRV query");
                n2.lock().unwrap().push(labels.join("."));
                let (rcode, srv, additional) = match &answer {
                    Answer::Silent => continue,
                    Answer::NxDomain => (3u16, vec![], vec![]),
                    Answer::Srv(srv, additional) => (0, srv.clone(), additional.clone()),
                };
                let mut out = query[..2].to_vec();
                out.extend_from_slice(&(0x8180u16 | rcode).to_be_bytes());
                for count in [1, srv.len(), 0, additional.len()] {
                    out.extend_from_slice(&(count as u16).to_be_bytes());
                }
                out.extend_from_slice(&query[12..question_end]);
                for (priority, port, target) in &srv {
                    let mut rdata = priority.to_be_bytes().to_vec();
                    rdata.extend_from_slice(&1u16.to_be_bytes());
                    rdata.extend_from_slice(&port.to_be_bytes());
                    rdata.extend_from_slice(&name_bytes(target));
                    record(&mut out, &[0xc0, 12], 33, &rdata);
                }
                for (name, ip) in &additional {
                    record(&mut out, &name_bytes(name), 1, ip);
                }
                socket.send_to(&out, from).await.unwrap();
            }
        });
        TestNameserver {
            addr,
            queries,
            names,
        }
    }

    #[tokio::test]
    async fn srv_records_give_instances_and_are_cached() {
        let ns = nameserver(Answer::Srv(
            vec![
                (10, 50012, "pod-b.appb-dapr.default.svc.cluster.local"),
                (10, 50002, "pod-a.appb-dapr.default.svc.cluster.local"),
                (20, 50002, "backup.example"),
            ],
            vec![("pod-a.appb-dapr.default.svc.cluster.local", [10, 1, 0, 7])],
        ))
        .await;
        let config = json!({"nameserver": ns.addr.to_string(), "cacheTtl": "2s"});
        let r = DnsResolver::open(&dns_init(config)).await.unwrap();
        let found = r.resolve("appb", "default").await.unwrap();
        let found: Vec<_> = found.iter().map(|i| (i.host.as_str(), i.port)).collect();
        assert_eq!(
            found,
            [
                ("10.1.0.7", 50002),
                ("pod-b.appb-dapr.default.svc.cluster.local", 50012)
            ]
        );
        assert_eq!(
            ns.names.lock().unwrap().as_slice(),
            ["_dapr-internal._tcp.appb-dapr.default.svc.cluster.local"]
        );
        // Cached: no second query within cacheTtl.
        r.resolve("appb", "default").await.unwrap();
        assert_eq!(ns.queries.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn nxdomain_falls_back_to_addresses() {
        let ns = nameserver(Answer::NxDomain).await;
        let config = json!({
            "nameserver": ns.addr.to_string(),
            "template": "localhost",
            "srvPrefix": "_internal._tcp",
            "cacheTtl": "0",
        });
        let r = DnsResolver::open(&dns_init(config)).await.unwrap();
        let found = r.resolve("appb", "default").await.unwrap();
        assert!(
            found
                .iter()
                .any(|i| i.host == "127.0.0.1" && i.port == 50002),
            "{found:?}"
        );
        assert_eq!(
            ns.names.lock().unwrap().as_slice(),
            ["_internal._tcp.localhost"]
        );
    }

    #[tokio::test]
    async fn silent_nameserver_falls_back_then_skips_srv() {
        let ns = nameserver(Answer::Silent).await;
        let config = json!({
            "nameserver": ns.addr.to_string(),
            "template": "localhost",
            "timeout": "300ms",
            "cacheTtl": "0",
        });
        let r = DnsResolver::open(&dns_init(config)).await.unwrap();
        let start = Instant::now();
        let found = r.resolve("appb", "default").await.unwrap();
        assert!(found.iter().any(|i| i.host == "127.0.0.1"), "{found:?}");
        assert!(start.elapsed() >= Duration::from_millis(300));
        // The nameserver failed: SRV is skipped for a while, so no further wait.
        let start = Instant::now();
        r.resolve("appb", "default").await.unwrap();
        assert!(start.elapsed() < Duration::from_millis(250));
        assert_eq!(ns.queries.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn refuses_bad_configuration() {
        for bad in [
            json!(["a list"]),
            json!({"port": 0}),
            json!({"port": "http"}),
            json!({"port": 70000}),
            json!({"cacheTtl": "soon"}),
            json!({"timeout": "0"}),
            json!({"nameserver": "dns.example"}),
            json!({"template": "{appid}..{namespace}"}),
            json!({"clusterDomain": {"a": 1}}),
        ] {
            match DnsResolver::open(&dns_init(bad.clone())).await {
                Err(ResolveError::Config(_)) => {}
                Err(other) => panic!("{bad}: expected a configuration error, got {other:?}"),
                Ok(_) => panic!("{bad} should be refused"),
            }
        }
    }
}
