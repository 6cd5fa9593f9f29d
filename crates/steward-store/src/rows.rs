//! Rows back into model types, for every backend: each backend writes its own SQL,
//! and both read a row through the same mapper here, so a column means one thing
//! whichever database holds it.
//!
//! Times are stored as milliseconds since the epoch (`*_ms` columns), JSON as text,
//! notification payloads as zstd-compressed bytes.

use chrono::{DateTime, TimeZone, Utc};
use sqlx::postgres::{PgRow, Postgres};
use sqlx::sqlite::{Sqlite, SqliteRow};
use sqlx::{Decode, Row, Type};

use super::{ResultRow, StoreError};
use steward_model::alerting::{Alert, AlertEvent, AlertSource, AlertState, DeliveryState, Matcher, Notification, Silence};
use steward_model::auth::{ConsoleSession, Role, TokenInfo};
use steward_model::backups::{BackupRecord, BackupStatus, RestoreRecord, Verification};
use steward_model::incidents::{ActionItem, AttachedState, Incident, IncidentAlert, Priority, Status, TimelineEntry};
use steward_model::runbooks::{ApprovalRequest, ApprovalState, Run, RunEvent, RunStatus, StepRecord, StepStatus};

/// One column read as `T` from a backend's row.
pub(crate) trait Get<T> {
    fn get_col(&self, name: &str) -> Result<T, StoreError>;
}

/// The driver's decoding error in the store's terms: a column the query lacks is a bug;
/// a value that does not decode is damaged data, named by its column.
fn decode_error(name: &str, e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::ColumnNotFound(_) => StoreError::Internal(format!("no column `{name}` in the query")),
        e => StoreError::Corrupt(format!("column `{name}`: {e}")),
    }
}

impl<T> Get<T> for SqliteRow
where
    T: for<'r> Decode<'r, Sqlite> + Type<Sqlite>,
{
    fn get_col(&self, name: &str) -> Result<T, StoreError> {
        self.try_get(name).map_err(|e| decode_error(name, e))
    }
}

impl<T> Get<T> for PgRow
where
    T: for<'r> Decode<'r, Postgres> + Type<Postgres>,
{
    fn get_col(&self, name: &str) -> Result<T, StoreError> {
        self.try_get(name).map_err(|e| decode_error(name, e))
    }
}

/// A row of either backend, readable as every column type steward stores.
pub(crate) trait Columns:
    Row + Get<i64> + Get<Option<i64>> + Get<f64> + Get<Option<f64>> + Get<bool> + Get<String> + Get<Option<String>> + Get<Vec<u8>>
{
}

impl<R> Columns for R where
    R: Row + Get<i64> + Get<Option<i64>> + Get<f64> + Get<Option<f64>> + Get<bool> + Get<String> + Get<Option<String>> + Get<Vec<u8>>
{
}

/// A column's value, or [`StoreError::Corrupt`] naming the column when what is stored
/// is not what steward writes there.
pub(crate) fn col<T>(r: &impl Get<T>, name: &str) -> Result<T, StoreError> {
    r.get_col(name)
}

/// A JSON column parsed: text that does not parse (or not as the type) is reported as
/// damaged, never read as an empty value.
pub(crate) fn json_col<T: serde::de::DeserializeOwned>(r: &impl Columns, name: &str) -> Result<T, StoreError> {
    parse_json(name, &col::<String>(r, name)?)
}

/// JSON text from column `name` parsed, or [`StoreError::Corrupt`].
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(name: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("column `{name}` holds JSON steward cannot read: {e}")))
}

/// A column holding one of a set of names (a status, a state).
pub(crate) fn enum_col<T>(r: &impl Columns, name: &str, parse: impl Fn(&str) -> Option<T>) -> Result<T, StoreError> {
    let text: String = col(r, name)?;
    parse(&text).ok_or_else(|| StoreError::Corrupt(format!("column `{name}` holds `{text}`, which is none of its values")))
}

pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

pub(crate) fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data serializes")
}

/// One outbox row's text columns, borrowed: a notification's payload can be large and
/// is written as the caller holds it.
pub(crate) struct OutboxRow<'a> {
    pub dedup_key: &'a str,
    pub receiver: &'a str,
    pub group_key: &'a str,
    pub status: &'a str,
    /// JSON text.
    pub payload: &'a str,
}

