//! Access control from the Configuration resource: `spec.accessControl` (which apps may invoke
//! which operations of this app) and `spec.api.allowed` / `spec.api.denied` (which of the
//! sidecar's own APIs this app may call).
//!
//! Invocation policies are evaluated on the callee's sidecar. With mTLS the caller's identity
//! (trust domain, namespace, app id) is the SPIFFE id of its verified certificate; without, it
//! is the app id and namespace its sidecar sent (`dapr-caller-app-id`,
//! `dapr-caller-namespace`) in the trust domain `public`.

use serde_json::Value;

/// The trust domain of callers without a certificate, and of policies that name none.
pub const DEFAULT_TRUST_DOMAIN: &str = "public";

/// `spec.accessControl`.
#[derive(Clone, Debug)]
pub struct AccessControl {
    default_allow: bool,
    policies: Vec<AppPolicy>,
}

#[derive(Clone, Debug)]
struct AppPolicy {
    app_id: String,
    namespace: Option<String>,
    trust_domain: String,
    default_allow: bool,
    operations: Vec<Operation>,
}

#[derive(Clone, Debug)]
struct Operation {
    pattern: Vec<String>,
    verbs: Vec<String>,
    allow: bool,
}

/// `spec.api`: the sidecar APIs this app may use.
#[derive(Clone, Debug, Default)]
pub struct ApiAccess {
    allowed: Vec<ApiRule>,
    denied: Vec<ApiRule>,
}

#[derive(Clone, Debug)]
struct ApiRule {
    name: String,
    version: Option<String>,
    protocol: Option<String>,
}

// === impl AccessControl ===

impl AccessControl {
    /// Reads `spec.accessControl`; `None` when absent (everything allowed).
    pub fn from_spec(spec: Option<&Value>) -> Result<Option<Self>, String> {
        let Some(spec) = spec.filter(|v| !v.is_null()) else {
            return Ok(None);
        };
        let action = |v: Option<&Value>, field: &str| -> Result<bool, String> {
            match v
                .and_then(Value::as_str)
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                None | Some("allow") => Ok(true),
                Some("deny") => Ok(false),
                Some(other) => Err(format!(
                    "spec.accessControl{field}: action must be allow or deny, not '{other}'"
                )),
            }
        };
        let default_allow = action(spec.get("defaultAction"), ".defaultAction")?;
        let default_domain = spec
            .get("trustDomain")
            .and_then(Value::as_str)
            .unwrap_or(DEFAULT_TRUST_DOMAIN)
            .to_owned();
        let mut policies = Vec::new();
        for (i, p) in spec
            .get("policies")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let app_id = p
                .get("appId")
                .and_then(Value::as_str)
                .filter(|a| !a.is_empty())
                .ok_or_else(|| format!("spec.accessControl.policies[{i}].appId is required"))?
                .to_owned();
            let mut operations = Vec::new();
            for (j, op) in p
                .get("operations")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
                .iter()
                .enumerate()
            {
                let name = op
                    .get("name")
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| {
                        format!("spec.accessControl.policies[{i}].operations[{j}].name is required")
                    })?;
                let verbs = op
                    .get("httpVerb")
                    .and_then(Value::as_array)
                    .map(|v| {
                        v.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_ascii_uppercase)
                            .collect()
                    })
                    .unwrap_or_else(|| vec!["*".to_owned()]);
                operations.push(Operation {
                    pattern: segments(name),
                    verbs,
                    allow: action(
                        op.get("action"),
                        &format!(".policies[{i}].operations[{j}].action"),
                    )?,
                });
            }
            policies.push(AppPolicy {
                app_id,
                namespace: p
                    .get("namespace")
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty())
                    .map(str::to_owned),
                trust_domain: p
                    .get("trustDomain")
                    .and_then(Value::as_str)
                    .unwrap_or(&default_domain)
                    .to_owned(),
                default_allow: action(
                    p.get("defaultAction"),
                    &format!(".policies[{i}].defaultAction"),
                )
                .unwrap_or(default_allow),
                operations,
            });
        }
        Ok(Some(Self {
            default_allow,
            policies,
        }))
    }

    /// Whether `caller` (in `trust_domain` and `namespace`) may call `operation` (the method
    /// path, e.g. `/orders/1`, or `/package.Service/Method` for gRPC) with `verb` (empty for
    /// gRPC).
    pub fn allows(
        &self,
        trust_domain: &str,
        caller: &str,
        namespace: &str,
        operation: &str,
        verb: &str,
    ) -> bool {
        let Some(policy) = self.policies.iter().find(|p| {
            p.app_id == caller
                && p.trust_domain == trust_domain
                && p.namespace.as_deref().is_none_or(|n| n == namespace)
        }) else {
            return self.default_allow;
        };
        let path = segments(operation);
        let verb = verb.to_ascii_uppercase();
        for op in &policy.operations {
            if matches(&op.pattern, &path)
                && (verb.is_empty() || op.verbs.iter().any(|v| v == "*" || *v == verb))
            {
                return op.allow;
            }
        }
        policy.default_allow
    }
}

