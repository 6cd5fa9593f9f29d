//! Several steward replicas on one store: who is running (the replica registry), who
//! leads (one lease with a term), and the fence that keeps an ex-leader's writes out.
//!
//! **Leadership** is one row: holder, term, expiry. A replica takes it when it is free
//! or expired, and renews it while it holds it; every change of holder (and every
//! re-take after an expiry) increments the term, so a term names one unbroken period of
//! one replica leading, and is never reused. **Fencing**: a leader hands its subsystems
//! a store [`fenced`](crate::Store::fenced) with its term; every write through that
//! handle first checks, in the write's own transaction, that the lease still has that
//! holder and term and has not expired — on PostgreSQL with `FOR SHARE`, so a takeover
//! waits for writes already admitted and no fenced write commits after it. A paused or
//! partitioned ex-leader that wakes up has its writes refused ([`StoreError::Fenced`]),
//! never applied.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::StoreError;

/// The one leadership there is: everything that must run once runs on its holder.
pub const LEADERSHIP: &str = "steward";

/// The leadership lease as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lease {
    pub holder: String,
    /// Incremented whenever the lease is taken (not renewed): the fencing token.
    pub term: i64,
    /// When this term began.
    pub acquired_at: DateTime<Utc>,
    pub renewed_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// What a leader writes under: its replica id and its term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub holder: String,
    pub term: i64,
}

/// A steward process using the store, as it last said.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Replica {
    /// Unique per process (`host:pid:start`); also the owner of its claims and runs.
    pub id: String,
    /// Where its API is reached (its external URL).
    pub address: String,
    pub version: String,
    /// The store schema version this replica's build writes.
    pub schema: i64,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
}

