//! The CloudEvent envelope: built on publish exactly as daprd builds it, and read back on
//! delivery.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value};

/// The content type of a caller-supplied CloudEvent.
pub const CLOUDEVENT_CONTENT_TYPE: &str = "application/cloudevents+json";
/// The default event type.
pub const DEFAULT_TYPE: &str = "com.dapr.event.sent";
/// The source of caller-supplied events that name none.
const DEFAULT_SOURCE: &str = "Dapr";
/// The data content type when the publisher sends none.
const DEFAULT_DATA_CONTENT_TYPE: &str = "text/plain";
/// Prefix of the publish metadata keys overriding envelope fields.
const OVERRIDE_PREFIX: &str = "cloudevent.";

/// What the sidecar knows about a publish besides the payload.
#[derive(Debug)]
pub struct Context<'a> {
    /// The publishing app's id (the envelope's `source`).
    pub app_id: &'a str,
    /// The pub/sub component name.
    pub pubsub: &'a str,
    /// The topic.
    pub topic: &'a str,
    /// The W3C `traceparent` of the publish, if any.
    pub traceparent: Option<&'a str>,
    /// The W3C `tracestate`, if any.
    pub tracestate: Option<&'a str>,
    /// Publish metadata (`ttlInSeconds`, `cloudevent.*` overrides).
    pub metadata: &'a HashMap<String, String>,
}

/// Whether `content_type` is JSON (`application/json`, `…+json`).
pub fn is_json(content_type: &str) -> bool {
    let ct = media_type(content_type);
    ct == "application/json" || ct.ends_with("+json") || ct == "text/json"
}

/// Whether `content_type` is binary data, carried as `data_base64`.
pub fn is_binary(content_type: &str) -> bool {
    let ct = media_type(content_type);
    ct == "application/octet-stream"
        || ct == "application/x-protobuf"
        || ct == "application/protobuf"
        || ct == "application/grpc"
        || ct.starts_with("image/")
        || ct.starts_with("audio/")
        || ct.starts_with("video/")
}

fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Builds the envelope for `data` published with `content_type`. A caller-supplied
/// CloudEvent (`application/cloudevents+json`) is kept and completed; anything else is
/// wrapped. Returns the serialised event, or why the payload cannot make one.
pub fn envelope(
    data: &[u8],
    content_type: Option<&str>,
    ctx: &Context<'_>,
) -> Result<Vec<u8>, String> {
    let content_type = content_type
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .unwrap_or(DEFAULT_DATA_CONTENT_TYPE);
    let mut event = if media_type(content_type) == CLOUDEVENT_CONTENT_TYPE {
        let Value::Object(mut ce) = serde_json::from_slice::<Value>(data)
            .map_err(|e| format!("the body is not a CloudEvent: {e}"))?
        else {
            return Err("the body is not a CloudEvent: not a JSON object".into());
        };
        fill(&mut ce, "source", DEFAULT_SOURCE);
        fill(&mut ce, "type", DEFAULT_TYPE);
        fill(&mut ce, "specversion", "1.0");
        if !ce.contains_key("id") {
            ce.insert("id".into(), uuid::Uuid::new_v4().to_string().into());
        }
        ce
    } else {
        let mut ce = Map::with_capacity(14);
        ce.insert("id".into(), uuid::Uuid::new_v4().to_string().into());
        ce.insert("source".into(), ctx.app_id.into());
        ce.insert("type".into(), DEFAULT_TYPE.into());
        ce.insert("specversion".into(), "1.0".into());
        ce.insert("datacontenttype".into(), content_type.into());
        if is_json(content_type) {
            let value = serde_json::from_slice::<Value>(data)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(data).into_owned()));
            ce.insert("data".into(), value);
        } else if is_binary(content_type) || std::str::from_utf8(data).is_err() {
            ce.insert("data_base64".into(), BASE64.encode(data).into());
        } else {
            ce.insert(
                "data".into(),
                String::from_utf8_lossy(data).into_owned().into(),
            );
        }
        ce
    };
    event.insert("topic".into(), ctx.topic.into());
    event.insert("pubsubname".into(), ctx.pubsub.into());
    if !event.contains_key("time") {
        event.insert("time".into(), now_rfc3339().into());
    }
    if let Some(tp) = ctx.traceparent.filter(|t| !t.is_empty()) {
        fill(&mut event, "traceparent", tp);
        fill(&mut event, "traceid", tp);
    }
    if let Some(ts) = ctx.tracestate.filter(|t| !t.is_empty()) {
        fill(&mut event, "tracestate", ts);
    }
    for (key, value) in ctx.metadata {
        if let Some(field) = key.strip_prefix(OVERRIDE_PREFIX)
            && matches!(
                field,
                "id" | "source" | "type" | "traceparent" | "tracestate" | "subject"
            )
        {
            event.insert(field.into(), value.clone().into());
            if field == "traceparent" {
                event.insert("traceid".into(), value.clone().into());
            }
        }
    }
    if let Some(at) = mecha_core::pubsub::expires_at(ctx.metadata) {
        event.insert("expiration".into(), rfc3339_millis(at).into());
    }
    serde_json::to_vec(&Value::Object(event)).map_err(|e| e.to_string())
}

