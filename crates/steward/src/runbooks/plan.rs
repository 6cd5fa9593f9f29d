//! `--dry-run`: the full plan of a run, rendered with the given parameters, without
//! touching anything. Values only known at run time (outputs of earlier steps) show
//! as `⟨steps.NAME.field⟩`; conditions that depend on them say so.

use std::fmt;
use std::sync::Arc;

use minijinja::value::{Object, ObjectRepr};
use serde::Serialize;
use serde_json::{Map, Value as Json, json};

use super::template::Text;
use crate::config::Config;
use crate::config::duration::format_duration;
use crate::config::runbooks::{Items, Runbook, ShellProgram, Step, StepKind, WaitProbe, env_name};
use crate::config::secret::Redactor;

/// A value that exists only once the run is under way.
#[derive(Debug)]
struct RunTime(String);

impl Object for RunTime {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn get_value(self: &Arc<Self>, key: &minijinja::Value) -> Option<minijinja::Value> {
        Some(minijinja::Value::from_object(RunTime(format!("{}.{key}", self.0))))
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "⟨{}⟩", self.0)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub runbook: String,
    pub params: Map<String, Json>,
    pub lock: Option<String>,
    pub timeout: Option<String>,
    pub steps: Vec<PlannedStep>,
    pub on_failure: Vec<PlannedStep>,
    pub outputs: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedStep {
    pub path: String,
    pub kind: &'static str,
    /// What it will do, rendered (secrets masked).
    pub action: Json,
    /// `when` and whether it is already decided.
    pub condition: Option<String>,
    /// Timeout, retries, idempotency, approval role…
    pub notes: Vec<String>,
    pub children: Vec<PlannedStep>,
}

/// Expanding more loop items than this would bury the plan; the rest are counted.
const MAX_EXPANDED_ITEMS: usize = 20;

pub fn plan(config: &Config, rb: &Runbook, params: &Map<String, Json>) -> Plan {
    let redactor = &config.redactor;
    let base = Ctx { params: params.clone(), vars: Map::new(), runbook: rb.name.clone() };
    let lock = rb.lock.as_ref().map(|t| render(t, &base.value(), redactor));
    Plan {
        runbook: rb.name.clone(),
        params: params.clone(),
        lock,
        timeout: rb.timeout.map(format_duration),
        steps: steps(&rb.steps, "", &base, redactor, config),
        on_failure: steps(&rb.on_failure, "", &base, redactor, config),
        outputs: rb.outputs.iter().map(|(k, t)| format!("{k} = {}", t.written)).collect(),
    }
}

#[derive(Clone)]
struct Ctx {
    params: Map<String, Json>,
    vars: Map<String, Json>,
    runbook: String,
}

impl Ctx {
    fn value(&self) -> minijinja::Value {
        let mut root: std::collections::BTreeMap<String, minijinja::Value> = std::collections::BTreeMap::new();
        root.insert("params".into(), minijinja::Value::from_serialize(&self.params));
        root.insert("steps".into(), minijinja::Value::from_object(RunTime("steps".into())));
        root.insert("alert".into(), minijinja::Value::from_object(RunTime("alert".into())));
        root.insert("failure".into(), minijinja::Value::from_object(RunTime("failure".into())));
        root.insert("result".into(), minijinja::Value::from_object(RunTime("result".into())));
        root.insert(
            "run".into(),
            minijinja::Value::from_serialize(json!({"id": "⟨new⟩", "runbook": self.runbook, "started_by": "⟨you⟩", "trigger": "manual"})),
        );
        for (k, v) in &self.vars {
            root.insert(k.clone(), minijinja::Value::from_serialize(v));
        }
        minijinja::Value::from(root)
    }
}

fn render(t: &Text, ctx: &minijinja::Value, redactor: &Redactor) -> String {
    let text = t.render(ctx).unwrap_or_else(|e| format!("⟨cannot render: {e}⟩"));
    redactor.redact(&text).into_owned()
}

/// A URL as the run would send it (values percent-encoded where they land).
fn render_url(t: &Text, ctx: &minijinja::Value, redactor: &Redactor) -> String {
    let text = t.render_url(ctx).unwrap_or_else(|e| format!("⟨cannot render: {e}⟩"));
    redactor.redact(&text).into_owned()
}

fn steps(list: &[Step], prefix: &str, ctx: &Ctx, redactor: &Redactor, config: &Config) -> Vec<PlannedStep> {
    list.iter().map(|s| step(s, &format!("{prefix}{}", s.name), ctx, redactor, config)).collect()
}

fn step(s: &Step, path: &str, ctx: &Ctx, redactor: &Redactor, config: &Config) -> PlannedStep {
    let value = ctx.value();
    let r = |t: &Text| render(t, &value, redactor);
    let url = |t: &Text| render_url(t, &value, redactor);
    let mut notes = Vec::new();
    if let Some(t) = s.timeout {
        notes.push(format!("timeout {}", format_duration(t)));
    }
    if s.retries > 0 {
        notes.push(format!("retries {} (first after {}, doubling)", s.retries, format_duration(s.retry_delay)));
    }
    if s.continue_on_error {
        notes.push("continues on error".into());
    }
    if s.idempotent {
        notes.push("idempotent: re-run automatically after a crash".into());
    }
    let condition = s.when.as_ref().map(|w| match w.eval(&value) {
        Ok(v) if v.to_string().contains('⟨') => format!("when {} (decided at run time)", w.source),
        Ok(v) if v.is_true() => format!("when {} → true: runs", w.source),
        Ok(_) => format!("when {} → false: skipped", w.source),
        Err(_) => format!("when {} (decided at run time)", w.source),
    });
    let mut children = Vec::new();
    let action = match &s.kind {
        StepKind::Shell(sh) => {
            let mut env = Map::new();
            for (k, v) in &ctx.params {
                env.insert(env_name(k), Json::from(super::executor::env_value(v)));
            }
            for (k, v) in &ctx.vars {
                env.insert(env_name(k), Json::from(super::executor::env_value(v)));
            }
            for (k, v) in &sh.env {
                env.insert(k.clone(), Json::from(r(v)));
            }
            let env = Json::Object(
                env.into_iter().map(|(k, v)| (k, Json::from(redactor.redact(v.as_str().unwrap_or_default()).into_owned()))).collect(),
            );
            match &sh.program {
                ShellProgram::Script { shell, text } => json!({"shell": shell, "script": text, "env": env, "workdir": sh.workdir}),
                ShellProgram::Argv(items) => json!({"argv": items.iter().map(r).collect::<Vec<_>>(), "env": env, "workdir": sh.workdir}),
            }
        }
        StepKind::Http(h) => json!({
            "method": h.method, "url": url(&h.url),
            "headers": h.headers.iter().map(|(k, v)| (k.clone(), Json::from(r(v)))).collect::<Map<_, _>>(),
            "body": h.body.as_ref().map(r),
            "expect_status": if h.expect_status.is_empty() { json!("2xx") } else { json!(h.expect_status) },
        }),
        StepKind::Sql(q) => json!({
            "target": crate::config::secret::redact_url_password(&url(&q.url)),
            "query": q.query, "args": q.args.iter().map(r).collect::<Vec<_>>(),
        }),
        StepKind::Redis(c) => json!({
            "target": crate::config::secret::redact_url_password(&url(&c.url)),
            "command": c.command.iter().map(r).collect::<Vec<_>>(),
        }),
        StepKind::Check(c) => json!({"check": c, "target": config.check(c).map(|c| c.probe.target())}),
        StepKind::SloGate(g) => {
            json!({"slo": g.slo, "min_budget_remaining_percent": g.min_budget_remaining * 100.0, "if_no_data": if g.pass_without_data { "pass" } else { "fail" }})
        }
        StepKind::WaitUntil(w) => match &w.probe {
            WaitProbe::Check(c) => {
                json!({"until": format!("check {c} is healthy"), "every": format_duration(w.interval), "timeout": format_duration(w.timeout)})
            }
            WaitProbe::Step { kind, condition } => {
                let probe = Step { kind: (**kind).clone(), name: "poll".into(), ..s.clone() };
                let polled = step(&probe, &format!("{path}.poll"), ctx, redactor, config);
                json!({"until": condition.source, "polling": polled.action, "every": format_duration(w.interval), "timeout": format_duration(w.timeout)})
            }
        },
        StepKind::Sleep(t) => json!({"sleep": r(t)}),
        StepKind::Approve(a) => {
            notes.push(format!("needs approval by {} or above within {}", a.role, format_duration(a.timeout)));
            if a.distinct_approver {
                notes.push("the person who started the run cannot approve".into());
            }
            json!({"prompt": r(&a.prompt)})
        }
        StepKind::Notify(n) => json!({"receivers": n.receivers, "message": r(&n.message)}),
        StepKind::Runbook(call) => {
            json!({"runbook": call.runbook, "params": call.params.iter().map(|(k, v)| (k.clone(), Json::from(r(v)))).collect::<Map<_, _>>()})
        }
        StepKind::Parallel(list) => {
            let prefix = path.rsplit_once('.').map_or(String::new(), |(p, _)| format!("{p}."));
            children = steps(list, &prefix, ctx, redactor, config);
            json!({"parallel": list.len()})
        }
        StepKind::ForEach(f) => {
            let items: Option<Vec<Json>> = match &f.items {
                Items::List(texts) => Some(texts.iter().map(|t| Json::from(r(t))).collect()),
                Items::Expr(e) => e.eval(&value).ok().and_then(|v| serde_json::to_value(&v).ok()).and_then(|v| match v {
                    Json::Array(items) if !items.iter().any(|i| i.to_string().contains('⟨')) => Some(items),
                    _ => None,
                }),
            };
            let mut info = json!({"as": f.var, "concurrency": f.concurrency, "pause": format_duration(f.pause), "fail_fast": f.fail_fast});
            match items {
                Some(items) => {
                    info["items"] = json!(items);
                    for (i, item) in items.iter().enumerate().take(MAX_EXPANDED_ITEMS) {
                        let mut inner = ctx.clone();
                        inner.vars.insert(f.var.clone(), item.clone());
                        children.extend(steps(&f.steps, &format!("{path}[{i}]."), &inner, redactor, config));
                    }
                    if items.len() > MAX_EXPANDED_ITEMS {
                        notes.push(format!("{} more items not expanded here", items.len() - MAX_EXPANDED_ITEMS));
                    }
                }
                None => {
                    info["items"] = json!(format!(
                        "⟨known at run time: {}⟩",
                        match &f.items {
                            Items::Expr(e) => e.source.clone(),
                            Items::List(_) => String::new(),
                        }
                    ));
                    let mut inner = ctx.clone();
                    inner.vars.insert(f.var.clone(), json!(format!("⟨{}⟩", f.var)));
                    children.extend(steps(&f.steps, &format!("{path}[i]."), &inner, redactor, config));
                }
            }
            info
        }
    };
    PlannedStep { path: path.to_string(), kind: s.kind.name(), action, condition, notes, children }
}
