//! Bounds on what user input can carry — times, and how much of it is echoed back —
//! and time arithmetic that cannot panic.
//!
//! chrono panics when `DateTime + TimeDelta` leaves its range (about ±262,000 years),
//! and a time written as year −262143 is still a valid RFC 3339 string. So every time
//! that arrives from outside — API bodies and queries, CLI flags, override windows —
//! is checked against [`earliest`]..=[`latest`] when it is parsed, and durations are
//! capped at [`crate::config::duration::MAX_DURATION`] (100 years). Within those
//! bounds `time ± duration` cannot overflow; [`add`] and [`sub`] are still checked so
//! that a mistake here is an error message rather than a crash.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

/// The first instant Steward accepts: the Unix epoch.
pub fn earliest() -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH
}

/// The last instant Steward accepts: the end of year 9999 (RFC 3339's last year).
pub fn latest() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).single().expect("a valid constant date")
}

/// `t` itself when it lies within the accepted range, or an error that says the range.
pub fn check(t: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if t < earliest() || t > latest() {
        return Err(format!("{} is outside the accepted range 1970-01-01 … 9999-12-31", t.format("%Y-%m-%d")));
    }
    Ok(t)
}

/// `t + d`, or an error when the result would leave the accepted range.
pub fn add(t: DateTime<Utc>, d: Duration) -> Result<DateTime<Utc>, String> {
    chrono::TimeDelta::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .filter(|t| *t <= latest())
        .ok_or_else(|| "the time plus the duration is past year 9999".to_string())
}

/// `t - d`, clamped at the earliest accepted instant (used for "since N ago" windows,
/// where "before the epoch" just means "everything").
pub fn sub(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::TimeDelta::from_std(d).ok().and_then(|d| t.checked_sub_signed(d)).map_or(earliest(), |v| v.max(earliest()))
}

/// At most `max` characters of `s`, marked `…` when cut: error messages and log lines
/// quote what was sent, never a megabyte of it.
pub fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((i, _)) => format!("{}…", &s[..i]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_outside_the_range_are_refused() {
        assert!(check(Utc.with_ymd_and_hms(1969, 12, 31, 0, 0, 0).unwrap()).is_err());
        assert!(check(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()).is_ok());
        let far = DateTime::<Utc>::MAX_UTC;
        assert!(check(far).is_err());
    }

    #[test]
    fn arithmetic_at_the_edges_is_an_error_not_a_panic() {
        let max = crate::config::duration::MAX_DURATION;
        assert!(add(latest(), max).unwrap_err().contains("past year 9999"));
        assert!(add(DateTime::<Utc>::MAX_UTC, Duration::from_secs(1)).is_err());
        assert_eq!(sub(DateTime::<Utc>::MIN_UTC, max), earliest());
        assert_eq!(sub(Utc.with_ymd_and_hms(1990, 1, 1, 0, 0, 0).unwrap(), max), earliest());
        let now = crate::clock::now();
        assert_eq!(add(now, Duration::from_secs(60)).unwrap(), now + chrono::Duration::seconds(60));
    }
}
