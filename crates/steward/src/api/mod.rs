//! The HTTP surface: `/api/v1` (JSON, bearer tokens), `/health`, `/health/ready`,
//! `/metrics` and the status page at `/`.
//!
//! **Architecture invariant:** only `api/` and `cli/` know HTTP, JSON response shapes
//! and terminal formatting; the engine hands them plain values.

mod alerts;
mod auth;
mod backups;
mod console;
pub mod error;
mod guard;
mod heartbeats;
pub mod incidents;
pub mod replica;
mod runs;
mod status_page;
pub mod uptime;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use self::auth::Caller;
use self::error::{ApiError, Code};
use crate::auth::Role;
use crate::checks::state::{CheckState, Health};
use crate::config::{CheckSpec, Config};
use crate::engine::Engine;
use crate::store::Store;

pub struct AppState {
    pub engine: Arc<Engine>,
    pub status_page: bool,
    /// The status page's 90-day bars, read at start and refreshed behind visitors.
    pub uptime: Arc<uptime::UptimeCache>,
}

pub const OPENAPI: &str = include_str!("openapi.json");

pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/services", get(list_services))
        .route("/services/{name}", get(get_service))
        .route("/checks", get(list_checks))
        .route("/checks/{name}", get(get_check))
        .route("/checks/{name}/history", get(check_history))
        .route("/checks/{name}/transitions", get(check_transitions))
        .route("/checks/{name}/rollups", get(check_rollups))
        .route("/checks/{name}/run", post(run_check))
        .route("/heartbeats/{check}", post(heartbeats::ok))
        .route("/heartbeats/{check}/fail", post(heartbeats::fail))
        .route("/transitions", get(all_transitions))
        .route("/alerts", get(alerts::list_alerts))
        .route("/alerts/{fingerprint}", get(alerts::get_alert))
        .route("/notifications", get(alerts::list_notifications))
        .route("/silences", get(alerts::list_silences).post(alerts::create_silence))
        .route("/silences/{id}", axum::routing::delete(alerts::expire_silence))
        .route("/maintenance-windows", get(alerts::list_maintenance_windows))
        .route("/rules", get(alerts::list_rules))
        .route("/slos", get(alerts::list_slos))
        .route("/slos/{name}", get(alerts::get_slo))
        .route("/ingest/alertmanager", post(alerts::ingest_alertmanager))
        .route("/incidents", get(incidents::list).post(incidents::declare))
        .route("/incidents/stats", get(incidents::stats))
        .route("/incidents/{id}", get(incidents::show))
        .route("/incidents/{id}/notes", post(incidents::add_note))
        .route("/incidents/{id}/priority", post(incidents::set_priority))
        .route("/incidents/{id}/roles", post(incidents::assign_role))
        .route("/incidents/{id}/postmortem", get(incidents::postmortem))
        .route("/incidents/{id}/action-items", post(incidents::add_action_item))
        .route("/incidents/{id}/action-items/{item}/done", post(incidents::complete_action_item))
        .route("/incidents/{id}/{action}", post(incidents::transition))
        .route("/action-items", get(incidents::list_action_items))
        .route("/oncall", get(incidents::oncall))
        .route("/schedules/{name}/overrides", post(incidents::add_override))
        .route("/runbooks", get(runs::list_runbooks))
        .route("/runbooks/{name}", get(runs::get_runbook))
        .route("/runbooks/{name}/runs", post(runs::start_run))
        .route("/runs", get(runs::list_runs))
        .route("/runs/{id}", get(runs::get_run))
        .route("/runs/{id}/events", get(runs::run_events))
        .route("/runs/{id}/stream", get(runs::stream_run))
        .route("/runs/{id}/approve", post(runs::approve))
        .route("/runs/{id}/deny", post(runs::deny))
        .route("/runs/{id}/cancel", post(runs::cancel))
        .route("/runs/{id}/resume", post(runs::resume))
        .route("/runs/{id}/retry", post(runs::retry))
        .route("/audit", get(runs::audit))
        .route("/backups", get(backups::list))
        .route("/backups/run", post(backups::run))
        .route("/backups/prune", post(backups::prune))
        .route("/backups/{id}", get(backups::show))
        .route("/backups/{id}/verify", post(backups::verify))
        .route("/backups/{id}/restore", post(backups::restore))
        .route("/config/reload", post(reload))
        .route("/tokens", get(list_tokens))
        .route("/whoami", get(whoami))
        .route("/openapi.json", get(openapi))
        .fallback(|| async { ApiError::new(Code::NotFound, "no such API endpoint; see /api/v1/openapi.json") });
    Router::new()
        .route("/", get(status_page))
        .route("/status.json", get(status_json))
        .route("/ack/{token}", get(incidents::ack_link_page).post(incidents::ack_link_submit))
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .nest("/api/v1", api)
        .merge(console::routes(state.clone()))
        .layer(axum::middleware::from_fn(guard::strict))
        .layer(axum::extract::DefaultBodyLimit::max(guard::MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(state.engine.metrics.clone(), guard::outer))
        .with_state(state)
}

