//! The embedded store: one SQLite file in WAL mode.
//!
//! Exactly one connection writes (a pool of size one), so writers queue inside the
//! process instead of racing for SQLite's lock: no `SQLITE_BUSY` can turn into a false
//! alarm. Readers use their own pool and never block the writer in WAL mode. Another
//! process (`steward token create` while `serve` runs) waits on `busy_timeout`.

use std::collections::HashMap;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Sqlite};

use super::rows::{
    bucket_row, col, count, enum_col, group_day_row, heartbeat_row, json, ms, result_row, session_row, slo_bucket_row, time, token_row,
};
use super::{CheckStore, GroupDay, Heartbeat, KeyStore, RecordedRun, ResultRow, Rollup, SloEvents, Store, StoreError};
use steward_model::auth::{ConsoleSession, Role, TokenInfo};
use steward_model::checks::state::{CheckState, Health, Transition};
use steward_model::slo::Bucket;

/// Rows per multi-row INSERT: 8 columns × 1,000 stays far below SQLite's limit of
/// 32,766 bound parameters.
pub(super) const ROWS_PER_STATEMENT: usize = 1000;

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE check_results (
    check_name TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    healthy INTEGER NOT NULL,
    latency_ms REAL NOT NULL,
    reason TEXT
);
CREATE INDEX check_results_by_check ON check_results (check_name, at_ms);
CREATE INDEX check_results_by_time ON check_results (at_ms);
CREATE TABLE check_states (
    check_name TEXT PRIMARY KEY,
    health TEXT NOT NULL,
    since_ms INTEGER NOT NULL,
    consecutive_successes INTEGER NOT NULL,
    consecutive_failures INTEGER NOT NULL,
    last_run_ms INTEGER,
    last_latency_ms REAL,
    last_reason TEXT
);
CREATE TABLE check_transitions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    check_name TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    from_health TEXT NOT NULL,
    to_health TEXT NOT NULL,
    reason TEXT
);
CREATE INDEX check_transitions_by_check ON check_transitions (check_name, id);
CREATE TABLE check_rollups (
    check_name TEXT NOT NULL,
    hour_ms INTEGER NOT NULL,
    runs INTEGER NOT NULL,
    failures INTEGER NOT NULL,
    latency_sum_ms REAL NOT NULL,
    latency_max_ms REAL NOT NULL,
    PRIMARY KEY (check_name, hour_ms)
);
CREATE TABLE api_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    created_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER
);
CREATE UNIQUE INDEX api_tokens_live_name ON api_tokens (name) WHERE revoked_at_ms IS NULL;
CREATE TABLE readiness_probe (id INTEGER PRIMARY KEY CHECK (id = 1), at_ms INTEGER NOT NULL);
"#,
    r#"
CREATE TABLE alerts (
    fingerprint TEXT PRIMARY KEY,
    rule TEXT NOT NULL,
    labels TEXT NOT NULL,
    annotations TEXT NOT NULL,
    state TEXT NOT NULL,
    active_since_ms INTEGER NOT NULL,
    fired_at_ms INTEGER,
    resolved_at_ms INTEGER,
    last_true_ms INTEGER,
    value REAL
);
CREATE TABLE alert_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    fingerprint TEXT NOT NULL,
    rule TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    from_state TEXT NOT NULL,
    to_state TEXT NOT NULL,
    value REAL
);
CREATE INDEX alert_events_by_alert ON alert_events (fingerprint, id);
CREATE TABLE notify_log (
    receiver TEXT NOT NULL,
    group_key TEXT NOT NULL,
    firing TEXT NOT NULL,
    sent_at_ms INTEGER NOT NULL,
    PRIMARY KEY (receiver, group_key)
);
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dedup_key TEXT NOT NULL UNIQUE,
    receiver TEXT NOT NULL,
    group_key TEXT NOT NULL,
    status TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    last_error TEXT,
    delivered_ms INTEGER
);
CREATE INDEX outbox_due ON outbox (state, receiver, next_attempt_ms);
CREATE TABLE outbox_alerts (
    fingerprint TEXT NOT NULL,
    outbox_id INTEGER NOT NULL,
    PRIMARY KEY (fingerprint, outbox_id)
);
CREATE TABLE silences (
    id TEXT PRIMARY KEY,
    matchers TEXT NOT NULL,
    starts_ms INTEGER NOT NULL,
    ends_ms INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    comment TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expired_ms INTEGER
);
"#,
    // Alerts received from outside (an Alertmanager webhook) beside rule alerts.
    r#"
ALTER TABLE alerts ADD COLUMN source TEXT NOT NULL DEFAULT 'rule';
ALTER TABLE alerts ADD COLUMN ends_at_ms INTEGER;
"#,
    // Incidents: the row, the alerts each holds, an append-only timeline (enforced by
    // triggers), action items, runtime on-call overrides; escalation notifications in
    // the outbox name their incident.
    r#"
