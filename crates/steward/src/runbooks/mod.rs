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
    /// Woken when an approval is decided here; a waiting run also polls the store, for
    /// decisions taken by another process.
    pub(crate) decided: tokio::sync::Notify,
    /// Run ids with new events (wakes `--follow` and SSE streams).
    pub events: broadcast::Sender<i64>,
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
        })
    }
}

impl Runbooks {
    pub fn is_active(&self, run: i64) -> bool {
        self.active.lock().expect("active runs").contains_key(&run)
    }

    pub fn active_ids(&self) -> Vec<i64> {
        self.active.lock().expect("active runs").keys().copied().collect()
    }
}
