//! All durable state goes through the [`Store`] trait.
//!
//! **Architecture invariant:** nothing outside `store/` knows SQL or which database is
//! behind it. Every backend passes the same test suite (`tests/store_suite.rs`); the
//! embedded SQLite backend is the default, a PostgreSQL backend slots in beside it.

mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

pub use sqlite::SqliteStore;

use crate::auth::{Role, TokenInfo};
use crate::checks::Outcome;
use crate::checks::state::{CheckState, Transition};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Database(#[from] sqlx::Error),
    #[error("store: {0}")]
    Conflict(String),
    #[error("store: cannot open {path}: {message}")]
    Open { path: String, message: String },
}

/// One run as the scheduler hands it over: the outcome, the state after it, and the
/// transition it caused, written together so they can never disagree.
#[derive(Debug, Clone)]
pub struct RecordedRun {
    pub check: String,
    pub outcome: Outcome,
    pub state: CheckState,
    pub transition: Option<Transition>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResultRow {
    pub at: DateTime<Utc>,
    pub healthy: bool,
    pub latency_ms: f64,
    pub reason: Option<String>,
}

/// An hour of results, kept after the raw rows are gone.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rollup {
    pub hour: DateTime<Utc>,
    pub runs: u64,
    pub failures: u64,
    pub latency_avg_ms: f64,
    pub latency_max_ms: f64,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Last known state of every check, to resume after a restart.
    async fn load_states(&self) -> Result<Vec<CheckState>, StoreError>;
    /// Writes a batch of runs in one transaction.
    async fn record(&self, runs: &[RecordedRun]) -> Result<(), StoreError>;
    /// Raw results, newest first, strictly before `before` when given.
    async fn history(&self, check: &str, limit: u32, before: Option<DateTime<Utc>>) -> Result<Vec<ResultRow>, StoreError>;
    /// Health changes, newest first; all checks when `check` is `None`.
    async fn transitions(&self, check: Option<&str>, limit: u32) -> Result<Vec<Transition>, StoreError>;
    async fn rollups(&self, check: &str, since: DateTime<Utc>) -> Result<Vec<Rollup>, StoreError>;
    /// Folds raw results older than `raw_before` into hourly rollups and deletes them;
    /// drops rollups older than `rollups_before`. Returns how many raw rows were folded.
    async fn compact(&self, raw_before: DateTime<Utc>, rollups_before: DateTime<Utc>) -> Result<u64, StoreError>;
    /// Forgets the state of checks no longer configured (their history stays).
    async fn retain_states(&self, checks: &[String]) -> Result<(), StoreError>;

    /// Fails with [`StoreError::Conflict`] when the name is taken.
    async fn create_token(&self, name: &str, role: Role, secret_hash: &str) -> Result<TokenInfo, StoreError>;
    /// The live (not revoked) token with this hash.
    async fn token_by_hash(&self, secret_hash: &str) -> Result<Option<TokenInfo>, StoreError>;
    async fn list_tokens(&self) -> Result<Vec<TokenInfo>, StoreError>;
    /// Returns false when no live token has that name.
    async fn revoke_token(&self, name: &str) -> Result<bool, StoreError>;

    /// Proves the store accepts writes (readiness).
    async fn probe_writable(&self) -> Result<(), StoreError>;
}
