//! `time_intervals` (Alertmanager's shape, used by routes and maintenance windows) and
//! `maintenance_windows`.

use super::alerting::{AlertingRefs, matchers};
use super::decode::{self as de, Fields};
use super::diagnostics::{Diagnostic, Diagnostics};
use super::yaml::Node;
use crate::alerting::time_interval::{self as ti, IntervalSpec, MaintenanceWindow, TimeInterval, WindowSchedule};

const SPEC_KEYS: &[&str] = &["times", "weekdays", "days_of_month", "months", "years", "location"];

pub(super) fn time_interval(node: &Node, d: &mut Diagnostics, refs: &mut AlertingRefs) -> Option<TimeInterval> {
    let mut f = Fields::of(node, "a time interval", d)?;
    let name = f.require("name", d).and_then(|n| {
        let s = de::string(n, "the time interval name", d)?;
        refs.intervals.push((s.clone(), n.pos.clone()));
        Some(s)
    });
    let what = name.as_ref().map_or("the time interval".to_string(), |n| format!("time interval `{n}`"));
    let specs = f.require("time_intervals", d).and_then(|n| {
        let items = de::list(n, &format!("{what} time_intervals"), d)?;
        let specs: Vec<_> = items.iter().map(|i| spec(i, &what, d)).collect();
        specs.into_iter().collect::<Option<Vec<_>>>()
    });
    f.finish(&["name", "time_intervals"], d);
    Some(TimeInterval { name: name?, specs: specs? })
}

fn spec(node: &Node, what: &str, d: &mut Diagnostics) -> Option<IntervalSpec> {
    let mut f = Fields::of(node, format!("an interval of {what}"), d)?;
    let times = f.take("times").map_or(Some(vec![]), |n| {
        let items = de::list(n, &format!("{what} times"), d)?;
        let mut out = Vec::new();
        let mut ok = true;
        for item in items {
            let Some(mut t) = Fields::of(item, format!("a `times` entry of {what}"), d) else {
                ok = false;
                continue;
            };
            let mut clock = |key: &str, is_end: bool, d: &mut Diagnostics| {
                let n = t.require(key, d)?;
                let s = de::text(n, &format!("{what} {key}"), d)?;
                ti::parse_clock(&s, is_end).map_err(|e| d.push(Diagnostic::error(n.pos.clone(), format!("{what} {key}: {e}")))).ok()
            };
            let (start, end) = (clock("start_time", false, d), clock("end_time", true, d));
            t.finish(&["start_time", "end_time"], d);
            match (start, end) {
                (Some(s), Some(e)) if s < e => out.push((s, e)),
                (Some(_), Some(_)) => {
                    ok = false;
                    d.push(
                        Diagnostic::error(item.pos.clone(), format!("{what}: end_time must be after start_time"))
                            .with_hint("an interval across midnight is two entries, e.g. 22:00–24:00 and 00:00–06:00"),
                    );
                }
                _ => ok = false,
            }
        }
        ok.then_some(out)
    });
    let weekdays = ranges(f.take("weekdays"), what, "weekdays", ti::parse_weekdays, d);
    let days_of_month = ranges(f.take("days_of_month"), what, "days_of_month", ti::parse_days_of_month, d);
    let months = ranges(f.take("months"), what, "months", ti::parse_months, d);
    let years = ranges(f.take("years"), what, "years", ti::parse_years, d);
    let location = location(f.take("location"), what, d);
    f.finish(SPEC_KEYS, d);
    Some(IntervalSpec {
        times: times?,
        weekdays: weekdays?,
        days_of_month: days_of_month?,
        months: months?,
        years: years?,
        location: location?,
    })
}

fn location(node: Option<&Node>, what: &str, d: &mut Diagnostics) -> Option<chrono_tz::Tz> {
    let Some(n) = node else { return Some(chrono_tz::Tz::UTC) };
    let s = de::string(n, &format!("{what} location"), d)?;
    ti::parse_location(&s).map_err(|e| d.push(Diagnostic::error(n.pos.clone(), format!("{what} location: {e}")))).ok()
}

