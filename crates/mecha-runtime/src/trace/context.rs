//! W3C trace context (`traceparent`, `tracestate`) and the OpenCensus binary `grpc-trace-bin`
//! form of a span context.

use std::cell::Cell;
use std::fmt::Write as _;

use base64::Engine as _;
use http::{HeaderMap, HeaderValue};

/// The W3C `traceparent` header.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C `tracestate` header.
pub const TRACESTATE: &str = "tracestate";
/// The gRPC binary trace header (OpenCensus format, base64 on the wire).
pub const GRPC_TRACE_BIN: &str = "grpc-trace-bin";

/// Length of a version-00 `traceparent` value.
const TRACEPARENT_LEN: usize = 55;
/// Length of the `grpc-trace-bin` encoding written by [`SpanContext::to_grpc_trace_bin`].
pub const GRPC_TRACE_BIN_LEN: usize = 29;
/// W3C: at most 32 list members in `tracestate`.
const TRACESTATE_MAX_MEMBERS: usize = 32;
/// W3C: propagate at least 512 characters; longer values are dropped rather than cut.
const TRACESTATE_MAX_LEN: usize = 512;

/// The identity of one span as it travels between processes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SpanContext {
    /// The trace id; never all zero.
    pub trace_id: [u8; 16],
    /// The span id; never all zero.
    pub span_id: [u8; 8],
    /// Trace flags; bit 0 ([`SpanContext::FLAG_SAMPLED`]) is the sampled flag.
    pub flags: u8,
    /// The opaque vendor list of `tracestate`, passed on unchanged.
    pub tracestate: Option<String>,
}

impl SpanContext {
    /// The `sampled` trace flag.
    pub const FLAG_SAMPLED: u8 = 0x01;

