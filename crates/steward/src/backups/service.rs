//! Backup, verify, restore and prune, as the CLI and the server both run them. No
//! dependency on the server: `steward backup restore` works with only the
//! configuration, the data directory and the repository, when the server is down.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value as Json, json};
use tokio_util::sync::CancellationToken;

use super::manifest::{Compression, Encryption, FORMAT, Manifest};
use super::repository::{Repo, RepoError};
use super::retention::{self, Candidate, PlanItem};
use super::sources::process::Running;
use super::sources::{self, BackupCx, Comparison, Produced, Progress, SourceError};
use super::wal::WalArchive;
use super::{BackupQuery, BackupRecord, BackupStatus, NewBackup, NewRestore, Verification, new_id};
use crate::config::Config;
use crate::config::backups::{BackupPolicy, BackupSource, PgMode};
use crate::store::{BackupStore, StoreError};
use crate::telemetry::Metrics;

/// A lease not renewed for this long is expired: its holder is gone.
pub const LEASE: Duration = Duration::from_secs(30);
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0}")]
    NotFound(String),
    /// Another backup of the policy holds the lease.
    #[error("{0}")]
    Busy(String),
    /// The restore target has data and `--force` was not given.
    #[error("{0}")]
    TargetNotEmpty(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Runs `beat` every [`HEARTBEAT_EVERY`] until the returned task is aborted: the
/// heartbeat that keeps a lease (or a verification, or a restore) from looking
/// abandoned. A failed beat is logged naming `what`; the next one may succeed.
pub(super) fn keep_alive<F, Fut>(store: Arc<dyn BackupStore>, what: String, beat: F) -> tokio::task::JoinHandle<()>
where
    F: Fn(Arc<dyn BackupStore>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), StoreError>> + Send,
{
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(HEARTBEAT_EVERY).await;
            if let Err(e) = beat(store.clone()).await {
                tracing::warn!(error = %e, "could not record the heartbeat of {what}");
            }
        }
    })
}

/// Backups as a service: shared by the CLI and the server.
pub struct Backups {
    pub store: Arc<dyn BackupStore>,
    pub metrics: Option<Arc<Metrics>>,
    /// Data directory: spool space for tools that need files.
    pub data_dir: PathBuf,
    /// Live operations (backup id → progress), for the API and progress bars.
    live: Mutex<HashMap<String, Arc<Progress>>>,
    /// The configuration as given on the command line: a point-in-time recovery's
    /// `restore_command` hands it to `steward wal fetch`.
    pub config_path: Option<PathBuf>,
}

/// How to restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions<'a> {
    /// Replace what the target holds.
    pub force: bool,
    /// Inspect the backup and the target, change nothing.
    pub dry_run: bool,
    /// Skip reading every stored object before the restore (it saves one read of
    /// the backup; a corrupt object is then found part-way, with the target changed).
    pub skip_check: bool,
    /// Who asked (the token's name, or the local user), for the record.
    pub actor: &'a str,
}

/// What a restore did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub backup: String,
    pub policy: String,
    pub source: String,
    pub target: String,
    pub dry_run: bool,
    /// Whether the target held data before (and `--force` replaced it).
    pub target_had_data: bool,
    pub target_state: String,
    pub objects: usize,
    pub plain_bytes: u64,
    pub duration_ms: Option<u128>,
    pub result: Json,
}

#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    pub policy: String,
    pub dry_run: bool,
    pub items: Vec<PlanItem>,
    pub deleted: Vec<String>,
    pub errors: Vec<String>,
    /// A physical policy's WAL: what the kept base backups no longer need.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wal: Option<WalPrune>,
}

/// WAL retention, tied to the kept base backups ([`super::wal::prunable`]).
#[derive(Debug, Clone, Serialize)]
pub struct WalPrune {
    /// The first segment the oldest kept base backup needs: everything from it on is
    /// kept. `None` when no physical backup is kept yet (then nothing is removed).
    pub kept_from: Option<String>,
    /// The files removed (or, in a dry run, to remove), oldest first.
    pub files: Vec<String>,
    pub removed: usize,
}

fn redact(config: &Config, text: &str) -> String {
    config.redactor.redact(text).into_owned()
}

pub(super) fn encryption(policy: &BackupPolicy) -> Result<Option<age::x25519::Identity>, BackupError> {
    policy.encryption_key.as_ref().map(|k| super::pipeline::identity(k.expose())).transpose().map_err(BackupError::Invalid)
}

impl Backups {
    pub fn new(store: Arc<dyn BackupStore>, metrics: Option<Arc<Metrics>>, data_dir: PathBuf) -> Backups {
        Backups { store, metrics, data_dir, live: Mutex::new(HashMap::new()), config_path: None }
    }

    /// Names the configuration file (see [`Backups::config_path`]).
    pub fn with_config_path(mut self, path: Option<PathBuf>) -> Backups {
        self.config_path = path;
        self
    }

