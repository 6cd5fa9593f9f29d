//! [`RunStore`] on SQLite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};

use super::rows::{OutboxRow, approval_row, json, ms, run_event_row, run_row, step_row};
use super::sqlite::SqliteStore;
use super::sqlite_alerts::insert_outbox;
use super::sqlite_locks::{self as locks, Holder};
use super::{OutboxMessage, RunStore, StoreError};
use steward_model::runbooks::{
    AUDIT_KINDS, ApprovalRequest, AuditQuery, Decision, NewEvent, NewRun, Run, RunEvent, RunQuery, RunStatus, StepRecord, StepStatus,
};

const RUN_COLUMNS: &str = "id, runbook, params, status, trigger, started_by, parent_run, alert_fingerprint, incident_id, lock_name, \
     created_ms, finished_ms, heartbeat_ms, error, outputs, owner, cancel_requested_by";

async fn insert_events(conn: &mut SqliteConnection, events: &[NewEvent]) -> Result<(), sqlx::Error> {
    // 9 columns × 500 rows stays far below SQLite's bound-parameter limit.
    for chunk in events.chunks(500) {
        let mut q: QueryBuilder<Sqlite> =
            QueryBuilder::new("INSERT INTO run_events (run_id, at_ms, kind, step, actor, message, data, audit) ");
        q.push_values(chunk, |mut b, e| {
            b.push_bind(e.run_id)
                .push_bind(ms(e.at))
                .push_bind(e.kind)
                .push_bind(e.step.as_deref())
                .push_bind(e.actor.as_deref())
                .push_bind(e.message.as_str())
                .push_bind(json(&e.data))
                .push_bind(AUDIT_KINDS.contains(&e.kind));
        });
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

#[async_trait]
impl RunStore for SqliteStore {
    async fn create_run(&self, run: &NewRun, mut started: NewEvent) -> Result<Run, StoreError> {
        let now = ms(steward_model::clock::now());
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        if let Some(key) = &run.trigger_key {
            let used: Option<i64> =
                sqlx::query_scalar("SELECT id FROM runs WHERE trigger_key = ?").bind(key).fetch_optional(&mut *tx).await?;
            if let Some(id) = used {
                return Err(StoreError::TriggerUsed { key: key.clone(), started: format!("run {id}") });
            }
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO runs (runbook, params, status, trigger, started_by, parent_run, alert_fingerprint, incident_id, lock_name, \
             trigger_key, owner, created_ms, heartbeat_ms) VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(&run.runbook)
        .bind(json(&run.params))
        .bind(&run.trigger)
        .bind(&run.started_by)
        .bind(run.parent_run)
        .bind(run.alert_fingerprint.as_deref())
        .bind(run.incident_id)
        .bind(run.lock.as_deref())
        .bind(run.trigger_key.as_deref())
        .bind(&run.owner)
        .bind(now)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        if let Some(lock) = &run.lock {
            locks::acquire(&mut tx, lock, Holder::Run(id), &run.owner, now, None).await?;
        }
        started.run_id = id;
        insert_events(&mut tx, &[started]).await?;
        let row =
            sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?"))).bind(id).fetch_one(&mut *tx).await?;
        tx.commit().await?;
        run_row(&row)
    }

    async fn save_step(&self, s: &StepRecord, events: &[NewEvent]) -> Result<(), StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "INSERT INTO run_steps (run_id, path, attempt, name, kind, status, started_ms, finished_ms, detail, result, output, error, seq) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM run_steps WHERE run_id = ?)) \
             ON CONFLICT (run_id, path, attempt) DO UPDATE SET status = excluded.status, finished_ms = excluded.finished_ms, \
             detail = excluded.detail, result = excluded.result, output = excluded.output, error = excluded.error",
        )
        .bind(s.run_id)
        .bind(&s.path)
        .bind(i64::from(s.attempt))
        .bind(&s.name)
        .bind(&s.kind)
        .bind(s.status.as_str())
        .bind(ms(s.started_at))
        .bind(s.finished_at.map(ms))
        .bind(json(&s.detail))
        .bind(json(&s.result))
        .bind(&s.output)
        .bind(s.error.as_deref())
        .bind(s.run_id)
        .execute(&mut *tx)
        .await?;
        insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_run_status(
        &self,
        run: i64,
        status: RunStatus,
        error: Option<&str>,
        outputs: Option<&serde_json::Value>,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let now = ms(steward_model::clock::now());
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        if status.is_final() {
            sqlx::query("UPDATE runs SET status = ?, finished_ms = ?, error = ?, outputs = COALESCE(?, outputs) WHERE id = ?")
                .bind(status.as_str())
                .bind(now)
                .bind(error)
                .bind(outputs.map(json))
                .bind(run)
                .execute(&mut *tx)
                .await?;
            locks::release(&mut tx, Holder::Run(run)).await?;
        } else {
            if status == RunStatus::Running {
                // The run goes on (after an approval, or resumed): a cancel asked of
                // the earlier attempt does not carry over.
                sqlx::query(
                    "UPDATE runs SET cancel_requested_by = NULL, cancel_requested_ms = NULL WHERE id = ? AND status = 'interrupted'",
                )
                .bind(run)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query("UPDATE runs SET status = ?, error = ?, finished_ms = NULL WHERE id = ?")
                .bind(status.as_str())
                .bind(error)
                .bind(run)
                .execute(&mut *tx)
                .await?;
        }
        if status.is_final() || status == RunStatus::Interrupted {
            sqlx::query("UPDATE run_approvals SET state = 'withdrawn', decided_ms = ? WHERE run_id = ? AND state = 'pending'")
                .bind(now)
                .bind(run)
                .execute(&mut *tx)
                .await?;
        }
        insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn append_events(&self, events: &[NewEvent]) -> Result<(), StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn close_open_steps(&self, run: i64, status: StepStatus, error: &str) -> Result<Vec<String>, StoreError> {
        let paths: Vec<String> = sqlx::query_scalar(
            "UPDATE run_steps SET status = ?, error = COALESCE(error, ?), finished_ms = COALESCE(finished_ms, ?) \
             WHERE run_id = ? AND status IN ('running', 'waiting') RETURNING path",
        )
        .bind(status.as_str())
        .bind(error)
        .bind(ms(steward_model::clock::now()))
        .bind(run)
        .fetch_all(&self.writer)
        .await?;
        Ok(paths)
    }

    async fn heartbeat(&self, runs: &[i64], at: DateTime<Utc>) -> Result<(), StoreError> {
        if runs.is_empty() {
            return Ok(());
        }
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("UPDATE runs SET heartbeat_ms = ");
        q.push_bind(ms(at)).push(" WHERE id IN (");
        let mut sep = q.separated(", ");
        for id in runs {
            sep.push_bind(*id);
        }
        q.push(")");
        q.build().execute(&self.writer).await?;
        Ok(())
    }

    async fn unfinished_runs(&self) -> Result<Vec<Run>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {RUN_COLUMNS} FROM runs WHERE finished_ms IS NULL ORDER BY id")))
            .fetch_all(&self.writer)
            .await?;
        rows.iter().map(run_row).collect()
    }

    async fn run(&self, id: i64) -> Result<Option<Run>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?")))
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(run_row).transpose()
    }

    async fn runs(&self, q: &RunQuery) -> Result<Vec<Run>, StoreError> {
        let mut b: QueryBuilder<Sqlite> = QueryBuilder::new(format!("SELECT {RUN_COLUMNS} FROM runs WHERE 1 = 1"));
        if let Some(r) = &q.runbook {
            b.push(" AND runbook = ").push_bind(r.clone());
        }
        if let Some(s) = q.status {
            b.push(" AND status = ").push_bind(s.as_str());
        }
        if let Some(id) = q.before_id {
            b.push(" AND id < ").push_bind(id);
        }
        // Keyset pagination on the primary key: as fast with millions of runs as with ten.
        b.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(q.limit.clamp(1, 1000)));
        let rows = b.build().fetch_all(&self.reader).await?;
        rows.iter().map(run_row).collect()
    }

    async fn run_steps(&self, run: i64) -> Result<Vec<StepRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM run_steps WHERE run_id = ? ORDER BY seq").bind(run).fetch_all(&self.reader).await?;
        rows.iter().map(step_row).collect()
    }

    async fn run_events(&self, run: i64, after: i64, limit: u32) -> Result<Vec<RunEvent>, StoreError> {
        let rows = sqlx::query("SELECT * FROM run_events WHERE run_id = ? AND id > ? ORDER BY id LIMIT ?")
            .bind(run)
            .bind(after)
            .bind(i64::from(limit.clamp(1, 10_000)))
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(run_event_row).collect()
    }

    async fn audit(&self, q: &AuditQuery) -> Result<Vec<RunEvent>, StoreError> {
        let mut b: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT e.id, e.run_id, e.at_ms, e.kind, e.step, e.actor, e.message, e.data FROM run_events e \
             JOIN runs r ON r.id = e.run_id WHERE e.audit = 1",
        );
        if let Some(r) = &q.runbook {
            b.push(" AND r.runbook = ").push_bind(r.clone());
        }
        if let Some(a) = &q.actor {
            b.push(" AND e.actor = ").push_bind(a.clone());
        }
        if let Some(id) = q.before_id {
            b.push(" AND e.id < ").push_bind(id);
        }
        b.push(" ORDER BY e.id DESC LIMIT ").push_bind(i64::from(q.limit.clamp(1, 1000)));
        let rows = b.build().fetch_all(&self.reader).await?;
        rows.iter().map(run_event_row).collect()
    }

    async fn request_approval(&self, a: &ApprovalRequest, events: &[NewEvent]) -> Result<(), StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "INSERT INTO run_approvals (run_id, path, attempt, role, distinct_approver, started_by, requested_ms, expires_ms, state, \
             decided_by, decided_ms, comment) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(a.run_id)
        .bind(&a.path)
        .bind(i64::from(a.attempt))
        .bind(a.role.as_str())
        .bind(a.distinct_approver)
        .bind(&a.started_by)
        .bind(ms(a.requested_at))
        .bind(ms(a.expires_at))
        .bind(a.state.as_str())
        .bind(a.decided_by.as_deref())
        .bind(a.decided_at.map(ms))
        .bind(&a.comment)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE runs SET status = 'waiting' WHERE id = ? AND status = 'running'").bind(a.run_id).execute(&mut *tx).await?;
        insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn approvals(&self, run: i64) -> Result<Vec<ApprovalRequest>, StoreError> {
        let rows = sqlx::query("SELECT * FROM run_approvals WHERE run_id = ? ORDER BY rowid").bind(run).fetch_all(&self.reader).await?;
        rows.iter().map(approval_row).collect()
    }

    async fn decide_approval(
        &self,
        run: i64,
        path: &str,
        attempt: u32,
        decision: &Decision,
        events: &[NewEvent],
    ) -> Result<bool, StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let decided = sqlx::query(
            "UPDATE run_approvals SET state = ?, decided_by = ?, decided_ms = ?, comment = ? \
             WHERE run_id = ? AND path = ? AND attempt = ? AND state = 'pending'",
        )
        .bind(decision.state.as_str())
        .bind(&decision.by)
        .bind(ms(steward_model::clock::now()))
        .bind(&decision.comment)
        .bind(run)
        .bind(path)
        .bind(i64::from(attempt))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if decided {
            insert_events(&mut tx, events).await?;
            tx.commit().await?;
        }
        Ok(decided)
    }

    async fn request_cancel(&self, run: i64, by: &str, events: &[NewEvent]) -> Result<bool, StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let asked = sqlx::query(
            "UPDATE runs SET cancel_requested_by = ?, cancel_requested_ms = ? \
             WHERE id = ? AND status IN ('running', 'waiting') AND cancel_requested_ms IS NULL",
        )
        .bind(by)
        .bind(ms(steward_model::clock::now()))
        .bind(run)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if asked {
            insert_events(&mut tx, events).await?;
            tx.commit().await?;
        }
        Ok(asked)
    }

    async fn cancels_requested(&self, runs: &[i64]) -> Result<Vec<i64>, StoreError> {
        if runs.is_empty() {
            return Ok(vec![]);
        }
        Ok(sqlx::query_scalar(
            "SELECT id FROM runs WHERE id IN (SELECT value FROM json_each(?)) AND cancel_requested_ms IS NOT NULL AND finished_ms IS NULL",
        )
        .bind(json(&runs))
        .fetch_all(&self.reader)
        .await?)
    }

    async fn resume_run(
        &self,
        run: i64,
        from: &[RunStatus],
        owner: &str,
        lock: Option<&str>,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        let resumed = sqlx::query(
            "UPDATE runs SET status = 'running', owner = ?, error = NULL, finished_ms = NULL, heartbeat_ms = ?, \
             cancel_requested_by = NULL, cancel_requested_ms = NULL WHERE id = ? AND status IN (SELECT value FROM json_each(?))",
        )
        .bind(owner)
        .bind(ms(steward_model::clock::now()))
        .bind(run)
        .bind(json(&from))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if resumed != 1 {
            return Err(StoreError::StaleVersion { what: format!("run {run}") });
        }
        if let Some(lock) = lock {
            locks::acquire(&mut tx, lock, Holder::Run(run), owner, ms(steward_model::clock::now()), None).await?;
        }
        insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn enqueue_messages(&self, messages: &[OutboxMessage], events: &[NewEvent]) -> Result<(), StoreError> {
        let now = ms(steward_model::clock::now());
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        for n in messages {
            insert_outbox(&mut tx, &OutboxRow::of(n, &json(&n.payload)), now, None).await?;
        }
        insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn prune_runs(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut removed = 0;
        // In batches, so the writer is never held long.
        loop {
            let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
            let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM runs WHERE finished_ms IS NOT NULL AND finished_ms < ? LIMIT 500")
                .bind(ms(before))
                .fetch_all(&mut *tx)
                .await?;
            if ids.is_empty() {
                break;
            }
            for table in ["run_events", "run_steps", "run_approvals"] {
                let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(format!("DELETE FROM {table} WHERE run_id IN ("));
                let mut sep = q.separated(", ");
                for id in &ids {
                    sep.push_bind(*id);
                }
                q.push(")");
                q.build().execute(&mut *tx).await?;
            }
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("DELETE FROM runs WHERE id IN (");
            let mut sep = q.separated(", ");
            for id in &ids {
                sep.push_bind(*id);
            }
            q.push(")");
            q.build().execute(&mut *tx).await?;
            tx.commit().await?;
            removed += ids.len() as u64;
        }
        Ok(removed)
    }
}
