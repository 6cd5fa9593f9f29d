//! [`RunStore`] on PostgreSQL.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Postgres, QueryBuilder};

use super::PostgresStore;
use super::alerts::insert_outbox;
use super::locks::{self, Holder};
use crate::rows::{OutboxRow, approval_row, json, ms, run_event_row, run_row, step_row};
use crate::{OutboxMessage, RunChange, RunStore, StoreError};
use steward_model::runbooks::{
    AUDIT_KINDS, ApprovalRequest, AuditQuery, Decision, NewEvent, NewRun, Run, RunEvent, RunQuery, RunStatus, StepRecord, StepStatus,
};

const RUN_COLUMNS: &str = "id, runbook, params, status, trigger, started_by, parent_run, alert_fingerprint, incident_id, lock_name, \
     created_ms, finished_ms, heartbeat_ms, error, outputs, owner, cancel_requested_by";

async fn insert_events(conn: &mut PgConnection, events: &[NewEvent]) -> Result<(), sqlx::Error> {
    // 8 columns × 500 rows stays far below the bound-parameter limit.
    for chunk in events.chunks(500) {
        let mut q: QueryBuilder<Postgres> =
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
impl RunStore for PostgresStore {
    async fn create_run(&self, run: &NewRun, mut started: NewEvent) -> Result<Run, StoreError> {
        let now = ms(steward_model::clock::now());
        let mut tx = self.pool.begin().await?;
        let inserted: Result<i64, sqlx::Error> = sqlx::query_scalar(
            "INSERT INTO runs (runbook, params, status, trigger, started_by, parent_run, alert_fingerprint, incident_id, lock_name, \
             trigger_key, owner, created_ms, heartbeat_ms) VALUES ($1, $2, 'running', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
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
        .await;
        let id = match inserted {
            Ok(id) => id,
            // Two replicas may start the same trigger at once: the unique key lets one
            // insert, and the other learns which run it started.
            Err(e) if super::unique_violation(&e) && run.trigger_key.is_some() => {
                drop(tx);
                let key = run.trigger_key.clone().unwrap_or_default();
                let id: i64 = sqlx::query_scalar("SELECT id FROM runs WHERE trigger_key = $1").bind(&key).fetch_one(&self.pool).await?;
                return Err(StoreError::TriggerUsed { key, started: format!("run {id}") });
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(lock) = &run.lock {
            locks::acquire(&mut tx, lock, Holder::Run(id), &run.owner, now, None).await?;
        }
        started.run_id = id;
        insert_events(&mut tx, &[started]).await?;
        let row =
            sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"))).bind(id).fetch_one(&mut *tx).await?;
        tx.commit().await?;
        run_row(&row)
    }

    async fn save_step(&self, s: &StepRecord, events: &[NewEvent]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO run_steps (run_id, path, attempt, name, kind, status, started_ms, finished_ms, detail, result, output, error, seq) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, DEFAULT) \
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
        let mut tx = self.pool.begin().await?;
        if status.is_final() {
            sqlx::query("UPDATE runs SET status = $1, finished_ms = $2, error = $3, outputs = COALESCE($4, outputs) WHERE id = $5")
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
                    "UPDATE runs SET cancel_requested_by = NULL, cancel_requested_ms = NULL WHERE id = $1 AND status = 'interrupted'",
                )
                .bind(run)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query("UPDATE runs SET status = $1, error = $2, finished_ms = NULL WHERE id = $3")
                .bind(status.as_str())
                .bind(error)
                .bind(run)
                .execute(&mut *tx)
                .await?;
        }
        if status.is_final() || status == RunStatus::Interrupted {
            sqlx::query("UPDATE run_approvals SET state = 'withdrawn', decided_ms = $1 WHERE run_id = $2 AND state = 'pending'")
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
        let mut tx = self.pool.begin().await?;
        insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn close_open_steps(&self, run: i64, status: StepStatus, error: &str) -> Result<Vec<String>, StoreError> {
        let paths: Vec<String> = sqlx::query_scalar(
            "UPDATE run_steps SET status = $1, error = COALESCE(error, $2), finished_ms = COALESCE(finished_ms, $3) \
             WHERE run_id = $4 AND status IN ('running', 'waiting') RETURNING path",
        )
        .bind(status.as_str())
        .bind(error)
        .bind(ms(steward_model::clock::now()))
        .bind(run)
        .fetch_all(&self.pool)
        .await?;
        Ok(paths)
    }

    async fn heartbeat(&self, runs: &[i64], at: DateTime<Utc>) -> Result<(), StoreError> {
        if runs.is_empty() {
            return Ok(());
        }
        sqlx::query("UPDATE runs SET heartbeat_ms = $1 WHERE id = ANY($2)").bind(ms(at)).bind(runs).execute(&self.pool).await?;
        Ok(())
    }

    async fn unfinished_runs(&self) -> Result<Vec<Run>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {RUN_COLUMNS} FROM runs WHERE finished_ms IS NULL ORDER BY id")))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(run_row).collect()
    }

    async fn run(&self, id: i64) -> Result<Option<Run>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(run_row).transpose()
    }

    async fn runs(&self, q: &RunQuery) -> Result<Vec<Run>, StoreError> {
        let mut b: QueryBuilder<Postgres> = QueryBuilder::new(format!("SELECT {RUN_COLUMNS} FROM runs WHERE 1 = 1"));
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
        let rows = b.build().fetch_all(&self.pool).await?;
        rows.iter().map(run_row).collect()
    }

    async fn run_steps(&self, run: i64) -> Result<Vec<StepRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM run_steps WHERE run_id = $1 ORDER BY seq").bind(run).fetch_all(&self.pool).await?;
        rows.iter().map(step_row).collect()
    }

    async fn run_events(&self, run: i64, after: i64, limit: u32) -> Result<Vec<RunEvent>, StoreError> {
        let rows = sqlx::query("SELECT * FROM run_events WHERE run_id = $1 AND id > $2 ORDER BY id LIMIT $3")
            .bind(run)
            .bind(after)
            .bind(i64::from(limit.clamp(1, 10_000)))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(run_event_row).collect()
    }

    async fn audit(&self, q: &AuditQuery) -> Result<Vec<RunEvent>, StoreError> {
        let mut b: QueryBuilder<Postgres> = QueryBuilder::new(
            "SELECT e.id, e.run_id, e.at_ms, e.kind, e.step, e.actor, e.message, e.data FROM run_events e \
             JOIN runs r ON r.id = e.run_id WHERE e.audit",
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
        let rows = b.build().fetch_all(&self.pool).await?;
        rows.iter().map(run_event_row).collect()
    }

    async fn request_approval(&self, a: &ApprovalRequest, events: &[NewEvent]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO run_approvals (run_id, path, attempt, role, distinct_approver, started_by, requested_ms, expires_ms, state, \
             decided_by, decided_ms, comment) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
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
        sqlx::query("UPDATE runs SET status = 'waiting' WHERE id = $1 AND status = 'running'").bind(a.run_id).execute(&mut *tx).await?;
        insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn approvals(&self, run: i64) -> Result<Vec<ApprovalRequest>, StoreError> {
        let rows = sqlx::query("SELECT * FROM run_approvals WHERE run_id = $1 ORDER BY seq").bind(run).fetch_all(&self.pool).await?;
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
        let mut tx = self.pool.begin().await?;
        let decided = sqlx::query(
            "UPDATE run_approvals SET state = $1, decided_by = $2, decided_ms = $3, comment = $4 \
             WHERE run_id = $5 AND path = $6 AND attempt = $7 AND state = 'pending'",
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
        let mut tx = self.pool.begin().await?;
        let asked = sqlx::query(
            "UPDATE runs SET cancel_requested_by = $1, cancel_requested_ms = $2 \
             WHERE id = $3 AND status IN ('running', 'waiting') AND cancel_requested_ms IS NULL",
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
        Ok(sqlx::query_scalar("SELECT id FROM runs WHERE id = ANY($1) AND cancel_requested_ms IS NOT NULL AND finished_ms IS NULL")
            .bind(runs)
            .fetch_all(&self.pool)
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
        let mut tx = self.pool.begin().await?;
        let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        let resumed = sqlx::query(
            "UPDATE runs SET status = 'running', owner = $1, error = NULL, finished_ms = NULL, heartbeat_ms = $2, \
             cancel_requested_by = NULL, cancel_requested_ms = NULL WHERE id = $3 AND status = ANY($4)",
        )
        .bind(owner)
        .bind(ms(steward_model::clock::now()))
        .bind(run)
        .bind(&from)
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
        let mut tx = self.pool.begin().await?;
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
            let mut tx = self.pool.begin().await?;
            let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM runs WHERE finished_ms IS NOT NULL AND finished_ms < $1 LIMIT 500")
                .bind(ms(before))
                .fetch_all(&mut *tx)
                .await?;
            if ids.is_empty() {
                break;
            }
            for sql in [
                "DELETE FROM run_events WHERE run_id = ANY($1)",
                "DELETE FROM run_steps WHERE run_id = ANY($1)",
                "DELETE FROM run_approvals WHERE run_id = ANY($1)",
                "DELETE FROM runs WHERE id = ANY($1)",
            ] {
                sqlx::query(sql).bind(&ids).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            removed += ids.len() as u64;
        }
        Ok(removed)
    }

    /// LISTEN on `steward_runs` (the triggers of `notify.sql` send a run's id there on
    /// every change that matters to its watchers) on a connection of its own, kept
    /// until the receiver is dropped. A lost connection is passed on as
    /// [`RunChange::Resync`] once the listener is connected and listening again, so
    /// whatever was missed meanwhile is found by the look it prompts.
    async fn run_changes(&self) -> Result<Option<tokio::sync::mpsc::Receiver<RunChange>>, StoreError> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
        listener.listen(RUN_CHANNEL).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    n = listener.try_recv() => n,
                    _ = tx.closed() => return,
                };
                let change = match next {
                    Ok(Some(n)) => match n.payload().parse() {
                        Ok(id) => RunChange::Run(id),
                        Err(_) => continue,
                    },
                    // Lost, and already connected and listening again (sqlx reconnects
                    // eagerly before it says so).
                    Ok(None) => RunChange::Resync,
                    // Lost, and not connected again: retry until it is, then resync.
                    Err(e) => {
                        tracing::warn!(error = %e, "the run change feed cannot reach PostgreSQL; retrying");
                        loop {
                            tokio::select! {
                                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                                _ = tx.closed() => return,
                            }
                            // Any statement on the listener connects it and LISTENs again.
                            if sqlx::query("SELECT 1").execute(&mut listener).await.is_ok() {
                                break;
                            }
                        }
                        RunChange::Resync
                    }
                };
                if tx.send(change).await.is_err() {
                    return;
                }
            }
        });
        Ok(Some(rx))
    }
}

/// The channel of the run change feed (see `notify.sql`).
const RUN_CHANNEL: &str = "steward_runs";
