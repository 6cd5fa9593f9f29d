//! Several replicas on one PostgreSQL store: each registers itself, and the one that
//! holds the leadership lease runs an [`Engine`] — checks, alerting, escalation, runbook
//! triggers, backup schedules, retention — on a store fenced with its term. The others
//! stand by and forward requests to it (see `api::replica`).
//!
//! The loop, every third of the lease's TTL: heartbeat, then take or renew the lease.
//! On taking it (a new term) the replica starts an engine, which resumes from the store
//! exactly as after a restart: the notification log, escalation state and outbox claims
//! are all there. It keeps acting only until `attempt + TTL − margin` of its last
//! successful renewal: a leader that cannot reach the store stops its engine before its
//! lease can expire and another replica take over, and if it is paused past that point
//! anyway (SIGSTOP, a long GC-like stall, a partition), the fence refuses whatever its
//! engine still tries to write. Like River's leader elector; the fence is GoAlert's idea
//! of checking the processing lock inside each transaction.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::store::{Fence, Lease, Replica, Store, StoreError};
use crate::telemetry::{Metrics, ReplicaLabels};

/// How leadership is held.
#[derive(Debug, Clone)]
pub struct LeaseOptions {
    /// How long a lease lasts unless renewed: the longest a dead leader's work waits.
    pub ttl: Duration,
}

impl LeaseOptions {
    /// Renewals per lease: one missed renewal is not yet a lost lease.
    fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    /// A leader stops acting this long before its lease could expire, so that its last
    /// writes land before anyone else may take over (clocks and pauses need room).
    fn margin(&self) -> Duration {
        self.ttl / 5
    }
}

/// What this replica knows of the leadership, for readiness, forwarding and metrics.
#[derive(Clone, Default)]
pub struct ReplicaState {
    /// The engine this replica runs while it leads.
    pub engine: Option<Arc<Engine>>,
    /// The lease as last read.
    pub lease: Option<Lease>,
    /// Where the leader's API is reached, when known.
    pub leader_address: Option<String>,
    /// Whether the last attempt reached the store.
    pub store_reachable: bool,
}

/// Starts an engine on a fenced store; returns it and the check result writer.
pub type StartEngine = Arc<
    dyn Fn(Arc<dyn Store>) -> std::pin::Pin<Box<dyn Future<Output = Result<(Arc<Engine>, tokio::task::JoinHandle<()>), String>> + Send>>
        + Send
        + Sync,
>;

/// This replica: its registry entry, and the loop that leads or follows.
pub struct Member {
    pub store: Arc<dyn Store>,
    pub me: Replica,
    pub lease: LeaseOptions,
    pub metrics: Arc<Metrics>,
    pub role: watch::Sender<ReplicaState>,
    pub start_engine: StartEngine,
    /// The registry as this round's heartbeat read it (where the leader is reached).
    pub known: std::sync::Mutex<Vec<Replica>>,
}

/// The engine this replica runs, with what stopping it needs.
struct Leading {
    engine: Arc<Engine>,
    writer: tokio::task::JoinHandle<()>,
    term: i64,
    /// Acting is allowed until then.
    until: Instant,
}

