//! Where backups live: a local directory or an S3-compatible bucket, through
//! object_store, with one layout:
//!
//! ```text
//! <policy>/<id>/data/<object>      immutable, written once
//! <policy>/<id>/manifest.json      written last: the backup exists from then on
//! ```
//!
//! Every object is read back after upload and its size and blake3 compared with what
//! was sent, before the manifest may name it.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tokio::sync::mpsc;

use super::manifest::Manifest;
use super::pipeline::{Digest, StoredHasher};
use crate::config::backups::{Repository, RepositoryKind};

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("repository `{repo}`: {message}")]
    Store { repo: String, message: String },
    #[error("repository `{repo}`: object {key} is missing")]
    Missing { repo: String, key: String },
    #[error("repository `{repo}`: object {key} is corrupt: {detail}")]
    Corrupt { repo: String, key: String, detail: String },
}

#[derive(Clone)]
pub struct Repo {
    pub name: String,
    store: Arc<dyn ObjectStore>,
    /// A local repository's root. object_store stages a local multipart upload in a
    /// hidden `NAME#N` file that listing never shows; a process killed mid-upload
    /// leaves it behind, so local cleanup works on the directories themselves.
    local: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Repo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Repo({})", self.name)
    }
}

/// Parts of one chunk each up to here, then larger parts (see `upload`).
const LARGE_AFTER: usize = 5_000;
const CHUNKS_PER_LARGE_PART: usize = 4;

fn data_key(policy: &str, id: &str, object: &str) -> ObjectPath {
    ObjectPath::from(format!("{policy}/{id}/data/{object}"))
}

fn manifest_key(policy: &str, id: &str) -> ObjectPath {
    ObjectPath::from(format!("{policy}/{id}/manifest.json"))
}

impl Repo {
    /// Opens the repository (creating a local directory if needed); credentials stay
    /// inside object_store's client, never in messages.
    pub fn open(config: &Repository) -> Result<Repo, RepoError> {
        let err = |message: String| RepoError::Store { repo: config.name.clone(), message };
        let local = match &config.kind {
            RepositoryKind::Local { path } => Some(path.clone()),
            RepositoryKind::S3(_) => None,
        };
        let store: Arc<dyn ObjectStore> = match &config.kind {
            RepositoryKind::Local { path } => {
                std::fs::create_dir_all(path).map_err(|e| err(format!("cannot create {}: {e}", path.display())))?;
                Arc::new(
                    object_store::local::LocalFileSystem::new_with_prefix(path)
                        .map_err(|e| err(e.to_string()))?
                        .with_automatic_cleanup(true),
                )
            }
            RepositoryKind::S3(s3) => {
                let mut b = object_store::aws::AmazonS3Builder::new()
                    .with_bucket_name(&s3.bucket)
                    .with_region(&s3.region)
                    .with_allow_http(s3.allow_http);
                if let Some(e) = &s3.endpoint {
                    // Path-style requests: what S3-compatible servers expect.
                    b = b.with_endpoint(e.trim_end_matches('/')).with_virtual_hosted_style_request(false);
                }
                match (&s3.access_key_id, &s3.secret_access_key) {
                    (Some(k), Some(s)) => b = b.with_access_key_id(k.expose()).with_secret_access_key(s.expose()),
                    _ => {
                        if let (Ok(k), Ok(s)) = (std::env::var("AWS_ACCESS_KEY_ID"), std::env::var("AWS_SECRET_ACCESS_KEY")) {
                            b = b.with_access_key_id(k).with_secret_access_key(s);
                        }
                    }
                }
                let s3store = b.build().map_err(|e| err(e.to_string()))?;
                if s3.prefix.is_empty() {
                    Arc::new(s3store)
                } else {
                    Arc::new(object_store::prefix::PrefixStore::new(s3store, s3.prefix.as_str()))
                }
            }
        };
        Ok(Repo { name: config.name.clone(), store, local })
    }

