//! Name resolvers and their registration table (`spec.nameResolution.component`).
//!
//! * `sqlite` (the embedded default): sidecars on one machine announce themselves in a shared
//!   SQLite file and find each other with no configuration ([`sqlite`]).
//! * `static`: addresses listed in the configuration ([`static_list`]).
//! * `dns`, also registered as `kubernetes`: Kubernetes service names, SRV then A/AAAA
//!   ([`dns`]).
//!
//! Every resolver reads `spec.nameResolution.configuration` as a map whose keys are matched
//! case-insensitively; scalar values may be written as strings or as YAML numbers/booleans.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use mecha_core::duration::parse_go_duration;
use mecha_core::nameresolution::{Instance, Instances, NameResolver, ResolveError, ResolverInit};
use serde_json::{Map, Value};

pub mod dns;
#[cfg(feature = "state-sqlite")]
pub mod sqlite;
pub mod static_list;

/// The future a resolver constructor returns.
pub type ResolverFuture =
    Pin<Box<dyn Future<Output = Result<Arc<dyn NameResolver>, ResolveError>> + Send>>;

/// One row of the table: a component name (`sqlite`, `dns`, `static`) and its constructor.
pub struct ResolverRegistration {
    /// The name used in `spec.nameResolution.component`.
    pub name: &'static str,
    /// Builds the resolver.
    pub create: fn(ResolverInit) -> ResolverFuture,
}

/// Every resolver this build contains.
pub static REGISTRY: &[ResolverRegistration] = &[
    #[cfg(feature = "state-sqlite")]
    ResolverRegistration {
        name: "sqlite",
        create: |init| Box::pin(sqlite::SqliteResolver::create(init)),
    },
    ResolverRegistration {
        name: "dns",
        create: |init| Box::pin(dns::DnsResolver::create(init)),
    },
    ResolverRegistration {
        name: "kubernetes",
        create: |init| Box::pin(dns::DnsResolver::create(init)),
    },
    ResolverRegistration {
        name: "static",
        create: |init| Box::pin(static_list::StaticResolver::create(init)),
    },
];

/// Finds the resolver called `name`.
pub fn find(name: &str) -> Option<&'static ResolverRegistration> {
    REGISTRY.iter().find(|r| r.name.eq_ignore_ascii_case(name))
}

/// A resolver's `configuration` map, with typed, case-insensitive access.
pub(crate) struct Config<'a> {
    map: Option<&'a Map<String, Value>>,
}

// === impl Config ===

impl<'a> Config<'a> {
    /// Wraps `value`, which must be a map or absent (`null`).
    pub(crate) fn new(value: &'a Value) -> Result<Self, ResolveError> {
        match value {
            Value::Null => Ok(Self { map: None }),
            Value::Object(map) => Ok(Self { map: Some(map) }),
            other => Err(ResolveError::Config(format!(
                "the configuration must be a map, not {}",
                kind(other)
            ))),
        }
    }

    /// The raw value of `key`; `null` counts as absent.
    pub(crate) fn get(&self, key: &str) -> Option<&'a Value> {
        let map = self.map?;
        map.get(key)
            .or_else(|| {
                map.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(key))
                    .map(|(_, v)| v)
            })
            .filter(|v| !v.is_null())
    }

    /// A scalar written as a string, number or boolean, trimmed; `None` when absent.
    pub(crate) fn string(&self, key: &str) -> Result<Option<String>, ResolveError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_owned())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(Value::Bool(b)) => Ok(Some(b.to_string())),
            Some(other) => Err(ResolveError::Config(format!(
                "'{key}' must be a string, not {}",
                kind(other)
            ))),
        }
    }

    /// A Go duration (`5s`, `500ms`); a bare number counts as seconds. `default` when absent.
    pub(crate) fn duration(&self, key: &str, default: Duration) -> Result<Duration, ResolveError> {
        let Some(v) = self.string(key)? else {
            return Ok(default);
        };
        if v.is_empty() {
            return Ok(default);
        }
        if let Ok(secs) = v.parse::<f64>()
            && secs.is_finite()
            && secs >= 0.0
        {
            return Ok(Duration::from_secs_f64(secs));
        }
        parse_go_duration(&v).map_err(|e| ResolveError::Config(format!("'{key}': {e}")))
    }

    /// A TCP port, `default` when absent.
    pub(crate) fn port(&self, key: &str, default: u16) -> Result<u16, ResolveError> {
        match self.string(key)? {
            None => Ok(default),
            Some(v) if v.is_empty() => Ok(default),
            Some(v) => parse_port(&v).map_err(|e| ResolveError::Config(format!("'{key}': {e}"))),
        }
    }

    /// Logs at WARN every key that `known` does not list.
    pub(crate) fn warn_unknown(&self, resolver: &str, known: &[&str]) {
        for key in self.map.into_iter().flat_map(|m| m.keys()) {
            if !known.iter().any(|k| k.eq_ignore_ascii_case(key)) {
                tracing::warn!(resolver, key = %key, "Ignoring unknown name resolution setting");
            }
        }
    }
}

/// Parses a non-zero TCP port.
pub(crate) fn parse_port(v: &str) -> Result<u16, String> {
    match v.trim().parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("'{v}' is not a port (1-65535)")),
        Ok(p) => Ok(p),
    }
}

/// A JSON value's kind, for error messages.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

/// When an answer was cached, and the answer.
type CacheEntry = (tokio::time::Instant, Arc<[Instance]>);

/// A small time-limited cache of resolve results, keyed by (app id, namespace).
///
/// Entries are kept per namespace, then per app id, so that a hit allocates only the answer.
pub(crate) struct ResolveCache {
    ttl: Duration,
    entries: std::sync::Mutex<HashMap<String, HashMap<String, CacheEntry>>>,
}

// === impl ResolveCache ===

impl ResolveCache {
    /// Entries live `ttl`; a zero `ttl` disables the cache.
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Default::default(),
        }
    }

    /// The fresh entry for (`app_id`, `namespace`), if any.
    pub(crate) fn get(&self, app_id: &str, namespace: &str) -> Option<Instances> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(namespace)?
            .get(app_id)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, found)| found.clone())
    }

    /// Remembers `found` for (`app_id`, `namespace`), dropping expired entries now and then.
    pub(crate) fn put(&self, app_id: &str, namespace: &str, found: &Instances) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.values().map(HashMap::len).sum::<usize>() >= 1024 {
            let ttl = self.ttl;
            for apps in entries.values_mut() {
                apps.retain(|_, (at, _)| at.elapsed() < ttl);
            }
            entries.retain(|_, apps| !apps.is_empty());
        }
        entries.entry(namespace.to_owned()).or_default().insert(
            app_id.to_owned(),
            (tokio::time::Instant::now(), found.clone()),
        );
    }

    /// Forgets everything.
    pub(crate) fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}
