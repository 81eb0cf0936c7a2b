use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use serde_json::{Value, json};

use super::retry::BackoffKind;
use super::*;

fn resource(name: &str, spec: Value) -> RawResource {
    RawResource {
        name: name.into(),
        spec,
        scopes: Vec::new(),
        source: PathBuf::from(format!("{name}.yaml")),
    }
}

fn load(spec: Value) -> Resiliency {
    Resiliency::from_resources(&[resource("res", spec)]).unwrap_or_else(|e| panic!("{e}"))
}

fn load_err(spec: Value) -> String {
    match Resiliency::from_resources(&[resource("bad", spec)]) {
        Ok(r) => panic!("expected an error, loaded {r:?}"),
        Err(e) => e,
    }
}

fn parts(p: &Policy) -> &PolicyInner {
    p.inner.as_deref().unwrap_or_else(|| panic!("no-op policy"))
}

/// Runs `policy` with an operation that answers `outcomes` in turn (then `Ok`), counting calls.
async fn run_with(
    policy: &Policy,
    outcomes: &[Attempt<(), &'static str>],
) -> (Result<u32, PolicyError<&'static str>>, u32) {
    let calls = AtomicU32::new(0);
    let res = policy
        .run(|| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            let out = match outcomes.get(n as usize) {
                Some(Attempt::Ok(())) | None => Attempt::Ok(n + 1),
                Some(Attempt::Retryable(e)) => Attempt::Retryable(*e),
                Some(Attempt::Fatal(e)) => Attempt::Fatal(*e),
            };
            async move { out }
        })
        .await;
    (res, calls.load(Ordering::SeqCst))
}

fn reference_spec() -> Value {
    json!({
        "policies": {
            "timeouts": {"general": "5s", "none": "0s"},
            "retries": {
                "fixed": {"policy": "constant", "duration": "5s", "maxRetries": 10},
                "expo": {"policy": "exponential", "maxInterval": "15s", "maxRetries": -1,
                         "matching": {"httpStatusCodes": "429,500-599", "gRPCStatusCodes": "1-4,8-11"}},
                "defaults": {}
            },
            "circuitBreakers": {
                "cb": {"maxRequests": 1, "interval": "8s", "timeout": "45s", "trip": "consecutiveFailures > 8"},
                "plain": {}
            }
        },
        "targets": {
            "apps": {"appB": {"timeout": "general", "retry": "expo", "circuitBreaker": "cb", "circuitBreakerCacheSize": 100}},
            "actors": {"myActor": {"timeout": "general", "retry": "expo", "circuitBreaker": "cb", "circuitBreakerScope": "type"}},
            "components": {"statestore": {"outbound": {"retry": "fixed", "circuitBreaker": "cb"}, "inbound": {"timeout": "general"}}}
        }
    })
}

#[test]
fn parses_the_reference_example() {
    let r = load(reference_spec());
    let spec = &r.inner.spec;
    assert_eq!(spec.timeouts["general"], Duration::from_secs(5));
    let fixed = &spec.retries["fixed"];
    assert_eq!(fixed.backoff, BackoffKind::Constant(Duration::from_secs(5)));
    assert_eq!(fixed.max_retries, Some(10));
    let expo = &spec.retries["expo"];
    assert_eq!(
        expo.backoff,
        BackoffKind::Exponential {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(15),
            multiplier: 1.5,
            randomization: 0.5
        }
    );
    assert_eq!(expo.max_retries, None);
    let defaults = &spec.retries["defaults"];
    assert_eq!(
        defaults.backoff,
        BackoffKind::Constant(Duration::from_secs(5))
    );
    assert_eq!(defaults.max_retries, None);
    let cb = &spec.breakers["cb"];
    assert_eq!(
        (cb.max_requests, cb.interval, cb.timeout),
        (1, Duration::from_secs(8), Duration::from_secs(45))
    );
    let plain = &spec.breakers["plain"];
    assert_eq!(
        (plain.max_requests, plain.interval, plain.timeout),
        (1, Duration::ZERO, Duration::from_secs(60))
    );
    assert_eq!(spec.actors["myActor"].scope, Some(spec::ActorScope::Type));

    let app = r.app("appB");
    let p = parts(&app);
    assert_eq!(p.timeout, Some(Duration::from_secs(5)));
    assert!(p.retry.as_ref().is_some_and(|r| r.max_retries.is_none()));
    assert!(p.breaker.is_some());
    assert!(app.retries_http_status(503) && app.retries_http_status(429));
    assert!(!app.retries_http_status(404));
    assert!(app.retries_grpc_code(4) && !app.retries_grpc_code(5));

    let out = r.component_outbound("statestore");
    let p = parts(&out);
    assert_eq!(p.timeout, None);
    assert!(p.retry.is_some() && p.breaker.is_some());
    assert!(
        out.retries_http_status(404),
        "no matching: every failing code"
    );
    assert!(!out.retries_http_status(200) && !out.retries_http_status(302));
    assert!(!app.retries_http_status(204));
    let inbound = r.component_inbound("statestore");
    let p = parts(&inbound);
    assert_eq!(p.timeout, Some(Duration::from_secs(5)));
    assert!(p.retry.is_none() && p.breaker.is_none());
    assert!(r.actor("myActor").inner.is_some());

    // Targets nobody configured, and no defaults: no-op.
    assert!(r.app("other").is_noop());
    assert!(r.component_outbound("pubsub").is_noop());
}

