//! Cron schedules in a time zone: five-field expressions (minute hour day-of-month month
//! day-of-week, names like MON and JAN allowed) read with croner, firing instants computed
//! in the job's IANA zone with chrono-tz, so 09:00 Europe/Berlin stays 09:00 across DST.

use chrono::{DateTime, Timelike as _, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    zone: Tz,
}

/// Why a schedule cannot be used; the message is for the person who wrote it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("invalid schedule {expression:?}: {reason}")]
    Cron { expression: String, reason: String },
    #[error("unknown time zone {0:?} (use an IANA name such as Europe/Berlin or UTC)")]
    TimeZone(String),
}

impl Schedule {
    pub fn parse(expression: &str, time_zone: &str) -> Result<Self, ScheduleError> {
        let invalid = |reason: String| ScheduleError::Cron { expression: expression.to_owned(), reason };
        if expression.split_whitespace().count() != 5 {
            return Err(invalid("it needs five fields: minute hour day-of-month month day-of-week".into()));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(expression)
            .map_err(|e| invalid(e.to_string()))?;
        let zone: Tz = time_zone.parse().map_err(|_| ScheduleError::TimeZone(time_zone.to_owned()))?;
        Ok(Self { cron, zone })
    }

    /// The first firing strictly after `after` (on a whole minute).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = whole_second(after).with_timezone(&self.zone);
        self.cron.find_next_occurrence(&local, false).ok().map(|t| t.with_timezone(&Utc))
    }

    /// The last firing at or before `at`, if it came after `since`.
    pub fn latest_between(&self, since: DateTime<Utc>, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = whole_second(at).with_timezone(&self.zone);
        self.cron.find_previous_occurrence(&local, true).ok().map(|t| t.with_timezone(&Utc)).filter(|t| *t > since)
    }
}

/// croner keeps the sub-second part of its starting point; firings are on whole minutes.
fn whole_second(at: DateTime<Utc>) -> DateTime<Utc> {
    at.with_nanosecond(0).unwrap_or(at)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn fires_at_local_time_across_dst() {
        let schedule = Schedule::parse("0 9 * * MON", "Europe/Berlin").unwrap();
        // Winter: 09:00 CET is 08:00 UTC.
        assert_eq!(schedule.next_after(at("2026-03-20T00:00:00Z")), Some(at("2026-03-23T08:00:00Z")));
        // Summer time started on 29 March 2026: 09:00 CEST is 07:00 UTC.
        assert_eq!(schedule.next_after(at("2026-03-27T00:00:00Z")), Some(at("2026-03-30T07:00:00Z")));
        // Firings are whole minutes whatever the starting instant.
        assert_eq!(schedule.next_after(at("2026-03-27T00:00:00.123456Z")), Some(at("2026-03-30T07:00:00Z")));
    }

    #[test]
    fn a_time_skipped_by_dst_fires_once_and_a_repeated_one_once() {
        // 02:30 does not exist in Berlin on 29 March 2026 and exists twice on 25 October.
        let schedule = Schedule::parse("30 2 * * *", "Europe/Berlin").unwrap();
        let spring = schedule.next_after(at("2026-03-28T12:00:00Z")).unwrap();
        assert!(spring > at("2026-03-28T12:00:00Z") && spring < at("2026-03-30T12:00:00Z"), "{spring}");
        let first = schedule.next_after(at("2026-10-24T12:00:00Z")).unwrap();
        let second = schedule.next_after(first).unwrap();
        assert!(second - first >= chrono::Duration::hours(23), "{first} then {second}");
    }

    #[test]
    fn rejects_what_cron_does_not_say() {
        assert!(matches!(Schedule::parse("* * * *", "UTC"), Err(ScheduleError::Cron { .. })));
        assert!(matches!(Schedule::parse("0 0 * * * *", "UTC"), Err(ScheduleError::Cron { .. })));
        assert!(matches!(Schedule::parse("61 * * * *", "UTC"), Err(ScheduleError::Cron { .. })));
        assert!(matches!(Schedule::parse("0 9 * * *", "Mars/Olympus"), Err(ScheduleError::TimeZone(_))));
    }

    #[test]
    fn latest_firing_in_a_window() {
        let schedule = Schedule::parse("*/5 * * * *", "UTC").unwrap();
        let latest = schedule.latest_between(at("2026-01-01T00:00:00Z"), at("2026-01-01T00:17:00Z"));
        assert_eq!(latest, Some(at("2026-01-01T00:15:00Z")));
        assert_eq!(schedule.latest_between(at("2026-01-01T00:16:00Z"), at("2026-01-01T00:17:00Z")), None);
    }
}
