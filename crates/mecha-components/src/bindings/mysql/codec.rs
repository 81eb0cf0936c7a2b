//! MySQL/MariaDB values to and from JSON.
//!
//! Rows are JSON objects keyed by column name, as Dapr's binding returns them, and, as there,
//! a `NULL` column is left out of its row. Integers (`BOOLEAN`, `YEAR` too), `FLOAT` and
//! `DOUBLE` are numbers; `DECIMAL` a number when an `f64` holds it exactly, else its text;
//! character types, `ENUM` and `SET` strings; `JSON` the JSON itself (MariaDB reports its JSON
//! columns as `LONGTEXT`, so they come back as strings, as with Dapr); binary types base64;
//! `DATE`, `DATETIME` and `TIMESTAMP` RFC 3339 strings in UTC (the session's time zone is
//! UTC); `TIME` `[-]HH:MM:SS[.ffffff]`; `BIT` a number.
//!
//! Parameters: JSON `null`, booleans, integers, floats and strings are bound as themselves
//! (the server converts them to the column's type, as it does for Dapr's Go driver); arrays
//! and objects as their JSON text.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value};
use sqlx::mysql::{MySql, MySqlArguments, MySqlRow};
use sqlx::query::Query;
use sqlx::{Column, Row, TypeInfo, ValueRef};

use crate::bindings::sql::request::decimal;
use crate::bindings::sql::time::{date, days_from_civil, parse_timestamp, timestamp_micros};