    /// Progress of a live backup, verify or restore.
    pub fn progress(&self, id: &str) -> Option<Arc<Progress>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }

    fn track(&self, id: &str, p: &Arc<Progress>) {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).insert(id.to_string(), p.clone());
    }

    fn untrack(&self, id: &str) {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }

    pub(super) fn policy<'c>(config: &'c Config, name: &str) -> Result<&'c BackupPolicy, BackupError> {
        config.backup(name).ok_or_else(|| {
            let known: Vec<&str> = config.backups.iter().map(|b| b.name.as_str()).collect();
            BackupError::NotFound(if known.is_empty() {
                format!("no backup policy `{name}`: the configuration defines none")
            } else {
                format!("no backup policy `{name}`; configured: {}", known.join(", "))
            })
        })
    }

    pub(super) fn repo(config: &Config, name: &str) -> Result<Repo, BackupError> {
        let cfg = config.repository(name).ok_or_else(|| BackupError::NotFound(format!("repository `{name}` is not configured")))?;
        Repo::open(cfg).map_err(|e| BackupError::Failed(e.to_string()))
    }

    /// Takes one backup of `policy`, start to end. `progress` is updated as it goes.
    pub async fn run(
        &self,
        config: &Config,
        policy: &str,
        trigger: &str,
        started_by: &str,
        trigger_key: Option<String>,
        progress: Arc<Progress>,
    ) -> Result<BackupRecord, BackupError> {
        let begun = self.begin(config, policy, trigger, started_by, trigger_key).await?;
        self.complete(config, begun, progress).await
    }

    /// Takes the policy's lease and records the backup `running`: what fails here
    /// (unknown policy, a busy lease) fails before anything starts.
    pub async fn begin(
        &self,
        config: &Config,
        policy: &str,
        trigger: &str,
        started_by: &str,
        trigger_key: Option<String>,
    ) -> Result<BackupRecord, BackupError> {
        let policy = Self::policy(config, policy)?;
        Self::repo(config, &policy.repository)?;
        encryption(policy)?;
        let started_at = crate::clock::now();
        let owner = crate::telemetry::process_owner();
        let new = NewBackup {
            id: new_id(started_at),
            policy: policy.name.clone(),
            repository: policy.repository.clone(),
            source: policy.source.kind().to_string(),
            trigger: trigger.to_string(),
            started_by: started_by.to_string(),
            owner: owner.clone(),
            started_at,
            trigger_key,
            lease: LEASE,
        };
        // One lease per source and repository: two policies backing up the same database
        // into the same repository take turns.
        let lock = format!("backup:{}@{}", policy.source.target(), policy.repository);
        let record = self.store.create_backup(&new, &lock).await.map_err(|e| match e {
            e if e.is_conflict() => BackupError::Busy(e.to_string()),
            other => BackupError::Store(other),
        })?;
        tracing::info!(backup = %record.id, policy = %policy.name, repository = %policy.repository, "backup started");
        Ok(record)
    }

    /// Takes a backup [`Backups::begin`] recorded, start to end.
    pub async fn complete(&self, config: &Config, record: BackupRecord, progress: Arc<Progress>) -> Result<BackupRecord, BackupError> {
        let id = record.id.clone();
        let owner = record.owner.clone();
        let started_at = record.started_at;
        let settled = async {
            let policy = Self::policy(config, &record.policy)?;
            Ok::<_, BackupError>((policy, Self::repo(config, &policy.repository)?, encryption(policy)?))
        };
        let (policy, repo, identity) = match settled.await {
            Ok(v) => v,
            Err(e) => {
                self.store.finish_backup(&id, BackupStatus::Failed, 0, 0, Some(&e.to_string()), &Json::Null).await?;
                return Err(e);
            }
        };
        self.track(&id, &progress);
        let spool = self.data_dir.join("spool").join(&id);
        let cancel = CancellationToken::new();
        let running = Running::default();
        let heartbeat = {
            let (id, owner) = (id.clone(), owner.clone());
            keep_alive(self.store.clone(), format!("backup {id} (its lease)"), move |store| {
                let (id, owner) = (id.clone(), owner.clone());
                async move {
                    let now = crate::clock::now();
                    let until = now + chrono::Duration::from_std(LEASE).unwrap_or_default();
                    store.heartbeat_backup(&id, &owner, now, until).await
                }
            })
        };
        let cx = BackupCx {
            repo: repo.clone(),
            policy: policy.name.clone(),
            id: id.clone(),
            level: policy.compression_level,
            recipient: identity.as_ref().map(|i| i.to_public()),
            identity: identity.clone(),
            spool: spool.clone(),
            progress: progress.clone(),
            cancel: cancel.clone(),
        };
        let started = Instant::now();
        let produced = match std::fs::create_dir_all(&spool) {
            Err(e) => Err(SourceError::Local(format!("cannot create the spool directory {}: {e}", spool.display()))),
            Ok(()) => match tokio::time::timeout(policy.timeout, produce(&cx, &policy.source, &running)).await {
                Ok(r) => r,
                Err(_) => {
                    running.kill_all();
                    Err(SourceError::TimedOut(format!("timed out after {}", crate::config::duration::format_duration(policy.timeout))))
                }
            },
        };
        let _ = std::fs::remove_dir_all(&spool);
        let outcome = match produced {
            Ok(p) => {
                progress.set_phase("writing the manifest");
                let manifest = Manifest {
                    format: FORMAT,
                    id: id.clone(),
                    policy: policy.name.clone(),
                    source: policy.source.kind().to_string(),
                    target: policy.source.target(),
                    tool: p.tool.clone(),
                    started_at,
                    finished_at: crate::clock::now(),
                    compression: Compression { algorithm: "zstd".into(), level: policy.compression_level },
                    encryption: identity.as_ref().map(|i| Encryption { scheme: "age-x25519".into(), recipient: i.to_public().to_string() }),
                    objects: p.objects.clone(),
                    facts: p.facts.clone(),
                };
                repo.write_manifest(&manifest).await.map(|_| (manifest, p)).map_err(|e| SourceError::Repository(e.to_string()))
            }
            Err(e) => Err(e),
        };
        cancel.cancel();
        heartbeat.abort();
        self.untrack(&id);
        match outcome {
            Ok((manifest, p)) => {
                let facts = summary(&p.facts);
                self.store
                    .finish_backup(
                        &id,
                        BackupStatus::Succeeded,
                        manifest.plain_bytes() as i64,
                        manifest.stored_bytes() as i64,
                        None,
                        &facts,
                    )
                    .await?;
                tracing::info!(
                    backup = %id,
                    policy = %policy.name,
                    bytes = manifest.plain_bytes(),
                    stored = manifest.stored_bytes(),
                    seconds = started.elapsed().as_secs_f64(),
                    "backup succeeded"
                );
            }
            Err(e) => {
                let kind = e.kind();
                let e = redact(config, &e.to_string());
                tracing::error!(backup = %id, policy = %policy.name, kind, error = %e, "backup failed");
                self.store
                    .finish_backup(
                        &id,
                        BackupStatus::Failed,
                        progress.plain.load(std::sync::atomic::Ordering::Relaxed) as i64,
                        0,
                        Some(&e),
                        &Json::Null,
                    )
                    .await?;
                // Its objects never became a backup (no manifest); remove them now, or prune will.
                if let Err(del) = repo.delete(&policy.name, &id).await {
                    tracing::warn!(backup = %id, error = %del, "could not remove a failed backup's objects yet; prune will");
                }
            }
        }
        let record = self.store.backup(&id).await?.ok_or_else(|| BackupError::NotFound(format!("backup {id} vanished from the store")))?;
        self.publish(&record.policy).await;
        Ok(record)
    }

    /// The record and its manifest; the manifest is `None` when it is gone.
    async fn resolve(&self, config: &Config, id: &str) -> Result<(BackupRecord, Repo, Option<Manifest>), BackupError> {
        let (record, repo) = self.record_and_repo(config, id).await?;
        let manifest = repo.manifest(&record.policy, id).await.map_err(|e| BackupError::Failed(e.to_string()))?;
        Ok((record, repo, manifest))
    }

    async fn record_and_repo(&self, config: &Config, id: &str) -> Result<(BackupRecord, Repo), BackupError> {
        if !super::valid_id(id) {
            return Err(BackupError::Invalid(format!("`{id}` is not a backup id (they look like 20261122T020000Z-7f3a)")));
        }
        let record = self.store.backup(id).await?.ok_or_else(|| BackupError::NotFound(format!("no backup {id}")))?;
        let repo = Self::repo(config, &record.repository)?;
        Ok((record, repo))
    }

    /// The newest successful backup of `policy`.
    pub async fn latest(&self, policy: &str) -> Result<BackupRecord, BackupError> {
        let q = BackupQuery { policy: Some(policy.to_string()), status: Some(BackupStatus::Succeeded), limit: 1 };
        self.store
            .backups(&q)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| BackupError::NotFound(format!("policy `{policy}` has no successful backup")))
    }

    /// Verifies a backup: level 1 reads every object and checks sizes and both
    /// checksums; `restore_test` restores into a scratch instance and compares.
    pub async fn verify(
        &self,
        config: &Config,
        id: &str,
        restore_test: bool,
        trigger: &str,
        trigger_key: Option<&str>,
        progress: Arc<Progress>,
    ) -> Result<Verification, BackupError> {
        let (record, repo) = self.record_and_repo(config, id).await?;
        if record.status != BackupStatus::Succeeded {
            return Err(BackupError::Invalid(format!("backup {id} is {}: only successful backups are verified", record.status.as_str())));
        }
        // Read after the verification is recorded started: a manifest that cannot be read
        // (garbled, unreadable) is a failed verification on record, not a bare error.
        let manifest =
            repo.manifest(&record.policy, id).await.map_err(|e| SourceError::Repository(format!("its manifest cannot be read: {e}")));
        let policy = config.backup(&record.policy);
        let identity = policy.map(encryption).transpose()?.flatten();
        if restore_test && policy.is_none() {
            return Err(BackupError::Invalid(format!(
                "policy `{}` is no longer configured: a restore test needs its source",
                record.policy
            )));
        }
        let level = if restore_test { 2 } else { 1 };
        let vid = self.store.start_verification(id, &record.policy, level, trigger, trigger_key).await.map_err(|e| match e {
            e if e.is_conflict() => BackupError::Busy(e.to_string()),
            other => BackupError::Store(other),
        })?;
        let heartbeat = keep_alive(self.store.clone(), format!("verification {vid}"), move |store| async move {
            store.heartbeat_verification(vid, crate::clock::now()).await
        });
        self.track(id, &progress);
        let started = Instant::now();
        let outcome = match (manifest, policy) {
            (Err(e), _) => Err(e),
            (Ok(None), _) => {
                Err(SourceError::Repository("its manifest is missing from the repository: the backup is gone or damaged".to_string()))
            }
            (Ok(Some(m)), Some(policy)) if restore_test => {
                progress.total.store(m.plain_bytes(), std::sync::atomic::Ordering::Relaxed);
                let config_path = self.config_path.as_deref();
                restore_test_for(&repo, &m, identity.as_ref(), policy, &progress, &Running::default(), config_path).await
            }
            (Ok(Some(m)), _) => {
                progress.total.store(m.plain_bytes(), std::sync::atomic::Ordering::Relaxed);
                check_objects(&repo, &m, identity.as_ref(), &progress).await
            }
        };
        heartbeat.abort();
        self.untrack(id);
        let (passed, detail, restore_ms) = match &outcome {
            Ok((c, restore)) => (
                c.passed(),
                json!({ "level": level, "matched": c.matched, "differences": c.differences, "seconds": started.elapsed().as_secs_f64() }),
                restore.map(|d| d.as_millis() as i64),
            ),
            Err(e) => (
                false,
                json!({ "level": level, "error": redact(config, &e.to_string()), "error_kind": e.kind(), "seconds": started.elapsed().as_secs_f64() }),
                None,
            ),
        };
        self.store.finish_verification(vid, passed, &detail, restore_ms).await?;
        if passed {
            tracing::info!(backup = %id, level, "backup verified");
        } else {
            tracing::error!(backup = %id, level, detail = %detail, "backup verification FAILED");
        }
        self.publish(&record.policy).await;
        let v = self.store.verifications(Some(id), 1).await?.into_iter().next();
        v.ok_or_else(|| BackupError::NotFound("the verification vanished from the store".into()))
    }

    /// Restores a backup into `target`: a database URL (PostgreSQL, MySQL), a file
    /// (Redis' dump.rdb) or a directory. Refuses a target with data unless `force`.
    /// Unless `skip_check`, every stored object is read and its checksum compared
    /// first, so a corrupt backup is refused before the target is touched.
    pub async fn restore(
        &self,
        config: &Config,
        id: &str,
        target: &str,
        how: RestoreOptions<'_>,
        progress: Arc<Progress>,
    ) -> Result<RestoreReport, BackupError> {
        let RestoreOptions { force, dry_run, skip_check, actor } = how;
        let (record, repo, manifest) = self.resolve(config, id).await?;
        if record.status != BackupStatus::Succeeded {
            return Err(BackupError::Invalid(format!(
                "backup {id} is {}: only successful backups can be restored",
                record.status.as_str()
            )));
        }
        let manifest = manifest.ok_or_else(|| BackupError::Failed(format!("backup {id}: its manifest is missing from the repository")))?;
        if manifest.facts["mode"] == "physical" {
            return Err(BackupError::Invalid(format!(
                "backup {id} is a physical base backup: it restores into a data directory, to its end or to a point in time \
                 (steward backup restore {id} --to /ABSOLUTE/DIR, or steward backup restore {} --to-time T --to DIR)",
                record.policy
            )));
        }
        let identity = match config.backup(&record.policy) {
            Some(p) => encryption(p)?,
            None if manifest.encryption.is_some() => {
                return Err(BackupError::Invalid(format!(
                    "backup {id} is encrypted and policy `{}` (its key) is no longer configured",
                    record.policy
                )));
            }
            None => None,
        };
        // Every refusal here happens before the target is touched: the target is wrong or
        // cannot be read, and the caller gets it as bad input to fix.
        let (had_data, state) = inspect(&manifest, target).await.map_err(|e| BackupError::Invalid(e.to_string()))?;
        let mut report = RestoreReport {
            backup: id.to_string(),
            policy: record.policy.clone(),
            source: manifest.source.clone(),
            target: crate::config::secret::redact_url_password(target).into_owned(),
            dry_run,
            target_had_data: had_data,
            target_state: state.clone(),
            objects: manifest.objects.len(),
            plain_bytes: manifest.plain_bytes(),
            duration_ms: None,
            result: Json::Null,
        };
        if had_data && !force {
            return Err(BackupError::TargetNotEmpty(format!(
                "the target is not empty ({state}); nothing was changed. Restore elsewhere, or pass --force to replace what is there"
            )));
        }
        if dry_run {
            report.result = json!({ "would": restore_plan(&manifest.source, had_data) });
            return Ok(report);
        }
        let rid = self
            .store
            .start_restore(&NewRestore {
                backup_id: id.to_string(),
                policy: record.policy.clone(),
                target: report.target.clone(),
                actor: actor.to_string(),
                replaced: had_data,
                hold_until: crate::clock::now() + chrono::Duration::hours(24),
            })
            .await?;
        let heartbeat = keep_alive(self.store.clone(), format!("restore {rid}"), move |store| async move {
            store.heartbeat_restore(rid, crate::clock::now()).await
        });
        self.track(id, &progress);
        let started = Instant::now();
        tracing::info!(backup = %id, target = %report.target, force, actor, "restore started");
        let running = Running::default();
        let result = async {
            if !skip_check {
                check_stored(&repo, &manifest, &progress).await.map_err(|e| (Stage::Check, e))?;
            }
            progress.plain.store(0, std::sync::atomic::Ordering::Relaxed);
            progress.total.store(manifest.plain_bytes(), std::sync::atomic::Ordering::Relaxed);
            restore_into(&repo, &manifest, identity.as_ref(), target, had_data, &progress, &running).await.map_err(|e| (Stage::Restore, e))
        }
        .await;
        heartbeat.abort();
        self.untrack(id);
        report.duration_ms = Some(started.elapsed().as_millis());
        let seconds = started.elapsed().as_secs_f64();
        let (outcome, detail) = match &result {
            Ok(v) if v["comparison"]["differences"].as_array().is_some_and(|d| !d.is_empty()) => ("differs", v.clone()),
            Ok(v) => ("succeeded", v.clone()),
            Err((stage, e)) => (
                "failed",
                json!({ "error": redact(config, &e.to_string()), "error_kind": e.kind(), "target_touched": *stage == Stage::Restore }),
            ),
        };
        self.store.finish_restore(rid, outcome, &json!({ "seconds": seconds, "result": detail })).await?;
        match result {
            Ok(v) => {
                // A restore that worked is news, not a warning; one whose data differs
                // from what was backed up is.
                if outcome == "succeeded" {
                    tracing::info!(backup = %id, target = %report.target, seconds, outcome, "restore finished");
                } else {
                    tracing::warn!(backup = %id, target = %report.target, seconds, outcome, "restore finished; the restored data differs from the backup's record");
                }
                report.result = v;
                Ok(report)
            }
            Err((Stage::Check, e)) => Err(BackupError::Failed(format!(
                "backup {id} did not pass its check, so nothing was restored and {} was not changed: {}",
                report.target,
                redact(config, &e.to_string())
            ))),
            Err((Stage::Restore, e)) => Err(BackupError::Failed(format!(
                "the restore failed part-way ({} may hold part of the data): {}",
                report.target,
                redact(config, &e.to_string())
            ))),
        }
    }

    /// Computes the retention plan of `policy` and, unless `dry_run`, carries it out.
    pub async fn prune(&self, config: &Config, policy: &str, dry_run: bool) -> Result<PruneReport, BackupError> {
        let p = Self::policy(config, policy)?;
        let Some(rules) = &p.retention else {
            return Err(BackupError::Invalid(format!(
                "policy `{policy}` has no retention rules; refusing to prune with an empty policy (add `retention:` with e.g. keep_daily and min_keep)"
            )));
        };
        let repo = Self::repo(config, &p.repository)?;
        let now = crate::clock::now();
        let records = self.store.backups(&BackupQuery { policy: Some(policy.to_string()), status: None, limit: 1_000_000 }).await?;
        let stored = repo.list(policy).await.map_err(|e| BackupError::Failed(e.to_string()))?;
        let mut candidates: Vec<Candidate> = Vec::new();
        let lease = chrono::Duration::from_std(LEASE).unwrap_or_default();
        // A backup being verified is read right now: as protected as one being restored.
        let verifying: Vec<String> = self
            .store
            .verifications(None, 1_000)
            .await?
            .into_iter()
            .filter(|v| v.result == "running" && v.policy == policy)
            .map(|v| v.backup_id)
            .collect();
        for r in records.iter().filter(|r| r.repository == p.repository && r.status != BackupStatus::Deleted) {
            let in_repo = stored.iter().find(|(id, _)| *id == r.id);
            // A record whose data is gone from the repository has nothing to delete,
            // except a success whose manifest vanished: that is worth a plan line.
            if in_repo.is_none() && r.status != BackupStatus::Succeeded && r.status != BackupStatus::Running {
                continue;
            }
            candidates.push(Candidate {
                id: r.id.clone(),
                started_at: r.started_at,
                status: r.status,
                in_progress: r.status == BackupStatus::Running && now - r.heartbeat_at < lease,
                restoring: r.restoring_until.is_some_and(|t| t > now) || verifying.contains(&r.id),
            });
        }
        // In the repository but unknown to this store (another steward, a lost data
        // directory): complete ones count as successes, the rest as leftovers.
        for (id, complete) in &stored {
            if candidates.iter().any(|c| c.id == *id) || records.iter().any(|r| r.id == *id) {
                continue;
            }
            let Some(at) = id_time(id) else { continue };
            // Objects younger than a lease may belong to a backup starting elsewhere.
            if !complete && now - at < lease {
                continue;
            }
            let status = if *complete { BackupStatus::Succeeded } else { BackupStatus::Interrupted };
            candidates.push(Candidate { id: id.clone(), started_at: at, status, in_progress: false, restoring: false });
        }
        let items = retention::plan(&candidates, rules, now);
        let wal = match &p.source {
            BackupSource::Postgres(s) if s.mode == PgMode::Physical => Some(self.wal_retention(p, &repo, &items, &records).await?),
            _ => None,
        };
        let mut report = PruneReport {
            policy: policy.to_string(),
            dry_run,
            items,
            deleted: vec![],
            errors: vec![],
            wal: wal.as_ref().map(|(_, w)| w.clone()),
        };
        if dry_run {
            return Ok(report);
        }
        for item in report.items.iter().filter(|i| !i.keep) {
            match repo.delete(policy, &item.id).await {
                Ok(_) => {
                    if records.iter().any(|r| r.id == item.id) {
                        self.store.mark_backup_deleted(&item.id).await?;
                    }
                    report.deleted.push(item.id.clone());
                }
                Err(e) => report.errors.push(format!("{}: {e}", item.id)),
            }
        }
        // WAL after the backups: a kept backup's WAL is never among these files, and they
        // go oldest first, so a prune cut short leaves the archive continuous.
        if let (Some((archive, _)), Some(w)) = (&wal, report.wal.as_mut()) {
            for file in &w.files {
                match archive.remove(file).await {
                    Ok(()) => w.removed += 1,
                    Err(e) => {
                        report.errors.push(format!("WAL {file}: {e}"));
                        break;
                    }
                }
            }
        }
        tracing::info!(policy, deleted = report.deleted.len(), kept = report.items.iter().filter(|i| i.keep).count(), "pruned");
        self.publish(policy).await;
        Ok(report)
    }

    /// The WAL of a physical policy that no kept base backup needs.
    async fn wal_retention(
        &self,
        p: &BackupPolicy,
        repo: &Repo,
        items: &[PlanItem],
        records: &[BackupRecord],
    ) -> Result<(WalArchive, WalPrune), BackupError> {
        let archive = WalArchive::new(repo.clone(), &p.name, p.compression_level, encryption(p)?);
        let mut starts = Vec::new();
        for item in items.iter().filter(|i| i.keep && i.status == BackupStatus::Succeeded) {
            let facts = match records.iter().find(|r| r.id == item.id) {
                Some(r) => r.facts.clone(),
                None => repo
                    .manifest(&p.name, &item.id)
                    .await
                    .map_err(|e| BackupError::Failed(e.to_string()))?
                    .map(|m| m.facts)
                    .unwrap_or_default(),
            };
            // A logical backup kept from before the policy turned physical needs no WAL.
            if let Some(b) = super::sources::physical::BaseFacts::of(&facts) {
                starts.push(b);
            }
        }
        let Some(oldest) = starts.iter().min_by_key(|b| b.start_lsn) else {
            return Ok((archive, WalPrune { kept_from: None, files: vec![], removed: 0 }));
        };
        let (archived, size) = archive.archived().await.map_err(|e| BackupError::Failed(e.to_string()))?;
        let keep_from = oldest.start_lsn / size;
        let files = super::wal::prunable(&archived, keep_from, size);
        Ok((archive, WalPrune { kept_from: Some(super::wal::segment_name(oldest.timeline, keep_from, size)), files, removed: 0 }))
    }

    /// After a restart: backups left `running` by a process whose lease expired are
    /// settled: `succeeded` if their manifest made it, else `interrupted` (and their
    /// objects removed when the repository answers).
    pub async fn recover(&self, config: &Config) -> Result<(), BackupError> {
        let now = crate::clock::now();
        let lease = chrono::Duration::from_std(LEASE).unwrap_or_default();
        let running = self.store.backups(&BackupQuery { policy: None, status: Some(BackupStatus::Running), limit: 10_000 }).await?;
        for r in running.into_iter().filter(|r| now - r.heartbeat_at > lease && self.progress(&r.id).is_none()) {
            let repo = config.repository(&r.repository).and_then(|c| Repo::open(c).ok());
            let manifest = match &repo {
                Some(repo) => repo.manifest(&r.policy, &r.id).await.ok().flatten(),
                None => None,
            };
            match manifest {
                Some(m) => {
                    tracing::warn!(backup = %r.id, "a backup interrupted after its manifest was written is complete");
                    self.store
                        .finish_backup(
                            &r.id,
                            BackupStatus::Succeeded,
                            m.plain_bytes() as i64,
                            m.stored_bytes() as i64,
                            None,
                            &summary(&m.facts),
                        )
                        .await?;
                }
                None => {
                    let error = format!(
                        "steward stopped during the backup (owner {}, last heartbeat {})",
                        r.owner,
                        r.heartbeat_at.format("%Y-%m-%d %H:%M:%S UTC")
                    );
                    tracing::warn!(backup = %r.id, "{error}");
                    self.store.finish_backup(&r.id, BackupStatus::Interrupted, r.plain_bytes, 0, Some(&error), &Json::Null).await?;
                    // Spool files of a backup of this host's (a directory-format dump, an RDB).
                    let _ = std::fs::remove_dir_all(self.data_dir.join("spool").join(&r.id));
                    if let Some(repo) = repo
                        && let Err(e) = repo.delete(&r.policy, &r.id).await
                    {
                        tracing::warn!(backup = %r.id, error = %e, "could not remove an interrupted backup's objects yet; prune will");
                    }
                }
            }
        }
        self.store.fail_stale_verifications(now - lease).await?;
        let interrupted = self.store.interrupt_stale_restores(now - lease).await?;
        if interrupted > 0 {
            tracing::warn!(
                restores = interrupted,
                "restores cut off when steward stopped are recorded as interrupted: their targets may hold part of the data"
            );
        }
        for p in &config.backups {
            self.publish(&p.name).await;
        }
        Ok(())
    }

    /// Updates the policy's gauges from the store.
    pub async fn publish(&self, policy: &str) {
        let Some(metrics) = &self.metrics else { return };
        let q = BackupQuery { policy: Some(policy.to_string()), status: Some(BackupStatus::Succeeded), limit: 1 };
        if let Ok(Some(b)) = self.store.backups(&q).await.map(|v| v.into_iter().next()) {
            metrics.backup_observed(&b);
        }
        if let Ok(list) = self.store.backups(&BackupQuery { policy: Some(policy.to_string()), status: None, limit: 50 }).await
            && let Some(v) = list.iter().find(|b| b.verified_at.is_some())
        {
            metrics.backup_verification_observed(v);
        }
    }
}

