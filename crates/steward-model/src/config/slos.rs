//! The `slos` section: service level objectives over checks, and the burn-rate alert
//! rules each one generates (see `crate::slo` for the arithmetic).
//!
//! ```yaml
//! slos:
//!   - name: api-availability
//!     service: api
//!     objective: 99.9              # percent, strictly between 0 and 100
//!     window: 30d                  # rolling, at least the longest alert window; or `month` (UTC)
//!     sli: { check: api-health }   # healthy runs ÷ runs
//!     # sli: { latency: { check: api-health, threshold: 300ms } }   # healthy and faster
//!     # sli: { prometheus: { bad: 'sum(increase(e[{{.window}}]))', total: '…' } }
//!     budgeting: occurrences       # or { timeslices: 99 } — a minute is good at ≥ 99 %
//!     min_events: 10               # fewer in an alert's long window: no alert
//!     alerts: default              # the workbook's four; false: none; or a list
//! ```

use std::collections::BTreeMap;

use chrono::Datelike;
use std::time::Duration;

use super::alerting::{AlertCondition, AlertRule};
use super::decode::{self as de, Fields};
use super::diagnostics::{Diagnostic, Diagnostics, Pos, closest};
use super::duration::format_duration;
use super::yaml::{Node, Value};
use crate::alerting::template::Template;
use crate::slo::{Budgeting, BurnWindow, Objective};

const KEYS: &[&str] = &["name", "service", "objective", "window", "sli", "budgeting", "min_events", "alerts"];
const ALERT_KEYS: &[&str] = &["long", "short", "budget_spent", "severity"];
/// The longest SLO window: buckets for it are kept, so it bounds storage.
const MAX_WINDOW: Duration = Duration::from_secs(90 * 86_400);

#[derive(Debug, Clone)]
pub struct Slo {
    pub name: String,
    pub service: String,
    pub objective: Objective,
    /// The window's length: a rolling window's own, 30 days for a calendar month (the
    /// length the alerts' burn factors are scaled to).
    pub window: Duration,
    /// The window is the calendar month so far (UTC), not the last `window`.
    pub calendar_month: bool,
    pub sli: Sli,
    pub budgeting: Budgeting,
    pub min_events: u64,
    pub alerts: Vec<BurnWindow>,
    pub pos: Pos,
}

/// Where an SLO's good and total events come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Sli {
    /// Each run of the check is an event, good when healthy.
    Availability { check: String },
    /// Each run of the check is an event, good when healthy and faster than `threshold`.
    Latency { check: String, threshold: Duration },
    /// Events counted by the configured Prometheus: each minute, the two expressions
    /// with `{{.window}}` as `1m` (Sloth's placeholder) give that minute's good and
    /// total events.
    Prometheus { good: String, total: String },
}

/// Sloth's window placeholder in SLI queries.
pub const WINDOW_PLACEHOLDER: &str = "{{.window}}";

impl Sli {
    /// The check whose runs are the events; `None` for a PromQL SLI.
    pub fn check(&self) -> Option<&str> {
        match self {
            Sli::Availability { check } | Sli::Latency { check, .. } => Some(check),
            Sli::Prometheus { .. } => None,
        }
    }

    /// Whether one run of the check counts as a good event.
    pub fn good(&self, healthy: bool, latency: Duration) -> bool {
        match self {
            Sli::Availability { .. } => healthy,
            Sli::Latency { threshold, .. } => healthy && latency <= *threshold,
            Sli::Prometheus { .. } => false,
        }
    }

    /// What the SLI counts, in a few words: `check api-health`, `prometheus`.
    pub fn source(&self) -> String {
        match self {
            Sli::Availability { check } => format!("check {check}"),
            Sli::Latency { check, threshold } => format!("check {check} under {}", format_duration(*threshold)),
            Sli::Prometheus { .. } => "prometheus".to_string(),
        }
    }
}