/// One check as the API shows it: definition and live state together.
#[derive(Debug, Serialize)]
pub struct CheckView {
    pub name: String,
    pub service: Option<String>,
    pub kind: &'static str,
    pub target: String,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub failure_threshold: u32,
    pub success_threshold: u32,
    pub conditions: Vec<String>,
    pub labels: std::collections::BTreeMap<String, String>,
    pub health: Health,
    /// When the health last changed.
    pub since: Option<DateTime<Utc>>,
    pub last_run: Option<DateTime<Utc>>,
    pub latency_ms: Option<f64>,
    pub reason: Option<String>,
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
}

impl CheckView {
    pub fn new(spec: &CheckSpec, state: Option<&CheckState>) -> CheckView {
        CheckView {
            name: spec.name.clone(),
            service: spec.service.clone(),
            kind: spec.probe.kind(),
            target: spec.probe.target(),
            interval_ms: spec.interval.as_millis() as u64,
            timeout_ms: spec.timeout.as_millis() as u64,
            failure_threshold: spec.failure_threshold,
            success_threshold: spec.success_threshold,
            conditions: spec.conditions.iter().map(|c| c.source.clone()).collect(),
            labels: spec.labels.clone(),
            health: state.map_or(Health::Unknown, |s| s.health),
            since: state.map(|s| s.since),
            last_run: state.and_then(|s| s.last_run),
            latency_ms: state.and_then(|s| s.last_latency_ms),
            reason: state.and_then(|s| s.last_reason.clone()),
            consecutive_failures: state.map_or(0, |s| s.consecutive_failures),
            consecutive_successes: state.map_or(0, |s| s.consecutive_successes),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ServiceView {
    pub name: String,
    pub tier: u8,
    pub owner: Option<String>,
    pub depends_on: Vec<String>,
    pub labels: std::collections::BTreeMap<String, String>,
    /// Worst health of its checks: unhealthy if any is, unknown if none has a verdict.
    pub health: Health,
    pub checks: Vec<CheckView>,
}

/// Services with their checks, in tier order; checks without a service come last
/// under a pseudo-service named "(no service)".
pub fn service_views(config: &Config, states: &HashMap<String, CheckState>) -> Vec<ServiceView> {
    // One pass over the checks, grouped by service (not a scan of every check per
    // service: 100 services × 20,000 checks was most of the overview's time).
    let mut by_service: HashMap<Option<&str>, Vec<CheckView>> = HashMap::new();
    for c in &config.checks {
        by_service.entry(c.service.as_deref()).or_default().push(CheckView::new(c, states.get(&c.name)));
    }
    let mut out: Vec<ServiceView> = config
        .services
        .iter()
        .map(|s| {
            let checks = by_service.remove(&Some(s.name.as_str())).unwrap_or_default();
            ServiceView {
                name: s.name.clone(),
                tier: s.tier,
                owner: s.owner.clone(),
                depends_on: s.depends_on.clone(),
                labels: s.labels.clone(),
                health: aggregate(checks.iter().map(|c| c.health)),
                checks,
            }
        })
        .collect();
    out.sort_by(|a, b| (a.tier, &a.name).cmp(&(b.tier, &b.name)));
    let orphans = by_service.remove(&None).unwrap_or_default();
    if !orphans.is_empty() {
        out.push(ServiceView {
            name: "(no service)".into(),
            tier: 0,
            owner: None,
            depends_on: vec![],
            labels: Default::default(),
            health: aggregate(orphans.iter().map(|c| c.health)),
            checks: orphans,
        });
    }
    out
}

pub(crate) fn aggregate(healths: impl Iterator<Item = Health>) -> Health {
    let mut result = Health::Unknown;
    for h in healths {
        match h {
            Health::Unhealthy => return Health::Unhealthy,
            Health::Healthy => result = Health::Healthy,
            Health::Unknown => {}
        }
    }
    result
}

async fn list_services(caller: Caller, State(s): State<Arc<AppState>>) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let views = service_views(&s.engine.config(), &s.engine.checks.states());
    Ok(Json(json!({ "services": views })))
}

async fn get_service(caller: Caller, State(s): State<Arc<AppState>>, Path(name): Path<String>) -> Result<Json<ServiceView>, ApiError> {
    caller.require(Role::Viewer)?;
    service_views(&s.engine.config(), &s.engine.checks.states())
        .into_iter()
        .find(|v| v.name == name)
        .map(Json)
        .ok_or_else(|| ApiError::not_found("service", &name))
}

async fn list_checks(caller: Caller, State(s): State<Arc<AppState>>) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let config = s.engine.config();
    let states = s.engine.checks.states();
    let checks: Vec<CheckView> = config.checks.iter().map(|c| CheckView::new(c, states.get(&c.name))).collect();
    Ok(Json(json!({ "checks": checks })))
}

fn known_check(s: &AppState, name: &str) -> Result<CheckSpec, ApiError> {
    s.engine.config().check(name).cloned().ok_or_else(|| ApiError::not_found("check", name))
}

async fn get_check(caller: Caller, State(s): State<Arc<AppState>>, Path(name): Path<String>) -> Result<Json<CheckView>, ApiError> {
    caller.require(Role::Viewer)?;
    let spec = known_check(&s, &name)?;
    Ok(Json(CheckView::new(&spec, s.engine.checks.state(&name).as_ref())))
}

#[derive(Deserialize)]
struct HistoryQuery {
    limit: Option<u32>,
    before: Option<String>,
    since: Option<String>,
}

/// An RFC 3339 time from a request, within 1970 … 9999 ([`crate::bounds`]).
fn parse_time(field: &str, value: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    value
        .map(|v| {
            DateTime::parse_from_rfc3339(v)
                .map_err(|e| format!("must be an RFC 3339 time such as 2026-01-31T12:00:00Z: {e}"))
                .and_then(|t| crate::bounds::check(crate::clock::truncate(t.with_timezone(&Utc))))
                .map_err(|e| ApiError::new(Code::BadRequest, format!("`{field}` {e}")))
        })
        .transpose()
}

fn limit(q: &HistoryQuery) -> Result<u32, ApiError> {
    match q.limit {
        None => Ok(100),
        Some(n @ 1..=10_000) => Ok(n),
        Some(n) => Err(ApiError::new(Code::BadRequest, format!("`limit` must be between 1 and 10000, got {n}"))),
    }
}

async fn check_history(
    caller: Caller,
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Viewer)?;
    known_check(&s, &name)?;
    let before = parse_time("before", q.before.as_deref())?;
    let rows = s.engine.store.history(&name, limit(&q)?, before).await?;
    Ok(Json(json!({ "check": name, "results": rows })))
}

