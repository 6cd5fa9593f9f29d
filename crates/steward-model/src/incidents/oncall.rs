//! On-call schedules: who answers a page at a given instant.
//!
//! A rotation hands over at a wall-clock time in the schedule's zone ("09:00 in
//! America/New_York"), every N days counted in calendar days of that zone. Shifts are
//! therefore 23 or 25 hours long across a DST change, and the handoff stays at 09:00
//! local — the bug of tools that add 24 h in UTC (grafana/oncall#3261) cannot happen
//! here. A handoff time that does not exist on a spring-forward day happens when the
//! clocks jump (02:30 → 03:00); one that exists twice happens the first time.
//!
//! A schedule may layer rotations, each restricted to named time intervals (business
//! hours, say): at any instant the last active rotation covers it.

use chrono::{DateTime, Duration, DurationRound, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::alerting::time_interval::TimeInterval;

#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub name: String,
    pub location: Tz,
    /// Layers: at any instant the last rotation that is active covers it (a business-hours
    /// rotation listed after a round-the-clock one takes the day, the first the night).
    pub rotations: Vec<Rotation>,
    /// Later overrides win over earlier ones where they overlap.
    pub overrides: Vec<Override>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rotation {
    /// In order: `people[0]` takes the shift that starts at `start`.
    pub people: Vec<String>,
    /// Shift length in calendar days of the schedule's zone (1 daily, 7 weekly).
    pub shift_days: u32,
    pub handoff: NaiveTime,
    pub start: NaiveDate,
    /// Names of time intervals outside which this rotation covers nothing; empty means
    /// always.
    pub active: Vec<String>,
}

/// Someone else takes the shift from `from` until `until`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Override {
    pub person: String,
    pub from: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

/// The answer to "who is on call at T".
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OnCall {
    pub schedule: String,
    pub person: String,
    /// The stretch (shift, part of a shift, or override) that covers the instant.
    pub from: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub is_override: bool,
}

/// How far [`Schedule::on_call_at`] looks for where a layered stretch begins or ends.
const SCAN_LIMIT_MINUTES: i64 = 8 * 24 * 60;

impl Schedule {
    /// Who is on call at `t`, taking `extra` overrides (made at runtime) after the
    /// configured ones; `intervals` are the configuration's time intervals (rotations'
    /// `active`). `None` when no rotation covers `t` (before the first shift, or outside
    /// every restricted rotation).
    pub fn on_call_at(&self, t: DateTime<Utc>, extra: &[Override], intervals: &[TimeInterval]) -> Option<OnCall> {
        if let Some(o) = self.overrides.iter().chain(extra).rfind(|o| o.from <= t && t < o.until) {
            return Some(OnCall { schedule: self.name.clone(), person: o.person.clone(), from: o.from, until: o.until, is_override: true });
        }
        let (layer, k) = self.covering(t, intervals)?;
        let (from, until) = (self.handoff(layer, k), self.handoff(layer, k + 1));
        let (from, until) = if self.is_simple() {
            (from, until)
        } else {
            // Layers and restrictions cut shifts: find where this coverage starts and
            // ends, minute by minute (time intervals have minute resolution).
            let same = |at: DateTime<Utc>| self.covering(at, intervals) == Some((layer, k));
            let minute = |m: i64| t.duration_trunc(Duration::minutes(1)).unwrap_or(t) + Duration::minutes(m);
            let start = (1..SCAN_LIMIT_MINUTES).map(|m| minute(-m)).take_while(|at| *at >= from && same(*at)).last().unwrap_or(minute(0));
            let end = (1..SCAN_LIMIT_MINUTES).map(minute).find(|at| *at >= until || !same(*at)).unwrap_or(until);
            (start.max(from), end.min(until))
        };
        Some(OnCall { schedule: self.name.clone(), person: self.person(layer, k), from, until, is_override: false })
    }

    /// The rotations' stretches from `from` until `until` (at most `limit`), overrides
    /// not applied; stretches nobody covers are left out.
    pub fn shifts(&self, from: DateTime<Utc>, until: DateTime<Utc>, intervals: &[TimeInterval], limit: usize) -> Vec<OnCall> {
        let mut out: Vec<OnCall> = Vec::new();
        let mut t = from;
        while t < until && out.len() < limit {
            match self.on_call_at(t, &[], intervals) {
                Some(on) => {
                    t = on.until.max(t + Duration::minutes(1));
                    out.push(on);
                }
                None => {
                    // Nobody: move to the next minute some rotation covers.
                    let next = (1..SCAN_LIMIT_MINUTES).map(|m| t + Duration::minutes(m)).find(|at| self.covering(*at, intervals).is_some());
                    match next {
                        Some(n) => t = n,
                        None => break,
                    }
                }
            }
        }
        out
    }

    /// Who is on call from `from` until `until` as it will really be: the rotations'
    /// stretches with every override applied (configured ones, then `extra`), cut where
    /// an override starts or ends; at most `limit` stretches. Gaps nobody covers are
    /// left out. What the on-call page and the calendar feeds show.
    pub fn stretches(
        &self,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
        extra: &[Override],
        intervals: &[TimeInterval],
        limit: usize,
    ) -> Vec<OnCall> {
        let overrides: Vec<&Override> = self.overrides.iter().chain(extra).collect();
        // The next instant after `t` at which an override starts or ends: a stretch
        // computed at `t` may not cross it.
        let next_edge = |t: DateTime<Utc>| overrides.iter().flat_map(|o| [o.from, o.until]).filter(|e| *e > t).min();
        let mut out = Vec::new();
        let mut t = from;
        while t < until && out.len() < limit {
            match self.on_call_at(t, extra, intervals) {
                Some(mut on) => {
                    if let Some(edge) = next_edge(t) {
                        on.until = on.until.min(edge);
                    }
                    on.from = on.from.max(t).min(on.until);
                    let next = on.until.max(t + Duration::minutes(1));
                    out.push(on);
                    t = next;
                }
                None => {
                    // Nobody: on to the next minute a rotation covers, a rotation's first
                    // shift (maybe weeks away) or an override, whichever comes first.
                    let rotation =
                        (1..SCAN_LIMIT_MINUTES).map(|m| t + Duration::minutes(m)).find(|at| self.covering(*at, intervals).is_some());
                    let first_shift = (0..self.rotations.len()).map(|i| self.handoff(i, 0)).filter(|h| *h > t).min();
                    match [rotation, first_shift, next_edge(t)].into_iter().flatten().min() {
                        Some(n) => t = n,
                        None => break,
                    }
                }
            }
        }
        out
    }

    /// One rotation, always active: shift bounds are exact without scanning.
    fn is_simple(&self) -> bool {
        self.rotations.len() == 1 && self.rotations[0].active.is_empty()
    }

    /// The layer covering `t` and its shift index.
    fn covering(&self, t: DateTime<Utc>, intervals: &[TimeInterval]) -> Option<(usize, i64)> {
        self.rotations.iter().enumerate().rev().find_map(|(i, r)| {
            let active = r.active.is_empty() || intervals.iter().any(|ti| r.active.contains(&ti.name) && ti.contains(t));
            if !active {
                return None;
            }
            self.shift_at(i, t).map(|k| (i, k))
        })
    }

    fn person(&self, layer: usize, k: i64) -> String {
        let people = &self.rotations[layer].people;
        people[k.rem_euclid(people.len() as i64) as usize].clone()
    }

    /// The instant shift `k` of rotation `layer` starts.
    fn handoff(&self, layer: usize, k: i64) -> DateTime<Utc> {
        let r = &self.rotations[layer];
        let date = r.start + Duration::days(k * r.shift_days as i64);
        local_instant(&self.location, date.and_time(r.handoff))
    }

    /// The index of rotation `layer`'s shift covering `t`; `None` before its first.
    fn shift_at(&self, layer: usize, t: DateTime<Utc>) -> Option<i64> {
        let r = &self.rotations[layer];
        let n = r.shift_days.max(1) as i64;
        let local_date = t.with_timezone(&self.location).date_naive();
        let mut k = (local_date - r.start).num_days().div_euclid(n);
        // The date arithmetic is right to within one shift; the handoff instants decide.
        while t < self.handoff(layer, k) {
            k -= 1;
        }
        while t >= self.handoff(layer, k + 1) {
            k += 1;
        }
        (k >= 0).then_some(k)
    }
}

/// The instant a wall-clock time happens in `tz`: the first of two when clocks go
/// back, the moment the clocks jump when it is skipped.
pub fn local_instant(tz: &Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
        LocalResult::None => {
            // In a gap: the first wall-clock minute that exists is when the clocks jumped.
            (1..=24 * 60)
                .find_map(|m| tz.from_local_datetime(&(local + Duration::minutes(m))).earliest())
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_else(|| Utc.from_utc_datetime(&local))
        }
    }
}

