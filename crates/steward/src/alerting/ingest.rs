//! Alerts received in Alertmanager's webhook payload (version 4), so teams already on
//! Prometheus + Alertmanager can route their alerts through steward's routing,
//! silences, inhibition and dependencies.
//!
//! A payload is validated whole before anything changes: one bad alert refuses the
//! request and no alert of it is recorded. Identity is steward's fingerprint of the
//! labels, so the same alert delivered twice (a retry, or both members of an
//! Alertmanager HA pair) is one alert and changes nothing the second time.
//!
//! The sender decides the state: `firing` fires at once (the sender already applied
//! its `for`), `resolved` resolves. A firing alert with an `endsAt` in the future
//! resolves then unless refreshed; one without `endsAt` (Alertmanager's webhook sends
//! the zero time) stays firing until a resolved payload arrives.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde_json::Value as Json;

use super::Alerting;
use super::matcher::valid_label_name;
use super::{Alert, AlertEvent, AlertSource, AlertState, Labels, fingerprint};

/// More alerts than this in one payload is refused rather than half-processed.
pub const MAX_ALERTS: usize = 10_000;

/// One alert of a payload, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    pub labels: Labels,
    pub annotations: BTreeMap<String, String>,
    pub firing: bool,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Default, PartialEq, serde::Serialize)]
pub struct IngestOutcome {
    pub received: usize,
    /// Alerts that started firing.
    pub fired: usize,
    pub resolved: usize,
    /// Already in that state (a duplicate delivery or a repeat notification).
    pub unchanged: usize,
}

/// The fields of Alertmanager's webhook payload (version 4) and of each alert in it.
/// Anything else is refused, like every request body: a typo is an error, not ignored.
const PAYLOAD_FIELDS: &[&str] = &[
    "version",
    "groupKey",
    "truncatedAlerts",
    "status",
    "receiver",
    "groupLabels",
    "commonLabels",
    "commonAnnotations",
    "externalURL",
    "alerts",
];
const ALERT_FIELDS: &[&str] = &["status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"];

fn known_fields(v: &Json, known: &[&str], what: &str) -> Result<(), String> {
    if let Some(map) = v.as_object()
        && let Some(k) = map.keys().find(|k| !known.contains(&k.as_str()))
    {
        let k = crate::bounds::cut(k, 64);
        let hint = crate::config::diagnostics::closest(&k, known.iter().copied())
            .map_or_else(|| format!("known: {}", known.join(", ")), |c| format!("did you mean `{c}`?"));
        return Err(format!("unknown field `{k}` in {what}; {hint}"));
    }
    Ok(())
}

/// Validates a whole payload; the error names the first offending field.
pub fn parse(body: &[u8]) -> Result<Vec<Incoming>, String> {
    let v: Json = serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    known_fields(&v, PAYLOAD_FIELDS, "the payload")?;
    let Some(alerts) = v.get("alerts").and_then(Json::as_array) else {
        return Err("expected an Alertmanager webhook payload: an object with an `alerts` list".into());
    };
    if let Some(version) = v.get("version").and_then(Json::as_str).filter(|v| *v != "4") {
        return Err(format!("payload version `{version}` is not supported; Alertmanager sends version 4"));
    }
    if alerts.len() > MAX_ALERTS {
        return Err(format!("{} alerts in one payload; send at most {MAX_ALERTS}", alerts.len()));
    }
    alerts.iter().enumerate().map(|(i, a)| incoming(a).map_err(|e| format!("alerts[{i}]: {e}"))).collect()
}

fn incoming(a: &Json) -> Result<Incoming, String> {
    known_fields(a, ALERT_FIELDS, "the alert")?;
    let labels = string_map(a.get("labels"), "labels")?;
    if !labels.contains_key("alertname") {
        return Err("labels: `alertname` is required".into());
    }
    if let Some(bad) = labels.keys().find(|k| !valid_label_name(k)) {
        return Err(format!("labels: `{bad}` is not a valid label name"));
    }
    let annotations = match a.get("annotations") {
        None | Some(Json::Null) => BTreeMap::new(),
        v => string_map(v, "annotations")?,
    };
    let firing = match a.get("status").and_then(Json::as_str) {
        Some("firing") => true,
        Some("resolved") => false,
        Some(other) => return Err(format!("status `{other}` is neither `firing` nor `resolved`")),
        None => return Err("status is missing".into()),
    };
    Ok(Incoming { labels, annotations, firing, starts_at: time(a, "startsAt")?, ends_at: time(a, "endsAt")? })
}

