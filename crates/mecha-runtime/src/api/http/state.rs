//! HTTP handlers of the state API.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use mecha_core::state::{Concurrency, Consistency, GetResponse};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use super::{body, json_response, split_metadata};
use crate::error::ApiError;
use crate::sidecar::Services;
use crate::state::{DeleteItem, SaveItem, StateOptions, TxOperation};

type Params = Query<Vec<(String, String)>>;

#[derive(Deserialize)]
struct ItemBody {
    key: String,
    #[serde(default)]
    value: Option<Box<RawValue>>,
    #[serde(default)]
    etag: Option<Value>,
    #[serde(default)]
    metadata: HashMap<String, String>,
    #[serde(default)]
    options: Option<OptionsBody>,
}

#[derive(Deserialize, Default)]
struct OptionsBody {
    #[serde(default)]
    concurrency: Option<String>,
    #[serde(default)]
    consistency: Option<String>,
}

#[derive(Deserialize)]
struct BulkGetBody {
    #[serde(default)]
    keys: Vec<String>,
    #[serde(default)]
    metadata: HashMap<String, String>,
    #[allow(dead_code)]
    #[serde(default)]
    parallelism: Option<i64>,
}

#[derive(Deserialize)]
struct TransactionBody {
    #[serde(default)]
    operations: Vec<OperationBody>,
    #[serde(default)]
    metadata: HashMap<String, String>,
}

#[derive(Deserialize)]
struct OperationBody {
    operation: String,
    request: ItemBody,
}