    /// Reads a span context from request headers or gRPC metadata: a valid `traceparent`
    /// (with its `tracestate`) first, else a valid `grpc-trace-bin` (base64, padded or not;
    /// `tracestate` is taken from the headers as well). Invalid values count as absent.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let mut ctx = headers
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(Self::from_traceparent)
            .or_else(|| {
                let raw = headers.get(GRPC_TRACE_BIN)?.as_bytes();
                let trimmed = raw
                    .iter()
                    .rposition(|b| *b != b'=' && !b.is_ascii_whitespace())
                    .map_or(&raw[..0], |end| &raw[..=end]);
                let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
                    .decode(trimmed)
                    .ok()?;
                Self::from_grpc_trace_bin(&bytes)
            })?;
        ctx.tracestate = tracestate_from_headers(headers);
        Some(ctx)
    }

    /// Parses a `traceparent` value. Version `00` must be exactly
    /// `00-<32 hex>-<16 hex>-<2 hex>`; a later version (not `ff`) may carry more fields after
    /// a `-`, which are ignored, as W3C requires. Hex must be lowercase, ids not all zero.
    pub fn from_traceparent(value: &str) -> Option<Self> {
        let value = value.trim_matches([' ', '\t']).as_bytes();
        if value.len() < TRACEPARENT_LEN {
            return None;
        }
        let version = hex_byte(&value[0..2])?;
        if version == 0xff
            || (version == 0 && value.len() != TRACEPARENT_LEN)
            || (value.len() > TRACEPARENT_LEN && value[TRACEPARENT_LEN] != b'-')
        {
            return None;
        }
        if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        let mut trace_id = [0u8; 16];
        for (i, byte) in trace_id.iter_mut().enumerate() {
            *byte = hex_byte(&value[3 + 2 * i..5 + 2 * i])?;
        }
        let mut span_id = [0u8; 8];
        for (i, byte) in span_id.iter_mut().enumerate() {
            *byte = hex_byte(&value[36 + 2 * i..38 + 2 * i])?;
        }
        let flags = hex_byte(&value[53..55])?;
        Self::checked(trace_id, span_id, flags)
    }

    /// Parses the OpenCensus binary format: version byte `0`, then field `0` with the 16-byte
    /// trace id, optionally field `1` with the 8-byte span id and field `2` with the 1-byte
    /// trace options. A missing span id makes the context invalid (it cannot be a parent).
    pub fn from_grpc_trace_bin(bytes: &[u8]) -> Option<Self> {
        let (&version, mut rest) = bytes.split_first()?;
        if version != 0 {
            return None;
        }
        let mut trace_id = [0u8; 16];
        match rest {
            [0, id @ ..] if id.len() >= 16 => {
                trace_id.copy_from_slice(&id[..16]);
                rest = &id[16..];
            }
            _ => return None,
        }
        let mut span_id = [0u8; 8];
        if let [1, id @ ..] = rest
            && id.len() >= 8
        {
            span_id.copy_from_slice(&id[..8]);
            rest = &id[8..];
        }
        let flags = match rest {
            [2, options, ..] => *options,
            _ => 0,
        };
        Self::checked(trace_id, span_id, flags)
    }

    /// A new trace: random trace and span ids, sampled as asked, no `tracestate`.
    pub fn new_root(sampled: bool) -> Self {
        Self {
            trace_id: random_trace_id(),
            span_id: random_span_id(),
            flags: if sampled { Self::FLAG_SAMPLED } else { 0 },
            tracestate: None,
        }
    }

    /// A child of this span: same trace, flags and `tracestate`, a new random span id.
    pub fn child(&self) -> Self {
        Self {
            trace_id: self.trace_id,
            span_id: random_span_id(),
            flags: self.flags,
            tracestate: self.tracestate.clone(),
        }
    }

    /// Whether the sampled flag is set.
    pub fn is_sampled(&self) -> bool {
        self.flags & Self::FLAG_SAMPLED != 0
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// The span id as 16 lowercase hex digits.
    pub fn span_id_hex(&self) -> String {
        hex(&self.span_id)
    }

    /// The version-00 `traceparent` value, e.g.
    /// `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`.
    pub fn traceparent(&self) -> String {
        let mut s = String::with_capacity(TRACEPARENT_LEN);
        s.push_str("00-");
        push_hex(&mut s, &self.trace_id);
        s.push('-');
        push_hex(&mut s, &self.span_id);
        let _ = write!(s, "-{:02x}", self.flags);
        s
    }

    /// The 29-byte OpenCensus binary encoding (version 0, trace id, span id, options).
    pub fn to_grpc_trace_bin(&self) -> [u8; GRPC_TRACE_BIN_LEN] {
        let mut out = [0u8; GRPC_TRACE_BIN_LEN];
        out[0] = 0;
        out[1] = 0;
        out[2..18].copy_from_slice(&self.trace_id);
        out[18] = 1;
        out[19..27].copy_from_slice(&self.span_id);
        out[27] = 2;
        out[28] = self.flags;
        out
    }

    /// Writes `traceparent` and (when present) `tracestate`, replacing earlier values. Use for
    /// HTTP requests to the app or another sidecar and for HTTP responses.
    pub fn inject_w3c(&self, headers: &mut HeaderMap) {
        if let Ok(v) = HeaderValue::from_str(&self.traceparent()) {
            headers.insert(TRACEPARENT, v);
        }
        match self
            .tracestate
            .as_deref()
            .and_then(|s| HeaderValue::from_str(s).ok())
        {
            Some(v) => {
                headers.insert(TRACESTATE, v);
            }
            None => {
                headers.remove(TRACESTATE);
            }
        }
    }

    /// Writes `traceparent`, `tracestate` and `grpc-trace-bin` (unpadded base64, as gRPC
    /// emits binary metadata). Use for outgoing gRPC calls.
    pub fn inject_grpc(&self, headers: &mut HeaderMap) {
        self.inject_w3c(headers);
        headers.insert(GRPC_TRACE_BIN, self.grpc_trace_bin_header());
    }

    /// The `grpc-trace-bin` header value: the binary encoding in unpadded base64.
    pub fn grpc_trace_bin_header(&self) -> HeaderValue {
        let encoded =
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(self.to_grpc_trace_bin());
        // Base64 output is always a valid header value.
        HeaderValue::from_str(&encoded).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    fn checked(trace_id: [u8; 16], span_id: [u8; 8], flags: u8) -> Option<Self> {
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            flags,
            tracestate: None,
        })
    }
}