/// Facts for the store: without per-file lists (those stay in the manifest).
fn summary(facts: &Json) -> Json {
    let mut f = facts.clone();
    if let Some(o) = f.as_object_mut() {
        o.remove("list");
    }
    f
}

/// The start time in a backup id.
fn id_time(id: &str) -> Option<DateTime<Utc>> {
    chrono::NaiveDateTime::parse_from_str(id.get(..16)?, "%Y%m%dT%H%M%SZ").ok().map(|n| n.and_utc())
}

async fn produce(cx: &BackupCx, source: &BackupSource, running: &Running) -> Result<Produced, SourceError> {
    match source {
        BackupSource::Postgres(p) if p.mode == PgMode::Physical => {
            let archive = WalArchive::new(cx.repo.clone(), &cx.policy, cx.level, cx.identity.clone());
            sources::physical::backup(cx, p, &archive, running).await
        }
        BackupSource::Postgres(p) => sources::postgres::backup(cx, p, running).await,
        BackupSource::Mysql { url } => sources::mysql::backup(cx, url.expose(), running).await,
        BackupSource::Redis { url } => sources::redis::backup(cx, url.expose(), running).await,
        BackupSource::Directory { path } => sources::directory::backup(cx, path).await,
        BackupSource::Nats { url, streams } => sources::nats::backup(cx, url.expose(), streams).await,
    }
}

