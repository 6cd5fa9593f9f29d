//! Time intervals (Alertmanager's `time_intervals`) and maintenance windows.
//!
//! Every field is matched against the wall clock of the interval's `location`, so
//! "09:00–17:00 Monday to Friday in Europe/Paris" means that whatever the UTC offset
//! of the day: the window moves in UTC across DST changes, as people expect. A wall
//! time repeated when clocks go back matches both times; one skipped when they go
//! forward never occurs.

use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};
use chrono_tz::Tz;

use super::matcher::{Labels, Matcher, matches_all};

/// A named set of intervals; active when any of them contains the instant.
#[derive(Debug, Clone)]
pub struct TimeInterval {
    pub name: String,
    pub specs: Vec<IntervalSpec>,
}

impl TimeInterval {
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.specs.iter().any(|s| s.contains(t))
    }
}

/// One interval: every non-empty field must match (an empty field matches anything).
#[derive(Debug, Clone)]
pub struct IntervalSpec {
    /// Minutes since local midnight, `[start, end)`.
    pub times: Vec<(u32, u32)>,
    /// Inclusive ranges, 0 = Sunday … 6 = Saturday.
    pub weekdays: Vec<(u32, u32)>,
    /// Inclusive ranges; negative days count from the end of the month (-1 = last).
    pub days_of_month: Vec<(i32, i32)>,
    /// Inclusive ranges, 1 = January.
    pub months: Vec<(u32, u32)>,
    pub years: Vec<(i32, i32)>,
    pub location: Tz,
}

impl IntervalSpec {
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        let local = t.with_timezone(&self.location);
        let in_ranges = |ranges: &[(u32, u32)], v: u32| ranges.is_empty() || ranges.iter().any(|(a, b)| (*a..=*b).contains(&v));
        let minute = local.hour() * 60 + local.minute();
        let times_ok = self.times.is_empty() || self.times.iter().any(|(a, b)| (*a..*b).contains(&minute));
        let month_len = days_in_month(local.year(), local.month()) as i32;
        let absolute = |d: i32| if d < 0 { month_len + d + 1 } else { d };
        let day = local.day() as i32;
        let days_ok = self.days_of_month.is_empty() || self.days_of_month.iter().any(|(a, b)| (absolute(*a)..=absolute(*b)).contains(&day));
        let years_ok = self.years.is_empty() || self.years.iter().any(|(a, b)| (*a..=*b).contains(&local.year()));
        times_ok
            && days_ok
            && years_ok
            && in_ranges(&self.weekdays, local.weekday().num_days_from_sunday())
            && in_ranges(&self.months, local.month())
    }
}

fn days_in_month(year: i32, month: u32) -> u32 {
    let (y, m) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
    NaiveDate::from_ymd_opt(y, m, 1).and_then(|d| d.pred_opt()).map_or(31, |d| d.day())
}

const WEEKDAYS: &[&str] = &["sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"];
const MONTHS: &[&str] =
    &["january", "february", "march", "april", "may", "june", "july", "august", "september", "october", "november", "december"];

/// `HH:MM`, minutes since midnight; `24:00` only as an end.
pub fn parse_clock(s: &str, is_end: bool) -> Result<u32, String> {
    let bad = || format!("`{s}` is not a time of day; write HH:MM, e.g. 09:00 or 17:30");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    match (h, m) {
        (24, 0) if is_end => Ok(24 * 60),
        (0..=23, 0..=59) => Ok(h * 60 + m),
        _ => Err(bad()),
    }
}

/// One item of a `weekdays`, `months`, `days_of_month` or `years` list: a value or an
/// inclusive `start:end` range.
fn parse_range<T: PartialOrd + Copy>(item: &str, one: impl Fn(&str) -> Result<T, String>) -> Result<(T, T), String> {
    let (a, b) = match item.split_once(':') {
        Some((a, b)) => (one(a.trim())?, one(b.trim())?),
        None => {
            let v = one(item.trim())?;
            (v, v)
        }
    };
    if a > b {
        return Err(format!("the range `{item}` ends before it starts"));
    }
    Ok((a, b))
}

