//! Deciding when people must act, and telling them reliably.
//!
//! # Data flow
//! check states and results → [`evaluate`] (rules → alerts: pending → firing →
//! resolved, persisted with every change) → [`dispatch`] (routing tree, grouping,
//! silences, inhibition, service dependencies → one durable outbox row per
//! notification) → [`deliver`] (one worker per receiver: retries with backoff and
//! jitter until delivered).
//!
//! **Invariants.**
//! - An alert's state is written to the store before anything is sent about it, so a
//!   restart resumes `for` timers and knows what is firing. (A firing alert's value
//!   and `last_true` alone are written at most every 10 s; see `Live::commit`.)
//! - A notification is enqueued in the same transaction that records it in the
//!   notification log (what each receiver was last told about each group). A crash
//!   therefore either did both or neither: never a duplicate firing notification, never
//!   a lost resolved one.
//! - Delivery is at least once. Each notification carries a stable dedup key
//!   (`Idempotency-Key` header, PagerDuty `dedup_key`), so a receiver can drop the
//!   rare redelivery after a crash between sending and recording success.
//! - A receiver only ever blocks its own queue: each has its own worker and timeout.

pub mod deliver;
pub mod dispatch;
pub mod evaluate;
pub mod ingest;
pub mod live;
pub mod matcher;
pub mod promql;
pub mod render;
pub mod route;
pub mod runbook_link;
pub mod template;
pub mod time_interval;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

pub use live::{Alerting, AlertingParts, Live};
pub use matcher::{Labels, Matcher};

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::telemetry::StateLabels;

/// How often rules are evaluated when no check changed health in between.
const EVALUATION_TICK: Duration = Duration::from_secs(1);
/// Resolved alerts are kept this long for the API, then forgotten.
const RESOLVED_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Runs alerting until `stop`: the evaluator here, the dispatcher and one delivery
/// worker per receiver beside it.
///
/// Supervised (see [`crate::telemetry::supervise`]): if this loop panics, the tasks it
/// started stop with it (their token is a child cancelled on unwind), so the restart
/// never runs two dispatchers or two workers for one receiver.
pub async fn run(alerting: Arc<Alerting>, stop: CancellationToken) {
    let stop = stop.child_token();
    let _stop_ours_on_unwind = stop.clone().drop_guard();
    let mut evaluator = evaluate::Evaluator::default();
    let mut workers = deliver::Workers::new();
    deliver::release_claims_of_gone_processes(&alerting).await;
    workers.sync(&alerting, &stop);
    let metrics = alerting.metrics.clone();
    let dispatcher = {
        let (alerting, stop) = (alerting.clone(), stop.clone());
        crate::telemetry::supervise("alert_dispatch", metrics.clone(), move || dispatch::run(alerting.clone(), stop.clone()))
    };
    let promql = {
        let (alerting, stop) = (alerting.clone(), stop.clone());
        crate::telemetry::supervise("promql_rules", metrics, move || promql::run(alerting.clone(), stop.clone()))
    };
    let mut tick = tokio::time::interval(EVALUATION_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut housekeeping = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
            _ = alerting.wake_evaluator.notified() => {}
        }
        let now = crate::clock::now();
        evaluator.tick(&alerting, now).await;
        ingest::expire(&alerting, now).await;
        workers.sync(&alerting, &stop);
        let alerts = alerting.alerts();
        for state in [AlertState::Pending, AlertState::Firing, AlertState::Resolved] {
            let n = alerts.iter().filter(|a| a.state == state).count();
            alerting.metrics.alerts.get_or_create(&StateLabels { state: state.as_str().into() }).set(n as i64);
        }
        if housekeeping.elapsed() >= Duration::from_secs(5) {
            housekeeping = tokio::time::Instant::now();
            if let Ok((depth, oldest)) = alerting.store.outbox_depth().await {
                alerting.metrics.outbox_depth.set(depth as i64);
                alerting.metrics.outbox_oldest_age.set(oldest.map_or(0.0, |t| (now - t).num_milliseconds() as f64 / 1000.0));
            }
            let before = now - chrono::Duration::from_std(RESOLVED_RETENTION).unwrap_or_default();
            if let Err(e) = alerting.store.forget_resolved(before).await {
                tracing::warn!(error = %e, "could not forget old resolved alerts");
            }
        }
    }
    let _ = dispatcher.await;
    let _ = promql.await;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Inactive,
    Pending,
    Firing,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<AlertState> {
        match s {
            "inactive" => Some(AlertState::Inactive),
            "pending" => Some(AlertState::Pending),
            "firing" => Some(AlertState::Firing),
            "resolved" => Some(AlertState::Resolved),
            _ => None,
        }
    }
}

