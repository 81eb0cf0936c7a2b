//! The `schedule` metadata of `bindings.cron`: cron expressions (5 or 6 fields), the
//! `@yearly`…`@hourly` descriptors and `@every <Go duration>`, all evaluated in UTC.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use mecha_core::duration::parse_go_duration;

/// The prefix of a fixed-interval schedule.
const EVERY: &str = "@every ";

/// A parsed schedule: the slots at which the binding fires.
#[derive(Debug, Clone)]
pub(crate) enum Schedule {
    /// Every `n` whole seconds, in slots aligned on the Unix epoch (`@every 1h30m` fires at
    /// 00:00, 01:30, 03:00… UTC), so a restart neither resets nor repeats a slot.
    Every(Duration),
    /// A cron expression; seconds are optional.
    Cron(Box<Cron>),
}

// === impl Schedule ===

impl Schedule {
    /// Parses `spec`, refusing schedules that are malformed or never fire.
    pub(crate) fn parse(spec: &str) -> Result<Self, String> {
        let spec = spec.trim();
        if let Some(rest) = spec.strip_prefix(EVERY) {
            return parse_every(rest.trim());
        }
        if spec.starts_with('@') {
            let pattern = descriptor(spec).ok_or_else(|| {
                format!(
                    "unknown descriptor '{spec}': expected @yearly, @annually, @monthly, \
                     @weekly, @daily, @midnight, @hourly or @every <duration>"
                )
            })?;
            return parse_cron(pattern);
        }
        let fields = spec.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            return Err(format!(
                "expected 5 or 6 space-separated fields (seconds first when 6), got {fields}"
            ));
        }
        parse_cron(spec)
    }

    /// The first slot strictly after `t`, or `None` if there is none.
    pub(crate) fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Every(period) => {
                let period = i64::try_from(period.as_secs()).ok()?.max(1);
                let slot = t.timestamp().div_euclid(period).checked_add(1)? * period;
                DateTime::from_timestamp(slot, 0)
            }
            Schedule::Cron(cron) => {
                let next = cron.find_next_occurrence(&t, false).ok()?;
                // Guard the "strictly after" contract whatever the library's rounding is.
                if next > t {
                    Some(next)
                } else {
                    cron.find_next_occurrence(&(t + TimeDelta::seconds(1)), false)
                        .ok()
                }
            }
        }
    }
}

/// `@every <d>`: as robfig/cron (which Dapr uses), the period is truncated to whole seconds and
/// is at least one second.
fn parse_every(duration: &str) -> Result<Schedule, String> {
    let d = parse_go_duration(duration).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("@every needs a positive duration".into());
    }
    Ok(Schedule::Every(Duration::from_secs(d.as_secs().max(1))))
}

/// The 6-field pattern a descriptor stands for.
fn descriptor(spec: &str) -> Option<&'static str> {
    Some(match spec.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => "0 0 0 1 1 *",
        "@monthly" => "0 0 0 1 * *",
        "@weekly" => "0 0 0 * * 0",
        "@daily" | "@midnight" => "0 0 0 * * *",
        "@hourly" => "0 0 * * * *",
        _ => return None,
    })
}