fn ranges<T>(
    node: Option<&Node>,
    what: &str,
    key: &str,
    parse: impl Fn(&str) -> Result<(T, T), String>,
    d: &mut Diagnostics,
) -> Option<Vec<(T, T)>> {
    let Some(node) = node else { return Some(vec![]) };
    let items = de::list(node, &format!("{what} {key}"), d)?;
    let mut out = Vec::new();
    let mut ok = true;
    for item in items {
        let Some(text) = de::text(item, &format!("{what} {key}"), d) else {
            ok = false;
            continue;
        };
        match parse(&text) {
            Ok(r) => out.push(r),
            Err(e) => {
                ok = false;
                d.push(Diagnostic::error(item.pos.clone(), format!("{what} {key}: {e}")));
            }
        }
    }
    ok.then_some(out)
}

pub(super) fn maintenance_window(node: &Node, d: &mut Diagnostics, refs: &mut AlertingRefs) -> Option<MaintenanceWindow> {
    let mut f = Fields::of(node, "a maintenance window", d)?;
    let name = f.require("name", d).and_then(|n| {
        let s = de::string(n, "the maintenance window name", d)?;
        refs.windows.push((s.clone(), n.pos.clone()));
        Some(s)
    });
    let what = name.as_ref().map_or("the maintenance window".to_string(), |n| format!("maintenance window `{n}`"));
    let matchers = f.require("matchers", d).and_then(|n| {
        let m = matchers(n, &format!("{what} matchers"), d)?;
        if m.is_empty() {
            d.push(
                Diagnostic::error(n.pos.clone(), format!("{what} has no matchers, so it would mute every alert"))
                    .with_hint(r#"scope it, e.g. matchers: ['service="cassandra"']"#),
            );
            return None;
        }
        Some(m)
    });
    let comment = f.take("comment").and_then(|n| de::string(n, &format!("{what} comment"), d));
    let schedule = match (f.take("schedule"), f.take("time_intervals")) {
        (Some(s), None) => {
            let cron = de::string(s, &format!("{what} schedule"), d).and_then(|text| match crate::cron::parse_cron(&text) {
                Ok(c) => Some(Box::new(c)),
                Err(e) => {
                    d.push(
                        Diagnostic::error(s.pos.clone(), format!("{what} schedule `{text}`: {e}"))
                            .with_hint("write a cron expression: minute hour day-of-month month day-of-week, e.g. `0 2 * * SUN`"),
                    );
                    None
                }
            });
            let duration = match f.take("duration") {
                Some(n) => de::duration(n, &format!("{what} duration"), d).filter(|v| {
                    let ok = !v.is_zero();
                    if !ok {
                        d.push(Diagnostic::error(n.pos.clone(), format!("{what} duration must be longer than zero")));
                    }
                    ok
                }),
                None => {
                    d.push(
                        Diagnostic::error(s.pos.clone(), format!("{what} has a schedule but no duration"))
                            .with_hint("add e.g. `duration: 2h`: how long each occurrence lasts"),
                    );
                    None
                }
            };
            let location = location(f.take("location"), &what, d);
            Some(WindowSchedule::Cron { cron: cron?, duration: duration?, location: location? })
        }
        (None, Some(n)) => {
            let names = de::string_list(n, &format!("{what} time_intervals"), d)?;
            refs.intervals_used.extend(names.iter().map(|s| (s.clone(), n.pos.clone())));
            Some(WindowSchedule::Intervals(names))
        }
        (Some(_), Some(_)) => {
            d.push(
                Diagnostic::error(node.pos.clone(), format!("{what} has both `schedule` and `time_intervals`"))
                    .with_hint("use one: a cron `schedule` with a `duration`, or named `time_intervals`"),
            );
            None
        }
        (None, None) => {
            d.push(
                Diagnostic::error(node.pos.clone(), format!("{what} says nowhere when it is open"))
                    .with_hint("add `schedule: \"0 2 * * SUN\"` with `duration: 2h` (and `location:`), or `time_intervals: [NAME]`"),
            );
            None
        }
    };
    f.finish(&["name", "matchers", "comment", "schedule", "duration", "location", "time_intervals"], d);
    Some(MaintenanceWindow { name: name?, matchers: matchers?, comment, schedule: schedule? })
}

/// The interval names of a route's `mute_time_intervals` / `active_time_intervals`.
pub(super) fn route_intervals(node: &Node, what: &str, d: &mut Diagnostics, refs: &mut AlertingRefs) -> Option<Vec<String>> {
    let names = de::string_list(node, what, d)?;
    refs.intervals_used.extend(names.iter().map(|s| (s.clone(), node.pos.clone())));
    Some(names)
}
