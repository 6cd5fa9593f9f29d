//! The `incidents:` section: which alerts open incidents and at which priority,
//! escalation policies, on-call schedules, the people they page, and the postmortem
//! template.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{NaiveDate, NaiveTime};

use super::alerting::matchers;
use super::decode::{self as de, Fields};
use super::diagnostics::{Diagnostic, Diagnostics, Pos, closest};
use super::receivers::Receiver;
use super::yaml::{Node, Value};
use crate::alerting::Matcher;
use crate::alerting::time_interval::{TimeInterval, parse_location};
use crate::incidents::Priority;
use crate::incidents::oncall::{self, Override, Rotation, Schedule};

const KEYS: &[&str] = &["policies", "priorities", "escalation_policies", "schedules", "people", "postmortem_template"];
const POLICY_KEYS: &[&str] = &["name", "matchers", "group_by", "escalation", "auto_resolve", "priority"];

#[derive(Debug, Clone, Default)]
pub struct IncidentsConfig {
    /// First match wins; an alert no policy matches opens no incident.
    pub policies: Vec<IncidentPolicy>,
    /// Alert `severity` label → priority; see [`IncidentsConfig::priority_for`].
    pub priorities: BTreeMap<String, Priority>,
    pub escalation_policies: Vec<EscalationPolicy>,
    pub schedules: Vec<Schedule>,
    pub people: Vec<Person>,
    /// A minijinja template (file, text) replacing the built-in postmortem.
    pub postmortem_template: Option<(PathBuf, String)>,
    /// Where each schedule is written, for cross-reference errors.
    pub schedule_pos: Vec<(String, Pos)>,
    /// Time intervals named by rotations' `active`, where.
    pub interval_refs: Vec<(String, Pos)>,
}

#[derive(Debug, Clone)]
pub struct IncidentPolicy {
    pub name: String,
    pub matchers: Vec<Matcher>,
    /// Alerts with equal values of these labels share an incident (default: service).
    pub group_by: Vec<String>,
    pub escalation: Option<String>,
    pub auto_resolve: bool,
    /// A fixed priority instead of the severity mapping.
    pub priority: Option<Priority>,
    pub pos: Pos,
}

#[derive(Debug, Clone)]
pub struct EscalationPolicy {
    pub name: String,
    pub levels: Vec<EscalationLevel>,
    /// How many more times the whole policy runs after the first pass if nobody acknowledges.
    pub repeat: u32,
    pub pos: Pos,
}

#[derive(Debug, Clone)]
pub struct EscalationLevel {
    pub receivers: Vec<String>,
    /// Whoever is on call in these schedules when the level fires.
    pub schedules: Vec<String>,
    pub people: Vec<String>,
    /// How long to wait for an acknowledgement before the next level.
    pub wait: Duration,
    pub pos: Pos,
}

#[derive(Debug, Clone)]
pub struct Person {
    pub name: String,
    /// How to reach them: receivers (a pager webhook, an email receiver…).
    pub receivers: Vec<String>,
    pub pos: Pos,
}

