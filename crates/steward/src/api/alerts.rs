//! `/api/v1/alerts`, `/api/v1/notifications` and `/api/v1/silences`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::Caller;
use super::error::{ApiError, Code};
use super::{AppState, parse_time};
use crate::alerting::live::{MuteIndex, route_mutes};
use crate::alerting::{Alert, Matcher, Mute, Silence};
use crate::auth::Role;
use crate::config::Config;
use crate::engine::Engine;

/// An alert as the API shows it: its state and what, if anything, mutes it.
#[derive(Debug, Serialize)]
pub(super) struct AlertView {
    #[serde(flatten)]
    pub alert: Arc<Alert>,
    pub muted_by: Vec<Mute>,
}

/// One alert's view: what mutes it, from the snapshot's index.
pub(super) fn alert_view(engine: &Engine, alert: &Arc<Alert>, index: &MuteIndex, config: &Config, now: DateTime<Utc>) -> AlertView {
    let mut muted_by = engine.alerting.mutes_in(alert, index, config, now);
    muted_by.extend(route_mutes(alert, config, now));
    AlertView { muted_by, alert: alert.clone() }
}

/// The live alert with this fingerprint and what mutes it; `None` when it is not active.
pub(super) fn find_alert_view(engine: &Engine, fingerprint: &str) -> Option<AlertView> {
    let config = engine.config();
    let all = engine.alerting.alerts();
    let alert = all.iter().find(|a| a.fingerprint == fingerprint)?;
    let index = MuteIndex::of_live(&all, &config, &engine.checks);
    Some(alert_view(engine, alert, &index, &config, crate::clock::now()))
}

pub(super) fn alert_views(engine: &Engine) -> Vec<AlertView> {
    let config = engine.config();
    let states = engine.checks.states();
    let mut alerts = engine.alerting.alerts();
    alerts.sort_by(|a, b| (&a.rule, &a.fingerprint).cmp(&(&b.rule, &b.fingerprint)));
    let now = crate::clock::now();
    let index = MuteIndex::new(&alerts, &config, &states);
    alerts.iter().map(|a| alert_view(engine, a, &index, &config, now)).collect()
}

pub(super) async fn list_alerts(caller: Caller, State(s): State<Arc<AppState>>) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(Json(json!({ "alerts": alert_views(&s.engine) })))
}

pub(super) async fn get_alert(
    caller: Caller,
    State(s): State<Arc<AppState>>,
    Path(fp): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let view = find_alert_view(&s.engine, &fp);
    let events = s.engine.store.alert_events(Some(&fp), 200).await?;
    if view.is_none() && events.is_empty() {
        return Err(ApiError::new(Code::NotFound, format!("no alert with fingerprint `{fp}`")));
    }
    let notifications = s.engine.store.notifications(Some(&fp), 200).await?;
    Ok(Json(json!({ "alert": view, "events": events, "notifications": notifications })))
}

#[derive(Deserialize)]
pub(super) struct LimitQuery {
    limit: Option<u32>,
}

pub(super) async fn list_notifications(
    caller: Caller,
    State(s): State<Arc<AppState>>,
    Query(q): Query<LimitQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    Ok(Json(json!({ "notifications": s.engine.store.notifications(None, limit).await? })))
}

/// Alertmanager's webhook payload in: the alerts join steward's own for routing,
/// silences, inhibition and dependencies. Point an Alertmanager `webhook_configs` entry
/// here with an operator token as its bearer credentials.
pub(super) async fn ingest_alertmanager(
    caller: Caller,
    State(s): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Operator)?;
    let incoming = crate::alerting::ingest::parse(&body).map_err(|e| ApiError::new(Code::BadRequest, format!("invalid payload: {e}")))?;
    let outcome = crate::alerting::ingest::apply(&s.engine.alerting, incoming, crate::clock::now()).await?;
    s.engine.metrics.alerts_received.inc_by(outcome.received as u64);
    Ok(Json(json!(outcome)))
}

