//! The `spec.tracing` section of a Dapr Configuration resource.

use std::time::Duration;

use serde_json::Value;

/// Dapr's sampling rate when `samplingRate` is not set (one trace in ten thousand).
pub const DEFAULT_SAMPLING_RATE: f64 = 0.0001;
/// Dapr's default export timeout (`otel.timeout`).
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Tracing settings of one sidecar.
#[derive(Clone, Debug, PartialEq)]
pub struct TracingConfig {
    /// Probability (0–1) that a new trace is sampled; 0 turns tracing off entirely.
    pub sampling_rate: f64,
    /// Log each sampled span with `tracing::info` (`stdout: true`).
    pub stdout: bool,
    /// Where sampled spans are exported with OTLP/gRPC, if anywhere.
    pub otlp: Option<OtlpConfig>,
    /// `zipkin.endpointAddress`, which is not supported: it is kept only so that the tracer
    /// can warn that nothing is exported there.
    pub zipkin_endpoint: Option<String>,
}

/// An OTLP/gRPC trace exporter target.
#[derive(Clone, Debug, PartialEq)]
pub struct OtlpConfig {
    /// The collector's URI, always `http://host:port[/]`.
    pub endpoint: String,
    /// Extra request metadata (`otel.headers`), e.g. an API key.
    pub headers: Vec<(String, String)>,
    /// Deadline of one export call (`otel.timeout`, milliseconds; default 10 s).
    pub timeout: Duration,
}

/// Why a `tracing` section cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TracingConfigError {
    /// A field has a value this sidecar cannot use.
    #[error("tracing.{field}: {reason}")]
    Invalid {
        /// The field path below `spec.tracing`.
        field: &'static str,
        /// What is wrong and how to fix it.
        reason: String,
    },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> TracingConfigError {
    TracingConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

impl TracingConfig {
    /// Tracing off: no spans, no propagation.
    pub fn disabled() -> Self {
        Self {
            sampling_rate: 0.0,
            stdout: false,
            otlp: None,
            zipkin_endpoint: None,
        }
    }

    /// Whether spans are created at all (sampling rate above 0).
    pub fn is_enabled(&self) -> bool {
        self.sampling_rate > 0.0
    }

    /// Reads `spec.tracing` of a Configuration resource.
    ///
    /// Follows Dapr: an absent or empty `samplingRate` means the default rate
    /// [`DEFAULT_SAMPLING_RATE`] (tracing on, one trace in 10 000 sampled), `"0"` turns tracing
    /// off, and a rate above 1 samples everything. The rate may be a string or a number; a
    /// value that is not a number, or is negative, is an error (Dapr silently falls back to the
    /// default). Pass `None` when the Configuration has no `tracing` section: that is
    /// [`TracingConfig::disabled`] here, whereas Dapr would trace at the default rate without
    /// exporting anything.
    ///
    /// `otel`: `endpointAddress` (`host:port` or `http://host:port`), `protocol` (`grpc`, the
    /// default; `http` is refused), `isSecure` (Dapr's default is `true`; TLS export is not
    /// supported, so anything but `isSecure: false` with an OTLP endpoint is refused — set
    /// `isSecure: false` and use a local plaintext collector), `headers` (`"k=v,k2=v2"` or a
    /// list of `{name, value}`) and `timeout` (milliseconds, or a duration such as `"5s"`).
    /// `zipkin` is accepted but not exported to.
    pub fn from_spec(tracing: Option<&Value>) -> Result<Self, TracingConfigError> {
        let Some(tracing) = tracing.filter(|v| !v.is_null()) else {
            return Ok(Self::disabled());
        };
        let Value::Object(map) = tracing else {
            return Err(invalid("", "must be a mapping"));
        };
        let sampling_rate = parse_rate(map.get("samplingRate"))?;
        let stdout = parse_bool(map.get("stdout"), "stdout")?.unwrap_or(false);
        let otlp = match map.get("otel") {
            None | Some(Value::Null) => None,
            Some(otel) => parse_otel(otel)?,
        };
        let zipkin_endpoint = map
            .get("zipkin")
            .and_then(|z| z.get("endpointAddress"))
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .map(str::to_owned);
        Ok(Self {
            sampling_rate,
            stdout,
            otlp,
            zipkin_endpoint,
        })
    }
}

fn parse_rate(value: Option<&Value>) -> Result<f64, TracingConfigError> {
    let rate = match value {
        None | Some(Value::Null) => return Ok(DEFAULT_SAMPLING_RATE),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(DEFAULT_SAMPLING_RATE),
        Some(Value::String(s)) => s.trim().parse::<f64>().map_err(|_| {
            invalid(
                "samplingRate",
                format!("{s:?} is not a number between \"0\" and \"1\""),
            )
        })?,
        Some(Value::Number(n)) => n
            .as_f64()
            .ok_or_else(|| invalid("samplingRate", "not a number"))?,
        Some(other) => {
            return Err(invalid(
                "samplingRate",
                format!("expected a string such as \"1\", found {other}"),
            ));
        }
    };
    if !rate.is_finite() || rate < 0.0 {
        return Err(invalid(
            "samplingRate",
            format!("{rate} is not between 0 and 1"),
        ));
    }
    Ok(rate.min(1.0))
}

fn parse_bool(
    value: Option<&Value>,
    field: &'static str,
) -> Result<Option<bool>, TracingConfigError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(Some(true)),
            "false" => Ok(Some(false)),
            _ => Err(invalid(field, format!("{s:?} is not true or false"))),
        },
        Some(other) => Err(invalid(field, format!("{other} is not true or false"))),
    }
}

