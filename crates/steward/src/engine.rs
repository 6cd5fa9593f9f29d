//! The running Steward: the loaded configuration, live check states, the scheduler,
//! the store and metrics, shared by the scheduler tasks and the API.
//!
//! **Architecture invariant:** the in-memory [`CheckState`] map is the authority for
//! current health; the store holds its durable copy, written with every run, and seeds
//! it at start-up so a restart resumes thresholds where they were.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use tokio_util::sync::CancellationToken;

use crate::alerting::Live;
use crate::checks::state::{self, CheckState, Health};
use crate::checks::{Outcome, Prober};
use crate::config::{self, CheckSpec, Config, Diagnostics};
use crate::scheduler::{self, Scheduler};
use crate::store::{RecordedRun, Store};
use crate::telemetry::{CheckLabels, HealthLabels, KindLabels, Metrics, ResultLabels, RunLabels};

type BoxedLoop = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// A configuration together with what was built from it.
pub struct Loaded {
    pub config: Arc<Config>,
    pub prober: Arc<Prober>,
    pub loaded_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Probes in flight at once, across all checks.
    pub max_concurrency: usize,
    /// Where `reload` reads the configuration from; `None` disables reload.
    pub config_path: Option<PathBuf>,
    /// How people reach this server: notifications link to it (`externalURL`,
    /// each alert's `generatorURL`).
    pub external_url: String,
    /// How long finished runbook runs are kept.
    pub run_retention: Duration,
    /// The data directory: backups spool there when a tool needs files.
    pub data_dir: PathBuf,
}

pub struct Engine {
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    pub alerting: Live,
    pub incidents: crate::incidents::Incidents,
    /// Runbook runs live in this process (approvals wait in the store).
    pub runbooks: crate::runbooks::Runbooks,
    /// Backups: scheduled here, and run, verified and restored through the API.
    pub backups: Arc<crate::backups::service::Backups>,
    /// Stops the alerting tasks at shutdown.
    stop: CancellationToken,
    loaded: RwLock<Arc<Loaded>>,
    states: Mutex<HashMap<String, CheckState>>,
    results: Mutex<Option<mpsc::Sender<scheduler::Queued>>>,
    scheduler: tokio::sync::Mutex<Scheduler>,
    /// The supervised background loops, awaited at shutdown.
    loops: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    options: EngineOptions,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadReport {
    pub checks: usize,
    pub started: usize,
    pub stopped: usize,
}

impl Engine {
    pub fn external_url(&self) -> &str {
        &self.options.external_url
    }

    /// Seeds states from the store, starts the result writer and every check.
    pub async fn start(
        config: Config,
        store: Arc<dyn Store>,
        options: EngineOptions,
    ) -> Result<(Arc<Engine>, tokio::task::JoinHandle<()>), crate::store::StoreError> {
        let stored = store.load_states().await?;
        let alerting = Live::load(store.as_ref()).await?;
        // Created now if missing, so the first page does not wait on it.
        store.server_key(crate::incidents::ack_link::KEY_NAME).await?;
        let (tx, rx) = mpsc::channel(65_536);
        let metrics = Arc::new(Metrics::new());
        let prober = Arc::new(Prober::new(config.redactor.clone()).with_store(store.clone()));
        let backups = Arc::new(crate::backups::service::Backups::new(store.clone(), Some(metrics.clone()), options.data_dir.clone()));
        let engine = Arc::new(Engine {
            store,
            metrics,
            alerting,
            incidents: Default::default(),
            runbooks: Default::default(),
            backups,
            stop: CancellationToken::new(),
            loaded: RwLock::new(Arc::new(Loaded { prober, config: Arc::new(config), loaded_at: crate::clock::now() })),
            states: Mutex::new(stored.into_iter().map(|s| (s.check.clone(), s)).collect()),
            results: Mutex::new(Some(tx)),
            scheduler: tokio::sync::Mutex::new(Scheduler::new(options.max_concurrency)),
            loops: Mutex::new(Vec::new()),
            options,
        });
        // Supervised like every loop: a restarted writer takes the same queue back.
        let queue = Arc::new(tokio::sync::Mutex::new(rx));
        let writer = {
            let e = engine.clone();
            crate::telemetry::supervise("result_writer", engine.metrics.clone(), move || {
                scheduler::write_results(e.clone(), queue.clone(), 2_000, Duration::from_millis(50))
            })
        };
        let loaded = engine.current();
        engine.publish_config_metrics(&loaded.config);
        engine.scheduler.lock().await.apply(&engine, &loaded.config.checks);
        // Every background loop is supervised: a panic is logged, counted and the loop
        // restarted, instead of silently ending alerting or escalations for good.
        let supervise = |name: &'static str, f: fn(Arc<Engine>, CancellationToken) -> _| {
            let e = engine.clone();
            let handle = crate::telemetry::supervise(name, engine.metrics.clone(), move || f(e.clone(), e.stop.clone()));
            engine.loops.lock().expect("loops lock").push(handle);
        };
        supervise("alerting", |e, stop| Box::pin(crate::alerting::run(e, stop)) as BoxedLoop);
        supervise("incidents", |e, stop| Box::pin(crate::incidents::manager::run(e, stop)) as BoxedLoop);
        crate::runbooks::control::recover(&engine).await?;
        supervise("runbooks", |e, stop| {
            let retention = e.options.run_retention;
            Box::pin(crate::runbooks::control::background(e, stop, retention)) as BoxedLoop
        });
        if let Err(e) = engine.backups.recover(&loaded.config).await {
            tracing::warn!(error = %e, "could not settle backups interrupted by the last stop; will retry");
        }
        supervise("backup_schedules", |e, stop| Box::pin(crate::backups::scheduled::background(e, stop)) as BoxedLoop);
        engine.metrics.config_reloads.get_or_create(&ResultLabels { result: "success".into() }).inc();
        engine.metrics.config_last_reload_success.set(crate::clock::now().timestamp_millis() as f64 / 1000.0);
        Ok((engine, writer))
    }