pub(super) fn slo(node: &Node, d: &mut Diagnostics) -> Option<Slo> {
    let mut f = Fields::of(node, "an SLO", d)?;
    let name = f.require("name", d).and_then(|n| de::string(n, "the SLO name", d));
    let what = name.as_ref().map_or("the SLO".to_string(), |n| format!("SLO `{n}`"));
    let service = f.require("service", d).and_then(|n| de::string(n, &format!("{what} service"), d));
    let objective = f.require("objective", d).and_then(|n| objective(n, &what, d));
    let window_node = f.take("window");
    let calendar_month = matches!(window_node.map(|n| &n.value), Some(Value::Str { text, .. }) if text == "month");
    let window = match window_node {
        Some(n) if calendar_month => Some((Duration::from_secs(30 * 86_400), n.pos.clone())),
        Some(n) => de::duration(n, &format!("{what} window"), d).and_then(|w| {
            if w < Duration::from_secs(3600) || w > MAX_WINDOW {
                d.push(
                    Diagnostic::error(n.pos.clone(), format!("{what} window {} is out of range", format_duration(w)))
                        .with_hint("a rolling window from 1h to 90d, e.g. `30d` or `28d`, or `month`: the calendar month, UTC"),
                );
                return None;
            }
            Some((w, n.pos.clone()))
        }),
        None => Some((Duration::from_secs(30 * 86_400), f.pos().clone())),
    };
    let sli = f.require("sli", d).and_then(|n| sli(n, &what, d));
    let budgeting = match f.take("budgeting") {
        None => Some(Budgeting::Occurrences),
        Some(n) => budgeting(n, &what, d),
    };
    let min_events = match f.take("min_events") {
        None => Some(10),
        Some(n) => de::integer(n, &format!("{what} min_events"), 0..=1_000_000_000, d).map(|v| v as u64),
    };
    let alerts = match (f.take("alerts"), &window) {
        (_, None) => None,
        (None, Some((w, wpos))) => fits_window(BurnWindow::defaults(*w), &what, *w, wpos, d),
        (Some(n), Some((w, wpos))) => alerts(n, &what, *w, wpos, d),
    };
    f.finish(KEYS, d);
    Some(Slo {
        name: name?,
        service: service?,
        objective: objective?,
        window: window?.0,
        calendar_month,
        sli: sli?,
        budgeting: budgeting?,
        min_events: min_events?,
        alerts: alerts?,
        pos: node.pos.clone(),
    })
}

impl Slo {
    /// The first Unix minute of the window that ends at `now`: the window's length back
    /// from the end of the current minute, or the first minute of the month (UTC).
    pub fn window_start(&self, now_unix_seconds: i64) -> i64 {
        let end = crate::slo::window_end(now_unix_seconds);
        if !self.calendar_month {
            return end - i64::try_from(self.window.as_secs() / 60).unwrap_or(i64::MAX / 4);
        }
        let now = chrono::DateTime::from_timestamp(now_unix_seconds, 0).unwrap_or_default();
        let first = chrono::NaiveDate::from_ymd_opt(now.year(), now.month(), 1).unwrap_or_default();
        first.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc().timestamp().div_euclid(60)
    }

    /// How long its buckets are kept: the window, or a whole month of 31 days.
    pub fn kept_for(&self) -> Duration {
        if self.calendar_month { Duration::from_secs(31 * 86_400) } else { self.window }
    }

    /// The window as people read it: `30d`, or `month`.
    pub fn window_label(&self) -> String {
        if self.calendar_month { "month".to_string() } else { format_duration(self.window) }
    }
}

/// A percentage: `99.9`, or `99.9%` written as a string.
fn percent(n: &Node, what: &str, d: &mut Diagnostics) -> Option<f64> {
    let parsed = match &n.value {
        Value::Int(i) => Some(*i as f64),
        Value::Float(x) => Some(*x),
        Value::Str { text, .. } => text.trim().trim_end_matches('%').trim().parse::<f64>().ok(),
        _ => None,
    };
    if parsed.is_none() {
        d.push(de::type_error(n, what, "a percentage such as 99.9"));
    }
    parsed
}

