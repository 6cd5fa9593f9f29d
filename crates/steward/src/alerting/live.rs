//! The alerting subsystem's context ([`Alerting`]) and the live state it holds
//! ([`Live`]: alerts by fingerprint, silences, rule health), shared by the evaluator,
//! dispatcher, delivery workers and the API.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use super::matcher::matches_all;
use super::promql::RuleHealth;
use super::route::{matching, time_muted};
use super::{Alert, AlertEvent, AlertSource, AlertState, Mute, Silence};
use crate::checks::Checks;
use crate::checks::state::{CheckState, Health};
use crate::config::{Config, ConfigView};
use crate::store::{AlertStore, CheckStore, StoreError};
use crate::telemetry::Metrics;

/// The alerting subsystem: what its stages share, and the only way in for the rest of
/// Steward (which reads alerts and silences here and never takes alerting's locks).
pub struct Alerting {
    pub(super) live: Live,
    pub(super) store: Arc<dyn AlertStore>,
    /// Window rules read check results.
    pub(super) results: Arc<dyn CheckStore>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) config: ConfigView,
    /// Rules read check states; dependencies read them to mute.
    pub(super) checks: Arc<Checks>,
    external_url: String,
    /// Told whenever an alert changes state (the incident manager runs a pass).
    alert_changed: Arc<Notify>,
    /// A check changed health: evaluate now rather than at the next tick (the checks
    /// subsystem holds the other end).
    pub(super) wake_evaluator: Arc<Notify>,
    /// An alert changed state or a silence changed: regroup now.
    pub(super) wake_dispatcher: Notify,
    /// A notification was enqueued.
    pub(super) wake_delivery: Notify,
    /// Received alerts are read, changed and saved under this lock, so two deliveries
    /// of the same alert (an Alertmanager HA pair) cannot interleave.
    pub(super) ingest: tokio::sync::Mutex<()>,
}

/// Alerts, silences and rule health as they are now, in memory.
#[derive(Default)]
pub struct Live {
    alerts: Mutex<Alerts>,
    silences: RwLock<Vec<Silence>>,
    rule_health: Mutex<HashMap<String, RuleHealth>>,
    /// When each alert was last written by [`Live::commit`].
    persisted_at: Mutex<HashMap<String, DateTime<Utc>>>,
}

#[derive(Default)]
struct Alerts {
    /// Shared, so the dispatcher's and API's snapshots copy pointers, not alerts.
    by_fingerprint: HashMap<String, Arc<Alert>>,
    /// Fingerprints changed since the dispatcher last took them ([`Live::take_changed`]):
    /// its groups follow these instead of rescanning every alert on every change, which
    /// was the main cost of a large ingest. Changed under the same lock as the alerts, so
    /// no change is published without being in the feed.
    changed: HashSet<String>,
}

impl Alerts {
    fn insert(&mut self, alert: Arc<Alert>) {
        self.changed.insert(alert.fingerprint.clone());
        self.by_fingerprint.insert(alert.fingerprint.clone(), alert);
    }

    fn remove(&mut self, fingerprint: &str) {
        self.changed.insert(fingerprint.to_string());
        self.by_fingerprint.remove(fingerprint);
    }

    /// Publishes an alert's new state; an inactive alert leaves the live set.
    fn put(&mut self, alert: Alert) {
        if alert.state == AlertState::Inactive {
            self.remove(&alert.fingerprint);
        } else {
            self.insert(Arc::new(alert));
        }
    }

    fn active(&self) -> Vec<Arc<Alert>> {
        self.by_fingerprint.values().filter(|a| a.state != AlertState::Inactive).cloned().collect()
    }
}

/// How stale a firing alert's stored `last_true` and value may get (see [`Live::commit`]).
pub const REFRESH_PERSIST_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// What the alerting subsystem is built from ([`Alerting::load`]).
pub struct AlertingParts {
    pub store: Arc<dyn AlertStore>,
    pub results: Arc<dyn CheckStore>,
    pub metrics: Arc<Metrics>,
    pub config: ConfigView,
    pub checks: Arc<Checks>,
    /// How people reach this server: each alert's `generatorURL` links to it.
    pub external_url: String,
    /// Told whenever an alert changes state.
    pub alert_changed: Arc<Notify>,
    /// Told by the checks subsystem whenever a check changes health.
    pub health_changed: Arc<Notify>,
}

