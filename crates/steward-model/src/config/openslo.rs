//! `steward slo import`: OpenSLO v1 documents (kinds `SLO`, `SLI`, `AlertPolicy`,
//! `AlertCondition`) turned into Steward's `slos:` section, with an error at
//! file:line:column for each part Steward cannot honour rather than a silent
//! approximation.
//!
//! What maps: a ratio SLI over Prometheus counters (`good` or `bad` with `total`; a
//! selector or `sum(selector)` becomes `sum(increase(selector[{{.window}}]))`, a query
//! that already has `{{.window}}` is kept), inline or by `indicatorRef`; one objective
//! (`target` or `targetPercent`); a rolling `timeWindow`, or a calendar month in UTC;
//! `Occurrences`, or `Timeslices` over one-minute slices; `burnrate` alert conditions
//! (threshold = burn factor, `lookbackWindow` = long window; the short window is a
//! twelfth of it, as in the SRE workbook's pairs), inline or by reference, and their
//! severity (`page` → critical, `ticket` → warning). Not supported, each said so where it
//! is written: threshold metrics, other data sources, several objectives,
//! `RatioTimeslices`, calendar windows other than a UTC month, non-burn-rate conditions.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use super::diagnostics::{Diagnostic, Diagnostics, Pos};
use super::duration::format_duration;
use super::slos::WINDOW_PLACEHOLDER;
use super::yaml::{self, Node, Value};

/// The Steward YAML (`slos:`) for every `SLO` document in `files` (name, text), or every
/// problem found.
pub fn import(files: &[(String, String)]) -> Result<String, Diagnostics> {
    let mut d = Diagnostics::default();
    let mut documents = Vec::new();
    for (name, text) in files {
        match yaml::parse_documents(&Arc::from(name.as_str()), text) {
            Ok(docs) => documents.extend(docs),
            Err(e) => d.push(e),
        }
    }
    let mut by_kind: HashMap<String, HashMap<String, &Node>> = HashMap::new();
    let mut slos = Vec::new();
    for doc in &documents {
        let kind = get(doc, "kind").and_then(text);
        let name = get(doc, "metadata").and_then(|m| get(m, "name")).and_then(text);
        match (kind.as_deref(), name) {
            (Some("SLO"), Some(_)) => slos.push(doc),
            (Some(k @ ("SLI" | "AlertPolicy" | "AlertCondition")), Some(n)) => {
                by_kind.entry(k.to_string()).or_default().insert(n, doc);
            }
            (Some("Service" | "DataSource" | "AlertNotificationTarget"), _) => {}
            (Some(_), None) => d.push(Diagnostic::error(doc.pos.clone(), "an OpenSLO document without metadata.name")),
            (kind, _) => d.push(
                Diagnostic::error(doc.pos.clone(), format!("not an OpenSLO v1 document Steward reads (kind {kind:?})"))
                    .with_hint("kinds read: SLO, SLI, AlertPolicy, AlertCondition (Service and DataSource are skipped)"),
            ),
        }
    }
    let mut out = String::from("# Imported from OpenSLO by `steward slo import`.\nslos:\n");
    for doc in slos {
        if let Some(text) = slo(doc, &by_kind, &mut d) {
            out.push_str(&text);
        }
    }
    if d.is_empty() { Ok(out) } else { Err(d.sorted()) }
}

fn get<'n>(n: &'n Node, key: &str) -> Option<&'n Node> {
    match &n.value {
        Value::Map(entries) => entries.iter().find(|(k, _)| matches!(&k.value, Value::Str { text, .. } if text == key)).map(|(_, v)| v),
        _ => None,
    }
}

fn text(n: &Node) -> Option<String> {
    match &n.value {
        Value::Str { text, .. } => Some(text.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Float(f) => Some(f.to_string()),
        _ => None,
    }
}

fn number(n: &Node) -> Option<f64> {
    match &n.value {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        Value::Str { text, .. } => text.parse().ok(),
        _ => None,
    }
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

fn unsupported(d: &mut Diagnostics, pos: &Pos, what: impl Into<String>, hint: &str) {
    d.push(Diagnostic::error(pos.clone(), what).with_hint(hint.to_string()));
}

fn required<'n>(n: &'n Node, path: &[&str], d: &mut Diagnostics) -> Option<&'n Node> {
    let mut at = n;
    for key in path {
        match get(at, key) {
            Some(next) => at = next,
            None => {
                d.push(Diagnostic::error(at.pos.clone(), format!("missing `{}`", path.join("."))));
                return None;
            }
        }
    }
    Some(at)
}

