//! Point-in-time restore of a PostgreSQL cluster backed up physically: the base
//! backup that serves the target, its WAL from the archive, a recovery that stops at
//! the target, and the proof that it did.
//!
//! **Safety rules**, as for every restore: the plan is computed and shown first
//! (`--dry-run` stops there); a target directory with files is refused without
//! `--force`, and never replaced while a server runs in it; with `--force` it is
//! moved aside, never deleted. The cluster is restored and recovered in a directory
//! beside the target and moved into place only once recovery reached the target, so a
//! failed restore leaves the target as it was. Every restore is recorded.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value as Json, json};

use super::manifest::Manifest;
use super::repository::Repo;
use super::service::{BackupError, Backups, RestoreOptions, check_stored, encryption, keep_alive};
use super::sources::physical::{self, BASE_TAR, BaseFacts, Recovering, Recovery, RecoveryTarget};
use super::sources::{Comparison, Progress, SourceError, read_object};
use super::wal::{WalArchive, parse_segment, segment_name};
use super::{BackupQuery, BackupRecord, BackupStatus, NewRestore};
use crate::config::Config;
use crate::config::backups::{BackupPolicy, BackupSource, PgMode, PostgresSource};

/// What a point-in-time restore will do (dry run) or did.
#[derive(Debug, Clone, Serialize)]
pub struct PitrReport {
    pub policy: String,
    /// The base backup it starts from.
    pub backup: String,
    pub target: String,
    pub directory: String,
    pub dry_run: bool,
    pub target_had_data: bool,
    pub target_state: String,
    pub base: BaseFacts,
    pub wal: WalPlan,
    pub plain_bytes: u64,
    /// What will be (or was) done, in order.
    pub steps: Vec<String>,
    /// Why the target might not be reached, known before starting.
    pub warnings: Vec<String>,
    pub recovery: Option<Recovery>,
    pub moved_aside: Option<String>,
    pub duration_ms: Option<u128>,
}

/// The WAL a restore replays.
#[derive(Debug, Clone, Serialize)]
pub struct WalPlan {
    /// The first segment recovery needs: the base backup's start.
    pub from: String,
    /// The newest segment archived, on the newest timeline.
    pub archived_to: Option<String>,
    pub newest_archived_at: Option<DateTime<Utc>>,
    /// Segments missing between `from` and `archived_to`: replay stops at the first.
    pub missing: Vec<String>,
}

/// A point-in-time restore, as `steward backup restore` asks for it.
pub struct PointRestore<'a> {
    pub policy: &'a str,
    /// Restore from this base backup rather than the newest that serves the target.
    pub base: Option<&'a str>,
    pub target: RecoveryTarget,
    /// The data directory to create (absolute).
    pub directory: &'a Path,
    /// The configuration file `restore_command` hands to `steward wal fetch`.
    pub config_path: &'a Path,
}

fn invalid(e: SourceError) -> BackupError {
    BackupError::Invalid(e.to_string())
}

/// The policy, which must back up PostgreSQL physically.
pub fn physical_policy<'c>(config: &'c Config, name: &str) -> Result<(&'c BackupPolicy, &'c PostgresSource), BackupError> {
    let policy = Backups::policy(config, name)?;
    match &policy.source {
        BackupSource::Postgres(p) if p.mode == PgMode::Physical => Ok((policy, p)),
        BackupSource::Postgres(_) => Err(BackupError::Invalid(format!(
            "policy `{name}` takes logical backups (pg_dump): they restore as they were taken, by ID. \
             Point-in-time restores need `mode: physical` and WAL archiving"
        ))),
        other => Err(BackupError::Invalid(format!("policy `{name}` backs up {}: point-in-time restores are PostgreSQL's", other.kind()))),
    }
}

