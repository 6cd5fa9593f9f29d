//! What is backed up, and how each kind is restored and compared.
//!
//! Each source records *facts* at backup time, from the same snapshot as the data:
//! per-table row counts (PostgreSQL, MySQL/MariaDB), key counts (Redis), the file list
//! with sizes and blake3 (directories). A restore test restores into a scratch
//! instance and compares the same facts there.

pub mod directory;
pub mod mysql;
pub mod nats;
pub mod physical;
pub mod postgres;
pub mod process;
pub mod redis;

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value as Json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::manifest::{Manifest, ObjectInfo};
use super::pipeline::{CHANNEL_CHUNKS, ChunkReceiver, ObjectReader, ObjectWriter, OpenError};
use super::repository::Repo;

/// Why a source could not be backed up, restored or compared. The kind says where to
/// look first; the message (unchanged by the kind) says what happened.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The source or restore target could not be reached, or refused the login.
    #[error("{0}")]
    Unreachable(String),
    /// The source answered with an error (a query failed, an API call was refused).
    #[error("{0}")]
    Source(String),
    /// An external tool (pg_dump, mysqldump, redis-cli, initdb…) is missing or failed.
    #[error("{0}")]
    Tool(String),
    /// The repository could not be written or read, or holds damaged objects.
    #[error("{0}")]
    Repository(String),
    /// The settings or the backup do not fit the operation: a malformed URL, a
    /// restore target of the wrong kind, a manifest without the object it needs, a
    /// missing or wrong decryption key.
    #[error("{0}")]
    Invalid(String),
    /// A local file or directory (spool, scratch instance, restore target) could not
    /// be used, or a worker thread stopped.
    #[error("{0}")]
    Local(String),
    /// The work outlasted its policy's `timeout` and was stopped.
    #[error("{0}")]
    TimedOut(String),
}

impl SourceError {
    /// A stable name for logs and the API.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceError::Unreachable(_) => "unreachable",
            SourceError::Source(_) => "source",
            SourceError::Tool(_) => "tool",
            SourceError::Repository(_) => "repository",
            SourceError::Invalid(_) => "invalid",
            SourceError::Local(_) => "local",
            SourceError::TimedOut(_) => "timed_out",
        }
    }

    /// Prefixes the message, keeping the kind.
    pub fn context(self, what: &str) -> SourceError {
        let with = |m: String| format!("{what}: {m}");
        match self {
            SourceError::Unreachable(m) => SourceError::Unreachable(with(m)),
            SourceError::Source(m) => SourceError::Source(with(m)),
            SourceError::Tool(m) => SourceError::Tool(with(m)),
            SourceError::Repository(m) => SourceError::Repository(with(m)),
            SourceError::Invalid(m) => SourceError::Invalid(with(m)),
            SourceError::Local(m) => SourceError::Local(with(m)),
            SourceError::TimedOut(m) => SourceError::TimedOut(with(m)),
        }
    }
}

impl From<ReadError> for SourceError {
    fn from(e: ReadError) -> SourceError {
        match &e {
            ReadError::Corrupt { .. } => SourceError::Repository(e.to_string()),
            ReadError::Open { source: OpenError::NoKey | OpenError::WrongKey, .. } => SourceError::Invalid(e.to_string()),
            ReadError::Open { .. } | ReadError::Other { .. } => SourceError::Repository(e.to_string()),
            ReadError::Consume { object, source } => io_error_ref(source).context(&format!("object {object}")),
        }
    }
}

/// A blocking worker (a tool's feeder, the encoder) that panicked or was cancelled.
pub(crate) fn stopped(e: tokio::task::JoinError) -> SourceError {
    SourceError::Local(e.to_string())
}

/// Live counters for progress bars and the API.
#[derive(Debug, Default)]
pub struct Progress {
    /// Plain bytes produced (backup) or restored (restore, verify).
    pub plain: AtomicU64,
    /// The expected total, when known (a restore knows it from the manifest).
    pub total: AtomicU64,
    pub phase: std::sync::Mutex<String>,
}