#[test]
fn durations_numbers_and_strings() {
    let r = load(json!({
        "policies": {
            "timeouts": {"ms": 1500, "msText": "250", "go": "1m30s"},
            "retries": {"r": {"policy": "Exponential", "initialInterval": "100ms", "maxRetries": "3",
                              "multiplier": 2, "randomizationFactor": "0"}},
            "circuitBreakers": {"cb": {"maxRequests": "3", "timeout": "0s"}}
        }
    }));
    let s = &r.inner.spec;
    assert_eq!(s.timeouts["ms"], Duration::from_millis(1500));
    assert_eq!(s.timeouts["msText"], Duration::from_millis(250));
    assert_eq!(s.timeouts["go"], Duration::from_secs(90));
    assert_eq!(s.retries["r"].max_retries, Some(3));
    assert_eq!(
        s.retries["r"].backoff,
        BackoffKind::Exponential {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(60),
            multiplier: 2.0,
            randomization: 0.0
        }
    );
    assert_eq!(s.breakers["cb"].max_requests, 3);
    assert_eq!(s.breakers["cb"].timeout, Duration::from_secs(60));
}

#[test]
fn invalid_resources_are_refused_with_resource_and_field() {
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"policies": {"timeouts": {"t": "5 seconds"}}}),
            "spec.policies.timeouts.t",
        ),
        (
            json!({"policies": {"timeouts": {"t": -5}}}),
            "spec.policies.timeouts.t",
        ),
        (
            json!({"policies": {"retries": {"r": {"duration": "fast"}}}}),
            "spec.policies.retries.r.duration",
        ),
        (
            json!({"policies": {"retries": {"r": {"maxInterval": "1x"}}}}),
            "spec.policies.retries.r.maxInterval",
        ),
        (
            json!({"policies": {"retries": {"r": {"policy": "linear"}}}}),
            "spec.policies.retries.r.policy",
        ),
        (
            json!({"policies": {"retries": {"r": {"maxRetries": "many"}}}}),
            "spec.policies.retries.r.maxRetries",
        ),
        (
            json!({"policies": {"retries": {"r": {"maxRetries": 1.5}}}}),
            "spec.policies.retries.r.maxRetries",
        ),
        (
            json!({"policies": {"retries": {"r": {"matching": {"httpStatusCodes": "500-700"}}}}}),
            "spec.policies.retries.r.matching.httpStatusCodes",
        ),
        (
            json!({"policies": {"retries": {"r": {"matching": {"gRPCStatusCodes": "x"}}}}}),
            "spec.policies.retries.r.matching.gRPCStatusCodes",
        ),
        (
            json!({"policies": {"circuitBreakers": {"cb": {"trip": "consecutiveFailures >"}}}}),
            "spec.policies.circuitBreakers.cb.trip",
        ),
        (
            json!({"policies": {"circuitBreakers": {"cb": {"trip": "failures > 3"}}}}),
            "spec.policies.circuitBreakers.cb.trip",
        ),
        (
            json!({"policies": {"circuitBreakers": {"cb": {"interval": "soon"}}}}),
            "spec.policies.circuitBreakers.cb.interval",
        ),
        (
            json!({"policies": {"circuitBreakers": {"cb": {"maxRequests": -1}}}}),
            "spec.policies.circuitBreakers.cb.maxRequests",
        ),
        (
            json!({"policies": {"timeouts": ["5s"]}}),
            "spec.policies.timeouts",
        ),
        (
            json!({"targets": {"apps": {"a": {"timeout": "missing"}}}}),
            "spec.targets.apps.a.timeout",
        ),
        (
            json!({"targets": {"apps": {"a": {"retry": "missing"}}}}),
            "spec.targets.apps.a.retry",
        ),
        (
            json!({"targets": {"components": {"c": {"outbound": {"circuitBreaker": "missing"}}}}}),
            "spec.targets.components.c.outbound.circuitBreaker",
        ),
        (
            json!({"targets": {"components": {"c": {"inbound": {"retry": "missing"}}}}}),
            "spec.targets.components.c.inbound.retry",
        ),
        (
            json!({"policies": {"circuitBreakers": {"cb": {}}},
                   "targets": {"actors": {"A": {"circuitBreaker": "cb"}}}}),
            "spec.targets.actors.A.circuitBreakerScope",
        ),
        (
            json!({"targets": {"actors": {"A": {"circuitBreakerScope": "instance"}}}}),
            "spec.targets.actors.A.circuitBreakerScope",
        ),
    ];
    for (spec, field) in cases {
        let err = load_err(spec.clone());
        assert!(
            err.starts_with("resiliency 'bad' (bad.yaml): "),
            "{spec}: {err}"
        );
        assert!(err.contains(field), "{spec}: '{err}' does not name {field}");
    }
}

