//! Dates and times for the SQL bindings (`bindings.postgresql`, and `bindings.mysql`, which
//! includes this file with `#[path]`): Go's `RFC3339Nano` and `Duration.String()` spellings,
//! which Dapr's response metadata and row values use, and the civil-calendar arithmetic
//! behind them (proleptic Gregorian, as both servers count).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// `t` as Go's `time.RFC3339Nano` in UTC: `2006-01-02T15:04:05.999999999Z`.
pub(crate) fn rfc3339_nanos(t: SystemTime) -> String {
    let (secs, nanos) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            d.subsec_nanos(),
        ),
        Err(e) => {
            let d = e.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            match d.subsec_nanos() {
                0 => (-secs, 0),
                n => (-secs - 1, 1_000_000_000 - n),
            }
        }
    };
    let days = secs.div_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let s = secs.rem_euclid(86_400);
    format!(
        "{}T{:02}:{:02}:{:02}{}Z",
        date(y, m, d),
        s / 3600,
        s / 60 % 60,
        s % 60,
        fraction(nanos, 9)
    )
}

/// A timestamp given as microseconds since the Unix epoch, as RFC 3339 in UTC with the
/// fraction trimmed (`2024-01-02T03:04:05.5Z`), as Go marshals a `time.Time`.
pub(crate) fn timestamp_micros(unix_micros: i64) -> String {
    let days = unix_micros.div_euclid(MICROS_PER_DAY);
    let rest = unix_micros.rem_euclid(MICROS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    let secs = rest / 1_000_000;
    let micros = u32::try_from(rest % 1_000_000).unwrap_or(0);
    format!(
        "{}T{:02}:{:02}:{:02}{}Z",
        date(y, m, d),
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        fraction(micros, 6)
    )
}

/// A time of day given as microseconds since midnight: `15:04:05.5`.
pub(crate) fn time_of_day(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = u32::try_from(micros.rem_euclid(1_000_000)).unwrap_or(0);
    format!(
        "{:02}:{:02}:{:02}{}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        fraction(frac, 6)
    )
}

/// `YYYY-MM-DD` (years outside 0..=9999 get a sign, as RFC 3339 cannot say them otherwise).
pub(crate) fn date(y: i64, m: u32, d: u32) -> String {
    if (0..=9999).contains(&y) {
        format!("{y:04}-{m:02}-{d:02}")
    } else {
        format!("{y:+05}-{m:02}-{d:02}")
    }
}

/// `.` and the digits of `value` (a fraction with `digits` digits), trailing zeros trimmed;
/// empty for zero.
fn fraction(value: u32, digits: usize) -> String {
    if value == 0 {
        return String::new();
    }
    let text = format!(".{value:0digits$}");
    text.trim_end_matches('0').to_owned()
}

/// `d` as Go's `time.Duration.String()`: `0s`, `850ns`, `1.5µs`, `2.25ms`, `1m3.5s`.
pub(crate) fn go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    let with_fraction = |n: u128, unit: u128, digits: usize| {
        let whole = n / unit;
        let rest = u32::try_from(n % unit).unwrap_or(0);
        format!("{whole}{}", fraction(rest, digits))
    };
    match nanos {
        0 => "0s".to_owned(),
        n if n < 1_000 => format!("{n}ns"),
        n if n < 1_000_000 => format!("{}µs", with_fraction(n, 1_000, 3)),
        n if n < 1_000_000_000 => format!("{}ms", with_fraction(n, 1_000_000, 6)),
        n => {
            let secs = n / 1_000_000_000;
            let (h, m) = (secs / 3600, secs / 60 % 60);
            let s = with_fraction(n % 60_000_000_000, 1_000_000_000, 9);
            match (h, m) {
                (0, 0) => format!("{s}s"),
                (0, m) => format!("{m}m{s}s"),
                (h, m) => format!("{h}h{m}m{s}s"),
            }
        }
    }
}

/// The civil date of day `z` counted from 1970-01-01 (Howard Hinnant's algorithm).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

/// The day number, counted from 1970-01-01, of a civil date.
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A date or timestamp as apps write them: `2024-01-02`, `2024-01-02T03:04:05.678Z`,
/// `2024-01-02 03:04:05+02:00`. Returns the microseconds since the Unix epoch of the local
/// (written) clock reading, and the UTC offset in seconds when one was given.
pub(crate) fn parse_timestamp(s: &str) -> Option<(i64, Option<i64>)> {
    let s = s.trim();
    let num = |t: &str| -> Option<i64> {
        (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse().ok())
            .flatten()
    };
    let (date_part, rest) = match s.find(['T', 't', ' ']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mut fields = date_part.splitn(3, '-');
    let y = num(fields.next()?)?;
    let m = u32::try_from(num(fields.next()?)?).ok()?;
    let d = u32::try_from(num(fields.next()?)?).ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let mut micros = days_from_civil(y, m, d).checked_mul(MICROS_PER_DAY)?;
    let Some(rest) = rest else {
        return Some((micros, None));
    };
    let (clock, offset) = match rest.find(['Z', 'z', '+', '-']) {
        Some(i) => (&rest[..i], Some(&rest[i..])),
        None => (rest, None),
    };
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut parts = hms.split(':');
    let h = num(parts.next()?)?;
    let min = num(parts.next()?)?;
    let sec = parts.next().map_or(Some(0), num)?;
    if parts.next().is_some() || h > 24 || min > 59 || sec > 60 {
        return None;
    }
    let frac_micros = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().chain("000000".chars()).take(6).collect();
        num(&digits)?
    };
    micros += ((h * 60 + min) * 60 + sec) * 1_000_000 + frac_micros;
    let offset = match offset {
        None => None,
        Some("Z" | "z") => Some(0),
        Some(o) => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            let body = o.get(1..)?;
            let (oh, om) = match body.split_once(':') {
                Some((oh, om)) => (num(oh)?, num(om)?),
                None if body.len() == 4 => (num(body.get(..2)?)?, num(body.get(2..)?)?),
                None => (num(body)?, 0),
            };
            Some(sign * (oh * 3600 + om * 60))
        }
    };
    Some((micros, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        for days in [-800_000, -1, 0, 1, 10_957, 19_723, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(10_957), (2000, 1, 1));
    }

    #[test]
    fn go_spellings() {
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(go_duration(Duration::from_nanos(850)), "850ns");
        assert_eq!(go_duration(Duration::from_nanos(1_500)), "1.5µs");
        assert_eq!(go_duration(Duration::from_micros(2_250)), "2.25ms");
        assert_eq!(go_duration(Duration::from_millis(63_500)), "1m3.5s");
        assert_eq!(go_duration(Duration::from_secs(3_600)), "1h0m0s");
        assert_eq!(timestamp_micros(1_500_000), "1970-01-01T00:00:01.5Z");
        assert_eq!(timestamp_micros(-1), "1969-12-31T23:59:59.999999Z");
        assert_eq!(time_of_day(3_723_000_000), "01:02:03");
    }

    #[test]
    fn timestamps_parse() {
        assert_eq!(parse_timestamp("1970-01-02"), Some((86_400_000_000, None)));
        assert_eq!(
            parse_timestamp("1970-01-01T00:00:01.25Z"),
            Some((1_250_000, Some(0)))
        );
        assert_eq!(
            parse_timestamp("1970-01-01 02:00:00+02:00"),
            Some((7_200_000_000, Some(7_200)))
        );
        assert_eq!(parse_timestamp("yesterday"), None);
    }
}