type Checked = Result<(Comparison, Option<Duration>), SourceError>;

/// Where a restore failed: before the target was touched, or while writing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Check,
    Restore,
}

/// Before a restore: every stored object read in full and its size and blake3
/// compared with the manifest. Only the stored bytes (no decryption or
/// decompression): what a restore would read is exactly what was written.
pub(super) async fn check_stored(repo: &Repo, m: &Manifest, progress: &Arc<Progress>) -> Result<(), SourceError> {
    progress.set_phase("checking the backup's objects");
    progress.total.store(m.stored_bytes(), std::sync::atomic::Ordering::Relaxed);
    let mut damaged = Vec::new();
    for object in &m.objects {
        match repo
            .stored_digest(&m.policy, &m.id, &object.name, |n| {
                progress.plain.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            })
            .await
        {
            Ok(d) if d == object.stored => {}
            Ok(d) => damaged.push(format!(
                "object {} is corrupt: stored bytes: {} with blake3 {}, the manifest says {} with blake3 {}",
                object.name, d.bytes, d.blake3, object.stored.bytes, object.stored.blake3
            )),
            Err(RepoError::Missing { .. }) => damaged.push(format!("object {} is corrupt: it is missing from the repository", object.name)),
            Err(e) => return Err(SourceError::Repository(format!("object {} could not be read: {e}", object.name))),
        }
    }
    if damaged.is_empty() { Ok(()) } else { Err(SourceError::Repository(damaged.join("; "))) }
}