impl Progress {
    pub fn set_phase(&self, phase: impl Into<String>) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = phase.into();
    }

    pub fn phase(&self) -> String {
        self.phase.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Everything a source needs to write one backup.
pub struct BackupCx {
    pub repo: Repo,
    pub policy: String,
    pub id: String,
    pub level: i32,
    pub recipient: Option<age::x25519::Recipient>,
    /// The policy's key, for what a backup reads back (a physical backup reads its
    /// backup history file from the WAL archive).
    pub identity: Option<age::x25519::Identity>,
    /// A private directory for tools that need files (pg_dump -Fd, redis-cli --rdb);
    /// removed when the backup ends, whatever happened.
    pub spool: PathBuf,
    pub progress: Arc<Progress>,
    pub cancel: CancellationToken,
}

/// What a source produced.
#[derive(Debug, Clone)]
pub struct Produced {
    pub objects: Vec<ObjectInfo>,
    pub facts: Json,
    pub tool: Option<String>,
}

/// Counts plain bytes for progress.
struct Counting<'a, W> {
    inner: W,
    progress: &'a Progress,
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.progress.plain.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.plain.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Stores one object: `produce` writes its plain bytes on a blocking thread while the
/// chunks upload. Returns the object's digests and what `produce` returned.
pub async fn store_object<T, F>(cx: &BackupCx, name: &str, produce: F) -> Result<(ObjectInfo, T), SourceError>
where
    T: Send + 'static,
    F: FnOnce(&mut dyn Write) -> io::Result<T> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    let level = cx.level;
    let recipient = cx.recipient.clone();
    let progress = cx.progress.clone();
    let encoder = tokio::task::spawn_blocking(move || -> io::Result<_> {
        let mut writer = ObjectWriter::new(level, recipient.as_ref(), tx)?;
        let value = produce(&mut Counting { inner: &mut writer, progress: &progress })?;
        let (plain, stored) = writer.finish()?;
        Ok((value, plain, stored))
    });
    let uploaded = cx.repo.upload(&cx.policy, &cx.id, name, rx).await;
    let encoded = encoder.await.map_err(|e| SourceError::Local(format!("the encoder stopped: {e}")))?;
    // The producer's own error says more than "the upload stopped" when both failed;
    // it is the tool's or the source's, or a local file's (directories).
    let (value, plain, stored) = encoded.map_err(io_error)?;
    let uploaded = uploaded.map_err(|e| SourceError::Repository(e.to_string()))?;
    if uploaded != stored {
        return Err(SourceError::Repository(format!(
            "object {name}: the repository received {} bytes, the encoder wrote {}",
            uploaded.bytes, stored.bytes
        )));
    }
    Ok((ObjectInfo { name: name.to_string(), plain, stored }, value))
}

/// What an I/O error from a producer or a tool run means: a tool that failed reports
/// itself as [`process::ToolFailed`]; anything else is a local file's error.
pub(crate) fn io_error(e: io::Error) -> SourceError {
    io_error_ref(&e)
}

fn io_error_ref(e: &io::Error) -> SourceError {
    if e.get_ref().is_some_and(|inner| inner.is::<process::ToolFailed>()) {
        SourceError::Tool(e.to_string())
    } else {
        SourceError::Local(e.to_string())
    }
}

/// Why reading an object back failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The stored bytes differ from the manifest: the backup is corrupt.
    #[error("object {object} is corrupt: {detail}")]
    Corrupt { object: String, detail: String },
    #[error("object {object}: {source}")]
    Open { object: String, source: OpenError },
    /// What the reader did with the bytes failed: a tool it fed, a file it wrote.
    #[error("object {object}: {source}")]
    Consume { object: String, source: io::Error },
    #[error("object {object}: {detail}")]
    Other { object: String, detail: String },
}