/// An OpenSLO duration (`28d`, `4w`, `1h`): Steward's, with weeks as days.
fn duration(n: &Node, d: &mut Diagnostics) -> Option<Duration> {
    let t = text(n).unwrap_or_default();
    let parsed = match t.strip_suffix('w').and_then(|w| w.parse::<u64>().ok()) {
        Some(weeks) => Some(Duration::from_secs(weeks * 7 * 86_400)),
        None => super::duration::parse_duration(&t).ok(),
    };
    if parsed.is_none() {
        d.push(
            Diagnostic::error(n.pos.clone(), format!("`{t}` is not a duration Steward reads"))
                .with_hint("minutes, hours, days or weeks: 5m, 1h, 28d, 4w"),
        );
    }
    parsed
}

fn slo(doc: &Node, by_kind: &HashMap<String, HashMap<String, &Node>>, d: &mut Diagnostics) -> Option<String> {
    let name = get(doc, "metadata").and_then(|m| get(m, "name")).and_then(text)?;
    let spec = required(doc, &["spec"], d)?;
    let service = required(spec, &["service"], d).and_then(text);
    let objective = objective(spec, d);
    let window = window(spec, d);
    let budgeting = budgeting(spec, d);
    let sli = indicator(spec, by_kind, d);
    let alerts = alert_policies(spec, by_kind, window.as_ref().map(|w| w.1), d);
    let (service, objective, (window, _), budgeting, (good, total), alerts) = (service?, objective?, window?, budgeting?, sli?, alerts?);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "  - name: {}\n    service: {}\n    objective: {objective}\n    window: {}",
        quoted(&name),
        quoted(&service),
        quoted(&window)
    );
    let _ = writeln!(out, "    sli:\n      prometheus:\n        good: {}\n        total: {}", quoted(&good), quoted(&total));
    let _ = writeln!(out, "    budgeting: {budgeting}");
    match alerts {
        None => {}
        Some(list) if list.is_empty() => out.push_str("    alerts: false\n"),
        Some(list) => {
            out.push_str("    alerts:\n");
            for a in list {
                let _ = writeln!(out, "      - {a}");
            }
        }
    }
    Some(out)
}

fn objective(spec: &Node, d: &mut Diagnostics) -> Option<f64> {
    let list = required(spec, &["objectives"], d)?;
    let Value::Seq(items) = &list.value else {
        d.push(Diagnostic::error(list.pos.clone(), "`objectives` must be a list"));
        return None;
    };
    if items.len() != 1 {
        unsupported(
            d,
            &list.pos,
            format!("{} objectives: Steward's SLO has one", items.len()),
            "import each objective as its own SLO (copy the document, one objective each)",
        );
        return None;
    }
    let o = &items[0];
    let percent = match (get(o, "targetPercent").and_then(number), get(o, "target").and_then(number)) {
        (Some(p), _) => p,
        (None, Some(t)) => t * 100.0,
        _ => {
            d.push(Diagnostic::error(o.pos.clone(), "an objective needs `target` (0.999) or `targetPercent` (99.9)"));
            return None;
        }
    };
    if !(percent > 0.0 && percent < 100.0) {
        d.push(Diagnostic::error(o.pos.clone(), format!("objective {percent} % is not strictly between 0 and 100")));
        return None;
    }
    // 0.999 × 100 is 99.89999999999999: the percentage as written, to twelve places.
    Some((percent * 1e9).round() / 1e9)
}

/// The window as Steward writes it, and its length (for the alert factors).
fn window(spec: &Node, d: &mut Diagnostics) -> Option<(String, Duration)> {
    let list = required(spec, &["timeWindow"], d)?;
    let w = match &list.value {
        Value::Seq(items) if items.len() == 1 => &items[0],
        _ => {
            d.push(Diagnostic::error(list.pos.clone(), "`timeWindow` must be a list of one window"));
            return None;
        }
    };
    if let Some(calendar) = get(w, "calendar") {
        let tz = get(calendar, "timeZone").and_then(text).unwrap_or_else(|| "UTC".into());
        let length = get(w, "duration").and_then(text).unwrap_or_default();
        if length != "1M" || !matches!(tz.as_str(), "UTC" | "Etc/UTC") {
            unsupported(
                d,
                &calendar.pos,
                format!("a calendar window of {length} in {tz}: Steward's calendar window is one month in UTC"),
                "use `duration: 1M` with `timeZone: UTC`, or a rolling window",
            );
            return None;
        }
        return Some(("month".into(), Duration::from_secs(30 * 86_400)));
    }
    let length = duration(required(w, &["duration"], d)?, d)?;
    Some((format_duration(length), length))
}

