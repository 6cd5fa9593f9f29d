//! The checks subsystem's context: the live state of every check, the scheduler that
//! runs them, and the writer that stores their results.
//!
//! **Invariant:** the in-memory [`CheckState`] map is the authority for current
//! health; the store holds its durable copy, written with every run, and seeds it at
//! start-up so a restart resumes thresholds where they were.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};

use super::scheduler::{self, Scheduler};
use super::state::{self, CheckState, Health};
use super::{Outcome, Prober};
use crate::config::{CheckSpec, Config, ConfigView};
use crate::store::{BackupStore, CheckStore, RecordedRun, StoreError};
use crate::telemetry::{CheckLabels, HealthLabels, KindLabels, Metrics, RunLabels};

pub struct Checks {
    store: Arc<dyn CheckStore>,
    /// Backup checks read backup records (the prober holds it).
    backups: Arc<dyn BackupStore>,
    metrics: Arc<Metrics>,
    config: ConfigView,
    /// Rebuilt with every configuration (it holds the redactor).
    prober: RwLock<Arc<Prober>>,
    states: Mutex<HashMap<String, CheckState>>,
    results: Mutex<Option<mpsc::Sender<scheduler::Queued>>>,
    scheduler: tokio::sync::Mutex<Scheduler>,
    /// Told whenever a check's health changed (alerting evaluates at once).
    health_changed: Arc<Notify>,
    /// The SLOs' recent minutes, counted here and read by their burn-rate rules.
    slo_tallies: crate::slos::tally::Tallies,
}

/// What a reload changed in the running checks.
pub struct ReloadedChecks {
    pub started: usize,
    pub stopped: usize,
}

impl Checks {
    /// Seeds states from the store and starts the result writer (supervised: a
    /// restarted writer takes the same queue back). Checks start with [`Checks::schedule`].
    pub async fn start(
        store: Arc<dyn CheckStore>,
        backups: Arc<dyn BackupStore>,
        metrics: Arc<Metrics>,
        config: ConfigView,
        max_concurrency: usize,
        health_changed: Arc<Notify>,
    ) -> Result<(Arc<Checks>, tokio::task::JoinHandle<()>), StoreError> {
        let stored = store.load_states().await?;
        let (tx, rx) = mpsc::channel(65_536);
        let prober =
            Arc::new(Prober::new(config.get().redactor.clone()).with_stores(backups.clone(), store.clone()).with_config(config.get()));
        let checks = Arc::new(Checks {
            slo_tallies: crate::slos::tally::Tallies::new(metrics.clone()),
            store,
            backups,
            metrics,
            config,
            prober: RwLock::new(prober),
            states: Mutex::new(stored.into_iter().map(|s| (s.check.clone(), s)).collect()),
            results: Mutex::new(Some(tx)),
            scheduler: tokio::sync::Mutex::new(Scheduler::new(max_concurrency)),
            health_changed,
        });
        let queue = Arc::new(tokio::sync::Mutex::new(rx));
        let writer = {
            let c = checks.clone();
            crate::telemetry::supervise("result_writer", checks.metrics.clone(), move || {
                scheduler::write_results(c.clone(), queue.clone(), 2_000, Duration::from_millis(50))
            })
        };
        Ok((checks, writer))
    }

    pub(crate) fn store(&self) -> &dyn CheckStore {
        self.store.as_ref()
    }

    /// Where SLO events are counted (store and memory together) and burn rates read.
    pub(crate) fn slo_tallies(&self) -> &crate::slos::tally::Tallies {
        &self.slo_tallies
    }

