//! The incident manager: whenever an alert changes state (and at least every 10 s) a
//! pass opens incidents for firing alerts, attaches later alerts, notes resolutions and
//! resolves incidents whose alerts have all resolved; every second it fires the
//! escalation levels that are due. People's actions ([`act`], [`declare`]) go through the same lock.
//!
//! Every pass starts from the store, so it is idempotent: a restart picks up exactly
//! where the last committed write left off.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::Incidents;
use super::policy;
use super::{AttachedState, Escalation, Incident, IncidentAlert, Priority, ROLES, STEWARD, Status, TimelineEntry};
use crate::alerting::{Alert, AlertSource, AlertState, Mute, dispatch};
use crate::config::Config;
use crate::store::{IncidentQuery, IncidentWrite, OutboxMessage, StoreError};
use crate::telemetry::PriorityLabels;

/// Due escalation levels are looked for this often.
const PASS_EVERY: Duration = Duration::from_secs(1);
/// Alerts are matched against incidents whenever one changes state, and at least this
/// often (a silence or maintenance window ending changes no alert state, yet may let a
/// firing alert open an incident). Reading every held alert every second cost ~20 % of
/// a core with 20,000 held (BENCHMARKS.md).
const ALERTS_AT_LEAST_EVERY: Duration = Duration::from_secs(10);

pub async fn run(incidents: Arc<Incidents>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(PASS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut alerts_read = tokio::time::Instant::now();
    loop {
        let woken = tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => false,
            _ = incidents.wake.notified() => true,
        };
        let with_alerts = woken || alerts_read.elapsed() >= ALERTS_AT_LEAST_EVERY;
        if with_alerts {
            alerts_read = tokio::time::Instant::now();
        }
        let _guard = incidents.lock.lock().await;
        if let Err(e) = pass(&incidents, crate::clock::now(), with_alerts).await {
            tracing::error!(error = %e, "incident pass failed; retrying in a second");
        }
    }
}

/// One pass: alerts → incidents (when `with_alerts`), then due escalations. Public for
/// tests.
pub async fn pass(incidents: &Incidents, now: DateTime<Utc>, with_alerts: bool) -> Result<(), StoreError> {
    let now = crate::clock::truncate(now);
    let config = incidents.config.get();
    let open = incidents.store.incidents(&IncidentQuery { open: true, ..Default::default() }).await?;
    let attached = if with_alerts { incidents.store.incident_alerts(None).await? } else { Vec::new() };
    let before: HashMap<i64, Incident> = open.iter().map(|i| (i.id, i.clone())).collect();
    let mut writes: Vec<IncidentWrite> = open.into_iter().map(IncidentWrite::of).collect();
    let mut dirty = vec![false; writes.len()];
    // Without policies no alert opens an incident, and with nothing attached none
    // changes one: alerting-only setups skip reading every alert on every change.
    if with_alerts && !(config.incidents.policies.is_empty() && attached.is_empty()) {
        let alerts = incidents.alerting.alerts();
        let handled = handled_elsewhere(incidents, &config, &alerts, &attached).await?;
        take_alerts(incidents, &config, &alerts, &attached, &handled, &mut writes, &mut dirty, now);
    }
    let mut stored = Vec::with_capacity(writes.len());
    for (w, d) in writes.into_iter().zip(dirty) {
        if !d {
            stored.push(w.incident);
        } else if let Some(i) = commit_or_log(incidents, before.get(&w.incident.id), &w).await {
            stored.push(i);
        }
    }
    // Escalation changes neither status nor priority: count now.
    for p in Priority::ALL {
        let n = stored.iter().filter(|i| i.status.is_open() && i.priority == p).count();
        incidents.metrics.incidents_open.get_or_create(&PriorityLabels { priority: p.as_str().into() }).set(n as i64);
    }
    for incident in stored {
        let due = incident.status == Status::Triggered && incident.escalation.as_ref().and_then(|e| e.next_at).is_some_and(|t| t <= now);
        if due {
            let before = incident.clone();
            let mut w = IncidentWrite::of(incident);
            escalate(incidents, &config, &mut w, now, None).await?;
            commit_or_log(incidents, Some(&before), &w).await;
        }
    }
    Ok(())
}