fn parse_otel(otel: &Value) -> Result<Option<OtlpConfig>, TracingConfigError> {
    let Value::Object(map) = otel else {
        return Err(invalid("otel", "must be a mapping"));
    };
    let address = match map.get("endpointAddress") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(None),
        Some(Value::String(s)) => s.trim(),
        Some(other) => {
            return Err(invalid(
                "otel.endpointAddress",
                format!("expected host:port, found {other}"),
            ));
        }
    };
    match map.get("protocol").and_then(Value::as_str).map(str::trim) {
        None | Some("") => {}
        Some(p) if p.eq_ignore_ascii_case("grpc") => {}
        Some(p) if p.eq_ignore_ascii_case("http") => {
            return Err(invalid(
                "otel.protocol",
                "OTLP over HTTP is not supported; use protocol: grpc (port 4317)",
            ));
        }
        Some(p) => {
            return Err(invalid(
                "otel.protocol",
                format!("{p:?} is not supported; use grpc"),
            ));
        }
    }
    let is_secure = parse_bool(map.get("isSecure"), "otel.isSecure")?;
    let (scheme, rest) = match address.split_once("://") {
        Some((scheme, rest)) => (Some(scheme.to_ascii_lowercase()), rest),
        None => (None, address),
    };
    let secure = match (scheme.as_deref(), is_secure) {
        (Some("https"), _) => true,
        (Some("http"), Some(secure)) => secure,
        (Some("http"), None) => false,
        (Some(other), _) => {
            return Err(invalid(
                "otel.endpointAddress",
                format!("unsupported scheme {other:?}; use host:port"),
            ));
        }
        // Dapr treats an unset isSecure as true.
        (None, secure) => secure.unwrap_or(true),
    };
    if secure {
        return Err(invalid(
            "otel.isSecure",
            format!(
                "TLS export to {address} is not supported (Dapr's default is isSecure: true); \
                 set isSecure: false and use a plaintext OTLP/gRPC endpoint"
            ),
        ));
    }
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') || !authority.contains(':') {
        return Err(invalid(
            "otel.endpointAddress",
            format!("{address:?} is not host:port"),
        ));
    }
    let endpoint = format!("http://{authority}");
    if endpoint.parse::<http::Uri>().is_err() {
        return Err(invalid(
            "otel.endpointAddress",
            format!("{address:?} is not host:port"),
        ));
    }
    Ok(Some(OtlpConfig {
        endpoint,
        headers: parse_headers(map.get("headers"))?,
        timeout: parse_timeout(map.get("timeout"))?,
    }))
}

