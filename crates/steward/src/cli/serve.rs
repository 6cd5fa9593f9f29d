//! `steward serve`: the scheduler, the store and the API in one process.
//! SIGHUP reloads the configuration (validated first; the old one stays on error);
//! SIGTERM and Ctrl-C stop gracefully, flushing queued results to the store.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

use super::{exit, tls};
use crate::api::replica::Front;
use crate::api::{self, AppState};
use crate::cluster::{LeaseOptions, Member, ReplicaState, StartEngine};
use crate::config::{self, Config, ConfigView};
use crate::engine::{Engine, EngineOptions};
use crate::store::{Replica, Store};
use crate::telemetry::{Metrics, supervise};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// A YAML file, or a directory whose *.yaml / *.yml files form one configuration.
    pub config: PathBuf,
    /// The server's data directory (its store, keys and tokens).
    pub data: PathBuf,
    /// A PostgreSQL store URL (`--store`); else the configuration's `store:`, else
    /// SQLite in `data`.
    pub store: Option<String>,
    pub listen: SocketAddr,
    pub max_concurrency: usize,
    /// How long raw results are kept before being rolled up into hourly summaries.
    pub raw_retention: Duration,
    /// How long finished runbook runs are kept.
    pub run_retention: Duration,
    pub status_page: bool,
    /// The URL notifications link to; defaults to `http(s)://` + the listen address.
    pub external_url: Option<String>,
    /// Certificate chain and key files (PEM): serve HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// With a shared store: where other replicas reach this one (default: the external URL).
    pub advertise_url: Option<String>,
    /// With a shared store: how long the leadership lease lasts unless renewed.
    pub lease_ttl: Duration,
}

/// Runs until SIGTERM/SIGINT. `on_listening` is told the bound address (the demo
/// listens on port 0 and needs the real one).
pub async fn run(opts: ServeOptions, on_listening: Option<Box<dyn FnOnce(SocketAddr) + Send>>) -> u8 {
    let config = match config::load(&opts.config) {
        Ok(c) => c,
        Err(d) => {
            super::print_diagnostics(&d);
            return exit::BAD_CONFIG;
        }
    };
    let certificate = match &opts.tls {
        Some((cert, key)) => match tls::Certificate::load(cert, key) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("error: {e}\n  hint: --tls-cert takes the PEM chain, --tls-key its PEM private key");
                return exit::BAD_CONFIG;
            }
        },
        None => None,
    };
    let store = match super::store::open(&opts.data, opts.store.as_deref(), config.store.as_ref()).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::FAILED;
        }
    };
    let listener = match tokio::net::TcpListener::bind(opts.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}\n  hint: pick another address with --listen, or stop what is using it", opts.listen);
            return exit::FAILED;
        }
    };
    let addr = listener.local_addr().expect("bound socket has an address");
    warn_short_history(&config, opts.raw_retention);
    let checks = config.checks.len();
    let scheme = if certificate.is_some() { "https" } else { "http" };
    let external_url = opts.external_url.clone().unwrap_or_else(|| format!("{scheme}://{addr}")).trim_end_matches('/').to_string();
    let engine_options = EngineOptions {
        max_concurrency: opts.max_concurrency,
        config_path: Some(opts.config.clone()),
        external_url,
        run_retention: opts.run_retention,
        data_dir: opts.data.clone(),
    };
    if opts.store.is_some() || config.store.is_some() {
        return serve_replica(opts, config, store, listener, certificate, engine_options, on_listening).await;
    }
    let (engine, writer) = match Engine::start(config, store, engine_options).await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::FAILED;
        }
    };
    tracing::info!(%addr, checks, data = %opts.data.display(), "steward is serving");
    // A fresh data directory has no token, and without one the API answers 401 to all.
    if let Ok(tokens) = engine.store.list_tokens().await
        && tokens.iter().all(|t| t.revoked_at.is_some())
    {
        tracing::warn!(
            "no API token can use this server yet; create the first one with: steward token create --data {} --name admin --role admin",
            opts.data.display()
        );
    }
    let Some(stop) = announce(addr, on_listening) else { return exit::FAILED };
    let compactor = {
        let (e, keep) = (engine.clone(), opts.raw_retention);
        supervise("compaction", engine.metrics.clone(), move || e.clone().compact_forever(keep, Duration::from_secs(600)))
    };
    let reloader = {
        let (e, c) = (engine.clone(), certificate.clone());
        supervise("sighup_reload", engine.metrics.clone(), move || reload_on_sighup(e.clone(), c.clone()))
    };
    let uptime = Arc::new(api::uptime::UptimeCache::default());
    if opts.status_page {
        uptime.warm(&engine.config(), &engine.store);
    }
    let app = api::router(Arc::new(AppState { engine: engine.clone(), status_page: opts.status_page, uptime }));
    let served = serve_http(listener, certificate, app, stop).await;
    tracing::info!("shutting down: stopping checks and flushing results");
    reloader.abort();
    compactor.abort();
    engine.shutdown(writer).await;
    match served {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("error: the HTTP server failed: {e}");
            exit::FAILED
        }
    }
}

