//! Alerts and silences: what fires, what waits, what is muted and why; a silence made
//! from an alert with its labels as matchers; silences expired early.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::{Value, context};
use serde::Deserialize;

use super::session::Signed;
use super::view::{PageError, Params, Posted, page};
use crate::alerting::AlertState;
use crate::alerting::live::{MuteIndex, route_mutes};
use crate::api::AppState;
use crate::api::alerts::{AlertView, NewSilence, SilenceView, alert_view, find_alert_view, validate_silence};
use crate::api::error::ApiError;
use crate::auth::Role;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct AlertsQuery {
    /// A fingerprint: open the silence form with that alert's labels as matchers.
    silence: Option<String>,
    /// Which list: `firing` (default), `pending` or `muted`.
    show: Option<String>,
    page: Option<usize>,
}

/// Alerts per page of a list.
const ALERTS_PER_PAGE: usize = 100;

pub(super) async fn page_of(
    State(s): State<Arc<AppState>>,
    Extension(who): Extension<Signed>,
    Params(q): Params<AlertsQuery>,
) -> Result<Response, PageError> {
    // Sorted into lists by whether anything mutes each alert (stopping at the first
    // reason); the reasons are spelled out only for the page shown.
    let config = s.engine.config();
    let mut all = s.engine.alerting.alerts();
    all.sort_by(|a, b| (&a.rule, &a.fingerprint).cmp(&(&b.rule, &b.fingerprint)));
    let now = crate::clock::now();
    let index = MuteIndex::of_live(&all, &config, &s.engine.checks);
    let (mut firing, mut pending, mut muted) = (Vec::new(), Vec::new(), Vec::new());
    for a in &all {
        if !matches!(a.state, AlertState::Firing | AlertState::Pending) {
            continue;
        }
        let is_muted = s.engine.alerting.is_muted(a, &index, &config, now) || !route_mutes(a, &config, now).is_empty();
        match a.state {
            _ if is_muted => muted.push(a),
            AlertState::Firing => firing.push(a),
            _ => pending.push(a),
        }
    }
    let silences = s.engine.alerting.silences();
    let silences: Vec<SilenceView<'_>> =
        silences.iter().map(|silence| SilenceView { silence, state: silence.state(now) }).filter(|v| v.state != "expired").collect();
    // The silence form, pre-filled from an alert's labels when asked.
    let prefill: Vec<String> = match &q.silence {
        Some(fp) => {
            let a = all.iter().find(|a| a.fingerprint == *fp).ok_or_else(|| PageError::not_found("alert", fp))?;
            a.labels.iter().map(|(k, val)| format!("{k}={}", serde_json::Value::String(val.clone()))).collect()
        }
        None => Vec::new(),
    };
    let show = q.show.clone().filter(|v| !v.is_empty()).unwrap_or_else(|| "firing".into());
    let list = match show.as_str() {
        "firing" => &firing,
        "pending" => &pending,
        "muted" => &muted,
        other => return Err(PageError::new(StatusCode::BAD_REQUEST, format!("`{other}` is not a list; use firing, pending or muted"))),
    };
    let pages = list.len().div_ceil(ALERTS_PER_PAGE).max(1);
    let page_no = q.page.unwrap_or(1).clamp(1, pages);
    let shown: Vec<AlertView> = list
        .iter()
        .skip((page_no - 1) * ALERTS_PER_PAGE)
        .take(ALERTS_PER_PAGE)
        .map(|a| alert_view(&s.engine, a, &index, &config, now))
        .collect();
    let ctx = context! {
        counts => context! { firing => firing.len(), pending => pending.len(), muted => muted.len() },
        show,
        alerts => Value::from_serialize(&shown),
        page_no,
        pages,
        silences => Value::from_serialize(&silences),
        prefill => prefill.join("\n"),
        silence_from => q.silence,
    };
    page(&who, "alerts", "alerts.html", ctx)
}

pub(super) async fn show(
    State(s): State<Arc<AppState>>,
    Extension(who): Extension<Signed>,
    Path(fp): Path<String>,
) -> Result<Response, PageError> {
    let view = find_alert_view(&s.engine, &fp);
    let events = s.engine.store.alert_events(Some(&fp), 200).await?;
    if view.is_none() && events.is_empty() {
        return Err(PageError::not_found("alert", &fp));
    }
    let notifications = s.engine.store.notifications(Some(&fp), 50).await?;
    let ctx = context! {
        fingerprint => fp,
        alert => Value::from_serialize(&view),
        events => Value::from_serialize(&events),
        notifications => Value::from_serialize(&notifications),
    };
    page(&who, "alerts", "alert.html", ctx)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SilenceForm {
    /// One matcher per line.
    matchers: String,
    duration: String,
    comment: String,
}

pub(super) async fn create_silence(
    State(s): State<Arc<AppState>>,
    Extension(who): Extension<Signed>,
    Posted(f): Posted<SilenceForm>,
) -> Result<Response, PageError> {
    who.require(Role::Operator)?;
    let req = NewSilence {
        matchers: f.matchers.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect(),
        starts_at: None,
        ends_at: None,
        duration: Some(f.duration.trim().to_string()),
        comment: f.comment,
    };
    let silence = validate_silence(req, &who.token.name, crate::clock::now())?;
    s.engine.store.create_silence(&silence).await?;
    s.engine.alerting.reload_silences().await.map_err(ApiError::from)?;
    tracing::info!(id = %silence.id, by = %silence.created_by, "silence created in the console");
    Ok(Redirect::to("/console/alerts").into_response())
}

pub(super) async fn expire_silence(
    State(s): State<Arc<AppState>>,
    Extension(who): Extension<Signed>,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    who.require(Role::Operator)?;
    if !s.engine.store.expire_silence(&id, crate::clock::now()).await? {
        return Err(PageError::new(StatusCode::NOT_FOUND, format!("no active or pending silence with id `{id}`")));
    }
    s.engine.alerting.reload_silences().await.map_err(ApiError::from)?;
    tracing::info!(id = %id, by = %who.token.name, "silence expired in the console");
    Ok(Redirect::to("/console/alerts").into_response())
}