/// Every alert rule: what it tests, where it is defined, and how its last evaluation
/// went (PromQL rules: when, how long, how many series, or why it failed).
pub(super) async fn list_rules(caller: Caller, State(s): State<Arc<AppState>>) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let config = s.engine.config();
    let rules: Vec<serde_json::Value> = config
        .alerts
        .iter()
        .map(|r| {
            let (kind, condition) = match &r.when {
                crate::config::AlertCondition::Query { expr } => ("promql", expr.clone()),
                crate::config::AlertCondition::SloBurn { slo, .. } => ("slo", format!("slo {slo} burn rate")),
                crate::config::AlertCondition::Forecast(f) => {
                    let side = match f.crossing {
                        steward_model::forecast::Crossing::Above => "above",
                        steward_model::forecast::Crossing::Below => "below",
                    };
                    let series = match &f.source {
                        steward_model::config::forecast::ForecastSource::Promql(expr) => expr.clone(),
                        steward_model::config::forecast::ForecastSource::Check { check, value } => {
                            format!("check {check} {}", value.source)
                        }
                    };
                    let limit = match &f.limit {
                        steward_model::config::forecast::Limit::Value(v) => v.to_string(),
                        steward_model::config::forecast::Limit::Field(field) => field.source.clone(),
                    };
                    ("forecast", format!("{series} {side} {limit} within {}", crate::config::duration::format_duration(f.within)))
                }
                other => ("check", format!("check {}", other.check().unwrap_or_default())),
            };
            json!({
                "name": r.name,
                "kind": kind,
                "condition": condition,
                "for_ms": r.for_.as_millis() as u64,
                "severity": r.severity,
                "labels": r.labels,
                "defined_at": r.pos.to_string(),
                "health": s.engine.alerting.rule_health(&r.name),
            })
        })
        .collect();
    Ok(Json(json!({ "rules": rules })))
}

/// Configured maintenance windows: whether each is open now, until when, and when the
/// next occurrence starts.
pub(super) async fn list_maintenance_windows(caller: Caller, State(s): State<Arc<AppState>>) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let config = s.engine.config();
    let now = crate::clock::now();
    let windows: Vec<serde_json::Value> = config
        .maintenance_windows
        .iter()
        .map(|w| {
            let open = w.open_until(now, &config.time_intervals);
            json!({
                "name": w.name,
                "matchers": w.matchers,
                "comment": w.comment,
                "open": open.is_some(),
                "open_until": open.flatten(),
                "next_start": w.next_start(now),
            })
        })
        .collect();
    Ok(Json(json!({ "maintenance_windows": windows })))
}

#[derive(Serialize)]
pub(super) struct SilenceView<'a> {
    #[serde(flatten)]
    pub silence: &'a Silence,
    pub state: &'static str,
}