async fn check_transitions(
    caller: Caller,
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Viewer)?;
    known_check(&s, &name)?;
    let rows = s.engine.store.transitions(Some(&name), limit(&q)?).await?;
    Ok(Json(json!({ "check": name, "transitions": rows })))
}

async fn check_rollups(
    caller: Caller,
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Viewer)?;
    known_check(&s, &name)?;
    let since = parse_time("since", q.since.as_deref())?.unwrap_or_else(|| crate::clock::now() - chrono::Duration::days(7));
    let rows = s.engine.store.rollups(&name, since).await?;
    Ok(Json(json!({ "check": name, "rollups": rows })))
}

async fn all_transitions(
    caller: Caller,
    State(s): State<Arc<AppState>>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let rows = s.engine.store.transitions(None, limit(&q)?).await?;
    Ok(Json(json!({ "transitions": rows })))
}

async fn run_check(caller: Caller, State(s): State<Arc<AppState>>, Path(name): Path<String>) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Operator)?;
    known_check(&s, &name)?;
    let outcome = s.engine.checks.run_now(&name).await.ok_or_else(|| ApiError::not_found("check", &name))?;
    tracing::info!(check = %name, by = %caller.0.name, healthy = outcome.healthy, "check run on request");
    Ok(Json(json!({ "check": name, "outcome": outcome, "state": s.engine.checks.state(&name) })))
}