/// Writes, wakes delivery, logs, and feeds the time-to-* histograms; `before` is the
/// incident as it was read (`None` for a new one).
async fn commit(incidents: &Incidents, before: Option<&Incident>, w: &IncidentWrite) -> Result<Incident, StoreError> {
    let stored = incidents.store.write_incident(w).await?;
    if !w.notifications.is_empty() {
        incidents.alerting.notifications_enqueued();
    }
    for e in &w.timeline {
        tracing::info!(incident = stored.id, kind = %e.kind, actor = %e.actor, "{}", e.text);
    }
    let labels = PriorityLabels { priority: stored.priority.as_str().into() };
    let seconds = |d: chrono::Duration| d.num_milliseconds() as f64 / 1000.0;
    let newly = |was: Option<DateTime<Utc>>, is: Option<DateTime<Utc>>| was.is_none() && is.is_some();
    let m = &incidents.metrics;
    if newly(before.and_then(|b| b.acknowledged_at), stored.acknowledged_at)
        && let Some(d) = stored.time_to_acknowledge()
    {
        m.incident_time_to_acknowledge.get_or_create(&labels).observe(seconds(d));
    }
    if newly(before.and_then(|b| b.mitigated_at), stored.mitigated_at)
        && let Some(d) = stored.time_to_mitigate()
    {
        m.incident_time_to_mitigate.get_or_create(&labels).observe(seconds(d));
    }
    if newly(before.and_then(|b| b.resolved_at), stored.resolved_at)
        && let Some(d) = stored.time_to_resolve()
    {
        m.incident_time_to_resolve.get_or_create(&labels).observe(seconds(d));
    }
    Ok(stored)
}

/// [`commit`] for the manager's pass: a refused write (a conflict, a full disk) is
/// logged and retried by the next pass.
async fn commit_or_log(incidents: &Incidents, before: Option<&Incident>, w: &IncidentWrite) -> Option<Incident> {
    match commit(incidents, before, w).await {
        Ok(stored) => Some(stored),
        // Another writer opened the group's incident first: the next pass reads it and
        // attaches these alerts to it.
        Err(e @ StoreError::GroupOpen { .. }) => {
            tracing::info!(error = %e, "the group's incident was opened meanwhile; its alerts join it at the next pass");
            None
        }
        Err(e) => {
            tracing::error!(incident = w.incident.id, error = %e, "could not record an incident change; retrying at the next pass");
            None
        }
    }
}

fn describe_labels(alert: &Alert) -> String {
    alert.labels.iter().filter(|(k, _)| *k != "alertname").map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
}

/// Applies the alerts' current states to the open incidents (and new ones).
/// Firing alerts no open incident holds whose current firing was already part of an
/// incident — one a person resolved or closed while the alert kept firing. They open
/// nothing new until they resolve and fire again.
async fn handled_elsewhere(
    incidents: &Incidents,
    config: &Config,
    alerts: &[Arc<Alert>],
    attached: &[IncidentAlert],
) -> Result<HashSet<String>, StoreError> {
    let held: HashSet<&str> = attached.iter().map(|a| a.fingerprint.as_str()).collect();
    let candidates: Vec<&Alert> = alerts
        .iter()
        .map(|a| a.as_ref())
        .filter(|a| {
            a.state == AlertState::Firing && !held.contains(a.fingerprint.as_str()) && policy::policy_for(config, &a.labels).is_some()
        })
        .collect();
    if candidates.is_empty() {
        return Ok(HashSet::new());
    }
    let fingerprints: Vec<String> = candidates.iter().map(|a| a.fingerprint.clone()).collect();
    let past = incidents.store.attachments(&fingerprints).await?;
    Ok(candidates
        .iter()
        .filter(|a| {
            // Compared as stored (whole milliseconds): see `clock`.
            past.iter().any(|p| p.fingerprint == a.fingerprint && a.fired_at.is_some_and(|f| p.attached_at >= crate::clock::truncate(f)))
        })
        .map(|a| a.fingerprint.clone())
        .collect())
}

