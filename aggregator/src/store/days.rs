//! Which UTC day a record belongs to, and how day directories are named.
//!
//! Pure functions of timestamps and names; the caller passes "now" so tests can
//! choose it. This module must not touch the disk.

use chrono::{DateTime, Days, NaiveDate, Utc};

/// 2000-01-01T00:00:00Z in nanoseconds: anything earlier is a broken clock.
pub const MIN_SANE_NS: i64 = 946_684_800 * 1_000_000_000;

/// One day in nanoseconds.
pub const DAY_NS: i64 = 86_400 * 1_000_000_000;

/// The directory name format of a day index.
const DAY_FORMAT: &str = "%Y-%m-%d";

/// The event time to index a record under: its timestamp if known and sane,
/// else its observed time if sane, else `now_ns`. Sane means from 2000 on and
/// at most one day ahead of `now_ns`.
pub fn effective_ns(timestamp_ns: i64, observed_ns: i64, now_ns: i64) -> i64 {
    let sane = |t: i64| (MIN_SANE_NS..=now_ns.saturating_add(DAY_NS)).contains(&t);
    let ts = if timestamp_ns > 0 {
        timestamp_ns
    } else {
        observed_ns
    };
    if sane(ts) {
        ts
    } else if sane(observed_ns) {
        observed_ns
    } else {
        now_ns
    }
}

/// The UTC day of a time in nanoseconds.
pub fn day_of(ns: i64) -> NaiveDate {
    DateTime::<Utc>::from_timestamp_nanos(ns).date_naive()
}

/// The directory name of a day (`2026-11-23`).
pub fn dir_name(day: NaiveDate) -> String {
    day.format(DAY_FORMAT).to_string()
}

/// The day a directory name stands for, if it is one.
pub fn parse_dir_name(name: &str) -> Option<NaiveDate> {
    if name.len() != 10 {
        return None;
    }
    NaiveDate::parse_from_str(name, DAY_FORMAT).ok()
}

/// The oldest day kept: days before it are deleted (whole UTC days older than
/// `retention_days`).
pub fn oldest_kept(today: NaiveDate, retention_days: u32) -> NaiveDate {
    today
        .checked_sub_days(Days::new(u64::from(retention_days)))
        .unwrap_or(NaiveDate::MIN)
}

/// The current time in nanoseconds since the Unix epoch.
pub fn now_ns() -> i64 {
    Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_763_900_000 * 1_000_000_000; // 2025-11-23

    #[test]
    fn event_time_wins_when_sane() {
        assert_eq!(effective_ns(NOW - 5, NOW, NOW), NOW - 5);
    }

    #[test]
    fn missing_timestamp_falls_back_to_observed() {
        assert_eq!(effective_ns(0, NOW - 7, NOW), NOW - 7);
    }

    #[test]
    fn absurd_timestamps_are_clamped_to_observed_then_now() {
        assert_eq!(effective_ns(1_000, NOW - 3, NOW), NOW - 3);
        assert_eq!(effective_ns(NOW + 2 * DAY_NS, NOW - 3, NOW), NOW - 3);
        assert_eq!(effective_ns(1_000, 0, NOW), NOW);
        // Old but sane records keep their own day.
        assert_eq!(effective_ns(NOW - 30 * DAY_NS, NOW, NOW), NOW - 30 * DAY_NS);
    }

    #[test]
    fn day_names_round_trip_and_reject_other_names() {
        let d = day_of(NOW);
        assert_eq!(dir_name(d), "2025-11-23");
        assert_eq!(parse_dir_name("2025-11-23"), Some(d));
        assert_eq!(parse_dir_name("2025-1-23"), None);
        assert_eq!(parse_dir_name("lost+found"), None);
    }

    #[test]
    fn retention_keeps_today_and_the_last_n_days() {
        let today = day_of(NOW);
        assert_eq!(dir_name(oldest_kept(today, 7)), "2025-11-16");
        assert_eq!(oldest_kept(today, 0), today);
    }
}