/// All `tracestate` headers joined with `,`, if the result is a valid W3C list; an invalid or
/// over-long list is dropped as a whole.
fn tracestate_from_headers(headers: &HeaderMap) -> Option<String> {
    let mut joined = String::new();
    for value in headers.get_all(TRACESTATE) {
        let v = value.to_str().ok()?.trim_matches([' ', '\t']);
        if v.is_empty() {
            continue;
        }
        if !joined.is_empty() {
            joined.push(',');
        }
        joined.push_str(v);
    }
    if joined.is_empty() || joined.len() > TRACESTATE_MAX_LEN {
        return None;
    }
    let mut members = 0;
    for member in joined.split(',') {
        let member = member.trim_matches([' ', '\t']);
        if member.is_empty() {
            continue;
        }
        members += 1;
        let (key, value) = member.split_once('=')?;
        if members > TRACESTATE_MAX_MEMBERS || !valid_tracestate_key(key) {
            return None;
        }
        if !valid_tracestate_value(value) {
            return None;
        }
    }
    (members > 0).then_some(joined)
}

fn valid_tracestate_key(key: &str) -> bool {
    let simple = |s: &str, max: usize| {
        !s.is_empty()
            && s.len() <= max
            && s.bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && s.bytes().all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b'_' | b'-' | b'*' | b'/')
            })
    };
    match key.split_once('@') {
        Some((tenant, system)) => simple(tenant, 241) && simple(system, 14),
        None => simple(key, 256),
    }
}

