//! Walks a run's steps. Each step attempt is written `running` before it acts and
//! `succeeded`/`failed`/… after; output streams as events while it runs.
//!
//! Stopping is by dropping futures: a step timeout, the run timeout or a cancellation
//! drops the step's future, which kills its process group; the step rows left
//! `running` are then closed in one store call with the reason.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use serde_json::{Map, Value as Json, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Runbooks;
use super::actions::{OutputLine, StepAction, StepOutcome};
use super::template::Text;
use super::{ApprovalRequest, ApprovalState, Decision, NewEvent, Run, RunStatus, StepRecord, StepStatus};
use crate::config::Config;
use crate::config::duration::{format_duration, parse_duration};
use crate::config::runbooks::{Items, Runbook, ShellProgram, Step, StepKind, WaitProbe};
use crate::config::secret::Redactor;
use crate::store::OutboxMessage;

/// Output events per step beyond which lines are only kept in the step's tail.
const MAX_OUTPUT_LINES: usize = 20_000;
/// Characters of output kept on the step row.
const TAIL_CHARS: usize = 64 << 10;

/// Why a run stopped before its end.
#[derive(Debug, Clone)]
pub enum Stop {
    Failed { step: String, error: String },
    TimedOut(Duration),
    Cancelled,
}

/// Everything the steps of one run share.
pub struct RunCx {
    pub runbooks: Arc<Runbooks>,
    pub run: Run,
    pub runbook: Arc<Runbook>,
    pub config: Arc<Config>,
    pub redactor: Redactor,
    pub cancel: CancellationToken,
    /// Stops the runs this one called (they run as tasks of their own): cancelled with
    /// this run, or when this run stops for any reason before they end.
    children: Mutex<CancellationToken>,
    /// Steps that succeeded or were skipped in an earlier execution of this run: a
    /// resumed run does not repeat them.
    pub done: HashMap<String, StepRecord>,
    /// The last attempt number per path, so a resumed step continues the numbering.
    attempts: Mutex<HashMap<String, u32>>,
    /// Template values built once per run.
    alert: minijinja::Value,
    params: minijinja::Value,
    run_value: minijinja::Value,
}

/// The variables of one level: step results so far and loop variables. Results are
/// kept as template values (shared, reference-counted), so building a context is
/// cheap however many steps ran before.
#[derive(Clone)]
struct Scope {
    steps: Arc<Mutex<BTreeMap<String, minijinja::Value>>>,
    vars: BTreeMap<String, minijinja::Value>,
    failure: Option<minijinja::Value>,
}

impl Scope {
    fn root() -> Scope {
        Scope { steps: Arc::default(), vars: BTreeMap::new(), failure: None }
    }

    /// A loop item's scope: sees the steps before the loop, keeps its own results.
    fn item(&self, var: &str, value: &Json) -> Scope {
        let steps = self.steps.lock().expect("scope").clone();
        let mut vars = self.vars.clone();
        vars.insert(var.to_string(), minijinja::Value::from_serialize(value));
        Scope { steps: Arc::new(Mutex::new(steps)), vars, failure: self.failure.clone() }
    }

    fn set(&self, name: &str, result: &Json) {
        self.steps.lock().expect("scope").insert(name.to_string(), minijinja::Value::from_serialize(result));
    }

    fn context(&self, cx: &RunCx, extra: Option<(&str, Json)>) -> minijinja::Value {
        let mut root: BTreeMap<String, minijinja::Value> = BTreeMap::new();
        root.insert("params".into(), cx.params.clone());
        root.insert("steps".into(), minijinja::Value::from(self.steps.lock().expect("scope").clone()));
        root.insert("run".into(), cx.run_value.clone());
        root.insert("alert".into(), cx.alert.clone());
        if let Some(f) = &self.failure {
            root.insert("failure".into(), f.clone());
        }
        for (k, v) in &self.vars {
            root.insert(k.clone(), v.clone());
        }
        if let Some((k, v)) = extra {
            root.insert(k.into(), minijinja::Value::from_serialize(&v));
        }
        minijinja::Value::from(root)
    }

    /// Loop variables as JSON, for the environment of processes.
    fn var_values(&self) -> Vec<(String, Json)> {
        self.vars.iter().map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or(Json::Null))).collect()
    }
}

impl RunCx {
    pub fn new(runbooks: Arc<Runbooks>, run: Run, runbook: Arc<Runbook>, done: Vec<StepRecord>, cancel: CancellationToken) -> RunCx {
        let config = runbooks.config.get();
        let mut attempts = HashMap::new();
        let mut finished = HashMap::new();
        for s in done {
            let a = attempts.entry(s.path.clone()).or_insert(0);
            *a = (*a).max(s.attempt);
            if matches!(s.status, StepStatus::Succeeded | StepStatus::Skipped) {
                finished.insert(s.path.clone(), s);
            } else {
                // A later failed attempt supersedes an earlier success only if it is newer;
                // rows come in start order, so the last one wins.
                finished.remove(&s.path);
            }
        }
        let alert = match &run.alert_fingerprint {
            Some(fp) => runbooks
                .alerting
                .alert(fp)
                .map(|a| json!({"fingerprint": fp, "rule": a.rule, "labels": a.labels, "annotations": a.annotations}))
                .unwrap_or_else(|| json!({"fingerprint": fp, "labels": {}, "annotations": {}})),
            None => json!({}),
        };
        let params = minijinja::Value::from_serialize(&run.params);
        let run_value = minijinja::Value::from_serialize(
            json!({"id": run.id, "runbook": run.runbook, "started_by": run.started_by, "trigger": run.trigger}),
        );
        RunCx {
            params,
            run_value,
            redactor: config.redactor.clone(),
            config,
            runbooks,
            run,
            runbook,
            children: Mutex::new(cancel.child_token()),
            cancel,
            done: finished,
            attempts: Mutex::new(attempts),
            alert: minijinja::Value::from_serialize(&alert),
        }
    }

    fn next_attempt(&self, path: &str) -> u32 {
        let mut a = self.attempts.lock().expect("attempts");
        let n = a.entry(path.to_string()).or_insert(0);
        *n += 1;
        *n
    }

