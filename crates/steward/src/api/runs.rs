//! `/api/v1/runbooks`, `/api/v1/runs` (with an SSE stream per run) and `/api/v1/audit`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, Code};
use super::guard::body;
use crate::auth::Role;
use crate::config::duration::format_duration;
use crate::config::runbooks::{ParamKind, Runbook};
use crate::engine::Engine;
use crate::runbooks::control::{self, ControlError, StartRequest};
use crate::runbooks::{AuditQuery, RunEvent, RunQuery, RunStatus};

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> ApiError {
        match e {
            ControlError::NotFound(m) => ApiError::new(Code::NotFound, m),
            ControlError::BadParams(list) => {
                let mut err = ApiError::new(Code::BadRequest, format!("invalid parameters: {}", list.join("; ")));
                err.details = Some(json!({"params": list}));
                err
            }
            ControlError::BadInput(m) => ApiError::new(Code::BadRequest, m),
            ControlError::Conflict(m) | ControlError::TriggerUsed(m) => ApiError::new(Code::Conflict, m),
            ControlError::Forbidden(m) => ApiError::new(Code::Forbidden, m),
            ControlError::Store(e) => e.into(),
        }
    }
}

/// A runbook as the API shows it: what it takes and what it does, in outline.
#[derive(Debug, Serialize)]
pub(super) struct RunbookView {
    pub name: String,
    pub description: Option<String>,
    pub owner: Option<String>,
    pub tags: Vec<String>,
    pub params: Vec<Value>,
    pub steps: Vec<Value>,
    pub on_failure: Vec<String>,
    pub lock: Option<String>,
    pub timeout: Option<String>,
    pub schedules: Vec<Value>,
}

impl RunbookView {
    pub(super) fn new(rb: &Runbook) -> RunbookView {
        RunbookView {
            name: rb.name.clone(),
            description: rb.description.clone(),
            owner: rb.owner.clone(),
            tags: rb.tags.clone(),
            params: rb
                .params
                .iter()
                .map(|p| {
                    let mut v = json!({"name": p.name, "type": p.kind.name(), "required": p.required && p.default.is_none(), "default": p.default, "description": p.description});
                    match &p.kind {
                        ParamKind::Enum(values) => v["values"] = json!(values),
                        ParamKind::Int { min, max } => {
                            v["min"] = json!(min);
                            v["max"] = json!(max);
                        }
                        ParamKind::String { pattern: Some(p) } => v["pattern"] = json!(p.as_str().trim_start_matches("^(?:").trim_end_matches(")$")),
                        _ => {}
                    }
                    v
                })
                .collect(),
            steps: rb.steps.iter().map(|s| json!({"name": s.name, "kind": s.kind.name(), "idempotent": s.idempotent})).collect(),
            on_failure: rb.on_failure.iter().map(|s| s.name.clone()).collect(),
            lock: rb.lock.as_ref().map(|l| l.written.clone()),
            timeout: rb.timeout.map(format_duration),
            schedules: rb.schedules.iter().map(|s| json!({"cron": s.cron, "timezone": s.timezone.name(), "params": s.params})).collect(),
        }
    }
}

pub(super) async fn list_runbooks(caller: Caller, State(s): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let config = s.engine.config();
    Ok(Json(json!({"runbooks": config.runbooks.iter().map(RunbookView::new).collect::<Vec<_>>()})))
}

fn find<'a>(config: &'a crate::config::Config, name: &str) -> Result<&'a Runbook, ApiError> {
    config.runbook(name).ok_or_else(|| ApiError::not_found("runbook", name))
}