fn valid_tracestate_value(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 256
        && !value.ends_with(' ')
        && value
            .bytes()
            .all(|b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=')
}

/// One lowercase hex byte; uppercase is invalid in `traceparent`.
fn hex_byte(pair: &[u8]) -> Option<u8> {
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    match pair {
        [hi, lo] => Some(nibble(*hi)? << 4 | nibble(*lo)?),
        _ => None,
    }
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    push_hex(&mut s, bytes);
    s
}

fn push_hex(s: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
}

thread_local! {
    /// Per-thread SplitMix64 state, seeded once from the operating system's random source.
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let mut seed = [0u8; 8];
    seed.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(seed) ^ u64::from_le_bytes(bytes[8..16].try_into().unwrap_or([0x5a; 8]))
}

/// A fast non-cryptographic random `u64` (ids need uniqueness, not secrecy).
pub(crate) fn random_u64() -> u64 {
    RNG.with(|state| {
        let next = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        state.set(next);
        let mut z = next;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

pub(crate) fn random_span_id() -> [u8; 8] {
    loop {
        let id = random_u64();
        if id != 0 {
            return id.to_be_bytes();
        }
    }
}

fn random_trace_id() -> [u8; 16] {
    loop {
        let (hi, lo) = (random_u64(), random_u64());
        if hi != 0 || lo != 0 {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&hi.to_be_bytes());
            id[8..].copy_from_slice(&lo.to_be_bytes());
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn traceparent_round_trips() {
        let ctx = SpanContext::from_traceparent(TP).unwrap();
        assert_eq!(ctx.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ctx.span_id_hex(), "00f067aa0ba902b7");
        assert_eq!(ctx.flags, 1);
        assert!(ctx.is_sampled());
        assert_eq!(ctx.traceparent(), TP);
        let unsampled = SpanContext::from_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        )
        .unwrap();
        assert!(!unsampled.is_sampled());
    }

    #[test]
    fn traceparent_invalid_values_are_absent() {
        let bad = [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ];
        for v in bad {
            assert_eq!(SpanContext::from_traceparent(v), None, "{v:?}");
        }
    }

    #[test]
    fn traceparent_future_version_keeps_known_fields() {
        let ctx = SpanContext::from_traceparent(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future",
        )
        .unwrap();
        assert_eq!(ctx.traceparent(), TP);
    }

    #[test]
    fn trace_headers_with_tracestate() {
        let h = headers(&[
            (TRACEPARENT, TP),
            (TRACESTATE, "congo=t61rcWkgMzE"),
            (TRACESTATE, "rojo=00f067aa0ba902b7"),
        ]);
        let ctx = SpanContext::from_headers(&h).unwrap();
        assert_eq!(
            ctx.tracestate.as_deref(),
            Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
        );
        let mut out = HeaderMap::new();
        ctx.inject_w3c(&mut out);
        assert_eq!(out[TRACEPARENT], TP);
        assert_eq!(out[TRACESTATE], "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");
    }

    #[test]
    fn trace_headers_invalid_tracestate_is_dropped() {
        for bad in ["no-equals", "UPPER=1", "a=b=c", "a=,b=1"] {
            let h = headers(&[(TRACEPARENT, TP), (TRACESTATE, bad)]);
            assert_eq!(
                SpanContext::from_headers(&h).unwrap().tracestate,
                None,
                "{bad}"
            );
        }
        let many = (0..33)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",");
        let h = headers(&[(TRACEPARENT, TP), (TRACESTATE, &many)]);
        assert_eq!(SpanContext::from_headers(&h).unwrap().tracestate, None);
        let tenant = headers(&[(TRACEPARENT, TP), (TRACESTATE, "t@sys=1")]);
        assert_eq!(
            SpanContext::from_headers(&tenant)
                .unwrap()
                .tracestate
                .as_deref(),
            Some("t@sys=1")
        );
    }

    #[test]
    fn trace_headers_invalid_traceparent_is_absent() {
        let h = headers(&[(TRACEPARENT, "garbage"), (TRACESTATE, "a=1")]);
        assert_eq!(SpanContext::from_headers(&h), None);
        assert_eq!(SpanContext::from_headers(&HeaderMap::new()), None);
    }

    #[test]
    fn grpc_trace_bin_round_trip() {
        let ctx = SpanContext::from_traceparent(TP).unwrap();
        let bin = ctx.to_grpc_trace_bin();
        assert_eq!(bin.len(), GRPC_TRACE_BIN_LEN);
        assert_eq!(&bin[..2], &[0, 0]);
        assert_eq!(SpanContext::from_grpc_trace_bin(&bin), Some(ctx.clone()));

        // Through headers, unpadded (as written) and padded base64.
        let mut h = HeaderMap::new();
        ctx.inject_grpc(&mut h);
        h.remove(TRACEPARENT);
        assert_eq!(SpanContext::from_headers(&h), Some(ctx.clone()));
        let padded = base64::engine::general_purpose::STANDARD.encode(bin);
        assert!(padded.ends_with('='));
        let h = headers(&[(GRPC_TRACE_BIN, &padded)]);
        assert_eq!(SpanContext::from_headers(&h), Some(ctx.clone()));
    }

    #[test]
    fn grpc_trace_bin_invalid_and_precedence() {
        let ctx = SpanContext::new_root(true);
        let bin = ctx.to_grpc_trace_bin();
        let mut wrong_version = bin;
        wrong_version[0] = 1;
        assert_eq!(SpanContext::from_grpc_trace_bin(&wrong_version), None);
        assert_eq!(
            SpanContext::from_grpc_trace_bin(&bin[..17]),
            None,
            "no span id"
        );
        assert_eq!(SpanContext::from_grpc_trace_bin(&[]), None);
        // Without options the context is valid and unsampled.
        let no_options = SpanContext::from_grpc_trace_bin(&bin[..27]).unwrap();
        assert!(!no_options.is_sampled());
        // `traceparent` wins over `grpc-trace-bin`.
        let mut h = HeaderMap::new();
        ctx.inject_grpc(&mut h);
        h.insert(TRACEPARENT, HeaderValue::from_static(TP));
        assert_eq!(SpanContext::from_headers(&h).unwrap().traceparent(), TP);
        let h = headers(&[(GRPC_TRACE_BIN, "!!not base64!!")]);
        assert_eq!(SpanContext::from_headers(&h), None);
    }

    #[test]
    fn child_keeps_trace_id() {
        let mut parent = SpanContext::new_root(true);
        parent.tracestate = Some("a=1".into());
        let child = parent.child();
        assert_eq!(child.trace_id, parent.trace_id);
        assert_ne!(child.span_id, parent.span_id);
        assert_eq!(child.flags, parent.flags);
        assert_eq!(child.tracestate.as_deref(), Some("a=1"));
    }

    #[test]
    fn new_root_ids_are_random_and_valid() {
        let a = SpanContext::new_root(false);
        let b = SpanContext::new_root(true);
        assert_ne!(a.trace_id, b.trace_id);
        assert_ne!(a.span_id, b.span_id);
        assert!(!a.is_sampled() && b.is_sampled());
        assert_eq!(SpanContext::from_traceparent(&b.traceparent()), Some(b));
    }
}
