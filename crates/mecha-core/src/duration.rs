//! Go-style durations (`1h30m`, `500ms`, `1.5s`) as Dapr resources and flags write them.

use std::time::Duration;

/// An error parsing a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration '{0}': expected a Go duration such as 5s, 1m30s or 250ms")]
pub struct DurationError(pub String);

/// Parses a Go duration: a sequence of decimal numbers, each with a unit of `ns`, `us` (`µs`),
/// `ms`, `s`, `m` or `h`. A bare `0` is allowed; negative durations are refused.
pub fn parse_go_duration(input: &str) -> Result<Duration, DurationError> {
    let err = || DurationError(input.to_owned());
    let s = input.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(err());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        if num_len == 0 {
            return Err(err());
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| err())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per_unit = match &rest[..unit_len] {
            "ns" => 1e0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(err()),
        };
        total += value * nanos_per_unit;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total > u64::MAX as f64 {
        return Err(err());
    }
    Ok(Duration::from_nanos(total as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse_go_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_go_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("0h0m3s0ms"), Ok(Duration::from_secs(3)));
    }

    #[test]
    fn refuses_garbage() {
        for bad in ["", "5", "s", "5x", "-1s", "1h-2m"] {
            assert!(parse_go_duration(bad).is_err(), "{bad} should fail");
        }
    }
}
