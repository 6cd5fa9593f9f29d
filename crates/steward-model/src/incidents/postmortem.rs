//! The post-incident review, pre-filled from the incident, in the seeds' template
//! (summary, timeline, root cause, contributing factors, what went well, what could be
//! improved, action items, prevention). The template is minijinja (Jinja2) with strict
//! undefined, so a misspelt variable in a custom template is an error, not a blank.

use chrono::{DateTime, Duration, Utc};
use minijinja::{Environment, UndefinedBehavior, context};
use serde::Serialize;

use super::{ActionItem, Incident, IncidentAlert, TimelineEntry};

pub const DEFAULT_TEMPLATE: &str = include_str!("postmortem.md.j2");

/// Everything a template can use.
#[derive(Debug, Serialize)]
struct View<'a> {
    id: i64,
    title: &'a str,
    priority: &'a str,
    priority_description: &'a str,
    status: &'a str,
    services: &'a [String],
    opened_by: &'a str,
    date: String,
    opened_at: String,
    acknowledged_at: Option<String>,
    mitigated_at: Option<String>,
    resolved_at: Option<String>,
    closed_at: Option<String>,
    duration: String,
    time_to_acknowledge: Option<String>,
    time_to_mitigate: Option<String>,
    time_to_resolve: Option<String>,
    detected_by: String,
    roles: &'a std::collections::BTreeMap<String, String>,
    alerts: Vec<AlertView<'a>>,
    timeline: Vec<EntryView<'a>>,
    status_updates: Vec<EntryView<'a>>,
    notes: Vec<EntryView<'a>>,
    action_items: Vec<ItemView<'a>>,
}

#[derive(Debug, Serialize)]
struct AlertView<'a> {
    rule: &'a str,
    labels: String,
    state: &'a str,
}

#[derive(Debug, Serialize)]
struct EntryView<'a> {
    time: String,
    kind: &'a str,
    actor: &'a str,
    text: &'a str,
}

#[derive(Debug, Serialize)]
struct ItemView<'a> {
    id: i64,
    text: &'a str,
    owner: Option<&'a str>,
    done: bool,
}

fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// `1h 02m`, `4m 10s`, `12s`.
pub fn human(d: Duration) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {:02}h", s / 86400, (s % 86400) / 3600),
    }
}

fn environment(template: &str) -> Result<Environment<'_>, minijinja::Error> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.add_template("postmortem", template)?;
    Ok(env)
}

/// Whether a custom template compiles (checked when the configuration loads).
pub fn check_template(template: &str) -> Result<(), String> {
    environment(template).map(|_| ()).map_err(|e| e.to_string())
}

