//! Continuous WAL archiving for PostgreSQL point-in-time recovery: `steward wal push`
//! runs as `archive_command`, `steward wal fetch` as `restore_command`.
//!
//! Files go into the policy's repository beside its backups, compressed (zstd),
//! encrypted (age) and checksummed (blake3) like backup objects:
//!
//! ```text
//! _wal/<policy>/cluster.json     the system identifier of the cluster archived here
//! _wal/<policy>/<file>           the WAL file as stored (a segment, .partial, .history, .backup)
//! _wal/<policy>/<file>.json      its record, written last: the file is archived from then on
//! ```
//!
//! (`_wal` cannot be a policy's name, which starts with a letter or digit.)
//!
//! **Invariants.**
//! - A push succeeds (exit 0, which PostgreSQL takes as "archived, recycle it") only
//!   once the file and its record are stored, read back with matching size and blake3,
//!   and — on a local repository — fsynced. Anything less fails, and PostgreSQL keeps
//!   the segment in `pg_wal` and tries again: a hole is never reported as success.
//! - A file is archived once. Pushing the same bytes again succeeds without writing
//!   (PostgreSQL re-pushes after a crash between our success and its bookkeeping);
//!   different bytes under an archived name are refused loudly (exit 4), never
//!   overwritten.
//! - Segments carry their cluster's system identifier (the long page header of their
//!   first page); a segment from another cluster is refused, so two clusters never
//!   share one archive.
//! - A fetch writes the file only after its content's blake3 matched the record, to a
//!   temporary file renamed into place: recovery never replays a damaged segment.

use std::io::{Read, Write};
use std::path::Path;

use chrono::{DateTime, Utc};
use object_store::path::Path as ObjectPath;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::pipeline::{CHANNEL_CHUNKS, ChunkReceiver, Digest, ObjectReader, ObjectWriter};
use super::repository::{Repo, RepoError};
use crate::config::Config;
use crate::config::backups::BackupSource;

/// What is kept of an archived file, beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Archived {
    pub file: String,
    /// The file as PostgreSQL wrote it.
    pub content: Digest,
    /// The object as stored (compressed, maybe encrypted).
    pub stored: Digest,
    pub encrypted: bool,
    /// For segments: the cluster's system identifier and the timeline, from the file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_identifier: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u32>,
    pub archived_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Cluster {
    system_identifier: String,
}

#[derive(Debug)]
pub enum Pushed {
    Stored(Archived),
    /// The same bytes were archived before: nothing written.
    AlreadyArchived(Archived),
}

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// Bad input: no such policy, a file name that is not PostgreSQL's, an unreadable file.
    #[error("{0}")]
    Invalid(String),
    /// Refused: a different file under an archived name, or another cluster's segment.
    #[error("{0}")]
    Refused(String),
    /// The file is not in the archive (normal at the end of recovery).
    #[error("{0}")]
    NotArchived(String),
    /// The repository failed or holds something damaged.
    #[error("{0}")]
    Failed(String),
}

impl From<RepoError> for WalError {
    fn from(e: RepoError) -> WalError {
        WalError::Failed(e.to_string())
    }
}

/// One policy's WAL archive.
pub struct WalArchive {
    repo: Repo,
    policy: String,
    level: i32,
    identity: Option<age::x25519::Identity>,
}

/// Whether `name` is a file PostgreSQL archives: a segment (24 hex digits, maybe
/// `.partial`), a timeline history (`8 hex.history`) or a backup label
/// (`24 hex.8 hex.backup`). Anything else — a path, `..` — is refused before it
/// reaches a key or a file name.
pub fn valid_name(name: &str) -> bool {
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase());
    match name.split('.').collect::<Vec<_>>().as_slice() {
        [seg] => hex(seg, 24),
        [seg, "partial"] => hex(seg, 24),
        [tli, "history"] => hex(tli, 8),
        [seg, offset, "backup"] => hex(seg, 24) && hex(offset, 8),
        _ => false,
    }
}

/// A segment's system identifier and timeline, from the long header of its first page
/// (`XLogLongPageHeaderData`: magic, info with XLP_LONG_HEADER, timeline at 4, system
/// identifier at 24, little-endian); `None` for other files or a header that is not one.
pub fn segment_identity(name: &str, data: &[u8]) -> Option<(u64, u32)> {
    const XLP_LONG_HEADER: u16 = 0x0002;
    let is_segment = name.len() == 24 || name.ends_with(".partial");
    if !is_segment || data.len() < 40 {
        return None;
    }
    let info = u16::from_le_bytes([data[2], data[3]]);
    if info & XLP_LONG_HEADER == 0 {
        return None;
    }
    let timeline = u32::from_le_bytes(data[4..8].try_into().ok()?);
    let sysid = u64::from_le_bytes(data[24..32].try_into().ok()?);
    Some((sysid, timeline))
}

