//! Backups as records: what was taken, verified and restored, and backup ids.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupStatus {
    Running,
    Succeeded,
    Failed,
    /// Steward stopped while it ran: it never completed, and its objects are leftovers.
    Interrupted,
    /// Pruned (or deleted): the record stays, the data is gone.
    Deleted,
}

impl BackupStatus {
    pub const ALL: [BackupStatus; 5] =
        [BackupStatus::Running, BackupStatus::Succeeded, BackupStatus::Failed, BackupStatus::Interrupted, BackupStatus::Deleted];

    pub fn as_str(self) -> &'static str {
        match self {
            BackupStatus::Running => "running",
            BackupStatus::Succeeded => "succeeded",
            BackupStatus::Failed => "failed",
            BackupStatus::Interrupted => "interrupted",
            BackupStatus::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<BackupStatus> {
        BackupStatus::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// One backup as the store knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupRecord {
    /// `20261122T020000Z-7f3a`: sortable, unique, and the folder name in the repository.
    pub id: String,
    pub policy: String,
    pub repository: String,
    pub source: String,
    pub status: BackupStatus,
    /// `manual`, `schedule` or `api`.
    pub trigger: String,
    pub started_by: String,
    /// Which process runs it (host:pid:start), for leases and recovery.
    pub owner: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub heartbeat_at: DateTime<Utc>,
    pub plain_bytes: i64,
    pub stored_bytes: i64,
    pub error: Option<String>,
    /// What verification compares: row counts, key counts, file lists (summaries).
    pub facts: Json,
    pub verified_at: Option<DateTime<Utc>>,
    /// `passed` or `failed`.
    pub verify_result: Option<String>,
    /// 1: checksums; 2: restored into a scratch instance and compared.
    pub verify_level: Option<u8>,
    /// The last restore test's time: the RTO evidence.
    pub restore_ms: Option<i64>,
    /// A restore holds the backup until then (prune leaves it alone).
    pub restoring_until: Option<DateTime<Utc>>,
}

impl BackupRecord {
    pub fn duration_ms(&self) -> Option<i64> {
        self.finished_at.map(|f| (f - self.started_at).num_milliseconds())
    }

    /// Plain bytes per stored byte; `None` until there is something stored.
    pub fn compression_ratio(&self) -> Option<f64> {
        (self.stored_bytes > 0).then(|| self.plain_bytes as f64 / self.stored_bytes as f64)
    }

    /// The record as the API and `--output json` show it: every field, plus
    /// `duration_ms` and `compression_ratio`.
    pub fn view(&self) -> Json {
        let mut v = serde_json::to_value(self).unwrap_or(Json::Null);
        if let Json::Object(m) = &mut v {
            m.insert("duration_ms".into(), self.duration_ms().into());
            m.insert("compression_ratio".into(), self.compression_ratio().map(|r| (r * 100.0).round() / 100.0).into());
        }
        v
    }
}

#[derive(Debug, Clone)]
pub struct NewBackup {
    pub id: String,
    pub policy: String,
    pub repository: String,
    pub source: String,
    pub trigger: String,
    pub started_by: String,
    pub owner: String,
    pub started_at: DateTime<Utc>,
    /// Unique per schedule fire, so a fire never starts two backups (across restarts).
    pub trigger_key: Option<String>,
    /// How long the lease lasts without a heartbeat.
    pub lease: std::time::Duration,
}

/// One verification of one backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    pub id: i64,
    pub backup_id: String,
    pub policy: String,
    pub level: u8,
    pub trigger: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// `running`, `passed` or `failed`.
    pub result: String,
    /// What was checked and what differed.
    pub detail: Json,
    pub restore_ms: Option<i64>,
}

/// One restore of one backup: who restored what into where, and how it ended. The
/// row is written `running` before the target is touched, so a restore cut off by a
/// crash reads `interrupted` (the target may hold part of the data), never nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoreRecord {
    pub id: i64,
    pub backup_id: String,
    pub policy: String,
    /// Where it went, with any password in a URL replaced by `***`.
    pub target: String,
    pub actor: String,
    /// The target held data and `--force` replaced it.
    pub replaced: bool,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// `running`, `succeeded`, `differs` (restored, but not equal to what the backup
    /// recorded), `failed` or `interrupted`.
    pub result: String,
    /// The comparison, or the error.
    pub detail: Json,
}

/// A restore about to start.
#[derive(Debug, Clone)]
pub struct NewRestore {
    pub backup_id: String,
    pub policy: String,
    pub target: String,
    pub actor: String,
    pub replaced: bool,
    /// Prune leaves the backup alone until then, even if the restore's process dies
    /// without a word (a stale restore is settled by `interrupt_stale_restores`).
    pub hold_until: DateTime<Utc>,
}

#[derive(Debug, Clone, Default)]
pub struct BackupQuery {
    pub policy: Option<String>,
    pub status: Option<BackupStatus>,
    pub limit: u32,
}

/// A new backup id: the start time (sortable) and 4 random hex digits.
pub fn new_id(at: DateTime<Utc>) -> String {
    format!("{}-{:04x}", at.format("%Y%m%dT%H%M%SZ"), rand::random::<u16>())
}

/// Whether `id` has the shape [`new_id`] makes (it becomes a path in the repository).
pub fn valid_id(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 21
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'Z'
        && b[16] == b'-'
        && b[17..].iter().all(|c| c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_valid_and_sort_by_time() {
        let a = new_id("2026-11-22T02:00:00Z".parse().unwrap());
        let b = new_id("2026-11-22T02:00:01Z".parse().unwrap());
        assert!(valid_id(&a) && valid_id(&b), "{a} {b}");
        assert!(a < b);
        assert!(!valid_id("../../etc"));
        assert!(!valid_id("20261122T020000Z-zzzz"));
    }
}