    fn event(&self, kind: &'static str, message: impl Into<String>) -> NewEvent {
        NewEvent::new(self.run.id, kind, self.redactor.redact(&message.into()).into_owned())
    }

    async fn save(&self, rec: &StepRecord, events: &[NewEvent]) -> Result<(), Stop> {
        let result = self.runbooks.store.save_step(rec, events).await;
        let _ = self.runbooks.events.send(self.run.id);
        result.map_err(|e| Stop::Failed { step: rec.path.clone(), error: format!("cannot record the step ({e}); stopped before acting") })
    }

    async fn emit(&self, events: Vec<NewEvent>) {
        if let Err(e) = self.runbooks.store.append_events(&events).await {
            tracing::warn!(run = self.run.id, error = %e, "could not record run events");
        }
        let _ = self.runbooks.events.send(self.run.id);
    }

    /// Waits, unless the run is cancelled first.
    async fn pause(&self, d: Duration) -> Result<(), Stop> {
        tokio::select! {
            _ = tokio::time::sleep(d) => Ok(()),
            _ = self.cancel.cancelled() => Err(Stop::Cancelled),
        }
    }

    /// The environment every process of this run starts with: a minimal base, the
    /// parameters, then loop variables.
    fn base_env(&self, scope: &Scope, path: &str) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = vec![
            ("PATH".into(), std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into())),
            ("HOME".into(), std::env::var("HOME").unwrap_or_else(|_| "/".into())),
            ("LANG".into(), "C.UTF-8".into()),
            ("STEWARD_RUN_ID".into(), self.run.id.to_string()),
            ("STEWARD_RUNBOOK".into(), self.run.runbook.clone()),
            ("STEWARD_STEP".into(), path.to_string()),
        ];
        for (k, v) in &self.run.params {
            env.push((crate::config::runbooks::env_name(k), env_value(v)));
        }
        for (k, v) in scope.var_values() {
            env.push((crate::config::runbooks::env_name(&k), env_value(&v)));
        }
        env
    }
}

/// How a value reads in an environment variable: strings as they are, lists
/// space-separated (`for NODE in $NODES`), anything else as JSON.
pub(super) fn env_value(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        Json::Array(items) => items.iter().map(env_value).collect::<Vec<_>>().join(" "),
        Json::Null => String::new(),
        other => other.to_string(),
    }
}

/// Runs the run to its end and records how it ended. `run` must already be written.
pub async fn execute(cx: Arc<RunCx>) -> RunStatus {
    let id = cx.run.id;
    let started = Instant::now();
    let scope = Scope::root();
    let body = run_steps(&cx, &cx.runbook.steps, "", &scope);
    let timed = async {
        match cx.runbook.timeout {
            Some(t) => tokio::time::timeout(t, body).await.unwrap_or(Err(Stop::TimedOut(t))),
            None => body.await,
        }
    };
    let result = tokio::select! {
        r = timed => r,
        _ = cx.cancel.cancelled() => Err(Stop::Cancelled),
    };
    if matches!(result, Err(Stop::TimedOut(_) | Stop::Cancelled)) {
        // The steps were dropped mid-way: runs they called must not go on without them
        // (a rollback may still call runbooks, under a fresh token).
        let mut children = cx.children.lock().expect("children");
        children.cancel();
        *children = cx.cancel.child_token();
    }
    let store = &cx.runbooks.store;
    let elapsed = format_duration(Duration::from_millis(started.elapsed().as_millis() as u64));
    let status = match result {
        Ok(()) => match render_outputs(&cx, &scope) {
            Ok(outputs) => {
                let outputs = cx.redactor.redact_json(&outputs);
                let ev = cx.event("run_succeeded", format!("run succeeded in {elapsed}")).data(json!({"outputs": outputs}));
                finish(&cx, RunStatus::Succeeded, None, Some(&outputs), ev).await
            }
            Err(e) => {
                let msg = format!("the run's outputs could not be rendered: {e}");
                finish(&cx, RunStatus::Failed, Some(&msg), None, cx.event("run_failed", msg.clone())).await
            }
        },
        Err(Stop::Cancelled) => {
            let _ = store.close_open_steps(id, StepStatus::Cancelled, "the run was cancelled").await;
            finish(&cx, RunStatus::Cancelled, Some("cancelled"), None, cx.event("run_cancelled", "run cancelled")).await
        }
        Err(stop) => {
            let (failed_step, error) = match &stop {
                Stop::TimedOut(t) => {
                    let msg = format!("the run timed out after {}", format_duration(*t));
                    let _ = store.close_open_steps(id, StepStatus::Failed, &msg).await;
                    (None, msg)
                }
                Stop::Failed { step, error } => (Some(step.clone()), format!("step `{step}` failed: {error}")),
                Stop::Cancelled => unreachable!("handled above"),
            };
            let mut error = cx.redactor.redact(&error).into_owned();
            if !cx.runbook.on_failure.is_empty() {
                cx.emit(vec![cx.event("rollback_started", format!("{error}; running on_failure steps"))]).await;
                let mut rollback = Scope::root();
                rollback.steps = scope.steps.clone();
                rollback.failure = Some(minijinja::Value::from_serialize(json!({"step": failed_step, "error": error})));
                // The rollback gets its own budget: the run's may be what ran out.
                let rb = run_steps(&cx, &cx.runbook.on_failure, "", &rollback);
                match tokio::select! { r = rb => r, _ = cx.cancel.cancelled() => Err(Stop::Cancelled) } {
                    Ok(()) => error.push_str("; rolled back (on_failure succeeded)"),
                    Err(Stop::Failed { step, error: e }) => error.push_str(&format!("; on_failure step `{step}` failed too: {e}")),
                    Err(_) => {
                        let _ = store.close_open_steps(id, StepStatus::Cancelled, "the rollback was cancelled").await;
                        error.push_str("; the rollback was cancelled");
                    }
                }
            }
            finish(&cx, RunStatus::Failed, Some(&error), None, cx.event("run_failed", error.clone())).await
        }
    };
    cx.runbooks.active.lock().expect("active runs").remove(&id);
    status
}