#[allow(clippy::too_many_arguments)]
fn take_alerts(
    incidents: &Incidents,
    config: &Config,
    alerts: &[Arc<Alert>],
    attached: &[IncidentAlert],
    handled: &HashSet<String>,
    writes: &mut Vec<IncidentWrite>,
    dirty: &mut Vec<bool>,
    now: DateTime<Utc>,
) {
    // Built only when something is attached: with thousands of alerts and no incident,
    // every pass paid for this map (and the sort below) for nothing.
    let live: HashMap<&str, &Alert> =
        if attached.is_empty() { HashMap::new() } else { alerts.iter().map(|a| (a.fingerprint.as_str(), a.as_ref())).collect() };
    let index = |writes: &[IncidentWrite], id: i64| writes.iter().position(|w| w.incident.id == id);
    // Attached alerts that resolved, or fired again.
    let mut holder: HashMap<String, usize> = HashMap::new();
    for a in attached {
        let Some(i) = index(writes, a.incident_id) else { continue };
        holder.insert(a.fingerprint.clone(), i);
        let current = live.get(a.fingerprint.as_str());
        let firing = current.is_some_and(|c| c.state == AlertState::Firing);
        let change = match (a.state, firing) {
            (AttachedState::Firing, false) => Some((AttachedState::Resolved, "alert_resolved", format!("{} resolved", a.rule))),
            (AttachedState::Resolved, true) => Some((AttachedState::Firing, "alert_firing", format!("{} is firing again", a.rule))),
            _ => None,
        };
        if let Some((state, kind, text)) = change {
            let at = current.and_then(|c| if state == AttachedState::Resolved { c.resolved_at } else { c.fired_at }).unwrap_or(now);
            writes[i].alerts.push(IncidentAlert { state, changed_at: now, ..a.clone() });
            writes[i].timeline.push(TimelineEntry::new(at, kind, STEWARD, text).with_data(json!({"fingerprint": a.fingerprint})));
            dirty[i] = true;
        }
    }
    // Firing alerts no open incident holds yet, oldest first (filtered before sorting:
    // most alerts of a large set are held already or match no policy).
    let mut firing: Vec<(&Alert, &crate::config::IncidentPolicy)> = alerts
        .iter()
        .map(|a| a.as_ref())
        .filter(|a| a.state == AlertState::Firing && !holder.contains_key(&a.fingerprint) && !handled.contains(&a.fingerprint))
        .filter_map(|a| policy::policy_for(config, &a.labels).map(|p| (a, p)))
        .collect();
    firing.sort_by(|(a, _), (b, _)| a.fired_at.cmp(&b.fired_at).then(a.fingerprint.cmp(&b.fingerprint)));
    let checks = if firing.is_empty() { HashMap::new() } else { incidents.checks.states() };
    // An alert whose cause has no incident yet waits for a second round: its cause may
    // fire later than it did yet open its incident in this very pass (a dependent's
    // check can fail before its cause's alert fires). Without the second round it would
    // join only at the next pass that reads alerts — up to ten seconds later.
    let mut deferred = Vec::new();
    let index = crate::alerting::live::MuteIndex::new(alerts, config, &checks);
    for round in 0..2 {
        let batch = if round == 0 { std::mem::take(&mut firing) } else { std::mem::take(&mut deferred) };
        for (alert, policy) in batch {
            if holder.contains_key(&alert.fingerprint) {
                continue;
            }
            let mutes = incidents.alerting.mutes_in(alert, &index, config, now);
            if mutes.iter().any(|m| matches!(m, Mute::Silence { .. } | Mute::Maintenance { .. })) {
                continue;
            }
            // An alert whose cause is elsewhere joins the incident about the cause, if any.
            let caused_by = mutes.iter().find_map(|m| match m {
                Mute::Inhibition { by_fingerprint, .. } => Some(holder.get(by_fingerprint).copied()),
                Mute::Dependency { service, .. } => Some(writes.iter().position(|w| w.incident.services.contains(service))),
                _ => None,
            });
            let target = match caused_by {
                Some(Some(i)) => Some(i),
                // The cause has no incident (yet): this alert opens none of its own.
                Some(None) => {
                    if round == 0 {
                        deferred.push((alert, policy));
                    }
                    continue;
                }
                None => {
                    let key = policy::group_key(policy, &alert.labels);
                    writes.iter().position(|w| w.incident.policy.as_deref() == Some(policy.name.as_str()) && w.incident.group_key == key)
                }
            };
            let priority = policy::priority(config, policy, alert);
            let i = match target {
                Some(i) => i,
                None => {
                    writes.push(IncidentWrite::of(new_incident(config, policy, alert, priority, now)));
                    dirty.push(true);
                    let i = writes.len() - 1;
                    let reason = policy::priority_reason(config, policy, alert);
                    writes[i].timeline.push(TimelineEntry::new(
                        now,
                        "opened",
                        STEWARD,
                        format!("Opened by policy {} for {}: {} — {}", policy.name, alert.rule, priority.as_str(), reason),
                    ));
                    i
                }
            };
            attach(&mut writes[i], config, policy, alert, priority, now);
            dirty[i] = true;
            holder.insert(alert.fingerprint.clone(), i);
        }
    }
    // Incidents whose alerts have all resolved.
    for (i, w) in writes.iter_mut().enumerate() {
        if !w.incident.auto_resolve || !w.incident.status.is_open() {
            continue;
        }
        let mut states: BTreeMap<&str, AttachedState> = attached
            .iter()
            .filter(|a| a.incident_id == w.incident.id && w.incident.id != 0)
            .map(|a| (a.fingerprint.as_str(), a.state))
            .collect();
        for a in &w.alerts {
            states.insert(a.fingerprint.as_str(), a.state);
        }
        if !states.is_empty() && states.values().all(|s| *s == AttachedState::Resolved) {
            let n = states.len();
            let text =
                if n == 1 { "Resolved: its alert resolved".to_string() } else { format!("Resolved: all {n} of its alerts resolved") };
            resolve(w, STEWARD, &text, now, incidents.alerting.external_url());
            dirty[i] = true;
        }
    }
}

