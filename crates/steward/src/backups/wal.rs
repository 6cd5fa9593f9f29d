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
//! - A fetch streams the file into a temporary file beside its destination and renames
//!   it into place only once the stored bytes' and the content's blake3 matched the
//!   record: recovery never replays a damaged segment.
//! - Push and fetch stream: memory stays flat whatever the segment size (up to 1 GiB,
//!   PostgreSQL's largest; anything bigger is not a WAL file and is refused).

use std::collections::BTreeSet;
use std::io::Read;
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
        Ok(WalArchive::new(Repo::open(repo_config)?, policy, p.compression_level, identity))
    }

    /// The archive of `policy` in `repo`, written at zstd `level`, read and written
    /// with `identity` when the policy encrypts.
    pub fn new(repo: Repo, policy: &str, level: i32, identity: Option<age::x25519::Identity>) -> WalArchive {
        WalArchive { repo, policy: policy.to_string(), level, identity }
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

    /// Archives the file at `path` — PostgreSQL's `%p` — and, with `ahead > 0`, up to
    /// `ahead` of the files PostgreSQL has marked ready after it, in parallel: when
    /// PostgreSQL asks for those, they are found archived and answered at once. Only
    /// `path`'s own outcome is returned: nothing is reported archived that is not
    /// stored. Every push of a file on this host holds its lock (see [`PushLock`]), so a
    /// push ahead and PostgreSQL's own call for the same file never write at once.
    pub async fn push_ahead(&self, path: &Path, ahead: usize) -> Result<Pushed, WalError> {
        let file = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        if !valid_name(&file) {
            // Refused by push, before any lock file is made for a name that is not WAL's.
            return self.push(path).await;
        }
        let status = path.parent().map(|d| d.join("archive_status")).filter(|d| d.is_dir());
        let next: Vec<String> = match (&status, ahead) {
            (Some(dir), 1..) => ready_after(dir, &file, ahead),
            _ => Vec::new(),
        };
        let own = async {
            let lock = match &status {
                Some(dir) => Some(PushLock::wait(dir, &file).await?),
                None => None,
            };
            let pushed = self.push(path).await;
            if let (Ok(_), Some(lock)) = (&pushed, lock) {
                // PostgreSQL's call succeeded: it will not ask for this file again, so
                // the lock file goes (while still held; see PushLock).
                lock.remove();
            }
            pushed
        };
        let status_dir = status.as_deref();
        let others = futures::future::join_all(next.iter().map(|name| async move {
            let Some(dir) = status_dir else { return };
            // Someone else is pushing it (PostgreSQL's call, another push ahead): theirs.
            let Some(_lock) = PushLock::try_take(dir, name) else { return };
            if matches!(self.record(name).await, Ok(Some(_))) {
                return;
            }
            if let Err(e) = self.push(&path.with_file_name(name)).await {
                tracing::debug!(file = %name, error = %e, "a push ahead failed; PostgreSQL's own call will push it");
            }
        }));
        let (pushed, _) = tokio::join!(own, others);
        pushed
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
        // Streamed, never held whole: a segment may be 1 GiB (wal_segment_size's maximum).
        let unreadable = |e: std::io::Error| WalError::Invalid(format!("cannot read {}: {e}", path.display()));
        let size = std::fs::metadata(path).map_err(unreadable)?.len();
        if size > MAX_FILE {
            return Err(WalError::Invalid(format!(
                "{} is {size} bytes, more than the 1 GiB PostgreSQL's largest segment has: not a WAL file",
                path.display()
            )));
        }
        let mut header = vec![0u8; 64];
        let n = std::fs::File::open(path).and_then(|mut f| read_up_to(&mut f, &mut header)).map_err(unreadable)?;
        header.truncate(n);
        if let Some(before) = self.record(&file).await? {
            let source = path.to_path_buf();
            let hashed = tokio::task::spawn_blocking(move || {
                let mut hasher = blake3::Hasher::new();
                hasher.update_reader(std::fs::File::open(&source)?)?;
                Ok::<_, std::io::Error>(hasher.finalize())
            })
            .await
            .map_err(|e| WalError::Failed(format!("the hasher stopped: {e}")))?
            .map_err(unreadable)?;
            let content = Digest { bytes: size, blake3: hashed.to_hex().to_string() };
            if before.content == content {
                return Ok(Pushed::AlreadyArchived(before));
            }
            return Err(WalError::Refused(format!(
                "{file} is already archived with different content ({} bytes, blake3 {}; this one: {} bytes, blake3 {}); refusing to overwrite it. \
                 Two clusters archiving into one policy, or a restored cluster writing on an old timeline, look like this: give each its own policy",
                before.content.bytes, before.content.blake3, content.bytes, content.blake3
            )));
        }
        let identity = segment_identity(&file, &header);
        if let Some((sysid, _)) = identity {
            self.check_cluster(sysid).await?;
        }
        // A push that failed before its record left the object: it was never archived.
        let key = self.key(&file);
        self.repo.delete_key(&key).await?;
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        let (level, recipient) = (self.level, self.identity.as_ref().map(|i| i.to_public()));
        let source = path.to_path_buf();
        let encoder = tokio::task::spawn_blocking(move || -> std::io::Result<(Digest, Digest)> {
            let mut w = ObjectWriter::new(level, recipient.as_ref(), tx)?;
            std::io::copy(&mut std::fs::File::open(&source)?, &mut w)?;
            w.finish()
        });
        let stored = self.repo.put_new(&key, rx).await;
        let encoded = encoder.await.map_err(|e| WalError::Failed(format!("the encoder stopped: {e}")))?;
        let (content, written) = encoded.map_err(|e| WalError::Failed(format!("cannot compress {file}: {e}")))?;
        let stored = stored?;
        if written != stored {
            return Err(WalError::Failed(format!("the bytes stored for {file} differ from those encoded; PostgreSQL will push it again")));
        }
        if content.bytes != size {
            return Err(WalError::Failed(format!(
                "{file} changed while it was read ({size} bytes, then {}); PostgreSQL will push it again",
                content.bytes
            )));
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

    /// An archived file's content, read and checked against its record: the stored
    /// bytes' blake3, then the content's after decryption and decompression.
    pub async fn read(&self, file: &str) -> Result<(Archived, Vec<u8>), WalError> {
        self.decode(file, |reader| {
            let mut out = Vec::new();
            reader.read_to_end(&mut out)?;
            Ok(out)
        })
        .await
    }

    /// Streams an archived file's content into `consume`, then checks it against its
    /// record: the stored bytes' blake3, then the content's. What `consume` made is
    /// returned only when both match (a caller that wrote a file deletes it otherwise).
    async fn decode<T: Send + 'static>(
        &self,
        file: &str,
        consume: impl FnOnce(&mut dyn Read) -> std::io::Result<T> + Send + 'static,
    ) -> Result<(Archived, T), WalError> {
        if !valid_name(file) {
            return Err(WalError::Invalid(format!("{file} is not a WAL file name")));
        }
        let record = self.record(file).await?.ok_or_else(|| WalError::NotArchived(format!("{file} is not in the archive")))?;
        if record.encrypted && self.identity.is_none() {
            return Err(WalError::Invalid(format!("{file} is encrypted and policy `{}` has no encryption key to read it", self.policy)));
        }
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        let (identity, encrypted) = (self.identity.clone(), record.encrypted);
        let decoder = tokio::task::spawn_blocking(move || -> Result<(T, Digest), String> {
            let mut reader = ObjectReader::new(ChunkReceiver::new(rx), identity.as_ref(), encrypted).map_err(|e| e.to_string())?;
            let out = consume(&mut reader).map_err(|e| e.to_string())?;
            let digest = reader.finish().map_err(|e| e.to_string())?;
            Ok((out, digest))
        });
        let stored = self.repo.get_into(&self.key(file), tx).await;
        let decoded = decoder.await.map_err(|e| WalError::Failed(format!("the decoder stopped: {e}")))?;
        match (stored, decoded) {
            (Err(e), _) => Err(WalError::from(e)),
            (Ok(stored), _) if stored != record.stored => Err(WalError::Failed(format!(
                "{file} is damaged in the archive: stored {} bytes (blake3 {}), read {} bytes (blake3 {})",
                record.stored.bytes, record.stored.blake3, stored.bytes, stored.blake3
            ))),
            (Ok(_), Err(e)) => Err(WalError::Failed(format!("cannot decode {file}: {e}"))),
            (Ok(_), Ok((_, content))) if content != record.content => {
                Err(WalError::Failed(format!("{file} decodes to different content than was archived")))
            }
            (Ok(_), Ok((data, _))) => Ok((record, data)),
        }
    }

    /// Restores archived `file` to `dest` (see the module's invariants): checked, then
    /// written to a temporary file beside `dest`, synced and renamed into place.
    pub async fn fetch(&self, file: &str, dest: &Path) -> Result<Archived, WalError> {
        let dir = dest.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let temp = dir.join(format!(".{file}.steward-fetch"));
        let written = temp.clone();
        let fetched = self
            .decode(file, move |reader| {
                let mut f = std::fs::File::create(&written)?;
                std::io::copy(reader, &mut f)?;
                f.sync_all()
            })
            .await;
        let record = match fetched {
            Ok((record, ())) => record,
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                return Err(e);
            }
        };
        std::fs::rename(&temp, dest).map_err(|e| WalError::Failed(format!("cannot move {file} into {}: {e}", dest.display())))?;
        Ok(record)
    }

    /// The archive's continuity and the record of its newest segment (for checks).
    pub async fn status(&self) -> Result<(Continuity, Option<Archived>), WalError> {
        let c = self.verify().await?;
        let newest = match &c.last {
            Some(name) => self.record(name).await?,
            None => None,
        };
        Ok((c, newest))
    }

    /// The files archived (a file is archived once its record is there), and the
    /// segment size they have.
    pub async fn archived(&self) -> Result<(BTreeSet<String>, u64), WalError> {
        let prefix = ObjectPath::from(format!("_wal/{}", self.policy));
        let names: BTreeSet<String> = self.repo.keys(&prefix).await?.iter().filter_map(|k| k.filename().map(str::to_string)).collect();
        let archived: BTreeSet<String> = names
            .iter()
            .filter_map(|n| n.strip_suffix(".json"))
            .filter(|n| valid_name(n) && names.contains(*n))
            .map(str::to_string)
            .collect();
        let mut segment_size = DEFAULT_SEGMENT_SIZE;
        if let Some(seg) = archived.iter().find(|n| n.len() == 24)
            && let Some(r) = self.record(seg).await?
        {
            segment_size = r.content.bytes;
        }
        Ok((archived, segment_size))
    }

    /// Removes an archived file: its record first, so a removal cut short leaves a
    /// file that is simply not archived, never a record without its file.
    pub async fn remove(&self, file: &str) -> Result<(), WalError> {
        if !valid_name(file) {
            return Err(WalError::Invalid(format!("{file} is not a WAL file name")));
        }
        self.repo.delete_key(&self.record_key(file)).await?;
        self.repo.delete_key(&self.key(file)).await?;
        Ok(())
    }

    /// Every complete physical base backup of the policy in its repository, oldest
    /// first, and whether the archive holds every segment from its start to the newest
    /// on the path (then it restores to any point from its end to the newest WAL).
    pub async fn base_backups(&self, continuity: &Continuity) -> Result<Vec<BaseBackupReach>, WalError> {
        let mut out = Vec::new();
        for (id, complete) in self.repo.list(&self.policy).await? {
            if !complete {
                continue;
            }
            let Some(manifest) = self.repo.manifest(&self.policy, &id).await? else { continue };
            let Some(base) = super::sources::physical::BaseFacts::of(&manifest.facts) else { continue };
            let start = base.start_lsn / base.segment_size;
            let missing: Vec<String> = continuity
                .missing
                .iter()
                .filter(|m| parse_segment(m, base.segment_size).is_some_and(|(_, s)| s >= start))
                .cloned()
                .collect();
            out.push(BaseBackupReach {
                id,
                from: segment_name(base.timeline, start, base.segment_size),
                ended_at: base.stopped_at,
                restorable_to_newest: missing.is_empty() && continuity.last.is_some(),
                first_missing: missing.first().cloned(),
            });
        }
        Ok(out)
    }

    /// Whether every segment from the oldest archived one to the newest is there, on
    /// the timelines the newest timeline's history names (see [`continuity`]).
    pub async fn verify(&self) -> Result<Continuity, WalError> {
        let (archived, segment_size) = self.archived().await?;
        let newest_history = archived.iter().filter(|n| n.ends_with(".history")).max();
        let history = match newest_history {
            Some(h) => {
                let (_, text) = self.read(h).await?;
                let tli = u32::from_str_radix(&h[..8], 16).unwrap_or(0);
                let ancestors = parse_history(&String::from_utf8_lossy(&text)).map_err(|e| WalError::Failed(format!("{h}: {e}")))?;
                Some((tli, ancestors))
            }
            None => None,
        };
        Ok(continuity(&archived, history.as_ref().map(|(t, a)| (*t, a.as_slice())), segment_size))
    }
}