pub(super) async fn get_runbook(caller: Caller, State(s): State<Arc<AppState>>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let config = s.engine.config();
    Ok(Json(json!({"runbook": RunbookView::new(find(&config, &name)?)})))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StartBody {
    #[serde(default)]
    params: Map<String, Value>,
    #[serde(default)]
    dry_run: bool,
    /// The incident this run works on: its start and end land in that timeline, as an
    /// alert-started run's do.
    #[serde(default)]
    incident: Option<i64>,
}

/// Starts a run (201 with the run) or, with `dry_run`, returns its plan (200).
pub(super) async fn start_run(
    caller: Caller,
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let req: StartBody = body(&bytes, r#"{"params": {"node": "db-2"}, "dry_run": false, "incident": 12}"#)?;
    if req.dry_run {
        caller.require(Role::Viewer)?;
        let config = s.engine.config();
        let rb = find(&config, &name)?;
        let params = control::check_params(rb, &req.params).map_err(ControlError::BadParams)?;
        let plan = crate::runbooks::plan::plan(&config, rb, &params);
        return Ok((StatusCode::OK, Json(json!({"plan": plan}))));
    }
    caller.require(Role::Operator)?;
    let mut start = StartRequest::manual(&name, req.params, &caller.0.name);
    if let Some(id) = req.incident {
        if s.engine.store.incident(id).await?.is_none() {
            return Err(ApiError::new(Code::NotFound, format!("no incident has id {id}")));
        }
        start.incident_id = Some(id);
    }
    let run = control::start(&s.engine.runbooks, start).await?;
    Ok((StatusCode::CREATED, Json(json!({"run": run}))))
}

#[derive(Debug, Deserialize, Default)]
pub(super) struct RunsQuery {
    runbook: Option<String>,
    status: Option<String>,
    before: Option<i64>,
    limit: Option<u32>,
}

pub(super) async fn list_runs(caller: Caller, State(s): State<Arc<AppState>>, Query(q): Query<RunsQuery>) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let status = match q.status.as_deref() {
        None | Some("all") => None,
        Some(t) => Some(RunStatus::parse(t).ok_or_else(|| {
            let all: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::new(Code::BadRequest, format!("`{t}` is not a run status; use one of {}", all.join(", ")))
        })?),
    };
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    let runs = s.engine.store.runs(&RunQuery { runbook: q.runbook, status, before_id: q.before, limit }).await?;
    let next = (runs.len() as u32 == limit).then(|| runs.last().map(|r| r.id)).flatten();
    Ok(Json(json!({"runs": runs, "next_before": next})))
}

async fn run_view(engine: &Engine, id: i64) -> Result<Value, ApiError> {
    let run = engine.store.run(id).await?.ok_or_else(|| ApiError::new(Code::NotFound, format!("no run has id {id}")))?;
    let steps = engine.store.run_steps(id).await?;
    let waiting: Vec<String> = engine
        .store
        .approvals(id)
        .await?
        .into_iter()
        .filter(|a| a.state == crate::runbooks::ApprovalState::Pending)
        .map(|a| a.path)
        .collect();
    Ok(json!({"run": run, "steps": steps, "waiting_for_approval": waiting, "live": engine.runbooks.is_active(id)}))
}

pub(super) async fn get_run(caller: Caller, State(s): State<Arc<AppState>>, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(Json(run_view(&s.engine, id).await?))
}

#[derive(Debug, Deserialize, Default)]
pub(super) struct EventsQuery {
    after: Option<i64>,
    limit: Option<u32>,
}

pub(super) async fn run_events(
    caller: Caller,
    State(s): State<Arc<AppState>>,
    Path(id): Path<i64>,
    Query(q): Query<EventsQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let events = s.engine.store.run_events(id, q.after.unwrap_or(0), q.limit.unwrap_or(1000)).await?;
    Ok(Json(json!({"events": events})))
}

struct Stream {
    engine: Arc<Engine>,
    run: i64,
    after: i64,
    wake: tokio::sync::broadcast::Receiver<i64>,
    pending: VecDeque<RunEvent>,
    ended: bool,
}

/// Server-sent events: every event of the run from `after` on, then an `end` event
/// with the run once it is finished or interrupted.
pub(super) async fn stream_run(
    caller: Caller,
    State(s): State<Arc<AppState>>,
    Path(id): Path<i64>,
    Query(q): Query<EventsQuery>,
) -> Result<Sse<impl futures::Stream<Item = Result<Event, Infallible>>>, ApiError> {
    caller.require(Role::Viewer)?;
    if s.engine.store.run(id).await?.is_none() {
        return Err(ApiError::new(Code::NotFound, format!("no run has id {id}")));
    }
    Ok(Sse::new(run_event_stream(s.engine.clone(), id, q.after.unwrap_or(0))).keep_alive(KeepAlive::default()))
}

/// A run's events after event id `after` as SSE `run_event`s (each with its id, so a
/// reconnecting client resumes where it stopped), then one `end` with the run once it
/// is finished or interrupted. Shared by the API and the console's live log.
pub(super) fn run_event_stream(engine: Arc<Engine>, run: i64, after: i64) -> impl futures::Stream<Item = Result<Event, Infallible>> {
    let state = Stream { wake: engine.runbooks.events.subscribe(), engine, run, after, pending: VecDeque::new(), ended: false };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(ev) = st.pending.pop_front() {
                let event = Event::default().event("run_event").id(ev.id.to_string()).json_data(&ev).unwrap_or_default();
                return Some((Ok(event), st));
            }
            if st.ended {
                return None;
            }
            let Ok(events) = st.engine.store.run_events(st.run, st.after, 500).await else { return None };
            if let Some(last) = events.last() {
                st.after = last.id;
                st.pending.extend(events);
                continue;
            }
            let run = st.engine.store.run(st.run).await.ok().flatten();
            let done = run
                .as_ref()
                .is_none_or(|r| (r.status.is_final() || r.status == RunStatus::Interrupted) && !st.engine.runbooks.is_active(r.id));
            if done {
                // One more look: events written between the read above and the status.
                if let Ok(events) = st.engine.store.run_events(st.run, st.after, 10_000).await
                    && let Some(last) = events.last()
                {
                    st.after = last.id;
                    st.pending.extend(events);
                    continue;
                }
                st.ended = true;
                let event = Event::default().event("end").json_data(json!({"run": run})).unwrap_or_default();
                return Some((Ok(event), st));
            }
            tokio::select! {
                _ = st.wake.recv() => {}
                _ = tokio::time::sleep(st.engine.runbooks.poll_every()) => {}
            }
        }
    })
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    step: Option<String>,
    #[serde(default)]
    comment: String,
}

