//! Assembly: builds each subsystem's context in dependency order, wires the two
//! signals between them, starts and stops their loops, and swaps the configuration on
//! reload. It holds no state of its own that a subsystem reads: each works from its
//! context (see ARCHITECTURE.md, "Subsystems").

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::alerting::{Alerting, AlertingParts};
use crate::backups::service::Backups;
use crate::checks::Checks;
use crate::config::{self, Config, ConfigView, Diagnostics};
use crate::incidents::Incidents;
use crate::runbooks::Runbooks;
use crate::store::Store;
use crate::telemetry::{Metrics, ResultLabels};

type BoxedLoop = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

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

/// The assembled server: one context per subsystem, built in dependency order
/// (checks → alerting → incidents → runbooks; backups beside them), and the loops
/// that drive them. Nothing outside assembly, the API and the CLI takes an `Engine`:
/// each subsystem works from its own context.
pub struct Engine {
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    /// The configuration in force; [`Engine::reload`] replaces it.
    pub config: ConfigView,
    pub checks: Arc<Checks>,
    pub alerting: Arc<Alerting>,
    pub incidents: Arc<Incidents>,
    /// Runbook runs live in this process (approvals wait in the store).
    pub runbooks: Arc<Runbooks>,
    /// Backups: scheduled here, and run, verified and restored through the API.
    pub backups: Arc<Backups>,
    /// Stops the background loops at shutdown.
    stop: CancellationToken,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
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

    /// Builds every subsystem's context, seeds them from the store and starts their
    /// loops. Returns the check result writer, which [`Engine::shutdown`] drains last.
    pub async fn start(
        config: Config,
        store: Arc<dyn Store>,
        options: EngineOptions,
    ) -> Result<(Arc<Engine>, tokio::task::JoinHandle<()>), crate::store::StoreError> {
        Engine::start_with_metrics(config, store, options, Arc::new(Metrics::new())).await
    }

    /// [`Engine::start`] reporting into `metrics`: a replica keeps one registry across
    /// the engines it runs, one per term it leads.
    pub async fn start_with_metrics(
        config: Config,
        store: Arc<dyn Store>,
        options: EngineOptions,
        metrics: Arc<Metrics>,
    ) -> Result<(Arc<Engine>, tokio::task::JoinHandle<()>), crate::store::StoreError> {
        // Created now if missing, so the first page does not wait on it.
        store.server_key(crate::incidents::ack_link::KEY_NAME).await?;
        let config = ConfigView::new(config);
        // The two signals between subsystems: a check changed health (alerting
        // evaluates), an alert changed state (incidents run a pass).
        let health_changed = Arc::new(Notify::new());
        let alert_changed = Arc::new(Notify::new());
        let (checks, writer) =
            Checks::start(store.clone(), store.clone(), metrics.clone(), config.clone(), options.max_concurrency, health_changed.clone())
                .await?;
        let alerting = Alerting::load(AlertingParts {
            store: store.clone(),
            results: store.clone(),
            metrics: metrics.clone(),
            config: config.clone(),
            checks: checks.clone(),
            external_url: options.external_url.clone(),
            alert_changed: alert_changed.clone(),
            health_changed,
        })
        .await?;
        let incidents =
            Incidents::new(store.clone(), store.clone(), metrics.clone(), config.clone(), alerting.clone(), checks.clone(), alert_changed);
        let runbooks = Runbooks::new(store.clone(), metrics.clone(), config.clone(), checks.clone(), alerting.clone(), incidents.clone());
        let backups = Arc::new(
            Backups::new(store.clone(), Some(metrics.clone()), options.data_dir.clone()).with_config_path(options.config_path.clone()),
        );
        let engine = Arc::new(Engine {
            store,
            metrics,
            config,
            checks,
            alerting,
            incidents,
            runbooks,
            backups,
            stop: CancellationToken::new(),
            reloading: tokio::sync::Mutex::new(()),
            loops: Mutex::new(Vec::new()),
            options,
        });
        engine.checks.schedule().await;
        // Every background loop is supervised: a panic is logged, counted and the loop
        // restarted, instead of silently ending alerting or escalations for good.
        let supervise = |name: &'static str, f: Box<dyn Fn(CancellationToken) -> BoxedLoop + Send + Sync>| {
            let stop = engine.stop.clone();
            let handle = crate::telemetry::supervise(name, engine.metrics.clone(), move || f(stop.clone()));
            engine.loops.lock().expect("loops lock").push(handle);
        };
        let alerting = engine.alerting.clone();
        supervise("alerting", Box::new(move |stop| Box::pin(crate::alerting::run(alerting.clone(), stop))));
        let incidents = engine.incidents.clone();
        supervise("incidents", Box::new(move |stop| Box::pin(crate::incidents::manager::run(incidents.clone(), stop))));
        crate::runbooks::control::recover(&engine.runbooks).await?;
        let (runbooks, retention) = (engine.runbooks.clone(), engine.options.run_retention);
        supervise("runbooks", Box::new(move |stop| Box::pin(crate::runbooks::control::background(runbooks.clone(), stop, retention))));
        let runbooks = engine.runbooks.clone();
        supervise("run_changes", Box::new(move |stop| Box::pin(runbooks.clone().follow_changes(stop))));
        if let Err(e) = engine.backups.recover(&engine.config.get()).await {
            tracing::warn!(error = %e, "could not settle backups interrupted by the last stop; will retry");
        }
        let (backups, view) = (engine.backups.clone(), engine.config.clone());
        supervise(
            "backup_schedules",
            Box::new(move |stop| Box::pin(crate::backups::scheduled::background(backups.clone(), view.clone(), stop))),
        );
        engine.metrics.config_reloads.get_or_create(&ResultLabels { result: "success".into() }).inc();
        engine.metrics.config_last_reload_success.set(crate::clock::now().timestamp_millis() as f64 / 1000.0);
        Ok((engine, writer))
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.config.get()
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
        let _one_at_a_time = self.reloading.lock().await;
        let old = self.config.get();
        self.config.replace(config);
        let changed = self.checks.reload(&old).await;
        let (started, stopped) = (changed.started, changed.stopped);
        self.metrics.config_reloads.get_or_create(&ResultLabels { result: "success".into() }).inc();
        self.metrics.config_last_reload_success.set(crate::clock::now().timestamp_millis() as f64 / 1000.0);
        let names = self.config.get().checks.len();
        let report = ReloadReport { checks: names, started, stopped };
        tracing::info!(checks = report.checks, started, stopped, "configuration reloaded");
        Ok(report)
    }

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
        self.checks.shutdown(writer).await;
    }

    /// Periodically folds old raw results into hourly rollups so the store stays bounded.
    pub async fn compact_forever(self: Arc<Self>, raw_retention: Duration, every: Duration) {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            self.compact_once(raw_retention).await;
        }
    }

    /// Folds raw results older than `raw_retention` into hourly rollups, once.
    pub async fn compact_once(&self, raw_retention: Duration) {
        let now = crate::clock::now();
        let raw_before = now - chrono::Duration::from_std(raw_retention).unwrap_or(chrono::Duration::hours(24));
        let rollups_before = now - chrono::Duration::days(400);
        match self.store.compact(raw_before, rollups_before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "rolled up old check results"),
            Err(e) => tracing::warn!(error = %e, "rolling up old check results failed; will retry"),
        }
        let config = self.config();
        for slo in &config.slos {
            if let Err(e) = crate::slos::roll_up(self.store.as_ref(), slo, now).await {
                tracing::warn!(slo = %slo.name, error = %e, "rolling up the SLO's old buckets failed; will retry");
            }
        }
    }
}