fn segments(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Glob match by path segment: `*` matches one segment (or, inside a segment, any text),
/// `**` any number of segments.
fn matches(pattern: &[String], path: &[String]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=path.len()).any(|skip| matches(rest, &path[skip..]))
        }
        Some((first, rest)) => match path.split_first() {
            Some((seg, tail)) => segment_matches(first, seg) && matches(rest, tail),
            None => false,
        },
    }
}

fn segment_matches(pattern: &str, segment: &str) -> bool {
    if !pattern.contains('*') {
        return pattern == segment;
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let mut rest = segment;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

// === impl ApiAccess ===

impl ApiAccess {
    /// Reads `spec.api`.
    pub fn from_spec(spec: Option<&Value>) -> Result<Self, String> {
        let Some(spec) = spec.filter(|v| !v.is_null()) else {
            return Ok(Self::default());
        };
        let rules = |key: &str| -> Result<Vec<ApiRule>, String> {
            let mut out = Vec::new();
            for (i, r) in spec
                .get(key)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
                .iter()
                .enumerate()
            {
                let name = r
                    .get("name")
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| format!("spec.api.{key}[{i}].name is required"))?;
                let text = |k: &str| {
                    r.get(k)
                        .and_then(Value::as_str)
                        .filter(|v| !v.is_empty())
                        .map(str::to_ascii_lowercase)
                };
                out.push(ApiRule {
                    name: name.to_ascii_lowercase(),
                    version: text("version"),
                    protocol: text("protocol"),
                });
            }
            Ok(out)
        };
        Ok(Self {
            allowed: rules("allowed")?,
            denied: rules("denied")?,
        })
    }

    /// Whether any rule is set.
    pub fn is_restricted(&self) -> bool {
        !self.allowed.is_empty() || !self.denied.is_empty()
    }

    /// Whether the API `name` (`state`, `publish`, `invoke`…) at `version` may be used over
    /// `protocol` (`http` or `grpc`). Health checks are always allowed.
    pub fn allows(&self, name: &str, version: &str, protocol: &str) -> bool {
        if name == "healthz" {
            return true;
        }
        let hit = |r: &ApiRule| {
            r.name == name
                && r.version.as_deref().is_none_or(|v| v == version)
                && r.protocol.as_deref().is_none_or(|p| p == protocol)
        };
        if !self.allowed.is_empty() && !self.allowed.iter().any(hit) {
            return false;
        }
        !self.denied.iter().any(hit)
    }
}

/// The API name and version of an HTTP API path (`/v1.0/state/x` → (`state`, `v1.0`);
/// `/v1.0-alpha1/publish/bulk/…` → (`publish`, `v1.0-alpha1`)).
pub fn http_api(path: &str) -> Option<(&str, &str)> {
    let mut parts = path.trim_start_matches('/').split('/');
    let version = parts.next()?;
    if !version.starts_with("v1") {
        return None;
    }
    let name = parts.next()?;
    Some((name, version))
}

/// The API name of a `dapr.proto.runtime.v1.Dapr` method, as the HTTP API names it.
pub fn grpc_api(method: &str) -> &'static str {
    let m = method.trim_end_matches("Alpha1").trim_end_matches("Alpha2");
    match m {
        "GetState"
        | "GetBulkState"
        | "SaveState"
        | "DeleteState"
        | "DeleteBulkState"
        | "ExecuteStateTransaction"
        | "QueryState" => "state",
        "PublishEvent" | "BulkPublishEvent" | "SubscribeTopicEvents" => "publish",
        "InvokeService" => "invoke",
        "InvokeBinding" => "bindings",
        "GetSecret" | "GetBulkSecret" => "secrets",
        "GetConfiguration" | "SubscribeConfiguration" | "UnsubscribeConfiguration" => {
            "configuration"
        }
        "TryLock" => "lock",
        "Unlock" => "unlock",
        "GetMetadata" | "SetMetadata" => "metadata",
        "Shutdown" => "shutdown",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invocation_policies() {
        let spec = serde_json::json!({
            "defaultAction": "deny",
            "policies": [{
                "appId": "frontend", "defaultAction": "deny", "namespace": "default",
                "operations": [
                    {"name": "/orders/*", "httpVerb": ["GET"], "action": "allow"},
                    {"name": "/admin/**", "httpVerb": ["*"], "action": "deny"},
                    {"name": "/public/**", "action": "allow"},
                    {"name": "/v*/status", "action": "allow"}
                ]
            }, {"appId": "ops", "defaultAction": "allow"}]
        });
        let acl = AccessControl::from_spec(Some(&spec))
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("no acl"));
        assert!(acl.allows("public", "frontend", "default", "/orders/1", "GET"));
        assert!(!acl.allows("public", "frontend", "default", "/orders/1", "POST"));
        assert!(!acl.allows("public", "frontend", "default", "/orders/1/items", "GET"));
        assert!(acl.allows("public", "frontend", "default", "/public/a/b/c", "DELETE"));
        assert!(!acl.allows("public", "frontend", "default", "/admin/x", "GET"));
        assert!(acl.allows("public", "frontend", "default", "/v2/status", "GET"));
        assert!(!acl.allows("public", "frontend", "default", "/other", "GET"));
        assert!(
            !acl.allows("public", "frontend", "prod", "/orders/1", "GET"),
            "namespace must match"
        );
        assert!(acl.allows("public", "ops", "default", "/anything", "PUT"));
        assert!(!acl.allows("public", "stranger", "default", "/orders/1", "GET"));
        assert!(
            !acl.allows("elsewhere", "ops", "default", "/anything", "PUT"),
            "trust domain must match"
        );
        assert!(
            AccessControl::from_spec(Some(&serde_json::json!({"defaultAction": "maybe"}))).is_err()
        );
        assert!(AccessControl::from_spec(None).unwrap_or_default().is_none());
    }

    #[test]
    fn api_lists() {
        let spec = serde_json::json!({"allowed": [{"name": "state", "version": "v1.0", "protocol": "http"}, {"name": "state", "protocol": "grpc"}]});
        let api = ApiAccess::from_spec(Some(&spec)).unwrap_or_default();
        assert!(api.allows("state", "v1.0", "http"));
        assert!(api.allows("state", "v1", "grpc"));
        assert!(!api.allows("publish", "v1.0", "http"));
        assert!(api.allows("healthz", "v1.0", "http"));
        let spec = serde_json::json!({"denied": [{"name": "publish"}]});
        let api = ApiAccess::from_spec(Some(&spec)).unwrap_or_default();
        assert!(!api.allows("publish", "v1.0", "http") && !api.allows("publish", "v1", "grpc"));
        assert!(api.allows("state", "v1.0", "http"));
        assert_eq!(
            http_api("/v1.0-alpha1/publish/bulk/p/t"),
            Some(("publish", "v1.0-alpha1"))
        );
        assert_eq!(grpc_api("TryLockAlpha1"), "lock");
    }
}
