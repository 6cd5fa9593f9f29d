//! The shared store: PostgreSQL, for several steward replicas on one database.
//!
//! Same tables and the same row mappers (`rows.rs`) as the SQLite backend; what differs
//! is concurrency. SQLite has one writer, so a read-then-write transaction there is
//! serial by construction. Here several processes write at once under READ COMMITTED,
//! so every write that decides something (take a lock, claim a notification, decide an
//! approval, move an incident's version) is one conditional statement whose WHERE the
//! database re-checks on the row it locks, and queues are read with
//! `FOR UPDATE SKIP LOCKED`, never "read, then update what was read".

mod alerts;
mod backups;
mod incidents;
mod locks;
mod nodelay;
mod runs;

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, QueryBuilder};

use super::rows::{
    bucket_row, col, count, enum_col, group_day_row, heartbeat_row, ms, result_row, session_row, slo_bucket_row, time, token_row,
};
use super::{CheckStore, Fence, GroupDay, Heartbeat, KeyStore, RecordedRun, ResultRow, Rollup, SloEvents, Store, StoreError};
use steward_model::auth::{ConsoleSession, Role, TokenInfo};
use steward_model::checks::state::{CheckState, Health, Transition};
use steward_model::slo::Bucket;

/// Rows per multi-row INSERT: 12 columns × 1,000 stays far below PostgreSQL's limit of
/// 65,535 bound parameters.
const ROWS_PER_STATEMENT: usize = 1000;

/// Schema migrations, applied in order; `steward_schema.version` records how many ran.
const MIGRATIONS: &[&str] = &[
    include_str!("schema.sql"),
    include_str!("cluster.sql"),
    include_str!("notify.sql"),
    include_str!("sessions.sql"),
    include_str!("days.sql"),
    include_str!("heartbeats.sql"),
    include_str!("slos.sql"),
    // The fields a check records for forecasts, as a JSON object (NULL: none).
    "ALTER TABLE check_results ADD COLUMN observed TEXT;",
];

/// Any number, as long as every steward agrees: the advisory lock that serialises
/// migrations when several replicas start at once.
const MIGRATION_LOCK: i64 = 0x5354_4557_4152_4431;