/// `serve` on a shared (PostgreSQL) store: one replica of several. It serves HTTP at
/// once, as a follower, and runs an engine only while it holds the leadership (see
/// `cluster`): what must run once runs on one replica, and any replica answers.
#[allow(clippy::too_many_arguments)]
async fn serve_replica(
    opts: ServeOptions,
    config: Config,
    store: Arc<dyn Store>,
    listener: tokio::net::TcpListener,
    certificate: Option<Arc<tls::Certificate>>,
    engine_options: EngineOptions,
    on_listening: Option<Box<dyn FnOnce(SocketAddr) + Send>>,
) -> u8 {
    let addr = listener.local_addr().expect("bound socket has an address");
    let metrics = Arc::new(Metrics::new());
    let now = crate::clock::now();
    let me = Replica {
        id: crate::telemetry::process_owner(),
        address: opts.advertise_url.clone().unwrap_or_else(|| engine_options.external_url.clone()),
        version: env!("CARGO_PKG_VERSION").to_string(),
        schema: crate::store::PostgresStore::SCHEMA_VERSION,
        started_at: now,
        heartbeat_at: now,
    };
    let (role_tx, role_rx) = watch::channel(ReplicaState::default());
    // Each term starts from the configuration file as it is then: a replica that takes
    // over runs what the operator last wrote, not what it read at its own start.
    let start_engine: StartEngine = {
        let (path, options, metrics) = (opts.config.clone(), engine_options.clone(), metrics.clone());
        Arc::new(move |fenced: Arc<dyn Store>| {
            let (path, options, metrics) = (path.clone(), options.clone(), metrics.clone());
            Box::pin(async move {
                let config = config::load(&path).map_err(|d| format!("the configuration does not load:\n{d}"))?;
                Engine::start_with_metrics(config, fenced, options, metrics).await.map_err(|e| e.to_string())
            })
        })
    };
    let member = Arc::new(Member {
        store: store.clone(),
        me: me.clone(),
        lease: LeaseOptions { ttl: opts.lease_ttl },
        metrics: metrics.clone(),
        role: role_tx,
        start_engine,
        known: Default::default(),
    });
    let stop_member = CancellationToken::new();
    let member_task = tokio::spawn(member.run(stop_member.clone()));
    tracing::info!(%addr, replica = me.id, ttl = ?opts.lease_ttl, "steward is serving as a replica of a shared store");
    let Some(stop) = announce(addr, on_listening) else { return exit::FAILED };
    // Maintenance that must run once runs on whichever replica leads at the time.
    let compactor = {
        let (role, keep) = (role_rx.clone(), opts.raw_retention);
        supervise("compaction", metrics.clone(), move || compact_while_leading(role.clone(), keep))
    };
    let view = ConfigView::new(config);
    let reloader = {
        let (role, c, view, path) = (role_rx.clone(), certificate.clone(), view.clone(), opts.config.clone());
        supervise("sighup_reload", metrics.clone(), move || reload_replica_on_sighup(role.clone(), c.clone(), view.clone(), path.clone()))
    };
    let front = Arc::new(Front::new(role_rx, store, metrics, opts.status_page, view, me.id.clone()));
    let served = serve_http(listener, certificate, api::replica::router(front), stop).await;
    tracing::info!("shutting down: stopping the engine (if leading) and giving the leadership up");
    reloader.abort();
    compactor.abort();
    stop_member.cancel();
    let _ = member_task.await;
    match served {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("error: the HTTP server failed: {e}");
            exit::FAILED
        }
    }
}