fn named(list: &[&str], s: &str, first: u32, what: &str) -> Result<u32, String> {
    let lower = s.to_ascii_lowercase();
    if let Some(i) = list.iter().position(|n| *n == lower) {
        return Ok(i as u32 + first);
    }
    match s.parse::<u32>() {
        Ok(n) if (first..first + list.len() as u32).contains(&n) => Ok(n),
        _ => Err(format!("`{s}` is not a {what}; use {} … {}", list[0], list[list.len() - 1])),
    }
}

pub fn parse_weekdays(item: &str) -> Result<(u32, u32), String> {
    parse_range(item, |s| {
        let lower = s.to_ascii_lowercase();
        WEEKDAYS.iter().position(|n| *n == lower).map(|i| i as u32).ok_or_else(|| format!("`{s}` is not a weekday; use sunday … saturday"))
    })
    .map_err(|e| {
        if e.contains("ends before") { format!("{e}; weeks start on sunday, so list both parts, e.g. [saturday, sunday]") } else { e }
    })
}

pub fn parse_months(item: &str) -> Result<(u32, u32), String> {
    parse_range(item, |s| named(MONTHS, s, 1, "month"))
}

pub fn parse_days_of_month(item: &str) -> Result<(i32, i32), String> {
    let (a, b) = match item.split_once(':') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (item.trim(), item.trim()),
    };
    let day = |s: &str| match s.parse::<i32>() {
        Ok(d) if (1..=31).contains(&d) || (-31..=-1).contains(&d) => Ok(d),
        _ => Err(format!("`{s}` is not a day of the month; use 1 … 31, or -1 for the last day")),
    };
    let (a, b) = (day(a)?, day(b)?);
    if a.signum() == b.signum() && a > b {
        return Err(format!("the range `{item}` ends before it starts"));
    }
    Ok((a, b))
}

pub fn parse_years(item: &str) -> Result<(i32, i32), String> {
    parse_range(item, |s| s.parse::<i32>().ok().filter(|y| (1970..=9999).contains(y)).ok_or_else(|| format!("`{s}` is not a year")))
}

pub fn parse_location(s: &str) -> Result<Tz, String> {
    if s.eq_ignore_ascii_case("local") {
        return Err("`Local` depends on where steward happens to run; name the zone, e.g. Europe/Paris or UTC".into());
    }
    s.parse::<Tz>().map_err(|_| format!("`{s}` is not an IANA time zone; use a name such as UTC, Europe/Paris or America/New_York"))
}

/// A recurring window in which matching alerts are muted (they are still evaluated,
/// recorded and visible, with the window named as the reason).
#[derive(Debug, Clone)]
pub struct MaintenanceWindow {
    pub name: String,
    pub matchers: Vec<Matcher>,
    pub comment: Option<String>,
    pub schedule: WindowSchedule,
}

#[derive(Debug, Clone)]
pub enum WindowSchedule {
    /// Starts at each cron occurrence (in `location`'s wall clock) and lasts `duration`.
    Cron { cron: Box<croner::Cron>, duration: Duration, location: Tz },
    /// Active whenever one of these named time intervals is.
    Intervals(Vec<String>),
}

impl MaintenanceWindow {
    /// When the occurrence containing `now` ends, if the window is open.
    pub fn open_until(&self, now: DateTime<Utc>, intervals: &[TimeInterval]) -> Option<Option<DateTime<Utc>>> {
        match &self.schedule {
            WindowSchedule::Cron { cron, duration, location } => {
                let start = crate::cron::occurrence_covering(cron, *location, *duration, now)?;
                Some(Some(start + chrono::Duration::from_std(*duration).unwrap_or_default()))
            }
            WindowSchedule::Intervals(names) => {
                intervals.iter().filter(|i| names.contains(&i.name)).any(|i| i.contains(now)).then_some(None)
            }
        }
    }

    pub fn mutes(&self, labels: &Labels, now: DateTime<Utc>, intervals: &[TimeInterval]) -> bool {
        matches_all(&self.matchers, labels) && self.open_until(now, intervals).is_some()
    }

