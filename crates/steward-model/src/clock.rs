//! Steward's one notion of "now": UTC in whole milliseconds.
//!
//! The store keeps times as integer milliseconds. A time taken with nanoseconds and
//! compared with its own stored copy would be *later* than the copy — the bug that
//! reopened hand-resolved incidents (an alert attached in the same millisecond it fired
//! looked attached before it fired). So every time Steward makes comes from [`now`],
//! every time it is given (API bodies, webhook payloads, CLI flags) goes through
//! [`truncate`], and the loops that take a `now` argument truncate it on entry: any
//! time compares equal to itself after a round trip through the store.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

/// The current time, truncated to whole milliseconds.
pub fn now() -> DateTime<Utc> {
    truncate(Utc::now())
}

/// `t` truncated to whole milliseconds (what the store keeps).
pub fn truncate(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::milliseconds(1)).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_whole_milliseconds() {
        let t = now();
        assert_eq!(t.timestamp_subsec_nanos() % 1_000_000, 0);
        let odd = DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap();
        assert_eq!(truncate(odd), DateTime::from_timestamp(1_700_000_000, 123_000_000).unwrap());
        assert_eq!(truncate(truncate(odd)), truncate(odd));
    }
}
