//! Reading `kind: Resiliency` specs: policies first (from every resource, later names
//! replacing earlier ones, as Dapr merges them), then targets, whose policy names must exist.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mecha_core::duration::parse_go_duration;
use mecha_core::resource::RawResource;
use serde_json::{Map, Value};

use super::breaker::{BreakerSpec, Trip};
use super::retry::{BackoffKind, Matching, RetrySpec, parse_codes};

/// Valid HTTP status codes for `matching.httpStatusCodes`.
const HTTP_CODES: (i32, i32) = (100, 599);
/// Valid gRPC status codes for `matching.gRPCStatusCodes`.
const GRPC_CODES: (i32, i32) = (0, 16);

/// The policy names one target (or one direction of a component) uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Names {
    pub(crate) timeout: Option<String>,
    pub(crate) retry: Option<String>,
    pub(crate) circuit_breaker: Option<String>,
}

/// `circuitBreakerScope` of an actor target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ActorScope {
    Type,
    Id,
    Both,
}

/// `targets.actors.<type>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ActorTarget {
    pub(crate) names: Names,
    pub(crate) scope: Option<ActorScope>,
}

/// `targets.components.<name>`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ComponentTarget {
    pub(crate) outbound: Names,
    pub(crate) inbound: Names,
}

/// Everything read from the resources.
#[derive(Debug, Default)]
pub(crate) struct Spec {
    pub(crate) timeouts: HashMap<String, Duration>,
    pub(crate) retries: HashMap<String, Arc<RetrySpec>>,
    pub(crate) breakers: HashMap<String, Arc<BreakerSpec>>,
    pub(crate) apps: HashMap<String, Names>,
    pub(crate) actors: HashMap<String, ActorTarget>,
    pub(crate) components: HashMap<String, ComponentTarget>,
}

impl Spec {
    /// Reads every resource; the first problem is returned, naming the resource and field.
    pub(crate) fn read(resources: &[RawResource]) -> Result<Self, String> {
        let mut spec = Self::default();
        for r in resources {
            spec.read_policies(r).map_err(|e| located(r, e))?;
        }
        for r in resources {
            spec.read_targets(r).map_err(|e| located(r, e))?;
        }
        Ok(spec)
    }

    fn read_policies(&mut self, r: &RawResource) -> Result<(), String> {
        let Some(spec) = object(&r.spec, "spec")? else {
            return Ok(());
        };
        let Some(policies) = object_field(spec, "policies", "spec.policies")? else {
            return Ok(());
        };
        if let Some(timeouts) = object_field(policies, "timeouts", "spec.policies.timeouts")? {
            for (name, v) in timeouts {
                let path = format!("spec.policies.timeouts.{name}");
                let d = duration(v, &path)?.ok_or_else(|| format!("{path}: missing duration"))?;
                self.timeouts.insert(name.clone(), d);
            }
        }
        if let Some(retries) = object_field(policies, "retries", "spec.policies.retries")? {
            for (name, v) in retries {
                let path = format!("spec.policies.retries.{name}");
                let retry = read_retry(v, &path)?;
                self.retries.insert(name.clone(), Arc::new(retry));
            }
        }
        if let Some(cbs) =
            object_field(policies, "circuitBreakers", "spec.policies.circuitBreakers")?
        {
            for (name, v) in cbs {
                let path = format!("spec.policies.circuitBreakers.{name}");
                let cb = read_breaker(v, &path)?;
                self.breakers.insert(name.clone(), Arc::new(cb));
            }
        }
        Ok(())
    }

    fn read_targets(&mut self, r: &RawResource) -> Result<(), String> {
        let Some(spec) = object(&r.spec, "spec")? else {
            return Ok(());
        };
        let Some(targets) = object_field(spec, "targets", "spec.targets")? else {
            return Ok(());
        };
        if let Some(apps) = object_field(targets, "apps", "spec.targets.apps")? {
            for (app, v) in apps {
                let path = format!("spec.targets.apps.{app}");
                let names = self.read_names(v, &path)?;
                self.apps.insert(app.clone(), names);
            }
        }
        if let Some(actors) = object_field(targets, "actors", "spec.targets.actors")? {
            for (ty, v) in actors {
                let path = format!("spec.targets.actors.{ty}");
                let names = self.read_names(v, &path)?;
                let m = object(v, &path)?;
                let scope = match m.map(|m| string_field(m, "circuitBreakerScope", &path)) {
                    Some(s) => s?,
                    None => None,
                };
                let scope = match scope.as_deref() {
                    None | Some("") => None,
                    Some("type") => Some(ActorScope::Type),
                    Some("id") => Some(ActorScope::Id),
                    Some("both") => Some(ActorScope::Both),
                    Some(other) => {
                        return Err(format!(
                            "{path}.circuitBreakerScope: unknown scope '{other}' (expected type, id or both)"
                        ));
                    }
                };
                if names.circuit_breaker.is_some() && scope.is_none() {
                    return Err(format!(
                        "{path}.circuitBreakerScope: required with circuitBreaker (type, id or both)"
                    ));
                }
                self.actors.insert(ty.clone(), ActorTarget { names, scope });
            }
        }
        if let Some(components) = object_field(targets, "components", "spec.targets.components")? {
            for (name, v) in components {
                let path = format!("spec.targets.components.{name}");
                let mut target = ComponentTarget::default();
                if let Some(m) = object(v, &path)? {
                    for (key, v) in m {
                        let sub = format!("{path}.{key}");
                        match key.as_str() {
                            "outbound" => target.outbound = self.read_names(v, &sub)?,
                            "inbound" => target.inbound = self.read_names(v, &sub)?,
                            _ => tracing::warn!(field = %sub, "Unknown resiliency field ignored"),
                        }
                    }
                }
                self.components.insert(name.clone(), target);
            }
        }
        Ok(())
    }

