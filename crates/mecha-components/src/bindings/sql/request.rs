//! The request and response shape shared by Dapr's SQL bindings (`bindings.postgresql` and
//! `bindings.mysql`, which includes this file with `#[path]`): operations `exec`, `query` and
//! `close`; request metadata `sql` and `params` (a JSON array of arguments, bound as query
//! parameters, never interpolated); response metadata `operation`, `sql`, `start-time`,
//! `end-time`, `duration` and, for `exec`, `rows-affected`.

use std::collections::HashMap;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use mecha_core::bindings::{BindingError, InvokeRequest, InvokeResponse};
use serde_json::Value;

use super::time::{go_duration, rfc3339_nanos};

/// Runs a statement, answering the affected row count.
pub(crate) const EXEC: &str = "exec";
/// Runs a statement, answering its rows as JSON.
pub(crate) const QUERY: &str = "query";
/// Closes the connection pool; later operations fail.
pub(crate) const CLOSE: &str = "close";
/// The operations of both SQL bindings, in Dapr's order.
pub(crate) const OPERATIONS: &[&str] = &[EXEC, QUERY, CLOSE];

const SQL: &str = "sql";
const PARAMS: &str = "params";

/// A validated `exec` or `query` request.
pub(crate) struct SqlRequest {
    /// `exec` or `query`.
    pub(crate) operation: String,
    /// The statement, as the app wrote it.
    pub(crate) sql: String,
    /// The arguments of its placeholders.
    pub(crate) params: Vec<Value>,
    started_at: SystemTime,
    started: Instant,
}

// === impl SqlRequest ===

impl SqlRequest {
    /// Reads `sql` (required) and `params` (optional JSON array) from the request metadata.
    pub(crate) fn parse(req: &InvokeRequest) -> Result<Self, BindingError> {
        let sql = match req.metadata.get(SQL) {
            Some(sql) if !sql.trim().is_empty() => sql.clone(),
            _ => {
                return Err(BindingError::BadRequest(format!(
                    "required metadata not set: {SQL}"
                )));
            }
        };
        let params = match req.metadata.get(PARAMS).map(String::as_str) {
            None | Some("") => Vec::new(),
            Some(text) => serde_json::from_str::<Vec<Value>>(text).map_err(|e| {
                BindingError::BadRequest(format!(
                    "invalid metadata property {PARAMS}: failed to unserialize into an array: {e}"
                ))
            })?,
        };
        Ok(Self {
            operation: req.operation.clone(),
            sql,
            params,
            started_at: SystemTime::now(),
            started: Instant::now(),
        })
    }

    /// The response: `data`, and the timing metadata (plus `rows-affected` when given).
    pub(crate) fn respond(self, data: Option<Bytes>, rows_affected: Option<u64>) -> InvokeResponse {
        let took = self.started.elapsed();
        let ended_at = self.started_at + took;
        let mut metadata = HashMap::from([
            ("operation".to_owned(), self.operation),
            ("sql".to_owned(), self.sql),
            ("start-time".to_owned(), rfc3339_nanos(self.started_at)),
            ("end-time".to_owned(), rfc3339_nanos(ended_at)),
            ("duration".to_owned(), go_duration(took)),
        ]);
        if let Some(rows) = rows_affected {
            metadata.insert("rows-affected".to_owned(), rows.to_string());
        }
        let content_type = data.as_ref().map(|_| "application/json".to_owned());
        InvokeResponse {
            data,
            metadata,
            content_type,
        }
    }
}

/// A decimal number's text as JSON: a number when an `f64` holds it exactly as written
/// (`1.50` → `1.5`), else the text itself (`12345678901234567890.1`, `NaN`), so no digit is
/// silently lost.
pub(crate) fn decimal(text: &str) -> Value {
    if let Ok(n) = text.parse::<i64>() {
        return Value::from(n);
    }
    if let Ok(n) = text.parse::<u64>() {
        return Value::from(n);
    }
    let normal = normalize_decimal(text);
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() && normalize_decimal(&f.to_string()) == normal => {
            serde_json::Number::from_f64(f).map_or_else(|| Value::from(text), Value::Number)
        }
        _ => Value::from(text),
    }
}

/// `text` without a `+`, leading zeros of the integer part and trailing zeros of the fraction.
fn normalize_decimal(text: &str) -> String {
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text.strip_prefix('+').unwrap_or(text)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let sign = if int == "0" && frac.is_empty() {
        ""
    } else {
        sign
    };
    if frac.is_empty() {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_keep_their_digits() {
        assert_eq!(decimal("1.50"), serde_json::json!(1.5));
        assert_eq!(decimal("-0.10"), serde_json::json!(-0.1));
        assert_eq!(decimal("42"), serde_json::json!(42));
        assert_eq!(
            decimal("12345678901234567890.1"),
            serde_json::json!("12345678901234567890.1")
        );
        assert_eq!(decimal("NaN"), serde_json::json!("NaN"));
    }
}