impl Member {
    /// Runs until `stop`; then stops the engine (if leading) and gives the lease up, so
    /// another replica takes over at its next attempt instead of after the TTL.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut leading: Option<Leading> = None;
        loop {
            let attempt = Instant::now();
            // One round talks to the store for at most a renewal period, and a leader's
            // round never outlasts its right to act: a store that hangs (a dead server,
            // a pool waiting to connect) cannot keep an ex-leader acting.
            let round = tokio::time::timeout(self.lease.renew_every(), self.round());
            let outcome = match leading.as_ref().map(|l| l.until) {
                Some(until) => tokio::select! {
                    r = round => r.unwrap_or_else(|_| Err(StoreError::Unavailable("the store did not answer in time".into()))),
                    _ = tokio::time::sleep_until(until) => Err(StoreError::Unavailable("the store did not answer before the lease ran out".into())),
                },
                None => round.await.unwrap_or_else(|_| Err(StoreError::Unavailable("the store did not answer in time".into()))),
            };
            if let Some(l) = leading.take_if(|l| Instant::now() >= l.until) {
                self.stop_leading(l, "the lease could not be renewed in time").await;
                self.role.send_modify(|r| r.engine = None);
            }
            match outcome {
                Ok((lease, true)) if lease.holder == self.me.id => {
                    let deadline = attempt + self.lease.ttl - self.lease.margin();
                    match &mut leading {
                        Some(l) if l.term == lease.term => l.until = deadline,
                        _ => {
                            if let Some(old) = leading.take() {
                                self.stop_leading(old, "a new term began").await;
                            }
                            leading = self.start_leading(&lease, deadline).await;
                        }
                    }
                    self.publish(Some(lease), leading.as_ref().map(|l| l.engine.clone()), true);
                }
                Ok((lease, may_lead)) => {
                    if let Some(old) = leading.take() {
                        if may_lead {
                            self.stop_leading(old, &format!("{} leads now (term {})", lease.holder, lease.term)).await;
                        } else {
                            // Handed over at once to a replica of the store's version.
                            let fence = Fence { holder: self.me.id.clone(), term: old.term };
                            self.stop_leading(old, "the store was migrated to another schema version").await;
                            let _ = self.store.resign(&fence).await;
                        }
                    }
                    self.publish(Some(lease), None, true);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reach the store to take or renew the leadership");
                    let engine = leading.as_ref().map(|l| l.engine.clone());
                    self.role.send_modify(|r| {
                        r.store_reachable = false;
                        r.engine = engine;
                    });
                }
            }
            // Sleep until the next attempt, or until acting must stop, or — a follower —
            // just after the leader's lease runs out, whichever is first: a dead
            // leader's work waits at most the lease's TTL, not a renewal period more.
            let next = attempt + self.lease.renew_every();
            let wake = match &leading {
                Some(l) => next.min(l.until),
                None => next.min(self.lease_runs_out().unwrap_or(next)),
            };
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep_until(wake) => {}
            }
            if let Some(l) = leading.take_if(|l| Instant::now() >= l.until) {
                self.stop_leading(l, "the lease could not be renewed in time").await;
                self.role.send_modify(|r| r.engine = None);
            }
        }
        if let Some(l) = leading.take() {
            let fence = Fence { holder: self.me.id.clone(), term: l.term };
            self.stop_leading(l, "shutting down").await;
            match self.store.resign(&fence).await {
                Ok(true) => tracing::info!(term = fence.term, "gave the leadership up"),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "could not give the leadership up; it lapses when its lease expires"),
            }
        }
    }

    /// When (on this process's clock) the lease another replica holds runs out, as last
    /// read, with a little room for the clocks; `None` when it is this replica's, unknown
    /// or already over.
    fn lease_runs_out(&self) -> Option<Instant> {
        let state = self.role.borrow();
        let lease = state.lease.as_ref().filter(|l| l.holder != self.me.id)?;
        // Already run out and still not taken (this replica may not lead: another
        // schema): the regular period, not a busy loop.
        let left = (lease.expires_at - crate::clock::now()).to_std().ok()?;
        Some(Instant::now() + left + Duration::from_millis(50))
    }

    /// Heartbeat, then take or renew the lease — unless the store's schema is not the
    /// one this build writes (a rolling upgrade: a newer build migrated it), when this
    /// replica only reads the lease and follows until it is upgraded too.
    async fn round(&self) -> Result<(Lease, bool), StoreError> {
        let now = crate::clock::now();
        self.heartbeat(now).await;
        let schema = self.store.schema_version().await?;
        if schema != self.me.schema {
            tracing::warn!(
                store = schema,
                this_build = self.me.schema,
                "the store's schema is not this build's: this replica follows and does not lead until it runs the same version"
            );
            let lease = self.store.leader().await?.ok_or_else(|| StoreError::Unavailable("no leader yet".into()))?;
            return Ok((lease, false));
        }
        // A follower reads the lease and tries to take it only once it has run out (as
        // `lead` would decide, on the same clock): the attempt locks the lease row, which
        // every fenced write of the leader reads `FOR SHARE`, so followers trying every
        // few seconds stalled the leader's writes behind them (≈ 8 % fewer checks run
        // with two followers, measured).
        if let Some(lease) = self.store.leader().await?
            && lease.holder != self.me.id
            && lease.expires_at > now
        {
            return Ok((lease, true));
        }
        let until = now + chrono::Duration::from_std(self.lease.ttl).unwrap_or(chrono::Duration::seconds(15));
        Ok((self.store.lead(&self.me.id, now, until).await?, true))
    }

    async fn heartbeat(&self, now: chrono::DateTime<chrono::Utc>) {
        let me = Replica { heartbeat_at: now, ..self.me.clone() };
        if let Err(e) = self.store.heartbeat_replica(&me).await {
            tracing::debug!(error = %e, "replica heartbeat failed");
            return;
        }
        if let Ok(replicas) = self.store.replicas().await {
            self.metrics.replica_heartbeat_age.clear();
            for r in &replicas {
                let age = (now - r.heartbeat_at).num_milliseconds().max(0) as f64 / 1000.0;
                self.metrics.replica_heartbeat_age.get_or_create(&ReplicaLabels { replica: r.id.clone() }).set(age);
            }
            *self.known.lock().expect("replica list lock") = replicas;
            // Replicas silent for a day are gone; their entries only clutter the list.
            let _ = self.store.forget_replicas(now - chrono::Duration::days(1)).await;
        }
    }

    fn publish(&self, lease: Option<Lease>, engine: Option<Arc<Engine>>, reachable: bool) {
        let address = match &lease {
            Some(l) if l.holder == self.me.id => Some(self.me.address.clone()),
            // From this round's heartbeat read, not a second read of the registry.
            Some(l) => self.known.lock().expect("replica list lock").iter().find(|r| r.id == l.holder).map(|r| r.address.clone()),
            None => None,
        };
        self.role.send_modify(|r| {
            r.lease = lease;
            r.engine = engine;
            r.leader_address = address;
            r.store_reachable = reachable;
        });
    }

    async fn start_leading(&self, lease: &Lease, until: Instant) -> Option<Leading> {
        let fence = Fence { holder: self.me.id.clone(), term: lease.term };
        tracing::info!(term = lease.term, "took the leadership; resuming from the store");
        match (self.start_engine)(self.store.fenced(fence)).await {
            Ok((engine, writer)) => {
                self.metrics.leader.set(1);
                self.metrics.leader_changes.inc();
                Some(Leading { engine, writer, term: lease.term, until })
            }
            Err(e) => {
                tracing::error!(term = lease.term, error = %e, "could not start leading; will try again");
                None
            }
        }
    }

    async fn stop_leading(&self, leading: Leading, why: &str) {
        tracing::warn!(term = leading.term, why, "stopping: this replica no longer leads");
        self.metrics.leader.set(0);
        self.metrics.leader_changes.inc();
        leading.engine.shutdown(leading.writer).await;
    }
}
