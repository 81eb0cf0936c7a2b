//! Delivering events to the app: one CloudEvent (`POST /<route>` as
//! `application/cloudevents+json`, or gRPC `OnTopicEvent`) or a batch (bulk subscribe), and
//! reading the app's answer as Dapr does.

use std::collections::HashMap;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode, header};
use mecha_proto::runtime as rt;
use serde_json::{Map, Value};
use tonic::Code;

use super::cloudevent::{self, CLOUDEVENT_CONTENT_TYPE};
use crate::app_channel::AppChannel;

/// What the app made of an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Processed: acknowledge.
    Success,
    /// Deliver again later; the reason is logged.
    Retry(String),
    /// Do not deliver again (dead-letter topic if one is set); the reason is logged.
    Drop(String),
}

/// One event of a batch.
#[derive(Debug)]
pub struct BulkEntry<'a> {
    /// The entry id the app answers with.
    pub entry_id: String,
    /// The CloudEvent.
    pub event: &'a Map<String, Value>,
    /// Message metadata.
    pub metadata: &'a HashMap<String, String>,
}

/// Delivers one event to `path`.
pub async fn deliver(
    app: &AppChannel,
    pubsub: &str,
    topic: &str,
    path: &str,
    event: &Map<String, Value>,
    metadata: &HashMap<String, String>,
) -> Outcome {
    if let Some(mut grpc) = app.grpc() {
        let req = topic_event_request(event, pubsub, topic, path);
        return match grpc.on_topic_event(app.grpc_request(req)).await {
            Ok(r) => grpc_status(r.into_inner().status),
            Err(e) if e.code() == Code::Unimplemented => Outcome::Drop(format!(
                "the app does not implement OnTopicEvent: {}",
                e.message()
            )),
            Err(e) => Outcome::Retry(format!("OnTopicEvent failed: {e}")),
        };
    }
    let body = match serde_json::to_vec(event) {
        Ok(b) => Bytes::from(b),
        Err(e) => return Outcome::Drop(format!("cannot serialise the event: {e}")),
    };
    let mut headers = Vec::with_capacity(4 + metadata.len());
    headers.push((
        header::CONTENT_TYPE,
        HeaderValue::from_static(CLOUDEVENT_CONTENT_TYPE),
    ));
    for key in ["traceparent", "tracestate"] {
        if let Some(v) = event.get(key).and_then(Value::as_str)
            && let Ok(v) = HeaderValue::from_str(v)
        {
            headers.push((HeaderName::from_static(key), v));
        }
    }
    headers.extend(metadata_headers(metadata));
    let slashed;
    let path = if path.starts_with('/') {
        path
    } else {
        slashed = format!("/{path}");
        &slashed
    };
    match app.request(Method::POST, path, headers, body).await {
        Ok(r) => http_status(r.status, &r.body),
        Err(e) => Outcome::Retry(e),
    }
}

