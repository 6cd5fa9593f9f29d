//! Alerts → notifications, with Alertmanager's grouping semantics.
//!
//! Each (receiver, group key) is a group. A new group first flushes after
//! `group_wait`; later flushes come every `group_interval`. A flush sends when the
//! group holds a firing alert the receiver has not been told about, when an alert it
//! was told about has resolved, or when `repeat_interval` has passed since the last
//! notification. Muted alerts (silenced, inhibited, or caused upstream) are left out.
//!
//! What each receiver was last told lives in the notification log, written in the same
//! transaction as the outbox row, so after a restart the dispatcher neither repeats a
//! firing notification nor forgets to send a resolved one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::route::{group_key, group_labels, matching, time_muted};
use super::{Alert, AlertState, Labels, NotifyLogEntry};
use crate::config::Route;
use crate::engine::Engine;
use crate::store::NewNotification;

type GroupId = (String, String);

struct Group {
    next_flush: DateTime<Utc>,
}

struct Member<'a> {
    route: &'a Route,
    group_labels: Labels,
    alerts: Vec<Arc<Alert>>,
}

/// One group an alert belongs to, by route.
struct Placement {
    group: GroupId,
    route: String,
    group_labels: Labels,
}

fn place(root: &Route, labels: &Labels) -> Arc<[Placement]> {
    matching(root, labels)
        .into_iter()
        .map(|route| {
            let group_labels = group_labels(route, labels);
            Placement { group: (route.receiver.clone(), group_key(route, &group_labels)), route: route.id.clone(), group_labels }
        })
        .collect()
}

fn routes_by_id(root: &Route) -> HashMap<&str, &Route> {
    let mut out = HashMap::new();
    let mut stack = vec![root];
    while let Some(r) = stack.pop() {
        out.insert(r.id.as_str(), r);
        stack.extend(r.routes.iter());
    }
    out
}