impl<'a> OutboxRow<'a> {
    pub(crate) fn of(m: &'a crate::OutboxMessage, payload: &'a str) -> Self {
        OutboxRow { dedup_key: &m.dedup_key, receiver: &m.receiver, group_key: &m.group_key, status: &m.status, payload }
    }
}

/// zstd's frame magic number. JSON text never starts with it (byte 0x28 is `(`), so a
/// payload column holds either a compressed payload or, in rows written before payloads
/// were compressed, the text itself.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// A payload as stored: zstd-compressed. A group's payload repeats its labels alert after
/// alert and is written again, grown, on every flush; compressed it is about a tenth of
/// the bytes through the WAL and its checkpoints.
pub(crate) fn compress_payload(text: &str) -> Vec<u8> {
    zstd::bulk::compress(text.as_bytes(), 1).expect("compressing into memory cannot fail")
}

/// A stored payload back as JSON text: zstd-compressed (rows written since schema 9) or
/// plain text (rows written before).
pub(crate) fn payload_text(stored: &[u8]) -> Result<String, StoreError> {
    let damaged = |why: String| StoreError::Corrupt(format!("a notification payload {why}"));
    let bytes = if stored.starts_with(&ZSTD_MAGIC) {
        zstd::stream::decode_all(stored).map_err(|e| damaged(format!("does not decompress: {e}")))?
    } else {
        stored.to_vec()
    };
    String::from_utf8(bytes).map_err(|_| damaged("is not text".into()))
}

pub(crate) fn result_row<R: Columns>(r: &R) -> Result<ResultRow, StoreError> {
    let observed: Option<String> = col(r, "observed")?;
    let values = match observed {
        None => Default::default(),
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| StoreError::Corrupt(format!("a check result's recorded values are not a JSON object of numbers: {e}")))?,
    };
    Ok(ResultRow {
        at: time(col(r, "at_ms")?),
        healthy: col(r, "healthy")?,
        latency_ms: col(r, "latency_ms")?,
        reason: col(r, "reason")?,
        values,
    })
}

/// A run's recorded values as stored: a JSON object, or NULL when there are none.
pub(crate) fn observed(values: &std::collections::BTreeMap<String, f64>) -> Option<String> {
    (!values.is_empty()).then(|| serde_json::to_string(values).unwrap_or_default())
}

pub(crate) fn token_row<R: Columns>(r: &R) -> Result<TokenInfo, StoreError> {
    Ok(TokenInfo {
        name: col(r, "name")?,
        role: enum_col(r, "role", |s| s.parse::<Role>().ok())?,
        created_at: time(col(r, "created_at_ms")?),
        revoked_at: col::<Option<i64>>(r, "revoked_at_ms")?.map(time),
    })
}

/// An event count as the databases store it (a signed 64-bit integer).
pub(crate) fn count(n: u64) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| StoreError::Corrupt(format!("an event count of {n} is beyond what the store keeps")))
}

/// One row of `slo_buckets`.
pub(crate) fn slo_bucket_row<R: Columns>(r: &R) -> Result<steward_model::slo::Bucket, StoreError> {
    let count = |name: &str| -> Result<u64, StoreError> {
        u64::try_from(col::<i64>(r, name)?).map_err(|_| StoreError::Corrupt(format!("column `{name}` holds a negative count")))
    };
    let small = |name: &str| -> Result<u32, StoreError> {
        u32::try_from(col::<i64>(r, name)?).map_err(|_| StoreError::Corrupt(format!("column `{name}` is out of range")))
    };
    Ok(steward_model::slo::Bucket {
        start: col(r, "start_minute")?,
        minutes: small("minutes")?,
        good: count("good")?,
        total: count("total")?,
        good_slices: small("good_slices")?,
        slices: small("slices")?,
    })
}

/// One row of `CheckStore::buckets`: `b`, `runs`, `failures`, `latency_sum_ms`, `latency_max_ms`.
pub(crate) fn bucket_row<R: Columns>(r: &R) -> Result<crate::Rollup, StoreError> {
    let runs: i64 = col(r, "runs")?;
    Ok(crate::Rollup {
        hour: time(col(r, "b")?),
        runs: runs as u64,
        failures: col::<i64>(r, "failures")? as u64,
        latency_avg_ms: col::<f64>(r, "latency_sum_ms")? / runs.max(1) as f64,
        latency_max_ms: col(r, "latency_max_ms")?,
    })
}

