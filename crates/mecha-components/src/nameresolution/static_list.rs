//! `static`: the addresses of every app, listed in the configuration.
//!
//! ```yaml
//! nameResolution:
//!   component: static
//!   configuration:
//!     apps:
//!       appb: ["127.0.0.1:50002", "127.0.0.1:50012"]
//!       prod/appc:
//!         - host: appc.internal
//!           port: 50002
//!       appd: "10.0.0.7:50002"
//! ```
//!
//! `apps` (required, may be empty) maps an app id to its addresses: a list (or one entry) of
//! `host:port` strings (`[::1]:50002` for IPv6) or `{host, port}` maps. A plain key
//! (`appb`) answers in every namespace; a `namespace/appid` key answers only in that namespace
//! and wins over the plain key. App ids are matched exactly, namespaces too. Instances are
//! returned in the order listed, duplicates removed; an IPv6 host is returned without brackets.
//! [`NameResolver::register`] does nothing. Anything malformed is refused at creation with
//! [`ResolveError::Config`]; other top-level keys are ignored with a warning.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use mecha_core::nameresolution::{Instance, Instances, NameResolver, ResolveError, ResolverInit};
use serde_json::Value;

use super::{Config, kind, parse_port};

/// An address as listed: host and port.
type Address = (String, u16);

/// The `static` resolver.
#[derive(Debug)]
pub struct StaticResolver {
    /// `appid` keys.
    any_namespace: HashMap<String, Vec<Address>>,
    /// `namespace/appid` keys.
    by_namespace: HashMap<(String, String), Vec<Address>>,
}

// === impl StaticResolver ===

impl StaticResolver {
    /// Reads the `apps` table.
    pub async fn create(init: ResolverInit) -> Result<Arc<dyn NameResolver>, ResolveError> {
        Ok(Arc::new(Self::parse(&init.configuration)?))
    }

    /// Parses the configuration.
    pub fn parse(configuration: &Value) -> Result<Self, ResolveError> {
        let config = Config::new(configuration)?;
        config.warn_unknown("static", &["apps"]);
        let apps = match config.get("apps") {
            Some(Value::Object(apps)) => apps,
            Some(other) => {
                return Err(ResolveError::Config(format!(
                    "'apps' must be a map of app id to addresses, not {}",
                    kind(other)
                )));
            }
            None => {
                return Err(ResolveError::Config(
                    "the static resolver needs 'apps': a map of app id to addresses".into(),
                ));
            }
        };
        let mut any_namespace = HashMap::new();
        let mut by_namespace = HashMap::new();
        for (key, value) in apps {
            let addresses = addresses(key, value)?;
            match key.split_once('/') {
                None => {
                    let app = non_empty(key, key.trim())?;
                    any_namespace.insert(app.to_owned(), addresses);
                }
                Some((ns, app)) => {
                    let ns = non_empty(key, ns.trim())?;
                    let app = non_empty(key, app.trim())?;
                    by_namespace.insert((ns.to_owned(), app.to_owned()), addresses);
                }
            }
        }
        Ok(Self {
            any_namespace,
            by_namespace,
        })
    }

    fn lookup(&self, app_id: &str, namespace: &str) -> Vec<Instance> {
        let listed = self
            .by_namespace
            .get(&(namespace.to_owned(), app_id.to_owned()))
            .or_else(|| self.any_namespace.get(app_id));
        listed
            .into_iter()
            .flatten()
            .map(|(host, port)| Instance {
                app_id: app_id.to_owned(),
                namespace: namespace.to_owned(),
                host: host.clone(),
                port: *port,
            })
            .collect()
    }
}

#[async_trait]
impl NameResolver for StaticResolver {
    async fn register(&self, _me: &Instance) -> Result<(), ResolveError> {
        Ok(())
    }

    async fn resolve(&self, app_id: &str, namespace: &str) -> Result<Instances, ResolveError> {
        Ok(self.lookup(app_id, namespace).into())
    }
}

fn non_empty<'a>(key: &str, part: &'a str) -> Result<&'a str, ResolveError> {
    if part.is_empty() || part.contains('/') {
        return Err(ResolveError::Config(format!(
            "'apps' key '{key}' must be 'appid' or 'namespace/appid'"
        )));
    }
    Ok(part)
}

/// The addresses of one app: a list of entries, or one entry.
fn addresses(key: &str, value: &Value) -> Result<Vec<Address>, ResolveError> {
    let entries = match value {
        Value::Array(list) => list.iter().collect(),
        one => vec![one],
    };
    let mut out: Vec<Address> = Vec::with_capacity(entries.len());
    for entry in entries {
        let address = address(entry)
            .map_err(|reason| ResolveError::Config(format!("'apps.{key}': {reason}")))?;
        if !out.contains(&address) {
            out.push(address);
        }
    }
    Ok(out)
}

/// One entry: `host:port` or `{host, port}`.
fn address(entry: &Value) -> Result<Address, String> {
    match entry {
        Value::String(s) => parse_host_port(s),
        Value::Object(map) => {
            let config = Config { map: Some(map) };
            let host = match config.string("host").map_err(|e| e.to_string())? {
                Some(h) if !h.is_empty() => h,
                _ => return Err("an address map needs 'host'".into()),
            };
            let port = match config.string("port").map_err(|e| e.to_string())? {
                Some(p) => parse_port(&p)?,
                None => return Err(format!("the address of '{host}' needs 'port'")),
            };
            Ok((unbracket(&host)?, port))
        }
        other => Err(format!(
            "an address must be 'host:port' or a map with host and port, not {}",
            kind(other)
        )),
    }
}

/// Splits `host:port`; an IPv6 host is written in brackets.
pub(crate) fn parse_host_port(s: &str) -> Result<Address, String> {
    let s = s.trim();
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("'{s}' is not host:port"))?;
    if host.contains(':') && !host.starts_with('[') {
        return Err(format!(
            "'{s}': write an IPv6 address in brackets, [::1]:50002"
        ));
    }
    Ok((unbracket(host)?, parse_port(port)?))
}

fn unbracket(host: &str) -> Result<String, String> {
    let host = host.trim();
    let bare = match host.strip_prefix('[') {
        Some(rest) => rest
            .strip_suffix(']')
            .ok_or_else(|| format!("'{host}' is missing its closing bracket"))?,
        None => host,
    };
    if bare.is_empty() || bare.chars().any(char::is_whitespace) {
        return Err(format!("'{host}' is not a host name or address"));
    }
    Ok(bare.to_owned())
}
