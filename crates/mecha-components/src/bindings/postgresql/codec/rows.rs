//! Row values decoded to JSON.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value;
use sqlx::ValueRef;
use sqlx::postgres::{PgTypeInfo, PgTypeKind, PgValueFormat, PgValueRef};

use super::*;
use crate::bindings::sql::request::decimal;
use crate::bindings::sql::time::{civil_from_days, date, time_of_day, timestamp_micros};

/// One column value of a row as JSON.
pub(crate) fn decode(value: PgValueRef<'_>) -> Value {
    if value.is_null() {
        return Value::Null;
    }
    let ty = value.type_info().into_owned();
    let format = value.format();
    match value.as_bytes() {
        Ok(bytes) if format == PgValueFormat::Binary => decode_typed(&ty, bytes),
        Ok(bytes) => fallback(bytes),
        Err(_) => Value::Null,
    }
}

fn decode_typed(ty: &PgTypeInfo, bytes: &[u8]) -> Value {
    match ty.kind() {
        PgTypeKind::Domain(base) => return decode_typed(base, bytes),
        PgTypeKind::Array(_) => return decode_array(bytes).unwrap_or_else(|| fallback(bytes)),
        _ => {}
    }
    decode_oid(ty.oid().map_or(0, |o| o.0), bytes)
}

/// A value of the built-in type `oid` as JSON.
fn decode_oid(oid: u32, b: &[u8]) -> Value {
    let decoded = match oid {
        BOOL => b.first().map(|v| Value::Bool(*v != 0)),
        INT2 => be::<2>(b).map(|a| Value::from(i16::from_be_bytes(a))),
        INT4 => be::<4>(b).map(|a| Value::from(i32::from_be_bytes(a))),
        INT8 => be::<8>(b).map(|a| Value::from(i64::from_be_bytes(a))),
        OID => be::<4>(b).map(|a| Value::from(u32::from_be_bytes(a))),
        FLOAT4 => be::<4>(b).map(|a| float_value(f64::from(f32::from_be_bytes(a)))),
        FLOAT8 => be::<8>(b).map(|a| float_value(f64::from_be_bytes(a))),
        NUMERIC => numeric_text(b).map(|t| decimal(&t)),
        JSON => serde_json::from_slice(b).ok(),
        JSONB => b.get(1..).and_then(|j| serde_json::from_slice(j).ok()),
        BYTEA => Some(Value::from(BASE64.encode(b))),
        UUID => uuid::Uuid::from_slice(b)
            .ok()
            .map(|u| Value::from(u.to_string())),
        TIMESTAMP | TIMESTAMPTZ => be::<8>(b).map(|a| match i64::from_be_bytes(a) {
            i64::MAX => Value::from("infinity"),
            i64::MIN => Value::from("-infinity"),
            t => Value::from(timestamp_micros(t.saturating_add(PG_EPOCH_MICROS))),
        }),
        DATE => be::<4>(b).map(|a| match i32::from_be_bytes(a) {
            i32::MAX => Value::from("infinity"),
            i32::MIN => Value::from("-infinity"),
            d => {
                let (y, m, day) = civil_from_days(i64::from(d) + PG_EPOCH_DAYS);
                Value::from(format!("{}T00:00:00Z", date(y, m, day)))
            }
        }),
        TIME => be::<8>(b).map(|a| Value::from(time_of_day(i64::from_be_bytes(a)))),
        _ => None,
    };
    decoded.unwrap_or_else(|| fallback(b))
}

/// A binary array (any number of dimensions) as nested JSON arrays.
fn decode_array(b: &[u8]) -> Option<Value> {
    let int = |at: usize| -> Option<i32> {
        b.get(at..at + 4)
            .and_then(|s| s.try_into().ok())
            .map(i32::from_be_bytes)
    };
    let ndim = usize::try_from(int(0)?).ok()?;
    let elem = u32::from_be_bytes(b.get(8..12)?.try_into().ok()?);
    let mut dims = Vec::with_capacity(ndim);
    for d in 0..ndim {
        dims.push(usize::try_from(int(12 + d * 8)?).ok()?);
    }
    let mut at = 12 + ndim * 8;
    let total: usize = if ndim == 0 { 0 } else { dims.iter().product() };
    let mut items = Vec::with_capacity(total);
    for _ in 0..total {
        let len = int(at)?;
        at += 4;
        if len < 0 {
            items.push(Value::Null);
            continue;
        }
        let len = usize::try_from(len).ok()?;
        items.push(decode_oid(elem, b.get(at..at + len)?));
        at += len;
    }
    Some(nest(&dims, &mut items.into_iter()))
}

fn nest(dims: &[usize], items: &mut impl Iterator<Item = Value>) -> Value {
    match dims.split_first() {
        None => Value::Array(Vec::new()),
        Some((n, [])) => Value::Array(items.take(*n).collect()),
        Some((n, rest)) => Value::Array((0..*n).map(|_| nest(rest, items)).collect()),
    }
}

/// Text when the bytes are UTF-8 (enums, `citext`, text-like extension types), else base64.
fn fallback(b: &[u8]) -> Value {
    match std::str::from_utf8(b) {
        Ok(s) if !s.contains('\0') => Value::from(s),
        _ => Value::from(BASE64.encode(b)),
    }
}

fn float_value(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or_else(|| Value::from(f.to_string()), Value::Number)
}

fn be<const N: usize>(b: &[u8]) -> Option<[u8; N]> {
    b.try_into().ok()
}

/// The text of a binary `numeric`.
fn numeric_text(b: &[u8]) -> Option<String> {
    let word = |at: usize| -> Option<u16> {
        b.get(at..at + 2)
            .and_then(|s| s.try_into().ok())
            .map(u16::from_be_bytes)
    };
    let ndigits = usize::from(word(0)?);
    let weight = i64::from(word(2)?.cast_signed());
    let sign = word(4)?;
    let dscale = usize::from(word(6)?);
    match sign {
        0xC000 => return Some("NaN".into()),
        0xD000 => return Some("Infinity".into()),
        0xF000 => return Some("-Infinity".into()),
        _ => {}
    }
    let mut digits = Vec::with_capacity(ndigits);
    for i in 0..ndigits {
        digits.push(word(8 + 2 * i)?);
    }
    let digit = |i: i64| {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i))
            .copied()
            .unwrap_or(0)
    };
    let mut s = String::new();
    if sign == 0x4000 {
        s.push('-');
    }
    if weight < 0 {
        s.push('0');
    } else {
        for i in 0..=weight {
            let _ = if i == 0 {
                write!(s, "{}", digit(i))
            } else {
                write!(s, "{:04}", digit(i))
            };
        }
    }
    if dscale > 0 {
        let mut frac = String::new();
        let mut i = weight + 1;
        while frac.len() < dscale {
            let _ = write!(frac, "{:04}", digit(i));
            i += 1;
        }
        frac.truncate(dscale);
        s.push('.');
        s.push_str(&frac);
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numerics_round_trip() {
        for text in [
            "0",
            "1",
            "-1.5",
            "100.32",
            "0.0001",
            "12345678.9",
            "10000",
            "-0.00500",
        ] {
            let bytes = super::super::params::encode_numeric(text).unwrap();
            let back = numeric_text(&bytes).unwrap();
            assert_eq!(back, text.trim_start_matches('+'), "{text}");
        }
    }
}
