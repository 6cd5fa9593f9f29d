//! The alerting sections: `alerts`, `receivers`, `route` and `inhibit_rules`.
//!
//! `route` and `inhibit_rules` have Alertmanager's shape and meaning, so an existing
//! `alertmanager.yml` routing tree can be pasted in (with `matchers:` lists).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::decode::{self as de, Fields};
use super::diagnostics::{Diagnostic, Diagnostics, Pos, closest};
use super::yaml::{Node, Value};
use crate::alerting::matcher::{Matcher, valid_label_name};
use crate::alerting::template::Template;

#[derive(Debug, Clone)]
pub struct AlertRule {
    pub name: String,
    pub when: AlertCondition,
    /// How long the condition must hold before the alert fires (pending until then).
    pub for_: Duration,
    /// How long a firing alert keeps firing after its condition clears (flap damping).
    pub keep_firing_for: Duration,
    pub severity: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: Vec<(String, Template)>,
    /// A runbook to suggest (in a `runbook` annotation) or run when the alert fires.
    pub runbook: Option<RunbookLink>,
    /// PromQL rules: how often to query (a rule file group's `interval`, else the
    /// `prometheus` section's `evaluation_interval`).
    pub every: Duration,
    pub pos: Pos,
}

/// An alert rule's runbook: `runbook: NAME` suggests it; `{name, mode: run, params}`
/// starts it each time an alert of the rule fires.
#[derive(Debug, Clone)]
pub struct RunbookLink {
    pub name: String,
    /// Start it automatically (otherwise only suggest the command).
    pub run: bool,
    /// Parameter templates reading `labels`, `annotations` and `value`.
    pub params: Vec<(String, crate::runbooks::template::Text)>,
    pub pos: Pos,
}

/// What an alert rule watches.
#[derive(Debug, Clone, PartialEq)]
pub enum AlertCondition {
    /// `check NAME unhealthy`: the check's thresholded health is unhealthy.
    CheckUnhealthy { check: String },
    /// `check NAME failure_ratio > 0.2 over 5m`: failed runs / runs in the window.
    FailureRatio { check: String, op: Cmp, threshold: f64, window: Duration },
    /// `check NAME latency p99 > 500ms over 5m`: a latency quantile in the window, in ms.
    Latency { check: String, quantile: f64, op: Cmp, threshold_ms: f64, window: Duration },
    /// `expr: PROMQL`: evaluated by the configured Prometheus server; one alert per
    /// series in the result, labelled with the series' labels.
    Query { expr: String },
    /// Generated from an SLO (`slos:`): its burn-rate alert number `window`, firing when
    /// both the long and the short window burn the budget at least that alert's factor.
    SloBurn { slo: String, window: usize },
    /// `forecast:`: a PromQL series predicted to cross a limit within a horizon; one
    /// alert per series, like `expr`, evaluated by the configured Prometheus' range query.
    Forecast(Box<super::forecast::Forecast>),
}

