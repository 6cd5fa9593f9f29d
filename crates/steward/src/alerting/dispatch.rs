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
use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::Alerting;
use super::route::{group_key, group_labels, matching, time_muted};
use super::{Alert, AlertState, Labels, NotifyLogEntry};
use crate::config::{Config, Route};
use crate::store::NewNotification;

type GroupId = (String, String);

/// When a group flushes next.
struct Timer {
    next_flush: DateTime<Utc>,
}

/// The alerts a group holds now (firing, or resolved and not yet forgotten).
struct Members {
    route: String,
    group_labels: Labels,
    /// By fingerprint: a notification lists its alerts in a stable order.
    alerts: BTreeMap<String, Arc<Alert>>,
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

/// Every group's alerts, kept current from the live state's change feed
/// ([`super::Live::take_changed`]): routing and regrouping every alert on every change
/// made a large ingest quadratic. Valid for one configuration; a reload starts over.
#[derive(Default)]
struct Groups {
    placed_with: Option<Arc<Config>>,
    /// Where each alert in some group is, by fingerprint (labels never change under a
    /// fingerprint, so this holds as long as the configuration does).
    placements: HashMap<String, Arc<[Placement]>>,
    members: HashMap<GroupId, Members>,
}

impl Groups {
    /// Brings the groups up to date with the live alerts.
    fn sync(&mut self, config: &Arc<Config>, live: &super::Live) {
        if self.placed_with.as_ref().is_some_and(|c| Arc::ptr_eq(c, config)) {
            for (fingerprint, alert) in live.take_changed() {
                self.apply(config, fingerprint, alert);
            }
            return;
        }
        *self = Groups { placed_with: Some(config.clone()), ..Groups::default() };
        for alert in live.resync() {
            self.apply(config, alert.fingerprint.clone(), Some(alert));
        }
    }

