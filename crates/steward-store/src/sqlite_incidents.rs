//! [`IncidentStore`] on SQLite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::rows::{OutboxRow, action_row, attached_row, col, incident_row, json, ms, notification_row, time, timeline_row};
use super::sqlite::{ROWS_PER_STATEMENT, SqliteStore};
use super::sqlite_alerts::{insert_outbox, notification_columns};
use super::{IncidentQuery, IncidentStore, IncidentWrite, StoreError};
use steward_model::alerting::Notification;
use steward_model::incidents::oncall::Override;
use steward_model::incidents::{ActionItem, AttachedState, Incident, IncidentAlert, Status, TimelineEntry};

/// An incident's notifications: its own (incident pages), and those about its alerts'
/// episodes (see `incident_notifications`). Two indexed branches rather than one `OR`,
/// which SQLite could only answer by walking the whole outbox.
const INCIDENT_NOTIFICATIONS: &str = concat!(
    "SELECT ",
    notification_columns!(),
    " FROM outbox o WHERE o.id IN (
         SELECT p.id FROM outbox p JOIN incidents i ON i.id = p.incident_id WHERE p.incident_id = ?1
         UNION
         SELECT x.outbox_id FROM incidents i
             JOIN incident_alerts a ON a.incident_id = i.id
             JOIN outbox_alerts x ON x.fingerprint = a.fingerprint
             JOIN outbox n ON n.id = x.outbox_id
         WHERE i.id = ?1 AND n.incident_id IS NULL AND CASE
             WHEN x.fired_ms IS NOT NULL AND a.fired_ms IS NOT NULL THEN
                 x.fired_ms >= a.fired_ms AND x.fired_ms <= coalesce(i.resolved_ms, i.closed_ms, 9223372036854775807)
             ELSE
                 n.created_ms >= i.opened_ms - 60000 AND n.created_ms <= coalesce(i.closed_ms, 9223372036854775807)
         END)
     ORDER BY o.id"
);

#[cfg(test)]
pub(super) const NOTIFICATION_QUERIES: [&str; 1] = [INCIDENT_NOTIFICATIONS];