async fn finish(cx: &RunCx, status: RunStatus, error: Option<&str>, outputs: Option<&Json>, event: NewEvent) -> RunStatus {
    let labels = crate::telemetry::RunbookLabels { runbook: cx.run.runbook.clone(), status: status.as_str().into() };
    cx.runbooks.metrics.runbook_runs.get_or_create(&labels).inc();
    let took = (crate::clock::now() - cx.run.created_at).num_milliseconds().max(0) as f64 / 1000.0;
    cx.runbooks.metrics.runbook_run_duration.get_or_create(&labels).observe(took);
    if let Err(e) = cx.runbooks.store.set_run_status(cx.run.id, status, error, outputs, &[event]).await {
        tracing::error!(run = cx.run.id, error = %e, "could not record how the run ended; it will show as interrupted");
    }
    let _ = cx.runbooks.events.send(cx.run.id);
    super::control::after_run(cx, status).await;
    status
}

fn render_outputs(cx: &RunCx, scope: &Scope) -> Result<Json, String> {
    if cx.runbook.outputs.is_empty() {
        return Ok(Json::Object(Map::new()));
    }
    let ctx = scope.context(cx, None);
    let mut out = Map::new();
    for (k, t) in &cx.runbook.outputs {
        let v = t.render(&ctx).map_err(|e| format!("output `{k}`: {e}"))?;
        // An output that renders to JSON (a number, a list) stays typed.
        out.insert(k.clone(), serde_json::from_str(&v).unwrap_or(Json::String(v)));
    }
    Ok(Json::Object(out))
}

fn run_steps<'a>(cx: &'a RunCx, steps: &'a [Step], prefix: &'a str, scope: &'a Scope) -> BoxFuture<'a, Result<(), Stop>> {
    async move {
        for step in steps {
            run_step(cx, step, format!("{prefix}{}", step.name), scope).await?;
        }
        Ok(())
    }
    .boxed()
}

fn record(cx: &RunCx, step: &Step, path: &str, attempt: u32, status: StepStatus) -> StepRecord {
    StepRecord {
        run_id: cx.run.id,
        path: path.to_string(),
        name: step.name.clone(),
        kind: step.kind.name().to_string(),
        attempt,
        status,
        started_at: crate::clock::now(),
        finished_at: None,
        detail: Json::Null,
        result: Json::Null,
        output: String::new(),
        error: None,
    }
}

/// Result JSON as templates read it: the action's fields plus `status` and `error`.
fn step_result(status: StepStatus, mut fields: Map<String, Json>, error: Option<&str>) -> Json {
    fields.insert("status".into(), Json::from(status.as_str()));
    fields.insert("error".into(), error.map_or(Json::Null, Json::from));
    Json::Object(fields)
}

fn run_step<'a>(cx: &'a RunCx, step: &'a Step, path: String, scope: &'a Scope) -> BoxFuture<'a, Result<(), Stop>> {
    async move {
        if let Some(rec) = cx.done.get(&path) {
            // Done in an earlier execution of this run: its recorded result stands.
            scope.set(&step.name, &rec.result);
            return Ok(());
        }
        if cx.cancel.is_cancelled() {
            return Err(Stop::Cancelled);
        }
        if let Some(when) = &step.when {
            let decided = when.is_true(&scope.context(cx, None));
            match decided {
                Ok(true) => {}
                Ok(false) => {
                    let mut rec = record(cx, step, &path, cx.next_attempt(&path), StepStatus::Skipped);
                    rec.finished_at = Some(rec.started_at);
                    rec.detail = json!({"when": when.source});
                    rec.result = step_result(StepStatus::Skipped, Map::new(), None);
                    let ev = cx.event("step_skipped", format!("{path} skipped: `{}` is false", when.source)).step(&path);
                    cx.save(&rec, &[ev]).await?;
                    scope.set(&step.name, &rec.result);
                    return Ok(());
                }
                Err(e) => {
                    return conclude_failure(cx, step, &path, scope, format!("its `when` condition could not be evaluated: {e}")).await;
                }
            }
        }
        match &step.kind {
            StepKind::ForEach(_) | StepKind::Parallel(_) => composite(cx, step, path, scope).await,
            _ => leaf(cx, step, path, scope).await,
        }
    }
    .boxed()
}

/// Records a failure that happened before an attempt could start, then fails or goes on.
async fn conclude_failure(cx: &RunCx, step: &Step, path: &str, scope: &Scope, error: String) -> Result<(), Stop> {
    let error = cx.redactor.redact(&error).into_owned();
    let mut rec = record(cx, step, path, cx.next_attempt(path), StepStatus::Failed);
    rec.finished_at = Some(rec.started_at);
    rec.error = Some(error.clone());
    rec.result = step_result(StepStatus::Failed, Map::new(), Some(&error));
    let ev = cx.event("step_failed", format!("{path} failed: {error}")).step(path);
    cx.save(&rec, &[ev]).await?;
    scope.set(&step.name, &rec.result);
    if step.continue_on_error { Ok(()) } else { Err(Stop::Failed { step: path.to_string(), error }) }
}

/// What a leaf step will do, rendered.
enum Prepared {
    Act(StepAction),
    Check(String),
    Wait { probe: WaitPrepared, interval: Duration, timeout: Duration },
    Sleep(Duration),
    Approve { prompt: String },
    Notify { receivers: Vec<String>, message: String, severity: String },
    Call { runbook: String, params: Map<String, Json> },
    Slo(crate::config::runbooks::SloGate),
}

enum WaitPrepared {
    Check(String),
    Act(Box<StepKind>, crate::runbooks::template::Expr),
}

impl Prepared {
    fn detail(&self) -> Json {
        match self {
            Prepared::Act(a) => a.detail(),
            Prepared::Check(c) => json!({"check": c}),
            Prepared::Wait { probe, interval, timeout } => json!({
                "until": match probe { WaitPrepared::Check(c) => format!("check {c} is healthy"), WaitPrepared::Act(_, cond) => cond.source.clone() },
                "interval": format_duration(*interval), "timeout": format_duration(*timeout),
            }),
            Prepared::Sleep(d) => json!({"sleep": format_duration(*d)}),
            Prepared::Approve { prompt } => json!({"prompt": prompt}),
            Prepared::Notify { receivers, message, .. } => json!({"receivers": receivers, "message": message}),
            Prepared::Call { runbook, params } => json!({"runbook": runbook, "params": params}),
            Prepared::Slo(g) => json!({"slo": g.slo, "min_budget_remaining_percent": g.min_budget_remaining * 100.0}),
        }
    }