fn string_map(v: Option<&Json>, what: &str) -> Result<BTreeMap<String, String>, String> {
    let Some(Json::Object(map)) = v else { return Err(format!("{what} must be an object of strings")) };
    map.iter()
        .map(|(k, v)| match v {
            Json::String(s) => Ok((k.clone(), s.clone())),
            _ => Err(format!("{what}.{k} must be a string")),
        })
        .collect()
}

/// An RFC 3339 time; absent, empty or Go's zero time mean "not set".
fn time(a: &Json, field: &str) -> Result<Option<DateTime<Utc>>, String> {
    match a.get(field) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) if s.is_empty() || s.starts_with("0001-01-01") => Ok(None),
        Some(Json::String(s)) => DateTime::parse_from_rfc3339(s)
            .map_err(|_| format!("{field} `{}` is not an RFC 3339 time", crate::bounds::cut(s, 64)))
            .and_then(|t| crate::bounds::check(crate::clock::truncate(t.with_timezone(&Utc))).map_err(|e| format!("{field}: {e}")))
            .map(Some),
        Some(_) => Err(format!("{field} must be a string")),
    }
}

/// Records the payload's alerts in one transaction: all of them or, on a store error,
/// none (the sender retries the whole payload).
pub async fn apply(alerting: &Alerting, incoming: Vec<Incoming>, now: DateTime<Utc>) -> Result<IngestOutcome, crate::store::StoreError> {
    let now = crate::clock::truncate(now);
    let _serial = alerting.ingest.lock().await;
    let mut out = IngestOutcome { received: incoming.len(), ..IngestOutcome::default() };
    // A later entry for the same alert in one payload sees the earlier one's result.
    let mut pending: HashMap<String, usize> = HashMap::new();
    let mut changes: Vec<(Alert, Option<AlertEvent>)> = Vec::new();
    for inc in incoming {
        let fp = fingerprint(&inc.labels);
        let current = match pending.get(&fp) {
            Some(i) => Some(changes[*i].0.clone()),
            None => alerting.alert(&fp),
        };
        let Some(next) = next_state(current.as_ref(), &fp, inc, now) else {
            out.unchanged += 1;
            continue;
        };
        let from = current.as_ref().map_or(AlertState::Inactive, |a| a.state);
        let event = (from != next.state).then(|| AlertEvent {
            fingerprint: fp.clone(),
            rule: next.rule.clone(),
            at: now,
            from,
            to: next.state,
            value: None,
        });
        match next.state {
            AlertState::Firing if event.is_some() => out.fired += 1,
            AlertState::Resolved if event.is_some() => out.resolved += 1,
            _ => out.unchanged += 1,
        }
        // Every change is kept, in order, so the history has each transition.
        pending.insert(fp, changes.len());
        changes.push((next, event));
    }
    alerting.record_all(changes).await?;
    Ok(out)
}

/// What a received alert does to the current one; `None` = nothing to record.
pub fn next_state(current: Option<&Alert>, fp: &str, inc: Incoming, now: DateTime<Utc>) -> Option<Alert> {
    let name = inc.labels.get("alertname").cloned().unwrap_or_default();
    let expired = inc.ends_at.is_some_and(|t| t <= now);
    let is_firing = current.is_some_and(|a| a.state == AlertState::Firing);
    if !inc.firing || expired {
        // Resolving something never seen firing here is not news.
        let cur = current.filter(|_| is_firing)?;
        let mut next = cur.clone();
        next.state = AlertState::Resolved;
        next.resolved_at = Some(inc.ends_at.unwrap_or(now).min(now));
        next.ends_at = None;
        return Some(next);
    }
    let mut next = match current.filter(|_| is_firing) {
        Some(cur) => cur.clone(),
        None => {
            let started = inc.starts_at.unwrap_or(now).min(now);
            let mut a = Alert::inactive(fp, &name, inc.labels.clone(), started);
            a.state = AlertState::Firing;
            a.fired_at = Some(started);
            a
        }
    };
    next.source = AlertSource::Alertmanager;
    next.annotations = inc.annotations;
    next.ends_at = inc.ends_at;
    next.last_true = Some(now);
    // A repeat notification only refreshes `last_true`; that alone is not worth a write.
    let same = current.is_some_and(|c| c.state == next.state && c.annotations == next.annotations && c.ends_at == next.ends_at);
    (!same).then_some(next)
}