fn new_incident(
    config: &Config,
    policy: &crate::config::IncidentPolicy,
    alert: &Alert,
    priority: Priority,
    now: DateTime<Utc>,
) -> Incident {
    let escalation = policy.escalation.as_ref().filter(|e| config.incidents.escalation_policy(e).is_some()).map(|e| Escalation {
        policy: e.clone(),
        level: 0,
        round: 0,
        next_at: Some(now),
        notified: vec![],
    });
    Incident {
        policy: Some(policy.name.clone()),
        group_key: policy::group_key(policy, &alert.labels),
        escalation,
        auto_resolve: policy.auto_resolve,
        ..Incident::new(&policy::title(alert), priority, STEWARD, now)
    }
}

fn attach(
    w: &mut IncidentWrite,
    config: &Config,
    policy: &crate::config::IncidentPolicy,
    alert: &Alert,
    priority: Priority,
    now: DateTime<Utc>,
) {
    let source = if alert.source == AlertSource::Alertmanager { " (received from Alertmanager)" } else { "" };
    w.alerts.push(IncidentAlert {
        incident_id: w.incident.id,
        fingerprint: alert.fingerprint.clone(),
        rule: alert.rule.clone(),
        labels: alert.labels.clone(),
        state: AttachedState::Firing,
        attached_at: now,
        changed_at: now,
        fired_at: alert.fired_at,
    });
    w.timeline.push(
        TimelineEntry::new(
            alert.fired_at.unwrap_or(now),
            "alert_firing",
            STEWARD,
            format!("{} firing{source}: {}", alert.rule, describe_labels(alert)),
        )
        .with_data(json!({"fingerprint": alert.fingerprint, "value": alert.value})),
    );
    if let Some(service) = alert.labels.get("service")
        && !w.incident.services.contains(service)
    {
        w.incident.services.push(service.clone());
    }
    if priority < w.incident.priority {
        let reason = policy::priority_reason(config, policy, alert);
        w.timeline.push(
            TimelineEntry::new(
                now,
                "priority_changed",
                STEWARD,
                format!("Priority {} → {}: {reason}", w.incident.priority.as_str(), priority.as_str()),
            )
            .with_data(json!({"from": w.incident.priority, "to": priority})),
        );
        w.incident.priority = priority;
    }
}