#[async_trait]
impl IncidentStore for SqliteStore {
    async fn write_incident(&self, w: &IncidentWrite) -> Result<Incident, StoreError> {
        let i = &w.incident;
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let escalation = i.escalation.as_ref().map(json);
        let id: i64 = if i.id == 0 {
            let inserted = sqlx::query_scalar(
                "INSERT INTO incidents (title, priority, status, policy, group_key, services, opened_by, opened_ms,
                   acknowledged_ms, mitigated_ms, resolved_ms, closed_ms, roles, escalation, auto_resolve, version)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1) RETURNING id",
            )
            .bind(&i.title)
            .bind(i.priority.as_str())
            .bind(i.status.as_str())
            .bind(&i.policy)
            .bind(&i.group_key)
            .bind(json(&i.services))
            .bind(&i.opened_by)
            .bind(ms(i.opened_at))
            .bind(i.acknowledged_at.map(ms))
            .bind(i.mitigated_at.map(ms))
            .bind(i.resolved_at.map(ms))
            .bind(i.closed_at.map(ms))
            .bind(json(&i.roles))
            .bind(&escalation)
            .bind(i.auto_resolve as i64)
            .fetch_one(&mut *tx)
            .await;
            match inserted {
                Ok(id) => id,
                // The partial unique index: one open incident per group key.
                Err(sqlx::Error::Database(d)) if d.is_unique_violation() => {
                    let open: i64 = sqlx::query_scalar(
                        "SELECT id FROM incidents WHERE group_key = ? AND status IN ('triggered', 'acknowledged', 'mitigated')",
                    )
                    .bind(&i.group_key)
                    .fetch_one(&mut *tx)
                    .await?;
                    return Err(StoreError::GroupOpen { group_key: i.group_key.clone(), incident: open });
                }
                Err(e) => return Err(e.into()),
            }
        } else {
            let updated = sqlx::query(
                "UPDATE incidents SET title = ?, priority = ?, status = ?, services = ?, acknowledged_ms = ?, mitigated_ms = ?,
                   resolved_ms = ?, closed_ms = ?, roles = ?, escalation = ?, auto_resolve = ?, version = version + 1
                 WHERE id = ? AND version = ?",
            )
            .bind(&i.title)
            .bind(i.priority.as_str())
            .bind(i.status.as_str())
            .bind(json(&i.services))
            .bind(i.acknowledged_at.map(ms))
            .bind(i.mitigated_at.map(ms))
            .bind(i.resolved_at.map(ms))
            .bind(i.closed_at.map(ms))
            .bind(json(&i.roles))
            .bind(&escalation)
            .bind(i.auto_resolve as i64)
            .bind(i.id)
            .bind(i.version)
            .execute(&mut *tx)
            .await?;
            if updated.rows_affected() != 1 {
                return Err(StoreError::StaleVersion { what: format!("incident {}", i.id) });
            }
            i.id
        };
        for a in &w.alerts {
            sqlx::query(
                "INSERT INTO incident_alerts (incident_id, fingerprint, rule, labels, state, attached_ms, changed_ms, fired_ms)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (incident_id, fingerprint) DO UPDATE SET state = excluded.state, changed_ms = excluded.changed_ms",
            )
            .bind(id)
            .bind(&a.fingerprint)
            .bind(&a.rule)
            .bind(json(&a.labels))
            .bind(if a.state == AttachedState::Firing { "firing" } else { "resolved" })
            .bind(ms(a.attached_at))
            .bind(ms(a.changed_at))
            .bind(a.fired_at.map(ms))
            .execute(&mut *tx)
            .await?;
        }
        for e in &w.timeline {
            sqlx::query("INSERT INTO incident_timeline (incident_id, at_ms, kind, actor, text, public, data) VALUES (?, ?, ?, ?, ?, ?, ?)")
                .bind(id)
                .bind(ms(e.at))
                .bind(&e.kind)
                .bind(&e.actor)
                .bind(&e.text)
                .bind(e.public as i64)
                .bind(json(&e.data))
                .execute(&mut *tx)
                .await?;
        }
        for n in &w.notifications {
            insert_outbox(&mut tx, &OutboxRow::of(n, &json(&n.payload)), ms(steward_model::clock::now()), Some(id)).await?;
        }
        for a in &w.action_items {
            if a.id == 0 {
                sqlx::query(
                    "INSERT INTO action_items (incident_id, text, owner, state, created_by, created_ms, done_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(id)
                .bind(&a.text)
                .bind(&a.owner)
                .bind(&a.state)
                .bind(&a.created_by)
                .bind(ms(a.created_at))
                .bind(a.done_at.map(ms))
                .execute(&mut *tx)
                .await?;
            } else {
                sqlx::query("UPDATE action_items SET text = ?, owner = ?, state = ?, done_ms = ? WHERE id = ? AND incident_id = ?")
                    .bind(&a.text)
                    .bind(&a.owner)
                    .bind(&a.state)
                    .bind(a.done_at.map(ms))
                    .bind(a.id)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        let row = sqlx::query("SELECT * FROM incidents WHERE id = ?").bind(id).fetch_one(&mut *tx).await?;
        tx.commit().await?;
        incident_row(&row)
    }

    async fn incident(&self, id: i64) -> Result<Option<Incident>, StoreError> {
        let row = sqlx::query("SELECT * FROM incidents WHERE id = ?").bind(id).fetch_optional(&self.reader).await?;
        row.as_ref().map(incident_row).transpose()
    }

    async fn incidents(&self, q: &IncidentQuery) -> Result<Vec<Incident>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM incidents
             WHERE (?1 = 0 OR status IN ('triggered', 'acknowledged', 'mitigated'))
               AND (?2 IS NULL OR status = ?2)
               AND (?3 IS NULL OR EXISTS (SELECT 1 FROM json_each(services) WHERE value = ?3))
               AND (?4 IS NULL OR opened_ms >= ?4)
             ORDER BY id DESC LIMIT ?5",
        )
        .bind(q.open as i64)
        .bind(q.status.map(Status::as_str))
        .bind(&q.service)
        .bind(q.since.map(ms))
        .bind(if q.limit == 0 { -1 } else { q.limit as i64 })
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(incident_row).collect()
    }

    async fn incident_alerts(&self, incident: Option<i64>) -> Result<Vec<IncidentAlert>, StoreError> {
        let rows = match incident {
            Some(id) => {
                sqlx::query("SELECT * FROM incident_alerts WHERE incident_id = ? ORDER BY attached_ms, fingerprint")
                    .bind(id)
                    .fetch_all(&self.reader)
                    .await?
            }
            None => {
                sqlx::query(
                    "SELECT a.* FROM incident_alerts a JOIN incidents i ON i.id = a.incident_id
                     WHERE i.status IN ('triggered', 'acknowledged', 'mitigated') ORDER BY a.incident_id, a.attached_ms",
                )
                .fetch_all(&self.reader)
                .await?
            }
        };
        rows.iter().map(attached_row).collect()
    }

    async fn attachments(&self, fingerprints: &[String]) -> Result<Vec<IncidentAlert>, StoreError> {
        let mut out = Vec::new();
        for chunk in fingerprints.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new("SELECT * FROM incident_alerts WHERE fingerprint IN (");
            let mut list = q.separated(", ");
            for fp in chunk {
                list.push_bind(fp);
            }
            q.push(")");
            for row in q.build().fetch_all(&self.reader).await? {
                out.push(attached_row(&row)?);
            }
        }
        Ok(out)
    }

    async fn timeline(&self, incident: i64) -> Result<Vec<TimelineEntry>, StoreError> {
        let rows =
            sqlx::query("SELECT * FROM incident_timeline WHERE incident_id = ? ORDER BY id").bind(incident).fetch_all(&self.reader).await?;
        rows.iter().map(timeline_row).collect()
    }

    async fn incident_notifications(&self, incident: i64) -> Result<Vec<Notification>, StoreError> {
        // A notification about one of the incident's alerts belongs to it when it is
        // about a firing (episode) that started no earlier than the one first attached
        // and before the incident was resolved: an earlier episode belonged to an earlier
        // incident, a later one opens its own. Rows from before episodes were recorded
        // fall back to the time window: from a minute before the incident opened (an
        // alert's first notification can leave before the incident manager's pass) until
        // it closed.
        let rows = sqlx::query(INCIDENT_NOTIFICATIONS).bind(incident).fetch_all(&self.reader).await?;
        rows.iter().map(notification_row).collect()
    }

    async fn action_items(&self, incident: Option<i64>, state: Option<&str>) -> Result<Vec<ActionItem>, StoreError> {
        let rows =
            sqlx::query("SELECT * FROM action_items WHERE (?1 IS NULL OR incident_id = ?1) AND (?2 IS NULL OR state = ?2) ORDER BY id")
                .bind(incident)
                .bind(state)
                .fetch_all(&self.reader)
                .await?;
        rows.iter().map(action_row).collect()
    }

    async fn add_override(&self, schedule: &str, o: &Override, created_by: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO oncall_overrides (schedule, person, from_ms, until_ms, created_by, created_ms) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(schedule)
            .bind(&o.person)
            .bind(ms(o.from))
            .bind(ms(o.until))
            .bind(created_by)
            .bind(ms(steward_model::clock::now()))
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn overrides(&self, after: DateTime<Utc>) -> Result<Vec<(String, Override)>, StoreError> {
        let rows =
            sqlx::query("SELECT * FROM oncall_overrides WHERE until_ms > ? ORDER BY id").bind(ms(after)).fetch_all(&self.reader).await?;
        rows.iter()
            .map(|r| {
                let o = Override { person: col(r, "person")?, from: time(col(r, "from_ms")?), until: time(col(r, "until_ms")?) };
                Ok((col(r, "schedule")?, o))
            })
            .collect()
    }
}