fn budgeting(spec: &Node, d: &mut Diagnostics) -> Option<String> {
    let Some(m) = get(spec, "budgetingMethod") else { return Some("occurrences".into()) };
    match text(m).as_deref() {
        Some("Occurrences") => Some("occurrences".into()),
        Some("Timeslices") => {
            let o = get(spec, "objectives").and_then(|l| match &l.value {
                Value::Seq(items) => items.first(),
                _ => None,
            })?;
            if let Some(w) = get(o, "timeSliceWindow")
                && duration(w, d)? != Duration::from_secs(60)
            {
                unsupported(d, &w.pos, "a time slice other than one minute", "Steward's timeslices are minutes: `timeSliceWindow: 1m`");
                return None;
            }
            let Some(target) = get(o, "timeSliceTarget").and_then(number) else {
                d.push(Diagnostic::error(o.pos.clone(), "Timeslices budgeting needs the objective's `timeSliceTarget`"));
                return None;
            };
            Some(format!("{{timeslices: {}}}", (target * 100.0 * 1e9).round() / 1e9))
        }
        other => {
            unsupported(
                d,
                &m.pos,
                format!("budgeting method `{}`", other.unwrap_or("?")),
                "Steward budgets by Occurrences or Timeslices (RatioTimeslices is not supported)",
            );
            None
        }
    }
}

/// The SLI's good and total queries, in Steward's `{{.window}}` form.
fn indicator(spec: &Node, by_kind: &HashMap<String, HashMap<String, &Node>>, d: &mut Diagnostics) -> Option<(String, String)> {
    let sli_spec = match (get(spec, "indicator"), get(spec, "indicatorRef")) {
        (Some(inline), _) => required(inline, &["spec"], d)?,
        (None, Some(r)) => {
            let name = text(r).unwrap_or_default();
            match by_kind.get("SLI").and_then(|m| m.get(&name)) {
                Some(doc) => required(doc, &["spec"], d)?,
                None => {
                    d.push(Diagnostic::error(r.pos.clone(), format!("indicatorRef `{name}` names no SLI document in the files given")));
                    return None;
                }
            }
        }
        (None, None) => {
            d.push(Diagnostic::error(spec.pos.clone(), "an SLO needs `indicator` or `indicatorRef`"));
            return None;
        }
    };
    if let Some(t) = get(sli_spec, "thresholdMetric") {
        unsupported(d, &t.pos, "a threshold metric SLI", "Steward counts ratios: good (or bad) events over total events");
        return None;
    }
    let ratio = required(sli_spec, &["ratioMetric"], d)?;
    if get(ratio, "counter").is_some_and(|c| !matches!(c.value, Value::Bool(true))) {
        unsupported(d, &ratio.pos, "a ratio of gauges (`counter: false`)", "Steward counts events from counters (`counter: true`)");
        return None;
    }
    let total = query(required(ratio, &["total"], d)?, d);
    let (good, bad) = (get(ratio, "good").map(|g| query(g, d)), get(ratio, "bad").map(|b| query(b, d)));
    let total = total?;
    match (good, bad) {
        (Some(good), None) => Some((good?, total)),
        (None, Some(bad)) => Some((format!("({total}) - ({})", bad?), total)),
        _ => {
            d.push(Diagnostic::error(ratio.pos.clone(), "a ratio metric needs `total` and exactly one of `good` and `bad`"));
            None
        }
    }
}

/// One metric of a ratio: a Prometheus counter query, counted per window.
fn query(metric: &Node, d: &mut Diagnostics) -> Option<String> {
    let source = required(metric, &["metricSource"], d)?;
    let kind = get(source, "type").and_then(text).unwrap_or_default();
    if !kind.eq_ignore_ascii_case("prometheus") {
        unsupported(d, &source.pos, format!("metric source type `{kind}`"), "Steward reads Prometheus metric sources (`type: Prometheus`)");
        return None;
    }
    let q_node = required(source, &["spec", "query"], d)?;
    let q = text(q_node).unwrap_or_default();
    if q.contains(WINDOW_PLACEHOLDER) {
        return Some(q.trim().to_string());
    }
    match windowed(&q) {
        Some(w) => Some(w),
        None => {
            unsupported(
                d,
                &q_node.pos,
                format!("cannot count the events of `{}` per window", q.trim()),
                "write the counter as a selector or sum(selector) (sum by (...) too), or as a query with `{{.window}}`",
            );
            None
        }
    }
}

