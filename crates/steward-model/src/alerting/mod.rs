//! Alerts, silences and notifications as data, and the languages that describe them:
//! label matchers, annotation templates, time intervals.

pub mod matcher;
pub mod template;
pub mod time_interval;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

pub use matcher::{Labels, Matcher};

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
