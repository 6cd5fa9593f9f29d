//! [`BackupStore`] on PostgreSQL.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::locks::{self, Holder};
use super::{PostgresStore, unique_violation};
use crate::rows::{backup_row, ms, restore_row, verification_row};
use crate::{BackupStore, StoreError};
use steward_model::backups::{BackupQuery, BackupRecord, BackupStatus, NewBackup, NewRestore, RestoreRecord, Verification};

const BACKUP_COLUMNS: &str = "id, policy, repository, source, status, trigger, started_by, owner, started_ms, finished_ms, heartbeat_ms, \
     plain_bytes, stored_bytes, error, facts, verified_ms, verify_result, verify_level, restore_ms, restoring_until_ms";

/// Backups held for a restore that no longer runs are released.
async fn release_restore_holds(tx: &mut sqlx::PgConnection) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE backups SET restoring_until_ms = NULL WHERE restoring_until_ms IS NOT NULL \
         AND id NOT IN (SELECT backup_id FROM backup_restores WHERE result = 'running')",
    )
    .execute(tx)
    .await?;
    Ok(())
}

#[async_trait]
impl BackupStore for PostgresStore {
    async fn create_backup(&self, b: &NewBackup, lock: &str) -> Result<BackupRecord, StoreError> {
        let mut tx = self.pool.begin().await?;
        let now = ms(b.started_at);
        let expires = now.saturating_add(i64::try_from(b.lease.as_millis()).unwrap_or(i64::MAX));
        locks::acquire(&mut tx, lock, Holder::Backup(&b.id), &b.owner, now, Some(expires)).await?;
        let inserted = sqlx::query(
            "INSERT INTO backups (id, policy, repository, source, status, trigger, trigger_key, started_by, owner, started_ms, heartbeat_ms) \
             VALUES ($1, $2, $3, $4, 'running', $5, $6, $7, $8, $9, $10)",
        )
        .bind(&b.id)
        .bind(&b.policy)
        .bind(&b.repository)
        .bind(&b.source)
        .bind(&b.trigger)
        .bind(&b.trigger_key)
        .bind(&b.started_by)
        .bind(&b.owner)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            // Only the trigger key can repeat: any other unique violation (a backup id
            // that exists) is not the caller's trigger and is reported as it is.
            Err(e) if unique_violation(&e) && b.trigger_key.is_some() => {
                let key = b.trigger_key.clone().unwrap_or_default();
                return Err(StoreError::TriggerUsed { key, started: format!("a backup of `{}`", b.policy) });
            }
            Err(e) => return Err(e.into()),
        }
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {BACKUP_COLUMNS} FROM backups WHERE id = $1")))
            .bind(&b.id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        backup_row(&row)
    }

    async fn heartbeat_backup(&self, id: &str, owner: &str, at: DateTime<Utc>, lease_until: DateTime<Utc>) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE backups SET heartbeat_ms = $1 WHERE id = $2 AND owner = $3 AND status = 'running'")
            .bind(ms(at))
            .bind(id)
            .bind(owner)
            .execute(&mut *tx)
            .await?;
        locks::renew(&mut tx, Holder::Backup(id), owner, ms(lease_until)).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn finish_backup(
        &self,
        id: &str,
        status: BackupStatus,
        plain_bytes: i64,
        stored_bytes: i64,
        error: Option<&str>,
        facts: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let now = ms(steward_model::clock::now());
        sqlx::query(
            "UPDATE backups SET status = $1, finished_ms = COALESCE(finished_ms, $2), heartbeat_ms = $3, plain_bytes = $4, stored_bytes = $5, \
             error = $6, facts = $7 WHERE id = $8",
        )
        .bind(status.as_str())
        .bind(now)
        .bind(now)
        .bind(plain_bytes)
        .bind(stored_bytes)
        .bind(error)
        .bind(facts.to_string())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        locks::release(&mut tx, Holder::Backup(id)).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn backup(&self, id: &str) -> Result<Option<BackupRecord>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {BACKUP_COLUMNS} FROM backups WHERE id = $1")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(backup_row).transpose()
    }

    async fn backups(&self, q: &BackupQuery) -> Result<Vec<BackupRecord>, StoreError> {
        let mut qb = sqlx::QueryBuilder::<sqlx::Postgres>::new(format!("SELECT {BACKUP_COLUMNS} FROM backups WHERE 1 = 1"));
        if let Some(p) = &q.policy {
            qb.push(" AND policy = ").push_bind(p.clone());
        }
        if let Some(s) = q.status {
            qb.push(" AND status = ").push_bind(s.as_str());
        }
        qb.push(" ORDER BY started_ms DESC, id DESC LIMIT ").push_bind(i64::from(q.limit.max(1)));
        let rows = qb.build().fetch_all(&self.pool).await?;
        rows.iter().map(backup_row).collect()
    }

