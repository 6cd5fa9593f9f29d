//! [`AlertStore`] on SQLite. Same single-writer / reader-pool split as the rest.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Sqlite};

use super::rows::{OutboxRow, alert_event_row, alert_row, col, compress_payload, json, json_col, ms, notification_row, silence_row, time};
use super::sqlite::{ROWS_PER_STATEMENT, SqliteStore};
use super::{AlertStore, NewNotification, StoreError};
use steward_model::alerting::{Alert, AlertEvent, Notification, NotifyLogEntry, Silence};

/// Inserts a pending notification (`None`: its dedup key was enqueued before).
pub(super) async fn insert_outbox(
    conn: &mut sqlx::SqliteConnection,
    m: &OutboxRow<'_>,
    created_ms: i64,
    incident: Option<i64>,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO outbox (dedup_key, receiver, group_key, status, payload, created_ms, state, next_attempt_ms, incident_id)
         VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?) ON CONFLICT (dedup_key) DO NOTHING RETURNING id",
    )
    .bind(m.dedup_key)
    .bind(m.receiver)
    .bind(m.group_key)
    .bind(m.status)
    .bind(compress_payload(m.payload))
    .bind(created_ms)
    .bind(created_ms)
    .bind(incident)
    .fetch_optional(conn)
    .await
}

/// The columns of a [`Notification`] row from `outbox o`, with its alerts' fingerprints;
/// a macro so each query is one `&'static str` that tests can ask SQLite to plan.
macro_rules! notification_columns {
    () => {
        "o.*, (SELECT group_concat(fingerprint) FROM outbox_alerts a WHERE a.outbox_id = o.id) AS alert_list"
    };
}
pub(super) use notification_columns;

/// Pending rows of one receiver due now whose claim (if any) has ended, oldest first.
const CLAIMABLE_NOTIFICATIONS: &str = "SELECT id FROM outbox WHERE state = 'pending' AND receiver = ?1 AND next_attempt_ms <= ?2 \
     AND (claim_until_ms IS NULL OR claim_until_ms <= ?2) ORDER BY id LIMIT ?3";

const CLAIMED_NOTIFICATIONS: &str = concat!(
    "SELECT ",
    notification_columns!(),
    " FROM outbox o WHERE o.claimed_by = ? AND o.id IN (SELECT value FROM json_each(?)) ORDER BY o.id"
);

/// The newest notifications: walks the outbox newest first and stops at the limit.
const RECENT_NOTIFICATIONS: &str = concat!("SELECT ", notification_columns!(), " FROM outbox o ORDER BY o.id DESC LIMIT ?");

/// The newest notifications about one alert. A query of its own: one `?1 IS NULL OR …`
/// query walked the whole outbox newest first looking for the alert's rows.
const ALERT_NOTIFICATIONS: &str = concat!(
    "SELECT ",
    notification_columns!(),
    " FROM outbox o WHERE o.id IN (SELECT outbox_id FROM outbox_alerts WHERE fingerprint = ?) ORDER BY o.id DESC LIMIT ?"
);

/// Queries that pick notifications by a condition, for the test that none of them scans
/// a table whose size is the whole notification history (`RECENT_NOTIFICATIONS` walks
/// the outbox but stops at its limit).
#[cfg(test)]
pub(super) const NOTIFICATION_QUERIES: [&str; 3] = [CLAIMABLE_NOTIFICATIONS, CLAIMED_NOTIFICATIONS, ALERT_NOTIFICATIONS];

#[async_trait]
impl AlertStore for SqliteStore {
    async fn load_alerts(&self) -> Result<Vec<Alert>, StoreError> {
        let rows = sqlx::query("SELECT * FROM alerts WHERE state != 'inactive' ORDER BY fingerprint").fetch_all(&self.reader).await?;
        rows.iter().map(alert_row).collect()
    }