impl Alerting {
    /// Loads alerts and silences from the store (start-up).
    pub async fn load(parts: AlertingParts) -> Result<Arc<Alerting>, StoreError> {
        let AlertingParts { store, results, metrics, config, checks, external_url, alert_changed, health_changed } = parts;
        let live = Live::default();
        live.alerts.lock().expect("alerts lock").by_fingerprint =
            store.load_alerts().await?.into_iter().map(|a| (a.fingerprint.clone(), Arc::new(a))).collect();
        *live.silences.write().expect("silences lock") = store.silences().await?;
        Ok(Arc::new(Alerting {
            live,
            store,
            results,
            metrics,
            config,
            checks,
            external_url,
            alert_changed,
            wake_evaluator: health_changed,
            wake_dispatcher: Notify::new(),
            wake_delivery: Notify::new(),
            ingest: tokio::sync::Mutex::new(()),
        }))
    }

    pub fn external_url(&self) -> &str {
        &self.external_url
    }

    /// A notification was enqueued (by alerting or by anyone else): delivery looks now.
    pub fn notifications_enqueued(&self) {
        self.wake_delivery.notify_waiters();
    }

    pub fn alert(&self, fingerprint: &str) -> Option<Alert> {
        self.live.alert(fingerprint)
    }

    /// Every alert that is not inactive, in no particular order.
    pub fn alerts(&self) -> Vec<Arc<Alert>> {
        self.live.alerts()
    }

    pub fn silences(&self) -> Vec<Silence> {
        self.live.silences()
    }

    /// Re-reads silences from the store after one was created or expired.
    pub async fn reload_silences(&self) -> Result<(), StoreError> {
        self.live.set_silences(self.store.silences().await?);
        self.wake_dispatcher.notify_one();
        Ok(())
    }

    pub fn rule_health(&self, rule: &str) -> Option<RuleHealth> {
        self.live.rule_health(rule)
    }

    /// Why `alert` is muted now: active silences, maintenance windows, inhibit rules,
    /// failing dependencies, looked up in `index` — the caller's snapshot of alerts and
    /// check states, built once for the many alerts it asks about: each alert costs
    /// lookups, not a scan of every alert and check (listing 20,000 alerts took 36 s
    /// when it scanned).
    pub fn mutes_in(&self, alert: &Alert, index: &MuteIndex, config: &Config, now: DateTime<Utc>) -> Vec<Mute> {
        self.collect_mutes(alert, index, config, now, false)
    }

    /// Whether anything mutes `alert` (what [`Alerting::mutes_in`] would list), stopping
    /// at the first: counting or filtering thousands of alerts builds no lists.
    pub fn is_muted(&self, alert: &Alert, index: &MuteIndex, config: &Config, now: DateTime<Utc>) -> bool {
        !self.collect_mutes(alert, index, config, now, true).is_empty()
    }

    fn collect_mutes(&self, alert: &Alert, index: &MuteIndex, config: &Config, now: DateTime<Utc>, first_only: bool) -> Vec<Mute> {
        let mut out = Vec::new();
        for s in self.live.silences.read().expect("silences lock").iter() {
            if s.is_active(now) && matches_all(&s.matchers, &alert.labels) {
                out.push(Mute::Silence { id: s.id.clone(), comment: s.comment.clone() });
                if first_only {
                    return out;
                }
            }
        }
        for w in &config.maintenance_windows {
            if !matches_all(&w.matchers, &alert.labels) {
                continue;
            }
            if let Some(until) = w.open_until(now, &config.time_intervals) {
                out.push(Mute::Maintenance { window: w.name.clone(), comment: w.comment.clone(), until });
                if first_only {
                    return out;
                }
            }
        }
        let other =
            |candidates: Option<&Vec<Source>>| -> Option<Source> { candidates?.iter().find(|(fp, _)| *fp != alert.fingerprint).cloned() };
        for (rule, sources) in config.inhibit_rules.iter().zip(&index.inhibit_sources) {
            if !matches_all(&rule.target, &alert.labels) {
                continue;
            }
            let key: Vec<Option<String>> = rule.equal.iter().map(|l| alert.labels.get(l).cloned()).collect();
            if let Some((fp, name)) = other(sources.get(&key)) {
                out.push(Mute::Inhibition { by_alert: name, by_fingerprint: fp });
                if first_only {
                    return out;
                }
            }
        }
        if let Some(service) = alert.labels.get("service") {
            for upstream in index.upstream.get(service).into_iter().flatten() {
                let cause = other(index.firing_by_service.get(upstream))
                    .map(|(_, rule)| format!("alert {rule} is firing"))
                    .or_else(|| index.failing_check_by_service.get(upstream).cloned());
                if let Some(cause) = cause {
                    out.push(Mute::Dependency { service: upstream.clone(), cause });
                    if first_only {
                        return out;
                    }
                }
            }
        }
        out
    }