    fn summary(&self) -> String {
        match self {
            Prepared::Act(a) => a.summary(),
            Prepared::Check(c) => format!("check {c}"),
            Prepared::Wait { probe: WaitPrepared::Check(c), timeout, .. } => {
                format!("wait until {c} is healthy (up to {})", format_duration(*timeout))
            }
            Prepared::Wait { probe: WaitPrepared::Act(_, cond), timeout, .. } => {
                format!("wait until {} (up to {})", cond.source, format_duration(*timeout))
            }
            Prepared::Sleep(d) => format!("sleep {}", format_duration(*d)),
            Prepared::Approve { prompt } => format!("approval: {prompt}"),
            Prepared::Notify { receivers, .. } => format!("notify {}", receivers.join(", ")),
            Prepared::Call { runbook, .. } => format!("run runbook {runbook}"),
            Prepared::Slo(g) => format!("SLO {} keeps {}% of its budget", g.slo, g.min_budget_remaining * 100.0),
        }
    }
}

/// Renders an action step kind (shell/http/sql/redis) in `scope`.
fn render_action(cx: &RunCx, kind: &StepKind, scope: &Scope, path: &str, extra: Option<(&str, Json)>) -> Result<StepAction, String> {
    let ctx = std::cell::OnceCell::new();
    let ctx = || ctx.get_or_init(|| scope.context(cx, extra.clone()));
    let r = |t: &Text| if t.is_literal() { Ok(t.written.clone()) } else { t.render(ctx()) };
    let url = |t: &Text| t.render_url(ctx()).map_err(|e| format!("url: {e}"));
    match kind {
        StepKind::Shell(s) => {
            let mut env = cx.base_env(scope, path);
            for (k, v) in &s.env {
                env.push((k.clone(), r(v).map_err(|e| format!("env {k}: {e}"))?));
            }
            let argv = match &s.program {
                // The script text goes to the shell as written; values arrive through env.
                ShellProgram::Script { shell, text } => vec![shell.clone(), "-c".into(), text.clone()],
                ShellProgram::Argv(items) => items.iter().map(r).collect::<Result<Vec<_>, _>>()?,
            };
            Ok(StepAction::Process { argv, env, workdir: s.workdir.clone() })
        }
        StepKind::Http(h) => Ok(StepAction::Http {
            method: h.method.clone(),
            url: url(&h.url)?,
            headers: h.headers.iter().map(|(k, v)| r(v).map(|v| (k.clone(), v))).collect::<Result<_, _>>()?,
            body: h.body.as_ref().map(r).transpose()?,
            expect_status: h.expect_status.clone(),
        }),
        StepKind::Sql(s) => Ok(StepAction::Sql {
            engine: s.engine,
            url: url(&s.url)?,
            query: s.query.clone(),
            args: s.args.iter().map(r).collect::<Result<_, _>>()?,
        }),
        StepKind::Redis(s) => Ok(StepAction::Redis { url: url(&s.url)?, command: s.command.iter().map(r).collect::<Result<_, _>>()? }),
        other => Err(format!("a {} step is not an action", other.name())),
    }
}

fn prepare(cx: &RunCx, step: &Step, scope: &Scope, path: &str) -> Result<Prepared, String> {
    // The context copies every earlier step's result: build it only for a template.
    let r = |t: &Text| if t.is_literal() { Ok(t.written.clone()) } else { t.render(&scope.context(cx, None)) };
    Ok(match &step.kind {
        StepKind::Shell(_) | StepKind::Http(_) | StepKind::Sql(_) | StepKind::Redis(_) => {
            Prepared::Act(render_action(cx, &step.kind, scope, path, None)?)
        }
        StepKind::Check(c) => Prepared::Check(c.clone()),
        StepKind::WaitUntil(w) => Prepared::Wait {
            probe: match &w.probe {
                WaitProbe::Check(c) => WaitPrepared::Check(c.clone()),
                WaitProbe::Step { kind, condition } => WaitPrepared::Act(kind.clone(), condition.clone()),
            },
            interval: w.interval,
            timeout: w.timeout,
        },
        StepKind::Sleep(t) => {
            let text = r(t)?;
            Prepared::Sleep(parse_duration(text.trim()).map_err(|e| format!("sleep `{text}`: {e}"))?)
        }
        StepKind::Approve(a) => Prepared::Approve { prompt: r(&a.prompt)? },
        StepKind::Notify(n) => Prepared::Notify { receivers: n.receivers.clone(), message: r(&n.message)?, severity: n.severity.clone() },
        StepKind::Runbook(call) => {
            let mut params = Map::new();
            for (k, v) in &call.params {
                let text = r(v).map_err(|e| format!("param {k}: {e}"))?;
                params.insert(k.clone(), Json::String(text));
            }
            Prepared::Call { runbook: call.runbook.clone(), params }
        }
        StepKind::SloGate(g) => Prepared::Slo(g.clone()),
        StepKind::ForEach(_) | StepKind::Parallel(_) => unreachable!("composite steps are not leaves"),
    })
}

