//! What people and triggers do to runs: start (with checked parameters and the lock),
//! approve or deny, cancel, resume, retry; and what the server does on its own:
//! recover after a restart, heartbeat, fire schedules, expire old history.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value as Json, json};
use tokio_util::sync::CancellationToken;

use super::Runbooks;
use super::executor::{self, RunCx};
use super::{ApprovalRequest, ApprovalState, Decision, NewEvent, NewRun, Run, RunStatus, StepStatus};
use crate::auth::Role;
use crate::config::runbooks::{Runbook, StepKind, coerce};
use crate::cron::Fires;
use crate::incidents::TimelineEntry;
use crate::store::StoreError;

/// How long a run's heartbeat may be silent before the run counts as abandoned.
pub const STALE_AFTER: Duration = Duration::from_secs(60);
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct StartRequest {
    pub runbook: String,
    /// As given: strings from `-p key=value`, or JSON values from the API.
    pub params: Map<String, Json>,
    pub started_by: String,
    pub trigger: String,
    pub parent_run: Option<i64>,
    pub alert_fingerprint: Option<String>,
    pub incident_id: Option<i64>,
    pub trigger_key: Option<String>,
}

impl StartRequest {
    pub fn manual(runbook: &str, params: Map<String, Json>, by: &str) -> StartRequest {
        StartRequest {
            runbook: runbook.into(),
            params,
            started_by: by.into(),
            trigger: "manual".into(),
            parent_run: None,
            alert_fingerprint: None,
            incident_id: None,
            trigger_key: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    NotFound(String),
    /// One message per parameter problem.
    #[error("invalid parameters: {}", .0.join("; "))]
    BadParams(Vec<String>),
    #[error("{0}")]
    BadInput(String),
    /// The run is not in a state where this applies, or its lock is held.
    #[error("{0}")]
    Conflict(String),
    /// The trigger key already started a run (this schedule slot, this alert's firing).
    #[error("{0}")]
    TriggerUsed(String),
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks the given parameters against the runbook's declarations and fills defaults.
/// Every problem is reported, not only the first.
pub fn check_params(rb: &Runbook, given: &Map<String, Json>) -> Result<Map<String, Json>, Vec<String>> {
    let mut out = Map::new();
    let mut problems = Vec::new();
    for (k, _) in given {
        if rb.param(k).is_none() {
            let hint = crate::config::diagnostics::closest(k, rb.params.iter().map(|p| p.name.as_str())).map_or_else(
                || format!("runbook `{}` takes: {}", rb.name, rb.params.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")),
                |c| format!("did you mean `{c}`?"),
            );
            problems.push(format!("unknown parameter `{k}` ({hint})"));
        }
    }
    for p in &rb.params {
        match given.get(&p.name) {
            Some(v) => match coerce(&p.kind, v) {
                Ok(v) => {
                    out.insert(p.name.clone(), v);
                }
                Err(e) => problems.push(format!("parameter `{}` ({}): {e}", p.name, p.kind.name())),
            },
            None => match &p.default {
                Some(d) => {
                    out.insert(p.name.clone(), d.clone());
                }
                None if p.required => problems.push(format!("parameter `{}` ({}) is required", p.name, p.kind.name())),
                None => {
                    out.insert(p.name.clone(), Json::Null);
                }
            },
        }
    }
    if problems.is_empty() { Ok(out) } else { Err(problems) }
}

fn runbook(runbooks: &Runbooks, name: &str) -> Result<Arc<Runbook>, ControlError> {
    let config = runbooks.config.get();
    config.runbook(name).map(|r| Arc::new(r.clone())).ok_or_else(|| {
        let hint = crate::config::diagnostics::closest(name, config.runbooks.iter().map(|r| r.name.as_str()))
            .map_or(String::new(), |c| format!("; did you mean `{c}`?"));
        ControlError::NotFound(format!("no runbook is named `{name}`{hint}"))
    })
}

/// Checks the request and writes the run with its lock and audit event; does not
/// start it.
pub async fn create(runbooks: &Arc<Runbooks>, req: StartRequest) -> Result<(Run, Arc<Runbook>), ControlError> {
    let rb = runbook(runbooks, &req.runbook)?;
    let params = check_params(&rb, &req.params).map_err(ControlError::BadParams)?;
    let lock = match &rb.lock {
        None => None,
        Some(t) => {
            let ctx = minijinja::Value::from_serialize(json!({"params": params, "run": {"runbook": rb.name}, "alert": {}}));
            Some(t.render(&ctx).map_err(|e| ControlError::BadInput(format!("the runbook's lock cannot be rendered: {e}")))?)
        }
    };
    let redactor = runbooks.config.get().redactor.clone();
    let shown = redactor.redact_json(&Json::Object(params.clone()));
    let new = NewRun {
        runbook: rb.name.clone(),
        params,
        trigger: req.trigger.clone(),
        started_by: req.started_by.clone(),
        parent_run: req.parent_run,
        alert_fingerprint: req.alert_fingerprint.clone(),
        incident_id: req.incident_id,
        lock: lock.clone(),
        trigger_key: req.trigger_key.clone(),
        owner: crate::telemetry::process_owner(),
    };
    let message = format!("{} started runbook {} ({})", req.started_by, rb.name, req.trigger);
    let started =
        NewEvent::new(0, "run_started", message).by(&req.started_by).data(json!({"params": shown, "trigger": req.trigger, "lock": lock}));
    let run = runbooks.store.create_run(&new, started).await.map_err(|e| match e {
        e @ StoreError::TriggerUsed { .. } => ControlError::TriggerUsed(e.to_string()),
        e if e.is_conflict() => ControlError::Conflict(e.to_string()),
        other => ControlError::Store(other),
    })?;
    let _ = runbooks.events.send(run.id);
    Ok((run, rb))
}

/// Starts a run in the background and returns it as written.
pub async fn start(runbooks: &Arc<Runbooks>, req: StartRequest) -> Result<Run, ControlError> {
    let (run, rb) = create(runbooks, req).await?;
    incident_entry(runbooks, &run, format!("Runbook {} started (run {}) by {}", run.runbook, run.id, run.started_by)).await;
    spawn(runbooks, run.clone(), rb, vec![]);
    Ok(run)
}

fn spawn(runbooks: &Arc<Runbooks>, run: Run, rb: Arc<Runbook>, records: Vec<super::StepRecord>) -> CancellationToken {
    spawn_with(runbooks, run, rb, records, |_| {})
}

fn spawn_with(
    runbooks: &Arc<Runbooks>,
    run: Run,
    rb: Arc<Runbook>,
    records: Vec<super::StepRecord>,
    adjust: impl FnOnce(&mut RunCx),
) -> CancellationToken {
    let cancel = CancellationToken::new();
    runbooks.active.lock().expect("active runs").insert(run.id, cancel.clone());
    let mut cx = RunCx::new(runbooks.clone(), run, rb, records, cancel.clone());
    adjust(&mut cx);
    tokio::spawn(executor::execute(Arc::new(cx)));
    cancel
}

/// A person's answer to a waiting approval. `step` may be omitted when the run waits
/// at exactly one approval.
pub async fn decide(
    runbooks: &Arc<Runbooks>,
    run_id: i64,
    step: Option<&str>,
    approved: bool,
    by: &str,
    role: Role,
    comment: &str,
) -> Result<(), ControlError> {
    let run = runbooks.store.run(run_id).await?.ok_or_else(|| ControlError::NotFound(format!("no run has id {run_id}")))?;
    let pending: Vec<ApprovalRequest> =
        runbooks.store.approvals(run_id).await?.into_iter().filter(|a| a.state == ApprovalState::Pending).collect();
    let paths: Vec<String> = pending.iter().map(|a| a.path.clone()).collect();
    let path = match (step, paths.as_slice()) {
        (_, []) => return Err(ControlError::Conflict(format!("run {run_id} is {} and waits for no approval", run.status.as_str()))),
        (Some(s), _) => paths.iter().find(|k| *k == s || k.rsplit('.').next() == Some(s)).cloned().ok_or_else(|| {
            ControlError::Conflict(format!("run {run_id} does not wait for approval at `{s}`; it waits at: {}", paths.join(", ")))
        })?,
        (None, [only]) => only.clone(),
        (None, many) => {
            return Err(ControlError::BadInput(format!(
                "run {run_id} waits at several approvals ({}); say which with --step",
                many.join(", ")
            )));
        }
    };
    let p = pending.iter().find(|a| a.path == path).expect("listed");
    if role < p.role {
        return Err(ControlError::Forbidden(format!("approving `{path}` needs the {} role; your token is {role}", p.role)));
    }
    if p.distinct_approver && p.started_by == by {
        return Err(ControlError::Forbidden(format!("`{path}` needs a second person: {by} started this run and cannot approve it")));
    }
    let comment = comment.trim().to_string();
    let verb = if approved { "approved" } else { "denied" };
    let text = format!("{by} {verb} {path}{}", if comment.is_empty() { String::new() } else { format!(": {comment}") });
    let ev = NewEvent::new(run_id, if approved { "approved" } else { "denied" }, text).step(&path).by(by).data(json!({"comment": comment}));
    // The decision and its audit event are one write, taken only while the approval is
    // pending: of two people answering at once, or an answer and the timeout, one wins.
    let decision = Decision { state: if approved { ApprovalState::Approved } else { ApprovalState::Denied }, by: by.to_string(), comment };
    if !runbooks.store.decide_approval(run_id, &path, p.attempt, &decision, &[ev]).await? {
        return Err(ControlError::Conflict(format!(
            "the approval at `{path}` is no longer pending (it timed out, was decided, or the run stopped)"
        )));
    }
    // The run waiting in this process learns at once; one elsewhere at its next poll.
    runbooks.decided.notify_waiters();
    let _ = runbooks.events.send(run_id);
    Ok(())
}

/// Cancels a live run (its running step is stopped) or aborts an interrupted one.
pub async fn cancel(runbooks: &Arc<Runbooks>, run_id: i64, by: &str, reason: &str) -> Result<Run, ControlError> {
    let run = runbooks.store.run(run_id).await?.ok_or_else(|| ControlError::NotFound(format!("no run has id {run_id}")))?;
    let reason = reason.trim();
    let why = if reason.is_empty() { String::new() } else { format!(": {reason}") };
    match run.status {
        RunStatus::Running | RunStatus::Waiting => {
            let ev = NewEvent::new(run_id, "cancelled", format!("{by} cancelled the run{why}")).by(by);
            // Recorded in the store: the process running the run stops it (at once when
            // that is this one, at its next look otherwise).
            if !runbooks.store.request_cancel(run_id, by, &[ev]).await? {
                return Err(ControlError::Conflict(format!("run {run_id} is already being cancelled or has ended")));
            }
            if let Some(token) = runbooks.active.lock().expect("active runs").get(&run_id) {
                token.cancel();
            }
        }
        RunStatus::Interrupted => {
            let ev =
                NewEvent::new(run_id, "aborted", format!("{by} aborted the interrupted run{why}; steps left unknown stay unknown")).by(by);
            runbooks.store.set_run_status(run_id, RunStatus::Cancelled, Some(&format!("aborted by {by}{why}")), None, &[ev]).await?;
        }
        s => return Err(ControlError::Conflict(format!("run {run_id} is {} and cannot be cancelled", s.as_str()))),
    }
    let _ = runbooks.events.send(run_id);
    Ok(runbooks.store.run(run_id).await?.unwrap_or(run))
}

/// Continues an interrupted run (`resume`) or a failed one (`retry`) on an operator's
/// word. Steps that succeeded are not repeated, except from `from` on when given;
/// the step that was unknown or failed runs again.
pub async fn resume(runbooks: &Arc<Runbooks>, run_id: i64, by: &str, from: Option<&str>, retry: bool) -> Result<Run, ControlError> {
    let run = runbooks.store.run(run_id).await?.ok_or_else(|| ControlError::NotFound(format!("no run has id {run_id}")))?;
    if matches!(run.status, RunStatus::Running | RunStatus::Waiting) {
        return Err(ControlError::Conflict(format!("run {run_id} is still running")));
    }
    let allowed = match retry {
        false => run.status == RunStatus::Interrupted,
        true => matches!(run.status, RunStatus::Failed | RunStatus::Interrupted),
    };
    if !allowed {
        let what = if retry {
            "retry applies to failed or interrupted runs"
        } else {
            "resume applies to interrupted runs (use retry for failed ones)"
        };
        return Err(ControlError::Conflict(format!("run {run_id} is {}; {what}", run.status.as_str())));
    }
    let rb = runbook(runbooks, &run.runbook)?;
    let records = runbooks.store.run_steps(run_id).await?;
    let top: Vec<String> = rb.steps.iter().map(|s| s.name.clone()).collect();
    let from_index = match from {
        None => None,
        Some(f) => Some(top.iter().position(|s| s == f).ok_or_else(|| {
            ControlError::BadInput(format!("`{f}` is not a top-level step of runbook {}; its steps: {}", rb.name, top.join(", ")))
        })?),
    };
    let unknown: Vec<String> = records.iter().filter(|r| r.status == StepStatus::Unknown).map(|r| r.path.clone()).collect();
    let kind = if retry { "retried" } else { "resumed" };
    let mut text = format!("{by} {kind} the run");
    if let Some(f) = from {
        text.push_str(&format!(" from step {f}"));
    }
    if !unknown.is_empty() {
        text.push_str(&format!("; runs again: {}", unknown.join(", ")));
    }
    let ev = NewEvent::new(run_id, kind, text).by(by).data(json!({"from": from, "unknown": unknown}));
    // Status, lock and owner change together, and only from the status read above: of
    // two operators resuming at once, one resumes and the other is told.
    let from_statuses: &[RunStatus] = if retry { &[RunStatus::Failed, RunStatus::Interrupted] } else { &[RunStatus::Interrupted] };
    let owner = crate::telemetry::process_owner();
    runbooks.store.resume_run(run_id, from_statuses, &owner, run.lock.as_deref(), &[ev]).await.map_err(|e| match e {
        StoreError::StaleVersion { .. } => {
            ControlError::Conflict(format!("run {run_id} changed meanwhile (someone else resumed or ended it)"))
        }
        e if e.is_conflict() => ControlError::Conflict(e.to_string()),
        other => ControlError::Store(other),
    })?;
    // Runs this one called and that were interrupted with it are superseded: the step
    // that called them runs again and starts a new one (their locks must not block it).
    for child in runbooks.store.unfinished_runs().await? {
        if child.parent_run == Some(run_id) && child.status == RunStatus::Interrupted {
            let text = format!("superseded: {by} {kind} the calling run {run_id}");
            let ev = NewEvent::new(child.id, "aborted", text.clone()).by(by);
            runbooks.store.set_run_status(child.id, RunStatus::Cancelled, Some(&text), None, &[ev]).await?;
        }
    }
    let _ = runbooks.events.send(run_id);
    let mut run = run;
    run.status = RunStatus::Running;
    let rollback: Vec<String> = rb.on_failure.iter().map(|s| s.name.clone()).collect();
    spawn_with(runbooks, run.clone(), rb, records, move |cx| {
        // A rollback that ran after the earlier failure must run again after the next.
        cx.done.retain(|path, _| {
            !rollback.iter().any(|r| path == r || path.starts_with(&format!("{r}.")) || path.starts_with(&format!("{r}[")))
        });
        if let Some(i) = from_index {
            let rerun = &top[i..];
            cx.done.retain(|path, _| {
                let head = path.split(['.', '[']).next().unwrap_or(path);
                !rerun.iter().any(|r| r == head)
            });
        }
    });
    Ok(run)
}

/// After a restart: runs that were live are interrupted, with their running steps
/// `unknown` — or, when every such step is idempotent, resumed at once.
pub async fn recover(runbooks: &Arc<Runbooks>) -> Result<(), StoreError> {
    let now = crate::clock::now();
    for run in runbooks.store.unfinished_runs().await? {
        if runbooks.is_active(run.id) || run.status == RunStatus::Interrupted {
            continue;
        }
        // With several replicas the run may belong to another steward that is alive
        // (a leader paused past its lease, say): it is judged only once its process is
        // known gone (a dead pid on this host; the one before a restart) or its
        // heartbeat is stale — never sooner, or a live run would be taken from it.
        let gone = run.owner.is_empty() || crate::telemetry::owner_gone(&run.owner);
        let stale = now - run.heartbeat_at > chrono::Duration::from_std(STALE_AFTER).unwrap_or_default();
        if !gone && !stale {
            tracing::info!(run = run.id, owner = run.owner, "a run of another steward is still heartbeating; it is left to its owner");
            continue;
        }
        interrupt_or_resume(runbooks, run, "steward stopped").await?;
    }
    Ok(())
}

async fn interrupt_or_resume(runbooks: &Arc<Runbooks>, run: Run, why: &str) -> Result<(), StoreError> {
    let id = run.id;
    // Someone asked to cancel it and its process stopped before it could: it ends
    // cancelled, with the steps that were in flight unknown.
    if let Some(who) = &run.cancel_requested_by {
        let paths = runbooks
            .store
            .close_open_steps(id, StepStatus::Unknown, &format!("{why} while this step ran; it may or may not have finished"))
            .await?;
        let error = format!("cancelled by {who}; {why} before the run stopped");
        let ev = NewEvent::new(id, "run_cancelled", error.clone()).data(json!({"unknown": paths}));
        runbooks.store.set_run_status(id, RunStatus::Cancelled, Some(&error), None, &[ev]).await?;
        let _ = runbooks.events.send(id);
        return Ok(());
    }
    let records = runbooks.store.run_steps(run.id).await?;
    let open: Vec<&super::StepRecord> = records.iter().filter(|r| matches!(r.status, StepStatus::Running | StepStatus::Waiting)).collect();
    let rb = runbooks.config.get().runbook(&run.runbook).cloned().map(Arc::new);
    let repeatable = |r: &super::StepRecord| {
        rb.as_ref()
            .and_then(|rb| rb.step(&r.name))
            .is_some_and(|s| s.idempotent || matches!(s.kind, StepKind::ForEach(_) | StepKind::Parallel(_)))
    };
    let heartbeat = run.heartbeat_at.format("%Y-%m-%d %H:%M:%S UTC");
    // A called run is resumed through its caller, never on its own.
    match rb {
        Some(rb) if run.parent_run.is_none() && open.iter().all(|r| repeatable(r)) => {
            let paths: Vec<String> = open.iter().map(|r| r.path.clone()).collect();
            runbooks
                .store
                .close_open_steps(run.id, StepStatus::Unknown, &format!("{why} while this step ran; it is idempotent, so it runs again"))
                .await?;
            let text = if paths.is_empty() {
                format!("{why} between steps (last heartbeat {heartbeat}); no step was in flight, so the run continues")
            } else {
                format!(
                    "{why} (last heartbeat {heartbeat}); {} idempotent, so the run continues",
                    paths.join(", ") + if paths.len() == 1 { " is" } else { " are" }
                )
            };
            let ev = NewEvent::new(run.id, "resumed", text).by("steward").data(json!({"automatic": true, "rerun": paths}));
            runbooks.store.set_run_status(run.id, RunStatus::Running, None, None, &[ev]).await?;
            let records = runbooks.store.run_steps(run.id).await?;
            spawn(runbooks, run, rb, records);
        }
        _ => {
            let paths = runbooks
                .store
                .close_open_steps(run.id, StepStatus::Unknown, &format!("{why} while this step ran; it may or may not have finished"))
                .await?;
            let at = if paths.is_empty() { "between steps".to_string() } else { format!("while {} ran", paths.join(", ")) };
            let error =
                format!("{why} {at} (last heartbeat {heartbeat}); an operator decides: `steward runs resume {id}`, `retry` or `cancel`");
            let ev = NewEvent::new(run.id, "run_interrupted", error.clone()).data(json!({"unknown": paths}));
            runbooks.store.set_run_status(run.id, RunStatus::Interrupted, Some(&error), None, &[ev]).await?;
            incident_entry(runbooks, &run, format!("Run {} of runbook {} was interrupted: {error}", run.id, run.runbook)).await;
        }
    }
    // Followers of this run learn of its new state at once.
    let _ = runbooks.events.send(id);
    Ok(())
}

/// Called by the executor when a run ends.
pub(super) async fn after_run(cx: &RunCx, status: RunStatus) {
    if cx.run.parent_run.is_none() {
        let error = match status {
            RunStatus::Succeeded => String::new(),
            _ => cx.runbooks.store.run(cx.run.id).await.ok().flatten().and_then(|r| r.error).map(|e| format!(": {e}")).unwrap_or_default(),
        };
        incident_entry(&cx.runbooks, &cx.run, format!("Runbook {} run {} {}{error}", cx.run.runbook, cx.run.id, status.as_str())).await;
    }
}

/// Appends to the timeline of the incident the run belongs to: the one named at start,
/// or the open incident holding the alert that started it.
async fn incident_entry(runbooks: &Arc<Runbooks>, run: &Run, text: String) {
    let incident = match (run.incident_id, &run.alert_fingerprint) {
        (Some(id), _) => Some(id),
        (None, Some(fp)) => runbooks.incidents.holding(fp).await.ok().flatten(),
        _ => None,
    };
    let Some(id) = incident else { return };
    let text = runbooks.config.get().redactor.redact(&text).into_owned();
    let entry =
        TimelineEntry::new(crate::clock::now(), "runbook", "steward", text).with_data(json!({"run": run.id, "runbook": run.runbook}));
    if let Err(e) = runbooks.incidents.append_to_timeline(id, entry).await {
        tracing::warn!(run = run.id, incident = id, error = %e, "could not add the run to the incident timeline");
    }
}

/// Heartbeats for live runs, interruption of abandoned ones, cron schedules and
/// history retention, until `stop`.
pub async fn background(runbooks: Arc<Runbooks>, stop: CancellationToken, retention: Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut fires = Fires::new(crate::clock::now());
    let mut last_heartbeat = std::time::Instant::now();
    let mut last_sweep = std::time::Instant::now();
    let mut last_prune: Option<std::time::Instant> = None;
    let mut handled: std::collections::HashSet<String> = std::collections::HashSet::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let now = crate::clock::now();
        runbooks.metrics.runbook_runs_active.set(runbooks.active_ids().len() as i64);
        fire_schedules(&runbooks, &mut fires, now).await;
        fire_alert_runbooks(&runbooks, &mut handled, now).await;
        // Cancels asked through another process (or the store) reach the runs here.
        let active = runbooks.active_ids();
        match runbooks.store.cancels_requested(&active).await {
            Ok(ids) => {
                let runs = runbooks.active.lock().expect("active runs");
                for id in ids {
                    if let Some(token) = runs.get(&id) {
                        token.cancel();
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not read cancel requests"),
        }
        if last_heartbeat.elapsed() >= HEARTBEAT_EVERY {
            last_heartbeat = std::time::Instant::now();
            if let Err(e) = runbooks.store.heartbeat(&runbooks.active_ids(), now).await {
                tracing::warn!(error = %e, "could not record run heartbeats");
            }
        }
        if last_sweep.elapsed() >= Duration::from_secs(30) {
            last_sweep = std::time::Instant::now();
            sweep_stale(&runbooks, now).await;
        }
        if last_prune.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
            last_prune = Some(std::time::Instant::now());
            let before = now - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::days(90));
            match runbooks.store.prune_runs(before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(runs = n, "expired old runbook runs"),
                Err(e) => tracing::warn!(error = %e, "expiring old runbook runs failed; will retry"),
            }
        }
    }
}

/// Runs whose heartbeat stopped and that no task here is running: interrupted.
async fn sweep_stale(runbooks: &Arc<Runbooks>, now: DateTime<Utc>) {
    let Ok(runs) = runbooks.store.unfinished_runs().await else { return };
    for run in runs {
        let stale = now - run.heartbeat_at > chrono::Duration::from_std(STALE_AFTER).unwrap_or_default();
        if stale
            && matches!(run.status, RunStatus::Running | RunStatus::Waiting)
            && !runbooks.is_active(run.id)
            && let Err(e) = interrupt_or_resume(runbooks, run, "the run's heartbeat stopped").await
        {
            tracing::warn!(error = %e, "could not interrupt an abandoned run");
        }
    }
}

/// Starts the runs whose schedule came due. Each fire is keyed by runbook, schedule and
/// instant in the store, so no fire can start two runs; fires missed while steward
/// was down are not made up (a log line says so).
async fn fire_schedules(runbooks: &Arc<Runbooks>, fires: &mut Fires<(String, usize, String)>, now: DateTime<Utc>) {
    let config = runbooks.config.get();
    let mut live = Vec::new();
    for rb in &config.runbooks {
        for (i, s) in rb.schedules.iter().enumerate() {
            let key = (rb.name.clone(), i, format!("{} {}", s.cron, s.timezone));
            live.push(key.clone());
            let Some(due) = fires.due(&key, &s.parsed, s.timezone, now) else { continue };
            let mut req = StartRequest::manual(&rb.name, s.params.clone().into_iter().collect(), "schedule");
            req.trigger = "schedule".into();
            req.trigger_key = Some(format!("{}#{}@{}", rb.name, i, due.at.to_rfc3339()));
            match start(runbooks, req).await {
                Ok(run) => tracing::info!(runbook = %rb.name, run = run.id, cron = %s.cron, "scheduled run started"),
                Err(ControlError::Conflict(m) | ControlError::TriggerUsed(m)) => {
                    tracing::warn!(runbook = %rb.name, cron = %s.cron, "scheduled run not started: {m}")
                }
                Err(e) => tracing::error!(runbook = %rb.name, cron = %s.cron, error = %e, "scheduled run could not start"),
            }
            if due.missed {
                tracing::warn!(runbook = %rb.name, cron = %s.cron, "fires between {} and now were missed and are not made up", due.at);
            }
        }
    }
    fires.retain(&live);
}

/// Alerts only start runs for firings this recent: a restart or a reload that links
/// a runbook to a rule must not start remediation for something that fired long ago.
const ALERT_TRIGGER_WINDOW: chrono::Duration = chrono::Duration::minutes(10);

/// Starts the runbook of every alert rule with `mode: run` once per firing of each of
/// its alerts (the firing is the run's trigger key, so a restart cannot start it twice).
/// `handled` remembers firings already dealt with, to ask the store only once.
async fn fire_alert_runbooks(runbooks: &Arc<Runbooks>, handled: &mut std::collections::HashSet<String>, now: DateTime<Utc>) {
    let config = runbooks.config.get();
    if !config.alerts.iter().any(|r| r.runbook.as_ref().is_some_and(|l| l.run)) {
        return;
    }
    for alert in runbooks.alerting.alerts() {
        let Some(fired) = alert.fired_at.filter(|_| alert.state == crate::alerting::AlertState::Firing) else { continue };
        if now - fired > ALERT_TRIGGER_WINDOW {
            continue;
        }
        let Some(link) = config.alert(&alert.rule).and_then(|r| r.runbook.as_ref()).filter(|l| l.run) else { continue };
        let key = format!("alert:{}@{}", alert.fingerprint, fired.timestamp_millis());
        if handled.contains(&key) {
            continue;
        }
        let params = match crate::alerting::runbook_link::params(link, &alert) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(rule = %alert.rule, runbook = %link.name, "the alert's runbook was not started: {e}");
                handled.insert(key);
                continue;
            }
        };
        let req = StartRequest {
            runbook: link.name.clone(),
            params,
            started_by: format!("alert {}", alert.rule),
            trigger: "alert".into(),
            parent_run: None,
            alert_fingerprint: Some(alert.fingerprint.clone()),
            incident_id: None,
            trigger_key: Some(key.clone()),
        };
        match start(runbooks, req).await {
            Ok(run) => {
                tracing::info!(rule = %alert.rule, runbook = %link.name, run = run.id, "an alert started its runbook");
                handled.insert(key);
            }
            // The key exists: this firing already started its run (before a restart, say).
            Err(ControlError::TriggerUsed(_)) => {
                handled.insert(key);
            }
            Err(e) => {
                tracing::warn!(rule = %alert.rule, runbook = %link.name, error = %e, "the alert's runbook was not started");
                handled.insert(key);
            }
        }
    }
    // Forget keys of firings that aged out of the window.
    handled.retain(|k| {
        k.rsplit('@')
            .next()
            .and_then(|ms| ms.parse::<i64>().ok())
            .is_some_and(|ms| now.timestamp_millis() - ms < ALERT_TRIGGER_WINDOW.num_milliseconds())
    });
}