    /// The configuration in force (the result writer counts SLO events with it).
    pub(crate) fn config(&self) -> std::sync::Arc<Config> {
        self.config.get()
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn prober(&self) -> Arc<Prober> {
        self.prober.read().expect("prober lock").clone()
    }

    /// Starts every configured check (start-up).
    pub async fn schedule(self: &Arc<Self>) {
        let config = self.config.get();
        self.metrics.checks_configured.set(config.checks.len() as i64);
        crate::slos::declare_metrics(&self.metrics, &config.slos);
        self.scheduler.lock().await.apply(self, &config.checks);
    }

    /// Follows a reload from `old` to the configuration now in force: removed checks
    /// stop and are forgotten, changed ones restart, new ones start.
    pub async fn reload(self: &Arc<Self>, old: &Config) -> ReloadedChecks {
        let mut scheduler = self.scheduler.lock().await;
        let new = self.config.get();
        for spec in &old.checks {
            if new.check(&spec.name).is_none() {
                self.metrics.check_up.remove(&check_labels(spec));
            }
        }
        *self.prober.write().expect("prober lock") =
            Arc::new(Prober::new(new.redactor.clone()).with_stores(self.backups.clone(), self.store.clone()).with_config(new.clone()));
        let (started, stopped) = scheduler.apply(self, &new.checks);
        drop(scheduler);
        let names: Vec<String> = new.checks.iter().map(|c| c.name.clone()).collect();
        self.states.lock().expect("states lock").retain(|k, _| names.contains(k));
        if let Err(e) = self.store.retain_states(&names).await {
            tracing::warn!(error = %e, "could not forget the state of removed checks");
        }
        self.metrics.checks_configured.set(new.checks.len() as i64);
        crate::slos::declare_metrics(&self.metrics, &new.slos);
        self.slo_tallies.retain(&new.slos).await;
        ReloadedChecks { started, stopped }
    }

    /// Stops all checks, then lets the writer flush what is queued.
    pub async fn shutdown(&self, writer: tokio::task::JoinHandle<()>) {
        self.scheduler.lock().await.shutdown().await;
        self.results.lock().expect("results lock").take();
        let _ = writer.await;
    }

    /// The live state of every configured check (unknown if it has not run yet).
    pub fn states(&self) -> HashMap<String, CheckState> {
        self.states.lock().expect("states lock").clone()
    }

    /// `read` applied to every check's state under the lock, without copying them: for
    /// a page that filters 20,000 checks and shows fifty. Keep `read` short — runs
    /// wait for the lock meanwhile.
    pub fn with_states<R>(&self, read: impl FnOnce(&HashMap<String, CheckState>) -> R) -> R {
        read(&self.states.lock().expect("states lock"))
    }

    pub fn state(&self, check: &str) -> Option<CheckState> {
        self.states.lock().expect("states lock").get(check).cloned()
    }

    /// Folds a run into the check's state, updates metrics, and stores it.
    ///
    /// A run that changes the check's health is stored *before* the new health is
    /// visible to anyone (the API, alert rules): it goes through the writer in order
    /// with the runs before it, and this waits for the commit. So an alert never fires
    /// — and nothing is ever sent — about a transition a crash could still lose. Runs
    /// that change nothing are batched and may be dropped under overload (counted).
    pub async fn observe(&self, spec: &CheckSpec, outcome: Outcome) {
        let kind = spec.probe.kind();
        let result = if outcome.healthy { "success" } else { "failure" };
        self.metrics.check_runs.get_or_create(&RunLabels { kind: kind.into(), result: result.into() }).inc();
        self.metrics.check_duration.get_or_create(&KindLabels { kind: kind.into() }).observe(outcome.latency.as_secs_f64());
        let run = {
            let mut states = self.states.lock().expect("states lock");
            let mut st = states.get(&spec.name).cloned().unwrap_or_else(|| CheckState::new(&spec.name, outcome.at));
            let transition = state::apply(
                &mut st,
                outcome.healthy,
                outcome.reason.as_deref(),
                outcome.at,
                spec.failure_threshold,
                spec.success_threshold,
            );
            st.last_latency_ms = Some(outcome.latency.as_secs_f64() * 1000.0);
            if transition.is_none() {
                states.insert(spec.name.clone(), st.clone());
            }
            RecordedRun { check: spec.name.clone(), outcome, state: st, transition }
        };
        let sender = self.results.lock().expect("results lock").clone();
        let Some(t) = run.transition.clone() else {
            if run.state.health != Health::Unknown {
                self.metrics.check_up.get_or_create(&check_labels(spec)).set(i64::from(run.state.health == Health::Healthy));
            }
            if let Some(tx) = sender
                && tx.try_send((run, None)).is_err()
            {
                self.metrics.store_dropped_results.inc();
            }
            return;
        };
        let state = run.state.clone();
        let stored = match sender {
            Some(tx) => {
                let (ack, acked) = tokio::sync::oneshot::channel();
                tx.send((run, Some(ack))).await.is_ok() && acked.await.unwrap_or(false)
            }
            // No writer (it has stopped): write directly.
            None => self.store.record(std::slice::from_ref(&run)).await.is_ok(),
        };
        if !stored {
            // With the store down, alert state cannot be written either, so nothing is
            // sent; the health is still shown, as the probe saw it.
            tracing::error!(check = %t.check, "the health change could not be stored; it is shown but not durable");
        }
        self.states.lock().expect("states lock").insert(spec.name.clone(), state.clone());
        self.health_changed.notify_one();
        self.metrics.check_transitions.get_or_create(&HealthLabels { to: t.to.as_str().into() }).inc();
        if state.health != Health::Unknown {
            self.metrics.check_up.get_or_create(&check_labels(spec)).set(i64::from(state.health == Health::Healthy));
        }
        match t.to {
            Health::Unhealthy => {
                tracing::warn!(check = %t.check, from = t.from.as_str(), reason = t.reason.as_deref().unwrap_or(""), "check is unhealthy")
            }
            _ => tracing::info!(check = %t.check, from = t.from.as_str(), to = t.to.as_str(), "check changed health"),
        }
    }

    /// Runs one check now, outside its schedule, and records the result.
    pub async fn run_now(&self, name: &str) -> Option<Outcome> {
        let spec = self.config.get().check(name)?.clone();
        let outcome = self.prober().run(&spec).await;
        self.observe(&spec, outcome.clone()).await;
        Some(outcome)
    }
}

fn check_labels(spec: &CheckSpec) -> CheckLabels {
    CheckLabels { check: spec.name.clone(), service: spec.service.clone().unwrap_or_default(), kind: spec.probe.kind().into() }
}