impl AlertCondition {
    /// The check a rule watches (`None` for PromQL rules).
    pub fn check(&self) -> Option<&str> {
        match self {
            AlertCondition::CheckUnhealthy { check }
            | AlertCondition::FailureRatio { check, .. }
            | AlertCondition::Latency { check, .. } => Some(check),
            AlertCondition::Forecast(f) => match &f.source {
                super::forecast::ForecastSource::Check { check, .. } => Some(check),
                super::forecast::ForecastSource::Promql(_) => None,
            },
            AlertCondition::Query { .. } | AlertCondition::SloBurn { .. } => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cmp {
    Gt,
    Ge,
    Lt,
    Le,
}

impl Cmp {
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Cmp::Gt => value > threshold,
            Cmp::Ge => value >= threshold,
            Cmp::Lt => value < threshold,
            Cmp::Le => value <= threshold,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum GroupBy {
    Labels(Vec<String>),
    /// `group_by: ['...']`: every alert is its own group.
    All,
}

#[derive(Debug, Clone)]
pub struct Route {
    /// The path from the root, e.g. `0.2.1`; part of group keys, stable while the tree is.
    pub id: String,
    pub receiver: String,
    pub matchers: Vec<Matcher>,
    pub group_by: GroupBy,
    pub group_wait: Duration,
    pub group_interval: Duration,
    pub repeat_interval: Duration,
    /// Keep matching siblings after this route matched.
    pub continue_: bool,
    /// Named time intervals in which this route sends nothing (not inherited).
    pub mute_time_intervals: Vec<String>,
    /// When non-empty, this route sends only inside one of these intervals (not inherited).
    pub active_time_intervals: Vec<String>,
    pub routes: Vec<Route>,
    pub pos: Pos,
}

#[derive(Debug, Clone)]
pub struct InhibitRule {
    pub source: Vec<Matcher>,
    pub target: Vec<Matcher>,
    /// Labels whose values must be equal in source and target.
    pub equal: Vec<String>,
    pub pos: Pos,
}

pub const DEFAULT_GROUP_WAIT: Duration = Duration::from_secs(30);
pub const DEFAULT_GROUP_INTERVAL: Duration = Duration::from_secs(300);
pub const DEFAULT_REPEAT_INTERVAL: Duration = Duration::from_secs(4 * 3600);
pub const SEVERITIES: &[&str] = &["critical", "warning", "info", "P0", "P1", "P2", "P3", "P4"];

/// A severity as written (any case), normalised to its spelling in [`SEVERITIES`].
pub(super) fn severity(n: &Node, what: &str, d: &mut Diagnostics) -> Option<String> {
    let s = de::string(n, &format!("{what} severity"), d)?;
    match SEVERITIES.iter().find(|v| v.eq_ignore_ascii_case(&s)) {
        Some(v) => Some(v.to_string()),
        None => {
            d.push(
                Diagnostic::error(n.pos.clone(), format!("{what} severity `{s}` is not known"))
                    .with_hint(format!("use one of: {}", SEVERITIES.join(", "))),
            );
            None
        }
    }
}
const RULE_KEYS: &[&str] = &["name", "when", "expr", "forecast", "for", "keep_firing_for", "severity", "labels", "annotations", "runbook"];
const ROUTE_KEYS: &[&str] = &[
    "receiver",
    "matchers",
    "group_by",
    "group_wait",
    "group_interval",
    "repeat_interval",
    "continue",
    "mute_time_intervals",
    "active_time_intervals",
    "routes",
];

/// References from alerting items to other sections, checked once everything is read.
#[derive(Default)]
pub struct AlertingRefs {
    pub(super) rules: Vec<(String, Pos)>,
    /// Runbook links of alert rules, checked against the runbooks.
    pub(super) runbook_links: Vec<RunbookLink>,
    pub(super) checks: Vec<(String, Pos)>,
    pub(super) receivers: Vec<(String, Pos)>,
    receivers_used: Vec<(String, Pos)>,
    pub(super) intervals: Vec<(String, Pos)>,
    pub(super) intervals_used: Vec<(String, Pos)>,
    pub(super) windows: Vec<(String, Pos)>,
    /// Where PromQL rules are, to require a `prometheus` section.
    pub(super) queries: Vec<Pos>,
}

impl AlertingRefs {
    pub(super) fn first_query(&self) -> Option<&Pos> {
        self.queries.first()
    }
}

pub fn rule(node: &Node, d: &mut Diagnostics, refs: &mut AlertingRefs) -> Option<AlertRule> {
    let mut f = Fields::of(node, "an alert rule", d)?;
    // `alert:` is Prometheus' key for the name: rules pasted from a rule file work.
    let key = if !f.has("name") && f.has("alert") { "alert" } else { "name" };
    let name = f.require(key, d).and_then(|n| {
        let s = de::string(n, "the alert name", d)?;
        refs.rules.push((s.clone(), n.pos.clone()));
        Some(s)
    });
    let what = name.as_ref().map_or("the alert".to_string(), |n| format!("alert `{n}`"));
    let when = match (f.take("when"), f.take("expr"), f.take("forecast")) {
        (Some(n), None, None) => when_condition(n, &what, d, refs),
        (None, Some(n), None) => promql(n, &what, d, refs),
        (None, None, Some(n)) => super::forecast::forecast(n, &what, d, refs),
        (Some(_), Some(n), _) | (_, Some(_), Some(n)) | (Some(_), _, Some(n)) => {
            d.push(
                Diagnostic::error(n.pos.clone(), format!("{what} has more than one of `when`, `expr` and `forecast`"))
                    .with_hint("`when` tests a check; `expr` is a PromQL query; `forecast` predicts a series; a rule has one"),
            );
            None
        }
        (None, None, None) => {
            d.push(Diagnostic::error(node.pos.clone(), format!("{what} has no condition")).with_hint(
                "add `when: check NAME unhealthy` (or failure_ratio / latency), or `expr: PROMQL` with a `prometheus:` section",
            ));
            None
        }
    };
    let for_ = f.take("for").map_or(Some(Duration::ZERO), |n| de::duration(n, &format!("{what} for"), d));
    let keep = f.take("keep_firing_for").map_or(Some(Duration::ZERO), |n| de::duration(n, &format!("{what} keep_firing_for"), d));
    let severity = f.take("severity").map_or(Some("warning".to_string()), |n| severity(n, &what, d));
    let labels = label_map(f.take("labels"), &format!("{what} labels"), d);
    let annotations = template_map(f.take("annotations"), &what, d);
    let runbook = f.take("runbook").and_then(|n| runbook_link(n, &what, d, refs));
    f.finish(RULE_KEYS, d);
    Some(AlertRule {
        name: name?,
        when: when?,
        for_: for_?,
        keep_firing_for: keep?,
        severity: severity?,
        labels: labels?,
        annotations: annotations?,
        runbook,
        every: Duration::ZERO,
        pos: node.pos.clone(),
    })
}

fn when_condition(n: &Node, what: &str, d: &mut Diagnostics, refs: &mut AlertingRefs) -> Option<AlertCondition> {
    let text = de::string(n, &format!("{what} when"), d)?;
    match parse_when(&text) {
        Ok(c) => {
            if let Some(check) = c.check() {
                refs.checks.push((check.to_string(), n.pos.clone()));
            }
            Some(c)
        }
        Err((offset, message)) => {
            let quote = usize::from(matches!(n.value, Value::Str { quoted: true, .. }));
            d.push(Diagnostic::error(n.pos.shifted(offset + quote), format!("{what} when: {message}")).with_hint(
                "write `check NAME unhealthy`, `check NAME failure_ratio > 0.2 over 5m` or `check NAME latency p99 > 500ms over 5m`",
            ));
            None
        }
    }
}

/// A PromQL expression, parsed now so a typo is a config error, not a 3 a.m. surprise.
pub(super) fn promql(n: &Node, what: &str, d: &mut Diagnostics, refs: &mut AlertingRefs) -> Option<AlertCondition> {
    let expr = de::text(n, &format!("{what} expr"), d)?;
    refs.queries.push(n.pos.clone());
    match promql_parser::parser::parse(&expr) {
        Ok(ast) => match ast.value_type() {
            promql_parser::parser::value::ValueType::Vector | promql_parser::parser::value::ValueType::Scalar => {
                Some(AlertCondition::Query { expr: expr.trim().to_string() })
            }
            other => {
                let kind = if other == promql_parser::parser::value::ValueType::Matrix { "range vector" } else { "string" };
                d.push(Diagnostic::error(n.pos.clone(), format!("{what} expr evaluates to a {kind}, not an instant vector")).with_hint(
                    "an alert fires for each series an instant query returns; drop the range selector or wrap it, e.g. rate(x[5m])",
                ));
                None
            }
        },
        Err(e) => {
            d.push(
                Diagnostic::error(n.pos.clone(), format!("{what} expr is not valid PromQL: {e}"))
                    .with_hint("try the expression in Prometheus' query page first"),
            );
            None
        }
    }
}

/// Annotations: templates parsed now, so a typo is reported at its column.
pub(super) fn template_map(node: Option<&Node>, what: &str, d: &mut Diagnostics) -> Option<Vec<(String, Template)>> {
    let Some(n) = node else { return Some(vec![]) };
    let map = de::string_map(n, &format!("{what} annotations"), d)?;
    let mut out = Vec::new();
    let mut ok = true;
    for (key, (text, pos)) in map {
        match Template::parse(&text) {
            Ok(t) => out.push((key, t)),
            Err((offset, message)) => {
                ok = false;
                d.push(
                    Diagnostic::error(pos.shifted(offset + 1), format!("{what} annotation `{key}`: {message}"))
                        .with_hint("templates use {{ $value }}, {{ $labels.NAME }} and the humanize functions"),
                );
            }
        }
    }
    ok.then_some(out)
}

pub(super) fn label_map(node: Option<&Node>, what: &str, d: &mut Diagnostics) -> Option<BTreeMap<String, String>> {
    let Some(node) = node else { return Some(BTreeMap::new()) };
    let map = de::string_map(node, what, d)?;
    let mut ok = true;
    for k in map.keys() {
        if !valid_label_name(k) {
            ok = false;
            d.push(
                Diagnostic::error(map[k].1.clone(), format!("{what}: `{k}` is not a valid label name"))
                    .with_hint("label names use letters, digits and `_`, not starting with a digit"),
            );
        }
    }
    ok.then(|| map.into_iter().map(|(k, (v, _))| (k, v)).collect())
}

/// Parses a `when:` expression; errors carry the byte offset of the offending word.
pub fn parse_when(text: &str) -> Result<AlertCondition, (usize, String)> {
    let words: Vec<(usize, &str)> = text.split_whitespace().map(|w| (w.as_ptr() as usize - text.as_ptr() as usize, w)).collect();
    let word = |i: usize| words.get(i).copied();
    let end = text.len();
    match word(0) {
        Some((_, "check")) => {}
        Some((at, w)) => return Err((at, format!("expected `check`, found `{w}`"))),
        None => return Err((0, "the condition is empty".into())),
    }
    let (_, check) = word(1).ok_or((end, "expected a check name after `check`".to_string()))?;
    let check = check.to_string();
    let (at, what) = word(2).ok_or((end, format!("expected what to test about check `{check}`")))?;
    let cmp = |i: usize| -> Result<Cmp, (usize, String)> {
        match word(i) {
            Some((_, ">")) => Ok(Cmp::Gt),
            Some((_, ">=")) => Ok(Cmp::Ge),
            Some((_, "<")) => Ok(Cmp::Lt),
            Some((_, "<=")) => Ok(Cmp::Le),
            Some((at, w)) => Err((at, format!("expected a comparison (>, >=, <, <=), found `{w}`"))),
            None => Err((end, "expected a comparison (>, >=, <, <=)".into())),
        }
    };
    let over = |i: usize| -> Result<Duration, (usize, String)> {
        match word(i) {
            Some((_, "over")) => {}
            Some((at, w)) => return Err((at, format!("expected `over DURATION`, found `{w}`"))),
            None => return Err((end, "expected `over DURATION`, e.g. `over 5m`".into())),
        }
        let (at, w) = word(i + 1).ok_or((end, "expected a window duration after `over`".to_string()))?;
        let window = super::duration::parse_duration(w).map_err(|e| (at, e))?;
        if window < Duration::from_secs(1) {
            return Err((at, "the window must be at least 1s".into()));
        }
        if let Some((at, w)) = word(i + 2) {
            return Err((at, format!("unexpected `{w}` after the window")));
        }
        Ok(window)
    };
    match what {
        "unhealthy" => match word(3) {
            Some((at, w)) => Err((at, format!("unexpected `{w}` after `unhealthy`"))),
            None => Ok(AlertCondition::CheckUnhealthy { check }),
        },
        "failure_ratio" => {
            let op = cmp(3)?;
            let (at, w) = word(4).ok_or((end, "expected a ratio between 0 and 1".to_string()))?;
            let threshold: f64 =
                w.parse().ok().filter(|t| (0.0..=1.0).contains(t)).ok_or((at, format!("`{w}` is not a ratio between 0 and 1")))?;
            Ok(AlertCondition::FailureRatio { check, op, threshold, window: over(5)? })
        }
        "latency" => {
            let (qat, q) = word(3).ok_or((end, "expected a quantile: p50, p90, p95, p99, p999 or max".to_string()))?;
            let quantile = match q {
                "p50" => 0.5,
                "p90" => 0.9,
                "p95" => 0.95,
                "p99" => 0.99,
                "p999" => 0.999,
                "max" => 1.0,
                _ => return Err((qat, format!("`{q}` is not a quantile; use p50, p90, p95, p99, p999 or max"))),
            };
            let op = cmp(4)?;
            let (at, w) = word(5).ok_or((end, "expected a latency such as 500ms".to_string()))?;
            let threshold = super::duration::parse_duration(w).map_err(|e| (at, e))?;
            Ok(AlertCondition::Latency { check, quantile, op, threshold_ms: threshold.as_secs_f64() * 1000.0, window: over(6)? })
        }
        other => Err((at, format!("`{other}` is not something an alert can test; use unhealthy, failure_ratio or latency"))),
    }
}

/// The routing tree; children inherit their parent's receiver, grouping and timings.
pub fn route(node: &Node, d: &mut Diagnostics, refs: &mut AlertingRefs) -> Option<Route> {
    let root = Route {
        id: "0".into(),
        receiver: String::new(),
        matchers: vec![],
        group_by: GroupBy::Labels(vec!["alertname".into()]),
        group_wait: DEFAULT_GROUP_WAIT,
        group_interval: DEFAULT_GROUP_INTERVAL,
        repeat_interval: DEFAULT_REPEAT_INTERVAL,
        continue_: false,
        mute_time_intervals: vec![],
        active_time_intervals: vec![],
        routes: vec![],
        pos: node.pos.clone(),
    };
    route_node(node, &root, "0", true, d, refs)
}

fn route_node(node: &Node, parent: &Route, id: &str, is_root: bool, d: &mut Diagnostics, refs: &mut AlertingRefs) -> Option<Route> {
    let what = if is_root { "the root route".to_string() } else { format!("route {id}") };
    let mut f = Fields::of(node, &what, d)?;
    let receiver = match f.take("receiver") {
        Some(n) => de::string(n, &format!("{what} receiver"), d).inspect(|r| refs.receivers_used.push((r.clone(), n.pos.clone()))),
        None if is_root => {
            d.push(
                Diagnostic::error(node.pos.clone(), "the root route names no receiver")
                    .with_hint("add `receiver:`; alerts no child route matches go there"),
            );
            None
        }
        None => Some(parent.receiver.clone()),
    };
    let matchers = match f.take("matchers") {
        Some(n) if is_root => {
            d.push(
                Diagnostic::error(n.pos.clone(), "the root route cannot have matchers")
                    .with_hint("the root matches every alert; put matchers on child routes under `routes:`"),
            );
            None
        }
        Some(n) => matchers(n, &format!("{what} matchers"), d),
        None => Some(vec![]),
    };
    let group_by = f.take("group_by").map_or(Some(parent.group_by.clone()), |n| {
        let names = de::string_list(n, &format!("{what} group_by"), d)?;
        if names.iter().any(|s| s == "...") {
            return Some(GroupBy::All);
        }
        for name in &names {
            if !valid_label_name(name) {
                d.push(Diagnostic::error(n.pos.clone(), format!("{what} group_by: `{name}` is not a label name")));
                return None;
            }
        }
        Some(GroupBy::Labels(names))
    });
    let timing = |f: &mut Fields<'_>, key: &str, inherited: Duration, d: &mut Diagnostics| {
        f.take(key).map_or(Some(inherited), |n| de::duration(n, &format!("{what} {key}"), d))
    };
    let group_wait = timing(&mut f, "group_wait", parent.group_wait, d);
    let group_interval = timing(&mut f, "group_interval", parent.group_interval, d);
    let repeat_interval = timing(&mut f, "repeat_interval", parent.repeat_interval, d);
    let continue_ = match f.take("continue") {
        Some(n) if is_root => {
            d.push(Diagnostic::error(n.pos.clone(), "the root route cannot `continue`").with_hint("remove it"));
            None
        }
        Some(n) => de::boolean(n, &format!("{what} continue"), d),
        None => Some(false),
    };
    let mut intervals = |key: &str, d: &mut Diagnostics| match f.take(key) {
        Some(n) if is_root => {
            d.push(
                Diagnostic::error(n.pos.clone(), format!("the root route cannot have `{key}`"))
                    .with_hint("the root is the fallback for every alert; put time intervals on child routes"),
            );
            // Recorded; keep going so the child routes are checked too.
            Some(vec![])
        }
        Some(n) => super::time_intervals::route_intervals(n, &format!("{what} {key}"), d, refs),
        None => Some(vec![]),
    };
    let mute_time_intervals = intervals("mute_time_intervals", d);
    let active_time_intervals = intervals("active_time_intervals", d);
    let children = f.take("routes");
    f.finish(ROUTE_KEYS, d);
    let mut me = Route {
        id: id.to_string(),
        receiver: receiver?,
        matchers: matchers?,
        group_by: group_by?,
        group_wait: group_wait?,
        group_interval: group_interval?,
        repeat_interval: repeat_interval?,
        continue_: continue_?,
        mute_time_intervals: mute_time_intervals?,
        active_time_intervals: active_time_intervals?,
        routes: vec![],
        pos: node.pos.clone(),
    };
    if let Some(children) = children {
        let items = de::list(children, &format!("{what} routes"), d)?;
        let mut ok = true;
        for (i, child) in items.iter().enumerate() {
            match route_node(child, &me, &format!("{id}.{i}"), false, d, refs) {
                Some(r) => me.routes.push(r),
                None => ok = false,
            }
        }
        if !ok {
            return None;
        }
    }
    Some(me)
}

pub fn inhibit_rule(node: &Node, d: &mut Diagnostics) -> Option<InhibitRule> {
    let mut f = Fields::of(node, "an inhibit rule", d)?;
    let source = f.require("source_matchers", d).and_then(|n| matchers(n, "source_matchers", d));
    let target = f.require("target_matchers", d).and_then(|n| matchers(n, "target_matchers", d));
    let equal = f.take("equal").map_or(Some(vec![]), |n| de::string_list(n, "equal", d));
    f.finish(&["source_matchers", "target_matchers", "equal"], d);
    Some(InhibitRule { source: source?, target: target?, equal: equal?, pos: node.pos.clone() })
}

pub(super) fn matchers(node: &Node, what: &str, d: &mut Diagnostics) -> Option<Vec<Matcher>> {
    let items = de::list(node, what, d)?;
    let mut out = Vec::new();
    let mut ok = true;
    for item in items {
        let Some(text) = de::text(item, what, d) else {
            ok = false;
            continue;
        };
        match Matcher::parse(&text) {
            Ok(m) => out.push(m),
            Err(e) => {
                ok = false;
                d.push(
                    Diagnostic::error(item.pos.clone(), format!("{what}: {e}"))
                        .with_hint(r#"write matchers as strings, e.g. 'severity="critical"' or 'team=~"chat|payments"'"#),
                );
            }
        }
    }
    ok.then_some(out)
}

/// Rules across sections: unique names, alerts on checks that exist, routes to receivers
/// that exist.
pub fn cross_check(refs: &AlertingRefs, checks: &[&str], d: &mut Diagnostics) {
    for (kind, list) in
        [("alert", &refs.rules), ("receiver", &refs.receivers), ("time interval", &refs.intervals), ("maintenance window", &refs.windows)]
    {
        let mut seen: HashMap<&str, &Pos> = HashMap::new();
        for (name, pos) in list {
            if let Some(first) = seen.insert(name, pos) {
                d.push(
                    Diagnostic::error(pos.clone(), format!("{kind} `{name}` is defined twice"))
                        .with_hint(format!("the first definition is at {first}; names are unique across all files")),
                );
            }
        }
    }
    let names = |list: &[(String, Pos)]| -> Vec<String> { list.iter().map(|(n, _)| n.clone()).collect() };
    let checks: Vec<String> = checks.iter().map(|c| c.to_string()).collect();
    unknown_refs(
        &refs.checks,
        &checks,
        |c| format!("the alert watches check `{c}`, which is not defined"),
        "define the check under `checks:` or fix the name",
        d,
    );
    unknown_refs(
        &refs.receivers_used,
        &names(&refs.receivers),
        |r| format!("the route sends to receiver `{r}`, which is not defined"),
        "define it under `receivers:`",
        d,
    );
    unknown_refs(
        &refs.intervals_used,
        &names(&refs.intervals),
        |i| format!("time interval `{i}` is not defined"),
        "define it under `time_intervals:`",
        d,
    );
}

/// An error for each reference to a name not in `defined`, with a "did you mean" hint.
fn unknown_refs(used: &[(String, Pos)], defined: &[String], message: impl Fn(&str) -> String, otherwise: &str, d: &mut Diagnostics) {
    for (name, pos) in used {
        if !defined.contains(name) {
            let hint = match closest(name, defined.iter().map(String::as_str)) {
                Some(c) => format!("did you mean `{c}`?"),
                None => otherwise.to_string(),
            };
            d.push(Diagnostic::error(pos.clone(), message(name)).with_hint(hint));
        }
    }
}

fn runbook_link(n: &Node, what: &str, d: &mut Diagnostics, refs: &mut AlertingRefs) -> Option<RunbookLink> {
    let link = match &n.value {
        Value::Str { text, .. } => RunbookLink { name: text.clone(), run: false, params: vec![], pos: n.pos.clone() },
        _ => {
            let mut f = Fields::of(n, format!("{what} runbook"), d)?;
            let name_node = f.require("name", d)?;
            let name = de::string(name_node, &format!("{what} runbook name"), d)?;
            let run = f.take("mode").map_or(Some(false), |m| match de::string(m, &format!("{what} runbook mode"), d)?.as_str() {
                "run" => Some(true),
                "suggest" => Some(false),
                other => {
                    d.push(
                        Diagnostic::error(m.pos.clone(), format!("{what} runbook mode `{other}` is not known"))
                            .with_hint("use `run` (start it when the alert fires) or `suggest` (put the command in the notification)"),
                    );
                    None
                }
            });
            let mut params = Vec::new();
            let mut ok = true;
            if let Some(p) = f.take("params") {
                if let Value::Map(entries) = &p.value {
                    for (k, v) in entries {
                        let key = k.scalar_text().unwrap_or_default();
                        let Some(text) = de::text(v, &format!("{what} runbook param {key}"), d) else {
                            ok = false;
                            continue;
                        };
                        match crate::runbooks::template::Text::parse(&text, &mut Vec::new()) {
                            Ok(t) => {
                                for var in t.variables() {
                                    let root = var.split('.').next().unwrap_or_default();
                                    if !["labels", "annotations", "value"].contains(&root) {
                                        ok = false;
                                        d.push(
                                            Diagnostic::error(v.pos.clone(), format!("{what} runbook param `{key}` reads `{var}`"))
                                                .with_hint("parameters from an alert can read labels, annotations and value, e.g. {{ labels.instance }}"),
                                        );
                                    }
                                }
                                params.push((key, t));
                            }
                            Err(e) => {
                                ok = false;
                                d.push(Diagnostic::error(
                                    v.pos.clone(),
                                    format!("{what} runbook param `{key}`: invalid template: {}", e.message),
                                ));
                            }
                        }
                    }
                } else {
                    d.push(de::type_error(p, &format!("{what} runbook params"), "a mapping"));
                    ok = false;
                }
            }
            f.finish(&["name", "mode", "params"], d);
            if !ok {
                return None;
            }
            RunbookLink { name, run: run?, params, pos: name_node.pos.clone() }
        }
    };
    refs.runbook_links.push(link.clone());
    Some(link)
}

/// Alert rules' runbooks exist and get the parameters they need.
pub(super) fn check_runbook_links(refs: &AlertingRefs, runbooks: &[super::runbooks::Runbook], declared: &[String], d: &mut Diagnostics) {
    for link in &refs.runbook_links {
        let Some(rb) = runbooks.iter().find(|r| r.name == link.name) else {
            if declared.contains(&link.name) {
                // Defined, with errors of its own (reported there); its parameters
                // are checked once it decodes.
                continue;
            }
            let hint = super::diagnostics::closest(&link.name, declared.iter().map(String::as_str))
                .map_or("define it under `runbooks:`".to_string(), |c| format!("did you mean `{c}`?"));
            d.push(Diagnostic::error(link.pos.clone(), format!("runbook `{}` is not defined", link.name)).with_hint(hint));
            continue;
        };
        for (k, _) in &link.params {
            if rb.param(k).is_none() {
                d.push(Diagnostic::error(link.pos.clone(), format!("runbook `{}` has no parameter `{k}`", rb.name)));
            }
        }
        for p in rb.params.iter().filter(|p| p.required && p.default.is_none()) {
            if !link.params.iter().any(|(k, _)| *k == p.name) {
                d.push(
                    Diagnostic::error(
                        link.pos.clone(),
                        format!("runbook `{}` needs parameter `{}`, which the alert does not give", rb.name, p.name),
                    )
                    .with_hint(format!("add it under the rule's `runbook: {{ params: {{ {}: \"{{{{ labels.instance }}}}\" }} }}`", p.name)),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_expressions() {
        assert_eq!(parse_when("check api unhealthy").unwrap(), AlertCondition::CheckUnhealthy { check: "api".into() });
        assert_eq!(
            parse_when("check api failure_ratio >= 0.25 over 5m").unwrap(),
            AlertCondition::FailureRatio { check: "api".into(), op: Cmp::Ge, threshold: 0.25, window: Duration::from_secs(300) }
        );
        assert_eq!(
            parse_when("check api latency p99 > 500ms over 10m").unwrap(),
            AlertCondition::Latency {
                check: "api".into(),
                quantile: 0.99,
                op: Cmp::Gt,
                threshold_ms: 500.0,
                window: Duration::from_secs(600)
            }
        );
    }

    #[test]
    fn when_errors_point_at_the_word() {
        let e = parse_when("check api unhelthy").unwrap_err();
        assert_eq!(e.0, 10);
        assert!(e.1.contains("`unhelthy`"));
        let e = parse_when("check api failure_ratio > 2 over 5m").unwrap_err();
        assert_eq!(e.0, 26);
        assert!(e.1.contains("not a ratio"));
        let e = parse_when("check api latency p98 > 1s over 5m").unwrap_err();
        assert!(e.1.contains("not a quantile"));
        let e = parse_when("check api latency p99 > 1s").unwrap_err();
        assert!(e.1.contains("over DURATION"));
        assert!(parse_when("").unwrap_err().1.contains("empty"));
    }
}
