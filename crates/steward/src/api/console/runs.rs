//! Runbooks and runs: a start form generated from a runbook's typed parameters (checked
//! exactly as the CLI and API check them), its dry-run plan, the list of runs, and one
//! run with its steps, approvals, controls and live log.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::{Value, context};
use serde::Deserialize;
use serde_json::{Map, Value as Json};

use super::session::Signed;
use super::view::{PageError, Params, Posted, page};
use crate::api::AppState;
use crate::api::error::ApiError;
use crate::api::runs::{RunbookView, run_event_stream};
use crate::auth::Role;
use crate::runbooks::control::{self, ControlError, StartRequest};
use crate::runbooks::{ApprovalState, RunQuery, RunStatus};

/// Runs per page of the list.
const RUNS_PER_PAGE: u32 = 50;

pub(super) async fn runbooks(State(s): State<Arc<AppState>>, Extension(who): Extension<Signed>) -> Result<Response, PageError> {
    let config = s.engine.config();
    let views: Vec<RunbookView> = config.runbooks.iter().map(RunbookView::new).collect();
    page(&who, "runbooks", "runbooks.html", context! { runbooks => Value::from_serialize(&views) })
}

fn runbook_page(
    s: &AppState,
    who: &Signed,
    name: &str,
    given: &Map<String, Json>,
    plan: Option<Json>,
    problems: Vec<String>,
) -> Result<Response, PageError> {
    let config = s.engine.config();
    let rb = config.runbook(name).ok_or_else(|| PageError::not_found("runbook", name))?;
    let ctx = context! {
        runbook => Value::from_serialize(RunbookView::new(rb)),
        given => Value::from_serialize(given),
        plan => Value::from_serialize(&plan),
        problems,
    };
    page(who, "runbooks", "runbook.html", ctx)
}

pub(super) async fn runbook(
    State(s): State<Arc<AppState>>,
    Extension(who): Extension<Signed>,
    Path(name): Path<String>,
) -> Result<Response, PageError> {
    runbook_page(&s, &who, &name, &Map::new(), None, Vec::new())
}