CREATE TABLE incidents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    title TEXT NOT NULL,
    priority TEXT NOT NULL,
    status TEXT NOT NULL,
    policy TEXT,
    group_key TEXT NOT NULL,
    services TEXT NOT NULL,
    opened_by TEXT NOT NULL,
    opened_ms INTEGER NOT NULL,
    acknowledged_ms INTEGER,
    mitigated_ms INTEGER,
    resolved_ms INTEGER,
    closed_ms INTEGER,
    roles TEXT NOT NULL,
    escalation TEXT,
    auto_resolve INTEGER NOT NULL,
    version INTEGER NOT NULL
);
CREATE INDEX incidents_by_status ON incidents (status);
CREATE INDEX incidents_by_time ON incidents (opened_ms);
CREATE TABLE incident_alerts (
    incident_id INTEGER NOT NULL REFERENCES incidents (id),
    fingerprint TEXT NOT NULL,
    rule TEXT NOT NULL,
    labels TEXT NOT NULL,
    state TEXT NOT NULL,
    attached_ms INTEGER NOT NULL,
    changed_ms INTEGER NOT NULL,
    PRIMARY KEY (incident_id, fingerprint)
);
CREATE INDEX incident_alerts_by_fingerprint ON incident_alerts (fingerprint);
CREATE TABLE incident_timeline (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id INTEGER NOT NULL REFERENCES incidents (id),
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    text TEXT NOT NULL,
    public INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX incident_timeline_by_incident ON incident_timeline (incident_id, id);
CREATE TRIGGER incident_timeline_no_update BEFORE UPDATE ON incident_timeline
BEGIN SELECT RAISE(ABORT, 'the incident timeline is append-only'); END;
CREATE TRIGGER incident_timeline_no_delete BEFORE DELETE ON incident_timeline
BEGIN SELECT RAISE(ABORT, 'the incident timeline is append-only'); END;
CREATE TABLE action_items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id INTEGER NOT NULL REFERENCES incidents (id),
    text TEXT NOT NULL,
    owner TEXT,
    state TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    done_ms INTEGER
);
CREATE INDEX action_items_by_incident ON action_items (incident_id);
CREATE TABLE oncall_overrides (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    schedule TEXT NOT NULL,
    person TEXT NOT NULL,
    from_ms INTEGER NOT NULL,
    until_ms INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
ALTER TABLE outbox ADD COLUMN incident_id INTEGER;
CREATE INDEX outbox_by_incident ON outbox (incident_id) WHERE incident_id IS NOT NULL;
"#,
    // Keys the server signs with (acknowledge links in pages), created on first use.
    r#"
CREATE TABLE server_keys (
    name TEXT PRIMARY KEY,
    key BLOB NOT NULL,
    created_ms INTEGER NOT NULL
);
"#,
    // Runbook runs: the run (its lock in `run_locks`, taken and released in the same
    // transactions as the run's status), each step attempt, and append-only events
    // (progress, output, the audit trail). Events may be deleted only by retention,
    // once their run is finished.
    r#"
CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    runbook TEXT NOT NULL,
    params TEXT NOT NULL,
    status TEXT NOT NULL,
    trigger TEXT NOT NULL,
    started_by TEXT NOT NULL,
    parent_run INTEGER,
    alert_fingerprint TEXT,
    incident_id INTEGER,
    lock_name TEXT,
    trigger_key TEXT UNIQUE,
    created_ms INTEGER NOT NULL,
    finished_ms INTEGER,
    heartbeat_ms INTEGER NOT NULL,
    error TEXT,
    outputs TEXT NOT NULL DEFAULT 'null'
);
-- Every list filter has an index ending in id, so a page costs its own size even
-- when nothing matches (no scan of the history, however long).
CREATE INDEX runs_by_runbook ON runs (runbook, id);
CREATE INDEX runs_by_status ON runs (status, id);
CREATE INDEX runs_by_runbook_status ON runs (runbook, status, id);
CREATE INDEX runs_unfinished ON runs (id) WHERE finished_ms IS NULL;
CREATE INDEX runs_by_finish ON runs (finished_ms) WHERE finished_ms IS NOT NULL;
CREATE TABLE run_locks (
    name TEXT PRIMARY KEY,
    run_id INTEGER NOT NULL,
    acquired_ms INTEGER NOT NULL
);
CREATE TABLE run_steps (
    run_id INTEGER NOT NULL,
    path TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    finished_ms INTEGER,
    detail TEXT NOT NULL,
    result TEXT NOT NULL,
    output TEXT NOT NULL,
    error TEXT,
    seq INTEGER NOT NULL,
    PRIMARY KEY (run_id, path, attempt)
);
CREATE INDEX run_steps_open ON run_steps (run_id) WHERE status IN ('running', 'waiting');
CREATE TABLE run_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    step TEXT,
    actor TEXT,
    message TEXT NOT NULL,
    data TEXT NOT NULL,
    audit INTEGER NOT NULL
);
CREATE INDEX run_events_by_run ON run_events (run_id, id);
CREATE INDEX run_events_audit ON run_events (id) WHERE audit = 1;
CREATE INDEX run_events_audit_by_actor ON run_events (actor, id) WHERE audit = 1;
CREATE TRIGGER run_events_no_update BEFORE UPDATE ON run_events
BEGIN SELECT RAISE(ABORT, 'run events are append-only'); END;
CREATE TRIGGER run_events_no_delete_unfinished BEFORE DELETE ON run_events
WHEN (SELECT finished_ms FROM runs WHERE id = OLD.run_id) IS NULL
BEGIN SELECT RAISE(ABORT, 'run events are append-only; only finished runs expire'); END;
"#,
    r#"
CREATE TABLE backups (
    id TEXT PRIMARY KEY,
    policy TEXT NOT NULL,
    repository TEXT NOT NULL,
    source TEXT NOT NULL,
    status TEXT NOT NULL,
    trigger TEXT NOT NULL,
    trigger_key TEXT UNIQUE,
    started_by TEXT NOT NULL,
    owner TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    finished_ms INTEGER,
    heartbeat_ms INTEGER NOT NULL,
    plain_bytes INTEGER NOT NULL DEFAULT 0,
    stored_bytes INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    facts TEXT NOT NULL DEFAULT 'null',
    verified_ms INTEGER,
    verify_result TEXT,
    verify_level INTEGER,
    restore_ms INTEGER,
    restoring_until_ms INTEGER
);
CREATE INDEX backups_by_policy ON backups (policy, started_ms);
CREATE INDEX backups_by_status ON backups (status, started_ms);
CREATE TABLE backup_locks (
    name TEXT PRIMARY KEY,
    backup_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    acquired_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);
CREATE TABLE backup_verifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    backup_id TEXT NOT NULL,
    policy TEXT NOT NULL,
    level INTEGER NOT NULL,
    trigger TEXT NOT NULL,
    trigger_key TEXT UNIQUE,
    started_ms INTEGER NOT NULL,
    heartbeat_ms INTEGER NOT NULL,
    finished_ms INTEGER,
    result TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT 'null',
    restore_ms INTEGER
);
CREATE INDEX backup_verifications_by_backup ON backup_verifications (backup_id, id);
"#,
    r#"
CREATE TABLE backup_restores (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    backup_id TEXT NOT NULL,
    policy TEXT NOT NULL,
    target TEXT NOT NULL,
    actor TEXT NOT NULL,
    replaced INTEGER NOT NULL,
    started_ms INTEGER NOT NULL,
    heartbeat_ms INTEGER NOT NULL,
    finished_ms INTEGER,
    result TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT 'null'
);
CREATE INDEX backup_restores_by_backup ON backup_restores (backup_id, id);
CREATE INDEX backup_restores_running ON backup_restores (heartbeat_ms) WHERE result = 'running';
"#,
    // Which firing (episode) of an alert a notification and an incident attachment are
    // about, so an incident lists only its own episodes' notifications.
    r#"
ALTER TABLE incident_alerts ADD COLUMN fired_ms INTEGER;
ALTER TABLE outbox_alerts ADD COLUMN fired_ms INTEGER;
"#,
    // A notification's alerts by notification: every listed or delivered notification
    // looks its alerts up by `outbox_id`, which the (fingerprint, outbox_id) key cannot
    // serve — each lookup scanned every reference ever written.
    r#"