/// The archived files no kept base backup needs, in the order to remove them: every
/// segment, `.partial` and `.backup` file before `keep_from` (the segment number where
/// the oldest kept base backup starts), on any timeline, lowest segment first — so a
/// removal cut short leaves the rest continuous. Timeline histories are always kept:
/// they are tiny, and recovery follows them to the newest timeline. Everything from
/// `keep_from` on stays, abandoned branches included: a restore may target them.
pub fn prunable(archived: &BTreeSet<String>, keep_from: u64, segment_size: u64) -> Vec<String> {
    let mut out: Vec<(u64, &String)> = archived
        .iter()
        .filter(|n| !n.ends_with(".history"))
        .filter_map(|n| parse_segment(n.get(..24)?, segment_size).map(|(_, s)| (s, n)))
        .filter(|(s, _)| *s < keep_from)
        .collect();
    out.sort();
    out.into_iter().map(|(_, n)| n.clone()).collect()
}

/// Up to `n` files PostgreSQL marked ready to archive (`NAME.ready` in
/// `archive_status`) after `file`, in the order it archives them.
fn ready_after(status: &Path, file: &str, n: usize) -> Vec<String> {
    let mut ready: Vec<String> = std::fs::read_dir(status)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".ready").map(str::to_string))
        .filter(|name| valid_name(name) && name.as_str() > file)
        .collect();
    ready.sort();
    ready.truncate(n);
    ready
}