    async fn start_restore(&self, r: &NewRestore) -> Result<i64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let now = ms(steward_model::clock::now());
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO backup_restores (backup_id, policy, target, actor, replaced, started_ms, heartbeat_ms, result) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'running') RETURNING id",
        )
        .bind(&r.backup_id)
        .bind(&r.policy)
        .bind(&r.target)
        .bind(&r.actor)
        .bind(r.replaced)
        .bind(now)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("UPDATE backups SET restoring_until_ms = GREATEST(COALESCE(restoring_until_ms, 0), $1) WHERE id = $2")
            .bind(ms(r.hold_until))
            .bind(&r.backup_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn heartbeat_restore(&self, id: i64, at: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query("UPDATE backup_restores SET heartbeat_ms = $1 WHERE id = $2 AND result = 'running'")
            .bind(ms(at))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn finish_restore(&self, id: i64, result: &str, detail: &serde_json::Value) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE backup_restores SET result = $1, detail = $2, finished_ms = $3 WHERE id = $4 AND result = 'running'")
            .bind(result)
            .bind(detail.to_string())
            .bind(ms(steward_model::clock::now()))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        release_restore_holds(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn interrupt_stale_restores(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "UPDATE backup_restores SET result = 'interrupted', finished_ms = $1, \
             detail = '{\"error\":\"steward stopped during the restore: the target may hold part of the data\"}' \
             WHERE result = 'running' AND heartbeat_ms < $2",
        )
        .bind(ms(steward_model::clock::now()))
        .bind(ms(before))
        .execute(&mut *tx)
        .await?;
        release_restore_holds(&mut tx).await?;
        tx.commit().await?;
        Ok(r.rows_affected())
    }

    async fn restores(&self, backup_id: Option<&str>, limit: u32) -> Result<Vec<RestoreRecord>, StoreError> {
        let columns = "id, backup_id, policy, target, actor, replaced, started_ms, finished_ms, result, detail";
        let rows = match backup_id {
            Some(b) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {columns} FROM backup_restores WHERE backup_id = $1 ORDER BY id DESC LIMIT $2"
                )))
                .bind(b)
                .bind(i64::from(limit.max(1)))
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {columns} FROM backup_restores ORDER BY id DESC LIMIT $1")))
                    .bind(i64::from(limit.max(1)))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(restore_row).collect()
    }

    async fn start_verification(
        &self,
        backup_id: &str,
        policy: &str,
        level: u8,
        trigger: &str,
        trigger_key: Option<&str>,
    ) -> Result<i64, StoreError> {
        let inserted: Result<i64, sqlx::Error> = sqlx::query_scalar(
            "INSERT INTO backup_verifications (backup_id, policy, level, trigger, trigger_key, started_ms, heartbeat_ms, result) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'running') RETURNING id",
        )
        .bind(backup_id)
        .bind(policy)
        .bind(i64::from(level))
        .bind(trigger)
        .bind(trigger_key)
        .bind(ms(steward_model::clock::now()))
        .bind(ms(steward_model::clock::now()))
        .fetch_one(&self.pool)
        .await;
        match inserted {
            Ok(id) => Ok(id),
            // As for backups: only the trigger key can repeat.
            Err(e) if unique_violation(&e) && trigger_key.is_some() => Err(StoreError::TriggerUsed {
                key: trigger_key.unwrap_or_default().to_string(),
                started: format!("a verification of a backup of `{policy}`"),
            }),
            Err(e) => Err(e.into()),
        }
    }

    async fn finish_verification(
        &self,
        id: i64,
        passed: bool,
        detail: &serde_json::Value,
        restore_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let now = ms(steward_model::clock::now());
        let result = if passed { "passed" } else { "failed" };
        let row: Option<(String, i64)> = sqlx::query_as(
            "UPDATE backup_verifications SET finished_ms = $1, result = $2, detail = $3, restore_ms = $4 WHERE id = $5 AND result = 'running' \
             RETURNING backup_id, level",
        )
        .bind(now)
        .bind(result)
        .bind(detail.to_string())
        .bind(restore_ms)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((backup_id, level)) = row {
            sqlx::query(
                "UPDATE backups SET verified_ms = $1, verify_result = $2, verify_level = $3, restore_ms = COALESCE($4, restore_ms) WHERE id = $5",
            )
            .bind(now)
            .bind(result)
            .bind(level)
            .bind(restore_ms)
            .bind(backup_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn mark_backup_deleted(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE backups SET status = 'deleted' WHERE id = $1").bind(id).execute(&self.pool).await?;
        Ok(())
    }

    async fn heartbeat_verification(&self, id: i64, at: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query("UPDATE backup_verifications SET heartbeat_ms = $1 WHERE id = $2 AND result = 'running'")
            .bind(ms(at))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn fail_stale_verifications(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "UPDATE backup_verifications SET result = 'failed', finished_ms = $1, detail = '{\"error\":\"steward stopped during the verification\"}' \
             WHERE result = 'running' AND heartbeat_ms < $2",
        )
        .bind(ms(steward_model::clock::now()))
        .bind(ms(before))
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    async fn verifications(&self, backup_id: Option<&str>, limit: u32) -> Result<Vec<Verification>, StoreError> {
        let columns = "id, backup_id, policy, level, trigger, started_ms, finished_ms, result, detail, restore_ms";
        let rows = match backup_id {
            Some(b) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {columns} FROM backup_verifications WHERE backup_id = $1 ORDER BY id DESC LIMIT $2"
                )))
                .bind(b)
                .bind(i64::from(limit.max(1)))
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {columns} FROM backup_verifications ORDER BY id DESC LIMIT $1")))
                    .bind(i64::from(limit.max(1)))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(verification_row).collect()
    }
}