async fn leaf(cx: &RunCx, step: &Step, path: String, scope: &Scope) -> Result<(), Stop> {
    let mut delay = step.retry_delay;
    let mut last_error = String::new();
    let mut last_fields = Map::new();
    for try_no in 0..=step.retries {
        let prepared = match prepare(cx, step, scope, &path) {
            Ok(p) => p,
            Err(e) => return conclude_failure(cx, step, &path, scope, format!("cannot render: {e}")).await,
        };
        let attempt = cx.next_attempt(&path);
        let waiting = matches!(prepared, Prepared::Approve { .. });
        let mut rec = record(cx, step, &path, attempt, if waiting { StepStatus::Waiting } else { StepStatus::Running });
        rec.detail = cx.redactor.redact_json(&prepared.detail());
        let summary = cx.redactor.redact(&prepared.summary()).into_owned();
        let retry_note = if try_no > 0 { format!(" (attempt {})", try_no + 1) } else { String::new() };
        let ev = cx
            .event("step_started", format!("{path}: {summary}{retry_note}"))
            .step(&path)
            .data(json!({"kind": step.kind.name(), "attempt": attempt}));
        // Durability: the intent is on disk before anything acts.
        cx.save(&rec, &[ev]).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let collector = tokio::spawn(collect_output(cx.runbooks.clone(), cx.run.id, path.clone(), cx.redactor.clone(), rx));
        let act = perform(cx, step, &path, prepared, scope, &tx, attempt);
        let outcome = match step.timeout {
            Some(t) => tokio::time::timeout(t, act).await.unwrap_or_else(|_| StepOutcome {
                ok: false,
                result: Map::new(),
                error: Some(format!("timed out after {}; its process group was stopped", format_duration(t))),
            }),
            None => act.await,
        };
        drop(tx);
        let tail = match tokio::time::timeout(Duration::from_secs(1), collector).await {
            Ok(Ok(tail)) => tail,
            _ => String::new(),
        };
        let status = if outcome.ok { StepStatus::Succeeded } else { StepStatus::Failed };
        let error = outcome.error.as_deref().map(|e| cx.redactor.redact(e).into_owned());
        rec.status = status;
        rec.finished_at = Some(crate::clock::now());
        rec.output = tail;
        rec.error = error.clone();
        rec.result = cx.redactor.redact_json(&step_result(status, outcome.result.clone(), error.as_deref()));
        let took = format_duration(Duration::from_millis(
            (rec.finished_at.unwrap_or(rec.started_at) - rec.started_at).num_milliseconds().max(0) as u64,
        ));
        let ev = match &error {
            None => cx.event("step_succeeded", format!("{path} succeeded in {took}")),
            Some(e) => cx.event("step_failed", format!("{path} failed after {took}: {e}")),
        }
        .step(&path)
        .data(json!({"attempt": attempt, "exit_code": outcome.result.get("exit_code")}));
        cx.save(&rec, &[ev]).await?;
        if outcome.ok {
            // Templates read the real values; the store holds the redacted copy.
            scope.set(&step.name, &step_result(status, outcome.result, None));
            return Ok(());
        }
        last_error = error.unwrap_or_default();
        last_fields = outcome.result;
        if try_no < step.retries && !cx.cancel.is_cancelled() {
            cx.emit(vec![cx.event("step_retrying", format!("{path}: retrying in {}", format_duration(delay))).step(&path)]).await;
            cx.pause(delay).await?;
            delay = delay.saturating_mul(2);
        }
    }
    scope.set(&step.name, &step_result(StepStatus::Failed, last_fields, Some(&last_error)));
    if step.continue_on_error {
        cx.emit(vec![cx.event("step_continued", format!("{path} failed; continuing (continue_on_error)")).step(&path)]).await;
        Ok(())
    } else {
        Err(Stop::Failed { step: path, error: last_error })
    }
}

/// Batches output lines into events (a transaction per batch, not per line) and
/// returns the tail kept on the step row.
async fn collect_output(
    runbooks: Arc<Runbooks>,
    run: i64,
    path: String,
    redactor: Redactor,
    mut rx: mpsc::UnboundedReceiver<OutputLine>,
) -> String {
    let mut tail = String::new();
    let mut pending: Vec<(String, String)> = Vec::new();
    let mut recorded = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let flush = |pending: &mut Vec<(String, String)>, recorded: &mut usize| {
        let lines = std::mem::take(pending);
        let runbooks = runbooks.clone();
        let path = path.clone();
        let before = *recorded;
        *recorded += lines.len();
        async move {
            if lines.is_empty() || before >= MAX_OUTPUT_LINES {
                return;
            }
            let mut events: Vec<NewEvent> = lines
                .into_iter()
                .take(MAX_OUTPUT_LINES - before)
                .map(|(stream, line)| NewEvent::new(run, "output", line).step(&path).data(json!({"stream": stream})))
                .collect();
            if before + events.len() >= MAX_OUTPUT_LINES {
                events.push(
                    NewEvent::new(
                        run,
                        "output",
                        format!("(output beyond {MAX_OUTPUT_LINES} lines is not recorded; the step's tail keeps the end)"),
                    )
                    .step(&path),
                );
            }
            if let Err(e) = runbooks.store.append_events(&events).await {
                tracing::warn!(run, error = %e, "could not record step output");
            }
            let _ = runbooks.events.send(run);
        }
    };
    loop {
        tokio::select! {
            line = rx.recv() => match line {
                Some((stream, text)) => {
                    let text = match text.strip_suffix(super::actions::CUT) {
                        Some(head) => format!("{}{}", redactor.redact_cut(head), super::actions::CUT),
                        None => redactor.redact(&text).into_owned(),
                    };
                    tail.push_str(&text);
                    tail.push('\n');
                    if tail.len() > TAIL_CHARS * 2 {
                        let cut = tail.len() - TAIL_CHARS;
                        let cut = (cut..tail.len()).find(|i| tail.is_char_boundary(*i)).unwrap_or(tail.len());
                        tail.drain(..cut);
                    }
                    pending.push((stream.to_string(), text));
                    if pending.len() >= 200 {
                        flush(&mut pending, &mut recorded).await;
                    }
                }
                None => break,
            },
            _ = tick.tick() => flush(&mut pending, &mut recorded).await,
        }
    }
    flush(&mut pending, &mut recorded).await;
    if tail.len() > TAIL_CHARS {
        let cut = tail.len() - TAIL_CHARS;
        let cut = (cut..tail.len()).find(|i| tail.is_char_boundary(*i)).unwrap_or(tail.len());
        tail.drain(..cut);
    }
    tail
}

async fn perform(
    cx: &RunCx,
    step: &Step,
    path: &str,
    prepared: Prepared,
    scope: &Scope,
    out: &mpsc::UnboundedSender<OutputLine>,
    attempt: u32,
) -> StepOutcome {
    match prepared {
        Prepared::Act(action) => action.perform(out).await,
        Prepared::Check(name) => check(cx, &name).await,
        Prepared::Slo(gate) => slo_gate(cx, &gate).await,
        Prepared::Sleep(d) => {
            // tokio's timer has millisecond granularity: a zero sleep would still wait a tick.
            if !d.is_zero() {
                tokio::time::sleep(d).await;
            }
            StepOutcome { ok: true, result: Map::new(), error: None }
        }
        Prepared::Wait { probe, interval, timeout } => wait_until(cx, path, probe, interval, timeout, scope, out).await,
        Prepared::Approve { prompt } => approve(cx, step, path, prompt, attempt).await,
        Prepared::Notify { receivers, message, severity } => notify(cx, path, attempt, receivers, message, severity).await,
        Prepared::Call { runbook, params } => call(cx, path, runbook, params).await,
    }
}