/// One alert: a rule's condition for one set of labels.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// Stable hash of the labels; the alert's identity across restarts.
    pub fingerprint: String,
    pub rule: String,
    pub labels: Labels,
    pub annotations: BTreeMap<String, String>,
    pub state: AlertState,
    /// When the condition started to hold (the start of `for`).
    pub active_since: DateTime<Utc>,
    pub fired_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    /// The last evaluation at which the condition held (for `keep_firing_for`).
    pub last_true: Option<DateTime<Utc>>,
    /// The value that triggered it (1 for `unhealthy`, the ratio, the latency in ms).
    pub value: Option<f64>,
    pub source: AlertSource,
    /// Received alerts only: resolve at this time unless the sender refreshes it.
    pub ends_at: Option<DateTime<Utc>>,
}

/// Where an alert comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertSource {
    /// A rule of this configuration, evaluated by steward.
    Rule,
    /// Received on the Alertmanager webhook endpoint; the sender decides its state.
    Alertmanager,
}

impl AlertSource {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertSource::Rule => "rule",
            AlertSource::Alertmanager => "alertmanager",
        }
    }

    pub fn parse(s: &str) -> Option<AlertSource> {
        match s {
            "alertmanager" => Some(AlertSource::Alertmanager),
            "rule" => Some(AlertSource::Rule),
            _ => None,
        }
    }
}

impl Alert {
    /// The alert of a rule whose condition has not held yet.
    pub fn inactive(fingerprint: &str, rule: &str, labels: Labels, now: DateTime<Utc>) -> Alert {
        Alert {
            fingerprint: fingerprint.to_string(),
            rule: rule.to_string(),
            labels,
            annotations: BTreeMap::new(),
            state: AlertState::Inactive,
            active_since: now,
            fired_at: None,
            resolved_at: None,
            last_true: None,
            value: None,
            source: AlertSource::Rule,
            ends_at: None,
        }
    }
}

/// An entry of an alert's append-only history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertEvent {
    pub fingerprint: String,
    pub rule: String,
    pub at: DateTime<Utc>,
    pub from: AlertState,
    pub to: AlertState,
    pub value: Option<f64>,
}

/// What a receiver was last told about a group.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifyLogEntry {
    pub receiver: String,
    pub group_key: String,
    /// Fingerprints of the firing alerts the last notification carried.
    pub firing: Vec<String>,
    pub sent_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Waiting for its first or next attempt.
    Pending,
    Delivered,
    /// Gave up after the maximum age; the last error says why.
    Expired,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryState> {
        match s {
            "pending" => Some(DeliveryState::Pending),
            "delivered" => Some(DeliveryState::Delivered),
            "expired" => Some(DeliveryState::Expired),
            _ => None,
        }
    }
}

/// A notification in the outbox.
#[derive(Debug, Clone, Serialize)]
pub struct Notification {
    pub id: i64,
    pub dedup_key: String,
    pub receiver: String,
    pub group_key: String,
    /// `firing` or `resolved`, as in the Alertmanager payload.
    pub status: String,
    /// The Alertmanager-compatible payload as stored, JSON text: a webhook gets it as it
    /// is; receivers of other kinds render from [`Notification::payload_value`].
    #[serde(serialize_with = "json_text")]
    pub payload: String,
    pub created_at: DateTime<Utc>,
    pub state: DeliveryState,
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// Fingerprints of the alerts it carries.
    pub alerts: Vec<String>,
}

impl Notification {
    /// The payload parsed (`Null` if the stored text is not JSON, which steward never writes).
    pub fn payload_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.payload).unwrap_or_default()
    }
}

/// JSON text serialized as the JSON it holds (an object in the API, not a string).
fn json_text<S: serde::Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error> {
    serde_json::from_str::<serde_json::Value>(text).unwrap_or_default().serialize(s)
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Silence {
    pub id: String,
    pub matchers: Vec<Matcher>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub created_by: String,
    pub comment: String,
    pub created_at: DateTime<Utc>,
    pub expired_at: Option<DateTime<Utc>>,
}

impl Silence {
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.expired_at.is_none() && self.starts_at <= now && now < self.ends_at
    }

    pub fn state(&self, now: DateTime<Utc>) -> &'static str {
        if self.expired_at.is_some() || now >= self.ends_at {
            "expired"
        } else if now < self.starts_at {
            "pending"
        } else {
            "active"
        }
    }
}

/// Why an alert is not being notified right now.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Mute {
    Silence {
        id: String,
        comment: String,
    },
    /// An inhibit rule: a firing alert (the source) makes this one redundant.
    Inhibition {
        by_alert: String,
        by_fingerprint: String,
    },
    /// A service this alert's service depends on is failing: that is the cause.
    Dependency {
        service: String,
        cause: String,
    },
    /// A maintenance window covering this alert is open.
    Maintenance {
        window: String,
        comment: Option<String>,
        /// When this occurrence ends (cron windows).
        until: Option<DateTime<Utc>>,
    },
    /// One route's time interval keeps it from notifying `receiver` now; other routes
    /// may still notify.
    TimeInterval {
        receiver: String,
        reason: String,
    },
}

/// The identity of a label set: SHA-256 of `name=value` pairs in order, hex, 16 chars.
pub fn fingerprint(labels: &Labels) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (k, v) in labels {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0xff]);
    }
    hex::encode(&h.finalize()[..8])
}