/// The exclusive lock on pushing one file from this host: an advisory lock (flock) on
/// `archive_status/FILE.steward-push` beside PostgreSQL's own status files (which
/// base backups leave out). The kernel releases it when its process dies.
///
/// The lock file is removed only by the push PostgreSQL itself asked for, after it
/// succeeded, while holding it. A push ahead that still opens the old file then holds
/// a lock nobody else can see — harmless: the file is archived by then, and a push of
/// an archived file writes nothing. Before the file is archived the lock file is never
/// removed, so two pushes of one file never write at once.
struct PushLock {
    file: std::fs::File,
    path: std::path::PathBuf,
}

impl PushLock {
    fn open(status: &Path, name: &str) -> std::io::Result<PushLock> {
        let path = status.join(format!("{name}.steward-push"));
        let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path)?;
        Ok(PushLock { file, path })
    }

    /// Waits for the lock (another push of the file may hold it for a while).
    async fn wait(status: &Path, name: &str) -> Result<PushLock, WalError> {
        let lock = PushLock::open(status, name).map_err(|e| WalError::Failed(format!("cannot lock {name} for its push: {e}")))?;
        tokio::task::spawn_blocking(move || lock.file.lock().map(|()| lock))
            .await
            .map_err(|e| WalError::Failed(format!("the lock waiter stopped: {e}")))?
            .map_err(|e| WalError::Failed(format!("cannot lock {name} for its push: {e}")))
    }

    /// The lock if nobody holds it now.
    fn try_take(status: &Path, name: &str) -> Option<PushLock> {
        let lock = PushLock::open(status, name).ok()?;
        lock.file.try_lock().ok()?;
        Some(lock)
    }

    fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The largest file `wal push` takes: PostgreSQL's largest `wal_segment_size`.