/// One row of `CheckStore::daily_by_group`: `grp`, `d`, `runs`, `failures`.
pub(crate) fn group_day_row<R: Columns>(r: &R) -> Result<crate::GroupDay, StoreError> {
    Ok(crate::GroupDay {
        group: col(r, "grp")?,
        day: time(col(r, "d")?),
        runs: col::<i64>(r, "runs")? as u64,
        failures: col::<i64>(r, "failures")? as u64,
    })
}

/// A `heartbeats` row.
pub(crate) fn heartbeat_row<R: Columns>(r: &R) -> Result<crate::Heartbeat, StoreError> {
    Ok(crate::Heartbeat {
        check: col(r, "check_name")?,
        watching_since: time(col(r, "watching_since_ms")?),
        last_ok: col::<Option<i64>>(r, "last_ok_ms")?.map(time),
        last_fail: col::<Option<i64>>(r, "last_fail_ms")?.map(time),
        signals: col::<i64>(r, "signals")? as u64,
    })
}

/// A session row joined with its token's row (`SELECT s.*, t.*`).
pub(crate) fn session_row<R: Columns>(r: &R) -> Result<ConsoleSession, StoreError> {
    Ok(ConsoleSession {
        token: token_row(r)?,
        csrf: col(r, "csrf")?,
        created_at: time(col(r, "opened_ms")?),
        expires_at: time(col(r, "expires_ms")?),
    })
}

pub(crate) fn alert_row<R: Columns>(r: &R) -> Result<Alert, StoreError> {
    Ok(Alert {
        fingerprint: col(r, "fingerprint")?,
        rule: col(r, "rule")?,
        labels: json_col(r, "labels")?,
        annotations: json_col(r, "annotations")?,
        state: enum_col(r, "state", AlertState::parse)?,
        active_since: time(col(r, "active_since_ms")?),
        fired_at: col::<Option<i64>>(r, "fired_at_ms")?.map(time),
        resolved_at: col::<Option<i64>>(r, "resolved_at_ms")?.map(time),
        last_true: col::<Option<i64>>(r, "last_true_ms")?.map(time),
        value: col(r, "value")?,
        source: enum_col(r, "source", AlertSource::parse)?,
        ends_at: col::<Option<i64>>(r, "ends_at_ms")?.map(time),
    })
}

pub(crate) fn alert_event_row<R: Columns>(r: &R) -> Result<AlertEvent, StoreError> {
    Ok(AlertEvent {
        fingerprint: col(r, "fingerprint")?,
        rule: col(r, "rule")?,
        at: time(col(r, "at_ms")?),
        from: enum_col(r, "from_state", AlertState::parse)?,
        to: enum_col(r, "to_state", AlertState::parse)?,
        value: col(r, "value")?,
    })
}

pub(crate) fn notification_row<R: Columns>(r: &R) -> Result<Notification, StoreError> {
    // Only the notification queries select the alert list.
    let alerts: Option<String> =
        if r.columns().iter().any(|c| sqlx::Column::name(c) == "alert_list") { col(r, "alert_list")? } else { None };
    Ok(Notification {
        id: col(r, "id")?,
        dedup_key: col(r, "dedup_key")?,
        receiver: col(r, "receiver")?,
        group_key: col(r, "group_key")?,
        status: col(r, "status")?,
        payload: payload_text(&col::<Vec<u8>>(r, "payload")?)?,
        created_at: time(col(r, "created_ms")?),
        state: enum_col(r, "state", DeliveryState::parse)?,
        attempts: col::<i64>(r, "attempts")? as u32,
        next_attempt_at: time(col(r, "next_attempt_ms")?),
        last_error: col(r, "last_error")?,
        delivered_at: col::<Option<i64>>(r, "delivered_ms")?.map(time),
        alerts: alerts.map(|a| a.split(',').map(str::to_string).collect()).unwrap_or_default(),
    })
}

pub(crate) fn silence_row<R: Columns>(r: &R) -> Result<Silence, StoreError> {
    let matchers: Vec<String> = json_col(r, "matchers")?;
    Ok(Silence {
        id: col(r, "id")?,
        // A matcher that no longer parses would widen the silence: refused, not dropped.
        matchers: matchers
            .iter()
            .map(|m| Matcher::parse(m).map_err(|e| StoreError::Corrupt(format!("silence matcher `{m}`: {e}"))))
            .collect::<Result<_, _>>()?,
        starts_at: time(col(r, "starts_ms")?),
        ends_at: time(col(r, "ends_ms")?),
        created_by: col(r, "created_by")?,
        comment: col(r, "comment")?,
        created_at: time(col(r, "created_ms")?),
        expired_at: col::<Option<i64>>(r, "expired_ms")?.map(time),
    })
}