#[test]
fn policies_merge_across_resources() {
    let a = resource(
        "a",
        json!({"policies": {"timeouts": {"t": "1s"}, "retries": {"r": {"maxRetries": 1}}}}),
    );
    let b = resource(
        "b",
        json!({"policies": {"timeouts": {"t": "2s"}},
               "targets": {"apps": {"x": {"timeout": "t", "retry": "r"}}}}),
    );
    let r = Resiliency::from_resources(&[a, b]).unwrap_or_else(|e| panic!("{e}"));
    let p = r.app("x");
    assert_eq!(parts(&p).timeout, Some(Duration::from_secs(2)));
    assert!(parts(&p).retry.is_some());
}

#[test]
fn default_policy_names_apply_to_unlisted_targets() {
    let r = load(json!({
        "policies": {
            "timeouts": {"DefaultTimeoutPolicy": "9s", "DefaultAppTimeoutPolicy": "3s",
                         "DefaultComponentInboundTimeoutPolicy": "4s", "own": "1s"},
            "retries": {
                "DefaultRetryPolicy": {"maxRetries": 1},
                "DefaultComponentOutboundRetryPolicy": {"maxRetries": 2},
                "DefaultStatestoreComponentOutboundRetryPolicy": {"maxRetries": 3},
                "DefaultActorRetryPolicy": {"maxRetries": 4}
            },
            "circuitBreakers": {"DefaultComponentCircuitBreakerPolicy": {}}
        },
        "targets": {"apps": {"listed": {"timeout": "own"}}}
    }));
    let retries = |p: &Policy| parts(p).retry.as_ref().and_then(|r| r.max_retries);

    let app = r.app("anyApp");
    assert_eq!(parts(&app).timeout, Some(Duration::from_secs(3)));
    assert_eq!(retries(&app), Some(1));
    assert!(parts(&app).breaker.is_none());

    // A listed target uses only what it names.
    let listed = r.app("listed");
    assert_eq!(parts(&listed).timeout, Some(Duration::from_secs(1)));
    assert!(parts(&listed).retry.is_none());

    let out = r.component_outbound("redis");
    assert_eq!(parts(&out).timeout, Some(Duration::from_secs(9)));
    assert_eq!(retries(&out), Some(2));
    assert!(parts(&out).breaker.is_some());

    let state = r.component(ComponentKind::Statestore, "redis", Direction::Outbound);
    assert_eq!(retries(&state), Some(3));
    let publish = r.component(ComponentKind::Pubsub, "kafka", Direction::Outbound);
    assert_eq!(retries(&publish), Some(2));

    let inbound = r.component_inbound("kafka");
    assert_eq!(parts(&inbound).timeout, Some(Duration::from_secs(4)));
    assert_eq!(retries(&inbound), Some(1));

    assert_eq!(retries(&r.actor("Cart")), Some(4));
}

