//! Carrying an incident from the first alert to the written review.
//!
//! # Data flow
//! firing alerts (from [`crate::alerting::Live`]) → [`policy`] (which alerts open
//! incidents, at which priority, grouped how) → [`manager`] (opens incidents, attaches
//! later alerts, resolves when they all resolve, runs escalation levels) → the outbox
//! (escalation notifications go through the same receivers and delivery workers as
//! alerts). People act through the API: acknowledge, note, mitigate, resolve, close,
//! assign roles, change priority, add action items. [`stats`] measures it,
//! [`postmortem`] writes it up.
//!
//! **Invariants.**
//! - Every change to an incident — its row, its timeline entries, the alerts it holds,
//!   the notifications an escalation level sends, the escalation's next step — is one
//!   store transaction ([`crate::store::IncidentWrite`]). A crash therefore never
//!   leaves a level sent but not recorded (it would repeat) or recorded but not sent
//!   (it would be skipped).
//! - The timeline is append-only: entries are inserted, never updated or deleted.
//! - Changes are serialized by [`Incidents::lock`] and checked against the row's
//!   `version`, so an acknowledgement racing an escalation cannot be lost.

pub mod ack_link;
pub mod manager;
pub mod oncall;
pub mod policy;
pub mod postmortem;
pub mod stats;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// Incident priority, P0 (complete outage, data loss) to P4 (cosmetic), as the seeds'
/// severity tables define them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Priority {
    P0,
    P1,
    P2,
    P3,
    P4,
}

impl Priority {
    pub const ALL: [Priority; 5] = [Priority::P0, Priority::P1, Priority::P2, Priority::P3, Priority::P4];

    pub fn as_str(self) -> &'static str {
        ["P0", "P1", "P2", "P3", "P4"][self as usize]
    }

    pub fn parse(s: &str) -> Option<Priority> {
        Priority::ALL.into_iter().find(|p| p.as_str().eq_ignore_ascii_case(s))
    }

    /// `steps` levels more urgent (negative: less), within P0..=P4.
    pub fn shifted(self, steps: i32) -> Priority {
        Priority::ALL[(self as i32 - steps).clamp(0, 4) as usize]
    }

    pub fn describe(self) -> &'static str {
        match self {
            Priority::P0 => "complete outage or data loss",
            Priority::P1 => "service down or major functionality broken",
            Priority::P2 => "major degradation",
            Priority::P3 => "minor degradation",
            Priority::P4 => "no user impact",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Triggered,
    Acknowledged,
    Mitigated,
    Resolved,
    /// The review is done.
    Closed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Triggered => "triggered",
            Status::Acknowledged => "acknowledged",
            Status::Mitigated => "mitigated",
            Status::Resolved => "resolved",
            Status::Closed => "closed",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        [Status::Triggered, Status::Acknowledged, Status::Mitigated, Status::Resolved, Status::Closed].into_iter().find(|v| v.as_str() == s)
    }

    /// Still needs people: not yet resolved.
    pub fn is_open(self) -> bool {
        self < Status::Resolved
    }
}

/// The roles of Netflix Dispatch's incident process.
pub const ROLES: &[&str] = &["commander", "scribe", "liaison"];

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Incident {
    pub id: i64,
    pub title: String,
    pub priority: Priority,
    pub status: Status,
    /// The policy that opened it; `None` for incidents declared by a person.
    pub policy: Option<String>,
    /// Alerts with the same policy and key attach to this incident while it is open.
    pub group_key: String,
    pub services: Vec<String>,
    pub opened_by: String,
    pub opened_at: DateTime<Utc>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub mitigated_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    /// role → person.
    pub roles: BTreeMap<String, String>,
    pub escalation: Option<Escalation>,
    /// Resolve when every alert it holds has resolved.
    pub auto_resolve: bool,
    /// Bumped by every write; a write based on a stale copy is refused.
    pub version: i64,
}

impl Incident {
    /// A new triggered incident, not yet stored (`id` 0): no alerts, roles or escalation.
    pub fn new(title: &str, priority: Priority, opened_by: &str, now: DateTime<Utc>) -> Incident {
        Incident {
            id: 0,
            title: title.to_string(),
            priority,
            status: Status::Triggered,
            policy: None,
            group_key: String::new(),
            services: vec![],
            opened_by: opened_by.to_string(),
            opened_at: now,
            acknowledged_at: None,
            mitigated_at: None,
            resolved_at: None,
            closed_at: None,
            roles: BTreeMap::new(),
            escalation: None,
            auto_resolve: false,
            version: 0,
        }
    }

    pub fn time_to_acknowledge(&self) -> Option<chrono::Duration> {
        self.acknowledged_at.map(|t| t - self.opened_at)
    }

    pub fn time_to_mitigate(&self) -> Option<chrono::Duration> {
        self.mitigated_at.map(|t| t - self.opened_at)
    }

    pub fn time_to_resolve(&self) -> Option<chrono::Duration> {
        self.resolved_at.map(|t| t - self.opened_at)
    }
}

/// Where an incident is in its escalation policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Escalation {
    pub policy: String,
    /// The level that fires next (0-based).
    pub level: usize,
    /// How many times the whole policy has run through (0 during the first pass).
    pub round: u32,
    /// When the next level fires; `None` once acknowledged or exhausted.
    pub next_at: Option<DateTime<Utc>>,
    /// Every receiver told so far: they hear the resolution too.
    pub notified: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachedState {
    Firing,
    Resolved,
}