/// The base backup to restore from: `pinned`, or the newest that serves `target`.
pub async fn choose_base(
    backups: &Backups,
    policy: &str,
    pinned: Option<&str>,
    target: &RecoveryTarget,
) -> Result<(BackupRecord, BaseFacts), BackupError> {
    let q = BackupQuery { policy: Some(policy.to_string()), status: Some(BackupStatus::Succeeded), limit: 10_000 };
    let list: Vec<(BackupRecord, BaseFacts)> =
        backups.store.backups(&q).await?.into_iter().filter_map(|r| BaseFacts::of(&r.facts).map(|f| (r, f))).collect();
    if let Some(id) = pinned {
        let (r, f) = list
            .into_iter()
            .find(|(r, _)| r.id == id)
            .ok_or_else(|| BackupError::NotFound(format!("backup {id} is not a successful physical backup of policy `{policy}`")))?;
        if !physical::serves(&f, target) {
            return Err(BackupError::Invalid(format!(
                "backup {id} ended at {} ({}), after {}: a restore must replay past the end of its base backup",
                f.stopped_at.format("%Y-%m-%d %H:%M:%S UTC"),
                physical::lsn_text(f.stop_lsn),
                target.describe()
            )));
        }
        return Ok((r, f));
    }
    let oldest = list.last().map(|(r, f)| {
        format!("; the oldest, {}, ended at {} ({})", r.id, f.stopped_at.format("%Y-%m-%d %H:%M:%S UTC"), physical::lsn_text(f.stop_lsn))
    });
    list.into_iter().find(|(_, f)| physical::serves(f, target)).ok_or_else(|| {
        BackupError::NotFound(match oldest {
            None => format!("policy `{policy}` has no successful physical backup yet: run `steward backup run {policy}`"),
            Some(o) => format!("no physical backup of `{policy}` ended before {}{o}", target.describe()),
        })
    })
}

/// The WAL from the base backup on: what is archived, and the holes.
async fn wal_plan(archive: &WalArchive, base: &BaseFacts) -> Result<WalPlan, BackupError> {
    let (continuity, newest) = archive.status().await.map_err(|e| BackupError::Failed(e.to_string()))?;
    let start = base.start_lsn / base.segment_size;
    let missing =
        continuity.missing.iter().filter(|m| parse_segment(m, base.segment_size).is_some_and(|(_, s)| s >= start)).cloned().collect();
    Ok(WalPlan {
        from: segment_name(base.timeline, start, base.segment_size),
        archived_to: continuity.last,
        newest_archived_at: newest.map(|r| r.archived_at),
        missing,
    })
}

/// What the target directory holds: (has files, a description, a server running there).
fn inspect_directory(dir: &Path) -> Result<(bool, String), BackupError> {
    if !dir.is_absolute() {
        return Err(BackupError::Invalid(format!(
            "a physical backup restores into a data directory: --to /ABSOLUTE/PATH (got {})",
            dir.display()
        )));
    }
    let pid = dir.join("postmaster.pid");
    if let Some(pid) = std::fs::read_to_string(&pid).ok().and_then(|t| t.lines().next()?.trim().parse::<i32>().ok())
        // SAFETY: signal 0 only asks whether the process exists.
        && unsafe { libc::kill(pid, 0) } == 0
    {
        return Err(BackupError::Invalid(format!(
            "a PostgreSQL server (pid {pid}) runs in {}: stop it first; steward never restores under a running server",
            dir.display()
        )));
    }
    let full = super::sources::directory::is_non_empty(dir);
    Ok((full, if full { format!("{} has files", dir.display()) } else { format!("{} is empty or missing", dir.display()) }))
}

