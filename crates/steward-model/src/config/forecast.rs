//! An alert rule's `forecast:` condition: fires when a PromQL series, or a numeric
//! field of a check's observation, is predicted to cross a limit within a horizon (see
//! `crate::forecast` for the models).
//!
//! ```yaml
//! alerts:
//!   - name: DiskFullSoon
//!     forecast:
//!       expr: 'node_filesystem_avail_bytes{mountpoint="/var/lib/postgresql"}'
//!       over: 6h            # the history fitted (a range query)
//!       below: 5e9          # or `above: 90`: the limit, and which side is trouble
//!       within: 4h          # fire when the crossing is predicted this soon
//!       model: linear       # or { holt_winters: { season: 1d } } for a daily cycle
//!       # step: 1m          # sampling of the history (default: over ÷ 360, or season ÷ 48)
//!   - name: CacheFullSoon
//!     forecast:
//!       check: cache        # a check's own observations, recorded with each run
//!       value: info.used_memory
//!       above: info.maxmemory   # a number, or another field's latest value
//!       over: 2h
//!       within: 1h
//! ```

use std::time::Duration;

use super::alerting::{AlertCondition, AlertingRefs};
use super::decode::{self as de, Fields};
use super::diagnostics::{Diagnostic, Diagnostics};
use super::duration::format_duration;
use super::yaml::{Node, Value};
use crate::checks::condition::Field;
use crate::forecast::Crossing;

const KEYS: &[&str] = &["expr", "check", "value", "over", "above", "below", "within", "model", "step"];
/// Prometheus answers at most this many points per series of a range query.
const MAX_POINTS: u64 = 11_000;
/// Holt-Winters is stepped forward to find a crossing: this bounds the work per series.
const MAX_HORIZON_STEPS: u128 = 100_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Forecast {
    pub source: ForecastSource,
    pub over: Duration,
    pub step: Duration,
    pub crossing: Crossing,
    pub limit: Limit,
    pub within: Duration,
    pub model: ForecastModel,
}

/// What is forecast.
#[derive(Debug, Clone, PartialEq)]
pub enum ForecastSource {
    /// A PromQL instant-vector expression; each series is forecast on its own.
    Promql(String),
    /// A numeric field of a check's observation, recorded with each of its runs.
    Check { check: String, value: Field },
}

/// The limit a forecast watches for.
#[derive(Debug, Clone, PartialEq)]
pub enum Limit {
    Value(f64),
    /// Another recorded field of the same check, its latest value (`info.maxmemory`).
    Field(Field),
}

impl Forecast {
    /// The PromQL expression, for a forecast Prometheus answers.
    pub fn promql(&self) -> Option<&str> {
        match &self.source {
            ForecastSource::Promql(e) => Some(e),
            ForecastSource::Check { .. } => None,
        }
    }

