//! Moving an installation from SQLite to PostgreSQL whole (`steward store copy`).
//!
//! Table by table, row by row with their ids, in one transaction on the destination:
//! it commits only when every table's count on PostgreSQL equals SQLite's, so a copy
//! that fails half-way leaves the destination as empty as it found it. Both schemas
//! have the same tables and column names (see `postgres/schema.sql`); values are
//! converted by the destination column's type (SQLite keeps booleans as integers).

use sqlx::postgres::Postgres;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row};

use super::{PostgresStore, SqliteStore, StoreError};

/// Every table of the state, parents before children (incidents before their alerts).
pub const TABLES: &[&str] = &[
    "api_tokens",
    "server_keys",
    "check_states",
    "check_results",
    "check_transitions",
    "check_rollups",
    "check_days",
    "alerts",
    "alert_events",
    "silences",
    "notify_log",
    "outbox",
    "outbox_alerts",
    "incidents",
    "incident_alerts",
    "incident_timeline",
    "action_items",
    "oncall_overrides",
    "runs",
    "run_steps",
    "run_events",
    "run_approvals",
    "locks",
    "backups",
    "backup_verifications",
    "backup_restores",
    "leadership",
    "heartbeats",
    "slo_buckets",
];

/// Tables left behind on purpose: they live only as long as the processes that use
/// them. Console sessions end (people sign in again, on the new store); readiness
/// probes and replica membership are rewritten by the first server to start.
pub const NOT_COPIED: &[&str] = &["console_sessions", "readiness_probe", "replicas"];

/// Rows read and written per statement: at most 21 columns × 1,000 bound values stays
/// under PostgreSQL's 65,535.
const BATCH: i64 = 1000;

#[derive(Debug, Clone, PartialEq)]
pub struct TableCount {
    pub table: &'static str,
    /// Rows in the SQLite table.
    pub source: u64,
    /// Rows in the PostgreSQL table after the copy.
    pub copied: u64,
}

#[derive(Debug, Clone, Default)]
pub struct CopyReport {
    pub tables: Vec<TableCount>,
}

impl CopyReport {
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|t| t.copied).sum()
    }
}

/// A destination column and how a SQLite value becomes its value.
struct Column {
    name: String,
    kind: Kind,
}

#[derive(Clone, Copy)]
enum Kind {
    Integer,
    Boolean,
    Real,
    Text,
    Bytes,
}

/// Copies every table of `from` into `to`, which must hold no state yet. `progress` is
/// told each table's row count as it is done.
pub async fn sqlite_to_postgres(from: &SqliteStore, to: &PostgresStore, progress: impl Fn(&str, u64)) -> Result<CopyReport, StoreError> {
    let mut tx = to.pool.begin().await?;
    for table in TABLES {
        let any: bool =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT EXISTS (SELECT 1 FROM {table})"))).fetch_one(&mut *tx).await?;
        if any {
            return Err(StoreError::NotEmpty { what: format!("the destination's `{table}` table") });
        }
    }
    let mut report = CopyReport::default();
    for table in TABLES {
        let columns = columns(&mut tx, from, table).await?;
        let list = columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ");
        let mut after = 0i64;
        loop {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT rowid AS steward_rowid, {list} FROM {table} WHERE rowid > ? ORDER BY rowid LIMIT ?"
            )))
            .bind(after)
            .bind(BATCH)
            .fetch_all(&from.reader)
            .await?;
            let Some(last) = rows.last() else { break };
            after = last.try_get("steward_rowid")?;
            let mut q = QueryBuilder::<Postgres>::new(format!("INSERT INTO {table} ({list}) "));
            let mut failed = None;
            q.push_values(&rows, |mut b, row| {
                for (i, c) in columns.iter().enumerate() {
                    // Column 0 is the rowid.
                    if let Err(e) = bind(&mut b, row, i + 1, c) {
                        failed.get_or_insert(e);
                    }
                }
            });
            if let Some(e) = failed {
                return Err(e);
            }
            q.build().execute(&mut *tx).await?;
        }
        let source: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}"))).fetch_one(&from.reader).await?;
        let copied: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}"))).fetch_one(&mut *tx).await?;
        if source != copied {
            return Err(StoreError::Internal(format!("`{table}`: {source} rows in SQLite but {copied} copied; nothing was committed")));
        }
        progress(table, copied as u64);
        report.tables.push(TableCount { table, source: source as u64, copied: copied as u64 });
    }
    // Ids were copied as they were: the destination's generators continue after them,
    // so the next incident is numbered after the last one moved.
    for table in TABLES {
        let identity: Option<String> = sqlx::query_scalar(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1 AND column_name = 'id' AND is_identity = 'YES'",
        )
        .bind(table)
        .fetch_optional(&mut *tx)
        .await?;
        if identity.is_some() {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE(max(id), 0) + 1, false) FROM {table}"
            )))
            .execute(&mut *tx)
            .await?;
        }
    }
    sqlx::query("SELECT setval('run_steps_seq', COALESCE(max(seq), 0) + 1, false) FROM run_steps").execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(report)
}