fn parse_headers(value: Option<&Value>) -> Result<Vec<(String, String)>, TracingConfigError> {
    let mut out = Vec::new();
    let mut push = |name: &str, value: &str| -> Result<(), TracingConfigError> {
        let name = name.trim().to_ascii_lowercase();
        if http::HeaderName::from_bytes(name.as_bytes()).is_err()
            || http::HeaderValue::from_str(value.trim()).is_err()
        {
            return Err(invalid(
                "otel.headers",
                format!("{name:?} is not a valid header"),
            ));
        }
        out.push((name, value.trim().to_owned()));
        Ok(())
    };
    match value {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            for pair in s.split(',').filter(|p| !p.trim().is_empty()) {
                let (k, v) = pair.split_once('=').ok_or_else(|| {
                    invalid("otel.headers", format!("{pair:?} is not name=value"))
                })?;
                push(k, v)?;
            }
        }
        Some(Value::Array(items)) => {
            for item in items {
                let name = item.get("name").and_then(Value::as_str);
                let value = item.get("value").and_then(Value::as_str);
                match (name, value) {
                    (Some(n), Some(v)) => push(n, v)?,
                    _ => {
                        return Err(invalid(
                            "otel.headers",
                            "list entries need a name and a plain value",
                        ));
                    }
                }
            }
        }
        Some(Value::Object(map)) => {
            for (k, v) in map {
                let v = v.as_str().ok_or_else(|| {
                    invalid("otel.headers", format!("{k}: value is not a string"))
                })?;
                push(k, v)?;
            }
        }
        Some(other) => {
            return Err(invalid(
                "otel.headers",
                format!("expected \"name=value,...\", found {other}"),
            ));
        }
    }
    Ok(out)
}