/// Level 1: every object read in full; sizes, stored and plain blake3 compared.
async fn check_objects(repo: &Repo, m: &Manifest, identity: Option<&age::x25519::Identity>, progress: &Arc<Progress>) -> Checked {
    progress.set_phase("checking objects");
    let mut c = Comparison::default();
    for object in &m.objects {
        match sources::read_object(repo, m, object, identity, progress, |r| std::io::copy(r, &mut std::io::sink())).await {
            Ok(_) => c
                .matched
                .push(format!("{}: {} bytes stored, {} plain, checksums equal", object.name, object.stored.bytes, object.plain.bytes)),
            Err(e) => c.differences.push(e.to_string()),
        }
    }
    Ok((c, None))
}

/// A restore test of the policy's kind. `config_path` is the configuration as given: a
/// point-in-time test's restore_command names it.
async fn restore_test_for(
    repo: &Repo,
    m: &Manifest,
    identity: Option<&age::x25519::Identity>,
    policy: &BackupPolicy,
    progress: &Arc<Progress>,
    running: &Running,
    config_path: Option<&Path>,
) -> Checked {
    let (c, d) = match &policy.source {
        BackupSource::Postgres(p) if p.mode == PgMode::Physical => {
            let config_path = config_path.ok_or_else(|| {
                SourceError::Invalid("a point-in-time restore test needs the configuration's path for restore_command".into())
            })?;
            let base = sources::physical::BaseFacts::of(&m.facts)
                .ok_or_else(|| SourceError::Invalid(format!("backup {} has no physical backup facts", m.id)))?;
            let test = super::pitr::PointTest { repo, manifest: m, identity, base: &base, config_path };
            test.run(policy, p, progress).await?
        }
        BackupSource::Postgres(_) => {
            sources::postgres::restore_test(repo, m, identity, &policy.verify.assertions, progress, running).await?
        }
        BackupSource::Mysql { url } => {
            sources::mysql::restore_test(repo, m, identity, url.expose(), &policy.verify.assertions, progress, running).await?
        }
        BackupSource::Redis { .. } => sources::redis::restore_test(repo, m, identity, progress).await?,
        BackupSource::Directory { .. } => {
            let dir = tempfile::Builder::new().prefix("steward-scratch-dir-").tempdir().map_err(|e| SourceError::Local(e.to_string()))?;
            let started = Instant::now();
            progress.set_phase("restoring into a scratch directory");
            let c = sources::directory::restore_into(repo, m, identity, dir.path(), progress).await?;
            (c, started.elapsed())
        }
        BackupSource::Nats { .. } => sources::nats::restore_test(repo, m, identity, progress).await?,
    };
    Ok((c, Some(d)))
}