    /// The fields of its check's observation a forecast reads: the value, and the limit
    /// when it is a field.
    pub fn fields(&self) -> Vec<&Field> {
        let mut out = Vec::new();
        if let ForecastSource::Check { value, .. } = &self.source {
            out.push(value);
        }
        if let Limit::Field(f) = &self.limit {
            out.push(f);
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ForecastModel {
    Linear,
    /// Additive Holt-Winters with a season this long (a whole number of steps).
    HoltWinters {
        season: Duration,
    },
}

fn bounded(n: &Node, what: &str, min: Duration, max: Duration, d: &mut Diagnostics) -> Option<Duration> {
    let v = de::duration(n, what, d)?;
    if v < min || v > max {
        d.push(Diagnostic::error(
            n.pos.clone(),
            format!("{what} {} is out of range ({} to {})", format_duration(v), format_duration(min), format_duration(max)),
        ));
        return None;
    }
    Some(v)
}

/// A field path of a check's observation, an error at its position otherwise.
fn field(n: &Node, what: &str, d: &mut Diagnostics) -> Option<Field> {
    let text = de::string(n, what, d)?;
    match Field::parse(&text) {
        Ok(f) => Some(f),
        Err((offset, message)) => {
            let quote = usize::from(matches!(n.value, Value::Str { quoted: true, .. }));
            d.push(
                Diagnostic::error(n.pos.shifted(offset + quote), format!("{what}: {message}"))
                    .with_hint("a field of the check's observation, as conditions name them: `info.used_memory`, `row.connections`"),
            );
            None
        }
    }
}

/// A limit: a number, or for a forecast over a check another field of its observation.
fn limit(n: &Node, what: &str, over_check: bool, d: &mut Diagnostics) -> Option<Limit> {
    let is_text = matches!(&n.value, Value::Str { text, .. } if text.trim().parse::<f64>().is_err());
    if over_check && is_text {
        return field(n, what, d).map(Limit::Field);
    }
    number(n, what, d).map(Limit::Value)
}

fn number(n: &Node, what: &str, d: &mut Diagnostics) -> Option<f64> {
    let v = match &n.value {
        Value::Int(i) => Some(*i as f64),
        Value::Float(x) => Some(*x),
        Value::Str { text, .. } => text.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|v| v.is_finite());
    if v.is_none() {
        d.push(de::type_error(n, what, "a number such as 90 or 5e9"));
    }
    v
}

pub(super) fn forecast(n: &Node, what: &str, d: &mut Diagnostics, refs: &mut AlertingRefs) -> Option<AlertCondition> {
    let mut f = Fields::of(n, format!("{what} forecast"), d)?;
    let value = f.take("value");
    let source = match (f.take("expr"), f.take("check")) {
        (Some(e), None) => {
            if let Some(v) = value {
                d.push(
                    Diagnostic::error(v.pos.clone(), format!("{what} forecast value names a field of a check's observation"))
                        .with_hint("with `expr`, the series is the query's result: drop `value`, or forecast over `check: NAME`"),
                );
            }
            match super::alerting::promql(e, &format!("{what} forecast"), d, refs) {
                Some(AlertCondition::Query { expr }) => Some(ForecastSource::Promql(expr)),
                _ => None,
            }
        }
        (None, Some(c)) => {
            let check = de::string(c, &format!("{what} forecast check"), d);
            if let Some(check) = &check {
                refs.checks.push((check.clone(), c.pos.clone()));
            }
            let value = match value {
                Some(v) => field(v, &format!("{what} forecast value"), d),
                None => {
                    d.push(
                        Diagnostic::error(n.pos.clone(), format!("{what} forecast over a check needs `value`"))
                            .with_hint("the field of its observation to forecast, as conditions name it: `value: info.used_memory`"),
                    );
                    None
                }
            };
            Some(ForecastSource::Check { check: check?, value: value? })
        }
        _ => {
            d.push(
                Diagnostic::error(n.pos.clone(), format!("{what} forecast needs exactly one of `expr` and `check`"))
                    .with_hint("`expr: PROMQL` for a Prometheus series, `check: NAME` with `value: FIELD` for a check's observation"),
            );
            None
        }
    };
    let over_check = matches!(source, Some(ForecastSource::Check { .. }));
    let (min, day) = (Duration::from_secs(60), Duration::from_secs(86_400));
    let over = match f.take("over") {
        Some(o) => bounded(o, &format!("{what} forecast over"), min, 90 * day, d),
        None => Some(Duration::from_secs(6 * 3600)),
    };
    let within = f.require("within", d).and_then(|w| bounded(w, &format!("{what} forecast within"), min, 365 * day, d));
    let limit = match (f.take("above"), f.take("below")) {
        (Some(a), None) => limit(a, &format!("{what} forecast above"), over_check, d).map(|v| (Crossing::Above, v)),
        (None, Some(b)) => limit(b, &format!("{what} forecast below"), over_check, d).map(|v| (Crossing::Below, v)),
        _ => {
            d.push(
                Diagnostic::error(n.pos.clone(), format!("{what} forecast needs exactly one of `above` and `below`"))
                    .with_hint("`above: 90` for a disk used percent, `below: 5e9` for bytes free"),
            );
            None
        }
    };
    let model = match f.take("model") {
        None => Some(ForecastModel::Linear),
        Some(m) => model(m, what, d),
    };
    let step_node = f.take("step");
    f.finish(KEYS, d);
    let (over, model) = (over?, model?);
    let step = match (step_node, &model) {
        (Some(s), _) => bounded(s, &format!("{what} forecast step"), Duration::from_secs(1), over, d)?,
        (None, ForecastModel::HoltWinters { season }) => (*season / 48).max(Duration::from_secs(1)),
        (None, ForecastModel::Linear) => (over / 360).max(Duration::from_secs(1)),
    };
    let pos = step_node.map_or(n.pos.clone(), |s| s.pos.clone());
    if over.as_secs() / step.as_secs().max(1) > MAX_POINTS {
        d.push(
            Diagnostic::error(
                pos.clone(),
                format!(
                    "{what} forecast samples {} points of history, more than Prometheus answers ({MAX_POINTS})",
                    over.as_secs() / step.as_secs().max(1)
                ),
            )
            .with_hint("lengthen `step` or shorten `over`"),
        );
        return None;
    }
    if let ForecastModel::HoltWinters { season } = &model {
        if season.as_millis() % step.as_millis().max(1) != 0 {
            d.push(Diagnostic::error(
                pos,
                format!("{what} forecast step {} does not divide the season {}", format_duration(step), format_duration(*season)),
            ));
            return None;
        }
        let within_steps = within.map_or(0, |w| w.as_millis() / step.as_millis().max(1));
        if within_steps > MAX_HORIZON_STEPS {
            d.push(
                Diagnostic::error(
                    pos,
                    format!("{what} forecast looks {within_steps} steps ahead; Holt-Winters forecasts at most {MAX_HORIZON_STEPS}"),
                )
                .with_hint("lengthen `step` or shorten `within`"),
            );
            return None;
        }
        if over < *season * 2 {
            d.push(
                Diagnostic::error(
                    n.pos.clone(),
                    format!(
                        "{what} forecast over {} is shorter than two seasons ({})",
                        format_duration(over),
                        format_duration(*season * 2)
                    ),
                )
                .with_hint("Holt-Winters learns the season from the first two: `over: 3d` for a daily one"),
            );
            return None;
        }
    }
    let (crossing, limit) = limit?;
    Some(AlertCondition::Forecast(Box::new(Forecast { source: source?, over, step, crossing, limit, within: within?, model })))
}

fn model(n: &Node, what: &str, d: &mut Diagnostics) -> Option<ForecastModel> {
    match &n.value {
        Value::Str { text, .. } if text == "linear" => Some(ForecastModel::Linear),
        Value::Map(_) => {
            let mut f = Fields::of(n, format!("{what} forecast model"), d)?;
            let hw = f.require("holt_winters", d)?;
            f.finish(&["holt_winters"], d);
            let mut hf = Fields::of(hw, format!("{what} forecast holt_winters"), d)?;
            let season = hf.require("season", d).and_then(|s| {
                bounded(s, &format!("{what} forecast season"), Duration::from_secs(120), Duration::from_secs(30 * 86_400), d)
            });
            hf.finish(&["season"], d);
            Some(ForecastModel::HoltWinters { season: season? })
        }
        _ => {
            d.push(
                Diagnostic::error(
                    n.pos.clone(),
                    format!("{what} forecast model must be `linear` or `{{ holt_winters: {{ season: 1d }} }}`"),
                )
                .with_hint("linear for steady growth; Holt-Winters for growth with a daily (or weekly) cycle"),
            );
            None
        }
    }
}
