//! [`AlertStore`] on PostgreSQL.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Postgres, QueryBuilder};

use super::{PostgresStore, ROWS_PER_STATEMENT};
use crate::rows::{OutboxRow, alert_event_row, alert_row, col, compress_payload, json, ms, notification_row, silence_row, time};
use crate::{AlertStore, NewNotification, StoreError};
use steward_model::alerting::{Alert, AlertEvent, Notification, NotifyLogEntry, Silence};

/// Inserts a pending notification (`None`: its dedup key was enqueued before).
pub(super) async fn insert_outbox(
    conn: &mut PgConnection,
    m: &OutboxRow<'_>,
    created_ms: i64,
    incident: Option<i64>,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO outbox (dedup_key, receiver, group_key, status, payload, created_ms, state, next_attempt_ms, incident_id)
         VALUES ($1, $2, $3, $4, $5, $6, 'pending', $6, $7) ON CONFLICT (dedup_key) DO NOTHING RETURNING id",
    )
    .bind(m.dedup_key)
    .bind(m.receiver)
    .bind(m.group_key)
    .bind(m.status)
    .bind(compress_payload(m.payload))
    .bind(created_ms)
    .bind(incident)
    .fetch_optional(conn)
    .await
}

/// The columns of a [`Notification`] row from `outbox o`, with its alerts' fingerprints.
macro_rules! notification_columns {
    () => {
        "o.*, (SELECT string_agg(fingerprint, ',') FROM outbox_alerts a WHERE a.outbox_id = o.id) AS alert_list"
    };
}
pub(super) use notification_columns;

const RECENT_NOTIFICATIONS: &str = concat!("SELECT ", notification_columns!(), " FROM outbox o ORDER BY o.id DESC LIMIT $1");

const ALERT_NOTIFICATIONS: &str = concat!(
    "SELECT ",
    notification_columns!(),
    " FROM outbox o WHERE o.id IN (SELECT outbox_id FROM outbox_alerts WHERE fingerprint = $1) ORDER BY o.id DESC LIMIT $2"
);

#[async_trait]
impl AlertStore for PostgresStore {
    async fn load_alerts(&self) -> Result<Vec<Alert>, StoreError> {
        let rows = sqlx::query("SELECT * FROM alerts WHERE state != 'inactive' ORDER BY fingerprint").fetch_all(&self.pool).await?;
        rows.iter().map(alert_row).collect()
    }

