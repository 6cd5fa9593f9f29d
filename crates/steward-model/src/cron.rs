//! Cron in an IANA time zone — the one implementation, used by runbook schedules,
//! backup and verification schedules and maintenance windows. Pure: no clock, no I/O.
//!
//! **The DST rule.** The expression is matched against *wall-clock* time in the zone,
//! then each matching wall time is mapped to an instant:
//! - a wall time that never happens (the skipped hour in spring) fires when the clocks
//!   jump, once, however many skipped wall times matched;
//! - a wall time that happens twice (the repeated hour in autumn) fires once, at its
//!   first occurrence — unless the hour field is `*`: an hourly schedule fires in both
//!   hours, which are an hour apart (as vixie cron does).
//!
//! A maintenance window is an occurrence of its schedule plus a duration, so a window
//! in the skipped hour opens when the clocks jump and one in the repeated hour opens once.

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

pub fn parse_cron(text: &str) -> Result<croner::Cron, String> {
    if text.split_whitespace().count() != 5 {
        return Err("expected five fields".into());
    }
    text.parse::<croner::Cron>().map_err(|e| e.to_string())
}

/// When each recurring schedule fires next, for a loop that wakes every second and
/// asks which came due. A fire missed while steward was down (or the loop was late by
/// more than one period) is skipped, not made up; [`Due::missed`] says so, to log.
pub struct Fires<K> {
    next: std::collections::HashMap<K, DateTime<Utc>>,
    started: DateTime<Utc>,
}

/// One fire that came due.
pub struct Due {
    pub at: DateTime<Utc>,
    /// Later fires had also passed by `now`; they were skipped.
    pub missed: bool,
}

impl<K: std::hash::Hash + Eq + Clone> Fires<K> {
    /// Schedules fire only after `started`: nothing fires for the time before it.
    pub fn new(started: DateTime<Utc>) -> Fires<K> {
        Fires { next: Default::default(), started }
    }

    /// The fire of `key` that came due by `now`, if one did; the schedule then moves on.
    pub fn due(&mut self, key: &K, cron: &croner::Cron, tz: Tz, now: DateTime<Utc>) -> Option<Due> {
        let at = match self.next.get(key) {
            Some(t) => *t,
            None => {
                let t = next_fire(cron, tz, self.started.max(now - Duration::seconds(1)))?;
                self.next.insert(key.clone(), t);
                t
            }
        };
        if at > now {
            return None;
        }
        let following = next_fire(cron, tz, at);
        let missed = following.is_some_and(|t| t <= now);
        match (following, missed) {
            (Some(_), true) => {
                if let Some(later) = next_fire(cron, tz, now) {
                    self.next.insert(key.clone(), later);
                }
            }
            (Some(t), false) => {
                self.next.insert(key.clone(), t);
            }
            (None, _) => {
                self.next.remove(key);
            }
        }
        Some(Due { at, missed })
    }

    /// Forgets schedules that are no longer configured (after a reload).
    pub fn retain(&mut self, live: &[K]) {
        self.next.retain(|k, _| live.contains(k));
    }
}

/// The first fire time strictly after `after`.
pub fn next_fire(cron: &croner::Cron, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let every_hour = cron.as_str().split_whitespace().nth(1) == Some("*");
    // Wall time as a naive value, carried through croner as if it were UTC. The first
    // search includes the current wall time: in a repeated hour it has a second instant.
    let mut cursor = after.with_timezone(&tz).naive_local();
    let mut inclusive = true;
    // Plenty of matches to find the next real instant (e.g. Feb 29 schedules).
    for _ in 0..100_000 {
        let wall = cron.find_next_occurrence(&cursor.and_utc(), inclusive).ok()?.naive_utc();
        inclusive = false;
        if let Some(at) = instants(tz, wall, every_hour).into_iter().find(|at| *at > after) {
            return Some(at);
        }
        cursor = wall;
    }
    None
}

/// The start of the occurrence whose `[start, start + duration)` contains `now`, if any
/// (a maintenance window that is open).
pub fn occurrence_covering(cron: &croner::Cron, tz: Tz, duration: std::time::Duration, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let from = now - Duration::from_std(duration).ok()?;
    let start = next_fire(cron, tz, from)?;
    (start <= now).then_some(start)
}