impl Backups {
    /// Restores policy's cluster to a point in time (see the module's docs).
    pub async fn restore_point(
        &self,
        config: &Config,
        what: &PointRestore<'_>,
        how: RestoreOptions<'_>,
        progress: Arc<Progress>,
    ) -> Result<PitrReport, BackupError> {
        let (policy, source) = physical_policy(config, what.policy)?;
        let (record, base) = choose_base(self, &policy.name, what.base, &what.target).await?;
        let repo = Backups::repo(config, &record.repository)?;
        let manifest = repo
            .manifest(&record.policy, &record.id)
            .await
            .map_err(|e| BackupError::Failed(e.to_string()))?
            .ok_or_else(|| BackupError::Failed(format!("backup {}: its manifest is missing from the repository", record.id)))?;
        let archive = WalArchive::open(config, &policy.name).map_err(|e| BackupError::Invalid(e.to_string()))?;
        let wal = wal_plan(&archive, &base).await?;
        let (had_data, state) = inspect_directory(what.directory)?;
        if let (RecoveryTarget::Latest, Some(first)) = (&what.target, wal.missing.first()) {
            let hole = parse_segment(first, base.segment_size).map_or_else(String::new, |(_, s)| physical::lsn_text(s * base.segment_size));
            return Err(BackupError::Invalid(format!(
                "WAL segment {first} is missing from the archive after base backup {}: --latest would stop there without a word. \
                 Restore with --to-lsn {hole} (where the hole starts) to accept what comes before it",
                record.id
            )));
        }
        let mut warnings = Vec::new();
        if let Some(first) = wal.missing.first() {
            warnings.push(format!(
                "{} WAL segment(s) are missing after the base backup, the first {first}: replay stops there",
                wal.missing.len()
            ));
        }
        if let (RecoveryTarget::Time(t), Some(newest)) = (&what.target, wal.newest_archived_at)
            && newest < *t
        {
            warnings.push(format!(
                "the newest WAL was archived at {}, before the target: unless the cluster was idle since, the target is not reached",
                newest.format("%Y-%m-%d %H:%M:%S UTC")
            ));
        }
        let restoring = restoring_dir(what.directory, &record.id);
        let mut report = PitrReport {
            policy: policy.name.clone(),
            backup: record.id.clone(),
            target: what.target.describe(),
            directory: what.directory.display().to_string(),
            dry_run: how.dry_run,
            target_had_data: had_data,
            target_state: state.clone(),
            base: base.clone(),
            wal,
            plain_bytes: manifest.plain_bytes(),
            steps: vec![
                format!("read every stored object of backup {} and compare its checksum", record.id),
                format!("unpack {BASE_TAR} into {} and check it with pg_verifybackup", restoring.display()),
                format!(
                    "start PostgreSQL there privately with restore_command `steward wal fetch` (policy {}) and recover to {}",
                    policy.name,
                    what.target.describe()
                ),
                "confirm from the server that it reached the target and promoted; shut it down cleanly".into(),
                if had_data {
                    format!("move {} aside (kept) and put the restored cluster in its place", what.directory.display())
                } else {
                    format!("move the restored cluster to {}", what.directory.display())
                },
            ],
            warnings,
            recovery: None,
            moved_aside: None,
            duration_ms: None,
        };
        if how.skip_check {
            report.steps.remove(0);
        }
        if had_data && !how.force {
            return Err(BackupError::TargetNotEmpty(format!(
                "the target is not empty ({state}); nothing was changed. Restore elsewhere, or pass --force to move it aside"
            )));
        }
        if how.dry_run {
            return Ok(report);
        }
        // Whatever can still refuse does so before the restore is recorded.
        let identity = encryption(policy)?;
        let user = physical::connect_user(source).map_err(invalid)?;
        let restore_command = physical::restore_command(what.config_path, &policy.name).map_err(invalid)?;
        let rid = self
            .store
            .start_restore(&NewRestore {
                backup_id: record.id.clone(),
                policy: record.policy.clone(),
                target: report.directory.clone(),
                actor: how.actor.to_string(),
                replaced: had_data,
                hold_until: crate::clock::now() + chrono::Duration::hours(24),
            })
            .await?;
        let heartbeat = keep_alive(self.store.clone(), format!("restore {rid}"), move |store| async move {
            store.heartbeat_restore(rid, crate::clock::now()).await
        });
        tracing::info!(backup = %record.id, target = %report.target, directory = %report.directory, actor = how.actor, "point-in-time restore started");
        let started = Instant::now();
        let outcome = async {
            if !how.skip_check {
                check_stored(&repo, &manifest, &progress).await?;
            }
            let recovered = recover(
                &repo,
                &manifest,
                identity.as_ref(),
                &base,
                &what.target,
                &restoring,
                &restore_command,
                &user,
                policy.timeout,
                &progress,
            )
            .await?;
            let recovery = recovered.finish().await?;
            Ok::<_, SourceError>(recovery)
        }
        .await;
        let outcome = match outcome {
            Ok(recovery) if recovery.reached => {
                let moved = put_in_place(&restoring, what.directory, had_data);
                moved.map(|aside| (recovery, aside))
            }
            Ok(recovery) => {
                let _ = std::fs::remove_dir_all(&restoring);
                report.recovery = Some(recovery.clone());
                Err(SourceError::Source(not_reached(&what.target, &recovery)))
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&restoring);
                Err(e)
            }
        };
        heartbeat.abort();
        report.duration_ms = Some(started.elapsed().as_millis());
        match outcome {
            Ok((recovery, aside)) => {
                report.recovery = Some(recovery);
                report.moved_aside = aside.map(|p| p.display().to_string());
                self.store.finish_restore(rid, "succeeded", &serde_json::to_value(&report).unwrap_or(Json::Null)).await?;
                tracing::info!(backup = %record.id, directory = %report.directory, "point-in-time restore reached its target");
                Ok(report)
            }
            Err(e) => {
                let message = config.redactor.redact(&e.to_string()).into_owned();
                let detail = json!({ "error": message, "error_kind": e.kind(), "recovery": report.recovery });
                self.store.finish_restore(rid, "failed", &detail).await?;
                tracing::error!(backup = %record.id, error = %message, "point-in-time restore failed");
                Err(BackupError::Failed(message))
            }
        }
    }
}