    /// Reads `{timeout, retry, circuitBreaker}`, checking that each named policy exists.
    fn read_names(&self, v: &Value, path: &str) -> Result<Names, String> {
        let mut names = Names::default();
        let Some(m) = object(v, path)? else {
            return Ok(names);
        };
        for (key, value) in m {
            let field = format!("{path}.{key}");
            let name = || -> Result<Option<String>, String> {
                Ok(scalar(value, &field)?.filter(|s| !s.is_empty()))
            };
            match key.as_str() {
                "timeout" => {
                    names.timeout = name()?;
                    check(
                        &names.timeout,
                        |n| self.timeouts.contains_key(n),
                        "timeout",
                        &field,
                    )?;
                }
                "retry" => {
                    names.retry = name()?;
                    check(
                        &names.retry,
                        |n| self.retries.contains_key(n),
                        "retry",
                        &field,
                    )?;
                }
                "circuitBreaker" => {
                    names.circuit_breaker = name()?;
                    check(
                        &names.circuit_breaker,
                        |n| self.breakers.contains_key(n),
                        "circuit breaker",
                        &field,
                    )?;
                }
                "circuitBreakerCacheSize" | "circuitBreakerScope" => {}
                _ => tracing::warn!(field = %field, "Unknown resiliency field ignored"),
            }
        }
        Ok(names)
    }
}

fn check(
    name: &Option<String>,
    exists: impl Fn(&str) -> bool,
    what: &str,
    field: &str,
) -> Result<(), String> {
    match name {
        Some(n) if !exists(n) => Err(format!("{field}: no {what} policy named '{n}'")),
        _ => Ok(()),
    }
}

fn located(r: &RawResource, e: String) -> String {
    format!("resiliency '{}' ({}): {e}", r.name, r.source.display())
}

fn read_retry(v: &Value, path: &str) -> Result<RetrySpec, String> {
    let empty = Map::new();
    let m = object(v, path)?.unwrap_or(&empty);
    let mut policy = String::from("constant");
    let mut constant = Duration::from_secs(5);
    let mut initial = Duration::from_millis(500);
    let mut max = Duration::from_secs(60);
    let mut multiplier = 1.5;
    let mut randomization = 0.5;
    let mut max_retries: i64 = -1;
    let mut matching = Matching::default();
    for (key, v) in m {
        let field = format!("{path}.{key}");
        match key.as_str() {
            "policy" => {
                policy = scalar(v, &field)?.unwrap_or_default().to_ascii_lowercase();
                if policy.is_empty() {
                    policy = "constant".into();
                }
            }
            "duration" => constant = duration(v, &field)?.unwrap_or(constant),
            "initialInterval" => initial = duration(v, &field)?.unwrap_or(initial),
            "maxInterval" => max = duration(v, &field)?.unwrap_or(max),
            "maxRetries" => {
                max_retries = number(v, &field)?.map_or(Ok(max_retries), to_i64(&field))?
            }
            "multiplier" => {
                multiplier = number(v, &field)?.unwrap_or(multiplier);
                if !(multiplier >= 1.0 && multiplier.is_finite()) {
                    return Err(format!("{field}: must be at least 1"));
                }
            }
            "randomizationFactor" => {
                randomization = number(v, &field)?.unwrap_or(randomization);
                if !(0.0..=1.0).contains(&randomization) {
                    return Err(format!("{field}: must be between 0 and 1"));
                }
            }
            "matching" => {
                if let Some(mm) = object(v, &field)? {
                    for (k, v) in mm {
                        let f = format!("{field}.{k}");
                        let codes = scalar(v, &f)?.unwrap_or_default();
                        match k.as_str() {
                            "httpStatusCodes" => {
                                matching.http = parse_codes(&codes, HTTP_CODES)
                                    .map_err(|e| format!("{f}: {e}"))?;
                            }
                            "gRPCStatusCodes" => {
                                matching.grpc = parse_codes(&codes, GRPC_CODES)
                                    .map_err(|e| format!("{f}: {e}"))?;
                            }
                            _ => tracing::warn!(field = %f, "Unknown resiliency field ignored"),
                        }
                    }
                }
            }
            "maxElapsedTime" => {
                duration(v, &field)?;
            }
            _ => tracing::warn!(field = %field, "Unknown resiliency field ignored"),
        }
    }
    let backoff = match policy.as_str() {
        "constant" => BackoffKind::Constant(constant),
        "exponential" => BackoffKind::Exponential {
            initial,
            max,
            multiplier,
            randomization,
        },
        other => {
            return Err(format!(
                "{path}.policy: unknown retry policy '{other}' (expected constant or exponential)"
            ));
        }
    };
    Ok(RetrySpec {
        backoff,
        max_retries: u64::try_from(max_retries).ok(),
        matching,
    })
}