/// The instants a matching wall time fires at: its first occurrence (both when
/// `every_hour`), or the end of the gap it falls in.
fn instants(tz: Tz, wall: NaiveDateTime, every_hour: bool) -> Vec<DateTime<Utc>> {
    match tz.from_local_datetime(&wall) {
        LocalResult::Single(t) => vec![t.with_timezone(&Utc)],
        LocalResult::Ambiguous(first, second) if every_hour => vec![first.with_timezone(&Utc), second.with_timezone(&Utc)],
        LocalResult::Ambiguous(first, _) => vec![first.with_timezone(&Utc)],
        LocalResult::None => {
            // Walk forward a minute at a time to the first wall time that exists.
            let mut w = wall;
            for _ in 0..(24 * 60) {
                w += Duration::minutes(1);
                if let Some(t) = tz.from_local_datetime(&w).earliest() {
                    // The first existing wall time is the moment the clocks changed.
                    return vec![t.with_timezone(&Utc)];
                }
            }
            vec![]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fires(cron: &str, tz: Tz, from: &str, until: &str) -> Vec<String> {
        let cron = parse_cron(cron).unwrap();
        let mut t: DateTime<Utc> = from.parse().unwrap();
        let until: DateTime<Utc> = until.parse().unwrap();
        let mut out = vec![];
        while let Some(n) = next_fire(&cron, tz, t) {
            if n > until {
                break;
            }
            out.push(n.with_timezone(&tz).format("%m-%d %H:%M %Z").to_string());
            t = n;
        }
        out
    }

    #[test]
    fn nightly_job_runs_once_per_day_across_spring_forward() {
        // 2026-03-08: New York skips 02:00–03:00.
        let got = fires("0 2 * * *", chrono_tz::America::New_York, "2026-03-07T00:00:00Z", "2026-03-10T00:00:00Z");
        assert_eq!(got, vec!["03-07 02:00 EST", "03-08 03:00 EDT", "03-09 02:00 EDT"]);
    }

    #[test]
    fn skipped_half_hours_fire_once_when_clocks_jump() {
        let got = fires("*/30 * * * *", chrono_tz::America::New_York, "2026-03-08T06:15:00Z", "2026-03-08T07:45:00Z");
        // 01:30 EST, then 02:00 and 02:30 do not exist: one run at 03:00 EDT, then 03:30.
        assert_eq!(got, vec!["03-08 01:30 EST", "03-08 03:00 EDT", "03-08 03:30 EDT"]);
    }

    #[test]
    fn repeated_hour_in_autumn_fires_once() {
        // 2026-11-01: New York repeats 01:00–02:00.
        let got = fires("30 1 * * *", chrono_tz::America::New_York, "2026-10-31T12:00:00Z", "2026-11-02T12:00:00Z");
        assert_eq!(got, vec!["11-01 01:30 EDT", "11-02 01:30 EST"]);
        let hourly = fires("0 * * * *", chrono_tz::America::New_York, "2026-11-01T04:30:00Z", "2026-11-01T08:30:00Z");
        assert_eq!(hourly, vec!["11-01 01:00 EDT", "11-01 01:00 EST", "11-01 02:00 EST", "11-01 03:00 EST"]);
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn an_occurrence_in_the_skipped_hour_covers_from_the_jump() {
        // 02:30 does not exist in New York on 2026-03-08: the occurrence starts at 03:00 EDT.
        let cron = parse_cron("30 2 * * *").unwrap();
        let half_hour = std::time::Duration::from_secs(1800);
        let ny = chrono_tz::America::New_York;
        assert_eq!(occurrence_covering(&cron, ny, half_hour, at("2026-03-08T07:10:00Z")), Some(at("2026-03-08T07:00:00Z")));
        assert_eq!(occurrence_covering(&cron, ny, half_hour, at("2026-03-08T07:30:00Z")), None, "the end is not covered");
        assert_eq!(occurrence_covering(&cron, ny, half_hour, at("2026-03-08T06:59:59Z")), None);
    }

    #[test]
    fn an_occurrence_in_the_repeated_hour_covers_once() {
        // 01:30 happens twice in New York on 2026-11-01 (EDT, then EST): one occurrence.
        let cron = parse_cron("30 1 * * *").unwrap();
        let half_hour = std::time::Duration::from_secs(1800);
        let ny = chrono_tz::America::New_York;
        assert_eq!(occurrence_covering(&cron, ny, half_hour, at("2026-11-01T05:40:00Z")), Some(at("2026-11-01T05:30:00Z")));
        assert_eq!(occurrence_covering(&cron, ny, half_hour, at("2026-11-01T06:40:00Z")), None, "01:40 EST is the second pass");
    }

    #[test]
    fn berlin_and_bad_expressions() {
        let got = fires("0 2 * * *", chrono_tz::Europe::Berlin, "2026-03-28T12:00:00Z", "2026-03-30T12:00:00Z");
        assert_eq!(got, vec!["03-29 03:00 CEST", "03-30 02:00 CEST"]);
        assert!(parse_cron("0 2 * *").is_err());
        assert!(parse_cron("61 2 * * *").is_err());
    }
}
