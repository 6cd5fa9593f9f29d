//! Runbook runs as data: runs, steps, events, approvals and decisions; and the
//! template language steps are written in.

pub mod template;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    /// Running, and stopped at an approval.
    Waiting,
    Succeeded,
    Failed,
    Cancelled,
    /// Steward stopped while the run was running; an operator decides what next.
    Interrupted,
}

impl RunStatus {
    pub const ALL: [RunStatus; 6] =
        [RunStatus::Running, RunStatus::Waiting, RunStatus::Succeeded, RunStatus::Failed, RunStatus::Cancelled, RunStatus::Interrupted];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Waiting => "waiting",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Interrupted => "interrupted",
        }
    }

    pub fn parse(s: &str) -> Option<RunStatus> {
        RunStatus::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Finished for good: nothing will change it.
    pub fn is_final(self) -> bool {
        matches!(self, RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    Running,
    Waiting,
    Succeeded,
    Failed,
    Skipped,
    /// It was running when Steward stopped: it may or may not have acted.
    Unknown,
    Cancelled,
}

impl StepStatus {
    pub const ALL: [StepStatus; 7] = [
        StepStatus::Running,
        StepStatus::Waiting,
        StepStatus::Succeeded,
        StepStatus::Failed,
        StepStatus::Skipped,
        StepStatus::Unknown,
        StepStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Running => "running",
            StepStatus::Waiting => "waiting",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
            StepStatus::Unknown => "unknown",
            StepStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<StepStatus> {
        StepStatus::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// One run of a runbook.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub id: i64,
    pub runbook: String,
    /// Validated parameter values (with defaults filled in).
    pub params: serde_json::Map<String, Json>,
    pub status: RunStatus,
    /// manual, schedule, alert or runbook (called by another run).
    pub trigger: String,
    pub started_by: String,
    pub parent_run: Option<i64>,
    pub alert_fingerprint: Option<String>,
    pub incident_id: Option<i64>,
    pub lock: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub heartbeat_at: DateTime<Utc>,
    pub error: Option<String>,
    pub outputs: Json,
    /// The steward process that runs it (host:pid:start), or ran it last.
    pub owner: String,
    /// Who asked to cancel it while it ran; the process running it stops it.
    pub cancel_requested_by: Option<String>,
}

/// A run about to be written.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub runbook: String,
    pub params: serde_json::Map<String, Json>,
    pub trigger: String,
    pub started_by: String,
    pub parent_run: Option<i64>,
    pub alert_fingerprint: Option<String>,
    pub incident_id: Option<i64>,
    pub lock: Option<String>,
    /// Unique per trigger (a schedule's fire time, an alert's firing): one trigger can
    /// never start two runs, even across restarts.
    pub trigger_key: Option<String>,
    /// The process that will run it (see [`crate::telemetry::process_owner`]).
    pub owner: String,
}

/// One attempt of one step.
#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    pub run_id: i64,
    /// Where the step sits: `restart`, `repair[2].drain`.
    pub path: String,
    pub name: String,
    pub kind: String,
    pub attempt: u32,
    pub status: StepStatus,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// What it was about to do: the rendered command, URL, query (redacted).
    pub detail: Json,
    /// What templates read as `steps.NAME` (redacted).
    pub result: Json,
    /// The tail of its output (redacted).
    pub output: String,
    pub error: Option<String>,
}

/// Something that happened in a run: progress, output, a person's decision.
#[derive(Debug, Clone, Serialize)]
pub struct RunEvent {
    pub id: i64,
    pub run_id: i64,
    pub at: DateTime<Utc>,
    pub kind: String,
    pub step: Option<String>,
    pub actor: Option<String>,
    pub message: String,
    pub data: Json,
}

/// An event about to be written.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub run_id: i64,
    pub at: DateTime<Utc>,
    pub kind: &'static str,
    pub step: Option<String>,
    pub actor: Option<String>,
    pub message: String,
    pub data: Json,
}

impl NewEvent {
    pub fn new(run_id: i64, kind: &'static str, message: impl Into<String>) -> NewEvent {
        NewEvent { run_id, at: crate::clock::now(), kind, step: None, actor: None, message: message.into(), data: Json::Null }
    }

    pub fn step(mut self, path: &str) -> NewEvent {
        self.step = Some(path.to_string());
        self
    }

    pub fn by(mut self, actor: &str) -> NewEvent {
        self.actor = Some(actor.to_string());
        self
    }

    pub fn data(mut self, data: Json) -> NewEvent {
        self.data = data;
        self
    }
}

/// Event kinds that record a person's (or a trigger's) decision: the audit trail.
pub const AUDIT_KINDS: &[&str] = &["run_started", "approved", "denied", "cancelled", "resumed", "retried", "aborted"];

#[derive(Debug, Clone, Default)]
pub struct RunQuery {
    pub runbook: Option<String>,
    pub status: Option<RunStatus>,
    /// Keyset pagination: runs with a smaller id.
    pub before_id: Option<i64>,
    pub limit: u32,
}

#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub runbook: Option<String>,
    pub actor: Option<String>,
    pub before_id: Option<i64>,
    pub limit: u32,
}

/// Where an approval stands. It is decided once: the first of a person's answer, its
/// timeout, or the end of its run wins, in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalState {
    Pending,
    Approved,
    Denied,
    /// No decision within the step's timeout.
    Expired,
    /// The run stopped (cancelled, interrupted) while it waited.
    Withdrawn,
}

impl ApprovalState {
    pub const ALL: [ApprovalState; 5] =
        [ApprovalState::Pending, ApprovalState::Approved, ApprovalState::Denied, ApprovalState::Expired, ApprovalState::Withdrawn];

    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalState::Pending => "pending",
            ApprovalState::Approved => "approved",
            ApprovalState::Denied => "denied",
            ApprovalState::Expired => "expired",
            ApprovalState::Withdrawn => "withdrawn",
        }
    }

    pub fn parse(s: &str) -> Option<ApprovalState> {
        ApprovalState::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// An approval step's request, kept in the store so that any steward process can take
/// the decision and the waiting run learns of it wherever it runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApprovalRequest {
    pub run_id: i64,
    pub path: String,
    pub attempt: u32,
    /// The least role that may decide.
    pub role: crate::auth::Role,
    /// The person who started the run may not decide.
    pub distinct_approver: bool,
    pub started_by: String,
    pub requested_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub state: ApprovalState,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub comment: String,
}

/// An answer to an approval: a person's (approved, denied) or the timeout's (expired).
#[derive(Debug, Clone)]
pub struct Decision {
    pub state: ApprovalState,
    pub by: String,
    pub comment: String,
}
