//! What a store call can fail with, in the store contract's own terms: no driver type
//! crosses the trait, so a second backend maps its errors onto the same variants and
//! callers decide on the variant, never on message text.

use std::fmt;

use chrono::{DateTime, Utc};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A lock (a runbook's `lock:`, a backup lease) is held by another run or backup.
    #[error("lock `{lock}` is held by {holder}")]
    LockHeld { lock: String, holder: LockHolder },
    /// A trigger key (a schedule slot, an alert's firing, a client's idempotency key) has
    /// been used: it starts one thing, ever.
    #[error("the trigger `{key}` already started {started}")]
    TriggerUsed { key: String, started: String },
    /// The record changed since the caller read it (its version moved on).
    #[error("{what} changed meanwhile; reload it and try again")]
    StaleVersion { what: String },
    /// Alerts of this group already have an open incident: they join it, not a new one.
    #[error("group `{group_key}` already has open incident {incident}")]
    GroupOpen { group_key: String, incident: i64 },
    /// A name that must be unique is taken.
    #[error("a {kind} named `{name}` already exists")]
    NameTaken { kind: &'static str, name: String },
    /// The database was migrated by a newer steward: this build must not write to it.
    #[error("the data directory was written by a newer steward (schema {found}, this build knows {known}); upgrade steward")]
    NewerSchema { found: i64, known: usize },
    /// The database cannot be reached or written right now (I/O, busy, disk full, pool
    /// exhausted): the same call may succeed later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// What is stored cannot be read back as what was written (a damaged file, a value
    /// of the wrong type, JSON that does not parse).
    #[error("store: stored data is damaged: {0}")]
    Corrupt(String),
    /// Anything else the database refused: a bug in steward, not in the input.
    #[error("store: {0}")]
    Internal(String),
    /// A leader's write after its term ended (another replica leads, or its lease
    /// expired): refused, so an ex-leader never acts on stale leadership.
    #[error("refused: {0}")]
    Fenced(String),
    /// Refused to write into a store that already holds state (a copy's destination).
    #[error("{what} already holds data; copy only into an empty store")]
    NotEmpty { what: String },
    #[error("store: cannot open {path}: {message}")]
    Open { path: String, message: String },
}

impl StoreError {
    /// Whether the call was refused because of what is already recorded (a held lock, a
    /// used trigger, a newer version, a taken name) rather than because the store failed:
    /// the caller reports it as a conflict, not as an outage.
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            StoreError::LockHeld { .. }
                | StoreError::TriggerUsed { .. }
                | StoreError::StaleVersion { .. }
                | StoreError::GroupOpen { .. }
                | StoreError::NameTaken { .. }
                | StoreError::NotEmpty { .. }
        )
    }
}

/// Who holds a lock, for the message that refuses a second holder.
#[derive(Debug, Clone, PartialEq)]
pub enum LockHolder {
    Run(i64),
    /// A backup's lease: its id, the process that owns it, and when it lapses unless
    /// renewed.
    Backup {
        id: String,
        owner: String,
        until: DateTime<Utc>,
    },
}

impl fmt::Display for LockHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockHolder::Run(id) => write!(f, "run {id}"),
            LockHolder::Backup { id, owner, until } => {
                write!(f, "backup {id} (owner {owner}, lease until {})", until.format("%Y-%m-%d %H:%M:%S UTC"))
            }
        }
    }
}

/// The driver's errors, classified once here. SQLite reports result codes (the primary
/// code is the low byte of the extended one); PostgreSQL reports SQLSTATE classes.
impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> StoreError {
        use sqlx::Error as E;
        match &e {
            E::Io(_) | E::Tls(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed => StoreError::Unavailable(e.to_string()),
            E::ColumnDecode { .. } | E::Decode(_) => StoreError::Corrupt(e.to_string()),
            // Raised by the fence trigger (PostgreSQL schema 2).
            E::Database(d) if d.code().as_deref() == Some("SF001") => StoreError::Fenced(d.message().to_string()),
            E::Database(d) => {
                let code = d.code().unwrap_or_default();
                let sqlite_primary = code.parse::<i64>().ok().map(|c| c & 0xff);
                let postgres_class = code.get(..2).unwrap_or_default();
                match (sqlite_primary, postgres_class) {
                    // BUSY, LOCKED, READONLY, IOERR, FULL, CANTOPEN
                    (Some(5 | 6 | 8 | 10 | 13 | 14), _) => StoreError::Unavailable(e.to_string()),
                    // CORRUPT, NOTADB
                    (Some(11 | 26), _) => StoreError::Corrupt(e.to_string()),
                    // connection exception, insufficient resources, operator intervention
                    (None, "08" | "53" | "57") => StoreError::Unavailable(e.to_string()),
                    _ => StoreError::Internal(e.to_string()),
                }
            }
            _ => StoreError::Internal(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_holder_and_conflicts_are_told_from_outages() {
        let held = StoreError::LockHeld { lock: "failover-eu".into(), holder: LockHolder::Run(7) };
        assert_eq!(held.to_string(), "lock `failover-eu` is held by run 7");
        assert!(held.is_conflict());
        let until = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let lease = LockHolder::Backup { id: "b1".into(), owner: "host:42".into(), until };
        assert_eq!(lease.to_string(), "backup b1 (owner host:42, lease until 2027-01-15 08:00:00 UTC)");
        assert!(!StoreError::from(sqlx::Error::PoolTimedOut).is_conflict());
        assert!(matches!(StoreError::from(sqlx::Error::PoolTimedOut), StoreError::Unavailable(_)));
        assert!(matches!(StoreError::from(sqlx::Error::RowNotFound), StoreError::Internal(_)));
    }
}