/// A percentage in (0, 100] — [0, 100] when `zero_allowed` — as a fraction.
pub(super) fn share(n: &Node, what: &str, zero_allowed: bool, d: &mut Diagnostics) -> Option<f64> {
    let p = percent(n, what, d)?;
    let ok = if zero_allowed { (0.0..=100.0).contains(&p) } else { p > 0.0 && p <= 100.0 };
    if !ok {
        let low = if zero_allowed { "0" } else { "0 (excluded)" };
        d.push(Diagnostic::error(n.pos.clone(), format!("{what} {p} is not between {low} and 100")));
        return None;
    }
    Some(p / 100.0)
}

fn objective(n: &Node, what: &str, d: &mut Diagnostics) -> Option<Objective> {
    let p = percent(n, &format!("{what} objective"), d)?;
    let o = Objective::percent(p);
    if o.is_none() {
        d.push(
            Diagnostic::error(n.pos.clone(), format!("{what} objective {p} is not strictly between 0 and 100"))
                .with_hint("an objective is a percentage of good events, e.g. 99.9; 100 leaves no error budget"),
        );
    }
    o
}

fn sli(n: &Node, what: &str, d: &mut Diagnostics) -> Option<Sli> {
    let mut f = Fields::of(n, format!("{what} sli"), d)?;
    let out = match (f.take("check"), f.take("latency"), f.take("prometheus")) {
        (Some(c), None, None) => de::string(c, &format!("{what} sli check"), d).map(|check| Sli::Availability { check }),
        (None, Some(l), None) => {
            let mut lf = Fields::of(l, format!("{what} sli latency"), d)?;
            let check = lf.require("check", d).and_then(|c| de::string(c, &format!("{what} sli latency check"), d));
            let threshold = lf.require("threshold", d).and_then(|t| de::duration(t, &format!("{what} sli latency threshold"), d));
            lf.finish(&["check", "threshold"], d);
            Some(Sli::Latency { check: check?, threshold: threshold? })
        }
        (None, None, Some(p)) => prometheus_sli(p, what, d),
        _ => {
            d.push(
                Diagnostic::error(n.pos.clone(), format!("{what} sli needs exactly one of `check` and `latency`"))
                    .with_hint("e.g. `sli: { check: api-health }`"),
            );
            None
        }
    };
    f.finish(&["check", "latency", "prometheus"], d);
    out
}

/// `{prometheus: {good: Q, total: Q}}` or `{prometheus: {bad: Q, total: Q}}`: queries
/// that count a window's events, with `{{.window}}` where the window goes.
fn prometheus_sli(n: &Node, what: &str, d: &mut Diagnostics) -> Option<Sli> {
    let mut f = Fields::of(n, format!("{what} sli prometheus"), d)?;
    let (has_good, has_bad, has_total) = (f.has("good"), f.has("bad"), f.has("total"));
    let mut query = |key: &str, d: &mut Diagnostics| -> Option<String> {
        let q = f.take(key)?;
        let text = de::text(q, &format!("{what} sli {key}"), d)?;
        if !text.contains(WINDOW_PLACEHOLDER) {
            d.push(
                Diagnostic::error(q.pos.clone(), format!("{what} sli {key} has no `{WINDOW_PLACEHOLDER}`"))
                    .with_hint("count the events of a window, e.g. sum(increase(http_requests_total{job=\"api\"}[{{.window}}]))"),
            );
            return None;
        }
        if let Err(e) = promql_parser::parser::parse(&text.replace(WINDOW_PLACEHOLDER, "1m")) {
            d.push(Diagnostic::error(q.pos.clone(), format!("{what} sli {key} is not valid PromQL: {e}")));
            return None;
        }
        Some(text.trim().to_string())
    };
    let (good, bad, total) = (query("good", d), query("bad", d), query("total", d));
    f.finish(&["good", "bad", "total"], d);
    if !has_total || has_good == has_bad {
        d.push(
            Diagnostic::error(n.pos.clone(), format!("{what} sli prometheus needs `total` and exactly one of `good` and `bad`"))
                .with_hint("Sloth's error_query is `bad`; Pyrra's and OpenSLO's good/total ratio is `good`"),
        );
        return None;
    }
    // A query given but invalid has been reported where it is.
    let total = total?;
    match (good, bad) {
        (Some(good), None) => Some(Sli::Prometheus { good, total }),
        (None, Some(bad)) => Some(Sli::Prometheus { good: format!("({total}) - ({bad})"), total }),
        _ => None,
    }
}