fn parse_timeout(value: Option<&Value>) -> Result<Duration, TracingConfigError> {
    let err = |v: &dyn std::fmt::Display| {
        invalid(
            "otel.timeout",
            format!("{v} is not a duration (milliseconds, or e.g. \"5s\")"),
        )
    };
    let ms = match value {
        None | Some(Value::Null) => return Ok(DEFAULT_EXPORT_TIMEOUT),
        Some(Value::Number(n)) => n.as_f64().ok_or_else(|| err(n))?,
        Some(Value::String(s)) => {
            let s = s.trim();
            let (num, factor) = if let Some(n) = s.strip_suffix("ms") {
                (n, 1.0)
            } else if let Some(n) = s.strip_suffix('s') {
                (n, 1000.0)
            } else if let Some(n) = s.strip_suffix('m') {
                (n, 60_000.0)
            } else {
                (s, 1.0)
            };
            num.trim().parse::<f64>().map_err(|_| err(&s))? * factor
        }
        Some(other) => return Err(err(other)),
    };
    if !ms.is_finite() || ms < 0.0 {
        return Err(err(&ms));
    }
    if ms == 0.0 {
        return Ok(DEFAULT_EXPORT_TIMEOUT);
    }
    Ok(Duration::from_secs_f64(ms / 1000.0))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(v: Value) -> Result<TracingConfig, TracingConfigError> {
        TracingConfig::from_spec(Some(&v))
    }

    #[test]
    fn trace_config_sampling_rate() {
        assert_eq!(
            TracingConfig::from_spec(None).unwrap(),
            TracingConfig::disabled()
        );
        assert!(!TracingConfig::disabled().is_enabled());
        assert_eq!(
            parse(json!({})).unwrap().sampling_rate,
            DEFAULT_SAMPLING_RATE
        );
        assert_eq!(
            parse(json!({"samplingRate": ""})).unwrap().sampling_rate,
            DEFAULT_SAMPLING_RATE
        );
        assert_eq!(
            parse(json!({"samplingRate": "1"})).unwrap().sampling_rate,
            1.0
        );
        assert_eq!(
            parse(json!({"samplingRate": 0.25})).unwrap().sampling_rate,
            0.25
        );
        assert_eq!(
            parse(json!({"samplingRate": "5"})).unwrap().sampling_rate,
            1.0
        );
        let off = parse(json!({"samplingRate": "0"})).unwrap();
        assert!(!off.is_enabled());
        assert!(parse(json!({"samplingRate": "1"})).unwrap().is_enabled());
        for bad in [json!("often"), json!("-0.5"), json!(true), json!([1])] {
            let err = parse(json!({"samplingRate": bad})).unwrap_err();
            assert!(
                err.to_string().starts_with("tracing.samplingRate:"),
                "{err}"
            );
        }
    }

    #[test]
    fn trace_config_otel() {
        let cfg = parse(json!({
            "samplingRate": "1",
            "stdout": true,
            "otel": {"endpointAddress": "localhost:4317", "isSecure": false, "protocol": "grpc",
                     "headers": "x-api-key=abc, tenant=t1", "timeout": 2500},
            "zipkin": {"endpointAddress": "http://localhost:9411/api/v2/spans"}
        }))
        .unwrap();
        assert!(cfg.stdout);
        let otlp = cfg.otlp.unwrap();
        assert_eq!(otlp.endpoint, "http://localhost:4317");
        assert_eq!(
            otlp.headers,
            vec![
                ("x-api-key".into(), "abc".into()),
                ("tenant".into(), "t1".into())
            ]
        );
        assert_eq!(otlp.timeout, Duration::from_millis(2500));
        assert_eq!(
            cfg.zipkin_endpoint.as_deref(),
            Some("http://localhost:9411/api/v2/spans")
        );

        let url = parse(json!({"otel": {"endpointAddress": "http://10.0.0.1:4317/",
            "isSecure": "false", "headers": [{"name": "a", "value": "b"}], "timeout": "3s"}}))
        .unwrap()
        .otlp
        .unwrap();
        assert_eq!(url.endpoint, "http://10.0.0.1:4317");
        assert_eq!(url.headers, vec![("a".into(), "b".into())]);
        assert_eq!(url.timeout, Duration::from_secs(3));
        // http:// with isSecure unset is plaintext.
        assert!(
            parse(json!({"otel": {"endpointAddress": "http://c:4317"}}))
                .unwrap()
                .otlp
                .is_some()
        );
        // No endpoint: no exporter.
        assert_eq!(
            parse(json!({"otel": {"isSecure": false}})).unwrap().otlp,
            None
        );
        assert_eq!(
            parse(json!({"otel": {"endpointAddress": "c:4317", "isSecure": false}}))
                .unwrap()
                .otlp
                .unwrap()
                .timeout,
            DEFAULT_EXPORT_TIMEOUT
        );
    }

    #[test]
    fn trace_config_errors() {
        let cases = [
            (
                json!({"otel": {"endpointAddress": "c:4317", "isSecure": false, "protocol": "http"}}),
                "otel.protocol",
            ),
            (
                json!({"otel": {"endpointAddress": "c:4317", "isSecure": false, "protocol": "udp"}}),
                "otel.protocol",
            ),
            (
                json!({"otel": {"endpointAddress": "c:4317"}}),
                "otel.isSecure",
            ),
            (
                json!({"otel": {"endpointAddress": "c:4317", "isSecure": true}}),
                "otel.isSecure",
            ),
            (
                json!({"otel": {"endpointAddress": "https://c:4317", "isSecure": false}}),
                "otel.isSecure",
            ),
            (
                json!({"otel": {"endpointAddress": "c", "isSecure": false}}),
                "otel.endpointAddress",
            ),
            (
                json!({"otel": {"endpointAddress": "c:4317/v1/traces", "isSecure": false}}),
                "otel.endpointAddress",
            ),
            (
                json!({"otel": {"endpointAddress": "ftp://c:21", "isSecure": false}}),
                "otel.endpointAddress",
            ),
            (
                json!({"otel": {"endpointAddress": "c:4317", "isSecure": "maybe"}}),
                "otel.isSecure",
            ),
            (
                json!({"otel": {"endpointAddress": "c:4317", "isSecure": false, "headers": "novalue"}}),
                "otel.headers",
            ),
            (
                json!({"otel": {"endpointAddress": "c:4317", "isSecure": false, "timeout": "soon"}}),
                "otel.timeout",
            ),
            (json!({"stdout": "loud"}), "stdout"),
            (json!("1"), ""),
        ];
        for (spec, field) in cases {
            match parse(spec.clone()) {
                Err(TracingConfigError::Invalid { field: f, .. }) => assert_eq!(f, field, "{spec}"),
                Ok(cfg) => panic!("{spec} was accepted: {cfg:?}"),
            }
        }
    }
}