    /// Persists then publishes an alert. Returns false (and keeps the old state, so the
    /// change is retried at the next evaluation) when the store refused it.
    pub async fn save(&self, alert: Alert, event: Option<&AlertEvent>) -> bool {
        let rule = alert.rule.clone();
        match self.record(alert, event).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(alert = %rule, error = %e, "could not record an alert change; retrying at the next evaluation");
                false
            }
        }
    }

    /// Persists then publishes an alert; on a store error nothing changes.
    pub async fn record(&self, alert: Alert, event: Option<&AlertEvent>) -> Result<(), StoreError> {
        self.record_all(vec![(alert, event.cloned())]).await
    }

    /// Applies one evaluation's changes. State changes are always written (in one
    /// transaction) before they are published. A change that only refreshes a firing
    /// alert's value and `last_true` is written at most every [`REFRESH_PERSIST_EVERY`]
    /// and published at once: otherwise every firing alert would cost a write on every
    /// evaluation. After a crash, `keep_firing_for` may therefore count from up to that
    /// much earlier. Returns whether any alert changed state; on a store error nothing
    /// changes (the next evaluation retries).
    pub async fn commit(&self, changes: Vec<(Alert, Option<AlertEvent>)>, now: DateTime<Utc>) -> bool {
        let every = chrono::Duration::from_std(REFRESH_PERSIST_EVERY).unwrap_or_default();
        let (persist, refresh): (Vec<_>, Vec<_>) = {
            let persisted = self.live.persisted_at.lock().expect("persisted lock");
            changes.into_iter().partition(|(a, e)| e.is_some() || persisted.get(&a.fingerprint).is_none_or(|t| now - *t >= every))
        };
        let state_changed = persist.iter().any(|(_, e)| e.is_some());
        let written: Vec<(String, bool)> = persist.iter().map(|(a, _)| (a.fingerprint.clone(), a.state == AlertState::Inactive)).collect();
        if let Err(e) = self.record_all(persist).await {
            tracing::error!(error = %e, "could not record alert changes; retrying at the next evaluation");
            return false;
        }
        let mut persisted = self.live.persisted_at.lock().expect("persisted lock");
        for (fp, inactive) in written {
            if inactive {
                persisted.remove(&fp);
            } else {
                persisted.insert(fp, now);
            }
        }
        drop(persisted);
        let mut alerts = self.live.alerts.lock().expect("alerts lock");
        for (a, _) in refresh {
            alerts.insert(Arc::new(a));
        }
        state_changed
    }

    /// Persists many alert changes in one transaction, then publishes them all; on a
    /// store error none is recorded or published.
    pub async fn record_all(&self, changes: Vec<(Alert, Option<AlertEvent>)>) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        self.store.save_alerts(&changes).await?;
        let mut any_event = false;
        let mut alerts = self.live.alerts.lock().expect("alerts lock");
        for (alert, event) in changes {
            if let Some(e) = &event {
                any_event = true;
                match e.to {
                    AlertState::Firing => tracing::warn!(alert = %e.rule, fingerprint = %e.fingerprint, value = ?e.value, "alert firing"),
                    to => {
                        tracing::info!(alert = %e.rule, fingerprint = %e.fingerprint, from = e.from.as_str(), to = to.as_str(), "alert changed state")
                    }
                }
            }
            alerts.put(alert);
        }
        drop(alerts);
        if any_event {
            self.wake_dispatcher.notify_one();
            self.alert_changed.notify_one();
        }
        Ok(())
    }

    /// Alerts whose rule is gone (a reload removed or renamed it) resolve, so receivers
    /// hear the end of what they were told began.
    pub async fn resolve_orphans(&self, config: &Config, now: DateTime<Utc>) -> bool {
        let rules: HashSet<&str> = config.alerts.iter().map(|r| r.name.as_str()).collect();
        let orphans: Vec<Arc<Alert>> = self
            .alerts()
            .into_iter()
            .filter(|a| {
                a.source == AlertSource::Rule
                    && matches!(a.state, AlertState::Firing | AlertState::Pending)
                    && !rules.contains(a.rule.as_str())
            })
            .collect();
        let mut changed = false;
        for a in orphans {
            let mut next = Alert::clone(&a);
            next.state = if a.state == AlertState::Firing { AlertState::Resolved } else { AlertState::Inactive };
            next.resolved_at = Some(now);
            let event = AlertEvent {
                fingerprint: a.fingerprint.clone(),
                rule: a.rule.clone(),
                at: now,
                from: a.state,
                to: next.state,
                value: a.value,
            };
            changed |= self.save(next, Some(&event)).await;
        }
        changed
    }
}