CREATE INDEX outbox_alerts_by_outbox ON outbox_alerts (outbox_id);
"#,
    // One lock model for runs and backups (see `store::locks`): a named lock held by
    // one holder for one owner (a steward process) until its lease ends — a run's lock
    // has no end: it is released when the run ends, because an interrupted failover
    // must be decided by a person before another may start. Runs record their owner.
    // One open incident per group is the database's rule, not a mutex's.
    r#"
CREATE TABLE locks (
    name TEXT PRIMARY KEY,
    holder_kind TEXT NOT NULL CHECK (holder_kind IN ('run', 'backup')),
    holder TEXT NOT NULL,
    owner TEXT NOT NULL,
    acquired_ms INTEGER NOT NULL,
    expires_ms INTEGER
);
CREATE INDEX locks_by_holder ON locks (holder_kind, holder);
INSERT INTO locks (name, holder_kind, holder, owner, acquired_ms, expires_ms)
    SELECT name, 'run', CAST(run_id AS TEXT), '', acquired_ms, NULL FROM run_locks;
INSERT INTO locks (name, holder_kind, holder, owner, acquired_ms, expires_ms)
    SELECT name, 'backup', backup_id, owner, acquired_ms, expires_ms FROM backup_locks;
DROP TABLE run_locks;
DROP TABLE backup_locks;
ALTER TABLE runs ADD COLUMN owner TEXT NOT NULL DEFAULT '';
-- Before this index, two writers could each open an incident for one group. Such older
-- duplicates stay open with their alerts but leave the group (the newest holds it, and
-- later alerts join that one); each says so in its timeline.
CREATE TEMP TABLE group_duplicates AS
    SELECT id, group_key FROM incidents AS i
    WHERE status IN ('triggered', 'acknowledged', 'mitigated') AND group_key != ''
      AND id < (SELECT max(id) FROM incidents AS n
                WHERE n.group_key = i.group_key AND n.status IN ('triggered', 'acknowledged', 'mitigated'));
INSERT INTO incident_timeline (incident_id, at_ms, kind, actor, text, public, data)
    SELECT d.id, CAST(strftime('%s', 'now') AS INTEGER) * 1000, 'note', 'steward',
           'Left group ' || d.group_key || ' on upgrade: a newer open incident holds it',
           0, json_object('group_key', d.group_key)
    FROM group_duplicates AS d;
UPDATE incidents SET group_key = '' WHERE id IN (SELECT id FROM group_duplicates);
DROP TABLE group_duplicates;
CREATE UNIQUE INDEX incidents_one_open_per_group ON incidents (group_key)
    WHERE status IN ('triggered', 'acknowledged', 'mitigated') AND group_key != '';
"#,
    // Outbox rows are claimed (by a process, until a time) before a worker sends them,
    // so two workers — in one process or in two — never send the same row at once.
    r#"
ALTER TABLE outbox ADD COLUMN claimed_by TEXT;
ALTER TABLE outbox ADD COLUMN claim_until_ms INTEGER;
"#,
    // Approvals and cancels are decided in the store, so any steward process can take
    // them and the run learns of them wherever it runs.
    r#"
CREATE TABLE run_approvals (
    run_id INTEGER NOT NULL,
    path TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    role TEXT NOT NULL,
    distinct_approver INTEGER NOT NULL,
    started_by TEXT NOT NULL,
    requested_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    state TEXT NOT NULL,
    decided_by TEXT,
    decided_ms INTEGER,
    comment TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, path, attempt)
);
CREATE INDEX run_approvals_pending ON run_approvals (run_id) WHERE state = 'pending';
ALTER TABLE runs ADD COLUMN cancel_requested_by TEXT;
ALTER TABLE runs ADD COLUMN cancel_requested_ms INTEGER;
"#,
    // Replicas and the leadership lease (see `cluster`). The term only grows: a lease
    // given up keeps its row, expired.
    r#"
CREATE TABLE replicas (
    id TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    version TEXT NOT NULL,
    schema INTEGER NOT NULL,
    started_ms INTEGER NOT NULL,
    heartbeat_ms INTEGER NOT NULL
);
CREATE TABLE leadership (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    term INTEGER NOT NULL,
    acquired_ms INTEGER NOT NULL,
    renewed_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);
"#,
    // Web console sessions (see `Store::create_session`).
    r#"
CREATE TABLE console_sessions (
    id_hash TEXT PRIMARY KEY,
    token_id INTEGER NOT NULL REFERENCES api_tokens (id),
    csrf TEXT NOT NULL,
    opened_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);
CREATE INDEX console_sessions_by_expiry ON console_sessions (expires_ms);
"#,
    // Daily sums of folded results, written with the hourly rollups (see `compact`), so
    // 90 days of a check read 90 rows, not 2,160. Filled from the rollups already there.
    r#"
CREATE TABLE check_days (
    check_name TEXT NOT NULL,
    day_ms INTEGER NOT NULL,
    runs INTEGER NOT NULL,
    failures INTEGER NOT NULL,
    latency_sum_ms REAL NOT NULL,
    latency_max_ms REAL NOT NULL,
    PRIMARY KEY (check_name, day_ms)
);
INSERT INTO check_days (check_name, day_ms, runs, failures, latency_sum_ms, latency_max_ms)
SELECT check_name, (hour_ms / 86400000) * 86400000, sum(runs), sum(failures), sum(latency_sum_ms), max(latency_max_ms)
FROM check_rollups GROUP BY 1, 2;
"#,
    // Push (`heartbeat`) checks: the signals jobs sent, one row per check.
    r#"
CREATE TABLE heartbeats (
    check_name TEXT PRIMARY KEY,
    watching_since_ms INTEGER NOT NULL,
    last_ok_ms INTEGER,
    last_fail_ms INTEGER,
    signals INTEGER NOT NULL DEFAULT 0
);
"#,
    // SLOs: good and total events per minute, older ones rolled up into wider buckets.
    r#"
CREATE TABLE slo_buckets (
    slo TEXT NOT NULL,
    start_minute INTEGER NOT NULL,
    minutes INTEGER NOT NULL,
    good INTEGER NOT NULL,
    total INTEGER NOT NULL,
    good_slices INTEGER NOT NULL DEFAULT 0,
    slices INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (slo, start_minute)
);
"#,
    // The fields a check records for forecasts, as a JSON object (NULL: none).
    "ALTER TABLE check_results ADD COLUMN observed TEXT;",
];