fn fill(ce: &mut Map<String, Value>, key: &str, value: &str) {
    let missing = match ce.get(key) {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(_) => false,
    };
    if missing {
        ce.insert(key.into(), value.into());
    }
}

/// The envelope a raw-payload subscriber receives: a new event around the bytes.
pub fn synthesize(data: &[u8], pubsub: &str, topic: &str) -> Map<String, Value> {
    let mut ce = Map::with_capacity(10);
    ce.insert("id".into(), uuid::Uuid::new_v4().to_string().into());
    ce.insert("source".into(), DEFAULT_SOURCE.into());
    ce.insert("type".into(), DEFAULT_TYPE.into());
    ce.insert("specversion".into(), "1.0".into());
    ce.insert("datacontenttype".into(), "application/octet-stream".into());
    ce.insert("data_base64".into(), BASE64.encode(data).into());
    ce.insert("topic".into(), topic.into());
    ce.insert("pubsubname".into(), pubsub.into());
    ce.insert("time".into(), now_rfc3339().into());
    ce
}

/// Whether the event's `expiration` has passed.
pub fn is_expired(ce: &Map<String, Value>) -> bool {
    ce.get("expiration")
        .and_then(Value::as_str)
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .is_some_and(|at| at < chrono::Utc::now())
}

/// The event's payload as bytes, as gRPC apps receive it: decoded `data_base64`, the string,
/// or the JSON encoding of `data`.
pub fn data_bytes(ce: &Map<String, Value>) -> Vec<u8> {
    if let Some(b64) = ce.get("data_base64").and_then(Value::as_str) {
        return BASE64.decode(b64).unwrap_or_default();
    }
    match ce.get("data") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s.clone().into_bytes(),
        Some(v) => serde_json::to_vec(v).unwrap_or_default(),
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn rfc3339_millis(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(md: &HashMap<String, String>) -> Context<'_> {
        Context {
            app_id: "pub",
            pubsub: "ps",
            topic: "orders",
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            tracestate: None,
            metadata: md,
        }
    }

    fn build(data: &[u8], ct: Option<&str>, md: &HashMap<String, String>) -> Map<String, Value> {
        let out = envelope(data, ct, &ctx(md)).unwrap_or_default();
        match serde_json::from_slice(&out) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn wraps_json_text_and_binary() {
        let md = HashMap::new();
        let ce = build(br#"{"a":1}"#, Some("application/json"), &md);
        assert_eq!(ce["data"], serde_json::json!({"a":1}));
        assert_eq!(ce["source"], "pub");
        assert_eq!(ce["type"], DEFAULT_TYPE);
        assert_eq!(ce["specversion"], "1.0");
        assert_eq!(ce["topic"], "orders");
        assert_eq!(ce["pubsubname"], "ps");
        assert_eq!(ce["datacontenttype"], "application/json");
        assert!(
            ce["traceparent"]
                .as_str()
                .unwrap_or_default()
                .starts_with("00-0af7")
        );
        assert_eq!(ce["traceid"], ce["traceparent"]);
        assert!(ce.contains_key("time") && ce.contains_key("id"));
        assert!(!ce.contains_key("expiration"));

        let ce = build(b"hello", None, &md);
        assert_eq!(ce["data"], "hello");
        assert_eq!(ce["datacontenttype"], "text/plain");

        let ce = build(b"not json", Some("application/json"), &md);
        assert_eq!(ce["data"], "not json");

        let ce = build(&[0, 159, 146, 150], Some("application/octet-stream"), &md);
        assert_eq!(ce["data_base64"], BASE64.encode([0, 159, 146, 150]));
        assert_eq!(data_bytes(&ce), vec![0, 159, 146, 150]);
        assert!(!ce.contains_key("data"));
    }

    #[test]
    fn keeps_caller_cloudevents_and_applies_overrides() {
        let mut md = HashMap::new();
        let ce = build(
            br#"{"id":"x1","type":"my.type","data":{"k":"v"},"datacontenttype":"application/json"}"#,
            Some(CLOUDEVENT_CONTENT_TYPE),
            &md,
        );
        assert_eq!(ce["id"], "x1");
        assert_eq!(ce["type"], "my.type");
        assert_eq!(ce["source"], "Dapr");
        assert_eq!(ce["specversion"], "1.0");
        assert_eq!(ce["topic"], "orders");
        assert_eq!(data_bytes(&ce), br#"{"k":"v"}"#.to_vec());
        assert!(envelope(b"[1]", Some(CLOUDEVENT_CONTENT_TYPE), &ctx(&md)).is_err());

        md.insert("cloudevent.id".into(), "custom".into());
        md.insert("cloudevent.type".into(), "t2".into());
        md.insert("cloudevent.subject".into(), "s".into());
        md.insert("ttlInSeconds".into(), "30".into());
        let ce = build(b"x", None, &md);
        assert_eq!(ce["id"], "custom");
        assert_eq!(ce["type"], "t2");
        assert_eq!(ce["subject"], "s");
        assert!(!is_expired(&ce));
        let mut old = ce.clone();
        old.insert("expiration".into(), "2000-01-01T00:00:00Z".into());
        assert!(is_expired(&old));
    }
}
