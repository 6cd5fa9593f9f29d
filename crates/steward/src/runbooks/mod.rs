//! Runbooks that run: a durable, audited workflow engine.
//!
//! # Data flow
//! a trigger (CLI/API, a cron [`schedule`], an alert) → [`control::start`] checks the
//! parameters, renders the lock and writes the run (one transaction with its lock and
//! its audit event) → [`executor`] walks the steps, writing each step's state before it
//! starts and after it ends → [`actions`] talks to the world (processes, HTTP, SQL,
//! Redis, checks) → events (progress, output, decisions) stream to `--follow` and the
//! SSE endpoint from the store.
//!
//! **Invariants.**
//! - A step's row is written (status `running`) *before* it acts and updated after.
//!   After a crash, a step still `running` is `unknown`: it may or may not have acted.
//!   It is re-executed only on an operator's word (`resume`, `retry`), or automatically
//!   when it is idempotent (declared, or a kind that only observes or waits).
//! - Run events are append-only (a trigger refuses updates; deletes only by retention
//!   of finished runs). Who started, approved, denied, cancelled, resumed or retried
//!   what, with which parameters, is an event.
//! - Parameters and outputs reach processes only as environment variables or single
//!   argv items; no text a user typed is ever parsed by a shell or as SQL.
//! - Everything recorded passes through the configuration's redactor.
//! - A run's lock is taken in the transaction that creates the run and released in the
//!   one that finishes it. An interrupted run keeps its lock: its state is unknown, so
//!   another failover must not start until an operator resumes or aborts it.

pub mod actions;
pub mod control;
pub mod executor;
pub mod markdown;
pub mod plan;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Runs, steps, events and approvals as data, and the template language: the model
/// layer's.
pub use steward_model::runbooks::*;

/// The runbooks subsystem's context: what runs need from the rest of Steward, and the
/// runs live in this process.
pub struct Runbooks {
    pub(crate) store: Arc<dyn crate::store::RunStore>,
    pub(crate) metrics: Arc<crate::telemetry::Metrics>,
    pub(crate) config: crate::config::ConfigView,
    /// `check` steps run a check now.
    pub(crate) checks: Arc<crate::checks::Checks>,
    /// Alerts start runs and fill `alert` in templates; `notify` steps enqueue messages.
    pub(crate) alerting: Arc<crate::alerting::Alerting>,
    /// Runs note their start and end on their incident's timeline.
    pub(crate) incidents: Arc<crate::incidents::Incidents>,
    pub(crate) active: Mutex<HashMap<i64, CancellationToken>>,
    /// Woken when an approval is decided here or, through the store's change feed,
    /// anywhere; a waiting run also polls the store ([`Runbooks::poll_every`]).
    pub(crate) decided: tokio::sync::Notify,
    /// Run ids with new events (wakes `--follow` and SSE streams).
    pub events: broadcast::Sender<i64>,
    /// Whether the store's run change feed is being followed: polls are then only a
    /// safety net.
    pub(crate) feed: std::sync::atomic::AtomicBool,
}

impl Runbooks {
    pub fn new(
        store: Arc<dyn crate::store::RunStore>,
        metrics: Arc<crate::telemetry::Metrics>,
        config: crate::config::ConfigView,
        checks: Arc<crate::checks::Checks>,
        alerting: Arc<crate::alerting::Alerting>,
        incidents: Arc<crate::incidents::Incidents>,
    ) -> Arc<Runbooks> {
        Arc::new(Runbooks {
            store,
            metrics,
            config,
            checks,
            alerting,
            incidents,
            active: Mutex::default(),
            decided: tokio::sync::Notify::new(),
            events: broadcast::channel(4096).0,
            feed: std::sync::atomic::AtomicBool::new(false),
        })
    }
}

/// How often waiters look at the store for changes written elsewhere (a decision, a
/// cancel, events): often without a change feed, rarely with one (it wakes them).
const POLL: std::time::Duration = std::time::Duration::from_secs(1);
const POLL_WITH_FEED: std::time::Duration = std::time::Duration::from_secs(15);

impl Runbooks {
    /// How long a waiter sleeps before looking at the store again, unless woken.
    pub fn poll_every(&self) -> std::time::Duration {
        if self.feed.load(std::sync::atomic::Ordering::Relaxed) { POLL_WITH_FEED } else { POLL }
    }

    /// Follows the store's run change feed until `stop` (PostgreSQL: changes committed
    /// by any replica or CLI), waking the runs waiting for a decision here and the live
    /// streams. Without a feed (SQLite) it returns at once and waiters poll.
    pub async fn follow_changes(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let mut feed = match self.store.run_changes().await {
                Ok(Some(feed)) => feed,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot follow the store's run changes; polling until it can");
                    tokio::select! {
                        _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => continue,
                        _ = stop.cancelled() => return,
                    }
                }
            };
            self.feed.store(true, std::sync::atomic::Ordering::Relaxed);
            loop {
                let change = tokio::select! {
                    c = feed.recv() => c,
                    _ = stop.cancelled() => return,
                };
                match change {
                    Some(crate::store::RunChange::Run(id)) => {
                        let _ = self.events.send(id);
                    }
                    // Anything may have changed while the feed was cut: every stream
                    // and waiter looks again.
                    Some(crate::store::RunChange::Resync) => {
                        for id in self.active_ids() {
                            let _ = self.events.send(id);
                        }
                        let _ = self.events.send(0);
                    }
                    None => break,
                }
                self.decided.notify_waiters();
            }
            self.feed.store(false, std::sync::atomic::Ordering::Relaxed);
        }
    }

    pub fn is_active(&self, run: i64) -> bool {
        self.active.lock().expect("active runs").contains_key(&run)
    }

    pub fn active_ids(&self) -> Vec<i64> {
        self.active.lock().expect("active runs").keys().copied().collect()
    }
}
