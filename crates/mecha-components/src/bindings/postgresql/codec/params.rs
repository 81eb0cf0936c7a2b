//! JSON arguments encoded for the types of their placeholders.

use serde_json::Value;
use sqlx::Postgres;
use sqlx::TypeInfo;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgTypeKind};

use super::*;
use crate::bindings::sql::time::parse_timestamp;

/// One argument, encoded for the type of its placeholder.
pub(crate) struct Param {
    ty: PgTypeInfo,
    bytes: Option<Vec<u8>>,
}

// === impl Param ===

impl Param {
    /// Encodes `value` for placeholder `$n` of type `ty`.
    pub(crate) fn new(n: usize, ty: &PgTypeInfo, value: &Value) -> Result<Self, String> {
        let bytes = match value {
            Value::Null => None,
            v => Some(encode(ty, v).map_err(|why| {
                format!(
                    "params[{}] for ${n} ({}): {why}; cast the placeholder in the SQL \
                     (${n}::text::{}) to send it as text",
                    n - 1,
                    ty.name(),
                    ty.name()
                )
            })?),
        };
        Ok(Self {
            ty: ty.clone(),
            bytes,
        })
    }
}

impl sqlx::Type<Postgres> for Param {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_name("text")
    }

    fn compatible(_: &PgTypeInfo) -> bool {
        true
    }
}

impl sqlx::Encode<'_, Postgres> for Param {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        match &self.bytes {
            None => Ok(IsNull::Yes),
            Some(bytes) => {
                buf.extend_from_slice(bytes);
                Ok(IsNull::No)
            }
        }
    }

    fn produces(&self) -> Option<PgTypeInfo> {
        Some(self.ty.clone())
    }
}

/// The binary encoding of `v` for `ty`.
fn encode(ty: &PgTypeInfo, v: &Value) -> Result<Vec<u8>, String> {
    match ty.kind() {
        PgTypeKind::Domain(base) => return encode(base, v),
        PgTypeKind::Enum(_) => return Ok(text(v).into_bytes()),
        PgTypeKind::Array(elem) => return encode_array(elem, v),
        _ => {}
    }
    let oid = ty.oid().map_or(0, |o| o.0);
    Ok(match oid {
        BOOL => vec![u8::from(boolean(v)?)],
        INT2 => i16::try_from(integer(v)?)
            .map_err(|_| "out of range".to_owned())?
            .to_be_bytes()
            .to_vec(),
        INT4 => i32::try_from(integer(v)?)
            .map_err(|_| "out of range".to_owned())?
            .to_be_bytes()
            .to_vec(),
        OID => u32::try_from(integer(v)?)
            .map_err(|_| "out of range".to_owned())?
            .to_be_bytes()
            .to_vec(),
        INT8 => integer(v)?.to_be_bytes().to_vec(),
        #[allow(clippy::cast_possible_truncation)] // float4 is an f32 on the server too.
        FLOAT4 => (float(v)? as f32).to_be_bytes().to_vec(),
        FLOAT8 => float(v)?.to_be_bytes().to_vec(),
        NUMERIC => encode_numeric(&decimal_text(v)?)?,
        TEXT | VARCHAR | BPCHAR | NAME | CHAR | UNKNOWN | XML | BYTEA => text(v).into_bytes(),
        JSON => json_text(v).into_bytes(),
        JSONB => {
            let mut out = vec![1];
            out.extend_from_slice(json_text(v).as_bytes());
            out
        }
        UUID => uuid(v)?.to_vec(),
        TIMESTAMP | TIMESTAMPTZ => {
            let (local, offset) = timestamp(v)?;
            let utc = match (oid, offset) {
                (TIMESTAMPTZ, Some(off)) => local - off * 1_000_000,
                _ => local,
            };
            (utc - PG_EPOCH_MICROS).to_be_bytes().to_vec()
        }
        DATE => {
            let (micros, _) = timestamp(v)?;
            let days = micros.div_euclid(86_400_000_000) - PG_EPOCH_DAYS;
            i32::try_from(days)
                .map_err(|_| "out of range".to_owned())?
                .to_be_bytes()
                .to_vec()
        }
        _ if ty.name().eq_ignore_ascii_case("citext") => text(v).into_bytes(),
        _ => return Err("this type cannot be sent from JSON".into()),
    })
}

/// A one-dimensional array of `elem` from a JSON array.
fn encode_array(elem: &PgTypeInfo, v: &Value) -> Result<Vec<u8>, String> {
    let Value::Array(items) = v else {
        return Err("expected a JSON array".into());
    };
    let elem_oid = elem.oid().map_or(0, |o| o.0);
    let len = i32::try_from(items.len()).map_err(|_| "too many elements".to_owned())?;
    let mut out = Vec::new();
    out.extend_from_slice(&1_i32.to_be_bytes());
    out.extend_from_slice(&i32::from(items.iter().any(Value::is_null)).to_be_bytes());
    out.extend_from_slice(&elem_oid.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&1_i32.to_be_bytes());
    for item in items {
        if item.is_null() {
            out.extend_from_slice(&(-1_i32).to_be_bytes());
            continue;
        }
        let bytes = encode(elem, item)?;
        let n = i32::try_from(bytes.len()).map_err(|_| "element too large".to_owned())?;
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(&bytes);
    }
    Ok(out)
}