#[derive(Serialize)]
struct BulkItemOut {
    key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    etag: Option<String>,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    metadata: HashMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
struct QueryOut {
    results: Vec<QueryItemOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    metadata: HashMap<String, String>,
}

#[derive(Serialize)]
struct QueryItemOut {
    key: String,
    data: Box<RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    etag: Option<String>,
}

/// `POST|PUT /v1.0/state/{store}`.
pub(super) async fn save(
    State(s): State<Arc<Services>>,
    Path(store): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let raw = body(raw, s.max_request_body)?;
    let items: Vec<ItemBody> = decode(&raw)?;
    let items = items
        .into_iter()
        .map(ItemBody::into_save_item)
        .collect::<Result<_, _>>()?;
    s.state.save(&store, items).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1.0/state/{store}/{key}`.
pub(super) async fn get(
    State(s): State<Arc<Services>>,
    Path((store, key)): Path<(String, String)>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let (metadata, rest) = split_metadata(params);
    let consistency = consistency(param(&rest, "consistency"))?;
    Ok(
        match s.state.get(&store, &key, metadata, consistency).await? {
            None => StatusCode::NO_CONTENT.into_response(),
            Some(value) => value_response(value),
        },
    )
}

/// `DELETE /v1.0/state/{store}/{key}`.
pub(super) async fn delete(
    State(s): State<Arc<Services>>,
    Path((store, key)): Path<(String, String)>,
    Query(params): Params,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let (metadata, rest) = split_metadata(params);
    let etag = headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().trim_matches('"').to_owned());
    let options = StateOptions {
        concurrency: concurrency(param(&rest, "concurrency"))?,
        consistency: consistency(param(&rest, "consistency"))?,
    };
    s.state
        .delete(
            &store,
            DeleteItem {
                key,
                etag,
                metadata,
                options,
            },
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST|PUT /v1.0/state/{store}/bulk` and `/transaction`, which share the `{key}` route.
pub(super) async fn post_sub(
    State(s): State<Arc<Services>>,
    Path((store, action)): Path<(String, String)>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let raw = body(raw, s.max_request_body)?;
    match action.as_str() {
        "bulk" => bulk_get(&s, &store, &raw).await,
        "transaction" => transaction(&s, &store, &raw)
            .await
            .map(IntoResponse::into_response),
        _ => Ok(StatusCode::METHOD_NOT_ALLOWED.into_response()),
    }
}

async fn bulk_get(s: &Services, store: &str, raw: &[u8]) -> Result<Response, ApiError> {
    let req: BulkGetBody = decode(raw)?;
    let items = s.state.bulk_get(store, &req.keys, &req.metadata).await?;
    let out: Vec<BulkItemOut> = items
        .into_iter()
        .map(|i| {
            let (data, etag, metadata) = match i.value {
                Some(v) => (Some(as_json(&v.data)), v.etag, v.metadata),
                None => (None, None, HashMap::new()),
            };
            BulkItemOut {
                key: i.key,
                data,
                etag,
                metadata,
                error: i.error,
            }
        })
        .collect();
    Ok(json_response(&out))
}

async fn transaction(s: &Services, store: &str, raw: &[u8]) -> Result<StatusCode, ApiError> {
    let req: TransactionBody = decode(raw)?;
    let ops = req
        .operations
        .into_iter()
        .map(|op| {
            let mut item = op.request.into_save_item()?;
            for (k, v) in &req.metadata {
                item.metadata.entry(k.clone()).or_insert_with(|| v.clone());
            }
            TxOperation::from_wire(&op.operation, item)
        })
        .collect::<Result<Vec<_>, _>>()?;
    s.state.transact(store, ops).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST|PUT /v1.0-alpha1/state/{store}/query`.
pub(super) async fn query(
    State(s): State<Arc<Services>>,
    Path(store): Path<String>,
    Query(params): Params,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let raw = body(raw, s.max_request_body)?;
    let (metadata, _) = split_metadata(params);
    let (items, token) = s.state.query(&store, &raw, &metadata).await?;
    if items.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let results = items
        .into_iter()
        .map(|i| QueryItemOut {
            key: i.key,
            data: as_json(&i.data),
            etag: i.etag,
        })
        .collect();
    Ok(json_response(&QueryOut {
        results,
        token,
        metadata: HashMap::new(),
    }))
}

// === impl ItemBody ===

impl ItemBody {
    fn into_save_item(self) -> Result<SaveItem, ApiError> {
        let etag = match self.etag {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(_) => return Err(ApiError::malformed("etag must be a string")),
        };
        let options = self.options.unwrap_or_default();
        Ok(SaveItem {
            key: self.key,
            value: match self.value {
                Some(v) => Bytes::from(String::from(Box::<str>::from(v))),
                None => Bytes::from_static(b"null"),
            },
            etag,
            metadata: self.metadata,
            options: StateOptions {
                concurrency: concurrency(options.concurrency.as_deref())?,
                consistency: consistency(options.consistency.as_deref())?,
            },
        })
    }
}

fn decode<'a, T: Deserialize<'a>>(raw: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(raw)
        .map_err(|e| ApiError::malformed(format!("failed deserializing HTTP body: {e}")))
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn concurrency(v: Option<&str>) -> Result<Concurrency, ApiError> {
    match v.unwrap_or("") {
        "" => Ok(Concurrency::Unspecified),
        "first-write" => Ok(Concurrency::FirstWrite),
        "last-write" => Ok(Concurrency::LastWrite),
        other => Err(ApiError::malformed(format!(
            "unknown concurrency '{other}': expected first-write or last-write"
        ))),
    }
}

fn consistency(v: Option<&str>) -> Result<Consistency, ApiError> {
    match v.unwrap_or("") {
        "" => Ok(Consistency::Unspecified),
        "eventual" => Ok(Consistency::Eventual),
        "strong" => Ok(Consistency::Strong),
        other => Err(ApiError::malformed(format!(
            "unknown consistency '{other}': expected eventual or strong"
        ))),
    }
}

/// 200 with the stored bytes verbatim, the ETag and response metadata as headers.
fn value_response(value: GetResponse) -> Response {
    let mut res = value.data.into_response();
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(etag) = value.etag.and_then(|e| HeaderValue::from_str(&e).ok()) {
        headers.insert(header::ETAG, etag);
    }
    for (k, v) in value.metadata {
        if let (Ok(name), Ok(v)) = (
            HeaderName::try_from(format!("metadata.{k}")),
            HeaderValue::from_bytes(v.as_bytes()),
        ) {
            headers.insert(name, v);
        }
    }
    res
}

/// Embeds stored bytes in a JSON response: JSON as it is, other UTF-8 text as a string, and
/// other bytes as a base64 string.
fn as_json(data: &[u8]) -> Box<RawValue> {
    let raw = match std::str::from_utf8(data) {
        Ok(text) if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() => text.to_owned(),
        Ok(text) => Value::from(text).to_string(),
        Err(_) => Value::from(base64::engine::general_purpose::STANDARD.encode(data)).to_string(),
    };
    // Every branch above produces valid JSON; the default (null) is never reached.
    RawValue::from_string(raw).unwrap_or_default()
}