pub(crate) fn backup_row<R: Columns>(r: &R) -> Result<BackupRecord, StoreError> {
    Ok(BackupRecord {
        id: col(r, "id")?,
        policy: col(r, "policy")?,
        repository: col(r, "repository")?,
        source: col(r, "source")?,
        status: enum_col(r, "status", BackupStatus::parse)?,
        trigger: col(r, "trigger")?,
        started_by: col(r, "started_by")?,
        owner: col(r, "owner")?,
        started_at: time(col(r, "started_ms")?),
        finished_at: col::<Option<i64>>(r, "finished_ms")?.map(time),
        heartbeat_at: time(col(r, "heartbeat_ms")?),
        plain_bytes: col(r, "plain_bytes")?,
        stored_bytes: col(r, "stored_bytes")?,
        error: col(r, "error")?,
        facts: json_col(r, "facts")?,
        verified_at: col::<Option<i64>>(r, "verified_ms")?.map(time),
        verify_result: col(r, "verify_result")?,
        verify_level: col::<Option<i64>>(r, "verify_level")?.map(|l| l as u8),
        restore_ms: col(r, "restore_ms")?,
        restoring_until: col::<Option<i64>>(r, "restoring_until_ms")?.map(time),
    })
}

pub(crate) fn verification_row<R: Columns>(r: &R) -> Result<Verification, StoreError> {
    Ok(Verification {
        id: col(r, "id")?,
        backup_id: col(r, "backup_id")?,
        policy: col(r, "policy")?,
        level: col::<i64>(r, "level")? as u8,
        trigger: col(r, "trigger")?,
        started_at: time(col(r, "started_ms")?),
        finished_at: col::<Option<i64>>(r, "finished_ms")?.map(time),
        result: col(r, "result")?,
        detail: json_col(r, "detail")?,
        restore_ms: col(r, "restore_ms")?,
    })
}

pub(crate) fn restore_row<R: Columns>(r: &R) -> Result<RestoreRecord, StoreError> {
    Ok(RestoreRecord {
        id: col(r, "id")?,
        backup_id: col(r, "backup_id")?,
        policy: col(r, "policy")?,
        target: col(r, "target")?,
        actor: col(r, "actor")?,
        replaced: col(r, "replaced")?,
        started_at: time(col(r, "started_ms")?),
        finished_at: col::<Option<i64>>(r, "finished_ms")?.map(time),
        result: col(r, "result")?,
        detail: json_col(r, "detail")?,
    })
}

pub(crate) fn opt_time<R: Columns>(r: &R, column: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    Ok(col::<Option<i64>>(r, column)?.map(time))
}

pub(crate) fn incident_row<R: Columns>(r: &R) -> Result<Incident, StoreError> {
    let escalation: Option<String> = col(r, "escalation")?;
    Ok(Incident {
        id: col(r, "id")?,
        title: col(r, "title")?,
        priority: enum_col(r, "priority", Priority::parse)?,
        status: enum_col(r, "status", Status::parse)?,
        policy: col(r, "policy")?,
        group_key: col(r, "group_key")?,
        services: json_col(r, "services")?,
        opened_by: col(r, "opened_by")?,
        opened_at: time(col(r, "opened_ms")?),
        acknowledged_at: opt_time(r, "acknowledged_ms")?,
        mitigated_at: opt_time(r, "mitigated_ms")?,
        resolved_at: opt_time(r, "resolved_ms")?,
        closed_at: opt_time(r, "closed_ms")?,
        roles: json_col(r, "roles")?,
        escalation: escalation.map(|e| parse_json("escalation", &e)).transpose()?,
        auto_resolve: col(r, "auto_resolve")?,
        version: col(r, "version")?,
    })
}