fn boolean(v: &Value) -> Result<bool, String> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::Number(n) if n.as_i64() == Some(0) => Ok(false),
        Value::Number(n) if n.as_i64() == Some(1) => Ok(true),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "t" | "true" | "1" | "yes" | "on" => Ok(true),
            "f" | "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(format!("'{s}' is not a boolean")),
        },
        _ => Err("expected a boolean".into()),
    }
}

fn integer(v: &Value) -> Result<i64, String> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18)
                    .map(|f| f as i64)
            })
            .ok_or_else(|| format!("{n} is not an integer in range")),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| format!("'{s}' is not an integer")),
        Value::Bool(b) => Ok(i64::from(*b)),
        _ => Err("expected an integer".into()),
    }
}

fn float(v: &Value) -> Result<f64, String> {
    match v {
        Value::Number(n) => n.as_f64().ok_or_else(|| format!("{n} is not a number")),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| format!("'{s}' is not a number")),
        _ => Err("expected a number".into()),
    }
}

/// A number as decimal text, without an exponent.
fn decimal_text(v: &Value) -> Result<String, String> {
    match v {
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        Value::Number(n) => Ok(n.as_f64().map_or_else(|| n.to_string(), |f| f.to_string())),
        Value::String(s) => Ok(s.trim().to_owned()),
        _ => Err("expected a number".into()),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A string that holds JSON is that JSON (as pgx sends it); any other value is encoded.
fn json_text(v: &Value) -> String {
    match v {
        Value::String(s) if serde_json::from_str::<Value>(s).is_ok() => s.clone(),
        other => other.to_string(),
    }
}

fn uuid(v: &Value) -> Result<[u8; 16], String> {
    let Value::String(s) = v else {
        return Err("expected a UUID string".into());
    };
    uuid::Uuid::parse_str(s.trim())
        .map(|u| *u.as_bytes())
        .map_err(|e| format!("'{s}': {e}"))
}

fn timestamp(v: &Value) -> Result<(i64, Option<i64>), String> {
    match v {
        Value::String(s) => {
            parse_timestamp(s).ok_or_else(|| format!("'{s}' is not an RFC 3339 date or time"))
        }
        _ => Err("expected an RFC 3339 string".into()),
    }
}

/// PostgreSQL's binary `numeric`: base-10000 digits around the decimal point.
pub(super) fn encode_numeric(text: &str) -> Result<Vec<u8>, String> {
    let special = match text {
        "NaN" => Some(0xC000_u16),
        "Infinity" | "+Infinity" => Some(0xD000),
        "-Infinity" => Some(0xF000),
        _ => None,
    };
    if let Some(sign) = special {
        return Ok([0_u16, 0, sign, 0]
            .iter()
            .flat_map(|n| n.to_be_bytes())
            .collect());
    }
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let valid = !(int.is_empty() && frac.is_empty())
        && int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit());
    if !valid {
        return Err(format!("'{text}' is not a decimal number"));
    }
    let int = int.trim_start_matches('0');
    let dscale = u16::try_from(frac.len()).map_err(|_| "too many digits".to_owned())?;
    // Pad the integer part on the left and the fraction on the right to whole groups of 4.
    let int_pad = (4 - int.len() % 4) % 4;
    let frac_pad = (4 - frac.len() % 4) % 4;
    let all: String = "0".repeat(int_pad) + int + frac + &"0".repeat(frac_pad);
    let mut groups: Vec<i16> = all
        .as_bytes()
        .chunks(4)
        .map(|c| {
            c.iter()
                .fold(0_i16, |acc, d| acc * 10 + i16::from(d - b'0'))
        })
        .collect();
    let int_groups = (int_pad + int.len()) / 4;
    let mut weight = i16::try_from(int_groups).map_err(|_| "too many digits".to_owned())? - 1;
    // Leading zero groups lower the weight; trailing ones are implied by dscale.
    while groups.first() == Some(&0) {
        groups.remove(0);
        weight -= 1;
    }
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    let ndigits = i16::try_from(groups.len()).map_err(|_| "too many digits".to_owned())?;
    let sign: u16 = if negative && !groups.is_empty() {
        0x4000
    } else {
        0
    };
    let mut out = Vec::with_capacity(8 + groups.len() * 2);
    out.extend_from_slice(&ndigits.to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&dscale.to_be_bytes());
    for g in groups {
        out.extend_from_slice(&g.to_be_bytes());
    }
    Ok(out)
}
