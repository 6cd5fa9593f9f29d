//! All durable state goes through the [`Store`] trait.
//!
//! **Architecture invariant:** nothing outside this crate knows SQL or which database is
//! behind it. Every backend passes the same test suite (`tests/store_suite.rs`); the
//! embedded SQLite backend is the default, a PostgreSQL backend slots in beside it.

mod cluster;
pub mod copy;
mod error;
mod locks;
mod postgres;
mod rows;
mod sqlite;
mod sqlite_alerts;
mod sqlite_backups;
mod sqlite_incidents;
mod sqlite_locks;
mod sqlite_runs;

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

pub use cluster::{ClusterStore, Fence, LEADERSHIP, Lease, Replica};
pub use error::{LockHolder, StoreError};
pub use postgres::{PostgresStore, redact as redact_url};
pub use sqlite::SqliteStore;

use steward_model::alerting::{Alert, AlertEvent, Notification, NotifyLogEntry, Silence};
use steward_model::auth::{ConsoleSession, Role, TokenInfo};
use steward_model::backups::{BackupQuery, BackupRecord, BackupStatus, NewBackup, NewRestore, RestoreRecord, Verification};
use steward_model::checks::Outcome;
use steward_model::checks::state::{CheckState, Transition};
use steward_model::incidents::oncall::Override;
use steward_model::incidents::{ActionItem, Incident, IncidentAlert, Status, TimelineEntry};
use steward_model::runbooks::{
    ApprovalRequest, AuditQuery, Decision, NewEvent, NewRun, Run, RunEvent, RunQuery, RunStatus, StepRecord, StepStatus,
};

/// One run as the scheduler hands it over: the outcome, the state after it, and the
/// transition it caused, written together so they can never disagree.
#[derive(Debug, Clone)]
pub struct RecordedRun {
    pub check: String,
    pub outcome: Outcome,
    pub state: CheckState,
    pub transition: Option<Transition>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResultRow {
    pub at: DateTime<Utc>,
    pub healthy: bool,
    pub latency_ms: f64,
    pub reason: Option<String>,
    /// The fields the check records for forecasts (`Outcome::values`).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub values: std::collections::BTreeMap<String, f64>,
}

/// An hour of results, kept after the raw rows are gone.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rollup {
    pub hour: DateTime<Utc>,
    pub runs: u64,
    pub failures: u64,
    pub latency_avg_ms: f64,
    pub latency_max_ms: f64,
}

/// Every store trait in one: what a backend implements and what assembly hands out,
/// each subsystem taking only the traits it uses (see ARCHITECTURE.md, "Subsystems").
#[async_trait]
pub trait Store:
    CheckStore + AlertStore + IncidentStore + RunStore + BackupStore + KeyStore + ClusterStore + Send + Sync + 'static
{
    /// This store with every write fenced by `fence`: refused with [`StoreError::Fenced`]
    /// unless `fence` still holds the leadership (see `cluster`). What a leader hands
    /// the subsystems it runs.
    fn fenced(&self, fence: Fence) -> std::sync::Arc<dyn Store>;

    /// Fails with [`StoreError::NameTaken`] when the name is taken.
    async fn create_token(&self, name: &str, role: Role, secret_hash: &str) -> Result<TokenInfo, StoreError>;
    /// The live (not revoked) token with this hash.
    async fn token_by_hash(&self, secret_hash: &str) -> Result<Option<TokenInfo>, StoreError>;
    async fn list_tokens(&self) -> Result<Vec<TokenInfo>, StoreError>;
    /// Returns false when no live token has that name.
    async fn revoke_token(&self, name: &str) -> Result<bool, StoreError>;

    /// Opens a console session for the live token whose secret hashes to `token_hash`;
    /// `None` (and nothing written) when no live token has it. Sessions already expired
    /// are deleted on the way, so the table holds only live ones.
    async fn create_session(
        &self,
        id_hash: &str,
        token_hash: &str,
        csrf: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<Option<TokenInfo>, StoreError>;
    /// The session whose id hashes to `id_hash`, if it has not expired by `now` and its
    /// token is not revoked.
    async fn session(&self, id_hash: &str, now: DateTime<Utc>) -> Result<Option<ConsoleSession>, StoreError>;
    /// Signs a session out; false when there was none.
    async fn end_session(&self, id_hash: &str) -> Result<bool, StoreError>;

    /// Proves the store accepts writes (readiness).
    async fn probe_writable(&self) -> Result<(), StoreError>;
}

/// A UTC day in milliseconds: the daily sums' resolution.
pub const DAY_MS: i64 = 86_400_000;

/// Whether buckets of `bucket_ms` are whole days, so the daily sums can fill them.
fn whole_days(bucket_ms: i64) -> bool {
    bucket_ms >= DAY_MS && bucket_ms % DAY_MS == 0
}

/// One group's UTC day: the runs and failures of its checks summed (see
/// [`CheckStore::daily_by_group`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDay {
    pub group: String,
    /// The day's midnight, UTC.
    pub day: DateTime<Utc>,
    pub runs: u64,
    pub failures: u64,
}

