//! How values are stored in the `value JSON` column, as Dapr stores them: JSON verbatim with
//! `isbinary = false`, any other bytes as a base64 JSON string with `isbinary = true`.

use bytes::Bytes;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// A value ready for the `value` and `isbinary` columns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Encoded {
    /// The JSON text for the `value` column.
    pub(super) text: String,
    /// The `isbinary` column: `text` is a base64 JSON string of the bytes.
    pub(super) binary: bool,
}

// === impl Encoded ===

impl Encoded {
    /// Encodes `value`: verbatim when it is JSON and `json_verbatim` holds (the server keeps
    /// JSON text as it was sent), else as base64.
    pub(super) fn new(value: &[u8], json_verbatim: bool) -> Self {
        match std::str::from_utf8(value) {
            Ok(text) if json_verbatim && is_json(value) => Self {
                text: text.to_owned(),
                binary: false,
            },
            _ => Self::binary(value),
        }
    }

    /// `value` as a base64 JSON string.
    pub(super) fn binary(value: &[u8]) -> Self {
        // Base64 needs no JSON escaping.
        Self {
            text: format!("\"{}\"", base64_encode(value)),
            binary: true,
        }
    }
}

/// The stored bytes of a row, from its `value` and `isbinary` columns.
pub(super) fn decode(value: Vec<u8>, binary: bool) -> Result<Bytes, String> {
    if !binary {
        return Ok(Bytes::from(value));
    }
    let text: String = serde_json::from_slice(&value)
        .map_err(|e| format!("a binary value is not a JSON string: {e}"))?;
    base64_decode(&text).map(Bytes::from)
}

fn is_json(value: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(value).is_ok()
}

/// Standard base64 with padding, as Go's `base64.StdEncoding`.
pub(super) fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64; padding is optional.
pub(super) fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    let invalid = || format!("invalid base64 in a binary value: '{text}'");
    let digits = text.trim_end_matches('=').as_bytes();
    let padding = text.len() - digits.len();
    if padding > 2 || digits.len() % 4 == 1 || (padding > 0 && !text.len().is_multiple_of(4)) {
        return Err(invalid());
    }
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= u32::from(sextet(*c).ok_or_else(invalid)?) << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..chunk.len() - 1]);
    }
    Ok(out)
}

/// The value of one base64 digit.
fn sextet(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}