/// Serves `app` (over TLS with a certificate) until `stop`.
async fn serve_http(
    listener: tokio::net::TcpListener,
    certificate: Option<Arc<tls::Certificate>>,
    app: axum::Router,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match certificate {
        Some(c) => axum::serve(tls::TlsListener::new(listener, c)?, app).with_graceful_shutdown(stop).await,
        None => axum::serve(listener, app).with_graceful_shutdown(stop).await,
    }
}

/// Rolls up old results every ten minutes, on the leader's engine only.
async fn compact_while_leading(role: watch::Receiver<ReplicaState>, keep: Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(600));
    loop {
        tick.tick().await;
        let engine = role.borrow().engine.clone();
        if let Some(engine) = engine {
            engine.compact_once(keep).await;
        }
    }
}

/// SIGHUP on a replica: the configuration this replica serves from (its status page)
/// is read again, and the engine's too while it leads (a follower's engine reads the
/// file when it takes over).
async fn reload_replica_on_sighup(
    role: watch::Receiver<ReplicaState>,
    certificate: Option<Arc<tls::Certificate>>,
    view: ConfigView,
    path: std::path::PathBuf,
) {
    let Ok(mut hup) = signal(SignalKind::hangup()) else { return };
    while hup.recv().await.is_some() {
        match tokio::task::spawn_blocking({
            let path = path.clone();
            move || config::load(&path)
        })
        .await
        {
            Ok(Ok(c)) => {
                view.replace(c);
            }
            Ok(Err(d)) => tracing::error!("SIGHUP: the configuration does not load; keeping the running one:\n{d}"),
            Err(e) => tracing::error!(error = %e, "SIGHUP: reading the configuration failed; keeping the running one"),
        }
        let engine = role.borrow().engine.clone();
        if let Some(engine) = engine {
            tracing::info!("SIGHUP: reloading configuration");
            let _ = engine.reload().await;
        }
        if let Some(c) = &certificate {
            match c.reload() {
                Ok(()) => tracing::info!("TLS certificate reloaded"),
                Err(e) => tracing::error!(error = %e, "TLS certificate reload failed; the current one is still served"),
            }
        }
    }
}

async fn reload_on_sighup(engine: Arc<Engine>, certificate: Option<Arc<tls::Certificate>>) {
    let Ok(mut hup) = signal(SignalKind::hangup()) else { return };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading configuration");
        // Errors are logged by reload itself, and the running configuration stays.
        let _ = engine.reload().await;
        if let Some(c) = &certificate {
            match c.reload() {
                Ok(()) => tracing::info!("TLS certificate reloaded"),
                Err(e) => tracing::error!(error = %e, "TLS certificate reload failed; the current one is still served"),
            }
        }
    }
}

/// Installs the stop handlers, then tells `on_listening` the address: a SIGTERM sent
/// the moment the server is known to listen must stop it gracefully, not kill it.
/// `None` when the handlers cannot be installed (said on stderr).
fn announce(
    addr: SocketAddr,
    on_listening: Option<Box<dyn FnOnce(SocketAddr) + Send>>,
) -> Option<impl Future<Output = ()> + Send + 'static> {
    let stop = match shutdown_signal() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot install the SIGTERM/SIGINT handlers: {e}");
            return None;
        }
    };
    if let Some(f) = on_listening {
        f(addr);
    }
    Some(stop)
}

/// Resolves on SIGTERM or SIGINT; the handlers are installed when this is called.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// A forecast over a check reads its raw results, which are kept `--raw-retention`: one
/// that reads further back sees less history than it asks for, and says so at start.
fn warn_short_history(config: &crate::config::Config, raw_retention: Duration) {
    for rule in &config.alerts {
        if let crate::config::AlertCondition::Forecast(f) = &rule.when
            && f.promql().is_none()
            && f.over > raw_retention
        {
            tracing::warn!(
                alert = %rule.name,
                over = %crate::config::duration::format_duration(f.over),
                raw_retention = %crate::config::duration::format_duration(raw_retention),
                "the forecast reads more history than raw results are kept; it fits only what is kept (raise --raw-retention)"
            );
        }
    }
}