const MAX_FILE: u64 = 1 << 30;

/// Reads until `buf` is full or the file ends; returns how much was read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// PostgreSQL's default `wal_segment_size`.
const DEFAULT_SEGMENT_SIZE: u64 = 16 << 20;

/// The ancestors in a timeline history file (`00000003.history`): each earlier timeline
/// and the LSN where the next one branched off, oldest first.
pub fn parse_history(text: &str) -> Result<Vec<(u32, u64)>, String> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let mut fields = line.split_whitespace();
        let (Some(tli), Some(lsn)) = (fields.next(), fields.next()) else {
            return Err(format!("a line without a timeline and an LSN: {line:?}"));
        };
        let tli = tli.parse::<u32>().map_err(|_| format!("not a timeline: {tli:?}"))?;
        out.push((tli, parse_lsn(lsn).ok_or_else(|| format!("not an LSN: {lsn:?}"))?));
    }
    Ok(out)
}

/// `16/B374D848` as a 64-bit position.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    Some((u64::from(u32::from_str_radix(hi, 16).ok()?) << 32) | u64::from(u32::from_str_radix(lo, 16).ok()?))
}

/// A segment file's name: timeline, then the segment number in two 32-bit halves.
pub fn segment_name(timeline: u32, segno: u64, segment_size: u64) -> String {
    let per_xlogid = 0x1_0000_0000 / segment_size.max(1);
    format!("{timeline:08X}{:08X}{:08X}", segno / per_xlogid, segno % per_xlogid)
}

