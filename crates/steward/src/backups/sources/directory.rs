//! Plain directories, as one tar stream. The file list (path, size, blake3) is
//! recorded while the files are read, so verification proves every byte came back.
//! Symlinks are stored as links (never followed); other special files are skipped.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value as Json, json};

use super::{BackupCx, Comparison, Produced, Progress, SourceError, read_object, store_object};
use crate::backups::manifest::Manifest;
use crate::backups::repository::Repo;

struct HashingReader<R> {
    inner: R,
    hasher: blake3::Hasher,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Every regular file and symlink under `root`, sorted, as paths relative to it.
pub(crate) fn walk(root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(root.join(&rel))?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries.into_iter().rev() {
            let path = rel.join(e.file_name());
            let kind = e.file_type()?;
            if kind.is_dir() {
                out.push(path.clone());
                stack.push(path);
            } else if kind.is_file() || kind.is_symlink() {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Writes `root` as a tar stream; returns the facts: `{files, bytes, list: {path: [size, blake3]}}`.
pub fn write_tar(root: &Path, w: &mut dyn Write) -> io::Result<Json> {
    let mut builder = tar::Builder::new(w);
    builder.follow_symlinks(false);
    let mut list = BTreeMap::new();
    let mut bytes = 0u64;
    for rel in walk(root)? {
        let full = root.join(&rel);
        let meta = std::fs::symlink_metadata(&full)?;
        if meta.is_file() {
            let mut header = tar::Header::new_gnu();
            header.set_metadata(&meta);
            let mut reader = HashingReader { inner: std::fs::File::open(&full)?, hasher: blake3::Hasher::new() };
            builder.append_data(&mut header, &rel, &mut reader)?;
            bytes += meta.len();
            list.insert(rel.display().to_string(), json!([meta.len(), reader.hasher.finalize().to_hex().to_string()]));
        } else {
            builder.append_path_with_name(&full, &rel)?;
        }
    }
    builder.into_inner()?.flush()?;
    Ok(json!({ "files": list.len(), "bytes": bytes, "list": list }))
}

/// Unpacks a tar stream into `dir` (created if missing). Entries that would land
/// outside `dir` are refused by the tar crate.
pub fn unpack_tar(r: &mut dyn Read, dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut archive = tar::Archive::new(r);
    archive.set_preserve_permissions(true);
    archive.set_overwrite(true);
    archive.unpack(dir)
}

/// The same facts as [`write_tar`] records, for a restored directory.
pub fn list_files(root: &Path) -> io::Result<BTreeMap<String, (u64, String)>> {
    let mut out = BTreeMap::new();
    for rel in walk(root)? {
        let full = root.join(&rel);
        let meta = std::fs::symlink_metadata(&full)?;
        if meta.is_file() {
            let mut h = blake3::Hasher::new();
            h.update_reader(std::fs::File::open(&full)?)?;
            out.insert(rel.display().to_string(), (meta.len(), h.finalize().to_hex().to_string()));
        }
    }
    Ok(out)
}

pub async fn backup(cx: &BackupCx, path: &Path) -> Result<Produced, SourceError> {
    if !path.is_dir() {
        return Err(SourceError::Invalid(format!("{} is not a directory", path.display())));
    }
    cx.progress.set_phase("archiving");
    let root = path.to_path_buf();
    let (object, facts) = store_object(cx, "files.tar", move |w| write_tar(&root, w)).await?;
    Ok(Produced { objects: vec![object], facts, tool: None })
}

/// Compares a restored directory with the list recorded at backup time.
pub fn compare(manifest: &Manifest, restored: &Path) -> io::Result<Comparison> {
    let found = list_files(restored)?;
    let mut c = Comparison::default();
    let recorded = manifest.facts["list"].as_object().cloned().unwrap_or_default();
    for (path, v) in &recorded {
        let size = v[0].as_u64().unwrap_or(0);
        let hash = v[1].as_str().unwrap_or("");
        match found.get(path) {
            Some((s, h)) if *s == size && h == hash => {}
            Some((s, _)) => c.differences.push(format!("{path}: {size} bytes at backup, {s} bytes with other content restored")),
            None => c.differences.push(format!("{path}: missing after restore")),
        }
    }
    for path in found.keys() {
        if !recorded.contains_key(path) {
            c.differences.push(format!("{path}: not in the backup"));
        }
    }
    if c.differences.is_empty() {
        c.matched.push(format!("{} files, {} bytes: every size and blake3 equal", recorded.len(), manifest.facts["bytes"]));
    }
    Ok(c)
}

/// Restores into `target` (a directory) and compares.
pub async fn restore_into(
    repo: &Repo,
    manifest: &Manifest,
    identity: Option<&age::x25519::Identity>,
    target: &Path,
    progress: &Arc<Progress>,
) -> Result<Comparison, SourceError> {
    let object = manifest.object("files.tar").ok_or_else(|| SourceError::Invalid("the manifest names no files.tar object".into()))?;
    let into = target.to_path_buf();
    read_object(repo, manifest, object, identity, progress, move |input| unpack_tar(input, &into)).await?;
    compare(manifest, target).map_err(|e| SourceError::Local(e.to_string()))
}

/// Whether a directory has anything in it (a missing one is empty).
pub fn is_non_empty(path: &Path) -> bool {
    std::fs::read_dir(path).map(|mut d| d.next().is_some()).unwrap_or(false)
}