/// `x{…}` or `sum [by (…)] (x{…})` as `sum(increase(x{…}[{{.window}}]))`.
fn windowed(q: &str) -> Option<String> {
    use promql_parser::parser::{self, Expr};
    let selector = match parser::parse(q).ok()? {
        Expr::VectorSelector(v) => v,
        Expr::Aggregate(a) if a.op.to_string() == "sum" && a.param.is_none() => match *a.expr {
            Expr::VectorSelector(v) => v,
            Expr::Paren(p) => match *p.expr {
                Expr::VectorSelector(v) => v,
                _ => return None,
            },
            _ => return None,
        },
        _ => return None,
    };
    Some(format!("sum(increase({selector}[{WINDOW_PLACEHOLDER}]))"))
}

/// Steward `alerts:` items for the SLO's alert policies; `None` inside means "the
/// default alerts" (no policy given), an empty list "none".
fn alert_policies(
    spec: &Node,
    by_kind: &HashMap<String, HashMap<String, &Node>>,
    window: Option<Duration>,
    d: &mut Diagnostics,
) -> Option<Option<Vec<String>>> {
    let Some(list) = get(spec, "alertPolicies") else { return Some(None) };
    let Value::Seq(items) = &list.value else {
        d.push(Diagnostic::error(list.pos.clone(), "`alertPolicies` must be a list"));
        return None;
    };
    let window = window?;
    let mut out = Vec::new();
    let mut ok = true;
    for item in items {
        let policy = match (&item.value, get(item, "kind")) {
            (Value::Str { text: name, .. }, _) => by_kind.get("AlertPolicy").and_then(|m| m.get(name)).copied(),
            (_, Some(_)) => Some(item),
            _ => get(item, "alertPolicyRef").and_then(text).and_then(|n| by_kind.get("AlertPolicy").and_then(|m| m.get(&n)).copied()),
        };
        let Some(policy) = policy else {
            d.push(Diagnostic::error(item.pos.clone(), "an alert policy reference names no AlertPolicy document in the files given"));
            ok = false;
            continue;
        };
        let conditions = get(policy, "spec").and_then(|s| get(s, "conditions"));
        let Some(Value::Seq(conditions)) = conditions.map(|c| &c.value) else {
            d.push(Diagnostic::error(policy.pos.clone(), "an AlertPolicy needs `spec.conditions`"));
            ok = false;
            continue;
        };
        for c in conditions {
            let condition = match get(c, "conditionRef").and_then(text) {
                Some(name) => by_kind.get("AlertCondition").and_then(|m| m.get(&name)).copied(),
                None => Some(c),
            };
            match condition.and_then(|c| burn_rate(c, window, d)) {
                Some(a) => out.push(a),
                None => ok = false,
            }
        }
    }
    ok.then_some(Some(out))
}

fn burn_rate(c: &Node, window: Duration, d: &mut Diagnostics) -> Option<String> {
    let spec = required(c, &["spec"], d)?;
    let condition = required(spec, &["condition"], d)?;
    let kind = get(condition, "kind").and_then(text).unwrap_or_default();
    if kind != "burnrate" {
        unsupported(d, &condition.pos, format!("alert condition kind `{kind}`"), "Steward imports `burnrate` conditions");
        return None;
    }
    if let Some(op) = get(condition, "op").and_then(text)
        && !matches!(op.as_str(), "gte" | "gt")
    {
        unsupported(
            d,
            &condition.pos,
            format!("a burn-rate condition with op `{op}`"),
            "a burn-rate alert fires at or above its threshold: `op: gte`",
        );
        return None;
    }
    let factor = required(condition, &["threshold"], d).and_then(number);
    let long = duration(required(condition, &["lookbackWindow"], d)?, d)?;
    let Some(factor) = factor.filter(|f| *f > 0.0) else {
        d.push(Diagnostic::error(condition.pos.clone(), "a burn-rate `threshold` must be a positive number"));
        return None;
    };
    let short = (long / 12).max(Duration::from_secs(60));
    let spent = factor * long.as_secs_f64() / window.as_secs_f64() * 100.0;
    let severity = match get(spec, "severity").and_then(text).as_deref() {
        Some("page" | "critical" | "Critical") | None => "critical".to_string(),
        Some("ticket" | "warning" | "Warning") => "warning".to_string(),
        Some(other) => other.to_string(),
    };
    Some(format!(
        "{{long: {}, short: {}, budget_spent: {}, severity: {}}}",
        quoted(&format_duration(long)),
        quoted(&format_duration(short)),
        // Unrounded, so the factor Steward computes back from it is the one written.
        quoted(&format!("{spent}%")),
        quoted(&severity)
    ))
}
