//! `/api/v1/incidents`, `/api/v1/action-items`, `/api/v1/oncall` and the public
//! `/status.json`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::Caller;
use super::error::{ApiError, Code};
use super::guard::body;
use super::{AppState, parse_time};
use crate::auth::Role;
use crate::checks::state::{CheckState, Health};
use crate::config::Config;
use crate::config::duration::parse_duration;
use crate::engine::Engine;
use crate::incidents::ack_link;
use crate::incidents::manager::{self, ActionError, IncidentUpdate};
use crate::incidents::oncall::{self, Override};
use crate::incidents::stats::{self, By};
use crate::incidents::{Incident, Priority, Status, full_timeline, postmortem};
use crate::store::{IncidentQuery, IncidentStore};

impl From<ActionError> for ApiError {
    fn from(e: ActionError) -> ApiError {
        match e {
            ActionError::NotFound(id) => ApiError::new(Code::NotFound, format!("no incident has id {id}")),
            ActionError::Refused(m) => ApiError::new(Code::Conflict, m),
            ActionError::BadInput(m) => ApiError::new(Code::BadRequest, m),
            ActionError::Store(e) if e.is_conflict() => ApiError::new(Code::Conflict, e.to_string()),
            ActionError::Store(e) => e.into(),
        }
    }
}

#[derive(Debug, Deserialize, Default)]
pub struct IncidentListQuery {
    /// `open` (default), `all`, or one status.
    status: Option<String>,
    service: Option<String>,
    since: Option<String>,
    limit: Option<u32>,
}

fn query(q: &IncidentListQuery) -> Result<IncidentQuery, ApiError> {
    let mut out = IncidentQuery {
        service: q.service.clone(),
        since: parse_time("since", q.since.as_deref())?,
        limit: q.limit.unwrap_or(100).min(10_000),
        ..Default::default()
    };
    match q.status.as_deref().unwrap_or("open") {
        "open" => out.open = true,
        "all" => {}
        other => {
            out.status = Some(Status::parse(other).ok_or_else(|| {
                ApiError::new(
                    Code::BadRequest,
                    format!("`status` must be open, all, triggered, acknowledged, mitigated, resolved or closed, got `{other}`"),
                )
            })?)
        }
    }
    Ok(out)
}