/// Marks the incident resolved, stops escalation, and tells everyone who was paged.
fn resolve(w: &mut IncidentWrite, actor: &str, text: &str, now: DateTime<Utc>, external_url: &str) {
    let i = &mut w.incident;
    i.status = Status::Resolved;
    i.resolved_at = Some(now);
    if let Some(e) = &mut i.escalation {
        e.next_at = None;
    }
    w.timeline.push(TimelineEntry::new(now, "resolved", actor, text));
    let notified = i.escalation.as_ref().map(|e| e.notified.clone()).unwrap_or_default();
    for receiver in notified {
        let payload = incident_payload(&w.incident, &receiver, "resolved", None, None, external_url);
        w.notifications.push(OutboxMessage {
            dedup_key: format!("incident-{}-resolved-{receiver}", w.incident.id),
            receiver,
            group_key: format!("incident/{}", w.incident.id),
            status: "resolved".into(),
            payload,
        });
    }
}

/// The Alertmanager-shaped payload of an incident notification, so every receiver
/// kind renders it; `incident` carries the details for webhooks that want them.
/// A page (`level` set) also carries `ack_url`: acknowledging from the message itself.
fn incident_payload(
    i: &Incident,
    receiver: &str,
    status: &str,
    level: Option<serde_json::Value>,
    ack_url: Option<String>,
    external_url: &str,
) -> serde_json::Value {
    let mut labels = BTreeMap::from([
        ("alertname".to_string(), format!("Incident #{}", i.id)),
        ("incident".to_string(), i.id.to_string()),
        ("severity".to_string(), i.priority.as_str().to_string()),
    ]);
    if !i.services.is_empty() {
        labels.insert("service".into(), i.services.join(","));
    }
    let summary = format!("[{}] {}", i.priority.as_str(), i.title);
    let mut annotations = BTreeMap::from([("summary".to_string(), summary)]);
    if let Some(url) = &ack_url {
        annotations.insert("acknowledge".into(), url.clone());
    }
    let synthetic = Alert {
        fingerprint: format!("incident-{}", i.id),
        rule: format!("Incident #{}", i.id),
        labels: labels.clone(),
        annotations,
        state: if status == "resolved" { AlertState::Resolved } else { AlertState::Firing },
        active_since: i.opened_at,
        fired_at: Some(i.opened_at),
        resolved_at: i.resolved_at,
        last_true: None,
        value: None,
        source: AlertSource::Rule,
        ends_at: None,
    };
    let group = BTreeMap::from([("incident".to_string(), i.id.to_string())]);
    let mut payload = dispatch::payload(receiver, &format!("incident/{}", i.id), &group, status, &[&synthetic], external_url);
    // Links people click open the console; scripts have `api_url`.
    payload["alerts"][0]["generatorURL"] = json!(format!("{external_url}/console/incidents/{}", i.id));
    payload["incident"] = json!({
        "id": i.id,
        "title": i.title,
        "priority": i.priority,
        "status": i.status,
        "services": i.services,
        "opened_at": i.opened_at,
        "escalation": level,
        "url": format!("{external_url}/console/incidents/{}", i.id),
        "api_url": format!("{external_url}/api/v1/incidents/{}", i.id),
        "acknowledge_url": ack_url,
    });
    payload
}