pub(super) async fn approve(caller: Caller, s: State<Arc<AppState>>, id: Path<i64>, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    decide(caller, s, id, bytes, true).await
}

pub(super) async fn deny(caller: Caller, s: State<Arc<AppState>>, id: Path<i64>, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    decide(caller, s, id, bytes, false).await
}

async fn decide(
    caller: Caller,
    State(s): State<Arc<AppState>>,
    Path(id): Path<i64>,
    bytes: Bytes,
    approved: bool,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Operator)?;
    let req: DecisionBody = body(&bytes, r#"{"step": "confirm", "comment": "checked the replica lag"}"#)?;
    control::decide(&s.engine.runbooks, id, req.step.as_deref(), approved, &caller.0.name, caller.0.role, &req.comment).await?;
    Ok(Json(run_view(&s.engine, id).await?))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    #[serde(default)]
    reason: String,
}

pub(super) async fn cancel(
    caller: Caller,
    State(s): State<Arc<AppState>>,
    Path(id): Path<i64>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Operator)?;
    let req: CancelBody = body(&bytes, r#"{"reason": "wrong node"}"#)?;
    let run = control::cancel(&s.engine.runbooks, id, &caller.0.name, &req.reason).await?;
    Ok(Json(json!({"run": run})))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ResumeBody {
    from: Option<String>,
}

pub(super) async fn resume(caller: Caller, s: State<Arc<AppState>>, id: Path<i64>, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    continue_run(caller, s, id, bytes, false).await
}

pub(super) async fn retry(caller: Caller, s: State<Arc<AppState>>, id: Path<i64>, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    continue_run(caller, s, id, bytes, true).await
}

async fn continue_run(
    caller: Caller,
    State(s): State<Arc<AppState>>,
    Path(id): Path<i64>,
    bytes: Bytes,
    retry: bool,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Operator)?;
    let req: ResumeBody = body(&bytes, r#"{"from": "promote"}"#)?;
    let run = control::resume(&s.engine.runbooks, id, &caller.0.name, req.from.as_deref(), retry).await?;
    Ok(Json(json!({"run": run})))
}

#[derive(Debug, Deserialize, Default)]
pub(super) struct AuditParams {
    runbook: Option<String>,
    actor: Option<String>,
    before: Option<i64>,
    limit: Option<u32>,
}

pub(super) async fn audit(caller: Caller, State(s): State<Arc<AppState>>, Query(q): Query<AuditParams>) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let events = s.engine.store.audit(&AuditQuery { runbook: q.runbook, actor: q.actor, before_id: q.before, limit }).await?;
    let next = (events.len() as u32 == limit).then(|| events.last().map(|e| e.id)).flatten();
    Ok(Json(json!({"events": events, "next_before": next})))
}