impl Live {
    pub fn alert(&self, fingerprint: &str) -> Option<Alert> {
        self.alerts.lock().expect("alerts lock").by_fingerprint.get(fingerprint).map(|a| Alert::clone(a))
    }

    /// Every alert that is not inactive, in no particular order.
    pub fn alerts(&self) -> Vec<Arc<Alert>> {
        self.alerts.lock().expect("alerts lock").active()
    }

    /// The alerts changed since the last call (or [`Live::resync`]), as they are now:
    /// `None` when gone or inactive. The dispatcher's change feed; it has one reader.
    pub fn take_changed(&self) -> Vec<(String, Option<Arc<Alert>>)> {
        let mut alerts = self.alerts.lock().expect("alerts lock");
        let changed = std::mem::take(&mut alerts.changed);
        changed
            .into_iter()
            .map(|fp| {
                let now = alerts.by_fingerprint.get(&fp).filter(|a| a.state != AlertState::Inactive).cloned();
                (fp, now)
            })
            .collect()
    }

    /// Every alert that is not inactive, and the change feed emptied: the starting point
    /// for a reader of [`Live::take_changed`], taken under one lock so no change falls
    /// between the two.
    pub fn resync(&self) -> Vec<Arc<Alert>> {
        let mut alerts = self.alerts.lock().expect("alerts lock");
        alerts.changed.clear();
        alerts.active()
    }

    /// Publishes an alert without a store (tests of the stages after this one).
    #[cfg(test)]
    pub fn publish(&self, alert: Alert) {
        self.alerts.lock().expect("alerts lock").put(alert);
    }

    pub fn rule_health(&self, rule: &str) -> Option<RuleHealth> {
        self.rule_health.lock().expect("rule health lock").get(rule).cloned()
    }

    pub fn set_rule_health(&self, rule: &str, health: RuleHealth) {
        self.rule_health.lock().expect("rule health lock").insert(rule.to_string(), health);
    }

    pub fn silences(&self) -> Vec<Silence> {
        self.silences.read().expect("silences lock").clone()
    }

    fn set_silences(&self, silences: Vec<Silence>) {
        *self.silences.write().expect("silences lock") = silences;
    }
}

/// Routes that would take `alert` but send nothing now because of their time
/// intervals (for display; the dispatcher checks routes itself).
pub fn route_mutes(alert: &Alert, config: &Config, now: DateTime<Utc>) -> Vec<Mute> {
    let Some(root) = &config.route else { return vec![] };
    matching(root, &alert.labels)
        .into_iter()
        .filter_map(|r| {
            time_muted(r, &config.time_intervals, now).map(|reason| Mute::TimeInterval { receiver: r.receiver.clone(), reason })
        })
        .collect()
}

