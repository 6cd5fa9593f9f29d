//! The lock model (`locks.rs`) in SQLite's SQL.

use sqlx::SqliteConnection;

pub(super) use super::locks::Holder;
use super::locks::{note_takeover, stored_holder};
use super::{LockHolder, StoreError};

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
        note_takeover(name, before, &holder);
        return Ok(());
    }
    let holder = current(conn, name).await?.ok_or_else(|| StoreError::Internal(format!("lock `{name}` refused and not held")))?;
    Err(StoreError::LockHeld { lock: name.to_string(), holder })
}

/// Who holds `name` now, if anyone.
async fn current(conn: &mut SqliteConnection, name: &str) -> Result<Option<LockHolder>, StoreError> {
    let row: Option<(String, String, String, Option<i64>)> =
        sqlx::query_as("SELECT holder_kind, holder, owner, expires_ms FROM locks WHERE name = ?")
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?;
    stored_holder(name, row)
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