    fn error(&self, e: object_store::Error, key: &ObjectPath) -> RepoError {
        match e {
            object_store::Error::NotFound { .. } => RepoError::Missing { repo: self.name.clone(), key: key.to_string() },
            other => RepoError::Store { repo: self.name.clone(), message: format!("{key}: {other}") },
        }
    }

    /// Uploads the chunks `rx` delivers as one new object, then reads it back and checks
    /// size and blake3 against what was sent. Never overwrites.
    pub async fn upload(&self, policy: &str, id: &str, object: &str, rx: mpsc::Receiver<Bytes>) -> Result<Digest, RepoError> {
        self.put_new(&data_key(policy, id, object), rx).await
    }

    /// [`Repo::upload`] at any key (WAL archives keep their own layout).
    pub(super) async fn put_new(&self, key: &ObjectPath, mut rx: mpsc::Receiver<Bytes>) -> Result<Digest, RepoError> {
        let key = key.clone();
        match self.store.head(&key).await {
            Ok(_) => {
                return Err(RepoError::Store {
                    repo: self.name.clone(),
                    message: format!("{key} already exists; objects are never overwritten"),
                });
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.error(e, &key)),
        }
        let mut upload = self.store.put_multipart(&key).await.map_err(|e| self.error(e, &key))?;
        let mut sent = StoredHasher::default();
        let mut parts = 0;
        let result = async {
            // S3 allows 10,000 parts: past LARGE_AFTER parts, each part gathers
            // CHUNKS_PER_LARGE_PART chunks, so an object can reach ~200 GB at 8 MiB chunks
            // (memory then holds one larger part, only for objects that big).
            let mut pending: Vec<Bytes> = Vec::new();
            while let Some(chunk) = rx.recv().await {
                sent.update(&chunk);
                pending.push(chunk);
                let per_part = if parts < LARGE_AFTER { 1 } else { CHUNKS_PER_LARGE_PART };
                if pending.len() >= per_part {
                    parts += 1;
                    upload.put_part(PutPayload::from_iter(pending.drain(..))).await?;
                }
            }
            if !pending.is_empty() || parts == 0 {
                upload.put_part(PutPayload::from_iter(pending.drain(..))).await?;
            }
            upload.complete().await
        }
        .await;
        if let Err(e) = result {
            // Best effort: a failed multipart upload leaves nothing the manifest names.
            let _ = upload.abort().await;
            return Err(self.error(e, &key));
        }
        let sent = sent.finish();
        let read = self.read_digest(&key, |_| {}).await?;
        if read != sent {
            return Err(RepoError::Corrupt {
                repo: self.name.clone(),
                key: key.to_string(),
                detail: format!(
                    "read back {} bytes (blake3 {}) after sending {} bytes (blake3 {})",
                    read.bytes, read.blake3, sent.bytes, sent.blake3
                ),
            });
        }
        Ok(sent)
    }