impl WalArchive {
    /// The archive of `policy`, which must back up PostgreSQL.
    pub fn open(config: &Config, policy: &str) -> Result<WalArchive, WalError> {
        let p = config.backup(policy).ok_or_else(|| {
            let known: Vec<&str> =
                config.backups.iter().filter(|b| matches!(b.source, BackupSource::Postgres(_))).map(|b| b.name.as_str()).collect();
            WalError::Invalid(format!(
                "no backup policy `{policy}`; PostgreSQL policies: {}",
                if known.is_empty() { "none".into() } else { known.join(", ") }
            ))
        })?;
        if !matches!(p.source, BackupSource::Postgres(_)) {
            return Err(WalError::Invalid(format!(
                "backup policy `{policy}` does not back up PostgreSQL; WAL archiving needs a `postgres:` policy"
            )));
        }
        let repo_config = config
            .repository(&p.repository)
            .ok_or_else(|| WalError::Invalid(format!("repository `{}` is not configured", p.repository)))?;
        let identity = p.encryption_key.as_ref().map(|k| super::pipeline::identity(k.expose())).transpose().map_err(WalError::Invalid)?;
        Ok(WalArchive { repo: Repo::open(repo_config)?, policy: policy.to_string(), level: p.compression_level, identity })
    }

    fn key(&self, file: &str) -> ObjectPath {
        ObjectPath::from(format!("_wal/{}/{file}", self.policy))
    }

    fn record_key(&self, file: &str) -> ObjectPath {
        ObjectPath::from(format!("_wal/{}/{file}.json", self.policy))
    }