/// The built-in mapping from alert severity to priority (severities written as
/// priorities, `P0`…`P4`, map to themselves).
pub(super) fn default_priorities() -> BTreeMap<String, Priority> {
    [
        ("critical", Priority::P1),
        ("high", Priority::P2),
        ("error", Priority::P2),
        ("warning", Priority::P3),
        ("medium", Priority::P3),
        ("info", Priority::P4),
        ("low", Priority::P4),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

impl IncidentsConfig {
    pub fn policy(&self, name: &str) -> Option<&IncidentPolicy> {
        self.policies.iter().find(|p| p.name == name)
    }

    pub fn escalation_policy(&self, name: &str) -> Option<&EscalationPolicy> {
        self.escalation_policies.iter().find(|p| p.name == name)
    }

    pub fn schedule(&self, name: &str) -> Option<&Schedule> {
        self.schedules.iter().find(|s| s.name == name)
    }

    pub fn person(&self, name: &str) -> Option<&Person> {
        self.people.iter().find(|p| p.name == name)
    }

    /// The priority an alert of `severity` on a service of `tier` deserves: the
    /// mapping (P3 for an unknown severity), then one level more urgent on a tier-1
    /// service and one less on tier 4. Tier never makes P0: an alert cannot know about
    /// data loss; a person raises an incident to P0.
    pub fn priority_for(&self, severity: Option<&str>, tier: Option<u8>) -> Priority {
        // A severity already written as a priority (`P1`) is taken as it is.
        let base = severity.and_then(|s| self.priorities.get(&s.to_ascii_lowercase()).copied().or_else(|| Priority::parse(s)));
        let base = base.unwrap_or(Priority::P3);
        match tier {
            Some(1) if base > Priority::P1 => base.shifted(1),
            Some(4) => base.shifted(-1),
            _ => base,
        }
    }
}

pub(super) fn section(node: &Node, d: &mut Diagnostics) -> Option<IncidentsConfig> {
    let mut f = Fields::of(node, "the `incidents` section", d)?;
    // What decodes is kept even when a part fails (the diagnostics already fail the
    // load), so references between the parts are still checked in the same pass.
    let mut out = IncidentsConfig { priorities: default_priorities(), ..Default::default() };
    if let Some(list) = f.take("policies").and_then(|n| de::list(n, "`incidents.policies`", d)) {
        out.policies = list.iter().filter_map(|n| policy(n, d)).collect();
    }
    if let Some(map) = f.take("priorities").and_then(|n| de::string_map(n, "`incidents.priorities`", d)) {
        for (severity, (value, pos)) in map {
            match Priority::parse(&value) {
                Some(p) => {
                    out.priorities.insert(severity.to_ascii_lowercase(), p);
                }
                None => d.push(
                    Diagnostic::error(pos, format!("`{value}` is not a priority"))
                        .with_hint("use P0 (complete outage) … P4 (no user impact)"),
                ),
            }
        }
    }
    if let Some(list) = f.take("escalation_policies").and_then(|n| de::list(n, "`incidents.escalation_policies`", d)) {
        out.escalation_policies = list.iter().filter_map(|n| escalation_policy(n, d)).collect();
    }
    if let Some(list) = f.take("schedules").and_then(|n| de::list(n, "`incidents.schedules`", d)) {
        for n in list {
            if let Some(s) = schedule(n, &mut out.interval_refs, d) {
                out.schedule_pos.push((s.name.clone(), n.pos.clone()));
                out.schedules.push(s);
            }
        }
    }
    if let Some(list) = f.take("people").and_then(|n| de::list(n, "`incidents.people`", d)) {
        out.people = list.iter().filter_map(|n| person(n, d)).collect();
    }
    if let Some(n) = f.take("postmortem_template") {
        out.postmortem_template = postmortem_template(n, d);
    }
    f.finish(KEYS, d);
    Some(out)
}

fn name(f: &mut Fields<'_>, kind: &str, d: &mut Diagnostics) -> Option<String> {
    let n = f.require("name", d)?;
    de::string(n, &format!("the {kind} name"), d)
}

fn policy(node: &Node, d: &mut Diagnostics) -> Option<IncidentPolicy> {
    let mut f = Fields::of(node, "an incident policy", d)?;
    let name = name(&mut f, "incident policy", d);
    let what = name.as_ref().map_or("the incident policy".to_string(), |n| format!("incident policy `{n}`"));
    let matchers = f.take("matchers").map_or(Some(vec![]), |n| matchers(n, &format!("{what} matchers"), d));
    let group_by = f.take("group_by").map_or(Some(vec!["service".to_string()]), |n| de::string_list(n, &format!("{what} group_by"), d));
    let escalation = f.take("escalation").and_then(|n| de::string(n, &format!("{what} escalation"), d));
    let auto_resolve = f.take("auto_resolve").map_or(Some(true), |n| de::boolean(n, &format!("{what} auto_resolve"), d));
    let priority = match f.take("priority") {
        None => Some(None),
        Some(n) => priority(n, &what, d).map(Some),
    };
    f.finish(POLICY_KEYS, d);
    // Invalid fields fall back to defaults (their diagnostics fail the load) so the
    // policy's references are still checked.
    Some(IncidentPolicy {
        name: name?,
        matchers: matchers.unwrap_or_default(),
        group_by: group_by.unwrap_or_default(),
        escalation,
        auto_resolve: auto_resolve.unwrap_or(true),
        priority: priority.flatten(),
        pos: node.pos.clone(),
    })
}

fn priority(n: &Node, what: &str, d: &mut Diagnostics) -> Option<Priority> {
    let text = de::text(n, &format!("{what} priority"), d)?;
    Priority::parse(&text).or_else(|| {
        d.push(Diagnostic::error(n.pos.clone(), format!("{what} priority `{text}` is not a priority")).with_hint("use P0 … P4"));
        None
    })
}

fn escalation_policy(node: &Node, d: &mut Diagnostics) -> Option<EscalationPolicy> {
    let mut f = Fields::of(node, "an escalation policy", d)?;
    let name = name(&mut f, "escalation policy", d);
    let what = name.as_ref().map_or("the escalation policy".to_string(), |n| format!("escalation policy `{n}`"));
    let repeat = f.take("repeat").map_or(Some(0), |n| de::integer(n, &format!("{what} repeat"), 0..=100, d));
    let levels = f.require("levels", d).and_then(|n| {
        let items = de::list(n, &format!("{what} levels"), d)?;
        if items.is_empty() {
            d.push(
                Diagnostic::error(n.pos.clone(), format!("{what} has no levels")).with_hint("add `- notify: [RECEIVER]` with a `wait:`"),
            );
            return None;
        }
        // Valid levels are kept when others fail, so their references are still checked.
        Some(items.iter().enumerate().filter_map(|(i, item)| level(item, &format!("{what} level {}", i + 1), d)).collect::<Vec<_>>())
    });
    f.finish(&["name", "levels", "repeat"], d);
    Some(EscalationPolicy { name: name?, levels: levels.unwrap_or_default(), repeat: repeat.unwrap_or(0) as u32, pos: node.pos.clone() })
}

fn level(node: &Node, what: &str, d: &mut Diagnostics) -> Option<EscalationLevel> {
    let mut f = Fields::of(node, what.to_string(), d)?;
    let list = |f: &mut Fields<'_>, key: &str, d: &mut Diagnostics| {
        f.take(key).map_or(Some(vec![]), |n| de::string_list(n, &format!("{what} {key}"), d))
    };
    let receivers = list(&mut f, "notify", d);
    let schedules = list(&mut f, "oncall", d);
    let people = list(&mut f, "people", d);
    let wait = f.take("wait").map_or(Some(Duration::from_secs(5 * 60)), |n| {
        de::duration(n, &format!("{what} wait"), d).filter(|w| {
            let ok = *w >= Duration::from_secs(1);
            if !ok {
                d.push(Diagnostic::error(n.pos.clone(), format!("{what} wait must be at least 1s")));
            }
            ok
        })
    });
    f.finish(&["notify", "oncall", "people", "wait"], d);
    let (receivers, schedules, people) = (receivers?, schedules?, people?);
    if receivers.is_empty() && schedules.is_empty() && people.is_empty() {
        d.push(
            Diagnostic::error(node.pos.clone(), format!("{what} notifies nobody"))
                .with_hint("add `notify: [RECEIVER]`, `oncall: [SCHEDULE]` or `people: [PERSON]`"),
        );
        return None;
    }
    Some(EscalationLevel { receivers, schedules, people, wait: wait?, pos: node.pos.clone() })
}

fn schedule(node: &Node, refs: &mut Vec<(String, Pos)>, d: &mut Diagnostics) -> Option<Schedule> {
    let mut f = Fields::of(node, "an on-call schedule", d)?;
    let name = name(&mut f, "schedule", d);
    let what = name.as_ref().map_or("the schedule".to_string(), |n| format!("schedule `{n}`"));
    let location = f.require("time_zone", d).and_then(|n| {
        let s = de::string(n, &format!("{what} time_zone"), d)?;
        parse_location(&s).map_err(|e| d.push(Diagnostic::error(n.pos.clone(), format!("{what} time_zone: {e}")))).ok()
    });
    let rotations = match (f.take("rotation"), f.take("rotations")) {
        (Some(n), None) => rotation(n, &what, refs, d).map(|r| vec![r]),
        (None, Some(n)) => de::list(n, &format!("{what} rotations"), d).and_then(|items| {
            if items.is_empty() {
                d.push(Diagnostic::error(n.pos.clone(), format!("{what} has no rotations")));
                return None;
            }
            items.iter().map(|i| rotation(i, &what, refs, d)).collect::<Vec<_>>().into_iter().collect()
        }),
        (Some(_), Some(_)) => {
            d.push(
                Diagnostic::error(node.pos.clone(), format!("{what} has both `rotation` and `rotations`"))
                    .with_hint("use `rotation:` for one, or list them all under `rotations:` (later ones take precedence where active)"),
            );
            None
        }
        (None, None) => {
            d.push(
                Diagnostic::error(node.pos.clone(), format!("{what} has no rotation"))
                    .with_hint("add `rotation: {people: [alice, bob], shift: weekly, handoff: \"09:00\", start: \"2026-11-02\"}`"),
            );
            None
        }
    };
    let overrides = match (f.take("overrides"), location) {
        (None, _) => Some(vec![]),
        (Some(n), Some(tz)) => de::list(n, &format!("{what} overrides"), d)
            .and_then(|items| items.iter().map(|i| override_(i, &what, &tz, d)).collect::<Vec<_>>().into_iter().collect()),
        (Some(_), None) => None,
    };
    f.finish(&["name", "time_zone", "rotation", "rotations", "overrides"], d);
    Some(Schedule { name: name?, location: location?, rotations: rotations?, overrides: overrides? })
}

fn rotation(node: &Node, what: &str, refs: &mut Vec<(String, Pos)>, d: &mut Diagnostics) -> Option<Rotation> {
    let mut f = Fields::of(node, format!("the rotation of {what}"), d)?;
    let people = f.require("people", d).and_then(|n| {
        let people = de::string_list(n, &format!("{what} rotation people"), d)?;
        if people.is_empty() {
            d.push(Diagnostic::error(n.pos.clone(), format!("{what} has nobody in its rotation")));
            return None;
        }
        Some(people)
    });
    let shift_days = f.take("shift").map_or(Some(7), |n| {
        let text = de::text(n, &format!("{what} shift"), d)?;
        let days = match text.as_str() {
            "daily" => Some(1),
            "weekly" => Some(7),
            other => other.strip_suffix('d').and_then(|x| x.parse::<u32>().ok()).filter(|n| (1..=366).contains(n)),
        };
        if days.is_none() {
            d.push(
                Diagnostic::error(n.pos.clone(), format!("{what} shift `{text}` is not a shift length"))
                    .with_hint("write `daily`, `weekly` or a number of days such as `14d` (shifts are calendar days of the time zone)"),
            );
        }
        days
    });
    let handoff = f.take("handoff").map_or(NaiveTime::from_hms_opt(9, 0, 0), |n| {
        let text = de::text(n, &format!("{what} handoff"), d)?;
        NaiveTime::parse_from_str(&text, "%H:%M").ok().or_else(|| {
            d.push(
                Diagnostic::error(n.pos.clone(), format!("{what} handoff `{text}` is not a time of day"))
                    .with_hint("write HH:MM, e.g. 09:00"),
            );
            None
        })
    });
    let start = f.require("start", d).and_then(|n| {
        let text = de::text(n, &format!("{what} start"), d)?;
        NaiveDate::parse_from_str(&text, "%Y-%m-%d").ok().or_else(|| {
            d.push(
                Diagnostic::error(n.pos.clone(), format!("{what} start `{text}` is not a date"))
                    .with_hint("write YYYY-MM-DD: the day the first person's first shift begins"),
            );
            None
        })
    });
    let active = f.take("active").map_or(Some(vec![]), |n| {
        let names = de::string_list(n, &format!("{what} rotation active"), d)?;
        refs.extend(names.iter().map(|name| (name.clone(), n.pos.clone())));
        Some(names)
    });
    f.finish(&["people", "shift", "handoff", "start", "active"], d);
    Some(Rotation { people: people?, shift_days: shift_days?, handoff: handoff?, start: start?, active: active? })
}

fn override_(node: &Node, what: &str, tz: &chrono_tz::Tz, d: &mut Diagnostics) -> Option<Override> {
    let mut f = Fields::of(node, format!("an override of {what}"), d)?;
    let person = f.require("person", d).and_then(|n| de::string(n, &format!("{what} override person"), d));
    let mut instant = |key: &str, d: &mut Diagnostics| {
        let n = f.require(key, d)?;
        let text = de::text(n, &format!("{what} override {key}"), d)?;
        oncall::parse_instant(&text, tz).map_err(|e| d.push(Diagnostic::error(n.pos.clone(), format!("{what} override {key}: {e}")))).ok()
    };
    let (from, until) = (instant("from", d), instant("until", d));
    f.finish(&["person", "from", "until"], d);
    let (from, until) = (from?, until?);
    if until <= from {
        d.push(Diagnostic::error(node.pos.clone(), format!("{what}: an override must end after it starts")));
        return None;
    }
    Some(Override { person: person?, from, until })
}

fn person(node: &Node, d: &mut Diagnostics) -> Option<Person> {
    let mut f = Fields::of(node, "a person", d)?;
    let name = name(&mut f, "person", d);
    let what = name.as_ref().map_or("the person".to_string(), |n| format!("person `{n}`"));
    let receivers = f.require("notify", d).and_then(|n| de::string_list(n, &format!("{what} notify"), d));
    f.finish(&["name", "notify"], d);
    Some(Person { name: name?, receivers: receivers?, pos: node.pos.clone() })
}

fn postmortem_template(n: &Node, d: &mut Diagnostics) -> Option<(PathBuf, String)> {
    let Value::Str { text, .. } = &n.value else {
        d.push(de::type_error(n, "`incidents.postmortem_template`", "a file path"));
        return None;
    };
    let base = Path::new(&*n.pos.file).parent().map(Path::to_path_buf).unwrap_or_default();
    let path = base.join(text);
    let body = match std::fs::read_to_string(&path) {
        Ok(b) => b,
        Err(e) => {
            d.push(
                Diagnostic::error(n.pos.clone(), format!("cannot read the postmortem template {}: {e}", path.display()))
                    .with_hint("paths are relative to this configuration file"),
            );
            return None;
        }
    };
    if let Err(e) = crate::incidents::postmortem::check_template(&body) {
        d.push(
            Diagnostic::error(n.pos.clone(), format!("the postmortem template {} does not compile: {e}", path.display()))
                .with_hint("it is a minijinja (Jinja2) template; `steward incident postmortem` documents the variables"),
        );
        return None;
    }
    Some((path, body))
}

/// References from the incidents section to receivers and between its own parts.
pub(super) fn cross_check(c: &IncidentsConfig, receivers: &[Receiver], time_intervals: &[TimeInterval], d: &mut Diagnostics) {
    let interval_names: Vec<&str> = time_intervals.iter().map(|t| t.name.as_str()).collect();
    let receiver_names: Vec<&str> = receivers.iter().map(|r| r.name.as_str()).collect();
    let escalations: Vec<&str> = c.escalation_policies.iter().map(|p| p.name.as_str()).collect();
    let schedules: Vec<&str> = c.schedules.iter().map(|s| s.name.as_str()).collect();
    let people: Vec<&str> = c.people.iter().map(|p| p.name.as_str()).collect();
    let mut missing = |kind: &str, name: &str, known: &[&str], pos: &Pos, hint: &str| {
        if !known.contains(&name) {
            let mut diag = Diagnostic::error(pos.clone(), format!("no {kind} is named `{name}`"));
            diag = match closest(name, known.iter().copied()) {
                Some(c) => diag.with_hint(format!("did you mean `{c}`?")),
                None => diag.with_hint(hint.to_string()),
            };
            d.push(diag);
        }
    };
    for p in &c.policies {
        if let Some(e) = &p.escalation {
            missing("escalation policy", e, &escalations, &p.pos, "define it under `incidents.escalation_policies`");
        }
    }
    for e in &c.escalation_policies {
        for l in &e.levels {
            for r in &l.receivers {
                missing("receiver", r, &receiver_names, &l.pos, "define it under `receivers:`");
            }
            for s in &l.schedules {
                missing("schedule", s, &schedules, &l.pos, "define it under `incidents.schedules`");
            }
            for p in &l.people {
                missing("person", p, &people, &l.pos, "define them under `incidents.people` with `notify: [RECEIVER]`");
            }
        }
    }
    for p in &c.people {
        for r in &p.receivers {
            missing("receiver", r, &receiver_names, &p.pos, "define it under `receivers:`");
        }
    }
    for (name, pos) in &c.interval_refs {
        missing("time interval", name, &interval_names, pos, "define it under `time_intervals:` (e.g. business hours)");
    }
    for (name, pos) in &c.schedule_pos {
        for who in c.schedule(name).iter().flat_map(|s| &s.rotations).flat_map(|r| &r.people) {
            missing(
                "person",
                who,
                &people,
                pos,
                "add them under `incidents.people` with `notify: [RECEIVER]`: a schedule must say how to reach whoever is on call",
            );
        }
    }
    let names: [(&str, Vec<(&String, &Pos)>); 4] = [
        ("incident policy", c.policies.iter().map(|p| (&p.name, &p.pos)).collect()),
        ("escalation policy", c.escalation_policies.iter().map(|p| (&p.name, &p.pos)).collect()),
        ("schedule", c.schedule_pos.iter().map(|(n, p)| (n, p)).collect()),
        ("person", c.people.iter().map(|p| (&p.name, &p.pos)).collect()),
    ];
    for (kind, list) in names {
        for (i, (name, pos)) in list.iter().enumerate() {
            if let Some((_, first)) = list[..i].iter().find(|(n, _)| n == name) {
                d.push(
                    Diagnostic::error((*pos).clone(), format!("{kind} `{name}` is defined twice"))
                        .with_hint(format!("the first is at {first}; names must be unique")),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_follows_severity_then_tier() {
        let c = IncidentsConfig { priorities: default_priorities(), ..Default::default() };
        let p = |severity: Option<&str>, tier: Option<u8>| c.priority_for(severity, tier).as_str();
        assert_eq!(p(Some("critical"), Some(2)), "P1");
        assert_eq!(p(Some("Critical"), Some(1)), "P1", "tier 1 never makes P0");
        assert_eq!(p(Some("warning"), Some(1)), "P2", "tier 1: one level more urgent");
        assert_eq!(p(Some("critical"), Some(4)), "P2", "tier 4: one level less");
        assert_eq!(p(Some("info"), Some(4)), "P4");
        assert_eq!(p(Some("P0"), None), "P0", "a priority as severity is taken as it is");
        assert_eq!(p(Some("p2"), None), "P2");
        assert_eq!(p(Some("whatever"), None), "P3");
        assert_eq!(p(None, None), "P3");
    }
}
