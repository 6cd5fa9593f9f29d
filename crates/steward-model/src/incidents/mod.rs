//! Incidents as data: priorities, statuses, timelines, action items; on-call
//! arithmetic and the postmortem template.

pub mod oncall;
pub mod postmortem;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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