/// Fires the incident's next escalation level (due, or forced now `by` a person) and
/// schedules the one after. Nothing is sent when the policy is exhausted.
async fn escalate(
    incidents: &Incidents,
    config: &Config,
    w: &mut IncidentWrite,
    now: DateTime<Utc>,
    by: Option<&str>,
) -> Result<(), StoreError> {
    let forced = by.is_some();
    let Some(mut esc) = w.incident.escalation.clone() else { return Ok(()) };
    let Some(policy) = config.incidents.escalation_policy(&esc.policy) else {
        esc.next_at = None;
        w.timeline.push(TimelineEntry::new(
            now,
            "escalation_exhausted",
            STEWARD,
            format!("Escalation policy {} is no longer configured; escalation stopped", esc.policy),
        ));
        w.incident.escalation = Some(esc);
        return Ok(());
    };
    if (esc.round > policy.repeat && !forced) || policy.levels.is_empty() {
        esc.next_at = None;
        w.timeline.push(TimelineEntry::new(
            now,
            "escalation_exhausted",
            STEWARD,
            format!("Nobody acknowledged after {} pass(es) through escalation policy {}; escalation stopped", esc.round, policy.name),
        ));
        w.incident.escalation = Some(esc);
        return Ok(());
    }
    let level_index = esc.level.min(policy.levels.len() - 1);
    let level = &policy.levels[level_index];
    let overrides = incidents.store.overrides(now).await?;
    // (receiver, why) in order, each receiver once.
    let mut targets: Vec<(String, String)> = level.receivers.iter().map(|r| (r.clone(), r.clone())).collect();
    let mut people: Vec<String> = Vec::new();
    let mut nobody = Vec::new();
    let add_person = |person: &str, targets: &mut Vec<(String, String)>| {
        if let Some(p) = config.incidents.person(person) {
            targets.extend(p.receivers.iter().map(|r| (r.clone(), person.to_string())));
        }
    };
    for s in &level.schedules {
        let Some(schedule) = config.incidents.schedule(s) else { continue };
        let extra: Vec<_> = overrides.iter().filter(|(name, _)| name == s).map(|(_, o)| o.clone()).collect();
        match schedule.on_call_at(now, &extra, &config.time_intervals) {
            Some(on) => {
                people.push(format!("{} (on call for {s})", on.person));
                add_person(&on.person, &mut targets);
            }
            None => nobody.push(s.clone()),
        }
    }
    for p in &level.people {
        people.push(p.clone());
        add_person(p, &mut targets);
    }
    let mut seen = Vec::new();
    targets.retain(|(r, _)| {
        let new = !seen.contains(r);
        seen.push(r.clone());
        new
    });
    let level_info =
        json!({"policy": policy.name, "level": level_index + 1, "levels": policy.levels.len(), "round": esc.round + 1, "people": people});
    // Read per escalation, not cached: `steward keys rotate` takes effect at once.
    let ack_key = incidents.keys.server_key(super::ack_link::KEY_NAME).await?;
    for (receiver, who) in &targets {
        // Signed for whoever this page is for: a person, or a receiver paged directly.
        let token = super::ack_link::sign(&ack_key, w.incident.id, who, now + super::ack_link::VALID_FOR);
        let ack_url = format!("{}/ack/{token}", incidents.alerting.external_url());
        w.notifications.push(OutboxMessage {
            dedup_key: format!(
                "incident-{}-round{}-level{}-{receiver}{}",
                w.incident.id,
                esc.round,
                level_index,
                if forced { format!("-now{}", now.timestamp_millis()) } else { String::new() }
            ),
            receiver: receiver.clone(),
            group_key: format!("incident/{}", w.incident.id),
            status: "firing".into(),
            payload: incident_payload(
                &w.incident,
                receiver,
                "firing",
                Some(level_info.clone()),
                Some(ack_url),
                incidents.alerting.external_url(),
            ),
        });
        if !esc.notified.contains(receiver) {
            esc.notified.push(receiver.clone());
        }
    }
    let mut text = format!(
        "{}Level {} of {} (pass {}): notified {}",
        if forced { "Escalated by hand. " } else { "" },
        level_index + 1,
        policy.name,
        esc.round + 1,
        if targets.is_empty() {
            "nobody".to_string()
        } else {
            targets.iter().map(|(r, why)| if r == why { r.clone() } else { format!("{why} via {r}") }).collect::<Vec<_>>().join(", ")
        }
    );
    if !nobody.is_empty() {
        text.push_str(&format!("; nobody is on call in {}", nobody.join(", ")));
    }
    w.timeline.push(TimelineEntry::new(now, "escalated", by.unwrap_or(STEWARD), text).with_data(json!({
        "level": level_index + 1, "round": esc.round + 1, "receivers": targets.iter().map(|(r, _)| r).collect::<Vec<_>>(), "people": people,
    })));
    esc.level = level_index + 1;
    if esc.level >= policy.levels.len() {
        esc.level = 0;
        esc.round += 1;
    }
    let wait = chrono::Duration::from_std(level.wait).unwrap_or_default();
    esc.next_at = (w.incident.status == Status::Triggered).then_some(now + wait);
    w.incident.escalation = Some(esc);
    Ok(())
}