fn budgeting(n: &Node, what: &str, d: &mut Diagnostics) -> Option<Budgeting> {
    match &n.value {
        Value::Str { text, .. } if text == "occurrences" => Some(Budgeting::Occurrences),
        Value::Map(_) => {
            let mut f = Fields::of(n, format!("{what} budgeting"), d)?;
            let ratio = f.require("timeslices", d).and_then(|t| share(t, &format!("{what} budgeting timeslices"), false, d));
            f.finish(&["timeslices"], d);
            Some(Budgeting::Timeslices { good_ratio: ratio? })
        }
        _ => {
            d.push(
                Diagnostic::error(n.pos.clone(), format!("{what} budgeting must be `occurrences` or `{{ timeslices: PERCENT }}`"))
                    .with_hint("timeslices count good minutes: `{ timeslices: 99 }` makes a minute good when 99 % of its events are"),
            );
            None
        }
    }
}

fn alerts(n: &Node, what: &str, window: Duration, window_pos: &Pos, d: &mut Diagnostics) -> Option<Vec<BurnWindow>> {
    let list = match &n.value {
        Value::Str { text, .. } if text == "default" => BurnWindow::defaults(window),
        Value::Bool(false) => return Some(vec![]),
        Value::Seq(items) => {
            let mut out = Vec::new();
            let mut ok = true;
            for item in items {
                match alert(item, what, window, d) {
                    Some(a) => out.push(a),
                    None => ok = false,
                }
            }
            if !ok {
                return None;
            }
            out
        }
        _ => {
            d.push(
                Diagnostic::error(n.pos.clone(), format!("{what} alerts must be `default`, `false` or a list"))
                    .with_hint("e.g. alerts: [{ long: 1h, short: 5m, budget_spent: 2%, severity: critical }]"),
            );
            return None;
        }
    };
    fits_window(list, what, window, window_pos, d)
}

/// The alerts, if their longest window fits in the SLO's.
fn fits_window(list: Vec<BurnWindow>, what: &str, window: Duration, window_pos: &Pos, d: &mut Diagnostics) -> Option<Vec<BurnWindow>> {
    if let Some(longest) = list.iter().map(|a| a.long).max()
        && longest > window
    {
        d.push(
            Diagnostic::error(
                window_pos.clone(),
                format!("{what} window is shorter than its longest alert window ({})", format_duration(longest)),
            )
            .with_hint("lengthen the window or give shorter `alerts:` windows"),
        );
        return None;
    }
    Some(list)
}