pub async fn list(
    caller: Caller,
    State(s): State<Arc<AppState>>,
    Query(q): Query<IncidentListQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let incidents = s.engine.store.incidents(&query(&q)?).await?;
    Ok(Json(json!({ "incidents": incidents })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Declare {
    title: String,
    priority: Option<String>,
    #[serde(default)]
    services: Vec<String>,
    escalation: Option<String>,
}

pub async fn declare(
    caller: Caller,
    State(s): State<Arc<AppState>>,
    bytes: Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    caller.require(Role::Operator)?;
    let req: Declare =
        body(&bytes, r#"{"title": "Checkout is failing", "priority": "P1", "services": ["api"], "escalation": "platform"}"#)?;
    let priority = priority(req.priority.as_deref().unwrap_or("P3"))?;
    let incident = manager::declare(&s.engine.incidents, &caller.0.name, &req.title, priority, req.services, req.escalation).await?;
    Ok((StatusCode::CREATED, Json(json!({ "incident": incident }))))
}

fn priority(text: &str) -> Result<Priority, ApiError> {
    Priority::parse(text).ok_or_else(|| ApiError::new(Code::BadRequest, format!("`{text}` is not a priority; use P0 … P4")))
}

/// One incident with what its JSON, its console page and its postmortem show, read once.
pub(super) struct IncidentRecord {
    pub incident: Incident,
    /// With the notifications sent about it merged in.
    pub timeline: Vec<crate::incidents::TimelineEntry>,
    pub alerts: Vec<crate::incidents::IncidentAlert>,
    pub items: Vec<crate::incidents::ActionItem>,
}

impl IncidentRecord {
    /// `None` when no incident has that id.
    pub(super) async fn load(engine: &Engine, id: i64) -> Result<Option<IncidentRecord>, crate::store::StoreError> {
        let store = &engine.store;
        let Some(incident) = store.incident(id).await? else { return Ok(None) };
        let timeline = full_timeline(store.timeline(id).await?, &store.incident_notifications(id).await?);
        let alerts = store.incident_alerts(Some(id)).await?;
        let items = store.action_items(Some(id), None).await?;
        Ok(Some(IncidentRecord { incident, timeline, alerts, items }))
    }

    /// The postmortem draft as Markdown, from the configured template or the built-in
    /// one; the error is the template's.
    pub(super) fn postmortem(&self, config: &Config) -> Result<String, String> {
        let template = config.incidents.postmortem_template.as_ref().map_or(postmortem::DEFAULT_TEMPLATE, |(_, t)| t.as_str());
        postmortem::render(template, &self.incident, &self.alerts, &self.timeline, &self.items, crate::clock::now())
    }
}

async fn record(engine: &Engine, id: i64) -> Result<IncidentRecord, ApiError> {
    IncidentRecord::load(engine, id).await?.ok_or_else(|| ApiError::new(Code::NotFound, format!("no incident has id {id}")))
}

pub async fn show(caller: Caller, State(s): State<Arc<AppState>>, Path(id): Path<i64>) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let IncidentRecord { incident, timeline, alerts, items } = record(&s.engine, id).await?;
    let times = json!({
        "time_to_acknowledge_seconds": incident.time_to_acknowledge().map(|d| d.num_seconds()),
        "time_to_mitigate_seconds": incident.time_to_mitigate().map(|d| d.num_seconds()),
        "time_to_resolve_seconds": incident.time_to_resolve().map(|d| d.num_seconds()),
    });
    Ok(Json(json!({ "incident": incident, "times": times, "alerts": alerts, "timeline": timeline, "action_items": items })))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NoteBody {
    note: Option<String>,
}

/// `POST /incidents/{id}/{acknowledge|mitigate|resolve|close}`.
pub async fn transition(
    caller: Caller,
    State(s): State<Arc<AppState>>,
    Path((id, verb)): Path<(i64, String)>,
    bytes: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let incident = act_on(&s, &caller, id, &bytes, r#"{"note": "optional text"}"#, |NoteBody { note }| match verb.as_str() {
        "acknowledge" | "ack" => Ok(IncidentUpdate::Acknowledge { note }),
        "mitigate" => Ok(IncidentUpdate::Mitigate { note }),
        "resolve" => Ok(IncidentUpdate::Resolve { note }),
        "close" => Ok(IncidentUpdate::Close { note }),
        "escalate" => Ok(IncidentUpdate::EscalateNow),
        other => Err(ApiError::new(
            Code::NotFound,
            format!("no incident action `{other}`; use acknowledge, mitigate, resolve, close or escalate"),
        )),
    })
    .await?;
    Ok(Json(json!({ "incident": incident })))
}

/// Reads a JSON body, turns it into an action and applies it as the caller.
async fn act_on<T: DeserializeOwned>(
    s: &AppState,
    caller: &Caller,
    id: i64,
    bytes: &Bytes,
    example: &str,
    action: impl FnOnce(T) -> Result<IncidentUpdate, ApiError>,
) -> Result<Incident, ApiError> {
    caller.require(Role::Operator)?;
    let action = action(body(bytes, example)?)?;
    Ok(manager::act(&s.engine.incidents, id, &caller.0.name, action).await?)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Note {
    text: String,
    #[serde(default)]
    public: bool,
}

pub async fn add_note(
    caller: Caller,
    State(s): State<Arc<AppState>>,
    Path(id): Path<i64>,
    bytes: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let example = r#"{"text": "what happened", "public": false}"#;
    let incident = act_on(&s, &caller, id, &bytes, example, |n: Note| Ok(IncidentUpdate::Note { text: n.text, public: n.public })).await?;
    Ok(Json(json!({ "incident": incident })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetPriority {
    priority: String,
    reason: String,
}

pub async fn set_priority(
    caller: Caller,
    State(s): State<Arc<AppState>>,
    Path(id): Path<i64>,
    bytes: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let example = r#"{"priority": "P1", "reason": "checkout affected"}"#;
    let incident = act_on(&s, &caller, id, &bytes, example, |p: SetPriority| {
        Ok(IncidentUpdate::Priority { to: priority(&p.priority)?, reason: p.reason })
    })
    .await?;
    Ok(Json(json!({ "incident": incident })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AssignRole {
    role: String,
    person: String,
}

pub async fn assign_role(
    caller: Caller,
    State(s): State<Arc<AppState>>,
    Path(id): Path<i64>,
    bytes: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let example = r#"{"role": "commander", "person": "alice"}"#;
    let incident =
        act_on(&s, &caller, id, &bytes, example, |r: AssignRole| Ok(IncidentUpdate::AssignRole { role: r.role, person: r.person })).await?;
    Ok(Json(json!({ "incident": incident })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewItem {
    text: String,
    owner: Option<String>,
}

pub async fn add_action_item(
    caller: Caller,
    State(s): State<Arc<AppState>>,
    Path(id): Path<i64>,
    bytes: Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let example = r#"{"text": "Add a memory alert", "owner": "bob"}"#;
    act_on(&s, &caller, id, &bytes, example, |i: NewItem| Ok(IncidentUpdate::AddActionItem { text: i.text, owner: i.owner })).await?;
    let items = s.engine.store.action_items(Some(id), None).await?;
    Ok((StatusCode::CREATED, Json(json!({ "action_item": items.last() }))))
}

pub async fn complete_action_item(
    caller: Caller,
    State(s): State<Arc<AppState>>,
    Path((id, item)): Path<(i64, i64)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Operator)?;
    manager::act(&s.engine.incidents, id, &caller.0.name, IncidentUpdate::ActionItemDone { item }).await?;
    let items = s.engine.store.action_items(Some(id), None).await?;
    Ok(Json(json!({ "action_item": items.into_iter().find(|a| a.id == item) })))
}

#[derive(Debug, Deserialize, Default)]
pub struct ItemsQuery {
    state: Option<String>,
}

pub async fn list_action_items(
    caller: Caller,
    State(s): State<Arc<AppState>>,
    Query(q): Query<ItemsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let state = match q.state.as_deref() {
        None | Some("all") => None,
        Some(s @ ("open" | "done")) => Some(s),
        Some(other) => return Err(ApiError::new(Code::BadRequest, format!("`state` must be open, done or all, got `{other}`"))),
    };
    let items = s.engine.store.action_items(None, state).await?;
    Ok(Json(json!({ "action_items": items })))
}

pub async fn postmortem(caller: Caller, State(s): State<Arc<AppState>>, Path(id): Path<i64>) -> Result<Response, ApiError> {
    caller.require(Role::Viewer)?;
    let text = record(&s.engine, id).await?.postmortem(&s.engine.config()).map_err(|e| ApiError::new(Code::InvalidConfig, e))?;
    Ok(([(header::CONTENT_TYPE, "text/markdown; charset=utf-8")], text).into_response())
}

#[derive(Debug, Deserialize, Default)]
pub struct StatsQuery {
    by: Option<String>,
    /// A duration back from now (`30d`) or an RFC 3339 time.
    since: Option<String>,
}

pub async fn stats(
    caller: Caller,
    State(s): State<Arc<AppState>>,
    Query(q): Query<StatsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let by_text = q.by.as_deref().unwrap_or("all");
    let by = By::parse(by_text)
        .ok_or_else(|| ApiError::new(Code::BadRequest, format!("`by` must be service, priority, week, month or all, got `{by_text}`")))?;
    let since = match q.since.as_deref() {
        None => crate::clock::now() - Duration::days(30),
        // A duration back from now, or a time; a text that is neither says both ways.
        Some(text) => match parse_duration(text) {
            Ok(d) => crate::bounds::sub(crate::clock::now(), d),
            Err(duration_error) if text.starts_with(|c: char| c.is_ascii_digit()) && !text.contains('-') => {
                return Err(ApiError::new(Code::BadRequest, format!("`since`: {duration_error}")));
            }
            Err(_) => parse_time("since", Some(text))?.unwrap_or_default(),
        },
    };
    if since > crate::clock::now() {
        return Err(ApiError::new(Code::BadRequest, "`since` is in the future; give a time in the past or a duration such as 30d"));
    }
    let incidents = s.engine.store.incidents(&IncidentQuery { since: Some(since), ..Default::default() }).await?;
    Ok(Json(json!({ "since": since, "by": by_text, "rows": stats::compute(&incidents, by) })))
}

#[derive(Debug, Deserialize, Default)]
pub struct OnCallQuery {
    at: Option<String>,
    schedule: Option<String>,
}

pub async fn oncall(
    caller: Caller,
    State(s): State<Arc<AppState>>,
    Query(q): Query<OnCallQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let config = s.engine.config();
    let at = match q.at.as_deref() {
        None | Some("now") => crate::clock::now(),
        Some(text) => {
            oncall::parse_instant(text, &chrono_tz::Tz::UTC).map_err(|e| ApiError::new(Code::BadRequest, format!("`at`: {e}")))?
        }
    };
    if let Some(name) = &q.schedule
        && config.incidents.schedule(name).is_none()
    {
        return Err(ApiError::not_found("schedule", name));
    }
    let overrides = s.engine.store.overrides(at - Duration::days(1)).await?;
    let schedules: Vec<serde_json::Value> = config
        .incidents
        .schedules
        .iter()
        .filter(|sc| q.schedule.as_ref().is_none_or(|n| *n == sc.name))
        .map(|sc| {
            let extra: Vec<Override> = overrides.iter().filter(|(n, _)| *n == sc.name).map(|(_, o)| o.clone()).collect();
            json!({
                "schedule": sc.name,
                "time_zone": sc.location.name(),
                "on_call": sc.on_call_at(at, &extra, &config.time_intervals),
                "next_shifts": sc.shifts(at, at + Duration::days(14), &config.time_intervals, 6).into_iter().skip(1).collect::<Vec<_>>(),
                "overrides": sc.overrides.iter().chain(&extra).filter(|o| o.until > at).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(json!({ "at": at, "schedules": schedules })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOverride {
    person: String,
    from: String,
    until: String,
}

pub async fn add_override(
    caller: Caller,
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    caller.require(Role::Operator)?;
    let config = s.engine.config();
    let schedule = config.incidents.schedule(&name).ok_or_else(|| ApiError::not_found("schedule", &name))?;
    let req: NewOverride = body(&bytes, r#"{"person": "dave", "from": "2026-12-24 09:00", "until": "2026-12-27 09:00"}"#)?;
    if config.incidents.person(&req.person).is_none() {
        return Err(ApiError::new(
            Code::BadRequest,
            format!("`{}` is not under incidents.people, so steward could not reach them", req.person),
        ));
    }
    let parse = |field: &str, text: &str| {
        oncall::parse_instant(text, &schedule.location).map_err(|e| ApiError::new(Code::BadRequest, format!("`{field}`: {e}")))
    };
    let o = Override { person: req.person, from: parse("from", &req.from)?, until: parse("until", &req.until)? };
    if o.until <= o.from {
        return Err(ApiError::new(Code::BadRequest, "`until` must be after `from`"));
    }
    s.engine.store.add_override(&name, &o, &caller.0.name).await?;
    tracing::info!(schedule = %name, person = %o.person, from = %o.from, until = %o.until, by = %caller.0.name, "on-call override added");
    Ok((StatusCode::CREATED, Json(json!({ "schedule": name, "override": o }))))
}

/// An incident as the public may see it: only what someone marked public.
#[derive(Debug, Serialize)]
pub struct PublicIncident {
    pub id: i64,
    pub title: String,
    /// `investigating` (triggered, acknowledged), `mitigated`, or `resolved`.
    pub status: &'static str,
    pub services: Vec<String>,
    pub started_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub updates: Vec<PublicUpdate>,
}

#[derive(Debug, Serialize)]
pub struct PublicUpdate {
    pub at: DateTime<Utc>,
    pub text: String,
}

/// Open incidents, and those resolved in the last 7 days, that have at least one
/// public update: only incidents someone chose to tell users about are shown.
pub async fn public_incidents(store: &dyn IncidentStore) -> Result<Vec<PublicIncident>, crate::store::StoreError> {
    let open = store.incidents(&IncidentQuery { open: true, ..Default::default() }).await?;
    let recent = store.incidents(&IncidentQuery { since: Some(crate::clock::now() - Duration::days(7)), ..Default::default() }).await?;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for i in open.iter().chain(&recent) {
        if !seen.insert(i.id) {
            continue;
        }
        let updates: Vec<PublicUpdate> = store
            .timeline(i.id)
            .await?
            .into_iter()
            .filter(|e| e.public)
            .map(|e| PublicUpdate { at: e.at, text: public_text(&e.text) })
            .collect();
        if updates.is_empty() {
            continue;
        }
        out.push(PublicIncident {
            id: i.id,
            title: public_text(&i.title),
            status: match i.status {
                Status::Triggered | Status::Acknowledged => "investigating",
                Status::Mitigated => "mitigated",
                Status::Resolved | Status::Closed => "resolved",
            },
            services: i.services.clone(),
            started_at: i.opened_at,
            resolved_at: i.resolved_at,
            updates,
        });
    }
    Ok(out)
}

/// A service as the public sees it.
#[derive(Debug, Serialize)]
pub struct PublicService {
    pub name: String,
    pub tier: u8,
    /// `major_outage`, `degraded`, `operational` or `unknown`.
    pub status: &'static str,
}

/// How a service's checks stand: counted in one pass over the checks, under the
/// live states' lock on the leader (copying 20,000 states for a page that shows 100
/// services is most of its cost).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceChecks {
    pub checks: usize,
    pub healthy: usize,
    pub unhealthy: usize,
}

/// Each configured service's [`ServiceChecks`] from check states (a check with no
/// state yet counts as neither healthy nor unhealthy).
pub fn service_checks(config: &Config, states: &HashMap<String, CheckState>) -> HashMap<String, ServiceChecks> {
    let mut out: HashMap<String, ServiceChecks> = config.services.iter().map(|s| (s.name.clone(), ServiceChecks::default())).collect();
    for check in &config.checks {
        let Some(counts) = check.service.as_deref().and_then(|s| out.get_mut(s)) else { continue };
        counts.checks += 1;
        match states.get(&check.name).map(|s| s.health) {
            Some(Health::Healthy) => counts.healthy += 1,
            Some(Health::Unhealthy) => counts.unhealthy += 1,
            _ => {}
        }
    }
    out
}

/// Each service's public status: `major_outage` with an open P0/P1 incident,
/// `degraded` with another open incident or a failing check, `operational` when all
/// its checks pass, `unknown` before they have run. In tier order. `checks` come from
/// the live states on the replica running the checks, from the stored ones elsewhere.
pub async fn service_statuses(
    config: &Config,
    checks: &HashMap<String, ServiceChecks>,
    store: &dyn IncidentStore,
) -> Result<Vec<PublicService>, crate::store::StoreError> {
    let open = store.incidents(&IncidentQuery { open: true, ..Default::default() }).await?;
    let mut out: Vec<PublicService> = config
        .services
        .iter()
        .map(|svc| {
            let counts = checks.get(&svc.name).copied().unwrap_or_default();
            let incident = open.iter().filter(|i| i.services.contains(&svc.name)).min_by_key(|i| i.priority);
            let status = match (incident, counts.unhealthy > 0) {
                (Some(i), _) if i.priority <= Priority::P1 => "major_outage",
                (Some(_), _) | (None, true) => "degraded",
                (None, false) if counts.checks > 0 && counts.healthy == counts.checks => "operational",
                (None, false) => "unknown",
            };
            PublicService { name: svc.name.clone(), tier: svc.tier, status }
        })
        .collect();
    out.sort_by(|a, b| (a.tier, &a.name).cmp(&(b.tier, &b.name)));
    Ok(out)
}

/// The body of `/status.json`, serialized as it stands (no intermediate JSON tree:
/// it holds 90 days for each service).
#[derive(Serialize)]
pub(super) struct PublicStatus<'a> {
    updated_at: DateTime<Utc>,
    services: Vec<PublicServiceUptime<'a>>,
    incidents: Vec<PublicIncident>,
}

#[derive(Serialize)]
struct PublicServiceUptime<'a> {
    #[serde(flatten)]
    service: PublicService,
    uptime_90d: Option<&'a super::uptime::ServiceUptime>,
    /// Each SLO: what was promised and what was delivered over its window.
    slos: &'a [super::uptime::SloFigure],
}

pub(super) fn public_status_json<'a>(
    services: Vec<PublicService>,
    uptimes: &'a HashMap<String, super::uptime::ServiceUptime>,
    incidents: Vec<PublicIncident>,
) -> PublicStatus<'a> {
    let services = services
        .into_iter()
        .map(|service| {
            let uptime_90d = uptimes.get(&service.name);
            let slos = uptime_90d.map_or(&[][..], |u| &u.slos[..]);
            PublicServiceUptime { service, uptime_90d, slos }
        })
        .collect();
    PublicStatus { updated_at: crate::clock::now(), services, incidents }
}

/// Text for the public: control characters dropped, line breaks as spaces.
fn public_text(s: &str) -> String {
    s.chars().filter_map(|c| if matches!(c, '\n' | '\r' | '\t') { Some(' ') } else { (!c.is_control()).then_some(c) }).collect()
}

fn link_page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex"><title>{t}</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;margin:0;padding:24px;background:#f6f7f9;color:#1d2330}} main{{max-width:560px;margin:auto;background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:20px}} button{{font-size:18px;padding:12px 24px;border:0;border-radius:6px;background:#c0392b;color:#fff}} .muted{{color:#6b7385}}</style>
</head><body><main><h1>{t}</h1>{body}</main></body></html>"#,
        t = super::status_page::esc(title),
    );
    (status, Html(html)).into_response()
}

/// Verifies an acknowledge link; on failure, the page that says why.
async fn grant(engine: &Engine, token: &str) -> Result<(ack_link::Grant, Incident), Response> {
    let key = engine.store.server_key(ack_link::KEY_NAME).await.map_err(|e| ApiError::from(e).into_response())?;
    let g = match ack_link::verify(&key, token, crate::clock::now()) {
        Ok(g) => g,
        Err(ack_link::LinkError::Expired) => {
            return Err(link_page(
                StatusCode::GONE,
                "This link has expired",
                "<p>Acknowledge links work for 24 hours. Use <code>steward incident ack ID</code> or the API.</p>",
            ));
        }
        Err(ack_link::LinkError::Invalid) => {
            return Err(link_page(
                StatusCode::NOT_FOUND,
                "This link is not valid",
                "<p>It was not issued by this server, or it was changed.</p>",
            ));
        }
    };
    match engine.store.incident(g.incident).await {
        Ok(Some(i)) => Ok((g, i)),
        Ok(None) => Err(link_page(StatusCode::NOT_FOUND, "No such incident", "")),
        Err(e) => Err(ApiError::from(e).into_response()),
    }
}

fn describe(i: &Incident) -> String {
    use super::status_page::esc;
    format!(
        "<p><strong>#{} {}</strong> — {} · {}</p><p class=\"muted\">opened {}{}</p>",
        i.id,
        esc(&i.title),
        i.priority.as_str(),
        i.status.as_str(),
        i.opened_at.format("%Y-%m-%d %H:%M:%S UTC"),
        if i.services.is_empty() { String::new() } else { format!(" · {}", esc(&i.services.join(", "))) }
    )
}

/// `GET /ack/{token}`: shows the incident and a button. Never acknowledges by itself:
/// link previews and mail scanners fetch URLs.
pub async fn ack_link_page(State(s): State<Arc<AppState>>, Path(token): Path<String>) -> Response {
    let (g, i) = match grant(&s.engine, &token).await {
        Ok(v) => v,
        Err(page) => return page,
    };
    if i.status != Status::Triggered {
        return link_page(StatusCode::OK, &format!("Incident #{} is {}", i.id, i.status.as_str()), &describe(&i));
    }
    let body = format!(
        "{}<form method=\"post\"><button type=\"submit\">Acknowledge as {}</button></form><p class=\"muted\">This stops the escalation and is recorded in the incident's timeline.</p>",
        describe(&i),
        super::status_page::esc(&g.who)
    );
    link_page(StatusCode::OK, &format!("Acknowledge incident #{}?", i.id), &body)
}

/// `POST /ack/{token}`: acknowledges as the person the page was sent to.
pub async fn ack_link_submit(State(s): State<Arc<AppState>>, Path(token): Path<String>) -> Response {
    let (g, i) = match grant(&s.engine, &token).await {
        Ok(v) => v,
        Err(page) => return page,
    };
    let actor = format!("{} (page link)", g.who);
    match manager::act(&s.engine.incidents, i.id, &actor, IncidentUpdate::Acknowledge { note: None }).await {
        Ok(i) => {
            link_page(StatusCode::OK, &format!("Incident #{} acknowledged", i.id), &format!("{}<p>Escalation stopped.</p>", describe(&i)))
        }
        Err(ActionError::Refused(m)) => link_page(
            StatusCode::CONFLICT,
            &format!("Incident #{} was not acknowledged", i.id),
            &format!("{}<p>{}</p>", describe(&i), super::status_page::esc(&m)),
        ),
        Err(e) => ApiError::from(e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_services_checks_are_counted_by_health_and_unrun_checks_are_neither() {
        let config = crate::config::load_str(
            "t.yaml",
            "services:\n  - {name: api, tier: 1}\n  - {name: idle, tier: 2}\nchecks:\n  - {name: a1, service: api, tcp: {address: '127.0.0.1:1'}}\n  - {name: a2, service: api, tcp: {address: '127.0.0.1:1'}}\n  - {name: a3, service: api, tcp: {address: '127.0.0.1:1'}}\n  - {name: loose, tcp: {address: '127.0.0.1:1'}}\n",
        )
        .unwrap();
        let now = crate::clock::now();
        let state = |check: &str, health| CheckState { health, ..CheckState::new(check, now) };
        let states: HashMap<String, CheckState> =
            [state("a1", Health::Healthy), state("a2", Health::Unhealthy), state("loose", Health::Unhealthy)]
                .into_iter()
                .map(|s| (s.check.clone(), s))
                .collect();
        let counted = service_checks(&config, &states);
        assert_eq!(counted.len(), 2, "one entry per configured service: {counted:?}");
        assert_eq!(counted["api"], ServiceChecks { checks: 3, healthy: 1, unhealthy: 1 }, "a3 has not run");
        assert_eq!(counted["idle"], ServiceChecks::default());
    }
}