/// `2026-12-24 09:00` in `tz`, or an RFC 3339 instant.
/// Times outside 1970 … 9999 are refused (see [`crate::bounds`]).
pub fn parse_instant(text: &str, tz: &Tz) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return crate::bounds::check(crate::clock::truncate(t.with_timezone(&Utc)));
    }
    for format in ["%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(local) = NaiveDateTime::parse_from_str(text, format) {
            if local.and_utc() < crate::bounds::earliest() || local.and_utc() > crate::bounds::latest() {
                return Err(format!("`{text}` is outside the accepted range 1970-01-01 … 9999-12-31"));
            }
            return crate::bounds::check(local_instant(tz, local));
        }
    }
    Err(format!("`{text}` is not a time; write `2026-12-24 09:00` (in the schedule's time zone) or RFC 3339 (`2026-12-24T09:00:00Z`)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn schedule(tz: &str, shift_days: u32, handoff: &str, start: &str) -> Schedule {
        Schedule {
            name: "primary".into(),
            location: tz.parse().unwrap(),
            rotations: vec![Rotation {
                people: vec!["alice".into(), "bob".into(), "carol".into()],
                shift_days,
                handoff: NaiveTime::parse_from_str(handoff, "%H:%M").unwrap(),
                start: NaiveDate::parse_from_str(start, "%Y-%m-%d").unwrap(),
                active: vec![],
            }],
            overrides: vec![],
        }
    }

    fn who(s: &Schedule, t: &str) -> String {
        s.on_call_at(utc(t), &[], &[]).map(|o| o.person).unwrap_or_else(|| "nobody".into())
    }

    #[test]
    fn stretches_apply_overrides_and_cut_shifts_where_they_start_and_end() {
        let s = schedule("UTC", 1, "09:00", "2026-03-01");
        let dave = Override { person: "dave".into(), from: utc("2026-03-02T12:00:00Z"), until: utc("2026-03-02T15:00:00Z") };
        let got: Vec<(String, String, String)> = s
            .stretches(utc("2026-03-02T10:00:00Z"), utc("2026-03-03T12:00:00Z"), &[dave], &[], 10)
            .into_iter()
            .map(|o| (o.person, o.from.format("%d %H:%M").to_string(), o.until.format("%d %H:%M").to_string()))
            .collect();
        let row = |p: &str, a: &str, b: &str| (p.to_string(), a.to_string(), b.to_string());
        assert_eq!(
            got,
            vec![
                row("bob", "02 10:00", "02 12:00"),
                row("dave", "02 12:00", "02 15:00"),
                row("bob", "02 15:00", "03 09:00"),
                row("carol", "03 09:00", "04 09:00"),
            ]
        );
        assert_eq!(s.stretches(utc("2026-03-02T10:00:00Z"), utc("2026-03-09T10:00:00Z"), &[], &[], 2).len(), 2, "the limit holds");
        // Before the first shift nobody is on call; an override there still counts.
        let early = Override { person: "erin".into(), from: utc("2026-02-20T00:00:00Z"), until: utc("2026-02-20T06:00:00Z") };
        let got = s.stretches(utc("2026-02-19T00:00:00Z"), utc("2026-03-01T10:00:00Z"), &[early], &[], 10);
        assert_eq!(got.iter().map(|o| o.person.as_str()).collect::<Vec<_>>(), ["erin", "alice"]);
    }

    #[test]
    fn daily_handoff_stays_at_local_time_across_spring_forward() {
        // New York springs forward on 2026-03-08 at 02:00 (EST -5 → EDT -4).
        let s = schedule("America/New_York", 1, "09:00", "2026-03-01");
        // 2026-03-07 is day 6 (alice on days 0,3,6): 09:00 EST = 14:00 UTC.
        assert_eq!(who(&s, "2026-03-07T13:59:00Z"), "carol");
        assert_eq!(who(&s, "2026-03-07T14:00:00Z"), "alice");
        // 2026-03-08 09:00 EDT = 13:00 UTC: a 23-hour shift for alice.
        assert_eq!(who(&s, "2026-03-08T12:59:00Z"), "alice");
        assert_eq!(who(&s, "2026-03-08T13:00:00Z"), "bob");
        let on = s.on_call_at(utc("2026-03-08T08:00:00Z"), &[], &[]).unwrap();
        assert_eq!((on.from, on.until), (utc("2026-03-07T14:00:00Z"), utc("2026-03-08T13:00:00Z")));
        // A UTC-based rotation would still show bob at 13:30 UTC the next day; the
        // handoff is 09:00 EDT = 13:00 UTC.
        assert_eq!(who(&s, "2026-03-09T12:59:00Z"), "bob");
        assert_eq!(who(&s, "2026-03-09T13:30:00Z"), "carol");
    }

    #[test]
    fn weekly_handoff_across_fall_back_makes_a_25_hour_day() {
        // New York falls back on 2026-11-01 (a Sunday) at 02:00 (EDT → EST).
        let s = schedule("America/New_York", 7, "09:00", "2026-10-05");
        // Shift 3 starts Monday 2026-10-26 09:00 EDT (13:00 UTC), shift 4 on
        // 2026-11-02 09:00 EST (14:00 UTC): a week of 7 × 24 h + 1 h.
        let on = s.on_call_at(utc("2026-10-30T00:00:00Z"), &[], &[]).unwrap();
        assert_eq!(on.person, "alice");
        assert_eq!((on.from, on.until), (utc("2026-10-26T13:00:00Z"), utc("2026-11-02T14:00:00Z")));
        assert_eq!(who(&s, "2026-11-02T13:30:00Z"), "alice");
        assert_eq!(who(&s, "2026-11-02T14:00:00Z"), "bob");
    }

    #[test]
    fn a_handoff_in_the_skipped_hour_happens_when_the_clocks_jump() {
        let s = schedule("America/New_York", 1, "02:30", "2026-03-01");
        // 02:30 does not exist on 2026-03-08: the handoff is at 03:00 EDT = 07:00 UTC.
        let on = s.on_call_at(utc("2026-03-08T07:00:00Z"), &[], &[]).unwrap();
        assert_eq!(on.from, utc("2026-03-08T07:00:00Z"));
        assert_eq!(on.until, utc("2026-03-09T06:30:00Z"));
        assert_eq!(who(&s, "2026-03-08T06:59:00Z"), "alice");
        assert_eq!(who(&s, "2026-03-08T07:00:00Z"), "bob");
    }

    #[test]
    fn a_repeated_handoff_time_happens_once() {
        let s = schedule("America/New_York", 1, "01:30", "2026-10-25");
        // 01:30 happens twice on 2026-11-01 (EDT at 05:30 UTC, EST at 06:30 UTC).
        let on = s.on_call_at(utc("2026-11-01T06:00:00Z"), &[], &[]).unwrap();
        assert_eq!(on.from, utc("2026-11-01T05:30:00Z"));
        assert_eq!(on.until, utc("2026-11-02T06:30:00Z"));
    }

    #[test]
    fn nobody_before_the_first_shift_and_overrides_win() {
        let mut s = schedule("Europe/Berlin", 1, "09:00", "2026-11-02");
        assert_eq!(who(&s, "2026-11-02T07:59:00Z"), "nobody");
        assert_eq!(who(&s, "2026-11-02T08:00:00Z"), "alice");
        s.overrides.push(Override { person: "dave".into(), from: utc("2026-11-02T12:00:00Z"), until: utc("2026-11-02T18:00:00Z") });
        assert_eq!(who(&s, "2026-11-02T11:59:00Z"), "alice");
        let on = s.on_call_at(utc("2026-11-02T12:00:00Z"), &[], &[]).unwrap();
        assert!(on.is_override);
        assert_eq!(on.person, "dave");
        let later = [Override { person: "erin".into(), from: utc("2026-11-02T13:00:00Z"), until: utc("2026-11-02T14:00:00Z") }];
        assert_eq!(s.on_call_at(utc("2026-11-02T13:30:00Z"), &later, &[]).unwrap().person, "erin");
        assert_eq!(who(&s, "2026-11-02T18:00:00Z"), "alice");
    }

    #[test]
    fn shifts_lists_consecutive_shifts() {
        let s = schedule("Europe/Berlin", 1, "09:00", "2026-03-27");
        // Berlin springs forward on 2026-03-29.
        let shifts = s.shifts(utc("2026-03-27T00:00:00Z"), utc("2026-03-31T00:00:00Z"), &[], 100);
        let people: Vec<_> = shifts.iter().map(|o| o.person.as_str()).collect();
        assert_eq!(people, ["alice", "bob", "carol", "alice"]);
        assert_eq!(shifts[2].from, utc("2026-03-29T07:00:00Z"));
        assert!(shifts.windows(2).all(|w| w[0].until == w[1].from));
    }

    #[test]
    fn a_business_hours_layer_cuts_the_round_the_clock_rotation() {
        use crate::alerting::time_interval::IntervalSpec;
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let business = TimeInterval {
            name: "business-hours".into(),
            specs: vec![IntervalSpec {
                times: vec![(9 * 60, 17 * 60)],
                weekdays: vec![(1, 5)],
                days_of_month: vec![],
                months: vec![],
                years: vec![],
                location: berlin,
            }],
        };
        let rotation = |people: &[&str], active: &[&str]| Rotation {
            people: people.iter().map(|p| p.to_string()).collect(),
            shift_days: 7,
            handoff: NaiveTime::from_hms_opt(9, 0, 0).unwrap(),
            start: NaiveDate::from_ymd_opt(2026, 11, 2).unwrap(),
            active: active.iter().map(|a| a.to_string()).collect(),
        };
        let s = Schedule {
            name: "primary".into(),
            location: berlin,
            rotations: vec![rotation(&["nina", "otto"], &[]), rotation(&["dora"], &["business-hours"])],
            overrides: vec![],
        };
        let at = |t: &str| s.on_call_at(utc(t), &[], std::slice::from_ref(&business)).unwrap();
        // Monday 2026-11-09 10:00 CET (09:00 UTC): the day layer.
        let day = at("2026-11-09T09:00:00Z");
        assert_eq!(day.person, "dora");
        assert_eq!((day.from, day.until), (utc("2026-11-09T08:00:00Z"), utc("2026-11-09T16:00:00Z")));
        // The same evening: the night rotation's week-2 person, until the next morning.
        let night = at("2026-11-09T18:00:00Z");
        assert_eq!(night.person, "otto");
        assert_eq!((night.from, night.until), (utc("2026-11-09T16:00:00Z"), utc("2026-11-10T08:00:00Z")));
        // Saturday 10:00: no business hours, the night rotation all day.
        assert_eq!(at("2026-11-14T09:00:00Z").person, "otto");
        let shifts = s.shifts(utc("2026-11-09T07:00:00Z"), utc("2026-11-10T12:00:00Z"), std::slice::from_ref(&business), 10);
        let people: Vec<_> = shifts.iter().map(|o| o.person.as_str()).collect();
        assert_eq!(people, ["nina", "dora", "otto", "dora"], "{shifts:#?}");
        assert!(shifts.windows(2).all(|w| w[0].until == w[1].from));
    }

    #[test]
    fn instants_parse_in_the_schedule_zone() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        assert_eq!(parse_instant("2026-12-24 09:00", &tz).unwrap(), utc("2026-12-24T08:00:00Z"));
        assert_eq!(parse_instant("2026-12-24T09:00:00Z", &tz).unwrap(), utc("2026-12-24T09:00:00Z"));
        assert!(parse_instant("tomorrow", &tz).is_err());
    }
}
