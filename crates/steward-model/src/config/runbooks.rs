//! `runbooks:` — procedures as data: typed parameters, steps of a dozen kinds, rollback
//! steps, outputs, a lock, a run timeout and cron schedules.
//!
//! Everything a run could trip over that is knowable before it starts is checked here:
//! unknown step kinds and keys, template syntax, templates reading parameters that do
//! not exist or steps that have not run yet, checks, receivers and runbooks that are
//! not defined, parameter defaults of the wrong type.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value as Json;

use super::decode::{self as de, Fields};
use super::diagnostics::{Diagnostic, Diagnostics, Pos, closest};
use super::yaml::{Node, Value};
use crate::auth::Role;
use crate::runbooks::template::{Expr, Text};

#[derive(Debug, Clone)]
pub struct Runbook {
    pub name: String,
    pub description: Option<String>,
    pub owner: Option<String>,
    pub tags: Vec<String>,
    pub params: Vec<Param>,
    pub steps: Vec<Step>,
    /// Run after a failure (a step failed, or the run timed out): the rollback.
    pub on_failure: Vec<Step>,
    pub outputs: Vec<(String, Text)>,
    /// Runs whose lock renders to the same name never run at the same time.
    pub lock: Option<Text>,
    /// The whole run's budget; on expiry the running step is stopped and the run fails.
    pub timeout: Option<Duration>,
    pub schedules: Vec<RunbookSchedule>,
    pub pos: Pos,
}

impl Runbook {
    pub fn param(&self, name: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.name == name)
    }

    /// Every step, depth first, including `on_failure`.
    pub fn all_steps(&self) -> Vec<&Step> {
        fn walk<'a>(steps: &'a [Step], out: &mut Vec<&'a Step>) {
            for s in steps {
                out.push(s);
                walk(s.kind.children(), out);
            }
        }
        let mut out = Vec::new();
        walk(&self.steps, &mut out);
        walk(&self.on_failure, &mut out);
        out
    }

    pub fn step(&self, name: &str) -> Option<&Step> {
        self.all_steps().into_iter().find(|s| s.name == name)
    }
}

#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub kind: ParamKind,
    pub default: Option<Json>,
    pub required: bool,
    pub description: Option<String>,
    pub pos: Pos,
}

/// The environment variable a shell step reads a parameter or loop variable from
/// (`node_list` → `NODE_LIST`).
pub fn env_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
}

#[derive(Debug, Clone)]
pub enum ParamKind {
    String {
        pattern: Option<regex::Regex>,
    },
    Int {
        min: Option<i64>,
        max: Option<i64>,
    },
    Bool,
    Enum(Vec<String>),
    Duration,
    /// A list of strings, given as `a,b,c` on the command line.
    List,
}

impl ParamKind {
    pub fn name(&self) -> &'static str {
        match self {
            ParamKind::String { .. } => "string",
            ParamKind::Int { .. } => "int",
            ParamKind::Bool => "bool",
            ParamKind::Enum(_) => "enum",
            ParamKind::Duration => "duration",
            ParamKind::List => "list",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    /// What the step is for, in words (the prose around an imported Markdown block).
    pub description: Option<String>,
    pub kind: StepKind,
    /// Skipped unless true.
    pub when: Option<Expr>,
    pub timeout: Option<Duration>,
    /// Extra attempts after a failure.
    pub retries: u32,
    /// Wait before the first retry; doubles for each further one.
    pub retry_delay: Duration,
    /// A failure is recorded but the run goes on.
    pub continue_on_error: bool,
    /// Safe to run again when a crash leaves it unknown: declared, or implied by a kind
    /// that changes nothing (check, wait_until, sleep, approve).
    pub idempotent: bool,
    pub pos: Pos,
}

#[derive(Debug, Clone)]
pub enum StepKind {
    Shell(ShellStep),
    Http(HttpStep),
    Sql(SqlStep),
    Redis(RedisStep),
    Check(String),
    WaitUntil(WaitUntil),
    Sleep(Text),
    Approve(Approval),
    Notify(NotifyStep),
    ForEach(ForEach),
    Parallel(Vec<Step>),
    Runbook(CallRunbook),
    SloGate(SloGate),
}

impl StepKind {
    pub fn name(&self) -> &'static str {
        match self {
            StepKind::Shell(_) => "shell",
            StepKind::Http(_) => "http",
            StepKind::Sql(_) => "sql",
            StepKind::Redis(_) => "redis",
            StepKind::Check(_) => "check",
            StepKind::WaitUntil(_) => "wait_until",
            StepKind::Sleep(_) => "sleep",
            StepKind::Approve(_) => "approve",
            StepKind::Notify(_) => "notify",
            StepKind::ForEach(_) => "for_each",
            StepKind::Parallel(_) => "parallel",
            StepKind::Runbook(_) => "runbook",
            StepKind::SloGate(_) => "slo",
        }
    }

    pub fn children(&self) -> &[Step] {
        match self {
            StepKind::ForEach(f) => &f.steps,
            StepKind::Parallel(steps) => steps,
            _ => &[],
        }
    }

    /// Kinds that only observe or wait: repeating them after a crash changes nothing.
    fn inherently_idempotent(&self) -> bool {
        matches!(self, StepKind::Check(_) | StepKind::WaitUntil(_) | StepKind::Sleep(_) | StepKind::Approve(_) | StepKind::SloGate(_))
    }
}