async fn check(cx: &RunCx, name: &str) -> StepOutcome {
    match cx.runbooks.checks.run_now(name).await {
        None => StepOutcome { ok: false, result: Map::new(), error: Some(format!("check `{name}` is not configured (any more)")) },
        Some(o) => {
            let mut result = Map::new();
            result.insert("healthy".into(), Json::from(o.healthy));
            result.insert("reason".into(), o.reason.clone().map_or(Json::Null, Json::from));
            result.insert("latency_ms".into(), Json::from(o.latency.as_secs_f64() * 1000.0));
            let error = (!o.healthy).then(|| format!("check `{name}` is unhealthy: {}", o.reason.unwrap_or_default()));
            StepOutcome { ok: o.healthy, result, error }
        }
    }
}

/// A budget policy: the SLO's budget left now against the gate's minimum.
async fn slo_gate(cx: &RunCx, gate: &crate::config::runbooks::SloGate) -> StepOutcome {
    let fail = |error: String| StepOutcome { ok: false, result: Map::new(), error: Some(error) };
    let config = cx.runbooks.config.get();
    let Some(slo) = config.slos.iter().find(|s| s.name == gate.slo) else {
        return fail(format!("SLO `{}` is not configured (any more)", gate.slo));
    };
    let status = match crate::slos::status(cx.runbooks.checks.store(), slo, crate::clock::now()).await {
        Ok(s) => s,
        Err(e) => return fail(format!("SLO `{}`: cannot read its budget: {e}", gate.slo)),
    };
    let min = gate.min_budget_remaining * 100.0;
    let mut result = Map::new();
    result.insert("budget_remaining_percent".into(), status.budget_remaining_percent.map_or(Json::Null, Json::from));
    result.insert("sli_percent".into(), status.sli_percent.map_or(Json::Null, Json::from));
    result.insert("min_budget_remaining_percent".into(), Json::from(min));
    let (ok, error) = match status.budget_remaining_percent {
        Some(left) if left >= min => (true, None),
        Some(left) => (
            false,
            Some(format!(
                "SLO `{}` has {left:.1}% of its error budget left over {}, under this runbook's minimum of {min}%: the budget policy stops here",
                gate.slo, status.window
            )),
        ),
        None if gate.pass_without_data => (true, None),
        None => (
            false,
            Some(format!(
                "SLO `{}` has no events over {}: nothing shows its budget is there (`if_no_data: pass` lets it through)",
                gate.slo, status.window
            )),
        ),
    };
    StepOutcome { ok, result, error }
}

async fn wait_until(
    cx: &RunCx,
    path: &str,
    probe: WaitPrepared,
    interval: Duration,
    timeout: Duration,
    scope: &Scope,
    out: &mpsc::UnboundedSender<OutputLine>,
) -> StepOutcome {
    let deadline = Instant::now() + timeout;
    let mut polls = 0u64;
    loop {
        polls += 1;
        let (done, reason, last) = match &probe {
            WaitPrepared::Check(name) => {
                let o = check(cx, name).await;
                (o.ok, o.error.unwrap_or_default(), Json::Object(o.result))
            }
            WaitPrepared::Act(kind, condition) => match render_action(cx, kind, scope, path, None) {
                Err(e) => return StepOutcome { ok: false, result: Map::new(), error: Some(format!("cannot render: {e}")) },
                Ok(action) => {
                    // The polled action's own output is not streamed: only the verdicts are.
                    let (sink, _drain) = mpsc::unbounded_channel();
                    let o = action.perform(&sink).await;
                    let result = Json::Object(o.result.clone());
                    match (o.ok, condition.is_true(&scope.context(cx, Some(("result", result.clone()))))) {
                        (false, _) => (false, o.error.unwrap_or_default(), result),
                        (true, Ok(true)) => (true, String::new(), result),
                        (true, Ok(false)) => (false, format!("`{}` is false", condition.source), result),
                        (true, Err(e)) => (false, format!("`{}` cannot be evaluated: {e}", condition.source), result),
                    }
                }
            },
        };
        let mut result = Map::new();
        result.insert("polls".into(), Json::from(polls));
        result.insert("result".into(), last);
        if done {
            let _ = out.send(("stdout", format!("poll {polls}: condition met")));
            return StepOutcome { ok: true, result, error: None };
        }
        let _ = out.send(("stdout", format!("poll {polls}: not yet — {reason}")));
        if Instant::now() + interval > deadline {
            return StepOutcome {
                ok: false,
                result,
                error: Some(format!("not true within {} ({polls} polls); last: {reason}", format_duration(timeout))),
            };
        }
        tokio::time::sleep(interval).await;
    }
}