/// What [`Alerting::mutes_in`] looks up, built once from a snapshot of the alerts and
/// check states: for each question it used to answer by scanning every alert or check,
/// the first answer in the same order the scan found it (and a second, for when the
/// first is the alert being asked about).
pub struct MuteIndex {
    /// service label → firing alerts with it, first two.
    firing_by_service: HashMap<String, Vec<Source>>,
    /// service → why its first failing check (config order) counts as a cause.
    failing_check_by_service: HashMap<String, String>,
    /// Per inhibit rule (config order): the `equal` labels' values → firing sources.
    inhibit_sources: Vec<HashMap<Vec<Option<String>>, Vec<Source>>>,
    /// Every configured service → what it depends on, directly or not.
    upstream: HashMap<String, Vec<String>>,
}

/// A firing alert that may mute another: (fingerprint, rule).
type Source = (String, String);

impl MuteIndex {
    pub fn new(all: &[Arc<Alert>], config: &Config, checks: &HashMap<String, CheckState>) -> MuteIndex {
        MuteIndex::with_failing_checks(all, config, failing_checks_by_service(config, checks))
    }

    /// [`MuteIndex::new`] on the live check states, read in place: the states' lock is
    /// held only to find the failing checks, not to index 20,000 alerts.
    pub fn of_live(all: &[Arc<Alert>], config: &Config, checks: &Checks) -> MuteIndex {
        MuteIndex::with_failing_checks(all, config, checks.with_states(|states| failing_checks_by_service(config, states)))
    }

    fn with_failing_checks(all: &[Arc<Alert>], config: &Config, failing_check_by_service: HashMap<String, String>) -> MuteIndex {
        let firing: Vec<&Arc<Alert>> = all.iter().filter(|a| a.state == AlertState::Firing).collect();
        let push = |list: &mut Vec<Source>, a: &Alert| {
            if list.len() < 2 {
                list.push((a.fingerprint.clone(), a.rule.clone()));
            }
        };
        let mut firing_by_service: HashMap<String, Vec<Source>> = HashMap::new();
        for a in &firing {
            if let Some(service) = a.labels.get("service") {
                push(firing_by_service.entry(service.clone()).or_default(), a);
            }
        }
        let inhibit_sources = config
            .inhibit_rules
            .iter()
            .map(|rule| {
                let mut by_key: HashMap<Vec<Option<String>>, Vec<Source>> = HashMap::new();
                for a in firing.iter().filter(|a| matches_all(&rule.source, &a.labels)) {
                    let key = rule.equal.iter().map(|l| a.labels.get(l).cloned()).collect();
                    push(by_key.entry(key).or_default(), a);
                }
                by_key
            })
            .collect();
        let upstream = config.services.iter().map(|sv| (sv.name.clone(), upstream_services(config, &sv.name))).collect();
        MuteIndex { firing_by_service, failing_check_by_service, inhibit_sources, upstream }
    }
}

/// Each service's first failing check (config order) and why it counts as a cause.
fn failing_checks_by_service(config: &Config, checks: &HashMap<String, CheckState>) -> HashMap<String, String> {
    // A failing run below the threshold counts too: checks cross their thresholds at
    // different moments, and the dependent service's alert must not page in the
    // seconds before the cause's does.
    let mut failing_check_by_service: HashMap<String, String> = HashMap::new();
    for c in &config.checks {
        let (Some(service), Some(s)) = (c.service.as_ref(), checks.get(&c.name)) else { continue };
        if failing_check_by_service.contains_key(service) {
            continue;
        }
        let cause = if s.health == Health::Unhealthy {
            format!("check {} is unhealthy", c.name)
        } else if s.consecutive_failures > 0 {
            format!("check {} is failing ({} of {} failures)", c.name, s.consecutive_failures, c.failure_threshold)
        } else {
            continue;
        };
        failing_check_by_service.insert(service.clone(), cause);
    }
    failing_check_by_service
}

/// Every service `service` depends on, directly or not (config guarantees no cycles).
pub fn upstream_services(config: &Config, service: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut stack = vec![service.to_string()];
    while let Some(s) = stack.pop() {
        if let Some(svc) = config.service(&s) {
            for dep in &svc.depends_on {
                if !out.contains(dep) {
                    out.push(dep.clone());
                    stack.push(dep.clone());
                }
            }
        }
    }
    out
}