/// What a push (`heartbeat`) check has received: a job's signals that it ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub check: String,
    /// When the check began waiting for signals: before the first one, its period runs
    /// from here (a check just added is not late at once).
    pub watching_since: DateTime<Utc>,
    /// The last signal that the job succeeded.
    pub last_ok: Option<DateTime<Utc>>,
    /// The last signal that the job failed (`…/fail`).
    pub last_fail: Option<DateTime<Utc>>,
    /// Signals received, of either kind.
    pub signals: u64,
}

/// Events to add to an SLO's one-minute bucket (see `steward_model::slo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SloEvents {
    pub slo: String,
    /// A Unix minute (seconds ÷ 60).
    pub minute: i64,
    pub good: u64,
    pub total: u64,
}

/// Check results, states and health changes.
#[async_trait]
pub trait CheckStore: Send + Sync {
    /// Adds each batch item's good and total events to its SLO's one-minute bucket, in
    /// one transaction (counts add up: two replicas' events for a minute both count).
    async fn add_slo_events(&self, events: &[SloEvents]) -> Result<(), StoreError>;
    /// An SLO's buckets starting at or after minute `from`, in time order.
    async fn slo_buckets(&self, slo: &str, from: i64) -> Result<Vec<steward_model::slo::Bucket>, StoreError>;
    /// In one transaction: replaces `slo`'s one-minute buckets before minute `before`
    /// with `rolled` (their roll-up, which the caller computed from them), and drops
    /// every bucket before `drop_before`. Keeps storage bounded: minutes for the recent
    /// past, wider buckets for the rest of the SLO window, nothing older.
    async fn roll_up_slo(&self, slo: &str, before: i64, rolled: &[steward_model::slo::Bucket], drop_before: i64) -> Result<(), StoreError>;
    /// Records a push check's signal at `at`: `ok` false when the job said it failed.
    /// Keeps the latest of each kind (signals may arrive out of order).
    async fn record_heartbeat(&self, check: &str, at: DateTime<Utc>, ok: bool) -> Result<Heartbeat, StoreError>;
    /// A push check's signals; the first call for a check starts its watch at `now`.
    async fn heartbeat_of(&self, check: &str, now: DateTime<Utc>) -> Result<Heartbeat, StoreError>;
    /// Last known state of every check, to resume after a restart.
    async fn load_states(&self) -> Result<Vec<CheckState>, StoreError>;
    /// Writes a batch of runs in one transaction.
    async fn record(&self, runs: &[RecordedRun]) -> Result<(), StoreError>;
    /// Raw results, newest first, strictly before `before` when given.
    async fn history(&self, check: &str, limit: u32, before: Option<DateTime<Utc>>) -> Result<Vec<ResultRow>, StoreError>;
    /// Raw results at or after `since` (the window of an alert rule), newest first.
    async fn results_since(&self, check: &str, since: DateTime<Utc>) -> Result<Vec<ResultRow>, StoreError>;
    /// Health changes, newest first; all checks when `check` is `None`.
    async fn transitions(&self, check: Option<&str>, limit: u32) -> Result<Vec<Transition>, StoreError>;
    async fn rollups(&self, check: &str, since: DateTime<Utc>) -> Result<Vec<Rollup>, StoreError>;
    /// A check's history since `since` in buckets of `bucket_ms` (each `Rollup.hour` is
    /// its bucket's start): raw results and folded ones together, summed in the
    /// database, in time order. What charts draw; never more rows than buckets. Folded
    /// results count from the first whole hour at or after `since` — from the first
    /// whole UTC day when `bucket_ms` is a whole number of days, read from the daily
    /// sums — so a `since` on a bucket boundary counts every result.
    async fn buckets(&self, check: &str, since: DateTime<Utc>, bucket_ms: i64) -> Result<Vec<Rollup>, StoreError>;
    /// Every group's runs and failures per UTC day from `since` (a midnight), where
    /// `groups` maps each check to its group; checks not in it are left out. Raw
    /// results and daily sums are summed in the database in one query for all checks:
    /// what the status page reads, 90 rows per service rather than a query per check.
    async fn daily_by_group(&self, groups: &HashMap<String, String>, since: DateTime<Utc>) -> Result<Vec<GroupDay>, StoreError>;
    /// Folds raw results older than `raw_before` into hourly rollups and daily sums and
    /// deletes them, in one transaction; drops rollups and daily sums older than
    /// `rollups_before`. Returns how many raw rows were folded.
    async fn compact(&self, raw_before: DateTime<Utc>, rollups_before: DateTime<Utc>) -> Result<u64, StoreError>;
    /// Forgets the state of checks no longer configured (their history stays).
    async fn retain_states(&self, checks: &[String]) -> Result<(), StoreError>;
}