#[test]
fn none_and_zero_policies_are_noop() {
    let r = Resiliency::none();
    assert!(r.app("a").is_noop());
    assert!(r.component_outbound("c").is_noop());
    assert!(r.component_inbound("c").is_noop());
    assert!(r.app("a").retries_http_status(404) && !r.app("a").retries_http_status(200));
    let r = load(json!({
        "policies": {"timeouts": {"z": "0s"}, "retries": {"never": {"maxRetries": 0}}},
        "targets": {"apps": {"a": {"timeout": "z", "retry": "never"}}}
    }));
    assert!(r.app("a").is_noop());
}

#[test]
fn shared_across_threads() {
    fn send_sync<T: Send + Sync + Clone>() {}
    send_sync::<Resiliency>();
    send_sync::<Policy>();
    fn send<T: Send>(_: &T) {}
    let p = Policy::default();
    let fut = p.run(|| async { Attempt::<(), ()>::Ok(()) });
    send(&fut);
}

#[tokio::test]
async fn noop_runs_once() {
    let p = Resiliency::none().app("a");
    let (res, calls) = run_with(&p, &[Attempt::Retryable("boom")]).await;
    assert_eq!((res, calls), (Err(PolicyError::Inner("boom")), 1));
    let (res, calls) = run_with(&p, &[]).await;
    assert_eq!((res, calls), (Ok(1), 1));
}

#[tokio::test]
async fn constant_retries_count_and_wait() {
    let r = load(json!({
        "policies": {"retries": {"r": {"duration": "20ms", "maxRetries": 3}}},
        "targets": {"apps": {"a": {"retry": "r"}}}
    }));
    let p = r.app("a");
    let fail = Attempt::Retryable("boom");
    let started = Instant::now();
    let (res, calls) = run_with(
        &p,
        &[
            fail,
            Attempt::Retryable("boom"),
            Attempt::Retryable("boom"),
            Attempt::Retryable("last"),
        ],
    )
    .await;
    let elapsed = started.elapsed();
    assert_eq!((res, calls), (Err(PolicyError::Inner("last")), 4));
    assert!(elapsed >= Duration::from_millis(60), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1000), "{elapsed:?}");

    // Succeeds on the third attempt.
    let (res, calls) = run_with(&p, &[Attempt::Retryable("a"), Attempt::Retryable("b")]).await;
    assert_eq!((res, calls), (Ok(3), 3));

    // Fatal outcomes are not retried.
    let (res, calls) = run_with(&p, &[Attempt::Fatal("no")]).await;
    assert_eq!((res, calls), (Err(PolicyError::Inner("no")), 1));
}

#[tokio::test]
async fn exponential_retries_grow() {
    let r = load(json!({
        "policies": {"retries": {"r": {"policy": "exponential", "initialInterval": "10ms",
                                        "maxInterval": "40ms", "maxRetries": 4}}},
        "targets": {"components": {"c": {"outbound": {"retry": "r"}}}}
    }));
    let p = r.component_outbound("c");
    let fail = || Attempt::Retryable("x");
    let started = Instant::now();
    let (res, calls) = run_with(&p, &[fail(), fail(), fail(), fail(), fail()]).await;
    let elapsed = started.elapsed();
    assert_eq!((res, calls), (Err(PolicyError::Inner("x")), 5));
    // Bases 10, 15, 22.5, 33.75 ms, each × 0.5..1.5 (capped at 40): at least 40 ms in total.
    assert!(elapsed >= Duration::from_millis(40), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1000), "{elapsed:?}");
}

#[tokio::test]
async fn timeout_applies_per_attempt_and_is_retried() {
    let r = load(json!({
        "policies": {"timeouts": {"t": "30ms"},
                     "retries": {"r": {"duration": "1ms", "maxRetries": 2}}},
        "targets": {"apps": {"slow": {"timeout": "t", "retry": "r"}, "once": {"timeout": "t"}}}
    }));
    let calls = AtomicU32::new(0);
    let started = Instant::now();
    let res: Result<(), PolicyError<()>> = r
        .app("slow")
        .run(|| {
            calls.fetch_add(1, Ordering::SeqCst);
            async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Attempt::Ok(())
            }
        })
        .await;
    assert_eq!(res, Err(PolicyError::Timeout(Duration::from_millis(30))));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(90) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );

    // Slow first attempt, fast second: the timeout is per attempt.
    let calls = AtomicU32::new(0);
    let res: Result<u32, PolicyError<()>> = r
        .app("slow")
        .run(|| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                Attempt::Ok(n)
            }
        })
        .await;
    assert_eq!(res, Ok(1));

    // Without retries one timeout ends the call.
    let res: Result<(), PolicyError<()>> = r
        .app("once")
        .run(|| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Attempt::Ok(())
        })
        .await;
    assert_eq!(res, Err(PolicyError::Timeout(Duration::from_millis(30))));
}