#[derive(Clone)]
pub struct SqliteStore {
    pub(super) writer: SqlitePool,
    pub(super) reader: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) `steward.db` in `data_dir` and migrates it.
    /// Opens (creating if needed) `steward.db` in `data_dir`. The directory is made 0700
    /// and the database files 0600 whatever the umask: they hold token hashes, the
    /// acknowledge-link key and every record.
    pub async fn open(data_dir: &Path) -> Result<SqliteStore, StoreError> {
        let open_error = |p: &Path, e: std::io::Error| StoreError::Open { path: p.display().to_string(), message: e.to_string() };
        std::fs::create_dir_all(data_dir).map_err(|e| open_error(data_dir, e))?;
        restrict(data_dir, 0o700).map_err(|e| open_error(data_dir, e))?;
        let path = data_dir.join("steward.db");
        // Created empty with 0600 before SQLite opens it, so it is never readable by
        // others. No exists() check first: another steward process (a CLI command beside
        // the server) may create it in between, and an existing file is all this needs.
        match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(open_error(&path, e)),
        }
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(|e| StoreError::Open { path: path.display().to_string(), message: e.to_string() })?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL in WAL mode is durable against process crashes; a power cut may lose
            // the last transactions but never corrupts the file.
            .synchronous(SqliteSynchronous::Normal)
            // Statement journals (a multi-row upsert inside a transaction needs one) in
            // memory: spilled to a temporary file they were a tenth of a large ingest's
            // CPU, in write(2) calls.
            .pragma("temp_store", "memory")
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        // Another steward process opening the same new file at this moment (a CLI
        // command beside a starting server) can hold it while it turns the file to WAL
        // and creates the schema; SQLite then answers "database is locked" at once, not
        // after the busy timeout. Wait for it as the busy timeout would.
        let started = std::time::Instant::now();
        let writer = loop {
            let attempt = async {
                let writer = SqlitePoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    .acquire_timeout(Duration::from_secs(30))
                    .connect_with(options.clone())
                    .await
                    .map_err(|e| StoreError::Open { path: path.display().to_string(), message: e.to_string() })?;
                migrate(&writer).await?;
                Ok::<_, StoreError>(writer)
            };
            match attempt.await {
                Ok(writer) => break writer,
                Err(e) if e.to_string().contains("database is locked") && started.elapsed() < Duration::from_secs(10) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e),
            }
        };
        // Files written by an older steward under a permissive umask are tightened too.
        for suffix in ["", "-wal", "-shm"] {
            let f = data_dir.join(format!("steward.db{suffix}"));
            if f.exists() {
                restrict(&f, 0o600).map_err(|e| open_error(&f, e))?;
            }
        }
        let reader = SqlitePoolOptions::new().max_connections(4).connect_with(options.read_only(true)).await?;
        Ok(SqliteStore { writer, reader })
    }
}

/// Sets a file's or directory's mode (owner only).
pub(crate) fn restrict(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Write transactions start IMMEDIATE (the write lock first): a deferred one that reads
/// and then writes fails at once with "database is locked" when another process (a
/// `steward backup` or `token` command beside the server) wrote in between, instead of
/// waiting out the busy timeout.
async fn migrate(pool: &SqlitePool) -> Result<(), StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let version: i64 = sqlx::query_scalar("PRAGMA user_version").fetch_one(&mut *tx).await?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(*sql)).execute(&mut *tx).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("PRAGMA user_version = {}", i + 1))).execute(&mut *tx).await?;
    }
    if version as usize > MIGRATIONS.len() {
        return Err(StoreError::NewerSchema { found: version, known: MIGRATIONS.len() });
    }
    tx.commit().await?;
    Ok(())
}

super::cluster::cluster_store!(SqliteStore, writer, reader, "PRAGMA user_version");

#[async_trait]
impl Store for SqliteStore {
    /// The same store, unfenced: one SQLite file serves one steward server, so there is
    /// no other leader whose writes could interleave (`serve` on PostgreSQL is what
    /// runs several replicas).
    fn fenced(&self, _fence: super::Fence) -> std::sync::Arc<dyn Store> {
        std::sync::Arc::new(self.clone())
    }

    async fn create_token(&self, name: &str, role: Role, secret_hash: &str) -> Result<TokenInfo, StoreError> {
        let now = steward_model::clock::now();
        let result = sqlx::query("INSERT INTO api_tokens (name, role, secret_hash, created_at_ms) VALUES (?, ?, ?, ?)")
            .bind(name)
            .bind(role.as_str())
            .bind(secret_hash)
            .bind(ms(now))
            .execute(&self.writer)
            .await;
        match result {
            Ok(_) => Ok(TokenInfo { name: name.to_string(), role, created_at: time(ms(now)), revoked_at: None }),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::NameTaken { kind: "token", name: name.to_string() })
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn token_by_hash(&self, secret_hash: &str) -> Result<Option<TokenInfo>, StoreError> {
        let row = sqlx::query("SELECT * FROM api_tokens WHERE secret_hash = ? AND revoked_at_ms IS NULL")
            .bind(secret_hash)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(token_row).transpose()
    }

    async fn list_tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        let rows = sqlx::query("SELECT * FROM api_tokens ORDER BY id").fetch_all(&self.reader).await?;
        rows.iter().map(token_row).collect()
    }

    async fn revoke_token(&self, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE api_tokens SET revoked_at_ms = ? WHERE name = ? AND revoked_at_ms IS NULL")
            .bind(ms(steward_model::clock::now()))
            .bind(name)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn create_session(
        &self,
        id_hash: &str,
        token_hash: &str,
        csrf: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<Option<TokenInfo>, StoreError> {
        let now = ms(steward_model::clock::now());
        let mut tx = self.writer.begin().await?;
        sqlx::query("DELETE FROM console_sessions WHERE expires_ms <= ?").bind(now).execute(&mut *tx).await?;
        let Some(token) = sqlx::query("SELECT * FROM api_tokens WHERE secret_hash = ? AND revoked_at_ms IS NULL")
            .bind(token_hash)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        sqlx::query("INSERT INTO console_sessions (id_hash, token_id, csrf, opened_ms, expires_ms) VALUES (?, ?, ?, ?, ?)")
            .bind(id_hash)
            .bind(col::<i64>(&token, "id")?)
            .bind(csrf)
            .bind(now)
            .bind(ms(expires_at))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(token_row(&token)?))
    }

    async fn session(&self, id_hash: &str, now: DateTime<Utc>) -> Result<Option<ConsoleSession>, StoreError> {
        let row = sqlx::query(
            "SELECT s.*, t.* FROM console_sessions s JOIN api_tokens t ON t.id = s.token_id \
             WHERE s.id_hash = ? AND s.expires_ms > ? AND t.revoked_at_ms IS NULL",
        )
        .bind(id_hash)
        .bind(ms(now))
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref().map(session_row).transpose()
    }

    async fn end_session(&self, id_hash: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM console_sessions WHERE id_hash = ?").bind(id_hash).execute(&self.writer).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn probe_writable(&self) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO readiness_probe (id, at_ms) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET at_ms = excluded.at_ms")
            .bind(ms(steward_model::clock::now()))
            .execute(&self.writer)
            .await?;
        Ok(())
    }
}