    pub fn current(&self) -> Arc<Loaded> {
        self.loaded.read().expect("config lock").clone()
    }

    pub fn prober(&self) -> Arc<Prober> {
        self.current().prober.clone()
    }

    pub fn config(&self) -> Arc<Config> {
        self.current().config.clone()
    }

    /// The live state of every configured check (unknown if it has not run yet).
    pub fn states(&self) -> HashMap<String, CheckState> {
        self.states.lock().expect("states lock").clone()
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
        self.alerting.wake_evaluator.notify_one();
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
        let loaded = self.current();
        let spec = loaded.config.check(name)?.clone();
        let outcome = loaded.prober.run(&spec).await;
        self.observe(&spec, outcome.clone()).await;
        Some(outcome)
    }

    /// Re-reads the configuration. On any error the running configuration stays and
    /// the diagnostics are returned; on success checks are rescheduled by difference.
    pub async fn reload(self: &Arc<Self>) -> Result<ReloadReport, Diagnostics> {
        let Some(path) = self.options.config_path.clone() else {
            return Err(Diagnostics::default());
        };
        // A panic while loading is a bug, but it must not take reload down with it: it
        // becomes a diagnostic like any other error, and the running configuration stays.
        let name = path.display().to_string();
        let result = tokio::task::spawn_blocking(move || config::load(&path)).await.unwrap_or_else(|e| {
            self.metrics.panic("config_reload");
            let why = crate::telemetry::panic_message(e);
            Err(Diagnostics(vec![
                config::Diagnostic::error(
                    config::Pos::new(&std::sync::Arc::from(name), 1, 1),
                    format!("loading the configuration failed unexpectedly ({why}); this is a bug in steward"),
                )
                .with_hint("please report it with the configuration that caused it; the running configuration was kept"),
            ]))
        });
        let config = match result {
            Ok(c) => c,
            Err(d) => {
                self.metrics.config_reloads.get_or_create(&ResultLabels { result: "failure".into() }).inc();
                tracing::error!(errors = d.0.len(), "configuration reload rejected; the running configuration stays:\n{d}");
                return Err(d);
            }
        };
        let mut scheduler = self.scheduler.lock().await;
        let old = self.current();
        for spec in &old.config.checks {
            if config.check(&spec.name).is_none() {
                self.metrics.check_up.remove(&check_labels(spec));
            }
        }
        let names: Vec<String> = config.checks.iter().map(|c| c.name.clone()).collect();
        let new = Arc::new(Loaded {
            prober: Arc::new(Prober::new(config.redactor.clone()).with_store(self.store.clone())),
            config: Arc::new(config),
            loaded_at: crate::clock::now(),
        });
        *self.loaded.write().expect("config lock") = new.clone();
        let (started, stopped) = scheduler.apply(self, &new.config.checks);
        drop(scheduler);
        self.states.lock().expect("states lock").retain(|k, _| names.contains(k));
        if let Err(e) = self.store.retain_states(&names).await {
            tracing::warn!(error = %e, "could not forget the state of removed checks");
        }
        self.publish_config_metrics(&new.config);
        self.metrics.config_reloads.get_or_create(&ResultLabels { result: "success".into() }).inc();
        self.metrics.config_last_reload_success.set(crate::clock::now().timestamp_millis() as f64 / 1000.0);
        let report = ReloadReport { checks: names.len(), started, stopped };
        tracing::info!(checks = report.checks, started, stopped, "configuration reloaded");
        Ok(report)
    }

    fn publish_config_metrics(&self, config: &Config) {
        self.metrics.checks_configured.set(config.checks.len() as i64);
    }

    /// Stops all checks, then lets the writer flush what is queued.
    /// Stops the background loops (and waits until they have: nothing evaluates, pages
    /// or runs after this returns), then stops all checks and lets the writer flush
    /// what is queued.
    pub async fn shutdown(&self, writer: tokio::task::JoinHandle<()>) {
        self.stop.cancel();
        let loops: Vec<_> = self.loops.lock().expect("loops lock").drain(..).collect();
        for handle in loops {
            // Each loop selects on `stop`; one stuck in a long call is not waited for forever.
            let _ = tokio::time::timeout(Duration::from_secs(10), handle).await;
        }
        self.scheduler.lock().await.shutdown().await;
        self.results.lock().expect("results lock").take();
        let _ = writer.await;
    }

    /// Periodically folds old raw results into hourly rollups so the store stays bounded.
    pub async fn compact_forever(self: Arc<Self>, raw_retention: Duration, every: Duration) {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let now = crate::clock::now();
            let raw_before = now - chrono::Duration::from_std(raw_retention).unwrap_or(chrono::Duration::hours(24));
            let rollups_before = now - chrono::Duration::days(400);
            match self.store.compact(raw_before, rollups_before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(rows = n, "rolled up old check results"),
                Err(e) => tracing::warn!(error = %e, "rolling up old check results failed; will retry"),
            }
        }
    }
}

fn check_labels(spec: &CheckSpec) -> CheckLabels {
    CheckLabels { check: spec.name.clone(), service: spec.service.clone().unwrap_or_default(), kind: spec.probe.kind().into() }
}