/// Binds one JSON argument to the next placeholder.
pub(super) fn bind<'q>(
    query: Query<'q, MySql, MySqlArguments>,
    value: &Value,
) -> Query<'q, MySql, MySqlArguments> {
    match value {
        Value::Null => query.bind(None::<String>),
        Value::Bool(b) => query.bind(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => query.bind(i),
            (None, Some(u)) => query.bind(u),
            _ => query.bind(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => query.bind(s.clone()),
        other => query.bind(other.to_string()),
    }
}

/// A row as a JSON object, `NULL` columns left out; `binary` when it came from a prepared
/// statement (the binary protocol), else from the text protocol.
pub(super) fn row_object(row: &MySqlRow, binary: bool) -> Value {
    let mut object = Map::new();
    for (i, column) in row.columns().iter().enumerate() {
        let Ok(value) = row.try_get_raw(i) else {
            continue;
        };
        if value.is_null() {
            continue;
        }
        let type_info = value.type_info().into_owned();
        let Ok(bytes) = row.try_get_unchecked::<&[u8], _>(i) else {
            continue;
        };
        // Text with a binary collation (MariaDB's JSON is `LONGTEXT ... utf8mb4_bin`) is
        // reported with the name of a binary type: the collation tells them apart.
        let textual = <str as sqlx::Type<MySql>>::compatible(&type_info);
        let name = match type_info.name() {
            "BINARY" | "VARBINARY" | "TINYBLOB" | "BLOB" | "MEDIUMBLOB" | "LONGBLOB" if textual => {
                "TEXT"
            }
            name => name,
        };
        let decoded = if binary {
            decode_binary(name, bytes)
        } else {
            decode_text(name, bytes)
        };
        object.insert(column.name().to_owned(), decoded);
    }
    Value::Object(object)
}

fn decode_binary(name: &str, bytes: &[u8]) -> Value {
    let decoded = match name {
        "BOOLEAN" | "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" | "YEAR" => {
            signed(bytes).map(Value::from)
        }
        n if n.ends_with(" UNSIGNED") => unsigned(bytes).map(Value::from),
        "BIT" => unsigned_be(bytes).map(Value::from),
        "FLOAT" => bytes
            .try_into()
            .ok()
            .map(|a| float(f64::from(f32::from_le_bytes(a)))),
        "DOUBLE" => bytes.try_into().ok().map(|a| float(f64::from_le_bytes(a))),
        "DATE" | "DATETIME" | "TIMESTAMP" => datetime(bytes).map(Value::from),
        "TIME" => time(bytes).map(Value::from),
        _ => None,
    };
    decoded.unwrap_or_else(|| decode_text(name, bytes))
}

/// A value sent as text (or a text-like binary value).
fn decode_text(name: &str, bytes: &[u8]) -> Value {
    let text = std::str::from_utf8(bytes);
    match (name, text) {
        (
            "BINARY" | "VARBINARY" | "TINYBLOB" | "BLOB" | "MEDIUMBLOB" | "LONGBLOB" | "GEOMETRY",
            _,
        )
        | (_, Err(_)) => Value::from(BASE64.encode(bytes)),
        ("DECIMAL", Ok(t)) => decimal(t),
        ("DATE" | "DATETIME" | "TIMESTAMP", Ok(t)) => parse_timestamp(t).map_or_else(
            || Value::from(t),
            |(micros, _)| Value::from(timestamp_micros(micros)),
        ),
        ("JSON", Ok(t)) => serde_json::from_str(t).unwrap_or_else(|_| Value::from(t)),
        (
            "BOOLEAN" | "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" | "YEAR" | "FLOAT"
            | "DOUBLE",
            Ok(t),
        ) => serde_json::from_str::<serde_json::Number>(t)
            .map_or_else(|_| Value::from(t), Value::Number),
        (n, Ok(t)) if n.ends_with(" UNSIGNED") => t
            .parse::<u64>()
            .map_or_else(|_| Value::from(t), Value::from),
        (_, Ok(t)) => Value::from(t),
    }
}

fn signed(b: &[u8]) -> Option<i64> {
    Some(match b.len() {
        1 => i64::from(i8::from_le_bytes(b.try_into().ok()?)),
        2 => i64::from(i16::from_le_bytes(b.try_into().ok()?)),
        4 => i64::from(i32::from_le_bytes(b.try_into().ok()?)),
        8 => i64::from_le_bytes(b.try_into().ok()?),
        _ => return None,
    })
}

fn unsigned(b: &[u8]) -> Option<u64> {
    (!b.is_empty() && b.len() <= 8).then(|| {
        b.iter()
            .rev()
            .fold(0_u64, |acc, byte| (acc << 8) | u64::from(*byte))
    })
}

fn unsigned_be(b: &[u8]) -> Option<u64> {
    (!b.is_empty() && b.len() <= 8).then(|| {
        b.iter()
            .fold(0_u64, |acc, byte| (acc << 8) | u64::from(*byte))
    })
}

fn float(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or_else(|| Value::from(f.to_string()), Value::Number)
}

/// A binary `DATE`/`DATETIME`/`TIMESTAMP` (length byte first) as RFC 3339 in UTC; the zero
/// date as Go's zero time.
fn datetime(b: &[u8]) -> Option<String> {
    let len = *b.first()?;
    if len == 0 {
        return Some("0001-01-01T00:00:00Z".into());
    }
    let year = i64::from(u16::from_le_bytes(b.get(1..3)?.try_into().ok()?));
    let (month, day) = (u32::from(*b.get(3)?), u32::from(*b.get(4)?));
    if month == 0 || day == 0 {
        return Some("0001-01-01T00:00:00Z".into());
    }
    let mut micros = days_from_civil(year, month, day) * 86_400_000_000;
    if len >= 7 {
        let (h, m, s) = (
            i64::from(*b.get(5)?),
            i64::from(*b.get(6)?),
            i64::from(*b.get(7)?),
        );
        micros += ((h * 60 + m) * 60 + s) * 1_000_000;
    }
    if len >= 11 {
        micros += i64::from(u32::from_le_bytes(b.get(8..12)?.try_into().ok()?));
    }
    if len == 4 {
        return Some(format!("{}T00:00:00Z", date(year, month, day)));
    }
    Some(timestamp_micros(micros))
}

/// A binary `TIME` (length byte first): `[-]HH:MM:SS[.ffffff]`, hours including the days.
fn time(b: &[u8]) -> Option<String> {
    let len = *b.first()?;
    if len == 0 {
        return Some("00:00:00".into());
    }
    let negative = *b.get(1)? == 1;
    let days = u64::from(u32::from_le_bytes(b.get(2..6)?.try_into().ok()?));
    let hours = days * 24 + u64::from(*b.get(6)?);
    let (m, s) = (*b.get(7)?, *b.get(8)?);
    let micros = if len >= 12 {
        u32::from_le_bytes(b.get(9..13)?.try_into().ok()?)
    } else {
        0
    };
    let sign = if negative { "-" } else { "" };
    let frac = if micros == 0 {
        String::new()
    } else {
        format!(".{micros:06}").trim_end_matches('0').to_owned()
    };
    Some(format!("{sign}{hours:02}:{m:02}:{s:02}{frac}"))
}