    /// The record of an archived file; `None` when it is not archived.
    pub async fn record(&self, file: &str) -> Result<Option<Archived>, WalError> {
        match self.repo.get_small(&self.record_key(file)).await? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| WalError::Failed(format!("the record of {file} in the archive is damaged: {e}"))),
        }
    }

    /// Archives the file at `path` (see the module's invariants).
    pub async fn push(&self, path: &Path) -> Result<Pushed, WalError> {
        let file = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        if !valid_name(&file) {
            return Err(WalError::Invalid(format!(
                "{} is not a WAL file PostgreSQL archives (a segment, .partial, .history or .backup)",
                path.display()
            )));
        }
        let data = std::fs::read(path).map_err(|e| WalError::Invalid(format!("cannot read {}: {e}", path.display())))?;
        let content = Digest { bytes: data.len() as u64, blake3: blake3::hash(&data).to_hex().to_string() };
        if let Some(before) = self.record(&file).await? {
            if before.content == content {
                return Ok(Pushed::AlreadyArchived(before));
            }
            return Err(WalError::Refused(format!(
                "{file} is already archived with different content ({} bytes, blake3 {}; this one: {} bytes, blake3 {}); refusing to overwrite it. \
                 Two clusters archiving into one policy, or a restored cluster writing on an old timeline, look like this: give each its own policy",
                before.content.bytes, before.content.blake3, content.bytes, content.blake3
            )));
        }
        let identity = segment_identity(&file, &data);
        if let Some((sysid, _)) = identity {
            self.check_cluster(sysid).await?;
        }
        // A push that failed before its record left the object: it was never archived.
        let key = self.key(&file);
        self.repo.delete_key(&key).await?;
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        let (level, recipient) = (self.level, self.identity.as_ref().map(|i| i.to_public()));
        let encoder = tokio::task::spawn_blocking(move || -> std::io::Result<(Digest, Digest)> {
            let mut w = ObjectWriter::new(level, recipient.as_ref(), tx)?;
            w.write_all(&data)?;
            w.finish()
        });
        let stored = self.repo.put_new(&key, rx).await;
        let encoded = encoder.await.map_err(|e| WalError::Failed(format!("the encoder stopped: {e}")))?;
        let (plain, written) = encoded.map_err(|e| WalError::Failed(format!("cannot compress {file}: {e}")))?;
        let stored = stored?;
        if plain != content || written != stored {
            return Err(WalError::Failed(format!("{file} changed while it was archived; PostgreSQL will push it again")));
        }
        let record = Archived {
            file: file.clone(),
            content,
            stored,
            encrypted: self.identity.is_some(),
            system_identifier: identity.map(|(s, _)| s.to_string()),
            timeline: identity.map(|(_, t)| t),
            archived_at: crate::clock::now(),
        };
        let record_key = self.record_key(&file);
        self.repo.put_small(&record_key, serde_json::to_vec_pretty(&record).expect("a record serializes")).await?;
        self.repo.sync(&[&key, &record_key])?;
        Ok(Pushed::Stored(record))
    }

    /// Refuses a segment of another cluster than the one this archive holds; the first
    /// segment pushed names the cluster.
    async fn check_cluster(&self, sysid: u64) -> Result<(), WalError> {
        let key = ObjectPath::from(format!("_wal/{}/cluster.json", self.policy));
        match self.repo.get_small(&key).await? {
            Some(bytes) => {
                let known: Cluster =
                    serde_json::from_slice(&bytes).map_err(|e| WalError::Failed(format!("the archive's cluster.json is damaged: {e}")))?;
                if known.system_identifier != sysid.to_string() {
                    return Err(WalError::Refused(format!(
                        "this segment comes from the cluster with system identifier {sysid}, but policy `{}` archives cluster {}; \
                         refusing to mix them (a new cluster, e.g. after initdb, needs its own policy)",
                        self.policy, known.system_identifier
                    )));
                }
                Ok(())
            }
            None => {
                let body = serde_json::to_vec_pretty(&Cluster { system_identifier: sysid.to_string() }).expect("serializes");
                self.repo.put_small(&key, body).await?;
                self.repo.sync(&[&key])?;
                Ok(())
            }
        }
    }

    /// Restores archived `file` to `dest` (see the module's invariants).
    pub async fn fetch(&self, file: &str, dest: &Path) -> Result<Archived, WalError> {
        if !valid_name(file) {
            return Err(WalError::Invalid(format!("{file} is not a WAL file name")));
        }
        let record = self.record(file).await?.ok_or_else(|| WalError::NotArchived(format!("{file} is not in the archive")))?;
        if record.encrypted && self.identity.is_none() {
            return Err(WalError::Invalid(format!("{file} is encrypted and policy `{}` has no encryption_key to read it", self.policy)));
        }
        let dir = dest.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let temp = dir.join(format!(".{file}.steward-fetch"));
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        let (identity, encrypted, out) = (self.identity.clone(), record.encrypted, temp.clone());
        let decoder = tokio::task::spawn_blocking(move || -> Result<Digest, String> {
            let mut reader = ObjectReader::new(ChunkReceiver::new(rx), identity.as_ref(), encrypted).map_err(|e| e.to_string())?;
            let mut f = std::fs::File::create(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
            let mut buf = vec![0; 1 << 20];
            loop {
                let n = reader.read(&mut buf).map_err(|e| e.to_string())?;
                if n == 0 {
                    break;
                }
                f.write_all(&buf[..n]).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
            }
            f.sync_all().map_err(|e| format!("cannot sync {}: {e}", out.display()))?;
            reader.finish().map_err(|e| e.to_string())
        });
        let stored = self.repo.get_into(&self.key(file), tx).await;
        let decoded = decoder.await.map_err(|e| WalError::Failed(format!("the decoder stopped: {e}")))?;
        let result = match (stored, decoded) {
            (Err(e), _) => Err(WalError::from(e)),
            (Ok(stored), _) if stored != record.stored => Err(WalError::Failed(format!(
                "{file} is damaged in the archive: stored {} bytes (blake3 {}), read {} bytes (blake3 {})",
                record.stored.bytes, record.stored.blake3, stored.bytes, stored.blake3
            ))),
            (Ok(_), Err(e)) => Err(WalError::Failed(format!("cannot decode {file}: {e}"))),
            (Ok(_), Ok(content)) if content != record.content => {
                Err(WalError::Failed(format!("{file} decodes to different content than was archived")))
            }
            (Ok(_), Ok(_)) => Ok(()),
        };
        if let Err(e) = result {
            let _ = std::fs::remove_file(&temp);
            return Err(e);
        }
        std::fs::rename(&temp, dest).map_err(|e| WalError::Failed(format!("cannot move {file} into {}: {e}", dest.display())))?;
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_postgres_file_names_are_accepted() {
        for ok in
            ["000000010000000000000003", "000000010000000000000003.partial", "00000002.history", "000000010000000000000003.00000028.backup"]
        {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "..",
            "../etc/passwd",
            "00000001000000000000000",
            "000000010000000000000003.json",
            "00000002.HISTORY",
            "0000000100000000000000zz",
            "000000010000000000000003/x",
            "000000010000000000000003a",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn a_segment_names_its_cluster_and_timeline() {
        let mut page = vec![0u8; 8192];
        page[0..2].copy_from_slice(&0xD116u16.to_le_bytes());
        page[2..4].copy_from_slice(&0x0002u16.to_le_bytes());
        page[4..8].copy_from_slice(&3u32.to_le_bytes());
        page[24..32].copy_from_slice(&7_311_111_111_111_111_111u64.to_le_bytes());
        assert_eq!(segment_identity("000000030000000000000001", &page), Some((7_311_111_111_111_111_111, 3)));
        assert_eq!(segment_identity("00000003.history", &page), None, "not a segment");
        page[2] = 0;
        assert_eq!(segment_identity("000000030000000000000001", &page), None, "no long header");
    }
}