/// What a person does to an incident.
#[derive(Debug, Clone)]
pub enum IncidentUpdate {
    Acknowledge { note: Option<String> },
    Mitigate { note: Option<String> },
    Resolve { note: Option<String> },
    Close { note: Option<String> },
    Note { text: String, public: bool },
    Priority { to: Priority, reason: String },
    AssignRole { role: String, person: String },
    EscalateNow,
    AddActionItem { text: String, owner: Option<String> },
    ActionItemDone { item: i64 },
}

#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("no incident has id {0}")]
    NotFound(i64),
    /// The action does not apply in the incident's current state.
    #[error("{0}")]
    Refused(String),
    /// The request itself is wrong (an empty note, an unknown role or service).
    #[error("{0}")]
    BadInput(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Applies a person's action: one transaction, under the incidents lock.
pub async fn act(incidents: &Incidents, id: i64, actor: &str, action: IncidentUpdate) -> Result<Incident, ActionError> {
    let _guard = incidents.lock.lock().await;
    let incident = incidents.store.incident(id).await?.ok_or(ActionError::NotFound(id))?;
    let now = crate::clock::now();
    let config = incidents.config.get();
    let loaded = incident.clone();
    let mut w = IncidentWrite::of(incident);
    let status = w.incident.status;
    let invalid = |what: &str| Err(ActionError::Refused(format!("incident {id} is {}: {what}", status.as_str())));
    let with_note = |text: String, note: &Option<String>| match note.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
        Some(n) => format!("{text}: {n}"),
        None => text,
    };
    match &action {
        IncidentUpdate::Acknowledge { note } => {
            if status != Status::Triggered {
                let by = w.incident.acknowledged_at.map(|t| format!(" (at {})", t.format("%Y-%m-%d %H:%M:%S UTC"))).unwrap_or_default();
                return invalid(&format!("only a triggered incident can be acknowledged{by}"));
            }
            w.incident.status = Status::Acknowledged;
            w.incident.acknowledged_at = Some(now);
            stop_escalation(&mut w.incident);
            w.timeline.push(TimelineEntry::new(now, "acknowledged", actor, with_note(format!("Acknowledged by {actor}"), note)));
        }
        IncidentUpdate::Mitigate { note } => {
            if !matches!(status, Status::Triggered | Status::Acknowledged) {
                return invalid("only a triggered or acknowledged incident can be mitigated");
            }
            w.incident.status = Status::Mitigated;
            w.incident.acknowledged_at.get_or_insert(now);
            w.incident.mitigated_at = Some(now);
            stop_escalation(&mut w.incident);
            w.timeline.push(TimelineEntry::new(now, "mitigated", actor, with_note(format!("Mitigated by {actor}"), note)));
        }
        IncidentUpdate::Resolve { note } => {
            if !status.is_open() {
                return invalid("it is already resolved");
            }
            w.incident.acknowledged_at.get_or_insert(now);
            resolve(&mut w, actor, &with_note(format!("Resolved by {actor}"), note), now, incidents.alerting.external_url());
        }
        IncidentUpdate::Close { note } => {
            if status != Status::Resolved {
                return invalid("only a resolved incident can be closed (closing records that its review is done)");
            }
            w.incident.status = Status::Closed;
            w.incident.closed_at = Some(now);
            w.timeline.push(TimelineEntry::new(now, "closed", actor, with_note(format!("Closed by {actor}; review done"), note)));
        }
        IncidentUpdate::Note { text, public } => {
            if text.trim().is_empty() {
                return Err(ActionError::BadInput("a note needs text".into()));
            }
            let mut e = TimelineEntry::new(now, if *public { "status_update" } else { "note" }, actor, text.trim());
            e.public = *public;
            w.timeline.push(e);
        }
        IncidentUpdate::Priority { to, reason } => {
            if reason.trim().is_empty() {
                return Err(ActionError::BadInput("changing the priority needs a reason".into()));
            }
            if *to == w.incident.priority {
                return Err(ActionError::Refused(format!("incident {id} is already {}", to.as_str())));
            }
            w.timeline.push(
                TimelineEntry::new(
                    now,
                    "priority_changed",
                    actor,
                    format!("Priority {} → {} by {actor}: {}", w.incident.priority.as_str(), to.as_str(), reason.trim()),
                )
                .with_data(json!({"from": w.incident.priority, "to": to})),
            );
            w.incident.priority = *to;
        }
        IncidentUpdate::AssignRole { role, person } => {
            if !ROLES.contains(&role.as_str()) {
                return Err(ActionError::BadInput(format!("`{role}` is not an incident role; use one of {}", ROLES.join(", "))));
            }
            if person.trim().is_empty() {
                return Err(ActionError::BadInput("name the person who takes the role".into()));
            }
            let before = w.incident.roles.insert(role.clone(), person.trim().to_string());
            let text = match before {
                Some(b) => format!("{role}: {b} → {} (by {actor})", person.trim()),
                None => format!("{} is {role} (assigned by {actor})", person.trim()),
            };
            w.timeline
                .push(TimelineEntry::new(now, "role_assigned", actor, text).with_data(json!({"role": role, "person": person.trim()})));
        }
        IncidentUpdate::EscalateNow => {
            if !status.is_open() {
                return invalid("a resolved incident is not escalated");
            }
            if w.incident.escalation.is_none() {
                return Err(ActionError::Refused(format!("incident {id} has no escalation policy")));
            }
            escalate(incidents, &config, &mut w, now, Some(actor)).await?;
        }
        IncidentUpdate::AddActionItem { text, owner } => {
            if text.trim().is_empty() {
                return Err(ActionError::BadInput("an action item needs text".into()));
            }
            w.action_items.push(super::ActionItem {
                id: 0,
                incident_id: id,
                text: text.trim().to_string(),
                owner: owner.clone().filter(|o| !o.trim().is_empty()),
                state: "open".into(),
                created_by: actor.into(),
                created_at: now,
                done_at: None,
            });
            let owner = owner.as_deref().map(|o| format!(" (owner {o})")).unwrap_or_default();
            w.timeline.push(TimelineEntry::new(now, "action_item", actor, format!("Action item: {}{owner}", text.trim())));
        }
        IncidentUpdate::ActionItemDone { item } => {
            let items = incidents.store.action_items(Some(id), None).await?;
            let Some(mut a) = items.into_iter().find(|a| a.id == *item) else {
                return Err(ActionError::Refused(format!("incident {id} has no action item {item}")));
            };
            if a.state == "done" {
                return Err(ActionError::Refused(format!("action item {item} is already done")));
            }
            a.state = "done".into();
            a.done_at = Some(now);
            w.timeline.push(TimelineEntry::new(now, "action_item", actor, format!("Action item done: {}", a.text)));
            w.action_items.push(a);
        }
    }
    Ok(commit(incidents, Some(&loaded), &w).await?)
}

