//! On call: who is on call now and next per schedule, a week of stretches, overrides,
//! "my shifts", and an iCal feed per schedule and per person behind a secret URL.
//!
//! Calendar apps cannot sign in, so a feed's URL carries its own proof: an HMAC over
//! `schedule:NAME` or `person:NAME` with the `calendar-feeds` server key. Anyone with the
//! URL reads that one feed (who is on call when — nothing else); rotating the key
//! (`steward keys rotate calendar-feeds`) revokes every URL at once.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Duration, Utc};
use icalendar::{Calendar, Component, Event, EventLike};
use minijinja::{Value, context};
use serde::Deserialize;

use super::session::Signed;
use super::view::{PageError, Posted, page};
use crate::api::AppState;
use crate::auth::Role;
use crate::config::Config;
use crate::incidents::oncall::{self, OnCall, Override};

/// The store's name of the key that signs feed URLs.
pub(crate) const FEED_KEY: &str = "calendar-feeds";
/// How far ahead a feed and the page look.
const FEED_DAYS: i64 = 60;
const WEEK_DAYS: i64 = 7;

fn feed_mac(key: &[u8], kind: &str, name: &str) -> String {
    hex::encode(crate::incidents::ack_link::hmac(key, format!("{kind}:{name}").as_bytes()))
}

/// Every stretch from `from` until `until` of every schedule (or of one), overrides
/// made at runtime included.
async fn stretches(s: &AppState, config: &Config, from: DateTime<Utc>, until: DateTime<Utc>) -> Result<Vec<OnCall>, PageError> {
    let stored = s.engine.store.overrides(from - Duration::days(1)).await?;
    let mut out = Vec::new();
    for sc in &config.incidents.schedules {
        let extra: Vec<Override> = stored.iter().filter(|(n, _)| *n == sc.name).map(|(_, o)| o.clone()).collect();
        out.extend(sc.stretches(from, until, &extra, &config.time_intervals, 500));
    }
    Ok(out)
}

