//! Alert rules → alerts. Each rule is evaluated on a tick (and at once when a check
//! changes health), and its alert moves inactive → pending → firing → resolved.
//! Every state change is written to the store before the dispatcher hears of it; one
//! tick's changes are one transaction (`Live::commit`).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Alerting;
use super::{Alert, AlertEvent, AlertState, Labels, fingerprint};
use crate::checks::state::Health;
use crate::config::{AlertCondition, AlertRule, Config};
use crate::store::StoreError;

/// Window rules read history from the store; they need not run every tick.
const WINDOW_EVERY: Duration = Duration::from_secs(10);

/// The labels of a rule's alert: the check's labels, then `check`, `service`,
/// `severity`, the rule's labels and `alertname` (later ones win).
pub fn alert_labels(rule: &AlertRule, config: &Config) -> Labels {
    let mut labels = Labels::new();
    if let Some(check) = rule.when.check() {
        if let Some(spec) = config.check(check) {
            labels.extend(spec.labels.clone());
            if let Some(svc) = &spec.service {
                labels.insert("service".into(), svc.clone());
            }
        }
        labels.insert("check".into(), check.to_string());
    }
    labels.insert("severity".into(), rule.severity.clone());
    labels.extend(rule.labels.clone());
    labels.insert("alertname".into(), rule.name.clone());
    labels
}

fn window_start(now: DateTime<Utc>, window: Duration) -> DateTime<Utc> {
    now - chrono::Duration::from_std(window).unwrap_or_default()
}

/// Whether a rule's condition holds now, and the value that decided it.
async fn condition(alerting: &Alerting, rule: &AlertRule, now: DateTime<Utc>) -> Result<Option<f64>, StoreError> {
    match &rule.when {
        AlertCondition::CheckUnhealthy { check } => Ok(alerting.checks.state(check).filter(|s| s.health == Health::Unhealthy).map(|_| 1.0)),
        AlertCondition::FailureRatio { check, op, threshold, window } => {
            let recent = alerting.results.results_since(check, window_start(now, *window)).await?;
            if recent.is_empty() {
                return Ok(None);
            }
            let ratio = recent.iter().filter(|r| !r.healthy).count() as f64 / recent.len() as f64;
            Ok(op.holds(ratio, *threshold).then_some(ratio))
        }
        // Evaluated against Prometheus by `promql`, never here; forecasts over checks by
        // `forecasts::over_check`, which also writes the annotation.
        AlertCondition::Query { .. } | AlertCondition::Forecast(_) => Ok(None),
        AlertCondition::SloBurn { slo, window } => {
            let config = alerting.config.get();
            let Some(s) = config.slos.iter().find(|s| &s.name == slo) else { return Ok(None) };
            let reading = alerting.checks.slo_tallies().read_burn(alerting.checks.store(), s, *window, now.timestamp()).await?;
            Ok(reading.filter(|r| r.fires).and_then(|r| r.long_burn))
        }
        AlertCondition::Latency { check, quantile, op, threshold_ms, window } => {
            let recent = alerting.results.results_since(check, window_start(now, *window)).await?;
            let mut latencies: Vec<f64> = recent.iter().map(|r| r.latency_ms).collect();
            if latencies.is_empty() {
                return Ok(None);
            }
            latencies.sort_by(f64::total_cmp);
            let rank = ((latencies.len() as f64 * quantile).ceil() as usize).clamp(1, latencies.len()) - 1;
            let value = latencies[rank];
            Ok(op.holds(value, *threshold_ms).then_some(value))
        }
    }
}

/// The next state of an alert given whether its condition holds; `None` = no change.
pub fn step(alert: &Alert, holds: Option<f64>, rule: &AlertRule, now: DateTime<Utc>) -> Option<Alert> {
    let mut next = alert.clone();
    let since = |t: DateTime<Utc>| (now - t).to_std().unwrap_or_default();
    match (alert.state, holds) {
        (AlertState::Inactive | AlertState::Resolved, Some(v)) => {
            next.active_since = now;
            next.last_true = Some(now);
            next.value = Some(v);
            next.resolved_at = None;
            if rule.for_.is_zero() {
                next.state = AlertState::Firing;
                next.fired_at = Some(now);
            } else {
                next.state = AlertState::Pending;
                next.fired_at = None;
            }
        }
        (AlertState::Pending, Some(v)) => {
            next.last_true = Some(now);
            next.value = Some(v);
            if since(alert.active_since) >= rule.for_ {
                next.state = AlertState::Firing;
                next.fired_at = Some(now);
            }
        }
        (AlertState::Pending, None) => next.state = AlertState::Inactive,
        (AlertState::Firing, Some(v)) => {
            next.last_true = Some(now);
            next.value = Some(v);
        }
        (AlertState::Firing, None) => {
            let held_until = alert.last_true.unwrap_or(alert.active_since);
            if since(held_until) >= rule.keep_firing_for {
                next.state = AlertState::Resolved;
                next.resolved_at = Some(now);
            }
        }
        (AlertState::Inactive | AlertState::Resolved, None) => {}
    }
    (next != *alert).then_some(next)
}