#[derive(Debug, Clone)]
pub struct ShellStep {
    pub program: ShellProgram,
    /// Extra variables; values are templates (step outputs reach scripts this way).
    pub env: Vec<(String, Text)>,
    pub workdir: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub enum ShellProgram {
    /// Run by `shell -c`; the text is never templated, so no parameter can become code.
    Script { shell: String, text: String },
    /// Each item renders to exactly one argument; no shell parses them.
    Argv(Vec<Text>),
}

#[derive(Debug, Clone)]
pub struct HttpStep {
    pub method: String,
    pub url: Text,
    pub headers: Vec<(String, Text)>,
    pub body: Option<Text>,
    /// Accepted status codes; empty means any 2xx.
    pub expect_status: Vec<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlEngine {
    Postgres,
    Mysql,
}

#[derive(Debug, Clone)]
pub struct SqlStep {
    pub engine: SqlEngine,
    pub url: Text,
    /// Not templated: values go in as bound `args` ($1 / ?), never into the SQL text.
    pub query: String,
    pub args: Vec<Text>,
}

#[derive(Debug, Clone)]
pub struct RedisStep {
    pub url: Text,
    pub command: Vec<Text>,
}

#[derive(Debug, Clone)]
pub struct WaitUntil {
    pub probe: WaitProbe,
    pub interval: Duration,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub enum WaitProbe {
    /// A configured check, run now, until healthy.
    Check(String),
    /// An action step run repeatedly until `condition` (reading `result`) is true.
    Step { kind: Box<StepKind>, condition: Expr },
}

/// `slo: {name, min_budget_remaining: 10%}`: a budget policy. Passes while the SLO has
/// at least that share of its error budget left; otherwise fails — stopping a deploy —
/// and says how much is left. An SLO without events fails too (nothing shows the
/// budget is there) unless `if_no_data: pass`.
#[derive(Debug, Clone)]
pub struct SloGate {
    pub slo: String,
    /// A fraction: 10 % is 0.1.
    pub min_budget_remaining: f64,
    pub pass_without_data: bool,
}

#[derive(Debug, Clone)]
pub struct Approval {
    pub prompt: Text,
    pub timeout: Duration,
    /// The least role that may approve or deny.
    pub role: Role,
    /// The person who started the run may not approve it (four eyes).
    pub distinct_approver: bool,
    /// Receivers told that the run waits (with the prompt and how to answer).
    pub notify: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct NotifyStep {
    pub receivers: Vec<String>,
    pub message: Text,
    pub severity: String,
}

#[derive(Debug, Clone)]
pub struct ForEach {
    pub items: Items,
    /// The variable each item is bound to (also `$VAR` in shell steps).
    pub var: String,
    pub concurrency: usize,
    /// Between one item finishing and the next starting ("sleep 300" in rolling repairs).
    pub pause: Duration,
    /// Stop starting items after one fails.
    pub fail_fast: bool,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone)]
pub enum Items {
    List(Vec<Text>),
    Expr(Expr),
}

#[derive(Debug, Clone)]
pub struct CallRunbook {
    pub runbook: String,
    pub params: Vec<(String, Text)>,
}

#[derive(Debug, Clone)]
pub struct RunbookSchedule {
    /// As written, for display.
    pub cron: String,
    /// Parsed once, when the configuration loads.
    pub parsed: croner::Cron,
    pub timezone: chrono_tz::Tz,
    pub params: BTreeMap<String, Json>,
    pub pos: Pos,
}

const RUNBOOK_KEYS: &[&str] =
    &["name", "description", "owner", "tags", "params", "steps", "on_failure", "outputs", "lock", "timeout", "schedule"];
const PARAM_KEYS: &[&str] = &["type", "default", "required", "description", "pattern", "min", "max", "values"];
const PARAM_TYPES: &[&str] = &["string", "int", "bool", "enum", "duration", "list"];
pub const STEP_KINDS: &[&str] =
    &["shell", "http", "sql", "redis", "check", "wait_until", "sleep", "approve", "notify", "for_each", "parallel", "runbook", "slo"];
const STEP_COMMON: &[&str] = &["name", "when", "timeout", "retries", "retry_delay", "continue_on_error", "idempotent", "description"];
/// Names a parameter's environment variable may not take: they change how the shell
/// itself behaves.
const RESERVED_ENV: &[&str] =
    &["PATH", "HOME", "SHELL", "IFS", "ENV", "BASH_ENV", "LD_PRELOAD", "LD_LIBRARY_PATH", "PS4", "PWD", "USER", "CDPATH", "SHELLOPTS"];

pub const DEFAULT_APPROVAL_TIMEOUT: Duration = Duration::from_secs(3600);
pub const DEFAULT_WAIT_INTERVAL: Duration = Duration::from_secs(5);

/// What decoding found, for the rules that span runbooks and sections.
#[derive(Default)]
pub struct RunbookRefs {
    /// Every runbook name declared, also of runbooks with errors of their own (so that
    /// a call to one is not also reported as "not defined").
    pub declared: Vec<String>,
    pub checks: Vec<(String, Pos)>,
    pub receivers: Vec<(String, Pos)>,
    /// SLOs that `slo` steps gate on.
    pub slos: Vec<(String, Pos)>,
    /// (caller, callee, position)
    pub calls: Vec<(String, String, Pos)>,
}

/// Decoding state for one runbook.
struct Ctx<'a> {
    d: &'a mut Diagnostics,
    secrets: &'a mut Vec<String>,
    refs: &'a mut RunbookRefs,
    runbook: String,
    params: BTreeSet<String>,
    /// Step names declared so far, in order (templates may read earlier steps only).
    steps_seen: Vec<String>,
    /// Variables bound by enclosing `for_each` loops.
    loop_vars: Vec<String>,
    in_on_failure: bool,
}

pub fn runbook(node: &Node, d: &mut Diagnostics, secrets: &mut Vec<String>, refs: &mut RunbookRefs) -> Option<Runbook> {
    let mut f = Fields::of(node, "a runbook", d)?;
    let name = super::sections::name_of(&mut f, "runbook", d);
    refs.declared.extend(name.as_ref().map(|(n, _)| n.clone()));
    let what = name.as_ref().map_or("the runbook".to_string(), |(n, _)| format!("runbook `{n}`"));
    let description = f.take("description").and_then(|n| de::string(n, &format!("{what} description"), d));
    let owner = f.take("owner").and_then(|n| de::string(n, &format!("{what} owner"), d));
    let tags = f.take("tags").and_then(|n| de::string_list(n, &format!("{what} tags"), d)).unwrap_or_default();
    let params = f.take("params").map(|n| params(n, &what, d)).unwrap_or(Some(vec![]));
    let timeout = f.take("timeout").and_then(|n| de::duration(n, &format!("{what} timeout"), d));
    let mut cx = Ctx {
        d,
        secrets,
        refs,
        runbook: name.as_ref().map(|(n, _)| n.clone()).unwrap_or_default(),
        params: params.iter().flatten().map(|p| p.name.clone()).collect(),
        steps_seen: vec![],
        loop_vars: vec![],
        in_on_failure: false,
    };
    let lock = f.take("lock").and_then(|n| text(n, &format!("{what} lock"), &mut cx));
    let steps_node = f.require("steps", cx.d);
    let main_steps = steps_node.and_then(|n| steps(n, &format!("{what} steps"), &mut cx));
    if let (Some(n), Some(s)) = (steps_node, &main_steps)
        && s.is_empty()
    {
        cx.d.push(Diagnostic::error(n.pos.clone(), format!("{what} has no steps")).with_hint("add at least one step"));
    }
    cx.in_on_failure = true;
    let on_failure = f.take("on_failure").map_or(Some(vec![]), |n| steps(n, &format!("{what} on_failure"), &mut cx));
    cx.in_on_failure = false;
    let outputs = f.take("outputs").map_or(Some(vec![]), |n| text_map(n, &format!("{what} outputs"), &mut cx));
    let schedules = match f.take("schedule") {
        None => Some(vec![]),
        Some(n) => match &n.value {
            Value::Seq(items) => items.iter().map(|i| schedule(i, &what, params.as_deref(), cx.d)).collect(),
            _ => schedule(n, &what, params.as_deref(), cx.d).map(|s| vec![s]),
        },
    };
    f.finish(RUNBOOK_KEYS, cx.d);
    let (name, pos) = name?;
    Some(Runbook {
        name,
        description,
        owner,
        tags,
        params: params?,
        steps: main_steps?,
        on_failure: on_failure?,
        outputs: outputs?,
        lock,
        timeout,
        schedules: schedules?,
        pos,
    })
}

fn params(node: &Node, what: &str, d: &mut Diagnostics) -> Option<Vec<Param>> {
    let Value::Map(entries) = &node.value else {
        d.push(de::type_error(node, &format!("{what} params"), "a mapping of parameter names to their types"));
        return None;
    };
    let mut out = Vec::new();
    let mut ok = true;
    for (k, v) in entries {
        let name = k.scalar_text().unwrap_or_default();
        let valid = !name.is_empty()
            && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            d.push(
                Diagnostic::error(k.pos.clone(), format!("`{name}` is not a valid parameter name"))
                    .with_hint("use letters, digits and `_`, starting with a letter: templates read it as params.NAME and shells as $NAME"),
            );
            ok = false;
            continue;
        }
        if RESERVED_ENV.contains(&env_name(&name).as_str()) {
            d.push(
                Diagnostic::error(
                    k.pos.clone(),
                    format!("parameter `{name}` would reach shell steps as ${}, which the shell itself uses", env_name(&name)),
                )
                .with_hint("rename the parameter (e.g. `target_path`)"),
            );
            ok = false;
            continue;
        }
        match param(&name, v, what, d) {
            Some(p) => out.push(Param { pos: k.pos.clone(), ..p }),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn param(name: &str, node: &Node, what: &str, d: &mut Diagnostics) -> Option<Param> {
    let what = format!("{what} parameter `{name}`");
    // `name: string` is shorthand for `name: { type: string }`.
    if let Value::Str { text, .. } = &node.value {
        let kind = param_kind(text, node, &what, None, d)?;
        return Some(Param { name: name.into(), kind, default: None, required: true, description: None, pos: node.pos.clone() });
    }
    let mut f = Fields::of(node, what.clone(), d)?;
    let ty_node = f.require("type", d)?;
    let ty = de::string(ty_node, &format!("{what} type"), d)?;
    let kind = param_kind(&ty, ty_node, &what, Some(&mut f), d);
    let description = f.take("description").and_then(|n| de::string(n, &format!("{what} description"), d));
    let default_node = f.take("default");
    let required = f.take("required").map_or(Some(default_node.is_none()), |n| de::boolean(n, &format!("{what} required"), d));
    f.finish(PARAM_KEYS, d);
    let kind = kind?;
    let default = match default_node {
        None => None,
        Some(n) => {
            let raw = yaml_to_json(n);
            match coerce(&kind, &raw) {
                Ok(v) => Some(v),
                Err(e) => {
                    d.push(Diagnostic::error(n.pos.clone(), format!("{what} default: {e}")));
                    return None;
                }
            }
        }
    };
    Some(Param { name: name.into(), kind, default, required: required?, description, pos: node.pos.clone() })
}

fn param_kind(ty: &str, node: &Node, what: &str, f: Option<&mut Fields<'_>>, d: &mut Diagnostics) -> Option<ParamKind> {
    let mut empty = None;
    let f = match f {
        Some(f) => Some(f),
        None => empty.as_mut(),
    };
    match ty {
        "string" => {
            let pattern = f.and_then(|f| f.take("pattern")).and_then(|n| {
                let p = de::string(n, &format!("{what} pattern"), d)?;
                // Anchored: a pattern describes the whole value, not a substring of it.
                match regex::Regex::new(&format!("^(?:{p})$")) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        d.push(Diagnostic::error(n.pos.clone(), format!("{what} pattern is not a valid regular expression: {e}")));
                        None
                    }
                }
            });
            Some(ParamKind::String { pattern })
        }
        "int" => {
            let (min, max) = match f {
                Some(f) => (
                    f.take("min").and_then(|n| de::integer(n, &format!("{what} min"), i64::MIN..=i64::MAX, d)),
                    f.take("max").and_then(|n| de::integer(n, &format!("{what} max"), i64::MIN..=i64::MAX, d)),
                ),
                None => (None, None),
            };
            Some(ParamKind::Int { min, max })
        }
        "bool" => Some(ParamKind::Bool),
        "duration" => Some(ParamKind::Duration),
        "list" => Some(ParamKind::List),
        "enum" => {
            let Some(f) = f else {
                d.push(
                    Diagnostic::error(node.pos.clone(), format!("{what} is an enum without values"))
                        .with_hint("write { type: enum, values: [a, b] }"),
                );
                return None;
            };
            let Some(values_node) = f.take("values") else {
                d.push(Diagnostic::error(node.pos.clone(), format!("{what} is an enum without values")).with_hint("add `values: [a, b]`"));
                return None;
            };
            let values = de::string_list(values_node, &format!("{what} values"), d)?;
            if values.is_empty() {
                d.push(Diagnostic::error(values_node.pos.clone(), format!("{what} values is empty")));
                return None;
            }
            Some(ParamKind::Enum(values))
        }
        other => {
            let hint = match closest(other, PARAM_TYPES.iter().copied()) {
                Some(t) => format!("did you mean `{t}`?"),
                None => format!("parameter types: {}", PARAM_TYPES.join(", ")),
            };
            d.push(Diagnostic::error(node.pos.clone(), format!("{what} has unknown type `{other}`")).with_hint(hint));
            None
        }
    }
}

/// Checks and normalizes a parameter value (from YAML, JSON or a `-p key=value` string).
pub fn coerce(kind: &ParamKind, v: &Json) -> Result<Json, String> {
    let text = match v {
        Json::String(s) => Some(s.as_str()),
        _ => None,
    };
    match kind {
        ParamKind::String { pattern } => {
            let s = match v {
                Json::String(s) => s.clone(),
                Json::Number(n) => n.to_string(),
                Json::Bool(b) => b.to_string(),
                _ => return Err("expected a string".into()),
            };
            if let Some(p) = pattern
                && !p.is_match(&s)
            {
                let shown = p.as_str().trim_start_matches("^(?:").trim_end_matches(")$");
                return Err(format!("`{s}` does not match the pattern {shown}"));
            }
            Ok(Json::String(s))
        }
        ParamKind::Int { min, max } => {
            let i = match v {
                Json::Number(n) => n.as_i64().ok_or_else(|| format!("expected an integer, found {n}"))?,
                Json::String(s) => s.trim().parse::<i64>().map_err(|_| format!("expected an integer, found `{s}`"))?,
                _ => return Err("expected an integer".into()),
            };
            if let Some(m) = min.filter(|m| i < *m) {
                return Err(format!("{i} is below the minimum {m}"));
            }
            if let Some(m) = max.filter(|m| i > *m) {
                return Err(format!("{i} is above the maximum {m}"));
            }
            Ok(Json::from(i))
        }
        ParamKind::Bool => match (v, text.map(str::to_ascii_lowercase).as_deref()) {
            (Json::Bool(b), _) => Ok(Json::Bool(*b)),
            (_, Some("true" | "yes" | "1")) => Ok(Json::Bool(true)),
            (_, Some("false" | "no" | "0")) => Ok(Json::Bool(false)),
            _ => Err("expected true or false".into()),
        },
        ParamKind::Enum(values) => {
            let s = text.ok_or("expected one of the listed values")?;
            if values.iter().any(|x| x == s) {
                Ok(Json::String(s.to_string()))
            } else {
                Err(format!("`{s}` is not one of: {}", values.join(", ")))
            }
        }
        ParamKind::Duration => {
            let s = text.ok_or("expected a duration such as `30s` or `5m`")?;
            super::duration::parse_duration(s).map_err(|e| format!("`{s}`: {e}"))?;
            Ok(Json::String(s.to_string()))
        }
        ParamKind::List => match v {
            Json::Array(items) => items
                .iter()
                .map(|i| match i {
                    Json::String(s) => Ok(Json::String(s.clone())),
                    Json::Number(n) => Ok(Json::String(n.to_string())),
                    _ => Err("expected a list of strings".to_string()),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Json::Array),
            Json::String(s) => Ok(Json::Array(
                s.split([',', ' ', '\n']).map(str::trim).filter(|x| !x.is_empty()).map(|x| Json::String(x.to_string())).collect(),
            )),
            _ => Err("expected a list, e.g. `a,b,c`".into()),
        },
    }
}

pub fn yaml_to_json(node: &Node) -> Json {
    match &node.value {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::Float(f) => Json::from(*f),
        Value::Str { text, .. } => Json::String(text.clone()),
        Value::Seq(items) => Json::Array(items.iter().map(yaml_to_json).collect()),
        Value::Map(entries) => Json::Object(entries.iter().map(|(k, v)| (k.scalar_text().unwrap_or_default(), yaml_to_json(v))).collect()),
        #[allow(unreachable_patterns)]
        _ => Json::Null,
    }
}

fn schedule(node: &Node, what: &str, params: Option<&[Param]>, d: &mut Diagnostics) -> Option<RunbookSchedule> {
    let mut f = Fields::of(node, format!("{what} schedule"), d)?;
    let cron_node = f.require("cron", d);
    let cron = cron_node.and_then(|n| de::string(n, &format!("{what} schedule cron"), d));
    let parsed = cron.as_ref().zip(cron_node).and_then(|(c, n)| match crate::cron::parse_cron(c) {
        Ok(parsed) => Some(parsed),
        Err(e) => {
            d.push(
                Diagnostic::error(n.pos.clone(), format!("{what} schedule cron `{c}` is invalid: {e}"))
                    .with_hint("five fields: minute hour day-of-month month day-of-week, e.g. \"0 2 * * *\""),
            );
            None
        }
    });
    let tz = f.take("timezone").map_or(Some(chrono_tz::Tz::UTC), |n| {
        let s = de::string(n, &format!("{what} schedule timezone"), d)?;
        match s.parse::<chrono_tz::Tz>() {
            Ok(tz) => Some(tz),
            Err(_) => {
                d.push(
                    Diagnostic::error(n.pos.clone(), format!("{what} schedule timezone `{s}` is not an IANA time zone"))
                        .with_hint("e.g. Europe/Berlin, America/New_York, UTC"),
                );
                None
            }
        }
    });
    let mut values = BTreeMap::new();
    if let Some(n) = f.take("params") {
        match &n.value {
            Value::Map(entries) => {
                for (k, v) in entries {
                    let key = k.scalar_text().unwrap_or_default();
                    match params.and_then(|ps| ps.iter().find(|p| p.name == key)) {
                        Some(p) => match coerce(&p.kind, &yaml_to_json(v)) {
                            Ok(j) => {
                                values.insert(key, j);
                            }
                            Err(e) => d.push(Diagnostic::error(v.pos.clone(), format!("{what} schedule param `{key}`: {e}"))),
                        },
                        // Unknown names are only reported once the params themselves decoded.
                        None => {
                            if let Some(ps) = params {
                                d.push(unknown_param(&key, &k.pos, ps));
                            }
                        }
                    }
                }
            }
            _ => d.push(de::type_error(n, &format!("{what} schedule params"), "a mapping")),
        }
    }
    if let Some(ps) = params {
        for p in ps.iter().filter(|p| p.required && p.default.is_none() && !values.contains_key(&p.name)) {
            d.push(
                Diagnostic::error(node.pos.clone(), format!("{what} schedule does not give the required parameter `{}`", p.name))
                    .with_hint("add it under the schedule's `params:` or give the parameter a default"),
            );
        }
    }
    f.finish(&["cron", "timezone", "params"], d);
    Some(RunbookSchedule { cron: cron?, parsed: parsed?, timezone: tz?, params: values, pos: node.pos.clone() })
}

fn unknown_param(key: &str, pos: &Pos, params: &[Param]) -> Diagnostic {
    let hint = match closest(key, params.iter().map(|p| p.name.as_str())) {
        Some(n) => format!("did you mean `{n}`?"),
        None if params.is_empty() => "this runbook takes no parameters".into(),
        None => format!("its parameters: {}", params.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")),
    };
    Diagnostic::error(pos.clone(), format!("unknown parameter `{key}`")).with_hint(hint)
}

fn steps(node: &Node, what: &str, cx: &mut Ctx<'_>) -> Option<Vec<Step>> {
    let items = de::list(node, what, cx.d)?;
    let mut out = Vec::new();
    let mut ok = true;
    for item in items {
        match step(item, cx) {
            Some(s) => out.push(s),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn step(node: &Node, cx: &mut Ctx<'_>) -> Option<Step> {
    let mut f = Fields::of(node, format!("a step of runbook `{}`", cx.runbook), cx.d)?;
    let name = f.require("name", cx.d).and_then(|n| {
        let s = de::string(n, "the step name", cx.d)?;
        let valid = !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            cx.d.push(Diagnostic::error(n.pos.clone(), format!("`{s}` is not a valid step name")).with_hint(
                "use letters, digits, `-` and `_`; later steps read its outputs as steps.NAME (or steps[\"NAME\"] with a dash)",
            ));
            return None;
        }
        if cx.steps_seen.contains(&s) {
            cx.d.push(
                Diagnostic::error(n.pos.clone(), format!("step `{s}` is defined twice in runbook `{}`", cx.runbook))
                    .with_hint("step names are unique within a runbook: later steps and the run record refer to them"),
            );
            return None;
        }
        Some(s)
    });
    let what = match &name {
        Some(n) => format!("step `{n}` of runbook `{}`", cx.runbook),
        None => format!("a step of runbook `{}`", cx.runbook),
    };
    let when = f.take("when").and_then(|n| expr(n, &format!("{what} when"), cx));
    let timeout = f.take("timeout").and_then(|n| de::duration(n, &format!("{what} timeout"), cx.d));
    let retries = f.take("retries").map_or(Some(0), |n| de::integer(n, &format!("{what} retries"), 0..=100, cx.d)).unwrap_or(0) as u32;
    let retry_delay = f.take("retry_delay").map_or(Some(Duration::from_secs(1)), |n| de::duration(n, &format!("{what} retry_delay"), cx.d));
    let continue_on_error = f.take("continue_on_error").map_or(Some(false), |n| de::boolean(n, &format!("{what} continue_on_error"), cx.d));
    let idempotent = f.take("idempotent").and_then(|n| de::boolean(n, &format!("{what} idempotent"), cx.d));
    let description = f.take("description").and_then(|n| de::string(n, &format!("{what} description"), cx.d));
    let present: Vec<&str> = STEP_KINDS.iter().copied().filter(|k| f.has(k)).collect();
    let kind = match present.as_slice() {
        [kind] => {
            let n = f.take(kind).expect("present");
            step_kind(kind, n, &what, cx)
        }
        [] => {
            // An unknown key that looks like a kind is the likely mistake: say so there.
            let hint = format!("add exactly one of: {}", STEP_KINDS.join(", "));
            cx.d.push(Diagnostic::error(f.pos().clone(), format!("{what} says nothing to do")).with_hint(hint));
            None
        }
        many => {
            let second = f.take(many[1]).expect("present");
            for k in many {
                f.take(k);
            }
            cx.d.push(
                Diagnostic::error(second.pos.clone(), format!("{what} has several kinds ({})", many.join(", ")))
                    .with_hint("a step does one thing; split it into several steps"),
            );
            None
        }
    };
    let mut known: Vec<&str> = STEP_COMMON.to_vec();
    known.extend(STEP_KINDS);
    f.finish(&known, cx.d);
    if let Some(n) = &name {
        cx.steps_seen.push(n.clone());
    }
    let kind = kind?;
    if timeout.is_some() && matches!(kind, StepKind::ForEach(_) | StepKind::Parallel(_) | StepKind::Approve(_) | StepKind::WaitUntil(_)) {
        cx.d.push(
            Diagnostic::error(f.pos().clone(), format!("{what}: `timeout` does not apply to a {} step", kind.name()))
                .with_hint("set timeouts on the steps inside, on the wait or approval itself, or on the whole runbook"),
        );
        return None;
    }
    let idempotent = idempotent.unwrap_or_else(|| kind.inherently_idempotent());
    Some(Step {
        name: name?,
        description,
        when,
        timeout,
        retries,
        retry_delay: retry_delay?,
        continue_on_error: continue_on_error?,
        idempotent,
        kind,
        pos: f.pos().clone(),
    })
}

fn step_kind(kind: &str, n: &Node, what: &str, cx: &mut Ctx<'_>) -> Option<StepKind> {
    match kind {
        "shell" => shell(n, what, cx).map(StepKind::Shell),
        "http" => http(n, what, cx).map(StepKind::Http),
        "sql" => sql(n, what, cx).map(StepKind::Sql),
        "redis" => redis(n, what, cx).map(StepKind::Redis),
        "check" => {
            let c = de::string(n, &format!("{what} check"), cx.d)?;
            cx.refs.checks.push((c.clone(), n.pos.clone()));
            Some(StepKind::Check(c))
        }
        "slo" => {
            let mut f = Fields::of(n, format!("{what} slo"), cx.d)?;
            let name = f.require("name", cx.d).and_then(|v| de::string(v, &format!("{what} slo name"), cx.d));
            let min = f
                .require("min_budget_remaining", cx.d)
                .and_then(|v| super::slos::share(v, &format!("{what} slo min_budget_remaining"), true, cx.d));
            let pass_without_data = match f.take("if_no_data") {
                None => Some(false),
                Some(v) => match de::string(v, &format!("{what} slo if_no_data"), cx.d)?.as_str() {
                    "pass" => Some(true),
                    "fail" => Some(false),
                    other => {
                        cx.d.push(
                            Diagnostic::error(v.pos.clone(), format!("{what} slo if_no_data `{other}` is not known"))
                                .with_hint("use `fail` (the default) or `pass`"),
                        );
                        None
                    }
                },
            };
            f.finish(&["name", "min_budget_remaining", "if_no_data"], cx.d);
            let name = name?;
            cx.refs.slos.push((name.clone(), n.pos.clone()));
            Some(StepKind::SloGate(SloGate { slo: name, min_budget_remaining: min?, pass_without_data: pass_without_data? }))
        }
        "sleep" => {
            let t = text(n, &format!("{what} sleep"), cx)?;
            if t.is_literal()
                && let Err(e) = super::duration::parse_duration(&t.written)
            {
                cx.d.push(Diagnostic::error(n.pos.clone(), format!("{what} sleep: {e}")).with_hint("e.g. `30s`, `5m`"));
                return None;
            }
            Some(StepKind::Sleep(t))
        }
        "wait_until" => wait_until(n, what, cx).map(StepKind::WaitUntil),
        "approve" => approve(n, what, cx).map(StepKind::Approve),
        "notify" => {
            let mut f = Fields::of(n, format!("{what} notify"), cx.d)?;
            let receivers = f.require("receivers", cx.d).and_then(|r| {
                let list = de::string_list(r, &format!("{what} receivers"), cx.d)?;
                for name in &list {
                    cx.refs.receivers.push((name.clone(), r.pos.clone()));
                }
                Some(list)
            });
            let message = f.require("message", cx.d).and_then(|m| text(m, &format!("{what} message"), cx));
            let severity =
                f.take("severity").and_then(|s| de::string(s, &format!("{what} severity"), cx.d)).unwrap_or_else(|| "info".into());
            f.finish(&["receivers", "message", "severity"], cx.d);
            Some(StepKind::Notify(NotifyStep { receivers: receivers?, message: message?, severity }))
        }
        "for_each" => for_each(n, what, cx).map(StepKind::ForEach),
        "parallel" => {
            let steps = steps(n, &format!("{what} parallel"), cx)?;
            if steps.len() < 2 {
                cx.d.push(
                    Diagnostic::error(n.pos.clone(), format!("{what} runs fewer than two steps in parallel"))
                        .with_hint("list the steps to run at the same time"),
                );
            }
            Some(StepKind::Parallel(steps))
        }
        "runbook" => {
            let (name_node, params_node) = match &n.value {
                Value::Str { .. } => (n, None),
                _ => {
                    let mut f = Fields::of(n, format!("{what} runbook"), cx.d)?;
                    let name = f.require("name", cx.d)?;
                    let params = f.take("params");
                    f.finish(&["name", "params"], cx.d);
                    (name, params)
                }
            };
            let callee = de::string(name_node, &format!("{what} runbook name"), cx.d)?;
            cx.refs.calls.push((cx.runbook.clone(), callee.clone(), name_node.pos.clone()));
            let params = params_node.map_or(Some(vec![]), |p| text_map(p, &format!("{what} params"), cx))?;
            Some(StepKind::Runbook(CallRunbook { runbook: callee, params }))
        }
        _ => unreachable!("kinds come from STEP_KINDS"),
    }
}

fn shell(n: &Node, what: &str, cx: &mut Ctx<'_>) -> Option<ShellStep> {
    if let Value::Str { text, .. } = &n.value {
        check_script(text, n, what, cx.d);
        return Some(ShellStep { program: ShellProgram::Script { shell: "sh".into(), text: text.clone() }, env: vec![], workdir: None });
    }
    let mut f = Fields::of(n, format!("{what} shell"), cx.d)?;
    let script = f.take("script");
    let argv = f.take("argv");
    let interpreter = f.take("shell").and_then(|s| de::string(s, &format!("{what} shell"), cx.d));
    let env = f.take("env").map_or(Some(vec![]), |e| env_map(e, &format!("{what} env"), cx));
    let workdir = f.take("workdir").and_then(|w| de::string(w, &format!("{what} workdir"), cx.d)).map(PathBuf::from);
    f.finish(&["script", "argv", "shell", "env", "workdir"], cx.d);
    let program = match (script, argv) {
        (Some(s), None) => {
            let text = de::string(s, &format!("{what} script"), cx.d)?;
            check_script(&text, s, what, cx.d);
            Some(ShellProgram::Script { shell: interpreter.unwrap_or_else(|| "sh".into()), text })
        }
        (None, Some(a)) => {
            let items = de::list(a, &format!("{what} argv"), cx.d)?;
            if items.is_empty() {
                cx.d.push(
                    Diagnostic::error(a.pos.clone(), format!("{what} argv is empty")).with_hint("give the program and its arguments"),
                );
                return None;
            }
            let argv = items.iter().map(|i| text(i, &format!("{what} argv item"), cx)).collect::<Option<Vec<_>>>()?;
            if let Some(i) = interpreted_template(&argv) {
                cx.d.push(
                    Diagnostic::error(
                        items[i].pos.clone(),
                        format!("{what} argv item {i} is code that `{}` runs, and it uses a template", program_name(&argv)),
                    )
                    .with_hint(
                        "a parameter there would become code; pass it as an environment variable instead: \
                         env: { MSG: \"{{ params.msg }}\" } and read \"$MSG\" in the code (os.environ[\"MSG\"] in Python, $ENV{MSG} in Perl)",
                    ),
                );
                return None;
            }
            Some(ShellProgram::Argv(argv))
        }
        (Some(_), Some(a)) => {
            cx.d.push(Diagnostic::error(a.pos.clone(), format!("{what} has both `script` and `argv`")).with_hint("keep one"));
            None
        }
        (None, None) => {
            cx.d.push(
                Diagnostic::error(n.pos.clone(), format!("{what} has neither `script` nor `argv`"))
                    .with_hint("write `script: |` with shell text, or `argv: [program, arg, …]`"),
            );
            None
        }
    };
    Some(ShellStep { program: program?, env: env?, workdir })
}

/// The program an argv runs, by its file name (`/usr/bin/python3` → `python3`).
fn program_name(argv: &[Text]) -> String {
    argv.first().map_or_else(String::new, |t| t.written.rsplit('/').next().unwrap_or_default().to_string())
}

/// The index of an argv item that an interpreter will run as code *and* that is
/// templated, if any: the text after `-c` for shells (sh, bash, dash, zsh, ksh, ash,
/// busybox), after `-c` for Python, `-e`/`-E` for Perl, `-e` for Ruby, `-e`/`-p` for
/// Node, `-r` for PHP, the program of awk, `-c`/`-e` for psql and mysql; every item of
/// ssh's remote command; and the command of `kubectl exec … --` or `docker exec` /
/// `podman exec`, checked again as an argv of its own. Wrappers such as `env`, `sudo`,
/// `nice`, `timeout` are looked through. The item counts, not the program: an argv item
/// is one argument, but to an interpreter that argument is source code.
pub fn interpreted_template(argv: &[Text]) -> Option<usize> {
    code_items(argv, 0).into_iter().find(|&i| !argv[i].is_literal())
}

/// Indexes (into the original argv, offset by `base`) of items an interpreter runs.
fn code_items(argv: &[Text], base: usize) -> Vec<usize> {
    let w = |i: usize| argv.get(i).map_or("", |t| t.written.as_str());
    let name = |i: usize| w(i).rsplit('/').next().unwrap_or_default().to_string();
    // Look through wrappers that run the rest of the line as a command.
    let mut at = 0;
    loop {
        match name(at).as_str() {
            "env" => {
                at += 1;
                while w(at).starts_with('-') || (w(at).contains('=') && !w(at).starts_with('=')) {
                    at += 1;
                }
            }
            "sudo" | "doas" | "nice" | "nohup" | "setsid" | "ionice" | "stdbuf" | "time" | "exec" | "command" | "chrt" | "taskset" => {
                at += 1;
                while w(at).starts_with('-') {
                    // Options with a separate value (sudo -u root, nice -n 5).
                    let takes_value = matches!(w(at), "-u" | "-g" | "-n" | "-c" | "-p" | "-C" | "-U" | "-h" | "-D" | "-r" | "-t");
                    at += if takes_value { 2 } else { 1 };
                }
            }
            "timeout" => {
                at += 1;
                while w(at).starts_with('-') {
                    at += if matches!(w(at), "-s" | "-k" | "--signal" | "--kill-after") { 2 } else { 1 };
                }
                at += 1; // the duration
            }
            _ => break,
        }
        if at >= argv.len() {
            return vec![];
        }
    }
    let program = name(at);
    let rest = at + 1;
    // The first item after the option that introduces code (`-c`, `-e`, …).
    let after_flag = |flags: &[&str], combined: Option<char>| -> Vec<usize> {
        let mut i = rest;
        while i < argv.len() {
            let item = w(i);
            if flags.contains(&item) {
                return vec![base + i + 1].into_iter().filter(|&j| j - base < argv.len()).collect();
            }
            // Combined short flags such as `-ec` or `-xc`: the code follows.
            if let Some(c) = combined
                && item.starts_with('-')
                && !item.starts_with("--")
                && item.contains(c)
            {
                return vec![base + i + 1].into_iter().filter(|&j| j - base < argv.len()).collect();
            }
            // `--flag=code` forms carry the code in the same item.
            if flags.iter().any(|f| f.starts_with("--") && item.starts_with(&format!("{f}="))) {
                return vec![base + i];
            }
            i += 1;
        }
        vec![]
    };
    let shell = |program: &str| matches!(program, "sh" | "bash" | "dash" | "zsh" | "ksh" | "mksh" | "ash" | "busybox" | "fish");
    match program.as_str() {
        p if shell(p) => after_flag(&["-c"], Some('c')),
        p if p == "python" || p.starts_with("python3") || p.starts_with("python2") || p == "pypy3" => after_flag(&["-c"], None),
        "perl" => after_flag(&["-e", "-E"], Some('e')),
        "ruby" => after_flag(&["-e"], Some('e')),
        "node" | "nodejs" | "deno" | "bun" => after_flag(&["-e", "--eval", "-p", "--print"], None),
        "php" => after_flag(&["-r"], None),
        "psql" => after_flag(&["-c", "--command"], None),
        "mysql" | "mariadb" => after_flag(&["-e", "--execute"], None),
        "awk" | "gawk" | "mawk" | "nawk" => {
            // The program is the first operand, unless it comes from a file (-f).
            let mut i = rest;
            while i < argv.len() && w(i).starts_with('-') {
                if w(i) == "-f" {
                    return vec![];
                }
                i += if matches!(w(i), "-F" | "-v") { 2 } else { 1 };
            }
            if i < argv.len() { vec![base + i] } else { vec![] }
        }
        "ssh" => {
            // Every item after the destination is joined into a remote shell command.
            let mut i = rest;
            while i < argv.len() && w(i).starts_with('-') {
                let takes_value = w(i).len() == 2 && "BbcDEeFIiJLlmOopQRSWw".contains(&w(i)[1..]);
                i += if takes_value { 2 } else { 1 };
            }
            ((i + 1)..argv.len()).map(|j| base + j).collect()
        }
        "kubectl" | "oc" => match argv.iter().position(|t| t.written == "--") {
            Some(dash) if argv[rest..].iter().any(|t| t.written == "exec") => code_items(&argv[dash + 1..], base + dash + 1),
            _ => vec![],
        },
        "docker" | "podman" | "nerdctl" if w(rest) == "exec" => {
            let mut i = rest + 1;
            while i < argv.len() && w(i).starts_with('-') {
                let takes_value = matches!(w(i), "-e" | "--env" | "-u" | "--user" | "-w" | "--workdir" | "--env-file" | "--detach-keys");
                i += if takes_value { 2 } else { 1 };
            }
            // Then the container, then its command.
            if i + 1 < argv.len() { code_items(&argv[i + 1..], base + i + 1) } else { vec![] }
        }
        _ => vec![],
    }
}

/// Scripts are not templates (that is what keeps parameters from becoming code); a
/// script that reads `{{ params.x }}` would run with that literal text, so say how.
fn check_script(text: &str, n: &Node, what: &str, d: &mut Diagnostics) {
    let re = regex::Regex::new(r"\{\{-?\s*(params|steps|item|run|alert)\b\.?([A-Za-z0-9_]*)").expect("valid");
    if let Some(c) = re.captures(text) {
        let root = &c[1];
        let hint = match root {
            "params" => format!("parameters reach scripts as environment variables: write \"${}\"", env_name(&c[2])),
            _ => "pass values from templates through `env:` (e.g. env: { LAG: \"{{ steps.lag.stdout }}\" }) and read \"$LAG\"".into(),
        };
        d.push(
            Diagnostic::error(n.pos.clone(), format!("{what} script uses a template (`{{{{ {root}…`), but scripts are never templated"))
                .with_hint(hint),
        );
    }
}

fn env_map(n: &Node, what: &str, cx: &mut Ctx<'_>) -> Option<Vec<(String, Text)>> {
    let pairs = text_map(n, what, cx)?;
    for (k, _) in &pairs {
        let valid =
            !k.is_empty() && !k.starts_with(|c: char| c.is_ascii_digit()) && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            cx.d.push(Diagnostic::error(n.pos.clone(), format!("{what}: `{k}` is not a valid environment variable name")));
            return None;
        }
    }
    Some(pairs)
}

fn http(n: &Node, what: &str, cx: &mut Ctx<'_>) -> Option<HttpStep> {
    if let Value::Str { .. } = &n.value {
        let url = text(n, &format!("{what} url"), cx)?;
        return Some(HttpStep { method: "GET".into(), url, headers: vec![], body: None, expect_status: vec![] });
    }
    let mut f = Fields::of(n, format!("{what} http"), cx.d)?;
    let url = f.require("url", cx.d).and_then(|u| text(u, &format!("{what} url"), cx));
    let method = f.take("method").map_or(Some("GET".into()), |m| {
        let s = de::string(m, &format!("{what} method"), cx.d)?.to_ascii_uppercase();
        if !["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"].contains(&s.as_str()) {
            cx.d.push(Diagnostic::error(m.pos.clone(), format!("{what} method `{s}` is not an HTTP method")));
            return None;
        }
        Some(s)
    });
    let headers = f.take("headers").map_or(Some(vec![]), |h| text_map(h, &format!("{what} headers"), cx));
    let body = f.take("body").and_then(|b| match &b.value {
        // A mapping body is sent as JSON.
        Value::Map(_) | Value::Seq(_) => match Text::parse(&yaml_to_json(b).to_string(), cx.secrets) {
            Ok(t) => check_variables(t.variables(), b, &format!("{what} body"), cx).then_some(t),
            Err(e) => {
                cx.d.push(Diagnostic::error(b.pos.clone(), format!("{what} body: invalid template: {}", e.message)));
                None
            }
        },
        _ => text(b, &format!("{what} body"), cx),
    });
    let expect_status = f.take("expect_status").map_or(Some(vec![]), |e| {
        let codes = match &e.value {
            Value::Int(_) => vec![e.clone()],
            _ => de::list(e, &format!("{what} expect_status"), cx.d)?.to_vec(),
        };
        codes.iter().map(|c| de::integer(c, &format!("{what} expect_status"), 100..=599, cx.d).map(|c| c as u16)).collect()
    });
    f.finish(&["url", "method", "headers", "body", "expect_status"], cx.d);
    Some(HttpStep { method: method?, url: url?, headers: headers?, body, expect_status: expect_status? })
}

fn sql(n: &Node, what: &str, cx: &mut Ctx<'_>) -> Option<SqlStep> {
    let mut f = Fields::of(n, format!("{what} sql"), cx.d)?;
    let url_node = f.require("url", cx.d);
    let url = url_node.and_then(|u| text(u, &format!("{what} url"), cx));
    let engine = url.as_ref().zip(url_node).and_then(|(u, node)| {
        let scheme = u.written.split("://").next().unwrap_or_default();
        match scheme {
            "postgres" | "postgresql" => Some(SqlEngine::Postgres),
            "mysql" | "mariadb" => Some(SqlEngine::Mysql),
            _ => {
                cx.d.push(
                    Diagnostic::error(node.pos.clone(), format!("{what} url must start with postgres:// or mysql://"))
                        .with_hint("the scheme says which database speaks; write it literally (templates may fill in the rest)"),
                );
                None
            }
        }
    });
    if let Some(node) = url_node
        && let Some(u) = &url
        && matches!(crate::config::secret::resolve_url(&u.written, &mut vec![]), Err(crate::config::secret::UrlError::InlinePassword))
    {
        cx.d.push(
            Diagnostic::error(node.pos.clone(), format!("{what} url contains an inline password"))
                .with_hint("secrets are never written inline: use `${env:NAME}` or `${file:/path}` in place of the password"),
        );
    }
    let query = f.require("query", cx.d).and_then(|q| {
        let text = de::string(q, &format!("{what} query"), cx.d)?;
        // The query is sent as written; a template in it would be sent literally (and,
        // were it rendered, would be SQL injection). Values go in as bound args.
        if text.contains("{{") || text.contains("{%") {
            cx.d.push(
                Diagnostic::error(q.pos.clone(), format!("{what} query uses a template, but SQL text is never templated"))
                    .with_hint("bind values instead: `args: [\"{{ params.x }}\"]` and write $1 (PostgreSQL) or ? (MySQL) in the query"),
            );
            return None;
        }
        Some(text)
    });
    let args = f.take("args").map_or(Some(vec![]), |a| {
        let items = de::list(a, &format!("{what} args"), cx.d)?;
        items.iter().map(|i| text(i, &format!("{what} args item"), cx)).collect::<Option<Vec<_>>>()
    });
    f.finish(&["url", "query", "args"], cx.d);
    Some(SqlStep { engine: engine?, url: url?, query: query?, args: args? })
}

fn redis(n: &Node, what: &str, cx: &mut Ctx<'_>) -> Option<RedisStep> {
    let mut f = Fields::of(n, format!("{what} redis"), cx.d)?;
    let url = f.require("url", cx.d).and_then(|u| text(u, &format!("{what} url"), cx));
    let command = f.require("command", cx.d).and_then(|c| match &c.value {
        Value::Str { text: s, .. } => s.split_whitespace().map(|w| Text::parse(w, cx.secrets).ok()).collect::<Option<Vec<_>>>(),
        _ => {
            let items = de::list(c, &format!("{what} command"), cx.d)?;
            items.iter().map(|i| text(i, &format!("{what} command item"), cx)).collect::<Option<Vec<_>>>()
        }
    });
    f.finish(&["url", "command"], cx.d);
    if let Some(u) = &url {
        // A URL that is all template (`{{ params.url }}`) is checked when it renders.
        if !u.written.starts_with("redis://") && !u.written.starts_with("rediss://") && !u.written.starts_with("{{") {
            cx.d.push(Diagnostic::error(f.pos().clone(), format!("{what} url must start with redis:// or rediss://")));
            return None;
        }
    }
    let command = command?;
    if command.is_empty() {
        cx.d.push(Diagnostic::error(f.pos().clone(), format!("{what} command is empty")).with_hint("e.g. command: [MEMORY, PURGE]"));
        return None;
    }
    // EVAL's script is Lua that the server runs: a template there is code injection.
    let verb = command[0].written.to_ascii_uppercase();
    let script_at = match verb.as_str() {
        "EVAL" | "EVAL_RO" => Some(1),
        "SCRIPT" | "FUNCTION" => Some(2),
        _ => None,
    };
    if script_at.and_then(|i| command.get(i)).is_some_and(|t| !t.is_literal()) {
        cx.d.push(Diagnostic::error(f.pos().clone(), format!("{what} {verb} runs Lua code, and its script uses a template")).with_hint(
            "pass values as the script's KEYS and ARGV: command: [EVAL, \"return redis.call('GET', KEYS[1])\", 1, \"{{ params.key }}\"]",
        ));
        return None;
    }
    Some(RedisStep { url: url?, command })
}

fn wait_until(n: &Node, what: &str, cx: &mut Ctx<'_>) -> Option<WaitUntil> {
    let mut f = Fields::of(n, format!("{what} wait_until"), cx.d)?;
    let interval = f.take("interval").map_or(Some(DEFAULT_WAIT_INTERVAL), |i| de::duration(i, &format!("{what} interval"), cx.d));
    let timeout = f.require("timeout", cx.d).and_then(|t| de::duration(t, &format!("{what} timeout"), cx.d));
    let check = f.take("check");
    let action: Vec<&str> = ["shell", "http", "sql", "redis"].into_iter().filter(|k| f.has(k)).collect();
    let probe = match (check, action.as_slice()) {
        (Some(c), []) => {
            let name = de::string(c, &format!("{what} check"), cx.d)?;
            cx.refs.checks.push((name.clone(), c.pos.clone()));
            if let Some(cond) = f.take("condition") {
                cx.d.push(
                    Diagnostic::error(cond.pos.clone(), format!("{what} waits for a check, which has its own conditions"))
                        .with_hint("remove `condition`"),
                );
            }
            Some(WaitProbe::Check(name))
        }
        (None, [kind]) => {
            let node = f.take(kind).expect("present");
            let kind = step_kind(kind, node, what, cx);
            // `result` is the output of the polled action.
            cx.loop_vars.push("result".into());
            let condition = f.require("condition", cx.d).and_then(|c| expr(c, &format!("{what} condition"), cx));
            cx.loop_vars.pop();
            Some(WaitProbe::Step { kind: Box::new(kind?), condition: condition? })
        }
        _ => {
            for k in action {
                f.take(k);
            }
            cx.d.push(
                Diagnostic::error(n.pos.clone(), format!("{what} needs exactly one thing to poll"))
                    .with_hint("write `check: NAME`, or one of shell/http/sql/redis with a `condition` on its `result`"),
            );
            None
        }
    };
    f.finish(&["check", "shell", "http", "sql", "redis", "condition", "interval", "timeout"], cx.d);
    Some(WaitUntil { probe: probe?, interval: interval?, timeout: timeout? })
}

fn approve(n: &Node, what: &str, cx: &mut Ctx<'_>) -> Option<Approval> {
    if let Value::Str { .. } = &n.value {
        let prompt = text(n, &format!("{what} prompt"), cx)?;
        return Some(Approval {
            prompt,
            timeout: DEFAULT_APPROVAL_TIMEOUT,
            role: Role::Operator,
            distinct_approver: false,
            notify: vec![],
        });
    }
    let mut f = Fields::of(n, format!("{what} approve"), cx.d)?;
    let prompt = f.require("prompt", cx.d).and_then(|p| text(p, &format!("{what} prompt"), cx));
    let timeout = f.take("timeout").map_or(Some(DEFAULT_APPROVAL_TIMEOUT), |t| de::duration(t, &format!("{what} timeout"), cx.d));
    let role = f.take("role").map_or(Some(Role::Operator), |r| {
        let s = de::string(r, &format!("{what} role"), cx.d)?;
        match s.parse::<Role>() {
            Ok(Role::Viewer) | Err(_) => {
                cx.d.push(Diagnostic::error(r.pos.clone(), format!("{what} role `{s}` cannot approve")).with_hint("use operator or admin"));
                None
            }
            Ok(role) => Some(role),
        }
    });
    let distinct = f.take("distinct_approver").map_or(Some(false), |b| de::boolean(b, &format!("{what} distinct_approver"), cx.d));
    let notify = f.take("notify").map_or(Some(vec![]), |r| {
        let list = de::string_list(r, &format!("{what} notify"), cx.d)?;
        for name in &list {
            cx.refs.receivers.push((name.clone(), r.pos.clone()));
        }
        Some(list)
    });
    f.finish(&["prompt", "timeout", "role", "distinct_approver", "notify"], cx.d);
    Some(Approval { prompt: prompt?, timeout: timeout?, role: role?, distinct_approver: distinct?, notify: notify? })
}

fn for_each(n: &Node, what: &str, cx: &mut Ctx<'_>) -> Option<ForEach> {
    let mut f = Fields::of(n, format!("{what} for_each"), cx.d)?;
    let items = f.require("items", cx.d).and_then(|i| match &i.value {
        Value::Seq(list) => list.iter().map(|x| text(x, &format!("{what} items"), cx)).collect::<Option<Vec<_>>>().map(Items::List),
        _ => expr(i, &format!("{what} items"), cx).map(Items::Expr),
    });
    let var = f.take("as").map_or(Some("item".to_string()), |a| {
        let s = de::string(a, &format!("{what} as"), cx.d)?;
        if s.is_empty()
            || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || ["params", "steps", "run", "alert"].contains(&s.as_str())
        {
            cx.d.push(
                Diagnostic::error(a.pos.clone(), format!("{what}: `{s}` cannot name the loop variable"))
                    .with_hint("use a plain name such as `node`"),
            );
            return None;
        }
        Some(s)
    });
    let concurrency = f.take("concurrency").map_or(Some(1), |c| de::integer(c, &format!("{what} concurrency"), 1..=1000, cx.d));
    let pause = f.take("pause").map_or(Some(Duration::ZERO), |p| de::duration(p, &format!("{what} pause"), cx.d));
    let fail_fast = f.take("fail_fast").map_or(Some(true), |b| de::boolean(b, &format!("{what} fail_fast"), cx.d));
    cx.loop_vars.push(var.clone().unwrap_or_else(|| "item".into()));
    let steps = f.require("steps", cx.d).and_then(|s| steps(s, &format!("{what} steps"), cx));
    cx.loop_vars.pop();
    f.finish(&["items", "as", "concurrency", "pause", "fail_fast", "steps"], cx.d);
    Some(ForEach { items: items?, var: var?, concurrency: concurrency? as usize, pause: pause?, fail_fast: fail_fast?, steps: steps? })
}

fn text_map(n: &Node, what: &str, cx: &mut Ctx<'_>) -> Option<Vec<(String, Text)>> {
    let Value::Map(entries) = &n.value else {
        cx.d.push(de::type_error(n, what, "a mapping"));
        return None;
    };
    let mut out = Vec::new();
    let mut ok = true;
    for (k, v) in entries {
        let key = k.scalar_text().unwrap_or_default();
        match text(v, &format!("{what}.{key}"), cx) {
            Some(t) => out.push((key, t)),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// A templated string, its syntax and the variables it reads checked now.
fn text(n: &Node, what: &str, cx: &mut Ctx<'_>) -> Option<Text> {
    let s = de::text(n, what, cx.d)?;
    match Text::parse(&s, cx.secrets) {
        Ok(t) => check_variables(t.variables(), n, what, cx).then_some(t),
        Err(e) => {
            cx.d.push(Diagnostic::error(n.pos.clone(), format!("{what}: invalid template: {}", e.message)));
            None
        }
    }
}

fn expr(n: &Node, what: &str, cx: &mut Ctx<'_>) -> Option<Expr> {
    let s = de::text(n, what, cx.d)?;
    match Expr::parse(&s) {
        Ok(e) => check_variables(e.variables(), n, what, cx).then_some(e),
        Err(e) => {
            cx.d.push(Diagnostic::error(n.pos.clone(), format!("{what}: invalid expression: {}", e.message)));
            None
        }
    }
}

/// Every variable a template reads must exist when it renders: a declared parameter,
/// a step that ran before, the loop variable, `run`, `alert` (empty unless an alert
/// started the run), `failure` in rollback steps.
fn check_variables(vars: BTreeSet<String>, n: &Node, what: &str, cx: &mut Ctx<'_>) -> bool {
    let mut ok = true;
    for var in vars {
        let mut parts = var.split('.');
        let root = parts.next().unwrap_or_default();
        let child = parts.next();
        let problem = match root {
            "params" => match child {
                Some(p) if !cx.params.contains(p) => Some((
                    format!("{what} reads `params.{p}`, which runbook `{}` does not declare", cx.runbook),
                    match closest(p, cx.params.iter().map(String::as_str)) {
                        Some(c) => format!("did you mean `params.{c}`?"),
                        None => "declare it under the runbook's `params:`".into(),
                    },
                )),
                _ => None,
            },
            "steps" => match child {
                Some(s) if !cx.steps_seen.iter().any(|x| x == s) => Some((
                    format!("{what} reads `steps.{s}`, which is not a step that runs before it"),
                    match closest(s, cx.steps_seen.iter().map(String::as_str)) {
                        Some(c) => format!("did you mean `steps.{c}`?"),
                        None => "templates can read the outputs of earlier steps only".into(),
                    },
                )),
                _ => None,
            },
            "run" | "alert" => None,
            "failure" if cx.in_on_failure => None,
            other if cx.loop_vars.iter().any(|v| v == other) => None,
            other => {
                let mut known = vec!["params", "steps", "run", "alert"];
                if cx.in_on_failure {
                    known.push("failure");
                }
                known.extend(cx.loop_vars.iter().map(String::as_str));
                Some((format!("{what} reads `{other}`, which is not defined"), format!("templates can read: {}", known.join(", "))))
            }
        };
        if let Some((message, hint)) = problem {
            cx.d.push(Diagnostic::error(n.pos.clone(), message).with_hint(hint));
            ok = false;
        }
    }
    ok
}

/// Rules across runbooks and sections: unique names, existing checks, receivers and
/// runbooks, no runbook calling itself (directly or through others).
pub fn cross_check(runbooks: &[Runbook], refs: &RunbookRefs, checks: &[&str], receivers: &[&str], d: &mut Diagnostics) {
    let mut seen: HashMap<&str, &Pos> = HashMap::new();
    for r in runbooks {
        if let Some(first) = seen.insert(&r.name, &r.pos) {
            d.push(
                Diagnostic::error(r.pos.clone(), format!("runbook `{}` is defined twice", r.name))
                    .with_hint(format!("the first definition is at {first}; names are unique across all files")),
            );
        }
    }
    for (check, pos) in &refs.checks {
        if !checks.contains(&check.as_str()) {
            let hint =
                closest(check, checks.iter().copied()).map_or("define it under `checks:`".to_string(), |c| format!("did you mean `{c}`?"));
            d.push(Diagnostic::error(pos.clone(), format!("check `{check}` is not defined")).with_hint(hint));
        }
    }
    for (receiver, pos) in &refs.receivers {
        if !receivers.contains(&receiver.as_str()) {
            let hint = closest(receiver, receivers.iter().copied())
                .map_or("define it under `receivers:`".to_string(), |c| format!("did you mean `{c}`?"));
            d.push(Diagnostic::error(pos.clone(), format!("receiver `{receiver}` is not defined")).with_hint(hint));
        }
    }
    let names: Vec<&str> = refs.declared.iter().map(String::as_str).collect();
    for (caller, callee, pos) in &refs.calls {
        if !names.contains(&callee.as_str()) {
            let hint = closest(callee, names.iter().copied())
                .map_or("define it under `runbooks:`".to_string(), |c| format!("did you mean `{c}`?"));
            d.push(
                Diagnostic::error(pos.clone(), format!("runbook `{caller}` calls runbook `{callee}`, which is not defined"))
                    .with_hint(hint),
            );
        } else if reaches(callee, caller, &refs.calls) {
            d.push(
                Diagnostic::error(pos.clone(), format!("runbook `{caller}` calls `{callee}`, which leads back to `{caller}`"))
                    .with_hint("runbooks may not call themselves, directly or through others"),
            );
        }
    }
    // Parameters given to called runbooks must exist there.
    for r in runbooks {
        for s in r.all_steps() {
            if let StepKind::Runbook(call) = &s.kind
                && let Some(callee) = runbooks.iter().find(|x| x.name == call.runbook)
            {
                for (k, _) in &call.params {
                    if callee.param(k).is_none() {
                        d.push(unknown_param(k, &s.pos, &callee.params));
                    }
                }
                for p in callee.params.iter().filter(|p| p.required && p.default.is_none()) {
                    if !call.params.iter().any(|(k, _)| k == &p.name) {
                        d.push(
                            Diagnostic::error(
                                s.pos.clone(),
                                format!("step `{}` calls runbook `{}` without its required parameter `{}`", s.name, callee.name, p.name),
                            )
                            .with_hint("add it under the step's `runbook: { params: … }`"),
                        );
                    }
                }
            }
        }
    }
}

fn reaches(from: &str, to: &str, calls: &[(String, String, Pos)]) -> bool {
    let mut stack = vec![from.to_string()];
    let mut seen = BTreeSet::new();
    while let Some(x) = stack.pop() {
        if x == to {
            return true;
        }
        if seen.insert(x.clone()) {
            stack.extend(calls.iter().filter(|(a, _, _)| *a == x).map(|(_, b, _)| b.clone()));
        }
    }
    false
}