/// Resolves received alerts whose `endsAt` passed without a refresh.
pub async fn expire(alerting: &Alerting, now: DateTime<Utc>) {
    let due = |a: &Alert| a.source == AlertSource::Alertmanager && a.state == AlertState::Firing && a.ends_at.is_some_and(|t| t <= now);
    // Called from the evaluator's loop: take the ingest lock (which a large payload may
    // hold) only when there is something to expire.
    if !alerting.alerts().iter().any(|a| due(a)) {
        return;
    }
    let _serial = alerting.ingest.lock().await;
    for a in alerting.alerts() {
        if !due(&a) {
            continue;
        }
        let mut next = Alert::clone(&a);
        next.state = AlertState::Resolved;
        next.resolved_at = a.ends_at;
        next.ends_at = None;
        let event = AlertEvent {
            fingerprint: a.fingerprint.clone(),
            rule: a.rule.clone(),
            at: now,
            from: AlertState::Firing,
            to: next.state,
            value: None,
        };
        alerting.save(next, Some(&event)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(alerts: &str) -> Vec<u8> {
        format!(r#"{{"version":"4","status":"firing","receiver":"steward","alerts":[{alerts}]}}"#).into_bytes()
    }

    #[test]
    fn parses_alertmanager_payloads() {
        let got = parse(&payload(
            r#"{"status":"firing","labels":{"alertname":"Down","job":"api"},"annotations":{"summary":"x"},
                "startsAt":"2026-11-22T10:00:00Z","endsAt":"0001-01-01T00:00:00Z","fingerprint":"abc"}"#,
        ))
        .unwrap();
        assert_eq!(got.len(), 1);
        assert!(got[0].firing);
        assert_eq!(got[0].labels["job"], "api");
        assert_eq!(got[0].ends_at, None);
        assert_eq!(got[0].starts_at.unwrap().to_rfc3339(), "2026-11-22T10:00:00+00:00");
    }

    #[test]
    fn refuses_malformed_payloads_naming_the_field() {
        assert!(parse(b"{").unwrap_err().contains("not JSON"));
        assert!(parse(b"[]").unwrap_err().contains("`alerts` list"));
        let e = parse(&payload(r#"{"status":"firing","labels":{"alertname":"A"}},{"status":"firing","labels":{"job":"x"}}"#)).unwrap_err();
        assert_eq!(e, "alerts[1]: labels: `alertname` is required");
        let e = parse(&payload(r#"{"status":"burning","labels":{"alertname":"A"}}"#)).unwrap_err();
        assert!(e.contains("status `burning`"));
        let e = parse(&payload(r#"{"status":"firing","labels":{"alertname":"A","bad-name":"x"}}"#)).unwrap_err();
        assert!(e.contains("`bad-name`"));
        let e = parse(&payload(r#"{"status":"firing","labels":{"alertname":"A"},"startsAt":"yesterday"}"#)).unwrap_err();
        assert!(e.contains("RFC 3339"));
        let e = parse(&payload(r#"{"status":"firing","labels":{"alertname":7}}"#)).unwrap_err();
        assert!(e.contains("labels.alertname must be a string"));
    }

    #[test]
    fn duplicates_change_nothing_and_resolve_needs_a_firing_alert() {
        let now = crate::clock::now();
        let inc = parse(&payload(r#"{"status":"firing","labels":{"alertname":"A"}}"#)).unwrap().remove(0);
        let fp = fingerprint(&inc.labels);
        let first = next_state(None, &fp, inc.clone(), now).unwrap();
        assert_eq!((first.state, first.source), (AlertState::Firing, AlertSource::Alertmanager));
        assert_eq!(next_state(Some(&first), &fp, inc.clone(), now), None, "a duplicate is not news");
        let resolved_inc = Incoming { firing: false, ..inc.clone() };
        assert_eq!(next_state(None, &fp, resolved_inc.clone(), now), None);
        let resolved = next_state(Some(&first), &fp, resolved_inc, now).unwrap();
        assert_eq!(resolved.state, AlertState::Resolved);
        // A firing alert whose endsAt already passed is a resolution.
        let stale = Incoming { ends_at: Some(now - chrono::Duration::seconds(1)), ..inc };
        assert_eq!(next_state(Some(&first), &fp, stale, now).unwrap().state, AlertState::Resolved);
    }
}