pub async fn run(engine: Arc<Engine>, stop: CancellationToken) {
    let mut log: HashMap<GroupId, NotifyLogEntry> = loop {
        match engine.store.notify_log().await {
            Ok(entries) => break entries.into_iter().map(|e| ((e.receiver.clone(), e.group_key.clone()), e)).collect(),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the notification log; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
            }
        }
    };
    let mut groups: HashMap<GroupId, Group> = HashMap::new();
    // Where each alert goes, by fingerprint (labels never change under a fingerprint),
    // valid for one configuration: routing a large alert set on every wake-up was the
    // dispatcher's main cost.
    let mut placements: HashMap<String, Arc<[Placement]>> = HashMap::new();
    let mut placed_with: Option<Arc<crate::config::Config>> = None;
    loop {
        let now = crate::clock::now();
        let config = engine.config();
        if !placed_with.as_ref().is_some_and(|c| Arc::ptr_eq(c, &config)) {
            placements.clear();
            placed_with = Some(config.clone());
        }
        let alerts = engine.alerting.alerts();
        let mut placed: Vec<(&Arc<Alert>, Arc<[Placement]>)> = Vec::new();
        if let Some(root) = &config.route {
            for alert in alerts.iter().filter(|a| matches!(a.state, AlertState::Firing | AlertState::Resolved)) {
                let p = match placements.get(&alert.fingerprint) {
                    Some(p) => p.clone(),
                    None => {
                        let p = place(root, &alert.labels);
                        placements.insert(alert.fingerprint.clone(), p.clone());
                        p
                    }
                };
                placed.push((alert, p));
            }
        }
        let routes = config.route.as_ref().map(routes_by_id).unwrap_or_default();
        let mut members: HashMap<&GroupId, Member<'_>> = HashMap::new();
        for (alert, ps) in &placed {
            for p in ps.iter() {
                members
                    .entry(&p.group)
                    .or_insert_with(|| Member { route: routes[p.route.as_str()], group_labels: p.group_labels.clone(), alerts: vec![] })
                    .alerts
                    .push(Arc::clone(alert));
            }
        }
        if placements.len() > 2 * alerts.len() + 1024 {
            let live: HashSet<&str> = alerts.iter().map(|a| a.fingerprint.as_str()).collect();
            placements.retain(|fp, _| live.contains(fp.as_str()));
        }
        for (&id, m) in &members {
            if !groups.contains_key(id) {
                let next_flush = match log.get(id) {
                    Some(prev) => (prev.sent_at + m.route.group_interval).max(now),
                    None => now + m.route.group_wait,
                };
                groups.insert(id.clone(), Group { next_flush });
            }
        }
        groups.retain(|id, _| members.contains_key(id));
        // Check states are only needed (for dependency muting) when a group flushes.
        let mut states = None;
        for (id, group) in groups.iter_mut() {
            if group.next_flush > now {
                continue;
            }
            let states = states.get_or_insert_with(|| engine.states());
            let m = &members[id];
            if let Some(reason) = time_muted(m.route, &config.time_intervals, now) {
                // Alertmanager's semantics: nothing is sent or recorded, so the news
                // goes out at the first flush after the interval ends.
                tracing::debug!(receiver = %id.0, group = %id.1, reason, "route muted by time");
                group.next_flush = now + m.route.group_interval;
                continue;
            }
            match flush(&engine, id, m, log.get(id), &alerts, states, now).await {
                Ok(Some(entry)) => {
                    log.insert(id.clone(), entry);
                    group.next_flush = now + m.route.group_interval;
                }
                Ok(None) => group.next_flush = now + m.route.group_interval,
                // The store refused: nothing was recorded, try again shortly.
                Err(e) => {
                    tracing::error!(receiver = %id.0, group = %id.1, error = %e, "could not enqueue a notification; retrying");
                    group.next_flush = now + chrono::Duration::seconds(1);
                }
            }
        }
        let next = groups.values().map(|g| g.next_flush).min();
        let sleep = next.map_or(std::time::Duration::from_secs(3600), |t| (t - crate::clock::now()).to_std().unwrap_or_default());
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = engine.alerting.wake_dispatcher.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

/// Decides whether the group needs a notification now and enqueues it. Returns the
/// new log entry when the log changed.
async fn flush(
    engine: &Engine,
    id: &GroupId,
    m: &Member<'_>,
    prev: Option<&NotifyLogEntry>,
    all: &[Arc<Alert>],
    states: &HashMap<String, crate::checks::state::CheckState>,
    now: DateTime<Utc>,
) -> Result<Option<NotifyLogEntry>, crate::store::StoreError> {
    let config = engine.config();
    let (receiver, key) = id;
    let told: HashSet<&str> = prev.map(|p| p.firing.iter().map(String::as_str).collect()).unwrap_or_default();
    let firing: Vec<&Alert> = m
        .alerts
        .iter()
        .map(Arc::as_ref)
        .filter(|a| a.state == AlertState::Firing && engine.alerting.mutes(a, all, &config, states, now).is_empty())
        .collect();
    let resolved: Vec<&Alert> =
        m.alerts.iter().map(Arc::as_ref).filter(|a| a.state == AlertState::Resolved && told.contains(a.fingerprint.as_str())).collect();
    let send_resolved = config.receiver(receiver).is_none_or(|r| r.send_resolved);
    let mut firing_fps: Vec<String> = firing.iter().map(|a| a.fingerprint.clone()).collect();
    firing_fps.sort();
    let new_firing = firing_fps.iter().any(|f| !told.contains(f.as_str()));
    let repeat = !firing.is_empty() && prev.is_some_and(|p| (now - p.sent_at).to_std().unwrap_or_default() >= m.route.repeat_interval);
    let resolved_news = !resolved.is_empty() && send_resolved;
    if !(new_firing || repeat || resolved_news) {
        // Nothing to say; still forget alerts that stopped firing, so that if one fires
        // again it is news.
        if let Some(p) = prev
            && p.firing != firing_fps
        {
            let entry = NotifyLogEntry { firing: firing_fps, ..p.clone() };
            engine.store.update_notify_log(&entry).await?;
            return Ok(Some(entry));
        }
        return Ok(None);
    }
    let mut carried: Vec<&Alert> = firing.clone();
    if send_resolved {
        carried.extend(resolved.iter().copied());
    }
    let status = if firing.is_empty() { "resolved" } else { "firing" };
    let payload = payload(receiver, key, &m.group_labels, status, &carried, engine.external_url());
    let mut h = Sha256::new();
    for part in [receiver.as_str(), key.as_str(), &prev.map(|p| p.sent_at.to_rfc3339()).unwrap_or_default()] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    for a in &carried {
        h.update(a.fingerprint.as_bytes());
        h.update(a.state.as_str().as_bytes());
    }
    let entry = NotifyLogEntry { receiver: receiver.clone(), group_key: key.clone(), firing: firing_fps, sent_at: now };
    let n = NewNotification {
        dedup_key: hex::encode(&h.finalize()[..16]),
        receiver: receiver.clone(),
        group_key: key.clone(),
        status: status.into(),
        payload,
        alerts: carried.iter().map(|a| (a.fingerprint.clone(), a.fired_at)).collect(),
        log: entry.clone(),
    };
    if engine.store.enqueue(&n).await?.is_some() {
        engine.metrics.notifications_enqueued.get_or_create(&crate::telemetry::ReceiverLabels { receiver: receiver.clone() }).inc();
        engine.alerting.wake_delivery.notify_waiters();
    }
    Ok(Some(entry))
}

const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// Alertmanager's webhook payload, version 4.
pub fn payload(receiver: &str, group_key: &str, group_labels: &Labels, status: &str, alerts: &[&Alert], external_url: &str) -> Json {
    let common = |pick: &dyn Fn(&Alert) -> &BTreeMap<String, String>| -> BTreeMap<String, String> {
        let Some(first) = alerts.first() else { return BTreeMap::new() };
        pick(first)
            .iter()
            .filter(|(k, v)| alerts.iter().all(|a| pick(a).get(*k) == Some(*v)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    json!({
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": status,
        "receiver": receiver,
        "groupLabels": group_labels,
        "commonLabels": common(&|a| &a.labels),
        "commonAnnotations": common(&|a| &a.annotations),
        "externalURL": external_url,
        "alerts": alerts.iter().map(|a| json!({
            "status": if a.state == AlertState::Firing { "firing" } else { "resolved" },
            "labels": a.labels,
            "annotations": a.annotations,
            "startsAt": a.fired_at.unwrap_or(a.active_since).to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "endsAt": a.resolved_at.map_or(ZERO_TIME.to_string(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            "generatorURL": format!("{external_url}/api/v1/alerts/{}", a.fingerprint),
            "fingerprint": a.fingerprint,
        })).collect::<Vec<_>>(),
    })
}
