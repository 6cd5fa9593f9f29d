//! The one lock model, for every backend: a named lock held by one holder (a run or a backup)
//! for one owner (a steward process) until its lease ends or its holder releases it.
//!
//! Taking a lock is one `INSERT … ON CONFLICT DO UPDATE … WHERE` statement (each backend
//! writes it in its SQL), so its correctness does not rest on SQLite having a single
//! writer: of two writers racing for a free lock, the database lets exactly one
//! statement write it. A run's lock has
//! no lease end (`expires_ms` NULL): a run that stopped half-way keeps it until a person
//! resumes, retries or cancels it. A backup's lease ends unless renewed, and an ended
//! lease is taken over.

use super::rows::time;
use super::{LockHolder, StoreError};

/// Who takes a lock.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Holder<'a> {
    Run(i64),
    Backup(&'a str),
}

impl Holder<'_> {
    pub(crate) fn parts(&self) -> (&'static str, String) {
        match self {
            Holder::Run(id) => ("run", id.to_string()),
            Holder::Backup(id) => ("backup", id.to_string()),
        }
    }
}

/// The holder a lock row names (`None`: the lock is free).
pub(crate) fn stored_holder(name: &str, row: Option<(String, String, String, Option<i64>)>) -> Result<Option<LockHolder>, StoreError> {
    let Some((kind, holder, owner, expires)) = row else { return Ok(None) };
    match kind.as_str() {
        "run" => holder
            .parse()
            .map(|id| Some(LockHolder::Run(id)))
            .map_err(|_| StoreError::Corrupt(format!("lock `{name}` names run `{holder}`, which is not a run id"))),
        _ => Ok(Some(LockHolder::Backup { id: holder, owner, until: time(expires.unwrap_or_default()) })),
    }
}

/// Says so when taking `name` took over another backup's ended lease.
pub(crate) fn note_takeover(name: &str, before: Option<LockHolder>, holder: &Holder<'_>) {
    if let Some(LockHolder::Backup { id: old, owner: old_owner, until }) = before.filter(|h| !is(h, holder)) {
        tracing::warn!(lock = name, holder = old, owner = old_owner, lease_ended = %until, "took over an ended lease");
    }
}

fn is(current: &LockHolder, holder: &Holder<'_>) -> bool {
    match (current, holder) {
        (LockHolder::Run(a), Holder::Run(b)) => a == b,
        (LockHolder::Backup { id, .. }, Holder::Backup(b)) => id == b,
        _ => false,
    }
}
