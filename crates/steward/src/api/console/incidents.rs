//! Incidents: the list with filters, and one incident with its live timeline, its
//! alerts, action items and the actions a responder takes.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::{Value, context};
use serde::Deserialize;

use super::session::Signed;
use super::view::{PageError, Params, Posted, page, render_fragment};
use crate::api::AppState;
use crate::api::error::ApiError;
use crate::api::incidents::IncidentRecord;
use crate::auth::Role;
use crate::incidents::manager::{self, IncidentUpdate};
use crate::incidents::{Priority, Status, full_timeline};
use crate::store::IncidentQuery;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    status: Option<String>,
    service: Option<String>,
}

pub(super) async fn list(
    State(s): State<Arc<AppState>>,
    Extension(who): Extension<Signed>,
    Params(q): Params<ListQuery>,
) -> Result<Response, PageError> {
    let status = q.status.clone().filter(|v| !v.is_empty()).unwrap_or_else(|| "open".into());
    let mut query = IncidentQuery { service: q.service.clone().filter(|v| !v.is_empty()), limit: 200, ..Default::default() };
    match status.as_str() {
        "open" => query.open = true,
        "all" => {}
        other => {
            query.status = Some(
                Status::parse(other)
                    .ok_or_else(|| PageError::new(StatusCode::BAD_REQUEST, format!("`{other}` is not an incident status")))?,
            )
        }
    }
    let incidents = s.engine.store.incidents(&query).await?;
    let config = s.engine.config();
    let services: Vec<&str> = config.services.iter().map(|s| s.name.as_str()).collect();
    let ctx = context! {
        incidents => Value::from_serialize(&incidents),
        status,
        service => q.service.unwrap_or_default(),
        services,
        statuses => ["open", "all", "triggered", "acknowledged", "mitigated", "resolved", "closed"],
    };
    page(&who, "incidents", "incidents.html", ctx)
}

async fn record(s: &AppState, id: i64) -> Result<IncidentRecord, PageError> {
    IncidentRecord::load(&s.engine, id).await?.ok_or_else(|| PageError::not_found("incident", id))
}

fn postmortem_of(s: &AppState, r: &IncidentRecord) -> Result<String, PageError> {
    r.postmortem(&s.engine.config())
        .map_err(|e| PageError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("the postmortem template failed: {e}")))
}

pub(super) async fn show(
    State(s): State<Arc<AppState>>,
    Extension(who): Extension<Signed>,
    Path(id): Path<i64>,
) -> Result<Response, PageError> {
    let r = record(&s, id).await?;
    let config = s.engine.config();
    let ctx = context! {
        incident => Value::from_serialize(&r.incident),
        alerts => Value::from_serialize(&r.alerts),
        items => Value::from_serialize(&r.items),
        timeline => Value::from_serialize(&r.timeline),
        roles => crate::incidents::ROLES,
        people => config.incidents.people.iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
        priorities => Priority::ALL.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
        open => !matches!(r.incident.status, Status::Resolved | Status::Closed),
        postmortem => postmortem_of(&s, &r)?,
    };
    page(&who, "incidents", "incident.html", ctx)
}