fn parse_cron(pattern: &str) -> Result<Schedule, String> {
    let cron = CronParser::builder()
        .seconds(Seconds::Optional)
        .build()
        .parse(pattern)
        .map_err(|e| e.to_string())?;
    let schedule = Schedule::Cron(Box::new(cron));
    if schedule.next_after(Utc::now()).is_none() {
        return Err("the expression never fires".into());
    }
    Ok(schedule)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn next(spec: &str, from: &str) -> String {
        let s = Schedule::parse(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
        s.next_after(at(from)).unwrap().to_rfc3339()
    }

    #[test]
    fn six_fields_have_seconds() {
        assert_eq!(
            next("*/2 * * * * *", "2026-01-01T00:00:00Z"),
            "2026-01-01T00:00:02+00:00"
        );
        assert_eq!(
            next("*/2 * * * * *", "2026-01-01T00:00:01.5Z"),
            "2026-01-01T00:00:02+00:00"
        );
        assert_eq!(
            next("15 * * * * *", "2026-01-01T00:00:20Z"),
            "2026-01-01T00:01:15+00:00"
        );
        assert_eq!(
            next("0 30 * * * *", "2026-01-01T00:00:00Z"),
            "2026-01-01T00:30:00+00:00"
        );
        assert_eq!(
            next("*/1 * * * * *", "2026-01-01T00:00:00.999Z"),
            "2026-01-01T00:00:01+00:00"
        );
    }

    #[test]
    fn five_fields_start_at_minutes() {
        assert_eq!(
            next("*/5 * * * *", "2026-01-01T00:01:00Z"),
            "2026-01-01T00:05:00+00:00"
        );
        assert_eq!(
            next("0 12 * * *", "2026-01-01T12:00:00Z"),
            "2026-01-02T12:00:00+00:00"
        );
        assert_eq!(
            next("0 0 1 1 *", "2026-06-01T00:00:00Z"),
            "2027-01-01T00:00:00+00:00"
        );
    }

    #[test]
    fn strictly_after_a_slot() {
        for spec in ["* * * * * *", "*/1 * * * * *", "@every 1s"] {
            assert_eq!(
                next(spec, "2026-01-01T00:00:05Z"),
                "2026-01-01T00:00:06+00:00",
                "{spec}"
            );
        }
        assert_eq!(
            next("* * * * *", "2026-01-01T00:05:00Z"),
            "2026-01-01T00:06:00+00:00"
        );
    }

    #[test]
    fn descriptors() {
        let from = "2026-03-15T10:20:30Z";
        assert_eq!(next("@yearly", from), "2027-01-01T00:00:00+00:00");
        assert_eq!(next("@annually", from), "2027-01-01T00:00:00+00:00");
        assert_eq!(next("@monthly", from), "2026-04-01T00:00:00+00:00");
        // 2026-03-15 is a Sunday: the next week starts on Sunday the 22nd.
        assert_eq!(next("@weekly", from), "2026-03-22T00:00:00+00:00");
        assert_eq!(next("@daily", from), "2026-03-16T00:00:00+00:00");
        assert_eq!(next("@midnight", from), "2026-03-16T00:00:00+00:00");
        assert_eq!(next("@hourly", from), "2026-03-15T11:00:00+00:00");
        assert_eq!(next("@HOURLY", from), "2026-03-15T11:00:00+00:00");
    }

    #[test]
    fn every_is_epoch_aligned() {
        assert_eq!(
            next("@every 2s", "2026-01-01T00:00:01Z"),
            "2026-01-01T00:00:02+00:00"
        );
        assert_eq!(
            next("@every 2s", "2026-01-01T00:00:02Z"),
            "2026-01-01T00:00:04+00:00"
        );
        assert_eq!(
            next("@every 1h30m", "2026-01-01T00:10:00Z"),
            "2026-01-01T01:30:00+00:00"
        );
        assert_eq!(
            next("@every 1h30m", "2026-01-01T01:30:00Z"),
            "2026-01-01T03:00:00+00:00"
        );
        assert_eq!(
            next("@every 90m", "2026-01-01T01:29:59.9Z"),
            "2026-01-01T01:30:00+00:00"
        );
    }

    #[test]
    fn every_rounds_like_robfig() {
        let Schedule::Every(d) = Schedule::parse("@every 1.5s").unwrap() else {
            panic!()
        };
        assert_eq!(d, Duration::from_secs(1));
        let Schedule::Every(d) = Schedule::parse("@every 100ms").unwrap() else {
            panic!()
        };
        assert_eq!(d, Duration::from_secs(1));
        let Schedule::Every(d) = Schedule::parse("  @every   2m  ").unwrap() else {
            panic!()
        };
        assert_eq!(d, Duration::from_secs(120));
    }

    #[test]
    fn refuses_garbage() {
        for bad in [
            "",
            "   ",
            "* * * *",
            "* * * * * * * *",
            "61 * * * * *",
            "* 60 * * * *",
            "* * 24 * * *",
            "* * * 32 * *",
            "* * * * 13 *",
            "a b c d e",
            "@every",
            "@every ",
            "@every 0s",
            "@every 5",
            "@every -1s",
            "@every 1x",
            "@reboot",
            "@fortnightly",
            "0 0 30 2 *",
        ] {
            assert!(Schedule::parse(bad).is_err(), "'{bad}' should be refused");
        }
    }

    #[test]
    fn error_messages_say_why() {
        let e = Schedule::parse("* * * *").unwrap_err();
        assert!(e.contains("5 or 6"), "{e}");
        let e = Schedule::parse("@reboot").unwrap_err();
        assert!(e.contains("@reboot"), "{e}");
        let e = Schedule::parse("@every 5").unwrap_err();
        assert!(e.contains("duration"), "{e}");
    }
}
