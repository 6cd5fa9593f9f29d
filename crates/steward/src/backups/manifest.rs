//! The manifest: the one file that makes a backup exist. It lists every object with
//! the size and blake3 of its plain and stored bytes, and the facts verification
//! compares (row counts, key counts, file lists). It is written last, so a backup
//! without one never completed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::pipeline::Digest;

/// Bumped when the layout changes; readers refuse versions they do not know.
pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub id: String,
    pub policy: String,
    /// `postgres`, `mysql`, `redis`, `nats`, `directory`.
    pub source: String,
    /// What was backed up, without credentials.
    pub target: String,
    /// The tool and its version (`pg_dump (PostgreSQL) 15.19`), when one was used.
    pub tool: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub compression: Compression,
    pub encryption: Option<Encryption>,
    pub objects: Vec<ObjectInfo>,
    /// Source-specific facts recorded at backup time (see each source).
    pub facts: Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Compression {
    pub algorithm: String,
    pub level: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Encryption {
    /// `age-x25519`: each object is an age file for `recipient`.
    pub scheme: String,
    pub recipient: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectInfo {
    /// The name inside the backup (`dump.pgdump`, `files.tar`, `dump.rdb`).
    pub name: String,
    pub plain: Digest,
    pub stored: Digest,
}

impl Manifest {
    pub fn plain_bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.plain.bytes).sum()
    }

    pub fn stored_bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.stored.bytes).sum()
    }

    pub fn object(&self, name: &str) -> Option<&ObjectInfo> {
        self.objects.iter().find(|o| o.name == name)
    }

    /// Parses a manifest, refusing formats this build does not know.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, String> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| format!("the manifest is not valid: {e}"))?;
        if m.format != FORMAT {
            return Err(format!("the manifest has format {}; this steward reads format {FORMAT}", m.format));
        }
        Ok(m)
    }
}
