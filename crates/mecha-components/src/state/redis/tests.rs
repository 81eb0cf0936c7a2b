//! Unit tests of `state.redis` that need no server: metadata and ETag parsing.

use std::time::Duration;

use mecha_core::Metadata as RawMetadata;
use mecha_core::component::{ComponentError, ComponentInit};
use mecha_core::state::StateError;

use super::connection::ConnectionMetadata;
use super::{Metadata, canonical_etag};

fn init(pairs: &[(&str, &str)]) -> ComponentInit {
    ComponentInit {
        name: "redis".into(),
        metadata: RawMetadata::new(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ),
        app_id: "test".into(),
    }
}

fn connection(pairs: &[(&str, &str)]) -> Result<ConnectionMetadata, ComponentError> {
    ConnectionMetadata::parse(&init(pairs))
}

fn refused_field(pairs: &[(&str, &str)]) -> &'static str {
    match connection(pairs) {
        Err(ComponentError::InvalidField { field, .. }) => field,
        Err(ComponentError::MissingField(field)) => field,
        other => panic!("{pairs:?}: expected a refusal, got {other:?}"),
    }
}

#[test]
fn parses_hosts_and_defaults() {
    let md = connection(&[("redisHost", "localhost:6380")]).unwrap();
    assert_eq!((md.host.as_str(), md.port), ("localhost", 6380));
    assert_eq!(md.db, 0);
    assert_eq!(md.dial_timeout, Duration::from_secs(5));
    assert_eq!(md.command_timeout, Some(Duration::from_secs(3)));
    assert_eq!(md.max_retries, 3);
    assert_eq!(md.max_retry_backoff, Duration::from_secs(2));
    let md = connection(&[("redisHost", "redis"), ("redisPort", "7000")]).unwrap();
    assert_eq!((md.host.as_str(), md.port), ("redis", 7000));
    let md = connection(&[("redisHost", "redis")]).unwrap();
    assert_eq!(md.port, 6379);
    let md = connection(&[("redisHost", "[::1]:6390")]).unwrap();
    assert_eq!((md.host.as_str(), md.port), ("::1", 6390));
}

#[test]
fn parses_durations_as_dapr_does() {
    let md = connection(&[
        ("redisHost", "h:1"),
        ("dialTimeout", "250ms"),
        ("readTimeout", "1500"),
        ("writeTimeout", "2s"),
        ("maxRetries", "-1"),
        ("maxRetryBackoff", "1s"),
        ("redisDB", "3"),
    ])
    .unwrap();
    assert_eq!(md.dial_timeout, Duration::from_millis(250));
    assert_eq!(md.command_timeout, Some(Duration::from_secs(2)));
    assert_eq!(md.max_retries, 0);
    assert_eq!(md.max_retry_backoff, Duration::from_secs(1));
    assert_eq!(md.db, 3);
    let md = connection(&[("redisHost", "h:1"), ("readTimeout", "-1")]).unwrap();
    assert_eq!(
        md.command_timeout, None,
        "-1 disables the read and write timeouts"
    );
    let md = connection(&[("redisHost", "h:1"), ("readTimeout", "0")]).unwrap();
    assert_eq!(
        md.command_timeout,
        Some(Duration::from_secs(3)),
        "0 is the default"
    );
}

#[test]
fn refuses_what_it_does_not_support() {
    assert_eq!(refused_field(&[]), "redisHost");
    let host = ("redisHost", "h:1");
    assert_eq!(
        refused_field(&[host, ("redisType", "cluster")]),
        "redisType"
    );
    assert_eq!(refused_field(&[host, ("failover", "true")]), "failover");
    assert_eq!(
        refused_field(&[host, ("sentinelMasterName", "mymaster")]),
        "sentinelMasterName"
    );
    assert_eq!(refused_field(&[("redisHost", "a:1,b:2")]), "redisHost");
    assert_eq!(refused_field(&[("redisHost", "a:x")]), "redisHost");
    assert_eq!(refused_field(&[host, ("redisPort", "2")]), "redisPort");
    assert_eq!(
        refused_field(&[host, ("dialTimeout", "soon")]),
        "dialTimeout"
    );
    assert!(connection(&[host, ("redisType", "node"), ("enableTLS", "false")]).is_ok());
}

#[test]
fn reads_the_default_ttl() {
    let ttl = |v: &str| {
        Metadata::parse(&init(&[("redisHost", "h:1"), ("ttlInSeconds", v)]))
            .map(|m| m.ttl_in_seconds)
    };
    assert_eq!(ttl("10").unwrap(), Some(Duration::from_secs(10)));
    assert_eq!(ttl("-1").unwrap(), None);
    assert_eq!(ttl("0").unwrap(), None);
    assert!(ttl("ten").is_err());
    assert!(ttl("-2").is_err());
}

#[test]
fn etags_are_integers() {
    assert_eq!(canonical_etag(None), Ok(String::new()));
    assert_eq!(canonical_etag(Some("7")), Ok("7".into()));
    assert_eq!(canonical_etag(Some("007")), Ok("7".into()));
    assert_eq!(
        canonical_etag(Some("abc")),
        Err(StateError::InvalidEtag("abc".into()))
    );
}