pub fn render(
    template: &str,
    incident: &Incident,
    alerts: &[IncidentAlert],
    timeline: &[TimelineEntry],
    items: &[ActionItem],
    now: DateTime<Utc>,
) -> Result<String, String> {
    let i = incident;
    let mut timeline: Vec<&TimelineEntry> = timeline.iter().collect();
    timeline.sort_by_key(|e| e.at);
    let end = i.resolved_at.unwrap_or(now);
    let multi_day = end.date_naive() != i.opened_at.date_naive();
    let time = |t: DateTime<Utc>| if multi_day { t.format("%m-%d %H:%M:%S").to_string() } else { t.format("%H:%M:%S").to_string() };
    fn view<'a>(e: &'a TimelineEntry, time: &dyn Fn(DateTime<Utc>) -> String) -> EntryView<'a> {
        EntryView { time: time(e.at), kind: &e.kind, actor: &e.actor, text: &e.text }
    }
    let entry = |e| view(e, &time);
    let detected_by = match alerts.iter().min_by_key(|a| a.attached_at) {
        Some(a) => format!("alert {} (steward)", a.rule),
        None => format!("declared by {}", i.opened_by),
    };
    let view = View {
        id: i.id,
        title: &i.title,
        priority: i.priority.as_str(),
        priority_description: i.priority.describe(),
        status: i.status.as_str(),
        services: &i.services,
        opened_by: &i.opened_by,
        date: i.opened_at.format("%Y-%m-%d").to_string(),
        opened_at: stamp(i.opened_at),
        acknowledged_at: i.acknowledged_at.map(stamp),
        mitigated_at: i.mitigated_at.map(stamp),
        resolved_at: i.resolved_at.map(stamp),
        closed_at: i.closed_at.map(stamp),
        duration: if i.resolved_at.is_some() {
            human(end - i.opened_at)
        } else {
            format!("{} so far (not resolved)", human(end - i.opened_at))
        },
        time_to_acknowledge: i.time_to_acknowledge().map(human),
        time_to_mitigate: i.time_to_mitigate().map(human),
        time_to_resolve: i.time_to_resolve().map(human),
        detected_by,
        roles: &i.roles,
        alerts: alerts
            .iter()
            .map(|a| AlertView {
                rule: &a.rule,
                labels: a.labels.iter().filter(|(k, _)| *k != "alertname").map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", "),
                state: if a.state == super::AttachedState::Firing { "firing" } else { "resolved" },
            })
            .collect(),
        timeline: timeline.iter().map(|e| entry(e)).collect(),
        status_updates: timeline.iter().filter(|e| e.public).map(|e| entry(e)).collect(),
        notes: timeline.iter().filter(|e| e.kind == "note").map(|e| entry(e)).collect(),
        action_items: items
            .iter()
            .map(|a| ItemView { id: a.id, text: &a.text, owner: a.owner.as_deref(), done: a.state == "done" })
            .collect(),
    };
    let env = environment(template).map_err(|e| e.to_string())?;
    let t = env.get_template("postmortem").map_err(|e| e.to_string())?;
    t.render(context! { incident => view }).map_err(|e| format!("the postmortem template failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incidents::{AttachedState, Priority, Status};
    use std::collections::BTreeMap;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    /// The whole document for a fixed incident, compared with a file so a change to
    /// the template or the pre-filling shows up as a readable diff.
    #[test]
    fn postmortem_snapshot() {
        let incident = Incident {
            id: 7,
            status: Status::Resolved,
            policy: Some("pages".into()),
            group_key: "pages:service=auth".into(),
            services: vec!["auth".into(), "api".into()],
            acknowledged_at: Some(at("2026-11-20T03:15:40Z")),
            mitigated_at: Some(at("2026-11-20T03:31:00Z")),
            resolved_at: Some(at("2026-11-20T03:40:10Z")),
            roles: BTreeMap::from([("commander".into(), "alice".into()), ("scribe".into(), "bob".into())]),
            auto_resolve: true,
            version: 9,
            ..Incident::new("Auth service is down", Priority::P1, "steward", at("2026-11-20T03:12:05Z"))
        };
        let alert = |rule: &str, service: &str| IncidentAlert {
            incident_id: 7,
            fingerprint: format!("fp-{rule}"),
            rule: rule.into(),
            labels: BTreeMap::from([
                ("alertname".into(), rule.into()),
                ("service".into(), service.into()),
                ("severity".into(), "critical".into()),
            ]),
            state: AttachedState::Resolved,
            attached_at: at("2026-11-20T03:12:05Z"),
            changed_at: at("2026-11-20T03:40:10Z"),
            fired_at: None,
        };
        let e = |t: &str, kind: &str, actor: &str, text: &str, public: bool| TimelineEntry {
            public,
            ..TimelineEntry::new(at(t), kind, actor, text)
        };
        let timeline = vec![
            e(
                "2026-11-20T03:12:05Z",
                "opened",
                "steward",
                "Opened by policy pages for AuthDown: P1 — alert AuthDown (severity critical) on tier-1 service auth",
                false,
            ),
            e("2026-11-20T03:12:00Z", "alert_firing", "steward", "AuthDown firing: service=auth, severity=critical", false),
            e(
                "2026-11-20T03:12:06Z",
                "escalated",
                "steward",
                "Level 1 of platform (pass 1): notified alice (on call for primary) via alice-pager",
                false,
            ),
            e("2026-11-20T03:15:40Z", "acknowledged", "alice", "Acknowledged by alice", false),
            e("2026-11-20T03:20:00Z", "status_update", "alice", "Logins are failing; we are investigating.", true),
            e("2026-11-20T03:25:00Z", "note", "bob", "auth pods OOM-killed after the 03:00 deploy", false),
            e("2026-11-20T03:31:00Z", "mitigated", "alice", "Mitigated by alice: rolled back to v41", false),
            e("2026-11-20T03:40:10Z", "resolved", "steward", "Resolved: all 2 of its alerts resolved", false),
        ];
        let items = vec![
            ActionItem {
                id: 1,
                incident_id: 7,
                text: "Memory limit alert on auth pods".into(),
                owner: Some("bob".into()),
                state: "open".into(),
                created_by: "alice".into(),
                created_at: at("2026-11-20T03:35:00Z"),
                done_at: None,
            },
            ActionItem {
                id: 2,
                incident_id: 7,
                text: "Canary the auth deploy".into(),
                owner: None,
                state: "done".into(),
                created_by: "alice".into(),
                created_at: at("2026-11-20T03:36:00Z"),
                done_at: Some(at("2026-11-21T10:00:00Z")),
            },
        ];
        let alerts = vec![alert("AuthDown", "auth"), alert("ApiErrors", "api")];
        let text = render(DEFAULT_TEMPLATE, &incident, &alerts, &timeline, &items, at("2026-11-22T00:00:00Z")).unwrap();
        let expected_path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/incidents/testdata/postmortem.md");
        if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(expected_path, &text).unwrap();
        }
        let expected = std::fs::read_to_string(expected_path).unwrap();
        assert_eq!(text, expected, "postmortem changed; rerun with UPDATE_SNAPSHOTS=1 and review the diff");
    }

    #[test]
    fn a_custom_template_with_a_misspelt_variable_fails_loudly() {
        assert!(check_template("{% if %}").is_err());
        let incident_template = "# {{ incident.titel }}\n";
        assert!(check_template(incident_template).is_ok(), "it compiles; the variable is unknown only at render time");
        let i = Incident { id: 1, ..Incident::new("x", Priority::P3, "alice", at("2026-11-20T03:12:05Z")) };
        let err = render(incident_template, &i, &[], &[], &[], at("2026-11-20T04:00:00Z")).unwrap_err();
        assert!(err.contains("titel") || err.contains("undefined"), "{err}");
    }

    #[test]
    fn durations_read_like_people_say_them() {
        assert_eq!(human(Duration::seconds(12)), "12s");
        assert_eq!(human(Duration::seconds(250)), "4m 10s");
        assert_eq!(human(Duration::seconds(3720)), "1h 02m");
        assert_eq!(human(Duration::seconds(90000)), "1d 01h");
    }
}