/// Whether the target holds data, and what it holds, for messages.
async fn inspect(manifest: &Manifest, target: &str) -> Result<(bool, String), SourceError> {
    match manifest.source.as_str() {
        "postgres" => {
            if !target.starts_with("postgres://") && !target.starts_with("postgresql://") {
                return Err(SourceError::Invalid(
                    "a PostgreSQL backup restores into a database: --to postgres://USER@HOST:5432/DATABASE".into(),
                ));
            }
            let (db, tables) = sources::postgres::inspect_target(target).await?;
            Ok((tables > 0, format!("database {db} has {tables} tables")))
        }
        "mysql" => {
            if !target.starts_with("mysql://") && !target.starts_with("mariadb://") {
                return Err(SourceError::Invalid(
                    "a MySQL/MariaDB backup restores into a database: --to mysql://USER@HOST:3306/DATABASE".into(),
                ));
            }
            let (db, tables) = sources::mysql::inspect_target(&target.replacen("mariadb://", "mysql://", 1)).await?;
            Ok((tables > 0, format!("database {db} has {tables} tables")))
        }
        "redis" => {
            let p = Path::new(target);
            if !p.is_absolute() {
                return Err(SourceError::Invalid(
                    "a Redis backup restores as an RDB file: --to /ABSOLUTE/PATH/dump.rdb (stop Redis, restore, start it)".into(),
                ));
            }
            let size = std::fs::metadata(p).map(|m| m.len()).ok();
            Ok((size.is_some_and(|s| s > 0), size.map_or("no file there".into(), |s| format!("{} exists ({s} bytes)", p.display()))))
        }
        "directory" => {
            let p = Path::new(target);
            if !p.is_absolute() {
                return Err(SourceError::Invalid("a directory backup restores into a directory: --to /ABSOLUTE/PATH".into()));
            }
            let full = sources::directory::is_non_empty(p);
            Ok((full, if full { format!("{} has files", p.display()) } else { format!("{} is empty or missing", p.display()) }))
        }
        "nats" => {
            if !target.starts_with("nats://") && !target.starts_with("tls://") {
                return Err(SourceError::Invalid("a NATS JetStream backup restores into a server: --to nats://HOST:4222".into()));
            }
            let present = sources::nats::inspect_target(manifest, target).await?;
            let state = if present.is_empty() {
                "none of the backup's streams exist there".to_string()
            } else {
                let list: Vec<String> = present.iter().map(|(s, n)| format!("{s} ({n} messages)")).collect();
                format!("streams already there: {}", list.join(", "))
            };
            Ok((!present.is_empty(), state))
        }
        other => Err(SourceError::Invalid(format!("restoring {other} backups is not available in this version"))),
    }
}