pub(super) async fn show(State(s): State<Arc<AppState>>, Extension(who): Extension<Signed>) -> Result<Response, PageError> {
    let config = s.engine.config();
    let now = crate::clock::now();
    let week = stretches(&s, &config, now, now + Duration::days(WEEK_DAYS)).await?;
    let key = s.engine.store.server_key(FEED_KEY).await?;
    let base = s.engine.external_url();
    let schedules: Vec<Value> = config
        .incidents
        .schedules
        .iter()
        .map(|sc| {
            let mine: Vec<&OnCall> = week.iter().filter(|o| o.schedule == sc.name).collect();
            context! {
                name => sc.name,
                time_zone => sc.location.name(),
                now => Value::from_serialize(mine.iter().find(|o| o.from <= now && now < o.until)),
                next => Value::from_serialize(mine.iter().find(|o| o.from > now)),
                week => Value::from_serialize(&mine),
                feed => format!("{base}/console/calendar/schedule/{}/{}.ics", sc.name, feed_mac(&key, "schedule", &sc.name)),
            }
        })
        .collect();
    let me = who.token.name.clone();
    let my_shifts: Vec<&OnCall> = week.iter().filter(|o| o.person == me).collect();
    let people: BTreeSet<String> =
        config.incidents.people.iter().map(|p| p.name.clone()).chain(week.iter().map(|o| o.person.clone())).collect();
    let feeds: Vec<(String, String)> =
        people.iter().map(|p| (p.clone(), format!("{base}/console/calendar/person/{p}/{}.ics", feed_mac(&key, "person", p)))).collect();
    let ctx = context! {
        schedules,
        my_shifts => Value::from_serialize(&my_shifts),
        me_in_rota => people.contains(&me),
        feeds,
        people => people.iter().cloned().collect::<Vec<_>>(),
    };
    page(&who, "oncall", "oncall.html", ctx)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OverrideForm {
    person: String,
    from: String,
    until: String,
}

/// Someone takes a stretch of a schedule (times in the schedule's zone).
pub(super) async fn add_override(
    State(s): State<Arc<AppState>>,
    Extension(who): Extension<Signed>,
    Path(name): Path<String>,
    Posted(f): Posted<OverrideForm>,
) -> Result<Response, PageError> {
    who.require(Role::Operator)?;
    let config = s.engine.config();
    let schedule = config.incidents.schedule(&name).ok_or_else(|| PageError::not_found("schedule", &name))?;
    if config.incidents.person(f.person.trim()).is_none() {
        return Err(PageError::new(
            StatusCode::BAD_REQUEST,
            format!("`{}` is not under incidents.people, so steward could not reach them", f.person),
        ));
    }
    // `<input type="datetime-local">` sends `2026-12-24T09:00`.
    let parse = |field: &str, text: &str| {
        oncall::parse_instant(&text.replacen('T', " ", 1), &schedule.location)
            .map_err(|e| PageError::new(StatusCode::BAD_REQUEST, format!("`{field}`: {e}")))
    };
    let o = Override { person: f.person.trim().to_string(), from: parse("from", &f.from)?, until: parse("until", &f.until)? };
    if o.until <= o.from {
        return Err(PageError::new(StatusCode::BAD_REQUEST, "`until` must be after `from`"));
    }
    s.engine.store.add_override(&name, &o, &who.token.name).await?;
    tracing::info!(schedule = %name, person = %o.person, from = %o.from, until = %o.until, by = %who.token.name, "on-call override added in the console");
    Ok(Redirect::to("/console/oncall").into_response())
}

/// `GET /console/calendar/{schedule|person}/{name}/{mac}.ics`: no session, the URL is
/// the secret. A wrong or stale MAC is 404, like a feed that does not exist.
pub(super) async fn feed(
    State(s): State<Arc<AppState>>,
    Path((kind, name, file)): Path<(String, String, String)>,
) -> Result<Response, PageError> {
    let not_found = || {
        PageError::new(StatusCode::NOT_FOUND, "no such calendar feed (its URL may have been rotated; copy it again from the on-call page)")
    };
    let mac = file.strip_suffix(".ics").ok_or_else(not_found)?;
    if !matches!(kind.as_str(), "schedule" | "person") {
        return Err(not_found());
    }
    let key = s.engine.store.server_key(FEED_KEY).await?;
    let expected = feed_mac(&key, &kind, &name);
    if !super::session::constant_time_eq(mac.as_bytes(), expected.as_bytes()) {
        return Err(not_found());
    }
    let config = s.engine.config();
    if kind == "schedule" && config.incidents.schedule(&name).is_none() {
        return Err(not_found());
    }
    let now = crate::clock::now();
    let all = stretches(&s, &config, now - Duration::days(7), now + Duration::days(FEED_DAYS)).await?;
    let chosen: Vec<&OnCall> = all.iter().filter(|o| if kind == "schedule" { o.schedule == name } else { o.person == name }).collect();
    let title = if kind == "schedule" { format!("On call: {name}") } else { format!("On call: {name}'s shifts") };
    Ok(([(header::CONTENT_TYPE, "text/calendar; charset=utf-8")], calendar(&title, &chosen, now)).into_response())
}

/// RFC 5545 text (through the `icalendar` crate: escaping, folding, CRLF).
fn calendar(title: &str, stretches: &[&OnCall], now: DateTime<Utc>) -> String {
    let mut cal = Calendar::new();
    cal.name(title);
    for o in stretches {
        let what = if o.is_override { " (override)" } else { "" };
        cal.push(
            Event::new()
                // Stable across fetches, so calendar apps update events instead of duplicating them.
                .uid(&format!("{}-{}-{}@steward", o.schedule, o.person, o.from.timestamp()))
                .summary(&format!("{} on call: {}{what}", o.person, o.schedule))
                .timestamp(now)
                .starts(o.from)
                .ends(o.until)
                .done(),
        );
    }
    cal.done().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feeds_are_signed_per_kind_and_name() {
        let key = [7u8; 32];
        assert_eq!(feed_mac(&key, "person", "alice"), feed_mac(&key, "person", "alice"));
        assert_ne!(feed_mac(&key, "person", "alice"), feed_mac(&key, "schedule", "alice"));
        assert_ne!(feed_mac(&key, "person", "alice"), feed_mac(&[8u8; 32], "person", "alice"));
    }

    #[test]
    fn calendars_hold_one_event_per_stretch() {
        let t = |h: i64| DateTime::from_timestamp(1_800_000_000 + h * 3600, 0).unwrap();
        let a = OnCall { schedule: "primary".into(), person: "alice".into(), from: t(0), until: t(24), is_override: false };
        let b = OnCall { schedule: "primary".into(), person: "bob, jr".into(), from: t(24), until: t(30), is_override: true };
        let text = calendar("On call: primary", &[&a, &b], t(0));
        assert!(text.starts_with("BEGIN:VCALENDAR\r\n") && text.trim_end().ends_with("END:VCALENDAR"), "{text}");
        assert_eq!(text.matches("BEGIN:VEVENT").count(), 2);
        assert!(text.contains("SUMMARY:bob\\, jr on call: primary (override)"), "text is escaped: {text}");
        assert!(text.contains(&format!("DTSTART:{}", t(24).format("%Y%m%dT%H%M%SZ"))), "{text}");
    }
}