/// (timeline, segment number) of a segment file's name.
pub fn parse_segment(name: &str, segment_size: u64) -> Option<(u32, u64)> {
    if name.len() != 24 {
        return None;
    }
    let per_xlogid = 0x1_0000_0000 / segment_size.max(1);
    let part = |r: std::ops::Range<usize>| u64::from_str_radix(&name[r], 16).ok();
    Some((u32::try_from(part(0..8)?).ok()?, part(8..16)? * per_xlogid + part(16..24)?))
}

/// What `steward wal verify` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Continuity {
    /// The newest timeline, and the ones before it with where each ended.
    pub timeline: u32,
    pub ancestors: Vec<Ancestor>,
    pub first: Option<String>,
    pub last: Option<String>,
    /// Segments from `first` to `last` on the path to `timeline`.
    pub expected: u64,
    /// How many of them are missing, and the first thousand names.
    pub missing_count: u64,
    pub missing: Vec<String>,
    pub continuous: bool,
}

/// What one base backup can reach through the archive (`wal verify`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BaseBackupReach {
    pub id: String,
    /// The first segment its recovery needs.
    pub from: String,
    pub ended_at: DateTime<Utc>,
    /// Every segment from `from` to the newest archived is there.
    pub restorable_to_newest: bool,
    /// The first hole after its start, where its recovery would stop.
    pub first_missing: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ancestor {
    pub timeline: u32,
    /// Where the next timeline branched off.
    pub ended_at: String,
}