fn restore_plan(source: &str, replace: bool) -> String {
    match (source, replace) {
        ("postgres", false) => "pg_restore into the database".into(),
        ("postgres", true) => "pg_restore --clean --if-exists into the database (objects in the dump are dropped and recreated)".into(),
        ("mysql", _) => "load the dump into the database (each table in it is dropped and recreated)".into(),
        ("redis", false) => "write the RDB file (checked with redis-check-rdb before it is put in place)".into(),
        ("redis", true) => "replace the RDB file (checked with redis-check-rdb before it is put in place)".into(),
        ("directory", false) => "unpack the files into the directory".into(),
        ("nats", false) => "restore each stream through the server's restore API".into(),
        ("nats", true) => "delete each stream of the backup that exists there, then restore it through the server's restore API".into(),
        _ => "unpack into a new directory beside it, then move the current directory aside (kept, not deleted) and put the restored one in place".into(),
    }
}

async fn restore_into(
    repo: &Repo,
    m: &Manifest,
    identity: Option<&age::x25519::Identity>,
    target: &str,
    replace: bool,
    progress: &Arc<Progress>,
    running: &Running,
) -> Result<Json, SourceError> {
    progress.set_phase("restoring");
    match m.source.as_str() {
        "postgres" => sources::postgres::restore_to(repo, m, identity, target, replace, progress, running).await,
        "mysql" => sources::mysql::restore_to(repo, m, identity, &target.replacen("mariadb://", "mysql://", 1), progress, running).await,
        "redis" => {
            let c = sources::redis::restore_file(repo, m, identity, Path::new(target), progress).await?;
            Ok(json!({ "file": target, "comparison": c }))
        }
        "directory" => {
            let target = Path::new(target);
            if !replace {
                let c = sources::directory::restore_into(repo, m, identity, target, progress).await?;
                return Ok(json!({ "directory": target, "comparison": c }));
            }
            let name = target.file_name().and_then(|n| n.to_str()).unwrap_or("restore");
            let parent = target.parent().ok_or_else(|| SourceError::Invalid("the target has no parent directory".into()))?;
            let fresh = parent.join(format!(".{name}.steward-restore-{}", m.id));
            let c = sources::directory::restore_into(repo, m, identity, &fresh, progress).await?;
            let aside = parent.join(format!("{name}.before-restore-{}", crate::clock::now().format("%Y%m%dT%H%M%SZ")));
            std::fs::rename(target, &aside).map_err(|e| SourceError::Local(format!("moving {} aside: {e}", target.display())))?;
            std::fs::rename(&fresh, target).map_err(|e| SourceError::Local(format!("putting the restored directory in place: {e}")))?;
            Ok(json!({ "directory": target, "previous_contents_moved_to": aside, "comparison": c }))
        }
        "nats" => sources::nats::restore_to(repo, m, identity, target, replace, progress).await,
        other => Err(SourceError::Invalid(format!("restoring {other} backups is not available in this version"))),
    }
}
