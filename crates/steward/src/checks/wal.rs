//! `wal`: a PostgreSQL policy's WAL archive, read from its repository — the archive
//! lag (age of the newest archived segment) and its continuity (no segment missing
//! between the oldest and the newest, across timelines) — and PostgreSQL's own view of
//! its pushes (`pg_stat_archiver`, through the policy's URL): a push failing right now
//! fails the check at once, before it shows as lag. A stalled `archive_command` shows
//! as lag; a lost segment as a gap, which no recovery crosses. Conditions can read
//! `wal.*`.

use std::sync::Arc;

use serde_json::{Map, Value as Json, json};

use chrono::{DateTime, Utc};
use sqlx::Connection;

use crate::backups::wal::WalArchive;
use crate::config::backups::BackupSource;
use crate::config::duration::format_duration;
use crate::config::{Config, WalProbe};

pub(super) async fn observe(config: Option<&Arc<Config>>, probe: &WalProbe) -> Result<Map<String, Json>, String> {
    let config = config.ok_or("wal checks read the policy's repository: run them with the configuration that defines it")?;
    let archive = WalArchive::open(config, &probe.policy).map_err(|e| e.to_string())?;
    let (c, newest) = archive.status().await.map_err(|e| format!("cannot read the WAL archive of `{}`: {e}", probe.policy))?;
    let archiver = match config.backup(&probe.policy).map(|p| &p.source) {
        Some(BackupSource::Postgres(src)) => archiver(src.url.expose()).await,
        _ => None,
    };
    let now = crate::clock::now();
    let age = newest.as_ref().map(|r| (now - r.archived_at).num_seconds().max(0));
    let wal = json!({
        "policy": probe.policy,
        "timeline": c.timeline,
        "newest": c.last,
        "age_seconds": age,
        "segments": c.expected,
        "missing_count": c.missing_count,
        "first_missing": c.missing.first(),
        "continuous": c.continuous,
        "archiver": archiver.as_ref().map(|a| json!({
            "failed_count": a.failed_count,
            "last_failed_wal": a.last_failed_wal,
            "last_failed_at": a.last_failed_at,
            "last_archived_at": a.last_archived_at,
            "failing": a.failing(),
        })),
    });
    if let Some(a) = archiver.as_ref().filter(|a| a.failing()) {
        return Err(format!(
            "PostgreSQL's pushes into the WAL archive of `{}` are failing: {} failed at {} ({} failures counted); it keeps the WAL in pg_wal and retries — its log says why",
            probe.policy,
            a.last_failed_wal.as_deref().unwrap_or("a file"),
            a.last_failed_at.map_or("?".into(), |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string()),
            a.failed_count
        ));
    }
    let max = format_duration(probe.max_age);
    let (Some(newest), Some(age)) = (newest, age) else {
        return Err(format!("the WAL archive of `{}` holds no segment yet (max_age {max}); is archive_command set?", probe.policy));
    };
    let old = std::time::Duration::from_secs(age.unsigned_abs());
    if old > probe.max_age {
        return Err(format!(
            "the newest archived WAL segment of `{}` ({}) is {} old, more than max_age {max}: archiving is stalled or failing (see pg_stat_archiver)",
            probe.policy,
            newest.file,
            format_duration(old)
        ));
    }
    if !c.continuous {
        return Err(format!(
            "{} WAL segment(s) missing in the archive of `{}`, the first {}: recovery cannot cross them (steward wal verify lists them)",
            c.missing_count,
            probe.policy,
            c.missing.first().map_or("?", String::as_str)
        ));
    }
    let mut obs = Map::new();
    obs.insert("wal".into(), wal);
    Ok(obs)
}

/// PostgreSQL's archiver statistics.
struct Archiver {
    failed_count: i64,
    last_failed_wal: Option<String>,
    last_failed_at: Option<DateTime<Utc>>,
    last_archived_at: Option<DateTime<Utc>>,
}

impl Archiver {
    /// The newest attempt failed: archiving is failing now (a failure followed by a
    /// success is history).
    fn failing(&self) -> bool {
        match (self.last_failed_at, self.last_archived_at) {
            (Some(failed), Some(archived)) => failed > archived,
            (Some(_), None) => true,
            _ => false,
        }
    }
}

/// `pg_stat_archiver` through the policy's URL; `None` when the server cannot be asked
/// (then the archive alone speaks: an unreachable server is a `postgres` check's job).
async fn archiver(url: &str) -> Option<Archiver> {
    let connect = sqlx::PgConnection::connect(url);
    let mut conn = tokio::time::timeout(std::time::Duration::from_secs(5), connect).await.ok()?.ok()?;
    let row: (i64, Option<String>, Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT failed_count, last_failed_wal, (extract(epoch FROM last_failed_time) * 1000000)::bigint, \
         (extract(epoch FROM last_archived_time) * 1000000)::bigint FROM pg_stat_archiver",
    )
    .fetch_one(&mut conn)
    .await
    .ok()?;
    let _ = conn.close().await;
    let at = |us: Option<i64>| us.and_then(DateTime::from_timestamp_micros);
    Some(Archiver { failed_count: row.0, last_failed_wal: row.1, last_failed_at: at(row.2), last_archived_at: at(row.3) })
}