#[async_trait]
pub trait ClusterStore: Send + Sync {
    /// Records that `replica` is alive (inserting it the first time).
    async fn heartbeat_replica(&self, replica: &Replica) -> Result<(), StoreError>;
    /// Every registered replica, oldest first.
    async fn replicas(&self) -> Result<Vec<Replica>, StoreError>;
    /// Forgets replicas whose last heartbeat is before `before` (stopped long ago).
    async fn forget_replicas(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
    /// Takes or renews the leadership for `holder` until `until`, in one statement: it
    /// renews (same term) when `holder` holds an unexpired lease, takes it (next term)
    /// when it is free or expired at `now`, and otherwise changes nothing. Returns the
    /// lease as stored afterwards: `holder` leads when it is the lease's holder.
    async fn lead(&self, holder: &str, now: DateTime<Utc>, until: DateTime<Utc>) -> Result<Lease, StoreError>;
    /// Gives the leadership up at once (its term ends; the next taker gets the next
    /// term), if `fence` still holds it. Returns whether it did.
    async fn resign(&self, fence: &Fence) -> Result<bool, StoreError>;
    /// The current lease, expired or not (`None`: nobody ever led).
    async fn leader(&self) -> Result<Option<Lease>, StoreError>;
    /// The schema version the store is at now: a replica built for another one must
    /// not lead (during a rolling upgrade the newer build migrates the store first).
    async fn schema_version(&self) -> Result<i64, StoreError>;
}

// The statements, in the SQL both backends speak (`$N` parameters work on SQLite too).

pub(crate) const HEARTBEAT_REPLICA: &str = "INSERT INTO replicas (id, address, version, schema, started_ms, heartbeat_ms) \
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO UPDATE SET address = excluded.address, version = excluded.version, \
     schema = excluded.schema, heartbeat_ms = excluded.heartbeat_ms";

pub(crate) const REPLICAS: &str = "SELECT * FROM replicas ORDER BY started_ms, id";

pub(crate) const FORGET_REPLICAS: &str = "DELETE FROM replicas WHERE heartbeat_ms < $1";

/// Renew (same holder, unexpired: same term), take (free or expired: next term), or
/// leave alone (another holder's live lease). Every right-hand side reads the row as it
/// was, so the CASEs decide on the old holder and expiry.
pub(crate) const LEAD: &str = "INSERT INTO leadership (name, holder, term, acquired_ms, renewed_ms, expires_ms) \
     VALUES ('steward', $1, 1, $2, $2, $3) ON CONFLICT (name) DO UPDATE SET \
       term = CASE WHEN leadership.holder = excluded.holder AND leadership.expires_ms > excluded.renewed_ms \
                   THEN leadership.term ELSE leadership.term + 1 END, \
       acquired_ms = CASE WHEN leadership.holder = excluded.holder AND leadership.expires_ms > excluded.renewed_ms \
                   THEN leadership.acquired_ms ELSE excluded.renewed_ms END, \
       holder = excluded.holder, renewed_ms = excluded.renewed_ms, expires_ms = excluded.expires_ms \
     WHERE leadership.holder = excluded.holder OR leadership.expires_ms <= excluded.renewed_ms";

pub(crate) const LEADER: &str = "SELECT * FROM leadership WHERE name = 'steward'";

/// Ends the term at once; the row stays so the next term is higher.
pub(crate) const RESIGN: &str = "UPDATE leadership SET expires_ms = 0 WHERE name = 'steward' AND holder = $1 AND term = $2";

pub(crate) fn lease_row(r: &impl crate::rows::Columns) -> Result<Lease, StoreError> {
    use crate::rows::{col, time};
    Ok(Lease {
        holder: col(r, "holder")?,
        term: col(r, "term")?,
        acquired_at: time(col(r, "acquired_ms")?),
        renewed_at: time(col(r, "renewed_ms")?),
        expires_at: time(col(r, "expires_ms")?),
    })
}

pub(crate) fn replica_row(r: &impl crate::rows::Columns) -> Result<Replica, StoreError> {
    use crate::rows::{col, time};
    Ok(Replica {
        id: col(r, "id")?,
        address: col(r, "address")?,
        version: col(r, "version")?,
        schema: col(r, "schema")?,
        started_at: time(col(r, "started_ms")?),
        heartbeat_at: time(col(r, "heartbeat_ms")?),
    })
}

/// [`ClusterStore`] for a backend whose write and read pools are `$writer` and
/// `$reader`: the statements above are the same on both backends.
macro_rules! cluster_store {
    ($store:ty, $writer:ident, $reader:ident, $schema_version:expr) => {
        #[async_trait::async_trait]
        impl $crate::ClusterStore for $store {
            async fn heartbeat_replica(&self, r: &$crate::Replica) -> Result<(), $crate::StoreError> {
                sqlx::query($crate::cluster::HEARTBEAT_REPLICA)
                    .bind(&r.id)
                    .bind(&r.address)
                    .bind(&r.version)
                    .bind(r.schema)
                    .bind($crate::rows::ms(r.started_at))
                    .bind($crate::rows::ms(r.heartbeat_at))
                    .execute(&self.$writer)
                    .await?;
                Ok(())
            }

            async fn replicas(&self) -> Result<Vec<$crate::Replica>, $crate::StoreError> {
                let rows = sqlx::query($crate::cluster::REPLICAS).fetch_all(&self.$reader).await?;
                rows.iter().map($crate::cluster::replica_row).collect()
            }

            async fn forget_replicas(&self, before: chrono::DateTime<chrono::Utc>) -> Result<u64, $crate::StoreError> {
                let done = sqlx::query($crate::cluster::FORGET_REPLICAS).bind($crate::rows::ms(before)).execute(&self.$writer).await?;
                Ok(done.rows_affected())
            }

            async fn lead(
                &self,
                holder: &str,
                now: chrono::DateTime<chrono::Utc>,
                until: chrono::DateTime<chrono::Utc>,
            ) -> Result<$crate::Lease, $crate::StoreError> {
                sqlx::query($crate::cluster::LEAD)
                    .bind(holder)
                    .bind($crate::rows::ms(now))
                    .bind($crate::rows::ms(until))
                    .execute(&self.$writer)
                    .await?;
                let row = sqlx::query($crate::cluster::LEADER).fetch_one(&self.$writer).await?;
                $crate::cluster::lease_row(&row)
            }

            async fn resign(&self, fence: &$crate::Fence) -> Result<bool, $crate::StoreError> {
                let done = sqlx::query($crate::cluster::RESIGN).bind(&fence.holder).bind(fence.term).execute(&self.$writer).await?;
                Ok(done.rows_affected() == 1)
            }

            async fn leader(&self) -> Result<Option<$crate::Lease>, $crate::StoreError> {
                let row = sqlx::query($crate::cluster::LEADER).fetch_optional(&self.$writer).await?;
                row.as_ref().map($crate::cluster::lease_row).transpose()
            }

            async fn schema_version(&self) -> Result<i64, $crate::StoreError> {
                Ok(sqlx::query_scalar($schema_version).fetch_one(&self.$writer).await?)
            }
        }
    };
}
pub(crate) use cluster_store;