#[tokio::test]
async fn breaker_opens_half_opens_and_closes() {
    let r = load(json!({
        "policies": {"circuitBreakers": {"cb": {"timeout": "60ms", "trip": "consecutiveFailures >= 2"}}},
        "targets": {"apps": {"a": {"circuitBreaker": "cb"}}}
    }));
    let fail = || Attempt::Retryable("down");
    assert_eq!(run_with(&r.app("a"), &[fail()]).await.1, 1);
    // A fatal outcome counts as a failure too; a second lookup shares the breaker.
    assert_eq!(run_with(&r.app("a"), &[Attempt::Fatal("bad")]).await.1, 1);
    let (res, calls) = run_with(&r.app("a"), &[]).await;
    assert_eq!((res, calls), (Err(PolicyError::CircuitOpen), 0));
    tokio::time::sleep(Duration::from_millis(80)).await;
    // Half-open: one request passes and closes it.
    assert_eq!(run_with(&r.app("a"), &[]).await, (Ok(1), 1));
    assert_eq!(run_with(&r.app("a"), &[]).await, (Ok(1), 1));
    // Another app has its own breaker.
    assert!(r.app("b").is_noop());
}

#[tokio::test]
async fn half_open_failure_reopens() {
    let r = load(json!({
        "policies": {"circuitBreakers": {"cb": {"timeout": "50ms", "trip": "totalFailures > 0"}}},
        "targets": {"components": {"s": {"outbound": {"circuitBreaker": "cb"}}}}
    }));
    let p = r.component_outbound("s");
    assert_eq!(run_with(&p, &[Attempt::Retryable("x")]).await.1, 1);
    assert_eq!(run_with(&p, &[]).await, (Err(PolicyError::CircuitOpen), 0));
    tokio::time::sleep(Duration::from_millis(70)).await;
    assert_eq!(
        run_with(&p, &[Attempt::Retryable("still")]).await,
        (Err(PolicyError::Inner("still")), 1)
    );
    assert_eq!(run_with(&p, &[]).await, (Err(PolicyError::CircuitOpen), 0));
    // The inbound direction of the same component is not affected.
    assert!(r.component_inbound("s").is_noop());
}

#[tokio::test]
async fn open_breaker_stops_retries() {
    let r = load(json!({
        "policies": {
            "retries": {"forever": {"duration": "1ms"}},
            "circuitBreakers": {"cb": {"trip": "consecutiveFailures > 2"}}
        },
        "targets": {"apps": {"a": {"retry": "forever", "circuitBreaker": "cb"}}}
    }));
    let outcomes: Vec<_> = (0..100).map(|_| Attempt::Retryable("down")).collect();
    let (res, calls) = run_with(&r.app("a"), &outcomes).await;
    assert_eq!((res, calls), (Err(PolicyError::CircuitOpen), 3));
}

#[tokio::test]
async fn trip_expression_variants() {
    let r = load(json!({
        "policies": {"circuitBreakers": {
            "ratio": {"trip": "requests >= 4 && totalFailures * 2 >= requests"},
            "default": {}
        }},
        "targets": {"apps": {"ratio": {"circuitBreaker": "ratio"}, "default": {"circuitBreaker": "default"}}}
    }));
    let p = r.app("ratio");
    // Successes and failures alternate: 2 of 4 failed at the fourth request → open.
    for (i, ok) in [true, false, true, false].into_iter().enumerate() {
        let outcome = if ok {
            vec![]
        } else {
            vec![Attempt::Retryable("x")]
        };
        let (_, calls) = run_with(&p, &outcome).await;
        assert_eq!(calls, 1, "request {i}");
    }
    assert_eq!(run_with(&p, &[]).await, (Err(PolicyError::CircuitOpen), 0));

    // The default trips after more than 5 consecutive failures.
    let p = r.app("default");
    for _ in 0..6 {
        assert_eq!(run_with(&p, &[Attempt::Retryable("x")]).await.1, 1);
    }
    assert_eq!(run_with(&p, &[]).await, (Err(PolicyError::CircuitOpen), 0));
}