pub(crate) fn attached_row<R: Columns>(r: &R) -> Result<IncidentAlert, StoreError> {
    Ok(IncidentAlert {
        incident_id: col(r, "incident_id")?,
        fingerprint: col(r, "fingerprint")?,
        rule: col(r, "rule")?,
        labels: json_col(r, "labels")?,
        state: enum_col(r, "state", |s| match s {
            "firing" => Some(AttachedState::Firing),
            "resolved" => Some(AttachedState::Resolved),
            _ => None,
        })?,
        attached_at: time(col(r, "attached_ms")?),
        changed_at: time(col(r, "changed_ms")?),
        fired_at: col::<Option<i64>>(r, "fired_ms")?.map(time),
    })
}

pub(crate) fn timeline_row<R: Columns>(r: &R) -> Result<TimelineEntry, StoreError> {
    Ok(TimelineEntry {
        id: col(r, "id")?,
        incident_id: col(r, "incident_id")?,
        at: time(col(r, "at_ms")?),
        kind: col(r, "kind")?,
        actor: col(r, "actor")?,
        text: col(r, "text")?,
        public: col(r, "public")?,
        data: json_col(r, "data")?,
    })
}

pub(crate) fn action_row<R: Columns>(r: &R) -> Result<ActionItem, StoreError> {
    Ok(ActionItem {
        id: col(r, "id")?,
        incident_id: col(r, "incident_id")?,
        text: col(r, "text")?,
        owner: col(r, "owner")?,
        state: col(r, "state")?,
        created_by: col(r, "created_by")?,
        created_at: time(col(r, "created_ms")?),
        done_at: opt_time(r, "done_ms")?,
    })
}

pub(crate) fn run_row<R: Columns>(r: &R) -> Result<Run, StoreError> {
    Ok(Run {
        id: col(r, "id")?,
        runbook: col(r, "runbook")?,
        params: json_col(r, "params")?,
        status: enum_col(r, "status", RunStatus::parse)?,
        trigger: col(r, "trigger")?,
        started_by: col(r, "started_by")?,
        parent_run: col(r, "parent_run")?,
        alert_fingerprint: col(r, "alert_fingerprint")?,
        incident_id: col(r, "incident_id")?,
        lock: col(r, "lock_name")?,
        created_at: time(col(r, "created_ms")?),
        finished_at: col::<Option<i64>>(r, "finished_ms")?.map(time),
        heartbeat_at: time(col(r, "heartbeat_ms")?),
        error: col(r, "error")?,
        outputs: json_col(r, "outputs")?,
        owner: col(r, "owner")?,
        cancel_requested_by: col(r, "cancel_requested_by")?,
    })
}

pub(crate) fn step_row<R: Columns>(r: &R) -> Result<StepRecord, StoreError> {
    Ok(StepRecord {
        run_id: col(r, "run_id")?,
        path: col(r, "path")?,
        name: col(r, "name")?,
        kind: col(r, "kind")?,
        attempt: col::<i64>(r, "attempt")? as u32,
        status: enum_col(r, "status", StepStatus::parse)?,
        started_at: time(col(r, "started_ms")?),
        finished_at: col::<Option<i64>>(r, "finished_ms")?.map(time),
        detail: json_col(r, "detail")?,
        result: json_col(r, "result")?,
        output: col(r, "output")?,
        error: col(r, "error")?,
    })
}

pub(crate) fn run_event_row<R: Columns>(r: &R) -> Result<RunEvent, StoreError> {
    Ok(RunEvent {
        id: col(r, "id")?,
        run_id: col(r, "run_id")?,
        at: time(col(r, "at_ms")?),
        kind: col(r, "kind")?,
        step: col(r, "step")?,
        actor: col(r, "actor")?,
        message: col(r, "message")?,
        data: json_col(r, "data")?,
    })
}

pub(crate) fn approval_row<R: Columns>(r: &R) -> Result<ApprovalRequest, StoreError> {
    Ok(ApprovalRequest {
        run_id: col(r, "run_id")?,
        path: col(r, "path")?,
        attempt: col::<i64>(r, "attempt")? as u32,
        role: enum_col(r, "role", |s| s.parse().ok())?,
        distinct_approver: col(r, "distinct_approver")?,
        started_by: col(r, "started_by")?,
        requested_at: time(col(r, "requested_ms")?),
        expires_at: time(col(r, "expires_ms")?),
        state: enum_col(r, "state", ApprovalState::parse)?,
        decided_by: col(r, "decided_by")?,
        decided_at: col::<Option<i64>>(r, "decided_ms")?.map(time),
        comment: col(r, "comment")?,
    })
}