#[derive(Clone)]
pub struct PostgresStore {
    pub(super) pool: PgPool,
    /// How to connect again: a fenced store is a second pool on the same server.
    options: PgConnectOptions,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:port/db`, resolved from the
    /// secret reference the user wrote; messages show it with the password redacted) and
    /// migrates the schema.
    pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        let shown = redact(url);
        let open_error = |e: &dyn std::fmt::Display| StoreError::Open { path: shown.clone(), message: e.to_string() };
        let options = PgConnectOptions::from_str(url).map_err(|e| open_error(&e))?.application_name("steward");
        // One direct attempt first: a server that refuses, a wrong password or database
        // fails at once with its own message, instead of after the pool's retries.
        match tokio::time::timeout(Duration::from_secs(10), <sqlx::PgConnection as sqlx::Connection>::connect_with(&options)).await {
            Ok(Ok(conn)) => drop(sqlx::Connection::close(conn).await),
            Ok(Err(e)) => return Err(open_error(&e)),
            Err(_) => return Err(open_error(&"no answer within 10 s")),
        }
        let pool = pool_options(&options).min_connections(1).connect_with(options.clone()).await.map_err(|e| open_error(&e))?;
        migrate(&pool).await?;
        Ok(PostgresStore { pool, options })
    }

    /// The schema version this build writes.
    pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;
}

fn pool_options(options: &PgConnectOptions) -> PgPoolOptions {
    let port = options.get_port();
    PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(10))
        // See `nodelay.rs`: sqlx 0.9.0 leaves Nagle's algorithm on.
        .after_connect(move |conn, _| Box::pin(nodelay::disable_nagle(conn, port)))
}

/// `url` with any password in it replaced, for messages.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("REDACTED"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "the PostgreSQL URL (which does not parse)".to_string(),
    }
}

async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(MIGRATION_LOCK).execute(&mut *tx).await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS steward_schema (id BIGINT PRIMARY KEY CHECK (id = 1), version BIGINT NOT NULL)")
        .execute(&mut *tx)
        .await?;
    let version: i64 =
        sqlx::query_scalar("SELECT COALESCE((SELECT version FROM steward_schema WHERE id = 1), 0)").fetch_one(&mut *tx).await?;
    if version as usize > MIGRATIONS.len() {
        return Err(StoreError::NewerSchema { found: version, known: MIGRATIONS.len() });
    }
    for sql in MIGRATIONS.iter().skip(version as usize) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(*sql)).execute(&mut *tx).await?;
    }
    sqlx::query("INSERT INTO steward_schema (id, version) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET version = excluded.version")
        .bind(MIGRATIONS.len() as i64)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

pub(super) fn unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

super::cluster::cluster_store!(PostgresStore, pool, pool, "SELECT version FROM steward_schema WHERE id = 1");

#[async_trait]
impl Store for PostgresStore {
    /// A second pool whose connections carry the fence as the `steward.fence` setting;
    /// the database checks it before every write (see `cluster.sql`), so no write path
    /// can forget to. Opened lazily: it costs nothing until the leader writes.
    fn fenced(&self, fence: Fence) -> std::sync::Arc<dyn Store> {
        let options = self.options.clone().options([("steward.fence", format!("{}:{}", fence.term, fence.holder))]);
        std::sync::Arc::new(PostgresStore { pool: pool_options(&options).connect_lazy_with(options), options: self.options.clone() })
    }

    async fn create_token(&self, name: &str, role: Role, secret_hash: &str) -> Result<TokenInfo, StoreError> {
        let now = steward_model::clock::now();
        let result = sqlx::query("INSERT INTO api_tokens (name, role, secret_hash, created_at_ms) VALUES ($1, $2, $3, $4)")
            .bind(name)
            .bind(role.as_str())
            .bind(secret_hash)
            .bind(ms(now))
            .execute(&self.pool)
            .await;
        match result {
            Ok(_) => Ok(TokenInfo { name: name.to_string(), role, created_at: time(ms(now)), revoked_at: None }),
            Err(e) if unique_violation(&e) => Err(StoreError::NameTaken { kind: "token", name: name.to_string() }),
            Err(e) => Err(e.into()),
        }
    }

    async fn token_by_hash(&self, secret_hash: &str) -> Result<Option<TokenInfo>, StoreError> {
        let row = sqlx::query("SELECT * FROM api_tokens WHERE secret_hash = $1 AND revoked_at_ms IS NULL")
            .bind(secret_hash)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(token_row).transpose()
    }

    async fn list_tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        let rows = sqlx::query("SELECT * FROM api_tokens ORDER BY id").fetch_all(&self.pool).await?;
        rows.iter().map(token_row).collect()
    }

    async fn revoke_token(&self, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE api_tokens SET revoked_at_ms = $1 WHERE name = $2 AND revoked_at_ms IS NULL")
            .bind(ms(steward_model::clock::now()))
            .bind(name)
            .execute(&self.pool)
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
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM console_sessions WHERE expires_ms <= $1").bind(now).execute(&mut *tx).await?;
        let Some(token) = sqlx::query("SELECT * FROM api_tokens WHERE secret_hash = $1 AND revoked_at_ms IS NULL")
            .bind(token_hash)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        sqlx::query("INSERT INTO console_sessions (id_hash, token_id, csrf, opened_ms, expires_ms) VALUES ($1, $2, $3, $4, $5)")
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
             WHERE s.id_hash = $1 AND s.expires_ms > $2 AND t.revoked_at_ms IS NULL",
        )
        .bind(id_hash)
        .bind(ms(now))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(session_row).transpose()
    }

    async fn end_session(&self, id_hash: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM console_sessions WHERE id_hash = $1").bind(id_hash).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn probe_writable(&self) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO readiness_probe (id, at_ms) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET at_ms = excluded.at_ms")
            .bind(ms(steward_model::clock::now()))
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[async_trait]
impl CheckStore for PostgresStore {
    async fn add_slo_events(&self, events: &[SloEvents]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for e in events {
            sqlx::query(
                "INSERT INTO slo_buckets AS b (slo, start_minute, minutes, good, total) VALUES ($1, $2, 1, $3, $4)
                 ON CONFLICT (slo, start_minute) DO UPDATE SET good = b.good + excluded.good, total = b.total + excluded.total",
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
        let rows = sqlx::query("SELECT * FROM slo_buckets WHERE slo = $1 AND start_minute >= $2 ORDER BY start_minute")
            .bind(slo)
            .bind(from)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(slo_bucket_row).collect()
    }

    async fn roll_up_slo(&self, slo: &str, before: i64, rolled: &[Bucket], drop_before: i64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM slo_buckets WHERE slo = $1 AND minutes = 1 AND start_minute < $2")
            .bind(slo)
            .bind(before)
            .execute(&mut *tx)
            .await?;
        for b in rolled {
            sqlx::query(
                "INSERT INTO slo_buckets AS r (slo, start_minute, minutes, good, total, good_slices, slices) VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (slo, start_minute) DO UPDATE SET good = r.good + excluded.good, total = r.total + excluded.total,
                   good_slices = r.good_slices + excluded.good_slices, slices = r.slices + excluded.slices",
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
        sqlx::query("DELETE FROM slo_buckets WHERE slo = $1 AND start_minute < $2").bind(slo).bind(drop_before).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn record_heartbeat(&self, check: &str, at: DateTime<Utc>, ok: bool) -> Result<Heartbeat, StoreError> {
        let (ok_ms, fail_ms) = if ok { (Some(ms(at)), None) } else { (None, Some(ms(at))) };
        let row = sqlx::query(
            "INSERT INTO heartbeats AS h (check_name, watching_since_ms, last_ok_ms, last_fail_ms, signals) VALUES ($1, $2, $3, $4, 1)
             ON CONFLICT (check_name) DO UPDATE SET
               last_ok_ms = greatest(h.last_ok_ms, excluded.last_ok_ms),
               last_fail_ms = greatest(h.last_fail_ms, excluded.last_fail_ms),
               signals = h.signals + 1
             RETURNING *",
        )
        .bind(check)
        .bind(ms(at))
        .bind(ok_ms)
        .bind(fail_ms)
        .fetch_one(&self.pool)
        .await?;
        heartbeat_row(&row)
    }

    async fn heartbeat_of(&self, check: &str, now: DateTime<Utc>) -> Result<Heartbeat, StoreError> {
        if let Some(row) = sqlx::query("SELECT * FROM heartbeats WHERE check_name = $1").bind(check).fetch_optional(&self.pool).await? {
            return heartbeat_row(&row);
        }
        sqlx::query("INSERT INTO heartbeats (check_name, watching_since_ms) VALUES ($1, $2) ON CONFLICT (check_name) DO NOTHING")
            .bind(check)
            .bind(ms(now))
            .execute(&self.pool)
            .await?;
        let row = sqlx::query("SELECT * FROM heartbeats WHERE check_name = $1").bind(check).fetch_one(&self.pool).await?;
        heartbeat_row(&row)
    }

    async fn load_states(&self) -> Result<Vec<CheckState>, StoreError> {
        let rows = sqlx::query("SELECT * FROM check_states").fetch_all(&self.pool).await?;
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
        let mut tx = self.pool.begin().await?;
        for chunk in runs.chunks(ROWS_PER_STATEMENT) {
            let mut q =
                QueryBuilder::<Postgres>::new("INSERT INTO check_results (check_name, at_ms, healthy, latency_ms, reason, observed) ");
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
        // Only the newest state of each check in the batch matters (and one statement
        // may not upsert a row twice).
        let mut latest: HashMap<&str, &CheckState> = HashMap::with_capacity(runs.len());
        for run in runs {
            latest.insert(&run.state.check, &run.state);
        }
        let mut states: Vec<&CheckState> = latest.into_values().collect();
        // In one order, so two writers' batches lock rows in the same order: no deadlock.
        states.sort_by(|a, b| a.check.cmp(&b.check));
        for chunk in states.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Postgres>::new(
                "INSERT INTO check_states (check_name, health, since_ms, consecutive_successes, consecutive_failures, last_run_ms, \
                 last_latency_ms, last_reason) ",
            );
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
        let transitions: Vec<&Transition> = runs.iter().filter_map(|r| r.transition.as_ref()).collect();
        for chunk in transitions.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Postgres>::new("INSERT INTO check_transitions (check_name, at_ms, from_health, to_health, reason) ");
            q.push_values(chunk, |mut b, t| {
                b.push_bind(&t.check).push_bind(ms(t.at)).push_bind(t.from.as_str()).push_bind(t.to.as_str()).push_bind(&t.reason);
            });
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn results_since(&self, check: &str, since: DateTime<Utc>) -> Result<Vec<ResultRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT at_ms, healthy, latency_ms, reason, observed FROM check_results WHERE check_name = $1 AND at_ms >= $2 ORDER BY at_ms DESC",
        )
        .bind(check)
        .bind(ms(since))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(result_row).collect()
    }

    async fn history(&self, check: &str, limit: u32, before: Option<DateTime<Utc>>) -> Result<Vec<ResultRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT at_ms, healthy, latency_ms, reason, observed FROM check_results WHERE check_name = $1 AND at_ms < $2 \
             ORDER BY at_ms DESC LIMIT $3",
        )
        .bind(check)
        .bind(before.map_or(i64::MAX, ms))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(result_row).collect()
    }

    async fn transitions(&self, check: Option<&str>, limit: u32) -> Result<Vec<Transition>, StoreError> {
        let rows = sqlx::query("SELECT * FROM check_transitions WHERE ($1::text IS NULL OR check_name = $1) ORDER BY id DESC LIMIT $2")
            .bind(check)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
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
                    "SELECT b, sum(runs)::bigint AS runs, sum(failures)::bigint AS failures,
                            sum(latency_sum_ms)::float8 AS latency_sum_ms, max(latency_max_ms)::float8 AS latency_max_ms FROM (
                       SELECT (",
                    $at,
                    " / $1) * $1 AS b, runs::bigint AS runs, failures::bigint AS failures, latency_sum_ms, latency_max_ms
                       FROM ",
                    $table,
                    " WHERE check_name = $2 AND ",
                    $at,
                    " >= $3
                       UNION ALL
                       SELECT (at_ms / $1) * $1, count(*), count(*) FILTER (WHERE NOT healthy), sum(latency_ms), max(latency_ms)
                       FROM check_results WHERE check_name = $2 AND at_ms >= $3 GROUP BY 1
                     ) u GROUP BY b ORDER BY b"
                )
            };
        }
        let sql = if crate::whole_days(bucket_ms) { sql!("check_days", "day_ms") } else { sql!("check_rollups", "hour_ms") };
        let rows = sqlx::query(sql).bind(bucket_ms.max(1)).bind(check).bind(ms(since)).fetch_all(&self.pool).await?;
        rows.iter().map(bucket_row).collect()
    }

    async fn daily_by_group(&self, groups: &HashMap<String, String>, since: DateTime<Utc>) -> Result<Vec<GroupDay>, StoreError> {
        // The map goes in as two arrays and is joined by check name, so each check's days
        // are read through `check_days`' key and its raw results through their index.
        let (checks, names): (Vec<&str>, Vec<&str>) = groups.iter().map(|(c, g)| (c.as_str(), g.as_str())).unzip();
        let rows = sqlx::query(
            "WITH members AS (SELECT * FROM unnest($1::text[], $2::text[]) AS m (check_name, grp))
             SELECT grp, d, sum(runs)::bigint AS runs, sum(failures)::bigint AS failures FROM (
               SELECT m.grp, s.day_ms AS d, s.runs::bigint AS runs, s.failures::bigint AS failures
               FROM members m JOIN check_days s ON s.check_name = m.check_name AND s.day_ms >= $3
               UNION ALL
               SELECT m.grp, (r.at_ms / $4) * $4, count(*), count(*) FILTER (WHERE NOT r.healthy)
               FROM members m JOIN check_results r ON r.check_name = m.check_name AND r.at_ms >= $3 GROUP BY 1, 2
             ) u GROUP BY grp, d ORDER BY grp, d",
        )
        .bind(&checks)
        .bind(&names)
        .bind(ms(since))
        .bind(crate::DAY_MS)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(group_day_row).collect()
    }

    async fn rollups(&self, check: &str, since: DateTime<Utc>) -> Result<Vec<Rollup>, StoreError> {
        let rows = sqlx::query("SELECT * FROM check_rollups WHERE check_name = $1 AND hour_ms >= $2 ORDER BY hour_ms")
            .bind(check)
            .bind(ms(since))
            .fetch_all(&self.pool)
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
        let mut tx = self.pool.begin().await?;
        // The rows folded are exactly the rows deleted (one statement): a result another
        // replica writes meanwhile is neither lost nor counted twice.
        let folded: i64 = sqlx::query_scalar(
            "WITH gone AS (DELETE FROM check_results WHERE at_ms < $1 RETURNING *),
             folded AS (
                 INSERT INTO check_rollups (check_name, hour_ms, runs, failures, latency_sum_ms, latency_max_ms)
                 SELECT check_name, (at_ms / 3600000) * 3600000, count(*), count(*) FILTER (WHERE NOT healthy),
                        sum(latency_ms), max(latency_ms)
                 FROM gone GROUP BY 1, 2
                 ON CONFLICT (check_name, hour_ms) DO UPDATE SET runs = check_rollups.runs + excluded.runs,
                   failures = check_rollups.failures + excluded.failures,
                   latency_sum_ms = check_rollups.latency_sum_ms + excluded.latency_sum_ms,
                   latency_max_ms = GREATEST(check_rollups.latency_max_ms, excluded.latency_max_ms)),
             days AS (
                 INSERT INTO check_days (check_name, day_ms, runs, failures, latency_sum_ms, latency_max_ms)
                 SELECT check_name, (at_ms / 86400000) * 86400000, count(*), count(*) FILTER (WHERE NOT healthy),
                        sum(latency_ms), max(latency_ms)
                 FROM gone GROUP BY 1, 2
                 ON CONFLICT (check_name, day_ms) DO UPDATE SET runs = check_days.runs + excluded.runs,
                   failures = check_days.failures + excluded.failures,
                   latency_sum_ms = check_days.latency_sum_ms + excluded.latency_sum_ms,
                   latency_max_ms = GREATEST(check_days.latency_max_ms, excluded.latency_max_ms))
             SELECT count(*) FROM gone",
        )
        .bind(ms(raw_before))
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM check_rollups WHERE hour_ms < $1").bind(ms(rollups_before)).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM check_days WHERE day_ms < $1").bind(ms(rollups_before)).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(folded as u64)
    }

    async fn retain_states(&self, checks: &[String]) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM check_states WHERE NOT (check_name = ANY($1))").bind(checks).execute(&self.pool).await?;
        Ok(())
    }
}

#[async_trait]
impl KeyStore for PostgresStore {
    async fn server_key(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        let fresh: [u8; 32] = rand::random();
        sqlx::query("INSERT INTO server_keys (name, key, created_ms) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(&fresh[..])
            .bind(ms(steward_model::clock::now()))
            .execute(&self.pool)
            .await?;
        Ok(sqlx::query_scalar("SELECT key FROM server_keys WHERE name = $1").bind(name).fetch_one(&self.pool).await?)
    }

    async fn rotate_server_key(&self, name: &str) -> Result<(), StoreError> {
        let fresh: [u8; 32] = rand::random();
        sqlx::query(
            "INSERT INTO server_keys (name, key, created_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET key = excluded.key, created_ms = excluded.created_ms",
        )
        .bind(name)
        .bind(&fresh[..])
        .bind(ms(steward_model::clock::now()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ClusterStore;

    /// A database from before the daily sums has its hourly rollups summed into days by
    /// the upgrade, so its 90-day history reads the same afterwards.
    #[tokio::test]
    async fn upgrading_to_the_daily_sums_fills_them_from_the_rollups() {
        let url = steward_testkit::shared_database();
        {
            let pool = PgPool::connect(&url).await.unwrap();
            let before_days = MIGRATIONS.iter().position(|m| m.contains("CREATE TABLE check_days")).unwrap();
            for sql in &MIGRATIONS[..before_days] {
                sqlx::raw_sql(sqlx::AssertSqlSafe(*sql)).execute(&pool).await.unwrap();
            }
            sqlx::query("CREATE TABLE steward_schema (id BIGINT PRIMARY KEY CHECK (id = 1), version BIGINT NOT NULL)")
                .execute(&pool)
                .await
                .unwrap();
            sqlx::query("INSERT INTO steward_schema VALUES (1, $1)").bind(before_days as i64).execute(&pool).await.unwrap();
            for (check, hour, runs, failures) in [("c", 10_i64, 60_i64, 15_i64), ("c", 23, 60, 0), ("c", 24, 60, 60), ("d", 10, 5, 5)] {
                sqlx::query("INSERT INTO check_rollups VALUES ($1, $2, $3, $4, 600, 30)")
                    .bind(check)
                    .bind(hour * 3_600_000)
                    .bind(runs)
                    .bind(failures)
                    .execute(&pool)
                    .await
                    .unwrap();
            }
            pool.close().await;
        }
        let store = PostgresStore::connect(&url).await.unwrap();
        let since = DateTime::<Utc>::UNIX_EPOCH;
        let days: Vec<_> = store.buckets("c", since, crate::DAY_MS).await.unwrap().iter().map(|b| (b.runs, b.failures)).collect();
        assert_eq!(days, [(120, 15), (60, 60)]);
        assert_eq!(store.buckets("d", since, crate::DAY_MS).await.unwrap()[0].failures, 5);
        assert_eq!(store.schema_version().await.unwrap(), PostgresStore::SCHEMA_VERSION);
    }
}
