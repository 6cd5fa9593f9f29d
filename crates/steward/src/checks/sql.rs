//! `postgres` and `mysql`: connect, run the query, expose the first row's columns.
//!
//! Each run opens a fresh connection on purpose: "can a client connect?" is half of
//! what the check is for, and a pooled connection would hide a full `max_connections`.

use std::str::FromStr;

use serde_json::{Map, Value as Json};
use sqlx::{Column, ConnectOptions, Connection, Database, Executor, IntoArguments, Row, TypeInfo};

use crate::config::{CheckSpec, SqlProbe};

/// Reads column `i` as the first Rust type the driver agrees to decode it into.
macro_rules! column_value {
    ($row:expr, $i:expr, $($ty:ty => $conv:expr),+ $(,)?) => {{
        let raw_null = $row.try_get_raw($i).map(|v| sqlx::ValueRef::is_null(&v)).unwrap_or(false);
        if raw_null {
            Some(Json::Null)
        } else {
            None$(.or_else(|| $row.try_get::<$ty, _>($i).ok().map($conv)))+
        }
    }};
}

pub(crate) async fn observe_postgres(p: &SqlProbe, spec: &CheckSpec) -> Result<Map<String, Json>, String> {
    let opts = sqlx::postgres::PgConnectOptions::from_str(p.url.expose())
        .map_err(|e| format!("invalid postgres url: {e}"))?
        .application_name("steward")
        .statement_cache_capacity(0)
        .log_statements(tracing::log::LevelFilter::Trace);
    let conn = opts.connect().await.map_err(|e| format!("cannot connect: {}", db_error(&e)))?;
    let rows = fetch(conn, p, spec).await?;
    Ok(observation(&rows, spec, pg_column))
}

/// Column `i` of a PostgreSQL row as JSON; `None` for types JSON cannot hold.
pub(crate) fn pg_column(row: &sqlx::postgres::PgRow, i: usize) -> Option<Json> {
    column_value!(row, i,
        i64 => Json::from, i32 => Json::from, i16 => Json::from,
        f64 => Json::from, f32 => Json::from,
        sqlx::types::Decimal => |d: sqlx::types::Decimal| decimal(&d.to_string()),
        bool => Json::from, String => Json::from,
    )
}

pub(crate) async fn observe_mysql(p: &SqlProbe, spec: &CheckSpec) -> Result<Map<String, Json>, String> {
    let opts = sqlx::mysql::MySqlConnectOptions::from_str(p.url.expose())
        .map_err(|e| format!("invalid mysql url: {e}"))?
        .statement_cache_capacity(0)
        .log_statements(tracing::log::LevelFilter::Trace);
    let conn = opts.connect().await.map_err(|e| format!("cannot connect: {}", db_error(&e)))?;
    let rows = fetch(conn, p, spec).await?;
    Ok(observation(&rows, spec, mysql_column))
}

/// Column `i` of a MySQL/MariaDB row as JSON; `None` for types JSON cannot hold.
pub(crate) fn mysql_column(row: &sqlx::mysql::MySqlRow, i: usize) -> Option<Json> {
    column_value!(row, i,
        i64 => Json::from, u64 => Json::from, i32 => Json::from,
        f64 => Json::from, f32 => Json::from,
        sqlx::types::Decimal => |d: sqlx::types::Decimal| decimal(&d.to_string()),
        bool => Json::from, String => Json::from,
        Vec<u8> => |b: Vec<u8>| Json::from(String::from_utf8_lossy(&b).into_owned()),
    )
}

/// Runs the probe's query: every row only when a condition reads `rows`, otherwise
/// just the first, so a check never pulls a large result set it does not look at.
async fn fetch<C>(mut conn: C, p: &SqlProbe, spec: &CheckSpec) -> Result<Vec<<C::Database as Database>::Row>, String>
where
    C: Connection,
    for<'c> &'c mut C: Executor<'c, Database = C::Database>,
    <C::Database as Database>::Arguments: IntoArguments<C::Database>,
{
    let query = sqlx::query(sqlx::AssertSqlSafe(p.query.as_str()));
    let rows = if spec.reads("rows") {
        query.fetch_all(&mut conn).await
    } else {
        query.fetch_optional(&mut conn).await.map(|r| r.into_iter().collect())
    }
    .map_err(|e| format!("query failed: {}", db_error(&e)))?;
    let _ = conn.close().await;
    Ok(rows)
}

/// What conditions see: `row` (the first row's decodable columns), `rows` when read,
/// and `_unsupported` naming columns of types `decode` could not turn into JSON.
fn observation<R: Row>(rows: &[R], spec: &CheckSpec, decode: impl Fn(&R, usize) -> Option<Json>) -> Map<String, Json> {
    let mut obs = Map::new();
    if spec.reads("rows") {
        obs.insert("rows".into(), Json::from(rows.len()));
    }
    match rows.first() {
        Some(row) => {
            let mut values = Map::new();
            let mut unsupported = Map::new();
            for (i, col) in row.columns().iter().enumerate() {
                match decode(row, i) {
                    Some(v) => values.insert(col.name().to_string(), v),
                    None => unsupported.insert(col.name().to_string(), Json::from(col.type_info().name())),
                };
            }
            obs.insert("row".into(), Json::Object(values));
            if !unsupported.is_empty() {
                obs.insert("_unsupported".into(), Json::Object(unsupported));
            }
        }
        // `row` stays absent: a condition on it then says the field is missing, and the
        // observation's keys show that the query returned no row.
        None => {
            obs.insert("rows".into(), Json::from(0));
        }
    }
    obs
}

fn decimal(text: &str) -> Json {
    text.parse::<f64>().map(Json::from).unwrap_or_else(|_| Json::from(text.to_string()))
}

pub(crate) fn db_error(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => db.message().to_string(),
        sqlx::Error::Io(io) => io.to_string(),
        other => other.to_string(),
    }
}