#[async_trait]
impl CheckStore for SqliteStore {
    async fn add_slo_events(&self, events: &[SloEvents]) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        for e in events {
            sqlx::query(
                "INSERT INTO slo_buckets (slo, start_minute, minutes, good, total) VALUES (?1, ?2, 1, ?3, ?4)
                 ON CONFLICT (slo, start_minute) DO UPDATE SET good = good + excluded.good, total = total + excluded.total",
            )
            .bind(&e.slo)
            .bind(e.minute)
            .bind(count(e.good)?)
            .bind(count(e.total)?)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn slo_buckets(&self, slo: &str, from: i64) -> Result<Vec<Bucket>, StoreError> {
        let rows = sqlx::query("SELECT * FROM slo_buckets WHERE slo = ? AND start_minute >= ? ORDER BY start_minute")
            .bind(slo)
            .bind(from)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(slo_bucket_row).collect()
    }

    async fn roll_up_slo(&self, slo: &str, before: i64, rolled: &[Bucket], drop_before: i64) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        sqlx::query("DELETE FROM slo_buckets WHERE slo = ? AND minutes = 1 AND start_minute < ?")
            .bind(slo)
            .bind(before)
            .execute(&mut *tx)
            .await?;
        for b in rolled {
            sqlx::query(
                "INSERT INTO slo_buckets (slo, start_minute, minutes, good, total, good_slices, slices) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (slo, start_minute) DO UPDATE SET good = good + excluded.good, total = total + excluded.total,
                   good_slices = good_slices + excluded.good_slices, slices = slices + excluded.slices",
            )
            .bind(slo)
            .bind(b.start)
            .bind(i64::from(b.minutes))
            .bind(count(b.good)?)
            .bind(count(b.total)?)
            .bind(i64::from(b.good_slices))
            .bind(i64::from(b.slices))
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM slo_buckets WHERE slo = ? AND start_minute < ?").bind(slo).bind(drop_before).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn record_heartbeat(&self, check: &str, at: DateTime<Utc>, ok: bool) -> Result<Heartbeat, StoreError> {
        let (ok_ms, fail_ms) = if ok { (Some(ms(at)), None) } else { (None, Some(ms(at))) };
        let row = sqlx::query(
            "INSERT INTO heartbeats (check_name, watching_since_ms, last_ok_ms, last_fail_ms, signals) VALUES (?1, ?2, ?3, ?4, 1)
             ON CONFLICT (check_name) DO UPDATE SET
               last_ok_ms = max(coalesce(last_ok_ms, excluded.last_ok_ms), coalesce(excluded.last_ok_ms, last_ok_ms)),
               last_fail_ms = max(coalesce(last_fail_ms, excluded.last_fail_ms), coalesce(excluded.last_fail_ms, last_fail_ms)),
               signals = signals + 1
             RETURNING *",
        )
        .bind(check)
        .bind(ms(at))
        .bind(ok_ms)
        .bind(fail_ms)
        .fetch_one(&self.writer)
        .await?;
        heartbeat_row(&row)
    }

    async fn heartbeat_of(&self, check: &str, now: DateTime<Utc>) -> Result<Heartbeat, StoreError> {
        if let Some(row) = sqlx::query("SELECT * FROM heartbeats WHERE check_name = ?").bind(check).fetch_optional(&self.reader).await? {
            return heartbeat_row(&row);
        }
        sqlx::query("INSERT INTO heartbeats (check_name, watching_since_ms) VALUES (?, ?) ON CONFLICT (check_name) DO NOTHING")
            .bind(check)
            .bind(ms(now))
            .execute(&self.writer)
            .await?;
        let row = sqlx::query("SELECT * FROM heartbeats WHERE check_name = ?").bind(check).fetch_one(&self.writer).await?;
        heartbeat_row(&row)
    }

    async fn load_states(&self) -> Result<Vec<CheckState>, StoreError> {
        let rows = sqlx::query("SELECT * FROM check_states").fetch_all(&self.reader).await?;
        rows.iter()
            .map(|r| {
                Ok(CheckState {
                    check: col(r, "check_name")?,
                    health: enum_col(r, "health", Health::parse)?,
                    since: time(col(r, "since_ms")?),
                    consecutive_successes: col::<i64>(r, "consecutive_successes")? as u32,
                    consecutive_failures: col::<i64>(r, "consecutive_failures")? as u32,
                    last_run: col::<Option<i64>>(r, "last_run_ms")?.map(time),
                    last_latency_ms: col(r, "last_latency_ms")?,
                    last_reason: col(r, "last_reason")?,
                })
            })
            .collect()
    }

    async fn record(&self, runs: &[RecordedRun]) -> Result<(), StoreError> {
        // Multi-row statements: each statement is a round trip to sqlx's SQLite worker
        // thread, so one per row cost more CPU than the inserts themselves.
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        for chunk in runs.chunks(ROWS_PER_STATEMENT) {
            let mut q =
                QueryBuilder::<Sqlite>::new("INSERT INTO check_results (check_name, at_ms, healthy, latency_ms, reason, observed) ");
            q.push_values(chunk, |mut b, run| {
                b.push_bind(&run.check)
                    .push_bind(ms(run.outcome.at))
                    .push_bind(run.outcome.healthy)
                    .push_bind(run.outcome.latency.as_secs_f64() * 1000.0)
                    .push_bind(&run.outcome.reason)
                    .push_bind(crate::rows::observed(&run.outcome.values));
            });
            q.build().execute(&mut *tx).await?;
        }
        // Only the newest state of each check in the batch matters.
        let mut latest: HashMap<&str, &CheckState> = HashMap::with_capacity(runs.len());
        for run in runs {
            latest.insert(&run.state.check, &run.state);
        }
        let states: Vec<&CheckState> = latest.into_values().collect();
        for chunk in states.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Sqlite>::new("INSERT INTO check_states ");
            q.push_values(chunk, |mut b, s| {
                b.push_bind(&s.check)
                    .push_bind(s.health.as_str())
                    .push_bind(ms(s.since))
                    .push_bind(s.consecutive_successes as i64)
                    .push_bind(s.consecutive_failures as i64)
                    .push_bind(s.last_run.map(ms))
                    .push_bind(s.last_latency_ms)
                    .push_bind(&s.last_reason);
            });
            q.push(
                " ON CONFLICT (check_name) DO UPDATE SET
                 health = excluded.health, since_ms = excluded.since_ms, consecutive_successes = excluded.consecutive_successes,
                 consecutive_failures = excluded.consecutive_failures, last_run_ms = excluded.last_run_ms,
                 last_latency_ms = excluded.last_latency_ms, last_reason = excluded.last_reason",
            );
            q.build().execute(&mut *tx).await?;
        }
        for t in runs.iter().filter_map(|r| r.transition.as_ref()) {
            sqlx::query("INSERT INTO check_transitions (check_name, at_ms, from_health, to_health, reason) VALUES (?, ?, ?, ?, ?)")
                .bind(&t.check)
                .bind(ms(t.at))
                .bind(t.from.as_str())
                .bind(t.to.as_str())
                .bind(&t.reason)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn results_since(&self, check: &str, since: DateTime<Utc>) -> Result<Vec<ResultRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT at_ms, healthy, latency_ms, reason, observed FROM check_results WHERE check_name = ? AND at_ms >= ? ORDER BY at_ms DESC",
        )
        .bind(check)
        .bind(ms(since))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(result_row).collect()
    }