/// Every segment from the oldest to the newest archived one, each on the timeline that
/// holds it for a recovery to the newest timeline: a segment before an ancestor's
/// branch point is that ancestor's, the one holding the branch point and later ones
/// the next timeline's (like `wal-g wal-verify timeline|integrity`). Segments of
/// abandoned branches are ignored; a missing one on the path is a hole.
pub fn continuity(archived: &BTreeSet<String>, history: Option<(u32, &[(u32, u64)])>, segment_size: u64) -> Continuity {
    let segments: Vec<(u32, u64)> = archived.iter().filter_map(|n| parse_segment(n, segment_size)).collect();
    let newest_segment_tli = segments.iter().map(|(t, _)| *t).max().unwrap_or(1);
    let (timeline, ancestors) = match history {
        Some((tli, a)) if tli >= newest_segment_tli => (tli, a.to_vec()),
        _ => (newest_segment_tli, Vec::new()),
    };
    let timeline_of = |segno: u64| ancestors.iter().find(|(_, end)| segno < end / segment_size.max(1)).map_or(timeline, |(t, _)| *t);
    let on_path: Vec<u64> = segments.iter().filter(|(t, s)| timeline_of(*s) == *t).map(|(_, s)| *s).collect();
    let (first, last) = (on_path.iter().min().copied(), on_path.iter().max().copied());
    let mut missing = Vec::new();
    let mut missing_count = 0;
    if let (Some(a), Some(b)) = (first, last) {
        for s in a..=b {
            let name = segment_name(timeline_of(s), s, segment_size);
            if !archived.contains(&name) {
                missing_count += 1;
                if missing.len() < 1000 {
                    missing.push(name);
                }
            }
        }
    }
    let lsn = |l: u64| format!("{:X}/{:X}", l >> 32, l & 0xffff_ffff);
    Continuity {
        timeline,
        ancestors: ancestors.iter().map(|(t, l)| Ancestor { timeline: *t, ended_at: lsn(*l) }).collect(),
        first: first.map(|s| segment_name(timeline_of(s), s, segment_size)),
        last: last.map(|s| segment_name(timeline_of(s), s, segment_size)),
        expected: first.zip(last).map_or(0, |(a, b)| b - a + 1),
        missing_count,
        missing,
        continuous: missing_count == 0,
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

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn segment_names_count_across_log_files() {
        let size = 16 << 20;
        assert_eq!(segment_name(1, 255, size), "0000000100000000000000FF");
        assert_eq!(segment_name(1, 256, size), "000000010000000100000000");
        assert_eq!(parse_segment("000000020000000100000003", size), Some((2, 259)));
        assert_eq!(segment_name(1, 4096, 1 << 30), "000000010000040000000000", "1 GB segments: 4 per log file");
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(parse_lsn("x/1"), None);
    }

    #[test]
    fn one_timeline_is_continuous_until_a_segment_is_missing() {
        let size = 16 << 20;
        let all: Vec<String> = (0xFD..=0x102).map(|s| segment_name(1, s, size)).collect();
        let mut archived: BTreeSet<String> = all.iter().cloned().collect();
        archived.insert("000000010000000000000002.00000028.backup".into());
        let c = continuity(&archived, None, size);
        assert!(c.continuous, "{c:?}");
        assert_eq!(
            (c.first.as_deref(), c.last.as_deref(), c.expected),
            (Some("0000000100000000000000FD"), Some("000000010000000100000002"), 6)
        );
        archived.remove("000000010000000100000000");
        let c = continuity(&archived, None, size);
        assert_eq!((c.continuous, c.missing_count, c.missing.clone()), (false, 1, vec!["000000010000000100000000".to_string()]));
    }

    #[test]
    fn the_newest_timeline_is_followed_through_its_history() {
        let size = 16 << 20;
        // Timeline 1 branched to 2 inside segment 5 (at 0/5000060); 2 to 3 inside 8.
        let history = parse_history("1\t0/5000060\tno recovery target specified\n\n2\t0/8000000\tbefore 2026-12-06 14:03:59\n").unwrap();
        assert_eq!(history, vec![(1, 0x5000060), (2, 0x8000000)]);
        let path = [
            "000000010000000000000003",
            "000000010000000000000004",
            "000000020000000000000005",
            "000000020000000000000006",
            "000000020000000000000007",
            "000000030000000000000008",
            "000000030000000000000009",
        ];
        // Beside them: the old primary's segments after the branch and a .partial, both off the path.
        let mut archived = names(&path);
        archived.extend(names(&[
            "000000010000000000000005",
            "000000010000000000000006",
            "000000010000000000000005.partial",
            "00000002.history",
            "00000003.history",
        ]));
        let c = continuity(&archived, Some((3, &history)), size);
        assert!(c.continuous, "{c:?}");
        assert_eq!(
            (c.timeline, c.first.as_deref(), c.last.as_deref(), c.expected),
            (3, Some("000000010000000000000003"), Some("000000030000000000000009"), 7)
        );
        assert_eq!(c.ancestors[1].ended_at, "0/8000000");
        // The new timeline's copy of the branch segment is the one recovery needs.
        archived.remove("000000020000000000000005");
        let c = continuity(&archived, Some((3, &history)), size);
        assert_eq!(c.missing, vec!["000000020000000000000005".to_string()], "the old timeline's 5 does not stand in for it");
        assert!(parse_history("1\tnot-an-lsn\treason").is_err());
    }

    proptest::proptest! {
        /// Retention keeps every segment a kept base backup needs — from its start to the
        /// newest, across timelines — and nothing before the oldest one's start but
        /// timeline histories; removed in its order and cut short anywhere, the archive
        /// stays continuous.
        #[test]
        fn wal_retention_keeps_exactly_what_kept_backups_need(
            first in 0u64..300,
            length in 1u64..200,
            branches in proptest::collection::vec(1u64..200, 0..3),
            abandoned in 0u64..4,
            kept in proptest::collection::vec(0u64..200, 1..4),
            cut in 0usize..400,
        ) {
            let size = 16 << 20;
            let last = first + length - 1;
            // Branch points inside the range, increasing: timeline i+1 starts at branch i.
            let mut points: Vec<u64> = branches.iter().map(|b| first + b % length).collect();
            points.sort();
            points.dedup();
            let history: Vec<(u32, u64)> = points.iter().enumerate().map(|(i, p)| (i as u32 + 1, p * size + 0x60)).collect();
            let newest = history.len() as u32 + 1;
            let timeline_of = |s: u64| history.iter().find(|(_, end)| s < end / size).map_or(newest, |(t, _)| *t);
            let path: Vec<(u64, String)> = (first..=last).map(|s| (s, segment_name(timeline_of(s), s, size))).collect();
            let mut archived: BTreeSet<String> = path.iter().map(|(_, n)| n.clone()).collect();
            for (t, end) in &history {
                let b = end / size;
                archived.insert(format!("{:08X}.history", t + 1));
                // The old primary's segments after the branch, and its .partial.
                for s in b..(b + abandoned).min(last + 1) {
                    archived.insert(segment_name(*t, s, size));
                }
                archived.insert(format!("{}.partial", segment_name(*t, b, size)));
            }
            let starts: Vec<u64> = kept.iter().map(|k| first + k % length).collect();
            for s in &starts {
                archived.insert(format!("{}.00000028.backup", segment_name(timeline_of(*s), *s, size)));
            }
            let keep_from = *starts.iter().min().unwrap();
            let gone = prunable(&archived, keep_from, size);
            let remaining: BTreeSet<String> = archived.iter().filter(|n| !gone.contains(n)).cloned().collect();
            for s in &starts {
                for (segno, name) in path.iter().filter(|(segno, _)| segno >= s) {
                    proptest::prop_assert!(remaining.contains(name), "{name} ({segno}) is needed by the backup at {s}");
                }
            }
            for n in &remaining {
                let early = parse_segment(n.get(..24).unwrap_or(""), size).is_some_and(|(_, s)| s < keep_from);
                proptest::prop_assert!(!early || n.ends_with(".history"), "{n} is before every kept backup");
            }
            let with_history = |set: &BTreeSet<String>| continuity(set, (!history.is_empty()).then_some((newest, history.as_slice())), size);
            proptest::prop_assert!(with_history(&remaining).continuous);
            // Cut short after any number of removals: still continuous.
            let partly: BTreeSet<String> = archived.iter().filter(|n| !gone[..cut.min(gone.len())].contains(n)).cloned().collect();
            proptest::prop_assert!(with_history(&partly).continuous, "cut after {cut} of {}", gone.len());
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