    async fn read_digest(&self, key: &ObjectPath, on_chunk: impl Fn(usize)) -> Result<Digest, RepoError> {
        let got = self.store.get(key).await.map_err(|e| self.error(e, key))?;
        let mut stream = got.into_stream();
        let mut h = StoredHasher::default();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.error(e, key))?;
            h.update(&chunk);
            on_chunk(chunk.len());
        }
        Ok(h.finish())
    }

    /// Size and blake3 of a stored object as it is now, read in full; `on_chunk` hears
    /// how many bytes each read brought (for progress).
    pub async fn stored_digest(&self, policy: &str, id: &str, object: &str, on_chunk: impl Fn(usize)) -> Result<Digest, RepoError> {
        self.read_digest(&data_key(policy, id, object), on_chunk).await
    }

    /// Streams a stored object into `tx` while hashing it; the digest of what was read,
    /// also when the consumer stopped early (the rest is read and hashed anyway, so a
    /// checksum mismatch is reported as such rather than as a decoding error).
    pub async fn download(
        &self,
        policy: &str,
        id: &str,
        object: &str,
        tx: mpsc::Sender<std::io::Result<Bytes>>,
    ) -> Result<Digest, RepoError> {
        self.get_into(&data_key(policy, id, object), tx).await
    }

    /// [`Repo::download`] at any key.
    pub(super) async fn get_into(&self, key: &ObjectPath, tx: mpsc::Sender<std::io::Result<Bytes>>) -> Result<Digest, RepoError> {
        let key = key.clone();
        let got = self.store.get(&key).await.map_err(|e| self.error(e, &key))?;
        let mut stream = got.into_stream();
        let mut h = StoredHasher::default();
        let mut consumer = Some(tx);
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    let err = self.error(e, &key);
                    if let Some(tx) = consumer.take() {
                        let _ = tx.send(Err(std::io::Error::other(err.to_string()))).await;
                    }
                    return Err(err);
                }
            };
            h.update(&chunk);
            if let Some(tx) = &consumer
                && tx.send(Ok(chunk)).await.is_err()
            {
                consumer = None;
            }
        }
        Ok(h.finish())
    }

    /// Size of a stored object, without reading it.
    pub async fn object_size(&self, policy: &str, id: &str, object: &str) -> Result<u64, RepoError> {
        let key = data_key(policy, id, object);
        Ok(self.store.head(&key).await.map_err(|e| self.error(e, &key))?.size)
    }

    /// Writes the manifest (the backup exists from now on) and reads it back.
    pub async fn write_manifest(&self, m: &Manifest) -> Result<(), RepoError> {
        let key = manifest_key(&m.policy, &m.id);
        let body = serde_json::to_vec_pretty(m).expect("a manifest serializes");
        self.store.put(&key, PutPayload::from(body.clone())).await.map_err(|e| self.error(e, &key))?;
        let back = self.store.get(&key).await.map_err(|e| self.error(e, &key))?.bytes().await.map_err(|e| self.error(e, &key))?;
        if back.as_ref() != body.as_slice() {
            return Err(RepoError::Corrupt {
                repo: self.name.clone(),
                key: key.to_string(),
                detail: "the manifest read back differs".into(),
            });
        }
        Ok(())
    }

    /// Writes a small object whole (a WAL file's record) and reads it back; it may
    /// replace one left by a push that failed before its record.
    pub(super) async fn put_small(&self, key: &ObjectPath, body: Vec<u8>) -> Result<(), RepoError> {
        self.store.put(key, PutPayload::from(body.clone())).await.map_err(|e| self.error(e, key))?;
        match self.get_small(key).await? {
            Some(back) if back.as_ref() == body.as_slice() => Ok(()),
            _ => Err(RepoError::Corrupt {
                repo: self.name.clone(),
                key: key.to_string(),
                detail: "read back differs from what was written".into(),
            }),
        }
    }

    /// A small object whole; `None` when it does not exist.
    pub(super) async fn get_small(&self, key: &ObjectPath) -> Result<Option<Bytes>, RepoError> {
        match self.store.get(key).await {
            Ok(g) => g.bytes().await.map(Some).map_err(|e| self.error(e, key)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(e, key)),
        }
    }

    /// Removes one object; absent is fine.
    pub(super) async fn delete_key(&self, key: &ObjectPath) -> Result<(), RepoError> {
        match self.store.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(e, key)),
        }
    }

    /// Every key under `prefix`.
    pub(super) async fn keys(&self, prefix: &ObjectPath) -> Result<Vec<ObjectPath>, RepoError> {
        let mut out = Vec::new();
        let mut stream = self.store.list(Some(prefix));
        while let Some(meta) = stream.next().await {
            out.push(meta.map_err(|e| self.error(e, prefix))?.location);
        }
        Ok(out)
    }

    /// Makes `keys` durable on a local repository: object_store renames its files into
    /// place without fsync, so a power cut could lose what was acknowledged. Syncs each
    /// file and the directories holding them. S3 acknowledges only what it stored.
    pub(super) fn sync(&self, keys: &[&ObjectPath]) -> Result<(), RepoError> {
        let Some(root) = &self.local else { return Ok(()) };
        let fail = |what: &std::path::Path, e: std::io::Error| RepoError::Store {
            repo: self.name.clone(),
            message: format!("cannot sync {}: {e}", what.display()),
        };
        let mut dirs = BTreeSet::new();
        for key in keys {
            let path = key.parts().fold(root.clone(), |p, part| p.join(part.as_ref()));
            std::fs::File::open(&path).and_then(|f| f.sync_all()).map_err(|e| fail(&path, e))?;
            if let Some(dir) = path.parent() {
                dirs.insert(dir.to_path_buf());
            }
        }
        for dir in dirs {
            std::fs::File::open(&dir).and_then(|f| f.sync_all()).map_err(|e| fail(&dir, e))?;
        }
        Ok(())
    }

    /// The manifest, `None` when the backup never completed (or was deleted).
    pub async fn manifest(&self, policy: &str, id: &str) -> Result<Option<Manifest>, RepoError> {
        let key = manifest_key(policy, id);
        let bytes = match self.store.get(&key).await {
            Ok(g) => g.bytes().await.map_err(|e| self.error(e, &key))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.error(e, &key)),
        };
        Manifest::parse(&bytes).map(Some).map_err(|detail| RepoError::Corrupt { repo: self.name.clone(), key: key.to_string(), detail })
    }

    /// Every backup id under `policy`, and whether it has a manifest.
    pub async fn list(&self, policy: &str) -> Result<Vec<(String, bool)>, RepoError> {
        let prefix = ObjectPath::from(policy);
        let mut ids = BTreeSet::new();
        let mut complete = BTreeSet::new();
        let mut stream = self.store.list(Some(&prefix));
        while let Some(meta) = stream.next().await {
            let meta = meta.map_err(|e| self.error(e, &prefix))?;
            let parts: Vec<_> = meta.location.parts().collect();
            if parts.len() >= 3 {
                let id = parts[1].as_ref().to_string();
                if parts.len() == 3 && parts[2].as_ref() == "manifest.json" {
                    complete.insert(id.clone());
                }
                ids.insert(id);
            }
        }
        // Folders holding only a killed upload's staging file are leftovers too.
        if let Some(Ok(dir)) = self.local.as_ref().map(|root| std::fs::read_dir(root.join(policy))) {
            for entry in dir.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                if super::valid_id(&name) {
                    ids.insert(name);
                }
            }
        }
        Ok(ids.into_iter().map(|id| (id.clone(), complete.contains(&id))).collect())
    }

    /// Deletes a backup: the manifest first (from then on it does not exist), then
    /// its objects. Safe to call again after a failure half-way.
    pub async fn delete(&self, policy: &str, id: &str) -> Result<u64, RepoError> {
        let manifest = manifest_key(policy, id);
        match self.store.delete(&manifest).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.error(e, &manifest)),
        }
        let prefix = ObjectPath::from(format!("{policy}/{id}"));
        let mut deleted = 0;
        let keys: Vec<ObjectPath> =
            self.store.list(Some(&prefix)).filter_map(|m| async move { m.ok().map(|m| m.location) }).collect().await;
        for key in keys {
            match self.store.delete(&key).await {
                Ok(()) => deleted += 1,
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.error(e, &key)),
            }
        }
        if let Some(root) = &self.local
            && super::valid_id(id)
        {
            match std::fs::remove_dir_all(root.join(policy).join(id)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(RepoError::Store { repo: self.name.clone(), message: format!("{policy}/{id}: {e}") }),
            }
        }
        Ok(deleted)
    }
}