    /// Moves one alert to where it belongs now (`None`: out of every group).
    fn apply(&mut self, config: &Config, fingerprint: String, alert: Option<Arc<Alert>>) {
        let alert = alert.filter(|a| matches!(a.state, AlertState::Firing | AlertState::Resolved));
        match (alert, &config.route) {
            (Some(alert), Some(root)) => {
                let placements = self.placements.entry(fingerprint.clone()).or_insert_with(|| place(root, &alert.labels));
                for p in placements.iter() {
                    self.members
                        .entry(p.group.clone())
                        .or_insert_with(|| Members {
                            route: p.route.clone(),
                            group_labels: p.group_labels.clone(),
                            alerts: BTreeMap::new(),
                        })
                        .alerts
                        .insert(fingerprint.clone(), alert.clone());
                }
            }
            _ => {
                for p in self.placements.remove(&fingerprint).iter().flat_map(|ps| ps.iter()) {
                    if let Some(m) = self.members.get_mut(&p.group) {
                        m.alerts.remove(&fingerprint);
                        if m.alerts.is_empty() {
                            self.members.remove(&p.group);
                        }
                    }
                }
            }
        }
    }
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

pub async fn run(alerting: Arc<Alerting>, stop: CancellationToken) {
    let mut log: HashMap<GroupId, NotifyLogEntry> = loop {
        match alerting.store.notify_log().await {
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
    let mut timers: HashMap<GroupId, Timer> = HashMap::new();
    let mut groups = Groups::default();
    loop {
        let now = crate::clock::now();
        let config = alerting.config.get();
        groups.sync(&config, &alerting.live);
        let routes = config.route.as_ref().map(routes_by_id).unwrap_or_default();
        for (id, m) in &groups.members {
            if !timers.contains_key(id) {
                let route = routes[m.route.as_str()];
                let next_flush = match log.get(id) {
                    Some(prev) => (prev.sent_at + route.group_interval).max(now),
                    None => now + route.group_wait,
                };
                timers.insert(id.clone(), Timer { next_flush });
            }
        }
        timers.retain(|id, _| groups.members.contains_key(id));
        // Every alert (for inhibition) and check states (for dependency muting) are only
        // needed when a group flushes.
        let mut states = None;
        let mut all = None;
        for (id, timer) in timers.iter_mut() {
            if timer.next_flush > now {
                continue;
            }
            let states = states.get_or_insert_with(|| alerting.checks.states());
            let all = all.get_or_insert_with(|| alerting.alerts());
            let m = &groups.members[id];
            let route = routes[m.route.as_str()];
            if let Some(reason) = time_muted(route, &config.time_intervals, now) {
                // Alertmanager's semantics: nothing is sent or recorded, so the news
                // goes out at the first flush after the interval ends.
                tracing::debug!(receiver = %id.0, group = %id.1, reason, "route muted by time");
                timer.next_flush = now + route.group_interval;
                continue;
            }
            match flush(&alerting, id, route, m, log.get(id), all, states, now).await {
                Ok(Some(entry)) => {
                    log.insert(id.clone(), entry);
                    timer.next_flush = now + route.group_interval;
                }
                Ok(None) => timer.next_flush = now + route.group_interval,
                // The store refused: nothing was recorded, try again shortly.
                Err(e) => {
                    tracing::error!(receiver = %id.0, group = %id.1, error = %e, "could not enqueue a notification; retrying");
                    timer.next_flush = now + chrono::Duration::seconds(1);
                }
            }
        }
        let next = timers.values().map(|t| t.next_flush).min();
        let sleep = next.map_or(std::time::Duration::from_secs(3600), |t| (t - crate::clock::now()).to_std().unwrap_or_default());
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = alerting.wake_dispatcher.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

/// Decides whether the group needs a notification now and enqueues it. Returns the
/// new log entry when the log changed.
#[allow(clippy::too_many_arguments)]
async fn flush(
    alerting: &Alerting,
    id: &GroupId,
    route: &Route,
    m: &Members,
    prev: Option<&NotifyLogEntry>,
    all: &[Arc<Alert>],
    states: &HashMap<String, crate::checks::state::CheckState>,
    now: DateTime<Utc>,
) -> Result<Option<NotifyLogEntry>, crate::store::StoreError> {
    let config = alerting.config.get();
    let (receiver, key) = id;
    let told: HashSet<&str> = prev.map(|p| p.firing.iter().map(String::as_str).collect()).unwrap_or_default();
    let index = super::live::MuteIndex::new(all, &config, states);
    let firing: Vec<&Alert> = m
        .alerts
        .values()
        .map(Arc::as_ref)
        .filter(|a| a.state == AlertState::Firing && !alerting.is_muted(a, &index, &config, now))
        .collect();
    let resolved: Vec<&Alert> =
        m.alerts.values().map(Arc::as_ref).filter(|a| a.state == AlertState::Resolved && told.contains(a.fingerprint.as_str())).collect();
    let send_resolved = config.receiver(receiver).is_none_or(|r| r.send_resolved);
    let mut firing_fps: Vec<String> = firing.iter().map(|a| a.fingerprint.clone()).collect();
    firing_fps.sort();
    let new_firing = firing_fps.iter().any(|f| !told.contains(f.as_str()));
    let repeat = !firing.is_empty() && prev.is_some_and(|p| (now - p.sent_at).to_std().unwrap_or_default() >= route.repeat_interval);
    let resolved_news = !resolved.is_empty() && send_resolved;
    if !(new_firing || repeat || resolved_news) {
        // Nothing to say; still forget alerts that stopped firing, so that if one fires
        // again it is news.
        if let Some(p) = prev
            && p.firing != firing_fps
        {
            let entry = NotifyLogEntry { firing: firing_fps, ..p.clone() };
            alerting.store.update_notify_log(&entry).await?;
            return Ok(Some(entry));
        }
        return Ok(None);
    }
    let mut carried: Vec<&Alert> = firing.clone();
    if send_resolved {
        carried.extend(resolved.iter().copied());
    }
    let status = if firing.is_empty() { "resolved" } else { "firing" };
    let payload = payload_text(receiver, key, &m.group_labels, status, &carried, alerting.external_url());
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
    if alerting.store.enqueue(&n).await?.is_some() {
        alerting.metrics.notifications_enqueued.get_or_create(&crate::telemetry::ReceiverLabels { receiver: receiver.clone() }).inc();
        alerting.notifications_enqueued();
    }
    Ok(Some(entry))
}

const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// Alertmanager's webhook payload, version 4, borrowed from the alerts: serialized
/// straight to text, as it is stored and sent. (Built as a `serde_json::Value`, the tree
/// was built, cloned and dropped for every alert of every flush: a fifth of a large
/// ingest's CPU.) Fields in alphabetical order, as `Value` wrote them.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Payload<'a> {
    alerts: Vec<PayloadAlert<'a>>,
    common_annotations: BTreeMap<&'a str, &'a str>,
    common_labels: BTreeMap<&'a str, &'a str>,
    #[serde(rename = "externalURL")]
    external_url: &'a str,
    group_key: &'a str,
    group_labels: &'a Labels,
    receiver: &'a str,
    status: &'a str,
    truncated_alerts: u32,
    version: &'static str,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct PayloadAlert<'a> {
    annotations: &'a BTreeMap<String, String>,
    ends_at: String,
    fingerprint: &'a str,
    #[serde(rename = "generatorURL")]
    generator_url: String,
    labels: &'a Labels,
    starts_at: String,
    status: &'static str,
}

impl<'a> Payload<'a> {
    fn new(
        receiver: &'a str,
        group_key: &'a str,
        group_labels: &'a Labels,
        status: &'a str,
        alerts: &[&'a Alert],
        external_url: &'a str,
    ) -> Self {
        let common = |pick: &dyn Fn(&'a Alert) -> &'a BTreeMap<String, String>| -> BTreeMap<&'a str, &'a str> {
            let Some(first) = alerts.first() else { return BTreeMap::new() };
            pick(first)
                .iter()
                .filter(|(k, v)| alerts.iter().all(|a| pick(a).get(*k) == Some(*v)))
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect()
        };
        let time = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        Payload {
            alerts: alerts
                .iter()
                .map(|a| PayloadAlert {
                    annotations: &a.annotations,
                    ends_at: a.resolved_at.map_or_else(|| ZERO_TIME.to_string(), time),
                    fingerprint: &a.fingerprint,
                    // The console's page for the alert (people click it in chat and mail).
                    generator_url: format!("{external_url}/console/alerts/{}", a.fingerprint),
                    labels: &a.labels,
                    starts_at: time(a.fired_at.unwrap_or(a.active_since)),
                    status: if a.state == AlertState::Firing { "firing" } else { "resolved" },
                })
                .collect(),
            common_annotations: common(&|a| &a.annotations),
            common_labels: common(&|a| &a.labels),
            external_url,
            group_key,
            group_labels,
            receiver,
            status,
            truncated_alerts: 0,
            version: "4",
        }
    }
}

/// Alertmanager's webhook payload, version 4, as JSON text (what the outbox stores).
pub fn payload_text(receiver: &str, group_key: &str, group_labels: &Labels, status: &str, alerts: &[&Alert], external_url: &str) -> String {
    serde_json::to_string(&Payload::new(receiver, group_key, group_labels, status, alerts, external_url))
        .expect("a payload of strings serializes")
}

/// Alertmanager's webhook payload, version 4, as a value to add to (incident
/// notifications).
pub fn payload(receiver: &str, group_key: &str, group_labels: &Labels, status: &str, alerts: &[&Alert], external_url: &str) -> Json {
    serde_json::to_value(Payload::new(receiver, group_key, group_labels, status, alerts, external_url))
        .expect("a payload of strings serializes")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    const CONFIG: &str = r#"
receivers:
  - {name: default, webhook: {url: "http://127.0.0.1:9/d"}}
  - {name: pager, webhook: {url: "http://127.0.0.1:9/p"}}
  - {name: chat, webhook: {url: "http://127.0.0.1:9/c"}}
route:
  receiver: default
  group_by: [alertname]
  routes:
    - {matchers: ['severity="critical"'], receiver: pager, continue: true}
    - {matchers: ['team="chat"'], receiver: chat, group_by: [alertname, instance]}
"#;

    /// Alert `i`: labels that spread the alerts over several routes and groups.
    fn alert(i: usize, state: AlertState) -> Alert {
        let labels: Labels = [
            ("alertname", format!("A{}", i % 3)),
            ("severity", ["critical", "warning"][i % 2].to_string()),
            ("team", ["chat", "ops", "chat"][i % 3].to_string()),
            ("instance", format!("host-{i}")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let mut a = Alert::inactive(&super::super::fingerprint(&labels), "r", labels, crate::clock::now());
        a.state = state;
        a
    }

    type Snapshot = BTreeMap<GroupId, BTreeSet<(String, &'static str)>>;

    /// Every group's alerts, computed from scratch.
    fn expected(config: &Config, live: &super::super::Live) -> Snapshot {
        let mut out = Snapshot::new();
        for a in live.alerts().iter().filter(|a| matches!(a.state, AlertState::Firing | AlertState::Resolved)) {
            for p in place(config.route.as_ref().unwrap(), &a.labels).iter() {
                out.entry(p.group.clone()).or_default().insert((a.fingerprint.clone(), a.state.as_str()));
            }
        }
        out
    }

    fn kept(groups: &Groups) -> Snapshot {
        groups
            .members
            .iter()
            .map(|(id, m)| (id.clone(), m.alerts.values().map(|a| (a.fingerprint.clone(), a.state.as_str())).collect()))
            .collect()
    }

    proptest! {
        /// The groups kept from the change feed are always those a full regrouping
        /// would build: alerts firing, resolving, going inactive and coming back, in any
        /// order, with the dispatcher looking at any moment, and across a reload.
        #[test]
        fn groups_kept_from_the_change_feed_equal_a_full_regrouping(
            steps in proptest::collection::vec((0usize..12, 0usize..4, any::<bool>()), 1..80)
        ) {
            let config = Arc::new(crate::config::load_str("t.yaml", CONFIG).unwrap_or_else(|d| panic!("{d}")));
            let live = super::super::Live::default();
            let mut groups = Groups::default();
            for (i, (n, state, look)) in steps.iter().enumerate() {
                let state = [AlertState::Inactive, AlertState::Pending, AlertState::Firing, AlertState::Resolved][*state];
                live.publish(alert(*n, state));
                if *look {
                    groups.sync(&config, &live);
                    prop_assert_eq!(kept(&groups), expected(&config, &live), "after step {}", i);
                }
            }
            groups.sync(&config, &live);
            prop_assert_eq!(kept(&groups), expected(&config, &live));
            // A reload (a new configuration) regroups from scratch.
            let reloaded = Arc::new(crate::config::load_str("t.yaml", CONFIG).unwrap_or_else(|d| panic!("{d}")));
            live.publish(alert(0, AlertState::Firing));
            groups.sync(&reloaded, &live);
            prop_assert_eq!(kept(&groups), expected(&reloaded, &live));
        }
    }

    #[test]
    fn a_payload_is_alertmanagers_version_4_with_common_labels() {
        let (a, b) = (alert(0, AlertState::Firing), alert(3, AlertState::Resolved));
        let group_labels: Labels = [("alertname".to_string(), "A0".to_string())].into();
        let text = payload_text("ops", "{}:{alertname=\"A0\"}", &group_labels, "firing", &[&a, &b], "http://steward:8080");
        let v: Json = serde_json::from_str(&text).unwrap();
        assert_eq!(v, payload("ops", "{}:{alertname=\"A0\"}", &group_labels, "firing", &[&a, &b], "http://steward:8080"));
        assert_eq!((v["version"].as_str(), v["truncatedAlerts"].as_u64(), v["status"].as_str()), (Some("4"), Some(0), Some("firing")));
        // Alerts 0 and 3 share alertname and team; severity and instance differ.
        assert_eq!(v["commonLabels"], serde_json::json!({"alertname": "A0", "team": "chat"}));
        assert_eq!(v["alerts"][0]["status"], "firing");
        assert_eq!(v["alerts"][0]["endsAt"], ZERO_TIME);
        assert_eq!(v["alerts"][1]["status"], "resolved");
        assert_eq!(v["alerts"][1]["generatorURL"], format!("http://steward:8080/console/alerts/{}", b.fingerprint));
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 10, "exactly the fields of version 4: {keys:?}");
    }
}