fn stop_escalation(i: &mut Incident) {
    if let Some(e) = &mut i.escalation {
        e.next_at = None;
    }
}

/// A person declares an incident that no alert opened.
pub async fn declare(
    incidents: &Incidents,
    actor: &str,
    title: &str,
    priority: Priority,
    services: Vec<String>,
    escalation: Option<String>,
) -> Result<Incident, ActionError> {
    if title.trim().is_empty() {
        return Err(ActionError::BadInput("an incident needs a title".into()));
    }
    let config = incidents.config.get();
    for s in &services {
        if config.service(s).is_none() {
            return Err(ActionError::BadInput(format!("no service is named `{s}`")));
        }
    }
    if let Some(e) = &escalation
        && config.incidents.escalation_policy(e).is_none()
    {
        return Err(ActionError::BadInput(format!("no escalation policy is named `{e}`")));
    }
    let _guard = incidents.lock.lock().await;
    let now = crate::clock::now();
    let mut w = IncidentWrite::of(Incident {
        services,
        escalation: escalation.map(|policy| Escalation { policy, level: 0, round: 0, next_at: Some(now), notified: vec![] }),
        ..Incident::new(title.trim(), priority, actor, now)
    });
    w.timeline.push(TimelineEntry::new(
        now,
        "opened",
        actor,
        format!("Declared by {actor}: {} ({})", priority.as_str(), priority.describe()),
    ));
    let stored = commit(incidents, None, &w).await?;
    incidents.wake.notify_one();
    Ok(stored)
}