    async fn save_alerts(&self, changes: &[(Alert, Option<AlertEvent>)]) -> Result<(), StoreError> {
        // Multi-row statements, as for check results: one round trip per chunk, not per
        // row. Rows apply in order, so an alert changed twice ends in its last state.
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        for chunk in changes.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO alerts (fingerprint, rule, labels, annotations, state, active_since_ms, fired_at_ms, resolved_at_ms,
                                     last_true_ms, value, source, ends_at_ms) ",
            );
            q.push_values(chunk, |mut b, (a, _)| {
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
            let events: Vec<&AlertEvent> = chunk.iter().filter_map(|(_, e)| e.as_ref()).collect();
            if !events.is_empty() {
                let mut q =
                    QueryBuilder::<Sqlite>::new("INSERT INTO alert_events (fingerprint, rule, at_ms, from_state, to_state, value) ");
                q.push_values(events, |mut b, e| {
                    b.push_bind(&e.fingerprint)
                        .push_bind(&e.rule)
                        .push_bind(ms(e.at))
                        .push_bind(e.from.as_str())
                        .push_bind(e.to.as_str())
                        .push_bind(e.value);
                });
                q.build().execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn alert_events(&self, fingerprint: Option<&str>, limit: u32) -> Result<Vec<AlertEvent>, StoreError> {
        let rows = sqlx::query("SELECT * FROM alert_events WHERE (?1 IS NULL OR fingerprint = ?1) ORDER BY id DESC LIMIT ?2")
            .bind(fingerprint)
            .bind(limit as i64)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(alert_event_row).collect()
    }

    async fn forget_resolved(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM alerts WHERE state IN ('resolved', 'inactive') AND coalesce(resolved_at_ms, 0) < ?
             AND NOT EXISTS (SELECT 1 FROM notify_log, json_each(notify_log.firing) j WHERE j.value = alerts.fingerprint)",
        )
        .bind(ms(before))
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected())
    }

    async fn notify_log(&self) -> Result<Vec<NotifyLogEntry>, StoreError> {
        let rows = sqlx::query("SELECT * FROM notify_log").fetch_all(&self.reader).await?;
        rows.iter()
            .map(|r| {
                Ok(NotifyLogEntry {
                    receiver: col(r, "receiver")?,
                    group_key: col(r, "group_key")?,
                    firing: json_col(r, "firing")?,
                    sent_at: time(col(r, "sent_at_ms")?),
                })
            })
            .collect()
    }

    async fn enqueue(&self, n: &NewNotification) -> Result<Option<i64>, StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let now = ms(n.log.sent_at);
        let row =
            OutboxRow { dedup_key: &n.dedup_key, receiver: &n.receiver, group_key: &n.group_key, status: &n.status, payload: &n.payload };
        let id = insert_outbox(&mut tx, &row, now, None).await?;
        if let Some(id) = id
            && !n.alerts.is_empty()
        {
            // One statement for every alert of the notification: a group of hundreds of
            // alerts was hundreds of round trips to the SQLite thread per flush.
            let rows: Vec<(&str, Option<i64>)> = n.alerts.iter().map(|(fp, fired_at)| (fp.as_str(), fired_at.map(ms))).collect();
            sqlx::query(
                "INSERT OR IGNORE INTO outbox_alerts (fingerprint, outbox_id, fired_ms)
                 SELECT value ->> 0, ?, value ->> 1 FROM json_each(?)",
            )
            .bind(id)
            .bind(json(&rows))
            .execute(&mut *tx)
            .await?;
        }
        upsert_log(&mut tx, &n.log).await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn update_notify_log(&self, entry: &NotifyLogEntry) -> Result<(), StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        upsert_log(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn claim_due(
        &self,
        receiver: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Notification>, StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let ids: Vec<i64> =
            sqlx::query_scalar(CLAIMABLE_NOTIFICATIONS).bind(receiver).bind(ms(now)).bind(i64::from(limit)).fetch_all(&mut *tx).await?;
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let ids = json(&ids);
        sqlx::query("UPDATE outbox SET claimed_by = ?, claim_until_ms = ? WHERE id IN (SELECT value FROM json_each(?))")
            .bind(owner)
            .bind(ms(until))
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        let rows = sqlx::query(CLAIMED_NOTIFICATIONS).bind(owner).bind(&ids).fetch_all(&mut *tx).await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for r in &rows {
            match notification_row(r) {
                Ok(n) => claimed.push(n),
                // One damaged row must not stop its receiver's queue for good: it is set
                // aside (expired, the reason as its last error, for the API and the
                // incident timeline) in this transaction, and said loudly. Its payload,
                // unreadable anyway, becomes a note saying so, so that listings which
                // read it keep working.
                Err(StoreError::Corrupt(why)) => {
                    let id: i64 = col(r, "id")?;
                    tracing::error!(notification = id, receiver, error = %why, "a stored notification is damaged; it is set aside (expired) and the rest of the queue is delivered");
                    let note = serde_json::json!({ "damaged": why }).to_string();
                    sqlx::query(
                        "UPDATE outbox SET state = 'expired', last_error = ?, payload = ?, claimed_by = NULL, claim_until_ms = NULL \
                         WHERE id = ?",
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
        // A claimed row is due again only when its claim ends (its worker died).
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT min(max(next_attempt_ms, COALESCE(claim_until_ms, 0))) FROM outbox WHERE state = 'pending' AND receiver = ?",
        )
        .bind(receiver)
        .fetch_one(&self.reader)
        .await?;
        Ok(next.map(time))
    }

    async fn mark_delivered(&self, id: i64, at: DateTime<Utc>, attempts: u32) -> Result<(), StoreError> {
        // Recorded whoever holds the claim now: the receiver has it, whatever else happens.
        sqlx::query(
            "UPDATE outbox SET state = 'delivered', delivered_ms = ?, attempts = ?, last_error = NULL, claimed_by = NULL, \
             claim_until_ms = NULL WHERE id = ?",
        )
        .bind(ms(at))
        .bind(attempts as i64)
        .bind(id)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn mark_retry(&self, id: i64, owner: &str, attempts: u32, next: DateTime<Utc>, error: &str) -> Result<bool, StoreError> {
        let changed = sqlx::query(
            "UPDATE outbox SET attempts = ?, next_attempt_ms = ?, last_error = ?, claimed_by = NULL, claim_until_ms = NULL \
             WHERE id = ? AND claimed_by = ? AND state = 'pending'",
        )
        .bind(attempts as i64)
        .bind(ms(next))
        .bind(error)
        .bind(id)
        .bind(owner)
        .execute(&self.writer)
        .await?;
        Ok(changed.rows_affected() == 1)
    }

    async fn mark_expired(&self, id: i64, owner: &str, attempts: u32, error: &str) -> Result<bool, StoreError> {
        let changed = sqlx::query(
            "UPDATE outbox SET state = 'expired', attempts = ?, last_error = ?, claimed_by = NULL, claim_until_ms = NULL \
             WHERE id = ? AND claimed_by = ? AND state = 'pending'",
        )
        .bind(attempts as i64)
        .bind(error)
        .bind(id)
        .bind(owner)
        .execute(&self.writer)
        .await?;
        Ok(changed.rows_affected() == 1)
    }

    async fn claim_owners(&self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT DISTINCT claimed_by FROM outbox WHERE state = 'pending' AND claimed_by IS NOT NULL")
            .fetch_all(&self.reader)
            .await?)
    }

    async fn release_claims(&self, owner: &str) -> Result<u64, StoreError> {
        let released = sqlx::query("UPDATE outbox SET claimed_by = NULL, claim_until_ms = NULL WHERE state = 'pending' AND claimed_by = ?")
            .bind(owner)
            .execute(&self.writer)
            .await?;
        Ok(released.rows_affected())
    }

    async fn notifications(&self, fingerprint: Option<&str>, limit: u32) -> Result<Vec<Notification>, StoreError> {
        let query = match fingerprint {
            Some(fingerprint) => sqlx::query(ALERT_NOTIFICATIONS).bind(fingerprint),
            None => sqlx::query(RECENT_NOTIFICATIONS),
        };
        let rows = query.bind(limit as i64).fetch_all(&self.reader).await?;
        rows.iter().map(notification_row).collect()
    }

    async fn outbox_depth(&self) -> Result<(u64, Option<DateTime<Utc>>), StoreError> {
        let row = sqlx::query("SELECT count(*) AS n, min(created_ms) AS oldest FROM outbox WHERE state = 'pending'")
            .fetch_one(&self.reader)
            .await?;
        Ok((col::<i64>(&row, "n")? as u64, col::<Option<i64>>(&row, "oldest")?.map(time)))
    }

    async fn create_silence(&self, s: &Silence) -> Result<(), StoreError> {
        let matchers: Vec<String> = s.matchers.iter().map(|m| m.to_string()).collect();
        sqlx::query("INSERT INTO silences VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
            .bind(&s.id)
            .bind(json(&matchers))
            .bind(ms(s.starts_at))
            .bind(ms(s.ends_at))
            .bind(&s.created_by)
            .bind(&s.comment)
            .bind(ms(s.created_at))
            .bind(s.expired_at.map(ms))
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn silences(&self) -> Result<Vec<Silence>, StoreError> {
        let rows = sqlx::query("SELECT * FROM silences ORDER BY created_ms DESC, id").fetch_all(&self.reader).await?;
        rows.iter().map(silence_row).collect()
    }

    async fn expire_silence(&self, id: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE silences SET expired_ms = ? WHERE id = ? AND expired_ms IS NULL AND ends_ms > ?")
            .bind(ms(at))
            .bind(id)
            .bind(ms(at))
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

async fn upsert_log(tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>, e: &NotifyLogEntry) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO notify_log VALUES (?, ?, ?, ?) ON CONFLICT (receiver, group_key) DO UPDATE SET
         firing = excluded.firing, sent_at_ms = excluded.sent_at_ms",
    )
    .bind(&e.receiver)
    .bind(&e.group_key)
    .bind(json(&e.firing))
    .bind(ms(e.sent_at))
    .execute(&mut **tx)
    .await?;
    Ok(())
}