/// The timeline as an HTML fragment over SSE, sent again whenever it grows: the
/// incident page swaps it in. Checked every two seconds while the tab is open
/// (`console.js` closes the stream while the tab is hidden).
pub(super) async fn timeline_fragment(
    State(s): State<Arc<AppState>>,
    Path(id): Path<i64>,
) -> Result<Sse<impl futures::Stream<Item = Result<Event, Infallible>>>, PageError> {
    if s.engine.store.incident(id).await?.is_none() {
        return Err(PageError::not_found("incident", id));
    }
    let stream = futures::stream::unfold((s, 0usize, true), move |(s, seen, first)| async move {
        if !first {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        loop {
            let store = &s.engine.store;
            let timeline = full_timeline(store.timeline(id).await.ok()?, &store.incident_notifications(id).await.ok()?);
            let len = timeline.len();
            if len != seen {
                let html = render_fragment("timeline.html", context! { timeline => Value::from_serialize(&timeline) }).ok()?;
                return Some((Ok(Event::default().event("timeline").data(html)), (s, len, false)));
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// Every field any incident form sends; each action takes the ones it needs.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct IncidentForm {
    note: Option<String>,
    text: Option<String>,
    public: Option<String>,
    priority: Option<String>,
    reason: Option<String>,
    role: Option<String>,
    person: Option<String>,
    owner: Option<String>,
    item: Option<i64>,
}

fn required(field: Option<String>, name: &str) -> Result<String, PageError> {
    field.filter(|v| !v.trim().is_empty()).ok_or_else(|| PageError::new(StatusCode::BAD_REQUEST, format!("`{name}` is required")))
}

/// `POST /console/incidents/{id}/{action}`: the same actions as the API, by the signed-in
/// person, then back to the incident.
pub(super) async fn act(
    State(s): State<Arc<AppState>>,
    Extension(who): Extension<Signed>,
    Path((id, action)): Path<(i64, String)>,
    Posted(f): Posted<IncidentForm>,
) -> Result<Response, PageError> {
    who.require(Role::Operator)?;
    let note = f.note.filter(|n| !n.trim().is_empty());
    let update = match action.as_str() {
        "acknowledge" => IncidentUpdate::Acknowledge { note },
        "mitigate" => IncidentUpdate::Mitigate { note },
        "resolve" => IncidentUpdate::Resolve { note },
        "close" => IncidentUpdate::Close { note },
        "escalate" => IncidentUpdate::EscalateNow,
        "priority" => {
            let text = required(f.priority, "priority")?;
            let to =
                Priority::parse(&text).ok_or_else(|| PageError::new(StatusCode::BAD_REQUEST, format!("`{text}` is not a priority")))?;
            IncidentUpdate::Priority { to, reason: required(f.reason, "reason")? }
        }
        "roles" => IncidentUpdate::AssignRole { role: required(f.role, "role")?, person: required(f.person, "person")? },
        "action-items" => IncidentUpdate::AddActionItem { text: required(f.text, "text")?, owner: f.owner.filter(|o| !o.is_empty()) },
        "action-item-done" => {
            IncidentUpdate::ActionItemDone { item: f.item.ok_or_else(|| PageError::new(StatusCode::BAD_REQUEST, "`item` is required"))? }
        }
        other => return Err(PageError::new(StatusCode::NOT_FOUND, format!("no incident action `{other}`"))),
    };
    manager::act(&s.engine.incidents, id, &who.token.name, update).await.map_err(ApiError::from)?;
    Ok(Redirect::to(&format!("/console/incidents/{id}")).into_response())
}

pub(super) async fn note(
    State(s): State<Arc<AppState>>,
    Extension(who): Extension<Signed>,
    Path(id): Path<i64>,
    Posted(f): Posted<IncidentForm>,
) -> Result<Response, PageError> {
    who.require(Role::Operator)?;
    let update = IncidentUpdate::Note { text: required(f.text, "text")?, public: f.public.is_some_and(|p| p == "on" || p == "true") };
    manager::act(&s.engine.incidents, id, &who.token.name, update).await.map_err(ApiError::from)?;
    Ok(Redirect::to(&format!("/console/incidents/{id}#timeline")).into_response())
}

/// The postmortem draft as Markdown, downloaded (the page shows it too).
pub(super) async fn postmortem(State(s): State<Arc<AppState>>, Path(id): Path<i64>) -> Result<Response, PageError> {
    let text = postmortem_of(&s, &record(&s, id).await?)?;
    let disposition = format!("attachment; filename=\"incident-{id}-postmortem.md\"");
    Ok(([(header::CONTENT_TYPE, "text/markdown; charset=utf-8".to_string()), (header::CONTENT_DISPOSITION, disposition)], text)
        .into_response())
}