/// Moves one alert of `rule` given whether its condition holds (and the value that
/// decided it): the changed alert and its state change, if any; `None` = no change.
pub fn advance(rule: &AlertRule, current: &Alert, holds: Option<f64>, now: DateTime<Utc>) -> Option<(Alert, Option<AlertEvent>)> {
    let mut next = step(current, holds, rule, now)?;
    next.annotations = rule.annotations.iter().map(|(k, t)| (k.clone(), t.render(&current.labels, next.value))).collect();
    if let Some(link) = &rule.runbook {
        // Whoever is paged sees what to run; a rule's own `runbook` annotation wins.
        let command = super::runbook_link::command(link, &next);
        let text = if link.run { format!("started automatically: {command}") } else { command };
        next.annotations.entry("runbook".into()).or_insert(text);
    }
    let event = (next.state != current.state).then(|| AlertEvent {
        fingerprint: current.fingerprint.clone(),
        rule: rule.name.clone(),
        at: now,
        from: current.state,
        to: next.state,
        value: next.value,
    });
    Some((next, event))
}

/// Evaluation state kept between ticks.
#[derive(Default)]
pub struct Evaluator {
    last_window_eval: HashMap<String, DateTime<Utc>>,
}

impl Evaluator {
    /// Evaluates every rule once; returns whether any alert changed state.
    pub async fn tick(&mut self, alerting: &Alerting, now: DateTime<Utc>) -> bool {
        // Whole milliseconds, as stored: a firing time must equal its stored copy.
        let now = crate::clock::truncate(now);
        let config = alerting.config.get();
        let mut changes = Vec::new();
        for rule in config.alerts.iter().filter(|r| !super::promql::is_promql(&r.when)) {
            let windowed = !matches!(rule.when, AlertCondition::CheckUnhealthy { .. });
            if windowed {
                let due = self.last_window_eval.get(&rule.name).is_none_or(|t| (now - *t).to_std().unwrap_or_default() >= WINDOW_EVERY);
                if !due {
                    continue;
                }
                self.last_window_eval.insert(rule.name.clone(), now);
            }
            let (holds, fit) = match &rule.when {
                AlertCondition::Forecast(f) => match super::forecasts::over_check(alerting.results.as_ref(), f, now).await {
                    Ok(Some((eta, fit))) => (Ok(Some(eta)), Some(fit)),
                    Ok(None) => (Ok(None), None),
                    Err(e) => (Err(e), None),
                },
                _ => (condition(alerting, rule, now).await, None),
            };
            let holds = match holds {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!(alert = %rule.name, error = %e, "alert rule could not be evaluated; its alert keeps its state");
                    continue;
                }
            };
            let labels = alert_labels(rule, &config);
            let fp = fingerprint(&labels);
            let current = alerting.alert(&fp).unwrap_or_else(|| Alert::inactive(&fp, &rule.name, labels, now));
            changes.extend(advance(rule, &current, holds, now).map(|(mut next, event)| {
                if let Some(fit) = fit {
                    next.annotations.entry("forecast".into()).or_insert(fit);
                }
                (next, event)
            }));
        }
        let mut state_changed = alerting.commit(changes, now).await;
        state_changed |= alerting.resolve_orphans(&config, now).await;
        state_changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(for_: u64, keep: u64) -> AlertRule {
        let c = crate::config::load_str(
            "t.yaml",
            &format!(
                "checks: [{{name: api, tcp: {{address: '127.0.0.1:1'}}}}]\nalerts: [{{name: A, when: check api unhealthy, for: {for_}s, keep_firing_for: {keep}s}}]"
            ),
        )
        .unwrap();
        c.alerts[0].clone()
    }

    fn inactive(now: DateTime<Utc>) -> Alert {
        Alert::inactive("f", "A", Labels::new(), now)
    }

    #[test]
    fn pending_for_then_firing_then_resolved() {
        let t0 = crate::clock::now();
        let s = |n: i64| t0 + chrono::Duration::seconds(n);
        let r = rule(60, 0);
        let a = step(&inactive(t0), Some(1.0), &r, t0).unwrap();
        assert_eq!(a.state, AlertState::Pending);
        assert!(step(&a, Some(1.0), &r, s(59)).is_some_and(|a| a.state == AlertState::Pending));
        let a = step(&a, Some(1.0), &r, s(60)).unwrap();
        assert_eq!((a.state, a.fired_at), (AlertState::Firing, Some(s(60))));
        let a = step(&a, None, &r, s(61)).unwrap();
        assert_eq!((a.state, a.resolved_at), (AlertState::Resolved, Some(s(61))));
        // A pending alert whose condition clears goes back to inactive without firing.
        let p = step(&inactive(t0), Some(1.0), &r, t0).unwrap();
        assert_eq!(step(&p, None, &r, s(5)).unwrap().state, AlertState::Inactive);
    }

    #[test]
    fn keep_firing_for_damps_flapping() {
        let t0 = crate::clock::now();
        let s = |n: i64| t0 + chrono::Duration::seconds(n);
        let r = rule(0, 30);
        let a = step(&inactive(t0), Some(1.0), &r, t0).unwrap();
        assert_eq!(a.state, AlertState::Firing);
        assert!(step(&a, None, &r, s(29)).is_none(), "still within keep_firing_for");
        assert_eq!(step(&a, None, &r, s(30)).unwrap().state, AlertState::Resolved);
    }
}