/// Keys the server signs with, created on first use.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// A random 32-byte key named `name`, created on first use and the same ever after
    /// (it signs links the server hands out, so it must survive restarts).
    async fn server_key(&self, name: &str) -> Result<Vec<u8>, StoreError>;
    /// Replaces a server key with a fresh random one: whatever the old key signed stops
    /// verifying. Returns when the new key is stored.
    async fn rotate_server_key(&self, name: &str) -> Result<(), StoreError>;
}

/// A notification to enqueue: the row, the alerts it carries, and the log entry that
/// records it, written in one transaction.
#[derive(Debug, Clone)]
pub struct NewNotification {
    pub dedup_key: String,
    pub receiver: String,
    pub group_key: String,
    pub status: String,
    /// The Alertmanager-shaped payload as JSON text, stored as it is.
    pub payload: String,
    /// The alerts it is about: fingerprint, and when the firing it reports started.
    pub alerts: Vec<(String, Option<DateTime<Utc>>)>,
    pub log: NotifyLogEntry,
}

/// Durable state of alerting: alerts and their history, the notification log, the
/// outbox and silences.
#[async_trait]
pub trait AlertStore: Send + Sync {
    /// Every alert not inactive, to resume after a restart.
    async fn load_alerts(&self) -> Result<Vec<Alert>, StoreError>;
    /// Upserts the alert and appends its state change (when there is one), atomically.
    async fn save_alert(&self, alert: &Alert, event: Option<&AlertEvent>) -> Result<(), StoreError> {
        self.save_alerts(&[(alert.clone(), event.cloned())]).await
    }
    /// [`AlertStore::save_alert`] for many alerts in one transaction: all or none.
    async fn save_alerts(&self, changes: &[(Alert, Option<AlertEvent>)]) -> Result<(), StoreError>;
    /// State changes, newest first; of one alert when `fingerprint` is given.
    async fn alert_events(&self, fingerprint: Option<&str>, limit: u32) -> Result<Vec<AlertEvent>, StoreError>;
    /// Deletes resolved alerts resolved before `before` that no log entry still lists.
    async fn forget_resolved(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;

    async fn notify_log(&self) -> Result<Vec<NotifyLogEntry>, StoreError>;
    /// Writes the log entry and, unless its dedup key exists, the outbox row. Returns the
    /// new row's id, or `None` when the dedup key was already enqueued.
    async fn enqueue(&self, n: &NewNotification) -> Result<Option<i64>, StoreError>;
    /// Updates a log entry without sending anything (e.g. resolved alerts a receiver
    /// does not want to hear about).
    async fn update_notify_log(&self, entry: &NotifyLogEntry) -> Result<(), StoreError>;
    /// Claims for `owner` until `until` the pending notifications of `receiver` due at
    /// `now` that no live claim holds, oldest first, at most `limit`: no other worker, in
    /// this process or another, gets them until the claim ends (its worker died) or a
    /// `mark_*` call releases it.
    async fn claim_due(
        &self,
        receiver: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Notification>, StoreError>;
    /// The earliest time a pending notification of `receiver` may be claimed.
    async fn next_due(&self, receiver: &str) -> Result<Option<DateTime<Utc>>, StoreError>;
    /// Records the delivery and releases the claim, whoever holds it: the receiver has it.
    async fn mark_delivered(&self, id: i64, at: DateTime<Utc>, attempts: u32) -> Result<(), StoreError>;
    /// Schedules the next attempt and releases the claim, if `owner` still holds it
    /// (false when the claim ended and another worker took the row).
    async fn mark_retry(&self, id: i64, owner: &str, attempts: u32, next: DateTime<Utc>, error: &str) -> Result<bool, StoreError>;
    /// Gives the notification up, if `owner` still holds its claim.
    async fn mark_expired(&self, id: i64, owner: &str, attempts: u32, error: &str) -> Result<bool, StoreError>;
    /// Owners of claims on pending notifications, live or ended.
    async fn claim_owners(&self) -> Result<Vec<String>, StoreError>;
    /// Ends every claim `owner` holds (its process is known to be gone); returns how many.
    async fn release_claims(&self, owner: &str) -> Result<u64, StoreError>;
    /// Notifications, newest first; those carrying one alert when `fingerprint` is given.
    async fn notifications(&self, fingerprint: Option<&str>, limit: u32) -> Result<Vec<Notification>, StoreError>;
    /// (pending notifications, creation time of the oldest pending one).
    async fn outbox_depth(&self) -> Result<(u64, Option<DateTime<Utc>>), StoreError>;

    async fn create_silence(&self, silence: &Silence) -> Result<(), StoreError>;
    async fn silences(&self) -> Result<Vec<Silence>, StoreError>;
    /// Returns false when no unexpired silence has that id.
    async fn expire_silence(&self, id: &str, at: DateTime<Utc>) -> Result<bool, StoreError>;
}

/// A message for a receiver that is not about an alert group (an escalation level).
#[derive(Debug, Clone)]
pub struct OutboxMessage {
    pub dedup_key: String,
    pub receiver: String,
    pub group_key: String,
    pub status: String,
    pub payload: serde_json::Value,
}

/// One change to one incident, written in one transaction (see `incidents`).
#[derive(Debug, Clone)]
pub struct IncidentWrite {
    /// The new row. `id == 0` inserts a new incident; otherwise the stored row must
    /// still have `version`, or the write fails with [`StoreError::StaleVersion`].
    pub incident: Incident,
    /// Upserted by fingerprint.
    pub alerts: Vec<IncidentAlert>,
    /// Appended.
    pub timeline: Vec<TimelineEntry>,
    /// Enqueued; a dedup key already in the outbox is skipped.
    pub notifications: Vec<OutboxMessage>,
    /// `id == 0` inserts; otherwise updates text, owner and state.
    pub action_items: Vec<ActionItem>,
}

impl IncidentWrite {
    pub fn of(incident: Incident) -> IncidentWrite {
        IncidentWrite { incident, alerts: vec![], timeline: vec![], notifications: vec![], action_items: vec![] }
    }
}

#[derive(Debug, Clone, Default)]
pub struct IncidentQuery {
    /// Only incidents not yet resolved.
    pub open: bool,
    pub status: Option<Status>,
    pub service: Option<String>,
    /// Opened at or after.
    pub since: Option<DateTime<Utc>>,
    pub limit: u32,
}

/// Durable state of incidents.
#[async_trait]
pub trait IncidentStore: Send + Sync {
    /// Applies the write atomically; returns the incident as stored (id, version).
    async fn write_incident(&self, w: &IncidentWrite) -> Result<Incident, StoreError>;
    async fn incident(&self, id: i64) -> Result<Option<Incident>, StoreError>;
    /// Newest first.
    async fn incidents(&self, q: &IncidentQuery) -> Result<Vec<Incident>, StoreError>;
    /// The alerts of one incident, or of every open incident when `incident` is `None`.
    async fn incident_alerts(&self, incident: Option<i64>) -> Result<Vec<IncidentAlert>, StoreError>;
    /// Every attachment of these alerts, to any incident in any status.
    async fn attachments(&self, fingerprints: &[String]) -> Result<Vec<IncidentAlert>, StoreError>;
    /// Oldest first.
    async fn timeline(&self, incident: i64) -> Result<Vec<TimelineEntry>, StoreError>;
    /// Escalation notifications of the incident and notifications about its alerts
    /// sent while it was open, oldest first.
    async fn incident_notifications(&self, incident: i64) -> Result<Vec<Notification>, StoreError>;
    async fn action_items(&self, incident: Option<i64>, state: Option<&str>) -> Result<Vec<ActionItem>, StoreError>;
    async fn add_override(&self, schedule: &str, o: &Override, created_by: &str) -> Result<(), StoreError>;
    /// Runtime overrides still in effect at or after `after`.
    async fn overrides(&self, after: DateTime<Utc>) -> Result<Vec<(String, Override)>, StoreError>;
}

/// Durable state of runbook runs (see `runbooks` for the invariants it keeps).
#[async_trait]
pub trait RunStore: Send + Sync {
    /// Creates the run, takes its lock and appends `started` (with the new run's id),
    /// atomically. [`StoreError::LockHeld`] when the lock is held by another run;
    /// [`StoreError::TriggerUsed`] when the trigger key was already used.
    async fn create_run(&self, run: &NewRun, started: NewEvent) -> Result<Run, StoreError>;
    /// Upserts one step attempt and appends `events`, atomically.
    async fn save_step(&self, step: &StepRecord, events: &[NewEvent]) -> Result<(), StoreError>;
    /// Sets the run's status and appends `events`, atomically. A final status also sets
    /// the finish time, the error and outputs, and releases the run's lock; a final or
    /// interrupted run's pending approvals are withdrawn.
    async fn set_run_status(
        &self,
        run: i64,
        status: RunStatus,
        error: Option<&str>,
        outputs: Option<&serde_json::Value>,
        events: &[NewEvent],
    ) -> Result<(), StoreError>;
    async fn append_events(&self, events: &[NewEvent]) -> Result<(), StoreError>;
    /// Gives the run's steps still running or waiting `status` and `error`; returns
    /// their paths.
    async fn close_open_steps(&self, run: i64, status: StepStatus, error: &str) -> Result<Vec<String>, StoreError>;
    async fn heartbeat(&self, runs: &[i64], at: DateTime<Utc>) -> Result<(), StoreError>;
    /// Runs not finished: running, waiting or interrupted.
    async fn unfinished_runs(&self) -> Result<Vec<Run>, StoreError>;
    async fn run(&self, id: i64) -> Result<Option<Run>, StoreError>;
    /// Newest first.
    async fn runs(&self, q: &RunQuery) -> Result<Vec<Run>, StoreError>;
    /// Every attempt of every step, in the order they started.
    async fn run_steps(&self, run: i64) -> Result<Vec<StepRecord>, StoreError>;
    /// Oldest first, with an id above `after`.
    async fn run_events(&self, run: i64, after: i64, limit: u32) -> Result<Vec<RunEvent>, StoreError>;
    /// Audit events across runs, newest first.
    async fn audit(&self, q: &AuditQuery) -> Result<Vec<RunEvent>, StoreError>;
    /// Enqueues messages a `notify` step sends and appends `events`, atomically.
    async fn enqueue_messages(&self, messages: &[OutboxMessage], events: &[NewEvent]) -> Result<(), StoreError>;
    /// Records the approval `pending`, the run `waiting`, and appends `events`, atomically.
    async fn request_approval(&self, approval: &ApprovalRequest, events: &[NewEvent]) -> Result<(), StoreError>;
    /// Every approval the run asked for, in the order asked.
    async fn approvals(&self, run: i64) -> Result<Vec<ApprovalRequest>, StoreError>;
    /// Decides a pending approval (approved, denied, expired) and appends `events`,
    /// atomically. Returns false, writing nothing, when it was no longer pending: the
    /// first decision stands.
    async fn decide_approval(
        &self,
        run: i64,
        path: &str,
        attempt: u32,
        decision: &Decision,
        events: &[NewEvent],
    ) -> Result<bool, StoreError>;
    /// Asks the process running the run to stop it: records who asked and appends
    /// `events`, atomically, if the run is running or waiting and not already asked.
    async fn request_cancel(&self, run: i64, by: &str, events: &[NewEvent]) -> Result<bool, StoreError>;
    /// Of `runs`, those someone asked to cancel.
    async fn cancels_requested(&self, runs: &[i64]) -> Result<Vec<i64>, StoreError>;
    /// Continues a run that is in one of `from` (interrupted, failed): takes `lock` again,
    /// makes `owner` its owner, sets it running and appends `events`, atomically.
    /// [`StoreError::StaleVersion`] when the run is no longer in one of `from` (another
    /// operator resumed it first); [`StoreError::LockHeld`] when another run holds the lock.
    async fn resume_run(
        &self,
        run: i64,
        from: &[RunStatus],
        owner: &str,
        lock: Option<&str>,
        events: &[NewEvent],
    ) -> Result<(), StoreError>;
    /// Deletes runs finished before `before`, with their steps and events.
    async fn prune_runs(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
    /// The run change feed: runs changed by any writer of this store — another replica,
    /// a CLI — as their changes commit, so a decision or a cancel reaches the process
    /// running the run, and a live stream its watcher, without waiting for a poll. The
    /// feed ends when the receiver is dropped. `None` when the backend has no feed
    /// (SQLite: one server writes runs; other processes' writes are found by polling).
    async fn run_changes(&self) -> Result<Option<tokio::sync::mpsc::Receiver<RunChange>>, StoreError> {
        Ok(None)
    }
}

/// One message of the run change feed ([`RunStore::run_changes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunChange {
    /// Something of this run changed: its status, a cancel request, a step, an event,
    /// an approval.
    Run(i64),
    /// The feed was cut (its connection was lost) and changes may have been missed
    /// until it was back: whoever waits on a run should look again.
    Resync,
}

#[async_trait]
pub trait BackupStore: Send + Sync {
    /// Takes the policy's lease (`lock`) and records the backup `running`, atomically.
    /// [`StoreError::LockHeld`] when a live lease is held (naming the backup, its owner
    /// and when the lease ends); [`StoreError::TriggerUsed`] when the trigger key was
    /// already used. An expired lease is taken over.
    async fn create_backup(&self, backup: &NewBackup, lock: &str) -> Result<BackupRecord, StoreError>;
    /// Extends the backup's heartbeat and its lease, if `owner` still holds it.
    async fn heartbeat_backup(&self, id: &str, owner: &str, at: DateTime<Utc>, lease_until: DateTime<Utc>) -> Result<(), StoreError>;
    /// Records the end and releases the lease, atomically.
    async fn finish_backup(
        &self,
        id: &str,
        status: BackupStatus,
        plain_bytes: i64,
        stored_bytes: i64,
        error: Option<&str>,
        facts: &serde_json::Value,
    ) -> Result<(), StoreError>;
    async fn backup(&self, id: &str) -> Result<Option<BackupRecord>, StoreError>;
    /// Newest first.
    async fn backups(&self, q: &BackupQuery) -> Result<Vec<BackupRecord>, StoreError>;
    /// Records a restore `running` and holds its backup (prune keeps it), atomically.
    async fn start_restore(&self, restore: &NewRestore) -> Result<i64, StoreError>;
    /// Shows the restore is still alive (see `interrupt_stale_restores`).
    async fn heartbeat_restore(&self, id: i64, at: DateTime<Utc>) -> Result<(), StoreError>;
    /// Records how the restore ended (`succeeded`, `differs`, `failed`) and releases the
    /// backup's hold when no other restore of it runs, atomically.
    async fn finish_restore(&self, id: i64, result: &str, detail: &serde_json::Value) -> Result<(), StoreError>;
    /// Restores still `running` whose last heartbeat is before `before` (their process
    /// died) become `interrupted`, and their backups' holds are released.
    async fn interrupt_stale_restores(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
    /// Newest first; every backup's when `backup_id` is `None`.
    async fn restores(&self, backup_id: Option<&str>, limit: u32) -> Result<Vec<RestoreRecord>, StoreError>;
    /// Starts a verification; [`StoreError::TriggerUsed`] when the trigger key was used.
    async fn start_verification(
        &self,
        backup_id: &str,
        policy: &str,
        level: u8,
        trigger: &str,
        trigger_key: Option<&str>,
    ) -> Result<i64, StoreError>;
    /// Shows the verification is still alive (see `fail_stale_verifications`).
    async fn heartbeat_verification(&self, id: i64, at: DateTime<Utc>) -> Result<(), StoreError>;
    /// Records its result, and on the backup the latest verification — unless it is no
    /// longer running (`fail_stale_verifications` ended it): the record says what happened.
    async fn finish_verification(
        &self,
        id: i64,
        passed: bool,
        detail: &serde_json::Value,
        restore_ms: Option<i64>,
    ) -> Result<(), StoreError>;
    /// Marks a pruned backup `deleted` (the record stays, the data is gone).
    async fn mark_backup_deleted(&self, id: &str) -> Result<(), StoreError>;
    /// Verifications still `running` whose last heartbeat is before `before` (their
    /// process died) become `failed`.
    async fn fail_stale_verifications(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
    /// Newest first; every backup's when `backup_id` is `None`.
    async fn verifications(&self, backup_id: Option<&str>, limit: u32) -> Result<Vec<Verification>, StoreError>;
}