async fn approve(cx: &RunCx, step: &Step, path: &str, prompt: String, attempt: u32) -> StepOutcome {
    let StepKind::Approve(a) = &step.kind else { unreachable!("approve steps only") };
    let now = crate::clock::now();
    let expires = now + chrono::Duration::from_std(a.timeout).unwrap_or(chrono::Duration::hours(1));
    let request = ApprovalRequest {
        run_id: cx.run.id,
        path: path.to_string(),
        attempt,
        role: a.role,
        distinct_approver: a.distinct_approver,
        started_by: cx.run.started_by.clone(),
        requested_at: now,
        expires_at: expires,
        state: ApprovalState::Pending,
        decided_by: None,
        decided_at: None,
        comment: String::new(),
    };
    let ev = cx
        .event(
            "approval_requested",
            format!("{path} waits for approval ({} or above, until {}): {prompt}", a.role, expires.format("%H:%M:%S UTC")),
        )
        .step(path)
        .data(json!({"prompt": prompt, "role": a.role, "expires_at": expires}));
    if let Err(e) = cx.runbooks.store.request_approval(&request, &[ev]).await {
        // Nobody could decide an approval the store does not hold.
        return StepOutcome { ok: false, result: Map::new(), error: Some(format!("could not record the approval request: {e}")) };
    }
    let _ = cx.runbooks.events.send(cx.run.id);
    if !a.notify.is_empty() {
        // Someone has to know the run waits: at 3 a.m. nobody watches a terminal.
        let id = cx.run.id;
        let message = format!(
            "Run {id} of {} waits for approval ({} or above, until {}): {prompt} — `steward runs approve {id} --step {path}` or `deny`",
            cx.run.runbook,
            a.role,
            expires.format("%H:%M UTC")
        );
        let told = notify(cx, path, attempt, a.notify.clone(), message, "warning".into()).await;
        if let Some(e) = told.error {
            tracing::warn!(run = id, error = %e, "could not announce the approval request");
        }
    }
    let deadline = tokio::time::Instant::now() + a.timeout;
    let expired = Decision { state: ApprovalState::Expired, by: "steward".into(), comment: String::new() };
    let decided = loop {
        let woken = cx.runbooks.decided.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        match cx.runbooks.store.approvals(cx.run.id).await {
            Ok(list) => {
                if let Some(d) = list.into_iter().find(|x| x.path == path && x.attempt == attempt && x.state != ApprovalState::Pending) {
                    break Some(d);
                }
            }
            Err(e) => tracing::warn!(run = cx.run.id, error = %e, "cannot read the approval; retrying"),
        }
        tokio::select! {
            _ = &mut woken => {}
            _ = tokio::time::sleep(cx.runbooks.poll_every()) => {}
            _ = tokio::time::sleep_until(deadline) => {
                // The timeout decides only if no person decided first; otherwise the
                // next read finds their decision.
                match cx.runbooks.store.decide_approval(cx.run.id, path, attempt, &expired, &[]).await {
                    Ok(true) => break None,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(run = cx.run.id, error = %e, "cannot record the approval's timeout");
                        break None;
                    }
                }
            }
        }
    };
    let _ = cx.runbooks.store.set_run_status(cx.run.id, RunStatus::Running, None, None, &[]).await;
    let mut result = Map::new();
    match decided {
        Some(d) if matches!(d.state, ApprovalState::Approved | ApprovalState::Denied) => {
            let approved = d.state == ApprovalState::Approved;
            let by = d.decided_by.unwrap_or_default();
            result.insert("approved".into(), Json::from(approved));
            result.insert("by".into(), Json::from(by.clone()));
            result.insert("comment".into(), Json::from(d.comment.clone()));
            let error = (!approved)
                .then(|| format!("denied by {by}{}", if d.comment.is_empty() { String::new() } else { format!(": {}", d.comment) }));
            StepOutcome { ok: approved, result, error }
        }
        Some(d) if d.state == ApprovalState::Withdrawn => {
            StepOutcome { ok: false, result, error: Some("the approval was withdrawn".into()) }
        }
        _ => StepOutcome { ok: false, result, error: Some(format!("no decision within {}", format_duration(a.timeout))) },
    }
}

async fn notify(cx: &RunCx, path: &str, attempt: u32, receivers: Vec<String>, message: String, severity: String) -> StepOutcome {
    let external = cx.runbooks.alerting.external_url().to_string();
    let now = crate::clock::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let labels = json!({"alertname": "RunbookNotification", "runbook": cx.run.runbook, "run": cx.run.id.to_string(), "step": path, "severity": severity});
    let message = cx.redactor.redact(&message).into_owned();
    let annotations = json!({"summary": message});
    let group_key = format!("runbook/{}/{}", cx.run.id, path);
    let messages: Vec<OutboxMessage> = receivers
        .iter()
        .map(|r| OutboxMessage {
            // Stable per attempt: a step that is retried sends again, a replay does not.
            dedup_key: format!("run:{}:{path}:{attempt}:{r}", cx.run.id),
            receiver: r.clone(),
            group_key: group_key.clone(),
            status: "firing".into(),
            payload: json!({
                "version": "4", "groupKey": group_key, "truncatedAlerts": 0, "status": "firing", "receiver": r,
                "groupLabels": {"runbook": cx.run.runbook}, "commonLabels": labels, "commonAnnotations": annotations,
                "externalURL": external,
                "alerts": [{"status": "firing", "labels": labels, "annotations": annotations, "startsAt": now,
                    "endsAt": "0001-01-01T00:00:00Z", "generatorURL": format!("{external}/console/runs/{}", cx.run.id),
                    "fingerprint": format!("run-{}-{path}", cx.run.id)}],
            }),
        })
        .collect();
    match cx.runbooks.store.enqueue_messages(&messages, &[]).await {
        Ok(()) => {
            cx.runbooks.alerting.notifications_enqueued();
            let mut result = Map::new();
            result.insert("receivers".into(), Json::from(receivers));
            StepOutcome { ok: true, result, error: None }
        }
        Err(e) => StepOutcome { ok: false, result: Map::new(), error: Some(format!("cannot enqueue the notification: {e}")) },
    }
}

async fn call(cx: &RunCx, path: &str, runbook: String, params: Map<String, Json>) -> StepOutcome {
    let request = super::control::StartRequest {
        runbook,
        params,
        started_by: format!("run {}", cx.run.id),
        trigger: "runbook".into(),
        parent_run: Some(cx.run.id),
        alert_fingerprint: cx.run.alert_fingerprint.clone(),
        incident_id: cx.run.incident_id,
        trigger_key: None,
    };
    let child = match super::control::create(&cx.runbooks, request).await {
        Ok((child, rb)) => (child, rb),
        Err(e) => return StepOutcome { ok: false, result: Map::new(), error: Some(e.to_string()) },
    };
    let (run, rb) = child;
    cx.emit(vec![cx.event("child_started", format!("{path}: started run {} of runbook {}", run.id, run.runbook)).step(path)]).await;
    let child_cx = Arc::new(RunCx::new(cx.runbooks.clone(), run.clone(), rb, vec![], cx.children.lock().expect("children").child_token()));
    cx.runbooks.active.lock().expect("active runs").insert(run.id, child_cx.cancel.clone());
    // A task of its own: if this step is dropped (timeout, cancel), the child still
    // records how it ended (cancelled through `children`) instead of staying `running`.
    let status = match tokio::spawn(execute(child_cx)).await {
        Ok(status) => status,
        Err(e) => return StepOutcome { ok: false, result: Map::new(), error: Some(format!("the called run {} stopped: {e}", run.id)) },
    };
    let stored = cx.runbooks.store.run(run.id).await.ok().flatten();
    let mut result = Map::new();
    result.insert("run_id".into(), Json::from(run.id));
    result.insert("outputs".into(), stored.as_ref().map_or(Json::Null, |r| r.outputs.clone()));
    let error = (status != RunStatus::Succeeded).then(|| {
        format!("run {} of runbook {} {}: {}", run.id, run.runbook, status.as_str(), stored.and_then(|r| r.error).unwrap_or_default())
    });
    StepOutcome { ok: status == RunStatus::Succeeded, result, error }
}