    /// The next start after `now` (cron windows only).
    pub fn next_start(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.schedule {
            WindowSchedule::Cron { cron, location, .. } => crate::cron::next_fire(cron, *location, now),
            WindowSchedule::Intervals(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn business_hours(zone: &str) -> IntervalSpec {
        IntervalSpec {
            times: vec![(parse_clock("09:00", false).unwrap(), parse_clock("17:00", true).unwrap())],
            weekdays: vec![parse_weekdays("monday:friday").unwrap()],
            days_of_month: vec![],
            months: vec![],
            years: vec![],
            location: parse_location(zone).unwrap(),
        }
    }

    #[test]
    fn business_hours_follow_the_wall_clock_across_dst() {
        let ny = business_hours("America/New_York");
        // Friday 2026-03-06, EST (UTC-5): 09:00 local is 14:00 UTC.
        assert!(!ny.contains(at("2026-03-06T13:59:00Z")));
        assert!(ny.contains(at("2026-03-06T14:00:00Z")));
        assert!(ny.contains(at("2026-03-06T21:59:00Z")));
        assert!(!ny.contains(at("2026-03-06T22:00:00Z")));
        // Monday 2026-03-09, after the spring-forward on the 8th, EDT (UTC-4): 09:00 is 13:00 UTC.
        assert!(ny.contains(at("2026-03-09T13:00:00Z")));
        assert!(!ny.contains(at("2026-03-09T12:59:00Z")));
        assert!(!ny.contains(at("2026-03-09T21:00:00Z")));
        // The weekend in between never matches.
        assert!(!ny.contains(at("2026-03-07T15:00:00Z")));
        assert!(!ny.contains(at("2026-03-08T15:00:00Z")));
    }

    #[test]
    fn repeated_and_skipped_wall_times() {
        // 01:00–02:00 in New York: on 2026-11-01 clocks go back at 02:00 EDT, so that
        // hour happens twice (05:00–06:00Z and 06:00–07:00Z); on 2026-03-08 02:00–03:00
        // never happens.
        let spec = IntervalSpec {
            times: vec![(60, 120)],
            weekdays: vec![],
            days_of_month: vec![],
            months: vec![],
            years: vec![],
            location: parse_location("America/New_York").unwrap(),
        };
        assert!(spec.contains(at("2026-11-01T05:30:00Z")));
        assert!(spec.contains(at("2026-11-01T06:30:00Z")));
        assert!(!spec.contains(at("2026-11-01T07:30:00Z")));
        let skipped = IntervalSpec { times: vec![(120, 180)], ..spec };
        assert!(!skipped.contains(at("2026-03-08T06:59:00Z")), "01:59 EST");
        assert!(!skipped.contains(at("2026-03-08T07:00:00Z")), "03:00 EDT: 02:xx never existed");
    }

    #[test]
    fn negative_days_count_from_the_end_of_the_month() {
        let last_days = IntervalSpec {
            times: vec![],
            weekdays: vec![],
            days_of_month: vec![parse_days_of_month("-2:-1").unwrap()],
            months: vec![],
            years: vec![],
            location: Tz::UTC,
        };
        assert!(last_days.contains(at("2028-02-28T12:00:00Z")), "leap year: 28 and 29 are the last two");
        assert!(last_days.contains(at("2028-02-29T12:00:00Z")));
        assert!(!last_days.contains(at("2028-02-27T12:00:00Z")));
        assert!(last_days.contains(at("2026-04-29T00:00:00Z")));
        assert!(!last_days.contains(at("2026-04-28T23:59:00Z")));
    }

    #[test]
    fn field_errors_say_what_to_write() {
        assert!(parse_clock("9:00", false).unwrap_err().contains("HH:MM"));
        assert!(parse_clock("24:00", false).is_err());
        assert_eq!(parse_clock("24:00", true).unwrap(), 1440);
        assert!(parse_weekdays("saturday:sunday").unwrap_err().contains("[saturday, sunday]"));
        assert!(parse_weekdays("funday").unwrap_err().contains("not a weekday"));
        assert_eq!(parse_months("march:5").unwrap(), (3, 5));
        assert!(parse_days_of_month("0").is_err());
        assert!(parse_location("Local").is_err());
        assert!(parse_location("Mars/Olympus").unwrap_err().contains("IANA"));
    }

    #[test]
    fn cron_windows_open_for_their_duration_in_their_zone() {
        let w = MaintenanceWindow {
            name: "cassandra-repair".into(),
            matchers: vec![Matcher::parse(r#"service="cassandra""#).unwrap()],
            comment: None,
            schedule: WindowSchedule::Cron {
                cron: Box::new("0 2 * * SUN".parse().unwrap()),
                duration: Duration::from_secs(2 * 3600),
                location: Tz::UTC,
            },
        };
        // Sunday 2026-11-22.
        assert_eq!(w.open_until(at("2026-11-22T01:59:59Z"), &[]), None);
        assert_eq!(w.open_until(at("2026-11-22T02:00:00Z"), &[]), Some(Some(at("2026-11-22T04:00:00Z"))));
        assert!(w.open_until(at("2026-11-22T03:59:59Z"), &[]).is_some());
        assert_eq!(w.open_until(at("2026-11-22T04:00:00Z"), &[]), None);
        assert_eq!(w.next_start(at("2026-11-22T04:00:00Z")), Some(at("2026-11-29T02:00:00Z")));
        let cassandra: Labels = [("service".to_string(), "cassandra".to_string())].into();
        let other: Labels = [("service".to_string(), "api".to_string())].into();
        assert!(w.mutes(&cassandra, at("2026-11-22T03:00:00Z"), &[]));
        assert!(!w.mutes(&other, at("2026-11-22T03:00:00Z"), &[]));
        // In Europe/Paris, 02:00 local is 01:00Z in winter and 00:00Z in summer.
        let paris = MaintenanceWindow {
            schedule: WindowSchedule::Cron {
                cron: Box::new("0 2 * * SUN".parse().unwrap()),
                duration: Duration::from_secs(3600),
                location: parse_location("Europe/Paris").unwrap(),
            },
            ..w
        };
        assert!(paris.open_until(at("2026-11-22T01:30:00Z"), &[]).is_some());
        assert!(paris.open_until(at("2026-06-07T00:30:00Z"), &[]).is_some());
        assert!(paris.open_until(at("2026-06-07T01:30:00Z"), &[]).is_none());
    }
}

#[cfg(test)]
mod cron_dst {
    use super::*;

    fn window(cron: &str) -> MaintenanceWindow {
        MaintenanceWindow {
            name: "nightly".into(),
            matchers: vec![],
            comment: None,
            schedule: WindowSchedule::Cron {
                cron: Box::new(cron.parse().unwrap()),
                duration: Duration::from_secs(1800),
                location: parse_location("America/New_York").unwrap(),
            },
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_window_in_the_skipped_hour_opens_when_the_clock_resumes() {
        // 02:30 does not exist in New York on 2026-03-08; like cron, the window opens
        // at 03:00 EDT (07:00Z) instead of being skipped that night.
        let w = window("30 2 * * *");
        assert_eq!(w.next_start(at("2026-03-08T05:00:00Z")), Some(at("2026-03-08T07:00:00Z")));
        assert_eq!(w.open_until(at("2026-03-08T07:10:00Z"), &[]), Some(Some(at("2026-03-08T07:30:00Z"))));
        // The next night is back to 02:30 EDT = 06:30Z.
        assert_eq!(w.next_start(at("2026-03-08T08:00:00Z")), Some(at("2026-03-09T06:30:00Z")));
    }

    #[test]
    fn a_window_in_the_repeated_hour_opens_once() {
        // 01:30 happens twice in New York on 2026-11-01 (EDT, then EST): one window.
        let w = window("30 1 * * *");
        assert_eq!(w.next_start(at("2026-11-01T04:00:00Z")), Some(at("2026-11-01T05:30:00Z")));
        assert!(w.open_until(at("2026-11-01T05:40:00Z"), &[]).is_some());
        assert_eq!(w.open_until(at("2026-11-01T06:40:00Z"), &[]), None, "01:40 EST, the second pass, is not a new window");
        assert_eq!(w.next_start(at("2026-11-01T06:00:00Z")), Some(at("2026-11-02T06:30:00Z")));
    }
}