/// The destination's columns of `table` that the source has too, with their types.
async fn columns(tx: &mut sqlx::PgConnection, from: &SqliteStore, table: &str) -> Result<Vec<Column>, StoreError> {
    let source: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info(?)").bind(table).fetch_all(&from.reader).await?;
    let destination: Vec<(String, String)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(&mut *tx)
    .await?;
    destination
        .into_iter()
        .filter(|(name, _)| source.contains(name))
        .map(|(name, data_type)| {
            let kind = match data_type.as_str() {
                "bigint" | "integer" => Kind::Integer,
                "boolean" => Kind::Boolean,
                "double precision" => Kind::Real,
                "text" => Kind::Text,
                "bytea" => Kind::Bytes,
                other => return Err(StoreError::Internal(format!("`{table}.{name}` has type {other}, which the copy does not know"))),
            };
            Ok(Column { name, kind })
        })
        .collect()
}

/// Binds SQLite's value of column `i` as the destination column's type. Unchecked
/// reads: SQLite's column types are affinities, and the destination type decides.
fn bind(
    b: &mut sqlx::query_builder::Separated<'_, Postgres, &'static str>,
    row: &SqliteRow,
    i: usize,
    c: &Column,
) -> Result<(), StoreError> {
    let damaged = |e: sqlx::Error| StoreError::Corrupt(format!("column `{}`: {e}", c.name));
    match c.kind {
        Kind::Integer => {
            b.push_bind(row.try_get_unchecked::<Option<i64>, _>(i).map_err(damaged)?);
        }
        Kind::Boolean => {
            b.push_bind(row.try_get_unchecked::<Option<i64>, _>(i).map_err(damaged)?.map(|v| v != 0));
        }
        Kind::Real => {
            b.push_bind(row.try_get_unchecked::<Option<f64>, _>(i).map_err(damaged)?);
        }
        Kind::Text => {
            b.push_bind(row.try_get_unchecked::<Option<String>, _>(i).map_err(damaged)?);
        }
        Kind::Bytes => {
            b.push_bind(row.try_get_unchecked::<Option<Vec<u8>>, _>(i).map_err(damaged)?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table added without a thought for `steward store copy` would be lost on the
    /// move to PostgreSQL (as push checks' signals once were): every table SQLite holds
    /// is copied or named as not copied.
    #[tokio::test]
    async fn every_table_is_copied_or_said_why_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let tables: Vec<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
                .fetch_all(&store.reader)
                .await
                .unwrap();
        let missing: Vec<&String> = tables.iter().filter(|t| !TABLES.contains(&t.as_str()) && !NOT_COPIED.contains(&t.as_str())).collect();
        assert!(missing.is_empty(), "tables neither copied nor left on purpose: {missing:?}");
        for t in TABLES.iter().chain(NOT_COPIED) {
            assert!(tables.iter().any(|x| x == t), "`{t}` is listed but SQLite has no such table");
        }
    }
}