/// Why a recovery that ended did not reach its target, and how far it got.
fn not_reached(target: &RecoveryTarget, r: &Recovery) -> String {
    let mut m = format!("the restore did not reach {}", target.describe());
    if let Some(e) = &r.error {
        m.push_str(&format!(": PostgreSQL said `{e}`"));
    }
    match (&r.redo_done_at, &r.last_transaction_at) {
        (Some(at), Some(t)) => m.push_str(&format!("; replay got to {at}, the last transaction replayed committed at {t}")),
        (Some(at), None) => m.push_str(&format!("; replay got to {at}")),
        _ => m.push_str("; replay did not start (see the server log lines above)"),
    }
    m.push_str(". The target directory was left as it was");
    m
}

/// Where a cluster is restored before it is moved into place: beside the target.
fn restoring_dir(target: &Path, id: &str) -> PathBuf {
    let name = target.file_name().and_then(|n| n.to_str()).unwrap_or("pgdata");
    target.with_file_name(format!("{name}.steward-restoring-{id}"))
}

/// Moves the recovered cluster to `target`, the old contents aside first when there were any.
fn put_in_place(restoring: &Path, target: &Path, had_data: bool) -> Result<Option<PathBuf>, SourceError> {
    let mut aside = None;
    if target.exists() {
        if had_data {
            let name = target.file_name().and_then(|n| n.to_str()).unwrap_or("pgdata");
            let to = target.with_file_name(format!("{name}.before-restore-{}", crate::clock::now().format("%Y%m%dT%H%M%SZ")));
            std::fs::rename(target, &to).map_err(|e| SourceError::Local(format!("moving {} aside: {e}", target.display())))?;
            aside = Some(to);
        } else {
            std::fs::remove_dir(target).map_err(|e| SourceError::Local(format!("replacing the empty {}: {e}", target.display())))?;
        }
    }
    std::fs::rename(restoring, target).map_err(|e| SourceError::Local(format!("putting the restored cluster in place: {e}")))?;
    Ok(aside)
}

/// A cluster recovered (or stopped short) in a directory, its server still running
/// when it promoted, for whoever wants to look before it is shut down.
pub struct Recovered {
    pub server: Recovering,
    pub promoted: bool,
}

impl Recovered {
    /// Shuts the server down cleanly and reads from its log how the recovery ended.
    /// The shutdown is waited for on a blocking thread, not a runtime worker.
    pub async fn finish(self) -> Result<Recovery, SourceError> {
        tokio::task::spawn_blocking(move || self.finish_blocking()).await.map_err(super::sources::stopped)?
    }