async fn reload(caller: Caller, State(s): State<Arc<AppState>>) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Admin)?;
    tracing::info!(by = %caller.0.name, "configuration reload requested through the API");
    match s.engine.reload().await {
        Ok(report) => Ok(Json(json!({ "reloaded": true, "report": report }))),
        Err(d) if d.is_empty() => {
            Err(ApiError::new(Code::BadRequest, "this server was started without a configuration path to reload from"))
        }
        Err(d) => Err(ApiError {
            code: Code::InvalidConfig,
            message: format!("the new configuration has {} error(s); the running configuration was kept", d.0.len()),
            details: Some(json!(d.0)),
        }),
    }
}

async fn list_tokens(caller: Caller, State(s): State<Arc<AppState>>) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Admin)?;
    Ok(Json(json!({ "tokens": s.engine.store.list_tokens().await? })))
}

async fn whoami(caller: Caller) -> Json<serde_json::Value> {
    Json(json!({ "name": caller.0.name, "role": caller.0.role }))
}

async fn openapi(caller: Caller) -> Result<Response, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response())
}

async fn ready(State(s): State<Arc<AppState>>) -> Response {
    match s.engine.store.probe_writable().await {
        Ok(()) => {
            Json(json!({"status": "ready", "checks": s.engine.config().checks.len(), "config_loaded_at": s.engine.config.loaded_at()}))
                .into_response()
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "not_ready", "reason": format!("store is not writable: {e}")})))
            .into_response(),
    }
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], s.engine.metrics.render()).into_response()
}

async fn status_page(State(s): State<Arc<AppState>>) -> Response {
    public_status_of(s.as_ref(), false).await
}

async fn status_json(State(s): State<Arc<AppState>>) -> Response {
    public_status_of(s.as_ref(), true).await
}

async fn public_status_of(s: &AppState, as_json: bool) -> Response {
    if !s.status_page {
        return ApiError::new(Code::NotFound, "the status page is disabled on this server").into_response();
    }
    let config = s.engine.config();
    let checks = s.engine.checks.with_states(|states| incidents::service_checks(&config, states));
    public_status(&config, &checks, &s.engine.store, &s.uptime, as_json).await
}

/// The public status page, or its JSON twin, from a configuration, each service's
/// checks and the store: the leader counts its live states, a follower the stored
/// ones, so the page stays up while leadership moves.
pub(super) async fn public_status(
    config: &Arc<Config>,
    checks: &HashMap<String, incidents::ServiceChecks>,
    store: &Arc<dyn Store>,
    uptime: &Arc<uptime::UptimeCache>,
    as_json: bool,
) -> Response {
    let services = match incidents::service_statuses(config, checks, store.as_ref()).await {
        Ok(v) => v,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let uptimes = uptime.get(config, store).await;
    let incidents = match incidents::public_incidents(store.as_ref()).await {
        Ok(v) => v,
        Err(e) if as_json => return ApiError::from(e).into_response(),
        // The page still shows services when the store cannot answer for incidents.
        Err(e) => {
            tracing::warn!(error = %e, "status page: cannot read incidents");
            Vec::new()
        }
    };
    if as_json {
        return Json(incidents::public_status_json(services, &uptimes, incidents)).into_response();
    }
    Html(status_page::render(&services, &uptimes, &incidents, crate::clock::now())).into_response()
}