fn alert(n: &Node, what: &str, window: Duration, d: &mut Diagnostics) -> Option<BurnWindow> {
    let mut f = Fields::of(n, format!("{what} alert"), d)?;
    let long = f.require("long", d).and_then(|v| de::duration(v, &format!("{what} alert long"), d));
    let short = f.require("short", d).and_then(|v| de::duration(v, &format!("{what} alert short"), d));
    let spent = f.require("budget_spent", d).and_then(|v| share(v, &format!("{what} alert budget_spent"), false, d));
    let severity = match f.take("severity") {
        None => Some("critical".to_string()),
        Some(v) => super::alerting::severity(v, &format!("{what} alert"), d),
    };
    f.finish(ALERT_KEYS, d);
    let (long, short) = (long?, short?);
    if short.is_zero() || short >= long {
        d.push(
            Diagnostic::error(n.pos.clone(), format!("{what} alert's short window must be shorter than its long one and not zero"))
                .with_hint("the workbook's pairs: 1h/5m, 6h/30m, 1d/2h, 3d/6h"),
        );
        return None;
    }
    Some(BurnWindow::spending(spent?, long, short, window, &severity?))
}

/// The alert rule name of `slo`'s burn-rate alert `w`: `api-availability:burn:1h`.
pub fn burn_rule_name(slo: &str, w: &BurnWindow) -> String {
    format!("{slo}:burn:{}", format_duration(w.long))
}

/// Unique names, known services and checks; then the alert rules the SLOs generate.
pub(super) fn cross_check(slos: &[Slo], services: &[&str], checks: &[&str], have_prometheus: bool, d: &mut Diagnostics) -> Vec<AlertRule> {
    let mut seen: BTreeMap<&str, &Pos> = BTreeMap::new();
    let mut rules = Vec::new();
    for s in slos {
        if let Some(first) = seen.insert(&s.name, &s.pos) {
            d.push(
                Diagnostic::error(s.pos.clone(), format!("SLO `{}` is defined twice", s.name))
                    .with_hint(format!("the first is at {first}")),
            );
        }
        if !services.contains(&s.service.as_str()) {
            let hint = closest(&s.service, services.iter().copied())
                .map_or("define it under `services:`".to_string(), |c| format!("did you mean `{c}`?"));
            d.push(
                Diagnostic::error(s.pos.clone(), format!("SLO `{}` names service `{}`, which is not defined", s.name, s.service))
                    .with_hint(hint),
            );
        }
        if let Some(check) = s.sli.check()
            && !checks.contains(&check)
        {
            let hint =
                closest(check, checks.iter().copied()).map_or("define it under `checks:`".to_string(), |c| format!("did you mean `{c}`?"));
            d.push(
                Diagnostic::error(s.pos.clone(), format!("SLO `{}` counts check `{check}`, which is not defined", s.name)).with_hint(hint),
            );
        }
        if matches!(s.sli, Sli::Prometheus { .. }) && !have_prometheus {
            d.push(
                Diagnostic::error(
                    s.pos.clone(),
                    format!("SLO `{}` counts events with PromQL but no Prometheus server is configured", s.name),
                )
                .with_hint("add a top-level `prometheus:` section with `url: http://HOST:9090`"),
            );
        }
        for (i, w) in s.alerts.iter().enumerate() {
            let labels = BTreeMap::from([
                ("service".to_string(), s.service.clone()),
                ("slo".to_string(), s.name.clone()),
                ("long_window".to_string(), format_duration(w.long)),
                ("short_window".to_string(), format_duration(w.short)),
            ]);
            let summary = format!(
                "SLO {} ({}% over {}) burns its error budget {{{{ printf \"%.1f\" $value }}}}× as fast as it can last over {}; the alert fires at {:.1}×",
                s.name,
                s.objective.fraction() * 100.0,
                s.window_label(),
                format_duration(w.long),
                w.factor
            );
            let annotations = match Template::parse(&summary) {
                Ok(t) => vec![("summary".to_string(), t)],
                Err(_) => vec![],
            };
            rules.push(AlertRule {
                name: burn_rule_name(&s.name, w),
                when: AlertCondition::SloBurn { slo: s.name.clone(), window: i },
                for_: Duration::ZERO,
                keep_firing_for: Duration::ZERO,
                severity: w.severity.clone(),
                labels,
                annotations,
                runbook: None,
                every: Duration::ZERO,
                pos: s.pos.clone(),
            });
        }
    }
    rules
}
