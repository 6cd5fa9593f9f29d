//! Backups you can trust: taken, stored, verified by restoring, restored, pruned.
//!
//! # Data flow
//! a trigger (CLI, API, a cron schedule) → [`service::Backups::run`] takes the policy's
//! lease in the store and records the backup `running` → a [`sources`] module makes the
//! data flow (pg_dump, mariadb-dump, an RDB snapshot, a tar of a directory) → the
//! [`pipeline`] hashes the plain bytes, compresses (zstd), encrypts (age) and hashes
//! the stored bytes, in bounded chunks → [`repository`] uploads each object, reads it
//! back to check it, and writes the manifest **last** → the store records `succeeded`.
//!
//! **Invariants.**
//! - A backup exists only when its manifest exists; the manifest is written after every
//!   object was uploaded and read back with matching size and checksum.
//! - Objects are immutable: each lives under the backup's unique id and is never
//!   rewritten. Deleting a backup removes its manifest first, so a half-deleted backup
//!   is never listed as complete.
//! - A crash leaves the backup `running` in the store with a stale heartbeat; recovery
//!   marks it `interrupted` (or `succeeded` when the manifest made it), and its objects
//!   are leftovers that prune removes.
//! - At most one backup per policy runs at a time: a lease in the store with owner and
//!   heartbeat; an expired lease is taken over, a live one refuses.
//! - Prune never deletes the newest successful backup, a backup in progress or being
//!   restored, or anything below `min_keep` ([`retention`]).
//! - Credentials reach tools through the environment (PGPASSWORD, MYSQL_PWD,
//!   REDISCLI_AUTH), never argv or logs.

pub mod manifest;
pub mod pipeline;
pub mod pitr;
pub mod repository;
pub mod retention;
pub mod scheduled;
pub mod service;
pub mod sources;
pub mod wal;

/// Backup, verification and restore records: the model layer's.
pub use steward_model::backups::*;
