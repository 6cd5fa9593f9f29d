//! The one lock model, on SQLite: a named lock held by one holder (a run or a backup)
//! for one owner (a steward process) until its lease ends or its holder releases it.
//!
//! Taking a lock is one `INSERT … ON CONFLICT DO UPDATE … WHERE` statement, so its
//! correctness does not rest on SQLite having a single writer: of two writers racing
//! for a free lock, the database lets exactly one statement write it. A run's lock has
//! no lease end (`expires_ms` NULL): a run that stopped half-way keeps it until a person
//! resumes, retries or cancels it. A backup's lease ends unless renewed, and an ended
//! lease is taken over.

use sqlx::SqliteConnection;

use super::sqlite::time;
use super::{LockHolder, StoreError};

/// Who takes a lock.
#[derive(Debug, Clone, Copy)]
pub(super) enum Holder<'a> {
    Run(i64),
    Backup(&'a str),
}

impl Holder<'_> {
    fn parts(&self) -> (&'static str, String) {
        match self {
            Holder::Run(id) => ("run", id.to_string()),
            Holder::Backup(id) => ("backup", id.to_string()),
        }
    }
}

/// Takes `name` for `holder` on behalf of `owner`. Succeeds when the lock is free, is
/// already this holder's, or its lease ended before `now_ms`; otherwise writes nothing
/// and fails with [`StoreError::LockHeld`] naming the holder.
pub(super) async fn acquire(
    conn: &mut SqliteConnection,
    name: &str,
    holder: Holder<'_>,
    owner: &str,
    now_ms: i64,
    expires_ms: Option<i64>,
) -> Result<(), StoreError> {
    let (kind, id) = holder.parts();
    let before = current(conn, name).await?;
    let written = sqlx::query(
        "INSERT INTO locks (name, holder_kind, holder, owner, acquired_ms, expires_ms) VALUES (?, ?, ?, ?, ?, ?) \
         ON CONFLICT (name) DO UPDATE SET holder_kind = excluded.holder_kind, holder = excluded.holder, owner = excluded.owner, \
         acquired_ms = excluded.acquired_ms, expires_ms = excluded.expires_ms \
         WHERE (locks.holder_kind = excluded.holder_kind AND locks.holder = excluded.holder) \
            OR (locks.expires_ms IS NOT NULL AND locks.expires_ms <= excluded.acquired_ms)",
    )
    .bind(name)
    .bind(kind)
    .bind(&id)
    .bind(owner)
    .bind(now_ms)
    .bind(expires_ms)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if written == 1 {
        if let Some(LockHolder::Backup { id: old, owner: old_owner, until }) = before.filter(|h| !is(h, &holder)) {
            tracing::warn!(lock = name, holder = old, owner = old_owner, lease_ended = %until, "took over an ended lease");
        }
        return Ok(());
    }
    let holder = current(conn, name).await?.ok_or_else(|| StoreError::Internal(format!("lock `{name}` refused and not held")))?;
    Err(StoreError::LockHeld { lock: name.to_string(), holder })
}

fn is(current: &LockHolder, holder: &Holder<'_>) -> bool {
    match (current, holder) {
        (LockHolder::Run(a), Holder::Run(b)) => a == b,
        (LockHolder::Backup { id, .. }, Holder::Backup(b)) => id == b,
        _ => false,
    }
}

/// Who holds `name` now, if anyone.
async fn current(conn: &mut SqliteConnection, name: &str) -> Result<Option<LockHolder>, StoreError> {
    let row: Option<(String, String, String, Option<i64>)> =
        sqlx::query_as("SELECT holder_kind, holder, owner, expires_ms FROM locks WHERE name = ?")
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((kind, holder, owner, expires)) = row else { return Ok(None) };
    match kind.as_str() {
        "run" => holder
            .parse()
            .map(|id| Some(LockHolder::Run(id)))
            .map_err(|_| StoreError::Corrupt(format!("lock `{name}` names run `{holder}`, which is not a run id"))),
        _ => Ok(Some(LockHolder::Backup { id: holder, owner, until: time(expires.unwrap_or_default()) })),
    }
}

/// Releases every lock `holder` holds.
pub(super) async fn release(conn: &mut SqliteConnection, holder: Holder<'_>) -> Result<(), StoreError> {
    let (kind, id) = holder.parts();
    sqlx::query("DELETE FROM locks WHERE holder_kind = ? AND holder = ?").bind(kind).bind(id).execute(conn).await?;
    Ok(())
}

/// Moves the lease end of `holder`'s locks, if `owner` still owns them.
pub(super) async fn renew(conn: &mut SqliteConnection, holder: Holder<'_>, owner: &str, expires_ms: i64) -> Result<(), StoreError> {
    let (kind, id) = holder.parts();
    sqlx::query("UPDATE locks SET expires_ms = ? WHERE holder_kind = ? AND holder = ? AND owner = ?")
        .bind(expires_ms)
        .bind(kind)
        .bind(id)
        .bind(owner)
        .execute(conn)
        .await?;
    Ok(())
}