/// The start form: `p.NAME` fields (empty ones left out, so defaults apply) and the
/// button pressed, `mode` = `plan` (dry run, shown on the page) or `start`.
pub(super) async fn start(
    State(s): State<Arc<AppState>>,
    Extension(who): Extension<Signed>,
    Path(name): Path<String>,
    Posted(fields): Posted<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let mut given = Map::new();
    let mut mode = None;
    for (k, v) in fields {
        match k.strip_prefix("p.") {
            Some(param) if !v.trim().is_empty() => {
                given.insert(param.to_string(), Json::String(v));
            }
            Some(_) => {}
            None if k == "mode" => mode = Some(v),
            None => return Err(PageError::new(StatusCode::BAD_REQUEST, format!("unknown form field `{k}`"))),
        }
    }
    let config = s.engine.config();
    let rb = config.runbook(&name).ok_or_else(|| PageError::not_found("runbook", &name))?;
    match mode.as_deref() {
        Some("plan") => {
            let (plan, problems) = match control::check_params(rb, &given) {
                Ok(params) => (Some(serde_json::to_value(crate::runbooks::plan::plan(&config, rb, &params)).unwrap_or_default()), vec![]),
                Err(problems) => (None, problems),
            };
            let status = if problems.is_empty() { StatusCode::OK } else { StatusCode::BAD_REQUEST };
            Ok((status, runbook_page(&s, &who, &name, &given, plan, problems)?).into_response())
        }
        Some("start") => {
            who.require(Role::Operator)?;
            match control::start(&s.engine.runbooks, StartRequest::manual(&name, given.clone(), &who.token.name)).await {
                Ok(run) => Ok(Redirect::to(&format!("/console/runs/{}", run.id)).into_response()),
                Err(ControlError::BadParams(problems)) => {
                    Ok((StatusCode::BAD_REQUEST, runbook_page(&s, &who, &name, &given, None, problems)?).into_response())
                }
                Err(e) => Err(ApiError::from(e).into()),
            }
        }
        _ => Err(PageError::new(StatusCode::BAD_REQUEST, "press Plan (dry run) or Start")),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    runbook: Option<String>,
    status: Option<String>,
    before: Option<i64>,
}

pub(super) async fn list(
    State(s): State<Arc<AppState>>,
    Extension(who): Extension<Signed>,
    Params(q): Params<ListQuery>,
) -> Result<Response, PageError> {
    let status = match q.status.as_deref().filter(|v| !v.is_empty() && *v != "all") {
        None => None,
        Some(t) => Some(RunStatus::parse(t).ok_or_else(|| PageError::new(StatusCode::BAD_REQUEST, format!("`{t}` is not a run status")))?),
    };
    let runbook = q.runbook.clone().filter(|v| !v.is_empty());
    let runs = s.engine.store.runs(&RunQuery { runbook: runbook.clone(), status, before_id: q.before, limit: RUNS_PER_PAGE }).await?;
    let next = (runs.len() as u32 == RUNS_PER_PAGE).then(|| runs.last().map(|r| r.id)).flatten();
    let ctx = context! {
        runs => Value::from_serialize(&runs),
        next,
        runbook => runbook.unwrap_or_default(),
        status => q.status.unwrap_or_default(),
        statuses => RunStatus::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        runbooks => s.engine.config().runbooks.iter().map(|r| r.name.clone()).collect::<Vec<_>>(),
    };
    page(&who, "runs", "runs.html", ctx)
}

pub(super) async fn show(
    State(s): State<Arc<AppState>>,
    Extension(who): Extension<Signed>,
    Path(id): Path<i64>,
) -> Result<Response, PageError> {
    let store = &s.engine.store;
    let run = store.run(id).await?.ok_or_else(|| PageError::not_found("run", id))?;
    let steps = store.run_steps(id).await?;
    let pending: Vec<_> = store.approvals(id).await?.into_iter().filter(|a| a.state == ApprovalState::Pending).collect();
    let ctx = context! {
        run => Value::from_serialize(&run),
        steps => Value::from_serialize(&steps),
        pending => Value::from_serialize(&pending),
        live => s.engine.runbooks.is_active(id),
        finished => run.status.is_final(),
        resumable => matches!(run.status, RunStatus::Failed | RunStatus::Interrupted | RunStatus::Cancelled),
    };
    page(&who, "runs", "run.html", ctx)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct LogQuery {
    after: Option<i64>,
}

/// The run's log over SSE from event id `after` (or the browser's `Last-Event-ID` when
/// it reconnects by itself): the page resumes from the last line it holds.
pub(super) async fn log(
    State(s): State<Arc<AppState>>,
    Path(id): Path<i64>,
    Params(q): Params<LogQuery>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    if s.engine.store.run(id).await?.is_none() {
        return Err(PageError::not_found("run", id));
    }
    let resumed = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<i64>().ok());
    let after = resumed.or(q.after).unwrap_or(0).max(0);
    Ok(Sse::new(run_event_stream(s.engine.clone(), id, after)).keep_alive(KeepAlive::default()).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RunForm {
    step: Option<String>,
    comment: Option<String>,
    reason: Option<String>,
    from: Option<String>,
}

/// `POST /console/runs/{id}/{approve|deny|cancel|resume|retry}`, then back to the run.
pub(super) async fn act(
    State(s): State<Arc<AppState>>,
    Extension(who): Extension<Signed>,
    Path((id, action)): Path<(i64, String)>,
    Posted(f): Posted<RunForm>,
) -> Result<Response, PageError> {
    who.require(Role::Operator)?;
    let runbooks = &s.engine.runbooks;
    let by = who.token.name.as_str();
    let step = f.step.as_deref().filter(|v| !v.is_empty());
    // Where to go next: the run itself, or the new run a retry starts.
    let next = match action.as_str() {
        "approve" | "deny" => {
            let comment = f.comment.unwrap_or_default();
            control::decide(runbooks, id, step, action == "approve", by, who.token.role, &comment).await.map(|_| id)
        }
        "cancel" => control::cancel(runbooks, id, by, f.reason.as_deref().unwrap_or("")).await.map(|_| id),
        "resume" | "retry" => {
            control::resume(runbooks, id, by, f.from.as_deref().filter(|v| !v.is_empty()), action == "retry").await.map(|r| r.id)
        }
        other => return Err(PageError::new(StatusCode::NOT_FOUND, format!("no run action `{other}`"))),
    };
    let next = next.map_err(ApiError::from)?;
    Ok(Redirect::to(&format!("/console/runs/{next}")).into_response())
}