/// An alert an incident holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IncidentAlert {
    pub incident_id: i64,
    pub fingerprint: String,
    pub rule: String,
    pub labels: BTreeMap<String, String>,
    pub state: AttachedState,
    pub attached_at: DateTime<Utc>,
    pub changed_at: DateTime<Utc>,
    /// When the alert's firing that was first attached started (its episode); later
    /// firings while the incident is open belong to it too. `None` for rows written
    /// before this was recorded.
    pub fired_at: Option<DateTime<Utc>>,
}

/// One line of an incident's timeline. Never edited, never deleted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineEntry {
    pub id: i64,
    pub incident_id: i64,
    pub at: DateTime<Utc>,
    /// `opened`, `alert_firing`, `alert_resolved`, `escalated`, `escalation_exhausted`,
    /// `acknowledged`, `mitigated`, `resolved`, `closed`, `note`, `priority_changed`,
    /// `role_assigned`, `action_item`, `notification` (derived from the outbox).
    pub kind: String,
    /// The token name of the person, or `steward`.
    pub actor: String,
    pub text: String,
    /// Shown on the public status page.
    pub public: bool,
    pub data: serde_json::Value,
}

impl TimelineEntry {
    pub fn new(at: DateTime<Utc>, kind: &str, actor: &str, text: impl Into<String>) -> TimelineEntry {
        TimelineEntry {
            id: 0,
            incident_id: 0,
            at,
            kind: kind.into(),
            actor: actor.into(),
            text: text.into(),
            public: false,
            data: serde_json::Value::Null,
        }
    }

    pub fn with_data(mut self, data: serde_json::Value) -> TimelineEntry {
        self.data = data;
        self
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActionItem {
    pub id: i64,
    pub incident_id: i64,
    pub text: String,
    pub owner: Option<String>,
    /// `open` or `done`.
    pub state: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub done_at: Option<DateTime<Utc>>,
}

/// The actor name for changes Steward makes itself.
pub const STEWARD: &str = "steward";

/// The incidents subsystem's context, shared by the manager task and the API. Other
/// subsystems reach incidents only through its methods (for example
/// [`Incidents::append_to_timeline`]), never through its lock.
pub struct Incidents {
    pub(super) store: Arc<dyn crate::store::Store>,
    pub(super) metrics: Arc<crate::telemetry::Metrics>,
    pub(super) config: crate::config::ConfigView,
    /// Alerts open incidents; mutes decide which do.
    pub(super) alerting: Arc<crate::alerting::Alerting>,
    pub(super) checks: Arc<crate::checks::Checks>,
    /// Every incident change happens under this lock (see the module invariants).
    pub(super) lock: tokio::sync::Mutex<()>,
    /// An alert changed state or a person acted: run a pass now (alerting holds the
    /// other end).
    pub(super) wake: Arc<Notify>,
}

impl Incidents {
    /// `alert_changed` is the signal alerting gives whenever an alert changes state.
    pub fn new(
        store: Arc<dyn crate::store::Store>,
        metrics: Arc<crate::telemetry::Metrics>,
        config: crate::config::ConfigView,
        alerting: Arc<crate::alerting::Alerting>,
        checks: Arc<crate::checks::Checks>,
        alert_changed: Arc<Notify>,
    ) -> Arc<Incidents> {
        Arc::new(Incidents { store, metrics, config, alerting, checks, lock: tokio::sync::Mutex::new(()), wake: alert_changed })
    }

    /// Appends `entry` to incident `id`'s timeline under the incidents lock (another
    /// subsystem's news, such as a runbook run ending). Returns false, writing
    /// nothing, when there is no incident `id`.
    pub async fn append_to_timeline(&self, id: i64, entry: TimelineEntry) -> Result<bool, crate::store::StoreError> {
        let _guard = self.lock.lock().await;
        let Some(incident) = self.store.incident(id).await? else { return Ok(false) };
        let mut w = crate::store::IncidentWrite::of(incident);
        w.timeline.push(entry);
        self.store.write_incident(&w).await?;
        Ok(true)
    }

    /// The open incident that holds (or last held) alert `fingerprint`, if any.
    pub async fn holding(&self, fingerprint: &str) -> Result<Option<i64>, crate::store::StoreError> {
        let list = self.store.attachments(&[fingerprint.to_string()]).await?;
        Ok(list.into_iter().map(|a| a.incident_id).max())
    }
}

/// The stored timeline with the notifications sent about the incident merged in,
/// in time order: what `show` and the postmortem display.
pub fn full_timeline(entries: Vec<TimelineEntry>, notifications: &[crate::alerting::Notification]) -> Vec<TimelineEntry> {
    use crate::alerting::DeliveryState;
    let mut out = entries;
    for n in notifications {
        let what = if n.group_key.starts_with("incident/") { "incident" } else { "alert" };
        let outcome = match (n.state, n.delivered_at) {
            (DeliveryState::Delivered, Some(t)) => {
                format!("delivered at {} after {} attempt(s)", t.format("%H:%M:%S"), n.attempts)
            }
            (DeliveryState::Expired, _) => format!("gave up after {} attempts: {}", n.attempts, n.last_error.as_deref().unwrap_or("")),
            _ => match &n.last_error {
                Some(e) => format!("not delivered yet ({} attempt(s), last error: {e})", n.attempts),
                None => "queued".to_string(),
            },
        };
        let mut e = TimelineEntry::new(
            n.created_at,
            "notification",
            STEWARD,
            format!("{} {what} notification to {}: {outcome}", n.status, n.receiver),
        );
        e.id = -n.id;
        e.data = serde_json::json!({"notification": n.id, "receiver": n.receiver, "state": n.state});
        out.push(e);
    }
    // Stable: entries written in one transaction keep their order.
    out.sort_by_key(|e| e.at);
    out
}