pub(super) async fn list_silences(caller: Caller, State(s): State<Arc<AppState>>) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let now = crate::clock::now();
    let silences = s.engine.alerting.silences();
    let views: Vec<SilenceView<'_>> = silences.iter().map(|silence| SilenceView { silence, state: silence.state(now) }).collect();
    Ok(Json(json!({ "silences": views })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewSilence {
    pub matchers: Vec<String>,
    pub starts_at: Option<String>,
    pub ends_at: Option<String>,
    /// Alternative to `ends_at`: how long from the start, e.g. `2h`.
    pub duration: Option<String>,
    pub comment: String,
}

pub(super) async fn create_silence(
    caller: Caller,
    State(s): State<Arc<AppState>>,
    body: Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    caller.require(Role::Operator)?;
    let req: NewSilence = super::guard::body(&body, r#"{"matchers": ["alertname=\"X\""], "duration": "2h", "comment": "why"}"#)?;
    let silence = validate_silence(req, &caller.0.name, crate::clock::now())?;
    s.engine.store.create_silence(&silence).await?;
    s.engine.alerting.reload_silences().await?;
    tracing::info!(id = %silence.id, by = %silence.created_by, matchers = ?silence.matchers.iter().map(|m| m.to_string()).collect::<Vec<_>>(), "silence created");
    Ok((StatusCode::CREATED, Json(json!({ "silence": silence }))))
}

pub(super) fn validate_silence(req: NewSilence, author: &str, now: DateTime<Utc>) -> Result<Silence, ApiError> {
    let bad = |m: String| ApiError::new(Code::BadRequest, m);
    if req.matchers.is_empty() {
        return Err(bad("a silence needs at least one matcher; an empty list would silence everything".into()));
    }
    let matchers =
        req.matchers.iter().map(|m| Matcher::parse(m).map_err(|e| bad(format!("matcher `{m}`: {e}")))).collect::<Result<Vec<_>, _>>()?;
    if matchers.iter().all(|m| m.matches(&Default::default())) {
        return Err(bad("these matchers match every alert (they all match empty labels); name at least one label value".into()));
    }
    if req.comment.trim().is_empty() {
        return Err(bad("say why in `comment`: the next person on call will read it".into()));
    }
    let starts_at = parse_time("starts_at", req.starts_at.as_deref())?.unwrap_or(now);
    let ends_at = match (parse_time("ends_at", req.ends_at.as_deref())?, req.duration.as_deref()) {
        (Some(_), Some(_)) => return Err(bad("give `ends_at` or `duration`, not both".into())),
        (Some(t), None) => t,
        (None, Some(d)) => {
            let d = crate::config::duration::parse_duration(d).map_err(|e| bad(format!("`duration`: {e}")))?;
            crate::bounds::add(starts_at, d).map_err(|e| bad(format!("`duration`: {e}")))?
        }
        (None, None) => return Err(bad("give `ends_at` or `duration`: silences always end".into())),
    };
    if ends_at <= starts_at || ends_at <= now {
        return Err(bad("the silence must end after it starts and in the future".into()));
    }
    Ok(Silence {
        id: new_id(),
        matchers,
        starts_at,
        ends_at,
        created_by: author.to_string(),
        comment: req.comment,
        created_at: now,
        expired_at: None,
    })
}

fn new_id() -> String {
    use rand::Rng;
    let bytes: [u8; 8] = rand::rng().random();
    hex::encode(bytes)
}

pub(super) async fn expire_silence(
    caller: Caller,
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Operator)?;
    if !s.engine.store.expire_silence(&id, crate::clock::now()).await? {
        return Err(ApiError::new(Code::NotFound, format!("no active or pending silence with id `{id}`")));
    }
    s.engine.alerting.reload_silences().await?;
    tracing::info!(id = %id, by = %caller.0.name, "silence expired");
    Ok(Json(json!({ "expired": id })))
}

/// Every SLO with its figures now: SLI and budget left over its window, burn per alert
/// window, time to exhaustion at the recent burn.
pub(super) async fn list_slos(caller: Caller, State(s): State<Arc<AppState>>) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let config = s.engine.config();
    let now = crate::clock::now();
    let mut out = Vec::with_capacity(config.slos.len());
    for slo in &config.slos {
        out.push(s.engine.checks.slo_tallies().status(s.engine.checks.store(), slo, now).await?);
    }
    Ok(Json(json!({ "slos": out })))
}

pub(super) async fn get_slo(
    caller: Caller,
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let config = s.engine.config();
    let slo = config.slos.iter().find(|x| x.name == name).ok_or_else(|| ApiError::not_found("SLO", &name))?;
    Ok(Json(json!({ "slo": s.engine.checks.slo_tallies().status(s.engine.checks.store(), slo, crate::clock::now()).await? })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(matchers: &[&str], duration: Option<&str>, comment: &str) -> NewSilence {
        NewSilence {
            matchers: matchers.iter().map(|s| s.to_string()).collect(),
            starts_at: None,
            ends_at: None,
            duration: duration.map(str::to_string),
            comment: comment.into(),
        }
    }

    #[test]
    fn silences_are_validated() {
        let now = crate::clock::now();
        let ok = validate_silence(req(&["alertname=ApiDown"], Some("2h"), "deploy"), "alice", now).unwrap();
        assert_eq!(ok.ends_at - ok.starts_at, chrono::Duration::hours(2));
        assert_eq!(ok.created_by, "alice");
        let msg = |r| validate_silence(r, "a", now).unwrap_err().message;
        assert!(msg(req(&[], Some("1h"), "x")).contains("at least one matcher"));
        assert!(msg(req(&["alertname=~\".*\""], Some("1h"), "x")).contains("match every alert"));
        assert!(msg(req(&["alertname=X"], None, "x")).contains("silences always end"));
        assert!(msg(req(&["alertname=X"], Some("1h"), " ")).contains("comment"));
        assert!(msg(req(&["alertname"], Some("1h"), "x")).contains("no operator"));
    }
}