    fn finish_blocking(self) -> Result<Recovery, SourceError> {
        let log = self.server.log_text();
        let promoted = self.promoted;
        self.server.stop()?;
        let mut recovery = physical::read_recovery_log(&log);
        recovery.reached = promoted && recovery.error.is_none();
        if !promoted && recovery.error.is_none() {
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            recovery.error = Some(format!(
                "the server stopped during recovery; its log ends: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ));
        }
        Ok(recovery)
    }
}

/// Unpacks the base backup into `dir`, checks it, and runs recovery to `target`.
#[allow(clippy::too_many_arguments)]
pub async fn recover(
    repo: &Repo,
    manifest: &Manifest,
    identity: Option<&age::x25519::Identity>,
    base: &BaseFacts,
    target: &RecoveryTarget,
    dir: &Path,
    restore_command: &str,
    user: &str,
    timeout: Duration,
    progress: &Arc<Progress>,
) -> Result<Recovered, SourceError> {
    let object = manifest.object(BASE_TAR).ok_or_else(|| SourceError::Invalid(format!("the manifest names no {BASE_TAR}")))?;
    if dir.exists() {
        // Left by a restore that was killed: ours to clear, its server first.
        let leftover = dir.to_path_buf();
        tokio::task::spawn_blocking(move || physical::stop_leftover(&leftover)).await.map_err(super::sources::stopped)?;
        std::fs::remove_dir_all(dir).map_err(|e| SourceError::Local(format!("clearing {}: {e}", dir.display())))?;
    }
    progress.set_phase("unpacking the base backup");
    progress.total.store(manifest.plain_bytes(), std::sync::atomic::Ordering::Relaxed);
    progress.plain.store(0, std::sync::atomic::Ordering::Relaxed);
    let into = dir.to_path_buf();
    read_object(repo, manifest, object, identity, progress, move |input| physical::unpack(input, &into)).await?;
    progress.set_phase("checking the files with pg_verifybackup");
    let (d, major) = (dir.to_path_buf(), base.major);
    tokio::task::spawn_blocking(move || physical::verify_files(&d, major)).await.map_err(super::sources::stopped)??;
    let d = dir.to_path_buf();
    tokio::task::spawn_blocking(move || physical::hand_over_tree(&d))
        .await
        .map_err(super::sources::stopped)?
        .map_err(|e| SourceError::Local(format!("handing the restored cluster to PostgreSQL's user: {e}")))?;
    progress.set_phase("recovering");
    let mut server = Recovering::start(dir, base.major, restore_command, target)?;
    let promoted = server.wait(user, timeout).await?;
    Ok(Recovered { server, promoted })
}

/// The table restore tests write marker rows into, in the policy's database.
pub const MARKERS: &str = "steward_restore_markers";
/// Between the two markers a test writes: room for a target between them.
const MARKER_GAP: Duration = Duration::from_secs(2);
/// No target this close to a marker's time: its commit lands a moment after the time
/// it records.
const MARKER_MARGIN: Duration = Duration::from_millis(500);

/// The scheduled proof that the archive restores to a point: marker rows written at
/// known times, a recovery to a random time between the base backup's end and the
/// newest marker, and every marker present or absent as its time says.
pub struct PointTest<'a> {
    pub repo: &'a Repo,
    pub manifest: &'a Manifest,
    pub identity: Option<&'a age::x25519::Identity>,
    pub base: &'a BaseFacts,
    pub config_path: &'a Path,
}

fn source_error(e: sqlx::Error) -> SourceError {
    SourceError::Source(e.to_string())
}

impl PointTest<'_> {
    pub async fn run(
        &self,
        policy: &BackupPolicy,
        src: &PostgresSource,
        progress: &Arc<Progress>,
    ) -> Result<(Comparison, Duration), SourceError> {
        use sqlx::Connection;
        progress.set_phase("writing marker rows");
        let archive = WalArchive::new(self.repo.clone(), &policy.name, policy.compression_level, self.identity.cloned());
        let mut conn = sqlx::PgConnection::connect(src.url.expose())
            .await
            .map_err(|e| SourceError::Unreachable(format!("cannot connect to PostgreSQL to write marker rows: {e}")))?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE IF NOT EXISTS {MARKERS} (id bigserial PRIMARY KEY, written_at timestamptz NOT NULL DEFAULT clock_timestamp(), note text)"
        )))
        .execute(&mut conn)
        .await
        .map_err(source_error)?;
        let insert = format!("INSERT INTO {MARKERS} (note) VALUES ($1)");
        sqlx::query(sqlx::AssertSqlSafe(insert.clone())).bind("restore test: before").execute(&mut conn).await.map_err(source_error)?;
        tokio::time::sleep(MARKER_GAP).await;
        sqlx::query(sqlx::AssertSqlSafe(insert)).bind("restore test: after").execute(&mut conn).await.map_err(source_error)?;
        // The segment holding the newest marker, closed now and archived soon.
        let segment: String =
            sqlx::query_scalar("SELECT pg_walfile_name(pg_switch_wal())").fetch_one(&mut conn).await.map_err(source_error)?;
        let markers: Vec<(i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT id, (extract(epoch FROM written_at) * 1000000)::bigint FROM {MARKERS} ORDER BY id"
        )))
        .fetch_all(&mut conn)
        .await
        .map_err(source_error)?;
        let markers: Vec<(i64, DateTime<Utc>)> =
            markers.into_iter().filter_map(|(id, us)| Some((id, DateTime::from_timestamp_micros(us)?))).collect();
        let _ = conn.close().await;
        progress.set_phase("waiting for the markers' WAL to be archived");
        let deadline = Instant::now() + policy.timeout.min(Duration::from_secs(300));
        while archive.record(&segment).await.map_err(|e| SourceError::Repository(e.to_string()))?.is_none() {
            if Instant::now() > deadline {
                return Err(SourceError::Source(format!(
                    "segment {segment}, which holds the newest marker row, was not archived in time: is archiving stalled?"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let times: Vec<DateTime<Utc>> = markers.iter().map(|(_, t)| *t).collect();
        let newest = *times.last().ok_or_else(|| SourceError::Source(format!("{MARKERS} is empty after writing to it")))?;
        let lo = self.base.stopped_at.max(times[0]);
        let target = pick_time(lo, newest, &times, MARKER_MARGIN, rand::random::<f64>())
            .ok_or_else(|| SourceError::Source(format!("no time between {lo} and {newest} is clear of the marker rows")))?;

        let scratch = tempfile::Builder::new().prefix("steward-restore-test-").tempdir().map_err(|e| SourceError::Local(e.to_string()))?;
        super::sources::process::hand_over(scratch.path(), super::sources::process::unprivileged_user())
            .map_err(|e| SourceError::Local(e.to_string()))?;
        let user = physical::connect_user(src)?;
        let database = super::sources::postgres::conninfo(src.url.expose())?.database;
        let started = Instant::now();
        let recovered = recover(
            self.repo,
            self.manifest,
            self.identity,
            self.base,
            &RecoveryTarget::Time(target),
            &scratch.path().join("data"),
            &physical::restore_command(self.config_path, &policy.name)?,
            &user,
            policy.timeout,
            progress,
        )
        .await?;
        let restore_time = started.elapsed();
        let mut c = Comparison::default();
        if recovered.promoted {
            progress.set_phase("comparing marker rows");
            let mut rc = recovered.server.connect(&user, &database).await?;
            let present: Vec<i64> =
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT id FROM {MARKERS}"))).fetch_all(&mut rc).await.unwrap_or_default();
            let when = |t: &DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string();
            for (id, at) in &markers {
                match (*at < target, present.contains(id)) {
                    (true, true) => c.matched.push(format!("marker {id} written {} is present", when(at))),
                    (false, false) => c.matched.push(format!("marker {id} written {} is absent", when(at))),
                    (true, false) => c.differences.push(format!("marker {id} written {}, before the target, is missing", when(at))),
                    (false, true) => c.differences.push(format!("marker {id} written {}, after the target, is present", when(at))),
                }
            }
            super::sources::postgres::run_assertions(&mut rc, &policy.verify.assertions, &mut c).await;
            let _ = rc.close().await;
        }
        let recovery = recovered.finish().await?;
        let target = RecoveryTarget::Time(target);
        if recovery.reached {
            c.matched.insert(
                0,
                format!("recovered to {} from backup {} in {:.1} s", target.describe(), self.manifest.id, restore_time.as_secs_f64()),
            );
        } else {
            c.differences.insert(0, not_reached(&target, &recovery));
        }
        Ok((c, restore_time))
    }
}

/// A time in `[lo, hi)` at least `margin` away from every marker, chosen by `r` in
/// `[0, 1)` uniformly over the times allowed; `None` when none is.
pub fn pick_time(lo: DateTime<Utc>, hi: DateTime<Utc>, markers: &[DateTime<Utc>], margin: Duration, r: f64) -> Option<DateTime<Utc>> {
    let margin = chrono::Duration::from_std(margin).ok()?;
    let mut cuts: Vec<(DateTime<Utc>, DateTime<Utc>)> = markers.iter().map(|m| (*m - margin, *m + margin)).collect();
    cuts.sort();
    let mut allowed = Vec::new();
    let mut from = lo;
    for (a, b) in cuts {
        if a > from {
            allowed.push((from, a.min(hi)));
        }
        from = from.max(b);
    }
    if from < hi {
        allowed.push((from, hi));
    }
    allowed.retain(|(a, b)| a < b);
    let total: i64 = allowed.iter().map(|(a, b)| (*b - *a).num_microseconds().unwrap_or(0)).sum();
    if total <= 0 {
        return None;
    }
    let mut offset = ((total as f64) * r.clamp(0.0, 1.0)) as i64;
    for (a, b) in allowed {
        let len = (b - a).num_microseconds().unwrap_or(0);
        if offset < len {
            return Some(a + chrono::Duration::microseconds(offset));
        }
        offset -= len;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_restored_cluster_is_prepared_beside_its_target() {
        assert_eq!(
            restoring_dir(Path::new("/srv/pg/main"), "20261206T010203Z-ab12"),
            PathBuf::from("/srv/pg/main.steward-restoring-20261206T010203Z-ab12")
        );
        let r = Recovery { redo_done_at: Some("0/5000060".into()), error: Some("recovery ended before …".into()), ..Default::default() };
        let m = not_reached(&RecoveryTarget::Lsn(0x6000000), &r);
        assert!(m.contains("LSN 0/6000000") && m.contains("replay got to 0/5000060") && m.contains("left as it was"), "{m}");
    }

    proptest::proptest! {
        /// Whatever the markers and the draw, the time is inside the window and clear of
        /// every marker by the margin; and there is one whenever two markers are far apart.
        #[test]
        fn a_test_target_is_inside_the_window_and_clear_of_every_marker(
            offsets in proptest::collection::vec(0i64..60_000, 0..8),
            span in 1i64..60_000,
            r in 0.0f64..1.0,
        ) {
            let t0: DateTime<Utc> = "2026-12-06T06:00:00Z".parse().unwrap();
            let ms = chrono::Duration::milliseconds;
            let markers: Vec<DateTime<Utc>> = offsets.iter().map(|o| t0 + ms(*o)).collect();
            let (lo, hi) = (t0, t0 + ms(span));
            let margin = Duration::from_millis(500);
            match pick_time(lo, hi, &markers, margin, r) {
                Some(t) => {
                    proptest::prop_assert!(t >= lo && t < hi);
                    for m in &markers {
                        proptest::prop_assert!((t - *m).abs() >= ms(500), "{t} is within the margin of {m}");
                    }
                }
                None => {
                    // Then the markers' margins cover the whole window.
                    let mut probe = lo;
                    while probe < hi {
                        proptest::prop_assert!(markers.iter().any(|m| (probe - *m).abs() < ms(500)), "{probe} was free");
                        probe += ms(50);
                    }
                }
            }
        }
    }

    #[test]
    fn a_relative_or_live_target_is_refused() {
        assert!(matches!(inspect_directory(Path::new("pgdata")), Err(BackupError::Invalid(_))));
        let dir = tempfile::tempdir().unwrap();
        assert!(!inspect_directory(dir.path()).unwrap().0);
        std::fs::write(dir.path().join("postmaster.pid"), format!("{}\n/x\n", std::process::id())).unwrap();
        let e = inspect_directory(dir.path()).unwrap_err().to_string();
        assert!(e.contains("runs in") && e.contains("stop it first"), "{e}");
    }
}