    async fn history(&self, check: &str, limit: u32, before: Option<DateTime<Utc>>) -> Result<Vec<ResultRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT at_ms, healthy, latency_ms, reason, observed FROM check_results WHERE check_name = ? AND at_ms < ? ORDER BY at_ms DESC LIMIT ?",
        )
        .bind(check)
        .bind(before.map_or(i64::MAX, ms))
        .bind(limit as i64)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(result_row).collect()
    }

    async fn transitions(&self, check: Option<&str>, limit: u32) -> Result<Vec<Transition>, StoreError> {
        let rows = sqlx::query("SELECT * FROM check_transitions WHERE (?1 IS NULL OR check_name = ?1) ORDER BY id DESC LIMIT ?2")
            .bind(check)
            .bind(limit as i64)
            .fetch_all(&self.reader)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Transition {
                    check: col(r, "check_name")?,
                    from: enum_col(r, "from_health", Health::parse)?,
                    to: enum_col(r, "to_health", Health::parse)?,
                    at: time(col(r, "at_ms")?),
                    reason: col(r, "reason")?,
                })
            })
            .collect()
    }

    async fn buckets(&self, check: &str, since: DateTime<Utc>, bucket_ms: i64) -> Result<Vec<Rollup>, StoreError> {
        // Whole days come from the daily sums, anything finer from the hourly rollups.
        macro_rules! sql {
            ($table:literal, $at:literal) => {
                concat!(
                    "SELECT b, CAST(sum(runs) AS INTEGER) AS runs, CAST(sum(failures) AS INTEGER) AS failures,
                            CAST(sum(latency_sum_ms) AS REAL) AS latency_sum_ms, CAST(max(latency_max_ms) AS REAL) AS latency_max_ms FROM (
                       SELECT (",
                    $at,
                    " / ?1) * ?1 AS b, runs, failures, latency_sum_ms, latency_max_ms
                       FROM ",
                    $table,
                    " WHERE check_name = ?2 AND ",
                    $at,
                    " >= ?3
                       UNION ALL
                       SELECT (at_ms / ?1) * ?1, count(*), sum(1 - healthy), sum(latency_ms), max(latency_ms)
                       FROM check_results WHERE check_name = ?2 AND at_ms >= ?3 GROUP BY 1
                     ) GROUP BY b ORDER BY b"
                )
            };
        }
        let sql = if crate::whole_days(bucket_ms) { sql!("check_days", "day_ms") } else { sql!("check_rollups", "hour_ms") };
        let rows = sqlx::query(sql).bind(bucket_ms.max(1)).bind(check).bind(ms(since)).fetch_all(&self.reader).await?;
        rows.iter().map(bucket_row).collect()
    }

    async fn daily_by_group(&self, groups: &HashMap<String, String>, since: DateTime<Utc>) -> Result<Vec<GroupDay>, StoreError> {
        // The map goes in as one JSON object and is joined by check name, so each check's
        // days are a seek on `check_days`' key and its raw results one on their index.
        let rows = sqlx::query(
            "WITH members (check_name, grp) AS (SELECT key, value FROM json_each(?1))
             SELECT grp, d, CAST(sum(runs) AS INTEGER) AS runs, CAST(sum(failures) AS INTEGER) AS failures FROM (
               SELECT m.grp, s.day_ms AS d, s.runs, s.failures
               FROM members m JOIN check_days s ON s.check_name = m.check_name AND s.day_ms >= ?2
               UNION ALL
               SELECT m.grp, (r.at_ms / ?3) * ?3, 1, 1 - r.healthy
               FROM members m JOIN check_results r ON r.check_name = m.check_name AND r.at_ms >= ?2
             ) GROUP BY grp, d ORDER BY grp, d",
        )
        .bind(json(groups))
        .bind(ms(since))
        .bind(crate::DAY_MS)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(group_day_row).collect()
    }

    async fn rollups(&self, check: &str, since: DateTime<Utc>) -> Result<Vec<Rollup>, StoreError> {
        let rows = sqlx::query("SELECT * FROM check_rollups WHERE check_name = ? AND hour_ms >= ? ORDER BY hour_ms")
            .bind(check)
            .bind(ms(since))
            .fetch_all(&self.reader)
            .await?;
        rows.iter()
            .map(|r| {
                let runs: i64 = col(r, "runs")?;
                Ok(Rollup {
                    hour: time(col(r, "hour_ms")?),
                    runs: runs as u64,
                    failures: col::<i64>(r, "failures")? as u64,
                    latency_avg_ms: col::<f64>(r, "latency_sum_ms")? / runs.max(1) as f64,
                    latency_max_ms: col(r, "latency_max_ms")?,
                })
            })
            .collect()
    }

    async fn compact(&self, raw_before: DateTime<Utc>, rollups_before: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "INSERT INTO check_rollups (check_name, hour_ms, runs, failures, latency_sum_ms, latency_max_ms)
             SELECT check_name, (at_ms / 3600000) * 3600000, count(*), sum(1 - healthy), sum(latency_ms), max(latency_ms)
             FROM check_results WHERE at_ms < ? GROUP BY 1, 2
             ON CONFLICT (check_name, hour_ms) DO UPDATE SET runs = runs + excluded.runs, failures = failures + excluded.failures,
               latency_sum_ms = latency_sum_ms + excluded.latency_sum_ms, latency_max_ms = max(latency_max_ms, excluded.latency_max_ms)",
        )
        .bind(ms(raw_before))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO check_days (check_name, day_ms, runs, failures, latency_sum_ms, latency_max_ms)
             SELECT check_name, (at_ms / 86400000) * 86400000, count(*), sum(1 - healthy), sum(latency_ms), max(latency_ms)
             FROM check_results WHERE at_ms < ? GROUP BY 1, 2
             ON CONFLICT (check_name, day_ms) DO UPDATE SET runs = runs + excluded.runs, failures = failures + excluded.failures,
               latency_sum_ms = latency_sum_ms + excluded.latency_sum_ms, latency_max_ms = max(latency_max_ms, excluded.latency_max_ms)",
        )
        .bind(ms(raw_before))
        .execute(&mut *tx)
        .await?;
        let folded = sqlx::query("DELETE FROM check_results WHERE at_ms < ?").bind(ms(raw_before)).execute(&mut *tx).await?.rows_affected();
        sqlx::query("DELETE FROM check_rollups WHERE hour_ms < ?").bind(ms(rollups_before)).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM check_days WHERE day_ms < ?").bind(ms(rollups_before)).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(folded)
    }

    async fn retain_states(&self, checks: &[String]) -> Result<(), StoreError> {
        let list = serde_json::to_string(checks).expect("strings serialize");
        sqlx::query("DELETE FROM check_states WHERE check_name NOT IN (SELECT value FROM json_each(?))")
            .bind(list)
            .execute(&self.writer)
            .await?;
        Ok(())
    }
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn server_key(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        let fresh: [u8; 32] = rand::random();
        sqlx::query("INSERT INTO server_keys (name, key, created_ms) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(&fresh[..])
            .bind(ms(steward_model::clock::now()))
            .execute(&self.writer)
            .await?;
        Ok(sqlx::query_scalar("SELECT key FROM server_keys WHERE name = ?").bind(name).fetch_one(&self.writer).await?)
    }

    async fn rotate_server_key(&self, name: &str) -> Result<(), StoreError> {
        let fresh: [u8; 32] = rand::random();
        sqlx::query(
            "INSERT INTO server_keys (name, key, created_ms) VALUES (?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET key = excluded.key, created_ms = excluded.created_ms",
        )
        .bind(name)
        .bind(&fresh[..])
        .bind(ms(steward_model::clock::now()))
        .execute(&self.writer)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Payloads are stored compressed; rows an older steward wrote hold the JSON text
    /// itself and still read back as they were.
    #[tokio::test]
    async fn payloads_are_stored_compressed_and_older_text_rows_still_read() {
        use crate::{AlertStore, NewNotification};
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let t0 = steward_model::clock::now();
        let alerts: Vec<serde_json::Value> = (0..200)
            .map(|i| serde_json::json!({"labels": {"alertname": "Disk", "instance": format!("host-{i}")}, "status": "firing"}))
            .collect();
        let payload = serde_json::json!({"version": "4", "alerts": alerts}).to_string();
        let log = steward_model::alerting::NotifyLogEntry { receiver: "ops".into(), group_key: "g".into(), firing: vec![], sent_at: t0 };
        let new = NewNotification {
            dedup_key: "new".into(),
            receiver: "ops".into(),
            group_key: "g".into(),
            status: "firing".into(),
            payload: payload.clone(),
            alerts: vec![],
            log,
        };
        store.enqueue(&new).await.unwrap().unwrap();
        let stored: Vec<u8> =
            sqlx::query_scalar("SELECT payload FROM outbox WHERE dedup_key = 'new'").fetch_one(&store.reader).await.unwrap();
        assert!(stored.len() * 5 < payload.len(), "{} bytes stored for a {}-byte payload", stored.len(), payload.len());
        sqlx::query(
            "INSERT INTO outbox (dedup_key, receiver, group_key, status, payload, created_ms, state, next_attempt_ms)
             VALUES ('old', 'ops', 'g', 'firing', '{\"version\":\"4\"}', 0, 'pending', 0)",
        )
        .execute(&store.writer)
        .await
        .unwrap();
        let due = store.claim_due("ops", "test", t0, t0 + chrono::Duration::seconds(60), 10).await.unwrap();
        let payloads: Vec<(&str, &str)> = due.iter().map(|n| (n.dedup_key.as_str(), n.payload.as_str())).collect();
        assert_eq!(payloads, vec![("new", payload.as_str()), ("old", r#"{"version":"4"}"#)]);
    }

    /// What the store cannot read back as steward wrote it is reported as damaged,
    /// naming the column — never read as an empty value or a default state.
    #[tokio::test]
    async fn damaged_rows_are_reported_not_defaulted() {
        use crate::{AlertStore, RunStore};
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let new = steward_model::runbooks::NewRun {
            runbook: "r".into(),
            params: Default::default(),
            trigger: "manual".into(),
            started_by: "alice".into(),
            parent_run: None,
            alert_fingerprint: None,
            incident_id: None,
            lock: None,
            trigger_key: None,
            owner: "test".into(),
        };
        let run = store.create_run(&new, steward_model::runbooks::NewEvent::new(0, "run_started", "started")).await.unwrap();
        let damage = |sql: &'static str| {
            let writer = store.writer.clone();
            async move { sqlx::query(sql).execute(&writer).await.unwrap() }
        };
        damage("UPDATE runs SET params = '{\"half'").await;
        let err = store.run(run.id).await.unwrap_err();
        assert!(matches!(&err, StoreError::Corrupt(m) if m.contains("`params`")), "{err}");
        damage("UPDATE runs SET params = '{}', status = 'sleeping'").await;
        let err = store.runs(&Default::default()).await.unwrap_err();
        assert!(matches!(&err, StoreError::Corrupt(m) if m.contains("`status`") && m.contains("sleeping")), "{err}");
        damage("UPDATE runs SET status = 'running', heartbeat_ms = 'soon'").await;
        assert!(matches!(store.run(run.id).await, Err(StoreError::Corrupt(m)) if m.contains("`heartbeat_ms`")));
        // A silence whose matcher no longer parses would silence more than it said.
        damage(
            "INSERT INTO silences (id, matchers, starts_ms, ends_ms, created_by, comment, created_ms) \
             VALUES ('s', '[\"service=~\\\"(\"]', 0, 1, 'a', 'c', 0)",
        )
        .await;
        assert!(matches!(store.silences().await, Err(StoreError::Corrupt(m)) if m.contains("silence matcher")));
    }

    /// A new database in `dir` with the first `version` migrations applied, as an older
    /// steward left it.
    async fn at_schema(dir: &Path, version: usize) -> SqlitePool {
        let path = dir.join("steward.db");
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display())).unwrap().create_if_missing(true);
        let pool = SqlitePool::connect_with(options).await.unwrap();
        for (i, sql) in MIGRATIONS.iter().enumerate().take(version) {
            sqlx::raw_sql(sqlx::AssertSqlSafe(*sql)).execute(&pool).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("PRAGMA user_version = {}", i + 1))).execute(&pool).await.unwrap();
        }
        pool
    }

    /// An installation from before the one-open-incident-per-group index may hold two
    /// open incidents for one group (two writers raced). The upgrade keeps both open,
    /// moves the older out of the group with a note, and the index then holds.
    #[tokio::test]
    async fn upgrading_past_the_group_index_keeps_duplicate_incidents_open_and_says_why() {
        use crate::IncidentStore;
        let dir = tempfile::tempdir().unwrap();
        {
            let pool = at_schema(dir.path(), 9).await;
            for opened in [1_000, 2_000] {
                sqlx::query(
                    "INSERT INTO incidents (title, priority, status, policy, group_key, services, opened_by, opened_ms, roles, auto_resolve, version) \
                     VALUES ('db down', 'P1', 'triggered', 'p', 'p/db', '[]', 'steward', ?, '{}', 1, 1)",
                )
                .bind(opened)
                .execute(&pool)
                .await
                .unwrap();
            }
            pool.close().await;
        }
        let store = SqliteStore::open(dir.path()).await.expect("the upgrade succeeds despite the duplicates");
        let open = store.incidents(&crate::IncidentQuery { open: true, ..Default::default() }).await.unwrap();
        let mut groups: Vec<(i64, String)> = open.iter().map(|i| (i.id, i.group_key.clone())).collect();
        groups.sort();
        assert_eq!(groups, [(1, String::new()), (2, "p/db".to_string())], "both stay open; the newer holds the group");
        let note = store.timeline(1).await.unwrap();
        assert!(note.iter().any(|e| e.text.contains("Left group p/db")), "{note:?}");
        assert!(store.timeline(2).await.unwrap().is_empty(), "the holder is unchanged");
    }

    /// An installation from before the daily sums has its hourly rollups summed into
    /// days by the upgrade, so its 90-day history reads the same afterwards.
    #[tokio::test]
    async fn upgrading_to_the_daily_sums_fills_them_from_the_rollups() {
        use crate::CheckStore;
        let dir = tempfile::tempdir().unwrap();
        {
            let before_days = MIGRATIONS.iter().position(|m| m.contains("CREATE TABLE check_days")).unwrap();
            let pool = at_schema(dir.path(), before_days).await;
            // Two hours of day 0, one of day 1; another check's hour beside them.
            for (check, hour, runs, failures) in [("c", 10, 60, 15), ("c", 23, 60, 0), ("c", 24, 60, 60), ("d", 10, 5, 5)] {
                sqlx::query("INSERT INTO check_rollups VALUES (?, ?, ?, ?, ?, ?)")
                    .bind(check)
                    .bind(hour * 3_600_000_i64)
                    .bind(runs)
                    .bind(failures)
                    .bind(600.0)
                    .bind(30.0)
                    .execute(&pool)
                    .await
                    .unwrap();
            }
            pool.close().await;
        }
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let since = DateTime::<Utc>::UNIX_EPOCH;
        let days: Vec<_> = store.buckets("c", since, crate::DAY_MS).await.unwrap().iter().map(|b| (b.runs, b.failures)).collect();
        assert_eq!(days, [(120, 15), (60, 60)]);
        assert_eq!(store.buckets("d", since, crate::DAY_MS).await.unwrap()[0].failures, 5);
    }

    /// A notification whose stored payload no longer decodes is set aside (expired,
    /// with why) when a worker claims it; the rows beside it are still delivered.
    #[tokio::test]
    async fn a_damaged_notification_does_not_block_its_receivers_queue() {
        use crate::{AlertStore, NewNotification};
        use steward_model::alerting::{DeliveryState, NotifyLogEntry};
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let t0 = steward_model::clock::now();
        let n = |key: &str| NewNotification {
            dedup_key: key.into(),
            receiver: "ops".into(),
            group_key: key.into(),
            status: "firing".into(),
            payload: "{}".into(),
            alerts: vec![],
            log: NotifyLogEntry { receiver: "ops".into(), group_key: key.into(), firing: vec![], sent_at: t0 },
        };
        let damaged = store.enqueue(&n("a")).await.unwrap().unwrap();
        let sound = store.enqueue(&n("b")).await.unwrap().unwrap();
        sqlx::query("UPDATE outbox SET payload = x'00ff00' WHERE id = ?").bind(damaged).execute(&store.writer).await.unwrap();
        let claimed = store.claim_due("ops", "w", t0, t0 + chrono::Duration::seconds(60), 10).await.unwrap();
        assert_eq!(claimed.iter().map(|n| n.id).collect::<Vec<_>>(), [sound], "the sound row is delivered");
        let all = store.notifications(None, 10).await.unwrap();
        let set_aside = all.iter().find(|x| x.id == damaged).expect("the damaged row is kept, not deleted");
        assert_eq!(set_aside.state, DeliveryState::Expired);
        assert!(set_aside.last_error.as_deref().is_some_and(|e| e.contains("damaged")), "{:?}", set_aside.last_error);
        assert!(set_aside.payload.contains("damaged"), "the listing reads it: {}", set_aside.payload);
        assert!(store.claim_due("ops", "w2", t0, t0 + chrono::Duration::seconds(60), 10).await.unwrap().is_empty());
    }

    /// The notification history only grows (and is kept for postmortems): a query that
    /// lists or delivers notifications must reach its rows through an index, or every
    /// delivery costs the size of the history. Asks SQLite for each query's plan.
    #[tokio::test]
    async fn notification_queries_never_scan_the_history() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let queries =
            super::super::sqlite_alerts::NOTIFICATION_QUERIES.into_iter().chain(super::super::sqlite_incidents::NOTIFICATION_QUERIES);
        for sql in queries {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                .fetch_all(&store.reader)
                .await
                .unwrap_or_else(|e| panic!("{e}: {sql}"));
            let plan: Vec<String> = rows.iter().map(|r| sqlx::Row::get(r, "detail")).collect();
            // A scan of a constant row or of a bound JSON list (the ids a claim just took)
            // walks the query's own input, not the history.
            let scans: Vec<&String> = plan
                .iter()
                .filter(|step| step.starts_with("SCAN") && !step.starts_with("SCAN CONSTANT") && !step.starts_with("SCAN json_each"))
                .collect();
            assert!(scans.is_empty(), "{sql}\nscans {scans:?}; whole plan {plan:#?}");
        }
    }
}
