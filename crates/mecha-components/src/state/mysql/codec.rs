//! How values are stored in the `value JSON` column, as Dapr stores them: JSON verbatim with
//! `isbinary = false`, any other bytes as a base64 JSON string with `isbinary = true`.

use base64::Engine as _;
use bytes::Bytes;

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
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Decodes standard base64; padding is optional.
pub(super) fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    const LENIENT: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    LENIENT
        .decode(text)
        .map_err(|_| format!("invalid base64 in a binary value: '{text}'"))
}