    async fn save_alerts(&self, changes: &[(Alert, Option<AlertEvent>)]) -> Result<(), StoreError> {
        // One statement may not upsert a row twice: an alert changed twice in the batch
        // is written in its last state (its events, all of them, in order).
        let mut last = std::collections::HashMap::with_capacity(changes.len());
        for (i, (a, _)) in changes.iter().enumerate() {
            last.insert(a.fingerprint.as_str(), i);
        }
        let mut alerts: Vec<&Alert> =
            changes.iter().enumerate().filter(|(i, (a, _))| last[a.fingerprint.as_str()] == *i).map(|(_, (a, _))| a).collect();
        // In one order, so two writers lock rows in the same order: no deadlock.
        alerts.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
        let events: Vec<&AlertEvent> = changes.iter().filter_map(|(_, e)| e.as_ref()).collect();
        let mut tx = self.pool.begin().await?;
        for chunk in alerts.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Postgres>::new(
                "INSERT INTO alerts (fingerprint, rule, labels, annotations, state, active_since_ms, fired_at_ms, resolved_at_ms,
                                     last_true_ms, value, source, ends_at_ms) ",
            );
            q.push_values(chunk, |mut b, a| {
                b.push_bind(&a.fingerprint)
                    .push_bind(&a.rule)
                    .push_bind(json(&a.labels))
                    .push_bind(json(&a.annotations))
                    .push_bind(a.state.as_str())
                    .push_bind(ms(a.active_since))
                    .push_bind(a.fired_at.map(ms))
                    .push_bind(a.resolved_at.map(ms))
                    .push_bind(a.last_true.map(ms))
                    .push_bind(a.value)
                    .push_bind(a.source.as_str())
                    .push_bind(a.ends_at.map(ms));
            });
            q.push(
                " ON CONFLICT (fingerprint) DO UPDATE SET
                 rule = excluded.rule, labels = excluded.labels, annotations = excluded.annotations, state = excluded.state,
                 active_since_ms = excluded.active_since_ms, fired_at_ms = excluded.fired_at_ms,
                 resolved_at_ms = excluded.resolved_at_ms, last_true_ms = excluded.last_true_ms, value = excluded.value,
                 source = excluded.source, ends_at_ms = excluded.ends_at_ms",
            );
            q.build().execute(&mut *tx).await?;
        }
        for chunk in events.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Postgres>::new("INSERT INTO alert_events (fingerprint, rule, at_ms, from_state, to_state, value) ");
            q.push_values(chunk, |mut b, e| {
                b.push_bind(&e.fingerprint)
                    .push_bind(&e.rule)
                    .push_bind(ms(e.at))
                    .push_bind(e.from.as_str())
                    .push_bind(e.to.as_str())
                    .push_bind(e.value);
            });
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn alert_events(&self, fingerprint: Option<&str>, limit: u32) -> Result<Vec<AlertEvent>, StoreError> {
        let rows = sqlx::query("SELECT * FROM alert_events WHERE ($1::text IS NULL OR fingerprint = $1) ORDER BY id DESC LIMIT $2")
            .bind(fingerprint)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(alert_event_row).collect()
    }

    async fn forget_resolved(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM alerts WHERE state IN ('resolved', 'inactive') AND coalesce(resolved_at_ms, 0) < $1
             AND NOT EXISTS (SELECT 1 FROM notify_log WHERE jsonb_exists(notify_log.firing::jsonb, alerts.fingerprint))",
        )
        .bind(ms(before))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn notify_log(&self) -> Result<Vec<NotifyLogEntry>, StoreError> {
        let rows = sqlx::query("SELECT * FROM notify_log").fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(NotifyLogEntry {
                    receiver: col(r, "receiver")?,
                    group_key: col(r, "group_key")?,
                    firing: crate::rows::json_col(r, "firing")?,
                    sent_at: time(col(r, "sent_at_ms")?),
                })
            })
            .collect()
    }

    async fn enqueue(&self, n: &NewNotification) -> Result<Option<i64>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let now = ms(n.log.sent_at);
        let row =
            OutboxRow { dedup_key: &n.dedup_key, receiver: &n.receiver, group_key: &n.group_key, status: &n.status, payload: &n.payload };
        let id = insert_outbox(&mut tx, &row, now, None).await?;
        if let Some(id) = id
            && !n.alerts.is_empty()
        {
            let fingerprints: Vec<&str> = n.alerts.iter().map(|(fp, _)| fp.as_str()).collect();
            let fired: Vec<Option<i64>> = n.alerts.iter().map(|(_, at)| at.map(ms)).collect();
            sqlx::query(
                "INSERT INTO outbox_alerts (fingerprint, outbox_id, fired_ms)
                 SELECT f, $1, t FROM UNNEST($2::text[], $3::bigint[]) AS x(f, t) ON CONFLICT DO NOTHING",
            )
            .bind(id)
            .bind(&fingerprints)
            .bind(&fired)
            .execute(&mut *tx)
            .await?;
        }
        upsert_log(&mut tx, &n.log).await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn update_notify_log(&self, entry: &NotifyLogEntry) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        upsert_log(&mut conn, entry).await
    }

    async fn claim_due(
        &self,
        receiver: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Notification>, StoreError> {
        let mut tx = self.pool.begin().await?;
        // SKIP LOCKED: rows another replica is claiming this instant are left to it, not
        // waited for; the claim itself (claimed_by, claim_until_ms) keeps them from
        // everyone else until it ends.
        let rows = sqlx::query(concat!(
            "WITH due AS (SELECT id FROM outbox WHERE state = 'pending' AND receiver = $1 AND next_attempt_ms <= $2 \
               AND (claim_until_ms IS NULL OR claim_until_ms <= $2) ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED), \
             claimed AS (UPDATE outbox SET claimed_by = $4, claim_until_ms = $5 WHERE id IN (SELECT id FROM due) RETURNING id) \
             SELECT ",
            notification_columns!(),
            " FROM outbox o JOIN claimed c ON c.id = o.id ORDER BY o.id"
        ))
        .bind(receiver)
        .bind(ms(now))
        .bind(i64::from(limit))
        .bind(owner)
        .bind(ms(until))
        .fetch_all(&mut *tx)
        .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for r in &rows {
            match notification_row(r) {
                Ok(n) => claimed.push(n),
                // As on SQLite: a damaged row is set aside (expired, with why), the rest
                // of the receiver's queue is delivered.
                Err(StoreError::Corrupt(why)) => {
                    let id: i64 = col(r, "id")?;
                    tracing::error!(notification = id, receiver, error = %why, "a stored notification is damaged; it is set aside (expired) and the rest of the queue is delivered");
                    let note = serde_json::json!({ "damaged": why }).to_string();
                    sqlx::query(
                        "UPDATE outbox SET state = 'expired', last_error = $1, payload = $2, claimed_by = NULL, claim_until_ms = NULL \
                         WHERE id = $3",
                    )
                    .bind(format!("not sent: the stored notification is damaged ({why})"))
                    .bind(compress_payload(&note))
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                }
                Err(e) => return Err(e),
            }
        }
        tx.commit().await?;
        Ok(claimed)
    }

    async fn next_due(&self, receiver: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT min(GREATEST(next_attempt_ms, COALESCE(claim_until_ms, 0))) FROM outbox WHERE state = 'pending' AND receiver = $1",
        )
        .bind(receiver)
        .fetch_one(&self.pool)
        .await?;
        Ok(next.map(time))
    }

    async fn mark_delivered(&self, id: i64, at: DateTime<Utc>, attempts: u32) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE outbox SET state = 'delivered', delivered_ms = $1, attempts = $2, last_error = NULL, claimed_by = NULL, \
             claim_until_ms = NULL WHERE id = $3",
        )
        .bind(ms(at))
        .bind(i64::from(attempts))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn mark_retry(&self, id: i64, owner: &str, attempts: u32, next: DateTime<Utc>, error: &str) -> Result<bool, StoreError> {
        let changed = sqlx::query(
            "UPDATE outbox SET attempts = $1, next_attempt_ms = $2, last_error = $3, claimed_by = NULL, claim_until_ms = NULL \
             WHERE id = $4 AND claimed_by = $5 AND state = 'pending'",
        )
        .bind(i64::from(attempts))
        .bind(ms(next))
        .bind(error)
        .bind(id)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(changed.rows_affected() == 1)
    }

    async fn mark_expired(&self, id: i64, owner: &str, attempts: u32, error: &str) -> Result<bool, StoreError> {
        let changed = sqlx::query(
            "UPDATE outbox SET state = 'expired', attempts = $1, last_error = $2, claimed_by = NULL, claim_until_ms = NULL \
             WHERE id = $3 AND claimed_by = $4 AND state = 'pending'",
        )
        .bind(i64::from(attempts))
        .bind(error)
        .bind(id)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(changed.rows_affected() == 1)
    }

    async fn claim_owners(&self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT DISTINCT claimed_by FROM outbox WHERE state = 'pending' AND claimed_by IS NOT NULL")
            .fetch_all(&self.pool)
            .await?)
    }

    async fn release_claims(&self, owner: &str) -> Result<u64, StoreError> {
        let released =
            sqlx::query("UPDATE outbox SET claimed_by = NULL, claim_until_ms = NULL WHERE state = 'pending' AND claimed_by = $1")
                .bind(owner)
                .execute(&self.pool)
                .await?;
        Ok(released.rows_affected())
    }

    async fn notifications(&self, fingerprint: Option<&str>, limit: u32) -> Result<Vec<Notification>, StoreError> {
        let query = match fingerprint {
            Some(fingerprint) => sqlx::query(ALERT_NOTIFICATIONS).bind(fingerprint),
            None => sqlx::query(RECENT_NOTIFICATIONS),
        };
        let rows = query.bind(i64::from(limit)).fetch_all(&self.pool).await?;
        rows.iter().map(notification_row).collect()
    }

    async fn outbox_depth(&self) -> Result<(u64, Option<DateTime<Utc>>), StoreError> {
        let row = sqlx::query("SELECT count(*) AS n, min(created_ms) AS oldest FROM outbox WHERE state = 'pending'")
            .fetch_one(&self.pool)
            .await?;
        Ok((col::<i64>(&row, "n")? as u64, col::<Option<i64>>(&row, "oldest")?.map(time)))
    }

    async fn create_silence(&self, s: &Silence) -> Result<(), StoreError> {
        let matchers: Vec<String> = s.matchers.iter().map(|m| m.to_string()).collect();
        sqlx::query(
            "INSERT INTO silences (id, matchers, starts_ms, ends_ms, created_by, comment, created_ms, expired_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&s.id)
        .bind(json(&matchers))
        .bind(ms(s.starts_at))
        .bind(ms(s.ends_at))
        .bind(&s.created_by)
        .bind(&s.comment)
        .bind(ms(s.created_at))
        .bind(s.expired_at.map(ms))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn silences(&self) -> Result<Vec<Silence>, StoreError> {
        let rows = sqlx::query("SELECT * FROM silences ORDER BY created_ms DESC, id").fetch_all(&self.pool).await?;
        rows.iter().map(silence_row).collect()
    }

    async fn expire_silence(&self, id: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE silences SET expired_ms = $1 WHERE id = $2 AND expired_ms IS NULL AND ends_ms > $1")
            .bind(ms(at))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

async fn upsert_log(conn: &mut PgConnection, e: &NotifyLogEntry) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO notify_log (receiver, group_key, firing, sent_at_ms) VALUES ($1, $2, $3, $4)
         ON CONFLICT (receiver, group_key) DO UPDATE SET firing = excluded.firing, sent_at_ms = excluded.sent_at_ms",
    )
    .bind(&e.receiver)
    .bind(&e.group_key)
    .bind(json(&e.firing))
    .bind(ms(e.sent_at))
    .execute(conn)
    .await?;
    Ok(())
}