/// for_each and parallel: a row for the step itself, children recorded on their own.
async fn composite(cx: &RunCx, step: &Step, path: String, scope: &Scope) -> Result<(), Stop> {
    let attempt = cx.next_attempt(&path);
    let mut rec = record(cx, step, &path, attempt, StepStatus::Running);
    let outcome = match &step.kind {
        StepKind::ForEach(f) => {
            let items: Vec<Json> = match &f.items {
                Items::List(texts) => {
                    let ctx = scope.context(cx, None);
                    match texts.iter().map(|t| t.render(&ctx).map(Json::String)).collect::<Result<Vec<_>, _>>() {
                        Ok(items) => items,
                        Err(e) => return conclude_failure(cx, step, &path, scope, format!("cannot render items: {e}")).await,
                    }
                }
                Items::Expr(e) => {
                    match e.eval(&scope.context(cx, None)).and_then(|v| serde_json::to_value(&v).map_err(|x| x.to_string())) {
                        Ok(Json::Array(items)) => items,
                        Ok(other) => {
                            return conclude_failure(cx, step, &path, scope, format!("items `{}` is not a list but {other}", e.source))
                                .await;
                        }
                        Err(err) => return conclude_failure(cx, step, &path, scope, format!("items: {err}")).await,
                    }
                }
            };
            rec.detail = cx.redactor.redact_json(&json!({"items": items, "concurrency": f.concurrency, "pause": format_duration(f.pause)}));
            let ev = cx.event("step_started", format!("{path}: for each of {} items", items.len())).step(&path);
            cx.save(&rec, &[ev]).await?;
            for_each(cx, &path, f, items, scope).await
        }
        StepKind::Parallel(children) => {
            let ev = cx.event("step_started", format!("{path}: {} steps in parallel", children.len())).step(&path);
            cx.save(&rec, &[ev]).await?;
            let prefix = path.rsplit_once('.').map_or(String::new(), |(p, _)| format!("{p}."));
            let results = futures::future::join_all(children.iter().map(|c| run_step(cx, c, format!("{prefix}{}", c.name), scope))).await;
            match results.into_iter().find_map(Result::err) {
                None => Ok(()),
                Some(stop) => Err(stop),
            }
        }
        _ => unreachable!("composite kinds only"),
    };
    rec.finished_at = Some(crate::clock::now());
    match outcome {
        Ok(()) => {
            rec.status = StepStatus::Succeeded;
            rec.result = step_result(StepStatus::Succeeded, Map::new(), None);
            cx.save(&rec, &[cx.event("step_succeeded", format!("{path} succeeded")).step(&path)]).await?;
            scope.set(&step.name, &rec.result);
            Ok(())
        }
        Err(Stop::Failed { step: failed, error }) => {
            let error = format!("`{failed}` failed: {error}");
            rec.status = StepStatus::Failed;
            rec.error = Some(error.clone());
            rec.result = step_result(StepStatus::Failed, Map::new(), Some(&error));
            cx.save(&rec, &[cx.event("step_failed", format!("{path} failed: {error}")).step(&path)]).await?;
            scope.set(&step.name, &rec.result);
            if step.continue_on_error {
                Ok(())
            } else {
                Err(Stop::Failed { step: failed, error: error.split_once(": ").map_or(error.clone(), |(_, e)| e.to_string()) })
            }
        }
        Err(other) => Err(other),
    }
}

async fn for_each(cx: &RunCx, path: &str, f: &crate::config::runbooks::ForEach, items: Vec<Json>, scope: &Scope) -> Result<(), Stop> {
    let failed: Mutex<Option<Stop>> = Mutex::new(None);
    if f.concurrency <= 1 {
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 && !f.pause.is_zero() {
                cx.emit(vec![
                    cx.event("pausing", format!("{path}: pausing {} before item {}", format_duration(f.pause), i + 1)).step(path),
                ])
                .await;
                cx.pause(f.pause).await?;
            }
            let item_scope = scope.item(&f.var, &item);
            if let Err(stop) = run_steps(cx, &f.steps, &format!("{path}[{i}]."), &item_scope).await {
                match stop {
                    Stop::Failed { .. } if !f.fail_fast => {
                        failed.lock().expect("failure").get_or_insert(stop);
                    }
                    other => return Err(other),
                }
            }
        }
    } else {
        let stop_starting = std::sync::atomic::AtomicBool::new(false);
        let runs = futures::stream::iter(items.into_iter().enumerate())
            .map(|(i, item)| {
                let item_scope = scope.item(&f.var, &item);
                let stop_starting = &stop_starting;
                let failed = &failed;
                async move {
                    if stop_starting.load(std::sync::atomic::Ordering::SeqCst) {
                        return;
                    }
                    let prefix = format!("{path}[{i}].");
                    if let Err(stop) = run_steps(cx, &f.steps, &prefix, &item_scope).await {
                        if f.fail_fast || !matches!(stop, Stop::Failed { .. }) {
                            stop_starting.store(true, std::sync::atomic::Ordering::SeqCst);
                        }
                        failed.lock().expect("failure").get_or_insert(stop);
                    } else if !f.pause.is_zero() {
                        let _ = cx.pause(f.pause).await;
                    }
                }
            })
            .buffer_unordered(f.concurrency);
        runs.collect::<Vec<()>>().await;
    }
    match failed.into_inner().expect("failure") {
        Some(stop) => Err(stop),
        None => Ok(()),
    }
}