/// Delivers a batch to `path`; returns one outcome per entry, in order.
pub async fn deliver_bulk(
    app: &AppChannel,
    pubsub: &str,
    topic: &str,
    path: &str,
    entries: &[BulkEntry<'_>],
) -> Vec<Outcome> {
    let id = uuid::Uuid::new_v4().to_string();
    if let Some(mut grpc) = app.grpc() {
        let req = rt::TopicEventBulkRequest {
            id,
            entries: entries
                .iter()
                .map(|e| rt::TopicEventBulkRequestEntry {
                    entry_id: e.entry_id.clone(),
                    content_type: CLOUDEVENT_CONTENT_TYPE.to_owned(),
                    metadata: e.metadata.clone(),
                    event: Some(rt::topic_event_bulk_request_entry::Event::CloudEvent(
                        ce_request(e.event),
                    )),
                })
                .collect(),
            metadata: HashMap::new(),
            topic: topic.to_owned(),
            pubsub_name: pubsub.to_owned(),
            r#type: "com.dapr.event.sent.bulk".to_owned(),
            path: path.to_owned(),
        };
        return match grpc.on_bulk_topic_event(app.grpc_request(req)).await {
            Ok(r) => {
                let statuses: HashMap<String, i32> = r
                    .into_inner()
                    .statuses
                    .into_iter()
                    .map(|s| (s.entry_id, s.status))
                    .collect();
                entries
                    .iter()
                    .map(|e| match statuses.get(&e.entry_id) {
                        Some(s) => grpc_status(*s),
                        None => Outcome::Retry("the app gave no status for the entry".into()),
                    })
                    .collect()
            }
            Err(e) if e.code() == Code::Unimplemented => {
                let why = format!(
                    "the app does not implement OnBulkTopicEvent: {}",
                    e.message()
                );
                entries.iter().map(|_| Outcome::Drop(why.clone())).collect()
            }
            Err(e) => {
                let why = format!("OnBulkTopicEvent failed: {e}");
                entries
                    .iter()
                    .map(|_| Outcome::Retry(why.clone()))
                    .collect()
            }
        };
    }
    let body = serde_json::json!({
        "id": id,
        "type": "com.dapr.event.sent.bulk",
        "topic": topic,
        "pubsubname": pubsub,
        "metadata": {},
        "entries": entries.iter().map(|e| serde_json::json!({
            "entryId": e.entry_id,
            "event": e.event,
            "contentType": CLOUDEVENT_CONTENT_TYPE,
            "metadata": e.metadata,
        })).collect::<Vec<_>>(),
    });
    let body = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    let headers = [(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    )];
    let all = |o: Outcome| entries.iter().map(|_| o.clone()).collect::<Vec<_>>();
    let slashed;
    let path = if path.starts_with('/') {
        path
    } else {
        slashed = format!("/{path}");
        &slashed
    };
    let res = match app.request(Method::POST, path, headers, body).await {
        Ok(r) => r,
        Err(e) => return all(Outcome::Retry(e)),
    };
    if res.status == StatusCode::NOT_FOUND {
        return all(Outcome::Drop(format!("the app answered 404 for {path}")));
    }
    if !res.status.is_success() {
        return all(Outcome::Retry(format!("the app answered {}", res.status)));
    }
    let statuses: HashMap<String, String> = serde_json::from_slice::<Value>(&res.body)
        .ok()
        .and_then(|v| v.get("statuses").and_then(Value::as_array).cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|s| {
            Some((
                s.get("entryId")?.as_str()?.to_owned(),
                s.get("status")?.as_str().unwrap_or_default().to_owned(),
            ))
        })
        .collect();
    entries
        .iter()
        .map(|e| match statuses.get(&e.entry_id) {
            Some(s) => text_status(s),
            None => Outcome::Retry("the app gave no status for the entry".into()),
        })
        .collect()
}

/// Reads an HTTP app's answer to one event.
pub(crate) fn http_status(status: StatusCode, body: &[u8]) -> Outcome {
    if status.is_success() {
        let Ok(Value::Object(answer)) = serde_json::from_slice::<Value>(body) else {
            return Outcome::Success;
        };
        return match answer.get("status") {
            None | Some(Value::Null) => Outcome::Success,
            Some(Value::String(s)) => text_status(s),
            Some(other) => Outcome::Retry(format!("unknown status {other} from the app")),
        };
    }
    if status == StatusCode::NOT_FOUND {
        return Outcome::Drop("the app answered 404 Not Found".into());
    }
    Outcome::Retry(format!("the app answered {status}"))
}

fn text_status(s: &str) -> Outcome {
    match s.to_ascii_uppercase().as_str() {
        "" | "SUCCESS" => Outcome::Success,
        "RETRY" => Outcome::Retry("the app asked for a retry".into()),
        "DROP" => Outcome::Drop("the app dropped the event".into()),
        other => Outcome::Retry(format!("unknown status '{other}' from the app")),
    }
}

fn grpc_status(status: i32) -> Outcome {
    use rt::topic_event_response::TopicEventResponseStatus as S;
    match S::try_from(status) {
        Ok(S::Success) => Outcome::Success,
        Ok(S::Retry) => Outcome::Retry("the app asked for a retry".into()),
        Ok(S::Drop) => Outcome::Drop("the app dropped the event".into()),
        Err(_) => Outcome::Retry(format!("unknown status {status} from the app")),
    }
}

/// Reads a streaming subscriber's answer.
pub(crate) fn stream_status(status: Option<&rt::TopicEventResponse>) -> Outcome {
    match status {
        Some(s) => grpc_status(s.status),
        None => Outcome::Success,
    }
}

fn metadata_headers(
    metadata: &HashMap<String, String>,
) -> impl Iterator<Item = (HeaderName, HeaderValue)> + '_ {
    metadata.iter().filter_map(|(k, v)| {
        Some((
            HeaderName::try_from(k.as_str()).ok()?,
            HeaderValue::from_str(v).ok()?,
        ))
    })
}

