//! `kind: Subscription` documents (`dapr.io/v1alpha1` with `spec.route`, `dapr.io/v2alpha1`
//! with `spec.routes`), and the subscription model the runtime also builds from the app's
//! `/dapr/subscribe` answer and from streaming subscriptions.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

/// A subscription of the app to one topic of one pub/sub component.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionSpec {
    /// The pub/sub component.
    #[serde(alias = "pubsub_name", alias = "pubsubName")]
    pub pubsubname: String,
    /// The topic.
    pub topic: String,
    /// `route` (v1 style): the app path every event goes to.
    #[serde(default)]
    pub route: Option<String>,
    /// `routes`: CEL rules and a default path.
    #[serde(default)]
    pub routes: Option<Routes>,
    /// `deadLetterTopic`: where events go after delivery failed for good.
    #[serde(default, alias = "dead_letter_topic")]
    pub dead_letter_topic: Option<String>,
    /// Subscription metadata (`rawPayload`, broker options).
    #[serde(default, deserialize_with = "string_map")]
    pub metadata: HashMap<String, String>,
    /// `bulkSubscribe`.
    #[serde(default, alias = "bulk_subscribe")]
    pub bulk_subscribe: Option<BulkSubscribe>,
}

/// `routes`: rules evaluated in order, then the default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Routes {
    /// The rules.
    #[serde(default, deserialize_with = "null_as_default")]
    pub rules: Vec<Rule>,
    /// The path used when no rule matches.
    #[serde(default)]
    pub default: Option<String>,
}

/// One routing rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Rule {
    /// A CEL expression over `event`.
    #[serde(rename = "match", default)]
    pub match_expr: String,
    /// The app path.
    pub path: String,
}

/// `bulkSubscribe`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkSubscribe {
    /// Whether events are delivered in batches.
    #[serde(default)]
    pub enabled: bool,
    /// The most events in one batch (default 100).
    #[serde(default, alias = "max_messages_count")]
    pub max_messages_count: Option<i64>,
    /// The longest a batch waits to fill, in milliseconds (default 1000).
    #[serde(default, alias = "max_await_duration_ms")]
    pub max_await_duration_ms: Option<i64>,
}

/// A `kind: Subscription` document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionResource {
    /// `metadata.name`.
    pub name: String,
    /// `spec`.
    pub spec: SubscriptionSpec,
    /// `scopes`: the app ids it applies to; empty means every app.
    pub scopes: Vec<String>,
    /// The file it came from.
    pub source: PathBuf,
}

// === impl SubscriptionSpec ===

impl SubscriptionSpec {
    /// The ordered `(CEL expression, path)` rules, the default route last with an empty
    /// expression; empty when the subscription names no route at all.
    pub fn rules(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        if let Some(routes) = &self.routes {
            for r in &routes.rules {
                if !r.path.trim().is_empty() {
                    let expr = r.match_expr.trim();
                    out.push((expr.to_owned(), r.path.trim().to_owned()));
                }
            }
        }
        let default = self
            .routes
            .as_ref()
            .and_then(|r| r.default.as_deref())
            .or(self.route.as_deref())
            .map(str::trim)
            .filter(|p| !p.is_empty());
        if let Some(d) = default {
            out.push((String::new(), d.to_owned()));
        }
        out
    }

    /// Whether events arrive without a CloudEvent envelope (`metadata.rawPayload`).
    pub fn raw_payload(&self) -> bool {
        self.metadata
            .get("rawPayload")
            .and_then(|v| crate::metadata::parse_bool(v))
            .unwrap_or(false)
    }
}

// === impl SubscriptionResource ===

impl SubscriptionResource {
    /// Parses a `kind: Subscription` document.
    pub(super) fn from_document(doc: &Value, name: &str, source: PathBuf) -> Result<Self, String> {
        let spec = doc
            .get("spec")
            .filter(|s| s.is_object())
            .ok_or("subscription has no spec")?;
        let spec: SubscriptionSpec =
            serde_json::from_value(spec.clone()).map_err(|e| format!("spec: {e}"))?;
        if spec.pubsubname.trim().is_empty() {
            return Err("spec.pubsubname is required".into());
        }
        if spec.topic.trim().is_empty() {
            return Err("spec.topic is required".into());
        }
        if spec.rules().is_empty() {
            return Err("spec.route or spec.routes is required".into());
        }
        let scopes = match doc.get("scopes") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(s)) => s.iter().map(super::scalar_to_string).collect(),
            Some(_) => return Err("scopes must be a list of app ids".into()),
        };
        Ok(Self {
            name: name.to_owned(),
            spec,
            scopes,
            source,
        })
    }

    /// Whether `app_id` may use this subscription.
    pub fn in_scope(&self, app_id: &str) -> bool {
        self.scopes.is_empty() || self.scopes.iter().any(|s| s == app_id)
    }
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A map whose values may be written as YAML scalars of any type.
fn string_map<'de, D>(d: D) -> Result<HashMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let raw = Option::<HashMap<String, Value>>::deserialize(d)?.unwrap_or_default();
    Ok(raw
        .into_iter()
        .map(|(k, v)| (k, super::scalar_to_string(&v)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2_routes() {
        let v1: SubscriptionSpec = serde_json::from_value(serde_json::json!({
            "pubsubname": "p", "topic": "t", "route": "/orders"
        }))
        .unwrap_or_default();
        assert_eq!(v1.rules(), vec![(String::new(), "/orders".to_owned())]);
        let v2: SubscriptionSpec = serde_json::from_value(serde_json::json!({
            "pubsubname": "p", "topic": "t",
            "routes": {"rules": [{"match": "event.type == \"a\"", "path": "/a"}], "default": "/d"},
            "metadata": {"rawPayload": true}, "deadLetterTopic": "dlt",
            "bulkSubscribe": {"enabled": true, "maxMessagesCount": 10}
        }))
        .unwrap_or_default();
        assert_eq!(
            v2.rules(),
            vec![
                ("event.type == \"a\"".to_owned(), "/a".to_owned()),
                (String::new(), "/d".to_owned())
            ]
        );
        assert!(v2.raw_payload());
        assert_eq!(v2.dead_letter_topic.as_deref(), Some("dlt"));
        assert_eq!(
            v2.bulk_subscribe.and_then(|b| b.max_messages_count),
            Some(10)
        );
    }
}