/// Reads one object of a backup: `consume` gets its plain bytes on a blocking thread.
/// Both digests are checked against the manifest, whatever `consume` did.
pub async fn read_object<T, F>(
    repo: &Repo,
    manifest: &Manifest,
    object: &ObjectInfo,
    identity: Option<&age::x25519::Identity>,
    progress: &Arc<Progress>,
    consume: F,
) -> Result<T, ReadError>
where
    T: Send + 'static,
    F: FnOnce(&mut dyn Read) -> io::Result<T> + Send + 'static,
{
    let name = object.name.clone();
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    let identity = identity.cloned();
    let encrypted = manifest.encryption.is_some();
    let progress = progress.clone();
    let decoder = tokio::task::spawn_blocking(move || -> Result<(io::Result<T>, io::Result<super::pipeline::Digest>), OpenError> {
        let mut reader = ObjectReader::new(ChunkReceiver::new(rx), identity.as_ref(), encrypted)?;
        let value = consume(&mut Counting { inner: &mut reader, progress: &progress });
        let plain = reader.finish();
        Ok((value, plain))
    });
    let stored = repo.download(&manifest.policy, &manifest.id, &object.name, tx).await;
    let decoded = decoder.await.map_err(|e| ReadError::Other { object: name.clone(), detail: format!("the decoder stopped: {e}") })?;
    let stored = stored.map_err(|e| match e {
        super::repository::RepoError::Missing { .. } => {
            ReadError::Corrupt { object: name.clone(), detail: "it is missing from the repository".into() }
        }
        other => ReadError::Other { object: name.clone(), detail: other.to_string() },
    })?;
    if stored != object.stored {
        return Err(ReadError::Corrupt {
            object: name,
            detail: format!(
                "stored bytes: {} with blake3 {}, the manifest says {} with blake3 {}",
                stored.bytes, stored.blake3, object.stored.bytes, object.stored.blake3
            ),
        });
    }
    let (value, plain) = decoded.map_err(|source| ReadError::Open { object: name.clone(), source })?;
    let value = value.map_err(|source| ReadError::Consume { object: name.clone(), source })?;
    let plain = plain.map_err(|e| ReadError::Corrupt { object: name.clone(), detail: format!("it does not decode: {e}") })?;
    if plain != object.plain {
        return Err(ReadError::Corrupt {
            object: name,
            detail: format!(
                "plain bytes: {} with blake3 {}, the manifest says {} with blake3 {}",
                plain.bytes, plain.blake3, object.plain.bytes, object.plain.blake3
            ),
        });
    }
    Ok(value)
}

/// A comparison of facts recorded at backup time with what a restore shows.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Comparison {
    /// What was compared and matched, e.g. `public.users: 1000 rows`.
    pub matched: Vec<String>,
    /// What differed, e.g. `public.users: 1000 rows at backup, 998 restored`.
    pub differences: Vec<String>,
}

impl Comparison {
    pub fn passed(&self) -> bool {
        self.differences.is_empty()
    }
}

/// Compares two `{name: count}` maps.
pub fn compare_counts(what: &str, recorded: &Json, restored: &std::collections::BTreeMap<String, i64>, c: &mut Comparison) {
    let recorded: std::collections::BTreeMap<String, i64> =
        recorded.as_object().map(|m| m.iter().filter_map(|(k, v)| v.as_i64().map(|n| (k.clone(), n))).collect()).unwrap_or_default();
    for (name, n) in &recorded {
        match restored.get(name) {
            Some(m) if m == n => c.matched.push(format!("{name}: {n} {what}")),
            Some(m) => c.differences.push(format!("{name}: {n} {what} at backup, {m} restored")),
            None => c.differences.push(format!("{name}: {n} {what} at backup, missing after restore")),
        }
    }
    for (name, m) in restored {
        if !recorded.contains_key(name) {
            c.differences.push(format!("{name}: not in the backup, {m} {what} after restore"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failing tool and a failing file both reach the source as `io::Error`; the kind
    /// still tells them apart, and the message is the tool's own.
    #[test]
    fn a_failed_tool_is_told_apart_from_a_local_error() {
        let tool = process::output(&process::Tool::new("false")).unwrap_err();
        let e = io_error(tool);
        assert_eq!((e.kind(), e.to_string().as_str()), ("tool", "false failed: "));
        let missing = process::output(&process::Tool::new("/nonexistent/steward-tool")).unwrap_err();
        assert_eq!(io_error(missing).kind(), "tool");
        let file = std::fs::File::open("/nonexistent/steward-file").unwrap_err();
        assert_eq!(io_error(file).kind(), "local");
        let read =
            ReadError::Consume { object: "dump.sql".into(), source: io::Error::other(process::ToolFailed("mysql exited with 1".into())) };
        let e = SourceError::from(read);
        assert_eq!((e.kind(), e.to_string().as_str()), ("tool", "object dump.sql: mysql exited with 1"));
        let corrupt = SourceError::from(ReadError::Corrupt { object: "o".into(), detail: "d".into() });
        assert_eq!(corrupt.kind(), "repository");
        let key = SourceError::from(ReadError::Open { object: "o".into(), source: OpenError::WrongKey });
        assert_eq!(key.kind(), "invalid");
    }
}