fn text(event: &Map<String, Value>, key: &str) -> String {
    event
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// The gRPC form of an event, as `OnTopicEvent` and streaming subscriptions carry it.
pub(crate) fn topic_event_request(
    event: &Map<String, Value>,
    pubsub: &str,
    topic: &str,
    path: &str,
) -> rt::TopicEventRequest {
    const MAPPED: &[&str] = &[
        "id",
        "source",
        "type",
        "specversion",
        "datacontenttype",
        "data",
        "data_base64",
    ];
    let extensions = prost_types::Struct {
        fields: event
            .iter()
            .filter(|(k, _)| !MAPPED.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), to_prost(v)))
            .collect(),
    };
    let mut content_type = text(event, "datacontenttype");
    if content_type.is_empty() {
        content_type = if event.contains_key("data_base64") {
            "application/octet-stream".into()
        } else {
            "application/json".into()
        };
    }
    rt::TopicEventRequest {
        id: text(event, "id"),
        source: text(event, "source"),
        r#type: text(event, "type"),
        spec_version: text(event, "specversion"),
        data_content_type: content_type,
        data: cloudevent::data_bytes(event),
        topic: topic.to_owned(),
        pubsub_name: pubsub.to_owned(),
        path: path.to_owned(),
        extensions: Some(extensions),
    }
}

fn ce_request(event: &Map<String, Value>) -> rt::TopicEventCeRequest {
    let r = topic_event_request(event, "", "", "");
    rt::TopicEventCeRequest {
        id: r.id,
        source: r.source,
        r#type: r.r#type,
        spec_version: r.spec_version,
        data_content_type: r.data_content_type,
        data: r.data,
        extensions: r.extensions,
    }
}

/// A JSON value as a protobuf `Value`.
pub(crate) fn to_prost(v: &Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(to_prost).collect(),
        }),
        Value::Object(o) => Kind::StructValue(prost_types::Struct {
            fields: o.iter().map(|(k, v)| (k.clone(), to_prost(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_answers() {
        assert_eq!(http_status(StatusCode::OK, b""), Outcome::Success);
        assert_eq!(
            http_status(StatusCode::NO_CONTENT, b"not json"),
            Outcome::Success
        );
        assert_eq!(
            http_status(StatusCode::OK, br#"{"status":"SUCCESS"}"#),
            Outcome::Success
        );
        assert_eq!(
            http_status(StatusCode::OK, br#"{"status":""}"#),
            Outcome::Success
        );
        assert!(matches!(
            http_status(StatusCode::OK, br#"{"status":"RETRY"}"#),
            Outcome::Retry(_)
        ));
        assert!(matches!(
            http_status(StatusCode::OK, br#"{"status":"DROP"}"#),
            Outcome::Drop(_)
        ));
        assert!(matches!(
            http_status(StatusCode::OK, br#"{"status":"WHAT"}"#),
            Outcome::Retry(_)
        ));
        assert!(matches!(
            http_status(StatusCode::NOT_FOUND, b""),
            Outcome::Drop(_)
        ));
        assert!(matches!(
            http_status(StatusCode::INTERNAL_SERVER_ERROR, b""),
            Outcome::Retry(_)
        ));
    }

    #[test]
    fn grpc_form_of_an_event() {
        let ev = serde_json::json!({
            "id": "1", "source": "a", "type": "t", "specversion": "1.0",
            "datacontenttype": "application/json", "data": {"x": 1},
            "topic": "orders", "pubsubname": "ps", "traceparent": "00-x"
        });
        let Value::Object(ev) = ev else { return };
        let r = topic_event_request(&ev, "ps", "orders", "/orders");
        assert_eq!(r.data, br#"{"x":1}"#.to_vec());
        assert_eq!(r.r#type, "t");
        let ext = r.extensions.unwrap_or_default();
        assert!(ext.fields.contains_key("traceparent"));
        assert!(!ext.fields.contains_key("data"));
    }
}