fn read_breaker(v: &Value, path: &str) -> Result<BreakerSpec, String> {
    let empty = Map::new();
    let m = object(v, path)?.unwrap_or(&empty);
    let mut max_requests = 1u32;
    let mut interval = Duration::ZERO;
    let mut timeout = Duration::from_secs(60);
    let mut trip = None;
    for (key, v) in m {
        let field = format!("{path}.{key}");
        match key.as_str() {
            "maxRequests" => {
                if let Some(n) = number(v, &field)? {
                    max_requests = u32::try_from(to_i64(&field)(n)?)
                        .map_err(|_| format!("{field}: must not be negative"))?;
                }
            }
            "interval" => interval = duration(v, &field)?.unwrap_or(interval),
            "timeout" => timeout = duration(v, &field)?.unwrap_or(timeout),
            "trip" => {
                if let Some(expr) = scalar(v, &field)?.filter(|s| !s.trim().is_empty()) {
                    trip = Some(Trip::compile(&expr).map_err(|e| format!("{field}: {e}"))?);
                }
            }
            _ => tracing::warn!(field = %field, "Unknown resiliency field ignored"),
        }
    }
    if timeout.is_zero() {
        // gobreaker replaces a zero open-state timeout with its 60s default.
        timeout = Duration::from_secs(60);
    }
    let trip = match trip {
        Some(t) => t,
        None => {
            Trip::compile("consecutiveFailures > 5").map_err(|e| format!("{path}.trip: {e}"))?
        }
    };
    Ok(BreakerSpec {
        max_requests: max_requests.max(1),
        interval,
        timeout,
        trip,
    })
}

/// `v` as a map; `null` is `None`, anything else but a map is an error.
fn object<'a>(v: &'a Value, path: &str) -> Result<Option<&'a Map<String, Value>>, String> {
    match v {
        Value::Null => Ok(None),
        Value::Object(m) => Ok(Some(m)),
        other => Err(format!("{path}: expected a map, found {}", kind(other))),
    }
}

fn object_field<'a>(
    m: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a Map<String, Value>>, String> {
    m.get(key).map_or(Ok(None), |v| object(v, path))
}

fn string_field(m: &Map<String, Value>, key: &str, path: &str) -> Result<Option<String>, String> {
    m.get(key)
        .map_or(Ok(None), |v| scalar(v, &format!("{path}.{key}")))
}

/// A string, number or boolean as text.
fn scalar(v: &Value, path: &str) -> Result<Option<String>, String> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.trim().to_owned())),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        other => Err(format!("{path}: expected a string, found {}", kind(other))),
    }
}

/// A number, written as a number or a string.
fn number(v: &Value, path: &str) -> Result<Option<f64>, String> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_f64()
            .map(Some)
            .ok_or_else(|| format!("{path}: invalid number {n}")),
        Value::String(s) if s.trim().is_empty() => Ok(None),
        Value::String(s) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("{path}: expected a number, found '{s}'")),
        other => Err(format!("{path}: expected a number, found {}", kind(other))),
    }
}

fn to_i64(path: &str) -> impl Fn(f64) -> Result<i64, String> + '_ {
    move |n| {
        if n.fract() == 0.0 && n.abs() < 1e15 {
            Ok(n as i64)
        } else {
            Err(format!("{path}: expected a whole number, found {n}"))
        }
    }
}

/// A Go duration string; a bare number (or numeric string) is milliseconds, as Dapr reads it.
fn duration(v: &Value, path: &str) -> Result<Option<Duration>, String> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => match n.as_u64() {
            Some(ms) => Ok(Some(Duration::from_millis(ms))),
            None => Err(format!("{path}: invalid duration {n}")),
        },
        Value::String(s) => {
            let s = s.trim();
            if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
                return s
                    .parse()
                    .map(|ms| Some(Duration::from_millis(ms)))
                    .map_err(|_| format!("{path}: invalid duration '{s}'"));
            }
            parse_go_duration(s)
                .map(Some)
                .map_err(|e| format!("{path}: {e}"))
        }
        other => Err(format!(
            "{path}: expected a duration, found {}",
            kind(other)
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}
